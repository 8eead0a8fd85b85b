/* Unit tests of src/store/enrollment and src/fleet/enroll: owners' enrollment policies,
 * devices found by their birth certificate, requests held for approval, certificates
 * superseded by a re-enrollment, and a whole enrollment and re-enrollment through the fleet
 * layer, on both store backends. */
#include "testutil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "core/util.h"
#include "fleet/enroll.h"
#include "store/store.h"

#define ASSERT_OK(b, call)                                                                         \
    do {                                                                                           \
        if ((call) != CF_OK)                                                                       \
            fail_msg("%s: %s: %s", tu_backend_name(b), #call, err.msg);                            \
    } while (0)

static cf_store *open_fresh(int b)
{
    cf_store *st = NULL;
    cf_error err = {0};
    const char *url = tu_fresh_store_url(b);
    if (!url)
        fail_msg("%s: no store (run through run_unit.sh)", tu_backend_name(b));
    ASSERT_OK(b, cf_store_open(url, &st, &err));
    return st;
}

static const unsigned char birth_a[] = {0x30, 0x03, 0x02, 0x01, 0x0a};
static const unsigned char birth_b[] = {0x30, 0x03, 0x02, 0x01, 0x0b};
#define FPR_A "aaaa000000000000000000000000000000000000000000000000000000000001"
#define FPR_B "bbbb000000000000000000000000000000000000000000000000000000000002"

/* Onboards devices "dev-a" (birth_a, FPR_A) and "dev-b" (birth_b, FPR_B), on hold. */
static void onboard_two(int b, cf_store *st)
{
    cf_error err = {0};
    int64_t mfr = 0;
    cf_import_rec imp = {.source = "m.json", .actor = "test"};
    cf_onboard_result res[2];
    cf_onboard_device devs[2] = {
        {"dev-a", "b1", NULL, NULL, birth_a, sizeof birth_a, FPR_A, 0, NULL},
        {"dev-b", "b1", NULL, NULL, birth_b, sizeof birth_b, FPR_B, 0, NULL},
    };
    ASSERT_OK(b, cf_store_manufacturer_insert(st, "maker", birth_a, sizeof birth_a, &mfr, &err));
    imp.manufacturer_id = mfr;
    imp.started_us = cf_time_now_us();
    ASSERT_OK(b, cf_store_import_insert(st, &imp, &err));
    ASSERT_OK(b, cf_store_begin(st, &err));
    ASSERT_OK(b, cf_store_device_onboard(st, mfr, imp.id, devs, 2, res, &err));
    ASSERT_OK(b, cf_store_commit(st, &err));
    assert_int_equal(res[0], CF_ONBOARD_ADDED);
    assert_int_equal(res[1], CF_ONBOARD_ADDED);
}

static void test_policy_absent_until_set_then_replaced(void **state)
{
    (void)state;
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_store *st = open_fresh(b);
        cf_error err = {0};
        cf_enroll_policy got = {0};
        int64_t owner = 0;
        ASSERT_OK(b, cf_store_owner_insert(st, "acme", cf_time_now_us(), &owner, &err));
        assert_int_equal(cf_store_enroll_policy_get(st, owner, &got, &err), CF_ERR_NOT_FOUND);

        cf_enroll_policy p = {.require_approval = 1,
                              .serverkeygen = 0,
                              .allow_key_reuse = 1,
                              .allow_birth_key = 0,
                              .reenroll_grace_s = 90,
                              .updated_us = 5};
        ASSERT_OK(b, cf_store_enroll_policy_set(st, owner, &p, &err));
        ASSERT_OK(b, cf_store_enroll_policy_get(st, owner, &got, &err));
        assert_memory_equal(&got, &p, sizeof p);

        cf_enroll_policy q = {
            .serverkeygen = 1, .allow_birth_key = 1, .reenroll_grace_s = 0, .updated_us = 6};
        ASSERT_OK(b, cf_store_enroll_policy_set(st, owner, &q, &err));
        ASSERT_OK(b, cf_store_enroll_policy_get(st, owner, &got, &err));
        assert_memory_equal(&got, &q, sizeof q);
        /* The owner must exist. */
        assert_int_not_equal(cf_store_enroll_policy_set(st, owner + 100, &q, &err), CF_OK);
        cf_store_close(st);
    }
}

static void test_device_found_only_by_its_exact_birth_certificate(void **state)
{
    (void)state;
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_store *st = open_fresh(b);
        cf_error err = {0};
        cf_enroll_device d = {0};
        cf_enroll_birth found = {0};
        onboard_two(b, st);
        ASSERT_OK(b,
                  cf_store_enroll_birth_get(st, FPR_A, birth_a, sizeof birth_a, 0, &found, &err));
        d = found.dev; /* taken: cleared below */
        assert_string_equal(d.id, "dev-a");
        assert_int_equal(d.state, CF_DEVICE_ON_HOLD);
        assert_int_equal(d.owner_id, 0);
        assert_null(d.owner);
        assert_int_equal(d.blocked, 0);
        assert_int_equal(d.birth_der_len, sizeof birth_a);
        assert_memory_equal(d.birth_der, birth_a, sizeof birth_a);
        assert_string_equal(d.key_fpr, FPR_A);
        assert_int_equal(d.pending_us, 0);
        assert_int_equal(d.approved_us, 0);
        cf_enroll_device_clear(&d);

        /* The right key with another certificate, another key with the right certificate. */
        assert_int_equal(
            cf_store_enroll_birth_get(st, FPR_A, birth_b, sizeof birth_b, 0, &found, &err),
            CF_ERR_NOT_FOUND);
        assert_int_equal(
            cf_store_enroll_birth_get(st, FPR_B, birth_a, sizeof birth_a, 0, &found, &err),
            CF_ERR_NOT_FOUND);

        /* Locks only inside a transaction. */
        assert_int_equal(cf_store_enroll_device_get(st, "dev-b", 1, &d, &err), CF_ERR_INTERNAL);
        ASSERT_OK(b, cf_store_begin(st, &err));
        ASSERT_OK(b, cf_store_enroll_device_get(st, "dev-b", 1, &d, &err));
        assert_string_equal(d.id, "dev-b");
        cf_enroll_device_clear(&d);
        ASSERT_OK(b,
                  cf_store_enroll_birth_get(st, FPR_B, birth_b, sizeof birth_b, 0, &found, &err));
        assert_string_equal(found.dev.id, "dev-b");
        cf_enroll_birth_clear(&found);
        ASSERT_OK(b, cf_store_commit(st, &err));
        assert_int_equal(cf_store_enroll_device_get(st, "nope", 0, &d, &err), CF_ERR_NOT_FOUND);
        assert_non_null(strstr(err.msg, "nope"));
        cf_store_close(st);
    }
}

static void test_pending_marked_once_and_cleared_with_approval(void **state)
{
    (void)state;
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_store *st = open_fresh(b);
        cf_error err = {0};
        cf_enroll_device d = {0};
        int marked = -1;
        onboard_two(b, st);
        ASSERT_OK(b, cf_store_enroll_mark_pending(st, "dev-a", 1000, &marked, &err));
        assert_int_equal(marked, 1);
        ASSERT_OK(b, cf_store_enroll_mark_pending(st, "dev-a", 2000, &marked, &err));
        assert_int_equal(marked, 0);
        ASSERT_OK(b, cf_store_enroll_set_approved(st, "dev-a", 3000, &err));
        ASSERT_OK(b, cf_store_enroll_device_get(st, "dev-a", 0, &d, &err));
        assert_int_equal(d.pending_us, 1000);
        assert_int_equal(d.approved_us, 3000);
        cf_enroll_device_clear(&d);

        ASSERT_OK(b, cf_store_enroll_done(st, "dev-a", &err));
        ASSERT_OK(b, cf_store_enroll_device_get(st, "dev-a", 0, &d, &err));
        assert_int_equal(d.pending_us, 0);
        assert_int_equal(d.approved_us, 0);
        cf_enroll_device_clear(&d);

        ASSERT_OK(b, cf_store_enroll_set_approved(st, "dev-b", 7, &err));
        ASSERT_OK(b, cf_store_enroll_set_approved(st, "dev-b", 0, &err));
        ASSERT_OK(b, cf_store_enroll_device_get(st, "dev-b", 0, &d, &err));
        assert_int_equal(d.approved_us, 0);
        cf_enroll_device_clear(&d);
        assert_int_equal(cf_store_enroll_set_approved(st, "nope", 1, &err), CF_ERR_NOT_FOUND);
        cf_store_close(st);
    }
}

static int64_t insert_ca(int b, cf_store *st)
{
    cf_error err = {0};
    unsigned char der[16] = {0x30};
    cf_ca_rec r = {.name = "issuing-1",
                   .role = CF_CA_ISSUING,
                   .subject = "CN=x",
                   .key_ref = "k",
                   .der = der,
                   .der_len = sizeof der,
                   .not_before = 1,
                   .not_after = 4102444800,
                   .status = CF_CA_ACTIVE,
                   .created_us = 1};
    ASSERT_OK(b, cf_store_ca_insert(st, &r, &err));
    return r.id;
}

static void insert_cert(int b, cf_store *st, int64_t ca, const char *serial, int64_t not_after)
{
    cf_error err = {0};
    unsigned char der[8] = {0x30, 0x06};
    cf_cert_rec r = {.ca_id = ca,
                     .device_id = "dev-a",
                     .subject = "CN=dev-a",
                     .not_before = 1,
                     .not_after = not_after,
                     .issued_us = 1,
                     .der = der,
                     .der_len = sizeof der,
                     .status = CF_CERT_GOOD,
                     .reason = -1};
    snprintf(r.serial, sizeof r.serial, "%s", serial);
    ASSERT_OK(b, cf_store_cert_insert(st, &r, &err));
}

static void test_supersession_revokes_only_due_good_certificates(void **state)
{
    (void)state;
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_store *st = open_fresh(b);
        cf_error err = {0};
        cf_superseded *v = NULL;
        size_t n = 99;
        int64_t good = -1;
        char **serials = NULL;
        size_t nrev = 0;
        onboard_two(b, st);
        int64_t ca = insert_ca(b, st);
        insert_cert(b, st, ca, "0A", 4102444800);
        insert_cert(b, st, ca, "0B", 4102444800);
        insert_cert(b, st, ca, "0C", 4102444800);
        insert_cert(b, st, ca, "0D", 500); /* expired at 500 */
        ASSERT_OK(b, cf_store_device_good_certs(st, "dev-a", 100, &good, &err));
        assert_int_equal(good, 4);
        ASSERT_OK(b, cf_store_device_good_certs(st, "dev-a", 600, &good, &err));
        assert_int_equal(good, 3);

        ASSERT_OK(b, cf_store_cert_supersede_at(st, "0A", "0B", 100, &err));
        ASSERT_OK(b, cf_store_cert_supersede_at(st, "0B", "0C", 200, &err));
        assert_int_equal(cf_store_cert_supersede_at(st, "FF", "0C", 200, &err), CF_ERR_NOT_FOUND);

        ASSERT_OK(b, cf_store_cert_supersede_count(st, 99, &good, &err));
        assert_int_equal(good, 0);
        ASSERT_OK(b, cf_store_cert_supersede_count(st, 200, &good, &err));
        assert_int_equal(good, 2);
        ASSERT_OK(b, cf_store_begin(st, &err));
        ASSERT_OK(b, cf_store_cert_supersede_due(st, 99, 4, 7, &v, &n, &err));
        assert_int_equal(n, 0);
        cf_superseded_free(v, n);
        ASSERT_OK(b, cf_store_cert_supersede_due(st, 150, 4, 7, &v, &n, &err));
        assert_int_equal(n, 1);
        assert_string_equal(v[0].serial, "0A");
        assert_string_equal(v[0].by, "0B");
        assert_string_equal(v[0].device_id, "dev-a");
        cf_superseded_free(v, n);
        ASSERT_OK(b, cf_store_commit(st, &err));

        cf_cert_rec c = {0};
        ASSERT_OK(b, cf_store_cert_get(st, "0A", &c, &err));
        assert_int_equal(c.status, CF_CERT_REVOKED);
        assert_int_equal(c.reason, 4);
        assert_int_equal(c.revoked_us, 7);
        cf_cert_rec_clear(&c);
        ASSERT_OK(b, cf_store_cert_get(st, "0B", &c, &err));
        assert_int_equal(c.status, CF_CERT_GOOD);
        cf_cert_rec_clear(&c);
        /* Revoked meanwhile for another reason: its schedule is dropped, not revoked twice. */
        assert_int_equal(cf_store_cert_supersede_at(st, "0A", "0C", 100, &err), CF_ERR_NOT_FOUND);
        ASSERT_OK(b, cf_store_begin(st, &err));
        ASSERT_OK(b, cf_store_cert_revoke_device(st, "dev-a", 1, 0, 1, 8, &serials, &nrev, &err));
        ASSERT_OK(b, cf_store_cert_supersede_due(st, 1000, 4, 9, &v, &n, &err));
        assert_int_equal(n, 0);
        cf_superseded_free(v, n);
        ASSERT_OK(b, cf_store_commit(st, &err));
        assert_int_equal(nrev, 3);
        cf_store_strings_free(serials, nrev);
        ASSERT_OK(b, cf_store_cert_get(st, "0B", &c, &err));
        assert_int_equal(c.reason, 1);
        cf_cert_rec_clear(&c);
        cf_store_close(st);
    }
}

/* ---- through the fleet layer ---- */

static EVP_PKEY *new_key(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    assert_non_null(k);
    return k;
}

/* A self-signed stand-in for a birth certificate (its DER: OPENSSL_free). */
static int birth_cert(EVP_PKEY *key, const char *cn, unsigned char **der)
{
    X509 *x = X509_new();
    assert_non_null(x);
    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);
    *der = NULL;
    int n = i2d_X509(x, der);
    X509_free(x);
    assert_true(n > 0);
    return n;
}

/* A CSR (DER: OPENSSL_free) for key with subject O=org (when not NULL), CN=cn. */
static int csr_for(EVP_PKEY *key, const char *org, const char *cn, unsigned char **der)
{
    X509_REQ *r = X509_REQ_new();
    X509_NAME *n = X509_REQ_get_subject_name(r);
    if (org)
        X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC, (const unsigned char *)org, -1, -1, 0);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_REQ_set_pubkey(r, key);
    assert_true(X509_REQ_sign(r, key, EVP_sha256()) > 0);
    *der = NULL;
    int len = i2d_X509_REQ(r, der);
    X509_REQ_free(r);
    assert_true(len > 0);
    return len;
}

static void spki_hex(EVP_PKEY *key, char out[65])
{
    unsigned char *der = NULL, md[32];
    unsigned int mdlen;
    int n = i2d_PUBKEY(key, &der);
    assert_true(n > 0);
    EVP_Digest(der, (size_t)n, md, &mdlen, EVP_sha256(), NULL);
    OPENSSL_free(der);
    cf_hex_encode(md, 32, 0, out);
}

/* A new initialised fleet; dir and url (when not NULL) say where, to open it again. */
static cf_fleet *open_fleet_at(int b, char dir[700], char url[700])
{
    static int n;
    char d[700];
    cf_fleet *f = NULL;
    cf_error err = {0};
    const char *u = tu_fresh_store_url(b);
    if (!u)
        fail_msg("%s: no store (run through run_unit.sh)", tu_backend_name(b));
    snprintf(d, sizeof d, "%s/fleet-%d-%d", tu_tmpdir(), b, ++n);
    if (dir)
        snprintf(dir, 700, "%s", d);
    if (url)
        snprintf(url, 700, "%s", u);
    ASSERT_OK(b, cf_fleet_open(d, u, &f, &err));
    cf_init_opts o = {.org = "Unit", .key_type = CF_KEY_P256, .actor = "unit"};
    ASSERT_OK(b, cf_fleet_init(f, &o, &err));
    return f;
}

static cf_fleet *open_fleet(int b)
{
    return open_fleet_at(b, NULL, NULL);
}

/* Onboards device id with a birth certificate for bkey (its DER: *birth) and claims it for
 * a new owner acme. */
static int claimed_device(int b, cf_fleet *f, const char *id, EVP_PKEY *bkey, unsigned char **birth)
{
    static const cf_principal vendor = {.actor = "unit", .owner_id = 0, .role = CF_ROLE_ADMIN};
    cf_store *st = cf_fleet_store(f);
    cf_error err = {0};
    int64_t owner = 0, mfr = 0;
    char fpr[65];
    int blen = birth_cert(bkey, "sn0002", birth);
    spki_hex(bkey, fpr);
    ASSERT_OK(b, cf_fleet_owner_add(f, &vendor, "acme", &owner, &err));
    cf_import_rec imp = {.source = "m", .actor = "unit", .started_us = 1};
    cf_onboard_result ores;
    cf_onboard_device d = {id, "b1", NULL, NULL, *birth, (size_t)blen, fpr, 0, NULL};
    ASSERT_OK(b, cf_store_manufacturer_insert(st, "maker", *birth, (size_t)blen, &mfr, &err));
    imp.manufacturer_id = mfr;
    ASSERT_OK(b, cf_store_import_insert(st, &imp, &err));
    ASSERT_OK(b, cf_store_begin(st, &err));
    ASSERT_OK(b, cf_store_device_onboard(st, mfr, imp.id, &d, 1, &ores, &err));
    ASSERT_OK(b, cf_store_commit(st, &err));
    cf_claim_req claim = {.device_id = id, .owner = "acme"};
    ASSERT_OK(b, cf_fleet_device_claim(f, &vendor, &claim, &err));
    return blen;
}

static void test_fleet_enrolls_reenrolls_and_supersedes(void **state)
{
    (void)state;
    static const cf_principal vendor = {.actor = "unit", .owner_id = 0, .role = CF_ROLE_ADMIN};
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_fleet *f = open_fleet(b);
        cf_store *st = cf_fleet_store(f);
        cf_error err = {0};
        cf_enroll_result res = {0};
        int64_t owner = 0, mfr = 0;
        char fpr[65], serial1[CF_SERIAL_HEX_MAX];
        EVP_PKEY *bkey = new_key(), *k1 = new_key(), *k2 = new_key();
        unsigned char *birth = NULL, *csr1 = NULL, *csr2 = NULL, *op1 = NULL;
        int blen = birth_cert(bkey, "sn0001", &birth);
        int c1 = csr_for(k1, NULL, "dev-1", &csr1), c2 = csr_for(k2, "acme", "dev-1", &csr2);
        spki_hex(bkey, fpr);

        ASSERT_OK(b, cf_fleet_owner_add(f, &vendor, "acme", &owner, &err));
        cf_import_rec imp = {.source = "m", .actor = "unit", .started_us = 1};
        cf_onboard_result ores;
        cf_onboard_device d = {"dev-1", "b1", NULL, NULL, birth, (size_t)blen, fpr, 0, NULL};
        ASSERT_OK(b, cf_store_manufacturer_insert(st, "maker", birth, (size_t)blen, &mfr, &err));
        imp.manufacturer_id = mfr;
        ASSERT_OK(b, cf_store_import_insert(st, &imp, &err));
        ASSERT_OK(b, cf_store_begin(st, &err));
        ASSERT_OK(b, cf_store_device_onboard(st, mfr, imp.id, &d, 1, &ores, &err));
        ASSERT_OK(b, cf_store_commit(st, &err));

        /* On hold: refused, naming the state. */
        cf_enroll_req req = {.client_der = birth,
                             .client_der_len = (size_t)blen,
                             .csr = csr1,
                             .csr_len = (size_t)c1};
        assert_int_equal(cf_fleet_enroll(f, &req, &res, &err), CF_ERR_POLICY);
        assert_int_equal(res.unauthenticated, 0);
        assert_non_null(strstr(err.msg, "on_hold"));
        assert_string_equal(res.device, "dev-1");

        cf_claim_req claim = {.device_id = "dev-1", .owner = "acme"};
        ASSERT_OK(b, cf_fleet_device_claim(f, &vendor, &claim, &err));
        ASSERT_OK(b, cf_fleet_enroll(f, &req, &res, &err));
        assert_non_null(res.cert.der);
        assert_int_equal(res.pending, 0);
        snprintf(serial1, sizeof serial1, "%s", res.cert.serial);
        int op1_len = (int)res.cert.der_len;
        op1 = OPENSSL_memdup(res.cert.der, res.cert.der_len);
        cf_enroll_result_clear(&res);
        cf_device_state ds;
        ASSERT_OK(b, cf_store_device_get_state(st, "dev-1", &ds, &err));
        assert_int_equal(ds, CF_DEVICE_ACTIVE);
        /* Active with a good certificate: a state conflict. */
        assert_int_equal(cf_fleet_enroll(f, &req, &res, &err), CF_ERR_STATE);

        /* Not a birth certificate of any device. */
        cf_enroll_req stranger = {.client_der = op1,
                                  .client_der_len = (size_t)op1_len,
                                  .csr = csr1,
                                  .csr_len = (size_t)c1};
        assert_int_not_equal(cf_fleet_enroll(f, &stranger, &res, &err), CF_OK);
        assert_int_equal(res.unauthenticated, 1);

        /* Re-enrollment, grace 0: the old certificate is revoked in the same transaction. */
        cf_enroll_policy pol;
        ASSERT_OK(b, cf_fleet_enroll_policy_get(f, &vendor, "acme", &pol, &err));
        assert_int_equal(pol.reenroll_grace_s, CF_ENROLL_GRACE_DEFAULT_S);
        pol.reenroll_grace_s = 0;
        ASSERT_OK(b, cf_fleet_enroll_policy_set(f, &vendor, "acme", &pol, &err));
        cf_enroll_req re = {.client_der = op1,
                            .client_der_len = (size_t)op1_len,
                            .csr = csr1,
                            .csr_len = (size_t)c1};
        assert_int_equal(cf_fleet_reenroll(f, &re, &res, &err), CF_ERR_INVALID); /* subject */
        re.csr = csr2;
        re.csr_len = (size_t)c2;
        ASSERT_OK(b, cf_fleet_reenroll(f, &re, &res, &err));
        assert_non_null(res.cert.der);
        cf_enroll_result_clear(&res);
        cf_cert_rec c = {0};
        ASSERT_OK(b, cf_store_cert_get(st, serial1, &c, &err));
        assert_int_equal(c.status, CF_CERT_REVOKED);
        assert_int_equal(c.reason, CF_REASON_SUPERSEDED);
        cf_cert_rec_clear(&c);
        assert_int_not_equal(cf_fleet_reenroll(f, &re, &res, &err), CF_OK);
        assert_int_equal(res.unauthenticated, 1);
        assert_non_null(strstr(err.msg, "revoked"));

        OPENSSL_free(birth);
        OPENSSL_free(csr1);
        OPENSSL_free(csr2);
        OPENSSL_free(op1);
        EVP_PKEY_free(bkey);
        EVP_PKEY_free(k1);
        EVP_PKEY_free(k2);
        cf_fleet_close(f);
    }
}

typedef struct {
    cf_fleet *f;
    cf_enroll_req req;
    pthread_barrier_t *start;
    cf_err rc;
    cf_error err;
} racer;

static void *race(void *arg)
{
    racer *r = arg;
    cf_enroll_result res = {0};
    pthread_barrier_wait(r->start);
    r->rc = cf_fleet_enroll(r->f, &r->req, &res, &r->err);
    cf_enroll_result_clear(&res);
    return NULL;
}

/* Two connections enroll one device with its birth certificate at the same moment: one
 * certificate, and the other gets the state conflict (the device row's lock decides). */
static void test_concurrent_birth_enrollments_issue_once(void **state)
{
    (void)state;
    for (int b = 0; b < TU_BACKENDS; b++) {
        char dir[700], url[700];
        cf_fleet *f1 = open_fleet_at(b, dir, url), *f2 = NULL;
        cf_error err = {0};
        EVP_PKEY *bkey = new_key(), *k1 = new_key(), *k2 = new_key();
        unsigned char *birth = NULL, *csr1 = NULL, *csr2 = NULL;
        int blen = claimed_device(b, f1, "dev-r", bkey, &birth);
        int c1 = csr_for(k1, NULL, "dev-r", &csr1), c2 = csr_for(k2, NULL, "dev-r", &csr2);
        ASSERT_OK(b, cf_fleet_open(dir, url, &f2, &err));
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, 2);
        racer r[2] = {
            {f1, {birth, (size_t)blen, csr1, (size_t)c1, NULL, NULL}, &start, CF_OK, {0}},
            {f2, {birth, (size_t)blen, csr2, (size_t)c2, NULL, NULL}, &start, CF_OK, {0}},
        };
        pthread_t t[2];
        for (int i = 0; i < 2; i++)
            assert_int_equal(pthread_create(&t[i], NULL, race, &r[i]), 0);
        for (int i = 0; i < 2; i++)
            pthread_join(t[i], NULL);
        pthread_barrier_destroy(&start);
        if (!((r[0].rc == CF_OK && r[1].rc == CF_ERR_STATE) ||
              (r[1].rc == CF_OK && r[0].rc == CF_ERR_STATE)))
            fail_msg("%s: expected one enrollment and one conflict, got %s (%s) and %s (%s)",
                     tu_backend_name(b), cf_err_name(r[0].rc), r[0].err.msg, cf_err_name(r[1].rc),
                     r[1].err.msg);
        int64_t good = 0;
        ASSERT_OK(b,
                  cf_store_device_good_certs(cf_fleet_store(f1), "dev-r", time(NULL), &good, &err));
        assert_int_equal(good, 1);
        OPENSSL_free(birth);
        OPENSSL_free(csr1);
        OPENSSL_free(csr2);
        EVP_PKEY_free(bkey);
        EVP_PKEY_free(k1);
        EVP_PKEY_free(k2);
        cf_fleet_close(f2);
        cf_fleet_close(f1);
    }
}

/* The read before signing brings the device, its owner's policy (none: has_policy 0) and,
 * for an active device only, its good certificates. */
static void test_birth_read_brings_policy_and_good_certificates(void **state)
{
    (void)state;
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_store *st = open_fresh(b);
        cf_error err = {0};
        cf_enroll_birth r = {0};
        int64_t owner = 0;
        onboard_two(b, st);
        ASSERT_OK(b, cf_store_enroll_birth_get(st, FPR_A, birth_a, sizeof birth_a, 100, &r, &err));
        assert_string_equal(r.dev.id, "dev-a");
        assert_int_equal(r.dev.state, CF_DEVICE_ON_HOLD);
        assert_int_equal(r.has_policy, 0);
        assert_int_equal(r.good_certs, 0);
        cf_enroll_birth_clear(&r);
        assert_int_equal(
            cf_store_enroll_birth_get(st, FPR_A, birth_b, sizeof birth_b, 100, &r, &err),
            CF_ERR_NOT_FOUND);

        ASSERT_OK(b, cf_store_owner_insert(st, "acme", cf_time_now_us(), &owner, &err));
        cf_enroll_policy p = {.require_approval = 1, .reenroll_grace_s = 77, .updated_us = 5};
        ASSERT_OK(b, cf_store_enroll_policy_set(st, owner, &p, &err));
        ASSERT_OK(b, cf_store_device_set_owner(st, "dev-a", owner, CF_DEVICE_CLAIMED, &err));
        int64_t ca = insert_ca(b, st);
        insert_cert(b, st, ca, "0A", 4102444800);
        ASSERT_OK(b, cf_store_enroll_birth_get(st, FPR_A, birth_a, sizeof birth_a, 100, &r, &err));
        assert_int_equal(r.dev.owner_id, owner);
        assert_string_equal(r.dev.owner, "acme");
        assert_int_equal(r.has_policy, 1);
        assert_memory_equal(&r.policy, &p, sizeof p);
        assert_int_equal(r.good_certs, 0); /* claimed: not counted */
        cf_enroll_birth_clear(&r);

        ASSERT_OK(b, cf_store_device_set_state(st, "dev-a", CF_DEVICE_ACTIVE, &err));
        ASSERT_OK(b, cf_store_enroll_birth_get(st, FPR_A, birth_a, sizeof birth_a, 100, &r, &err));
        assert_int_equal(r.good_certs, 1);
        cf_enroll_birth_clear(&r);
        ASSERT_OK(
            b, cf_store_enroll_birth_get(st, FPR_A, birth_a, sizeof birth_a, 4102444800, &r, &err));
        assert_int_equal(r.good_certs, 0); /* expired by then */
        cf_enroll_birth_clear(&r);
        cf_store_close(st);
    }
}

/* Activation in one statement: only a claimed device that is not blocked, of the label's
 * owner, approved when approval is needed; anything else changes nothing. */
static void test_activate_only_a_claimed_admissible_device(void **state)
{
    (void)state;
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_store *st = open_fresh(b);
        cf_error err = {0};
        cf_enroll_device d = {0};
        int64_t owner = 0, other = 0, got = -1;
        int done = -1;
        onboard_two(b, st);
        ASSERT_OK(b, cf_store_owner_insert(st, "acme", cf_time_now_us(), &owner, &err));
        ASSERT_OK(b, cf_store_owner_insert(st, "other", cf_time_now_us(), &other, &err));
        /* Outside a transaction: refused. */
        assert_int_equal(cf_store_enroll_activate(st, "dev-a", 0, 0, &done, &got, &err),
                         CF_ERR_INTERNAL);

        ASSERT_OK(b, cf_store_begin(st, &err));
        ASSERT_OK(b, cf_store_enroll_activate(st, "dev-a", 0, 0, &done, &got, &err));
        assert_int_equal(done, 0); /* on hold */
        ASSERT_OK(b, cf_store_enroll_activate(st, "nope", 0, 0, &done, &got, &err));
        assert_int_equal(done, 0);
        ASSERT_OK(b, cf_store_device_set_owner(st, "dev-a", owner, CF_DEVICE_CLAIMED, &err));
        ASSERT_OK(b, cf_store_device_set_owner(st, "dev-b", owner, CF_DEVICE_CLAIMED, &err));
        ASSERT_OK(b, cf_store_enroll_activate(st, "dev-a", other, 0, &done, &got, &err));
        assert_int_equal(done, 0); /* another owner's label */
        ASSERT_OK(b, cf_store_enroll_activate(st, "dev-a", 0, 1, &done, &got, &err));
        assert_int_equal(done, 0); /* not approved */
        ASSERT_OK(b, cf_store_device_set_blocked(st, "dev-b", 9, &err));
        ASSERT_OK(b, cf_store_enroll_activate(st, "dev-b", 0, 0, &done, &got, &err));
        assert_int_equal(done, 0); /* blocked */
        ASSERT_OK(b, cf_store_enroll_device_get(st, "dev-a", 1, &d, &err));
        assert_int_equal(d.state, CF_DEVICE_CLAIMED);
        cf_enroll_device_clear(&d);

        ASSERT_OK(b, cf_store_enroll_mark_pending(st, "dev-a", 10, &done, &err));
        ASSERT_OK(b, cf_store_enroll_set_approved(st, "dev-a", 11, &err));
        ASSERT_OK(b, cf_store_enroll_activate(st, "dev-a", owner, 1, &done, &got, &err));
        assert_int_equal(done, 1);
        assert_int_equal(got, owner);
        ASSERT_OK(b, cf_store_enroll_device_get(st, "dev-a", 1, &d, &err));
        assert_int_equal(d.state, CF_DEVICE_ACTIVE);
        assert_int_equal(d.pending_us, 0);
        assert_int_equal(d.approved_us, 0);
        cf_enroll_device_clear(&d);
        /* Active now: left to the caller. */
        ASSERT_OK(b, cf_store_enroll_activate(st, "dev-a", 0, 0, &done, &got, &err));
        assert_int_equal(done, 0);
        ASSERT_OK(b, cf_store_commit(st, &err));
        cf_store_close(st);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy_absent_until_set_then_replaced),
        cmocka_unit_test(test_device_found_only_by_its_exact_birth_certificate),
        cmocka_unit_test(test_pending_marked_once_and_cleared_with_approval),
        cmocka_unit_test(test_supersession_revokes_only_due_good_certificates),
        cmocka_unit_test(test_fleet_enrolls_reenrolls_and_supersedes),
        cmocka_unit_test(test_concurrent_birth_enrollments_issue_once),
        cmocka_unit_test(test_birth_read_brings_policy_and_good_certificates),
        cmocka_unit_test(test_activate_only_a_claimed_admissible_device),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
