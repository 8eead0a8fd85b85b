#include "pki/csr.h"

#include <openssl/pem.h>
#include <string.h>

#include "pki/key.h"

static int looks_pem(const unsigned char *data, size_t len)
{
    /* PEM may follow leading whitespace or explanatory text; DER starts with SEQUENCE. */
    return len > 0 && data[0] != 0x30 && memmem(data, len, "-----BEGIN", 10) != NULL;
}

cf_err cf_csr_parse(const unsigned char *data, size_t len, X509_REQ **out, cf_error *err)
{
    if (len == 0)
        return cf_error_set(err, CF_ERR_INVALID, "CSR is empty");
    if (len > CF_CSR_MAX)
        return cf_error_set(err, CF_ERR_INVALID, "CSR is too large (%zu bytes, limit %d)", len,
                            CF_CSR_MAX);
    X509_REQ *req = NULL;
    if (looks_pem(data, len)) {
        BIO *b = BIO_new_mem_buf(data, (int)len);
        if (!b)
            return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
        req = PEM_read_bio_X509_REQ(b, NULL, NULL, NULL);
        BIO_free(b);
        if (!req)
            return cf_error_openssl(err, CF_ERR_INVALID,
                                    "CSR: PEM does not hold a valid certificate request");
    } else {
        const unsigned char *p = data;
        req = d2i_X509_REQ(NULL, &p, (long)len);
        if (!req)
            return cf_error_openssl(err, CF_ERR_INVALID,
                                    "CSR: not a PEM or DER certificate request (truncated or"
                                    " malformed)");
        if ((size_t)(p - data) != len) {
            X509_REQ_free(req);
            return cf_error_set(err, CF_ERR_INVALID, "CSR: %zu unexpected bytes after the DER",
                                len - (size_t)(p - data));
        }
    }
    *out = req;
    return CF_OK;
}

cf_err cf_csr_check(X509_REQ *req, EVP_PKEY **pub, char *keydesc, size_t keydesc_len,
                    cf_error *err)
{
    EVP_PKEY *k = X509_REQ_get_pubkey(req);
    if (!k)
        return cf_error_openssl(err, CF_ERR_INVALID, "CSR: public key is missing or unreadable");
    cf_err rc = cf_key_check_policy(k, keydesc, keydesc_len, err);
    if (rc != CF_OK) {
        cf_error_prefix(err, "CSR");
        goto fail;
    }
    if (X509_REQ_verify(req, k) != 1) {
        rc = cf_error_openssl(err, CF_ERR_INVALID,
                              "CSR: signature does not verify (proof of possession failed)");
        goto fail;
    }
    *pub = k;
    return CF_OK;
fail:
    EVP_PKEY_free(k);
    return rc;
}
