#!/bin/bash
# test_ocsp_hostile.sh - the OCSP responder and CRL endpoints under hostile input: every
# answer to a bad request is an OCSP response (malformedRequest, unauthorized), never a
# crash or an HTML page; a client that sends nothing or stops half-way costs a timeout and
# nothing else, while others are answered.
. "$CF_SOURCE_DIR/tests/lib/common.sh"

PY=$(cf_python)
fleet_init
new_csr dev
cf issue --csr "$T/dev.csr" --device dev --out "$T/dev.pem" >/dev/null

serve_start --threads 1 --timeout 2

# post FILE [CTYPE]: POSTs FILE to /ocsp; prints the HTTP status; the body in $T/resp.
post() {
    curl -s -o "$T/resp" -w '%{http_code}' -H "Content-Type: ${2:-application/ocsp-request}" \
        --data-binary @"$1" "$PLAIN/ocsp"
}
# status: the OCSP responseStatus of $T/resp, as python3-cryptography reads it.
status() {
    "$PY" -c 'import sys
from cryptography.x509 import ocsp
print(ocsp.load_der_ocsp_response(open(sys.argv[1],"rb").read()).response_status.name)' "$T/resp"
}
alive() { curl -sf -o /dev/null "$PLAIN/healthz" || fail "the server died: $(tail -5 "$T/serve.log")"; }

openssl ocsp -issuer "$T/issuing.pem" -cert "$T/dev.pem" -reqout "$T/good.der" >/dev/null
head -c 40 "$T/good.der" >"$T/trunc.der"
[ "$(post "$T/trunc.der")" = 200 ] && [ "$(status)" = MALFORMED_REQUEST ] || fail "truncated request"
alive
printf 'garbage that is no DER at all' >"$T/junk.der"
[ "$(post "$T/junk.der")" = 200 ] && [ "$(status)" = MALFORMED_REQUEST ] || fail "garbage request"
: >"$T/empty.der"
[ "$(post "$T/empty.der")" = 200 ] && [ "$(status)" = MALFORMED_REQUEST ] || fail "empty request"
pass "truncated, garbage and empty requests get malformedRequest"

[ "$(post "$T/good.der" text/plain)" = 415 ] && [ "$(status)" = MALFORMED_REQUEST ] ||
    fail "wrong content type"
head -c 70000 /dev/urandom >"$T/big.der"
code=$(post "$T/big.der")
[ "$code" = 413 ] || fail "a request over 64 KiB: HTTP $code"
grep -qi '<html' "$T/resp" && fail "an HTML error page for an oversized request"
alive
pass "wrong content type (415) and over 64 KiB (413), answered without HTML"

for path in '!!!notbase64' 'MEowSDBGMEQwQjAJBgUrDgMCGgUABBQ' '%ZZ' 'AAAA'; do
    code=$(curl -s -o "$T/resp" -w '%{http_code}' "$PLAIN/ocsp/$path")
    [ "$code" = 200 ] && [ "$(status)" = MALFORMED_REQUEST ] || fail "GET /ocsp/$path: $code"
done
pass "garbage base64 in GET gets malformedRequest"

# a CertID of an issuer we do not answer for: the root's own certificate
openssl ocsp -issuer "$T/root.pem" -cert "$T/issuing.pem" -reqout "$T/foreign.der" >/dev/null
[ "$(post "$T/foreign.der")" = 200 ] && [ "$(status)" = UNAUTHORIZED ] || fail "unknown issuer"
pass "a CertID for an unknown issuer gets unauthorized"

# many CertIDs: openssl ocsp takes -serial again and again
for n in 1000 100; do
    args=()
    for i in $(seq "$n"); do args+=(-serial "$((100000 + i))"); done
    openssl ocsp -issuer "$T/issuing.pem" "${args[@]}" -no_nonce -reqout "$T/many$n.der" >/dev/null ||
        fail "openssl ocsp could not make $n CertIDs"
done
code=$(post "$T/many1000.der")
[ "$code" = 413 ] || { [ "$code" = 200 ] && [ "$(status)" = MALFORMED_REQUEST ]; } ||
    fail "1000 CertIDs: $code"
[ "$(post "$T/many100.der")" = 200 ] && [ "$(status)" = SUCCESSFUL ] || fail "100 CertIDs"
alive
pass "1000 CertIDs in one request are refused; 100 are answered"

# slow clients: one connects and sends nothing, one stops half-way through a POST
exec 7<>/dev/tcp/127.0.0.1/$HTTP_PORT
exec 8<>/dev/tcp/127.0.0.1/$HTTP_PORT
printf 'POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Type: application/ocsp-request\r\nContent-Length: 500\r\n\r\n0\x82' >&8
start=$(date +%s%N)
openssl ocsp -issuer "$T/issuing.pem" -cert "$T/dev.pem" -url "$PLAIN/ocsp" -CAfile "$T/chain.pem" \
    >"$T/o.out" 2>&1 || fail "a normal client is not answered beside two stuck ones"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ "$ms" -lt 1000 ] || fail "a normal client waited $ms ms beside two stuck ones"
sleep 3
# both stuck connections have been closed by the server's timeout: reading gives EOF at
# once (a read that times out, status over 128, means the connection is still open)
for fd in 7 8; do
    rc=0
    while read -r -t 2 -u "$fd" _; do :; done || rc=$?
    [ "$rc" -le 128 ] || fail "stuck connection $fd still open after the timeout"
done
exec 7>&- 8>&-
alive
pass "clients that send nothing or stop half-way cost a timeout; others are answered meanwhile"

cf revoke --serial "$(openssl x509 -in "$T/dev.pem" -noout -serial | cut -d= -f2)" >/dev/null
for p in /crl/nosuch.crl /crl/issuing-1.pem /crl/../etc/passwd /crl/issuing-1-delta.crl.gz; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --path-as-is "$PLAIN$p")
    [ "$code" = 404 ] || fail "GET $p: $code"
done
alive
pass "unknown CRL names are 404"
