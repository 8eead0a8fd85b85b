/* db.h - the SQL driver beneath the store (internal to src/store).
 *
 * Queries are written once, in the SQL that SQLite and PostgreSQL share, with `?` for
 * parameters; the PostgreSQL driver renumbers them to $1..$n. Only three column types are
 * used: BIGINT, TEXT and blobs (BLOB / BYTEA). Bound text and blobs are borrowed: they must
 * stay valid until the statement's first cf_db_step. */
#ifndef CF_STORE_DB_H
#define CF_STORE_DB_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

typedef struct cf_stmt cf_stmt;

struct cf_db_ops {
    /* Runs sql without parameters or results (DDL, several statements allowed). */
    cf_err (*exec)(cf_store *st, const char *sql, cf_error *err);
    /* Returns a ready statement. With cached set, sql must be a string that outlives the
     * store (a literal): the compiled statement is kept and reused. */
    cf_err (*prepare)(cf_store *st, const char *sql, int cached, cf_stmt **out, cf_error *err);
    void (*bind_int64)(cf_stmt *s, int idx, int64_t v);
    void (*bind_text)(cf_stmt *s, int idx, const char *v);
    void (*bind_blob)(cf_stmt *s, int idx, const void *v, size_t len);
    void (*bind_null)(cf_stmt *s, int idx);
    /* Advances to the next row: *row = 1 with a row, 0 when done. A unique violation is
     * CF_ERR_EXISTS; a lost connection CF_ERR_UNAVAILABLE; SQLite's busy CF_ERR_STORE. */
    cf_err (*step)(cf_stmt *s, int *row, cf_error *err);
    int (*col_null)(cf_stmt *s, int col);
    int64_t (*col_int64)(cf_stmt *s, int col);
    const char *(*col_text)(cf_stmt *s, int col); /* "" for NULL; valid until next step */
    const unsigned char *(*col_blob)(cf_stmt *s, int col, size_t *len);
    /* Ends the use of s: a cached statement is reset for reuse, another one freed. */
    void (*done)(cf_stmt *s);
    void (*close)(cf_store *st);
    /* cf_store_bulk_mode; NULL where there is nothing to do. */
    cf_err (*bulk)(cf_store *st, int on, cf_error *err);
    /* cf_db_run_later inside a transaction; NULL: the statement runs at once. */
    cf_err (*run_later)(cf_stmt *s, const char *exists, cf_error *err);
    /* cf_db_prefetch; NULL: nothing to do. */
    int (*prefetch)(cf_stmt *s);
};

struct cf_store {
    const struct cf_db_ops *ops;
    cf_store_kind kind;
    int in_txn;
    int in_read; /* cf_store_read_begin: a read transaction is open (SQLite) */
    /* The audit chain's head as this transaction sees it: locked and read on the first
     * append, advanced by each append, written back once at commit. */
    struct {
        int locked, dirty;
        int64_t seq;
        unsigned char hash[CF_HASH_LEN];
        /* Records queued (cf_store_audit_queue), written when the head is next locked or
         * at commit; hash computes each one's hash once it is numbered. */
        cf_audit_rec *queue;
        size_t nqueue, capqueue;
        void (*hash_fn)(const cf_audit_rec *, unsigned char *);
    } audit;
    char desc[256]; /* the URL with any password removed, for messages */
    /* The change feed's bell (cf_store_change_bell): a counter in the file bell_path (NULL:
     * the store has none), mapped at its first use and shared by every process on the
     * store. A transaction that added to the feed (bell_due) rings it once its commit has
     * returned. */
    char *bell_path;
    int64_t *bell;
    int bell_due, bell_failed;
};

cf_err cf_db_sqlite_open(const char *path, cf_store **out, cf_error *err);
cf_err cf_db_pg_open(const char *conninfo, cf_store **out, cf_error *err);

/* Convenience wrappers over st->ops. */
static inline cf_err cf_db_prepare(cf_store *st, const char *sql, cf_stmt **out, cf_error *err)
{
    return st->ops->prepare(st, sql, 1, out, err);
}

/* Runs a prepared statement that returns no rows (INSERT/UPDATE/DELETE) and ends it. */
cf_err cf_db_run(cf_store *st, cf_stmt *s, cf_error *err);

/* As cf_db_run, for a statement whose outcome nothing before the commit depends on. Inside
 * a transaction on PostgreSQL it is sent at once and its result read in the round trip of
 * the next statement that returns rows, or of the COMMIT: its failure (a unique violation
 * is CF_ERR_EXISTS with the message exists when not NULL) is reported there and the
 * transaction rolls back. SQLite, and PostgreSQL outside a transaction, run it at once. */
cf_err cf_db_run_later(cf_store *st, cf_stmt *s, const char *exists, cf_error *err);

/* Inside a transaction on PostgreSQL, s (bound, returning rows; what it borrows must last
 * until the next statement is stepped) is sent in the round trip of the next statement
 * stepped, right after it, and its rows wait for its own step; a result not stepped when
 * the transaction ends is dropped. Returns 1 then; 0 elsewhere, or beyond a few per
 * transaction, where s runs when stepped, as usual. */
int cf_db_prefetch(cf_store *st, cf_stmt *s);

/* Ends the transaction (called by commit): writes the queued audit records, writes the
 * audit head back if the transaction moved it, and COMMITs. */
cf_err cf_db_audit_commit(cf_store *st, cf_error *err);
/* Forgets the transaction's audit state, queued records included (commit and rollback). */
void cf_db_audit_reset(cf_store *st);

/* A new copy of a column's blob (never NULL: aborts when memory is gone, as cf_strdup). */
unsigned char *cf_db_blob_dup(const unsigned char *b, size_t len);

/* Fills one zeroed record from the current row of s (arg: what the caller passes). */
typedef void (*cf_db_row_fn)(cf_store *st, cf_stmt *s, void *rec, void *arg);
/* Releases what a cf_db_row_fn put into one record. */
typedef void (*cf_db_clear_fn)(void *rec);

/* Reads every row of s into a new array of records of elem bytes (*out: free() after
 * clearing each; *n of them), each filled by read, and ends s. On failure nothing is
 * returned: what was read is cleared and freed. */
cf_err cf_db_collect(cf_store *st, cf_stmt *s, size_t elem, cf_db_row_fn read, void *arg,
                     cf_db_clear_fn clear, void **out, size_t *n, cf_error *err);

/* Steps s expecting one row and reads its first column as an integer into *out (a COUNT,
 * a version); ends s. */
cf_err cf_db_int64(cf_store *st, cf_stmt *s, int64_t *out, cf_error *err);

/* Steps s expecting exactly one row (CF_ERR_NOT_FOUND when there is none). The caller
 * reads the columns and calls done. */
cf_err cf_db_one(cf_store *st, cf_stmt *s, cf_error *err);

#endif
