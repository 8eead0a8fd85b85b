/* server.h - certfleet serve: the TLS listener (EST, later the management API) and the
 * plain-HTTP listener (health, metrics, later OCSP and CRLs), DESIGN.md "Server".
 *
 * N worker threads, each with its own event base, its own listeners on the shared ports
 * (SO_REUSEPORT), its own evhttp and its own cf_fleet (store connection): the request path
 * takes no lock but the store's own. The calling thread handles the signals: SIGTERM and
 * SIGINT stop accepting, let replies in flight finish and return; SIGHUP re-reads the
 * settings from the store and re-checks the server certificate. */
#ifndef CF_SERVER_SERVER_H
#define CF_SERVER_SERVER_H

#include "core/err.h"

#define CF_SERVER_MAX_NAMES 16

typedef struct {
    const char *data_dir;  /* DATA: the server key and certificate live in DATA/keys */
    const char *store_url; /* NULL: sqlite:DATA/certfleet.db */
    const char *listen;    /* TLS "ADDR:PORT"; NULL: 127.0.0.1:8443 */
    const char *http;      /* plain HTTP "ADDR:PORT"; NULL: 127.0.0.1:8080 */
    int threads;           /* 0: one per online core */
    /* Host names and IP addresses the server is reached by, besides localhost and
     * 127.0.0.1: each becomes a SAN of the server certificate. */
    const char *names[CF_SERVER_MAX_NAMES];
    int nnames;
    int timeout_s;         /* idle/header/read timeout per connection; 0: 30 */
    int request_timeout_s; /* a TLS request must be in whole this long after the connection
                              or the previous reply; 0: 60 */
    size_t max_body;       /* request body cap in bytes (413 above it); 0: 64 KiB */
    size_t max_upload;     /* body cap of uploads (API manifest imports); 0: 64 MiB */
    int max_conns;         /* open TLS connections per worker before it stops accepting;
                            * 0: 4096 */
} cf_server_opts;

/* Runs the server until SIGTERM or SIGINT. Returns CF_OK after a clean stop; an error
 * (bad address, port taken, store not initialised, no issuing CA) before serving. */
cf_err cf_server_run(const cf_server_opts *opts, cf_error *err);

#endif
