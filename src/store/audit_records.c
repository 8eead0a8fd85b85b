/* audit_records.c - the audit table and its head (the last sequence number and hash). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "store/db.h"

void cf_audit_rec_clear(cf_audit_rec *rec)
{
    if (!rec)
        return;
    free(rec->actor);
    free(rec->action);
    free(rec->object);
    free(rec->details);
    memset(rec, 0, sizeof *rec);
}

/* Copies a stored hash into out; returns 0 when it is not exactly CF_HASH_LEN bytes long
 * (out is then zero-padded or cut, and must not be trusted). */
static int read_hash(cf_store *st, cf_stmt *s, int col, unsigned char out[CF_HASH_LEN])
{
    size_t len;
    const unsigned char *h = st->ops->col_blob(s, col, &len);
    memset(out, 0, CF_HASH_LEN);
    memcpy(out, h, len < CF_HASH_LEN ? len : CF_HASH_LEN);
    return len == CF_HASH_LEN;
}

static cf_err head_read(cf_store *st, const char *sql, int64_t *seq,
                        unsigned char hash[CF_HASH_LEN], cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st, sql, &s, err);
    if (rc != CF_OK)
        return rc;
    if ((rc = cf_db_one(st, s, err)) != CF_OK) {
        if (rc == CF_ERR_NOT_FOUND)
            cf_error_set(err, CF_ERR_TAMPERED, "audit head record is missing");
        return rc;
    }
    *seq = st->ops->col_int64(s, 0);
    if (!read_hash(st, s, 1, hash)) {
        st->ops->done(s);
        return cf_error_set(err, CF_ERR_TAMPERED, "audit head's hash is not 32 bytes long");
    }
    int row;
    rc = st->ops->step(s, &row, err);
    st->ops->done(s);
    return rc;
}

static cf_err write_queue(cf_store *st, cf_error *err);

/* The head as an appender reads it: FOR UPDATE takes the row lock in PostgreSQL, and after
 * a wait reads the row as the other appender committed it; SQLite's write lock is already
 * held (BEGIN IMMEDIATE). Appenders in every process take turns, and the chain never
 * forks. */
static const char *head_lock_sql(const cf_store *st)
{
    static const char pg[] = "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE";
    static const char sqlite[] = "SELECT seq, hash FROM audit_head WHERE id = 1";
    return st->kind == CF_STORE_POSTGRES ? pg : sqlite;
}

int cf_store_audit_lock_soon(cf_store *st)
{
    cf_stmt *s;
    cf_error ignored;
    /* A prepare that fails now fails again, and is reported, when the head is locked. */
    return st->in_txn && !st->audit.locked && st->ops->prefetch &&
           cf_db_prepare(st, head_lock_sql(st), &s, &ignored) == CF_OK && cf_db_prefetch(st, s);
}

cf_err cf_store_audit_lock_head(cf_store *st, int64_t *seq, unsigned char hash[CF_HASH_LEN],
                                cf_error *err)
{
    if (!st->in_txn)
        return cf_error_set(err, CF_ERR_INTERNAL, "audit: append outside a transaction");
    if (!st->audit.locked) {
        cf_err rc = head_read(st, head_lock_sql(st), &st->audit.seq, st->audit.hash, err);
        if (rc != CF_OK)
            return rc;
        st->audit.locked = 1;
    }
    cf_err rc = write_queue(st, err); /* what was queued comes first */
    if (rc != CF_OK)
        return rc;
    *seq = st->audit.seq;
    memcpy(hash, st->audit.hash, CF_HASH_LEN);
    return CF_OK;
}

cf_err cf_store_audit_queue(cf_store *st, const char *actor, const char *action, const char *object,
                            const char *details,
                            void (*hash)(const cf_audit_rec *, unsigned char *), cf_error *err)
{
    if (!st->in_txn)
        return cf_error_set(err, CF_ERR_INTERNAL, "audit: append outside a transaction");
    if (st->audit.nqueue == st->audit.capqueue) {
        size_t cap = st->audit.capqueue ? 2 * st->audit.capqueue : 8;
        cf_audit_rec *q = realloc(st->audit.queue, cap * sizeof *q);
        if (!q)
            return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
        st->audit.queue = q;
        st->audit.capqueue = cap;
    }
    cf_audit_rec *r = &st->audit.queue[st->audit.nqueue++];
    memset(r, 0, sizeof *r);
    r->actor = cf_strdup(actor ? actor : "");
    r->action = cf_strdup(action ? action : "");
    r->object = cf_strdup(object ? object : "");
    r->details = cf_strdup(details ? details : "{}");
    st->audit.hash_fn = hash;
    return CF_OK;
}

/* Up to 4 records in one INSERT: the statement text for n of them. */
#define AUDIT_INSERT                                                                               \
    "INSERT INTO audit (seq, time_us, actor, action, object, details, prev_hash, hash) VALUES "
#define AUDIT_ROW "(?, ?, ?, ?, ?, ?, ?, ?)"
static const char *const audit_insert_sql[] = {
    NULL,
    AUDIT_INSERT AUDIT_ROW,
    AUDIT_INSERT AUDIT_ROW ", " AUDIT_ROW,
    AUDIT_INSERT AUDIT_ROW ", " AUDIT_ROW ", " AUDIT_ROW,
    AUDIT_INSERT AUDIT_ROW ", " AUDIT_ROW ", " AUDIT_ROW ", " AUDIT_ROW,
};
#define AUDIT_INSERT_MAX 4

static cf_err insert_rows(cf_store *st, const cf_audit_rec *recs, size_t n, cf_error *err)
{
    const struct cf_db_ops *o = st->ops;
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st, audit_insert_sql[n], &s, err);
    if (rc != CF_OK)
        return rc;
    for (size_t i = 0; i < n; i++) {
        const cf_audit_rec *rec = &recs[i];
        int b = (int)(8 * i);
        o->bind_int64(s, b + 1, rec->seq);
        o->bind_int64(s, b + 2, rec->time_us);
        o->bind_text(s, b + 3, rec->actor);
        o->bind_text(s, b + 4, rec->action);
        o->bind_text(s, b + 5, rec->object);
        o->bind_text(s, b + 6, rec->details);
        o->bind_blob(s, b + 7, rec->prev_hash, CF_HASH_LEN);
        o->bind_blob(s, b + 8, rec->hash, CF_HASH_LEN);
    }
    return cf_db_run_later(st, s, NULL, err);
}

/* Numbers, times and chains the queued records after the (locked) head, and writes them. */
static cf_err write_queue(cf_store *st, cf_error *err)
{
    cf_err rc = CF_OK;
    size_t n = st->audit.nqueue;
    if (n == 0)
        return CF_OK;
    int64_t now = cf_time_now_us();
    for (size_t i = 0; i < n; i++) {
        cf_audit_rec *r = &st->audit.queue[i];
        r->seq = st->audit.seq + 1 + (int64_t)i;
        r->time_us = now;
        memcpy(r->prev_hash, i ? st->audit.queue[i - 1].hash : st->audit.hash, CF_HASH_LEN);
        st->audit.hash_fn(r, r->hash);
    }
    for (size_t i = 0; rc == CF_OK && i < n; i += AUDIT_INSERT_MAX)
        rc = insert_rows(st, st->audit.queue + i,
                         n - i < AUDIT_INSERT_MAX ? n - i : AUDIT_INSERT_MAX, err);
    if (rc == CF_OK) {
        st->audit.seq = st->audit.queue[n - 1].seq;
        memcpy(st->audit.hash, st->audit.queue[n - 1].hash, CF_HASH_LEN);
        st->audit.dirty = 1;
    }
    for (size_t i = 0; i < n; i++)
        cf_audit_rec_clear(&st->audit.queue[i]);
    st->audit.nqueue = 0;
    return rc;
}

void cf_db_audit_reset(cf_store *st)
{
    for (size_t i = 0; i < st->audit.nqueue; i++)
        cf_audit_rec_clear(&st->audit.queue[i]);
    free(st->audit.queue);
    memset(&st->audit, 0, sizeof st->audit);
}

cf_err cf_db_audit_commit(cf_store *st, cf_error *err)
{
    int64_t seq;
    unsigned char hash[CF_HASH_LEN];
    /* The queued records: the head is locked only now (locking writes the queue). */
    cf_err rc = st->audit.nqueue ? cf_store_audit_lock_head(st, &seq, hash, err) : CF_OK;
    if (rc != CF_OK)
        return rc;
    if (!st->audit.dirty)
        return st->ops->exec(st, "COMMIT", err);
    /* On PostgreSQL the records, the head's write-back and the COMMIT share a round trip. */
    cf_stmt *s;
    if ((rc = cf_db_prepare(st, "UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", &s, err)) !=
        CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, st->audit.seq);
    st->ops->bind_blob(s, 2, st->audit.hash, CF_HASH_LEN);
    if ((rc = cf_db_run_later(st, s, NULL, err)) != CF_OK)
        return rc;
    return st->ops->exec(st, "COMMIT", err);
}

cf_err cf_store_audit_head(cf_store *st, int64_t *seq, unsigned char hash[CF_HASH_LEN],
                           cf_error *err)
{
    return head_read(st, "SELECT seq, hash FROM audit_head WHERE id = 1", seq, hash, err);
}

cf_err cf_store_audit_insert(cf_store *st, const cf_audit_rec *rec, cf_error *err)
{
    const struct cf_db_ops *o = st->ops;
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "INSERT INTO audit (seq, time_us, actor, action, object, details,"
                              " prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    o->bind_int64(s, 1, rec->seq);
    o->bind_int64(s, 2, rec->time_us);
    o->bind_text(s, 3, rec->actor);
    o->bind_text(s, 4, rec->action);
    o->bind_text(s, 5, rec->object);
    o->bind_text(s, 6, rec->details);
    o->bind_blob(s, 7, rec->prev_hash, CF_HASH_LEN);
    o->bind_blob(s, 8, rec->hash, CF_HASH_LEN);
    if ((rc = cf_db_run(st, s, err)) != CF_OK)
        return rc;
    st->audit.seq = rec->seq;
    memcpy(st->audit.hash, rec->hash, CF_HASH_LEN);
    st->audit.dirty = 1;
    return CF_OK;
}

cf_err cf_store_audit_scan(cf_store *st, const cf_audit_filter *f, cf_audit_cb cb, void *arg,
                           cf_error *err)
{
    const struct cf_db_ops *o = st->ops;
    char sql[1024];
    int n = snprintf(sql, sizeof sql,
                     "SELECT seq, time_us, actor, action, object, details, prev_hash, hash"
                     " FROM audit WHERE seq > ?");
    if (f->since_us)
        n += snprintf(sql + n, sizeof sql - n, " AND time_us >= ?");
    if (f->until_us)
        n += snprintf(sql + n, sizeof sql - n, " AND time_us < ?");
    if (f->actor)
        n += snprintf(sql + n, sizeof sql - n, " AND actor = ?");
    size_t alen = f->action ? strlen(f->action) : 0;
    int prefix = alen > 0 && f->action[alen - 1] == '*';
    if (f->action)
        n += snprintf(sql + n, sizeof sql - n,
                      prefix ? " AND substr(action, 1, ?) = ?" : " AND action = ?");
    if (f->object)
        n += snprintf(sql + n, sizeof sql - n, " AND object = ?");
    n += snprintf(sql + n, sizeof sql - n, " ORDER BY seq");
    if (f->limit > 0)
        snprintf(sql + n, sizeof sql - n, " LIMIT ?");

    cf_stmt *s;
    cf_err rc = o->prepare(st, sql, 0, &s, err);
    if (rc != CF_OK)
        return rc;
    int i = 1;
    char *action_prefix = NULL;
    o->bind_int64(s, i++, f->since_seq);
    if (f->since_us)
        o->bind_int64(s, i++, f->since_us);
    if (f->until_us)
        o->bind_int64(s, i++, f->until_us);
    if (f->actor)
        o->bind_text(s, i++, f->actor);
    if (f->action && prefix) {
        action_prefix = cf_strdup(f->action);
        action_prefix[alen - 1] = '\0';
        o->bind_int64(s, i++, (int64_t)(alen - 1));
        o->bind_text(s, i++, action_prefix);
    } else if (f->action) {
        o->bind_text(s, i++, f->action);
    }
    if (f->object)
        o->bind_text(s, i++, f->object);
    if (f->limit > 0)
        o->bind_int64(s, i++, f->limit);

    int row;
    while ((rc = o->step(s, &row, err)) == CF_OK && row) {
        cf_audit_rec r;
        r.seq = o->col_int64(s, 0);
        r.time_us = o->col_int64(s, 1);
        r.actor = (char *)o->col_text(s, 2);
        r.action = (char *)o->col_text(s, 3);
        r.object = (char *)o->col_text(s, 4);
        r.details = (char *)o->col_text(s, 5);
        int whole = read_hash(st, s, 6, r.prev_hash);
        whole &= read_hash(st, s, 7, r.hash);
        r.hashes_malformed = !whole;
        if (cb(arg, &r))
            break;
    }
    o->done(s);
    free(action_prefix);
    return rc;
}
