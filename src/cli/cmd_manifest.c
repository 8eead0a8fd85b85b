/* cmd_manifest.c - manifest make: the chip maker's side, for tests, benchmarks and demos. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/util.h"
#include "pki/manifest_make.h"

/* Progress on a terminal: one line, rewritten at most once a second. */
typedef struct {
    int64_t start_us, last_us;
    int shown;
} progress;

static void show_progress(void *arg, uint64_t done, uint64_t total)
{
    progress *p = arg;
    int64_t now = cf_time_now_us();
    if (now - p->last_us < 1000000 && done < total)
        return;
    p->last_us = now;
    double secs = (double)(now - p->start_us) / 1e6;
    double rate = secs > 0 ? (double)done / secs : 0;
    double eta = rate > 0 ? (double)(total - done) / rate : 0;
    fprintf(stderr, "\rmanifest make: %llu/%llu devices (%.1f%%), %.0f/s, ETA %.0f s   ",
            (unsigned long long)done, (unsigned long long)total,
            100.0 * (double)done / (double)total, rate, eta);
    p->shown = 1;
}

/* "2026-01-31T12:00:00Z" or with fractional seconds; ms since the epoch in *ms. */
static int parse_time(const char *s, int64_t *ms)
{
    struct tm tm = {0};
    const char *rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    int frac = 0, digits = 0;
    if (!rest)
        return -1;
    if (*rest == '.')
        for (rest++; *rest >= '0' && *rest <= '9'; rest++, digits++)
            if (digits < 3)
                frac = frac * 10 + (*rest - '0');
    while (digits > 0 && digits < 3) {
        frac *= 10;
        digits++;
    }
    if (strcmp(rest, "Z") != 0)
        return -1;
    *ms = (int64_t)timegm(&tm) * 1000 + frac;
    return 0;
}

static int time_opt(cli *c, const char *name, int64_t *ms)
{
    const char *v = cli_opt(c, name);
    *ms = 0;
    if (v && parse_time(v, ms) != 0) {
        cli_usage(c, "--%s %s: expected a UTC time like 2026-01-31T12:00:00Z", name, v);
        return -1;
    }
    return 0;
}

static int run_manifest_make(cli *c)
{
    cf_manifest_make_opts o = {0};
    cf_manifest_make_stats st = {0};
    long long devices, version, signer_days, device_days, threads;
    int64_t now_ms, prov_ms;
    progress prog = {0};

    o.out_dir = cli_opt(c, "out");
    if (!cli_opt(c, "devices") || !o.out_dir)
        return cli_usage(c, "--devices N and --out DIR are required");
    if (cli_int(c, "devices", 1, 100000000, 0, &devices) != 0 ||
        cli_int(c, "version", 1, 2, 1, &version) != 0 ||
        cli_int(c, "signer-days", 1, 36500, 1095, &signer_days) != 0 ||
        cli_int(c, "device-days", 1, 36500, 28 * 365, &device_days) != 0 ||
        cli_int(c, "threads", 0, 64, 0, &threads) != 0 || time_opt(c, "time", &now_ms) != 0 ||
        time_opt(c, "provisioned-at", &prov_ms) != 0)
        return 2;
    o.devices = (uint64_t)devices;
    o.version = (int)version;
    o.signer_days = (int)signer_days;
    o.device_days = (int)device_days;
    o.threads = (int)threads;
    o.now = now_ms / 1000;
    o.provisioned_at_ms = prov_ms;
    o.manufacturer = cli_opt(c, "manufacturer");
    o.model = cli_opt(c, "model");
    o.part_number = cli_opt(c, "part-number");
    o.key_files = cli_flag(c, "key-files");
    if (isatty(STDERR_FILENO)) {
        prog.start_us = prog.last_us = cf_time_now_us();
        o.progress = show_progress;
        o.progress_arg = &prog;
    }

    cf_err rc = cf_manifest_make(&o, &st, &c->err);
    if (prog.shown)
        fputc('\n', stderr);
    if (rc != CF_OK)
        return cli_fail(c);
    double rate = st.seconds > 0 ? (double)st.devices / st.seconds : 0;
    if (c->json)
        cli_print_json(json_pack("{s:s, s:I, s:f, s:f, s:i}", "out", o.out_dir, "devices",
                                 (json_int_t)st.devices, "seconds", st.seconds,
                                 "devices_per_second", rate, "threads", st.threads));
    else
        printf("wrote %llu devices to %s in %.1f s (%.0f devices/s, %d threads)\n",
               (unsigned long long)st.devices, o.out_dir, st.seconds, rate, st.threads);
    return 0;
}

static const cli_opt_spec make_opts[] = {
    {"devices", "N", "how many devices (secure elements) to make"},
    {"out", "DIR", "directory to write into (must not hold a manifest yet)"},
    {"manufacturer", "NAME", "the chip maker's organization name"},
    {"model", "MODEL", "the payload's model"},
    {"part-number", "PART", "the payload's partNumber (default MODEL-TNG)"},
    {"version", "N", "payload version 1 (default) or 2 (no publicKeySet)"},
    {"signer-days", "D", "validity of the manifest signer (default 1095)"},
    {"device-days", "D", "validity of the birth certificates (default 28 years)"},
    {"time", "TIME", "start certificates at TIME (UTC, 2026-01-31T12:00:00Z) instead of now"},
    {"provisioned-at", "TIME", "provisioningTimestamp of every entry (default: when made)"},
    {"threads", "N", "worker threads (default: one per core)"},
    {"key-files", NULL,
     "also write each device key to DIR/keys/UNIQUEID.key and its birth certificate chain to"
     " DIR/certs/UNIQUEID.pem (for curl --cert/--key)"},
    {NULL, NULL, NULL},
};

const cli_cmd cli_cmds_manifest[] = {
    {"manifest make", NULL, 0,
     "play the chip maker: signed manifest, birth certificates, device keys, claim codes",
     make_opts, run_manifest_make, 1, 0, 0},
    {NULL, NULL, 0, NULL, NULL, NULL, 0, 0, 0},
};
