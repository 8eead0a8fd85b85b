/* est_enroll.c - the EST enrollment handlers (RFC 7030 4.2 simpleenroll and simplereenroll,
 * 4.4 serverkeygen; base64 as RFC 8951 says) and GET /api/v1/device/self. They read what the
 * connection proved (the client certificate) and the CSR, and leave every decision to the
 * fleet (fleet/enroll.h); what is left here is decoding and encoding. */
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "fleet/enroll.h"
#include "server/srv.h"

#define CERTS_ONLY "application/pkcs7-mime; smime-type=certs-only"

/* The client's certificate as DER (*der: OPENSSL_free), or NULL when it sent none. */
/* The client's certificate as the TLS handshake decoded it (borrowed), or NULL. */
static X509 *peer_cert(srv_req *r)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(r->req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    SSL *ssl = bev ? bufferevent_openssl_get_ssl(bev) : NULL;
    return ssl ? SSL_get0_peer_certificate(ssl) : NULL;
}

/* The client's certificate: in req (DER, and the handshake's X509) and, for the caller to
 * free, *der (OPENSSL_free; NULL when the client sent none). */
static void peer_into(srv_req *r, cf_enroll_req *req, unsigned char **der)
{
    X509 *peer = peer_cert(r);
    int n = peer ? i2d_X509(peer, der) : -1;
    if (n <= 0) {
        OPENSSL_free(*der);
        *der = NULL;
        return;
    }
    req->client_der = *der;
    req->client_der_len = (size_t)n;
    req->client_x509 = peer;
}

/* The body's base64 (line breaks and other white space tolerated, RFC 8951) decoded into
 * *out (free()). Answers 400 itself and returns -1 when it is not base64 or is empty. */
static int body_der(srv_req *r, unsigned char **out, size_t *len)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(r->req);
    size_t n = evbuffer_get_length(in);
    long got = n ? srv_base64_decode(evbuffer_pullup(in, (ev_ssize_t)n), n, out) : -1;
    if (got < 0) {
        srv_fail(r, 400, SRV_CAUSE_BAD_REQUEST,
                 "%s: the body must be a CSR as base64 of its DER (RFC 7030 4.2.1, RFC 8951):"
                 " base64 expected",
                 r->path);
        return -1;
    }
    *len = (size_t)got;
    return 0;
}

/* base64 with a line break (LF, as cacerts and the base64 tools expect) every 64 characters,
 * into out. */
static int append_base64(struct evbuffer *out, const unsigned char *der, size_t len)
{
    char line[65 + 1];
    for (size_t off = 0; off < len; off += 48) {
        size_t chunk = len - off < 48 ? len - off : 48;
        int n = EVP_EncodeBlock((unsigned char *)line, der + off, (int)chunk);
        line[n++] = '\n';
        if (evbuffer_add(out, line, (size_t)n) != 0)
            return -1;
    }
    return 0;
}

/* The DER of a certs-only PKCS#7 holding cert (RFC 7030 4.2.3). *der: OPENSSL_free. */
static int certs_only(const cf_signed_cert *cert, unsigned char **der)
{
    const unsigned char *ders[] = {cert->der};
    return cf_x509_certs_only(ders, &cert->der_len, 1, der);
}

static void count(srv_req *r, srv_est_op op, srv_est_result result)
{
    srv_metrics_enroll(&r->w->metrics, op, result);
}

/* The reply to a failed enrollment: 401 when no device is authenticated, else the fleet's
 * error through the one table. */
static void enroll_failed(srv_req *r, srv_est_op op, const cf_enroll_result *res,
                          const cf_error *err)
{
    if (res->unauthenticated) {
        srv_fail(r, 401, SRV_CAUSE_UNAUTHENTICATED, "%s", err->msg);
        count(r, op, SRV_EST_REFUSED);
        return;
    }
    srv_fail_err(r, err);
    count(r, op, r->status >= 500 ? SRV_EST_ERROR : SRV_EST_REFUSED);
}

static void reply_pending(srv_req *r, srv_est_op op, const cf_enroll_result *res)
{
    char after[16];
    snprintf(after, sizeof after, "%d", res->retry_after_s);
    srv_fail(r, 202, SRV_CAUSE_NONE,
             "enrollment of device %s is held for approval by its owner; retry after %d s",
             res->device, res->retry_after_s);
    evhttp_add_header(evhttp_request_get_output_headers(r->req), "Retry-After", after);
    count(r, op, SRV_EST_PENDING);
}

static void reply_cert(srv_req *r, srv_est_op op, const cf_signed_cert *cert)
{
    unsigned char *der = NULL;
    int n = certs_only(cert, &der);
    struct evbuffer *body = evbuffer_new();
    if (n <= 0 || !body || append_base64(body, der, (size_t)n) != 0) {
        srv_fail(r, 500, SRV_CAUSE_FLEET + CF_ERR_CRYPTO, "%s: cannot encode the certificate",
                 r->path);
        count(r, op, SRV_EST_ERROR);
    } else {
        r->status = 200;
        struct evkeyvalq *h = evhttp_request_get_output_headers(r->req);
        evhttp_add_header(h, "Content-Type", CERTS_ONLY);
        evhttp_add_header(h, "Content-Transfer-Encoding", "base64");
        evbuffer_add_buffer(evhttp_request_get_output_buffer(r->req), body);
        count(r, op, SRV_EST_ISSUED);
    }
    if (body)
        evbuffer_free(body);
    OPENSSL_free(der);
}

/* RFC 7030 4.4.2: multipart/mixed, the private key (PKCS#8) first, then the certificate. */
static void reply_keygen(srv_req *r, const cf_enroll_result *res)
{
    unsigned char *key = NULL, *p7 = NULL, rnd[12];
    char boundary[40], hex[25], ctype[80];
    int kn = -1;
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(res->key);
    struct evbuffer *body = evbuffer_new();
    int pn = certs_only(&res->cert, &p7);
    if (p8)
        kn = i2d_PKCS8_PRIV_KEY_INFO(p8, &key);
    int ok = kn > 0 && pn > 0 && body && RAND_bytes(rnd, sizeof rnd) == 1;
    if (ok) {
        snprintf(boundary, sizeof boundary, "est-%s", cf_hex_encode(rnd, sizeof rnd, 0, hex));
        ok = evbuffer_add_printf(body,
                                 "--%s\r\nContent-Type: application/pkcs8\r\n"
                                 "Content-Transfer-Encoding: base64\r\n\r\n",
                                 boundary) > 0 &&
             append_base64(body, key, (size_t)kn) == 0 &&
             evbuffer_add_printf(body,
                                 "--%s\r\nContent-Type: " CERTS_ONLY "\r\n"
                                 "Content-Transfer-Encoding: base64\r\n\r\n",
                                 boundary) > 0 &&
             append_base64(body, p7, (size_t)pn) == 0 &&
             evbuffer_add_printf(body, "--%s--\r\n", boundary) > 0;
    }
    if (ok) {
        r->status = 200;
        snprintf(ctype, sizeof ctype, "multipart/mixed; boundary=%s", boundary);
        evhttp_add_header(evhttp_request_get_output_headers(r->req), "Content-Type", ctype);
        evbuffer_add_buffer(evhttp_request_get_output_buffer(r->req), body);
        count(r, SRV_EST_SERVERKEYGEN, SRV_EST_ISSUED);
    } else {
        srv_fail(r, 500, SRV_CAUSE_FLEET + CF_ERR_CRYPTO, "%s: cannot encode the key", r->path);
        count(r, SRV_EST_SERVERKEYGEN, SRV_EST_ERROR);
    }
    if (body)
        evbuffer_free(body); /* evbuffer_add_buffer moved the bytes: nothing of the key stays */
    if (key)
        OPENSSL_clear_free(key, (size_t)kn);
    PKCS8_PRIV_KEY_INFO_free(p8);
    OPENSSL_free(p7);
}

typedef cf_err (*enroll_fn)(cf_fleet *f, const cf_enroll_req *req, cf_enroll_result *res,
                            cf_error *err);

static void enroll_common(srv_req *r, srv_est_op op, enroll_fn fn)
{
    cf_enroll_req req = {.label = r->label};
    cf_enroll_result res = {0};
    cf_error err = {0};
    unsigned char *csr = NULL, *client = NULL;
    size_t csr_len = 0;
    if (body_der(r, &csr, &csr_len) != 0) {
        count(r, op, SRV_EST_REFUSED);
        return;
    }
    peer_into(r, &req, &client);
    req.csr = csr;
    req.csr_len = csr_len;
    cf_err rc = fn(r->w->fleet, &req, &res, &err);
    snprintf(r->device, sizeof r->device, "%s", res.device);
    if (rc != CF_OK)
        enroll_failed(r, op, &res, &err);
    else if (res.pending)
        reply_pending(r, op, &res);
    else if (op == SRV_EST_SERVERKEYGEN)
        reply_keygen(r, &res);
    else
        reply_cert(r, op, &res.cert);
    cf_enroll_result_clear(&res);
    OPENSSL_free(client);
    free(csr);
}

void srv_est_simpleenroll(srv_req *r)
{
    enroll_common(r, SRV_EST_ENROLL, cf_fleet_enroll);
}

void srv_est_simplereenroll(srv_req *r)
{
    enroll_common(r, SRV_EST_REENROLL, cf_fleet_reenroll);
}

void srv_est_serverkeygen(srv_req *r)
{
    enroll_common(r, SRV_EST_SERVERKEYGEN, cf_fleet_serverkeygen);
}

void srv_device_self(srv_req *r)
{
    cf_enroll_result res = {0};
    cf_error err = {0};
    json_t *j = NULL;
    unsigned char *client = NULL;
    cf_enroll_req req = {0};
    peer_into(r, &req, &client);
    cf_err rc = cf_fleet_device_self(r->w->fleet, &req, &res, &j, &err);
    snprintf(r->device, sizeof r->device, "%s", res.device);
    if (rc != CF_OK && res.unauthenticated) {
        srv_fail(r, 401, SRV_CAUSE_UNAUTHENTICATED, "%s", err.msg);
    } else if (rc != CF_OK) {
        srv_fail_err(r, &err);
    } else {
        char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (s)
            srv_reply(r, 200, "application/json", s, strlen(s));
        else
            srv_fail(r, 503, SRV_CAUSE_FLEET + CF_ERR_NOMEM, "out of memory");
        free(s);
    }
    json_decref(j);
    OPENSSL_free(client);
}
