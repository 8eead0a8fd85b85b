/* test_api.c - the operation table: well-formed entries, path matching with hostile paths,
 * the parameter helpers, and the role and scope checks every call passes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/api.h"

static const cf_api_op *const all[] = {cf_api_ops_fleet, cf_api_ops_devices, cf_api_ops_onboard};

static void test_every_entry_is_well_formed_and_unique(void **state)
{
    for (size_t t = 0; t < sizeof all / sizeof all[0]; t++) {
        for (const cf_api_op *op = all[t]; op->name; op++) {
            assert_non_null(op->run);
            assert_int_equal(strncmp(op->path, "/api/v1/", 8), 0);
            assert_ptr_equal(cf_api_find(op->name), op);
            int braces = 0;
            for (const char *p = op->path; *p; p++) {
                braces += *p == '{';
                braces -= *p == '}';
                assert_true(braces == 0 || braces == 1);
            }
            assert_int_equal(braces, 0);
            for (size_t u = 0; u < sizeof all / sizeof all[0]; u++)
                for (const cf_api_op *o2 = all[u]; o2->name; o2++)
                    if (o2 != op)
                        assert_false(o2->method == op->method && strcmp(o2->path, op->path) == 0);
        }
    }
    assert_null(cf_api_find("no such operation"));
}

static void test_match_fills_path_parameters(void **state)
{
    json_t *params = json_object();
    int known = -1;
    const cf_api_op *op = cf_api_match(CF_API_POST, "/api/v1/devices/d%2D1/claim", params, &known);
    assert_non_null(op);
    assert_string_equal(op->name, "device claim");
    assert_string_equal(json_string_value(json_object_get(params, "id")), "d-1");
    json_decref(params);

    params = json_object();
    op = cf_api_match(CF_API_DELETE, "/api/v1/owners/acme/tokens/12", params, &known);
    assert_non_null(op);
    assert_string_equal(json_string_value(json_object_get(params, "owner")), "acme");
    assert_string_equal(json_string_value(json_object_get(params, "id")), "12");
    json_decref(params);
}

static void test_match_tells_404_from_405(void **state)
{
    int known = -1;
    assert_null(cf_api_match(CF_API_DELETE, "/api/v1/devices", NULL, &known));
    assert_int_equal(known, 1);
    assert_null(cf_api_match(CF_API_GET, "/api/v1/nothing", NULL, &known));
    assert_int_equal(known, 0);
}

static void test_match_refuses_hostile_paths(void **state)
{
    static const char *const bad[] = {
        "/api/v1/devices/a%2Fb",    /* a slash once decoded */
        "/api/v1/devices/a%00b",    /* a NUL once decoded */
        "/api/v1/devices/a%zz",     /* not hex */
        "/api/v1/devices/a%4",      /* cut short */
        "/api/v1/devices/a%",       /* cut shorter */
        "/api/v1/devices/%ff",      /* not UTF-8 */
        "/api/v1/devices/",         /* empty segment */
        "/api/v1/devices//claim",   /* empty segment */
        "/api/v1/devices/x/claim/", /* trailing slash */
        "/api/v1/devices/x/y",      /* no such template */
        "/api/v1/device",           /* a prefix */
        "/api/v1/devicesX",         /* longer */
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *params = json_object();
        int known = -1;
        const cf_api_op *get = cf_api_match(CF_API_GET, bad[i], params, &known);
        const cf_api_op *post = cf_api_match(CF_API_POST, bad[i], params, &known);
        if (get || post)
            fail_msg("%s matched %s", bad[i], get ? get->name : post->name);
        json_decref(params);
    }
    /* A segment of 1025 characters is refused, 1024 taken. */
    char path[2000];
    int n = snprintf(path, sizeof path, "/api/v1/devices/");
    memset(path + n, 'x', 1025);
    path[n + 1025] = '\0';
    int known;
    assert_null(cf_api_match(CF_API_GET, path, NULL, &known));
    path[n + 1024] = '\0';
    json_t *params = json_object();
    assert_non_null(cf_api_match(CF_API_GET, path, params, &known));
    json_decref(params);
}

static void test_param_helpers_check_types_and_ranges(void **state)
{
    cf_error err = {0};
    const char *s;
    long long v;
    int b;
    json_t *p = json_pack("{s:s, s:i, s:s, s:s, s:b, s:s, s:n}", "name", "acme", "n", 7, "ns", "42",
                          "bad", "4x", "flag", 1, "sflag", "false", "nul");
    assert_int_equal(cf_api_param_str(p, "name", 1, &s, &err), CF_OK);
    assert_string_equal(s, "acme");
    assert_int_equal(cf_api_param_str(p, "n", 0, &s, &err), CF_ERR_INVALID);
    assert_int_equal(cf_api_param_str(p, "absent", 0, &s, &err), CF_OK);
    assert_null(s);
    assert_int_equal(cf_api_param_str(p, "nul", 1, &s, &err), CF_ERR_INVALID);
    assert_int_equal(cf_api_param_int(p, "n", 1, 10, 0, &v, &err), CF_OK);
    assert_int_equal(v, 7);
    assert_int_equal(cf_api_param_int(p, "ns", 1, 100, 0, &v, &err), CF_OK);
    assert_int_equal(v, 42);
    assert_int_equal(cf_api_param_int(p, "ns", 1, 10, 0, &v, &err), CF_ERR_INVALID);
    assert_int_equal(cf_api_param_int(p, "bad", 1, 100, 0, &v, &err), CF_ERR_INVALID);
    assert_int_equal(cf_api_param_int(p, "name", 1, 100, 0, &v, &err), CF_ERR_INVALID);
    assert_int_equal(cf_api_param_int(p, "absent", 1, 100, 5, &v, &err), CF_OK);
    assert_int_equal(v, 5);
    assert_int_equal(cf_api_param_bool(p, "flag", 0, &b, &err), CF_OK);
    assert_true(b);
    assert_int_equal(cf_api_param_bool(p, "sflag", 1, &b, &err), CF_OK);
    assert_false(b);
    assert_int_equal(cf_api_param_bool(p, "name", 1, &b, &err), CF_ERR_INVALID);
    json_t *big = json_pack("{s:s}", "n", "99999999999999999999999");
    assert_int_equal(cf_api_param_int(big, "n", 0, INT64_MAX, 0, &v, &err), CF_ERR_INVALID);
    json_decref(big);
    json_decref(p);
}

static void test_call_checks_role_and_scope_first(void **state)
{
    cf_error err = {0};
    json_t *params = json_object(), *result = (json_t *)1;
    /* The fleet is never reached: the checks come first. */
    cf_principal auditor = {"test", 0, CF_ROLE_AUDITOR};
    assert_int_equal(
        cf_api_call(NULL, &auditor, cf_api_find("device suspend"), params, &result, &err),
        CF_ERR_POLICY);
    assert_non_null(strstr(err.msg, "needs an operator or admin"));
    cf_principal oper = {"test", 0, CF_ROLE_OPERATOR};
    assert_int_equal(
        cf_api_call(NULL, &oper, cf_api_find("device transfer"), params, &result, &err),
        CF_ERR_POLICY);
    assert_non_null(strstr(err.msg, "needs an admin"));
    cf_principal owner_admin = {"test", 7, CF_ROLE_ADMIN};
    assert_int_equal(cf_api_call(NULL, &owner_admin, cf_api_find("status"), params, &result, &err),
                     CF_ERR_POLICY);
    assert_non_null(strstr(err.msg, "vendor"));
    json_t *not_object = json_array();
    assert_int_equal(
        cf_api_call(NULL, &owner_admin, cf_api_find("device list"), not_object, &result, &err),
        CF_ERR_INVALID);
    json_decref(not_object);
    json_decref(params);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_entry_is_well_formed_and_unique),
        cmocka_unit_test(test_match_fills_path_parameters),
        cmocka_unit_test(test_match_tells_404_from_405),
        cmocka_unit_test(test_match_refuses_hostile_paths),
        cmocka_unit_test(test_param_helpers_check_types_and_ranges),
        cmocka_unit_test(test_call_checks_role_and_scope_first),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
