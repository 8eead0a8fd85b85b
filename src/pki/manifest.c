#include "pki/manifest.h"

#include <errno.h>
#include <openssl/asn1t.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/util.h"
#include "pki/ecfixed.h"
#include "pki/manifest_json.h"
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
    const char *why = NULL;
    size_t at = 0, idx = r->index++;
    r->state = RS_AFTER;
    *index = idx;
    json_t *j = cf_manifest_json_parse(r->elem, r->elem_len, &why, &at);
    r->elem_len = 0;
    if (!j)
        return cf_error_set(err, CF_ERR_INVALID, "entry %zu: not valid JSON: %s (at byte %zu)", idx,
                            why, at);
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

/* A key that verifies many signatures (a signer's, a batch CA's) gets a table for
 * cf_ec_fixed once it has verified FIXED_AFTER of them: the table costs about as much as
 * 400 verifications, so a key seen a few times never pays for one. */
#define FIXED_AFTER 512

typedef struct {
    EVP_PKEY *key; /* borrowed from the certificate that holds it */
    _Atomic uint64_t uses;
    _Atomic(cf_ec_fixed *) table; /* NULL until made (and for keys it cannot serve) */
} fixed_key;

static fixed_key *fixed_key_new(EVP_PKEY *key)
{
    fixed_key *f = calloc(1, sizeof *f);
    if (f)
        f->key = key;
    return f;
}

static void fixed_key_free(fixed_key *f)
{
    if (f)
        cf_ec_fixed_free(atomic_load(&f->table));
    free(f);
}

/* The table for f's key, or NULL (none yet, or none possible). The thread whose use is the
 * FIXED_AFTER-th makes it; the others go on without it meanwhile. */
static const cf_ec_fixed *fixed_key_table(fixed_key *f)
{
    if (!f)
        return NULL;
    cf_ec_fixed *k = atomic_load(&f->table);
    if (!k && atomic_fetch_add(&f->uses, 1) + 1 == FIXED_AFTER) {
        k = cf_ec_fixed_new(f->key);
        atomic_store(&f->table, k);
    }
    return k;
}

typedef struct {
    X509 *cert;
    char x5t[CF_JOSE_X5T_MAX];
    int64_t not_before, not_after;
    X509 *issuer_root; /* borrowed from roots; NULL when registered on its own */
    int root_sig_ok;   /* issuer_root's signature on cert verifies (checked once: both are
                          fixed once registered) */
    fixed_key *fixed;  /* cert's key, for its JWS signatures */
} trusted_signer;

/* Decoded x5c intermediates by the SHA-256 of their DER. A reel's entries all carry the same
 * batch CA, and decoding a certificate costs OpenSSL 3 more than verifying a signature, so
 * each distinct intermediate is decoded once. Shared by the threads that verify with one
 * trust; a decoded X509 is only read after that. This serves the full verification (entries
 * whose chain has no record yet, or does not qualify for one): what comes out of this cache
 * is still verified by X509_verify_cert with that entry. */
#define X5C_CACHE_SLOTS 64

typedef struct {
    pthread_mutex_t lock;
    unsigned char md[X5C_CACHE_SLOTS][32];
    X509 *cert[X5C_CACHE_SLOTS];
    size_t next; /* slot replaced next once all are taken */
} x5c_cache;

typedef struct chain_rec chain_rec;

/* Issuer chains verified once (see "Verified issuer chains" below). */
#define CHAIN_SLOTS 16

typedef struct {
    pthread_mutex_t lock;
    chain_rec *rec[CHAIN_SLOTS];
    size_t next;            /* slot replaced next once all are taken */
    _Atomic uint64_t fast;  /* entries whose chain was checked through a record */
    _Atomic uint64_t built; /* records made */
} chain_cache;

struct cf_manifest_trust {
    X509_STORE *store;
    STACK_OF(X509) * roots;
    trusted_signer *signers;
    size_t nsigners;
    int64_t when;
    x5c_cache *cache;
    chain_cache *chains;
    EC_GROUP *p256, *p384; /* for checking that a JWK's point lies on its curve */
};

cf_err cf_manifest_trust_new(cf_manifest_trust **out, cf_error *err)
{
    cf_manifest_trust *t = calloc(1, sizeof *t);
    if (!t || !(t->store = X509_STORE_new()) || !(t->roots = sk_X509_new_null()) ||
        !(t->p256 = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1)) ||
        !(t->p384 = EC_GROUP_new_by_curve_name(NID_secp384r1))) {
        cf_manifest_trust_free(t);
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    }
    if (!(t->cache = calloc(1, sizeof *t->cache)) ||
        pthread_mutex_init(&t->cache->lock, NULL) != 0) {
        free(t->cache);
        t->cache = NULL;
        cf_manifest_trust_free(t);
        return cf_error_set(err, CF_ERR_INTERNAL, "cannot create a mutex");
    }
    if (!(t->chains = calloc(1, sizeof *t->chains)) ||
        pthread_mutex_init(&t->chains->lock, NULL) != 0) {
        free(t->chains);
        t->chains = NULL;
        cf_manifest_trust_free(t);
        return cf_error_set(err, CF_ERR_INTERNAL, "cannot create a mutex");
    }
    *out = t;
    return CF_OK;
}

static void chain_rec_release(chain_cache *c, chain_rec *r);

void cf_manifest_trust_free(cf_manifest_trust *t)
{
    if (!t)
        return;
    X509_STORE_free(t->store);
    sk_X509_pop_free(t->roots, X509_free);
    for (size_t i = 0; i < t->nsigners; i++) {
        X509_free(t->signers[i].cert);
        fixed_key_free(t->signers[i].fixed);
    }
    free(t->signers);
    if (t->cache) {
        for (size_t i = 0; i < X5C_CACHE_SLOTS; i++)
            X509_free(t->cache->cert[i]);
        pthread_mutex_destroy(&t->cache->lock);
        free(t->cache);
    }
    if (t->chains) {
        for (size_t i = 0; i < CHAIN_SLOTS; i++)
            if (t->chains->rec[i])
                chain_rec_release(t->chains, t->chains->rec[i]);
        pthread_mutex_destroy(&t->chains->lock);
        free(t->chains);
    }
    EC_GROUP_free(t->p256);
    EC_GROUP_free(t->p384);
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

/* The CN of name into out ("" when it has none). Returns 0, or -1 when the CN is not valid
 * UTF-8 or does not fit. */
static int name_cn(const X509_NAME *name, char *out, size_t outlen)
{
    out[0] = '\0';
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

/* The same for the subject of cert. */
static int subject_cn(X509 *cert, char *out, size_t outlen)
{
    return name_cn(X509_get_subject_name(cert), out, outlen);
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
    if (s.issuer_root) {
        EVP_PKEY *rk = X509_get0_pubkey(s.issuer_root);
        s.root_sig_ok = rk && X509_verify(signer, rk) == 1;
        ERR_clear_error();
    }
    trusted_signer *grown = realloc(t->signers, (t->nsigners + 1) * sizeof *grown);
    if (!grown)
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    t->signers = grown;
    if (!(s.fixed = fixed_key_new(X509_get0_pubkey(signer))))
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    if (!X509_up_ref(signer)) {
        fixed_key_free(s.fixed);
        return cf_error_set(err, CF_ERR_CRYPTO, "cannot reference signer");
    }
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

void cf_manifest_trust_chain_stats(const cf_manifest_trust *t, uint64_t *fast, uint64_t *chains)
{
    if (fast)
        *fast = atomic_load(&t->chains->fast);
    if (chains)
        *chains = atomic_load(&t->chains->built);
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
    if (prov <= now + FUTURE_SLACK_SECONDS && prov <= s->not_after && s->not_before <= now &&
        (!s->issuer_root || s->root_sig_ok))
        return CF_OK; /* the common case, without formatting a message */
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
    if (s->issuer_root && !s->root_sig_ok)
        return cf_error_set(err, CF_ERR_POLICY,
                            "signer \"%s\" does not verify with its issuing root", cn);
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
    size_t rawlen = 0, at = 0;
    const char *why = NULL;
    if (cf_b64url_decode(b64, len, &raw, &rawlen, err) != CF_OK)
        return cf_error_prefix(err, "%s", name);
    json_t *j = cf_manifest_json_parse(raw, rawlen, &why, &at);
    free(raw);
    if (!j && why == cf_manifest_json_not_object)
        return cf_error_set(err, CF_ERR_INVALID, "%s is not a JSON object", name);
    if (!j)
        return cf_error_set(err, CF_ERR_INVALID, "%s is not valid JSON: %s (at byte %zu)", name,
                            why, at);
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
 * trust's time. built (may be NULL): on success, the chain as OpenSSL built it, device first
 * and root last (sk_X509_pop_free). */
static cf_err verify_chain(const cf_manifest_trust *t, STACK_OF(X509) * certs, const char *what,
                           STACK_OF(X509) * *built, cf_error *err)
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
    if (built && !(*built = X509_STORE_CTX_get1_chain(ctx))) {
        rc = cf_error_set(err, CF_ERR_NOMEM, "out of memory");
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
static cf_err check_cn(const X509_NAME *subject, const char *uid, const char *what, cf_error *err)
{
    char cn[256], sn[CF_MANIFEST_UID_MAX + 2];
    if (name_cn(subject, cn, sizeof cn) != 0)
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

/* ==== Verified issuer chains =============================================================
 *
 * A reel's birth certificates all hang under the same batch CA: x5c is [device, batch CA]
 * in every entry, and the batch CA's link to the root (its signature, its extensions, the
 * path) is the same for all of them. So the chain above the device certificate is verified
 * once, by X509_verify_cert with the first device that uses it, and remembered in a record
 * keyed by the SHA-256 of the exact DER bytes of x5c[1..] (and kept with the root it
 * verified to). Every later entry with the same bytes gets the device certificate itself
 * verified against that record: its signature by x5c[1]'s key and every check that
 * X509_verify_cert makes of a device certificate whose issuer is already verified (names,
 * key identifiers, validity, extensions, explicit curves), plus the chain's validity at the
 * trust's time. This check is narrower than OpenSSL's: it accepts only a plain profile (DER,
 * v3, ECDSA, a known set of extensions) and anything else, or anything that fails, goes the
 * full X509_verify_cert way, which also gives the error message. So a record can make an
 * entry cheaper, never let one through that the full verification would refuse.
 *
 * The device certificate is decoded with templates of its own (below) rather than d2i_X509:
 * OpenSSL 3.0 builds a provider key decoder for every certificate's public key, which costs
 * more than the signature check. The device's key is compared as bytes with the JWK's point
 * instead of being decoded. */

/* clang-format off */
typedef struct {
    X509_ALGOR *algor;
    ASN1_BIT_STRING *public_key;
} cf_mfst_spki;

ASN1_SEQUENCE(cf_mfst_spki) = {
    ASN1_SIMPLE(cf_mfst_spki, algor, X509_ALGOR),
    ASN1_SIMPLE(cf_mfst_spki, public_key, ASN1_BIT_STRING),
} ASN1_SEQUENCE_END(cf_mfst_spki)

/* RFC 5280 TBSCertificate; enc keeps the bytes the signature covers, issuer stays as its
 * encoding (compared as bytes with the issuer's subject). */
typedef struct {
    ASN1_ENCODING enc;
    ASN1_INTEGER *version;
    ASN1_INTEGER *serial;
    X509_ALGOR *sig_alg;
    ASN1_TYPE *issuer;
    X509_VAL *validity;
    X509_NAME *subject;
    cf_mfst_spki *spki;
    ASN1_BIT_STRING *issuer_uid;
    ASN1_BIT_STRING *subject_uid;
    STACK_OF(X509_EXTENSION) *extensions;
} cf_mfst_tbs;

ASN1_SEQUENCE_enc(cf_mfst_tbs, enc, 0) = {
    ASN1_EXP_OPT(cf_mfst_tbs, version, ASN1_INTEGER, 0),
    ASN1_SIMPLE(cf_mfst_tbs, serial, ASN1_INTEGER),
    ASN1_SIMPLE(cf_mfst_tbs, sig_alg, X509_ALGOR),
    ASN1_SIMPLE(cf_mfst_tbs, issuer, ASN1_ANY),
    ASN1_SIMPLE(cf_mfst_tbs, validity, X509_VAL),
    ASN1_SIMPLE(cf_mfst_tbs, subject, X509_NAME),
    ASN1_SIMPLE(cf_mfst_tbs, spki, cf_mfst_spki),
    ASN1_IMP_OPT(cf_mfst_tbs, issuer_uid, ASN1_BIT_STRING, 1),
    ASN1_IMP_OPT(cf_mfst_tbs, subject_uid, ASN1_BIT_STRING, 2),
    ASN1_EXP_SEQUENCE_OF_OPT(cf_mfst_tbs, extensions, X509_EXTENSION, 3),
} ASN1_SEQUENCE_END_enc(cf_mfst_tbs, cf_mfst_tbs)

typedef struct {
    cf_mfst_tbs *tbs;
    X509_ALGOR *sig_alg;
    ASN1_BIT_STRING *signature;
} cf_mfst_cert;

ASN1_SEQUENCE(cf_mfst_cert) = {
    ASN1_SIMPLE(cf_mfst_cert, tbs, cf_mfst_tbs),
    ASN1_SIMPLE(cf_mfst_cert, sig_alg, X509_ALGOR),
    ASN1_SIMPLE(cf_mfst_cert, signature, ASN1_BIT_STRING),
} ASN1_SEQUENCE_END(cf_mfst_cert)
    /* clang-format on */

    struct chain_rec {
    unsigned char key[32];
    int fast;                /* 0: this chain always takes the full way (see chain_add) */
    STACK_OF(X509) * above;  /* x5c[1..] then the root, as X509_verify_cert built them */
    unsigned char *iss_name; /* DER of x5c[1]'s subject (OPENSSL_free) */
    int iss_name_len;
    fixed_key *fixed; /* x5c[1]'s key, for the device certificates' signatures */
    int refs;         /* under chain_cache.lock: the cache's own and each user's */
};

static void chain_rec_free(chain_rec *r)
{
    sk_X509_pop_free(r->above, X509_free);
    OPENSSL_free(r->iss_name);
    fixed_key_free(r->fixed);
    free(r);
}

unsigned cf_manifest_trust_key_tables(const cf_manifest_trust *t)
{
    unsigned n = 0;
    for (size_t i = 0; i < t->nsigners; i++)
        n += atomic_load(&t->signers[i].fixed->table) != NULL;
    pthread_mutex_lock(&t->chains->lock);
    for (size_t i = 0; i < CHAIN_SLOTS && t->chains->rec[i]; i++)
        n += t->chains->rec[i]->fixed && atomic_load(&t->chains->rec[i]->fixed->table) != NULL;
    pthread_mutex_unlock(&t->chains->lock);
    return n;
}

static void chain_rec_release(chain_cache *c, chain_rec *r)
{
    pthread_mutex_lock(&c->lock);
    int last = --r->refs == 0;
    pthread_mutex_unlock(&c->lock);
    if (last)
        chain_rec_free(r);
}

/* The record for key, with a reference for the caller (chain_rec_release), or NULL. */
static chain_rec *chain_get(chain_cache *c, const unsigned char key[32])
{
    chain_rec *r = NULL;
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < CHAIN_SLOTS && c->rec[i]; i++)
        if (memcmp(c->rec[i]->key, key, 32) == 0) {
            r = c->rec[i];
            r->refs++;
            break;
        }
    pthread_mutex_unlock(&c->lock);
    return r;
}

/* SHA-256 over the count and the length-prefixed DER of x5c[1..] (decoded from base64):
 * different lists never give the same input. */
static int x5c_chain_key(const json_t *x5c, unsigned char key[32])
{
    int ok = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    uint64_t n = json_array_size(x5c);
    if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(md, &n, sizeof n) != 1)
        goto out;
    for (size_t i = 1; i < json_array_size(x5c); i++) {
        const json_t *c = json_array_get(x5c, i);
        unsigned char *der = NULL;
        size_t len = 0;
        if (!json_is_string(c) ||
            cf_b64_decode(json_string_value(c), json_string_length(c), &der, &len, NULL) != CF_OK)
            goto out;
        uint64_t l = len;
        int up = EVP_DigestUpdate(md, &l, sizeof l) == 1 && EVP_DigestUpdate(md, der, len) == 1;
        free(der);
        if (!up)
            goto out;
    }
    ok = EVP_DigestFinal_ex(md, key, NULL) == 1;
out:
    EVP_MD_CTX_free(md);
    return ok;
}

/* 1 when cert carries an extension that constrains the certificates below it beyond what
 * chain_leaf_ok checks (names, policies): such chains always take the full way. */
static int constrains_below(X509 *cert)
{
    static const int nids[] = {NID_name_constraints, NID_policy_constraints, NID_policy_mappings,
                               NID_inhibit_any_policy};
    for (size_t i = 0; i < sizeof nids / sizeof nids[0]; i++)
        if (X509_get_ext_by_NID(cert, nids[i], -1) >= 0)
            return 1;
    return 0;
}

/* Whether the chain X509_verify_cert built for certs ([device, x5c[1..]]) can serve later
 * devices: it must be exactly x5c[1..] followed by a registered root (so that a device under
 * x5c[1] gets the same path), x5c[1] must have an EC key, no certificate above the device
 * may constrain names or policies, and no root may share x5c[1]'s subject (OpenSSL looks for
 * issuers among the roots first). */
static int chain_fast_ok(const cf_manifest_trust *t, STACK_OF(X509) * certs, STACK_OF(X509) * built)
{
    int n = sk_X509_num(certs);
    if (n < 2 || sk_X509_num(built) != n + 1)
        return 0;
    for (int i = 1; i < n; i++)
        if (X509_cmp(sk_X509_value(certs, i), sk_X509_value(built, i)) != 0)
            return 0;
    X509 *top = sk_X509_value(built, n), *issuer = sk_X509_value(built, 1);
    int is_root = 0;
    for (int i = 0; i < sk_X509_num(t->roots); i++) {
        X509 *r = sk_X509_value(t->roots, i);
        if (X509_cmp(r, top) == 0)
            is_root = 1;
        if (X509_NAME_cmp(X509_get_subject_name(r), X509_get_subject_name(issuer)) == 0)
            return 0;
    }
    EVP_PKEY *ik = X509_get0_pubkey(issuer);
    if (!is_root || !ik || EVP_PKEY_get_base_id(ik) != EVP_PKEY_EC)
        return 0;
    for (int i = 1; i <= n; i++)
        if (constrains_below(sk_X509_value(built, i)))
            return 0;
    return 1;
}

/* Records the chain above certs[0], just verified by X509_verify_cert as built. Failure to
 * record costs only speed. */
static void chain_add(const cf_manifest_trust *t, const json_t *x5c, STACK_OF(X509) * certs,
                      STACK_OF(X509) * built)
{
    chain_cache *c = t->chains;
    unsigned char key[32];
    if (sk_X509_num(certs) < 2 || !x5c_chain_key(x5c, key))
        return;
    chain_rec *r = calloc(1, sizeof *r);
    if (!r || !(r->above = sk_X509_new_null()))
        goto fail;
    memcpy(r->key, key, 32);
    r->fast = chain_fast_ok(t, certs, built);
    for (int i = 1; r->fast && i < sk_X509_num(built); i++) {
        X509 *x = sk_X509_value(built, i);
        /* X509_check_akid reads the key identifier OpenSSL caches with the extensions:
         * X509_verify_cert has cached them; make sure before the record is shared. */
        X509_get_extension_flags(x);
        if (!X509_up_ref(x))
            goto fail;
        if (!sk_X509_push(r->above, x)) {
            X509_free(x);
            goto fail;
        }
    }
    if (r->fast) {
        r->iss_name_len =
            i2d_X509_NAME(X509_get_subject_name(sk_X509_value(r->above, 0)), &r->iss_name);
        if (r->iss_name_len <= 0 ||
            !(r->fixed = fixed_key_new(X509_get0_pubkey(sk_X509_value(r->above, 0)))))
            goto fail;
    }
    r->refs = 1; /* the cache's */
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < CHAIN_SLOTS && c->rec[i]; i++)
        if (memcmp(c->rec[i]->key, key, 32) == 0) { /* another thread was first */
            pthread_mutex_unlock(&c->lock);
            chain_rec_free(r);
            return;
        }
    chain_rec *old = c->rec[c->next];
    c->rec[c->next] = r;
    c->next = (c->next + 1) % CHAIN_SLOTS;
    int free_old = old && --old->refs == 0;
    pthread_mutex_unlock(&c->lock);
    atomic_fetch_add(&c->built, 1);
    if (free_old)
        chain_rec_free(old);
    return;
fail:
    ERR_clear_error();
    if (r)
        chain_rec_free(r);
}

/* 1 when extension list exts of a device certificate is one chain_leaf_ok can vouch for:
 * only basicConstraints (cA false, no pathLen), keyUsage without keyCertSign, extKeyUsage,
 * subject and authority key identifiers (the latter by key id alone, matching issuer's) and
 * subjectAltName; each at most once and decodable; critical only where OpenSSL supports it.
 * X509_verify_cert accepts such a certificate as a device's: X509_check_ca says 0, nothing
 * is invalid or unhandled. */
static int leaf_extensions_ok(const STACK_OF(X509_EXTENSION) * exts, X509 *issuer)
{
    static const int allowed[] = {NID_basic_constraints,
                                  NID_key_usage,
                                  NID_ext_key_usage,
                                  NID_subject_key_identifier,
                                  NID_authority_key_identifier,
                                  NID_subject_alt_name};
    const size_t nallowed = sizeof allowed / sizeof allowed[0];
    void *d[sizeof allowed / sizeof allowed[0]] = {0};
    int ok = 0;
    for (int i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
        X509_EXTENSION *ex = sk_X509_EXTENSION_value(exts, i);
        int nid = OBJ_obj2nid(X509_EXTENSION_get_object(ex)), known = 0;
        for (size_t k = 0; k < nallowed; k++)
            known |= nid == allowed[k];
        if (!known || (X509_EXTENSION_get_critical(ex) && !X509_supported_extension(ex)))
            return 0;
    }
    for (size_t k = 0; k < nallowed; k++) {
        int crit = -1;
        d[k] = X509V3_get_d2i(exts, allowed[k], &crit, NULL);
        if (!d[k] && crit != -1) /* present but not decodable, or present twice */
            goto out;
    }
    const BASIC_CONSTRAINTS *bc = d[0];
    const ASN1_BIT_STRING *ku = d[1];
    const AUTHORITY_KEYID *akid = d[4];
    if ((bc && (bc->ca || bc->pathlen)) ||
        (ku && ASN1_STRING_length(ku) > 0 && (ASN1_STRING_get0_data(ku)[0] & KU_KEY_CERT_SIGN)) ||
        (akid && (akid->issuer || akid->serial || X509_check_akid(issuer, akid) != X509_V_OK)))
        goto out;
    ok = 1;
out:
    BASIC_CONSTRAINTS_free(d[0]);
    ASN1_BIT_STRING_free(d[1]);
    EXTENDED_KEY_USAGE_free(d[2]);
    ASN1_OCTET_STRING_free(d[3]);
    AUTHORITY_KEYID_free(d[4]);
    GENERAL_NAMES_free(d[5]);
    return ok;
}

/* 1 when tm is in RFC 5280's fixed form, YYMMDDHHMMSSZ or YYYYMMDDHHMMSSZ: the only ones
 * X509_cmp_time accepts (ASN1_TIME_cmp_time_t takes more). */
static int time_form_ok(const ASN1_TIME *tm)
{
    int n = ASN1_STRING_length(tm), type = ASN1_STRING_type(tm);
    const unsigned char *d = ASN1_STRING_get0_data(tm);
    if (!((type == V_ASN1_UTCTIME && n == 13) || (type == V_ASN1_GENERALIZEDTIME && n == 15)) ||
        d[n - 1] != 'Z')
        return 0;
    for (int i = 0; i < n - 1; i++)
        if (d[i] < '0' || d[i] > '9')
            return 0;
    return 1;
}

/* 1 when now is within the validity nb..na as X509_verify_cert decides it (notBefore <= now
 * < notAfter, to the second; a malformed time fails), without X509_cmp_time's allocations. */
static int time_ok(const ASN1_TIME *nb, const ASN1_TIME *na, time_t now)
{
    if (!time_form_ok(nb) || !time_form_ok(na))
        return 0;
    int b = ASN1_TIME_cmp_time_t(nb, now), a = ASN1_TIME_cmp_time_t(na, now);
    return (b == -1 || b == 0) && a == 1;
}

/* The digest of an ECDSA certificate signature algorithm without parameters, or NULL. */
static const EVP_MD *ecdsa_digest(const X509_ALGOR *alg)
{
    const ASN1_OBJECT *oid;
    int ptype;
    X509_ALGOR_get0(&oid, &ptype, NULL, alg);
    if (ptype != V_ASN1_UNDEF)
        return NULL;
    switch (OBJ_obj2nid(oid)) {
    case NID_ecdsa_with_SHA256:
        return EVP_sha256();
    case NID_ecdsa_with_SHA384:
        return EVP_sha384();
    case NID_ecdsa_with_SHA512:
        return EVP_sha512();
    default:
        return NULL;
    }
}

/* 1 when bits is a BIT STRING without unused bits. */
static int whole_bytes(const ASN1_BIT_STRING *bits)
{
    return !(bits->flags & ASN1_STRING_FLAG_BITS_LEFT) || (bits->flags & 0x07) == 0;
}

/* 1 when the device certificate der (len bytes) verifies under record r at the trust's time
 * with every check listed above, its key being the JWK's (curve_nid, point) and its subject
 * naming uid. 0 for anything else: the full verification decides. */
static int chain_leaf_ok(const cf_manifest_trust *t, const chain_rec *r, const unsigned char *der,
                         size_t len, int curve_nid, const unsigned char *point, size_t point_len,
                         const char *uid)
{
    int ok = 0;
    unsigned char *re = NULL, md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_PKEY_CTX *pctx = NULL;
    const unsigned char *p = der;
    X509 *issuer = sk_X509_value(r->above, 0);
    time_t now = t->when ? (time_t)t->when : time(NULL);
    cf_mfst_cert *c = len <= INT32_MAX ? (cf_mfst_cert *)ASN1_item_d2i(NULL, &p, (long)len,
                                                                       ASN1_ITEM_rptr(cf_mfst_cert))
                                       : NULL;
    if (!c || p != der + len)
        goto out;
    /* DER only: the bytes re-encode to themselves, as the full way would store them. */
    int relen = ASN1_item_i2d((ASN1_VALUE *)c, &re, ASN1_ITEM_rptr(cf_mfst_cert));
    if (relen < 0 || (size_t)relen != len || memcmp(re, der, len) != 0)
        goto out;
    const cf_mfst_tbs *tbs = c->tbs;
    const cf_mfst_spki *spki = tbs->spki;
    const EVP_MD *mdalg = ecdsa_digest(c->sig_alg);
    const ASN1_OBJECT *kalg;
    const void *kparam;
    int kptype;
    X509_ALGOR_get0(&kalg, &kptype, &kparam, spki->algor);
    unsigned char *subj = NULL;
    int subj_len = i2d_X509_NAME(tbs->subject, &subj);
    int self_issued = subj_len == r->iss_name_len && memcmp(subj, r->iss_name, subj_len) == 0;
    OPENSSL_free(subj);
    if (!tbs->version || ASN1_INTEGER_get(tbs->version) != 2 || tbs->issuer_uid ||
        tbs->subject_uid || !mdalg || X509_ALGOR_cmp(tbs->sig_alg, c->sig_alg) != 0 ||
        tbs->issuer->type != V_ASN1_SEQUENCE ||
        ASN1_STRING_length(tbs->issuer->value.sequence) != r->iss_name_len ||
        memcmp(ASN1_STRING_get0_data(tbs->issuer->value.sequence), r->iss_name,
               (size_t)r->iss_name_len) != 0 ||
        subj_len <= 0 || self_issued)
        goto out;
    /* The device key is the JWK's: the same curve by name, the same uncompressed point. */
    if (OBJ_obj2nid(kalg) != NID_X9_62_id_ecPublicKey || kptype != V_ASN1_OBJECT ||
        OBJ_obj2nid(kparam) != curve_nid || !whole_bytes(spki->public_key) ||
        (size_t)ASN1_STRING_length(spki->public_key) != point_len ||
        memcmp(ASN1_STRING_get0_data(spki->public_key), point, point_len) != 0)
        goto out;
    if (!time_ok(tbs->validity->notBefore, tbs->validity->notAfter, now))
        goto out;
    for (int i = 0; i < sk_X509_num(r->above); i++) {
        X509 *x = sk_X509_value(r->above, i);
        if (!time_ok(X509_get0_notBefore(x), X509_get0_notAfter(x), now))
            goto out;
    }
    if (!leaf_extensions_ok(tbs->extensions, issuer) ||
        check_cn(tbs->subject, uid, "x5c", NULL) != CF_OK)
        goto out;
    /* The signature by x5c[1] over the TBSCertificate bytes as they came. */
    if (!whole_bytes(c->signature) || !tbs->enc.enc || tbs->enc.len <= 0 ||
        EVP_Digest(tbs->enc.enc, (size_t)tbs->enc.len, md, &mdlen, mdalg, NULL) != 1)
        goto out;
    const cf_ec_fixed *fixed = mdlen == 32 ? fixed_key_table(r->fixed) : NULL;
    if (fixed && cf_ec_fixed_verify_der(fixed, md, ASN1_STRING_get0_data(c->signature),
                                        (size_t)ASN1_STRING_length(c->signature))) {
        ok = 1;
        goto out;
    }
    if (!(pctx = EVP_PKEY_CTX_new(X509_get0_pubkey(issuer), NULL)) ||
        EVP_PKEY_verify_init(pctx) != 1 ||
        EVP_PKEY_verify(pctx, ASN1_STRING_get0_data(c->signature),
                        (size_t)ASN1_STRING_length(c->signature), md, mdlen) != 1)
        goto out;
    ok = 1;
out:
    EVP_PKEY_CTX_free(pctx);
    OPENSSL_free(re);
    ASN1_item_free((ASN1_VALUE *)c, ASN1_ITEM_rptr(cf_mfst_cert));
    ERR_clear_error();
    return ok;
}

/* 1 when point (point_len bytes) lies on the curve curve_nid. */
static int point_on_curve(const cf_manifest_trust *t, int curve_nid, const unsigned char *point,
                          size_t point_len)
{
    const EC_GROUP *g = curve_nid == NID_secp384r1 ? t->p384 : t->p256;
    EC_POINT *pt = EC_POINT_new(g);
    int ok = pt && EC_POINT_oct2point(g, pt, point, point_len, NULL) == 1;
    EC_POINT_free(pt);
    ERR_clear_error();
    return ok;
}

/* The quick way for one JWK with an x5c of two or more certificates whose chain above the
 * device has a record: 1 when it has verified everything check_key checks and filled dev as
 * check_key would; 0 when check_key must decide (dev unchanged). */
static int check_key_fast(const cf_manifest_trust *t, const json_t *jwk, cf_manifest_device *dev)
{
    unsigned char point[CF_JWK_POINT_MAX], key[32], *leaf = NULL;
    size_t point_len = 0, leaf_len = 0;
    int nid = NID_undef, ok = 0;
    chain_rec *r = NULL;
    const json_t *x5c = json_object_get(jwk, "x5c");
    const json_t *x0 = json_array_get(x5c, 0);
    if (!json_is_array(x5c) || json_array_size(x5c) < 2 || json_array_size(x5c) > X5C_MAX ||
        !json_is_string(x0) || cf_jwk_ec_point(jwk, &nid, point, &point_len, NULL) != CF_OK ||
        !x5c_chain_key(x5c, key) || !(r = chain_get(t->chains, key)))
        return 0;
    if (r->fast && point_on_curve(t, nid, point, point_len) &&
        cf_b64_decode(json_string_value(x0), json_string_length(x0), &leaf, &leaf_len, NULL) ==
            CF_OK &&
        chain_leaf_ok(t, r, leaf, leaf_len, nid, point, point_len, dev->uid)) {
        if (dev->cert_der) { /* a later key of the entry: only checked */
            ok = 1;
        } else if (cf_jose_ec_spki_sha256(nid, point, point_len, dev->spki_sha256, NULL) == CF_OK) {
            dev->cert_der = leaf;
            dev->cert_der_len = leaf_len;
            dev->has_key = 1;
            leaf = NULL;
            ok = 1;
        }
    }
    if (ok)
        atomic_fetch_add(&t->chains->fast, 1);
    free(leaf);
    chain_rec_release(t->chains, r);
    return ok;
}

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

/* The SHA-256 of a JWK's SubjectPublicKeyInfo (the JWK already imported once). */
static cf_err jwk_spki_sha256(const json_t *jwk, unsigned char out[32], cf_error *err)
{
    unsigned char point[CF_JWK_POINT_MAX];
    size_t point_len = 0;
    int nid = NID_undef;
    cf_err rc = cf_jwk_ec_point(jwk, &nid, point, &point_len, err);
    return rc == CF_OK ? cf_jose_ec_spki_sha256(nid, point, point_len, out, err) : rc;
}

/* Verifies publicKeySet.keys[i] and, the first time, records its key (and certificate):
 * through a verified issuer chain when there is one (check_key_fast), else in full. */
static cf_err check_key(const cf_manifest_trust *t, const json_t *jwk, size_t i,
                        cf_manifest_device *dev, cf_error *err)
{
    EVP_PKEY *key = NULL;
    STACK_OF(X509) *certs = NULL, *built = NULL;
    char what[48];
    if (check_key_fast(t, jwk, dev))
        return CF_OK;
    cf_err rc = cf_jwk_ec_import(jwk, &key, err);
    if (rc != CF_OK)
        goto out;
    if ((rc = decode_x5c(t, json_object_get(jwk, "x5c"), &certs, err)) != CF_OK)
        goto out;
    if (sk_X509_num(certs) > 0) {
        snprintf(what, sizeof what, "x5c");
        X509 *leaf = sk_X509_value(certs, 0);
        if ((rc = verify_chain(t, certs, what, &built, err)) != CF_OK ||
            (rc = check_cn(X509_get_subject_name(leaf), dev->uid, what, err)) != CF_OK)
            goto out;
        EVP_PKEY *cert_key = X509_get0_pubkey(leaf);
        if (!cert_key || EVP_PKEY_eq(cert_key, key) != 1) {
            ERR_clear_error();
            rc = cf_error_set(err, CF_ERR_POLICY, "JWK does not match x5c[0]'s public key");
            goto out;
        }
        if (!dev->cert_der) {
            if ((rc = take_cert(leaf, dev, err)) != CF_OK ||
                (rc = jwk_spki_sha256(jwk, dev->spki_sha256, err)) != CF_OK)
                goto out;
            dev->has_key = 1;
        }
        chain_add(t, json_object_get(jwk, "x5c"), certs, built);
    } else if (!dev->has_key) {
        if ((rc = jwk_spki_sha256(jwk, dev->spki_sha256, err)) != CF_OK)
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
    sk_X509_pop_free(built, X509_free);
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
    if ((rc = cf_jws_verify_es256(X509_get0_pubkey(signer->cert), fixed_key_table(signer->fixed),
                                  prot, prot_len, pay, pay_len, sig, sig_len, err)) != CF_OK)
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
    if ((rc = verify_chain(b->t, chain, "chain", NULL, err)) != CF_OK ||
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
