/* fuzz_ocsp_request.c - OCSP requests from anyone on the network (POST /ocsp, GET /ocsp/...).
 *
 * The input goes to cf_ocsp_request_parse as a responder for one CA would get it. Besides
 * "never crash", a request that parses must be answerable: each query has a serial of at
 * most 40 hex digits, and the signed response to one about our CA parses back with one
 * SingleResponse per query (one about no CA of ours is refused, for unauthorized). Seeds:
 * corpus/fuzz_ocsp_request/ (requests of openssl ocsp, SHA-1 and SHA-256 CertIDs, with and without
 * a nonce). */
#include <openssl/ocsp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pki/key.h"
#include "pki/ocsp.h"
#include "pki/x509.h"

static cf_ocsp_responder *responder;

static void setup(void)
{
    EVP_PKEY *root_key, *resp_key;
    X509 *root, *resp;
    cf_issuer *iss;
    char serial[CF_SERIAL_HEX_MAX];
    cf_error err;
    if (cf_key_generate(CF_KEY_P256, &root_key, &err) != CF_OK ||
        cf_key_generate(CF_KEY_P256, &resp_key, &err) != CF_OK ||
        cf_x509_make_root(root_key, "Fuzz", "Fuzz CA", 30, &root, &err) != CF_OK ||
        cf_issuer_new(root, root_key, "fuzz", "http://127.0.0.1", &iss, &err) != CF_OK ||
        cf_issuer_sign_ocsp(iss, resp_key, "Fuzz", 30, &resp, serial, &err) != CF_OK ||
        cf_ocsp_responder_new(&responder, &err) != CF_OK ||
        cf_ocsp_responder_add_ca(responder, root, 1, resp, resp_key, &err) != CF_OK) {
        fprintf(stderr, "fuzz_ocsp_request: setup: %s\n", err.msg);
        abort();
    }
    cf_issuer_free(iss);
    X509_free(root);
    X509_free(resp);
    EVP_PKEY_free(root_key);
    EVP_PKEY_free(resp_key);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cf_ocsp_request req;
    cf_error err;
    if (!responder)
        setup();
    if (cf_ocsp_request_parse(responder, data, size, &req, &err) != CF_OK)
        return 0;
    cf_ocsp_status *st = calloc(req.n, sizeof *st);
    unsigned char *der = NULL;
    size_t len = 0;
    if (!st)
        abort();
    for (size_t i = 0; i < req.n; i++) {
        if (strlen(req.queries[i].serial) > 40)
            abort();
        st[i].status = i % 3 == 0 ? CF_OCSP_GOOD : i % 3 == 1 ? CF_OCSP_REVOKED : CF_OCSP_UNKNOWN;
        st[i].revoked_s = 1700000000;
        st[i].reason = (int)(i % 11) == 7 ? -1 : (int)(i % 11);
    }
    int known = 0;
    for (size_t i = 0; i < req.n; i++)
        known |= req.queries[i].ca_id != 0;
    cf_err rc = cf_ocsp_respond(responder, &req, st, time(NULL), time(NULL) + 60, &der, &len, &err);
    if (!known) { /* about no CA of ours: the caller answers unauthorized */
        if (rc != CF_ERR_NOT_FOUND)
            abort();
        free(st);
        cf_ocsp_request_clear(&req);
        return 0;
    }
    if (rc != CF_OK) {
        fprintf(stderr, "fuzz_ocsp_request: a parsed request got no response: %s\n", err.msg);
        abort();
    }
    const unsigned char *p = der;
    OCSP_RESPONSE *resp = d2i_OCSP_RESPONSE(NULL, &p, (long)len);
    OCSP_BASICRESP *bs = resp ? OCSP_response_get1_basic(resp) : NULL;
    if (!bs || OCSP_resp_count(bs) != (int)req.n)
        abort();
    OCSP_BASICRESP_free(bs);
    OCSP_RESPONSE_free(resp);
    OPENSSL_free(der);
    free(st);
    cf_ocsp_request_clear(&req);
    return 0;
}
