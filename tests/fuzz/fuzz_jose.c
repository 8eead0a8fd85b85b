/* fuzz_jose.c - the JOSE decoders that manifests go through.
 *
 * The first byte picks the decoder, the rest is its input:
 *   0  cf_b64url_decode, 1  cf_b64_decode: jose.h promises each byte string exactly one
 *      accepted encoding, so whatever decodes must encode back to the very input;
 *   2  cf_jwk_ec_import on the input parsed as JSON: a key it returns must be on an
 *      allowed curve (cf_jose_ec_crv not NULL).
 * Seeds: corpus/fuzz_jose/. */
#include <jansson.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pki/jose.h"

static void fail(const char *what, const uint8_t *in, size_t len)
{
    fprintf(stderr, "fuzz_jose: %s: %.*s\n", what, (int)len, (const char *)in);
    abort();
}

static void check_b64url(const uint8_t *in, size_t len)
{
    unsigned char *bytes = NULL;
    size_t n = 0;
    cf_error err;
    if (cf_b64url_decode((const char *)in, len, &bytes, &n, &err) != CF_OK)
        return;
    char *again = malloc(CF_B64URL_LEN(n) + 1);
    if (!again)
        abort();
    cf_b64url_encode(bytes, n, again);
    if (strlen(again) != len || memcmp(again, in, len) != 0)
        fail("base64url decodes but is not the encoding of what it decodes to", in, len);
    free(again);
    free(bytes);
}

static void check_b64(const uint8_t *in, size_t len)
{
    unsigned char *bytes = NULL;
    size_t n = 0;
    cf_error err;
    if (cf_b64_decode((const char *)in, len, &bytes, &n, &err) != CF_OK)
        return;
    unsigned char *again = malloc((n + 2) / 3 * 4 + 1);
    if (!again)
        abort();
    int m = EVP_EncodeBlock(again, bytes, (int)n);
    if (m < 0 || (size_t)m != len || memcmp(again, in, len) != 0)
        fail("base64 decodes but is not the encoding of what it decodes to", in, len);
    free(again);
    free(bytes);
}

static void check_jwk(const uint8_t *in, size_t len)
{
    json_t *jwk = json_loadb((const char *)in, len, JSON_REJECT_DUPLICATES, NULL);
    EVP_PKEY *key = NULL;
    cf_error err;
    if (!jwk)
        return;
    if (cf_jwk_ec_import(jwk, &key, &err) == CF_OK) {
        if (!cf_jose_ec_crv(key))
            fail("an imported JWK is not on an allowed curve", in, len);
        EVP_PKEY_free(key);
    }
    json_decref(jwk);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    switch (data[0] % 3) {
    case 0:
        check_b64url(data + 1, size - 1);
        break;
    case 1:
        check_b64(data + 1, size - 1);
        break;
    default:
        check_jwk(data + 1, size - 1);
        break;
    }
    return 0;
}
