/* ocsp.c - OCSP requests read, responses signed (see ocsp.h). */
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "pki/key.h"
#include "pki/ocsp.h"

/* What a CertID of one CA looks like, under each hash it may use, and who signs for it. */
typedef struct {
    int64_t ca_id;
    unsigned char name_sha1[20], key_sha1[20];
    unsigned char name_sha256[32], key_sha256[32];
    X509 *signer;
    EVP_PKEY *key;
    const EVP_MD *md;
} ca_ids;

struct cf_ocsp_responder {
    ca_ids *cas;
    size_t ncas;
};

cf_err cf_ocsp_responder_new(cf_ocsp_responder **out, cf_error *err)
{
    if (!(*out = calloc(1, sizeof **out)))
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    return CF_OK;
}

void cf_ocsp_responder_free(cf_ocsp_responder *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->ncas; i++) {
        X509_free(r->cas[i].signer);
        EVP_PKEY_free(r->cas[i].key);
    }
    free(r->cas);
    free(r);
}

cf_err cf_ocsp_responder_add_ca(cf_ocsp_responder *r, X509 *ca, int64_t ca_id, X509 *signer,
                                EVP_PKEY *signer_key, cf_error *err)
{
    ca_ids *grown = realloc(r->cas, (r->ncas + 1) * sizeof *grown);
    if (!grown)
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    r->cas = grown;
    ca_ids *c = &r->cas[r->ncas];
    memset(c, 0, sizeof *c);
    unsigned char *name = NULL;
    int name_len = i2d_X509_NAME(X509_get_subject_name(ca), &name);
    ASN1_BIT_STRING *key = X509_get0_pubkey_bitstr(ca);
    unsigned int n;
    /* RFC 6960 4.1.1: the hash of the issuer's DER name, and of its public key's BIT STRING
     * value (without tag, length and unused-bits count). */
    int ok = name_len > 0 && key &&
             EVP_Digest(name, (size_t)name_len, c->name_sha1, &n, EVP_sha1(), NULL) &&
             EVP_Digest(name, (size_t)name_len, c->name_sha256, &n, EVP_sha256(), NULL) &&
             EVP_Digest(key->data, (size_t)key->length, c->key_sha1, &n, EVP_sha1(), NULL) &&
             EVP_Digest(key->data, (size_t)key->length, c->key_sha256, &n, EVP_sha256(), NULL);
    OPENSSL_free(name);
    if (!ok)
        return cf_error_openssl(err, CF_ERR_CRYPTO, "OCSP: hashing CA %lld", (long long)ca_id);
    if (!X509_up_ref(signer) || !EVP_PKEY_up_ref(signer_key))
        return cf_error_openssl(err, CF_ERR_CRYPTO, "OCSP: responder of CA %lld", (long long)ca_id);
    c->signer = signer;
    c->key = signer_key;
    c->md = cf_key_digest(signer_key);
    c->ca_id = ca_id;
    r->ncas++;
    return CF_OK;
}

/* ---- requests ---- */

static int64_t match_ca(const cf_ocsp_responder *r, int nid, const ASN1_OCTET_STRING *name,
                        const ASN1_OCTET_STRING *key)
{
    size_t len = nid == NID_sha1 ? 20 : 32;
    if ((nid != NID_sha1 && nid != NID_sha256) || !name || !key || (size_t)name->length != len ||
        (size_t)key->length != len)
        return 0;
    for (size_t i = 0; i < r->ncas; i++) {
        const ca_ids *c = &r->cas[i];
        const unsigned char *nh = nid == NID_sha1 ? c->name_sha1 : c->name_sha256;
        const unsigned char *kh = nid == NID_sha1 ? c->key_sha1 : c->key_sha256;
        if (memcmp(nh, name->data, len) == 0 && memcmp(kh, key->data, len) == 0)
            return c->ca_id;
    }
    return 0;
}

/* RFC 8954: the nonce's value is an OCTET STRING of 1 to 32 octets. */
static cf_err check_nonce(OCSP_REQUEST *req, int *has, cf_error *err)
{
    int at = OCSP_REQUEST_get_ext_by_NID(req, NID_id_pkix_OCSP_Nonce, -1);
    *has = at >= 0;
    if (at < 0)
        return CF_OK;
    if (OCSP_REQUEST_get_ext_by_NID(req, NID_id_pkix_OCSP_Nonce, at) >= 0)
        return cf_error_set(err, CF_ERR_INVALID, "OCSP request: more than one nonce");
    ASN1_OCTET_STRING *v = X509_EXTENSION_get_data(OCSP_REQUEST_get_ext(req, at));
    const unsigned char *p = ASN1_STRING_get0_data(v);
    ASN1_OCTET_STRING *inner = d2i_ASN1_OCTET_STRING(NULL, &p, ASN1_STRING_length(v));
    int len = inner ? ASN1_STRING_length(inner) : -1;
    int whole = inner && p == ASN1_STRING_get0_data(v) + ASN1_STRING_length(v);
    ASN1_OCTET_STRING_free(inner);
    if (!whole || len < 1 || len > CF_OCSP_NONCE_MAX)
        return cf_error_set(err, CF_ERR_INVALID,
                            "OCSP request: the nonce must be an OCTET STRING of 1 to %d octets"
                            " (RFC 8954)",
                            CF_OCSP_NONCE_MAX);
    return CF_OK;
}

void cf_ocsp_request_clear(cf_ocsp_request *req)
{
    OCSP_REQUEST_free(req->req);
    free(req->queries);
    memset(req, 0, sizeof *req);
}

/* 1 if id survives what the response does with it: a copy, written and read again. */
static int certid_copyable(OCSP_CERTID *id)
{
    OCSP_CERTID *copy = OCSP_CERTID_dup(id);
    int ok = copy && i2d_OCSP_CERTID(copy, NULL) > 0;
    OCSP_CERTID_free(copy);
    return ok;
}

cf_err cf_ocsp_request_parse(const cf_ocsp_responder *r, const unsigned char *der, size_t len,
                             cf_ocsp_request *out, cf_error *err)
{
    memset(out, 0, sizeof *out);
    if (len == 0)
        return cf_error_set(err, CF_ERR_INVALID, "OCSP request: empty");
    if (len > CF_OCSP_MAX_REQUEST)
        return cf_error_set(err, CF_ERR_INVALID, "OCSP request: %zu bytes, over the limit of %d",
                            len, CF_OCSP_MAX_REQUEST);
    const unsigned char *p = der;
    cf_err rc = CF_OK;
    if (!(out->req = d2i_OCSP_REQUEST(NULL, &p, (long)len)))
        return cf_error_set(err, CF_ERR_INVALID, "OCSP request: not a DER OCSPRequest");
    if (p != der + len) {
        rc = cf_error_set(err, CF_ERR_INVALID, "OCSP request: %zu bytes after its end",
                          (size_t)(der + len - p));
        goto out;
    }
    if (OCSP_request_is_signed(out->req)) {
        rc = cf_error_set(err, CF_ERR_INVALID, "OCSP request: signed requests are not accepted");
        goto out;
    }
    int n = OCSP_request_onereq_count(out->req);
    if (n <= 0 || n > CF_OCSP_MAX_IDS) {
        rc = cf_error_set(err, CF_ERR_INVALID, "OCSP request: %d CertIDs (1 to %d accepted)", n,
                          CF_OCSP_MAX_IDS);
        goto out;
    }
    if ((rc = check_nonce(out->req, &out->has_nonce, err)) != CF_OK)
        goto out;
    if (!(out->queries = calloc((size_t)n, sizeof *out->queries))) {
        rc = cf_error_set(err, CF_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        OCSP_CERTID *id = OCSP_onereq_get0_id(OCSP_request_onereq_get0(out->req, i));
        ASN1_OCTET_STRING *name = NULL, *key = NULL;
        ASN1_OBJECT *alg = NULL;
        ASN1_INTEGER *serial = NULL;
        cf_ocsp_query *q = &out->queries[i];
        /* The response repeats each CertID: one OpenSSL reads but cannot write again (an
         * OID in a non-minimal encoding, say) could not be answered. */
        if (!OCSP_id_get0_info(&name, &alg, &key, &serial, id) || !serial ||
            ASN1_STRING_length(serial) > 20 || !certid_copyable(id)) {
            rc = cf_error_set(err, CF_ERR_INVALID, "OCSP request: CertID %d is malformed", i + 1);
            goto out;
        }
        q->hash_nid = OBJ_obj2nid(alg);
        if (q->hash_nid != NID_sha1 && q->hash_nid != NID_sha256)
            q->hash_nid = NID_undef;
        q->ca_id = match_ca(r, q->hash_nid, name, key);
        /* A negative serial is no serial certfleet issued: it stays unknown ("" matches
         * nothing). */
        if (ASN1_STRING_type(serial) == V_ASN1_INTEGER)
            cf_hex_encode(ASN1_STRING_get0_data(serial), (size_t)ASN1_STRING_length(serial), 1,
                          q->serial);
    }
    out->n = (size_t)n;
out:
    if (rc != CF_OK)
        cf_ocsp_request_clear(out);
    return rc;
}

/* ---- responses ---- */

static cf_err encode_response(OCSP_RESPONSE *resp, unsigned char **der, size_t *len, cf_error *err)
{
    *der = NULL;
    int n = resp ? i2d_OCSP_RESPONSE(resp, der) : 0;
    if (n <= 0)
        return cf_error_openssl(err, CF_ERR_CRYPTO, "OCSP response: encoding");
    *len = (size_t)n;
    return CF_OK;
}

cf_err cf_ocsp_error_response(int response_status, unsigned char **der, size_t *len, cf_error *err)
{
    OCSP_RESPONSE *resp = OCSP_response_create(response_status, NULL);
    cf_err rc = encode_response(resp, der, len, err);
    OCSP_RESPONSE_free(resp);
    return rc;
}

cf_err cf_ocsp_respond(cf_ocsp_responder *r, const cf_ocsp_request *req,
                       const cf_ocsp_status *status, int64_t this_update, int64_t next_update,
                       unsigned char **der, size_t *len, cf_error *err)
{
    const ca_ids *signer = NULL;
    for (size_t i = 0; !signer && i < req->n; i++)
        for (size_t c = 0; !signer && req->queries[i].ca_id && c < r->ncas; c++)
            if (r->cas[c].ca_id == req->queries[i].ca_id)
                signer = &r->cas[c];
    if (!signer)
        return cf_error_set(err, CF_ERR_NOT_FOUND, "OCSP request: no CertID of a known issuer");
    OCSP_BASICRESP *bs = OCSP_BASICRESP_new();
    OCSP_RESPONSE *resp = NULL;
    ASN1_TIME *thisupd = ASN1_TIME_set(NULL, (time_t)this_update);
    ASN1_TIME *nextupd = next_update ? ASN1_TIME_set(NULL, (time_t)next_update) : NULL;
    ASN1_TIME *revtime = NULL;
    cf_err rc = CF_OK;
    if (!bs || !thisupd || (next_update && !nextupd))
        goto fail;
    for (size_t i = 0; i < req->n; i++) {
        OCSP_CERTID *id = OCSP_onereq_get0_id(OCSP_request_onereq_get0(req->req, (int)i));
        int st = V_OCSP_CERTSTATUS_UNKNOWN, reason = -1;
        ASN1_TIME *rt = NULL;
        if (status[i].status == CF_OCSP_GOOD) {
            st = V_OCSP_CERTSTATUS_GOOD;
        } else if (status[i].status == CF_OCSP_REVOKED) {
            st = V_OCSP_CERTSTATUS_REVOKED;
            reason = status[i].reason;
            if (!(rt = revtime = ASN1_TIME_set(revtime, (time_t)status[i].revoked_s)))
                goto fail;
        }
        if (!OCSP_basic_add1_status(bs, id, st, reason, rt, thisupd, nextupd))
            goto fail;
    }
    if ((req->has_nonce && OCSP_copy_nonce(bs, req->req) <= 0) ||
        !OCSP_basic_sign(bs, signer->signer, signer->key, signer->md, NULL, OCSP_RESPID_KEY) ||
        !(resp = OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, bs)))
        goto fail;
    rc = encode_response(resp, der, len, err);
    goto out;
fail:
    rc = cf_error_openssl(err, CF_ERR_CRYPTO, "OCSP response");
out:
    ASN1_TIME_free(thisupd);
    ASN1_TIME_free(nextupd);
    ASN1_TIME_free(revtime);
    OCSP_RESPONSE_free(resp);
    OCSP_BASICRESP_free(bs);
    return rc;
}
