/* cmd_device.c - device list, show, claim, transfer, suspend, resume, decommission, group,
 * claim-limits. */
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/principal.h"
#include "core/util.h"

/* ---- list ---- */

#define PAGE 10000 /* devices asked for at a time */

static void print_device(json_t *d)
{
    printf("%-28s %-14s %-16s %-16s %-12s %s\n", cli_jstr(d, "id", ""), cli_jstr(d, "state", ""),
           cli_jstr(d, "owner", "-"), cli_jstr(d, "batch", "-"), cli_jstr(d, "group", "-"),
           cli_jstr(d, "model", "-"));
}

/* Asks for the devices page by page (the operation returns at most PAGE at a time) until
 * --limit or the end. */
static int run_device_list(cli *c)
{
    static const char *const filters[] = {"state", "owner",        "batch",
                                          "group", "manufacturer", "model"};
    const char *state = cli_opt(c, "state");
    char after[CF_DEVICE_ID_MAX + 1] = "";
    long long limit;
    if (state && cf_device_state_parse(state) < 0)
        return cli_usage(c,
                         "--state %s: expected on_hold, claimed, active, suspended, revoked or"
                         " decommissioned",
                         state);
    if (cli_int(c, "limit", 1, 1000000000, 0, &limit) < 0)
        return 2;
    if (cli_opt(c, "after"))
        snprintf(after, sizeof after, "%s", cli_opt(c, "after"));
    json_t *all = c->json ? json_array() : NULL, *next = NULL;
    if (!c->json)
        printf("%-28s %-14s %-16s %-16s %-12s %s\n", "ID", "STATE", "OWNER", "BATCH", "GROUP",
               "MODEL");
    for (long long left = limit;;) {
        json_t *params =
            json_pack("{s:I}", "limit", (json_int_t)(limit && left < PAGE ? left : PAGE));
        json_t *page, *d;
        size_t i;
        for (size_t f = 0; f < sizeof filters / sizeof filters[0]; f++)
            if (cli_opt(c, filters[f]))
                json_object_set_new(params, filters[f], json_string(cli_opt(c, filters[f])));
        if (after[0])
            json_object_set_new(params, "after", json_string(after));
        int rc = cli_call(c, "device list", params, &page);
        if (rc != 0) {
            json_decref(all);
            return rc;
        }
        json_t *devs = json_object_get(page, "devices");
        json_array_foreach(devs, i, d)
        {
            if (c->json)
                json_array_append(all, d);
            else
                print_device(d);
        }
        left -= (long long)json_array_size(devs);
        next = json_incref(json_object_get(page, "next"));
        json_decref(page);
        if (!json_is_string(next) || (limit && left <= 0))
            break;
        snprintf(after, sizeof after, "%s", json_string_value(next));
        json_decref(next);
        next = NULL;
    }
    if (c->json)
        cli_print_json(json_pack("{s:o, s:O}", "devices", all, "next", next ? next : json_null()));
    else if (json_is_string(next))
        fprintf(stderr, "more devices: continue with --after %s\n", json_string_value(next));
    json_decref(next);
    return 0;
}

static const cli_opt_spec list_opts[] = {
    {"state", "STATE", "only devices in STATE (on_hold, claimed, active, suspended, ...)"},
    {"owner", "NAME", "only devices of owner NAME (- : those still the vendor's)"},
    {"batch", "NAME", "only devices of batch NAME"},
    {"group", "NAME", "only devices in group NAME"},
    {"manufacturer", "NAME", "only devices of manufacturer NAME"},
    {"model", "MODEL", "only devices of MODEL"},
    {"limit", "N", "at most N devices (a page); the next page starts --after the last"},
    {"after", "ID", "only devices after ID (the \"next\" of the previous page)"},
    CLI_PRINCIPAL_OPTS,
    {NULL, NULL, NULL},
};

/* ---- show ---- */

static const char *str_or(json_t *j, const char *key, const char *dflt)
{
    const char *s = json_string_value(json_object_get(j, key));
    return s ? s : dflt;
}

static void print_show(json_t *j)
{
    static const char *const fields[][2] = {
        {"id", "device"},
        {"state", "state"},
        {"owner", "owner"},
        {"manufacturer", "manufacturer"},
        {"batch", "batch"},
        {"group", "group"},
        {"model", "model"},
        {"part_number", "part number"},
        {"provisioned", "provisioned"},
        {"created", "created"},
        {"updated", "updated"},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        printf("%-14s %s\n", fields[i][1],
               str_or(j, fields[i][0], strcmp(fields[i][0], "owner") == 0 ? "(the vendor)" : "-"));
    printf("%-14s %s\n", "claim code",
           json_is_true(json_object_get(j, "claim_code")) ? "yes" : "no");
    json_t *certs = json_object_get(j, "certificates"), *v;
    size_t i;
    printf("\ncertificates (%zu)\n", json_array_size(certs));
    json_array_foreach(certs, i, v)
    {
        json_t *reason = json_object_get(v, "reason");
        printf("  %-34s %-8s", str_or(v, "serial", "?"), str_or(v, "status", "?"));
        if (json_is_integer(reason))
            printf(" reason %lld at %s", (long long)json_integer_value(reason),
                   str_or(v, "revoked", "?"));
        printf("  not after %s\n", str_or(v, "not_after", "?"));
    }
    json_t *hist = json_object_get(j, "history");
    printf("\nhistory (%zu)\n", json_array_size(hist));
    json_array_foreach(hist, i, v)
    {
        char *det = json_dumps(json_object_get(v, "details"), JSON_COMPACT | JSON_SORT_KEYS);
        printf("  %6lld  %s  %-22s %-20s %s\n",
               (long long)json_integer_value(json_object_get(v, "seq")), str_or(v, "time", "?"),
               str_or(v, "action", "?"), str_or(v, "actor", "?"), det ? det : "");
        free(det);
    }
}

static int run_device_show(cli *c)
{
    json_t *j = NULL;
    int rc = cli_call(c, "device show", json_pack("{s:s}", "id", c->args[0]), &j);
    if (rc != 0)
        return rc;
    if (c->json) {
        cli_print_json(j);
    } else {
        print_show(j);
        json_decref(j);
    }
    return 0;
}

/* ---- claim ---- */

static int claim_batch(cli *c, const char *batch, const char *owner)
{
    json_t *r;
    if (!owner)
        return cli_usage(c, "--owner NAME is required");
    int rc = cli_call(c, "device claim batch",
                      json_pack("{s:s, s:s}", "batch", batch, "owner", owner), &r);
    if (rc != 0)
        return rc;
    long long n = cli_jint(r, "claimed");
    if (c->json) {
        cli_print_json(r);
        return 0;
    }
    if (n)
        printf("claimed %lld device%s of batch %s for %s\n", n, n == 1 ? "" : "s", batch, owner);
    else
        printf("no device of batch %s is on hold: nothing claimed\n", batch);
    json_decref(r);
    return 0;
}

static int run_device_claim(cli *c)
{
    const char *owner = cli_opt(c, "owner"), *code = cli_opt(c, "code");
    const char *batch = cli_opt(c, "batch");
    json_t *r;
    if (batch) {
        if (c->nargs || code)
            return cli_usage(c, "--batch claims a whole batch: no ID and no --code");
        return claim_batch(c, batch, owner);
    }
    if (c->nargs != 1)
        return cli_usage(c, "expected ID (or --batch NAME)");
    /* A caller scoped to an owner claims for itself; over --server the token decides. */
    if (!owner && !cli_opt(c, "as-owner") && !c->server)
        return cli_usage(c, "--owner NAME is required");
    json_t *params = json_pack("{s:s}", "id", c->args[0]);
    if (owner)
        json_object_set_new(params, "owner", json_string(owner));
    if (code)
        json_object_set_new(params, "code", json_string(code));
    int rc = cli_call(c, "device claim", params, &r);
    if (rc != 0)
        return rc;
    if (c->json) {
        cli_print_json(r);
        return 0;
    }
    printf("device %s claimed\n", c->args[0]);
    json_decref(r);
    return 0;
}

static const cli_opt_spec claim_opts[] = {
    {"owner", "NAME", "the owner who gets the device"},
    {"code", "CODE", "the device's claim code (the customer's way: XX-XXXX-...)"},
    {"batch", "NAME", "claim every device of batch NAME that is on hold (instead of ID)"},
    CLI_PRINCIPAL_OPTS,
    {NULL, NULL, NULL},
};

/* ---- transfer, states ---- */

static int run_device_transfer(cli *c)
{
    const char *owner = cli_opt(c, "owner");
    json_t *r;
    if (!owner)
        return cli_usage(c, "--owner NAME is required");
    int rc = cli_call(c, "device transfer",
                      json_pack("{s:s, s:s}", "id", c->args[0], "owner", owner), &r);
    if (rc != 0)
        return rc;
    long long revoked = cli_jint(r, "revoked");
    if (c->json) {
        cli_print_json(r);
        return 0;
    }
    printf("device %s transferred to %s: %lld certificate%s revoked; it must enroll again\n",
           c->args[0], owner, revoked, revoked == 1 ? "" : "s");
    json_decref(r);
    return 0;
}

static int set_state(cli *c, const char *op, cf_device_state to)
{
    json_t *r;
    int rc = cli_call(c, op, json_pack("{s:s}", "id", c->args[0]), &r);
    if (rc != 0)
        return rc;
    int changed = json_is_true(json_object_get(r, "changed"));
    long long revoked = cli_jint(r, "revoked");
    if (c->json) {
        cli_print_json(r);
        return 0;
    }
    if (!changed)
        printf("device %s is already %s\n", c->args[0], cf_device_state_name(to));
    else if (to == CF_DEVICE_DECOMMISSIONED)
        printf("device %s decommissioned: %lld certificate%s revoked\n", c->args[0], revoked,
               revoked == 1 ? "" : "s");
    else
        printf("device %s is now %s\n", c->args[0], cf_device_state_name(to));
    json_decref(r);
    return 0;
}

static int run_device_suspend(cli *c)
{
    return set_state(c, "device suspend", CF_DEVICE_SUSPENDED);
}

static int run_device_resume(cli *c)
{
    return set_state(c, "device resume", CF_DEVICE_ACTIVE);
}

static int run_device_decommission(cli *c)
{
    return set_state(c, "device decommission", CF_DEVICE_DECOMMISSIONED);
}

static const cli_opt_spec transfer_opts[] = {
    {"owner", "NAME", "the new owner"},
    CLI_PRINCIPAL_OPTS,
    {NULL, NULL, NULL},
};

static const cli_opt_spec scope_opts[] = {
    CLI_PRINCIPAL_OPTS,
    {NULL, NULL, NULL},
};

/* ---- groups ---- */

static int set_group(cli *c, const char *id, const char *grp)
{
    json_t *r;
    int rc =
        grp ? cli_call(c, "device group set", json_pack("{s:s, s:s}", "id", id, "group", grp), &r)
            : cli_call(c, "device group clear", json_pack("{s:s}", "id", id), &r);
    if (rc != 0)
        return rc;
    if (c->json) {
        cli_print_json(r);
        return 0;
    }
    if (grp)
        printf("device %s is in group %s\n", id, grp);
    else
        printf("device %s is in no group\n", id);
    json_decref(r);
    return 0;
}

/* device group set ID NAME (device ungroup ID clears) */
static int run_device_group(cli *c)
{
    if (strcmp(c->args[0], "set") != 0)
        return cli_usage(c, "expected set ID NAME (device ungroup ID takes a device out)");
    return set_group(c, c->args[1], c->args[2]);
}

static int run_device_ungroup(cli *c)
{
    return set_group(c, c->args[0], NULL);
}

/* ---- claim limits ---- */

static int run_claim_limits(cli *c)
{
    static const struct {
        const char *opt, *param;
    } opts[] = {
        {"device-failures", "device_failures"},
        {"device-window", "device_window_s"},
        {"owner-failures", "owner_failures"},
        {"owner-window", "owner_window_s"},
    };
    json_t *params = json_object(), *r;
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        long long v;
        if (cli_int(c, opts[i].opt, 1, 100000000, 0, &v) < 0) {
            json_decref(params);
            return 2;
        }
        if (cli_opt(c, opts[i].opt))
            json_object_set_new(params, opts[i].param, json_integer(v));
    }
    int rc =
        cli_call(c, json_object_size(params) ? "claim-limits set" : "claim-limits get", params, &r);
    if (rc != 0)
        return rc;
    if (c->json) {
        cli_print_json(r);
        return 0;
    }
    printf("failed claims by code: at most %lld per device in %lld s, %lld per owner in"
           " %lld s\n",
           cli_jint(r, "device_failures"), cli_jint(r, "device_window_s"),
           cli_jint(r, "owner_failures"), cli_jint(r, "owner_window_s"));
    json_decref(r);
    return 0;
}

static const cli_opt_spec limits_opts[] = {
    {"device-failures", "N", "failed claims by code allowed per device in its window (5)"},
    {"device-window", "SECONDS", "the per-device window (900)"},
    {"owner-failures", "N", "failed claims by code allowed per owner in its window (20)"},
    {"owner-window", "SECONDS", "the per-owner window (3600)"},
    {NULL, NULL, NULL},
};

const cli_cmd cli_cmds_device[] = {
    {"device list", NULL, 0, "list devices, filtered and paged (by id)", list_opts, run_device_list,
     1, CLI_OP, 0},
    {"device show", "ID", 1, "show a device with its certificates and its history", scope_opts,
     run_device_show, 1, CLI_OP, 0},
    {"device claim", "[ID]", 0,
     "give a device (or --batch) on hold to an owner: by the vendor's operator, or by the"
     " owner with --code",
     claim_opts, run_device_claim, 1, CLI_OP, 1},
    {"device transfer", "ID", 1,
     "hand a device to another owner: its certificates are revoked, it must enroll again",
     transfer_opts, run_device_transfer, 1, CLI_OP, 0},
    {"device suspend", "ID", 1, "suspend an active device (quarantine)", scope_opts,
     run_device_suspend, 1, CLI_OP, 0},
    {"device resume", "ID", 1, "resume a suspended device", scope_opts, run_device_resume, 1,
     CLI_OP, 0},
    {"device decommission", "ID", 1, "retire a device for good: its certificates are revoked",
     scope_opts, run_device_decommission, 1, CLI_OP, 0},
    {"device group", "set ID NAME", 3, "put a device in group NAME (device ungroup ID: in none)",
     scope_opts, run_device_group, 1, CLI_OP, 0},
    {"device ungroup", "ID", 1, "take a device out of its group", scope_opts, run_device_ungroup, 1,
     CLI_OP, 0},
    {"device claim-limits", NULL, 0, "show or set the limits on failed claims by code", limits_opts,
     run_claim_limits, 1, CLI_OP, 0},
    {NULL, NULL, 0, NULL, NULL, NULL, 0, 0, 0},
};
