/* ownership.c - owners, tokens, claims, transfers, device states, groups and queries. */
#include "fleet/ownership.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "core/util.h"
#include "fleet/access_int.h"
#include "fleet/onboard.h"
#include "fleet/revoke.h"
#include "pki/jose.h"
#include "pki/manifest_make.h"

#define TOKEN_PREFIX "cft_"
#define TOKEN_RANDOM_BYTES 32

int cf_fleet_name_valid(const char *name)
{
    size_t n = strlen(name);
    return n <= 64 && cf_fleet_device_id_valid(name);
}

/* ---- who may do what ---- */

static const char *role_verb(cf_role need)
{
    return need == CF_ROLE_ADMIN ? "an admin" : "an operator or admin";
}

cf_err cf_fleet_check_role(const cf_principal *p, cf_role need, const char *what, cf_error *err)
{
    if (p->role <= need)
        return CF_OK;
    return cf_error_set(err, CF_ERR_POLICY, "%s needs %s (this caller is %s)", what,
                        role_verb(need), cf_role_name(p->role));
}

cf_err cf_fleet_check_vendor(const cf_principal *p, cf_role need, const char *what, cf_error *err)
{
    if (p->owner_id)
        return cf_error_set(err, CF_ERR_POLICY, "%s is for the vendor's operator only", what);
    return cf_fleet_check_role(p, need, what, err);
}

static int visible(const cf_principal *p, const cf_device_rec *d)
{
    return p->owner_id == 0 || d->owner_id == p->owner_id;
}

static cf_err check_device_id(const char *id, cf_error *err)
{
    if (cf_fleet_device_id_valid(id))
        return CF_OK;
    return cf_error_set(err, CF_ERR_INVALID,
                        "device id \"%.64s%s\": use 1-128 characters of A-Z a-z 0-9 . _ : -", id,
                        strlen(id) > 64 ? "..." : "");
}

/* The device as the caller may see it, locked when inside a transaction: one that is not
 * the caller's is "not found", the same words as one that does not exist. */
static cf_err device_for(cf_fleet *f, const cf_principal *p, const char *id, int lock,
                         cf_device_rec *d, cf_error *err)
{
    cf_err rc = cf_store_device_get(cf_fleet_store(f), id, lock, d, err);
    if (rc != CF_OK)
        return rc;
    if (!visible(p, d)) {
        cf_device_rec_clear(d);
        return cf_error_set(err, CF_ERR_NOT_FOUND, "device %s not found", id);
    }
    return CF_OK;
}

static cf_err owner_by_name(cf_fleet *f, const char *name, cf_owner_rec *out, cf_error *err)
{
    if (!cf_fleet_name_valid(name))
        return cf_error_set(err, CF_ERR_INVALID,
                            "owner name \"%.64s\": use 1-64 characters of A-Z a-z 0-9 . _ : -",
                            name);
    return cf_store_owner_get(cf_fleet_store(f), name, out, err);
}

static void sha256(const void *data, size_t len, unsigned char out[CF_HASH_LEN])
{
    unsigned int n = 0;
    if (!EVP_Digest(data, len, out, &n, EVP_sha256(), NULL))
        abort(); /* SHA-256 is always there; failing here means memory is gone */
}

/* Appends the record and commits, or rolls back: the one way every change here ends. */
static cf_err audit_commit(cf_fleet *f, const cf_principal *p, const char *action,
                           const char *object, json_t *details, cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_err rc = cf_audit_append(st, p->actor, action, object, details, NULL, err);
    json_decref(details);
    if (rc == CF_OK)
        rc = cf_store_commit(st, err);
    else
        cf_store_rollback(st);
    return rc;
}

/* ---- owners ---- */

cf_err cf_fleet_owner_add(cf_fleet *f, const cf_principal *p, const char *name, int64_t *id,
                          cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_err rc = cf_fleet_check_vendor(p, CF_ROLE_ADMIN, "adding an owner", err);
    if (rc != CF_OK)
        return rc;
    if (!cf_fleet_name_valid(name))
        return cf_error_set(err, CF_ERR_INVALID,
                            "owner name \"%.64s\": use 1-64 characters of A-Z a-z 0-9 . _ : -",
                            name);
    if ((rc = cf_store_begin(st, err)) != CF_OK)
        return rc;
    if ((rc = cf_store_owner_insert(st, name, cf_time_now_us(), id, err)) != CF_OK) {
        cf_store_rollback(st);
        return rc;
    }
    return audit_commit(f, p, "owner.add", name, json_pack("{s:I}", "id", (json_int_t)*id), err);
}

cf_err cf_fleet_owner_list(cf_fleet *f, const cf_principal *p, cf_owner_rec **recs, size_t *n,
                           cf_error *err)
{
    cf_err rc = cf_store_owner_list(cf_fleet_store(f), recs, n, err);
    if (rc != CF_OK || !p->owner_id)
        return rc;
    size_t kept = 0;
    for (size_t i = 0; i < *n; i++) {
        if ((*recs)[i].id == p->owner_id)
            (*recs)[kept++] = (*recs)[i];
        else
            cf_owner_rec_clear(&(*recs)[i]);
    }
    *n = kept;
    return CF_OK;
}

/* ---- tokens ---- */

/* The owner whose tokens p may manage: the vendor's admin for any, an owner's admin for
 * its own. */
static cf_err token_owner(cf_fleet *f, const cf_principal *p, const char *name, cf_owner_rec *out,
                          cf_error *err)
{
    cf_err rc = cf_fleet_check_role(p, CF_ROLE_ADMIN, "managing tokens", err);
    if (rc == CF_OK && strcmp(name, CF_VENDOR_TOKENS) == 0) {
        if (p->owner_id)
            return cf_error_set(err, CF_ERR_POLICY, "the vendor's tokens are the vendor's");
        memset(out, 0, sizeof *out);
        out->name = cf_strdup("(vendor)"); /* no owner can be named so: the audit's object */
        return CF_OK;
    }
    if (rc == CF_OK)
        rc = owner_by_name(f, name, out, err);
    if (rc == CF_OK && p->owner_id && out->id != p->owner_id) {
        cf_owner_rec_clear(out);
        rc = cf_error_set(err, CF_ERR_NOT_FOUND, "owner %s not found", name);
    }
    return rc;
}

cf_err cf_fleet_token_create(cf_fleet *f, const cf_principal *p, const char *owner, cf_role role,
                             const char *label, char token[CF_TOKEN_STR_MAX], int64_t *id,
                             cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_owner_rec o = {0};
    cf_token_rec rec = {0};
    unsigned char rnd[TOKEN_RANDOM_BYTES];
    cf_err rc = token_owner(f, p, owner, &o, err);
    if (rc != CF_OK)
        return rc;
    if ((int)role < 0 || role >= CF_ROLE_COUNT) {
        rc = cf_error_set(err, CF_ERR_INVALID, "unknown role");
        goto out;
    }
    if (label && strlen(label) > 200) {
        rc = cf_error_set(err, CF_ERR_INVALID, "token label: at most 200 characters");
        goto out;
    }
    if ((rc = cf_random_bytes(rnd, sizeof rnd, err)) != CF_OK)
        goto out;
    memcpy(token, TOKEN_PREFIX, sizeof TOKEN_PREFIX - 1);
    cf_b64url_encode(rnd, sizeof rnd, token + sizeof TOKEN_PREFIX - 1);
    OPENSSL_cleanse(rnd, sizeof rnd);
    rec.owner_id = o.id;
    rec.role = role;
    rec.label = (char *)label;
    rec.created_us = cf_time_now_us();
    sha256(token, strlen(token), rec.hash);
    if ((rc = cf_store_begin(st, err)) != CF_OK)
        goto out;
    if ((rc = cf_store_token_insert(st, &rec, err)) != CF_OK) {
        cf_store_rollback(st);
        goto out;
    }
    *id = rec.id;
    json_t *details =
        json_pack("{s:I, s:s, s:o}", "id", (json_int_t)rec.id, "role", cf_role_name(role), "label",
                  label ? json_string(label) : json_null());
    rc = audit_commit(f, p, "token.create", o.name, details, err);
out:
    if (rc != CF_OK)
        OPENSSL_cleanse(token, CF_TOKEN_STR_MAX);
    cf_owner_rec_clear(&o);
    return rc;
}

cf_err cf_fleet_token_revoke(cf_fleet *f, const cf_principal *p, const char *owner, int64_t id,
                             cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_owner_rec o = {0};
    cf_err rc = token_owner(f, p, owner, &o, err);
    if (rc != CF_OK)
        return rc;
    if ((rc = cf_store_begin(st, err)) != CF_OK)
        goto out;
    if ((rc = cf_store_token_revoke(st, o.id, id, cf_time_now_us(), err)) != CF_OK) {
        cf_store_rollback(st);
        goto out;
    }
    rc = audit_commit(f, p, "token.revoke", o.name, json_pack("{s:I}", "id", (json_int_t)id), err);
out:
    cf_owner_rec_clear(&o);
    return rc;
}

cf_err cf_fleet_token_list(cf_fleet *f, const cf_principal *p, const char *owner,
                           cf_token_rec **recs, size_t *n, cf_error *err)
{
    cf_owner_rec o = {0};
    cf_err rc = token_owner(f, p, owner, &o, err);
    if (rc == CF_OK)
        rc = cf_store_token_list(cf_fleet_store(f), o.id, recs, n, err);
    cf_owner_rec_clear(&o);
    return rc;
}

cf_err cf_fleet_token_auth(cf_fleet *f, const char *token, cf_token_identity *out, cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_token_rec rec = {0};
    unsigned char hash[CF_HASH_LEN];
    memset(out, 0, sizeof *out);
    /* The shape is public (prefix and length), so checking it first leaks nothing. */
    if (!token || strlen(token) != CF_TOKEN_STR_MAX - 1 ||
        strncmp(token, TOKEN_PREFIX, sizeof TOKEN_PREFIX - 1) != 0)
        return cf_error_set(err, CF_ERR_NOT_FOUND, "token not recognised");
    sha256(token, strlen(token), hash);
    cf_err rc = cf_store_token_find(st, hash, &rec, err);
    if (rc == CF_ERR_NOT_FOUND)
        return cf_error_set(err, CF_ERR_NOT_FOUND, "token not recognised");
    if (rc != CF_OK)
        return rc;
    /* The index found the row; the comparison is still constant-time, so the decision
     * never rests on a comparison whose time depends on the secret. */
    int ok = cf_ct_equal(rec.hash, hash, CF_HASH_LEN) && rec.revoked_us == 0;
    if (ok && rec.owner_id) {
        cf_owner_rec o = {0};
        if ((rc = cf_store_owner_get_id(st, rec.owner_id, &o, err)) != CF_OK) {
            cf_token_rec_clear(&rec);
            return rc == CF_ERR_NOT_FOUND
                       ? cf_error_set(err, CF_ERR_NOT_FOUND, "token not recognised")
                       : rc;
        }
        snprintf(out->owner, sizeof out->owner, "%s", o.name);
        cf_owner_rec_clear(&o);
    }
    if (ok) {
        out->token_id = rec.id;
        out->owner_id = rec.owner_id;
        out->role = rec.role;
    }
    cf_token_rec_clear(&rec);
    return ok ? CF_OK : cf_error_set(err, CF_ERR_NOT_FOUND, "token not recognised");
}

/* ---- claim limits ---- */

static const struct {
    const char *key;
    size_t off;
    int64_t def;
} limit_keys[] = {
    {"claim_device_max", offsetof(cf_claim_limits, device_max), CF_CLAIM_DEVICE_MAX},
    {"claim_device_window_s", offsetof(cf_claim_limits, device_window_s), CF_CLAIM_DEVICE_WINDOW_S},
    {"claim_owner_max", offsetof(cf_claim_limits, owner_max), CF_CLAIM_OWNER_MAX},
    {"claim_owner_window_s", offsetof(cf_claim_limits, owner_window_s), CF_CLAIM_OWNER_WINDOW_S},
};

static int64_t *limit_field(cf_claim_limits *l, size_t i)
{
    return (int64_t *)((char *)l + limit_keys[i].off);
}

cf_err cf_fleet_claim_limits_get(cf_fleet *f, cf_claim_limits *out, cf_error *err)
{
    for (size_t i = 0; i < sizeof limit_keys / sizeof limit_keys[0]; i++) {
        char *v = NULL, *end;
        cf_err rc = cf_store_meta_get(cf_fleet_store(f), limit_keys[i].key, &v, err);
        if (rc == CF_ERR_NOT_FOUND) {
            *limit_field(out, i) = limit_keys[i].def;
            continue;
        }
        if (rc != CF_OK)
            return rc;
        long long x = strtoll(v, &end, 10);
        int bad = !*v || *end || x < 1;
        free(v);
        if (bad)
            return cf_error_set(err, CF_ERR_STORE, "setting %s is not a positive number",
                                limit_keys[i].key);
        *limit_field(out, i) = x;
    }
    return CF_OK;
}

cf_err cf_fleet_claim_limits_set(cf_fleet *f, const cf_principal *p, const cf_claim_limits *l,
                                 cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_err rc = cf_fleet_check_vendor(p, CF_ROLE_ADMIN, "setting claim limits", err);
    if (rc != CF_OK)
        return rc;
    cf_claim_limits v = *l;
    json_t *details = json_object();
    for (size_t i = 0; i < sizeof limit_keys / sizeof limit_keys[0]; i++) {
        int64_t x = *limit_field(&v, i);
        if (x < 1 || x > 100000000) {
            json_decref(details);
            return cf_error_set(err, CF_ERR_INVALID, "%s: expected 1 to 100000000",
                                limit_keys[i].key);
        }
        json_object_set_new(details, limit_keys[i].key, json_integer(x));
    }
    if ((rc = cf_store_begin(st, err)) != CF_OK) {
        json_decref(details);
        return rc;
    }
    for (size_t i = 0; i < sizeof limit_keys / sizeof limit_keys[0] && rc == CF_OK; i++) {
        char buf[32];
        snprintf(buf, sizeof buf, "%lld", (long long)*limit_field(&v, i));
        rc = cf_store_meta_set(st, limit_keys[i].key, buf, err);
    }
    if (rc != CF_OK) {
        cf_store_rollback(st);
        json_decref(details);
        return rc;
    }
    return audit_commit(f, p, "settings.claim_limits", "claim_limits", details, err);
}

/* ---- claims ---- */

static json_t *claim_details(const char *owner, const char *how, const cf_principal *p,
                             const char *batch)
{
    json_t *d = json_pack("{s:s, s:s, s:s}", "owner", owner, "how", how, "by", p->actor);
    if (batch)
        json_object_set_new(d, "batch", json_string(batch));
    return d;
}

/* Why a claim by code failed, for the audit log only. */
static const char *code_failure(const cf_device_rec *d, int found,
                                const unsigned char code[CF_CLAIM_CODE_BYTES], int code_ok)
{
    if (!code_ok)
        return "malformed_code";
    if (!found)
        return "unknown_device";
    if (d->owner_id != 0 || d->state != CF_DEVICE_ON_HOLD)
        return "not_claimable";
    if (d->blocked)
        return "blocked";
    if (!d->has_claim_hash)
        return "no_claim_code";
    unsigned char h[CF_HASH_LEN];
    cf_onboard_claim_hash(d->id, code, h);
    return cf_ct_equal(h, d->claim_hash, CF_HASH_LEN) ? NULL : "wrong_code";
}

/* Inside the open transaction: whether the limits allow one more attempt by owner on id;
 * when not, *why says which (for the caller and the audit log). */
static cf_err limits_check(cf_fleet *f, const cf_claim_limits *l, const char *id, int64_t owner,
                           int64_t now, char *why, size_t whylen, cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    int64_t dev = 0, own = 0;
    cf_err rc = cf_store_claim_failures(st, id, 0, now - l->device_window_s * 1000000, &dev, err);
    if (rc == CF_OK)
        rc = cf_store_claim_failures(st, NULL, owner, now - l->owner_window_s * 1000000, &own, err);
    if (rc != CF_OK)
        return rc;
    why[0] = '\0';
    if (dev >= l->device_max)
        snprintf(why, whylen,
                 "too many failed claim attempts on device %s (%lld within %lld s); try again"
                 " later",
                 id, (long long)dev, (long long)l->device_window_s);
    else if (own >= l->owner_max)
        snprintf(why, whylen,
                 "too many failed claim attempts by this owner (%lld within %lld s); try again"
                 " later",
                 (long long)own, (long long)l->owner_window_s);
    return CF_OK;
}

static cf_err claim_by_code(cf_fleet *f, const cf_principal *p, const cf_claim_req *req,
                            const cf_owner_rec *claimer, cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_claim_limits lim = {0};
    cf_device_rec d = {0};
    unsigned char code[CF_CLAIM_CODE_BYTES];
    char why[300];
    cf_error ignored;
    int found = 0;
    const char *reason;
    int64_t now = cf_time_now_us();
    cf_err rc = cf_fleet_claim_limits_get(f, &lim, err);
    if (rc != CF_OK)
        return rc;
    int code_ok = cf_claim_code_parse(req->code, code, &ignored) == CF_OK;
    if ((rc = cf_store_begin(st, err)) != CF_OK)
        goto out;
    if ((rc = cf_store_owner_lock(st, claimer->id, err)) != CF_OK ||
        (rc = limits_check(f, &lim, req->device_id, claimer->id, now, why, sizeof why, err)) !=
            CF_OK)
        goto fail;
    if (why[0]) {
        /* Refused before the code is looked at: a guess over the limit learns nothing. It
         * is not counted, so the window runs from the last real guess. */
        json_t *det = json_pack("{s:s, s:s}", "owner", claimer->name, "reason", "rate_limited");
        if ((rc = audit_commit(f, p, "device.claim_failed", req->device_id, det, err)) == CF_OK)
            rc = cf_error_set(err, CF_ERR_POLICY, "%s", why);
        goto out;
    }
    rc = cf_store_device_get(st, req->device_id, 1, &d, err);
    if (rc == CF_OK)
        found = 1;
    else if (rc != CF_ERR_NOT_FOUND)
        goto fail;
    if (found && d.owner_id == claimer->id) {
        cf_store_rollback(st);
        rc = cf_error_set(err, CF_ERR_EXISTS, "device %s is already owned by %s", req->device_id,
                          claimer->name);
        goto out;
    }
    reason = code_failure(&d, found, code, code_ok);
    if ((rc = cf_store_claim_attempt_insert(st, req->device_id, claimer->id, now, reason == NULL,
                                            err)) != CF_OK)
        goto fail;
    if (reason) {
        json_t *det = json_pack("{s:s, s:s}", "owner", claimer->name, "reason", reason);
        if ((rc = audit_commit(f, p, "device.claim_failed", req->device_id, det, err)) == CF_OK)
            rc = cf_error_set(err, CF_ERR_POLICY, "device %s: not claimable with this claim code",
                              req->device_id);
        goto out;
    }
    if ((rc = cf_store_device_set_owner(st, req->device_id, claimer->id, CF_DEVICE_CLAIMED, err)) !=
        CF_OK)
        goto fail;
    rc = audit_commit(f, p, "device.claim", req->device_id,
                      claim_details(claimer->name, "code", p, NULL), err);
    goto out;
fail:
    cf_store_rollback(st);
out:
    OPENSSL_cleanse(code, sizeof code);
    cf_device_rec_clear(&d);
    return rc;
}

static cf_err claim_by_operator(cf_fleet *f, const cf_principal *p, const cf_claim_req *req,
                                const cf_owner_rec *o, cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_device_rec d = {0};
    cf_err rc = cf_store_begin(st, err);
    if (rc != CF_OK)
        return rc;
    if ((rc = cf_store_device_get(st, req->device_id, 1, &d, err)) != CF_OK)
        goto fail;
    if (d.owner_id == o->id) {
        rc = cf_error_set(err, CF_ERR_EXISTS, "device %s is already owned by %s", d.id, o->name);
        goto fail;
    }
    if (d.state != CF_DEVICE_ON_HOLD || d.owner_id) {
        rc = cf_error_set(err, CF_ERR_POLICY,
                          "device %s is %s (owner %s): only a device on hold can be claimed;"
                          " use device transfer to change its owner",
                          d.id, cf_device_state_name(d.state), d.owner ? d.owner : "the vendor");
        goto fail;
    }
    if (d.blocked) {
        rc = cf_error_set(err, CF_ERR_POLICY, "device %s is blocked", d.id);
        goto fail;
    }
    if ((rc = cf_store_device_set_owner(st, d.id, o->id, CF_DEVICE_CLAIMED, err)) != CF_OK)
        goto fail;
    rc = audit_commit(f, p, "device.claim", d.id, claim_details(o->name, "operator", p, NULL), err);
    cf_device_rec_clear(&d);
    return rc;
fail:
    cf_store_rollback(st);
    cf_device_rec_clear(&d);
    return rc;
}

cf_err cf_fleet_device_claim(cf_fleet *f, const cf_principal *p, const cf_claim_req *req,
                             cf_error *err)
{
    cf_owner_rec o = {0};
    cf_err rc = check_device_id(req->device_id, err);
    if (rc == CF_OK)
        rc = cf_fleet_check_role(p, CF_ROLE_OPERATOR, "claiming a device", err);
    if (rc != CF_OK)
        return rc;
    if (p->owner_id) {
        /* An owner claims for itself, and only with the device's code. */
        if (!req->code)
            return cf_error_set(err, CF_ERR_POLICY, "an owner claims a device with its claim code");
        if ((rc = cf_store_owner_get_id(cf_fleet_store(f), p->owner_id, &o, err)) != CF_OK)
            return rc;
        if (req->owner && strcmp(req->owner, o.name) != 0) {
            cf_owner_rec_clear(&o);
            return cf_error_set(err, CF_ERR_POLICY, "an owner can claim devices only for itself");
        }
    } else {
        if (!req->owner)
            return cf_error_set(err, CF_ERR_INVALID, "claim: which owner?");
        if ((rc = owner_by_name(f, req->owner, &o, err)) != CF_OK)
            return rc;
    }
    rc = req->code ? claim_by_code(f, p, req, &o, err) : claim_by_operator(f, p, req, &o, err);
    cf_owner_rec_clear(&o);
    return rc;
}

cf_err cf_fleet_device_claim_batch(cf_fleet *f, const cf_principal *p, const char *batch,
                                   const char *owner, int64_t *claimed, cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_owner_rec o = {0};
    char **ids = NULL;
    size_t n = 0;
    int64_t total = 0;
    cf_err rc = cf_fleet_check_vendor(p, CF_ROLE_OPERATOR, "claiming a batch", err);
    if (rc == CF_OK)
        rc = owner_by_name(f, owner, &o, err);
    if (rc != CF_OK)
        return rc;
    if ((rc = cf_store_begin(st, err)) != CF_OK)
        goto out;
    if ((rc = cf_store_batch_count(st, batch, &total, err)) != CF_OK)
        goto fail;
    if (total == 0) {
        rc = cf_error_set(err, CF_ERR_NOT_FOUND, "batch %s has no devices", batch);
        goto fail;
    }
    if ((rc = cf_store_device_claim_batch(st, batch, o.id, &ids, &n, err)) != CF_OK)
        goto fail;
    for (size_t i = 0; i < n && rc == CF_OK; i++) {
        json_t *det = claim_details(o.name, "operator", p, batch);
        rc = cf_audit_append(st, p->actor, "device.claim", ids[i], det, NULL, err);
        json_decref(det);
    }
    if (rc != CF_OK)
        goto fail;
    if ((rc = cf_store_commit(st, err)) == CF_OK)
        *claimed = (int64_t)n;
    goto out;
fail:
    cf_store_rollback(st);
out:
    cf_store_strings_free(ids, n);
    cf_owner_rec_clear(&o);
    return rc;
}

/* ---- transfer and state ---- */

static json_t *strings_json(char **v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

cf_err cf_fleet_device_transfer(cf_fleet *f, const cf_principal *p, const char *device_id,
                                const char *owner, int64_t *revoked, cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_owner_rec o = {0};
    cf_device_rec d = {0};
    char **serials = NULL;
    size_t n = 0;
    cf_err rc = check_device_id(device_id, err);
    if (rc == CF_OK)
        rc = cf_fleet_check_role(p, CF_ROLE_ADMIN, "transferring a device", err);
    if (rc == CF_OK)
        rc = owner_by_name(f, owner, &o, err);
    if (rc != CF_OK)
        return rc;
    if ((rc = cf_store_begin(st, err)) != CF_OK)
        goto out;
    if ((rc = device_for(f, p, device_id, 1, &d, err)) != CF_OK)
        goto fail;
    if (d.state == CF_DEVICE_DECOMMISSIONED) {
        rc = cf_error_set(err, CF_ERR_POLICY, "device %s is decommissioned", device_id);
        goto fail;
    }
    if (d.state == CF_DEVICE_ON_HOLD && !d.owner_id) {
        rc = cf_error_set(err, CF_ERR_POLICY,
                          "device %s is on hold with the vendor: claim it instead", device_id);
        goto fail;
    }
    if (d.owner_id == o.id) {
        rc =
            cf_error_set(err, CF_ERR_POLICY, "device %s is already owned by %s", device_id, o.name);
        goto fail;
    }
    /* What the previous ownership issued must not outlive it. Certificates issued before
     * certificates.owner_id was recorded (NULL) count as the previous owner's. */
    if ((rc = cf_store_cert_revoke_device(st, device_id, 0, d.owner_id,
                                          CF_REASON_AFFILIATION_CHANGED, cf_time_now_us(), &serials,
                                          &n, err)) != CF_OK ||
        (rc = cf_fleet_revocations_publish(st, (const char *const *)serials, n, "device.transfer",
                                           device_id, err)) != CF_OK ||
        (rc = cf_store_device_set_owner(st, device_id, o.id, CF_DEVICE_CLAIMED, err)) != CF_OK)
        goto fail;
    /* Groups are the previous owner's segments of its fleet: they do not go with the sale. */
    if (d.grp && (rc = cf_store_device_set_group(st, device_id, NULL, err)) != CF_OK)
        goto fail;
    json_t *det = json_pack("{s:s, s:o, s:s, s:I, s:o, s:o, s:s}", "owner", o.name, "previous",
                            d.owner ? json_string(d.owner) : json_null(), "previous_state",
                            cf_device_state_name(d.state), "revoked", (json_int_t)n, "serials",
                            strings_json(serials, n), "previous_group",
                            d.grp ? json_string(d.grp) : json_null(), "by", p->actor);
    if ((rc = audit_commit(f, p, "device.transfer", device_id, det, err)) == CF_OK && revoked)
        *revoked = (int64_t)n;
    goto out;
fail:
    cf_store_rollback(st);
out:
    cf_store_strings_free(serials, n);
    cf_device_rec_clear(&d);
    cf_owner_rec_clear(&o);
    return rc;
}

/* Whether from -> to is a transition this function offers (DESIGN.md: on_hold -> claimed
 * -> active <-> suspended; any -> revoked; any -> decommissioned, final). */
static const char *transition_refusal(cf_device_state from, cf_device_state to)
{
    if (from == CF_DEVICE_DECOMMISSIONED)
        return "decommissioned is final";
    if (to == CF_DEVICE_SUSPENDED && from != CF_DEVICE_ACTIVE)
        return "only an active device can be suspended";
    if (to == CF_DEVICE_ACTIVE && from != CF_DEVICE_SUSPENDED)
        return "only a suspended device can be resumed (a device becomes active by enrolling)";
    return NULL;
}

cf_err cf_fleet_device_set_state(cf_fleet *f, const cf_principal *p, const char *device_id,
                                 cf_device_state to, int *changed, int64_t *revoked, cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_device_rec d = {0};
    char **serials = NULL;
    size_t n = 0;
    const char *action = to == CF_DEVICE_SUSPENDED        ? "device.suspend"
                         : to == CF_DEVICE_ACTIVE         ? "device.resume"
                         : to == CF_DEVICE_DECOMMISSIONED ? "device.decommission"
                                                          : NULL;
    *changed = 0;
    if (revoked)
        *revoked = 0;
    if (!action)
        return cf_error_set(err, CF_ERR_INVALID, "state %s cannot be set directly",
                            cf_device_state_name(to));
    cf_err rc = check_device_id(device_id, err);
    if (rc == CF_OK)
        rc = cf_fleet_check_role(
            p, to == CF_DEVICE_DECOMMISSIONED ? CF_ROLE_ADMIN : CF_ROLE_OPERATOR, action + 7, err);
    if (rc != CF_OK)
        return rc;
    if ((rc = cf_store_begin(st, err)) != CF_OK)
        return rc;
    if ((rc = device_for(f, p, device_id, 1, &d, err)) != CF_OK)
        goto fail;
    if (d.state == to) {
        cf_store_rollback(st);
        goto out;
    }
    const char *why = transition_refusal(d.state, to);
    if (why) {
        rc = cf_error_set(err, CF_ERR_POLICY, "device %s is %s: cannot make it %s (%s)", device_id,
                          cf_device_state_name(d.state), cf_device_state_name(to), why);
        goto fail;
    }
    if (to == CF_DEVICE_DECOMMISSIONED &&
        ((rc = cf_store_cert_revoke_device(st, device_id, 1, 0, CF_REASON_CESSATION_OF_OPERATION,
                                           cf_time_now_us(), &serials, &n, err)) != CF_OK ||
         (rc = cf_fleet_revocations_publish(st, (const char *const *)serials, n,
                                            "device.decommission", device_id, err)) != CF_OK))
        goto fail;
    if ((rc = cf_store_device_set_state(st, device_id, to, err)) != CF_OK)
        goto fail;
    json_t *det = json_pack("{s:s, s:s}", "from", cf_device_state_name(d.state), "to",
                            cf_device_state_name(to));
    if (to == CF_DEVICE_DECOMMISSIONED) {
        json_object_set_new(det, "revoked", json_integer((json_int_t)n));
        json_object_set_new(det, "serials", strings_json(serials, n));
    }
    if ((rc = audit_commit(f, p, action, device_id, det, err)) == CF_OK) {
        *changed = 1;
        if (revoked)
            *revoked = (int64_t)n;
    }
    goto out;
fail:
    cf_store_rollback(st);
out:
    cf_store_strings_free(serials, n);
    cf_device_rec_clear(&d);
    return rc;
}

cf_err cf_fleet_device_set_group(cf_fleet *f, const cf_principal *p, const char *device_id,
                                 const char *grp, cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_device_rec d = {0};
    cf_err rc = check_device_id(device_id, err);
    if (rc == CF_OK)
        rc = cf_fleet_check_role(p, CF_ROLE_OPERATOR, "grouping devices", err);
    if (rc != CF_OK)
        return rc;
    if (grp && !cf_fleet_name_valid(grp))
        return cf_error_set(err, CF_ERR_INVALID,
                            "group name \"%.64s\": use 1-64 characters of A-Z a-z 0-9 . _ : -",
                            grp);
    if ((rc = cf_store_begin(st, err)) != CF_OK)
        return rc;
    if ((rc = device_for(f, p, device_id, 1, &d, err)) != CF_OK)
        goto fail;
    if ((!grp && !d.grp) || (grp && d.grp && strcmp(grp, d.grp) == 0)) {
        cf_store_rollback(st); /* already so */
        goto out;
    }
    if ((rc = cf_store_device_set_group(st, device_id, grp, err)) != CF_OK)
        goto fail;
    json_t *det = json_pack("{s:o, s:o}", "group", grp ? json_string(grp) : json_null(), "previous",
                            d.grp ? json_string(d.grp) : json_null());
    rc = audit_commit(f, p, "device.group", device_id, det, err);
    goto out;
fail:
    cf_store_rollback(st);
out:
    cf_device_rec_clear(&d);
    return rc;
}

/* ---- queries ---- */

static json_t *opt_string(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *time_json(int64_t us)
{
    char buf[CF_TIME_STR_MAX];
    return us ? json_string(cf_time_format(us, buf)) : json_null();
}

json_t *cf_fleet_device_json(const cf_device_rec *d)
{
    json_t *j = json_object();
    json_object_set_new(j, "id", json_string(d->id));
    json_object_set_new(j, "state", json_string(cf_device_state_name(d->state)));
    json_object_set_new(j, "owner", opt_string(d->owner));
    json_object_set_new(j, "manufacturer", opt_string(d->manufacturer));
    json_object_set_new(j, "batch", opt_string(d->batch));
    json_object_set_new(j, "group", opt_string(d->grp));
    json_object_set_new(j, "model", opt_string(d->model));
    json_object_set_new(j, "part_number", opt_string(d->part_number));
    json_object_set_new(j, "claim_code", json_boolean(d->has_claim_hash));
    json_object_set_new(j, "blocked", json_boolean(d->blocked));
    json_object_set_new(j, "created", time_json(d->created_us));
    json_object_set_new(j, "updated", time_json(d->updated_us));
    json_object_set_new(j, "provisioned", time_json(d->provisioned_us));
    return j;
}

struct list_state {
    cf_device_cb cb;
    void *arg;
    int64_t limit, seen;
    char *next;
    int more;
};

static int list_one(void *arg, const cf_device_rec *d)
{
    struct list_state *ls = arg;
    if (ls->limit && ls->seen == ls->limit) {
        ls->more = 1; /* the row after the page: there is a next page */
        return 1;
    }
    ls->seen++;
    snprintf(ls->next, CF_DEVICE_ID_MAX, "%s", d->id);
    return ls->cb(ls->arg, d);
}

cf_err cf_fleet_device_list(cf_fleet *f, const cf_principal *p, const cf_device_query *q,
                            cf_device_cb cb, void *arg, char next[CF_DEVICE_ID_MAX], cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_device_filter flt = {
        .state = q->state, .batch = q->batch, .grp = q->grp, .model = q->model, .after = q->after};
    cf_err rc = CF_OK;
    next[0] = '\0';
    if (q->limit < 0)
        return cf_error_set(err, CF_ERR_INVALID, "limit must not be negative");
    if (p->owner_id) {
        flt.by_owner = 1;
        flt.owner_id = p->owner_id;
        if (q->owner) {
            /* Another owner's devices are simply not there for this caller; the name is not
             * even looked up, so the answer says nothing about which owners exist. */
            cf_owner_rec me = {0};
            if ((rc = cf_store_owner_get_id(st, p->owner_id, &me, err)) != CF_OK)
                return rc;
            int other = strcmp(q->owner, me.name) != 0;
            cf_owner_rec_clear(&me);
            if (other)
                return CF_OK;
        }
    } else if (q->owner) {
        flt.by_owner = 1;
        if (strcmp(q->owner, "-") != 0) {
            cf_owner_rec o = {0};
            if ((rc = owner_by_name(f, q->owner, &o, err)) != CF_OK)
                return rc;
            flt.owner_id = o.id;
            cf_owner_rec_clear(&o);
        }
    }
    if (q->manufacturer) {
        cf_manufacturer_rec m = {0};
        if ((rc = cf_store_manufacturer_get(st, q->manufacturer, &m, err)) != CF_OK)
            return rc;
        flt.manufacturer_id = m.id;
        cf_manufacturer_rec_clear(&m);
    }
    struct list_state ls = {.cb = cb, .arg = arg, .limit = q->limit, .next = next};
    flt.limit = q->limit ? q->limit + 1 : 0;
    if ((rc = cf_store_device_scan(st, &flt, list_one, &ls, err)) != CF_OK)
        return rc;
    if (!ls.more)
        next[0] = '\0';
    return CF_OK;
}

struct history_state {
    const char *me; /* the scoped owner's name, or NULL for the vendor */
    json_t *records;
    int64_t since_us; /* when the current ownership began (scoped callers) */
};

static int history_one(void *arg, const cf_audit_rec *r)
{
    struct history_state *hs = arg;
    json_t *details = json_loads(r->details, 0, NULL);
    if (!details)
        details = json_string(r->details);
    if (hs->me) {
        const char *owner = json_string_value(json_object_get(details, "owner"));
        int mine = owner && strcmp(owner, hs->me) == 0;
        if (mine &&
            (strcmp(r->action, "device.claim") == 0 || strcmp(r->action, "device.transfer") == 0)) {
            /* The caller's ownership starts here: what came before, and what this record
             * says of it (the previous owner, group, certificates), is someone else's. */
            json_array_clear(hs->records);
            hs->since_us = r->time_us;
            json_t *own = json_pack("{s:s}", "owner", owner);
            json_decref(details);
            details = own;
        } else if (strcmp(r->action, "device.claim_failed") == 0 && !mine) {
            json_decref(details);
            return 0;
        }
    }
    char ts[CF_TIME_STR_MAX];
    json_array_append_new(hs->records,
                          json_pack("{s:I, s:s, s:s, s:s, s:o}", "seq", (json_int_t)r->seq, "time",
                                    cf_time_format(r->time_us, ts), "actor", r->actor, "action",
                                    r->action, "details", details));
    return 0;
}

static json_t *cert_json(const cf_cert_rec *c)
{
    json_t *j = json_object();
    json_object_set_new(j, "serial", json_string(c->serial));
    json_object_set_new(j, "status",
                        json_string(c->status == CF_CERT_REVOKED ? "revoked" : "good"));
    json_object_set_new(j, "reason", c->reason >= 0 ? json_integer(c->reason) : json_null());
    json_object_set_new(j, "revoked", time_json(c->revoked_us));
    json_object_set_new(j, "issued", time_json(c->issued_us));
    json_object_set_new(j, "not_before", time_json(c->not_before * 1000000));
    json_object_set_new(j, "not_after", time_json(c->not_after * 1000000));
    json_object_set_new(j, "subject", json_string(c->subject ? c->subject : ""));
    return j;
}

cf_err cf_fleet_device_show(cf_fleet *f, const cf_principal *p, const char *device_id, json_t **out,
                            cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_device_rec d = {0};
    cf_device_cert *certs = NULL;
    size_t ncerts = 0;
    struct history_state hs = {.records = json_array()};
    json_t *j = NULL;
    cf_err rc = check_device_id(device_id, err);
    if (rc == CF_OK)
        rc = device_for(f, p, device_id, 0, &d, err);
    if (rc != CF_OK)
        goto out;
    if (p->owner_id)
        hs.me = d.owner;
    cf_audit_filter af = {.object = device_id};
    if ((rc = cf_store_audit_scan(st, &af, history_one, &hs, err)) != CF_OK ||
        (rc = cf_store_device_certs(st, device_id, &certs, &ncerts, err)) != CF_OK)
        goto out;
    j = cf_fleet_device_json(&d);
    json_t *ca = json_array();
    for (size_t i = 0; i < ncerts; i++) {
        const cf_device_cert *c = &certs[i];
        /* A scoped caller sees what was issued under its own ownership. */
        if (p->owner_id && c->owner_id != p->owner_id &&
            !(c->owner_id == 0 && c->cert.issued_us >= hs.since_us))
            continue;
        json_array_append_new(ca, cert_json(&c->cert));
    }
    json_object_set_new(j, "certificates", ca);
    json_object_set_new(j, "history", hs.records);
    hs.records = NULL;
    *out = j;
out:
    for (size_t i = 0; i < ncerts; i++)
        cf_cert_rec_clear(&certs[i].cert);
    free(certs);
    json_decref(hs.records);
    cf_device_rec_clear(&d);
    return rc;
}
