/* ops_revoke.c - the operations of revocation: revoke (by serial, device, batch, group,
 * owner or CA), release from certificateHold, block a birth certificate, readmit a device,
 * CRLs, and the change feed. Who may revoke what is the fleet's business (revoke.h). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "core/util.h"
#include "fleet/revoke.h"
#include <openssl/evp.h>

/* An RFC 3339 UTC time ("2026-11-20T08:00:00Z") or seconds since the epoch. */
static cf_err param_time(json_t *params, const char *name, int64_t *out, cf_error *err)
{
    json_t *v = json_object_get(params, name);
    *out = 0;
    if (!v || json_is_null(v))
        return CF_OK;
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return CF_OK;
    }
    const char *s = json_string_value(v);
    struct tm tm = {0};
    char *end = NULL;
    if (s && *s && (end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm)) != NULL) {
        if (*end == '.') /* fractions of a second: dropped */
            while (*++end >= '0' && *end <= '9')
                ;
        if (strcmp(end, "Z") == 0) {
            *out = (int64_t)timegm(&tm);
            return CF_OK;
        }
    }
    if (s) {
        char *e;
        long long n = strtoll(s, &e, 10);
        if (*s && !*e && n > 0) {
            *out = n;
            return CF_OK;
        }
    }
    return cf_error_set(err, CF_ERR_INVALID,
                        "%s: expected a UTC time like 2026-11-20T08:00:00Z or seconds since the"
                        " epoch",
                        name);
}

static cf_err param_reason(json_t *params, int *out, cf_error *err)
{
    const char *name;
    cf_err rc = cf_api_param_str(params, "reason", 0, &name, err);
    *out = -1;
    if (rc != CF_OK || !name)
        return rc;
    if ((*out = cf_fleet_reason_parse(name, err)) < 0)
        return CF_ERR_INVALID;
    return CF_OK;
}

static json_t *result_json(const cf_revoke_result *res)
{
    return json_pack("{s:I, s:I, s:s, s:I}", "revoked", (json_int_t)res->revoked, "already",
                     (json_int_t)res->already, "reason", cf_crl_reason_name(res->reason), "seq",
                     (json_int_t)res->seq);
}

static const char *const scopes[CF_SEL_COUNT] = {"serial", "device", "batch",
                                                 "group",  "owner",  "ca"};

static cf_err op_revoke(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    cf_revoke_req req = {.reason = -1};
    cf_revoke_result res;
    int given = 0;
    cf_err rc;
    for (int k = 0; k < CF_SEL_COUNT; k++) {
        const char *v;
        if ((rc = cf_api_param_str(params, scopes[k], 0, &v, err)) != CF_OK)
            return rc;
        if (v) {
            req.kind = (cf_cert_sel_kind)k;
            req.target = v;
            given++;
        }
    }
    if (given != 1)
        return cf_error_set(err, CF_ERR_INVALID,
                            "name exactly one of serial, device, batch, group, owner or ca (%d"
                            " given)",
                            given);
    if ((rc = param_reason(params, &req.reason, err)) != CF_OK ||
        (rc = param_time(params, "invalidity", &req.invalidity_s, err)) != CF_OK)
        return rc;
    req.progress = x->progress;
    req.progress_arg = x->progress_arg;
    if ((rc = cf_fleet_revoke(x->fleet, x->p, &req, &res, err)) != CF_OK)
        return rc;
    *result = result_json(&res);
    json_object_set_new(*result, "scope", json_string(scopes[req.kind]));
    json_object_set_new(*result, "target", json_string(req.target));
    return CF_OK;
}

static cf_err op_release(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    const char *serial;
    cf_err rc = cf_api_param_str(params, "serial", 1, &serial, err);
    if (rc == CF_OK && (rc = cf_fleet_release(x->fleet, x->p, serial, err)) == CF_OK)
        *result = json_pack("{s:s, s:s}", "serial", serial, "status", "good");
    return rc;
}

static cf_err op_block(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    const char *id;
    int reason;
    cf_revoke_result res;
    cf_err rc;
    if ((rc = cf_api_param_str(params, "id", 1, &id, err)) != CF_OK ||
        (rc = param_reason(params, &reason, err)) != CF_OK ||
        (rc = cf_fleet_block_birth(x->fleet, x->p, id, reason, &res, err)) != CF_OK)
        return rc;
    *result = result_json(&res);
    json_object_set_new(*result, "device", json_string(id));
    json_object_set_new(*result, "birth", json_string("blocked"));
    return CF_OK;
}

static cf_err op_readmit(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    const char *id;
    cf_err rc = cf_api_param_str(params, "id", 1, &id, err);
    if (rc == CF_OK && (rc = cf_fleet_device_readmit(x->fleet, x->p, id, err)) == CF_OK)
        *result = json_pack("{s:s, s:s}", "device", id, "readmitted", "yes");
    return rc;
}

static cf_err op_crl(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    const char *ca;
    int delta;
    long long shard;
    unsigned char *der = NULL;
    size_t len = 0;
    cf_crl_info info;
    char t1[CF_TIME_STR_MAX], t2[CF_TIME_STR_MAX];
    cf_err rc;
    if ((rc = cf_api_param_str(params, "ca", 0, &ca, err)) != CF_OK ||
        (rc = cf_api_param_bool(params, "delta", 0, &delta, err)) != CF_OK ||
        (rc = cf_api_param_int(params, "shard", 0, INT64_MAX, 0, &shard, err)) != CF_OK ||
        (rc = cf_fleet_crl(x->fleet, ca, shard, delta, &der, &len, &info, err)) != CF_OK)
        return rc;
    /* standard base64 (RFC 4648 4), one line */
    unsigned char *b64 = malloc(4 * ((len + 2) / 3) + 1);
    if (b64)
        EVP_EncodeBlock(b64, der, (int)len);
    OPENSSL_free(der);
    if (!b64)
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    *result = json_pack("{s:s, s:s, s:I, s:I, s:I, s:s, s:s, s:s}", "ca", info.ca_name, "kind",
                        delta ? "delta" : "full", "number", (json_int_t)info.number, "entries",
                        (json_int_t)info.entries, "seq", (json_int_t)info.seq, "this_update",
                        cf_time_format(info.this_update * 1000000, t1), "next_update",
                        cf_time_format(info.next_update * 1000000, t2), "der", (char *)b64);
    if (delta)
        json_object_set_new(*result, "base", json_integer(info.base_number));
    free(b64);
    return CF_OK;
}

static cf_err op_changes(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    long long since, limit;
    cf_change_rec *ch = NULL;
    size_t n = 0;
    int64_t last = 0;
    char when[CF_TIME_STR_MAX];
    cf_store *st = cf_fleet_store(x->fleet);
    cf_err rc;
    if ((rc = cf_api_param_int(params, "since", 0, INT64_MAX, 0, &since, err)) != CF_OK ||
        (rc = cf_api_param_int(params, "limit", 1, 10000, 1000, &limit, err)) != CF_OK ||
        (rc = cf_store_change_last(st, &last, err)) != CF_OK ||
        (rc = cf_store_changes_list(st, since, limit, &ch, &n, err)) != CF_OK)
        return rc;
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_error_t jerr;
        json_t *d = json_loads(ch[i].details, 0, &jerr);
        json_array_append_new(
            arr, json_pack("{s:I, s:s, s:s, s:o, s:o, s:o, s:I, s:o}", "seq", (json_int_t)ch[i].seq,
                           "time", cf_time_format(ch[i].time_us, when), "kind", ch[i].kind, "ca",
                           ch[i].ca_id ? json_integer(ch[i].ca_id) : json_null(), "serial",
                           ch[i].serial ? json_string(ch[i].serial) : json_null(), "device",
                           ch[i].device_id ? json_string(ch[i].device_id) : json_null(), "count",
                           (json_int_t)ch[i].count, "details", d ? d : json_object()));
        cf_change_rec_clear(&ch[i]);
    }
    free(ch);
    int64_t next =
        n ? json_integer_value(json_object_get(json_array_get(arr, n - 1), "seq")) : since;
    *result = json_pack("{s:o, s:I, s:I}", "changes", arr, "next", (json_int_t)next, "last",
                        (json_int_t)last);
    return CF_OK;
}

static cf_err op_shards_get(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    int64_t size;
    (void)params;
    cf_err rc = cf_fleet_crl_shard_size_get(x->fleet, &size, err);
    if (rc == CF_OK)
        *result = json_pack("{s:I}", "size", (json_int_t)size);
    return rc;
}

static cf_err op_shards_set(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    long long size;
    cf_err rc = cf_api_param_int(params, "size", 0, 100000000, -1, &size, err);
    if (rc == CF_OK && size < 0)
        rc = cf_error_set(err, CF_ERR_INVALID, "parameter size is required");
    if (rc == CF_OK && (rc = cf_fleet_crl_shard_size_set(x->fleet, x->p, size, err)) == CF_OK)
        *result = json_pack("{s:I}", "size", (json_int_t)size);
    return rc;
}

const cf_api_op cf_api_ops_revoke[] = {
    {"revoke", CF_API_POST, "/api/v1/revocations", CF_ROLE_OPERATOR, 0, op_revoke},
    {"release", CF_API_POST, "/api/v1/certificates/{serial}/release", CF_ROLE_OPERATOR, 0,
     op_release},
    {"device block", CF_API_POST, "/api/v1/devices/{id}/block", CF_ROLE_ADMIN, 0, op_block},
    {"device readmit", CF_API_POST, "/api/v1/devices/{id}/readmit", CF_ROLE_ADMIN, 0, op_readmit},
    {"crl", CF_API_GET, "/api/v1/crl", CF_ROLE_AUDITOR, CF_API_VENDOR, op_crl},
    {"changes", CF_API_GET, "/api/v1/changes", CF_ROLE_AUDITOR, CF_API_VENDOR, op_changes},
    {"crl-shards get", CF_API_GET, "/api/v1/settings/crl-shards", CF_ROLE_AUDITOR, CF_API_VENDOR,
     op_shards_get},
    {"crl-shards set", CF_API_PUT, "/api/v1/settings/crl-shards", CF_ROLE_ADMIN, CF_API_VENDOR,
     op_shards_set},
    {NULL, 0, NULL, 0, 0, NULL},
};
