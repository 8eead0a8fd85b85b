#include "fleet/fleet.h"
#include "fleet/fleet_int.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "audit/audit.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/util.h"
#include "fleet/revoke.h"
#include "pki/csr.h"

struct cf_fleet {
    char data_dir[2048];
    char key_dir[2048];
    cf_store *st;
    /* Loaded on first issuance and kept: the issuing CA, its key, its chain. */
    cf_issuer *issuer;
    int64_t issuer_ca_id;
    X509 *root, *issuing;
    char *org, *base_url, *issuing_name, *issuing_key_ref;
    int device_days;
    cf_csr_parser *csr_parser; /* made on first issuance */
    /* CRL shards (revoke.h): the size read with the issuer, and the shard this handle is
     * filling with how many places it has left. */
    int64_t shard_size, shard, shard_left;
};

cf_err cf_fleet_open(const char *data_dir, const char *store_url, cf_fleet **out, cf_error *err)
{
    cf_fleet *f = calloc(1, sizeof *f);
    if (!f)
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    snprintf(f->data_dir, sizeof f->data_dir, "%s", data_dir);
    snprintf(f->key_dir, sizeof f->key_dir, "%s/keys", data_dir);
    cf_err rc = CF_OK;
    char url[2200];
    if (!store_url) {
        if ((rc = cf_fs_mkdirs(data_dir, 0700, err)) != CF_OK)
            goto fail;
        /* SQLite would only say "unable to open database file". */
        if (access(data_dir, W_OK | X_OK) != 0) {
            rc = cf_error_set(err, CF_ERR_IO, "%s: data directory is not writable: %s", data_dir,
                              strerror(errno));
            goto fail;
        }
        snprintf(url, sizeof url, "sqlite:%s/certfleet.db", data_dir);
        store_url = url;
    }
    if ((rc = cf_store_open(store_url, &f->st, err)) != CF_OK)
        goto fail;
    *out = f;
    return CF_OK;
fail:
    free(f);
    return rc;
}

void cf_fleet_close(cf_fleet *f)
{
    if (!f)
        return;
    cf_issuer_free(f->issuer);
    cf_csr_parser_free(f->csr_parser);
    X509_free(f->root);
    X509_free(f->issuing);
    free(f->org);
    free(f->base_url);
    free(f->issuing_name);
    free(f->issuing_key_ref);
    cf_store_close(f->st);
    free(f);
}

cf_store *cf_fleet_store(cf_fleet *f)
{
    return f->st;
}

int cf_fleet_device_id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > 128)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

/* ---- init ---- */

typedef struct {
    EVP_PKEY *key;
    char ref[CF_KEY_REF_MAX]; /* what the store records: file name or URI without PIN */
    char path[3200];          /* the key file written, to remove if init fails */
} ca_key;

static cf_err ca_key_obtain(cf_fleet *f, const char *uri, cf_key_type type, const char *name,
                            ca_key *out, cf_error *err)
{
    memset(out, 0, sizeof *out);
    if (uri) {
        if (!cf_key_ref_is_pkcs11(uri))
            return cf_error_set(err, CF_ERR_INVALID, "%s key: expected a pkcs11: URI", name);
        /* The store keeps the URI without its PIN; key.h says where a later load finds it. */
        char desc[64];
        cf_err rc = cf_key_ref_without_pin(uri, out->ref, err);
        if (rc == CF_OK)
            rc = cf_key_load(uri, NULL, &out->key, err);
        if (rc == CF_OK)
            rc = cf_key_check_policy(out->key, desc, sizeof desc, err);
        if (rc != CF_OK)
            cf_error_prefix(err, "%s key", name);
        return rc;
    }
    return cf_key_generate(type, &out->key, err);
}

/* Writes a generated key under DATA/keys with mode 0600; names it after the CA and its
 * key id, so a failed init never collides with the next attempt. */
static cf_err ca_key_save(cf_fleet *f, ca_key *k, const char *ca_name, X509 *cert, cf_error *err)
{
    if (k->ref[0])
        return CF_OK; /* in a token */
    const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(cert);
    char hex[17] = "";
    cf_hex_encode(ASN1_STRING_get0_data(ski), 8, 0, hex);
    snprintf(k->ref, sizeof k->ref, "%s-%s.key", ca_name, hex);
    snprintf(k->path, sizeof k->path, "%s/%s", f->key_dir, k->ref);
    char *pem = NULL;
    size_t len = 0;
    cf_err rc = cf_fs_mkdirs(f->key_dir, 0700, err);
    if (rc == CF_OK)
        rc = cf_key_to_pem(k->key, &pem, &len, err);
    if (rc == CF_OK)
        rc = cf_fs_write_file(k->path, pem, len, 0600, 0, err);
    if (pem) {
        OPENSSL_cleanse(pem, len);
        free(pem);
    }
    if (rc != CF_OK)
        k->path[0] = '\0';
    return rc;
}

static cf_err ca_store(cf_fleet *f, const char *name, cf_ca_role role, int64_t parent, X509 *x,
                       const char *key_ref, int64_t *id, cf_error *err)
{
    cf_ca_rec rec = {0};
    cf_err rc = cf_x509_to_der(x, &rec.der, &rec.der_len, err);
    if (rc != CF_OK)
        return rc;
    rec.name = (char *)name;
    rec.role = role;
    rec.parent_id = parent;
    rec.subject = cf_x509_subject_line(x);
    rec.key_ref = (char *)key_ref;
    rec.not_before = cf_x509_not_before(x);
    rec.not_after = cf_x509_not_after(x);
    rec.status = CF_CA_ACTIVE;
    rec.created_us = cf_time_now_us();
    rc = cf_store_ca_insert(f->st, &rec, err);
    *id = rec.id;
    free(rec.subject);
    OPENSSL_free(rec.der);
    return rc;
}

static cf_err check_not_initialised(cf_fleet *f, cf_error *err)
{
    char *org = NULL;
    cf_err rc = cf_store_meta_get(f->st, "org", &org, err);
    if (rc == CF_ERR_NOT_FOUND)
        return CF_OK;
    if (rc != CF_OK)
        return rc;
    rc =
        cf_error_set(err, CF_ERR_STATE, "%s is already initialised for \"%s\"; nothing was changed",
                     cf_store_describe(f->st), org);
    free(org);
    return rc;
}

cf_err cf_fleet_init(cf_fleet *f, const cf_init_opts *o, cf_error *err)
{
    ca_key root = {0}, issuing = {0};
    X509 *root_cert = NULL, *issuing_cert = NULL;
    json_t *details = NULL;
    const char *org = o->org && *o->org ? o->org : "certfleet";
    const char *base = o->base_url ? o->base_url : CF_DEFAULT_BASE_URL;
    char cn[300], days[16];
    int64_t root_id = 0, issuing_id = 0;

    cf_err rc = check_not_initialised(f, err);
    if (rc != CF_OK)
        return rc;
    if (strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0)
        return cf_error_set(err, CF_ERR_INVALID, "base URL \"%s\": must start with http://", base);
    if ((rc = ca_key_obtain(f, o->root_key, o->key_type, "root", &root, err)) != CF_OK ||
        (rc = ca_key_obtain(f, o->ca_key, o->key_type, "issuing CA", &issuing, err)) != CF_OK)
        goto out;
    snprintf(cn, sizeof cn, "%s Root CA", org);
    if ((rc = cf_x509_make_root(root.key, org, cn, 20 * 365, &root_cert, err)) != CF_OK)
        goto out;
    snprintf(cn, sizeof cn, "%s Issuing CA 1", org);
    if ((rc = cf_x509_make_issuing(root_cert, root.key, issuing.key, org, cn, 10 * 365,
                                   &issuing_cert, err)) != CF_OK)
        goto out;
    if ((rc = ca_key_save(f, &root, "root-1", root_cert, err)) != CF_OK ||
        (rc = ca_key_save(f, &issuing, "issuing-1", issuing_cert, err)) != CF_OK)
        goto out;

    if ((rc = cf_store_begin(f->st, err)) != CF_OK)
        goto out;
    snprintf(days, sizeof days, "%d", o->device_days > 0 ? o->device_days : CF_DEFAULT_DEVICE_DAYS);
    rc = cf_store_meta_insert(f->st, "org", org, err);
    if (rc == CF_ERR_EXISTS) /* another process initialised it meanwhile */
        rc = check_not_initialised(f, err);
    if (rc == CF_OK)
        rc = cf_store_meta_set(f->st, "base_url", base, err);
    if (rc == CF_OK)
        rc = cf_store_meta_set(f->st, "device_days", days, err);
    if (rc == CF_OK)
        rc = ca_store(f, "root-1", CF_CA_ROOT, 0, root_cert, root.ref, &root_id, err);
    if (rc == CF_OK)
        rc = ca_store(f, "issuing-1", CF_CA_ISSUING, root_id, issuing_cert, issuing.ref,
                      &issuing_id, err);
    if (rc == CF_OK) {
        details = json_pack("{s:s, s:s, s:s, s:s, s:b, s:s}", "org", org, "key_type",
                            o->ca_key ? "pkcs11" : cf_key_type_name(o->key_type), "root", "root-1",
                            "issuing", "issuing-1", "hsm", o->ca_key != NULL, "base_url", base);
        rc = cf_audit_append(f->st, o->actor, "ca.init", "issuing-1", details, NULL, err);
    }
    if (rc == CF_OK)
        rc = cf_store_commit(f->st, err);
    else
        cf_store_rollback(f->st);
    if (rc == CF_OK) {
        /* The OCSP responder's delegated certificate (RFC 6960 4.2.2.2), so that the CA is
         * answered for from the first request; a server renews it as it runs. A CA key in a
         * token whose PIN came with this command only (the store keeps no PIN) cannot sign
         * it now: then the first certfleet serve makes it. */
        cf_ocsp_responder *resp = NULL;
        cf_error e2 = {0};
        if (cf_fleet_ocsp_responder(f, &resp, NULL, &e2) != CF_OK)
            cf_log(CF_LOG_WARN,
                   "init: the OCSP responder's certificate is not made yet (certfleet serve"
                   " makes it at start): %s",
                   e2.msg);
        cf_ocsp_responder_free(resp);
    }
out:
    if (rc != CF_OK) {
        if (root.path[0])
            unlink(root.path);
        if (issuing.path[0])
            unlink(issuing.path);
    }
    json_decref(details);
    EVP_PKEY_free(root.key);
    EVP_PKEY_free(issuing.key);
    X509_free(root_cert);
    X509_free(issuing_cert);
    return rc;
}

/* ---- issuance ---- */

/* The active issuing CA and its root, with the settings issuance uses: all from the
 * store, no private key (exporting the chain must not need the token's PIN). */
static cf_err load_chain(cf_fleet *f, cf_error *err)
{
    if (f->issuing)
        return CF_OK;
    cf_ca_rec ca = {0}, root = {0};
    char *days = NULL;
    cf_err rc = f->org ? CF_OK : cf_store_meta_get(f->st, "org", &f->org, err);
    if (rc == CF_ERR_NOT_FOUND)
        rc = cf_error_set(err, CF_ERR_STATE, "%s is not initialised: run certfleet init",
                          cf_store_describe(f->st));
    if (rc != CF_OK)
        goto out;
    if ((!f->base_url && (rc = cf_store_meta_get(f->st, "base_url", &f->base_url, err)) != CF_OK) ||
        (rc = cf_store_meta_get(f->st, "device_days", &days, err)) != CF_OK)
        goto out;
    f->device_days = atoi(days);
    if ((rc = cf_store_ca_active(f->st, CF_CA_ISSUING, &ca, err)) != CF_OK ||
        (rc = cf_store_ca_get(f->st, ca.parent_id, &root, err)) != CF_OK)
        goto out;
    if ((rc = cf_x509_from_der(root.der, root.der_len, &f->root, err)) != CF_OK ||
        (rc = cf_x509_from_der(ca.der, ca.der_len, &f->issuing, err)) != CF_OK) {
        X509_free(f->root);
        f->root = NULL;
        goto out;
    }
    f->issuer_ca_id = ca.id;
    f->issuing_name = ca.name;
    f->issuing_key_ref = ca.key_ref;
    ca.name = ca.key_ref = NULL;
out:
    free(days);
    cf_ca_rec_clear(&ca);
    cf_ca_rec_clear(&root);
    return rc;
}

/* The chain plus the issuing CA's private key, ready to sign. */
static cf_err load_issuer(cf_fleet *f, cf_error *err)
{
    if (f->issuer)
        return CF_OK;
    EVP_PKEY *key = NULL;
    cf_err rc = load_chain(f, err);
    if (rc != CF_OK)
        return rc;
    if ((rc = cf_key_load(f->issuing_key_ref, f->key_dir, &key, err)) != CF_OK) {
        cf_error_prefix(err, "issuing CA %s", f->issuing_name);
        return rc;
    }
    if (X509_check_private_key(f->issuing, key) != 1)
        rc = cf_error_openssl(err, CF_ERR_STATE, "issuing CA %s: key does not match certificate",
                              f->issuing_name);
    else
        rc = cf_issuer_new(f->issuing, key, f->issuing_name, f->base_url, &f->issuer, err);
    EVP_PKEY_free(key);
    char *size = NULL;
    cf_err src = rc == CF_OK ? cf_store_meta_get(f->st, "crl_shard_size", &size, err) : CF_OK;
    if (src == CF_OK && size)
        f->shard_size = strtoll(size, NULL, 10);
    else if (src != CF_ERR_NOT_FOUND)
        rc = src;
    free(size);
    return rc;
}

/* The CRL shard the next certificate goes into: this handle fills a shard of its own, and
 * reserves the next when it is full, so no shard holds more than the shard size. */
static cf_err next_shard(cf_fleet *f, int64_t *shard, cf_error *err)
{
    *shard = 0;
    if (f->shard_size <= 0)
        return CF_OK;
    if (f->shard_left <= 0) {
        cf_err rc = cf_store_crl_shard_reserve(f->st, f->issuer_ca_id, &f->shard, err);
        if (rc != CF_OK)
            return rc;
        f->shard_left = f->shard_size;
    }
    f->shard_left--;
    *shard = f->shard;
    return CF_OK;
}

void cf_fleet_pending_clear(cf_pending_cert *p)
{
    cf_signed_cert_clear(&p->cert);
}

void cf_fleet_pending_take(cf_pending_cert *p, cf_signed_cert *out)
{
    *out = p->cert;
    memset(&p->cert, 0, sizeof p->cert);
}

/* What a request must be before the store is asked anything. */
static cf_err issue_check_req(const cf_issue_req *req, cf_error *err)
{
    if (!cf_fleet_device_id_valid(req->device_id))
        return cf_error_set(err, CF_ERR_INVALID,
                            "device id \"%.64s%s\" (%zu characters): use 1-128 characters of"
                            " A-Z a-z 0-9 . _ : -",
                            req->device_id, strlen(req->device_id) > 64 ? "..." : "",
                            strlen(req->device_id));
    if (req->days < 0 || req->days > 36500)
        return cf_error_set(err, CF_ERR_INVALID, "validity of %d days is out of range (1-36500)",
                            req->days);
    return CF_OK;
}

/* p for req, about an existing device in state with owner owner_id named owner. */
static cf_err issue_known(const cf_issue_req *req, cf_device_state state, int64_t owner_id,
                          const char *owner, cf_pending_cert *p, cf_error *err)
{
    p->device_exists = 1;
    p->owner_id = owner_id;
    snprintf(p->owner, sizeof p->owner, "%s", owner ? owner : "");
    if (state == CF_DEVICE_DECOMMISSIONED)
        return cf_error_set(err, CF_ERR_POLICY, "device %s is decommissioned", req->device_id);
    return CF_OK;
}

/* Starts p for req with the device's state and owner as the store has them now (read only:
 * cf_fleet_issue_batch does these reads for a whole batch from one snapshot). */
static cf_err issue_lookup(cf_fleet *f, const cf_issue_req *req, cf_pending_cert *p, cf_error *err)
{
    cf_device_state state = CF_DEVICE_ACTIVE;
    int64_t owner_id = 0;
    char owner[sizeof p->owner];
    memset(p, 0, sizeof *p);
    p->req = req;
    cf_err rc = issue_check_req(req, err);
    if (rc == CF_OK)
        rc = cf_store_device_owner(f->st, req->device_id, &state, &owner_id, owner, sizeof owner,
                                   err);
    if (rc == CF_ERR_NOT_FOUND)
        return CF_OK;
    return rc == CF_OK ? issue_known(req, state, owner_id, owner, p, err) : rc;
}

/* Verifies the CSR of p's request and signs its certificate. */
static cf_err issue_sign(cf_fleet *f, cf_pending_cert *p, cf_error *err)
{
    const cf_issue_req *req = p->req;
    X509_PUBKEY *spki = NULL;
    EVP_PKEY *pub = NULL;
    cf_err rc;

    if (!f->csr_parser && (rc = cf_csr_parser_new(&f->csr_parser, err)) != CF_OK)
        return rc;
    if ((rc = cf_csr_parse_check(f->csr_parser, req->csr, req->csr_len, &spki, &pub, p->keydesc,
                                 sizeof p->keydesc, err)) != CF_OK)
        goto out;
    if ((rc = load_issuer(f, err)) != CF_OK)
        goto out;
    int days = req->days > 0 ? req->days : f->device_days;
    int64_t left = cf_x509_not_after(cf_issuer_cert(f->issuer)) - (int64_t)time(NULL);
    if (req->days > 0 && (int64_t)days * 86400 > left) {
        rc = cf_error_set(err, CF_ERR_POLICY,
                          "validity of %d days outlives the issuing CA (%lld days left)", days,
                          (long long)(left / 86400));
        goto out;
    }
    if ((rc = next_shard(f, &p->crl_shard, err)) != CF_OK)
        goto out;
    cf_device_profile profile = {
        .device_id = req->device_id,
        .org = p->owner[0] ? p->owner : f->org,
        .days = days,
        .crl_shard = p->crl_shard,
    };
    rc = cf_issuer_sign_device_spki(f->issuer, spki, &profile, &p->cert, err);
out:
    EVP_PKEY_free(pub);
    X509_PUBKEY_free(spki);
    return rc;
}

cf_err cf_fleet_issue_prepare(cf_fleet *f, const cf_issue_req *req, cf_pending_cert *p,
                              cf_error *err)
{
    cf_err rc = issue_lookup(f, req, p, err);
    return rc == CF_OK ? issue_sign(f, p, err) : rc;
}

cf_err cf_fleet_issue_prepare_known(cf_fleet *f, const cf_issue_req *req, cf_device_state state,
                                    int64_t owner_id, const char *owner, cf_pending_cert *p,
                                    cf_error *err)
{
    memset(p, 0, sizeof *p);
    p->req = req;
    cf_err rc = issue_check_req(req, err);
    if (rc == CF_OK)
        rc = issue_known(req, state, owner_id, owner, p, err);
    return rc == CF_OK ? issue_sign(f, p, err) : rc;
}

/* The store's record of c, issued by the loaded issuer (rec borrows c's strings and DER). */
static void cert_rec_fill(cf_fleet *f, const cf_signed_cert *c, const char *device_id,
                          int64_t owner_id, cf_cert_rec *rec)
{
    memset(rec, 0, sizeof *rec);
    rec->der = c->der;
    rec->der_len = c->der_len;
    snprintf(rec->serial, sizeof rec->serial, "%s", c->serial);
    rec->ca_id = f->issuer_ca_id;
    rec->device_id = (char *)device_id;
    rec->owner_id = owner_id;
    rec->subject = c->subject;
    rec->not_before = c->not_before;
    rec->not_after = c->not_after;
    rec->issued_us = cf_time_now_us();
    rec->status = CF_CERT_GOOD;
    rec->reason = -1;
}

/* Inside the caller's transaction: the device (created or made active), the certificate
 * and the audit record. */
cf_err cf_fleet_issue_record(cf_fleet *f, const cf_pending_cert *p, cf_error *err)
{
    const cf_issue_req *req = p->req;
    cf_cert_rec rec;
    json_t *details = NULL;
    cf_device_state state;
    int64_t owner_id = 0;
    char owner[256];
    int created = 0;
    cf_err rc = CF_OK;
    cert_rec_fill(f, &p->cert, req->device_id, p->owner_id, &rec);
    rec.crl_shard = p->crl_shard;

    if (!p->device_exists)
        rc = cf_store_device_ensure(f->st, req->device_id, CF_DEVICE_ACTIVE, &created, err);
    if (rc == CF_OK && !created && p->locked) {
        state = p->locked_state; /* the caller read it in this transaction, under its lock */
        owner_id = p->locked_owner;
    } else if (rc == CF_OK && !created) {
        /* Re-read inside the transaction: the device may have changed hands since it was
         * signed for. */
        rc = cf_store_device_owner(f->st, req->device_id, &state, &owner_id, owner, sizeof owner,
                                   err);
    }
    if (rc == CF_OK && !created) {
        if (state == CF_DEVICE_DECOMMISSIONED)
            rc = cf_error_set(err, CF_ERR_POLICY, "device %s is decommissioned", req->device_id);
        else if (owner_id != p->owner_id)
            rc = cf_error_set(err, CF_ERR_STATE, "device %s changed owner during issuance",
                              req->device_id);
        else if (state != CF_DEVICE_ACTIVE)
            rc = cf_store_device_set_state(f->st, req->device_id, CF_DEVICE_ACTIVE, err);
    }
    if (rc == CF_OK)
        rc = cf_store_cert_insert(f->st, &rec, err);
    if (rc == CF_OK) {
        details =
            json_pack("{s:s, s:s, s:I, s:s}", "serial", p->cert.serial, "device", req->device_id,
                      "not_after", (json_int_t)rec.not_after, "key", p->keydesc);
        rc = cf_audit_append(f->st, req->actor, "cert.issue", req->device_id, details, NULL, err);
    }
    json_decref(details);
    return rc;
}

static cf_err issue_one_txn(cf_fleet *f, const cf_pending_cert *p, cf_error *err)
{
    cf_err rc = cf_store_begin(f->st, err);
    if (rc != CF_OK)
        return rc;
    if ((rc = cf_fleet_issue_record(f, p, err)) == CF_OK)
        rc = cf_store_commit(f->st, err);
    else
        cf_store_rollback(f->st);
    return rc;
}

cf_err cf_fleet_issue(cf_fleet *f, const cf_issue_req *req, cf_signed_cert *out, cf_error *err)
{
    cf_pending_cert p;
    cf_err rc = cf_fleet_issue_prepare(f, req, &p, err);
    /* A 128-bit random serial collides only by accident of the universe; the unique index
     * still decides, and a collision draws again. */
    for (int attempt = 0; rc == CF_OK && attempt < 3; attempt++) {
        rc = issue_one_txn(f, &p, err);
        if (rc != CF_ERR_EXISTS || !strstr(err->msg, "serial"))
            break;
        cf_fleet_pending_clear(&p);
        rc = cf_fleet_issue_prepare(f, req, &p, err);
    }
    if (rc == CF_OK)
        cf_fleet_pending_take(&p, out);
    cf_fleet_pending_clear(&p);
    return rc;
}

cf_err cf_fleet_issue_batch(cf_fleet *f, const cf_issue_req *reqs, size_t n,
                            cf_issue_result *results, cf_error *err)
{
    cf_pending_cert *ps = calloc(n ? n : 1, sizeof *ps);
    if (!ps)
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    size_t good = 0;
    /* The devices' owners are read from one snapshot (each is read again inside the
     * transaction that records its certificate), then the requests are verified and signed
     * with no transaction open. */
    cf_error ignored; /* without the snapshot, each lookup reads on its own */
    int reading = cf_store_read_begin(f->st, &ignored) == CF_OK;
    for (size_t i = 0; i < n; i++) {
        memset(&results[i].cert, 0, sizeof results[i].cert);
        results[i].rc = issue_lookup(f, &reqs[i], &ps[i], &results[i].err);
    }
    if (reading)
        cf_store_read_end(f->st);
    for (size_t i = 0; i < n; i++) {
        if (results[i].rc == CF_OK)
            results[i].rc = issue_sign(f, &ps[i], &results[i].err);
        good += results[i].rc == CF_OK;
    }
    cf_err rc = CF_OK;
    if (good > 0 && (rc = cf_store_begin(f->st, err)) == CF_OK) {
        for (size_t i = 0; i < n && rc == CF_OK; i++)
            if (results[i].rc == CF_OK)
                rc = cf_fleet_issue_record(f, &ps[i], err);
        if (rc == CF_OK)
            rc = cf_store_commit(f->st, err);
        else
            cf_store_rollback(f->st);
    }
    for (size_t i = 0; i < n; i++) {
        if (results[i].rc != CF_OK)
            continue;
        /* The shared transaction failed: each request gets its own, and its own error. */
        if (rc != CF_OK)
            results[i].rc = issue_one_txn(f, &ps[i], &results[i].err);
        if (results[i].rc == CF_OK)
            cf_fleet_pending_take(&ps[i], &results[i].cert);
    }
    for (size_t i = 0; i < n; i++)
        cf_fleet_pending_clear(&ps[i]);
    free(ps);
    return CF_OK;
}

cf_err cf_fleet_issue_server_cert(cf_fleet *f, EVP_PKEY *pub, const char *const *names, int nnames,
                                  int days, const char *actor, X509 **out, cf_error *err)
{
    char serial[CF_SERIAL_HEX_MAX];
    X509 *x = NULL;
    cf_signed_cert sc = {0};
    cf_cert_rec rec;
    json_t *details = NULL, *jnames = json_array();
    cf_err rc = load_issuer(f, err);
    if (rc == CF_OK)
        rc = cf_issuer_sign_server(f->issuer, pub, f->org, names, nnames, days, &x, serial, err);
    if (rc == CF_OK)
        rc = cf_x509_to_der(x, &sc.der, &sc.der_len, err);
    if (rc != CF_OK)
        goto out;
    snprintf(sc.serial, sizeof sc.serial, "%s", serial);
    sc.subject = cf_x509_subject_line(x);
    sc.not_before = cf_x509_not_before(x);
    sc.not_after = cf_x509_not_after(x);
    cert_rec_fill(f, &sc, NULL, 0, &rec);
    for (int i = 0; i < nnames; i++)
        json_array_append_new(jnames, json_string(names[i]));
    details = json_pack("{s:s, s:O, s:I}", "serial", serial, "names", jnames, "not_after",
                        (json_int_t)rec.not_after);
    if ((rc = cf_store_begin(f->st, err)) != CF_OK)
        goto out;
    rc = cf_store_cert_insert(f->st, &rec, err);
    if (rc == CF_OK)
        rc = cf_audit_append(f->st, actor, "cert.issue_server", names[0], details, NULL, err);
    if (rc == CF_OK)
        rc = cf_store_commit(f->st, err);
    else
        cf_store_rollback(f->st);
    if (rc == CF_OK) {
        *out = x;
        x = NULL;
    }
out:
    json_decref(details);
    json_decref(jnames);
    cf_signed_cert_clear(&sc);
    X509_free(x);
    return rc;
}

/* ---- chain and status ---- */

cf_err cf_fleet_chain(cf_fleet *f, X509 **issuing, X509 **root, cf_error *err)
{
    cf_err rc = load_chain(f, err);
    if (rc != CF_OK)
        return rc;
    *issuing = f->issuing;
    *root = f->root;
    return CF_OK;
}

cf_err cf_fleet_chain_pem(cf_fleet *f, char **pem, size_t *len, cf_error *err)
{
    X509 *issuing, *root;
    cf_err rc = cf_fleet_chain(f, &issuing, &root, err);
    if (rc != CF_OK)
        return rc;
    *pem = NULL;
    *len = 0;
    if ((rc = cf_x509_append_pem(issuing, pem, len, err)) != CF_OK ||
        (rc = cf_x509_append_pem(root, pem, len, err)) != CF_OK) {
        free(*pem);
        *pem = NULL;
    }
    return rc;
}

cf_err cf_fleet_get_status(cf_fleet *f, cf_fleet_status *out, cf_error *err)
{
    memset(out, 0, sizeof *out);
    char *org = NULL;
    cf_ca_rec *cas = NULL;
    size_t ncas = 0;
    unsigned char hash[CF_HASH_LEN];
    cf_err rc = cf_store_meta_get(f->st, "org", &org, err);
    if (rc == CF_ERR_NOT_FOUND)
        return cf_error_set(err, CF_ERR_STATE, "%s is not initialised: run certfleet init",
                            cf_store_describe(f->st));
    if (rc != CF_OK)
        return rc;
    snprintf(out->org, sizeof out->org, "%s", org);
    free(org);
    if ((rc = cf_store_ca_list(f->st, &cas, &ncas, err)) != CF_OK)
        return rc;
    for (size_t i = 0; i < ncas; i++)
        cf_ca_rec_clear(&cas[i]);
    free(cas);
    out->ca_count = (int64_t)ncas;
    if ((rc = cf_store_device_count(f->st, out->devices, err)) != CF_OK ||
        (rc = cf_store_cert_count(f->st, cf_time_now_us() / 1000000, &out->certs_total,
                                  &out->certs_valid, err)) != CF_OK ||
        (rc = cf_store_audit_head(f->st, &out->audit_seq, hash, err)) != CF_OK ||
        (rc = cf_store_schema_version(f->st, &out->schema_version, err)) != CF_OK)
        return rc;
    return CF_OK;
}

const char *cf_fleet_key_dir(const cf_fleet *f)
{
    return f->key_dir;
}
