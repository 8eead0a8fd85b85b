/* service.c - the key pairs of certfleet's own services (see fleet.h). */
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/fs.h"
#include "fleet/fleet.h"
#include "pki/key.h"

static void load_stored(const char *cert_path, const char *key_path, X509 **cert, EVP_PKEY **key)
{
    FILE *fc = fopen(cert_path, "r"), *fk = fopen(key_path, "r");
    if (fc)
        *cert = PEM_read_X509(fc, NULL, NULL, NULL);
    if (fk)
        *key = PEM_read_PrivateKey(fk, NULL, NULL, NULL);
    if (fc)
        fclose(fc);
    if (fk)
        fclose(fk);
    ERR_clear_error();
}

static cf_err write_pair(const char *cert_path, const char *key_path, X509 *cert, EVP_PKEY *key,
                         cf_error *err)
{
    char *pem = NULL, *kpem = NULL;
    size_t len = 0, klen = 0;
    cf_err rc = cf_key_to_pem(key, &kpem, &klen, err);
    if (rc == CF_OK)
        rc = cf_fs_write_file(key_path, kpem, klen, 0600, 1, err);
    if (rc == CF_OK)
        rc = cf_x509_append_pem(cert, &pem, &len, err);
    if (rc == CF_OK)
        rc = cf_fs_write_file(cert_path, pem, len, 0600, 1, err);
    if (kpem)
        OPENSSL_cleanse(kpem, klen);
    free(kpem);
    free(pem);
    return rc;
}

cf_err cf_fleet_service_pair(cf_fleet *f, const char *name, const cf_service_profile *prof,
                             X509 **cert, EVP_PKEY **key, cf_error *err)
{
    char cert_path[4200], key_path[4200];
    cf_err rc;
    *cert = NULL;
    *key = NULL;
    snprintf(cert_path, sizeof cert_path, "%s/%s.pem", cf_fleet_key_dir(f), name);
    snprintf(key_path, sizeof key_path, "%s/%s.key", cf_fleet_key_dir(f), name);
    load_stored(cert_path, key_path, cert, key);
    if (*cert && *key && prof->usable(*cert, *key, prof->arg))
        return CF_OK;
    X509_free(*cert);
    EVP_PKEY_free(*key);
    *cert = NULL;
    *key = NULL;
    if ((rc = cf_fs_mkdirs(cf_fleet_key_dir(f), 0700, err)) != CF_OK ||
        (rc = cf_key_generate(CF_KEY_P256, key, err)) != CF_OK ||
        (rc = prof->issue(f, *key, prof->arg, cert, err)) != CF_OK ||
        (rc = write_pair(cert_path, key_path, *cert, *key, err)) != CF_OK) {
        X509_free(*cert);
        EVP_PKEY_free(*key);
        *cert = NULL;
        *key = NULL;
        cf_error_prefix(err, "%s", name);
    }
    return rc;
}
