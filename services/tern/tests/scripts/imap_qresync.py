"""A QRESYNC client (RFC 7162) that caches every folder of an account, then checks that a
resync against the cache sees no change: the same UIDVALIDITY and HIGHESTMODSEQ, no VANISHED
and no FETCH in the SELECT (QRESYNC ...) response, and the same messages, flags, MODSEQs and
bodies when read again.

usage: imap_qresync.py record|check HOST PORT USER PASSWORD CACHE_FILE
"""

import imaplib
import json
import re
import ssl
import sys

mode, host, port, user, password, cache_file = sys.argv[1:7]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4_SSL(host, int(port), ssl_context=ctx)
m.login(user, password)
typ, data = m._simple_command("ENABLE", "QRESYNC")
assert typ == "OK", data

FETCH = re.compile(rb"UID (\d+)|FLAGS \(([^)]*)\)|MODSEQ \((\d+)\)")


def folders():
    typ, data = m.list()
    names = []
    for line in data:
        name = line.rsplit(b' "/" ', 1)[1].decode()
        names.append(name.strip('"'))
    return sorted(names)


def messages():
    typ, data = m.uid("FETCH", "1:*", "(UID FLAGS MODSEQ BODY.PEEK[])")
    out = {}
    for part in data:
        if not isinstance(part, tuple):
            continue
        uid = flags = modseq = None
        for g in FETCH.finditer(part[0]):
            if g.group(1):
                uid = int(g.group(1))
            if g.group(2) is not None:
                flags = sorted(f for f in g.group(2).decode().split() if f != "\\Recent")
            if g.group(3):
                modseq = int(g.group(3))
        out[str(uid)] = [flags, modseq, part[1].decode("latin-1")]
    return out


def status_of(response_name):
    value = m.untagged_responses.get(response_name)
    return value[0].decode() if value else None


if mode == "record":
    cache = {}
    for f in folders():
        typ, data = m.select('"%s"' % f, readonly=True)
        assert typ == "OK", data
        uidvalidity = m.untagged_responses["UIDVALIDITY"][0].decode()
        highest = m.untagged_responses["HIGHESTMODSEQ"][0].decode()
        cache[f] = {"uidvalidity": uidvalidity, "highestmodseq": highest, "messages": messages()}
    json.dump(cache, open(cache_file, "w"))
    print("recorded", sum(len(v["messages"]) for v in cache.values()))
else:
    cache = json.load(open(cache_file))
    assert folders() == sorted(cache), (folders(), sorted(cache))
    checked = 0
    for f, c in cache.items():
        uids = ",".join(c["messages"]) or "1"
        # Every response to the resync is read: a restore that changed anything shows here.
        tag = m._new_tag().decode()
        m.send(f'{tag} EXAMINE "{f}" (QRESYNC ({c["uidvalidity"]} {c["highestmodseq"]} {uids}))\r\n'.encode())
        lines = []
        while True:
            line = m.readline()
            if line.startswith(tag.encode()):
                assert b" OK " in line, line
                break
            lines.append(line)
        m.state = "SELECTED"
        said = b"".join(lines)
        assert b"VANISHED" not in said and b"FETCH" not in said, (f, said)
        assert f"[UIDVALIDITY {c['uidvalidity']}]".encode() in said, (f, said)
        assert f"[HIGHESTMODSEQ {c['highestmodseq']}]".encode() in said, (f, said)
        now = messages()
        assert now == c["messages"], (f, sorted(now), sorted(c["messages"]))
        checked += len(now)
    print("unchanged", checked)
m.logout()
