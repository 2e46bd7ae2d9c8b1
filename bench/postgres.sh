#!/usr/bin/env bash
# One node on PostgreSQL against the same node on Maildir: full sessions (8 connections,
# USER/PASS STAT UIDL LIST RETR x10 of 4 KiB, QUIT) with the same messages, delivered by
# `poplar deliver` into each store, alternately, ROUNDS times.
# Usage (from the repository root, as root so PostgreSQL can run as the postgres user):
#   bench/postgres.sh [SECONDS] [ROUNDS]        defaults 10 and 2
set -euo pipefail
seconds=${1:-10}
rounds=${2:-2}
[ -f bench/postgres.sh ] || { echo "run from the repository root"; exit 1; }
. scripts/lib/packages.sh
ensure_packages postgresql python3
cargo build --release --quiet
P=$PWD/target/release/poplar
B=$PWD/target/release/poplar-bench
work=$(mktemp -d /tmp/poplar-pg.XXXXXX)
chmod 755 "$work"
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pgport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg=(); [ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --)
mkdir "$work/pg" && { [ "$(id -u)" = 0 ] && chown postgres: "$work/pg" || true; }
"${as_pg[@]}" "$pgbin/initdb" -D "$work/pg/data" -U postgres -A trust -E UTF8 --no-locale --no-sync > /dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w -o \
    "-c listen_addresses=127.0.0.1 -p $pgport -k $work/pg" start > /dev/null
server=
trap 'kill $server 2>/dev/null || true; "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg/data" -m fast stop > /dev/null; rm -rf "$work"' EXIT
"$pgbin/createdb" -h 127.0.0.1 -p "$pgport" -U postgres poplar
cd "$work"
for store in maildir postgres; do
    mkdir -p "$store"
    {
        echo "data_dir = \"$work/$store\""
        echo 'log_level = "info"   # as in production: one summary line per session'
        echo '[listen]'
        echo 'pop3 = ["127.0.0.1:21510"]'
        echo 'pop3s = []'
        echo '[limits]'
        echo 'max_connections_per_ip = 1000'
        if [ "$store" = postgres ]; then
            echo '[store]'
            echo 'backend = "postgres"'
            echo "url = \"postgres://postgres@127.0.0.1:$pgport/poplar\""
        fi
    } > "$store.toml"
done
"$P" db init --config postgres.toml > /dev/null
message=$(python3 -c "print(('From: bench@example.org\r\nSubject: load\r\n\r\n' + 'The quick brown fox jumps over the lazy dog, again and again and again.\r\n' * 60)[:4096], end='')")
for store in maildir postgres; do
    for i in $(seq 0 7); do
        echo "bench$i:{PLAIN}benchpw" >> "$store/users"
        for _ in $(seq 10); do printf '%s' "$message" | "$P" deliver "bench$i" --config "$store.toml"; done
    done
done
run() {
    "$P" serve --config "$1.toml" 2> server.log &
    server=$!
    for _ in $(seq 200); do grep -q 'listening for POP3' server.log && break; sleep 0.05; done
    "$B" session --server 127.0.0.1:21510 --users 8 --password benchpw --seconds 2 > /dev/null 2> warmup.log || { echo "the $1 server did not serve:"; cat warmup.log server.log; exit 1; }
    "$B" session --server 127.0.0.1:21510 --server-pid "$server" --label "$1" --users 8 \
        --password benchpw --seconds "$seconds" 2> /dev/null | grep -E "sessions/s|CPU s|p99" || { echo "the $1 run failed:"; cat server.log; }
    kill "$server"; wait "$server" 2>/dev/null || true
}
for r in $(seq "$rounds"); do
    if [ $((r % 2)) = 1 ]; then run maildir; run postgres; else run postgres; run maildir; fi
done
