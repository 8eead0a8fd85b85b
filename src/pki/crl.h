/* crl.h - certificate revocation lists (RFC 5280 section 5) built the way a large fleet
 * needs them.
 *
 * Each revoked certificate's entry is encoded once, by OpenSSL's X509_REVOKED encoder, when
 * it is revoked, and kept. A CRL is then three parts: the header (version, signature
 * algorithm, issuer, thisUpdate, nextUpdate and the CRL extensions) encoded by OpenSSL as
 * the TBSCertList of an empty CRL, the kept entries framed as its revokedCertificates
 * SEQUENCE, and the signature over the result. A rebuild after one more revocation encodes
 * one entry, not a million; nothing is encoded by hand beyond the framing of entries
 * OpenSSL already encoded. */
#ifndef CF_PKI_CRL_H
#define CF_PKI_CRL_H

#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* CRLReason (RFC 5280 5.3.1); 7 is not used. */
typedef enum {
    CF_CRL_UNSPECIFIED = 0,
    CF_CRL_KEY_COMPROMISE = 1,
    CF_CRL_CA_COMPROMISE = 2,
    CF_CRL_AFFILIATION_CHANGED = 3,
    CF_CRL_SUPERSEDED = 4,
    CF_CRL_CESSATION_OF_OPERATION = 5,
    CF_CRL_CERTIFICATE_HOLD = 6,
    CF_CRL_REMOVE_FROM_CRL = 8,
    CF_CRL_PRIVILEGE_WITHDRAWN = 9,
    CF_CRL_AA_COMPROMISE = 10,
} cf_crl_reason;

/* RFC 5280's names ("keyCompromise", ...); NULL for a code that is no reason. */
const char *cf_crl_reason_name(int reason);
/* The code of an RFC 5280 name (case-insensitive); -1 when unknown. */
int cf_crl_reason_parse(const char *name);

/* The DER of one revokedCertificates entry: the serial (upper- or lower-case hex), the
 * revocation date, the reasonCode extension unless reason is unspecified (RFC 5280 5.3.1:
 * absent rather than unspecified) and, when invalidity_s is not 0, the invalidityDate
 * extension (GeneralizedTime). *der: OPENSSL_free. */
cf_err cf_crl_entry_encode(const char *serial_hex, int64_t revoked_s, int reason,
                           int64_t invalidity_s, unsigned char **der, size_t *len, cf_error *err);

/* Already encoded entries, in the order they go into the CRL (RFC 5280 sets none). */
typedef struct {
    const unsigned char *data; /* zero or more whole entries, back to back */
    size_t len;
} cf_crl_piece;

typedef struct {
    int64_t number;      /* cRLNumber: strictly increasing per CA and scope */
    int64_t delta_base;  /* 0: a full CRL; else a delta CRL on the full CRL of this number */
    int64_t this_update; /* seconds since the epoch */
    int64_t next_update;
    /* NULL: the CRL covers everything the CA issued. Else the CRL is one shard: its Issuing
     * Distribution Point (critical) names this URI, the same URI the shard's certificates
     * carry in their CRL distribution point, with onlyContainsUserCerts. */
    const char *idp_uri;
    /* Full CRLs only, NULL: none. The Freshest CRL extension: where the delta CRL is. */
    const char *freshest_uri;
} cf_crl_params;

/* Signs a CRL of ca (which must carry an SKI, as certfleet's CAs do) with key over the
 * entries in pieces, with authorityKeyIdentifier and cRLNumber, plus the Delta CRL
 * Indicator (critical), Issuing Distribution Point and Freshest CRL as p asks.
 * *der: OPENSSL_free. */
cf_err cf_crl_build(X509 *ca, EVP_PKEY *key, const cf_crl_params *p, const cf_crl_piece *pieces,
                    size_t npieces, unsigned char **der, size_t *der_len, cf_error *err);

#endif
