/* cli.h - the command table and what each command gets from the parser. */
#ifndef CF_CLI_CLI_H
#define CF_CLI_CLI_H

#include <jansson.h>
#include <stdio.h>

#include "api/api.h"
#include "fleet/fleet.h"

#define CLI_MAX_OPTS 32
#define CLI_MAX_ARGS 8

typedef struct {
    const char *name; /* long option without the dashes */
    const char *arg;  /* NULL for a flag, else the value's name in help ("FILE") */
    const char *help;
} cli_opt_spec;

typedef struct cli cli;

#define CLI_OP 2 /* needs_store of a command that runs one or more operations (cli_call) */

typedef struct {
    const char *name; /* "ca list" */
    const char *args; /* positional arguments for help ("ID"), or NULL */
    int nargs;        /* how many positional arguments it requires */
    const char *summary;
    const cli_opt_spec *opts; /* terminated by {NULL} */
    int (*run)(cli *c);
    int prints_data; /* takes --json */
    int needs_store; /* open the fleet before run; CLI_OP: and an operation on the store,
                        which runs against --server instead when given (cli_call) */
    int max_args;    /* when above nargs: optional positional arguments, up to this many */
} cli_cmd;

struct cli {
    const cli_cmd *cmd;
    struct {
        const char *name, *value;
    } opts[CLI_MAX_OPTS];
    int nopts;
    const char *args[CLI_MAX_ARGS];
    int nargs;
    int json;
    const char *data_dir;
    const char *store_url;
    cf_fleet *fleet;    /* open when cmd->needs_store, and not with --server */
    const char *server; /* --server URL or $CERTFLEET_SERVER: run on that server */
    const char *token;  /* with server: --token or $CERTFLEET_TOKEN */
    char *trust;        /* with server: the PEM certificates its certificate must chain to */
    size_t trust_len;
    char actor[128];
    cf_error err;
};

/* The value of option name, or NULL. */
const char *cli_opt(const cli *c, const char *name);
/* 1 if flag name was given. */
int cli_flag(const cli *c, const char *name);
/* Parses option name as an integer in [min, max]; def when absent. -1 and a usage message
 * when it is not. */
int cli_int(cli *c, const char *name, long long min, long long max, long long def, long long *out);

/* Prints "certfleet: WHAT: WHY" for c->err and returns 1. */
int cli_fail(cli *c);
/* Prints a usage error and returns 2. */
int cli_usage(cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes data to path (0644, replacing it), or to stdout when path is NULL. */
int cli_write_out(cli *c, const char *path, const void *data, size_t len);

/* Prints json (and a newline) to stdout and frees it. */
void cli_print_json(json_t *json);

/* ---- operations (call.c, remote.c) ---- */

/* Runs the operation called name (src/api/api.h) with params (taken over): on the local
 * store as the principal of --as-owner/--as-role, or on c->server with c->token. 0 and
 * *result (new JSON) on success; else prints "certfleet: CMD: WHY" and returns the exit
 * code. The one path of every store command, so the local and the remote run cannot
 * drift. */
int cli_call(cli *c, const char *name, json_t *params, json_t **result);
/* The same, with a progress line for a long operation run on the local store. */
int cli_call_progress(cli *c, const char *name, json_t *params, cf_api_progress_fn progress,
                      void *arg, json_t **result);

/* Sends op with params (path parameters are consumed) to c->server; upload: a file to send
 * as the body, or NULL. On error c->err says why. */
cf_err cli_remote_call(cli *c, const cf_api_op *op, json_t *params, const char *upload,
                       json_t **result);

/* A member of a JSON object: the string (dflt when absent or not a string), the integer. */
const char *cli_jstr(json_t *o, const char *key, const char *dflt);
long long cli_jint(json_t *o, const char *key);

/* The command tables of each area. */
extern const cli_cmd cli_cmds_core[];         /* init, status, issue */
extern const cli_cmd cli_cmds_ca[];           /* ca ... */
extern const cli_cmd cli_cmds_audit[];        /* audit ... */
extern const cli_cmd cli_cmds_manifest[];     /* manifest make */
extern const cli_cmd cli_cmds_manufacturer[]; /* manufacturer ... */
extern const cli_cmd cli_cmds_onboard[];      /* onboard */
extern const cli_cmd cli_cmds_owner[];        /* owner ... */
extern const cli_cmd cli_cmds_device[];       /* device ... */
extern const cli_cmd cli_cmds_serve[];        /* serve */
extern const cli_cmd cli_cmds_enroll[];       /* device approve, owner policy */
extern const cli_cmd cli_cmds_revoke[];       /* revoke, release, device readmit, crl, changes */

#endif
