/* Unit tests of src/fleet/revoke and src/store/revocation: revocation by every selector,
 * no-ops, hold and release, blocking and readmitting, CRLs and their numbers, on both store
 * backends. CRLs are read back by OpenSSL's parser and verified with the CA's key. */
#include "testutil.h"

#include <openssl/ocsp.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "core/util.h"
#include "fleet/revoke.h"

static const cf_principal vendor = {.actor = "unit", .owner_id = 0, .role = CF_ROLE_ADMIN};

typedef struct {
    cf_fleet *f;
    char dir[700];
    const char *url;
    int backend;
} fx;

static fx *open_fx(int backend)
{
    static int n;
    fx *x = calloc(1, sizeof *x);
    cf_error err;
    x->backend = backend;
    x->url = tu_fresh_store_url(backend);
    if (!x->url)
        fail_msg("no %s store available (is CF_TEST_PG_URL set?)", tu_backend_name(backend));
    x->url = strdup(x->url);
    snprintf(x->dir, sizeof x->dir, "%s/revoke-%d-%d", tu_tmpdir(), backend, ++n);
    if (cf_fleet_open(x->dir, x->url, &x->f, &err) != CF_OK)
        fail_msg("%s: %s", x->url, err.msg);
    cf_init_opts o = {.org = "Unit", .key_type = CF_KEY_P256, .actor = "unit"};
    if (cf_fleet_init(x->f, &o, &err) != CF_OK)
        fail_msg("init: %s", err.msg);
    return x;
}

static void close_fx(fx *x)
{
    cf_fleet_close(x->f);
    free((char *)x->url);
    free(x);
}

/* Issues a certificate to device id and returns its serial. */
static void issue(fx *x, const char *id, char serial[41])
{
    size_t len;
    char *csr = tu_make_csr("ec:P-256", &len);
    cf_issue_req req = {
        .csr = (unsigned char *)csr, .csr_len = len, .device_id = id, .actor = "unit"};
    cf_signed_cert cert;
    cf_error err;
    if (cf_fleet_issue(x->f, &req, &cert, &err) != CF_OK)
        fail_msg("issue %s: %s", id, err.msg);
    memcpy(serial, cert.serial, CF_SERIAL_HEX_MAX);
    cf_signed_cert_clear(&cert);
    free(csr);
}

static int64_t audit_seq(fx *x)
{
    int64_t seq;
    unsigned char h[CF_HASH_LEN];
    cf_error err;
    assert_int_equal(cf_store_audit_head(cf_fleet_store(x->f), &seq, h, &err), CF_OK);
    return seq;
}

static cf_cert_state state_of(fx *x, const char *serial)
{
    cf_cert_rec c;
    cf_cert_state s;
    cf_error err;
    assert_int_equal(cf_store_cert_get(cf_fleet_store(x->f), serial, &c, &err), CF_OK);
    assert_int_equal(cf_store_cert_state(cf_fleet_store(x->f), c.ca_id, serial, &s, &err), CF_OK);
    cf_cert_rec_clear(&c);
    return s;
}

static cf_err revoke(fx *x, const cf_principal *p, cf_cert_sel_kind kind, const char *target,
                     int reason, cf_revoke_result *res, cf_error *err)
{
    cf_revoke_req req = {.kind = kind, .target = target, .reason = reason};
    return cf_fleet_revoke(x->f, p, &req, res, err);
}

static X509_CRL *crl_of(fx *x, int delta, cf_crl_info *info)
{
    unsigned char *der;
    size_t len;
    cf_error err;
    if (cf_fleet_crl(x->f, NULL, 0, delta, &der, &len, info, &err) != CF_OK)
        fail_msg("crl: %s", err.msg);
    const unsigned char *p = der;
    X509_CRL *crl = d2i_X509_CRL(NULL, &p, (long)len);
    assert_non_null(crl);
    X509 *issuing, *root;
    assert_int_equal(cf_fleet_chain(x->f, &issuing, &root, &err), CF_OK);
    assert_int_equal(X509_CRL_verify(crl, X509_get0_pubkey(issuing)), 1);
    OPENSSL_free(der);
    return crl;
}

/* The reason code of serial in crl, -1 when absent from it, -2 when listed without one. */
static int crl_reason(X509_CRL *crl, const char *serial)
{
    STACK_OF(X509_REVOKED) *revs = X509_CRL_get_REVOKED(crl);
    for (int i = 0; i < sk_X509_REVOKED_num(revs); i++) {
        X509_REVOKED *r = sk_X509_REVOKED_value(revs, i);
        BIGNUM *bn = ASN1_INTEGER_to_BN(X509_REVOKED_get0_serialNumber(r), NULL);
        char *hex = BN_bn2hex(bn);
        int match = strcmp(hex, serial) == 0;
        OPENSSL_free(hex);
        BN_free(bn);
        if (!match)
            continue;
        int crit;
        ASN1_ENUMERATED *e = X509_REVOKED_get_ext_d2i(r, NID_crl_reason, &crit, NULL);
        int code = e ? (int)ASN1_ENUMERATED_get(e) : -2;
        ASN1_ENUMERATED_free(e);
        return code;
    }
    return -1;
}

static void test_revoke_serial_then_again_is_a_no_op(int backend)
{
    fx *x = open_fx(backend);
    char s1[41], s2[41];
    cf_revoke_result res;
    cf_error err;
    issue(x, "dev-1", s1);
    issue(x, "dev-2", s2);
    int64_t before = audit_seq(x);
    assert_int_equal(revoke(x, &vendor, CF_SEL_SERIAL, s1, CF_CRL_KEY_COMPROMISE, &res, &err),
                     CF_OK);
    assert_int_equal(res.revoked, 1);
    assert_int_equal(res.seq, before + 1);
    assert_int_equal(audit_seq(x), before + 1);
    cf_cert_state st = state_of(x, s1);
    assert_int_equal(st.status, CF_CERT_REVOKED);
    assert_int_equal(st.reason, CF_CRL_KEY_COMPROMISE);
    assert_int_equal(st.status_seq, before + 1);
    assert_int_equal(state_of(x, s2).status, CF_CERT_GOOD);

    /* again: nothing changes, no record */
    assert_int_equal(revoke(x, &vendor, CF_SEL_SERIAL, s1, CF_CRL_SUPERSEDED, &res, &err), CF_OK);
    assert_int_equal(res.revoked, 0);
    assert_int_equal(res.already, 1);
    assert_int_equal(audit_seq(x), before + 1);
    assert_int_equal(state_of(x, s1).reason, CF_CRL_KEY_COMPROMISE);

    /* lower-case with colons names the same certificate; an unknown one is not found */
    char colons[64] = "";
    for (size_t i = 0; s2[i]; i += 2)
        snprintf(colons + strlen(colons), sizeof colons - strlen(colons), "%s%c%c", i ? ":" : "",
                 s2[i] | 0x20, s2[i + 1] | 0x20);
    assert_int_equal(revoke(x, &vendor, CF_SEL_SERIAL, colons, -1, &res, &err), CF_OK);
    assert_int_equal(res.revoked, 1);
    assert_int_equal(revoke(x, &vendor, CF_SEL_SERIAL, "ABCDEF", -1, &res, &err), CF_ERR_NOT_FOUND);
    assert_int_equal(revoke(x, &vendor, CF_SEL_SERIAL, "XYZ", -1, &res, &err), CF_ERR_INVALID);

    cf_audit_verify_result vr;
    assert_int_equal(cf_audit_verify(cf_fleet_store(x->f), &vr, &err), CF_OK);
    assert_int_equal(vr.bad_seq, 0);
    close_fx(x);
}

static void test_revoke_device_sets_state_and_readmit(int backend)
{
    fx *x = open_fx(backend);
    char s1[41], s2[41];
    cf_revoke_result res;
    cf_error err;
    cf_device_state state;
    issue(x, "dev-1", s1);
    issue(x, "dev-1", s2);
    cf_store *st = cf_fleet_store(x->f);
    assert_int_equal(
        revoke(x, &vendor, CF_SEL_DEVICE, "dev-1", CF_CRL_CESSATION_OF_OPERATION, &res, &err),
        CF_OK);
    assert_int_equal(res.revoked, 2);
    assert_int_equal(cf_store_device_get_state(st, "dev-1", &state, &err), CF_OK);
    assert_int_equal(state, CF_DEVICE_REVOKED);
    assert_int_equal(revoke(x, &vendor, CF_SEL_DEVICE, "nobody", -1, &res, &err), CF_ERR_NOT_FOUND);

    assert_int_equal(cf_fleet_device_readmit(x->f, &vendor, "dev-1", &err), CF_OK);
    assert_int_equal(cf_store_device_get_state(st, "dev-1", &state, &err), CF_OK);
    assert_int_equal(state, CF_DEVICE_ON_HOLD); /* the vendor's own device */
    assert_int_equal(cf_fleet_device_readmit(x->f, &vendor, "dev-1", &err), CF_ERR_POLICY);
    assert_non_null(strstr(err.msg, "only a revoked device"));
    close_fx(x);
}

static void test_block_birth_is_for_good(int backend)
{
    fx *x = open_fx(backend);
    char s1[41];
    cf_revoke_result res;
    cf_error err;
    issue(x, "dev-1", s1);
    assert_int_equal(cf_fleet_block_birth(x->f, &vendor, "dev-1", -1, &res, &err), CF_OK);
    assert_int_equal(res.revoked, 1);
    assert_int_equal(state_of(x, s1).reason, CF_CRL_KEY_COMPROMISE);
    assert_int_equal(cf_fleet_block_birth(x->f, &vendor, "dev-1", -1, &res, &err), CF_ERR_EXISTS);
    assert_int_equal(cf_fleet_device_readmit(x->f, &vendor, "dev-1", &err), CF_ERR_POLICY);
    assert_non_null(strstr(err.msg, "blocked for good"));
    close_fx(x);
}

static void test_hold_release_and_delta_crl(int backend)
{
    fx *x = open_fx(backend);
    char s1[41], s2[41], s3[41];
    cf_revoke_result res;
    cf_crl_info full, delta;
    cf_error err;
    issue(x, "dev-1", s1);
    issue(x, "dev-2", s2);
    issue(x, "dev-3", s3);
    /* a delta before any full CRL has no base */
    unsigned char *der;
    size_t len;
    assert_int_equal(cf_fleet_crl(x->f, NULL, 0, 1, &der, &len, NULL, &err), CF_ERR_STATE);

    assert_int_equal(revoke(x, &vendor, CF_SEL_SERIAL, s1, CF_CRL_CERTIFICATE_HOLD, &res, &err),
                     CF_OK);
    assert_int_equal(revoke(x, &vendor, CF_SEL_SERIAL, s2, CF_CRL_KEY_COMPROMISE, &res, &err),
                     CF_OK);
    X509_CRL *crl = crl_of(x, 0, &full);
    assert_int_equal(full.entries, 2);
    assert_int_equal(crl_reason(crl, s1), CF_CRL_CERTIFICATE_HOLD);
    assert_int_equal(crl_reason(crl, s2), CF_CRL_KEY_COMPROMISE);
    assert_int_equal(crl_reason(crl, s3), -1);
    X509_CRL_free(crl);

    /* releasing s2 is refused: only certificateHold is released */
    assert_int_equal(cf_fleet_release(x->f, &vendor, s2, &err), CF_ERR_POLICY);
    assert_int_equal(cf_fleet_release(x->f, &vendor, s1, &err), CF_OK);
    assert_int_equal(state_of(x, s1).status, CF_CERT_GOOD);
    assert_int_equal(revoke(x, &vendor, CF_SEL_SERIAL, s3, CF_CRL_SUPERSEDED, &res, &err), CF_OK);

    crl = crl_of(x, 1, &delta);
    int crit;
    ASN1_INTEGER *base = X509_CRL_get_ext_d2i(crl, NID_delta_crl, &crit, NULL);
    assert_non_null(base);
    assert_int_equal(ASN1_INTEGER_get(base), full.number);
    ASN1_INTEGER_free(base);
    assert_true(delta.number > full.number);
    assert_int_equal(crl_reason(crl, s3), CF_CRL_SUPERSEDED);
    assert_int_equal(crl_reason(crl, s1), CF_CRL_REMOVE_FROM_CRL);
    assert_int_equal(crl_reason(crl, s2), -1); /* in the base already */
    X509_CRL_free(crl);

    crl = crl_of(x, 0, &full);
    assert_int_equal(crl_reason(crl, s1), -1);
    assert_int_equal(crl_reason(crl, s3), CF_CRL_SUPERSEDED);
    X509_CRL_free(crl);
    close_fx(x);
}

static void test_crl_numbers_increase_across_store_handles(int backend)
{
    fx *x = open_fx(backend);
    cf_fleet *other;
    cf_error err;
    cf_crl_info a, b, c;
    assert_int_equal(cf_fleet_open(x->dir, x->url, &other, &err), CF_OK);
    X509_CRL_free(crl_of(x, 0, &a));
    unsigned char *der;
    size_t len;
    assert_int_equal(cf_fleet_crl(other, NULL, 0, 0, &der, &len, &b, &err), CF_OK);
    OPENSSL_free(der);
    X509_CRL_free(crl_of(x, 1, &c));
    assert_true(a.number < b.number);
    assert_true(b.number < c.number);
    assert_int_equal(c.base_number, b.number);
    cf_fleet_close(other);
    close_fx(x);
}

static void test_revoke_ca_stops_issuing(int backend)
{
    fx *x = open_fx(backend);
    char s1[41];
    cf_revoke_result res;
    cf_error err;
    issue(x, "dev-1", s1);
    cf_principal op = vendor;
    op.role = CF_ROLE_OPERATOR;
    assert_int_equal(revoke(x, &op, CF_SEL_CA, "issuing-1", -1, &res, &err), CF_ERR_POLICY);
    assert_int_equal(revoke(x, &vendor, CF_SEL_CA, "issuing-1", -1, &res, &err), CF_OK);
    assert_int_equal(res.revoked, 2); /* dev-1's, and the OCSP responder's that init made */
    assert_int_equal(state_of(x, s1).reason, CF_CRL_CA_COMPROMISE);
    cf_ca_rec ca;
    assert_int_equal(cf_store_ca_active(cf_fleet_store(x->f), CF_CA_ISSUING, &ca, &err),
                     CF_ERR_NOT_FOUND);
    /* a fresh handle (as a new process would be) refuses to issue */
    cf_fleet *other;
    assert_int_equal(cf_fleet_open(x->dir, x->url, &other, &err), CF_OK);
    size_t len;
    char *csr = tu_make_csr("ec:P-256", &len);
    cf_issue_req req = {
        .csr = (unsigned char *)csr, .csr_len = len, .device_id = "dev-2", .actor = "unit"};
    cf_signed_cert cert;
    assert_int_not_equal(cf_fleet_issue(other, &req, &cert, &err), CF_OK);
    free(csr);
    cf_fleet_close(other);
    close_fx(x);
}

static void test_scoped_callers(int backend)
{
    fx *x = open_fx(backend);
    char s1[41];
    cf_revoke_result res;
    cf_error err;
    int64_t a, b;
    assert_int_equal(cf_fleet_owner_add(x->f, &vendor, "alpha", &a, &err), CF_OK);
    assert_int_equal(cf_fleet_owner_add(x->f, &vendor, "beta", &b, &err), CF_OK);
    issue(x, "dev-1", s1);
    assert_int_equal(
        cf_store_device_set_owner(cf_fleet_store(x->f), "dev-1", b, CF_DEVICE_ACTIVE, &err), CF_OK);
    cf_principal alpha = {.actor = "token:1", .owner_id = a, .role = CF_ROLE_ADMIN};
    cf_principal auditor = {.actor = "token:2", .owner_id = b, .role = CF_ROLE_AUDITOR};
    assert_int_equal(revoke(x, &alpha, CF_SEL_DEVICE, "dev-1", -1, &res, &err), CF_ERR_NOT_FOUND);
    assert_int_equal(revoke(x, &alpha, CF_SEL_OWNER, "beta", -1, &res, &err), CF_ERR_NOT_FOUND);
    assert_int_equal(revoke(x, &alpha, CF_SEL_SERIAL, s1, -1, &res, &err), CF_ERR_NOT_FOUND);
    assert_int_equal(revoke(x, &auditor, CF_SEL_DEVICE, "dev-1", -1, &res, &err), CF_ERR_POLICY);
    assert_int_equal(revoke(x, &alpha, CF_SEL_CA, "issuing-1", -1, &res, &err), CF_ERR_POLICY);
    assert_int_equal(state_of(x, s1).status, CF_CERT_GOOD);
    cf_principal beta = {.actor = "token:3", .owner_id = b, .role = CF_ROLE_OPERATOR};
    assert_int_equal(revoke(x, &beta, CF_SEL_OWNER, "beta", -1, &res, &err), CF_OK);
    assert_int_equal(res.revoked, 1);
    close_fx(x);
}

static void test_change_feed(int backend)
{
    fx *x = open_fx(backend);
    char s1[41], s2[41];
    cf_revoke_result res;
    cf_error err;
    issue(x, "dev-1", s1);
    issue(x, "dev-2", s2);
    cf_store *st = cf_fleet_store(x->f);
    int64_t last;
    assert_int_equal(cf_store_change_last(st, &last, &err), CF_OK);
    assert_int_equal(last, 0);
    assert_int_equal(revoke(x, &vendor, CF_SEL_SERIAL, s1, -1, &res, &err), CF_OK);
    int64_t first = res.seq;
    assert_int_equal(revoke(x, &vendor, CF_SEL_CA, "issuing-1", -1, &res, &err), CF_OK);
    cf_change_rec *ch;
    size_t n;
    assert_int_equal(cf_store_changes_list(st, 0, 0, &ch, &n, &err), CF_OK);
    assert_int_equal(n, 2);
    assert_int_equal(ch[0].seq, first);
    assert_string_equal(ch[0].kind, "cert.revoke");
    assert_string_equal(ch[0].serial, s1);
    assert_string_equal(ch[0].device_id, "dev-1");
    assert_string_equal(ch[1].kind, "ca.revoke");
    assert_int_equal(ch[1].count, 2); /* what is left: the OCSP responder's certificate too */
    assert_null(ch[1].serial);
    for (size_t i = 0; i < n; i++)
        cf_change_rec_clear(&ch[i]);
    free(ch);
    assert_int_equal(cf_store_changes_list(st, first, 0, &ch, &n, &err), CF_OK);
    assert_int_equal(n, 1);
    cf_change_rec_clear(&ch[0]);
    free(ch);
    close_fx(x);
}

/* The change feed's bell: on SQLite every handle on the database sees it move after a
 * committed change (a revoke through another handle, as another process would), and not
 * after a rolled back one or a write that adds nothing to the feed; PostgreSQL has none. */
static void test_change_bell(int backend)
{
    fx *x = open_fx(backend);
    cf_fleet *other;
    cf_error err;
    char s1[41];
    cf_revoke_result res;
    assert_int_equal(cf_fleet_open(x->dir, x->url, &other, &err), CF_OK);
    cf_store *st = cf_fleet_store(x->f), *st2 = cf_fleet_store(other);
    int64_t before = cf_store_change_bell(st2);
    if (backend == TU_POSTGRES) {
        assert_int_equal(before, -1);
        cf_fleet_close(other);
        close_fx(x);
        return;
    }
    assert_true(before >= 0);
    assert_int_equal(cf_store_change_bell(st), before);
    issue(x, "dev-1", s1); /* a certificate and its audit record: nothing for the feed */
    assert_int_equal(cf_store_change_bell(st2), before);
    cf_change_rec ch = {.seq = 999, .time_us = 1, .kind = "test"};
    assert_int_equal(cf_store_begin(st, &err), CF_OK);
    assert_int_equal(cf_store_change_insert(st, &ch, &err), CF_OK);
    cf_store_rollback(st);
    assert_int_equal(cf_store_change_bell(st2), before);
    assert_int_equal(revoke(x, &vendor, CF_SEL_SERIAL, s1, -1, &res, &err), CF_OK);
    int64_t after = cf_store_change_bell(st2);
    assert_true(after > before);
    struct stat sb;
    char path[800];
    assert_int_equal(strncmp(x->url, "sqlite:", 7), 0);
    snprintf(path, sizeof path, "%s-changes", x->url + 7);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    cf_fleet_close(other);
    close_fx(x);
}

static X509_CRL *parse(unsigned char *der, size_t len)
{
    const unsigned char *p = der;
    X509_CRL *crl = d2i_X509_CRL(NULL, &p, (long)len);
    assert_non_null(crl);
    OPENSSL_free(der);
    return crl;
}

/* A builder keeps its entries: later full CRLs read only what is new, a release makes it
 * read all again, and its deltas are based on its own last full CRL. */
static void test_builder_is_incremental(int backend)
{
    fx *x = open_fx(backend);
    char s[4][41];
    cf_revoke_result res;
    cf_crl_builder *b;
    cf_crl_info info;
    unsigned char *der;
    size_t len;
    cf_error err;
    for (int i = 0; i < 4; i++) {
        char id[16];
        snprintf(id, sizeof id, "dev-%d", i);
        issue(x, id, s[i]);
    }
    assert_int_equal(cf_crl_builder_new(x->f, NULL, 0, &b, &err), CF_OK);
    assert_string_equal(cf_crl_builder_ca(b), "issuing-1");
    assert_int_equal(cf_crl_builder_delta(x->f, b, 0, &der, &len, &info, &err), CF_ERR_STATE);
    assert_int_equal(revoke(x, &vendor, CF_SEL_SERIAL, s[0], CF_CRL_CERTIFICATE_HOLD, &res, &err),
                     CF_OK);
    assert_int_equal(cf_crl_builder_full(x->f, b, 1, &der, &len, &info, &err), CF_OK);
    X509_CRL *crl = parse(der, len);
    assert_int_equal(info.entries, 1);
    int64_t first = info.number;
    X509_CRL_free(crl);

    assert_int_equal(revoke(x, &vendor, CF_SEL_SERIAL, s[1], -1, &res, &err), CF_OK);
    assert_int_equal(cf_crl_builder_full(x->f, b, 1, &der, &len, &info, &err), CF_OK);
    crl = parse(der, len);
    assert_int_equal(info.entries, 2);
    assert_int_equal(crl_reason(crl, s[1]), -2); /* unspecified: no reasonCode */
    assert_int_equal(info.change_seq, res.seq);
    X509_CRL_free(crl);
    int64_t base = info.number;

    assert_int_equal(revoke(x, &vendor, CF_SEL_SERIAL, s[2], CF_CRL_KEY_COMPROMISE, &res, &err),
                     CF_OK);
    assert_int_equal(cf_crl_builder_delta(x->f, b, 0, &der, &len, &info, &err), CF_OK);
    crl = parse(der, len);
    assert_int_equal(info.base_number, base);
    assert_int_equal(info.entries, 1);
    assert_int_equal(crl_reason(crl, s[2]), CF_CRL_KEY_COMPROMISE);
    X509_CRL_free(crl);

    assert_int_equal(cf_fleet_release(x->f, &vendor, s[0], &err), CF_OK);
    assert_int_equal(cf_crl_builder_full(x->f, b, 1, &der, &len, &info, &err), CF_OK);
    crl = parse(der, len);
    assert_int_equal(info.entries, 2);
    assert_int_equal(crl_reason(crl, s[0]), -1);
    assert_int_equal(crl_reason(crl, s[2]), CF_CRL_KEY_COMPROMISE);
    assert_true(info.number > first);
    X509_CRL_free(crl);
    cf_crl_builder_free(b);
    close_fx(x);
}

/* The distribution point URI of a certificate. */
static void cert_dp(fx *x, const char *serial, char *out, size_t len)
{
    cf_cert_rec c;
    X509 *cert;
    cf_error err;
    assert_int_equal(cf_store_cert_get(cf_fleet_store(x->f), serial, &c, &err), CF_OK);
    assert_int_equal(cf_x509_from_der(c.der, c.der_len, &cert, &err), CF_OK);
    CRL_DIST_POINTS *dps = X509_get_ext_d2i(cert, NID_crl_distribution_points, NULL, NULL);
    assert_non_null(dps);
    GENERAL_NAME *gn =
        sk_GENERAL_NAME_value(sk_DIST_POINT_value(dps, 0)->distpoint->name.fullname, 0);
    snprintf(out, len, "%s", (const char *)ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier));
    int has_freshest = X509_get_ext_by_NID(cert, NID_freshest_crl, -1) >= 0;
    assert_false(has_freshest); /* shards have no delta */
    sk_DIST_POINT_pop_free(dps, DIST_POINT_free);
    X509_free(cert);
    cf_cert_rec_clear(&c);
}

/* With shards of 2, one handle fills shard 1, then 2, then 3; each shard's CRL lists only
 * its own revocations and names itself in its Issuing Distribution Point. */
static void test_crl_shards(int backend)
{
    fx *x = open_fx(backend);
    char s[5][41], dp[256];
    cf_revoke_result res;
    cf_error err;
    cf_principal op = vendor;
    op.role = CF_ROLE_OPERATOR;
    assert_int_equal(cf_fleet_crl_shard_size_set(x->f, &op, 2, &err), CF_ERR_POLICY);
    assert_int_equal(cf_fleet_crl_shard_size_set(x->f, &vendor, -1, &err), CF_ERR_INVALID);
    assert_int_equal(cf_fleet_crl_shard_size_set(x->f, &vendor, 2, &err), CF_OK);
    /* a fresh handle reads the setting with its issuer */
    cf_fleet_close(x->f);
    assert_int_equal(cf_fleet_open(x->dir, x->url, &x->f, &err), CF_OK);
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof id, "dev-%d", i);
        issue(x, id, s[i]);
        cert_dp(x, s[i], dp, sizeof dp);
        char want[64];
        snprintf(want, sizeof want, "/crl/issuing-1-s%d.crl", i / 2 + 1);
        if (!strstr(dp, want))
            fail_msg("certificate %d: distribution point %s, expected ...%s", i, dp, want);
    }
    int64_t n;
    assert_int_equal(cf_store_crl_shards(cf_fleet_store(x->f), 2, &n, &err), CF_OK);
    assert_int_equal(n, 3);
    assert_int_equal(revoke(x, &vendor, CF_SEL_SERIAL, s[0], -1, &res, &err), CF_OK);
    assert_int_equal(revoke(x, &vendor, CF_SEL_SERIAL, s[3], -1, &res, &err), CF_OK);
    unsigned char *der;
    size_t len;
    cf_crl_info info;
    assert_int_equal(cf_fleet_crl(x->f, NULL, 1, 0, &der, &len, &info, &err), CF_OK);
    X509_CRL *crl = parse(der, len);
    assert_int_equal(info.entries, 1);
    assert_int_equal(crl_reason(crl, s[0]), -2);
    assert_int_equal(crl_reason(crl, s[3]), -1);
    int crit;
    ISSUING_DIST_POINT *idp =
        X509_CRL_get_ext_d2i(crl, NID_issuing_distribution_point, &crit, NULL);
    assert_non_null(idp);
    assert_int_equal(crit, 1);
    GENERAL_NAME *gn = sk_GENERAL_NAME_value(idp->distpoint->name.fullname, 0);
    assert_non_null(strstr((const char *)ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier),
                           "/crl/issuing-1-s1.crl"));
    ISSUING_DIST_POINT_free(idp);
    X509_CRL_free(crl);
    assert_int_equal(cf_fleet_crl(x->f, NULL, 2, 1, &der, &len, &info, &err), CF_ERR_INVALID);
    /* the CA's whole CRL still lists both */
    crl = crl_of(x, 0, &info);
    assert_int_equal(info.entries, 2);
    X509_CRL_free(crl);
    close_fx(x);
}

/* Revocations made by a transfer or a decommission reach the CRL, the certificates' status
 * numbers and the change feed like those of certfleet revoke. */
static void test_transfer_and_decommission_are_published(int backend)
{
    fx *x = open_fx(backend);
    char s1[41], s2[41];
    cf_error err;
    int64_t a, b, revoked = 0;
    int changed = 0;
    cf_store *st = cf_fleet_store(x->f);
    assert_int_equal(cf_fleet_owner_add(x->f, &vendor, "alpha", &a, &err), CF_OK);
    assert_int_equal(cf_fleet_owner_add(x->f, &vendor, "beta", &b, &err), CF_OK);
    assert_int_equal(cf_store_device_ensure(st, "dev-1", CF_DEVICE_CLAIMED, &changed, &err), CF_OK);
    assert_int_equal(cf_store_device_set_owner(st, "dev-1", a, CF_DEVICE_CLAIMED, &err), CF_OK);
    issue(x, "dev-1", s1);
    issue(x, "dev-2", s2);
    assert_int_equal(cf_fleet_device_transfer(x->f, &vendor, "dev-1", "beta", &revoked, &err),
                     CF_OK);
    assert_int_equal(revoked, 1);
    assert_true(state_of(x, s1).status_seq > 0);
    assert_int_equal(cf_fleet_device_set_state(x->f, &vendor, "dev-2", CF_DEVICE_DECOMMISSIONED,
                                               &changed, &revoked, &err),
                     CF_OK);
    assert_int_equal(revoked, 1);
    cf_crl_info info;
    X509_CRL *crl = crl_of(x, 0, &info);
    assert_int_equal(crl_reason(crl, s1), CF_CRL_AFFILIATION_CHANGED);
    assert_int_equal(crl_reason(crl, s2), CF_CRL_CESSATION_OF_OPERATION);
    X509_CRL_free(crl);
    cf_change_rec *ch;
    size_t n;
    assert_int_equal(cf_store_changes_list(st, 0, 0, &ch, &n, &err), CF_OK);
    assert_int_equal(n, 2);
    assert_string_equal(ch[0].kind, "device.transfer");
    assert_string_equal(ch[0].serial, s1);
    assert_string_equal(ch[1].kind, "device.decommission");
    for (size_t i = 0; i < n; i++)
        cf_change_rec_clear(&ch[i]);
    free(ch);
    cf_audit_verify_result vr;
    assert_int_equal(cf_audit_verify(st, &vr, &err), CF_OK);
    close_fx(x);
}

/* The delegated responder is made once, kept 0600, and answers for the issuing CA. */
static void test_ocsp_responder_made_once(int backend)
{
    fx *x = open_fx(backend);
    char s1[41], path[1024];
    cf_error err;
    cf_ocsp_responder *r;
    int64_t renew, seq;
    issue(x, "dev-1", s1);
    assert_int_equal(cf_fleet_ocsp_responder(x->f, &r, &renew, &err), CF_OK);
    assert_true(renew > (int64_t)time(NULL) + 19 * 86400);
    cf_ocsp_responder_free(r);
    seq = audit_seq(x);
    assert_int_equal(cf_fleet_ocsp_responder(x->f, &r, &renew, &err), CF_OK);
    assert_int_equal(audit_seq(x), seq); /* reused: nothing issued */
    snprintf(path, sizeof path, "%s/keys/ocsp-issuing-1.key", x->dir);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);

    /* a request for dev-1's certificate is matched to the CA and answered */
    X509 *issuing, *root, *leaf;
    cf_cert_rec c;
    assert_int_equal(cf_fleet_chain(x->f, &issuing, &root, &err), CF_OK);
    assert_int_equal(cf_store_cert_get(cf_fleet_store(x->f), s1, &c, &err), CF_OK);
    assert_int_equal(cf_x509_from_der(c.der, c.der_len, &leaf, &err), CF_OK);
    OCSP_REQUEST *req = OCSP_REQUEST_new();
    assert_non_null(OCSP_request_add0_id(req, OCSP_cert_to_id(EVP_sha256(), leaf, issuing)));
    unsigned char *der = NULL, *resp;
    size_t rlen;
    int len = i2d_OCSP_REQUEST(req, &der);
    cf_ocsp_request q;
    assert_int_equal(cf_ocsp_request_parse(r, der, (size_t)len, &q, &err), CF_OK);
    assert_int_equal(q.queries[0].ca_id, c.ca_id);
    assert_string_equal(q.queries[0].serial, s1);
    cf_ocsp_status st = {.status = CF_OCSP_GOOD};
    assert_int_equal(cf_ocsp_respond(r, &q, &st, time(NULL), 0, &resp, &rlen, &err), CF_OK);
    const unsigned char *p = resp;
    OCSP_RESPONSE *o = d2i_OCSP_RESPONSE(NULL, &p, (long)rlen);
    OCSP_BASICRESP *bs = OCSP_response_get1_basic(o);
    X509_STORE *store = X509_STORE_new();
    X509_STORE_add_cert(store, root);
    STACK_OF(X509) *chain = sk_X509_new_null();
    sk_X509_push(chain, issuing);
    assert_int_equal(OCSP_basic_verify(bs, chain, store, 0), 1);
    sk_X509_free(chain);
    X509_STORE_free(store);
    OCSP_BASICRESP_free(bs);
    OCSP_RESPONSE_free(o);
    OPENSSL_free(resp);
    cf_ocsp_request_clear(&q);
    OPENSSL_free(der);
    OCSP_REQUEST_free(req);
    X509_free(leaf);
    cf_cert_rec_clear(&c);
    cf_ocsp_responder_free(r);
    close_fx(x);
}

#define BOTH(name)                                                                                 \
    static void name##_sqlite(void **state)                                                        \
    {                                                                                              \
        (void)state;                                                                               \
        name(TU_SQLITE);                                                                           \
    }                                                                                              \
    static void name##_postgres(void **state)                                                      \
    {                                                                                              \
        (void)state;                                                                               \
        name(TU_POSTGRES);                                                                         \
    }

BOTH(test_revoke_serial_then_again_is_a_no_op)
BOTH(test_revoke_device_sets_state_and_readmit)
BOTH(test_block_birth_is_for_good)
BOTH(test_hold_release_and_delta_crl)
BOTH(test_crl_numbers_increase_across_store_handles)
BOTH(test_revoke_ca_stops_issuing)
BOTH(test_scoped_callers)
BOTH(test_change_feed)
BOTH(test_change_bell)
BOTH(test_transfer_and_decommission_are_published)
BOTH(test_crl_shards)
BOTH(test_builder_is_incremental)
BOTH(test_ocsp_responder_made_once)

#define T(name) cmocka_unit_test(name##_sqlite), cmocka_unit_test(name##_postgres)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_revoke_serial_then_again_is_a_no_op),
        T(test_revoke_device_sets_state_and_readmit),
        T(test_block_birth_is_for_good),
        T(test_hold_release_and_delta_crl),
        T(test_crl_numbers_increase_across_store_handles),
        T(test_revoke_ca_stops_issuing),
        T(test_scoped_callers),
        T(test_change_feed),
        T(test_change_bell),
        T(test_transfer_and_decommission_are_published),
        T(test_crl_shards),
        T(test_builder_is_incremental),
        T(test_ocsp_responder_made_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
