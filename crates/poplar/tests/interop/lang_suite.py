#!/usr/bin/env python3
"""RFC 6856 LANG through Python's poplib: every response a client can provoke, in English and
in Bulgarian, sent as raw commands the way a script would.

Usage: lang_suite.py HOST PORT USER PASSWORD DEFAULT_TAG

Each session switches with LANG, then walks the AUTHORIZATION and TRANSACTION states. Checked
for every response: the same status and response code in both languages; English text is
ASCII; Bulgarian text is Cyrillic (only protocol data, such as STAT's numbers, is not text);
numbers in the text are the same in both. DEFAULT_TAG is the server's configured language:
its greeting must be in it and `LANG *` must select it.
"""
import poplib
import re
import sys

host, port, user, password, default_tag = sys.argv[1:6]
port = int(port)
checks = 0
CYRILLIC = re.compile("[\u0400-\u04FF]")
DATA = {"STAT", "LIST 1", "UIDL 1", "NOOP"}


def check(cond, what):
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1


def raw(conn, line, multi=False):
    """Sends one command line; returns the status line (text, never raising on -ERR)."""
    conn._putcmd(line)
    try:
        if multi:
            resp, lines, _ = conn._getlongresp()
            return resp.decode(), [l.decode() for l in lines]
        return conn._getresp().decode(), []
    except poplib.error_proto as e:
        reply = e.args[0]
        return (reply.decode() if isinstance(reply, bytes) else reply), []


def split(status):
    """(indicator, code, text) of a status line."""
    m = re.match(r"^(\+OK|-ERR)(?: \[([A-Z/-]+)\])?(?: (.*))?$", status)
    check(m is not None, f"not a status line: {status!r}")
    return m.group(1), m.group(2), m.group(3) or ""


def session(tag):
    """Every response of one session in language `tag`, as (command, status line)."""
    seen = []

    def do(conn, line, multi=False):
        status, lines = raw(conn, line, multi)
        seen.append((line, status))
        return status, lines

    c = poplib.POP3(host, port, timeout=30)
    status, _ = do(c, f"LANG {tag}")
    check(status.startswith(f"+OK {tag} "), status)
    status, lines = do(c, "LANG", multi=True)
    check(lines == ["en English", "bg Български"], lines)
    do(c, "CAPA", multi=True)
    do(c, "LANG de")
    do(c, "LANG en_US")
    do(c, "NOOP")
    do(c, "FROB")
    do(c, "PASS nothing")
    do(c, "APOP " + user + " " + "0" * 32)
    do(c, "UTF8")
    do(c, "AUTH", multi=True)
    do(c, "AUTH NOPE")
    do(c, "AUTH PLAIN !!!!")
    status, _ = raw(c, "AUTH PLAIN")
    check(status.startswith("+"), status)
    do(c, "*")
    raw(c, "AUTH PLAIN")
    do(c, "@@@@")
    do(c, "USER " + user)
    do(c, "PASS wrong " + password)
    do(c, "A" * 300)
    do(c, "USER " + user)
    status, _ = do(c, "PASS " + password)
    check(status.startswith("+OK"), status)

    # A second session for the same user finds the maildrop locked.
    other = poplib.POP3(host, port, timeout=30)
    raw(other, f"LANG {tag}")
    raw(other, "USER " + user)
    do(other, "PASS " + password)
    other.close()

    do(c, "STAT")
    do(c, "LIST", multi=True)
    do(c, "LIST 1")
    do(c, "LIST 99")
    do(c, "LIST x")
    do(c, "LIST 1 2")
    do(c, "RETR")
    do(c, "UIDL", multi=True)
    do(c, "UIDL 1")
    do(c, "RETR 1", multi=True)
    do(c, "TOP 1 0", multi=True)
    do(c, "DELE 1")
    do(c, "DELE 1")
    do(c, "RETR 1")
    do(c, "RSET")
    do(c, "USER " + user)
    do(c, "NOOP")
    do(c, "CAPA", multi=True)
    do(c, "QUIT")
    c.close()

    # STLS answers in the session's language (the test server has TLS configured).
    s = poplib.POP3(host, port, timeout=30)
    raw(s, f"LANG {tag}")
    do(s, "STLS")
    s.sock.close()

    # The bad-command limit closes the connection with its own text.
    b = poplib.POP3(host, port, timeout=30)
    raw(b, f"LANG {tag}")
    first, _ = raw(b, "FROB")
    for _ in range(100):
        status, _ = raw(b, "FROB")
        if status != first:
            break
    seen.append(("bad-command limit", status))
    b.sock.close()
    return seen


def numbers(text):
    return re.findall(r"\d+", text)


def text_of(command, status):
    indicator, code, text = split(status)
    if command.startswith("LANG ") and indicator == "+OK":
        text = text.split(" ", 1)[1]  # after the selected tag
    return indicator, code, text


en = session("en")
bg = session("bg")
check(len(en) == len(bg), "the sessions differ in length")
for (cmd_en, st_en), (cmd_bg, st_bg) in zip(en, bg):
    check(cmd_en.split(" ")[0] == cmd_bg.split(" ")[0], (cmd_en, cmd_bg))
    i_en, code_en, t_en = text_of(cmd_en, st_en)
    i_bg, code_bg, t_bg = text_of(cmd_bg, st_bg)
    check((i_en, code_en) == (i_bg, code_bg), f"{cmd_en}: {st_en!r} vs {st_bg!r}")
    check(t_en.isascii(), f"{cmd_en}: English text {t_en!r}")
    check(numbers(t_en) == numbers(t_bg), f"{cmd_en}: {t_en!r} vs {t_bg!r}")
    if cmd_en in DATA and i_en == "+OK":
        check(t_en == t_bg, f"{cmd_en}: data changed with the language: {t_bg!r}")
    else:
        check(CYRILLIC.search(t_bg), f"{cmd_en}: not translated: {st_bg!r}")
        check(t_en != t_bg, f"{cmd_en}: {t_bg!r}")

# The configured default greets, and LANG * selects it.
c = poplib.POP3(host, port, timeout=30)
greeting = c.getwelcome().decode()
check(bool(CYRILLIC.search(greeting)) == (default_tag == "bg"), greeting)
raw(c, "LANG en" if default_tag == "bg" else "LANG bg")
status, _ = raw(c, "LANG *")
check(status.startswith(f"+OK {default_tag} "), status)
c.quit()

print(f"{checks} checks passed; {len(bg)} responses compared in en and bg")
