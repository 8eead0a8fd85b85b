# test_manifest_make.sh - `certfleet manifest make` plays the chip maker: openssl verifies every
# birth certificate to the maker's root through the batch CA, and an independent reader
# (check_manifest.py, python3-cryptography) verifies every JWS signature, the signer
# thumbprint, the unique ids, the JWK/certificate match, the device keys and the claim codes.
. "$CF_SOURCE_DIR/tests/lib/common.sh"

PY=$(cf_python)
CHECK="$CF_SOURCE_DIR/tests/integration/check_manifest.py"

# verify_births DIR: openssl verify of every birth certificate check_manifest.py extracted.
verify_births() {
    local dir=$1 n=0 f
    for f in "$dir"/check/*.pem; do
        openssl verify -CAfile "$dir/root.crt" -untrusted "$dir/batch-ca.crt" "$f" \
            >"$T/verify.out" 2>&1 || fail "openssl verify $f: $(cat "$T/verify.out")"
        n=$((n + 1))
    done
    echo $n
}

# 1. Twenty devices, with key files: every file, every mode, every signature, every chain.
M=$T/m20
expect_rc 0 cf manifest make --devices 20 --out "$M" --key-files --manufacturer "Acme Silicon"
[ -s "$T/stderr" ] && fail "stderr is not a terminal, yet got: $(cat "$T/stderr")"
grep -Eq '^wrote 20 devices to .* devices/s' "$T/stdout" || fail "summary: $(cat "$T/stdout")"
for f in root.key batch-ca.key manifest-signer.key device-keys.pem claim-codes.csv; do
    [ "$(stat -c %a "$M/$f")" = 600 ] || fail "$f has mode $(stat -c %a "$M/$f"), not 600"
done
for f in root.crt batch-ca.crt manifest-signer.crt manifest.json; do
    [ "$(stat -c %a "$M/$f")" = 644 ] || fail "$f has mode $(stat -c %a "$M/$f"), not 644"
done
[ "$(find "$M/keys" -name '01*.key' -perm 600 | wc -l)" = 20 ] || fail "keys/ lacks 20 0600 keys"
pass "manifest make writes every file with the right mode"

"$PY" "$CHECK" "$M" --devices 20 >"$T/check.out" 2>&1 || fail "check_manifest: $(cat "$T/check.out")"
pass "python3-cryptography verifies all 20 entries, keys and claim codes"

[ "$(verify_births "$M")" = 20 ] || fail "not 20 birth certificates verified"
openssl verify -CAfile "$M/root.crt" "$M/batch-ca.crt" >/dev/null 2>&1 || fail "batch CA does not chain"
pass "openssl verifies every birth certificate to the root through the batch CA"

openssl x509 -in "$M/manifest-signer.crt" -noout -text >"$T/signer.txt"
grep -q 'CA:FALSE' "$T/signer.txt" && grep -q 'Digital Signature' "$T/signer.txt" ||
    fail "manifest signer is not a CA:FALSE digitalSignature certificate"
openssl x509 -in "$M/root.crt" -noout -text | grep -q 'CA:TRUE' || fail "root is not a CA"
pass "signer and root have the profiles of a chip maker's"

uid=$(sed -n 2p "$M/claim-codes.csv" | cut -d, -f1)
openssl pkey -in "$M/keys/$uid.key" -pubout >"$T/k.pub" 2>/dev/null || fail "keys/$uid.key unreadable"
openssl x509 -in "$M/check/$uid.pem" -pubkey -noout >"$T/c.pub"
cmp -s "$T/k.pub" "$T/c.pub" || fail "keys/$uid.key is not the key of its birth certificate"
pass "a device's key file holds its certified key"

# 2. The checker is not a rubber stamp: an entry edited after signing fails it.
cp -r "$M" "$T/tampered"
"$PY" - "$T/tampered/manifest.json" <<'EOF'
import base64, json, sys
p = sys.argv[1]
d = json.load(open(p))
raw = base64.urlsafe_b64decode(d[3]["payload"] + "==")
raw = raw.replace(b'"groupId":"', b'"groupId":"X', 1)
d[3]["payload"] = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
json.dump(d, open(p, "w"), indent=2)
EOF
if "$PY" "$CHECK" "$T/tampered" --devices 20 >"$T/check.out" 2>&1; then
    fail "check_manifest accepted an edited payload"
fi
grep -q 'entry 3 .*JWS signature does not verify' "$T/check.out" || fail "$(cat "$T/check.out")"
pass "an edited payload fails the signature check"

# 3. Payload version 2: no publicKeySet, still signed.
expect_rc 0 cf manifest make --devices 3 --out "$T/v2" --version 2 --json
"$PY" -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["devices"] == 3, j' \
    "$T/stdout" || fail "--json summary: $(cat "$T/stdout")"
"$PY" "$CHECK" "$T/v2" --devices 3 --version 2 >"$T/check.out" 2>&1 ||
    fail "check_manifest v2: $(cat "$T/check.out")"
pass "version 2 manifests carry no publicKeySet and verify"

# 4. Refusals.
expect_rc 1 cf manifest make --devices 1 --out "$M"
expect_stderr 'already holds a manifest'
expect_rc 2 cf manifest make --devices 0 --out "$T/zero"
expect_rc 2 cf manifest make --devices 5
expect_rc 2 cf manifest make --devices 5 --out "$T/bad" --version 3
pass "manifest make refuses a used directory and bad options"

# 5. A fake clock, for tests that need expired certificates or signers used out of time.
expect_rc 0 cf manifest make --devices 2 --out "$T/old" --time 2001-01-01T00:30:00Z \
    --device-days 1 --signer-days 2 --provisioned-at 2001-01-01T12:00:00.250Z
"$PY" "$CHECK" "$T/old" --devices 2 >"$T/check.out" 2>&1 || fail "check_manifest: $(cat "$T/check.out")"
f=$(ls "$T"/old/check/*.pem | head -1)
[ "$(openssl x509 -in "$f" -noout -enddate)" = "notAfter=Jan  2 00:00:00 2001 GMT" ] ||
    fail "birth certificate $(openssl x509 -in "$f" -noout -dates)"
[ "$(openssl x509 -in "$T/old/manifest-signer.crt" -noout -enddate)" = "notAfter=Jan  3 00:00:00 2001 GMT" ] ||
    fail "signer $(openssl x509 -in "$T/old/manifest-signer.crt" -noout -dates)"
if openssl verify -CAfile "$T/old/root.crt" -untrusted "$T/old/batch-ca.crt" "$f" >"$T/verify.out" 2>&1; then
    fail "an expired birth certificate verified"
fi
grep -q 'expired' "$T/verify.out" || fail "$(cat "$T/verify.out")"
"$PY" - "$T/old/manifest.json" <<'PYEOF' || fail "provisioningTimestamp not as given"
import base64, json, sys
for e in json.load(open(sys.argv[1])):
    p = json.loads(base64.urlsafe_b64decode(e["payload"] + "=="))
    assert p["provisioningTimestamp"] == "2001-01-01T12:00:00.250Z", p["provisioningTimestamp"]
PYEOF
pass "--time, --device-days, --signer-days and --provisioned-at set the dates"
