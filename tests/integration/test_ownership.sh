# test_ownership.sh - owners, tokens, claims, transfer, device states, groups and queries with
# the real binary, on devices imported the way a vendor gets them (manifest make, manufacturer
# add, onboard --claim-codes): isolation between owners (--as-owner scopes a call as an
# owner's API token will), wrong codes audited and rate-limited, secrets stored nowhere in
# clear, a transfer revoking the previous owner's certificates, batch claims and paging.
. "$CF_SOURCE_DIR/tests/lib/common.sh"

PY=$(cf_python)
export CERTFLEET_DATA=$T/data
DB=$CERTFLEET_DATA/certfleet.db
LOG=$T/all-output.log # everything certfleet printed, searched for secrets at the end

# run RC ARGS...: expect_rc on certfleet, keeping what it printed in $LOG.
run() {
    local want=$1; shift
    expect_rc "$want" cf "$@"
    cat "$T/stdout" "$T/stderr" >>"$LOG"
}

json_check() { # json_check PYTHON-ASSERTION-ON-d: on the last run's stdout
    "$PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert eval(sys.argv[2]), d' "$T/stdout" "$1" || fail "JSON is not as expected ($1): $(head -c 600 "$T/stdout")"
}

sql() { "$PY" -c 'import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
for row in c.execute(sys.argv[2]): print("|".join("" if v is None else str(v) for v in row))' "$DB" "$1"; }

code_of() { awk -F, -v id="$1" '$1 == id { print $2 }' "$2"; }

# --- a vendor's fleet: two reels of secure elements, imported with their claim codes ---
run 0 init --org Vendor
run 0 manifest make --devices 8 --out "$T/reel1" --threads 2
run 0 manifest make --devices 4 --out "$T/reel2" --threads 2
run 0 manufacturer add --name chipco --root "$T/reel1/root.crt" --signer "$T/reel1/manifest-signer.crt"
run 0 manufacturer add --name chipco2 --root "$T/reel2/root.crt" --signer "$T/reel2/manifest-signer.crt"
run 0 onboard --manifest "$T/reel1/manifest.json" --manufacturer chipco --batch b1 \
    --claim-codes "$T/reel1/claim-codes.csv"
run 0 onboard --manifest "$T/reel2/manifest.json" --manufacturer chipco2 --batch b2 \
    --claim-codes "$T/reel2/claim-codes.csv"
mapfile -t R1 < <(tail -n +2 "$T/reel1/claim-codes.csv" | cut -d, -f1 | sort)
[ ${#R1[@]} = 8 ] || fail "reel 1: expected 8 devices, got ${#R1[@]}"
run 0 device list --state on_hold --json
json_check 'len(d["devices"]) == 12 and all(x["owner"] is None and x["claim_code"] for x in d["devices"])'
pass "12 devices on hold with the vendor, with claim codes"

# --- owners and tokens ---
run 0 owner add acme
run 0 owner add globex
run 1 owner add acme
expect_stderr "already exists"
run 0 owner token acme --role admin --label "acme ci"
TOKEN=$(cat "$T/stdout")
[[ $TOKEN =~ ^cft_[A-Za-z0-9_-]{43}$ ]] || fail "token has an unexpected form: $TOKEN"
run 0 owner token globex --role operator --json
TOKEN2=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$T/stdout")
run 2 owner token acme --role root
run 0 owner tokens acme --json
json_check 'len(d) == 1 and d[0]["role"] == "admin" and d[0]["label"] == "acme ci" and "token" not in d[0]'
grep -q "${TOKEN:4}" "$T/stdout" && fail "owner tokens shows the token"
run 0 owner token-revoke globex 2
run 0 owner tokens globex --json
json_check 'd[0]["revoked"] is not None'
run 0 owner list --as-owner acme --json
json_check '[o["name"] for o in d] == ["acme"]'
pass "owners and tokens: printed once, listed without the token, revocable, scoped"

# --- the vendor's operator claims one device and a whole batch ---
A1=${R1[0]}
run 0 device claim "$A1" --owner acme
run 1 device claim "$A1" --owner globex
expect_stderr "use device transfer"
run 0 device claim --batch b2 --owner globex --json
json_check 'd["claimed"] == 4'
run 0 device claim --batch b2 --owner globex
grep -q "nothing claimed" "$T/stdout" || fail "second batch claim: $(cat "$T/stdout")"
run 1 device claim --batch nosuch --owner globex
expect_stderr "has no devices"
run 0 device list --owner globex --batch b2 --state claimed --json
json_check 'len(d["devices"]) == 4'
[ "$(sql "SELECT COUNT(*) FROM audit WHERE action = 'device.claim' AND details LIKE '%\"batch\":\"b2\"%'")" = 4 ] ||
    fail "the batch claim is not audited once per device"
pass "operator claims: one device, a batch of 4 in one go (audited per device), not twice"

# --- the customer claims with the code on the box ---
G1=${R1[1]}
run 0 device claim "$G1" --as-owner globex --code "$(code_of "$G1" "$T/reel1/claim-codes.csv")"
run 0 device show "$G1" --json
json_check 'd["owner"] == "globex" and d["state"] == "claimed"'
sql "SELECT details FROM audit WHERE action = 'device.claim' AND object = '$G1'" | grep -q '"how":"code"' ||
    fail "the claim by code is not audited as such"
pass "an owner claims a device with its claim code"

# --- a wrong code fails, is audited with owner and device, never the code ---
A2=${R1[2]}
WRONG=$(code_of "${R1[3]}" "$T/reel1/claim-codes.csv")
run 1 device claim "$A2" --as-owner acme --code "$WRONG"
expect_stderr "^certfleet: device claim: device $A2: not claimable with this claim code$"
run 0 audit log --action device.claim_failed --object "$A2" --json
json_check 'len(d) == 1 and d[0]["details"]["owner"] == "acme" and d[0]["details"]["reason"] == "wrong_code"'
run 0 device show "$A2" --json
json_check 'd["state"] == "on_hold" and d["owner"] is None'
pass "a wrong claim code fails, changes nothing, and the attempt is audited"

# --- isolation: acme cannot see, claim or transfer globex's devices ---
run 0 device list --as-owner acme --json
json_check 'sorted(x["id"] for x in d["devices"]) == ["'"$A1"'"]'
run 0 device list --as-owner acme --owner globex --json
json_check 'd["devices"] == []'
run 1 device show "$G1" --as-owner acme
expect_stderr "device $G1 not found"
cp "$T/stderr" "$T/show-other"
run 1 device show no-such-device --as-owner acme
[ "$(sed "s/$G1/X/" "$T/show-other")" = "$(sed 's/no-such-device/X/' "$T/stderr")" ] ||
    fail "showing another owner's device differs from an unknown one"
run 1 device claim "$G1" --as-owner acme --code "$(code_of "$G1" "$T/reel1/claim-codes.csv")"
expect_stderr "not claimable with this claim code$"
grep -q globex "$T/stderr" && fail "the refusal names the owner"
run 1 device claim "$G1" --as-owner acme --owner globex --code "$WRONG"
expect_stderr "only for itself"
run 1 device claim "${R1[4]}" --as-owner acme --owner acme
expect_stderr "with its claim code"
run 1 device transfer "$G1" --owner acme --as-owner acme
expect_stderr "device $G1 not found"
run 1 device suspend "$G1" --as-owner acme
expect_stderr "not found"
run 1 device group set "$G1" stolen --as-owner acme
expect_stderr "not found"
run 1 device transfer "$A1" --owner globex --as-owner acme --as-role operator
expect_stderr "needs an admin"
run 0 device show "$G1" --as-owner globex --json
json_check 'd["id"] == "'"$G1"'" and all(h["details"].get("owner") in (None, "globex") for h in d["history"])'
pass "isolation: acme cannot see, claim, transfer, suspend or group globex's devices"

# --- rate limit: after N failures even the right code waits for the window ---
A3=${R1[5]}
RIGHT=$(code_of "$A3" "$T/reel1/claim-codes.csv")
run 0 device claim-limits --device-failures 3 --device-window 4 --json
json_check 'd["device_failures"] == 3 and d["device_window_s"] == 4'
for _ in 1 2 3; do
    run 1 device claim "$A3" --as-owner acme --code "$WRONG"
done
run 1 device claim "$A3" --as-owner acme --code "$RIGHT"
expect_stderr "too many failed claim attempts"
run 0 device show "$A3" --json
json_check 'd["state"] == "on_hold"'
sleep 4.5
run 0 device claim "$A3" --as-owner acme --code "$RIGHT"
run 0 audit log --action device.claim_failed --object "$A3" --json
json_check 'len(d) == 4 and d[-1]["details"]["reason"] == "rate_limited"'
pass "rate limit: the right code is refused after 3 failures until the window passes"

# --- transfer (resale) revokes every certificate of the previous ownership ---
new_csr dev1
run 0 issue --csr "$T/dev1.csr" --device "$A1" --out "$T/a1-1.pem"
new_csr dev2
run 0 issue --csr "$T/dev2.csr" --device "$A1" --out "$T/a1-2.pem"
new_csr dev3
run 0 issue --csr "$T/dev3.csr" --device "$G1" --out "$T/g1.pem"
S1=$(openssl x509 -in "$T/a1-1.pem" -noout -serial | cut -d= -f2)
S3=$(openssl x509 -in "$T/g1.pem" -noout -serial | cut -d= -f2)
run 0 device show "$A1" --json
json_check 'd["state"] == "active" and len(d["certificates"]) == 2'
run 0 device group set "$A1" acme-lobby
run 0 device transfer "$A1" --owner globex --json
json_check 'd["revoked"] == 2'
[ "$(sql "SELECT COUNT(*) FROM certificates WHERE device_id = '$A1' AND status = 'revoked' AND reason = 3 AND revoked_us > 0")" = 2 ] ||
    fail "transfer: the certificates of $A1 are not revoked with reason 3: $(sql "SELECT serial, status, reason FROM certificates")"
[ "$(sql "SELECT status FROM certificates WHERE serial = '$S3'")" = good ] ||
    fail "transfer revoked another device's certificate"
sql "SELECT status, reason FROM certificates WHERE serial = '$S1'" | grep -qx "revoked|3" || fail "serial $S1 not revoked"
run 0 device show "$A1" --json
json_check 'd["owner"] == "globex" and d["state"] == "claimed" and d["group"] is None'
run 0 audit log --action device.transfer --object "$A1" --json
json_check 'd[0]["details"]["revoked"] == 2 and d[0]["details"]["previous"] == "acme"'
run 0 device show "$A1" --as-owner globex --json
json_check 'd["certificates"] == [] and "acme" not in json.dumps(d)'
run 1 device show "$A1" --as-owner acme
pass "transfer revokes the previous owner's certificates (affiliationChanged), needs a fresh enrollment"

# --- states ---
run 1 device suspend "$A1"
expect_stderr "is claimed: cannot make it suspended \(only an active device can be suspended\)"
run 1 device resume "$A3"
expect_stderr "only a suspended device can be resumed"
run 0 device suspend "$G1" --as-owner globex --as-role operator
run 0 device suspend "$G1"
grep -q "already suspended" "$T/stdout" || fail "suspending twice: $(cat "$T/stdout")"
run 0 device resume "$G1"
run 1 device decommission "$G1" --as-owner globex --as-role operator
expect_stderr "needs an admin"
run 0 device decommission "$G1" --json
json_check 'd["revoked"] == 1'
run 1 device resume "$G1"
expect_stderr "decommissioned is final"
run 1 device transfer "$G1" --owner acme
expect_stderr "decommissioned"
pass "state changes follow the design; invalid transitions are refused with a reason"

# --- groups ---
run 0 device group set "${R1[6]}" lobby
run 0 device group set "${R1[7]}" lobby
run 0 device list --group lobby --json
json_check 'len(d["devices"]) == 2'
run 0 device ungroup "${R1[7]}"
run 0 device list --group lobby --json
json_check '[x["id"] for x in d["devices"]] == ["'"${R1[6]}"'"]'
run 1 device group set "${R1[6]}" "bad name"
run 2 device group frob "${R1[6]}" x
[ "$(sql "SELECT COUNT(*) FROM audit WHERE action = 'device.group'")" = 4 ] || fail "groups not audited"
pass "groups: set, cleared, filtered on, audited"

# --- paging: keyset by id, every device exactly once ---
"$PY" - "$CERTFLEET" <<'EOF' || fail "paging"
import json, subprocess, sys
seen, after, pages = [], None, 0
while True:
    args = [sys.argv[1], "device", "list", "--limit", "5", "--json"] + (["--after", after] if after else [])
    d = json.loads(subprocess.run(args, check=True, capture_output=True).stdout)
    pages += 1
    assert len(d["devices"]) <= 5
    seen += [x["id"] for x in d["devices"]]
    if d["next"] is None:
        break
    assert d["next"] == seen[-1]
    after = d["next"]
assert pages == 3, pages
assert seen == sorted(seen) and len(seen) == len(set(seen)) == 12, seen
EOF
run 0 device list --manufacturer chipco2 --json
json_check 'len(d["devices"]) == 4 and d["next"] is None'
run 0 device list --owner - --json
json_check 'all(x["owner"] is None for x in d["devices"]) and len(d["devices"]) == 5'
run 1 device list --manufacturer nosuch
run 2 device list --state sleeping
pass "paging by id covers every device once; filters by manufacturer and the vendor's own"

# --- device show: the full history, in order ---
run 0 device show "$A1" --json
json_check '[h["action"] for h in d["history"]] == ["device.claim", "cert.issue", "cert.issue", "device.group", "device.transfer"]'
run 0 device show "$A1"
grep -q "^history (5)" "$T/stdout" || fail "device show text: $(cat "$T/stdout")"
pass "device show lists the device's audit records in order and its certificates"

# --- no claim code and no token in clear: store file, its dump, the audit log, the output ---
run 0 audit log --json
cp "$T/stdout" "$T/audit.json"
sqlite3 "$DB" .dump >"$T/dump.sql"
for csv in "$T/reel1/claim-codes.csv" "$T/reel2/claim-codes.csv"; do
    tail -n +2 "$csv" | cut -d, -f2
done >"$T/secrets"
echo "$TOKEN" >>"$T/secrets"
echo "$TOKEN2" >>"$T/secrets"
[ "$(wc -l <"$T/secrets")" = 14 ] || fail "expected 14 secrets"
while read -r s; do
    bare=${s//-/}
    for f in "$DB" "$DB-wal" "$T/dump.sql" "$T/audit.json"; do
        [ -e "$f" ] || continue
        if grep -a -q -F -e "$s" -e "$bare" "$f"; then fail "a secret appears in clear in $f"; fi
    done
    # What certfleet printed may contain a token only where it was issued (once).
    if [[ $s != cft_* ]] && grep -a -q -F -e "$s" "$LOG"; then fail "a claim code was echoed: $(grep -a -F -e "$s" "$LOG" | head -3)"; fi
done <"$T/secrets"
[ "$(grep -c -F "$TOKEN" "$LOG")" = 1 ] || fail "the token was printed more than once"
pass "claim codes and tokens appear nowhere in clear (store, dump, audit log, output)"

run 0 audit verify
pass "audit chain intact"
