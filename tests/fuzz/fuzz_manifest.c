/* fuzz_manifest.c - chip makers' manifests (certfleet onboard --manifest FILE).
 *
 * The input is a whole manifest file: the streaming reader splits it and every element it
 * yields goes to cf_manifest_verify_entry, against the real Microchip root and manifest
 * signers of tests/data/microchip (public certificates) at a fixed time. Mutations of real
 * entries reach the header, base64url and signature checks; fuzz_manifest_payload goes past
 * the signature. Besides "never crash", it checks the reader's promises: it makes progress
 * (no more calls than bytes), an error never comes with an entry, and once it reports the
 * end its SHA-256 is final and is the SHA-256 of the input. Seeds: corpus/fuzz_manifest/
 * (real manifests). */
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fs.h"
#include "pki/manifest.h"

/* 2025-06-02T00:00:00Z: after every seed's provisioning, inside the chains' validity. A
 * fixed time keeps a run reproducible whatever the date. */
#define TRUST_TIME 1748822400

static cf_manifest_trust *trust;

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_manifest: %s\n", what);
    abort();
}

static void add_file(int as_signer, const char *name)
{
    char path[4096], *data = NULL;
    size_t len = 0;
    cf_error err;
    snprintf(path, sizeof path, "%s/microchip/%s", CF_FUZZ_DATA_DIR, name);
    if (cf_fs_read_file(path, 1 << 20, &data, &len, &err) != CF_OK ||
        cf_manifest_trust_add_data(trust, as_signer, data, len, &err) != CF_OK)
        fail(err.msg);
    free(data);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    cf_error err;
    if (cf_manifest_trust_new(&trust, &err) != CF_OK)
        fail(err.msg);
    add_file(0, "Crypto_Authentication_Root_CA_002.crt");
    add_file(1, "MCHP_manifest_signer_1_Jan-21-2019_Jul2-21-2019.crt");
    add_file(1, "MCHP_manifest_signer_2_Aug-15-2019_Aug-15-2020.crt");
    add_file(1, "MCHP_manifest_signer_3_Aug-13-2020_Aug-13-2023.crt");
    add_file(1, "MCHP_manifest_signer_4_Jul-18-2023_Jul-18-2026.crt");
    add_file(1, "MCHP_manifest_signer_5_Mar_6-2024_noExpiration.crt");
    add_file(1, "pytrustplatform_dummy_signer-ca.crt");
    cf_manifest_trust_set_time(trust, TRUST_TIME);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cf_manifest_reader *r = NULL;
    cf_error err;
    int ended = 0;

    if (cf_manifest_reader_open_mem(data, size, &r, &err) != CF_OK)
        fail(err.msg);
    for (size_t calls = 0;; calls++) {
        if (calls > size + 1)
            fail("the reader yields more results than the input has bytes");
        json_t *entry = NULL;
        size_t index = 0;
        cf_err rc = cf_manifest_reader_next(r, &entry, &index, &err);
        if (rc != CF_OK) {
            if (entry)
                fail("an error came with an entry");
            if (cf_manifest_reader_failed(r))
                break;
            continue;
        }
        if (!entry) {
            ended = 1;
            break;
        }
        cf_manifest_device dev;
        memset(&dev, 0, sizeof dev);
        if (cf_manifest_verify_entry(trust, entry, index, &dev, &err) == CF_OK)
            cf_manifest_device_clear(&dev);
        json_decref(entry);
    }
    if (ended) {
        unsigned char got[32], want[32];
        if (cf_manifest_reader_sha256(r, got) != 1)
            fail("the reader ended but its SHA-256 is not final");
        if (EVP_Digest(data, size, want, NULL, EVP_sha256(), NULL) != 1)
            fail("SHA-256 failed");
        if (memcmp(got, want, sizeof got) != 0)
            fail("the reader's SHA-256 is not the input's");
    }
    cf_manifest_reader_free(r);
    return 0;
}
