# test_issue_profile.sh - device certificates follow the profile in DESIGN.md, for every CA
# key type and device key type: openssl verifies the chain, and an independent parser
# (check_profile.py, python3-cryptography) checks every extension, the serial, the validity
# and the signature. Requests for more (CA:TRUE, other EKUs, other SANs) are not honoured.
. "$CF_SOURCE_DIR/tests/lib/common.sh"

PY=$(cf_python)
CHECK="$CF_SOURCE_DIR/tests/integration/check_profile.py"
DEFAULT_BASE=http://127.0.0.1:8080

# init_store NAME [init options...]: a fresh data dir $T/NAME with its chain split into
# $T/NAME.issuing.pem and $T/NAME.root.pem.
init_store() {
    local name=$1; shift
    expect_rc 0 cf init --data "$T/$name" "$@"
    expect_rc 0 cf ca export --data "$T/$name" --out "$T/$name.chain.pem"
    split_chain "$T/$name.chain.pem"
    mv "$T/issuing.pem" "$T/$name.issuing.pem"
    mv "$T/root.pem" "$T/$name.root.pem"
}

# issue_and_check STORE CSR DEVICE ORG BASE DAYS [issue options...]
issue_and_check() {
    local store=$1 csr=$2 device=$3 org=$4 base=$5 days=$6; shift 6
    local leaf="$T/$store.$device.pem"
    expect_rc 0 cf issue --data "$T/$store" --csr "$T/$csr.csr" --device "$device" \
        --out "$leaf" "$@"
    openssl verify -CAfile "$T/$store.root.pem" -untrusted "$T/$store.issuing.pem" \
        -purpose sslclient "$leaf" >"$T/verify.out" 2>&1 ||
        fail "$store/$csr: openssl verify: $(cat "$T/verify.out")"
    "$PY" "$CHECK" "$leaf" "$T/$store.issuing.pem" "$T/$store.root.pem" --device "$device" \
        --org "$org" --base "$base" --days "$days" >"$T/profile.out" 2>&1 ||
        fail "$store/$csr: $(cat "$T/profile.out")"
    openssl x509 -in "$leaf" -noout -serial | sed 's/^serial=//' >>"$T/$store.serials"
}

new_csr p256 ec -pkeyopt ec_paramgen_curve:P-256
new_csr p384 ec -pkeyopt ec_paramgen_curve:P-384
new_csr rsa2048 rsa:2048
new_csr ed25519 ed25519

# One store per CA key type; each issues for every device key type.
init_store s256 --org "Acme Devices"
init_store s384 --org Acme384 --key-type p384
init_store srsa --org AcmeRSA --key-type rsa3072
grep -q "ASN1 OID: secp384r1" <(openssl x509 -in "$T/s384.issuing.pem" -noout -text) ||
    fail "--key-type p384 did not give a P-384 issuing CA"
grep -q "Public-Key: (3072 bit)" <(openssl x509 -in "$T/srsa.root.pem" -noout -text) ||
    fail "--key-type rsa3072 did not give an RSA 3072 root"
for store in s256 s384 srsa; do
    case $store in
    s256) org="Acme Devices" ;;
    s384) org=Acme384 ;;
    srsa) org=AcmeRSA ;;
    esac
    for kt in p256 p384 rsa2048 ed25519; do
        issue_and_check "$store" "$kt" "dev-$kt.01" "$org" "$DEFAULT_BASE" 365
    done
done
pass "profile holds for CA keys p256/p384/rsa3072 x device keys p256/p384/rsa2048/ed25519"

# --days, and serials unique over several issues of one store.
issue_and_check s256 p256 "dev:days-30" "Acme Devices" "$DEFAULT_BASE" 30 --days 30
issue_and_check s256 p256 "dev_days_1000" "Acme Devices" "$DEFAULT_BASE" 1000 --days 1000
for i in 1 2 3 4 5; do
    expect_rc 0 cf issue --data "$T/s256" --csr "$T/p256.csr" --device "again-$i" --out "$T/again.pem"
    openssl x509 -in "$T/again.pem" -noout -serial | sed 's/^serial=//' >>"$T/s256.serials"
done
"$PY" "$CHECK" "$T/again.pem" "$T/s256.issuing.pem" "$T/s256.root.pem" --device again-5 \
    --org "Acme Devices" --serials "$T/s256.serials" >"$T/profile.out" 2>&1 ||
    fail "serials: $(cat "$T/profile.out")"
[ "$(wc -l <"$T/s256.serials")" -ge 11 ] || fail "expected at least 11 serials"
# The store's default validity comes from init --device-days.
init_store sdays --org Days --device-days 90
issue_and_check sdays p256 dev90 Days "$DEFAULT_BASE" 90
pass "--days and --device-days set the validity; serials are unique"

# A custom base URL lands in the CRL DP and AIA.
init_store sbase --org Based --base-url https://pki.example.net:8443/fleet
issue_and_check sbase p384 dev-b Based https://pki.example.net:8443/fleet 365
# The checker itself must notice a wrong base URL (so the check above means something).
if "$PY" "$CHECK" "$T/sbase.dev-b.pem" "$T/sbase.issuing.pem" "$T/sbase.root.pem" \
    --device dev-b --org Based --base "$DEFAULT_BASE" >/dev/null 2>&1; then
    fail "check_profile.py accepted a certificate with another base URL"
fi
# ...and a wrong device id, and a wrong issuer.
if "$PY" "$CHECK" "$T/sbase.dev-b.pem" "$T/sbase.issuing.pem" "$T/sbase.root.pem" \
    --device dev-c --org Based --base https://pki.example.net:8443/fleet >/dev/null 2>&1; then
    fail "check_profile.py accepted a certificate for another device"
fi
if "$PY" "$CHECK" "$T/sbase.dev-b.pem" "$T/s256.issuing.pem" "$T/sbase.root.pem" \
    --device dev-b --org Based --base https://pki.example.net:8443/fleet >/dev/null 2>&1; then
    fail "check_profile.py accepted a certificate against another issuing CA"
fi
pass "--base-url is used in CRL DP and AIA; the checker rejects mismatches"

# Output formats: --der, --chain, --json.
expect_rc 0 cf issue --data "$T/s256" --csr "$T/p256.csr" --device fmt-der --der --out "$T/leaf.der"
openssl x509 -inform DER -in "$T/leaf.der" -noout -subject >"$T/subj" 2>&1 ||
    fail "--der output does not parse as DER: $(cat "$T/subj")"
grep -q "CN = fmt-der" "$T/subj" || fail "--der: wrong subject $(cat "$T/subj")"
! grep -q "BEGIN" "$T/leaf.der" || fail "--der output is PEM"

expect_rc 0 cf issue --data "$T/s256" --csr "$T/p256.csr" --device fmt-chain --chain --out "$T/chain-out.pem"
[ "$(grep -c 'BEGIN CERTIFICATE' "$T/chain-out.pem")" = 2 ] || fail "--chain: expected 2 certificates"
awk '/BEGIN/{n++} n==1' "$T/chain-out.pem" >"$T/c1.pem"
awk '/BEGIN/{n++} n==2' "$T/chain-out.pem" >"$T/c2.pem"
openssl x509 -in "$T/c1.pem" -noout -subject | grep -q "CN = fmt-chain" || fail "--chain: leaf is not first"
cmp -s <(openssl x509 -in "$T/c2.pem" -outform DER) <(openssl x509 -in "$T/s256.issuing.pem" -outform DER) ||
    fail "--chain: second certificate is not the issuing CA"
openssl verify -CAfile "$T/s256.root.pem" -untrusted "$T/c2.pem" "$T/c1.pem" >/dev/null ||
    fail "--chain: leaf does not verify with the chain given"

expect_rc 0 cf issue --data "$T/s256" --csr "$T/p256.csr" --device fmt-json --json
"$PY" - "$T/stdout" "$T/fmt.pem" "$T/fmt.serial" <<'EOF' || fail "--json output: $(cat "$T/stdout")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["device"] == "fmt-json", d
assert isinstance(d["serial"], str) and len(d["serial"]) >= 30, d
assert d["pem"].startswith("-----BEGIN CERTIFICATE-----"), d
open(sys.argv[2], "w").write(d["pem"])
open(sys.argv[3], "w").write(d["serial"])
EOF
[ "$(openssl x509 -in "$T/fmt.pem" -noout -serial | sed 's/^serial=//')" = "$(cat "$T/fmt.serial")" ] ||
    fail "--json: serial does not match the certificate's"
# DER with --chain: two DER certificates back to back.
expect_rc 0 cf issue --data "$T/s256" --csr "$T/p256.csr" --device fmt-derchain --der --chain --out "$T/chain.der"
openssl x509 -inform DER -in "$T/chain.der" -noout -subject | grep -q "CN = fmt-derchain" ||
    fail "--der --chain: first certificate is not the leaf"
pass "--der, --chain and --json outputs"

# A request that asks for more than the profile gives gets none of it.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/greedy.key" \
    -subj "/CN=greedy/O=Evil Corp/OU=admins" -out "$T/greedy.csr" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "extendedKeyUsage=serverAuth,codeSigning,clientAuth" \
    -addext "subjectAltName=DNS:evil.example.com,DNS:*.example.com,IP:10.0.0.1,email:a@b.c" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
openssl req -in "$T/greedy.csr" -noout -text | grep -q "CA:TRUE" || fail "greedy CSR was not built"
issue_and_check s256 greedy dev-greedy "Acme Devices" "$DEFAULT_BASE" 365
openssl x509 -in "$T/s256.dev-greedy.pem" -noout -text >"$T/greedy.txt"
for bad in "CA:TRUE" "evil.example.com" "Server Authentication" "Code Signing" "10.0.0.1" \
    "Evil Corp" "admins" "Certificate Sign"; do
    ! grep -q "$bad" "$T/greedy.txt" || fail "the certificate carries '$bad' from the CSR"
done
pass "CA:TRUE, extra EKUs, SANs, key usages and subject fields in the CSR are ignored"
