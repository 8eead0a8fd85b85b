/* http.c - the framing every request shares: route lookup (404, 405), Content-Type check
 * (415), replies, the fleet-error-to-status table (plain text, and JSON for the management
 * API), metrics and the request log. Handlers in routes.c only produce their body; paths
 * under /api/v1/ that no exact route takes go to the operation table (api_http.c). */
#include <ctype.h>
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <jansson.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/util.h"
#include "server/api_http.h"
#include "server/srv.h"

#define EST_PREFIX "/.well-known/est/"

static const struct {
    int status;
    const char *reason;
} reasons[] = {
    {200, "OK"},
    {202, "Accepted"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {409, "Conflict"},
    {413, "Payload Too Large"},
    {415, "Unsupported Media Type"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {503, "Service Unavailable"},
};

static const char *reason(int status)
{
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        if (reasons[i].status == status)
            return reasons[i].reason;
    return "Status";
}

static void set_header(srv_req *r, const char *name, const char *value)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(r->req);
    evhttp_remove_header(h, name);
    evhttp_add_header(h, name, value);
}

void srv_reply(srv_req *r, int status, const char *ctype, const void *body, size_t len)
{
    r->status = status;
    set_header(r, "Content-Type", ctype);
    evbuffer_add(evhttp_request_get_output_buffer(r->req), body, len);
}

void srv_reply_base64(srv_req *r, const char *ctype, const void *b64, size_t len)
{
    srv_reply(r, 200, ctype, b64, len);
    set_header(r, "Content-Transfer-Encoding", "base64"); /* RFC 7030 4.1.3, RFC 8951 */
}

void srv_fail(srv_req *r, int status, srv_cause cause, const char *fmt, ...)
{
    char msg[CF_ERROR_MSG_MAX + 2];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > sizeof msg - 2)
        n = (int)sizeof msg - 2;
    msg[n++] = '\n';
    evbuffer_drain(evhttp_request_get_output_buffer(r->req),
                   evbuffer_get_length(evhttp_request_get_output_buffer(r->req)));
    srv_reply(r, status, "text/plain; charset=utf-8", msg, (size_t)n);
    r->cause = cause;
}

/* The one place a fleet error becomes a status. 5xx keep their message out of the reply:
 * it may describe the server's inside (paths, SQL); the log line names the cause. */
static const struct {
    cf_err code;
    int status;
} err_status[] = {
    {CF_ERR_INVALID, 400},  {CF_ERR_POLICY, 403},      {CF_ERR_NOT_FOUND, 404},
    {CF_ERR_EXISTS, 409},   {CF_ERR_STATE, 409},       {CF_ERR_IO, 500},
    {CF_ERR_STORE, 500},    {CF_ERR_UNAVAILABLE, 503}, {CF_ERR_CRYPTO, 500},
    {CF_ERR_TAMPERED, 500}, {CF_ERR_NOMEM, 503},       {CF_ERR_INTERNAL, 500},
};

static int err_to_status(cf_err code)
{
    for (size_t i = 0; i < sizeof err_status / sizeof err_status[0]; i++)
        if (err_status[i].code == code)
            return err_status[i].status;
    return 500;
}

void srv_fail_err(srv_req *r, const cf_error *err)
{
    int status = err_to_status(err->code);
    srv_cause cause = (srv_cause)(SRV_CAUSE_FLEET + (int)err->code);
    if (status >= 500)
        srv_fail(r, status, cause, "%s: the server could not answer (%s)", r->path,
                 cf_err_name(err->code));
    else
        srv_fail(r, status, cause, "%s", err->msg);
}

/* ---- JSON errors (the management API) ---- */

void srv_fail_json(srv_req *r, int status, srv_cause cause, const char *code, const char *fmt, ...)
{
    char msg[CF_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *j = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg);
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    struct evbuffer *out = evhttp_request_get_output_buffer(r->req);
    evbuffer_drain(out, evbuffer_get_length(out));
    if (text) {
        srv_reply(r, status, "application/json", text, strlen(text));
        evbuffer_add(out, "\n", 1);
    } else {
        srv_reply(r, status, "application/json", "{}\n", 3);
    }
    r->cause = cause;
    free(text);
    json_decref(j);
}

void srv_fail_err_json(srv_req *r, const cf_error *err)
{
    int status = err_to_status(err->code);
    srv_cause cause = (srv_cause)(SRV_CAUSE_FLEET + (int)err->code);
    if (status >= 500)
        srv_fail_json(r, status, cause, cf_err_name(err->code),
                      "%s: the server could not answer (%s)", r->path, cf_err_name(err->code));
    else
        srv_fail_json(r, status, cause, cf_err_name(err->code), "%s", err->msg);
}

/* ---- routing ---- */

static int label_valid(const char *s, size_t n)
{
    if (n == 0 || n > SRV_LABEL_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.')
            return 0;
    return 1;
}

/* Splits /.well-known/est/LABEL/OP into the label and /.well-known/est/OP (in buf). Returns
 * the path to route on, or NULL for a malformed label. */
static const char *split_est_label(const char *path, srv_req *r, char *buf, size_t len)
{
    size_t plen = strlen(EST_PREFIX);
    if (strncmp(path, EST_PREFIX, plen) != 0)
        return path;
    const char *rest = path + plen, *slash = strchr(rest, '/');
    if (!slash)
        return path;
    if (!label_valid(rest, (size_t)(slash - rest)))
        return NULL;
    memcpy(r->label, rest, (size_t)(slash - rest));
    r->label[slash - rest] = '\0';
    snprintf(buf, len, EST_PREFIX "%s", slash + 1);
    return buf;
}

/* 1 if the request's Content-Type is want (type/subtype, parameters ignored). */
static int ctype_is(struct evhttp_request *req, const char *want)
{
    const char *got = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    size_t n = strlen(want);
    return got && strncasecmp(got, want, n) == 0 &&
           (got[n] == '\0' || got[n] == ';' || got[n] == ' ');
}

static const struct {
    int method;
    const char *name;
} methods[] = {
    {EVHTTP_REQ_GET, "GET"},     {EVHTTP_REQ_POST, "POST"},       {EVHTTP_REQ_HEAD, "HEAD"},
    {EVHTTP_REQ_PUT, "PUT"},     {EVHTTP_REQ_DELETE, "DELETE"},   {EVHTTP_REQ_OPTIONS, "OPTIONS"},
    {EVHTTP_REQ_TRACE, "TRACE"}, {EVHTTP_REQ_CONNECT, "CONNECT"}, {EVHTTP_REQ_PATCH, "PATCH"},
};

static const char *method_name(int m)
{
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (methods[i].method == m)
            return methods[i].name;
    return "OTHER";
}

/* 1 if an exact route serves path on r's listener (with any method). */
/* 1 if route path rp takes path: the same, or rp ends in '/' and path goes on below it. */
static int path_matches(const char *rp, const char *path)
{
    size_t n = strlen(rp);
    return strcmp(rp, path) == 0 || (n && rp[n - 1] == '/' && strncmp(rp, path, n) == 0 && path[n]);
}

static int route_exists(const srv_req *r, const char *path)
{
    for (int i = 0; srv_routes[i].path; i++)
        if ((srv_routes[i].on & r->on) && path_matches(srv_routes[i].path, path))
            return 1;
    return 0;
}

/* Finds the route; answers 404 or 405 itself and returns -1 when there is none. */
static int route_find(srv_req *r, const char *path, int method)
{
    char allow[64] = "";
    int path_known = 0;
    for (int i = 0; srv_routes[i].path; i++) {
        const srv_route *rt = &srv_routes[i];
        if (!(rt->on & r->on) || !path_matches(rt->path, path) || (r->label[0] && !rt->label))
            continue;
        if (rt->method == method)
            return i;
        path_known = 1;
        size_t used = strlen(allow);
        snprintf(allow + used, sizeof allow - used, "%s%s", used ? ", " : "",
                 method_name(rt->method));
    }
    if (path_known) {
        set_header(r, "Allow", allow);
        srv_fail(r, 405, SRV_CAUSE_METHOD, "%s: method %s not allowed (allowed: %s)", path,
                 method_name(method), allow);
    } else {
        srv_fail(r, 404, SRV_CAUSE_NO_ROUTE, "no such resource");
    }
    return -1;
}

/* ---- the log ---- */

/* The path as logged: printable ASCII only, no query (it is not logged at all, so nothing a
 * client puts there reaches the log), at most 200 characters. */
static void log_path(const char *raw, char *out, size_t len)
{
    size_t i = 0;
    for (; raw && raw[i] && raw[i] != '?' && i + 1 < len && i < 200; i++)
        out[i] = raw[i] >= 0x20 && raw[i] < 0x7f && raw[i] != '"' && raw[i] != '\\' ? raw[i] : '?';
    out[i] = '\0';
}

static void log_request(const srv_req *r, const char *raw_path, int method, int64_t us)
{
    char when[CF_TIME_STR_MAX], path[256];
    char *peer = NULL;
    ev_uint16_t port = 0;
    evhttp_connection_get_peer(evhttp_request_get_connection(r->req), &peer, &port);
    log_path(raw_path, path, sizeof path);
    /* Written by hand, not through jansson: it runs for every request. Every value is of a
     * known alphabet (the path is made printable without quotes or backslashes above; the
     * peer is an address, the device id and cause names are checked names), so no escaping
     * is needed, and one fwrite keeps the line whole beside the other workers'. */
    char line[1024];
    int n = snprintf(line, sizeof line,
                     "{\"time\":\"%s\",\"peer\":\"%s\",\"listener\":\"%s\",\"method\":\"%s\","
                     "\"path\":\"%s\",\"status\":%d,\"duration_ms\":%.3f",
                     cf_time_format(cf_time_now_us(), when), peer ? peer : "",
                     r->on == SRV_ON_TLS ? "tls" : "http", method_name(method), path, r->status,
                     (double)us / 1000.0);
    if (n > 0 && (size_t)n < sizeof line && r->device[0])
        n += snprintf(line + n, sizeof line - (size_t)n, ",\"device\":\"%s\"", r->device);
    if (n > 0 && (size_t)n < sizeof line && r->cause != SRV_CAUSE_NONE)
        n += snprintf(line + n, sizeof line - (size_t)n, ",\"error\":\"%s\"",
                      srv_cause_name(r->cause));
    if (n > 0 && (size_t)n < sizeof line - 2) {
        line[n++] = '}';
        line[n++] = '\n';
        fwrite(line, 1, (size_t)n, stderr);
    }
}

/* The device named by the client's certificate when it chains to certfleet's CA (the trust
 * store of the TLS context) and may authenticate a client: for the log. Authorisation is
 * the handlers' business. */
static void client_device(srv_req *r, struct evhttp_connection *evcon)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    SSL *ssl = bev ? bufferevent_openssl_get_ssl(bev) : NULL;
    X509 *peer = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
    if (!peer || SSL_get_verify_result(ssl) != X509_V_OK ||
        !(X509_get_extended_key_usage(peer) & XKU_SSL_CLIENT))
        return;
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, r->device,
                                  sizeof r->device) <= 0 ||
        !cf_fleet_device_id_valid(r->device))
        r->device[0] = '\0';
}

/* ---- the callback ---- */

static void request_done(struct evhttp_request *req, void *arg)
{
    srv_worker *w = arg;
    w->inflight--;
    srv_conn_request(evhttp_request_get_connection(req), 0);
}

void srv_http_dispatch(struct evhttp_request *req, void *arg)
{
    srv_worker *w = arg;
    srv_req r = {.w = w, .req = req, .status = 500, .start_us = cf_time_now_us()};
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    r.on = evhttp_connection_get_server(evcon) == w->https ? SRV_ON_TLS : SRV_ON_PLAIN;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *raw = uri ? evhttp_uri_get_path(uri) : NULL;
    int method = (int)evhttp_request_get_command(req);
    char buf[256];
    int route = SRV_MAX_ROUTES;

    if (r.on == SRV_ON_TLS) {
        srv_conn_request(evcon, 1);
        client_device(&r, evcon);
    }
    if (!raw || !*raw)
        raw = "/";
    r.raw = raw;
    r.method = method;
    r.route = SRV_MAX_ROUTES;
    r.path = split_est_label(raw, &r, buf, sizeof buf);
    if (!r.path) {
        r.path = raw;
        srv_fail(&r, 404, SRV_CAUSE_NO_ROUTE, "malformed EST label");
    } else if (strncmp(r.path, SRV_API_PREFIX, strlen(SRV_API_PREFIX)) == 0 &&
               !route_exists(&r, r.path)) {
        srv_api_dispatch(&r, method); /* exact routes first, then the operation table */
    } else if ((route = route_find(&r, r.path, method)) < 0) {
        route = SRV_MAX_ROUTES;
    } else if (evbuffer_get_length(evhttp_request_get_input_buffer(req)) > w->srv->max_body) {
        srv_fail(&r, 413, SRV_CAUSE_BAD_REQUEST, "%s: request body over the limit of %zu bytes",
                 r.path, w->srv->max_body);
    } else if (srv_routes[route].ctype && !ctype_is(req, srv_routes[route].ctype)) {
        srv_fail(&r, 415, SRV_CAUSE_MEDIA_TYPE, "%s: Content-Type must be %s", r.path,
                 srv_routes[route].ctype);
    } else {
        srv_routes[route].run(&r);
    }
    r.route = route;
    if (!r.deferred)
        srv_finish(&r);
}

void srv_finish(srv_req *r)
{
    /* Counted and logged before the send: evhttp may free req once the reply is out. */
    int64_t us = cf_time_now_us() - r->start_us;
    srv_metrics_count(&r->w->metrics, r->route, r->status, us, r->cause);
    log_request(r, r->raw, r->method, us);
    r->w->inflight++;
    evhttp_request_set_on_complete_cb(r->req, request_done, r->w);
    evhttp_send_reply(r->req, r->status, reason(r->status), NULL);
}
