#!/bin/bash
# test_serve_slowloris.sh - 200 slow clients (slowloris style) on the TLS listener of a server
# with a single worker: half send part of a TLS ClientHello, half finish the handshake and
# send part of an HTTP request head; all keep trickling a byte a second, held open. Meanwhile
# a normal client (curl) still gets EST cacerts and enrolls a device with its birth
# certificate, each within one second. Then the slow clients fall silent and the server's
# --timeout cuts every one of them, and the server serves on. Last, clients that go on
# trickling forever are cut by --request-timeout: a request must be in whole by then.
. "$CF_SOURCE_DIR/tests/lib/common.sh"

SLOW=200
TIMEOUT=2
REQUEST_TIMEOUT=15
D=$T/data
M=$T/maker

# ---- a fleet: a chip maker's manifest, onboarded and claimed ----
cf init --data "$D" >/dev/null
cf manifest make --devices 3 --out "$M" --key-files >/dev/null
cf manufacturer add --data "$D" --name acme --root "$M/root.crt" --signer "$M/manifest-signer.crt" >/dev/null
cf onboard --data "$D" --manifest "$M/manifest.json" --manufacturer acme --batch b1 >/dev/null
cf owner add --data "$D" cust >/dev/null
cf device claim --data "$D" --batch b1 --owner cust >/dev/null
cf ca export --data "$D" --out "$T/chain.pem"
split_chain "$T/chain.pem"
UIDS=()
for k in "$M"/keys/*.key; do UIDS+=("$(basename "$k" .key)"); done
[ -f "$M/certs/${UIDS[0]}.pem" ] || fail "manifest make --key-files wrote no certs/UID.pem"

TLS_PORT=$(free_port)
HTTP_PORT=$(free_port)
while [ "$HTTP_PORT" = "$TLS_PORT" ]; do HTTP_PORT=$(free_port); done
URL=https://127.0.0.1:$TLS_PORT
PLAIN=http://127.0.0.1:$HTTP_PORT
"$CERTFLEET" serve --data "$D" --listen "127.0.0.1:$TLS_PORT" --http "127.0.0.1:$HTTP_PORT" \
    --threads 1 --timeout "$TIMEOUT" --request-timeout "$REQUEST_TIMEOUT" 2>"$T/serve.log" &
SRV_PID=$!
at_exit "kill -KILL $SRV_PID 2>/dev/null"
for _ in $(seq 100); do
    curl -sf -o /dev/null "$PLAIN/healthz" && break
    kill -0 "$SRV_PID" 2>/dev/null || { cat "$T/serve.log" >&2; fail "serve exited at start"; }
    sleep 0.1
done

open_conns() { curl -s "$PLAIN/metrics" | awk '$1 == "certfleet_tls_connections_open" { print $2 }'; }

# ---- the slow clients ----
# They trickle until $T/quiet exists, then send nothing more and wait (at most 20 s) for the
# server to close each connection. Prints a JSON report at the end.
"$(cf_python)" - "$TLS_PORT" "$SLOW" "$T/ready" "$T/quiet" >"$T/slow.json" 2>"$T/slow.err" <<'PY' &
import json, os, select, socket, ssl, sys, time

port, n, ready, quiet = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
conns = []  # [socket, kind, closed_at]
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if i % 2 == 0:
        # A handshake record announcing 512 bytes, of which only the start of a ClientHello.
        s.sendall(bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]))
        kind = "tls"
    else:
        s = ctx.wrap_socket(s)
        s.sendall(b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        kind = "http"
    s.setblocking(False)
    conns.append([s, kind, None])
open(ready, "w").close()

def poll(timeout):
    live = [c for c in conns if c[2] is None]
    if not live:
        return
    r, _, _ = select.select([c[0] for c in live], [], [], timeout)
    for c in live:
        if c[0] not in r:
            continue
        try:
            if not c[0].recv(4096):
                c[2] = time.time()
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except OSError:
            c[2] = time.time()

last = 0.0
while not os.path.exists(quiet):
    if time.time() - last >= 1.0:
        last = time.time()
        for c in conns:
            if c[2] is None:
                try:
                    c[0].send(b"\x00" if c[1] == "tls" else b"x")
                except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
                except OSError:
                    c[2] = time.time()
    poll(0.1)
trickled = sum(1 for c in conns if c[2] is None)
silent_from = last
deadline = time.time() + 20
while time.time() < deadline and any(c[2] is None for c in conns):
    poll(0.1)
after = [c[2] - silent_from for c in conns if c[2] is not None and c[2] >= silent_from]
print(json.dumps({
    "opened": len(conns),
    "open_when_quiet": trickled,
    "still_open": sum(1 for c in conns if c[2] is None),
    "max_close_after_silence": max(after) if after else None,
}))
PY
SLOW_PID=$!
at_exit "touch '$T/quiet'; kill $SLOW_PID 2>/dev/null"
for _ in $(seq 200); do [ -e "$T/ready" ] && break; kill -0 $SLOW_PID 2>/dev/null || break; sleep 0.1; done
[ -e "$T/ready" ] || fail "the slow clients could not connect: $(cat "$T/slow.err")"
for _ in $(seq 50); do
    N=$(open_conns)
    [ "${N:-0}" -ge "$SLOW" ] && break
    sleep 0.1
done
[ "${N:-0}" -ge "$SLOW" ] || fail "the server counts $N open TLS connections, expected at least $SLOW"
pass "$SLOW slow clients connected and held open ($N TLS connections open)"

# ---- a normal client, meanwhile: within one second each ----
# elapsed_ms CMD...: runs CMD, prints how long it took in ms; fails the test if CMD fails.
elapsed_ms() {
    local t0 rc=0
    t0=$(date +%s%N)
    "$@" || rc=$?
    [ "$rc" = 0 ] || fail "normal client failed ($rc) while the slow ones were held: $*"
    echo $((($(date +%s%N) - t0) / 1000000))
}
sleep 1 # let the slow clients trickle once at least
MS=$(elapsed_ms curl -sf --max-time 5 --cacert "$T/root.pem" -o "$T/cacerts.b64" \
    "$URL/.well-known/est/cacerts")
base64 -d "$T/cacerts.b64" | openssl pkcs7 -inform DER -print_certs | grep -q 'Issuing CA' ||
    fail "cacerts under load is not the chain"
[ "$MS" -lt 1000 ] || fail "cacerts took $MS ms with $SLOW slow clients held open"
pass "cacerts served in $MS ms while $SLOW slow clients are held open"

DEV=${UIDS[0]}
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/op.key" \
    -subj "/CN=$DEV" -outform DER -out "$T/op.csr.der" 2>/dev/null
base64 "$T/op.csr.der" >"$T/op.csr.b64"
MS=$(elapsed_ms curl -sf --max-time 5 --cacert "$T/root.pem" --cert "$M/certs/$DEV.pem" \
    --key "$M/keys/$DEV.key" -H 'Content-Type: application/pkcs10' \
    --data-binary @"$T/op.csr.b64" -o "$T/op.p7.b64" "$URL/.well-known/est/simpleenroll")
base64 -d "$T/op.p7.b64" | openssl pkcs7 -inform DER -print_certs >"$T/op.pem" ||
    fail "the enrollment reply is not base64 PKCS#7"
openssl verify -CAfile "$T/root.pem" -untrusted "$T/issuing.pem" "$T/op.pem" >/dev/null ||
    fail "the enrolled certificate does not verify against the served chain"
[ "$MS" -lt 1000 ] || fail "enrollment took $MS ms with $SLOW slow clients held open"
N=$(open_conns)
[ "${N:-0}" -ge "$SLOW" ] || fail "only $N connections open after the normal client: were the slow ones cut early?"
pass "a device enrolled with curl in $MS ms while $SLOW slow clients are held open"

# ---- the slow clients fall silent: the server's timeout cuts them all ----
touch "$T/quiet"
wait "$SLOW_PID" || fail "slow clients: $(cat "$T/slow.err")"
"$(cf_python)" - "$T/slow.json" "$TIMEOUT" <<'PY' || fail "slow clients not cut by --timeout: $(cat "$T/slow.json")"
import json, sys
r, timeout = json.load(open(sys.argv[1])), float(sys.argv[2])
assert r["opened"] == 200, r
assert r["still_open"] == 0, r
# Cut within the timeout after their last byte, with slack for a loaded machine.
assert r["max_close_after_silence"] is not None and r["max_close_after_silence"] <= timeout + 4, r
PY
for _ in $(seq 50); do [ "$(open_conns)" = 0 ] && break; sleep 0.1; done
[ "$(open_conns)" = 0 ] || fail "the server still counts $(open_conns) TLS connections open"
curl -sf --max-time 5 --cacert "$T/root.pem" -o /dev/null "$URL/.well-known/est/cacerts" ||
    fail "server unwell after the slow clients"
pass "silent slow clients cut by --timeout $TIMEOUT, the last one $("$(cf_python)" -c \
    'import json, sys; print("%.1f" % json.load(open(sys.argv[1]))["max_close_after_silence"])' \
    "$T/slow.json") s after its last byte; the server serves on"

# ---- clients that never stop trickling: cut by --request-timeout ----
"$(cf_python)" - "$TLS_PORT" "$REQUEST_TIMEOUT" <<'PY' || fail "trickling clients were not cut by --request-timeout"
import select, socket, ssl, sys, time
port, limit = int(sys.argv[1]), float(sys.argv[2])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
conns = []
for i in range(20):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Trickle: ")
    s.setblocking(False)
    conns.append([s, None])
start = time.time()
while time.time() - start < limit + 10 and any(c[1] is None for c in conns):
    for c in conns:
        if c[1] is None:
            try:
                c[0].send(b"x")  # a byte every half second: never idle for --timeout
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            except OSError:
                c[1] = time.time() - start
            try:
                if not c[0].recv(4096):
                    c[1] = time.time() - start
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            except OSError:
                c[1] = time.time() - start
    time.sleep(0.5)
cut = [c[1] for c in conns if c[1] is not None]
assert len(cut) == len(conns), f"{len(conns) - len(cut)} of {len(conns)} still open after {limit + 10} s"
assert max(cut) <= limit + 5, f"cut after {max(cut):.1f} s, limit {limit}"
print(f"cut after {min(cut):.1f} to {max(cut):.1f} s")
PY
pass "clients that trickle a byte every half second are cut by --request-timeout $REQUEST_TIMEOUT"

kill -TERM "$SRV_PID"
rc=0
wait "$SRV_PID" || rc=$?
[ "$rc" = 0 ] || fail "serve exited $rc after SIGTERM"
