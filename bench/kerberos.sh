#!/usr/bin/env bash
# GSSAPI (Kerberos 5) logins against SCRAM-SHA-256 logins, as a real client makes them: mpop -s
# (connect, log in, STAT, QUIT), ROUNDS x 40 runs each, alternately, against one release build
# with a throwaway MIT KDC on loopback.
# Usage (from the repository root): bench/kerberos.sh [ROUNDS]
# Needs krb5-kdc, krb5-admin-server, krb5-user, mpop, libkrb5-dev, libclang-dev (scripts/test
# installs them).
set -euo pipefail
rounds=${1:-2}
[ -f bench/kerberos.sh ] || { echo "run from the repository root"; exit 1; }
cargo build --release --quiet --locked -p poplar --features gssapi
P=$PWD/target/release/poplar
work=$(mktemp -d /tmp/poplar-krb.XXXXXX)
trap 'kill ${server:-} ${kdc:-} 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
kdc_port=$(port); pop3=$(port); kpop=$(port)
realm=BENCH.TEST
cat > krb5.conf <<CONF
[libdefaults]
  default_realm = $realm
  dns_lookup_kdc = false
  rdns = false
  dns_canonicalize_hostname = false
  udp_preference_limit = 1
[realms]
  $realm = {
    kdc = 127.0.0.1:$kdc_port
  }
CONF
cat > kdc.conf <<CONF
[kdcdefaults]
  kdc_listen = 127.0.0.1:$kdc_port
  kdc_tcp_listen = 127.0.0.1:$kdc_port
[realms]
  $realm = {
    database_name = $work/principal
    key_stash_file = $work/stash
    acl_file = $work/kadm5.acl
  }
CONF
: > kadm5.acl
export KRB5_CONFIG=$work/krb5.conf KRB5_KDC_PROFILE=$work/kdc.conf KRB5CCNAME=FILE:$work/ccache
kdb5_util -r $realm create -s -P "master-$RANDOM$RANDOM" >/dev/null
kadmin.local -r $realm -q "addprinc -pw alicepw alice" >/dev/null 2>&1
kadmin.local -r $realm -q "addprinc -randkey pop/localhost" >/dev/null 2>&1
kadmin.local -r $realm -q "ktadd -k $work/pop.keytab pop/localhost" >/dev/null 2>&1
krb5kdc -n -r $realm & kdc=$!
sleep 0.5
echo alicepw | kinit alice >/dev/null
cat > poplar.toml <<TOML
data_dir = "$work/data"
hostname = "localhost"
[listen]
pop3 = ["127.0.0.1:$pop3"]
pop3s = []
kpop = ["127.0.0.1:$kpop"]
[tls]
enabled = false
[auth.gssapi]
keytab = "$work/pop.keytab"
TOML
echo alicepw | "$P" user add alice --config poplar.toml --password-stdin --schemes SCRAM-SHA-256 >/dev/null 2>&1
printf 'Subject: k\r\n\r\nmail\r\n' | "$P" deliver alice --config poplar.toml
"$P" serve --config poplar.toml 2>server.log & server=$!
sleep 1
cat > mpoprc <<RC
defaults
host localhost
tls off
user alice
keep on
passwordeval echo alicepw
delivery mda "cat > /dev/null"
account gssapi
port $kpop
auth gssapi
account scram
port $pop3
auth scram-sha-256
RC
chmod 600 mpoprc
echo "== $(nproc) cores; mpop -s 40 times per figure"
for _ in $(seq "$rounds"); do
    for account in gssapi scram; do
        start=$(date +%s%N)
        for _ in $(seq 40); do mpop -C mpoprc -q -s $account >/dev/null; done
        end=$(date +%s%N)
        echo "$account: $(( (end - start) / 40000 )) us per login session"
    done
done
echo "logins: $(grep -c 'mechanism="GSSAPI"' server.log) GSSAPI, $(grep -c 'mechanism="SCRAM-SHA-256"' server.log) SCRAM-SHA-256"
