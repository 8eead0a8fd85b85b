/* x509.h - certificates certfleet makes: its CAs and the device profile (RFC 5280). */
#ifndef CF_PKI_X509_H
#define CF_PKI_X509_H

#include <openssl/x509.h>
#include <stdint.h>

#include "core/err.h"

/* Bytes of a certificate serial: 128 random bits, positive. */
#define CF_SERIAL_BYTES 16
/* Hex form of a serial: at most 2 * (CF_SERIAL_BYTES + 1) digits plus NUL. */
#define CF_SERIAL_HEX_MAX 41

/* A self-signed root CA: basicConstraints CA:TRUE pathlen 1 critical, keyUsage keyCertSign
 * and cRLSign critical, SKI. *out: X509_free. */
cf_err cf_x509_make_root(EVP_PKEY *key, const char *org, const char *cn, int days, X509 **out,
                         cf_error *err);

/* An issuing CA signed by root: CA:TRUE pathlen 0, keyCertSign, cRLSign, SKI, AKI. Its
 * validity ends no later than the root's. */
cf_err cf_x509_make_issuing(X509 *root, EVP_PKEY *root_key, EVP_PKEY *key, const char *org,
                            const char *cn, int days, X509 **out, cf_error *err);

/* An issuer ready to sign device certificates: its certificate, key and the extensions
 * every certificate it signs shares (AKI, CRL distribution point, AIA), encoded once. */
typedef struct cf_issuer cf_issuer;

/* ca_name names the CA in URLs: BASE/crl/CA_NAME.crl, BASE/ca/CA_NAME.crt, BASE/ocsp.
 * Takes references on cert and key (the caller keeps its own). *out: cf_issuer_free. */
cf_err cf_issuer_new(X509 *cert, EVP_PKEY *key, const char *ca_name, const char *base_url,
                     cf_issuer **out, cf_error *err);
void cf_issuer_free(cf_issuer *iss);
X509 *cf_issuer_cert(const cf_issuer *iss); /* borrowed */

/* The device profile. Everything the CSR asked for beyond its key is ignored. */
typedef struct {
    const char *device_id; /* subject CN, and the SAN URI urn:certfleet:device:ID */
    const char *org;       /* subject O */
    int days;              /* validity; clamped to the issuer's own */
    /* 0: the CRL distribution point is the CA's whole CRL, with the delta CRL as Freshest
     * CRL; else CRL shard crl_shard's (BASE/crl/CA-sN.crl), no delta. */
    int64_t crl_shard;
} cf_device_profile;

/* Signs a device certificate for pub under profile with a fresh random serial (its hex in
 * serial_hex). *out: X509_free. */
cf_err cf_issuer_sign_device(cf_issuer *iss, EVP_PKEY *pub, const cf_device_profile *profile,
                             X509 **out, char serial_hex[CF_SERIAL_HEX_MAX], cf_error *err);

/* A certificate as issued: its DER and what the store records of it. */
typedef struct {
    unsigned char *der; /* OPENSSL_free */
    size_t der_len;
    char serial[CF_SERIAL_HEX_MAX]; /* upper-case hex */
    char *subject;                  /* one-line RFC 2253 form (cf_x509_subject_line); free() */
    int64_t not_before, not_after;  /* seconds since the epoch */
} cf_signed_cert;

/* Frees what c holds and zeroes it (a zeroed c is fine). */
void cf_signed_cert_clear(cf_signed_cert *c);

/* The same for a key given as its SubjectPublicKeyInfo (a CSR's, from
 * X509_REQ_get_X509_PUBKEY), which goes into the certificate as it is encoded: the issuance
 * hot path. No X509 object is made (under OpenSSL 3.0, parsing a certificate builds a key
 * decoder, which costs more than the signature): *out holds the DER and what the store
 * records (cf_signed_cert_clear, also after a failure). Validate the key first
 * (cf_csr_parse_check). */
cf_err cf_issuer_sign_device_spki(cf_issuer *iss, const X509_PUBKEY *spki,
                                  const cf_device_profile *profile, cf_signed_cert *out,
                                  cf_error *err);

/* A TLS server certificate for pub: CN names[0], O org (may be NULL), SAN every name
 * (IPv4/IPv6 literals as IP addresses, the rest as DNS names), CA:FALSE, digitalSignature,
 * serverAuth, SKI/AKI, the issuer's CRL distribution point and AIA, validity days (clamped
 * to the issuer's). *out: X509_free. */
cf_err cf_issuer_sign_server(cf_issuer *iss, EVP_PKEY *pub, const char *org,
                             const char *const *names, int nnames, int days, X509 **out,
                             char serial_hex[CF_SERIAL_HEX_MAX], cf_error *err);

/* The delegated OCSP responder's certificate for pub (RFC 6960 4.2.2.2): CN "OCSP responder",
 * O org, CA:FALSE, digitalSignature, extendedKeyUsage OCSPSigning, id-pkix-ocsp-nocheck,
 * SKI/AKI, validity days (clamped to the issuer's). *out: X509_free. */
cf_err cf_issuer_sign_ocsp(cf_issuer *iss, EVP_PKEY *pub, const char *org, int days, X509 **out,
                           char serial_hex[CF_SERIAL_HEX_MAX], cf_error *err);

/* The serial of cert as upper-case hex. */
void cf_x509_serial_hex(X509 *cert, char out[CF_SERIAL_HEX_MAX]);

/* The subject as a one-line RFC 2253 string. *out: free(). */
char *cf_x509_subject_line(X509 *cert);

/* notBefore / notAfter in seconds since the epoch. */
int64_t cf_x509_not_before(X509 *cert);
int64_t cf_x509_not_after(X509 *cert);

/* DER encoding. *der: OPENSSL_free. */
cf_err cf_x509_to_der(X509 *cert, unsigned char **der, size_t *len, cf_error *err);
cf_err cf_x509_from_der(const unsigned char *der, size_t len, X509 **out, cf_error *err);
/* Appends cert's PEM to a growing string (*buf, *len; realloc'ed); the same for a
 * certificate given as its DER. */
cf_err cf_x509_append_pem(X509 *cert, char **buf, size_t *len, cf_error *err);
cf_err cf_x509_der_append_pem(const unsigned char *der, size_t der_len, char **buf, size_t *len,
                              cf_error *err);

/* The certs-only PKCS#7 (a degenerate SignedData, as EST's cacerts and enrollment replies
 * carry, RFC 7030 4.1.3 and 4.2.3) of the n certificates given as DER (ders[i], lens[i]), in
 * that order. *out: OPENSSL_free. Returns its length, 0 when encoding failed. */
int cf_x509_certs_only(const unsigned char *const *ders, const size_t *lens, int n,
                       unsigned char **out);

#endif
