/* test_store.c - the store's contract, pinned for both backends.
 *
 * Every behaviour the backends share runs against SQLite and against the private PostgreSQL
 * server that the runner (tests/lib/run_unit.sh) starts; failure modes that belong to one
 * backend (a file that is not SQLite, a server that is gone) run against that one. A missing
 * PostgreSQL fails the tests rather than skipping them, so a green run always means both
 * backends were exercised. Some set-ups reach below the store's API through the driver
 * (store/db.h), e.g. to plant a schema version from the future. */
#include "testutil.h"

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit/audit.h"
#include "core/util.h"
#include "store/db.h"
#include "store/store.h"

/* ---- helpers ---- */

static char *fresh_url(int backend)
{
    const char *url = tu_fresh_store_url(backend);
    if (!url)
        fail_msg("%s: no store available (is CF_TEST_PG_URL set? run through run_unit.sh)",
                 tu_backend_name(backend));
    return cf_strdup(url);
}

static cf_store *open_url(int backend, const char *url)
{
    cf_store *st = NULL;
    cf_error err = {0};
    cf_err rc = cf_store_open(url, &st, &err);
    if (rc != CF_OK)
        fail_msg("%s: cf_store_open(%s): %s", tu_backend_name(backend), url, err.msg);
    assert_int_equal(cf_store_get_kind(st),
                     backend == TU_SQLITE ? CF_STORE_SQLITE : CF_STORE_POSTGRES);
    return st;
}

static cf_store *open_fresh(int backend)
{
    char *url = fresh_url(backend);
    cf_store *st = open_url(backend, url);
    free(url);
    return st;
}

/* Fails the test with the store's message unless call returns CF_OK; call reports into the
 * caller's cf_error named err. */
#define ASSERT_OK(backend, call)                                                                   \
    do {                                                                                           \
        if ((call) != CF_OK)                                                                       \
            fail_msg("%s: %s: %s", tu_backend_name(backend), #call, err.msg);                      \
    } while (0)

/* Runs raw SQL through the driver, for set-ups the store's API does not offer. */
static void raw_exec(cf_store *st, const char *sql)
{
    cf_error err = {0};
    if (st->ops->exec(st, sql, &err) != CF_OK)
        fail_msg("%s: %s", sql, err.msg);
}

static int64_t raw_count(cf_store *st, const char *sql)
{
    cf_error err = {0};
    cf_stmt *s;
    if (st->ops->prepare(st, sql, 0, &s, &err) != CF_OK)
        fail_msg("%s: %s", sql, err.msg);
    if (cf_db_one(st, s, &err) != CF_OK)
        fail_msg("%s: %s", sql, err.msg);
    int64_t v = st->ops->col_int64(s, 0);
    st->ops->done(s);
    return v;
}

static int free_tcp_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A DER-like blob that contains zero bytes and every byte value. */
static void make_blob(unsigned char *b, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)((i * 7 + seed) & 0xff);
    b[0] = 0x30;
    b[1] = 0x00;
    b[n - 1] = 0x00;
}

static cf_ca_rec ca_template(const char *name, cf_ca_role role, int64_t parent, unsigned char *der,
                             size_t der_len)
{
    cf_ca_rec r = {0};
    r.name = (char *)name;
    r.role = role;
    r.parent_id = parent;
    r.subject = (char *)"CN=Test CA,O=certfleet";
    r.key_ref = (char *)"root-1-0011223344556677.key";
    r.der = der;
    r.der_len = der_len;
    r.not_before = 1700000000;
    r.not_after = 4102444800; /* 2100: beyond 32 bits */
    r.status = CF_CA_ACTIVE;
    r.created_us = 1700000000123456;
    return r;
}

static int64_t insert_root_ca(int backend, cf_store *st)
{
    unsigned char der[64];
    make_blob(der, sizeof der, 1);
    cf_ca_rec r = ca_template("root-1", CF_CA_ROOT, 0, der, sizeof der);
    cf_error err = {0};
    if (cf_store_ca_insert(st, &r, &err) != CF_OK)
        fail_msg("%s: ca insert: %s", tu_backend_name(backend), err.msg);
    return r.id;
}

static cf_cert_rec cert_template(const char *serial, int64_t ca_id, const char *device,
                                 unsigned char *der, size_t der_len)
{
    cf_cert_rec r = {0};
    snprintf(r.serial, sizeof r.serial, "%s", serial);
    r.ca_id = ca_id;
    r.device_id = (char *)device;
    r.subject = (char *)"CN=dev-1";
    r.not_before = 1700000000;
    r.not_after = 4102444800;
    r.issued_us = 1700000000654321;
    r.der = der;
    r.der_len = der_len;
    r.status = CF_CERT_GOOD;
    r.reason = -1;
    return r;
}

/* ---- opening and migrations ---- */

static void test_open_migrates_to_latest_and_reopen_is_noop(void **state)
{
    (void)state;
    for (int b = 0; b < TU_BACKENDS; b++) {
        char *url = fresh_url(b);
        cf_store *st = open_url(b, url);
        cf_error err = {0};
        int64_t v = -1;
        ASSERT_OK(b, cf_store_schema_version(st, &v, &err));
        assert_true(cf_store_schema_latest() >= 1);
        assert_int_equal(v, cf_store_schema_latest());
        assert_int_equal(raw_count(st, "SELECT COUNT(*) FROM schema_migrations"),
                         cf_store_schema_latest());
        int64_t applied = raw_count(st, "SELECT MAX(applied_us) FROM schema_migrations");
        assert_true(applied > 0);
        ASSERT_OK(b, cf_store_meta_set(st, "marker", "kept", &err));
        cf_store_close(st);

        st = open_url(b, url);
        ASSERT_OK(b, cf_store_schema_version(st, &v, &err));
        assert_int_equal(v, cf_store_schema_latest());
        assert_int_equal(raw_count(st, "SELECT COUNT(*) FROM schema_migrations"),
                         cf_store_schema_latest());
        assert_int_equal(raw_count(st, "SELECT MAX(applied_us) FROM schema_migrations"), applied);
        char *value = NULL;
        ASSERT_OK(b, cf_store_meta_get(st, "marker", &value, &err));
        assert_string_equal(value, "kept");
        free(value);
        cf_store_close(st);
        free(url);
    }
}

struct open_job {
    const char *url;
    cf_err rc;
    char msg[CF_ERROR_MSG_MAX];
};

static void *open_thread(void *arg)
{
    struct open_job *job = arg;
    cf_store *st = NULL;
    cf_error err = {0};
    job->rc = cf_store_open(job->url, &st, &err);
    snprintf(job->msg, sizeof job->msg, "%s", err.msg);
    cf_store_close(st);
    return NULL;
}

/* Processes that open one new database at the same moment take turns migrating it. */
static void test_concurrent_first_open_migrates_once(void **state)
{
    (void)state;
    for (int b = 0; b < TU_BACKENDS; b++) {
        char *url = fresh_url(b);
        enum { N = 4 };
        struct open_job jobs[N];
        pthread_t th[N];
        for (int i = 0; i < N; i++) {
            jobs[i] = (struct open_job){.url = url};
            assert_int_equal(pthread_create(&th[i], NULL, open_thread, &jobs[i]), 0);
        }
        for (int i = 0; i < N; i++)
            pthread_join(th[i], NULL);
        for (int i = 0; i < N; i++)
            if (jobs[i].rc != CF_OK)
                fail_msg("%s: concurrent open %d: %s", tu_backend_name(b), i, jobs[i].msg);
        cf_store *st = open_url(b, url);
        assert_int_equal(raw_count(st, "SELECT COUNT(*) FROM schema_migrations"),
                         cf_store_schema_latest());
        cf_store_close(st);
        free(url);
    }
}

static void test_schema_newer_than_program_is_refused(void **state)
{
    (void)state;
    for (int b = 0; b < TU_BACKENDS; b++) {
        char *url = fresh_url(b);
        cf_store *st = open_url(b, url);
        char sql[160];
        snprintf(sql, sizeof sql,
                 "INSERT INTO schema_migrations (version, applied_us) VALUES (%d, 0)",
                 cf_store_schema_latest() + 5);
        raw_exec(st, sql);
        cf_store_close(st);

        cf_error err = {0};
        st = NULL;
        assert_int_equal(cf_store_open(url, &st, &err), CF_ERR_STORE);
        assert_null(st);
        assert_non_null(strstr(err.msg, "newer than this certfleet knows"));
        assert_non_null(strstr(err.msg, "upgrade certfleet"));
        free(url);
    }
}

static void test_unknown_url_scheme_is_invalid(void **state)
{
    (void)state;
    const char *urls[] = {"mysql://localhost/x", "sqlite", "", "file:/tmp/x.db", "postgresql:x"};
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        cf_store *st = NULL;
        cf_error err = {0};
        assert_int_equal(cf_store_open(urls[i], &st, &err), CF_ERR_INVALID);
        assert_null(st);
        assert_non_null(strstr(err.msg, "expected sqlite:PATH or postgresql://"));
    }
}

static void test_file_that_is_not_sqlite_is_store_error(void **state)
{
    (void)state;
    char path[700], url[720];
    snprintf(path, sizeof path, "%s/garbage-%d.db", tu_tmpdir(), (int)getpid());
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (int i = 0; i < 4096; i++)
        fputc("this is not a database, it is a shopping list\n"[i % 47], f);
    fclose(f);
    snprintf(url, sizeof url, "sqlite:%s", path);

    cf_store *st = NULL;
    cf_error err = {0};
    assert_int_equal(cf_store_open(url, &st, &err), CF_ERR_STORE);
    assert_null(st);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "not a valid certfleet database"));
}

static void test_postgres_nothing_listening_is_unavailable_quickly(void **state)
{
    (void)state;
    char url[128];
    snprintf(url, sizeof url, "postgresql://certfleet@127.0.0.1:%d/certfleet", free_tcp_port());
    cf_store *st = NULL;
    cf_error err = {0};
    double t0 = now_s();
    assert_int_equal(cf_store_open(url, &st, &err), CF_ERR_UNAVAILABLE);
    double took = now_s() - t0;
    assert_null(st);
    assert_non_null(strstr(err.msg, "cannot connect"));
    assert_non_null(strstr(err.msg, url));
    if (took > 3.0)
        fail_msg("refused connection took %.1f s", took);
}

static void test_postgres_password_is_not_in_description(void **state)
{
    (void)state;
    char url[160];
    snprintf(url, sizeof url, "postgresql://certfleet:s3cret@127.0.0.1:%d/certfleet",
             free_tcp_port());
    cf_store *st = NULL;
    cf_error err = {0};
    assert_int_equal(cf_store_open(url, &st, &err), CF_ERR_UNAVAILABLE);
    assert_null(strstr(err.msg, "s3cret"));
    snprintf(url, sizeof url,
             "postgresql://certfleet@127.0.0.1:%d/certfleet?password=s3cret&sslmode=disable",
             free_tcp_port());
    assert_int_equal(cf_store_open(url, &st, &err), CF_ERR_UNAVAILABLE);
    assert_null(strstr(err.msg, "s3cret"));
    assert_non_null(strstr(err.msg, "password=***&sslmode=disable"));
}

/* The server cannot be reached under an open store (its backend ended, new connections
 * refused): the next calls say so, as UNAVAILABLE, at once; once it can be reached again,
 * the store connects again by itself (after the second an attempt that failed waits). */
static void test_postgres_lost_connection_is_unavailable(void **state)
{
    (void)state;
    char sql_kill[200];
    char *url = fresh_url(TU_POSTGRES);
    cf_store *st = open_url(TU_POSTGRES, url);
    cf_error err = {0};
    ASSERT_OK(TU_POSTGRES, cf_store_meta_set(st, "k", "v", &err));

    /* From another database: PostgreSQL refuses to close the current one. */
    const char *keys[] = {"dbname", "dbname", NULL}, *vals[] = {url, "postgres", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    char refuse[200], allow[200];
    const char *db = strrchr(url, '/') + 1;
    snprintf(refuse, sizeof refuse, "ALTER DATABASE \"%s\" ALLOW_CONNECTIONS false", db);
    snprintf(allow, sizeof allow, "ALTER DATABASE \"%s\" ALLOW_CONNECTIONS true", db);
    PGresult *r = PQexec(c, refuse);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    snprintf(sql_kill, sizeof sql_kill,
             "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s'", db);
    r = PQexec(c, sql_kill);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(r), 1);
    PQclear(r);

    char *value = NULL;
    double t0 = now_s();
    assert_int_equal(cf_store_meta_get(st, "k", &value, &err), CF_ERR_UNAVAILABLE);
    assert_null(value);
    assert_non_null(strstr(err.msg, "connection"));
    assert_int_equal(cf_store_begin(st, &err), CF_ERR_UNAVAILABLE);
    assert_int_equal(cf_store_meta_get(st, "k", &value, &err), CF_ERR_UNAVAILABLE);
    if (now_s() - t0 > 1.0)
        fail_msg("three calls on a lost connection took %.1f s", now_s() - t0);

    r = PQexec(c, allow);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    PQfinish(c);
    usleep(1100 * 1000);
    ASSERT_OK(TU_POSTGRES, cf_store_meta_get(st, "k", &value, &err));
    assert_string_equal(value, "v");
    free(value);
    ASSERT_OK(TU_POSTGRES, cf_store_begin(st, &err));
    ASSERT_OK(TU_POSTGRES, cf_store_meta_set(st, "k", "w", &err));
    ASSERT_OK(TU_POSTGRES, cf_store_commit(st, &err));
    cf_store_close(st);
    free(url);
}

/* Aggregates come back as int8 (COUNT), numeric (SUM of bigint) or int4 in PostgreSQL's
 * binary format; the driver reads each as the number SQLite would give. */
static void test_driver_decodes_aggregates(void **state)
{
    (void)state;
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_store *st = open_fresh(b);
        cf_error err = {0};
        cf_stmt *s;
        ASSERT_OK(b, st->ops->prepare(st,
                                      "WITH t(x) AS (VALUES (5000000000), (7), (-12345678901234),"
                                      " (10000)) SELECT COUNT(*), SUM(x),"
                                      " COALESCE(SUM(CASE WHEN x > 0 THEN x END), 0),"
                                      " COALESCE(SUM(CASE WHEN x > 10000000000000 THEN 1 END), 0),"
                                      " MIN(x), MAX(x), SUM(CASE WHEN x = 7 THEN 1 ELSE 0 END),"
                                      " SUM(x) - SUM(x), 42 FROM t",
                                      0, &s, &err));
        ASSERT_OK(b, cf_db_one(st, s, &err));
        assert_int_equal(st->ops->col_int64(s, 0), 4);
        assert_int_equal(st->ops->col_int64(s, 1), -12340678891227);
        assert_int_equal(st->ops->col_int64(s, 2), 5000010007);
        assert_int_equal(st->ops->col_int64(s, 3), 0);
        assert_int_equal(st->ops->col_int64(s, 4), -12345678901234);
        assert_int_equal(st->ops->col_int64(s, 5), 5000000000);
        assert_int_equal(st->ops->col_int64(s, 6), 1);
        assert_int_equal(st->ops->col_int64(s, 7), 0);
        assert_int_equal(st->ops->col_int64(s, 8), 42);
        st->ops->done(s);
        cf_store_close(st);
    }

    /* NUMERIC beyond what SQLite can sum: fractions drop, out-of-range values saturate. */
    cf_store *st = open_fresh(TU_POSTGRES);
    cf_error err = {0};
    cf_stmt *s;
    ASSERT_OK(TU_POSTGRES,
              st->ops->prepare(st,
                               "SELECT 12345.678::numeric, -0.5::numeric, 100000000::numeric,"
                               " (-9223372036854775808)::numeric, 99999999999999999999::numeric,"
                               " -99999999999999999999::numeric, 'NaN'::numeric",
                               0, &s, &err));
    ASSERT_OK(TU_POSTGRES, cf_db_one(st, s, &err));
    assert_int_equal(st->ops->col_int64(s, 0), 12345);
    assert_int_equal(st->ops->col_int64(s, 1), 0);
    assert_int_equal(st->ops->col_int64(s, 2), 100000000);
    assert_true(st->ops->col_int64(s, 3) == INT64_MIN);
    assert_true(st->ops->col_int64(s, 4) == INT64_MAX);
    assert_true(st->ops->col_int64(s, 5) == INT64_MIN);
    assert_int_equal(st->ops->col_int64(s, 6), 0);
    st->ops->done(s);
    cf_store_close(st);
}

/* ---- settings ---- */

static void test_meta_get_set_insert(void **state)
{
    (void)state;
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_store *st = open_fresh(b);
        cf_error err = {0};
        char *value = NULL;
        assert_int_equal(cf_store_meta_get(st, "org", &value, &err), CF_ERR_NOT_FOUND);
        assert_non_null(strstr(err.msg, "org"));

        ASSERT_OK(b, cf_store_meta_insert(st, "org", "Acme", &err));
        assert_int_equal(cf_store_meta_insert(st, "org", "Evil", &err), CF_ERR_EXISTS);
        ASSERT_OK(b, cf_store_meta_get(st, "org", &value, &err));
        assert_string_equal(value, "Acme");
        free(value);

        ASSERT_OK(b, cf_store_meta_set(st, "org", "Acme Corp", &err));
        ASSERT_OK(b, cf_store_meta_set(st, "empty", "", &err));
        ASSERT_OK(b, cf_store_meta_get(st, "org", &value, &err));
        assert_string_equal(value, "Acme Corp");
        free(value);
        ASSERT_OK(b, cf_store_meta_get(st, "empty", &value, &err));
        assert_string_equal(value, "");
        free(value);
        /* Quotes and non-ASCII survive as they are. */
        ASSERT_OK(b, cf_store_meta_set(st, "it's", "Zürich \"?\" '?'", &err));
        ASSERT_OK(b, cf_store_meta_get(st, "it's", &value, &err));
        assert_string_equal(value, "Zürich \"?\" '?'");
        free(value);
        cf_store_close(st);
    }
}

/* A losing first-writer inside a transaction must leave the transaction usable (PostgreSQL
 * aborts a transaction on any failed statement): init relies on reading the winner's value. */
static void test_meta_insert_conflict_keeps_transaction_usable(void **state)
{
    (void)state;
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_store *st = open_fresh(b);
        cf_error err = {0};
        char *value = NULL;
        ASSERT_OK(b, cf_store_meta_insert(st, "org", "first", &err));
        ASSERT_OK(b, cf_store_begin(st, &err));
        assert_int_equal(cf_store_meta_insert(st, "org", "second", &err), CF_ERR_EXISTS);
        ASSERT_OK(b, cf_store_meta_get(st, "org", &value, &err));
        assert_string_equal(value, "first");
        free(value);
        ASSERT_OK(b, cf_store_meta_set(st, "after", "yes", &err));
        ASSERT_OK(b, cf_store_commit(st, &err));
        ASSERT_OK(b, cf_store_meta_get(st, "after", &value, &err));
        assert_string_equal(value, "yes");
        free(value);
        cf_store_close(st);
    }
}

/* ---- CAs ---- */

static void test_ca_insert_list_active_get_round_trip(void **state)
{
    (void)state;
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_store *st = open_fresh(b);
        cf_error err = {0};
        unsigned char root_der[300], iss_der[513];
        make_blob(root_der, sizeof root_der, 3);
        make_blob(iss_der, sizeof iss_der, 5);

        cf_ca_rec root = ca_template("root-1", CF_CA_ROOT, 0, root_der, sizeof root_der);
        ASSERT_OK(b, cf_store_ca_insert(st, &root, &err));
        assert_true(root.id > 0);
        cf_ca_rec iss = ca_template("issuing-1", CF_CA_ISSUING, root.id, iss_der, sizeof iss_der);
        iss.key_ref = (char *)"pkcs11:token=ca;object=issuing";
        ASSERT_OK(b, cf_store_ca_insert(st, &iss, &err));
        assert_true(iss.id > root.id);
        cf_ca_rec old = ca_template("issuing-0", CF_CA_ISSUING, root.id, iss_der, 10);
        old.status = CF_CA_RETIRED;
        ASSERT_OK(b, cf_store_ca_insert(st, &old, &err));

        cf_ca_rec *list = NULL;
        size_t n = 0;
        ASSERT_OK(b, cf_store_ca_list(st, &list, &n, &err));
        assert_int_equal(n, 3);
        assert_string_equal(list[0].name, "root-1");
        assert_string_equal(list[1].name, "issuing-1");
        assert_string_equal(list[2].name, "issuing-0");
        assert_int_equal(list[2].status, CF_CA_RETIRED);
        for (size_t i = 0; i < n; i++)
            cf_ca_rec_clear(&list[i]);
        free(list);

        cf_ca_rec got = {0};
        ASSERT_OK(b, cf_store_ca_active(st, CF_CA_ISSUING, &got, &err));
        assert_int_equal(got.id, iss.id);
        assert_string_equal(got.name, "issuing-1");
        assert_int_equal(got.role, CF_CA_ISSUING);
        assert_int_equal(got.parent_id, root.id);
        assert_string_equal(got.subject, "CN=Test CA,O=certfleet");
        assert_string_equal(got.key_ref, "pkcs11:token=ca;object=issuing");
        assert_int_equal(got.der_len, sizeof iss_der);
        assert_memory_equal(got.der, iss_der, sizeof iss_der);
        assert_int_equal(got.not_before, 1700000000);
        assert_int_equal(got.not_after, 4102444800);
        assert_int_equal(got.created_us, 1700000000123456);
        assert_int_equal(got.status, CF_CA_ACTIVE);
        cf_ca_rec_clear(&got);

        ASSERT_OK(b, cf_store_ca_get(st, root.id, &got, &err));
        assert_string_equal(got.name, "root-1");
        assert_int_equal(got.role, CF_CA_ROOT);
        assert_int_equal(got.parent_id, 0);
        assert_int_equal(got.der_len, sizeof root_der);
        assert_memory_equal(got.der, root_der, sizeof root_der);
        cf_ca_rec_clear(&got);

        ASSERT_OK(b, cf_store_ca_active(st, CF_CA_ROOT, &got, &err));
        assert_int_equal(got.id, root.id);
        cf_ca_rec_clear(&got);

        assert_int_equal(cf_store_ca_get(st, 9999, &got, &err), CF_ERR_NOT_FOUND);
        cf_store_close(st);
    }
}

static void test_ca_duplicate_name_exists(void **state)
{
    (void)state;
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_store *st = open_fresh(b);
        cf_error err = {0};
        cf_ca_rec got = {0};
        assert_int_equal(cf_store_ca_active(st, CF_CA_ROOT, &got, &err), CF_ERR_NOT_FOUND);
        insert_root_ca(b, st);
        unsigned char der[8] = {0};
        cf_ca_rec again = ca_template("root-1", CF_CA_ROOT, 0, der, sizeof der);
        assert_int_equal(cf_store_ca_insert(st, &again, &err), CF_ERR_EXISTS);
        assert_non_null(strstr(err.msg, "root-1"));
        /* The failed insert changed nothing, and the store carries on. */
        cf_ca_rec *list = NULL;
        size_t n = 0;
        ASSERT_OK(b, cf_store_ca_list(st, &list, &n, &err));
        assert_int_equal(n, 1);
        assert_int_equal(list[0].der_len, 64);
        cf_ca_rec_clear(&list[0]);
        free(list);
        cf_store_close(st);
    }
}

/* ---- devices ---- */

static void test_device_ensure_get_set_state_count(void **state)
{
    (void)state;
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_store *st = open_fresh(b);
        cf_error err = {0};
        int created = -1;
        cf_device_state s;
        int64_t counts[CF_DEVICE_STATE_COUNT];

        ASSERT_OK(b, cf_store_device_count(st, counts, &err));
        for (int i = 0; i < CF_DEVICE_STATE_COUNT; i++)
            assert_int_equal(counts[i], 0);

        ASSERT_OK(b, cf_store_device_ensure(st, "dev-1", CF_DEVICE_ON_HOLD, &created, &err));
        assert_int_equal(created, 1);
        ASSERT_OK(b, cf_store_device_ensure(st, "dev-1", CF_DEVICE_ACTIVE, &created, &err));
        assert_int_equal(created, 0);
        ASSERT_OK(b, cf_store_device_get_state(st, "dev-1", &s, &err));
        assert_int_equal(s, CF_DEVICE_ON_HOLD);
        ASSERT_OK(b, cf_store_device_ensure(st, "dev-2", CF_DEVICE_ACTIVE, &created, &err));
        assert_int_equal(created, 1);
        ASSERT_OK(b, cf_store_device_ensure(st, "dev-3", CF_DEVICE_ACTIVE, &created, &err));

        ASSERT_OK(b, cf_store_device_set_state(st, "dev-1", CF_DEVICE_SUSPENDED, &err));
        ASSERT_OK(b, cf_store_device_get_state(st, "dev-1", &s, &err));
        assert_int_equal(s, CF_DEVICE_SUSPENDED);
        assert_int_equal(cf_store_device_set_state(st, "nope", CF_DEVICE_ACTIVE, &err),
                         CF_ERR_NOT_FOUND);
        assert_non_null(strstr(err.msg, "nope"));
        assert_int_equal(cf_store_device_get_state(st, "nope", &s, &err), CF_ERR_NOT_FOUND);

        ASSERT_OK(b, cf_store_device_count(st, counts, &err));
        assert_int_equal(counts[CF_DEVICE_SUSPENDED], 1);
        assert_int_equal(counts[CF_DEVICE_ACTIVE], 2);
        assert_int_equal(counts[CF_DEVICE_ON_HOLD], 0);
        assert_int_equal(counts[CF_DEVICE_REVOKED], 0);
        cf_store_close(st);
    }
}

/* ---- certificates ---- */

static void test_cert_insert_get_and_duplicate_serial(void **state)
{
    (void)state;
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_store *st = open_fresh(b);
        cf_error err = {0};
        int created;
        int64_t total = -1, valid = -1;
        int64_t ca = insert_root_ca(b, st);
        unsigned char der[777];
        make_blob(der, sizeof der, 9);

        /* COUNT and COALESCE(SUM) on an empty table. */
        ASSERT_OK(b, cf_store_cert_count(st, 1800000000, &total, &valid, &err));
        assert_int_equal(total, 0);
        assert_int_equal(valid, 0);

        ASSERT_OK(b, cf_store_device_ensure(st, "dev-1", CF_DEVICE_ACTIVE, &created, &err));
        cf_cert_rec rec =
            cert_template("7F00A1B2C3D4E5F60718293A4B5C6D7E", ca, "dev-1", der, sizeof der);
        ASSERT_OK(b, cf_store_cert_insert(st, &rec, &err));
        cf_cert_rec dup = cert_template("7F00A1B2C3D4E5F60718293A4B5C6D7E", ca, NULL, der, 5);
        assert_int_equal(cf_store_cert_insert(st, &dup, &err), CF_ERR_EXISTS);
        assert_non_null(strstr(err.msg, "7F00A1B2C3D4E5F60718293A4B5C6D7E"));

        cf_cert_rec other = cert_template("01", ca, NULL, der, 1);
        other.not_after = 1600000000; /* expired */
        other.status = CF_CERT_REVOKED;
        other.reason = 4;
        other.revoked_us = 1650000000000001;
        ASSERT_OK(b, cf_store_cert_insert(st, &other, &err));
        cf_cert_rec third = cert_template("0A", ca, "dev-1", der, 2);
        third.status = CF_CERT_REVOKED;
        third.reason = 1;
        third.revoked_us = 1650000000000002;
        ASSERT_OK(b, cf_store_cert_insert(st, &third, &err));

        cf_cert_rec got;
        ASSERT_OK(b, cf_store_cert_get(st, "7F00A1B2C3D4E5F60718293A4B5C6D7E", &got, &err));
        assert_string_equal(got.serial, "7F00A1B2C3D4E5F60718293A4B5C6D7E");
        assert_int_equal(got.ca_id, ca);
        assert_string_equal(got.device_id, "dev-1");
        assert_string_equal(got.subject, "CN=dev-1");
        assert_int_equal(got.not_before, 1700000000);
        assert_int_equal(got.not_after, 4102444800);
        assert_int_equal(got.issued_us, 1700000000654321);
        assert_int_equal(got.der_len, sizeof der);
        assert_memory_equal(got.der, der, sizeof der);
        assert_int_equal(got.status, CF_CERT_GOOD);
        assert_int_equal(got.reason, -1);
        assert_int_equal(got.revoked_us, 0);
        cf_cert_rec_clear(&got);

        ASSERT_OK(b, cf_store_cert_get(st, "01", &got, &err));
        assert_null(got.device_id);
        assert_int_equal(got.status, CF_CERT_REVOKED);
        assert_int_equal(got.reason, 4);
        assert_int_equal(got.revoked_us, 1650000000000001);
        assert_int_equal(got.der_len, 1);
        cf_cert_rec_clear(&got);

        assert_int_equal(cf_store_cert_get(st, "DEAD", &got, &err), CF_ERR_NOT_FOUND);

        /* 3 certificates; only the first is unexpired and good. */
        ASSERT_OK(b, cf_store_cert_count(st, 1800000000, &total, &valid, &err));
        assert_int_equal(total, 3);
        assert_int_equal(valid, 1);
        ASSERT_OK(b, cf_store_cert_count(st, 4200000000, &total, &valid, &err));
        assert_int_equal(total, 3);
        assert_int_equal(valid, 0);
        cf_store_close(st);
    }
}

/* ---- transactions ---- */

static void test_rollback_leaves_nothing(void **state)
{
    (void)state;
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_store *st = open_fresh(b);
        cf_error err = {0};
        int created;
        int64_t total, valid, seq;
        unsigned char hash[CF_HASH_LEN], der[40];
        make_blob(der, sizeof der, 2);
        int64_t ca = insert_root_ca(b, st);

        ASSERT_OK(b, cf_store_begin(st, &err));
        assert_int_equal(cf_store_begin(st, &err), CF_ERR_INTERNAL);
        ASSERT_OK(b, cf_store_device_ensure(st, "ghost", CF_DEVICE_ACTIVE, &created, &err));
        cf_cert_rec rec = cert_template("ABCDEF", ca, "ghost", der, sizeof der);
        ASSERT_OK(b, cf_store_cert_insert(st, &rec, &err));
        ASSERT_OK(b, cf_store_meta_set(st, "ghost", "boo", &err));
        cf_audit_rec a = {.seq = 1,
                          .time_us = 5,
                          .actor = "t",
                          .action = "cert.issue",
                          .object = "ghost",
                          .details = "{}"};
        ASSERT_OK(b, cf_store_audit_lock_head(st, &seq, hash, &err));
        ASSERT_OK(b, cf_store_audit_insert(st, &a, &err));
        /* Inside the transaction, the changes are visible. */
        ASSERT_OK(b, cf_store_cert_count(st, 0, &total, &valid, &err));
        assert_int_equal(total, 1);
        cf_store_rollback(st);

        cf_device_state s;
        char *value = NULL;
        cf_cert_rec got;
        assert_int_equal(cf_store_device_get_state(st, "ghost", &s, &err), CF_ERR_NOT_FOUND);
        assert_int_equal(cf_store_cert_get(st, "ABCDEF", &got, &err), CF_ERR_NOT_FOUND);
        assert_int_equal(cf_store_meta_get(st, "ghost", &value, &err), CF_ERR_NOT_FOUND);
        ASSERT_OK(b, cf_store_cert_count(st, 0, &total, &valid, &err));
        assert_int_equal(total, 0);
        ASSERT_OK(b, cf_store_audit_head(st, &seq, hash, &err));
        assert_int_equal(seq, 0);
        assert_int_equal(raw_count(st, "SELECT COUNT(*) FROM audit"), 0);

        /* A failed statement inside a transaction, then rollback: the store carries on. A
         * certificate's INSERT runs later on PostgreSQL (cf_db_run_later): its failure comes
         * with the next statement that returns rows, in its own words. */
        rec.device_id = NULL; /* the device went with the rollback */
        ASSERT_OK(b, cf_store_begin(st, &err));
        ASSERT_OK(b, cf_store_cert_insert(st, &rec, &err));
        cf_err dup = cf_store_cert_insert(st, &rec, &err);
        if (b == TU_POSTGRES) {
            assert_int_equal(dup, CF_OK);
            assert_int_equal(cf_store_cert_get(st, "ABCDEF", &got, &err), CF_ERR_EXISTS);
        } else {
            assert_int_equal(dup, CF_ERR_EXISTS);
        }
        assert_string_equal(err.msg, "certificate serial ABCDEF already exists");
        cf_store_rollback(st);
        ASSERT_OK(b, cf_store_cert_count(st, 0, &total, &valid, &err));
        assert_int_equal(total, 0);

        /* Nor does a COMMIT keep anything after a failure it reports. */
        ASSERT_OK(b, cf_store_begin(st, &err));
        ASSERT_OK(b, cf_store_cert_insert(st, &rec, &err));
        dup = cf_store_cert_insert(st, &rec, &err);
        if (b == TU_POSTGRES) {
            assert_int_equal(dup, CF_OK);
            assert_int_equal(cf_store_commit(st, &err), CF_ERR_EXISTS);
        } else {
            assert_int_equal(dup, CF_ERR_EXISTS);
            cf_store_rollback(st);
        }
        assert_string_equal(err.msg, "certificate serial ABCDEF already exists");
        ASSERT_OK(b, cf_store_cert_count(st, 0, &total, &valid, &err));
        assert_int_equal(total, 0);

        /* And a commit keeps things. */
        ASSERT_OK(b, cf_store_begin(st, &err));
        ASSERT_OK(b, cf_store_cert_insert(st, &rec, &err));
        ASSERT_OK(b, cf_store_commit(st, &err));
        ASSERT_OK(b, cf_store_cert_count(st, 0, &total, &valid, &err));
        assert_int_equal(total, 1);

        /* Closing with an open transaction rolls it back. */
        ASSERT_OK(b, cf_store_begin(st, &err));
        ASSERT_OK(b, cf_store_meta_set(st, "unsaved", "x", &err));
        cf_store_close(st);
    }
}

/* Statements run later (cf_db_run_later) on PostgreSQL: more of them than one pipeline
 * holds, and a failure among them reported by whatever comes next, even a statement this
 * connection has not prepared yet; nothing of the transaction is kept. */
static void test_statements_run_later(void **state)
{
    (void)state;
    for (int b = 0; b < TU_BACKENDS; b++) {
        char *url = fresh_url(b);
        cf_store *st = open_url(b, url);
        cf_error err = {0};
        int64_t total, valid;
        unsigned char der[40];
        make_blob(der, sizeof der, 3);
        int64_t ca = insert_root_ca(b, st);
        char serial[16];
        ASSERT_OK(b, cf_store_begin(st, &err));
        for (int i = 0; i < 150; i++) {
            snprintf(serial, sizeof serial, "%04X", i + 1);
            cf_cert_rec rec = cert_template(serial, ca, NULL, der, sizeof der);
            ASSERT_OK(b, cf_store_cert_insert(st, &rec, &err));
        }
        ASSERT_OK(b, cf_store_commit(st, &err));
        ASSERT_OK(b, cf_store_cert_count(st, 0, &total, &valid, &err));
        assert_int_equal(total, 150);

        /* A duplicate among 100 new ones, the 70th: after the first pipeline was read. On a
         * connection of its own, where the statement after them is the first of its kind. */
        cf_store *other = open_url(b, url);
        ASSERT_OK(b, cf_store_begin(other, &err));
        cf_err rc = CF_OK;
        for (int i = 0; i < 100 && rc == CF_OK; i++) {
            snprintf(serial, sizeof serial, "%04X", i == 69 ? 7 : 1000 + i);
            cf_cert_rec rec = cert_template(serial, ca, NULL, der, sizeof der);
            rc = cf_store_cert_insert(other, &rec, &err);
        }
        if (rc == CF_OK) /* still to be answered */
            rc = cf_store_cert_count(other, 0, &total, &valid, &err);
        assert_int_equal(rc, CF_ERR_EXISTS);
        assert_string_equal(err.msg, "certificate serial 0007 already exists");
        cf_store_rollback(other);
        cf_store_close(other);
        free(url);
        ASSERT_OK(b, cf_store_cert_count(st, 0, &total, &valid, &err));
        assert_int_equal(total, 150);
        char *value = NULL;
        /* The connection carries on, pipelines included. */
        ASSERT_OK(b, cf_store_begin(st, &err));
        cf_cert_rec rec = cert_template("FFFF", ca, NULL, der, sizeof der);
        ASSERT_OK(b, cf_store_cert_insert(st, &rec, &err));
        ASSERT_OK(b, cf_store_meta_set(st, "k", "v", &err));
        ASSERT_OK(b, cf_store_commit(st, &err));
        ASSERT_OK(b, cf_store_meta_get(st, "k", &value, &err));
        assert_string_equal(value, "v");
        free(value);
        ASSERT_OK(b, cf_store_cert_count(st, 0, &total, &valid, &err));
        assert_int_equal(total, 151);
        cf_store_close(st);
    }
}

/* The audit head's lock asked for ahead (cf_store_audit_lock_soon) comes with the next
 * statement's round trip on PostgreSQL and is what locking the head then returns; one that
 * was not used goes with its transaction, so a later one reads the head as it is by then,
 * not as it was. */
static void test_audit_head_locked_ahead(void **state)
{
    (void)state;
    for (int b = 0; b < TU_BACKENDS; b++) {
        char *url = fresh_url(b);
        cf_store *st = open_url(b, url), *other = open_url(b, url);
        cf_error err = {0};
        int64_t seq;
        unsigned char hash[CF_HASH_LEN];
        cf_audit_rec a = {
            .time_us = 5, .actor = "t", .action = "x", .object = "o", .details = "{}"};

        ASSERT_OK(b, cf_store_begin(st, &err));
        assert_int_equal(cf_store_audit_lock_soon(st), b == TU_POSTGRES);
        ASSERT_OK(b, cf_store_meta_set(st, "k", "v", &err));
        if (b == TU_POSTGRES) {
            /* The head is locked already: another appender waits (here, up to its lock
             * timeout). */
            ASSERT_OK(b, other->ops->exec(other, "SET lock_timeout = '200ms'", &err));
            ASSERT_OK(b, cf_store_begin(other, &err));
            assert_int_equal(cf_store_audit_lock_head(other, &seq, hash, &err), CF_ERR_STORE);
            assert_non_null(strstr(err.msg, "lock timeout"));
            cf_store_rollback(other);
            ASSERT_OK(b, other->ops->exec(other, "SET lock_timeout = 0", &err));
        }
        ASSERT_OK(b, cf_store_audit_lock_head(st, &seq, hash, &err));
        assert_int_equal(seq, 0);
        a.seq = 1;
        a.hash[0] = 1;
        ASSERT_OK(b, cf_store_audit_insert(st, &a, &err));
        ASSERT_OK(b, cf_store_commit(st, &err));

        /* Asked for, sent with the next statement, never used: rolled back with it. */
        ASSERT_OK(b, cf_store_begin(st, &err));
        cf_store_audit_lock_soon(st);
        ASSERT_OK(b, cf_store_meta_set(st, "k", "w", &err));
        cf_store_rollback(st);
        /* Meanwhile another connection appends. */
        ASSERT_OK(b, cf_store_begin(other, &err));
        ASSERT_OK(b, cf_store_audit_lock_head(other, &seq, hash, &err));
        assert_int_equal(seq, 1);
        assert_int_equal(hash[0], 1);
        a.seq = 2;
        memcpy(a.prev_hash, hash, CF_HASH_LEN);
        a.hash[0] = 2;
        ASSERT_OK(b, cf_store_audit_insert(other, &a, &err));
        ASSERT_OK(b, cf_store_commit(other, &err));
        /* The next lock reads the head as the other connection left it. */
        ASSERT_OK(b, cf_store_begin(st, &err));
        cf_store_audit_lock_soon(st);
        ASSERT_OK(b, cf_store_audit_lock_head(st, &seq, hash, &err));
        assert_int_equal(seq, 2);
        assert_int_equal(hash[0], 2);
        cf_store_rollback(st);
        /* Asked for in a transaction that commits without using it. */
        ASSERT_OK(b, cf_store_begin(st, &err));
        cf_store_audit_lock_soon(st);
        ASSERT_OK(b, cf_store_meta_set(st, "k", "x", &err));
        ASSERT_OK(b, cf_store_commit(st, &err));
        ASSERT_OK(b, cf_store_begin(other, &err));
        ASSERT_OK(b, cf_store_audit_lock_head(other, &seq, hash, &err));
        a.seq = 3;
        memcpy(a.prev_hash, hash, CF_HASH_LEN);
        a.hash[0] = 3;
        ASSERT_OK(b, cf_store_audit_insert(other, &a, &err));
        ASSERT_OK(b, cf_store_commit(other, &err));
        ASSERT_OK(b, cf_store_begin(st, &err));
        ASSERT_OK(b, cf_store_audit_lock_head(st, &seq, hash, &err));
        assert_int_equal(seq, 3);
        cf_store_rollback(st);
        char *value = NULL;
        ASSERT_OK(b, cf_store_meta_get(st, "k", &value, &err));
        assert_string_equal(value, "x");
        free(value);
        cf_store_close(other);
        cf_store_close(st);
        free(url);
    }
}

/* Ends the PostgreSQL backend that serves st, from another connection (as a restart does). */
static void end_backend(cf_store *st, int64_t pid)
{
    char sql[64];
    cf_error err = {0};
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%lld)", (long long)pid);
    ASSERT_OK(TU_POSTGRES, st->ops->exec(st, sql, &err));
}

/* PostgreSQL ends a connection: a statement outside a transaction, or a transaction's first,
 * runs again on a new connection, with the statements prepared on the old one prepared
 * again; one inside a transaction that had done something fails as unavailable, and the
 * next statement has a connection again. */
static void test_lost_connection_is_made_again(void **state)
{
    (void)state;
    char *url = fresh_url(TU_POSTGRES);
    cf_store *st = open_url(TU_POSTGRES, url), *killer = open_url(TU_POSTGRES, url);
    cf_error err = {0};
    char *value = NULL;
    ASSERT_OK(TU_POSTGRES, cf_store_meta_set(st, "k", "v", &err));

    /* Outside a transaction, a statement prepared before. */
    end_backend(killer, raw_count(st, "SELECT pg_backend_pid()"));
    ASSERT_OK(TU_POSTGRES, cf_store_meta_get(st, "k", &value, &err));
    assert_string_equal(value, "v");
    free(value);
    /* A transaction's first statement, and the audit head asked for with it. */
    end_backend(killer, raw_count(st, "SELECT pg_backend_pid()"));
    ASSERT_OK(TU_POSTGRES, cf_store_begin(st, &err));
    cf_store_audit_lock_soon(st);
    ASSERT_OK(TU_POSTGRES, cf_store_meta_set(st, "k", "w", &err));
    ASSERT_OK(TU_POSTGRES, cf_audit_append(st, "t", "test.reconnect", "k", NULL, NULL, &err));
    ASSERT_OK(TU_POSTGRES, cf_store_commit(st, &err));
    /* Inside a transaction that did something: not run again. */
    int64_t pid = raw_count(st, "SELECT pg_backend_pid()");
    ASSERT_OK(TU_POSTGRES, cf_store_begin(st, &err));
    ASSERT_OK(TU_POSTGRES, cf_store_meta_set(st, "k2", "x", &err));
    end_backend(killer, pid);
    assert_int_equal(cf_store_meta_set(st, "k3", "y", &err), CF_ERR_UNAVAILABLE);
    cf_store_rollback(st);
    assert_int_equal(cf_store_meta_get(st, "k2", &value, &err), CF_ERR_NOT_FOUND);
    ASSERT_OK(TU_POSTGRES, cf_store_meta_get(st, "k", &value, &err));
    assert_string_equal(value, "w");
    free(value);
    cf_audit_verify_result verified;
    ASSERT_OK(TU_POSTGRES, cf_audit_verify(st, &verified, &err));
    assert_int_equal(verified.records, 1);
    cf_store_close(killer);
    cf_store_close(st);
    free(url);
}

struct crosser {
    cf_store *st;
    const char *first, *second;
    pthread_barrier_t *both_hold_one;
    cf_err rc;
    char msg[CF_ERROR_MSG_MAX];
};

static void *cross(void *arg)
{
    struct crosser *c = arg;
    cf_error err = {0};
    c->rc = cf_store_begin(c->st, &err);
    if (c->rc == CF_OK)
        c->rc = cf_store_meta_set(c->st, c->first, "1", &err);
    pthread_barrier_wait(c->both_hold_one);
    if (c->rc == CF_OK)
        c->rc = cf_store_meta_set(c->st, c->second, "1", &err);
    if (c->rc == CF_OK)
        c->rc = cf_store_commit(c->st, &err);
    else
        cf_store_rollback(c->st);
    snprintf(c->msg, sizeof c->msg, "%s", err.msg);
    return NULL;
}

/* Two transactions lock two rows in opposite orders: PostgreSQL ends one of them, which
 * is to be tried again (UNAVAILABLE, a server's 503), not an internal error. */
static void test_postgres_deadlock_victim_may_try_again(void **state)
{
    (void)state;
    char *url = fresh_url(TU_POSTGRES);
    cf_store *a = open_url(TU_POSTGRES, url), *b = open_url(TU_POSTGRES, url);
    cf_error err = {0};
    ASSERT_OK(TU_POSTGRES, cf_store_meta_set(a, "x", "0", &err));
    ASSERT_OK(TU_POSTGRES, cf_store_meta_set(a, "y", "0", &err));
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, 2);
    struct crosser c[2] = {{a, "x", "y", &barrier, CF_OK, ""}, {b, "y", "x", &barrier, CF_OK, ""}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, cross, &c[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&barrier);
    int victim = c[0].rc != CF_OK ? 0 : 1;
    if (c[1 - victim].rc != CF_OK || c[victim].rc != CF_ERR_UNAVAILABLE ||
        !strstr(c[victim].msg, "deadlock") || !strstr(c[victim].msg, "try again"))
        fail_msg("expected one commit and one deadlock to try again, got %s (%s) and %s (%s)",
                 cf_err_name(c[0].rc), c[0].msg, cf_err_name(c[1].rc), c[1].msg);
    /* Tried again, it goes through. */
    struct crosser again = {c[victim].st, c[victim].first, c[victim].second, NULL, CF_OK, ""};
    pthread_barrier_init(&barrier, NULL, 1);
    again.both_hold_one = &barrier;
    cross(&again);
    pthread_barrier_destroy(&barrier);
    assert_int_equal(again.rc, CF_OK);
    cf_store_close(b);
    cf_store_close(a);
    free(url);
}

/* A commit of a transaction the database has already aborted must not report success. */
static void test_commit_of_failed_transaction_is_an_error(void **state)
{
    (void)state;
    cf_store *st = open_fresh(TU_POSTGRES);
    cf_error err = {0};
    ASSERT_OK(TU_POSTGRES, cf_store_meta_set(st, "k", "v", &err));
    ASSERT_OK(TU_POSTGRES, cf_store_begin(st, &err));
    ASSERT_OK(TU_POSTGRES, cf_store_meta_set(st, "k2", "v2", &err));
    assert_int_not_equal(st->ops->exec(st, "SELECT no_such_column FROM meta", &err), CF_OK);
    assert_int_not_equal(cf_store_commit(st, &err), CF_OK);
    char *value = NULL;
    assert_int_equal(cf_store_meta_get(st, "k2", &value, &err), CF_ERR_NOT_FOUND);
    cf_store_close(st);
}

/* ---- audit ---- */

static void append(int backend, cf_store *st, int64_t time_us, const char *actor,
                   const char *action, const char *object)
{
    cf_error err = {0};
    cf_audit_rec r = {0};
    int64_t seq;
    ASSERT_OK(backend, cf_store_begin(st, &err));
    ASSERT_OK(backend, cf_store_audit_lock_head(st, &seq, r.prev_hash, &err));
    r.seq = seq + 1;
    r.time_us = time_us;
    r.actor = (char *)actor;
    r.action = (char *)action;
    r.object = (char *)object;
    r.details = (char *)"{\"n\":1}";
    for (int i = 0; i < CF_HASH_LEN; i++)
        r.hash[i] = (unsigned char)(r.seq * 31 + i);
    r.hash[0] = 0; /* zero bytes in the hash survive */
    ASSERT_OK(backend, cf_store_audit_insert(st, &r, &err));
    ASSERT_OK(backend, cf_store_commit(st, &err));
}

struct collect {
    int n;
    int64_t seqs[32];
    int stop_after;
    int bad_chain;
};

static int collect_cb(void *arg, const cf_audit_rec *r)
{
    struct collect *c = arg;
    if (c->n < 32)
        c->seqs[c->n] = r->seq;
    c->n++;
    /* Each record links to the hash the previous append stored. */
    if (r->hash[0] != 0 || r->hash[1] != (unsigned char)(r->seq * 31 + 1))
        c->bad_chain = 1;
    return c->stop_after && c->n >= c->stop_after;
}

static struct collect scan(int backend, cf_store *st, cf_audit_filter f)
{
    struct collect c = {0};
    cf_error err = {0};
    if (cf_store_audit_scan(st, &f, collect_cb, &c, &err) != CF_OK)
        fail_msg("%s: audit scan: %s", tu_backend_name(backend), err.msg);
    assert_int_equal(c.bad_chain, 0);
    return c;
}

static void assert_seqs(struct collect c, int n, const int64_t *want)
{
    assert_int_equal(c.n, n);
    for (int i = 0; i < n; i++)
        assert_int_equal(c.seqs[i], want[i]);
}

static void test_audit_head_lock_insert_scan_filters(void **state)
{
    (void)state;
    for (int b = 0; b < TU_BACKENDS; b++) {
        cf_store *st = open_fresh(b);
        cf_error err = {0};
        int64_t seq = -1;
        unsigned char hash[CF_HASH_LEN], zero[CF_HASH_LEN] = {0};

        ASSERT_OK(b, cf_store_audit_head(st, &seq, hash, &err));
        assert_int_equal(seq, 0);
        assert_memory_equal(hash, zero, CF_HASH_LEN);
        assert_int_equal(cf_store_audit_lock_head(st, &seq, hash, &err), CF_ERR_INTERNAL);

        append(b, st, 1000, "cli:root", "ca.init", "issuing-1");    /* 1 */
        append(b, st, 2000, "cli:root", "cert.issue", "dev-1");     /* 2 */
        append(b, st, 3000, "api:alice", "cert.issue", "dev-2");    /* 3 */
        append(b, st, 4000, "api:alice", "cert.revoke", "dev-1");   /* 4 */
        append(b, st, 5000, "cli:root", "device.suspend", "dev-1"); /* 5 */
        append(b, st, 6000, "cli:root", "certs", "dev-3");          /* 6: not a 'cert.' */

        ASSERT_OK(b, cf_store_audit_head(st, &seq, hash, &err));
        assert_int_equal(seq, 6);
        assert_int_equal(hash[1], (unsigned char)(6 * 31 + 1));
        ASSERT_OK(b, cf_store_begin(st, &err));
        ASSERT_OK(b, cf_store_audit_lock_head(st, &seq, hash, &err));
        assert_int_equal(seq, 6);
        cf_store_rollback(st);

        /* Each record's prev_hash is the hash of the one before. */
        assert_int_equal(raw_count(st, "SELECT COUNT(*) FROM audit a JOIN audit p"
                                       " ON p.seq = a.seq - 1 WHERE a.prev_hash = p.hash"),
                         5);

        const int64_t all[] = {1, 2, 3, 4, 5, 6};
        assert_seqs(scan(b, st, (cf_audit_filter){0}), 6, all);

        const int64_t by_alice[] = {3, 4};
        assert_seqs(scan(b, st, (cf_audit_filter){.actor = "api:alice"}), 2, by_alice);

        const int64_t certs[] = {2, 3, 4};
        assert_seqs(scan(b, st, (cf_audit_filter){.action = "cert.*"}), 3, certs);
        const int64_t issue[] = {2, 3};
        assert_seqs(scan(b, st, (cf_audit_filter){.action = "cert.issue"}), 2, issue);
        assert_seqs(scan(b, st, (cf_audit_filter){.action = "cert"}), 0, NULL);
        assert_seqs(scan(b, st, (cf_audit_filter){.action = "*"}), 6, all);

        const int64_t dev1[] = {2, 4, 5};
        assert_seqs(scan(b, st, (cf_audit_filter){.object = "dev-1"}), 3, dev1);

        const int64_t after3[] = {4, 5, 6};
        assert_seqs(scan(b, st, (cf_audit_filter){.since_seq = 3}), 3, after3);

        const int64_t first2[] = {1, 2};
        assert_seqs(scan(b, st, (cf_audit_filter){.limit = 2}), 2, first2);
        const int64_t after3_first2[] = {4, 5};
        assert_seqs(scan(b, st, (cf_audit_filter){.since_seq = 3, .limit = 2}), 2, after3_first2);

        /* since_us is inclusive, until_us exclusive. */
        const int64_t window[] = {2, 3};
        assert_seqs(scan(b, st, (cf_audit_filter){.since_us = 2000, .until_us = 4000}), 2, window);
        const int64_t from5[] = {5, 6};
        assert_seqs(scan(b, st, (cf_audit_filter){.since_us = 5000}), 2, from5);
        const int64_t before2[] = {1};
        assert_seqs(scan(b, st, (cf_audit_filter){.until_us = 2000}), 1, before2);

        const int64_t combined[] = {4};
        assert_seqs(scan(b, st,
                         (cf_audit_filter){.actor = "api:alice",
                                           .action = "cert.*",
                                           .object = "dev-1",
                                           .since_us = 1,
                                           .until_us = 9999,
                                           .since_seq = 1,
                                           .limit = 10}),
                    1, combined);

        /* A callback that returns non-zero stops the scan. */
        struct collect c = {.stop_after = 2};
        ASSERT_OK(b, cf_store_audit_scan(st, &(cf_audit_filter){0}, collect_cb, &c, &err));
        assert_int_equal(c.n, 2);

        /* A second record with a taken sequence number is refused. */
        cf_audit_rec dup = {
            .seq = 6, .time_us = 1, .actor = "x", .action = "x", .object = "x", .details = "{}"};
        ASSERT_OK(b, cf_store_begin(st, &err));
        ASSERT_OK(b, cf_store_audit_lock_head(st, &seq, hash, &err));
        assert_int_equal(cf_store_audit_insert(st, &dup, &err), CF_ERR_EXISTS);
        cf_store_rollback(st);
        cf_store_close(st);
    }
}

/* SQLite bulk mode: once the WAL has grown by 64 MiB, the store's own thread copies the
 * committed pages into the database while the writer goes on (the writer itself checkpoints
 * only past 512 MiB). */
static off_t file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? sb.st_size : -1;
}

static void test_sqlite_bulk_mode_checkpoints_in_the_background(void **state)
{
    (void)state;
    char *url = fresh_url(TU_SQLITE);
    const char *path = url + strlen("sqlite:");
    cf_store *st = open_url(TU_SQLITE, url);
    cf_error err;
    ASSERT_OK(TU_SQLITE, cf_store_bulk_mode(st, 1, &err));
    ASSERT_OK(TU_SQLITE, cf_store_bulk_mode(st, 1, &err)); /* twice: one thread */
    char key[32], *value = malloc(4001);
    assert_non_null(value);
    memset(value, 'v', 4000);
    value[4000] = 0;
    off_t before = file_size(path);
    ASSERT_OK(TU_SQLITE, cf_store_begin(st, &err));
    for (int i = 0; i < 18000; i++) { /* 70 MB */
        snprintf(key, sizeof key, "bulk-%d", i);
        ASSERT_OK(TU_SQLITE, cf_store_meta_set(st, key, value, &err));
    }
    ASSERT_OK(TU_SQLITE, cf_store_commit(st, &err));
    off_t after = file_size(path);
    for (int i = 0; i < 200 && after < before + 40000000; i++) {
        usleep(50000);
        after = file_size(path);
    }
    if (after < before + 40000000)
        fail_msg("the database file stayed at %lld bytes (from %lld): nothing checkpointed",
                 (long long)after, (long long)before);
    ASSERT_OK(TU_SQLITE, cf_store_bulk_mode(st, 0, &err));
    char *got = NULL;
    ASSERT_OK(TU_SQLITE, cf_store_meta_get(st, "bulk-17999", &got, &err));
    assert_string_equal(got, value);
    free(got);
    free(value);
    cf_store_close(st);
    free(url);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_migrates_to_latest_and_reopen_is_noop),
        cmocka_unit_test(test_concurrent_first_open_migrates_once),
        cmocka_unit_test(test_schema_newer_than_program_is_refused),
        cmocka_unit_test(test_unknown_url_scheme_is_invalid),
        cmocka_unit_test(test_file_that_is_not_sqlite_is_store_error),
        cmocka_unit_test(test_postgres_nothing_listening_is_unavailable_quickly),
        cmocka_unit_test(test_postgres_password_is_not_in_description),
        cmocka_unit_test(test_postgres_lost_connection_is_unavailable),
        cmocka_unit_test(test_driver_decodes_aggregates),
        cmocka_unit_test(test_meta_get_set_insert),
        cmocka_unit_test(test_meta_insert_conflict_keeps_transaction_usable),
        cmocka_unit_test(test_ca_insert_list_active_get_round_trip),
        cmocka_unit_test(test_ca_duplicate_name_exists),
        cmocka_unit_test(test_device_ensure_get_set_state_count),
        cmocka_unit_test(test_cert_insert_get_and_duplicate_serial),
        cmocka_unit_test(test_rollback_leaves_nothing),
        cmocka_unit_test(test_statements_run_later),
        cmocka_unit_test(test_audit_head_locked_ahead),
        cmocka_unit_test(test_lost_connection_is_made_again),
        cmocka_unit_test(test_postgres_deadlock_victim_may_try_again),
        cmocka_unit_test(test_commit_of_failed_transaction_is_an_error),
        cmocka_unit_test(test_audit_head_lock_insert_scan_filters),
        cmocka_unit_test(test_sqlite_bulk_mode_checkpoints_in_the_background),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
