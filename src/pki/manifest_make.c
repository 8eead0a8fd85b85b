/* manifest_make.c - a chip maker's manifest tool (see manifest_make.h).
 *
 * The cost of a device is three P-256 operations (key generation, the birth certificate's
 * signature, the manifest entry's signature) plus encoding. Everything that does not depend
 * on the device is prepared once per worker: the key generation context, a signing context
 * for the batch CA that is copied rather than re-initialised (OpenSSL 3 fetches algorithms on
 * every init), a raw signing context for the manifest signer, the constant extensions, the
 * payload's constant prefix and the protected header. */
#include "pki/manifest_make.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/asn1t.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/util.h"
#include "pki/jose.h"
#include "pki/key.h"
#include "pki/x509.h"

#define DEFAULT_MANUFACTURER "Example Semiconductor Inc"
#define DEFAULT_MODEL "EXSE608"
#define MANUFACTURER_MAX 40 /* "NAME Manifest Signer" must fit a 64-character CN */
#define LABEL_MAX 64
#define CHUNK_DEVICES 128
#define SLOTS_PER_WORKER 3
#define YEAR_SECONDS (365LL * 86400)
#define UID_BYTES 9
#define UID_HEX (2 * UID_BYTES + 1)
#define P256_POINT 65
#define CERT_DER_MAX 2048
#define PAYLOAD_MAX 8192

/* ---- small encoders ---- */

#define B64_LEN(n) (4 * (((n) + 2) / 3) + 1)

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

char *cf_claim_code_format(const unsigned char code[CF_CLAIM_CODE_BYTES],
                           char out[CF_CLAIM_CODE_STR_MAX])
{
    /* 26 digits of 5 bits cover 130 bits: the first digit carries the top 3 bits only. */
    int o = 0;
    for (int d = 0; d < 26; d++) {
        int bit = d * 5 - 2; /* position of the digit's top bit in the 128-bit string */
        unsigned v = 0;
        for (int b = 0; b < 5; b++) {
            int p = bit + b;
            v <<= 1;
            if (p >= 0)
                v |= (code[p / 8] >> (7 - p % 8)) & 1;
        }
        if (d == 2 || (d > 2 && (d - 2) % 4 == 0))
            out[o++] = '-';
        out[o++] = crockford[v];
    }
    out[o] = '\0';
    return out;
}

static int crockford_value(int c)
{
    if (c >= 'a' && c <= 'z')
        c -= 'a' - 'A';
    if (c == 'O')
        c = '0';
    if (c == 'I' || c == 'L')
        c = '1';
    const char *p = c ? strchr(crockford, c) : NULL;
    return p ? (int)(p - crockford) : -1;
}

cf_err cf_claim_code_parse(const char *text, unsigned char out[CF_CLAIM_CODE_BYTES], cf_error *err)
{
    unsigned char acc[CF_CLAIM_CODE_BYTES] = {0};
    int digits = 0;
    for (const char *s = text; *s; s++) {
        if (*s == '-' || *s == ' ')
            continue;
        int v = crockford_value((unsigned char)*s);
        if (v < 0 || digits == 26 || (digits == 0 && v > 7)) {
            OPENSSL_cleanse(acc, sizeof acc);
            return cf_error_set(err, CF_ERR_INVALID,
                                "claim code: expected 26 base32 digits in groups (XX-XXXX-...)");
        }
        for (int b = 0; b < 5; b++) {
            int p = digits * 5 - 2 + b;
            if (p >= 0 && ((v >> (4 - b)) & 1))
                acc[p / 8] |= (unsigned char)(0x80 >> (p % 8));
        }
        digits++;
    }
    if (digits != 26)
        return cf_error_set(err, CF_ERR_INVALID,
                            "claim code: expected 26 base32 digits in groups (XX-XXXX-...)");
    memcpy(out, acc, sizeof acc);
    OPENSSL_cleanse(acc, sizeof acc);
    return CF_OK;
}

/* A bijection on 64-bit integers (splitmix64's finaliser: xor-shifts and odd multipliers are
 * each invertible), so distinct device indexes give distinct unique ids. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

#define TS_MAX 80

/* "2025-06-01T20:14:53.773Z": milliseconds, as MicrochipDirect writes them. */
static void format_ms(int64_t ms, char out[TS_MAX])
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    snprintf(out, TS_MAX, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

/* ---- growable buffers (a failed allocation is remembered and reported once) ---- */

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} buf;

static void buf_add(buf *b, const void *data, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_str(buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

/* ---- the manufacturer's certificates (made once: clarity over speed) ---- */

typedef struct {
    int nid;
    const char *value; /* OpenSSL configuration syntax */
} ext_spec;

static cf_err set_random_serial(X509 *x, cf_error *err)
{
    unsigned char raw[16];
    if (cf_random_bytes(raw, sizeof raw, err) != CF_OK)
        return CF_ERR_CRYPTO;
    raw[0] = (raw[0] & 0x7f) | 0x40; /* positive, and no leading zero byte */
    if (!ASN1_STRING_set(X509_get_serialNumber(x), raw, sizeof raw))
        return cf_error_openssl(err, CF_ERR_CRYPTO, "cannot set serial number");
    return CF_OK;
}

static cf_err set_name(X509_NAME *name, const char *org, const char *cn, cf_error *err)
{
    if (!X509_NAME_add_entry_by_NID(name, NID_organizationName, MBSTRING_UTF8,
                                    (const unsigned char *)org, -1, -1, 0) ||
        !X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8, (const unsigned char *)cn,
                                    -1, -1, 0))
        return cf_error_openssl(err, CF_ERR_INVALID, "cannot encode subject O=%s, CN=%s", org, cn);
    return CF_OK;
}

/* A certificate for key, signed by issuer_key (self-signed when issuer is NULL). */
static cf_err make_cert(const char *org, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
                        EVP_PKEY *key, int64_t nb, int64_t na, const ext_spec *exts, X509 **out,
                        cf_error *err)
{
    X509 *x = X509_new();
    cf_err rc;
    if (!x)
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    if (!X509_set_version(x, X509_VERSION_3) || !X509_set_pubkey(x, key) ||
        !ASN1_TIME_set(X509_getm_notBefore(x), (time_t)nb) ||
        !ASN1_TIME_set(X509_getm_notAfter(x), (time_t)na)) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot build certificate %s", cn);
        goto fail;
    }
    if ((rc = set_random_serial(x, err)) != CF_OK ||
        (rc = set_name(X509_get_subject_name(x), org, cn, err)) != CF_OK)
        goto fail;
    if (!X509_set_issuer_name(x, X509_get_subject_name(issuer ? issuer : x))) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot set issuer of %s", cn);
        goto fail;
    }
    for (const ext_spec *e = exts; e->value; e++) {
        X509V3_CTX ctx;
        X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
        X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, e->nid, e->value);
        if (!ext || !X509_add_ext(x, ext, -1)) {
            X509_EXTENSION_free(ext);
            rc =
                cf_error_openssl(err, CF_ERR_CRYPTO, "cannot add %s to %s", OBJ_nid2sn(e->nid), cn);
            goto fail;
        }
        X509_EXTENSION_free(ext);
    }
    if (X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) <= 0) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot sign certificate %s", cn);
        goto fail;
    }
    *out = x;
    return CF_OK;
fail:
    X509_free(x);
    return rc;
}

static const ext_spec root_exts[] = {
    {NID_basic_constraints, "critical,CA:TRUE,pathlen:1"},
    {NID_key_usage, "critical,keyCertSign,cRLSign"},
    {NID_subject_key_identifier, "hash"},
    {0, NULL},
};

static const ext_spec batch_exts[] = {
    {NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
    {NID_key_usage, "critical,digitalSignature,keyCertSign,cRLSign"},
    {NID_subject_key_identifier, "hash"},
    {NID_authority_key_identifier, "keyid:always"},
    {0, NULL},
};

static const ext_spec signer_exts[] = {
    {NID_basic_constraints, "critical,CA:FALSE"},
    {NID_key_usage, "critical,digitalSignature"},
    {NID_subject_key_identifier, "hash"},
    {NID_authority_key_identifier, "keyid:always"},
    {0, NULL},
};

/* ---- output files ---- */

/* Opens a new file (never replacing one) with exactly mode, buffered for large writes. */
static FILE *open_new(const char *dir, const char *name, mode_t mode, cf_error *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        cf_error_set(err, errno == EEXIST ? CF_ERR_EXISTS : CF_ERR_IO, "%s: %s", path,
                     strerror(errno));
        return NULL;
    }
    FILE *f = fchmod(fd, mode) == 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        cf_error_set(err, CF_ERR_IO, "%s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    return f;
}

static cf_err close_file(FILE *f, const char *dir, const char *name, cf_error *err)
{
    int bad = ferror(f) | fflush(f) | fsync(fileno(f));
    if ((fclose(f) != 0) | bad)
        return cf_error_set(err, CF_ERR_IO, "%s/%s: write failed: %s", dir, name, strerror(errno));
    return CF_OK;
}

static cf_err write_whole(const char *dir, const char *name, const void *data, size_t len,
                          mode_t mode, cf_error *err)
{
    FILE *f = open_new(dir, name, mode, err);
    if (!f)
        return err ? err->code : CF_ERR_IO;
    fwrite(data, 1, len, f);
    return close_file(f, dir, name, err);
}

static cf_err write_cert_and_key(const char *dir, const char *base, X509 *cert, EVP_PKEY *key,
                                 cf_error *err)
{
    char name[64], *pem = NULL;
    size_t len = 0;
    cf_err rc;
    if ((rc = cf_x509_append_pem(cert, &pem, &len, err)) != CF_OK)
        return rc;
    snprintf(name, sizeof name, "%s.crt", base);
    rc = write_whole(dir, name, pem, len, 0644, err);
    free(pem);
    pem = NULL;
    if (rc != CF_OK)
        return rc;
    if ((rc = cf_key_to_pem(key, &pem, &len, err)) != CF_OK)
        return rc;
    snprintf(name, sizeof name, "%s.key", base);
    rc = write_whole(dir, name, pem, len, 0600, err);
    OPENSSL_cleanse(pem, len);
    free(pem);
    return rc;
}

/* ---- the run: what every worker shares, read-only once the workers start ---- */

typedef struct {
    buf manifest, keys, csv; /* this chunk's text for each output file */
    int ready;               /* made and not yet written */
} slot;

typedef struct {
    const cf_manifest_make_opts *o;
    const char *org;
    EVP_PKEY *batch_key, *signer_key;
    X509 *batch;
    ASN1_TIME *dev_nb, *dev_na;
    char *prefix;    /* the payload's constant members, without the closing brace */
    char *batch_b64; /* x5c[1] */
    char *batch_pem; /* the batch CA as PEM, for certs/UID.pem */
    char protected_b64[512];
    uint64_t uid_base;
    char keys_dir[4096];
    char certs_dir[4096];

    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t nchunks, next_claim, next_write;
    slot *slots;
    uint64_t nslots;
    int failed;
    cf_error ferr;
} run;

typedef struct {
    run *r;
    pthread_t thread;
    EVP_PKEY_CTX *keygen;
    EVP_MD_CTX *batch_tmpl, *batch_work; /* DigestSign initialised once, copied per use */
    EVP_PKEY_CTX *jws;                   /* sign_init'ed with the manifest signer */
    EVP_MD_CTX *md;
    EVP_MD *sha256, *sha1;
    BIO *pem;
    X509 *cert; /* the birth certificate, refilled for each device */
    char payload[PAYLOAD_MAX];
    char payload_b64[B64_LEN(PAYLOAD_MAX)];
    cf_error err;
} worker;

static X509_EXTENSION *aki_of(X509 *issuer)
{
    const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(issuer);
    AUTHORITY_KEYID *akid = ski ? AUTHORITY_KEYID_new() : NULL;
    X509_EXTENSION *ext = NULL;
    if (akid && (akid->keyid = ASN1_OCTET_STRING_dup(ski)) != NULL)
        ext = X509V3_EXT_i2d(NID_authority_key_identifier, 0, akid);
    AUTHORITY_KEYID_free(akid);
    return ext;
}

static void worker_clear(worker *w)
{
    EVP_PKEY_CTX_free(w->keygen);
    EVP_MD_CTX_free(w->batch_tmpl);
    EVP_MD_CTX_free(w->batch_work);
    EVP_PKEY_CTX_free(w->jws);
    EVP_MD_CTX_free(w->md);
    EVP_MD_free(w->sha256);
    EVP_MD_free(w->sha1);
    BIO_free(w->pem);
    X509_free(w->cert);
}

/* What every birth certificate of the batch shares: version, issuer, validity, basic
 * constraints, key usage (as Microchip's: digitalSignature, keyAgreement), AKI. Each device
 * then only replaces the serial, the subject, the key and the SKI, which saves building and
 * copying the rest a million times. */
static cf_err birth_template(worker *w, run *r, cf_error *err)
{
    X509 *x = w->cert = X509_new();
    X509_EXTENSION *bc =
        X509V3_EXT_conf_nid(NULL, NULL, NID_basic_constraints, "critical,CA:FALSE");
    X509_EXTENSION *ku =
        X509V3_EXT_conf_nid(NULL, NULL, NID_key_usage, "critical,digitalSignature,keyAgreement");
    X509_EXTENSION *aki = aki_of(r->batch);
    ASN1_OCTET_STRING *ski = ASN1_OCTET_STRING_new(); /* a placeholder, keeps Microchip's order */
    int ok = x && bc && ku && aki && ski && X509_set_version(x, X509_VERSION_3) &&
             X509_set_issuer_name(x, X509_get_subject_name(r->batch)) &&
             X509_set1_notBefore(x, r->dev_nb) && X509_set1_notAfter(x, r->dev_na) &&
             X509_add_ext(x, bc, -1) && X509_add_ext(x, ku, -1) &&
             X509_add1_ext_i2d(x, NID_subject_key_identifier, ski, 0, X509V3_ADD_DEFAULT) &&
             X509_add_ext(x, aki, -1);
    ASN1_OCTET_STRING_free(ski);
    X509_EXTENSION_free(bc);
    X509_EXTENSION_free(ku);
    X509_EXTENSION_free(aki);
    if (!ok)
        return cf_error_openssl(err, CF_ERR_CRYPTO, "cannot prepare birth certificates");
    return set_name(X509_get_subject_name(x), r->org, "sn", err);
}

static cf_err worker_init(worker *w, run *r, cf_error *err)
{
    w->r = r;
    if (!(w->keygen = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) ||
        EVP_PKEY_keygen_init(w->keygen) <= 0 ||
        EVP_PKEY_CTX_set_group_name(w->keygen, "P-256") <= 0)
        return cf_error_openssl(err, CF_ERR_CRYPTO, "cannot prepare P-256 key generation");
    if (!(w->batch_tmpl = EVP_MD_CTX_new()) || !(w->batch_work = EVP_MD_CTX_new()) ||
        EVP_DigestSignInit_ex(w->batch_tmpl, NULL, "SHA256", NULL, NULL, r->batch_key, NULL) <= 0)
        return cf_error_openssl(err, CF_ERR_CRYPTO, "cannot prepare the batch CA's signer");
    if (!(w->jws = EVP_PKEY_CTX_new_from_pkey(NULL, r->signer_key, NULL)) ||
        EVP_PKEY_sign_init(w->jws) <= 0)
        return cf_error_openssl(err, CF_ERR_CRYPTO, "cannot prepare the manifest signer");
    if (!(w->md = EVP_MD_CTX_new()) || !(w->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL)) ||
        !(w->sha1 = EVP_MD_fetch(NULL, "SHA1", NULL)) || !(w->pem = BIO_new(BIO_s_mem())))
        return cf_error_openssl(err, CF_ERR_CRYPTO, "cannot prepare digests");
    return birth_template(w, r, err);
}

/* The birth certificate of the device whose uncompressed P-256 point is pub, as DER. */
static cf_err birth_cert(worker *w, const char *cn, const unsigned char pub[P256_POINT],
                         const unsigned char rnd_serial[16], unsigned char *der, size_t *derlen,
                         cf_error *err)
{
    X509 *x = w->cert;
    X509_NAME *subject = X509_get_subject_name(x);
    ASN1_OCTET_STRING *ski = ASN1_OCTET_STRING_new();
    unsigned char serial[16], md[EVP_MAX_MD_SIZE], *penc = NULL;
    unsigned int mdlen = 0;
    cf_err rc = CF_ERR_CRYPTO;
    memcpy(serial, rnd_serial, sizeof serial);
    serial[0] = (serial[0] & 0x7f) | 0x40;
    if (!ski)
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    /* The CN is the subject's last entry: replace it (this marks the name for re-encoding,
     * where editing the entry in place would not). */
    X509_NAME_ENTRY_free(X509_NAME_delete_entry(subject, X509_NAME_entry_count(subject) - 1));
    if (!X509_NAME_add_entry_by_NID(subject, NID_commonName, MBSTRING_UTF8,
                                    (const unsigned char *)cn, -1, -1, 0) ||
        !ASN1_STRING_set(X509_get_serialNumber(x), serial, sizeof serial))
        goto crypto;
    /* The key goes in as its encoded point: no round trip through OpenSSL's encoders. */
    if (!(penc = OPENSSL_memdup(pub, P256_POINT)))
        goto crypto;
    if (!X509_PUBKEY_set0_param(X509_get_X509_PUBKEY(x), OBJ_nid2obj(NID_X9_62_id_ecPublicKey),
                                V_ASN1_OBJECT, OBJ_nid2obj(NID_X9_62_prime256v1), penc,
                                P256_POINT)) {
        OPENSSL_free(penc);
        goto crypto;
    }
    /* RFC 5280 §4.2.1.2 method (1): SHA-1 of the subjectPublicKey bits. */
    if (!EVP_Digest(pub, P256_POINT, md, &mdlen, w->sha1, NULL) ||
        !ASN1_OCTET_STRING_set(ski, md, (int)mdlen) ||
        !X509_add1_ext_i2d(x, NID_subject_key_identifier, ski, 0, X509V3_ADD_REPLACE))
        goto crypto;
    /* X509_sign_ctx marks the whole certificate for re-encoding. */
    if (!EVP_MD_CTX_copy_ex(w->batch_work, w->batch_tmpl) || X509_sign_ctx(x, w->batch_work) <= 0)
        goto crypto;
    int n = i2d_X509(x, NULL);
    if (n <= 0 || n > CERT_DER_MAX)
        goto crypto;
    unsigned char *p = der;
    i2d_X509(x, &p);
    *derlen = (size_t)n;
    rc = CF_OK;
    goto out;
crypto:
    rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot make birth certificate %s", cn);
out:
    ASN1_OCTET_STRING_free(ski);
    return rc;
}

/* ES256 over protected "." payload: the raw r||s of RFC 7518 §3.4, base64url. */
static cf_err jws_sign(worker *w, size_t payload_b64_len, char sig_b64[B64_LEN(64)], cf_error *err)
{
    run *r = w->r;
    unsigned char h[EVP_MAX_MD_SIZE], der[80], raw[64];
    unsigned int hlen = 0;
    size_t derlen = sizeof der;
    const BIGNUM *br, *bs;
    ECDSA_SIG *sig = NULL;
    cf_err rc = CF_OK;
    if (!EVP_DigestInit_ex(w->md, w->sha256, NULL) ||
        !EVP_DigestUpdate(w->md, r->protected_b64, strlen(r->protected_b64)) ||
        !EVP_DigestUpdate(w->md, ".", 1) ||
        !EVP_DigestUpdate(w->md, w->payload_b64, payload_b64_len) ||
        !EVP_DigestFinal_ex(w->md, h, &hlen) || EVP_PKEY_sign(w->jws, der, &derlen, h, hlen) <= 0)
        return cf_error_openssl(err, CF_ERR_CRYPTO, "cannot sign manifest entry");
    const unsigned char *p = der;
    if (!(sig = d2i_ECDSA_SIG(NULL, &p, (long)derlen))) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot decode the entry's signature");
        goto out;
    }
    ECDSA_SIG_get0(sig, &br, &bs);
    if (BN_bn2binpad(br, raw, 32) != 32 || BN_bn2binpad(bs, raw + 32, 32) != 32) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "signature does not fit P-256");
        goto out;
    }
    cf_b64url_encode(raw, sizeof raw, sig_b64);
out:
    ECDSA_SIG_free(sig);
    return rc;
}

static cf_err write_key_file(run *r, const char *uid_hex, const char *pem, size_t len,
                             cf_error *err)
{
    char path[4096 + 64];
    snprintf(path, sizeof path, "%s/%s.key", r->keys_dir, uid_hex);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return cf_error_set(err, CF_ERR_IO, "%s: %s", path, strerror(errno));
    ssize_t n = fchmod(fd, 0600) == 0 ? write(fd, pem, len) : -1;
    int saved = errno;
    if (close(fd) != 0 || n != (ssize_t)len)
        return cf_error_set(err, CF_ERR_IO, "%s: write failed: %s", path, strerror(saved));
    return CF_OK;
}

/* der as a PEM CERTIFICATE block into out (PEM_LEN(len) bytes); returns its length. */
#define PEM_LEN(n) (B64_LEN(n) + B64_LEN(n) / 64 + 64)
static size_t cert_pem(const unsigned char *der, size_t len, char *out)
{
    size_t n = (size_t)sprintf(out, "-----BEGIN CERTIFICATE-----\n");
    for (size_t off = 0; off < len; off += 48) {
        size_t chunk = len - off < 48 ? len - off : 48;
        n += (size_t)EVP_EncodeBlock((unsigned char *)out + n, der + off, (int)chunk);
        out[n++] = '\n';
    }
    n += (size_t)sprintf(out + n, "-----END CERTIFICATE-----\n");
    return n;
}

/* certs/UID.pem: the birth certificate, then the batch CA (what a device presents in TLS). */
static cf_err write_cert_file(run *r, const char *uid_hex, const unsigned char *der, size_t len,
                              cf_error *err)
{
    char path[4096 + 64], pem[PEM_LEN(CERT_DER_MAX)];
    size_t n = cert_pem(der, len, pem);
    snprintf(path, sizeof path, "%s/%s.pem", r->certs_dir, uid_hex);
    FILE *fp = fopen(path, "wxe");
    if (!fp)
        return cf_error_set(err, CF_ERR_IO, "%s: %s", path, strerror(errno));
    int ok = fwrite(pem, 1, n, fp) == n && fputs(r->batch_pem, fp) >= 0;
    if (fclose(fp) != 0 || !ok)
        return cf_error_set(err, CF_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    return CF_OK;
}

/* RFC 5915 ECPrivateKey as it sits inside PKCS #8 (the curve is named in the
 * AlgorithmIdentifier), encoded by OpenSSL's ASN.1 templates. OpenSSL 3.0's generic path
 * (PEM_write_bio_PrivateKey) sets up an encoder context per key, which a profile showed to
 * cost more than the key's generation and both signatures together; this writes the same
 * bytes (the unit test compares them). */
typedef struct {
    int32_t version;
    ASN1_OCTET_STRING *private_key;
    ASN1_BIT_STRING *public_key;
} ec_private_key;

/* clang-format off */
ASN1_SEQUENCE(ec_private_key) = {
    ASN1_EMBED(ec_private_key, version, INT32),
    ASN1_SIMPLE(ec_private_key, private_key, ASN1_OCTET_STRING),
    ASN1_EXP_OPT(ec_private_key, public_key, ASN1_BIT_STRING, 1),
} static_ASN1_SEQUENCE_END(ec_private_key)
    /* clang-format on */

    /* The PKCS #8 PEM of a P-256 key whose public point is pub, into w->pem. */
    static int key_pem(worker * w, EVP_PKEY *key, const unsigned char pub[P256_POINT])
{
    unsigned char d[32], *inner = NULL;
    BIGNUM *bn = NULL;
    ec_private_key ek = {1, ASN1_OCTET_STRING_new(), ASN1_BIT_STRING_new()};
    PKCS8_PRIV_KEY_INFO *p8 = PKCS8_PRIV_KEY_INFO_new();
    int ok = 0, n;
    if (!ek.private_key || !ek.public_key || !p8 ||
        !EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_PRIV_KEY, &bn) ||
        BN_bn2binpad(bn, d, sizeof d) != (int)sizeof d ||
        !ASN1_OCTET_STRING_set(ek.private_key, d, sizeof d) ||
        !ASN1_BIT_STRING_set(ek.public_key, (unsigned char *)pub, P256_POINT))
        goto out;
    /* A point is whole bytes: say so, or i2d would count trailing zero bits as unused. */
    ek.public_key->flags = (ek.public_key->flags & ~0x07) | ASN1_STRING_FLAG_BITS_LEFT;
    if ((n = ASN1_item_i2d((ASN1_VALUE *)&ek, &inner, ASN1_ITEM_rptr(ec_private_key))) <= 0)
        goto out;
    if (!PKCS8_pkey_set0(p8, OBJ_nid2obj(NID_X9_62_id_ecPublicKey), 0, V_ASN1_OBJECT,
                         OBJ_nid2obj(NID_X9_62_prime256v1), inner, n)) {
        OPENSSL_clear_free(inner, (size_t)n);
        goto out;
    }
    (void)BIO_reset(w->pem);
    ok = PEM_write_bio_PKCS8_PRIV_KEY_INFO(w->pem, p8);
out:
    OPENSSL_cleanse(d, sizeof d);
    BN_clear_free(bn);
    ASN1_STRING_clear_free(ek.private_key);
    ASN1_BIT_STRING_free(ek.public_key);
    PKCS8_PRIV_KEY_INFO_free(p8);
    return ok;
}

/* One device: key, birth certificate, manifest entry, key PEM and claim code, appended to
 * the chunk's buffers. rnd holds 32 random bytes: the serial, then the claim code. */
static cf_err make_device(worker *w, uint64_t index, const unsigned char *rnd, const char *ts,
                          slot *s, cf_error *err)
{
    run *r = w->r;
    unsigned char uid[UID_BYTES], pub[P256_POINT], der[CERT_DER_MAX];
    char uid_hex[UID_HEX], cn[2 + UID_HEX], x[B64_LEN(32)], y[B64_LEN(32)];
    char der_b64[B64_LEN(CERT_DER_MAX)], sig_b64[B64_LEN(64)], code[CF_CLAIM_CODE_STR_MAX];
    size_t publen = 0, derlen = 0;
    EVP_PKEY *key = NULL;
    cf_err rc;

    uint64_t v = mix64(r->uid_base + index);
    uid[0] = 0x01;
    for (int i = 0; i < 8; i++)
        uid[1 + i] = (unsigned char)(v >> (56 - 8 * i));
    cf_hex_encode(uid, UID_BYTES, 0, uid_hex);
    cn[0] = 's';
    cn[1] = 'n';
    cf_hex_encode(uid, UID_BYTES, 1, cn + 2);

    if (EVP_PKEY_keygen(w->keygen, &key) <= 0 ||
        !EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, pub, sizeof pub,
                                         &publen) ||
        publen != P256_POINT || pub[0] != 0x04) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot generate the key of device %s", uid_hex);
        goto out;
    }
    if ((rc = birth_cert(w, cn, pub, rnd, der, &derlen, err)) != CF_OK)
        goto out;

    /* Device key, for simulated devices. */
    char *pem;
    if (!key_pem(w, key, pub)) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot encode the key of device %s", uid_hex);
        goto out;
    }
    long pemlen = BIO_get_mem_data(w->pem, &pem);
    buf_str(&s->keys, "# uniqueId ");
    buf_str(&s->keys, uid_hex);
    buf_str(&s->keys, "\n");
    buf_add(&s->keys, pem, (size_t)pemlen);
    if (r->o->key_files && ((rc = write_key_file(r, uid_hex, pem, (size_t)pemlen, err)) != CF_OK ||
                            (rc = write_cert_file(r, uid_hex, der, derlen, err)) != CF_OK))
        goto out;

    buf_str(&s->csv, uid_hex);
    buf_str(&s->csv, ",");
    buf_str(&s->csv, cf_claim_code_format(rnd + 16, code));
    buf_str(&s->csv, "\n");

    /* The payload: constant members, then this device's. */
    int n;
    if (r->o->version == 2) {
        n = snprintf(w->payload, sizeof w->payload,
                     "%s,\"provisioningTimestamp\":\"%s\",\"uniqueId\":\"%s\"}", r->prefix, ts,
                     uid_hex);
    } else {
        cf_b64url_encode(pub + 1, 32, x);
        cf_b64url_encode(pub + 33, 32, y);
        EVP_EncodeBlock((unsigned char *)der_b64, der, (int)derlen);
        n = snprintf(w->payload, sizeof w->payload,
                     "%s,\"provisioningTimestamp\":\"%s\",\"uniqueId\":\"%s\",\"publicKeySet\":"
                     "{\"keys\":[{\"kid\":\"0\",\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\","
                     "\"y\":\"%s\",\"x5c\":[\"%s\",\"%s\"]}]}}",
                     r->prefix, ts, uid_hex, x, y, der_b64, r->batch_b64);
    }
    if (n < 0 || (size_t)n >= sizeof w->payload) {
        rc = cf_error_set(err, CF_ERR_INTERNAL, "payload of device %s is too large", uid_hex);
        goto out;
    }
    size_t plen = strlen(cf_b64url_encode((unsigned char *)w->payload, (size_t)n, w->payload_b64));
    if ((rc = jws_sign(w, plen, sig_b64, err)) != CF_OK)
        goto out;

    /* Laid out as MicrochipDirect's files are (json.dumps with indent=2). */
    if (index > 0)
        buf_str(&s->manifest, ",\n");
    buf_str(&s->manifest, "  {\n    \"payload\": \"");
    buf_add(&s->manifest, w->payload_b64, plen);
    buf_str(&s->manifest, "\",\n    \"protected\": \"");
    buf_str(&s->manifest, r->protected_b64);
    buf_str(&s->manifest, "\",\n    \"header\": {\n      \"uniqueId\": \"");
    buf_str(&s->manifest, uid_hex);
    buf_str(&s->manifest, "\"\n    },\n    \"signature\": \"");
    buf_str(&s->manifest, sig_b64);
    buf_str(&s->manifest, "\"\n  }");
    rc = CF_OK;
out:
    EVP_PKEY_free(key);
    return rc;
}

static cf_err make_chunk(worker *w, uint64_t k, slot *s, cf_error *err)
{
    run *r = w->r;
    uint64_t first = k * CHUNK_DEVICES;
    uint64_t count = r->o->devices - first < CHUNK_DEVICES ? r->o->devices - first : CHUNK_DEVICES;
    unsigned char rnd[CHUNK_DEVICES * 32];
    char ts[TS_MAX];
    cf_err rc;
    s->manifest.len = s->keys.len = s->csv.len = 0;
    if ((rc = cf_random_bytes(rnd, (size_t)count * 32, err)) != CF_OK)
        return rc;
    format_ms(r->o->provisioned_at_ms ? r->o->provisioned_at_ms : cf_time_now_us() / 1000, ts);
    for (uint64_t i = 0; i < count; i++)
        if ((rc = make_device(w, first + i, rnd + 32 * i, ts, s, err)) != CF_OK)
            return rc;
    OPENSSL_cleanse(rnd, sizeof rnd);
    if (s->manifest.oom || s->keys.oom || s->csv.oom)
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    return CF_OK;
}

static void fail_run(run *r, const cf_error *e)
{
    pthread_mutex_lock(&r->mu);
    if (!r->failed) {
        r->failed = 1;
        r->ferr = *e;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Claims chunks in order; a chunk goes to slot k % nslots once the writer has emptied it. */
static void *worker_main(void *arg)
{
    worker *w = arg;
    run *r = w->r;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        while (!r->failed && r->next_claim < r->nchunks &&
               r->next_claim - r->next_write >= r->nslots)
            pthread_cond_wait(&r->cv, &r->mu);
        if (r->failed || r->next_claim >= r->nchunks) {
            pthread_mutex_unlock(&r->mu);
            return NULL;
        }
        uint64_t k = r->next_claim++;
        pthread_mutex_unlock(&r->mu);

        slot *s = &r->slots[k % r->nslots];
        if (make_chunk(w, k, s, &w->err) != CF_OK) {
            fail_run(r, &w->err);
            return NULL;
        }
        pthread_mutex_lock(&r->mu);
        s->ready = 1;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
    }
}

/* ---- setting up: the manufacturer's PKI and the constant parts of every entry ---- */

typedef struct {
    EVP_PKEY *root_key, *batch_key, *signer_key;
    X509 *root, *batch, *signer;
} pki;

static void pki_clear(pki *p)
{
    EVP_PKEY_free(p->root_key);
    EVP_PKEY_free(p->batch_key);
    EVP_PKEY_free(p->signer_key);
    X509_free(p->root);
    X509_free(p->batch);
    X509_free(p->signer);
}

static cf_err make_pki(const cf_manifest_make_opts *o, const char *org, int64_t nb, pki *p,
                       cf_error *err)
{
    char cn[LABEL_MAX + 32];
    unsigned char tag[2];
    int64_t root_na = nb + 40 * YEAR_SECONDS, batch_na = nb + 35 * YEAR_SECONDS;
    int signer_days = o->signer_days > 0 ? o->signer_days : 1095;
    cf_err rc;
    if ((rc = cf_key_generate(CF_KEY_P256, &p->root_key, err)) != CF_OK ||
        (rc = cf_key_generate(CF_KEY_P256, &p->batch_key, err)) != CF_OK ||
        (rc = cf_key_generate(CF_KEY_P256, &p->signer_key, err)) != CF_OK ||
        (rc = cf_random_bytes(tag, sizeof tag, err)) != CF_OK)
        return rc;
    snprintf(cn, sizeof cn, "%s Root CA", org);
    if ((rc = make_cert(org, cn, NULL, NULL, p->root_key, nb, root_na, root_exts, &p->root, err)) !=
        CF_OK)
        return rc;
    /* Like "Crypto Authentication Signer 2A00": a batch CA with a short tag. */
    snprintf(cn, sizeof cn, "%s Signer %02X%02X", org, tag[0], tag[1]);
    if ((rc = make_cert(org, cn, p->root, p->root_key, p->batch_key, nb, batch_na, batch_exts,
                        &p->batch, err)) != CF_OK)
        return rc;
    snprintf(cn, sizeof cn, "%s Manifest Signer", org);
    return make_cert(org, cn, NULL, NULL, p->signer_key, nb, nb + (int64_t)signer_days * 86400,
                     signer_exts, &p->signer, err);
}

/* {"alg":"ES256","kid":SKI,"typ":"JWT","x5t#S256":SHA-256(DER)} of the signer, base64url. */
static cf_err make_protected(X509 *signer, char *out, size_t outlen, cf_error *err)
{
    unsigned char *der = NULL, h[32];
    size_t derlen = 0;
    char kid[B64_LEN(64)], x5t[B64_LEN(32)], json[256];
    cf_err rc = cf_x509_to_der(signer, &der, &derlen, err);
    if (rc != CF_OK)
        return rc;
    const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(signer);
    if (!ski || ASN1_STRING_length(ski) > 64 ||
        !EVP_Digest(der, derlen, h, NULL, EVP_sha256(), NULL)) {
        OPENSSL_free(der);
        return cf_error_openssl(err, CF_ERR_CRYPTO, "cannot name the manifest signer");
    }
    OPENSSL_free(der);
    cf_b64url_encode(ASN1_STRING_get0_data(ski), (size_t)ASN1_STRING_length(ski), kid);
    cf_b64url_encode(h, sizeof h, x5t);
    int n = snprintf(json, sizeof json,
                     "{\"alg\":\"ES256\",\"kid\":\"%s\",\"typ\":\"JWT\",\"x5t#S256\":\"%s\"}", kid,
                     x5t);
    if (n < 0 || (size_t)n >= sizeof json || B64_LEN((size_t)n) > outlen)
        return cf_error_set(err, CF_ERR_INTERNAL, "protected header too large");
    cf_b64url_encode((unsigned char *)json, (size_t)n, out);
    return CF_OK;
}

/* The payload's members that every entry shares, compact, without the closing brace. */
static cf_err make_prefix(const cf_manifest_make_opts *o, const char *org, char **out,
                          cf_error *err)
{
    unsigned char rnd[16];
    char group[17];
    cf_err rc = cf_random_bytes(rnd, sizeof rnd, err);
    if (rc != CF_OK)
        return rc;
    for (int i = 0; i < 16; i++)
        group[i] = crockford[rnd[i] & 31];
    group[16] = '\0';
    const char *model = o->model ? o->model : DEFAULT_MODEL;
    char part[LABEL_MAX + 8];
    snprintf(part, sizeof part, "%s-TNG", model);
    json_t *j = json_pack(
        "{s:i, s:s, s:s, s:{s:s, s:s}, s:{s:s, s:s}, s:{s:s, s:s}, s:s}", "version", o->version,
        "model", model, "partNumber", o->part_number ? o->part_number : part, "manufacturer",
        "organizationName", org, "organizationalUnitName", "Secure Products Group", "provisioner",
        "organizationName", org, "organizationalUnitName", "Secure Products Group", "distributor",
        "organizationName", org, "organizationalUnitName", "Direct Sales", "groupId", group);
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    if (!s)
        return cf_error_set(err, CF_ERR_INVALID,
                            "cannot encode the payload (are the names valid UTF-8?)");
    s[strlen(s) - 1] = '\0'; /* the closing brace comes after the device's members */
    *out = s;
    return CF_OK;
}

static cf_err check_opts(const cf_manifest_make_opts *o, const char *org, cf_error *err)
{
    if (o->devices < 1)
        return cf_error_set(err, CF_ERR_INVALID, "the number of devices must be at least 1");
    if (o->version != 1 && o->version != 2)
        return cf_error_set(err, CF_ERR_INVALID, "payload version %d: expected 1 or 2", o->version);
    if (!o->out_dir || !*o->out_dir)
        return cf_error_set(err, CF_ERR_INVALID, "no output directory");
    if (strlen(o->out_dir) > 4000)
        return cf_error_set(err, CF_ERR_INVALID, "output directory name too long");
    if (!*org || strlen(org) > MANUFACTURER_MAX)
        return cf_error_set(err, CF_ERR_INVALID,
                            "manufacturer name must be 1 to %d characters (it goes into "
                            "certificate names)",
                            MANUFACTURER_MAX);
    if ((o->model && (!*o->model || strlen(o->model) > LABEL_MAX)) ||
        (o->part_number && (!*o->part_number || strlen(o->part_number) > LABEL_MAX)))
        return cf_error_set(err, CF_ERR_INVALID, "model and part number: 1 to %d characters",
                            LABEL_MAX);
    if (o->signer_days < 0 || o->device_days < 0 || o->signer_days > 100 * 365 ||
        o->device_days > 100 * 365)
        return cf_error_set(err, CF_ERR_INVALID, "validity in days: 1 to %d", 100 * 365);
    return CF_OK;
}

/* Writes the chunks in order as the workers finish them. */
static cf_err write_chunks(run *r, FILE *manifest, FILE *keys, FILE *csv, cf_error *err)
{
    for (uint64_t k = 0; k < r->nchunks; k++) {
        slot *s = &r->slots[k % r->nslots];
        pthread_mutex_lock(&r->mu);
        while (!r->failed && !s->ready)
            pthread_cond_wait(&r->cv, &r->mu);
        int failed = r->failed;
        pthread_mutex_unlock(&r->mu);
        if (failed)
            return CF_ERR_INTERNAL; /* the worker's error is reported */
        const char *bad =
            fwrite(s->manifest.p, 1, s->manifest.len, manifest) != s->manifest.len ? "manifest.json"
            : fwrite(s->keys.p, 1, s->keys.len, keys) != s->keys.len ? "device-keys.pem"
            : fwrite(s->csv.p, 1, s->csv.len, csv) != s->csv.len     ? "claim-codes.csv"
                                                                     : NULL;
        if (bad) {
            cf_error_set(err, CF_ERR_IO, "%s/%s: write failed: %s", r->o->out_dir, bad,
                         strerror(errno));
            fail_run(r, err);
            return CF_ERR_IO;
        }
        pthread_mutex_lock(&r->mu);
        s->ready = 0;
        r->next_write++;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        if (r->o->progress) {
            uint64_t done = (k + 1) * CHUNK_DEVICES;
            r->o->progress(r->o->progress_arg, done < r->o->devices ? done : r->o->devices,
                           r->o->devices);
        }
    }
    return CF_OK;
}

static int default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 64 ? 64 : (int)n;
}

cf_err cf_manifest_make(const cf_manifest_make_opts *o, cf_manifest_make_stats *stats,
                        cf_error *err)
{
    const char *org = o->manufacturer ? o->manufacturer : DEFAULT_MANUFACTURER;
    const char *dir = o->out_dir;
    int64_t t0 = cf_time_now_us();
    pki p = {0};
    run r = {0};
    worker *ws = NULL;
    FILE *manifest = NULL, *keys = NULL, *csv = NULL;
    int nthreads = o->threads > 0 ? o->threads : default_threads(), started = 0;
    cf_err rc;

    if ((rc = check_opts(o, org, err)) != CF_OK)
        return rc;
    r.o = o;
    r.org = org;
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    if ((rc = cf_fs_mkdirs(dir, 0755, err)) != CF_OK)
        goto out;
    /* Created first, exclusively: a directory that already holds a manifest is refused
     * before any key is made. */
    if (!(manifest = open_new(dir, "manifest.json", 0644, err))) {
        rc = err ? err->code : CF_ERR_IO;
        if (rc == CF_ERR_EXISTS)
            cf_error_set(err, rc, "%s already holds a manifest: choose a new directory", dir);
        goto out;
    }
    if (!(keys = open_new(dir, "device-keys.pem", 0600, err)) ||
        !(csv = open_new(dir, "claim-codes.csv", 0600, err))) {
        rc = err ? err->code : CF_ERR_IO;
        goto out;
    }
    snprintf(r.keys_dir, sizeof r.keys_dir, "%s/keys", dir);
    snprintf(r.certs_dir, sizeof r.certs_dir, "%s/certs", dir);
    if (o->key_files && ((rc = cf_fs_mkdirs(r.keys_dir, 0700, err)) != CF_OK ||
                         (rc = cf_fs_mkdirs(r.certs_dir, 0755, err)) != CF_OK))
        goto out;

    int64_t now = o->now ? o->now : (int64_t)time(NULL);
    int64_t nb = now - now % 3600; /* whole hours, as the chip makers' certificates start */
    if ((rc = make_pki(o, org, nb, &p, err)) != CF_OK ||
        (rc = write_cert_and_key(dir, "root", p.root, p.root_key, err)) != CF_OK ||
        (rc = write_cert_and_key(dir, "batch-ca", p.batch, p.batch_key, err)) != CF_OK ||
        (rc = write_cert_and_key(dir, "manifest-signer", p.signer, p.signer_key, err)) != CF_OK)
        goto out;

    int64_t batch_na = cf_x509_not_after(p.batch);
    int64_t dev_na =
        nb + (o->device_days > 0 ? (int64_t)o->device_days * 86400 : 28 * YEAR_SECONDS);
    unsigned char *der = NULL, uid_base[8];
    size_t derlen = 0;
    r.batch = p.batch;
    r.batch_key = p.batch_key;
    r.signer_key = p.signer_key;
    r.dev_nb = ASN1_TIME_set(NULL, (time_t)nb);
    r.dev_na = ASN1_TIME_set(NULL, (time_t)(dev_na < batch_na ? dev_na : batch_na));
    if (!r.dev_nb || !r.dev_na) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot encode validity");
        goto out;
    }
    if ((rc = make_protected(p.signer, r.protected_b64, sizeof r.protected_b64, err)) != CF_OK ||
        (rc = make_prefix(o, org, &r.prefix, err)) != CF_OK ||
        (rc = cf_random_bytes(uid_base, sizeof uid_base, err)) != CF_OK ||
        (rc = cf_x509_to_der(p.batch, &der, &derlen, err)) != CF_OK)
        goto out;
    for (int i = 0; i < 8; i++)
        r.uid_base = r.uid_base << 8 | uid_base[i];
    r.batch_b64 = malloc(B64_LEN(derlen));
    r.batch_pem = malloc(PEM_LEN(derlen));
    if (!r.batch_b64 || !r.batch_pem) {
        OPENSSL_free(der);
        rc = cf_error_set(err, CF_ERR_NOMEM, "out of memory");
        goto out;
    }
    EVP_EncodeBlock((unsigned char *)r.batch_b64, der, (int)derlen);
    cert_pem(der, derlen, r.batch_pem);
    OPENSSL_free(der);

    r.nchunks = (o->devices + CHUNK_DEVICES - 1) / CHUNK_DEVICES;
    r.nslots = (uint64_t)nthreads * SLOTS_PER_WORKER;
    r.slots = calloc(r.nslots, sizeof *r.slots);
    ws = calloc((size_t)nthreads, sizeof *ws);
    if (!r.slots || !ws) {
        rc = cf_error_set(err, CF_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < nthreads; i++)
        if ((rc = worker_init(&ws[i], &r, err)) != CF_OK)
            goto out;

    fputs("[\n", manifest);
    fputs("unique_id,claim_code\n", csv);
    for (; started < nthreads; started++)
        if (pthread_create(&ws[started].thread, NULL, worker_main, &ws[started]) != 0) {
            cf_error_set(err, CF_ERR_INTERNAL, "cannot start a worker thread");
            fail_run(&r, err);
            break;
        }
    rc = started == nthreads ? write_chunks(&r, manifest, keys, csv, err) : CF_ERR_INTERNAL;
    for (int i = 0; i < started; i++)
        pthread_join(ws[i].thread, NULL);
    if (r.failed) { /* the first error, whichever thread met it */
        if (err)
            *err = r.ferr;
        rc = r.ferr.code != CF_OK ? r.ferr.code : CF_ERR_INTERNAL;
        goto out;
    }
    fputs("\n]", manifest);
    FILE *f = manifest;
    manifest = NULL;
    if ((rc = close_file(f, dir, "manifest.json", err)) != CF_OK)
        goto out;
    f = keys;
    keys = NULL;
    if ((rc = close_file(f, dir, "device-keys.pem", err)) != CF_OK)
        goto out;
    f = csv;
    csv = NULL;
    if ((rc = close_file(f, dir, "claim-codes.csv", err)) != CF_OK)
        goto out;
    if (stats) {
        stats->devices = o->devices;
        stats->seconds = (double)(cf_time_now_us() - t0) / 1e6;
        stats->threads = nthreads;
    }
    rc = CF_OK;
out:
    if (manifest)
        fclose(manifest);
    if (keys)
        fclose(keys);
    if (csv)
        fclose(csv);
    for (int i = 0; ws && i < nthreads; i++)
        worker_clear(&ws[i]);
    free(ws);
    for (uint64_t i = 0; r.slots && i < r.nslots; i++) {
        if (r.slots[i].keys.p)
            OPENSSL_cleanse(r.slots[i].keys.p, r.slots[i].keys.cap);
        free(r.slots[i].manifest.p);
        free(r.slots[i].keys.p);
        free(r.slots[i].csv.p);
    }
    free(r.slots);
    free(r.prefix);
    free(r.batch_b64);
    free(r.batch_pem);
    ASN1_TIME_free(r.dev_nb);
    ASN1_TIME_free(r.dev_na);
    pki_clear(&p);
    pthread_mutex_destroy(&r.mu);
    pthread_cond_destroy(&r.cv);
    return rc;
}
