/* ops_fleet.c - the operations on the fleet as a whole: status, CAs, owners and their
 * tokens, the claim limits, the audit log and its verification. */
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "audit/audit.h"
#include "core/util.h"

/* ---- status and CAs ---- */

static cf_err op_status(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    cf_fleet_status s;
    cf_err rc = cf_fleet_get_status(x->fleet, &s, err);
    if (rc != CF_OK)
        return rc;
    json_t *dev = json_object();
    int64_t total = 0;
    for (int i = 0; i < CF_DEVICE_STATE_COUNT; i++) {
        json_object_set_new(dev, cf_device_state_name((cf_device_state)i),
                            json_integer(s.devices[i]));
        total += s.devices[i];
    }
    json_object_set_new(dev, "total", json_integer(total));
    *result = json_pack("{s:s, s:s, s:I, s:I, s:o, s:{s:I, s:I}, s:{s:I}}", "store",
                        cf_store_describe(cf_fleet_store(x->fleet)), "org", s.org, "schema_version",
                        (json_int_t)s.schema_version, "cas", (json_int_t)s.ca_count, "devices", dev,
                        "certificates", "total", (json_int_t)s.certs_total, "valid",
                        (json_int_t)s.certs_valid, "audit", "records", (json_int_t)s.audit_seq);
    return CF_OK;
}

static void time_s(int64_t s, char *buf)
{
    cf_time_format(s * 1000000, buf);
    buf[19] = 'Z'; /* whole seconds are enough here */
    buf[20] = '\0';
}

static cf_err op_ca_list(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    cf_ca_rec *cas = NULL;
    size_t n = 0;
    cf_err rc = cf_store_ca_list(cf_fleet_store(x->fleet), &cas, &n, err);
    if (rc != CF_OK)
        return rc;
    *result = json_array();
    for (size_t i = 0; i < n; i++) {
        char na[CF_TIME_STR_MAX], nb[CF_TIME_STR_MAX];
        time_s(cas[i].not_after, na);
        time_s(cas[i].not_before, nb);
        json_array_append_new(*result,
                              json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "id",
                                        (json_int_t)cas[i].id, "name", cas[i].name, "role",
                                        cf_ca_role_name(cas[i].role), "status",
                                        cf_ca_status_name(cas[i].status), "subject", cas[i].subject,
                                        "not_before", nb, "not_after", na, "key",
                                        cf_key_ref_is_pkcs11(cas[i].key_ref) ? "pkcs11" : "file"));
        cf_ca_rec_clear(&cas[i]);
    }
    free(cas);
    return CF_OK;
}

static cf_err op_ca_export(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    char *pem = NULL;
    size_t len = 0;
    cf_err rc = cf_fleet_chain_pem(x->fleet, &pem, &len, err);
    if (rc != CF_OK)
        return rc;
    *result = json_pack("{s:s%}", "pem", pem, len);
    free(pem);
    return CF_OK;
}

/* ---- owners and tokens ---- */

static cf_err op_owner_add(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    const char *name;
    int64_t id = 0;
    cf_err rc = cf_api_param_str(params, "name", 1, &name, err);
    if (rc == CF_OK)
        rc = cf_fleet_owner_add(x->fleet, x->p, name, &id, err);
    if (rc == CF_OK)
        *result = json_pack("{s:I, s:s}", "id", (json_int_t)id, "name", name);
    return rc;
}

static cf_err op_owner_list(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    cf_owner_rec *recs = NULL;
    size_t n = 0;
    cf_err rc = cf_fleet_owner_list(x->fleet, x->p, &recs, &n, err);
    if (rc != CF_OK)
        return rc;
    *result = json_array();
    for (size_t i = 0; i < n; i++) {
        char ts[CF_TIME_STR_MAX];
        cf_time_format(recs[i].created_us, ts);
        json_array_append_new(*result,
                              json_pack("{s:I, s:s, s:I, s:s}", "id", (json_int_t)recs[i].id,
                                        "name", recs[i].name, "devices",
                                        (json_int_t)recs[i].devices, "created", ts));
        cf_owner_rec_clear(&recs[i]);
    }
    free(recs);
    return CF_OK;
}

static cf_err op_token_create(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    const char *owner, *role_name, *label;
    char token[CF_TOKEN_STR_MAX];
    int64_t id = 0;
    cf_err rc;
    if ((rc = cf_api_param_str(params, "owner", 1, &owner, err)) != CF_OK ||
        (rc = cf_api_param_str(params, "role", 1, &role_name, err)) != CF_OK ||
        (rc = cf_api_param_str(params, "label", 0, &label, err)) != CF_OK)
        return rc;
    int role = cf_role_parse(role_name);
    if (role < 0)
        return cf_error_set(err, CF_ERR_INVALID, "role %.40s: expected admin, operator or auditor",
                            role_name);
    if ((rc = cf_fleet_token_create(x->fleet, x->p, owner, (cf_role)role, label, token, &id,
                                    err)) != CF_OK)
        return rc;
    *result = json_pack("{s:I, s:s, s:s, s:s}", "id", (json_int_t)id, "owner", owner, "role",
                        cf_role_name((cf_role)role), "token", token);
    OPENSSL_cleanse(token, sizeof token);
    return CF_OK;
}

static cf_err op_token_list(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    const char *owner;
    cf_token_rec *recs = NULL;
    size_t n = 0;
    cf_err rc = cf_api_param_str(params, "owner", 1, &owner, err);
    if (rc == CF_OK)
        rc = cf_fleet_token_list(x->fleet, x->p, owner, &recs, &n, err);
    if (rc != CF_OK)
        return rc;
    *result = json_array();
    for (size_t i = 0; i < n; i++) {
        char cr[CF_TIME_STR_MAX], rv[CF_TIME_STR_MAX];
        cf_time_format(recs[i].created_us, cr);
        if (recs[i].revoked_us)
            cf_time_format(recs[i].revoked_us, rv);
        json_array_append_new(
            *result, json_pack("{s:I, s:s, s:o, s:s, s:o}", "id", (json_int_t)recs[i].id, "role",
                               cf_role_name(recs[i].role), "label",
                               recs[i].label ? json_string(recs[i].label) : json_null(), "created",
                               cr, "revoked", recs[i].revoked_us ? json_string(rv) : json_null()));
        cf_token_rec_clear(&recs[i]);
    }
    free(recs);
    return CF_OK;
}

static cf_err op_token_revoke(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    const char *owner;
    long long id;
    cf_err rc;
    if ((rc = cf_api_param_str(params, "owner", 1, &owner, err)) != CF_OK ||
        (rc = cf_api_param_int(params, "id", 1, INT64_MAX, 0, &id, err)) != CF_OK)
        return rc;
    if (!id)
        return cf_error_set(err, CF_ERR_INVALID, "parameter id is required");
    if ((rc = cf_fleet_token_revoke(x->fleet, x->p, owner, id, err)) != CF_OK)
        return rc;
    *result = json_pack("{s:I, s:s, s:b}", "id", (json_int_t)id, "owner", owner, "revoked", 1);
    return CF_OK;
}

/* ---- claim limits ---- */

static json_t *limits_json(const cf_claim_limits *l)
{
    return json_pack("{s:I, s:I, s:I, s:I}", "device_failures", (json_int_t)l->device_max,
                     "device_window_s", (json_int_t)l->device_window_s, "owner_failures",
                     (json_int_t)l->owner_max, "owner_window_s", (json_int_t)l->owner_window_s);
}

static cf_err op_limits_get(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    cf_claim_limits l;
    cf_err rc = cf_fleet_claim_limits_get(x->fleet, &l, err);
    if (rc == CF_OK)
        *result = limits_json(&l);
    return rc;
}

/* Sets the limits given; the others keep their value. */
static cf_err op_limits_set(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    static const struct {
        const char *name;
        size_t off;
    } fields[] = {
        {"device_failures", offsetof(cf_claim_limits, device_max)},
        {"device_window_s", offsetof(cf_claim_limits, device_window_s)},
        {"owner_failures", offsetof(cf_claim_limits, owner_max)},
        {"owner_window_s", offsetof(cf_claim_limits, owner_window_s)},
    };
    cf_claim_limits l;
    cf_err rc = cf_fleet_claim_limits_get(x->fleet, &l, err);
    for (size_t i = 0; rc == CF_OK && i < sizeof fields / sizeof fields[0]; i++) {
        int64_t *field = (int64_t *)((char *)&l + fields[i].off);
        long long v;
        rc = cf_api_param_int(params, fields[i].name, 1, 100000000, *field, &v, err);
        *field = v;
    }
    if (rc == CF_OK)
        rc = cf_fleet_claim_limits_set(x->fleet, x->p, &l, err);
    if (rc == CF_OK)
        *result = limits_json(&l);
    return rc;
}

/* ---- audit ---- */

/* Accepts RFC 3339 UTC ("2026-11-25T20:00:00Z") or a date ("2026-11-25"). */
static cf_err param_time(json_t *params, const char *name, int64_t *us, cf_error *err)
{
    const char *s;
    struct tm tm = {0};
    cf_err rc = cf_api_param_str(params, name, 0, &s, err);
    if (rc != CF_OK || !s)
        return rc;
    const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end) {
        memset(&tm, 0, sizeof tm);
        end = strptime(s, "%Y-%m-%d", &tm);
    }
    if (!end || (*end && strcmp(end, "Z") != 0))
        return cf_error_set(err, CF_ERR_INVALID,
                            "parameter %s: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ", name);
    *us = (int64_t)timegm(&tm) * 1000000;
    return CF_OK;
}

static int add_record(void *arg, const cf_audit_rec *r)
{
    char ts[CF_TIME_STR_MAX], hash[2 * CF_HASH_LEN + 1];
    cf_time_format(r->time_us, ts);
    cf_hex_encode(r->hash, CF_HASH_LEN, 0, hash);
    json_t *details = json_loads(r->details, 0, NULL);
    json_array_append_new(
        arg, json_pack("{s:I, s:s, s:s, s:s, s:s, s:o, s:s}", "seq", (json_int_t)r->seq, "time", ts,
                       "actor", r->actor, "action", r->action, "object", r->object, "details",
                       details ? details : json_string(r->details), "hash", hash));
    return 0;
}

#define AUDIT_PAGE_MAX 10000

static cf_err op_audit_log(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    cf_audit_filter f = {0};
    long long after, limit;
    cf_err rc;
    if ((rc = cf_api_param_int(params, "after", 0, INT64_MAX, 0, &after, err)) != CF_OK ||
        (rc = cf_api_param_int(params, "limit", 1, AUDIT_PAGE_MAX, AUDIT_PAGE_MAX, &limit, err)) !=
            CF_OK ||
        (rc = cf_api_param_str(params, "actor", 0, &f.actor, err)) != CF_OK ||
        (rc = cf_api_param_str(params, "action", 0, &f.action, err)) != CF_OK ||
        (rc = cf_api_param_str(params, "object", 0, &f.object, err)) != CF_OK ||
        (rc = param_time(params, "from", &f.since_us, err)) != CF_OK ||
        (rc = param_time(params, "until", &f.until_us, err)) != CF_OK)
        return rc;
    f.since_seq = after;
    f.limit = limit;
    json_t *arr = json_array();
    if ((rc = cf_store_audit_scan(cf_fleet_store(x->fleet), &f, add_record, arr, err)) != CF_OK) {
        json_decref(arr);
        return rc;
    }
    /* A full page may have more after it: "next" is the seq to pass as after. */
    json_t *next = json_null();
    if (json_array_size(arr) == (size_t)limit)
        next = json_copy(json_object_get(json_array_get(arr, (size_t)limit - 1), "seq"));
    *result = json_pack("{s:o, s:o}", "records", arr, "next", next);
    return CF_OK;
}

static cf_err op_audit_verify(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    cf_audit_verify_result res;
    cf_error why = {0};
    cf_err rc = cf_audit_verify(cf_fleet_store(x->fleet), &res, &why);
    if (rc != CF_OK && rc != CF_ERR_TAMPERED) {
        *err = why;
        return rc;
    }
    /* A broken chain is an answer, not a failure of the call: "error" says what broke. */
    *result = json_pack("{s:b, s:I, s:I, s:I, s:s, s:o}", "ok", rc == CF_OK, "records",
                        (json_int_t)res.records, "head", (json_int_t)res.head_seq, "first_bad",
                        (json_int_t)res.bad_seq, "reason", res.reason, "error",
                        rc == CF_OK ? json_null() : json_string(why.msg));
    return CF_OK;
}

#define A CF_ROLE_ADMIN
#define O CF_ROLE_OPERATOR
#define R CF_ROLE_AUDITOR
#define V CF_API_VENDOR

const cf_api_op cf_api_ops_fleet[] = {
    {"status", CF_API_GET, "/api/v1/status", R, V, op_status},
    {"ca list", CF_API_GET, "/api/v1/cas", R, 0, op_ca_list},
    {"ca export", CF_API_GET, "/api/v1/cas/chain", R, 0, op_ca_export},
    {"owner add", CF_API_POST, "/api/v1/owners", A, V, op_owner_add},
    {"owner list", CF_API_GET, "/api/v1/owners", R, 0, op_owner_list},
    {"owner token", CF_API_POST, "/api/v1/owners/{owner}/tokens", A, 0, op_token_create},
    {"owner tokens", CF_API_GET, "/api/v1/owners/{owner}/tokens", A, 0, op_token_list},
    {"owner token-revoke", CF_API_DELETE, "/api/v1/owners/{owner}/tokens/{id}", A, 0,
     op_token_revoke},
    {"claim-limits get", CF_API_GET, "/api/v1/settings/claim-limits", R, 0, op_limits_get},
    {"claim-limits set", CF_API_PUT, "/api/v1/settings/claim-limits", A, V, op_limits_set},
    {"audit log", CF_API_GET, "/api/v1/audit", R, V, op_audit_log},
    {"audit verify", CF_API_GET, "/api/v1/audit/verify", R, V, op_audit_verify},
    {NULL, 0, NULL, 0, 0, NULL},
};
