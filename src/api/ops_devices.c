/* ops_devices.c - the operations on devices: list (filtered, paged), show, claim (one, or a
 * batch), transfer, suspend, resume, decommission, groups, and issuing a certificate. Who
 * may see and change which device is the fleet's business (ownership.h): a device of
 * another owner is "not found" there, so it is here. */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/util.h"
#include "pki/jose.h"

#define DEVICE_PAGE_MAX 10000

/* ---- list and show ---- */

static int add_device(void *arg, const cf_device_rec *d)
{
    json_array_append_new(arg, cf_fleet_device_json(d));
    return 0;
}

static cf_err op_device_list(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    cf_device_query q = {.state = -1};
    const char *state;
    char next[CF_DEVICE_ID_MAX];
    long long limit;
    cf_err rc;
    if ((rc = cf_api_param_str(params, "state", 0, &state, err)) != CF_OK ||
        (rc = cf_api_param_str(params, "owner", 0, &q.owner, err)) != CF_OK ||
        (rc = cf_api_param_str(params, "manufacturer", 0, &q.manufacturer, err)) != CF_OK ||
        (rc = cf_api_param_str(params, "batch", 0, &q.batch, err)) != CF_OK ||
        (rc = cf_api_param_str(params, "group", 0, &q.grp, err)) != CF_OK ||
        (rc = cf_api_param_str(params, "model", 0, &q.model, err)) != CF_OK ||
        (rc = cf_api_param_str(params, "after", 0, &q.after, err)) != CF_OK ||
        (rc = cf_api_param_int(params, "limit", 1, DEVICE_PAGE_MAX, DEVICE_PAGE_MAX, &limit,
                               err)) != CF_OK)
        return rc;
    if (state && (q.state = cf_device_state_parse(state)) < 0)
        return cf_error_set(err, CF_ERR_INVALID,
                            "state %.40s: expected on_hold, claimed, active, suspended, revoked or"
                            " decommissioned",
                            state);
    q.limit = limit;
    json_t *arr = json_array();
    if ((rc = cf_fleet_device_list(x->fleet, x->p, &q, add_device, arr, next, err)) != CF_OK) {
        json_decref(arr);
        return rc;
    }
    *result =
        json_pack("{s:o, s:o}", "devices", arr, "next", next[0] ? json_string(next) : json_null());
    return CF_OK;
}

static cf_err op_device_show(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    const char *id;
    cf_err rc = cf_api_param_str(params, "id", 1, &id, err);
    if (rc == CF_OK)
        rc = cf_fleet_device_show(x->fleet, x->p, id, result, err);
    return rc;
}

/* ---- claims ---- */

static cf_err op_device_claim(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    cf_claim_req req = {0};
    cf_err rc;
    if ((rc = cf_api_param_str(params, "id", 1, &req.device_id, err)) != CF_OK ||
        (rc = cf_api_param_str(params, "owner", 0, &req.owner, err)) != CF_OK ||
        (rc = cf_api_param_str(params, "code", 0, &req.code, err)) != CF_OK)
        return rc;
    if (!req.owner && !x->p->owner_id)
        return cf_error_set(err, CF_ERR_INVALID, "parameter owner is required");
    if ((rc = cf_fleet_device_claim(x->fleet, x->p, &req, err)) != CF_OK)
        return rc;
    *result = json_pack("{s:s, s:s, s:s}", "device", req.device_id, "state", "claimed", "how",
                        req.code ? "code" : "operator");
    return CF_OK;
}

static cf_err op_batch_claim(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    const char *batch, *owner;
    int64_t n = 0;
    cf_err rc;
    if ((rc = cf_api_param_str(params, "batch", 1, &batch, err)) != CF_OK ||
        (rc = cf_api_param_str(params, "owner", 1, &owner, err)) != CF_OK ||
        (rc = cf_fleet_device_claim_batch(x->fleet, x->p, batch, owner, &n, err)) != CF_OK)
        return rc;
    *result =
        json_pack("{s:s, s:s, s:I}", "batch", batch, "owner", owner, "claimed", (json_int_t)n);
    return CF_OK;
}

/* ---- transfer, states, groups ---- */

static cf_err op_device_transfer(const cf_api_ctx *x, json_t *params, json_t **result,
                                 cf_error *err)
{
    const char *id, *owner;
    int64_t revoked = 0;
    cf_err rc;
    if ((rc = cf_api_param_str(params, "id", 1, &id, err)) != CF_OK ||
        (rc = cf_api_param_str(params, "owner", 1, &owner, err)) != CF_OK ||
        (rc = cf_fleet_device_transfer(x->fleet, x->p, id, owner, &revoked, err)) != CF_OK)
        return rc;
    *result = json_pack("{s:s, s:s, s:s, s:I}", "device", id, "owner", owner, "state", "claimed",
                        "revoked", (json_int_t)revoked);
    return CF_OK;
}

static cf_err set_state(const cf_api_ctx *x, json_t *params, cf_device_state to, json_t **result,
                        cf_error *err)
{
    const char *id;
    int changed = 0;
    int64_t revoked = 0;
    cf_err rc;
    if ((rc = cf_api_param_str(params, "id", 1, &id, err)) != CF_OK ||
        (rc = cf_fleet_device_set_state(x->fleet, x->p, id, to, &changed, &revoked, err)) != CF_OK)
        return rc;
    *result = json_pack("{s:s, s:s, s:b, s:I}", "device", id, "state", cf_device_state_name(to),
                        "changed", changed, "revoked", (json_int_t)revoked);
    return CF_OK;
}

static cf_err op_device_suspend(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    return set_state(x, params, CF_DEVICE_SUSPENDED, result, err);
}

static cf_err op_device_resume(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    return set_state(x, params, CF_DEVICE_ACTIVE, result, err);
}

static cf_err op_device_decommission(const cf_api_ctx *x, json_t *params, json_t **result,
                                     cf_error *err)
{
    return set_state(x, params, CF_DEVICE_DECOMMISSIONED, result, err);
}

static cf_err set_group(const cf_api_ctx *x, const char *id, const char *grp, json_t **result,
                        cf_error *err)
{
    cf_err rc = cf_fleet_device_set_group(x->fleet, x->p, id, grp, err);
    if (rc == CF_OK)
        *result =
            json_pack("{s:s, s:o}", "device", id, "group", grp ? json_string(grp) : json_null());
    return rc;
}

static cf_err op_group_set(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    const char *id, *grp;
    cf_err rc;
    if ((rc = cf_api_param_str(params, "id", 1, &id, err)) != CF_OK ||
        (rc = cf_api_param_str(params, "group", 1, &grp, err)) != CF_OK)
        return rc;
    return set_group(x, id, grp, result, err);
}

static cf_err op_group_clear(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    const char *id;
    cf_err rc = cf_api_param_str(params, "id", 1, &id, err);
    return rc == CF_OK ? set_group(x, id, NULL, result, err) : rc;
}

/* ---- issue ---- */

#define CSR_MAX (64 * 1024)

/* An owner's caller issues only to a device it can see (cf_fleet_issue itself would create
 * an unknown device for the vendor): the same "not found" as everywhere else. */
static cf_err check_visible(const cf_api_ctx *x, const char *id, cf_error *err)
{
    json_t *j = NULL;
    if (!x->p->owner_id)
        return CF_OK;
    cf_err rc = cf_fleet_device_show(x->fleet, x->p, id, &j, err);
    json_decref(j);
    return rc;
}

/* The CSR: parameter csr (PEM text), or csr_base64 (the bytes of a PEM or DER file). */
static cf_err param_csr(json_t *params, unsigned char **out, size_t *len, cf_error *err)
{
    const char *pem, *b64;
    cf_err rc;
    if ((rc = cf_api_param_str(params, "csr", 0, &pem, err)) != CF_OK ||
        (rc = cf_api_param_str(params, "csr_base64", !pem, &b64, err)) != CF_OK)
        return rc;
    if (pem && b64)
        return cf_error_set(err, CF_ERR_INVALID, "give csr or csr_base64, not both");
    if ((pem ? strlen(pem) : strlen(b64) / 4 * 3) > CSR_MAX)
        return cf_error_set(err, CF_ERR_INVALID, "CSR: too large (over %d bytes)", CSR_MAX);
    if (b64) {
        if (cf_b64_decode(b64, strlen(b64), out, len, err) != CF_OK)
            return cf_error_prefix(err, "parameter csr_base64");
        return CF_OK;
    }
    *len = strlen(pem);
    if (!(*out = malloc(*len + 1)))
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    memcpy(*out, pem, *len + 1);
    return CF_OK;
}

static cf_err op_issue(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    const char *id;
    long long days;
    X509 *issuing, *root;
    cf_signed_cert cert = {0};
    char *pem = NULL, *chain = NULL;
    unsigned char *csr = NULL;
    size_t pem_len = 0, chain_len = 0, csr_len = 0;
    cf_err rc;
    if ((rc = cf_api_param_str(params, "id", 1, &id, err)) != CF_OK ||
        (rc = cf_api_param_int(params, "days", 1, 36500, 0, &days, err)) != CF_OK ||
        (rc = check_visible(x, id, err)) != CF_OK ||
        (rc = param_csr(params, &csr, &csr_len, err)) != CF_OK)
        goto out;
    cf_issue_req req = {csr, csr_len, id, (int)days, x->p->actor};
    if ((rc = cf_fleet_issue(x->fleet, &req, &cert, err)) != CF_OK ||
        (rc = cf_x509_der_append_pem(cert.der, cert.der_len, &pem, &pem_len, err)) != CF_OK ||
        (rc = cf_fleet_chain(x->fleet, &issuing, &root, err)) != CF_OK ||
        (rc = cf_x509_append_pem(issuing, &chain, &chain_len, err)) != CF_OK)
        goto out;
    char nb[CF_TIME_STR_MAX], na[CF_TIME_STR_MAX];
    *result =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "serial", cert.serial, "device", id,
                  "not_before", cf_time_format(cert.not_before * 1000000, nb), "not_after",
                  cf_time_format(cert.not_after * 1000000, na), "pem", pem, "issuing_pem", chain);
out:
    cf_signed_cert_clear(&cert);
    free(csr);
    free(pem);
    free(chain);
    return rc;
}

#define A CF_ROLE_ADMIN
#define O CF_ROLE_OPERATOR
#define R CF_ROLE_AUDITOR
#define DEV "/api/v1/devices/{id}"

const cf_api_op cf_api_ops_devices[] = {
    {"device list", CF_API_GET, "/api/v1/devices", R, 0, op_device_list},
    {"device show", CF_API_GET, DEV, R, 0, op_device_show},
    {"device claim", CF_API_POST, DEV "/claim", O, 0, op_device_claim},
    {"device claim batch", CF_API_POST, "/api/v1/batches/{batch}/claim", O, 0, op_batch_claim},
    {"device transfer", CF_API_POST, DEV "/transfer", A, 0, op_device_transfer},
    {"device suspend", CF_API_POST, DEV "/suspend", O, 0, op_device_suspend},
    {"device resume", CF_API_POST, DEV "/resume", O, 0, op_device_resume},
    {"device decommission", CF_API_POST, DEV "/decommission", A, 0, op_device_decommission},
    {"device group set", CF_API_PUT, DEV "/group", O, 0, op_group_set},
    {"device group clear", CF_API_DELETE, DEV "/group", O, 0, op_group_clear},
    {"issue", CF_API_POST, DEV "/certificates", O, 0, op_issue},
    {NULL, 0, NULL, 0, 0, NULL},
};
