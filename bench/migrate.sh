#!/usr/bin/env bash
# Migration speed: `poplar migrate` of one maildrop of N messages (default 10 000 of 4 KiB) from
# Dovecot's Maildir on disk and live from Dovecot over POP3S, after Dovecot has indexed it (as a
# server in service has), into an empty Poplar maildrop. Each run is checked: every UIDL Dovecot
# shows is the one Poplar shows.
#
# Usage (from the repository root, as root so Dovecot can run as nobody):
#   bench/migrate.sh [MESSAGES]
set -euo pipefail
n=${1:-10000}
repo=$PWD
[ -f bench/migrate.sh ] || { echo "run from the repository root"; exit 1; }
. scripts/lib/packages.sh
ensure_packages dovecot-core dovecot-pop3d openssl python3
cargo build --release --quiet
P=$repo/target/release/poplar
B=$repo/target/release/poplar-bench
work=$(mktemp -d /tmp/poplar-migrate.XXXXXX)
chmod 755 "$work"
cleanup() {
    dovecot -c "$work/dovecot.conf" stop 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -addext basicConstraints=critical,CA:FALSE -addext extendedKeyUsage=serverAuth 2>/dev/null
"$B" fill --data-dir old --user alice --messages "$n" --size 4096 > /dev/null
chown -R nobody:nogroup old
cat > dovecot.conf <<CONF
base_dir = $work/run
state_dir = $work/state
log_path = $work/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = yes
ssl_cert = <$work/cert.pem
ssl_key = <$work/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:$work/old/mail/_default_/%u/Maildir
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
    port = 23110
  }
  inet_listener pop3s {
    port = 23995
  }
}
CONF
dovecot -c dovecot.conf
for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/23995) 2>/dev/null && break; sleep 0.05; done
uidls() { # port
    python3 - "$1" <<'PY'
import poplib, sys
p = poplib.POP3("127.0.0.1", int(sys.argv[1]))
p.user("alice"); p.pass_("pw")
print("\n".join(l.decode().split(" ", 1)[1] for l in p.uidl()[1]))
p.quit()
PY
}
uidls 23110 > dovecot.uidls   # Dovecot indexes the maildrop, as in service
for how in disk pop3s; do
    mkdir -p "poplar-$how"
    echo 'alice:{PLAIN}pw' > "poplar-$how/users"
    cat > "poplar-$how.toml" <<CONF
data_dir = "$work/poplar-$how"
[listen]
pop3 = ["127.0.0.1:23$([ $how = disk ] && echo 2 || echo 3)10"]
pop3s = []
[tls]
enabled = false
CONF
    if [ "$how" = disk ]; then
        src="maildir:$work/old/mail/_default_/alice/Maildir"
        "$P" migrate "$src" --to alice --config "poplar-$how.toml" | tee "$how.out"
    else
        echo pw | "$P" migrate pop3s://alice@localhost:23995 --to alice --password-stdin \
            --ca-file cert.pem --config "poplar-$how.toml" | tee "$how.out"
    fi
    "$P" serve --config "poplar-$how.toml" 2>/dev/null & pid=$!
    port=23$([ $how = disk ] && echo 2 || echo 3)10
    for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
    uidls "$port" > "poplar-$how.uidls"
    kill $pid; wait $pid 2>/dev/null || true
    if cmp -s dovecot.uidls "poplar-$how.uidls"; then
        echo "$how: all $(wc -l < dovecot.uidls) UIDLs identical to Dovecot's"
    else
        echo "$how: UIDLs DIFFER from Dovecot's"; exit 1
    fi
done
