#!/bin/bash
# test_serve_postgres.sh - certfleet serve on PostgreSQL: two server processes with two
# workers each share one database and one data directory (each worker its own connection);
# both serve the same chain over EST, and a SIGHUP re-reads the store.
. "$CF_SOURCE_DIR/tests/lib/common.sh"
. "$CF_SOURCE_DIR/tests/lib/pg.sh"

pg_start "$T/pg"
D=$T/data
cf init --store "$PG_URL" --data "$D" >/dev/null
cf ca export --store "$PG_URL" --data "$D" --out "$T/chain.pem"
split_chain "$T/chain.pem"

PIDS=()
at_exit 'for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done'
declare -A TLS HTTP
for i in 1 2; do
    TLS[$i]=$(free_port)
    HTTP[$i]=$(free_port)
    "$CERTFLEET" serve --store "$PG_URL" --data "$D" --threads 2 \
        --listen "127.0.0.1:${TLS[$i]}" --http "127.0.0.1:${HTTP[$i]}" 2>>"$T/serve$i.log" &
    PIDS+=($!)
    # One at a time: the first issues the server certificate, the second reuses it.
    for _ in $(seq 100); do
        curl -sf -o /dev/null "http://127.0.0.1:${HTTP[$i]}/healthz" && break
        kill -0 "${PIDS[$((i - 1))]}" 2>/dev/null || { cat "$T/serve$i.log" >&2; fail "serve $i exited"; }
        sleep 0.1
    done
done

for i in 1 2; do
    for _ in 1 2 3 4; do
        curl -sf --cacert "$T/root.pem" "https://127.0.0.1:${TLS[$i]}/.well-known/est/cacerts" |
            base64 -d | openssl pkcs7 -inform DER -print_certs >"$T/c$i.pem" ||
            fail "server $i: cacerts"
        grep -q 'Issuing CA' "$T/c$i.pem" || fail "server $i: no issuing CA in cacerts"
    done
done
cmp -s "$T/c1.pem" "$T/c2.pem" || fail "the two servers serve different chains"
pass "two servers on one PostgreSQL serve the same EST chain"

# Four workers in all, each with its own connection (plus the test's own none).
N=$("$PG_BIN/psql" -h "$PG_DIR" -p "$PG_PORT" -U certfleet -X -A -t -q \
    -c "SELECT count(*) FROM pg_stat_activity WHERE datname = 'certfleet' AND pid <> pg_backend_pid()" certfleet)
[ "$N" -ge 4 ] || fail "expected a store connection per worker (4), PostgreSQL sees $N"
pass "one store connection per worker ($N)"

kill -HUP "${PIDS[0]}"
sleep 0.5
curl -sf --cacert "$T/root.pem" "https://127.0.0.1:${TLS[1]}/.well-known/est/cacerts" >/dev/null ||
    fail "server 1 after SIGHUP"
grep -q reloaded "$T/serve1.log" || fail "no reload after SIGHUP: $(cat "$T/serve1.log")"
pass "SIGHUP reloads against PostgreSQL"

for i in 0 1; do
    rc=0
    kill -TERM "${PIDS[$i]}"
    wait "${PIDS[$i]}" || rc=$?
    [ "$rc" = 0 ] || fail "server $((i + 1)) exited $rc after SIGTERM"
done
PIDS=()
pass "both stop on SIGTERM with exit 0"
