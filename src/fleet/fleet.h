/* fleet.h - the lifecycle operations. The CLI and the server are thin shells over this.
 *
 * A cf_fleet is an open store plus the data directory (for key files) and what is worth
 * keeping between operations (the loaded issuing CA). One per thread. Each operation here
 * is one transaction with its audit record: it happens entirely or not at all. */
#ifndef CF_FLEET_FLEET_H
#define CF_FLEET_FLEET_H

#include <openssl/x509.h>
#include <stdint.h>

#include "pki/key.h"
#include "pki/x509.h"
#include "store/store.h"

typedef struct cf_fleet cf_fleet;

/* data_dir: where the SQLite store and key files live (created 0700 when missing).
 * store_url: NULL for sqlite:DATA/certfleet.db. */
cf_err cf_fleet_open(const char *data_dir, const char *store_url, cf_fleet **out, cf_error *err);
void cf_fleet_close(cf_fleet *f); /* accepts NULL */
cf_store *cf_fleet_store(cf_fleet *f);
/* DATA/keys: where key files named by a bare reference live. */
const char *cf_fleet_key_dir(const cf_fleet *f);

/* The default base URL of the revocation endpoints named in issued certificates. */
#define CF_DEFAULT_BASE_URL "http://127.0.0.1:8080"
#define CF_DEFAULT_DEVICE_DAYS 365

typedef struct {
    const char *org;      /* organisation: subject O of the CAs and of device certs */
    cf_key_type key_type; /* for generated CA keys */
    const char *ca_key;   /* NULL: generate a key file; else a pkcs11: URI */
    const char *root_key; /* NULL: generate a key file; else a pkcs11: URI */
    const char *base_url; /* NULL: CF_DEFAULT_BASE_URL */
    int device_days;      /* 0: CF_DEFAULT_DEVICE_DAYS */
    const char *actor;
} cf_init_opts;

/* Creates the root CA (pathlen 1) and the issuing CA (pathlen 0). CF_ERR_STATE, changing
 * nothing, when the store is already initialised. */
cf_err cf_fleet_init(cf_fleet *f, const cf_init_opts *opts, cf_error *err);

typedef struct {
    const unsigned char *csr; /* PEM or DER */
    size_t csr_len;
    const char *device_id;
    int days; /* 0: the configured default */
    const char *actor;
} cf_issue_req;

/* Verifies the CSR (proof of possession, key policy), signs a device certificate under
 * the device profile (O = the device's owner, else the organisation), and stores it with
 * its audit record in one transaction. A device that does not exist yet is created active;
 * a decommissioned or blocked one is refused. *out: the certificate's DER, serial and
 * validity (cf_signed_cert_clear). */
cf_err cf_fleet_issue(cf_fleet *f, const cf_issue_req *req, cf_signed_cert *out, cf_error *err);

typedef struct {
    cf_signed_cert cert; /* on success: cf_signed_cert_clear */
    cf_err rc;
    cf_error err; /* when rc != CF_OK */
} cf_issue_result;

/* Group commit: issues n certificates with one transaction for all of them, as a server
 * does for the enrollments that arrive together. Each request is checked and signed on its
 * own, and one that fails (bad CSR, refused device) fails alone in results[i]. Nothing is
 * acknowledged before the transaction commits; should it fail, each request is retried in
 * a transaction of its own. Returns CF_OK when every request has its result. */
cf_err cf_fleet_issue_batch(cf_fleet *f, const cf_issue_req *reqs, size_t n,
                            cf_issue_result *results, cf_error *err);

/* A TLS server certificate for certfleet's own listeners: pub's certificate from the
 * issuing CA for names (CN names[0], SAN each; see cf_issuer_sign_server), recorded in the
 * store like any certificate (so revocation covers it) and audited (cert.issue_server).
 * *out: X509_free. */
cf_err cf_fleet_issue_server_cert(cf_fleet *f, EVP_PKEY *pub, const char *const *names, int nnames,
                                  int days, const char *actor, X509 **out, cf_error *err);

/* The key pairs of certfleet's own services (the TLS server, the OCSP responders), kept as
 * DATA/keys/NAME.key (0600) and NAME.pem: reused while usable, else replaced by a new P-256
 * key and certificate. */
typedef struct {
    /* 1 if the stored pair may be served as it is. */
    int (*usable)(X509 *cert, EVP_PKEY *key, void *arg);
    /* A certificate for the new key (recorded in the store and audited by the callee). */
    cf_err (*issue)(cf_fleet *f, EVP_PKEY *key, void *arg, X509 **cert, cf_error *err);
    void *arg;
} cf_service_profile;

/* The pair named name (file names under DATA/keys), reused or made anew. *cert: X509_free,
 * *key: EVP_PKEY_free. */
cf_err cf_fleet_service_pair(cf_fleet *f, const char *name, const cf_service_profile *prof,
                             X509 **cert, EVP_PKEY **key, cf_error *err);

/* The issuing chain, issuing CA first then root, as PEM. *pem: free(). */
cf_err cf_fleet_chain_pem(cf_fleet *f, char **pem, size_t *len, cf_error *err);

/* The issuing CA and root (borrowed; valid until cf_fleet_close). */
cf_err cf_fleet_chain(cf_fleet *f, X509 **issuing, X509 **root, cf_error *err);

typedef struct {
    char org[256];
    int64_t ca_count;
    int64_t devices[CF_DEVICE_STATE_COUNT];
    int64_t certs_total, certs_valid;
    int64_t audit_seq;
    int64_t schema_version;
} cf_fleet_status;

cf_err cf_fleet_get_status(cf_fleet *f, cf_fleet_status *out, cf_error *err);

/* 1 if id is a valid device id: 1..128 characters of A-Z a-z 0-9 . _ : - */
int cf_fleet_device_id_valid(const char *id);

#endif
