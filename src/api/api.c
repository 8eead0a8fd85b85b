/* api.c - the operation table: lookup by name or by method and path, the role and scope
 * check every call passes, and the parameter helpers (see api.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/util.h"

static const cf_api_op *const tables[] = {cf_api_ops_fleet, cf_api_ops_devices, cf_api_ops_onboard,
                                          cf_api_ops_revoke};

const char *cf_api_method_name(cf_api_method m)
{
    static const char *const names[] = {"GET", "POST", "PUT", "DELETE"};
    return (unsigned)m < sizeof names / sizeof names[0] ? names[m] : "?";
}

const cf_api_op *cf_api_find(const char *name)
{
    for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++)
        for (const cf_api_op *op = tables[t]; op->name; op++)
            if (strcmp(op->name, name) == 0)
                return op;
    return NULL;
}

/* Percent-decodes the segment s[0..n) into out (n + 1 bytes). -1 for a bad escape, a NUL
 * or a '/' once decoded. */
static int decode_segment(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '%') {
            int hi;
            if (i + 2 >= n || (hi = cf_hex_digit(s[i + 1])) < 0 || cf_hex_digit(s[i + 2]) < 0)
                return -1;
            ch = (char)(hi * 16 + cf_hex_digit(s[i + 2]));
            i += 2;
        }
        if (ch == '\0' || ch == '/')
            return -1;
        out[o++] = ch;
    }
    out[o] = '\0';
    return 0;
}

/* Matches path against template tpl; adds the {NAME} segments to params when it does (and
 * params is not NULL). 1 on a match. */
static int match_template(const char *tpl, const char *path, json_t *params)
{
    while (*tpl && *path) {
        if (*tpl == '{') {
            const char *close = strchr(tpl, '}');
            size_t seg = strcspn(path, "/");
            if (!close || seg == 0 || seg > 1024)
                return 0;
            char name[64], *val = malloc(seg + 1);
            size_t nlen = (size_t)(close - tpl - 1);
            if (!val || nlen >= sizeof name || decode_segment(path, seg, val) < 0) {
                free(val);
                return 0;
            }
            memcpy(name, tpl + 1, nlen);
            name[nlen] = '\0';
            json_t *v = json_string(val); /* NULL: not UTF-8, which names nothing */
            free(val);
            if (!v)
                return 0;
            if (params)
                json_object_set_new(params, name, v);
            else
                json_decref(v);
            tpl = close + 1;
            path += seg;
            continue;
        }
        if (*tpl++ != *path++)
            return 0;
    }
    return *tpl == '\0' && *path == '\0';
}

const cf_api_op *cf_api_match(cf_api_method method, const char *path, json_t *params,
                              int *path_known)
{
    *path_known = 0;
    for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++) {
        for (const cf_api_op *op = tables[t]; op->name; op++) {
            if (!match_template(op->path, path, NULL))
                continue;
            if (op->method != method) {
                *path_known = 1;
                continue;
            }
            match_template(op->path, path, params);
            return op;
        }
    }
    return NULL;
}

cf_err cf_api_call(cf_fleet *f, const cf_principal *p, const cf_api_op *op, json_t *params,
                   json_t **result, cf_error *err)
{
    return cf_api_call_progress(f, p, op, params, NULL, NULL, result, err);
}

cf_err cf_api_call_progress(cf_fleet *f, const cf_principal *p, const cf_api_op *op, json_t *params,
                            cf_api_progress_fn progress, void *arg, json_t **result, cf_error *err)
{
    /* Roles are ordered: admin (0) may do what an operator (1) may, and so on. */
    if ((int)p->role > (int)op->min_role)
        return cf_error_set(err, CF_ERR_POLICY, "%s needs %s (this caller is %s)", op->name,
                            op->min_role == CF_ROLE_ADMIN ? "an admin" : "an operator or admin",
                            cf_role_name(p->role));
    if ((op->flags & CF_API_VENDOR) && p->owner_id)
        return cf_error_set(err, CF_ERR_POLICY, "%s is for the vendor's operator only", op->name);
    if (!json_is_object(params))
        return cf_error_set(err, CF_ERR_INVALID, "%s: parameters must be a JSON object", op->name);
    cf_api_ctx x = {f, p, progress, arg};
    *result = NULL;
    cf_err rc = op->run(&x, params, result, err);
    if (rc == CF_OK && !*result)
        rc = cf_error_set(err, CF_ERR_NOMEM, "%s: out of memory", op->name);
    if (rc != CF_OK) {
        json_decref(*result);
        *result = NULL;
    }
    return rc;
}

/* ---- parameters ---- */

cf_err cf_api_param_str(json_t *params, const char *name, int required, const char **out,
                        cf_error *err)
{
    json_t *v = json_object_get(params, name);
    *out = NULL;
    if (!v || json_is_null(v)) {
        if (required)
            return cf_error_set(err, CF_ERR_INVALID, "parameter %s is required", name);
        return CF_OK;
    }
    if (!json_is_string(v))
        return cf_error_set(err, CF_ERR_INVALID, "parameter %s: expected a string", name);
    *out = json_string_value(v);
    if (strlen(*out) != json_string_length(v))
        return cf_error_set(err, CF_ERR_INVALID, "parameter %s: contains a NUL character", name);
    return CF_OK;
}

cf_err cf_api_param_int(json_t *params, const char *name, long long min, long long max,
                        long long def, long long *out, cf_error *err)
{
    json_t *v = json_object_get(params, name);
    long long x;
    if (!v || json_is_null(v)) {
        *out = def;
        return CF_OK;
    }
    if (json_is_integer(v)) {
        x = (long long)json_integer_value(v);
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        errno = 0;
        x = strtoll(s, &end, 10);
        if (!*s || *end || errno == ERANGE)
            goto bad;
    } else {
        goto bad;
    }
    if (x < min || x > max)
        goto bad;
    *out = x;
    return CF_OK;
bad:
    return cf_error_set(err, CF_ERR_INVALID, "parameter %s: expected a number from %lld to %lld",
                        name, min, max);
}

cf_err cf_api_param_bool(json_t *params, const char *name, int def, int *out, cf_error *err)
{
    json_t *v = json_object_get(params, name);
    const char *s = json_string_value(v);
    if (!v || json_is_null(v))
        *out = def;
    else if (json_is_boolean(v))
        *out = json_is_true(v);
    else if (s && (strcmp(s, "true") == 0 || strcmp(s, "1") == 0))
        *out = 1;
    else if (s && (strcmp(s, "false") == 0 || strcmp(s, "0") == 0))
        *out = 0;
    else
        return cf_error_set(err, CF_ERR_INVALID, "parameter %s: expected true or false", name);
    return CF_OK;
}
