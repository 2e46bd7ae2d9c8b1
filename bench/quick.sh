#!/usr/bin/env bash
# Quick single-machine figures for Poplar alone (no Dovecot): sessions/s, server CPU and RSS for
# full sessions, and the time to open a 100 000-message maildrop cold and warm.
# Usage: bench/quick.sh [SECONDS]   (run from the repository root; builds the release binary)
set -euo pipefail
seconds=${1:-10}
cargo build --release --quiet
P=$PWD/target/release/poplar
B=$PWD/target/release/poplar-bench
work=$(mktemp -d /tmp/poplar-bench.XXXXXX)
trap 'kill $server 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
cat > poplar.toml <<TOML
data_dir = "$work/data"
log_level = "info"   # as in production: one summary line per session
[listen]
pop3 = ["127.0.0.1:0"]
pop3s = ["127.0.0.1:0"]
[limits]
max_connections_per_ip = 1000
TOML
mkdir -p data
for i in $(seq 0 7); do
    echo "bench$i:{PLAIN}benchpw" >> data/users
    "$B" fill --data-dir data --user "bench$i" --messages 10 --size 4096 > /dev/null
done
echo "big:{PLAIN}benchpw" >> data/users

start_server() {
    "$P" serve --config poplar.toml 2> server.log &
    server=$!
    for _ in $(seq 100); do
        addr=$(grep -o 'listening for POP3 on [0-9.:]*' server.log | head -1 | awk '{print $5}') || true
        [ -n "$addr" ] && return 0
        sleep 0.05
    done
    echo "server did not start"; cat server.log; exit 1
}

echo "== $(nproc) cores, $(uname -r); 8 connections, sessions of USER/PASS STAT UIDL LIST RETR x10 (4 KiB) QUIT"
start_server
echo "-- {PLAIN} stored passwords"
"$B" session --pop3 "$addr" --users 8 --password benchpw --seconds "$seconds" --server-pid "$server"
echo "-- {ARGON2ID} stored passwords (Poplar's default for new users)"
cp data/users data/users.plain
: > data/users
for i in $(seq 0 7); do echo benchpw | "$P" user add "bench$i" --password-stdin --config poplar.toml > /dev/null; done
"$B" session --pop3 "$addr" --users 8 --password benchpw --seconds "$seconds" --server-pid "$server"
cp data/users.plain data/users

echo "== 100 000 messages of 4 KiB in one maildrop (files with ,S= and ,W= hints, page cache warm)"
"$B" fill --data-dir data --user big --messages 100000 --size 4096
"$B" open --pop3 "$addr" --user big --password benchpw --times 5
grep -E 'VmRSS|VmHWM' "/proc/$server/status"
