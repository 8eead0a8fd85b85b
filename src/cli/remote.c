/* remote.c - runs an operation of the table (src/api) on a certfleet server: builds the
 * request from the operation's method and path template and the parameters, sends it over
 * HTTPS with a small blocking OpenSSL client (the server's certificate verified against
 * --cacert and the host name of --server), and returns the JSON result or the server's
 * {"error": {...}} as c->err. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/fs.h"

#define RESPONSE_MAX ((size_t)1 << 30)
#define IO_TIMEOUT_S 600 /* an import of a large manifest takes a while */

/* A growing buffer. */
typedef struct {
    char *data;
    size_t len, cap;
} buf;

static int buf_add(buf *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d)
            return -1;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

static int buf_str(buf *b, const char *s)
{
    return buf_add(b, s, strlen(s));
}

/* Appends s percent-encoded (RFC 3986 unreserved characters stay). */
static int buf_pct(buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            if (buf_add(b, s, 1) < 0)
                return -1;
        } else {
            char e[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            if (buf_add(b, e, 3) < 0)
                return -1;
        }
    }
    return 0;
}

/* A parameter as query text: strings as they are, numbers and flags written out. */
static char *param_text(json_t *v)
{
    if (json_is_string(v))
        return strdup(json_string_value(v));
    return json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
}

/* ---- the URL ---- */

typedef struct {
    char host[256];
    char port[8];
    char prefix[512]; /* a path the server is mounted under, without the trailing / */
} server_url;

static cf_err parse_url(const char *url, server_url *u, cf_error *err)
{
    const char *p = url;
    memset(u, 0, sizeof *u);
    if (strncmp(p, "https://", 8) != 0)
        return cf_error_set(err, CF_ERR_INVALID, "--server %.200s: expected https://HOST[:PORT]",
                            url);
    p += 8;
    size_t hl;
    if (*p == '[') {
        const char *close = strchr(p, ']');
        if (!close)
            return cf_error_set(err, CF_ERR_INVALID, "--server %.200s: unclosed [", url);
        hl = (size_t)(close - p - 1);
        if (hl == 0 || hl >= sizeof u->host)
            return cf_error_set(err, CF_ERR_INVALID, "--server %.200s: bad host", url);
        memcpy(u->host, p + 1, hl);
        p = close + 1;
    } else {
        hl = strcspn(p, ":/");
        if (hl == 0 || hl >= sizeof u->host)
            return cf_error_set(err, CF_ERR_INVALID, "--server %.200s: bad host", url);
        memcpy(u->host, p, hl);
        p += hl;
    }
    snprintf(u->port, sizeof u->port, "443");
    if (*p == ':') {
        size_t pl = strspn(p + 1, "0123456789");
        if (pl == 0 || pl > 5 || (p[1 + pl] && p[1 + pl] != '/'))
            return cf_error_set(err, CF_ERR_INVALID, "--server %.200s: bad port", url);
        snprintf(u->port, sizeof u->port, "%.*s", (int)pl, p + 1);
        p += 1 + pl;
    }
    if (strlen(p) >= sizeof u->prefix)
        return cf_error_set(err, CF_ERR_INVALID, "--server %.200s: path too long", url);
    snprintf(u->prefix, sizeof u->prefix, "%s", p);
    size_t n = strlen(u->prefix);
    while (n && u->prefix[n - 1] == '/')
        u->prefix[--n] = '\0';
    return CF_OK;
}

/* ---- the request ---- */

/* The request line's target and the body (for POST/PUT without upload: the parameters
 * that are not in the path, as JSON). Consumes the path parameters from params. */
static cf_err build_target(const server_url *u, const cf_api_op *op, json_t *params, buf *target,
                           buf *body, cf_error *err)
{
    buf_str(target, u->prefix);
    for (const char *t = op->path; *t;) {
        if (*t != '{') {
            buf_add(target, t++, 1);
            continue;
        }
        const char *close = strchr(t, '}');
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(close - t - 1), t + 1);
        const char *v = json_string_value(json_object_get(params, name));
        if (!v || !*v)
            return cf_error_set(err, CF_ERR_INVALID, "%s: parameter %s is required", op->name,
                                name);
        buf_pct(target, v);
        json_object_del(params, name);
        t = close + 1;
    }
    int query =
        op->method == CF_API_GET || op->method == CF_API_DELETE || (op->flags & CF_API_UPLOAD);
    if (!query) {
        char *text = json_dumps(params, JSON_COMPACT);
        int bad = !text || buf_str(body, text) < 0;
        free(text);
        return bad ? cf_error_set(err, CF_ERR_NOMEM, "out of memory") : CF_OK;
    }
    const char *key;
    json_t *v;
    int first = 1;
    json_object_foreach(params, key, v)
    {
        char *text = param_text(v);
        if (!text)
            return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
        buf_str(target, first ? "?" : "&");
        buf_pct(target, key);
        buf_str(target, "=");
        buf_pct(target, text);
        free(text);
        first = 0;
    }
    return CF_OK;
}

/* ---- TLS ---- */

/* Trust: the PEM certificates of cacert_pem. */
static cf_err load_trust(SSL_CTX *ctx, const char *pem, size_t len, cf_error *err)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    X509 *x;
    int n = 0;
    while (bio && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
        X509_STORE_add_cert(store, x);
        X509_free(x);
        n++;
    }
    ERR_clear_error();
    BIO_free(bio);
    return n ? CF_OK
             : cf_error_set(err, CF_ERR_INVALID, "--cacert: no PEM certificate to trust in it");
}

static int tcp_connect(const server_url *u, cf_error *err)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(u->host, u->port, &hints, &res), fd = -1, saved = 0;
    if (rc != 0) {
        cf_error_set(err, CF_ERR_UNAVAILABLE, "%s: %s", u->host, gai_strerror(rc));
        return -1;
    }
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0)
            continue;
        struct timeval tv = {IO_TIMEOUT_S, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
            break;
        saved = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        cf_error_set(err, CF_ERR_UNAVAILABLE, "cannot connect to %s port %s: %s", u->host, u->port,
                     strerror(saved ? saved : ECONNREFUSED));
    return fd;
}

static cf_err tls_open(const server_url *u, const char *trust, size_t trust_len, SSL_CTX **ctx_out,
                       SSL **ssl_out, cf_error *err)
{
    unsigned char ip[16];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = NULL;
    int fd = -1;
    cf_err rc = CF_OK;
    if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "TLS context");
        goto out;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if ((rc = load_trust(ctx, trust, trust_len, err)) != CF_OK)
        goto out;
    if ((fd = tcp_connect(u, err)) < 0) {
        rc = err->code;
        goto out;
    }
    if (!(ssl = SSL_new(ctx)) || !SSL_set_fd(ssl, fd)) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "TLS connection");
        goto out;
    }
    X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
    if (inet_pton(AF_INET, u->host, ip) == 1 || inet_pton(AF_INET6, u->host, ip) == 1) {
        X509_VERIFY_PARAM_set1_ip_asc(vp, u->host);
    } else {
        SSL_set_tlsext_host_name(ssl, u->host);
        X509_VERIFY_PARAM_set1_host(vp, u->host, 0);
    }
    if (SSL_connect(ssl) != 1) {
        long v = SSL_get_verify_result(ssl);
        if (v != X509_V_OK)
            rc = cf_error_set(err, CF_ERR_UNAVAILABLE,
                              "%s: the server's certificate is not trusted: %s (see --cacert)",
                              u->host, X509_verify_cert_error_string(v));
        else
            rc = cf_error_openssl(err, CF_ERR_UNAVAILABLE, "%s: TLS handshake failed", u->host);
        goto out;
    }
    *ctx_out = ctx;
    *ssl_out = ssl;
    return CF_OK;
out:
    SSL_free(ssl);
    if (fd >= 0)
        close(fd);
    SSL_CTX_free(ctx);
    return rc;
}

static cf_err ssl_write_all(SSL *ssl, const void *p, size_t n, cf_error *err)
{
    const char *c = p;
    while (n > 0) {
        int chunk = n > (1 << 20) ? (1 << 20) : (int)n;
        int w = SSL_write(ssl, c, chunk);
        if (w <= 0)
            return cf_error_openssl(err, CF_ERR_UNAVAILABLE, "sending the request failed");
        c += w;
        n -= (size_t)w;
    }
    return CF_OK;
}

/* Sends the file at path as the body. */
static cf_err send_file(SSL *ssl, const char *path, cf_error *err)
{
    FILE *f = fopen(path, "rb");
    char chunk[65536];
    size_t n;
    cf_err rc = CF_OK;
    if (!f)
        return cf_error_set(err, CF_ERR_IO, "%s: %s", path, strerror(errno));
    while (rc == CF_OK && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        rc = ssl_write_all(ssl, chunk, n, err);
    if (rc == CF_OK && ferror(f))
        rc = cf_error_set(err, CF_ERR_IO, "%s: read error", path);
    fclose(f);
    return rc;
}

/* Reads the whole response (the request said Connection: close). */
static cf_err read_response(SSL *ssl, buf *resp, cf_error *err)
{
    char chunk[65536];
    for (;;) {
        int r = SSL_read(ssl, chunk, sizeof chunk);
        if (r > 0) {
            if (resp->len + (size_t)r > RESPONSE_MAX || buf_add(resp, chunk, (size_t)r) < 0)
                return cf_error_set(err, CF_ERR_INVALID, "the server's answer is too large");
            continue;
        }
        int e = SSL_get_error(ssl, r);
        ERR_clear_error();
        if (e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL || e == SSL_ERROR_SSL)
            break; /* the end, clean or not: Content-Length tells whether it is whole */
        return cf_error_set(err, CF_ERR_UNAVAILABLE, "reading the answer failed");
    }
    return CF_OK;
}

/* Splits resp into status and body; checks Content-Length when given. */
static cf_err parse_response(buf *resp, int *status, const char **body, size_t *body_len,
                             cf_error *err)
{
    char *end = resp->data ? strstr(resp->data, "\r\n\r\n") : NULL;
    if (!end || sscanf(resp->data, "HTTP/1.%*d %d", status) != 1)
        return cf_error_set(err, CF_ERR_UNAVAILABLE, "the server's answer is not HTTP");
    *end = '\0';
    *body = end + 4;
    *body_len = resp->len - (size_t)(end + 4 - resp->data);
    for (char *line = strstr(resp->data, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        long long cl;
        if (strncasecmp(line + 2, "Content-Length:", 15) == 0 &&
            sscanf(line + 17, "%lld", &cl) == 1) {
            if (cl < 0 || (size_t)cl > *body_len)
                return cf_error_set(err, CF_ERR_UNAVAILABLE, "the server's answer was cut short");
            *body_len = (size_t)cl;
        }
    }
    return CF_OK;
}

/* The server's error as c->err: its message, and the code its name gives. */
static cf_err error_from(json_t *j, int status, cf_error *err)
{
    json_t *e = json_object_get(j, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    cf_err rc = CF_ERR_UNAVAILABLE;
    for (int c = CF_ERR_INVALID; c <= CF_ERR_INTERNAL; c++)
        if (code && strcmp(code, cf_err_name((cf_err)c)) == 0)
            rc = (cf_err)c;
    if (status == 401 || status == 403)
        rc = CF_ERR_POLICY;
    if (!msg)
        return cf_error_set(err, rc, "the server answered %d", status);
    return cf_error_set(err, rc, "%s", msg);
}

cf_err cli_remote_call(cli *c, const cf_api_op *op, json_t *params, const char *upload,
                       json_t **result)
{
    server_url u;
    buf target = {0}, body = {0}, head = {0}, resp = {0};
    SSL_CTX *ctx = NULL;
    SSL *ssl = NULL;
    cf_error *err = &c->err;
    cf_err rc;
    struct stat st;
    if ((rc = parse_url(c->server, &u, err)) != CF_OK ||
        (rc = build_target(&u, op, params, &target, &body, err)) != CF_OK)
        goto out;
    size_t body_len = body.len;
    if (upload) {
        if (stat(upload, &st) != 0) {
            rc = cf_error_set(err, CF_ERR_IO, "%s: %s", upload, strerror(errno));
            goto out;
        }
        body_len = (size_t)st.st_size;
    }
    char line[400];
    buf_str(&head, cf_api_method_name(op->method));
    buf_str(&head, " ");
    buf_add(&head, target.data, target.len);
    snprintf(line, sizeof line, " HTTP/1.1\r\nHost: %s%s%s:%s\r\n", strchr(u.host, ':') ? "[" : "",
             u.host, strchr(u.host, ':') ? "]" : "", u.port);
    buf_str(&head, line);
    buf_str(&head, "Authorization: Bearer ");
    buf_str(&head, c->token);
    snprintf(line, sizeof line,
             "\r\nAccept: application/json\r\nConnection: close\r\nContent-Length: %zu\r\n",
             body_len);
    buf_str(&head, line);
    if (body_len)
        buf_str(&head, "Content-Type: application/json\r\n");
    if (buf_str(&head, "\r\n") < 0) {
        rc = cf_error_set(err, CF_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((rc = tls_open(&u, c->trust, c->trust_len, &ctx, &ssl, err)) != CF_OK ||
        (rc = ssl_write_all(ssl, head.data, head.len, err)) != CF_OK ||
        (body.len && (rc = ssl_write_all(ssl, body.data, body.len, err)) != CF_OK) ||
        (upload && (rc = send_file(ssl, upload, err)) != CF_OK) ||
        (rc = read_response(ssl, &resp, err)) != CF_OK)
        goto out;
    int status = 0;
    const char *text = NULL;
    size_t text_len = 0;
    if ((rc = parse_response(&resp, &status, &text, &text_len, err)) != CF_OK)
        goto out;
    json_error_t jerr;
    json_t *j = json_loadb(text, text_len, 0, &jerr);
    if (status == 200 && j) {
        *result = j;
        goto out;
    }
    if (j)
        rc = error_from(j, status, err);
    else if (status == 413)
        rc = cf_error_set(err, CF_ERR_INVALID,
                          "the server refused the request as too large"
                          " (413; see certfleet serve --max-upload)");
    else
        rc = cf_error_set(err, CF_ERR_UNAVAILABLE, "the server answered %d without JSON", status);
    json_decref(j);
out:
    if (ssl) {
        int fd = SSL_get_fd(ssl);
        SSL_free(ssl);
        close(fd);
    }
    SSL_CTX_free(ctx);
    OPENSSL_cleanse(head.data, head.len); /* it holds the token */
    free(head.data);
    free(target.data);
    free(body.data);
    free(resp.data);
    return rc;
}
