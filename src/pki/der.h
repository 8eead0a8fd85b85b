/* der.h - DER assembled from parts that OpenSSL's encoders made, framed with OpenSSL's
 * ASN1_put_object: for structures built often from the same pieces (device certificates,
 * certs-only PKCS#7), where building OpenSSL's object and encoding it costs more than the
 * signature. Nothing here encodes a value by hand.
 *
 * A cf_der grows as parts are appended; after an allocation or an encoder fails it
 * ignores further parts and cf_der_finish reports the failure, so a builder checks once at
 * the end. */
#ifndef CF_PKI_DER_H
#define CF_PKI_DER_H

#include <openssl/asn1.h>
#include <stddef.h>

typedef struct {
    unsigned char *p; /* OPENSSL_free, or hand over with cf_der_finish */
    size_t len, cap;
    int failed;
} cf_der;

/* Appends n bytes of DER as they are. */
void cf_der_put(cf_der *b, const void *data, size_t n);

/* Appends obj as OpenSSL encodes the ASN.1 item it (ASN1_ITEM_rptr(X509_NAME), ...). */
void cf_der_item(cf_der *b, const void *obj, const ASN1_ITEM *it);

/* Appends an Extension (RFC 5280 4.1) of type nid holding value (X509V3_EXT_i2d). */
void cf_der_ext(cf_der *b, int nid, int critical, void *value);

/* Wraps what b holds from offset from on in a constructed TLV: tag and class as
 * ASN1_put_object takes them (V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL; 3, V_ASN1_CONTEXT_SPECIFIC). */
void cf_der_wrap(cf_der *b, size_t from, int tag, int xclass);

/* Hands b's content over as *der (OPENSSL_free) and returns its length; 0 (and *der NULL,
 * b's memory freed) when anything failed. b is empty afterwards. */
int cf_der_finish(cf_der *b, unsigned char **der);

#endif
