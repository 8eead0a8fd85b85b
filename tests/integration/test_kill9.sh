# test_kill9.sh - certfleet killed with SIGKILL at random moments while issuing leaves a
# consistent store: every certificate that reached its file is in the store, each stored
# certificate has exactly one audit record, the audit chain verifies, no output file is
# half-written, and issuing carries on afterwards.
. "$CF_SOURCE_DIR/tests/lib/common.sh"

D="$T/data"
OUT="$T/out"
RUN_SECONDS=${CF_KILL9_SECONDS:-6}
mkdir -p "$OUT"
expect_rc 0 cf init --data "$D" --org Kill9
new_csr dev

# The issuer: one certfleet at a time, its pid in $T/current.pid for the killer.
issuer() {
    local i=0 rc
    while [ ! -e "$T/stop" ]; do
        i=$((i + 1))
        "$CERTFLEET" issue --data "$D" --csr "$T/dev.csr" --device "dev-$i" --out "$OUT/$i.pem" \
            2>"$OUT/$i.err" &
        echo $! >"$T/current.pid"
        rc=0
        wait $! || rc=$?
        echo "$i $rc" >>"$T/results"
    done
}

# The killer: every 50-150 ms, SIGKILL the certfleet the issuer started last, if it is still
# one of ours (its command line names our data directory).
killer() {
    local pid
    while [ ! -e "$T/stop" ]; do
        sleep "$(printf '0.%03d' $((RANDOM % 101 + 50)))"
        pid=$(cat "$T/current.pid" 2>/dev/null) || continue
        if [ -n "$pid" ] && { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "--data $D "; then
            kill -9 "$pid" 2>/dev/null && echo "$pid" >>"$T/kills"
        fi
    done
}

: >"$T/results"
: >"$T/kills"
issuer 2>/dev/null & # bash would report every "Killed" job
issuer_pid=$!
at_exit "touch '$T/stop'; kill $issuer_pid 2>/dev/null; wait $issuer_pid 2>/dev/null"
killer &
killer_pid=$!
at_exit "kill $killer_pid 2>/dev/null; wait $killer_pid 2>/dev/null"
sleep "$RUN_SECONDS"
touch "$T/stop"
wait "$issuer_pid" "$killer_pid" || true

total=$(wc -l <"$T/results")
killed=$(awk '$2 == 137' "$T/results" | wc -l)
ok=$(awk '$2 == 0' "$T/results" | wc -l)
other=$(awk '$2 != 0 && $2 != 137' "$T/results" | wc -l)
echo "# $total runs: $ok succeeded, $killed killed, $other failed otherwise"
[ "$killed" -ge 3 ] || fail "only $killed runs were killed: the test proved nothing"
[ "$ok" -ge 3 ] || fail "only $ok runs succeeded"
if [ "$other" -gt 0 ]; then
    while read -r i; do
        echo "run $i: $(cat "$OUT/$i.err")" >&2
    done < <(awk '$2 != 0 && $2 != 137 {print $1}' "$T/results")
    fail "$other runs failed without being killed"
fi

db() { sqlite3 "$D/certfleet.db" "$@"; }
[ "$(db 'PRAGMA integrity_check')" = ok ] || fail "SQLite integrity check: $(db 'PRAGMA integrity_check')"

# Every run that succeeded wrote its file; every file present is whole and stored.
while read -r i; do
    [ -s "$OUT/$i.pem" ] || fail "run $i succeeded but $OUT/$i.pem is missing or empty"
done < <(awk '$2 == 0 {print $1}' "$T/results")
db "SELECT serial FROM certificates WHERE device_id IS NOT NULL" | sort >"$T/stored"
files=0
for f in "$OUT"/*.pem; do
    [ -e "$f" ] || continue
    files=$((files + 1))
    serial=$(openssl x509 -in "$f" -noout -serial 2>/dev/null | sed 's/^serial=//') ||
        fail "$f is there but is not a whole certificate (half-written?)"
    [ -n "$serial" ] || fail "$f is there but is not a whole certificate (half-written?)"
    grep -qx "$serial" "$T/stored" || fail "$f (serial $serial) is not in the store"
done
[ "$files" -ge "$ok" ] || fail "$files certificate files for $ok successful runs"

certs=$(db "SELECT count(*) FROM certificates WHERE device_id IS NOT NULL")
issues=$(db "SELECT count(*) FROM audit WHERE action = 'cert.issue'")
devices=$(db "SELECT count(*) FROM devices")
[ "$certs" = "$issues" ] || fail "$certs certificates but $issues cert.issue audit records"
[ "$certs" = "$devices" ] || fail "$certs certificates (one device each) but $devices devices"
[ "$certs" -ge "$ok" ] || fail "$certs certificates stored for $ok successful runs"
# The serials in the cert.issue records are exactly the stored certificates' serials.
db "SELECT json_extract(details, '$.serial') FROM audit WHERE action = 'cert.issue'" | sort >"$T/audited"
cmp -s "$T/stored" "$T/audited" ||
    fail "stored and audited serials differ: $(diff "$T/stored" "$T/audited" | head)"
expect_rc 0 cf audit verify --data "$D"
pass "after $killed kills: $certs certificates, $issues cert.issue records, $files whole files, chain intact"

expect_rc 0 cf issue --data "$D" --csr "$T/dev.csr" --device after-kill --out "$T/after.pem"
openssl x509 -in "$T/after.pem" -noout -subject | grep -q "CN = after-kill" || fail "issue after kills"
expect_rc 0 cf audit verify --data "$D"
expect_rc 0 cf status --data "$D" --json
"$(cf_python)" -c '
import json, sys
s = json.load(open(sys.argv[1]))
# the device certificates and after-kill, and the OCSP responder'"'"'s from init; their
# records, after-kill'"'"'s, and init'"'"'s two
assert s["certificates"]["total"] == int(sys.argv[2]) + 2, s
assert s["audit"]["records"] == int(sys.argv[3]) + 3, s' "$T/stdout" "$certs" "$issues" ||
    fail "status after kills: $(cat "$T/stdout")"
pass "issuing works after the kills"
