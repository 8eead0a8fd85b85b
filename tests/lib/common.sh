# common.sh - shared by the integration tests (source it). Gives each test a private
# temporary directory removed at exit, assertions that name what failed, and helpers to
# find the peers (openssl, python3 with cryptography) and to run as an unprivileged user.
set -euo pipefail

: "${CERTFLEET:?CERTFLEET must name the certfleet binary (ctest sets it)}"
: "${CF_SOURCE_DIR:?CF_SOURCE_DIR must name the source tree (ctest sets it)}"

T=$(mktemp -d "${TMPDIR:-/tmp}/cftest.XXXXXX")
chmod 755 "$T"
CF_CLEANUPS=()
cf_cleanup() {
    local rc=$?
    for ((i = ${#CF_CLEANUPS[@]} - 1; i >= 0; i--)); do eval "${CF_CLEANUPS[$i]}" || true; done
    rm -rf "$T"
    exit $rc
}
trap cf_cleanup EXIT
# Runs a command at exit, last registered first.
at_exit() { CF_CLEANUPS+=("$1"); }

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok - $*"; }

# expect_rc RC CMD...: runs CMD, fails unless it exits with RC; its stderr is kept in $T/stderr.
expect_rc() {
    local want=$1; shift
    local got=0
    "$@" >"$T/stdout" 2>"$T/stderr" || got=$?
    if [ "$got" != "$want" ]; then
        echo "--- stdout" >&2; cat "$T/stdout" >&2; echo "--- stderr" >&2; cat "$T/stderr" >&2
        fail "expected exit $want, got $got: $*"
    fi
}

# expect_stderr PATTERN: the last expect_rc's stderr matches the extended regex PATTERN.
expect_stderr() {
    grep -Eq -- "$1" "$T/stderr" || fail "stderr does not match /$1/: $(cat "$T/stderr")"
}

cf() { "$CERTFLEET" "$@"; }

# A python3 that has the cryptography package (Debian's python3-cryptography).
cf_python() {
    local p
    for p in python3 /usr/bin/python3; do
        if command -v "$p" >/dev/null && "$p" -c 'import cryptography' 2>/dev/null; then
            echo "$p"; return 0
        fi
    done
    fail "no python3 with the cryptography package (apt-get install python3-cryptography)"
}

# as_user CMD...: runs CMD as the unprivileged user nobody when we are root, else as us.
as_user() {
    if [ "$(id -u)" = 0 ]; then
        setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"
    else
        "$@"
    fi
}

# A free TCP port on 127.0.0.1.
free_port() {
    "$(cf_python)" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# new_csr NAME [openssl req -newkey args...]: writes $T/NAME.key and $T/NAME.csr.
new_csr() {
    local name=$1; shift
    local args=("$@")
    [ ${#args[@]} -gt 0 ] || args=(ec -pkeyopt ec_paramgen_curve:P-256)
    openssl req -new -newkey "${args[@]}" -nodes -keyout "$T/$name.key" \
        -subj "/CN=$name" -out "$T/$name.csr" 2>/dev/null
}

# Splits the PEM chain from `certfleet ca export` into $T/issuing.pem and $T/root.pem.
split_chain() {
    awk '/BEGIN/{n++} n==1' "$1" >"$T/issuing.pem"
    awk '/BEGIN/{n++} n==2' "$1" >"$T/root.pem"
}

# serve_start [serve options...]: starts `certfleet serve` on two free ports (its log in
# $T/serve.log), killed at exit, and waits until it answers. Sets TLS_PORT, HTTP_PORT, PLAIN
# (http://127.0.0.1:HTTP_PORT), URL (https://127.0.0.1:TLS_PORT) and SRV_PID.
serve_start() {
    TLS_PORT=$(free_port)
    HTTP_PORT=$(free_port)
    while [ "$HTTP_PORT" = "$TLS_PORT" ]; do HTTP_PORT=$(free_port); done
    PLAIN=http://127.0.0.1:$HTTP_PORT
    URL=https://127.0.0.1:$TLS_PORT
    "$CERTFLEET" serve --listen "127.0.0.1:$TLS_PORT" --http "127.0.0.1:$HTTP_PORT" "$@" \
        2>>"$T/serve.log" &
    SRV_PID=$!
    at_exit "kill -KILL $SRV_PID 2>/dev/null"
    for _ in $(seq 200); do
        curl -sf -o /dev/null "$PLAIN/healthz" && return 0
        kill -0 "$SRV_PID" 2>/dev/null || { cat "$T/serve.log" >&2; fail "serve exited at start"; }
        sleep 0.1
    done
    fail "serve does not answer on $PLAIN"
}

# fleet_init [init options...]: a new fleet in $T/data (exported as CERTFLEET_DATA), its
# chain in $T/chain.pem, $T/issuing.pem and $T/root.pem.
fleet_init() {
    export CERTFLEET_DATA=$T/data
    cf init --org Vendor "$@" >/dev/null || fail "certfleet init"
    cf ca export --out "$T/chain.pem"
    split_chain "$T/chain.pem"
}
