/* Unit tests of src/audit: the hash chain, on both store backends. */
#include "testutil.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "audit/audit.h"
#include "store/db.h"

static cf_store *open_fresh(int backend)
{
    const char *url = tu_fresh_store_url(backend);
    if (!url)
        fail_msg("no %s store available (is CF_TEST_PG_URL set?)", tu_backend_name(backend));
    cf_store *st = NULL;
    cf_error err;
    if (cf_store_open(url, &st, &err) != CF_OK)
        fail_msg("%s: %s", url, err.msg);
    return st;
}

static void append(cf_store *st, const char *action, const char *object, json_t *details)
{
    cf_error err;
    assert_int_equal(cf_store_begin(st, &err), CF_OK);
    if (cf_audit_append(st, "unit", action, object, details, NULL, &err) != CF_OK)
        fail_msg("append: %s", err.msg);
    assert_int_equal(cf_store_commit(st, &err), CF_OK);
    json_decref(details);
}

static cf_store *store_with_records(int backend, int n)
{
    cf_store *st = open_fresh(backend);
    for (int i = 1; i <= n; i++) {
        char obj[32];
        snprintf(obj, sizeof obj, "dev-%d", i);
        append(st, i % 2 ? "cert.issue" : "device.claim", obj, json_pack("{s:i}", "n", i));
    }
    return st;
}

static int64_t verify_bad_seq(cf_store *st)
{
    cf_audit_verify_result res;
    cf_error err;
    cf_err rc = cf_audit_verify(st, &res, &err);
    if (rc == CF_OK)
        return 0;
    assert_int_equal(rc, CF_ERR_TAMPERED);
    assert_non_null(strstr(err.msg, "audit record"));
    return res.bad_seq;
}

static void exec_sql(cf_store *st, const char *sql)
{
    cf_error err;
    if (st->ops->exec(st, sql, &err) != CF_OK)
        fail_msg("%s: %s", sql, err.msg);
}

static void test_intact_chain_verifies(void **state)
{
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_store *st = store_with_records(b, 6);
        cf_audit_verify_result res;
        cf_error err;
        assert_int_equal(cf_audit_verify(st, &res, &err), CF_OK);
        assert_int_equal(res.records, 6);
        assert_int_equal(res.head_seq, 6);
        cf_store_close(st);
    }
}

static void test_empty_log_verifies(void **state)
{
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_store *st = open_fresh(b);
        assert_int_equal(verify_bad_seq(st), 0);
        cf_store_close(st);
    }
}

static void test_rolled_back_append_leaves_no_trace(void **state)
{
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_store *st = store_with_records(b, 3);
        cf_error err;
        assert_int_equal(cf_store_begin(st, &err), CF_OK);
        assert_int_equal(cf_audit_append(st, "unit", "x", "y", NULL, NULL, &err), CF_OK);
        cf_store_rollback(st);
        append(st, "after", "rollback", NULL);
        cf_audit_verify_result res;
        assert_int_equal(cf_audit_verify(st, &res, &err), CF_OK);
        assert_int_equal(res.records, 4);
        cf_store_close(st);
    }
}

/* Appends without a number wanted are queued and written at commit (in one statement),
 * but the chain keeps the order of the appends: an append that wants its number (as a
 * revocation does, for the change feed) comes after those queued before it. With more
 * queued than one statement takes (4), the chain still holds. */
static void test_queued_appends_keep_their_order(void **state)
{
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_store *st = store_with_records(b, 2);
        cf_error err;
        int64_t seq = 0;
        assert_int_equal(cf_store_begin(st, &err), CF_OK);
        assert_int_equal(cf_audit_append(st, "unit", "q.1", "a", NULL, NULL, &err), CF_OK);
        assert_int_equal(cf_audit_append(st, "unit", "q.2", "b", NULL, NULL, &err), CF_OK);
        assert_int_equal(cf_audit_append(st, "unit", "now", "c", NULL, &seq, &err), CF_OK);
        assert_int_equal(seq, 5); /* after the two queued ones */
        for (int i = 0; i < 6; i++)
            assert_int_equal(cf_audit_append(st, "unit", "q.more", "d", NULL, NULL, &err), CF_OK);
        assert_int_equal(cf_store_commit(st, &err), CF_OK);
        cf_audit_verify_result res;
        assert_int_equal(cf_audit_verify(st, &res, &err), CF_OK);
        assert_int_equal(res.records, 11);
        assert_int_equal(res.head_seq, 11);
        const char *want[] = {"q.1", "q.2", "now", "q.more"};
        for (int i = 0; i < 4; i++) {
            char sql[128];
            snprintf(sql, sizeof sql, "SELECT action FROM audit WHERE seq = %d", 3 + i);
            cf_stmt *s;
            assert_int_equal(st->ops->prepare(st, sql, 0, &s, &err), CF_OK);
            int row = 0;
            assert_int_equal(st->ops->step(s, &row, &err), CF_OK);
            assert_int_equal(row, 1);
            assert_string_equal(st->ops->col_text(s, 0), want[i]);
            st->ops->done(s);
        }
        cf_store_close(st);
    }
}

static void test_append_outside_transaction_is_refused(void **state)
{
    cf_store *st = open_fresh(TU_SQLITE);
    cf_error err;
    assert_int_equal(cf_audit_append(st, "unit", "x", "y", NULL, NULL, &err), CF_ERR_INTERNAL);
    cf_store_close(st);
}

static void test_edited_field_is_named(void **state)
{
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_store *st = store_with_records(b, 6);
        exec_sql(st, "UPDATE audit SET details = '{\"n\":99}' WHERE seq = 4");
        assert_int_equal(verify_bad_seq(st), 4);
        cf_store_close(st);
    }
}

static void test_deleted_record_is_named(void **state)
{
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_store *st = store_with_records(b, 6);
        exec_sql(st, "DELETE FROM audit WHERE seq = 3");
        assert_int_equal(verify_bad_seq(st), 3);
        cf_store_close(st);
    }
}

static void test_truncated_tail_is_caught_by_the_head(void **state)
{
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_store *st = store_with_records(b, 6);
        exec_sql(st, "DELETE FROM audit WHERE seq > 4");
        assert_int_equal(verify_bad_seq(st), 5);
        cf_store_close(st);
    }
}

static void test_swapped_records_are_caught(void **state)
{
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_store *st = store_with_records(b, 6);
        exec_sql(st, "UPDATE audit SET seq = -2 WHERE seq = 2;"
                     "UPDATE audit SET seq = 2 WHERE seq = 5;"
                     "UPDATE audit SET seq = 5 WHERE seq = -2;");
        assert_int_equal(verify_bad_seq(st), 2);
        cf_store_close(st);
    }
}

static int copy_details(void *arg, const cf_audit_rec *r)
{
    snprintf(arg, 128, "%s", r->details);
    return 0;
}

static void test_details_are_canonical_whatever_the_key_order(void **state)
{
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_store *st = open_fresh(b);
        append(st, "a", "o", json_pack("{s:i, s:s}", "z", 1, "a", "x"));
        cf_audit_filter f = {0};
        char got[128] = "";
        assert_int_equal(cf_store_audit_scan(st, &f, copy_details, got, &(cf_error){0}), CF_OK);
        assert_string_equal(got, "{\"a\":\"x\",\"z\":1}");
        cf_store_close(st);
    }
}

/* The hash is the documented encoding: an outside verifier can recompute it. */
static void test_hash_matches_documented_encoding(void **state)
{
    cf_audit_rec r = {
        .seq = 7, .time_us = 1000, .actor = "a", .action = "b", .object = "c", .details = "{}"};
    memset(r.prev_hash, 0xab, CF_HASH_LEN);
    unsigned char buf[256], *p = buf;
    memcpy(p, "certfleet-audit-v1", 18);
    p += 18;
    memset(p, 0xab, 32);
    p += 32;
    unsigned char nums[16] = {0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0x03, 0xe8};
    memcpy(p, nums, 16);
    p += 16;
    const char *fields[] = {"a", "b", "c", "{}"};
    for (int i = 0; i < 4; i++) {
        size_t n = strlen(fields[i]);
        *p++ = 0;
        *p++ = 0;
        *p++ = 0;
        *p++ = (unsigned char)n;
        memcpy(p, fields[i], n);
        p += n;
    }
    unsigned char want[32], got[32];
    unsigned int len;
    EVP_Digest(buf, (size_t)(p - buf), want, &len, EVP_sha256(), NULL);
    cf_audit_hash(&r, got);
    assert_memory_equal(want, got, 32);
}

/* Appenders on connections of their own (as several certfleet processes on one database)
 * take turns on the head: the chain never forks and no record is lost. */
typedef struct {
    const char *url;
    int id, n;
    cf_err rc;
    char msg[sizeof(((cf_error *)0)->msg)];
} appender;

static void *append_many(void *arg)
{
    appender *a = arg;
    cf_store *st = NULL;
    cf_error err = {0};
    a->rc = cf_store_open(a->url, &st, &err);
    for (int i = 0; i < a->n && a->rc == CF_OK; i++) {
        char obj[32];
        snprintf(obj, sizeof obj, "dev-%d-%d", a->id, i);
        json_t *det = json_pack("{s:i}", "i", i);
        if ((a->rc = cf_store_begin(st, &err)) == CF_OK &&
            (a->rc = cf_audit_append(st, "unit", "cert.issue", obj, det, NULL, &err)) == CF_OK)
            a->rc = cf_store_commit(st, &err);
        else
            cf_store_rollback(st);
        json_decref(det);
    }
    if (a->rc != CF_OK)
        snprintf(a->msg, sizeof a->msg, "%s", err.msg);
    cf_store_close(st);
    return NULL;
}

static void test_concurrent_appenders_keep_one_chain(void **state)
{
    (void)state;
    for (int b = 0; b < TU_BACKENDS; b++) {
        const char *u = tu_fresh_store_url(b);
        if (!u)
            fail_msg("no %s store available", tu_backend_name(b));
        char url[1024];
        snprintf(url, sizeof url, "%s", u);
        cf_store *st = NULL;
        cf_error err;
        assert_int_equal(cf_store_open(url, &st, &err), CF_OK); /* migrated before the race */
        appender a[4];
        pthread_t th[4];
        for (int i = 0; i < 4; i++) {
            a[i] = (appender){.url = url, .id = i, .n = 25};
            assert_int_equal(pthread_create(&th[i], NULL, append_many, &a[i]), 0);
        }
        for (int i = 0; i < 4; i++) {
            pthread_join(th[i], NULL);
            if (a[i].rc != CF_OK)
                fail_msg("%s appender %d: %s", tu_backend_name(b), i, a[i].msg);
        }
        cf_audit_verify_result res;
        if (cf_audit_verify(st, &res, &err) != CF_OK)
            fail_msg("%s: %s", tu_backend_name(b), err.msg);
        assert_int_equal(res.records, 100);
        assert_int_equal(res.head_seq, 100);
        cf_store_close(st);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_intact_chain_verifies),
        cmocka_unit_test(test_empty_log_verifies),
        cmocka_unit_test(test_rolled_back_append_leaves_no_trace),
        cmocka_unit_test(test_queued_appends_keep_their_order),
        cmocka_unit_test(test_append_outside_transaction_is_refused),
        cmocka_unit_test(test_edited_field_is_named),
        cmocka_unit_test(test_deleted_record_is_named),
        cmocka_unit_test(test_truncated_tail_is_caught_by_the_head),
        cmocka_unit_test(test_swapped_records_are_caught),
        cmocka_unit_test(test_details_are_canonical_whatever_the_key_order),
        cmocka_unit_test(test_hash_matches_documented_encoding),
        cmocka_unit_test(test_concurrent_appenders_keep_one_chain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
