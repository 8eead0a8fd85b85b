/* ecfixed.h - ECDSA P-256 verification for a public key that checks many signatures (a
 * manifest's signer, a reel's batch CA).
 *
 * An ECDSA verification computes u1·G + u2·Q (SEC 1 §4.1.4). OpenSSL multiplies by the
 * curve's generator G through a table of precomputed multiples, and by the key Q with no
 * table, which is most of a verification's cost. A cf_ec_fixed keeps such a table for Q
 * too (about 150 KB, 25 ms to build), so both products come from tables: the same check,
 * in about half the time. Worth building only for a key seen many times. */
#ifndef CF_PKI_ECFIXED_H
#define CF_PKI_ECFIXED_H

#include <openssl/evp.h>
#include <stddef.h>

typedef struct cf_ec_fixed cf_ec_fixed;

/* The table for key; NULL when key is not a P-256 key or memory runs out (callers then
 * verify the usual way). */
cf_ec_fixed *cf_ec_fixed_new(EVP_PKEY *key);
void cf_ec_fixed_free(cf_ec_fixed *k);

/* 1 when r||s (32 big-endian bytes each) is a valid ECDSA signature by k over the 32-byte
 * digest md. 0 when it is not, or when this function cannot tell: a caller that needs the
 * reason, or certainty either way, verifies a 0 the usual way. */
int cf_ec_fixed_verify(const cf_ec_fixed *k, const unsigned char md[32], const unsigned char *rs);

/* The same for a DER ECDSA-Sig-Value of len bytes (what X.509 signatures hold); 0 also for
 * anything but DER. */
int cf_ec_fixed_verify_der(const cf_ec_fixed *k, const unsigned char md[32],
                           const unsigned char *sig, size_t len);

#endif
