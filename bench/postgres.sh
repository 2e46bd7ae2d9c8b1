#!/usr/bin/env bash
# One node on PostgreSQL against the same node on Maildir: full sessions (8 connections,
# USER/PASS STAT UIDL LIST RETR x10 of 4 KiB, QUIT) with the same messages, delivered by
# `poplar deliver` into each store, alternately, ROUNDS times.
# Then LMTP deliveries per second into each store (1 and 10 connections), and on PostgreSQL alone: PostgreSQL's own CPU per 1000 sessions and transactions per session
# (the same load measured against the postmaster's process tree, and pg_stat_database), and
# the first and warm opens of a maildrop of HUGE messages (default 100000, written with SQL as
# benchmark setup, 4 KiB each).
# Usage (from the repository root, as root so PostgreSQL can run as the postgres user):
#   bench/postgres.sh [SECONDS] [ROUNDS]        defaults 10 and 2
set -euo pipefail
seconds=${1:-10}
rounds=${2:-2}
huge=${HUGE:-100000}
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
        echo 'lmtp = ["127.0.0.1:21524"]'
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

# PostgreSQL's side of the same load.
psql=("$pgbin/psql" -h 127.0.0.1 -p "$pgport" -U postgres -d poplar -qtA)
postmaster=$(head -1 "$work/pg/data/postmaster.pid")
"$P" serve --config postgres.toml 2> server.log &
server=$!
for _ in $(seq 200); do grep -q 'listening for POP3' server.log && break; sleep 0.05; done
before=$("${psql[@]}" -c "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'poplar'")
out=$("$B" session --server 127.0.0.1:21510 --server-pid "$postmaster" --label postgresql \
    --users 8 --password benchpw --seconds "$seconds" 2>&1)
# The node's connections close with it, and their backends report their counts as they exit.
kill "$server"; wait "$server" 2>/dev/null || true
sleep 1
after=$("${psql[@]}" -c "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'poplar'")
sessions=$(echo "$out" | grep -o '^[0-9]* sessions' | awk '{print $1}')
echo "$out" | grep -E 'CPU s' | sed 's/server CPU/PostgreSQL CPU/'
echo "$after $before $sessions" | awk '{printf "statements per session: %.1f (%d for %d sessions; each outside a transaction block is one)\n", ($1 - $2) / $3, $1 - $2, $3}'

# LMTP deliveries per second into each store, on one and on ten connections.
for store in maildir postgres; do
    "$P" serve --config "$store.toml" 2> server.log &
    server=$!
    for _ in $(seq 200); do grep -q 'listening for LMTP' server.log && break; sleep 0.05; done
    for c in 1 10; do
        "$B" lmtp --lmtp 127.0.0.1:21524 --recipient bench0 --connections "$c" --seconds "$seconds" \
            --label "$store" 2> /dev/null | grep 'deliveries/s' | sed "s/$/ ($c connections)/"
    done
    kill "$server"; wait "$server" 2>/dev/null || true
done

# A maildrop of $huge messages, written directly (benchmark setup, like poplar-bench fill).
echo "big:{PLAIN}benchpw" >> postgres/users
"${psql[@]}" <<SQL
INSERT INTO poplar_maildrops (name, next_uid) VALUES ('big', $huge + 1);
INSERT INTO poplar_messages (maildrop, uid, uidl, size, octets)
    SELECT m.id, g, lpad(to_hex(g), 8, '0') || lpad(to_hex(m.uidvalidity), 8, '0'), 4096, 4096
    FROM poplar_maildrops m, generate_series(1, $huge) g WHERE m.name = 'big';
INSERT INTO poplar_chunks (maildrop, uid, seq, data)
    SELECT m.id, g, 0, convert_to(rpad('Subject: ' || g || E'\r\n\r\n', 4094, 'x') || E'\r\n', 'UTF8')
    FROM poplar_maildrops m, generate_series(1, $huge) g WHERE m.name = 'big';
VACUUM ANALYZE;
SQL
"$P" serve --config postgres.toml 2> server.log &
server=$!
for _ in $(seq 200); do grep -q 'listening for POP3' server.log && break; sleep 0.05; done
"$B" open --server 127.0.0.1:21510 --user big --password benchpw --times 5 --pause 1 2>&1 | grep -E 'ms'
kill "$server"; wait "$server" 2>/dev/null || true
