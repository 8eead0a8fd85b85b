# test_audit_tamper.sh - every way of tampering with the audit table behind certfleet's back
# (editing, deleting, swapping, inserting, truncating records, editing hashes) is caught by
# `certfleet audit verify`, which exits 1 and names the first bad record. Also pins the
# filters of `audit log`.
. "$CF_SOURCE_DIR/tests/lib/common.sh"

PY=$(cf_python)
M="$T/master"
expect_rc 0 cf init --data "$M" --org Tamper
new_csr dev
# init writes records 1 (ca.init) and 2 (cert.issue_ocsp, the OCSP responder's certificate);
# then record N is the issue of device dev-(N-1), dev-2 to dev-8.
for i in 2 3 4 5 6 7 8; do
    expect_rc 0 cf issue --data "$M" --csr "$T/dev.csr" --device "dev-$i" --out "$T/dev-$i.pem"
    # Spread the records in time so --from/--until have something to cut.
    [ "$i" != 5 ] || sleep 1.1
done
HEAD=9
expect_rc 0 cf audit verify --data "$M"
expect_rc 0 cf audit log --data "$M" --json
"$PY" -c 'import json,sys; a=json.load(open(sys.argv[1])); assert [r["seq"] for r in a]==list(range(1,10)), a' \
    "$T/stdout" || fail "master store: expected audit records 1..$HEAD"

# fresh NAME: a copy of the master data dir at $T/NAME, checkpointed so the copy is whole.
fresh() {
    rm -rf "${T:?}/${1:?}"
    sqlite3 "$M/certfleet.db" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
    cp -a "$M" "$T/$1"
    C="$T/$1"
}

# sql SQL...: runs SQL on the copy's database.
sql() { sqlite3 "$C/certfleet.db" "$@"; }

# forge SEQ PREV_HEX ACTOR ACTION OBJECT DETAILS TIME_US: prints the hex hash certfleet
# would compute for such a record (audit.h documents the construction): a forger who
# knows the algorithm makes records that are valid on their own.
forge() {
    "$PY" - "$@" <<'EOF'
import hashlib, struct, sys
seq, prev, actor, action, obj, details, t = sys.argv[1:8]
h = hashlib.sha256(b"certfleet-audit-v1" + bytes.fromhex(prev)
                   + struct.pack(">QQ", int(seq), int(t)))
for f in (actor, action, obj, details):
    b = f.encode()
    h.update(struct.pack(">I", len(b)) + b)
print(h.hexdigest())
EOF
}

# tampered WHAT N: audit verify exits 1 naming record N ("" = any record).
tampered() {
    local what=$1 n=$2
    expect_rc 1 cf audit verify --data "$C"
    if [ -n "$n" ]; then
        expect_stderr "^certfleet: audit verify: audit record $n: "
    else
        expect_stderr "^certfleet: audit verify: audit record [0-9]+: "
    fi
    # The JSON form says the same.
    expect_rc 1 cf audit verify --data "$C" --json
    "$PY" - "$T/stdout" "$n" <<'EOF' || fail "$what: audit verify --json: $(cat "$T/stdout")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["ok"] is False, r
assert r["first_bad"] >= 1, r
if sys.argv[2]:
    assert r["first_bad"] == int(sys.argv[2]), r
EOF
    pass "$what -> audit record ${n:-?}"
}

# The forger's own check: a hash computed here equals what certfleet stored for record 2.
read -r s2 t2 a2 ac2 o2 p2 h2 < <(sqlite3 -separator ' ' "$M/certfleet.db" \
    "SELECT seq, time_us, actor, action, object, hex(prev_hash), hex(hash) FROM audit WHERE seq = 2")
d2=$(sqlite3 "$M/certfleet.db" "SELECT details FROM audit WHERE seq = 2")
[ "$(forge "$s2" "$p2" "$a2" "$ac2" "$o2" "$d2" "$t2")" = "$(echo "$h2" | tr A-F a-f)" ] ||
    fail "the hash construction in audit.h does not match the stored hashes"

fresh untouched
expect_rc 0 cf audit verify --data "$C"
grep -q "audit chain intact: $HEAD records" "$T/stdout" || fail "untouched copy: $(cat "$T/stdout")"
pass "an untouched copy verifies"

# --- edits ---
fresh edit-actor
sql "UPDATE audit SET actor = 'cli:mallory' WHERE seq = 4"
tampered "record 4's actor edited" 4
fresh edit-details
sql "UPDATE audit SET details = replace(details, 'dev-3', 'dev-9') WHERE seq = 4"
[ "$(sql "SELECT count(*) FROM audit WHERE details LIKE '%dev-9%'")" = 1 ] || fail "details edit missed"
tampered "record 4's details edited" 4
fresh edit-time
sql "UPDATE audit SET time_us = time_us + 1 WHERE seq = 4"
tampered "record 4's time moved by 1 us" 4
fresh edit-action
sql "UPDATE audit SET action = 'cert.revoke' WHERE seq = 4"
tampered "record 4's action edited" 4
fresh edit-hash
sql "UPDATE audit SET hash = randomblob(32) WHERE seq = 4"
tampered "record 4's hash replaced" 4
fresh edit-prev
sql "UPDATE audit SET prev_hash = randomblob(32) WHERE seq = 4"
tampered "record 4's previous-hash replaced" 4
# Lengths: a hash cut to 31 bytes, or with a zero byte appended (which zero-padding or
# truncating to 32 bytes would take for the original, whatever the hash's bytes are).
fresh edit-hash-short
sql "UPDATE audit SET hash = substr(hash, 1, 31) WHERE seq = 4"
tampered "record 4's hash cut short" 4
fresh edit-hash-long
sql "UPDATE audit SET hash = hash || zeroblob(1) WHERE seq = 4"
tampered "record 4's hash with a zero byte appended" 4
fresh edit-prev-long
sql "UPDATE audit SET prev_hash = prev_hash || zeroblob(1) WHERE seq = 4"
tampered "record 4's previous-hash with a zero byte appended" 4
fresh edit-head-long
sql "UPDATE audit_head SET hash = hash || zeroblob(1)"
expect_rc 1 cf audit verify --data "$C"
expect_stderr "^certfleet: audit verify: .*audit head's hash is not 32 bytes long"
expect_rc 1 cf issue --data "$C" --csr "$T/dev.csr" --device dev-9
expect_stderr "audit head's hash is not 32 bytes long"
pass "the head's hash with a zero byte appended -> refused (and nothing more is appended)"
fresh edit-last
sql "UPDATE audit SET object = 'dev-x' WHERE seq = $HEAD"
tampered "the last record edited" "$HEAD"
fresh edit-first
sql "UPDATE audit SET details = '{}' WHERE seq = 1"
tampered "the first record (ca.init) edited" 1

# Edit record 4 and rehash it and every later record, as a forger who knows the algorithm
# would: the chain is consistent again, but the head (moved only by certfleet) gives it away.
fresh rehash
for seq in $(seq 4 $HEAD); do
    prev=$(sql "SELECT hex(hash) FROM audit WHERE seq = $((seq - 1))")
    [ "$seq" != 4 ] || sql "UPDATE audit SET actor = 'cli:mallory' WHERE seq = 4"
    IFS='|' read -r t a ac o < <(sql "SELECT time_us, actor, action, object FROM audit WHERE seq = $seq")
    d=$(sql "SELECT details FROM audit WHERE seq = $seq")
    h=$(forge "$seq" "$prev" "$a" "$ac" "$o" "$d" "$t")
    sql "UPDATE audit SET prev_hash = X'$prev', hash = X'$h' WHERE seq = $seq"
done
tampered "record 4 edited and the chain after it recomputed" ""

# --- deletions ---
fresh delete-4
sql "DELETE FROM audit WHERE seq = 4"
tampered "record 4 deleted" 4
fresh delete-tail
sql "DELETE FROM audit WHERE seq > $((HEAD - 2))"
tampered "the last 2 records deleted" $((HEAD - 1))
fresh delete-all
sql "DELETE FROM audit"
tampered "every record deleted" 1
fresh delete-head
sql "DELETE FROM audit_head"
expect_rc 1 cf audit verify --data "$C"
expect_stderr "^certfleet: audit verify: .*audit head record is missing"
expect_rc 1 cf issue --data "$C" --csr "$T/dev.csr" --device dev-9
expect_stderr "audit head record is missing"
pass "the head row deleted -> audit head record is missing (and nothing more is appended)"

# --- swaps ---
fresh swap-content
sql "CREATE TABLE t AS SELECT * FROM audit WHERE seq IN (3, 5);
     UPDATE audit SET (time_us, actor, action, object, details, prev_hash, hash) =
       (SELECT time_us, actor, action, object, details, prev_hash, hash FROM t
        WHERE t.seq = 8 - audit.seq) WHERE seq IN (3, 5);
     DROP TABLE t;"
[ "$(sql "SELECT object FROM audit WHERE seq = 3")" = dev-4 ] || fail "content swap missed"
tampered "records 3 and 5 swapped (content, seq kept)" 3
fresh swap-seq
sql "UPDATE audit SET seq = -3 WHERE seq = 3; UPDATE audit SET seq = 3 WHERE seq = 5;
     UPDATE audit SET seq = 5 WHERE seq = -3;"
tampered "records 3 and 5 swapped (seq values)" 3
fresh swap-fields
sql "UPDATE audit SET object = CASE seq WHEN 3 THEN 'dev-4' ELSE 'dev-2' END WHERE seq IN (3, 5)"
tampered "objects of records 3 and 5 swapped" 3

# --- insertions ---
fresh append-forged
prev=$(sql "SELECT hex(hash) FROM audit WHERE seq = $HEAD")
t=$(sql "SELECT time_us + 1000 FROM audit WHERE seq = $HEAD")
det='{"device":"dev-evil","key":"EC P-256","not_after":1,"serial":"01"}'
h=$(forge $((HEAD + 1)) "$prev" cli:root cert.issue dev-evil "$det" "$t")
sql "INSERT INTO audit VALUES ($((HEAD + 1)), $t, 'cli:root', 'cert.issue', 'dev-evil',
     '$det', X'$prev', X'$h')"
tampered "a well-formed record appended after the head" $((HEAD + 1))
fresh append-garbage
sql "INSERT INTO audit VALUES ($((HEAD + 1)), 1, 'x', 'y', 'z', '{}', randomblob(32), randomblob(32))"
tampered "a garbage record appended after the head" $((HEAD + 1))

# In the middle: renumber 4.. up by one, put a forged record 4 in the gap.
insert_middle() {
    sql "UPDATE audit SET seq = -(seq + 1) WHERE seq >= 4; UPDATE audit SET seq = -seq WHERE seq < 0;"
    prev=$(sql "SELECT hex(hash) FROM audit WHERE seq = 3")
    t=$(sql "SELECT time_us + 1 FROM audit WHERE seq = 3")
    h=$1
    [ -n "$h" ] || h=$(forge 4 "$prev" cli:root cert.issue dev-evil '{}' "$t")
    sql "INSERT INTO audit VALUES (4, $t, 'cli:root', 'cert.issue', 'dev-evil', '{}', X'$prev', X'$h')"
    [ "$(sql "SELECT count(*) FROM audit")" = $((HEAD + 1)) ] || fail "middle insert missed"
}
fresh insert-middle
insert_middle ""
# Record 4 is valid on its own; record 5 (the old 4) no longer chains to it. Naming 4 would
# be as right as naming 5 (a signed log could tell), so either is accepted.
expect_rc 1 cf audit verify --data "$C"
expect_stderr "^certfleet: audit verify: audit record [45]: "
pass "a well-formed record inserted in the middle (renumbered) -> $(grep -Eo 'audit record [0-9]+' "$T/stderr")"
fresh insert-middle-garbage
insert_middle "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
tampered "a badly hashed record inserted in the middle" 4
# Rows numbered outside the chain (0, negative) are insertions too.
for n in 0 -7; do
    fresh "insert-seq$n"
    sql "INSERT INTO audit VALUES ($n, 1, 'cli:root', 'cert.issue', 'dev-evil', '{}', zeroblob(32), randomblob(32))"
    tampered "a record numbered $n inserted before the chain" 1
    expect_stderr "record numbered $n"
done
fresh insert-renumber-only
sql "UPDATE audit SET seq = -(seq + 1) WHERE seq >= 4; UPDATE audit SET seq = -seq WHERE seq < 0;"
tampered "records 4.. renumbered (a gap at 4)" 4

# --- audit log filters (on the master) ---
logj() {
    expect_rc 0 cf audit log --data "$M" --json "$@"
    "$PY" -c '
import json, sys
print(" ".join(str(r["seq"]) for r in json.load(open(sys.argv[1]))))' "$T/stdout"
}
expect_seqs() {
    local want=$1; shift
    local got
    got=$(logj "$@")
    [ "$got" = "$want" ] || fail "audit log $*: got [$got], want [$want]"
}
expect_seqs "1 2 3 4 5 6 7 8 9"
expect_seqs "2 3 4 5 6 7 8 9" --action 'cert.*'
expect_seqs "3 4 5 6 7 8 9" --action cert.issue
expect_seqs "1" --action ca.init
expect_seqs "1" --action 'ca.*'
expect_seqs "" --action cert
expect_seqs "" --action 'cert.issue.*'
expect_seqs "4" --object dev-3
expect_seqs "" --object dev-99
expect_seqs "1 3 4 5 6 7 8 9" --actor "cli:$(id -un)"
expect_seqs "2" --actor certfleet
expect_seqs "" --actor cli:nobody-else
expect_seqs "6 7 8 9" --after 5
expect_seqs "" --after 9
expect_seqs "1 2 3" --limit 3
expect_seqs "6 7" --after 5 --limit 2
expect_seqs "5" --action 'cert.*' --object dev-4 --limit 5
# --from/--until: records 7.. come after the pause.
t7=$(sqlite3 "$M/certfleet.db" "SELECT time_us FROM audit WHERE seq = 7")
cut=$(date -u -d "@$((t7 / 1000000))" +%Y-%m-%dT%H:%M:%SZ)
expect_seqs "7 8 9" --from "$cut"
expect_seqs "1 2 3 4 5 6" --until "$cut"
expect_seqs "" --from "$cut" --until "$cut"
expect_seqs "1 2 3 4 5 6 7 8 9" --from "$(date -u -d yesterday +%Y-%m-%d)" --until "$(date -u -d '2 days' +%Y-%m-%d)"
expect_seqs "" --until 2000-01-01
expect_rc 2 cf audit log --data "$M" --from yesterday
expect_stderr "--from yesterday: expected"
expect_rc 2 cf audit log --data "$M" --limit -1
expect_rc 2 cf audit log --data "$M" --after x
# The text form prints one line per record.
expect_rc 0 cf audit log --data "$M" --action cert.issue
[ "$(grep -c cert.issue "$T/stdout")" = 7 ] || fail "text audit log: $(cat "$T/stdout")"
pass "audit log filters: --action (exact and prefix), --object, --actor, --after, --limit, --from/--until"
