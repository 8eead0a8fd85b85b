#!/bin/bash
# test_est_enroll.sh - enrollment over EST (RFC 7030) with real peers: curl is the device,
# presenting the birth certificate that manifest make wrote (--cert/--key) with a CSR from
# openssl req; the PKCS#7 replies are read by openssl pkcs7 and the certificates checked by
# openssl verify against the served chain. Covers simpleenroll (device active), re-enroll
# with the operational certificate (supersession at once and after a grace period, swept by
# the server), approval (202 + Retry-After, device approve, 200), serverkeygen (off: 403; on:
# the multipart reply's key matches its certificate), /api/v1/device/self and the metrics.
. "$CF_SOURCE_DIR/tests/lib/common.sh"

PY=$(cf_python)
export CERTFLEET_DATA=$T/data
R=$T/reel

cf init --org Vendor >/dev/null
cf manifest make --devices 5 --out "$R" --threads 1 --key-files >/dev/null
cf manufacturer add --name chipco --root "$R/root.crt" --signer "$R/manifest-signer.crt" >/dev/null
cf onboard --manifest "$R/manifest.json" --manufacturer chipco --batch b1 >/dev/null 2>&1
cf owner add acme >/dev/null
mapfile -t IDS < <(tail -n +2 "$R/claim-codes.csv" | cut -d, -f1 | sort)
[ ${#IDS[@]} = 5 ] || fail "expected 5 devices, got ${#IDS[@]}"
D1=${IDS[0]} D2=${IDS[1]} D3=${IDS[2]}
for id in "$D1" "$D2" "$D3"; do cf device claim "$id" --owner acme >/dev/null; done
[ -f "$R/certs/$D1.pem" ] || fail "manifest make --key-files wrote no certs/$D1.pem"
openssl verify -CAfile "$R/root.crt" -untrusted "$R/certs/$D1.pem" "$R/certs/$D1.pem" >/dev/null ||
    fail "certs/$D1.pem is not the birth chain (leaf, batch CA)"
pass "manifest make --key-files writes each birth chain as certs/UID.pem"

cf ca export --out "$T/chain.pem"
split_chain "$T/chain.pem"

SRV_LOG=$T/serve.log # serve_start logs there
serve_start --threads 2
EST=$URL/.well-known/est

# csr NAME SUBJECT [openssl req args...]: $T/NAME.key (a new P-256 key unless -key is given)
# and $T/NAME.b64, the CSR as base64 DER with line breaks (RFC 8951).
csr() {
    local name=$1 subj=$2; shift 2
    local keyargs=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/$name.key")
    [ $# -gt 0 ] && keyargs=("$@")
    openssl req -new "${keyargs[@]}" -subj "$subj" -outform DER -out "$T/$name.der" 2>/dev/null ||
        fail "openssl req for $name"
    base64 -w 64 "$T/$name.der" >"$T/$name.b64"
}
# est OP CSRNAME CERT KEY: POSTs the CSR to EST operation OP as the client CERT/KEY; prints
# the status; the body is in $T/body, the headers in $T/headers.
est() {
    curl -s -o "$T/body" -D "$T/headers" -w '%{http_code}' --cacert "$T/root.pem" \
        --cert "$3" --key "$4" -H 'Content-Type: application/pkcs10' \
        --data-binary @"$T/$2.b64" "$EST/$1"
}
# pkcs7 OUT: the certificate in the last reply (base64 PKCS#7 certs-only) into OUT.
pkcs7() {
    grep -qi '^Content-Type: application/pkcs7-mime; smime-type=certs-only' "$T/headers" ||
        fail "reply is not certs-only PKCS#7: $(cat "$T/headers")"
    grep -qi '^Content-Transfer-Encoding: base64' "$T/headers" || fail "no Content-Transfer-Encoding"
    base64 -d "$T/body" | openssl pkcs7 -inform DER -print_certs >"$1" || fail "reply is not PKCS#7"
    [ "$(grep -c 'BEGIN CERTIFICATE' "$1")" = 1 ] || fail "PKCS#7 should hold one certificate"
}
verify() {
    openssl verify -CAfile "$T/root.pem" -untrusted "$T/issuing.pem" "$1" >/dev/null ||
        fail "$1 does not verify against the served chain"
}
serial_of() { openssl x509 -in "$1" -noout -serial | cut -d= -f2; }
# cert_status SERIAL DEVICE: "status reason" of a certificate as device show tells it.
cert_status() {
    cf device show "$2" --json >"$T/show.json"
    "$PY" -c 'import json, sys
d = json.load(open(sys.argv[1]))
c = [c for c in d["certificates"] if c["serial"] == sys.argv[2]]
print(c[0]["status"], c[0].get("reason")) if c else print("missing")' "$T/show.json" "$1"
}
state_of() { cf device show "$1" --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["state"])'; }
B1=$R/certs/$D1.pem K1=$R/keys/$D1.key

# ---- cacerts: the chain the device then verifies with ----
curl -sf --cacert "$T/root.pem" "$EST/cacerts" | base64 -d |
    openssl pkcs7 -inform DER -print_certs >"$T/served.pem" || fail "cacerts"
awk '/BEGIN/{n++} n==1' "$T/served.pem" >"$T/issuing.pem"

# ---- simpleenroll with the birth certificate ----
csr op1 "/CN=$D1"
got=$(est simpleenroll op1 "$B1" "$K1")
[ "$got" = 200 ] || fail "simpleenroll: $got $(cat "$T/body")"
pkcs7 "$T/op1.pem"
verify "$T/op1.pem"
grep -q "CN=$D1,O=acme" <<<"$(openssl x509 -in "$T/op1.pem" -noout -subject -nameopt RFC2253)" ||
    fail "subject is not CN=$D1, O=acme: $(openssl x509 -in "$T/op1.pem" -noout -subject)"
grep -q "URI:urn:certfleet:device:$D1" <<<"$(openssl x509 -in "$T/op1.pem" -noout -ext subjectAltName)" ||
    fail "no device URI in the SAN"
[ "$(openssl x509 -in "$T/op1.pem" -noout -pubkey)" = "$(openssl pkey -in "$T/op1.key" -pubout)" ] ||
    fail "certificate does not carry the CSR's key"
[ "$(state_of "$D1")" = active ] || fail "device not active after enrollment"
S1=$(serial_of "$T/op1.pem")
cf audit log --action device.enroll --json >"$T/audit.json"
grep -q "\"serial\": \"$S1\"" "$T/audit.json" && grep -q '"how": "birth"' "$T/audit.json" ||
    fail "device.enroll not audited with serial and how: $(cat "$T/audit.json")"
grep -q "\"device\":\"$D1\"" <<<"$(grep '"path":"/.well-known/est/simpleenroll"' "$SRV_LOG" | tail -1)" ||
    fail "request log does not name the device"
pass "simpleenroll: PKCS#7 certificate verifies, profile subject and SAN, device active, audited"

csr again "/CN=$D1"
got=$(est simpleenroll again "$B1" "$K1")
[ "$got" = 409 ] || fail "second birth enrollment of an active device: $got, not 409"
grep -q simplereenroll "$T/body" || fail "409 does not point to simplereenroll: $(cat "$T/body")"
pass "an active device with a good certificate cannot enroll again with its birth certificate (409)"

# ---- device/self ----
curl -sf --cacert "$T/root.pem" --cert "$T/op1.pem" --key "$T/op1.key" \
    "https://127.0.0.1:$TLS_PORT/api/v1/device/self" >"$T/self.json" || fail "device/self"
"$PY" - "$T/self.json" "$D1" "$S1" <<'PY' || fail "device/self: $(cat "$T/self.json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["id"] == sys.argv[2] and d["state"] == "active" and d["owner"] == "acme", d
assert d["certificate"]["serial"] == sys.argv[3], d
assert d["renewal_due"] is False and d["renew_after"] < d["certificate"]["not_after"], d
PY
pass "device/self: id, state, owner, certificate, renewal not due"

# ---- the owner's policy: defaults, changes audited ----
cf owner policy acme --json >"$T/policy.json"
"$PY" -c 'import json, sys
d = json.load(open(sys.argv[1]))
assert d == {"owner": "acme", "require_approval": False, "serverkeygen": False,
             "allow_key_reuse": False, "allow_birth_key": False, "reenroll_grace_s": 3600}, d
' "$T/policy.json" || fail "default policy: $(cat "$T/policy.json")"
expect_rc 2 cf owner policy acme --serverkeygen maybe
expect_rc 2 cf owner policy acme --reenroll-grace -1
expect_rc 1 cf owner policy nobody
cf owner policy acme --reenroll-grace 0 >/dev/null
grep -q '"reenroll_grace_s": 0' <<<"$(cf audit log --action owner.policy --json)" ||
    fail "policy change not audited"
pass "owner policy: defaults shown, bad values refused, changes audited"

# ---- simplereenroll, grace 0: the old certificate is revoked at once ----
csr op2 "/O=acme/CN=$D1"
got=$(est simplereenroll op2 "$T/op1.pem" "$T/op1.key")
[ "$got" = 200 ] || fail "simplereenroll: $got $(cat "$T/body")"
pkcs7 "$T/op2.pem"
verify "$T/op2.pem"
S2=$(serial_of "$T/op2.pem")
[ "$(cert_status "$S1" "$D1")" = "revoked 4" ] || fail "old certificate not superseded: $(cert_status "$S1" "$D1")"
[ "$(cert_status "$S2" "$D1")" = "good None" ] || fail "new certificate not good"
got=$(est simplereenroll op2 "$T/op1.pem" "$T/op1.key")
[ "$got" = 401 ] && grep -q revoked "$T/body" || fail "re-enroll with the superseded certificate: $got $(cat "$T/body")"
pass "simplereenroll with grace 0: new certificate verifies, old one revoked (superseded) at once"

# ---- grace > 0: the old certificate stays good until the server's sweep revokes it ----
cf owner policy acme --reenroll-grace 3 >/dev/null
csr op3 "/O=acme/CN=$D1"
got=$(est simplereenroll op3 "$T/op2.pem" "$T/op2.key")
[ "$got" = 200 ] || fail "simplereenroll (grace 3): $got $(cat "$T/body")"
pkcs7 "$T/op3.pem"
S3=$(serial_of "$T/op3.pem")
[ "$(cert_status "$S2" "$D1")" = "good None" ] || fail "superseded certificate revoked before its grace ended"
for _ in $(seq 60); do
    [ "$(cert_status "$S2" "$D1")" = "revoked 4" ] && break
    sleep 0.5
done
[ "$(cert_status "$S2" "$D1")" = "revoked 4" ] || fail "the sweep did not revoke the superseded certificate"
grep -q "\"serial\": \"$S2\"" <<<"$(cf audit log --action cert.supersede --json)" || fail "supersession not audited"
pass "simplereenroll with a grace period: old certificate good, then revoked by the server's sweep"

csr same "/O=acme/CN=$D1" -key "$T/op3.key"
got=$(est simplereenroll same "$T/op3.pem" "$T/op3.key")
[ "$got" = 400 ] && grep -q 'new key' "$T/body" || fail "key reuse: $got $(cat "$T/body")"
cf owner policy acme --allow-key-reuse on --reenroll-grace 0 >/dev/null
got=$(est simplereenroll same "$T/op3.pem" "$T/op3.key")
[ "$got" = 200 ] || fail "key reuse allowed by policy: $got $(cat "$T/body")"
pkcs7 "$T/op4.pem"
cf owner policy acme --allow-key-reuse off >/dev/null
csr other "/O=acme/CN=somebody-else"
got=$(est simplereenroll other "$T/op4.pem" "$T/op3.key")
[ "$got" = 400 ] && grep -q 'subject' "$T/body" || fail "subject mismatch: $got $(cat "$T/body")"
pass "re-enrollment needs a new key unless the policy allows re-use, and the same subject"

# ---- approval: 202 with Retry-After until the device is approved ----
cf owner policy acme --require-approval on >/dev/null
csr op5 "/CN=$D2"
for _ in 1 2; do
    got=$(est simpleenroll op5 "$R/certs/$D2.pem" "$R/keys/$D2.key")
    [ "$got" = 202 ] || fail "enrollment held for approval: $got $(cat "$T/body")"
    grep -qi '^Retry-After: [0-9]' "$T/headers" || fail "202 without Retry-After"
done
[ "$(state_of "$D2")" = claimed ] || fail "held device changed state"
[ "$(cf audit log --action device.enroll_pending --json | grep -c "\"object\": \"$D2\"")" = 1 ] ||
    fail "pending request not audited exactly once"
cf device approve "$D2" >/dev/null
grep -q "$D2" <<<"$(cf audit log --action device.approve --json)" || fail "approval not audited"
got=$(est simpleenroll op5 "$R/certs/$D2.pem" "$R/keys/$D2.key")
[ "$got" = 200 ] || fail "approved enrollment: $got $(cat "$T/body")"
pkcs7 "$T/op5.pem"
verify "$T/op5.pem"
[ "$(state_of "$D2")" = active ] || fail "approved device not active"
cf owner policy acme --require-approval off >/dev/null
pass "approval: 202 + Retry-After (audited once), device approve, then 200 and active"

# ---- serverkeygen: off by default (403), then the RFC 7030 4.4.2 multipart ----
csr kg "/CN=$D3"
got=$(est serverkeygen kg "$R/certs/$D3.pem" "$R/keys/$D3.key")
[ "$got" = 403 ] && grep -q 'serverkeygen is off' "$T/body" || fail "serverkeygen off: $got $(cat "$T/body")"
cf owner policy acme --serverkeygen on >/dev/null
got=$(est serverkeygen kg "$R/certs/$D3.pem" "$R/keys/$D3.key")
[ "$got" = 200 ] || fail "serverkeygen: $got $(cat "$T/body")"
"$PY" - "$T/headers" "$T/body" "$T" <<'PY' 2>"$T/py.err" || fail "serverkeygen multipart: $(cat "$T/py.err") $(head -c 400 "$T/body")"
import base64, email, sys
head = open(sys.argv[1], "rb").read().split(b"\r\n", 1)[1]  # after the status line
msg = email.message_from_bytes(head + open(sys.argv[2], "rb").read())
assert msg.get_content_type() == "multipart/mixed", msg.get_content_type()
parts = msg.get_payload()
assert [p.get_content_type() for p in parts] == ["application/pkcs8", "application/pkcs7-mime"], parts
assert parts[1].get_param("smime-type") == "certs-only"
for p, name in zip(parts, ("kg-key.der", "kg-p7.der")):
    assert p["Content-Transfer-Encoding"] == "base64"
    open(sys.argv[3] + "/" + name, "wb").write(base64.b64decode(p.get_payload()))
PY
openssl pkcs7 -inform DER -in "$T/kg-p7.der" -print_certs >"$T/kg.pem" || fail "serverkeygen PKCS#7"
verify "$T/kg.pem"
[ "$(openssl pkey -inform DER -in "$T/kg-key.der" -pubout)" = "$(openssl x509 -in "$T/kg.pem" -noout -pubkey)" ] ||
    fail "the generated key does not match its certificate"
grep -q 'prime256v1' <<<"$(openssl pkey -inform DER -in "$T/kg-key.der" -noout -text)" || fail "key is not P-256"
KEYB64=$(base64 -w0 "$T/kg-key.der" | cut -c 40-80)
grep -rqF "$KEYB64" "$SRV_LOG" "$CERTFLEET_DATA" && fail "the generated key was stored or logged"
[ "$(state_of "$D3")" = active ] || fail "serverkeygen device not active"
pass "serverkeygen: 403 while off; multipart key (PKCS#8 P-256) matches its certificate, kept nowhere"

# ---- metrics ----
curl -sf "$PLAIN/metrics" >"$T/metrics"
grep -Eq '^certfleet_est_enrollments_total\{op="simpleenroll",result="issued"\} 2$' "$T/metrics" ||
    fail "metrics: enrollments: $(grep est_ "$T/metrics")"
grep -Eq '^certfleet_est_enrollments_total\{op="simpleenroll",result="pending"\} 2$' "$T/metrics" ||
    fail "metrics: pending"
grep -Eq '^certfleet_est_enrollments_total\{op="simplereenroll",result="issued"\} 3$' "$T/metrics" ||
    fail "metrics: re-enrollments"
pass "metrics count enrollments by operation and result"

kill -TERM "$SRV_PID"
wait "$SRV_PID" || fail "serve did not exit cleanly"
SRV_PID=
cf audit verify >/dev/null || fail "audit verify after enrollments"
pass "audit chain verifies after the enrollments"
