/* store.h - certfleet's persistent state, behind one interface for both backends.
 *
 * A store is opened from a URL: "sqlite:PATH" (the embedded default, WAL mode) or
 * "postgresql://..." / "postgres://..." (libpq). Schema migrations are applied at open.
 * No SQLite or libpq type appears here; records are plain C structs.
 *
 * Transactions: every multi-step change runs between cf_store_begin and cf_store_commit;
 * on any failure the caller calls cf_store_rollback, and nothing of it remains. Outside a
 * transaction each call is its own.
 *
 * Ownership: record structs returned by the store own their strings and blobs; release
 * them with the matching *_clear function. Arguments are borrowed.
 *
 * Threads: a cf_store is one connection; use it from one thread at a time. */
#ifndef CF_STORE_STORE_H
#define CF_STORE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef struct cf_store cf_store;

typedef enum { CF_STORE_SQLITE, CF_STORE_POSTGRES } cf_store_kind;

/* Opens (creating if needed) the store at url and migrates its schema. Errors:
 * CF_ERR_INVALID for a URL of no known scheme, CF_ERR_UNAVAILABLE when the database server
 * does not answer, CF_ERR_STORE when the file is not a database or the schema is newer
 * than this program knows. */
cf_err cf_store_open(const char *url, cf_store **out, cf_error *err);
void cf_store_close(cf_store *st); /* accepts NULL; rolls back an open transaction */

cf_store_kind cf_store_get_kind(const cf_store *st);
const char *cf_store_describe(const cf_store *st); /* URL without password */
/* The schema version the store is at (the number of migrations applied). */
cf_err cf_store_schema_version(cf_store *st, int64_t *version, cf_error *err);
/* The number of migrations this program knows. */
int cf_store_schema_latest(void);

cf_err cf_store_begin(cf_store *st, cf_error *err);
cf_err cf_store_commit(cf_store *st, cf_error *err);
void cf_store_rollback(cf_store *st);

/* ---- settings (key/value) ---- */

/* *value is new (free()); CF_ERR_NOT_FOUND when key is unset. */
cf_err cf_store_meta_get(cf_store *st, const char *key, char **value, cf_error *err);
/* Inserts or replaces. */
cf_err cf_store_meta_set(cf_store *st, const char *key, const char *value, cf_error *err);
/* Inserts; CF_ERR_EXISTS when key is already set (first writer wins across processes). */
cf_err cf_store_meta_insert(cf_store *st, const char *key, const char *value, cf_error *err);

/* ---- certificate authorities ---- */

typedef enum { CF_CA_ROOT, CF_CA_ISSUING } cf_ca_role;
typedef enum { CF_CA_ACTIVE, CF_CA_RETIRED, CF_CA_REVOKED } cf_ca_status;

typedef struct {
    int64_t id;        /* assigned by the store on insert */
    char *name;        /* unique, used in URLs: "root-1", "issuing-1" */
    cf_ca_role role;
    int64_t parent_id; /* 0 for a root */
    char *subject;     /* one-line RFC 2253 form, for display */
    char *key_ref;     /* key file name under DATA/keys, or a pkcs11: URI */
    unsigned char *der;
    size_t der_len;
    int64_t not_before, not_after, created_us; /* not_* in seconds since the epoch */
    cf_ca_status status;
} cf_ca_rec;

void cf_ca_rec_clear(cf_ca_rec *rec);
const char *cf_ca_role_name(cf_ca_role role);
const char *cf_ca_status_name(cf_ca_status status);

/* Inserts rec and sets rec->id. CF_ERR_EXISTS when the name is taken. */
cf_err cf_store_ca_insert(cf_store *st, cf_ca_rec *rec, cf_error *err);
/* All CAs by id. *recs is new: free each with cf_ca_rec_clear, then free(*recs). */
cf_err cf_store_ca_list(cf_store *st, cf_ca_rec **recs, size_t *n, cf_error *err);
/* The active CA of role with the highest id; CF_ERR_NOT_FOUND if none. */
cf_err cf_store_ca_active(cf_store *st, cf_ca_role role, cf_ca_rec *out, cf_error *err);
cf_err cf_store_ca_get(cf_store *st, int64_t id, cf_ca_rec *out, cf_error *err);

/* ---- devices ---- */

typedef enum {
    CF_DEVICE_ON_HOLD,
    CF_DEVICE_CLAIMED,
    CF_DEVICE_ACTIVE,
    CF_DEVICE_SUSPENDED,
    CF_DEVICE_REVOKED,
    CF_DEVICE_DECOMMISSIONED,
    CF_DEVICE_STATE_COUNT
} cf_device_state;

const char *cf_device_state_name(cf_device_state s);
/* Returns -1 for an unknown name. */
int cf_device_state_parse(const char *name);

/* Inserts device id in state if it does not exist; *created tells whether it did. */
cf_err cf_store_device_ensure(cf_store *st, const char *id, cf_device_state state, int *created,
                              cf_error *err);
/* Sets the state of an existing device (CF_ERR_NOT_FOUND otherwise). */
cf_err cf_store_device_set_state(cf_store *st, const char *id, cf_device_state state,
                                 cf_error *err);
cf_err cf_store_device_get_state(cf_store *st, const char *id, cf_device_state *state,
                                 cf_error *err);
/* counts[state] = number of devices in each state. */
cf_err cf_store_device_count(cf_store *st, int64_t counts[CF_DEVICE_STATE_COUNT], cf_error *err);

/* ---- certificates ---- */

typedef enum { CF_CERT_GOOD, CF_CERT_REVOKED } cf_cert_status;

typedef struct {
    char serial[41];   /* upper-case hex, no leading zeros beyond one byte's worth */
    int64_t ca_id;
    char *device_id;   /* NULL for certificates that name no device */
    char *subject;
    int64_t not_before, not_after; /* seconds since the epoch */
    int64_t issued_us;
    unsigned char *der;
    size_t der_len;
    cf_cert_status status;
    int reason;        /* RFC 5280 CRLReason when revoked, else -1 */
    int64_t revoked_us;
} cf_cert_rec;

void cf_cert_rec_clear(cf_cert_rec *rec);

/* CF_ERR_EXISTS when the serial is already taken (the unique index decides). */
cf_err cf_store_cert_insert(cf_store *st, const cf_cert_rec *rec, cf_error *err);
cf_err cf_store_cert_get(cf_store *st, const char *serial, cf_cert_rec *out, cf_error *err);
/* Number of certificates, and of those whose not_after is later than now_s. */
cf_err cf_store_cert_count(cf_store *st, int64_t now_s, int64_t *total, int64_t *valid,
                           cf_error *err);

/* ---- audit records ---- */

#define CF_HASH_LEN 32

typedef struct {
    int64_t seq;
    int64_t time_us;
    char *actor, *action, *object, *details; /* details: canonical JSON */
    unsigned char prev_hash[CF_HASH_LEN], hash[CF_HASH_LEN];
} cf_audit_rec;

void cf_audit_rec_clear(cf_audit_rec *rec);

/* Inside a transaction: locks the chain head until commit (so appenders in every process
 * take turns) and returns the last sequence number and hash (0 and zeros when empty). */
cf_err cf_store_audit_lock_head(cf_store *st, int64_t *seq, unsigned char hash[CF_HASH_LEN],
                                cf_error *err);
/* Inside the transaction that locked the head: inserts rec and moves the head to it. */
cf_err cf_store_audit_insert(cf_store *st, const cf_audit_rec *rec, cf_error *err);
/* The head as stored (without locking). */
cf_err cf_store_audit_head(cf_store *st, int64_t *seq, unsigned char hash[CF_HASH_LEN],
                           cf_error *err);

typedef struct {
    int64_t since_seq;    /* only records with seq > since_seq */
    int64_t since_us;     /* 0: no bound */
    int64_t until_us;     /* 0: no bound */
    const char *actor;    /* NULL: any */
    const char *action;   /* NULL: any; a trailing '*' matches a prefix */
    const char *object;   /* NULL: any */
    int64_t limit;        /* 0: no limit */
} cf_audit_filter;

/* Calls cb for each matching record in sequence order; the record is borrowed for the
 * call. A non-zero return from cb stops the scan. */
typedef int (*cf_audit_cb)(void *arg, const cf_audit_rec *rec);
cf_err cf_store_audit_scan(cf_store *st, const cf_audit_filter *f, cf_audit_cb cb, void *arg,
                           cf_error *err);

#endif
