/* onboard.c - manufacturers and manifest imports.
 *
 * An import is a pipeline of three kinds of threads:
 *
 *   reader (1)  --chunks of parsed entries-->  verifiers (N)  --chunks of results-->  writer
 *
 * The reader streams the manifest; the verifiers check entries against one shared
 * cf_manifest_trust; the writer is the calling thread, the only one that touches the store,
 * and commits devices in batches. At most MAX_INFLIGHT chunks exist at once, so memory is
 * bounded whatever the manifest's size. */
#include "fleet/onboard.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit/audit.h"
#include "core/fs.h"
#include "core/util.h"
#include "pki/jose.h"
#include "pki/manifest.h"
#include "pki/manifest_make.h"
#include "pki/x509.h"

/* ---- manufacturers ---- */

/* Parses every certificate in src (PEM, one or more, or one DER) into *out. */
static cf_err parse_certs(const cf_onboard_cert_src *src, STACK_OF(X509) * out, cf_error *err)
{
    const unsigned char *p = src->data;
    if (src->len == 0 || src->len > INT32_MAX)
        return cf_error_set(err, CF_ERR_INVALID, "%s: empty or too large", src->what);
    if (p[0] == 0x30) {
        X509 *x = d2i_X509(NULL, &p, (long)src->len);
        if (!x || p != (const unsigned char *)src->data + src->len) {
            X509_free(x);
            return cf_error_openssl(err, CF_ERR_INVALID, "%s: not a DER certificate", src->what);
        }
        sk_X509_push(out, x);
        return CF_OK;
    }
    BIO *b = BIO_new_mem_buf(src->data, (int)src->len);
    if (!b)
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    cf_err rc = CF_OK;
    for (int n = 0;; n++) {
        X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
        if (!x) {
            unsigned long e = ERR_peek_last_error();
            if (n > 0 && ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)
                ERR_clear_error();
            else
                rc = cf_error_openssl(err, CF_ERR_INVALID, "%s: certificate %d is not valid PEM",
                                      src->what, n + 1);
            break;
        }
        sk_X509_push(out, x);
    }
    BIO_free(b);
    return rc;
}

/* Fills rec from x (rec->der: OPENSSL_malloc'ed, to be freed with OPENSSL_free). */
static cf_err cert_rec_from(X509 *x, int64_t mfr_id, cf_mfr_cert_kind kind, cf_mfr_cert_rec *rec,
                            char x5t[CF_JOSE_X5T_MAX], cf_error *err)
{
    memset(rec, 0, sizeof *rec);
    cf_err rc = cf_jose_x5t_s256(x, x5t, err);
    if (rc == CF_OK)
        rc = cf_x509_to_der(x, &rec->der, &rec->der_len, err);
    if (rc != CF_OK)
        return rc;
    rec->manufacturer_id = mfr_id;
    rec->kind = kind;
    rec->x5t = x5t;
    rec->subject = cf_x509_subject_line(x);
    rec->not_before = cf_x509_not_before(x);
    rec->not_after = cf_x509_not_after(x);
    return CF_OK;
}

/* Builds the trust of a manufacturer from its stored certificates (roots come first). */
static cf_err trust_from_store(cf_store *st, int64_t mfr_id, cf_manifest_trust **out,
                               size_t *nroots, size_t *nsigners, cf_error *err)
{
    cf_mfr_cert_rec *certs = NULL;
    size_t n = 0;
    cf_manifest_trust *t = NULL;
    *nroots = *nsigners = 0;
    cf_err rc = cf_store_mfr_cert_list(st, mfr_id, &certs, &n, err);
    if (rc != CF_OK)
        return rc;
    if ((rc = cf_manifest_trust_new(&t, err)) != CF_OK)
        goto out;
    for (size_t i = 0; i < n && rc == CF_OK; i++) {
        int signer = certs[i].kind == CF_MFR_CERT_SIGNER;
        rc = cf_manifest_trust_add_data(t, signer, certs[i].der, certs[i].der_len, err);
        if (rc != CF_OK)
            cf_error_prefix(err, "stored %s %s", signer ? "signer" : "root", certs[i].subject);
        (*(signer ? nsigners : nroots))++;
    }
out:
    for (size_t i = 0; i < n; i++)
        cf_mfr_cert_rec_clear(&certs[i]);
    free(certs);
    if (rc != CF_OK) {
        cf_manifest_trust_free(t);
        return rc;
    }
    *out = t;
    return CF_OK;
}

/* Adds the certificates of srcs as kind to the trust t (which checks them) and the store. */
static cf_err add_certs(cf_store *st, cf_manifest_trust *t, int64_t mfr_id, cf_mfr_cert_kind kind,
                        const cf_onboard_cert_src *srcs, size_t nsrcs, json_t *added, cf_error *err)
{
    cf_err rc = CF_OK;
    for (size_t i = 0; i < nsrcs && rc == CF_OK; i++) {
        STACK_OF(X509) *xs = sk_X509_new_null();
        if (!xs)
            return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
        rc = parse_certs(&srcs[i], xs, err);
        for (int j = 0; rc == CF_OK && j < sk_X509_num(xs); j++) {
            X509 *x = sk_X509_value(xs, j);
            rc = kind == CF_MFR_CERT_ROOT ? cf_manifest_trust_add_root(t, x, err)
                                          : cf_manifest_trust_add_signer(t, x, err);
            if (rc != CF_OK) {
                cf_error_prefix(err, "%s", srcs[i].what);
                break;
            }
            cf_mfr_cert_rec rec;
            char x5t[CF_JOSE_X5T_MAX];
            int created = 0;
            if ((rc = cert_rec_from(x, mfr_id, kind, &rec, x5t, err)) == CF_OK)
                rc = cf_store_mfr_cert_insert(st, &rec, &created, err);
            if (rc == CF_OK && created)
                json_array_append_new(added, json_pack("{s:s, s:s, s:s}", "kind",
                                                       cf_mfr_cert_kind_name(kind), "subject",
                                                       rec.subject, "x5t", x5t));
            OPENSSL_free(rec.der);
            free(rec.subject);
        }
        sk_X509_pop_free(xs, X509_free);
    }
    return rc;
}

/* The DER of the first certificate in src, for the manufacturers row. */
static cf_err first_der(const cf_onboard_cert_src *src, unsigned char **der, size_t *len,
                        cf_error *err)
{
    STACK_OF(X509) *xs = sk_X509_new_null();
    if (!xs)
        return cf_error_set(err, CF_ERR_NOMEM, "out of memory");
    cf_err rc = parse_certs(src, xs, err);
    if (rc == CF_OK)
        rc = cf_x509_to_der(sk_X509_value(xs, 0), der, len, err);
    sk_X509_pop_free(xs, X509_free);
    return rc;
}

cf_err cf_onboard_manufacturer_add(cf_fleet *f, const cf_onboard_mfr_req *req, json_t **details,
                                   cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_manifest_trust *t = NULL;
    cf_manufacturer_rec mfr = {0};
    unsigned char *root_der = NULL;
    size_t root_len = 0, nr = 0, ns = 0;
    json_t *added = json_array(), *d = NULL;
    int created = 0;
    cf_err rc;

    if (!cf_fleet_device_id_valid(req->name))
        return cf_error_set(err, CF_ERR_INVALID,
                            "manufacturer name \"%.64s\": expected 1..128 of A-Z a-z 0-9 . _ : -",
                            req->name);
    if ((rc = cf_store_begin(st, err)) != CF_OK)
        goto out;
    rc = cf_store_manufacturer_get(st, req->name, &mfr, err);
    if (rc == CF_ERR_NOT_FOUND) {
        if (req->nroots == 0) {
            rc = cf_error_set(err, CF_ERR_INVALID,
                              "manufacturer %s is new: it needs at least one --root", req->name);
            goto out;
        }
        if ((rc = first_der(&req->roots[0], &root_der, &root_len, err)) != CF_OK)
            goto out;
        rc = cf_store_manufacturer_insert(st, req->name, root_der, root_len, &mfr.id, err);
        created = 1;
    }
    if (rc == CF_OK)
        rc = trust_from_store(st, mfr.id, &t, &nr, &ns, err);
    if (rc == CF_OK)
        rc = add_certs(st, t, mfr.id, CF_MFR_CERT_ROOT, req->roots, req->nroots, added, err);
    if (rc == CF_OK)
        rc = add_certs(st, t, mfr.id, CF_MFR_CERT_SIGNER, req->signers, req->nsigners, added, err);
    if (rc == CF_OK && json_array_size(added) == 0)
        rc = cf_error_set(err, CF_ERR_EXISTS,
                          "manufacturer %s already has every certificate given; nothing changed",
                          req->name);
    if (rc != CF_OK)
        goto out;
    d = json_pack("{s:s, s:b, s:O}", "name", req->name, "created", created, "added", added);
    if ((rc = cf_audit_append(st, req->actor, "manufacturer.add", req->name, d, NULL, err)) !=
        CF_OK)
        goto out;
    rc = cf_store_commit(st, err);
out:
    if (rc != CF_OK)
        cf_store_rollback(st);
    if (rc == CF_OK && details)
        *details = json_incref(d);
    json_decref(d);
    json_decref(added);
    OPENSSL_free(root_der);
    cf_manifest_trust_free(t);
    cf_manufacturer_rec_clear(&mfr);
    return rc;
}

cf_err cf_onboard_manufacturer_remove(cf_fleet *f, const char *name, const char *actor,
                                      cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_manufacturer_rec mfr = {0};
    cf_mfr_cert_rec *certs = NULL;
    size_t n = 0;
    int64_t devices = 0;
    json_t *d = NULL;
    cf_err rc = cf_store_begin(st, err);
    if (rc != CF_OK)
        return rc;
    if ((rc = cf_store_manufacturer_get(st, name, &mfr, err)) != CF_OK)
        goto out;
    if ((rc = cf_store_manufacturer_devices(st, mfr.id, &devices, err)) != CF_OK)
        goto out;
    if (devices > 0) {
        rc = cf_error_set(err, CF_ERR_POLICY,
                          "manufacturer %s still has %lld device%s onboarded from its manifests;"
                          " nothing was removed",
                          name, (long long)devices, devices == 1 ? "" : "s");
        goto out;
    }
    if ((rc = cf_store_mfr_cert_list(st, mfr.id, &certs, &n, err)) != CF_OK)
        goto out;
    json_t *removed = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(removed, json_pack("{s:s, s:s, s:s}", "kind",
                                                 cf_mfr_cert_kind_name(certs[i].kind), "subject",
                                                 certs[i].subject, "x5t", certs[i].x5t));
    d = json_pack("{s:s, s:o}", "name", name, "certificates", removed);
    if ((rc = cf_store_manufacturer_delete(st, mfr.id, err)) != CF_OK)
        goto out;
    if ((rc = cf_audit_append(st, actor, "manufacturer.remove", name, d, NULL, err)) != CF_OK)
        goto out;
    rc = cf_store_commit(st, err);
out:
    if (rc != CF_OK)
        cf_store_rollback(st);
    for (size_t i = 0; i < n; i++)
        cf_mfr_cert_rec_clear(&certs[i]);
    free(certs);
    json_decref(d);
    cf_manufacturer_rec_clear(&mfr);
    return rc;
}

static json_t *time_json(int64_t us)
{
    char buf[CF_TIME_STR_MAX];
    return us ? json_string(cf_time_format(us, buf)) : json_null();
}

static cf_err describe_one(cf_store *st, const cf_manufacturer_rec *m, json_t **out, cf_error *err)
{
    cf_mfr_cert_rec *certs = NULL;
    cf_import_rec *imps = NULL;
    size_t nc = 0, ni = 0;
    int64_t devices = 0;
    cf_err rc = cf_store_mfr_cert_list(st, m->id, &certs, &nc, err);
    if (rc == CF_OK)
        rc = cf_store_import_list(st, m->id, 20, &imps, &ni, err);
    if (rc == CF_OK)
        rc = cf_store_manufacturer_devices(st, m->id, &devices, err);
    if (rc != CF_OK)
        goto out;
    json_t *jc = json_array(), *ji = json_array();
    for (size_t i = 0; i < nc; i++)
        json_array_append_new(jc, json_pack("{s:s, s:s, s:s, s:o, s:o}", "kind",
                                            cf_mfr_cert_kind_name(certs[i].kind), "subject",
                                            certs[i].subject, "x5t", certs[i].x5t, "not_before",
                                            time_json(certs[i].not_before * 1000000), "not_after",
                                            time_json(certs[i].not_after * 1000000)));
    for (size_t i = 0; i < ni; i++)
        json_array_append_new(
            ji,
            json_pack("{s:I, s:s, s:s, s:o, s:o, s:o, s:I, s:I, s:I, s:I, s:I}", "id",
                      (json_int_t)imps[i].id, "source", imps[i].source, "sha256", imps[i].sha256,
                      "batch", imps[i].batch ? json_string(imps[i].batch) : json_null(), "started",
                      time_json(imps[i].started_us), "finished", time_json(imps[i].finished_us),
                      "entries", (json_int_t)imps[i].entries, "added", (json_int_t)imps[i].added,
                      "present", (json_int_t)imps[i].present, "rejected",
                      (json_int_t)imps[i].rejected, "conflicts", (json_int_t)imps[i].conflicts));
    *out = json_pack("{s:I, s:s, s:o, s:I, s:o, s:o}", "id", (json_int_t)m->id, "name", m->name,
                     "created", time_json(m->created_us), "devices", (json_int_t)devices,
                     "certificates", jc, "imports", ji);
out:
    for (size_t i = 0; i < nc; i++)
        cf_mfr_cert_rec_clear(&certs[i]);
    for (size_t i = 0; i < ni; i++)
        cf_import_rec_clear(&imps[i]);
    free(certs);
    free(imps);
    return rc;
}

cf_err cf_onboard_manufacturer_describe(cf_fleet *f, const char *name, json_t **out, cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_manufacturer_rec *list = NULL, one = {0};
    size_t n = 0;
    cf_err rc;
    if (name) {
        if ((rc = cf_store_manufacturer_get(st, name, &one, err)) != CF_OK)
            return rc;
        rc = describe_one(st, &one, out, err);
        cf_manufacturer_rec_clear(&one);
        return rc;
    }
    if ((rc = cf_store_manufacturer_list(st, &list, &n, err)) != CF_OK)
        return rc;
    json_t *arr = json_array();
    for (size_t i = 0; i < n && rc == CF_OK; i++) {
        json_t *o = NULL;
        if ((rc = describe_one(st, &list[i], &o, err)) == CF_OK)
            json_array_append_new(arr, o);
    }
    for (size_t i = 0; i < n; i++)
        cf_manufacturer_rec_clear(&list[i]);
    free(list);
    if (rc != CF_OK) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return CF_OK;
}

/* ---- claim codes ---- */

void cf_onboard_claim_hash(const char *device_id, const unsigned char code[16],
                           unsigned char out[32])
{
    static const char label[] = "certfleet-claim-v1";
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int len = 32;
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) ||
        !EVP_DigestUpdate(ctx, label, sizeof label - 1) ||
        !EVP_DigestUpdate(ctx, device_id, strlen(device_id)) || !EVP_DigestUpdate(ctx, code, 16) ||
        !EVP_DigestFinal_ex(ctx, out, &len))
        abort(); /* SHA-256 does not fail short of memory exhaustion */
    EVP_MD_CTX_free(ctx);
}

/* The claim codes of a claim-codes.csv, sorted by unique id for bsearch. */
typedef struct {
    char uid[CF_MANIFEST_UID_MAX];
    unsigned char code[CF_CLAIM_CODE_BYTES];
} claim_code;

typedef struct {
    claim_code *codes;
    size_t n;
} claim_codes;

static int claim_cmp(const void *a, const void *b)
{
    return strcmp(((const claim_code *)a)->uid, ((const claim_code *)b)->uid);
}

static cf_err claim_codes_load(const char *path, claim_codes *cc, cf_error *err)
{
    FILE *fp = fopen(path, "r");
    char line[512];
    size_t cap = 0, lineno = 0;
    cf_err rc = CF_OK;
    if (!fp)
        return cf_error_set(err, CF_ERR_IO, "%s: %s", path, strerror(errno));
    while (fgets(line, sizeof line, fp)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (lineno == 1 && strncmp(line, "unique_id,", 10) == 0)
            continue;
        if (!line[0])
            continue;
        char *comma = strchr(line, ',');
        if (!comma || (size_t)(comma - line) >= CF_MANIFEST_UID_MAX) {
            rc = cf_error_set(err, CF_ERR_INVALID, "%s line %zu: expected unique_id,claim_code",
                              path, lineno);
            break;
        }
        *comma = '\0';
        if (cc->n == cap) {
            cap = cap ? cap * 2 : 1024;
            claim_code *nc = realloc(cc->codes, cap * sizeof *nc);
            if (!nc) {
                rc = cf_error_set(err, CF_ERR_NOMEM, "out of memory");
                break;
            }
            cc->codes = nc;
        }
        claim_code *c = &cc->codes[cc->n];
        memcpy(c->uid, line, (size_t)(comma - line) + 1); /* length checked above */
        if ((rc = cf_claim_code_parse(comma + 1, c->code, err)) != CF_OK) {
            cf_error_prefix(err, "%s line %zu", path, lineno);
            break;
        }
        cc->n++;
    }
    fclose(fp);
    OPENSSL_cleanse(line, sizeof line);
    if (rc == CF_OK)
        qsort(cc->codes, cc->n, sizeof *cc->codes, claim_cmp);
    return rc;
}

static const claim_code *claim_codes_find(const claim_codes *cc, const char *uid)
{
    claim_code key;
    if (!cc->n || strlen(uid) >= sizeof key.uid)
        return NULL;
    snprintf(key.uid, sizeof key.uid, "%s", uid);
    return bsearch(&key, cc->codes, cc->n, sizeof *cc->codes, claim_cmp);
}

static void claim_codes_free(claim_codes *cc)
{
    if (cc->codes)
        OPENSSL_cleanse(cc->codes, cc->n * sizeof *cc->codes);
    free(cc->codes);
    memset(cc, 0, sizeof *cc);
}

/* ---- the import pipeline ---- */

static const char *const problem_names[] = {"rejected", "conflict", "duplicate"};

const char *cf_onboard_problem_name(cf_onboard_problem_kind kind)
{
    return problem_names[kind];
}

#define CHUNK_ENTRIES 64
#define MAX_THREADS 256

typedef struct {
    size_t index;
    json_t *entry; /* from the reader; NULL when the reader or verifier rejected it */
    int ok;        /* verified: dev and key_fpr are set */
    cf_manifest_device dev;
    char key_fpr[CF_ONBOARD_FPR_MAX];
    char uid[CF_MANIFEST_UID_MAX]; /* for reports: dev.uid, the header's, or "?" */
    char *reason;                  /* why not ok (new) */
} item;

typedef struct chunk {
    struct chunk *next;
    size_t n;
    item items[CHUNK_ENTRIES];
} chunk;

typedef struct {
    chunk *head, *tail;
} queue;

typedef struct {
    /* fixed at start */
    const cf_manifest_trust *trust;
    cf_manifest_reader *reader;
    cf_manifest_bundle *bundle;
    volatile sig_atomic_t *cancel;
    int max_inflight;   /* chunks alive at once (memory bound) */
    int max_unverified; /* chunks read but not verified yet (each holds parsed JSON) */

    pthread_mutex_t mu;
    pthread_cond_t cv_work;  /* a chunk was queued for verifiers, or the reader ended */
    pthread_cond_t cv_done;  /* a chunk was verified, or a verifier ended */
    pthread_cond_t cv_space; /* a chunk was freed by the writer */
    queue todo, verified;
    int inflight, unverified;
    int reader_done, verifiers_running, stop;
    cf_err fatal_rc; /* the reader's fatal error (the file is broken) */
    cf_error fatal;
    _Atomic uint64_t offset;
} pipeline;

static void queue_push(queue *q, chunk *c)
{
    c->next = NULL;
    if (q->tail)
        q->tail->next = c;
    else
        q->head = c;
    q->tail = c;
}

static chunk *queue_pop(queue *q)
{
    chunk *c = q->head;
    if (c) {
        q->head = c->next;
        if (!q->head)
            q->tail = NULL;
    }
    return c;
}

static void chunk_free(chunk *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++) {
        json_decref(c->items[i].entry);
        cf_manifest_device_clear(&c->items[i].dev);
        free(c->items[i].reason);
    }
    free(c);
}

/* reason = the message without the verifier's "manifest entry N (uid U): " prefix, which
 * the report gives as fields of its own. */
static char *reason_of(const char *msg)
{
    const char *p = msg;
    if (strncmp(p, "manifest entry ", 15) == 0 || strncmp(p, "bundle device ", 14) == 0) {
        const char *q = strstr(p, "): ");
        if (q)
            p = q + 3;
    } else if (strncmp(p, "entry ", 6) == 0) {
        const char *q = strstr(p, ": ");
        if (q)
            p = q + 2;
    }
    return cf_strdup(p);
}

/* The unique id an entry names in its header, if it is a plausible one. */
static void header_uid(const json_t *entry, char uid[CF_MANIFEST_UID_MAX])
{
    const char *u =
        json_string_value(json_object_get(json_object_get(entry, "header"), "uniqueId"));
    if (u && cf_fleet_device_id_valid(u))
        snprintf(uid, CF_MANIFEST_UID_MAX, "%s", u);
    else
        snprintf(uid, CF_MANIFEST_UID_MAX, "?");
}

static void set_key_fpr(item *it)
{
    unsigned char md[32];
    if (it->dev.has_key) {
        cf_hex_encode(it->dev.spki_sha256, 32, 0, it->key_fpr);
        return;
    }
    const char *payload = json_string_value(json_object_get(it->entry, "payload"));
    size_t len = payload ? strlen(payload) : 0;
    EVP_Digest(payload ? payload : "", len, md, NULL, EVP_sha256(), NULL);
    char hex[65];
    snprintf(it->key_fpr, sizeof it->key_fpr, "payload-sha256:%s", cf_hex_encode(md, 32, 0, hex));
}

static void verify_item(const cf_manifest_trust *t, item *it)
{
    cf_error e = {0};
    if (!it->entry)
        return; /* rejected by the reader, or verified already (bundles) */
    if (cf_manifest_verify_entry(t, it->entry, it->index, &it->dev, &e) == CF_OK) {
        it->ok = 1;
        snprintf(it->uid, sizeof it->uid, "%s", it->dev.uid);
        set_key_fpr(it);
    } else {
        header_uid(it->entry, it->uid);
        it->reason = reason_of(e.msg);
    }
    /* Only the payload of keyless entries was needed past this point. */
    json_decref(it->entry);
    it->entry = NULL;
}

static void *verifier_main(void *arg)
{
    pipeline *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->todo.head && !p->reader_done && !p->stop)
            pthread_cond_wait(&p->cv_work, &p->mu);
        chunk *c = p->stop ? NULL : queue_pop(&p->todo);
        pthread_mutex_unlock(&p->mu);
        if (!c)
            break;
        for (size_t i = 0; i < c->n; i++)
            verify_item(p->trust, &c->items[i]);
        pthread_mutex_lock(&p->mu);
        p->unverified--;
        pthread_cond_signal(&p->cv_space);
        queue_push(&p->verified, c);
        pthread_cond_signal(&p->cv_done);
        pthread_mutex_unlock(&p->mu);
    }
    pthread_mutex_lock(&p->mu);
    p->verifiers_running--;
    pthread_cond_broadcast(&p->cv_done);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Reads the next entry into it. Returns 1 with an item, 0 at the end or on a fatal error
 * (recorded in p->fatal). */
static int read_item(pipeline *p, item *it)
{
    cf_error e = {0};
    memset(it, 0, sizeof *it);
    if (p->bundle) {
        size_t index = 0;
        cf_err rc = cf_manifest_bundle_next(p->bundle, &it->dev, &index, &e);
        if (rc == CF_OK && !it->dev.uid[0])
            return 0;
        if (rc != CF_OK && cf_manifest_bundle_failed(p->bundle)) {
            p->fatal_rc = rc;
            p->fatal = e;
            return 0;
        }
        it->index = index;
        if (rc == CF_OK) {
            it->ok = 1;
            snprintf(it->uid, sizeof it->uid, "%s", it->dev.uid);
            set_key_fpr(it);
        } else {
            snprintf(it->uid, sizeof it->uid, "?");
            it->reason = reason_of(e.msg);
        }
        return 1;
    }
    json_t *entry = NULL;
    size_t index = 0;
    cf_err rc = cf_manifest_reader_next(p->reader, &entry, &index, &e);
    atomic_store(&p->offset, cf_manifest_reader_offset(p->reader));
    if (rc == CF_OK && !entry)
        return 0;
    if (rc != CF_OK && (rc == CF_ERR_IO || cf_manifest_reader_failed(p->reader))) {
        p->fatal_rc = rc;
        p->fatal = e;
        return 0;
    }
    it->index = index;
    it->entry = entry;
    if (rc != CF_OK) {
        snprintf(it->uid, sizeof it->uid, "?");
        it->reason = reason_of(e.msg);
    }
    return 1;
}

static void *reader_main(void *arg)
{
    pipeline *p = arg;
    int more = 1;
    while (more) {
        pthread_mutex_lock(&p->mu);
        while ((p->inflight >= p->max_inflight || p->unverified >= p->max_unverified) && !p->stop)
            pthread_cond_wait(&p->cv_space, &p->mu);
        int stop = p->stop;
        if (!stop)
            p->inflight++;
        pthread_mutex_unlock(&p->mu);
        if (stop || (p->cancel && *p->cancel))
            break;
        chunk *c = calloc(1, sizeof *c);
        if (!c) {
            p->fatal_rc = cf_error_set(&p->fatal, CF_ERR_NOMEM, "out of memory");
            pthread_mutex_lock(&p->mu);
            p->inflight--;
            pthread_mutex_unlock(&p->mu);
            break;
        }
        while (c->n < CHUNK_ENTRIES && (more = read_item(p, &c->items[c->n])))
            c->n++;
        pthread_mutex_lock(&p->mu);
        if (c->n) {
            queue_push(&p->todo, c);
            p->unverified++;
            pthread_cond_signal(&p->cv_work);
        } else {
            p->inflight--;
            free(c);
        }
        pthread_mutex_unlock(&p->mu);
    }
    pthread_mutex_lock(&p->mu);
    p->reader_done = 1;
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* The writer's side: what it holds between commits. */
typedef struct {
    cf_fleet *f;
    cf_store *st;
    const cf_onboard_opts *o;
    pipeline *p;
    int64_t mfr_id;
    const char *default_batch; /* the manifest's file name */
    claim_codes codes;
    cf_import_rec imp;
    cf_onboard_stats *stats;
    int64_t start_us, last_progress_us;
    /* chunks whose devices are not committed yet */
    chunk *pending_head, *pending_tail;
    size_t pending_devices, pending_entries;
    size_t batch_size;
    cf_onboard_device *devs;
    cf_onboard_result *results;
    item **dev_items;
    unsigned char (*hashes)[CF_HASH_LEN];
} writer;

static void report(writer *w, cf_onboard_problem_kind kind, const item *it, const char *reason)
{
    if (!w->o->problem)
        return;
    cf_onboard_problem pr = {kind, it->index, it->uid[0] ? it->uid : "?", reason};
    w->o->problem(w->o->arg, &pr);
}

static void progress(writer *w, int force)
{
    int64_t now = cf_time_now_us();
    if (!w->o->progress || (!force && now - w->last_progress_us < 250000))
        return;
    w->last_progress_us = now;
    w->stats->seconds = (double)(now - w->start_us) / 1e6;
    w->stats->bytes_read = atomic_load(&w->p->offset);
    w->o->progress(w->o->arg, w->stats);
}

/* Commits the pending devices (and, with final, the import's end and its audit record). */
static cf_err flush(writer *w, int final, json_t *final_details, cf_error *err)
{
    cf_store *st = w->st;
    size_t nd = 0;
    cf_err rc;
    for (chunk *c = w->pending_head; c; c = c->next) {
        for (size_t i = 0; i < c->n; i++) {
            item *it = &c->items[i];
            if (!it->ok)
                continue;
            const claim_code *cc = claim_codes_find(&w->codes, it->dev.uid);
            if (cc)
                cf_onboard_claim_hash(it->dev.uid, cc->code, w->hashes[nd]);
            const char *batch = w->o->batch           ? w->o->batch
                                : it->dev.group_id[0] ? it->dev.group_id
                                                      : w->default_batch;
            w->devs[nd] = (cf_onboard_device){it->dev.uid,
                                              batch,
                                              it->dev.model,
                                              it->dev.part_number,
                                              it->dev.cert_der,
                                              it->dev.cert_der_len,
                                              it->key_fpr,
                                              it->dev.provisioned_at * 1000000,
                                              cc ? w->hashes[nd] : NULL};
            w->dev_items[nd++] = it;
        }
    }
    if ((rc = cf_store_begin(st, err)) != CF_OK)
        return rc;
    cf_onboard_stats s = *w->stats;
    if ((rc = cf_store_device_onboard(st, w->mfr_id, w->imp.id, w->devs, nd, w->results, err)) !=
        CF_OK)
        goto fail;
    for (size_t i = 0; i < nd; i++) {
        if (w->results[i] == CF_ONBOARD_ADDED)
            s.added++;
        else if (w->results[i] == CF_ONBOARD_PRESENT)
            s.present++;
        else if (w->results[i] == CF_ONBOARD_DUPLICATE)
            s.rejected++;
        else
            s.conflicts++;
    }
    for (chunk *c = w->pending_head; c; c = c->next)
        for (size_t i = 0; i < c->n; i++)
            if (!c->items[i].ok)
                s.rejected++;
    s.entries = s.committed = w->stats->committed + w->pending_entries;
    w->imp.entries = (int64_t)s.entries;
    w->imp.added = (int64_t)s.added;
    w->imp.present = (int64_t)s.present;
    w->imp.rejected = (int64_t)s.rejected;
    w->imp.conflicts = (int64_t)s.conflicts;
    if (final)
        w->imp.finished_us = cf_time_now_us();
    if ((rc = cf_store_import_update(st, &w->imp, err)) != CF_OK)
        goto fail;
    if (final) {
        json_object_set_new(final_details, "entries", json_integer((json_int_t)s.entries));
        json_object_set_new(final_details, "added", json_integer((json_int_t)s.added));
        json_object_set_new(final_details, "present", json_integer((json_int_t)s.present));
        json_object_set_new(final_details, "rejected", json_integer((json_int_t)s.rejected));
        json_object_set_new(final_details, "conflicts", json_integer((json_int_t)s.conflicts));
        char obj[32];
        snprintf(obj, sizeof obj, "import:%lld", (long long)w->imp.id);
        if ((rc = cf_audit_append(st, w->o->actor, "onboard.import", obj, final_details, NULL,
                                  err)) != CF_OK)
            goto fail;
    }
    if ((rc = cf_store_commit(st, err)) != CF_OK)
        return rc;
    /* Committed: acknowledge, then report. */
    *w->stats = s;
    for (size_t i = 0; i < nd; i++) {
        if (w->results[i] == CF_ONBOARD_CONFLICT)
            report(w, CF_ONBOARD_PROBLEM_CONFLICT, w->dev_items[i],
                   "unique id already onboarded with another key; left unchanged");
        else if (w->results[i] == CF_ONBOARD_DUPLICATE)
            report(w, CF_ONBOARD_PROBLEM_DUPLICATE, w->dev_items[i],
                   "duplicate of an earlier entry in this manifest");
    }
    for (chunk *c = w->pending_head; c; c = c->next)
        for (size_t i = 0; i < c->n; i++)
            if (!c->items[i].ok)
                report(w, CF_ONBOARD_PROBLEM_REJECTED, &c->items[i], c->items[i].reason);
    while (w->pending_head) {
        chunk *c = w->pending_head;
        w->pending_head = c->next;
        chunk_free(c);
        pthread_mutex_lock(&w->p->mu);
        w->p->inflight--;
        pthread_cond_signal(&w->p->cv_space);
        pthread_mutex_unlock(&w->p->mu);
    }
    w->pending_tail = NULL;
    w->pending_devices = w->pending_entries = 0;
    progress(w, 1);
    return CF_OK;
fail:
    cf_store_rollback(st);
    return rc;
}

static void take(writer *w, chunk *c)
{
    c->next = NULL;
    if (w->pending_tail)
        w->pending_tail->next = c;
    else
        w->pending_head = c;
    w->pending_tail = c;
    w->pending_entries += c->n;
    for (size_t i = 0; i < c->n; i++)
        w->pending_devices += c->items[i].ok;
}

/* The writer loop: takes verified chunks until the verifiers are done, committing every
 * batch_size devices. */
static cf_err drain(writer *w, cf_error *err)
{
    pipeline *p = w->p;
    cf_err rc = CF_OK;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->verified.head && p->verifiers_running > 0) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 250 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&p->cv_done, &p->mu, &ts);
            if (!p->verified.head && p->verifiers_running > 0) {
                pthread_mutex_unlock(&p->mu);
                progress(w, 0);
                pthread_mutex_lock(&p->mu);
            }
        }
        chunk *c = queue_pop(&p->verified);
        pthread_mutex_unlock(&p->mu);
        if (!c)
            return CF_OK;
        take(w, c);
        /* Pending entries count in progress, not yet as committed. */
        w->stats->entries = w->stats->committed + w->pending_entries;
        if (w->pending_devices >= w->batch_size ||
            w->pending_entries >= w->batch_size * 2) { /* bound rejected-only runs too */
            if ((rc = flush(w, 0, NULL, err)) != CF_OK)
                return rc;
        }
        progress(w, 0);
    }
}

static void pipeline_stop(pipeline *p)
{
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv_work);
    pthread_cond_broadcast(&p->cv_space);
    pthread_cond_broadcast(&p->cv_done);
    pthread_mutex_unlock(&p->mu);
}

static int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (int)n;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* The hex SHA-256 of the file at path, read in blocks. */
static cf_err file_sha256(const char *path, char hex[65], cf_error *err)
{
    unsigned char buf[65536], md[32];
    size_t n;
    cf_err rc = CF_OK;
    FILE *fp = fopen(path, "rb");
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!fp || !ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
        rc = fp ? cf_error_set(err, CF_ERR_NOMEM, "out of memory")
                : cf_error_set(err, CF_ERR_IO, "%s: %s", path, strerror(errno));
        goto out;
    }
    while ((n = fread(buf, 1, sizeof buf, fp)) > 0)
        EVP_DigestUpdate(ctx, buf, n);
    if (ferror(fp)) {
        rc = cf_error_set(err, CF_ERR_IO, "%s: read error", path);
        goto out;
    }
    EVP_DigestFinal_ex(ctx, md, NULL);
    cf_hex_encode(md, 32, 0, hex);
out:
    if (fp)
        fclose(fp);
    EVP_MD_CTX_free(ctx);
    return rc;
}

/* Opens the reader or the bundle for o into p. */
static cf_err open_source(const cf_onboard_opts *o, const cf_manifest_trust *t, pipeline *p,
                          cf_error *err)
{
    if (!o->bundle_sig)
        return cf_manifest_reader_open(o->manifest, &p->reader, err);
    char *sig = NULL;
    size_t sig_len = 0;
    cf_err rc = cf_fs_read_file(o->bundle_sig, 64 * 1024, &sig, &sig_len, err);
    if (rc == CF_OK)
        rc = cf_manifest_bundle_open(t, o->manifest, (const unsigned char *)sig, sig_len,
                                     &p->bundle, err);
    free(sig);
    return rc;
}

/* Opens the import's row, with an onboard.start audit record, in its own transaction: a
 * killed import leaves a trace of having begun. */
static cf_err import_begin(writer *w, const char *mfr_name, cf_error *err)
{
    cf_store *st = w->st;
    const cf_onboard_opts *o = w->o;
    w->imp.manufacturer_id = w->mfr_id;
    w->imp.source = cf_strdup(base_name(o->manifest));
    w->imp.batch = o->batch ? cf_strdup(o->batch) : NULL;
    w->imp.actor = cf_strdup(o->actor);
    w->imp.started_us = w->start_us;
    cf_err rc = cf_store_begin(st, err);
    if (rc != CF_OK)
        return rc;
    if ((rc = cf_store_import_insert(st, &w->imp, err)) == CF_OK) {
        char obj[32];
        snprintf(obj, sizeof obj, "import:%lld", (long long)w->imp.id);
        json_t *d = json_pack(
            "{s:s, s:s, s:o, s:b}", "manufacturer", mfr_name, "source", w->imp.source, "batch",
            o->batch ? json_string(o->batch) : json_null(), "bundle", o->bundle_sig != NULL);
        rc = cf_audit_append(st, o->actor, "onboard.start", obj, d, NULL, err);
        json_decref(d);
    }
    if (rc == CF_OK)
        rc = cf_store_commit(st, err);
    else
        cf_store_rollback(st);
    return rc;
}

cf_err cf_onboard_import(cf_fleet *f, const cf_onboard_opts *o, cf_onboard_stats *stats,
                         cf_error *err)
{
    cf_store *st = cf_fleet_store(f);
    cf_manufacturer_rec mfr = {0};
    cf_manifest_trust *t = NULL;
    pipeline p = {0};
    writer w = {0};
    pthread_t reader_tid, tids[MAX_THREADS];
    int nthreads =
        o->threads > 0 ? (o->threads > MAX_THREADS ? MAX_THREADS : o->threads) : online_cpus();
    int started = 0, reader_started = 0, bulk = 0;
    size_t nroots = 0, nsigners = 0;
    json_t *details = NULL;
    cf_err rc;

    memset(stats, 0, sizeof *stats);
    stats->threads = nthreads;
    w.f = f;
    w.st = st;
    w.o = o;
    w.p = &p;
    w.stats = stats;
    w.start_us = cf_time_now_us();
    w.batch_size = o->batch_size > 0 ? (size_t)o->batch_size : 2000;
    w.default_batch = base_name(o->manifest);
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cv_work, NULL);
    pthread_cond_init(&p.cv_done, NULL);
    pthread_cond_init(&p.cv_space, NULL);

    if ((rc = cf_store_manufacturer_get(st, o->manufacturer, &mfr, err)) != CF_OK)
        goto out;
    w.mfr_id = mfr.id;
    if ((rc = trust_from_store(st, mfr.id, &t, &nroots, &nsigners, err)) != CF_OK)
        goto out;
    if (nsigners == 0 && !o->bundle_sig) {
        rc = cf_error_set(err, CF_ERR_STATE,
                          "manufacturer %s has no manifest signer: add one with certfleet"
                          " manufacturer add --name %s --signer PEM",
                          mfr.name, mfr.name);
        goto out;
    }
    if (o->verify_time)
        cf_manifest_trust_set_time(t, o->verify_time);
    if (o->claim_codes && (rc = claim_codes_load(o->claim_codes, &w.codes, err)) != CF_OK)
        goto out;
    if ((rc = open_source(o, t, &p, err)) != CF_OK)
        goto out;
    if (p.reader)
        stats->bytes_total = cf_manifest_reader_size(p.reader);
    /* A batch holds at most batch_size devices plus the chunk that crossed the line. */
    size_t cap = w.batch_size + CHUNK_ENTRIES;
    w.devs = calloc(cap, sizeof *w.devs);
    w.results = calloc(cap, sizeof *w.results);
    w.dev_items = calloc(cap, sizeof *w.dev_items);
    w.hashes = calloc(cap, sizeof *w.hashes);
    if (!w.devs || !w.results || !w.dev_items || !w.hashes) {
        rc = cf_error_set(err, CF_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((rc = import_begin(&w, mfr.name, err)) != CF_OK)
        goto out;
    stats->import_id = w.imp.id;
    if ((rc = cf_store_bulk_mode(st, 1, err)) != CF_OK)
        goto out;
    bulk = 1;

    p.trust = t;
    p.cancel = o->cancel;
    /* The writer holds at most 2 * batch_size entries plus one chunk before it commits; the
     * verifiers get two chunks each to work on. */
    p.max_unverified = 2 * nthreads + 2;
    p.max_inflight = (int)(2 * w.batch_size / CHUNK_ENTRIES) + p.max_unverified + 4;
    p.verifiers_running = nthreads;
    if (pthread_create(&reader_tid, NULL, reader_main, &p) != 0) {
        rc = cf_error_set(err, CF_ERR_INTERNAL, "cannot start the reader thread");
        goto out;
    }
    reader_started = 1;
    for (; started < nthreads; started++)
        if (pthread_create(&tids[started], NULL, verifier_main, &p) != 0)
            break;
    if (started == 0) {
        rc = cf_error_set(err, CF_ERR_INTERNAL, "cannot start verifier threads");
        goto out;
    }
    /* Threads that did not start never count down themselves (those that did may already
     * have ended: only subtract). */
    pthread_mutex_lock(&p.mu);
    p.verifiers_running -= nthreads - started;
    pthread_cond_broadcast(&p.cv_done);
    pthread_mutex_unlock(&p.mu);
    stats->threads = started;

    rc = drain(&w, err);
    if (rc != CF_OK)
        goto out;
    pthread_join(reader_tid, NULL);
    reader_started = 0;
    for (int i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    started = 0;

    stats->interrupted = o->cancel && *o->cancel && !p.fatal_rc;
    unsigned char md[32];
    stats->complete =
        !p.fatal_rc && !stats->interrupted && (p.bundle || cf_manifest_reader_sha256(p.reader, md));
    if (stats->complete && p.reader)
        cf_hex_encode(md, 32, 0, stats->sha256);
    if (stats->complete && !p.reader &&
        (rc = file_sha256(o->manifest, stats->sha256, err)) != CF_OK)
        goto out; /* the bundle: the PEM file whose signature was verified */
    free(w.imp.sha256);
    w.imp.sha256 = cf_strdup(stats->sha256);
    details =
        json_pack("{s:s, s:s, s:o, s:o, s:b, s:b, s:o}", "manufacturer", mfr.name, "source",
                  w.imp.source, "batch", o->batch ? json_string(o->batch) : json_null(),
                  "manifest_sha256", stats->sha256[0] ? json_string(stats->sha256) : json_null(),
                  "complete", stats->complete, "interrupted", stats->interrupted, "error",
                  p.fatal_rc ? json_string(p.fatal.msg) : json_null());
    if ((rc = flush(&w, 1, details, err)) != CF_OK)
        goto out;
    stats->seconds = (double)(cf_time_now_us() - w.start_us) / 1e6;
    stats->bytes_read = atomic_load(&p.offset);
    if (p.fatal_rc) {
        rc = cf_error_set(err, p.fatal_rc,
                          "%s: %s; the %llu entries before it were handled and committed"
                          " (run again after fixing the file to finish)",
                          o->manifest, p.fatal.msg, (unsigned long long)stats->entries);
    }
out:
    if (reader_started || started) {
        pipeline_stop(&p);
        if (reader_started)
            pthread_join(reader_tid, NULL);
        for (int i = 0; i < started; i++)
            pthread_join(tids[i], NULL);
    }
    chunk *c;
    while ((c = queue_pop(&p.todo)))
        chunk_free(c);
    while ((c = queue_pop(&p.verified)))
        chunk_free(c);
    while ((c = w.pending_head)) {
        w.pending_head = c->next;
        chunk_free(c);
    }
    if (bulk) {
        cf_error ignored;
        cf_store_bulk_mode(st, 0, &ignored); /* only the page cache's size and checkpoints */
    }
    json_decref(details);
    free(w.devs);
    free(w.results);
    free(w.dev_items);
    free(w.hashes);
    claim_codes_free(&w.codes);
    cf_import_rec_clear(&w.imp);
    cf_manifest_reader_free(p.reader);
    cf_manifest_bundle_free(p.bundle);
    cf_manifest_trust_free(t);
    cf_manufacturer_rec_clear(&mfr);
    pthread_mutex_destroy(&p.mu);
    pthread_cond_destroy(&p.cv_work);
    pthread_cond_destroy(&p.cv_done);
    pthread_cond_destroy(&p.cv_space);
    return rc;
}
