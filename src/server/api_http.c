/* api_http.c - the management API /api/v1: turns a request into an operation of the table
 * (src/api) and its result into a JSON reply. Every call is authenticated by a bearer token
 * (401 otherwise, before anything else is looked at) and scoped to the token's owner and
 * role; errors are JSON {"error": {"code", "message"}} with the status of http.c's one map. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "api/api.h"
#include "core/fs.h"
#include "core/util.h"
#include "server/api_http.h"

#define UPLOAD_NAME_MAX 100

static int api_method(int evmethod, cf_api_method *out)
{
    switch (evmethod) {
    case EVHTTP_REQ_GET:
        *out = CF_API_GET;
        return 0;
    case EVHTTP_REQ_POST:
        *out = CF_API_POST;
        return 0;
    case EVHTTP_REQ_PUT:
        *out = CF_API_PUT;
        return 0;
    case EVHTTP_REQ_DELETE:
        *out = CF_API_DELETE;
        return 0;
    default:
        return -1;
    }
}

/* ---- authentication ---- */

/* The principal of the request's bearer token; answers 401 itself and returns -1 when
 * there is none. The token goes nowhere but to cf_fleet_token_auth. */
static int authenticate(srv_req *r, cf_principal *p, char *actor, size_t actor_len)
{
    struct evkeyvalq *h = evhttp_request_get_input_headers(r->req);
    const char *auth = evhttp_find_header(h, "Authorization");
    cf_token_identity id;
    cf_error err = {0};
    struct evkeyvalq *out = evhttp_request_get_output_headers(r->req);
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0) {
        evhttp_add_header(out, "WWW-Authenticate", "Bearer realm=\"certfleet\"");
        srv_fail_json(r, 401, SRV_CAUSE_UNAUTHENTICATED, "unauthorized",
                      "this API needs Authorization: Bearer TOKEN (certfleet owner token)");
        return -1;
    }
    const char *token = auth + 7;
    while (*token == ' ')
        token++;
    cf_err rc = cf_fleet_token_auth(r->w->fleet, token, &id, &err);
    if (rc == CF_ERR_NOT_FOUND) {
        evhttp_add_header(out, "WWW-Authenticate",
                          "Bearer realm=\"certfleet\", error=\"invalid_token\"");
        srv_fail_json(r, 401, SRV_CAUSE_UNAUTHENTICATED, "unauthorized",
                      "token not recognised (unknown, malformed or revoked)");
        return -1;
    }
    if (rc != CF_OK) {
        srv_fail_err_json(r, &err);
        return -1;
    }
    snprintf(actor, actor_len, "token:%lld", (long long)id.token_id);
    p->actor = actor;
    p->owner_id = id.owner_id;
    p->role = id.role;
    return 0;
}

/* ---- parameters ---- */

/* Adds the query's parameters to params. A parameter named twice, or one that a path
 * parameter already set, is a 400. */
static int add_query(srv_req *r, json_t *params)
{
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(r->req);
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    struct evkeyvalq q;
    struct evkeyval *kv;
    if (!query || !*query)
        return 0;
    if (evhttp_parse_query_str(query, &q) != 0) {
        srv_fail_json(r, 400, SRV_CAUSE_BAD_REQUEST, "bad_request",
                      "malformed query string (expected NAME=VALUE&...)");
        return -1;
    }
    int rc = 0;
    for (kv = q.tqh_first; kv; kv = kv->next.tqe_next) {
        if (json_object_get(params, kv->key)) {
            srv_fail_json(r, 400, SRV_CAUSE_BAD_REQUEST, "bad_request",
                          "query parameter %.64s given twice (or also in the path)", kv->key);
            rc = -1;
            break;
        }
        json_t *v = json_string(kv->value);
        if (!v || json_object_set_new(params, kv->key, v) != 0) {
            srv_fail_json(r, 400, SRV_CAUSE_BAD_REQUEST, "bad_request",
                          "query parameter %.64s: not UTF-8 text", kv->key);
            rc = -1;
            break;
        }
    }
    evhttp_clear_headers(&q);
    return rc;
}

static int ctype_json(struct evhttp_request *req)
{
    const char *got = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    const char *want = "application/json";
    size_t n = strlen(want);
    return got && strncasecmp(got, want, n) == 0 &&
           (got[n] == '\0' || got[n] == ';' || got[n] == ' ');
}

/* Merges a JSON object body into params. An empty body is no parameters. */
static int add_body(srv_req *r, json_t *params)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(r->req);
    size_t len = evbuffer_get_length(in);
    json_error_t jerr;
    if (len == 0)
        return 0;
    if (len > r->w->srv->max_body) {
        srv_fail_json(r, 413, SRV_CAUSE_BAD_REQUEST, "payload_too_large",
                      "request body of %zu bytes: the limit is %zu", len, r->w->srv->max_body);
        return -1;
    }
    if (!ctype_json(r->req)) {
        srv_fail_json(r, 415, SRV_CAUSE_MEDIA_TYPE, "unsupported_media_type",
                      "%s: Content-Type must be application/json", r->path);
        return -1;
    }
    json_t *body =
        json_loadb((const char *)evbuffer_pullup(in, -1), len, JSON_REJECT_DUPLICATES, &jerr);
    if (!body) {
        srv_fail_json(r, 400, SRV_CAUSE_BAD_REQUEST, "bad_request",
                      "malformed JSON at line %d, column %d (byte %d): %s", jerr.line, jerr.column,
                      jerr.position, jerr.text);
        return -1;
    }
    if (!json_is_object(body)) {
        json_decref(body);
        srv_fail_json(r, 400, SRV_CAUSE_BAD_REQUEST, "bad_request",
                      "the body must be a JSON object");
        return -1;
    }
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        if (json_object_get(params, key)) {
            srv_fail_json(r, 400, SRV_CAUSE_BAD_REQUEST, "bad_request",
                          "parameter %.64s given in the body and in the path or query", key);
            json_decref(body);
            return -1;
        }
    }
    json_object_update(params, body);
    json_decref(body);
    return 0;
}

/* The upload's file name: the last path segment of the parameter "name", reduced to
 * A-Z a-z 0-9 . _ - and not starting with a dot ("manifest.json" when nothing is left). */
static void upload_name(json_t *params, char out[UPLOAD_NAME_MAX + 1])
{
    const char *name = json_string_value(json_object_get(params, "name"));
    const char *base = name ? strrchr(name, '/') : NULL;
    size_t n = 0;
    base = base ? base + 1 : name;
    for (; base && *base && n < UPLOAD_NAME_MAX; base++) {
        char ch = *base;
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '_' || ch == '-' || (ch == '.' && n > 0))
            out[n++] = ch;
    }
    out[n] = '\0';
    if (!n)
        snprintf(out, UPLOAD_NAME_MAX + 1, "manifest.json");
}

/* Writes the body to a new private directory under DATA/uploads (DATA is the only place
 * certfleet writes; the manifest's own file name is kept because an import names the batch
 * after it). Fills dir and file. */
static cf_err write_upload(srv_req *r, json_t *params, char *dir, size_t dlen, char *file,
                           size_t flen, cf_error *err)
{
    char name[UPLOAD_NAME_MAX + 1];
    struct evbuffer *in = evhttp_request_get_input_buffer(r->req);
    if (json_object_get(params, "file"))
        return cf_error_set(err, CF_ERR_INVALID, "parameter file: the body is the file");
    snprintf(dir, dlen, "%s/uploads", r->w->srv->opts.data_dir);
    cf_err rc = cf_fs_mkdirs(dir, 0700, err);
    if (rc != CF_OK)
        return rc;
    snprintf(dir, dlen, "%s/uploads/XXXXXX", r->w->srv->opts.data_dir);
    if (!mkdtemp(dir)) {
        dir[0] = '\0';
        return cf_error_set(err, CF_ERR_IO, "uploads: cannot make a directory: %s",
                            strerror(errno));
    }
    upload_name(params, name);
    snprintf(file, flen, "%s/%s", dir, name);
    int fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return cf_error_set(err, CF_ERR_IO, "uploads: cannot create a file: %s", strerror(errno));
    while (evbuffer_get_length(in) > 0) {
        if (evbuffer_write(in, fd) < 0 && errno != EINTR) {
            close(fd);
            return cf_error_set(err, CF_ERR_IO, "uploads: cannot write: %s", strerror(errno));
        }
    }
    if (close(fd) != 0)
        return cf_error_set(err, CF_ERR_IO, "uploads: cannot write: %s", strerror(errno));
    json_object_set_new(params, "file", json_string(file));
    return CF_OK;
}

static void remove_upload(const char *dir, const char *file)
{
    if (file[0])
        unlink(file);
    if (dir[0])
        rmdir(dir);
}

/* ---- the call ---- */

static void reply_json(srv_req *r, json_t *result)
{
    char *text = json_dumps(result, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text) {
        srv_fail_json(r, 503, SRV_CAUSE_FLEET + CF_ERR_NOMEM, "nomem", "out of memory");
        return;
    }
    srv_reply(r, 200, "application/json", text, strlen(text));
    srv_reply(r, 200, "application/json", "\n", 1);
    free(text);
}

/* The device the call is about, for the request log. */
static void note_device(srv_req *r, const cf_api_op *op, json_t *params)
{
    const char *id = json_string_value(json_object_get(params, "id"));
    if ((strncmp(op->name, "device ", 7) == 0 || strcmp(op->name, "issue") == 0) && id &&
        cf_fleet_device_id_valid(id))
        snprintf(r->device, sizeof r->device, "%s", id);
}

/* ---- long polls (GET /api/v1/changes?since=N&wait=S) ---- */

#define POLL_EVERY_MS 100
#define POLL_WAIT_MAX_S 60

/* A request held until the change feed moves past since, or its wait ends. It lives on
 * the worker's loop; if the client leaves first, evhttp's close callback ends it. */
typedef struct {
    srv_req r; /* a copy, with path and raw pointing into this struct */
    char path[256], raw[256], actor[64];
    cf_principal p;
    const cf_api_op *op;
    json_t *params;
    int64_t deadline_us;
    struct event *tick;
    struct evhttp_connection *evcon;
} srv_poll;

static void poll_free(srv_poll *q)
{
    event_free(q->tick);
    json_decref(q->params);
    q->r.w->inflight--;
    free(q);
}

static void poll_closed(struct evhttp_connection *evcon, void *arg)
{
    srv_poll *q = arg;
    poll_free(q); /* the request went with the connection: nothing to answer */
}

/* Runs the operation; answers when there is something or the wait is over. */
static void poll_tick(evutil_socket_t fd, short what, void *arg)
{
    srv_poll *q = arg;
    json_t *result = NULL;
    cf_error err = {0};
    cf_err rc = cf_api_call(q->r.w->fleet, &q->p, q->op, q->params, &result, &err);
    if (rc == CF_OK && json_array_size(json_object_get(result, "changes")) == 0 &&
        cf_time_now_us() < q->deadline_us) {
        json_decref(result);
        return; /* the timer fires again */
    }
    evhttp_connection_set_closecb(q->evcon, NULL, NULL);
    if (rc != CF_OK)
        srv_fail_err_json(&q->r, &err);
    else
        reply_json(&q->r, result);
    json_decref(result);
    srv_finish(&q->r);
    poll_free(q);
}

/* Holds r when it asked to wait and there is nothing yet; 0 when it was not held. */
static int poll_hold(srv_req *r, const cf_principal *p, const cf_api_op *op, json_t *params,
                     json_t *result)
{
    long long wait = 0;
    cf_error err;
    if (strcmp(op->name, "changes") != 0 ||
        json_array_size(json_object_get(result, "changes")) != 0 ||
        cf_api_param_int(params, "wait", 0, POLL_WAIT_MAX_S, 0, &wait, &err) != CF_OK || !wait)
        return 0;
    srv_poll *q = calloc(1, sizeof *q);
    struct timeval every = {0, POLL_EVERY_MS * 1000};
    if (!q || !(q->tick = event_new(r->w->base, -1, EV_PERSIST, poll_tick, q)) ||
        event_add(q->tick, &every) != 0) {
        if (q && q->tick)
            event_free(q->tick);
        free(q);
        return 0;
    }
    q->r = *r;
    snprintf(q->path, sizeof q->path, "%s", r->path);
    snprintf(q->raw, sizeof q->raw, "%s", r->raw);
    snprintf(q->actor, sizeof q->actor, "%s", p->actor);
    q->r.path = q->path;
    q->r.raw = q->raw;
    q->p = *p;
    q->p.actor = q->actor;
    q->op = op;
    q->params = json_incref(params);
    q->deadline_us = cf_time_now_us() + wait * 1000000LL;
    q->evcon = evhttp_request_get_connection(r->req);
    evhttp_connection_set_closecb(q->evcon, poll_closed, q);
    r->w->inflight++; /* a stopping worker waits for it (at most its grace period) */
    r->deferred = 1;
    return 1;
}

void srv_api_dispatch(srv_req *r, int method)
{
    cf_principal p;
    char actor[64], dir[4200] = "", file[4400] = "";
    cf_api_method m;
    int path_known = 0;
    json_t *params = NULL, *result = NULL;
    cf_error err = {0};

    if (r->on != SRV_ON_TLS) {
        srv_fail_json(r, 404, SRV_CAUSE_NO_ROUTE, "not_found",
                      "the management API answers on the TLS listener only");
        return;
    }
    if (authenticate(r, &p, actor, sizeof actor) != 0)
        return;
    params = json_object();
    const cf_api_op *op =
        api_method(method, &m) == 0 ? cf_api_match(m, r->path, params, &path_known) : NULL;
    if (!op) {
        if (path_known || api_method(method, &m) != 0)
            srv_fail_json(r, 405, SRV_CAUSE_METHOD, "method_not_allowed", "%s: method not allowed",
                          r->path);
        else
            srv_fail_json(r, 404, SRV_CAUSE_NO_ROUTE, "not_found", "no such resource");
        goto out;
    }
    if (add_query(r, params) != 0)
        goto out;
    if (op->flags & CF_API_UPLOAD) {
        if (write_upload(r, params, dir, sizeof dir, file, sizeof file, &err) != CF_OK) {
            srv_fail_err_json(r, &err);
            goto out;
        }
    } else if (add_body(r, params) != 0) {
        goto out;
    }
    note_device(r, op, params);
    if (cf_api_call(r->w->fleet, &p, op, params, &result, &err) != CF_OK)
        srv_fail_err_json(r, &err);
    else if (!poll_hold(r, &p, op, params, result))
        reply_json(r, result);
out:
    remove_upload(dir, file);
    json_decref(result);
    json_decref(params);
}
