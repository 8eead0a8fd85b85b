/* cmd_audit.c - audit log, audit verify. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"

#define PAGE 10000 /* records asked for at a time */

static void print_record(json_t *r)
{
    char *det = json_is_string(json_object_get(r, "details"))
                    ? strdup(cli_jstr(r, "details", ""))
                    : json_dumps(json_object_get(r, "details"), JSON_COMPACT | JSON_SORT_KEYS);
    printf("%6lld  %s  %-16s %-14s %-24s %s\n", cli_jint(r, "seq"), cli_jstr(r, "time", ""),
           cli_jstr(r, "actor", ""), cli_jstr(r, "action", ""), cli_jstr(r, "object", ""),
           det ? det : "");
    free(det);
}

/* Accepts RFC 3339 UTC ("2026-11-25T20:00:00Z") or a date ("2026-11-25"). */
static int time_valid(const char *s)
{
    struct tm tm = {0};
    const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end) {
        memset(&tm, 0, sizeof tm);
        end = strptime(s, "%Y-%m-%d", &tm);
    }
    return end && (!*end || strcmp(end, "Z") == 0);
}

/* Asks for the records page by page (the operation returns at most PAGE at a time). */
static int run_audit_log(cli *c)
{
    static const char *const filters[] = {"actor", "action", "object", "from", "until"};
    long long after, limit;
    if (cli_int(c, "after", 0, INT64_MAX, 0, &after) < 0 ||
        cli_int(c, "limit", 0, INT64_MAX, 0, &limit) < 0)
        return 2;
    for (int i = 3; i < 5; i++) {
        const char *t = cli_opt(c, filters[i]);
        if (t && !time_valid(t))
            return cli_usage(c, "--%s %s: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ", filters[i],
                             t);
    }
    json_t *all = c->json ? json_array() : NULL;
    long long left = limit;
    for (;;) {
        json_t *params = json_pack("{s:I, s:I}", "after", (json_int_t)after, "limit",
                                   (json_int_t)(limit && left < PAGE ? left : PAGE)),
               *page, *r;
        for (int i = 0; i < 5; i++)
            if (cli_opt(c, filters[i]))
                json_object_set_new(params, filters[i], json_string(cli_opt(c, filters[i])));
        int rc = cli_call(c, "audit log", params, &page);
        if (rc != 0) {
            json_decref(all);
            return rc;
        }
        json_t *recs = json_object_get(page, "records");
        size_t i;
        json_array_foreach(recs, i, r)
        {
            if (c->json)
                json_array_append(all, r);
            else
                print_record(r);
        }
        left -= (long long)json_array_size(recs);
        json_t *next = json_object_get(page, "next");
        int more = json_is_integer(next) && (!limit || left > 0);
        if (more)
            after = (long long)json_integer_value(next);
        json_decref(page);
        if (!more)
            break;
    }
    if (c->json)
        cli_print_json(all);
    return 0;
}

static int run_audit_verify(cli *c)
{
    json_t *r;
    int rc = cli_call(c, "audit verify", json_object(), &r);
    if (rc != 0)
        return rc;
    int ok = json_is_true(json_object_get(r, "ok"));
    if (!ok)
        cf_error_set(&c->err, CF_ERR_TAMPERED, "%s", cli_jstr(r, "error", "audit chain broken"));
    if (c->json) {
        json_object_del(r, "error");
        cli_print_json(json_incref(r));
    } else if (ok) {
        printf("audit chain intact: %lld records, head %lld\n", cli_jint(r, "records"),
               cli_jint(r, "head"));
    }
    json_decref(r);
    return ok ? 0 : cli_fail(c);
}

static const cli_opt_spec log_opts[] = {
    {"after", "SEQ", "only records after sequence number SEQ"},
    {"from", "TIME", "only records at or after TIME (YYYY-MM-DD[THH:MM:SSZ])"},
    {"until", "TIME", "only records before TIME"},
    {"actor", "WHO", "only records by actor WHO"},
    {"action", "ACTION", "only this action (a trailing * matches a prefix: cert.*)"},
    {"object", "OBJECT", "only records about OBJECT"},
    {"limit", "N", "at most N records"},
    {NULL, NULL, NULL},
};

const cli_cmd cli_cmds_audit[] = {
    {"audit log", NULL, 0, "list audit records", log_opts, run_audit_log, 1, CLI_OP, 0},
    {"audit verify", NULL, 0, "recompute the audit hash chain and name the first bad record", NULL,
     run_audit_verify, 1, CLI_OP, 0},
    {NULL, NULL, 0, NULL, NULL, NULL, 0, 0, 0},
};
