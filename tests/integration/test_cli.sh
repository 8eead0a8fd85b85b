# test_cli.sh - the command-line conventions of DESIGN.md: --help everywhere, exit codes
# (0 ok, 1 error, 2 usage), "certfleet: WHAT: WHY" on stderr, --json that parses, and how
# the store is found (--data, $CERTFLEET_DATA, ./certfleet-data, --store sqlite:PATH).
. "$CF_SOURCE_DIR/tests/lib/common.sh"

PY=$(cf_python)
unset CERTFLEET_DATA

# is_json FILE [PYTHON-ASSERTION on d]: FILE holds one JSON document (and the assertion holds).
is_json() {
    "$PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
if len(sys.argv) > 2:
    assert eval(sys.argv[2]), d' "$@" || fail "not the JSON expected${2:+ ($2)}: $(head -c 500 "$1")"
}

# An error's stderr: exactly one line "certfleet: WHAT: WHY".
error_format() {
    [ "$(wc -l <"$T/stderr")" = 1 ] || fail "error is not one line: $(cat "$T/stderr")"
    expect_stderr '^certfleet: [^:]+: .+'
    [ ! -s "$T/stdout" ] || fail "error also printed to stdout: $(cat "$T/stdout")"
}

# --- help ---
expect_rc 0 cf --help
grep -q "^usage: certfleet COMMAND" "$T/stdout" || fail "--help: no usage line"
cp "$T/stdout" "$T/main-help"
expect_rc 0 cf help
cmp -s "$T/stdout" "$T/main-help" || fail "'certfleet help' differs from --help"
expect_rc 2 cf
grep -q "usage: certfleet" "$T/stderr" || fail "no usage on stderr without a command"
[ ! -s "$T/stdout" ] || fail "a usage error wrote to stdout: $(cat "$T/stdout")"
expect_rc 0 cf --version
grep -Eq "^certfleet [0-9]+\.[0-9]+" "$T/stdout" || fail "--version: $(cat "$T/stdout")"

# The commands --help lists ("  NAME   summary": the name is the first column of 22).
sed -n '/^commands:/,/^$/p' "$T/main-help" | sed -E -n 's/^  (.{22}) .*/\1/p' |
    sed -E 's/ +$//' >"$T/commands"
n=$(wc -l <"$T/commands")
[ "$n" -ge 7 ] || fail "expected at least 7 commands in --help, got $n: $(cat "$T/commands")"
for want in init status issue "ca list" "ca export" "audit log" "audit verify"; do
    grep -qx "$want" "$T/commands" || fail "--help does not list '$want'"
done
while read -r cmd; do
    # shellcheck disable=SC2086
    expect_rc 0 cf $cmd --help
    grep -q "^usage: certfleet $cmd" "$T/stdout" || fail "$cmd --help: no usage line"
    for opt in --data --store --help; do
        grep -q -- "^  $opt " "$T/stdout" || fail "$cmd --help does not mention $opt"
    done
    # Every option the help names is one the parser takes (with a value when it shows one).
    grep -E '^  --' "$T/stdout" | while read -r opt arg _; do
        [ "$opt" != --help ] || continue
        if [[ $arg =~ ^[A-Z]+$ ]]; then
            # shellcheck disable=SC2086
            "$CERTFLEET" $cmd "$opt" x --help >/dev/null 2>"$T/opt.err" ||
                { echo "$cmd $opt $arg: $(cat "$T/opt.err")"; exit 1; }
        else
            # shellcheck disable=SC2086
            "$CERTFLEET" $cmd "$opt" --help >/dev/null 2>"$T/opt.err" ||
                { echo "$cmd $opt: $(cat "$T/opt.err")"; exit 1; }
        fi
    done >"$T/opt.bad" || fail "an option in --help is not accepted: $(cat "$T/opt.bad")"
done <"$T/commands"
# And the options each command is documented to take.
help_has() {
    local cmd=$1; shift
    # shellcheck disable=SC2086
    expect_rc 0 cf $cmd --help
    for opt in "$@"; do
        grep -q -- "^  $opt" "$T/stdout" || fail "$cmd --help does not mention $opt"
    done
}
help_has init --org "--key-type" --ca-key --base-url --device-days --json
help_has issue --csr --device --days --der --chain --out --json
help_has "audit log" --after --from --until --actor --action --object --limit --json
help_has "audit verify" --json
help_has "ca export" --out
help_has "ca list" --json
help_has status --json
pass "--help for certfleet and each of its $n commands, and every option it names parses"

# --- usage errors: exit 2 ---
for bad in frobnicate "ca frobnicate" "audit" "Init"; do
    # shellcheck disable=SC2086
    expect_rc 2 cf $bad
    expect_stderr "unknown command"
    error_format
done
expect_rc 2 cf status --frobnicate
expect_stderr "^certfleet: status: unknown option --frobnicate"
error_format
expect_rc 2 cf status extra-arg
error_format
expect_rc 2 cf status --json=yes
error_format
expect_rc 2 cf issue --csr
expect_stderr "needs a value"
error_format
expect_rc 2 cf ca export --json --data
error_format
pass "unknown commands and options, stray arguments, missing values: exit 2, one line on stderr"

# --- errors: exit 1 and "certfleet: WHAT: WHY" ---
D="$T/data"
expect_rc 1 cf status --data "$D"
error_format
expect_stderr "^certfleet: status: .*not initialised"
expect_rc 0 cf init --data "$D" --org "CLI Test"
grep -q "initialised sqlite:$D/certfleet.db" "$T/stdout" || fail "init: $(cat "$T/stdout")"
expect_rc 1 cf init --data "$D"
error_format
expect_stderr "^certfleet: init: .*already initialised"
expect_rc 1 cf issue --data "$D" --csr "$T/none.csr" --device d1
error_format
expect_stderr "^certfleet: issue: $T/none.csr: cannot open"
expect_rc 1 cf status --store "nosuch:thing"
error_format
expect_rc 1 cf audit log --data "$T/data/certfleet.db"
error_format
pass "errors: exit 1, 'certfleet: WHAT: WHY' on stderr, nothing on stdout"

# --- JSON ---
new_csr dev
expect_rc 0 cf issue --data "$D" --csr - --device dev-1 --out "$T/dev-1.pem" <"$T/dev.csr"
openssl x509 -in "$T/dev-1.pem" -noout -subject | grep -q "CN = dev-1" || fail "issue --csr - (stdin)"
expect_rc 0 cf status --data "$D" --json
is_json "$T/stdout" 'd["org"] == "CLI Test" and d["cas"] == 2 and d["certificates"]["total"] == 2 and d["devices"]["active"] == 1 and d["audit"]["records"] == 3'
expect_rc 0 cf ca list --data "$D" --json
is_json "$T/stdout" '[c["name"] for c in d] == ["root-1", "issuing-1"] and [c["role"] for c in d] == ["root", "issuing"]'
expect_rc 0 cf audit log --data "$D" --json
is_json "$T/stdout" '[r["action"] for r in d] == ["ca.init", "cert.issue_ocsp", "cert.issue"] and d[2]["details"]["device"] == "dev-1" and len(d[2]["hash"]) == 64'
expect_rc 0 cf audit log --data "$D" --json --action nothing
is_json "$T/stdout" 'd == []'
expect_rc 0 cf audit verify --data "$D" --json
is_json "$T/stdout" 'd["ok"] is True and d["records"] == 3 and d["head"] == 3 and d["first_bad"] == 0'
expect_rc 0 cf init --data "$T/data-json" --json
is_json "$T/stdout" 'd["root"] == "root-1" and d["issuing"] == "issuing-1"'
expect_rc 0 cf ca export --data "$D" --json
is_json "$T/stdout" 'd["pem"].count("BEGIN CERTIFICATE") == 2'
sqlite3 "$D/certfleet.db" "UPDATE audit SET actor = 'x' WHERE seq = 2"
expect_rc 1 cf audit verify --data "$D" --json
is_json "$T/stdout" 'd["ok"] is False and d["first_bad"] == 2'
expect_stderr "^certfleet: audit verify: audit record 2: "
pass "--json of status, ca list, ca export, audit log, audit verify (intact and not), init parses"

# --- where the store is ---
E="$T/envdata"
CERTFLEET_DATA="$E" cf init --org Env >/dev/null || fail "init with \$CERTFLEET_DATA"
[ -s "$E/certfleet.db" ] || fail "\$CERTFLEET_DATA was not used: no $E/certfleet.db"
[ "$(stat -c %a "$E")" = 700 ] || fail "data directory mode $(stat -c %a "$E"), expected 700"
[ "$(stat -c %a "$E/keys")" = 700 ] || fail "key directory mode $(stat -c %a "$E/keys")"
for k in "$E"/keys/*; do
    [ "$(stat -c %a "$k")" = 600 ] || fail "key file $k mode $(stat -c %a "$k")"
done
CERTFLEET_DATA="$E" expect_rc 0 cf status --json
is_json "$T/stdout" 'd["org"] == "Env"'
# --data wins over the environment.
CERTFLEET_DATA="$E" expect_rc 0 cf status --json --data "$D"
is_json "$T/stdout" 'd["org"] == "CLI Test"'
CERTFLEET_DATA="$T/nowhere" expect_rc 0 cf status --json --data "$D"
is_json "$T/stdout" 'd["org"] == "CLI Test"'
[ ! -e "$T/nowhere" ] || fail "\$CERTFLEET_DATA was touched although --data was given"
# Neither: ./certfleet-data.
mkdir "$T/cwd"
(cd "$T/cwd" && cf init --org Cwd >/dev/null) || fail "init in ./certfleet-data"
[ -s "$T/cwd/certfleet-data/certfleet.db" ] || fail "no ./certfleet-data/certfleet.db"
(cd "$T/cwd" && CERTFLEET_DATA="" cf status --json) >"$T/stdout" || fail "status in ./certfleet-data"
is_json "$T/stdout" 'd["org"] == "Cwd"'
pass "\$CERTFLEET_DATA is honoured, --data overrides it, ./certfleet-data is the default"

# --store sqlite:PATH with --data: the database is PATH, DATA holds only the keys.
S="$T/elsewhere/fleet.db"
mkdir -p "$T/elsewhere" "$T/cwd2"
cd "$T/cwd2" || fail "cd $T/cwd2"
expect_rc 0 cf init --store "sqlite:$S" --data "$T/cwd2/keys-data" --org Stored
[ -s "$S" ] || fail "--store sqlite:$S was not used"
expect_rc 0 cf status --store "sqlite:$S" --json
is_json "$T/stdout" 'd["org"] == "Stored" and d["store"] == "sqlite:'"$S"'"'
expect_rc 0 cf issue --store "sqlite:$S" --data "$T/cwd2/keys-data" --csr "$T/dev.csr" --device s-1 --out "$T/s-1.pem"
expect_rc 0 cf audit verify --store "sqlite:$S"
expect_rc 0 cf audit log --store "sqlite:$S" --json
is_json "$T/stdout" 'len(d) == 3 and d[2]["object"] == "s-1"'
# The store given is the store used: the data dir holds no database of its own.
[ ! -e "$T/cwd2/keys-data/certfleet.db" ] || fail "--store also created a database in --data"
# --store sqlite:PATH alone: the keys go beside the database, so any working directory works.
S2="$T/solo/fleet.db"
mkdir -p "$T/solo" "$T/cwd3" "$T/cwd4"
cd "$T/cwd3" || fail "cd $T/cwd3"
expect_rc 0 cf init --store "sqlite:$S2" --org Solo
# the two CA keys, and the OCSP responder's key and certificate
[ "$(find "$T/solo/keys" -type f | wc -l)" = 4 ] || fail "--store alone: keys not beside the database"
[ -z "$(ls -A "$T/cwd3")" ] || fail "--store alone wrote into the working directory: $(ls -A)"
cd "$T/cwd4" || fail "cd $T/cwd4"
expect_rc 0 cf issue --store "sqlite:$S2" --csr "$T/dev.csr" --device solo-1 --out "$T/solo-1.pem"
cd "$T" || fail "cd $T"
pass "--store sqlite:PATH (with --data for the keys, and alone)"
