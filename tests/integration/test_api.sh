#!/bin/bash
# test_api.sh - the management API /api/v1 with curl and python3 as clients: every endpoint
# against a real server, bearer tokens (none, wrong, revoked: 401 with WWW-Authenticate),
# roles (403), JSON errors with the status of the one error map, 415, malformed JSON (400
# naming the position), hostile paths and queries, the body caps (a small one for every
# route, a large one for manifest uploads), keyset pagination over a fleet walked exactly
# once, and a request log that names the device and never the token.
. "$CF_SOURCE_DIR/tests/lib/common.sh"

PY=$(cf_python)
D=$T/data
export CERTFLEET_DATA=$D
cf init --data "$D" --org Vendor >/dev/null
cf ca export --out "$T/chain.pem"
split_chain "$T/chain.pem"

TLS_PORT=$(free_port)
HTTP_PORT=$(free_port)
while [ "$HTTP_PORT" = "$TLS_PORT" ]; do HTTP_PORT=$(free_port); done
URL=https://127.0.0.1:$TLS_PORT/api/v1
SRV_PID=
SRV_LOG=$T/serve.log
at_exit '[ -z "$SRV_PID" ] || kill -KILL "$SRV_PID" 2>/dev/null'
"$CERTFLEET" serve --listen "127.0.0.1:$TLS_PORT" --http "127.0.0.1:$HTTP_PORT" --threads 2 \
    --max-upload 200000 2>>"$SRV_LOG" &
SRV_PID=$!
for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$HTTP_PORT/healthz" && break
    kill -0 "$SRV_PID" 2>/dev/null || { cat "$SRV_LOG" >&2; fail "serve exited at start"; }
    sleep 0.1
done

VENDOR=$(cf owner token - --role admin --label api-test 2>/dev/null)
AUDITOR=$(cf owner token - --role auditor 2>/dev/null)

# api METHOD PATH [TOKEN] [curl args...]: the status in $ST, the body in $T/body.
api() {
    local m=$1 p=$2 tok=${3-$VENDOR}
    shift 3 2>/dev/null || shift $#
    local auth=()
    [ -z "$tok" ] || auth=(-H "Authorization: Bearer $tok")
    ST=$(curl -s -o "$T/body" -D "$T/headers" -w '%{http_code}' --cacert "$T/root.pem" -X "$m" \
        "${auth[@]}" "$@" "$URL$p")
}
# post METHOD PATH JSON [TOKEN]: a JSON body.
post() { api "$1" "$2" "${4-$VENDOR}" -H "Content-Type: application/json" --data-binary "$3"; }
want() { [ "$ST" = "$1" ] || fail "$2: status $ST, not $1: $(head -c 400 "$T/body")"; }
# jcheck PYTHON-ASSERTION-ON-d: on the last body.
jcheck() {
    "$PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert eval(sys.argv[2]), d' "$T/body" "$1" || fail "body is not as expected ($1): $(head -c 600 "$T/body")"
}
jget() { "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$T/body" "$1"; }
error_is() { # error_is STATUS CODE WHAT
    want "$1" "$3"
    jcheck 'd["error"]["code"] == "'"$2"'" and d["error"]["message"]'
}

# ---- authentication ----
api GET /status ""
error_is 401 unauthorized "no token"
grep -qi '^WWW-Authenticate: Bearer' "$T/headers" || fail "401 without WWW-Authenticate: Bearer"
api GET /status "cft_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
error_is 401 unauthorized "wrong token"
grep -qi '^WWW-Authenticate: Bearer.*invalid_token' "$T/headers" || fail "wrong token: no invalid_token"
api GET /status "not a token at all"
error_is 401 unauthorized "malformed token"
api GET /status "" -H "Authorization: Basic dXNlcjpwYXNz"
error_is 401 unauthorized "basic auth"
api GET /nosuch ""
error_is 401 unauthorized "unknown path without a token (nothing is said before authentication)"
api GET /status
want 200 "status with the vendor's token"
jcheck 'd["org"] == "Vendor" and d["cas"] == 2 and d["devices"]["total"] == 0'
pass "401 without, with a wrong or a malformed token (WWW-Authenticate: Bearer); 200 with one"

# ---- routing and request errors ----
api GET /nosuch
error_is 404 not_found "unknown path"
api DELETE /status
error_is 405 method_not_allowed "wrong method"
post POST /owners '{"name": "acme"'
error_is 400 bad_request "truncated JSON"
grep -q 'line 1, column' "$T/body" || fail "malformed JSON without its position: $(cat "$T/body")"
post POST /owners '{"name": "acme", "name": "evil"}'
error_is 400 bad_request "duplicate key"
post POST /owners '["acme"]'
error_is 400 bad_request "array body"
post POST /owners '{"name": 12}'
error_is 400 invalid "name not a string"
post POST /owners '{"name": "a\u0000b"}'
error_is 400 bad_request "NUL in a string"
api POST /owners "$VENDOR" -H "Content-Type: text/plain" --data-binary '{"name": "acme"}'
error_is 415 unsupported_media_type "text/plain body"
api POST /owners "$VENDOR" --data-binary '{"name": "acme"}' -H "Content-Type:"
error_is 415 unsupported_media_type "body without Content-Type"
api GET "/devices?limit=abc"
error_is 400 invalid "limit not a number"
api GET "/devices?limit=5&limit=6"
error_is 400 bad_request "parameter twice"
api GET "/devices?state=bogus"
error_is 400 invalid "unknown state"
api GET "/devices/a%2Fb"
error_is 404 not_found "encoded slash in a segment"
api GET "/devices/a%00b"
error_is 404 not_found "encoded NUL in a segment"
api GET "/devices/a%zz"
error_is 404 not_found "bad percent escape"
api GET "/devices/a%ff"
error_is 404 not_found "a segment that is not UTF-8"
api GET "/devices?owner=%ff"
error_is 400 bad_request "a query value that is not UTF-8"
api GET "/devices?owner"
[ "$ST" = 400 ] || [ "$ST" = 200 ] || fail "a query name without a value: $ST"
api GET "/devices/$(head -c 3000 /dev/zero | tr '\0' x)"
[ "$ST" = 400 ] || [ "$ST" = 404 ] || fail "3000-character id: $ST"
head -c 70000 /dev/zero | tr '\0' ' ' >"$T/big.json"
api POST /owners "$VENDOR" -H "Content-Type: application/json" --data-binary @"$T/big.json"
error_is 413 payload_too_large "a body over 64 KiB on an ordinary route"
curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/api/v1/status" \
    -H "Authorization: Bearer $VENDOR" | grep -qx 404 || fail "the API answers on the plain listener"
pass "404, 405, 400 (JSON position, duplicates, types, NUL), 415, 413, hostile paths, TLS only"

# ---- owners and tokens ----
post POST /owners '{"name": "acme"}'
want 200 "owner add"
jcheck 'd["name"] == "acme" and d["id"] >= 1'
post POST /owners '{"name": "acme"}'
error_is 409 exists "owner added twice"
post POST /owners '{"name": "globex"}'
api GET /owners
want 200 "owner list"
jcheck 'sorted(o["name"] for o in d) == ["acme", "globex"]'
post POST /owners/acme/tokens '{"role": "admin", "label": "acme ci"}'
want 200 "token create"
ACME=$(jget 'd["token"]')
post POST /owners/acme/tokens '{"role": "root"}'
error_is 400 invalid "unknown role"
post POST /owners/acme/tokens '{"role": "auditor"}'
ACME_AUD=$(jget 'd["token"]')
ACME_AUD_ID=$(jget 'd["id"]')
api GET /owners/acme/tokens
want 200 "token list"
jcheck 'len(d) == 2 and all("token" not in t and "hash" not in t for t in d)'
grep -q "${ACME:4}" "$T/body" && fail "token list shows a token"
api GET /owners "$ACME"
jcheck '[o["name"] for o in d] == ["acme"]'
api GET /status "$ACME"
error_is 403 policy "an owner's token asks for the fleet's status"
api GET /owners/globex/tokens "$ACME"
error_is 404 not_found "acme's admin lists globex's tokens"
post POST /owners '{"name": "evil"}' "$ACME"
error_is 403 policy "an owner adds an owner"
api DELETE "/owners/acme/tokens/$ACME_AUD_ID"
want 200 "token revoke"
api GET /owners "$ACME_AUD"
error_is 401 unauthorized "revoked token"
api DELETE "/owners/acme/tokens/$ACME_AUD_ID"
error_is 404 not_found "revoked twice"
pass "owners and tokens: add, list, create, list without secrets, revoke (then 401), scoped"

# ---- claim limits ----
api GET /settings/claim-limits "$AUDITOR"
want 200 "claim limits get"
jcheck 'd["device_failures"] == 5 and d["owner_window_s"] == 3600'
post PUT /settings/claim-limits '{"device_failures": 7}' "$AUDITOR"
error_is 403 policy "an auditor sets the claim limits"
post PUT /settings/claim-limits '{"device_failures": 7}'
want 200 "claim limits set"
jcheck 'd["device_failures"] == 7 and d["device_window_s"] == 900'
post PUT /settings/claim-limits '{"device_failures": 0}'
error_is 400 invalid "claim limit 0"
pass "claim limits: read by any, set by the vendor's admin"

# ---- manufacturers and a manifest upload ----
cf manifest make --devices 23 --out "$T/reel" --threads 2 >/dev/null
"$PY" - "$T/reel/root.crt" "$T/reel/manifest-signer.crt" >"$T/mfr.json" <<'EOF'
import json, sys
print(json.dumps({"name": "chipco", "roots": [open(sys.argv[1]).read()],
                  "signers": [{"name": "signer.crt", "pem": open(sys.argv[2]).read()}]}))
EOF
api POST /manufacturers "$VENDOR" -H "Content-Type: application/json" --data-binary @"$T/mfr.json"
want 200 "manufacturer add"
jcheck 'd["name"] == "chipco" and d["created"] is True and len(d["added"]) == 2'
post POST /manufacturers '{"name": "empty", "roots": []}'
error_is 400 invalid "manufacturer without certificates"
post POST /manufacturers '{"name": "bad", "roots": [{"der_base64": "!!!"}]}'
error_is 400 invalid "manufacturer with base64 garbage"
api POST /manufacturers "$ACME" -H "Content-Type: application/json" --data-binary @"$T/mfr.json"
error_is 403 policy "an owner adds a manufacturer"
api GET /manufacturers
want 200 "manufacturer list"
jcheck '[m["name"] for m in d] == ["chipco"]'
api GET /manufacturers/chipco
want 200 "manufacturer show"
jcheck 'd["name"] == "chipco" and len(d["certificates"]) == 2'
api POST "/manufacturers/chipco/manifests?batch=b1&name=reel.json" "$VENDOR" \
    -H "Content-Type: application/json" --data-binary @"$T/reel/manifest.json"
want 200 "manifest upload"
jcheck 'd["added"] == 23 and d["rejected"] == 0 and d["complete"] and d["manifest"] == "reel.json" and d["problems"] == []'
api POST "/manufacturers/chipco/manifests?batch=b1" "$VENDOR" \
    -H "Content-Type: application/json" --data-binary @"$T/reel/manifest.json"
want 200 "the same manifest again"
jcheck 'd["added"] == 0 and d["present"] == 23'
printf '{"garbage' >"$T/broken.json"
api POST "/manufacturers/chipco/manifests" "$VENDOR" -H "Content-Type: application/json" \
    --data-binary @"$T/broken.json"
[ "$ST" = 200 ] || [ "$ST" = 400 ] || fail "broken manifest: $ST"
grep -q '"error"' "$T/body" || fail "broken manifest without an error: $(cat "$T/body")"
api POST "/manufacturers/chipco/manifests?file=/etc/passwd" "$VENDOR" \
    -H "Content-Type: application/json" --data-binary @"$T/reel/manifest.json"
error_is 400 invalid "an upload naming its own file"
api POST "/manufacturers/nosuch/manifests" "$VENDOR" -H "Content-Type: application/json" \
    --data-binary @"$T/reel/manifest.json"
error_is 404 not_found "upload for an unknown manufacturer"
head -c 300000 /dev/zero | tr '\0' ' ' >"$T/huge.json"
ST=$(curl -s -o "$T/body" -w '%{http_code}' --cacert "$T/root.pem" -H "Expect: 100-continue" \
    -H "Authorization: Bearer $VENDOR" -H "Content-Type: application/json" \
    --data-binary @"$T/huge.json" "$URL/manufacturers/chipco/manifests" || true)
[ "$ST" = 413 ] || fail "an upload over --max-upload: $ST, not 413"
[ -z "$(ls -A "$D/uploads" 2>/dev/null)" ] || fail "uploads left behind: $(ls -A "$D/uploads")"
post POST /manufacturers '{"name": "spare", "roots": ["'"$(awk '{printf "%s\\n", $0}' "$T/reel/root.crt")"'"]}'
want 200 "a second manufacturer"
api DELETE /manufacturers/spare
want 200 "manufacturer remove"
api DELETE /manufacturers/chipco
error_is 403 policy "removing a manufacturer with devices"
pass "manufacturers: add (PEM, named), list, show, remove; manifest upload, report, caps, no leftovers"

# ---- devices: list, pagination, show ----
api GET "/devices?limit=1000" "$AUDITOR"
want 200 "device list"
jcheck 'len(d["devices"]) == 23 and d["next"] is None and all(x["state"] == "on_hold" for x in d["devices"])'
"$PY" - "$URL/devices" "$VENDOR" "$T/root.pem" "$T/body" <<'EOF' || fail "pagination"
import json, ssl, sys, urllib.request
url, token, ca, listing = sys.argv[1:]
every = [x["id"] for x in json.load(open(listing))["devices"]]
ctx = ssl.create_default_context(cafile=ca)
seen, after, pages = [], None, 0
while True:
    q = "?limit=5" + ("&after=" + after if after else "")
    req = urllib.request.Request(url + q, headers={"Authorization": "Bearer " + token})
    d = json.load(urllib.request.urlopen(req, context=ctx))
    seen += [x["id"] for x in d["devices"]]
    pages += 1
    assert len(d["devices"]) <= 5, d
    if not d["next"]:
        break
    after = d["next"]
assert seen == sorted(every), (seen, every)
assert len(set(seen)) == len(seen) == 23
assert pages in (5, 6), pages
EOF
pass "pagination: 23 devices walked by 5, each exactly once, in id order"
mapfile -t IDS < <(jget '"\n".join(x["id"] for x in d["devices"])')
D1=${IDS[0]} D2=${IDS[1]} D3=${IDS[2]}
api GET "/devices/$D1"
want 200 "device show"
jcheck 'd["id"] == "'"$D1"'" and d["state"] == "on_hold" and "history" in d and "certificates" in d'
api GET "/devices/nosuch"
error_is 404 not_found "unknown device"
api GET "/devices?batch=b1&state=on_hold&manufacturer=chipco&limit=3"
jcheck 'len(d["devices"]) == 3 and d["next"] is not None'
api GET "/devices?owner=acme"
jcheck 'd["devices"] == []'

# ---- claims, transfer, states, groups, issue ----
post POST "/devices/$D1/claim" '{"owner": "acme"}'
want 200 "claim by the vendor"
jcheck 'd == {"device": "'"$D1"'", "state": "claimed", "how": "operator"}'
post POST "/devices/$D1/claim" '{"owner": "globex"}'
error_is 403 policy "claim of a claimed device"
post POST "/devices/$D2/claim" '{}'
error_is 400 invalid "claim without an owner"
api POST /batches/b1/claim "$VENDOR" -H "Content-Type: application/json" --data-binary '{"owner": "globex"}'
want 200 "batch claim"
jcheck 'd["claimed"] == 22'
api GET "/devices?owner=acme" "$ACME"
jcheck '[x["id"] for x in d["devices"]] == ["'"$D1"'"]'
new_csr dev1
post POST "/devices/$D1/certificates" "$("$PY" -c 'import json,sys; print(json.dumps({"csr": open(sys.argv[1]).read()}))' "$T/dev1.csr")" "$ACME"
want 200 "issue with the owner's token"
jget 'd["pem"]' >"$T/dev1.pem"
openssl verify -CAfile "$T/root.pem" -untrusted "$T/issuing.pem" "$T/dev1.pem" >/dev/null ||
    fail "the issued certificate does not verify"
jcheck 'd["device"] == "'"$D1"'" and len(d["serial"]) > 0 and "BEGIN CERTIFICATE" in d["issuing_pem"]'
post POST "/devices/$D1/certificates" '{"csr": "-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n-----END CERTIFICATE REQUEST-----\n"}'
error_is 400 invalid "a garbage CSR"
post POST "/devices/$D1/certificates" '{"csr_base64": "@@@"}'
error_is 400 invalid "base64 garbage"
post POST "/devices/$D1/suspend" '{}' "$ACME"
want 200 "suspend"
jcheck 'd["state"] == "suspended" and d["changed"] is True'
api POST "/devices/$D1/resume" "$ACME"
want 200 "resume without a body"
jcheck 'd["state"] == "active"'
post PUT "/devices/$D1/group" '{"group": "north"}' "$ACME"
want 200 "group set"
api GET "/devices?group=north" "$ACME"
jcheck '[x["id"] for x in d["devices"]] == ["'"$D1"'"]'
api DELETE "/devices/$D1/group" "$ACME"
want 200 "group clear"
jcheck 'd["group"] is None'
post POST "/devices/$D1/transfer" '{"owner": "globex"}' "$ACME"
want 200 "transfer"
jcheck 'd["owner"] == "globex" and d["revoked"] == 1'
api GET "/devices/$D1" "$ACME"
error_is 404 not_found "acme sees the device it gave away"
api POST "/devices/$D2/decommission"
want 200 "decommission"
jcheck 'd["state"] == "decommissioned"'
api POST "/devices/$D2/resume"
error_is 403 policy "resume a decommissioned device"
pass "devices: show, filters, claim (one, batch), issue, suspend, resume, groups, transfer, decommission"

# ---- audit ----
api GET "/audit?action=device.transfer" "$AUDITOR"
want 200 "audit log"
jcheck 'len(d["records"]) == 1 and d["records"][0]["object"] == "'"$D1"'" and d["records"][0]["actor"].startswith("token:")'
api GET "/audit?limit=2"
jcheck 'len(d["records"]) == 2 and d["next"] == d["records"][1]["seq"]'
api GET "/audit?from=yesterday"
error_is 400 invalid "audit from garbage"
api GET /audit/verify "$AUDITOR"
want 200 "audit verify"
jcheck 'd["ok"] is True and d["records"] > 20'
api GET /audit "$ACME"
error_is 403 policy "an owner reads the whole audit log"
pass "audit log (filters, paging) and verify for the vendor; not for an owner"

# ---- the request log ----
grep -q "\"device\":\"$D1\"" "$SRV_LOG" || fail "the log does not name the device of a device call"
for tok in "$VENDOR" "$ACME" "$AUDITOR"; do
    grep -q "${tok:4}" "$SRV_LOG" && fail "the log holds a token"
done
grep -q '"path":"/api/v1/devices/' "$SRV_LOG" || fail "API calls are not logged"
pass "the request log names the device and never a token"

kill -TERM "$SRV_PID"
wait "$SRV_PID" || fail "serve did not stop cleanly"
SRV_PID=
cf audit verify >/dev/null || fail "audit chain broken after the API session"
pass "clean stop; the audit chain verifies"
