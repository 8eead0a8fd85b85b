/* cmd_serve.c - certfleet serve. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "core/log.h"
#include "server/server.h"

/* Host names and IPv4/IPv6 addresses: anything else would be no SAN a client matches. */
#define NAME_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:"

static int run_serve(cli *c)
{
    cf_server_opts o = {0};
    long long threads, timeout, request_timeout, max_body, max_upload, max_conns;
    if (cli_int(c, "threads", 1, 256, 0, &threads) < 0 ||
        cli_int(c, "timeout", 1, 3600, 30, &timeout) < 0 ||
        cli_int(c, "request-timeout", 1, 3600, 60, &request_timeout) < 0 ||
        cli_int(c, "max-body", 1024, 16 * 1024 * 1024, 64 * 1024, &max_body) < 0 ||
        cli_int(c, "max-upload", 1024, 1LL << 40, 64 * 1024 * 1024, &max_upload) < 0 ||
        cli_int(c, "max-conns", 1, 1000000, 4096, &max_conns) < 0)
        return 2;
    /* --server-name may be repeated: every occurrence is a SAN. */
    for (int i = 0; i < c->nopts; i++) {
        if (strcmp(c->opts[i].name, "server-name") != 0)
            continue;
        if (o.nnames >= CF_SERVER_MAX_NAMES)
            return cli_usage(c, "at most %d --server-name", CF_SERVER_MAX_NAMES);
        const char *v = c->opts[i].value;
        if (!*v || strspn(v, NAME_CHARS) != strlen(v))
            return cli_usage(c, "--server-name %s: expected a host name or IP address", v);
        o.names[o.nnames++] = v;
    }
    o.data_dir = c->data_dir;
    o.store_url = c->store_url;
    o.listen = cli_opt(c, "listen");
    o.http = cli_opt(c, "http");
    o.threads = (int)threads;
    o.timeout_s = (int)timeout;
    o.request_timeout_s = (int)request_timeout;
    o.max_body = (size_t)max_body;
    o.max_upload = (size_t)max_upload;
    o.max_conns = (int)max_conns;
    cf_log_set_level(CF_LOG_INFO); /* start, stop and reload are worth a line */
    /* The workers open their own store connections. */
    cf_fleet_close(c->fleet);
    c->fleet = NULL;
    if (cf_server_run(&o, &c->err) != CF_OK)
        return cli_fail(c);
    return 0;
}

static const cli_opt_spec serve_opts[] = {
    {"listen", "ADDRESS", "TLS listener ADDR:PORT for EST and the API (default 127.0.0.1:8443)"},
    {"http", "ADDRESS",
     "plain HTTP listener ADDR:PORT for health, metrics, OCSP, CRLs"
     " (default 127.0.0.1:8080)"},
    {"threads", "N", "worker threads (default: one per core)"},
    {"server-name", "NAME",
     "a host name or IP the server is reached by, for its certificate"
     " (repeatable; localhost and 127.0.0.1 are always included)"},
    {"timeout", "SECONDS", "drop a connection idle or silent this long (default 30)"},
    {"request-timeout", "SECONDS",
     "a TLS client must get a whole request in (handshake, head, body) within this long of"
     " connecting or of the previous reply, however it trickles (default 60)"},
    {"max-body", "BYTES", "largest request body; larger ones get 413 (default 65536)"},
    {"max-upload", "BYTES",
     "largest manifest upload (POST /api/v1/manufacturers/NAME/manifests; default 64 MiB)"},
    {"max-conns", "N", "open TLS connections per worker before it stops accepting (4096)"},
    {NULL, NULL, NULL},
};

const cli_cmd cli_cmds_serve[] = {
    {"serve", NULL, 0,
     "run the server: EST and the management API over TLS, health and metrics over HTTP",
     serve_opts, run_serve, 0, 1, 0},
    {NULL, NULL, 0, NULL, NULL, NULL, 0, 0, 0},
};
