/* test_crl.c - CRL entries and CRLs (src/pki/crl.c): OpenSSL parses and verifies what we
 * build, and the openssl command line (a peer) verifies certificates against it. */
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testutil.h"

#include "pki/crl.h"
#include "pki/key.h"
#include "pki/x509.h"

typedef struct {
    tu_ca c;
    EVP_PKEY *dev_key;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    cf_error err;
    assert_non_null(f);
    tu_ca_make(&f->c);
    assert_int_equal(cf_key_generate(CF_KEY_P256, &f->dev_key, &err), CF_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    tu_ca_clear(&f->c);
    EVP_PKEY_free(f->dev_key);
    free(f);
    return 0;
}

static void test_reason_names_round_trip(void **state)
{
    (void)state;
    for (int r = 0; r <= 10; r++) {
        const char *name = cf_crl_reason_name(r);
        if (r == 7) {
            assert_null(name);
            continue;
        }
        assert_non_null(name);
        assert_int_equal(cf_crl_reason_parse(name), r);
    }
    assert_int_equal(cf_crl_reason_parse("KEYCOMPROMISE"), 1);
    assert_int_equal(cf_crl_reason_parse("stolen"), -1);
    assert_null(cf_crl_reason_name(-1));
    assert_null(cf_crl_reason_name(11));
}

static void test_entry_refuses_bad_serial_and_reason(void **state)
{
    (void)state;
    unsigned char *der;
    size_t len;
    cf_error err;
    assert_int_equal(cf_crl_entry_encode("XYZ", 1, 1, 0, &der, &len, &err), CF_ERR_INVALID);
    assert_non_null(strstr(err.msg, "XYZ"));
    assert_int_equal(cf_crl_entry_encode("", 1, 1, 0, &der, &len, &err), CF_ERR_INVALID);
    assert_int_equal(cf_crl_entry_encode("0102030405060708091011121314151617181920AA", 1, 1, 0,
                                         &der, &len, &err),
                     CF_ERR_INVALID);
    assert_int_equal(cf_crl_entry_encode("01", 1, 7, 0, &der, &len, &err), CF_ERR_INVALID);
    assert_non_null(strstr(err.msg, "no CRL reason"));
}

static void test_entry_encodes_what_openssl_reads_back(void **state)
{
    (void)state;
    unsigned char *der;
    size_t len;
    cf_error err;
    assert_int_equal(cf_crl_entry_encode("7F00AB", 1700000000, CF_CRL_KEY_COMPROMISE, 1690000000,
                                         &der, &len, &err),
                     CF_OK);
    const unsigned char *p = der;
    X509_REVOKED *r = d2i_X509_REVOKED(NULL, &p, (long)len);
    assert_non_null(r);
    assert_ptr_equal(p, der + len);
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_REVOKED_get0_serialNumber(r), NULL);
    char *hex = BN_bn2hex(bn);
    assert_string_equal(hex, "7F00AB");
    time_t t = 0;
    struct tm tm;
    assert_int_equal(ASN1_TIME_to_tm(X509_REVOKED_get0_revocationDate(r), &tm), 1);
    t = timegm(&tm);
    assert_int_equal((long long)t, 1700000000LL);
    int crit;
    ASN1_ENUMERATED *code = X509_REVOKED_get_ext_d2i(r, NID_crl_reason, &crit, NULL);
    assert_non_null(code);
    assert_int_equal(ASN1_ENUMERATED_get(code), 1);
    ASN1_GENERALIZEDTIME *inv = X509_REVOKED_get_ext_d2i(r, NID_invalidity_date, &crit, NULL);
    assert_non_null(inv);
    assert_int_equal(inv->type, V_ASN1_GENERALIZEDTIME);
    ASN1_GENERALIZEDTIME_free(inv);
    ASN1_ENUMERATED_free(code);
    OPENSSL_free(hex);
    BN_free(bn);
    X509_REVOKED_free(r);
    OPENSSL_free(der);

    /* unspecified: no reasonCode at all (RFC 5280 5.3.1) */
    assert_int_equal(cf_crl_entry_encode("01", 1700000000, CF_CRL_UNSPECIFIED, 0, &der, &len, &err),
                     CF_OK);
    p = der;
    r = d2i_X509_REVOKED(NULL, &p, (long)len);
    assert_non_null(r);
    assert_int_equal(X509_REVOKED_get_ext_count(r), 0);
    X509_REVOKED_free(r);
    OPENSSL_free(der);
}

/* Encodes n entries with serials base+i into one piece. */
static unsigned char *entries(int base, int n, size_t *len)
{
    unsigned char *buf = NULL;
    *len = 0;
    for (int i = 0; i < n; i++) {
        char hex[32];
        unsigned char *der;
        size_t dlen;
        cf_error err;
        snprintf(hex, sizeof hex, "%X", base + i);
        assert_int_equal(
            cf_crl_entry_encode(hex, 1700000000 + i, i % 2 ? 1 : 4, 0, &der, &dlen, &err), CF_OK);
        buf = realloc(buf, *len + dlen);
        memcpy(buf + *len, der, dlen);
        *len += dlen;
        OPENSSL_free(der);
    }
    return buf;
}

static X509_CRL *parse_crl(const unsigned char *der, size_t len)
{
    const unsigned char *p = der;
    X509_CRL *crl = d2i_X509_CRL(NULL, &p, (long)len);
    assert_non_null(crl);
    assert_ptr_equal(p, der + len);
    return crl;
}

static int64_t crl_int_ext(X509_CRL *crl, int nid, int *crit)
{
    ASN1_INTEGER *ai = X509_CRL_get_ext_d2i(crl, nid, crit, NULL);
    if (!ai)
        return -1;
    int64_t v = -1;
    ASN1_INTEGER_get_int64(&v, ai);
    ASN1_INTEGER_free(ai);
    return v;
}

static void test_crl_from_two_pieces_verifies_and_lists_every_entry(void **state)
{
    fixture *f = *state;
    size_t l1, l2;
    unsigned char *e1 = entries(0x1000, 3, &l1), *e2 = entries(0x2000, 300, &l2);
    cf_crl_piece pieces[] = {{e1, l1}, {e2, l2}};
    cf_crl_params p = {.number = 42,
                       .this_update = time(NULL),
                       .next_update = time(NULL) + 3600,
                       .freshest_uri = "http://127.0.0.1:8080/crl/issuing-1-delta.crl"};
    unsigned char *der;
    size_t len;
    cf_error err;
    assert_int_equal(cf_crl_build(f->c.ca, f->c.ca_key, &p, pieces, 2, &der, &len, &err), CF_OK);
    X509_CRL *crl = parse_crl(der, len);
    assert_int_equal(X509_CRL_verify(crl, f->c.ca_key), 1);
    assert_int_equal(X509_CRL_get_version(crl), X509_CRL_VERSION_2);
    assert_int_equal(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)), 303);
    int crit;
    assert_int_equal(crl_int_ext(crl, NID_crl_number, &crit), 42);
    assert_int_equal(crit, 0);
    assert_int_equal(crl_int_ext(crl, NID_delta_crl, &crit), -1);
    CRL_DIST_POINTS *fresh = X509_CRL_get_ext_d2i(crl, NID_freshest_crl, &crit, NULL);
    assert_non_null(fresh);
    sk_DIST_POINT_pop_free(fresh, DIST_POINT_free);
    AUTHORITY_KEYID *akid = X509_CRL_get_ext_d2i(crl, NID_authority_key_identifier, &crit, NULL);
    assert_non_null(akid);
    assert_int_equal(ASN1_OCTET_STRING_cmp(akid->keyid, X509_get0_subject_key_id(f->c.ca)), 0);
    AUTHORITY_KEYID_free(akid);
    X509_CRL_free(crl);
    OPENSSL_free(der);
    free(e1);
    free(e2);
}

static void test_crl_without_entries_has_no_revoked_list(void **state)
{
    fixture *f = *state;
    cf_crl_params p = {.number = 1, .this_update = time(NULL), .next_update = time(NULL) + 60};
    unsigned char *der;
    size_t len;
    cf_error err;
    assert_int_equal(cf_crl_build(f->c.ca, f->c.ca_key, &p, NULL, 0, &der, &len, &err), CF_OK);
    X509_CRL *crl = parse_crl(der, len);
    assert_int_equal(X509_CRL_verify(crl, f->c.ca_key), 1);
    assert_null(X509_CRL_get_REVOKED(crl)); /* absent, not an empty SEQUENCE */
    X509_CRL_free(crl);
    OPENSSL_free(der);
}

static void test_delta_and_shard_extensions_are_critical(void **state)
{
    fixture *f = *state;
    size_t l;
    unsigned char *e = entries(0x10, 2, &l);
    cf_crl_piece piece = {e, l};
    cf_crl_params p = {.number = 43,
                       .delta_base = 42,
                       .this_update = time(NULL),
                       .next_update = time(NULL) + 60,
                       .idp_uri = "http://127.0.0.1:8080/crl/issuing-1-7.crl"};
    unsigned char *der;
    size_t len;
    cf_error err;
    assert_int_equal(cf_crl_build(f->c.ca, f->c.ca_key, &p, &piece, 1, &der, &len, &err), CF_OK);
    X509_CRL *crl = parse_crl(der, len);
    assert_int_equal(X509_CRL_verify(crl, f->c.ca_key), 1);
    int crit;
    assert_int_equal(crl_int_ext(crl, NID_delta_crl, &crit), 42);
    assert_int_equal(crit, 1);
    ISSUING_DIST_POINT *idp =
        X509_CRL_get_ext_d2i(crl, NID_issuing_distribution_point, &crit, NULL);
    assert_non_null(idp);
    assert_int_equal(crit, 1);
    assert_true(idp->onlyuser);
    GENERAL_NAME *gn = sk_GENERAL_NAME_value(idp->distpoint->name.fullname, 0);
    assert_int_equal(gn->type, GEN_URI);
    assert_string_equal((const char *)ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier),
                        "http://127.0.0.1:8080/crl/issuing-1-7.crl");
    ISSUING_DIST_POINT_free(idp);
    X509_CRL_free(crl);
    OPENSSL_free(der);
    free(e);
}

static void write_pem_cert(const char *path, X509 *x)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(PEM_write_X509(fp, x), 1);
    fclose(fp);
}

/* openssl verify -crl_check (a peer) refuses the revoked certificate and accepts another. */
static void test_openssl_verify_honours_the_crl(void **state)
{
    fixture *f = *state;
    cf_error err;
    char dir[512], cmd[4096], serial_bad[CF_SERIAL_HEX_MAX], serial_good[CF_SERIAL_HEX_MAX];
    X509 *bad, *good;
    cf_device_profile prof = {.device_id = "dev-1", .org = "Unit", .days = 10};
    assert_int_equal(cf_issuer_sign_device(f->c.iss, f->dev_key, &prof, &bad, serial_bad, &err),
                     CF_OK);
    prof.device_id = "dev-2";
    assert_int_equal(cf_issuer_sign_device(f->c.iss, f->dev_key, &prof, &good, serial_good, &err),
                     CF_OK);
    unsigned char *e, *der;
    size_t elen, len;
    assert_int_equal(
        cf_crl_entry_encode(serial_bad, time(NULL) - 10, CF_CRL_KEY_COMPROMISE, 0, &e, &elen, &err),
        CF_OK);
    cf_crl_piece piece = {e, elen};
    cf_crl_params p = {.number = 7, .this_update = time(NULL) - 5, .next_update = time(NULL) + 600};
    assert_int_equal(cf_crl_build(f->c.ca, f->c.ca_key, &p, &piece, 1, &der, &len, &err), CF_OK);

    snprintf(dir, sizeof dir, "%s/crl-verify", tu_tmpdir());
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    assert_int_equal(system(cmd), 0);
    char path[600];
    snprintf(path, sizeof path, "%s/root.pem", dir);
    write_pem_cert(path, f->c.root);
    snprintf(path, sizeof path, "%s/ca.pem", dir);
    write_pem_cert(path, f->c.ca);
    snprintf(path, sizeof path, "%s/bad.pem", dir);
    write_pem_cert(path, bad);
    snprintf(path, sizeof path, "%s/good.pem", dir);
    write_pem_cert(path, good);
    snprintf(path, sizeof path, "%s/ca.crl", dir);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(der, 1, len, fp), len);
    fclose(fp);

    snprintf(cmd, sizeof cmd,
             "cd %s && openssl crl -inform DER -in ca.crl -out ca.crl.pem && "
             "openssl crl -in ca.crl.pem -noout -text | grep -q 'Key Compromise'",
             dir);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd,
             "cd %s && openssl verify -crl_check -CAfile root.pem -untrusted ca.pem "
             "-CRLfile ca.crl.pem good.pem >/dev/null 2>&1",
             dir);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd,
             "cd %s && openssl verify -crl_check -CAfile root.pem -untrusted ca.pem "
             "-CRLfile ca.crl.pem bad.pem 2>&1 | grep -q 'certificate revoked'",
             dir);
    assert_int_equal(system(cmd), 0);
    X509_free(bad);
    X509_free(good);
    OPENSSL_free(e);
    OPENSSL_free(der);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reason_names_round_trip),
        cmocka_unit_test(test_entry_refuses_bad_serial_and_reason),
        cmocka_unit_test(test_entry_encodes_what_openssl_reads_back),
        cmocka_unit_test_setup_teardown(test_crl_from_two_pieces_verifies_and_lists_every_entry,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_crl_without_entries_has_no_revoked_list, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_delta_and_shard_extensions_are_critical, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_openssl_verify_honours_the_crl, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
