#!/bin/bash
# test_demo.sh - the README's run command and its enrollment command work: scripts/demo sets
# up a demo fleet and serves it, scripts/demo-enroll enrolls a device with curl and shows it
# active; a second run of scripts/demo reuses the data directory.
. "$CF_SOURCE_DIR/tests/lib/common.sh"

export CERTFLEET_DATA=$T/data DEVICES=3
TLS_PORT=$(free_port)
HTTP_PORT=$(free_port)
while [ "$HTTP_PORT" = "$TLS_PORT" ]; do HTTP_PORT=$(free_port); done
export LISTEN=127.0.0.1:$TLS_PORT HTTP=127.0.0.1:$HTTP_PORT
DEMO_PID=

start_demo() {
    "$CF_SOURCE_DIR/scripts/demo" >"$T/demo.out" 2>&1 &
    DEMO_PID=$!
    for _ in $(seq 200); do
        curl -sf -o /dev/null "http://$HTTP/healthz" && return 0
        kill -0 "$DEMO_PID" 2>/dev/null || { cat "$T/demo.out" >&2; fail "scripts/demo exited"; }
        sleep 0.1
    done
    cat "$T/demo.out" >&2
    fail "scripts/demo's server did not answer"
}
stop_demo() {
    kill -TERM "$DEMO_PID" 2>/dev/null || true
    wait "$DEMO_PID" 2>/dev/null || true
    DEMO_PID=
}
at_exit '[ -z "$DEMO_PID" ] || kill -KILL "$DEMO_PID" 2>/dev/null'

start_demo
grep -q "claimed 3 devices of batch reel-1 for acme" "$T/demo.out" ||
    { cat "$T/demo.out" >&2; fail "the demo fleet was not claimed"; }
pass "scripts/demo makes a demo fleet (manifest, import, claim) and serves it"

"$CF_SOURCE_DIR/scripts/demo-enroll" >"$T/enroll.out" 2>&1 ||
    { cat "$T/enroll.out" >&2; fail "scripts/demo-enroll failed"; }
grep -q ': OK$' "$T/enroll.out" || fail "the enrolled certificate did not verify"
grep -Eq '^state +active$' "$T/enroll.out" || { cat "$T/enroll.out" >&2; fail "device not active"; }
grep -q 'curl .*simpleenroll' "$T/enroll.out" || fail "demo-enroll does not show its curl command"
pass "scripts/demo-enroll enrolls a device with curl (EST) and shows it active"

stop_demo
start_demo
grep -q "a new fleet" "$T/demo.out" && fail "a second scripts/demo made a new fleet"
"$CF_SOURCE_DIR/scripts/demo-enroll" >"$T/enroll2.out" 2>&1 || fail "second enrollment failed"
[ "$(cf device list --state active --json | "$(cf_python)" -c 'import json,sys; print(len(json.load(sys.stdin)["devices"]))')" = 2 ] ||
    fail "expected two active devices"
stop_demo
pass "scripts/demo reuses its data directory; the next device enrolls"
