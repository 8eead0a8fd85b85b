#!/bin/bash
# test_api_isolation.sh - owner isolation and roles through the management API: with owner
# A's token none of owner B's devices can be listed, shown, claimed, transferred, suspended,
# resumed, decommissioned, grouped or issued to, and an auditor token can change nothing.
# One check per operation, each asserting that the store did not change: the device as the
# vendor sees it (state, owner, group, certificates) and the audit log (nothing but a
# recorded failed claim).
. "$CF_SOURCE_DIR/tests/lib/common.sh"

PY=$(cf_python)
export CERTFLEET_DATA=$T/data
cf init --org Vendor >/dev/null
cf ca export --out "$T/chain.pem"
split_chain "$T/chain.pem"

# A vendor's fleet: 8 devices on hold with claim codes; acme gets 2, globex 5 (active,
# one suspended, one grouped), one stays on hold.
cf manifest make --devices 8 --out "$T/reel" --threads 2 >/dev/null
cf manufacturer add --name chipco --root "$T/reel/root.crt" --signer "$T/reel/manifest-signer.crt" >/dev/null
cf onboard --manifest "$T/reel/manifest.json" --manufacturer chipco --batch b1 \
    --claim-codes "$T/reel/claim-codes.csv" >/dev/null
mapfile -t IDS < <(tail -n +2 "$T/reel/claim-codes.csv" | cut -d, -f1 | sort)
code_of() { awk -F, -v id="$1" '$1 == id { print $2 }' "$T/reel/claim-codes.csv"; }
cf owner add acme >/dev/null
cf owner add globex >/dev/null
A1=${IDS[0]} A2=${IDS[1]}
B1=${IDS[2]} B2=${IDS[3]} B3=${IDS[4]} B4=${IDS[5]} B5=${IDS[6]} HOLD=${IDS[7]}
for d in "$A1" "$A2"; do cf device claim "$d" --owner acme >/dev/null; done
for d in "$B1" "$B2" "$B3" "$B4" "$B5"; do cf device claim "$d" --owner globex >/dev/null; done
for d in "$A1" "$B1" "$B2" "$B3" "$B4"; do
    new_csr "$d"
    cf issue --csr "$T/$d.csr" --device "$d" --out "$T/$d.pem"
done
cf device suspend "$B2" >/dev/null
cf device group set "$B3" east >/dev/null

VENDOR=$(cf owner token - --role admin 2>/dev/null)
V_AUD=$(cf owner token - --role auditor 2>/dev/null)
A_ADM=$(cf owner token acme --role admin 2>/dev/null)
A_OPR=$(cf owner token acme --role operator 2>/dev/null)
A_AUD=$(cf owner token acme --role auditor 2>/dev/null)

TLS_PORT=$(free_port)
HTTP_PORT=$(free_port)
while [ "$HTTP_PORT" = "$TLS_PORT" ]; do HTTP_PORT=$(free_port); done
URL=https://127.0.0.1:$TLS_PORT/api/v1
SRV_PID=
at_exit '[ -z "$SRV_PID" ] || kill -KILL "$SRV_PID" 2>/dev/null'
"$CERTFLEET" serve --listen "127.0.0.1:$TLS_PORT" --http "127.0.0.1:$HTTP_PORT" --threads 1 \
    2>>"$T/serve.log" &
SRV_PID=$!
for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$HTTP_PORT/healthz" && break
    kill -0 "$SRV_PID" 2>/dev/null || { cat "$T/serve.log" >&2; fail "serve exited at start"; }
    sleep 0.1
done

# call TOKEN METHOD PATH [JSON]: the status in $ST, the body in $T/body.
call() {
    local tok=$1 m=$2 p=$3 body=${4-}
    local args=()
    [ -z "$body" ] || args=(-H "Content-Type: application/json" --data-binary "$body")
    ST=$(curl -s -o "$T/body" -w '%{http_code}' --cacert "$T/root.pem" -X "$m" \
        -H "Authorization: Bearer $tok" "${args[@]}" "$URL$p")
}
# The store as the vendor sees a device (its history aside), and the audit log's actions
# after the snapshot.
device_state() {
    call "$VENDOR" GET "/devices/$1"
    "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); d.pop("history"); print(json.dumps(d, sort_keys=True))' "$T/body"
}
audit_head() { cf status --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["audit"]["records"])'; }
# refused WHAT STATUS DEVICE TOKEN METHOD PATH [JSON]: the call is refused with STATUS and
# the device is as it was; the audit log gained nothing but failed claims.
refused() {
    local what=$1 want=$2 dev=$3; shift 3
    local before head after
    before=$(device_state "$dev")
    head=$(audit_head)
    call "$@"
    [ "$ST" = "$want" ] || fail "$what: status $ST, not $want: $(head -c 300 "$T/body")"
    "$PY" -c 'import json,sys; e=json.load(open(sys.argv[1]))["error"]; assert e["code"] and e["message"]' \
        "$T/body" || fail "$what: not a JSON error: $(head -c 300 "$T/body")"
    after=$(device_state "$dev")
    [ "$before" = "$after" ] || fail "$what: the device changed: $before -> $after"
    cf audit log --after "$head" --json | "$PY" -c '
import json, sys
recs = json.load(sys.stdin)
assert all(r["action"] == "device.claim_failed" for r in recs), recs' ||
        fail "$what: the audit log gained a record"
    pass "$what: $want, nothing changed"
}
csr_json() { "$PY" -c 'import json,sys; print(json.dumps({"csr": open(sys.argv[1]).read()}))' "$1"; }
new_csr attacker

# ---- owner A's tokens on owner B's devices ----
call "$A_ADM" GET /devices
"$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); assert sorted(x["id"] for x in d["devices"]) == sorted(sys.argv[2:]), d' \
    "$T/body" "$A1" "$A2" || fail "acme's list holds other devices: $(cat "$T/body")"
call "$A_ADM" GET "/devices?owner=globex"
"$PY" -c 'import json,sys; assert json.load(open(sys.argv[1]))["devices"] == []' "$T/body" ||
    fail "acme lists globex's devices with owner=globex"
call "$A_ADM" GET "/devices?batch=b1&limit=100"
grep -q "$B1" "$T/body" && fail "acme lists globex's devices by batch"
call "$A_ADM" GET "/devices?after=$A1&limit=100"
grep -q "$B1\|$B2" "$T/body" && fail "acme pages into globex's devices"
pass "list: acme sees only its own devices, whatever the filter or page"
refused "show B's device" 404 "$B1" "$A_ADM" GET "/devices/$B1"
refused "show B's device (auditor)" 404 "$B1" "$A_AUD" GET "/devices/$B1"
refused "claim B's device with its own code" 403 "$B5" "$A_ADM" POST "/devices/$B5/claim" \
    "{\"code\": \"$(code_of "$B5")\"}"
refused "claim B's device without a code" 403 "$B5" "$A_ADM" POST "/devices/$B5/claim" '{"owner": "acme"}'
refused "claim B's batch" 403 "$B5" "$A_ADM" POST /batches/b1/claim '{"owner": "acme"}'
refused "transfer B's device to A" 404 "$B1" "$A_ADM" POST "/devices/$B1/transfer" '{"owner": "acme"}'
refused "suspend B's device" 404 "$B1" "$A_ADM" POST "/devices/$B1/suspend"
refused "suspend B's device (operator)" 404 "$B1" "$A_OPR" POST "/devices/$B1/suspend"
refused "resume B's suspended device" 404 "$B2" "$A_ADM" POST "/devices/$B2/resume"
refused "decommission B's device" 404 "$B4" "$A_ADM" POST "/devices/$B4/decommission"
refused "group B's device" 404 "$B1" "$A_ADM" PUT "/devices/$B1/group" '{"group": "stolen"}'
refused "ungroup B's device" 404 "$B3" "$A_ADM" DELETE "/devices/$B3/group"
refused "issue to B's device" 404 "$B1" "$A_ADM" POST "/devices/$B1/certificates" "$(csr_json "$T/attacker.csr")"
refused "issue to B's device (operator)" 404 "$B1" "$A_OPR" POST "/devices/$B1/certificates" "$(csr_json "$T/attacker.csr")"
refused "issue to an unknown device (no device is made for A)" 404 "$B1" "$A_ADM" \
    POST "/devices/brand-new-device/certificates" "$(csr_json "$T/attacker.csr")"
call "$VENDOR" GET /devices/brand-new-device
[ "$ST" = 404 ] || fail "an owner's issue created a device"
refused "read B's tokens" 404 "$B1" "$A_ADM" GET /owners/globex/tokens
refused "make a token of B" 404 "$B1" "$A_ADM" POST /owners/globex/tokens '{"role": "admin"}'
refused "make a vendor token" 403 "$B1" "$A_ADM" POST /owners/-/tokens '{"role": "admin"}'

# ---- auditor tokens change nothing (the vendor's auditor and an owner's) ----
for who in V_AUD A_AUD; do
    tok=${!who}
    own=$B1 own2=$B2 own3=$B3 own4=$B4
    if [ "$who" = A_AUD ]; then own=$A1 own2=$A1 own3=$A1 own4=$A2; fi
    refused "$who: claim" 403 "$HOLD" "$tok" POST "/devices/$HOLD/claim" '{"owner": "acme"}'
    refused "$who: claim by code" 403 "$HOLD" "$tok" POST "/devices/$HOLD/claim" "{\"code\": \"$(code_of "$HOLD")\"}"
    refused "$who: claim batch" 403 "$HOLD" "$tok" POST /batches/b1/claim '{"owner": "acme"}'
    refused "$who: transfer" 403 "$own" "$tok" POST "/devices/$own/transfer" '{"owner": "globex"}'
    refused "$who: suspend" 403 "$own" "$tok" POST "/devices/$own/suspend"
    refused "$who: resume" 403 "$own2" "$tok" POST "/devices/$own2/resume"
    refused "$who: decommission" 403 "$own4" "$tok" POST "/devices/$own4/decommission"
    refused "$who: group set" 403 "$own" "$tok" PUT "/devices/$own/group" '{"group": "x"}'
    refused "$who: group clear" 403 "$own3" "$tok" DELETE "/devices/$own3/group"
    refused "$who: issue" 403 "$own" "$tok" POST "/devices/$own/certificates" "$(csr_json "$T/attacker.csr")"
    refused "$who: owner add" 403 "$own" "$tok" POST /owners '{"name": "mallory"}'
    refused "$who: token create" 403 "$own" "$tok" POST /owners/acme/tokens '{"role": "admin"}'
    refused "$who: token revoke" 403 "$own" "$tok" DELETE /owners/acme/tokens/1
    refused "$who: claim limits" 403 "$own" "$tok" PUT /settings/claim-limits '{"device_failures": 99}'
    refused "$who: manufacturer add" 403 "$own" "$tok" POST /manufacturers '{"name": "x", "roots": ["x"]}'
    refused "$who: manufacturer remove" 403 "$own" "$tok" DELETE /manufacturers/chipco
    refused "$who: manifest upload" 403 "$own" "$tok" POST /manufacturers/chipco/manifests '{}'
done
call "$A_AUD" GET "/devices/$A1"
[ "$ST" = 200 ] || fail "acme's auditor cannot read acme's device: $ST"
call "$V_AUD" GET /audit/verify
[ "$ST" = 200 ] || fail "the vendor's auditor cannot verify the audit log: $ST"
pass "auditors read and change nothing"

# ---- and the owner's own devices do answer (the refusals above are not blanket) ----
call "$A_OPR" POST "/devices/$A1/suspend"
[ "$ST" = 200 ] || fail "acme's operator cannot suspend acme's device: $ST $(cat "$T/body")"
call "$A_OPR" POST "/devices/$A1/certificates" "$(csr_json "$T/attacker.csr")"
[ "$ST" = 200 ] || fail "acme's operator cannot issue to acme's device: $ST $(cat "$T/body")"
pass "acme's own devices answer acme's tokens"

kill -TERM "$SRV_PID"
wait "$SRV_PID" || fail "serve did not stop cleanly"
SRV_PID=
cf audit verify >/dev/null || fail "audit chain broken"
