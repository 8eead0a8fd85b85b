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

/* Prints an import's summary (JSON, as cf_api_onboard_summary makes it; taken over) and
 * returns the exit code it means: 1 for an error (c->err holds it), an interrupted import,
 * or a manifest of which no entry verified. */
static int print_summary(cli *c, json_t *sum)
{
    const char *manifest = cli_jstr(sum, "manifest", "");
    long long entries = cli_jint(sum, "entries"), added = cli_jint(sum, "added");
    long long present = cli_jint(sum, "present");
    int failed = !json_is_null(json_object_get(sum, "error")) && json_object_get(sum, "error");
    int interrupted = json_is_true(json_object_get(sum, "interrupted"));
    if (c->json) {
        cli_print_json(json_incref(sum));
    } else {
        printf("onboard %s (import %lld): %lld entries: %lld added, %lld already present,"
               " %lld rejected, %lld conflicts; %.1f s, %.0f entries/s, %lld threads\n",
               manifest, cli_jint(sum, "import"), entries, added, present,
               cli_jint(sum, "rejected"), cli_jint(sum, "conflicts"),
               json_real_value(json_object_get(sum, "seconds")),
               json_real_value(json_object_get(sum, "rate")), cli_jint(sum, "threads"));
        if (json_is_true(json_object_get(sum, "complete")))
            printf("manifest sha256 %s\n", cli_jstr(sum, "sha256", ""));
    }
    int rc = 0;
    if (failed) {
        rc = cli_fail(c);
    } else if (interrupted) {
        fprintf(stderr,
                "certfleet: onboard: interrupted: the %lld entries above are committed; run the"
                " same command again to finish\n",
                entries);
        rc = 1;
    } else if (entries > 0 && added + present == 0) {
        fprintf(stderr, "certfleet: onboard: no entry of %s verified\n", manifest);
        rc = 1;
    }
    json_decref(sum);
    return rc;
}

/* ---- over --server: the manifest is the request body; the server's report comes back ---- */

static void print_remote_problems(cli *c, onboard_ui *ui, json_t *r)
{
    json_t *problems = json_object_get(r, "problems"), *p;
    size_t i;
    json_array_foreach(problems, i, p)
    {
        cf_onboard_problem pr = {0};
        const char *kind = cli_jstr(p, "kind", "");
        for (int k = CF_ONBOARD_PROBLEM_REJECTED; k <= CF_ONBOARD_PROBLEM_DUPLICATE; k++)
            if (strcmp(kind, cf_onboard_problem_name((cf_onboard_problem_kind)k)) == 0)
                pr.kind = (cf_onboard_problem_kind)k;
        pr.index = (size_t)cli_jint(p, "index");
        pr.uid = cli_jstr(p, "uid", "?");
        pr.reason = cli_jstr(p, "reason", "");
        on_problem(ui, &pr);
    }
    /* The server lists the first problems and counts the rest. */
    ui->nproblems = (size_t)cli_jint(r, "problems_total");
}

static int run_onboard_remote(cli *c, const char *report)
{
    static const char *const local_only[] = {"bundle-sig", "claim-codes", "threads", "batch-size"};
    onboard_ui ui = {0};
    const char *manifest = cli_opt(c, "manifest");
    json_t *r = NULL;
    int rc = 0;
    for (size_t i = 0; i < sizeof local_only / sizeof local_only[0]; i++)
        if (cli_opt(c, local_only[i]))
            return cli_usage(c, "--%s: not with --server (the server imports the manifest alone)",
                             local_only[i]);
    json_t *params =
        json_pack("{s:s, s:s}", "manufacturer", cli_opt(c, "manufacturer"), "name", manifest);
    if (cli_opt(c, "batch"))
        json_object_set_new(params, "batch", json_string(cli_opt(c, "batch")));
    if (report && report_open(c, &ui, report) != 0) {
        json_decref(params);
        return 1;
    }
    cf_err err = cli_remote_call(c, cf_api_find("onboard"), params, manifest, &r);
    json_decref(params);
    if (err == CF_OK)
        print_remote_problems(c, &ui, r);
    if (ui.nproblems > SHOWN_PROBLEMS)
        fprintf(stderr, "certfleet: onboard: ... and %zu more problems%s\n",
                ui.nproblems - SHOWN_PROBLEMS, report ? " (see the report)" : "");
    if (report && report_close(c, &ui, report) != 0)
        rc = 1;
    if (err != CF_OK)
        return cli_fail(c);
    json_object_del(r, "problems");
    json_object_del(r, "problems_total");
    const char *error = cli_jstr(r, "error", NULL);
    if (error)
        cf_error_set(&c->err, CF_ERR_INVALID, "%s", error);
    int rc2 = print_summary(c, r);
    return rc ? rc : rc2;
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
    if (c->server)
        return run_onboard_remote(c, cli_opt(c, "report"));
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
    json_t *sum = cf_api_onboard_summary(&s, o.manifest, err != CF_OK ? c->err.msg : NULL);
    int rc2 = print_summary(c, sum);
    if (!rc)
        rc = rc2;
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
     onboard_opts, run_onboard, 1, CLI_OP, 0},
    {NULL, NULL, 0, NULL, NULL, NULL, 0, 0, 0},
};
