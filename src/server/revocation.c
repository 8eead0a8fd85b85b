/* revocation.c - OCSP and CRLs over HTTP (see rev.h). */
#include <ctype.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/log.h"
#include "core/util.h"
#include "fleet/revoke.h"
#include "server/rev.h"

#define OCSP_VALIDITY_S 3600   /* nextUpdate - thisUpdate of an OCSP response */
#define OCSP_REFRESH_S 1800    /* a cached response is signed anew after this long */
#define OCSP_CACHE_SLOTS 65536 /* per worker; a power of two */
#define OCSP_KEY_MAX 160       /* longest request kept as a cache key (RFC 5019's are ~80) */
#define CRL_REBASE_S 3600      /* a delta CRL's base full CRL is at most this old */

static void set_header(srv_req *r, const char *name, const char *value)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(r->req);
    evhttp_remove_header(h, name);
    evhttp_add_header(h, name, value);
}

static void http_date(int64_t t, char out[64])
{
    struct tm tm;
    time_t tt = (time_t)t;
    gmtime_r(&tt, &tm);
    strftime(out, 64, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* A strong validator derived from the bytes: the first 16 bytes of their SHA-256. */
static void etag_of(const unsigned char *der, size_t len, char out[40])
{
    unsigned char md[32];
    unsigned int n;
    EVP_Digest(der, len, md, &n, EVP_sha256(), NULL);
    out[0] = '"';
    cf_hex_encode(md, 16, 0, out + 1);
    out[33] = '"';
    out[34] = '\0';
}

/* The caching headers RFC 5019 6.2 asks for, from thisUpdate to nextUpdate. */
static void cache_headers(srv_req *r, int64_t this_update, int64_t next_update, const char *etag)
{
    char when[64], cc[96];
    int64_t now = time(NULL), age = next_update - now;
    http_date(this_update, when);
    set_header(r, "Last-Modified", when);
    http_date(next_update, when);
    set_header(r, "Expires", when);
    snprintf(cc, sizeof cc, "max-age=%lld, public, no-transform, must-revalidate",
             (long long)(age > 0 ? age : 0));
    set_header(r, "Cache-Control", cc);
    set_header(r, "ETag", etag);
}

/* 1 when the request's If-None-Match names etag. */
static int not_modified(srv_req *r, const char *etag)
{
    const char *inm = evhttp_find_header(evhttp_request_get_input_headers(r->req), "If-None-Match");
    return inm && strstr(inm, etag) != NULL;
}

/* ---- OCSP ---- */

/* A cached response, keyed by the exact bytes of the request it answers (one CertID, no
 * nonce): a repeated request is answered without being parsed again. */
typedef struct {
    unsigned char key[OCSP_KEY_MAX]; /* the request's DER */
    size_t key_len;                  /* 0 when free */
    int64_t ca_id;                   /* the CertID's issuer and serial */
    char serial[CF_SERIAL_HEX_MAX];
    unsigned char *der;
    size_t len;
    int64_t status_seq, change_seq, this_update, next_update;
    char etag[40];
} ocsp_entry;

struct srv_ocsp {
    cf_ocsp_responder *resp;
    int64_t renew_at;
    ocsp_entry *cache;
    size_t used;
};

cf_err srv_ocsp_new(cf_fleet *f, srv_ocsp **out, cf_error *err)
{
    srv_ocsp *o = calloc(1, sizeof *o);
    if (!o || !(o->cache = calloc(OCSP_CACHE_SLOTS, sizeof *o->cache))) {
        free(o);
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    }
    cf_err rc = cf_fleet_ocsp_responder(f, &o->resp, &o->renew_at, err);
    if (rc != CF_OK) {
        srv_ocsp_free(o);
        return rc;
    }
    *out = o;
    return CF_OK;
}

static void cache_clear(srv_ocsp *o)
{
    for (size_t i = 0; i < OCSP_CACHE_SLOTS; i++) {
        OPENSSL_free(o->cache[i].der);
        memset(&o->cache[i], 0, sizeof o->cache[i]);
    }
    o->used = 0;
}

void srv_ocsp_free(srv_ocsp *o)
{
    if (!o)
        return;
    if (o->cache)
        cache_clear(o);
    free(o->cache);
    cf_ocsp_responder_free(o->resp);
    free(o);
}

/* The slot of a request's bytes: its entry, or where it goes (one slot per key: a collision
 * replaces). */
static ocsp_entry *cache_slot(srv_ocsp *o, const unsigned char *key, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ key[i]) * 1099511628211ULL;
    return &o->cache[h & (OCSP_CACHE_SLOTS - 1)];
}

static void ocsp_reply(srv_req *r, int status, const unsigned char *der, size_t len)
{
    srv_reply(r, status, "application/ocsp-response", der, len);
    set_header(r, "Cache-Control", "no-store");
}

/* An unsuccessful OCSP response: the client always gets OCSP, never a page of text. */
static void ocsp_refuse(srv_req *r, int http_status, int ocsp_status, srv_cause cause,
                        const char *why, const char *detail)
{
    unsigned char *der = NULL;
    size_t len = 0;
    cf_error err;
    if (cf_ocsp_error_response(ocsp_status, &der, &len, &err) != CF_OK) {
        srv_fail(r, 500, SRV_CAUSE_FLEET + CF_ERR_CRYPTO, "OCSP: %s", err.msg);
        return;
    }
    ocsp_reply(r, http_status, der, len);
    r->cause = cause;
    cf_log(CF_LOG_DEBUG, "ocsp: %s%s%s", why, detail ? ": " : "", detail ? detail : "");
    OPENSSL_free(der);
}

static void ocsp_internal(srv_req *r, const cf_error *err)
{
    int busy = err->code == CF_ERR_UNAVAILABLE || err->code == CF_ERR_STORE;
    ocsp_refuse(r, 200, busy ? OCSP_RESPONSE_STATUS_TRYLATER : OCSP_RESPONSE_STATUS_INTERNALERROR,
                SRV_CAUSE_FLEET + err->code, "store", err->msg);
}

static cf_err statuses(cf_store *st, const cf_ocsp_request *q, cf_ocsp_status *out,
                       int64_t *status_seq, cf_error *err)
{
    *status_seq = 0;
    for (size_t i = 0; i < q->n; i++) {
        cf_cert_state cs;
        out[i] = (cf_ocsp_status){.status = CF_OCSP_UNKNOWN, .reason = -1};
        if (!q->queries[i].ca_id || !q->queries[i].serial[0])
            continue;
        cf_err rc = cf_store_cert_state(st, q->queries[i].ca_id, q->queries[i].serial, &cs, err);
        if (rc == CF_ERR_NOT_FOUND)
            continue;
        if (rc != CF_OK)
            return rc;
        *status_seq = cs.status_seq;
        if (cs.status == CF_CERT_GOOD) {
            out[i].status = CF_OCSP_GOOD;
        } else {
            out[i].status = CF_OCSP_REVOKED;
            out[i].revoked_s = cs.revoked_us / 1000000;
            out[i].reason = cs.reason;
        }
    }
    return CF_OK;
}

static void ocsp_send(srv_req *r, const ocsp_entry *e, int is_get)
{
    if (is_get && not_modified(r, e->etag)) {
        r->status = 304;
        cache_headers(r, e->this_update, e->next_update, e->etag);
        return;
    }
    srv_reply(r, 200, "application/ocsp-response", e->der, e->len);
    if (is_get)
        cache_headers(r, e->this_update, e->next_update, e->etag);
    else
        set_header(r, "Cache-Control", "no-store");
}

/* The change feed's head for w's requests. Read from the store only when the feed's bell
 * has rung since the last read (cf_store_change_bell), or after HEAD_REREAD_US in any case:
 * a writer killed between its commit and its ring must not leave answers stale for long.
 * Without a bell (PostgreSQL) every request reads it. */
#define HEAD_REREAD_US 1000000

static cf_err change_head(srv_worker *w, int64_t *seq, cf_error *err)
{
    cf_store *st = cf_fleet_store(w->fleet);
    int64_t bell = cf_store_change_bell(st), now = cf_time_now_us();
    if (bell >= 0 && w->head.valid && bell == w->head.bell &&
        now - w->head.read_us < HEAD_REREAD_US) {
        *seq = w->head.seq;
        return CF_OK;
    }
    w->head.valid = 0;
    cf_err rc = cf_store_change_last(st, seq, err);
    if (rc == CF_OK) {
        w->head.valid = 1;
        w->head.bell = bell;
        w->head.seq = *seq;
        w->head.read_us = now;
    }
    return rc;
}

static void ocsp_answer(srv_req *r, srv_ocsp *o, const unsigned char *der, size_t len, int is_get)
{
    cf_store *st = cf_fleet_store(r->w->fleet);
    cf_ocsp_request q = {0};
    cf_error err;
    int64_t change_seq = 0, now = time(NULL);
    cf_ocsp_status *st_out = NULL;
    ocsp_entry fresh = {0}, *slot = NULL;

    if (now >= o->renew_at) { /* a responder certificate is due: renew before answering */
        cf_ocsp_responder *resp;
        if (cf_fleet_ocsp_responder(r->w->fleet, &resp, &o->renew_at, &err) == CF_OK) {
            cf_ocsp_responder_free(o->resp);
            o->resp = resp;
            cache_clear(o);
        } else {
            cf_log(CF_LOG_WARN, "ocsp: renewing the responder certificates: %s", err.msg);
            o->renew_at = now + 3600;
        }
        if (o->renew_at < now + 3600)
            o->renew_at = now + 3600;
    }
    if (len > 0 && len <= OCSP_KEY_MAX) { /* asked before? (RFC 5019's are all alike) */
        slot = cache_slot(o, der, len);
        if (slot->key_len == len && memcmp(slot->key, der, len) == 0 &&
            now < slot->this_update + OCSP_REFRESH_S) {
            cf_cert_state cs;
            if (change_head(r->w, &change_seq, &err) != CF_OK) {
                ocsp_internal(r, &err);
                goto out;
            }
            if (slot->change_seq != change_seq && /* something changed: this one? */
                cf_store_cert_state(st, slot->ca_id, slot->serial, &cs, &err) == CF_OK &&
                cs.status_seq == slot->status_seq)
                slot->change_seq = change_seq;
            if (slot->change_seq == change_seq) {
                ocsp_send(r, slot, is_get);
                goto out;
            }
        }
    }
    if (cf_ocsp_request_parse(o->resp, der, len, &q, &err) != CF_OK) {
        ocsp_refuse(r, 200, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST, SRV_CAUSE_BAD_REQUEST,
                    "malformed request", err.msg);
        return;
    }
    int known = 0;
    for (size_t i = 0; i < q.n; i++)
        known |= q.queries[i].ca_id != 0;
    if (!known) {
        ocsp_refuse(r, 200, OCSP_RESPONSE_STATUS_UNAUTHORIZED, SRV_CAUSE_FLEET + CF_ERR_NOT_FOUND,
                    "no CertID of an issuer answered for", NULL);
        goto out;
    }
    if (change_head(r->w, &change_seq, &err) != CF_OK) {
        ocsp_internal(r, &err);
        goto out;
    }
    if (!slot || q.n != 1 || q.has_nonce) /* only RFC 5019's requests are kept */
        slot = NULL;
    if (slot) {
        memcpy(fresh.key, der, len);
        fresh.key_len = len;
        fresh.ca_id = q.queries[0].ca_id;
        snprintf(fresh.serial, sizeof fresh.serial, "%s", q.queries[0].serial);
    }
    if (!(st_out = calloc(q.n, sizeof *st_out))) {
        ocsp_refuse(r, 200, OCSP_RESPONSE_STATUS_TRYLATER, SRV_CAUSE_FLEET + CF_ERR_NOMEM,
                    "out of memory", NULL);
        goto out;
    }
    if (statuses(st, &q, st_out, &fresh.status_seq, &err) != CF_OK) {
        ocsp_internal(r, &err);
        goto out;
    }
    fresh.change_seq = change_seq;
    fresh.this_update = now;
    fresh.next_update = now + OCSP_VALIDITY_S;
    if (cf_ocsp_respond(o->resp, &q, st_out, fresh.this_update, fresh.next_update, &fresh.der,
                        &fresh.len, &err) != CF_OK) {
        ocsp_refuse(r, 200, OCSP_RESPONSE_STATUS_INTERNALERROR, SRV_CAUSE_FLEET + err.code,
                    "signing", err.msg);
        goto out;
    }
    etag_of(fresh.der, fresh.len, fresh.etag);
    ocsp_send(r, &fresh, is_get);
    if (slot) {
        OPENSSL_free(slot->der);
        *slot = fresh;
        fresh.der = NULL;
    }
out:
    OPENSSL_free(fresh.der);
    free(st_out);
    cf_ocsp_request_clear(&q);
}

void srv_ocsp_post(srv_req *r, srv_ocsp *o)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(r->req);
    size_t n = evbuffer_get_length(in);
    const char *ctype =
        evhttp_find_header(evhttp_request_get_input_headers(r->req), "Content-Type");
    if (!ctype || strncasecmp(ctype, "application/ocsp-request", 24) != 0 ||
        (ctype[24] && ctype[24] != ';' && ctype[24] != ' ')) {
        ocsp_refuse(r, 415, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST, SRV_CAUSE_MEDIA_TYPE,
                    "Content-Type must be application/ocsp-request", ctype);
        return;
    }
    if (n > CF_OCSP_MAX_REQUEST) {
        ocsp_refuse(r, 413, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST, SRV_CAUSE_BAD_REQUEST,
                    "request over 64 KiB", NULL);
        return;
    }
    unsigned char *body = n ? evbuffer_pullup(in, (ev_ssize_t)n) : NULL;
    ocsp_answer(r, o, body, n, 0);
}

/* RFC 5019 5: GET {url}/{url-encoding of base-64 encoding of the DER OCSPRequest}. The
 * base64 may hold '/' and arrives percent-encoded or not. */
void srv_ocsp_get(srv_req *r, srv_ocsp *o)
{
    size_t dlen = 0;
    char *b64 = evhttp_uridecode(r->path + strlen("/ocsp/"), 0, &dlen);
    unsigned char *der = NULL;
    long n =
        b64 && dlen <= 4 * (CF_OCSP_MAX_REQUEST / 3 + 1) ? srv_base64_decode(b64, dlen, &der) : -1;
    free(b64);
    if (n < 0)
        ocsp_refuse(r, 200, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST, SRV_CAUSE_BAD_REQUEST,
                    "GET: not base64 of a request", NULL);
    else
        ocsp_answer(r, o, der, (size_t)n, 1);
    free(der);
}

/* ---- CRLs ---- */

typedef struct {
    unsigned char *der;
    size_t len;
    int refs; /* the cache's own, plus one per reply still being sent */
    int64_t change_seq, this_update, next_update;
    char etag[40];
    struct srv_crls *owner;
} crl_blob;

typedef struct {
    char name[64];
    int64_t shard;           /* 0: the CA's whole CRL (and its delta) */
    int root;                /* a root's CRL: the issuing CAs it revoked; no delta */
    cf_crl_builder *builder; /* used only by the worker that set building */
    crl_blob *full, *delta;
    int64_t base_at; /* when the deltas' base full CRL was made */
    int building;
} crl_slot;

struct srv_crls {
    pthread_mutex_t lock;
    crl_slot **slots; /* pointers: a slot stays where it is while a worker rebuilds it */
    size_t n;
};

cf_err srv_crls_new(srv_crls **out, cf_error *err)
{
    srv_crls *c = calloc(1, sizeof *c);
    if (!c)
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&c->lock, NULL);
    *out = c;
    return CF_OK;
}

/* Under the lock. */
static void blob_unref(crl_blob *b)
{
    if (b && --b->refs == 0) {
        OPENSSL_free(b->der);
        free(b);
    }
}

void srv_crls_free(srv_crls *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++) {
        cf_crl_builder_free(c->slots[i]->builder);
        blob_unref(c->slots[i]->full);
        blob_unref(c->slots[i]->delta);
        free(c->slots[i]);
    }
    free(c->slots);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static crl_blob *blob_new(srv_crls *c, unsigned char *der, size_t len, const cf_crl_info *info)
{
    crl_blob *b = calloc(1, sizeof *b);
    if (!b) {
        OPENSSL_free(der);
        return NULL;
    }
    b->der = der;
    b->len = len;
    b->refs = 1;
    b->change_seq = info->change_seq;
    b->this_update = info->this_update;
    b->next_update = info->next_update;
    b->owner = c;
    etag_of(der, len, b->etag);
    return b;
}

/* Under the lock: the slot of CA name's CRL (shard shard), or NULL. */
static crl_slot *slot_find(srv_crls *c, const char *name, int64_t shard)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->slots[i]->name, name) == 0 && c->slots[i]->shard == shard)
            return c->slots[i];
    return NULL;
}

/* Under the lock: the slot of CA name, made when missing (for CAs of the store only: the
 * names come from requests). */
static crl_slot *slot_of(srv_crls *c, const char *name, int64_t shard)
{
    crl_slot *found = slot_find(c, name, shard);
    if (found)
        return found;
    crl_slot **grown = realloc(c->slots, (c->n + 1) * sizeof *grown), *s;
    if (!grown)
        return NULL;
    c->slots = grown;
    if (!(s = calloc(1, sizeof *s)))
        return NULL;
    snprintf(s->name, sizeof s->name, "%s", name);
    s->shard = shard;
    c->slots[c->n++] = s;
    return s;
}

/* Outside the lock, by the one worker that set slot->building: brings the full CRL and the
 * delta up to date with the store. The new blobs go in under the lock. */
static cf_err crl_rebuild(srv_crls *c, crl_slot *s, cf_fleet *f, cf_error *err)
{
    unsigned char *fder = NULL, *dder = NULL;
    size_t flen = 0, dlen = 0;
    cf_crl_info fi, di;
    int64_t now = time(NULL);
    cf_err rc = CF_OK;
    if (!s->builder && (rc = cf_crl_builder_new(f, s->name, s->shard, &s->builder, err)) != CF_OK)
        return rc;
    int rebase = !s->base_at || now - s->base_at >= CRL_REBASE_S;
    if ((rc = cf_crl_builder_full(f, s->builder, rebase, &fder, &flen, &fi, err)) != CF_OK)
        return rc;
    if (!s->shard && !s->root && /* shards and roots have no deltas */
        (rc = cf_crl_builder_delta(f, s->builder, 0, &dder, &dlen, &di, err)) != CF_OK) {
        OPENSSL_free(fder);
        return rc;
    }
    crl_blob *full = blob_new(c, fder, flen, &fi),
             *delta = dder ? blob_new(c, dder, dlen, &di) : NULL;
    pthread_mutex_lock(&c->lock);
    if (full && (delta || s->shard || s->root)) {
        blob_unref(s->full);
        blob_unref(s->delta);
        s->full = full;
        s->delta = delta;
        if (rebase)
            s->base_at = now;
    } else {
        blob_unref(full);
        blob_unref(delta);
        rc = cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

cf_err srv_crls_prepare(srv_crls *c, cf_fleet *f, cf_error *err)
{
    cf_ca_rec *cas = NULL;
    size_t n = 0;
    cf_err rc = cf_store_ca_list(cf_fleet_store(f), &cas, &n, err);
    for (size_t i = 0; rc == CF_OK && i < n; i++) {
        pthread_mutex_lock(&c->lock);
        crl_slot *s = slot_of(c, cas[i].name, 0);
        if (s) {
            s->building = 1;
            s->root = cas[i].role == CF_CA_ROOT;
        }
        pthread_mutex_unlock(&c->lock);
        if (!s) {
            rc = cf_error_set(err, CF_ERR_NOMEM, "out of memory");
            break;
        }
        rc = crl_rebuild(c, s, f, err);
        pthread_mutex_lock(&c->lock);
        s->building = 0;
        pthread_mutex_unlock(&c->lock);
    }
    for (size_t i = 0; i < n; i++)
        cf_ca_rec_clear(&cas[i]);
    free(cas);
    return rc;
}

static void blob_release(const void *data, size_t len, void *arg)
{
    crl_blob *b = arg;
    srv_crls *c = b->owner;
    (void)data, (void)len;
    pthread_mutex_lock(&c->lock);
    blob_unref(b);
    pthread_mutex_unlock(&c->lock);
}

/* Parses /crl/NAME.crl, /crl/NAME-delta.crl or /crl/NAME-sN.crl (shard N). */
static int crl_path(const char *path, char name[64], int *delta, int64_t *shard)
{
    const char *p = path + strlen("/crl/");
    size_t n = strlen(p);
    *delta = 0;
    *shard = 0;
    if (n <= 4 || strcmp(p + n - 4, ".crl") != 0)
        return 0;
    n -= 4;
    if (n > 6 && strncmp(p + n - 6, "-delta", 6) == 0) {
        *delta = 1;
        n -= 6;
    } else {
        size_t d = n;
        while (d > 0 && p[d - 1] >= '0' && p[d - 1] <= '9')
            d--;
        if (d < n && n - d <= 12 && d >= 2 && p[d - 1] == 's' && p[d - 2] == '-' && p[d] != '0') {
            *shard = strtoll(p + d, NULL, 10);
            n = d - 2;
        }
    }
    if (n == 0 || n >= 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)p[i]) && p[i] != '-' && p[i] != '_' && p[i] != '.')
            return 0;
    memcpy(name, p, n);
    name[n] = '\0';
    return 1;
}

void srv_crl_get(srv_req *r, srv_crls *c)
{
    char name[64];
    int delta;
    int64_t head = 0, now = time(NULL), shard;
    cf_error err;
    if (!crl_path(r->path, name, &delta, &shard)) {
        srv_fail(r, 404, SRV_CAUSE_NO_ROUTE, "no such CRL: use /crl/CA.crl or /crl/CA-delta.crl");
        return;
    }
    if (change_head(r->w, &head, &err) != CF_OK) {
        srv_fail_err(r, &err);
        return;
    }
    pthread_mutex_lock(&c->lock);
    crl_slot *s = slot_find(c, name, shard);
    pthread_mutex_unlock(&c->lock);
    if (shard && delta) {
        srv_fail(r, 404, SRV_CAUSE_NO_ROUTE, "CRL shards have no delta CRLs");
        return;
    }
    int root = s && s->root;
    if (!s) { /* a CA made after the start, a shard begun since, or nothing at all */
        cf_store *st = cf_fleet_store(r->w->fleet);
        cf_ca_rec *cas = NULL;
        size_t n = 0;
        int64_t shards = 0;
        int known = 0;
        if (cf_store_ca_list(st, &cas, &n, &err) != CF_OK) {
            srv_fail_err(r, &err);
            return;
        }
        for (size_t i = 0; i < n; i++) {
            if (!known && strcmp(cas[i].name, name) == 0) {
                root = cas[i].role == CF_CA_ROOT;
                known = !shard ||
                        (!root && cf_store_crl_shards(st, cas[i].id, &shards, &err) == CF_OK &&
                         shard <= shards);
            }
            cf_ca_rec_clear(&cas[i]);
        }
        free(cas);
        if (!known || (root && delta)) {
            srv_fail(r, 404, SRV_CAUSE_NO_ROUTE, "no such CRL: %s", r->path);
            return;
        }
    } else if (root && delta) {
        srv_fail(r, 404, SRV_CAUSE_NO_ROUTE, "a root's CRL has no delta");
        return;
    }
    pthread_mutex_lock(&c->lock);
    s = slot_of(c, name, shard);
    if (s)
        s->root = root;
    crl_blob *b = s ? (delta ? s->delta : s->full) : NULL;
    /* Up to date: built at the feed's head, and not past half its validity. */
    int stale =
        !b || b->change_seq < head || now >= b->this_update + (b->next_update - b->this_update) / 2;
    int build = s && stale && !s->building;
    if (build)
        s->building = 1;
    pthread_mutex_unlock(&c->lock);
    if (!s) {
        srv_fail(r, 503, SRV_CAUSE_FLEET + CF_ERR_NOMEM, "out of memory");
        return;
    }
    if (build) {
        cf_err rc = crl_rebuild(c, s, r->w->fleet, &err);
        pthread_mutex_lock(&c->lock);
        s->building = 0;
        pthread_mutex_unlock(&c->lock);
        if (rc != CF_OK && rc != CF_ERR_NOT_FOUND)
            cf_log(CF_LOG_WARN, "crl %s: %s", name, err.msg);
        if (rc == CF_ERR_NOT_FOUND) {
            srv_fail(r, 404, SRV_CAUSE_NO_ROUTE, "no CA %s", name);
            return;
        }
    }
    pthread_mutex_lock(&c->lock);
    b = delta ? s->delta : s->full;
    if (b)
        b->refs++;
    pthread_mutex_unlock(&c->lock);
    if (!b) { /* another worker is making the first one */
        set_header(r, "Retry-After", "1");
        srv_fail(r, 503, SRV_CAUSE_FLEET + CF_ERR_UNAVAILABLE, "CRL of %s is being built", name);
        return;
    }
    r->status = 200;
    cache_headers(r, b->this_update, b->next_update, b->etag);
    if (not_modified(r, b->etag)) {
        r->status = 304;
        blob_release(NULL, 0, b);
        return;
    }
    set_header(r, "Content-Type", "application/pkix-crl");
    evbuffer_add_reference(evhttp_request_get_output_buffer(r->req), b->der, b->len, blob_release,
                           b);
}

/* ---- CA certificates ---- */

void srv_ca_get(srv_req *r)
{
    const char *name = r->path + strlen("/ca/");
    size_t n = strlen(name);
    cf_ca_rec *cas = NULL;
    size_t count = 0;
    cf_error err;
    if (n <= 4 || n > 64 + 4 || strcmp(name + n - 4, ".crt") != 0) {
        srv_fail(r, 404, SRV_CAUSE_NO_ROUTE, "no such CA certificate: use /ca/NAME.crt");
        return;
    }
    if (cf_store_ca_list(cf_fleet_store(r->w->fleet), &cas, &count, &err) != CF_OK) {
        srv_fail_err(r, &err);
        return;
    }
    int found = 0;
    for (size_t i = 0; i < count; i++) {
        if (!found && strlen(cas[i].name) == n - 4 && strncmp(cas[i].name, name, n - 4) == 0) {
            char etag[40];
            etag_of(cas[i].der, cas[i].der_len, etag);
            srv_reply(r, 200, "application/pkix-cert", cas[i].der, cas[i].der_len);
            set_header(r, "ETag", etag);
            set_header(r, "Cache-Control", "max-age=86400, public");
            found = 1;
        }
        cf_ca_rec_clear(&cas[i]);
    }
    free(cas);
    if (!found)
        srv_fail(r, 404, SRV_CAUSE_NO_ROUTE, "no CA certificate %.*s", (int)(n - 4), name);
}
