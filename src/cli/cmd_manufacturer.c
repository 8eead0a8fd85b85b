/* cmd_manufacturer.c - manufacturer add, list, show, remove. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/fs.h"

#define CERT_FILE_MAX (1024 * 1024)

/* Every file given as --name, as the operation's list: {name, pem} for PEM text, else
 * {name, der_base64}. NULL after printing why. */
static json_t *cert_files(cli *c, const char *name, int max)
{
    json_t *list = json_array();
    for (int i = 0; i < c->nopts; i++) {
        char *data = NULL;
        size_t len = 0;
        if (strcmp(c->opts[i].name, name) != 0)
            continue;
        if ((int)json_array_size(list) == max) {
            cli_usage(c, "at most %d --%s files", max, name);
            json_decref(list);
            return NULL;
        }
        if (cf_fs_read_file(c->opts[i].value, CERT_FILE_MAX, &data, &len, &c->err) != CF_OK) {
            cli_fail(c);
            json_decref(list);
            return NULL;
        }
        json_t *text = memmem(data, len, "-----BEGIN", 10) ? json_stringn(data, len) : NULL;
        if (text) {
            json_array_append_new(list,
                                  json_pack("{s:s, s:o}", "name", c->opts[i].value, "pem", text));
        } else {
            char *b64 = malloc(4 * ((len + 2) / 3) + 1);
            if (b64)
                EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)data, (int)len);
            json_array_append_new(list, json_pack("{s:s, s:s}", "name", c->opts[i].value,
                                                  "der_base64", b64 ? b64 : ""));
            free(b64);
        }
        free(data);
    }
    return list;
}

static int run_manufacturer_add(cli *c)
{
    enum { MAX_FILES = 8 };
    json_t *details = NULL, *roots = NULL, *signers = NULL;
    const char *name = cli_opt(c, "name");
    if (!name)
        return cli_usage(c, "--name NAME is required");
    if (!(roots = cert_files(c, "root", MAX_FILES)))
        return c->err.msg[0] ? 1 : 2;
    if (!(signers = cert_files(c, "signer", MAX_FILES))) {
        json_decref(roots);
        return c->err.msg[0] ? 1 : 2;
    }
    if (json_array_size(roots) + json_array_size(signers) == 0) {
        json_decref(roots);
        json_decref(signers);
        return cli_usage(c, "give at least one --root PEM or --signer PEM");
    }
    int rc = cli_call(
        c, "manufacturer add",
        json_pack("{s:s, s:o, s:o}", "name", name, "roots", roots, "signers", signers), &details);
    if (rc != 0)
        return rc;
    if (c->json) {
        cli_print_json(details);
        return 0;
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
    json_decref(details);
    return 0;
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
    int rc = cli_call(c, "manufacturer list", json_object(), &all);
    if (rc != 0)
        return rc;
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
    int rc = cli_call(c, "manufacturer show", json_pack("{s:s}", "name", c->args[0]), &m);
    if (rc != 0)
        return rc;
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
    json_t *r;
    int rc = cli_call(c, "manufacturer remove", json_pack("{s:s}", "name", c->args[0]), &r);
    if (rc != 0)
        return rc;
    if (c->json) {
        cli_print_json(r);
        return 0;
    }
    printf("manufacturer %s removed\n", c->args[0]);
    json_decref(r);
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
     run_manufacturer_add, 1, CLI_OP, 0},
    {"manufacturer list", NULL, 0, "list the manufacturers", NULL, run_manufacturer_list, 1, CLI_OP,
     0},
    {"manufacturer show", "NAME", 1, "a manufacturer's certificates and imports", NULL,
     run_manufacturer_show, 1, CLI_OP, 0},
    {"manufacturer remove", "NAME", 1, "remove a manufacturer (refused while devices reference it)",
     NULL, run_manufacturer_remove, 1, CLI_OP, 0},
    {NULL, NULL, 0, NULL, NULL, NULL, 0, 0, 0},
};
