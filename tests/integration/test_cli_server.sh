#!/bin/bash
# test_cli_server.sh - certfleet --server URL runs the same operations against a server as
# on the local store, through the same operation table: for a representative set of
# commands the output (text and --json), the exit code and the error line are the same
# both ways. Also: the token and trust options (--token, $CERTFLEET_TOKEN, --cacert,
# $CERTFLEET_CACERT, the local chain by default), a server whose certificate is not
# trusted or names another host, and commands that run only locally refusing --server.
. "$CF_SOURCE_DIR/tests/lib/common.sh"

PY=$(cf_python)
export CERTFLEET_DATA=$T/data
cf init --org Vendor >/dev/null
cf ca export --out "$T/chain.pem"
split_chain "$T/chain.pem"
cf manifest make --devices 6 --out "$T/reel" --threads 2 >/dev/null
cf manifest make --devices 3 --out "$T/reel2" --threads 2 >/dev/null
cf manufacturer add --name chipco --root "$T/reel/root.crt" --signer "$T/reel/manifest-signer.crt" >/dev/null
cf onboard --manifest "$T/reel/manifest.json" --manufacturer chipco --batch b1 >/dev/null
mapfile -t IDS < <(tail -n +2 "$T/reel/claim-codes.csv" | cut -d, -f1 | sort)
cf owner add acme >/dev/null
cf owner add globex >/dev/null
export CERTFLEET_TOKEN
CERTFLEET_TOKEN=$(cf owner token - --role admin 2>/dev/null)

TLS_PORT=$(free_port)
HTTP_PORT=$(free_port)
while [ "$HTTP_PORT" = "$TLS_PORT" ]; do HTTP_PORT=$(free_port); done
SERVER=https://127.0.0.1:$TLS_PORT
SRV_PID=
at_exit '[ -z "$SRV_PID" ] || kill -KILL "$SRV_PID" 2>/dev/null'
"$CERTFLEET" serve --listen "127.0.0.1:$TLS_PORT" --http "127.0.0.1:$HTTP_PORT" --threads 1 \
    2>>"$T/serve.log" &
SRV_PID=$!
for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$HTTP_PORT/healthz" && break
    kill -0 "$SRV_PID" 2>/dev/null || { cat "$T/serve.log" >&2; fail "serve exited at start"; }
    sleep 0.1
done

# Times, durations, serials and certificates differ between two runs: masked.
mask() {
    sed -E -e 's/[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z/TIME/g' -e 's/"serial": "[0-9A-F]+"/"serial": S/' \
        -e 's/"pem": "-----BEGIN[^"]*"/"pem": PEM/' \
        -e 's/"(seconds|rate)": [0-9.e+-]+/"\1": N/g' -e 's/[0-9.]+ s, [0-9]+ entries\/s/N s, N entries\/s/'
}
# same ARGS...: the command gives the same exit code, stdout and stderr locally and with
# --server (run in that order: each pair must leave the store as the next one expects).
same() {
    local lrc=0 rrc=0
    cf "$@" >"$T/l.out" 2>"$T/l.err" || lrc=$?
    cf --server "$SERVER" "$@" >"$T/r.out" 2>"$T/r.err" || rrc=$?
    [ "$lrc" = "$rrc" ] || fail "$*: exit $lrc locally, $rrc with --server: $(cat "$T/r.err")"
    diff <(mask <"$T/l.out") <(mask <"$T/r.out") >"$T/diff" ||
        fail "$*: stdout differs with --server: $(cat "$T/diff")"
    diff <(mask <"$T/l.err") <(mask <"$T/r.err") >"$T/diff" ||
        fail "$*: stderr differs with --server: $(cat "$T/diff")"
}
# twice ARGS...: a changing command, run locally on one object and remotely on another;
# the outputs must be the same once the object's name is swapped. OBJ1/OBJ2 name them.
twice() {
    local lrc=0 rrc=0 args=("$@")
    cf "${args[@]//@/$OBJ1}" >"$T/l.out" 2>"$T/l.err" || lrc=$?
    cf --server "$SERVER" "${args[@]//@/$OBJ2}" >"$T/r.out" 2>"$T/r.err" || rrc=$?
    [ "$lrc" = "$rrc" ] || fail "$*: exit $lrc locally, $rrc with --server: $(cat "$T/r.err")"
    sed -i "s/$OBJ2/$OBJ1/g" "$T/r.out" "$T/r.err"
    diff <(mask <"$T/l.out") <(mask <"$T/r.out") >"$T/diff" ||
        fail "$*: stdout differs with --server: $(cat "$T/diff")"
    diff <(mask <"$T/l.err") <(mask <"$T/r.err") >"$T/diff" ||
        fail "$*: stderr differs with --server: $(cat "$T/diff")"
}

# ---- reading ----
for json in "" --json; do
    same status $json
    same ca list $json
    same owner list $json
    same manufacturer list $json
    same manufacturer show chipco $json
    same device list $json
    same device list --state on_hold --limit 2 $json
    same device list --batch b1 --after "${IDS[1]}" $json
    same device show "${IDS[0]}" $json
    same device claim-limits $json
    same audit log --action owner.add $json
    same audit log --limit 3 $json
    same audit verify $json
done
same ca export
pass "reading commands print the same with --server (text and --json)"

# ---- errors: same line, same exit code ----
same device show nosuch
same device show nosuch --json
same manufacturer show nosuch
same owner add acme
same device list --state bogus
same owner token acme --role root
same device resume "${IDS[0]}"
same audit log --from yesterday
grep -q "^certfleet: device show: device nosuch not found" <(cf --server "$SERVER" device show nosuch 2>&1) ||
    fail "the remote error line is not certfleet: WHAT: WHY"
pass "errors print the same line with the same exit code"

# ---- changing: the same operation on two objects of the same kind ----
OBJ1=${IDS[0]} OBJ2=${IDS[1]}
twice device claim @ --owner acme
twice device group set @ north --json
twice device ungroup @
new_csr c1
twice issue --csr "$T/c1.csr" --device @ --json
cf issue --csr "$T/c1.csr" --device "$OBJ1" --chain --der --out "$T/l.der"
cf --server "$SERVER" issue --csr "$T/c1.csr" --device "$OBJ2" --chain --der --out "$T/r.der"
openssl x509 -inform DER -in "$T/r.der" -noout -subject | grep -q "$OBJ2" || fail "issue --der over --server"
[ "$(stat -c %s "$T/l.der")" -gt 600 ] && [ "$(stat -c %s "$T/r.der")" -gt 600 ] || fail "--chain --der: no chain"
openssl req -in "$T/c1.csr" -outform DER -out "$T/c1.der"
twice issue --csr "$T/c1.der" --device @ --out "$T/@.pem"
openssl verify -CAfile "$T/root.pem" -untrusted "$T/issuing.pem" "$T/$OBJ2.pem" >/dev/null ||
    fail "a certificate issued over --server from a DER CSR does not verify"
twice device suspend @
twice device suspend @ --json
twice device resume @
twice device transfer @ --owner globex --json
twice device decommission @
OBJ1=acme2 OBJ2=globex2
twice owner add @
twice owner tokens @
OBJ1=${IDS[2]} OBJ2=${IDS[3]}
twice device claim @ --owner acme --json
pass "changing commands print the same with --server (claim, groups, issue, states, transfer, owners)"

# ---- onboarding over --server: the manifest is uploaded ----
cf --server "$SERVER" manufacturer add --name chipco2 --root "$T/reel2/root.crt" \
    --signer "$T/reel2/manifest-signer.crt" >"$T/out" || fail "manufacturer add over --server"
grep -q "manufacturer chipco2 added" "$T/out" || fail "manufacturer add output: $(cat "$T/out")"
cf --server "$SERVER" onboard --manifest "$T/reel2/manifest.json" --manufacturer chipco2 --batch b2 \
    >"$T/out" || fail "onboard over --server"
grep -Eq "^onboard .*manifest.json \(import [0-9]+\): 3 entries: 3 added" "$T/out" ||
    fail "onboard output over --server: $(cat "$T/out")"
cf device list --batch b2 --json | "$PY" -c 'import json,sys; assert len(json.load(sys.stdin)["devices"]) == 3' ||
    fail "the uploaded manifest's devices are not in the store"
expect_rc 2 cf --server "$SERVER" onboard --manifest "$T/reel2/manifest.json" --manufacturer chipco2 \
    --claim-codes "$T/reel2/claim-codes.csv"
expect_stderr "not with --server"
pass "manufacturer add and onboard (an upload) over --server"

# ---- tokens and trust ----
expect_rc 1 env CERTFLEET_TOKEN=cft_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA "$CERTFLEET" --server "$SERVER" status
expect_stderr "^certfleet: status: token not recognised"
AUD=$(cf owner token acme --role auditor 2>/dev/null)
expect_rc 1 cf --server "$SERVER" --token "$AUD" device suspend "${IDS[4]}"
expect_stderr "needs an operator or admin"
expect_rc 0 env CERTFLEET_SERVER="$SERVER" "$CERTFLEET" device list --token "$AUD" --json
expect_rc 2 env -u CERTFLEET_TOKEN "$CERTFLEET" --server "$SERVER" status
expect_stderr "needs --token"
expect_rc 0 cf --server "$SERVER" --cacert "$T/chain.pem" status
expect_rc 0 env CERTFLEET_CACERT="$T/root.pem" "$CERTFLEET" --server "$SERVER" status
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/other.key" \
    -subj /CN=other -days 1 -out "$T/other.pem" 2>/dev/null
expect_rc 1 cf --server "$SERVER" --cacert "$T/other.pem" status
expect_stderr "not trusted"
# A server reached by an address its certificate does not name (127.0.0.2: loopback too,
# but no SAN of the certificate) is refused although its chain is trusted.
OTHER_PORT=$(free_port)
"$CERTFLEET" serve --listen "127.0.0.2:$OTHER_PORT" --http "127.0.0.2:$(free_port)" --threads 1 \
    2>>"$T/serve2.log" &
SRV2_PID=$!
at_exit 'kill -KILL "$SRV2_PID" 2>/dev/null'
for _ in $(seq 100); do
    (echo >"/dev/tcp/127.0.0.2/$OTHER_PORT") 2>/dev/null && break
    sleep 0.1
done
expect_rc 1 cf --server "https://127.0.0.2:$OTHER_PORT" --cacert "$T/chain.pem" status
expect_stderr "not trusted: IP address mismatch"
kill -TERM "$SRV2_PID"
wait "$SRV2_PID" || true
expect_rc 2 env CERTFLEET_DATA="$T/nowhere" "$CERTFLEET" --server "$SERVER" status
expect_stderr "--cacert"
expect_rc 1 cf --server "https://127.0.0.1:$HTTP_PORT" status
expect_rc 1 cf --server "https://127.0.0.1:1" status
expect_stderr "cannot connect"
expect_rc 1 cf --server "http://127.0.0.1:$TLS_PORT" status
expect_stderr "expected https://"
expect_rc 2 cf --server "$SERVER" device list --as-owner acme
expect_stderr "token says who you are"
pass "tokens (option, environment, wrong, auditor), trust (--cacert, environment, local chain, untrusted, wrong host)"

# ---- local-only commands refuse --server ----
for args in "init" "serve" "manifest make --devices 1 --out $T/x"; do
    # shellcheck disable=SC2086
    expect_rc 2 cf --server "$SERVER" $args
    expect_stderr "without --server"
done
expect_rc 0 env CERTFLEET_SERVER="$SERVER" "$CERTFLEET" manifest make --devices 1 --out "$T/y" --threads 1
pass "init, serve and manifest make run only here; \$CERTFLEET_SERVER does not bother them"

kill -TERM "$SRV_PID"
wait "$SRV_PID" || fail "serve did not stop cleanly"
SRV_PID=
cf audit verify >/dev/null || fail "audit chain broken"
