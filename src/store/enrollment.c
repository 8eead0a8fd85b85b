/* enrollment.c - what enrollment over EST keeps in the store: owners' enrollment policies,
 * devices found by their birth certificate, requests held for approval, and certificates
 * superseded by a re-enrollment (revoked once their grace period ends). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "store/db.h"

/* ---- policies ---- */

/* An enrollment policy's columns (6) with their table's prefix ("" or "p."), and their
 * reading from column col on. */
#define POLICY_COLUMNS(t)                                                                          \
    t "require_approval, " t "serverkeygen, " t "allow_key_reuse, " t "allow_birth_key, " t        \
      "reenroll_grace_s, " t "updated_us"

static void policy_read(const struct cf_db_ops *o, cf_stmt *s, int col, cf_enroll_policy *out)
{
    out->require_approval = o->col_int64(s, col) != 0;
    out->serverkeygen = o->col_int64(s, col + 1) != 0;
    out->allow_key_reuse = o->col_int64(s, col + 2) != 0;
    out->allow_birth_key = o->col_int64(s, col + 3) != 0;
    out->reenroll_grace_s = o->col_int64(s, col + 4);
    out->updated_us = o->col_int64(s, col + 5);
}

cf_err cf_store_enroll_policy_get(cf_store *st, int64_t owner_id, cf_enroll_policy *out,
                                  cf_error *err)
{
    const struct cf_db_ops *o = st->ops;
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "SELECT " POLICY_COLUMNS("") " FROM enroll_policies"
                                                           " WHERE owner_id = ?",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    o->bind_int64(s, 1, owner_id);
    if ((rc = cf_db_one(st, s, err)) != CF_OK) {
        if (rc == CF_ERR_NOT_FOUND)
            cf_error_set(err, rc, "owner %lld has no enrollment policy", (long long)owner_id);
        return rc;
    }
    policy_read(o, s, 0, out);
    o->done(s);
    return CF_OK;
}

cf_err cf_store_enroll_policy_set(cf_store *st, int64_t owner_id, const cf_enroll_policy *p,
                                  cf_error *err)
{
    const struct cf_db_ops *o = st->ops;
    cf_stmt *s;
    cf_err rc = cf_db_prepare(
        st,
        "INSERT INTO enroll_policies (owner_id, require_approval, serverkeygen, allow_key_reuse,"
        " allow_birth_key, reenroll_grace_s, updated_us) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (owner_id) DO UPDATE SET require_approval = excluded.require_approval,"
        " serverkeygen = excluded.serverkeygen, allow_key_reuse = excluded.allow_key_reuse,"
        " allow_birth_key = excluded.allow_birth_key,"
        " reenroll_grace_s = excluded.reenroll_grace_s, updated_us = excluded.updated_us",
        &s, err);
    if (rc != CF_OK)
        return rc;
    o->bind_int64(s, 1, owner_id);
    o->bind_int64(s, 2, p->require_approval != 0);
    o->bind_int64(s, 3, p->serverkeygen != 0);
    o->bind_int64(s, 4, p->allow_key_reuse != 0);
    o->bind_int64(s, 5, p->allow_birth_key != 0);
    o->bind_int64(s, 6, p->reenroll_grace_s);
    o->bind_int64(s, 7, p->updated_us);
    return cf_db_run(st, s, err);
}

/* ---- devices ---- */

void cf_enroll_device_clear(cf_enroll_device *d)
{
    if (!d)
        return;
    free(d->id);
    free(d->owner);
    free(d->birth_der);
    free(d->key_fpr);
    memset(d, 0, sizeof *d);
}

/* enroll_device_read's columns (9), then its FROM clause. */
#define ENROLL_DEVICE_COLUMNS                                                                      \
    "d.id, d.state, d.owner_id, o.name, d.blocked, d.birth_der, d.key_fpr, d.enroll_pending_us,"   \
    " d.enroll_approved_us"
#define ENROLL_DEVICE_FROM " FROM devices d LEFT JOIN owners o ON o.id = d.owner_id"
#define ENROLL_DEVICE_SELECT "SELECT " ENROLL_DEVICE_COLUMNS ENROLL_DEVICE_FROM

static void enroll_device_read(cf_store *st, cf_stmt *s, cf_enroll_device *d)
{
    const struct cf_db_ops *o = st->ops;
    memset(d, 0, sizeof *d);
    d->id = cf_strdup(o->col_text(s, 0));
    int state = cf_device_state_parse(o->col_text(s, 1));
    /* An unknown state (written by a newer certfleet) is treated as the most restrictive. */
    d->state = state < 0 ? CF_DEVICE_DECOMMISSIONED : (cf_device_state)state;
    d->owner_id = o->col_null(s, 2) ? 0 : o->col_int64(s, 2);
    d->owner = o->col_null(s, 3) ? NULL : cf_strdup(o->col_text(s, 3));
    d->blocked = o->col_int64(s, 4) != 0;
    if (!o->col_null(s, 5)) {
        size_t len;
        const unsigned char *der = o->col_blob(s, 5, &len);
        d->birth_der = cf_db_blob_dup(der, len);
        d->birth_der_len = len;
    }
    d->key_fpr = o->col_null(s, 6) ? NULL : cf_strdup(o->col_text(s, 6));
    d->pending_us = o->col_null(s, 7) ? 0 : o->col_int64(s, 7);
    d->approved_us = o->col_null(s, 8) ? 0 : o->col_int64(s, 8);
}

/* Runs s (bound) expecting at most one device. */
static cf_err enroll_device_one(cf_store *st, cf_stmt *s, cf_enroll_device *out, cf_error *err)
{
    cf_err rc = cf_db_one(st, s, err);
    if (rc != CF_OK)
        return rc;
    enroll_device_read(st, s, out);
    st->ops->done(s);
    return CF_OK;
}

static cf_err lock_check(cf_store *st, int lock, cf_error *err)
{
    if (lock && !st->in_txn)
        return cf_error_set(err, CF_ERR_INTERNAL, "store: device lock outside a transaction");
    return CF_OK;
}

void cf_enroll_birth_clear(cf_enroll_birth *b)
{
    if (b)
        cf_enroll_device_clear(&b->dev);
}

cf_err cf_store_enroll_birth_get(cf_store *st, const char *key_fpr, const unsigned char *birth_der,
                                 size_t birth_der_len, int64_t now_s, cf_enroll_birth *out,
                                 cf_error *err)
{
    const struct cf_db_ops *o = st->ops;
    cf_stmt *s;
    /* The count only matters for an active device (cf_store_device_good_certs' query). */
    cf_err rc = cf_db_prepare(
        st,
        "SELECT " ENROLL_DEVICE_COLUMNS ", p.owner_id, " POLICY_COLUMNS(
            "p.") ","
                  " CASE WHEN d.state = 'active' THEN (SELECT COUNT(*) FROM certificates c"
                  " WHERE c.device_id = d.id AND c.status = 'good' AND c.not_before <= ?"
                  " AND c.not_after > ?) ELSE 0 END" ENROLL_DEVICE_FROM
                  " LEFT JOIN enroll_policies p ON p.owner_id = d.owner_id"
                  " WHERE d.key_fpr = ? AND d.birth_der = ?",
        &s, err);
    if (rc != CF_OK)
        return rc;
    o->bind_int64(s, 1, now_s);
    o->bind_int64(s, 2, now_s);
    o->bind_text(s, 3, key_fpr);
    o->bind_blob(s, 4, birth_der, birth_der_len);
    if ((rc = cf_db_one(st, s, err)) != CF_OK) {
        if (rc == CF_ERR_NOT_FOUND)
            cf_error_set(err, rc, "no device has this birth certificate");
        return rc;
    }
    memset(out, 0, sizeof *out);
    enroll_device_read(st, s, &out->dev);
    out->has_policy = !o->col_null(s, 9);
    if (out->has_policy)
        policy_read(o, s, 10, &out->policy);
    out->good_certs = o->col_int64(s, 16);
    o->done(s);
    return CF_OK;
}

cf_err cf_store_enroll_device_get(cf_store *st, const char *id, int lock, cf_enroll_device *out,
                                  cf_error *err)
{
    const char *sql = ENROLL_DEVICE_SELECT " WHERE d.id = ?";
    if (lock && st->kind == CF_STORE_POSTGRES)
        sql = ENROLL_DEVICE_SELECT " WHERE d.id = ? FOR UPDATE OF d";
    cf_stmt *s;
    cf_err rc = lock_check(st, lock, err);
    if (rc == CF_OK)
        rc = cf_db_prepare(st, sql, &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_text(s, 1, id);
    rc = enroll_device_one(st, s, out, err);
    if (rc == CF_ERR_NOT_FOUND)
        cf_error_set(err, rc, "device %s not found", id);
    return rc;
}

/* Runs s, an UPDATE ... RETURNING id, and tells whether it changed a row. */
static cf_err run_returning(cf_store *st, cf_stmt *s, int *changed, cf_error *err)
{
    int row = 0;
    cf_err rc = st->ops->step(s, &row, err);
    *changed = row;
    if (rc == CF_OK && row)
        rc = st->ops->step(s, &row, err); /* to its end, so the statement can be reused */
    st->ops->done(s);
    return rc;
}

cf_err cf_store_enroll_mark_pending(cf_store *st, const char *id, int64_t now_us, int *marked,
                                    cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "UPDATE devices SET enroll_pending_us = ?, updated_us = ?"
                              " WHERE id = ? AND enroll_pending_us IS NULL RETURNING id",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, now_us);
    st->ops->bind_int64(s, 2, now_us);
    st->ops->bind_text(s, 3, id);
    return run_returning(st, s, marked, err);
}

cf_err cf_store_enroll_set_approved(cf_store *st, const char *id, int64_t approved_us,
                                    cf_error *err)
{
    cf_stmt *s;
    int changed = 0;
    cf_err rc = cf_db_prepare(st,
                              "UPDATE devices SET enroll_approved_us = ?, updated_us = ?"
                              " WHERE id = ? RETURNING id",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    if (approved_us > 0)
        st->ops->bind_int64(s, 1, approved_us);
    else
        st->ops->bind_null(s, 1);
    st->ops->bind_int64(s, 2, cf_time_now_us());
    st->ops->bind_text(s, 3, id);
    if ((rc = run_returning(st, s, &changed, err)) == CF_OK && !changed)
        rc = cf_error_set(err, CF_ERR_NOT_FOUND, "device %s not found", id);
    return rc;
}

cf_err cf_store_enroll_done(cf_store *st, const char *id, cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "UPDATE devices SET state = 'active', updated_us = ?,"
                              " enroll_pending_us = NULL, enroll_approved_us = NULL WHERE id = ?",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, cf_time_now_us());
    st->ops->bind_text(s, 2, id);
    return cf_db_run(st, s, err);
}

cf_err cf_store_enroll_activate(cf_store *st, const char *id, int64_t label_owner,
                                int need_approval, int *done, int64_t *owner_id, cf_error *err)
{
    cf_stmt *s;
    int row = 0;
    *done = 0;
    *owner_id = 0;
    /* Every condition is on the device's own row, which the UPDATE locks: PostgreSQL
     * re-checks them on the row as a concurrent transaction left it. An active device is
     * left to the caller, whose check of its certificates must read them after the lock. */
    cf_err rc = lock_check(st, 1, err);
    if (rc == CF_OK)
        rc = cf_db_prepare(st,
                           "UPDATE devices SET state = 'active', updated_us = ?,"
                           " enroll_pending_us = NULL, enroll_approved_us = NULL"
                           " WHERE id = ? AND state = 'claimed' AND blocked = 0"
                           " AND (CAST(? AS BIGINT) = 0 OR owner_id = ?)"
                           " AND (CAST(? AS BIGINT) = 0 OR enroll_approved_us IS NOT NULL)"
                           " RETURNING owner_id",
                           &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, cf_time_now_us());
    st->ops->bind_text(s, 2, id);
    st->ops->bind_int64(s, 3, label_owner);
    st->ops->bind_int64(s, 4, label_owner);
    st->ops->bind_int64(s, 5, need_approval != 0);
    if ((rc = st->ops->step(s, &row, err)) == CF_OK && row) {
        *done = 1;
        *owner_id = st->ops->col_null(s, 0) ? 0 : st->ops->col_int64(s, 0);
        rc = st->ops->step(s, &row, err); /* to its end, so the statement can be reused */
    }
    st->ops->done(s);
    if (rc != CF_OK)
        *done = 0;
    return rc;
}

cf_err cf_store_device_good_certs(cf_store *st, const char *device_id, int64_t now_s, int64_t *n,
                                  cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "SELECT COUNT(*) FROM certificates WHERE device_id = ?"
                              " AND status = 'good' AND not_before <= ? AND not_after > ?",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_text(s, 1, device_id);
    st->ops->bind_int64(s, 2, now_s);
    st->ops->bind_int64(s, 3, now_s);
    return cf_db_int64(st, s, n, err);
}

/* ---- supersession ---- */

cf_err cf_store_cert_supersede_at(cf_store *st, const char *serial, const char *by, int64_t due_s,
                                  cf_error *err)
{
    cf_stmt *s;
    int changed = 0;
    cf_err rc = cf_db_prepare(st,
                              "UPDATE certificates SET superseded_by = ?, supersede_due = ?"
                              " WHERE serial = ? AND status = 'good' RETURNING serial",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_text(s, 1, by);
    st->ops->bind_int64(s, 2, due_s);
    st->ops->bind_text(s, 3, serial);
    if ((rc = run_returning(st, s, &changed, err)) == CF_OK && !changed)
        rc = cf_error_set(err, CF_ERR_NOT_FOUND, "no good certificate with serial %s", serial);
    return rc;
}

cf_err cf_store_cert_supersede_count(cf_store *st, int64_t now_s, int64_t *n, cf_error *err)
{
    cf_stmt *s;
    cf_err rc =
        cf_db_prepare(st, "SELECT COUNT(*) FROM certificates WHERE supersede_due <= ?", &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, now_s);
    return cf_db_int64(st, s, n, err);
}

void cf_superseded_free(cf_superseded *v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++) {
        free(v[i].device_id);
        free(v[i].by);
    }
    free(v);
}

static void superseded_row(cf_store *st, cf_stmt *s, void *rec, void *arg)
{
    cf_superseded *r = rec;
    (void)arg;
    snprintf(r->serial, sizeof r->serial, "%s", st->ops->col_text(s, 0));
    r->device_id = st->ops->col_null(s, 1) ? NULL : cf_strdup(st->ops->col_text(s, 1));
    r->by = cf_strdup(st->ops->col_text(s, 2));
}

static void superseded_clear(void *rec)
{
    cf_superseded *r = rec;
    free(r->device_id);
    free(r->by);
}

static int superseded_cmp(const void *a, const void *b)
{
    return strcmp(((const cf_superseded *)a)->serial, ((const cf_superseded *)b)->serial);
}

cf_err cf_store_cert_supersede_due(cf_store *st, int64_t now_s, int reason, int64_t now_us,
                                   cf_superseded **out, size_t *n, cf_error *err)
{
    cf_stmt *s;
    *out = NULL;
    *n = 0;
    /* Revoked meanwhile for another reason: nothing left to do for it. */
    cf_err rc = cf_db_prepare(st,
                              "UPDATE certificates SET supersede_due = NULL"
                              " WHERE supersede_due <= ? AND status <> 'good'",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, now_s);
    if ((rc = cf_db_run(st, s, err)) != CF_OK)
        return rc;
    rc = cf_db_prepare(st,
                       "UPDATE certificates SET status = 'revoked', reason = ?, revoked_us = ?,"
                       " supersede_due = NULL WHERE supersede_due <= ? AND status = 'good'"
                       " RETURNING serial, device_id, superseded_by",
                       &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_int64(s, 1, reason);
    st->ops->bind_int64(s, 2, now_us);
    st->ops->bind_int64(s, 3, now_s);
    void *list = NULL;
    rc = cf_db_collect(st, s, sizeof(cf_superseded), superseded_row, NULL, superseded_clear, &list,
                       n, err);
    if (rc != CF_OK)
        return rc;
    *out = list;
    if (*n > 1)
        qsort(*out, *n, sizeof **out, superseded_cmp);
    return CF_OK;
}
