#include "pki/key.h"

#include <openssl/core_names.h>
#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fs.h"
#include "core/util.h"

static const char *const type_names[] = {"p256", "p384", "rsa3072", "ed25519"};

int cf_key_type_parse(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, type_names[i]) == 0)
            return i;
    return -1;
}

const char *cf_key_type_name(cf_key_type type)
{
    return type_names[type];
}

cf_err cf_key_generate(cf_key_type type, EVP_PKEY **out, cf_error *err)
{
    EVP_PKEY *k = NULL;
    switch (type) {
    case CF_KEY_P256:
        k = EVP_EC_gen("P-256");
        break;
    case CF_KEY_P384:
        k = EVP_EC_gen("P-384");
        break;
    case CF_KEY_RSA3072:
        k = EVP_RSA_gen(3072);
        break;
    case CF_KEY_ED25519:
        k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
        break;
    }
    if (!k)
        return cf_error_openssl(err, CF_ERR_CRYPTO, "cannot generate a %s key",
                                cf_key_type_name(type));
    *out = k;
    return CF_OK;
}

cf_err cf_key_to_pem(EVP_PKEY *key, char **pem, size_t *len, cf_error *err)
{
    BIO *b = BIO_new(BIO_s_mem());
    cf_err rc = CF_OK;
    if (!b || !PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL)) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot encode private key");
        goto out;
    }
    char *data;
    long n = BIO_get_mem_data(b, &data);
    *pem = malloc((size_t)n + 1);
    if (!*pem) {
        rc = cf_error_set(err, CF_ERR_NOMEM, "out of memory");
        goto out;
    }
    memcpy(*pem, data, (size_t)n);
    (*pem)[n] = '\0';
    *len = (size_t)n;
out:
    BIO_free(b);
    return rc;
}

int cf_key_ref_is_pkcs11(const char *ref)
{
    return strncmp(ref, "pkcs11:", 7) == 0;
}

/* ---- pkcs11 URIs (RFC 7512) ----
 *
 * certfleet reads the attributes it handles itself (module-path, pin-value, pin-source) and
 * hands libp11 only the path attributes without pin-value: libp11 0.4.12 refuses query
 * attributes it does not know and prints the URI it was given when a load fails. */

typedef struct {
    char engine_uri[CF_KEY_REF_MAX]; /* "pkcs11:" + path attributes except pin-value */
    char stored[CF_KEY_REF_MAX];     /* the whole URI except pin-value */
    char module[1024];               /* module-path, decoded; "" when absent */
    char pin_source[1024];           /* pin-source, decoded; "" when absent */
    char pin[256];                   /* pin-value, decoded; "" when absent */
} p11_uri;

/* Percent-decodes value[0..len) into out; 0 when malformed or too long. */
static int pct_decode(const char *value, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = value[i];
        if (c == '%') {
            int hi = i + 2 < len ? cf_hex_digit(value[i + 1]) : -1;
            int lo = i + 2 < len ? cf_hex_digit(value[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return 0;
            c = (char)(hi << 4 | lo);
            i += 2;
        }
        if (c == '\0' || o + 1 >= cap)
            return 0;
        out[o++] = c;
    }
    out[o] = '\0';
    return 1;
}

/* Appends sep (unless dst is at its start mark) and the component to dst. */
static int append_comp(char *dst, size_t start, char sep, const char *comp, size_t len)
{
    size_t n = strlen(dst);
    size_t need = len + (n > start ? 1 : 0);
    if (n + need + 1 > CF_KEY_REF_MAX)
        return 0;
    if (n > start)
        dst[n++] = sep;
    memcpy(dst + n, comp, len);
    dst[n + len] = '\0';
    return 1;
}

/* Splits uri into p. Messages never quote the pin-value. */
static cf_err uri_parse(const char *uri, p11_uri *p, cf_error *err)
{
    memset(p, 0, sizeof *p);
    if (!cf_key_ref_is_pkcs11(uri))
        return cf_error_set(err, CF_ERR_INVALID, "PKCS#11: not a pkcs11: URI");
    if (strlen(uri) >= CF_KEY_REF_MAX)
        return cf_error_set(err, CF_ERR_INVALID, "PKCS#11: URI longer than %d bytes",
                            CF_KEY_REF_MAX - 1);
    strcpy(p->engine_uri, "pkcs11:");
    strcpy(p->stored, "pkcs11:");
    size_t query_mark = 0; /* where the stored query starts, once there is one */
    int in_query = 0;
    const char *c = uri + 7;
    while (*c) {
        size_t len = strcspn(c, in_query ? "&" : ";?");
        const char *eq = memchr(c, '=', len);
        if (len > 0) {
            if (!eq)
                /* Not quoted: a stray component might be a PIN typed without its name. */
                return cf_error_set(err, CF_ERR_INVALID,
                                    "PKCS#11: the URI has a component that is not NAME=VALUE");
            size_t nlen = (size_t)(eq - c);
            const char *v = eq + 1;
            size_t vlen = len - nlen - 1;
            int ok = 1;
            if (nlen == 9 && strncmp(c, "pin-value", 9) == 0) {
                if (!pct_decode(v, vlen, p->pin, sizeof p->pin))
                    return cf_error_set(err, CF_ERR_INVALID,
                                        "PKCS#11: the URI's pin-value is malformed or too long");
            } else if (in_query) {
                if (nlen == 11 && strncmp(c, "module-path", 11) == 0)
                    ok = pct_decode(v, vlen, p->module, sizeof p->module);
                else if (nlen == 10 && strncmp(c, "pin-source", 10) == 0)
                    ok = pct_decode(v, vlen, p->pin_source, sizeof p->pin_source);
                if (!ok)
                    return cf_error_set(err, CF_ERR_INVALID,
                                        "PKCS#11: URI attribute %.*s is"
                                        " malformed or too long",
                                        (int)nlen, c);
                if (!query_mark) {
                    size_t n = strlen(p->stored);
                    p->stored[n] = '?';
                    p->stored[n + 1] = '\0';
                    query_mark = n + 1;
                }
                append_comp(p->stored, query_mark, '&', c, len);
            } else {
                append_comp(p->engine_uri, 7, ';', c, len);
                append_comp(p->stored, 7, ';', c, len);
            }
        }
        c += len;
        if (*c == '?') /* in the query, a '?' is part of a value (RFC 7512 pk11-qchar) */
            in_query = 1;
        if (*c)
            c++;
    }
    if (strlen(p->engine_uri) == 7)
        return cf_error_set(err, CF_ERR_INVALID,
                            "PKCS#11: the URI names no object (give at least object= or id=)");
    return CF_OK;
}

cf_err cf_key_ref_without_pin(const char *ref, char out[CF_KEY_REF_MAX], cf_error *err)
{
    if (!cf_key_ref_is_pkcs11(ref)) {
        if (strlen(ref) >= CF_KEY_REF_MAX)
            return cf_error_set(err, CF_ERR_INVALID, "key reference too long");
        snprintf(out, CF_KEY_REF_MAX, "%s", ref);
        return CF_OK;
    }
    p11_uri *p = malloc(sizeof *p);
    if (!p)
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    cf_err rc = uri_parse(ref, p, err);
    if (rc == CF_OK)
        memcpy(out, p->stored, CF_KEY_REF_MAX);
    OPENSSL_cleanse(p, sizeof *p);
    free(p);
    return rc;
}

/* Fills p->pin from pin-source or the environment when the URI had no pin-value. */
static cf_err pin_resolve(p11_uri *p, cf_error *err)
{
    if (p->pin[0])
        return CF_OK;
    if (p->pin_source[0]) {
        const char *path = p->pin_source;
        if (strncmp(path, "file://", 7) == 0)
            path += 7;
        else if (strncmp(path, "file:", 5) == 0)
            path += 5;
        if (path[0] != '/')
            return cf_error_set(err, CF_ERR_INVALID,
                                "PKCS#11: pin-source %s: expected an absolute file name",
                                p->pin_source);
        char *data = NULL;
        size_t len = 0;
        cf_err rc = cf_fs_read_file(path, 4096, &data, &len, err);
        if (rc != CF_OK)
            return cf_error_prefix(err, "PKCS#11: pin-source");
        size_t line = strcspn(data, "\r\n");
        if (line == 0 || line >= sizeof p->pin)
            rc = cf_error_set(err, CF_ERR_INVALID,
                              "PKCS#11: pin-source %s: the first line must hold the PIN", path);
        else
            memcpy(p->pin, data, line);
        OPENSSL_cleanse(data, len);
        free(data);
        return rc;
    }
    const char *env = getenv("CERTFLEET_PKCS11_PIN");
    if (env && *env) {
        if (strlen(env) >= sizeof p->pin)
            return cf_error_set(err, CF_ERR_INVALID, "PKCS#11: $CERTFLEET_PKCS11_PIN is too long");
        snprintf(p->pin, sizeof p->pin, "%s", env);
        return CF_OK;
    }
    return cf_error_set(err, CF_ERR_INVALID,
                        "PKCS#11: no PIN for %s: set CERTFLEET_PKCS11_PIN or add"
                        " pin-source=FILE to the URI",
                        p->stored);
}

/* ---- PKCS#11 through libp11's engine, loaded once per process ----
 *
 * OpenSSL 3 marks the ENGINE API deprecated, but libp11's engine is what Debian 12 ships
 * for PKCS#11 (its provider arrived later), so this section opts out of the warning. */

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

static pthread_mutex_t engine_lock = PTHREAD_MUTEX_INITIALIZER;
static ENGINE *engine;
static char engine_module[1024];

/* Called with engine_lock held. */
static cf_err engine_get(const p11_uri *p, ENGINE **out, cf_error *err)
{
    char module[1024];
    if (p->module[0]) {
        snprintf(module, sizeof module, "%s", p->module);
    } else {
        const char *env = getenv("CERTFLEET_PKCS11_MODULE");
        snprintf(module, sizeof module, "%s", env && *env ? env : "p11-kit-proxy.so");
    }
    *out = NULL;
    if (engine) {
        if (strcmp(module, engine_module) != 0)
            return cf_error_set(err, CF_ERR_INVALID,
                                "PKCS#11: one module per process (have %s, asked for %s)",
                                engine_module, module);
        *out = engine;
        return CF_OK;
    }
    ENGINE_load_builtin_engines();
    ENGINE *e = ENGINE_by_id("pkcs11");
    if (!e)
        return cf_error_openssl(err, CF_ERR_UNAVAILABLE,
                                "PKCS#11: the pkcs11 engine (libp11) is not installed");
    /* QUIET: libp11 would print its diagnostics on stderr; they reach the caller through
     * the OpenSSL error queue instead. */
    if (!ENGINE_ctrl_cmd_string(e, "MODULE_PATH", module, 0) ||
        !ENGINE_ctrl_cmd_string(e, "QUIET", NULL, 0) || !ENGINE_init(e)) {
        ENGINE_free(e);
        return cf_error_openssl(err, CF_ERR_UNAVAILABLE, "PKCS#11: cannot load module %s", module);
    }
    ENGINE_free(e); /* ENGINE_init holds its own (functional) reference */
    engine = e;
    snprintf(engine_module, sizeof engine_module, "%s", module);
    *out = engine;
    return CF_OK;
}

/* The oldest error in the queue is libp11's or the module's own reason ("PIN incorrect",
 * "object not found"); the newer ones only say that loading failed. */
static const char *first_error_reason(void)
{
    const char *r = ERR_reason_error_string(ERR_peek_error());
    return r ? r : "unknown reason";
}

static cf_err load_pkcs11(const char *uri, EVP_PKEY **out, cf_error *err)
{
    p11_uri *p = malloc(sizeof *p);
    if (!p)
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    ENGINE *e;
    EVP_PKEY *k = NULL;
    cf_err rc = uri_parse(uri, p, err);
    if (rc == CF_OK)
        rc = pin_resolve(p, err);
    if (rc != CF_OK)
        goto out;
    pthread_mutex_lock(&engine_lock);
    rc = engine_get(p, &e, err);
    if (rc == CF_OK) {
        ERR_clear_error();
        if (!ENGINE_ctrl_cmd_string(e, "PIN", p->pin, 0))
            rc = cf_error_openssl(err, CF_ERR_CRYPTO, "PKCS#11: the engine refused the PIN");
    }
    if (rc == CF_OK) {
        k = ENGINE_load_private_key(e, p->engine_uri, NULL, NULL);
        if (!k) {
            rc = cf_error_set(err, CF_ERR_NOT_FOUND, "PKCS#11: cannot use the private key %s: %s",
                              p->stored, first_error_reason());
            ERR_clear_error();
        }
    }
    pthread_mutex_unlock(&engine_lock);
    if (rc == CF_OK)
        *out = k;
out:
    OPENSSL_cleanse(p, sizeof *p);
    free(p);
    return rc;
}

#pragma GCC diagnostic pop

/* Key files are kept unencrypted, protected by their mode. Without a callback OpenSSL would
 * prompt for the pass phrase of an encrypted one on the terminal and block the process (a
 * server too): refuse instead, and remember why. */
static int refuse_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    *(int *)u = 1;
    return -1;
}

cf_err cf_key_load(const char *ref, const char *keydir, EVP_PKEY **out, cf_error *err)
{
    if (cf_key_ref_is_pkcs11(ref))
        return load_pkcs11(ref, out, err);
    char path[4096];
    if (strchr(ref, '/') || !keydir)
        snprintf(path, sizeof path, "%s", ref);
    else
        snprintf(path, sizeof path, "%s/%s", keydir, ref);
    FILE *f = fopen(path, "r");
    if (!f)
        return cf_error_set(err, CF_ERR_IO, "key %s: cannot open", path);
    int encrypted = 0;
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, refuse_passphrase, &encrypted);
    fclose(f);
    if (!k && encrypted)
        return cf_error_openssl(err, CF_ERR_INVALID,
                                "key %s: encrypted with a pass phrase, which certfleet does not"
                                " support (keep it unencrypted with mode 0600, or in a token)",
                                path);
    if (!k)
        return cf_error_openssl(err, CF_ERR_INVALID, "key %s: not a PEM private key", path);
    *out = k;
    return CF_OK;
}

cf_err cf_key_check_policy(EVP_PKEY *key, char *desc, size_t desc_len, cf_error *err)
{
    int id = EVP_PKEY_get_base_id(key);
    if (id == EVP_PKEY_RSA) {
        int bits = EVP_PKEY_get_bits(key);
        snprintf(desc, desc_len, "RSA %d", bits);
        if (bits < 2048)
            return cf_error_set(err, CF_ERR_POLICY,
                                "key is RSA %d bits: too weak (at least 2048 required)", bits);
        return CF_OK;
    }
    if (id == EVP_PKEY_EC) {
        char group[64] = "";
        size_t glen = 0;
        int explicit = 0;
        /* OpenSSL 3.0 names the curve of explicit parameters that match a named one; such
         * keys stay refused (RFC 5480 2.1.1: namedCurve only), as every verifier would. */
        if (!EVP_PKEY_get_int_param(key, OSSL_PKEY_PARAM_EC_DECODED_FROM_EXPLICIT_PARAMS,
                                    &explicit))
            explicit = 0;
        if (explicit || !EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group,
                                                        sizeof group, &glen))
            return cf_error_set(err, CF_ERR_POLICY,
                                "EC key has explicit or unknown curve parameters"
                                " (only named P-256 and P-384 are allowed)");
        if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0) {
            snprintf(desc, desc_len, "EC P-256");
            return CF_OK;
        }
        if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0) {
            snprintf(desc, desc_len, "EC P-384");
            return CF_OK;
        }
        snprintf(desc, desc_len, "EC %s", group);
        return cf_error_set(err, CF_ERR_POLICY,
                            "EC key on curve %s is not allowed (P-256 or P-384 required)", group);
    }
    if (id == EVP_PKEY_ED25519) {
        snprintf(desc, desc_len, "Ed25519");
        return CF_OK;
    }
    const char *name = OBJ_nid2sn(id);
    snprintf(desc, desc_len, "%s", name ? name : "unknown");
    return cf_error_set(err, CF_ERR_POLICY,
                        "key type %s is not allowed (RSA >= 2048, EC P-256/P-384 or Ed25519)",
                        name && id != NID_undef ? name : "unknown");
}

const EVP_MD *cf_key_digest(EVP_PKEY *key)
{
    int id = EVP_PKEY_get_base_id(key);
    if (id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448)
        return NULL;
    if (id == EVP_PKEY_EC && EVP_PKEY_get_bits(key) > 256)
        return EVP_sha384();
    return EVP_sha256();
}
