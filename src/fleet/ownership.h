/* ownership.h - owners (tenants), their API tokens, and what happens to a device between its
 * import and its enrollment: claim, transfer (resale), state changes, groups, and the
 * queries that show a fleet to the vendor or to one owner.
 *
 * Who calls. Every operation takes a cf_principal. The vendor's operator (owner_id 0) sees
 * and may do everything. A caller scoped to an owner (what an API token of that owner
 * gives; on the command line, --as-owner) sees only that owner's devices: any other device
 * is "not found", exactly as one that does not exist, and a claim by code that fails says
 * only "not claimable", whatever the reason. Roles: an auditor only reads; an operator also
 * claims, groups, suspends and resumes; an admin also transfers, decommissions and manages
 * the owner's tokens. Creating owners is the vendor's alone.
 *
 * Every change is one transaction with its audit record (object: the device id, or the
 * owner's name). Claim codes and tokens are never stored, logged or audited: only their
 * SHA-256 is stored.
 *
 * Claim codes: devices.claim_hash = SHA-256("certfleet-claim-v1" || device id || the code's
 * 16 canonical bytes from cf_claim_code_parse). Failed claims by code are limited per device
 * and per owner over sliding windows (cf_claim_limits); an attempt over a limit is refused
 * before the code is looked at, so even the right code waits for the window to pass. */
#ifndef CF_FLEET_OWNERSHIP_H
#define CF_FLEET_OWNERSHIP_H

#include <jansson.h>
#include <stdint.h>

#include "fleet/fleet.h"

typedef struct {
    const char *actor; /* who, for the audit log: "cli:alice", "token:12" */
    int64_t owner_id;  /* 0: the vendor's operator; else the owner the call is scoped to */
    cf_role role;      /* what the caller may do */
} cf_principal;

/* A name of an owner or a group: 1..64 characters of A-Z a-z 0-9 . _ : - */
int cf_fleet_name_valid(const char *name);

/* ---- owners and tokens ---- */

/* Creates owner name (vendor only), audited owner.add. CF_ERR_EXISTS when taken. */
cf_err cf_fleet_owner_add(cf_fleet *f, const cf_principal *p, const char *name, int64_t *id,
                          cf_error *err);

/* The owners by name with their device counts; a scoped caller gets only its own.
 * *recs: cf_owner_rec_clear each, then free(). */
cf_err cf_fleet_owner_list(cf_fleet *f, const cf_principal *p, cf_owner_rec **recs, size_t *n,
                           cf_error *err);

/* As the owner of the token functions: the vendor's own tokens (its operators' API access,
 * not scoped to any owner). Only the vendor's admin manages them. */
#define CF_VENDOR_TOKENS "-"

/* "cft_" + 43 base64url characters (256 random bits), and the NUL. */
#define CF_TOKEN_STR_MAX 48

/* Makes a new API token of owner with role and label (NULL: none) and writes it into
 * token: it is shown this once and stored only as SHA-256(token). The vendor, or an admin
 * of that owner, may do so. Audited token.create (id, role, label; never the token). */
cf_err cf_fleet_token_create(cf_fleet *f, const cf_principal *p, const char *owner, cf_role role,
                             const char *label, char token[CF_TOKEN_STR_MAX], int64_t *id,
                             cf_error *err);

/* Revokes token id of owner (who may: as for create), audited token.revoke. */
cf_err cf_fleet_token_revoke(cf_fleet *f, const cf_principal *p, const char *owner, int64_t id,
                             cf_error *err);

/* The tokens of owner (hashes only). *recs: cf_token_rec_clear each, then free(). */
cf_err cf_fleet_token_list(cf_fleet *f, const cf_principal *p, const char *owner,
                           cf_token_rec **recs, size_t *n, cf_error *err);

typedef struct {
    int64_t token_id;
    int64_t owner_id; /* 0: a vendor token */
    char owner[128];  /* the owner's name; "" for the vendor */
    cf_role role;
} cf_token_identity;

/* Authenticates a presented token (an API's "Authorization: Bearer TOKEN"): hashes it,
 * looks the hash up, compares it in constant time, and returns who it stands for. Use
 * out->owner_id and out->role for the cf_principal of the request. An unknown, malformed
 * or revoked token is CF_ERR_NOT_FOUND with one message for all ("token not recognised"),
 * which the server answers with 401; store errors as the store reports them. Writes nothing. */
cf_err cf_fleet_token_auth(cf_fleet *f, const char *token, cf_token_identity *out, cf_error *err);

/* ---- claims ---- */

typedef struct {
    int64_t device_max; /* failed claims by code per device within device_window_s */
    int64_t device_window_s;
    int64_t owner_max; /* failed claims by code per owner within owner_window_s */
    int64_t owner_window_s;
} cf_claim_limits;

#define CF_CLAIM_DEVICE_MAX 5
#define CF_CLAIM_DEVICE_WINDOW_S (15 * 60)
#define CF_CLAIM_OWNER_MAX 20
#define CF_CLAIM_OWNER_WINDOW_S (60 * 60)

/* The limits in force: the store's settings (meta claim_device_max, claim_device_window_s,
 * claim_owner_max, claim_owner_window_s), else the defaults above. */
cf_err cf_fleet_claim_limits_get(cf_fleet *f, cf_claim_limits *out, cf_error *err);
/* Sets them (vendor only; each at least 1), audited settings.claim_limits. */
cf_err cf_fleet_claim_limits_set(cf_fleet *f, const cf_principal *p, const cf_claim_limits *l,
                                 cf_error *err);

typedef struct {
    const char *device_id;
    const char *owner; /* the claiming owner's name; NULL for a scoped caller: itself */
    const char *code;  /* NULL: the vendor's operator claims without a code */
} cf_claim_req;

/* Claims a device on hold for an owner: state claimed, owner set, audited device.claim
 * {owner, how: operator|code, by}.
 * Without a code (vendor only): CF_ERR_NOT_FOUND for an unknown device, CF_ERR_POLICY
 * naming its state and owner when it is not on hold.
 * With a code (the customer's way): every failure is recorded, counted against the limits
 * and audited device.claim_failed {owner, reason} (never the code), and reported as
 * CF_ERR_POLICY "device ID: not claimable with this claim code", whether the device is
 * unknown, someone else's, not on hold, without a code, or the code is wrong; over a limit,
 * CF_ERR_POLICY "too many failed claim attempts ...". A device already the caller's own is
 * CF_ERR_EXISTS. */
cf_err cf_fleet_device_claim(cf_fleet *f, const cf_principal *p, const cf_claim_req *req,
                             cf_error *err);

/* Claims every device of batch that is on hold for owner (vendor only), in one transaction
 * with one device.claim record per device. *claimed: how many. CF_ERR_NOT_FOUND when the
 * batch has no devices at all. */
cf_err cf_fleet_device_claim_batch(cf_fleet *f, const cf_principal *p, const char *batch,
                                   const char *owner, int64_t *claimed, cf_error *err);

/* ---- transfer and state ---- */

#define CF_REASON_AFFILIATION_CHANGED 3 /* RFC 5280 §5.3.1 */
#define CF_REASON_CESSATION_OF_OPERATION 5

/* Hands a device from its owner to owner (resale): every good certificate of the previous
 * ownership is revoked (affiliationChanged), the device goes to state claimed (it must
 * enroll again) and leaves its group (the previous owner's), audited device.transfer
 * {owner, previous, previous_state, previous_group, revoked, serials, by}. A scoped
 * caller (admin) may transfer only its own devices. CF_ERR_POLICY for a device on hold
 * (claim it), decommissioned, or already owner's. *revoked (may be NULL): how many
 * certificates were revoked. */
cf_err cf_fleet_device_transfer(cf_fleet *f, const cf_principal *p, const char *device_id,
                                const char *owner, int64_t *revoked, cf_error *err);

/* Moves a device to state to, one of: CF_DEVICE_SUSPENDED (from active), CF_DEVICE_ACTIVE
 * (resume, from suspended) or CF_DEVICE_DECOMMISSIONED (from any state but itself; final:
 * its good certificates are revoked, cessationOfOperation). Audited device.suspend,
 * device.resume, device.decommission. A device already in state to is left as it is
 * (*changed 0); another transition is CF_ERR_POLICY naming both states and what is
 * allowed. *revoked (may be NULL): certificates revoked. */
cf_err cf_fleet_device_set_state(cf_fleet *f, const cf_principal *p, const char *device_id,
                                 cf_device_state to, int *changed, int64_t *revoked, cf_error *err);

/* Puts a device in group grp (NULL: no group), audited device.group {group, previous}. */
cf_err cf_fleet_device_set_group(cf_fleet *f, const cf_principal *p, const char *device_id,
                                 const char *grp, cf_error *err);

/* ---- queries ---- */

typedef struct {
    int state;                       /* a cf_device_state, or -1: any */
    const char *owner;               /* NULL: any; "-" : the vendor's (not yet claimed) */
    const char *manufacturer;        /* NULL: any */
    const char *batch, *grp, *model; /* NULL: any */
    const char *after;               /* keyset paging: the "next" of the previous page */
    int64_t limit;                   /* 0: all */
} cf_device_query;

#define CF_DEVICE_ID_MAX 129

/* Calls cb for each device the caller may see that matches q, in id order (the record is
 * borrowed; do not use the fleet from cb). next is set to the id to pass as q->after for
 * the next page, or "" when this page is the last. */
cf_err cf_fleet_device_list(cf_fleet *f, const cf_principal *p, const cf_device_query *q,
                            cf_device_cb cb, void *arg, char next[CF_DEVICE_ID_MAX], cf_error *err);

/* A device as JSON: {id, state, owner (null: the vendor), manufacturer, batch, group,
 * model, part_number, claim_code (whether it has one), created, updated, provisioned}. New. */
json_t *cf_fleet_device_json(const cf_device_rec *d);

/* A device the caller may see, with its certificates and its history (its audit records in
 * order; for a scoped caller those of its own ownership only) as new JSON: the fields of
 * cf_fleet_device_json plus certificates: [{serial, status, reason, revoked, not_before,
 * not_after, issued, subject}] and history: [{seq, time, actor, action, details}]. */
cf_err cf_fleet_device_show(cf_fleet *f, const cf_principal *p, const char *device_id, json_t **out,
                            cf_error *err);

#endif
