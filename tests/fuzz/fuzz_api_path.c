/* fuzz_api_path.c - the management API's routing of request paths from anyone on the network
 * (src/api/api.c cf_api_match) and its parameter readers.
 *
 * The first byte picks the method, the rest is the path. Besides "never crash", a match
 * must be consistent: a matched operation has that method; every path parameter it adds is
 * a non-empty string without '/' or NUL; and the parameter readers accept or refuse each
 * parameter without crashing, as handlers would call them. Seeds: corpus/fuzz_api_path/. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096)
        return 0;
    cf_api_method method = (cf_api_method)(data[0] % 4);
    char *path = malloc(size);
    if (!path)
        abort();
    memcpy(path, data + 1, size - 1);
    path[size - 1] = '\0';
    json_t *params = json_object();
    int known = -1;
    const cf_api_op *op = cf_api_match(method, path, params, &known);
    if (known != 0 && known != 1)
        abort();
    if (op && op->method != method)
        abort();
    const char *key;
    json_t *v;
    json_object_foreach(params, key, v)
    {
        const char *s = json_string_value(v);
        if (!op || !s || !*s || strchr(s, '/'))
            abort();
        const char *out;
        long long n;
        int b;
        cf_error err;
        cf_api_param_str(params, key, 1, &out, &err);
        cf_api_param_int(params, key, -5, 1000000, 0, &n, &err);
        cf_api_param_bool(params, key, 0, &b, &err);
    }
    json_decref(params);
    free(path);
    return 0;
}
