/* rev.h - revocation data on the plain listener: the OCSP responder (RFC 6960, RFC 5019)
 * and the CRLs (RFC 5280), both kept fresh against the store's change feed. Internal to
 * src/server.
 *
 * Freshness: each request reads the change feed's last number (one indexed read). A cached
 * OCSP response or CRL built at that number is served as it is; one built earlier is
 * checked (OCSP: the certificate's own status number) or rebuilt (CRLs), so what
 * `certfleet revoke` committed is answered by every process sharing the store from the
 * moment it returns. */
#ifndef CF_SERVER_REV_H
#define CF_SERVER_REV_H

#include "server/srv.h"

/* ---- OCSP (one per worker: no lock) ---- */

typedef struct srv_ocsp srv_ocsp;

/* The worker's responder: the delegated responders of every issuing CA (made or renewed as
 * cf_fleet_ocsp_responder does) and an empty response cache. *out: srv_ocsp_free. */
cf_err srv_ocsp_new(cf_fleet *f, srv_ocsp **out, cf_error *err);
void srv_ocsp_free(srv_ocsp *o); /* accepts NULL */

/* POST /ocsp (body application/ocsp-request) and GET /ocsp/BASE64 (r->path is the whole
 * path). Every answer, errors included, is an OCSP response (application/ocsp-response). */
void srv_ocsp_post(srv_req *r, srv_ocsp *o);
void srv_ocsp_get(srv_req *r, srv_ocsp *o);

/* ---- CRLs (one cache per server, shared by its workers) ---- */

typedef struct srv_crls srv_crls;

cf_err srv_crls_new(srv_crls **out, cf_error *err);
void srv_crls_free(srv_crls *c); /* accepts NULL */

/* Builds the full and delta CRL of every issuing CA with the worker's fleet, so the first
 * requests find them ready. */
cf_err srv_crls_prepare(srv_crls *c, cf_fleet *f, cf_error *err);

/* GET /crl/CA.crl and /crl/CA-delta.crl (r->path is the whole path). */
void srv_crl_get(srv_req *r, srv_crls *c);

/* GET /ca/NAME.crt: the CA's certificate (DER), where issued certificates' AIA caIssuers
 * points. */
void srv_ca_get(srv_req *r);

#endif
