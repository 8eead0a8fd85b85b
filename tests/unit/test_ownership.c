/* Unit tests of src/fleet/ownership and src/store/owners: owners, tokens, claims, transfer,
 * device states, groups and queries, on both store backends. */
#include "testutil.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "core/util.h"
#include "fleet/ownership.h"
#include "pki/manifest_make.h"
#include "store/db.h"

static const cf_principal vendor = {.actor = "unit", .owner_id = 0, .role = CF_ROLE_ADMIN};

static cf_fleet *open_fleet(int backend)
{
    static int n;
    char dir[700];
    const char *url = tu_fresh_store_url(backend);
    if (!url)
        fail_msg("no %s store available (is CF_TEST_PG_URL set?)", tu_backend_name(backend));
    snprintf(dir, sizeof dir, "%s/fleet-%d-%d", tu_tmpdir(), backend, ++n);
    cf_fleet *f = NULL;
    cf_error err;
    if (cf_fleet_open(dir, url, &f, &err) != CF_OK)
        fail_msg("%s: %s", url, err.msg);
    cf_init_opts o = {.org = "Unit", .key_type = CF_KEY_P256, .actor = "unit"};
    if (cf_fleet_init(f, &o, &err) != CF_OK)
        fail_msg("init: %s", err.msg);
    return f;
}

/* claim_hash as issue 3 defines it, computed here independently of the code under test. */
static void expected_claim_hash(const char *id, const unsigned char code[16], unsigned char out[32])
{
    unsigned char buf[512];
    size_t n = 0;
    memcpy(buf, "certfleet-claim-v1", 18);
    n += 18;
    memcpy(buf + n, id, strlen(id));
    n += strlen(id);
    memcpy(buf + n, code, 16);
    n += 16;
    unsigned int len;
    EVP_Digest(buf, n, out, &len, EVP_sha256(), NULL);
}

/* Adds device id on hold, owned by the vendor, in batch; with code non-NULL, a random claim
 * code is made and written there in its printed form. */
static void add_device(cf_fleet *f, const char *id, const char *batch, const char *model,
                       char code[CF_CLAIM_CODE_STR_MAX])
{
    cf_store *st = cf_fleet_store(f);
    cf_error err;
    unsigned char raw[16], hash[32];
    cf_stmt *s;
    if (st->ops->prepare(st,
                         "INSERT INTO devices (id, state, batch, model, claim_hash, created_us,"
                         " updated_us) VALUES (?, 'on_hold', ?, ?, ?, 1, 1)",
                         0, &s, &err) != CF_OK)
        fail_msg("prepare: %s", err.msg);
    st->ops->bind_text(s, 1, id);
    st->ops->bind_text(s, 2, batch);
    st->ops->bind_text(s, 3, model);
    if (code) {
        assert_int_equal(cf_random_bytes(raw, sizeof raw, &err), CF_OK);
        cf_claim_code_format(raw, code);
        expected_claim_hash(id, raw, hash);
        st->ops->bind_blob(s, 4, hash, sizeof hash);
    } else {
        st->ops->bind_null(s, 4);
    }
    if (cf_db_run(st, s, &err) != CF_OK)
        fail_msg("insert device %s: %s", id, err.msg);
}

static int64_t add_owner(cf_fleet *f, const char *name)
{
    int64_t id = 0;
    cf_error err;
    if (cf_fleet_owner_add(f, &vendor, name, &id, &err) != CF_OK)
        fail_msg("owner add %s: %s", name, err.msg);
    return id;
}

static cf_principal as_owner(int64_t id, cf_role role)
{
    cf_principal p = {.actor = "unit-owner", .owner_id = id, .role = role};
    return p;
}

static cf_device_rec get_device(cf_fleet *f, const char *id)
{
    cf_device_rec d;
    cf_error err;
    if (cf_store_device_get(cf_fleet_store(f), id, 0, &d, &err) != CF_OK)
        fail_msg("device %s: %s", id, err.msg);
    return d;
}

struct count_state {
    const char *action;
    int n;
    int saw_code; /* a record contains the text being looked for */
    const char *needle;
};

static int count_one(void *arg, const cf_audit_rec *r)
{
    struct count_state *cs = arg;
    if (!cs->action || strcmp(r->action, cs->action) == 0)
        cs->n++;
    if (cs->needle && (strstr(r->details, cs->needle) || strstr(r->object, cs->needle) ||
                       strstr(r->actor, cs->needle)))
        cs->saw_code = 1;
    return 0;
}

static int count_audit(cf_fleet *f, const char *action, const char *object)
{
    struct count_state cs = {.action = action};
    cf_audit_filter flt = {.object = object};
    cf_error err;
    assert_int_equal(cf_store_audit_scan(cf_fleet_store(f), &flt, count_one, &cs, &err), CF_OK);
    return cs.n;
}

static int audit_mentions(cf_fleet *f, const char *needle)
{
    struct count_state cs = {.needle = needle};
    cf_audit_filter flt = {0};
    cf_error err;
    assert_int_equal(cf_store_audit_scan(cf_fleet_store(f), &flt, count_one, &cs, &err), CF_OK);
    return cs.saw_code;
}

static void exec_sql(cf_fleet *f, const char *sql)
{
    cf_store *st = cf_fleet_store(f);
    cf_error err;
    if (st->ops->exec(st, sql, &err) != CF_OK)
        fail_msg("%s: %s", sql, err.msg);
}

/* ---- owners and tokens ---- */

static void test_owner_names_are_unique(void **state)
{
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_fleet *f = open_fleet(b);
        cf_error err;
        int64_t id;
        add_owner(f, "acme");
        assert_int_equal(cf_fleet_owner_add(f, &vendor, "acme", &id, &err), CF_ERR_EXISTS);
        assert_int_equal(cf_fleet_owner_add(f, &vendor, "bad name", &id, &err), CF_ERR_INVALID);
        cf_owner_rec *recs;
        size_t n;
        assert_int_equal(cf_fleet_owner_list(f, &vendor, &recs, &n, &err), CF_OK);
        assert_int_equal(n, 1);
        assert_string_equal(recs[0].name, "acme");
        cf_owner_rec_clear(&recs[0]);
        free(recs);
        assert_int_equal(count_audit(f, "owner.add", "acme"), 1);
        cf_fleet_close(f);
    }
}

static void test_owner_cannot_add_owners(void **state)
{
    cf_fleet *f = open_fleet(TU_SQLITE);
    cf_principal p = as_owner(add_owner(f, "acme"), CF_ROLE_ADMIN);
    cf_error err;
    int64_t id;
    assert_int_equal(cf_fleet_owner_add(f, &p, "mallory", &id, &err), CF_ERR_POLICY);
    cf_fleet_close(f);
}

static void test_token_authenticates_to_its_owner_and_role(void **state)
{
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_fleet *f = open_fleet(b);
        int64_t acme = add_owner(f, "acme");
        char token[CF_TOKEN_STR_MAX];
        int64_t tid;
        cf_error err;
        cf_token_identity who;
        assert_int_equal(
            cf_fleet_token_create(f, &vendor, "acme", CF_ROLE_OPERATOR, "ci", token, &tid, &err),
            CF_OK);
        assert_int_equal(strlen(token), CF_TOKEN_STR_MAX - 1);
        assert_memory_equal(token, "cft_", 4);
        assert_int_equal(cf_fleet_token_auth(f, token, &who, &err), CF_OK);
        assert_int_equal(who.owner_id, acme);
        assert_int_equal(who.role, CF_ROLE_OPERATOR);
        assert_int_equal(who.token_id, tid);
        assert_string_equal(who.owner, "acme");

        /* Only the hash is stored, and the token is nowhere in the audit log. */
        unsigned char h[32];
        unsigned int len;
        EVP_Digest(token, strlen(token), h, &len, EVP_sha256(), NULL);
        cf_token_rec rec;
        assert_int_equal(cf_store_token_find(cf_fleet_store(f), h, &rec, &err), CF_OK);
        assert_int_equal(rec.id, tid);
        cf_token_rec_clear(&rec);
        assert_false(audit_mentions(f, token + 4));

        /* One flipped character, a wrong shape: not recognised. */
        char bad[CF_TOKEN_STR_MAX];
        memcpy(bad, token, sizeof bad);
        bad[10] = bad[10] == 'A' ? 'B' : 'A';
        assert_int_equal(cf_fleet_token_auth(f, bad, &who, &err), CF_ERR_NOT_FOUND);
        assert_int_equal(cf_fleet_token_auth(f, "cft_short", &who, &err), CF_ERR_NOT_FOUND);
        assert_int_equal(cf_fleet_token_auth(f, "", &who, &err), CF_ERR_NOT_FOUND);

        /* Revoked: not recognised either, with the same words. */
        assert_int_equal(cf_fleet_token_revoke(f, &vendor, "acme", tid, &err), CF_OK);
        assert_int_equal(cf_fleet_token_auth(f, token, &who, &err), CF_ERR_NOT_FOUND);
        assert_string_equal(err.msg, "token not recognised");
        assert_int_equal(cf_fleet_token_revoke(f, &vendor, "acme", tid, &err), CF_ERR_NOT_FOUND);
        cf_fleet_close(f);
    }
}

static void test_vendor_token_authenticates_unscoped(void **state)
{
    cf_fleet *f = open_fleet(TU_SQLITE);
    cf_principal a = as_owner(add_owner(f, "acme"), CF_ROLE_ADMIN);
    char token[CF_TOKEN_STR_MAX];
    int64_t tid;
    cf_error err;
    cf_token_identity who;
    assert_int_equal(cf_fleet_token_create(f, &vendor, CF_VENDOR_TOKENS, CF_ROLE_AUDITOR, NULL,
                                           token, &tid, &err),
                     CF_OK);
    assert_int_equal(cf_fleet_token_auth(f, token, &who, &err), CF_OK);
    assert_int_equal(who.owner_id, 0);
    assert_string_equal(who.owner, "");
    assert_int_equal(who.role, CF_ROLE_AUDITOR);
    assert_int_equal(
        cf_fleet_token_create(f, &a, CF_VENDOR_TOKENS, CF_ROLE_ADMIN, NULL, token, &tid, &err),
        CF_ERR_POLICY);
    cf_fleet_close(f);
}

static void test_owner_admin_manages_only_its_own_tokens(void **state)
{
    cf_fleet *f = open_fleet(TU_SQLITE);
    cf_principal a = as_owner(add_owner(f, "acme"), CF_ROLE_ADMIN);
    cf_principal op = as_owner(a.owner_id, CF_ROLE_OPERATOR);
    add_owner(f, "globex");
    char token[CF_TOKEN_STR_MAX];
    int64_t tid;
    cf_error err;
    assert_int_equal(cf_fleet_token_create(f, &a, "acme", CF_ROLE_AUDITOR, NULL, token, &tid, &err),
                     CF_OK);
    assert_int_equal(cf_fleet_token_create(f, &a, "globex", CF_ROLE_ADMIN, NULL, token, &tid, &err),
                     CF_ERR_NOT_FOUND);
    assert_int_equal(cf_fleet_token_create(f, &op, "acme", CF_ROLE_ADMIN, NULL, token, &tid, &err),
                     CF_ERR_POLICY);
    cf_fleet_close(f);
}

/* ---- claims ---- */

static void test_claim_with_the_right_code(void **state)
{
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_fleet *f = open_fleet(b);
        char code[CF_CLAIM_CODE_STR_MAX];
        cf_error err;
        int64_t acme = add_owner(f, "acme");
        add_device(f, "dev-1", "b1", "m1", code);
        cf_principal p = as_owner(acme, CF_ROLE_OPERATOR);
        /* Typed as a person might: lower case, spaces for dashes. */
        char typed[CF_CLAIM_CODE_STR_MAX];
        for (size_t i = 0; i <= strlen(code); i++)
            typed[i] = code[i] == '-'
                           ? ' '
                           : (char)(code[i] >= 'A' && code[i] <= 'Z' ? code[i] + 32 : code[i]);
        cf_claim_req req = {.device_id = "dev-1", .code = typed};
        if (cf_fleet_device_claim(f, &p, &req, &err) != CF_OK)
            fail_msg("claim: %s", err.msg);
        cf_device_rec d = get_device(f, "dev-1");
        assert_int_equal(d.state, CF_DEVICE_CLAIMED);
        assert_int_equal(d.owner_id, acme);
        cf_device_rec_clear(&d);
        assert_int_equal(count_audit(f, "device.claim", "dev-1"), 1);
        assert_false(audit_mentions(f, code));
        /* Claiming it again: already one's own. */
        assert_int_equal(cf_fleet_device_claim(f, &p, &req, &err), CF_ERR_EXISTS);
        cf_fleet_close(f);
    }
}

static void test_wrong_code_fails_is_counted_and_audited(void **state)
{
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_fleet *f = open_fleet(b);
        char code[CF_CLAIM_CODE_STR_MAX], other[CF_CLAIM_CODE_STR_MAX];
        cf_error err;
        int64_t acme = add_owner(f, "acme");
        add_device(f, "dev-1", "b1", "m1", code);
        add_device(f, "dev-2", "b1", "m1", other);
        cf_principal p = as_owner(acme, CF_ROLE_OPERATOR);
        cf_claim_req req = {.device_id = "dev-1", .code = other};
        assert_int_equal(cf_fleet_device_claim(f, &p, &req, &err), CF_ERR_POLICY);
        assert_string_equal(err.msg, "device dev-1: not claimable with this claim code");
        cf_device_rec d = get_device(f, "dev-1");
        assert_int_equal(d.state, CF_DEVICE_ON_HOLD);
        assert_int_equal(d.owner_id, 0);
        cf_device_rec_clear(&d);
        assert_int_equal(count_audit(f, "device.claim_failed", "dev-1"), 1);
        assert_false(audit_mentions(f, other));
        int64_t n = -1;
        assert_int_equal(cf_store_claim_failures(cf_fleet_store(f), "dev-1", 0, 0, &n, &err),
                         CF_OK);
        assert_int_equal(n, 1);
        assert_int_equal(cf_store_claim_failures(cf_fleet_store(f), NULL, acme, 0, &n, &err),
                         CF_OK);
        assert_int_equal(n, 1);
        /* A malformed code is a failed attempt too, and says only that it is malformed. */
        req.code = "not-a-code";
        assert_int_equal(cf_fleet_device_claim(f, &p, &req, &err), CF_ERR_POLICY);
        assert_int_equal(count_audit(f, "device.claim_failed", "dev-1"), 2);
        cf_fleet_close(f);
    }
}

static void test_rate_limit_refuses_even_the_right_code_until_the_window_passes(void **state)
{
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_fleet *f = open_fleet(b);
        char code[CF_CLAIM_CODE_STR_MAX], other[CF_CLAIM_CODE_STR_MAX];
        cf_error err;
        int64_t acme = add_owner(f, "acme");
        add_device(f, "dev-1", "b1", "m1", code);
        add_device(f, "dev-2", "b1", "m1", other);
        cf_claim_limits l = {
            .device_max = 3, .device_window_s = 60, .owner_max = 100, .owner_window_s = 60};
        assert_int_equal(cf_fleet_claim_limits_set(f, &vendor, &l, &err), CF_OK);
        cf_principal p = as_owner(acme, CF_ROLE_OPERATOR);
        cf_claim_req req = {.device_id = "dev-1", .code = other};
        for (int i = 0; i < 3; i++)
            assert_int_equal(cf_fleet_device_claim(f, &p, &req, &err), CF_ERR_POLICY);
        req.code = code;
        assert_int_equal(cf_fleet_device_claim(f, &p, &req, &err), CF_ERR_POLICY);
        assert_non_null(strstr(err.msg, "too many failed claim attempts"));
        assert_int_equal(count_audit(f, "device.claim_failed", "dev-1"), 4);
        /* The window passes (the attempts are moved back in time beyond it). */
        exec_sql(f, "UPDATE claim_attempts SET time_us = time_us - 61000000");
        if (cf_fleet_device_claim(f, &p, &req, &err) != CF_OK)
            fail_msg("claim after the window: %s", err.msg);
        cf_fleet_close(f);
    }
}

static void test_owner_limit_spans_devices(void **state)
{
    cf_fleet *f = open_fleet(TU_SQLITE);
    char code[CF_CLAIM_CODE_STR_MAX];
    cf_error err;
    int64_t acme = add_owner(f, "acme");
    add_device(f, "dev-9", "b1", "m1", code);
    cf_claim_limits l = {
        .device_max = 100, .device_window_s = 60, .owner_max = 2, .owner_window_s = 60};
    assert_int_equal(cf_fleet_claim_limits_set(f, &vendor, &l, &err), CF_OK);
    cf_principal p = as_owner(acme, CF_ROLE_OPERATOR);
    cf_claim_req req = {.device_id = "dev-1", .code = code};
    assert_int_equal(cf_fleet_device_claim(f, &p, &req, &err), CF_ERR_POLICY);
    req.device_id = "dev-2";
    assert_int_equal(cf_fleet_device_claim(f, &p, &req, &err), CF_ERR_POLICY);
    req.device_id = "dev-9";
    assert_int_equal(cf_fleet_device_claim(f, &p, &req, &err), CF_ERR_POLICY);
    assert_non_null(strstr(err.msg, "by this owner"));
    cf_fleet_close(f);
}

static void test_claimed_device_is_not_claimable_and_says_no_more(void **state)
{
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_fleet *f = open_fleet(b);
        char code[CF_CLAIM_CODE_STR_MAX];
        cf_error err, err_unknown;
        int64_t acme = add_owner(f, "acme"), globex = add_owner(f, "globex");
        add_device(f, "dev-1", "b1", "m1", code);
        cf_principal a = as_owner(acme, CF_ROLE_OPERATOR), g = as_owner(globex, CF_ROLE_ADMIN);
        cf_claim_req req = {.device_id = "dev-1", .code = code};
        assert_int_equal(cf_fleet_device_claim(f, &a, &req, &err), CF_OK);
        /* globex has the right code (the box was resold?) but the device is acme's: the answer
         * is the one an unknown device gets. */
        assert_int_equal(cf_fleet_device_claim(f, &g, &req, &err), CF_ERR_POLICY);
        cf_claim_req unknown = {.device_id = "dev-404", .code = code};
        assert_int_equal(cf_fleet_device_claim(f, &g, &unknown, &err_unknown), CF_ERR_POLICY);
        assert_non_null(strstr(err.msg, "not claimable"));
        assert_string_equal(strstr(err.msg, ":"), strstr(err_unknown.msg, ":"));
        assert_null(strstr(err.msg, "acme"));
        /* An owner may not claim for another, nor without a code. */
        cf_claim_req for_other = {.device_id = "dev-1", .owner = "acme", .code = code};
        assert_int_equal(cf_fleet_device_claim(f, &g, &for_other, &err), CF_ERR_POLICY);
        cf_claim_req no_code = {.device_id = "dev-1", .owner = "globex"};
        assert_int_equal(cf_fleet_device_claim(f, &g, &no_code, &err), CF_ERR_POLICY);
        /* And an auditor claims nothing. */
        cf_principal aud = as_owner(globex, CF_ROLE_AUDITOR);
        assert_int_equal(cf_fleet_device_claim(f, &aud, &req, &err), CF_ERR_POLICY);
        cf_fleet_close(f);
    }
}

static void test_operator_claims_without_code_only_on_hold(void **state)
{
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_fleet *f = open_fleet(b);
        cf_error err;
        add_owner(f, "acme");
        add_owner(f, "globex");
        add_device(f, "dev-1", "b1", "m1", NULL);
        cf_claim_req req = {.device_id = "dev-1", .owner = "acme"};
        assert_int_equal(cf_fleet_device_claim(f, &vendor, &req, &err), CF_OK);
        req.owner = "globex";
        assert_int_equal(cf_fleet_device_claim(f, &vendor, &req, &err), CF_ERR_POLICY);
        assert_non_null(strstr(err.msg, "use device transfer"));
        req.device_id = "nope";
        assert_int_equal(cf_fleet_device_claim(f, &vendor, &req, &err), CF_ERR_NOT_FOUND);
        req.device_id = "dev-1";
        req.owner = "nobody";
        assert_int_equal(cf_fleet_device_claim(f, &vendor, &req, &err), CF_ERR_NOT_FOUND);
        cf_fleet_close(f);
    }
}

static void test_batch_claim_takes_only_devices_on_hold(void **state)
{
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_fleet *f = open_fleet(b);
        cf_error err;
        add_owner(f, "acme");
        add_owner(f, "globex");
        add_device(f, "dev-1", "b1", "m1", NULL);
        add_device(f, "dev-2", "b1", "m1", NULL);
        add_device(f, "dev-3", "b1", "m1", NULL);
        add_device(f, "dev-4", "b2", "m1", NULL);
        cf_claim_req req = {.device_id = "dev-2", .owner = "globex"};
        assert_int_equal(cf_fleet_device_claim(f, &vendor, &req, &err), CF_OK);
        int64_t n = -1;
        assert_int_equal(cf_fleet_device_claim_batch(f, &vendor, "b1", "acme", &n, &err), CF_OK);
        assert_int_equal(n, 2);
        cf_device_rec d = get_device(f, "dev-2");
        assert_string_equal(d.owner, "globex");
        cf_device_rec_clear(&d);
        d = get_device(f, "dev-4");
        assert_int_equal(d.state, CF_DEVICE_ON_HOLD);
        cf_device_rec_clear(&d);
        assert_int_equal(count_audit(f, "device.claim", "dev-3"), 1);
        assert_int_equal(cf_fleet_device_claim_batch(f, &vendor, "b1", "acme", &n, &err), CF_OK);
        assert_int_equal(n, 0);
        assert_int_equal(cf_fleet_device_claim_batch(f, &vendor, "b9", "acme", &n, &err),
                         CF_ERR_NOT_FOUND);
        cf_principal g = as_owner(2, CF_ROLE_ADMIN);
        assert_int_equal(cf_fleet_device_claim_batch(f, &g, "b2", "globex", &n, &err),
                         CF_ERR_POLICY);
        cf_fleet_close(f);
    }
}

/* ---- transfer and states ---- */

static void issue_cert(cf_fleet *f, const char *device, char serial[41])
{
    size_t len;
    char *csr = tu_make_csr("ec:P-256", &len);
    cf_issue_req req = {
        .csr = (unsigned char *)csr, .csr_len = len, .device_id = device, .actor = "unit"};
    cf_signed_cert c;
    cf_error err;
    if (cf_fleet_issue(f, &req, &c, &err) != CF_OK)
        fail_msg("issue: %s", err.msg);
    memcpy(serial, c.serial, CF_SERIAL_HEX_MAX);
    cf_signed_cert_clear(&c);
    free(csr);
}

static void test_transfer_revokes_the_previous_ownerships_certificates(void **state)
{
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_fleet *f = open_fleet(b);
        cf_error err;
        add_owner(f, "acme");
        int64_t globex = add_owner(f, "globex");
        add_device(f, "dev-1", "b1", "m1", NULL);
        add_device(f, "dev-2", "b1", "m1", NULL);
        cf_claim_req req = {.device_id = "dev-1", .owner = "acme"};
        assert_int_equal(cf_fleet_device_claim(f, &vendor, &req, &err), CF_OK);
        req.device_id = "dev-2";
        assert_int_equal(cf_fleet_device_claim(f, &vendor, &req, &err), CF_OK);
        char s1[CF_SERIAL_HEX_MAX], s2[CF_SERIAL_HEX_MAX], other[CF_SERIAL_HEX_MAX];
        issue_cert(f, "dev-1", s1);
        issue_cert(f, "dev-1", s2);
        issue_cert(f, "dev-2", other);
        int64_t revoked = -1;
        if (cf_fleet_device_transfer(f, &vendor, "dev-1", "globex", &revoked, &err) != CF_OK)
            fail_msg("transfer: %s", err.msg);
        assert_int_equal(revoked, 2);
        cf_cert_rec c;
        assert_int_equal(cf_store_cert_get(cf_fleet_store(f), s1, &c, &err), CF_OK);
        assert_int_equal(c.status, CF_CERT_REVOKED);
        assert_int_equal(c.reason, CF_REASON_AFFILIATION_CHANGED);
        assert_true(c.revoked_us > 0);
        cf_cert_rec_clear(&c);
        assert_int_equal(cf_store_cert_get(cf_fleet_store(f), other, &c, &err), CF_OK);
        assert_int_equal(c.status, CF_CERT_GOOD);
        cf_cert_rec_clear(&c);
        cf_device_rec d = get_device(f, "dev-1");
        assert_int_equal(d.owner_id, globex);
        assert_int_equal(d.state, CF_DEVICE_CLAIMED);
        cf_device_rec_clear(&d);
        assert_int_equal(count_audit(f, "device.transfer", "dev-1"), 1);
        /* To the same owner again: refused. */
        assert_int_equal(cf_fleet_device_transfer(f, &vendor, "dev-1", "globex", NULL, &err),
                         CF_ERR_POLICY);
        cf_fleet_close(f);
    }
}

static void test_owner_cannot_transfer_anothers_device(void **state)
{
    cf_fleet *f = open_fleet(TU_SQLITE);
    cf_error err;
    int64_t acme = add_owner(f, "acme"), globex = add_owner(f, "globex");
    add_device(f, "dev-1", "b1", "m1", NULL);
    add_device(f, "dev-2", "b1", "m1", NULL);
    cf_claim_req req = {.device_id = "dev-1", .owner = "acme"};
    assert_int_equal(cf_fleet_device_claim(f, &vendor, &req, &err), CF_OK);
    cf_principal g = as_owner(globex, CF_ROLE_ADMIN), a = as_owner(acme, CF_ROLE_ADMIN);
    assert_int_equal(cf_fleet_device_transfer(f, &g, "dev-1", "globex", NULL, &err),
                     CF_ERR_NOT_FOUND);
    assert_string_equal(err.msg, "device dev-1 not found");
    /* The vendor's on-hold device is no owner's to hand on either. */
    assert_int_equal(cf_fleet_device_transfer(f, &g, "dev-2", "acme", NULL, &err),
                     CF_ERR_NOT_FOUND);
    cf_principal aop = as_owner(acme, CF_ROLE_OPERATOR);
    assert_int_equal(cf_fleet_device_transfer(f, &aop, "dev-1", "globex", NULL, &err),
                     CF_ERR_POLICY);
    assert_int_equal(cf_fleet_device_transfer(f, &a, "dev-1", "globex", NULL, &err), CF_OK);
    cf_fleet_close(f);
}

static void test_state_transitions_follow_the_design(void **state)
{
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_fleet *f = open_fleet(b);
        cf_error err;
        int changed;
        int64_t revoked;
        add_owner(f, "acme");
        add_device(f, "dev-1", "b1", "m1", NULL);
        assert_int_equal(cf_fleet_device_set_state(f, &vendor, "dev-1", CF_DEVICE_SUSPENDED,
                                                   &changed, NULL, &err),
                         CF_ERR_POLICY);
        assert_non_null(strstr(err.msg, "only an active device can be suspended"));
        cf_claim_req req = {.device_id = "dev-1", .owner = "acme"};
        assert_int_equal(cf_fleet_device_claim(f, &vendor, &req, &err), CF_OK);
        char serial[CF_SERIAL_HEX_MAX];
        issue_cert(f, "dev-1", serial); /* enrolls: active */
        assert_int_equal(cf_fleet_device_set_state(f, &vendor, "dev-1", CF_DEVICE_SUSPENDED,
                                                   &changed, NULL, &err),
                         CF_OK);
        assert_int_equal(changed, 1);
        assert_int_equal(cf_fleet_device_set_state(f, &vendor, "dev-1", CF_DEVICE_SUSPENDED,
                                                   &changed, NULL, &err),
                         CF_OK);
        assert_int_equal(changed, 0);
        assert_int_equal(
            cf_fleet_device_set_state(f, &vendor, "dev-1", CF_DEVICE_ACTIVE, &changed, NULL, &err),
            CF_OK);
        assert_int_equal(changed, 1);
        assert_int_equal(cf_fleet_device_set_state(f, &vendor, "dev-1", CF_DEVICE_DECOMMISSIONED,
                                                   &changed, &revoked, &err),
                         CF_OK);
        assert_int_equal(revoked, 1);
        cf_cert_rec c;
        assert_int_equal(cf_store_cert_get(cf_fleet_store(f), serial, &c, &err), CF_OK);
        assert_int_equal(c.reason, CF_REASON_CESSATION_OF_OPERATION);
        cf_cert_rec_clear(&c);
        assert_int_equal(
            cf_fleet_device_set_state(f, &vendor, "dev-1", CF_DEVICE_ACTIVE, &changed, NULL, &err),
            CF_ERR_POLICY);
        assert_non_null(strstr(err.msg, "final"));
        assert_int_equal(cf_fleet_device_transfer(f, &vendor, "dev-1", "acme", NULL, &err),
                         CF_ERR_POLICY);
        assert_int_equal(count_audit(f, "device.suspend", "dev-1"), 1);
        assert_int_equal(count_audit(f, "device.resume", "dev-1"), 1);
        assert_int_equal(count_audit(f, "device.decommission", "dev-1"), 1);
        cf_fleet_close(f);
    }
}

static void test_groups_are_set_cleared_and_audited(void **state)
{
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_fleet *f = open_fleet(b);
        cf_error err;
        add_device(f, "dev-1", "b1", "m1", NULL);
        assert_int_equal(cf_fleet_device_set_group(f, &vendor, "dev-1", "lobby", &err), CF_OK);
        assert_int_equal(cf_fleet_device_set_group(f, &vendor, "dev-1", "lobby", &err), CF_OK);
        cf_device_rec d = get_device(f, "dev-1");
        assert_string_equal(d.grp, "lobby");
        cf_device_rec_clear(&d);
        assert_int_equal(cf_fleet_device_set_group(f, &vendor, "dev-1", NULL, &err), CF_OK);
        d = get_device(f, "dev-1");
        assert_null(d.grp);
        cf_device_rec_clear(&d);
        assert_int_equal(count_audit(f, "device.group", "dev-1"), 2);
        assert_int_equal(cf_fleet_device_set_group(f, &vendor, "dev-1", "a b", &err),
                         CF_ERR_INVALID);
        cf_fleet_close(f);
    }
}

/* ---- queries ---- */

struct ids {
    char v[64][CF_DEVICE_ID_MAX];
    int n;
};

static int collect(void *arg, const cf_device_rec *d)
{
    struct ids *ids = arg;
    snprintf(ids->v[ids->n++], CF_DEVICE_ID_MAX, "%s", d->id);
    return 0;
}

static void test_list_pages_by_id_and_filters(void **state)
{
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_fleet *f = open_fleet(b);
        cf_error err;
        add_owner(f, "acme");
        char id[32];
        for (int i = 0; i < 7; i++) {
            snprintf(id, sizeof id, "d%02d", i);
            add_device(f, id, i < 4 ? "b1" : "b2", i % 2 ? "odd" : "even", NULL);
        }
        struct ids got = {0};
        char next[CF_DEVICE_ID_MAX];
        cf_device_query q = {.state = -1, .limit = 3};
        int pages = 0;
        do {
            assert_int_equal(cf_fleet_device_list(f, &vendor, &q, collect, &got, next, &err),
                             CF_OK);
            pages++;
            q.after = got.n ? got.v[got.n - 1] : NULL;
        } while (next[0] && pages < 10);
        assert_int_equal(pages, 3);
        assert_int_equal(got.n, 7);
        for (int i = 0; i < 7; i++) {
            snprintf(id, sizeof id, "d%02d", i);
            assert_string_equal(got.v[i], id);
        }
        /* A page that ends exactly at the last device says there is no next page. */
        memset(&got, 0, sizeof got);
        cf_device_query exact = {.state = -1, .limit = 7};
        assert_int_equal(cf_fleet_device_list(f, &vendor, &exact, collect, &got, next, &err),
                         CF_OK);
        assert_string_equal(next, "");

        memset(&got, 0, sizeof got);
        cf_device_query fq = {.state = CF_DEVICE_ON_HOLD, .batch = "b2", .model = "odd"};
        assert_int_equal(cf_fleet_device_list(f, &vendor, &fq, collect, &got, next, &err), CF_OK);
        assert_int_equal(got.n, 1);
        assert_string_equal(got.v[0], "d05");
        cf_fleet_close(f);
    }
}

static void test_scoped_list_and_show_see_only_own_devices(void **state)
{
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_fleet *f = open_fleet(b);
        cf_error err;
        int64_t acme = add_owner(f, "acme"), globex = add_owner(f, "globex");
        add_device(f, "a-1", "b1", "m", NULL);
        add_device(f, "a-2", "b1", "m", NULL);
        add_device(f, "g-1", "b1", "m", NULL);
        add_device(f, "v-1", "b1", "m", NULL);
        cf_claim_req req = {.device_id = "a-1", .owner = "acme"};
        assert_int_equal(cf_fleet_device_claim(f, &vendor, &req, &err), CF_OK);
        req.device_id = "a-2";
        assert_int_equal(cf_fleet_device_claim(f, &vendor, &req, &err), CF_OK);
        req.device_id = "g-1";
        req.owner = "globex";
        assert_int_equal(cf_fleet_device_claim(f, &vendor, &req, &err), CF_OK);
        cf_principal a = as_owner(acme, CF_ROLE_AUDITOR), g = as_owner(globex, CF_ROLE_AUDITOR);
        struct ids got = {0};
        char next[CF_DEVICE_ID_MAX];
        cf_device_query q = {.state = -1};
        assert_int_equal(cf_fleet_device_list(f, &a, &q, collect, &got, next, &err), CF_OK);
        assert_int_equal(got.n, 2);
        assert_string_equal(got.v[0], "a-1");
        assert_string_equal(got.v[1], "a-2");
        /* Asking for globex's devices as acme: nothing, and no word on whether globex exists. */
        memset(&got, 0, sizeof got);
        q.owner = "globex";
        assert_int_equal(cf_fleet_device_list(f, &a, &q, collect, &got, next, &err), CF_OK);
        assert_int_equal(got.n, 0);
        q.owner = "no-such-owner";
        assert_int_equal(cf_fleet_device_list(f, &a, &q, collect, &got, next, &err), CF_OK);
        assert_int_equal(got.n, 0);
        /* The vendor's view with "-": the devices not yet claimed. */
        q.owner = "-";
        assert_int_equal(cf_fleet_device_list(f, &vendor, &q, collect, &got, next, &err), CF_OK);
        assert_int_equal(got.n, 1);
        assert_string_equal(got.v[0], "v-1");

        json_t *j = NULL;
        assert_int_equal(cf_fleet_device_show(f, &g, "a-1", &j, &err), CF_ERR_NOT_FOUND);
        assert_string_equal(err.msg, "device a-1 not found");
        assert_int_equal(cf_fleet_device_show(f, &g, "v-1", &j, &err), CF_ERR_NOT_FOUND);
        assert_int_equal(cf_fleet_device_show(f, &a, "a-1", &j, &err), CF_OK);
        json_t *hist = json_object_get(j, "history");
        assert_int_equal(json_array_size(hist), 1);
        assert_string_equal(json_string_value(json_object_get(json_array_get(hist, 0), "action")),
                            "device.claim");
        json_decref(j);
        cf_fleet_close(f);
    }
}

static void test_show_after_resale_hides_the_previous_owners_history(void **state)
{
    cf_fleet *f = open_fleet(TU_SQLITE);
    cf_error err;
    add_owner(f, "acme");
    int64_t globex = add_owner(f, "globex");
    add_device(f, "dev-1", "b1", "m", NULL);
    cf_claim_req req = {.device_id = "dev-1", .owner = "acme"};
    assert_int_equal(cf_fleet_device_claim(f, &vendor, &req, &err), CF_OK);
    char serial[CF_SERIAL_HEX_MAX];
    issue_cert(f, "dev-1", serial);
    assert_int_equal(cf_fleet_device_set_group(f, &vendor, "dev-1", "acme-secret-site", &err),
                     CF_OK);
    assert_int_equal(cf_fleet_device_transfer(f, &vendor, "dev-1", "globex", NULL, &err), CF_OK);
    cf_principal g = as_owner(globex, CF_ROLE_AUDITOR);
    json_t *j = NULL;
    assert_int_equal(cf_fleet_device_show(f, &g, "dev-1", &j, &err), CF_OK);
    char *s = json_dumps(j, 0);
    assert_null(strstr(s, "acme-secret-site"));
    assert_null(strstr(s, serial));
    free(s);
    json_decref(j);
    /* The vendor sees everything, in order. */
    assert_int_equal(cf_fleet_device_show(f, &vendor, "dev-1", &j, &err), CF_OK);
    assert_int_equal(json_array_size(json_object_get(j, "certificates")), 1);
    json_t *hist = json_object_get(j, "history");
    assert_true(json_array_size(hist) >= 4);
    json_int_t prev = 0;
    size_t i;
    json_t *v;
    json_array_foreach(hist, i, v)
    {
        json_int_t seq = json_integer_value(json_object_get(v, "seq"));
        assert_true(seq > prev);
        prev = seq;
    }
    json_decref(j);
    cf_fleet_close(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_owner_names_are_unique),
        cmocka_unit_test(test_owner_cannot_add_owners),
        cmocka_unit_test(test_token_authenticates_to_its_owner_and_role),
        cmocka_unit_test(test_vendor_token_authenticates_unscoped),
        cmocka_unit_test(test_owner_admin_manages_only_its_own_tokens),
        cmocka_unit_test(test_claim_with_the_right_code),
        cmocka_unit_test(test_wrong_code_fails_is_counted_and_audited),
        cmocka_unit_test(test_rate_limit_refuses_even_the_right_code_until_the_window_passes),
        cmocka_unit_test(test_owner_limit_spans_devices),
        cmocka_unit_test(test_claimed_device_is_not_claimable_and_says_no_more),
        cmocka_unit_test(test_operator_claims_without_code_only_on_hold),
        cmocka_unit_test(test_batch_claim_takes_only_devices_on_hold),
        cmocka_unit_test(test_transfer_revokes_the_previous_ownerships_certificates),
        cmocka_unit_test(test_owner_cannot_transfer_anothers_device),
        cmocka_unit_test(test_state_transitions_follow_the_design),
        cmocka_unit_test(test_groups_are_set_cleared_and_audited),
        cmocka_unit_test(test_list_pages_by_id_and_filters),
        cmocka_unit_test(test_scoped_list_and_show_see_only_own_devices),
        cmocka_unit_test(test_show_after_resale_hides_the_previous_owners_history),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
