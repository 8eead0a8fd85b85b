/* testutil.h - shared by the cmocka unit tests. Include after cmocka.h's prerequisites. */
#ifndef CF_TESTUTIL_H
#define CF_TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

enum { TU_SQLITE, TU_POSTGRES, TU_BACKENDS };

/* A private temporary directory for this test program (removed by the runner). */
const char *tu_tmpdir(void);

/* A URL of a new, empty store on backend (TU_SQLITE or TU_POSTGRES); NULL when PostgreSQL
 * is not available (CF_TEST_PG_URL unset), and the test should then fail, not skip, unless
 * run by hand. The string is static until the next call. */
const char *tu_fresh_store_url(int backend);

/* "sqlite" / "postgres". */
const char *tu_backend_name(int backend);

/* Writes a PEM CSR for a new key of the given openssl -newkey algorithm spec into a new
 * buffer (free()) using the openssl command line. spec: "ec:P-256", "rsa:1024", ... */
char *tu_make_csr(const char *spec, size_t *len);

/* A test CA pair made in memory: a P-256 root and an issuing CA under it ("Unit Root",
 * "Unit CA", 30 days) with their keys, and an issuer for the CA named issuing-1 under
 * http://127.0.0.1:8080. Fails the test on any error. Free with tu_ca_clear. */
typedef struct {
    struct evp_pkey_st *root_key, *ca_key;
    struct x509_st *root, *ca;
    struct cf_issuer *iss;
} tu_ca;

void tu_ca_make(tu_ca *ca);
void tu_ca_clear(tu_ca *ca);

#endif
