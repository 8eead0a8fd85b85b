/* ocsp.h - the OCSP responder's cryptography (RFC 6960 with the RFC 5019 profile): reading a
 * request, finding each CertID's issuer among the CAs the responder answers for (by issuer
 * name hash and key hash, SHA-1 or SHA-256 CertIDs), and signing the response with the
 * delegated responder certificate (id-kp-OCSPSigning, id-pkix-ocsp-nocheck).
 *
 * Where a status comes from (the store) and how responses are cached is the caller's
 * business: this file only reads and writes DER. */
#ifndef CF_PKI_OCSP_H
#define CF_PKI_OCSP_H

#include <openssl/ocsp.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "pki/x509.h"

/* Limits on what a request may hold. */
#define CF_OCSP_MAX_REQUEST (64 * 1024) /* bytes */
#define CF_OCSP_MAX_IDS 100             /* CertIDs in one request (RFC 5019 clients send 1) */
#define CF_OCSP_NONCE_MAX 32            /* RFC 8954: a nonce is 1 to 32 octets */

typedef struct cf_ocsp_responder cf_ocsp_responder;

/* A responder for no CA yet. *out: cf_ocsp_responder_free. */
cf_err cf_ocsp_responder_new(cf_ocsp_responder **out, cf_error *err);
void cf_ocsp_responder_free(cf_ocsp_responder *r); /* accepts NULL */
/* Adds a CA the responder answers for, with the delegated responder certificate and key
 * that sign its answers (references taken); ca_id is handed back in each query about it. */
cf_err cf_ocsp_responder_add_ca(cf_ocsp_responder *r, X509 *ca, int64_t ca_id, X509 *signer,
                                EVP_PKEY *signer_key, cf_error *err);

/* One CertID of a request. */
typedef struct {
    int64_t ca_id;   /* the issuer, or 0 when the responder does not answer for it */
    char serial[41]; /* upper-case hex, as the store writes serials */
    int hash_nid;    /* NID_sha1 or NID_sha256; NID_undef for another hash */
} cf_ocsp_query;

typedef struct {
    OCSP_REQUEST *req;
    cf_ocsp_query *queries;
    size_t n;
    int has_nonce;
} cf_ocsp_request;

/* Reads a DER OCSPRequest (at most CF_OCSP_MAX_REQUEST bytes, trailing bytes refused) and
 * matches each CertID to a CA. CF_ERR_INVALID, naming what is wrong, for anything that is
 * not a well-formed request within the limits (answer malformedRequest): no CertID, more
 * than CF_OCSP_MAX_IDS, a nonce outside 1..32 octets, a signed request (not supported).
 * Release with cf_ocsp_request_clear. */
cf_err cf_ocsp_request_parse(const cf_ocsp_responder *r, const unsigned char *der, size_t len,
                             cf_ocsp_request *out, cf_error *err);
void cf_ocsp_request_clear(cf_ocsp_request *req);

typedef enum { CF_OCSP_GOOD, CF_OCSP_REVOKED, CF_OCSP_UNKNOWN } cf_ocsp_cert_status;

typedef struct {
    cf_ocsp_cert_status status;
    int64_t revoked_s; /* CF_OCSP_REVOKED: when */
    int reason;        /* CF_OCSP_REVOKED: the CRL reason code, or -1 for none */
} cf_ocsp_status;

/* A signed successful response with one SingleResponse per query, in order (status[i] for
 * req->queries[i]), thisUpdate this_update and nextUpdate next_update (0: none), producedAt
 * now, signed by the responder of the first query's CA (one response has one signer: give
 * queries of other CAs CF_OCSP_UNKNOWN), identified by key hash, its certificate included;
 * the request's nonce echoed when it sent one. CF_ERR_NOT_FOUND when no query is about a
 * CA of this responder (answer unauthorized). *der: OPENSSL_free. */
cf_err cf_ocsp_respond(cf_ocsp_responder *r, const cf_ocsp_request *req,
                       const cf_ocsp_status *status, int64_t this_update, int64_t next_update,
                       unsigned char **der, size_t *len, cf_error *err);

/* An unsuccessful response (OCSP_RESPONSE_STATUS_MALFORMEDREQUEST, _INTERNALERROR,
 * _TRYLATER, _UNAUTHORIZED): no body, nothing signed. *der: OPENSSL_free. */
cf_err cf_ocsp_error_response(int response_status, unsigned char **der, size_t *len, cf_error *err);

#endif
