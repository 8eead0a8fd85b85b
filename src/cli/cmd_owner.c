/* cmd_owner.c - owner add, list, token, tokens, token-revoke. */
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/principal.h"
#include "core/util.h"

static int run_owner_add(cli *c)
{
    cf_principal p;
    int64_t id = 0;
    if (cli_principal(c, &p) != 0)
        return 1;
    if (cf_fleet_owner_add(c->fleet, &p, c->args[0], &id, &c->err) != CF_OK)
        return cli_fail(c);
    if (c->json)
        cli_print_json(json_pack("{s:I, s:s}", "id", (json_int_t)id, "name", c->args[0]));
    else
        printf("owner %s added\n", c->args[0]);
    return 0;
}

static int run_owner_list(cli *c)
{
    cf_principal p;
    cf_owner_rec *recs = NULL;
    size_t n = 0;
    if (cli_principal(c, &p) != 0)
        return 1;
    if (cf_fleet_owner_list(c->fleet, &p, &recs, &n, &c->err) != CF_OK)
        return cli_fail(c);
    json_t *arr = c->json ? json_array() : NULL;
    if (!c->json)
        printf("%-24s %-10s %s\n", "NAME", "DEVICES", "CREATED");
    for (size_t i = 0; i < n; i++) {
        char ts[CF_TIME_STR_MAX];
        cf_time_format(recs[i].created_us, ts);
        if (c->json)
            json_array_append_new(arr,
                                  json_pack("{s:I, s:s, s:I, s:s}", "id", (json_int_t)recs[i].id,
                                            "name", recs[i].name, "devices",
                                            (json_int_t)recs[i].devices, "created", ts));
        else
            printf("%-24s %-10lld %s\n", recs[i].name, (long long)recs[i].devices, ts);
        cf_owner_rec_clear(&recs[i]);
    }
    free(recs);
    if (c->json)
        cli_print_json(arr);
    return 0;
}

static int run_owner_token(cli *c)
{
    cf_principal p;
    const char *role_name = cli_opt(c, "role");
    char token[CF_TOKEN_STR_MAX];
    int64_t id = 0;
    if (!role_name)
        return cli_usage(c, "--role admin|operator|auditor is required");
    int role = cf_role_parse(role_name);
    if (role < 0)
        return cli_usage(c, "--role %s: expected admin, operator or auditor", role_name);
    if (cli_principal(c, &p) != 0)
        return 1;
    if (cf_fleet_token_create(c->fleet, &p, c->args[0], (cf_role)role, cli_opt(c, "label"), token,
                              &id, &c->err) != CF_OK)
        return cli_fail(c);
    if (c->json) {
        cli_print_json(json_pack("{s:I, s:s, s:s, s:s}", "id", (json_int_t)id, "owner", c->args[0],
                                 "role", role_name, "token", token));
    } else {
        printf("%s\n", token);
        fprintf(stderr, "token #%lld for %s (%s): shown this once; only its hash is stored\n",
                (long long)id, c->args[0], role_name);
    }
    OPENSSL_cleanse(token, sizeof token);
    return 0;
}

static int run_owner_tokens(cli *c)
{
    cf_principal p;
    cf_token_rec *recs = NULL;
    size_t n = 0;
    if (cli_principal(c, &p) != 0)
        return 1;
    if (cf_fleet_token_list(c->fleet, &p, c->args[0], &recs, &n, &c->err) != CF_OK)
        return cli_fail(c);
    json_t *arr = c->json ? json_array() : NULL;
    if (!c->json)
        printf("%-6s %-9s %-28s %-28s %s\n", "ID", "ROLE", "CREATED", "REVOKED", "LABEL");
    for (size_t i = 0; i < n; i++) {
        char cr[CF_TIME_STR_MAX], rv[CF_TIME_STR_MAX] = "-";
        cf_time_format(recs[i].created_us, cr);
        if (recs[i].revoked_us)
            cf_time_format(recs[i].revoked_us, rv);
        if (c->json)
            json_array_append_new(
                arr, json_pack("{s:I, s:s, s:o, s:s, s:o}", "id", (json_int_t)recs[i].id, "role",
                               cf_role_name(recs[i].role), "label",
                               recs[i].label ? json_string(recs[i].label) : json_null(), "created",
                               cr, "revoked", recs[i].revoked_us ? json_string(rv) : json_null()));
        else
            printf("%-6lld %-9s %-28s %-28s %s\n", (long long)recs[i].id,
                   cf_role_name(recs[i].role), cr, rv, recs[i].label ? recs[i].label : "");
        cf_token_rec_clear(&recs[i]);
    }
    free(recs);
    if (c->json)
        cli_print_json(arr);
    return 0;
}

static int run_owner_token_revoke(cli *c)
{
    cf_principal p;
    char *end;
    long long id = strtoll(c->args[1], &end, 10);
    if (!*c->args[1] || *end || id < 1)
        return cli_usage(c, "token id %s: expected a number", c->args[1]);
    if (cli_principal(c, &p) != 0)
        return 1;
    if (cf_fleet_token_revoke(c->fleet, &p, c->args[0], id, &c->err) != CF_OK)
        return cli_fail(c);
    if (c->json)
        cli_print_json(
            json_pack("{s:I, s:s, s:b}", "id", (json_int_t)id, "owner", c->args[0], "revoked", 1));
    else
        printf("token #%lld of %s revoked\n", id, c->args[0]);
    return 0;
}

static const cli_opt_spec scope_opts[] = {
    CLI_PRINCIPAL_OPTS,
    {NULL, NULL, NULL},
};

static const cli_opt_spec token_opts[] = {
    {"role", "ROLE", "admin, operator or auditor"},
    {"label", "TEXT", "a note on what the token is for"},
    CLI_PRINCIPAL_OPTS,
    {NULL, NULL, NULL},
};

const cli_cmd cli_cmds_owner[] = {
    {"owner add", "NAME", 1, "add an owner (a customer who claims devices)", NULL, run_owner_add, 1,
     1, 0},
    {"owner list", NULL, 0, "list the owners with their device counts", scope_opts, run_owner_list,
     1, 1, 0},
    {"owner token", "NAME", 1,
     "make an API token of owner NAME, or - for the vendor (printed once, stored hashed)",
     token_opts, run_owner_token, 1, 1, 0},
    {"owner tokens", "NAME", 1, "list the tokens of owner NAME (never the tokens themselves)",
     scope_opts, run_owner_tokens, 1, 1, 0},
    {"owner token-revoke", "NAME ID", 2, "revoke token ID of owner NAME", scope_opts,
     run_owner_token_revoke, 1, 1, 0},
    {NULL, NULL, 0, NULL, NULL, NULL, 0, 0, 0},
};
