# test_hostile.sh - bad input is refused with exit 1 (2 for usage), a message that names
# what was wrong, and no change to the store: its SQL dump, the audit log and the key
# directory are the same before and after every refused command.
. "$CF_SOURCE_DIR/tests/lib/common.sh"

D="$T/data"
export CERTFLEET_DATA="$D"

# snapshot FILE: everything a refused command must leave alone.
snapshot() {
    {
        sqlite3 "$D/certfleet.db" .dump
        cf audit log --json
        (cd "$D/keys" && ls -l --time-style=+%s .)
    } >"$1" 2>&1
}

# unchanged WHAT: the store is as it was at the last `snapshot "$T/before"`.
unchanged() {
    snapshot "$T/after"
    cmp -s "$T/before" "$T/after" || fail "$1 changed the store: $(diff "$T/before" "$T/after" | head -20)"
}

# refused RC PATTERN WHAT CMD...: CMD exits RC, its stderr matches PATTERN, store unchanged.
refused() {
    local rc=$1 pattern=$2 what=$3; shift 3
    expect_rc "$rc" "$@"
    expect_stderr "$pattern"
    expect_stderr "^certfleet: "
    [ ! -s "$T/stdout" ] || fail "$what: printed to stdout: $(head -c 300 "$T/stdout")"
    unchanged "$what"
    pass "$what"
}

# Before init: nothing is created.
expect_rc 1 cf issue --csr /dev/null --device d1
expect_stderr "not initialised"
[ ! -e "$D" ] || fail "issue before init created $D"
expect_rc 1 cf status
expect_stderr "not initialised.*certfleet init"
[ ! -e "$D" ] || fail "status before init created $D"
mkdir "$D"
expect_rc 1 cf audit log
expect_stderr "not initialised"
[ -z "$(ls -A "$D")" ] || fail "audit log before init wrote into $D: $(ls -A "$D")"
rmdir "$D"
pass "issue/status/audit before init: exit 1, 'not initialised', nothing created"

expect_rc 0 cf init --org Hostile
new_csr good
expect_rc 0 cf issue --csr "$T/good.csr" --device dev-1 --out "$T/dev-1.pem"
snapshot "$T/before"
grep -q "cert.issue" "$T/before" || fail "snapshot does not see the audit log"

# --- CSRs that are not acceptable ---
head -c 200 "$T/good.csr" >"$T/trunc.csr"
refused 1 "CSR.*(PEM|truncated|malformed)" "truncated PEM CSR" cf issue --csr "$T/trunc.csr" --device d1

openssl req -in "$T/good.csr" -outform DER -out "$T/good.der"
head -c 100 "$T/good.der" >"$T/trunc.der"
refused 1 "CSR.*(truncated|malformed)" "truncated DER CSR" cf issue --csr "$T/trunc.der" --device d1

# Flip a bit in the signature value (the last bytes of the DER).
"$(cf_python)" - "$T/good.der" "$T/badsig.der" <<'EOF'
import sys
d = bytearray(open(sys.argv[1], "rb").read())
d[-5] ^= 0x01
open(sys.argv[2], "wb").write(d)
EOF
openssl req -inform DER -in "$T/badsig.der" -noout 2>/dev/null || fail "bad-signature CSR does not parse"
openssl req -inform DER -in "$T/badsig.der" -verify -noout 2>&1 | grep -q "verify failure" ||
    fail "bad-signature CSR verifies"
refused 1 "CSR: signature does not verify" "CSR with a bad signature" cf issue --csr "$T/badsig.der" --device d1

{
    echo "-----BEGIN CERTIFICATE REQUEST-----"
    head -c 600 /dev/urandom | base64
    echo "-----END CERTIFICATE REQUEST-----"
} >"$T/garbage.csr"
refused 1 "CSR: .*(PEM|certificate request)" "PEM-wrapped garbage" \
    cf issue --csr "$T/garbage.csr" --device d1

head -c 10000000 /dev/zero | tr '\0' 'A' >"$T/huge.csr"
refused 1 "too large" "10 MB CSR file" cf issue --csr "$T/huge.csr" --device d1
refused 1 "too large" "10 MB CSR on stdin" sh -c '"$CERTFLEET" issue --csr - --device d1 <"$1"' sh "$T/huge.csr"

new_csr rsa1024 rsa:1024
refused 1 "RSA 1024 bits.*too weak" "CSR with a 1024-bit RSA key" cf issue --csr "$T/rsa1024.csr" --device d1

new_csr k1 ec -pkeyopt ec_paramgen_curve:secp256k1
refused 1 "curve secp256k1 is not allowed" "CSR on secp256k1" cf issue --csr "$T/k1.csr" --device d1
openssl ecparam -name prime256v1 -param_enc explicit -genkey -noout -out "$T/explicit.key"
openssl req -new -key "$T/explicit.key" -subj /CN=x -out "$T/explicit.csr" 2>/dev/null
refused 1 "explicit or unknown curve parameters" "CSR with explicit P-256 parameters" \
    cf issue --csr "$T/explicit.csr" --device d1

: >"$T/empty.csr"
refused 1 "CSR is empty" "empty CSR file" cf issue --csr "$T/empty.csr" --device d1
refused 1 "$T/missing.csr: cannot open: No such file" "missing CSR file" \
    cf issue --csr "$T/missing.csr" --device d1
refused 1 "$T: is a directory" "a directory as --csr" cf issue --csr "$T" --device d1

# --- bad device ids and options ---
refused 1 'device id "dev 1".*use 1-128 characters' "device id with a space" \
    cf issue --csr "$T/good.csr" --device "dev 1"
long=$(printf 'a%.0s' $(seq 200))
refused 1 "device id .*200 characters" "device id of 200 characters" \
    cf issue --csr "$T/good.csr" --device "$long"
refused 1 "device id" "empty device id" cf issue --csr "$T/good.csr" --device ""
refused 1 "device id" "device id with a slash" cf issue --csr "$T/good.csr" --device "a/../b"
for days in 0 -5 abc 36501 "" 1x; do
    refused 2 "--days $days: expected a number from 1 to 36500" "--days '$days'" \
        cf issue --csr "$T/good.csr" --device d1 --days "$days"
done
refused 2 "unknown option --frobnicate" "unknown option" cf issue --csr "$T/good.csr" --device d1 --frobnicate
refused 2 "--csr FILE and --device ID are required" "issue without --device" cf issue --csr "$T/good.csr"
refused 2 "needs a value" "--days without a value" cf issue --csr "$T/good.csr" --device d1 --days
refused 2 "takes neither --der nor --out" "--json with --out" \
    cf issue --csr "$T/good.csr" --device d1 --json --out "$T/x.pem"
refused 2 "unexpected argument extra" "stray argument" cf issue --csr "$T/good.csr" --device d1 extra
refused 1 "--out $T: is a directory" "--out names a directory" \
    cf issue --csr "$T/good.csr" --device d1 --out "$T"
refused 1 "--out $T/no/such/x.pem: cannot write in $T/no/such" "--out in a missing directory" \
    cf issue --csr "$T/good.csr" --device d1 --out "$T/no/such/x.pem"

# --- stores that cannot be used ---
rodir="$T/rodata"
mkdir "$rodir"
if [ "$(id -u)" = 0 ]; then chmod 755 "$rodir"; else chmod 555 "$rodir"; fi
# A copy of the binary that the unprivileged user can surely reach.
cp "$CERTFLEET" "$T/certfleet"
chmod 755 "$T/certfleet"
expect_rc 1 as_user "$T/certfleet" init --data "$rodir"
expect_stderr "^certfleet: init: $rodir.*(not writable|Permission denied)"
[ -z "$(ls -A "$rodir")" ] || fail "init in a read-only directory wrote $(ls -A "$rodir")"
if [ "$(id -u)" = 0 ]; then
    # root's store (0700) as seen by someone else
    expect_rc 1 as_user "$T/certfleet" status --data "$D"
    expect_stderr "^certfleet: status: $D.*(not writable|Permission denied)"
fi
unchanged "non-writable data directory"
pass "a non-writable data directory: exit 1 naming the path"

junk="$T/junk"
mkdir "$junk"
head -c 65536 /dev/urandom >"$junk/certfleet.db"
cp "$junk/certfleet.db" "$T/junk.orig"
for cmd in status "issue --csr $T/good.csr --device d1" "audit verify" "init"; do
    # shellcheck disable=SC2086
    expect_rc 1 cf $cmd --data "$junk"
    expect_stderr "$junk/certfleet.db.*not a valid certfleet database"
done
cmp -s "$junk/certfleet.db" "$T/junk.orig" || fail "certfleet wrote into a file that is not its database"
[ ! -e "$junk/keys" ] || fail "init on a non-database left keys behind"
pass "a store file that is not SQLite: exit 1, 'not a valid certfleet database', untouched"

# Another program's SQLite database: refused, and not one table added to it.
foreign=$T/foreign
mkdir -p "$foreign"
sqlite3 "$foreign/certfleet.db" "CREATE TABLE inventory (sku TEXT); INSERT INTO inventory VALUES ('a');"
sqlite3 "$foreign/certfleet.db" .dump >"$T/foreign.before"
for cmd in status init; do
    # shellcheck disable=SC2086
    expect_rc 1 cf $cmd --data "$foreign"
    expect_stderr "not a certfleet database.*nothing was changed"
done
sqlite3 "$foreign/certfleet.db" .dump >"$T/foreign.after"
cmp -s "$T/foreign.before" "$T/foreign.after" || fail "certfleet changed another program's database"
[ ! -e "$foreign/keys" ] || fail "init on a foreign database left keys behind"
pass "another program's SQLite database: exit 1, 'not a certfleet database', untouched"

refused 1 'store URL "bogus:xyz"' "--store bogus:xyz" cf status --store bogus:xyz
refused 1 'store URL "bogus:xyz"' "--store bogus:xyz for issue" \
    cf issue --store bogus:xyz --csr "$T/good.csr" --device d1
refused 1 "not initialised" "--store naming a missing sqlite file" cf status --store "sqlite:$T/nothing.db"
[ ! -e "$T/nothing.db" ] || fail "status created $T/nothing.db"

# --- init again ---
ls -l --time-style=+%s "$D/keys" >"$T/keys.before"
refused 1 "already initialised.*nothing was changed" "re-running init" cf init --org Other
refused 1 "already initialised" "re-running init with other key type" cf init --key-type rsa3072
ls -l --time-style=+%s "$D/keys" >"$T/keys.after"
cmp -s "$T/keys.before" "$T/keys.after" || fail "re-init changed the key directory"
# the two CA keys, and the OCSP responder's key and certificate
[ "$(find "$D/keys" -type f | wc -l)" = 4 ] || fail "expected 4 key files: $(ls "$D/keys")"

# And the store still works.
expect_rc 0 cf issue --csr "$T/good.csr" --device dev-2 --out "$T/dev-2.pem"
expect_rc 0 cf audit verify
pass "the store still issues and verifies after all that"
