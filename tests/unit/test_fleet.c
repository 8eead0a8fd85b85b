/* Unit tests of src/fleet: issuance one by one and in a group commit, on both backends. */
#include "testutil.h"

#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit/audit.h"
#include "fleet/fleet.h"

static cf_fleet *fresh_fleet(int backend)
{
    static int n;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/fleet-%d-%d", tu_tmpdir(), (int)getpid(), ++n);
    const char *url = backend == TU_SQLITE ? NULL : tu_fresh_store_url(backend);
    if (backend != TU_SQLITE && !url)
        fail_msg("no PostgreSQL store (is CF_TEST_PG_URL set?)");
    cf_fleet *f = NULL;
    cf_error err;
    if (cf_fleet_open(dir, url, &f, &err) != CF_OK)
        fail_msg("open: %s", err.msg);
    cf_init_opts o = {.org = "Unit Org", .key_type = CF_KEY_P256, .actor = "unit"};
    if (cf_fleet_init(f, &o, &err) != CF_OK)
        fail_msg("init: %s", err.msg);
    return f;
}

/* What init leaves: two CAs and the OCSP responder's certificate (ca.init,
 * cert.issue_ocsp). */
#define INIT_RECORDS 2
#define INIT_CERTS 1

static void assert_chain_intact(cf_fleet *f, int64_t records)
{
    cf_audit_verify_result res;
    cf_error err;
    if (cf_audit_verify(cf_fleet_store(f), &res, &err) != CF_OK)
        fail_msg("audit verify: %s", err.msg);
    assert_int_equal(res.records, records);
}

static void test_batch_issues_good_requests_and_fails_bad_ones_alone(void **state)
{
    size_t len = 0;
    char *csr = tu_make_csr("ec:P-256", &len);
    char *weak = tu_make_csr("rsa:1024", &len);
    assert_non_null(csr);
    assert_non_null(weak);
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_fleet *f = fresh_fleet(b);
        cf_issue_req reqs[5];
        cf_issue_result res[5];
        const char *ids[5] = {"d-1", "d-2", "d 3", "d-4", "d-5"};
        for (int i = 0; i < 5; i++) {
            const char *c = i == 3 ? weak : csr;
            reqs[i] = (cf_issue_req){.csr = (const unsigned char *)c,
                                     .csr_len = strlen(c),
                                     .device_id = ids[i],
                                     .actor = "unit"};
        }
        cf_error err;
        assert_int_equal(cf_fleet_issue_batch(f, reqs, 5, res, &err), CF_OK);
        for (int i = 0; i < 5; i++) {
            if (i == 2) {
                assert_int_equal(res[i].rc, CF_ERR_INVALID); /* the id has a space */
                assert_non_null(strstr(res[i].err.msg, "device id"));
            } else if (i == 3) {
                assert_int_equal(res[i].rc, CF_ERR_POLICY);
                assert_non_null(strstr(res[i].err.msg, "1024"));
            } else {
                assert_int_equal(res[i].rc, CF_OK);
                assert_non_null(res[i].cert.der);
            }
            cf_signed_cert_clear(&res[i].cert);
        }
        cf_fleet_status st;
        assert_int_equal(cf_fleet_get_status(f, &st, &err), CF_OK);
        assert_int_equal(st.certs_total, INIT_CERTS + 3);
        assert_int_equal(st.devices[CF_DEVICE_ACTIVE], 3);
        assert_chain_intact(f, INIT_RECORDS + 3);
        cf_fleet_close(f);
    }
    free(csr);
    free(weak);
}

static void test_single_issue_after_batch_continues_the_chain(void **state)
{
    size_t len = 0;
    char *csr = tu_make_csr("ec:P-384", &len);
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_fleet *f = fresh_fleet(b);
        cf_issue_req reqs[3];
        cf_issue_result res[3];
        char ids[3][16];
        for (int i = 0; i < 3; i++) {
            snprintf(ids[i], sizeof ids[i], "b-%d", i);
            reqs[i] = (cf_issue_req){.csr = (const unsigned char *)csr,
                                     .csr_len = len,
                                     .device_id = ids[i],
                                     .actor = "unit"};
        }
        cf_error err;
        assert_int_equal(cf_fleet_issue_batch(f, reqs, 3, res, &err), CF_OK);
        for (int i = 0; i < 3; i++)
            cf_signed_cert_clear(&res[i].cert);
        cf_signed_cert x;
        reqs[0].device_id = "b-0"; /* the same device again: a second certificate */
        if (cf_fleet_issue(f, &reqs[0], &x, &err) != CF_OK)
            fail_msg("issue: %s", err.msg);
        cf_signed_cert_clear(&x);
        assert_chain_intact(f, INIT_RECORDS + 4);
        cf_fleet_close(f);
    }
    free(csr);
}

/* Device certificates are framed from parts OpenSSL encoded (device_der in x509.c): the
 * stored DER must be the certificate returned, parse, verify with the issuing CA's key, and
 * be exactly what OpenSSL's own encoder makes of the parsed certificate. */
static void test_stored_der_is_the_signed_certificate(void **state)
{
    size_t len = 0;
    char *csr = tu_make_csr("ec:P-256", &len);
    cf_fleet *f = fresh_fleet(TU_SQLITE);
    cf_issue_req reqs[4];
    cf_issue_result res[4];
    char ids[4][16];
    for (int i = 0; i < 4; i++) {
        snprintf(ids[i], sizeof ids[i], "der-%d", i);
        reqs[i] = (cf_issue_req){.csr = (const unsigned char *)csr,
                                 .csr_len = len,
                                 .device_id = ids[i],
                                 .actor = "unit"};
    }
    cf_error err;
    assert_int_equal(cf_fleet_issue_batch(f, reqs, 4, res, &err), CF_OK);
    X509 *issuing, *root;
    assert_int_equal(cf_fleet_chain(f, &issuing, &root, &err), CF_OK);
    for (int i = 0; i < 4; i++) {
        const cf_signed_cert *c = &res[i].cert;
        assert_int_equal(res[i].rc, CF_OK);
        cf_cert_rec rec;
        assert_int_equal(cf_store_cert_get(cf_fleet_store(f), c->serial, &rec, &err), CF_OK);
        assert_int_equal(c->der_len, rec.der_len);
        assert_memory_equal(c->der, rec.der, rec.der_len);
        const unsigned char *p = rec.der;
        X509 *back = d2i_X509(NULL, &p, (long)rec.der_len);
        assert_non_null(back);
        assert_ptr_equal(p, rec.der + rec.der_len);
        assert_int_equal(X509_verify(back, X509_get0_pubkey(issuing)), 1);
        char serial[CF_SERIAL_HEX_MAX];
        cf_x509_serial_hex(back, serial);
        assert_string_equal(serial, c->serial);
        assert_int_equal(cf_x509_not_before(back), c->not_before);
        assert_int_equal(cf_x509_not_after(back), c->not_after);
        char *subject = cf_x509_subject_line(back);
        assert_string_equal(subject, c->subject);
        assert_string_equal(rec.subject, c->subject);
        free(subject);
        /* RFC 5280 4.1.1.2: the inner and outer signature algorithms are the same. */
        const X509_ALGOR *outer;
        X509_get0_signature(NULL, &outer, back);
        assert_int_equal(X509_ALGOR_cmp(outer, X509_get0_tbs_sigalg(back)), 0);
        /* OpenSSL re-encodes the parsed TBSCertificate to the same bytes. */
        unsigned char *tbs = NULL;
        int tbs_len = i2d_re_X509_tbs(back, &tbs);
        assert_true(tbs_len > 0 && (size_t)tbs_len < rec.der_len);
        assert_non_null(memmem(rec.der, rec.der_len, tbs, (size_t)tbs_len));
        unsigned char *again = NULL;
        int again_len = i2d_X509(back, &again);
        assert_int_equal(again_len, (int)rec.der_len);
        assert_memory_equal(again, rec.der, rec.der_len);
        OPENSSL_free(tbs);
        OPENSSL_free(again);
        X509_free(back);
        cf_cert_rec_clear(&rec);
        cf_signed_cert_clear(&res[i].cert);
    }
    cf_fleet_close(f);
    free(csr);
}

static void test_validity_beyond_the_issuing_ca_is_refused(void **state)
{
    size_t len = 0;
    char *csr = tu_make_csr("ec:P-256", &len);
    cf_fleet *f = fresh_fleet(TU_SQLITE);
    cf_issue_req req = {.csr = (const unsigned char *)csr,
                        .csr_len = len,
                        .device_id = "long",
                        .days = 36500,
                        .actor = "unit"};
    cf_signed_cert x;
    cf_error err;
    assert_int_equal(cf_fleet_issue(f, &req, &x, &err), CF_ERR_POLICY);
    assert_non_null(strstr(err.msg, "outlives the issuing CA"));
    cf_fleet_status st;
    assert_int_equal(cf_fleet_get_status(f, &st, &err), CF_OK);
    assert_int_equal(st.certs_total, INIT_CERTS);
    cf_fleet_close(f);
    free(csr);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_issues_good_requests_and_fails_bad_ones_alone),
        cmocka_unit_test(test_single_issue_after_batch_continues_the_chain),
        cmocka_unit_test(test_stored_der_is_the_signed_certificate),
        cmocka_unit_test(test_validity_beyond_the_issuing_ca_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
