/* manifest.h - chip makers' signed secure-element manifests: streaming them, verifying
 * each entry, and the detached-signature PEM bundle for makers without manifests.
 *
 * A manifest (Microchip's Trust&GO / TrustFLEX format is the model) is a JSON array; each
 * element is a JWS in flattened JSON form (RFC 7515 §7.2.2):
 *
 *   { "protected": B64URL({"alg":"ES256","kid":..,"x5t#S256":..,"typ":"JWT"}),
 *     "header":    { "uniqueId": "0123...01" },
 *     "payload":   B64URL({"version":1, "model":.., "partNumber":.., "groupId":..,
 *                          "provisioningTimestamp":"2025-06-01T20:14:53.773Z",
 *                          "uniqueId":.., "publicKeySet":{"keys":[JWK, ...]}, ...}),
 *     "signature": B64URL(r||s) }
 *
 * Each JWK is an EC public key whose optional "x5c" is the device's birth-certificate chain
 * [device, signer/batch CA, ...] in standard base64 DER, without the manufacturer's root.
 * Payload version 2 may carry no publicKeySet at all.
 *
 * The reader only splits the array and parses each element; cf_manifest_verify_entry does
 * the checks. This module knows nothing of the store: it yields verified devices and the
 * caller decides what to keep. */
#ifndef CF_PKI_MANIFEST_H
#define CF_PKI_MANIFEST_H

#include <jansson.h>
#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "pki/jose.h"

/* ---- Streaming reader ------------------------------------------------------------------ */

/* Largest accepted array element, in bytes of its JSON text (a real entry is about 4 KiB). */
#define CF_MANIFEST_ENTRY_MAX (1024 * 1024)
/* Deepest accepted nesting of objects and arrays inside one element. */
#define CF_MANIFEST_DEPTH_MAX 32

/* A reader belongs to one thread at a time. */
typedef struct cf_manifest_reader cf_manifest_reader;

/* Opens the manifest at path for streaming. Nothing is read yet; memory stays constant
 * (one read buffer and one element of at most CF_MANIFEST_ENTRY_MAX) however large the file.
 * *out: cf_manifest_reader_free. CF_ERR_IO names the path. */
cf_err cf_manifest_reader_open(const char *path, cf_manifest_reader **out, cf_error *err);

/* The same over len bytes in memory (borrowed: they must outlive the reader). */
cf_err cf_manifest_reader_open_mem(const void *data, size_t len, cf_manifest_reader **out,
                                   cf_error *err);

void cf_manifest_reader_free(cf_manifest_reader *r);

/* Yields the next array element, parsed by jansson with duplicate keys refused:
 *   CF_OK, *entry set:   element number *index (0-based, its position in the array);
 *                        *entry: json_decref.
 *   CF_OK, *entry NULL:  the array ended and nothing but whitespace follows it; the whole
 *                        file has been read (cf_manifest_reader_sha256 is final).
 *   CF_ERR_INVALID:      *entry NULL, the message names the entry ("entry 7: ..."). When
 *                        cf_manifest_reader_failed(r) is 0 the error concerns only that
 *                        element (it is not valid JSON, has a duplicate key, ...) and the
 *                        caller may go on calling next; otherwise the file itself is broken
 *                        (not an array, truncated, an element larger than
 *                        CF_MANIFEST_ENTRY_MAX or nested deeper than CF_MANIFEST_DEPTH_MAX,
 *                        garbage between elements) and every later call repeats the error.
 *                        Elements before it were yielded and stay good.
 *   CF_ERR_IO:           reading failed (fatal as above). */
cf_err cf_manifest_reader_next(cf_manifest_reader *r, json_t **entry, size_t *index, cf_error *err);

/* 1 once the reader hit an error that ends the stream. */
int cf_manifest_reader_failed(const cf_manifest_reader *r);

/* Bytes of input consumed so far (up to the end of the last element yielded), and the
 * input's total size (0 when unknown, e.g. a pipe): for a progress bar. */
uint64_t cf_manifest_reader_offset(const cf_manifest_reader *r);
uint64_t cf_manifest_reader_size(const cf_manifest_reader *r);

/* The SHA-256 of every byte read so far; the manifest's SHA-256 once next has returned the
 * end (CF_OK with no entry). Returns 1 when the digest covers the whole input, else 0. */
int cf_manifest_reader_sha256(const cf_manifest_reader *r, unsigned char out[32]);

/* ---- Trust: one manufacturer's roots and manifest signers ------------------------------- */

typedef struct cf_manifest_trust cf_manifest_trust;

/* An empty trust (*out: cf_manifest_trust_free, which accepts NULL). After set-up, one
 * trust may be used by cf_manifest_verify_entry from several threads at once. */
cf_err cf_manifest_trust_new(cf_manifest_trust **out, cf_error *err);
void cf_manifest_trust_free(cf_manifest_trust *t);

/* Adds a trust anchor for birth-certificate chains (takes its own reference on root).
 * CF_ERR_INVALID when root is not a CA certificate. */
cf_err cf_manifest_trust_add_root(cf_manifest_trust *t, X509 *root, cf_error *err);

/* Registers a manifest signer (takes its own reference). Registering is the trust decision:
 * Microchip's signers are self-signed end-entity certificates that chain to nothing. The key
 * must be EC (manifests need P-256 for ES256) or RSA of 2048 bits or more (detached bundles
 * only); CF_ERR_POLICY otherwise. When the signer was issued by one of the roots added
 * before it, its signature by that root is checked here, once (both are fixed from then
 * on), and a signer whose signature does not verify is refused at every verification.
 * Registering the same certificate twice is harmless. */
cf_err cf_manifest_trust_add_signer(cf_manifest_trust *t, X509 *signer, cf_error *err);

/* Adds every certificate in data (PEM, one or more, or a single DER) as roots (as_signer
 * 0) or signers (1). The message names what failed. */
cf_err cf_manifest_trust_add_data(cf_manifest_trust *t, int as_signer, const void *data, size_t len,
                                  cf_error *err);

/* The time at which birth-certificate chains are checked, in seconds since the epoch; 0 (the
 * default) means the current time at each verification. For tests and re-audits. */
void cf_manifest_trust_set_time(cf_manifest_trust *t, int64_t when);

/* The registered signer whose x5t#S256 is x5t (borrowed), or NULL. */
X509 *cf_manifest_trust_find_signer(const cf_manifest_trust *t, const char *x5t);

/* A trust remembers the birth-certificate chains above device certificates (x5c[1..] and
 * the root) that it has verified in full, by the SHA-256 of their exact DER bytes, so that
 * later entries under the same batch CA have only their device certificate checked (see
 * cf_manifest_verify_entry). *fast: entries checked that way so far; *chains: chains
 * recorded. Either may be NULL. For tests and benchmarks. */
void cf_manifest_trust_chain_stats(const cf_manifest_trust *t, uint64_t *fast, uint64_t *chains);

/* How many keys (manifest signers' and recorded batch CAs') have verified enough signatures
 * to get a precomputed table (pki/ecfixed.h). For tests and benchmarks. */
unsigned cf_manifest_trust_key_tables(const cf_manifest_trust *t);

/* ---- Entry verification ---------------------------------------------------------------- */

#define CF_MANIFEST_UID_MAX 129   /* unique ids: 1..128 of [0-9A-Za-z._:-] */
#define CF_MANIFEST_FIELD_MAX 129 /* model, partNumber, groupId: at most 128 bytes */

/* What a verified entry says about one device. */
typedef struct {
    char uid[CF_MANIFEST_UID_MAX];     /* as given (Microchip: lower-case hex) */
    char model[CF_MANIFEST_FIELD_MAX]; /* "" when absent */
    char part_number[CF_MANIFEST_FIELD_MAX];
    char group_id[CF_MANIFEST_FIELD_MAX];
    int version;             /* payload version */
    int64_t provisioned_at;  /* provisioningTimestamp, seconds since epoch */
    unsigned char *cert_der; /* device birth certificate (owned; NULL when the
                                entry has no x5c, e.g. version 2) */
    size_t cert_der_len;
    int has_key;                      /* 1 when spki_sha256 is set */
    unsigned char spki_sha256[32];    /* SHA-256 of the device key's
                                         SubjectPublicKeyInfo DER: same key, same value */
    char signer_x5t[CF_JOSE_X5T_MAX]; /* the manifest signer's x5t#S256 */
} cf_manifest_device;

/* Frees what dev owns and zeroes it (safe on a zeroed or already cleared struct). */
void cf_manifest_device_clear(cf_manifest_device *dev);

/* Verifies one manifest entry (as yielded by the reader; index is only for messages):
 *  - the protected header is JSON with alg "ES256"; x5t#S256 names a registered signer; a
 *    kid, when present, equals the base64url of that signer's subject key identifier;
 *  - the signature (base64url r||s) verifies over protected "." payload;
 *  - the signer was valid at some time between the payload's provisioningTimestamp
 *    (RFC 3339) and now, when the manifest must have been signed: a signer that had expired
 *    before the chip was provisioned, or that is not valid yet, is refused, and so is a
 *    provisioningTimestamp more than a day in the future. Signers expire while their
 *    manifests stay in use; and a manifest is signed after its chips were provisioned, so
 *    a signer issued after the provisioningTimestamp is fine (Microchip's own tool makes
 *    such manifests);
 *  - header.uniqueId equals payload.uniqueId;
 *  - each publicKeySet.keys[] JWK is EC P-256 or P-384 with valid x/y; a JWK with a
 *    non-empty x5c: the chain [device, intermediates...] verifies to one of the roots at the
 *    trust's time (an expired birth certificate fails), the device certificate's key equals
 *    the JWK, and its subject CN is the unique id or "sn" + the unique id in upper case.
 *    The first device under a given chain (x5c[1..], byte for byte) is verified with
 *    X509_verify_cert; later ones have their own certificate checked against that verified
 *    chain (its signature, names, key identifiers, validity, extensions) and the chain's
 *    validity at the trust's time; a device certificate outside the plain profile this
 *    check knows takes X509_verify_cert again. The outcome is the same either way.
 * On success *dev is filled (the first key with a certificate gives cert_der and
 * spki_sha256; with keys but no certificate, the first key gives spki_sha256), to be
 * cleared with cf_manifest_device_clear. Errors leave *dev cleared and always start with
 * "manifest entry INDEX (uid UID): " (uid "?" when the entry has none): CF_ERR_INVALID for
 * malformed entries, CF_ERR_TAMPERED for a signature that does not verify, CF_ERR_NOT_FOUND
 * for an unknown signer, CF_ERR_POLICY for a chain, validity, key type or unique id that
 * does not hold. */
cf_err cf_manifest_verify_entry(const cf_manifest_trust *t, const json_t *entry, size_t index,
                                cf_manifest_device *dev, cf_error *err);

/* ---- Detached-signature PEM bundles ------------------------------------------------------
 *
 * For makers without manifests: a PEM file of birth certificates, each device certificate
 * followed by the intermediate CA certificates of its chain if any (a certificate with
 * basicConstraints CA:TRUE belongs to the device certificate before it), and a separate
 * signature file over the exact bytes of the PEM file, made by a registered signer with
 * SHA-256:
 *
 *     openssl dgst -sha256 -sign signer.key -out bundle.sig bundle.pem
 *
 * The signature file is the raw signature (DER ECDSA-Sig-Value or RSA PKCS#1 v1.5), or the
 * same in base64 (whitespace ignored). The signature names no signer: every registered
 * signer valid at the trust's time is tried. The whole file is verified before any device
 * is yielded; then each device chain is checked as in cf_manifest_verify_entry and the
 * device's unique id is its certificate's subject CN. The file is read twice (hash, then
 * certificates) and never held whole. */

typedef struct cf_manifest_bundle cf_manifest_bundle;

/* Verifies the detached signature sig (sig_len bytes) over the file at pem_path and opens
 * the bundle for iteration. CF_ERR_TAMPERED when no registered signer's signature verifies;
 * CF_ERR_IO names the path. *out: cf_manifest_bundle_free. */
cf_err cf_manifest_bundle_open(const cf_manifest_trust *t, const char *pem_path,
                               const unsigned char *sig, size_t sig_len, cf_manifest_bundle **out,
                               cf_error *err);

/* The same over pem_len bytes in memory (borrowed: they must outlive the bundle). */
cf_err cf_manifest_bundle_open_mem(const cf_manifest_trust *t, const void *pem, size_t pem_len,
                                   const unsigned char *sig, size_t sig_len,
                                   cf_manifest_bundle **out, cf_error *err);

void cf_manifest_bundle_free(cf_manifest_bundle *b);

/* Yields the next device: CF_OK with *dev filled and *index its 0-based position among the
 * bundle's device certificates; CF_OK with dev->uid[0] == '\0' at the end. An error
 * concerning one device ("bundle device 3 (uid X): ...", CF_ERR_POLICY or CF_ERR_INVALID)
 * lets the caller go on; a PEM that cannot be parsed any further ends the bundle
 * (cf_manifest_bundle_failed returns 1 and later calls repeat the error). */
cf_err cf_manifest_bundle_next(cf_manifest_bundle *b, cf_manifest_device *dev, size_t *index,
                               cf_error *err);

int cf_manifest_bundle_failed(const cf_manifest_bundle *b);

#endif
