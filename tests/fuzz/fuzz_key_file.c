/* fuzz_key_file.c - private key files (CA keys under DATA/keys, --ca-key files).
 *
 * The input becomes a file that cf_key_load reads, once by path and once by name under a
 * key directory, as the fleet does for a CA's key_ref. A key that loads goes through the
 * key policy and the digest choice, as issuing does next. Seeds: corpus/fuzz_key_file/. */
#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

#include "fuzzutil.h"
#include "pki/key.h"

static void use_key(EVP_PKEY *key)
{
    char desc[64];
    cf_error err;
    cf_key_check_policy(key, desc, sizeof desc, &err);
    cf_key_digest(key);
    EVP_PKEY_free(key);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    EVP_PKEY *key = NULL;
    cf_error err;

    const char *path = fz_write_file("key.pem", data, size);
    if (cf_key_load(path, NULL, &key, &err) == CF_OK)
        use_key(key);
    key = NULL;
    if (cf_key_load("key.pem", fz_tmpdir(), &key, &err) == CF_OK)
        use_key(key);
    return 0;
}
