/* cmd_owner.c - owner add, list, token, tokens, token-revoke. */
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/principal.h"

static int run_owner_add(cli *c)
{
    json_t *r;
    int rc = cli_call(c, "owner add", json_pack("{s:s}", "name", c->args[0]), &r);
    if (rc != 0)
        return rc;
    if (c->json) {
        cli_print_json(r);
        return 0;
    }
    printf("owner %s added\n", c->args[0]);
    json_decref(r);
    return 0;
}

static int run_owner_list(cli *c)
{
    json_t *r, *o;
    size_t i;
    int rc = cli_call(c, "owner list", json_object(), &r);
    if (rc != 0)
        return rc;
    if (c->json) {
        cli_print_json(r);
        return 0;
    }
    printf("%-24s %-10s %s\n", "NAME", "DEVICES", "CREATED");
    json_array_foreach(r, i, o)
    {
        printf("%-24s %-10lld %s\n", cli_jstr(o, "name", ""), cli_jint(o, "devices"),
               cli_jstr(o, "created", ""));
    }
    json_decref(r);
    return 0;
}

static int run_owner_token(cli *c)
{
    const char *role_name = cli_opt(c, "role"), *label = cli_opt(c, "label");
    json_t *r;
    if (!role_name)
        return cli_usage(c, "--role admin|operator|auditor is required");
    if (cf_role_parse(role_name) < 0)
        return cli_usage(c, "--role %s: expected admin, operator or auditor", role_name);
    json_t *params = json_pack("{s:s, s:s}", "owner", c->args[0], "role", role_name);
    if (label)
        json_object_set_new(params, "label", json_string(label));
    int rc = cli_call(c, "owner token", params, &r);
    if (rc != 0)
        return rc;
    if (c->json) {
        json_object_set_new(r, "role", json_string(role_name));
        cli_print_json(r);
        return 0;
    }
    printf("%s\n", cli_jstr(r, "token", ""));
    fprintf(stderr, "token #%lld for %s (%s): shown this once; only its hash is stored\n",
            cli_jint(r, "id"), c->args[0], role_name);
    json_decref(r);
    return 0;
}

static int run_owner_tokens(cli *c)
{
    json_t *r, *t;
    size_t i;
    int rc = cli_call(c, "owner tokens", json_pack("{s:s}", "owner", c->args[0]), &r);
    if (rc != 0)
        return rc;
    if (c->json) {
        cli_print_json(r);
        return 0;
    }
    printf("%-6s %-9s %-28s %-28s %s\n", "ID", "ROLE", "CREATED", "REVOKED", "LABEL");
    json_array_foreach(r, i, t)
    {
        printf("%-6lld %-9s %-28s %-28s %s\n", cli_jint(t, "id"), cli_jstr(t, "role", ""),
               cli_jstr(t, "created", ""), cli_jstr(t, "revoked", "-"), cli_jstr(t, "label", ""));
    }
    json_decref(r);
    return 0;
}

static int run_owner_token_revoke(cli *c)
{
    char *end;
    json_t *r;
    long long id = strtoll(c->args[1], &end, 10);
    if (!*c->args[1] || *end || id < 1)
        return cli_usage(c, "token id %s: expected a number", c->args[1]);
    int rc = cli_call(c, "owner token-revoke",
                      json_pack("{s:s, s:s}", "owner", c->args[0], "id", c->args[1]), &r);
    if (rc != 0)
        return rc;
    if (c->json) {
        cli_print_json(r);
        return 0;
    }
    printf("token #%lld of %s revoked\n", id, c->args[0]);
    json_decref(r);
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
     CLI_OP, 0},
    {"owner list", NULL, 0, "list the owners with their device counts", scope_opts, run_owner_list,
     1, CLI_OP, 0},
    {"owner token", "NAME", 1,
     "make an API token of owner NAME, or - for the vendor (printed once, stored hashed)",
     token_opts, run_owner_token, 1, CLI_OP, 0},
    {"owner tokens", "NAME", 1, "list the tokens of owner NAME (never the tokens themselves)",
     scope_opts, run_owner_tokens, 1, CLI_OP, 0},
    {"owner token-revoke", "NAME ID", 2, "revoke token ID of owner NAME", scope_opts,
     run_owner_token_revoke, 1, CLI_OP, 0},
    {NULL, NULL, 0, NULL, NULL, NULL, 0, 0, 0},
};
