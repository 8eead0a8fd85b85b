/* enroll.h - a device's enrollment (EST, RFC 7030): its first operational certificate,
 * obtained with its birth certificate (simpleenroll, or serverkeygen when certfleet makes
 * the key), its renewals with its current certificate (simplereenroll), what it may ask about
 * itself, and the owner's policy that governs all of it.
 *
 * The server hands over what the TLS connection proved: the client's certificate (DER; the
 * handshake already proved possession of its key) and the request's CSR. Everything else is
 * decided here, each change in one transaction with its audit record.
 *
 * Outcomes. CF_OK with res->pending set: the request is held until an operator approves the
 * device (`certfleet device approve`); ask again after res->retry_after_s. CF_OK otherwise:
 * res->cert is the new certificate. A failure sets err, and res->unauthenticated when the
 * client certificate authenticates no device (unknown, revoked, expired: a server answers
 * 401); otherwise CF_ERR_NOT_FOUND for an unknown label (404), CF_ERR_POLICY for a device
 * whose state or policy refuses it (403), CF_ERR_INVALID for a bad CSR (400), CF_ERR_STATE
 * for a state conflict (409). res->device names the device as soon as it is known. */
#ifndef CF_FLEET_ENROLL_H
#define CF_FLEET_ENROLL_H

#include <jansson.h>

#include "fleet/fleet.h"
#include "fleet/ownership.h"

#define CF_ENROLL_GRACE_DEFAULT_S 3600 /* reenroll_grace_s when an owner has set none */
#define CF_ENROLL_RETRY_AFTER_S 60     /* Retry-After of a request held for approval */
#define CF_ENROLL_GRACE_MAX_S (366LL * 86400)
#define CF_REASON_SUPERSEDED 4 /* RFC 5280 §5.3.1 */

typedef struct {
    const unsigned char *client_der; /* the client's TLS certificate; NULL: none was sent */
    size_t client_der_len;
    const unsigned char *csr; /* PKCS#10, DER or PEM */
    size_t csr_len;
    const char *label; /* the EST label (an owner's name); NULL or "": none */
    /* The same certificate as the TLS handshake decoded it (borrowed), or NULL: then it is
     * decoded from client_der (under OpenSSL 3.0 a costly step, with its key). */
    X509 *client_x509;
} cf_enroll_req;

typedef struct {
    char device[CF_DEVICE_ID_MAX]; /* "" until a device is identified */
    int unauthenticated;           /* on failure: no device is authenticated (401) */
    int pending;                   /* CF_OK: held for approval */
    int retry_after_s;
    cf_signed_cert cert; /* CF_OK, not pending: the new certificate */
    EVP_PKEY *key;       /* serverkeygen: its private key (EVP_PKEY_free); never stored or logged */
} cf_enroll_result;

/* Releases what res holds (the key is cleansed). */
void cf_enroll_result_clear(cf_enroll_result *res);

/* simpleenroll (RFC 7030 4.2.1): the client certificate must be exactly the birth certificate
 * of an onboarded device, claimed (or active without a good certificate), not blocked; with a
 * label, the device's owner must be that owner. The CSR must prove possession, name no other
 * device, and (unless the owner allows it) not use the birth key. The profile sets subject and
 * SAN. The device becomes active; audited device.enroll {serial, how: birth}. */
cf_err cf_fleet_enroll(cf_fleet *f, const cf_enroll_req *req, cf_enroll_result *res, cf_error *err);

/* serverkeygen (RFC 7030 4.4): as cf_fleet_enroll, when the owner's policy allows it, with a
 * P-256 key made by certfleet (the CSR's key is ignored; its signature must still verify).
 * Audited device.enroll {serial, how: serverkeygen}; the key is returned in res->key only. */
cf_err cf_fleet_serverkeygen(cf_fleet *f, const cf_enroll_req *req, cf_enroll_result *res,
                             cf_error *err);

/* simplereenroll (RFC 7030 4.2.2): the client certificate must be a good, unexpired
 * certificate issued by certfleet (in the store, exactly) to an active device; the CSR's
 * subject must be that certificate's; its key must be new unless the owner allows re-use.
 * The old certificate is superseded: revoked (reason 4) at once when the owner's grace
 * period is 0, else when it ends. Audited device.enroll {serial, how: reenroll, previous}. */
cf_err cf_fleet_reenroll(cf_fleet *f, const cf_enroll_req *req, cf_enroll_result *res,
                         cf_error *err);

/* Revokes every certificate whose supersession is due at now_s, each audited cert.supersede
 * {serial, by, device}, in one transaction. *n (may be NULL): how many. */
cf_err cf_fleet_supersede_due(cf_fleet *f, int64_t now_s, size_t *n, cf_error *err);

/* GET /api/v1/device/self: the device of a client certificate checked as for re-enrollment
 * (any device state), as new JSON {id, state, owner, certificate: {serial, not_after},
 * renewal_due, renew_after}. Renewal is due in the last third of the validity, or the last
 * 30 days when that is shorter. Failures as above (res: device and unauthenticated only). */
cf_err cf_fleet_device_self(cf_fleet *f, const cf_enroll_req *req, cf_enroll_result *res,
                            json_t **out, cf_error *err);

/* Lets device_id's next birth enrollment through when its owner requires approval (an
 * operator of its owner, or the vendor). Audited device.approve {pending}. CF_ERR_POLICY for
 * a decommissioned device. */
cf_err cf_fleet_device_approve(cf_fleet *f, const cf_principal *p, const char *device_id,
                               cf_error *err);

/* Owner owner's enrollment policy (the defaults when never set): the vendor or the owner
 * itself may read it. */
cf_err cf_fleet_enroll_policy_get(cf_fleet *f, const cf_principal *p, const char *owner,
                                  cf_enroll_policy *out, cf_error *err);
/* Sets it (the vendor's admin or the owner's own admin), audited owner.policy with every
 * field. CF_ERR_INVALID for a grace period outside 0..CF_ENROLL_GRACE_MAX_S. */
cf_err cf_fleet_enroll_policy_set(cf_fleet *f, const cf_principal *p, const char *owner,
                                  const cf_enroll_policy *policy, cf_error *err);

/* The policy as JSON {require_approval, serverkeygen, allow_key_reuse, allow_birth_key,
 * reenroll_grace_s}. New. */
json_t *cf_enroll_policy_json(const cf_enroll_policy *p);

#endif
