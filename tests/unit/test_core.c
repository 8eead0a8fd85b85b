/* Unit tests of src/core: errors, hex, time, files. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "core/fs.h"
#include "core/util.h"

static void test_error_prefix_keeps_code_and_adds_context(void **state)
{
    cf_error err;
    cf_error_set(&err, CF_ERR_POLICY, "key is RSA %d bits", 1024);
    assert_int_equal(cf_error_prefix(&err, "CSR %s", "dev.csr"), CF_ERR_POLICY);
    assert_string_equal(err.msg, "CSR dev.csr: key is RSA 1024 bits");
}

static void test_error_prefix_truncates_without_overflow(void **state)
{
    cf_error err;
    char big[2000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    cf_error_set(&err, CF_ERR_INVALID, "%s", big);
    cf_error_prefix(&err, "%s", big);
    assert_true(strlen(err.msg) < CF_ERROR_MSG_MAX);
}

static void test_error_names_are_stable(void **state)
{
    assert_string_equal(cf_err_name(CF_ERR_NOT_FOUND), "not_found");
    assert_string_equal(cf_err_name(CF_ERR_TAMPERED), "tampered");
}

static void test_hex_round_trip_and_rejects_bad_digits(void **state)
{
    unsigned char in[] = {0x00, 0x7f, 0x80, 0xff}, out[4];
    char hex[9];
    assert_string_equal(cf_hex_encode(in, 4, 1, hex), "007F80FF");
    assert_string_equal(cf_hex_encode(in, 4, 0, hex), "007f80ff");
    assert_int_equal(cf_hex_decode("007f80FF", out, 4), 0);
    assert_memory_equal(in, out, 4);
    assert_int_equal(cf_hex_decode("007g80ff", out, 4), -1);
    assert_int_equal(cf_hex_decode("007f80f", out, 4), -1);
}

static void test_time_format_is_rfc3339_utc(void **state)
{
    char buf[CF_TIME_STR_MAX];
    assert_string_equal(cf_time_format(0, buf), "1970-01-01T00:00:00.000000Z");
    assert_string_equal(cf_time_format(1795000000123456LL, buf), "2026-11-18T11:06:40.123456Z");
}

static void test_ct_equal(void **state)
{
    assert_true(cf_ct_equal("abc", "abc", 3));
    assert_false(cf_ct_equal("abc", "abd", 3));
}

static char *path_in_tmp(const char *name)
{
    static char path[1024];
    snprintf(path, sizeof path, "%s/core-%d-%s", tu_tmpdir(), (int)getpid(), name);
    return path;
}

static void test_read_file_refuses_over_cap_and_names_path(void **state)
{
    char *p = path_in_tmp("big");
    FILE *f = fopen(p, "w");
    for (int i = 0; i < 5000; i++)
        fputc('x', f);
    fclose(f);
    char *buf = NULL;
    size_t len = 0;
    cf_error err;
    assert_int_equal(cf_fs_read_file(p, 4096, &buf, &len, &err), CF_ERR_INVALID);
    assert_non_null(strstr(err.msg, p));
    assert_non_null(strstr(err.msg, "too large"));
    assert_int_equal(cf_fs_read_file(p, 8192, &buf, &len, &err), CF_OK);
    assert_int_equal(len, 5000);
    assert_int_equal(buf[len], '\0');
    free(buf);
}

static void test_read_missing_file_and_directory_fail_clearly(void **state)
{
    char *buf;
    size_t len;
    cf_error err;
    assert_int_equal(cf_fs_read_file("/nonexistent/x.csr", 100, &buf, &len, &err), CF_ERR_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/x.csr"));
    assert_int_equal(cf_fs_read_file(tu_tmpdir(), 100, &buf, &len, &err), CF_ERR_IO);
    assert_non_null(strstr(err.msg, "directory"));
}

static void test_write_file_sets_mode_and_refuses_overwrite(void **state)
{
    char *p = path_in_tmp("secret.key");
    cf_error err;
    struct stat st;
    unlink(p);
    assert_int_equal(cf_fs_write_file(p, "k1", 2, 0600, 0, &err), CF_OK);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(cf_fs_write_file(p, "k2", 2, 0600, 0, &err), CF_ERR_EXISTS);
    char *buf;
    size_t len;
    assert_int_equal(cf_fs_read_file(p, 100, &buf, &len, &err), CF_OK);
    assert_string_equal(buf, "k1");
    free(buf);
    assert_int_equal(cf_fs_write_file(p, "k3", 2, 0644, 1, &err), CF_OK);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
}

static void test_mkdirs_creates_parents_and_accepts_existing(void **state)
{
    char *p = path_in_tmp("a/b/c");
    cf_error err;
    struct stat st;
    assert_int_equal(cf_fs_mkdirs(p, 0700, &err), CF_OK);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(cf_fs_mkdirs(p, 0700, &err), CF_OK);
    char file[1100];
    snprintf(file, sizeof file, "%s/f", p);
    assert_int_equal(cf_fs_write_file(file, "x", 1, 0600, 0, &err), CF_OK);
    assert_int_equal(cf_fs_mkdirs(file, 0700, &err), CF_ERR_IO);
    assert_non_null(strstr(err.msg, "not a directory"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_prefix_keeps_code_and_adds_context),
        cmocka_unit_test(test_error_prefix_truncates_without_overflow),
        cmocka_unit_test(test_error_names_are_stable),
        cmocka_unit_test(test_hex_round_trip_and_rejects_bad_digits),
        cmocka_unit_test(test_time_format_is_rfc3339_utc),
        cmocka_unit_test(test_ct_equal),
        cmocka_unit_test(test_read_file_refuses_over_cap_and_names_path),
        cmocka_unit_test(test_read_missing_file_and_directory_fail_clearly),
        cmocka_unit_test(test_write_file_sets_mode_and_refuses_overwrite),
        cmocka_unit_test(test_mkdirs_creates_parents_and_accepts_existing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
