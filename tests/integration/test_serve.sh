#!/bin/bash
# test_serve.sh - certfleet serve with real peers: curl and openssl s_client against the TLS
# listener (EST cacerts and csrattrs, protocol versions, the server certificate), curl
# against the plain listener (/healthz, /metrics), the limits (body cap, silent clients),
# the connection cap, the request log, SIGHUP, SIGTERM and the server certificate's reuse.
. "$CF_SOURCE_DIR/tests/lib/common.sh"

D=$T/data
cf init --data "$D" >/dev/null
cf ca export --data "$D" --out "$T/chain.pem"
split_chain "$T/chain.pem"

TLS_PORT=$(free_port)
HTTP_PORT=$(free_port)
while [ "$HTTP_PORT" = "$TLS_PORT" ]; do HTTP_PORT=$(free_port); done
URL=https://127.0.0.1:$TLS_PORT
PLAIN=http://127.0.0.1:$HTTP_PORT
EST=$URL/.well-known/est
SRV_PID=
SRV_LOG=$T/serve.log

# start_server ARGS...: starts certfleet serve in the background, logging to $SRV_LOG, and
# waits until /healthz answers.
start_server() {
    "$CERTFLEET" serve --data "$D" --listen "127.0.0.1:$TLS_PORT" --http "127.0.0.1:$HTTP_PORT" \
        "$@" 2>>"$SRV_LOG" &
    SRV_PID=$!
    for _ in $(seq 100); do
        curl -sf -o /dev/null "$PLAIN/healthz" && return 0
        kill -0 "$SRV_PID" 2>/dev/null || { cat "$SRV_LOG" >&2; fail "serve exited at start"; }
        sleep 0.1
    done
    fail "serve did not answer /healthz within 10 s"
}
# stop_server: SIGTERM, and the server must exit 0.
stop_server() {
    local rc=0
    kill -TERM "$SRV_PID"
    wait "$SRV_PID" || rc=$?
    SRV_PID=
    [ "$rc" = 0 ] || fail "serve exited $rc after SIGTERM"
}
at_exit '[ -z "$SRV_PID" ] || kill -KILL "$SRV_PID" 2>/dev/null'

# status METHOD URL [curl args...]: prints the HTTP status.
status() {
    local m=$1 u=$2; shift 2
    curl -s -o "$T/body" -w '%{http_code}' --cacert "$T/root.pem" -X "$m" "$@" "$u"
}
fingerprint() { openssl x509 -noout -fingerprint -sha256 -in "$1"; }
# server_cert FILE: the certificate the TLS listener presents. (s_client's own exit status
# depends on how the close raced its read; the handshake output is what counts.)
server_cert() {
    echo Q | openssl s_client -connect "127.0.0.1:$TLS_PORT" -CAfile "$T/root.pem" -showcerts \
        >"$T/showcerts" 2>&1 || true
    openssl x509 -in "$T/showcerts" >"$1" || fail "no server certificate: $(cat "$T/showcerts")"
}

start_server --threads 1 --timeout 2 --server-name cf.test --server-name 10.1.2.3

# ---- the plain listener ----
[ "$(curl -s "$PLAIN/healthz")" = ok ] || fail "/healthz does not say ok"
pass "plain /healthz answers ok"

# ---- EST cacerts: base64 PKCS#7 certs-only of the issuing chain ----
curl -sf -D "$T/headers" --cacert "$T/root.pem" "$EST/cacerts" >"$T/cacerts.b64" ||
    fail "GET cacerts failed"
grep -qi '^Content-Type: application/pkcs7-mime' "$T/headers" || fail "cacerts Content-Type: $(cat "$T/headers")"
grep -qi '^Content-Transfer-Encoding: base64' "$T/headers" || fail "cacerts without Content-Transfer-Encoding: base64"
base64 -d "$T/cacerts.b64" | openssl pkcs7 -inform DER -print_certs >"$T/cacerts.pem" ||
    fail "cacerts is not base64 DER PKCS#7"
grep -q 'subject=.*Issuing CA' "$T/cacerts.pem" || fail "cacerts lacks the issuing CA"
grep -q 'subject=.*Root CA' "$T/cacerts.pem" || fail "cacerts lacks the root"
[ "$(grep -c 'BEGIN CERTIFICATE' "$T/cacerts.pem")" = 2 ] || fail "cacerts should hold 2 certificates"
awk '/BEGIN/{n++} n==1' "$T/cacerts.pem" >"$T/served_issuing.pem"
[ "$(fingerprint "$T/served_issuing.pem")" = "$(fingerprint "$T/issuing.pem")" ] ||
    fail "cacerts' issuing CA differs from certfleet ca export"
pass "cacerts is base64 PKCS#7 with the issuing CA and the root"

curl -sf --cacert "$T/root.pem" "$EST/acme-1/cacerts" | base64 -d |
    openssl pkcs7 -inform DER -print_certs | grep -q 'Issuing CA' || fail "cacerts under a label"
[ "$(status GET "$EST/bad%20label/cacerts")" = 404 ] || fail "malformed label not 404"
pass "cacerts under /.well-known/est/LABEL/; a malformed label is 404"

# ---- EST csrattrs ----
curl -sf -D "$T/headers" --cacert "$T/root.pem" "$EST/csrattrs" | base64 -d >"$T/csrattrs.der"
grep -qi '^Content-Type: application/csrattrs' "$T/headers" || fail "csrattrs Content-Type"
openssl asn1parse -inform DER -in "$T/csrattrs.der" >"$T/csrattrs.txt" || fail "csrattrs is not DER"
for want in id-ecPublicKey prime256v1 ecdsa-with-SHA256; do
    grep -q ":$want" "$T/csrattrs.txt" || fail "csrattrs does not name $want: $(cat "$T/csrattrs.txt")"
done
pass "csrattrs is DER naming EC P-256 and ecdsa-with-SHA256"

# ---- framing ----
[ "$(status GET "$URL/nope")" = 404 ] || fail "unknown path not 404"
[ "$(status GET "$EST/simpleenroll")" = 405 ] || fail "GET simpleenroll not 405"
[ "$(status POST "$EST/simpleenroll" -H 'Content-Type: text/plain' --data-binary x)" = 415 ] ||
    fail "wrong Content-Type not 415"
[ "$(status POST "$EST/simpleenroll" -H 'Content-Type: application/pkcs10' --data-binary x)" = 400 ] ||
    fail "simpleenroll with a body that is not base64 not 400"
grep -q 'base64' "$T/body" || fail "400 without a plain reason"
[ "$(status GET "$PLAIN/.well-known/est/cacerts")" = 404 ] || fail "EST on the plain listener"
pass "404 unknown, 405 wrong method, 415 wrong content type, 400 a body that is not base64"

head -c 70000 /dev/zero >"$T/big"
# With Expect: 100-continue the client waits for the verdict on its headers: 413 before any
# of the body is sent.
got=$(status POST "$EST/simpleenroll" -H "Content-Type: application/pkcs10" \
    -H "Expect: 100-continue" --data-binary @"$T/big" || true)
[ "$got" = 413 ] || fail "body over the 64 KiB cap: $got, not 413"
# Without it the client is still sending when the server answers and closes, and the
# kernel may reset the connection before the client reads the 413 (evhttp closes without a
# lingering read): 413 or a reset, never anything else, and the server carries on.
for _ in 1 2 3; do
    got=$(status POST "$EST/simpleenroll" -H "Content-Type: application/pkcs10" \
        --data-binary @"$T/big" || true)
    case $got in 413 | 000) ;; *) fail "body over the cap without Expect: $got" ;; esac
done
curl -sf -o /dev/null "$PLAIN/healthz" || fail "server unwell after oversized bodies"
pass "a body over the cap gets 413"

# ---- TLS: versions, suites, the server certificate ----
s_client() {
    echo Q | openssl s_client -connect "127.0.0.1:$TLS_PORT" -CAfile "$T/root.pem" "$@" >"$T/s_client" 2>&1
}
for v in -tls1 -tls1_1; do
    # SECLEVEL=0 lets our client offer the old version, so the refusal is the server's.
    if s_client "$v" -cipher 'DEFAULT@SECLEVEL=0'; then fail "server accepted $v"; fi
    grep -q 'alert protocol version' "$T/s_client" || fail "$v: no protocol version alert: $(cat "$T/s_client")"
done
pass "TLS 1.0 and 1.1 refused by the server (protocol version alert)"
s_client -tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256 || fail "TLS 1.2 refused: $(cat "$T/s_client")"
grep -q 'Verify return code: 0 (ok)' "$T/s_client" || fail "TLS 1.2: chain does not verify"
grep -q 'Cipher is ECDHE-ECDSA-AES128-GCM-SHA256' "$T/s_client" || fail "TLS 1.2 suite"
grep -Eq 'client certificate CA names' "$T/s_client" || fail "no client certificate request"
s_client -tls1_3 || fail "TLS 1.3 refused"
grep -q 'Verify return code: 0 (ok)' "$T/s_client" || fail "TLS 1.3: chain does not verify"
pass "TLS 1.2 (ECDHE-ECDSA-AES128-GCM-SHA256) and 1.3 accepted, verified, client cert requested"

server_cert "$T/server.pem"
openssl x509 -in "$T/server.pem" -noout -text >"$T/server.txt"
for want in 'IP Address:127.0.0.1' 'DNS:localhost' 'DNS:cf.test' 'IP Address:10.1.2.3' \
    'TLS Web Server Authentication'; do
    grep -q "$want" "$T/server.txt" || fail "server certificate lacks $want"
done
openssl verify -CAfile "$T/root.pem" -untrusted "$T/issuing.pem" "$T/server.pem" >/dev/null ||
    fail "server certificate does not verify to the root"
[ "$(stat -c %a "$D/keys/server.key")" = 600 ] || fail "server key is not 0600"
curl -sf --cacert "$T/root.pem" --resolve "cf.test:$TLS_PORT:127.0.0.1" \
    "https://cf.test:$TLS_PORT/healthz" >/dev/null || fail "curl by --server-name"
serial=$(openssl x509 -in "$T/server.pem" -noout -serial | cut -d= -f2)
cf audit log --data "$D" --action cert.issue_server --json >"$T/issued.json"
grep -q "\"serial\": \"$serial\"" "$T/issued.json" ||
    fail "the server certificate $serial is not in the audit log: $(cat "$T/issued.json")"
grep -q 'OCSP - URI:' "$T/server.txt" || fail "server certificate has no OCSP URL"
pass "server certificate: SANs 127.0.0.1, localhost and --server-name values, serverAuth, key 0600, audited"

# Client certificates are requested, not required; one from certfleet's CA is welcome.
new_csr dev1
cf issue --data "$D" --csr "$T/dev1.csr" --device dev1 >"$T/dev1.pem"
curl -sf --cacert "$T/root.pem" --cert "$T/dev1.pem" --key "$T/dev1.key" "$EST/cacerts" >/dev/null ||
    fail "request with a client certificate"
grep '"path":"/.well-known/est/cacerts"' "$SRV_LOG" | tail -1 | grep -q '"device":"dev1"' ||
    fail "the log does not name the device of a verified client certificate"
pass "a client certificate is accepted (its device logged), and not required"

# ---- a silent client is dropped after --timeout without holding the only worker ----
"$(cf_python)" - "$TLS_PORT" "$HTTP_PORT" >"$T/silent" <<'PY' &
import socket, sys, time
socks = []
for port in sys.argv[1:]:
    s = socket.create_connection(("127.0.0.1", int(port)))
    s.settimeout(15)
    socks.append(s)
t0 = time.time()
for s in socks:
    try:
        while s.recv(4096):
            pass
    except ConnectionResetError:
        pass
print("%.1f" % (time.time() - t0))
PY
SILENT=$!
for _ in $(seq 50); do
    curl -s "$PLAIN/metrics" | grep -q '^certfleet_tls_connections_open 1$' && break
    sleep 0.1
done
for _ in 1 2 3; do
    curl -sf --max-time 1 --cacert "$T/root.pem" "$URL/healthz" >/dev/null ||
        fail "a silent client blocks others"
done
wait "$SILENT" || fail "silent client was not dropped"
awk '{ exit !($1 >= 1.5 && $1 <= 6) }' "$T/silent" ||
    fail "silent clients dropped after $(cat "$T/silent") s, expected about 2 s"
pass "silent TLS and HTTP clients dropped after the timeout while others are served"

# ---- the request log: one JSON line per request, no secrets ----
N_BEFORE=$(grep -c '"path":"/healthz"' "$SRV_LOG" || true)
for i in 1 2 3 4 5; do
    curl -sf -o /dev/null -H 'Authorization: Bearer SECRETTOKEN123' "$PLAIN/healthz?token=SECRETQUERY$i"
done
N_AFTER=$(grep -c '"path":"/healthz"' "$SRV_LOG")
[ $((N_AFTER - N_BEFORE)) = 5 ] || fail "expected 5 log lines for 5 requests, got $((N_AFTER - N_BEFORE))"
"$(cf_python)" - "$SRV_LOG" <<'PY' || fail "request log lines are not JSON with the fields"
import json, sys
n = 0
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    j = json.loads(line)
    for k in ("time", "peer", "method", "path", "status", "duration_ms"):
        assert k in j, (k, line)
    n += 1
assert n >= 20, n
PY
grep -q SECRET "$SRV_LOG" && fail "a token or query reached the log"
for k in "$D"/keys/*.key; do
    grep -v -- '-----' "$k" | head -1 | grep -qFf - "$SRV_LOG" && fail "key material in the log"
done
pass "one JSON log line per request; no token, query or key in the log"

# ---- metrics ----
curl -sf "$PLAIN/metrics" >"$T/metrics"
grep -Eq '^certfleet_http_requests_total\{path="/healthz",status="200"\} [0-9]+' "$T/metrics" ||
    fail "metrics: no healthz count: $(cat "$T/metrics")"
grep -Eq '^certfleet_http_requests_total\{path="/.well-known/est/cacerts",status="200"\} [1-9]' "$T/metrics" ||
    fail "metrics: no cacerts count"
grep -Eq '^certfleet_http_request_duration_seconds_bucket\{le="\+Inf"\} [1-9]' "$T/metrics" ||
    fail "metrics: no latency histogram"
grep -Eq '^certfleet_http_errors_total\{cause="unsupported_media_type"\} 1$' "$T/metrics" ||
    fail "metrics: errors by cause"
grep -Eq '^certfleet_http_requests_total\{path="/.well-known/est/simpleenroll",status="415"\} 1$' "$T/metrics" ||
    fail "metrics: 415 by path"
pass "metrics: requests by path and status, latency histogram, errors by cause"

# ---- SIGHUP: the server certificate is re-checked (and reissued when gone) ----
OLD=$(fingerprint "$T/server.pem")
rm "$D/keys/server.pem"
kill -HUP "$SRV_PID"
for _ in $(seq 50); do [ -f "$D/keys/server.pem" ] && break; sleep 0.1; done
[ -f "$D/keys/server.pem" ] || fail "SIGHUP did not reissue the server certificate"
sleep 0.3
server_cert "$T/server2.pem"
[ "$(fingerprint "$T/server2.pem")" != "$OLD" ] || fail "after SIGHUP the old certificate is still served"
[ "$(fingerprint "$T/server2.pem")" = "$(fingerprint "$D/keys/server.pem")" ] || fail "served certificate is not the new one"
grep -q 'reloaded' "$SRV_LOG" || fail "no reload line in the log"
pass "SIGHUP re-checks the server certificate and serves the new one"

stop_server
pass "SIGTERM: exit 0"

# ---- restart: the certificate is reused while it matches, reissued when the names change ----
start_server --threads 4
server_cert "$T/server3.pem"
openssl x509 -in "$T/server3.pem" -noout -text | grep -q 'DNS:cf.test' &&
    fail "certificate kept a SAN no longer configured"
FP3=$(fingerprint "$T/server3.pem")
stop_server
start_server --threads 4
server_cert "$T/server4.pem"
[ "$(fingerprint "$T/server4.pem")" = "$FP3" ] || fail "unchanged names: certificate not reused"
pass "server certificate reused while its names match, reissued when they change"

# ---- four workers on one port: concurrent clients all served ----
for i in $(seq 40); do
    curl -sf -o /dev/null --cacert "$T/root.pem" "$EST/cacerts" && echo ok >>"$T/conc" &
done
wait_n=0
while [ "$(jobs -rp | grep -vc "^$SRV_PID$" || true)" -gt 0 ] && [ $wait_n -lt 100 ]; do
    sleep 0.1; wait_n=$((wait_n + 1))
done
[ "$(wc -l <"$T/conc")" = 40 ] || fail "only $(wc -l <"$T/conc") of 40 concurrent requests served"
pass "40 concurrent TLS requests served by 4 workers"

stop_server

# ---- the connection cap: at --max-conns a worker stops accepting until a connection ends ----
start_server --threads 1 --max-conns 2 --timeout 2
"$(cf_python)" - "$TLS_PORT" <<'PY' &
import socket, sys, time
socks = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(2)]
time.sleep(4)
PY
HOLD=$!
for _ in $(seq 50); do
    curl -s "$PLAIN/metrics" | grep -q '^certfleet_tls_connections_open 2$' && break
    sleep 0.1
done
curl -s "$PLAIN/metrics" | grep -q '^certfleet_tls_connections_open 2$' ||
    fail "the two silent connections are not counted open"
T0=$(date +%s%N)
curl -sf -o /dev/null --max-time 8 --cacert "$T/root.pem" "$URL/healthz" ||
    fail "client beyond the cap never served"
MS=$((($(date +%s%N) - T0) / 1000000))
[ "$MS" -ge 1000 ] || fail "client beyond the cap of 2 served at once (${MS} ms): no cap"
kill "$HOLD" 2>/dev/null || true
wait "$HOLD" 2>/dev/null || true
pass "beyond --max-conns a client waits until the silent ones time out (${MS} ms), then is served"
stop_server
