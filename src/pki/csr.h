/* csr.h - certificate signing requests from outside: parsing and proof of possession. */
#ifndef CF_PKI_CSR_H
#define CF_PKI_CSR_H

#include <openssl/x509.h>
#include <stddef.h>

#include "core/err.h"

/* Largest CSR accepted, in bytes of its PEM or DER form. */
#define CF_CSR_MAX 65536

/* Parses a PKCS#10 request given as PEM ("CERTIFICATE REQUEST" or "NEW CERTIFICATE REQUEST")
 * or DER. Refuses inputs over CF_CSR_MAX, trailing bytes after the DER and anything that is
 * not a request, with CF_ERR_INVALID and the reason. *out: X509_REQ_free. */
cf_err cf_csr_parse(const unsigned char *data, size_t len, X509_REQ **out, cf_error *err);

/* Checks that the request's signature verifies with its own key (proof of possession) and
 * that the key is allowed by cf_key_check_policy. On success *pub is the subject key
 * (EVP_PKEY_free) and keydesc describes it. */
cf_err cf_csr_check(X509_REQ *req, EVP_PKEY **pub, char *keydesc, size_t keydesc_len,
                    cf_error *err);

/* For the issuance hot path, a parser that keeps what OpenSSL 3.0 would otherwise build
 * for every request (a key decoder per key type). One per thread. *out: cf_csr_parser_free,
 * which accepts NULL. */
typedef struct cf_csr_parser cf_csr_parser;
cf_err cf_csr_parser_new(cf_csr_parser **out, cf_error *err);
void cf_csr_parser_free(cf_csr_parser *p);

/* cf_csr_parse and cf_csr_check in one, with the same inputs accepted, the same checks
 * and the same errors. On success *spki is the request's SubjectPublicKeyInfo as it was
 * encoded (X509_PUBKEY_free; it holds no EVP_PKEY: see cf_issuer_sign_device_spki), *pub
 * the same key decoded (EVP_PKEY_free) and keydesc describes it. */
cf_err cf_csr_parse_check(cf_csr_parser *p, const unsigned char *data, size_t len,
                          X509_PUBKEY **spki, EVP_PKEY **pub, char *keydesc, size_t keydesc_len,
                          cf_error *err);

/* What enrollment checks in a request before issuance, read with the same templates as
 * cf_csr_parse_check and the same errors for malformed input, but neither its key decoded
 * nor its signature checked (issuance does both): the subject, the extensions it asks for
 * (NULL: none) and its SubjectPublicKeyInfo as encoded (holding no EVP_PKEY). Release with
 * cf_csr_view_clear, also after a failure. */
typedef struct {
    X509_NAME *subject;
    STACK_OF(X509_EXTENSION) * exts;
    X509_PUBKEY *spki;
} cf_csr_view;

cf_err cf_csr_view_read(const unsigned char *data, size_t len, cf_csr_view *out, cf_error *err);
void cf_csr_view_clear(cf_csr_view *v);

#endif
