/* Unit tests of src/pki: the key policy, CSR parsing and proof of possession, the device
 * certificate profile (RFC 5280), and pkcs11 URIs losing their PIN before they are stored. */
#include "testutil.h"

#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pki/csr.h"
#include "pki/key.h"
#include "pki/x509.h"

#define BASE_URL "http://pki.example.test:8080"

/* ---- helpers ---- */

static EVP_PKEY *ec_key(const char *curve)
{
    EVP_PKEY *k = EVP_EC_gen(curve);
    assert_non_null(k);
    return k;
}

static EVP_PKEY *rsa_key(unsigned int bits)
{
    EVP_PKEY *k = EVP_RSA_gen(bits);
    assert_non_null(k);
    return k;
}

/* A CSR for key, signed by it, carrying the extensions given in OpenSSL configuration
 * syntax as pairs {nid, value} ending with nid 0. */
typedef struct {
    int nid;
    const char *value;
} ext_spec;

static X509_REQ *make_req(EVP_PKEY *key, const ext_spec *exts)
{
    X509_REQ *req = X509_REQ_new();
    assert_non_null(req);
    X509_NAME *name = X509_REQ_get_subject_name(req);
    assert_int_equal(X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
                                                (const unsigned char *)"unit", -1, -1, 0),
                     1);
    assert_int_equal(X509_REQ_set_pubkey(req, key), 1);
    if (exts && exts[0].nid) {
        STACK_OF(X509_EXTENSION) *sk = sk_X509_EXTENSION_new_null();
        for (const ext_spec *e = exts; e->nid; e++) {
            X509V3_CTX ctx;
            X509V3_set_ctx(&ctx, NULL, NULL, req, NULL, 0);
            X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, e->nid, e->value);
            assert_non_null(ext);
            sk_X509_EXTENSION_push(sk, ext);
        }
        assert_int_equal(X509_REQ_add_extensions(req, sk), 1);
        sk_X509_EXTENSION_pop_free(sk, X509_EXTENSION_free);
    }
    assert_true(X509_REQ_sign(req, key, cf_key_digest(key)) > 0);
    return req;
}

/* The request as DER in a new buffer (free()). */
static unsigned char *req_der(X509_REQ *req, size_t *len)
{
    unsigned char *tmp = NULL;
    int n = i2d_X509_REQ(req, &tmp);
    assert_true(n > 0);
    unsigned char *buf = malloc((size_t)n);
    memcpy(buf, tmp, (size_t)n);
    OPENSSL_free(tmp);
    *len = (size_t)n;
    return buf;
}

/* The request as PEM (new_header: "NEW CERTIFICATE REQUEST"), NUL-terminated (free()). */
static char *req_pem(X509_REQ *req, int new_header, size_t *len)
{
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(
        new_header ? PEM_write_bio_X509_REQ_NEW(b, req) : PEM_write_bio_X509_REQ(b, req), 1);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *s = malloc((size_t)n + 1);
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    *len = (size_t)n;
    BIO_free(b);
    return s;
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle))
        fail_msg("\"%s\" does not contain \"%s\"", haystack, needle);
}

static void assert_policy_refused(EVP_PKEY *k, const char *reason_part)
{
    cf_error err = {0};
    char desc[64];
    assert_int_equal(cf_key_check_policy(k, desc, sizeof desc, &err), CF_ERR_POLICY);
    assert_contains(err.msg, reason_part);
    EVP_PKEY_free(k);
}

static void assert_policy_allows(EVP_PKEY *k, const char *want_desc)
{
    cf_error err = {0};
    char desc[64];
    assert_int_equal(cf_key_check_policy(k, desc, sizeof desc, &err), CF_OK);
    assert_string_equal(desc, want_desc);
    EVP_PKEY_free(k);
}

/* ---- key policy ---- */

static void test_policy_refuses_rsa_1024_naming_its_size(void **state)
{
    assert_policy_refused(rsa_key(1024), "1024");
}

static void test_policy_allows_rsa_2048(void **state)
{
    assert_policy_allows(rsa_key(2048), "RSA 2048");
}

static void test_policy_allows_p256_and_p384(void **state)
{
    assert_policy_allows(ec_key("P-256"), "EC P-256");
    assert_policy_allows(ec_key("P-384"), "EC P-384");
}

static void test_policy_refuses_secp256k1_naming_the_curve(void **state)
{
    assert_policy_refused(ec_key("secp256k1"), "secp256k1");
}

static void test_policy_allows_ed25519(void **state)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    assert_non_null(k);
    assert_policy_allows(k, "Ed25519");
}

/* ---- CSR parsing ---- */

typedef struct {
    EVP_PKEY *key;
    X509_REQ *req;
    unsigned char *der;
    size_t der_len;
} csr_fixture;

static int csr_setup(void **state)
{
    csr_fixture *f = calloc(1, sizeof *f);
    f->key = ec_key("P-256");
    f->req = make_req(f->key, NULL);
    f->der = req_der(f->req, &f->der_len);
    *state = f;
    return 0;
}

static int csr_teardown(void **state)
{
    csr_fixture *f = *state;
    EVP_PKEY_free(f->key);
    X509_REQ_free(f->req);
    free(f->der);
    free(f);
    return 0;
}

/* Parses data, expects success and a request whose key is the fixture's. */
static void assert_parses_to_fixture(csr_fixture *f, const void *data, size_t len)
{
    cf_error err = {0};
    X509_REQ *req = NULL;
    assert_int_equal(cf_csr_parse(data, len, &req, &err), CF_OK);
    EVP_PKEY *pub = X509_REQ_get0_pubkey(req);
    assert_int_equal(EVP_PKEY_eq(pub, f->key), 1);
    X509_REQ_free(req);
}

static void assert_parse_fails(const void *data, size_t len, const char *reason_part)
{
    cf_error err = {0};
    X509_REQ *req = NULL;
    assert_int_equal(cf_csr_parse(data, len, &req, &err), CF_ERR_INVALID);
    assert_null(req);
    if (reason_part)
        assert_contains(err.msg, reason_part);
}

static void test_csr_parse_accepts_pem(void **state)
{
    csr_fixture *f = *state;
    size_t len;
    char *pem = req_pem(f->req, 0, &len);
    assert_non_null(strstr(pem, "-----BEGIN CERTIFICATE REQUEST-----"));
    assert_parses_to_fixture(f, pem, len);
    free(pem);
}

static void test_csr_parse_accepts_der(void **state)
{
    csr_fixture *f = *state;
    assert_parses_to_fixture(f, f->der, f->der_len);
}

static void test_csr_parse_accepts_new_certificate_request_header(void **state)
{
    csr_fixture *f = *state;
    size_t len;
    char *pem = req_pem(f->req, 1, &len);
    assert_non_null(strstr(pem, "-----BEGIN NEW CERTIFICATE REQUEST-----"));
    assert_parses_to_fixture(f, pem, len);
    free(pem);
}

static void test_csr_parse_accepts_openssl_cli_request(void **state)
{
    size_t len = 0;
    char *pem = tu_make_csr("ec:P-256", &len);
    assert_non_null(pem);
    cf_error err = {0};
    X509_REQ *req = NULL;
    assert_int_equal(cf_csr_parse((unsigned char *)pem, len, &req, &err), CF_OK);
    X509_REQ_free(req);
    free(pem);
}

static void test_csr_parse_refuses_truncated_der(void **state)
{
    csr_fixture *f = *state;
    assert_parse_fails(f->der, f->der_len - 10, "truncated or malformed");
    assert_parse_fails(f->der, 1, NULL);
}

static void test_csr_parse_refuses_trailing_garbage(void **state)
{
    csr_fixture *f = *state;
    unsigned char *buf = malloc(f->der_len + 3);
    memcpy(buf, f->der, f->der_len);
    memcpy(buf + f->der_len, "xyz", 3);
    assert_parse_fails(buf, f->der_len + 3, "3 unexpected bytes after the DER");
    free(buf);
}

/* cf_csr_view_read (what enrollment checks before issuance) reads the same subject, requested
 * extensions and key as OpenSSL's X509_REQ, and refuses what cf_csr_parse refuses. */
static void test_csr_view_reads_what_x509_req_reads(void **state)
{
    (void)state;
    EVP_PKEY *k = ec_key("P-256");
    ext_spec exts[] = {{NID_subject_alt_name, "URI:urn:certfleet:device:x,DNS:x.example"},
                       {NID_basic_constraints, "critical,CA:TRUE"},
                       {0, NULL}};
    X509_REQ *req = make_req(k, exts);
    size_t len;
    unsigned char *der = req_der(req, &len);
    cf_csr_view v;
    cf_error err = {0};
    assert_int_equal(cf_csr_view_read(der, len, &v, &err), CF_OK);
    assert_int_equal(X509_NAME_cmp(v.subject, X509_REQ_get_subject_name(req)), 0);
    STACK_OF(X509_EXTENSION) *want = X509_REQ_get_extensions(req);
    assert_int_equal(sk_X509_EXTENSION_num(v.exts), sk_X509_EXTENSION_num(want));
    for (int i = 0; i < sk_X509_EXTENSION_num(want); i++) {
        unsigned char *a = NULL, *b = NULL;
        int na = i2d_X509_EXTENSION(sk_X509_EXTENSION_value(v.exts, i), &a);
        int nb = i2d_X509_EXTENSION(sk_X509_EXTENSION_value(want, i), &b);
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, (size_t)na);
        OPENSSL_free(a);
        OPENSSL_free(b);
    }
    sk_X509_EXTENSION_pop_free(want, X509_EXTENSION_free);
    unsigned char *a = NULL, *b = NULL;
    int na = i2d_X509_PUBKEY(v.spki, &a), nb = i2d_X509_PUBKEY(X509_REQ_get_X509_PUBKEY(req), &b);
    assert_true(na > 0);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, (size_t)na);
    OPENSSL_free(a);
    OPENSSL_free(b);
    cf_csr_view_clear(&v);
    /* no extensions asked for: NULL */
    X509_REQ *plain = make_req(k, NULL);
    size_t plen;
    unsigned char *pder = req_der(plain, &plen);
    assert_int_equal(cf_csr_view_read(pder, plen, &v, &err), CF_OK);
    assert_null(v.exts);
    cf_csr_view_clear(&v);
    /* malformed: the errors cf_csr_parse gives */
    assert_int_equal(cf_csr_view_read(der, len - 10, &v, &err), CF_ERR_INVALID);
    assert_contains(err.msg, "truncated or malformed");
    assert_null(v.subject);
    unsigned char *tail = malloc(len + 3);
    memcpy(tail, der, len);
    memcpy(tail + len, "xyz", 3);
    assert_int_equal(cf_csr_view_read(tail, len + 3, &v, &err), CF_ERR_INVALID);
    assert_contains(err.msg, "3 unexpected bytes after the DER");
    assert_int_equal(cf_csr_view_read((const unsigned char *)"", 0, &v, &err), CF_ERR_INVALID);
    free(tail);
    free(der);
    free(pder);
    X509_REQ_free(req);
    X509_REQ_free(plain);
    EVP_PKEY_free(k);
}

static void test_csr_parse_refuses_empty_input(void **state)
{
    assert_parse_fails("", 0, "empty");
}

static void test_csr_parse_refuses_input_over_64k(void **state)
{
    csr_fixture *f = *state;
    /* A valid PEM request followed by padding: refused on size before any parsing. */
    size_t len;
    char *pem = req_pem(f->req, 0, &len);
    char *big = malloc(CF_CSR_MAX + 1);
    memset(big, '\n', CF_CSR_MAX + 1);
    memcpy(big, pem, len);
    assert_parse_fails(big, CF_CSR_MAX + 1, "too large");
    free(big);
    free(pem);
}

static void test_csr_parse_refuses_pem_wrapped_garbage(void **state)
{
    const char *pem = "-----BEGIN CERTIFICATE REQUEST-----\n"
                      "Z2FyYmFnZSwgbm90IGEgcmVxdWVzdA==\n"
                      "-----END CERTIFICATE REQUEST-----\n";
    assert_parse_fails(pem, strlen(pem), "PEM does not hold a valid certificate request");
}

static void test_csr_parse_refuses_a_certificate_in_pem(void **state)
{
    EVP_PKEY *k = ec_key("P-256");
    X509 *root = NULL;
    cf_error err = {0};
    assert_int_equal(cf_x509_make_root(k, "Unit", "Unit Root", 30, &root, &err), CF_OK);
    char *pem = NULL;
    size_t len = 0;
    assert_int_equal(cf_x509_append_pem(root, &pem, &len, &err), CF_OK);
    assert_parse_fails(pem, len, NULL);
    free(pem);
    X509_free(root);
    EVP_PKEY_free(k);
}

/* ---- proof of possession ---- */

static void test_csr_check_accepts_good_request(void **state)
{
    csr_fixture *f = *state;
    cf_error err = {0};
    EVP_PKEY *pub = NULL;
    char desc[64];
    assert_int_equal(cf_csr_check(f->req, &pub, desc, sizeof desc, &err), CF_OK);
    assert_string_equal(desc, "EC P-256");
    assert_int_equal(EVP_PKEY_eq(pub, f->key), 1);
    EVP_PKEY_free(pub);
}

static void test_csr_check_refuses_flipped_signature_byte(void **state)
{
    csr_fixture *f = *state;
    /* The signature BIT STRING ends the DER: its last byte is signature material. */
    unsigned char *bad = malloc(f->der_len);
    memcpy(bad, f->der, f->der_len);
    bad[f->der_len - 1] ^= 0x01;
    cf_error err = {0};
    X509_REQ *req = NULL;
    assert_int_equal(cf_csr_parse(bad, f->der_len, &req, &err), CF_OK);
    EVP_PKEY *pub = NULL;
    char desc[64];
    assert_int_equal(cf_csr_check(req, &pub, desc, sizeof desc, &err), CF_ERR_INVALID);
    assert_null(pub);
    assert_contains(err.msg, "proof of possession");
    X509_REQ_free(req);
    free(bad);
}

static void test_csr_check_refuses_weak_key_before_signature(void **state)
{
    EVP_PKEY *k = rsa_key(1024);
    X509_REQ *req = make_req(k, NULL);
    cf_error err = {0};
    EVP_PKEY *pub = NULL;
    char desc[64];
    assert_int_equal(cf_csr_check(req, &pub, desc, sizeof desc, &err), CF_ERR_POLICY);
    assert_contains(err.msg, "CSR: ");
    assert_contains(err.msg, "1024");
    X509_REQ_free(req);
    EVP_PKEY_free(k);
}

/* ---- the device profile ---- */

#define ISSUING_DAYS 30

typedef struct {
    EVP_PKEY *root_key, *ca_key;
    X509 *root, *ca;
    cf_issuer *iss;
} issuer_fixture;

static int issuer_setup(void **state)
{
    issuer_fixture *f = calloc(1, sizeof *f);
    cf_error err = {0};
    f->root_key = ec_key("P-256");
    f->ca_key = ec_key("P-256");
    if (cf_x509_make_root(f->root_key, "Unit", "Unit Root", 365, &f->root, &err) != CF_OK ||
        cf_x509_make_issuing(f->root, f->root_key, f->ca_key, "Unit", "Unit Issuing", ISSUING_DAYS,
                             &f->ca, &err) != CF_OK ||
        cf_issuer_new(f->ca, f->ca_key, "issuing-1", BASE_URL, &f->iss, &err) != CF_OK) {
        fprintf(stderr, "issuer_setup: %s\n", err.msg);
        return -1;
    }
    *state = f;
    return 0;
}

static void issuer_clear(issuer_fixture *f)
{
    cf_issuer_free(f->iss);
    X509_free(f->root);
    X509_free(f->ca);
    EVP_PKEY_free(f->root_key);
    EVP_PKEY_free(f->ca_key);
}

static int issuer_teardown(void **state)
{
    issuer_clear(*state);
    free(*state);
    return 0;
}

static X509 *sign_device(issuer_fixture *f, EVP_PKEY *pub, const char *id, int days,
                         char serial[CF_SERIAL_HEX_MAX])
{
    cf_device_profile prof = {.device_id = id, .org = "Unit", .days = days};
    cf_error err = {0};
    X509 *x = NULL;
    if (cf_issuer_sign_device(f->iss, pub, &prof, &x, serial, &err) != CF_OK)
        fail_msg("cf_issuer_sign_device: %s", err.msg);
    return x;
}

static int ext_critical(X509 *x, int nid)
{
    int i = X509_get_ext_by_NID(x, nid, -1);
    assert_true(i >= 0);
    return X509_EXTENSION_get_critical(X509_get_ext(x, i));
}

/* The only URI of the only GENERAL_NAME in names; fails otherwise. */
static void assert_single_uri(GENERAL_NAMES *names, const char *want)
{
    assert_non_null(names);
    assert_int_equal(sk_GENERAL_NAME_num(names), 1);
    GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, 0);
    assert_int_equal(gn->type, GEN_URI);
    const ASN1_IA5STRING *uri = gn->d.uniformResourceIdentifier;
    assert_int_equal(ASN1_STRING_length(uri), (int)strlen(want));
    assert_memory_equal(ASN1_STRING_get0_data(uri), want, strlen(want));
}

/* Asserts everything the device profile promises about x. */
static void assert_device_profile(issuer_fixture *f, X509 *x, const char *id)
{
    int crit = -1;
    char want[256];

    assert_int_equal(X509_get_version(x), X509_VERSION_3);
    assert_int_equal(X509_verify(x, X509_get0_pubkey(f->ca)), 1);
    assert_int_equal(X509_NAME_cmp(X509_get_issuer_name(x), X509_get_subject_name(f->ca)), 0);

    BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
    assert_non_null(bc);
    assert_int_equal(bc->ca, 0);
    assert_int_equal(crit, 1);
    BASIC_CONSTRAINTS_free(bc);

    assert_int_equal(X509_get_key_usage(x), KU_DIGITAL_SIGNATURE);
    assert_int_equal(ext_critical(x, NID_key_usage), 1);

    EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(x, NID_ext_key_usage, &crit, NULL);
    assert_non_null(eku);
    assert_int_equal(sk_ASN1_OBJECT_num(eku), 1);
    assert_int_equal(OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, 0)), NID_client_auth);
    EXTENDED_KEY_USAGE_free(eku);

    GENERAL_NAMES *san = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
    snprintf(want, sizeof want, "urn:certfleet:device:%s", id);
    assert_single_uri(san, want);
    GENERAL_NAMES_free(san);

    const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(x);
    assert_non_null(ski);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    assert_int_equal(X509_pubkey_digest(x, EVP_sha1(), md, &mdlen), 1);
    assert_int_equal(ASN1_STRING_length(ski), (int)mdlen);
    assert_memory_equal(ASN1_STRING_get0_data(ski), md, mdlen);

    const ASN1_OCTET_STRING *aki = X509_get0_authority_key_id(x);
    assert_non_null(aki);
    assert_int_equal(ASN1_OCTET_STRING_cmp(aki, X509_get0_subject_key_id(f->ca)), 0);

    CRL_DIST_POINTS *dps = X509_get_ext_d2i(x, NID_crl_distribution_points, &crit, NULL);
    assert_non_null(dps);
    assert_int_equal(sk_DIST_POINT_num(dps), 1);
    DIST_POINT *dp = sk_DIST_POINT_value(dps, 0);
    assert_non_null(dp->distpoint);
    assert_int_equal(dp->distpoint->type, 0); /* fullName */
    assert_single_uri(dp->distpoint->name.fullname, BASE_URL "/crl/issuing-1.crl");
    CRL_DIST_POINTS_free(dps);

    AUTHORITY_INFO_ACCESS *aia = X509_get_ext_d2i(x, NID_info_access, &crit, NULL);
    assert_non_null(aia);
    int ocsp = 0, ca_issuers = 0;
    for (int i = 0; i < sk_ACCESS_DESCRIPTION_num(aia); i++) {
        ACCESS_DESCRIPTION *ad = sk_ACCESS_DESCRIPTION_value(aia, i);
        GENERAL_NAMES *one = sk_GENERAL_NAME_new_null();
        sk_GENERAL_NAME_push(one, ad->location);
        if (OBJ_obj2nid(ad->method) == NID_ad_OCSP) {
            assert_single_uri(one, BASE_URL "/ocsp");
            ocsp++;
        } else if (OBJ_obj2nid(ad->method) == NID_ad_ca_issuers) {
            assert_single_uri(one, BASE_URL "/ca/issuing-1.crt");
            ca_issuers++;
        }
        sk_GENERAL_NAME_free(one); /* the name stays owned by aia */
    }
    assert_int_equal(ocsp, 1);
    assert_int_equal(ca_issuers, 1);
    AUTHORITY_INFO_ACCESS_free(aia);

    /* the delta CRL (RFC 5280 4.2.1.15): non-critical, beside the full one */
    crit = -1;
    CRL_DIST_POINTS *fresh = X509_get_ext_d2i(x, NID_freshest_crl, &crit, NULL);
    assert_non_null(fresh);
    assert_int_equal(crit, 0);
    assert_int_equal(sk_DIST_POINT_num(fresh), 1);
    assert_single_uri(sk_DIST_POINT_value(fresh, 0)->distpoint->name.fullname,
                      BASE_URL "/crl/issuing-1-delta.crl");
    sk_DIST_POINT_pop_free(fresh, DIST_POINT_free);

    /* BC, KU, EKU, SAN, SKI, AKI, CRL DP, Freshest CRL, AIA: nothing else. */
    assert_int_equal(X509_get_ext_count(x), 9);
}

static void test_device_cert_follows_the_profile(void **state)
{
    issuer_fixture *f = *state;
    EVP_PKEY *k = ec_key("P-256");
    char serial[CF_SERIAL_HEX_MAX];
    X509 *x = sign_device(f, k, "dev-0001", 7, serial);
    assert_device_profile(f, x, "dev-0001");
    assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(x), k), 1);
    X509_free(x);
    EVP_PKEY_free(k);
}

/* Device certificates are framed from parts (x509.c, device_der): under every kind of CA
 * key the signature algorithm must be the one X509_sign writes (the server certificate is
 * signed that way), inside and outside the TBSCertificate, and the certificate must verify
 * and re-encode to itself. */
static void test_device_cert_is_signed_as_x509_sign_would_for_each_ca_key(void **state)
{
    (void)state;
    cf_key_type types[] = {CF_KEY_P256, CF_KEY_P384, CF_KEY_RSA3072};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        issuer_fixture f = {0};
        cf_error err = {0};
        f.root_key = ec_key("P-256");
        if (cf_key_generate(types[t], &f.ca_key, &err) != CF_OK ||
            cf_x509_make_root(f.root_key, "Unit", "Unit Root", 365, &f.root, &err) != CF_OK ||
            cf_x509_make_issuing(f.root, f.root_key, f.ca_key, "Unit", "Unit Issuing", ISSUING_DAYS,
                                 &f.ca, &err) != CF_OK ||
            cf_issuer_new(f.ca, f.ca_key, "issuing-1", BASE_URL, &f.iss, &err) != CF_OK)
            fail_msg("issuer %zu: %s", t, err.msg);
        EVP_PKEY *k = ec_key("P-256");
        char serial[CF_SERIAL_HEX_MAX];
        const char *names[] = {"localhost"};
        X509 *x = sign_device(&f, k, "dev-alg", 7, serial), *server = NULL;
        assert_int_equal(
            cf_issuer_sign_server(f.iss, k, "Unit", names, 1, 7, &server, serial, &err), CF_OK);
        assert_device_profile(&f, x, "dev-alg");
        const X509_ALGOR *outer, *want;
        X509_get0_signature(NULL, &outer, x);
        X509_get0_signature(NULL, &want, server);
        assert_int_equal(X509_ALGOR_cmp(outer, want), 0);
        assert_int_equal(X509_ALGOR_cmp(X509_get0_tbs_sigalg(x), want), 0);
        unsigned char *der = NULL, *again = NULL;
        int n = i2d_X509(x, &der);
        X509_set_version(x, X509_VERSION_3); /* marks the TBSCertificate for re-encoding */
        assert_int_equal(i2d_X509(x, &again), n);
        assert_memory_equal(der, again, (size_t)n);
        OPENSSL_free(der);
        OPENSSL_free(again);
        X509_free(x);
        X509_free(server);
        EVP_PKEY_free(k);
        issuer_clear(&f);
    }
}

/* cf_x509_certs_only frames what EST replies carry; it must be byte for byte what OpenSSL's
 * PKCS7 encoder makes of the same certificates with the content absent (RFC 5272 4.1: a
 * Simple PKI Response has no eContent; `openssl crl2pkcs7 -nocrl` makes the same), and
 * openssl's parser must read it back. */
static void test_certs_only_is_what_i2d_pkcs7_makes(void **state)
{
    issuer_fixture *f = *state;
    unsigned char *ders[2] = {NULL, NULL}, *ours = NULL, *theirs = NULL;
    size_t lens[2];
    X509 *certs[2] = {f->ca, f->root};
    for (int i = 0; i < 2; i++)
        lens[i] = (size_t)i2d_X509(certs[i], &ders[i]);
    int n = cf_x509_certs_only((const unsigned char *const *)ders, lens, 2, &ours);
    PKCS7 *p7 = PKCS7_new();
    assert_non_null(p7);
    assert_int_equal(PKCS7_set_type(p7, NID_pkcs7_signed), 1);
    assert_int_equal(PKCS7_content_new(p7, NID_pkcs7_data), 1);
    ASN1_OCTET_STRING_free(p7->d.sign->contents->d.data);
    p7->d.sign->contents->d.data = NULL;
    assert_int_equal(PKCS7_add_certificate(p7, f->ca), 1);
    assert_int_equal(PKCS7_add_certificate(p7, f->root), 1);
    int m = i2d_PKCS7(p7, &theirs);
    assert_true(n > 0);
    assert_int_equal(n, m);
    assert_memory_equal(ours, theirs, (size_t)n);
    const unsigned char *p = ours;
    PKCS7 *back = d2i_PKCS7(NULL, &p, n);
    assert_non_null(back);
    assert_int_equal(sk_X509_num(back->d.sign->cert), 2);
    assert_int_equal(X509_cmp(sk_X509_value(back->d.sign->cert, 1), f->root), 0);
    PKCS7_free(back);
    PKCS7_free(p7);
    OPENSSL_free(ours);
    OPENSSL_free(theirs);
    OPENSSL_free(ders[0]);
    OPENSSL_free(ders[1]);
}

static void test_device_serial_is_128_bit_positive_and_reported(void **state)
{
    issuer_fixture *f = *state;
    EVP_PKEY *k = ec_key("P-256");
    char first[CF_SERIAL_HEX_MAX] = "";
    for (int i = 0; i < 32; i++) {
        char serial[CF_SERIAL_HEX_MAX], again[CF_SERIAL_HEX_MAX];
        X509 *x = sign_device(f, k, "dev-serial", 7, serial);
        const ASN1_INTEGER *ai = X509_get0_serialNumber(x);
        BIGNUM *bn = ASN1_INTEGER_to_BN(ai, NULL);
        assert_false(BN_is_negative(bn));
        /* 16 random bytes with a non-zero first byte: 121 to 128 significant bits, never
         * shorter than 16 bytes, never longer than RFC 5280's 20 octets once encoded. */
        assert_int_equal(BN_num_bytes(bn), CF_SERIAL_BYTES);
        unsigned char *enc = NULL;
        int enc_len = i2d_ASN1_INTEGER(ai, &enc);
        assert_true(enc_len > 2 && enc[1] <= 20);
        OPENSSL_free(enc);
        BN_free(bn);
        cf_x509_serial_hex(x, again);
        assert_string_equal(serial, again);
        assert_int_equal(strlen(serial), 32);
        if (i == 0)
            snprintf(first, sizeof first, "%s", serial);
        else
            assert_string_not_equal(serial, first);
        X509_free(x);
    }
    EVP_PKEY_free(k);
}

static void test_device_validity_is_clamped_to_the_issuer(void **state)
{
    issuer_fixture *f = *state;
    EVP_PKEY *k = ec_key("P-256");
    char serial[CF_SERIAL_HEX_MAX];
    X509 *x = sign_device(f, k, "dev-long", 3650, serial);
    assert_int_equal(cf_x509_not_after(x), cf_x509_not_after(f->ca));
    assert_true(cf_x509_not_before(x) <= (int64_t)time(NULL));
    X509_free(x);

    /* Shorter than the issuer's: the requested days, not the cap. */
    x = sign_device(f, k, "dev-short", 7, serial);
    int64_t want = (int64_t)time(NULL) + 7 * 86400;
    assert_true(cf_x509_not_after(x) <= want && cf_x509_not_after(x) >= want - 60);
    assert_true(cf_x509_not_after(x) < cf_x509_not_after(f->ca));
    X509_free(x);
    EVP_PKEY_free(k);
}

static void test_csr_asking_for_ca_and_extra_names_gets_none_of_them(void **state)
{
    issuer_fixture *f = *state;
    EVP_PKEY *k = ec_key("P-256");
    const ext_spec greedy[] = {
        {NID_basic_constraints, "critical,CA:TRUE,pathlen:3"},
        {NID_key_usage, "critical,digitalSignature,keyCertSign,cRLSign"},
        {NID_ext_key_usage, "serverAuth,clientAuth,codeSigning,OCSPSigning"},
        {NID_subject_alt_name, "DNS:evil.example,URI:urn:certfleet:device:someone-else"},
        {0, NULL},
    };
    X509_REQ *req = make_req(k, greedy);
    size_t der_len;
    unsigned char *der = req_der(req, &der_len);
    X509_REQ_free(req);

    cf_error err = {0};
    X509_REQ *parsed = NULL;
    EVP_PKEY *pub = NULL;
    char desc[64], serial[CF_SERIAL_HEX_MAX];
    assert_int_equal(cf_csr_parse(der, der_len, &parsed, &err), CF_OK);
    STACK_OF(X509_EXTENSION) *asked = X509_REQ_get_extensions(parsed);
    assert_int_equal(sk_X509_EXTENSION_num(asked), 4); /* the request really asks */
    sk_X509_EXTENSION_pop_free(asked, X509_EXTENSION_free);
    assert_int_equal(cf_csr_check(parsed, &pub, desc, sizeof desc, &err), CF_OK);

    X509 *x = sign_device(f, pub, "dev-greedy", 7, serial);
    assert_device_profile(f, x, "dev-greedy");
    assert_int_equal(X509_check_ca(x), 0);
    assert_int_equal(X509_check_purpose(x, X509_PURPOSE_SSL_SERVER, 0), 0);

    X509_free(x);
    EVP_PKEY_free(pub);
    X509_REQ_free(parsed);
    free(der);
    EVP_PKEY_free(k);
}

/* ---- key references ---- */

static void assert_without_pin(const char *ref, const char *want)
{
    char out[CF_KEY_REF_MAX];
    cf_error err = {0};
    assert_int_equal(cf_key_ref_without_pin(ref, out, &err), CF_OK);
    assert_string_equal(out, want);
}

static void test_key_ref_without_pin_removes_only_the_pin(void **state)
{
    assert_without_pin("pkcs11:token=cf;object=ca;type=private;pin-value=s3cret",
                       "pkcs11:token=cf;object=ca;type=private");
    assert_without_pin("pkcs11:pin-value=s3cret;token=cf;id=%01", "pkcs11:token=cf;id=%01");
    assert_without_pin("pkcs11:token=cf;object=ca?pin-value=s3cret&module-path=/opt/p11.so",
                       "pkcs11:token=cf;object=ca?module-path=/opt/p11.so");
    assert_without_pin("pkcs11:token=cf;object=ca?module-path=/opt/p11.so&pin-source=file:/p",
                       "pkcs11:token=cf;object=ca?module-path=/opt/p11.so&pin-source=file:/p");
    assert_without_pin("issuing-1-0011223344556677.key", "issuing-1-0011223344556677.key");
}

static void test_key_ref_errors_never_quote_the_pin(void **state)
{
    const char *bad[] = {
        "pkcs11:token=cf;pin-value=s3cret%zz",
        "pkcs11:token=cf;s3cret",
        "pkcs11:pin-value=s3cret",
        "pkcs11:token=cf?pin-value=s3cret&junk",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char out[CF_KEY_REF_MAX];
        cf_error err = {0};
        assert_int_equal(cf_key_ref_without_pin(bad[i], out, &err), CF_ERR_INVALID);
        if (strstr(err.msg, "s3cret"))
            fail_msg("message quotes the PIN: %s", err.msg);
    }
}

static void test_pkcs11_load_without_pin_fails_at_once(void **state)
{
    unsetenv("CERTFLEET_PKCS11_PIN");
    EVP_PKEY *k = NULL;
    cf_error err = {0};
    assert_int_equal(cf_key_load("pkcs11:token=nowhere;object=ca", NULL, &k, &err), CF_ERR_INVALID);
    assert_null(k);
    assert_contains(err.msg, "no PIN");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy_refuses_rsa_1024_naming_its_size),
        cmocka_unit_test(test_policy_allows_rsa_2048),
        cmocka_unit_test(test_policy_allows_p256_and_p384),
        cmocka_unit_test(test_policy_refuses_secp256k1_naming_the_curve),
        cmocka_unit_test(test_policy_allows_ed25519),
        cmocka_unit_test_setup_teardown(test_csr_parse_accepts_pem, csr_setup, csr_teardown),
        cmocka_unit_test_setup_teardown(test_csr_parse_accepts_der, csr_setup, csr_teardown),
        cmocka_unit_test_setup_teardown(test_csr_parse_accepts_new_certificate_request_header,
                                        csr_setup, csr_teardown),
        cmocka_unit_test(test_csr_parse_accepts_openssl_cli_request),
        cmocka_unit_test_setup_teardown(test_csr_parse_refuses_truncated_der, csr_setup,
                                        csr_teardown),
        cmocka_unit_test_setup_teardown(test_csr_parse_refuses_trailing_garbage, csr_setup,
                                        csr_teardown),
        cmocka_unit_test(test_csr_parse_refuses_empty_input),
        cmocka_unit_test(test_csr_view_reads_what_x509_req_reads),
        cmocka_unit_test_setup_teardown(test_csr_parse_refuses_input_over_64k, csr_setup,
                                        csr_teardown),
        cmocka_unit_test(test_csr_parse_refuses_pem_wrapped_garbage),
        cmocka_unit_test(test_csr_parse_refuses_a_certificate_in_pem),
        cmocka_unit_test_setup_teardown(test_csr_check_accepts_good_request, csr_setup,
                                        csr_teardown),
        cmocka_unit_test_setup_teardown(test_csr_check_refuses_flipped_signature_byte, csr_setup,
                                        csr_teardown),
        cmocka_unit_test(test_csr_check_refuses_weak_key_before_signature),
        cmocka_unit_test_setup_teardown(test_device_cert_follows_the_profile, issuer_setup,
                                        issuer_teardown),
        cmocka_unit_test(test_device_cert_is_signed_as_x509_sign_would_for_each_ca_key),
        cmocka_unit_test_setup_teardown(test_certs_only_is_what_i2d_pkcs7_makes, issuer_setup,
                                        issuer_teardown),
        cmocka_unit_test_setup_teardown(test_device_serial_is_128_bit_positive_and_reported,
                                        issuer_setup, issuer_teardown),
        cmocka_unit_test_setup_teardown(test_device_validity_is_clamped_to_the_issuer, issuer_setup,
                                        issuer_teardown),
        cmocka_unit_test_setup_teardown(test_csr_asking_for_ca_and_extra_names_gets_none_of_them,
                                        issuer_setup, issuer_teardown),
        cmocka_unit_test(test_key_ref_without_pin_removes_only_the_pin),
        cmocka_unit_test(test_key_ref_errors_never_quote_the_pin),
        cmocka_unit_test(test_pkcs11_load_without_pin_fails_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
