/* cmd_enroll.c - what an operator decides about enrollment over EST: device approve, and an
 * owner's enrollment policy (owner policy). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/principal.h"
#include "fleet/enroll.h"

/* ---- device approve ---- */

static int run_device_approve(cli *c)
{
    cf_principal p;
    if (cli_principal(c, &p) != 0)
        return 1;
    if (cf_fleet_device_approve(c->fleet, &p, c->args[0], &c->err) != CF_OK)
        return cli_fail(c);
    if (c->json)
        cli_print_json(json_pack("{s:s, s:b}", "device", c->args[0], "approved", 1));
    else
        printf("device %s approved: its next enrollment goes through\n", c->args[0]);
    return 0;
}

static const cli_opt_spec approve_opts[] = {
    CLI_PRINCIPAL_OPTS,
    {NULL, NULL, NULL},
};

/* ---- owner policy ---- */

/* Reads --NAME on|off into *field; 0 when absent or valid, 2 after a usage message. */
static int on_off(cli *c, const char *name, int *field, int *set)
{
    const char *v = cli_opt(c, name);
    if (!v)
        return 0;
    if (strcmp(v, "on") == 0)
        *field = 1;
    else if (strcmp(v, "off") == 0)
        *field = 0;
    else
        return cli_usage(c, "--%s %s: expected on or off", name, v);
    *set = 1;
    return 0;
}

static void print_policy(const char *owner, const cf_enroll_policy *pol)
{
    printf("enrollment policy of %s\n", owner);
    printf("  %-18s %s\n", "require approval", pol->require_approval ? "on" : "off");
    printf("  %-18s %s\n", "serverkeygen", pol->serverkeygen ? "on" : "off");
    printf("  %-18s %s\n", "allow key reuse", pol->allow_key_reuse ? "on" : "off");
    printf("  %-18s %s\n", "allow birth key", pol->allow_birth_key ? "on" : "off");
    printf("  %-18s %lld s\n", "re-enroll grace", (long long)pol->reenroll_grace_s);
}

static int run_owner_policy(cli *c)
{
    static const struct {
        const char *opt;
        size_t off;
    } flags[] = {
        {"require-approval", offsetof(cf_enroll_policy, require_approval)},
        {"serverkeygen", offsetof(cf_enroll_policy, serverkeygen)},
        {"allow-key-reuse", offsetof(cf_enroll_policy, allow_key_reuse)},
        {"allow-birth-key", offsetof(cf_enroll_policy, allow_birth_key)},
    };
    cf_principal p;
    cf_enroll_policy pol;
    int set = 0, rc;
    long long grace;
    if (cli_principal(c, &p) != 0)
        return 1;
    if (cf_fleet_enroll_policy_get(c->fleet, &p, c->args[0], &pol, &c->err) != CF_OK)
        return cli_fail(c);
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        if ((rc = on_off(c, flags[i].opt, (int *)((char *)&pol + flags[i].off), &set)) != 0)
            return rc;
    if (cli_int(c, "reenroll-grace", 0, CF_ENROLL_GRACE_MAX_S, pol.reenroll_grace_s, &grace) < 0)
        return 2;
    set |= cli_opt(c, "reenroll-grace") != NULL;
    pol.reenroll_grace_s = grace;
    if (set && cf_fleet_enroll_policy_set(c->fleet, &p, c->args[0], &pol, &c->err) != CF_OK)
        return cli_fail(c);
    if (c->json) {
        json_t *j = cf_enroll_policy_json(&pol);
        json_object_set_new(j, "owner", json_string(c->args[0]));
        cli_print_json(j);
    } else {
        print_policy(c->args[0], &pol);
    }
    return 0;
}

static const cli_opt_spec policy_opts[] = {
    {"require-approval", "SWITCH", "on: hold each birth enrollment until device approve (off)"},
    {"serverkeygen", "SWITCH", "on: certfleet may make keys for devices that cannot (off)"},
    {"allow-key-reuse", "SWITCH", "on: a re-enrollment may keep the current key (off)"},
    {"allow-birth-key", "SWITCH", "on: the operational key may be the birth key (off)"},
    {"reenroll-grace", "SECONDS",
     "how long a superseded certificate stays good after a re-enrollment (3600; 0: revoked at"
     " once)"},
    CLI_PRINCIPAL_OPTS,
    {NULL, NULL, NULL},
};

const cli_cmd cli_cmds_enroll[] = {
    {"device approve", "ID", 1,
     "let a device's next enrollment through where its owner requires approval", approve_opts,
     run_device_approve, 1, 1, 0},
    {"owner policy", "NAME", 1, "show or set an owner's enrollment policy (EST)", policy_opts,
     run_owner_policy, 1, 1, 0},
    {NULL, NULL, 0, NULL, NULL, NULL, 0, 0, 0},
};
