#!/usr/bin/env bash
# test_onboard_real.sh - Microchip's real manifests (tests/data/microchip) import with Root CA
# 002 and their signers registered; every entry verifies; a second import adds nothing and
# says how many were already present; a tampered copy (one payload byte, one signature byte,
# each in one entry) rejects those entries alone. On SQLite, then on PostgreSQL.
. "$CF_SOURCE_DIR/tests/lib/common.sh"
. "$CF_SOURCE_DIR/tests/lib/pg.sh"

D=$CF_SOURCE_DIR/tests/data/microchip
ROOT=$D/Crypto_Authentication_Root_CA_002.crt
PY=$(cf_python)

# json_get FILE EXPR: evaluates a python expression over the JSON document j in FILE.
json_get() { "$PY" -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"; }

# onboard_json OUT ARGS...: runs certfleet onboard --json ARGS, summary in OUT; exit 0 wanted.
onboard_json() {
    local out=$1; shift
    expect_rc 0 cf onboard --json "$@"
    cp "$T/stdout" "$out"
}

run_suite() {
    local name=$1; shift
    local S=("$@")
    cf init "${S[@]}" >/dev/null

    # Signer 5 signs the 2024+ manifests, signer 2 the 2020 one: one manufacturer with both.
    expect_rc 0 cf manufacturer add "${S[@]}" --name microchip --root "$ROOT" \
        --signer "$D/MCHP_manifest_signer_5_Mar_6-2024_noExpiration.crt" \
        --signer "$D/MCHP_manifest_signer_2_Aug-15-2019_Aug-15-2020.crt"
    grep -q 'x5t#S256 pbiDvyKTP0OpQU_tzU2ofdRo5zAdh1uGxbeD8ioBFr0' "$T/stdout" \
        || fail "$name: the root's thumbprint is not shown: $(cat "$T/stdout")"
    # The tool's test signer (issued by an unpublished root) belongs to another manufacturer.
    expect_rc 0 cf manufacturer add "${S[@]}" --name mchp-tool --root "$ROOT" \
        --signer "$D/pytrustplatform_dummy_signer-ca.crt"

    local f n
    for f in ECC608C-TNGTLSU-B.json:10:microchip ECC608-TMNGTLSS-B.json:10:microchip \
        manifest_ATECC608A-MAH4I.json:2:microchip pytrustplatform_tool_output_manifest.json:1:mchp-tool; do
        IFS=: read -r file n mfr <<<"$f"
        onboard_json "$T/sum.json" "${S[@]}" --manifest "$D/$file" --manufacturer "$mfr"
        [ "$(json_get "$T/sum.json" '(j["entries"], j["added"], j["present"], j["rejected"], j["conflicts"], j["complete"])')" = "($n, $n, 0, 0, 0, True)" ] \
            || fail "$name: $file: not every entry imported: $(cat "$T/sum.json")"
        [ "$(json_get "$T/sum.json" 'j["sha256"]')" = "$(sha256sum "$D/$file" | cut -d' ' -f1)" ] \
            || fail "$name: $file: the summary's sha256 is not the file's"
    done
    pass "$name: every entry of the four real manifests verifies and imports"

    # Again: nothing added, every entry already present; the human summary says so.
    expect_rc 0 cf onboard "${S[@]}" --manifest "$D/ECC608C-TNGTLSU-B.json" --manufacturer microchip
    grep -q '10 entries: 0 added, 10 already present, 0 rejected, 0 conflicts' "$T/stdout" \
        || fail "$name: second import: $(cat "$T/stdout")"
    pass "$name: a second import adds nothing and counts 10 already present"

    # The devices are on hold.
    expect_rc 0 cf status "${S[@]}" --json
    [ "$(json_get "$T/stdout" '(j["devices"]["on_hold"], j["devices"]["total"])')" = "(23, 23)" ] \
        || fail "$name: status does not count 23 devices on hold: $(cat "$T/stdout")"

    # A tampered copy: entry 3's payload and entry 6's signature each changed by one byte.
    "$PY" - "$D/ECC608C-TNGTLSU-B.json" "$T/tampered.json" <<'EOF'
import json, sys
entries = json.load(open(sys.argv[1]))
def flip(s, i):
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    c = s[i]
    return s[:i] + alphabet[(alphabet.index(c) + 1) % 64] + s[i + 1:]
entries[3]["payload"] = flip(entries[3]["payload"], 100)
entries[6]["signature"] = flip(entries[6]["signature"], 20)
json.dump(entries, open(sys.argv[2], "w"))
EOF
    local uid3 uid6
    uid3=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[3]["header"]["uniqueId"])' "$T/tampered.json")
    uid6=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[6]["header"]["uniqueId"])' "$T/tampered.json")
    # Into the same store: the 8 good ones are present, the two tampered ones rejected.
    expect_rc 0 cf onboard "${S[@]}" --json --manifest "$T/tampered.json" --manufacturer microchip \
        --report "$T/report.json"
    cp "$T/stdout" "$T/sum.json"
    [ "$(json_get "$T/sum.json" '(j["entries"], j["added"], j["present"], j["rejected"], j["conflicts"])')" = "(10, 0, 8, 2, 0)" ] \
        || fail "$name: tampered copy: $(cat "$T/sum.json")"
    [ "$(json_get "$T/report.json" 'sorted((e["index"], e["uid"], e["kind"]) for e in j)')" = "[(3, '$uid3', 'rejected'), (6, '$uid6', 'rejected')]" ] \
        || fail "$name: the report does not name entries 3 and 6: $(cat "$T/report.json")"
    json_get "$T/report.json" '[e["reason"] for e in j]' | grep -qi 'signature' \
        || fail "$name: the report does not say the signature failed: $(cat "$T/report.json")"
    grep -q "entry 3 (uid $uid3): rejected" "$T/stderr" || fail "$name: entry 3 not named on stderr"
    pass "$name: a tampered copy rejects entries 3 (payload byte) and 6 (signature byte) alone"

    # The same tampered copy into a fresh store: the 8 good entries are added.
    local S2=("${S[@]}")
    if [ "$name" = sqlite ]; then S2=(--data "$T/fresh"); else S2=(--store "$(pg_new_db fresh)" --data "$T/fresh"); fi
    cf init "${S2[@]}" >/dev/null
    cf manufacturer add "${S2[@]}" --name microchip --root "$ROOT" \
        --signer "$D/MCHP_manifest_signer_5_Mar_6-2024_noExpiration.crt" >/dev/null
    onboard_json "$T/sum.json" "${S2[@]}" --manifest "$T/tampered.json" --manufacturer microchip
    [ "$(json_get "$T/sum.json" '(j["added"], j["rejected"])')" = "(8, 2)" ] \
        || fail "$name: tampered copy into a fresh store: $(cat "$T/sum.json")"
    pass "$name: good entries beside the tampered ones import"

    # Removal is refused while devices reference the manufacturer.
    expect_rc 1 cf manufacturer remove "${S[@]}" microchip
    expect_stderr 'still has 22 devices'
    expect_rc 0 cf manufacturer show "${S[@]}" microchip --json
    [ "$(json_get "$T/stdout" '(len(j["certificates"]), j["devices"])')" = "(3, 22)" ] \
        || fail "$name: manufacturer show: $(cat "$T/stdout")"
    expect_rc 0 cf manufacturer list "${S[@]}" --json
    [ "$(json_get "$T/stdout" 'sorted(m["name"] for m in j)')" = "['mchp-tool', 'microchip']" ] \
        || fail "$name: manufacturer list: $(cat "$T/stdout")"

    # A manufacturer without devices goes, audited with its certificates.
    cf manufacturer add "${S[@]}" --name empty-maker --root "$ROOT" >/dev/null
    expect_rc 0 cf manufacturer remove "${S[@]}" empty-maker
    expect_rc 0 cf audit log "${S[@]}" --json
    grep -q 'manufacturer.remove' "$T/stdout" || fail "$name: no manufacturer.remove audit record"
    grep -q 'onboard.import' "$T/stdout" || fail "$name: no onboard.import audit record"
    grep -q "$(sha256sum "$D/ECC608C-TNGTLSU-B.json" | cut -d' ' -f1)" "$T/stdout" \
        || fail "$name: the onboard.import record does not carry the manifest's SHA-256"
    expect_rc 0 cf audit verify "${S[@]}"
    pass "$name: manufacturer show/list/remove, audit records, audit verify"
}

run_suite sqlite --data "$T/d"
pg_start "$T/pg"
run_suite postgres --store "$PG_URL" --data "$T/pgdata"
