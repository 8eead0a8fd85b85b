/* cmd_audit.c - audit log, audit verify. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit/audit.h"
#include "cli/cli.h"
#include "core/util.h"

struct log_state {
    int json;
    json_t *arr;
};

static int print_record(void *arg, const cf_audit_rec *r)
{
    struct log_state *ls = arg;
    char ts[CF_TIME_STR_MAX], hash[2 * CF_HASH_LEN + 1];
    cf_time_format(r->time_us, ts);
    cf_hex_encode(r->hash, CF_HASH_LEN, 0, hash);
    if (ls->json) {
        json_t *details = json_loads(r->details, 0, NULL);
        json_array_append_new(ls->arr,
                              json_pack("{s:I, s:s, s:s, s:s, s:s, s:o, s:s}", "seq",
                                        (json_int_t)r->seq, "time", ts, "actor", r->actor, "action",
                                        r->action, "object", r->object, "details",
                                        details ? details : json_string(r->details), "hash", hash));
        return 0;
    }
    printf("%6lld  %s  %-16s %-14s %-24s %s\n", (long long)r->seq, ts, r->actor, r->action,
           r->object, r->details);
    return 0;
}

/* Accepts RFC 3339 UTC ("2026-11-25T20:00:00Z") or a date ("2026-11-25"). */
static int parse_time(const char *s, int64_t *us)
{
    struct tm tm = {0};
    const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end) {
        memset(&tm, 0, sizeof tm);
        end = strptime(s, "%Y-%m-%d", &tm);
    }
    if (!end || (*end && strcmp(end, "Z") != 0))
        return -1;
    *us = (int64_t)timegm(&tm) * 1000000;
    return 0;
}

static int run_audit_log(cli *c)
{
    cf_audit_filter f = {0};
    long long since, limit;
    if (cli_int(c, "after", 0, INT64_MAX, 0, &since) < 0 ||
        cli_int(c, "limit", 0, INT64_MAX, 0, &limit) < 0)
        return 2;
    f.since_seq = since;
    f.limit = limit;
    f.actor = cli_opt(c, "actor");
    f.action = cli_opt(c, "action");
    f.object = cli_opt(c, "object");
    const char *from = cli_opt(c, "from"), *until = cli_opt(c, "until");
    if (from && parse_time(from, &f.since_us) < 0)
        return cli_usage(c, "--from %s: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ", from);
    if (until && parse_time(until, &f.until_us) < 0)
        return cli_usage(c, "--until %s: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ", until);
    struct log_state ls = {.json = c->json, .arr = c->json ? json_array() : NULL};
    if (cf_store_audit_scan(cf_fleet_store(c->fleet), &f, print_record, &ls, &c->err) != CF_OK) {
        json_decref(ls.arr);
        return cli_fail(c);
    }
    if (c->json)
        cli_print_json(ls.arr);
    return 0;
}

static int run_audit_verify(cli *c)
{
    cf_audit_verify_result res;
    cf_err rc = cf_audit_verify(cf_fleet_store(c->fleet), &res, &c->err);
    if (rc != CF_OK && rc != CF_ERR_TAMPERED)
        return cli_fail(c);
    if (c->json)
        cli_print_json(json_pack("{s:b, s:I, s:I, s:I, s:s}", "ok", rc == CF_OK, "records",
                                 (json_int_t)res.records, "head", (json_int_t)res.head_seq,
                                 "first_bad", (json_int_t)res.bad_seq, "reason", res.reason));
    else if (rc == CF_OK)
        printf("audit chain intact: %lld records, head %lld\n", (long long)res.records,
               (long long)res.head_seq);
    if (rc != CF_OK)
        return cli_fail(c);
    return 0;
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
    {"audit log", NULL, 0, "list audit records", log_opts, run_audit_log, 1, 1, 0},
    {"audit verify", NULL, 0, "recompute the audit hash chain and name the first bad record", NULL,
     run_audit_verify, 1, 1, 0},
    {NULL, NULL, 0, NULL, NULL, NULL, 0, 0, 0},
};
