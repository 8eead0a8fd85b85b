/* revoke.c - revocation and CRLs (see revoke.h). */
#include "fleet/revoke.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit/audit.h"
#include "core/util.h"
#include "fleet/access_int.h"

/* ---- targets ---- */

static const char *const sel_names[CF_SEL_COUNT] = {"serial", "device", "batch",
                                                    "group",  "owner",  "ca"};

/* A serial as the store writes it: upper-case hex, an even number of digits. */
static cf_err serial_normalize(const char *in, char out[41], cf_error *err)
{
    char digits[40];
    size_t n = 0;
    for (const char *p = in; *p; p++) {
        if (*p == ':' || *p == ' ')
            continue;
        if (!isxdigit((unsigned char)*p) || n >= 40)
            return cf_error_set(err, CF_ERR_INVALID,
                                "serial \"%.48s\": expected up to 40 hex digits (colons allowed)",
                                in);
        digits[n++] = (char)toupper((unsigned char)*p);
    }
    if (n == 0)
        return cf_error_set(err, CF_ERR_INVALID, "serial: empty");
    size_t pad = n % 2 && n < 40; /* an odd count gets its leading zero */
    if (pad)
        out[0] = '0';
    memcpy(out + pad, digits, n);
    out[pad + n] = '\0';
    return CF_OK;
}

/* The CA named by name or id; NULL: the active issuing CA. */
static cf_err ca_find(cf_store *st, const char *name, cf_ca_rec *out, cf_error *err)
{
    if (!name)
        return cf_store_ca_active(st, CF_CA_ISSUING, out, err);
    cf_ca_rec *cas = NULL;
    size_t n = 0;
    cf_err rc = cf_store_ca_list(st, &cas, &n, err);
    if (rc != CF_OK)
        return rc;
    char *end;
    long long id = strtoll(name, &end, 10);
    int by_id = *name && !*end;
    rc = cf_error_set(err, CF_ERR_NOT_FOUND, "no CA \"%.64s\" (see certfleet ca list)", name);
    for (size_t i = 0; i < n; i++) {
        if (rc != CF_OK && (by_id ? cas[i].id == id : strcmp(cas[i].name, name) == 0)) {
            *out = cas[i];
            memset(&cas[i], 0, sizeof cas[i]);
            rc = CF_OK;
        }
        cf_ca_rec_clear(&cas[i]);
    }
    free(cas);
    return rc;
}

/* The issuing CA of the highest id, whatever its status (one revoked still publishes). */
static cf_err newest_issuing(cf_store *st, cf_ca_rec *out, cf_error *err)
{
    cf_ca_rec *cas = NULL;
    size_t n = 0, best = (size_t)-1;
    cf_err rc = cf_store_ca_list(st, &cas, &n, err);
    for (size_t i = 0; rc == CF_OK && i < n; i++)
        if (cas[i].role == CF_CA_ISSUING)
            best = i;
    if (rc == CF_OK && best == (size_t)-1)
        rc = cf_error_set(err, CF_ERR_NOT_FOUND, "no issuing CA: run certfleet init");
    for (size_t i = 0; i < n; i++) {
        if (rc == CF_OK && i == best) {
            *out = cas[i];
            memset(&cas[i], 0, sizeof cas[i]);
        }
        cf_ca_rec_clear(&cas[i]);
    }
    free(cas);
    return rc;
}

/* Checks that the target of sel exists for the caller (an owner's caller sees only its own
 * devices: anything else is "not found", as elsewhere). */
static cf_err target_check(cf_fleet *f, const cf_principal *p, const cf_cert_sel *sel,
                           cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_device_rec d;
    int64_t n = 0;
    cf_err rc;
    switch (sel->kind) {
    case CF_SEL_DEVICE:
        if ((rc = cf_store_device_get(st, sel->text, 0, &d, err)) != CF_OK)
            return rc;
        n = p->owner_id == 0 || d.owner_id == p->owner_id;
        cf_device_rec_clear(&d);
        if (!n)
            return cf_error_set(err, CF_ERR_NOT_FOUND, "device %s not found", sel->text);
        return CF_OK;
    case CF_SEL_BATCH:
        if ((rc = cf_store_batch_count(st, sel->text, &n, err)) != CF_OK)
            return rc;
        return n ? CF_OK : cf_error_set(err, CF_ERR_NOT_FOUND, "no batch %s", sel->text);
    default:
        return CF_OK; /* serials and groups are judged by what they match; owners, CAs resolved */
    }
}

/* ---- the one way certificates are revoked ---- */

typedef struct {
    const char *scope, *target, *action, *object;
    int reason;
    int64_t invalidity_s;
    cf_revoke_progress_fn progress;
    void *progress_arg;
} revoke_op;

static json_t *serials_json(const cf_revoked_cert *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n && i < 100; i++)
        json_array_append_new(a, json_string(v[i].serial));
    return a;
}

static cf_err encode_entries(cf_store *st, const cf_revoked_cert *v, size_t n, int64_t now_s,
                             const revoke_op *op, int64_t seq, cf_error *err)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char *der;
        size_t len;
        cf_err rc =
            cf_crl_entry_encode(v[i].serial, now_s, op->reason, op->invalidity_s, &der, &len, err);
        if (rc == CF_OK) {
            rc = cf_store_crl_entry_add(st, v[i].ca_id, v[i].serial, v[i].crl_shard, seq, der, len,
                                        err);
            OPENSSL_free(der);
        }
        if (rc != CF_OK)
            return rc;
        if (op->progress && ((i + 1) % 4096 == 0 || i + 1 == n))
            op->progress(op->progress_arg, (int64_t)i + 1, (int64_t)n);
    }
    return CF_OK;
}

/* Inside the caller's transaction: revokes what each of the nsel selectors matches, records
 * the change and the audit record. extra (taken) adds to the details. */
static cf_err revoke_in_txn(cf_fleet *f, const cf_principal *p, const cf_cert_sel *sels,
                            size_t nsel, const revoke_op *op, json_t *extra, cf_revoke_result *out,
                            cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    unsigned char head_hash[CF_HASH_LEN];
    int64_t head = 0, now_us = cf_time_now_us(), now_s = now_us / 1000000, seq;
    cf_revoked_cert *all = NULL;
    size_t nall = 0;
    json_t *details = NULL;
    cf_err rc = cf_store_audit_lock_head(st, &head, head_hash, err);
    if (rc != CF_OK)
        goto out;
    seq = head + 1; /* the number of this operation's audit record, appended last */
    for (size_t i = 0; i < nsel; i++) {
        cf_revoked_cert *v;
        size_t n;
        if ((rc = cf_store_cert_revoke(st, &sels[i], op->reason, now_us, op->invalidity_s * 1000000,
                                       seq, &v, &n, err)) != CF_OK)
            goto out;
        cf_revoked_cert *grown = realloc(all, (nall + n + 1) * sizeof *grown);
        if (!grown) {
            cf_revoked_certs_free(v, n);
            rc = cf_error_set(err, CF_ERR_NOMEM, "out of memory");
            goto out;
        }
        all = grown;
        memcpy(all + nall, v, n * sizeof *v);
        nall += n;
        free(v);
    }
    out->revoked = (int64_t)nall;
    if ((rc = encode_entries(st, all, nall, now_s, op, seq, err)) != CF_OK ||
        (rc = cf_store_devices_revoked_state(st, seq, now_us, err)) != CF_OK)
        goto out;
    details = json_pack("{s:s, s:s, s:s, s:I}", "scope", op->scope, "target", op->target, "reason",
                        cf_crl_reason_name(op->reason), "count", (json_int_t)nall);
    if (!details) {
        rc = cf_error_set(err, CF_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (op->invalidity_s) {
        char when[CF_TIME_STR_MAX];
        json_object_set_new(details, "invalidity",
                            json_string(cf_time_format(op->invalidity_s * 1000000, when)));
    }
    json_object_set_new(details, "serials", serials_json(all, nall));
    if (nall > 100)
        json_object_set_new(details, "more", json_integer((json_int_t)nall - 100));
    if (extra)
        json_object_update(details, extra);
    char *text = json_dumps(details, JSON_COMPACT | JSON_SORT_KEYS);
    /* One certificate is named; a CA's revocation stays the CA's event however many. */
    int single = nall == 1 && strcmp(op->action, "ca.revoke") != 0;
    cf_change_rec ch = {
        .seq = seq,
        .time_us = now_us,
        .kind = (char *)op->action,
        .ca_id = single                      ? all[0].ca_id
                 : sels[0].kind == CF_SEL_CA ? sels[0].id
                                             : 0,
        .serial = single ? all[0].serial : NULL,
        .device_id = single ? all[0].device_id : NULL,
        .count = (int64_t)nall,
        .details = text,
    };
    int64_t got = 0;
    rc = cf_store_change_insert(st, &ch, err);
    free(text);
    if (rc == CF_OK &&
        (rc = cf_audit_append(st, p->actor, op->action, op->object, details, &got, err)) == CF_OK &&
        got != seq)
        rc = cf_error_set(err, CF_ERR_INTERNAL, "revoke: audit sequence %lld, expected %lld",
                          (long long)got, (long long)seq);
    if (rc == CF_OK)
        out->seq = seq;
out:
    json_decref(details);
    json_decref(extra);
    cf_revoked_certs_free(all, nall);
    return rc;
}

cf_err cf_fleet_revocations_publish(cf_store *st, const char *const *serials, size_t n,
                                    const char *kind, const char *device_id, cf_error *err)
{
    unsigned char hash[CF_HASH_LEN];
    int64_t head = 0, ca_id = 0;
    if (n == 0)
        return CF_OK;
    /* The operation's first audit record, appended next, is head + 1; holding the head until
     * commit keeps that number this transaction's. */
    cf_err rc = cf_store_audit_lock_head(st, &head, hash, err);
    for (size_t i = 0; rc == CF_OK && i < n; i++) {
        cf_revoked_stamp r;
        unsigned char *der = NULL;
        size_t len = 0;
        if ((rc = cf_store_cert_stamp(st, serials[i], head + 1, &r, err)) != CF_OK ||
            (rc = cf_crl_entry_encode(serials[i], r.revoked_us / 1000000, r.reason, 0, &der, &len,
                                      err)) != CF_OK)
            break;
        rc = cf_store_crl_entry_add(st, r.ca_id, serials[i], r.crl_shard, head + 1, der, len, err);
        OPENSSL_free(der);
        ca_id = i == 0 || ca_id == r.ca_id ? r.ca_id : 0;
    }
    if (rc != CF_OK)
        return rc;
    cf_change_rec ch = {.seq = head + 1,
                        .time_us = cf_time_now_us(),
                        .kind = (char *)kind,
                        .ca_id = ca_id,
                        .serial = n == 1 ? (char *)serials[0] : NULL,
                        .device_id = (char *)device_id,
                        .count = (int64_t)n,
                        .details = "{}"};
    return cf_store_change_insert(st, &ch, err);
}

static cf_err commit_or_rollback(cf_store *st, cf_err rc, cf_error *err)
{
    if (rc == CF_OK)
        return cf_store_commit(st, err);
    cf_store_rollback(st);
    return rc;
}

int cf_fleet_reason_parse(const char *name, cf_error *err)
{
    int r = cf_crl_reason_parse(name);
    if (r < 0 || r == CF_CRL_REMOVE_FROM_CRL) {
        cf_error_set(err, CF_ERR_INVALID,
                     "reason \"%.40s\": use unspecified, keyCompromise, cACompromise,"
                     " affiliationChanged, superseded, cessationOfOperation, certificateHold,"
                     " privilegeWithdrawn or aACompromise",
                     name);
        return -1;
    }
    return r;
}

cf_err cf_fleet_revoke(cf_fleet *f, const cf_principal *p, const cf_revoke_req *req,
                       cf_revoke_result *out, cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_cert_sel sels[16];
    size_t nsel = 1;
    char serial[41], object[160];
    cf_owner_rec owner = {0};
    cf_ca_rec ca = {0};
    cf_err rc;
    memset(out, 0, sizeof *out);
    memset(sels, 0, sizeof sels);
    if ((int)req->kind < 0 || req->kind >= CF_SEL_COUNT || !req->target)
        return cf_error_set(err, CF_ERR_INVALID, "revoke: nothing selected");
    int reason = req->reason >= 0         ? req->reason
                 : req->kind == CF_SEL_CA ? CF_CRL_CA_COMPROMISE
                                          : CF_CRL_UNSPECIFIED;
    if (!cf_crl_reason_name(reason) || reason == CF_CRL_REMOVE_FROM_CRL)
        return cf_error_set(err, CF_ERR_INVALID, "revoke: %d is no revocation reason", reason);
    if (req->invalidity_s < 0 || req->invalidity_s > (int64_t)time(NULL) + 60)
        return cf_error_set(err, CF_ERR_INVALID, "revoke: the invalidity date is in the future");
    out->reason = reason;
    rc = req->kind == CF_SEL_CA
             ? cf_fleet_check_vendor(p, CF_ROLE_ADMIN, "revoking a CA", err)
             : cf_fleet_check_role(p, CF_ROLE_OPERATOR, "revoking certificates", err);
    if (rc != CF_OK)
        return rc;
    sels[0].kind = req->kind;
    sels[0].only_owner = p->owner_id;
    sels[0].text = req->target;
    switch (req->kind) {
    case CF_SEL_SERIAL:
        if ((rc = serial_normalize(req->target, serial, err)) != CF_OK)
            return rc;
        sels[0].text = serial;
        break;
    case CF_SEL_OWNER:
        if ((rc = cf_store_owner_get(st, req->target, &owner, err)) != CF_OK)
            return rc;
        sels[0].id = owner.id;
        cf_owner_rec_clear(&owner);
        if (p->owner_id && p->owner_id != sels[0].id)
            return cf_error_set(err, CF_ERR_NOT_FOUND, "owner %s not found", req->target);
        break;
    case CF_SEL_CA:
        if ((rc = ca_find(st, req->target, &ca, err)) != CF_OK)
            return rc;
        sels[0].id = ca.id;
        break;
    default:
        if (!cf_fleet_device_id_valid(req->target))
            return cf_error_set(err, CF_ERR_INVALID, "%s \"%.64s\": not a valid name",
                                sel_names[req->kind], req->target);
        if ((rc = target_check(f, p, &sels[0], err)) != CF_OK)
            return rc;
    }
    snprintf(object, sizeof object, "%s", req->kind == CF_SEL_CA ? ca.name : sels[0].text);
    revoke_op op = {
        .scope = sel_names[req->kind],
        .target = object,
        .action = req->kind == CF_SEL_CA ? "ca.revoke" : "cert.revoke",
        .object = object,
        .reason = reason,
        .invalidity_s = req->invalidity_s,
        .progress = req->progress,
        .progress_arg = req->progress_arg,
    };
    if ((rc = cf_store_begin(st, err)) != CF_OK)
        goto out;
    json_t *extra = NULL;
    if (req->kind == CF_SEL_CA) {
        /* The CA and, for a root, every issuing CA under it: revoked, and their certificates
         * with them. */
        cf_ca_rec *cas = NULL;
        size_t n = 0;
        extra = json_pack("{s:[s]}", "cas", ca.name);
        rc = cf_store_ca_revoke(st, ca.id, reason, cf_time_now_us(), err);
        if (rc == CF_OK && ca.role == CF_CA_ROOT &&
            (rc = cf_store_ca_list(st, &cas, &n, err)) == CF_OK) {
            for (size_t i = 0; i < n; i++) {
                if (rc == CF_OK && cas[i].parent_id == ca.id && nsel < 16) {
                    sels[nsel] = (cf_cert_sel){.kind = CF_SEL_CA, .id = cas[i].id};
                    nsel++;
                    json_array_append_new(json_object_get(extra, "cas"), json_string(cas[i].name));
                    rc = cf_store_ca_revoke(st, cas[i].id, reason, cf_time_now_us(), err);
                }
                cf_ca_rec_clear(&cas[i]);
            }
            free(cas);
        }
    } else {
        int64_t good = 0, revoked = 0;
        rc = cf_store_cert_count_sel(st, &sels[0], &good, &revoked, err);
        out->already = revoked;
        if (rc == CF_OK && good == 0) {
            cf_store_rollback(st);
            if (req->kind == CF_SEL_SERIAL && revoked == 0)
                rc = cf_error_set(err, CF_ERR_NOT_FOUND, "no certificate with serial %s", serial);
            goto out; /* nothing to do: no record, no change */
        }
    }
    if (rc == CF_OK)
        rc = revoke_in_txn(f, p, sels, nsel, &op, extra, out, err);
    else
        json_decref(extra);
    rc = commit_or_rollback(st, rc, err);
    if (rc != CF_OK)
        memset(out, 0, sizeof *out);
out:
    cf_ca_rec_clear(&ca);
    return rc;
}

/* ---- hold, block, readmit ---- */

cf_err cf_fleet_release(cf_fleet *f, const cf_principal *p, const char *serial_in, cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    char serial[41];
    cf_cert_rec cert = {0};
    unsigned char hash[CF_HASH_LEN];
    int64_t head, seq, now_us = cf_time_now_us(), got;
    cf_err rc;
    if ((rc = cf_fleet_check_role(p, CF_ROLE_OPERATOR, "releasing a certificate", err)) != CF_OK ||
        (rc = serial_normalize(serial_in, serial, err)) != CF_OK ||
        (rc = cf_store_begin(st, err)) != CF_OK)
        return rc;
    if ((rc = cf_store_cert_get(st, serial, &cert, err)) == CF_OK && p->owner_id &&
        cert.owner_id != p->owner_id)
        rc = cf_error_set(err, CF_ERR_NOT_FOUND, "no certificate with serial %s", serial);
    if (rc == CF_OK && (cert.status != CF_CERT_REVOKED || cert.reason != CF_CRL_CERTIFICATE_HOLD))
        rc = cf_error_set(err, CF_ERR_POLICY,
                          "certificate %s is not on hold (%s): only certificateHold is released",
                          serial,
                          cert.status == CF_CERT_GOOD ? "good" : cf_crl_reason_name(cert.reason));
    if (rc == CF_OK && (rc = cf_store_audit_lock_head(st, &head, hash, err)) == CF_OK) {
        seq = head + 1;
        rc = cf_store_cert_release(st, cert.ca_id, serial, now_us, seq, err);
    }
    if (rc == CF_OK && cert.device_id)
        rc = cf_store_devices_released_state(st, cert.device_id, now_us, err);
    if (rc == CF_OK) {
        cf_change_rec ch = {.seq = seq,
                            .time_us = now_us,
                            .kind = "cert.release",
                            .ca_id = cert.ca_id,
                            .serial = serial,
                            .device_id = cert.device_id,
                            .count = 1,
                            .details = "{}"};
        rc = cf_store_change_insert(st, &ch, err);
    }
    if (rc == CF_OK) {
        json_t *d = json_pack("{s:s, s:s?}", "serial", serial, "device", cert.device_id);
        rc = cf_audit_append(st, p->actor, "cert.release", serial, d, &got, err);
        json_decref(d);
        if (rc == CF_OK && got != seq)
            rc = cf_error_set(err, CF_ERR_INTERNAL, "release: audit sequence out of step");
    }
    cf_cert_rec_clear(&cert);
    return commit_or_rollback(st, rc, err);
}

/* The opening of an admin's change to one device: role, id, a transaction with the device's
 * row locked in *d (the caller commits or rolls back, and clears *d). A device of another
 * owner is "not found". */
static cf_err admin_device_begin(cf_fleet *f, const cf_principal *p, const char *what,
                                 const char *device_id, cf_device_rec *d, cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_err rc = cf_fleet_check_role(p, CF_ROLE_ADMIN, what, err);
    if (rc != CF_OK)
        return rc;
    if (!cf_fleet_device_id_valid(device_id))
        return cf_error_set(err, CF_ERR_INVALID, "device id \"%.64s\": not valid", device_id);
    if ((rc = cf_store_begin(st, err)) != CF_OK)
        return rc;
    if ((rc = cf_store_device_get(st, device_id, 1, d, err)) == CF_OK && p->owner_id &&
        d->owner_id != p->owner_id) {
        cf_device_rec_clear(d);
        rc = cf_error_set(err, CF_ERR_NOT_FOUND, "device %s not found", device_id);
    }
    if (rc != CF_OK)
        cf_store_rollback(st);
    return rc;
}

cf_err cf_fleet_block_birth(cf_fleet *f, const cf_principal *p, const char *device_id, int reason,
                            cf_revoke_result *out, cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_device_rec d;
    cf_err rc;
    memset(out, 0, sizeof *out);
    if (reason < 0)
        reason = CF_CRL_KEY_COMPROMISE;
    if (!cf_crl_reason_name(reason) || reason == CF_CRL_REMOVE_FROM_CRL ||
        reason == CF_CRL_CERTIFICATE_HOLD)
        return cf_error_set(err, CF_ERR_INVALID,
                            "blocking a birth certificate is for good: reason %s does not fit",
                            cf_crl_reason_name(reason) ? cf_crl_reason_name(reason) : "?");
    if ((rc = admin_device_begin(f, p, "blocking a birth certificate", device_id, &d, err)) !=
        CF_OK)
        return rc;
    int had_birth = d.blocked;
    cf_device_rec_clear(&d);
    if (had_birth)
        rc = cf_error_set(err, CF_ERR_EXISTS, "device %s: its birth certificate is already blocked",
                          device_id);
    if (rc == CF_OK)
        rc = cf_store_device_set_blocked(st, device_id, cf_time_now_us(), err);
    cf_cert_sel sel = {.kind = CF_SEL_DEVICE, .text = device_id};
    revoke_op op = {.scope = "device",
                    .target = device_id,
                    .action = "device.block",
                    .object = device_id,
                    .reason = reason};
    if (rc == CF_OK)
        rc = revoke_in_txn(f, p, &sel, 1, &op, json_pack("{s:b}", "birth_blocked", 1), out, err);
    return commit_or_rollback(st, rc, err);
}

cf_err cf_fleet_device_readmit(cf_fleet *f, const cf_principal *p, const char *device_id,
                               cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_device_rec d;
    cf_err rc;
    if ((rc = admin_device_begin(f, p, "readmitting a device", device_id, &d, err)) != CF_OK)
        return rc;
    cf_device_state to = d.owner_id ? CF_DEVICE_CLAIMED : CF_DEVICE_ON_HOLD;
    if (d.blocked)
        rc = cf_error_set(err, CF_ERR_POLICY,
                          "device %s: its birth certificate is blocked for good; it cannot be"
                          " readmitted",
                          device_id);
    else if (d.state != CF_DEVICE_REVOKED)
        rc =
            cf_error_set(err, CF_ERR_POLICY, "device %s is %s: only a revoked device is readmitted",
                         device_id, cf_device_state_name(d.state));
    cf_device_rec_clear(&d);
    if (rc == CF_OK)
        rc = cf_store_device_set_state(st, device_id, to, err);
    if (rc == CF_OK) {
        json_t *det = json_pack("{s:s}", "state", cf_device_state_name(to));
        rc = cf_audit_append(st, p->actor, "device.readmit", device_id, det, NULL, err);
        json_decref(det);
    }
    return commit_or_rollback(st, rc, err);
}

/* ---- CRLs ---- */

typedef struct {
    unsigned char *buf;
    size_t len, cap;
    int64_t n;
    int64_t max_seq; /* the highest seq added */
    int64_t now_s;
    cf_err rc;
    cf_error *err;
} entry_buf;

static int entry_add(void *arg, const char *serial, int64_t seq, const unsigned char *entry,
                     size_t len)
{
    entry_buf *b = arg;
    unsigned char *removal = NULL;
    if (!entry) { /* a release: removeFromCRL (RFC 5280 5.3.1), only in deltas */
        if ((b->rc = cf_crl_entry_encode(serial, b->now_s, CF_CRL_REMOVE_FROM_CRL, 0, &removal,
                                         &len, b->err)) != CF_OK)
            return 1;
        entry = removal;
    }
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64 * 1024;
        while (cap < b->len + len)
            cap *= 2;
        unsigned char *grown = realloc(b->buf, cap);
        if (!grown) {
            OPENSSL_free(removal);
            b->rc = cf_error_set(b->err, CF_ERR_NOMEM, "CRL: out of memory");
            return 1;
        }
        b->buf = grown;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, entry, len);
    b->len += len;
    b->n++;
    if (seq > b->max_seq)
        b->max_seq = seq;
    OPENSSL_free(removal);
    return 0;
}

/* 1 when any certificate was released after seq (its entry must leave the full CRL). */
static int any_removal(void *arg, const char *serial, int64_t seq, const unsigned char *entry,
                       size_t len)
{
    (void)serial, (void)seq, (void)entry, (void)len;
    *(int *)arg = 1;
    return 1;
}

struct cf_crl_builder {
    cf_ca_rec ca;
    int64_t shard;  /* 0: the CA's whole CRL */
    char idp[1024]; /* a shard's Issuing Distribution Point */
    X509 *cert;
    EVP_PKEY *key;
    char freshest[1024];
    entry_buf full;                /* the full CRL's entries, up to full.max_seq */
    int64_t base_number, base_seq; /* this builder's last full CRL */
    int64_t base_this_update;
};

const char *cf_crl_builder_ca(const cf_crl_builder *b)
{
    return b->ca.name;
}

void cf_crl_builder_free(cf_crl_builder *b)
{
    if (!b)
        return;
    cf_ca_rec_clear(&b->ca);
    X509_free(b->cert);
    EVP_PKEY_free(b->key);
    free(b->full.buf);
    free(b);
}

cf_err cf_crl_builder_new(cf_fleet *f, const char *ca, int64_t shard, cf_crl_builder **out,
                          cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_crl_builder *b = calloc(1, sizeof *b);
    char *base_url = NULL;
    cf_err rc;
    if (!b)
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    if ((rc = ca_find(st, ca, &b->ca, err)) == CF_ERR_NOT_FOUND && !ca)
        rc = newest_issuing(st, &b->ca, err);
    if (rc == CF_OK && b->ca.role != CF_CA_ISSUING && shard > 0)
        rc =
            cf_error_set(err, CF_ERR_INVALID, "CA %s is a root: its CRL has no shards", b->ca.name);
    if (rc == CF_OK && (rc = cf_x509_from_der(b->ca.der, b->ca.der_len, &b->cert, err)) == CF_OK)
        rc = cf_key_load(b->ca.key_ref, cf_fleet_key_dir(f), &b->key, err);
    if (rc == CF_OK && (rc = cf_store_meta_get(st, "base_url", &base_url, err)) == CF_ERR_NOT_FOUND)
        rc = CF_OK;
    if (rc != CF_OK) {
        cf_crl_builder_free(b);
        cf_error_prefix(err, "CRL");
        return rc;
    }
    snprintf(b->freshest, sizeof b->freshest, "%s/crl/%s-delta.crl",
             base_url ? base_url : CF_DEFAULT_BASE_URL, b->ca.name);
    snprintf(b->idp, sizeof b->idp, "%s/crl/%s-s%lld.crl",
             base_url ? base_url : CF_DEFAULT_BASE_URL, b->ca.name, (long long)shard);
    b->shard = shard > 0 ? shard : 0;
    free(base_url);
    *out = b;
    return CF_OK;
}

/* A root's CRL lists the issuing CAs under it that were revoked: few, read and encoded
 * each time. */
static cf_err root_entries(cf_store *st, cf_crl_builder *b, cf_error *err)
{
    cf_ca_rec *cas = NULL;
    size_t n = 0;
    cf_err rc = cf_store_ca_list(st, &cas, &n, err);
    b->full.len = b->full.n = 0;
    for (size_t i = 0; rc == CF_OK && i < n; i++) {
        X509 *x = NULL;
        unsigned char *der = NULL;
        size_t len = 0;
        char serial[CF_SERIAL_HEX_MAX];
        if (cas[i].parent_id != b->ca.id || cas[i].status != CF_CA_REVOKED)
            continue;
        if ((rc = cf_x509_from_der(cas[i].der, cas[i].der_len, &x, err)) != CF_OK)
            break;
        cf_x509_serial_hex(x, serial);
        X509_free(x);
        if ((rc = cf_crl_entry_encode(serial, cas[i].revoked_us / 1000000,
                                      cas[i].reason >= 0 ? cas[i].reason : CF_CRL_CA_COMPROMISE, 0,
                                      &der, &len, err)) == CF_OK) {
            entry_add(&b->full, serial, 0, der, len);
            rc = b->full.rc;
        }
        OPENSSL_free(der);
    }
    for (size_t i = 0; i < n; i++)
        cf_ca_rec_clear(&cas[i]);
    free(cas);
    return rc;
}

static cf_err crl_sign(cf_crl_builder *b, const entry_buf *e, int64_t delta_base, cf_crl_info *info,
                       unsigned char **der, size_t *len, cf_error *err)
{
    info->ca_id = b->ca.id;
    snprintf(info->ca_name, sizeof info->ca_name, "%s", b->ca.name);
    info->entries = e->n;
    info->this_update = e->now_s;
    info->next_update =
        e->now_s + (delta_base ? CF_CRL_DEFAULT_DELTA_S : CF_CRL_DEFAULT_VALIDITY_S);
    info->base_number = delta_base;
    cf_crl_params params = {
        .number = info->number,
        .delta_base = delta_base,
        .this_update = info->this_update,
        .next_update = info->next_update,
        .freshest_uri = delta_base || b->shard || b->ca.role == CF_CA_ROOT ? NULL : b->freshest,
        .idp_uri = b->shard ? b->idp : NULL,
    };
    cf_crl_piece piece = {e->buf, e->len};
    cf_err rc = cf_crl_build(b->cert, b->key, &params, &piece, 1, der, len, err);
    if (rc != CF_OK)
        cf_error_prefix(err, "CRL of %s", b->ca.name);
    return rc;
}

cf_err cf_crl_builder_full(cf_fleet *f, cf_crl_builder *b, int rebase, unsigned char **der,
                           size_t *len, cf_crl_info *info, cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_crl_info local;
    int removed = 0;
    if (!info)
        info = &local;
    memset(info, 0, sizeof *info);
    b->full.now_s = time(NULL);
    b->full.err = err;
    b->full.rc = CF_OK;
    cf_err rc = cf_store_begin(st, err);
    if (rc != CF_OK)
        return rc;
    rc = cf_store_change_last(st, &info->change_seq, err);
    if (rc == CF_OK && b->ca.role == CF_CA_ROOT)
        rc = root_entries(st, b, err);
    else if (rc == CF_OK && b->full.max_seq)
        rc = cf_store_crl_removals_scan(st, b->ca.id, b->full.max_seq, any_removal, &removed, err);
    if (rc == CF_OK && b->ca.role != CF_CA_ROOT && removed) {
        /* start over: an entry in memory has left the CRL */
        b->full.len = 0;
        b->full.n = 0;
        b->full.max_seq = 0;
    }
    if (rc == CF_OK && b->ca.role != CF_CA_ROOT)
        rc = cf_store_crl_entries_scan(st, b->ca.id, b->shard, b->full.max_seq, entry_add, &b->full,
                                       err);
    if (rc == CF_OK && b->full.rc != CF_OK)
        rc = b->full.rc;
    if (rc == CF_OK)
        rc = cf_store_crl_number_next(st, b->ca.id, &info->number, err);
    rebase |= b->base_number == 0;
    if (rc == CF_OK && rebase && !b->shard) /* a shard is no delta's base */
        rc = cf_store_crl_base_set(st, b->ca.id, info->number, b->full.max_seq, err);
    if ((rc = commit_or_rollback(st, rc, err)) != CF_OK) {
        b->full.len = b->full.n = b->full.max_seq = 0; /* unsure what was read: read it all */
        return rc;
    }
    info->seq = b->full.max_seq;
    if ((rc = crl_sign(b, &b->full, 0, info, der, len, err)) != CF_OK)
        return rc;
    if (rebase) {
        b->base_number = info->number;
        b->base_seq = b->full.max_seq;
    }
    return CF_OK;
}

cf_err cf_crl_builder_delta(cf_fleet *f, cf_crl_builder *b, int stored_base, unsigned char **der,
                            size_t *len, cf_crl_info *info, cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    entry_buf e = {.now_s = time(NULL), .err = err};
    int64_t base = b->base_number, since = b->base_seq;
    cf_crl_info local;
    if (!info)
        info = &local;
    memset(info, 0, sizeof *info);
    if (b->shard || b->ca.role == CF_CA_ROOT)
        return cf_error_set(err, CF_ERR_INVALID, "%s: no delta CRLs (the CRL is small)",
                            b->ca.name);
    cf_err rc = cf_store_begin(st, err);
    if (rc != CF_OK)
        return rc;
    if (stored_base)
        rc = cf_store_crl_base_get(st, b->ca.id, &base, &since, err);
    if ((rc == CF_OK || rc == CF_ERR_NOT_FOUND) && base == 0)
        rc = cf_error_set(err, CF_ERR_STATE,
                          "CA %s: a delta CRL needs a full CRL to be based on; build one first"
                          " (certfleet crl)",
                          b->ca.name);
    if (rc == CF_OK)
        rc = cf_store_change_last(st, &info->change_seq, err);
    if (rc == CF_OK)
        rc = cf_store_crl_entries_scan(st, b->ca.id, 0, since, entry_add, &e, err);
    if (rc == CF_OK && e.rc == CF_OK)
        rc = cf_store_crl_removals_scan(st, b->ca.id, since, entry_add, &e, err);
    if (rc == CF_OK && e.rc != CF_OK)
        rc = e.rc;
    if (rc == CF_OK)
        rc = cf_store_crl_number_next(st, b->ca.id, &info->number, err);
    if ((rc = commit_or_rollback(st, rc, err)) == CF_OK) {
        info->seq = e.max_seq > since ? e.max_seq : since;
        rc = crl_sign(b, &e, base, info, der, len, err);
    }
    free(e.buf);
    return rc;
}

cf_err cf_fleet_crl(cf_fleet *f, const char *ca, int64_t shard, int delta, unsigned char **der,
                    size_t *len, cf_crl_info *info, cf_error *err)
{
    cf_crl_builder *b;
    cf_err rc = cf_crl_builder_new(f, ca, shard, &b, err);
    if (rc != CF_OK)
        return rc;
    rc = delta ? cf_crl_builder_delta(f, b, 1, der, len, info, err)
               : cf_crl_builder_full(f, b, 1, der, len, info, err);
    cf_crl_builder_free(b);
    return rc;
}

/* ---- CRL shards ---- */

#define SHARD_SIZE_KEY "crl_shard_size"

cf_err cf_fleet_crl_shard_size_get(cf_fleet *f, int64_t *size, cf_error *err)
{
    char *v = NULL;
    cf_err rc = cf_store_meta_get(cf_fleet_store(f), SHARD_SIZE_KEY, &v, err);
    *size = 0;
    if (rc == CF_ERR_NOT_FOUND)
        return CF_OK;
    if (rc == CF_OK)
        *size = strtoll(v, NULL, 10);
    free(v);
    return rc;
}

cf_err cf_fleet_crl_shard_size_set(cf_fleet *f, const cf_principal *p, int64_t size, cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    char v[32];
    cf_err rc = cf_fleet_check_vendor(p, CF_ROLE_ADMIN, "setting CRL shards", err);
    if (rc != CF_OK)
        return rc;
    if (size < 0 || size > 100000000)
        return cf_error_set(err, CF_ERR_INVALID,
                            "CRL shard size %lld: use 0 (no shards) to 100000000", (long long)size);
    snprintf(v, sizeof v, "%lld", (long long)size);
    if ((rc = cf_store_begin(st, err)) != CF_OK)
        return rc;
    rc = cf_store_meta_set(st, SHARD_SIZE_KEY, v, err);
    if (rc == CF_OK) {
        json_t *d = json_pack("{s:I}", "size", (json_int_t)size);
        rc = cf_audit_append(st, p->actor, "settings.crl_shards", SHARD_SIZE_KEY, d, NULL, err);
        json_decref(d);
    }
    return commit_or_rollback(st, rc, err);
}

/* ---- OCSP responders ---- */

typedef struct {
    const cf_ca_rec *rec;
    X509 *ca;
    const char *base_url;
    const char *keydir;
    int may_issue;
} signer_ctx;

static int signer_usable(X509 *cert, EVP_PKEY *key, void *arg)
{
    signer_ctx *c = arg;
    time_t renew = time(NULL) + (time_t)CF_OCSP_SIGNER_RENEW_DAYS * 86400;
    if (!c->may_issue) /* a revoked CA's current signer serves while it lasts */
        renew = time(NULL);
    return X509_check_issued(c->ca, cert) == X509_V_OK &&
           X509_verify(cert, X509_get0_pubkey(c->ca)) == 1 &&
           X509_check_private_key(cert, key) == 1 &&
           (X509_get_extended_key_usage(cert) & XKU_OCSP_SIGN) &&
           X509_cmp_time(X509_get0_notAfter(cert), &renew) > 0;
}

static cf_err signer_issue(cf_fleet *f, EVP_PKEY *key, void *arg, X509 **cert, cf_error *err)
{
    signer_ctx *c = arg;
    cf_store *st = cf_fleet_store(f);
    EVP_PKEY *ca_key = NULL;
    cf_issuer *iss = NULL;
    unsigned char *der = NULL;
    size_t der_len = 0;
    char serial[CF_SERIAL_HEX_MAX];
    cf_err rc;
    if (!c->may_issue)
        return cf_error_set(err, CF_ERR_STATE, "CA %s is revoked: it signs no new responder",
                            c->rec->name);
    if ((rc = cf_key_load(c->rec->key_ref, c->keydir, &ca_key, err)) != CF_OK ||
        (rc = cf_issuer_new(c->ca, ca_key, c->rec->name, c->base_url, &iss, err)) != CF_OK ||
        (rc = cf_issuer_sign_ocsp(iss, key, NULL, CF_OCSP_SIGNER_DAYS, cert, serial, err)) !=
            CF_OK ||
        (rc = cf_x509_to_der(*cert, &der, &der_len, err)) != CF_OK)
        goto out;
    char *subject = cf_x509_subject_line(*cert);
    cf_cert_rec rec = {.ca_id = c->rec->id,
                       .subject = subject,
                       .not_before = cf_x509_not_before(*cert),
                       .not_after = cf_x509_not_after(*cert),
                       .issued_us = cf_time_now_us(),
                       .der = der,
                       .der_len = der_len,
                       .status = CF_CERT_GOOD,
                       .reason = -1};
    snprintf(rec.serial, sizeof rec.serial, "%s", serial);
    json_t *d = json_pack("{s:s, s:s, s:I}", "serial", serial, "ca", c->rec->name, "not_after",
                          (json_int_t)rec.not_after);
    if ((rc = cf_store_begin(st, err)) == CF_OK) {
        if ((rc = cf_store_cert_insert(st, &rec, err)) == CF_OK)
            rc = cf_audit_append(st, "certfleet", "cert.issue_ocsp", c->rec->name, d, NULL, err);
        rc = commit_or_rollback(st, rc, err);
    }
    json_decref(d);
    free(subject);
out:
    if (rc != CF_OK) {
        X509_free(*cert);
        *cert = NULL;
    }
    OPENSSL_free(der);
    cf_issuer_free(iss);
    EVP_PKEY_free(ca_key);
    return rc;
}

cf_err cf_fleet_ocsp_responder(cf_fleet *f, cf_ocsp_responder **out, int64_t *renew_at,
                               cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_ca_rec *cas = NULL;
    size_t n = 0;
    char *base_url = NULL;
    cf_ocsp_responder *r = NULL;
    int64_t due = INT64_MAX;
    cf_err rc = cf_store_ca_list(st, &cas, &n, err);
    if (rc == CF_OK && (rc = cf_store_meta_get(st, "base_url", &base_url, err)) == CF_ERR_NOT_FOUND)
        rc = CF_OK;
    if (rc == CF_OK)
        rc = cf_ocsp_responder_new(&r, err);
    for (size_t i = 0; rc == CF_OK && i < n; i++) {
        if (cas[i].role != CF_CA_ISSUING || cas[i].not_after < (int64_t)time(NULL))
            continue;
        X509 *ca = NULL, *cert = NULL;
        EVP_PKEY *key = NULL;
        char name[128];
        snprintf(name, sizeof name, "ocsp-%s", cas[i].name);
        signer_ctx c = {.rec = &cas[i],
                        .base_url = base_url ? base_url : CF_DEFAULT_BASE_URL,
                        .keydir = cf_fleet_key_dir(f),
                        .may_issue = cas[i].status != CF_CA_REVOKED};
        cf_service_profile prof = {signer_usable, signer_issue, &c};
        if ((rc = cf_x509_from_der(cas[i].der, cas[i].der_len, &ca, err)) == CF_OK) {
            c.ca = ca;
            rc = cf_fleet_service_pair(f, name, &prof, &cert, &key, err);
            if (rc == CF_ERR_STATE) /* a revoked CA without a signer: not answered for */
                rc = CF_OK;
            else if (rc == CF_OK)
                rc = cf_ocsp_responder_add_ca(r, ca, cas[i].id, cert, key, err);
        }
        if (cert) {
            int64_t renew = cf_x509_not_after(cert) - (int64_t)CF_OCSP_SIGNER_RENEW_DAYS * 86400;
            if (renew < due)
                due = renew;
        }
        X509_free(cert);
        EVP_PKEY_free(key);
        X509_free(ca);
    }
    for (size_t i = 0; i < n; i++)
        cf_ca_rec_clear(&cas[i]);
    free(cas);
    free(base_url);
    if (rc != CF_OK) {
        cf_ocsp_responder_free(r);
        return rc;
    }
    *out = r;
    if (renew_at)
        *renew_at = due;
    return CF_OK;
}
