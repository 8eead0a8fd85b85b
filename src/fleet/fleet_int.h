/* fleet_int.h - the issuance path of fleet.c, shared with the other lifecycle files of
 * src/fleet (enrollment). Not for use outside src/fleet.
 *
 * Issuance is two steps, so that a caller can add its own changes to the transaction: a
 * request is checked and signed outside any transaction (cf_fleet_issue_prepare), then
 * recorded inside the caller's (cf_fleet_issue_record). */
#ifndef CF_FLEET_FLEET_INT_H
#define CF_FLEET_FLEET_INT_H

#include "fleet/fleet.h"

/* One request on its way through issuance. */
typedef struct {
    const cf_issue_req *req; /* borrowed: must outlive the pending certificate */
    cf_signed_cert cert;
    char keydesc[64];
    int64_t owner_id; /* the device's owner when signed (0: vendor) */
    char owner[256];  /* its name ("": the vendor) */
    int device_exists;
    int64_t crl_shard; /* the CRL shard its distribution point names (0: none) */
    /* Set by a caller that has read the device in the recording transaction, under its row
     * lock (locked_state, locked_owner): cf_fleet_issue_record need not read it again. */
    int locked;
    cf_device_state locked_state;
    int64_t locked_owner;
} cf_pending_cert;

/* Verifies req's CSR (proof of possession, key policy) and signs the certificate under the
 * device profile into p (cleared first; release with cf_fleet_pending_clear, also after a
 * failure). */
cf_err cf_fleet_issue_prepare(cf_fleet *f, const cf_issue_req *req, cf_pending_cert *p,
                              cf_error *err);

/* The same for an existing device the caller has just read (its state, its owner's id and
 * name, NULL for the vendor): the store is not asked again before signing. */
cf_err cf_fleet_issue_prepare_known(cf_fleet *f, const cf_issue_req *req, cf_device_state state,
                                    int64_t owner_id, const char *owner, cf_pending_cert *p,
                                    cf_error *err);

/* Inside the caller's transaction: the device (created, or made active), the certificate
 * and its audit record (cert.issue). CF_ERR_STATE when the device changed owner since it
 * was signed for, CF_ERR_POLICY when it has been decommissioned; CF_ERR_EXISTS naming the
 * serial on a serial collision (prepare again). */
cf_err cf_fleet_issue_record(cf_fleet *f, const cf_pending_cert *p, cf_error *err);

void cf_fleet_pending_clear(cf_pending_cert *p);

/* Hands p's certificate over to *out (cf_signed_cert_clear); p keeps none. */
void cf_fleet_pending_take(cf_pending_cert *p, cf_signed_cert *out);

#endif
