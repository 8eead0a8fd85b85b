#!/bin/bash
# test_estload_hostile.sh - the load generator (bench/estload.c) against a hostile server: a
# python TLS server that answers each connection with one misbehaviour (no handshake, no
# reply, a reply head without end, a lying Content-Length, chunked framing, garbage, a body
# that is not base64 PKCS#7 or holds no certificate for the CSR's key, an error status).
# estload must give up within its --timeout, name the cause, count the failure and exit 1,
# never crash or hang; against a well-behaved server it succeeds.
. "$CF_SOURCE_DIR/tests/lib/common.sh"
ESTLOAD=${CF_BUILD_DIR:?}/estload
[ -x "$ESTLOAD" ] || fail "$ESTLOAD missing: build the estload target"

# One device, as `manifest make --key-files` lays it out, and the fake server's identity.
mkdir -p "$T/dev/keys" "$T/dev/certs"
for d in dev1 dev2; do
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -keyout "$T/dev/keys/$d.key" -subj "/CN=$d" -out "$T/dev/certs/$d.pem" 2>/dev/null
done
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$T/srv.key" -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -out "$T/srv.pem" 2>/dev/null
# A valid PKCS#7 certs-only whose certificate is not for any CSR estload makes.
openssl crl2pkcs7 -nocrl -certfile "$T/srv.pem" -outform DER | base64 -w0 >"$T/other.p7.b64"

cat >"$T/fake.py" <<'PY'
import base64, datetime, os, socket, ssl, sys, time
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

port_file, mode, cert, key, other = sys.argv[1:6]
ca_key = serialization.load_pem_private_key(open(key, "rb").read(), None)
ca_cert = x509.load_pem_x509_certificate(open(cert, "rb").read())
served = 0

def issued(csr_b64):
    """base64 of a certs-only PKCS#7 holding a certificate for the CSR's key."""
    csr = x509.load_der_x509_csr(base64.b64decode(csr_b64))
    now = datetime.datetime.now(datetime.timezone.utc)
    crt = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca_cert.subject)
           .public_key(csr.public_key()).serial_number(x509.random_serial_number())
           .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
           .sign(ca_key, hashes.SHA256()))
    return base64.b64encode(pkcs7.serialize_certificates([ca_cert, crt], serialization.Encoding.DER))

def send_body(c, body):
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", 0))
ls.listen(16)
open(port_file + ".tmp", "w").write(str(ls.getsockname()[1]))
os.rename(port_file + ".tmp", port_file)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)

def reply(c, body):
    if mode == "issue" or (mode == "issue_once" and served == 1):
        send_body(c, issued(body))
    elif mode == "issue_once":
        send_body(c, open(other, "rb").read())
    elif mode == "issue_trailing":
        send_body(c, base64.b64encode(base64.b64decode(issued(body)) + b"\x00\x00"))
    elif mode == "garbage":
        c.sendall(b"HELLO THERE\r\n\r\n")
    elif mode == "nul":
        c.sendall(b"HTTP/1.1 200 OK\r\nX: \x00\x00\r\n")
        time.sleep(5)
    elif mode == "endless":
        try:
            while True:
                c.sendall(b"X-Filler: " + b"a" * 1000 + b"\r\n")
        except OSError:
            pass
    elif mode == "huge":
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n")
    elif mode == "negative":
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n")
    elif mode == "short":
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
    elif mode == "long":
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokAND MORE")
    elif mode == "chunked":
        c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
    elif mode == "status":
        c.sendall(b"HTTP/1.1 503 Busy\r\nContent-Length: 5\r\n\r\nbusy\n")
    elif mode == "badstatus":
        c.sendall(b"HTTP/1.1 0x9 Hm\r\nContent-Length: 0\r\n\r\n")
    elif mode == "notbase64":
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n!!!!!!!")
    elif mode == "notpkcs7":
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nAAAAAAAA")
    elif mode == "othercert":
        body = open(other, "rb").read()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    elif mode == "stall":
        time.sleep(30)
    elif mode == "healthz":
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")

while True:
    raw, _ = ls.accept()
    if mode == "nohandshake":
        time.sleep(30)
        continue
    try:
        c = ctx.wrap_socket(raw, server_side=True)
        data = b""
        while b"\r\n\r\n" not in data:
            got = c.recv(4096)
            if not got:
                break
            data += got
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        while len(body) < length:
            got = c.recv(4096)
            if not got:
                break
            body += got
        served += 1
        reply(c, body)
        c.close()
    except (OSError, ssl.SSLError):
        pass
PY

# run MODE CAUSE [estload args...]: estload against a fake server in MODE must fail with
# CAUSE in its report, exit 1, and take no longer than its timeout (1 s) and some slack.
run() {
    local mode=$1 cause=$2; shift 2
    rm -f "$T/port"
    "$(cf_python)" "$T/fake.py" "$T/port" "$mode" "$T/srv.pem" "$T/srv.key" "$T/other.p7.b64" \
        2>"$T/fake.err" &
    local fake=$!
    for _ in $(seq 100); do [ -s "$T/port" ] && break; sleep 0.05; done
    [ -s "$T/port" ] || fail "$mode: fake server did not start: $(cat "$T/fake.err")"
    local t0 rc=0 ms
    t0=$(date +%s%N)
    "$ESTLOAD" --connect "127.0.0.1:$(cat "$T/port")" --devices "$T/dev" --requests 1 \
        --timeout 1 --json "$@" >"$T/out.json" 2>"$T/out.err" || rc=$?
    ms=$((($(date +%s%N) - t0) / 1000000))
    kill "$fake" 2>/dev/null
    wait "$fake" 2>/dev/null || true
    [ "$rc" = 1 ] || fail "$mode: estload exited $rc (want 1): $(cat "$T/out.err")"
    grep -q "\"$cause\":1" "$T/out.json" || fail "$mode: cause $cause not counted: $(cat "$T/out.json")"
    grep -q "$cause error" "$T/out.err" || fail "$mode: no $cause message: $(cat "$T/out.err")"
    [ "$ms" -lt 4000 ] || fail "$mode: estload took $ms ms with --timeout 1"
    pass "$mode: estload reports a $cause error ($(sed -n 's/.*e\.g\. //p' "$T/out.err" | head -1))"
}

run nohandshake timeout
run stall timeout
run endless reply
run nul reply
run garbage reply
run huge reply
run negative reply
run long reply
run chunked reply
run badstatus reply
run short read
run status status
grep -q '"503":1' "$T/out.json" || fail "status 503 not counted by status: $(cat "$T/out.json")"
run notbase64 body
run notpkcs7 body
run othercert body
run garbage reply --healthz
# A reply for the CSR's key with bytes after the PKCS#7.
run issue_trailing body

# Replies are walked for the CSR's key, and decoded in full by OpenSSL only for each
# client's first and every 64th: a second reply for another key fails all the same.
rm -f "$T/port"
"$(cf_python)" "$T/fake.py" "$T/port" issue_once "$T/srv.pem" "$T/srv.key" "$T/other.p7.b64" \
    2>"$T/fake.err" &
FAKE=$!
for _ in $(seq 100); do [ -s "$T/port" ] && break; sleep 0.05; done
expect_rc 1 "$ESTLOAD" --connect "127.0.0.1:$(cat "$T/port")" --devices "$T/dev" \
    --requests 2 --timeout 2 --json
grep -q '"ok":1,"errors":1,' "$T/stdout" || fail "issue_once: $(cat "$T/stdout")"
grep -q '"body":1' "$T/stdout" || fail "issue_once: not a body error: $(cat "$T/stdout")"
kill "$FAKE"
wait "$FAKE" 2>/dev/null || true
pass "a second reply for another key is a body error without OpenSSL's full decode"

# ... and a well-behaved one.
rm -f "$T/port"
"$(cf_python)" "$T/fake.py" "$T/port" healthz "$T/srv.pem" "$T/srv.key" "$T/other.p7.b64" &
FAKE=$!
at_exit 'kill "$FAKE" 2>/dev/null' 
for _ in $(seq 100); do [ -s "$T/port" ] && break; sleep 0.05; done
expect_rc 0 "$ESTLOAD" --connect "127.0.0.1:$(cat "$T/port")" --devices "$T/dev" --healthz \
    --requests 5 --clients 2 --cacert "$T/srv.pem" --json
grep -q '"ok":5,' "$T/stdout" || fail "5 good requests: $(cat "$T/stdout")"
pass "against a well-behaved server with a verified certificate: 5 of 5"
kill "$FAKE"
wait "$FAKE" 2>/dev/null || true
rm -f "$T/port"
"$(cf_python)" "$T/fake.py" "$T/port" issue "$T/srv.pem" "$T/srv.key" "$T/other.p7.b64" &
FAKE=$!
for _ in $(seq 100); do [ -s "$T/port" ] && break; sleep 0.05; done
expect_rc 0 "$ESTLOAD" --connect "127.0.0.1:$(cat "$T/port")" --devices "$T/dev" \
    --requests 2 --cacert "$T/srv.pem" --json
grep -q '"ok":2,' "$T/stdout" || fail "2 good enrollments: $(cat "$T/stdout")"
pass "enrollments answered with a certificate for each CSR's key (after the CA's): 2 of 2"

# The server's certificate is verified: against another trust anchor, and for its name.
expect_rc 1 "$ESTLOAD" --connect "127.0.0.1:$(cat "$T/port")" --devices "$T/dev" --healthz \
    --requests 1 --cacert "$T/dev/certs/dev1.pem" --json
grep -q '"tls":1' "$T/stdout" || fail "an untrusted server is not a TLS error: $(cat "$T/stdout")"
kill "$FAKE"
wait "$FAKE" 2>/dev/null || true
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$T/srv2.key" -subj /CN=elsewhere.test -addext subjectAltName=DNS:elsewhere.test \
    -out "$T/srv2.pem" 2>/dev/null
rm -f "$T/port"
"$(cf_python)" "$T/fake.py" "$T/port" healthz "$T/srv2.pem" "$T/srv2.key" "$T/other.p7.b64" &
FAKE=$!
for _ in $(seq 100); do [ -s "$T/port" ] && break; sleep 0.05; done
expect_rc 1 "$ESTLOAD" --connect "127.0.0.1:$(cat "$T/port")" --devices "$T/dev" --healthz \
    --requests 1 --cacert "$T/srv2.pem" --json
grep -q '"tls":1' "$T/stdout" || fail "a name mismatch is not a TLS error: $(cat "$T/stdout")"
pass "an untrusted server certificate, or one that does not name the host, fails the handshake"

# Usage and set-up errors exit 2 with a message.
expect_rc 2 "$ESTLOAD" --devices "$T/dev"
expect_rc 2 "$ESTLOAD" --connect nohostport --devices "$T/dev"
expect_stderr 'expected HOST:PORT'
expect_rc 2 "$ESTLOAD" --connect 127.0.0.1:1 --devices "$T/nowhere"
expect_stderr 'cannot open'
expect_rc 2 "$ESTLOAD" --connect 127.0.0.1:1 --devices "$T/dev" --clients 0
expect_rc 2 "$ESTLOAD" --connect 127.0.0.1:1 --devices "$T/dev" --label 'a/b'
pass "usage errors exit 2 with a message"
