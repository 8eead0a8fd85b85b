/* est.c - the bodies of EST's cacerts and csrattrs (RFC 7030, base64 as RFC 8951 says).
 * Both are built once (start, reload) and served from memory. */
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/conf.h>
#include <openssl/evp.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "server/srv.h"

/* base64 with a line break every 64 characters, as RFC 8951 allows and MIME readers like. */
static cf_err to_base64(const unsigned char *der, size_t len, char **out, size_t *out_len,
                        cf_error *err)
{
    BIO *b64 = BIO_new(BIO_f_base64()), *mem = BIO_new(BIO_s_mem());
    cf_err rc = CF_OK;
    char *data;
    if (!b64 || !mem) {
        rc = cf_error_openssl(err, CF_ERR_NOMEM, "base64");
        goto out;
    }
    BIO_push(b64, mem);
    if (BIO_write(b64, der, (int)len) != (int)len || BIO_flush(b64) != 1) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "base64");
        goto out;
    }
    long n = BIO_get_mem_data(mem, &data);
    if (!(*out = malloc((size_t)n + 1))) {
        rc = cf_error_set(err, CF_ERR_NOMEM, "out of memory");
        goto out;
    }
    memcpy(*out, data, (size_t)n);
    (*out)[n] = '\0';
    *out_len = (size_t)n;
out:
    if (b64)
        BIO_pop(b64);
    BIO_free(b64);
    BIO_free(mem);
    return rc;
}

long srv_base64_decode(const void *b64, size_t n, unsigned char **out)
{
    unsigned char *der = n && n <= INT_MAX ? malloc(n / 4 * 3 + 4) : NULL;
    EVP_ENCODE_CTX *ctx = der ? EVP_ENCODE_CTX_new() : NULL;
    int a = 0, b = 0, ok = 0;
    if (ctx) {
        /* OpenSSL's decoder skips white space, and fails on anything not base64. */
        EVP_DecodeInit(ctx);
        ok = EVP_DecodeUpdate(ctx, der, &a, b64, (int)n) >= 0 &&
             EVP_DecodeFinal(ctx, der + a, &b) == 1 && a + b > 0;
    }
    EVP_ENCODE_CTX_free(ctx);
    if (!ok) {
        free(der);
        return -1;
    }
    *out = der;
    return (long)(a + b);
}

cf_err srv_est_cacerts(cf_fleet *f, char **out, size_t *len, cf_error *err)
{
    X509 *chain[2];
    unsigned char *ders[2] = {NULL, NULL}, *p7 = NULL;
    size_t lens[2];
    cf_err rc = cf_fleet_chain(f, &chain[0], &chain[1], err);
    for (int i = 0; i < 2 && rc == CF_OK; i++)
        rc = cf_x509_to_der(chain[i], &ders[i], &lens[i], err);
    if (rc != CF_OK)
        goto out;
    /* A "degenerate" SignedData: certificates, no content, no signers (RFC 7030 4.1.3). */
    int n = cf_x509_certs_only((const unsigned char *const *)ders, lens, 2, &p7);
    if (n <= 0) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "EST cacerts: PKCS#7 encoding");
        goto out;
    }
    rc = to_base64(p7, (size_t)n, out, len, err);
out:
    OPENSSL_free(ders[0]);
    OPENSSL_free(ders[1]);
    OPENSSL_free(p7);
    return rc;
}

/* CsrAttrs ::= SEQUENCE OF AttrOrOID (RFC 7030 4.5.2), written as OpenSSL's ASN1_generate
 * configuration so OpenSSL does the encoding: the key must be id-ecPublicKey on P-256 (an
 * Attribute whose value names the curve, as in the RFC's example) and the CSR signed with
 * ecdsa-with-SHA256. */
static const char csrattrs_conf[] = "[csrattrs]\n"
                                    "key = SEQUENCE:ec_key\n"
                                    "sig = OID:ecdsa-with-SHA256\n"
                                    "[ec_key]\n"
                                    "type = OID:id-ecPublicKey\n"
                                    "values = SET:curves\n"
                                    "[curves]\n"
                                    "curve = OID:prime256v1\n";

cf_err srv_est_csrattrs(unsigned char **out, size_t *len, cf_error *err)
{
    BIO *bio = BIO_new_mem_buf(csrattrs_conf, -1);
    CONF *conf = NCONF_new(NULL);
    ASN1_TYPE *t = NULL;
    unsigned char *der = NULL;
    long line = 0;
    cf_err rc = CF_OK;
    if (!bio || !conf || NCONF_load_bio(conf, bio, &line) <= 0 ||
        !(t = ASN1_generate_nconf("SEQUENCE:csrattrs", conf))) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "EST csrattrs");
        goto out;
    }
    int n = i2d_ASN1_TYPE(t, &der);
    if (n <= 0) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "EST csrattrs: encoding");
        goto out;
    }
    rc = to_base64(der, (size_t)n, (char **)out, len, err);
out:
    OPENSSL_free(der);
    ASN1_TYPE_free(t);
    NCONF_free(conf);
    BIO_free(bio);
    return rc;
}
