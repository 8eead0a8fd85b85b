/* test_onboard.c - manufacturers, imports and onboarded devices in the store (both
 * backends), the claim hash, and the import pipeline end to end on a manifest made by
 * cf_manifest_make. */
#include "testutil.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fs.h"
#include "core/util.h"
#include "fleet/onboard.h"
#include "pki/manifest_make.h"
#include "store/store.h"

#define ASSERT_OK(call)                                                                            \
    do {                                                                                           \
        cf_err rc_ = (call);                                                                       \
        if (rc_ != CF_OK)                                                                          \
            fail_msg("%s: %s", #call, err.msg);                                                    \
    } while (0)

static cf_store *open_fresh(int backend)
{
    const char *url = tu_fresh_store_url(backend);
    cf_store *st = NULL;
    cf_error err = {0};
    if (!url)
        fail_msg("%s: no store (run through run_unit.sh)", tu_backend_name(backend));
    ASSERT_OK(cf_store_open(url, &st, &err));
    return st;
}

static const unsigned char fake_der[] = {0x30, 0x03, 0x02, 0x01, 0x01};

static int64_t new_import(cf_store *st, int64_t mfr)
{
    cf_error err = {0};
    cf_import_rec imp = {0};
    imp.manufacturer_id = mfr;
    imp.source = "m.json";
    imp.actor = "test";
    imp.started_us = cf_time_now_us();
    ASSERT_OK(cf_store_import_insert(st, &imp, &err));
    return imp.id;
}

static cf_onboard_result onboard_one(cf_store *st, int64_t mfr, int64_t imp, const char *id,
                                     const char *fpr)
{
    cf_error err = {0};
    cf_onboard_result res = CF_ONBOARD_CONFLICT;
    cf_onboard_device d = {id,  "batch-1", "MODEL", "PART", fake_der, sizeof fake_der,
                           fpr, 1000000,   NULL};
    ASSERT_OK(cf_store_begin(st, &err));
    ASSERT_OK(cf_store_device_onboard(st, mfr, imp, &d, 1, &res, &err));
    ASSERT_OK(cf_store_commit(st, &err));
    return res;
}

static void test_device_onboard_added_present_duplicate_conflict(void **state)
{
    (void)state;
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_store *st = open_fresh(b);
        cf_error err = {0};
        int64_t mfr = 0;
        ASSERT_OK(cf_store_manufacturer_insert(st, "maker", fake_der, sizeof fake_der, &mfr, &err));
        int64_t imp1 = new_import(st, mfr), imp2 = new_import(st, mfr);

        assert_int_equal(onboard_one(st, mfr, imp1, "dev-1", "aa"), CF_ONBOARD_ADDED);
        assert_int_equal(onboard_one(st, mfr, imp1, "dev-1", "aa"), CF_ONBOARD_DUPLICATE);
        assert_int_equal(onboard_one(st, mfr, imp2, "dev-1", "aa"), CF_ONBOARD_PRESENT);
        assert_int_equal(onboard_one(st, mfr, imp2, "dev-1", "bb"), CF_ONBOARD_CONFLICT);

        /* The conflicting entry changed nothing: the device is still on hold, one of it. */
        int64_t counts[CF_DEVICE_STATE_COUNT];
        ASSERT_OK(cf_store_device_count(st, counts, &err));
        assert_int_equal(counts[CF_DEVICE_ON_HOLD], 1);
        int64_t n = 0;
        ASSERT_OK(cf_store_manufacturer_devices(st, mfr, &n, &err));
        assert_int_equal(n, 1);
        assert_int_equal(onboard_one(st, mfr, imp2, "dev-1", "aa"), CF_ONBOARD_PRESENT);

        /* A device that came another way (no key_fpr) is a conflict too. */
        int created = 0;
        ASSERT_OK(cf_store_device_ensure(st, "dev-2", CF_DEVICE_ACTIVE, &created, &err));
        assert_int_equal(onboard_one(st, mfr, imp2, "dev-2", "aa"), CF_ONBOARD_CONFLICT);
        cf_device_state s;
        ASSERT_OK(cf_store_device_get_state(st, "dev-2", &s, &err));
        assert_int_equal(s, CF_DEVICE_ACTIVE);
        cf_store_close(st);
    }
}

static void test_manufacturer_certs_imports_and_delete(void **state)
{
    (void)state;
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_store *st = open_fresh(b);
        cf_error err = {0};
        int64_t mfr = 0, other = 0;
        ASSERT_OK(cf_store_manufacturer_insert(st, "maker", fake_der, sizeof fake_der, &mfr, &err));
        assert_int_equal(
            cf_store_manufacturer_insert(st, "maker", fake_der, sizeof fake_der, &other, &err),
            CF_ERR_EXISTS);
        cf_mfr_cert_rec r = {0,
                             mfr,
                             CF_MFR_CERT_SIGNER,
                             "x5t-signer",
                             "CN=S",
                             (unsigned char *)fake_der,
                             sizeof fake_der,
                             1,
                             2,
                             0};
        int created = 0;
        ASSERT_OK(cf_store_mfr_cert_insert(st, &r, &created, &err));
        assert_true(created);
        ASSERT_OK(cf_store_mfr_cert_insert(st, &r, &created, &err));
        assert_false(created); /* same x5t: skipped */
        r.kind = CF_MFR_CERT_ROOT;
        r.x5t = "x5t-root";
        ASSERT_OK(cf_store_mfr_cert_insert(st, &r, &created, &err));
        cf_mfr_cert_rec *certs = NULL;
        size_t n = 0;
        ASSERT_OK(cf_store_mfr_cert_list(st, mfr, &certs, &n, &err));
        assert_int_equal(n, 2);
        assert_int_equal(certs[0].kind, CF_MFR_CERT_ROOT); /* roots first */
        assert_string_equal(certs[1].x5t, "x5t-signer");
        assert_memory_equal(certs[1].der, fake_der, sizeof fake_der);
        for (size_t i = 0; i < n; i++)
            cf_mfr_cert_rec_clear(&certs[i]);
        free(certs);

        int64_t imp = new_import(st, mfr);
        cf_import_rec u = {0};
        u.id = imp;
        u.sha256 = "abc";
        u.finished_us = 5;
        u.entries = 3;
        u.added = 2;
        u.rejected = 1;
        ASSERT_OK(cf_store_import_update(st, &u, &err));
        cf_import_rec *imps = NULL;
        ASSERT_OK(cf_store_import_list(st, mfr, 0, &imps, &n, &err));
        assert_int_equal(n, 1);
        assert_string_equal(imps[0].sha256, "abc");
        assert_int_equal(imps[0].finished_us, 5);
        assert_int_equal(imps[0].added, 2);
        assert_null(imps[0].batch);
        cf_import_rec_clear(&imps[0]);
        free(imps);

        ASSERT_OK(cf_store_manufacturer_delete(st, mfr, &err));
        cf_manufacturer_rec m = {0};
        assert_int_equal(cf_store_manufacturer_get(st, "maker", &m, &err), CF_ERR_NOT_FOUND);
        assert_non_null(strstr(err.msg, "maker"));
        cf_store_close(st);
    }
}

static void test_claim_hash_is_sha256_of_label_id_and_code(void **state)
{
    (void)state;
    unsigned char code[16], got[32], want[32];
    for (int i = 0; i < 16; i++)
        code[i] = (unsigned char)(i * 17);
    unsigned char msg[18 + 6 + 16];
    memcpy(msg, "certfleet-claim-v1", 18);
    memcpy(msg + 18, "dev-42", 6);
    memcpy(msg + 24, code, 16);
    EVP_Digest(msg, sizeof msg, want, NULL, EVP_sha256(), NULL);
    cf_onboard_claim_hash("dev-42", code, got);
    assert_memory_equal(got, want, 32);
}

/* ---- the pipeline ---- */

typedef struct {
    int progress_calls;
    int problems;
} observed;

static void on_progress(void *arg, const cf_onboard_stats *s)
{
    observed *o = arg;
    assert_true(s->committed <= s->entries);
    o->progress_calls++;
}

static void on_problem(void *arg, const cf_onboard_problem *p)
{
    observed *o = arg;
    (void)p;
    o->problems++;
}

static char *read_all(const char *path, size_t *len)
{
    char *buf = NULL;
    cf_error err = {0};
    ASSERT_OK(cf_fs_read_file(path, 1 << 20, &buf, len, &err));
    return buf;
}

static void test_import_pipeline_commits_in_batches_and_is_idempotent(void **state)
{
    (void)state;
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/maker", tu_tmpdir());
    cf_manifest_make_opts mo = {0};
    mo.devices = 300;
    mo.out_dir = dir;
    mo.version = 1;
    mo.threads = 2;
    cf_error err = {0};
    ASSERT_OK(cf_manifest_make(&mo, NULL, &err));

    for (int b = 0; b < TU_BACKENDS; b++) {
        char data[600];
        snprintf(data, sizeof data, "%s/data-%d", tu_tmpdir(), b);
        cf_fleet *f = NULL;
        const char *url = tu_fresh_store_url(b);
        ASSERT_OK(cf_fleet_open(data, b == TU_SQLITE ? NULL : url, &f, &err));

        size_t rl, sl;
        snprintf(path, sizeof path, "%s/root.crt", dir);
        char *root = read_all(path, &rl);
        snprintf(path, sizeof path, "%s/manifest-signer.crt", dir);
        char *signer = read_all(path, &sl);
        cf_onboard_cert_src r = {root, rl, "root.crt"}, s = {signer, sl, "signer.crt"};
        cf_onboard_mfr_req req = {"maker", &r, 1, &s, 1, "test"};
        json_t *details = NULL;
        ASSERT_OK(cf_onboard_manufacturer_add(f, &req, &details, &err));
        assert_int_equal(json_array_size(json_object_get(details, "added")), 2);
        json_decref(details);
        /* Nothing new: refused, changing nothing. */
        assert_int_equal(cf_onboard_manufacturer_add(f, &req, NULL, &err), CF_ERR_EXISTS);

        snprintf(path, sizeof path, "%s/manifest.json", dir);
        observed obs = {0};
        cf_onboard_opts o = {0};
        o.manifest = path;
        o.manufacturer = "maker";
        o.threads = 3;
        o.batch_size = 50;
        o.actor = "test";
        o.progress = on_progress;
        o.problem = on_problem;
        o.arg = &obs;
        cf_onboard_stats st;
        ASSERT_OK(cf_onboard_import(f, &o, &st, &err));
        assert_int_equal(st.entries, 300);
        assert_int_equal(st.added, 300);
        assert_int_equal(st.committed, 300);
        assert_true(st.complete);
        assert_int_equal(strlen(st.sha256), 64);
        assert_true(obs.progress_calls >= 5); /* one per commit: 4 chunks of 64, then the rest */
        assert_int_equal(obs.problems, 0);

        ASSERT_OK(cf_onboard_import(f, &o, &st, &err));
        assert_int_equal(st.added, 0);
        assert_int_equal(st.present, 300);

        /* Removal is refused while its devices exist. */
        assert_int_equal(cf_onboard_manufacturer_remove(f, "maker", "test", &err), CF_ERR_POLICY);

        /* A cancelled import stops, commits, and says so. */
        volatile sig_atomic_t cancel = 1;
        o.cancel = &cancel;
        ASSERT_OK(cf_onboard_import(f, &o, &st, &err));
        assert_true(st.interrupted);
        assert_false(st.complete);

        /* An unknown manufacturer is named. */
        o.manufacturer = "nobody";
        assert_int_equal(cf_onboard_import(f, &o, &st, &err), CF_ERR_NOT_FOUND);
        assert_non_null(strstr(err.msg, "nobody"));
        free(root);
        free(signer);
        cf_fleet_close(f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_device_onboard_added_present_duplicate_conflict),
        cmocka_unit_test(test_manufacturer_certs_imports_and_delete),
        cmocka_unit_test(test_claim_hash_is_sha256_of_label_id_and_code),
        cmocka_unit_test(test_import_pipeline_commits_in_batches_and_is_idempotent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
