#include "core/err.h"

#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void vset(cf_error *err, cf_err code, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

static void vset(cf_error *err, cf_err code, const char *fmt, va_list ap)
{
    err->code = code;
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
}

cf_err cf_error_set(cf_error *err, cf_err code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vset(err, code, fmt, ap);
        va_end(ap);
    }
    return code;
}

cf_err cf_error_prefix(cf_error *err, const char *fmt, ...)
{
    if (!err)
        return CF_ERR_INTERNAL;
    char head[CF_ERROR_MSG_MAX], old[CF_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    size_t n = strlen(head);
    if (n > sizeof err->msg - 3)
        n = sizeof err->msg - 3;
    memcpy(err->msg, head, n);
    memcpy(err->msg + n, ": ", 2);
    size_t rest = sizeof err->msg - n - 3;
    size_t olen = strnlen(old, rest);
    memcpy(err->msg + n + 2, old, olen);
    err->msg[n + 2 + olen] = '\0';
    return err->code;
}

cf_err cf_error_openssl(cf_error *err, cf_err code, const char *fmt, ...)
{
    unsigned long e = ERR_peek_last_error();
    char reason[256] = "";
    if (e)
        ERR_error_string_n(e, reason, sizeof reason);
    ERR_clear_error();
    if (!err)
        return code;
    va_list ap;
    va_start(ap, fmt);
    vset(err, code, fmt, ap);
    va_end(ap);
    if (reason[0]) {
        size_t n = strlen(err->msg);
        snprintf(err->msg + n, sizeof err->msg - n, " (%s)", reason);
    }
    return code;
}

const char *cf_err_name(cf_err code)
{
    switch (code) {
    case CF_OK:
        return "ok";
    case CF_ERR_INVALID:
        return "invalid";
    case CF_ERR_POLICY:
        return "policy";
    case CF_ERR_NOT_FOUND:
        return "not_found";
    case CF_ERR_EXISTS:
        return "exists";
    case CF_ERR_STATE:
        return "state";
    case CF_ERR_IO:
        return "io";
    case CF_ERR_STORE:
        return "store";
    case CF_ERR_UNAVAILABLE:
        return "unavailable";
    case CF_ERR_CRYPTO:
        return "crypto";
    case CF_ERR_TAMPERED:
        return "tampered";
    case CF_ERR_NOMEM:
        return "nomem";
    case CF_ERR_INTERNAL:
        return "internal";
    }
    return "unknown";
}
