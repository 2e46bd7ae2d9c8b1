#!/usr/bin/env bash
# Login latency per authentication mechanism, and the failure-delay curve under 50 wrong
# passwords, against a release build with the production defaults for delays (2 s doubling to
# 15 s). The curve takes about 12 minutes by design.
# Usage: bench/auth.sh [LOGINS_PER_MECHANISM] [WRONG_PASSWORDS]   (from the repository root)
set -euo pipefail
times=${1:-50}
wrong=${2:-50}
[ -f bench/auth.sh ] || { echo "run from the repository root"; exit 1; }
. scripts/lib/packages.sh
ensure_packages dovecot-core
cargo build --release --quiet
P=$PWD/target/release/poplar
B=$PWD/target/release/poplar-bench
work=$(mktemp -d /tmp/poplar-auth-bench.XXXXXX)
trap 'kill $server 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
cat > poplar.toml <<TOML
data_dir = "$work/data"
[listen]
pop3 = ["127.0.0.1:0"]
pop3s = []
[tls]
enabled = false
[auth]
apop = true
TOML
mkdir -p data
echo benchpw | "$P" user add alice --password-stdin --config poplar.toml \
    --schemes ARGON2ID,SCRAM-SHA-256,SCRAM-SHA-1,CRAM-MD5 > /dev/null
echo benchpw | "$P" user add plain --password-stdin --config poplar.toml --schemes PLAIN > /dev/null
echo "dovecot:$(doveadm pw -s ARGON2ID -p benchpw)" >> data/users
"$P" serve --config poplar.toml 2> server.log &
server=$!
for _ in $(seq 100); do
    addr=$(grep -o 'listening for POP3 on [0-9.:]*' server.log | head -1 | awk '{print $5}') || true
    [ -n "$addr" ] && break
    sleep 0.05
done
echo "== $(nproc) cores; $times logins per mechanism, one at a time, each on a new connection"
echo "-- alice: ARGON2ID (19 MiB, t=2) for USER/PLAIN/LOGIN, stored SCRAM keys and CRAM-MD5 states"
"$B" login --pop3 "$addr" --user alice --password benchpw --times "$times" \
    --mechanisms USER,PLAIN,LOGIN,CRAM-MD5,SCRAM-SHA-1,SCRAM-SHA-256
echo "-- plain: {PLAIN}; SCRAM keys derived per login (PBKDF2, 4096 iterations)"
"$B" login --pop3 "$addr" --user plain --password benchpw --times "$times" \
    --mechanisms USER,APOP,CRAM-MD5,SCRAM-SHA-1,SCRAM-SHA-256
echo "-- dovecot: {ARGON2ID} from doveadm pw (64 MiB, t=3)"
"$B" login --pop3 "$addr" --user dovecot --password benchpw --times "$((times / 5 + 1))" --mechanisms USER
echo "== $wrong wrong passwords in a row for alice on one connection (defaults: 2 s doubling to 15 s)"
"$B" penalty --pop3 "$addr" --user alice --count "$wrong"
