/* bench/crl.c - revocation at the scale of a large fleet, through libcertfleet.
 *
 *   bench_crl fill DATA N       A new fleet in DATA (SQLite, P-256 CAs) with N devices of
 *                               batch "bulk", each with one certificate (a placeholder DER:
 *                               only serials matter here), and devices spare-1..spare-100
 *                               with real certificates.
 *   bench_crl revoke DATA       Revokes batch "bulk" (keyCompromise) in one transaction.
 *   bench_crl full DATA OUT     One full CRL from the store, as `certfleet crl` makes it, to
 *                               OUT (DER). Run under /usr/bin/time for its peak memory.
 *   bench_crl incremental DATA  A builder makes the full CRL, one more certificate is revoked,
 *                               and the builder brings the full CRL up to date: that last
 *                               step is timed.
 *   bench_crl delta DATA        With a builder's full CRL in place: the time from the start
 *                               of a revocation to its delta CRL, signed.
 *   bench_crl index DATA DIR    Writes DIR/index.txt and DIR/crlnumber, an `openssl ca`
 *                               database of the same revocations, for `openssl ca -gencrl`.
 * Each prints "KEY VALUE" lines for bench/crl to read. */
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/util.h"
#include "fleet/revoke.h"
#include "store/db.h"

static const cf_principal bench = {.actor = "bench", .owner_id = 0, .role = CF_ROLE_ADMIN};

static void die(const char *what, const cf_error *err)
{
    fprintf(stderr, "bench_crl: %s: %s\n", what, err ? err->msg : "failed");
    exit(1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static cf_fleet *open_fleet(const char *dir)
{
    cf_fleet *f;
    cf_error err;
    if (cf_fleet_open(dir, NULL, &f, &err) != CF_OK)
        die(dir, &err);
    return f;
}

static void exec_stmt(cf_store *st, cf_stmt *s)
{
    cf_error err;
    if (cf_db_run(st, s, &err) != CF_OK)
        die("insert", &err);
}

/* A real certificate for each spare device (revoked one by one later). */
static void spares(cf_fleet *f)
{
    for (int i = 1; i <= 100; i++) {
        char id[32];
        snprintf(id, sizeof id, "spare-%d", i);
        EVP_PKEY *key = NULL;
        cf_error err;
        if (cf_key_generate(CF_KEY_P256, &key, &err) != CF_OK)
            die("key", &err);
        X509_REQ *req = X509_REQ_new();
        X509_REQ_set_pubkey(req, key);
        X509_REQ_sign(req, key, EVP_sha256());
        unsigned char *der = NULL;
        int len = i2d_X509_REQ(req, &der);
        cf_issue_req r = {.csr = der, .csr_len = (size_t)len, .device_id = id, .actor = "bench"};
        cf_signed_cert cert;
        if (cf_fleet_issue(f, &r, &cert, &err) != CF_OK)
            die(id, &err);
        cf_signed_cert_clear(&cert);
        OPENSSL_free(der);
        X509_REQ_free(req);
        EVP_PKEY_free(key);
    }
}

static void fill(const char *dir, long n)
{
    cf_fleet *f = open_fleet(dir);
    cf_store *st = cf_fleet_store(f);
    cf_error err;
    cf_init_opts o = {.org = "Bench", .key_type = CF_KEY_P256, .actor = "bench"};
    if (cf_fleet_init(f, &o, &err) != CF_OK)
        die("init", &err);
    cf_ca_rec ca;
    if (cf_store_ca_active(st, CF_CA_ISSUING, &ca, &err) != CF_OK)
        die("CA", &err);
    double t0 = now_s();
    static const unsigned char placeholder[] = {0x30, 0x00};
    int64_t now = time(NULL);
    for (long i = 0; i < n;) {
        if (cf_store_begin(st, &err) != CF_OK)
            die("begin", &err);
        for (long end = i + 20000 < n ? i + 20000 : n; i < end; i++) {
            char id[32], serial[41];
            unsigned char raw[16];
            snprintf(id, sizeof id, "bulk-%08ld", i);
            if (cf_random_bytes(raw, sizeof raw, &err) != CF_OK)
                die("random", &err);
            raw[0] |= 0x40;
            cf_hex_encode(raw, sizeof raw, 1, serial);
            cf_stmt *s;
            if (st->ops->prepare(st,
                                 "INSERT INTO devices (id, state, batch, created_us, updated_us)"
                                 " VALUES (?, 'active', 'bulk', 1, 1)",
                                 1, &s, &err) != CF_OK)
                die("prepare", &err);
            st->ops->bind_text(s, 1, id);
            exec_stmt(st, s);
            if (st->ops->prepare(st,
                                 "INSERT INTO certificates (serial, ca_id, device_id, subject,"
                                 " not_before, not_after, issued_us, der, status)"
                                 " VALUES (?, ?, ?, 'CN=bench', ?, ?, 1, ?, 'good')",
                                 1, &s, &err) != CF_OK)
                die("prepare", &err);
            st->ops->bind_text(s, 1, serial);
            st->ops->bind_int64(s, 2, ca.id);
            st->ops->bind_text(s, 3, id);
            st->ops->bind_int64(s, 4, now - 60);
            st->ops->bind_int64(s, 5, now + 365 * 86400);
            st->ops->bind_blob(s, 6, placeholder, sizeof placeholder);
            exec_stmt(st, s);
        }
        if (cf_store_commit(st, &err) != CF_OK)
            die("commit", &err);
    }
    printf("fill_s %.3f\n", now_s() - t0);
    spares(f);
    cf_ca_rec_clear(&ca);
    cf_fleet_close(f);
}

static void progress(void *arg, int64_t done, int64_t total)
{
    (void)arg, (void)done, (void)total;
}

static void revoke_bulk(const char *dir)
{
    cf_fleet *f = open_fleet(dir);
    cf_error err;
    cf_revoke_result res;
    cf_revoke_req req = {.kind = CF_SEL_BATCH,
                         .target = "bulk",
                         .reason = CF_CRL_KEY_COMPROMISE,
                         .progress = progress};
    double t0 = now_s();
    if (cf_fleet_revoke(f, &bench, &req, &res, &err) != CF_OK)
        die("revoke", &err);
    printf("revoked %lld\nrevoke_s %.3f\n", (long long)res.revoked, now_s() - t0);
    cf_fleet_close(f);
}

static void full(const char *dir, const char *out)
{
    cf_fleet *f = open_fleet(dir);
    cf_error err;
    unsigned char *der;
    size_t len;
    cf_crl_info info;
    double t0 = now_s();
    if (cf_fleet_crl(f, NULL, 0, 0, &der, &len, &info, &err) != CF_OK)
        die("crl", &err);
    double t = now_s() - t0;
    FILE *fp = fopen(out, "wb");
    if (!fp || fwrite(der, 1, len, fp) != len || fclose(fp) != 0)
        die(out, NULL);
    printf("full_s %.3f\nentries %lld\nbytes %zu\n", t, (long long)info.entries, len);
    OPENSSL_free(der);
    cf_fleet_close(f);
}

static int spare_next;

/* Revokes the next spare device's certificate. */
static void revoke_spare(cf_fleet *f)
{
    char id[32];
    cf_error err;
    cf_revoke_result res;
    snprintf(id, sizeof id, "spare-%d", ++spare_next);
    cf_revoke_req req = {.kind = CF_SEL_DEVICE, .target = id, .reason = CF_CRL_SUPERSEDED};
    if (cf_fleet_revoke(f, &bench, &req, &res, &err) != CF_OK || res.revoked != 1)
        die("revoke spare", &err);
}

/* Finds the first spare device whose certificate is still good. */
static void spares_revoked(cf_fleet *f)
{
    cf_error err;
    int64_t good, revoked;
    cf_cert_sel sel = {.kind = CF_SEL_DEVICE};
    for (spare_next = 0; spare_next < 100; spare_next++) {
        char id[32];
        snprintf(id, sizeof id, "spare-%d", spare_next + 1);
        sel.text = id;
        if (cf_store_cert_count_sel(cf_fleet_store(f), &sel, &good, &revoked, &err) != CF_OK)
            die("count", &err);
        if (good)
            break;
    }
    if (spare_next >= 99)
        die("no spare device left: fill again", NULL);
}

static void incremental(const char *dir, int delta)
{
    cf_fleet *f = open_fleet(dir);
    cf_error err;
    cf_crl_builder *b;
    unsigned char *der;
    size_t len;
    cf_crl_info info;
    spares_revoked(f);
    if (cf_crl_builder_new(f, NULL, 0, &b, &err) != CF_OK ||
        cf_crl_builder_full(f, b, 1, &der, &len, &info, &err) != CF_OK)
        die("crl", &err);
    OPENSSL_free(der);
    double t0 = now_s();
    revoke_spare(f);
    double t1 = now_s();
    cf_err rc = delta ? cf_crl_builder_delta(f, b, 0, &der, &len, &info, &err)
                      : cf_crl_builder_full(f, b, 0, &der, &len, &info, &err);
    if (rc != CF_OK)
        die("crl", &err);
    double t2 = now_s();
    if (delta)
        printf("revoke_to_delta_ms %.2f\ndelta_build_ms %.2f\ndelta_entries %lld\n",
               (t2 - t0) * 1e3, (t2 - t1) * 1e3, (long long)info.entries);
    else
        printf("incremental_s %.4f\nentries %lld\nbytes %zu\n", t2 - t1, (long long)info.entries,
               len);
    OPENSSL_free(der);
    cf_crl_builder_free(b);
    cf_fleet_close(f);
}

static int index_row(void *arg, const char *serial, int64_t seq, const unsigned char *entry,
                     size_t len)
{
    FILE *fp = arg;
    (void)seq, (void)entry, (void)len;
    /* The revocation time and reason as `openssl ca` writes them into its database. */
    fprintf(fp, "R\t491231235959Z\t240101000000Z,keyCompromise\t%s\tunknown\t/CN=bench\n", serial);
    return 0;
}

static void index_txt(const char *dir, const char *out)
{
    cf_fleet *f = open_fleet(dir);
    cf_error err;
    char path[4200];
    cf_ca_rec ca;
    snprintf(path, sizeof path, "%s/index.txt", out);
    FILE *fp = fopen(path, "w");
    if (!fp)
        die(path, NULL);
    if (cf_store_ca_active(cf_fleet_store(f), CF_CA_ISSUING, &ca, &err) != CF_OK ||
        /* since 1, not 0: a whole-CRL read leaves the serials in the entries */
        cf_store_crl_entries_scan(cf_fleet_store(f), ca.id, 0, 1, index_row, fp, &err) != CF_OK)
        die("index", &err);
    fclose(fp);
    snprintf(path, sizeof path, "%s/crlnumber", out);
    if (!(fp = fopen(path, "w")))
        die(path, NULL);
    fprintf(fp, "01\n");
    fclose(fp);
    cf_ca_rec_clear(&ca);
    cf_fleet_close(f);
}

int main(int argc, char **argv)
{
    cf_keep_large_blocks(); /* as certfleet's main does */
    if (argc >= 4 && strcmp(argv[1], "fill") == 0)
        fill(argv[2], atol(argv[3]));
    else if (argc >= 3 && strcmp(argv[1], "revoke") == 0)
        revoke_bulk(argv[2]);
    else if (argc >= 4 && strcmp(argv[1], "full") == 0)
        full(argv[2], argv[3]);
    else if (argc >= 3 && strcmp(argv[1], "incremental") == 0)
        incremental(argv[2], 0);
    else if (argc >= 3 && strcmp(argv[1], "delta") == 0)
        incremental(argv[2], 1);
    else if (argc >= 4 && strcmp(argv[1], "index") == 0)
        index_txt(argv[2], argv[3]);
    else {
        fprintf(stderr, "usage: bench_crl fill|revoke|full|incremental|delta|index DATA [ARG]\n");
        return 2;
    }
    return 0;
}
