/* api.h - the operations on a fleet, in one table that both shells use: the command line
 * runs an operation on its own store or sends it to a server (certfleet --server URL), and
 * the server's management API (/api/v1) runs the same entry for the request. An operation
 * takes its parameters as a JSON object and returns its result as JSON; it converts them to
 * and from a fleet call and holds no lifecycle logic of its own (that is src/fleet's).
 *
 * Parameters: path parameters ({id} in the template), query parameters and the fields of a
 * JSON body all land in one object. Values may be JSON strings or, where a number or a flag
 * is expected, numbers and booleans too (a query string has only strings): the cf_api_param_*
 * helpers accept both.
 *
 * A later operation (revocation, CRLs, rotation campaigns) slots in as one more entry of a
 * table: name, method, path template, minimum role, scope and handler. */
#ifndef CF_API_API_H
#define CF_API_API_H

#include <jansson.h>

#include "fleet/onboard.h"
#include "fleet/ownership.h"

typedef enum { CF_API_GET, CF_API_POST, CF_API_PUT, CF_API_DELETE } cf_api_method;

const char *cf_api_method_name(cf_api_method m); /* "GET", ... */

/* Flags of an operation. CF_API_VENDOR: only the vendor's callers (owner_id 0), for
 * fleet-wide data. CF_API_UPLOAD: the request body is a file; the server writes it to a
 * temporary file and passes its path as the parameter "file". */
#define CF_API_VENDOR 1u
#define CF_API_UPLOAD 2u

/* Progress of a long operation (done of total), for a terminal's progress line. */
typedef void (*cf_api_progress_fn)(void *arg, int64_t done, int64_t total);

typedef struct {
    cf_fleet *fleet;
    const cf_principal *p;
    cf_api_progress_fn progress; /* NULL: none (the server's case) */
    void *progress_arg;
} cf_api_ctx;

/* A handler: reads params (borrowed), sets *result (new JSON) on success. */
typedef cf_err (*cf_api_fn)(const cf_api_ctx *x, json_t *params, json_t **result, cf_error *err);

typedef struct {
    const char *name; /* "device claim" */
    cf_api_method method;
    const char *path; /* "/api/v1/devices/{id}/claim": {NAME} matches one path segment */
    cf_role min_role; /* the least role that may call it (admin > operator > auditor) */
    unsigned flags;   /* CF_API_* */
    cf_api_fn run;
} cf_api_op;

/* The tables of each area (ops_*.c), each terminated by {NULL}. */
extern const cf_api_op cf_api_ops_fleet[];   /* status, CAs, owners, tokens, settings, audit */
extern const cf_api_op cf_api_ops_devices[]; /* devices: list, show, claim, ..., issue */
extern const cf_api_op cf_api_ops_onboard[]; /* manufacturers and manifest uploads */
extern const cf_api_op cf_api_ops_revoke[];  /* revocation, CRLs, the change feed */

/* The operation called name, or NULL. */
const cf_api_op *cf_api_find(const char *name);

/* The operation for method and path (no query), with its path parameters added to params
 * (percent-decoded). NULL when none: *path_known is then 1 when the path matches some
 * operation with another method (405), else 0 (404). A malformed percent escape or a
 * decoded NUL or '/' in a segment matches nothing. */
const cf_api_op *cf_api_match(cf_api_method method, const char *path, json_t *params,
                              int *path_known);

/* Runs op for p: checks the role and the scope (CF_ERR_POLICY "... needs role X"), then
 * the handler. *result: new JSON on success. */
cf_err cf_api_call(cf_fleet *f, const cf_principal *p, const cf_api_op *op, json_t *params,
                   json_t **result, cf_error *err);
/* The same, telling progress to progress (may be NULL) as the operation goes. */
cf_err cf_api_call_progress(cf_fleet *f, const cf_principal *p, const cf_api_op *op, json_t *params,
                            cf_api_progress_fn progress, void *arg, json_t **result, cf_error *err);

/* ---- parameters (for handlers) ---- */

/* String parameter name: *out borrowed from params, NULL when absent and not required.
 * CF_ERR_INVALID naming it when it is required and absent, or not a string. */
cf_err cf_api_param_str(json_t *params, const char *name, int required, const char **out,
                        cf_error *err);
/* Integer parameter name in [min, max]: a JSON integer or a decimal string; def when
 * absent. */
cf_err cf_api_param_int(json_t *params, const char *name, long long min, long long max,
                        long long def, long long *out, cf_error *err);
/* Boolean parameter: true/false or "true"/"false"/"1"/"0"; def when absent. */
cf_err cf_api_param_bool(json_t *params, const char *name, int def, int *out, cf_error *err);

/* The summary of a manifest import as JSON (the "onboard" operation's result, and what
 * onboard --json prints): manifest names the file, error is NULL or why it broke off. */
json_t *cf_api_onboard_summary(const cf_onboard_stats *s, const char *manifest, const char *error);

#endif
