# test_ownership_postgres.sh - ownership on PostgreSQL with the real binary: claims by code and
# by batch, a wrong code audited, isolation between owners, a transfer that revokes the
# previous owner's certificates, paging, and no claim code or token in clear in a pg_dump.
. "$CF_SOURCE_DIR/tests/lib/common.sh"
. "$CF_SOURCE_DIR/tests/lib/pg.sh"

PY=$(cf_python)
pg_start "$T/pg"
unset CERTFLEET_DATA
S=(--store "$PG_URL" --data "$T/data")

run() {
    local want=$1; shift
    expect_rc "$want" cf "$@" "${S[@]}"
}
json_check() {
    "$PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert eval(sys.argv[2]), d' "$T/stdout" "$1" || fail "JSON is not as expected ($1): $(head -c 600 "$T/stdout")"
}
psql_val() { pg_as_owner "$PG_BIN/psql" -h "$PG_DIR" -p "$PG_PORT" -U certfleet -d certfleet -Atc "$1"; }
code_of() { awk -F, -v id="$1" '$1 == id { print $2 }' "$T/reel/claim-codes.csv"; }

run 0 init --org Vendor
expect_rc 0 cf manifest make --devices 7 --out "$T/reel" --threads 2
run 0 manufacturer add --name chipco --root "$T/reel/root.crt" --signer "$T/reel/manifest-signer.crt"
run 0 onboard --manifest "$T/reel/manifest.json" --manufacturer chipco --batch b1 \
    --claim-codes "$T/reel/claim-codes.csv"
mapfile -t R < <(tail -n +2 "$T/reel/claim-codes.csv" | cut -d, -f1 | sort)
run 0 owner add acme
run 0 owner add globex
run 0 owner token acme --role admin
TOKEN=$(cat "$T/stdout")
pass "7 devices imported on PostgreSQL, two owners, a token"

run 0 device claim "${R[0]}" --as-owner acme --code "$(code_of "${R[0]}")"
run 1 device claim "${R[1]}" --as-owner acme --code "$(code_of "${R[2]}")"
expect_stderr "not claimable with this claim code"
[ "$(psql_val "SELECT count(*) FROM audit WHERE action = 'device.claim_failed' AND object = '${R[1]}'")" = 1 ] ||
    fail "the failed claim is not audited"
run 1 device claim "${R[0]}" --as-owner globex --code "$(code_of "${R[0]}")"
expect_stderr "not claimable with this claim code"
run 0 device claim "${R[1]}" --owner globex
pass "claims by code and by operator; wrong codes fail and are audited"

run 0 device list --as-owner acme --json
json_check '[x["id"] for x in d["devices"]] == ["'"${R[0]}"'"]'
run 1 device show "${R[1]}" --as-owner acme
expect_stderr "not found"
run 1 device transfer "${R[1]}" --owner acme --as-owner acme
expect_stderr "not found"
pass "isolation: acme sees only its device"

new_csr d0
run 0 issue --csr "$T/d0.csr" --device "${R[0]}" --out "$T/d0.pem"
SERIAL=$(openssl x509 -in "$T/d0.pem" -noout -serial | cut -d= -f2)
run 0 device transfer "${R[0]}" --owner globex --json
json_check 'd["revoked"] == 1'
[ "$(psql_val "SELECT status || ':' || reason FROM certificates WHERE serial = '$SERIAL'")" = revoked:3 ] ||
    fail "transfer did not revoke $SERIAL with reason 3"
pass "transfer revokes the previous owner's certificate (reason 3)"

run 0 device claim --batch b1 --owner acme --json
json_check 'd["claimed"] == 5'
"$PY" - "$CERTFLEET" "${S[@]}" <<'EOF' || fail "paging"
import json, subprocess, sys
seen, after = [], None
while True:
    args = [sys.argv[1], "device", "list", "--limit", "3", "--json"] + sys.argv[2:] + (["--after", after] if after else [])
    d = json.loads(subprocess.run(args, check=True, capture_output=True).stdout)
    seen += [x["id"] for x in d["devices"]]
    if d["next"] is None:
        break
    after = d["next"]
assert len(seen) == len(set(seen)) == 7, seen
EOF
pass "batch claim and paging"

pg_as_owner "$PG_BIN/pg_dump" -h "$PG_DIR" -p "$PG_PORT" -U certfleet certfleet >"$T/dump.sql"
[ -s "$T/dump.sql" ] || fail "pg_dump wrote nothing"
{ tail -n +2 "$T/reel/claim-codes.csv" | cut -d, -f2; echo "$TOKEN"; } | while read -r s; do
    if grep -q -F -e "$s" -e "${s//-/}" "$T/dump.sql"; then fail "a secret appears in clear in the dump"; fi
done
run 0 audit verify
pass "no claim code or token in a pg_dump; audit chain intact"
