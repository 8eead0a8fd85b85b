/* store.c - opening a store, schema migrations, transactions and settings. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "store/db.h"

/* Forward-only migrations, the same for both backends. Tokens the driver fills in:
 * @ID@ an auto-assigned 64-bit primary key, @BLOB@ a byte string, @ZERO32@ 32 zero bytes.
 * Never edit a migration that has shipped: add the next one. */
static const char *const migrations[] = {
    /* 1: the foundation */
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE owners (id @ID@, name TEXT NOT NULL UNIQUE, created_us BIGINT NOT NULL);"
    "CREATE TABLE manufacturers (id @ID@, name TEXT NOT NULL UNIQUE,"
    "  root_der @BLOB@ NOT NULL, created_us BIGINT NOT NULL);"
    "CREATE TABLE cas (id @ID@, name TEXT NOT NULL UNIQUE, role TEXT NOT NULL,"
    "  parent_id BIGINT REFERENCES cas(id), subject TEXT NOT NULL, key_ref TEXT NOT NULL,"
    "  der @BLOB@ NOT NULL, not_before BIGINT NOT NULL, not_after BIGINT NOT NULL,"
    "  status TEXT NOT NULL, created_us BIGINT NOT NULL);"
    "CREATE TABLE devices (id TEXT PRIMARY KEY, state TEXT NOT NULL,"
    "  owner_id BIGINT REFERENCES owners(id),"
    "  manufacturer_id BIGINT REFERENCES manufacturers(id),"
    "  batch TEXT, grp TEXT, model TEXT,"
    "  created_us BIGINT NOT NULL, updated_us BIGINT NOT NULL);"
    "CREATE TABLE certificates (serial TEXT NOT NULL, ca_id BIGINT NOT NULL REFERENCES cas(id),"
    "  device_id TEXT REFERENCES devices(id), subject TEXT NOT NULL,"
    "  not_before BIGINT NOT NULL, not_after BIGINT NOT NULL, issued_us BIGINT NOT NULL,"
    "  der @BLOB@ NOT NULL, status TEXT NOT NULL, reason BIGINT, revoked_us BIGINT);"
    "CREATE UNIQUE INDEX certificates_serial ON certificates (serial);"
    "CREATE INDEX certificates_device ON certificates (device_id);"
    "CREATE INDEX certificates_not_after ON certificates (not_after);"
    "CREATE TABLE audit (seq @SEQ@, time_us BIGINT NOT NULL,"
    "  actor TEXT NOT NULL, action TEXT NOT NULL, object TEXT NOT NULL,"
    "  details TEXT NOT NULL, prev_hash @BLOB@ NOT NULL, hash @BLOB@ NOT NULL);"
    "CREATE INDEX audit_time ON audit (time_us);"
    "CREATE TABLE audit_head (id BIGINT PRIMARY KEY, seq BIGINT NOT NULL,"
    "  hash @BLOB@ NOT NULL);"
    "INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, @ZERO32@);",

    /* 2: onboarding and ownership. A device's id is its secure element's unique id;
     * owner_id NULL means the vendor (the organisation running certfleet). */
    "CREATE TABLE manufacturer_certs (id @ID@,"
    "  manufacturer_id BIGINT NOT NULL REFERENCES manufacturers(id),"
    "  kind TEXT NOT NULL, x5t TEXT NOT NULL, subject TEXT NOT NULL, der @BLOB@ NOT NULL,"
    "  not_before BIGINT NOT NULL, not_after BIGINT NOT NULL, created_us BIGINT NOT NULL);"
    "CREATE UNIQUE INDEX manufacturer_certs_x5t ON manufacturer_certs (manufacturer_id, x5t);"
    "CREATE TABLE imports (id @ID@, manufacturer_id BIGINT NOT NULL REFERENCES manufacturers(id),"
    "  sha256 TEXT NOT NULL, source TEXT NOT NULL, batch TEXT, actor TEXT NOT NULL,"
    "  started_us BIGINT NOT NULL, finished_us BIGINT,"
    "  entries BIGINT NOT NULL, added BIGINT NOT NULL, present BIGINT NOT NULL,"
    "  rejected BIGINT NOT NULL, conflicts BIGINT NOT NULL);"
    "ALTER TABLE devices ADD COLUMN part_number TEXT;"
    "ALTER TABLE devices ADD COLUMN birth_der @BLOB@;"
    "ALTER TABLE devices ADD COLUMN key_fpr TEXT;"
    "ALTER TABLE devices ADD COLUMN import_id BIGINT REFERENCES imports(id);"
    "ALTER TABLE devices ADD COLUMN provisioned_us BIGINT;"
    "ALTER TABLE devices ADD COLUMN claim_hash @BLOB@;"
    "ALTER TABLE devices ADD COLUMN blocked BIGINT NOT NULL DEFAULT 0;"
    "CREATE INDEX devices_owner ON devices (owner_id, state) WHERE owner_id IS NOT NULL;"
    "CREATE INDEX devices_batch ON devices (batch) WHERE batch IS NOT NULL;"
    "CREATE INDEX devices_grp ON devices (grp) WHERE grp IS NOT NULL;"
    "CREATE INDEX devices_manufacturer ON devices (manufacturer_id)"
    " WHERE manufacturer_id IS NOT NULL;"
    "ALTER TABLE certificates ADD COLUMN owner_id BIGINT REFERENCES owners(id);"
    "CREATE TABLE tokens (id @ID@, owner_id BIGINT REFERENCES owners(id), role TEXT NOT NULL,"
    "  hash @BLOB@ NOT NULL, label TEXT, created_us BIGINT NOT NULL, revoked_us BIGINT);"
    "CREATE UNIQUE INDEX tokens_hash ON tokens (hash);"
    "CREATE TABLE claim_attempts (id @ID@, device_id TEXT, owner_id BIGINT,"
    "  time_us BIGINT NOT NULL, ok BIGINT NOT NULL);"
    "CREATE INDEX claim_attempts_device ON claim_attempts (device_id, time_us);"
    "CREATE INDEX claim_attempts_owner ON claim_attempts (owner_id, time_us);",

    /* 3: a device's history (`device show`, the API's device view) reads its audit records by
     * object; without this every such read scans the whole log. */
    "CREATE INDEX audit_object ON audit (object, seq);",

    /* 4: enrollment over EST. A device authenticates with its birth certificate, found by
     * its key; an owner's enrollment policy; requests held for approval; certificates
     * superseded by a re-enrollment, revoked when their grace period ends. */
    "CREATE INDEX devices_key_fpr ON devices (key_fpr) WHERE key_fpr IS NOT NULL;"
    "ALTER TABLE devices ADD COLUMN enroll_pending_us BIGINT;"
    "ALTER TABLE devices ADD COLUMN enroll_approved_us BIGINT;"
    "CREATE TABLE enroll_policies (owner_id BIGINT PRIMARY KEY REFERENCES owners(id),"
    "  require_approval BIGINT NOT NULL, serverkeygen BIGINT NOT NULL,"
    "  allow_key_reuse BIGINT NOT NULL, allow_birth_key BIGINT NOT NULL,"
    "  reenroll_grace_s BIGINT NOT NULL, updated_us BIGINT NOT NULL);"
    "ALTER TABLE certificates ADD COLUMN superseded_by TEXT;"
    "ALTER TABLE certificates ADD COLUMN supersede_due BIGINT;"
    "CREATE INDEX certificates_supersede_due ON certificates (supersede_due)"
    " WHERE supersede_due IS NOT NULL;",

    /* 5: revocation. A revoked certificate's CRL entry is encoded once, when it is revoked,
     * and kept in crl_entries (narrow, so a CRL of a million entries is one sequential
     * read); status_seq orders status changes by the audit sequence number of the operation
     * (delta CRLs, OCSP caches, the change feed). */
    "ALTER TABLE certificates ADD COLUMN invalidity_us BIGINT;"
    "ALTER TABLE certificates ADD COLUMN status_seq BIGINT;"
    "ALTER TABLE certificates ADD COLUMN crl_shard BIGINT;"
    "ALTER TABLE cas ADD COLUMN revoked_us BIGINT;"
    "ALTER TABLE cas ADD COLUMN reason BIGINT;"
    "CREATE INDEX certificates_ca ON certificates (ca_id, status);"
    "CREATE INDEX certificates_status_seq ON certificates (status_seq)"
    " WHERE status_seq IS NOT NULL;"
    "CREATE TABLE crl_entries (id @ID@, ca_id BIGINT NOT NULL REFERENCES cas(id),"
    "  serial TEXT NOT NULL, shard BIGINT NOT NULL, seq BIGINT NOT NULL,"
    "  entry @BLOB@ NOT NULL);"
    "CREATE UNIQUE INDEX crl_entries_serial ON crl_entries (ca_id, serial);"
    "CREATE INDEX crl_entries_seq ON crl_entries (ca_id, seq);"
    "CREATE INDEX crl_entries_shard ON crl_entries (ca_id, shard, seq) WHERE shard > 0;"
    "CREATE TABLE crl_removals (id @ID@, ca_id BIGINT NOT NULL REFERENCES cas(id),"
    "  serial TEXT NOT NULL, seq BIGINT NOT NULL);"
    "CREATE INDEX crl_removals_seq ON crl_removals (ca_id, seq);"
    "CREATE TABLE crl_state (ca_id BIGINT PRIMARY KEY REFERENCES cas(id),"
    "  number BIGINT NOT NULL, base_number BIGINT, base_seq BIGINT,"
    "  shards BIGINT NOT NULL DEFAULT 0);"
    "CREATE TABLE changes (seq BIGINT PRIMARY KEY, time_us BIGINT NOT NULL, kind TEXT NOT NULL,"
    "  ca_id BIGINT, serial TEXT, device_id TEXT, count BIGINT NOT NULL, details TEXT NOT NULL);",
};

#define MIGRATION_COUNT ((int)(sizeof migrations / sizeof migrations[0]))

int cf_store_schema_latest(void)
{
    return MIGRATION_COUNT;
}

/* Replaces every token in sql for the backend; returns a new string. */
static char *dialect(cf_store_kind kind, const char *sql)
{
    static const char *zero_sqlite =
        "X'0000000000000000000000000000000000000000000000000000000000000000'";
    static const char *zero_pg =
        "'\\x0000000000000000000000000000000000000000000000000000000000000000'::bytea";
    const char *tokens[][3] = {
        {"@ID@", "INTEGER PRIMARY KEY", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"},
        {"@BLOB@", "BLOB", "BYTEA"},
        /* a given 64-bit key; in SQLite the rowid itself, which saves an index */
        {"@SEQ@", "INTEGER PRIMARY KEY", "BIGINT PRIMARY KEY"},
        {"@ZERO32@", zero_sqlite, zero_pg},
    };
    size_t cap = strlen(sql) * 4 + 1024;
    char *out = malloc(cap), *o = out;
    if (!out)
        return NULL;
    const char *p = sql;
    while (*p) {
        int hit = 0;
        for (size_t t = 0; t < sizeof tokens / sizeof tokens[0]; t++) {
            size_t n = strlen(tokens[t][0]);
            if (strncmp(p, tokens[t][0], n) == 0) {
                const char *rep = tokens[t][kind == CF_STORE_SQLITE ? 1 : 2];
                size_t rn = strlen(rep);
                memcpy(o, rep, rn);
                o += rn;
                p += n;
                hit = 1;
                break;
            }
        }
        if (!hit)
            *o++ = *p++;
    }
    *o = '\0';
    return out;
}

cf_err cf_db_run(cf_store *st, cf_stmt *s, cf_error *err)
{
    int row;
    cf_err rc = st->ops->step(s, &row, err);
    st->ops->done(s);
    return rc;
}

cf_err cf_db_run_later(cf_store *st, cf_stmt *s, const char *exists, cf_error *err)
{
    if (st->in_txn && st->ops->run_later)
        return st->ops->run_later(s, exists, err);
    cf_err rc = cf_db_run(st, s, err);
    if (rc == CF_ERR_EXISTS && exists)
        cf_error_set(err, rc, "%s", exists);
    return rc;
}

int cf_db_prefetch(cf_store *st, cf_stmt *s)
{
    return st->in_txn && st->ops->prefetch && st->ops->prefetch(s);
}

unsigned char *cf_db_blob_dup(const unsigned char *b, size_t len)
{
    unsigned char *d = malloc(len ? len : 1);
    if (!d)
        abort();
    if (len)
        memcpy(d, b, len);
    return d;
}

cf_err cf_db_collect(cf_store *st, cf_stmt *s, size_t elem, cf_db_row_fn read, void *arg,
                     cf_db_clear_fn clear, void **out, size_t *n, cf_error *err)
{
    unsigned char *list = NULL;
    size_t count = 0, cap = 0;
    int row;
    cf_err rc;
    while ((rc = st->ops->step(s, &row, err)) == CF_OK && row) {
        if (count == cap) {
            size_t ncap = cap ? 2 * cap : 16;
            unsigned char *nl = realloc(list, ncap * elem);
            if (!nl) {
                rc = cf_error_set(err, CF_ERR_NOMEM, "out of memory");
                break;
            }
            list = nl;
            cap = ncap;
        }
        memset(list + count * elem, 0, elem);
        read(st, s, list + count * elem, arg);
        count++;
    }
    st->ops->done(s);
    if (rc != CF_OK) {
        for (size_t i = 0; i < count; i++)
            clear(list + i * elem);
        free(list);
        return rc;
    }
    *out = list;
    *n = count;
    return CF_OK;
}

cf_err cf_db_one(cf_store *st, cf_stmt *s, cf_error *err)
{
    int row;
    cf_err rc = st->ops->step(s, &row, err);
    if (rc == CF_OK && !row)
        rc = cf_error_set(err, CF_ERR_NOT_FOUND, "not found");
    if (rc != CF_OK)
        st->ops->done(s);
    return rc;
}

cf_err cf_db_int64(cf_store *st, cf_stmt *s, int64_t *out, cf_error *err)
{
    cf_err rc = cf_db_one(st, s, err);
    if (rc != CF_OK)
        return rc;
    *out = st->ops->col_int64(s, 0);
    st->ops->done(s);
    return CF_OK;
}

cf_err cf_store_schema_version(cf_store *st, int64_t *version, cf_error *err)
{
    cf_stmt *s;
    cf_err rc =
        cf_db_prepare(st, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &s, err);
    if (rc != CF_OK)
        return rc;
    return cf_db_int64(st, s, version, err);
}

/* How many tables the database holds, and whether schema_migrations is one of them. */
static cf_err count_tables(cf_store *st, int64_t *ours, int64_t *all, cf_error *err)
{
    const char *sql =
        st->kind == CF_STORE_SQLITE
            ? "SELECT COALESCE(SUM(name = 'schema_migrations'), 0), COUNT(*)"
              " FROM sqlite_master WHERE type = 'table'"
            : "SELECT CAST(COALESCE(SUM(CASE WHEN table_name = 'schema_migrations' THEN 1"
              " ELSE 0 END), 0) AS BIGINT), COUNT(*) FROM information_schema.tables"
              " WHERE table_schema = current_schema()";
    cf_stmt *s;
    cf_err rc = st->ops->prepare(st, sql, 0, &s, err);
    if (rc != CF_OK)
        return rc;
    if ((rc = cf_db_one(st, s, err)) != CF_OK)
        return rc;
    *ours = st->ops->col_int64(s, 0);
    *all = st->ops->col_int64(s, 1);
    st->ops->done(s);
    return CF_OK;
}

static cf_err migrate(cf_store *st, cf_error *err)
{
    int64_t ours = 0, all = 0, current = 0;
    cf_err rc = count_tables(st, &ours, &all, err);
    if (rc != CF_OK)
        return rc;
    /* Never add tables to another program's database. */
    if (!ours && all)
        return cf_error_set(err, CF_ERR_STORE,
                            "%s: not a certfleet database (it holds %lld tables of something"
                            " else); nothing was changed",
                            st->desc, (long long)all);
    /* An up-to-date store is opened without writing, so read-only roles and replicas work. */
    if (ours && (rc = cf_store_schema_version(st, &current, err)) == CF_OK &&
        current == MIGRATION_COUNT)
        return CF_OK;
    if ((rc = cf_store_begin(st, err)) != CF_OK)
        return rc;
    if (st->kind == CF_STORE_POSTGRES) {
        /* Processes opening one database at once take turns migrating it. */
        rc = st->ops->exec(st, "SELECT pg_advisory_xact_lock(7263540)", err);
        if (rc != CF_OK)
            goto out;
    }
    rc = st->ops->exec(st,
                       "CREATE TABLE IF NOT EXISTS schema_migrations"
                       " (version BIGINT PRIMARY KEY, applied_us BIGINT NOT NULL)",
                       err);
    if (rc != CF_OK)
        goto out;
    int64_t version = 0;
    if ((rc = cf_store_schema_version(st, &version, err)) != CF_OK)
        goto out;
    if (version > MIGRATION_COUNT) {
        rc = cf_error_set(err, CF_ERR_STORE,
                          "%s: schema version %lld is newer than this certfleet knows (%d);"
                          " upgrade certfleet",
                          st->desc, (long long)version, MIGRATION_COUNT);
        goto out;
    }
    for (int v = (int)version + 1; v <= MIGRATION_COUNT; v++) {
        char *sql = dialect(st->kind, migrations[v - 1]);
        if (!sql) {
            rc = cf_error_set(err, CF_ERR_NOMEM, "out of memory");
            goto out;
        }
        rc = st->ops->exec(st, sql, err);
        free(sql);
        if (rc != CF_OK) {
            cf_error_prefix(err, "migration %d", v);
            goto out;
        }
        cf_stmt *s;
        rc = st->ops->prepare(
            st, "INSERT INTO schema_migrations (version, applied_us) VALUES (?, ?)", 0, &s, err);
        if (rc != CF_OK)
            goto out;
        st->ops->bind_int64(s, 1, v);
        st->ops->bind_int64(s, 2, cf_time_now_us());
        if ((rc = cf_db_run(st, s, err)) != CF_OK)
            goto out;
    }
    rc = cf_store_commit(st, err);
out:
    if (rc != CF_OK)
        cf_store_rollback(st);
    return rc;
}

cf_err cf_store_open(const char *url, cf_store **out, cf_error *err)
{
    cf_err rc;
    cf_store *st = NULL;
    if (strncmp(url, "sqlite:", 7) == 0)
        rc = cf_db_sqlite_open(url + 7, &st, err);
    else if (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0)
        rc = cf_db_pg_open(url, &st, err);
    else
        return cf_error_set(err, CF_ERR_INVALID,
                            "store URL \"%s\": expected sqlite:PATH or postgresql://...", url);
    if (rc != CF_OK)
        return rc;
    if ((rc = migrate(st, err)) != CF_OK) {
        if (!strstr(err->msg, st->desc))
            cf_error_prefix(err, "%s", st->desc);
        st->ops->close(st);
        return rc;
    }
    *out = st;
    return CF_OK;
}

void cf_store_close(cf_store *st)
{
    if (!st)
        return;
    if (st->in_txn)
        cf_store_rollback(st);
    st->ops->close(st);
}

/* The bell's counter, mapped from st->bell_path at first use (made then if need be, so a
 * store that never touches the change feed leaves no file); NULL when there is none. */
static int64_t *bell(cf_store *st)
{
    if (st->bell || !st->bell_path || st->bell_failed)
        return st->bell;
    struct stat sb;
    void *m = MAP_FAILED;
    int fd = open(st->bell_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    /* Growing an empty file to 8 bytes zeroes them; a file already that long is left as it
     * is, so processes mapping it together cannot reset each other's count. */
    if (fd >= 0 && fstat(fd, &sb) == 0 &&
        (sb.st_size >= (off_t)sizeof(int64_t) || ftruncate(fd, (off_t)sizeof(int64_t)) == 0))
        m = mmap(NULL, sizeof(int64_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (fd >= 0)
        close(fd);
    if (m == MAP_FAILED) {
        st->bell_failed = 1;
        cf_log(CF_LOG_WARN,
               "store: no change feed bell at %s (%s): every OCSP and CRL request"
               " reads the feed's head",
               st->bell_path, strerror(errno));
        return NULL;
    }
    return st->bell = m;
}

int64_t cf_store_change_bell(cf_store *st)
{
    int64_t *b = bell(st);
    return b ? __atomic_load_n(b, __ATOMIC_ACQUIRE) & INT64_MAX : -1;
}

cf_store_kind cf_store_get_kind(const cf_store *st)
{
    return st->kind;
}

const char *cf_store_describe(const cf_store *st)
{
    return st->desc;
}

cf_err cf_store_begin(cf_store *st, cf_error *err)
{
    if (st->in_txn)
        return cf_error_set(err, CF_ERR_INTERNAL, "store: transaction already open");
    /* SQLite: take the write lock now, so the transaction never fails half-way on a lock
     * upgrade. */
    cf_err rc = st->ops->exec(st, st->kind == CF_STORE_SQLITE ? "BEGIN IMMEDIATE" : "BEGIN", err);
    if (rc == CF_OK)
        st->in_txn = 1;
    return rc;
}

cf_err cf_store_bulk_mode(cf_store *st, int on, cf_error *err)
{
    return st->ops->bulk ? st->ops->bulk(st, on, err) : CF_OK;
}

cf_err cf_store_read_begin(cf_store *st, cf_error *err)
{
    if (st->in_txn)
        return cf_error_set(err, CF_ERR_INTERNAL, "store: transaction already open");
    if (st->kind != CF_STORE_SQLITE)
        return CF_OK;
    cf_err rc = st->ops->exec(st, "BEGIN", err);
    if (rc == CF_OK)
        st->in_read = 1;
    return rc;
}

void cf_store_read_end(cf_store *st)
{
    if (st->in_read) {
        cf_error ignored;
        st->ops->exec(st, "COMMIT", &ignored);
        st->in_read = 0;
    }
}

cf_err cf_store_commit(cf_store *st, cf_error *err)
{
    cf_err rc = cf_db_audit_commit(st, err);
    cf_db_audit_reset(st);
    if (rc != CF_OK) {
        cf_store_rollback(st);
        return rc;
    }
    st->in_txn = 0;
    if (st->bell_due && bell(st))
        __atomic_add_fetch(st->bell, 1, __ATOMIC_SEQ_CST);
    st->bell_due = 0;
    return CF_OK;
}

void cf_store_rollback(cf_store *st)
{
    cf_db_audit_reset(st);
    st->bell_due = 0;
    if (!st->in_txn)
        return;
    st->ops->exec(st, "ROLLBACK", NULL);
    st->in_txn = 0;
}

cf_err cf_store_meta_get(cf_store *st, const char *key, char **value, cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st, "SELECT value FROM meta WHERE key = ?", &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_text(s, 1, key);
    if ((rc = cf_db_one(st, s, err)) != CF_OK) {
        if (rc == CF_ERR_NOT_FOUND)
            cf_error_set(err, rc, "setting %s is not set", key);
        return rc;
    }
    *value = cf_strdup(st->ops->col_text(s, 0));
    st->ops->done(s);
    return CF_OK;
}

static cf_err meta_write(cf_store *st, const char *sql, const char *key, const char *value,
                         cf_error *err)
{
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st, sql, &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_text(s, 1, key);
    st->ops->bind_text(s, 2, value);
    return cf_db_run(st, s, err);
}

cf_err cf_store_meta_set(cf_store *st, const char *key, const char *value, cf_error *err)
{
    return meta_write(st,
                      "INSERT INTO meta (key, value) VALUES (?, ?)"
                      " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                      key, value, err);
}

cf_err cf_store_meta_insert(cf_store *st, const char *key, const char *value, cf_error *err)
{
    /* DO NOTHING rather than a unique violation: in PostgreSQL a failed statement aborts the
     * transaction, and the loser of the race must still be able to read the winner's value. */
    cf_stmt *s;
    cf_err rc = cf_db_prepare(st,
                              "INSERT INTO meta (key, value) VALUES (?, ?)"
                              " ON CONFLICT (key) DO NOTHING RETURNING key",
                              &s, err);
    if (rc != CF_OK)
        return rc;
    st->ops->bind_text(s, 1, key);
    st->ops->bind_text(s, 2, value);
    int row = 0;
    rc = st->ops->step(s, &row, err);
    int inserted = row;
    if (rc == CF_OK && row)
        rc = st->ops->step(s, &row, err); /* finish the statement before it is reused */
    st->ops->done(s);
    if (rc == CF_OK && !inserted)
        rc = cf_error_set(err, CF_ERR_EXISTS, "setting %s is already set", key);
    return rc;
}
