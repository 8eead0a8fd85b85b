/* fuzz_ecfixed.c - ECDSA P-256 verification with a key's table (src/pki/ecfixed.c), which
 * verifies the birth certificates and JWS signatures of manifests from outside.
 *
 * Input: a 32-byte digest, then a DER ECDSA-Sig-Value. The key is fixed (its private
 * scalar is 1..32 below), so seeds can hold signatures that verify. Beyond "no crash, leak
 * or UB": whatever the table accepts, OpenSSL's own verification accepts too, for the DER
 * form and for the r||s form of the same signature.
 * Seeds: corpus/fuzz_ecfixed/ (digests signed with that key by python3-cryptography, and
 * a few malformed ones). */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "pki/ecfixed.h"

static EVP_PKEY *key;
static cf_ec_fixed *table;

/* The P-256 key whose private scalar is the bytes 1, 2, ..., 32. */
static EVP_PKEY *fixed_key(void)
{
    unsigned char d[32], pub[65];
    for (int i = 0; i < 32; i++)
        d[i] = (unsigned char)(i + 1);
    EC_GROUP *g = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
    BIGNUM *priv = BN_bin2bn(d, 32, NULL);
    EC_POINT *q = g ? EC_POINT_new(g) : NULL;
    OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    OSSL_PARAM *params = NULL;
    EVP_PKEY *k = NULL;
    if (!q || !priv || !b || !ctx || EC_POINT_mul(g, q, priv, NULL, NULL, NULL) != 1 ||
        EC_POINT_point2oct(g, q, POINT_CONVERSION_UNCOMPRESSED, pub, sizeof pub, NULL) != 65 ||
        !OSSL_PARAM_BLD_push_utf8_string(b, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
        !OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_PRIV_KEY, priv) ||
        !OSSL_PARAM_BLD_push_octet_string(b, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof pub) ||
        !(params = OSSL_PARAM_BLD_to_param(b)) || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &k, EVP_PKEY_KEYPAIR, params) != 1)
        k = NULL;
    OSSL_PARAM_free(params);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_BLD_free(b);
    EC_POINT_free(q);
    BN_free(priv);
    EC_GROUP_free(g);
    return k;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (!(key = fixed_key()) || !(table = cf_ec_fixed_new(key))) {
        fprintf(stderr, "fuzz_ecfixed: cannot make the key or its table\n");
        abort();
    }
    return 0;
}

static int openssl_verify(const uint8_t md[32], const uint8_t *sig, size_t len)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(key, NULL);
    int ok = c && EVP_PKEY_verify_init(c) == 1 && EVP_PKEY_verify(c, sig, len, md, 32) == 1;
    EVP_PKEY_CTX_free(c);
    ERR_clear_error();
    return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 32)
        return 0;
    const uint8_t *md = data, *sig = data + 32;
    size_t len = size - 32;
    int fixed = cf_ec_fixed_verify_der(table, md, sig, len);
    int openssl = openssl_verify(md, sig, len);
    if (fixed && !openssl) {
        fprintf(stderr, "fuzz_ecfixed: the table accepts a DER signature OpenSSL refuses\n");
        abort();
    }
    /* The same r and s as raw r||s, when they fit. */
    const unsigned char *p = sig;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)len);
    unsigned char rs[64], *der = NULL;
    if (es && BN_bn2binpad(ECDSA_SIG_get0_r(es), rs, 32) == 32 &&
        BN_bn2binpad(ECDSA_SIG_get0_s(es), rs + 32, 32) == 32 &&
        cf_ec_fixed_verify(table, md, rs)) {
        int derlen = i2d_ECDSA_SIG(es, &der);
        if (derlen <= 0 || !openssl_verify(md, der, (size_t)derlen)) {
            fprintf(stderr, "fuzz_ecfixed: the table accepts an r||s OpenSSL refuses\n");
            abort();
        }
    }
    OPENSSL_free(der);
    ECDSA_SIG_free(es);
    ERR_clear_error();
    return 0;
}
