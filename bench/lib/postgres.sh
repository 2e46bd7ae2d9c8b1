# A throwaway PostgreSQL for the benchmarks, sourced by bench/*.sh: Debian's server binaries,
# a cluster in $1/pg on a free loopback port, trust authentication, no fsync of the setup.
# Sets pgbin, pgport, pgurl (database "poplar") and as_pg; stop_postgres stops it.
# As root, PostgreSQL runs as the postgres user (it refuses to run as root).
start_postgres() {
    local dir=$1/pg
    pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    pgport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_pg=(); [ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --)
    mkdir "$dir" && { [ "$(id -u)" = 0 ] && chown postgres: "$dir" || true; }
    "${as_pg[@]}" "$pgbin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-locale --no-sync > /dev/null
    "${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -o \
        "-c listen_addresses=127.0.0.1 -p $pgport -k $dir" start > /dev/null
    "$pgbin/createdb" -h 127.0.0.1 -p "$pgport" -U postgres poplar
    pgurl="postgres://postgres@127.0.0.1:$pgport/poplar"
    pgdata=$dir/data
}

stop_postgres() {
    [ -n "${pgdata:-}" ] && "${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdata" -m fast stop > /dev/null || true
}
