#include "pki/x509.h"

#include <arpa/inet.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/util.h"
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
    int64_t shard_no;                  /* the shard whose distribution point shard_dp is */
    X509_EXTENSION *shard_dp;
    int64_t not_after;
    /* Initialised once and copied for each signature: OpenSSL 3.0 fetches the digest and
     * signature implementations on every init, which costs more than copying. NULL when
     * the key's implementation cannot copy contexts (then X509_sign is used). */
    EVP_MD_CTX *sign_ctx;
    /* The signature AlgorithmIdentifier this issuer's signatures carry, as the first
     * certificate signed the standard way set it; with sign_ctx it lets the device path
     * sign and encode the TBSCertificate once (sign_encode). NULL until then. */
    X509_ALGOR *alg;
    unsigned char *alg_der;
    int alg_der_len;
};

static X509_EXTENSION *conf_ext(X509 *issuer, int nid, const char *value);

/* The CRL distribution point of shard n, made once per shard (an issuer fills one shard at
 * a time). NULL when OpenSSL fails. */
static X509_EXTENSION *shard_dp(cf_issuer *iss, int64_t n)
{
    if (iss->shard_dp && iss->shard_no == n)
        return iss->shard_dp;
    char value[2100];
    snprintf(value, sizeof value, "URI:%s-s%lld.crl", iss->crl_base ? iss->crl_base : "",
             (long long)n);
    X509_EXTENSION_free(iss->shard_dp);
    iss->shard_dp = iss->crl_base ? conf_ext(iss->cert, NID_crl_distribution_points, value) : NULL;
    iss->shard_no = n;
    return iss->shard_dp;
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

static cf_err random_serial(X509 *x, char *hex_out, cf_error *err)
{
    unsigned char raw[CF_SERIAL_BYTES];
    do {
        if (cf_random_bytes(raw, sizeof raw, err) != CF_OK)
            return CF_ERR_CRYPTO;
    } while (raw[0] == 0); /* keep the full 128 bits: no leading zero byte */
    BIGNUM *bn = BN_bin2bn(raw, sizeof raw, NULL);
    ASN1_INTEGER *ai = bn ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
    BN_free(bn);
    if (!ai || !X509_set_serialNumber(x, ai)) {
        ASN1_INTEGER_free(ai);
        return cf_error_openssl(err, CF_ERR_CRYPTO, "cannot set serial number");
    }
    ASN1_INTEGER_free(ai);
    if (hex_out)
        cf_hex_encode(raw, sizeof raw, 1, hex_out);
    return CF_OK;
}

static cf_err set_validity(X509 *x, int64_t not_after_cap, int days, cf_error *err)
{
    time_t now = time(NULL);
    int64_t nb = (int64_t)now - BACKDATE_SECONDS;
    int64_t na = (int64_t)now + (int64_t)days * 86400;
    if (not_after_cap && na > not_after_cap)
        na = not_after_cap;
    if (!ASN1_TIME_set(X509_getm_notBefore(x), (time_t)nb) ||
        !ASN1_TIME_set(X509_getm_notAfter(x), (time_t)na))
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
            X509_ALGOR_free(iss->alg);
            OPENSSL_free(iss->alg_der);
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
    if (!iss->aki || !iss->crldp || !iss->aia || !iss->freshest) {
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
    X509_ALGOR_free(iss->alg);
    OPENSSL_free(iss->alg_der);
    X509_EXTENSION_free(iss->aki);
    X509_EXTENSION_free(iss->crldp);
    X509_EXTENSION_free(iss->aia);
    X509_EXTENSION_free(iss->freshest);
    X509_EXTENSION_free(iss->shard_dp);
    free(iss->crl_base);
    free(iss);
}

X509 *cf_issuer_cert(const cf_issuer *iss)
{
    return iss->cert;
}

/* The per-certificate extensions, built from structures (not from configuration strings:
 * this is the issuance hot path). */
static int add_device_exts(X509 *x, const char *device_id)
{
    int ok = 0;
    BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
    ASN1_BIT_STRING *ku = ASN1_BIT_STRING_new();
    EXTENDED_KEY_USAGE *eku = sk_ASN1_OBJECT_new_null();
    GENERAL_NAMES *san = GENERAL_NAMES_new();
    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_IA5STRING *uri = ASN1_IA5STRING_new();
    ASN1_OCTET_STRING *ski = NULL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char urn[512];

    if (!bc || !ku || !eku || !san || !gn || !uri)
        goto out;
    bc->ca = 0;
    if (!X509_add1_ext_i2d(x, NID_basic_constraints, bc, 1, X509V3_ADD_DEFAULT))
        goto out;
    if (!ASN1_BIT_STRING_set_bit(ku, 0, 1) || /* digitalSignature */
        !X509_add1_ext_i2d(x, NID_key_usage, ku, 1, X509V3_ADD_DEFAULT))
        goto out;
    if (!sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_client_auth)) ||
        !X509_add1_ext_i2d(x, NID_ext_key_usage, eku, 0, X509V3_ADD_DEFAULT))
        goto out;
    snprintf(urn, sizeof urn, "urn:certfleet:device:%s", device_id);
    if (!ASN1_STRING_set(uri, urn, -1))
        goto out;
    GENERAL_NAME_set0_value(gn, GEN_URI, uri);
    uri = NULL;
    if (!sk_GENERAL_NAME_push(san, gn))
        goto out;
    gn = NULL;
    if (!X509_add1_ext_i2d(x, NID_subject_alt_name, san, 0, X509V3_ADD_DEFAULT))
        goto out;
    /* RFC 5280 4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING. */
    if (!X509_pubkey_digest(x, EVP_sha1(), md, &mdlen) || !(ski = ASN1_OCTET_STRING_new()) ||
        !ASN1_OCTET_STRING_set(ski, md, (int)mdlen) ||
        !X509_add1_ext_i2d(x, NID_subject_key_identifier, ski, 0, X509V3_ADD_DEFAULT))
        goto out;
    ok = 1;
out:
    BASIC_CONSTRAINTS_free(bc);
    ASN1_BIT_STRING_free(ku);
    sk_ASN1_OBJECT_free(eku); /* the object from OBJ_nid2obj is static */
    GENERAL_NAMES_free(san);
    GENERAL_NAME_free(gn);
    ASN1_IA5STRING_free(uri);
    ASN1_OCTET_STRING_free(ski);
    return ok;
}

/* Copies a SubjectPublicKeyInfo into x as it is encoded. X509_set_pubkey would instead run
 * the key through OpenSSL 3.0's encoder and decoder, the costliest step of issuance. */
static int copy_spki(X509 *x, const X509_PUBKEY *spki)
{
    ASN1_OBJECT *alg;
    const unsigned char *bits;
    int nbits;
    X509_ALGOR *src_alg, *dst_alg;
    X509_PUBKEY *dst = X509_get_X509_PUBKEY(x);
    if (!X509_PUBKEY_get0_param(&alg, &bits, &nbits, &src_alg, spki) || nbits <= 0)
        return 0;
    unsigned char *copy = OPENSSL_memdup(bits, (size_t)nbits);
    ASN1_OBJECT *alg_copy = OBJ_dup(alg);
    if (!copy || !alg_copy ||
        !X509_PUBKEY_set0_param(dst, alg_copy, V_ASN1_UNDEF, NULL, copy, nbits)) {
        OPENSSL_free(copy);
        ASN1_OBJECT_free(alg_copy);
        return 0;
    }
    /* The algorithm's parameters (the named curve) as well. */
    return X509_PUBKEY_get0_param(NULL, NULL, NULL, &dst_alg, dst) &&
           X509_ALGOR_copy(dst_alg, src_alg);
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

/* Signs x and returns its DER without encoding the TBSCertificate twice (X509_sign encodes
 * it to sign it, i2d_X509 again to output it): the TBSCertificate is encoded once with
 * OpenSSL's encoder, signed, and framed as RFC 5280 4.1 has it, Certificate ::= SEQUENCE
 * { tbsCertificate, signatureAlgorithm, signatureValue }, from already-encoded parts; x
 * gets the same signature. Falls back to X509_sign + i2d_X509 until the issuer knows its
 * AlgorithmIdentifier (after its first signature) or when it cannot copy contexts. */
static int sign_encode(cf_issuer *iss, X509 *x, unsigned char **der, size_t *der_len)
{
    if (!iss->alg || !iss->sign_ctx) {
        int ok = issuer_sign(iss, x) > 0;
        const X509_ALGOR *palg;
        X509_get0_signature(NULL, &palg, x);
        if (ok && iss->sign_ctx && !iss->alg && (iss->alg = X509_ALGOR_dup(palg)) != NULL &&
            (iss->alg_der_len = i2d_X509_ALGOR(iss->alg, &iss->alg_der)) <= 0) {
            X509_ALGOR_free(iss->alg);
            iss->alg = NULL;
        }
        int n = ok ? i2d_X509(x, der) : 0;
        *der_len = n > 0 ? (size_t)n : 0;
        return ok && n > 0;
    }
    unsigned char *tbs = NULL, *sig = NULL, *out = NULL, *p;
    size_t siglen = 0;
    int ok = 0, tbslen, bitlen, total;
    const ASN1_BIT_STRING *psig;
    const X509_ALGOR *palg;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    /* The TBSCertificate names the algorithm too (RFC 5280 4.1.2.3). */
    if (!X509_ALGOR_copy((X509_ALGOR *)X509_get0_tbs_sigalg(x), iss->alg) ||
        (tbslen = i2d_re_X509_tbs(x, &tbs)) <= 0)
        goto out;
    if (!c || !EVP_MD_CTX_copy_ex(c, iss->sign_ctx) ||
        EVP_DigestSign(c, NULL, &siglen, tbs, (size_t)tbslen) != 1 ||
        !(sig = OPENSSL_malloc(siglen)) ||
        EVP_DigestSign(c, sig, &siglen, tbs, (size_t)tbslen) != 1)
        goto out;
    X509_get0_signature(&psig, &palg, x);
    ASN1_BIT_STRING *bs = (ASN1_BIT_STRING *)psig;
    if (!X509_ALGOR_copy((X509_ALGOR *)palg, iss->alg) ||
        !ASN1_BIT_STRING_set(bs, sig, (int)siglen))
        goto out;
    bs->flags &= ~(ASN1_STRING_FLAG_BITS_LEFT | 0x07); /* no unused bits */
    bs->flags |= ASN1_STRING_FLAG_BITS_LEFT;
    if ((bitlen = i2d_ASN1_BIT_STRING(bs, NULL)) <= 0)
        goto out;
    total = ASN1_object_size(1, tbslen + iss->alg_der_len + bitlen, V_ASN1_SEQUENCE);
    if (total <= 0 || !(out = OPENSSL_malloc((size_t)total)))
        goto out;
    p = out;
    ASN1_put_object(&p, 1, tbslen + iss->alg_der_len + bitlen, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
    memcpy(p, tbs, (size_t)tbslen);
    p += tbslen;
    memcpy(p, iss->alg_der, (size_t)iss->alg_der_len);
    p += iss->alg_der_len;
    if (i2d_ASN1_BIT_STRING(bs, &p) != bitlen || p != out + total)
        goto out;
    *der = out;
    *der_len = (size_t)total;
    out = NULL;
    ok = 1;
out:
    EVP_MD_CTX_free(c);
    OPENSSL_free(tbs);
    OPENSSL_free(sig);
    OPENSSL_free(out);
    return ok;
}

/* The device certificate for the subject key given either as pub or as spki. */
static cf_err sign_device(cf_issuer *iss, EVP_PKEY *pub, const X509_PUBKEY *spki,
                          const cf_device_profile *profile, X509 **out, unsigned char **der,
                          size_t *der_len, char serial_hex[CF_SERIAL_HEX_MAX], cf_error *err)
{
    X509 *x = X509_new();
    cf_err rc;
    if (!x)
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    if (!X509_set_version(x, X509_VERSION_3) ||
        !(spki ? copy_spki(x, spki) : X509_set_pubkey(x, pub)) ||
        !X509_set_issuer_name(x, X509_get_subject_name(iss->cert))) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot build certificate");
        goto fail;
    }
    if ((rc = random_serial(x, serial_hex, err)) != CF_OK ||
        (rc = set_name(X509_get_subject_name(x), profile->org, profile->device_id, err)) != CF_OK ||
        (rc = set_validity(x, iss->not_after, profile->days, err)) != CF_OK)
        goto fail;
    X509_EXTENSION *dp = profile->crl_shard ? shard_dp(iss, profile->crl_shard) : iss->crldp;
    if (!dp || !add_device_exts(x, profile->device_id) || !X509_add_ext(x, iss->aki, -1) ||
        !X509_add_ext(x, dp, -1) || (!profile->crl_shard && !X509_add_ext(x, iss->freshest, -1)) ||
        !X509_add_ext(x, iss->aia, -1)) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot add certificate extensions");
        goto fail;
    }
    if (der ? !sign_encode(iss, x, der, der_len) : issuer_sign(iss, x) <= 0) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "cannot sign certificate");
        goto fail;
    }
    *out = x;
    return CF_OK;
fail:
    X509_free(x);
    return rc;
}

cf_err cf_issuer_sign_device(cf_issuer *iss, EVP_PKEY *pub, const cf_device_profile *profile,
                             X509 **out, char serial_hex[CF_SERIAL_HEX_MAX], cf_error *err)
{
    return sign_device(iss, pub, NULL, profile, out, NULL, NULL, serial_hex, err);
}

cf_err cf_issuer_sign_device_spki(cf_issuer *iss, const X509_PUBKEY *spki,
                                  const cf_device_profile *profile, X509 **out, unsigned char **der,
                                  size_t *der_len, char serial_hex[CF_SERIAL_HEX_MAX],
                                  cf_error *err)
{
    return sign_device(iss, NULL, spki, profile, out, der, der_len, serial_hex, err);
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

char *cf_x509_subject_line(X509 *cert)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data, *s;
    X509_NAME_print_ex(b, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
    long n = BIO_get_mem_data(b, &data);
    s = malloc((size_t)n + 1);
    if (!s)
        abort();
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    BIO_free(b);
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

cf_err cf_x509_append_pem(X509 *cert, char **buf, size_t *len, cf_error *err)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data;
    if (!b || !PEM_write_bio_X509(b, cert)) {
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
