#!/usr/bin/env bash
# test_onboard_hostile.sh - manifests made by `certfleet manifest make`, then corrupted in
# every way a real file can be wrong. Each case gets a fresh store and its own assertions:
# the bad entry is reported with its index, unique id and a reason that names the fault,
# it changes nothing, and the good entries beside it still import. Broken files (truncated,
# too deeply nested, one endless string) fail at once, keep what came before the break and
# say so.
. "$CF_SOURCE_DIR/tests/lib/common.sh"

PY=$(cf_python)
json_get() { "$PY" -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"; }

cf manifest make --devices 6 --out "$T/A" --manufacturer "Maker A" >/dev/null
cf manifest make --devices 2 --out "$T/B" --manufacturer "Maker B" >/dev/null
# Birth certificates valid for 30 days from 2020: expired now.
cf manifest make --devices 3 --out "$T/EXP" --manufacturer "Maker A" --time 2020-01-01T00:00:00Z \
    --device-days 30 --provisioned-at 2020-01-02T00:00:00Z >/dev/null
# A signer valid for 30 days from 2020, used for chips provisioned in 2024.
cf manifest make --devices 3 --out "$T/SIGEXP" --manufacturer "Maker A" --time 2020-01-01T00:00:00Z \
    --signer-days 30 --provisioned-at 2024-01-01T00:00:00Z >/dev/null

# corrupt.py CASE OUT: A's manifest with entry 2 made bad in the way CASE says.
cat >"$T/corrupt.py" <<'EOF'
import base64, json, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

case, out, T = sys.argv[1], sys.argv[2], sys.argv[3]
entries = json.load(open(T + "/A/manifest.json"))
other = json.load(open(T + "/B/manifest.json"))

def b64d(s): return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
def b64e(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

def sign(entry, keyfile):
    """Re-signs entry (protected and payload as they are) with keyfile: ES256, raw r||s."""
    key = serialization.load_pem_private_key(open(keyfile, "rb").read(), None)
    der = key.sign((entry["protected"] + "." + entry["payload"]).encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    entry["signature"] = b64e(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

def flip(s, i):
    a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return s[:i] + a[(a.index(s[i]) + 1) % 64] + s[i + 1:]

e = entries[2]
signer_key = T + "/A/manifest-signer.key"
if case == "signature":
    e["signature"] = flip(e["signature"], 10)
elif case == "payload":
    p = json.loads(b64d(e["payload"]))
    p["model"] = "EDITED"
    e["payload"] = b64e(json.dumps(p, separators=(",", ":")).encode())
elif case == "unknown-signer":
    h = json.loads(b64d(e["protected"]))
    h["x5t#S256"] = b64e(bytes(32))
    h.pop("kid", None)
    e["protected"] = b64e(json.dumps(h).encode())
    sign(e, signer_key)
elif case == "other-root":
    # Maker B's device, properly signed by Maker A's signer: its chain leads to B's root.
    b = other[0]
    e = {"protected": e["protected"], "header": b["header"], "payload": b["payload"]}
    sign(e, signer_key)
    entries[2] = e
elif case == "jwk-mismatch":
    p = json.loads(b64d(e["payload"]))
    q = json.loads(b64d(entries[3]["payload"]))
    for k in ("x", "y"):
        p["publicKeySet"]["keys"][0][k] = q["publicKeySet"]["keys"][0][k]
    e["payload"] = b64e(json.dumps(p, separators=(",", ":")).encode())
    sign(e, signer_key)
elif case == "uid-mismatch":
    e["header"]["uniqueId"] = entries[3]["header"]["uniqueId"]
elif case == "duplicate":
    entries.append(json.loads(json.dumps(entries[2])))
elif case == "base64url":
    e["signature"] = e["signature"][:10] + "+/" + e["signature"][12:]
else:
    sys.exit("unknown case " + case)
json.dump(entries, open(out, "w"))
EOF

uid_of() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[int(sys.argv[2])]["header"]["uniqueId"])' "$1" "$2"; }

# fresh DIR MAKER-DIR: a new store with the maker of MAKER-DIR registered as "maker".
fresh() {
    cf init --data "$1" >/dev/null
    cf manufacturer add --data "$1" --name maker --root "$2/root.crt" \
        --signer "$2/manifest-signer.crt" >/dev/null
}

# one_bad CASE WANT-ADDED REASON-REGEX [KIND]: entry 2 of the CASE copy is reported (KIND,
# default rejected) with a reason matching REGEX; WANT-ADDED devices are added; the bad
# entry's device is not in the store unless it is a duplicate.
one_bad() {
    local case=$1 want_added=$2 re=$3 kind=${4:-rejected}
    local d="$T/s-$case" m="$T/$case.json"
    "$PY" "$T/corrupt.py" "$case" "$m" "$T"
    fresh "$d" "$T/A"
    expect_rc 0 cf onboard --data "$d" --manifest "$m" --manufacturer maker --json \
        --report "$T/$case.report"
    cp "$T/stdout" "$T/$case.sum"
    local idx=2
    [ "$case" = duplicate ] && idx=6
    local uid
    uid=$(uid_of "$m" $idx)
    [ "$(json_get "$T/$case.sum" 'j["added"]')" = "$want_added" ] \
        || fail "$case: expected $want_added added: $(cat "$T/$case.sum")"
    [ "$(json_get "$T/$case.sum" 'j["rejected"] + j["conflicts"]')" = 1 ] \
        || fail "$case: expected one bad entry: $(cat "$T/$case.sum")"
    [ "$(json_get "$T/$case.report" '[(e["index"], e["uid"], e["kind"]) for e in j]')" = "[($idx, '$uid', '$kind')]" ] \
        || fail "$case: report: $(cat "$T/$case.report")"
    json_get "$T/$case.report" 'j[0]["reason"]' | grep -Eqi -- "$re" \
        || fail "$case: reason does not match /$re/: $(cat "$T/$case.report")"
    expect_rc 0 cf audit verify --data "$d"
    pass "$case: entry $idx rejected ($(json_get "$T/$case.report" 'j[0]["reason"]' | cut -c1-90)), $want_added good ones added"
}

one_bad signature 5 'signature'
one_bad payload 5 'signature'
one_bad unknown-signer 5 'signer'
one_bad other-root 5 'root|chain|issuer|verify'
one_bad jwk-mismatch 5 'key'
one_bad uid-mismatch 5 'uniqueId|unique id'
one_bad base64url 5 'base64|character'
one_bad duplicate 6 'duplicate' duplicate

# The devices of rejected entries are not in the store.
sqlite3 -version >/dev/null 2>&1 && {
    uid=$(uid_of "$T/signature.json" 2)
    [ "$(sqlite3 "$T/s-signature/certfleet.db" "SELECT count(*) FROM devices WHERE id = '$uid'")" = 0 ] \
        || fail "the device of a rejected entry was stored"
}

# Expired birth certificates; a signer used outside its validity: every entry is refused,
# nothing verifies, exit 1.
for c in EXP:expired SIGEXP:'signer|valid'; do
    dir=${c%%:*} re=${c#*:}
    fresh "$T/s-$dir" "$T/$dir"
    expect_rc 1 cf onboard --data "$T/s-$dir" --manifest "$T/$dir/manifest.json" --manufacturer maker \
        --report "$T/$dir.report"
    expect_stderr 'no entry of .* verified'
    [ "$(json_get "$T/$dir.report" 'len(j)')" = 3 ] || fail "$dir: report: $(cat "$T/$dir.report")"
    json_get "$T/$dir.report" 'j[0]["reason"]' | grep -Eqi -- "$re" \
        || fail "$dir: reason does not match /$re/: $(cat "$T/$dir.report")"
    pass "$dir: every entry refused ($(json_get "$T/$dir.report" 'j[0]["reason"]' | cut -c1-90))"
done

# Truncated JSON: the entries before the cut import, the exit status is 1 and says so.
fresh "$T/s-trunc" "$T/A"
size=$(stat -c %s "$T/A/manifest.json")
head -c $((size * 2 / 3)) "$T/A/manifest.json" >"$T/trunc.json"
expect_rc 1 cf onboard --data "$T/s-trunc" --manifest "$T/trunc.json" --manufacturer maker --json
expect_stderr 'trunc|end of (file|input)|unexpected end'
expect_stderr 'committed'
added=$(json_get "$T/stdout" 'j["added"]')
[ "$added" -ge 3 ] && [ "$added" -lt 6 ] || fail "truncated: expected the first entries added: $(cat "$T/stdout")"
[ "$(json_get "$T/stdout" 'j["complete"]')" = False ] || fail "truncated: reported complete"
expect_rc 0 cf audit verify --data "$T/s-trunc"
pass "truncated JSON: $added entries before the cut imported, exit 1 naming the break"

# Deep nesting inside one element: refused before it is built; the elements before it stay.
"$PY" - "$T/A/manifest.json" "$T/deep.json" <<'EOF'
import json, sys
entries = json.load(open(sys.argv[1]))
text = ",".join(json.dumps(e) for e in entries[:2])
open(sys.argv[2], "w").write("[" + text + ',{"header":' + "[" * 100000 + "]" * 100000 + "}]")
EOF
fresh "$T/s-deep" "$T/A"
expect_rc 1 cf onboard --data "$T/s-deep" --manifest "$T/deep.json" --manufacturer maker --json
expect_stderr 'nest|deep|depth'
[ "$(json_get "$T/stdout" 'j["added"]')" = 2 ] || fail "deep nesting: $(cat "$T/stdout")"
pass "deep nesting: refused, the 2 entries before it imported"

# A 50 MB file that is one endless string: fails at the entry size cap without reading it all.
{
    printf '[{"payload":"'
    head -c $((50 * 1024 * 1024)) /dev/zero | tr '\0' 'A'
    printf '"}]'
} >"$T/endless.json"
fresh "$T/s-endless" "$T/A"
start=$(date +%s%N)
expect_rc 1 cf onboard --data "$T/s-endless" --manifest "$T/endless.json" --manufacturer maker --json
ms=$(( ($(date +%s%N) - start) / 1000000 ))
expect_stderr 'larger than|too large|exceeds|cap|1048576|1 MiB'
read_bytes=$(json_get "$T/stdout" 'j.get("bytes_read", 0)' 2>/dev/null || echo 0)
[ "$ms" -lt 5000 ] || fail "endless string: took $ms ms"
[ "$(json_get "$T/stdout" '(j["entries"], j["added"])')" = "(0, 0)" ] || fail "endless: $(cat "$T/stdout")"
pass "a 50 MB endless string fails at the entry cap in $ms ms ($(grep -o 'entry 0[^;]*' "$T/stderr" | head -1 | cut -c1-80))"

# Many bad entries with good ones: all counted, the good ones imported, one report entry each.
"$PY" - "$T" <<'EOF'
import json, sys
T = sys.argv[1]
entries = json.load(open(T + "/A/manifest.json"))
for i in (1, 4):
    s = entries[i]["signature"]
    entries[i]["signature"] = ("B" if s[0] != "B" else "C") + s[1:]
entries.insert(3, {"not": "an entry"})
json.dump(entries, open(T + "/mixed.json", "w"))
EOF
fresh "$T/s-mixed" "$T/A"
expect_rc 0 cf onboard --data "$T/s-mixed" --manifest "$T/mixed.json" --manufacturer maker --json --report "$T/mixed.report"
[ "$(json_get "$T/stdout" '(j["entries"], j["added"], j["rejected"])')" = "(7, 4, 3)" ] \
    || fail "mixed: $(cat "$T/stdout")"
[ "$(json_get "$T/mixed.report" 'sorted(e["index"] for e in j)')" = "[1, 3, 5]" ] \
    || fail "mixed: report: $(cat "$T/mixed.report")"
pass "good entries beside three bad ones import (4 added, 3 reported)"

# A conflict: the same unique id from another manifest with another key is reported, never
# overwritten.
"$PY" - "$T" <<'EOF'
import base64, json, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
T = sys.argv[1]
a = json.load(open(T + "/A/manifest.json"))
b = json.load(open(T + "/B/manifest.json"))
def b64d(s): return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
def b64e(x): return base64.urlsafe_b64encode(x).rstrip(b"=").decode()
# B's entry 0 claiming A's entry 0's unique id, without a certificate, signed by B's signer.
p = json.loads(b64d(b[0]["payload"]))
uid = a[0]["header"]["uniqueId"]
p["uniqueId"] = uid
for k in p["publicKeySet"]["keys"]:
    k.pop("x5c", None)
e = {"protected": b[0]["protected"], "header": {"uniqueId": uid},
     "payload": b64e(json.dumps(p, separators=(",", ":")).encode())}
key = serialization.load_pem_private_key(open(T + "/B/manifest-signer.key", "rb").read(), None)
r, s = decode_dss_signature(key.sign((e["protected"] + "." + e["payload"]).encode(), ec.ECDSA(hashes.SHA256())))
e["signature"] = b64e(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
json.dump([e], open(T + "/conflict.json", "w"))
EOF
fresh "$T/s-conflict" "$T/A"
cf manufacturer add --data "$T/s-conflict" --name maker-b --root "$T/B/root.crt" --signer "$T/B/manifest-signer.crt" >/dev/null
cf onboard --data "$T/s-conflict" --manifest "$T/A/manifest.json" --manufacturer maker >/dev/null
expect_rc 1 cf onboard --data "$T/s-conflict" --manifest "$T/conflict.json" --manufacturer maker-b --json --report "$T/conflict.report"
[ "$(json_get "$T/stdout" '(j["added"], j["conflicts"])')" = "(0, 1)" ] || fail "conflict: $(cat "$T/stdout")"
[ "$(json_get "$T/conflict.report" 'j[0]["kind"]')" = conflict ] || fail "conflict report: $(cat "$T/conflict.report")"
uid=$(uid_of "$T/A/manifest.json" 0)
[ "$(sqlite3 "$T/s-conflict/certfleet.db" "SELECT m.name FROM devices d JOIN manufacturers m ON m.id = d.manufacturer_id WHERE d.id = '$uid'")" = maker ] \
    || fail "conflict: the device was overwritten"
pass "a known unique id with another key is a conflict, reported and not overwritten"

# Claim codes: only a hash is stored, never the code.
fresh "$T/s-claim" "$T/A"
expect_rc 0 cf onboard --data "$T/s-claim" --manifest "$T/A/manifest.json" --manufacturer maker \
    --claim-codes "$T/A/claim-codes.csv"
[ "$(sqlite3 "$T/s-claim/certfleet.db" "SELECT count(claim_hash) FROM devices")" = 6 ] \
    || fail "claim hashes not stored"
read -r uid code < <(sed -n 2p "$T/A/claim-codes.csv" | tr ',' ' ')
want=$("$PY" - "$uid" "$code" <<'EOF'
import hashlib, sys
uid, code = sys.argv[1], sys.argv[2].replace("-", "").upper()
digits = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
n = 0
for ch in code:
    n = n * 32 + digits.index(ch)
print(hashlib.sha256(b"certfleet-claim-v1" + uid.encode() + n.to_bytes(16, "big")).hexdigest())
EOF
)
[ "$(sqlite3 "$T/s-claim/certfleet.db" "SELECT lower(hex(claim_hash)) FROM devices WHERE id = '$uid'")" = "$want" ] \
    || fail "claim_hash is not SHA-256(certfleet-claim-v1 || id || code)"
! grep -q -- "$code" "$T/s-claim/certfleet.db" || fail "a claim code is in the store in clear"
pass "claim codes are stored as SHA-256(\"certfleet-claim-v1\" || id || code), never in clear"

# The detached-signature PEM bundle: birth certificates (each followed by its batch CA),
# signed by the registered signer. It imports; a changed byte in it is refused whole.
"$PY" - "$T" <<'EOF2'
import base64, json, sys
T = sys.argv[1]
out = open(T + "/bundle.pem", "w")
for e in json.load(open(T + "/A/manifest.json")):
    p = json.loads(base64.urlsafe_b64decode(e["payload"] + "=" * (-len(e["payload"]) % 4)))
    for der in p["publicKeySet"]["keys"][0]["x5c"]:
        b = base64.b64encode(base64.b64decode(der)).decode()
        out.write("-----BEGIN CERTIFICATE-----\n")
        out.write("\n".join(b[i:i + 64] for i in range(0, len(b), 64)) + "\n")
        out.write("-----END CERTIFICATE-----\n")
EOF2
openssl dgst -sha256 -sign "$T/A/manifest-signer.key" -out "$T/bundle.sig" "$T/bundle.pem"
fresh "$T/s-bundle" "$T/A"
expect_rc 0 cf onboard --data "$T/s-bundle" --manifest "$T/bundle.pem" --bundle-sig "$T/bundle.sig" \
    --manufacturer maker --json
[ "$(json_get "$T/stdout" '(j["entries"], j["added"], j["sha256"])')" = "(6, 6, '$(sha256sum "$T/bundle.pem" | cut -d' ' -f1)')" ] \
    || fail "bundle: $(cat "$T/stdout")"
sed 's/^MII/MIJ/' "$T/bundle.pem" >"$T/bundle-bad.pem"
fresh "$T/s-bundle-bad" "$T/A"
expect_rc 1 cf onboard --data "$T/s-bundle-bad" --manifest "$T/bundle-bad.pem" --bundle-sig "$T/bundle.sig" \
    --manufacturer maker
expect_stderr 'signature'
[ "$(sqlite3 "$T/s-bundle-bad/certfleet.db" "SELECT count(*) FROM devices")" = 0 ] \
    || fail "a bundle with a bad signature added devices"
pass "a signed PEM bundle imports its 6 devices; a changed bundle is refused whole"
