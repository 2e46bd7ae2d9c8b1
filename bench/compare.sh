#!/usr/bin/env bash
# Poplar against Dovecot on this machine: the same loads, back to back, against Poplar, Poplar
# on the PostgreSQL store (a local PostgreSQL, column poplar-postgres), stock Dovecot and
# Dovecot in its high-performance login mode, then the comparison table written into
# docs/benchmarks.md (between the "compare.sh" markers) and printed.
#
# Usage (from the repository root, as root so Dovecot can run its mail processes as nobody):
#   bench/compare.sh [SECONDS_PER_LOAD]        default 10
# Environment: IDLE=500 (logged-in connections for the idle load), HOLD=10000 (connections held
# while fresh sessions are timed; Poplar only), HUGE=100000 (messages in the maildrop that is
# opened cold and warm).
#
# Kept equal for both servers: one RSA-2048 certificate (TLS 1.3, rustls' and OpenSSL's default
# AES-GCM suite), {PLAIN} passwords in one passwd-file, byte-identical Maildirs (files written by
# `poplar-bench fill` with ,S= and ,W= hints, copied before either server touches them), logging
# of one line per session to a file, no fsync on the measured paths (nothing is deleted: both
# fsync only when a session's QUIT removes mail). Dovecot's process and client limits are raised
# so that it can hold the idle connections (capacity, not speed: stock Dovecot stops at 100
# processes).
set -euo pipefail
seconds=${1:-10}
idle=${IDLE:-500}
hold=${HOLD:-10000}
huge=${HUGE:-100000}
repo=$PWD
[ -f bench/compare.sh ] || { echo "run from the repository root"; exit 1; }

. scripts/lib/packages.sh
. bench/lib/postgres.sh
ensure_packages dovecot-core dovecot-pop3d openssl python3 postgresql
cargo build --release --quiet
P=$repo/target/release/poplar
B=$repo/target/release/poplar-bench

work=$(mktemp -d /tmp/poplar-compare.XXXXXX)
chmod 755 "$work"
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    stop_postgres
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
results=$work/results.jsonl

echo "== setup: certificate, users and maildrops in $work"
openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 30 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -addext basicConstraints=critical,CA:FALSE -addext extendedKeyUsage=serverAuth 2>/dev/null
mkdir -p poplar/mail
users=poplar/users
for i in $(seq 0 7); do
    echo "bench$i:{PLAIN}benchpw" >> $users
    "$B" fill --data-dir poplar --user "bench$i" --messages 10 --size 4096 > /dev/null
done
for i in $(seq 0 $((idle - 1))); do
    echo "idle$i:{PLAIN}benchpw" >> $users
    "$B" fill --data-dir poplar --user "idle$i" --messages 1 --size 4096 > /dev/null
done
echo "big:{PLAIN}benchpw" >> $users
"$B" fill --data-dir poplar --user big --messages 1 --size $((10 << 20)) > /dev/null
echo "huge:{PLAIN}benchpw" >> $users
"$B" fill --data-dir poplar --user huge --messages "$huge" --size 4096
mkdir dovecot
cp -a poplar/mail dovecot/mail
cp $users dovecot/users
mkdir -p dovecot/home
chown -R nobody:nogroup dovecot/mail dovecot/home

cat > poplar.toml <<TOML
data_dir = "$work/poplar"
log_level = "info"            # one summary line per session, as in production
[listen]
pop3 = ["127.0.0.1:21110"]
pop3s = ["127.0.0.1:21995"]
[tls]
cert = "$work/cert.pem"
key = "$work/key.pem"
[limits]
max_connections = $((hold + 1000))
max_connections_per_ip = $((hold + 1000))
TOML

# The same node on PostgreSQL: the same users and the same message files, delivered into it.
start_postgres "$work"
sed "s|^data_dir = .*|data_dir = \"$work/poplar-pg\"|" poplar.toml > poplar-pg.toml
printf '[store]\nbackend = "postgres"\nurl = "%s"\n' "$pgurl" >> poplar-pg.toml
mkdir poplar-pg
"$P" db init --config poplar-pg.toml > /dev/null
grep -v '^huge:' $users > pg-users
"$P" user import pg-users --config poplar-pg.toml > /dev/null
for dir in poplar/mail/_default_/*/Maildir; do
    user=$(basename "$(dirname "$dir")")
    [ "$user" = huge ] && continue
    for file in "$dir"/new/* "$dir"/cur/*; do
        if [ -f "$file" ]; then "$P" deliver "$user" --config poplar-pg.toml < "$file"; fi
    done
done

# $1: extra settings inside "service pop3-login".
dovecot_conf() {
    cat <<CONF
base_dir = $work/dovecot/run
state_dir = $work/dovecot/state
log_path = $work/dovecot/dovecot.log
info_log_path = $work/dovecot/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = yes
ssl_cert = <$work/cert.pem
ssl_key = <$work/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:$work/dovecot/mail/_default_/%u/Maildir
passdb {
  driver = passwd-file
  args = scheme=PLAIN $work/dovecot/users
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$work/dovecot/home/%u
}
default_process_limit = $((2 * idle + 200))
default_client_limit = $((4 * idle + 1000))
service pop3-login {
  inet_listener pop3 {
    port = 22110
  }
  inet_listener pop3s {
    port = 22995
  }
$1
}
CONF
}
dovecot_conf "" > dovecot-stock.conf
# Dovecot's documented high-performance login mode: login processes serve many connections and
# one per CPU core is always running.
dovecot_conf "  service_count = 0
  process_min_avail = $(nproc)
  vsz_limit = 1G" > dovecot-hp.conf

wait_for() { # port
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on port $1"; exit 1
}

start_poplar() {
    "$P" serve --config poplar.toml 2>> poplar.log &
    server=$!
    wait_for 21110
}
start_poplar_pg() {
    "$P" serve --config poplar-pg.toml 2>> poplar-pg.log &
    server=$!
    wait_for 21110
}
start_dovecot() {
    dovecot -F -c "dovecot-$mode.conf" &
    server=$!
    wait_for 22110
}
stop() {
    kill "$server"; wait "$server" 2>/dev/null || true
    server=
    sleep 1
}

# $1 label, $2 the function that starts the server, $3 POP3 port, $4 POP3S port
run_loads() {
    local label=$1 start=$2 plain="127.0.0.1:$3" tls="127.0.0.1:$4"
    local secure=(--tls implicit --ca-file "$work/cert.pem")
    echo "-- $label"
    $start
    local common=(--label "$label" --server-pid "$server" --json "$results")
    # A warm-up so that both servers have their processes, caches and pages in place.
    "$B" session --server "$plain" --password benchpw --seconds 2 > /dev/null
    "$B" session --server "$plain" "${common[@]}" --password benchpw --seconds "$seconds"
    "$B" session --server "$tls" "${common[@]}" "${secure[@]}" --password benchpw \
        --seconds "$seconds"
    "$B" retr --server "$plain" "${common[@]}" --user big --password benchpw \
        --seconds "$seconds"
    "$B" retr --server "$tls" "${common[@]}" "${secure[@]}" --user big \
        --password benchpw --seconds "$seconds"
    stop
    # Memory per idle session on a freshly started server: after the loads above, an allocator
    # would hand the sessions memory it already holds and the figure would read zero.
    for how in plain tls; do
        $start
        common=(--label "$label" --server-pid "$server" --json "$results")
        local target=(--server "$plain")
        [ $how = tls ] && target=(--server "$tls" "${secure[@]}")
        "$B" idle "${target[@]}" "${common[@]}" --user-prefix idle \
            --connections "$idle" --password benchpw
        stop
    done
}

# Let the writeback of the maildrops written above finish before anything is measured.
sync
sleep 2
echo "== $(nproc) cores, $(uname -r), $(dovecot --version | cut -d' ' -f1) Dovecot; $seconds s per load"
"$B" loopback --json "$results"

# The huge maildrop, opened cold (the first login ever) and warm, by Poplar and stock Dovecot.
start_poplar
"$B" open --server 127.0.0.1:21110 --label poplar --json "$results" --user huge \
    --password benchpw --times 5
"$B" hold --server 127.0.0.1:21110 --label poplar --server-pid "$server" \
    --json "$results" --connections "$hold" --password benchpw --seconds "$seconds"
stop
mode=stock
start_dovecot
"$B" open --server 127.0.0.1:22110 --label dovecot --json "$results" --user huge \
    --password benchpw --times 5
stop

run_loads poplar start_poplar 21110 21995
run_loads poplar-postgres start_poplar_pg 21110 21995
mode=stock
run_loads dovecot start_dovecot 22110 22995
mode=hp
run_loads dovecot-hp start_dovecot 22110 22995

table=$("$B" table "$results")
cd "$repo"
{
    echo "<!-- compare.sh begin: generated by bench/compare.sh; do not edit by hand -->"
    echo
    echo "Run on $(date -u +%Y-%m-%d): $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), Linux $(uname -r), $(dovecot --version | cut -d' ' -f1) Dovecot, load generator on the same machine."
    echo "Command: \`bench/compare.sh $seconds\` (IDLE=$idle, HOLD=$hold, HUGE=$huge)."
    echo
    echo "$table"
    echo
    echo "<!-- compare.sh end -->"
} > "$work/section.md"
python3 - "$work/section.md" docs/benchmarks.md <<'PY'
import re, sys
section = open(sys.argv[1]).read()
path = sys.argv[2]
doc = open(path).read()
pattern = re.compile(r"<!-- compare.sh begin.*?<!-- compare.sh end -->\n", re.S)
if pattern.search(doc):
    doc = pattern.sub(lambda _: section, doc)
else:
    doc = doc.rstrip("\n") + "\n\n## Poplar against Dovecot\n\n" + section
open(path, "w").write(doc)
PY
echo "$table"
echo "written to docs/benchmarks.md"

# Logins with {ARGON2ID} users and the credential cache, against Dovecot's auth cache.
bench/auth-cache.sh "$seconds"
