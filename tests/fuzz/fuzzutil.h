/* fuzzutil.h - shared by the libFuzzer targets in tests/fuzz/. */
#ifndef CF_FUZZUTIL_H
#define CF_FUZZUTIL_H

#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>

#include "pki/manifest.h"

/* A private directory for this fuzzing process, created on the first call under $TMPDIR
 * (else /tmp) and removed at exit. Aborts when it cannot be created: a target without its
 * directory would write where it must not. */
const char *fz_tmpdir(void);

/* Removes every entry of fz_tmpdir(), leaving the directory itself: called after each
 * input, so one input's files never meet the next. */
void fz_tmpdir_clear(void);

/* Writes data to the file name inside fz_tmpdir() and returns its path (static until the
 * next call). Aborts on failure. */
const char *fz_write_file(const char *name, const unsigned char *data, size_t len);

/* A self-signed P-256 end-entity certificate valid 2000-2099, as Microchip's manifest
 * signers are, and its key (*key). NULL when OpenSSL fails. Both: free with X509_free and
 * EVP_PKEY_free. */
X509 *fz_make_signer(EVP_PKEY **key);

/* A manifest trust holding Microchip's Root CA 002 (from tests/data) and a signer of
 * fz_make_signer's, registered, with its clock at when (seconds since the epoch), so
 * inputs the target signs get past the signature check. *signer (X509_free) and *key
 * (EVP_PKEY_free) are that signer's. Aborts, saying what failed, when anything does. */
cf_manifest_trust *fz_microchip_trust(int64_t when, X509 **signer, EVP_PKEY **key);

#endif
