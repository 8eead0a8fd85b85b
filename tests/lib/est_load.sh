# est_load.sh - for the EST load tests (source it after common.sh): a fleet of devices made
# by a simulated chip maker, `certfleet serve` on free ports, the load generator (estload,
# bench/estload.c) and the check that every certificate a client received is in the store.
#
#   est_fleet N STORE-ARGS...   a manifest of N devices in $T/maker (keys/UID.key and
#                               certs/UID.pem each), then init, manufacturer add, onboard,
#                               owner add cust, claim of the batch; the chain in $T/root.pem
#                               and $T/issuing.pem
#   est_serve LOG ARGS...       starts certfleet serve ARGS on free ports, stderr to LOG, and
#                               waits for /healthz; sets EST_PID, EST_TLS and EST_HTTP (ports);
#                               servers still running at exit are killed
#   est_kill PID [SIGNAL]       sends SIGNAL (default TERM) to a server est_serve started and
#                               waits for it; returns its exit status
#   est_load ARGS...            runs estload against the devices of $T/maker
#   est_check_received DIR SQL STORE-ARGS...
#                               every DIR/UID.pem verifies against the chain, and is stored as
#                               a good certificate of device UID, which is active; no serial
#                               received twice. SQL names a function that runs a query on the
#                               store and prints rows with | between columns (sqlite3, psql);
#                               a few devices are also checked through `certfleet device show
#                               STORE-ARGS`. Sets EST_RECEIVED (how many).

EST_MAKER=$T/maker
ESTLOAD=${CF_BUILD_DIR:?CF_BUILD_DIR must name the build directory (ctest sets it)}/estload
[ -x "$ESTLOAD" ] || fail "$ESTLOAD missing: build the estload target"

EST_PIDS=()
at_exit 'for p in "${EST_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done'

est_fleet() {
    local n=$1; shift
    cf init "$@" >/dev/null
    cf manifest make --devices "$n" --out "$EST_MAKER" --key-files >/dev/null
    cf manufacturer add "$@" --name acme --root "$EST_MAKER/root.crt" \
        --signer "$EST_MAKER/manifest-signer.crt" >/dev/null
    cf onboard "$@" --manifest "$EST_MAKER/manifest.json" --manufacturer acme --batch b1 >/dev/null
    cf owner add "$@" cust >/dev/null
    cf device claim "$@" --batch b1 --owner cust >/dev/null
    cf ca export "$@" --out "$T/chain.pem"
    split_chain "$T/chain.pem"
    local first
    first=$(basename "$(ls "$EST_MAKER/keys" | head -1)" .key)
    [ -f "$EST_MAKER/certs/$first.pem" ] || fail "manifest make --key-files wrote no certs/UID.pem"
}

est_serve() {
    local log=$1; shift
    EST_TLS=$(free_port)
    EST_HTTP=$(free_port)
    while [ "$EST_HTTP" = "$EST_TLS" ]; do EST_HTTP=$(free_port); done
    "$CERTFLEET" serve "$@" --listen "127.0.0.1:$EST_TLS" --http "127.0.0.1:$EST_HTTP" 2>>"$log" &
    EST_PID=$!
    EST_PIDS+=("$EST_PID")
    for _ in $(seq 150); do
        curl -sf -o /dev/null "http://127.0.0.1:$EST_HTTP/healthz" && return 0
        kill -0 "$EST_PID" 2>/dev/null || { tail -20 "$log" >&2; fail "serve exited at start"; }
        sleep 0.1
    done
    fail "serve did not answer /healthz within 15 s"
}

est_kill() {
    local pid=$1 rc=0 p keep=()
    kill "-${2:-TERM}" "$pid"
    wait "$pid" 2>/dev/null || rc=$?
    for p in "${EST_PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    EST_PIDS=("${keep[@]}")
    return $rc
}

est_load() {
    "$ESTLOAD" --devices "$EST_MAKER" --cacert "$T/root.pem" "$@"
}

est_check_received() {
    local dir=$1 sql=$2; shift 2
    local files=("$dir"/*.pem) f uid serial
    [ -e "${files[0]}" ] || fail "no certificate received in $dir"
    openssl verify -CAfile "$T/root.pem" -untrusted "$T/issuing.pem" "${files[@]}" >"$T/verify.out" 2>&1 ||
        fail "received certificates that do not verify: $(grep -v ': OK$' "$T/verify.out" | head -3)"
    "$sql" "SELECT c.device_id, c.serial, c.status, d.state FROM certificates c
            JOIN devices d ON d.id = c.device_id" >"$T/stored.rows"
    "$(cf_python)" - "$T/stored.rows" "${files[@]}" <<'PY' || fail "received certificates missing from the store"
import os, sys
from cryptography import x509

stored = {}
for line in open(sys.argv[1]):
    dev, serial, status, state = line.strip().split("|")
    stored[serial.upper()] = (dev, status, state)
seen, bad = set(), []
for path in sys.argv[2:]:
    uid = os.path.basename(path)[: -len(".pem")]
    serial = "%X" % x509.load_pem_x509_certificate(open(path, "rb").read()).serial_number
    serial = serial.rjust(32, "0") if len(serial) < 32 else serial
    if serial in seen:
        bad.append("%s: serial %s received twice" % (uid, serial))
    seen.add(serial)
    got = stored.get(serial) or stored.get(serial.lstrip("0"))
    if got != (uid, "good", "active"):
        bad.append("%s: serial %s in the store as %s" % (uid, serial, got))
for b in bad[:5]:
    print(b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
    for f in "${files[@]:0:3}"; do
        uid=$(basename "$f" .pem)
        serial=$(openssl x509 -in "$f" -noout -serial | cut -d= -f2)
        cf device show "$@" "$uid" --json >"$T/show.json" || fail "device show $uid"
        "$(cf_python)" - "$T/show.json" "$serial" <<'PY' ||
import json, sys
d, serial = json.load(open(sys.argv[1])), sys.argv[2]
assert d["state"] == "active", d["state"]
assert any(c["serial"].upper() == serial.upper() and c["status"] == "good"
           for c in d["certificates"]), [c["serial"] for c in d["certificates"]]
PY
            fail "device show $uid: not active with the good certificate $serial it received"
    done
    EST_RECEIVED=${#files[@]}
}
