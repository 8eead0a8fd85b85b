#!/bin/bash
# test_est_kill9.sh - SIGKILL of certfleet serve in the middle of a load of EST enrollments,
# three times, each followed by a restart: every certificate a client received is in the
# store as a good certificate of its device, which is active; no serial is stored or received
# twice; `audit verify` passes; and devices enroll again after the restart.
. "$CF_SOURCE_DIR/tests/lib/common.sh"
. "$CF_SOURCE_DIR/tests/lib/est_load.sh"

ROUNDS=3
PER_ROUND=150 # devices a round may use; a round is cut once some have enrolled
D=$T/data
GOT=$T/received
mkdir -p "$GOT"
est_fleet $((ROUNDS * PER_ROUND + 50)) --data "$D"

received() { find "$GOT" -name '*.pem' | wc -l; }

kills=0
for round in $(seq "$ROUNDS"); do
    est_serve "$T/serve.log" --data "$D" --threads 2
    before=$(received)
    # 8 clients enroll the round's devices; the server dies under them.
    est_load --connect "127.0.0.1:$EST_TLS" --clients 8 --duration 30 --timeout 5 \
        --offset $(((round - 1) * PER_ROUND)) --limit "$PER_ROUND" --save "$GOT" --json \
        >"$T/load$round.json" 2>"$T/load$round.err" &
    LOAD_PID=$!
    # Kill once 10 + a random few certificates of this round have arrived.
    want=$((before + 10 + RANDOM % 30))
    for _ in $(seq 1500); do
        [ "$(received)" -ge "$want" ] && break
        kill -0 "$LOAD_PID" 2>/dev/null || break
        sleep 0.02
    done
    est_kill "$EST_PID" KILL || true
    kills=$((kills + 1))
    rc=0
    wait "$LOAD_PID" || rc=$?
    # The load generator sees refused or cut connections after the kill: exit 1, not 2.
    [ "$rc" -le 1 ] || fail "round $round: estload: $(cat "$T/load$round.err")"
    got=$(($(received) - before))
    [ "$got" -ge 10 ] || fail "round $round: only $got certificates before the kill: $(cat "$T/load$round.err")"
    grep -q '"errors":0,' "$T/load$round.json" &&
        fail "round $round: no request failed: the kill came after the load"
    echo "# round $round: $got certificates received before SIGKILL"
done
pass "$kills times SIGKILL of the server under a load of enrollments ($(received) certificates received)"

# Restart: the store opens, and enrollment carries on with fresh devices.
est_serve "$T/serve.log" --data "$D" --threads 2
est_load --connect "127.0.0.1:$EST_TLS" --clients 4 --requests 20 --timeout 10 \
    --offset $((ROUNDS * PER_ROUND)) --save "$GOT" --json >"$T/after.json" 2>"$T/after.err" ||
    fail "enrollments after the restart failed: $(cat "$T/after.err")"
grep -q '"ok":20,' "$T/after.json" || fail "20 enrollments after the restart: $(cat "$T/after.json")"
est_kill "$EST_PID" || fail "serve did not stop cleanly after the restart"
pass "after the restart the server enrolls again"

sql() { sqlite3 -separator '|' "$D/certfleet.db" "$1"; }
est_check_received "$GOT" sql --data "$D"
pass "all $EST_RECEIVED certificates the clients received are good certificates of active devices in the store"

DUP=$(sql "SELECT serial FROM certificates GROUP BY serial HAVING count(*) > 1")
[ -z "$DUP" ] || fail "serials stored twice: $DUP"
STORED=$(sql "SELECT count(*) FROM certificates c JOIN devices d ON d.id = c.device_id WHERE d.state = 'active'")
[ "$STORED" -ge "$EST_RECEIVED" ] || fail "$STORED certificates stored, $EST_RECEIVED received"
pass "no serial stored twice ($STORED device certificates stored, $EST_RECEIVED of them received)"

expect_rc 0 cf audit verify --data "$D"
pass "audit verify passes after $kills kills"
