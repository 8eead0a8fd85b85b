/* records.c - CAs, devices and certificates in the store. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "store/db.h"

/* ---- names of enums at the edge of the store ---- */

static const char *const ca_roles[] = {"root", "issuing"};
static const char *const ca_statuses[] = {"active", "retired", "revoked"};
static const char *const device_states[] = {"on_hold",   "claimed", "active",
                                            "suspended", "revoked", "decommissioned"};
static const char *const cert_statuses[] = {"good", "revoked"};

static int parse_name(const char *const *names, int n, const char *s)
{
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], s) == 0)
            return i;
    return -1;
}

const char *cf_ca_role_name(cf_ca_role role)
{
    return ca_roles[role];
}

const char *cf_ca_status_name(cf_ca_status status)
{
    return ca_statuses[status];
}

const char *cf_device_state_name(cf_device_state s)
{
    return s < CF_DEVICE_STATE_COUNT ? device_states[s] : "unknown";
}

int cf_device_state_parse(const char *name)
{
    return parse_name(device_states, CF_DEVICE_STATE_COUNT, name);
}

/* ---- CAs ---- */

void cf_ca_rec_clear(cf_ca_rec *rec)
{
    if (!rec)
        return;
    free(rec->name);
    free(rec->subject);
    free(rec->key_ref);
    free(rec->der);
    memset(rec, 0, sizeof *rec);
}

#define CA_COLUMNS                                                                                 \
    "id, name, role, parent_id, subject, key_ref, der, not_before, not_after, status, created_us," \
    " revoked_us, reason"

static void ca_read(cf_store *st, cf_stmt *s, cf_ca_rec *r)
{
    const struct cf_db_ops *o = st->ops;
    memset(r, 0, sizeof *r);
    r->id = o->col_int64(s, 0);
    r->name = cf_strdup(o->col_text(s, 1));
    r->role = parse_name(ca_roles, 2, o->col_text(s, 2)) == 0 ? CF_CA_ROOT : CF_CA_ISSUING;
    r->parent_id = o->col_null(s, 3) ? 0 : o->col_int64(s, 3);
    r->subject = cf_strdup(o->col_text(s, 4));
    r->key_ref = cf_strdup(o->col_text(s, 5));
    size_t len;
    const unsigned char *der = o->col_blob(s, 6, &len);
    r->der = cf_db_blob_dup(der, len);
    r->der_len = len;
    r->not_before = o->col_int64(s, 7);
    r->not_after = o->col_int64(s, 8);
    int status = parse_name(ca_statuses, 3, o->col_text(s, 9));
    r->status = status < 0 ? CF_CA_REVOKED : (cf_ca_status)status;
    r->created_us = o->col_int64(s, 10);
    r->revoked_us = o->col_null(s, 11) ? 0 : o->col_int64(s, 11);
    r->reason = o->col_null(s, 12) ? -1 : (int)o->col_int64(s, 12);
}

cf_err cf_store_ca_insert(cf_store *st, cf_ca_rec *rec, cf_error *err)
{
    const struct cf_db_ops *o = st->ops;
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "INSERT INTO cas (name, role, parent_id, subject, key_ref, der,"
                              " not_before, not_after, status, created_us)"
                              " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    o->bind_text(s, 1, rec->name);
    o->bind_text(s, 2, cf_ca_role_name(rec->role));
    if (rec->parent_id)
        o->bind_int64(s, 3, rec->parent_id);
    else
        o->bind_null(s, 3);
    o->bind_text(s, 4, rec->subject);
    o->bind_text(s, 5, rec->key_ref);
    o->bind_blob(s, 6, rec->der, rec->der_len);
    o->bind_int64(s, 7, rec->not_before);
    o->bind_int64(s, 8, rec->not_after);
    o->bind_text(s, 9, cf_ca_status_name(rec->status));
    o->bind_int64(s, 10, rec->created_us);
    if ((rc = cf_db_one(st, s, err)) != CF_OK) {
        if (rc == CF_ERR_EXISTS)
            cf_error_set(err, rc, "a CA named %s already exists", rec->name);
        return rc;
    }
    rec->id = o->col_int64(s, 0);
    int row;
    rc = o->step(s, &row, err); /* finish the statement before it is reused */
    o->done(s);
    return rc;
}

static void ca_list_row(cf_store *st, cf_stmt *s, void *rec, void *arg)
{
    cf_ca_rec *r = rec;
    (void)arg;
    ca_read(st, s, r);
}

static void ca_list_clear(void *rec)
{
    cf_ca_rec_clear(rec);
}

cf_err cf_store_ca_list(cf_store *st, cf_ca_rec **recs, size_t *n, cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st, "SELECT " CA_COLUMNS " FROM cas ORDER BY id", &s, err);
    if (rc != CF_OK)
        return rc;
    return cf_db_collect(st, s, sizeof **recs, ca_list_row, NULL, ca_list_clear, (void **)recs, n,
                         err);
}

static cf_err ca_fetch_one(cf_store *st, cf_stmt *s, cf_ca_rec *out, const char *what,
                           cf_error *err)
{
    cf_err rc = cf_db_one(st, s, err);
    if (rc != CF_OK) {
        if (rc == CF_ERR_NOT_FOUND)
            cf_error_set(err, rc, "no %s CA (run certfleet init first)", what);
        return rc;
    }
    ca_read(st, s, out);
    st->ops->done(s);
    return CF_OK;
}

cf_err cf_store_ca_active(cf_store *st, cf_ca_role role, cf_ca_rec *out, cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "SELECT " CA_COLUMNS " FROM cas WHERE role = ? AND status = 'active'"
                              " ORDER BY id DESC LIMIT 1",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_text(s, 1, cf_ca_role_name(role));
    return ca_fetch_one(st, s, out, role == CF_CA_ROOT ? "active root" : "active issuing", err);
}

cf_err cf_store_ca_get(cf_store *st, int64_t id, cf_ca_rec *out, cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st, "SELECT " CA_COLUMNS " FROM cas WHERE id = ?", &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, id);
    return ca_fetch_one(st, s, out, "such", err);
}

/* ---- devices ---- */

cf_err cf_store_device_ensure(cf_store *st, const char *id, cf_device_state state, int *created,
                              cf_error *err)
{
    const struct cf_db_ops *o = st->ops;
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "INSERT INTO devices (id, state, created_us, updated_us)"
                              " VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING RETURNING id",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    int64_t now = cf_time_now_us();
    o->bind_text(s, 1, id);
    o->bind_text(s, 2, cf_device_state_name(state));
    o->bind_int64(s, 3, now);
    o->bind_int64(s, 4, now);
    int row = 0;
    rc = o->step(s, &row, err);
    *created = row;
    if (rc == CF_OK && row)
        rc = o->step(s, &row, err);
    o->done(s);
    return rc;
}

cf_err cf_store_device_set_state(cf_store *st, const char *id, cf_device_state state, cf_error *err)
{
    const struct cf_db_ops *o = st->ops;
    cf_stmt *s;
    cf_err rc = cf_db_prepare(
        st, "UPDATE devices SET state = ?, updated_us = ? WHERE id = ? RETURNING id", &s, err);
    if (rc != CF_OK)
        return rc;
    o->bind_text(s, 1, cf_device_state_name(state));
    o->bind_int64(s, 2, cf_time_now_us());
    o->bind_text(s, 3, id);
    if ((rc = cf_db_one(st, s, err)) != CF_OK) {
        if (rc == CF_ERR_NOT_FOUND)
            cf_error_set(err, rc, "device %s not found", id);
        return rc;
    }
    int row;
    rc = o->step(s, &row, err);
    o->done(s);
    return rc;
}

cf_err cf_store_device_get_state(cf_store *st, const char *id, cf_device_state *state,
                                 cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st, "SELECT state FROM devices WHERE id = ?", &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_text(s, 1, id);
    if ((rc = cf_db_one(st, s, err)) != CF_OK) {
        if (rc == CF_ERR_NOT_FOUND)
            cf_error_set(err, rc, "device %s not found", id);
        return rc;
    }
    int v = cf_device_state_parse(st->ops->col_text(s, 0));
    st->ops->done(s);
    if (v < 0)
        return cf_error_set(err, CF_ERR_STORE, "device %s: unknown state in store", id);
    *state = (cf_device_state)v;
    return CF_OK;
}

cf_err cf_store_device_owner(cf_store *st, const char *id, cf_device_state *state,
                             int64_t *owner_id, char *owner_name, size_t cap, cf_error *err)
{
    const struct cf_db_ops *o = st->ops;
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "SELECT d.state, COALESCE(d.owner_id, 0), COALESCE(o.name, '')"
                              " FROM devices d LEFT JOIN owners o ON o.id = d.owner_id"
                              " WHERE d.id = ?",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    o->bind_text(s, 1, id);
    if ((rc = cf_db_one(st, s, err)) != CF_OK) {
        if (rc == CF_ERR_NOT_FOUND)
            cf_error_set(err, rc, "device %s not found", id);
        return rc;
    }
    int v = cf_device_state_parse(o->col_text(s, 0));
    *owner_id = o->col_int64(s, 1);
    snprintf(owner_name, cap, "%s", o->col_text(s, 2));
    o->done(s);
    if (v < 0)
        return cf_error_set(err, CF_ERR_STORE, "device %s: unknown state in store", id);
    *state = (cf_device_state)v;
    return CF_OK;
}

cf_err cf_store_device_count(cf_store *st, int64_t counts[CF_DEVICE_STATE_COUNT], cf_error *err)
{
    const struct cf_db_ops *o = st->ops;
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st, "SELECT state, COUNT(*) FROM devices GROUP BY state", &s, err);
    if (rc != CF_OK)
        return rc;
    memset(counts, 0, sizeof(int64_t) * CF_DEVICE_STATE_COUNT);
    int row;
    while ((rc = o->step(s, &row, err)) == CF_OK && row) {
        int v = cf_device_state_parse(o->col_text(s, 0));
        if (v >= 0)
            counts[v] = o->col_int64(s, 1);
    }
    o->done(s);
    return rc;
}

/* ---- certificates ---- */

void cf_cert_rec_clear(cf_cert_rec *rec)
{
    if (!rec)
        return;
    free(rec->device_id);
    free(rec->subject);
    free(rec->der);
    memset(rec, 0, sizeof *rec);
}

cf_err cf_store_cert_insert(cf_store *st, const cf_cert_rec *rec, cf_error *err)
{
    const struct cf_db_ops *o = st->ops;
    cf_stmt *s;
    cf_err rc =
        cf_db_prepare(st,
                      "INSERT INTO certificates (serial, ca_id, device_id, subject,"
                      " not_before, not_after, issued_us, der, status, reason, revoked_us,"
                      " owner_id, crl_shard) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      &s, err);
    if (rc != CF_OK)
        return rc;
    o->bind_text(s, 1, rec->serial);
    o->bind_int64(s, 2, rec->ca_id);
    o->bind_text(s, 3, rec->device_id);
    o->bind_text(s, 4, rec->subject);
    o->bind_int64(s, 5, rec->not_before);
    o->bind_int64(s, 6, rec->not_after);
    o->bind_int64(s, 7, rec->issued_us);
    o->bind_blob(s, 8, rec->der, rec->der_len);
    o->bind_text(s, 9, cert_statuses[rec->status]);
    if (rec->status == CF_CERT_REVOKED) {
        o->bind_int64(s, 10, rec->reason);
        o->bind_int64(s, 11, rec->revoked_us);
    } else {
        o->bind_null(s, 10);
        o->bind_null(s, 11);
    }
    if (rec->owner_id)
        o->bind_int64(s, 12, rec->owner_id);
    else
        o->bind_null(s, 12);
    if (rec->crl_shard)
        o->bind_int64(s, 13, rec->crl_shard);
    else
        o->bind_null(s, 13);
    char exists[128];
    snprintf(exists, sizeof exists, "certificate serial %s already exists", rec->serial);
    return cf_db_run_later(st, s, exists, err);
}

cf_err cf_store_cert_get(cf_store *st, const char *serial, cf_cert_rec *out, cf_error *err)
{
    const struct cf_db_ops *o = st->ops;
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "SELECT serial, ca_id, device_id, subject, not_before, not_after,"
                              " issued_us, der, status, reason, revoked_us"
                              " FROM certificates WHERE serial = ?",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    o->bind_text(s, 1, serial);
    if ((rc = cf_db_one(st, s, err)) != CF_OK) {
        if (rc == CF_ERR_NOT_FOUND)
            cf_error_set(err, rc, "certificate serial %s not found", serial);
        return rc;
    }
    memset(out, 0, sizeof *out);
    snprintf(out->serial, sizeof out->serial, "%s", o->col_text(s, 0));
    out->ca_id = o->col_int64(s, 1);
    out->device_id = o->col_null(s, 2) ? NULL : cf_strdup(o->col_text(s, 2));
    out->subject = cf_strdup(o->col_text(s, 3));
    out->not_before = o->col_int64(s, 4);
    out->not_after = o->col_int64(s, 5);
    out->issued_us = o->col_int64(s, 6);
    size_t len;
    const unsigned char *der = o->col_blob(s, 7, &len);
    out->der = cf_db_blob_dup(der, len);
    out->der_len = len;
    out->status = strcmp(o->col_text(s, 8), "revoked") == 0 ? CF_CERT_REVOKED : CF_CERT_GOOD;
    out->reason = o->col_null(s, 9) ? -1 : (int)o->col_int64(s, 9);
    out->revoked_us = o->col_null(s, 10) ? 0 : o->col_int64(s, 10);
    o->done(s);
    return CF_OK;
}

cf_err cf_store_cert_count(cf_store *st, int64_t now_s, int64_t *total, int64_t *valid,
                           cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "SELECT COUNT(*), COALESCE(SUM(CASE WHEN not_after > ?"
                              " AND status = 'good' THEN 1 ELSE 0 END), 0) FROM certificates",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, now_s);
    if ((rc = cf_db_one(st, s, err)) != CF_OK)
        return rc;
    *total = st->ops->col_int64(s, 0);
    *valid = st->ops->col_int64(s, 1);
    st->ops->done(s);
    return CF_OK;
}
