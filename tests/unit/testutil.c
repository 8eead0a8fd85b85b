#include "testutil.h"

#include <libpq-fe.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pki/key.h"
#include "pki/x509.h"

const char *tu_tmpdir(void)
{
    static char dir[512];
    if (!dir[0]) {
        const char *t = getenv("CF_TEST_TMP");
        if (t && *t) {
            snprintf(dir, sizeof dir, "%s", t);
        } else {
            snprintf(dir, sizeof dir, "/tmp/cfunit-manual-%ld", (long)getpid());
            char cmd[600];
            snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
            if (system(cmd) != 0)
                abort();
        }
    }
    return dir;
}

const char *tu_backend_name(int backend)
{
    return backend == TU_SQLITE ? "sqlite" : "postgres";
}

const char *tu_fresh_store_url(int backend)
{
    static char url[1024];
    static int counter;
    counter++;
    if (backend == TU_SQLITE) {
        snprintf(url, sizeof url, "sqlite:%s/store-%d-%d.db", tu_tmpdir(), (int)getpid(), counter);
        return url;
    }
    const char *base = getenv("CF_TEST_PG_URL");
    if (!base || !*base)
        return NULL;
    PGconn *c = PQconnectdb(base);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "testutil: cannot reach %s: %s", base, PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    char sql[128], name[64];
    snprintf(name, sizeof name, "t%d_%d", (int)getpid(), counter);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    PGresult *r = PQexec(c, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    PQfinish(c);
    if (!ok)
        return NULL;
    /* Replace the database name: everything after the last '/'. */
    const char *slash = strrchr(base, '/');
    snprintf(url, sizeof url, "%.*s/%s", (int)(slash - base), base, name);
    return url;
}

char *tu_make_csr(const char *spec, size_t *len)
{
    char cmd[4096], path[600];
    static int n;
    snprintf(path, sizeof path, "%s/csr-%d-%d", tu_tmpdir(), (int)getpid(), ++n);
    const char *colon = strchr(spec, ':');
    char alg[32];
    snprintf(alg, sizeof alg, "%.*s", (int)(colon ? colon - spec : (long)strlen(spec)), spec);
    if (strcmp(alg, "ec") == 0)
        snprintf(cmd, sizeof cmd,
                 "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:%s -nodes -keyout "
                 "%s.key -subj /CN=unit -out %s.csr 2>/dev/null",
                 colon + 1, path, path);
    else if (strcmp(alg, "rsa") == 0)
        snprintf(cmd, sizeof cmd,
                 "openssl req -new -newkey rsa:%s -nodes -keyout %s.key -subj /CN=unit -out "
                 "%s.csr 2>/dev/null",
                 colon + 1, path, path);
    else
        snprintf(cmd, sizeof cmd,
                 "openssl req -new -newkey %s -nodes -keyout %s.key -subj /CN=unit -out "
                 "%s.csr 2>/dev/null",
                 alg, path, path);
    if (system(cmd) != 0)
        return NULL;
    char csr[700];
    snprintf(csr, sizeof csr, "%s.csr", path);
    FILE *f = fopen(csr, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(65536);
    *len = fread(buf, 1, 65535, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

void tu_ca_make(tu_ca *ca)
{
    cf_error err;
    memset(ca, 0, sizeof *ca);
    if (cf_key_generate(CF_KEY_P256, &ca->root_key, &err) != CF_OK ||
        cf_key_generate(CF_KEY_P256, &ca->ca_key, &err) != CF_OK ||
        cf_x509_make_root(ca->root_key, "Unit", "Unit Root", 30, &ca->root, &err) != CF_OK ||
        cf_x509_make_issuing(ca->root, ca->root_key, ca->ca_key, "Unit", "Unit CA", 30, &ca->ca,
                             &err) != CF_OK ||
        cf_issuer_new(ca->ca, ca->ca_key, "issuing-1", "http://127.0.0.1:8080", &ca->iss, &err) !=
            CF_OK)
        fail_msg("test CA: %s", err.msg);
}

void tu_ca_clear(tu_ca *ca)
{
    cf_issuer_free(ca->iss);
    X509_free(ca->root);
    X509_free(ca->ca);
    EVP_PKEY_free(ca->root_key);
    EVP_PKEY_free(ca->ca_key);
    memset(ca, 0, sizeof *ca);
}
