#!/bin/bash
# test_revoke.sh - revocation judged by real peers: `openssl ocsp` against the running
# server (POST, and GET built per RFC 5019) sees good, then revoked with the reason, checks
# the responder's signature and the nonce; `openssl verify -crl_check` (and -crl_check_all
# -use_deltas with the delta CRL) fails a revoked certificate and passes a good one; an
# `openssl s_server -crl_check` refuses a revoked client certificate; python3-cryptography
# loads every CRL and OCSP response and checks their signatures. Also the CLI's scopes,
# no-ops, hold and release, block and readmit, and the change feed.
. "$CF_SOURCE_DIR/tests/lib/common.sh"

PY=$(cf_python)
fleet_init

# issue NAME: a certificate for device NAME in $T/NAME.pem (key $T/NAME.key).
issue() {
    new_csr "$1"
    cf issue --csr "$T/$1.csr" --device "$1" --out "$T/$1.pem" || fail "issue $1"
}
serial_of() { openssl x509 -in "$1" -noout -serial | cut -d= -f2; }
for d in dev-a dev-b dev-c dev-d dev-e dev-f; do issue "$d"; done

# init made the delegated OCSP responder's certificate (RFC 6960 4.2.2.2): OCSPSigning and
# id-pkix-ocsp-nocheck, issued by the issuing CA, its key 0600
R=$CERTFLEET_DATA/keys/ocsp-issuing-1
openssl x509 -in "$R.pem" -noout -text >"$T/responder.txt" || fail "init made no responder certificate"
grep -q 'OCSP Signing' "$T/responder.txt" || fail "responder: no OCSPSigning: $(cat "$T/responder.txt")"
grep -q 'OCSP No Check' "$T/responder.txt" || fail "responder: no id-pkix-ocsp-nocheck"
openssl verify -CAfile "$T/root.pem" -untrusted "$T/issuing.pem" -purpose ocsphelper "$R.pem" \
    >/dev/null || fail "the responder's certificate does not verify under the issuing CA"
[ "$(stat -c %a "$R.key")" = 600 ] || fail "responder key mode $(stat -c %a "$R.key")"
pass "init makes the delegated OCSP responder's certificate"

serve_start --threads 2

# ocsp CERT: openssl ocsp's verdict line for CERT (POST, with a nonce it checks).
ocsp() {
    openssl ocsp -issuer "$T/issuing.pem" -cert "$1" -url "$PLAIN/ocsp" -CAfile "$T/chain.pem" \
        -resp_text >"$T/ocsp.out" 2>&1 || { cat "$T/ocsp.out" >&2; fail "openssl ocsp failed"; }
    grep -q 'Response verify OK' "$T/ocsp.out" || { cat "$T/ocsp.out" >&2; fail "responder signature"; }
    grep -q 'WARNING: no nonce' "$T/ocsp.out" && fail "the nonce was not echoed"
    grep "^$1: " "$T/ocsp.out"
}
[ "$(ocsp "$T/dev-a.pem")" = "$T/dev-a.pem: good" ] || fail "dev-a not good: $(cat "$T/ocsp.out")"
grep -q 'Responder Id: ' "$T/ocsp.out" || fail "no responder id"
pass "openssl ocsp: good, responder signature and nonce verified"

SA=$(serial_of "$T/dev-a.pem")
cf revoke --serial "$SA" --reason keyCompromise --invalidity 2026-11-01T00:00:00Z >"$T/out" ||
    fail "revoke --serial"
grep -q "revoked 1 certificate of serial $SA (keyCompromise)" "$T/out" || fail "$(cat "$T/out")"
[ "$(ocsp "$T/dev-a.pem")" = "$T/dev-a.pem: revoked" ] || fail "dev-a not revoked at once"
grep -q 'Reason: keyCompromise' "$T/ocsp.out" || fail "no reason: $(cat "$T/ocsp.out")"
pass "the moment revoke returns, OCSP answers revoked with its reason"

# RFC 5019 GET: base64 of the DER request, URL-encoded.
openssl ocsp -issuer "$T/issuing.pem" -cert "$T/dev-a.pem" -no_nonce -reqout "$T/req.der" >/dev/null
B64=$("$PY" -c 'import base64,sys,urllib.parse; print(urllib.parse.quote(base64.b64encode(open(sys.argv[1],"rb").read()).decode(), safe=""))' "$T/req.der")
curl -s -D "$T/h" -o "$T/get.der" "$PLAIN/ocsp/$B64" || fail "GET /ocsp"
grep -qi '^Content-Type: application/ocsp-response' "$T/h" || fail "GET content type"
grep -qi '^Cache-Control: max-age=[0-9]*, public, no-transform, must-revalidate' "$T/h" ||
    fail "GET caching headers: $(cat "$T/h")"
grep -qi '^ETag: ' "$T/h" && grep -qi '^Last-Modified: ' "$T/h" && grep -qi '^Expires: ' "$T/h" ||
    fail "GET lacks ETag/Last-Modified/Expires"
openssl ocsp -respin "$T/get.der" -issuer "$T/issuing.pem" -cert "$T/dev-a.pem" -CAfile "$T/chain.pem" \
    -no_nonce >"$T/get.out" 2>&1 || fail "GET response: $(cat "$T/get.out")"
grep -q "dev-a.pem: revoked" "$T/get.out" || fail "GET verdict: $(cat "$T/get.out")"
# a SHA-256 CertID, and the same one unescaped (base64 with '/' and '+' as they are)
openssl ocsp -sha256 -issuer "$T/issuing.pem" -cert "$T/dev-b.pem" -no_nonce -reqout "$T/req2.der" >/dev/null
B64=$(base64 -w0 "$T/req2.der")
curl -s -o "$T/get2.der" "$PLAIN/ocsp/$B64" || fail "GET unescaped"
grep -q "good" <<<"$(openssl ocsp -respin "$T/get2.der" -sha256 -issuer "$T/issuing.pem" \
    -cert "$T/dev-b.pem" -CAfile "$T/chain.pem" -no_nonce 2>&1)" || fail "GET with a SHA-256 CertID"
pass "OCSP GET per RFC 5019 (SHA-1 and SHA-256 CertIDs) with caching headers"

# A cached answer (RFC 5019 GET, no nonce) goes the moment another process revokes: the
# workers answer dev-f "good" from their caches, `certfleet revoke` runs as a process of its
# own, and the very next GETs (new connections, whichever worker takes them) say revoked.
openssl ocsp -issuer "$T/issuing.pem" -cert "$T/dev-f.pem" -no_nonce -reqout "$T/req3.der" >/dev/null
B64F=$(base64 -w0 "$T/req3.der")
get_f() {
    curl -s -o "$T/get3.der" "$PLAIN/ocsp/$B64F" || return 1
    openssl ocsp -respin "$T/get3.der" -issuer "$T/issuing.pem" -cert "$T/dev-f.pem" \
        -CAfile "$T/chain.pem" -no_nonce 2>&1 | grep "^$T/dev-f.pem: " || true
}
for _ in 1 2 3 4 5 6; do [ "$(get_f)" = "$T/dev-f.pem: good" ] || fail "dev-f not good: $(get_f)"; done
cf revoke --serial "$(serial_of "$T/dev-f.pem")" >/dev/null || fail "revoke dev-f"
for _ in 1 2 3 4 5 6; do
    [ "$(get_f)" = "$T/dev-f.pem: revoked" ] || fail "a cached answer outlived the revocation"
done
pass "cached OCSP answers are dropped the moment another process revokes"

# ---- CRLs ----
curl -s -D "$T/crlh" -o "$T/full.crl" "$PLAIN/crl/issuing-1.crl" || fail "GET full CRL"
grep -qi '^Content-Type: application/pkix-crl' "$T/crlh" || fail "CRL content type"
grep -qi '^ETag: ' "$T/crlh" && grep -qi '^Last-Modified: ' "$T/crlh" && grep -qi '^Cache-Control: ' "$T/crlh" ||
    fail "CRL caching headers: $(cat "$T/crlh")"
ETAG=$(grep -i '^ETag: ' "$T/crlh" | cut -d' ' -f2 | tr -d '\r')
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $ETAG" "$PLAIN/crl/issuing-1.crl")" = 304 ] ||
    fail "If-None-Match with the current ETag is not 304"
openssl crl -inform DER -in "$T/full.crl" -noout -text >"$T/crl.txt" || fail "openssl crl cannot parse"
grep -q "Serial Number: $SA" "$T/crl.txt" || fail "the full CRL lacks $SA"
grep -q 'Invalidity Date' "$T/crl.txt" || fail "no invalidity date"
openssl crl -inform DER -in "$T/full.crl" -out "$T/full.pem"
verify_crl() { # CERT CRLFILE... : openssl verify -crl_check's output
    local cert=$1; shift
    local args=()
    for c in "$@"; do args+=(-CRLfile "$c"); done
    openssl verify -crl_check -CAfile "$T/root.pem" -untrusted "$T/issuing.pem" "${args[@]}" "$cert" 2>&1
}
grep -q 'certificate revoked' <<<"$(verify_crl "$T/dev-a.pem" "$T/full.pem")" ||
    fail "verify passes a revoked cert"
grep -q ': OK' <<<"$(verify_crl "$T/dev-b.pem" "$T/full.pem")" || fail "verify fails a good cert"
pass "full CRL: openssl crl parses it, verify -crl_check fails the revoked and passes the good"

# delta: revoke dev-b after the base, the delta lists it
SB=$(serial_of "$T/dev-b.pem")
cf revoke --device dev-b --reason superseded >/dev/null || fail "revoke --device"
curl -s -o "$T/delta.crl" "$PLAIN/crl/issuing-1-delta.crl" || fail "GET delta"
openssl crl -inform DER -in "$T/delta.crl" -noout -text >"$T/delta.txt" || fail "delta parse"
grep -q 'Delta CRL Indicator' "$T/delta.txt" || fail "no Delta CRL Indicator"
grep -q "Serial Number: $SB" "$T/delta.txt" || fail "the delta lacks $SB"
openssl crl -inform DER -in "$T/delta.crl" -out "$T/delta.pem"
# -crl_check_all checks the issuing CA too: against the root's CRL, which lists none
curl -s -o "$T/root.crl" "$PLAIN/crl/root-1.crl" || fail "GET the root's CRL"
openssl crl -inform DER -in "$T/root.crl" -out "$T/rootcrl.pem" || fail "the root's CRL"
openssl crl -in "$T/rootcrl.pem" -noout -text | grep -q 'No Revoked Certificates' ||
    fail "the root's CRL lists something"
deltas() { # CERT: openssl verify with the root's CRL, the full CRL and the delta
    openssl verify -crl_check_all -use_deltas -CAfile "$T/root.pem" -untrusted "$T/issuing.pem" \
        -CRLfile "$T/rootcrl.pem" -CRLfile "$T/full.pem" -CRLfile "$T/delta.pem" "$1" 2>&1
}
grep -q 'certificate revoked' <<<"$(deltas "$T/dev-b.pem")" ||
    fail "verify -use_deltas passes dev-b, revoked in the delta only: $(deltas "$T/dev-b.pem")"
grep -q ": OK" <<<"$(deltas "$T/dev-c.pem")" || fail "verify -use_deltas fails a good certificate: $(deltas "$T/dev-c.pem")"
# the full CRL fetched now lists dev-b too
curl -s -o "$T/full2.crl" "$PLAIN/crl/issuing-1.crl"
grep -q "Serial Number: $SB" <<<"$(openssl crl -inform DER -in "$T/full2.crl" -noout -text)" ||
    fail "the next full CRL lacks $SB"
N1=$(openssl crl -inform DER -in "$T/full.crl" -noout -crlnumber | cut -d= -f2)
N2=$(openssl crl -inform DER -in "$T/full2.crl" -noout -crlnumber | cut -d= -f2)
[ $((N2)) -gt $((N1)) ] || fail "CRL number did not increase ($N1 -> $N2)"
pass "delta CRL: indicator, -use_deltas; the next full CRL lists it with a higher number"

# python3-cryptography: every CRL and OCSP response loads and verifies
"$PY" - "$T" <<'PY' || fail "python3-cryptography rejects a CRL or OCSP response"
import sys
from cryptography import x509
from cryptography.x509 import ocsp
t = sys.argv[1]
issuing = x509.load_pem_x509_certificate(open(f"{t}/issuing.pem", "rb").read())
for name in ("full.crl", "full2.crl", "delta.crl"):
    crl = x509.load_der_x509_crl(open(f"{t}/{name}", "rb").read())
    assert crl.is_signature_valid(issuing.public_key()), name
    assert crl.next_update_utc > crl.last_update_utc, name
    crl.extensions.get_extension_for_class(x509.CRLNumber)
    crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
for name in ("get.der", "get2.der"):
    r = ocsp.load_der_ocsp_response(open(f"{t}/{name}", "rb").read())
    assert r.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL, name
    responder = r.certificates[0]
    eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING in eku, name
    responder.extensions.get_extension_for_oid(x509.oid.ObjectIdentifier("1.3.6.1.5.5.7.48.1.5"))
    assert responder.issuer == issuing.subject, name
    from cryptography.hazmat.primitives.asymmetric import ec
    responder.public_key().verify(r.signature, r.tbs_response_bytes, ec.ECDSA(r.signature_hash_algorithm))
r = ocsp.load_der_ocsp_response(open(f"{t}/get.der", "rb").read())
assert r.certificate_status == ocsp.OCSPCertStatus.REVOKED
assert r.revocation_reason == x509.ReasonFlags.key_compromise
PY
pass "python3-cryptography loads every CRL and OCSP response and verifies their signatures"

# a TLS server with our CRL (openssl s_server -crl_check -CRL) refuses the revoked client and
# accepts the good one
SPORT=$(free_port)
openssl crl -inform DER -in "$T/full2.crl" -out "$T/full2.pem"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/srv.key" \
    -subj /CN=localhost -days 1 -out "$T/srv.pem" 2>/dev/null
cat "$T/issuing.pem" "$T/root.pem" >"$T/cas.pem"
openssl s_server -accept "$SPORT" -cert "$T/srv.pem" -key "$T/srv.key" -Verify 2 \
    -CAfile "$T/cas.pem" -crl_check -CRL "$T/full2.pem" -naccept 2 -quiet >"$T/s_server.log" 2>&1 &
S_PID=$!
at_exit 'kill $S_PID 2>/dev/null'
sleep 0.5
echo | openssl s_client -connect "127.0.0.1:$SPORT" -cert "$T/dev-c.pem" -key "$T/dev-c.key" \
    -CAfile "$T/srv.pem" >"$T/good.out" 2>&1 || true
echo | openssl s_client -connect "127.0.0.1:$SPORT" -cert "$T/dev-a.pem" -key "$T/dev-a.key" \
    -CAfile "$T/srv.pem" >"$T/bad.out" 2>&1 || true
wait $S_PID 2>/dev/null || true
grep -q 'certificate revoked' "$T/s_server.log" || fail "s_server accepted the revoked client: $(cat "$T/s_server.log")"
[ "$(grep -c 'certificate revoked' "$T/s_server.log")" = 1 ] || fail "s_server refused the good client too"
pass "openssl s_server -crl_check with our CRL refuses the revoked client, accepts the good"

# ---- the CLI's scopes and no-ops ----
BEFORE=$(cf audit verify --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["records"])')
cf revoke --serial "$SA" >"$T/out" || fail "second revoke"
grep -q "nothing to revoke for serial $SA: 1 certificate already revoked" "$T/out" || fail "$(cat "$T/out")"
AFTER=$(cf audit verify --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["records"])')
[ "$BEFORE" = "$AFTER" ] || fail "a no-op revocation wrote an audit record"
expect_rc 1 cf revoke --serial 0BADC0DE
expect_stderr "no certificate with serial 0BADC0DE"
expect_rc 2 cf revoke --device dev-c --serial "$SA"
expect_rc 1 cf revoke --device dev-c --reason stolen
expect_stderr "reason \"stolen\""
expect_rc 1 cf revoke --device dev-c --reason removeFromCRL
pass "revoking again is a no-op without a record; bad input is refused with the reason"

SC=$(serial_of "$T/dev-c.pem")
cf revoke --serial "$SC" --reason certificateHold >/dev/null || fail "hold"
[ "$(ocsp "$T/dev-c.pem")" = "$T/dev-c.pem: revoked" ] || fail "held not revoked"
cf release "$SC" >/dev/null || fail "release"
[ "$(ocsp "$T/dev-c.pem")" = "$T/dev-c.pem: good" ] || fail "released not good"
curl -s -o "$T/delta2.crl" "$PLAIN/crl/issuing-1-delta.crl"
grep -A4 "Serial Number: $SC" <<<"$(openssl crl -inform DER -in "$T/delta2.crl" -noout -text)" |
    grep -q "Remove From CRL" || fail "the delta does not remove $SC: $(openssl crl -inform DER -in "$T/delta2.crl" -noout -text)"
pass "certificateHold, release, and removeFromCRL in the delta"

cf revoke --birth dev-d >/dev/null || fail "revoke --birth"
expect_rc 1 cf device readmit dev-d
expect_stderr "blocked for good"
cf device show dev-b | grep -Eq '^state +revoked$' || fail "dev-b not in state revoked"
cf device readmit dev-b >/dev/null || fail "readmit"
cf device show dev-b | grep -Eq '^state +(claimed|on_hold)$' || fail "dev-b not readmitted"
pass "revoke --birth blocks for good; device readmit lets a revoked device enroll again"

cf changes --json >"$T/changes.json"
"$PY" - "$T/changes.json" "$SA" <<'PY' || fail "change feed: $(cat "$T/changes.json")"
import json, sys
d = json.load(open(sys.argv[1]))
kinds = [c["kind"] for c in d["changes"]]
assert kinds[0] == "cert.revoke" and d["changes"][0]["serial"] == sys.argv[2], kinds
assert "cert.release" in kinds and "device.block" in kinds, kinds
seqs = [c["seq"] for c in d["changes"]]
assert seqs == sorted(seqs) and d["last"] == seqs[-1], seqs
PY
pass "the change feed lists every revocation in order"

# the API's long poll: held until the feed moves past since, answered at once after
TOK=$(cf owner token - --role auditor | tail -1)
LAST=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["last"])' "$T/changes.json")
api_changes() { # SINCE WAIT
    curl -s --cacert "$T/root.pem" -H "Authorization: Bearer $TOK" \
        "https://127.0.0.1:$TLS_PORT/api/v1/changes?since=$1&wait=$2"
}
start=$(date +%s%N)
api_changes "$LAST" 1 >"$T/poll0.json"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ "$ms" -ge 900 ] || fail "a long poll with nothing new answered after $ms ms, not after its wait"
grep -q '"changes":\[\]' "$T/poll0.json" || fail "long poll: $(cat "$T/poll0.json")"
(sleep 1; cf revoke --serial "$(serial_of "$T/dev-c.pem")" >/dev/null) &
REV_PID=$!
start=$(date +%s%N)
api_changes "$LAST" 20 >"$T/poll1.json"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
wait "$REV_PID" || fail "the revocation beside the long poll failed"
[ "$ms" -lt 5000 ] || fail "the long poll was not woken by the revocation ($ms ms)"
grep -q '"kind":"cert.revoke"' "$T/poll1.json" || fail "long poll: $(cat "$T/poll1.json")"
pass "GET /api/v1/changes?wait=S holds until a revocation, then answers with it ($ms ms)"

cf revoke --ca issuing-1 >/dev/null || fail "revoke --ca"
curl -s -o "$T/root2.crl" "$PLAIN/crl/root-1.crl"
grep -q "$(openssl x509 -in "$T/issuing.pem" -noout -serial | cut -d= -f2)" \
    <<<"$(openssl crl -inform DER -in "$T/root2.crl" -noout -text)" ||
    fail "the root's CRL does not list the revoked issuing CA"
new_csr late
expect_rc 1 cf issue --csr "$T/late.csr" --device late
[ "$(ocsp "$T/dev-e.pem")" = "$T/dev-e.pem: revoked" ] || fail "dev-e not revoked with its CA"
grep -q 'Reason: cACompromise' "$T/ocsp.out" || fail "CA revocation reason"
cf audit verify >/dev/null || fail "audit verify"
pass "revoking the CA revokes what it issued and stops it issuing; the audit log verifies"
