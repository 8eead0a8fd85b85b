/* cmd_onboard.c - onboard: import a manufacturer's signed manifest. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/util.h"
#include "fleet/onboard.h"

/* Problems printed on stderr before the rest are only counted (--report has them all). */
#define SHOWN_PROBLEMS 10

typedef struct {
    int tty;
    int shown_line; /* a progress line is on the terminal */
    double last_plain;
    FILE *report; /* --report, written as problems come (a file of 1M rejections
                     must not be held in memory) */
    char report_tmp[4200];
    size_t nproblems;
} onboard_ui;

static volatile sig_atomic_t cancel_flag;

static void on_signal(int sig)
{
    (void)sig;
    cancel_flag = 1;
}

static void fmt_eta(double secs, char *buf, size_t len)
{
    if (secs < 0 || secs > 360000)
        snprintf(buf, len, "--:--");
    else if (secs >= 3600)
        snprintf(buf, len, "%d:%02d:%02d", (int)secs / 3600, (int)secs / 60 % 60, (int)secs % 60);
    else
        snprintf(buf, len, "%d:%02d", (int)secs / 60, (int)secs % 60);
}

static void show_progress(void *arg, const cf_onboard_stats *s)
{
    onboard_ui *ui = arg;
    double rate = s->seconds > 0 ? (double)s->entries / s->seconds : 0;
    double frac = s->bytes_total ? (double)s->bytes_read / (double)s->bytes_total : 0;
    double eta = frac > 0.001 ? s->seconds * (1 - frac) / frac : -1;
    char etas[32];
    fmt_eta(eta, etas, sizeof etas);
    if (ui->tty) {
        char bar[31];
        int fill = (int)(frac * 30);
        for (int i = 0; i < 30; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        fprintf(stderr, "\r[%s] %5.1f%% %llu entries, %llu committed, %.0f/s, ETA %s   ", bar,
                100 * frac, (unsigned long long)s->entries, (unsigned long long)s->committed, rate,
                etas);
        ui->shown_line = 1;
    } else if (s->seconds - ui->last_plain >= 5) {
        ui->last_plain = s->seconds;
        fprintf(stderr, "onboard: %llu entries (%.1f%%), %llu committed, %.0f/s, ETA %s\n",
                (unsigned long long)s->entries, 100 * frac, (unsigned long long)s->committed, rate,
                etas);
    }
}

static void clear_line(onboard_ui *ui)
{
    if (ui->shown_line) {
        fprintf(stderr, "\r%*s\r", 100, "");
        ui->shown_line = 0;
    }
}

static void on_problem(void *arg, const cf_onboard_problem *p)
{
    onboard_ui *ui = arg;
    if (ui->nproblems < SHOWN_PROBLEMS) {
        clear_line(ui);
        fprintf(stderr, "certfleet: onboard: entry %zu (uid %s): %s: %s\n", p->index, p->uid,
                cf_onboard_problem_name(p->kind), p->reason);
    }
    if (ui->report) {
        json_t *o = json_pack("{s:I, s:s, s:s, s:s}", "index", (json_int_t)p->index, "uid", p->uid,
                              "kind", cf_onboard_problem_name(p->kind), "reason", p->reason);
        char *text = json_dumps(o, JSON_PRESERVE_ORDER);
        if (text)
            fprintf(ui->report, "%s\n  %s", ui->nproblems ? "," : "", text);
        free(text);
        json_decref(o);
    }
    ui->nproblems++;
}

static json_t *summary_json(const cf_onboard_stats *s, const char *manifest, const char *error)
{
    return json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:b, s:o, s:f, s:f, s:i, s:o}",
                     "manifest", manifest, "import", (json_int_t)s->import_id, "entries",
                     (json_int_t)s->entries, "added", (json_int_t)s->added, "present",
                     (json_int_t)s->present, "rejected", (json_int_t)s->rejected, "conflicts",
                     (json_int_t)s->conflicts, "complete", s->complete, "interrupted",
                     s->interrupted, "sha256", s->sha256[0] ? json_string(s->sha256) : json_null(),
                     "seconds", s->seconds, "rate",
                     s->seconds > 0 ? (double)s->entries / s->seconds : 0.0, "threads", s->threads,
                     "error", error ? json_string(error) : json_null());
}

/* Starts the report as PATH.tmp, renamed over PATH when complete. */
static int report_open(cli *c, onboard_ui *ui, const char *path)
{
    snprintf(ui->report_tmp, sizeof ui->report_tmp, "%s.tmp", path);
    if (!(ui->report = fopen(ui->report_tmp, "w"))) {
        cf_error_set(&c->err, CF_ERR_IO, "%s: %s", ui->report_tmp, strerror(errno));
        return cli_fail(c);
    }
    fputs("[", ui->report);
    return 0;
}

static int report_close(cli *c, onboard_ui *ui, const char *path)
{
    fputs(ui->nproblems ? "\n]\n" : "]\n", ui->report);
    int bad = ferror(ui->report) | fclose(ui->report);
    ui->report = NULL;
    if (bad || rename(ui->report_tmp, path) != 0) {
        cf_error_set(&c->err, CF_ERR_IO, "%s: cannot write the report", path);
        unlink(ui->report_tmp);
        return cli_fail(c);
    }
    return 0;
}

static int run_onboard(cli *c)
{
    onboard_ui ui = {0};
    cf_onboard_stats s = {0};
    long long threads, batch_size;
    cf_onboard_opts o = {0};
    int rc = 0;

    o.manifest = cli_opt(c, "manifest");
    o.manufacturer = cli_opt(c, "manufacturer");
    if (!o.manifest || !o.manufacturer)
        return cli_usage(c, "--manifest FILE and --manufacturer NAME are required");
    if (cli_int(c, "threads", 1, 256, 0, &threads) != 0 ||
        cli_int(c, "batch-size", 1, 50000, 2000, &batch_size) != 0)
        return 2;
    o.batch = cli_opt(c, "batch");
    o.bundle_sig = cli_opt(c, "bundle-sig");
    o.claim_codes = cli_opt(c, "claim-codes");
    o.threads = (int)threads;
    o.batch_size = (int)batch_size;
    o.actor = c->actor;
    o.progress = show_progress;
    o.problem = on_problem;
    o.arg = &ui;
    o.cancel = &cancel_flag;
    ui.tty = isatty(2);
    const char *report = cli_opt(c, "report");
    if (report && report_open(c, &ui, report) != 0)
        return 1;

    /* The first Ctrl-C ends the import cleanly (what is verified is committed); a second one
     * kills it, which loses nothing committed either. */
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND | SA_RESTART; /* reads go on; the flag stops the reader */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    cf_err err = cf_onboard_import(c->fleet, &o, &s, &c->err);
    clear_line(&ui);
    if (ui.nproblems > SHOWN_PROBLEMS)
        fprintf(stderr, "certfleet: onboard: ... and %zu more problems%s\n",
                ui.nproblems - SHOWN_PROBLEMS, cli_opt(c, "report") ? " (see the report)" : "");
    if (report && report_close(c, &ui, report) != 0)
        rc = 1;
    if (err != CF_OK && !s.import_id)
        return cli_fail(c); /* nothing started: no summary to give */
    double rate = s.seconds > 0 ? (double)s.entries / s.seconds : 0;
    if (c->json) {
        cli_print_json(summary_json(&s, o.manifest, err != CF_OK ? c->err.msg : NULL));
    } else {
        printf("onboard %s (import %lld): %llu entries: %llu added, %llu already present,"
               " %llu rejected, %llu conflicts; %.1f s, %.0f entries/s, %d threads\n",
               o.manifest, (long long)s.import_id, (unsigned long long)s.entries,
               (unsigned long long)s.added, (unsigned long long)s.present,
               (unsigned long long)s.rejected, (unsigned long long)s.conflicts, s.seconds, rate,
               s.threads);
        if (s.complete)
            printf("manifest sha256 %s\n", s.sha256);
    }
    if (err != CF_OK) {
        rc = cli_fail(c);
    } else if (s.interrupted) {
        fprintf(stderr,
                "certfleet: onboard: interrupted: the %llu entries above are committed; run the"
                " same command again to finish\n",
                (unsigned long long)s.entries);
        rc = 1;
    } else if (s.entries > 0 && s.added + s.present == 0) {
        fprintf(stderr, "certfleet: onboard: no entry of %s verified\n", o.manifest);
        rc = 1;
    }
    return rc;
}

static const cli_opt_spec onboard_opts[] = {
    {"manifest", "FILE",
     "the manufacturer's signed manifest (JSON), or a PEM bundle with --bundle-sig"},
    {"manufacturer", "NAME", "the manufacturer it comes from (certfleet manufacturer add)"},
    {"batch", "NAME", "batch of the devices (default: each entry's groupId, else the file name)"},
    {"report", "FILE", "write rejected entries and conflicts as JSON [{index, uid, kind, reason}]"},
    {"bundle-sig", "SIG",
     "FILE is a PEM bundle of birth certificates and SIG its detached signature"},
    {"claim-codes", "CSV", "store a hash of each device's claim code (unique_id,claim_code)"},
    {"threads", "N", "verifying threads (default: one per core)"},
    {"batch-size", "N", "devices per transaction (default 2000)"},
    {NULL, NULL, NULL},
};

const cli_cmd cli_cmds_onboard[] = {
    {"onboard", NULL, 0,
     "import a signed manifest: verify every entry, add the good ones on hold (exit 0 when the"
     " file was read to its end and some entry verified or was already present)",
     onboard_opts, run_onboard, 1, 1, 0},
    {NULL, NULL, 0, NULL, NULL, NULL, 0, 0, 0},
};
