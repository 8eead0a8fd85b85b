/* cmd_core.c - init, status, issue. */
#include <errno.h>
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
    cf_fleet_status s;
    if (cf_fleet_get_status(c->fleet, &s, &c->err) != CF_OK)
        return cli_fail(c);
    if (c->json) {
        json_t *dev = json_object();
        int64_t total = 0;
        for (int i = 0; i < CF_DEVICE_STATE_COUNT; i++) {
            json_object_set_new(dev, cf_device_state_name((cf_device_state)i),
                                json_integer(s.devices[i]));
            total += s.devices[i];
        }
        json_object_set_new(dev, "total", json_integer(total));
        cli_print_json(json_pack("{s:s, s:s, s:I, s:I, s:o, s:{s:I, s:I}, s:{s:I}}", "store",
                                 cf_store_describe(cf_fleet_store(c->fleet)), "org", s.org,
                                 "schema_version", (json_int_t)s.schema_version, "cas",
                                 (json_int_t)s.ca_count, "devices", dev, "certificates", "total",
                                 (json_int_t)s.certs_total, "valid", (json_int_t)s.certs_valid,
                                 "audit", "records", (json_int_t)s.audit_seq));
        return 0;
    }
    printf("store         %s (schema %lld)\n", cf_store_describe(cf_fleet_store(c->fleet)),
           (long long)s.schema_version);
    printf("organisation  %s\n", s.org);
    printf("CAs           %lld\n", (long long)s.ca_count);
    printf("devices      ");
    int64_t total = 0;
    for (int i = 0; i < CF_DEVICE_STATE_COUNT; i++) {
        total += s.devices[i];
        if (s.devices[i])
            printf(" %s=%lld", cf_device_state_name((cf_device_state)i), (long long)s.devices[i]);
    }
    printf("%s(total %lld)\n", total ? " " : " ", (long long)total);
    printf("certificates  %lld issued, %lld valid\n", (long long)s.certs_total,
           (long long)s.certs_valid);
    printf("audit log     %lld records\n", (long long)s.audit_seq);
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

static int run_issue(cli *c)
{
    const char *csr_path = cli_opt(c, "csr"), *device = cli_opt(c, "device");
    char *csr = NULL, *pem = NULL;
    size_t csr_len = 0, pem_len = 0;
    unsigned char *der = NULL;
    size_t der_len = 0;
    long long days;
    X509 *x = NULL;
    int rc = 1;

    if (!csr_path || !device)
        return cli_usage(c, "--csr FILE and --device ID are required");
    if (c->json && (cli_flag(c, "der") || cli_flag(c, "out")))
        return cli_usage(c, "--json prints the certificate (PEM) within its output: it takes"
                            " neither --der nor --out");
    if (cli_int(c, "days", 1, 36500, 0, &days) < 0)
        return 2;
    if (check_out_path(c, cli_opt(c, "out")) != 0)
        return 1;
    /* Read a little more than the CSR limit, so the parser reports "too large". */
    if (cf_fs_read_file(csr_path, 16 * 1024 * 1024, &csr, &csr_len, &c->err) != CF_OK)
        return cli_fail(c);
    cf_issue_req req = {
        .csr = (const unsigned char *)csr,
        .csr_len = csr_len,
        .device_id = device,
        .days = (int)days,
        .actor = c->actor,
    };
    if (cf_fleet_issue(c->fleet, &req, &x, &c->err) != CF_OK) {
        rc = cli_fail(c);
        goto out;
    }
    if (cf_x509_append_pem(x, &pem, &pem_len, &c->err) != CF_OK) {
        rc = cli_fail(c);
        goto out;
    }
    if (cli_flag(c, "chain") || (c->json && !cli_flag(c, "der"))) {
        X509 *issuing, *root;
        if (cf_fleet_chain(c->fleet, &issuing, &root, &c->err) != CF_OK ||
            (cli_flag(c, "chain") &&
             cf_x509_append_pem(issuing, &pem, &pem_len, &c->err) != CF_OK)) {
            rc = cli_fail(c);
            goto out;
        }
    }
    char serial[CF_SERIAL_HEX_MAX];
    cf_x509_serial_hex(x, serial);
    if (c->json) {
        char nb[CF_TIME_STR_MAX], na[CF_TIME_STR_MAX];
        cli_print_json(json_pack("{s:s, s:s, s:s, s:s, s:s}", "serial", serial, "device", device,
                                 "not_before", cf_time_format(cf_x509_not_before(x) * 1000000, nb),
                                 "not_after", cf_time_format(cf_x509_not_after(x) * 1000000, na),
                                 "pem", pem));
        rc = 0;
        goto out;
    }
    if (cli_flag(c, "der")) {
        if (cf_x509_to_der(x, &der, &der_len, &c->err) != CF_OK) {
            rc = cli_fail(c);
            goto out;
        }
        if (cli_flag(c, "chain")) {
            X509 *issuing, *root;
            unsigned char *d2 = NULL;
            size_t l2 = 0;
            cf_fleet_chain(c->fleet, &issuing, &root, &c->err);
            if (cf_x509_to_der(issuing, &d2, &l2, &c->err) != CF_OK) {
                rc = cli_fail(c);
                goto out;
            }
            unsigned char *both = OPENSSL_realloc(der, der_len + l2);
            if (!both) {
                OPENSSL_free(d2);
                cf_error_set(&c->err, CF_ERR_NOMEM, "out of memory");
                rc = cli_fail(c);
                goto out;
            }
            memcpy(both + der_len, d2, l2);
            der = both;
            der_len += l2;
            OPENSSL_free(d2);
        }
        rc = cli_write_out(c, cli_opt(c, "out"), der, der_len);
    } else {
        rc = cli_write_out(c, cli_opt(c, "out"), pem, pem_len);
    }
out:
    OPENSSL_free(der);
    X509_free(x);
    free(pem);
    free(csr);
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
    {"status", NULL, 0, "show the fleet's state", NULL, run_status, 1, 1, 0},
    {"issue", NULL, 0, "issue a device certificate from a CSR", issue_opts, run_issue, 1, 1, 0},
    {NULL, NULL, 0, NULL, NULL, NULL, 0, 0, 0},
};
