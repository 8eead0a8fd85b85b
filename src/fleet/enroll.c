/* enroll.c - enrollment over EST: who the client is (its birth or operational certificate),
 * whether its device and its owner's policy let it enroll, and the issuance, approval and
 * supersession that follow. See enroll.h. */
#include "fleet/enroll.h"
#include "fleet/revoke.h"

#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit/audit.h"
#include "core/util.h"
#include "fleet/fleet_int.h"
#include "pki/csr.h"

#define SAN_DEVICE_URI "urn:certfleet:device:"

void cf_enroll_result_clear(cf_enroll_result *res)
{
    cf_signed_cert_clear(&res->cert);
    EVP_PKEY_free(res->key); /* OpenSSL clears private key material as it frees it */
    res->key = NULL;
}

static cf_err unauthenticated(cf_enroll_result *res, cf_error *err, const char *msg)
{
    res->unauthenticated = 1;
    return cf_error_set(err, CF_ERR_POLICY, "%s", msg);
}

/* ---- policy ---- */

static void policy_defaults(cf_enroll_policy *p)
{
    memset(p, 0, sizeof *p);
    p->reenroll_grace_s = CF_ENROLL_GRACE_DEFAULT_S;
}

static cf_err policy_for(cf_fleet *f, int64_t owner_id, cf_enroll_policy *p, cf_error *err)
{
    policy_defaults(p);
    if (!owner_id)
        return CF_OK;
    cf_err rc = cf_store_enroll_policy_get(cf_fleet_store(f), owner_id, p, err);
    if (rc == CF_ERR_NOT_FOUND) {
        policy_defaults(p);
        rc = CF_OK;
    }
    return rc;
}

json_t *cf_enroll_policy_json(const cf_enroll_policy *p)
{
    return json_pack("{s:b, s:b, s:b, s:b, s:I}", "require_approval", p->require_approval,
                     "serverkeygen", p->serverkeygen, "allow_key_reuse", p->allow_key_reuse,
                     "allow_birth_key", p->allow_birth_key, "reenroll_grace_s",
                     (json_int_t)p->reenroll_grace_s);
}

/* The owner named by name that p may see (the vendor sees all, an owner itself). */
static cf_err owner_for(cf_fleet *f, const cf_principal *p, const char *name, cf_owner_rec *o,
                        cf_error *err)
{
    if (!cf_fleet_name_valid(name))
        return cf_error_set(err, CF_ERR_INVALID,
                            "owner name \"%.64s\": use 1-64 characters of A-Z a-z 0-9 . _ : -",
                            name);
    cf_err rc = cf_store_owner_get(cf_fleet_store(f), name, o, err);
    if (rc == CF_OK && p->owner_id && p->owner_id != o->id) {
        cf_owner_rec_clear(o);
        rc = cf_error_set(err, CF_ERR_NOT_FOUND, "owner %s not found", name);
    }
    return rc;
}

cf_err cf_fleet_enroll_policy_get(cf_fleet *f, const cf_principal *p, const char *owner,
                                  cf_enroll_policy *out, cf_error *err)
{
    cf_owner_rec o = {0};
    cf_err rc = owner_for(f, p, owner, &o, err);
    if (rc == CF_OK)
        rc = policy_for(f, o.id, out, err);
    cf_owner_rec_clear(&o);
    return rc;
}

cf_err cf_fleet_enroll_policy_set(cf_fleet *f, const cf_principal *p, const char *owner,
                                  const cf_enroll_policy *policy, cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_owner_rec o = {0};
    cf_enroll_policy pol = *policy;
    if (p->role != CF_ROLE_ADMIN)
        return cf_error_set(err, CF_ERR_POLICY,
                            "setting an enrollment policy needs an admin (this caller is %s)",
                            cf_role_name(p->role));
    if (pol.reenroll_grace_s < 0 || pol.reenroll_grace_s > CF_ENROLL_GRACE_MAX_S)
        return cf_error_set(err, CF_ERR_INVALID,
                            "re-enrollment grace period of %lld s is out of range (0-%lld)",
                            (long long)pol.reenroll_grace_s, (long long)CF_ENROLL_GRACE_MAX_S);
    cf_err rc = owner_for(f, p, owner, &o, err);
    if (rc != CF_OK)
        return rc;
    pol.updated_us = cf_time_now_us();
    json_t *det = cf_enroll_policy_json(&pol);
    if ((rc = cf_store_begin(st, err)) != CF_OK)
        goto out;
    if ((rc = cf_store_owner_lock(st, o.id, err)) == CF_OK &&
        (rc = cf_store_enroll_policy_set(st, o.id, &pol, err)) == CF_OK &&
        (rc = cf_audit_append(st, p->actor, "owner.policy", o.name, det, NULL, err)) == CF_OK)
        rc = cf_store_commit(st, err);
    else
        cf_store_rollback(st);
out:
    json_decref(det);
    cf_owner_rec_clear(&o);
    return rc;
}

/* ---- approval ---- */

cf_err cf_fleet_device_approve(cf_fleet *f, const cf_principal *p, const char *device_id,
                               cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_enroll_device d = {0};
    if (!cf_fleet_device_id_valid(device_id))
        return cf_error_set(err, CF_ERR_INVALID,
                            "device id \"%.64s\": use 1-128 characters of A-Z a-z 0-9 . _ : -",
                            device_id);
    if (p->role > CF_ROLE_OPERATOR)
        return cf_error_set(err, CF_ERR_POLICY,
                            "approving an enrollment needs an operator or admin (this caller is"
                            " %s)",
                            cf_role_name(p->role));
    cf_err rc = cf_store_begin(st, err);
    if (rc != CF_OK)
        return rc;
    if ((rc = cf_store_enroll_device_get(st, device_id, 1, &d, err)) != CF_OK)
        goto fail;
    if (p->owner_id && d.owner_id != p->owner_id) {
        rc = cf_error_set(err, CF_ERR_NOT_FOUND, "device %s not found", device_id);
        goto fail;
    }
    if (d.state == CF_DEVICE_DECOMMISSIONED) {
        rc = cf_error_set(err, CF_ERR_POLICY, "device %s is decommissioned", device_id);
        goto fail;
    }
    if ((rc = cf_store_enroll_set_approved(st, device_id, cf_time_now_us(), err)) != CF_OK)
        goto fail;
    json_t *det = json_pack("{s:b, s:s}", "pending", d.pending_us != 0, "by", p->actor);
    rc = cf_audit_append(st, p->actor, "device.approve", device_id, det, NULL, err);
    json_decref(det);
    if (rc == CF_OK)
        rc = cf_store_commit(st, err);
    else
        cf_store_rollback(st);
    cf_enroll_device_clear(&d);
    return rc;
fail:
    cf_store_rollback(st);
    cf_enroll_device_clear(&d);
    return rc;
}

/* ---- what the client presented ---- */

/* Lower-case hex SHA-256 of a SubjectPublicKeyInfo (devices.key_fpr's form). */
static int spki_fpr(X509_PUBKEY *spki, char out[65])
{
    unsigned char *der = NULL, md[32];
    unsigned int mdlen = 0;
    int n = spki ? i2d_X509_PUBKEY(spki, &der) : -1;
    int ok = n > 0 && EVP_Digest(der, (size_t)n, md, &mdlen, EVP_sha256(), NULL);
    OPENSSL_free(der);
    if (ok)
        cf_hex_encode(md, 32, 0, out);
    return ok;
}

/* The client certificate (which the TLS handshake proved the client holds the key of). */
static cf_err client_cert(const cf_enroll_req *req, const char *what, cf_enroll_result *res,
                          X509 **out, cf_error *err)
{
    char msg[160];
    const unsigned char *p = req->client_der;
    if (!req->client_der || !req->client_der_len) {
        snprintf(msg, sizeof msg, "no client certificate: present %s", what);
        return unauthenticated(res, err, msg);
    }
    if (req->client_x509 && X509_up_ref(req->client_x509)) {
        *out = req->client_x509;
        return CF_OK;
    }
    if (!(*out = d2i_X509(NULL, &p, (long)req->client_der_len)))
        return unauthenticated(res, err, "client certificate cannot be read");
    return CF_OK;
}

/* Resolves the EST label to its owner (0 when there is no label). Unknown: CF_ERR_NOT_FOUND. */
static cf_err resolve_label(cf_fleet *f, const char *label, int64_t *owner_id, cf_error *err)
{
    cf_owner_rec o = {0};
    *owner_id = 0;
    if (!label || !*label)
        return CF_OK;
    cf_err rc = cf_fleet_name_valid(label) ? cf_store_owner_get(cf_fleet_store(f), label, &o, err)
                                           : CF_ERR_NOT_FOUND;
    if (rc == CF_ERR_NOT_FOUND)
        return cf_error_set(err, CF_ERR_NOT_FOUND, "unknown EST label %.64s: no owner of that name",
                            label);
    *owner_id = o.id;
    cf_owner_rec_clear(&o);
    return rc;
}

/* Whether a device in state d may enroll at all (before the operation's own rules). */
static cf_err device_admissible(const cf_enroll_device *d, int64_t label_owner, const char *label,
                                cf_error *err)
{
    if (d->blocked)
        return cf_error_set(err, CF_ERR_POLICY, "device %s is blocked", d->id);
    if (label_owner && d->owner_id != label_owner)
        return cf_error_set(err, CF_ERR_POLICY, "device %s does not belong to owner %s", d->id,
                            label);
    switch (d->state) {
    case CF_DEVICE_ON_HOLD:
        return cf_error_set(err, CF_ERR_POLICY,
                            "device %s is on_hold: it has not been claimed by an owner", d->id);
    case CF_DEVICE_SUSPENDED:
    case CF_DEVICE_REVOKED:
    case CF_DEVICE_DECOMMISSIONED:
        return cf_error_set(err, CF_ERR_POLICY, "device %s is %s", d->id,
                            cf_device_state_name(d->state));
    default:
        return CF_OK;
    }
}

/* A birth enrollment is for a device without a working certificate: an active device that
 * has one (good of them) re-enrolls with it. */
static cf_err good_cert_conflict(const cf_enroll_device *d, int64_t good, cf_error *err)
{
    if (d->state != CF_DEVICE_ACTIVE || good <= 0)
        return CF_OK;
    return cf_error_set(err, CF_ERR_STATE,
                        "device %s is already active with a good certificate: re-enroll with it"
                        " (simplereenroll)",
                        d->id);
}

/* The same, counting the device's good certificates now (under its lock: after it). */
static cf_err check_no_good_cert(cf_store *st, const cf_enroll_device *d, cf_error *err)
{
    int64_t good = 0;
    if (d->state != CF_DEVICE_ACTIVE)
        return CF_OK;
    cf_err rc = cf_store_device_good_certs(st, d->id, (int64_t)time(NULL), &good, err);
    return rc == CF_OK ? good_cert_conflict(d, good, err) : rc;
}

/* The device whose birth certificate the client presented, with its owner's policy and its
 * good certificates (one read). */
static cf_err birth_auth(cf_fleet *f, const cf_enroll_req *req, cf_enroll_birth *b,
                         cf_enroll_result *res, cf_error *err)
{
    X509 *leaf = NULL;
    char fpr[65];
    cf_err rc = client_cert(req, "the device's birth certificate", res, &leaf, err);
    if (rc != CF_OK)
        return rc;
    if (!spki_fpr(X509_get_X509_PUBKEY(leaf), fpr))
        rc = unauthenticated(res, err, "client certificate has no readable key");
    X509_free(leaf);
    if (rc != CF_OK)
        return rc;
    rc = cf_store_enroll_birth_get(cf_fleet_store(f), fpr, req->client_der, req->client_der_len,
                                   (int64_t)time(NULL), b, err);
    if (rc == CF_ERR_NOT_FOUND)
        return unauthenticated(
            res, err, "client certificate is not the birth certificate of any onboarded device");
    if (rc == CF_OK)
        snprintf(res->device, sizeof res->device, "%s", b->dev.id);
    return rc;
}

/* The certfleet certificate the client presented: in the store exactly, signed by its CA,
 * good and within its validity. */
static cf_err operational_auth(cf_fleet *f, const cf_enroll_req *req, cf_cert_rec *cert,
                               X509 **leaf_out, cf_enroll_result *res, cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    X509 *leaf = NULL, *ca = NULL;
    cf_ca_rec ca_rec = {0};
    char serial[CF_SERIAL_HEX_MAX], msg[256];
    int64_t now = (int64_t)time(NULL);
    cf_err rc = client_cert(req, "the device's current certfleet certificate", res, &leaf, err);
    if (rc != CF_OK)
        return rc;
    cf_x509_serial_hex(leaf, serial);
    rc = cf_store_cert_get(st, serial, cert, err);
    if (rc == CF_ERR_NOT_FOUND ||
        (rc == CF_OK && (cert->der_len != req->client_der_len ||
                         memcmp(cert->der, req->client_der, cert->der_len) != 0))) {
        rc = unauthenticated(res, err, "client certificate was not issued by certfleet");
        goto out;
    }
    if (rc != CF_OK)
        goto out;
    if ((rc = cf_store_ca_get(st, cert->ca_id, &ca_rec, err)) != CF_OK ||
        (rc = cf_x509_from_der(ca_rec.der, ca_rec.der_len, &ca, err)) != CF_OK)
        goto out;
    if (X509_verify(leaf, X509_get0_pubkey(ca)) != 1) {
        rc = unauthenticated(res, err, "client certificate does not verify to its issuing CA");
        goto out;
    }
    if (!cert->device_id) {
        rc = unauthenticated(res, err, "client certificate names no device");
        goto out;
    }
    snprintf(res->device, sizeof res->device, "%s", cert->device_id);
    if (cert->status == CF_CERT_REVOKED) {
        snprintf(msg, sizeof msg, "client certificate %s is revoked (reason %d)", serial,
                 cert->reason);
        rc = unauthenticated(res, err, msg);
    } else if (cert->not_after <= now || cert->not_before > now) {
        char when[CF_TIME_STR_MAX];
        snprintf(msg, sizeof msg, "client certificate %s is %s (not after %s)", serial,
                 cert->not_after <= now ? "expired" : "not yet valid",
                 cf_time_format(cert->not_after * 1000000, when));
        rc = unauthenticated(res, err, msg);
    }
out:
    if (rc == CF_OK) {
        *leaf_out = leaf;
        leaf = NULL;
    }
    X509_free(leaf);
    X509_free(ca);
    cf_ca_rec_clear(&ca_rec);
    return rc;
}

/* ---- the CSR ---- */

/* Whether name (a CSR's CN or SAN) stands for a device other than own: a certfleet device URI
 * for another id, or the id of another device known to the store. */
static int names_other(cf_fleet *f, const char *name, const char *own)
{
    cf_device_state state;
    if (strncmp(name, SAN_DEVICE_URI, strlen(SAN_DEVICE_URI)) == 0)
        return strcmp(name + strlen(SAN_DEVICE_URI), own) != 0;
    return strcmp(name, own) != 0 && cf_fleet_device_id_valid(name) &&
           cf_store_device_get_state(cf_fleet_store(f), name, &state, NULL) == CF_OK;
}

static cf_err check_name(cf_fleet *f, const ASN1_STRING *s, const char *where, const char *own,
                         cf_error *err)
{
    const unsigned char *data = ASN1_STRING_get0_data(s);
    int len = ASN1_STRING_length(s);
    char name[256];
    if (len <= 0 || len >= (int)sizeof name || memchr(data, 0, (size_t)len))
        return CF_OK;
    memcpy(name, data, (size_t)len);
    name[len] = '\0';
    if (names_other(f, name, own))
        return cf_error_set(err, CF_ERR_INVALID,
                            "CSR: its %s names another device (%.128s), not %s: the profile sets"
                            " subject and SAN",
                            where, name, own);
    return CF_OK;
}

/* A CSR may not claim another device's identity in its subject CN or its SANs. */
static cf_err check_identity(cf_fleet *f, const cf_csr_view *csr, const char *own, cf_error *err)
{
    X509_NAME *subj = csr->subject;
    cf_err rc = CF_OK;
    for (int i = -1; rc == CF_OK && (i = X509_NAME_get_index_by_NID(subj, NID_commonName, i)) >= 0;)
        rc = check_name(f, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i)), "subject CN",
                        own, err);
    GENERAL_NAMES *san =
        csr->exts ? X509V3_get_d2i(csr->exts, NID_subject_alt_name, NULL, NULL) : NULL;
    for (int i = 0; rc == CF_OK && i < sk_GENERAL_NAME_num(san); i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(san, i);
        if (g->type == GEN_URI || g->type == GEN_DNS)
            rc = check_name(f, g->d.ia5, "SAN", own, err);
    }
    GENERAL_NAMES_free(san);
    return rc;
}

/* The CSR's names and key (not decoded, not yet verified: issuance does both), with the
 * key's fingerprint. */
static cf_err csr_read(const cf_enroll_req *req, cf_csr_view *csr, char fpr[65], cf_error *err)
{
    cf_err rc = cf_csr_view_read(req->csr, req->csr_len, csr, err);
    if (rc != CF_OK)
        return rc;
    if (!spki_fpr(csr->spki, fpr)) {
        cf_csr_view_clear(csr);
        return cf_error_openssl(err, CF_ERR_INVALID, "CSR: its public key cannot be encoded");
    }
    return CF_OK;
}

/* ---- issuance inside the enrollment's transaction ---- */

typedef enum { HOW_BIRTH, HOW_SERVERKEYGEN, HOW_REENROLL } enroll_how;

static const char *const how_names[] = {"birth", "serverkeygen", "reenroll"};

typedef struct {
    enroll_how how;
    const char *device_id;
    const cf_enroll_device *dev; /* as read before signing */
    const cf_enroll_policy *policy;
    const char *previous; /* reenroll: the serial superseded */
    int64_t label_owner;
    const char *label;
} enroll_ctx;

/* Audits each superseded certificate of list. */
/* Publishes the supersessions (revoke.h) and audits each. */
static cf_err audit_superseded(cf_store *st, const cf_superseded *v, size_t n, cf_error *err)
{
    const char **serials = calloc(n ? n : 1, sizeof *serials);
    if (!serials)
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        serials[i] = v[i].serial;
    cf_err rc = cf_fleet_revocations_publish(st, serials, n, "cert.supersede",
                                             n == 1 ? v[0].device_id : NULL, err);
    free(serials);
    for (size_t i = 0; rc == CF_OK && i < n; i++) {
        json_t *det =
            json_pack("{s:s, s:s, s:o, s:i}", "serial", v[i].serial, "by", v[i].by, "device",
                      v[i].device_id ? json_string(v[i].device_id) : json_null(), "reason",
                      CF_REASON_SUPERSEDED);
        rc = cf_audit_append(st, "certfleet:supersede", "cert.supersede",
                             v[i].device_id ? v[i].device_id : v[i].serial, det, NULL, err);
        json_decref(det);
    }
    return rc;
}

/* The old certificate's supersession: scheduled, or (grace 0) done in this transaction. */
static cf_err supersede(cf_store *st, const enroll_ctx *c, const char *by, json_t *det,
                        cf_error *err)
{
    int64_t now = (int64_t)time(NULL), due = now + c->policy->reenroll_grace_s;
    cf_superseded *v = NULL;
    size_t n = 0;
    cf_err rc = cf_store_cert_supersede_at(st, c->previous, by, due, err);
    if (rc == CF_ERR_NOT_FOUND) /* a concurrent re-enrollment or a revocation came first */
        rc = cf_error_set(err, CF_ERR_STATE, "certificate %s was revoked meanwhile", c->previous);
    if (rc == CF_OK && c->policy->reenroll_grace_s == 0 &&
        (rc = cf_store_cert_supersede_due(st, now, CF_REASON_SUPERSEDED, cf_time_now_us(), &v, &n,
                                          err)) == CF_OK)
        rc = audit_superseded(st, v, n, err);
    cf_superseded_free(v, n);
    json_object_set_new(det, "previous", json_string(c->previous));
    json_object_set_new(det, "supersede_at", json_integer((json_int_t)due));
    return rc;
}

/* Reads the device under its lock and checks again what was checked before signing: it may
 * have changed since. */
static cf_err enroll_recheck(cf_store *st, const enroll_ctx *c, cf_pending_cert *p, cf_error *err)
{
    cf_enroll_device d = {0};
    cf_err rc = cf_store_enroll_device_get(st, c->device_id, 1, &d, err);
    if (rc != CF_OK)
        return rc;
    p->locked = 1;
    p->locked_owner = d.owner_id;
    /* A birth enrollment makes the device active below (cf_store_enroll_done), in the same
     * statement that clears its approval: the certificate's record need not. */
    p->locked_state = c->how == HOW_REENROLL ? d.state : CF_DEVICE_ACTIVE;
    if ((rc = device_admissible(&d, c->label_owner, c->label, err)) != CF_OK)
        goto out;
    if (c->how == HOW_REENROLL && d.state != CF_DEVICE_ACTIVE) {
        rc = cf_error_set(err, CF_ERR_POLICY, "device %s is %s, not active: enroll instead", d.id,
                          cf_device_state_name(d.state));
        goto out;
    }
    if (c->how != HOW_REENROLL && (rc = check_no_good_cert(st, &d, err)) != CF_OK)
        goto out;
    if (c->how != HOW_REENROLL && c->policy->require_approval && !d.approved_us) {
        rc = cf_error_set(err, CF_ERR_STATE, "device %s: its approval was withdrawn", d.id);
        goto out;
    }
out:
    cf_enroll_device_clear(&d);
    return rc;
}

/* Re-checks the device under its lock, records the certificate, and audits the enrollment.
 * With lock_head, the audit head is locked in the activation's round trip, after the device
 * (cf_store_audit_lock_soon); should the activation not happen, *again asks for the
 * transaction to be run again without, so that no device row is locked after the head. */
static cf_err enroll_record(cf_fleet *f, const enroll_ctx *c, int lock_head, cf_pending_cert *p,
                            int *again, cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    json_t *det = NULL;
    int activated = 0;
    int64_t owner_id = 0;
    cf_err rc = CF_OK;
    /* The common birth enrollment, a claimed device that may enroll, is locked, re-checked and
     * made active in one statement; any other case is read under the lock and told why. */
    if (c->how != HOW_REENROLL) {
        lock_head = lock_head && cf_store_audit_lock_soon(st);
        rc = cf_store_enroll_activate(st, c->device_id, c->label_owner, c->policy->require_approval,
                                      &activated, &owner_id, err);
    }
    if (rc == CF_OK && activated) {
        p->locked = 1;
        p->locked_owner = owner_id;
        p->locked_state = CF_DEVICE_ACTIVE;
    } else if (rc == CF_OK && lock_head) {
        *again = 1;
        return CF_OK;
    } else if (rc == CF_OK) {
        rc = enroll_recheck(st, c, p, err);
    }
    if (rc != CF_OK)
        return rc;
    if ((rc = cf_fleet_issue_record(f, p, err)) != CF_OK)
        return rc;
    det = json_pack("{s:s, s:s}", "serial", p->cert.serial, "how", how_names[c->how]);
    if (c->how == HOW_REENROLL)
        rc = supersede(st, c, p->cert.serial, det, err);
    else if (!activated)
        rc = cf_store_enroll_done(st, c->device_id, err);
    if (rc == CF_OK)
        rc = cf_audit_append(st, p->req->actor, "device.enroll", c->device_id, det, NULL, err);
    json_decref(det);
    return rc;
}

/* Signs and records, retrying on the (astronomically rare) serial collision. */
static cf_err enroll_issue(cf_fleet *f, const enroll_ctx *c, const cf_issue_req *ireq,
                           cf_enroll_result *res, cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_pending_cert p;
    cf_err rc = CF_OK;
    /* As read before signing, the device is about to become active. */
    int lock_head = c->how != HOW_REENROLL && c->dev->state == CF_DEVICE_CLAIMED;
    for (int attempt = 0; attempt < 3; attempt++) {
        if ((rc = cf_fleet_issue_prepare_known(f, ireq, c->dev->state, c->dev->owner_id,
                                               c->dev->owner, &p, err)) != CF_OK)
            break;
        if ((rc = cf_store_begin(st, err)) != CF_OK)
            break;
        int again = 0;
        if ((rc = enroll_record(f, c, lock_head, &p, &again, err)) == CF_OK && !again)
            rc = cf_store_commit(st, err);
        else
            cf_store_rollback(st);
        if (again) { /* once, and not counted as an attempt */
            lock_head = 0;
            attempt--;
        } else if (rc != CF_ERR_EXISTS || !strstr(err->msg, "serial")) {
            break;
        }
        cf_fleet_pending_clear(&p);
    }
    if (rc == CF_OK)
        cf_fleet_pending_take(&p, &res->cert);
    cf_fleet_pending_clear(&p);
    return rc;
}

/* ---- simpleenroll, serverkeygen ---- */

/* Records that the device's request waits for approval (audited the first time only). */
static cf_err hold_for_approval(cf_fleet *f, const cf_enroll_device *d, const char *actor,
                                cf_enroll_result *res, cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    int marked = 0;
    cf_err rc = cf_store_begin(st, err);
    if (rc != CF_OK)
        return rc;
    rc = cf_store_enroll_mark_pending(st, d->id, cf_time_now_us(), &marked, err);
    if (rc == CF_OK && marked) {
        json_t *det = json_pack("{s:s}", "owner", d->owner ? d->owner : "");
        rc = cf_audit_append(st, actor, "device.enroll_pending", d->id, det, NULL, err);
        json_decref(det);
    }
    if (rc == CF_OK)
        rc = cf_store_commit(st, err);
    else
        cf_store_rollback(st);
    if (rc == CF_OK) {
        res->pending = 1;
        res->retry_after_s = CF_ENROLL_RETRY_AFTER_S;
    }
    return rc;
}

/* A CSR for key, made here so serverkeygen goes through the one issuance path. */
static cf_err make_csr(EVP_PKEY *key, const char *device_id, unsigned char **der, int *len,
                       cf_error *err)
{
    X509_REQ *r = X509_REQ_new();
    X509_NAME *n = X509_NAME_new();
    cf_err rc = CF_OK;
    *der = NULL;
    if (!r || !n ||
        !X509_NAME_add_entry_by_NID(n, NID_commonName, MBSTRING_UTF8,
                                    (const unsigned char *)device_id, -1, -1, 0) ||
        !X509_REQ_set_subject_name(r, n) || !X509_REQ_set_pubkey(r, key) ||
        X509_REQ_sign(r, key, EVP_sha256()) <= 0 || (*len = i2d_X509_REQ(r, der)) <= 0)
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "serverkeygen: cannot make the CSR");
    X509_NAME_free(n);
    X509_REQ_free(r);
    return rc;
}

static cf_err birth_enroll(cf_fleet *f, const cf_enroll_req *req, enroll_how how,
                           cf_enroll_result *res, cf_error *err)
{
    cf_enroll_birth b = {0};
    cf_enroll_device *const d = &b.dev;
    cf_enroll_policy pol;
    cf_csr_view csr = {0};
    unsigned char *gen_csr = NULL;
    int gen_len = 0;
    char fpr[65], actor[CF_DEVICE_ID_MAX + 16];
    int64_t label_owner = 0;
    memset(res, 0, sizeof *res);
    cf_err rc = resolve_label(f, req->label, &label_owner, err);
    if (rc == CF_OK)
        rc = birth_auth(f, req, &b, res, err);
    if (rc == CF_OK)
        rc = device_admissible(d, label_owner, req->label, err);
    if (rc == CF_OK)
        rc = good_cert_conflict(d, b.good_certs, err);
    if (rc != CF_OK)
        goto out;
    policy_defaults(&pol);
    if (d->owner_id && b.has_policy)
        pol = b.policy;
    rc = csr_read(req, &csr, fpr, err);
    if (rc == CF_OK)
        rc = check_identity(f, &csr, d->id, err);
    if (rc != CF_OK)
        goto out;
    if (how == HOW_SERVERKEYGEN) {
        if (!pol.serverkeygen) {
            rc = cf_error_set(err, CF_ERR_POLICY,
                              "serverkeygen is off for owner %s: the device must make its own key"
                              " (simpleenroll)",
                              d->owner ? d->owner : "(the vendor)");
            goto out;
        }
        /* RFC 7030 4.4.1: the CSR's key is not used, but the request must be well formed. */
        X509_REQ *full = NULL;
        if ((rc = cf_csr_parse(req->csr, req->csr_len, &full, err)) == CF_OK &&
            X509_REQ_verify(full, X509_REQ_get0_pubkey(full)) != 1)
            rc = cf_error_openssl(err, CF_ERR_INVALID, "CSR: signature does not verify");
        X509_REQ_free(full);
        if (rc != CF_OK)
            goto out;
    } else if (!pol.allow_birth_key && d->key_fpr && strcmp(fpr, d->key_fpr) == 0) {
        rc = cf_error_set(err, CF_ERR_INVALID,
                          "CSR: its key is the device's birth key; the operational key must be a"
                          " new one");
        goto out;
    }
    snprintf(actor, sizeof actor, "device:%s", d->id);
    if (pol.require_approval && !d->approved_us) {
        rc = hold_for_approval(f, d, actor, res, err);
        goto out;
    }
    cf_issue_req ireq = {
        .csr = req->csr, .csr_len = req->csr_len, .device_id = d->id, .actor = actor};
    if (how == HOW_SERVERKEYGEN) {
        if ((rc = cf_key_generate(CF_KEY_P256, &res->key, err)) != CF_OK ||
            (rc = make_csr(res->key, d->id, &gen_csr, &gen_len, err)) != CF_OK)
            goto out;
        ireq.csr = gen_csr;
        ireq.csr_len = (size_t)gen_len;
    }
    enroll_ctx c = {.how = how,
                    .dev = d,
                    .device_id = d->id,
                    .policy = &pol,
                    .label_owner = label_owner,
                    .label = req->label};
    rc = enroll_issue(f, &c, &ireq, res, err);
out:
    if (rc != CF_OK)
        cf_enroll_result_clear(res);
    OPENSSL_free(gen_csr);
    cf_csr_view_clear(&csr);
    cf_enroll_birth_clear(&b);
    return rc;
}

cf_err cf_fleet_enroll(cf_fleet *f, const cf_enroll_req *req, cf_enroll_result *res, cf_error *err)
{
    return birth_enroll(f, req, HOW_BIRTH, res, err);
}

cf_err cf_fleet_serverkeygen(cf_fleet *f, const cf_enroll_req *req, cf_enroll_result *res,
                             cf_error *err)
{
    return birth_enroll(f, req, HOW_SERVERKEYGEN, res, err);
}

/* ---- simplereenroll ---- */

/* RFC 7030 4.2.2: the request's subject is the certificate's. */
static cf_err check_same_subject(const cf_csr_view *csr, X509 *cert, cf_error *err)
{
    if (X509_NAME_cmp(csr->subject, X509_get_subject_name(cert)) == 0)
        return CF_OK;
    char want[256] = "", got[256] = "";
    X509_NAME_oneline(X509_get_subject_name(cert), want, sizeof want);
    X509_NAME_oneline(csr->subject, got, sizeof got);
    return cf_error_set(err, CF_ERR_INVALID,
                        "CSR: subject %s differs from the certificate's subject %s (RFC 7030"
                        " 4.2.2)",
                        got, want);
}

static int same_key(const cf_csr_view *csr, X509 *cert)
{
    char a[65], b[65];
    return spki_fpr(csr->spki, a) && spki_fpr(X509_get_X509_PUBKEY(cert), b) && strcmp(a, b) == 0;
}

cf_err cf_fleet_reenroll(cf_fleet *f, const cf_enroll_req *req, cf_enroll_result *res,
                         cf_error *err)
{
    cf_cert_rec cert = {0};
    cf_enroll_device d = {0};
    cf_enroll_policy pol;
    X509 *leaf = NULL;
    cf_csr_view csr = {0};
    char fpr[65], actor[CF_DEVICE_ID_MAX + 16];
    int64_t label_owner = 0;
    memset(res, 0, sizeof *res);
    /* Supersessions that are due go first, so a certificate past its grace period is
     * revoked before it can authenticate. */
    cf_err rc = cf_fleet_supersede_due(f, (int64_t)time(NULL), NULL, err);
    if (rc == CF_OK)
        rc = resolve_label(f, req->label, &label_owner, err);
    if (rc == CF_OK)
        rc = operational_auth(f, req, &cert, &leaf, res, err);
    if (rc == CF_OK)
        rc = cf_store_enroll_device_get(cf_fleet_store(f), cert.device_id, 0, &d, err);
    if (rc == CF_OK)
        rc = device_admissible(&d, label_owner, req->label, err);
    if (rc == CF_OK && d.state != CF_DEVICE_ACTIVE)
        rc = cf_error_set(err, CF_ERR_POLICY, "device %s is %s, not active: enroll instead", d.id,
                          cf_device_state_name(d.state));
    if (rc == CF_OK)
        rc = policy_for(f, d.owner_id, &pol, err);
    if (rc == CF_OK)
        rc = csr_read(req, &csr, fpr, err);
    if (rc == CF_OK)
        rc = check_same_subject(&csr, leaf, err);
    if (rc == CF_OK)
        rc = check_identity(f, &csr, d.id, err);
    if (rc != CF_OK)
        goto out;
    if (!pol.allow_key_reuse && same_key(&csr, leaf)) {
        rc = cf_error_set(err, CF_ERR_INVALID,
                          "CSR: it reuses the key of certificate %s; re-enrollment needs a new"
                          " key",
                          cert.serial);
        goto out;
    }
    if (!pol.allow_birth_key && d.key_fpr && strcmp(fpr, d.key_fpr) == 0) {
        rc = cf_error_set(err, CF_ERR_INVALID,
                          "CSR: its key is the device's birth key; the operational key must be a"
                          " new one");
        goto out;
    }
    snprintf(actor, sizeof actor, "device:%s", d.id);
    cf_issue_req ireq = {
        .csr = req->csr, .csr_len = req->csr_len, .device_id = d.id, .actor = actor};
    enroll_ctx c = {.how = HOW_REENROLL,
                    .dev = &d,
                    .device_id = d.id,
                    .policy = &pol,
                    .previous = cert.serial,
                    .label_owner = label_owner,
                    .label = req->label};
    rc = enroll_issue(f, &c, &ireq, res, err);
out:
    if (rc != CF_OK)
        cf_enroll_result_clear(res);
    cf_csr_view_clear(&csr);
    X509_free(leaf);
    cf_enroll_device_clear(&d);
    cf_cert_rec_clear(&cert);
    return rc;
}

cf_err cf_fleet_supersede_due(cf_fleet *f, int64_t now_s, size_t *n, cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_superseded *v = NULL;
    size_t count = 0;
    int64_t due = 0;
    if (n)
        *n = 0;
    /* Most sweeps find nothing: they read, and take no write lock. */
    cf_err rc = cf_store_cert_supersede_count(st, now_s, &due, err);
    if (rc != CF_OK || due == 0)
        return rc;
    if ((rc = cf_store_begin(st, err)) != CF_OK)
        return rc;
    rc = cf_store_cert_supersede_due(st, now_s, CF_REASON_SUPERSEDED, cf_time_now_us(), &v, &count,
                                     err);
    if (rc == CF_OK)
        rc = audit_superseded(st, v, count, err);
    if (rc == CF_OK)
        rc = cf_store_commit(st, err);
    else
        cf_store_rollback(st);
    cf_superseded_free(v, count);
    if (n)
        *n = rc == CF_OK ? count : 0;
    return rc;
}

/* ---- the device's own view ---- */

cf_err cf_fleet_device_self(cf_fleet *f, const cf_enroll_req *req, cf_enroll_result *res,
                            json_t **out, cf_error *err)
{
    cf_cert_rec cert = {0};
    cf_enroll_device d = {0};
    X509 *leaf = NULL;
    char nb[CF_TIME_STR_MAX], na[CF_TIME_STR_MAX], ra[CF_TIME_STR_MAX];
    memset(res, 0, sizeof *res);
    cf_err rc = operational_auth(f, req, &cert, &leaf, res, err);
    if (rc == CF_OK)
        rc = cf_store_enroll_device_get(cf_fleet_store(f), cert.device_id, 0, &d, err);
    if (rc != CF_OK)
        goto out;
    /* Renew in the last third of the validity, but no earlier than 30 days before the end. */
    int64_t life = cert.not_after - cert.not_before, window = life / 3;
    if (window > 30 * 86400)
        window = 30 * 86400;
    int64_t renew_after = cert.not_after - window;
    *out = json_pack("{s:s, s:s, s:o, s:b, s:{s:s, s:s, s:s}, s:b, s:s}", "id", d.id, "state",
                     cf_device_state_name(d.state), "owner",
                     d.owner ? json_string(d.owner) : json_null(), "blocked", d.blocked,
                     "certificate", "serial", cert.serial, "not_before",
                     cf_time_format(cert.not_before * 1000000, nb), "not_after",
                     cf_time_format(cert.not_after * 1000000, na), "renewal_due",
                     (int64_t)time(NULL) >= renew_after, "renew_after",
                     cf_time_format(renew_after * 1000000, ra));
    if (!*out)
        rc = cf_error_set(err, CF_ERR_NOMEM, "out of memory");
out:
    X509_free(leaf);
    cf_enroll_device_clear(&d);
    cf_cert_rec_clear(&cert);
    return rc;
}
