/* db_sqlite.c - the SQLite driver: WAL, foreign keys, busy timeout, cached statements. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "core/util.h"
#include "store/db.h"

#define BUSY_TIMEOUT_MS 10000 /* how long a statement waits for another connection's lock */

#define SQLITE_CACHE_MAX 128

struct cf_stmt {
    sqlite3_stmt *stmt;
    int cached;
    struct sqlite_store *owner;
};

typedef struct sqlite_store {
    cf_store base;
    sqlite3 *db;
    struct {
        const char *sql; /* the literal's address is the key */
        struct cf_stmt *stmt;
    } cache[SQLITE_CACHE_MAX];
    size_t ncache;
    char *path;
    /* Bulk mode (sq_bulk): a thread with a connection of its own checkpoints the WAL. */
    struct {
        int running, stop, due;
        int done_at; /* the WAL's size in pages when the last checkpoint had copied it */
        sqlite3 *db;
        pthread_t tid;
        pthread_mutex_t mu;
        pthread_cond_t cv;
    } ckpt;
} sqlite_store;

static cf_err map_rc(sqlite_store *ss, int rc, const char *what, cf_error *err)
{
    int ext = sqlite3_extended_errcode(ss->db);
    if (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY)
        return cf_error_set(err, CF_ERR_EXISTS, "%s: %s", what, sqlite3_errmsg(ss->db));
    if (rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT)
        return cf_error_set(err, CF_ERR_STORE, "%s: %s is not a valid certfleet database (%s)",
                            what, ss->base.desc, sqlite3_errmsg(ss->db));
    return cf_error_set(err, CF_ERR_STORE, "%s: %s", what, sqlite3_errmsg(ss->db));
}

static cf_err sq_exec(cf_store *st, const char *sql, cf_error *err)
{
    sqlite_store *ss = (sqlite_store *)st;
    int rc = sqlite3_exec(ss->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return map_rc(ss, rc, "store", err);
    return CF_OK;
}

static cf_err sq_prepare(cf_store *st, const char *sql, int cached, cf_stmt **out, cf_error *err)
{
    sqlite_store *ss = (sqlite_store *)st;
    if (cached) {
        for (size_t i = 0; i < ss->ncache; i++) {
            if (ss->cache[i].sql == sql) {
                *out = ss->cache[i].stmt;
                return CF_OK;
            }
        }
    }
    struct cf_stmt *s = calloc(1, sizeof *s);
    if (!s)
        return cf_error_set(err, CF_ERR_NOMEM, "store: out of memory");
    int rc = sqlite3_prepare_v2(ss->db, sql, -1, &s->stmt, NULL);
    if (rc != SQLITE_OK) {
        free(s);
        return map_rc(ss, rc, "store: prepare", err);
    }
    s->owner = ss;
    if (cached && ss->ncache < SQLITE_CACHE_MAX) {
        s->cached = 1;
        ss->cache[ss->ncache].sql = sql;
        ss->cache[ss->ncache].stmt = s;
        ss->ncache++;
    }
    *out = s;
    return CF_OK;
}

static void sq_bind_int64(cf_stmt *s, int idx, int64_t v)
{
    sqlite3_bind_int64(s->stmt, idx, v);
}

static void sq_bind_text(cf_stmt *s, int idx, const char *v)
{
    if (v)
        sqlite3_bind_text(s->stmt, idx, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s->stmt, idx);
}

static void sq_bind_blob(cf_stmt *s, int idx, const void *v, size_t len)
{
    sqlite3_bind_blob64(s->stmt, idx, v ? v : "", len, SQLITE_STATIC);
}

static void sq_bind_null(cf_stmt *s, int idx)
{
    sqlite3_bind_null(s->stmt, idx);
}

static cf_err sq_step(cf_stmt *s, int *row, cf_error *err)
{
    int rc = sqlite3_step(s->stmt);
    if (rc == SQLITE_ROW) {
        *row = 1;
        return CF_OK;
    }
    if (rc == SQLITE_DONE) {
        *row = 0;
        return CF_OK;
    }
    *row = 0;
    return map_rc(s->owner, rc, "store", err);
}

static int sq_col_null(cf_stmt *s, int col)
{
    return sqlite3_column_type(s->stmt, col) == SQLITE_NULL;
}

static int64_t sq_col_int64(cf_stmt *s, int col)
{
    return sqlite3_column_int64(s->stmt, col);
}

static const char *sq_col_text(cf_stmt *s, int col)
{
    const unsigned char *t = sqlite3_column_text(s->stmt, col);
    return t ? (const char *)t : "";
}

static const unsigned char *sq_col_blob(cf_stmt *s, int col, size_t *len)
{
    const unsigned char *b = sqlite3_column_blob(s->stmt, col);
    *len = (size_t)sqlite3_column_bytes(s->stmt, col);
    return b;
}

static void sq_done(cf_stmt *s)
{
    if (!s)
        return;
    if (s->cached) {
        sqlite3_reset(s->stmt);
        sqlite3_clear_bindings(s->stmt);
        return;
    }
    sqlite3_finalize(s->stmt);
    free(s);
}

/* ---- bulk mode ---- */

/* A bulk writer's transactions each dirty thousands of pages. Checkpointing them in the
 * writer's own commit (SQLite's automatic checkpoint) stalls the writer for the copy and
 * the fsync, and whatever feeds it with it. Here the writer's WAL hook, called after each
 * commit with the WAL's size, wakes a thread with a connection of its own once the WAL has
 * grown by CKPT_PAGES since the last checkpoint; its PASSIVE checkpoint copies what is
 * committed while the writer goes on, and the WAL starts over once the writer begins a
 * transaction after one has caught up. Should the thread fall CKPT_BACKSTOP pages behind,
 * the writer checkpoints itself, as SQLite would. */
#define CKPT_PAGES 16384
#define CKPT_BACKSTOP (8 * CKPT_PAGES)

static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    sqlite_store *ss = arg;
    if (frames >= CKPT_BACKSTOP) {
        sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        return SQLITE_OK;
    }
    pthread_mutex_lock(&ss->ckpt.mu);
    if (frames >= ss->ckpt.done_at + CKPT_PAGES || frames < ss->ckpt.done_at) {
        ss->ckpt.due = 1;
        pthread_cond_signal(&ss->ckpt.cv);
    }
    pthread_mutex_unlock(&ss->ckpt.mu);
    return SQLITE_OK;
}

static void *checkpointer(void *arg)
{
    sqlite_store *ss = arg;
    pthread_mutex_lock(&ss->ckpt.mu);
    for (;;) {
        while (!ss->ckpt.stop && !ss->ckpt.due)
            pthread_cond_wait(&ss->ckpt.cv, &ss->ckpt.mu);
        if (ss->ckpt.stop)
            break;
        ss->ckpt.due = 0;
        pthread_mutex_unlock(&ss->ckpt.mu);
        int log = 0, copied = 0;
        /* Busy or failed: the next wake-up (or the writer's backstop) does it. */
        if (sqlite3_wal_checkpoint_v2(ss->ckpt.db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log,
                                      &copied) != SQLITE_OK)
            copied = 0;
        pthread_mutex_lock(&ss->ckpt.mu);
        ss->ckpt.done_at = copied > 0 ? copied : 0;
    }
    pthread_mutex_unlock(&ss->ckpt.mu);
    return NULL;
}

static void checkpointer_stop(sqlite_store *ss)
{
    if (!ss->ckpt.running)
        return;
    sqlite3_wal_hook(ss->db, NULL, NULL);
    pthread_mutex_lock(&ss->ckpt.mu);
    ss->ckpt.stop = 1;
    pthread_cond_signal(&ss->ckpt.cv);
    pthread_mutex_unlock(&ss->ckpt.mu);
    pthread_join(ss->ckpt.tid, NULL);
    pthread_mutex_destroy(&ss->ckpt.mu);
    pthread_cond_destroy(&ss->ckpt.cv);
    sqlite3_close(ss->ckpt.db);
    memset(&ss->ckpt, 0, sizeof ss->ckpt);
}

/* Starts the checkpointer; 0 when it cannot (the writer then checkpoints as usual). */
static int checkpointer_start(sqlite_store *ss)
{
    if (!ss->path)
        return 0;
    if (sqlite3_open_v2(ss->path, &ss->ckpt.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        sqlite3_close(ss->ckpt.db);
        ss->ckpt.db = NULL;
        return 0;
    }
    sqlite3_busy_timeout(ss->ckpt.db, 1000);
    /* A connection learns that the database is in WAL mode when it first reads it. */
    if (sqlite3_exec(ss->ckpt.db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL", NULL, NULL,
                     NULL) != SQLITE_OK)
        goto fail;
    if (pthread_mutex_init(&ss->ckpt.mu, NULL) != 0)
        goto fail;
    if (pthread_cond_init(&ss->ckpt.cv, NULL) != 0) {
        pthread_mutex_destroy(&ss->ckpt.mu);
        goto fail;
    }
    if (pthread_create(&ss->ckpt.tid, NULL, checkpointer, ss) != 0) {
        pthread_cond_destroy(&ss->ckpt.cv);
        pthread_mutex_destroy(&ss->ckpt.mu);
        goto fail;
    }
    ss->ckpt.running = 1;
    return 1;
fail:
    sqlite3_close(ss->ckpt.db);
    ss->ckpt.db = NULL;
    return 0;
}

static cf_err sq_bulk(cf_store *st, int on, cf_error *err)
{
    sqlite_store *ss = (sqlite_store *)st;
    if (!on) {
        checkpointer_stop(ss); /* the PRAGMA below installs SQLite's own hook again */
        return sq_exec(st, "PRAGMA cache_size = -2000; PRAGMA wal_autocheckpoint = 1000", err);
    }
    if (ss->ckpt.running)
        return CF_OK;
    cf_err rc = sq_exec(st, "PRAGMA cache_size = -65536; PRAGMA wal_autocheckpoint = 16384", err);
    if (rc == CF_OK && checkpointer_start(ss))
        sqlite3_wal_hook(ss->db, wal_hook, ss); /* replaces the automatic checkpoint */
    return rc;
}

static void sq_close(cf_store *st)
{
    sqlite_store *ss = (sqlite_store *)st;
    checkpointer_stop(ss);
    for (size_t i = 0; i < ss->ncache; i++) {
        sqlite3_finalize(ss->cache[i].stmt->stmt);
        free(ss->cache[i].stmt);
    }
    sqlite3_close(ss->db);
    if (ss->base.bell)
        munmap(ss->base.bell, sizeof *ss->base.bell);
    free(ss->base.bell_path);
    free(ss->path);
    free(ss);
}

static const struct cf_db_ops sqlite_ops = {
    .exec = sq_exec,
    .prepare = sq_prepare,
    .bind_int64 = sq_bind_int64,
    .bind_text = sq_bind_text,
    .bind_blob = sq_bind_blob,
    .bind_null = sq_bind_null,
    .step = sq_step,
    .col_null = sq_col_null,
    .col_int64 = sq_col_int64,
    .col_text = sq_col_text,
    .col_blob = sq_col_blob,
    .done = sq_done,
    .close = sq_close,
    .bulk = sq_bulk,
};

cf_err cf_db_sqlite_open(const char *path, cf_store **out, cf_error *err)
{
    sqlite_store *ss = calloc(1, sizeof *ss);
    if (!ss)
        return cf_error_set(err, CF_ERR_NOMEM, "store: out of memory");
    ss->base.ops = &sqlite_ops;
    ss->base.kind = CF_STORE_SQLITE;
    snprintf(ss->base.desc, sizeof ss->base.desc, "sqlite:%s", path);
    int rc = sqlite3_open_v2(
        path, &ss->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        cf_error_set(err, CF_ERR_STORE, "%s: cannot open: %s", path,
                     ss->db ? sqlite3_errmsg(ss->db) : sqlite3_errstr(rc));
        sqlite3_close(ss->db);
        free(ss);
        return CF_ERR_STORE;
    }
    sqlite3_busy_timeout(ss->db, BUSY_TIMEOUT_MS);
    /* WAL with synchronous=NORMAL: a committed transaction survives a crash of the
     * process (kill -9); FULL would also fsync the WAL on each commit for power loss. A new
     * database turns to WAL under an exclusive lock, and when another connection does the
     * same at that moment SQLite answers busy without its busy handler: this waits as the
     * handler would. */
    rc = sqlite3_exec(ss->db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
    for (int waited = 0; rc == SQLITE_BUSY && waited < BUSY_TIMEOUT_MS; waited += 5) {
        nanosleep(&(struct timespec){.tv_nsec = 5000000}, NULL);
        rc = sqlite3_exec(ss->db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
    }
    cf_err e = rc != SQLITE_OK
                   ? map_rc(ss, rc, "store", err)
                   : sq_exec(&ss->base, "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;", err);
    if (e != CF_OK) {
        if (err && !strstr(err->msg, path))
            cf_error_prefix(err, "%s", path);
        sq_close(&ss->base);
        return e;
    }
    /* The change feed's bell (cf_store_change_bell) lives beside the database; no bell for
     * an in-memory or URI database. */
    char bell[PATH_MAX];
    if (*path && strcmp(path, ":memory:") != 0 && strncmp(path, "file:", 5) != 0 &&
        snprintf(bell, sizeof bell, "%s-changes", path) < (int)sizeof bell) {
        ss->base.bell_path = cf_strdup(bell);
        ss->path = cf_strdup(path);
    }
    *out = &ss->base;
    return CF_OK;
}
