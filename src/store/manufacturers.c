/* manufacturers.c - manufacturers, their trusted certificates, manifest imports and the
 * bulk insert of onboarded devices. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "store/db.h"

static const char *const mfr_cert_kinds[] = {"root", "signer"};

const char *cf_mfr_cert_kind_name(cf_mfr_cert_kind kind)
{
    return mfr_cert_kinds[kind];
}

/* Finishes a statement that returned its one row (so a cached statement can be reused). */
static cf_err finish(cf_store *st, cf_stmt *s, cf_error *err)
{
    int row;
    cf_err rc = st->ops->step(s, &row, err);
    st->ops->done(s);
    return rc;
}

/* ---- manufacturers ---- */

void cf_manufacturer_rec_clear(cf_manufacturer_rec *rec)
{
    if (!rec)
        return;
    free(rec->name);
    memset(rec, 0, sizeof *rec);
}

cf_err cf_store_manufacturer_insert(cf_store *st, const char *name, const unsigned char *root_der,
                                    size_t root_der_len, int64_t *id, cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "INSERT INTO manufacturers (name, root_der, created_us)"
                              " VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING RETURNING id",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_text(s, 1, name);
    st->ops->bind_blob(s, 2, root_der, root_der_len);
    st->ops->bind_int64(s, 3, cf_time_now_us());
    if ((rc = cf_db_one(st, s, err)) != CF_OK) {
        if (rc == CF_ERR_NOT_FOUND)
            rc = cf_error_set(err, CF_ERR_EXISTS, "manufacturer %s already exists", name);
        return rc;
    }
    *id = st->ops->col_int64(s, 0);
    return finish(st, s, err);
}

cf_err cf_store_manufacturer_get(cf_store *st, const char *name, cf_manufacturer_rec *out,
                                 cf_error *err)
{
    cf_stmt *s;
    cf_err rc =
        cf_db_prepare(st, "SELECT id, name, created_us FROM manufacturers WHERE name = ?", &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_text(s, 1, name);
    if ((rc = cf_db_one(st, s, err)) != CF_OK) {
        if (rc == CF_ERR_NOT_FOUND)
            cf_error_set(err, rc, "no manufacturer named %s (see certfleet manufacturer list)",
                         name);
        return rc;
    }
    memset(out, 0, sizeof *out);
    out->id = st->ops->col_int64(s, 0);
    out->name = cf_strdup(st->ops->col_text(s, 1));
    out->created_us = st->ops->col_int64(s, 2);
    st->ops->done(s);
    return CF_OK;
}

static void manufacturer_list_row(cf_store *st, cf_stmt *s, void *rec, void *arg)
{
    cf_manufacturer_rec *r = rec;
    const struct cf_db_ops *o = st->ops;
    (void)arg;
    r->id = o->col_int64(s, 0);
    r->name = cf_strdup(o->col_text(s, 1));
    r->created_us = o->col_int64(s, 2);
}

static void manufacturer_list_clear(void *rec)
{
    cf_manufacturer_rec_clear(rec);
}

cf_err cf_store_manufacturer_list(cf_store *st, cf_manufacturer_rec **recs, size_t *n,
                                  cf_error *err)
{
    cf_stmt *s;
    cf_err rc =
        cf_db_prepare(st, "SELECT id, name, created_us FROM manufacturers ORDER BY name", &s, err);
    if (rc != CF_OK)
        return rc;
    return cf_db_collect(st, s, sizeof **recs, manufacturer_list_row, NULL, manufacturer_list_clear,
                         (void **)recs, n, err);
}

static cf_err delete_by(cf_store *st, const char *sql, int64_t id, cf_error *err)
{
    cf_stmt *s;
    cf_err rc = st->ops->prepare(st, sql, 0, &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, id);
    return cf_db_run(st, s, err);
}

cf_err cf_store_manufacturer_delete(cf_store *st, int64_t id, cf_error *err)
{
    cf_err rc = delete_by(st, "DELETE FROM imports WHERE manufacturer_id = ?", id, err);
    if (rc == CF_OK)
        rc = delete_by(st, "DELETE FROM manufacturer_certs WHERE manufacturer_id = ?", id, err);
    if (rc == CF_OK)
        rc = delete_by(st, "DELETE FROM manufacturers WHERE id = ?", id, err);
    return rc;
}

cf_err cf_store_manufacturer_devices(cf_store *st, int64_t id, int64_t *n, cf_error *err)
{
    cf_stmt *s;
    cf_err rc =
        cf_db_prepare(st, "SELECT COUNT(*) FROM devices WHERE manufacturer_id = ?", &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, id);
    return cf_db_int64(st, s, n, err);
}

/* ---- manufacturer certificates ---- */

void cf_mfr_cert_rec_clear(cf_mfr_cert_rec *rec)
{
    if (!rec)
        return;
    free(rec->x5t);
    free(rec->subject);
    free(rec->der);
    memset(rec, 0, sizeof *rec);
}

cf_err cf_store_mfr_cert_insert(cf_store *st, cf_mfr_cert_rec *rec, int *created, cf_error *err)
{
    const struct cf_db_ops *o = st->ops;
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "INSERT INTO manufacturer_certs (manufacturer_id, kind, x5t, subject,"
                              " der, not_before, not_after, created_us)"
                              " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                              " ON CONFLICT (manufacturer_id, x5t) DO NOTHING RETURNING id",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    o->bind_int64(s, 1, rec->manufacturer_id);
    o->bind_text(s, 2, cf_mfr_cert_kind_name(rec->kind));
    o->bind_text(s, 3, rec->x5t);
    o->bind_text(s, 4, rec->subject);
    o->bind_blob(s, 5, rec->der, rec->der_len);
    o->bind_int64(s, 6, rec->not_before);
    o->bind_int64(s, 7, rec->not_after);
    o->bind_int64(s, 8, rec->created_us ? rec->created_us : cf_time_now_us());
    int row = 0;
    rc = o->step(s, &row, err);
    *created = rc == CF_OK && row;
    if (*created) {
        rec->id = o->col_int64(s, 0);
        rc = o->step(s, &row, err);
    }
    o->done(s);
    return rc;
}

static void mfr_cert_list_row(cf_store *st, cf_stmt *s, void *rec, void *arg)
{
    cf_mfr_cert_rec *r = rec;
    const struct cf_db_ops *o = st->ops;
    r->id = o->col_int64(s, 0);
    r->manufacturer_id = *(const int64_t *)arg;
    r->kind = strcmp(o->col_text(s, 1), "root") == 0 ? CF_MFR_CERT_ROOT : CF_MFR_CERT_SIGNER;
    r->x5t = cf_strdup(o->col_text(s, 2));
    r->subject = cf_strdup(o->col_text(s, 3));
    size_t len;
    const unsigned char *der = o->col_blob(s, 4, &len);
    r->der = cf_db_blob_dup(der, len);
    r->der_len = len;
    r->not_before = o->col_int64(s, 5);
    r->not_after = o->col_int64(s, 6);
    r->created_us = o->col_int64(s, 7);
}

static void mfr_cert_list_clear(void *rec)
{
    cf_mfr_cert_rec_clear(rec);
}

cf_err cf_store_mfr_cert_list(cf_store *st, int64_t manufacturer_id, cf_mfr_cert_rec **recs,
                              size_t *n, cf_error *err)
{
    const struct cf_db_ops *o = st->ops;
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "SELECT id, kind, x5t, subject, der, not_before, not_after,"
                              " created_us FROM manufacturer_certs WHERE manufacturer_id = ?"
                              " ORDER BY CASE WHEN kind = 'root' THEN 0 ELSE 1 END, id",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    o->bind_int64(s, 1, manufacturer_id);
    return cf_db_collect(st, s, sizeof **recs, mfr_cert_list_row, &manufacturer_id,
                         mfr_cert_list_clear, (void **)recs, n, err);
}

/* ---- imports ---- */

void cf_import_rec_clear(cf_import_rec *rec)
{
    if (!rec)
        return;
    free(rec->sha256);
    free(rec->source);
    free(rec->batch);
    free(rec->actor);
    memset(rec, 0, sizeof *rec);
}

cf_err cf_store_import_insert(cf_store *st, cf_import_rec *rec, cf_error *err)
{
    const struct cf_db_ops *o = st->ops;
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "INSERT INTO imports (manufacturer_id, sha256, source, batch, actor,"
                              " started_us, finished_us, entries, added, present, rejected,"
                              " conflicts) VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?)"
                              " RETURNING id",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    o->bind_int64(s, 1, rec->manufacturer_id);
    o->bind_text(s, 2, rec->sha256 ? rec->sha256 : "");
    o->bind_text(s, 3, rec->source);
    if (rec->batch)
        o->bind_text(s, 4, rec->batch);
    else
        o->bind_null(s, 4);
    o->bind_text(s, 5, rec->actor);
    o->bind_int64(s, 6, rec->started_us);
    o->bind_int64(s, 7, rec->entries);
    o->bind_int64(s, 8, rec->added);
    o->bind_int64(s, 9, rec->present);
    o->bind_int64(s, 10, rec->rejected);
    o->bind_int64(s, 11, rec->conflicts);
    if ((rc = cf_db_one(st, s, err)) != CF_OK)
        return rc;
    rec->id = o->col_int64(s, 0);
    return finish(st, s, err);
}

cf_err cf_store_import_update(cf_store *st, const cf_import_rec *rec, cf_error *err)
{
    const struct cf_db_ops *o = st->ops;
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "UPDATE imports SET sha256 = ?, finished_us = ?, entries = ?,"
                              " added = ?, present = ?, rejected = ?, conflicts = ? WHERE id = ?",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    o->bind_text(s, 1, rec->sha256 ? rec->sha256 : "");
    if (rec->finished_us)
        o->bind_int64(s, 2, rec->finished_us);
    else
        o->bind_null(s, 2);
    o->bind_int64(s, 3, rec->entries);
    o->bind_int64(s, 4, rec->added);
    o->bind_int64(s, 5, rec->present);
    o->bind_int64(s, 6, rec->rejected);
    o->bind_int64(s, 7, rec->conflicts);
    o->bind_int64(s, 8, rec->id);
    return cf_db_run(st, s, err);
}

static void import_list_row(cf_store *st, cf_stmt *s, void *rec, void *arg)
{
    cf_import_rec *r = rec;
    const struct cf_db_ops *o = st->ops;
    (void)arg;
    r->id = o->col_int64(s, 0);
    r->manufacturer_id = o->col_int64(s, 1);
    r->sha256 = cf_strdup(o->col_text(s, 2));
    r->source = cf_strdup(o->col_text(s, 3));
    r->batch = o->col_null(s, 4) ? NULL : cf_strdup(o->col_text(s, 4));
    r->actor = cf_strdup(o->col_text(s, 5));
    r->started_us = o->col_int64(s, 6);
    r->finished_us = o->col_null(s, 7) ? 0 : o->col_int64(s, 7);
    r->entries = o->col_int64(s, 8);
    r->added = o->col_int64(s, 9);
    r->present = o->col_int64(s, 10);
    r->rejected = o->col_int64(s, 11);
    r->conflicts = o->col_int64(s, 12);
}

static void import_list_clear(void *rec)
{
    cf_import_rec_clear(rec);
}

cf_err cf_store_import_list(cf_store *st, int64_t manufacturer_id, int64_t limit,
                            cf_import_rec **recs, size_t *n, cf_error *err)
{
    const struct cf_db_ops *o = st->ops;
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "SELECT id, manufacturer_id, sha256, source, batch, actor,"
                              " started_us, finished_us, entries, added, present, rejected,"
                              " conflicts FROM imports WHERE (? = 0 OR manufacturer_id = ?)"
                              " ORDER BY id DESC LIMIT ?",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    o->bind_int64(s, 1, manufacturer_id);
    o->bind_int64(s, 2, manufacturer_id);
    o->bind_int64(s, 3, limit > 0 ? limit : INT64_MAX);
    return cf_db_collect(st, s, sizeof **recs, import_list_row, NULL, import_list_clear,
                         (void **)recs, n, err);
}

/* ---- onboarded devices ---- */

static void bind_opt_text(cf_store *st, cf_stmt *s, int idx, const char *v)
{
    if (v && *v)
        st->ops->bind_text(s, idx, v);
    else
        st->ops->bind_null(s, idx);
}

/* What an existing device row says about d: present, duplicate or conflict. */
static cf_err classify_existing(cf_store *st, int64_t import_id, const cf_onboard_device *d,
                                cf_onboard_result *res, cf_error *err)
{
    const struct cf_db_ops *o = st->ops;
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st, "SELECT key_fpr, import_id FROM devices WHERE id = ?", &s, err);
    if (rc != CF_OK)
        return rc;
    o->bind_text(s, 1, d->id);
    if ((rc = cf_db_one(st, s, err)) != CF_OK)
        return rc;
    int same = !o->col_null(s, 0) && strcmp(o->col_text(s, 0), d->key_fpr) == 0;
    int64_t imp = o->col_null(s, 1) ? 0 : o->col_int64(s, 1);
    o->done(s);
    if (!same)
        *res = CF_ONBOARD_CONFLICT;
    else
        *res = imp == import_id ? CF_ONBOARD_DUPLICATE : CF_ONBOARD_PRESENT;
    return CF_OK;
}

/* Devices go in by multi-row INSERTs of up to ONBOARD_ROWS rows: one statement (one round
 * trip to PostgreSQL) for each, instead of one per device. */
#define ONBOARD_ROWS 64
#define ONBOARD_PARAMS 12 /* per row */

static const char onboard_head[] =
    "INSERT INTO devices (id, state, owner_id, manufacturer_id, batch, model, part_number,"
    " birth_der, key_fpr, import_id, provisioned_us, claim_hash, created_us, updated_us) VALUES ";
static const char onboard_row[] = "(?, 'on_hold', NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
static const char onboard_tail[] = " ON CONFLICT (id) DO NOTHING RETURNING id";
#define ONBOARD_SQL_MAX                                                                            \
    (sizeof onboard_head + ONBOARD_ROWS * (sizeof onboard_row + 1) + sizeof onboard_tail)

/* The INSERT of n rows into out (ONBOARD_SQL_MAX bytes). */
static void onboard_sql(size_t n, char *out)
{
    char *p = out;
    p += sprintf(p, "%s", onboard_head);
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, "%s%s", i ? "," : "", onboard_row);
    sprintf(p, "%s", onboard_tail);
}

/* The full-size statement's SQL, made once: a cached statement's SQL outlives the store. */
static char onboard_full_sql[ONBOARD_SQL_MAX];
static pthread_once_t onboard_full_once = PTHREAD_ONCE_INIT;

static void onboard_full_init(void)
{
    onboard_sql(ONBOARD_ROWS, onboard_full_sql);
}

/* Inserts devs[0..n) (n <= ONBOARD_ROWS) and sets added[i] for each row inserted. */
static cf_err onboard_rows(cf_store *st, int64_t manufacturer_id, int64_t import_id, int64_t now,
                           const cf_onboard_device *devs, size_t n, int *added, cf_error *err)
{
    const struct cf_db_ops *o = st->ops;
    char partial[ONBOARD_SQL_MAX];
    cf_stmt *s;
    cf_err rc;
    if (n == ONBOARD_ROWS) {
        pthread_once(&onboard_full_once, onboard_full_init);
        rc = o->prepare(st, onboard_full_sql, 1, &s, err);
    } else {
        onboard_sql(n, partial);
        rc = o->prepare(st, partial, 0, &s, err);
    }
    if (rc != CF_OK)
        return rc;
    for (size_t i = 0; i < n; i++) {
        const cf_onboard_device *d = &devs[i];
        int b = (int)(i * ONBOARD_PARAMS);
        o->bind_text(s, b + 1, d->id);
        o->bind_int64(s, b + 2, manufacturer_id);
        bind_opt_text(st, s, b + 3, d->batch);
        bind_opt_text(st, s, b + 4, d->model);
        bind_opt_text(st, s, b + 5, d->part_number);
        if (d->birth_der)
            o->bind_blob(s, b + 6, d->birth_der, d->birth_der_len);
        else
            o->bind_null(s, b + 6);
        o->bind_text(s, b + 7, d->key_fpr);
        o->bind_int64(s, b + 8, import_id);
        o->bind_int64(s, b + 9, d->provisioned_us);
        if (d->claim_hash)
            o->bind_blob(s, b + 10, d->claim_hash, CF_HASH_LEN);
        else
            o->bind_null(s, b + 10);
        o->bind_int64(s, b + 11, now);
        o->bind_int64(s, b + 12, now);
        added[i] = 0;
    }
    /* RETURNING names the rows inserted, in no promised order; of two rows with one id (a
     * manifest that lists a device twice) only the first can have been. */
    size_t next = 0;
    int row;
    while ((rc = o->step(s, &row, err)) == CF_OK && row) {
        const char *id = o->col_text(s, 0);
        for (size_t k = 0; k < n; k++) {
            size_t i = (next + k) % n;
            if (!added[i] && strcmp(devs[i].id, id) == 0) {
                added[i] = 1;
                next = i + 1;
                break;
            }
        }
    }
    o->done(s);
    return rc;
}

cf_err cf_store_device_onboard(cf_store *st, int64_t manufacturer_id, int64_t import_id,
                               const cf_onboard_device *devs, size_t n, cf_onboard_result *result,
                               cf_error *err)
{
    int64_t now = cf_time_now_us();
    int added[ONBOARD_ROWS];
    cf_err rc = CF_OK;
    for (size_t at = 0; at < n && rc == CF_OK; at += ONBOARD_ROWS) {
        size_t m = n - at < ONBOARD_ROWS ? n - at : ONBOARD_ROWS;
        rc = onboard_rows(st, manufacturer_id, import_id, now, devs + at, m, added, err);
        for (size_t i = 0; i < m && rc == CF_OK; i++) {
            if (added[i])
                result[at + i] = CF_ONBOARD_ADDED;
            else
                rc = classify_existing(st, import_id, &devs[at + i], &result[at + i], err);
        }
    }
    return rc;
}
