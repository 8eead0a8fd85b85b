/* crl.c - CRL entries encoded once, CRLs framed around them (see crl.h). */
#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/x509v3.h>
#include <string.h>
#include <strings.h>

#include "pki/crl.h"
#include "pki/key.h"

static const char *const reason_names[] = {
    "unspecified",   "keyCompromise",        "cACompromise",    "affiliationChanged",
    "superseded",    "cessationOfOperation", "certificateHold", NULL,
    "removeFromCRL", "privilegeWithdrawn",   "aACompromise",
};

#define NREASONS ((int)(sizeof reason_names / sizeof reason_names[0]))

const char *cf_crl_reason_name(int reason)
{
    return reason >= 0 && reason < NREASONS ? reason_names[reason] : NULL;
}

int cf_crl_reason_parse(const char *name)
{
    for (int i = 0; name && i < NREASONS; i++)
        if (reason_names[i] && strcasecmp(reason_names[i], name) == 0)
            return i;
    return -1;
}

/* ---- entries ---- */

static ASN1_INTEGER *serial_from_hex(const char *hex)
{
    BIGNUM *bn = NULL;
    size_t n = strlen(hex);
    if (n == 0 || n > 2 * 20 || BN_hex2bn(&bn, hex) != (int)n) {
        BN_free(bn);
        return NULL;
    }
    ASN1_INTEGER *ai = BN_to_ASN1_INTEGER(bn, NULL);
    BN_free(bn);
    return ai;
}

cf_err cf_crl_entry_encode(const char *serial_hex, int64_t revoked_s, int reason,
                           int64_t invalidity_s, unsigned char **der, size_t *len, cf_error *err)
{
    X509_REVOKED *r = X509_REVOKED_new();
    ASN1_INTEGER *serial = serial_from_hex(serial_hex);
    ASN1_TIME *when = ASN1_TIME_set(NULL, (time_t)revoked_s);
    ASN1_ENUMERATED *code = NULL;
    ASN1_GENERALIZEDTIME *invalid = NULL;
    cf_err rc = CF_OK;
    *der = NULL;
    if (!serial) {
        rc = cf_error_set(err, CF_ERR_INVALID,
                          "CRL entry: serial \"%.48s\" is not hex of at most"
                          " 20 bytes",
                          serial_hex);
        goto out;
    }
    if (!cf_crl_reason_name(reason)) {
        rc = cf_error_set(err, CF_ERR_INVALID, "CRL entry %s: %d is no CRL reason", serial_hex,
                          reason);
        goto out;
    }
    if (!r || !when || !X509_REVOKED_set_serialNumber(r, serial) ||
        !X509_REVOKED_set_revocationDate(r, when))
        goto fail;
    if (reason != CF_CRL_UNSPECIFIED &&
        (!(code = ASN1_ENUMERATED_new()) || !ASN1_ENUMERATED_set(code, reason) ||
         X509_REVOKED_add1_ext_i2d(r, NID_crl_reason, code, 0, 0) != 1))
        goto fail;
    if (invalidity_s && (!(invalid = ASN1_GENERALIZEDTIME_set(NULL, (time_t)invalidity_s)) ||
                         X509_REVOKED_add1_ext_i2d(r, NID_invalidity_date, invalid, 0, 0) != 1))
        goto fail;
    int n = i2d_X509_REVOKED(r, der);
    if (n <= 0)
        goto fail;
    *len = (size_t)n;
    goto out;
fail:
    rc = cf_error_openssl(err, CF_ERR_CRYPTO, "CRL entry %s: encoding", serial_hex);
out:
    ASN1_GENERALIZEDTIME_free(invalid);
    ASN1_ENUMERATED_free(code);
    ASN1_TIME_free(when);
    ASN1_INTEGER_free(serial);
    X509_REVOKED_free(r);
    return rc;
}

/* ---- the header ---- */

static GENERAL_NAMES *uri_names(const char *uri)
{
    GENERAL_NAMES *names = GENERAL_NAMES_new();
    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_IA5STRING *s = ASN1_IA5STRING_new();
    if (!names || !gn || !s || !ASN1_STRING_set(s, uri, -1)) {
        GENERAL_NAMES_free(names);
        GENERAL_NAME_free(gn);
        ASN1_IA5STRING_free(s);
        return NULL;
    }
    GENERAL_NAME_set0_value(gn, GEN_URI, s);
    if (!sk_GENERAL_NAME_push(names, gn)) {
        GENERAL_NAME_free(gn);
        GENERAL_NAMES_free(names);
        return NULL;
    }
    return names;
}

static DIST_POINT_NAME *dp_name(const char *uri)
{
    DIST_POINT_NAME *dpn = DIST_POINT_NAME_new();
    if (!dpn || !(dpn->name.fullname = uri_names(uri))) {
        DIST_POINT_NAME_free(dpn);
        return NULL;
    }
    dpn->type = 0; /* fullName */
    return dpn;
}

static int add_idp(X509_CRL *crl, const char *uri)
{
    ISSUING_DIST_POINT *idp = ISSUING_DIST_POINT_new();
    int ok = idp && (idp->distpoint = dp_name(uri)) != NULL;
    if (ok)
        idp->onlyuser = 0xff; /* BOOLEAN TRUE: a shard holds end-entity certificates only */
    ok = ok && X509_CRL_add1_ext_i2d(crl, NID_issuing_distribution_point, idp, 1, 0) == 1;
    ISSUING_DIST_POINT_free(idp);
    return ok;
}

static int add_freshest(X509_CRL *crl, const char *uri)
{
    CRL_DIST_POINTS *dps = sk_DIST_POINT_new_null();
    DIST_POINT *dp = DIST_POINT_new();
    int ok = dps && dp && (dp->distpoint = dp_name(uri)) != NULL && sk_DIST_POINT_push(dps, dp);
    if (ok)
        dp = NULL;
    ok = ok && X509_CRL_add1_ext_i2d(crl, NID_freshest_crl, dps, 0, 0) == 1;
    DIST_POINT_free(dp);
    sk_DIST_POINT_pop_free(dps, DIST_POINT_free);
    return ok;
}

static int add_integer_ext(X509_CRL *crl, int nid, int64_t v, int critical)
{
    ASN1_INTEGER *ai = ASN1_INTEGER_new();
    int ok = ai && ASN1_INTEGER_set_int64(ai, v) &&
             X509_CRL_add1_ext_i2d(crl, nid, ai, critical, 0) == 1;
    ASN1_INTEGER_free(ai);
    return ok;
}

static int add_akid(X509_CRL *crl, X509 *ca)
{
    const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(ca);
    AUTHORITY_KEYID *akid = AUTHORITY_KEYID_new();
    int ok = ski && akid && (akid->keyid = ASN1_OCTET_STRING_dup(ski)) != NULL &&
             X509_CRL_add1_ext_i2d(crl, NID_authority_key_identifier, akid, 0, 0) == 1;
    AUTHORITY_KEYID_free(akid);
    return ok;
}

/* The TBSCertList of the CRL without entries, as OpenSSL encodes it once signed (which also
 * puts the signature algorithm into it). *tbs: OPENSSL_free. */
static cf_err header_encode(X509 *ca, EVP_PKEY *key, const EVP_MD *md, const cf_crl_params *p,
                            unsigned char **tbs, int *tbs_len, X509_ALGOR **alg, cf_error *err)
{
    X509_CRL *crl = X509_CRL_new();
    ASN1_TIME *t1 = ASN1_TIME_set(NULL, (time_t)p->this_update);
    ASN1_TIME *t2 = ASN1_TIME_set(NULL, (time_t)p->next_update);
    cf_err rc = CF_OK;
    const X509_ALGOR *palg;
    if (!crl || !t1 || !t2 || !X509_CRL_set_version(crl, X509_CRL_VERSION_2) ||
        !X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca)) ||
        !X509_CRL_set1_lastUpdate(crl, t1) || !X509_CRL_set1_nextUpdate(crl, t2) ||
        !add_akid(crl, ca) || !add_integer_ext(crl, NID_crl_number, p->number, 0) ||
        (p->delta_base && !add_integer_ext(crl, NID_delta_crl, p->delta_base, 1)) ||
        (p->idp_uri && !add_idp(crl, p->idp_uri)) ||
        (p->freshest_uri && !p->delta_base && !add_freshest(crl, p->freshest_uri)) ||
        X509_CRL_sign(crl, key, md) <= 0) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "CRL header");
        goto out;
    }
    X509_CRL_get0_signature(crl, NULL, &palg);
    if ((*tbs_len = i2d_re_X509_CRL_tbs(crl, tbs)) <= 0 || !(*alg = X509_ALGOR_dup(palg)))
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "CRL header: encoding");
out:
    ASN1_TIME_free(t1);
    ASN1_TIME_free(t2);
    X509_CRL_free(crl);
    return rc;
}

/* Where the entries go in an entry-less TBSCertList: after version, signature, issuer,
 * thisUpdate and nextUpdate, before the [0] extensions. *content: where the TBS's content
 * starts. Returns the offset, or -1 when the encoding is not the one expected. */
static long entries_offset(const unsigned char *tbs, long len, long *content)
{
    const unsigned char *p = tbs;
    long n;
    int tag, cls;
    if (ASN1_get_object(&p, &n, &tag, &cls, len) & 0x80 || tag != V_ASN1_SEQUENCE)
        return -1;
    *content = (long)(p - tbs);
    for (int i = 0; i < 5; i++) {
        const unsigned char *q = p;
        if (ASN1_get_object(&q, &n, &tag, &cls, len - (p - tbs)) & 0x80)
            return -1;
        p = q + n;
    }
    return (long)(p - tbs);
}

/* ---- the CRL ---- */

cf_err cf_crl_build(X509 *ca, EVP_PKEY *key, const cf_crl_params *p, const cf_crl_piece *pieces,
                    size_t npieces, unsigned char **der, size_t *der_len, cf_error *err)
{
    const EVP_MD *md = cf_key_digest(key);
    unsigned char *head = NULL, *out = NULL, *sig = NULL, *w;
    X509_ALGOR *alg = NULL;
    ASN1_BIT_STRING *bits = NULL;
    EVP_MD_CTX *mc = NULL;
    int head_len = 0;
    long content, at;
    size_t entries = 0, siglen = 0;
    cf_err rc;

    *der = NULL;
    for (size_t i = 0; i < npieces; i++)
        entries += pieces[i].len;
    if (entries > (size_t)1 << 31)
        return cf_error_set(err, CF_ERR_INVALID, "CRL: %zu bytes of entries is too many", entries);
    if ((rc = header_encode(ca, key, md, p, &head, &head_len, &alg, err)) != CF_OK)
        goto out;
    if ((at = entries_offset(head, head_len, &content)) < 0) {
        rc = cf_error_set(err, CF_ERR_INTERNAL, "CRL header: unexpected encoding");
        goto out;
    }
    /* RFC 5280 5.1.2.6: no entries, no revokedCertificates at all. */
    int list_len = entries ? ASN1_object_size(1, (int)entries, V_ASN1_SEQUENCE) : 0;
    int body = (int)(head_len - content) + list_len;
    int tbs_len = ASN1_object_size(1, body, V_ASN1_SEQUENCE);
    int alg_len = i2d_X509_ALGOR(alg, NULL);
    if (list_len < 0 || tbs_len <= 0 || alg_len <= 0) {
        rc = cf_error_set(err, CF_ERR_INTERNAL, "CRL: size");
        goto out;
    }
    /* Room for the CertificateList header (at most 6 bytes), the TBS, the algorithm and a
     * signature bit string of up to 1024 bytes; the TBS is written at 6 and signed in place. */
    size_t cap = 6 + (size_t)tbs_len + (size_t)alg_len + 1030;
    if (!(out = OPENSSL_malloc(cap))) {
        rc = cf_error_set(err, CF_ERR_NOMEM, "CRL: out of memory for %zu bytes", cap);
        goto out;
    }
    unsigned char *tbs = out + 6;
    w = tbs;
    ASN1_put_object(&w, 1, body, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
    memcpy(w, head + content, (size_t)(at - content));
    w += at - content;
    if (entries) {
        ASN1_put_object(&w, 1, (int)entries, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
        for (size_t i = 0; i < npieces; i++) {
            memcpy(w, pieces[i].data, pieces[i].len);
            w += pieces[i].len;
        }
    }
    memcpy(w, head + at, (size_t)(head_len - at));
    w += head_len - at;
    if (w != tbs + tbs_len || !(mc = EVP_MD_CTX_new()) ||
        EVP_DigestSignInit(mc, NULL, md, NULL, key) != 1 ||
        EVP_DigestSign(mc, NULL, &siglen, tbs, (size_t)tbs_len) != 1 ||
        !(sig = OPENSSL_malloc(siglen)) ||
        EVP_DigestSign(mc, sig, &siglen, tbs, (size_t)tbs_len) != 1 ||
        !(bits = ASN1_BIT_STRING_new()) || !ASN1_BIT_STRING_set(bits, sig, (int)siglen)) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "CRL: signature");
        goto out;
    }
    bits->flags &= ~(ASN1_STRING_FLAG_BITS_LEFT | 0x07); /* no unused bits */
    bits->flags |= ASN1_STRING_FLAG_BITS_LEFT;
    int bits_len = i2d_ASN1_BIT_STRING(bits, NULL);
    int total_body = tbs_len + alg_len + bits_len;
    int total = ASN1_object_size(1, total_body, V_ASN1_SEQUENCE);
    int hdr = total - total_body;
    if (bits_len <= 0 || bits_len > 1030 || hdr > 6) {
        rc = cf_error_set(err, CF_ERR_INTERNAL, "CRL: size");
        goto out;
    }
    w = tbs + tbs_len;
    i2d_X509_ALGOR(alg, &w);
    i2d_ASN1_BIT_STRING(bits, &w);
    unsigned char *start = tbs - hdr;
    w = start;
    ASN1_put_object(&w, 1, total_body, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
    if (start != out)
        memmove(out, start, (size_t)total);
    *der = out;
    *der_len = (size_t)total;
    out = NULL;
out:
    OPENSSL_free(out);
    OPENSSL_free(head);
    OPENSSL_free(sig);
    ASN1_BIT_STRING_free(bits);
    X509_ALGOR_free(alg);
    EVP_MD_CTX_free(mc);
    return rc;
}
