# pg.sh - a private PostgreSQL server for tests and benchmarks (source it).
#
#   pg_start DIR   initdb in DIR as an unprivileged user (PostgreSQL refuses root), start
#                  the server on a free port listening on 127.0.0.1 and a socket in DIR,
#                  create database certfleet; sets PG_URL (postgresql://...) and PG_DIR.
#   pg_stop        stops it (pg_start registers this with at_exit when common.sh is loaded).
#   pg_new_db NAME creates another database and prints its URL.

pg_bin() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    echo "pg.sh: PostgreSQL server binaries not found (apt-get install postgresql)" >&2
    return 1
}

pg_as_owner() {
    if [ "$(id -u)" = 0 ]; then
        setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"
    else
        "$@"
    fi
}

pg_start() {
    local dir=$1 bin port
    bin=$(pg_bin)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown nobody:nogroup "$dir"
    chmod 700 "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
        || /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    pg_as_owner "$bin/initdb" -D "$dir/data" -U certfleet --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; return 1; }
    pg_as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null \
        || { cat "$dir/server.log" >&2; return 1; }
    PG_DIR=$dir
    PG_PORT=$port
    PG_BIN=$bin
    pg_as_owner "$bin/createdb" -h "$dir" -p "$port" -U certfleet certfleet
    PG_URL="postgresql://certfleet@127.0.0.1:$port/certfleet"
    export PG_URL PG_DIR PG_PORT
    if declare -F at_exit >/dev/null; then at_exit pg_stop; fi
}

pg_stop() {
    [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR/data" ] || return 0
    pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
}

# pg_cpu_ticks: CPU time (user + system, clock ticks) the server has used so far: the
# postmaster, its live processes, and those it has reaped (its cutime/cstime). 0 when no
# server runs. For benchmarks that must count the database's share of the machine.
pg_cpu_ticks() {
    local pm
    if [ -z "${PG_DIR:-}" ] || [ ! -f "$PG_DIR/data/postmaster.pid" ]; then echo 0; return; fi
    pm=$(head -1 "$PG_DIR/data/postmaster.pid")
    # After the command name: state is field 1, ppid 2, utime 12, stime 13, cutime 14,
    # cstime 15. A process may end between the listing and the reading.
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } |
        awk -v pm="$pm" '{ pid = $1; sub(/^.*\) /, "") }
            pid == pm { t += $12 + $13 + $14 + $15 } $2 == pm { t += $12 + $13 }
            END { print t + 0 }'
}

pg_new_db() {
    pg_as_owner "$PG_BIN/createdb" -h "$PG_DIR" -p "$PG_PORT" -U certfleet "$1"
    echo "postgresql://certfleet@127.0.0.1:$PG_PORT/$1"
}
