/* p7walk.c - see p7walk.h. */
#include "p7walk.h"

#include <openssl/asn1.h>
#include <string.h>

/* Steps *p over one DER TLV that ends by end; with inner, into it instead: it must then be
 * constructed, of the given tag and class, and *inner is set to where its content ends. */
static int der_next(const unsigned char **p, const unsigned char *end, int tag, int xclass,
                    const unsigned char **inner)
{
    const unsigned char *q = *p;
    long len;
    int t, c;
    int r = ASN1_get_object(&q, &len, &t, &c, end - q);
    if ((r & 0x80) || (r & 1)) /* an error, or the indefinite length DER forbids */
        return -1;
    if (!inner) {
        *p = q + len;
        return 0;
    }
    if (!(r & V_ASN1_CONSTRUCTED) || t != tag || c != xclass)
        return -1;
    *p = q;
    *inner = q + len;
    return 0;
}

int p7_certs_only_has_key(const unsigned char *der, size_t len, const unsigned char *spki,
                          int spki_len)
{
    static const unsigned char signed_data[] = {0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                                0xf7, 0x0d, 0x01, 0x07, 0x02};
    const unsigned char *p = der, *end = der + len, *ci, *sd, *certs, *cert, *tbs;
    if (der_next(&p, end, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL, &ci) != 0 || ci != end ||
        (size_t)(ci - p) < sizeof signed_data || memcmp(p, signed_data, sizeof signed_data) != 0)
        return 0;
    p += sizeof signed_data;
    if (der_next(&p, ci, 0, V_ASN1_CONTEXT_SPECIFIC, &sd) != 0 ||
        der_next(&p, sd, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL, &sd) != 0 ||
        der_next(&p, sd, 0, 0, NULL) != 0 || /* version */
        der_next(&p, sd, 0, 0, NULL) != 0 || /* digestAlgorithms */
        der_next(&p, sd, 0, 0, NULL) != 0 || /* encapContentInfo */
        der_next(&p, sd, 0, V_ASN1_CONTEXT_SPECIFIC, &certs) != 0)
        return 0;
    while (p < certs) {
        if (der_next(&p, certs, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL, &cert) != 0 ||
            der_next(&p, cert, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL, &tbs) != 0)
            return 0;
        if (p < tbs && *p == 0xa0 && der_next(&p, tbs, 0, 0, NULL) != 0) /* [0] version */
            return 0;
        for (int field = 0; field < 5; field++) /* serial, signature, issuer, validity, subject */
            if (der_next(&p, tbs, 0, 0, NULL) != 0)
                return 0;
        const unsigned char *key = p;
        if (der_next(&p, tbs, 0, 0, NULL) != 0)
            return 0;
        if (p - key == spki_len && memcmp(key, spki, (size_t)spki_len) == 0)
            return 1;
        p = cert;
    }
    return 0;
}
