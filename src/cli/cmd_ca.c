/* cmd_ca.c - ca list, ca export. */
#include <stdlib.h>

#include "cli/cli.h"
#include "core/util.h"

static void time_s(int64_t s, char *buf)
{
    cf_time_format(s * 1000000, buf);
    buf[19] = 'Z'; /* whole seconds are enough here */
    buf[20] = '\0';
}

static int run_ca_list(cli *c)
{
    cf_ca_rec *cas = NULL;
    size_t n = 0;
    if (cf_store_ca_list(cf_fleet_store(c->fleet), &cas, &n, &c->err) != CF_OK)
        return cli_fail(c);
    json_t *arr = c->json ? json_array() : NULL;
    if (!c->json)
        printf("%-4s %-12s %-8s %-8s %-21s %s\n", "ID", "NAME", "ROLE", "STATUS", "NOT AFTER",
               "SUBJECT");
    for (size_t i = 0; i < n; i++) {
        char na[CF_TIME_STR_MAX], nb[CF_TIME_STR_MAX];
        time_s(cas[i].not_after, na);
        time_s(cas[i].not_before, nb);
        int hsm = cf_key_ref_is_pkcs11(cas[i].key_ref);
        if (c->json)
            json_array_append_new(arr, json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "id",
                                                 (json_int_t)cas[i].id, "name", cas[i].name, "role",
                                                 cf_ca_role_name(cas[i].role), "status",
                                                 cf_ca_status_name(cas[i].status), "subject",
                                                 cas[i].subject, "not_before", nb, "not_after", na,
                                                 "key", hsm ? "pkcs11" : "file"));
        else
            printf("%-4lld %-12s %-8s %-8s %-21s %s\n", (long long)cas[i].id, cas[i].name,
                   cf_ca_role_name(cas[i].role), cf_ca_status_name(cas[i].status), na,
                   cas[i].subject);
        cf_ca_rec_clear(&cas[i]);
    }
    free(cas);
    if (c->json)
        cli_print_json(arr);
    return 0;
}

static int run_ca_export(cli *c)
{
    char *pem = NULL;
    size_t len = 0;
    if (cf_fleet_chain_pem(c->fleet, &pem, &len, &c->err) != CF_OK)
        return cli_fail(c);
    int rc;
    if (c->json) {
        cli_print_json(json_pack("{s:s}", "pem", pem));
        rc = 0;
    } else {
        rc = cli_write_out(c, cli_opt(c, "out"), pem, len);
    }
    free(pem);
    return rc;
}

static const cli_opt_spec export_opts[] = {
    {"out", "FILE", "write the chain (issuing CA, then root) to FILE"},
    {NULL, NULL, NULL},
};

const cli_cmd cli_cmds_ca[] = {
    {"ca list", NULL, 0, "list the certificate authorities", NULL, run_ca_list, 1, 1, 0},
    {"ca export", NULL, 0, "write the CA chain as PEM, for anyone who must trust it", export_opts,
     run_ca_export, 1, 1, 0},
    {NULL, NULL, 0, NULL, NULL, NULL, 0, 0, 0},
};
