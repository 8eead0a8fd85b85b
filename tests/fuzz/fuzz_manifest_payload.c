/* fuzz_manifest_payload.c - the payload of a manifest entry, past its signature.
 *
 * fuzz_manifest sees payloads only as signed by Microchip, so a mutated payload stops at
 * the signature. Here the input is the payload JSON itself: the target signs it (ES256)
 * with a signer of its own, registered next to the real Microchip root, wraps it in an
 * entry whose header.uniqueId is the payload's, and hands that to cf_manifest_verify_entry,
 * which then parses the payload, its JWKs and their x5c chains. Seeds: corpus/
 * fuzz_manifest_payload/ (payloads of the real manifests in tests/data/microchip). */
#include <jansson.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzutil.h"
#include "pki/jose.h"
#include "pki/manifest.h"

/* 2025-06-02T00:00:00Z: after every seed's provisioning, inside the chains' validity. */
#define TRUST_TIME 1748822400
#define PAYLOAD_MAX 65536

static cf_manifest_trust *trust;
static EVP_PKEY *signer_key;
static char protected_b64[256];

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_manifest_payload: %s\n", what);
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char hdr[160], x5t[CF_JOSE_X5T_MAX];
    cf_error err;
    X509 *signer = NULL;
    trust = fz_microchip_trust(TRUST_TIME, &signer, &signer_key);
    if (cf_jose_x5t_s256(signer, x5t, &err) != CF_OK)
        fail(err.msg);
    snprintf(hdr, sizeof hdr, "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"x5t#S256\":\"%s\"}", x5t);
    cf_b64url_encode((const unsigned char *)hdr, strlen(hdr), protected_b64);
    X509_free(signer);
    return 0;
}

/* The base64url of the raw r||s ES256 signature over text (written to out). */
static void sign_es256(const char *text, char *out)
{
    unsigned char der[80], raw[64];
    size_t der_len = sizeof der;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, signer_key) != 1 ||
        EVP_DigestSign(md, der, &der_len, (const unsigned char *)text, strlen(text)) != 1)
        fail("cannot sign");
    EVP_MD_CTX_free(md);
    const unsigned char *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    if (!sig || BN_bn2binpad(ECDSA_SIG_get0_r(sig), raw, 32) != 32 ||
        BN_bn2binpad(ECDSA_SIG_get0_s(sig), raw + 32, 32) != 32)
        fail("cannot convert the signature");
    ECDSA_SIG_free(sig);
    cf_b64url_encode(raw, sizeof raw, out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char payload_b64[CF_B64URL_LEN(PAYLOAD_MAX) + 1];
    static char signing_input[sizeof protected_b64 + sizeof payload_b64 + 1];
    char sig_b64[CF_B64URL_LEN(64) + 1];
    const char *uid = "0123";
    cf_manifest_device dev;
    cf_error err;

    if (size > PAYLOAD_MAX)
        return 0;
    cf_b64url_encode(data, size, payload_b64);
    snprintf(signing_input, sizeof signing_input, "%s.%s", protected_b64, payload_b64);
    sign_es256(signing_input, sig_b64);

    json_t *payload = json_loadb((const char *)data, size, 0, NULL);
    if (json_is_string(json_object_get(payload, "uniqueId")))
        uid = json_string_value(json_object_get(payload, "uniqueId"));
    json_t *entry = json_pack("{s:s, s:{s:s}, s:s, s:s}", "protected", protected_b64, "header",
                              "uniqueId", uid, "payload", payload_b64, "signature", sig_b64);
    json_decref(payload);
    if (!entry)
        return 0; /* a uniqueId that is not UTF-8 */
    memset(&dev, 0, sizeof dev);
    if (cf_manifest_verify_entry(trust, entry, 0, &dev, &err) == CF_OK)
        cf_manifest_device_clear(&dev);
    json_decref(entry);
    return 0;
}
