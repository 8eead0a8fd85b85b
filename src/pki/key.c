#include "pki/key.h"

#include <openssl/core_names.h>
#include <openssl/engine.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    case CF_KEY_P256: k = EVP_EC_gen("P-256"); break;
    case CF_KEY_P384: k = EVP_EC_gen("P-384"); break;
    case CF_KEY_RSA3072: k = EVP_RSA_gen(3072); break;
    case CF_KEY_ED25519: k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519"); break;
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

/* ---- PKCS#11 through libp11's engine, loaded once per process ----
 *
 * OpenSSL 3 marks the ENGINE API deprecated, but libp11's engine is what Debian 12 ships
 * for PKCS#11 (its provider arrived later), so this section opts out of the warning. */

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

static pthread_mutex_t engine_lock = PTHREAD_MUTEX_INITIALIZER;
static ENGINE *engine;
static char engine_module[1024];

/* The value of attribute name in a pkcs11 URI's path or query, percent-decoding left to
 * libp11 (module paths rarely need it). */
static int uri_attr(const char *uri, const char *name, char *out, size_t cap)
{
    size_t n = strlen(name);
    for (const char *p = uri + 7; *p; p++) {
        if ((p == uri + 7 || p[-1] == ';' || p[-1] == '?' || p[-1] == '&') &&
            strncmp(p, name, n) == 0 && p[n] == '=') {
            size_t len = strcspn(p + n + 1, ";?&");
            if (len >= cap)
                return 0;
            memcpy(out, p + n + 1, len);
            out[len] = '\0';
            return 1;
        }
    }
    return 0;
}

static cf_err engine_get(const char *uri, ENGINE **out, cf_error *err)
{
    char module[1024];
    if (!uri_attr(uri, "module-path", module, sizeof module)) {
        const char *env = getenv("CERTFLEET_PKCS11_MODULE");
        snprintf(module, sizeof module, "%s", env && *env ? env : "p11-kit-proxy.so");
    }
    cf_err rc = CF_OK;
    pthread_mutex_lock(&engine_lock);
    if (engine) {
        if (strcmp(module, engine_module) != 0)
            rc = cf_error_set(err, CF_ERR_INVALID,
                              "PKCS#11: one module per process (have %s, asked for %s)",
                              engine_module, module);
        goto out;
    }
    ENGINE_load_builtin_engines();
    ENGINE *e = ENGINE_by_id("pkcs11");
    if (!e) {
        rc = cf_error_openssl(err, CF_ERR_UNAVAILABLE,
                              "PKCS#11: the pkcs11 engine (libp11) is not installed");
        goto out;
    }
    if (!ENGINE_ctrl_cmd_string(e, "MODULE_PATH", module, 0) || !ENGINE_init(e)) {
        rc = cf_error_openssl(err, CF_ERR_UNAVAILABLE, "PKCS#11: cannot load module %s", module);
        ENGINE_free(e);
        goto out;
    }
    engine = e;
    snprintf(engine_module, sizeof engine_module, "%s", module);
out:
    *out = engine;
    pthread_mutex_unlock(&engine_lock);
    return rc;
}

static cf_err load_pkcs11(const char *uri, EVP_PKEY **out, cf_error *err)
{
    ENGINE *e;
    cf_err rc = engine_get(uri, &e, err);
    if (rc != CF_OK)
        return rc;
    /* The URI may carry pin-value; never echo it in messages. */
    pthread_mutex_lock(&engine_lock);
    EVP_PKEY *k = ENGINE_load_private_key(e, uri, NULL, NULL);
    pthread_mutex_unlock(&engine_lock);
    if (!k)
        return cf_error_openssl(err, CF_ERR_NOT_FOUND,
                                "PKCS#11: no usable private key at the given URI"
                                " (check token, object, id and PIN)");
    *out = k;
    return CF_OK;
}

#pragma GCC diagnostic pop

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
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
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
        if (!EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group,
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
