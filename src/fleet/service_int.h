/* service_int.h - the key pairs of certfleet's own services (the TLS server, the OCSP
 * responders), kept as DATA/keys/NAME.key (0600) and NAME.pem: reused while usable, else
 * replaced by a new key and certificate. Not for use outside src/fleet. */
#ifndef CF_FLEET_SERVICE_INT_H
#define CF_FLEET_SERVICE_INT_H

#include <openssl/x509.h>

#include "fleet/fleet.h"

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

#endif
