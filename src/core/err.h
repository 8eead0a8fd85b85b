/* err.h - the one error type of certfleet.
 *
 * Every fallible function returns a cf_err and, when it fails, fills the
 * caller's cf_error with a message that says what failed and where, e.g.
 * "CSR: signature does not verify (proof of possession failed)". The CLI
 * prints the message; the server maps the code to a status in one table. */
#ifndef CF_CORE_ERR_H
#define CF_CORE_ERR_H

#include <stddef.h>

typedef enum {
    CF_OK = 0,
    CF_ERR_INVALID,     /* bad input: malformed, out of range, refused by a parser */
    CF_ERR_POLICY,      /* well-formed but refused by policy (weak key, wrong state) */
    CF_ERR_NOT_FOUND,   /* the named object does not exist */
    CF_ERR_EXISTS,      /* uniqueness: the object is already there */
    CF_ERR_STATE,       /* the store is not in a state that allows this (not initialised) */
    CF_ERR_IO,          /* file system */
    CF_ERR_STORE,       /* database error */
    CF_ERR_UNAVAILABLE, /* a peer (database server, token) does not answer */
    CF_ERR_CRYPTO,      /* OpenSSL failed where it should not */
    CF_ERR_TAMPERED,    /* integrity check failed (audit chain) */
    CF_ERR_NOMEM,
    CF_ERR_INTERNAL,
} cf_err;

#define CF_ERROR_MSG_MAX 512

typedef struct {
    cf_err code;
    char msg[CF_ERROR_MSG_MAX];
} cf_error;

/* Sets err (which may be NULL) to code and a printf-style message; returns code. */
cf_err cf_error_set(cf_error *err, cf_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "CONTEXT: " to err's message, keeping its code; returns the code. */
cf_err cf_error_prefix(cf_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Like cf_error_set, and appends the reason of the newest OpenSSL error (and clears the
 * OpenSSL error queue), so a failed X509 or EVP call still says why. */
cf_err cf_error_openssl(cf_error *err, cf_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A short stable name for code: "invalid", "not_found", ... (used in JSON errors). */
const char *cf_err_name(cf_err code);

#endif
