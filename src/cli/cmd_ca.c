/* cmd_ca.c - ca list, ca export. */
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static int run_ca_list(cli *c)
{
    json_t *cas, *ca;
    size_t i;
    int rc = cli_call(c, "ca list", json_object(), &cas);
    if (rc != 0)
        return rc;
    if (c->json) {
        cli_print_json(cas);
        return 0;
    }
    printf("%-4s %-12s %-8s %-8s %-21s %s\n", "ID", "NAME", "ROLE", "STATUS", "NOT AFTER",
           "SUBJECT");
    json_array_foreach(cas, i, ca)
    {
        printf("%-4lld %-12s %-8s %-8s %-21s %s\n", cli_jint(ca, "id"), cli_jstr(ca, "name", ""),
               cli_jstr(ca, "role", ""), cli_jstr(ca, "status", ""), cli_jstr(ca, "not_after", ""),
               cli_jstr(ca, "subject", ""));
    }
    json_decref(cas);
    return 0;
}

static int run_ca_export(cli *c)
{
    json_t *r;
    int rc = cli_call(c, "ca export", json_object(), &r);
    if (rc != 0)
        return rc;
    if (c->json) {
        cli_print_json(r);
        return 0;
    }
    const char *pem = cli_jstr(r, "pem", "");
    rc = cli_write_out(c, cli_opt(c, "out"), pem, strlen(pem));
    json_decref(r);
    return rc;
}

static const cli_opt_spec export_opts[] = {
    {"out", "FILE", "write the chain (issuing CA, then root) to FILE"},
    {NULL, NULL, NULL},
};

const cli_cmd cli_cmds_ca[] = {
    {"ca list", NULL, 0, "list the certificate authorities", NULL, run_ca_list, 1, CLI_OP, 0},
    {"ca export", NULL, 0, "write the CA chain as PEM, for anyone who must trust it", export_opts,
     run_ca_export, 1, CLI_OP, 0},
    {NULL, NULL, 0, NULL, NULL, NULL, 0, 0, 0},
};
