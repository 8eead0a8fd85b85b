#!/bin/bash
# test_est_postgres.sh - two `certfleet serve` processes on one PostgreSQL database serve one
# fleet: a device enrolled (curl) through the first is active through the second; then both
# take a concurrent load of enrollments at once: no serial stored twice, every certificate a
# client received is stored, every enrollment answered is counted once (no lost update), and
# `audit verify` passes. Then PostgreSQL restarts under a running server, and stops and
# starts again: the server finds it again by itself.
. "$CF_SOURCE_DIR/tests/lib/common.sh"
. "$CF_SOURCE_DIR/tests/lib/pg.sh"
. "$CF_SOURCE_DIR/tests/lib/est_load.sh"

PER_SERVER=150
pg_start "$T/pg"
S=(--store "$PG_URL" --data "$T/data")
est_fleet $((2 * PER_SERVER + 20)) "${S[@]}"
psql_q() { "$PG_BIN/psql" -X -A -t -q -F '|' "$PG_URL" -c "$1"; }

est_serve "$T/serve1.log" "${S[@]}" --threads 2
PID1=$EST_PID TLS1=$EST_TLS
# One at a time: the first issues the server certificate, the second reuses it.
est_serve "$T/serve2.log" "${S[@]}" --threads 2
PID2=$EST_PID TLS2=$EST_TLS

# ---- enroll through one, active through the other ----
mapfile -t UIDS < <(ls "$EST_MAKER/keys" | sed 's/\.key$//' | sort)
DEV=${UIDS[${#UIDS[@]} - 1]} # the last: the loads below take the devices from the first
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/op.key" \
    -subj "/CN=$DEV" -outform DER -out "$T/op.csr.der" 2>/dev/null
base64 "$T/op.csr.der" >"$T/op.csr.b64"
curl -sf --max-time 20 --cacert "$T/root.pem" --cert "$EST_MAKER/certs/$DEV.pem" \
    --key "$EST_MAKER/keys/$DEV.key" -H 'Content-Type: application/pkcs10' \
    --data-binary @"$T/op.csr.b64" -o "$T/op.p7.b64" \
    "https://127.0.0.1:$TLS1/.well-known/est/simpleenroll" || fail "enrollment through server 1"
base64 -d "$T/op.p7.b64" | openssl pkcs7 -inform DER -print_certs >"$T/op.pem" ||
    fail "the reply of server 1 is not base64 PKCS#7"
openssl verify -CAfile "$T/root.pem" -untrusted "$T/issuing.pem" "$T/op.pem" >/dev/null ||
    fail "the certificate from server 1 does not verify against the chain"
SERIAL=$(openssl x509 -in "$T/op.pem" -noout -serial | cut -d= -f2)
curl -sf --max-time 20 --cacert "$T/root.pem" --cert "$T/op.pem" --key "$T/op.key" \
    -o "$T/self.json" "https://127.0.0.1:$TLS2/api/v1/device/self" ||
    fail "device/self through server 2 with the certificate from server 1"
"$(cf_python)" - "$T/self.json" "$DEV" "$SERIAL" <<'PY' || fail "server 2 does not see the device active: $(cat "$T/self.json")"
import json, sys
j, dev, serial = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
assert j["id"] == dev and j["state"] == "active", j
assert j["certificate"]["serial"].upper() == serial.upper(), j
PY
cf device show "${S[@]}" "$DEV" --json | grep -q '"state": "active"' || fail "device show: not active"
pass "enrolled through server 1, active through server 2 (device/self) and the CLI"

# ---- both servers under load at once ----
GOT=$T/received
mkdir -p "$GOT"
est_load --connect "127.0.0.1:$TLS1" --clients 8 --duration 30 --timeout 20 --offset 0 \
    --limit "$PER_SERVER" --save "$GOT" --json >"$T/load1.json" 2>"$T/load1.err" &
L1=$!
est_load --connect "127.0.0.1:$TLS2" --clients 8 --duration 30 --timeout 20 \
    --offset "$PER_SERVER" --limit "$PER_SERVER" --save "$GOT" --json >"$T/load2.json" \
    2>"$T/load2.err" &
L2=$!
wait "$L1" || fail "load on server 1: $(cat "$T/load1.err")"
wait "$L2" || fail "load on server 2: $(cat "$T/load2.err")"
for i in 1 2; do
    grep -q "\"ok\":$PER_SERVER," "$T/load$i.json" ||
        fail "server $i: not all $PER_SERVER enrollments succeeded: $(cat "$T/load$i.json")"
done
pass "$((2 * PER_SERVER)) enrollments, 8 clients on each server at once, all answered 200"

est_kill "$PID1" || fail "server 1 did not stop cleanly"
est_kill "$PID2" || fail "server 2 did not stop cleanly"
cp "$T/op.pem" "$GOT/$DEV.pem"
est_check_received "$GOT" psql_q "${S[@]}"
[ "$EST_RECEIVED" = $((2 * PER_SERVER + 1)) ] || fail "$EST_RECEIVED certificates checked"
DUP=$(psql_q "SELECT serial FROM certificates GROUP BY serial HAVING count(*) > 1")
[ -z "$DUP" ] || fail "serials stored twice: $DUP"
ACTIVE=$(psql_q "SELECT count(*) FROM devices WHERE state = 'active'")
CERTS=$(psql_q "SELECT count(*) FROM certificates c JOIN devices d ON d.id = c.device_id WHERE d.batch = 'b1'")
[ "$ACTIVE" = "$EST_RECEIVED" ] || fail "$ACTIVE devices active, $EST_RECEIVED enrolled"
[ "$CERTS" = "$EST_RECEIVED" ] || fail "$CERTS device certificates stored, $EST_RECEIVED enrolled"
pass "every certificate received is stored, exactly once each; no serial twice; $ACTIVE devices active"

expect_rc 0 cf audit verify "${S[@]}"
N=$(psql_q "SELECT count(*) FROM audit WHERE action = 'device.enroll'")
[ "$N" = "$EST_RECEIVED" ] || fail "$N device.enroll audit records for $EST_RECEIVED enrollments"
pass "audit verify passes; one device.enroll record per enrollment"

# ---- PostgreSQL restarts; the server carries on ----
est_serve "$T/serve3.log" "${S[@]}" --threads 2
PID3=$EST_PID TLS3=$EST_TLS
OFF=$((2 * PER_SERVER))
# enroll3 N OFFSET [estload args]: N enrollments through server 3, devices from OFFSET on.
enroll3() {
    local n=$1 off=$2; shift 2
    est_load --connect "127.0.0.1:$TLS3" --clients 2 --requests "$n" --offset "$off" --limit "$n" \
        --timeout 20 --save "$GOT" --json "$@"
}
expect_rc 0 enroll3 4 "$OFF"
pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w restart >/dev/null ||
    fail "PostgreSQL did not restart"
# The first statement after the restart finds its connection lost; nothing of it was done,
# so it runs again on a new connection: no request fails.
expect_rc 0 enroll3 4 $((OFF + 4))
grep -q '"ok":4,' "$T/stdout" || fail "after the restart: $(cat "$T/stdout")"
pass "PostgreSQL restarted under a running server: every enrollment after it answered 200"

pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null
T0=$(date +%s%N)
expect_rc 1 enroll3 2 $((OFF + 8))
MS=$((($(date +%s%N) - T0) / 1000000))
grep -q '"503":2' "$T/stdout" || fail "with PostgreSQL down, not 503: $(cat "$T/stdout")"
[ "$MS" -lt 5000 ] || fail "with PostgreSQL down, 2 requests took $MS ms"
pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -w restart >/dev/null ||
    fail "PostgreSQL did not start again"
sleep 1.1 # a lost connection is tried again at most once a second
expect_rc 0 enroll3 2 $((OFF + 10))
grep -q '"ok":2,' "$T/stdout" || fail "after PostgreSQL came back: $(cat "$T/stdout")"
pass "PostgreSQL down: 503 at once ($MS ms for 2); back up: enrollments answered 200 again"

est_kill "$PID3" || fail "server 3 did not stop cleanly"
est_check_received "$GOT" psql_q "${S[@]}"
[ "$EST_RECEIVED" = $((2 * PER_SERVER + 11)) ] || fail "$EST_RECEIVED certificates checked"
expect_rc 0 cf audit verify "${S[@]}"
pass "every certificate received across the restarts is stored; audit verify passes"
