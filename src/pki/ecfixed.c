/* ecfixed.c - ECDSA P-256 verification with a precomputed table for the public key. */

/* EC_GROUP_precompute_mult is deprecated in OpenSSL 3.0 but still what builds the table
 * that the P-256 code uses for a group's generator; nothing else reaches it. */
#define OPENSSL_SUPPRESS_DEPRECATED

#include "pki/ecfixed.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>
#include <stdlib.h>
#include <string.h>

struct cf_ec_fixed {
    EC_GROUP *g;  /* P-256 with its own generator G (OpenSSL's built-in table) */
    EC_GROUP *gq; /* P-256 with the key Q as generator, and Q's table */
};

void cf_ec_fixed_free(cf_ec_fixed *k)
{
    if (!k)
        return;
    EC_GROUP_free(k->g);
    EC_GROUP_free(k->gq);
    free(k);
}

cf_ec_fixed *cf_ec_fixed_new(EVP_PKEY *key)
{
    char curve[32];
    unsigned char pub[65];
    size_t pub_len = 0;
    if (!key || EVP_PKEY_get_base_id(key) != EVP_PKEY_EC ||
        EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, curve, sizeof curve,
                                       NULL) != 1 ||
        strcmp(curve, SN_X9_62_prime256v1) != 0 ||
        EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, pub, sizeof pub,
                                        &pub_len) != 1) {
        ERR_clear_error();
        return NULL;
    }
    cf_ec_fixed *k = calloc(1, sizeof *k);
    EC_POINT *q = NULL;
    BN_CTX *ctx = BN_CTX_new();
    int ok = k && ctx && (k->g = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1)) &&
             (k->gq = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1)) &&
             (q = EC_POINT_new(k->g)) && EC_POINT_oct2point(k->g, q, pub, pub_len, ctx) == 1 &&
             !EC_POINT_is_at_infinity(k->g, q) && EC_POINT_is_on_curve(k->g, q, ctx) == 1 &&
             EC_GROUP_set_generator(k->gq, q, EC_GROUP_get0_order(k->g),
                                    EC_GROUP_get0_cofactor(k->g)) == 1 &&
             EC_GROUP_precompute_mult(k->gq, ctx) == 1;
    EC_POINT_free(q);
    BN_CTX_free(ctx);
    ERR_clear_error();
    if (!ok) {
        cf_ec_fixed_free(k);
        return NULL;
    }
    return k;
}

/* SEC 1 §4.1.4 for a 256-bit digest and a 256-bit order: with w = s^-1 mod n, the
 * signature is valid when the x coordinate of (e·w)·G + (r·w)·Q, reduced mod n, is r. */
static int verify_rs(const cf_ec_fixed *k, const unsigned char md[32], const BIGNUM *r,
                     const BIGNUM *s)
{
    const BIGNUM *n = EC_GROUP_get0_order(k->g);
    if (BN_is_zero(r) || BN_is_negative(r) || BN_cmp(r, n) >= 0 || BN_is_zero(s) ||
        BN_is_negative(s) || BN_cmp(s, n) >= 0)
        return 0;
    int ok = 0;
    BN_CTX *ctx = BN_CTX_new();
    EC_POINT *p1 = EC_POINT_new(k->g), *p2 = EC_POINT_new(k->gq);
    if (!ctx || !p1 || !p2)
        goto out;
    BN_CTX_start(ctx);
    BIGNUM *e = BN_CTX_get(ctx), *w = BN_CTX_get(ctx), *u1 = BN_CTX_get(ctx), *u2 = BN_CTX_get(ctx),
           *x = BN_CTX_get(ctx);
    ok = x && BN_bin2bn(md, 32, e) && BN_mod_inverse(w, s, n, ctx) &&
         BN_mod_mul(u1, e, w, n, ctx) && BN_mod_mul(u2, r, w, n, ctx) &&
         EC_POINT_mul(k->g, p1, u1, NULL, NULL, ctx) == 1 &&
         EC_POINT_mul(k->gq, p2, u2, NULL, NULL, ctx) == 1 &&
         EC_POINT_add(k->g, p1, p1, p2, ctx) == 1 && !EC_POINT_is_at_infinity(k->g, p1) &&
         EC_POINT_get_affine_coordinates(k->g, p1, x, NULL, ctx) == 1 && BN_nnmod(x, x, n, ctx) &&
         BN_cmp(x, r) == 0;
    BN_CTX_end(ctx);
out:
    EC_POINT_free(p1);
    EC_POINT_free(p2);
    BN_CTX_free(ctx);
    ERR_clear_error();
    return ok;
}

int cf_ec_fixed_verify(const cf_ec_fixed *k, const unsigned char md[32], const unsigned char *rs)
{
    BIGNUM *r = BN_bin2bn(rs, 32, NULL), *s = BN_bin2bn(rs + 32, 32, NULL);
    int ok = r && s && verify_rs(k, md, r, s);
    BN_free(r);
    BN_free(s);
    return ok;
}

int cf_ec_fixed_verify_der(const cf_ec_fixed *k, const unsigned char md[32],
                           const unsigned char *sig, size_t len)
{
    const unsigned char *p = sig;
    unsigned char *re = NULL;
    ECDSA_SIG *es = len <= 256 ? d2i_ECDSA_SIG(NULL, &p, (long)len) : NULL;
    /* DER only, as OpenSSL's own verification demands: the bytes re-encode to themselves. */
    int relen = es && p == sig + len ? i2d_ECDSA_SIG(es, &re) : -1;
    int ok = relen > 0 && (size_t)relen == len && memcmp(re, sig, len) == 0 &&
             verify_rs(k, md, ECDSA_SIG_get0_r(es), ECDSA_SIG_get0_s(es));
    OPENSSL_free(re);
    ECDSA_SIG_free(es);
    ERR_clear_error();
    return ok;
}
