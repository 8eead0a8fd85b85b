/* Unit tests of src/pki/manifest_make: the manifest has Microchip's shape, every entry's
 * signature verifies with the signer it names, unique ids and claim codes are distinct, the
 * device keys are the ones in the certificates, and bad options are refused. */
#include "testutil.h"

#include <jansson.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/fs.h"
#include "core/util.h"
#include "pki/manifest_make.h"

/* ---- helpers ---- */

static const char *out_dir(const char *name)
{
    static char path[1024];
    snprintf(path, sizeof path, "%s/mk-%s", tu_tmpdir(), name);
    return path;
}

static char *read_out(const char *dir, const char *name, size_t *len)
{
    char path[1200], *data = NULL;
    size_t n = 0;
    cf_error err;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    assert_int_equal(cf_fs_read_file(path, (size_t)1 << 30, &data, &n, &err), CF_OK);
    if (len)
        *len = n;
    return data;
}

static mode_t mode_of(const char *dir, const char *name)
{
    char path[1200];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    assert_int_equal(stat(path, &st), 0);
    return st.st_mode & 0777;
}

static void make(const char *dir, uint64_t n, int version, int key_files)
{
    cf_manifest_make_opts o = {0};
    cf_manifest_make_stats st = {0};
    cf_error err = {0};
    o.devices = n;
    o.out_dir = dir;
    o.version = version;
    o.key_files = key_files;
    o.threads = 2;
    assert_int_equal(cf_manifest_make(&o, &st, &err), CF_OK);
    assert_int_equal(st.devices, n);
}

/* Base64url (no padding) or standard base64 into a new buffer; NULL when malformed. */
static unsigned char *b64_decode(const char *s, int url, size_t *outlen)
{
    size_t n = strlen(s);
    char *t = malloc(n + 4);
    assert_non_null(t);
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (url && (c == '+' || c == '/' || c == '='))
            c = '!';
        t[i] = url && c == '-' ? '+' : url && c == '_' ? '/' : c;
    }
    while (n % 4)
        t[n++] = '=';
    t[n] = '\0';
    unsigned char *out = malloc(n);
    assert_non_null(out);
    int m = EVP_DecodeBlock(out, (unsigned char *)t, (int)n);
    if (m < 0) {
        free(t);
        free(out);
        return NULL;
    }
    size_t pad = 0; /* EVP_DecodeBlock counts the bytes that padding stands for */
    while (pad < n && t[n - 1 - pad] == '=')
        pad++;
    free(t);
    *outlen = (size_t)m - pad;
    return out;
}

static json_t *decode_json(const char *b64url)
{
    size_t n;
    unsigned char *raw = b64_decode(b64url, 1, &n);
    assert_non_null(raw);
    json_t *j = json_loadb((const char *)raw, n, 0, NULL);
    free(raw);
    assert_non_null(j);
    return j;
}

static X509 *load_cert(const char *dir, const char *name)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    return x;
}

/* ES256 verification of protected "." payload with the raw r||s signature. */
static int jws_verifies(EVP_PKEY *pub, const char *prot, const char *payload,
                        const unsigned char *raw, size_t rawlen)
{
    if (rawlen != 64)
        return 0;
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(raw, 32, NULL), *s = BN_bin2bn(raw + 32, 32, NULL);
    assert_true(sig && r && s && ECDSA_SIG_set0(sig, r, s));
    unsigned char *der = NULL;
    int derlen = i2d_ECDSA_SIG(sig, &der);
    ECDSA_SIG_free(sig);
    size_t inlen = strlen(prot) + 1 + strlen(payload);
    char *in = malloc(inlen + 1);
    snprintf(in, inlen + 1, "%s.%s", prot, payload);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pub) == 1 &&
             EVP_DigestVerify(ctx, der, (size_t)derlen, (unsigned char *)in, inlen) == 1;
    EVP_MD_CTX_free(ctx);
    OPENSSL_free(der);
    free(in);
    return ok;
}

static const char *payload_order_v1[] = {
    "version",     "model",        "partNumber", "manufacturer",
    "provisioner", "distributor",  "groupId",    "provisioningTimestamp",
    "uniqueId",    "publicKeySet", NULL};

/* ---- tests ---- */

static void test_claim_code_round_trips_and_reads_typing_slips(void **state)
{
    unsigned char code[CF_CLAIM_CODE_BYTES], back[CF_CLAIM_CODE_BYTES];
    char text[CF_CLAIM_CODE_STR_MAX], sloppy[CF_CLAIM_CODE_STR_MAX];
    cf_error err;
    for (int round = 0; round < 200; round++) {
        assert_int_equal(cf_random_bytes(code, sizeof code, &err), CF_OK);
        if (round == 0)
            memset(code, 0xff, sizeof code);
        if (round == 1)
            memset(code, 0, sizeof code);
        cf_claim_code_format(code, text);
        assert_int_equal(strlen(text), 32);
        assert_true(text[2] == '-' && text[7] == '-' && text[27] == '-');
        assert_int_equal(cf_claim_code_parse(text, back, &err), CF_OK);
        assert_memory_equal(code, back, sizeof code);
        /* lower case, no dashes, O for 0 and l for 1 */
        size_t j = 0;
        for (const char *p = text; *p; p++)
            if (*p != '-')
                sloppy[j++] = *p == '0' ? 'o' : *p == '1' ? 'l' : (char)(*p | 0x20);
        sloppy[j] = '\0';
        assert_int_equal(cf_claim_code_parse(sloppy, back, &err), CF_OK);
        assert_memory_equal(code, back, sizeof code);
    }
    assert_string_equal(
        cf_claim_code_format((unsigned char[16]){0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                                 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
                             text),
        "7Z-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ");
}

static void test_claim_code_parse_refuses_wrong_length_and_overflow(void **state)
{
    unsigned char out[CF_CLAIM_CODE_BYTES];
    cf_error err;
    assert_int_equal(cf_claim_code_parse("7Z-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZ", out, &err),
                     CF_ERR_INVALID);
    assert_int_equal(cf_claim_code_parse("7Z-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZZ", out, &err),
                     CF_ERR_INVALID);
    assert_int_equal(cf_claim_code_parse("8Z-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ", out, &err),
                     CF_ERR_INVALID); /* 129 bits */
    assert_int_equal(cf_claim_code_parse("7Z-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZU", out, &err),
                     CF_ERR_INVALID);
    assert_null(strstr(err.msg, "ZZZU")); /* a secret is never echoed */
}

static void test_entries_have_microchip_shape_and_verify_with_the_signer(void **state)
{
    const char *dir = out_dir("shape");
    make(dir, 5, 1, 0);
    char *text = read_out(dir, "manifest.json", NULL);
    json_error_t jerr;
    json_t *arr = json_loads(text, 0, &jerr);
    assert_non_null(arr);
    assert_true(json_is_array(arr));
    assert_int_equal(json_array_size(arr), 5);
    /* laid out as MicrochipDirect's files: two-space indentation, no final newline */
    assert_memory_equal(text, "[\n  {\n    \"payload\": \"", 22);
    assert_string_equal(text + strlen(text) - 3, "}\n]");

    X509 *signer = load_cert(dir, "manifest-signer.crt");
    X509 *batch = load_cert(dir, "batch-ca.crt");
    unsigned char *signer_der = NULL, *batch_der = NULL, h[32];
    int signer_len = i2d_X509(signer, &signer_der), batch_len = i2d_X509(batch, &batch_der);
    assert_true(EVP_Digest(signer_der, (size_t)signer_len, h, NULL, EVP_sha256(), NULL));

    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
    {
        assert_int_equal(json_object_size(e), 4);
        const char *prot = json_string_value(json_object_get(e, "protected"));
        const char *payload = json_string_value(json_object_get(e, "payload"));
        const char *sig = json_string_value(json_object_get(e, "signature"));
        const char *uid =
            json_string_value(json_object_get(json_object_get(e, "header"), "uniqueId"));
        assert_true(prot && payload && sig && uid);
        assert_int_equal(strlen(uid), 18);
        assert_memory_equal(uid, "01", 2);

        json_t *ph = decode_json(prot);
        assert_string_equal(json_string_value(json_object_get(ph, "alg")), "ES256");
        assert_string_equal(json_string_value(json_object_get(ph, "typ")), "JWT");
        size_t n;
        unsigned char *x5t = b64_decode(json_string_value(json_object_get(ph, "x5t#S256")), 1, &n);
        assert_int_equal(n, 32);
        assert_memory_equal(x5t, h, 32);
        free(x5t);
        unsigned char *kid = b64_decode(json_string_value(json_object_get(ph, "kid")), 1, &n);
        const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(signer);
        assert_int_equal(n, ASN1_STRING_length(ski));
        assert_memory_equal(kid, ASN1_STRING_get0_data(ski), n);
        free(kid);
        json_decref(ph);

        unsigned char *raw = b64_decode(sig, 1, &n);
        assert_int_equal(n, 64);
        assert_true(jws_verifies(X509_get0_pubkey(signer), prot, payload, raw, n));
        raw[10] ^= 1;
        assert_false(jws_verifies(X509_get0_pubkey(signer), prot, payload, raw, n));
        free(raw);

        json_t *p = decode_json(payload);
        const char *key;
        json_t *v;
        int k = 0;
        json_object_foreach(p, key, v)
        {
            assert_non_null(payload_order_v1[k]);
            assert_string_equal(key, payload_order_v1[k]);
            k++;
        }
        assert_int_equal(json_integer_value(json_object_get(p, "version")), 1);
        assert_string_equal(json_string_value(json_object_get(p, "uniqueId")), uid);
        const char *ts = json_string_value(json_object_get(p, "provisioningTimestamp"));
        assert_int_equal(strlen(ts), 24); /* 2025-06-01T20:14:53.773Z */
        assert_true(ts[10] == 'T' && ts[19] == '.' && ts[23] == 'Z');

        json_t *keys = json_object_get(json_object_get(p, "publicKeySet"), "keys");
        assert_int_equal(json_array_size(keys), 1);
        json_t *jwk = json_array_get(keys, 0);
        assert_string_equal(json_string_value(json_object_get(jwk, "kid")), "0");
        assert_string_equal(json_string_value(json_object_get(jwk, "kty")), "EC");
        assert_string_equal(json_string_value(json_object_get(jwk, "crv")), "P-256");
        json_t *x5c = json_object_get(jwk, "x5c");
        assert_int_equal(json_array_size(x5c), 2);
        unsigned char *der = b64_decode(json_string_value(json_array_get(x5c, 1)), 0, &n);
        assert_int_equal(n, (size_t)batch_len);
        assert_memory_equal(der, batch_der, n);
        free(der);
        der = b64_decode(json_string_value(json_array_get(x5c, 0)), 0, &n);
        const unsigned char *pp = der;
        X509 *dev = d2i_X509(NULL, &pp, (long)n);
        assert_non_null(dev);
        free(der);
        assert_int_equal(X509_verify(dev, X509_get0_pubkey(batch)), 1);
        char cn[64], want[64];
        X509_NAME_get_text_by_NID(X509_get_subject_name(dev), NID_commonName, cn, sizeof cn);
        snprintf(want, sizeof want, "sn%s", uid);
        for (char *c = want + 2; *c; c++)
            if (*c >= 'a' && *c <= 'f')
                *c = (char)(*c - 'a' + 'A');
        assert_string_equal(cn, want);
        /* JWK x || y is the certificate's point */
        unsigned char point[65];
        size_t plen = 0;
        assert_true(EVP_PKEY_get_octet_string_param(X509_get0_pubkey(dev), "encoded-pub-key", point,
                                                    sizeof point, &plen));
        assert_int_equal(plen, 65);
        unsigned char *x = b64_decode(json_string_value(json_object_get(jwk, "x")), 1, &n);
        assert_int_equal(n, 32);
        assert_memory_equal(x, point + 1, 32);
        free(x);
        unsigned char *y = b64_decode(json_string_value(json_object_get(jwk, "y")), 1, &n);
        assert_int_equal(n, 32);
        assert_memory_equal(y, point + 33, 32);
        free(y);
        X509_free(dev);
        json_decref(p);
    }
    OPENSSL_free(signer_der);
    OPENSSL_free(batch_der);
    X509_free(signer);
    X509_free(batch);
    json_decref(arr);
    free(text);
}

static void test_ids_and_claim_codes_are_distinct_and_in_manifest_order(void **state)
{
    const char *dir = out_dir("distinct");
    enum { N = 300 }; /* more than two chunks, over two workers */
    make(dir, N, 1, 0);
    char *text = read_out(dir, "manifest.json", NULL);
    json_t *arr = json_loads(text, 0, NULL);
    assert_int_equal(json_array_size(arr), N);
    char *csv = read_out(dir, "claim-codes.csv", NULL);
    assert_memory_equal(csv, "unique_id,claim_code\n", 21);
    static char uids[N][19];
    static unsigned char codes[N][CF_CLAIM_CODE_BYTES];
    char *line = csv + 21;
    for (int i = 0; i < N; i++) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = '\0';
        char *comma = strchr(line, ',');
        assert_non_null(comma);
        *comma = '\0';
        cf_error err;
        assert_int_equal(cf_claim_code_parse(comma + 1, codes[i], &err), CF_OK);
        snprintf(uids[i], sizeof uids[i], "%s", line);
        const char *uid = json_string_value(
            json_object_get(json_object_get(json_array_get(arr, (size_t)i), "header"), "uniqueId"));
        assert_string_equal(uid, uids[i]);
        line = nl + 1;
    }
    assert_int_equal(*line, '\0');
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++) {
            assert_string_not_equal(uids[i], uids[j]);
            assert_memory_not_equal(codes[i], codes[j], CF_CLAIM_CODE_BYTES);
        }
    json_decref(arr);
    free(text);
    free(csv);
}

static void test_device_keys_are_the_certified_keys_in_openssl_encoding(void **state)
{
    const char *dir = out_dir("keys");
    make(dir, 20, 1, 1);
    assert_int_equal(mode_of(dir, "device-keys.pem"), 0600);
    assert_int_equal(mode_of(dir, "claim-codes.csv"), 0600);
    assert_int_equal(mode_of(dir, "root.key"), 0600);
    assert_int_equal(mode_of(dir, "batch-ca.key"), 0600);
    assert_int_equal(mode_of(dir, "manifest-signer.key"), 0600);
    assert_int_equal(mode_of(dir, "manifest.json"), 0644);
    assert_int_equal(mode_of(dir, "root.crt"), 0644);

    char *text = read_out(dir, "manifest.json", NULL);
    json_t *arr = json_loads(text, 0, NULL);
    char *pems = read_out(dir, "device-keys.pem", NULL);
    char *at = pems;
    for (size_t i = 0; i < 20; i++) {
        json_t *p =
            decode_json(json_string_value(json_object_get(json_array_get(arr, i), "payload")));
        const char *uid = json_string_value(json_object_get(p, "uniqueId"));
        char comment[64];
        snprintf(comment, sizeof comment, "# uniqueId %s\n", uid);
        assert_memory_equal(at, comment, strlen(comment));
        at += strlen(comment);
        char *end = strstr(at, "-----END PRIVATE KEY-----\n");
        assert_non_null(end);
        end += strlen("-----END PRIVATE KEY-----\n");
        BIO *b = BIO_new_mem_buf(at, (int)(end - at));
        EVP_PKEY *key = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
        BIO_free(b);
        assert_non_null(key);
        /* byte for byte what OpenSSL's own encoder writes */
        BIO *mem = BIO_new(BIO_s_mem());
        assert_true(PEM_write_bio_PrivateKey(mem, key, NULL, NULL, 0, NULL, NULL));
        char *re;
        long relen = BIO_get_mem_data(mem, &re);
        assert_int_equal(relen, end - at);
        assert_memory_equal(re, at, (size_t)relen);
        BIO_free(mem);
        /* the key file holds the same key */
        char name[64];
        snprintf(name, sizeof name, "keys/%s.key", uid);
        assert_int_equal(mode_of(dir, name), 0600);
        size_t flen;
        char *file = read_out(dir, name, &flen);
        assert_int_equal(flen, (size_t)(end - at));
        assert_memory_equal(file, at, flen);
        free(file);
        /* and the birth certificate certifies it */
        json_t *x5c = json_object_get(
            json_array_get(json_object_get(json_object_get(p, "publicKeySet"), "keys"), 0), "x5c");
        size_t n;
        unsigned char *der = b64_decode(json_string_value(json_array_get(x5c, 0)), 0, &n);
        const unsigned char *pp = der;
        X509 *dev = d2i_X509(NULL, &pp, (long)n);
        assert_int_equal(X509_check_private_key(dev, key), 1);
        X509_free(dev);
        free(der);
        EVP_PKEY_free(key);
        json_decref(p);
        at = end;
    }
    assert_int_equal(*at, '\0');
    json_decref(arr);
    free(text);
    free(pems);
}

static void test_version_2_entries_carry_no_public_key_set(void **state)
{
    const char *dir = out_dir("v2");
    make(dir, 3, 2, 0);
    char *text = read_out(dir, "manifest.json", NULL);
    json_t *arr = json_loads(text, 0, NULL);
    assert_int_equal(json_array_size(arr), 3);
    json_t *p = decode_json(json_string_value(json_object_get(json_array_get(arr, 0), "payload")));
    assert_int_equal(json_integer_value(json_object_get(p, "version")), 2);
    assert_null(json_object_get(p, "publicKeySet"));
    assert_non_null(json_object_get(p, "uniqueId"));
    json_decref(p);
    json_decref(arr);
    free(text);
}

static void test_refuses_a_directory_that_holds_a_manifest(void **state)
{
    const char *dir = out_dir("twice");
    make(dir, 1, 1, 0);
    char before[64];
    size_t n;
    char *key = read_out(dir, "root.key", &n);
    snprintf(before, sizeof before, "%.60s", key + 40);
    free(key);
    cf_manifest_make_opts o = {.devices = 1, .out_dir = dir, .version = 1};
    cf_error err = {0};
    assert_int_equal(cf_manifest_make(&o, NULL, &err), CF_ERR_EXISTS);
    assert_non_null(strstr(err.msg, "already holds a manifest"));
    key = read_out(dir, "root.key", &n);
    assert_memory_equal(key + 40, before, strlen(before)); /* nothing replaced */
    free(key);
}

static void test_refuses_bad_options(void **state)
{
    cf_error err;
    cf_manifest_make_opts o = {.devices = 0, .out_dir = out_dir("bad"), .version = 1};
    assert_int_equal(cf_manifest_make(&o, NULL, &err), CF_ERR_INVALID);
    o.devices = 1;
    o.version = 3;
    assert_int_equal(cf_manifest_make(&o, NULL, &err), CF_ERR_INVALID);
    o.version = 1;
    o.manufacturer = "A manufacturer name far too long to fit into a certificate name";
    assert_int_equal(cf_manifest_make(&o, NULL, &err), CF_ERR_INVALID);
    assert_false(cf_fs_exists(out_dir("bad")));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_claim_code_round_trips_and_reads_typing_slips),
        cmocka_unit_test(test_claim_code_parse_refuses_wrong_length_and_overflow),
        cmocka_unit_test(test_entries_have_microchip_shape_and_verify_with_the_signer),
        cmocka_unit_test(test_ids_and_claim_codes_are_distinct_and_in_manifest_order),
        cmocka_unit_test(test_device_keys_are_the_certified_keys_in_openssl_encoding),
        cmocka_unit_test(test_version_2_entries_carry_no_public_key_set),
        cmocka_unit_test(test_refuses_a_directory_that_holds_a_manifest),
        cmocka_unit_test(test_refuses_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
