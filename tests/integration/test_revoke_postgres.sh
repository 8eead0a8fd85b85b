#!/bin/bash
# test_revoke_postgres.sh - two `certfleet serve` processes on one PostgreSQL database: a
# revocation made through the command line (a third process) is answered revoked by the
# OCSP responder of both within a second, and both publish it in their next CRLs, whose
# numbers never repeat.
. "$CF_SOURCE_DIR/tests/lib/common.sh"
. "$CF_SOURCE_DIR/tests/lib/pg.sh"

pg_start "$T/pg"
export CERTFLEET_DATA=$T/data CERTFLEET_STORE=$PG_URL
cf init --store "$PG_URL" --org Vendor >/dev/null
cf ca export --store "$PG_URL" --out "$T/chain.pem"
split_chain "$T/chain.pem"
for d in dev-1 dev-2; do
    new_csr "$d"
    cf issue --store "$PG_URL" --csr "$T/$d.csr" --device "$d" --out "$T/$d.pem" >/dev/null
done

PIDS=()
at_exit 'for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done'
PLAINS=()
for i in 1 2; do
    tls=$(free_port)
    http=$(free_port)
    while [ "$http" = "$tls" ]; do http=$(free_port); done
    "$CERTFLEET" serve --store "$PG_URL" --listen "127.0.0.1:$tls" --http "127.0.0.1:$http" \
        --threads 2 2>>"$T/serve$i.log" &
    PIDS+=($!)
    PLAINS+=("http://127.0.0.1:$http")
    for _ in $(seq 100); do
        curl -sf -o /dev/null "http://127.0.0.1:$http/healthz" && break
        sleep 0.1
    done
done

verdict() { # PLAIN CERT
    openssl ocsp -issuer "$T/issuing.pem" -cert "$2" -url "$1/ocsp" -CAfile "$T/chain.pem" 2>/dev/null |
        grep "^$2: " | cut -d' ' -f2
}
for p in "${PLAINS[@]}"; do
    [ "$(verdict "$p" "$T/dev-1.pem")" = good ] || fail "$p: dev-1 not good"
    curl -s -o /dev/null "$p/crl/issuing-1.crl" || fail "$p: no CRL"
done
pass "both processes answer OCSP and serve CRLs on one database"

cf revoke --store "$PG_URL" --device dev-1 --reason keyCompromise >/dev/null || fail "revoke"
start=$(date +%s%N)
for p in "${PLAINS[@]}"; do
    until [ "$(verdict "$p" "$T/dev-1.pem")" = revoked ]; do
        [ $(( ($(date +%s%N) - start) / 1000000 )) -lt 1000 ] || fail "$p: not revoked within a second"
        sleep 0.05
    done
    [ "$(verdict "$p" "$T/dev-2.pem")" = good ] || fail "$p: dev-2 no longer good"
done
pass "revoked through the CLI: both processes' OCSP answer revoked within a second"

S1=$(openssl x509 -in "$T/dev-1.pem" -noout -serial | cut -d= -f2)
NUMS=()
for p in "${PLAINS[@]}"; do
    curl -s -o "$T/c.crl" "$p/crl/issuing-1.crl"
    grep -q "Serial Number: $S1" <<<"$(openssl crl -inform DER -in "$T/c.crl" -noout -text)" ||
        fail "$p: the CRL lacks $S1"
    NUMS+=("$(openssl crl -inform DER -in "$T/c.crl" -noout -crlnumber | cut -d= -f2)")
    curl -s -o "$T/d.crl" "$p/crl/issuing-1-delta.crl"
    NUMS+=("$(openssl crl -inform DER -in "$T/d.crl" -noout -crlnumber | cut -d= -f2)")
done
[ "$(printf '%s\n' "${NUMS[@]}" | sort -u | wc -l)" = "${#NUMS[@]}" ] ||
    fail "a CRL number was used twice: ${NUMS[*]}"
pass "both publish it in their next CRLs, with numbers that never repeat"
