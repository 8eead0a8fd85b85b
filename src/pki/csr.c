#include "pki/csr.h"

#include <openssl/asn1t.h>
#include <openssl/core_names.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pki/key.h"

static int looks_pem(const unsigned char *data, size_t len)
{
    /* PEM may follow leading whitespace or explanatory text; DER starts with SEQUENCE. */
    return len > 0 && data[0] != 0x30 && memmem(data, len, "-----BEGIN", 10) != NULL;
}

cf_err cf_csr_parse(const unsigned char *data, size_t len, X509_REQ **out, cf_error *err)
{
    if (len == 0)
        return cf_error_set(err, CF_ERR_INVALID, "CSR is empty");
    if (len > CF_CSR_MAX)
        return cf_error_set(err, CF_ERR_INVALID, "CSR is too large (%zu bytes, limit %d)", len,
                            CF_CSR_MAX);
    X509_REQ *req = NULL;
    if (looks_pem(data, len)) {
        BIO *b = BIO_new_mem_buf(data, (int)len);
        if (!b)
            return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
        req = PEM_read_bio_X509_REQ(b, NULL, NULL, NULL);
        BIO_free(b);
        if (!req)
            return cf_error_openssl(err, CF_ERR_INVALID,
                                    "CSR: PEM does not hold a valid certificate request");
    } else {
        const unsigned char *p = data;
        req = d2i_X509_REQ(NULL, &p, (long)len);
        if (!req)
            return cf_error_openssl(err, CF_ERR_INVALID,
                                    "CSR: not a PEM or DER certificate request (truncated or"
                                    " malformed)");
        if ((size_t)(p - data) != len) {
            X509_REQ_free(req);
            return cf_error_set(err, CF_ERR_INVALID, "CSR: %zu unexpected bytes after the DER",
                                len - (size_t)(p - data));
        }
    }
    *out = req;
    return CF_OK;
}

cf_err cf_csr_check(X509_REQ *req, EVP_PKEY **pub, char *keydesc, size_t keydesc_len, cf_error *err)
{
    EVP_PKEY *k = X509_REQ_get_pubkey(req);
    if (!k)
        return cf_error_openssl(err, CF_ERR_INVALID, "CSR: public key is missing or unreadable");
    cf_err rc = cf_key_check_policy(k, keydesc, keydesc_len, err);
    if (rc != CF_OK) {
        cf_error_prefix(err, "CSR");
        goto fail;
    }
    if (X509_REQ_verify(req, k) != 1) {
        rc = cf_error_openssl(err, CF_ERR_INVALID,
                              "CSR: signature does not verify (proof of possession failed)");
        goto fail;
    }
    *pub = k;
    return CF_OK;
fail:
    EVP_PKEY_free(k);
    return rc;
}

/* ---- the issuance hot path ----
 *
 * d2i_X509_REQ has OpenSSL 3.0 build a fresh key decoder for the request's public key
 * (every key manager and decoder the providers offer is enumerated, each time): a quarter
 * of the time of an issuance. Here the request is read with a template that leaves the
 * SubjectPublicKeyInfo as its algorithm and bits; named-curve EC keys are made from a
 * template key of their curve, other keys by a decoder kept per key type. The signature is
 * checked over the request info as received. */

/* The ASN.1 templates, laid out as OpenSSL lays its own. */
/* clang-format off */
typedef struct {
    X509_ALGOR *algor;
    ASN1_BIT_STRING *public_key;
} cf_csr_spki;

ASN1_SEQUENCE(cf_csr_spki) = {
    ASN1_SIMPLE(cf_csr_spki, algor, X509_ALGOR),
    ASN1_SIMPLE(cf_csr_spki, public_key, ASN1_BIT_STRING),
} ASN1_SEQUENCE_END(cf_csr_spki)

/* RFC 2986 CertificationRequestInfo; enc keeps the bytes the signature covers. */
typedef struct {
    ASN1_ENCODING enc;
    ASN1_INTEGER *version;
    X509_NAME *subject;
    cf_csr_spki *spki;
    STACK_OF(X509_ATTRIBUTE) *attributes;
} cf_csr_info;

ASN1_SEQUENCE_enc(cf_csr_info, enc, 0) = {
    ASN1_SIMPLE(cf_csr_info, version, ASN1_INTEGER),
    ASN1_SIMPLE(cf_csr_info, subject, X509_NAME),
    ASN1_SIMPLE(cf_csr_info, spki, cf_csr_spki),
    ASN1_IMP_SET_OF_OPT(cf_csr_info, attributes, X509_ATTRIBUTE, 0),
} ASN1_SEQUENCE_END_enc(cf_csr_info, cf_csr_info)

typedef struct {
    cf_csr_info *info;
    X509_ALGOR *sig_alg;
    ASN1_BIT_STRING *signature;
} cf_csr_der;

ASN1_SEQUENCE(cf_csr_der) = {
    ASN1_SIMPLE(cf_csr_der, info, cf_csr_info),
    ASN1_SIMPLE(cf_csr_der, sig_alg, X509_ALGOR),
    ASN1_SIMPLE(cf_csr_der, signature, ASN1_BIT_STRING),
} ASN1_SEQUENCE_END(cf_csr_der)
/* clang-format on */

#define DECODER_SLOTS 4

        struct cf_csr_parser {
    struct {
        char keytype[80];      /* the SPKI algorithm as OpenSSL names it */
        OSSL_DECODER_CTX *ctx; /* writes its result to key */
        EVP_PKEY *key;
    } slot[DECODER_SLOTS];
    size_t nslots;
    struct {
        int nid;       /* the curve */
        EVP_PKEY *key; /* its domain parameters and no key: the template for its keys */
    } curve[DECODER_SLOTS];
    size_t ncurves;
};

cf_err cf_csr_parser_new(cf_csr_parser **out, cf_error *err)
{
    *out = calloc(1, sizeof **out);
    if (!*out)
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    return CF_OK;
}

void cf_csr_parser_free(cf_csr_parser *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->nslots; i++) {
        OSSL_DECODER_CTX_free(p->slot[i].ctx);
        EVP_PKEY_free(p->slot[i].key);
    }
    for (size_t i = 0; i < p->ncurves; i++)
        EVP_PKEY_free(p->curve[i].key);
    free(p);
}

/* A key with the domain parameters of curve nid and no point yet; NULL when unknown. */
static EVP_PKEY *curve_template(cf_csr_parser *p, int nid)
{
    for (size_t i = 0; i < p->ncurves; i++)
        if (p->curve[i].nid == nid)
            return p->curve[i].key;
    const char *name = OBJ_nid2sn(nid);
    if (nid == NID_undef || !name || p->ncurves == DECODER_SLOTS)
        return NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    EVP_PKEY *key = NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)name, 0),
        OSSL_PARAM_END,
    };
    if (!ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_KEY_PARAMETERS, params) <= 0) {
        ERR_clear_error(); /* not a curve OpenSSL knows: the decoder will say so */
        EVP_PKEY_CTX_free(ctx);
        return NULL;
    }
    EVP_PKEY_CTX_free(ctx);
    p->curve[p->ncurves].nid = nid;
    p->curve[p->ncurves].key = key;
    p->ncurves++;
    return key;
}

/* EC keys on a named curve (nearly every device key) are made from a template of their
 * curve and their point, some 25 times cheaper than the decoder; setting the point still
 * checks that it lies on the curve. Returns 0 when spki is not such a key or is refused,
 * for the decoder to handle and explain. */
static int import_ec_key(cf_csr_parser *p, const cf_csr_spki *spki, EVP_PKEY **out)
{
    const ASN1_OBJECT *alg;
    const void *param;
    int ptype;
    X509_ALGOR_get0(&alg, &ptype, &param, spki->algor);
    if (OBJ_obj2nid(alg) != NID_X9_62_id_ecPublicKey || ptype != V_ASN1_OBJECT ||
        ASN1_STRING_length(spki->public_key) <= 0)
        return 0;
    EVP_PKEY *tpl = curve_template(p, OBJ_obj2nid(param));
    EVP_PKEY *k = tpl ? EVP_PKEY_dup(tpl) : NULL;
    if (!k || !EVP_PKEY_set1_encoded_public_key(k, ASN1_STRING_get0_data(spki->public_key),
                                                (size_t)ASN1_STRING_length(spki->public_key))) {
        EVP_PKEY_free(k);
        ERR_clear_error();
        return 0;
    }
    *out = k;
    return 1;
}

/* The subject key of spki as an EVP_PKEY, decoded by the slot for its key type. */
static cf_err decode_key(cf_csr_parser *p, cf_csr_spki *spki, EVP_PKEY **out, cf_error *err)
{
    char keytype[80];
    unsigned char *der = NULL;
    cf_err rc = CF_OK;
    if (import_ec_key(p, spki, out))
        return CF_OK;
    int len = ASN1_item_i2d((ASN1_VALUE *)spki, &der, ASN1_ITEM_rptr(cf_csr_spki));
    if (len <= 0 || OBJ_obj2txt(keytype, sizeof keytype, spki->algor->algorithm, 0) <= 0) {
        rc = cf_error_openssl(err, CF_ERR_INVALID, "CSR: public key is missing or unreadable");
        goto out;
    }
    size_t i = 0;
    while (i < p->nslots && strcmp(p->slot[i].keytype, keytype) != 0)
        i++;
    if (i == p->nslots) {
        if (i == DECODER_SLOTS)
            i = DECODER_SLOTS - 1; /* an unusual key type: reuse the last slot */
        OSSL_DECODER_CTX_free(p->slot[i].ctx);
        p->slot[i].ctx =
            OSSL_DECODER_CTX_new_for_pkey(&p->slot[i].key, "DER", "SubjectPublicKeyInfo", keytype,
                                          EVP_PKEY_PUBLIC_KEY, NULL, NULL);
        if (!p->slot[i].ctx) {
            p->slot[i].keytype[0] = '\0';
            rc = cf_error_openssl(err, CF_ERR_CRYPTO, "CSR: no decoder for %s keys", keytype);
            goto out;
        }
        snprintf(p->slot[i].keytype, sizeof p->slot[i].keytype, "%s", keytype);
        if (i == p->nslots)
            p->nslots++;
    }
    const unsigned char *in = der;
    size_t inlen = (size_t)len;
    EVP_PKEY_free(p->slot[i].key);
    p->slot[i].key = NULL;
    if (!OSSL_DECODER_from_data(p->slot[i].ctx, &in, &inlen) || !p->slot[i].key) {
        rc = cf_error_openssl(err, CF_ERR_INVALID, "CSR: public key is missing or unreadable");
        goto out;
    }
    *out = p->slot[i].key;
    p->slot[i].key = NULL;
out:
    OPENSSL_free(der);
    return rc;
}

/* The request's key as an X509_PUBKEY that holds only its encoding. */
static cf_err spki_copy(const cf_csr_spki *spki, X509_PUBKEY **out, cf_error *err)
{
    X509_PUBKEY *pk = X509_PUBKEY_new();
    X509_ALGOR *alg;
    ASN1_OBJECT *obj = OBJ_dup(spki->algor->algorithm);
    int n = ASN1_STRING_length(spki->public_key);
    unsigned char *bits =
        n > 0 ? OPENSSL_memdup(ASN1_STRING_get0_data(spki->public_key), (size_t)n) : NULL;
    if (!pk || !obj || !bits || !X509_PUBKEY_set0_param(pk, obj, V_ASN1_UNDEF, NULL, bits, n)) {
        X509_PUBKEY_free(pk);
        ASN1_OBJECT_free(obj);
        OPENSSL_free(bits);
        return cf_error_openssl(err, CF_ERR_INVALID, "CSR: public key is missing or unreadable");
    }
    if (!X509_PUBKEY_get0_param(NULL, NULL, NULL, &alg, pk) || !X509_ALGOR_copy(alg, spki->algor)) {
        X509_PUBKEY_free(pk);
        return cf_error_openssl(err, CF_ERR_NOMEM, "CSR: cannot copy the public key");
    }
    *out = pk;
    return CF_OK;
}

/* The request as DER: data itself, or *owned (OPENSSL_free) decoded from PEM. */
static cf_err csr_der(const unsigned char *data, size_t len, const unsigned char **der,
                      long *der_len, unsigned char **owned, cf_error *err)
{
    *owned = NULL;
    if (len == 0)
        return cf_error_set(err, CF_ERR_INVALID, "CSR is empty");
    if (len > CF_CSR_MAX)
        return cf_error_set(err, CF_ERR_INVALID, "CSR is too large (%zu bytes, limit %d)", len,
                            CF_CSR_MAX);
    if (!looks_pem(data, len)) {
        *der = data;
        *der_len = (long)len;
        return CF_OK;
    }
    BIO *b = BIO_new_mem_buf(data, (int)len);
    char *name = NULL;
    if (!b)
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    /* PEM_STRING_X509_REQ also accepts "NEW CERTIFICATE REQUEST". */
    int ok = PEM_bytes_read_bio(owned, der_len, &name, PEM_STRING_X509_REQ, b, NULL, NULL);
    BIO_free(b);
    OPENSSL_free(name);
    if (!ok)
        return cf_error_openssl(err, CF_ERR_INVALID,
                                "CSR: PEM does not hold a valid certificate request");
    *der = *owned;
    return CF_OK;
}

/* The request read with the templates: *out (ASN1_item_free with cf_csr_der) from data, PEM
 * or DER, with the same checks and errors as cf_csr_parse. */
static cf_err csr_read_template(const unsigned char *data, size_t len, cf_csr_der **out,
                                cf_error *err)
{
    const unsigned char *der = NULL;
    unsigned char *owned = NULL;
    long der_len = 0;
    cf_err rc = csr_der(data, len, &der, &der_len, &owned, err);
    if (rc != CF_OK)
        return rc;
    const unsigned char *q = der;
    cf_csr_der *req = (cf_csr_der *)ASN1_item_d2i(NULL, &q, der_len, ASN1_ITEM_rptr(cf_csr_der));
    if (!req)
        rc = cf_error_openssl(err, CF_ERR_INVALID,
                              "CSR: not a PEM or DER certificate request (truncated or"
                              " malformed)");
    else if (!owned && q != der + der_len) /* as cf_csr_parse: DER input only */
        rc = cf_error_set(err, CF_ERR_INVALID, "CSR: %ld unexpected bytes after the DER",
                          der_len - (long)(q - der));
    OPENSSL_free(owned);
    if (rc != CF_OK) {
        ASN1_item_free((ASN1_VALUE *)req, ASN1_ITEM_rptr(cf_csr_der));
        return rc;
    }
    *out = req;
    return CF_OK;
}

cf_err cf_csr_parse_check(cf_csr_parser *p, const unsigned char *data, size_t len,
                          X509_PUBKEY **spki, EVP_PKEY **pub, char *keydesc, size_t keydesc_len,
                          cf_error *err)
{
    cf_csr_der *req = NULL;
    EVP_PKEY *k = NULL;
    cf_err rc = csr_read_template(data, len, &req, err);
    if (rc != CF_OK)
        return rc;
    if ((rc = decode_key(p, req->info->spki, &k, err)) != CF_OK)
        goto out;
    if ((rc = cf_key_check_policy(k, keydesc, keydesc_len, err)) != CF_OK) {
        cf_error_prefix(err, "CSR");
        goto out;
    }
    if (ASN1_item_verify_ex(ASN1_ITEM_rptr(cf_csr_info), req->sig_alg, req->signature, req->info,
                            NULL, k, NULL, NULL) != 1) {
        rc = cf_error_openssl(err, CF_ERR_INVALID,
                              "CSR: signature does not verify (proof of possession failed)");
        goto out;
    }
    if ((rc = spki_copy(req->info->spki, spki, err)) != CF_OK)
        goto out;
    *pub = k;
    k = NULL;
out:
    EVP_PKEY_free(k);
    ASN1_item_free((ASN1_VALUE *)req, ASN1_ITEM_rptr(cf_csr_der));
    return rc;
}

/* The extensionRequest attribute (RFC 2985 5.4.2; also Microsoft's OID), as
 * X509_REQ_get_extensions reads it. NULL when there is none. */
static STACK_OF(X509_EXTENSION) * requested_extensions(const cf_csr_info *info)
{
    for (int i = 0; i < sk_X509_ATTRIBUTE_num(info->attributes); i++) {
        X509_ATTRIBUTE *a = sk_X509_ATTRIBUTE_value(info->attributes, i);
        int nid = OBJ_obj2nid(X509_ATTRIBUTE_get0_object(a));
        if (nid != NID_ext_req && nid != NID_ms_ext_req)
            continue;
        ASN1_TYPE *t = X509_ATTRIBUTE_get0_type(a, 0);
        if (!t || t->type != V_ASN1_SEQUENCE)
            return NULL;
        const unsigned char *q = t->value.sequence->data;
        return d2i_X509_EXTENSIONS(NULL, &q, t->value.sequence->length);
    }
    return NULL;
}

cf_err cf_csr_view_read(const unsigned char *data, size_t len, cf_csr_view *out, cf_error *err)
{
    cf_csr_der *req = NULL;
    memset(out, 0, sizeof *out);
    cf_err rc = csr_read_template(data, len, &req, err);
    if (rc != CF_OK)
        return rc;
    if (!(out->subject = X509_NAME_dup(req->info->subject)))
        rc = cf_error_openssl(err, CF_ERR_NOMEM, "CSR: cannot copy the subject");
    else if ((rc = spki_copy(req->info->spki, &out->spki, err)) == CF_OK)
        out->exts = requested_extensions(req->info);
    ASN1_item_free((ASN1_VALUE *)req, ASN1_ITEM_rptr(cf_csr_der));
    if (rc != CF_OK)
        cf_csr_view_clear(out);
    return rc;
}

void cf_csr_view_clear(cf_csr_view *v)
{
    X509_NAME_free(v->subject);
    sk_X509_EXTENSION_pop_free(v->exts, X509_EXTENSION_free);
    X509_PUBKEY_free(v->spki);
    memset(v, 0, sizeof *v);
}
