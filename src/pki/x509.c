#include "pki/x509.h"

#include <arpa/inet.h>
#include <limits.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/util.h"
#include "pki/der.h"
#include "pki/key.h"

/* Certificates start five minutes in the past, so a device whose clock runs a little
 * behind does not reject a certificate it has just received. */
#define BACKDATE_SECONDS 300

struct cf_issuer {
    X509 *cert;
    EVP_PKEY *key;
    const EVP_MD *md;
    X509_EXTENSION *aki, *crldp, *aia; /* shared by every certificate issued */
    X509_EXTENSION *freshest;          /* device certificates: where the delta CRL is */
    char *crl_base;                    /* BASE/crl/CA_NAME: a shard's CRL is CRL_BASE-sN.crl */
    int64_t not_after;
    /* Initialised once and copied for each signature: OpenSSL 3.0 fetches the digest and
     * signature implementations on every init, which costs more than copying. NULL when
     * the key's implementation cannot copy contexts (an engine's key: each signature then
     * initialises its own context). */
    EVP_MD_CTX *sign_ctx;
    /* A device certificate is framed from the DER of its parts (device_der); these parts
     * are the same in every one, encoded once by OpenSSL's encoders. */
    unsigned char *alg_der;   /* the signature AlgorithmIdentifier */
    unsigned char *name_der;  /* the issuer Name */
    unsigned char *head_der;  /* basicConstraints, keyUsage, extendedKeyUsage */
    unsigned char *tail_der;  /* AKI, CRL distribution point, Freshest CRL, AIA */
    unsigned char *shard_der; /* AKI, shard shard_no's distribution point, AIA */
    int alg_der_len, name_der_len, head_der_len, tail_der_len, shard_der_len;
    int64_t shard_no;
};

static X509_EXTENSION *conf_ext(X509 *issuer, int nid, const char *value);
static char *name_line(const X509_NAME *name);

static int ext_list_der(const X509_EXTENSION *const *exts, int n, unsigned char **der);

/* The extensions after the subject key identifier in a certificate of CRL shard n: AKI,
 * the shard's distribution point, AIA. Made once per shard (an issuer fills one shard at a
 * time); 0 when OpenSSL fails. */
static int shard_tail(cf_issuer *iss, int64_t n)
{
    if (iss->shard_der && iss->shard_no == n)
        return 1;
    char value[2100];
    snprintf(value, sizeof value, "URI:%s-s%lld.crl", iss->crl_base, (long long)n);
    X509_EXTENSION *dp = conf_ext(iss->cert, NID_crl_distribution_points, value);
    const X509_EXTENSION *exts[] = {iss->aki, dp, iss->aia};
    OPENSSL_free(iss->shard_der);
    iss->shard_der = NULL;
    iss->shard_der_len = dp ? ext_list_der(exts, 3, &iss->shard_der) : 0;
    iss->shard_no = n;
    X509_EXTENSION_free(dp);
    return iss->shard_der_len > 0;
}

static cf_err set_name(X509_NAME *name, const char *org, const char *cn, cf_error *err)
{
    if ((org && *org &&
         !X509_NAME_add_entry_by_NID(name, NID_organizationName, MBSTRING_UTF8,
                                     (const unsigned char *)org, -1, -1, 0)) ||
        !X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8, (const unsigned char *)cn,
                                    -1, -1, 0))
        return cf_error_openssl(err, CF_ERR_INVALID, "cannot encode subject name");
    return CF_OK;
}

/* A fresh 128-bit positive serial (RFC 5280 4.1.2.2) as an INTEGER, its hex in hex_out
 * when not NULL. *out: ASN1_INTEGER_free. */
static cf_err new_serial(ASN1_INTEGER **out, char *hex_out, cf_error *err)
{
    unsigned char raw[CF_SERIAL_BYTES];
    do {
        if (cf_random_bytes(raw, sizeof raw, err) != CF_OK)
            return CF_ERR_CRYPTO;
    } while (raw[0] == 0); /* keep the full 128 bits: no leading zero byte */
    /* An ASN1_INTEGER holds the magnitude; its encoder adds the sign octet. */
    if (!(*out = ASN1_INTEGER_new()) || !ASN1_STRING_set(*out, raw, sizeof raw)) {
        ASN1_INTEGER_free(*out);
        *out = NULL;
        return cf_error_openssl(err, CF_ERR_CRYPTO, "cannot make a serial number");
    }
    if (hex_out)
        cf_hex_encode(raw, sizeof raw, 1, hex_out);
    return CF_OK;
}

static cf_err random_serial(X509 *x, char *hex_out, cf_error *err)
{
    ASN1_INTEGER *ai = NULL;
    cf_err rc = new_serial(&ai, hex_out, err);
    if (rc == CF_OK && !X509_set_serialNumber(x, ai))
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot set serial number");
    ASN1_INTEGER_free(ai);
    return rc;
}

/* notBefore (backdated) and notAfter for a validity of days, notAfter capped at cap. */
static void validity(int64_t cap, int days, time_t *nb, time_t *na)
{
    int64_t now = (int64_t)time(NULL);
    int64_t end = now + (int64_t)days * 86400;
    *nb = (time_t)(now - BACKDATE_SECONDS);
    *na = (time_t)(cap && end > cap ? cap : end);
}

static cf_err set_validity(X509 *x, int64_t not_after_cap, int days, cf_error *err)
{
    time_t nb, na;
    validity(not_after_cap, days, &nb, &na);
    if (!ASN1_TIME_set(X509_getm_notBefore(x), nb) || !ASN1_TIME_set(X509_getm_notAfter(x), na))
        return cf_error_openssl(err, CF_ERR_CRYPTO, "cannot set validity");
    return CF_OK;
}

/* Adds an extension given in OpenSSL's configuration syntax; only for the CA certificates,
 * made once, where clarity beats speed. */
static cf_err add_conf_ext(X509 *x, X509 *issuer, int nid, const char *value, cf_error *err)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!ext || !X509_add_ext(x, ext, -1)) {
        X509_EXTENSION_free(ext);
        return cf_error_openssl(err, CF_ERR_CRYPTO, "cannot add extension %s", OBJ_nid2sn(nid));
    }
    X509_EXTENSION_free(ext);
    return CF_OK;
}

static cf_err make_ca(X509 *issuer, EVP_PKEY *issuer_key, EVP_PKEY *key, const char *org,
                      const char *cn, int days, int pathlen, X509 **out, cf_error *err)
{
    X509 *x = X509_new();
    cf_err rc;
    char bc[64];
    if (!x)
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    if (!X509_set_version(x, X509_VERSION_3) || !X509_set_pubkey(x, key)) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot build CA certificate");
        goto fail;
    }
    if ((rc = random_serial(x, NULL, err)) != CF_OK ||
        (rc = set_name(X509_get_subject_name(x), org, cn, err)) != CF_OK)
        goto fail;
    if (!X509_set_issuer_name(x,
                              issuer ? X509_get_subject_name(issuer) : X509_get_subject_name(x))) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot set issuer");
        goto fail;
    }
    if ((rc = set_validity(x, issuer ? cf_x509_not_after(issuer) : 0, days, err)) != CF_OK)
        goto fail;
    snprintf(bc, sizeof bc, "critical,CA:TRUE,pathlen:%d", pathlen);
    if ((rc = add_conf_ext(x, issuer, NID_basic_constraints, bc, err)) != CF_OK ||
        (rc = add_conf_ext(x, issuer, NID_key_usage, "critical,keyCertSign,cRLSign", err)) !=
            CF_OK ||
        (rc = add_conf_ext(x, issuer, NID_subject_key_identifier, "hash", err)) != CF_OK)
        goto fail;
    if (issuer &&
        (rc = add_conf_ext(x, issuer, NID_authority_key_identifier, "keyid:always", err)) != CF_OK)
        goto fail;
    EVP_PKEY *signer = issuer_key ? issuer_key : key;
    if (X509_sign(x, signer, cf_key_digest(signer)) <= 0) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot sign CA certificate %s", cn);
        goto fail;
    }
    *out = x;
    return CF_OK;
fail:
    X509_free(x);
    return rc;
}

cf_err cf_x509_make_root(EVP_PKEY *key, const char *org, const char *cn, int days, X509 **out,
                         cf_error *err)
{
    return make_ca(NULL, NULL, key, org, cn, days, 1, out, err);
}

cf_err cf_x509_make_issuing(X509 *root, EVP_PKEY *root_key, EVP_PKEY *key, const char *org,
                            const char *cn, int days, X509 **out, cf_error *err)
{
    return make_ca(root, root_key, key, org, cn, days, 0, out, err);
}

/* ---- the issuer and the device profile ---- */

static X509_EXTENSION *conf_ext(X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer, NULL, NULL, NULL, 0);
    return X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
}

static int ext_list_der(const X509_EXTENSION *const *exts, int n, unsigned char **der)
{
    cf_der b = {0};
    for (int i = 0; i < n; i++)
        cf_der_item(&b, exts[i], ASN1_ITEM_rptr(X509_EXTENSION));
    return cf_der_finish(&b, der);
}

/* ---- the issuer ---- */

/* The AlgorithmIdentifier of key's signatures with md, as X509_sign writes it: NULL
 * parameters for RSA (RFC 4055 5), none for ECDSA (RFC 5758 3.2) or EdDSA (RFC 8410 3). */
static int sig_alg_der(EVP_PKEY *key, const EVP_MD *md, unsigned char **der)
{
    int sig_nid, n = 0, base = EVP_PKEY_get_base_id(key);
    X509_ALGOR *alg = X509_ALGOR_new();
    if (alg && OBJ_find_sigid_by_algs(&sig_nid, md ? EVP_MD_get_type(md) : NID_undef, base) &&
        X509_ALGOR_set0(alg, OBJ_nid2obj(sig_nid),
                        base == EVP_PKEY_RSA ? V_ASN1_NULL : V_ASN1_UNDEF, NULL))
        n = i2d_X509_ALGOR(alg, der);
    X509_ALGOR_free(alg);
    return n;
}

/* basicConstraints CA:FALSE and keyUsage digitalSignature, both critical, and
 * extendedKeyUsage clientAuth: the device profile's constant extensions. */
static int device_head_der(unsigned char **der)
{
    cf_der b = {0};
    BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
    ASN1_BIT_STRING *ku = ASN1_BIT_STRING_new();
    EXTENDED_KEY_USAGE *eku = sk_ASN1_OBJECT_new_null();
    if (!bc || !ku || !eku || !ASN1_BIT_STRING_set_bit(ku, 0, 1) ||
        !sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_client_auth)))
        b.failed = 1;
    else
        bc->ca = 0;
    cf_der_ext(&b, NID_basic_constraints, 1, bc);
    cf_der_ext(&b, NID_key_usage, 1, ku);
    cf_der_ext(&b, NID_ext_key_usage, 0, eku);
    BASIC_CONSTRAINTS_free(bc);
    ASN1_BIT_STRING_free(ku);
    sk_ASN1_OBJECT_free(eku); /* the object from OBJ_nid2obj is static */
    return cf_der_finish(&b, der);
}

cf_err cf_issuer_new(X509 *cert, EVP_PKEY *key, const char *ca_name, const char *base_url,
                     cf_issuer **out, cf_error *err)
{
    cf_issuer *iss = calloc(1, sizeof *iss);
    if (!iss)
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    X509_up_ref(cert);
    EVP_PKEY_up_ref(key);
    iss->cert = cert;
    iss->key = key;
    iss->md = cf_key_digest(key);
    iss->not_after = cf_x509_not_after(cert);
    if (iss->md && EVP_PKEY_get0_provider(key) != NULL) { /* not an engine (PKCS#11) key */
        iss->sign_ctx = EVP_MD_CTX_new();
        if (!iss->sign_ctx || EVP_DigestSignInit(iss->sign_ctx, NULL, iss->md, NULL, key) != 1) {
            EVP_MD_CTX_free(iss->sign_ctx);
            iss->sign_ctx = NULL;
            ERR_clear_error();
        }
    }

    char value[2048];
    const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(cert);
    if (ski) {
        AUTHORITY_KEYID *akid = AUTHORITY_KEYID_new();
        if (akid) {
            akid->keyid = ASN1_OCTET_STRING_dup(ski);
            iss->aki = X509V3_EXT_i2d(NID_authority_key_identifier, 0, akid);
            AUTHORITY_KEYID_free(akid);
        }
    }
    snprintf(value, sizeof value, "URI:%s/crl/%s.crl", base_url, ca_name);
    iss->crldp = conf_ext(cert, NID_crl_distribution_points, value);
    snprintf(value, sizeof value, "OCSP;URI:%s/ocsp,caIssuers;URI:%s/ca/%s.crt", base_url, base_url,
             ca_name);
    iss->aia = conf_ext(cert, NID_info_access, value);
    snprintf(value, sizeof value, "URI:%s/crl/%s-delta.crl", base_url, ca_name);
    iss->freshest = conf_ext(cert, NID_freshest_crl, value);
    snprintf(value, sizeof value, "%s/crl/%s", base_url, ca_name);
    iss->crl_base = strdup(value);
    if (iss->aki && iss->crldp && iss->aia && iss->freshest) {
        const X509_EXTENSION *tail[] = {iss->aki, iss->crldp, iss->freshest, iss->aia};
        iss->tail_der_len = ext_list_der(tail, 4, &iss->tail_der);
    }
    iss->alg_der_len = sig_alg_der(key, iss->md, &iss->alg_der);
    iss->name_der_len = i2d_X509_NAME(X509_get_subject_name(cert), &iss->name_der);
    iss->head_der_len = device_head_der(&iss->head_der);
    if (!iss->crl_base || iss->tail_der_len <= 0 || iss->alg_der_len <= 0 ||
        iss->name_der_len <= 0 || iss->head_der_len <= 0) {
        cf_issuer_free(iss);
        return cf_error_openssl(err, CF_ERR_CRYPTO,
                                "cannot prepare issuer %s (does it have a subject key id, and"
                                " is the base URL %s valid?)",
                                ca_name, base_url);
    }
    *out = iss;
    return CF_OK;
}

void cf_issuer_free(cf_issuer *iss)
{
    if (!iss)
        return;
    X509_free(iss->cert);
    EVP_PKEY_free(iss->key);
    EVP_MD_CTX_free(iss->sign_ctx);
    X509_EXTENSION_free(iss->aki);
    X509_EXTENSION_free(iss->crldp);
    X509_EXTENSION_free(iss->aia);
    X509_EXTENSION_free(iss->freshest);
    OPENSSL_free(iss->alg_der);
    OPENSSL_free(iss->name_der);
    OPENSSL_free(iss->head_der);
    OPENSSL_free(iss->tail_der);
    OPENSSL_free(iss->shard_der);
    free(iss->crl_base);
    free(iss);
}

X509 *cf_issuer_cert(const cf_issuer *iss)
{
    return iss->cert;
}

static int issuer_sign(cf_issuer *iss, X509 *x)
{
    if (iss->sign_ctx) {
        EVP_MD_CTX *c = EVP_MD_CTX_new();
        int ok = c && EVP_MD_CTX_copy_ex(c, iss->sign_ctx) && X509_sign_ctx(x, c) > 0;
        EVP_MD_CTX_free(c);
        if (ok)
            return 1;
        ERR_clear_error();
    }
    return X509_sign(x, iss->key, iss->md);
}

/* The issuer's signature over data. *sig: OPENSSL_free. */
static int sign_bytes(cf_issuer *iss, const unsigned char *data, size_t len, unsigned char **sig,
                      size_t *siglen)
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    int ok = c != NULL;
    if (ok && !(iss->sign_ctx && EVP_MD_CTX_copy_ex(c, iss->sign_ctx))) {
        ERR_clear_error();
        ok = EVP_MD_CTX_reset(c) && EVP_DigestSignInit(c, NULL, iss->md, NULL, iss->key) == 1;
    }
    *sig = NULL;
    ok = ok && EVP_DigestSign(c, NULL, siglen, data, len) == 1 &&
         (*sig = OPENSSL_malloc(*siglen)) != NULL &&
         EVP_DigestSign(c, *sig, siglen, data, len) == 1;
    EVP_MD_CTX_free(c);
    return ok;
}

/* ---- device certificates ---- */

/* The device certificate's DER (RFC 5280 4.1), assembled from parts encoded by OpenSSL:
 * those every device certificate shares were encoded when the issuer was made, so only
 * the serial, validity, subject, key, SAN and SKI are encoded here. This is the issuance
 * hot path: building an X509 and encoding it costs more than the signature. */
static cf_err device_der(cf_issuer *iss, const X509_PUBKEY *spki, const cf_device_profile *profile,
                         cf_signed_cert *out, cf_error *err)
{
    cf_der b = {0};
    ASN1_INTEGER *serial = NULL, *version = ASN1_INTEGER_new();
    ASN1_TIME *nb = NULL, *na = NULL;
    X509_NAME *subject = X509_NAME_new();
    GENERAL_NAMES *san = GENERAL_NAMES_new();
    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_IA5STRING *uri = ASN1_IA5STRING_new();
    ASN1_OCTET_STRING *ski = ASN1_OCTET_STRING_new();
    ASN1_BIT_STRING *sigbits = ASN1_BIT_STRING_new();
    unsigned char md[SHA_DIGEST_LENGTH], *sig = NULL;
    const unsigned char *keybits;
    int nkeybits;
    size_t siglen = 0;
    time_t not_before, not_after;
    char urn[512];
    cf_err rc;

    if (!version || !subject || !san || !gn || !uri || !ski || !sigbits) {
        rc = cf_error_set(err, CF_ERR_NOMEM, "out of memory");
        goto out;
    }
    memset(out, 0, sizeof *out);
    if ((rc = new_serial(&serial, out->serial, err)) != CF_OK ||
        (rc = set_name(subject, profile->org, profile->device_id, err)) != CF_OK)
        goto out;
    if (profile->crl_shard && !shard_tail(iss, profile->crl_shard)) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO,
                              "cannot encode the distribution point of CRL"
                              " shard %lld",
                              (long long)profile->crl_shard);
        goto out;
    }
    validity(iss->not_after, profile->days, &not_before, &not_after);
    out->not_before = (int64_t)not_before;
    out->not_after = (int64_t)not_after;
    snprintf(urn, sizeof urn, "urn:certfleet:device:%s", profile->device_id);
    /* SKI: RFC 5280 4.2.1.2 method (1), SHA-1 of the subjectPublicKey BIT STRING. */
    if (!ASN1_INTEGER_set(version, X509_VERSION_3) || !(nb = ASN1_TIME_set(NULL, not_before)) ||
        !(na = ASN1_TIME_set(NULL, not_after)) || !ASN1_STRING_set(uri, urn, -1) ||
        !X509_PUBKEY_get0_param(NULL, &keybits, &nkeybits, NULL, spki) || nkeybits <= 0 ||
        !SHA1(keybits, (size_t)nkeybits, md) || !ASN1_OCTET_STRING_set(ski, md, sizeof md)) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot build certificate");
        goto out;
    }
    GENERAL_NAME_set0_value(gn, GEN_URI, uri);
    uri = NULL;
    if (!sk_GENERAL_NAME_push(san, gn))
        b.failed = 1;
    else
        gn = NULL;

    /* TBSCertificate ::= SEQUENCE { version [0], serialNumber, signature, issuer, validity,
     * subject, subjectPublicKeyInfo, extensions [3] } */
    cf_der_item(&b, version, ASN1_ITEM_rptr(ASN1_INTEGER));
    cf_der_wrap(&b, 0, 0, V_ASN1_CONTEXT_SPECIFIC);
    cf_der_item(&b, serial, ASN1_ITEM_rptr(ASN1_INTEGER));
    cf_der_put(&b, iss->alg_der, (size_t)iss->alg_der_len);
    cf_der_put(&b, iss->name_der, (size_t)iss->name_der_len);
    size_t at = b.len;
    cf_der_item(&b, nb, ASN1_ITEM_rptr(ASN1_TIME));
    cf_der_item(&b, na, ASN1_ITEM_rptr(ASN1_TIME));
    cf_der_wrap(&b, at, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
    cf_der_item(&b, subject, ASN1_ITEM_rptr(X509_NAME));
    cf_der_item(&b, spki, ASN1_ITEM_rptr(X509_PUBKEY));
    at = b.len;
    cf_der_put(&b, iss->head_der, (size_t)iss->head_der_len);
    cf_der_ext(&b, NID_subject_alt_name, 0, san);
    cf_der_ext(&b, NID_subject_key_identifier, 0, ski);
    if (profile->crl_shard)
        cf_der_put(&b, iss->shard_der, (size_t)iss->shard_der_len);
    else
        cf_der_put(&b, iss->tail_der, (size_t)iss->tail_der_len);
    cf_der_wrap(&b, at, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
    cf_der_wrap(&b, at, 3, V_ASN1_CONTEXT_SPECIFIC);
    cf_der_wrap(&b, 0, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
    if (b.failed) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot encode certificate");
        goto out;
    }
    if (!sign_bytes(iss, b.p, b.len, &sig, &siglen) ||
        !ASN1_BIT_STRING_set(sigbits, sig, (int)siglen)) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot sign certificate");
        goto out;
    }
    sigbits->flags &= ~(ASN1_STRING_FLAG_BITS_LEFT | 0x07); /* no unused bits */
    sigbits->flags |= ASN1_STRING_FLAG_BITS_LEFT;
    /* Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue } */
    cf_der_put(&b, iss->alg_der, (size_t)iss->alg_der_len);
    cf_der_item(&b, sigbits, ASN1_ITEM_rptr(ASN1_BIT_STRING));
    cf_der_wrap(&b, 0, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
    int n = cf_der_finish(&b, &out->der);
    if (n <= 0 || !(out->subject = name_line(subject))) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot encode certificate");
        goto out;
    }
    out->der_len = (size_t)n;
    rc = CF_OK;
out:
    OPENSSL_free(b.p);
    OPENSSL_free(sig);
    ASN1_INTEGER_free(version);
    ASN1_INTEGER_free(serial);
    ASN1_TIME_free(nb);
    ASN1_TIME_free(na);
    X509_NAME_free(subject);
    GENERAL_NAMES_free(san);
    GENERAL_NAME_free(gn);
    ASN1_IA5STRING_free(uri);
    ASN1_OCTET_STRING_free(ski);
    ASN1_BIT_STRING_free(sigbits);
    if (rc != CF_OK)
        cf_signed_cert_clear(out);
    return rc;
}

cf_err cf_issuer_sign_device_spki(cf_issuer *iss, const X509_PUBKEY *spki,
                                  const cf_device_profile *profile, cf_signed_cert *out,
                                  cf_error *err)
{
    return device_der(iss, spki, profile, out, err);
}

cf_err cf_issuer_sign_device(cf_issuer *iss, EVP_PKEY *pub, const cf_device_profile *profile,
                             X509 **out, char serial_hex[CF_SERIAL_HEX_MAX], cf_error *err)
{
    X509_PUBKEY *spki = NULL;
    cf_signed_cert c;
    if (!X509_PUBKEY_set(&spki, pub))
        return cf_error_openssl(err, CF_ERR_CRYPTO, "cannot encode the device's public key");
    cf_err rc = device_der(iss, spki, profile, &c, err);
    X509_PUBKEY_free(spki);
    if (rc == CF_OK && (rc = cf_x509_from_der(c.der, c.der_len, out, err)) == CF_OK)
        memcpy(serial_hex, c.serial, CF_SERIAL_HEX_MAX);
    cf_signed_cert_clear(&c);
    return rc;
}

void cf_signed_cert_clear(cf_signed_cert *c)
{
    OPENSSL_free(c->der);
    free(c->subject);
    memset(c, 0, sizeof *c);
}

static int add_server_exts(X509 *x, const char *const *names, int nnames)
{
    int ok = 0;
    BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
    ASN1_BIT_STRING *ku = ASN1_BIT_STRING_new();
    EXTENDED_KEY_USAGE *eku = sk_ASN1_OBJECT_new_null();
    GENERAL_NAMES *san = GENERAL_NAMES_new();
    if (!bc || !ku || !eku || !san)
        goto out;
    for (int i = 0; i < nnames; i++) {
        unsigned char bin[16];
        ASN1_OCTET_STRING *ip = NULL;
        GENERAL_NAME *gn = GENERAL_NAME_new();
        int len = inet_pton(AF_INET, names[i], bin) == 1    ? 4
                  : inet_pton(AF_INET6, names[i], bin) == 1 ? 16
                                                            : 0;
        if (!gn)
            goto out;
        if (len) {
            if (!(ip = ASN1_OCTET_STRING_new()) || !ASN1_OCTET_STRING_set(ip, bin, len)) {
                ASN1_OCTET_STRING_free(ip);
                GENERAL_NAME_free(gn);
                goto out;
            }
            GENERAL_NAME_set0_value(gn, GEN_IPADD, ip);
        } else {
            ASN1_IA5STRING *dns = ASN1_IA5STRING_new();
            if (!dns || !ASN1_STRING_set(dns, names[i], -1)) {
                ASN1_IA5STRING_free(dns);
                GENERAL_NAME_free(gn);
                goto out;
            }
            GENERAL_NAME_set0_value(gn, GEN_DNS, dns);
        }
        if (!sk_GENERAL_NAME_push(san, gn)) {
            GENERAL_NAME_free(gn);
            goto out;
        }
    }
    bc->ca = 0;
    ok = X509_add1_ext_i2d(x, NID_basic_constraints, bc, 1, X509V3_ADD_DEFAULT) &&
         ASN1_BIT_STRING_set_bit(ku, 0, 1) &&
         X509_add1_ext_i2d(x, NID_key_usage, ku, 1, X509V3_ADD_DEFAULT) &&
         sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_server_auth)) &&
         X509_add1_ext_i2d(x, NID_ext_key_usage, eku, 0, X509V3_ADD_DEFAULT) &&
         X509_add1_ext_i2d(x, NID_subject_alt_name, san, 0, X509V3_ADD_DEFAULT);
out:
    BASIC_CONSTRAINTS_free(bc);
    ASN1_BIT_STRING_free(ku);
    sk_ASN1_OBJECT_free(eku);
    GENERAL_NAMES_free(san);
    return ok;
}

/* The part every certificate of certfleet's own services shares: serial, subject (O org,
 * CN cn), validity, SKI, AKI and the signature; add puts the profile's own extensions. */
static cf_err sign_service(cf_issuer *iss, EVP_PKEY *pub, const char *org, const char *cn, int days,
                           int (*add)(cf_issuer *, X509 *, const void *), const void *arg,
                           const char *what, X509 **out, char serial_hex[CF_SERIAL_HEX_MAX],
                           cf_error *err)
{
    X509 *x = X509_new();
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    ASN1_OCTET_STRING *ski = NULL;
    cf_err rc;
    if (!x)
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    if (!X509_set_version(x, X509_VERSION_3) || !X509_set_pubkey(x, pub) ||
        !X509_set_issuer_name(x, X509_get_subject_name(iss->cert))) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot build %s", what);
        goto fail;
    }
    if ((rc = random_serial(x, serial_hex, err)) != CF_OK ||
        (rc = set_name(X509_get_subject_name(x), org, cn, err)) != CF_OK ||
        (rc = set_validity(x, iss->not_after, days, err)) != CF_OK)
        goto fail;
    if (!add(iss, x, arg) || !X509_pubkey_digest(x, EVP_sha1(), md, &mdlen) ||
        !(ski = ASN1_OCTET_STRING_new()) || !ASN1_OCTET_STRING_set(ski, md, (int)mdlen) ||
        !X509_add1_ext_i2d(x, NID_subject_key_identifier, ski, 0, X509V3_ADD_DEFAULT) ||
        !X509_add_ext(x, iss->aki, -1)) {
        rc = cf_error_openssl(err, CF_ERR_INVALID, "%s: cannot encode the names or extensions",
                              what);
        goto fail;
    }
    if (issuer_sign(iss, x) <= 0) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot sign %s", what);
        goto fail;
    }
    ASN1_OCTET_STRING_free(ski);
    *out = x;
    return CF_OK;
fail:
    ASN1_OCTET_STRING_free(ski);
    X509_free(x);
    return rc;
}

typedef struct {
    const char *const *names;
    int nnames;
} server_names;

static int add_server_profile(cf_issuer *iss, X509 *x, const void *arg)
{
    const server_names *sn = arg;
    return add_server_exts(x, sn->names, sn->nnames) && X509_add_ext(x, iss->crldp, -1) &&
           X509_add_ext(x, iss->aia, -1);
}

cf_err cf_issuer_sign_server(cf_issuer *iss, EVP_PKEY *pub, const char *org,
                             const char *const *names, int nnames, int days, X509 **out,
                             char serial_hex[CF_SERIAL_HEX_MAX], cf_error *err)
{
    if (nnames < 1)
        return cf_error_set(err, CF_ERR_INVALID, "server certificate: no host name");
    server_names sn = {names, nnames};
    return sign_service(iss, pub, org, names[0], days, add_server_profile, &sn,
                        "server certificate", out, serial_hex, err);
}

/* RFC 6960 4.2.2.2: a delegated responder's certificate carries id-kp-OCSPSigning, and with
 * id-pkix-ocsp-nocheck (4.2.2.2.1) clients do not ask about the responder itself. */
static int add_ocsp_profile(cf_issuer *iss, X509 *x, const void *arg)
{
    BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
    ASN1_BIT_STRING *ku = ASN1_BIT_STRING_new();
    EXTENDED_KEY_USAGE *eku = sk_ASN1_OBJECT_new_null();
    ASN1_NULL *nocheck = ASN1_NULL_new();
    int ok = bc && ku && eku && nocheck;
    if (ok)
        bc->ca = 0;
    ok = ok && X509_add1_ext_i2d(x, NID_basic_constraints, bc, 1, X509V3_ADD_DEFAULT) &&
         ASN1_BIT_STRING_set_bit(ku, 0, 1) &&
         X509_add1_ext_i2d(x, NID_key_usage, ku, 1, X509V3_ADD_DEFAULT) &&
         sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_OCSP_sign)) &&
         X509_add1_ext_i2d(x, NID_ext_key_usage, eku, 0, X509V3_ADD_DEFAULT) &&
         X509_add1_ext_i2d(x, NID_id_pkix_OCSP_noCheck, nocheck, 0, X509V3_ADD_DEFAULT);
    BASIC_CONSTRAINTS_free(bc);
    ASN1_BIT_STRING_free(ku);
    sk_ASN1_OBJECT_free(eku);
    ASN1_NULL_free(nocheck);
    return ok;
}

cf_err cf_issuer_sign_ocsp(cf_issuer *iss, EVP_PKEY *pub, const char *org, int days, X509 **out,
                           char serial_hex[CF_SERIAL_HEX_MAX], cf_error *err)
{
    return sign_service(iss, pub, org, "OCSP responder", days, add_ocsp_profile, NULL,
                        "OCSP responder certificate", out, serial_hex, err);
}

/* ---- small accessors ---- */

void cf_x509_serial_hex(X509 *cert, char out[CF_SERIAL_HEX_MAX])
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    snprintf(out, CF_SERIAL_HEX_MAX, "%s", hex ? hex : "");
    OPENSSL_free(hex);
    BN_free(bn);
}

static char *name_line(const X509_NAME *name)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data, *s;
    if (!b || X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253) < 0) {
        BIO_free(b);
        return NULL;
    }
    long n = BIO_get_mem_data(b, &data);
    s = malloc((size_t)n + 1);
    if (s) {
        memcpy(s, data, (size_t)n);
        s[n] = '\0';
    }
    BIO_free(b);
    return s;
}

char *cf_x509_subject_line(X509 *cert)
{
    char *s = name_line(X509_get_subject_name(cert));
    if (!s)
        abort();
    return s;
}

static int64_t asn1_time_epoch(const ASN1_TIME *t)
{
    struct tm tm;
    if (!ASN1_TIME_to_tm(t, &tm))
        return 0;
    return (int64_t)timegm(&tm);
}

int64_t cf_x509_not_before(X509 *cert)
{
    return asn1_time_epoch(X509_get0_notBefore(cert));
}

int64_t cf_x509_not_after(X509 *cert)
{
    return asn1_time_epoch(X509_get0_notAfter(cert));
}

cf_err cf_x509_to_der(X509 *cert, unsigned char **der, size_t *len, cf_error *err)
{
    unsigned char *buf = NULL;
    int n = i2d_X509(cert, &buf);
    if (n <= 0)
        return cf_error_openssl(err, CF_ERR_CRYPTO, "cannot encode certificate");
    *der = buf;
    *len = (size_t)n;
    return CF_OK;
}

cf_err cf_x509_from_der(const unsigned char *der, size_t len, X509 **out, cf_error *err)
{
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    if (!x || (size_t)(p - der) != len) {
        X509_free(x);
        return cf_error_openssl(err, CF_ERR_INVALID, "stored certificate does not decode");
    }
    *out = x;
    return CF_OK;
}

cf_err cf_x509_der_append_pem(const unsigned char *der, size_t der_len, char **buf, size_t *len,
                              cf_error *err)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data;
    if (!b || der_len > INT_MAX || !PEM_write_bio(b, PEM_STRING_X509, "", der, (long)der_len)) {
        BIO_free(b);
        return cf_error_openssl(err, CF_ERR_CRYPTO, "cannot encode certificate as PEM");
    }
    long n = BIO_get_mem_data(b, &data);
    char *nb = realloc(*buf, *len + (size_t)n + 1);
    if (!nb) {
        BIO_free(b);
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    }
    memcpy(nb + *len, data, (size_t)n);
    *len += (size_t)n;
    nb[*len] = '\0';
    *buf = nb;
    BIO_free(b);
    return CF_OK;
}

cf_err cf_x509_append_pem(X509 *cert, char **buf, size_t *len, cf_error *err)
{
    unsigned char *der = NULL;
    size_t der_len = 0;
    cf_err rc = cf_x509_to_der(cert, &der, &der_len, err);
    if (rc == CF_OK)
        rc = cf_x509_der_append_pem(der, der_len, buf, len, err);
    OPENSSL_free(der);
    return rc;
}

/* RFC 7030 4.1.3 and 4.2.3 (a CMC Simple PKI Response, RFC 5272 4.1), RFC 2315 9.1:
 * ContentInfo { signedData, SignedData { version 1, digestAlgorithms {}, contentInfo { data },
 * certificates [0] IMPLICIT, signerInfos {} } }, as i2d_PKCS7 encodes it. */
int cf_x509_certs_only(const unsigned char *const *ders, const size_t *lens, int n,
                       unsigned char **out)
{
    cf_der b = {0};
    ASN1_INTEGER *version = ASN1_INTEGER_new();
    if (!version || !ASN1_INTEGER_set(version, 1))
        b.failed = 1;
    cf_der_item(&b, OBJ_nid2obj(NID_pkcs7_signed), ASN1_ITEM_rptr(ASN1_OBJECT));
    size_t content = b.len;
    cf_der_item(&b, version, ASN1_ITEM_rptr(ASN1_INTEGER));
    cf_der_wrap(&b, b.len, V_ASN1_SET, V_ASN1_UNIVERSAL);
    size_t at = b.len;
    cf_der_item(&b, OBJ_nid2obj(NID_pkcs7_data), ASN1_ITEM_rptr(ASN1_OBJECT));
    cf_der_wrap(&b, at, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
    at = b.len;
    for (int i = 0; i < n; i++)
        cf_der_put(&b, ders[i], lens[i]);
    cf_der_wrap(&b, at, 0, V_ASN1_CONTEXT_SPECIFIC);
    cf_der_wrap(&b, b.len, V_ASN1_SET, V_ASN1_UNIVERSAL);
    cf_der_wrap(&b, content, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
    cf_der_wrap(&b, content, 0, V_ASN1_CONTEXT_SPECIFIC);
    cf_der_wrap(&b, 0, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
    ASN1_INTEGER_free(version);
    return cf_der_finish(&b, out);
}
