#!/usr/bin/env bash
# test_onboard_kill9.sh - an import of 20,000 devices killed with SIGKILL part-way, then run
# again: the device count equals the good entries, every entry is counted once (added +
# already present = entries), and the audit chain verifies. Also a Ctrl-C (SIGINT), which
# commits what is verified and exits 1 saying so. On SQLite, then on PostgreSQL.
. "$CF_SOURCE_DIR/tests/lib/common.sh"
. "$CF_SOURCE_DIR/tests/lib/pg.sh"

PY=$(cf_python)
json_get() { "$PY" -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"; }
N=20000

cf manifest make --devices $N --out "$T/M" --threads 2 >/dev/null

devices() { cf status "$@" --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["devices"]["total"])'; }

# start_import LOG STORE...: starts the import in the background; sets PID.
start_import() {
    local log=$1; shift
    "$CERTFLEET" onboard "$@" --manifest "$T/M/manifest.json" --manufacturer maker --batch-size 500 \
        --json >"$log" 2>"$log.err" &
    PID=$!
}

# wait_devices MIN STORE...: waits until at least MIN devices are committed.
wait_devices() {
    local min=$1; shift
    for _ in $(seq 1 600); do
        [ "$(devices "$@")" -ge "$min" ] && return 0
        kill -0 "$PID" 2>/dev/null || fail "the import ended before $min devices: $(cat "$T/run1.err")"
        sleep 0.05
    done
    fail "no progress to $min devices"
}

run_suite() {
    local name=$1; shift
    local S=("$@")
    cf init "${S[@]}" >/dev/null
    cf manufacturer add "${S[@]}" --name maker --root "$T/M/root.crt" --signer "$T/M/manifest-signer.crt" >/dev/null

    # kill -9 after some progress.
    start_import "$T/run1" "${S[@]}"
    wait_devices 2000 "${S[@]}"
    kill -9 "$PID"
    wait "$PID" 2>/dev/null || true
    local after_kill
    after_kill=$(devices "${S[@]}")
    [ "$after_kill" -ge 2000 ] && [ "$after_kill" -lt $N ] \
        || fail "$name: expected a partial import after kill -9, found $after_kill devices"

    # Again: it finishes the rest; what was committed is counted as present, not re-added.
    expect_rc 0 cf onboard "${S[@]}" --manifest "$T/M/manifest.json" --manufacturer maker --json
    cp "$T/stdout" "$T/run2.json"
    [ "$(json_get "$T/run2.json" '(j["entries"], j["added"] + j["present"], j["present"], j["rejected"], j["conflicts"])')" \
        = "($N, $N, $after_kill, 0, 0)" ] \
        || fail "$name: after kill -9 ($after_kill committed), second run: $(cat "$T/run2.json")"
    [ "$(devices "${S[@]}")" = $N ] || fail "$name: device count is not $N"
    expect_rc 0 cf audit verify "${S[@]}"
    pass "$name: kill -9 after $after_kill devices; the rerun added $(json_get "$T/run2.json" 'j["added"]'), present $after_kill, $N devices, audit intact"

    # A third run adds nothing.
    expect_rc 0 cf onboard "${S[@]}" --manifest "$T/M/manifest.json" --manufacturer maker --json
    [ "$(json_get "$T/stdout" '(j["added"], j["present"])')" = "(0, $N)" ] || fail "$name: third run: $(cat "$T/stdout")"
    pass "$name: a third run adds nothing, $N already present"
}

run_suite sqlite --data "$T/d"

# Ctrl-C: commits what is verified, says so, exits 1; the rerun finishes.
cf init --data "$T/i" >/dev/null
cf manufacturer add --data "$T/i" --name maker --root "$T/M/root.crt" --signer "$T/M/manifest-signer.crt" >/dev/null
start_import "$T/run1" --data "$T/i"
wait_devices 1000 --data "$T/i"
kill -INT "$PID"
rc=0
wait "$PID" || rc=$?
[ "$rc" = 1 ] || fail "SIGINT: exit $rc, expected 1: $(cat "$T/run1.err")"
grep -q 'interrupted' "$T/run1.err" || fail "SIGINT: no 'interrupted' message: $(cat "$T/run1.err")"
[ "$(json_get "$T/run1" 'j["interrupted"]')" = True ] || fail "SIGINT: summary: $(cat "$T/run1")"
committed=$(json_get "$T/run1" 'j["added"]')
[ "$(devices --data "$T/i")" = "$committed" ] || fail "SIGINT: the summary's $committed added are not all committed"
expect_rc 0 cf onboard --data "$T/i" --manifest "$T/M/manifest.json" --manufacturer maker --json
[ "$(json_get "$T/stdout" '(j["added"], j["present"])')" = "($((N - committed)), $committed)" ] \
    || fail "SIGINT: rerun: $(cat "$T/stdout")"
expect_rc 0 cf audit verify --data "$T/i"
pass "sqlite: Ctrl-C commits the $committed verified devices, exits 1; the rerun adds the rest"

pg_start "$T/pg"
run_suite postgres --store "$PG_URL" --data "$T/pgdata"
