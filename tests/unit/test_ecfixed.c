/* Unit tests of src/pki/ecfixed.c: ECDSA P-256 verification with a table for the key must
 * accept exactly what OpenSSL's own verification accepts, signature by signature. */
#include "testutil.h"

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <string.h>

#include "pki/ecfixed.h"

/* OpenSSL's verdict on DER signature sig over digest md. */
static int openssl_verify(EVP_PKEY *key, const unsigned char md[32], const unsigned char *sig,
                          size_t len)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(key, NULL);
    assert_non_null(c);
    assert_int_equal(EVP_PKEY_verify_init(c), 1);
    int ok = EVP_PKEY_verify(c, sig, len, md, 32) == 1;
    EVP_PKEY_CTX_free(c);
    ERR_clear_error();
    return ok;
}

static size_t sign(EVP_PKEY *key, const unsigned char md[32], unsigned char sig[80])
{
    size_t len = 80;
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(key, NULL);
    assert_non_null(c);
    assert_int_equal(EVP_PKEY_sign_init(c), 1);
    assert_int_equal(EVP_PKEY_sign(c, sig, &len, md, 32), 1);
    EVP_PKEY_CTX_free(c);
    return len;
}

/* DER of the signature (r, s). */
static size_t der_of(const BIGNUM *r, const BIGNUM *s, unsigned char out[80])
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    assert_non_null(es);
    assert_int_equal(ECDSA_SIG_set0(es, BN_dup(r), BN_dup(s)), 1);
    unsigned char *p = out;
    int len = i2d_ECDSA_SIG(es, &p);
    assert_true(len > 0 && len <= 80);
    ECDSA_SIG_free(es);
    return (size_t)len;
}

/* Both verdicts on (md, der) agree, and equal want; the r||s form agrees when it exists. */
static void check(EVP_PKEY *key, const cf_ec_fixed *k, const unsigned char md[32],
                  const unsigned char *der, size_t len, int want)
{
    assert_int_equal(openssl_verify(key, md, der, len), want);
    assert_int_equal(cf_ec_fixed_verify_der(k, md, der, len), want);
    const unsigned char *p = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)len);
    unsigned char rs[64];
    if (es && BN_num_bytes(ECDSA_SIG_get0_r(es)) <= 32 &&
        BN_num_bytes(ECDSA_SIG_get0_s(es)) <= 32 &&
        BN_bn2binpad(ECDSA_SIG_get0_r(es), rs, 32) == 32 &&
        BN_bn2binpad(ECDSA_SIG_get0_s(es), rs + 32, 32) == 32 && p == der + len)
        assert_int_equal(cf_ec_fixed_verify(k, md, rs), want);
    ECDSA_SIG_free(es);
}

static void test_good_signatures_verify_and_bad_ones_do_not(void **state)
{
    (void)state;
    const BIGNUM *n = NULL;
    EC_GROUP *g = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
    assert_non_null(g);
    n = EC_GROUP_get0_order(g);
    EVP_PKEY *other = EVP_EC_gen("P-256");
    assert_non_null(other);
    for (int ki = 0; ki < 4; ki++) {
        EVP_PKEY *key = EVP_EC_gen("P-256");
        assert_non_null(key);
        cf_ec_fixed *k = cf_ec_fixed_new(key);
        assert_non_null(k);
        for (int i = 0; i < 25; i++) {
            unsigned char md[32], sig[80], der[80], bad[32];
            assert_int_equal(RAND_bytes(md, sizeof md), 1);
            if (i == 0)
                memset(md, 0xff, sizeof md); /* a digest above the order n */
            size_t len = sign(key, md, sig);
            check(key, k, md, sig, len, 1);

            const unsigned char *p = sig;
            ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)len);
            assert_non_null(es);
            const BIGNUM *r = ECDSA_SIG_get0_r(es), *s = ECDSA_SIG_get0_s(es);
            BIGNUM *t = BN_new(), *one = BN_new();
            assert_non_null(t);
            assert_non_null(one);
            BN_one(one);

            memcpy(bad, md, 32);
            bad[i % 32] ^= (unsigned char)(1u << (i % 8)); /* another digest */
            check(key, k, bad, sig, len, 0);
            BN_add(t, r, one); /* r + 1 */
            check(key, k, md, der, der_of(t, s, der), 0);
            BN_add(t, s, one); /* s + 1 */
            check(key, k, md, der, der_of(r, t, der), 0);
            BN_sub(t, n, s); /* n - s: the other valid s, which ECDSA accepts too */
            check(key, k, md, der, der_of(r, t, der), 1);
            BN_add(t, r, n); /* r + n: the same residue, out of range */
            check(key, k, md, der, der_of(t, s, der), 0);
            BN_add(t, s, n);
            check(key, k, md, der, der_of(r, t, der), 0);
            BN_zero(t);
            check(key, k, md, der, der_of(t, s, der), 0);
            check(key, k, md, der, der_of(r, t, der), 0);
            check(key, k, md, der, der_of(n, s, der), 0);
            check(key, k, md, der, der_of(r, n, der), 0);
            /* Signed by another key. */
            unsigned char osig[80];
            size_t olen = sign(other, md, osig);
            check(key, k, md, osig, olen, 0);
            /* Not DER: a trailing byte, a cut signature, a padded length. */
            memcpy(der, sig, len);
            der[len] = 0;
            assert_int_equal(cf_ec_fixed_verify_der(k, md, der, len + 1), 0);
            assert_int_equal(openssl_verify(key, md, der, len + 1), 0);
            assert_int_equal(cf_ec_fixed_verify_der(k, md, sig, len - 1), 0);
            unsigned char ber[84] = {0x30, 0x81, (unsigned char)(len - 2)};
            memcpy(ber + 3, sig + 2, len - 2);
            assert_int_equal(cf_ec_fixed_verify_der(k, md, ber, len + 1), 0);
            assert_int_equal(openssl_verify(key, md, ber, len + 1), 0);
            BN_free(t);
            BN_free(one);
            ECDSA_SIG_free(es);
        }
        cf_ec_fixed_free(k);
        EVP_PKEY_free(key);
    }
    EVP_PKEY_free(other);
    EC_GROUP_free(g);
}

/* Random mutations of good signatures: both verifications give the same verdict. */
static void test_agrees_with_openssl_on_mutated_signatures(void **state)
{
    (void)state;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    assert_non_null(key);
    cf_ec_fixed *k = cf_ec_fixed_new(key);
    assert_non_null(k);
    int accepted = 0, rejected = 0;
    for (int i = 0; i < 400; i++) {
        unsigned char md[32], sig[80], pick[2];
        assert_int_equal(RAND_bytes(md, sizeof md), 1);
        size_t len = sign(key, md, sig);
        assert_int_equal(RAND_bytes(pick, sizeof pick), 1);
        if (i % 4) /* three in four: one byte changed */
            sig[pick[0] % len] ^= (unsigned char)(pick[1] | 1);
        int want = openssl_verify(key, md, sig, len);
        assert_int_equal(cf_ec_fixed_verify_der(k, md, sig, len), want);
        want ? accepted++ : rejected++;
    }
    assert_true(accepted >= 50 && rejected >= 200);
    cf_ec_fixed_free(k);
    EVP_PKEY_free(key);
}

static void test_only_p256_keys_get_a_table(void **state)
{
    (void)state;
    EVP_PKEY *p384 = EVP_EC_gen("P-384"), *rsa = EVP_RSA_gen(2048);
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    assert_non_null(p384);
    assert_non_null(rsa);
    assert_non_null(ed);
    assert_null(cf_ec_fixed_new(p384));
    assert_null(cf_ec_fixed_new(rsa));
    assert_null(cf_ec_fixed_new(ed));
    assert_null(cf_ec_fixed_new(NULL));
    EVP_PKEY_free(p384);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_signatures_verify_and_bad_ones_do_not),
        cmocka_unit_test(test_agrees_with_openssl_on_mutated_signatures),
        cmocka_unit_test(test_only_p256_keys_get_a_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
