#include "pki/manifest.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/util.h"
#include "pki/x509.h"

/* ==== Streaming reader ===================================================================
 *
 * The top level is split by a small state machine that knows only what it must: where
 * strings start and end (with their escapes), and the nesting of brackets. Each complete
 * element is then handed to jansson, which does the real parsing. The element buffer never
 * exceeds CF_MANIFEST_ENTRY_MAX, so a hostile file costs at most that much memory. */

#define READ_CHUNK 65536

typedef enum {
    RS_START, /* before '[' */
    RS_FIRST, /* after '[': an element or ']' */
    RS_NEXT,  /* after ',': an element */
    RS_ELEM,  /* inside an element */
    RS_AFTER, /* after an element: ',' or ']' */
    RS_END,   /* after ']': whitespace only */
} reader_state;

struct cf_manifest_reader {
    FILE *fp;                 /* NULL when reading memory */
    const unsigned char *mem; /* borrowed */
    size_t mem_len;
    unsigned char *buf;         /* file read buffer (owned) */
    const unsigned char *chunk; /* the bytes being scanned: buf or mem */
    size_t chunk_len, pos;
    uint64_t chunk_base; /* input offset of chunk[0] */
    uint64_t size;
    int eof;
    EVP_MD_CTX *sha;
    unsigned char digest[32];
    int digest_final;

    reader_state state;
    size_t index; /* of the element being read or next to be read */
    char *elem;   /* element text (owned), elem_len bytes, capacity elem_cap */
    size_t elem_len, elem_cap;
    int depth;
    uint64_t objects; /* bit d set: nesting level d is an object, clear: an array */
    int in_string, escape;

    int failed;
    cf_error fatal;
};

static cf_err reader_new(cf_manifest_reader **out, cf_error *err)
{
    cf_manifest_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->sha = EVP_MD_CTX_new()) || EVP_DigestInit_ex(r->sha, EVP_sha256(), NULL) != 1) {
        cf_manifest_reader_free(r);
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory opening manifest");
    }
    *out = r;
    return CF_OK;
}

cf_err cf_manifest_reader_open(const char *path, cf_manifest_reader **out, cf_error *err)
{
    cf_manifest_reader *r = NULL;
    cf_err rc = reader_new(&r, err);
    if (rc != CF_OK)
        return rc;
    r->fp = fopen(path, "rb");
    if (!r->fp) {
        rc = cf_error_set(err, CF_ERR_IO, "manifest %s: %s", path, strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(fileno(r->fp), &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            rc = cf_error_set(err, CF_ERR_IO, "manifest %s: is a directory", path);
            goto fail;
        }
        if (S_ISREG(st.st_mode))
            r->size = (uint64_t)st.st_size;
    }
    if (!(r->buf = malloc(READ_CHUNK))) {
        rc = cf_error_set(err, CF_ERR_NOMEM, "out of memory opening manifest");
        goto fail;
    }
    *out = r;
    return CF_OK;
fail:
    cf_manifest_reader_free(r);
    return rc;
}

cf_err cf_manifest_reader_open_mem(const void *data, size_t len, cf_manifest_reader **out,
                                   cf_error *err)
{
    cf_manifest_reader *r = NULL;
    cf_err rc = reader_new(&r, err);
    if (rc != CF_OK)
        return rc;
    r->mem = data;
    r->mem_len = len;
    r->size = len;
    *out = r;
    return CF_OK;
}

void cf_manifest_reader_free(cf_manifest_reader *r)
{
    if (!r)
        return;
    if (r->fp)
        fclose(r->fp);
    free(r->buf);
    free(r->elem);
    EVP_MD_CTX_free(r->sha);
    free(r);
}

int cf_manifest_reader_failed(const cf_manifest_reader *r)
{
    return r->failed;
}

uint64_t cf_manifest_reader_offset(const cf_manifest_reader *r)
{
    return r->chunk_base + r->pos;
}

uint64_t cf_manifest_reader_size(const cf_manifest_reader *r)
{
    return r->size;
}

int cf_manifest_reader_sha256(const cf_manifest_reader *r, unsigned char out[32])
{
    if (r->digest_final) {
        memcpy(out, r->digest, 32);
        return 1;
    }
    unsigned int n = 0;
    EVP_MD_CTX *copy = EVP_MD_CTX_new();
    if (!copy || EVP_MD_CTX_copy_ex(copy, r->sha) != 1 || EVP_DigestFinal_ex(copy, out, &n) != 1)
        memset(out, 0, 32);
    EVP_MD_CTX_free(copy);
    return 0;
}

/* Records an error that ends the stream; later calls repeat it. */
static cf_err reader_fail(cf_manifest_reader *r, cf_error *err, cf_err code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static cf_err reader_fail(cf_manifest_reader *r, cf_error *err, cf_err code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    r->fatal.code = code;
    vsnprintf(r->fatal.msg, sizeof r->fatal.msg, fmt, ap);
    va_end(ap);
    r->failed = 1;
    if (err)
        *err = r->fatal;
    return code;
}

/* Makes the next bytes of input available in chunk; sets eof when there are none. */
static cf_err reader_refill(cf_manifest_reader *r, cf_error *err)
{
    r->chunk_base += r->chunk_len;
    r->chunk_len = r->pos = 0;
    if (!r->fp) {
        if (r->mem && r->chunk != r->mem) {
            r->chunk = r->mem;
            r->chunk_len = r->mem_len;
        }
        r->mem = NULL; /* memory is one chunk */
    } else {
        size_t n = fread(r->buf, 1, READ_CHUNK, r->fp);
        if (n == 0 && ferror(r->fp))
            return reader_fail(r, err, CF_ERR_IO, "manifest: read error at byte %llu: %s",
                               (unsigned long long)r->chunk_base, strerror(errno));
        r->chunk = r->buf;
        r->chunk_len = n;
    }
    if (r->chunk_len == 0) {
        r->eof = 1;
        if (!r->digest_final) {
            unsigned int n = 0;
            if (EVP_DigestFinal_ex(r->sha, r->digest, &n) != 1)
                return reader_fail(r, err, CF_ERR_CRYPTO, "manifest: SHA-256 failed");
            r->digest_final = 1;
        }
        return CF_OK;
    }
    if (EVP_DigestUpdate(r->sha, r->chunk, r->chunk_len) != 1)
        return reader_fail(r, err, CF_ERR_CRYPTO, "manifest: SHA-256 failed");
    return CF_OK;
}

static int is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* A printable description of byte c for messages. */
static const char *byte_desc(unsigned char c, char buf[8])
{
    if (c >= 0x21 && c < 0x7f)
        snprintf(buf, 8, "'%c'", c);
    else
        snprintf(buf, 8, "0x%02x", c);
    return buf;
}

static cf_err elem_append(cf_manifest_reader *r, const unsigned char *p, size_t n, cf_error *err)
{
    if (n > CF_MANIFEST_ENTRY_MAX - r->elem_len)
        return reader_fail(r, err, CF_ERR_INVALID, "entry %zu: larger than %d bytes", r->index,
                           CF_MANIFEST_ENTRY_MAX);
    if (r->elem_len + n > r->elem_cap) {
        size_t cap = r->elem_cap ? r->elem_cap : 8192;
        while (cap < r->elem_len + n)
            cap *= 2;
        if (cap > CF_MANIFEST_ENTRY_MAX)
            cap = CF_MANIFEST_ENTRY_MAX;
        char *e = realloc(r->elem, cap);
        if (!e)
            return reader_fail(r, err, CF_ERR_NOMEM, "entry %zu: out of memory", r->index);
        r->elem = e;
        r->elem_cap = cap;
    }
    memcpy(r->elem + r->elem_len, p, n);
    r->elem_len += n;
    return CF_OK;
}

/* Scans element bytes from the current chunk. Sets *complete when the element's closing
 * bracket was consumed. */
static cf_err scan_element(cf_manifest_reader *r, int *complete, cf_error *err)
{
    const unsigned char *c = r->chunk;
    size_t start = r->pos, i = r->pos;
    *complete = 0;
    for (; i < r->chunk_len; i++) {
        unsigned char ch = c[i];
        if (r->in_string) {
            if (r->escape)
                r->escape = 0;
            else if (ch == '\\')
                r->escape = 1;
            else if (ch == '"')
                r->in_string = 0;
            continue;
        }
        if (ch == '"') {
            r->in_string = 1;
        } else if (ch == '{' || ch == '[') {
            if (r->depth >= CF_MANIFEST_DEPTH_MAX)
                return reader_fail(r, err, CF_ERR_INVALID, "entry %zu: nested deeper than %d",
                                   r->index, CF_MANIFEST_DEPTH_MAX);
            if (ch == '{')
                r->objects |= (uint64_t)1 << r->depth;
            else
                r->objects &= ~((uint64_t)1 << r->depth);
            r->depth++;
        } else if (ch == '}' || ch == ']') {
            int is_obj = (r->objects >> (r->depth - 1)) & 1;
            if (is_obj != (ch == '}'))
                return reader_fail(r, err, CF_ERR_INVALID, "entry %zu: '%c' closes %s at byte %llu",
                                   r->index, ch, is_obj ? "an object" : "an array",
                                   (unsigned long long)(r->chunk_base + i));
            if (--r->depth == 0) {
                i++;
                *complete = 1;
                break;
            }
        }
    }
    cf_err rc = elem_append(r, c + start, i - start, err);
    r->pos = i;
    return rc;
}

/* Parses the complete element in r->elem. */
static cf_err finish_element(cf_manifest_reader *r, json_t **entry, size_t *index, cf_error *err)
{
    json_error_t jerr;
    size_t idx = r->index++;
    r->state = RS_AFTER;
    *index = idx;
    json_t *j = json_loadb(r->elem, r->elem_len, JSON_REJECT_DUPLICATES, &jerr);
    r->elem_len = 0;
    if (!j)
        return cf_error_set(err, CF_ERR_INVALID, "entry %zu: not valid JSON: %s (column %d)", idx,
                            jerr.text, jerr.column);
    *entry = j;
    return CF_OK;
}

static cf_err reader_at_eof(cf_manifest_reader *r, cf_error *err)
{
    switch (r->state) {
    case RS_END:
        return CF_OK;
    case RS_START:
        return reader_fail(r, err, CF_ERR_INVALID,
                           r->chunk_base == 0 ? "manifest is empty"
                                              : "manifest is not a JSON array (only whitespace)");
    case RS_ELEM:
        return reader_fail(r, err, CF_ERR_INVALID,
                           "entry %zu: truncated (the file ends inside the entry)", r->index);
    default:
        return reader_fail(r, err, CF_ERR_INVALID,
                           "entry %zu: truncated (the file ends before the array is closed)",
                           r->index);
    }
}

cf_err cf_manifest_reader_next(cf_manifest_reader *r, json_t **entry, size_t *index, cf_error *err)
{
    char desc[8];
    *entry = NULL;
    *index = r->index;
    if (r->failed) {
        if (err)
            *err = r->fatal;
        return r->fatal.code;
    }
    for (;;) {
        if (r->pos == r->chunk_len) {
            if (r->eof)
                return reader_at_eof(r, err);
            cf_err rc = reader_refill(r, err);
            if (rc != CF_OK)
                return rc;
            continue;
        }
        unsigned char ch = r->chunk[r->pos];
        uint64_t off = r->chunk_base + r->pos;
        if (r->state == RS_ELEM) {
            int complete = 0;
            cf_err rc = scan_element(r, &complete, err);
            if (rc != CF_OK)
                return rc;
            if (complete)
                return finish_element(r, entry, index, err);
            continue;
        }
        if (is_ws(ch)) {
            r->pos++;
            continue;
        }
        switch (r->state) {
        case RS_START:
            /* A UTF-8 byte order mark, as some Windows tools write, is not content. */
            if (off == 0 && r->chunk_len - r->pos >= 3 &&
                memcmp(r->chunk + r->pos, "\xef\xbb\xbf", 3) == 0) {
                r->pos += 3;
                continue;
            }
            if (ch != '[')
                return reader_fail(r, err, CF_ERR_INVALID,
                                   "manifest is not a JSON array (starts with %s)",
                                   byte_desc(ch, desc));
            r->state = RS_FIRST;
            r->pos++;
            break;
        case RS_FIRST:
        case RS_NEXT:
            if (ch == ']' && r->state == RS_FIRST) {
                r->state = RS_END;
                r->pos++;
                break;
            }
            if (ch == ']')
                return reader_fail(r, err, CF_ERR_INVALID,
                                   "entry %zu: missing after ',' (trailing comma at byte %llu)",
                                   r->index, (unsigned long long)off);
            if (ch != '{')
                return reader_fail(r, err, CF_ERR_INVALID,
                                   "entry %zu: not a JSON object (starts with %s at byte %llu)",
                                   r->index, byte_desc(ch, desc), (unsigned long long)off);
            r->state = RS_ELEM;
            r->depth = 0;
            r->in_string = r->escape = 0;
            r->elem_len = 0;
            break;
        case RS_AFTER:
            if (ch == ',') {
                r->state = RS_NEXT;
            } else if (ch == ']') {
                r->state = RS_END;
            } else {
                return reader_fail(
                    r, err, CF_ERR_INVALID, "entry %zu: unexpected %s after entry %zu at byte %llu",
                    r->index, byte_desc(ch, desc), r->index - 1, (unsigned long long)off);
            }
            r->pos++;
            break;
        case RS_END:
            return reader_fail(r, err, CF_ERR_INVALID,
                               "manifest: unexpected %s after the end of the array at byte %llu",
                               byte_desc(ch, desc), (unsigned long long)off);
        case RS_ELEM:
            break; /* handled above */
        }
    }
}

/* ==== Trust ============================================================================== */

typedef struct {
    X509 *cert;
    char x5t[CF_JOSE_X5T_MAX];
    int64_t not_before, not_after;
    X509 *issuer_root; /* borrowed from roots; NULL when registered on its own */
} trusted_signer;

/* Decoded x5c intermediates by the SHA-256 of their DER. A reel's entries all carry the same
 * batch CA, and decoding a certificate costs OpenSSL 3 more than verifying a signature, so
 * each distinct intermediate is decoded once. Shared by the threads that verify with one
 * trust; a decoded X509 is only read after that. What comes out of the cache is still
 * verified by X509_verify_cert with every entry. */
#define X5C_CACHE_SLOTS 64

typedef struct {
    pthread_mutex_t lock;
    unsigned char md[X5C_CACHE_SLOTS][32];
    X509 *cert[X5C_CACHE_SLOTS];
    size_t next; /* slot replaced next once all are taken */
} x5c_cache;

struct cf_manifest_trust {
    X509_STORE *store;
    STACK_OF(X509) * roots;
    trusted_signer *signers;
    size_t nsigners;
    int64_t when;
    x5c_cache *cache;
};

cf_err cf_manifest_trust_new(cf_manifest_trust **out, cf_error *err)
{
    cf_manifest_trust *t = calloc(1, sizeof *t);
    if (!t || !(t->store = X509_STORE_new()) || !(t->roots = sk_X509_new_null()) ||
        !(t->cache = calloc(1, sizeof *t->cache))) {
        cf_manifest_trust_free(t);
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    }
    if (pthread_mutex_init(&t->cache->lock, NULL) != 0) {
        free(t->cache);
        t->cache = NULL;
        cf_manifest_trust_free(t);
        return cf_error_set(err, CF_ERR_INTERNAL, "cannot create a mutex");
    }
    *out = t;
    return CF_OK;
}

void cf_manifest_trust_free(cf_manifest_trust *t)
{
    if (!t)
        return;
    X509_STORE_free(t->store);
    sk_X509_pop_free(t->roots, X509_free);
    for (size_t i = 0; i < t->nsigners; i++)
        X509_free(t->signers[i].cert);
    free(t->signers);
    if (t->cache) {
        for (size_t i = 0; i < X5C_CACHE_SLOTS; i++)
            X509_free(t->cache->cert[i]);
        pthread_mutex_destroy(&t->cache->lock);
        free(t->cache);
    }
    free(t);
}

/* The cached certificate whose DER hashes to md, with a new reference, or NULL. */
static X509 *cache_get(x5c_cache *c, const unsigned char md[32])
{
    X509 *x = NULL;
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < X5C_CACHE_SLOTS && c->cert[i]; i++)
        if (memcmp(c->md[i], md, 32) == 0) {
            if (X509_up_ref(c->cert[i]))
                x = c->cert[i];
            break;
        }
    pthread_mutex_unlock(&c->lock);
    return x;
}

/* Keeps a reference on x under md (another thread may have added it meanwhile: harmless). */
static void cache_put(x5c_cache *c, const unsigned char md[32], X509 *x)
{
    pthread_mutex_lock(&c->lock);
    size_t slot = c->next;
    c->next = (c->next + 1) % X5C_CACHE_SLOTS;
    if (X509_up_ref(x)) {
        X509_free(c->cert[slot]);
        c->cert[slot] = x;
        memcpy(c->md[slot], md, 32);
    }
    pthread_mutex_unlock(&c->lock);
}

/* The subject CN of cert into out ("" when it has none). Returns 0, or -1 when the CN is
 * not valid UTF-8 or does not fit. */
static int subject_cn(X509 *cert, char *out, size_t outlen)
{
    out[0] = '\0';
    X509_NAME *name = X509_get_subject_name(cert);
    int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (i < 0)
        return 0;
    unsigned char *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i)));
    if (n < 0)
        return -1;
    int rc = -1;
    if ((size_t)n < outlen && memchr(utf8, '\0', (size_t)n) == NULL) {
        memcpy(out, utf8, (size_t)n);
        out[n] = '\0';
        rc = 0;
    }
    OPENSSL_free(utf8);
    return rc;
}

cf_err cf_manifest_trust_add_root(cf_manifest_trust *t, X509 *root, cf_error *err)
{
    char cn[128];
    if (subject_cn(root, cn, sizeof cn) != 0)
        cn[0] = '\0';
    if (X509_check_ca(root) < 1)
        return cf_error_set(err, CF_ERR_INVALID, "root \"%s\" is not a CA certificate", cn);
    if (X509_STORE_add_cert(t->store, root) != 1)
        return cf_error_openssl(err, CF_ERR_CRYPTO, "cannot add root \"%s\"", cn);
    if (!X509_up_ref(root))
        return cf_error_set(err, CF_ERR_CRYPTO, "cannot reference root");
    if (!sk_X509_push(t->roots, root)) {
        X509_free(root);
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    }
    return CF_OK;
}

cf_err cf_manifest_trust_add_signer(cf_manifest_trust *t, X509 *signer, cf_error *err)
{
    char cn[128];
    if (subject_cn(signer, cn, sizeof cn) != 0)
        cn[0] = '\0';
    EVP_PKEY *pub = X509_get0_pubkey(signer);
    int id = pub ? EVP_PKEY_get_base_id(pub) : NID_undef;
    if (id != EVP_PKEY_EC && id != EVP_PKEY_RSA)
        return cf_error_set(err, CF_ERR_POLICY, "signer \"%s\": key is neither EC nor RSA", cn);
    if (id == EVP_PKEY_RSA && EVP_PKEY_get_bits(pub) < 2048)
        return cf_error_set(err, CF_ERR_POLICY, "signer \"%s\": RSA key under 2048 bits", cn);
    trusted_signer s = {.cert = signer};
    cf_err rc = cf_jose_x5t_s256(signer, s.x5t, err);
    if (rc != CF_OK)
        return rc;
    if (cf_manifest_trust_find_signer(t, s.x5t))
        return CF_OK; /* already registered */
    s.not_before = cf_x509_not_before(signer);
    s.not_after = cf_x509_not_after(signer);
    for (int i = 0; i < sk_X509_num(t->roots); i++) {
        X509 *root = sk_X509_value(t->roots, i);
        if (X509_check_issued(root, signer) == X509_V_OK && X509_cmp(root, signer) != 0)
            s.issuer_root = root;
    }
    trusted_signer *grown = realloc(t->signers, (t->nsigners + 1) * sizeof *grown);
    if (!grown)
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    t->signers = grown;
    if (!X509_up_ref(signer))
        return cf_error_set(err, CF_ERR_CRYPTO, "cannot reference signer");
    t->signers[t->nsigners++] = s;
    return CF_OK;
}

/* One DER certificate, nothing after it (*out: X509_free). */
static cf_err der_to_x509(const unsigned char *der, size_t len, X509 **out, cf_error *err)
{
    const unsigned char *p = der;
    X509 *x = len <= INT32_MAX ? d2i_X509(NULL, &p, (long)len) : NULL;
    if (!x)
        return cf_error_openssl(err, CF_ERR_INVALID, "not a DER certificate");
    if ((size_t)(p - der) != len) {
        X509_free(x);
        return cf_error_set(err, CF_ERR_INVALID, "%zu bytes after the certificate's DER",
                            len - (size_t)(p - der));
    }
    *out = x;
    return CF_OK;
}

cf_err cf_manifest_trust_add_data(cf_manifest_trust *t, int as_signer, const void *data, size_t len,
                                  cf_error *err)
{
    const char *what = as_signer ? "signer" : "root";
    cf_err rc = CF_OK;
    if (len == 0 || len > INT32_MAX)
        return cf_error_set(err, CF_ERR_INVALID, "%s certificate: empty or too large", what);
    if (((const unsigned char *)data)[0] == 0x30) {
        X509 *x = NULL;
        if ((rc = der_to_x509(data, len, &x, err)) != CF_OK)
            return cf_error_prefix(err, "%s certificate", what);
        rc = as_signer ? cf_manifest_trust_add_signer(t, x, err)
                       : cf_manifest_trust_add_root(t, x, err);
        X509_free(x);
        return rc;
    }
    BIO *b = BIO_new_mem_buf(data, (int)len);
    if (!b)
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    int n = 0;
    for (;;) {
        X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
        if (!x) {
            unsigned long e = ERR_peek_last_error();
            if (n > 0 && ERR_GET_LIB(e) == ERR_LIB_PEM &&
                ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
                ERR_clear_error();
                break;
            }
            rc = cf_error_openssl(err, CF_ERR_INVALID,
                                  "%s certificate %d: not a valid PEM"
                                  " certificate",
                                  what, n);
            break;
        }
        rc = as_signer ? cf_manifest_trust_add_signer(t, x, err)
                       : cf_manifest_trust_add_root(t, x, err);
        X509_free(x);
        if (rc != CF_OK)
            break;
        n++;
    }
    BIO_free(b);
    return rc;
}

void cf_manifest_trust_set_time(cf_manifest_trust *t, int64_t when)
{
    t->when = when;
}

static const trusted_signer *find_signer(const cf_manifest_trust *t, const char *x5t)
{
    for (size_t i = 0; i < t->nsigners; i++)
        if (strcmp(t->signers[i].x5t, x5t) == 0)
            return &t->signers[i];
    return NULL;
}

X509 *cf_manifest_trust_find_signer(const cf_manifest_trust *t, const char *x5t)
{
    const trusted_signer *s = find_signer(t, x5t);
    return s ? s->cert : NULL;
}

static int64_t trust_time(const cf_manifest_trust *t)
{
    return t->when ? t->when : (int64_t)time(NULL);
}

/* How far in the future a provisioningTimestamp may lie (clocks differ). */
#define FUTURE_SLACK_SECONDS 86400

/* Checks that the signature on an entry provisioned at prov can have been made, at some time
 * between prov and now, while signer s was valid:
 *   notBefore <= T <= notAfter  and  prov <= T <= now  for some T.
 * A manifest is signed when it is generated, which is after its chips were provisioned:
 * Microchip's own tool signs entries provisioned months before its signer was issued.
 * What can never be right is a signer that had already expired when the chip was made (the
 * signature came later still), a signer that is not valid yet, or a provisioning time in
 * the future. When s was issued by a registered root, that signature is checked too. */
static cf_err signer_valid_for(const trusted_signer *s, int64_t prov, int64_t now, cf_error *err)
{
    char cn[128], tb[CF_TIME_STR_MAX], nb[CF_TIME_STR_MAX], na[CF_TIME_STR_MAX];
    if (subject_cn(s->cert, cn, sizeof cn) != 0)
        cn[0] = '\0';
    cf_time_format(prov * 1000000, tb);
    cf_time_format(s->not_before * 1000000, nb);
    cf_time_format(s->not_after * 1000000, na);
    if (prov > now + FUTURE_SLACK_SECONDS)
        return cf_error_set(err, CF_ERR_POLICY, "provisioningTimestamp %s is in the future", tb);
    if (prov > s->not_after)
        return cf_error_set(err, CF_ERR_POLICY,
                            "signer \"%s\" had expired before the provisioningTimestamp %s"
                            " (valid %s to %s)",
                            cn, tb, nb, na);
    if (s->not_before > now)
        return cf_error_set(err, CF_ERR_POLICY, "signer \"%s\" is not valid yet (valid %s to %s)",
                            cn, nb, na);
    if (s->issuer_root) {
        EVP_PKEY *rk = X509_get0_pubkey(s->issuer_root);
        if (!rk || X509_verify(s->cert, rk) != 1)
            return cf_error_openssl(err, CF_ERR_POLICY,
                                    "signer \"%s\" does not verify with its issuing root", cn);
    }
    return CF_OK;
}

/* The same for a detached bundle, which carries no time: the signer must be valid now. */
static cf_err signer_valid_now(const trusted_signer *s, int64_t now, cf_error *err)
{
    char cn[128], nb[CF_TIME_STR_MAX], na[CF_TIME_STR_MAX];
    if (subject_cn(s->cert, cn, sizeof cn) != 0)
        cn[0] = '\0';
    if (now < s->not_before || now > s->not_after) {
        cf_time_format(s->not_before * 1000000, nb);
        cf_time_format(s->not_after * 1000000, na);
        return cf_error_set(err, CF_ERR_POLICY, "signer \"%s\" is not valid now (valid %s to %s)",
                            cn, nb, na);
    }
    return signer_valid_for(s, now, now, err);
}

/* ==== Entry verification ================================================================= */

/* 1 if s is an acceptable unique id: 1..128 of [0-9A-Za-z._:-]. Keeps messages, file names
 * and database keys free of surprises. */
static int uid_ok(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return 0;
    }
    return n > 0 && n < CF_MANIFEST_UID_MAX;
}

/* Parses an RFC 3339 date-time ("2025-06-01T20:14:53.773Z", any fraction, Z or an offset)
 * into seconds since the epoch (the fraction is dropped). Returns 0 or -1. */
static int parse_rfc3339(const char *s, int64_t *out)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int v[6];
    static const int width[6] = {4, 2, 2, 2, 2, 2};
    static const char sep[6] = {'-', '-', 'T', ':', ':', '\0'};
    const char *p = s;
    for (int f = 0; f < 6; f++) {
        v[f] = 0;
        for (int k = 0; k < width[f]; k++, p++) {
            if (*p < '0' || *p > '9')
                return -1;
            v[f] = v[f] * 10 + (*p - '0');
        }
        if (f < 5) {
            if (!(*p == sep[f] || (sep[f] == 'T' && *p == 't')))
                return -1;
            p++;
        }
    }
    if (v[1] < 1 || v[1] > 12 || v[2] < 1 || v[2] > mdays[v[1] - 1] || v[3] > 23 || v[4] > 59 ||
        v[5] > 60)
        return -1;
    if (v[1] == 2 && v[2] == 29 && !((v[0] % 4 == 0 && v[0] % 100 != 0) || v[0] % 400 == 0))
        return -1;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return -1;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    int offset = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1;
        p++;
        if (!(p[0] >= '0' && p[0] <= '9' && p[1] >= '0' && p[1] <= '9' && p[2] == ':' &&
              p[3] >= '0' && p[3] <= '9' && p[4] >= '0' && p[4] <= '9'))
            return -1;
        int oh = (p[0] - '0') * 10 + (p[1] - '0'), om = (p[3] - '0') * 10 + (p[4] - '0');
        if (oh > 23 || om > 59)
            return -1;
        offset = sign * (oh * 3600 + om * 60);
        p += 5;
    } else {
        return -1;
    }
    if (*p)
        return -1;
    struct tm tm = {.tm_year = v[0] - 1900,
                    .tm_mon = v[1] - 1,
                    .tm_mday = v[2],
                    .tm_hour = v[3],
                    .tm_min = v[4],
                    .tm_sec = v[5]};
    *out = (int64_t)timegm(&tm) - offset;
    return 0;
}

/* The string member name of obj, or NULL. */
static const char *get_str(const json_t *obj, const char *name, size_t *len)
{
    const json_t *v = json_object_get(obj, name);
    if (!json_is_string(v))
        return NULL;
    if (len)
        *len = json_string_length(v);
    return json_string_value(v);
}

/* Decodes the base64url member name of entry as a JSON object (*out: json_decref). */
static cf_err decode_b64url_json(const char *b64, size_t len, const char *name, json_t **out,
                                 cf_error *err)
{
    unsigned char *raw = NULL;
    size_t rawlen = 0;
    json_error_t jerr;
    if (cf_b64url_decode(b64, len, &raw, &rawlen, err) != CF_OK)
        return cf_error_prefix(err, "%s", name);
    json_t *j = json_loadb((const char *)raw, rawlen, JSON_REJECT_DUPLICATES, &jerr);
    free(raw);
    if (!j)
        return cf_error_set(err, CF_ERR_INVALID, "%s is not valid JSON: %s", name, jerr.text);
    if (!json_is_object(j)) {
        json_decref(j);
        return cf_error_set(err, CF_ERR_INVALID, "%s is not a JSON object", name);
    }
    *out = j;
    return CF_OK;
}

/* Copies the optional string member name of payload into out (CF_MANIFEST_FIELD_MAX). */
static cf_err copy_field(const json_t *payload, const char *name, char *out, cf_error *err)
{
    const json_t *v = json_object_get(payload, name);
    out[0] = '\0';
    if (!v || json_is_null(v))
        return CF_OK;
    if (!json_is_string(v))
        return cf_error_set(err, CF_ERR_INVALID, "payload \"%s\" is not a string", name);
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (n >= CF_MANIFEST_FIELD_MAX || memchr(s, '\0', n))
        return cf_error_set(err, CF_ERR_INVALID, "payload \"%s\" is longer than %d bytes", name,
                            CF_MANIFEST_FIELD_MAX - 1);
    memcpy(out, s, n + 1);
    return CF_OK;
}

/* The protected header: alg, signer (by x5t#S256) and kid. */
static cf_err check_protected(const cf_manifest_trust *t, const json_t *hdr,
                              const trusted_signer **signer, cf_error *err)
{
    const char *alg = get_str(hdr, "alg", NULL);
    if (!alg)
        return cf_error_set(err, CF_ERR_INVALID, "protected header has no \"alg\"");
    if (strcmp(alg, "ES256") != 0)
        return cf_error_set(err, CF_ERR_POLICY, "protected header \"alg\" is not ES256");
    /* RFC 7515 §4.1.11: extensions we do not understand must not be ignored. */
    if (json_object_get(hdr, "crit"))
        return cf_error_set(err, CF_ERR_POLICY, "protected header has \"crit\" extensions");
    size_t x5tlen = 0;
    const char *x5t = get_str(hdr, "x5t#S256", &x5tlen);
    if (!x5t)
        return cf_error_set(err, CF_ERR_INVALID, "protected header has no \"x5t#S256\"");
    const trusted_signer *s = x5tlen < CF_JOSE_X5T_MAX ? find_signer(t, x5t) : NULL;
    if (!s) {
        char shown[CF_JOSE_X5T_MAX];
        snprintf(shown, sizeof shown, "%s", uid_ok(x5t) ? x5t : "(malformed)");
        return cf_error_set(err, CF_ERR_NOT_FOUND, "unknown signer (x5t#S256 %s)", shown);
    }
    size_t kidlen = 0;
    const char *kid = get_str(hdr, "kid", &kidlen);
    if (json_object_get(hdr, "kid") && !kid)
        return cf_error_set(err, CF_ERR_INVALID, "protected header \"kid\" is not a string");
    const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(s->cert);
    if (kid && ski) {
        unsigned char *raw = NULL;
        size_t rawlen = 0;
        if (cf_b64url_decode(kid, kidlen, &raw, &rawlen, err) != CF_OK)
            return cf_error_prefix(err, "protected header \"kid\"");
        int same = rawlen == (size_t)ASN1_STRING_length(ski) &&
                   memcmp(raw, ASN1_STRING_get0_data(ski), rawlen) == 0;
        free(raw);
        if (!same)
            return cf_error_set(err, CF_ERR_POLICY,
                                "protected header \"kid\" is not the signer's key identifier");
    }
    *signer = s;
    return CF_OK;
}

/* Describes why chain (certs[0] first) did not verify, naming the root it should reach. */
static cf_err chain_error(const cf_manifest_trust *t, STACK_OF(X509) * certs, X509_STORE_CTX *ctx,
                          const char *what, cf_error *err)
{
    int e = X509_STORE_CTX_get_error(ctx);
    int depth = X509_STORE_CTX_get_error_depth(ctx);
    X509 *top = sk_X509_value(certs, sk_X509_num(certs) - 1);
    char root[128] = "";
    for (int i = 0; i < sk_X509_num(t->roots); i++) {
        X509 *r = sk_X509_value(t->roots, i);
        if (X509_NAME_cmp(X509_get_subject_name(r), X509_get_issuer_name(top)) == 0 &&
            subject_cn(r, root, sizeof root) == 0)
            break;
        root[0] = '\0';
    }
    if (depth < 0 || depth >= sk_X509_num(certs))
        depth = 0;
    if (root[0])
        return cf_error_set(err, CF_ERR_POLICY, "%s[%d] does not verify to root \"%s\": %s", what,
                            depth, root, X509_verify_cert_error_string(e));
    char *issuer = X509_NAME_oneline(X509_get_issuer_name(top), NULL, 0);
    cf_error_set(err, CF_ERR_POLICY,
                 "%s does not verify to a registered root (%s[%d] is issued by %s): %s", what, what,
                 sk_X509_num(certs) - 1, issuer ? issuer : "?", X509_verify_cert_error_string(e));
    OPENSSL_free(issuer);
    return CF_ERR_POLICY;
}

/* Verifies a birth-certificate chain (certs[0] is the device) to the trust's roots at the
 * trust's time. */
static cf_err verify_chain(const cf_manifest_trust *t, STACK_OF(X509) * certs, const char *what,
                           cf_error *err)
{
    cf_err rc = CF_ERR_CRYPTO;
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    if (!untrusted || !ctx) {
        rc = cf_error_set(err, CF_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int i = 1; i < sk_X509_num(certs); i++)
        if (!sk_X509_push(untrusted, sk_X509_value(certs, i))) {
            rc = cf_error_set(err, CF_ERR_NOMEM, "out of memory");
            goto out;
        }
    X509 *leaf = sk_X509_value(certs, 0);
    if (X509_check_ca(leaf) != 0) {
        rc = cf_error_set(err, CF_ERR_POLICY, "%s[0] is a CA certificate, not a device's", what);
        goto out;
    }
    if (X509_STORE_CTX_init(ctx, t->store, leaf, untrusted) != 1) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot start chain verification");
        goto out;
    }
    if (t->when)
        X509_STORE_CTX_set_time(ctx, 0, (time_t)t->when);
    if (X509_verify_cert(ctx) != 1) {
        ERR_clear_error();
        rc = chain_error(t, certs, ctx, what, err);
        goto out;
    }
    rc = CF_OK;
out:
    X509_STORE_CTX_free(ctx);
    sk_X509_free(untrusted); /* the certificates belong to certs */
    return rc;
}

/* Checks that the device certificate's subject CN names uid: uid itself, or Microchip's
 * "sn" + uid in upper case. */
static cf_err check_cn(X509 *cert, const char *uid, const char *what, cf_error *err)
{
    char cn[256], sn[CF_MANIFEST_UID_MAX + 2];
    if (subject_cn(cert, cn, sizeof cn) != 0)
        return cf_error_set(err, CF_ERR_INVALID, "%s[0] subject CN is malformed", what);
    size_t n = strlen(uid);
    sn[0] = 's';
    sn[1] = 'n';
    for (size_t i = 0; i <= n; i++)
        sn[2 + i] = (char)(uid[i] >= 'a' && uid[i] <= 'z' ? uid[i] - 'a' + 'A' : uid[i]);
    if (strcmp(cn, uid) == 0 || strcmp(cn, sn) == 0)
        return CF_OK;
    return cf_error_set(err, CF_ERR_POLICY, "%s[0] subject CN \"%s\" does not name the unique id",
                        what, uid_ok(cn) ? cn : "(unprintable)");
}

/* SHA-256 of key's SubjectPublicKeyInfo. */
static cf_err spki_sha256(EVP_PKEY *key, unsigned char out[32], cf_error *err)
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(key, &der);
    unsigned int mdlen = 0;
    if (n <= 0 || EVP_Digest(der, (size_t)n, out, &mdlen, EVP_sha256(), NULL) != 1) {
        OPENSSL_free(der);
        return cf_error_openssl(err, CF_ERR_CRYPTO, "cannot hash public key");
    }
    OPENSSL_free(der);
    return CF_OK;
}

/* Fills the device's certificate fields from cert. */
static cf_err take_cert(X509 *cert, cf_manifest_device *dev, cf_error *err)
{
    unsigned char *der = NULL;
    size_t len = 0;
    cf_err rc = cf_x509_to_der(cert, &der, &len, err);
    if (rc != CF_OK)
        return rc;
    dev->cert_der = malloc(len);
    if (!dev->cert_der) {
        OPENSSL_free(der);
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    }
    memcpy(dev->cert_der, der, len);
    dev->cert_der_len = len;
    OPENSSL_free(der);
    return CF_OK;
}

#define X5C_MAX 8
#define KEYS_MAX 16

/* Decodes x5c[i] (DER of len bytes); intermediates (i > 0) through the trust's cache. */
static cf_err decode_x5c_cert(const cf_manifest_trust *t, size_t i, const unsigned char *der,
                              size_t len, X509 **out, cf_error *err)
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (i == 0 || EVP_Digest(der, len, md, &mdlen, EVP_sha256(), NULL) != 1)
        return der_to_x509(der, len, out, err);
    if ((*out = cache_get(t->cache, md)) != NULL)
        return CF_OK;
    cf_err rc = der_to_x509(der, len, out, err);
    if (rc == CF_OK)
        cache_put(t->cache, md, *out);
    return rc;
}

/* Decodes a JWK's x5c array into certificates (*out: sk_X509_pop_free; empty when the
 * JWK has no x5c). */
static cf_err decode_x5c(const cf_manifest_trust *t, const json_t *x5c, STACK_OF(X509) * *out,
                         cf_error *err)
{
    cf_err rc = CF_OK;
    STACK_OF(X509) *certs = sk_X509_new_null();
    if (!certs)
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    if (x5c && !json_is_array(x5c)) {
        rc = cf_error_set(err, CF_ERR_INVALID, "x5c is not an array");
        goto out;
    }
    if (json_array_size(x5c) > X5C_MAX) {
        rc = cf_error_set(err, CF_ERR_INVALID, "x5c holds more than %d certificates", X5C_MAX);
        goto out;
    }
    for (size_t i = 0; i < json_array_size(x5c); i++) {
        const json_t *c = json_array_get(x5c, i);
        if (!json_is_string(c)) {
            rc = cf_error_set(err, CF_ERR_INVALID, "x5c[%zu] is not a string", i);
            goto out;
        }
        unsigned char *der = NULL;
        size_t len = 0;
        X509 *x = NULL;
        if ((rc = cf_b64_decode(json_string_value(c), json_string_length(c), &der, &len, err)) !=
            CF_OK) {
            cf_error_prefix(err, "x5c[%zu]", i);
            goto out;
        }
        rc = decode_x5c_cert(t, i, der, len, &x, err);
        free(der);
        if (rc != CF_OK) {
            cf_error_prefix(err, "x5c[%zu]", i);
            goto out;
        }
        if (!sk_X509_push(certs, x)) {
            X509_free(x);
            rc = cf_error_set(err, CF_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
out:
    if (rc != CF_OK) {
        sk_X509_pop_free(certs, X509_free);
        return rc;
    }
    *out = certs;
    return CF_OK;
}

/* Verifies publicKeySet.keys[i] and, the first time, records its key (and certificate). */
static cf_err check_key(const cf_manifest_trust *t, const json_t *jwk, size_t i,
                        cf_manifest_device *dev, cf_error *err)
{
    EVP_PKEY *key = NULL;
    STACK_OF(X509) *certs = NULL;
    char what[48];
    cf_err rc = cf_jwk_ec_import(jwk, &key, err);
    if (rc != CF_OK)
        goto out;
    if ((rc = decode_x5c(t, json_object_get(jwk, "x5c"), &certs, err)) != CF_OK)
        goto out;
    if (sk_X509_num(certs) > 0) {
        snprintf(what, sizeof what, "x5c");
        X509 *leaf = sk_X509_value(certs, 0);
        if ((rc = verify_chain(t, certs, what, err)) != CF_OK ||
            (rc = check_cn(leaf, dev->uid, what, err)) != CF_OK)
            goto out;
        EVP_PKEY *cert_key = X509_get0_pubkey(leaf);
        if (!cert_key || EVP_PKEY_eq(cert_key, key) != 1) {
            ERR_clear_error();
            rc = cf_error_set(err, CF_ERR_POLICY, "JWK does not match x5c[0]'s public key");
            goto out;
        }
        if (!dev->cert_der) {
            if ((rc = take_cert(leaf, dev, err)) != CF_OK ||
                (rc = spki_sha256(key, dev->spki_sha256, err)) != CF_OK)
                goto out;
            dev->has_key = 1;
        }
    } else if (!dev->has_key) {
        if ((rc = spki_sha256(key, dev->spki_sha256, err)) != CF_OK)
            goto out;
        dev->has_key = 1;
    }
out:
    if (rc != CF_OK) {
        const char *kid = get_str(jwk, "kid", NULL);
        if (kid && uid_ok(kid))
            cf_error_prefix(err, "publicKeySet.keys[%zu] (kid %s)", i, kid);
        else
            cf_error_prefix(err, "publicKeySet.keys[%zu]", i);
    }
    sk_X509_pop_free(certs, X509_free);
    EVP_PKEY_free(key);
    return rc;
}

static cf_err check_keys(const cf_manifest_trust *t, const json_t *payload, cf_manifest_device *dev,
                         cf_error *err)
{
    const json_t *set = json_object_get(payload, "publicKeySet");
    if (!set) {
        if (dev->version >= 2)
            return CF_OK; /* version 2: the JWS alone */
        return cf_error_set(err, CF_ERR_INVALID, "payload version %d has no publicKeySet",
                            dev->version);
    }
    const json_t *keys = json_object_get(set, "keys");
    if (!json_is_object(set) || !json_is_array(keys))
        return cf_error_set(err, CF_ERR_INVALID, "publicKeySet.keys is not an array");
    if (json_array_size(keys) > KEYS_MAX)
        return cf_error_set(err, CF_ERR_INVALID, "publicKeySet holds more than %d keys", KEYS_MAX);
    for (size_t i = 0; i < json_array_size(keys); i++) {
        cf_err rc = check_key(t, json_array_get(keys, i), i, dev, err);
        if (rc != CF_OK)
            return rc;
    }
    return CF_OK;
}

static cf_err check_payload(const cf_manifest_trust *t, const json_t *payload,
                            const char *header_uid, const trusted_signer *signer,
                            cf_manifest_device *dev, cf_error *err)
{
    cf_err rc;
    const json_t *ver = json_object_get(payload, "version");
    if (!json_is_integer(ver))
        return cf_error_set(err, CF_ERR_INVALID, "payload has no integer \"version\"");
    if (json_integer_value(ver) != 1 && json_integer_value(ver) != 2)
        return cf_error_set(err, CF_ERR_INVALID, "payload version %lld is not supported (1, 2)",
                            (long long)json_integer_value(ver));
    dev->version = (int)json_integer_value(ver);
    const char *uid = get_str(payload, "uniqueId", NULL);
    if (!uid || !uid_ok(uid))
        return cf_error_set(err, CF_ERR_INVALID, "payload \"uniqueId\" is missing or malformed");
    if (strcmp(uid, header_uid) != 0)
        return cf_error_set(err, CF_ERR_POLICY,
                            "header uniqueId differs from the payload's uniqueId %s", uid);
    snprintf(dev->uid, sizeof dev->uid, "%s", uid);
    const char *ts = get_str(payload, "provisioningTimestamp", NULL);
    if (!ts)
        return cf_error_set(err, CF_ERR_INVALID, "payload has no \"provisioningTimestamp\"");
    if (parse_rfc3339(ts, &dev->provisioned_at) != 0)
        return cf_error_set(err, CF_ERR_INVALID,
                            "payload \"provisioningTimestamp\" is not an RFC 3339 date-time");
    if ((rc = signer_valid_for(signer, dev->provisioned_at, trust_time(t), err)) != CF_OK ||
        (rc = copy_field(payload, "model", dev->model, err)) != CF_OK ||
        (rc = copy_field(payload, "partNumber", dev->part_number, err)) != CF_OK ||
        (rc = copy_field(payload, "groupId", dev->group_id, err)) != CF_OK)
        return rc;
    return check_keys(t, payload, dev, err);
}

static cf_err verify_entry(const cf_manifest_trust *t, const json_t *entry, const char *uid,
                           cf_manifest_device *dev, cf_error *err)
{
    cf_err rc;
    json_t *hdr = NULL, *payload = NULL;
    unsigned char *sig = NULL;
    size_t prot_len = 0, pay_len = 0, sig_b64_len = 0, sig_len = 0;

    if (!json_is_object(entry))
        return cf_error_set(err, CF_ERR_INVALID, "not a JSON object");
    const char *prot = get_str(entry, "protected", &prot_len);
    const char *pay = get_str(entry, "payload", &pay_len);
    const char *sig_b64 = get_str(entry, "signature", &sig_b64_len);
    if (!prot || !pay || !sig_b64)
        return cf_error_set(err, CF_ERR_INVALID,
                            "\"protected\", \"payload\" or \"signature\" is missing or not a"
                            " string");
    if (!uid)
        return cf_error_set(err, CF_ERR_INVALID, "header.uniqueId is missing or malformed");

    const trusted_signer *signer = NULL;
    if ((rc = decode_b64url_json(prot, prot_len, "protected header", &hdr, err)) != CF_OK ||
        (rc = check_protected(t, hdr, &signer, err)) != CF_OK)
        goto out;
    if ((rc = cf_b64url_decode(sig_b64, sig_b64_len, &sig, &sig_len, err)) != CF_OK) {
        cf_error_prefix(err, "signature");
        goto out;
    }
    if ((rc = cf_jws_verify_es256(X509_get0_pubkey(signer->cert), prot, prot_len, pay, pay_len, sig,
                                  sig_len, err)) != CF_OK)
        goto out;
    snprintf(dev->signer_x5t, sizeof dev->signer_x5t, "%s", signer->x5t);
    if ((rc = decode_b64url_json(pay, pay_len, "payload", &payload, err)) != CF_OK)
        goto out;
    rc = check_payload(t, payload, uid, signer, dev, err);
out:
    free(sig);
    json_decref(hdr);
    json_decref(payload);
    return rc;
}

void cf_manifest_device_clear(cf_manifest_device *dev)
{
    if (!dev)
        return;
    free(dev->cert_der);
    memset(dev, 0, sizeof *dev);
}

cf_err cf_manifest_verify_entry(const cf_manifest_trust *t, const json_t *entry, size_t index,
                                cf_manifest_device *dev, cf_error *err)
{
    memset(dev, 0, sizeof *dev);
    const char *uid = get_str(json_object_get(entry, "header"), "uniqueId", NULL);
    if (uid && !uid_ok(uid))
        uid = NULL;
    cf_err rc = verify_entry(t, entry, uid, dev, err);
    if (rc != CF_OK) {
        cf_manifest_device_clear(dev);
        cf_error_prefix(err, "manifest entry %zu (uid %s)", index, uid ? uid : "?");
    }
    return rc;
}

/* ==== Detached-signature PEM bundles ===================================================== */

struct cf_manifest_bundle {
    const cf_manifest_trust *t;
    FILE *fp;
    BIO *bio;
    X509 *pending; /* the next device certificate, read ahead */
    size_t index;
    int started, done, failed;
    cf_error fatal;
    char signer_x5t[CF_JOSE_X5T_MAX];
};

void cf_manifest_bundle_free(cf_manifest_bundle *b)
{
    if (!b)
        return;
    X509_free(b->pending);
    BIO_free(b->bio);
    if (b->fp)
        fclose(b->fp);
    free(b);
}

int cf_manifest_bundle_failed(const cf_manifest_bundle *b)
{
    return b->failed;
}

/* 1 if sig verifies over the SHA-256 digest md with key. */
static int digest_verifies(EVP_PKEY *key, const unsigned char *md, const unsigned char *sig,
                           size_t sig_len)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(key, NULL);
    int ok = ctx && EVP_PKEY_verify_init(ctx) == 1 &&
             EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) == 1 &&
             EVP_PKEY_verify(ctx, sig, sig_len, md, 32) == 1;
    EVP_PKEY_CTX_free(ctx);
    ERR_clear_error();
    return ok;
}

/* Strips whitespace from a base64 signature file and decodes it; NULL when it is not
 * base64. */
static unsigned char *sig_from_base64(const unsigned char *sig, size_t len, size_t *outlen)
{
    char *clean = malloc(len + 1);
    size_t n = 0;
    unsigned char *raw = NULL;
    if (!clean)
        return NULL;
    for (size_t i = 0; i < len; i++)
        if (!is_ws(sig[i]))
            clean[n++] = (char)sig[i];
    if (cf_b64_decode(clean, n, &raw, outlen, NULL) != CF_OK)
        raw = NULL;
    free(clean);
    return raw;
}

/* Finds the registered signer, valid at the trust's time, whose signature over the digest
 * md is sig. */
static cf_err bundle_find_signer(cf_manifest_bundle *b, const unsigned char *md,
                                 const unsigned char *sig, size_t sig_len, cf_error *err)
{
    const cf_manifest_trust *t = b->t;
    size_t b64len = 0;
    unsigned char *b64 = sig_from_base64(sig, sig_len, &b64len);
    int64_t now = trust_time(t);
    cf_err rc = cf_error_set(err, CF_ERR_TAMPERED,
                             "bundle: the detached signature does not verify with any registered"
                             " signer");
    for (size_t i = 0; i < t->nsigners; i++) {
        const trusted_signer *s = &t->signers[i];
        EVP_PKEY *key = X509_get0_pubkey(s->cert);
        if (!key || !(digest_verifies(key, md, sig, sig_len) ||
                      (b64 && digest_verifies(key, md, b64, b64len))))
            continue;
        if ((rc = signer_valid_now(s, now, err)) != CF_OK) {
            cf_error_prefix(err, "bundle");
            continue;
        }
        snprintf(b->signer_x5t, sizeof b->signer_x5t, "%s", s->x5t);
        rc = CF_OK;
        break;
    }
    free(b64);
    return rc;
}

static cf_err bundle_start(cf_manifest_bundle *b, const unsigned char *md, const unsigned char *sig,
                           size_t sig_len, cf_manifest_bundle **out, cf_error *err)
{
    cf_err rc = bundle_find_signer(b, md, sig, sig_len, err);
    if (rc != CF_OK) {
        cf_manifest_bundle_free(b);
        return rc;
    }
    *out = b;
    return CF_OK;
}

cf_err cf_manifest_bundle_open_mem(const cf_manifest_trust *t, const void *pem, size_t pem_len,
                                   const unsigned char *sig, size_t sig_len,
                                   cf_manifest_bundle **out, cf_error *err)
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (pem_len > INT32_MAX)
        return cf_error_set(err, CF_ERR_INVALID, "bundle is too large for memory");
    cf_manifest_bundle *b = calloc(1, sizeof *b);
    if (!b)
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    b->t = t;
    if (!(b->bio = BIO_new_mem_buf(pem, (int)pem_len))) {
        cf_manifest_bundle_free(b);
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    }
    if (EVP_Digest(pem, pem_len, md, &mdlen, EVP_sha256(), NULL) != 1) {
        cf_manifest_bundle_free(b);
        return cf_error_openssl(err, CF_ERR_CRYPTO, "bundle: cannot hash");
    }
    return bundle_start(b, md, sig, sig_len, out, err);
}

cf_err cf_manifest_bundle_open(const cf_manifest_trust *t, const char *pem_path,
                               const unsigned char *sig, size_t sig_len, cf_manifest_bundle **out,
                               cf_error *err)
{
    cf_err rc;
    unsigned char md[32], *buf = NULL;
    unsigned int mdlen = 0;
    EVP_MD_CTX *sha = NULL;
    cf_manifest_bundle *b = calloc(1, sizeof *b);
    if (!b || !(buf = malloc(READ_CHUNK)) || !(sha = EVP_MD_CTX_new())) {
        rc = cf_error_set(err, CF_ERR_NOMEM, "out of memory");
        goto fail;
    }
    b->t = t;
    if (!(b->fp = fopen(pem_path, "rb"))) {
        rc = cf_error_set(err, CF_ERR_IO, "bundle %s: %s", pem_path, strerror(errno));
        goto fail;
    }
    /* First pass: the digest the signature covers, streamed. */
    if (EVP_DigestInit_ex(sha, EVP_sha256(), NULL) != 1) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "bundle: cannot hash");
        goto fail;
    }
    size_t n;
    while ((n = fread(buf, 1, READ_CHUNK, b->fp)) > 0)
        if (EVP_DigestUpdate(sha, buf, n) != 1) {
            rc = cf_error_openssl(err, CF_ERR_CRYPTO, "bundle: cannot hash");
            goto fail;
        }
    if (ferror(b->fp)) {
        rc = cf_error_set(err, CF_ERR_IO, "bundle %s: read error", pem_path);
        goto fail;
    }
    if (EVP_DigestFinal_ex(sha, md, &mdlen) != 1) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "bundle: cannot hash");
        goto fail;
    }
    rewind(b->fp);
    if (!(b->bio = BIO_new_fp(b->fp, BIO_NOCLOSE))) {
        rc = cf_error_set(err, CF_ERR_NOMEM, "out of memory");
        goto fail;
    }
    EVP_MD_CTX_free(sha);
    free(buf);
    return bundle_start(b, md, sig, sig_len, out, err);
fail:
    EVP_MD_CTX_free(sha);
    free(buf);
    cf_manifest_bundle_free(b);
    return rc;
}

/* Reads the next certificate of the PEM: CF_OK with *x NULL at the end. */
static cf_err bundle_read(cf_manifest_bundle *b, X509 **x, cf_error *err)
{
    *x = PEM_read_bio_X509(b->bio, NULL, NULL, NULL);
    if (*x)
        return CF_OK;
    unsigned long e = ERR_peek_last_error();
    if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
        ERR_clear_error();
        return CF_OK;
    }
    b->failed = 1;
    cf_error_openssl(&b->fatal, CF_ERR_INVALID, "bundle device %zu: not a valid PEM certificate",
                     b->index);
    if (err)
        *err = b->fatal;
    return b->fatal.code;
}

cf_err cf_manifest_bundle_next(cf_manifest_bundle *b, cf_manifest_device *dev, size_t *index,
                               cf_error *err)
{
    cf_err rc;
    STACK_OF(X509) *chain = NULL;
    X509 *x = NULL;
    char cn[256];
    memset(dev, 0, sizeof *dev);
    *index = b->index;
    if (b->failed) {
        if (err)
            *err = b->fatal;
        return b->fatal.code;
    }
    if (!b->started) {
        b->started = 1;
        if ((rc = bundle_read(b, &b->pending, err)) != CF_OK)
            return rc;
    }
    if (!b->pending)
        return CF_OK; /* the end */
    if (!(chain = sk_X509_new_null()) || !sk_X509_push(chain, b->pending)) {
        sk_X509_free(chain);
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    }
    b->pending = NULL;
    /* The CA certificates that follow belong to this device's chain. */
    for (;;) {
        if ((rc = bundle_read(b, &x, err)) != CF_OK)
            goto out;
        if (!x)
            break;
        if (X509_check_ca(x) == 0) {
            b->pending = x;
            break;
        }
        if (!sk_X509_push(chain, x)) {
            X509_free(x);
            rc = cf_error_set(err, CF_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    size_t idx = b->index++;
    X509 *leaf = sk_X509_value(chain, 0);
    if (subject_cn(leaf, cn, sizeof cn) != 0 || !uid_ok(cn)) {
        rc = cf_error_set(err, CF_ERR_INVALID,
                          "bundle device %zu (uid ?): subject CN is missing or not a valid"
                          " unique id",
                          idx);
        goto out;
    }
    memcpy(dev->uid, cn, strlen(cn) + 1); /* uid_ok bounds its length */
    snprintf(dev->signer_x5t, sizeof dev->signer_x5t, "%s", b->signer_x5t);
    EVP_PKEY *key = X509_get0_pubkey(leaf);
    if ((rc = verify_chain(b->t, chain, "chain", err)) != CF_OK ||
        (rc = key ? CF_OK : cf_error_set(err, CF_ERR_INVALID, "no public key")) != CF_OK ||
        (rc = cf_jose_ec_crv(key)
                  ? CF_OK
                  : cf_error_set(err, CF_ERR_POLICY, "key type not allowed (EC P-256 or P-384)")) !=
            CF_OK ||
        (rc = take_cert(leaf, dev, err)) != CF_OK ||
        (rc = spki_sha256(key, dev->spki_sha256, err)) != CF_OK) {
        cf_error_prefix(err, "bundle device %zu (uid %s)", idx, cn);
        goto out;
    }
    dev->has_key = 1;
    rc = CF_OK;
out:
    sk_X509_pop_free(chain, X509_free);
    if (rc != CF_OK)
        cf_manifest_device_clear(dev);
    return rc;
}
