/* cmd_device.c - device list, show, claim, transfer, suspend, resume, decommission, group,
 * claim-limits. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/principal.h"
#include "core/util.h"

/* ---- list ---- */

struct list_out {
    int json;
    json_t *arr;
};

static int print_device(void *arg, const cf_device_rec *d)
{
    struct list_out *lo = arg;
    if (lo->json) {
        json_array_append_new(lo->arr, cf_fleet_device_json(d));
        return 0;
    }
    printf("%-28s %-14s %-16s %-16s %-12s %s\n", d->id, cf_device_state_name(d->state),
           d->owner ? d->owner : "-", d->batch ? d->batch : "-", d->grp ? d->grp : "-",
           d->model ? d->model : "-");
    return 0;
}

static int run_device_list(cli *c)
{
    cf_principal p;
    cf_device_query q = {.state = -1};
    const char *state = cli_opt(c, "state");
    char next[CF_DEVICE_ID_MAX];
    long long limit;
    if (state && (q.state = cf_device_state_parse(state)) < 0)
        return cli_usage(c,
                         "--state %s: expected on_hold, claimed, active, suspended, revoked or"
                         " decommissioned",
                         state);
    if (cli_int(c, "limit", 1, 1000000000, 0, &limit) < 0)
        return 2;
    q.limit = limit;
    q.owner = cli_opt(c, "owner");
    q.batch = cli_opt(c, "batch");
    q.grp = cli_opt(c, "group");
    q.manufacturer = cli_opt(c, "manufacturer");
    q.model = cli_opt(c, "model");
    q.after = cli_opt(c, "after");
    if (cli_principal(c, &p) != 0)
        return 1;
    struct list_out lo = {.json = c->json, .arr = c->json ? json_array() : NULL};
    if (!c->json)
        printf("%-28s %-14s %-16s %-16s %-12s %s\n", "ID", "STATE", "OWNER", "BATCH", "GROUP",
               "MODEL");
    if (cf_fleet_device_list(c->fleet, &p, &q, print_device, &lo, next, &c->err) != CF_OK) {
        json_decref(lo.arr);
        return cli_fail(c);
    }
    if (c->json)
        cli_print_json(json_pack("{s:o, s:o}", "devices", lo.arr, "next",
                                 next[0] ? json_string(next) : json_null()));
    else if (next[0])
        fprintf(stderr, "more devices: continue with --after %s\n", next);
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
    cf_principal p;
    json_t *j = NULL;
    if (cli_principal(c, &p) != 0)
        return 1;
    if (cf_fleet_device_show(c->fleet, &p, c->args[0], &j, &c->err) != CF_OK)
        return cli_fail(c);
    if (c->json) {
        cli_print_json(j);
    } else {
        print_show(j);
        json_decref(j);
    }
    return 0;
}

/* ---- claim ---- */

static int claim_batch(cli *c, const cf_principal *p, const char *batch, const char *owner)
{
    int64_t n = 0;
    if (!owner)
        return cli_usage(c, "--owner NAME is required");
    if (cf_fleet_device_claim_batch(c->fleet, p, batch, owner, &n, &c->err) != CF_OK)
        return cli_fail(c);
    if (c->json)
        cli_print_json(
            json_pack("{s:s, s:s, s:I}", "batch", batch, "owner", owner, "claimed", (json_int_t)n));
    else if (n)
        printf("claimed %lld device%s of batch %s for %s\n", (long long)n, n == 1 ? "" : "s", batch,
               owner);
    else
        printf("no device of batch %s is on hold: nothing claimed\n", batch);
    return 0;
}

static int run_device_claim(cli *c)
{
    cf_principal p;
    const char *owner = cli_opt(c, "owner"), *code = cli_opt(c, "code");
    const char *batch = cli_opt(c, "batch");
    if (cli_principal(c, &p) != 0)
        return 1;
    if (batch) {
        if (c->nargs || code)
            return cli_usage(c, "--batch claims a whole batch: no ID and no --code");
        return claim_batch(c, &p, batch, owner);
    }
    if (c->nargs != 1)
        return cli_usage(c, "expected ID (or --batch NAME)");
    if (!owner && !p.owner_id)
        return cli_usage(c, "--owner NAME is required");
    cf_claim_req req = {.device_id = c->args[0], .owner = owner, .code = code};
    if (cf_fleet_device_claim(c->fleet, &p, &req, &c->err) != CF_OK)
        return cli_fail(c);
    if (c->json)
        cli_print_json(json_pack("{s:s, s:s, s:s}", "device", c->args[0], "state", "claimed", "how",
                                 code ? "code" : "operator"));
    else
        printf("device %s claimed\n", c->args[0]);
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
    cf_principal p;
    const char *owner = cli_opt(c, "owner");
    int64_t revoked = 0;
    if (!owner)
        return cli_usage(c, "--owner NAME is required");
    if (cli_principal(c, &p) != 0)
        return 1;
    if (cf_fleet_device_transfer(c->fleet, &p, c->args[0], owner, &revoked, &c->err) != CF_OK)
        return cli_fail(c);
    if (c->json)
        cli_print_json(json_pack("{s:s, s:s, s:s, s:I}", "device", c->args[0], "owner", owner,
                                 "state", "claimed", "revoked", (json_int_t)revoked));
    else
        printf("device %s transferred to %s: %lld certificate%s revoked; it must enroll again\n",
               c->args[0], owner, (long long)revoked, revoked == 1 ? "" : "s");
    return 0;
}

static int set_state(cli *c, cf_device_state to)
{
    cf_principal p;
    int changed = 0;
    int64_t revoked = 0;
    if (cli_principal(c, &p) != 0)
        return 1;
    if (cf_fleet_device_set_state(c->fleet, &p, c->args[0], to, &changed, &revoked, &c->err) !=
        CF_OK)
        return cli_fail(c);
    if (c->json)
        cli_print_json(json_pack("{s:s, s:s, s:b, s:I}", "device", c->args[0], "state",
                                 cf_device_state_name(to), "changed", changed, "revoked",
                                 (json_int_t)revoked));
    else if (!changed)
        printf("device %s is already %s\n", c->args[0], cf_device_state_name(to));
    else if (to == CF_DEVICE_DECOMMISSIONED)
        printf("device %s decommissioned: %lld certificate%s revoked\n", c->args[0],
               (long long)revoked, revoked == 1 ? "" : "s");
    else
        printf("device %s is now %s\n", c->args[0], cf_device_state_name(to));
    return 0;
}

static int run_device_suspend(cli *c)
{
    return set_state(c, CF_DEVICE_SUSPENDED);
}

static int run_device_resume(cli *c)
{
    return set_state(c, CF_DEVICE_ACTIVE);
}

static int run_device_decommission(cli *c)
{
    return set_state(c, CF_DEVICE_DECOMMISSIONED);
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
    cf_principal p;
    if (cli_principal(c, &p) != 0)
        return 1;
    if (cf_fleet_device_set_group(c->fleet, &p, id, grp, &c->err) != CF_OK)
        return cli_fail(c);
    if (c->json)
        cli_print_json(
            json_pack("{s:s, s:o}", "device", id, "group", grp ? json_string(grp) : json_null()));
    else if (grp)
        printf("device %s is in group %s\n", id, grp);
    else
        printf("device %s is in no group\n", id);
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
        const char *opt;
        size_t off;
    } opts[] = {
        {"device-failures", offsetof(cf_claim_limits, device_max)},
        {"device-window", offsetof(cf_claim_limits, device_window_s)},
        {"owner-failures", offsetof(cf_claim_limits, owner_max)},
        {"owner-window", offsetof(cf_claim_limits, owner_window_s)},
    };
    cf_claim_limits l = {0};
    int set = 0;
    if (cf_fleet_claim_limits_get(c->fleet, &l, &c->err) != CF_OK)
        return cli_fail(c);
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        int64_t *field = (int64_t *)((char *)&l + opts[i].off);
        long long v;
        if (cli_int(c, opts[i].opt, 1, 100000000, *field, &v) < 0)
            return 2;
        set |= cli_opt(c, opts[i].opt) != NULL;
        *field = v;
    }
    if (set) {
        cf_principal p;
        if (cli_principal(c, &p) != 0)
            return 1;
        if (cf_fleet_claim_limits_set(c->fleet, &p, &l, &c->err) != CF_OK)
            return cli_fail(c);
    }
    if (c->json)
        cli_print_json(
            json_pack("{s:I, s:I, s:I, s:I}", "device_failures", (json_int_t)l.device_max,
                      "device_window_s", (json_int_t)l.device_window_s, "owner_failures",
                      (json_int_t)l.owner_max, "owner_window_s", (json_int_t)l.owner_window_s));
    else
        printf("failed claims by code: at most %lld per device in %lld s, %lld per owner in"
               " %lld s\n",
               (long long)l.device_max, (long long)l.device_window_s, (long long)l.owner_max,
               (long long)l.owner_window_s);
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
     1, 1, 0},
    {"device show", "ID", 1, "show a device with its certificates and its history", scope_opts,
     run_device_show, 1, 1, 0},
    {"device claim", "[ID]", 0,
     "give a device (or --batch) on hold to an owner: by the vendor's operator, or by the"
     " owner with --code",
     claim_opts, run_device_claim, 1, 1, 1},
    {"device transfer", "ID", 1,
     "hand a device to another owner: its certificates are revoked, it must enroll again",
     transfer_opts, run_device_transfer, 1, 1, 0},
    {"device suspend", "ID", 1, "suspend an active device (quarantine)", scope_opts,
     run_device_suspend, 1, 1, 0},
    {"device resume", "ID", 1, "resume a suspended device", scope_opts, run_device_resume, 1, 1, 0},
    {"device decommission", "ID", 1, "retire a device for good: its certificates are revoked",
     scope_opts, run_device_decommission, 1, 1, 0},
    {"device group", "set ID NAME", 3, "put a device in group NAME (device ungroup ID: in none)",
     scope_opts, run_device_group, 1, 1, 0},
    {"device ungroup", "ID", 1, "take a device out of its group", scope_opts, run_device_ungroup, 1,
     1, 0},
    {"device claim-limits", NULL, 0, "show or set the limits on failed claims by code", limits_opts,
     run_claim_limits, 1, 1, 0},
    {NULL, NULL, 0, NULL, NULL, NULL, 0, 0, 0},
};
