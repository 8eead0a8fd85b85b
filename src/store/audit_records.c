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

static void read_hash(cf_store *st, cf_stmt *s, int col, unsigned char out[CF_HASH_LEN])
{
    size_t len;
    const unsigned char *h = st->ops->col_blob(s, col, &len);
    memset(out, 0, CF_HASH_LEN);
    memcpy(out, h, len < CF_HASH_LEN ? len : CF_HASH_LEN);
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
    read_hash(st, s, 1, hash);
    int row;
    rc = st->ops->step(s, &row, err);
    st->ops->done(s);
    return rc;
}

cf_err cf_store_audit_lock_head(cf_store *st, int64_t *seq, unsigned char hash[CF_HASH_LEN],
                                cf_error *err)
{
    if (!st->in_txn)
        return cf_error_set(err, CF_ERR_INTERNAL, "audit: append outside a transaction");
    if (!st->audit.locked) {
        /* An UPDATE takes the row lock in PostgreSQL (SQLite's write lock is already held):
         * appenders in every process take turns, and the chain never forks. */
        cf_err rc =
            head_read(st, "UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash",
                      &st->audit.seq, st->audit.hash, err);
        if (rc != CF_OK)
            return rc;
        st->audit.locked = 1;
    }
    *seq = st->audit.seq;
    memcpy(hash, st->audit.hash, CF_HASH_LEN);
    return CF_OK;
}

cf_err cf_db_audit_flush(cf_store *st, cf_error *err)
{
    if (!st->audit.dirty)
        return CF_OK;
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st, "UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, st->audit.seq);
    st->ops->bind_blob(s, 2, st->audit.hash, CF_HASH_LEN);
    return cf_db_run(st, s, err);
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
        read_hash(st, s, 6, r.prev_hash);
        read_hash(st, s, 7, r.hash);
        if (cb(arg, &r))
            break;
    }
    o->done(s);
    free(action_prefix);
    return rc;
}
