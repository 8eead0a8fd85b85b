/* manifest_make.h - plays the chip maker: a manufacturer PKI, device birth certificates and
 * a signed secure-element manifest in the format Microchip publishes for Trust&GO parts.
 *
 * cf_manifest_make writes into an output directory:
 *   root.crt, root.key                 manufacturer root CA (P-256, CA:TRUE)
 *   batch-ca.crt, batch-ca.key         the CA that signs birth certificates (CA:TRUE pathlen 0)
 *   manifest-signer.crt, .key          self-signed end-entity manifest signer (CA:FALSE,
 *                                      digitalSignature), named by each entry's x5t#S256
 *   manifest.json                      JSON array of flattened JWS entries, one per device
 *   device-keys.pem                    every device key, each after a "# uniqueId UID" line
 *   keys/UID.key                       one file per device key (only with key_files)
 *   certs/UID.pem                      its birth certificate then the batch CA: the chain a
 *                                      simulated device presents in TLS (only with key_files)
 *   claim-codes.csv                    "unique_id,claim_code", one line per device
 * Private keys are PKCS#8 PEM, mode 0600; everything else 0644.
 *
 * An entry's payload is {version, model, partNumber, manufacturer, provisioner, distributor,
 * groupId, provisioningTimestamp, uniqueId, publicKeySet} (no publicKeySet for version 2),
 * its protected header {"alg":"ES256","kid":SKI,"typ":"JWT","x5t#S256":SHA256(signer DER)},
 * its signature the raw r||s (64 bytes) over protected "." payload, all base64url.
 * uniqueId is 9 bytes in lower-case hex starting 01; the birth certificate's subject CN is
 * "sn" + the upper-case form. Unique ids are distinct within one run by construction.
 *
 * Entries are made by worker threads in chunks and written in order by the calling thread:
 * memory stays bounded whatever the number of devices. */
#ifndef CF_PKI_MANIFEST_MAKE_H
#define CF_PKI_MANIFEST_MAKE_H

#include <stdint.h>

#include "core/err.h"

/* Called by cf_manifest_make from the calling thread after each chunk is written. */
typedef void (*cf_manifest_progress_fn)(void *arg, uint64_t done, uint64_t total);

typedef struct {
    uint64_t devices;          /* at least 1 */
    const char *out_dir;       /* created when missing; must not already hold a manifest */
    const char *manufacturer;  /* organizationName and certificate O; NULL: a default */
    const char *model;         /* NULL: a default */
    const char *part_number;   /* NULL: MODEL-TNG */
    int version;               /* payload version: 1 (with publicKeySet) or 2 (without) */
    int signer_days;           /* manifest signer validity; 0: 1095 */
    int device_days;           /* birth certificate validity; 0: 28 years (clamped to the CA) */
    int key_files;             /* also write keys/UID.key */
    int threads;               /* workers; 0: one per online CPU */
    int64_t now;               /* seconds since the epoch that certificates start from (rounded
                                  down to the hour); 0: the clock */
    int64_t provisioned_at_ms; /* provisioningTimestamp of every entry, ms since the epoch;
                                  0: the clock when the entry is made */
    cf_manifest_progress_fn progress; /* may be NULL */
    void *progress_arg;
} cf_manifest_make_opts;

typedef struct {
    uint64_t devices; /* entries written */
    double seconds;   /* wall time of the whole run */
    int threads;      /* workers used */
} cf_manifest_make_stats;

/* Makes everything above. stats may be NULL. Errors name the file or step that failed:
 * CF_ERR_INVALID for bad options, CF_ERR_EXISTS when out_dir already holds a manifest or a
 * key, CF_ERR_IO for files, CF_ERR_CRYPTO for OpenSSL. A failed run may leave partial files. */
cf_err cf_manifest_make(const cf_manifest_make_opts *opts, cf_manifest_make_stats *stats,
                        cf_error *err);

/* Claim codes: 128 random bits as 26 Crockford base32 digits (0-9, A-Z without I, L, O,
 * U), most significant first, grouped "XX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX". */
#define CF_CLAIM_CODE_BYTES 16
#define CF_CLAIM_CODE_STR_MAX 33 /* 26 digits, 6 dashes, NUL */

/* Writes the printed form of code into out. Returns out. */
char *cf_claim_code_format(const unsigned char code[CF_CLAIM_CODE_BYTES],
                           char out[CF_CLAIM_CODE_STR_MAX]);

/* Reads a claim code as a person may type it: case-insensitive, dashes and spaces ignored,
 * O read as 0 and I, L as 1 (Crockford's rules). The 16 bytes are the canonical form to
 * hash and compare. CF_ERR_INVALID (without echoing the input) when it is not 26 digits or
 * exceeds 128 bits. */
cf_err cf_claim_code_parse(const char *text, unsigned char out[CF_CLAIM_CODE_BYTES], cf_error *err);

#endif
