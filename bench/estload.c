/* bench/estload.c - a load generator for certfleet's EST enrollment, written on OpenSSL
 * (wrk and h2load send no client certificates).
 *
 *   estload --connect HOST:PORT --devices DIR [options]
 *
 * N client threads each run requests one after another. A request is a full enrollment: a
 * new TCP connection, a new TLS handshake presenting a device's birth certificate (no session
 * resumption), POST /.well-known/est/[LABEL/]simpleenroll with a CSR made before the clock
 * started (P-256, a new key per device), and the reply read to its end and checked: status
 * 200, a body that is base64 of a DER PKCS#7 holding a certificate for the CSR's key (walked
 * with ASN1_get_object; each client's first reply and every 64th also decoded in full by
 * OpenSSL, whose decode costs a sixth of a handshake). Each device enrolls once. With --healthz a
 * request is the same handshake with the same client certificate followed by GET /healthz: the
 * ceiling enrollment is measured against (devices are then reused round robin).
 *
 * DIR is what `certfleet manifest make --key-files` writes: DIR/keys/UID.key (the birth key)
 * and DIR/certs/UID.pem (the birth certificate, then the rest of its chain). Devices are
 * taken in the order of their ids; --offset and --limit pick a slice, so that successive runs
 * against one fleet use fresh devices. --save DIR writes each certificate received to
 * DIR/UID.pem (written aside and renamed: a file there is a certificate the client got).
 *
 * Prints requests per second, the p50 and p99 latency (connect to the reply's last byte) and
 * the errors by cause; --json prints one JSON object for scripts, with the CPU time the load
 * generator spent in the run (cpu_s). Exit status: 0 when every
 * request succeeded, 1 when some failed, 2 for usage or set-up errors. The server is a
 * stranger here: every wait has a deadline, every reply a size cap, every length is checked. */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "p7walk.h"

#define REPLY_MAX (256 * 1024) /* larger replies are an error, not a reason to grow */
#define UID_MAX 128
#define WHY_MAX 256

/* ---- what a run is made of ---- */

typedef struct {
    char uid[UID_MAX];
    EVP_PKEY *key;           /* the birth key */
    X509 *cert;              /* the birth certificate */
    STACK_OF(X509) * chain;  /* the rest of certs/UID.pem */
    EVP_PKEY *csr_key;       /* enroll: the new key the CSR carries */
    unsigned char *csr_spki; /* enroll: its SubjectPublicKeyInfo, DER */
    int csr_spki_len;
    char *request; /* enroll: the whole POST, the CSR's DER in base64 as its body */
    size_t request_len;
} device;

/* Why a request failed: counted per cause, and the first message of each kept. */
typedef enum {
    E_CONNECT,
    E_TLS,
    E_WRITE,
    E_TIMEOUT,
    E_READ,
    E_REPLY,
    E_STATUS,
    E_BODY,
    E_SAVE,
    E_COUNT
} err_cause;

static const char *const cause_names[E_COUNT] = {
    "connect", "tls", "write", "timeout", "read", "reply", "status", "body", "save",
};

typedef struct {
    /* options */
    const char *connect, *devices_dir, *label, *cacert, *save_dir;
    char host[256], port[16];
    int host_is_ip;
    int clients, healthz, tls12, json;
    double duration, timeout;
    long requests, offset, limit;
    /* set up before the clock starts */
    struct sockaddr_storage addr;
    socklen_t addr_len;
    SSL_CTX *ctx;
    device *devs;
    size_t ndev;
    char path[128];  /* the EST or health path */
    char head[1024]; /* --healthz: the whole GET */
    pthread_barrier_t go;
    double t0, deadline;
    double cpu0, cpu;    /* the process's CPU time (user + system) at the start; spent in the run */
    atomic_long started; /* requests taken by clients */
} load;

typedef struct {
    load *L;
    pthread_t thread;
    double *lat; /* ms, of each successful request; owned */
    size_t nlat, cap;
    long errors[E_COUNT];
    long status[600]; /* failed requests by the HTTP status of their reply */
    char first[E_COUNT][WHY_MAX];
    double end; /* when its last request ended */
} client;

/* One request's failure: the cause and a message naming what went wrong. */
typedef struct {
    err_cause cause;
    char why[WHY_MAX];
    int status;
} req_err;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("estload: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    unsigned long e = ERR_get_error();
    if (e) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        fprintf(stderr, " (%s)", buf);
    }
    fputc('\n', stderr);
    exit(2);
}

static int fail(req_err *e, err_cause cause, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(req_err *e, err_cause cause, const char *fmt, ...)
{
    va_list ap;
    e->cause = cause;
    va_start(ap, fmt);
    vsnprintf(e->why, sizeof e->why, fmt, ap);
    va_end(ap);
    return -1;
}

/* The first OpenSSL error queued on this thread as text (and the queue cleared). */
static const char *ssl_why(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    if (!e)
        snprintf(buf, len, "%s", errno ? strerror(errno) : "connection closed");
    else
        ERR_error_string_n(e, buf, len);
    ERR_clear_error();
    return buf;
}

/* ---- devices: keys, birth certificates, CSRs ---- */

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The device ids in DIR/keys (files UID.key), sorted. */
static char **device_ids(const char *dir, size_t *n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/keys", dir);
    DIR *d = opendir(path);
    if (!d)
        die("%s: cannot open (written by `certfleet manifest make --key-files`): %s", path,
            strerror(errno));
    char **ids = NULL;
    size_t cap = 0;
    struct dirent *de;
    *n = 0;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (de->d_name[0] == '.' || len <= 4 || len - 4 >= UID_MAX ||
            strcmp(de->d_name + len - 4, ".key") != 0)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 1024;
            if (!(ids = realloc(ids, cap * sizeof *ids)))
                die("out of memory");
        }
        if (!(ids[*n] = strndup(de->d_name, len - 4)))
            die("out of memory");
        (*n)++;
    }
    closedir(d);
    qsort(ids, *n, sizeof *ids, name_cmp);
    return ids;
}

static void device_load_identity(device *dev, const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/keys/%s.key", dir, dev->uid);
    FILE *f = fopen(path, "r");
    if (!f || !(dev->key = PEM_read_PrivateKey(f, NULL, NULL, NULL)))
        die("%s: cannot read the device key", path);
    fclose(f);
    snprintf(path, sizeof path, "%s/certs/%s.pem", dir, dev->uid);
    if (!(f = fopen(path, "r")))
        die("%s: cannot open (the birth certificate chain, written by `certfleet manifest make"
            " --key-files`): %s",
            path, strerror(errno));
    if (!(dev->cert = PEM_read_X509(f, NULL, NULL, NULL)))
        die("%s: no certificate", path);
    if (!(dev->chain = sk_X509_new_null()))
        die("out of memory");
    X509 *x;
    while ((x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL)
        if (!sk_X509_push(dev->chain, x))
            die("out of memory");
    ERR_clear_error(); /* the end of the file */
    fclose(f);
    if (X509_check_private_key(dev->cert, dev->key) != 1)
        die("%s: the certificate does not match keys/%s.key", path, dev->uid);
}

/* The enrollment request of a device: a CSR with a new P-256 key, subject CN=UID (the
 * server's profile sets the real subject), base64 of its DER as the body of the POST. */
static void device_make_request(const load *L, device *dev)
{
    X509_REQ *req = X509_REQ_new();
    unsigned char *der = NULL;
    char head[1024];
    if (!req || !(dev->csr_key = EVP_EC_gen("P-256")) || !X509_REQ_set_version(req, 0) ||
        !X509_REQ_set_pubkey(req, dev->csr_key) ||
        !X509_NAME_add_entry_by_NID(X509_REQ_get_subject_name(req), NID_commonName, MBSTRING_UTF8,
                                    (const unsigned char *)dev->uid, -1, -1, 0) ||
        X509_REQ_sign(req, dev->csr_key, EVP_sha256()) <= 0)
        die("device %s: cannot make a CSR", dev->uid);
    int n = i2d_X509_REQ(req, &der);
    if (n <= 0 || (dev->csr_spki_len = i2d_PUBKEY(dev->csr_key, &dev->csr_spki)) <= 0)
        die("device %s: cannot encode the CSR", dev->uid);
    size_t b64_len = 4 * (((size_t)n + 2) / 3);
    int hlen = snprintf(head, sizeof head,
                        "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/pkcs10\r\n"
                        "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                        L->path, L->connect, b64_len);
    if (hlen <= 0 || (size_t)hlen >= sizeof head ||
        !(dev->request = malloc((size_t)hlen + b64_len + 1)))
        die("device %s: cannot make the request", dev->uid);
    memcpy(dev->request, head, (size_t)hlen);
    dev->request_len =
        (size_t)hlen + (size_t)EVP_EncodeBlock((unsigned char *)dev->request + hlen, der, n);
    OPENSSL_free(der);
    X509_REQ_free(req);
}

static void devices_load(load *L)
{
    size_t nids;
    char **ids = device_ids(L->devices_dir, &nids);
    size_t first = (size_t)L->offset < nids ? (size_t)L->offset : nids;
    size_t n = nids - first;
    if (L->limit > 0 && (size_t)L->limit < n)
        n = (size_t)L->limit;
    if (n == 0)
        die("%s/keys: no device keys from offset %ld (%zu in all)", L->devices_dir, L->offset,
            nids);
    if (!(L->devs = calloc(n, sizeof *L->devs)))
        die("out of memory");
    for (size_t i = 0; i < n; i++) {
        device *dev = &L->devs[i];
        snprintf(dev->uid, sizeof dev->uid, "%s", ids[first + i]);
        device_load_identity(dev, L->devices_dir);
        if (!L->healthz)
            device_make_request(L, dev);
    }
    L->ndev = n;
    for (size_t i = 0; i < nids; i++)
        free(ids[i]);
    free(ids);
}

static void devices_free(load *L)
{
    for (size_t i = 0; i < L->ndev; i++) {
        device *dev = &L->devs[i];
        EVP_PKEY_free(dev->key);
        X509_free(dev->cert);
        sk_X509_pop_free(dev->chain, X509_free);
        EVP_PKEY_free(dev->csr_key);
        OPENSSL_free(dev->csr_spki);
        free(dev->request);
    }
    free(L->devs);
}

/* ---- the connection: TCP, TLS, every wait bounded by the request's deadline ---- */

/* Waits for fd to be ready for events until deadline. 0 when ready. */
static int wait_fd(int fd, short events, double deadline, req_err *e, const char *during)
{
    for (;;) {
        int ms = (int)((deadline - now_s()) * 1000.0);
        if (ms <= 0)
            return fail(e, E_TIMEOUT, "%s: no progress within the timeout", during);
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, ms);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return fail(e, E_READ, "%s: poll: %s", during, strerror(errno));
    }
}

static int tcp_connect(const load *L, double deadline, req_err *e)
{
    int fd = socket(L->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return fail(e, E_CONNECT, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (const struct sockaddr *)&L->addr, L->addr_len) != 0) {
        int soerr = 0;
        socklen_t len = sizeof soerr;
        if (errno != EINPROGRESS) {
            fail(e, E_CONNECT, "connect %s: %s", L->connect, strerror(errno));
            goto bad;
        }
        if (wait_fd(fd, POLLOUT, deadline, e, "connect") != 0)
            goto bad;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr) {
            fail(e, E_CONNECT, "connect %s: %s", L->connect, strerror(soerr ? soerr : errno));
            goto bad;
        }
    }
    return fd;
bad:
    close(fd);
    return -1;
}

/* Runs one SSL call until it completes or the deadline passes. Returns its result (> 0),
 * 0 for a clean or abrupt end of the stream (reads only), -1 on failure (e set). */
typedef int (*ssl_call)(SSL *ssl, void *buf, int len);

static int ssl_connect_call(SSL *ssl, void *buf, int len)
{
    return SSL_connect(ssl);
}

static int ssl_read_call(SSL *ssl, void *buf, int len)
{
    return SSL_read(ssl, buf, len);
}

static int ssl_write_call(SSL *ssl, void *buf, int len)
{
    return SSL_write(ssl, buf, len);
}

static int ssl_run(SSL *ssl, ssl_call call, void *buf, int len, double deadline, req_err *e,
                   err_cause cause, const char *during)
{
    char why[WHY_MAX];
    for (;;) {
        errno = 0;
        int rc = call(ssl, buf, len);
        if (rc > 0)
            return rc;
        int what = SSL_get_error(ssl, rc);
        if (what == SSL_ERROR_WANT_READ || what == SSL_ERROR_WANT_WRITE) {
            if (wait_fd(SSL_get_fd(ssl), what == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline,
                        e, during) != 0)
                return -1;
            continue;
        }
        if (call == ssl_read_call &&
            (what == SSL_ERROR_ZERO_RETURN || (what == SSL_ERROR_SYSCALL && errno == 0))) {
            ERR_clear_error();
            return 0;
        }
        return fail(e, cause, "%s: %s", during, ssl_why(why, sizeof why));
    }
}

static SSL *tls_open(const load *L, const device *dev, int fd, double deadline, req_err *e)
{
    SSL *ssl = SSL_new(L->ctx);
    char why[WHY_MAX];
    if (!ssl || !SSL_set_fd(ssl, fd) || SSL_use_certificate(ssl, dev->cert) != 1 ||
        SSL_use_PrivateKey(ssl, dev->key) != 1 || !SSL_set1_chain(ssl, dev->chain)) {
        fail(e, E_TLS, "device %s: TLS setup: %s", dev->uid, ssl_why(why, sizeof why));
        SSL_free(ssl);
        return NULL;
    }
    X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
    if (L->cacert && (L->host_is_ip ? !X509_VERIFY_PARAM_set1_ip_asc(vp, L->host)
                                    : !SSL_set1_host(ssl, L->host))) {
        fail(e, E_TLS, "%s: cannot set the name to verify", L->host);
        SSL_free(ssl);
        return NULL;
    }
    if (!L->host_is_ip)
        SSL_set_tlsext_host_name(ssl, L->host);
    if (ssl_run(ssl, ssl_connect_call, NULL, 0, deadline, e, E_TLS, "TLS handshake") < 0) {
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

static int tls_write_all(SSL *ssl, const char *buf, size_t len, double deadline, req_err *e)
{
    while (len > 0) {
        int n = ssl_run(ssl, ssl_write_call, (void *)buf, len > 65536 ? 65536 : (int)len, deadline,
                        e, E_WRITE, "sending the request");
        if (n < 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* ---- the reply: HTTP/1.1 framing, status, body ---- */

typedef struct {
    char *buf; /* REPLY_MAX + 1 bytes, owned by the client */
    size_t len;
    size_t head_len; /* through the blank line */
    int status;
    const char *body;
    size_t body_len;
} reply;

/* The value of header name in the head (buf, head_len), or NULL. Copies at most len - 1. */
static const char *header_value(const reply *r, const char *name, char *out, size_t len)
{
    size_t nlen = strlen(name);
    const char *p = memchr(r->buf, '\n', r->head_len), *end = r->buf + r->head_len;
    while (p && p + 1 < end) {
        const char *line = p + 1, *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol)
            break;
        if ((size_t)(eol - line) > nlen && strncasecmp(line, name, nlen) == 0 &&
            line[nlen] == ':') {
            const char *v = line + nlen + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            size_t vlen = (size_t)(eol - v);
            while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == ' '))
                vlen--;
            if (vlen >= len)
                vlen = len - 1;
            memcpy(out, v, vlen);
            out[vlen] = '\0';
            return out;
        }
        p = eol;
    }
    return NULL;
}

/* Parses the status line and the framing headers once the head is complete. Returns the
 * expected total length of the reply, or (size_t)-1 when it ends with the stream. */
static int reply_head(reply *r, size_t *total, req_err *e)
{
    char val[64];
    if (r->head_len < 12 || strncmp(r->buf, "HTTP/1.", 7) != 0 || r->buf[8] != ' ' ||
        !isdigit((unsigned char)r->buf[9]) || !isdigit((unsigned char)r->buf[10]) ||
        !isdigit((unsigned char)r->buf[11]))
        return fail(e, E_REPLY, "the reply does not start with an HTTP/1.x status line");
    r->status = (r->buf[9] - '0') * 100 + (r->buf[10] - '0') * 10 + (r->buf[11] - '0');
    if (r->status < 100)
        return fail(e, E_REPLY, "status %d is not an HTTP status", r->status);
    if (header_value(r, "Transfer-Encoding", val, sizeof val))
        return fail(e, E_REPLY, "Transfer-Encoding %s: not expected from an EST server", val);
    *total = (size_t)-1;
    if (header_value(r, "Content-Length", val, sizeof val)) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(val, &end, 10);
        if (!isdigit((unsigned char)val[0]) || *end || errno || n > REPLY_MAX)
            return fail(e, E_REPLY, "Content-Length \"%s\": not a length up to %d", val, REPLY_MAX);
        *total = r->head_len + (size_t)n;
        if (*total > REPLY_MAX)
            return fail(e, E_REPLY, "reply over %d bytes", REPLY_MAX);
    }
    return 0;
}

static int reply_read(SSL *ssl, reply *r, double deadline, req_err *e)
{
    size_t total = (size_t)-1;
    r->len = r->head_len = 0;
    for (;;) {
        if (r->len == REPLY_MAX)
            return fail(e, E_REPLY, "reply over %d bytes", REPLY_MAX);
        int n = ssl_run(ssl, ssl_read_call, r->buf + r->len, (int)(REPLY_MAX - r->len), deadline, e,
                        E_READ, "reading the reply");
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        r->len += (size_t)n;
        r->buf[r->len] = '\0';
        if (!r->head_len) {
            char *eoh = strstr(r->buf, "\r\n\r\n");
            if (!eoh && memchr(r->buf, '\0', r->len))
                return fail(e, E_REPLY, "a NUL byte in the reply's head");
            if (!eoh)
                continue;
            r->head_len = (size_t)(eoh + 4 - r->buf);
            if (reply_head(r, &total, e) != 0)
                return -1;
        }
        if (total != (size_t)-1 && r->len >= total)
            break;
    }
    if (!r->head_len)
        return fail(e, E_READ, "the connection closed after %zu bytes, before the reply's head",
                    r->len);
    if (total != (size_t)-1 && r->len != total)
        return fail(e, r->len < total ? E_READ : E_REPLY,
                    "reply of %zu bytes where Content-Length says %zu", r->len - r->head_len,
                    total - r->head_len);
    r->body = r->buf + r->head_len;
    r->body_len = r->len - r->head_len;
    return 0;
}

/* ---- checking what came back ---- */

/* base64 (whitespace and line breaks allowed, RFC 8951) to bytes. *out: free(). */
static int unbase64(const char *in, size_t len, unsigned char **out, size_t *out_len)
{
    char *clean = malloc(len + 1);
    size_t n = 0, pad = 0;
    if (!clean)
        return -1;
    for (size_t i = 0; i < len; i++)
        if (!isspace((unsigned char)in[i]))
            clean[n++] = in[i];
    for (size_t i = n; i > 0 && pad < 2 && clean[i - 1] == '='; i--)
        pad++;
    if (n == 0 || n % 4 != 0 || !(*out = malloc(n / 4 * 3))) {
        free(clean);
        return -1;
    }
    int got = EVP_DecodeBlock(*out, (unsigned char *)clean, (int)n);
    free(clean);
    if (got < 0 || (size_t)got < pad) {
        free(*out);
        return -1;
    }
    *out_len = (size_t)got - pad;
    return 0;
}

static int save_cert(const load *L, const device *dev, X509 *cert, req_err *e)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/%s.pem", L->save_dir, dev->uid);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    int ok = f && PEM_write_X509(f, cert);
    if (f && fclose(f) != 0)
        ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return fail(e, E_SAVE, "%s: cannot write", path);
    }
    return 0;
}

/* The enrollment reply: base64 DER PKCS#7 certs-only with a certificate for the CSR's key.
 * full: decoded by OpenSSL (each client's first reply and every 64th, and all with --save)
 * besides the walk every reply gets. */
static int check_enrolled(const load *L, const device *dev, const reply *r, int full, req_err *e)
{
    unsigned char *der = NULL;
    size_t len = 0;
    PKCS7 *p7 = NULL;
    int rc = -1;
    if (unbase64(r->body, r->body_len, &der, &len) != 0) {
        fail(e, E_BODY, "device %s: the body is not base64", dev->uid);
        goto out;
    }
    if (!p7_certs_only_has_key(der, len, dev->csr_spki, dev->csr_spki_len)) {
        fail(e, E_BODY,
             "device %s: the body is not a DER PKCS#7 with a certificate for the "
             "CSR's key",
             dev->uid);
        goto out;
    }
    if (!full && !L->save_dir) {
        rc = 0;
        goto out;
    }
    const unsigned char *p = der;
    if (!(p7 = d2i_PKCS7(NULL, &p, (long)len)) || p != der + len || !PKCS7_type_is_signed(p7) ||
        !p7->d.sign || !p7->d.sign->cert) {
        fail(e, E_BODY, "device %s: the body is not a DER PKCS#7 with certificates", dev->uid);
        goto out;
    }
    STACK_OF(X509) *certs = p7->d.sign->cert;
    X509 *mine = NULL;
    for (int i = 0; i < sk_X509_num(certs) && !mine; i++)
        if (EVP_PKEY_eq(X509_get0_pubkey(sk_X509_value(certs, i)), dev->csr_key) == 1)
            mine = sk_X509_value(certs, i);
    if (!mine) {
        fail(e, E_BODY, "device %s: none of the %d certificates is for the CSR's key", dev->uid,
             sk_X509_num(certs));
        goto out;
    }
    rc = L->save_dir ? save_cert(L, dev, mine, e) : 0;
out:
    ERR_clear_error();
    PKCS7_free(p7);
    free(der);
    return rc;
}

static int check_reply(const load *L, const device *dev, const reply *r, int full, req_err *e)
{
    e->status = r->status;
    if (r->status != 200) {
        size_t n = r->body_len < 120 ? r->body_len : 120;
        char text[128];
        for (size_t i = 0; i < n; i++)
            text[i] = isprint((unsigned char)r->body[i]) ? r->body[i] : ' ';
        text[n] = '\0';
        return fail(e, E_STATUS, "device %s: status %d: %s", dev->uid, r->status, text);
    }
    if (L->healthz)
        return r->body_len >= 2 && memcmp(r->body, "ok", 2) == 0
                   ? 0
                   : fail(e, E_BODY, "/healthz did not say ok");
    return check_enrolled(L, dev, r, full, e);
}

/* ---- one request, start to end ---- */

/* full: check the reply in full (check_enrolled). */
static int one_request(const load *L, const device *dev, int full, reply *r, req_err *e)
{
    double deadline = now_s() + L->timeout;
    int fd = tcp_connect(L, deadline, e), rc = -1;
    SSL *ssl = NULL;
    if (fd < 0)
        return -1;
    if (!(ssl = tls_open(L, dev, fd, deadline, e)))
        goto out;
    const char *req = L->healthz ? L->head : dev->request;
    size_t len = L->healthz ? strlen(L->head) : dev->request_len;
    if (tls_write_all(ssl, req, len, deadline, e) != 0 || reply_read(ssl, r, deadline, e) != 0)
        goto out;
    rc = check_reply(L, dev, r, full, e);
    if (SSL_shutdown(ssl) < 0) /* close_notify, without waiting for the server's */
        ERR_clear_error();
out:
    SSL_free(ssl);
    close(fd);
    return rc;
}

static void client_record(client *c, double ms)
{
    if (c->nlat == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 4096;
        if (!(c->lat = realloc(c->lat, c->cap * sizeof *c->lat)))
            die("out of memory");
    }
    c->lat[c->nlat++] = ms;
}

static void *client_main(void *arg)
{
    client *c = arg;
    load *L = c->L;
    reply r = {.buf = malloc(REPLY_MAX + 1)};
    if (!r.buf)
        die("out of memory");
    pthread_barrier_wait(&L->go);
    for (long mine = 0;; mine++) {
        if (now_s() >= L->deadline)
            break;
        long k = atomic_fetch_add(&L->started, 1);
        if ((L->requests > 0 && k >= L->requests) || (!L->healthz && (size_t)k >= L->ndev))
            break;
        const device *dev = &L->devs[(size_t)k % L->ndev];
        req_err e = {.status = 0};
        double t = now_s();
        if (one_request(L, dev, mine == 0 || k % 64 == 0, &r, &e) == 0) {
            client_record(c, (now_s() - t) * 1000.0);
            continue;
        }
        if (e.status >= 100 && e.status < 600)
            c->status[e.status]++;
        if (c->errors[e.cause]++ == 0)
            snprintf(c->first[e.cause], WHY_MAX, "%s", e.why);
    }
    c->end = now_s();
    free(r.buf);
    ERR_clear_error();
    return NULL;
}

/* ---- set-up ---- */

static void resolve(load *L)
{
    const char *colon = strrchr(L->connect, ':');
    if (!colon || colon == L->connect || !colon[1] ||
        (size_t)(colon - L->connect) >= sizeof L->host || strlen(colon + 1) >= sizeof L->port)
        die("--connect %s: expected HOST:PORT", L->connect);
    const char *h = L->connect;
    size_t hlen = (size_t)(colon - L->connect);
    if (h[0] == '[' && hlen > 2 && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    memcpy(L->host, h, hlen);
    L->host[hlen] = '\0';
    snprintf(L->port, sizeof L->port, "%s", colon + 1);
    struct in6_addr ip;
    L->host_is_ip = inet_pton(AF_INET, L->host, &ip) == 1 || inet_pton(AF_INET6, L->host, &ip) == 1;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    int rc = getaddrinfo(L->host, L->port, &hints, &ai);
    if (rc != 0)
        die("--connect %s: %s", L->connect, gai_strerror(rc));
    memcpy(&L->addr, ai->ai_addr, ai->ai_addrlen);
    L->addr_len = ai->ai_addrlen;
    freeaddrinfo(ai);
}

static void context_new(load *L)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION))
        die("TLS context");
    if (L->tls12 && (!SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION) ||
                     !SSL_CTX_set_cipher_list(ctx, "ECDHE-ECDSA-AES128-GCM-SHA256")))
        die("TLS 1.2 with ECDHE-ECDSA-AES128-GCM-SHA256");
    /* Every connection is a full handshake: no session cache, no tickets. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    /* A close without close_notify ends the stream; a reply cut short is caught by its
     * Content-Length. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    if (L->cacert) {
        if (SSL_CTX_load_verify_locations(ctx, L->cacert, NULL) != 1)
            die("--cacert %s: cannot load", L->cacert);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    L->ctx = ctx;
}

static void request_path(load *L)
{
    if (L->healthz)
        snprintf(L->path, sizeof L->path, "/healthz");
    else if (L->label)
        snprintf(L->path, sizeof L->path, "/.well-known/est/%s/simpleenroll", L->label);
    else
        snprintf(L->path, sizeof L->path, "/.well-known/est/simpleenroll");
    snprintf(L->head, sizeof L->head, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
             L->path, L->connect);
}

/* ---- results ---- */

/* The process's CPU time so far (user + system, all threads), in seconds. */
static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int dbl_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted values. */
static double percentile(const double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
    return v[rank == 0 ? 0 : rank - 1 < n ? rank - 1 : n - 1];
}

static int report(load *L, client *cs)
{
    size_t n = 0;
    long errs[E_COUNT] = {0}, status[600] = {0}, nerr = 0;
    double end = L->t0;
    for (int i = 0; i < L->clients; i++)
        n += cs[i].nlat;
    double *all = malloc((n ? n : 1) * sizeof *all);
    if (!all)
        die("out of memory");
    n = 0;
    for (int i = 0; i < L->clients; i++) {
        if (cs[i].nlat) /* a client with no latencies may have no array at all */
            memcpy(all + n, cs[i].lat, cs[i].nlat * sizeof *all);
        n += cs[i].nlat;
        end = cs[i].end > end ? cs[i].end : end;
        for (int k = 0; k < E_COUNT; k++) {
            errs[k] += cs[i].errors[k];
            nerr += cs[i].errors[k];
        }
        for (int s = 0; s < 600; s++)
            status[s] += cs[i].status[s];
    }
    qsort(all, n, sizeof *all, dbl_cmp);
    double secs = end - L->t0, rate = secs > 0 ? (double)n / secs : 0;
    double p50 = percentile(all, n, 50), p99 = percentile(all, n, 99);
    double max = n ? all[n - 1] : 0;
    long started = atomic_load(&L->started);
    size_t used = (size_t)started < L->ndev ? (size_t)started : L->ndev;
    if (L->requests > 0 && (size_t)L->requests < used)
        used = (size_t)L->requests;
    const char *mode = L->healthz ? "healthz" : "enroll";
    int exhausted = !L->healthz && used == L->ndev && secs < L->duration;

    if (L->json) {
        printf("{\"mode\":\"%s\",\"clients\":%d,\"seconds\":%.3f,\"ok\":%zu,\"errors\":%ld,"
               "\"rate\":%.1f,\"p50_ms\":%.2f,\"p99_ms\":%.2f,\"max_ms\":%.2f,"
               "\"cpu_s\":%.3f,\"devices_used\":%zu,\"devices_exhausted\":%s,\"error_causes\":{",
               mode, L->clients, secs, n, nerr, rate, p50, p99, max, L->cpu, L->healthz ? 0 : used,
               exhausted ? "true" : "false");
        for (int k = 0, first = 1; k < E_COUNT; k++)
            if (errs[k]) {
                printf("%s\"%s\":%ld", first ? "" : ",", cause_names[k], errs[k]);
                first = 0;
            }
        printf("},\"statuses\":{");
        for (int s = 0, first = 1; s < 600; s++)
            if (status[s]) {
                printf("%s\"%d\":%ld", first ? "" : ",", s, status[s]);
                first = 0;
            }
        printf("}}\n");
    } else {
        printf("estload: %s, %d client(s), %.2f s: %zu ok, %ld error(s), %.1f requests/s, "
               "p50 %.2f ms, p99 %.2f ms, max %.2f ms%s\n",
               mode, L->clients, secs, n, nerr, rate, p50, p99, max,
               exhausted ? " (ran out of devices)" : "");
    }
    /* The first message of each cause, on stderr: what a person needs to act on. */
    for (int k = 0; k < E_COUNT; k++)
        for (int i = 0; i < L->clients && errs[k]; i++)
            if (cs[i].errors[k]) {
                fprintf(stderr, "estload: %ld %s error(s), e.g. %s\n", errs[k], cause_names[k],
                        cs[i].first[k]);
                break;
            }
    free(all);
    return nerr ? 1 : 0;
}

/* ---- main ---- */

static void usage(int rc)
{
    fprintf(rc ? stderr : stdout,
            "usage: estload --connect HOST:PORT --devices DIR [options]\n"
            "  --clients N       concurrent clients (default 1)\n"
            "  --duration S      start no request after S seconds (default 5)\n"
            "  --requests N      at most N requests in all\n"
            "  --offset I        skip the first I devices (in id order)\n"
            "  --limit N         use at most N devices\n"
            "  --healthz         GET /healthz after the handshake instead of enrolling\n"
            "  --label LABEL     enroll at /.well-known/est/LABEL/simpleenroll\n"
            "  --cacert FILE     verify the server's certificate and name against FILE\n"
            "  --tls12           TLS 1.2 with ECDHE-ECDSA-AES128-GCM-SHA256 only\n"
            "  --timeout S       give up on a request after S seconds (default 10)\n"
            "  --save DIR        write each certificate received to DIR/UID.pem\n"
            "  --json            print one JSON object\n");
    exit(rc);
}

static double parse_num(const char *opt, const char *s, double min, double max)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || v < min || v > max)
        die("--%s %s: expected a number from %g to %g", opt, s, min, max);
    return v;
}

static void parse_args(load *L, int argc, char **argv)
{
    static const struct option opts[] = {
        {"connect", required_argument, NULL, 'c'},  {"devices", required_argument, NULL, 'd'},
        {"clients", required_argument, NULL, 'n'},  {"duration", required_argument, NULL, 's'},
        {"requests", required_argument, NULL, 'r'}, {"offset", required_argument, NULL, 'o'},
        {"limit", required_argument, NULL, 'l'},    {"healthz", no_argument, NULL, 'H'},
        {"label", required_argument, NULL, 'L'},    {"cacert", required_argument, NULL, 'C'},
        {"tls12", no_argument, NULL, '2'},          {"timeout", required_argument, NULL, 't'},
        {"save", required_argument, NULL, 'S'},     {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            L->connect = optarg;
            break;
        case 'd':
            L->devices_dir = optarg;
            break;
        case 'n':
            L->clients = (int)parse_num("clients", optarg, 1, 4096);
            break;
        case 's':
            L->duration = parse_num("duration", optarg, 0.001, 86400);
            break;
        case 'r':
            L->requests = (long)parse_num("requests", optarg, 1, 1e12);
            break;
        case 'o':
            L->offset = (long)parse_num("offset", optarg, 0, 1e12);
            break;
        case 'l':
            L->limit = (long)parse_num("limit", optarg, 1, 1e12);
            break;
        case 'H':
            L->healthz = 1;
            break;
        case 'L':
            L->label = optarg;
            break;
        case 'C':
            L->cacert = optarg;
            break;
        case '2':
            L->tls12 = 1;
            break;
        case 't':
            L->timeout = parse_num("timeout", optarg, 0.01, 3600);
            break;
        case 'S':
            L->save_dir = optarg;
            break;
        case 'j':
            L->json = 1;
            break;
        case 'h':
            usage(0);
            break;
        default:
            usage(2);
        }
    }
    if (optind != argc || !L->connect || !L->devices_dir)
        usage(2);
    if (L->label && (!*L->label || strlen(L->label) > 64 ||
                     strspn(L->label, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                      "0123456789._-") != strlen(L->label)))
        die("--label %s: letters, digits, '.', '_' and '-', at most 64", L->label);
    struct stat sb;
    if (L->save_dir && (stat(L->save_dir, &sb) != 0 || !S_ISDIR(sb.st_mode)))
        die("--save %s: not a directory", L->save_dir);
}

int main(int argc, char **argv)
{
    load L = {.clients = 1, .duration = 5, .timeout = 10};
    parse_args(&L, argc, argv);
    signal(SIGPIPE, SIG_IGN);
    resolve(&L);
    context_new(&L);
    request_path(&L);
    devices_load(&L);

    client *cs = calloc((size_t)L.clients, sizeof *cs);
    if (!cs || pthread_barrier_init(&L.go, NULL, (unsigned)L.clients + 1) != 0)
        die("out of memory");
    for (int i = 0; i < L.clients; i++) {
        cs[i].L = &L;
        if (pthread_create(&cs[i].thread, NULL, client_main, &cs[i]) != 0)
            die("cannot start client %d", i);
    }
    L.cpu0 = cpu_s();
    L.t0 = now_s();
    L.deadline = L.t0 + L.duration;
    pthread_barrier_wait(&L.go);
    for (int i = 0; i < L.clients; i++)
        pthread_join(cs[i].thread, NULL);
    L.cpu = cpu_s() - L.cpu0;
    int rc = report(&L, cs);

    for (int i = 0; i < L.clients; i++)
        free(cs[i].lat);
    free(cs);
    pthread_barrier_destroy(&L.go);
    SSL_CTX_free(L.ctx);
    devices_free(&L);
    return rc;
}
