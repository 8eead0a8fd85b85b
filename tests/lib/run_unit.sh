# run_unit.sh UNIT_TEST: runs a cmocka unit test with a private PostgreSQL server, so the
# tests that take a store run against both backends (CF_TEST_PG_URL names the server).
set -euo pipefail
T=$(mktemp -d "${TMPDIR:-/tmp}/cfunit.XXXXXX")
chmod 755 "$T"
. "$(dirname "$0")/pg.sh"
trap 'pg_stop; rm -rf "$T"' EXIT
pg_start "$T/pg"
export CF_TEST_PG_URL=$PG_URL
export CF_TEST_TMP=$T
"$1"
