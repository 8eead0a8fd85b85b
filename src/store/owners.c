/* owners.c - owners, API tokens, claim attempts, and the device queries and updates that
 * ownership needs (claim, transfer, groups, the certificates of an ownership period). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "store/db.h"

static const char *const roles[] = {"admin", "operator", "auditor"};

const char *cf_role_name(cf_role role)
{
    return role < CF_ROLE_COUNT ? roles[role] : "unknown";
}

int cf_role_parse(const char *name)
{
    for (int i = 0; i < CF_ROLE_COUNT; i++)
        if (strcmp(roles[i], name) == 0)
            return i;
    return -1;
}

static void bind_opt_text(cf_store *st, cf_stmt *s, int idx, const char *v)
{
    if (v)
        st->ops->bind_text(s, idx, v);
    else
        st->ops->bind_null(s, idx);
}

static char *col_opt_text(cf_store *st, cf_stmt *s, int col)
{
    return st->ops->col_null(s, col) ? NULL : cf_strdup(st->ops->col_text(s, col));
}

static int64_t col_opt_int64(cf_store *st, cf_stmt *s, int col)
{
    return st->ops->col_null(s, col) ? 0 : st->ops->col_int64(s, col);
}

/* Steps a statement that returned its one row to its end, so a cached statement can be
 * reused, and ends it. */
static cf_err finish(cf_store *st, cf_stmt *s, cf_error *err)
{
    int row;
    cf_err rc = st->ops->step(s, &row, err);
    st->ops->done(s);
    return rc;
}

/* Appends a copy of str to the growing array *v of *n strings. */
static cf_err strings_push(char ***v, size_t *n, const char *str, cf_error *err)
{
    char **nv = realloc(*v, (*n + 1) * sizeof **v);
    if (!nv)
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    *v = nv;
    nv[(*n)++] = cf_strdup(str);
    return CF_OK;
}

void cf_store_strings_free(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Runs s (an UPDATE ... RETURNING one text column) and collects the column. */
static cf_err collect_strings(cf_store *st, cf_stmt *s, char ***out, size_t *n, cf_error *err)
{
    char **v = NULL;
    size_t count = 0;
    int row;
    cf_err rc;
    while ((rc = st->ops->step(s, &row, err)) == CF_OK && row)
        if ((rc = strings_push(&v, &count, st->ops->col_text(s, 0), err)) != CF_OK)
            break;
    st->ops->done(s);
    if (rc != CF_OK) {
        cf_store_strings_free(v, count);
        return rc;
    }
    *out = v;
    *n = count;
    return CF_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* ---- owners ---- */

void cf_owner_rec_clear(cf_owner_rec *rec)
{
    if (!rec)
        return;
    free(rec->name);
    memset(rec, 0, sizeof *rec);
}

cf_err cf_store_owner_insert(cf_store *st, const char *name, int64_t created_us, int64_t *id,
                             cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(
        st, "INSERT INTO owners (name, created_us) VALUES (?, ?) RETURNING id", &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_text(s, 1, name);
    st->ops->bind_int64(s, 2, created_us);
    if ((rc = cf_db_one(st, s, err)) != CF_OK) {
        if (rc == CF_ERR_EXISTS)
            cf_error_set(err, rc, "an owner named %s already exists", name);
        return rc;
    }
    *id = st->ops->col_int64(s, 0);
    return finish(st, s, err);
}

static cf_err owner_fetch(cf_store *st, cf_stmt *s, cf_owner_rec *out, cf_error *err)
{
    cf_err rc = cf_db_one(st, s, err);
    if (rc != CF_OK)
        return rc;
    memset(out, 0, sizeof *out);
    out->id = st->ops->col_int64(s, 0);
    out->name = cf_strdup(st->ops->col_text(s, 1));
    out->created_us = st->ops->col_int64(s, 2);
    st->ops->done(s);
    return CF_OK;
}

cf_err cf_store_owner_get(cf_store *st, const char *name, cf_owner_rec *out, cf_error *err)
{
    cf_stmt *s;
    cf_err rc =
        cf_db_prepare(st, "SELECT id, name, created_us FROM owners WHERE name = ?", &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_text(s, 1, name);
    rc = owner_fetch(st, s, out, err);
    if (rc == CF_ERR_NOT_FOUND)
        cf_error_set(err, rc, "owner %s not found", name);
    return rc;
}

cf_err cf_store_owner_get_id(cf_store *st, int64_t id, cf_owner_rec *out, cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st, "SELECT id, name, created_us FROM owners WHERE id = ?", &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, id);
    rc = owner_fetch(st, s, out, err);
    if (rc == CF_ERR_NOT_FOUND)
        cf_error_set(err, rc, "owner #%lld not found", (long long)id);
    return rc;
}

static void owner_list_row(cf_store *st, cf_stmt *s, void *rec, void *arg)
{
    cf_owner_rec *r = rec;
    const struct cf_db_ops *o = st->ops;
    (void)arg;
    r->id = o->col_int64(s, 0);
    r->name = cf_strdup(o->col_text(s, 1));
    r->created_us = o->col_int64(s, 2);
    r->devices = o->col_int64(s, 3);
}

static void owner_list_clear(void *rec)
{
    cf_owner_rec_clear(rec);
}

cf_err cf_store_owner_list(cf_store *st, cf_owner_rec **recs, size_t *n, cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "SELECT o.id, o.name, o.created_us,"
                              " (SELECT COUNT(*) FROM devices d WHERE d.owner_id = o.id)"
                              " FROM owners o ORDER BY o.name",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    return cf_db_collect(st, s, sizeof **recs, owner_list_row, NULL, owner_list_clear,
                         (void **)recs, n, err);
}

cf_err cf_store_owner_lock(cf_store *st, int64_t id, cf_error *err)
{
    if (!st->in_txn)
        return cf_error_set(err, CF_ERR_INTERNAL, "store: owner lock outside a transaction");
    if (st->kind == CF_STORE_SQLITE)
        return CF_OK;
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st, "SELECT id FROM owners WHERE id = ? FOR UPDATE", &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, id);
    if ((rc = cf_db_one(st, s, err)) != CF_OK) {
        if (rc == CF_ERR_NOT_FOUND)
            cf_error_set(err, rc, "owner #%lld not found", (long long)id);
        return rc;
    }
    return finish(st, s, err);
}

/* ---- tokens ---- */

void cf_token_rec_clear(cf_token_rec *rec)
{
    if (!rec)
        return;
    free(rec->label);
    memset(rec, 0, sizeof *rec);
}

#define TOKEN_COLUMNS "id, owner_id, role, hash, label, created_us, revoked_us"

static void token_read(cf_store *st, cf_stmt *s, cf_token_rec *r)
{
    const struct cf_db_ops *o = st->ops;
    memset(r, 0, sizeof *r);
    r->id = o->col_int64(s, 0);
    r->owner_id = col_opt_int64(st, s, 1);
    int role = cf_role_parse(o->col_text(s, 2));
    r->role = role < 0 ? CF_ROLE_AUDITOR : (cf_role)role; /* unknown: the least power */
    size_t len;
    const unsigned char *h = o->col_blob(s, 3, &len);
    memcpy(r->hash, h, len < CF_HASH_LEN ? len : CF_HASH_LEN);
    r->label = col_opt_text(st, s, 4);
    r->created_us = o->col_int64(s, 5);
    r->revoked_us = col_opt_int64(st, s, 6);
}

cf_err cf_store_token_insert(cf_store *st, cf_token_rec *rec, cf_error *err)
{
    const struct cf_db_ops *o = st->ops;
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "INSERT INTO tokens (owner_id, role, hash, label, created_us)"
                              " VALUES (?, ?, ?, ?, ?) RETURNING id",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    if (rec->owner_id)
        o->bind_int64(s, 1, rec->owner_id);
    else
        o->bind_null(s, 1);
    o->bind_text(s, 2, cf_role_name(rec->role));
    o->bind_blob(s, 3, rec->hash, CF_HASH_LEN);
    bind_opt_text(st, s, 4, rec->label);
    o->bind_int64(s, 5, rec->created_us);
    if ((rc = cf_db_one(st, s, err)) != CF_OK) {
        if (rc == CF_ERR_EXISTS)
            cf_error_set(err, rc, "token already exists");
        return rc;
    }
    rec->id = o->col_int64(s, 0);
    return finish(st, s, err);
}

cf_err cf_store_token_find(cf_store *st, const unsigned char hash[CF_HASH_LEN], cf_token_rec *out,
                           cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st, "SELECT " TOKEN_COLUMNS " FROM tokens WHERE hash = ?", &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_blob(s, 1, hash, CF_HASH_LEN);
    if ((rc = cf_db_one(st, s, err)) != CF_OK) {
        if (rc == CF_ERR_NOT_FOUND)
            cf_error_set(err, rc, "token not found");
        return rc;
    }
    token_read(st, s, out);
    st->ops->done(s);
    return CF_OK;
}

static void token_list_row(cf_store *st, cf_stmt *s, void *rec, void *arg)
{
    cf_token_rec *r = rec;
    (void)arg;
    token_read(st, s, r);
}

static void token_list_clear(void *rec)
{
    cf_token_rec_clear(rec);
}

cf_err cf_store_token_list(cf_store *st, int64_t owner_id, cf_token_rec **recs, size_t *n,
                           cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(
        st,
        owner_id ? "SELECT " TOKEN_COLUMNS " FROM tokens WHERE owner_id = ? ORDER BY id"
                 : "SELECT " TOKEN_COLUMNS " FROM tokens WHERE owner_id IS NULL ORDER BY id",
        &s, err);
    if (rc != CF_OK)
        return rc;
    if (owner_id)
        st->ops->bind_int64(s, 1, owner_id);
    return cf_db_collect(st, s, sizeof **recs, token_list_row, NULL, token_list_clear,
                         (void **)recs, n, err);
}

cf_err cf_store_token_revoke(cf_store *st, int64_t owner_id, int64_t id, int64_t now_us,
                             cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(
        st,
        owner_id ? "UPDATE tokens SET revoked_us = ? WHERE id = ? AND owner_id = ?"
                   " AND revoked_us IS NULL RETURNING id"
                 : "UPDATE tokens SET revoked_us = ? WHERE id = ? AND owner_id IS NULL"
                   " AND revoked_us IS NULL RETURNING id",
        &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, now_us);
    st->ops->bind_int64(s, 2, id);
    if (owner_id)
        st->ops->bind_int64(s, 3, owner_id);
    if ((rc = cf_db_one(st, s, err)) != CF_OK) {
        if (rc == CF_ERR_NOT_FOUND)
            cf_error_set(err, rc, "no valid token #%lld of this owner", (long long)id);
        return rc;
    }
    return finish(st, s, err);
}

/* ---- claim attempts ---- */

cf_err cf_store_claim_attempt_insert(cf_store *st, const char *device_id, int64_t owner_id,
                                     int64_t time_us, int ok, cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "INSERT INTO claim_attempts (device_id, owner_id, time_us, ok)"
                              " VALUES (?, ?, ?, ?)",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_text(s, 1, device_id);
    if (owner_id)
        st->ops->bind_int64(s, 2, owner_id);
    else
        st->ops->bind_null(s, 2);
    st->ops->bind_int64(s, 3, time_us);
    st->ops->bind_int64(s, 4, ok ? 1 : 0);
    return cf_db_run(st, s, err);
}

cf_err cf_store_claim_failures(cf_store *st, const char *device_id, int64_t owner_id,
                               int64_t since_us, int64_t *n, cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              device_id ? "SELECT COUNT(*) FROM claim_attempts"
                                          " WHERE device_id = ? AND time_us >= ? AND ok = 0"
                                        : "SELECT COUNT(*) FROM claim_attempts"
                                          " WHERE owner_id = ? AND time_us >= ? AND ok = 0",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    if (device_id)
        st->ops->bind_text(s, 1, device_id);
    else
        st->ops->bind_int64(s, 1, owner_id);
    st->ops->bind_int64(s, 2, since_us);
    return cf_db_int64(st, s, n, err);
}

/* ---- devices ---- */

void cf_device_rec_clear(cf_device_rec *rec)
{
    if (!rec)
        return;
    free(rec->id);
    free(rec->owner);
    free(rec->manufacturer);
    free(rec->batch);
    free(rec->grp);
    free(rec->model);
    free(rec->part_number);
    memset(rec, 0, sizeof *rec);
}

#define DEVICE_SELECT                                                                              \
    "SELECT d.id, d.state, d.owner_id, o.name, d.manufacturer_id, m.name, d.batch, d.grp,"         \
    " d.model, d.part_number, d.claim_hash, d.blocked, d.provisioned_us, d.created_us,"            \
    " d.updated_us FROM devices d LEFT JOIN owners o ON o.id = d.owner_id"                         \
    " LEFT JOIN manufacturers m ON m.id = d.manufacturer_id"

/* Reads a row of DEVICE_SELECT into r, whose strings are then r's own. */
static void device_read(cf_store *st, cf_stmt *s, cf_device_rec *r)
{
    const struct cf_db_ops *o = st->ops;
    memset(r, 0, sizeof *r);
    r->id = cf_strdup(o->col_text(s, 0));
    int state = cf_device_state_parse(o->col_text(s, 1));
    /* An unknown state is treated as the most restrictive one. */
    r->state = state < 0 ? CF_DEVICE_DECOMMISSIONED : (cf_device_state)state;
    r->owner_id = col_opt_int64(st, s, 2);
    r->owner = col_opt_text(st, s, 3);
    r->manufacturer_id = col_opt_int64(st, s, 4);
    r->manufacturer = col_opt_text(st, s, 5);
    r->batch = col_opt_text(st, s, 6);
    r->grp = col_opt_text(st, s, 7);
    r->model = col_opt_text(st, s, 8);
    r->part_number = col_opt_text(st, s, 9);
    if (!o->col_null(s, 10)) {
        size_t len;
        const unsigned char *h = o->col_blob(s, 10, &len);
        if (len == CF_HASH_LEN) {
            memcpy(r->claim_hash, h, CF_HASH_LEN);
            r->has_claim_hash = 1;
        }
    }
    r->blocked = o->col_int64(s, 11) != 0;
    r->provisioned_us = col_opt_int64(st, s, 12);
    r->created_us = o->col_int64(s, 13);
    r->updated_us = o->col_int64(s, 14);
}

cf_err cf_store_device_get(cf_store *st, const char *id, int lock, cf_device_rec *out,
                           cf_error *err)
{
    const char *sql = DEVICE_SELECT " WHERE d.id = ?";
    if (lock && st->kind == CF_STORE_POSTGRES)
        sql = DEVICE_SELECT " WHERE d.id = ? FOR UPDATE OF d";
    if (lock && !st->in_txn)
        return cf_error_set(err, CF_ERR_INTERNAL, "store: device lock outside a transaction");
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st, sql, &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_text(s, 1, id);
    if ((rc = cf_db_one(st, s, err)) != CF_OK) {
        if (rc == CF_ERR_NOT_FOUND)
            cf_error_set(err, rc, "device %s not found", id);
        return rc;
    }
    device_read(st, s, out);
    st->ops->done(s);
    return CF_OK;
}

cf_err cf_store_device_scan(cf_store *st, const cf_device_filter *f, cf_device_cb cb, void *arg,
                            cf_error *err)
{
    const struct cf_db_ops *o = st->ops;
    char sql[1024];
    size_t n = (size_t)snprintf(sql, sizeof sql, "%s WHERE 1 = 1", DEVICE_SELECT);
    if (f->state >= 0)
        n += (size_t)snprintf(sql + n, sizeof sql - n, " AND d.state = ?");
    if (f->by_owner)
        n += (size_t)snprintf(sql + n, sizeof sql - n,
                              f->owner_id ? " AND d.owner_id = ?" : " AND d.owner_id IS NULL");
    if (f->manufacturer_id)
        n += (size_t)snprintf(sql + n, sizeof sql - n, " AND d.manufacturer_id = ?");
    if (f->batch)
        n += (size_t)snprintf(sql + n, sizeof sql - n, " AND d.batch = ?");
    if (f->grp)
        n += (size_t)snprintf(sql + n, sizeof sql - n, " AND d.grp = ?");
    if (f->model)
        n += (size_t)snprintf(sql + n, sizeof sql - n, " AND d.model = ?");
    if (f->after)
        n += (size_t)snprintf(sql + n, sizeof sql - n, " AND d.id > ?");
    n += (size_t)snprintf(sql + n, sizeof sql - n, " ORDER BY d.id");
    if (f->limit > 0)
        snprintf(sql + n, sizeof sql - n, " LIMIT ?");

    cf_stmt *s;
    cf_err rc = o->prepare(st, sql, 0, &s, err);
    if (rc != CF_OK)
        return rc;
    int i = 1;
    if (f->state >= 0)
        o->bind_text(s, i++, cf_device_state_name((cf_device_state)f->state));
    if (f->by_owner && f->owner_id)
        o->bind_int64(s, i++, f->owner_id);
    if (f->manufacturer_id)
        o->bind_int64(s, i++, f->manufacturer_id);
    if (f->batch)
        o->bind_text(s, i++, f->batch);
    if (f->grp)
        o->bind_text(s, i++, f->grp);
    if (f->model)
        o->bind_text(s, i++, f->model);
    if (f->after)
        o->bind_text(s, i++, f->after);
    if (f->limit > 0)
        o->bind_int64(s, i++, f->limit);
    int row;
    while ((rc = o->step(s, &row, err)) == CF_OK && row) {
        cf_device_rec rec;
        device_read(st, s, &rec);
        int stop = cb(arg, &rec);
        cf_device_rec_clear(&rec);
        if (stop)
            break;
    }
    o->done(s);
    return rc;
}

cf_err cf_store_batch_count(cf_store *st, const char *batch, int64_t *n, cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st, "SELECT COUNT(*) FROM devices WHERE batch = ?", &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_text(s, 1, batch);
    return cf_db_int64(st, s, n, err);
}

cf_err cf_store_device_set_owner(cf_store *st, const char *id, int64_t owner_id,
                                 cf_device_state state, cf_error *err)
{
    const struct cf_db_ops *o = st->ops;
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "UPDATE devices SET owner_id = ?, state = ?, updated_us = ?"
                              " WHERE id = ? RETURNING id",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    if (owner_id)
        o->bind_int64(s, 1, owner_id);
    else
        o->bind_null(s, 1);
    o->bind_text(s, 2, cf_device_state_name(state));
    o->bind_int64(s, 3, cf_time_now_us());
    o->bind_text(s, 4, id);
    if ((rc = cf_db_one(st, s, err)) != CF_OK) {
        if (rc == CF_ERR_NOT_FOUND)
            cf_error_set(err, rc, "device %s not found", id);
        return rc;
    }
    return finish(st, s, err);
}

cf_err cf_store_device_set_group(cf_store *st, const char *id, const char *grp, cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(
        st, "UPDATE devices SET grp = ?, updated_us = ? WHERE id = ? RETURNING id", &s, err);
    if (rc != CF_OK)
        return rc;
    bind_opt_text(st, s, 1, grp);
    st->ops->bind_int64(s, 2, cf_time_now_us());
    st->ops->bind_text(s, 3, id);
    if ((rc = cf_db_one(st, s, err)) != CF_OK) {
        if (rc == CF_ERR_NOT_FOUND)
            cf_error_set(err, rc, "device %s not found", id);
        return rc;
    }
    return finish(st, s, err);
}

cf_err cf_store_device_claim_batch(cf_store *st, const char *batch, int64_t owner_id, char ***ids,
                                   size_t *n, cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "UPDATE devices SET state = 'claimed', owner_id = ?, updated_us = ?"
                              " WHERE batch = ? AND state = 'on_hold' AND owner_id IS NULL"
                              " RETURNING id",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, owner_id);
    st->ops->bind_int64(s, 2, cf_time_now_us());
    st->ops->bind_text(s, 3, batch);
    if ((rc = collect_strings(st, s, ids, n, err)) != CF_OK)
        return rc;
    if (*n > 1)
        qsort(*ids, *n, sizeof **ids, cmp_str);
    return CF_OK;
}

/* ---- certificates of a device ---- */

cf_err cf_store_cert_revoke_device(cf_store *st, const char *device_id, int all_owners,
                                   int64_t owner_id, int reason, int64_t now_us, char ***serials,
                                   size_t *n, cf_error *err)
{
#define REVOKE_SQL                                                                                 \
    "UPDATE certificates SET status = 'revoked', reason = ?, revoked_us = ?"                       \
    " WHERE device_id = ? AND status = 'good'"
    const char *sql = all_owners ? REVOKE_SQL " RETURNING serial"
                      : owner_id ? REVOKE_SQL
                          " AND (owner_id = ? OR owner_id IS NULL) RETURNING serial"
                                 : REVOKE_SQL " AND owner_id IS NULL RETURNING serial";
#undef REVOKE_SQL
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st, sql, &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, reason);
    st->ops->bind_int64(s, 2, now_us);
    st->ops->bind_text(s, 3, device_id);
    if (!all_owners && owner_id)
        st->ops->bind_int64(s, 4, owner_id);
    if ((rc = collect_strings(st, s, serials, n, err)) != CF_OK)
        return rc;
    if (*n > 1)
        qsort(*serials, *n, sizeof **serials, cmp_str);
    return CF_OK;
}

static void device_certs_row(cf_store *st, cf_stmt *s, void *rec, void *arg)
{
    cf_device_cert *r = rec;
    const struct cf_db_ops *o = st->ops;
    (void)arg;
    cf_device_cert *d = r;
    memset(d, 0, sizeof *d);
    cf_cert_rec *c = &d->cert;
    snprintf(c->serial, sizeof c->serial, "%s", o->col_text(s, 0));
    c->ca_id = o->col_int64(s, 1);
    c->device_id = col_opt_text(st, s, 2);
    c->subject = cf_strdup(o->col_text(s, 3));
    c->not_before = o->col_int64(s, 4);
    c->not_after = o->col_int64(s, 5);
    c->issued_us = o->col_int64(s, 6);
    c->status = strcmp(o->col_text(s, 7), "revoked") == 0 ? CF_CERT_REVOKED : CF_CERT_GOOD;
    c->reason = o->col_null(s, 8) ? -1 : (int)o->col_int64(s, 8);
    c->revoked_us = col_opt_int64(st, s, 9);
    d->owner_id = col_opt_int64(st, s, 10);
}

static void device_certs_clear(void *rec)
{
    cf_cert_rec_clear(&((cf_device_cert *)rec)->cert);
}

cf_err cf_store_device_certs(cf_store *st, const char *device_id, cf_device_cert **recs, size_t *n,
                             cf_error *err)
{
    const struct cf_db_ops *o = st->ops;
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "SELECT serial, ca_id, device_id, subject, not_before, not_after,"
                              " issued_us, status, reason, revoked_us, owner_id"
                              " FROM certificates WHERE device_id = ? ORDER BY issued_us, serial",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    o->bind_text(s, 1, device_id);
    return cf_db_collect(st, s, sizeof **recs, device_certs_row, NULL, device_certs_clear,
                         (void **)recs, n, err);
}
