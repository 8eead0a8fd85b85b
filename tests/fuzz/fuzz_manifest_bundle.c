/* fuzz_manifest_bundle.c - detached-signature PEM bundles (onboarding for makers without
 * manifests).
 *
 * The input is the PEM file. The target signs it (SHA-256, ECDSA) with a signer of its own,
 * registered next to the real Microchip root, so the bundle gets past its signature and
 * every device chain in it is parsed and checked. Besides "never crash", the iteration must
 * end: no more devices and errors than the input has bytes. Seeds:
 * corpus/fuzz_manifest_bundle/ (device chains of the real manifests in tests/data). */
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzutil.h"
#include "pki/manifest.h"

/* 2025-06-02T00:00:00Z: inside the seeds' chains' validity. */
#define TRUST_TIME 1748822400

static cf_manifest_trust *trust;
static EVP_PKEY *signer_key;

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_manifest_bundle: %s\n", what);
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    X509 *signer = NULL;
    trust = fz_microchip_trust(TRUST_TIME, &signer, &signer_key);
    X509_free(signer);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char sig[128];
    size_t sig_len = sizeof sig;
    cf_manifest_bundle *b = NULL;
    cf_error err;

    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, signer_key) != 1 ||
        EVP_DigestSign(md, sig, &sig_len, data, size) != 1)
        fail("cannot sign");
    EVP_MD_CTX_free(md);
    if (cf_manifest_bundle_open_mem(trust, data, size, sig, sig_len, &b, &err) != CF_OK)
        return 0;
    for (size_t calls = 0;; calls++) {
        if (calls > size + 1)
            fail("the bundle yields more results than the input has bytes");
        cf_manifest_device dev;
        size_t index = 0;
        memset(&dev, 0, sizeof dev);
        if (cf_manifest_bundle_next(b, &dev, &index, &err) != CF_OK) {
            if (cf_manifest_bundle_failed(b))
                break;
            continue;
        }
        int end = dev.uid[0] == '\0';
        cf_manifest_device_clear(&dev);
        if (end)
            break;
    }
    cf_manifest_bundle_free(b);
    return 0;
}
