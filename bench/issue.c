/* bench/issue.c - certificates per second through libcertfleet's issuance path.
 *
 *   bench_issue STORE DATA_DIR CSRS COUNT
 *       Opens the fleet (STORE: a store URL, or "-" for the SQLite store in DATA_DIR),
 *       initialises it with P-256 CAs when it is new, loads the CSRs into memory (CSRS: a
 *       file of concatenated DER requests, or a directory of one request per file, PEM or
 *       DER), then times COUNT calls of cf_fleet_issue on one thread: CSR parse and
 *       verification, signing, encoding, and the store transaction with its audit record,
 *       each committed before the call returns. The CSRs are reused round-robin when there
 *       are fewer than COUNT; each issuance gets its own device id.
 *       The last line of output is "certs_per_s RATE".
 *
 *   bench_issue --make-csrs OUT COUNT [PEM_DIR PEM_COUNT]
 *       Writes COUNT P-256 CSRs, each with a key of its own, as concatenated DER to OUT, and
 *       the first PEM_COUNT of them as PEM_DIR/NNNNNN.csr (for peers such as
 *       `openssl x509 -req`). */
#include <dirent.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/fs.h"
#include "core/util.h"
#include "fleet/fleet.h"
#include "pki/csr.h"

/* Where one request starts in a csr_set's buffer, and how long it is. */
typedef struct {
    size_t off, len;
} csr_item;

/* The CSRs held in memory: one buffer, and the requests in it. */
typedef struct {
    unsigned char *data; /* owned */
    size_t data_len;
    csr_item *items; /* owned */
    size_t n, cap;
} csr_set;

static void die(const char *what, const cf_error *err)
{
    fprintf(stderr, "bench_issue: %s: %s\n", what, err ? err->msg : "failed");
    exit(1);
}

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double now_s(void)
{
    return clock_s(CLOCK_MONOTONIC);
}

/* User and system time of this process: what the issuance cost, without the time other
 * processes had the CPU. */
static double cpu_s(void)
{
    return clock_s(CLOCK_PROCESS_CPUTIME_ID);
}

static void csr_set_push(csr_set *cs, size_t off, size_t len)
{
    if (cs->n == cs->cap) {
        cs->cap = cs->cap ? cs->cap * 2 : 1024;
        cs->items = realloc(cs->items, cs->cap * sizeof *cs->items);
        if (!cs->items)
            die("out of memory", NULL);
    }
    cs->items[cs->n].off = off;
    cs->items[cs->n].len = len;
    cs->n++;
}

static void csr_set_append(csr_set *cs, const unsigned char *data, size_t len)
{
    unsigned char *nd = realloc(cs->data, cs->data_len + len);
    if (!nd)
        die("out of memory", NULL);
    cs->data = nd;
    memcpy(cs->data + cs->data_len, data, len);
    csr_set_push(cs, cs->data_len, len);
    cs->data_len += len;
}

/* Splits a buffer of concatenated DER requests at their outer SEQUENCE lengths. */
static void csr_set_split_der(csr_set *cs, const char *path)
{
    size_t off = 0;
    while (off < cs->data_len) {
        const unsigned char *p = cs->data + off;
        long len;
        int tag, cls;
        int r = ASN1_get_object(&p, &len, &tag, &cls, (long)(cs->data_len - off));
        if ((r & 0x80) || tag != V_ASN1_SEQUENCE) {
            fprintf(stderr, "bench_issue: %s: not DER at byte %zu\n", path, off);
            exit(1);
        }
        size_t total = (size_t)(p - (cs->data + off)) + (size_t)len;
        if (total > cs->data_len - off) {
            fprintf(stderr, "bench_issue: %s: truncated request at byte %zu\n", path, off);
            exit(1);
        }
        csr_set_push(cs, off, total);
        off += total;
    }
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void csr_set_load(csr_set *cs, const char *path)
{
    struct stat sb;
    cf_error err = {0};
    memset(cs, 0, sizeof *cs);
    if (stat(path, &sb) != 0) {
        fprintf(stderr, "bench_issue: %s: cannot stat\n", path);
        exit(1);
    }
    if (!S_ISDIR(sb.st_mode)) {
        char *buf;
        if (cf_fs_read_file(path, (size_t)1 << 31, &buf, &cs->data_len, &err) != CF_OK)
            die("reading CSRs", &err);
        cs->data = (unsigned char *)buf;
        csr_set_split_der(cs, path);
        return;
    }
    DIR *d = opendir(path);
    if (!d) {
        fprintf(stderr, "bench_issue: %s: cannot open directory\n", path);
        exit(1);
    }
    char **names = NULL;
    size_t nnames = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        names = realloc(names, (nnames + 1) * sizeof *names);
        if (!names || !(names[nnames++] = strdup(de->d_name)))
            die("out of memory", NULL);
    }
    closedir(d);
    qsort(names, nnames, sizeof *names, name_cmp);
    for (size_t i = 0; i < nnames; i++) {
        char file[4096], *buf;
        size_t len;
        snprintf(file, sizeof file, "%s/%s", path, names[i]);
        if (cf_fs_read_file(file, CF_CSR_MAX, &buf, &len, &err) != CF_OK)
            die("reading CSRs", &err);
        csr_set_append(cs, (unsigned char *)buf, len);
        free(buf);
        free(names[i]);
    }
    free(names);
}

static void init_if_new(cf_fleet *f)
{
    cf_error err = {0};
    cf_init_opts opts = {
        .org = "certfleet bench",
        .key_type = CF_KEY_P256,
        .actor = "bench",
    };
    cf_err rc = cf_fleet_init(f, &opts, &err);
    if (rc != CF_OK && rc != CF_ERR_STATE)
        die("init", &err);
}

static int run_bench(const char *store, const char *data_dir, const char *csrs, long count,
                     long batch)
{
    cf_fleet *f = NULL;
    cf_error err = {0};
    csr_set cs;
    csr_set_load(&cs, csrs);
    if (cs.n == 0) {
        fprintf(stderr, "bench_issue: %s holds no CSRs\n", csrs);
        return 1;
    }
    cf_keep_large_blocks(); /* as certfleet's main does */
    if (cf_fleet_open(data_dir, strcmp(store, "-") == 0 ? NULL : store, &f, &err) != CF_OK)
        die("open", &err);
    init_if_new(f);
    cf_fleet_status before, after;
    if (cf_fleet_get_status(f, &before, &err) != CF_OK)
        die("status", &err);

    /* One untimed issuance loads the issuing CA, as a running server would have. */
    char device[64];
    cf_issue_req req = {.actor = "bench"};
    cf_signed_cert x;
    snprintf(device, sizeof device, "bench-warm-%lld", (long long)before.certs_total);
    req.device_id = device;
    req.csr = cs.data + cs.items[0].off;
    req.csr_len = cs.items[0].len;
    if (cf_fleet_issue(f, &req, &x, &err) != CF_OK)
        die("issue (warm-up)", &err);
    cf_signed_cert_clear(&x);

    /* batch 1: one transaction per certificate (cf_fleet_issue); batch > 1: group commit
     * (cf_fleet_issue_batch, the fleet's call for issuing many at once; the EST server
     * commits each enrollment on its own). Either way a certificate counts only once its
     * transaction has committed. */
    cf_issue_req *reqs = calloc((size_t)batch, sizeof *reqs);
    cf_issue_result *res = calloc((size_t)batch, sizeof *res);
    char(*ids)[64] = calloc((size_t)batch, sizeof *ids);
    if (!reqs || !res || !ids)
        return 1;
    double t0 = now_s(), c0 = cpu_s();
    for (long i = 0; i < count;) {
        long n = count - i < batch ? count - i : batch;
        for (long j = 0; j < n; j++, i++) {
            size_t k = (size_t)i % cs.n;
            snprintf(ids[j], sizeof ids[j], "bench-%lld-%ld", (long long)before.certs_total, i);
            reqs[j] = (cf_issue_req){.csr = cs.data + cs.items[k].off,
                                     .csr_len = cs.items[k].len,
                                     .device_id = ids[j],
                                     .actor = "bench"};
        }
        if (batch == 1) {
            if (cf_fleet_issue(f, &reqs[0], &x, &err) != CF_OK)
                die("issue", &err);
            cf_signed_cert_clear(&x);
            continue;
        }
        if (cf_fleet_issue_batch(f, reqs, (size_t)n, res, &err) != CF_OK)
            die("issue batch", &err);
        for (long j = 0; j < n; j++) {
            if (res[j].rc != CF_OK)
                die("issue (in a batch)", &res[j].err);
            cf_signed_cert_clear(&res[j].cert);
        }
    }
    double secs = now_s() - t0, cpu = cpu_s() - c0;
    free(reqs);
    free(res);
    free(ids);

    if (cf_fleet_get_status(f, &after, &err) != CF_OK)
        die("status", &err);
    if (after.certs_total - before.certs_total != count + 1) {
        fprintf(stderr, "bench_issue: the store holds %lld new certificates, expected %ld\n",
                (long long)(after.certs_total - before.certs_total), count + 1);
        return 1;
    }
    printf("store     %s\n", cf_store_describe(cf_fleet_store(f)));
    printf("csrs      %zu distinct, %ld issued (each CSR verified per issuance)\n", cs.n, count);
    printf("batch     %ld certificate(s) per transaction\n", batch);
    printf("elapsed   %.3f s, %.1f us per certificate\n", secs, secs * 1e6 / (double)count);
    printf("cpu       %.3f s (user + system), %.1f us per certificate\n", cpu,
           cpu * 1e6 / (double)count);
    printf("certs_per_cpu_s %.1f\n", (double)count / cpu);
    printf("certs_per_s %.1f\n", (double)count / secs);
    cf_fleet_close(f);
    free(cs.data);
    free(cs.items);
    return 0;
}

/* ---- --make-csrs ---- */

static X509_REQ *make_csr(long i, EVP_PKEY **key)
{
    char cn[64];
    X509_REQ *req = X509_REQ_new();
    *key = EVP_EC_gen("P-256");
    snprintf(cn, sizeof cn, "bench-device-%06ld", i);
    if (!req || !*key || !X509_REQ_set_version(req, 0) || !X509_REQ_set_pubkey(req, *key) ||
        !X509_NAME_add_entry_by_NID(X509_REQ_get_subject_name(req), NID_commonName, MBSTRING_UTF8,
                                    (const unsigned char *)cn, -1, -1, 0) ||
        X509_REQ_sign(req, *key, EVP_sha256()) <= 0)
        die("making a CSR", NULL);
    return req;
}

static int make_csrs(const char *out, long count, const char *pem_dir, long pem_count)
{
    FILE *fo = fopen(out, "wb");
    if (!fo) {
        fprintf(stderr, "bench_issue: %s: cannot create\n", out);
        return 1;
    }
    cf_error err = {0};
    if (pem_dir && cf_fs_mkdirs(pem_dir, 0755, &err) != CF_OK)
        die("PEM directory", &err);
    double t0 = now_s();
    for (long i = 0; i < count; i++) {
        EVP_PKEY *key;
        X509_REQ *req = make_csr(i, &key);
        unsigned char *der = NULL;
        int n = i2d_X509_REQ(req, &der);
        if (n <= 0 || fwrite(der, 1, (size_t)n, fo) != (size_t)n)
            die("writing CSRs", NULL);
        OPENSSL_free(der);
        if (pem_dir && i < pem_count) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%06ld.csr", pem_dir, i);
            FILE *fp = fopen(path, "w");
            if (!fp || !PEM_write_X509_REQ(fp, req) || fclose(fp) != 0)
                die("writing a PEM CSR", NULL);
        }
        X509_REQ_free(req);
        EVP_PKEY_free(key);
    }
    if (fclose(fo) != 0)
        die("writing CSRs", NULL);
    fprintf(stderr, "bench_issue: %ld CSRs (P-256, one key each) in %.1f s\n", count, now_s() - t0);
    return 0;
}

static long parse_count(const char *s)
{
    char *end;
    long n = strtol(s, &end, 10);
    if (*end || n <= 0) {
        fprintf(stderr, "bench_issue: count \"%s\": expected a positive number\n", s);
        exit(2);
    }
    return n;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && strcmp(argv[1], "--make-csrs") == 0 && (argc == 4 || argc == 6))
        return make_csrs(argv[2], parse_count(argv[3]), argc == 6 ? argv[4] : NULL,
                         argc == 6 ? parse_count(argv[5]) : 0);
    if ((argc == 5 || argc == 6) && strncmp(argv[1], "--", 2) != 0)
        return run_bench(argv[1], argv[2], argv[3], parse_count(argv[4]),
                         argc == 6 ? parse_count(argv[5]) : 1);
    fprintf(stderr, "usage: bench_issue STORE|- DATA_DIR CSRS COUNT [BATCH]\n"
                    "       bench_issue --make-csrs OUT COUNT [PEM_DIR PEM_COUNT]\n");
    return 2;
}
