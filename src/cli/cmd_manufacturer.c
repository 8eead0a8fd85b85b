/* cmd_manufacturer.c - manufacturer add, list, show, remove. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/fs.h"
#include "fleet/onboard.h"

#define CERT_FILE_MAX (1024 * 1024)

/* Reads every file given as --name into srcs (up to max). Returns the count, or -1. */
static int read_cert_files(cli *c, const char *name, cf_onboard_cert_src *srcs, char **bufs,
                           int max)
{
    int n = 0;
    for (int i = 0; i < c->nopts; i++) {
        if (strcmp(c->opts[i].name, name) != 0)
            continue;
        if (n == max) {
            cli_usage(c, "at most %d --%s files", max, name);
            return -1;
        }
        size_t len = 0;
        if (cf_fs_read_file(c->opts[i].value, CERT_FILE_MAX, &bufs[n], &len, &c->err) != CF_OK) {
            cli_fail(c);
            return -1;
        }
        srcs[n] = (cf_onboard_cert_src){bufs[n], len, c->opts[i].value};
        n++;
    }
    return n;
}

static int run_manufacturer_add(cli *c)
{
    enum { MAX_FILES = 8 };
    cf_onboard_cert_src roots[MAX_FILES], signers[MAX_FILES];
    char *rbufs[MAX_FILES] = {0}, *sbufs[MAX_FILES] = {0};
    json_t *details = NULL;
    int rc = 0;
    const char *name = cli_opt(c, "name");
    if (!name)
        return cli_usage(c, "--name NAME is required");
    int nr = read_cert_files(c, "root", roots, rbufs, MAX_FILES);
    int ns = nr < 0 ? -1 : read_cert_files(c, "signer", signers, sbufs, MAX_FILES);
    if (nr < 0 || ns < 0) {
        rc = 1;
        goto out;
    }
    if (nr + ns == 0) {
        rc = cli_usage(c, "give at least one --root PEM or --signer PEM");
        goto out;
    }
    cf_onboard_mfr_req req = {name, roots, (size_t)nr, signers, (size_t)ns, c->actor};
    if (cf_onboard_manufacturer_add(c->fleet, &req, &details, &c->err) != CF_OK) {
        rc = cli_fail(c);
        goto out;
    }
    if (c->json) {
        cli_print_json(details);
        details = NULL;
        goto out;
    }
    json_t *added = json_object_get(details, "added");
    printf("manufacturer %s %s:\n", name,
           json_is_true(json_object_get(details, "created")) ? "added" : "updated");
    for (size_t i = 0; i < json_array_size(added); i++) {
        json_t *a = json_array_get(added, i);
        printf("  %-6s %s\n         x5t#S256 %s\n", json_string_value(json_object_get(a, "kind")),
               json_string_value(json_object_get(a, "subject")),
               json_string_value(json_object_get(a, "x5t")));
    }
out:
    json_decref(details);
    for (int i = 0; i < MAX_FILES; i++) {
        free(rbufs[i]);
        free(sbufs[i]);
    }
    return rc;
}

/* Counts the certificates of one kind in a described manufacturer. */
static int count_kind(json_t *m, const char *kind)
{
    json_t *certs = json_object_get(m, "certificates");
    int n = 0;
    for (size_t i = 0; i < json_array_size(certs); i++)
        n +=
            strcmp(json_string_value(json_object_get(json_array_get(certs, i), "kind")), kind) == 0;
    return n;
}

static int run_manufacturer_list(cli *c)
{
    json_t *all = NULL;
    if (cf_onboard_manufacturer_describe(c->fleet, NULL, &all, &c->err) != CF_OK)
        return cli_fail(c);
    if (c->json) {
        cli_print_json(all);
        return 0;
    }
    printf("%-24s %10s %6s %8s %s\n", "NAME", "DEVICES", "ROOTS", "SIGNERS", "CREATED");
    for (size_t i = 0; i < json_array_size(all); i++) {
        json_t *m = json_array_get(all, i);
        printf("%-24s %10lld %6d %8d %s\n", json_string_value(json_object_get(m, "name")),
               (long long)json_integer_value(json_object_get(m, "devices")), count_kind(m, "root"),
               count_kind(m, "signer"), json_string_value(json_object_get(m, "created")));
    }
    json_decref(all);
    return 0;
}

static const char *str_or(json_t *o, const char *key, const char *def)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : def;
}

static int run_manufacturer_show(cli *c)
{
    json_t *m = NULL;
    if (cf_onboard_manufacturer_describe(c->fleet, c->args[0], &m, &c->err) != CF_OK)
        return cli_fail(c);
    if (c->json) {
        cli_print_json(m);
        return 0;
    }
    printf("manufacturer %s (id %lld), created %s, %lld devices\n", str_or(m, "name", ""),
           (long long)json_integer_value(json_object_get(m, "id")), str_or(m, "created", "?"),
           (long long)json_integer_value(json_object_get(m, "devices")));
    json_t *certs = json_object_get(m, "certificates");
    printf("certificates:\n");
    for (size_t i = 0; i < json_array_size(certs); i++) {
        json_t *x = json_array_get(certs, i);
        printf("  %-6s %s\n         x5t#S256 %s\n         valid %s .. %s\n", str_or(x, "kind", ""),
               str_or(x, "subject", ""), str_or(x, "x5t", ""), str_or(x, "not_before", "?"),
               str_or(x, "not_after", "?"));
    }
    json_t *imps = json_object_get(m, "imports");
    if (json_array_size(imps))
        printf("imports (newest first):\n");
    for (size_t i = 0; i < json_array_size(imps); i++) {
        json_t *x = json_array_get(imps, i);
        printf("  #%lld %s %s: %lld entries, %lld added, %lld present, %lld rejected,"
               " %lld conflicts%s\n",
               (long long)json_integer_value(json_object_get(x, "id")), str_or(x, "started", "?"),
               str_or(x, "source", ""),
               (long long)json_integer_value(json_object_get(x, "entries")),
               (long long)json_integer_value(json_object_get(x, "added")),
               (long long)json_integer_value(json_object_get(x, "present")),
               (long long)json_integer_value(json_object_get(x, "rejected")),
               (long long)json_integer_value(json_object_get(x, "conflicts")),
               json_is_null(json_object_get(x, "finished")) ? " (unfinished)" : "");
    }
    json_decref(m);
    return 0;
}

static int run_manufacturer_remove(cli *c)
{
    if (cf_onboard_manufacturer_remove(c->fleet, c->args[0], c->actor, &c->err) != CF_OK)
        return cli_fail(c);
    if (c->json)
        cli_print_json(json_pack("{s:s, s:b}", "name", c->args[0], "removed", 1));
    else
        printf("manufacturer %s removed\n", c->args[0]);
    return 0;
}

static const cli_opt_spec add_opts[] = {
    {"name", "NAME", "the manufacturer's name (1..128 of A-Z a-z 0-9 . _ : -)"},
    {"root", "PEM", "a root of its birth-certificate chains (repeatable; needed for a new one)"},
    {"signer", "PEM",
     "a certificate that signs its manifests: issued by one of its roots, or trusted because"
     " registered here (repeatable)"},
    {NULL, NULL, NULL},
};

const cli_cmd cli_cmds_manufacturer[] = {
    {"manufacturer add", NULL, 0,
     "register a chip maker's roots and manifest signers (or add certificates to one)", add_opts,
     run_manufacturer_add, 1, 1, 0},
    {"manufacturer list", NULL, 0, "list the manufacturers", NULL, run_manufacturer_list, 1, 1, 0},
    {"manufacturer show", "NAME", 1, "a manufacturer's certificates and imports", NULL,
     run_manufacturer_show, 1, 1, 0},
    {"manufacturer remove", "NAME", 1, "remove a manufacturer (refused while devices reference it)",
     NULL, run_manufacturer_remove, 1, 1, 0},
    {NULL, NULL, 0, NULL, NULL, NULL, 0, 0, 0},
};
