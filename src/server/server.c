/* server.c - the workers, their listeners and the signals (see server.h). */
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "fleet/enroll.h"
#include "server/rev.h"
#include "server/srv.h"

#define DEFAULT_LISTEN "127.0.0.1:8443"
#define DEFAULT_HTTP "127.0.0.1:8080"
#define DEFAULT_TIMEOUT_S 30
#define DEFAULT_REQUEST_TIMEOUT_S 60
#define DEFAULT_MAX_BODY (64 * 1024)
#define DEFAULT_MAX_UPLOAD (64 * 1024 * 1024)
#define DEFAULT_MAX_CONNS 4096
#define MAX_HEADERS_SIZE (16 * 1024)
#define STOP_GRACE_US (10 * 1000000LL)
#define SWEEP_INTERVAL_S 5

/* ---- TLS connections and the connection cap ---- */

/* One TLS connection: its worker, and the deadline by which its next request must be in
 * (handshake, head and body). A client that trickles a byte now and then is never idle long
 * enough for the idle timeout; the deadline closes it all the same. */
typedef struct {
    srv_worker *w;
    struct bufferevent *bev;
    struct event *deadline;
} srv_conn;

/* The SSL ex_data slot that ties a connection to its srv_conn: freeing the SSL (when evhttp
 * frees the connection) is how the worker learns the connection closed. Set once. */
static int conn_slot = -1;
static pthread_once_t conn_slot_once = PTHREAD_ONCE_INIT;

static void conn_closed(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    srv_conn *c = ptr;
    if (!c)
        return;
    srv_worker *w = c->w;
    if (c->deadline)
        event_free(c->deadline);
    free(c);
    w->conns--;
    atomic_store_explicit(&w->metrics.tls_conns_open, (uint64_t)w->conns, memory_order_relaxed);
    if (w->accepting_paused && w->conns < w->srv->max_conns && w->tls_sock) {
        evconnlistener_enable(evhttp_bound_socket_get_listener(w->tls_sock));
        w->accepting_paused = 0;
    }
}

static void conn_slot_init(void)
{
    conn_slot = SSL_get_ex_new_index(0, NULL, NULL, NULL, conn_closed);
}

/* The deadline passed with no request in: shut the socket, and evhttp closes the
 * connection as it would for a client that left. */
static void conn_deadline(evutil_socket_t fd, short what, void *arg)
{
    srv_conn *c = arg;
    evutil_socket_t s = bufferevent_getfd(c->bev);
    if (s >= 0)
        shutdown(s, SHUT_RDWR);
}

void srv_conn_request(struct evhttp_connection *evcon, int started)
{
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    SSL *ssl = bev ? bufferevent_openssl_get_ssl(bev) : NULL;
    srv_conn *c = ssl ? SSL_get_ex_data(ssl, conn_slot) : NULL;
    if (!c || !c->deadline)
        return;
    if (started) {
        evtimer_del(c->deadline);
    } else {
        struct timeval tv = {c->w->srv->request_timeout_s, 0};
        evtimer_add(c->deadline, &tv);
    }
}

/* evhttp's bufferevent factory for the TLS listener. At the cap the worker stops accepting;
 * further clients wait in the kernel's queue (or go to another worker) until one closes. */
static struct bufferevent *tls_bev(struct event_base *base, void *arg)
{
    srv_worker *w = arg;
    srv_conn *c = calloc(1, sizeof *c);
    SSL *ssl = c ? SSL_new(w->ssl_ctx) : NULL;
    struct timeval tv = {w->srv->request_timeout_s, 0};
    if (!ssl) {
        free(c);
        return NULL;
    }
    struct bufferevent *bev = bufferevent_openssl_socket_new(
        base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        free(c);
        return NULL;
    }
    c->w = w;
    c->bev = bev;
    if ((c->deadline = evtimer_new(base, conn_deadline, c)) != NULL)
        evtimer_add(c->deadline, &tv);
    SSL_set_ex_data(ssl, conn_slot, c);
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    w->conns++;
    atomic_store_explicit(&w->metrics.tls_conns_open, (uint64_t)w->conns, memory_order_relaxed);
    atomic_store_explicit(&w->metrics.tls_conns_total,
                          atomic_load_explicit(&w->metrics.tls_conns_total, memory_order_relaxed) +
                              1,
                          memory_order_relaxed);
    if (w->conns >= w->srv->max_conns && !w->accepting_paused) {
        evconnlistener_disable(evhttp_bound_socket_get_listener(w->tls_sock));
        w->accepting_paused = 1;
    }
    return bev;
}

/* ---- workers ---- */

static cf_err bind_one(srv_worker *w, struct evhttp *http, const char *addr,
                       struct evhttp_bound_socket **out, cf_error *err)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (evutil_parse_sockaddr_port(addr, (struct sockaddr *)&ss, &len) != 0)
        return cf_error_set(err, CF_ERR_INVALID, "%s: expected ADDR:PORT", addr);
    struct evconnlistener *lev = evconnlistener_new_bind(
        w->base, NULL, NULL,
        LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
        1024, (struct sockaddr *)&ss, len);
    if (!lev)
        return cf_error_set(err, CF_ERR_IO, "%s: cannot listen: %s", addr,
                            evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    /* A reply leaves in several TLS records; with Nagle the last waits for the client's
     * delayed ACK (40 ms per keep-alive request). Accepted sockets inherit TCP_NODELAY. */
    int one = 1;
    setsockopt(evconnlistener_get_fd(lev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (!(*out = evhttp_bind_listener(http, lev))) {
        evconnlistener_free(lev);
        return cf_error_set(err, CF_ERR_IO, "%s: cannot listen", addr);
    }
    return CF_OK;
}

static struct evhttp *http_new(srv_worker *w)
{
    struct evhttp *h = evhttp_new(w->base);
    if (!h)
        return NULL;
    evhttp_set_gencb(h, srv_http_dispatch, w);
    evhttp_set_max_body_size(h, (ev_ssize_t)w->srv->max_body);
    evhttp_set_max_headers_size(h, MAX_HEADERS_SIZE);
    evhttp_set_timeout(h, w->srv->timeout_s);
    return h;
}

/* What a worker loads from the store: its fleet and the EST cacerts body. On failure the
 * worker keeps what it had. */
static cf_err worker_load(srv_worker *w, cf_error *err)
{
    cf_fleet *f = NULL;
    char *cacerts = NULL;
    size_t len = 0;
    srv_ocsp *ocsp = NULL;
    cf_err rc = cf_fleet_open(w->srv->opts.data_dir, w->srv->opts.store_url, &f, err);
    if (rc == CF_OK)
        rc = srv_est_cacerts(f, &cacerts, &len, err);
    if (rc == CF_OK)
        rc = srv_ocsp_new(f, &ocsp, err);
    if (rc != CF_OK) {
        free(cacerts);
        cf_fleet_close(f);
        return rc;
    }
    cf_fleet_close(w->fleet);
    free(w->cacerts);
    srv_ocsp_free(w->ocsp);
    w->fleet = f;
    w->cacerts = cacerts;
    w->cacerts_len = len;
    w->ocsp = ocsp;
    return CF_OK;
}

static void drain_check(evutil_socket_t fd, short what, void *arg)
{
    srv_worker *w = arg;
    if (w->inflight <= 0 || cf_time_now_us() > w->stop_deadline_us)
        event_base_loopexit(w->base, NULL);
}

/* Stops accepting on both listeners, then leaves the loop once the replies in flight are
 * out (or the grace period ends). */
static void worker_stop(srv_worker *w)
{
    struct timeval tick = {0, 20000};
    if (w->tls_sock)
        evhttp_del_accept_socket(w->https, w->tls_sock);
    if (w->plain_sock)
        evhttp_del_accept_socket(w->http, w->plain_sock);
    w->tls_sock = w->plain_sock = NULL;
    w->stop_deadline_us = cf_time_now_us() + STOP_GRACE_US;
    w->drain_ev = event_new(w->base, -1, EV_PERSIST, drain_check, w);
    if (!w->drain_ev || event_add(w->drain_ev, &tick) != 0)
        event_base_loopexit(w->base, NULL);
}

/* Runs on the worker's thread when the main thread signals it. */
static void worker_ctl(evutil_socket_t fd, short what, void *arg)
{
    srv_worker *w = arg;
    cf_error err = {0};
    pthread_mutex_lock(&w->ctl_lock);
    int stop = w->ctl_stop, reload = w->ctl_reload;
    SSL_CTX *ctx = w->ctl_ctx;
    w->ctl_reload = 0;
    w->ctl_ctx = NULL;
    pthread_mutex_unlock(&w->ctl_lock);
    if (ctx) {
        /* Connections hold their own reference on the context they started with. */
        SSL_CTX_free(w->ssl_ctx);
        w->ssl_ctx = ctx;
    }
    if (reload && !stop && worker_load(w, &err) != CF_OK)
        cf_log(CF_LOG_ERROR, "serve: worker %d: reload: %s (keeping the previous settings)",
               w->index, err.msg);
    if (stop && !w->drain_ev)
        worker_stop(w);
}

/* Worker 0's timer: re-enrollments leave the certificates they supersede good for the
 * owner's grace period; this revokes those whose period has ended. */
static void sweep(evutil_socket_t fd, short what, void *arg)
{
    srv_worker *w = arg;
    cf_error err = {0};
    size_t n = 0;
    if (cf_fleet_supersede_due(w->fleet, (int64_t)time(NULL), &n, &err) != CF_OK)
        cf_log(CF_LOG_ERROR, "serve: revoking superseded certificates: %s (retrying in %d s)",
               err.msg, SWEEP_INTERVAL_S);
    else if (n)
        cf_log(CF_LOG_INFO, "serve: %zu superseded certificate%s revoked", n, n == 1 ? "" : "s");
}

static cf_err sweep_start(srv_worker *w, cf_error *err)
{
    struct timeval every = {SWEEP_INTERVAL_S, 0};
    if (!(w->sweep_ev = event_new(w->base, -1, EV_PERSIST, sweep, w)) ||
        event_add(w->sweep_ev, &every) != 0)
        return cf_error_set(err, CF_ERR_NOMEM, "worker %d: cannot start its timer", w->index);
    return CF_OK;
}

static void *worker_main(void *arg)
{
    srv_worker *w = arg;
    event_base_dispatch(w->base);
    return NULL;
}

/* A worker's event loop. With epoll's change list, the interest changes of one loop turn
 * are handed to the kernel together, and those that cancel out (a connection's write
 * interest added and dropped around each reply on a keep-alive connection) not at all:
 * epoll_ctl was a tenth of the server's time under keep-alive OCSP load. No descriptor here
 * is a dup() of another, the case the change list cannot handle. */
static struct event_base *worker_base(void)
{
    struct event_config *cfg = event_config_new();
    struct event_base *base = NULL;
    if (cfg && event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST) == 0)
        base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    return base ? base : event_base_new();
}

static cf_err worker_init(srv *s, srv_worker *w, int index, SSL_CTX *ctx, cf_error *err)
{
    w->srv = s;
    w->index = index;
    pthread_mutex_init(&w->ctl_lock, NULL);
    if (!(w->base = worker_base()) || !(w->https = http_new(w)) || !(w->http = http_new(w)) ||
        !(w->ctl_ev = event_new(w->base, -1, 0, worker_ctl, w)))
        return cf_error_set(err, CF_ERR_NOMEM, "worker %d: out of memory", index);
    SSL_CTX_up_ref(ctx);
    w->ssl_ctx = ctx;
    evhttp_set_bevcb(w->https, tls_bev, w);
    /* libevent 2.1 checks one body cap per connection, before any callback of ours: the TLS
     * listener's is the upload cap, and http.c holds every other route to max_body. */
    size_t upload = s->opts.max_upload ? s->opts.max_upload : DEFAULT_MAX_UPLOAD;
    evhttp_set_max_body_size(w->https, (ev_ssize_t)(upload > s->max_body ? upload : s->max_body));
    /* The plain listener lets a little more through than max_body, so that http.c answers
     * an oversized OCSP request with its own 413 rather than libevent's HTML page. */
    evhttp_set_max_body_size(w->http, (ev_ssize_t)(4 * s->max_body + 4096));
    cf_err rc = worker_load(w, err);
    if (rc == CF_OK && index == 0)
        rc = sweep_start(w, err);
    if (rc == CF_OK)
        rc = bind_one(w, w->https, s->opts.listen, &w->tls_sock, err);
    if (rc == CF_OK)
        rc = bind_one(w, w->http, s->opts.http, &w->plain_sock, err);
    return rc;
}

static void worker_free(srv_worker *w)
{
    if (!w->srv)
        return; /* never initialised */
    if (w->https)
        evhttp_free(w->https);
    if (w->http)
        evhttp_free(w->http);
    if (w->ctl_ev)
        event_free(w->ctl_ev);
    if (w->drain_ev)
        event_free(w->drain_ev);
    if (w->sweep_ev)
        event_free(w->sweep_ev);
    if (w->base)
        event_base_free(w->base);
    SSL_CTX_free(w->ssl_ctx);
    SSL_CTX_free(w->ctl_ctx);
    srv_ocsp_free(w->ocsp);
    cf_fleet_close(w->fleet);
    free(w->cacerts);
    pthread_mutex_destroy(&w->ctl_lock);
}

/* Hands each worker a stop or reload request (and a new TLS context) and wakes it. */
static void workers_signal(srv *s, int stop, SSL_CTX *ctx)
{
    for (int i = 0; i < s->nworkers; i++) {
        srv_worker *w = &s->workers[i];
        pthread_mutex_lock(&w->ctl_lock);
        if (stop)
            w->ctl_stop = 1;
        else
            w->ctl_reload = 1;
        if (ctx) {
            SSL_CTX_up_ref(ctx);
            SSL_CTX_free(w->ctl_ctx);
            w->ctl_ctx = ctx;
        }
        pthread_mutex_unlock(&w->ctl_lock);
        event_active(w->ctl_ev, EV_READ, 0);
    }
}

/* ---- the main thread: signals ---- */

typedef struct {
    srv *s;
    struct event_base *base;
} main_ctx;

static void on_stop(evutil_socket_t sig, short what, void *arg)
{
    main_ctx *m = arg;
    cf_log(CF_LOG_INFO, "serve: %s: stopping (finishing replies in flight)",
           sig == SIGTERM ? "SIGTERM" : "SIGINT");
    workers_signal(m->s, 1, NULL);
    event_base_loopexit(m->base, NULL);
}

static void on_reload(evutil_socket_t sig, short what, void *arg)
{
    main_ctx *m = arg;
    SSL_CTX *ctx = NULL;
    cf_error err = {0};
    if (srv_tls_context(&m->s->opts, &ctx, &err) != CF_OK) {
        cf_log(CF_LOG_ERROR, "serve: SIGHUP: %s (keeping the current TLS context)", err.msg);
        workers_signal(m->s, 0, NULL);
        return;
    }
    workers_signal(m->s, 0, ctx);
    SSL_CTX_free(ctx);
    cf_log(CF_LOG_INFO, "serve: SIGHUP: settings and server certificate reloaded");
}

static int default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

static void opts_defaults(srv *s, const cf_server_opts *o)
{
    s->opts = *o;
    if (!s->opts.listen)
        s->opts.listen = DEFAULT_LISTEN;
    if (!s->opts.http)
        s->opts.http = DEFAULT_HTTP;
    s->nworkers = o->threads > 0 ? o->threads : default_threads();
    s->timeout_s = o->timeout_s > 0 ? o->timeout_s : DEFAULT_TIMEOUT_S;
    s->request_timeout_s =
        o->request_timeout_s > 0 ? o->request_timeout_s : DEFAULT_REQUEST_TIMEOUT_S;
    s->max_body = o->max_body > 0 ? o->max_body : DEFAULT_MAX_BODY;
    s->max_conns = o->max_conns > 0 ? o->max_conns : DEFAULT_MAX_CONNS;
}

cf_err cf_server_run(const cf_server_opts *o, cf_error *err)
{
    srv s = {0};
    SSL_CTX *ctx = NULL;
    struct event_base *base = NULL;
    struct event *sig_ev[3] = {NULL, NULL, NULL};
    int started = 0;
    sigset_t block, old;
    cf_error crl_err;
    cf_err rc = CF_OK;

    opts_defaults(&s, o);
    signal(SIGPIPE, SIG_IGN);
    if (evthread_use_pthreads() != 0)
        return cf_error_set(err, CF_ERR_INTERNAL, "libevent without thread support");
    pthread_once(&conn_slot_once, conn_slot_init);
    if (conn_slot < 0)
        return cf_error_openssl(err, CF_ERR_CRYPTO, "SSL ex_data index");
    if ((rc = srv_tls_context(&s.opts, &ctx, err)) != CF_OK ||
        (rc = srv_est_csrattrs(&s.csrattrs, &s.csrattrs_len, err)) != CF_OK ||
        (rc = srv_crls_new(&s.crls, err)) != CF_OK)
        goto out;
    if (!(s.workers = calloc((size_t)s.nworkers, sizeof *s.workers))) {
        rc = cf_error_set(err, CF_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < s.nworkers; i++)
        if ((rc = worker_init(&s, &s.workers[i], i, ctx, err)) != CF_OK)
            goto out;
    /* The CRLs are ready before the first request; one that cannot be built now (a CA key
     * in a token without its PIN, say) is tried again on request. */
    if (srv_crls_prepare(s.crls, s.workers[0].fleet, &crl_err) != CF_OK)
        cf_log(CF_LOG_WARN, "serve: CRLs: %s", crl_err.msg);

    main_ctx m = {&s, NULL};
    if (!(base = m.base = event_base_new()) ||
        !(sig_ev[0] = evsignal_new(base, SIGTERM, on_stop, &m)) ||
        !(sig_ev[1] = evsignal_new(base, SIGINT, on_stop, &m)) ||
        !(sig_ev[2] = evsignal_new(base, SIGHUP, on_reload, &m)) || evsignal_add(sig_ev[0], NULL) ||
        evsignal_add(sig_ev[1], NULL) || evsignal_add(sig_ev[2], NULL)) {
        rc = cf_error_set(err, CF_ERR_INTERNAL, "cannot set up signal handling");
        goto out;
    }
    /* Workers block the signals so that only the main thread's loop sees them. */
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    for (; started < s.nworkers; started++)
        if (pthread_create(&s.workers[started].thread, NULL, worker_main, &s.workers[started])) {
            rc = cf_error_set(err, CF_ERR_INTERNAL, "cannot start worker %d", started);
            break;
        }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != CF_OK) {
        workers_signal(&s, 1, NULL);
    } else {
        cf_log(CF_LOG_INFO, "serve: listening on https://%s (EST) and http://%s with %d workers",
               s.opts.listen, s.opts.http, s.nworkers);
        event_base_dispatch(base);
    }
    for (int i = 0; i < started; i++)
        pthread_join(s.workers[i].thread, NULL);
    if (rc == CF_OK)
        cf_log(CF_LOG_INFO, "serve: stopped");
out:
    for (int i = 0; i < 3; i++)
        if (sig_ev[i])
            event_free(sig_ev[i]);
    if (base)
        event_base_free(base);
    for (int i = 0; s.workers && i < s.nworkers; i++)
        worker_free(&s.workers[i]);
    free(s.workers);
    free(s.csrattrs);
    srv_crls_free(s.crls);
    SSL_CTX_free(ctx);
    return rc;
}
