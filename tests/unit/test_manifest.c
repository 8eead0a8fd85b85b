/* Unit tests of src/pki/manifest and src/pki/jose: the streaming reader, entry verification
 * against Microchip's real manifests (tests/data/microchip), tampered and hostile inputs,
 * and detached-signature PEM bundles made with the openssl command line. */
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
        cmocka_unit_test(test_malformed_top_level_is_refused),
        cmocka_unit_test(test_detached_bundle_made_with_openssl_verifies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
