#!/usr/bin/env bash
# Two builds of Poplar under the same load, alternately, to tell a code change from a machine
# that runs faster or slower from one minute to the next (neighbouring runs of one build differ
# by up to 10% on a shared two-core machine, and whichever runs second in a pair is slower).
#
# Usage (from the repository root): bench/ab.sh OLD_POPLAR NEW_POPLAR [ROUNDS] [SECONDS]
#   e.g. git worktree add /tmp/old <commit> && (cd /tmp/old && CARGO_TARGET_DIR=/tmp/old-target
#        cargo build --release -p poplar) && bench/ab.sh /tmp/old-target/release/poplar
#        target/release/poplar 6 10
# Each round runs `poplar-bench session` (8 connections, plain, 10 messages of 4 KiB per
# maildrop) against both builds, in alternating order; prints sessions/s and the server's CPU
# seconds per 1000 sessions for every run, then the medians. With LOAD=retr it runs
# `poplar-bench retr` instead (RETR of one 10 MiB message, plain): MB/s and server CPU-s per GB.
set -euo pipefail
old=$(realpath "$1"); new=$(realpath "$2"); rounds=${3:-6}; seconds=${4:-10}
kind=${LOAD:-session}
[ -f bench/ab.sh ] || { echo "run from the repository root"; exit 1; }
cargo build --release --quiet -p poplar-bench
load=$PWD/target/release/poplar-bench
work=$(mktemp -d /tmp/poplar-ab.XXXXXX)
trap 'kill $server 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
cat > poplar.toml <<TOML
data_dir = "$work/data"
log_level = "info"   # as in production: one summary line per session
[listen]
pop3 = ["127.0.0.1:21310"]
pop3s = []
[limits]
max_connections_per_ip = 1000
TOML
mkdir -p data
for i in $(seq 0 7); do
    echo "bench$i:{PLAIN}benchpw" >> data/users
    "$load" fill --data-dir data --user "bench$i" --messages 10 --size 4096 > /dev/null
done
echo "big:{PLAIN}benchpw" >> data/users
"$load" fill --data-dir data --user big --messages 1 --size $((10 << 20)) > /dev/null
server=
run() {
    "$1" serve --config poplar.toml 2> server.log &
    server=$!
    for _ in $(seq 200); do grep -q 'listening for POP3' server.log && break; sleep 0.05; done
    if [ "$kind" = retr ]; then
        "$load" retr --server 127.0.0.1:21310 --user big --password benchpw --seconds 2 > /dev/null
        "$load" retr --server 127.0.0.1:21310 --server-pid "$server" --user big \
            --password benchpw --seconds "$seconds" |
            awk -v build="$2" '/ MB\/s/ {s=$(NF-1)} /CPU s per GB/ {c=$(NF-5)} END {print build, s, c}' |
            tee -a runs
    else
        "$load" session --server 127.0.0.1:21310 --users 8 --password benchpw --seconds 2 > /dev/null
        "$load" session --server 127.0.0.1:21310 --server-pid "$server" --users 8 \
            --password benchpw --seconds "$seconds" |
            awk -v build="$2" '/sessions\/s/ {s=$(NF-1)} /CPU s per 1000/ {c=$(NF-6)} END {print build, s, c}' |
            tee -a runs
    fi
    kill "$server"; wait "$server" 2>/dev/null || true
}
if [ "$kind" = retr ]; then unit="MB/s"; per="CPU-s per GB"; else unit="sessions/s"; per="CPU-s per 1000 sessions"; fi
echo "build $unit $per"
for r in $(seq "$rounds"); do
    if [ $((r % 2)) = 1 ]; then run "$old" old; run "$new" new; else run "$new" new; run "$old" old; fi
done
for build in old new; do
    awk -v b="$build" '$1 == b {print $2, $3}' runs | sort -n | awk -v b="$build" \
        -v u="$unit" '{s[NR]=$1; c[NR]=$2} END {m=int((NR+1)/2); printf "%s: median %s %s (of %d runs)\n", b, s[m], u, NR}'
    awk -v b="$build" '$1 == b {print $3}' runs | sort -n | awk -v b="$build" \
        -v p="$per" '{c[NR]=$1} END {m=int((NR+1)/2); printf "%s: median %s %s\n", b, c[m], p}'
done
[ "$kind" = retr ] && "$load" loopback | tail -1
exit 0
