#!/usr/bin/env bash
# Client speed: `poplar fetch` and mpop, each downloading (keeping mail on the server) 10 000
# messages of 4 KiB and one 100 MiB message over POP3S from Poplar and from Dovecot, into a
# Maildir on this machine. Every run starts with an empty Maildir and UIDL state; every run's
# Maildir is checked to hold exactly the messages the server has.
#
# Usage (from the repository root, as root so Dovecot can run as nobody):
#   bench/fetch.sh [SMALL_MESSAGES]          default 10000
set -euo pipefail
small=${1:-10000}
repo=$PWD
[ -f bench/fetch.sh ] || { echo "run from the repository root"; exit 1; }
. scripts/lib/packages.sh
ensure_packages dovecot-core dovecot-pop3d openssl mpop python3
cargo build --release --quiet
P=$repo/target/release/poplar
B=$repo/target/release/poplar-bench
work=$(mktemp -d /tmp/poplar-fetch.XXXXXX)
chmod 755 "$work"
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    dovecot -c "$work/dovecot.conf" stop 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -addext basicConstraints=critical,CA:FALSE -addext extendedKeyUsage=serverAuth 2>/dev/null
chmod 644 key.pem
"$B" fill --data-dir poplar --user small --messages "$small" --size 4096 > /dev/null
"$B" fill --data-dir poplar --user huge --messages 1 --size $((100 << 20)) > /dev/null
printf 'small:{PLAIN}pw\nhuge:{PLAIN}pw\n' > poplar/users
mkdir -p dovecot && cp -a poplar/mail dovecot/mail && chown -R nobody:nogroup dovecot
cat > poplar.toml <<CONF
data_dir = "$work/poplar"
[listen]
pop3 = ["127.0.0.1:24110"]
pop3s = ["127.0.0.1:24995"]
[tls]
cert = "$work/cert.pem"
key = "$work/key.pem"
CONF
cat > dovecot.conf <<CONF
base_dir = $work/run
state_dir = $work/state
log_path = $work/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = yes
ssl_cert = <$work/cert.pem
ssl_key = <$work/key.pem
auth_mechanisms = plain
mail_location = maildir:$work/dovecot/mail/_default_/%u/Maildir
passdb {
  driver = static
  args = password=pw
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$work/home/%u
}
service pop3-login {
  inet_listener pop3 {
    port = 25110
  }
  inet_listener pop3s {
    port = 25995
  }
}
CONF
"$P" serve --config poplar.toml 2>/dev/null & server=$!
dovecot -c dovecot.conf
for port in 24995 25995; do
    for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
done
# Both servers index their maildrops once, as servers in service have.
for port in 24110 25110; do
    for u in small huge; do
        python3 -c "import poplib,sys; p=poplib.POP3('127.0.0.1',$port); p.user('$u'); p.pass_('pw'); p.uidl(); p.quit()"
    done
done

count() { find "$1/new" "$1/cur" -type f | wc -l; }
run() { # label client port user expected_messages octets
    local label=$1 client=$2 port=$3 user=$4 want=$5 octets=$6
    rm -rf out state && mkdir -p out/new out/cur out/tmp state
    local start end
    start=$(date +%s.%N)
    if [ "$client" = poplar ]; then
        echo pw | "$P" fetch "pop3s://$user@localhost:$port" --to maildir:"$work/out" --keep \
            --password-stdin --ca-file cert.pem --journal state/journal > /dev/null
    else
        cat > state/mpoprc <<RC
account bench
host localhost
port $port
tls on
tls_starttls off
tls_trust_file $work/cert.pem
user $user
password pw
auth plain
keep on
uidls_file $work/state/uidls
delivery maildir $work/out
RC
        chmod 600 state/mpoprc
        mpop -q -C state/mpoprc bench
    fi
    end=$(date +%s.%N)
    local got; got=$(count out)
    [ "$got" = "$want" ] || { echo "$label: $got messages delivered, expected $want"; exit 1; }
    awk -v l="$label" -v s="$start" -v e="$end" -v n="$want" -v o="$octets" \
        'BEGIN { t = e - s; printf "%-40s %7.2f s %9.0f messages/s %8.1f MB/s\n", l, t, n / t, o / t / 1e6 }'
}
small_octets=$((small * 4096))
huge_octets=$((100 << 20))
for server_name in poplar:24995 dovecot:25995; do
    name=${server_name%%:*}; port=${server_name##*:}
    for client in poplar mpop; do
        run "$client from $name, $small x 4 KiB" $client $port small $small $small_octets
        run "$client from $name, 1 x 100 MiB" $client $port huge 1 $huge_octets
    done
done
