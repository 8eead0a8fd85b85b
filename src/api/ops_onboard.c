/* ops_onboard.c - the operations on manufacturers and the import of their manifests. An
 * import through the API reads a manifest the server wrote to a temporary file from the
 * request body (CF_API_UPLOAD) and answers with the import's report. */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "fleet/onboard.h"
#include "pki/jose.h"

#define MFR_CERTS_MAX 8
#define REPORT_PROBLEMS_MAX 1000 /* problems listed in a report; the rest are counted */

/* ---- manufacturers ---- */

/* Parameter name: a list (or one) of certificates, each PEM text or an object {name, pem}
 * or {name, der_base64} (name: how messages call it, a file name). Fills srcs; the decoded
 * DER goes to bufs (free each). Returns the count or -1. */
static int cert_params(json_t *params, const char *name, cf_onboard_cert_src *srcs,
                       unsigned char **bufs, char what[][256], cf_error *err)
{
    json_t *v = json_object_get(params, name), *el;
    size_t i, n = 0;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v)) {
        cf_error_set(err, CF_ERR_INVALID, "parameter %s: expected a list of certificates", name);
        return -1;
    }
    json_array_foreach(v, i, el)
    {
        json_t *pem = json_is_string(el) ? el : json_object_get(el, "pem");
        json_t *der = json_object_get(el, "der_base64"), *label = json_object_get(el, "name");
        if (n == MFR_CERTS_MAX || (!json_is_string(pem) && !json_is_string(der)) ||
            (label && !json_is_string(label))) {
            cf_error_set(err, CF_ERR_INVALID,
                         "parameter %s[%zu]: expected PEM text or {name, pem | der_base64} (at"
                         " most %d)",
                         name, i, MFR_CERTS_MAX);
            return -1;
        }
        snprintf(what[n], 256, "%s", label ? json_string_value(label) : "");
        if (!what[n][0])
            snprintf(what[n], 256, "%s[%zu]", name, i);
        if (json_is_string(pem)) {
            srcs[n] =
                (cf_onboard_cert_src){json_string_value(pem), json_string_length(pem), what[n]};
        } else {
            size_t len = 0;
            if (cf_b64_decode(json_string_value(der), json_string_length(der), &bufs[n], &len,
                              err) != CF_OK) {
                cf_error_prefix(err, "parameter %s[%zu].der_base64", name, i);
                return -1;
            }
            srcs[n] = (cf_onboard_cert_src){bufs[n], len, what[n]};
        }
        n++;
    }
    return (int)n;
}

static cf_err op_mfr_add(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    cf_onboard_cert_src roots[MFR_CERTS_MAX], signers[MFR_CERTS_MAX];
    unsigned char *rbufs[MFR_CERTS_MAX] = {0}, *sbufs[MFR_CERTS_MAX] = {0};
    char rwhat[MFR_CERTS_MAX][256], swhat[MFR_CERTS_MAX][256];
    const char *name;
    cf_err rc = cf_api_param_str(params, "name", 1, &name, err);
    if (rc != CF_OK)
        return rc;
    int nr = cert_params(params, "roots", roots, rbufs, rwhat, err);
    int ns = nr < 0 ? -1 : cert_params(params, "signers", signers, sbufs, swhat, err);
    if (nr < 0 || ns < 0)
        rc = err->code;
    else if (nr + ns == 0)
        rc = cf_error_set(err, CF_ERR_INVALID, "give at least one root or signer");
    if (rc == CF_OK) {
        cf_onboard_mfr_req req = {name, roots, (size_t)nr, signers, (size_t)ns, x->p->actor};
        rc = cf_onboard_manufacturer_add(x->fleet, &req, result, err);
    }
    for (int i = 0; i < MFR_CERTS_MAX; i++) {
        free(rbufs[i]);
        free(sbufs[i]);
    }
    return rc;
}

static cf_err op_mfr_list(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    return cf_onboard_manufacturer_describe(x->fleet, NULL, result, err);
}

static cf_err op_mfr_show(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    const char *name;
    cf_err rc = cf_api_param_str(params, "name", 1, &name, err);
    return rc == CF_OK ? cf_onboard_manufacturer_describe(x->fleet, name, result, err) : rc;
}

static cf_err op_mfr_remove(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    const char *name;
    cf_err rc = cf_api_param_str(params, "name", 1, &name, err);
    if (rc == CF_OK)
        rc = cf_onboard_manufacturer_remove(x->fleet, name, x->p->actor, err);
    if (rc == CF_OK)
        *result = json_pack("{s:s, s:b}", "name", name, "removed", 1);
    return rc;
}

/* ---- manifest import ---- */

typedef struct {
    json_t *problems;
    size_t total;
} report;

static void on_problem(void *arg, const cf_onboard_problem *p)
{
    report *r = arg;
    if (r->total++ < REPORT_PROBLEMS_MAX)
        json_array_append_new(r->problems,
                              json_pack("{s:I, s:s, s:s, s:s}", "index", (json_int_t)p->index,
                                        "uid", p->uid, "kind", cf_onboard_problem_name(p->kind),
                                        "reason", p->reason));
}

json_t *cf_api_onboard_summary(const cf_onboard_stats *s, const char *manifest, const char *error)
{
    return json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:b, s:o, s:f, s:f, s:i, s:o}",
                     "manifest", manifest, "import", (json_int_t)s->import_id, "entries",
                     (json_int_t)s->entries, "added", (json_int_t)s->added, "present",
                     (json_int_t)s->present, "rejected", (json_int_t)s->rejected, "conflicts",
                     (json_int_t)s->conflicts, "complete", s->complete, "interrupted",
                     s->interrupted, "sha256", s->sha256[0] ? json_string(s->sha256) : json_null(),
                     "seconds", s->seconds, "rate",
                     s->seconds > 0 ? (double)s->entries / s->seconds : 0.0, "threads", s->threads,
                     "error", error ? json_string(error) : json_null());
}

/* Imports the manifest at parameter file (for an upload, the server's temporary copy; name
 * is what the report calls it). A broken file after some entries is a report with "error"
 * set, as on the command line; nothing started is an error. */
static cf_err op_onboard(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err)
{
    cf_onboard_opts o = {0};
    cf_onboard_stats s = {0};
    report r = {json_array(), 0};
    const char *name;
    cf_err rc;
    if ((rc = cf_api_param_str(params, "file", 1, &o.manifest, err)) != CF_OK ||
        (rc = cf_api_param_str(params, "manufacturer", 1, &o.manufacturer, err)) != CF_OK ||
        (rc = cf_api_param_str(params, "batch", 0, &o.batch, err)) != CF_OK ||
        (rc = cf_api_param_str(params, "name", 0, &name, err)) != CF_OK)
        goto out;
    o.actor = x->p->actor;
    o.problem = on_problem;
    o.arg = &r;
    rc = cf_onboard_import(x->fleet, &o, &s, err);
    if (rc != CF_OK && !s.import_id)
        goto out;
    *result = cf_api_onboard_summary(&s, name ? name : "upload", rc != CF_OK ? err->msg : NULL);
    json_object_set_new(*result, "problems", r.problems);
    json_object_set_new(*result, "problems_total", json_integer((json_int_t)r.total));
    r.problems = NULL;
    rc = CF_OK;
out:
    json_decref(r.problems);
    return rc;
}

#define A CF_ROLE_ADMIN
#define R CF_ROLE_AUDITOR
#define V CF_API_VENDOR
#define MFR "/api/v1/manufacturers"

const cf_api_op cf_api_ops_onboard[] = {
    {"manufacturer add", CF_API_POST, MFR, A, V, op_mfr_add},
    {"manufacturer list", CF_API_GET, MFR, R, V, op_mfr_list},
    {"manufacturer show", CF_API_GET, MFR "/{name}", R, V, op_mfr_show},
    {"manufacturer remove", CF_API_DELETE, MFR "/{name}", A, V, op_mfr_remove},
    {"onboard", CF_API_POST, MFR "/{manufacturer}/manifests", A, V | CF_API_UPLOAD, op_onboard},
    {NULL, 0, NULL, 0, 0, NULL},
};
