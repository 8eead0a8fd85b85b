/* routes.c - the route table and its handlers. Framing, status mapping, metrics and the log
 * are http.c's: a handler produces its body and nothing else. */
#include <event2/buffer.h>
#include <string.h>

#include "server/rev.h"
#include "server/srv.h"

static void healthz(srv_req *r)
{
    srv_reply(r, 200, "text/plain; charset=utf-8", "ok\n", 3);
}

static void metrics(srv_req *r)
{
    r->status = 200;
    evhttp_add_header(evhttp_request_get_output_headers(r->req), "Content-Type",
                      "text/plain; version=0.0.4; charset=utf-8");
    srv_metrics_render(r->w->srv, evhttp_request_get_output_buffer(r->req));
}

/* RFC 7030 4.1: the same chain under every label until labels name owners with CAs of
 * their own. */
static void est_cacerts(srv_req *r)
{
    if (!r->w->cacerts) {
        srv_fail(r, 503, SRV_CAUSE_FLEET + CF_ERR_UNAVAILABLE, "CA certificates not loaded");
        return;
    }
    srv_reply_base64(r, "application/pkcs7-mime; smime-type=certs-only", r->w->cacerts,
                     r->w->cacerts_len);
}

/* RFC 7030 4.5 */
static void est_csrattrs(srv_req *r)
{
    srv_reply_base64(r, "application/csrattrs", r->w->srv->csrattrs, r->w->srv->csrattrs_len);
}

static void ocsp_post(srv_req *r)
{
    srv_ocsp_post(r, r->w->ocsp);
}

static void ocsp_get(srv_req *r)
{
    srv_ocsp_get(r, r->w->ocsp);
}

static void crl_get(srv_req *r)
{
    srv_crl_get(r, r->w->srv->crls);
}

static void ca_get(srv_req *r)
{
    srv_ca_get(r);
}

#define EST "/.well-known/est/"
#define GET EVHTTP_REQ_GET
#define POST EVHTTP_REQ_POST
#define BOTH (SRV_ON_TLS | SRV_ON_PLAIN)

const srv_route srv_routes[] = {
    {"/healthz", BOTH, GET, NULL, 0, healthz},
    {"/metrics", SRV_ON_PLAIN, GET, NULL, 0, metrics},
    {EST "cacerts", SRV_ON_TLS, GET, NULL, 1, est_cacerts},
    {EST "csrattrs", SRV_ON_TLS, GET, NULL, 1, est_csrattrs},
    {EST "simpleenroll", SRV_ON_TLS, POST, "application/pkcs10", 1, srv_est_simpleenroll},
    {EST "simplereenroll", SRV_ON_TLS, POST, "application/pkcs10", 1, srv_est_simplereenroll},
    {EST "serverkeygen", SRV_ON_TLS, POST, "application/pkcs10", 1, srv_est_serverkeygen},
    {"/api/v1/device/self", SRV_ON_TLS, GET, NULL, 0, srv_device_self},
    /* revocation data, on the plain listener as RFC 5019 expects; the OCSP handlers check
     * the Content-Type themselves, to answer in OCSP */
    {"/ocsp", SRV_ON_PLAIN, POST, NULL, 0, ocsp_post},
    {"/ocsp/", SRV_ON_PLAIN, GET, NULL, 0, ocsp_get},
    {"/crl/", SRV_ON_PLAIN, GET, NULL, 0, crl_get},
    {"/ca/", SRV_ON_PLAIN, GET, NULL, 0, ca_get},
    {NULL, 0, 0, NULL, 0, NULL},
};

const int srv_nroutes = (int)(sizeof srv_routes / sizeof srv_routes[0]) - 1;

_Static_assert(sizeof srv_routes / sizeof srv_routes[0] - 1 <= SRV_MAX_ROUTES,
               "raise SRV_MAX_ROUTES");
