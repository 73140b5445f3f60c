"""Compares two IMAP accounts folder by folder: the same folders, and in each the same
messages byte for byte with the same flags (\\Recent aside) and internal dates; with --uids,
also the same UIDVALIDITY and UIDs. Prints "same N" or what differs, and exits 1 on a
difference.

usage: imap_compare.py [--uids] [--subscriptions] A B
where A and B are plain:HOST:PORT:USER:PASSWORD or tls:HOST:PORT:USER:PASSWORD
"""

import imaplib
import re
import ssl
import sys


def connect(spec):
    kind, host, port, user, password = spec.split(":", 4)
    if kind == "tls":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        m = imaplib.IMAP4_SSL(host, int(port), ssl_context=ctx)
    else:
        m = imaplib.IMAP4(host, int(port))
    m.login(user, password)
    return m


LIST = re.compile(rb'\((?P<attrs>[^)]*)\) (?:"(?P<delim>[^"]*)"|NIL) (?P<name>.+)$')


def folders(m, command="LIST"):
    typ, data = m.list() if command == "LIST" else m.lsub()
    out = set()
    for line in data:
        if not line:
            continue
        g = LIST.match(line)
        attrs, name = g.group("attrs").lower(), g.group("name").decode()
        if b"\\noselect" in attrs or b"\\nonexistent" in attrs:
            continue
        if name.startswith('"'):
            name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out.add(name)
    return out


ITEM = re.compile(rb"UID (\d+)|FLAGS \(([^)]*)\)|INTERNALDATE \"([^\"]+)\"")


def snapshot(m, folder):
    typ, data = m.select('"' + folder + '"', readonly=True)
    assert typ == "OK", (folder, data)
    uidvalidity = m.response("UIDVALIDITY")[1][0]
    typ, data = m.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE BODY.PEEK[])")
    messages = []
    for part in data:
        if not isinstance(part, tuple):
            continue
        uid, flags, date = None, None, None
        for g in ITEM.finditer(part[0]):
            if g.group(1):
                uid = int(g.group(1))
            if g.group(2) is not None:
                flags = tuple(sorted(f for f in g.group(2).decode().split() if f != "\\Recent"))
            if g.group(3):
                date = imaplib.Internaldate2tuple(b'INTERNALDATE "' + g.group(3) + b'"')
        messages.append((uid, flags, date, part[1]))
    messages.sort()
    return uidvalidity, messages


def main():
    args = sys.argv[1:]
    uids = "--uids" in args
    subscriptions = "--subscriptions" in args
    a, b = [connect(s) for s in args if not s.startswith("--")]
    fa, fb = folders(a), folders(b)
    # Tern creates its special-use folders with every account; the source need not have them.
    missing = fa - fb
    if missing:
        sys.exit(f"folders missing on B: {sorted(missing)}")
    if subscriptions and folders(a, "LSUB") - folders(b, "LSUB"):
        sys.exit(f"subscriptions missing on B: {sorted(folders(a, 'LSUB') - folders(b, 'LSUB'))}")
    total = 0
    for folder in sorted(fa):
        va, ma = snapshot(a, folder)
        vb, mb = snapshot(b, folder)
        if uids and va != vb:
            sys.exit(f"{folder}: UIDVALIDITY {va} != {vb}")
        if not uids:
            ma = sorted((0,) + m[1:] for m in ma)
            mb = sorted((0,) + m[1:] for m in mb)
        if len(ma) != len(mb):
            sys.exit(f"{folder}: {len(ma)} messages != {len(mb)}")
        for x, y in zip(ma, mb):
            if x != y:
                what = [n for n, (p, q) in zip(["uid", "flags", "date", "body"], zip(x, y)) if p != q]
                sys.exit(f"{folder}: message {x[0]} differs in {what}: {x[:3]} vs {y[:3]}")
        total += len(ma)
    print("same", total)


main()
