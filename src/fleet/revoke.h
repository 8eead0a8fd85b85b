/* revoke.h - revocation: of one certificate, a device, a batch, a group, an owner's fleet or
 * a whole CA; certificateHold and its release; blocking a birth certificate for good and
 * readmitting a device whose identity was revoked; and the CRLs that publish it all.
 *
 * Every operation is one transaction with one audit record and one row of the change feed,
 * both numbered by the audit sequence number, which also stamps each certificate whose
 * status changed (status_seq): delta CRLs and OCSP caches follow that number. Each revoked
 * certificate's CRL entry is encoded as it is revoked (pki/crl.h), so a CRL is a read of
 * kept entries and one signature. */
#ifndef CF_FLEET_REVOKE_H
#define CF_FLEET_REVOKE_H

#include <stdint.h>

#include "fleet/ownership.h"
#include "pki/crl.h"
#include "pki/ocsp.h"

typedef void (*cf_revoke_progress_fn)(void *arg, int64_t done, int64_t total);

typedef struct {
    cf_cert_sel_kind kind;
    /* CF_SEL_SERIAL: hex (any case, colons allowed); _DEVICE, _BATCH, _GROUP: the name;
     * _OWNER: the owner's name; _CA: the CA's name ("issuing-1") or id. */
    const char *target;
    int reason;           /* a cf_crl_reason; -1: unspecified (cACompromise for a CA) */
    int64_t invalidity_s; /* when the key is known or suspected compromised; 0: not given */
    cf_revoke_progress_fn progress;
    void *progress_arg;
} cf_revoke_req;

typedef struct {
    int64_t revoked; /* certificates revoked now */
    int64_t already; /* matched but revoked before: left as they were */
    int64_t seq;     /* the operation's audit sequence number; 0 when nothing changed */
    int reason;
} cf_revoke_result;

/* Revokes what req selects, audited cert.revoke (ca.revoke for a CA) with its scope, reason
 * and count. Devices left without a good certificate go to state revoked (readmit lets
 * them enroll again). Revoking a CA also marks it revoked, so it issues no more.
 * Nothing to revoke is no error and writes nothing (out->revoked 0). CF_ERR_NOT_FOUND when
 * the target does not exist (or is not the caller's). Who may: the vendor's admin or
 * operator; a scoped caller's admin or operator for its own devices only; a CA, the
 * vendor's admin only. */
cf_err cf_fleet_revoke(cf_fleet *f, const cf_principal *p, const cf_revoke_req *req,
                       cf_revoke_result *out, cf_error *err);

/* Releases certificate serial from certificateHold: good again, audited cert.release; delta
 * CRLs list it as removeFromCRL. CF_ERR_POLICY when it is not on hold. */
cf_err cf_fleet_release(cf_fleet *f, const cf_principal *p, const char *serial, cf_error *err);

/* Blocks device id's birth certificate for good: it never enrolls again with it. Its
 * operational certificates are revoked (reason as given, -1: keyCompromise). Audited
 * device.block. */
cf_err cf_fleet_block_birth(cf_fleet *f, const cf_principal *p, const char *device_id, int reason,
                            cf_revoke_result *out, cf_error *err);

/* Lets device id, in state revoked and not blocked, enroll again with its birth certificate
 * (state claimed; the vendor's own devices go back on_hold). Audited device.readmit. */
cf_err cf_fleet_device_readmit(cf_fleet *f, const cf_principal *p, const char *device_id,
                               cf_error *err);

/* For the lifecycle files that revoke by paths of their own (a transfer, a decommission, a
 * supersession): inside their transaction, after certificates serials[0..n) were revoked
 * there and before the operation appends its audit record(s), publishes them as
 * cf_fleet_revoke publishes its own: stamped with the operation's number, their CRL entries
 * encoded and kept, and one change of kind (device_id: the device, or NULL) in the feed.
 * Without it CRLs would never list them and OCSP caches would not see them change. n 0:
 * nothing to do. */
cf_err cf_fleet_revocations_publish(cf_store *st, const char *const *serials, size_t n,
                                    const char *kind, const char *device_id, cf_error *err);

/* ---- CRLs ---- */

#define CF_CRL_DEFAULT_VALIDITY_S (24 * 3600) /* full CRLs: nextUpdate - thisUpdate */
#define CF_CRL_DEFAULT_DELTA_S 3600           /* delta CRLs */

typedef struct {
    int64_t ca_id;
    char ca_name[64];
    int64_t number, base_number; /* base_number: a delta's base; 0 for a full CRL */
    int64_t seq;                 /* the highest status change (audit sequence number) it lists */
    int64_t change_seq;          /* the change feed's last number when it was read */
    int64_t this_update, next_update;
    int64_t entries;
} cf_crl_info;

/* One CA's CRLs as one publisher keeps them: the full CRL's encoded entries stay in memory,
 * so bringing it up to date reads only what was revoked since (a release, rare, makes it
 * read everything again), and deltas are based on the last full CRL this builder made. */
typedef struct cf_crl_builder cf_crl_builder;

/* A builder for CA ca (its name or id; NULL: the active issuing CA, else the newest issuing
 * CA): of its whole CRL, or with shard above 0 of that CRL shard (an Issuing Distribution
 * Point naming BASE/crl/CA-sN.crl, the distribution point of the shard's certificates; no
 * deltas). Loads the CA's certificate and key. *out: cf_crl_builder_free. */
cf_err cf_crl_builder_new(cf_fleet *f, const char *ca, int64_t shard, cf_crl_builder **out,
                          cf_error *err);
void cf_crl_builder_free(cf_crl_builder *b);            /* accepts NULL */
const char *cf_crl_builder_ca(const cf_crl_builder *b); /* the CA's name */

/* Brings the full CRL up to date, numbers it (numbers increase across processes) and signs
 * it. With rebase (and always the first time) it becomes the base of this builder's deltas
 * and the stored base for `certfleet crl --delta`; without, deltas stay based on an older
 * full CRL that clients may still hold. *der: OPENSSL_free. */
cf_err cf_crl_builder_full(cf_fleet *f, cf_crl_builder *b, int rebase, unsigned char **der,
                           size_t *len, cf_crl_info *info, cf_error *err);
/* A delta CRL on this builder's last full CRL (CF_ERR_STATE before the first); with
 * stored_base, on the stored base instead (the last full CRL any process made). */
cf_err cf_crl_builder_delta(cf_fleet *f, cf_crl_builder *b, int stored_base, unsigned char **der,
                            size_t *len, cf_crl_info *info, cf_error *err);

/* One-shot, for the command line: a full CRL (of shard shard, when above 0), or with delta
 * a delta on the stored base. */
cf_err cf_fleet_crl(cf_fleet *f, const char *ca, int64_t shard, int delta, unsigned char **der,
                    size_t *len, cf_crl_info *info, cf_error *err);

/* CRL shards (RFC 5280 5.2.5): with a size above 0, each issuer fills shard after shard of
 * at most size certificates, and each certificate's distribution point names its shard's
 * CRL. Certificates issued before keep theirs. 0: no shards. Vendor admin; audited
 * settings.crl_shards. */
cf_err cf_fleet_crl_shard_size_set(cf_fleet *f, const cf_principal *p, int64_t size, cf_error *err);
cf_err cf_fleet_crl_shard_size_get(cf_fleet *f, int64_t *size, cf_error *err);

/* ---- OCSP ---- */

#define CF_OCSP_SIGNER_DAYS 30       /* validity of a delegated responder certificate */
#define CF_OCSP_SIGNER_RENEW_DAYS 10 /* replaced when fewer days than this are left */

/* An OCSP responder for every issuing CA, each answered for by its delegated responder
 * certificate (id-kp-OCSPSigning, id-pkix-ocsp-nocheck) and key, kept as
 * DATA/keys/ocsp-CA.{pem,key}: reused while it has more than CF_OCSP_SIGNER_RENEW_DAYS left,
 * else a new key and certificate are made (recorded and audited cert.issue_ocsp). A revoked
 * CA issues no new one: it is answered for while its current one lasts. *renew_at: when
 * the first of them is due for renewal (call again then). *out: cf_ocsp_responder_free. */
cf_err cf_fleet_ocsp_responder(cf_fleet *f, cf_ocsp_responder **out, int64_t *renew_at,
                               cf_error *err);

/* The reason named by an RFC 5280 name, for command lines and the API: -1 with
 * CF_ERR_INVALID listing the names for anything else (removeFromCRL is no revocation). */
int cf_fleet_reason_parse(const char *name, cf_error *err);

#endif
