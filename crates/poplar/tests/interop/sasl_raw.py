#!/usr/bin/env python3
"""Raw AUTH exchanges against Poplar from Python: SCRAM-SHA-1 and SCRAM-SHA-256 written here
from RFC 5802 with hashlib, OAUTHBEARER with a token minted by the calling test, and APOP via
poplib. Also checks that an unknown user is indistinguishable in the SCRAM exchange.

Usage: sasl_raw.py HOST PORT USER PASSWORD APOP_USER APOP_SECRET OAUTH_USER GOOD_TOKEN BAD_TOKEN
"""
import base64
import hashlib
import hmac
import os
import poplib
import socket
import sys

host, port, user, password, apop_user, apop_secret, oauth_user, good_token, bad_token = sys.argv[1:10]
port = int(port)
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1


class Line:
    def __init__(self):
        self.s = socket.create_connection((host, port), timeout=30)
        self.f = self.s.makefile("rb")
        check(self.read().startswith("+OK"), "greeting")

    def read(self):
        return self.f.readline().decode().rstrip("\r\n")

    def cmd(self, text):
        self.s.sendall(text.encode() + b"\r\n")
        return self.read()

    def close(self):
        self.cmd("QUIT")
        self.s.close()


def b64(data):
    return base64.b64encode(data).decode()


def scram(hashname, name, secret, expect_ok):
    mech = {"sha1": "SCRAM-SHA-1", "sha256": "SCRAM-SHA-256"}[hashname]
    h = getattr(hashlib, hashname)
    c = Line()
    nonce = b64(os.urandom(18))
    first_bare = f"n={name},r={nonce}"
    reply = c.cmd(f"AUTH {mech} " + b64(("n,," + first_bare).encode()))
    check(reply.startswith("+ "), f"{mech} server-first: {reply}")
    server_first = base64.b64decode(reply[2:]).decode()
    attrs = dict(a.split("=", 1) for a in server_first.split(","))
    check(attrs["r"].startswith(nonce) and len(attrs["r"]) > len(nonce), "server nonce extends ours")
    salt = base64.b64decode(attrs["s"])
    iterations = int(attrs["i"])
    salted = hashlib.pbkdf2_hmac(hashname, secret.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", h).digest()
    stored_key = h(client_key).digest()
    without_proof = f"c={b64(b'n,,')},r={attrs['r']}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, h).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    reply = c.cmd(b64(f"{without_proof},p={b64(proof)}".encode()))
    if expect_ok:
        check(reply.startswith("+ "), f"{mech} server-final: {reply}")
        server_final = base64.b64decode(reply[2:]).decode()
        server_key = hmac.new(salted, b"Server Key", h).digest()
        expected = b64(hmac.new(server_key, auth_message, h).digest())
        check(server_final == f"v={expected}", f"{mech} server signature")
        reply = c.cmd("")
        check(reply.startswith("+OK"), f"{mech} login: {reply}")
    else:
        check(reply.startswith("-ERR [AUTH]"), f"{mech} failure: {reply}")
    c.close()
    return len(salt), iterations


for hashname in ("sha256", "sha1"):
    scram(hashname, user, password, True)
    scram(hashname, user, "wrong-password", False)
    # An unknown user sees the same exchange: a salt of the same size, the same iteration
    # count, and the same failure at the end.
    check(scram(hashname, user, "x", False) == scram(hashname, "nobody-here", "x", False), "unknown user looks the same")

# OAUTHBEARER (RFC 7628): initial response, then a refused token with its JSON error.
c = Line()
msg = f"n,a={oauth_user},\x01host={host}\x01port={port}\x01auth=Bearer {good_token}\x01\x01"
reply = c.cmd("AUTH OAUTHBEARER " + b64(msg.encode()))
check(reply.startswith("+OK"), f"OAUTHBEARER: {reply}")
c.close()
c = Line()
msg = f"n,a={oauth_user},\x01auth=Bearer {bad_token}\x01\x01"
reply = c.cmd("AUTH OAUTHBEARER " + b64(msg.encode()))
check(reply.startswith("+ "), f"OAUTHBEARER error challenge: {reply}")
error = base64.b64decode(reply[2:]).decode()
check('"status":"invalid_token"' in error, error)
reply = c.cmd(b64(b"\x01"))
check(reply.startswith("-ERR [AUTH]"), f"OAUTHBEARER failure: {reply}")
c.close()

# APOP with poplib.
p = poplib.POP3(host, port, timeout=30)
p.apop(apop_user, apop_secret)
check(p.stat()[0] >= 0, "APOP login")
p.quit()
p = poplib.POP3(host, port, timeout=30)
try:
    p.apop(apop_user, "wrong")
    check(False, "APOP with a wrong secret")
except poplib.error_proto as e:
    check(e.args[0].startswith(b"-ERR [AUTH]"), e.args[0])
p.quit()

print(f"sasl_raw: {checks} checks passed")
