/* cmd_core.c - init, status, issue. */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/fs.h"
#include "core/util.h"

/* ---- init ---- */

static int run_init(cli *c)
{
    cf_init_opts o = {0};
    const char *kt = cli_opt(c, "key-type");
    long long days;
    o.org = cli_opt(c, "org");
    o.key_type = CF_KEY_P256;
    if (kt) {
        int t = cf_key_type_parse(kt);
        if (t < 0 || t == CF_KEY_ED25519)
            return cli_usage(c, "--key-type %s: expected p256, p384 or rsa3072", kt);
        o.key_type = (cf_key_type)t;
    }
    o.ca_key = cli_opt(c, "ca-key");
    o.root_key = cli_opt(c, "root-key");
    o.base_url = cli_opt(c, "base-url");
    if (cli_int(c, "device-days", 1, 36500, CF_DEFAULT_DEVICE_DAYS, &days) < 0)
        return 2;
    o.device_days = (int)days;
    o.actor = c->actor;
    if (cf_fleet_init(c->fleet, &o, &c->err) != CF_OK)
        return cli_fail(c);
    if (c->json) {
        cli_print_json(json_pack("{s:s, s:s, s:s}", "store",
                                 cf_store_describe(cf_fleet_store(c->fleet)), "root", "root-1",
                                 "issuing", "issuing-1"));
    } else {
        printf("initialised %s: root CA root-1 and issuing CA issuing-1 (%s)\n",
               cf_store_describe(cf_fleet_store(c->fleet)),
               o.ca_key ? "issuing key in PKCS#11 token" : cf_key_type_name(o.key_type));
    }
    return 0;
}

static const cli_opt_spec init_opts[] = {
    {"org", "NAME", "organisation name in the CA and device certificates"},
    {"key-type", "TYPE", "CA key type: p256 (default), p384 or rsa3072"},
    {"ca-key", "URI", "issuing CA key in a PKCS#11 token (pkcs11:...; RFC 7512)"},
    {"root-key", "URI", "root CA key in a PKCS#11 token (pkcs11:...)"},
    {"base-url", "URL", "base URL of the CRL/OCSP endpoints named in certificates"},
    {"device-days", "N", "default validity of device certificates in days (365)"},
    {NULL, NULL, NULL},
};

/* ---- status ---- */

static int run_status(cli *c)
{
    json_t *s;
    int rc = cli_call(c, "status", json_object(), &s);
    if (rc != 0)
        return rc;
    if (c->json) {
        cli_print_json(s);
        return 0;
    }
    json_t *dev = json_object_get(s, "devices");
    printf("store         %s (schema %lld)\n", cli_jstr(s, "store", ""),
           cli_jint(s, "schema_version"));
    printf("organisation  %s\n", cli_jstr(s, "org", ""));
    printf("CAs           %lld\n", cli_jint(s, "cas"));
    printf("devices      ");
    for (int i = 0; i < CF_DEVICE_STATE_COUNT; i++) {
        const char *name = cf_device_state_name((cf_device_state)i);
        if (cli_jint(dev, name))
            printf(" %s=%lld", name, cli_jint(dev, name));
    }
    printf(" (total %lld)\n", cli_jint(dev, "total"));
    json_t *certs = json_object_get(s, "certificates");
    printf("certificates  %lld issued, %lld valid\n", cli_jint(certs, "total"),
           cli_jint(certs, "valid"));
    printf("audit log     %lld records\n", cli_jint(json_object_get(s, "audit"), "records"));
    json_decref(s);
    return 0;
}

/* ---- issue ---- */

/* The certificate is stored before it is written out: a --out that cannot be written would
 * leave the user with an issued certificate they never received. Catch the usual mistakes
 * (missing or read-only directory, a directory as the file) before issuing. */
static int check_out_path(cli *c, const char *path)
{
    char dir[4096];
    struct stat st;
    if (!path)
        return 0;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        cf_error_set(&c->err, CF_ERR_IO, "--out %s: is a directory", path);
        return cli_fail(c);
    }
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    if (access(dir, W_OK | X_OK) != 0) {
        cf_error_set(&c->err, CF_ERR_IO, "--out %s: cannot write in %s: %s", path, dir,
                     strerror(errno));
        return cli_fail(c);
    }
    return 0;
}

/* PEM certificates to DER, one after the other. *der: free(). */
static int pem_to_der(cli *c, const char *pem, unsigned char **der, size_t *len)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *x;
    *der = NULL;
    *len = 0;
    while (bio && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
        unsigned char *one = NULL;
        size_t n = 0;
        cf_err rc = cf_x509_to_der(x, &one, &n, &c->err);
        X509_free(x);
        unsigned char *both = rc == CF_OK ? realloc(*der, *len + n) : NULL;
        if (!both) {
            OPENSSL_free(one);
            BIO_free(bio);
            if (rc == CF_OK)
                cf_error_set(&c->err, CF_ERR_NOMEM, "out of memory");
            return cli_fail(c);
        }
        memcpy(both + *len, one, n);
        *der = both;
        *len += n;
        OPENSSL_free(one);
    }
    ERR_clear_error();
    BIO_free(bio);
    return 0;
}

/* The CSR file as base64 (its bytes go to the fleet unchanged, PEM or DER). */
static json_t *csr_param(cli *c, const char *path)
{
    char *csr = NULL;
    size_t len = 0;
    /* Read a little more than the CSR limit, so the parser reports "too large". */
    if (cf_fs_read_file(path, 16 * 1024 * 1024, &csr, &len, &c->err) != CF_OK)
        return NULL;
    char *b64 = malloc(4 * ((len + 2) / 3) + 1);
    json_t *j = NULL;
    if (b64) {
        EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)csr, (int)len);
        j = json_string(b64);
    }
    if (!j)
        cf_error_set(&c->err, CF_ERR_NOMEM, "out of memory");
    free(b64);
    free(csr);
    return j;
}

static int run_issue(cli *c)
{
    const char *csr_path = cli_opt(c, "csr"), *device = cli_opt(c, "device");
    unsigned char *der = NULL;
    size_t der_len = 0;
    long long days;
    json_t *r = NULL;
    int rc;

    if (!csr_path || !device)
        return cli_usage(c, "--csr FILE and --device ID are required");
    if (c->json && (cli_flag(c, "der") || cli_flag(c, "out")))
        return cli_usage(c, "--json prints the certificate (PEM) within its output: it takes"
                            " neither --der nor --out");
    if (cli_int(c, "days", 1, 36500, 0, &days) < 0)
        return 2;
    if (check_out_path(c, cli_opt(c, "out")) != 0)
        return 1;
    json_t *csr = csr_param(c, csr_path);
    if (!csr)
        return cli_fail(c);
    json_t *params = json_pack("{s:s, s:o}", "id", device, "csr_base64", csr);
    if (days)
        json_object_set_new(params, "days", json_integer(days));
    if ((rc = cli_call(c, "issue", params, &r)) != 0)
        return rc;
    /* The leaf, and with --chain the issuing CA after it. */
    size_t n = strlen(cli_jstr(r, "pem", "")), m = strlen(cli_jstr(r, "issuing_pem", ""));
    char *pem = malloc(n + m + 1);
    if (!pem) {
        json_decref(r);
        cf_error_set(&c->err, CF_ERR_NOMEM, "out of memory");
        return cli_fail(c);
    }
    memcpy(pem, cli_jstr(r, "pem", ""), n + 1);
    if (cli_flag(c, "chain"))
        memcpy(pem + n, cli_jstr(r, "issuing_pem", ""), m + 1);
    if (c->json) {
        json_object_del(r, "issuing_pem");
        json_object_set_new(r, "pem", json_string(pem));
        cli_print_json(r);
        r = NULL;
        rc = 0;
    } else if (cli_flag(c, "der")) {
        if ((rc = pem_to_der(c, pem, &der, &der_len)) == 0)
            rc = cli_write_out(c, cli_opt(c, "out"), der, der_len);
    } else {
        rc = cli_write_out(c, cli_opt(c, "out"), pem, strlen(pem));
    }
    free(der);
    free(pem);
    json_decref(r);
    return rc;
}

static const cli_opt_spec issue_opts[] = {
    {"csr", "FILE", "PKCS#10 request, PEM or DER (- for stdin)"},
    {"device", "ID", "device id: subject CN and SAN URI urn:certfleet:device:ID"},
    {"days", "N", "validity in days (default: the store's setting)"},
    {"der", NULL, "write DER instead of PEM"},
    {"chain", NULL, "append the issuing CA certificate after the leaf"},
    {"out", "FILE", "write to FILE instead of standard output"},
    {NULL, NULL, NULL},
};

const cli_cmd cli_cmds_core[] = {
    {"init", NULL, 0, "create the root and issuing CAs of a new store", init_opts, run_init, 1, 1,
     0},
    {"status", NULL, 0, "show the fleet's state", NULL, run_status, 1, CLI_OP, 0},
    {"issue", NULL, 0, "issue a device certificate from a CSR", issue_opts, run_issue, 1, CLI_OP,
     0},
    {NULL, NULL, 0, NULL, NULL, NULL, 0, 0, 0},
};
