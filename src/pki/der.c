#include "pki/der.h"

#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/x509v3.h>
#include <string.h>

void cf_der_put(cf_der *b, const void *data, size_t n)
{
    if (b->failed || n == 0)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *p = OPENSSL_realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

void cf_der_item(cf_der *b, const void *obj, const ASN1_ITEM *it)
{
    unsigned char *der = NULL;
    int n = b->failed ? 0 : ASN1_item_i2d((const ASN1_VALUE *)obj, &der, it);
    if (n <= 0)
        b->failed = 1;
    else
        cf_der_put(b, der, (size_t)n);
    OPENSSL_free(der);
}

void cf_der_ext(cf_der *b, int nid, int critical, void *value)
{
    X509_EXTENSION *ext = b->failed ? NULL : X509V3_EXT_i2d(nid, critical, value);
    if (!ext)
        b->failed = 1;
    else
        cf_der_item(b, ext, ASN1_ITEM_rptr(X509_EXTENSION));
    X509_EXTENSION_free(ext);
}

void cf_der_wrap(cf_der *b, size_t from, int tag, int xclass)
{
    if (b->failed || from > b->len || b->len - from > INT_MAX / 2) {
        b->failed = 1;
        return;
    }
    int clen = (int)(b->len - from);
    unsigned char hdr[16], *h = hdr;
    ASN1_put_object(&h, 1, clen, tag, xclass);
    size_t hlen = (size_t)(h - hdr);
    cf_der_put(b, hdr, hlen); /* makes room; the header moves to the front below */
    if (b->failed)
        return;
    memmove(b->p + from + hlen, b->p + from, (size_t)clen);
    memcpy(b->p + from, hdr, hlen);
}

int cf_der_finish(cf_der *b, unsigned char **der)
{
    int n = 0;
    *der = NULL;
    if (b->failed || b->len == 0 || b->len > INT_MAX)
        OPENSSL_free(b->p);
    else {
        *der = b->p;
        n = (int)b->len;
    }
    memset(b, 0, sizeof *b);
    return n;
}
