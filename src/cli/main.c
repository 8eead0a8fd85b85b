/* main.c - certfleet's command line: finds the command, parses its options, opens the
 * fleet, runs it. Every command shares the same conventions (DESIGN.md): --help, --json,
 * --data/--store, "certfleet: WHAT: WHY" on stderr, exit 1 on errors and 2 on usage. */
#include <errno.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/fs.h"
#include "core/util.h"

static const cli_cmd *const tables[] = {
    cli_cmds_core,    cli_cmds_ca,     cli_cmds_manufacturer, cli_cmds_manifest,
    cli_cmds_onboard, cli_cmds_owner,  cli_cmds_device,       cli_cmds_audit,
    cli_cmds_serve,   cli_cmds_enroll, cli_cmds_revoke,
};

static const cli_opt_spec common_opts[] = {
    {"data", "DIR",
     "data directory (default $CERTFLEET_DATA, else the --store sqlite: file's directory, else"
     " ./certfleet-data)"},
    {"store", "URL", "store: sqlite:PATH or postgresql://... (default sqlite:DATA/certfleet.db)"},
    {"server", "URL",
     "run on a certfleet server (https://HOST:PORT; default $CERTFLEET_SERVER) instead of the"
     " store"},
    {"token", "TOKEN", "with --server: the API token (default $CERTFLEET_TOKEN)"},
    {"cacert", "FILE",
     "with --server: the CA chain to trust (default $CERTFLEET_CACERT, else the local store's"
     " chain)"},
    {"help", NULL, "show this help"},
    {NULL, NULL, NULL},
};

/* A list like the others (print_opts walks to the terminator). */
static const cli_opt_spec json_opts[] = {
    {"json", NULL, "print JSON for machines"},
    {NULL, NULL, NULL},
};

const char *cli_opt(const cli *c, const char *name)
{
    for (int i = c->nopts - 1; i >= 0; i--)
        if (strcmp(c->opts[i].name, name) == 0)
            return c->opts[i].value;
    return NULL;
}

int cli_flag(const cli *c, const char *name)
{
    return cli_opt(c, name) != NULL;
}

int cli_usage(cli *c, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "certfleet: %s: ", c->cmd ? c->cmd->name : "usage");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see certfleet %s --help)\n", c->cmd ? c->cmd->name : "");
    return 2;
}

int cli_int(cli *c, const char *name, long long min, long long max, long long def, long long *out)
{
    const char *v = cli_opt(c, name);
    if (!v) {
        *out = def;
        return 0;
    }
    char *end;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || x < min || x > max) {
        cli_usage(c, "--%s %s: expected a number from %lld to %lld", name, v, min, max);
        return -1;
    }
    *out = x;
    return 0;
}

int cli_fail(cli *c)
{
    fprintf(stderr, "certfleet: %s: %s\n", c->cmd->name, c->err.msg);
    return 1;
}

int cli_write_out(cli *c, const char *path, const void *data, size_t len)
{
    if (!path) {
        if (fwrite(data, 1, len, stdout) != len || fflush(stdout) != 0) {
            cf_error_set(&c->err, CF_ERR_IO, "cannot write to standard output");
            return cli_fail(c);
        }
        return 0;
    }
    if (cf_fs_write_file(path, data, len, 0644, 1, &c->err) != CF_OK)
        return cli_fail(c);
    return 0;
}

void cli_print_json(json_t *json)
{
    char *s = json_dumps(json, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (s) {
        puts(s);
        free(s);
    }
    json_decref(json);
}

/* ---- help ---- */

static void print_opts(const cli_opt_spec *opts)
{
    for (const cli_opt_spec *o = opts; o && o->name; o++) {
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        printf("  %-24s %s\n", left, o->help);
    }
}

static void print_cmd_help(const cli_cmd *cmd)
{
    printf("usage: certfleet %s%s%s [options]\n\n%s\n\noptions:\n", cmd->name, cmd->args ? " " : "",
           cmd->args ? cmd->args : "", cmd->summary);
    print_opts(cmd->opts);
    if (cmd->prints_data)
        print_opts(json_opts);
    print_opts(common_opts);
}

/* The command list: on stdout when asked for (--help), on stderr as a usage error. */
static void print_main_help(FILE *out)
{
    fprintf(out, "usage: certfleet COMMAND [options]\n\n"
                 "certfleet manages the identity of every device in an IoT fleet:\n"
                 "onboard, revoke, rotate, audit.\n\ncommands:\n");
    for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++)
        for (const cli_cmd *cmd = tables[t]; cmd->name; cmd++)
            fprintf(out, "  %-22s %s\n", cmd->name, cmd->summary);
    fprintf(out, "\nRun certfleet COMMAND --help for a command's options.\n");
}

/* ---- parsing ---- */

static const cli_cmd *find_cmd(int argc, char **argv, int *used)
{
    for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++) {
        for (const cli_cmd *cmd = tables[t]; cmd->name; cmd++) {
            const char *space = strchr(cmd->name, ' ');
            if (!space) {
                if (strcmp(cmd->name, argv[1]) == 0) {
                    *used = 2;
                    return cmd;
                }
            } else if (argc > 2 && strncmp(cmd->name, argv[1], (size_t)(space - cmd->name)) == 0 &&
                       argv[1][space - cmd->name] == '\0' && strcmp(space + 1, argv[2]) == 0) {
                *used = 3;
                return cmd;
            }
        }
    }
    return NULL;
}

static const cli_opt_spec *find_spec(const cli_cmd *cmd, const char *name)
{
    for (const cli_opt_spec *o = cmd->opts; o && o->name; o++)
        if (strcmp(o->name, name) == 0)
            return o;
    for (const cli_opt_spec *o = common_opts; o->name; o++)
        if (strcmp(o->name, name) == 0)
            return o;
    if (cmd->prints_data && strcmp(name, "json") == 0)
        return &json_opts[0];
    return NULL;
}

static int parse(cli *c, int argc, char **argv, int start)
{
    for (int i = start; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            if (c->nargs >= CLI_MAX_ARGS)
                return cli_usage(c, "too many arguments");
            c->args[c->nargs++] = a;
            continue;
        }
        char name[64];
        const char *eq = strchr(a + 2, '=');
        size_t n = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (n >= sizeof name)
            return cli_usage(c, "unknown option %.40s", a);
        memcpy(name, a + 2, n);
        name[n] = '\0';
        const cli_opt_spec *spec = find_spec(c->cmd, name);
        if (!spec)
            return cli_usage(c, "unknown option --%s", name);
        const char *value = "";
        if (spec->arg) {
            if (eq)
                value = eq + 1;
            else if (i + 1 < argc)
                value = argv[++i];
            else
                return cli_usage(c, "--%s needs a value (%s)", name, spec->arg);
        } else if (eq) {
            return cli_usage(c, "--%s takes no value", name);
        }
        if (c->nopts >= CLI_MAX_OPTS)
            return cli_usage(c, "too many options");
        c->opts[c->nopts].name = spec->name;
        c->opts[c->nopts].value = value;
        c->nopts++;
    }
    return 0;
}

static void set_actor(cli *c)
{
    struct passwd *pw = getpwuid(geteuid());
    snprintf(c->actor, sizeof c->actor, "cli:%s", pw ? pw->pw_name : "unknown");
}

/* DATA when neither --data nor $CERTFLEET_DATA says: for --store sqlite:PATH the directory
 * of PATH, so the CA keys live beside their database and a store used from another working
 * directory still finds them; else ./certfleet-data. */
static const char *default_data_dir(const char *store_url, char *buf, size_t len)
{
    if (!store_url || strncmp(store_url, "sqlite:", 7) != 0)
        return "./certfleet-data";
    const char *path = store_url + 7, *slash = strrchr(path, '/');
    if (!slash)
        return ".";
    snprintf(buf, len, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    return buf;
}

/* Only init creates a store. Any other command on a SQLite store that does not exist would
 * leave an empty database (and for --data, a directory) behind, after a typo in a path for
 * instance; it fails instead, changing nothing. */
static int check_store_exists(cli *c)
{
    char path[4200];
    if (strcmp(c->cmd->name, "init") == 0 || !c->cmd->needs_store)
        return 0;
    if (c->store_url && strncmp(c->store_url, "sqlite:", 7) != 0)
        return 0; /* a database server: it answers for itself */
    if (c->store_url)
        snprintf(path, sizeof path, "%s", c->store_url + 7);
    else
        snprintf(path, sizeof path, "%s/certfleet.db", c->data_dir);
    /* Only a store that is surely not there; opening names any other problem (EACCES). */
    struct stat st;
    if (stat(path, &st) == 0 || (errno != ENOENT && errno != ENOTDIR))
        return 0;
    cf_error_set(&c->err, CF_ERR_STATE, "%s: not initialised (no store there): run certfleet init",
                 path);
    return cli_fail(c);
}

/* Common options may also come before the command ("certfleet --data D init"): returns how
 * many leading arguments are such options. */
static int leading_common_opts(int argc, char **argv)
{
    int i = 1;
    while (i < argc) {
        if ((strcmp(argv[i], "--data") == 0 || strcmp(argv[i], "--store") == 0 ||
             strcmp(argv[i], "--server") == 0 || strcmp(argv[i], "--token") == 0 ||
             strcmp(argv[i], "--cacert") == 0) &&
            i + 1 < argc)
            i += 2;
        else if (strncmp(argv[i], "--data=", 7) == 0 || strncmp(argv[i], "--store=", 8) == 0 ||
                 strncmp(argv[i], "--server=", 9) == 0 || strncmp(argv[i], "--token=", 8) == 0 ||
                 strncmp(argv[i], "--cacert=", 9) == 0 || strcmp(argv[i], "--json") == 0)
            i += 1;
        else
            break;
    }
    return i - 1;
}

static const char *opt_or_env(const cli *c, const char *opt, const char *env)
{
    const char *v = cli_opt(c, opt);
    if (!v) {
        v = getenv(env);
        if (v && !*v)
            v = NULL;
    }
    return v;
}

/* The certificates a server's must chain to: --cacert, else the chain of the local store
 * (what certfleet ca export writes), when there is one. */
static int load_trust(cli *c)
{
    const char *file = opt_or_env(c, "cacert", "CERTFLEET_CACERT");
    char path[4200];
    if (file) {
        if (cf_fs_read_file(file, 1024 * 1024, &c->trust, &c->trust_len, &c->err) != CF_OK)
            return cli_fail(c);
        return 0;
    }
    snprintf(path, sizeof path, "%s/certfleet.db", c->data_dir);
    if (!c->store_url && !cf_fs_exists(path))
        return cli_usage(c, "--server needs --cacert FILE (the chain from certfleet ca export)"
                            " when there is no local store");
    cf_fleet *f = NULL;
    cf_err rc = cf_fleet_open(c->data_dir, c->store_url, &f, &c->err);
    if (rc == CF_OK)
        rc = cf_fleet_chain_pem(f, &c->trust, &c->trust_len, &c->err);
    cf_fleet_close(f);
    if (rc != CF_OK) {
        cf_error_prefix(&c->err, "--server without --cacert: the local store's chain");
        return cli_fail(c);
    }
    return 0;
}

/* --server (or $CERTFLEET_SERVER for a command that can use it): checks what goes with it. */
static int setup_remote(cli *c)
{
    int explicit = cli_opt(c, "server") != NULL;
    c->server = opt_or_env(c, "server", "CERTFLEET_SERVER");
    if (c->server && c->cmd->needs_store != CLI_OP) {
        if (explicit)
            return cli_usage(c, "is not an operation on a store: it runs here, without --server");
        c->server = NULL; /* the environment's server is for the commands that take one */
    }
    if (!c->server) {
        if (cli_opt(c, "token") || cli_opt(c, "cacert"))
            return cli_usage(c, "--token and --cacert go with --server URL");
        return 0;
    }
    if (cli_opt(c, "as-owner") || cli_opt(c, "as-role"))
        return cli_usage(c, "--as-owner and --as-role: with --server, the token says who you are");
    if (cli_opt(c, "store"))
        return cli_usage(c, "--store and --server: give one");
    if (!(c->token = opt_or_env(c, "token", "CERTFLEET_TOKEN")))
        return cli_usage(c, "--server needs --token TOKEN or $CERTFLEET_TOKEN");
    for (const char *t = c->token; *t; t++)
        if (*t <= ' ' || *t > '~')
            return cli_usage(c, "--token: expected a token (printable characters, no spaces)");
    return load_trust(c);
}

static int run(int argc, char **argv);

int main(int argc, char **argv)
{
    cf_keep_large_blocks();
    int lead = leading_common_opts(argc, argv);
    if (lead == 0)
        return run(argc, argv);
    /* Reorder to: program, command and its options, then the leading options. */
    char *args[argc + 1];
    int n = 0;
    args[n++] = argv[0];
    for (int i = lead + 1; i < argc; i++)
        args[n++] = argv[i];
    for (int i = 1; i <= lead; i++)
        args[n++] = argv[i];
    args[n] = NULL;
    if (lead + 1 >= argc) {
        print_main_help(stderr);
        return 2;
    }
    return run(argc, args);
}

static int run(int argc, char **argv)
{
    cli c = {0};
    int used = 0, rc;
    char store_dir[4096];
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        print_main_help(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("certfleet 0.1.0\n");
        return 0;
    }
    c.cmd = find_cmd(argc, argv, &used);
    if (!c.cmd) {
        fprintf(stderr, "certfleet: %s%s%s: unknown command (see certfleet --help)\n", argv[1],
                argc > 2 && argv[2][0] != '-' ? " " : "",
                argc > 2 && argv[2][0] != '-' ? argv[2] : "");
        return 2;
    }
    if ((rc = parse(&c, argc, argv, used)) != 0)
        return rc;
    if (cli_flag(&c, "help")) {
        print_cmd_help(c.cmd);
        return 0;
    }
    int max_args = c.cmd->max_args > c.cmd->nargs ? c.cmd->max_args : c.cmd->nargs;
    if (c.nargs < c.cmd->nargs)
        return cli_usage(&c, "expected %s", c.cmd->args);
    if (c.nargs > max_args)
        return cli_usage(&c, "unexpected argument %s", c.args[max_args]);
    c.json = cli_flag(&c, "json");
    c.store_url = cli_opt(&c, "store");
    c.data_dir = cli_opt(&c, "data");
    if (!c.data_dir)
        c.data_dir = getenv("CERTFLEET_DATA");
    if (!c.data_dir || !*c.data_dir)
        c.data_dir = default_data_dir(c.store_url, store_dir, sizeof store_dir);
    set_actor(&c);
    umask(077); /* whatever certfleet creates in DATA is its own */

    if ((rc = setup_remote(&c)) != 0) {
        free(c.trust);
        return rc;
    }
    if (!c.server && (rc = check_store_exists(&c)) != 0)
        return rc;
    if (!c.server && c.cmd->needs_store &&
        cf_fleet_open(c.data_dir, c.store_url, &c.fleet, &c.err) != CF_OK)
        return cli_fail(&c);
    rc = c.cmd->run(&c);
    cf_fleet_close(c.fleet);
    free(c.trust);
    return rc;
}
