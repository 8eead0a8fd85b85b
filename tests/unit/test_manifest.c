/* Unit tests of src/pki/manifest and src/pki/jose: the streaming reader, entry verification
 * against Microchip's real manifests (tests/data/microchip), tampered and hostile inputs,
 * detached-signature PEM bundles made with the openssl command line, the chains a trust
 * remembers (src/pki/manifest.c) and the manifest JSON parser (src/pki/manifest_json.c). */
#include "testutil.h"

#include <jansson.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fs.h"
#include "pki/jose.h"
#include "pki/manifest.h"
#include "pki/manifest_json.h"

#define ROOT "Crypto_Authentication_Root_CA_002.crt"
#define SIGNER2 "MCHP_manifest_signer_2_Aug-15-2019_Aug-15-2020.crt"
#define SIGNER4 "MCHP_manifest_signer_4_Jul-18-2023_Jul-18-2026.crt"
#define SIGNER5 "MCHP_manifest_signer_5_Mar_6-2024_noExpiration.crt"
#define DUMMY_SIGNER "pytrustplatform_dummy_signer-ca.crt"
#define TNGTLSU "ECC608C-TNGTLSU-B.json"
#define TMNGTLSS "ECC608-TMNGTLSS-B.json"
#define MAH4I "manifest_ATECC608A-MAH4I.json"
#define TOOL_OUTPUT "pytrustplatform_tool_output_manifest.json"

/* ---- helpers ---------------------------------------------------------------------------- */

static const char *data_path(const char *name)
{
    static char path[1024];
    const char *src = getenv("CF_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/tests/data/microchip/%s", src ? src : ".", name);
    return path;
}

static const char *tmp_path(const char *name)
{
    static char path[1024];
    snprintf(path, sizeof path, "%s/manifest-%d-%s", tu_tmpdir(), (int)getpid(), name);
    return path;
}

static char *read_data(const char *name, size_t *len)
{
    char *buf = NULL;
    cf_error err;
    if (cf_fs_read_file(data_path(name), 16 << 20, &buf, len, &err) != CF_OK)
        fail_msg("%s", err.msg);
    return buf;
}

static X509 *load_cert(const char *name)
{
    FILE *f = fopen(data_path(name), "r");
    assert_non_null(f);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    return x;
}

/* A trust with Root CA 002 and the signers named (NULL-terminated). */
static cf_manifest_trust *make_trust(const char *signer1, ...)
{
    cf_manifest_trust *t = NULL;
    cf_error err;
    assert_int_equal(cf_manifest_trust_new(&t, &err), CF_OK);
    X509 *root = load_cert(ROOT);
    assert_int_equal(cf_manifest_trust_add_root(t, root, &err), CF_OK);
    X509_free(root);
    va_list ap;
    va_start(ap, signer1);
    for (const char *s = signer1; s; s = va_arg(ap, const char *)) {
        size_t len;
        char *pem = read_data(s, &len);
        if (cf_manifest_trust_add_data(t, 1, pem, len, &err) != CF_OK)
            fail_msg("%s", err.msg);
        free(pem);
    }
    va_end(ap);
    return t;
}

static cf_manifest_trust *microchip_trust(void)
{
    return make_trust(SIGNER2, SIGNER4, SIGNER5, DUMMY_SIGNER, NULL);
}

/* Results of reading and verifying a whole manifest. */
typedef struct {
    size_t entries, good;
    size_t bad_index[8];
    cf_err bad_code[8];
    char bad_msg[8][CF_ERROR_MSG_MAX];
    size_t nbad;
    int stream_failed;
    char stream_msg[CF_ERROR_MSG_MAX];
    int with_cert, with_key;
} run_result;

static void run_reader(cf_manifest_reader *r, const cf_manifest_trust *t, run_result *res)
{
    memset(res, 0, sizeof *res);
    for (;;) {
        json_t *entry = NULL;
        size_t index = 0;
        cf_error err;
        cf_err rc = cf_manifest_reader_next(r, &entry, &index, &err);
        if (rc == CF_OK && !entry)
            break;
        if (rc != CF_OK) {
            if (cf_manifest_reader_failed(r)) {
                res->stream_failed = 1;
                snprintf(res->stream_msg, sizeof res->stream_msg, "%s", err.msg);
                break;
            }
        } else {
            cf_manifest_device dev;
            rc = cf_manifest_verify_entry(t, entry, index, &dev, &err);
            json_decref(entry);
            if (rc == CF_OK) {
                res->good++;
                res->with_cert += dev.cert_der != NULL;
                res->with_key += dev.has_key;
                cf_manifest_device_clear(&dev);
            }
        }
        res->entries++;
        if (rc != CF_OK && res->nbad < 8) {
            res->bad_index[res->nbad] = index;
            res->bad_code[res->nbad] = rc;
            snprintf(res->bad_msg[res->nbad], CF_ERROR_MSG_MAX, "%s", err.msg);
            res->nbad++;
        }
    }
}

static void run_file(const char *path, const cf_manifest_trust *t, run_result *res)
{
    cf_manifest_reader *r = NULL;
    cf_error err;
    if (cf_manifest_reader_open(path, &r, &err) != CF_OK)
        fail_msg("%s", err.msg);
    run_reader(r, t, res);
    cf_manifest_reader_free(r);
}

static void run_mem(const char *data, const cf_manifest_trust *t, run_result *res)
{
    cf_manifest_reader *r = NULL;
    cf_error err;
    assert_int_equal(cf_manifest_reader_open_mem(data, strlen(data), &r, &err), CF_OK);
    run_reader(r, t, res);
    cf_manifest_reader_free(r);
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* The n-th entry of a real manifest, parsed (json_decref). */
static json_t *real_entry(const char *name, size_t n)
{
    json_error_t jerr;
    json_t *all = json_load_file(data_path(name), 0, &jerr);
    assert_non_null(all);
    json_t *e = json_incref(json_array_get(all, n));
    json_decref(all);
    assert_non_null(e);
    return e;
}

/* The position of the k-th occurrence of the string value of member "name" in text. */
static char *nth_member_value(char *text, const char *name, int k)
{
    char key[64];
    snprintf(key, sizeof key, "\"%s\"", name);
    char *p = text;
    for (int i = 0; i <= k; i++) {
        p = strstr(p, key);
        assert_non_null(p);
        p += strlen(key);
    }
    p = strchr(p, '"');
    assert_non_null(p);
    return p + 1;
}

/* Changes the character at p to another of the same base64url alphabet. */
static void flip_b64_char(char *p)
{
    *p = *p == 'A' ? 'B' : 'A';
}

/* ---- entries made here, signed by a signer made here ------------------------------------- */

typedef struct {
    EVP_PKEY *key;
    X509 *cert;
} test_signer;

static test_signer make_signer(const char *not_before, const char *not_after)
{
    test_signer s;
    s.key = EVP_EC_gen("P-256");
    assert_non_null(s.key);
    s.cert = X509_new();
    X509_set_version(s.cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(s.cert), 7);
    X509_NAME *n = X509_get_subject_name(s.cert);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"Test Signer", -1, -1,
                               0);
    X509_set_issuer_name(s.cert, n);
    assert_int_equal(ASN1_TIME_set_string(X509_getm_notBefore(s.cert), not_before), 1);
    assert_int_equal(ASN1_TIME_set_string(X509_getm_notAfter(s.cert), not_after), 1);
    X509_set_pubkey(s.cert, s.key);
    assert_true(X509_sign(s.cert, s.key, EVP_sha256()) > 0);
    return s;
}

static void free_signer(test_signer *s)
{
    EVP_PKEY_free(s->key);
    X509_free(s->cert);
}

static char *b64url_of(const void *data, size_t len)
{
    char *out = malloc(CF_B64URL_LEN(len) + 1);
    return cf_b64url_encode(data, len, out);
}

/* A JWS entry over payload signed by s, as a manifest maker writes it. */
static json_t *sign_entry(const test_signer *s, json_t *payload, const char *header_uid)
{
    char x5t[CF_JOSE_X5T_MAX];
    cf_error err;
    assert_int_equal(cf_jose_x5t_s256(s->cert, x5t, &err), CF_OK);
    json_t *hdr = json_pack("{s:s, s:s, s:s}", "typ", "JWT", "x5t#S256", x5t, "alg", "ES256");
    char *hdr_text = json_dumps(hdr, JSON_COMPACT);
    char *pay_text = json_dumps(payload, JSON_COMPACT);
    char *prot = b64url_of(hdr_text, strlen(hdr_text));
    char *pay = b64url_of(pay_text, strlen(pay_text));
    size_t input_len = strlen(prot) + 1 + strlen(pay);
    char *input = malloc(input_len + 1);
    snprintf(input, input_len + 1, "%s.%s", prot, pay);

    unsigned char der[128], raw[64];
    size_t der_len = sizeof der;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, s->key), 1);
    assert_int_equal(EVP_DigestSign(md, der, &der_len, (const unsigned char *)input, input_len), 1);
    EVP_MD_CTX_free(md);
    const unsigned char *p = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    assert_non_null(es);
    BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32);
    ECDSA_SIG_free(es);
    char *sig = b64url_of(raw, 64);

    json_t *entry = json_pack("{s:s, s:s, s:{s:s}, s:s}", "payload", pay, "protected", prot,
                              "header", "uniqueId", header_uid, "signature", sig);
    free(sig);
    free(input);
    free(prot);
    free(pay);
    free(hdr_text);
    free(pay_text);
    json_decref(hdr);
    return entry;
}

/* The decoded payload of a real entry (json_decref). */
static json_t *real_payload(const char *name, size_t n)
{
    json_t *e = real_entry(name, n);
    const char *pay = json_string_value(json_object_get(e, "payload"));
    unsigned char *raw;
    size_t len;
    cf_error err;
    assert_int_equal(cf_b64url_decode(pay, strlen(pay), &raw, &len, &err), CF_OK);
    json_t *j = json_loadb((const char *)raw, len, 0, NULL);
    free(raw);
    json_decref(e);
    assert_non_null(j);
    return j;
}

static cf_manifest_trust *trust_with_test_signer(const test_signer *s)
{
    cf_manifest_trust *t = make_trust(NULL);
    cf_error err;
    assert_int_equal(cf_manifest_trust_add_signer(t, s->cert, &err), CF_OK);
    return t;
}

/* ---- jose ------------------------------------------------------------------------------- */

static void test_base64url_round_trip_and_strictness(void **state)
{
    const unsigned char data[] = {0xfb, 0xff, 0x00, 0x10, 0x7e};
    char enc[16];
    unsigned char *dec;
    size_t len;
    cf_error err;
    for (size_t n = 0; n <= sizeof data; n++) {
        cf_b64url_encode(data, n, enc);
        assert_int_equal(strlen(enc), CF_B64URL_LEN(n));
        assert_int_equal(cf_b64url_decode(enc, strlen(enc), &dec, &len, &err), CF_OK);
        assert_int_equal(len, n);
        assert_memory_equal(dec, data, n);
        free(dec);
    }
    assert_string_equal(cf_b64url_encode(data, 2, enc), "-_8");
    assert_int_equal(cf_b64url_decode("-_8=", 4, &dec, &len, &err), CF_ERR_INVALID);
    assert_int_equal(cf_b64url_decode("+/8", 3, &dec, &len, &err), CF_ERR_INVALID);
    assert_int_equal(cf_b64url_decode("-_9", 3, &dec, &len, &err), CF_ERR_INVALID); /* spare bits */
    assert_non_null(strstr(err.msg, "non-zero bits"));
    assert_int_equal(cf_b64url_decode("A", 1, &dec, &len, &err), CF_ERR_INVALID);
    assert_int_equal(cf_b64_decode("+/8=", 4, &dec, &len, &err), CF_OK);
    assert_memory_equal(dec, data, 2);
    free(dec);
    assert_int_equal(cf_b64_decode("+/8", 3, &dec, &len, &err), CF_ERR_INVALID);
    assert_int_equal(cf_b64_decode("-_8=", 4, &dec, &len, &err), CF_ERR_INVALID);
}

static void test_jwk_off_curve_point_and_wrong_curve_are_refused(void **state)
{
    EVP_PKEY *key = NULL;
    cf_error err;
    json_t *good = json_pack("{s:s, s:s, s:s, s:s}", "kty", "EC", "crv", "P-256", "x",
                             "2epNuFqLlrbMIg_2P9W9u-oWZJ_qgpbiOGLNCWOsVFw", "y",
                             "V9uW9gWQCyAu8uxQOFQ4AFDaxrtqbvUuvmJ5LF1Fn00");
    assert_int_equal(cf_jwk_ec_import(good, &key, &err), CF_OK);
    EVP_PKEY_free(key);
    json_object_set_new(good, "y", json_string("V9uW9gWQCyAu8uxQOFQ4AFDaxrtqbvUuvmJ5LF1Fn0A"));
    assert_int_equal(cf_jwk_ec_import(good, &key, &err), CF_ERR_INVALID);
    json_object_set_new(good, "crv", json_string("P-521"));
    assert_int_equal(cf_jwk_ec_import(good, &key, &err), CF_ERR_POLICY);
    json_object_set_new(good, "kty", json_string("RSA"));
    assert_int_equal(cf_jwk_ec_import(good, &key, &err), CF_ERR_POLICY);
    json_decref(good);
}

/* ---- the real manifests ------------------------------------------------------------------ */

static void test_real_manifests_all_entries_verify(void **state)
{
    static const struct {
        const char *file;
        size_t n;
        int with_cert;
    } cases[] = {{TNGTLSU, 10, 10}, {TMNGTLSS, 10, 0}, {MAH4I, 2, 2}, {TOOL_OUTPUT, 1, 1}};
    cf_manifest_trust *t = microchip_trust();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_result res;
        run_file(data_path(cases[i].file), t, &res);
        if (res.nbad)
            fail_msg("%s: %s", cases[i].file, res.bad_msg[0]);
        assert_false(res.stream_failed);
        assert_int_equal(res.entries, cases[i].n);
        assert_int_equal(res.good, cases[i].n);
        assert_int_equal(res.with_cert, cases[i].with_cert);
        assert_int_equal(res.with_key, cases[i].with_cert);
    }
    cf_manifest_trust_free(t);
}

static void test_real_entry_yields_device_fields(void **state)
{
    cf_manifest_trust *t = make_trust(SIGNER5, NULL);
    json_t *e = real_entry(TNGTLSU, 0);
    cf_manifest_device dev;
    cf_error err;
    if (cf_manifest_verify_entry(t, e, 0, &dev, &err) != CF_OK)
        fail_msg("%s", err.msg);
    assert_string_equal(dev.uid, "0123f2408ea1fcf201");
    assert_string_equal(dev.model, "ATECC608C");
    assert_string_equal(dev.part_number, "ATECC608C-TNGTLSU-B");
    assert_string_equal(dev.group_id, "P5C8Q2UDYWLQ7HB4");
    assert_int_equal(dev.version, 1);
    assert_int_equal(dev.provisioned_at, 1748808893); /* 2025-06-01T20:14:53.773Z */
    assert_string_equal(dev.signer_x5t, "Vx2ZhBEX46-zTyiIYEWQP6eFzCg90ugGjh5epGBM4OM");
    assert_non_null(dev.cert_der);
    assert_true(dev.has_key);
    /* The fingerprint is the SHA-256 of the device certificate's SubjectPublicKeyInfo. */
    const unsigned char *p = dev.cert_der;
    X509 *cert = d2i_X509(NULL, &p, (long)dev.cert_der_len);
    assert_non_null(cert);
    unsigned char *spki = NULL, md[32];
    unsigned int mdlen;
    int n = i2d_PUBKEY(X509_get0_pubkey(cert), &spki);
    EVP_Digest(spki, (size_t)n, md, &mdlen, EVP_sha256(), NULL);
    assert_memory_equal(md, dev.spki_sha256, 32);
    OPENSSL_free(spki);
    X509_free(cert);
    cf_manifest_device_clear(&dev);
    json_decref(e);
    cf_manifest_trust_free(t);
}

static void test_version2_entries_have_no_key_and_verify_by_jws_alone(void **state)
{
    cf_manifest_trust *t = make_trust(SIGNER5, NULL);
    json_t *e = real_entry(TMNGTLSS, 3);
    cf_manifest_device dev;
    cf_error err;
    assert_int_equal(cf_manifest_verify_entry(t, e, 3, &dev, &err), CF_OK);
    assert_int_equal(dev.version, 2);
    assert_null(dev.cert_der);
    assert_false(dev.has_key);
    assert_string_equal(dev.part_number, "ATECC608C-SSH8Q");
    cf_manifest_device_clear(&dev);
    json_decref(e);
    cf_manifest_trust_free(t);
}

static void test_reader_reports_offset_size_and_sha256(void **state)
{
    size_t len;
    char *data = read_data(TNGTLSU, &len);
    unsigned char want[32], got[32];
    unsigned int n;
    EVP_Digest(data, len, want, &n, EVP_sha256(), NULL);
    cf_manifest_reader *r = NULL;
    cf_error err;
    assert_int_equal(cf_manifest_reader_open(data_path(TNGTLSU), &r, &err), CF_OK);
    assert_int_equal(cf_manifest_reader_size(r), len);
    json_t *e;
    size_t index, last = 0;
    uint64_t prev = 0;
    while (cf_manifest_reader_next(r, &e, &index, &err) == CF_OK && e) {
        assert_int_equal(index, last++);
        assert_true(cf_manifest_reader_offset(r) > prev);
        prev = cf_manifest_reader_offset(r);
        json_decref(e);
    }
    assert_int_equal(last, 10);
    assert_int_equal(cf_manifest_reader_sha256(r, got), 1);
    assert_memory_equal(got, want, 32);
    assert_int_equal(cf_manifest_reader_offset(r), len);
    cf_manifest_reader_free(r);
    free(data);
}

static void test_entries_split_across_read_chunks_stream_whole(void **state)
{
    /* 30 copies of a real manifest's entries (1.2 MB): elements, strings and escapes cross
     * the reader's 64 KiB read boundaries. */
    json_t *all = json_load_file(data_path(TNGTLSU), 0, NULL);
    assert_non_null(all);
    const char *path = tmp_path("many.json");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("[", f);
    for (int copy = 0; copy < 30; copy++)
        for (size_t i = 0; i < json_array_size(all); i++) {
            char *text = json_dumps(json_array_get(all, i), copy % 2 ? JSON_INDENT(3) : 0);
            fprintf(f, "%s%s", copy || i ? ",\n" : "", text);
            free(text);
        }
    fputs("]\n", f);
    fclose(f);
    json_decref(all);
    cf_manifest_trust *t = make_trust(SIGNER5, NULL);
    run_result res;
    run_file(path, t, &res);
    assert_false(res.stream_failed);
    assert_int_equal(res.entries, 300);
    assert_int_equal(res.good, 300);
    cf_manifest_trust_free(t);
    unlink(path);
}

static void test_signer_expired_now_is_accepted_at_provisioning_time(void **state)
{
    /* Log Signer 002 expired in 2020; its manifest was made while it was valid. */
    cf_manifest_trust *t = make_trust(SIGNER2, NULL);
    run_result res;
    run_file(data_path(MAH4I), t, &res);
    assert_int_equal(res.good, 2);
    cf_manifest_trust_free(t);
}

typedef struct {
    const cf_manifest_trust *t;
    json_t *entries; /* borrowed */
    size_t good;
} worker_arg;

static void *verify_worker(void *p)
{
    worker_arg *w = p;
    for (int round = 0; round < 5; round++)
        for (size_t i = 0; i < json_array_size(w->entries); i++) {
            cf_manifest_device dev;
            cf_error err;
            if (cf_manifest_verify_entry(w->t, json_array_get(w->entries, i), i, &dev, &err) ==
                CF_OK)
                w->good++;
            cf_manifest_device_clear(&dev);
        }
    return NULL;
}

static void test_one_trust_serves_several_threads(void **state)
{
    /* The import verifies on every core with one trust (and its intermediate cache). */
    cf_manifest_trust *t = microchip_trust();
    json_t *entries = json_load_file(data_path(TNGTLSU), 0, NULL);
    assert_non_null(entries);
    json_t *more = json_load_file(data_path(MAH4I), 0, NULL);
    json_array_extend(entries, more);
    json_decref(more);
    pthread_t th[4];
    worker_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (worker_arg){.t = t, .entries = entries};
        assert_int_equal(pthread_create(&th[i], NULL, verify_worker, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].good, 5 * 12);
    }
    json_decref(entries);
    cf_manifest_trust_free(t);
}

/* ---- verified issuer chains: entries made under a PKI made here ---------------------------- */

/* A manufacturer PKI of our own: root, batch CA, and a manifest signer. */
typedef struct {
    EVP_PKEY *root_key, *batch_key;
    X509 *root, *batch;
    test_signer signer;
} test_pki;

typedef struct {
    int ca;                /* basicConstraints cA */
    const char *not_after; /* default 20400101000000Z */
    const char *cn;        /* default: the unique id */
    int critical_unknown;  /* add a critical extension OpenSSL does not handle */
} leaf_opts;

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
    X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    assert_non_null(ex);
    assert_int_equal(X509_add_ext(x, ex, -1), 1);
    X509_EXTENSION_free(ex);
}

/* A certificate for key named cn, issued by issuer (NULL: self-signed) with issuer_key. */
static X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, int ca,
                       const char *not_after)
{
    static long serial = 100;
    X509 *x = X509_new();
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC, (const unsigned char *)"Test Maker", -1, -1,
                               0);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
    assert_int_equal(ASN1_TIME_set_string(X509_getm_notBefore(x), "20200101000000Z"), 1);
    assert_int_equal(ASN1_TIME_set_string(X509_getm_notAfter(x), not_after), 1);
    X509_set_pubkey(x, key);
    add_ext(x, issuer, NID_basic_constraints, ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
    add_ext(x, issuer, NID_key_usage,
            ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
    add_ext(x, issuer, NID_subject_key_identifier, "hash");
    add_ext(x, issuer, NID_authority_key_identifier, "keyid:always");
    assert_true(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
    return x;
}

static test_pki make_pki(const char *batch_not_after)
{
    test_pki p;
    p.root_key = EVP_EC_gen("P-256");
    p.batch_key = EVP_EC_gen("P-256");
    p.root = make_cert("Test Root", p.root_key, NULL, NULL, 1, "20500101000000Z");
    p.batch = make_cert("Test Batch CA", p.batch_key, p.root, p.root_key, 1, batch_not_after);
    p.signer = make_signer("20200101000000Z", "20400101000000Z");
    return p;
}

static void free_pki(test_pki *p)
{
    EVP_PKEY_free(p->root_key);
    EVP_PKEY_free(p->batch_key);
    X509_free(p->root);
    X509_free(p->batch);
    free_signer(&p->signer);
}

static cf_manifest_trust *pki_trust(const test_pki *p)
{
    cf_manifest_trust *t = NULL;
    cf_error err;
    assert_int_equal(cf_manifest_trust_new(&t, &err), CF_OK);
    assert_int_equal(cf_manifest_trust_add_root(t, p->root, &err), CF_OK);
    assert_int_equal(cf_manifest_trust_add_signer(t, p->signer.cert, &err), CF_OK);
    cf_manifest_trust_set_time(t, 1750000000); /* 2025-06-15 */
    return t;
}

static char *b64_of(const unsigned char *der, int n)
{
    char *out = malloc(4 * ((size_t)n / 3 + 1) + 1);
    EVP_EncodeBlock((unsigned char *)out, der, n);
    return out;
}

static char *b64_of_cert(X509 *x)
{
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    assert_true(n > 0);
    char *out = b64_of(der, n);
    OPENSSL_free(der);
    return out;
}

/* A signed entry for device uid whose JWK is jwk_key and whose x5c is [c0 (base64, taken),
 * batch]. */
static json_t *pki_entry_b64(const test_pki *p, const char *uid, EVP_PKEY *jwk_key, char *c0,
                             X509 *batch);

static json_t *pki_entry(const test_pki *p, const char *uid, EVP_PKEY *jwk_key, X509 *leaf,
                         X509 *batch)
{
    return pki_entry_b64(p, uid, jwk_key, b64_of_cert(leaf), batch);
}

static json_t *pki_entry_b64(const test_pki *p, const char *uid, EVP_PKEY *jwk_key, char *c0,
                             X509 *batch)
{
    unsigned char *pt = NULL;
    size_t ptlen = EVP_PKEY_get1_encoded_public_key(jwk_key, &pt);
    assert_int_equal(ptlen, 65);
    char *x = b64url_of(pt + 1, 32), *y = b64url_of(pt + 33, 32);
    char *c1 = b64_of_cert(batch);
    json_t *payload = json_pack("{s:i, s:s, s:s, s:{s:[{s:s, s:s, s:s, s:s, s:s, s:[s, s]}]}}",
                                "version", 1, "provisioningTimestamp", "2025-06-01T20:14:53.773Z",
                                "uniqueId", uid, "publicKeySet", "keys", "kid", "0", "kty", "EC",
                                "crv", "P-256", "x", x, "y", y, "x5c", c0, c1);
    assert_non_null(payload);
    json_t *e = sign_entry(&p->signer, payload, uid);
    json_decref(payload);
    OPENSSL_free(pt);
    free(x);
    free(y);
    free(c0);
    free(c1);
    return e;
}

/* A device key, its birth certificate under the batch CA (or signer_key's forgery), and the
 * signed entry. */
static json_t *pki_device(const test_pki *p, const char *uid, const leaf_opts *o,
                          EVP_PKEY *signer_key, EVP_PKEY **key_out)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *leaf = X509_new();
    leaf_opts dflt = {0};
    o = o ? o : &dflt;
    X509_free(leaf);
    leaf = make_cert(o->cn ? o->cn : uid, key, p->batch, signer_key ? signer_key : p->batch_key,
                     o->ca, o->not_after ? o->not_after : "20400101000000Z");
    if (o->critical_unknown) {
        ASN1_OCTET_STRING *v = ASN1_OCTET_STRING_new();
        ASN1_OCTET_STRING_set(v, (const unsigned char *)"\x05\x00", 2);
        ASN1_OBJECT *oid = OBJ_txt2obj("1.3.6.1.4.1.55555.1", 1);
        X509_EXTENSION *ex = X509_EXTENSION_create_by_OBJ(NULL, oid, 1, v);
        X509_add_ext(leaf, ex, -1);
        X509_EXTENSION_free(ex);
        ASN1_OBJECT_free(oid);
        ASN1_OCTET_STRING_free(v);
        X509_sign(leaf, signer_key ? signer_key : p->batch_key, EVP_sha256());
    }
    json_t *e = pki_entry(p, uid, key, leaf, p->batch);
    X509_free(leaf);
    if (key_out)
        *key_out = key;
    else
        EVP_PKEY_free(key);
    return e;
}

static uint64_t fast_count(const cf_manifest_trust *t)
{
    uint64_t fast = 0;
    cf_manifest_trust_chain_stats(t, &fast, NULL);
    return fast;
}

static void test_verified_chain_serves_later_devices_with_the_same_result(void **state)
{
    test_pki p = make_pki("20450101000000Z");
    cf_manifest_trust *t = pki_trust(&p);
    EVP_PKEY *key = NULL;
    json_t *a = pki_device(&p, "0123aa01", NULL, NULL, &key);
    json_t *b = pki_device(&p, "0123aa02", NULL, NULL, NULL);
    cf_manifest_device first, again, other;
    cf_error err;
    uint64_t chains = 0;

    /* The first device is verified in full and its chain recorded; later ones use it. */
    if (cf_manifest_verify_entry(t, a, 0, &first, &err) != CF_OK)
        fail_msg("%s", err.msg);
    cf_manifest_trust_chain_stats(t, NULL, &chains);
    assert_int_equal(chains, 1);
    assert_int_equal(fast_count(t), 0);
    assert_int_equal(cf_manifest_verify_entry(t, b, 1, &other, &err), CF_OK);
    assert_int_equal(cf_manifest_verify_entry(t, a, 0, &again, &err), CF_OK);
    assert_int_equal(fast_count(t), 2);

    /* Both ways give the same device: the same certificate bytes, the same key hash, and
     * that hash is the SHA-256 of the key's SubjectPublicKeyInfo as i2d_PUBKEY writes it. */
    assert_int_equal(first.cert_der_len, again.cert_der_len);
    assert_memory_equal(first.cert_der, again.cert_der, first.cert_der_len);
    assert_memory_equal(first.spki_sha256, again.spki_sha256, 32);
    assert_true(first.has_key && again.has_key);
    assert_string_equal(again.uid, "0123aa01");
    unsigned char *spki = NULL, md[32];
    int n = i2d_PUBKEY(key, &spki);
    assert_true(n > 0);
    assert_int_equal(EVP_Digest(spki, (size_t)n, md, NULL, EVP_sha256(), NULL), 1);
    assert_memory_equal(first.spki_sha256, md, 32);
    assert_memory_not_equal(other.spki_sha256, md, 32);

    OPENSSL_free(spki);
    cf_manifest_device_clear(&first);
    cf_manifest_device_clear(&again);
    cf_manifest_device_clear(&other);
    EVP_PKEY_free(key);
    json_decref(a);
    json_decref(b);
    cf_manifest_trust_free(t);
    free_pki(&p);
}

/* Verifies e expecting code and a message containing want; the chain record must not count
 * it as checked. */
static void expect_refused(cf_manifest_trust *t, json_t *e, cf_err code, const char *want)
{
    cf_manifest_device dev;
    cf_error err;
    uint64_t before = fast_count(t);
    cf_err rc = cf_manifest_verify_entry(t, e, 5, &dev, &err);
    if (rc != code || !strstr(err.msg, want))
        fail_msg("expected %d with \"%s\", got %d: %s", code, want, rc,
                 rc == CF_OK ? "(accepted)" : err.msg);
    assert_int_equal(fast_count(t), before);
    json_decref(e);
}

static void test_verified_chain_does_not_let_a_bad_device_through(void **state)
{
    test_pki p = make_pki("20450101000000Z");
    cf_manifest_trust *t = pki_trust(&p);
    cf_manifest_device dev;
    cf_error err;
    json_t *good = pki_device(&p, "0123bb01", NULL, NULL, NULL);
    assert_int_equal(cf_manifest_verify_entry(t, good, 0, &dev, &err), CF_OK);
    cf_manifest_device_clear(&dev);

    /* A birth certificate naming the batch CA but signed by another key. */
    EVP_PKEY *forger = EVP_EC_gen("P-256");
    expect_refused(t, pki_device(&p, "0123bb02", NULL, forger, NULL), CF_ERR_POLICY,
                   "x5c[0] does not verify to root \"Test Root\": certificate signature failure");
    EVP_PKEY_free(forger);

    /* A tampered intermediate: one byte of the batch CA's signature changed. */
    X509 *tampered = X509_dup(p.batch);
    const ASN1_BIT_STRING *sig = NULL;
    X509_get0_signature(&sig, NULL, tampered);
    ((ASN1_BIT_STRING *)sig)->data[10] ^= 0x01;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *leaf = make_cert("0123bb03", key, p.batch, p.batch_key, 0, "20400101000000Z");
    expect_refused(t, pki_entry(&p, "0123bb03", key, leaf, tampered), CF_ERR_POLICY,
                   "does not verify to root \"Test Root\": certificate signature failure");
    X509_free(tampered);

    /* The JWK of another key than the certificate's. */
    EVP_PKEY *other = EVP_EC_gen("P-256");
    expect_refused(t, pki_entry(&p, "0123bb03", other, leaf, p.batch), CF_ERR_POLICY,
                   "JWK does not match x5c[0]'s public key");
    EVP_PKEY_free(other);
    X509_free(leaf);
    EVP_PKEY_free(key);

    /* An expired birth certificate, one naming another device, a CA certificate, and one
     * with a critical extension nobody understands. */
    leaf_opts expired = {.not_after = "20250101000000Z"}, wrong_cn = {.cn = "0123bb99"},
              ca = {.ca = 1}, critical = {.critical_unknown = 1};
    expect_refused(t, pki_device(&p, "0123bb04", &expired, NULL, NULL), CF_ERR_POLICY,
                   "certificate has expired");
    expect_refused(t, pki_device(&p, "0123bb05", &wrong_cn, NULL, NULL), CF_ERR_POLICY,
                   "subject CN \"0123bb99\" does not name the unique id");
    expect_refused(t, pki_device(&p, "0123bb06", &ca, NULL, NULL), CF_ERR_POLICY,
                   "x5c[0] is a CA certificate");
    expect_refused(t, pki_device(&p, "0123bb07", &critical, NULL, NULL), CF_ERR_POLICY,
                   "unhandled critical extension");

    /* The good entry still goes through the record. */
    assert_int_equal(cf_manifest_verify_entry(t, good, 0, &dev, &err), CF_OK);
    assert_int_equal(fast_count(t), 1);
    cf_manifest_device_clear(&dev);
    json_decref(good);
    cf_manifest_trust_free(t);
    free_pki(&p);
}

/* Keys that verify many signatures get tables (pki/ecfixed.h); with them, bad signatures
 * are refused as before, with the same messages. */
static void test_busy_keys_get_tables_that_refuse_what_the_full_way_refuses(void **state)
{
    test_pki p = make_pki("20450101000000Z");
    cf_manifest_trust *t = pki_trust(&p);
    cf_manifest_device dev;
    cf_error err;
    json_t *good = pki_device(&p, "0123cc01", NULL, NULL, NULL);
    int n = 0;
    for (; n < 5000 && cf_manifest_trust_key_tables(t) < 2; n++) {
        if (cf_manifest_verify_entry(t, good, 0, &dev, &err) != CF_OK)
            fail_msg("%s", err.msg);
        cf_manifest_device_clear(&dev);
    }
    /* The signer's and the batch CA's, and not before they have verified a few hundred. */
    assert_int_equal(cf_manifest_trust_key_tables(t), 2);
    assert_true(n >= 100);

    EVP_PKEY *forger = EVP_EC_gen("P-256");
    expect_refused(t, pki_device(&p, "0123cc02", NULL, forger, NULL), CF_ERR_POLICY,
                   "x5c[0] does not verify to root \"Test Root\": certificate signature failure");
    EVP_PKEY_free(forger);
    for (int i = 0; i < 3; i++) { /* one character of the JWS signature, payload or header */
        static const char *const member[] = {"signature", "payload", "protected"};
        json_t *e = pki_device(&p, "0123cc03", NULL, NULL, NULL);
        char *v = strdup(json_string_value(json_object_get(e, member[i])));
        flip_b64_char(v + 20);
        json_object_set_new(e, member[i], json_string(v));
        free(v);
        if (i == 2) { /* a changed header no longer names the signer: say so */
            expect_refused(t, e, CF_ERR_INVALID, "protected header");
            continue;
        }
        expect_refused(t, e, CF_ERR_TAMPERED, "signature does not verify");
    }
    assert_int_equal(cf_manifest_verify_entry(t, good, 0, &dev, &err), CF_OK);
    cf_manifest_device_clear(&dev);
    json_decref(good);
    cf_manifest_trust_free(t);
    free_pki(&p);
}

static void test_verified_chain_with_a_malformed_device_certificate(void **state)
{
    /* Hostile x5c[0] bytes under a recorded chain: refused as the full way refuses them. */
    test_pki p = make_pki("20450101000000Z");
    cf_manifest_trust *t = pki_trust(&p);
    cf_manifest_device dev;
    cf_error err;
    json_t *good = pki_device(&p, "0123dd01", NULL, NULL, NULL);
    assert_int_equal(cf_manifest_verify_entry(t, good, 0, &dev, &err), CF_OK);
    cf_manifest_device_clear(&dev);
    json_decref(good);

    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *leaf = make_cert("0123dd02", key, p.batch, p.batch_key, 0, "20400101000000Z");
    unsigned char *der = NULL, buf[2048];
    int n = i2d_X509(leaf, &der);
    assert_true(n > 0 && n < (int)sizeof buf - 1);
    memcpy(buf, der, (size_t)n);
    buf[n] = 0x00;
    expect_refused(t, pki_entry_b64(&p, "0123dd02", key, b64_of(buf, n + 1), p.batch),
                   CF_ERR_INVALID, "x5c[0]: 1 bytes after the certificate's DER");
    expect_refused(t, pki_entry_b64(&p, "0123dd02", key, b64_of(buf, n / 2), p.batch),
                   CF_ERR_INVALID, "x5c[0]: not a DER certificate");
    expect_refused(t,
                   pki_entry_b64(&p, "0123dd02", key,
                                 b64_of((const unsigned char *)"0\x03\x02\x01", 4), p.batch),
                   CF_ERR_INVALID, "x5c[0]: not a DER certificate");
    buf[n / 3] ^= 0x40; /* somewhere inside the TBSCertificate */
    json_t *e = pki_entry_b64(&p, "0123dd02", key, b64_of(buf, n), p.batch);
    assert_int_not_equal(cf_manifest_verify_entry(t, e, 0, &dev, &err), CF_OK);
    assert_int_equal(fast_count(t), 0);
    json_decref(e);
    OPENSSL_free(der);
    X509_free(leaf);
    EVP_PKEY_free(key);
    cf_manifest_trust_free(t);
    free_pki(&p);
}

static void test_signer_issued_by_a_root_must_carry_its_signature(void **state)
{
    /* A signer issued by the registered root serves; one that claims to be (same issuer
     * name and key identifier) but was signed by another key is refused for every entry. */
    test_pki p = make_pki("20450101000000Z");
    EVP_PKEY *other = EVP_EC_gen("P-256");
    for (int forged = 0; forged < 2; forged++) {
        test_signer s = {.key = EVP_EC_gen("P-256")};
        s.cert = make_cert("Test Signer", s.key, p.root, forged ? other : p.root_key, 0,
                           "20400101000000Z");
        cf_manifest_trust *t = NULL;
        cf_error err;
        assert_int_equal(cf_manifest_trust_new(&t, &err), CF_OK);
        assert_int_equal(cf_manifest_trust_add_root(t, p.root, &err), CF_OK);
        assert_int_equal(cf_manifest_trust_add_signer(t, s.cert, &err), CF_OK);
        cf_manifest_trust_set_time(t, 1750000000);
        test_pki q = p;
        q.signer = s;
        for (int i = 0; i < 2; i++) {
            char uid[16];
            snprintf(uid, sizeof uid, "0123ee0%d", i);
            json_t *e = pki_device(&q, uid, NULL, NULL, NULL);
            cf_manifest_device dev;
            cf_err rc = cf_manifest_verify_entry(t, e, 0, &dev, &err);
            if (forged) {
                assert_int_equal(rc, CF_ERR_POLICY);
                assert_non_null(strstr(err.msg, "does not verify with its issuing root"));
            } else {
                assert_int_equal(rc, CF_OK);
                cf_manifest_device_clear(&dev);
            }
            json_decref(e);
        }
        cf_manifest_trust_free(t);
        free_signer(&s);
    }
    EVP_PKEY_free(other);
    free_pki(&p);
}

static void test_verified_chain_is_rechecked_at_the_trusts_time(void **state)
{
    /* The batch CA ends in 2030; its devices' certificates run to 2040. */
    test_pki p = make_pki("20300101000000Z");
    cf_manifest_trust *t = pki_trust(&p);
    cf_manifest_device dev;
    cf_error err;
    json_t *a = pki_device(&p, "0123cc01", NULL, NULL, NULL);
    json_t *b = pki_device(&p, "0123cc02", NULL, NULL, NULL);
    assert_int_equal(cf_manifest_verify_entry(t, a, 0, &dev, &err), CF_OK);
    cf_manifest_device_clear(&dev);
    cf_manifest_trust_set_time(t, 1900000000); /* 2030-03-17: the batch CA has expired */
    expect_refused(t, b, CF_ERR_POLICY,
                   "x5c[1] does not verify to root \"Test Root\": certificate has expired");
    json_decref(a);
    cf_manifest_trust_free(t);
    free_pki(&p);
}

/* ---- tampering --------------------------------------------------------------------------- */

static void test_one_payload_byte_changed_fails_that_entry_only(void **state)
{
    size_t len;
    char *data = read_data(TNGTLSU, &len);
    char *p = nth_member_value(data, "payload", 3);
    flip_b64_char(p + 40);
    write_file(tmp_path("payload.json"), data, len);
    free(data);
    cf_manifest_trust *t = make_trust(SIGNER5, NULL);
    run_result res;
    run_file(tmp_path("payload.json"), t, &res);
    assert_int_equal(res.entries, 10);
    assert_int_equal(res.good, 9);
    assert_int_equal(res.nbad, 1);
    assert_int_equal(res.bad_index[0], 3);
    assert_int_equal(res.bad_code[0], CF_ERR_TAMPERED);
    assert_non_null(strstr(res.bad_msg[0], "manifest entry 3 (uid 0123"));
    assert_non_null(strstr(res.bad_msg[0], "signature does not verify"));
    cf_manifest_trust_free(t);
}

static void test_one_signature_byte_changed_fails_that_entry_only(void **state)
{
    size_t len;
    char *data = read_data(TNGTLSU, &len);
    char *p = nth_member_value(data, "signature", 6);
    flip_b64_char(p + 20);
    write_file(tmp_path("sig.json"), data, len);
    free(data);
    cf_manifest_trust *t = make_trust(SIGNER5, NULL);
    run_result res;
    run_file(tmp_path("sig.json"), t, &res);
    assert_int_equal(res.good, 9);
    assert_int_equal(res.nbad, 1);
    assert_int_equal(res.bad_index[0], 6);
    assert_int_equal(res.bad_code[0], CF_ERR_TAMPERED);
    cf_manifest_trust_free(t);
}

static void test_unknown_signer_is_named(void **state)
{
    cf_manifest_trust *t = make_trust(SIGNER2, SIGNER4, NULL);
    json_t *e = real_entry(TNGTLSU, 1);
    cf_manifest_device dev;
    cf_error err;
    assert_int_equal(cf_manifest_verify_entry(t, e, 1, &dev, &err), CF_ERR_NOT_FOUND);
    assert_non_null(strstr(err.msg, "manifest entry 1 (uid 01237fa064679e6a01): unknown signer"));
    assert_non_null(strstr(err.msg, "Vx2ZhBEX46-zTyiIYEWQP6eFzCg90ugGjh5epGBM4OM"));
    json_decref(e);
    cf_manifest_trust_free(t);
}

static void test_signer_used_outside_its_validity_is_refused(void **state)
{
    /* A signer like Log Signer 004 (valid 2023-07-18 .. 2026-07-18). An entry provisioned
     * after it expired was necessarily signed after it expired: refused. One provisioned
     * before it was issued may have been signed later, while it was valid: accepted (the
     * real pytrustplatform manifest is such a case). */
    test_signer s = make_signer("20230718183751Z", "20260718183751Z");
    cf_manifest_trust *t = trust_with_test_signer(&s);
    cf_manifest_trust_set_time(t, 1780000000LL); /* 2026-05-28: the signer is still valid */
    json_t *payload = real_payload(TMNGTLSS, 0);
    const char *uid = json_string_value(json_object_get(payload, "uniqueId"));
    cf_manifest_device dev;
    cf_error err;
    static const struct {
        const char *when;
        cf_err want;
        const char *msg;
    } cases[] = {
        {"2024-01-01T00:00:00.000Z", CF_OK, NULL},
        {"2020-01-01T00:00:00.000Z", CF_OK, NULL},
        {"2026-05-29T00:00:00Z", CF_OK, NULL}, /* within a day of now: clocks differ */
        {"2026-05-30T00:00:00Z", CF_ERR_POLICY,
         "provisioningTimestamp 2026-05-30T00:00:00"
         ".000000Z is in the future"},
        {"2026-07-18T20:37:51+02:00", CF_OK, NULL}, /* the last second of its validity */
        {"2026-07-18T18:37:52Z", CF_ERR_POLICY,
         "signer \"Test Signer\" had expired before the"
         " provisioningTimestamp"},
        {"2025-13-01T00:00:00Z", CF_ERR_INVALID, "not an RFC 3339 date-time"},
        {"2025-02-29T00:00:00Z", CF_ERR_INVALID, "not an RFC 3339 date-time"},
        {"2025-06-01 12:00:00Z", CF_ERR_INVALID, "not an RFC 3339 date-time"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* Expiry is checked against the provisioning time, not the trust's time. */
        cf_manifest_trust_set_time(t, i >= 4 ? 1790000000LL : 1780000000LL);
        json_object_set_new(payload, "provisioningTimestamp", json_string(cases[i].when));
        json_t *e = sign_entry(&s, payload, uid);
        cf_err rc = cf_manifest_verify_entry(t, e, i, &dev, &err);
        if (rc != cases[i].want)
            fail_msg("%s: %s", cases[i].when, rc ? err.msg : "accepted");
        if (cases[i].msg && !strstr(err.msg, cases[i].msg))
            fail_msg("%s: %s", cases[i].when, err.msg);
        cf_manifest_device_clear(&dev);
        json_decref(e);
    }
    /* A signer that is not valid yet at verification time is refused. */
    cf_manifest_trust_set_time(t, 1600000000LL); /* 2020-09-13 */
    json_object_set_new(payload, "provisioningTimestamp", json_string("2020-01-01T00:00:00Z"));
    json_t *e = sign_entry(&s, payload, uid);
    assert_int_equal(cf_manifest_verify_entry(t, e, 0, &dev, &err), CF_ERR_POLICY);
    assert_non_null(strstr(err.msg, "signer \"Test Signer\" is not valid yet"));
    json_decref(e);
    json_decref(payload);
    cf_manifest_trust_free(t);
    free_signer(&s);
}

static void test_kid_must_be_the_signers_key_identifier(void **state)
{
    cf_manifest_trust *t = make_trust(SIGNER5, NULL);
    json_t *e = real_entry(TNGTLSU, 0);
    const char *prot = json_string_value(json_object_get(e, "protected"));
    unsigned char *raw;
    size_t len;
    cf_error err;
    assert_int_equal(cf_b64url_decode(prot, strlen(prot), &raw, &len, &err), CF_OK);
    json_t *hdr = json_loadb((const char *)raw, len, 0, NULL);
    free(raw);
    assert_non_null(hdr);
    json_object_set_new(hdr, "kid", json_string("8VeKGdyU2d8wev6_VzNJOBOv-cA")); /* signer 2's */
    char *text = json_dumps(hdr, JSON_COMPACT);
    char *b64 = b64url_of(text, strlen(text));
    json_object_set_new(e, "protected", json_string(b64));
    cf_manifest_device dev;
    assert_int_equal(cf_manifest_verify_entry(t, e, 0, &dev, &err), CF_ERR_POLICY);
    assert_non_null(strstr(err.msg, "\"kid\" is not the signer's key identifier"));
    free(b64);
    free(text);
    json_decref(hdr);
    json_decref(e);
    cf_manifest_trust_free(t);
}

static void test_mismatched_unique_ids_are_refused(void **state)
{
    cf_manifest_trust *t = make_trust(SIGNER5, NULL);
    json_t *e = real_entry(TNGTLSU, 2);
    /* header is not covered by the signature: the signature still verifies. */
    json_object_set_new(json_object_get(e, "header"), "uniqueId",
                        json_string("0123aaaaaaaaaaaa01"));
    cf_manifest_device dev;
    cf_error err;
    assert_int_equal(cf_manifest_verify_entry(t, e, 2, &dev, &err), CF_ERR_POLICY);
    assert_non_null(strstr(err.msg, "manifest entry 2 (uid 0123aaaaaaaaaaaa01): header uniqueId"
                                    " differs"));
    json_decref(e);
    cf_manifest_trust_free(t);
}

static void test_certificate_cn_must_name_the_unique_id(void **state)
{
    test_signer s = make_signer("20200101000000Z", "20400101000000Z");
    cf_manifest_trust *t = trust_with_test_signer(&s);
    json_t *payload = real_payload(TNGTLSU, 0);
    json_object_set_new(payload, "uniqueId", json_string("0123f2408ea1fcf202"));
    json_t *e = sign_entry(&s, payload, "0123f2408ea1fcf202");
    cf_manifest_device dev;
    cf_error err;
    assert_int_equal(cf_manifest_verify_entry(t, e, 0, &dev, &err), CF_ERR_POLICY);
    assert_non_null(strstr(err.msg, "subject CN \"sn0123F2408EA1FCF201\" does not name"));
    json_decref(e);
    json_decref(payload);
    cf_manifest_trust_free(t);
    free_signer(&s);
}

static void test_jwk_that_does_not_match_its_certificate_is_refused(void **state)
{
    test_signer s = make_signer("20200101000000Z", "20400101000000Z");
    cf_manifest_trust *t = trust_with_test_signer(&s);
    json_t *payload = real_payload(TNGTLSU, 0);
    json_t *keys = json_object_get(json_object_get(payload, "publicKeySet"), "keys");
    json_t *k0 = json_array_get(keys, 0), *k1 = json_array_get(keys, 1);
    json_object_set(k0, "x", json_object_get(k1, "x"));
    json_object_set(k0, "y", json_object_get(k1, "y"));
    const char *uid = json_string_value(json_object_get(payload, "uniqueId"));
    json_t *e = sign_entry(&s, payload, uid);
    cf_manifest_device dev;
    cf_error err;
    assert_int_equal(cf_manifest_verify_entry(t, e, 0, &dev, &err), CF_ERR_POLICY);
    assert_non_null(strstr(err.msg, "publicKeySet.keys[0] (kid 0): JWK does not match x5c[0]"));
    json_decref(e);
    json_decref(payload);
    cf_manifest_trust_free(t);
    free_signer(&s);
}

static void test_expired_birth_certificate_is_refused(void **state)
{
    /* MAH4I device certificates end 2048-06-09, their issuer 2049-12-14, the root 2058. */
    cf_manifest_trust *t = make_trust(SIGNER2, NULL);
    cf_manifest_trust_set_time(t, 2490000000LL); /* 2048-11-26 */
    json_t *e = real_entry(MAH4I, 0);
    cf_manifest_device dev;
    cf_error err;
    assert_int_equal(cf_manifest_verify_entry(t, e, 0, &dev, &err), CF_ERR_POLICY);
    assert_non_null(strstr(err.msg, "manifest entry 0 (uid 01230390b3d1450c01): "
                                    "publicKeySet.keys[0] (kid 0): x5c[0] does not verify to"
                                    " root \"Crypto Authentication Root CA 002\": certificate"
                                    " has expired"));
    json_decref(e);
    cf_manifest_trust_free(t);
}

static void test_chain_to_another_makers_root_is_refused(void **state)
{
    test_signer other = make_signer("20200101000000Z", "20400101000000Z");
    BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
    bc->ca = 1;
    X509_add1_ext_i2d(other.cert, NID_basic_constraints, bc, 1, 0);
    BASIC_CONSTRAINTS_free(bc);
    X509_sign(other.cert, other.key, EVP_sha256());
    cf_manifest_trust *t = NULL;
    cf_error err;
    assert_int_equal(cf_manifest_trust_new(&t, &err), CF_OK);
    assert_int_equal(cf_manifest_trust_add_root(t, other.cert, &err), CF_OK);
    X509 *s5 = load_cert(SIGNER5);
    assert_int_equal(cf_manifest_trust_add_signer(t, s5, &err), CF_OK);
    X509_free(s5);
    json_t *e = real_entry(TNGTLSU, 0);
    cf_manifest_device dev;
    assert_int_equal(cf_manifest_verify_entry(t, e, 0, &dev, &err), CF_ERR_POLICY);
    assert_non_null(strstr(err.msg, "x5c does not verify to a registered root"));
    assert_non_null(strstr(err.msg, "Crypto Authentication Root CA 002"));
    json_decref(e);
    cf_manifest_trust_free(t);
    free_signer(&other);
}

static void test_invalid_base64url_is_refused(void **state)
{
    cf_manifest_trust *t = make_trust(SIGNER5, NULL);
    json_t *e = real_entry(TNGTLSU, 4);
    const char *sig = json_string_value(json_object_get(e, "signature"));
    char *bad = strdup(sig);
    bad[10] = '+';
    json_object_set_new(e, "signature", json_string(bad));
    free(bad);
    cf_manifest_device dev;
    cf_error err;
    assert_int_equal(cf_manifest_verify_entry(t, e, 4, &dev, &err), CF_ERR_INVALID);
    assert_non_null(strstr(err.msg, "manifest entry 4 (uid "));
    assert_non_null(strstr(err.msg, "signature: invalid base64url: character 10"));
    json_decref(e);
    cf_manifest_trust_free(t);
}

/* ---- hostile files ----------------------------------------------------------------------- */

static void test_truncated_manifest_yields_earlier_entries_then_fails(void **state)
{
    size_t len;
    char *data = read_data(TNGTLSU, &len);
    char *cut = nth_member_value(data, "payload", 4) + 100; /* inside entry 4 */
    write_file(tmp_path("trunc.json"), data, (size_t)(cut - data));
    free(data);
    cf_manifest_trust *t = make_trust(SIGNER5, NULL);
    run_result res;
    run_file(tmp_path("trunc.json"), t, &res);
    assert_int_equal(res.good, 4);
    assert_true(res.stream_failed);
    assert_string_equal(res.stream_msg, "entry 4: truncated (the file ends inside the entry)");
    cf_manifest_trust_free(t);
}

static void test_deep_nesting_is_refused(void **state)
{
    char doc[512];
    size_t n = 0;
    n += (size_t)snprintf(doc + n, sizeof doc - n, "[{}, {\"a\":");
    for (int i = 0; i < 100; i++)
        doc[n++] = '[';
    for (int i = 0; i < 100; i++)
        doc[n++] = ']';
    snprintf(doc + n, sizeof doc - n, "}]");
    cf_manifest_trust *t = make_trust(NULL);
    run_result res;
    run_mem(doc, t, &res);
    assert_true(res.stream_failed);
    assert_string_equal(res.stream_msg, "entry 1: nested deeper than 32");
    cf_manifest_trust_free(t);
}

static void test_endless_string_fails_after_reading_one_entry_limit(void **state)
{
    /* 50 MB of one string: refused once the entry passes its limit, without reading (or
     * allocating) the rest. */
    const char *path = tmp_path("endless.json");
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs("[{\"protected\":\"", f);
    char block[65536];
    memset(block, 'A', sizeof block);
    for (int i = 0; i < 50 * 1024 * 1024 / (int)sizeof block; i++)
        assert_int_equal(fwrite(block, 1, sizeof block, f), sizeof block);
    fclose(f);
    cf_manifest_reader *r = NULL;
    cf_error err;
    assert_int_equal(cf_manifest_reader_open(path, &r, &err), CF_OK);
    json_t *e;
    size_t index;
    assert_int_equal(cf_manifest_reader_next(r, &e, &index, &err), CF_ERR_INVALID);
    assert_string_equal(err.msg, "entry 0: larger than 1048576 bytes");
    assert_true(cf_manifest_reader_failed(r));
    assert_true(cf_manifest_reader_offset(r) < 2 * CF_MANIFEST_ENTRY_MAX);
    /* A failed reader repeats its error. */
    assert_int_equal(cf_manifest_reader_next(r, &e, &index, &err), CF_ERR_INVALID);
    assert_string_equal(err.msg, "entry 0: larger than 1048576 bytes");
    cf_manifest_reader_free(r);
    unlink(path);
}

static void test_entry_json_parses_as_jansson_does(void **state)
{
    /* Each value inside one entry {"v": VALUE}: the reader's parser must accept what jansson
     * accepts (with the same result) and refuse what it refuses. */
    static const char *const good[] = {"\"plain\"",
                                       "\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t\"",
                                       "\"\\u00e9\\u4e2d\\ud83d\\ude00\"",
                                       "\"\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\"",
                                       "\"\"",
                                       "\"\\u0041x\"",
                                       "0",
                                       "-0",
                                       "123456789012345678",
                                       "-9223372036854775808",
                                       "9223372036854775807",
                                       "1.5",
                                       "-2.5e-3",
                                       "1E10",
                                       "0.0",
                                       "1e-400",
                                       "true",
                                       "false",
                                       "null",
                                       "[]",
                                       "{}",
                                       "[1,[2,{\"a\":[]}]]",
                                       "{\"a\":1,\"b\":{\"a\":2},\"\":3}",
                                       " [ 1 , \"x\" ,\n\t{ } ] "};
    static const char *const bad[] = {"\"\\u0000\"",
                                      "\"\\ud800\"",
                                      "\"\\udc00\"",
                                      "\"\\ud800\\u0041\"",
                                      "\"\\x\"",
                                      "\"\\u12\"",
                                      "01",
                                      "1.",
                                      ".5",
                                      "-",
                                      "1e",
                                      "+1",
                                      "9223372036854775808",
                                      "-9223372036854775809",
                                      "1e999",
                                      "tru",
                                      "nul",
                                      "[1,]",
                                      "{\"a\":1,}",
                                      "{\"a\" 1}",
                                      "{\"a\":1,\"a\":2}",
                                      "[1 2]",
                                      "\"tab\there\"",
                                      "\"\xff\"",
                                      "\"\xc0\xaf\"",
                                      "\"\xed\xa0\x80\"",
                                      "\"\xf4\x90\x80\x80\"",
                                      "\"\xe4\xb8\"",
                                      "NaN",
                                      "Infinity",
                                      "'x'",
                                      "{1:2}",
                                      "[\"a\" , ]"};
    for (int pass = 0; pass < 2; pass++) {
        const char *const *list = pass ? bad : good;
        size_t n = pass ? sizeof bad / sizeof *bad : sizeof good / sizeof *good;
        for (size_t i = 0; i < n; i++) {
            char text[256];
            snprintf(text, sizeof text, "[{\"v\": %s}]", list[i]);
            json_t *want = json_loadb(text + 1, strlen(text) - 2, JSON_REJECT_DUPLICATES, NULL);
            assert_true(pass ? want == NULL : want != NULL);
            cf_manifest_reader *r = NULL;
            cf_error err;
            json_t *got = NULL;
            size_t index;
            assert_int_equal(cf_manifest_reader_open_mem(text, strlen(text), &r, &err), CF_OK);
            cf_err rc = cf_manifest_reader_next(r, &got, &index, &err);
            if (pass && rc == CF_OK)
                fail_msg("accepted %s", list[i]);
            if (!pass && (rc != CF_OK || !json_equal(got, want)))
                fail_msg("%s: %s", list[i], rc == CF_OK ? "differs from jansson" : err.msg);
            json_decref(got);
            json_decref(want);
            cf_manifest_reader_free(r);
        }
    }
}

static void test_json_parser_bounds_nesting_and_reports_where(void **state)
{
    /* Payloads reach the parser without the reader's limits: nesting is bounded here too. */
    char deep[256];
    const char *why = NULL;
    size_t at = 0;
    for (int levels = CF_MANIFEST_DEPTH_MAX; levels <= CF_MANIFEST_DEPTH_MAX + 1; levels++) {
        size_t n = 0;
        n += (size_t)snprintf(deep + n, sizeof deep - n, "{\"a\":");
        for (int i = 1; i < levels; i++)
            deep[n++] = '[';
        deep[n++] = '1';
        for (int i = 1; i < levels; i++)
            deep[n++] = ']';
        deep[n++] = '}';
        json_t *j = cf_manifest_json_parse(deep, n, &why, &at);
        if (levels == CF_MANIFEST_DEPTH_MAX) {
            assert_non_null(j);
        } else {
            assert_null(j);
            assert_string_equal(why, "nested too deep");
            assert_int_equal(at, 5 + CF_MANIFEST_DEPTH_MAX - 1);
        }
        json_decref(j);
    }
    assert_null(cf_manifest_json_parse("[1]", 3, &why, &at));
    assert_ptr_equal(why, cf_manifest_json_not_object);
    assert_null(cf_manifest_json_parse("{} x", 4, &why, &at));
    assert_string_equal(why, "end of input expected");
    assert_int_equal(at, 3);
    assert_null(cf_manifest_json_parse("{\"a\":\"b", 7, &why, &at));
    assert_string_equal(why, "truncated string");
    assert_null(cf_manifest_json_parse("", 0, &why, &at));
    /* A long string and a long number cost what they are, and no more. */
    size_t big = 1 << 20;
    char *text = malloc(big + 16);
    memcpy(text, "{\"a\":\"", 6);
    memset(text + 6, 'x', big);
    memcpy(text + 6 + big, "\"}", 2);
    json_t *j = cf_manifest_json_parse(text, big + 8, &why, &at);
    assert_non_null(j);
    assert_int_equal(json_string_length(json_object_get(j, "a")), big);
    json_decref(j);
    memcpy(text, "{\"a\":", 5);
    memset(text + 5, '9', big);
    text[5 + big] = '}';
    assert_null(cf_manifest_json_parse(text, big + 6, &why, &at));
    assert_string_equal(why, "too big integer");
    free(text);
}

static void test_duplicate_keys_fail_that_entry_only(void **state)
{
    json_t *good = real_entry(TNGTLSU, 0);
    char *good_text = json_dumps(good, JSON_COMPACT);
    size_t cap = strlen(good_text) * 2 + 200;
    char *doc = malloc(cap);
    snprintf(doc, cap, "[{\"payload\":\"a\",\"payload\":\"b\"},\n%s]", good_text);
    cf_manifest_trust *t = make_trust(SIGNER5, NULL);
    run_result res;
    run_mem(doc, t, &res);
    assert_false(res.stream_failed);
    assert_int_equal(res.entries, 2);
    assert_int_equal(res.good, 1);
    assert_int_equal(res.bad_index[0], 0);
    assert_non_null(strstr(res.bad_msg[0], "entry 0: not valid JSON: duplicate object key"));
    free(doc);
    free(good_text);
    json_decref(good);
    cf_manifest_trust_free(t);
}

static void test_malformed_top_level_is_refused(void **state)
{
    static const struct {
        const char *doc;
        const char *msg;
        size_t good;
    } cases[] = {
        {"", "manifest is empty", 0},
        {"{\"a\":1}", "manifest is not a JSON array (starts with '{')", 0},
        {"[{} x {}]", "entry 1: unexpected 'x' after entry 0 at byte 4", 0},
        {"[{},,{}]", "entry 1: not a JSON object (starts with ',' at byte 4)", 0},
        {"[{},]", "entry 1: missing after ',' (trailing comma at byte 4)", 0},
        {"[{}] {}", "manifest: unexpected '{' after the end of the array at byte 5", 0},
        {"[{\"a\":[}]", "entry 0: '}' closes an array at byte 7", 0},
        {"[1]", "entry 0: not a JSON object (starts with '1' at byte 1)", 0},
        {"[{}", "entry 1: truncated (the file ends before the array is closed)", 0},
    };
    cf_manifest_trust *t = make_trust(NULL);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_result res;
        run_mem(cases[i].doc, t, &res);
        if (!res.stream_failed || strcmp(res.stream_msg, cases[i].msg) != 0)
            fail_msg("%s: got \"%s\"", cases[i].doc, res.stream_msg);
    }
    /* An empty array and escaped quotes and brackets inside strings are fine. */
    run_result res;
    run_mem(" \xef\xbb\xbf[ ]\n", t, &res);
    assert_true(res.stream_failed); /* a BOM is only allowed at the very start */
    run_mem("\xef\xbb\xbf[ ]\n", t, &res);
    assert_false(res.stream_failed);
    run_mem("[{\"a\":\"}]\\\"[{\"}, {}]", t, &res);
    assert_false(res.stream_failed);
    assert_int_equal(res.entries, 2);
    cf_manifest_trust_free(t);
}

/* ---- detached-signature PEM bundles ------------------------------------------------------ */

static void run_cmd(const char *cmd)
{
    if (system(cmd) != 0)
        fail_msg("command failed: %s", cmd);
}

/* Writes the device certificate and its intermediate of real entries 0..n-1 as PEM. */
static void write_bundle(const char *path, const char *manifest, size_t n)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (size_t i = 0; i < n; i++) {
        json_t *p = real_payload(manifest, i);
        json_t *x5c = json_object_get(
            json_array_get(json_object_get(json_object_get(p, "publicKeySet"), "keys"), 0), "x5c");
        for (size_t k = 0; k < json_array_size(x5c); k++) {
            const char *b64 = json_string_value(json_array_get(x5c, k));
            unsigned char *der;
            size_t len;
            cf_error err;
            assert_int_equal(cf_b64_decode(b64, strlen(b64), &der, &len, &err), CF_OK);
            const unsigned char *q = der;
            X509 *x = d2i_X509(NULL, &q, (long)len);
            assert_non_null(x);
            PEM_write_X509(f, x);
            X509_free(x);
            free(der);
        }
        json_decref(p);
    }
    fclose(f);
}

static unsigned char *read_tmp(const char *path, size_t *len)
{
    char *buf = NULL;
    cf_error err;
    if (cf_fs_read_file(path, 1 << 20, &buf, len, &err) != CF_OK)
        fail_msg("%s", err.msg);
    return (unsigned char *)buf;
}

static void test_detached_bundle_made_with_openssl_verifies(void **state)
{
    char dir[1100], cmd[8000], pem[1200], sig_path[1200], b64_path[1200];
    snprintf(dir, sizeof dir, "%s", tmp_path("bundle"));
    snprintf(pem, sizeof pem, "%s/bundle.pem", dir);
    snprintf(sig_path, sizeof sig_path, "%s/bundle.sig", dir);
    snprintf(b64_path, sizeof b64_path, "%s/bundle.sig.b64", dir);
    snprintf(cmd, sizeof cmd,
             "set -e; mkdir -p %s; cd %s;"
             " openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
             " -keyout signer.key -out signer.pem -days 30 -subj /CN=Bundle-Signer 2>/dev/null",
             dir, dir);
    run_cmd(cmd);
    write_bundle(pem, TNGTLSU, 3);
    snprintf(cmd, sizeof cmd,
             "set -e; cd %s; openssl dgst -sha256 -sign signer.key -out bundle.sig bundle.pem;"
             " openssl base64 -in bundle.sig -out bundle.sig.b64",
             dir);
    run_cmd(cmd);

    cf_manifest_trust *t = make_trust(NULL);
    cf_error err;
    char signer_path[1200];
    snprintf(signer_path, sizeof signer_path, "%s/signer.pem", dir);
    size_t slen;
    unsigned char *signer_pem = read_tmp(signer_path, &slen);
    assert_int_equal(cf_manifest_trust_add_data(t, 1, signer_pem, slen, &err), CF_OK);
    free(signer_pem);

    const char *sigs[] = {sig_path, b64_path};
    for (int v = 0; v < 2; v++) {
        size_t sig_len;
        unsigned char *sig = read_tmp(sigs[v], &sig_len);
        cf_manifest_bundle *b = NULL;
        if (cf_manifest_bundle_open(t, pem, sig, sig_len, &b, &err) != CF_OK)
            fail_msg("%s", err.msg);
        static const char *const uids[] = {"sn0123F2408EA1FCF201", "sn01237FA064679E6A01"};
        size_t count = 0, index;
        cf_manifest_device dev;
        for (;;) {
            if (cf_manifest_bundle_next(b, &dev, &index, &err) != CF_OK)
                fail_msg("%s", err.msg);
            if (!dev.uid[0])
                break;
            assert_int_equal(index, count);
            if (count < 2)
                assert_string_equal(dev.uid, uids[count]);
            assert_non_null(dev.cert_der);
            assert_true(dev.has_key);
            cf_manifest_device_clear(&dev);
            count++;
        }
        assert_int_equal(count, 3);
        cf_manifest_bundle_free(b);
        free(sig);
    }

    /* One byte of the PEM changed (a comment line the PEM parser would skip): refused. */
    size_t pem_len, sig_len;
    unsigned char *pem_data = read_tmp(pem, &pem_len);
    unsigned char *sig = read_tmp(sig_path, &sig_len);
    cf_manifest_bundle *b = NULL;
    assert_int_equal(cf_manifest_bundle_open_mem(t, pem_data, pem_len, sig, sig_len, &b, &err),
                     CF_OK);
    cf_manifest_bundle_free(b);
    pem_data[pem_len - 1] = ' ';
    assert_int_equal(cf_manifest_bundle_open_mem(t, pem_data, pem_len, sig, sig_len, &b, &err),
                     CF_ERR_TAMPERED);
    assert_non_null(strstr(err.msg, "does not verify with any registered signer"));
    free(pem_data);
    free(sig);
    cf_manifest_trust_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64url_round_trip_and_strictness),
        cmocka_unit_test(test_jwk_off_curve_point_and_wrong_curve_are_refused),
        cmocka_unit_test(test_real_manifests_all_entries_verify),
        cmocka_unit_test(test_real_entry_yields_device_fields),
        cmocka_unit_test(test_version2_entries_have_no_key_and_verify_by_jws_alone),
        cmocka_unit_test(test_reader_reports_offset_size_and_sha256),
        cmocka_unit_test(test_entries_split_across_read_chunks_stream_whole),
        cmocka_unit_test(test_signer_expired_now_is_accepted_at_provisioning_time),
        cmocka_unit_test(test_one_trust_serves_several_threads),
        cmocka_unit_test(test_verified_chain_serves_later_devices_with_the_same_result),
        cmocka_unit_test(test_verified_chain_does_not_let_a_bad_device_through),
        cmocka_unit_test(test_verified_chain_is_rechecked_at_the_trusts_time),
        cmocka_unit_test(test_verified_chain_with_a_malformed_device_certificate),
        cmocka_unit_test(test_busy_keys_get_tables_that_refuse_what_the_full_way_refuses),
        cmocka_unit_test(test_signer_issued_by_a_root_must_carry_its_signature),
        cmocka_unit_test(test_one_payload_byte_changed_fails_that_entry_only),
        cmocka_unit_test(test_one_signature_byte_changed_fails_that_entry_only),
        cmocka_unit_test(test_unknown_signer_is_named),
        cmocka_unit_test(test_signer_used_outside_its_validity_is_refused),
        cmocka_unit_test(test_kid_must_be_the_signers_key_identifier),
        cmocka_unit_test(test_mismatched_unique_ids_are_refused),
        cmocka_unit_test(test_certificate_cn_must_name_the_unique_id),
        cmocka_unit_test(test_jwk_that_does_not_match_its_certificate_is_refused),
        cmocka_unit_test(test_expired_birth_certificate_is_refused),
        cmocka_unit_test(test_chain_to_another_makers_root_is_refused),
        cmocka_unit_test(test_invalid_base64url_is_refused),
        cmocka_unit_test(test_truncated_manifest_yields_earlier_entries_then_fails),
        cmocka_unit_test(test_deep_nesting_is_refused),
        cmocka_unit_test(test_endless_string_fails_after_reading_one_entry_limit),
        cmocka_unit_test(test_duplicate_keys_fail_that_entry_only),
        cmocka_unit_test(test_entry_json_parses_as_jansson_does),
        cmocka_unit_test(test_json_parser_bounds_nesting_and_reports_where),
        cmocka_unit_test(test_malformed_top_level_is_refused),
        cmocka_unit_test(test_detached_bundle_made_with_openssl_verifies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
