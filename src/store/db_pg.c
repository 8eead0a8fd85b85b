/* db_pg.c - the PostgreSQL driver (libpq): named prepared statements, binary results.
 *
 * Cached statements are prepared once per connection under a name; others run through the
 * unnamed statement (PQexecParams), so nothing needs deallocating, not even inside a
 * transaction the server has already aborted. Results come back in binary: integers are
 * decoded by their column type, text as is, bytea as raw bytes.
 *
 * Round trips are saved with libpq's pipeline mode: BEGIN is sent with the transaction's
 * first statement, and statements run with cf_db_run_later are sent at once and answered
 * in the round trip of the next statement that returns rows, or of the COMMIT. */
#include <libpq-fe.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/db.h"

#define PG_CACHE_MAX 128
#define PG_MAX_PARAMS 65535 /* the protocol's limit */
/* Statements sent ahead before their results are read: their results (a few dozen bytes
 * each) must fit the socket buffers, or the server would wait for us to read while we
 * wait for it to read. */
#define PG_PIPE_MAX 64
#define PG_TRAIL_MAX 4 /* statements prefetched in one round trip */

struct cf_stmt {
    struct pg_store *owner;
    char name[16];
    int cached;
    const char *sql;  /* cached: the statement as written (a literal) */
    unsigned session; /* cached: the session it was prepared on (pg_store.session) */
    char *text;       /* uncached: the renumbered SQL, run with PQexecParams; NULL when cached */
    int nparams;
    /* nparams each, in the same allocation as the statement */
    const char **values;
    int *lengths;
    int *formats;
    char (*ints)[24]; /* decimal text of bound integers */
    PGresult *res;
    int row;  /* index of the current row; -1 before the first step */
    int kept; /* res came with another statement's round trip (cf_db_prefetch) */
};

typedef struct pg_store {
    cf_store base;
    PGconn *conn;
    struct {
        const char *sql;
        struct cf_stmt *stmt;
    } cache[PG_CACHE_MAX];
    size_t ncache;
    unsigned next_name;
    int begin_due; /* BEGIN was asked for and waits for the transaction's first statement */
    int piped;     /* in pipeline mode */
    /* Queries sent in pipeline mode whose results are not read yet, in order: for each, the
     * message for its unique violation (NULL: the server's). */
    char *pending[PG_PIPE_MAX + 1];
    size_t npending;
    /* cf_db_prefetch: statements to send after the next one stepped; those whose results
     * came and wait for their step. */
    struct cf_stmt *trail[PG_TRAIL_MAX], *kept[PG_TRAIL_MAX];
    size_t ntrail, nkept;
    /* Reconnections: the session count (statements prepared on an earlier one are prepared
     * again when next used), and the pause after an attempt that failed. */
    unsigned session;
    int64_t retry_after_ms; /* after a failed attempt: no other before this (monotonic) */
} pg_store;

/* "?" -> "$n" outside quoted strings. Returns a new string and the number of parameters. */
static char *renumber(const char *sql, int *nparams)
{
    size_t n = strlen(sql);
    char *out = malloc(n * 4 + 1);
    if (!out)
        return NULL;
    char *o = out;
    int count = 0, quoted = 0;
    for (const char *p = sql; *p; p++) {
        if (*p == '\'')
            quoted = !quoted;
        if (*p == '?' && !quoted)
            o += sprintf(o, "$%d", ++count);
        else
            *o++ = *p;
    }
    *o = '\0';
    *nparams = count;
    return out;
}

/* SQLSTATEs that mean the server or the connection went away: class 08 (connection
 * exception) and 57P01-57P03 (admin shutdown, crash shutdown, cannot connect now). */
static int state_is_unavailable(const char *state)
{
    return state && (strncmp(state, "08", 2) == 0 || strcmp(state, "57P01") == 0 ||
                     strcmp(state, "57P02") == 0 || strcmp(state, "57P03") == 0);
}

static cf_err pg_fail(pg_store *ps, const PGresult *res, const char *what, cf_error *err)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorMessage(res) : NULL;
    if (!msg || !*msg)
        msg = PQerrorMessage(ps->conn);
    char clean[300];
    snprintf(clean, sizeof clean, "%s", msg && *msg ? msg : "unknown error");
    clean[strcspn(clean, "\n")] = '\0';
    if (PQstatus(ps->conn) != CONNECTION_OK || state_is_unavailable(state))
        return cf_error_set(err, CF_ERR_UNAVAILABLE, "%s: lost connection to %s: %s", what,
                            ps->base.desc, clean);
    /* The victim of a deadlock, or of a serialization failure: nothing of the transaction was
     * kept, and the same request succeeds when tried again (503 for a server's client). */
    if (state && (strcmp(state, "40P01") == 0 || strcmp(state, "40001") == 0))
        return cf_error_set(err, CF_ERR_UNAVAILABLE, "%s: %s; try again", what, clean);
    if (state && strcmp(state, "23505") == 0)
        return cf_error_set(err, CF_ERR_EXISTS, "%s: %s", what, clean);
    return cf_error_set(err, CF_ERR_STORE, "%s: %s", what, clean);
}

/* Whether sql's last statement is COMMIT (PQexec answers for the last statement). */
static int ends_with_commit(const char *sql)
{
    size_t n = strlen(sql);
    return n >= 6 && strcmp(sql + n - 6, "COMMIT") == 0 && (n == 6 || sql[n - 7] == ' ');
}

static int result_ok(const PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    return res && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK);
}

/* PostgreSQL answers COMMIT of a transaction it has aborted with ROLLBACK, not an error: the
 * caller must not believe its changes were kept. */
static cf_err commit_kept(pg_store *ps, const PGresult *res, cf_error *err)
{
    if (strcmp(PQcmdStatus((PGresult *)res), "ROLLBACK") != 0)
        return CF_OK;
    return cf_error_set(err, CF_ERR_STORE,
                        "store: transaction was rolled back by %s after an earlier error",
                        ps->base.desc);
}

static cf_err pipe_close(pg_store *ps, int last_sent, size_t ntrail, PGresult **last,
                         cf_error *err);
static cf_err pipe_commit(pg_store *ps, cf_error *err);
static int reconnect(pg_store *ps);

/* At the end of a transaction: prefetched results no one stepped are dropped, and
 * statements to prefetch are forgotten. */
static void forget_prefetched(pg_store *ps)
{
    for (size_t i = 0; i < ps->nkept; i++) {
        struct cf_stmt *t = ps->kept[i];
        if (t->kept) {
            PQclear(t->res);
            t->res = NULL;
            t->kept = 0;
        }
    }
    ps->nkept = 0;
    ps->ntrail = 0;
}

static cf_err pg_exec(cf_store *st, const char *sql, cf_error *err)
{
    pg_store *ps = (pg_store *)st;
    char *joined = NULL;
    if (strcmp(sql, "COMMIT") == 0 || strcmp(sql, "ROLLBACK") == 0 || ends_with_commit(sql))
        forget_prefetched(ps);
    /* A connection known to be lost fails BEGIN itself, as it would without the wait. */
    if (strcmp(sql, "BEGIN") == 0 && reconnect(ps)) {
        ps->begin_due = 1;
        return CF_OK;
    }
    if (ps->piped) {
        /* Statements were sent ahead: COMMIT goes with them; anything else waits for them
         * (a ROLLBACK whatever they came to, as an aborted pipeline runs nothing more). */
        if (strcmp(sql, "COMMIT") == 0)
            return pipe_commit(ps, err);
        cf_error ignored;
        cf_err rc = pipe_close(ps, 0, 0, NULL, strcmp(sql, "ROLLBACK") == 0 ? &ignored : err);
        if (rc != CF_OK && strcmp(sql, "ROLLBACK") != 0)
            return rc;
    }
    if (ps->begin_due) {
        ps->begin_due = 0;
        if (strcmp(sql, "COMMIT") == 0 || strcmp(sql, "ROLLBACK") == 0)
            return CF_OK; /* a transaction that ran nothing */
        /* One simple query of several statements: BEGIN opens a block that outlives it. */
        size_t n = strlen(sql) + sizeof "BEGIN; ";
        if (!(joined = malloc(n)))
            return cf_error_set(err, CF_ERR_NOMEM, "store: out of memory");
        snprintf(joined, n, "BEGIN; %s", sql);
        sql = joined;
    }
    PGresult *res = PQexec(ps->conn, sql);
    cf_err rc = CF_OK;
    if (!result_ok(res))
        rc = pg_fail(ps, res, "store", err);
    else if (ends_with_commit(sql))
        rc = commit_kept(ps, res, err);
    PQclear(res);
    free(joined);
    return rc;
}

#define SESSION_SETUP "SET client_min_messages = warning; SET TIME ZONE 'UTC'"

/* Whether the connection is at a point where it may be made again: no transaction has sent
 * anything yet. */
static int at_boundary(const pg_store *ps)
{
    return !ps->piped && (!ps->base.in_txn || ps->begin_due);
}

/* Makes a lost connection again (PQreset) at a boundary; after an attempt that failed, not
 * again for a second, since an attempt may wait up to the connect timeout. Returns whether
 * the connection is good. A server that restarted (an upgrade, a failover) is found again
 * without restarting certfleet. */
static int reconnect(pg_store *ps)
{
    if (PQstatus(ps->conn) == CONNECTION_OK)
        return 1;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (!at_boundary(ps) || now_ms < ps->retry_after_ms)
        return 0;
    PQreset(ps->conn);
    if (PQstatus(ps->conn) != CONNECTION_OK) {
        ps->retry_after_ms = now_ms + 1000;
        return 0;
    }
    ps->retry_after_ms = 0;
    ps->session++; /* at a boundary: nothing was piped */
    PGresult *res = PQexec(ps->conn, SESSION_SETUP);
    int ok = result_ok(res);
    PQclear(res);
    return ok;
}

/* Prepares the cached statement s under its name on this session (again, after a
 * reconnection). */
static cf_err prepare_named(pg_store *ps, struct cf_stmt *s, cf_error *err)
{
    int nparams;
    char *text = renumber(s->sql, &nparams);
    if (!text)
        return cf_error_set(err, CF_ERR_NOMEM, "store: out of memory");
    /* PQprepare waits for its answer, which pipeline mode does not allow: what was sent
     * ahead is answered first. */
    cf_err rc = ps->piped ? pipe_close(ps, 0, 0, NULL, err) : CF_OK;
    if (rc == CF_OK) {
        PGresult *res = PQprepare(ps->conn, s->name, text, nparams, NULL);
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            rc = pg_fail(ps, res, "store: prepare", err);
        else
            s->session = ps->session;
        PQclear(res);
    }
    free(text);
    return rc;
}

/* Prepares the cached statement s again when it was prepared on an earlier session. */
static cf_err ensure_prepared(pg_store *ps, struct cf_stmt *s, cf_error *err)
{
    return s->cached && s->session != ps->session ? prepare_named(ps, s, err) : CF_OK;
}

/* prepare_named, once more on a new connection when the old one is found lost at a
 * boundary. */
static cf_err prepare_again(pg_store *ps, struct cf_stmt *s, cf_error *err)
{
    int first = at_boundary(ps);
    cf_err rc = prepare_named(ps, s, err);
    if (rc == CF_ERR_UNAVAILABLE && first && PQstatus(ps->conn) != CONNECTION_OK && reconnect(ps))
        rc = prepare_named(ps, s, err);
    return rc;
}

static cf_err pg_prepare(cf_store *st, const char *sql, int cached, cf_stmt **out, cf_error *err)
{
    pg_store *ps = (pg_store *)st;
    reconnect(ps);
    if (cached) {
        for (size_t i = 0; i < ps->ncache; i++) {
            struct cf_stmt *s = ps->cache[i].stmt;
            if (ps->cache[i].sql != sql)
                continue;
            cf_err rc = s->session == ps->session ? CF_OK : prepare_again(ps, s, err);
            *out = s;
            return rc;
        }
    }
    int nparams = 0;
    char *text = renumber(sql, &nparams);
    if (!text)
        return cf_error_set(err, CF_ERR_NOMEM, "store: out of memory");
    if (nparams > PG_MAX_PARAMS) {
        free(text);
        return cf_error_set(err, CF_ERR_INTERNAL, "store: too many parameters");
    }
    size_t n = (size_t)nparams;
    struct cf_stmt *s =
        calloc(1, sizeof *s + n * (sizeof *s->values + 2 * sizeof(int) + sizeof *s->ints));
    if (!s) {
        free(text);
        return cf_error_set(err, CF_ERR_NOMEM, "store: out of memory");
    }
    s->values = (const char **)(s + 1);
    s->ints = (char(*)[24])(s->values + n);
    s->lengths = (int *)(s->ints + n);
    s->formats = s->lengths + n;
    s->owner = ps;
    s->nparams = nparams;
    s->row = -1;
    if (!cached || ps->ncache >= PG_CACHE_MAX) {
        s->text = text; /* parsed with its first step */
        *out = s;
        return CF_OK;
    }
    free(text);
    snprintf(s->name, sizeof s->name, "cf%u", ps->next_name++);
    s->sql = sql;
    s->cached = 1;
    cf_err rc = prepare_again(ps, s, err);
    if (rc != CF_OK) {
        free(s);
        return rc;
    }
    ps->cache[ps->ncache].sql = sql;
    ps->cache[ps->ncache].stmt = s;
    ps->ncache++;
    *out = s;
    return CF_OK;
}

static void set_param(cf_stmt *s, int idx, const char *v, int len, int fmt)
{
    if (idx < 1 || idx > s->nparams)
        return;
    s->values[idx - 1] = v;
    s->lengths[idx - 1] = len;
    s->formats[idx - 1] = fmt;
}

static void pgs_bind_int64(cf_stmt *s, int idx, int64_t v)
{
    if (idx < 1 || idx > s->nparams)
        return;
    snprintf(s->ints[idx - 1], sizeof s->ints[0], "%lld", (long long)v);
    set_param(s, idx, s->ints[idx - 1], 0, 0);
}

static void pgs_bind_text(cf_stmt *s, int idx, const char *v)
{
    set_param(s, idx, v, 0, 0);
}

static void pgs_bind_blob(cf_stmt *s, int idx, const void *v, size_t len)
{
    set_param(s, idx, v ? v : "", (int)len, 1);
}

static void pgs_bind_null(cf_stmt *s, int idx)
{
    set_param(s, idx, NULL, 0, 0);
}

static int send_stmt(cf_stmt *s)
{
    PGconn *c = s->owner->conn;
    if (s->text)
        return PQsendQueryParams(c, s->text, s->nparams, NULL, s->values, s->lengths, s->formats,
                                 1);
    return PQsendQueryPrepared(c, s->name, s->nparams, s->values, s->lengths, s->formats, 1);
}

/* Enters pipeline mode and sends the BEGIN that is due. 0 on failure (PQerrorMessage). */
static int pipe_open(pg_store *ps)
{
    if (!ps->piped) {
        if (!PQenterPipelineMode(ps->conn))
            return 0;
        ps->piped = 1;
    }
    if (ps->begin_due) {
        ps->begin_due = 0;
        if (!PQsendQueryParams(ps->conn, "BEGIN", 0, NULL, NULL, NULL, NULL, 0))
            return 0;
        ps->pending[ps->npending++] = NULL;
    }
    return 1;
}

/* The first result of the query whose results come next, the rest of them read and
 * dropped; NULL when nothing came. */
static PGresult *pipe_result(PGconn *c)
{
    PGresult *first = NULL, *r;
    while ((r = PQgetResult(c))) {
        if (!first)
            first = r;
        else
            PQclear(r);
    }
    return first;
}

/* Ends the pipeline: marks a sync point, reads the pending queries' results; then, when
 * last_sent, the result of the query sent after them into *last (NULL when nothing came);
 * then those of the first ntrail prefetched statements, sent after it, which keep them;
 * and leaves pipeline mode. Returns the first pending query's failure (the queries after it
 * are not run), or a prefetched statement's own. */
static cf_err pipe_close(pg_store *ps, int last_sent, size_t ntrail, PGresult **last, cf_error *err)
{
    PGconn *c = ps->conn;
    cf_err rc = CF_OK;
    int synced = PQpipelineSync(c);
    if (!synced)
        rc = pg_fail(ps, NULL, "store", err);
    for (size_t i = 0; i < ps->npending; i++) {
        PGresult *res = synced ? pipe_result(c) : NULL;
        if (rc == CF_OK && !result_ok(res)) {
            const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
            if (ps->pending[i] && state && strcmp(state, "23505") == 0)
                rc = cf_error_set(err, CF_ERR_EXISTS, "%s", ps->pending[i]);
            else
                rc = pg_fail(ps, res, "store", err);
        }
        PQclear(res);
        free(ps->pending[i]);
    }
    ps->npending = 0;
    if (last_sent) {
        PGresult *res = synced ? pipe_result(c) : NULL;
        if (last)
            *last = res;
        else
            PQclear(res);
    }
    for (size_t i = 0; i < ntrail; i++) {
        struct cf_stmt *t = ps->trail[i];
        PGresult *res = synced ? pipe_result(c) : NULL;
        if (result_ok(res)) {
            t->res = res;
            t->row = -1;
            t->kept = 1;
            ps->kept[ps->nkept++] = t;
            continue;
        }
        /* Not run because the statement before it failed: that failure is the one to tell. */
        if (rc == CF_OK && PQresultStatus(res) != PGRES_PIPELINE_ABORTED)
            rc = pg_fail(ps, res, "store", err);
        PQclear(res);
    }
    ps->ntrail = 0;
    if (synced)
        PQclear(PQgetResult(c)); /* the sync point's */
    PQexitPipelineMode(c);
    ps->piped = 0;
    return rc;
}

/* pipe_close once the last query was sent, or could not be (sent 0): that failure, taken
 * from libpq before closing replaces its message, is the one told unless a pending query
 * failed first. */
static cf_err pipe_end(pg_store *ps, int sent, size_t ntrail, PGresult **last, cf_error *err)
{
    cf_error lost = {0};
    if (!sent)
        pg_fail(ps, NULL, "store", &lost);
    cf_err rc = pipe_close(ps, sent, ntrail, last, err);
    if (rc == CF_OK && !sent)
        rc = cf_error_set(err, lost.code, "%s", lost.msg);
    return rc;
}

/* Sends s after what is pending (the BEGIN that is due included) and reads all their
 * results: s's goes to s->res. A pending failure is returned as such. */
static cf_err pipe_step(cf_stmt *s, cf_error *err)
{
    pg_store *ps = s->owner;
    int sent = pipe_open(ps) && send_stmt(s);
    size_t ntrail = 0;
    while (sent && ntrail < ps->ntrail && send_stmt(ps->trail[ntrail]))
        ntrail++;
    return pipe_end(ps, sent, ntrail, &s->res, err);
}

/* COMMIT sent after what is pending, all read in one round trip. */
static cf_err pipe_commit(pg_store *ps, cf_error *err)
{
    PGresult *res = NULL;
    int sent = PQsendQueryParams(ps->conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0);
    cf_err rc = pipe_end(ps, sent, 0, &res, err);
    if (rc == CF_OK && !result_ok(res))
        rc = pg_fail(ps, res, "store", err);
    else if (rc == CF_OK)
        rc = commit_kept(ps, res, err);
    PQclear(res);
    return rc;
}

static void pgs_done(cf_stmt *s);

/* cf_db_run_later: s goes out now, its result is read with the next statement's. */
static cf_err pgs_run_later(cf_stmt *s, const char *exists, cf_error *err)
{
    pg_store *ps = s->owner;
    cf_err rc = ensure_prepared(ps, s, err);
    if (rc != CF_OK) {
        pgs_done(s);
        return rc;
    }
    char *msg = exists ? strdup(exists) : NULL;
    if ((exists && !msg) || !pipe_open(ps) || !send_stmt(s)) {
        rc = msg || !exists ? pg_fail(ps, NULL, "store", err)
                            : cf_error_set(err, CF_ERR_NOMEM, "store: out of memory");
        free(msg);
        cf_error ignored;
        pipe_close(ps, 0, 0, NULL, &ignored);
    } else {
        ps->pending[ps->npending++] = msg;
        if (ps->npending >= PG_PIPE_MAX)
            rc = pipe_close(ps, 0, 0, NULL, err);
    }
    pgs_done(s);
    return rc;
}

static int pgs_prefetch(cf_stmt *s)
{
    pg_store *ps = s->owner;
    for (size_t i = 0; i < ps->ntrail; i++)
        if (ps->trail[i] == s)
            return 1;
    if (s->res || ps->ntrail + ps->nkept >= PG_TRAIL_MAX)
        return 0; /* it runs when stepped, as without */
    ps->trail[ps->ntrail++] = s;
    return 1;
}

/* Runs s, and what was sent ahead of it, into s->res. */
static cf_err step_exec(cf_stmt *s, cf_error *err)
{
    pg_store *ps = s->owner;
    cf_err rc = ensure_prepared(ps, s, err);
    if (rc != CF_OK)
        return rc;
    if (ps->begin_due || ps->piped || ps->ntrail)
        rc = pipe_step(s, err);
    else if (s->text)
        s->res =
            PQexecParams(ps->conn, s->text, s->nparams, NULL, s->values, s->lengths, s->formats, 1);
    else
        s->res =
            PQexecPrepared(ps->conn, s->name, s->nparams, s->values, s->lengths, s->formats, 1);
    if (rc == CF_OK && !result_ok(s->res))
        rc = pg_fail(ps, s->res, "store", err);
    if (rc != CF_OK) {
        PQclear(s->res);
        s->res = NULL;
    }
    return rc;
}

static cf_err pgs_step(cf_stmt *s, int *row, cf_error *err)
{
    *row = 0;
    if (!s->res) {
        pg_store *ps = s->owner;
        for (size_t i = 0; i < ps->ntrail; i++) /* stepped before it could ride along */
            if (ps->trail[i] == s)
                ps->trail[i] = ps->trail[--ps->ntrail];
        int first = at_boundary(ps), begin = ps->begin_due;
        cf_err rc = step_exec(s, err);
        /* The connection was found lost by the first statement of a transaction, or by one
         * outside any: nothing of it was done, so it runs again on a new connection. */
        if (rc == CF_ERR_UNAVAILABLE && first && PQstatus(ps->conn) != CONNECTION_OK) {
            ps->begin_due = begin;
            if (reconnect(ps))
                rc = step_exec(s, err);
        }
        if (rc != CF_OK)
            return rc;
        s->row = -1;
    }
    s->row++;
    *row = s->row < PQntuples(s->res);
    return CF_OK;
}

static int pgs_col_null(cf_stmt *s, int col)
{
    return PQgetisnull(s->res, s->row, col);
}

#define PG_OID_BOOL 16
#define PG_OID_INT8 20
#define PG_OID_INT2 21
#define PG_OID_INT4 23
#define PG_OID_NUMERIC 1700

static uint64_t be_uint(const unsigned char *v, int len)
{
    uint64_t x = 0;
    for (int i = 0; i < len; i++)
        x = x << 8 | v[i];
    return x;
}

/* NUMERIC in binary (what SUM(bigint) returns): int16 ndigits, weight, sign, dscale, then
 * ndigits base-10000 digits, the first worth 10000^weight. The fraction is dropped; a value
 * beyond 64 bits saturates, NaN reads as 0. */
static int64_t numeric_to_int64(const unsigned char *v, int len)
{
    if (len < 8)
        return 0;
    int ndigits = (int16_t)be_uint(v, 2), weight = (int16_t)be_uint(v + 2, 2);
    unsigned sign = (unsigned)be_uint(v + 4, 2);
    if (ndigits < 0 || len < 8 + 2 * ndigits || sign == 0xC000)
        return 0;
    int neg = sign == 0x4000;
    int64_t x = 0;
    for (int i = 0; i <= weight; i++) {
        int64_t digit = i < ndigits ? (int64_t)be_uint(v + 8 + 2 * i, 2) : 0;
        /* Accumulate with the sign, so INT64_MIN itself still fits. */
        if (__builtin_mul_overflow(x, 10000, &x) ||
            __builtin_add_overflow(x, neg ? -digit : digit, &x))
            return neg ? INT64_MIN : INT64_MAX;
    }
    return x;
}

static int64_t pgs_col_int64(cf_stmt *s, int col)
{
    if (PQgetisnull(s->res, s->row, col))
        return 0;
    const unsigned char *v = (const unsigned char *)PQgetvalue(s->res, s->row, col);
    int len = PQgetlength(s->res, s->row, col);
    switch (PQftype(s->res, col)) {
    case PG_OID_INT8:
        return len == 8 ? (int64_t)be_uint(v, 8) : 0;
    case PG_OID_INT4:
        return len == 4 ? (int32_t)(uint32_t)be_uint(v, 4) : 0;
    case PG_OID_INT2:
        return len == 2 ? (int16_t)(uint16_t)be_uint(v, 2) : 0;
    case PG_OID_BOOL:
        return len == 1 && v[0];
    case PG_OID_NUMERIC:
        return numeric_to_int64(v, len);
    default:
        /* Text and the like, as SQLite would convert it. */
        return strtoll((const char *)v, NULL, 10);
    }
}

static const char *pgs_col_text(cf_stmt *s, int col)
{
    if (PQgetisnull(s->res, s->row, col))
        return "";
    return PQgetvalue(s->res, s->row, col);
}

static const unsigned char *pgs_col_blob(cf_stmt *s, int col, size_t *len)
{
    if (PQgetisnull(s->res, s->row, col)) {
        *len = 0;
        return (const unsigned char *)"";
    }
    *len = (size_t)PQgetlength(s->res, s->row, col);
    return (const unsigned char *)PQgetvalue(s->res, s->row, col);
}

static void pgs_done(cf_stmt *s)
{
    if (!s)
        return;
    s->kept = 0; /* its entry in owner->kept is skipped at the transaction's end */
    PQclear(s->res);
    s->res = NULL;
    s->row = -1;
    memset(s->values, 0, (size_t)s->nparams * sizeof *s->values);
    if (s->cached)
        return;
    free(s->text);
    free(s);
}

static void pg_close(cf_store *st)
{
    pg_store *ps = (pg_store *)st;
    for (size_t i = 0; i < ps->ncache; i++) {
        PQclear(ps->cache[i].stmt->res);
        free(ps->cache[i].stmt);
    }
    PQfinish(ps->conn);
    free(ps);
}

static const struct cf_db_ops pg_ops = {
    .exec = pg_exec,
    .prepare = pg_prepare,
    .bind_int64 = pgs_bind_int64,
    .bind_text = pgs_bind_text,
    .bind_blob = pgs_bind_blob,
    .bind_null = pgs_bind_null,
    .step = pgs_step,
    .col_null = pgs_col_null,
    .col_int64 = pgs_col_int64,
    .col_text = pgs_col_text,
    .col_blob = pgs_col_blob,
    .done = pgs_done,
    .close = pg_close,
    .run_later = pgs_run_later,
    .prefetch = pgs_prefetch,
};

/* The URL without its password (in the user part or as a password= parameter), for
 * messages. */
static void describe(const char *url, char *out, size_t cap)
{
    const char *scheme = strstr(url, "://");
    const char *host = scheme ? scheme + 3 : url;
    const char *at = strchr(host, '@');
    const char *slash = strchr(host, '/');
    const char *colon = strchr(host, ':');
    if (at && (!slash || at < slash) && colon && colon < at)
        snprintf(out, cap, "%.*s:***%s", (int)(colon - url), url, at);
    else
        snprintf(out, cap, "%s", url);
    char *pw = strstr(out, "password=");
    if (pw && pw > out && (pw[-1] == '?' || pw[-1] == '&')) {
        char rest[1024];
        snprintf(rest, sizeof rest, "%s", pw + 9 + strcspn(pw + 9, "&"));
        pw[0] = '\0';
        size_t used = strlen(out);
        snprintf(out + used, cap - used, "password=***%s", rest);
    }
}

static void quiet_notices(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

cf_err cf_db_pg_open(const char *conninfo, cf_store **out, cf_error *err)
{
    pg_store *ps = calloc(1, sizeof *ps);
    if (!ps)
        return cf_error_set(err, CF_ERR_NOMEM, "store: out of memory");
    ps->base.ops = &pg_ops;
    ps->base.kind = CF_STORE_POSTGRES;
    describe(conninfo, ps->base.desc, sizeof ps->base.desc);

    /* A server that does not answer must not hang the CLI: bound the connect time unless
     * the URL sets its own. */
    const char *keys[] = {"dbname", "connect_timeout", NULL};
    const char *vals[] = {conninfo, strstr(conninfo, "connect_timeout") ? NULL : "5", NULL};
    if (!vals[1])
        keys[1] = NULL;
    ps->conn = PQconnectdbParams(keys, vals, 1);
    if (!ps->conn || PQstatus(ps->conn) != CONNECTION_OK) {
        char msg[300];
        snprintf(msg, sizeof msg, "%s", ps->conn ? PQerrorMessage(ps->conn) : "out of memory");
        msg[strcspn(msg, "\n")] = '\0';
        cf_error_set(err, CF_ERR_UNAVAILABLE, "%s: cannot connect: %s", ps->base.desc, msg);
        PQfinish(ps->conn);
        free(ps);
        return CF_ERR_UNAVAILABLE;
    }
    PQsetNoticeProcessor(ps->conn, quiet_notices, NULL);
    cf_err rc = pg_exec(&ps->base, SESSION_SETUP, err);
    if (rc != CF_OK) {
        pg_close(&ps->base);
        return rc;
    }
    *out = &ps->base;
    return CF_OK;
}
