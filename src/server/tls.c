/* tls.c - the server's TLS context and its certificate.
 *
 * The server certificate comes from certfleet's own issuing CA, so a device that trusts the
 * root from EST cacerts (or the operator's `certfleet ca export`) also trusts the server.
 * It is kept in DATA/keys/server.pem with its key in DATA/keys/server.key (0600) and
 * reused while it is issued by the active issuing CA, matches its key, has more than
 * SRV_CERT_RENEW_DAYS left and names exactly the configured names; else a new one is issued
 * through the fleet (recorded and audited like every certificate). */
#include <arpa/inet.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fs.h"
#include "pki/key.h"
#include "server/srv.h"

#define SRV_CERT_DAYS 90
#define SRV_CERT_RENEW_DAYS 30

/* TLS 1.2 suites for ECDSA server keys, the first the one constrained EST clients offer;
 * TLS 1.3 keeps OpenSSL's defaults. */
static const char tls12_ciphers[] = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
                                    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-CCM:"
                                    "ECDHE-ECDSA-AES128-CCM8";

typedef struct {
    const char *names[CF_SERVER_MAX_NAMES + 2];
    int n;
} name_set;

static void names_collect(const cf_server_opts *o, name_set *s)
{
    s->n = 0;
    s->names[s->n++] = "localhost";
    s->names[s->n++] = "127.0.0.1";
    for (int i = 0; i < o->nnames; i++) {
        int dup = 0;
        for (int j = 0; j < s->n; j++)
            dup |= strcmp(s->names[j], o->names[i]) == 0;
        if (!dup)
            s->names[s->n++] = o->names[i];
    }
}

static int name_is_ip(const char *name, unsigned char *bin, int *len)
{
    if (inet_pton(AF_INET, name, bin) == 1) {
        *len = 4;
        return 1;
    }
    if (inet_pton(AF_INET6, name, bin) == 1) {
        *len = 16;
        return 1;
    }
    return 0;
}

/* 1 if the GENERAL_NAME is name (a DNS name compared without case, an IP as bytes). */
static int gen_matches(const GENERAL_NAME *g, const char *name)
{
    unsigned char bin[16];
    int len;
    if (name_is_ip(name, bin, &len))
        return g->type == GEN_IPADD && g->d.iPAddress->length == len &&
               memcmp(g->d.iPAddress->data, bin, (size_t)len) == 0;
    return g->type == GEN_DNS && (size_t)g->d.dNSName->length == strlen(name) &&
           strncasecmp((const char *)g->d.dNSName->data, name, strlen(name)) == 0;
}

/* 1 if cert's SANs are exactly the names in s. */
static int sans_match(X509 *cert, const name_set *s)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    int ok = gens && sk_GENERAL_NAME_num(gens) == s->n;
    for (int i = 0; ok && i < s->n; i++) {
        int found = 0;
        for (int j = 0; j < sk_GENERAL_NAME_num(gens) && !found; j++)
            found = gen_matches(sk_GENERAL_NAME_value(gens, j), s->names[i]);
        ok = found;
    }
    GENERAL_NAMES_free(gens);
    return ok;
}

/* 1 if the stored pair can be served as it is. */
static int stored_cert_usable(X509 *cert, EVP_PKEY *key, X509 *issuing, const name_set *s)
{
    time_t renew = time(NULL) + (time_t)SRV_CERT_RENEW_DAYS * 86400;
    return X509_check_issued(issuing, cert) == X509_V_OK &&
           X509_verify(cert, X509_get0_pubkey(issuing)) == 1 &&
           X509_check_private_key(cert, key) == 1 &&
           X509_cmp_time(X509_get0_notAfter(cert), &renew) > 0 && sans_match(cert, s);
}

typedef struct {
    X509 *issuing;
    const name_set *names;
} server_ctx;

static int server_usable(X509 *cert, EVP_PKEY *key, void *arg)
{
    const server_ctx *c = arg;
    return stored_cert_usable(cert, key, c->issuing, c->names);
}

static cf_err server_issue(cf_fleet *f, EVP_PKEY *key, void *arg, X509 **cert, cf_error *err)
{
    const server_ctx *c = arg;
    if (X509_cmp_time(X509_get0_notAfter(c->issuing),
                      &(time_t){time(NULL) + SRV_CERT_DAYS * 86400}) < 0)
        return cf_error_set(err, CF_ERR_STATE,
                            "server certificate: the issuing CA expires within %d days: roll it"
                            " over",
                            SRV_CERT_DAYS);
    return cf_fleet_issue_server_cert(f, key, c->names->names, c->names->n, SRV_CERT_DAYS, "server",
                                      cert, err);
}

/* The server's certificate and key, reused or issued (see the file comment). */
static cf_err server_pair(const cf_server_opts *o, cf_fleet *f, X509 **cert, EVP_PKEY **key,
                          cf_error *err)
{
    X509 *issuing, *root;
    name_set s;
    cf_err rc = cf_fleet_chain(f, &issuing, &root, err);
    if (rc != CF_OK)
        return rc;
    names_collect(o, &s);
    server_ctx c = {issuing, &s};
    cf_service_profile prof = {server_usable, server_issue, &c};
    return cf_fleet_service_pair(f, "server", &prof, cert, key, err);
}

/* Client certificates are requested, never required here: whether a request needs one,
 * and which, is the handler's decision (EST enrollment versus cacerts). */
static int verify_accept(int preverify_ok, X509_STORE_CTX *ctx)
{
    return 1;
}

/* Replaces the chain verification of the handshake (which still checks that the client
 * holds the certificate's key: CertificateVerify). A certificate issued under the trust
 * store (certfleet's CAs: an operational certificate) is verified, and
 * SSL_get_verify_result tells the request log whether it is good. Any other (a birth
 * certificate, which chains to its manufacturer) is left unverified here, as it would
 * fail anyway: enrollment accepts it only byte for byte equal to the onboarded one, whose
 * chain was verified at import. Verifying the foreign chain cost 4-7% of the server's CPU
 * under enrollment load. */
static int verify_client_chain(X509_STORE_CTX *ctx, void *arg)
{
    X509 *leaf = X509_STORE_CTX_get0_cert(ctx), *issuer = NULL;
    (void)arg;
    if (leaf && X509_STORE_CTX_get1_issuer(&issuer, ctx, leaf) == 1) {
        X509_free(issuer);
        X509_verify_cert(ctx);
    } else {
        ERR_clear_error();
        X509_STORE_CTX_set_error(ctx, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
    }
    return 1;
}

cf_err srv_tls_context(const cf_server_opts *o, SSL_CTX **out, cf_error *err)
{
    cf_fleet *f = NULL;
    X509 *cert = NULL, *issuing, *root;
    EVP_PKEY *key = NULL;
    SSL_CTX *ctx = NULL;
    cf_err rc = cf_fleet_open(o->data_dir, o->store_url, &f, err);
    if (rc != CF_OK || (rc = server_pair(o, f, &cert, &key, err)) != CF_OK ||
        (rc = cf_fleet_chain(f, &issuing, &root, err)) != CF_OK)
        goto out;
    X509_STORE *trust;
    if (!(ctx = SSL_CTX_new(TLS_server_method())) ||
        !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_cipher_list(ctx, tls12_ciphers) || !SSL_CTX_use_certificate(ctx, cert) ||
        !SSL_CTX_use_PrivateKey(ctx, key) || !SSL_CTX_add1_chain_cert(ctx, issuing) ||
        !SSL_CTX_check_private_key(ctx) || !(trust = SSL_CTX_get_cert_store(ctx)) ||
        !X509_STORE_add_cert(trust, root) || !X509_STORE_add_cert(trust, issuing) ||
        !SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"certfleet", 9)) {
        rc = cf_error_openssl(err, CF_ERR_CRYPTO, "TLS context");
        goto out;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* No TLS 1.3 session tickets: EST clients do not resume, and making two tickets after
     * every handshake (each encoding the session, client certificate included) cost an
     * eighth of the server's CPU under enrollment load. */
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_accept);
    SSL_CTX_set_cert_verify_callback(ctx, verify_client_chain, NULL);
    *out = ctx;
    ctx = NULL;
out:
    SSL_CTX_free(ctx);
    X509_free(cert);
    EVP_PKEY_free(key);
    cf_fleet_close(f);
    if (rc != CF_OK)
        cf_error_prefix(err, "server certificate");
    return rc;
}
