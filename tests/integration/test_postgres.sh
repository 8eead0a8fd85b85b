# test_postgres.sh - certfleet on a real PostgreSQL server, through the real binary: init,
# issue, chain export, openssl verify, audit verify and status; several processes issuing at
# once into one database (serials unique, the audit chain unbroken and complete); a second
# init refused without a change; two inits racing on a new database (one wins); and a
# server that is not there reported at once.
. "$CF_SOURCE_DIR/tests/lib/common.sh"
. "$CF_SOURCE_DIR/tests/lib/pg.sh"

PY=$(cf_python)
pg_start "$T/pg"
DATA="$T/data"

# psql_val SQL [DB]: one value from the test server.
psql_val() {
    "$PG_BIN/psql" -h "$PG_DIR" -p "$PG_PORT" -U certfleet -X -A -t -q -v ON_ERROR_STOP=1 \
        -c "$1" "${2:-certfleet}"
}

# json_get FILE EXPR: evaluates the python expression EXPR over the JSON document j.
json_get() {
    "$PY" -c 'import json, sys; j = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

pgcf() { cf "$@" --store "$PG_URL" --data "$DATA"; }

# ---- the walk: init, issue, verify ----

expect_rc 0 pgcf init --org "PG Fleet"
grep -q "initialised postgresql://" "$T/stdout" || fail "init: $(cat "$T/stdout")"
[ "$(psql_val "SELECT value FROM meta WHERE key = 'org'")" = "PG Fleet" ] ||
    fail "init did not record the organisation in PostgreSQL"
[ ! -e "$DATA/certfleet.db" ] || fail "a PostgreSQL store must not write DATA/certfleet.db"
pass "init on PostgreSQL"

expect_rc 0 pgcf ca export --out "$T/chain.pem"
split_chain "$T/chain.pem"
new_csr dev1
expect_rc 0 pgcf issue --csr "$T/dev1.csr" --device dev-1 --out "$T/dev1.pem"
openssl verify -CAfile "$T/root.pem" -untrusted "$T/issuing.pem" -purpose sslclient \
    "$T/dev1.pem" >"$T/verify.out" 2>&1 || fail "openssl verify: $(cat "$T/verify.out")"
serial=$(openssl x509 -in "$T/dev1.pem" -noout -serial | sed 's/^serial=//')
[ "$(psql_val "SELECT device_id || ' ' || status FROM certificates WHERE serial = '$serial'")" \
    = "dev-1 good" ] || fail "certificate $serial is not in PostgreSQL as dev-1/good"
[ "$(psql_val "SELECT length(der) > 100 FROM certificates WHERE serial = '$serial'")" = t ] ||
    fail "certificate DER was not stored"
pass "issue, export, openssl verify"

expect_rc 0 pgcf audit verify
grep -q "audit chain intact: 3 records" "$T/stdout" || fail "audit verify: $(cat "$T/stdout")"
expect_rc 0 pgcf status --json
cp "$T/stdout" "$T/status.json"
[ "$(json_get "$T/status.json" 'j["store"].startswith("postgresql://")')" = True ] ||
    fail "status store: $(cat "$T/status.json")"
[ "$(json_get "$T/status.json" 'j["org"]')" = "PG Fleet" ] || fail "status org"
[ "$(json_get "$T/status.json" 'j["certificates"]["total"]')" = 2 ] || fail "status total"
[ "$(json_get "$T/status.json" 'j["certificates"]["valid"]')" = 2 ] || fail "status valid"
[ "$(json_get "$T/status.json" 'j["devices"]["active"]')" = 1 ] || fail "status devices"
[ "$(json_get "$T/status.json" 'j["audit"]["records"]')" = 3 ] || fail "status audit"
[ "$(json_get "$T/status.json" 'j["cas"]')" = 2 ] || fail "status cas"
[ "$(json_get "$T/status.json" 'j["schema_version"]')" = \
    "$(psql_val 'SELECT max(version) FROM schema_migrations')" ] || fail "status schema"
pass "audit verify and status --json"

# ---- a second init refuses and changes nothing ----

snapshot() {
    psql_val "SELECT string_agg(key || '=' || value, ',' ORDER BY key) FROM meta"
    psql_val "SELECT string_agg(name || ':' || md5(der), ',' ORDER BY id) FROM cas"
    psql_val "SELECT count(*) || '/' || max(seq) FROM audit"
    psql_val "SELECT encode(hash, 'hex') FROM audit_head"
    ls -l "$DATA/keys"
}
snapshot >"$T/before"
expect_rc 1 pgcf init --org "Other Org"
expect_stderr '^certfleet: init: postgresql://.*already initialised for "PG Fleet"; nothing was changed'
snapshot >"$T/after"
diff "$T/before" "$T/after" >&2 || fail "a refused init changed the store"
pass "second init refused, nothing changed"

# ---- two inits racing on a new database: one wins, the other changes nothing ----

RACE_URL=$(pg_new_db race)
for i in 1 2 3; do
    cf init --org "racer $i" --store "$RACE_URL" --data "$T/race$i" \
        >"$T/race$i.out" 2>"$T/race$i.err" &
    eval "race_pid$i=\$!"
done
won=0
for i in 1 2 3; do
    rc=0
    eval "wait \$race_pid$i" || rc=$?
    if [ "$rc" = 0 ]; then
        won=$((won + 1))
        winner=$i
    elif [ "$rc" = 1 ]; then
        grep -q "already initialised" "$T/race$i.err" || fail "racer $i: $(cat "$T/race$i.err")"
        [ -z "$(ls -A "$T/race$i/keys" 2>/dev/null)" ] || fail "losing racer $i left keys behind"
    else
        fail "racer $i exited $rc: $(cat "$T/race$i.err")"
    fi
done
[ "$won" = 1 ] || fail "$won of 3 racing inits succeeded"
[ "$(psql_val "SELECT value FROM meta WHERE key = 'org'" race)" = "racer $winner" ] ||
    fail "the winner's organisation is not the one stored"
[ "$(psql_val "SELECT count(*) FROM cas" race)" = 2 ] || fail "racing inits stored extra CAs"
[ "$(psql_val "SELECT count(*) FROM audit" race)" = 2 ] || fail "racing inits: audit records"
pass "racing inits: exactly one wins"

# ---- several processes issuing at once into one database ----

WORKERS=3
PER_WORKER=100
worker() {
    local w=$1 j dev
    new_csr "w$w"
    for ((j = 1; j <= PER_WORKER; j++)); do
        # Half the devices are shared by all workers, so they also race on the device rows.
        if ((j % 2)); then dev="shared-$((j % 7))"; else dev="w$w-d$j"; fi
        cf issue --csr "$T/w$w.csr" --device "$dev" --store "$PG_URL" --data "$DATA" \
            --out "$T/w$w.$j.pem" 2>"$T/w$w.err" || {
            echo "worker $w, certificate $j: $(cat "$T/w$w.err")" >"$T/w$w.fail"
            return 1
        }
    done
}
pids=()
for ((w = 1; w <= WORKERS; w++)); do
    worker "$w" &
    pids+=($!)
done
for ((w = 1; w <= WORKERS; w++)); do
    wait "${pids[$((w - 1))]}" || fail "$(cat "$T/w$w.fail" 2>/dev/null || echo "worker $w failed")"
done
issued=$((1 + WORKERS * PER_WORKER))
# init's: the CAs' record and the OCSP responder's certificate with its record
init_certs=1
init_records=2

for f in "$T"/w*.*.pem; do
    openssl x509 -in "$f" -noout -serial | sed 's/^serial=//'
done | sort >"$T/serials"
[ "$(wc -l <"$T/serials")" = $((WORKERS * PER_WORKER)) ] || fail "certificates missing on disk"
[ "$(sort -u "$T/serials" | wc -l)" = $((WORKERS * PER_WORKER)) ] ||
    fail "the CLI handed out a serial twice"
[ "$(psql_val 'SELECT count(*) FROM certificates')" = $((init_certs + issued)) ] ||
    fail "PostgreSQL holds $(psql_val 'SELECT count(*) FROM certificates') certificates, not $init_certs + $issued"
[ "$(psql_val 'SELECT count(DISTINCT serial) = count(*) FROM certificates')" = t ] ||
    fail "serials in PostgreSQL are not distinct"
psql_val "SELECT serial FROM certificates WHERE device_id <> 'dev-1' ORDER BY serial" |
    sort >"$T/db_serials"
diff "$T/serials" "$T/db_serials" >/dev/null || fail "stored serials differ from those issued"
[ "$(psql_val 'SELECT count(*) FROM audit')" = $((init_records + issued)) ] ||
    fail "audit holds $(psql_val 'SELECT count(*) FROM audit') records, not $init_records + $issued"
[ "$(psql_val 'SELECT max(seq) = count(*) AND min(seq) = 1 FROM audit')" = t ] ||
    fail "audit sequence numbers have gaps"
[ "$(psql_val "SELECT count(*) FROM audit WHERE action = 'cert.issue'")" = "$issued" ] ||
    fail "not one cert.issue record per certificate"
[ "$(psql_val "SELECT count(*) FROM devices WHERE id LIKE 'shared-%'")" = 7 ] ||
    fail "shared devices were not created exactly once"
expect_rc 0 pgcf audit verify
grep -q "audit chain intact: $((init_records + issued)) records" "$T/stdout" ||
    fail "audit verify: $(cat "$T/stdout")"
expect_rc 0 pgcf status --json
[ "$(json_get "$T/stdout" 'j["certificates"]["total"]')" = $((init_certs + issued)) ] ||
    fail "status total"
[ "$(json_get "$T/stdout" 'j["audit"]["records"]')" = $((init_records + issued)) ] ||
    fail "status audit"
pass "$WORKERS processes issued $((WORKERS * PER_WORKER)) certificates at once"

# ---- a server that is not there ----

port=$(free_port)
start=$(date +%s%N)
expect_rc 1 timeout 20 "$CERTFLEET" status --store "postgresql://certfleet@127.0.0.1:$port/certfleet" \
    --data "$DATA"
took_ms=$((($(date +%s%N) - start) / 1000000))
expect_stderr "^certfleet: status: postgresql://certfleet@127.0.0.1:$port/certfleet: .*cannot connect"
[ "$took_ms" -lt 5000 ] || fail "an absent server took $took_ms ms to report"
pass "absent server: exit 1 in $took_ms ms"
expect_rc 1 timeout 20 "$CERTFLEET" init --store "postgresql://certfleet@127.0.0.1:$port/certfleet" \
    --data "$T/absent"
expect_stderr "^certfleet: init: postgresql://certfleet@127.0.0.1:$port/certfleet: .*cannot connect"
[ -z "$(ls -A "$T/absent/keys" 2>/dev/null)" ] || fail "init against an absent server wrote keys"
pass "absent server: init refused"
