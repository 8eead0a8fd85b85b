/* audit.h - the tamper-evident audit log.
 *
 * Every state change appends a record in the same transaction as the change. Each record
 * carries the previous record's hash and its own:
 *
 *   hash = SHA-256( "certfleet-audit-v1" || prev_hash || be64(seq) || be64(time_us)
 *                   || for actor, action, object, details: be32(len) || bytes )
 *
 * details is canonical JSON (compact, keys sorted). The store's head (last seq and hash)
 * is moved in the same transaction, so removing records at the tail is caught too. */
#ifndef CF_AUDIT_AUDIT_H
#define CF_AUDIT_AUDIT_H

#include <jansson.h>

#include "store/store.h"

/* Appends a record inside the caller's open transaction. details may be NULL ({}); it is
 * borrowed. Returns the new record's sequence number in *seq. With seq NULL the record is
 * queued (cf_store_audit_queue): numbered and written at commit, or when the transaction
 * next needs the chain's head, in the order of the appends either way. */
cf_err cf_audit_append(cf_store *st, const char *actor, const char *action, const char *object,
                       json_t *details, int64_t *seq, cf_error *err);

/* Computes rec's hash from its fields and prev_hash. */
void cf_audit_hash(const cf_audit_rec *rec, unsigned char out[CF_HASH_LEN]);

typedef struct {
    int64_t records;  /* records checked */
    int64_t head_seq; /* sequence number the head names */
    int64_t bad_seq;  /* first bad record (0 when the chain is intact) */
    char reason[256]; /* why it is bad */
} cf_audit_verify_result;

/* Recomputes the whole chain. CF_OK when intact; CF_ERR_TAMPERED with res->bad_seq and a
 * message naming the first bad record otherwise. */
cf_err cf_audit_verify(cf_store *st, cf_audit_verify_result *res, cf_error *err);

#endif
