/* fuzz_estload_reply.c - the load generator's look into an EST enrollment reply
 * (bench/p7walk.c), which reads what a server sends.
 *
 * Besides "never read outside the input", the walk must agree with OpenSSL where it
 * matters: for input that is exactly the DER OpenSSL would write for a signedData
 * PKCS#7, every certificate's key is found; a key not in the input is never found. The
 * walk is also run with pieces of the input as the key. Seeds: corpus/fuzz_estload_reply/
 * (certs-only replies of one and of three certificates, written by openssl crl2pkcs7). */
#include <openssl/evp.h>
#include <openssl/pkcs7.h>
#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "p7walk.h"

static unsigned char *absent; /* a fresh key's SubjectPublicKeyInfo: in no input */
static int absent_len;

static void init(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    if (!k || (absent_len = i2d_PUBKEY(k, &absent)) <= 0)
        abort();
    EVP_PKEY_free(k);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!absent)
        init();
    if (p7_certs_only_has_key(data, size, absent, absent_len)) {
        fprintf(stderr, "fuzz_estload_reply: found a key the input does not hold\n");
        abort();
    }
    /* Pieces of the input as the key: the walk's comparison on whatever it reaches. */
    for (size_t n = 1; n <= size && n <= 128; n *= 2)
        (void)p7_certs_only_has_key(data, size, data + size - n, (int)n);

    const unsigned char *p = data;
    PKCS7 *p7 = d2i_PKCS7(NULL, &p, (long)size);
    unsigned char *der = NULL;
    int len = p7 && p == data + size ? i2d_PKCS7(p7, &der) : -1;
    if (len == (int)size && memcmp(der, data, size) == 0 && PKCS7_type_is_signed(p7) &&
        p7->d.sign && p7->d.sign->cert) {
        STACK_OF(X509) *certs = p7->d.sign->cert;
        for (int i = 0; i < sk_X509_num(certs); i++) {
            /* OpenSSL writes a certificate as it read it, but a key as it decoded it (a BIT
             * STRING loses its trailing zero bytes): only a key it writes as it stands in the
             * certificate must be found. */
            X509 *x = sk_X509_value(certs, i);
            unsigned char *spki = NULL, *cert = NULL;
            int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &spki), m = i2d_X509(x, &cert);
            if (n > 0 && m > 0 && memmem(cert, (size_t)m, spki, (size_t)n) &&
                !p7_certs_only_has_key(data, size, spki, n)) {
                fprintf(stderr, "fuzz_estload_reply: certificate %d's key was not found\n", i);
                abort();
            }
            OPENSSL_free(spki);
            OPENSSL_free(cert);
        }
    }
    OPENSSL_free(der);
    PKCS7_free(p7);
    return 0;
}
