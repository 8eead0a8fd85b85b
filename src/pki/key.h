/* key.h - private keys: generation, the key policy, files and PKCS#11 tokens.
 *
 * A key reference is either a file name (resolved under the caller's key directory) or an
 * RFC 7512 "pkcs11:" URI naming a private key object in a token. PKCS#11 keys are used
 * through the libp11 engine and never leave the token: every signature is made inside it.
 *
 * The PKCS#11 module is the URI's module-path query attribute, else
 * $CERTFLEET_PKCS11_MODULE, else p11-kit's proxy (which loads every module registered with
 * p11-kit). One process uses one module.
 *
 * The PIN, first found wins:
 *   1. the URI's pin-value attribute (path or query): accepted, but never stored, printed
 *      or handed to the engine inside a URI (libp11 echoes URIs on stderr); on a command
 *      line other local users can read it (ps), so prefer 2 or 3 outside tests;
 *   2. the URI's pin-source query attribute: a file ("file:/path" or "/path") whose first
 *      line is the PIN; the file name is kept with the URI, the PIN is not;
 *   3. $CERTFLEET_PKCS11_PIN.
 * There is no interactive prompt: a key load without a PIN fails at once and says so. What
 * certfleet stores as the key reference is cf_key_ref_without_pin's form of the URI, so a
 * later process (certfleet issue, certfleet serve) finds the PIN through 2 or 3. */
#ifndef CF_PKI_KEY_H
#define CF_PKI_KEY_H

#include <openssl/evp.h>

#include "core/err.h"

typedef enum { CF_KEY_P256, CF_KEY_P384, CF_KEY_RSA3072, CF_KEY_ED25519 } cf_key_type;

/* "p256", "p384", "rsa3072", "ed25519" -> type; -1 when unknown. */
int cf_key_type_parse(const char *name);
const char *cf_key_type_name(cf_key_type type);

/* A new key pair (*out: EVP_PKEY_free). */
cf_err cf_key_generate(cf_key_type type, EVP_PKEY **out, cf_error *err);

/* The key's PKCS#8 PEM (unencrypted: protect it with file permissions). *pem: free(). */
cf_err cf_key_to_pem(EVP_PKEY *key, char **pem, size_t *len, cf_error *err);

/* Loads a private key by reference (see above). keydir may be NULL for pkcs11 URIs. For a
 * token key, errors say why libp11 refused it ("PIN incorrect", "object not found") and show
 * the URI without its PIN. *out: EVP_PKEY_free (a token key holds only a handle). */
cf_err cf_key_load(const char *ref, const char *keydir, EVP_PKEY **out, cf_error *err);

/* 1 if ref is a pkcs11: URI. */
int cf_key_ref_is_pkcs11(const char *ref);

/* Largest key reference accepted, with its NUL. */
#define CF_KEY_REF_MAX 1024

/* The form of ref that may be stored, logged and shown: for a pkcs11 URI, the URI with every
 * pin-value attribute removed (everything else kept as given); a file name unchanged.
 * CF_ERR_INVALID for a malformed URI (the message never contains the PIN). */
cf_err cf_key_ref_without_pin(const char *ref, char out[CF_KEY_REF_MAX], cf_error *err);

/* Checks a subject public key against the device key policy: RSA of 2048 bits or more,
 * EC on P-256 or P-384, Ed25519. On success writes a description ("EC P-256") into desc;
 * CF_ERR_POLICY names what was refused and why. */
cf_err cf_key_check_policy(EVP_PKEY *key, char *desc, size_t desc_len, cf_error *err);

/* The digest that goes with key for signatures (NULL for Ed25519). */
const EVP_MD *cf_key_digest(EVP_PKEY *key);

#endif
