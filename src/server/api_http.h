/* api_http.h - the management API /api/v1 over the operation table (src/api): what http.c
 * hands it, and the JSON error replies http.c makes for it. Not for use outside
 * src/server. */
#ifndef CF_SERVER_API_HTTP_H
#define CF_SERVER_API_HTTP_H

#include "server/srv.h"

#define SRV_API_PREFIX "/api/v1/"

/* Answers a request under SRV_API_PREFIX that no exact route takes: TLS only, bearer token,
 * path and query parameters, a JSON body (or, for an upload, the body as a file), the
 * operation, a JSON reply. method: enum evhttp_cmd_type. */
void srv_api_dispatch(srv_req *r, int method);

/* A JSON error {"error": {"code": code, "message": ...}} with status; cause is counted. */
void srv_fail_json(srv_req *r, int status, srv_cause cause, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* srv_fail_err as JSON: the same status map, code cf_err_name(err->code). */
void srv_fail_err_json(srv_req *r, const cf_error *err);

#endif
