#include "pki/jose.h"

#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Decoding tables: value + 1 for each character of the alphabet, 0 for any other byte. */
/* clang-format off */
static const unsigned char b64url_values[256] = {
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0, 63,  0,  0,
    53, 54, 55, 56, 57, 58, 59, 60, 61, 62,  0,  0,  0,  0,  0,  0,
     0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14, 15,
    16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26,  0,  0,  0,  0, 64,
     0, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41,
    42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52,  0,  0,  0,  0,  0,
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
};
static const unsigned char b64_values[256] = {
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0, 63,  0,  0,  0, 64,
    53, 54, 55, 56, 57, 58, 59, 60, 61, 62,  0,  0,  0,  0,  0,  0,
     0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14, 15,
    16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26,  0,  0,  0,  0,  0,
     0, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41,
    42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52,  0,  0,  0,  0,  0,
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
};
/* clang-format on */

/* The common decoder: inlen characters of alphabet without padding (the caller has removed
 * and checked any '='). */
static cf_err b64_decode_core(const unsigned char values[256], const char *what, const char *in,
                              size_t inlen, unsigned char **out, size_t *outlen, cf_error *err)
{
    if (inlen % 4 == 1)
        return cf_error_set(err, CF_ERR_INVALID, "invalid %s: length %zu is impossible", what,
                            inlen);
    size_t n = inlen / 4 * 3 + (inlen % 4 ? inlen % 4 - 1 : 0);
    unsigned char *buf = malloc(n + 1);
    if (!buf)
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory decoding %s", what);
    uint32_t acc = 0;
    size_t o = 0, i = 0;
    /* Whole groups of four valid characters first (nearly all of a manifest's bytes); the
     * loop below takes the rest, and explains the first invalid character. */
    for (; i + 4 <= inlen; i += 4) {
        unsigned a = values[(unsigned char)in[i]], b = values[(unsigned char)in[i + 1]],
                 c = values[(unsigned char)in[i + 2]], d = values[(unsigned char)in[i + 3]];
        if (!a || !b || !c || !d)
            break;
        uint32_t v = (a - 1) << 18 | (b - 1) << 12 | (c - 1) << 6 | (d - 1);
        buf[o++] = (unsigned char)(v >> 16);
        buf[o++] = (unsigned char)(v >> 8);
        buf[o++] = (unsigned char)v;
    }
    for (; i < inlen; i++) {
        int v = values[(unsigned char)in[i]] - 1;
        if (v < 0) {
            free(buf);
            return cf_error_set(err, CF_ERR_INVALID,
                                "invalid %s: character %zu (0x%02x) is not in the alphabet", what,
                                i, (unsigned char)in[i]);
        }
        acc = (acc << 6) | (uint32_t)v;
        if (i % 4 == 3) {
            buf[o++] = (unsigned char)(acc >> 16);
            buf[o++] = (unsigned char)(acc >> 8);
            buf[o++] = (unsigned char)acc;
            acc = 0;
        }
    }
    /* A partial last group: 2 characters carry 1 byte (4 spare bits), 3 carry 2 (2 spare);
     * the spare bits must be zero so the encoding is canonical (RFC 4648 §3.5). */
    size_t rest = inlen % 4;
    if (rest == 2) {
        if (acc & 0xf)
            goto noncanonical;
        buf[o++] = (unsigned char)(acc >> 4);
    } else if (rest == 3) {
        if (acc & 0x3)
            goto noncanonical;
        buf[o++] = (unsigned char)(acc >> 10);
        buf[o++] = (unsigned char)(acc >> 2);
    }
    buf[o] = '\0';
    *out = buf;
    *outlen = o;
    return CF_OK;
noncanonical:
    free(buf);
    return cf_error_set(err, CF_ERR_INVALID, "invalid %s: non-zero bits after the last byte", what);
}

cf_err cf_b64url_decode(const char *in, size_t inlen, unsigned char **out, size_t *outlen,
                        cf_error *err)
{
    return b64_decode_core(b64url_values, "base64url", in, inlen, out, outlen, err);
}

cf_err cf_b64_decode(const char *in, size_t inlen, unsigned char **out, size_t *outlen,
                     cf_error *err)
{
    if (inlen % 4 != 0)
        return cf_error_set(err, CF_ERR_INVALID,
                            "invalid base64: length %zu is not a multiple of 4", inlen);
    size_t pad = 0;
    while (pad < 2 && pad < inlen && in[inlen - 1 - pad] == '=')
        pad++;
    return b64_decode_core(b64_values, "base64", in, inlen - pad, out, outlen, err);
}

char *cf_b64url_encode(const unsigned char *data, size_t len, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        out[o++] = b64url_alphabet[v >> 18];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
        out[o++] = b64url_alphabet[(v >> 6) & 63];
        out[o++] = b64url_alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)data[i] << 16;
        out[o++] = b64url_alphabet[v >> 18];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8;
        out[o++] = b64url_alphabet[v >> 18];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
        out[o++] = b64url_alphabet[(v >> 6) & 63];
    }
    out[o] = '\0';
    return out;
}

cf_err cf_jose_x5t_s256(X509 *cert, char out[CF_JOSE_X5T_MAX], cf_error *err)
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (!X509_digest(cert, EVP_sha256(), md, &mdlen) || mdlen != sizeof md)
        return cf_error_openssl(err, CF_ERR_CRYPTO, "cannot hash certificate");
    cf_b64url_encode(md, sizeof md, out);
    return CF_OK;
}

const char *cf_jose_ec_crv(EVP_PKEY *key)
{
    char group[64] = "";
    size_t glen = 0;
    if (EVP_PKEY_get_base_id(key) != EVP_PKEY_EC ||
        !EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                        &glen))
        return NULL;
    if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0)
        return "P-256";
    if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0)
        return "P-384";
    return NULL;
}

cf_err cf_jws_verify_es256(EVP_PKEY *pub, const cf_ec_fixed *fixed, const char *protected_b64,
                           size_t protected_len, const char *payload_b64, size_t payload_len,
                           const unsigned char *sig, size_t sig_len, cf_error *err)
{
    cf_err rc = CF_ERR_CRYPTO;
    ECDSA_SIG *es = NULL;
    BIGNUM *r = NULL, *s = NULL;
    unsigned char *der = NULL, md[32];
    EVP_MD_CTX *mdctx = NULL;
    EVP_PKEY_CTX *pctx = NULL;

    if (sig_len != 64)
        return cf_error_set(err, CF_ERR_INVALID,
                            "ES256 signature is %zu bytes (64 bytes of r||s expected)", sig_len);
    /* Hashing here and verifying the digest is the same ES256 check as EVP_DigestVerify, but
     * OpenSSL 3.0 spends half as long again as the verification itself setting up a
     * DigestVerify context for every signature. */
    mdctx = EVP_MD_CTX_new();
    if (!mdctx || EVP_DigestInit_ex(mdctx, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(mdctx, protected_b64, protected_len) != 1 ||
        EVP_DigestUpdate(mdctx, ".", 1) != 1 ||
        EVP_DigestUpdate(mdctx, payload_b64, payload_len) != 1 ||
        EVP_DigestFinal_ex(mdctx, md, NULL) != 1) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot hash the JWS signing input");
        goto out;
    }
    if (fixed && cf_ec_fixed_verify(fixed, md, sig)) {
        rc = CF_OK;
        goto out;
    }
    const char *crv = cf_jose_ec_crv(pub);
    if (!crv || strcmp(crv, "P-256") != 0) {
        rc = cf_error_set(err, CF_ERR_INVALID, "ES256 needs an EC P-256 signer key");
        goto out;
    }
    /* JWS carries r||s (RFC 7518 §3.4); OpenSSL verifies the DER ECDSA-Sig-Value. */
    es = ECDSA_SIG_new();
    r = BN_bin2bn(sig, 32, NULL);
    s = BN_bin2bn(sig + 32, 32, NULL);
    if (!es || !r || !s || !ECDSA_SIG_set0(es, r, s)) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot build ECDSA signature");
        goto out;
    }
    r = s = NULL; /* owned by es now */
    int derlen = i2d_ECDSA_SIG(es, &der);
    if (derlen <= 0) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot encode ECDSA signature");
        goto out;
    }
    if (!(pctx = EVP_PKEY_CTX_new(pub, NULL)) || EVP_PKEY_verify_init(pctx) != 1) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot start signature verification");
        goto out;
    }
    if (EVP_PKEY_verify(pctx, der, (size_t)derlen, md, sizeof md) != 1) {
        ERR_clear_error();
        rc = cf_error_set(err, CF_ERR_TAMPERED, "JWS signature does not verify");
        goto out;
    }
    rc = CF_OK;
out:
    EVP_PKEY_CTX_free(pctx);
    EVP_MD_CTX_free(mdctx);
    OPENSSL_free(der);
    ECDSA_SIG_free(es);
    BN_free(r);
    BN_free(s);
    return rc;
}

/* Decodes the base64url coordinate member name of jwk into exactly size bytes at out. */
static cf_err jwk_coordinate(const json_t *jwk, const char *name, unsigned char *out, size_t size,
                             cf_error *err)
{
    const json_t *v = json_object_get(jwk, name);
    if (!json_is_string(v))
        return cf_error_set(err, CF_ERR_INVALID, "JWK \"%s\" is missing or not a string", name);
    unsigned char *raw = NULL;
    size_t rawlen = 0;
    if (cf_b64url_decode(json_string_value(v), json_string_length(v), &raw, &rawlen, err) != CF_OK)
        return cf_error_prefix(err, "JWK \"%s\"", name);
    if (rawlen != size) {
        free(raw);
        return cf_error_set(err, CF_ERR_INVALID, "JWK \"%s\" is %zu bytes (%zu expected)", name,
                            rawlen, size);
    }
    memcpy(out, raw, size);
    free(raw);
    return CF_OK;
}

cf_err cf_jwk_ec_point(const json_t *jwk, int *curve_nid, unsigned char point[CF_JWK_POINT_MAX],
                       size_t *point_len, cf_error *err)
{
    cf_err rc;
    if (!json_is_object(jwk))
        return cf_error_set(err, CF_ERR_INVALID, "JWK is not a JSON object");
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    const char *crv = json_string_value(json_object_get(jwk, "crv"));
    if (!kty)
        return cf_error_set(err, CF_ERR_INVALID, "JWK \"kty\" is missing or not a string");
    if (strcmp(kty, "EC") != 0)
        return cf_error_set(err, CF_ERR_POLICY, "JWK \"kty\" is not \"EC\" (key type not allowed)");
    if (!crv)
        return cf_error_set(err, CF_ERR_INVALID, "JWK \"crv\" is missing or not a string");
    size_t size;
    if (strcmp(crv, "P-256") == 0) {
        size = 32;
        *curve_nid = NID_X9_62_prime256v1;
    } else if (strcmp(crv, "P-384") == 0) {
        size = 48;
        *curve_nid = NID_secp384r1;
    } else {
        return cf_error_set(err, CF_ERR_POLICY,
                            "JWK \"crv\" is not P-256 or P-384 (curve not allowed)");
    }
    point[0] = 0x04; /* SEC 1 uncompressed point */
    if ((rc = jwk_coordinate(jwk, "x", point + 1, size, err)) != CF_OK ||
        (rc = jwk_coordinate(jwk, "y", point + 1 + size, size, err)) != CF_OK)
        return rc;
    *point_len = 1 + 2 * size;
    return CF_OK;
}

cf_err cf_jwk_ec_import(const json_t *jwk, EVP_PKEY **out, cf_error *err)
{
    unsigned char point[CF_JWK_POINT_MAX];
    size_t point_len = 0;
    int nid = NID_undef;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *key = NULL;

    cf_err rc = cf_jwk_ec_point(jwk, &nid, point, &point_len, err);
    if (rc != CF_OK)
        return rc;
    const char *crv = nid == NID_secp384r1 ? "P-384" : "P-256";
    rc = CF_ERR_CRYPTO;
    bld = OSSL_PARAM_BLD_new();
    if (!bld ||
        !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, OBJ_nid2sn(nid), 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, point_len) ||
        !(params = OSSL_PARAM_BLD_to_param(bld))) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot build JWK key parameters");
        goto out;
    }
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (!ctx || EVP_PKEY_fromdata_init(ctx) != 1) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot import JWK key");
        goto out;
    }
    /* Decoding the point checks that it lies on the curve. */
    if (EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) != 1) {
        rc = cf_error_openssl(err, CF_ERR_INVALID, "JWK x/y is not a point on %s", crv);
        goto out;
    }
    *out = key;
    rc = CF_OK;
out:
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    return rc;
}

cf_err cf_jose_ec_spki_sha256(int curve_nid, const unsigned char *point, size_t point_len,
                              unsigned char out[32], cf_error *err)
{
    cf_err rc = CF_OK;
    unsigned char *der = NULL;
    X509_PUBKEY *pk = X509_PUBKEY_new();
    /* OBJ_nid2obj gives OpenSSL's static objects: set0 takes them without a copy. */
    ASN1_OBJECT *alg = OBJ_nid2obj(NID_X9_62_id_ecPublicKey), *curve = OBJ_nid2obj(curve_nid);
    unsigned char *bits =
        point_len > 0 && point_len <= INT32_MAX ? OPENSSL_memdup(point, point_len) : NULL;
    if (!pk || !alg || !curve || !bits ||
        !X509_PUBKEY_set0_param(pk, alg, V_ASN1_OBJECT, curve, bits, (int)point_len)) {
        OPENSSL_free(bits);
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot encode public key");
        goto out;
    }
    int n = i2d_X509_PUBKEY(pk, &der);
    if (n <= 0 || EVP_Digest(der, (size_t)n, out, NULL, EVP_sha256(), NULL) != 1)
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot hash public key");
out:
    OPENSSL_free(der);
    X509_PUBKEY_free(pk);
    return rc;
}
