#!/bin/bash
# test_crl_shards.sh - partitioned CRLs judged by openssl: with shards of 2 certificates,
# each certificate's CRL distribution point names its shard; the shard's CRL (served and
# written by certfleet crl --shard) carries a critical Issuing Distribution Point naming the
# same URI, lists only its own revocations, and `openssl verify -crl_check` takes it as the
# CRL of its certificates: revoked fails, good passes.
. "$CF_SOURCE_DIR/tests/lib/common.sh"

fleet_init
expect_rc 2 cf crl-shards --size -1
cf crl-shards --size 2 >"$T/out" || fail "crl-shards --size 2"
grep -q "at most 2 certificates" "$T/out" || fail "$(cat "$T/out")"
[ "$(cf crl-shards --json | "$(cf_python)" -c 'import json,sys; print(json.load(sys.stdin)["size"])')" = 2 ] ||
    fail "crl-shards --json"
# one issuance per process: each process fills a shard of its own
for d in s-1 s-2 s-3; do
    new_csr "$d"
    cf issue --csr "$T/$d.csr" --device "$d" --out "$T/$d.pem" >/dev/null || fail "issue $d"
done
dp() { openssl x509 -in "$1" -noout -ext crlDistributionPoints | grep -o 'URI:.*' | cut -c5-; }
D1=$(dp "$T/s-1.pem")
D2=$(dp "$T/s-2.pem")
case "$D1" in */crl/issuing-1-s[0-9]*.crl) ;; *) fail "s-1's distribution point is $D1" ;; esac
[ "$D1" != "$D2" ] || fail "two processes filled one shard"
openssl x509 -in "$T/s-1.pem" -noout -ext freshestCRL 2>/dev/null | grep -q URI &&
    fail "a sharded certificate points to the CA-wide delta CRL"
pass "each certificate's distribution point names its shard"

serve_start --threads 2
cf revoke --serial "$(openssl x509 -in "$T/s-1.pem" -noout -serial | cut -d= -f2)" >/dev/null
crl_of() { # CERT OUT: the shard CRL its distribution point names, served, as PEM in OUT
    local path
    path=$(dp "$1" | sed 's|^[a-z]*://[^/]*||')
    curl -sf -o "$2.der" "$PLAIN$path" || fail "GET $path"
    openssl crl -inform DER -in "$2.der" -out "$2" || fail "openssl crl cannot read $path"
}
crl_of "$T/s-1.pem" "$T/shard1.pem"
crl_of "$T/s-2.pem" "$T/shard2.pem"
openssl crl -in "$T/shard1.pem" -noout -text >"$T/shard1.txt"
grep -q 'Issuing Distribution Point: critical' "$T/shard1.txt" || fail "no critical IDP: $(cat "$T/shard1.txt")"
grep -q "URI:$D1" "$T/shard1.txt" || fail "the IDP does not name $D1"
grep -q 'Only User Certificates' "$T/shard1.txt" || fail "the IDP lacks onlyContainsUserCerts"
[ "$(grep -c 'Serial Number' "$T/shard1.txt")" = 1 ] || fail "shard 1 lists other revocations"
openssl crl -in "$T/shard2.pem" -noout -text | grep -q 'No Revoked Certificates' ||
    fail "shard 2 lists a revocation it does not hold"
v() { # CERT CRL
    openssl verify -crl_check -CAfile "$T/root.pem" -untrusted "$T/issuing.pem" -CRLfile "$2" "$1" 2>&1
}
grep -q 'certificate revoked' <<<"$(v "$T/s-1.pem" "$T/shard1.pem")" ||
    fail "openssl verify does not fail the revoked certificate with its shard: $(v "$T/s-1.pem" "$T/shard1.pem")"
grep -q ': OK' <<<"$(v "$T/s-2.pem" "$T/shard2.pem")" ||
    fail "openssl verify does not pass a good certificate with its shard: $(v "$T/s-2.pem" "$T/shard2.pem")"
pass "openssl verify -crl_check takes a shard's CRL for its certificates"

N=${D1##*-s}; N=${N%.crl}
cf crl --shard "$N" --out "$T/cli.der" 2>/dev/null || fail "certfleet crl --shard $N"
openssl crl -inform DER -in "$T/cli.der" -noout -text | grep -q "URI:$D1" || fail "crl --shard: IDP"
for p in /crl/issuing-1-s999.crl /crl/issuing-1-s0.crl /crl/issuing-1-s1-delta.crl; do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$PLAIN$p")" = 404 ] || fail "GET $p is not 404"
done
pass "certfleet crl --shard writes a shard; shards never reserved are 404"
