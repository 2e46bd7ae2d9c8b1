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
. bench/lib/postgres.sh
ensure_packages postgresql python3
cargo build --release --quiet
P=$PWD/target/release/poplar
B=$PWD/target/release/poplar-bench
work=$(mktemp -d /tmp/poplar-pg.XXXXXX)
chmod 755 "$work"
server=
trap 'kill $server 2>/dev/null || true; stop_postgres; rm -rf "$work"' EXIT
start_postgres "$work"
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
            echo "url = \"$pgurl\""
        fi
    } > "$store.toml"
done
"$P" db init --config postgres.toml > /dev/null
message=$(python3 -c "print(('From: bench@example.org\r\nSubject: load\r\n\r\n' + 'The quick brown fox jumps over the lazy dog, again and again and again.\r\n' * 60)[:4096], end='')")
for store in maildir postgres; do
    for i in $(seq 0 7); do
        echo "bench$i:{PLAIN}benchpw" >> "$store/users"
    done
    # On PostgreSQL, users live in the database.
    if [ "$store" = postgres ]; then
        "$P" user import postgres/users --config postgres.toml > /dev/null
    fi
    for i in $(seq 0 7); do
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
postmaster=$(head -1 "$pgdata/postmaster.pid")
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
echo "big:{PLAIN}benchpw" > big-user
"$P" user import big-user --config postgres.toml > /dev/null
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

# The users replica: a node's memory and start-up with $users users in the table (hashes the
# length of Poplar's default ARGON2ID), and the CPU one change costs it (each change rebuilds
# the replica's lookup structures).
users=${USERS:-100000}
hash='{ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$W5pd1lJ9k3mD2eRzv4yUhx0oQm0Yy6YHkmXtD5sF0Kk'
python3 - "$users" "$hash" > many-users <<'PY'
import sys
n, h = int(sys.argv[1]), sys.argv[2]
for i in range(n):
    print(f"user{i}@example.org:{h}")
PY
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
measure_node() {
    "$P" serve --config postgres.toml 2> server.log &
    server=$!
    for _ in $(seq 600); do grep -q 'listening for POP3' server.log && break; sleep 0.05; done
    sleep 1
}
measure_node
empty=$(rss "$server")
kill "$server"; wait "$server" 2>/dev/null || true
start=$(date +%s.%N)
"$P" user import many-users --config postgres.toml > /dev/null
imported=$(date +%s.%N)
measure_node
full=$(rss "$server")
ticks=$(getconf CLK_TCK)
before=$(cpu "$server")
changes=50
for i in $(seq "$changes"); do
    printf 'pw%s\n' "$i" | "$P" user passwd "user$i@example.org" --schemes PLAIN --password-stdin --config postgres.toml > /dev/null
    sleep 0.1
done
after=$(cpu "$server")
kill "$server"; wait "$server" 2>/dev/null || true
echo "$users $empty $full $start $imported $before $after $ticks $changes" | awk '{
    printf "users replica: %d users take %.0f KiB on a node (%.0f octets per user); importing them took %.1f s\n", $1, $3 - $2, ($3 - $2) * 1024 / $1, $5 - $4;
    printf "users replica: %d password changes cost a node %.0f ms of CPU in all with %d users (clock ticks of %.0f ms)\n", $9, ($7 - $6) / $8 * 1000, $1, 1000 / $8 }'
