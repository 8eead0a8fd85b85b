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

#endif
