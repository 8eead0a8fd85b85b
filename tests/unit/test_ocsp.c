/* test_ocsp.c - the OCSP responder's requests and responses (src/pki/ocsp.c), checked by
 * OpenSSL's verifier and by the openssl ocsp command (a peer). */
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testutil.h"

#include "pki/crl.h"
#include "pki/key.h"
#include "pki/ocsp.h"
#include "pki/x509.h"

typedef struct {
    tu_ca c;
    EVP_PKEY *resp_key, *dev_key;
    X509 *resp, *leaf;
    char leaf_serial[CF_SERIAL_HEX_MAX];
    cf_ocsp_responder *r;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    cf_error err;
    char serial[CF_SERIAL_HEX_MAX];
    assert_non_null(f);
    tu_ca_make(&f->c);
    assert_int_equal(cf_key_generate(CF_KEY_P256, &f->resp_key, &err), CF_OK);
    assert_int_equal(cf_key_generate(CF_KEY_P256, &f->dev_key, &err), CF_OK);
    assert_int_equal(cf_issuer_sign_ocsp(f->c.iss, f->resp_key, "Unit", 10, &f->resp, serial, &err),
                     CF_OK);
    cf_device_profile prof = {.device_id = "dev-1", .org = "Unit", .days = 10};
    assert_int_equal(
        cf_issuer_sign_device(f->c.iss, f->dev_key, &prof, &f->leaf, f->leaf_serial, &err), CF_OK);
    assert_int_equal(cf_ocsp_responder_new(&f->r, &err), CF_OK);
    assert_int_equal(cf_ocsp_responder_add_ca(f->r, f->c.ca, 7, f->resp, f->resp_key, &err), CF_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    cf_ocsp_responder_free(f->r);
    tu_ca_clear(&f->c);
    X509_free(f->resp);
    X509_free(f->leaf);
    EVP_PKEY_free(f->resp_key);
    EVP_PKEY_free(f->dev_key);
    free(f);
    return 0;
}

/* A DER request for leaf under issuer with md, with a nonce of nonce_len bytes (0: none). */
static unsigned char *make_request(X509 *leaf, X509 *issuer, const EVP_MD *md, int nonce_len,
                                   int copies, size_t *len)
{
    OCSP_REQUEST *req = OCSP_REQUEST_new();
    assert_non_null(req);
    for (int i = 0; i < copies; i++) {
        OCSP_CERTID *id = OCSP_cert_to_id(md, leaf, issuer);
        assert_non_null(id);
        assert_non_null(OCSP_request_add0_id(req, id));
    }
    if (nonce_len)
        assert_int_equal(OCSP_request_add1_nonce(req, NULL, nonce_len), 1);
    unsigned char *der = NULL;
    int n = i2d_OCSP_REQUEST(req, &der);
    assert_true(n > 0);
    *len = (size_t)n;
    OCSP_REQUEST_free(req);
    return der;
}

static void test_responder_certificate_profile(void **state)
{
    fixture *f = *state;
    assert_true(X509_get_extended_key_usage(f->resp) & XKU_OCSP_SIGN);
    assert_true(X509_get_ext_by_NID(f->resp, NID_id_pkix_OCSP_noCheck, -1) >= 0);
    assert_int_equal(X509_check_ca(f->resp), 0);
}

static void test_parse_matches_sha1_and_sha256_certids(void **state)
{
    fixture *f = *state;
    const EVP_MD *mds[] = {EVP_sha1(), EVP_sha256()};
    int nids[] = {NID_sha1, NID_sha256};
    for (int i = 0; i < 2; i++) {
        size_t len;
        unsigned char *der = make_request(f->leaf, f->c.ca, mds[i], 16, 1, &len);
        cf_ocsp_request req;
        cf_error err;
        assert_int_equal(cf_ocsp_request_parse(f->r, der, len, &req, &err), CF_OK);
        assert_int_equal(req.n, 1);
        assert_int_equal(req.queries[0].ca_id, 7);
        assert_int_equal(req.queries[0].hash_nid, nids[i]);
        assert_string_equal(req.queries[0].serial, f->leaf_serial);
        assert_true(req.has_nonce);
        cf_ocsp_request_clear(&req);
        OPENSSL_free(der);
    }
}

static void test_parse_leaves_an_unknown_issuer_at_zero(void **state)
{
    fixture *f = *state;
    size_t len;
    /* the root is no CA this responder answers for */
    unsigned char *der = make_request(f->c.ca, f->c.root, EVP_sha1(), 0, 1, &len);
    cf_ocsp_request req;
    cf_error err;
    assert_int_equal(cf_ocsp_request_parse(f->r, der, len, &req, &err), CF_OK);
    assert_int_equal(req.queries[0].ca_id, 0);
    assert_false(req.has_nonce);
    cf_ocsp_request_clear(&req);
    OPENSSL_free(der);
}

static void assert_malformed(fixture *f, const unsigned char *der, size_t len, const char *why)
{
    cf_ocsp_request req;
    cf_error err;
    assert_int_equal(cf_ocsp_request_parse(f->r, der, len, &req, &err), CF_ERR_INVALID);
    if (!strstr(err.msg, why))
        fail_msg("\"%s\" does not say \"%s\"", err.msg, why);
    assert_null(req.req);
}

static void test_parse_refuses_hostile_requests(void **state)
{
    fixture *f = *state;
    size_t len;
    unsigned char *der = make_request(f->leaf, f->c.ca, EVP_sha1(), 0, 1, &len);
    assert_malformed(f, der, 0, "empty");
    for (size_t cut = 1; cut < len; cut += 7)
        assert_malformed(f, der, cut, "not a DER OCSPRequest");
    unsigned char *big = calloc(1, CF_OCSP_MAX_REQUEST + 1);
    memcpy(big, der, len);
    assert_malformed(f, big, len + 1, "after its end");
    assert_malformed(f, big, CF_OCSP_MAX_REQUEST + 1, "over the limit");
    free(big);
    assert_malformed(f, (const unsigned char *)"garbage", 7, "not a DER OCSPRequest");
    OPENSSL_free(der);

    der = make_request(f->leaf, f->c.ca, EVP_sha1(), 33, 1, &len);
    assert_malformed(f, der, len, "RFC 8954");
    OPENSSL_free(der);
    der = make_request(f->leaf, f->c.ca, EVP_sha1(), 0, CF_OCSP_MAX_IDS + 1, &len);
    assert_malformed(f, der, len, "CertIDs");
    OPENSSL_free(der);
}

/* Found by fuzz_ocsp_request: OpenSSL reads this CertID (its hash OID is not minimally
 * encoded) but cannot write it back, so it could never be answered. */
static void test_parse_refuses_a_certid_that_cannot_be_repeated(void **state)
{
    static const char b64[] =
        "MIGUMIGRMGowaDBmMA0GCWCGAAAAAAAAACAABCB9ysoZjzUvu23ZBlzGnwbVqNAKtW8yXnlQPZVVnS9O9AQg0IGZ"
        "wa6Rffp5TLjCGReKOTsDG6OruPXWy75Wl3L/fwgCEQDWPfQqOlMrc/5TbxP2CT5BoiMwITAfBgkrBgEFBQcwAQIE"
        "EgQQ/NmXt57GJlCxv4vcKEXGSg==";
    unsigned char der[256];
    int n = EVP_DecodeBlock(der, (const unsigned char *)b64, (int)strlen(b64));
    assert_true(n > 0);
    n -= 2; /* two '=' of padding */
    assert_malformed(*state, der, (size_t)n, "CertID 1 is malformed");
}

static void test_thousand_certids_are_refused(void **state)
{
    fixture *f = *state;
    size_t len;
    unsigned char *der = make_request(f->leaf, f->c.ca, EVP_sha256(), 0, 1000, &len);
    assert_malformed(f, der, len, "over the limit");
    OPENSSL_free(der);
}

static void test_the_most_certids_are_answered(void **state)
{
    fixture *f = *state;
    size_t len, rlen;
    unsigned char *der = make_request(f->leaf, f->c.ca, EVP_sha1(), 0, CF_OCSP_MAX_IDS, &len),
                  *resp;
    cf_ocsp_request req;
    cf_error err;
    assert_int_equal(cf_ocsp_request_parse(f->r, der, len, &req, &err), CF_OK);
    cf_ocsp_status *st = calloc(req.n, sizeof *st);
    assert_int_equal(
        cf_ocsp_respond(f->r, &req, st, time(NULL), time(NULL) + 60, &resp, &rlen, &err), CF_OK);
    const unsigned char *p = resp;
    OCSP_RESPONSE *o = d2i_OCSP_RESPONSE(NULL, &p, (long)rlen);
    OCSP_BASICRESP *bs = OCSP_response_get1_basic(o);
    assert_int_equal(OCSP_resp_count(bs), CF_OCSP_MAX_IDS);
    OCSP_BASICRESP_free(bs);
    OCSP_RESPONSE_free(o);
    OPENSSL_free(resp);
    free(st);
    cf_ocsp_request_clear(&req);
    OPENSSL_free(der);
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    fclose(fp);
}

static void write_pem(const char *path, X509 *x)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(PEM_write_X509(fp, x), 1);
    fclose(fp);
}

/* openssl ocsp reads our response to its own request: signature, responder authority,
 * nonce and status. */
static void check_with_openssl(fixture *f, const cf_ocsp_status *st, const char *want)
{
    char dir[512], cmd[4096];
    snprintf(dir, sizeof dir, "%s/ocsp", tu_tmpdir());
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    assert_int_equal(system(cmd), 0);
    char path[600];
    snprintf(path, sizeof path, "%s/root.pem", dir);
    write_pem(path, f->c.root);
    snprintf(path, sizeof path, "%s/ca.pem", dir);
    write_pem(path, f->c.ca);
    snprintf(path, sizeof path, "%s/leaf.pem", dir);
    write_pem(path, f->leaf);
    snprintf(cmd, sizeof cmd,
             "cd %s && openssl ocsp -issuer ca.pem -cert leaf.pem -reqout req.der >/dev/null 2>&1",
             dir);
    assert_int_equal(system(cmd), 0);
    FILE *fp;
    snprintf(path, sizeof path, "%s/req.der", dir);
    assert_non_null(fp = fopen(path, "rb"));
    unsigned char buf[4096];
    size_t len = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    cf_ocsp_request req;
    cf_error err;
    unsigned char *resp;
    size_t rlen;
    assert_int_equal(cf_ocsp_request_parse(f->r, buf, len, &req, &err), CF_OK);
    assert_true(req.has_nonce); /* openssl ocsp sends one by default */
    assert_int_equal(
        cf_ocsp_respond(f->r, &req, st, time(NULL) - 1, time(NULL) + 600, &resp, &rlen, &err),
        CF_OK);
    snprintf(path, sizeof path, "%s/resp.der", dir);
    write_file(path, resp, rlen);
    snprintf(cmd, sizeof cmd,
             "cd %s && cat ca.pem root.pem > chain.pem && openssl ocsp -reqin req.der -respin "
             "resp.der -CAfile chain.pem -resp_text > out.txt 2>&1 && "
             "grep -q 'Response verify OK' out.txt && grep -q '%s' out.txt",
             dir, want);
    if (system(cmd) != 0) {
        snprintf(cmd, sizeof cmd, "cat %s/out.txt", dir);
        (void)!system(cmd);
        fail_msg("openssl ocsp did not see %s", want);
    }
    OPENSSL_free(resp);
    cf_ocsp_request_clear(&req);
}

static void test_openssl_reads_good(void **state)
{
    cf_ocsp_status st = {.status = CF_OCSP_GOOD};
    check_with_openssl(*state, &st, "Cert Status: good");
}

static void test_openssl_reads_revoked_with_reason(void **state)
{
    cf_ocsp_status st = {
        .status = CF_OCSP_REVOKED, .revoked_s = time(NULL) - 100, .reason = CF_CRL_KEY_COMPROMISE};
    check_with_openssl(*state, &st, "Revocation Reason: keyCompromise");
}

static void test_openssl_reads_unknown(void **state)
{
    cf_ocsp_status st = {.status = CF_OCSP_UNKNOWN};
    check_with_openssl(*state, &st, "Cert Status: unknown");
}

static void test_error_responses_have_no_body(void **state)
{
    (void)state;
    int codes[] = {OCSP_RESPONSE_STATUS_MALFORMEDREQUEST, OCSP_RESPONSE_STATUS_UNAUTHORIZED,
                   OCSP_RESPONSE_STATUS_INTERNALERROR, OCSP_RESPONSE_STATUS_TRYLATER};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        unsigned char *der;
        size_t len;
        cf_error err;
        assert_int_equal(cf_ocsp_error_response(codes[i], &der, &len, &err), CF_OK);
        const unsigned char *p = der;
        OCSP_RESPONSE *o = d2i_OCSP_RESPONSE(NULL, &p, (long)len);
        assert_non_null(o);
        assert_int_equal(OCSP_response_status(o), codes[i]);
        assert_null(OCSP_response_get1_basic(o));
        OCSP_RESPONSE_free(o);
        OPENSSL_free(der);
    }
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_responder_certificate_profile),
        T(test_parse_matches_sha1_and_sha256_certids),
        T(test_parse_leaves_an_unknown_issuer_at_zero),
        T(test_parse_refuses_hostile_requests),
        T(test_parse_refuses_a_certid_that_cannot_be_repeated),
        T(test_thousand_certids_are_refused),
        T(test_the_most_certids_are_answered),
        T(test_openssl_reads_good),
        T(test_openssl_reads_revoked_with_reason),
        T(test_openssl_reads_unknown),
        cmocka_unit_test(test_error_responses_have_no_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
