# test_pkcs11.sh - CA keys in a PKCS#11 token (SoftHSM2): init and issuance sign inside the
# token, no private key and no PIN ever reaches the store, the audit log or the data
# directory, and a wrong PIN or a missing object fails cleanly without changing anything.
. "$CF_SOURCE_DIR/tests/lib/common.sh"

command -v softhsm2-util >/dev/null || fail "softhsm2-util not found (apt-get install softhsm2)"
command -v pkcs11-tool >/dev/null || fail "pkcs11-tool not found (apt-get install opensc)"
command -v sqlite3 >/dev/null || fail "sqlite3 not found (apt-get install sqlite3)"
MODULE=
for m in /usr/lib/*/softhsm/libsofthsm2.so /usr/lib/softhsm/libsofthsm2.so; do
    if [ -f "$m" ]; then MODULE=$m; break; fi
done
[ -n "$MODULE" ] || fail "libsofthsm2.so not found (apt-get install softhsm2)"

# Distinctive PINs, so that finding one in a file cannot be a coincidence of hex digits.
PIN=cf-pin-4711
WRONG_PIN=cf-wrong-9931
SO_PIN=cf-so-5678
D=$T/d

# A private token: SoftHSM2 finds its configuration through SOFTHSM2_CONF.
mkdir -p "$T/tokens"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' \
    "$T" >"$T/softhsm2.conf"
export SOFTHSM2_CONF=$T/softhsm2.conf
unset CERTFLEET_PKCS11_PIN CERTFLEET_PKCS11_MODULE
softhsm2-util --init-token --free --label cf --pin "$PIN" --so-pin "$SO_PIN" >/dev/null
p11() { pkcs11-tool --module "$MODULE" --token-label cf --login --pin "$PIN" "$@" >/dev/null 2>&1; }
p11 --keypairgen --key-type EC:prime256v1 --label root --id 01 || fail "cannot make root key"
p11 --keypairgen --key-type EC:prime256v1 --label issuing --id 02 || fail "cannot make issuing key"
p11 --keypairgen --key-type rsa:3072 --label rsa-issuing --id 03 || fail "cannot make RSA key"
pass "SoftHSM2 token with EC P-256 and RSA 3072 key pairs"

uri() { echo "pkcs11:token=cf;object=$1;type=private${2:-}?module-path=$MODULE"; }

# Dumps everything the store holds, to compare before and after a failed command.
store_dump() { sqlite3 "$1/certfleet.db" .dump; }

# --- a missing object or a wrong PIN: exit 1, a clear message, nothing written ----------
expect_rc 1 cf init --data "$D" --ca-key "$(uri no-such-key ";pin-value=$PIN")" \
    --root-key "$(uri root ";pin-value=$PIN")"
expect_stderr '^certfleet: init: issuing CA key: PKCS#11: .*object=no-such-key.*not found'
grep -q "pin-value\|$PIN" "$T/stderr" && fail "the PIN is echoed on stderr: $(cat "$T/stderr")"
for table in meta cas certificates audit; do
    n=$(sqlite3 "$D/certfleet.db" "SELECT count(*) FROM $table")
    [ "$n" = 0 ] || fail "a failed init left $n rows in $table"
done
[ "$(ls -A "$D")" = certfleet.db ] || fail "a failed init left files: $(ls -A "$D")"
pass "init with a missing key object: exit 1, 'not found', nothing stored"

store_dump "$D" >"$T/before.sql"
expect_rc 1 cf init --data "$D" --ca-key "$(uri issuing ";pin-value=$WRONG_PIN")" \
    --root-key "$(uri root ";pin-value=$WRONG_PIN")"
expect_stderr '^certfleet: init: root key: PKCS#11: .*PIN incorrect'
grep -q "$WRONG_PIN" "$T/stderr" && fail "the wrong PIN is echoed on stderr: $(cat "$T/stderr")"
store_dump "$D" >"$T/after.sql"
cmp -s "$T/before.sql" "$T/after.sql" || fail "a wrong PIN changed the store"
[ "$(ls -A "$D")" = certfleet.db ] || fail "a wrong PIN left files: $(ls -A "$D")"
pass "init with a wrong PIN: exit 1, 'PIN incorrect', store unchanged"

expect_rc 1 cf init --data "$D" --ca-key "$(uri issuing)" --root-key "$(uri root)"
expect_stderr 'no PIN for .*CERTFLEET_PKCS11_PIN'
pass "init without any PIN: exit 1 at once, no prompt"

# --- init with both CA keys in the token --------------------------------------------------
expect_rc 0 cf init --data "$D" --org "Acme" --ca-key "$(uri issuing ";pin-value=$PIN")" \
    --root-key "$(uri root ";pin-value=$PIN")"
grep -q "$PIN" "$T/stdout" "$T/stderr" && fail "init prints the PIN"
pass "init with root and issuing keys in the token"

# The CA records name the keys by URI, without the PIN.
sqlite3 "$D/certfleet.db" 'SELECT key_ref FROM cas ORDER BY id' >"$T/refs"
[ "$(sed -n 1p "$T/refs")" = "$(uri root)" ] || fail "root key_ref is $(sed -n 1p "$T/refs")"
[ "$(sed -n 2p "$T/refs")" = "$(uri issuing)" ] || fail "issuing key_ref: $(sed -n 2p "$T/refs")"
pass "the store records the key URIs without pin-value"

# --- issuance loads the issuing key from the stored URI and signs in the token ----------
new_csr dev1
expect_rc 1 cf issue --data "$D" --csr "$T/dev1.csr" --device dev1
expect_stderr 'issuing CA issuing-1: PKCS#11: no PIN'
export CERTFLEET_PKCS11_PIN=$PIN
expect_rc 0 cf issue --data "$D" --csr "$T/dev1.csr" --device dev1 --out "$T/dev1.pem"
# The chain is public: exporting it needs no PIN and no token.
env -u CERTFLEET_PKCS11_PIN "$CERTFLEET" ca export --data "$D" --out "$T/chain.pem" ||
    fail "ca export needed the token's PIN"
split_chain "$T/chain.pem"
openssl verify -CAfile "$T/root.pem" -untrusted "$T/issuing.pem" "$T/dev1.pem" >/dev/null ||
    fail "device certificate does not verify to the root"
# The issuing CA certificate carries the public key of the token's object 02.
pkcs11-tool --module "$MODULE" --token-label cf --read-object --type pubkey --id 02 \
    -o "$T/issuing-pub.der" >/dev/null 2>&1 || fail "cannot read the issuing public key"
openssl x509 -in "$T/issuing.pem" -noout -pubkey | openssl pkey -pubin -outform DER \
    >"$T/cert-pub.der"
openssl pkey -pubin -inform DER -in "$T/issuing-pub.der" -outform DER >"$T/token-pub.der" ||
    fail "the token's public key does not parse"
cmp -s "$T/cert-pub.der" "$T/token-pub.der" || fail "issuing CA key is not the token's key"
pass "issue signs with the token key (PIN from CERTFLEET_PKCS11_PIN); openssl verify: OK"

# A wrong PIN at issuance: exit 1, clear message, store unchanged.
store_dump "$D" >"$T/before.sql"
cf audit log --data "$D" --json >"$T/audit-before.json"
new_csr dev2
CERTFLEET_PKCS11_PIN=$WRONG_PIN expect_rc 1 cf issue --data "$D" --csr "$T/dev2.csr" --device dev2
expect_stderr '^certfleet: issue: issuing CA issuing-1: PKCS#11: .*PIN incorrect'
grep -q "$WRONG_PIN" "$T/stderr" && fail "the wrong PIN is echoed: $(cat "$T/stderr")"
store_dump "$D" >"$T/after.sql"
cf audit log --data "$D" --json >"$T/audit-after.json"
cmp -s "$T/before.sql" "$T/after.sql" || fail "issue with a wrong PIN changed the store"
cmp -s "$T/audit-before.json" "$T/audit-after.json" || fail "issue with a wrong PIN changed the audit log"
pass "issue with a wrong PIN: exit 1, 'PIN incorrect', store and audit log unchanged"

# --- no CA key in the data directory (the OCSP responder's own key is a file by design) ---
[ -z "$(find "$D" -name '*.key' ! -name 'ocsp-*')" ] ||
    fail "key files under DATA: $(find "$D" -name '*.key')"
! grep -rl 'PRIVATE KEY' "$D" >/dev/null || fail "PEM private key under DATA: $(grep -rl 'PRIVATE KEY' "$D")"
! grep -rl "pin-value" "$D" >/dev/null || fail "pin-value stored under DATA"
cf audit log --data "$D" --json >"$T/audit.json"
grep -q '"ca.init"' "$T/audit.json" || fail "no ca.init audit record"
grep -q '"cert.issue"' "$T/audit.json" || fail "no cert.issue audit record"
! grep -q "pin-value\|$PIN" "$T/audit.json" || fail "the PIN is in the audit log"
store_dump "$D" | grep -q "pin-value\|'$PIN'\|=$PIN" && fail "the PIN is in the store"
expect_rc 0 cf audit verify --data "$D"
pass "no private key file, no PEM key, no PIN under DATA or in the audit log"

# --- pin-source, and an RSA 3072 issuing key ---------------------------------------------
unset CERTFLEET_PKCS11_PIN
printf '%s\n' "$PIN" >"$T/pin"
chmod 600 "$T/pin"
R=$T/rsa
src="&pin-source=file:$T/pin"
expect_rc 0 cf init --data "$R" --ca-key "$(uri rsa-issuing)$src" --root-key "$(uri root)$src"
new_csr dev3
expect_rc 0 cf issue --data "$R" --csr "$T/dev3.csr" --device dev3 --out "$T/dev3.pem"
expect_rc 0 cf ca export --data "$R" --out "$T/chain-rsa.pem"
split_chain "$T/chain-rsa.pem"
openssl x509 -in "$T/issuing.pem" -noout -text | grep -q 'Public-Key: (3072 bit)' ||
    fail "issuing CA key is not RSA 3072"
openssl verify -CAfile "$T/root.pem" -untrusted "$T/issuing.pem" "$T/dev3.pem" >/dev/null ||
    fail "RSA-signed device certificate does not verify"
[ -z "$(find "$R" -name '*.key' ! -name 'ocsp-*')" ] || fail "key files under DATA"
pass "RSA 3072 issuing key in the token, PIN from pin-source: issue and verify OK"
