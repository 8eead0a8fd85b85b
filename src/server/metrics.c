/* metrics.c - request counters and their Prometheus text exposition (format 0.0.4).
 *
 * Labels come from fixed sets (route paths, a list of statuses, causes), never from the
 * request, so a client cannot grow the series. */
#include <event2/buffer.h>
#include <stddef.h>
#include <stdio.h>

#include "server/srv.h"

/* The statuses counted one by one; anything else is counted as "other". */
static const int statuses[SRV_NSTATUS - 1] = {200, 202, 400, 401, 403, 404, 405, 408,
                                              409, 413, 415, 429, 500, 501, 503};

/* Upper bounds of the latency buckets in microseconds; the last bucket is +Inf. */
static const int64_t bucket_us[SRV_NBUCKETS - 1] = {500,   1000,  2500,   5000,   10000,
                                                    25000, 50000, 100000, 250000, 1000000};

static const char *const cause_names[SRV_CAUSE_FLEET] = {
    [SRV_CAUSE_NONE] = "none",
    [SRV_CAUSE_NO_ROUTE] = "no_route",
    [SRV_CAUSE_METHOD] = "method_not_allowed",
    [SRV_CAUSE_MEDIA_TYPE] = "unsupported_media_type",
    [SRV_CAUSE_BAD_REQUEST] = "bad_request",
    [SRV_CAUSE_NOT_IMPLEMENTED] = "not_implemented",
    [SRV_CAUSE_UNAUTHENTICATED] = "unauthenticated",
};

static const char *const est_ops[SRV_EST_OPS] = {"simpleenroll", "simplereenroll", "serverkeygen"};
static const char *const est_results[SRV_EST_RESULTS] = {"issued", "pending", "refused", "error"};

/* Only the owning worker writes: a plain load and store, no read-modify-write lock. */
static void bump(atomic_uint_fast64_t *c, uint64_t by)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + by,
                          memory_order_relaxed);
}

static uint64_t get(const atomic_uint_fast64_t *c)
{
    return atomic_load_explicit((atomic_uint_fast64_t *)c, memory_order_relaxed);
}

void srv_metrics_count(srv_metrics *m, int route, int status, int64_t us, srv_cause cause)
{
    int s = SRV_NSTATUS - 1, b = SRV_NBUCKETS - 1;
    for (int i = 0; i < SRV_NSTATUS - 1; i++)
        if (statuses[i] == status)
            s = i;
    for (int i = SRV_NBUCKETS - 2; i >= 0 && us <= bucket_us[i]; i--)
        b = i;
    if (route < 0 || route > SRV_MAX_ROUTES)
        route = SRV_MAX_ROUTES;
    bump(&m->requests[route][s], 1);
    bump(&m->latency[b], 1);
    bump(&m->latency_sum_us, us > 0 ? (uint64_t)us : 0);
    if (cause != SRV_CAUSE_NONE)
        bump(&m->errors[cause], 1);
}

void srv_metrics_enroll(srv_metrics *m, srv_est_op op, srv_est_result result)
{
    bump(&m->est[op][result], 1);
}

const char *srv_cause_name(srv_cause c)
{
    return c < SRV_CAUSE_FLEET ? cause_names[c] : cf_err_name((cf_err)(c - SRV_CAUSE_FLEET));
}

static uint64_t sum(const srv *s, size_t offset)
{
    uint64_t total = 0;
    for (int w = 0; w < s->nworkers; w++)
        total += get((const atomic_uint_fast64_t *)((const char *)&s->workers[w].metrics + offset));
    return total;
}

#define SUM(s, field) sum(s, offsetof(srv_metrics, field))

void srv_metrics_render(const srv *s, struct evbuffer *out)
{
    evbuffer_add_printf(out, "# HELP certfleet_http_requests_total HTTP requests answered, by "
                             "route and status.\n# TYPE certfleet_http_requests_total counter\n");
    for (int r = 0; r <= srv_nroutes; r++) {
        for (int st = 0; st < SRV_NSTATUS; st++) {
            uint64_t n = SUM(s, requests[r][st]);
            char code[8];
            if (!n)
                continue;
            snprintf(code, sizeof code, "%d", statuses[st]);
            evbuffer_add_printf(out,
                                "certfleet_http_requests_total{path=\"%s\",status=\"%s\"} %llu\n",
                                r < srv_nroutes ? srv_routes[r].path : "other",
                                st < SRV_NSTATUS - 1 ? code : "other", (unsigned long long)n);
        }
    }
    evbuffer_add_printf(out, "# HELP certfleet_http_request_duration_seconds Time from a "
                             "request's arrival at its handler to its reply.\n"
                             "# TYPE certfleet_http_request_duration_seconds histogram\n");
    uint64_t cumulative = 0;
    for (int b = 0; b < SRV_NBUCKETS; b++) {
        cumulative += SUM(s, latency[b]);
        if (b < SRV_NBUCKETS - 1)
            evbuffer_add_printf(out,
                                "certfleet_http_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
                                (double)bucket_us[b] / 1e6, (unsigned long long)cumulative);
        else
            evbuffer_add_printf(
                out, "certfleet_http_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
                (unsigned long long)cumulative);
    }
    evbuffer_add_printf(out,
                        "certfleet_http_request_duration_seconds_sum %.6f\n"
                        "certfleet_http_request_duration_seconds_count %llu\n",
                        (double)SUM(s, latency_sum_us) / 1e6, (unsigned long long)cumulative);
    evbuffer_add_printf(out, "# HELP certfleet_http_errors_total Requests that failed, by "
                             "cause.\n# TYPE certfleet_http_errors_total counter\n");
    for (int c = 1; c < SRV_CAUSE_COUNT; c++)
        if (c != SRV_CAUSE_FLEET + CF_OK)
            evbuffer_add_printf(out, "certfleet_http_errors_total{cause=\"%s\"} %llu\n",
                                srv_cause_name((srv_cause)c),
                                (unsigned long long)SUM(s, errors[c]));
    evbuffer_add_printf(out, "# HELP certfleet_est_enrollments_total EST enrollments, by "
                             "operation and result.\n"
                             "# TYPE certfleet_est_enrollments_total counter\n");
    for (int op = 0; op < SRV_EST_OPS; op++)
        for (int res = 0; res < SRV_EST_RESULTS; res++)
            evbuffer_add_printf(
                out, "certfleet_est_enrollments_total{op=\"%s\",result=\"%s\"} %llu\n", est_ops[op],
                est_results[res], (unsigned long long)SUM(s, est[op][res]));
    evbuffer_add_printf(out,
                        "# HELP certfleet_tls_connections_open TLS connections open.\n"
                        "# TYPE certfleet_tls_connections_open gauge\n"
                        "certfleet_tls_connections_open %llu\n"
                        "# HELP certfleet_tls_connections_total TLS connections accepted.\n"
                        "# TYPE certfleet_tls_connections_total counter\n"
                        "certfleet_tls_connections_total %llu\n",
                        (unsigned long long)SUM(s, tls_conns_open),
                        (unsigned long long)SUM(s, tls_conns_total));
}
