/* fuzz_key_ref.c - key references as stored and shown: cf_key_ref_without_pin on arbitrary
 * strings (pkcs11: URIs from --ca-key/--root-key, or file names).
 *
 * Besides "never crash", it checks what the function promises: a result is shorter than
 * CF_KEY_REF_MAX, keeps no pin-value attribute (path components split at ';', query ones at
 * '&', as RFC 7512 does), and is its own fixed point. Seeds: corpus/fuzz_key_ref/. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pki/key.h"

static void fail(const char *what, const char *in, const char *out)
{
    fprintf(stderr, "fuzz_key_ref: %s\n  in:  %s\n  out: %s\n", what, in, out);
    abort();
}

/* 1 if some component of the pkcs11 URI uri is named pin-value. */
static int has_pin_value(const char *uri)
{
    int in_query = 0;
    for (const char *c = uri + 7; *c;) {
        size_t len = strcspn(c, in_query ? "&" : ";?");
        if (len >= 10 && strncmp(c, "pin-value=", 10) == 0)
            return 1;
        c += len;
        if (*c == '?')
            in_query = 1;
        if (*c)
            c++;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char in[2 * CF_KEY_REF_MAX], out[CF_KEY_REF_MAX], again[CF_KEY_REF_MAX];
    cf_error err;

    if (size >= sizeof in)
        return 0;
    memcpy(in, data, size);
    in[size] = '\0';
    if (cf_key_ref_without_pin(in, out, &err) != CF_OK)
        return 0;
    if (memchr(out, '\0', CF_KEY_REF_MAX) == NULL)
        fail("result is not terminated", in, "");
    if (cf_key_ref_is_pkcs11(out) && has_pin_value(out))
        fail("result keeps a pin-value", in, out);
    if (cf_key_ref_without_pin(out, again, &err) != CF_OK)
        fail("result is refused when given back", in, out);
    if (strcmp(out, again) != 0)
        fail("result changes when given back", in, out);
    return 0;
}
