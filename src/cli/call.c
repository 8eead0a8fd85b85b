/* call.c - cli_call: every store command runs its operation through here, on the local
 * store or on a server (see cli.h). */
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/principal.h"

int cli_call(cli *c, const char *name, json_t *params, json_t **result)
{
    return cli_call_progress(c, name, params, NULL, NULL, result);
}

int cli_call_progress(cli *c, const char *name, json_t *params, cf_api_progress_fn progress,
                      void *arg, json_t **result)
{
    const cf_api_op *op = cf_api_find(name);
    cf_err rc;
    *result = NULL;
    if (!op || !params) {
        json_decref(params);
        cf_error_set(&c->err, CF_ERR_INTERNAL, "no operation %s", name);
        return cli_fail(c);
    }
    if (c->server) {
        rc = cli_remote_call(c, op, params, NULL, result);
    } else {
        cf_principal p;
        int urc = cli_principal(c, &p);
        if (urc != 0) {
            json_decref(params);
            return urc;
        }
        rc = cf_api_call_progress(c->fleet, &p, op, params, progress, arg, result, &c->err);
    }
    json_decref(params);
    return rc == CF_OK ? 0 : cli_fail(c);
}

const char *cli_jstr(json_t *o, const char *key, const char *dflt)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : dflt;
}

long long cli_jint(json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}
