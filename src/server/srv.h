/* srv.h - what the server's files share inside src/server: the worker, the request being
 * answered, the route table's types, metrics and the TLS and EST helpers. Not for use
 * outside src/server. */
#ifndef CF_SERVER_SRV_H
#define CF_SERVER_SRV_H

#include <event2/event.h>
#include <event2/http.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "fleet/fleet.h"
#include "server/server.h"

/* ---- metrics (metrics.c) ---- */

/* Why a request failed, for certfleet_http_errors_total{cause}. The fleet's own errors
 * follow SRV_CAUSE_FLEET, one per cf_err code. */
typedef enum {
    SRV_CAUSE_NONE,
    SRV_CAUSE_NO_ROUTE,
    SRV_CAUSE_METHOD,
    SRV_CAUSE_MEDIA_TYPE,
    SRV_CAUSE_BAD_REQUEST,
    SRV_CAUSE_NOT_IMPLEMENTED,
    SRV_CAUSE_UNAUTHENTICATED, /* no client certificate, or one that authenticates nothing */
    SRV_CAUSE_FLEET,           /* + cf_err */
    SRV_CAUSE_COUNT = SRV_CAUSE_FLEET + CF_ERR_INTERNAL + 1,
} srv_cause;

#define SRV_MAX_ROUTES 16
#define SRV_NSTATUS 16  /* the statuses counted one by one; see metrics.c */
#define SRV_NBUCKETS 11 /* latency histogram buckets, +Inf included */

/* EST enrollments by operation and result, for certfleet_est_enrollments_total{op,result}. */
typedef enum { SRV_EST_ENROLL, SRV_EST_REENROLL, SRV_EST_SERVERKEYGEN, SRV_EST_OPS } srv_est_op;
typedef enum {
    SRV_EST_ISSUED,
    SRV_EST_PENDING, /* held for approval */
    SRV_EST_REFUSED, /* 4xx */
    SRV_EST_ERROR,   /* 5xx */
    SRV_EST_RESULTS
} srv_est_result;

/* One worker's counters. Only that worker writes them (relaxed atomics, no lock); the
 * worker that answers /metrics sums every worker's. */
typedef struct {
    atomic_uint_fast64_t requests[SRV_MAX_ROUTES + 1][SRV_NSTATUS];
    atomic_uint_fast64_t latency[SRV_NBUCKETS];
    atomic_uint_fast64_t latency_sum_us;
    atomic_uint_fast64_t errors[SRV_CAUSE_COUNT];
    atomic_uint_fast64_t tls_conns_open;
    atomic_uint_fast64_t tls_conns_total;
    atomic_uint_fast64_t est[SRV_EST_OPS][SRV_EST_RESULTS];
} srv_metrics;

struct srv;
/* A short stable name for c: "no_route", ... and cf_err_name for the fleet's. */
const char *srv_cause_name(srv_cause c);
void srv_metrics_count(srv_metrics *m, int route, int status, int64_t us, srv_cause cause);
void srv_metrics_enroll(srv_metrics *m, srv_est_op op, srv_est_result result);
/* Appends the Prometheus text exposition of every worker's counters to out. */
void srv_metrics_render(const struct srv *s, struct evbuffer *out);

/* ---- the server and its workers (server.c) ---- */

typedef struct srv_worker {
    struct srv *srv;
    int index;
    pthread_t thread;
    struct event_base *base;
    struct evhttp *https, *http;
    struct evhttp_bound_socket *tls_sock, *plain_sock;
    struct event *ctl_ev;     /* activated by the main thread: stop or reload */
    struct event *drain_ev;   /* while stopping: waits for replies in flight */
    struct event *sweep_ev;   /* worker 0: revokes superseded certificates that are due */
    pthread_mutex_t ctl_lock; /* guards the ctl_ fields (touched at stop and reload only) */
    int ctl_stop, ctl_reload;
    SSL_CTX *ctl_ctx; /* a reload's new TLS context, taken over by the worker */
    /* Owned by the worker's thread once it runs: */
    SSL_CTX *ssl_ctx;
    cf_fleet *fleet;
    char *cacerts; /* EST cacerts body (base64 PKCS#7), built at start and reload */
    size_t cacerts_len;
    struct srv_ocsp *ocsp; /* the worker's OCSP responder and response cache (rev.h) */
    struct {
        int valid;
        int64_t bell, seq, read_us;
    } head;    /* the change feed's head as last read, and the bell then (srv_change_head) */
    int conns; /* open TLS connections */
    int accepting_paused; /* TLS listener disabled at the connection cap */
    int inflight;         /* replies handed to evhttp and not yet sent */
    int64_t stop_deadline_us;
    srv_metrics metrics;
} srv_worker;

typedef struct srv {
    cf_server_opts opts;
    int timeout_s, request_timeout_s, max_conns;
    size_t max_body;
    srv_worker *workers;
    int nworkers;
    unsigned char *csrattrs; /* EST csrattrs body (base64 DER), immutable */
    size_t csrattrs_len;
    struct srv_crls *crls; /* the CRLs, shared by the workers (rev.h) */
} srv;

/* ---- requests and routes (http.c, routes.c) ---- */

typedef enum { SRV_ON_TLS = 1, SRV_ON_PLAIN = 2 } srv_listener;

#define SRV_LABEL_MAX 64

typedef struct {
    srv_worker *w;
    struct evhttp_request *req;
    srv_listener on;
    const char *path;              /* the route's path (EST label removed) */
    char label[SRV_LABEL_MAX + 1]; /* the EST label, or "" */
    int status;
    srv_cause cause;
    char device[129]; /* the device the request is about, for the log */
    int64_t start_us;
    const char *raw; /* the path as requested, for the log */
    int method;      /* enum evhttp_cmd_type */
    int route;       /* index in srv_routes, SRV_MAX_ROUTES for none (metrics) */
    int deferred;    /* the handler answers later, with srv_finish (a long poll) */
} srv_req;

/* Counts, logs and sends r's reply: what the dispatcher does after the handler returns,
 * unless the handler set deferred (then it calls this itself, once, on a copy of r whose
 * path and raw outlive the dispatch). */
void srv_finish(srv_req *r);

typedef void (*srv_handler)(srv_req *r);

typedef struct {
    const char *path;  /* exact path; one ending in '/' takes every path below it */
    unsigned on;       /* SRV_ON_TLS | SRV_ON_PLAIN */
    int method;        /* enum evhttp_cmd_type */
    const char *ctype; /* required request Content-Type (type/subtype), or NULL */
    int label;         /* accepts /.well-known/est/LABEL/... */
    srv_handler run;
} srv_route;

extern const srv_route srv_routes[]; /* terminated by {NULL} */
extern const int srv_nroutes;

/* A TLS connection's request began (started 1: its deadline is off) or its reply went out
 * (0: the next request must be in within the timeout). See server.c. */
void srv_conn_request(struct evhttp_connection *evcon, int started);

/* The evhttp callback of both listeners: routes, frames, counts and logs one request.
 * arg is the worker; the listener is told by which evhttp the request came from. */
void srv_http_dispatch(struct evhttp_request *req, void *arg);

/* Replies: each handler calls exactly one. The body is copied. */
void srv_reply(srv_req *r, int status, const char *ctype, const void *body, size_t len);
/* An RFC 7030 base64 body: Content-Transfer-Encoding: base64 beside ctype. */
void srv_reply_base64(srv_req *r, const char *ctype, const void *b64, size_t len);
/* A plain-text error with a reason a person can act on; cause is counted. */
void srv_fail(srv_req *r, int status, srv_cause cause, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The one mapping from the fleet's errors to statuses (5xx hide the message). */
void srv_fail_err(srv_req *r, const cf_error *err);

/* ---- TLS (tls.c) ---- */

/* Makes sure DATA/keys/server.{key,pem} hold a server certificate from the active issuing
 * CA, valid for a while yet, whose SANs are exactly the names given; issues a new one
 * (new key, 0600) when not. Then builds the TLS context: TLS 1.2-1.3, client certificates
 * requested and not required (the application decides), trust in certfleet's own chain.
 * *out: SSL_CTX_free. */
cf_err srv_tls_context(const cf_server_opts *o, SSL_CTX **out, cf_error *err);

/* ---- EST payloads (est.c) ---- */

/* The issuing chain as base64 of a DER PKCS#7 certs-only (RFC 7030 4.1.3). *out: free(). */
cf_err srv_est_cacerts(cf_fleet *f, char **out, size_t *len, cf_error *err);
/* base64 of the DER CsrAttrs (RFC 7030 4.5.2): EC P-256 keys, ECDSA with SHA-256.
 * *out: free(). */
cf_err srv_est_csrattrs(unsigned char **out, size_t *len, cf_error *err);

/* base64 as clients send it (EST bodies, OCSP GET paths): white space and line breaks
 * skipped, anything else not base64 refused (RFC 8951). Returns the decoded length (at
 * least 1) with *out (free()), or -1 for no base64 or nothing decoded. */
long srv_base64_decode(const void *b64, size_t n, unsigned char **out);

/* ---- EST enrollment and the device's own view (est_enroll.c) ---- */

/* RFC 7030 4.2.1, 4.2.2, 4.4 and GET /api/v1/device/self: route handlers. */
void srv_est_simpleenroll(srv_req *r);
void srv_est_simplereenroll(srv_req *r);
void srv_est_serverkeygen(srv_req *r);
void srv_device_self(srv_req *r);

#endif
