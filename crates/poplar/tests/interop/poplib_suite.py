#!/usr/bin/env python3
"""Drives a running Poplar with Python's standard poplib, the way scripts in the wild do.

Usage: poplib_suite.py HOST POP3_PORT POP3S_PORT CAFILE USER PASSWORD CORPUS_DIR

CORPUS_DIR holds the delivered messages as 01.eml, 02.eml, ... in delivery order. Every check
raises on failure; the exit status is 0 only if all pass.
"""
import os
import poplib
import socket
import ssl
import sys

# poplib refuses lines over 2048 octets by default (_MAXLINE); the corpus has a 5000-character
# line, which RFC 5322 discourages but real mail contains.
poplib._MAXLINE = 100_000

host, port, sport, cafile, user, password, corpus_dir = sys.argv[1:8]
port, sport = int(port), int(sport)
ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = True


def canonical(data: bytes) -> bytes:
    """What RETR must deliver: bare LF as CRLF, a final line terminated."""
    out = bytearray()
    prev = 0
    for b in data:
        if b == 0x0A and prev != 0x0D:
            out += b"\r"
        out.append(b)
        prev = b
    if data and not data.endswith(b"\n"):
        out += b"\n" if data.endswith(b"\r") else b"\r\n"
    return bytes(out)


def joined(lines) -> bytes:
    """poplib returns lines without CRLF, dot-stuffing undone."""
    return b"".join(line + b"\r\n" for line in lines)


corpus = [canonical(open(os.path.join(corpus_dir, f), "rb").read())
          for f in sorted(os.listdir(corpus_dir))]
n = len(corpus)
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1


def login(conn):
    conn.user(user)
    return conn.pass_(password)


# 1. Plain POP3 with USER/PASS (loopback is a trusted network by default).
p = poplib.POP3(host, port, timeout=30)
check(p.getwelcome().startswith(b"+OK"), "greeting")
capa = p.capa()
for cap in ("TOP", "UIDL", "USER", "RESP-CODES", "PIPELINING", "STLS", "SASL", "UTF8"):
    check(cap in capa, f"CAPA lists {cap}: {capa}")
check(capa["SASL"] == ["PLAIN", "LOGIN"], f"SASL mechanisms {capa['SASL']} (ARGON2ID users: no CRAM-MD5 or SCRAM)")
check("IMPLEMENTATION" not in capa, "IMPLEMENTATION hidden before login")
login(p)
check("IMPLEMENTATION" in p.capa(), "IMPLEMENTATION after login")
count, total = p.stat()
check(count == n and total == sum(map(len, corpus)), f"STAT {count} {total}")
resp, listing, _ = p.list()
sizes = [int(l.split()[1]) for l in listing]
check(sizes == [len(m) for m in corpus], f"LIST sizes {sizes}")
check(p.list(2).split()[2] == str(len(corpus[1])).encode(), "LIST 2")
resp, uidls, _ = p.uidl()
uidls = [l.split()[1] for l in uidls]
check(len(set(uidls)) == n and all(1 <= len(u) <= 70 for u in uidls), f"UIDLs {uidls}")
check(p.uidl(1).split()[2] == uidls[0], "UIDL 1")
for i, expected in enumerate(corpus, 1):
    resp, lines, octets = p.retr(i)
    check(resp == b"+OK %d octets" % len(expected), f"RETR {i} status {resp!r}")
    check(joined(lines) == expected, f"RETR {i} bytes differ")
    header = expected.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    resp, lines, _ = p.top(i, 0)
    check(joined(lines) == header, f"TOP {i} 0")
    resp, lines, _ = p.top(i, 1)
    check(expected.startswith(joined(lines)), f"TOP {i} 1 is a prefix")
# DELE then RSET: nothing deleted.
p.dele(1)
try:
    p.retr(1)
    check(False, "RETR of a deleted message")
except poplib.error_proto as e:
    check(b"-ERR" in e.args[0], "RETR deleted gives -ERR")
p.rset()
check(p.stat()[0] == n, "RSET restores")
p.quit()

# 2. STLS (RFC 2595).
p = poplib.POP3(host, port, timeout=30)
p.stls(context=ctx)
check("STLS" not in p.capa(), "no STLS after STLS")
login(p)
check(p.stat()[0] == n, "STAT over STLS")
p.quit()

# 3. Implicit TLS (POP3S).
p = poplib.POP3_SSL(host, sport, context=ctx, timeout=30)
login(p)
resp, lines, _ = p.retr(n)
check(joined(lines) == corpus[-1], "RETR over POP3S")
p.quit()

# 4. Concurrent session: the second login gets [IN-USE] until the first ends.
a = poplib.POP3(host, port, timeout=30)
login(a)
b = poplib.POP3(host, port, timeout=30)
b.user(user)
try:
    b.pass_(password)
    check(False, "second session logged in")
except poplib.error_proto as e:
    check(e.args[0].startswith(b"-ERR [IN-USE]"), f"IN-USE reply {e.args[0]!r}")
a.quit()
b.user(user)
b.pass_(password)
b.quit()

# 5. DELE, then the connection drops without QUIT: nothing is removed.
p = poplib.POP3(host, port, timeout=30)
login(p)
p.dele(1)
p.sock.shutdown(socket.SHUT_RDWR)
p.sock.close()
p = None
for attempt in range(50):
    try:
        q = poplib.POP3(host, port, timeout=30)
        login(q)
        break
    except poplib.error_proto:
        import time
        time.sleep(0.02)
check(q.stat()[0] == n, "dropped connection removed nothing")

# 6. DELE then QUIT: removed for good, other UIDLs unchanged.
q.dele(1)
q.quit()
p = poplib.POP3(host, port, timeout=30)
login(p)
resp, after, _ = p.uidl()
after = [l.split()[1] for l in after]
check(after == uidls[1:], f"UIDLs after DELE+QUIT {after}")
check(p.stat()[0] == n - 1, "DELE+QUIT removed one message")
p.quit()

print(f"poplib: {checks} checks passed")
