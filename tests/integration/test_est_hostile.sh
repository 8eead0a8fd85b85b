#!/bin/bash
# test_est_hostile.sh - EST enrollment against clients that should not get a certificate,
# each case with its own assertion on the status and the plain-text reason: a birth
# certificate of an unknown maker; devices unclaimed, suspended, blocked, decommissioned; a
# CSR naming another device; a CSR with the birth key; re-enrollment with a revoked and with
# an expired certificate; no client certificate; an unknown or foreign label; a body over the
# cap, a wrong content type, base64 garbage and a body that is not a CSR. Nothing of it may
# change a device or leave a certificate behind, and the server carries on.
. "$CF_SOURCE_DIR/tests/lib/common.sh"

PY=$(cf_python)
export CERTFLEET_DATA=$T/data
DB=$CERTFLEET_DATA/certfleet.db
R=$T/reel

cf init --org Vendor >/dev/null
cf manifest make --devices 7 --out "$R" --threads 1 --key-files >/dev/null
cf manifest make --devices 1 --out "$T/stranger" --threads 1 --key-files >/dev/null
cf manufacturer add --name chipco --root "$R/root.crt" --signer "$R/manifest-signer.crt" >/dev/null
cf onboard --manifest "$R/manifest.json" --manufacturer chipco --batch b1 >/dev/null 2>&1
cf owner add acme >/dev/null
cf owner add globex >/dev/null
mapfile -t IDS < <(tail -n +2 "$R/claim-codes.csv" | cut -d, -f1 | sort)
OK=${IDS[0]} HOLD=${IDS[1]} SUSP=${IDS[2]} BLOCK=${IDS[3]} GONE=${IDS[4]} REV=${IDS[5]} OLD=${IDS[6]}
for id in "$OK" "$SUSP" "$BLOCK" "$GONE" "$REV" "$OLD"; do
    cf device claim "$id" --owner acme >/dev/null
done
STRANGER=$(tail -n +2 "$T/stranger/claim-codes.csv" | cut -d, -f1)
cf ca export --out "$T/chain.pem"
split_chain "$T/chain.pem"

sql() { "$PY" -c 'import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
rows = c.execute(sys.argv[2]).fetchall(); c.commit()
for row in rows: print("|".join("" if v is None else str(v) for v in row))' "$DB" "$1"; }

SRV_LOG=$T/serve.log # serve_start logs there
serve_start --threads 1
EST=$URL/.well-known/est

# csr NAME SUBJECT [openssl req args...]: $T/NAME.key and $T/NAME.b64 (base64 DER CSR).
csr() {
    local name=$1 subj=$2; shift 2
    local keyargs=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/$name.key")
    if [ $# -gt 0 ]; then keyargs=("$@"); fi
    openssl req -new "${keyargs[@]}" -subj "$subj" -outform DER -out "$T/$name.der" 2>/dev/null ||
        fail "openssl req for $name"
    base64 "$T/$name.der" >"$T/$name.b64"
}
# post URL BODYFILE [curl args...]: prints the status; body in $T/body.
post() {
    local url=$1 body=$2; shift 2
    curl -s -o "$T/body" -w '%{http_code}' --cacert "$T/root.pem" \
        -H 'Content-Type: application/pkcs10' "$@" --data-binary @"$body" "$url" || true
}
# birth ID: curl arguments that present device ID's birth certificate.
birth() { echo "--cert $R/certs/$1.pem --key $R/keys/$1.key"; }
# expect STATUS PATTERN WHAT: the last reply had STATUS and a body matching PATTERN.
expect() {
    [ "$got" = "$1" ] || fail "$3: status $got, expected $1: $(cat "$T/body")"
    grep -Eq -- "$2" "$T/body" || fail "$3: reason does not match /$2/: $(cat "$T/body")"
}
state_of() { cf device show "$1" --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["state"])'; }
certs_of() { sql "SELECT COUNT(*) FROM certificates WHERE device_id = '$1'"; }

# A good enrollment first: the reference the refusals are measured against.
csr ok "/CN=$OK"
# shellcheck disable=SC2046
got=$(post "$EST/simpleenroll" "$T/ok.b64" $(birth "$OK"))
[ "$got" = 200 ] || fail "reference enrollment: $got $(cat "$T/body")"
base64 -d "$T/body" | openssl pkcs7 -inform DER -print_certs >"$T/ok.pem"

# ---- who the client is ----
csr s "/CN=$STRANGER"
got=$(post "$EST/simpleenroll" "$T/s.b64" --cert "$T/stranger/certs/$STRANGER.pem" \
    --key "$T/stranger/keys/$STRANGER.key")
expect 401 'not the birth certificate of any onboarded device' "birth certificate of an unknown maker"
got=$(post "$EST/simpleenroll" "$T/ok.b64")
expect 401 'no client certificate' "simpleenroll without a client certificate"
got=$(post "$EST/simplereenroll" "$T/ok.b64")
expect 401 'no client certificate' "simplereenroll without a client certificate"
got=$(curl -s -o "$T/body" -w '%{http_code}' --cacert "$T/root.pem" \
    "https://127.0.0.1:$TLS_PORT/api/v1/device/self")
expect 401 'no client certificate' "device/self without a client certificate"
# shellcheck disable=SC2046
got=$(post "$EST/simplereenroll" "$T/ok.b64" $(birth "$OK"))
expect 401 'not issued by certfleet' "simplereenroll with a birth certificate"
got=$(post "$EST/simplereenroll" "$T/ok.b64" --cert "$CERTFLEET_DATA/keys/server.pem" \
    --key "$CERTFLEET_DATA/keys/server.key")
expect 401 'names no device' "simplereenroll with the server's own certificate"
pass "401: unknown maker, no client certificate, birth certificate to re-enroll, a certificate of no device"

# ---- the device's state ----
csr hold "/CN=$HOLD"
# shellcheck disable=SC2046
got=$(post "$EST/simpleenroll" "$T/hold.b64" $(birth "$HOLD"))
expect 403 "device $HOLD is on_hold" "unclaimed device"

csr susp "/CN=$SUSP"
# shellcheck disable=SC2046
got=$(post "$EST/simpleenroll" "$T/susp.b64" $(birth "$SUSP"))
[ "$got" = 200 ] || fail "enrollment before suspension: $got"
base64 -d "$T/body" | openssl pkcs7 -inform DER -print_certs >"$T/susp.pem"
cf device suspend "$SUSP" >/dev/null
csr susp2 "/O=acme/CN=$SUSP"
got=$(post "$EST/simplereenroll" "$T/susp2.b64" --cert "$T/susp.pem" --key "$T/susp.key")
expect 403 "device $SUSP is suspended" "re-enrollment of a suspended device"
# shellcheck disable=SC2046
got=$(post "$EST/simpleenroll" "$T/susp2.b64" $(birth "$SUSP"))
expect 403 "device $SUSP is suspended" "birth enrollment of a suspended device"

sql "UPDATE devices SET blocked = 1 WHERE id = '$BLOCK'" >/dev/null
csr block "/CN=$BLOCK"
# shellcheck disable=SC2046
got=$(post "$EST/simpleenroll" "$T/block.b64" $(birth "$BLOCK"))
expect 403 "device $BLOCK is blocked" "blocked device"

cf device decommission "$GONE" >/dev/null
csr gone "/CN=$GONE"
# shellcheck disable=SC2046
got=$(post "$EST/simpleenroll" "$T/gone.b64" $(birth "$GONE"))
expect 403 "device $GONE is decommissioned" "decommissioned device"
for id in "$HOLD" "$BLOCK" "$GONE"; do
    [ "$(certs_of "$id")" = 0 ] || fail "a refused device got a certificate: $id"
done
[ "$(state_of "$HOLD")" = on_hold ] && [ "$(state_of "$BLOCK")" = claimed ] ||
    fail "a refused enrollment changed a device's state"
pass "403 naming the state: unclaimed, suspended (enroll and re-enroll), blocked, decommissioned"

# ---- labels ----
# shellcheck disable=SC2046
got=$(post "$EST/nosuchowner/simpleenroll" "$T/ok.b64" $(birth "$OK"))
expect 404 'unknown EST label nosuchowner' "unknown label"
csr lbl "/CN=$REV"
# shellcheck disable=SC2046
got=$(post "$EST/globex/simpleenroll" "$T/lbl.b64" $(birth "$REV"))
expect 403 "does not belong to owner globex" "another owner's label"
pass "labels: unknown 404, another owner's 403"

# ---- the CSR ----
csr other "/CN=$HOLD"
# shellcheck disable=SC2046
got=$(post "$EST/simpleenroll" "$T/other.b64" $(birth "$REV"))
expect 400 "names another device \\($HOLD\\)" "CSR whose CN names another device"
csr uri "/CN=x" -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/uri.key" \
    -addext "subjectAltName=URI:urn:certfleet:device:$OK"
# shellcheck disable=SC2046
got=$(post "$EST/simpleenroll" "$T/uri.b64" $(birth "$REV"))
expect 400 "names another device \\(urn:certfleet:device:$OK\\)" "CSR whose SAN names another device"
csr bk "/CN=$REV" -key "$R/keys/$REV.key"
# shellcheck disable=SC2046
got=$(post "$EST/simpleenroll" "$T/bk.b64" $(birth "$REV"))
expect 400 "birth key" "CSR with the birth key"
"$PY" - "$T/ok.der" "$T/badsig.der" <<'PY'
import sys
d = bytearray(open(sys.argv[1], "rb").read())
d[-5] ^= 0x01  # inside the signature
open(sys.argv[2], "wb").write(d)
PY
base64 "$T/badsig.der" >"$T/badsig.b64"
# shellcheck disable=SC2046
got=$(post "$EST/simpleenroll" "$T/badsig.b64" $(birth "$REV"))
expect 400 'CSR' "CSR whose signature does not verify"
[ "$(certs_of "$REV")" = 0 ] || fail "a refused CSR left a certificate"
pass "400: CSR naming another device (CN, SAN URI), with the birth key, with a bad signature"

# ---- the body ----
printf '!!! this is not base64 !!!' >"$T/garbage"
# shellcheck disable=SC2046
got=$(post "$EST/simpleenroll" "$T/garbage" $(birth "$REV"))
expect 400 'base64' "base64 garbage"
printf 'QUJD' >"$T/notcsr" # "ABC"
# shellcheck disable=SC2046
got=$(post "$EST/simpleenroll" "$T/notcsr" $(birth "$REV"))
expect 400 'CSR|request' "base64 of something that is not a CSR"
: >"$T/empty"
# shellcheck disable=SC2046
got=$(post "$EST/simpleenroll" "$T/empty" $(birth "$REV"))
expect 400 'base64' "empty body"
# shellcheck disable=SC2046
got=$(curl -s -o "$T/body" -w '%{http_code}' --cacert "$T/root.pem" $(birth "$REV") \
    -H 'Content-Type: text/plain' --data-binary @"$T/ok.b64" "$EST/simpleenroll")
expect 415 'Content-Type must be application/pkcs10' "wrong content type"
head -c 70000 /dev/zero | tr '\0' 'A' >"$T/big"
# shellcheck disable=SC2046
got=$(post "$EST/simpleenroll" "$T/big" $(birth "$REV") -H 'Expect: 100-continue')
[ "$got" = 413 ] || fail "body over the cap: $got, not 413"
[ "$(certs_of "$REV")" = 0 ] || fail "a refused body left a certificate"
pass "400 base64 garbage, not a CSR, empty; 415 wrong content type; 413 over the cap"

# ---- re-enrollment with a revoked and with an expired certificate ----
csr rev "/CN=$REV"
# shellcheck disable=SC2046
got=$(post "$EST/simpleenroll" "$T/rev.b64" $(birth "$REV"))
[ "$got" = 200 ] || fail "enrollment of $REV: $got $(cat "$T/body")"
base64 -d "$T/body" | openssl pkcs7 -inform DER -print_certs >"$T/rev.pem"
REV_SERIAL=$(openssl x509 -in "$T/rev.pem" -noout -serial | cut -d= -f2)
# No revoke command yet: the store is what revocation will write.
sql "UPDATE certificates SET status = 'revoked', reason = 1, revoked_us = 1 WHERE serial = '$REV_SERIAL'" >/dev/null
csr rev2 "/O=acme/CN=$REV"
got=$(post "$EST/simplereenroll" "$T/rev2.b64" --cert "$T/rev.pem" --key "$T/rev.key")
expect 401 "client certificate $REV_SERIAL is revoked \\(reason 1\\)" "re-enrollment with a revoked certificate"
got=$(curl -s -o "$T/body" -w '%{http_code}' --cacert "$T/root.pem" --cert "$T/rev.pem" \
    --key "$T/rev.key" "https://127.0.0.1:$TLS_PORT/api/v1/device/self")
expect 401 "revoked" "device/self with a revoked certificate"

# An expired certificate: issued by certfleet's issuing CA (its key in DATA/keys) with a
# validity in the past, recorded in the store as certfleet records what it issues.
csr old "/CN=$OLD"
"$PY" - "$CERTFLEET_DATA" "$DB" "$OLD" "$T/old.key" "$T/old.pem" <<'PY' || fail "crafting an expired certificate"
import datetime, glob, os, sqlite3, sys, time
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
data, db, dev, keyfile, out = sys.argv[1:]
ca_key = serialization.load_pem_private_key(open(glob.glob(data + "/keys/issuing-1-*.key")[0], "rb").read(), None)
c = sqlite3.connect(db)
ca_id, ca_der = c.execute("SELECT id, der FROM cas WHERE name = 'issuing-1'").fetchone()
ca = x509.load_der_x509_certificate(ca_der)
key = serialization.load_pem_private_key(open(keyfile, "rb").read(), None)
now = datetime.datetime.now(datetime.timezone.utc)
serial = int.from_bytes(os.urandom(16), "big") | (1 << 127)
name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "acme"),
                  x509.NameAttribute(NameOID.COMMON_NAME, dev)])
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(serial)
        .not_valid_before(now - datetime.timedelta(days=30))
        .not_valid_after(now - datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .sign(ca_key, hashes.SHA256()))
der = cert.public_bytes(serialization.Encoding.DER)
c.execute("UPDATE devices SET state = 'active' WHERE id = ?", (dev,))
c.execute("INSERT INTO certificates (serial, ca_id, device_id, subject, not_before, not_after,"
          " issued_us, der, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'good')",
          ("%X" % serial, ca_id, dev, "CN=" + dev, int((now - datetime.timedelta(days=30)).timestamp()),
           int((now - datetime.timedelta(days=1)).timestamp()), int(time.time() * 1e6), der))
c.commit()
open(out, "wb").write(cert.public_bytes(serialization.Encoding.PEM))
PY
csr old2 "/O=acme/CN=$OLD"
got=$(post "$EST/simplereenroll" "$T/old2.b64" --cert "$T/old.pem" --key "$T/old.key")
expect 401 "is expired" "re-enrollment with an expired certificate"
pass "401 naming the reason: re-enrollment with a revoked and with an expired certificate"

curl -sf -o /dev/null "$PLAIN/healthz" || fail "server unwell after the hostile cases"
curl -sf "$PLAIN/metrics" >"$T/metrics" || fail "GET /metrics"
grep -Eq '^certfleet_est_enrollments_total\{op="simpleenroll",result="refused"\} [1-9]' "$T/metrics" ||
    fail "refusals not counted"
grep -q 'BEGIN\|PRIVATE' "$SRV_LOG" && fail "key or certificate material in the log"
kill -TERM "$SRV_PID"
wait "$SRV_PID" || fail "serve did not exit cleanly"
SRV_PID=
pass "the server answers and exits cleanly after every hostile case; refusals counted"
