/* revocation.c - revoked certificates, their CRL entries, CRL numbers and the change feed
 * in the store (see store.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "store/db.h"

/* ---- selecting certificates ---- */

/* Each selector kind's statement, without and with the owner restriction, as literals so
 * that the driver can keep them compiled. */
#define BY_DEVICES(cond) "device_id IN (SELECT id FROM devices WHERE " cond ")"
#define ONLY_OWNER " AND " BY_DEVICES("owner_id = ?")

#define REVOKE_SQL(where)                                                                          \
    "UPDATE certificates SET status = 'revoked', reason = ?, revoked_us = ?, invalidity_us = ?,"   \
    " status_seq = ? WHERE status = 'good' AND " where                                             \
    " RETURNING serial, ca_id, device_id, crl_shard"

static const char *const revoke_sql[2][CF_SEL_COUNT] = {
    {
        REVOKE_SQL("serial = ?"),
        REVOKE_SQL("device_id = ?"),
        REVOKE_SQL(BY_DEVICES("batch = ?")),
        REVOKE_SQL(BY_DEVICES("grp = ?")),
        REVOKE_SQL(BY_DEVICES("owner_id = ?")),
        REVOKE_SQL("ca_id = ?"),
    },
    {
        REVOKE_SQL("serial = ?" ONLY_OWNER),
        REVOKE_SQL("device_id = ?" ONLY_OWNER),
        REVOKE_SQL(BY_DEVICES("batch = ?") ONLY_OWNER),
        REVOKE_SQL(BY_DEVICES("grp = ?") ONLY_OWNER),
        REVOKE_SQL(BY_DEVICES("owner_id = ?") ONLY_OWNER),
        REVOKE_SQL("ca_id = ?" ONLY_OWNER),
    },
};

#define COUNT_SQL(where)                                                                           \
    "SELECT COALESCE(SUM(CASE WHEN status = 'good' THEN 1 ELSE 0 END), 0), COUNT(*)"               \
    " FROM certificates WHERE " where

static const char *const count_sql[2][CF_SEL_COUNT] = {
    {
        COUNT_SQL("serial = ?"),
        COUNT_SQL("device_id = ?"),
        COUNT_SQL(BY_DEVICES("batch = ?")),
        COUNT_SQL(BY_DEVICES("grp = ?")),
        COUNT_SQL(BY_DEVICES("owner_id = ?")),
        COUNT_SQL("ca_id = ?"),
    },
    {
        COUNT_SQL("serial = ?" ONLY_OWNER),
        COUNT_SQL("device_id = ?" ONLY_OWNER),
        COUNT_SQL(BY_DEVICES("batch = ?") ONLY_OWNER),
        COUNT_SQL(BY_DEVICES("grp = ?") ONLY_OWNER),
        COUNT_SQL(BY_DEVICES("owner_id = ?") ONLY_OWNER),
        COUNT_SQL("ca_id = ?" ONLY_OWNER),
    },
};

static cf_err sel_check(const cf_cert_sel *sel, cf_error *err)
{
    if ((int)sel->kind < 0 || sel->kind >= CF_SEL_COUNT)
        return cf_error_set(err, CF_ERR_INVALID, "unknown certificate selector %d", sel->kind);
    if (sel->kind != CF_SEL_OWNER && sel->kind != CF_SEL_CA && !sel->text)
        return cf_error_set(err, CF_ERR_INVALID, "certificate selector without a value");
    return CF_OK;
}

/* Binds the selector's value at idx and the owner restriction after it. */
static void sel_bind(cf_store *st, cf_stmt *s, int idx, const cf_cert_sel *sel)
{
    if (sel->kind == CF_SEL_OWNER || sel->kind == CF_SEL_CA)
        st->ops->bind_int64(s, idx, sel->id);
    else
        st->ops->bind_text(s, idx, sel->text);
    if (sel->only_owner > 0)
        st->ops->bind_int64(s, idx + 1, sel->only_owner);
}

void cf_revoked_certs_free(cf_revoked_cert *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i].device_id);
    free(v);
}

static void revoked_row(cf_store *st, cf_stmt *s, void *rec, void *arg)
{
    cf_revoked_cert *r = rec;
    (void)arg;
    snprintf(r->serial, sizeof r->serial, "%s", st->ops->col_text(s, 0));
    r->ca_id = st->ops->col_int64(s, 1);
    r->device_id = st->ops->col_null(s, 2) ? NULL : cf_strdup(st->ops->col_text(s, 2));
    r->crl_shard = st->ops->col_null(s, 3) ? 0 : st->ops->col_int64(s, 3);
}

static void revoked_clear(void *rec)
{
    free(((cf_revoked_cert *)rec)->device_id);
}

static int cmp_revoked(const void *a, const void *b)
{
    return strcmp(((const cf_revoked_cert *)a)->serial, ((const cf_revoked_cert *)b)->serial);
}

cf_err cf_store_cert_revoke(cf_store *st, const cf_cert_sel *sel, int reason, int64_t now_us,
                            int64_t invalidity_us, int64_t seq, cf_revoked_cert **out, size_t *n,
                            cf_error *err)
{
    cf_stmt *s;
    void *v = NULL;
    cf_err rc = sel_check(sel, err);
    *out = NULL;
    *n = 0;
    if (rc != CF_OK ||
        (rc = cf_db_prepare(st, revoke_sql[sel->only_owner > 0][sel->kind], &s, err)) != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, reason);
    st->ops->bind_int64(s, 2, now_us);
    if (invalidity_us)
        st->ops->bind_int64(s, 3, invalidity_us);
    else
        st->ops->bind_null(s, 3);
    st->ops->bind_int64(s, 4, seq);
    sel_bind(st, s, 5, sel);
    if ((rc = cf_db_collect(st, s, sizeof(cf_revoked_cert), revoked_row, NULL, revoked_clear, &v, n,
                            err)) != CF_OK)
        return rc;
    *out = v;
    if (*n > 1)
        qsort(*out, *n, sizeof **out, cmp_revoked);
    return CF_OK;
}

cf_err cf_store_cert_stamp(cf_store *st, const char *serial, int64_t seq, cf_revoked_stamp *out,
                           cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "UPDATE certificates SET status_seq = ? WHERE serial = ?"
                              " AND status = 'revoked' RETURNING ca_id, crl_shard, revoked_us,"
                              " reason",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, seq);
    st->ops->bind_text(s, 2, serial);
    if ((rc = cf_db_one(st, s, err)) != CF_OK) {
        if (rc == CF_ERR_NOT_FOUND)
            cf_error_set(err, rc, "no revoked certificate %s", serial);
        return rc;
    }
    const struct cf_db_ops *o = st->ops;
    out->ca_id = o->col_int64(s, 0);
    out->crl_shard = o->col_null(s, 1) ? 0 : o->col_int64(s, 1);
    out->revoked_us = o->col_null(s, 2) ? 0 : o->col_int64(s, 2);
    out->reason = o->col_null(s, 3) ? 0 : (int)o->col_int64(s, 3);
    o->done(s);
    return CF_OK;
}

cf_err cf_store_cert_count_sel(cf_store *st, const cf_cert_sel *sel, int64_t *good,
                               int64_t *revoked, cf_error *err)
{
    cf_stmt *s;
    cf_err rc = sel_check(sel, err);
    if (rc != CF_OK ||
        (rc = cf_db_prepare(st, count_sql[sel->only_owner > 0][sel->kind], &s, err)) != CF_OK)
        return rc;
    sel_bind(st, s, 1, sel);
    if ((rc = cf_db_one(st, s, err)) != CF_OK)
        return rc;
    *good = st->ops->col_int64(s, 0);
    *revoked = st->ops->col_int64(s, 1) - *good;
    st->ops->done(s);
    return CF_OK;
}

cf_err cf_store_cert_state(cf_store *st, int64_t ca_id, const char *serial, cf_cert_state *out,
                           cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "SELECT status, reason, revoked_us, invalidity_us, status_seq"
                              " FROM certificates WHERE serial = ? AND ca_id = ?",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_text(s, 1, serial);
    st->ops->bind_int64(s, 2, ca_id);
    if ((rc = cf_db_one(st, s, err)) != CF_OK) {
        if (rc == CF_ERR_NOT_FOUND)
            cf_error_set(err, CF_ERR_NOT_FOUND, "no certificate %s of CA %lld", serial,
                         (long long)ca_id);
        return rc;
    }
    const struct cf_db_ops *o = st->ops;
    out->status = strcmp(o->col_text(s, 0), "revoked") == 0 ? CF_CERT_REVOKED : CF_CERT_GOOD;
    out->reason = o->col_null(s, 1) || out->status == CF_CERT_GOOD ? -1 : (int)o->col_int64(s, 1);
    out->revoked_us = o->col_null(s, 2) ? 0 : o->col_int64(s, 2);
    out->invalidity_us = o->col_null(s, 3) ? 0 : o->col_int64(s, 3);
    out->status_seq = o->col_null(s, 4) ? 0 : o->col_int64(s, 4);
    o->done(s);
    return CF_OK;
}

/* 6: certificateHold (RFC 5280 5.3.1) */
cf_err cf_store_cert_release(cf_store *st, int64_t ca_id, const char *serial, int64_t now_us,
                             int64_t seq, cf_error *err)
{
    cf_stmt *s;
    int64_t n = 0;
    (void)now_us;
    cf_err rc =
        cf_db_prepare(st,
                      "UPDATE certificates SET status = 'good', reason = NULL,"
                      " revoked_us = NULL, invalidity_us = NULL, status_seq = ?"
                      " WHERE serial = ? AND ca_id = ? AND status = 'revoked' AND reason = 6"
                      " RETURNING serial",
                      &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, seq);
    st->ops->bind_text(s, 2, serial);
    st->ops->bind_int64(s, 3, ca_id);
    for (int row = 1; rc == CF_OK && row;)
        if ((rc = st->ops->step(s, &row, err)) == CF_OK && row)
            n++;
    st->ops->done(s);
    if (rc != CF_OK)
        return rc;
    if (n == 0)
        return cf_error_set(err, CF_ERR_NOT_FOUND, "certificate %s is not on hold", serial);
    if ((rc = cf_db_prepare(st, "DELETE FROM crl_entries WHERE ca_id = ? AND serial = ?", &s,
                            err)) != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, ca_id);
    st->ops->bind_text(s, 2, serial);
    if ((rc = cf_db_run(st, s, err)) != CF_OK ||
        (rc = cf_db_prepare(st, "INSERT INTO crl_removals (ca_id, serial, seq) VALUES (?, ?, ?)",
                            &s, err)) != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, ca_id);
    st->ops->bind_text(s, 2, serial);
    st->ops->bind_int64(s, 3, seq);
    return cf_db_run(st, s, err);
}

/* ---- CRL entries ---- */

cf_err cf_store_crl_entry_add(cf_store *st, int64_t ca_id, const char *serial, int64_t shard,
                              int64_t seq, const unsigned char *entry, size_t len, cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "INSERT INTO crl_entries (ca_id, serial, shard, seq, entry)"
                              " VALUES (?, ?, ?, ?, ?)",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, ca_id);
    st->ops->bind_text(s, 2, serial);
    st->ops->bind_int64(s, 3, shard);
    st->ops->bind_int64(s, 4, seq);
    st->ops->bind_blob(s, 5, entry, len);
    return cf_db_run(st, s, err);
}

/* Runs sql with ca_id, then each of the n further parameters, and hands each row to cb. */
static cf_err entries_scan(cf_store *st, const char *sql, int64_t ca_id, const int64_t *more, int n,
                           int with_entry, cf_crl_entry_cb cb, void *arg, cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st, sql, &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, ca_id);
    for (int i = 0; i < n; i++)
        st->ops->bind_int64(s, 2 + i, more[i]);
    for (int row = 1; rc == CF_OK && row;) {
        if ((rc = st->ops->step(s, &row, err)) != CF_OK || !row)
            break;
        size_t len = 0;
        const unsigned char *e = with_entry ? st->ops->col_blob(s, 2, &len) : NULL;
        if (cb(arg, st->ops->col_text(s, 0), st->ops->col_int64(s, 1), e, len))
            break;
    }
    st->ops->done(s);
    return rc;
}

cf_err cf_store_crl_entries_scan(cf_store *st, int64_t ca_id, int64_t shard, int64_t since_seq,
                                 cf_crl_entry_cb cb, void *arg, cf_error *err)
{
    int64_t p[2] = {shard, since_seq};
    if (shard > 0)
        return entries_scan(st,
                            "SELECT serial, seq, entry FROM crl_entries WHERE ca_id = ?"
                            " AND shard = ? AND seq > ? ORDER BY seq, id",
                            ca_id, p, 2, 1, cb, arg, err);
    /* The whole CRL is one pass over the table in insertion order: "+ca_id" keeps SQLite
     * from reading it through the (ca_id, seq) index and sorting a million rows by id. */
    if (since_seq <= 0)
        return entries_scan(st,
                            "SELECT NULL, seq, entry FROM crl_entries WHERE +ca_id = ?"
                            " ORDER BY id", /* the serial is in the entry: not read twice */
                            ca_id, NULL, 0, 1, cb, arg, err);
    return entries_scan(st,
                        "SELECT serial, seq, entry FROM crl_entries WHERE ca_id = ? AND seq > ?"
                        " ORDER BY seq, id",
                        ca_id, p + 1, 1, 1, cb, arg, err);
}

cf_err cf_store_crl_removals_scan(cf_store *st, int64_t ca_id, int64_t since_seq,
                                  cf_crl_entry_cb cb, void *arg, cf_error *err)
{
    return entries_scan(st,
                        "SELECT serial, seq FROM crl_removals WHERE ca_id = ? AND seq > ?"
                        " ORDER BY seq, id",
                        ca_id, &since_seq, 1, 0, cb, arg, err);
}

/* ---- CRL numbers and shards ---- */

/* Increments a counter of ca_id's crl_state row (update: the statement, RETURNING it). The
 * first writer inserts the row; everyone then increments under the row's lock, which holds
 * until commit: two processes never get the same value. */
static cf_err state_next(cf_store *st, int64_t ca_id, const char *update, int64_t *out,
                         cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "INSERT INTO crl_state (ca_id, number) VALUES (?, 0)"
                              " ON CONFLICT (ca_id) DO NOTHING",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, ca_id);
    if ((rc = cf_db_run(st, s, err)) != CF_OK || (rc = cf_db_prepare(st, update, &s, err)) != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, ca_id);
    return cf_db_int64(st, s, out, err);
}

cf_err cf_store_crl_number_next(cf_store *st, int64_t ca_id, int64_t *number, cf_error *err)
{
    return state_next(st, ca_id,
                      "UPDATE crl_state SET number = number + 1 WHERE ca_id = ? RETURNING number",
                      number, err);
}

cf_err cf_store_crl_shard_reserve(cf_store *st, int64_t ca_id, int64_t *shard, cf_error *err)
{
    static const char sql[] =
        "UPDATE crl_state SET shards = shards + 1 WHERE ca_id = ? RETURNING shards";
    if (st->in_txn)
        return state_next(st, ca_id, sql, shard, err);
    cf_err rc = cf_store_begin(st, err);
    if (rc != CF_OK)
        return rc;
    if ((rc = state_next(st, ca_id, sql, shard, err)) == CF_OK)
        return cf_store_commit(st, err);
    cf_store_rollback(st);
    return rc;
}

cf_err cf_store_crl_shards(cf_store *st, int64_t ca_id, int64_t *n, cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st, "SELECT COALESCE(MAX(shards), 0) FROM crl_state WHERE ca_id = ?",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, ca_id);
    return cf_db_int64(st, s, n, err);
}

cf_err cf_store_crl_base_get(cf_store *st, int64_t ca_id, int64_t *number, int64_t *seq,
                             cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "SELECT base_number, base_seq FROM crl_state WHERE ca_id = ?"
                              " AND base_number IS NOT NULL",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, ca_id);
    if ((rc = cf_db_one(st, s, err)) != CF_OK) {
        if (rc == CF_ERR_NOT_FOUND)
            cf_error_set(err, CF_ERR_NOT_FOUND, "CA %lld has published no full CRL yet",
                         (long long)ca_id);
        return rc;
    }
    *number = st->ops->col_int64(s, 0);
    *seq = st->ops->col_int64(s, 1);
    st->ops->done(s);
    return CF_OK;
}

cf_err cf_store_crl_base_set(cf_store *st, int64_t ca_id, int64_t number, int64_t seq,
                             cf_error *err)
{
    cf_stmt *s;
    /* Only forward: a slower process finishing an older full CRL does not move it back. */
    cf_err rc = cf_db_prepare(st,
                              "UPDATE crl_state SET base_number = ?, base_seq = ? WHERE ca_id = ?"
                              " AND (base_number IS NULL OR base_number < ?)",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, number);
    st->ops->bind_int64(s, 2, seq);
    st->ops->bind_int64(s, 3, ca_id);
    st->ops->bind_int64(s, 4, number);
    return cf_db_run(st, s, err);
}

/* ---- the change feed ---- */

void cf_change_rec_clear(cf_change_rec *rec)
{
    if (!rec)
        return;
    free(rec->kind);
    free(rec->serial);
    free(rec->device_id);
    free(rec->details);
    memset(rec, 0, sizeof *rec);
}

static void bind_opt_text(cf_store *st, cf_stmt *s, int idx, const char *v)
{
    if (v)
        st->ops->bind_text(s, idx, v);
    else
        st->ops->bind_null(s, idx);
}

cf_err cf_store_change_insert(cf_store *st, const cf_change_rec *rec, cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "INSERT INTO changes (seq, time_us, kind, ca_id, serial, device_id,"
                              " count, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, rec->seq);
    st->ops->bind_int64(s, 2, rec->time_us);
    st->ops->bind_text(s, 3, rec->kind);
    if (rec->ca_id)
        st->ops->bind_int64(s, 4, rec->ca_id);
    else
        st->ops->bind_null(s, 4);
    bind_opt_text(st, s, 5, rec->serial);
    bind_opt_text(st, s, 6, rec->device_id);
    st->ops->bind_int64(s, 7, rec->count);
    st->ops->bind_text(s, 8, rec->details ? rec->details : "{}");
    st->bell_due = 1;
    return cf_db_run(st, s, err);
}

static void change_row(cf_store *st, cf_stmt *s, void *rec, void *arg)
{
    cf_change_rec *c = rec;
    const struct cf_db_ops *o = st->ops;
    (void)arg;
    c->seq = o->col_int64(s, 0);
    c->time_us = o->col_int64(s, 1);
    c->kind = cf_strdup(o->col_text(s, 2));
    c->ca_id = o->col_null(s, 3) ? 0 : o->col_int64(s, 3);
    c->serial = o->col_null(s, 4) ? NULL : cf_strdup(o->col_text(s, 4));
    c->device_id = o->col_null(s, 5) ? NULL : cf_strdup(o->col_text(s, 5));
    c->count = o->col_int64(s, 6);
    c->details = cf_strdup(o->col_text(s, 7));
}

static void change_clear(void *rec)
{
    cf_change_rec_clear(rec);
}

cf_err cf_store_changes_list(cf_store *st, int64_t since, int64_t limit, cf_change_rec **recs,
                             size_t *n, cf_error *err)
{
    cf_stmt *s;
    void *v = NULL;
    cf_err rc = cf_db_prepare(st,
                              "SELECT seq, time_us, kind, ca_id, serial, device_id, count, details"
                              " FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, since);
    st->ops->bind_int64(s, 2, limit > 0 ? limit : INT64_MAX);
    rc = cf_db_collect(st, s, sizeof(cf_change_rec), change_row, NULL, change_clear, &v, n, err);
    *recs = v;
    return rc;
}

cf_err cf_store_change_last(cf_store *st, int64_t *seq, cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st, "SELECT COALESCE(MAX(seq), 0) FROM changes", &s, err);
    if (rc != CF_OK)
        return rc;
    return cf_db_int64(st, s, seq, err);
}

cf_err cf_store_ca_revoke(cf_store *st, int64_t id, int reason, int64_t now_us, cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "UPDATE cas SET status = 'revoked', reason = ?, revoked_us = ?"
                              " WHERE id = ? RETURNING id",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, reason);
    st->ops->bind_int64(s, 2, now_us);
    st->ops->bind_int64(s, 3, id);
    int64_t got;
    if ((rc = cf_db_int64(st, s, &got, err)) == CF_ERR_NOT_FOUND)
        cf_error_set(err, CF_ERR_NOT_FOUND, "no CA %lld", (long long)id);
    return rc;
}

/* ---- device states that follow revocation ---- */

cf_err cf_store_devices_revoked_state(cf_store *st, int64_t seq, int64_t now_us, cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(
        st,
        "UPDATE devices SET state = 'revoked', updated_us = ?"
        " WHERE state IN ('active', 'suspended') AND id IN (SELECT device_id FROM certificates"
        " WHERE status_seq = ? AND device_id IS NOT NULL) AND NOT EXISTS (SELECT 1 FROM"
        " certificates c WHERE c.device_id = devices.id AND c.status = 'good')",
        &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, now_us);
    st->ops->bind_int64(s, 2, seq);
    return cf_db_run(st, s, err);
}

cf_err cf_store_devices_released_state(cf_store *st, const char *id, int64_t now_us, cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "UPDATE devices SET state = 'active', updated_us = ?"
                              " WHERE id = ? AND state = 'revoked' AND blocked = 0 AND EXISTS"
                              " (SELECT 1 FROM certificates c WHERE c.device_id = devices.id"
                              " AND c.status = 'good')",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, now_us);
    st->ops->bind_text(s, 2, id);
    return cf_db_run(st, s, err);
}

cf_err cf_store_device_set_blocked(cf_store *st, const char *id, int64_t now_us, cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "UPDATE devices SET blocked = 1, updated_us = ? WHERE id = ?"
                              " RETURNING id",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, now_us);
    st->ops->bind_text(s, 2, id);
    if ((rc = cf_db_one(st, s, err)) == CF_ERR_NOT_FOUND)
        return cf_error_set(err, CF_ERR_NOT_FOUND, "device %s not found", id);
    if (rc == CF_OK)
        st->ops->done(s);
    return rc;
}
