/* fuzzutil.c - what several fuzz targets need: a private temporary directory, a signer. */
#include "fuzzutil.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fs.h"

static char dir[4096];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    if (ftw->level > 0)
        remove(path);
    return 0;
}

static void remove_all(void)
{
    if (dir[0])
        nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void remove_dir(void)
{
    remove_all();
    if (dir[0])
        rmdir(dir);
}

const char *fz_tmpdir(void)
{
    if (dir[0])
        return dir;
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/certfleet-fuzz.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(dir)) {
        perror("fuzz: mkdtemp");
        abort();
    }
    atexit(remove_dir);
    return dir;
}

void fz_tmpdir_clear(void)
{
    fz_tmpdir();
    remove_all();
}

const char *fz_write_file(const char *name, const unsigned char *data, size_t len)
{
    static char path[4200];
    snprintf(path, sizeof path, "%s/%s", fz_tmpdir(), name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        perror("fuzz: open");
        abort();
    }
    while (len > 0) {
        ssize_t w = write(fd, data, len);
        if (w <= 0) {
            perror("fuzz: write");
            abort();
        }
        data += w;
        len -= (size_t)w;
    }
    close(fd);
    return path;
}

X509 *fz_make_signer(EVP_PKEY **key)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    EVP_PKEY *k = EVP_EC_gen("P-256");
    if (!x || !name || !k || !X509_set_version(x, 2) ||
        !ASN1_INTEGER_set(X509_get_serialNumber(x), 1) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                    (const unsigned char *)"fuzz manifest signer", -1, -1, 0) ||
        !X509_set_subject_name(x, name) || !X509_set_issuer_name(x, name) ||
        !ASN1_TIME_set_string_X509(X509_getm_notBefore(x), "20000101000000Z") ||
        !ASN1_TIME_set_string_X509(X509_getm_notAfter(x), "20991231235959Z") ||
        !X509_set_pubkey(x, k) || !X509_sign(x, k, EVP_sha256())) {
        X509_free(x);
        x = NULL;
        EVP_PKEY_free(k);
        k = NULL;
    }
    X509_NAME_free(name);
    *key = k;
    return x;
}

cf_manifest_trust *fz_microchip_trust(int64_t when, X509 **signer, EVP_PKEY **key)
{
    char path[4096], *root = NULL;
    size_t root_len = 0;
    cf_manifest_trust *trust = NULL;
    cf_error err = {0};
    snprintf(path, sizeof path, "%s/microchip/Crypto_Authentication_Root_CA_002.crt",
             CF_FUZZ_DATA_DIR);
    if (!(*signer = fz_make_signer(key))) {
        fprintf(stderr, "fuzz: cannot make the signer\n");
        abort();
    }
    if (cf_manifest_trust_new(&trust, &err) != CF_OK ||
        cf_fs_read_file(path, 1 << 20, &root, &root_len, &err) != CF_OK ||
        cf_manifest_trust_add_data(trust, 0, root, root_len, &err) != CF_OK ||
        cf_manifest_trust_add_signer(trust, *signer, &err) != CF_OK) {
        fprintf(stderr, "fuzz: trust: %s\n", err.msg);
        abort();
    }
    cf_manifest_trust_set_time(trust, when);
    free(root);
    return trust;
}
