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

/* A run of reads that belong together, from one snapshot, without a write lock: on SQLite
 * one read transaction instead of one per statement (each takes and drops the WAL's read
 * lock); on PostgreSQL nothing (each statement is a round trip either way). No writes and
 * no cf_store_begin until cf_store_read_end. */
cf_err cf_store_read_begin(cf_store *st, cf_error *err);
void cf_store_read_end(cf_store *st);

/* Bulk writing on this connection (a manifest import: thousands of rows per transaction,
 * spread over random places of large indexes). On SQLite a 64 MiB page cache, so index
 * pages are not read again from the WAL, and checkpoints by a thread of the store's own
 * while the writer goes on, instead of in the writer's commits; off stops the thread and
 * restores SQLite's defaults. On PostgreSQL nothing. */
cf_err cf_store_bulk_mode(cf_store *st, int on, cf_error *err);

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
    int64_t id; /* assigned by the store on insert */
    char *name; /* unique, used in URLs: "root-1", "issuing-1" */
    cf_ca_role role;
    int64_t parent_id; /* 0 for a root */
    char *subject;     /* one-line RFC 2253 form, for display */
    char *key_ref;     /* key file name under DATA/keys, or a pkcs11: URI */
    unsigned char *der;
    size_t der_len;
    int64_t not_before, not_after, created_us; /* not_* in seconds since the epoch */
    cf_ca_status status;
    int64_t revoked_us; /* when revoked; 0 otherwise */
    int reason;         /* when revoked: the CRL reason; -1 otherwise */
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
/* The state of device id, its owner (0: the vendor) and the owner's name ("" for the
 * vendor) into owner_name (cap bytes). CF_ERR_NOT_FOUND when there is no such device. */
cf_err cf_store_device_owner(cf_store *st, const char *id, cf_device_state *state,
                             int64_t *owner_id, char *owner_name, size_t cap, cf_error *err);
/* counts[state] = number of devices in each state. */
cf_err cf_store_device_count(cf_store *st, int64_t counts[CF_DEVICE_STATE_COUNT], cf_error *err);

/* ---- certificates ---- */

typedef enum { CF_CERT_GOOD, CF_CERT_REVOKED } cf_cert_status;

typedef struct {
    char serial[41]; /* upper-case hex, no leading zeros beyond one byte's worth */
    int64_t ca_id;
    char *device_id;  /* NULL for certificates that name no device */
    int64_t owner_id; /* the device's owner when issued; 0: the vendor */
    char *subject;
    int64_t not_before, not_after; /* seconds since the epoch */
    int64_t issued_us;
    unsigned char *der;
    size_t der_len;
    cf_cert_status status;
    int reason; /* RFC 5280 CRLReason when revoked, else -1 */
    int64_t revoked_us;
    int64_t crl_shard; /* the CRL shard its distribution point names; 0: the CA's whole CRL */
} cf_cert_rec;

void cf_cert_rec_clear(cf_cert_rec *rec);

/* CF_ERR_EXISTS when the serial is already taken (the unique index decides). */
cf_err cf_store_cert_insert(cf_store *st, const cf_cert_rec *rec, cf_error *err);
cf_err cf_store_cert_get(cf_store *st, const char *serial, cf_cert_rec *out, cf_error *err);
/* Number of certificates, and of those whose not_after is later than now_s. */
cf_err cf_store_cert_count(cf_store *st, int64_t now_s, int64_t *total, int64_t *valid,
                           cf_error *err);

/* ---- revocation: revoked certificates, their CRL entries, CRL numbers, the change feed
 * (issue 5) ---- */

/* Which certificates an operation is about. Every kind but CF_SEL_SERIAL and CF_SEL_CA
 * selects through the devices table as it is now. */
typedef enum {
    CF_SEL_SERIAL, /* text: the serial (upper-case hex) */
    CF_SEL_DEVICE, /* text: the device id */
    CF_SEL_BATCH,  /* text: the batch */
    CF_SEL_GROUP,  /* text: the group */
    CF_SEL_OWNER,  /* id: the owner */
    CF_SEL_CA,     /* id: the issuing CA */
    CF_SEL_COUNT
} cf_cert_sel_kind;

typedef struct {
    cf_cert_sel_kind kind;
    const char *text;
    int64_t id;
    int64_t only_owner; /* > 0: and only certificates of devices this owner owns now */
} cf_cert_sel;

/* A certificate revoked by cf_store_cert_revoke. */
typedef struct {
    char serial[41];
    int64_t ca_id;
    char *device_id;   /* NULL for certificates that name no device */
    int64_t crl_shard; /* 0: none */
} cf_revoked_cert;

void cf_revoked_certs_free(cf_revoked_cert *v, size_t n); /* accepts NULL */

/* Inside a transaction: every good certificate sel matches becomes revoked with reason at
 * now_us, invalidity_us (0: none) and status_seq seq (the audit sequence number of the
 * operation, which orders revocations for delta CRLs and the change feed). *out: the
 * certificates revoked, in serial order (cf_revoked_certs_free); none is no error. */
cf_err cf_store_cert_revoke(cf_store *st, const cf_cert_sel *sel, int reason, int64_t now_us,
                            int64_t invalidity_us, int64_t seq, cf_revoked_cert **out, size_t *n,
                            cf_error *err);

/* Inside a transaction: stamps certificate serial, revoked there by a path of its own
 * (transfer, decommission, supersession), with status_seq seq, and says of it what its CRL
 * entry needs. CF_ERR_NOT_FOUND when serial is not a revoked certificate. */
typedef struct {
    int64_t ca_id, crl_shard, revoked_us;
    int reason;
} cf_revoked_stamp;
cf_err cf_store_cert_stamp(cf_store *st, const char *serial, int64_t seq, cf_revoked_stamp *out,
                           cf_error *err);

/* Number of certificates sel matches: *good still good, *revoked already revoked. */
cf_err cf_store_cert_count_sel(cf_store *st, const cf_cert_sel *sel, int64_t *good,
                               int64_t *revoked, cf_error *err);

/* What OCSP needs of one certificate. */
typedef struct {
    cf_cert_status status;
    int reason;            /* when revoked: the CRL reason; -1 otherwise */
    int64_t revoked_us;    /* when revoked */
    int64_t invalidity_us; /* 0: none */
    int64_t status_seq;    /* 0: never changed */
} cf_cert_state;

/* The state of certificate serial of CA ca_id; CF_ERR_NOT_FOUND when the CA issued none of
 * that serial. */
cf_err cf_store_cert_state(cf_store *st, int64_t ca_id, const char *serial, cf_cert_state *out,
                           cf_error *err);

/* A certificate back from certificateHold: good again, status_seq seq; its CRL entry is
 * removed and remembered as a removal (removeFromCRL in delta CRLs). CF_ERR_NOT_FOUND when
 * serial is not a certificate of ca_id on hold. */
cf_err cf_store_cert_release(cf_store *st, int64_t ca_id, const char *serial, int64_t now_us,
                             int64_t seq, cf_error *err);

/* Inside the revoking transaction: the encoded CRL entry of a revoked certificate, in CRL
 * shard shard (0: none). */
cf_err cf_store_crl_entry_add(cf_store *st, int64_t ca_id, const char *serial, int64_t shard,
                              int64_t seq, const unsigned char *entry, size_t len, cf_error *err);

/* Calls cb with each CRL entry of ca_id (of shard shard only, when it is above 0) whose seq
 * is above since_seq, in the order they were added (entry borrowed for the call); a
 * non-zero return stops the scan. A read of a whole CRL (since_seq 0, no shard) hands cb
 * "" for the serial, which the entry holds: it is not read twice. */
typedef int (*cf_crl_entry_cb)(void *arg, const char *serial, int64_t seq,
                               const unsigned char *entry, size_t len);
cf_err cf_store_crl_entries_scan(cf_store *st, int64_t ca_id, int64_t shard, int64_t since_seq,
                                 cf_crl_entry_cb cb, void *arg, cf_error *err);
/* Calls cb (entry NULL) with each certificate of ca_id released from hold after since_seq. */
cf_err cf_store_crl_removals_scan(cf_store *st, int64_t ca_id, int64_t since_seq,
                                  cf_crl_entry_cb cb, void *arg, cf_error *err);

/* Reserves the next CRL shard of ca_id (1, 2, ...) for one issuer to fill: each shard is
 * handed out once, across processes. Inside the caller's transaction, or one of its own. */
cf_err cf_store_crl_shard_reserve(cf_store *st, int64_t ca_id, int64_t *shard, cf_error *err);
/* How many shards of ca_id were reserved (0: none). */
cf_err cf_store_crl_shards(cf_store *st, int64_t ca_id, int64_t *n, cf_error *err);

/* Inside a transaction: the next cRLNumber of ca_id (1, 2, ...), strictly increasing across
 * processes. */
cf_err cf_store_crl_number_next(cf_store *st, int64_t ca_id, int64_t *number, cf_error *err);

/* The last full CRL of ca_id a delta may be based on: its number and the audit sequence
 * number it covers. CF_ERR_NOT_FOUND when none was published. */
cf_err cf_store_crl_base_get(cf_store *st, int64_t ca_id, int64_t *number, int64_t *seq,
                             cf_error *err);
cf_err cf_store_crl_base_set(cf_store *st, int64_t ca_id, int64_t number, int64_t seq,
                             cf_error *err);

/* The change feed: one row per operation that changed what revocation data says, numbered
 * by the operation's audit sequence number. */
typedef struct {
    int64_t seq;
    int64_t time_us;
    char *kind;      /* "cert.revoke", "cert.release", "device.block", ... */
    int64_t ca_id;   /* 0: several or none */
    char *serial;    /* NULL: several (see count) or none */
    char *device_id; /* NULL: several or none */
    int64_t count;   /* certificates concerned */
    char *details;   /* JSON */
} cf_change_rec;

void cf_change_rec_clear(cf_change_rec *rec);

/* Inside the operation's transaction. */
cf_err cf_store_change_insert(cf_store *st, const cf_change_rec *rec, cf_error *err);
/* The changes after since (at most limit, 0: all) in order. *recs: clear each, free. */
cf_err cf_store_changes_list(cf_store *st, int64_t since, int64_t limit, cf_change_rec **recs,
                             size_t *n, cf_error *err);
/* The sequence number of the last change (0: none). */
cf_err cf_store_change_last(cf_store *st, int64_t *seq, cf_error *err);

/* The change feed's bell: a count that moves whenever a transaction that added to the feed
 * has committed, in any process on the store, read at memory speed. A reader that read
 * the count c and then cf_store_change_last may take that head as current for as long as
 * the count still reads c: the bell rings after the commit returns, so a change committed
 * before the count was read is in the head, and a later one moves the count. A process
 * killed between its commit and its ring leaves the bell behind: readers re-read the head
 * now and then anyway. SQLite: a counter in the file PATH-changes beside the database,
 * mapped shared by every process; -1 where there is none (PostgreSQL, an in-memory
 * database, a file that cannot be mapped): ask cf_store_change_last each time. */
int64_t cf_store_change_bell(cf_store *st);

/* Devices that had a certificate revoked by operation seq and have no good certificate
 * left go from active or suspended to revoked. */
cf_err cf_store_devices_revoked_state(cf_store *st, int64_t seq, int64_t now_us, cf_error *err);
/* Device id goes back from revoked to active when it has a good certificate again. */
cf_err cf_store_devices_released_state(cf_store *st, const char *id, int64_t now_us, cf_error *err);
/* Marks device id's birth certificate blocked for good. */
cf_err cf_store_device_set_blocked(cf_store *st, const char *id, int64_t now_us, cf_error *err);

/* Marks CA id revoked with reason at now_us (its parent's CRL lists it). */
cf_err cf_store_ca_revoke(cf_store *st, int64_t id, int reason, int64_t now_us, cf_error *err);

/* ---- audit records ---- */

#define CF_HASH_LEN 32

typedef struct {
    int64_t seq;
    int64_t time_us;
    char *actor, *action, *object, *details; /* details: canonical JSON */
    unsigned char prev_hash[CF_HASH_LEN], hash[CF_HASH_LEN];
    int hashes_malformed; /* read back: a stored hash was not CF_HASH_LEN bytes long */
} cf_audit_rec;

void cf_audit_rec_clear(cf_audit_rec *rec);

/* Asks for the audit head's lock (cf_store_audit_lock_head) to ride with the next
 * statement's round trip, right after it, and returns 1 (PostgreSQL); returns 0 where
 * there is nothing to ask (SQLite, whose transaction holds the write lock; a head already
 * locked). For a transaction that will append to the audit log and whose next statement
 * locks the rows it changes, so that the head is locked after them. */
int cf_store_audit_lock_soon(cf_store *st);

/* Inside a transaction: locks the chain head until commit (so appenders in every process
 * take turns) and returns the last sequence number and hash (0 and zeros when empty). */
cf_err cf_store_audit_lock_head(cf_store *st, int64_t *seq, unsigned char hash[CF_HASH_LEN],
                                cf_error *err);
/* Inside the transaction that locked the head: inserts rec and moves the head to it (the
 * head row is written once, at commit). */
cf_err cf_store_audit_insert(cf_store *st, const cf_audit_rec *rec, cf_error *err);
/* Inside a transaction: queues a record (its strings are copied) to be numbered, timed,
 * chained and written after those queued before it, when the transaction next locks the
 * head (cf_store_audit_lock_head) or commits; hash computes a record's hash then. So the
 * head is locked for the end of the transaction only, and the records go in one
 * statement. */
cf_err cf_store_audit_queue(cf_store *st, const char *actor, const char *action, const char *object,
                            const char *details,
                            void (*hash)(const cf_audit_rec *, unsigned char *), cf_error *err);
/* The head as stored (without locking). */
cf_err cf_store_audit_head(cf_store *st, int64_t *seq, unsigned char hash[CF_HASH_LEN],
                           cf_error *err);

typedef struct {
    int64_t since_seq;  /* only records with seq > since_seq */
    int64_t since_us;   /* 0: no bound */
    int64_t until_us;   /* 0: no bound */
    const char *actor;  /* NULL: any */
    const char *action; /* NULL: any; a trailing '*' matches a prefix */
    const char *object; /* NULL: any */
    int64_t limit;      /* 0: no limit */
} cf_audit_filter;

/* Calls cb for each matching record in sequence order; the record is borrowed for the
 * call. A non-zero return from cb stops the scan. */
typedef int (*cf_audit_cb)(void *arg, const cf_audit_rec *rec);
cf_err cf_store_audit_scan(cf_store *st, const cf_audit_filter *f, cf_audit_cb cb, void *arg,
                           cf_error *err);

/* ---- manufacturers, manifest imports, onboarded devices (issue 3: onboarding) ---- */

typedef enum { CF_MFR_CERT_ROOT, CF_MFR_CERT_SIGNER } cf_mfr_cert_kind;

const char *cf_mfr_cert_kind_name(cf_mfr_cert_kind kind); /* "root" / "signer" */

typedef struct {
    int64_t id;
    char *name;
    int64_t created_us;
} cf_manufacturer_rec;

void cf_manufacturer_rec_clear(cf_manufacturer_rec *rec);

/* A certificate a manufacturer is trusted by: a root of birth-certificate chains or a
 * manifest signer. */
typedef struct {
    int64_t id;
    int64_t manufacturer_id;
    cf_mfr_cert_kind kind;
    char *x5t;     /* x5t#S256: base64url SHA-256 of der */
    char *subject; /* one line, for display */
    unsigned char *der;
    size_t der_len;
    int64_t not_before, not_after, created_us; /* not_* in seconds since the epoch */
} cf_mfr_cert_rec;

void cf_mfr_cert_rec_clear(cf_mfr_cert_rec *rec);

/* Inserts manufacturer name (root_der: its first root, kept for the foundation schema) and
 * sets *id. CF_ERR_EXISTS when the name is taken. */
cf_err cf_store_manufacturer_insert(cf_store *st, const char *name, const unsigned char *root_der,
                                    size_t root_der_len, int64_t *id, cf_error *err);
/* CF_ERR_NOT_FOUND (naming it) when there is no manufacturer name. */
cf_err cf_store_manufacturer_get(cf_store *st, const char *name, cf_manufacturer_rec *out,
                                 cf_error *err);
/* All manufacturers by name. *recs is new: clear each, then free(*recs). */
cf_err cf_store_manufacturer_list(cf_store *st, cf_manufacturer_rec **recs, size_t *n,
                                  cf_error *err);
/* Deletes manufacturer id with its certificates and import records. The caller checks
 * first that no device references it (the foreign key refuses otherwise: CF_ERR_STORE). */
cf_err cf_store_manufacturer_delete(cf_store *st, int64_t id, cf_error *err);
/* Number of devices whose manufacturer is id. */
cf_err cf_store_manufacturer_devices(cf_store *st, int64_t id, int64_t *n, cf_error *err);

/* Inserts rec unless the manufacturer already has a certificate of that x5t (*created 0,
 * nothing changed); sets rec->id when created. */
cf_err cf_store_mfr_cert_insert(cf_store *st, cf_mfr_cert_rec *rec, int *created, cf_error *err);
/* The certificates of manufacturer id, roots first, then by id. *recs as above. */
cf_err cf_store_mfr_cert_list(cf_store *st, int64_t manufacturer_id, cf_mfr_cert_rec **recs,
                              size_t *n, cf_error *err);

/* One run of `certfleet onboard` over one manifest. */
typedef struct {
    int64_t id;
    int64_t manufacturer_id;
    char *sha256; /* hex SHA-256 of the manifest; "" until it has been read whole */
    char *source; /* the manifest's file name */
    char *batch;  /* NULL: each entry's groupId */
    char *actor;
    int64_t started_us, finished_us; /* finished_us 0 while running or when interrupted */
    int64_t entries, added, present, rejected, conflicts;
} cf_import_rec;

void cf_import_rec_clear(cf_import_rec *rec);

/* Inserts rec (its counts as given) and sets rec->id. */
cf_err cf_store_import_insert(cf_store *st, cf_import_rec *rec, cf_error *err);
/* Writes rec's sha256, finished_us and counts over the row rec->id. */
cf_err cf_store_import_update(cf_store *st, const cf_import_rec *rec, cf_error *err);
/* The imports of manufacturer id (0: all), newest first, at most limit (0: all). */
cf_err cf_store_import_list(cf_store *st, int64_t manufacturer_id, int64_t limit,
                            cf_import_rec **recs, size_t *n, cf_error *err);

/* A verified manifest entry on its way into the devices table (all borrowed). */
typedef struct {
    const char *id; /* the secure element's unique id */
    const char *batch;
    const char *model;              /* NULL or "" : none */
    const char *part_number;        /* NULL or "" : none */
    const unsigned char *birth_der; /* NULL when the entry has no certificate */
    size_t birth_der_len;
    const char *key_fpr; /* what identifies the entry's key (see onboard.h) */
    int64_t provisioned_us;
    const unsigned char *claim_hash; /* CF_HASH_LEN bytes, or NULL */
} cf_onboard_device;

typedef enum {
    CF_ONBOARD_ADDED,     /* inserted, state on_hold, owner NULL (the vendor) */
    CF_ONBOARD_PRESENT,   /* already there from an earlier import, same key_fpr */
    CF_ONBOARD_DUPLICATE, /* already there from this very import, same key_fpr */
    CF_ONBOARD_CONFLICT,  /* the id exists with another key_fpr (or none): left alone */
} cf_onboard_result;

/* Inside the caller's transaction, inserts each of the n devices unless its id exists
 * (INSERT ... ON CONFLICT (id) DO NOTHING: never overwritten) and says in result[i] what
 * became of it. */
cf_err cf_store_device_onboard(cf_store *st, int64_t manufacturer_id, int64_t import_id,
                               const cf_onboard_device *devs, size_t n, cf_onboard_result *result,
                               cf_error *err);

/* ---- owners, tokens, claims, device queries (issue 3: ownership) ---- */

/* An owner is a tenant: a customer who claims devices. The vendor (the organisation that
 * runs certfleet and holds devices until they are sold) is no row here: owner id 0 in these
 * structs and functions, NULL in the tables, stands for it. */
typedef struct {
    int64_t id;
    char *name;
    int64_t created_us;
    int64_t devices; /* devices it owns (filled by cf_store_owner_list only) */
} cf_owner_rec;

void cf_owner_rec_clear(cf_owner_rec *rec);

/* Inserts owner name and sets *id. CF_ERR_EXISTS when the name is taken. */
cf_err cf_store_owner_insert(cf_store *st, const char *name, int64_t created_us, int64_t *id,
                             cf_error *err);
/* CF_ERR_NOT_FOUND (naming it) when there is no owner name. */
cf_err cf_store_owner_get(cf_store *st, const char *name, cf_owner_rec *out, cf_error *err);
cf_err cf_store_owner_get_id(cf_store *st, int64_t id, cf_owner_rec *out, cf_error *err);
/* All owners by name, each with its device count. *recs is new: clear each, then free. */
cf_err cf_store_owner_list(cf_store *st, cf_owner_rec **recs, size_t *n, cf_error *err);
/* Inside a transaction, locks owner id's row until commit, so that what is decided per
 * owner (the claim rate limit) is decided by one transaction at a time. PostgreSQL:
 * SELECT ... FOR UPDATE; SQLite's transactions hold the write lock already. */
cf_err cf_store_owner_lock(cf_store *st, int64_t id, cf_error *err);

/* What an API token may do. */
typedef enum { CF_ROLE_ADMIN, CF_ROLE_OPERATOR, CF_ROLE_AUDITOR, CF_ROLE_COUNT } cf_role;

const char *cf_role_name(cf_role role); /* "admin", "operator", "auditor" */
int cf_role_parse(const char *name);    /* -1 for an unknown name */

/* An API token as stored: only the SHA-256 of the token, never the token. */
typedef struct {
    int64_t id;
    int64_t owner_id; /* 0: a token of the vendor */
    cf_role role;
    unsigned char hash[CF_HASH_LEN];
    char *label; /* NULL: none */
    int64_t created_us;
    int64_t revoked_us; /* 0: not revoked */
} cf_token_rec;

void cf_token_rec_clear(cf_token_rec *rec);

/* Inserts rec and sets rec->id. CF_ERR_EXISTS when the hash is already there. */
cf_err cf_store_token_insert(cf_store *st, cf_token_rec *rec, cf_error *err);
/* The token whose hash is hash, revoked or not; CF_ERR_NOT_FOUND when none. */
cf_err cf_store_token_find(cf_store *st, const unsigned char hash[CF_HASH_LEN], cf_token_rec *out,
                           cf_error *err);
/* The tokens of owner_id (0: the vendor's) by id. *recs as for owners. */
cf_err cf_store_token_list(cf_store *st, int64_t owner_id, cf_token_rec **recs, size_t *n,
                           cf_error *err);
/* Marks token id of owner_id revoked at now_us. CF_ERR_NOT_FOUND when owner_id has no such
 * token not yet revoked. */
cf_err cf_store_token_revoke(cf_store *st, int64_t owner_id, int64_t id, int64_t now_us,
                             cf_error *err);

/* Records one attempt to claim device_id (any text: unknown ids count too) by owner_id. */
cf_err cf_store_claim_attempt_insert(cf_store *st, const char *device_id, int64_t owner_id,
                                     int64_t time_us, int ok, cf_error *err);
/* Failed attempts at or after since_us: on device_id when it is not NULL, else by owner_id. */
cf_err cf_store_claim_failures(cf_store *st, const char *device_id, int64_t owner_id,
                               int64_t since_us, int64_t *n, cf_error *err);

/* A device with what ownership needs to know of it. */
typedef struct {
    char *id;
    cf_device_state state;
    int64_t owner_id;                        /* 0: the vendor */
    char *owner;                             /* the owner's name; NULL for the vendor */
    int64_t manufacturer_id;                 /* 0: none */
    char *manufacturer;                      /* its name; NULL when none */
    char *batch, *grp, *model, *part_number; /* NULL when unset */
    int has_claim_hash;
    unsigned char claim_hash[CF_HASH_LEN];
    int blocked;
    int64_t provisioned_us; /* 0: unknown */
    int64_t created_us, updated_us;
} cf_device_rec;

void cf_device_rec_clear(cf_device_rec *rec);

/* Device id. With lock, inside a transaction, its row stays locked until commit (PostgreSQL:
 * FOR UPDATE; SQLite's transactions hold the write lock already). CF_ERR_NOT_FOUND naming
 * it. */
cf_err cf_store_device_get(cf_store *st, const char *id, int lock, cf_device_rec *out,
                           cf_error *err);

typedef struct {
    int state;                       /* a cf_device_state, or -1: any */
    int by_owner;                    /* 1: only devices of owner_id */
    int64_t owner_id;                /* with by_owner: 0 is the vendor (owner NULL) */
    int64_t manufacturer_id;         /* 0: any */
    const char *batch, *grp, *model; /* NULL: any */
    const char *after; /* keyset paging: only ids after this one; NULL: from the first */
    int64_t limit;     /* 0: no limit */
} cf_device_filter;

/* Calls cb for each matching device in id order; the record is borrowed for the call and the
 * store must not be used from cb. A non-zero return from cb stops the scan. */
typedef int (*cf_device_cb)(void *arg, const cf_device_rec *rec);
cf_err cf_store_device_scan(cf_store *st, const cf_device_filter *f, cf_device_cb cb, void *arg,
                            cf_error *err);
/* Number of devices in batch (any state). */
cf_err cf_store_batch_count(cf_store *st, const char *batch, int64_t *n, cf_error *err);

/* Sets owner (0: the vendor) and state of device id. CF_ERR_NOT_FOUND otherwise. */
cf_err cf_store_device_set_owner(cf_store *st, const char *id, int64_t owner_id,
                                 cf_device_state state, cf_error *err);
/* Sets (grp NULL: clears) the group of device id. CF_ERR_NOT_FOUND otherwise. */
cf_err cf_store_device_set_group(cf_store *st, const char *id, const char *grp, cf_error *err);
/* Every device of batch in state on_hold and owned by the vendor becomes claimed by
 * owner_id. *ids: new array of the claimed ids, in id order (cf_store_strings_free). */
cf_err cf_store_device_claim_batch(cf_store *st, const char *batch, int64_t owner_id, char ***ids,
                                   size_t *n, cf_error *err);

void cf_store_strings_free(char **v, size_t n); /* accepts NULL */

/* Revokes (status revoked, reason, revoked_us now_us) every good certificate of device_id:
 * with all_owners, all of them; else those of one ownership period: whose owner_id is
 * owner_id (0: the vendor) or NULL. *serials: new array of the revoked serials
 * (cf_store_strings_free). */
cf_err cf_store_cert_revoke_device(cf_store *st, const char *device_id, int all_owners,
                                   int64_t owner_id, int reason, int64_t now_us, char ***serials,
                                   size_t *n, cf_error *err);

/* A certificate of a device with the ownership it was issued under (der not loaded). */
typedef struct {
    cf_cert_rec cert;
    int64_t owner_id; /* 0: NULL (the vendor, or issued before owners were recorded) */
} cf_device_cert;

/* The certificates of device_id by issue time. *recs is new: cf_cert_rec_clear each ->cert,
 * then free(*recs). */
cf_err cf_store_device_certs(cf_store *st, const char *device_id, cf_device_cert **recs, size_t *n,
                             cf_error *err);

/* ---- enrollment over EST (issue 4: enroll, re-enroll, approval, supersession) ---- */

/* An owner's enrollment policy (the vendor's, owner 0, is always the defaults). */
typedef struct {
    int require_approval;     /* a birth-certificate enrollment waits for device approve */
    int serverkeygen;         /* the server may generate a device's key (EST serverkeygen) */
    int allow_key_reuse;      /* re-enrollment may keep the current key */
    int allow_birth_key;      /* the operational key may be the birth key */
    int64_t reenroll_grace_s; /* a superseded certificate stays good this long; 0: at once */
    int64_t updated_us;       /* 0: never set */
} cf_enroll_policy;

/* Owner owner_id's policy; CF_ERR_NOT_FOUND when none was ever set (the caller's defaults
 * apply). */
cf_err cf_store_enroll_policy_get(cf_store *st, int64_t owner_id, cf_enroll_policy *out,
                                  cf_error *err);
/* Inserts or replaces owner owner_id's policy (owner_id > 0), with updated_us as given. */
cf_err cf_store_enroll_policy_set(cf_store *st, int64_t owner_id, const cf_enroll_policy *p,
                                  cf_error *err);

/* A device as enrollment sees it. */
typedef struct {
    char *id;
    cf_device_state state;
    int64_t owner_id; /* 0: the vendor */
    char *owner;      /* NULL: the vendor */
    int blocked;
    unsigned char *birth_der; /* NULL when the device has no birth certificate */
    size_t birth_der_len;
    char *key_fpr;       /* NULL when none */
    int64_t pending_us;  /* a birth enrollment waits for approval since; 0: none */
    int64_t approved_us; /* approved at, not yet used; 0: not approved */
} cf_enroll_device;

void cf_enroll_device_clear(cf_enroll_device *d); /* accepts NULL */

/* What a birth-certificate enrollment reads before it signs, in one query. */
typedef struct {
    cf_enroll_device dev;    /* as cf_store_enroll_device_get reads it */
    int has_policy;          /* 0: its owner never set a policy (the caller's defaults) */
    cf_enroll_policy policy; /* its owner's, when has_policy */
    int64_t good_certs;      /* an active device: as cf_store_device_good_certs at now_s; else 0 */
} cf_enroll_birth;

void cf_enroll_birth_clear(cf_enroll_birth *b); /* accepts NULL */

/* The device whose birth certificate is exactly birth_der (key fingerprint key_fpr) with its
 * owner's policy and, when it is active, its good certificates at now_s. *out: clear with
 * cf_enroll_birth_clear. CF_ERR_NOT_FOUND when no device has the certificate. */
cf_err cf_store_enroll_birth_get(cf_store *st, const char *key_fpr, const unsigned char *birth_der,
                                 size_t birth_der_len, int64_t now_s, cf_enroll_birth *out,
                                 cf_error *err);
/* Device id (CF_ERR_NOT_FOUND naming it); lock as above. */
cf_err cf_store_enroll_device_get(cf_store *st, const char *id, int lock, cf_enroll_device *out,
                                  cf_error *err);
/* Marks device id's birth enrollment pending since now_us unless it is already pending;
 * *marked tells whether it was not. */
cf_err cf_store_enroll_mark_pending(cf_store *st, const char *id, int64_t now_us, int *marked,
                                    cf_error *err);
/* Sets (approved_us > 0) or clears (0) device id's approval. CF_ERR_NOT_FOUND otherwise. */
cf_err cf_store_enroll_set_approved(cf_store *st, const char *id, int64_t approved_us,
                                    cf_error *err);
/* Makes device id active and clears its pending request and approval (an enrollment
 * used them). */
cf_err cf_store_enroll_done(cf_store *st, const char *id, cf_error *err);

/* Inside a transaction, the common birth enrollment in one statement: makes device id active
 * as cf_store_enroll_done does (its row locked until commit) if it is claimed, not blocked,
 * owned by label_owner (0: any owner) and, with need_approval, approved. *done tells whether
 * it was, with *owner_id its owner (0: the vendor); when not, nothing changed and the caller
 * reads the device under its lock to say why, or to enroll an active one. */
cf_err cf_store_enroll_activate(cf_store *st, const char *id, int64_t label_owner,
                                int need_approval, int *done, int64_t *owner_id, cf_error *err);

/* Number of good certificates of device_id whose validity includes now_s. */
cf_err cf_store_device_good_certs(cf_store *st, const char *device_id, int64_t now_s, int64_t *n,
                                  cf_error *err);

/* Schedules certificate serial (still good) to be revoked as superseded by certificate by at
 * due_s (seconds since the epoch). CF_ERR_NOT_FOUND when there is no such good certificate. */
cf_err cf_store_cert_supersede_at(cf_store *st, const char *serial, const char *by, int64_t due_s,
                                  cf_error *err);

/* Number of scheduled supersessions due at now_s (a read; the sweep writes only when > 0). */
cf_err cf_store_cert_supersede_count(cf_store *st, int64_t now_s, int64_t *n, cf_error *err);

/* A certificate revoked as superseded. */
typedef struct {
    char serial[41];
    char *device_id; /* NULL for certificates that name no device */
    char *by;        /* the serial of its successor */
} cf_superseded;

void cf_superseded_free(cf_superseded *v, size_t n); /* accepts NULL */

/* Inside a transaction: revokes (reason, revoked_us now_us) every good certificate whose
 * supersession is due at now_s, and drops the schedule of those no longer good. *out: new
 * array of what was revoked (cf_superseded_free), in serial order. */
cf_err cf_store_cert_supersede_due(cf_store *st, int64_t now_s, int reason, int64_t now_us,
                                   cf_superseded **out, size_t *n, cf_error *err);

#endif
