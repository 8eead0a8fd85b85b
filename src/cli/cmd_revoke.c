/* cmd_revoke.c - revoke, release, device readmit, crl, changes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/principal.h"
#include "pki/jose.h"

static const char *const scopes[] = {"serial", "device", "batch", "group", "owner", "ca", "birth"};
#define NSCOPES (sizeof scopes / sizeof scopes[0])

/* On a terminal: "revoking: 412000/1000000 (41%)", rewritten in place. */
static void progress(void *arg, int64_t done, int64_t total)
{
    (void)arg;
    fprintf(stderr, "\rrevoking: %lld/%lld (%lld%%)%s", (long long)done, (long long)total,
            total ? (long long)(100 * done / total) : 100LL, done == total ? "\n" : "");
}

static int run_revoke(cli *c)
{
    const char *scope = NULL, *target = NULL;
    int given = 0;
    for (size_t i = 0; i < NSCOPES; i++)
        if (cli_opt(c, scopes[i])) {
            scope = scopes[i];
            target = cli_opt(c, scopes[i]);
            given++;
        }
    if (given != 1)
        return cli_usage(c, "name what to revoke: exactly one of --serial, --device, --batch,"
                            " --group, --owner, --ca or --birth");
    int birth = strcmp(scope, "birth") == 0;
    if (birth && cli_opt(c, "invalidity"))
        return cli_usage(c, "--invalidity goes with a revocation, not with --birth");
    json_t *params = json_object(), *r;
    json_object_set_new(params, birth ? "id" : scope, json_string(target));
    if (cli_opt(c, "reason"))
        json_object_set_new(params, "reason", json_string(cli_opt(c, "reason")));
    if (cli_opt(c, "invalidity"))
        json_object_set_new(params, "invalidity", json_string(cli_opt(c, "invalidity")));
    int rc = cli_call_progress(c, birth ? "device block" : "revoke", params,
                               isatty(2) && !c->json ? progress : NULL, NULL, &r);
    if (rc != 0)
        return rc;
    if (c->json) {
        cli_print_json(r);
        return 0;
    }
    long long n = cli_jint(r, "revoked"), already = cli_jint(r, "already");
    if (birth)
        printf("device %s: birth certificate blocked for good; %lld certificate%s revoked"
               " (%s)\n",
               target, n, n == 1 ? "" : "s", cli_jstr(r, "reason", "?"));
    else if (n == 0)
        printf("nothing to revoke for %s %s: %lld certificate%s already revoked\n", scope, target,
               already, already == 1 ? "" : "s");
    else
        printf("revoked %lld certificate%s of %s %s (%s)%s\n", n, n == 1 ? "" : "s", scope, target,
               cli_jstr(r, "reason", "?"), already ? "; others were revoked before" : "");
    json_decref(r);
    return 0;
}

static const cli_opt_spec revoke_opts[] = {
    {"serial", "HEX", "one certificate (colons allowed)"},
    {"device", "ID", "every good certificate of a device"},
    {"batch", "NAME", "every good certificate of the devices of a batch"},
    {"group", "NAME", "every good certificate of the devices of a group"},
    {"owner", "NAME", "every good certificate of an owner's devices"},
    {"ca", "NAME",
     "an issuing CA (or a root and its issuing CAs): it stops issuing, and"
     " everything it issued is revoked"},
    {"birth", "ID", "block a device's birth certificate for good (its certificates too)"},
    {"reason", "NAME",
     "RFC 5280 reason: unspecified (default), keyCompromise, cACompromise (default for"
     " --ca), affiliationChanged, superseded, cessationOfOperation, certificateHold,"
     " privilegeWithdrawn, aACompromise"},
    {"invalidity", "TIME", "when the key was or may have been compromised (2026-11-20T08:00:00Z)"},
    CLI_PRINCIPAL_OPTS,
    {NULL, NULL, NULL},
};

static int run_release(cli *c)
{
    json_t *r;
    int rc = cli_call(c, "release", json_pack("{s:s}", "serial", c->args[0]), &r);
    if (rc != 0)
        return rc;
    if (c->json)
        cli_print_json(r);
    else
        printf("certificate %s released from hold: good again\n", cli_jstr(r, "serial", "?"));
    if (!c->json)
        json_decref(r);
    return 0;
}

static int run_readmit(cli *c)
{
    json_t *r;
    int rc = cli_call(c, "device readmit", json_pack("{s:s}", "id", c->args[0]), &r);
    if (rc != 0)
        return rc;
    if (c->json) {
        cli_print_json(r);
        return 0;
    }
    printf("device %s readmitted: it may enroll again with its birth certificate\n", c->args[0]);
    json_decref(r);
    return 0;
}

static const cli_opt_spec scope_opts[] = {
    CLI_PRINCIPAL_OPTS,
    {NULL, NULL, NULL},
};

static int run_crl(cli *c)
{
    json_t *params = json_object(), *r;
    if (cli_opt(c, "ca"))
        json_object_set_new(params, "ca", json_string(cli_opt(c, "ca")));
    if (cli_flag(c, "delta"))
        json_object_set_new(params, "delta", json_true());
    long long shard;
    if (cli_int(c, "shard", 1, INT64_MAX, 0, &shard) < 0) {
        json_decref(params);
        return 2;
    }
    if (shard)
        json_object_set_new(params, "shard", json_integer(shard));
    int rc = cli_call(c, "crl", params, &r);
    if (rc != 0)
        return rc;
    const char *b64 = cli_jstr(r, "der", "");
    unsigned char *der = NULL;
    size_t len = 0;
    if (cf_b64_decode(b64, strlen(b64), &der, &len, &c->err) != CF_OK) {
        json_decref(r);
        return cli_fail(c);
    }
    if (cli_opt(c, "out") || !c->json)
        rc = cli_write_out(c, cli_opt(c, "out"), der, len);
    free(der);
    if (rc == 0 && cli_opt(c, "out")) {
        if (c->json) {
            json_object_del(r, "der");
            cli_print_json(r);
            r = NULL;
        } else {
            fprintf(stderr, "%s CRL %lld of %s: %lld entries, next update %s\n",
                    cli_jstr(r, "kind", "?"), cli_jint(r, "number"), cli_jstr(r, "ca", "?"),
                    cli_jint(r, "entries"), cli_jstr(r, "next_update", "?"));
        }
    } else if (rc == 0 && c->json) {
        cli_print_json(r);
        r = NULL;
    }
    json_decref(r);
    return rc;
}

static const cli_opt_spec crl_opts[] = {
    {"ca", "NAME", "the issuing CA (default: the active one)"},
    {"delta", NULL, "a delta CRL on the last full one"},
    {"shard", "N", "CRL shard N (see certfleet crl-shards)"},
    {"out", "FILE", "write the DER CRL here (default: standard output)"},
    {NULL, NULL, NULL},
};

static int run_changes(cli *c)
{
    long long since, limit;
    json_t *r, *ch;
    size_t i;
    if (cli_int(c, "since", 0, INT64_MAX, 0, &since) < 0 ||
        cli_int(c, "limit", 1, 10000, 1000, &limit) < 0)
        return 2;
    int rc = cli_call(
        c, "changes",
        json_pack("{s:I, s:I}", "since", (json_int_t)since, "limit", (json_int_t)limit), &r);
    if (rc != 0)
        return rc;
    if (c->json) {
        cli_print_json(r);
        return 0;
    }
    json_array_foreach(json_object_get(r, "changes"), i, ch)
    {
        const char *what = cli_jstr(ch, "serial", NULL);
        printf("%-8lld %s %-14s %-34s %lld\n", cli_jint(ch, "seq"), cli_jstr(ch, "time", ""),
               cli_jstr(ch, "kind", ""), what ? what : cli_jstr(ch, "device", "-"),
               cli_jint(ch, "count"));
    }
    json_decref(r);
    return 0;
}

static const cli_opt_spec changes_opts[] = {
    {"since", "SEQ", "only changes after this sequence number"},
    {"limit", "N", "at most N changes (1000)"},
    {NULL, NULL, NULL},
};

static int run_shards(cli *c)
{
    long long size;
    json_t *r;
    if (cli_int(c, "size", 0, 100000000, -1, &size) < 0)
        return 2;
    int rc = size >= 0
                 ? cli_call(c, "crl-shards set", json_pack("{s:I}", "size", (json_int_t)size), &r)
                 : cli_call(c, "crl-shards get", json_object(), &r);
    if (rc != 0)
        return rc;
    if (c->json) {
        cli_print_json(r);
        return 0;
    }
    long long n = cli_jint(r, "size");
    if (n)
        printf("CRL shards of at most %lld certificates (for certificates issued from now on)\n",
               n);
    else
        printf("no CRL shards: each certificate names its CA's whole CRL\n");
    json_decref(r);
    return 0;
}

static const cli_opt_spec shards_opts[] = {
    {"size", "N", "certificates per CRL shard for certificates issued from now on; 0: no shards"},
    {NULL, NULL, NULL},
};

const cli_cmd cli_cmds_revoke[] = {
    {"revoke", NULL, 0,
     "revoke certificates: one, a device's, a batch's, a group's, an owner's,"
     " a CA's; or block a birth certificate",
     revoke_opts, run_revoke, 1, CLI_OP, 0},
    {"release", "SERIAL", 1, "release a certificate from certificateHold", scope_opts, run_release,
     1, CLI_OP, 0},
    {"device readmit", "ID", 1,
     "let a revoked device enroll again with its birth certificate (a fresh identity)", scope_opts,
     run_readmit, 1, CLI_OP, 0},
    {"crl", NULL, 0, "write a CRL (DER) of an issuing CA: full, or --delta", crl_opts, run_crl, 1,
     CLI_OP, 0},
    {"changes", NULL, 0, "the change feed: revocations and blocks, in order", changes_opts,
     run_changes, 1, CLI_OP, 0},
    {"crl-shards", NULL, 0, "show or set the size of CRL shards (partitioned CRLs)", shards_opts,
     run_shards, 1, CLI_OP, 0},
    {NULL, NULL, 0, NULL, NULL, NULL, 0, 0, 0},
};
