"""Python's imaplib (and smtplib to deliver) against Tern, run by tests/tests/imap.rs.

Usage: imaplib_client.py PHASE IMAP_PORT IMAPS_PORT CA_CERT_PEM MX_PORT

Phases, each run by the Rust test, which checks the mailbox in between:
  send      delivers MESSAGE to alice@example.com with smtplib over the MX port.
  starttls  IMAP on the plain port: CAPABILITY (STARTTLS, LOGINDISABLED), LOGIN refused before
            TLS, STARTTLS with the certificate as the only trust anchor, LOGIN, LIST, SELECT,
            FETCH of flags, size and the whole message (BODY.PEEK[], then BODY[] which sets
            \\Seen), STORE, SEARCH and UID SEARCH, COPY to Archive; LOGOUT.
  tls       IMAP over implicit TLS: APPEND with flags and a date, UID MOVE to Trash, STORE
            \\Deleted and EXPUNGE, EXAMINE; then IDLE (imaplib has no helper: raw IDLE and
            DONE) while a second connection appends, flags and expunges, and smtplib delivers.
  compress  COMPRESS DEFLATE (RFC 4978) over implicit TLS, with zlib's raw deflate on a raw
            socket (imaplib has no support): SELECT, FETCH of the whole message, a second
            COMPRESS (NO [COMPRESSIONACTIVE]) and LOGOUT, all compressed both ways.

Results go to standard output, one "key value" line each, binary values in base64. Exits
non-zero with a message on the first surprise.
"""

import base64
import imaplib
import re
import smtplib
import ssl
import sys
import time
import zlib

HOST = "127.0.0.1"
USER = "alice@example.com"
PASSWORD = "alice-pw"

# An empty line, lines with dots and a non-ASCII line in 8 bits: what SMTP and IMAP must carry
# through unchanged.
MESSAGE = (
    b"From: Python <python@remote.example>\r\n"
    b"To: alice@example.com\r\n"
    b"Subject: imaplib round trip\r\n"
    b"Message-ID: <imaplib-round-trip@remote.example>\r\n"
    b"\r\n"
    b"first line\r\n"
    b".\r\n"
    b"..two dots\r\n"
    b"\r\n"
    b"Gr\xc3\xbc\xc3\x9fe\r\n"
    b"last line\r\n"
)

APPENDED = (
    b"From: alice@example.com\r\n"
    b"To: bob@example.com\r\n"
    b"Subject: appended by imaplib\r\n"
    b"\r\n"
    b"a draft\r\n"
)


def expect(condition, what):
    if not condition:
        sys.exit(f"imaplib client: {what}")


def out(key, value):
    if isinstance(value, bytes):
        value = base64.b64encode(value).decode()
    print(f"{key} {value}", flush=True)


def ok(result, what):
    typ, data = result
    expect(typ == "OK", f"{what}: {typ} {data!r}")
    return data


def literal_of(data):
    """The first literal of a FETCH answer as imaplib returns it."""
    for item in data:
        if isinstance(item, tuple):
            return item[1]
    sys.exit(f"imaplib client: no literal in {data!r}")


def deliver(mx, body):
    with smtplib.SMTP(HOST, mx, local_hostname="python.test", timeout=10) as s:
        refused = s.sendmail("python@remote.example", [USER], body)
        expect(refused == {}, f"recipient refused: {refused}")


class Idle:
    """Raw IDLE on an imaplib connection."""

    def __init__(self, imap):
        self.imap = imap
        self.tag = imap._new_tag()
        imap.send(self.tag + b" IDLE\r\n")
        line = imap.readline()
        expect(line.startswith(b"+"), f"IDLE answered {line!r}")

    def wait_for(self, pattern, what):
        """Reads untagged responses until one matches; returns the lines read."""
        lines = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = self.imap.readline()
            expect(line, f"connection closed while waiting for {what} (got {lines!r})")
            lines.append(line)
            if re.match(pattern, line):
                return lines
        sys.exit(f"imaplib client: no {what} during IDLE (got {lines!r})")

    def done(self):
        self.imap.send(b"DONE\r\n")
        lines = []
        while True:
            line = self.imap.readline()
            expect(line, "connection closed after DONE")
            lines.append(line)
            if line.startswith(self.tag + b" "):
                expect(line.startswith(self.tag + b" OK"), f"IDLE ended with {line!r}")
                return lines


def main():
    phase = sys.argv[1]
    imap_port, imaps_port = int(sys.argv[2]), int(sys.argv[3])
    context = ssl.create_default_context(cafile=sys.argv[4])
    mx = int(sys.argv[5])

    if phase == "send":
        deliver(mx, MESSAGE)
        out("sent", MESSAGE)

    elif phase == "starttls":
        m = imaplib.IMAP4(HOST, imap_port, timeout=10)
        caps = m.capabilities
        expect("STARTTLS" in caps and "LOGINDISABLED" in caps, f"before TLS: {caps}")
        expect("AUTH=PLAIN" not in caps, f"logins offered before TLS: {caps}")
        typ, data = m._simple_command("LOGIN", USER, PASSWORD)
        expect(typ == "NO" and b"PRIVACYREQUIRED" in data[0], f"LOGIN before TLS: {typ} {data!r}")
        ok(m.starttls(ssl_context=context), "STARTTLS")
        caps = m.capabilities
        expect("AUTH=PLAIN" in caps and "STARTTLS" not in caps, f"after STARTTLS: {caps}")
        ok(m.login(USER, PASSWORD), "LOGIN")
        for name in ("IDLE", "MOVE", "UIDPLUS", "LITERAL+", "SPECIAL-USE"):
            expect(name in m.capabilities, f"no {name} in {m.capabilities}")
        listing = ok(m.list(), "LIST")
        out("list", b"\n".join(listing))
        count = ok(m.select("INBOX"), "SELECT")
        out("exists", count[0].decode())
        data = ok(m.fetch("1", "(UID FLAGS RFC822.SIZE)"), "FETCH FLAGS")
        out("meta", data[0])
        data = ok(m.fetch("1", "(BODY.PEEK[])"), "FETCH BODY.PEEK[]")
        out("peek", literal_of(data))
        data = ok(m.fetch("1", "(FLAGS)"), "FETCH FLAGS after PEEK")
        out("flags_after_peek", data[0])
        data = ok(m.fetch("1", "(BODY[])"), "FETCH BODY[]")
        out("body", literal_of(data))
        data = ok(m.fetch("1", "(FLAGS)"), "FETCH FLAGS after BODY[]")
        out("flags_after_body", data[0])
        data = ok(m.store("1", "+FLAGS", "(\\Flagged)"), "STORE")
        out("store", data[0])
        out("search_flagged", ok(m.search(None, "FLAGGED"), "SEARCH")[0])
        out("search_subject", ok(m.search(None, "SUBJECT", '"imaplib round trip"'), "SEARCH SUBJECT")[0])
        out("search_none", ok(m.search(None, "SUBJECT", "nothing-like-this"), "SEARCH none")[0])
        out("uid_search", ok(m.uid("SEARCH", "ALL"), "UID SEARCH")[0])
        typ, data = m.copy("1", "Archive")
        expect(typ == "OK", f"COPY: {typ} {data!r}")
        out("copy", data[0])
        typ, data = m.copy("1", "Nope")
        expect(typ == "NO" and b"TRYCREATE" in data[0], f"COPY to a missing folder: {typ} {data!r}")

        # OBJECTID (RFC 8474): a copy keeps its EMAILID, a renamed folder its MAILBOXID.
        data = ok(m.fetch("1", "(EMAILID)"), "FETCH EMAILID")
        email_id = re.search(rb"EMAILID \((M[0-9a-f]+)\)", data[0])
        expect(email_id, f"no EMAILID in {data!r}")
        ok(m.select("Archive"), "SELECT Archive")
        data = ok(m.fetch("*", "(EMAILID THREADID)"), "FETCH EMAILID of the copy")
        expect(email_id.group(1) in data[0] and b"THREADID NIL" in data[0], f"copy: {data!r} vs {email_id.group(1)!r}")
        data = ok(m.create("Projects"), "CREATE")
        created = re.search(rb"MAILBOXID \((F[0-9a-f]+)\)", data[0])
        expect(created, f"no MAILBOXID in the CREATE answer {data!r}")
        ok(m.rename("Projects", "Projects-2026"), "RENAME")
        data = ok(m.status("Projects-2026", "(MAILBOXID MESSAGES)"), "STATUS MAILBOXID")
        expect(created.group(1) in data[0], f"MAILBOXID after RENAME: {data!r} vs {created.group(1)!r}")
        out("objectid", "kept")

        # LIST-STATUS and ESEARCH, which imaplib has no methods for.
        typ, data = m._simple_command("LIST", '""', "INBOX", "RETURN", "(STATUS (MESSAGES UNSEEN))")
        expect(typ == "OK", f"LIST RETURN STATUS: {typ} {data!r}")
        out("list_status", m.response("STATUS")[1][0])
        typ, data = m.uid("SEARCH", "RETURN", "(COUNT MIN)", "ALL")
        expect(typ == "OK", f"UID SEARCH RETURN: {typ} {data!r}")
        out("esearch", m.response("ESEARCH")[1][0])

        ok(m.close(), "CLOSE")
        out("logout", m.logout()[0])

    elif phase == "tls":
        m = imaplib.IMAP4_SSL(HOST, imaps_port, ssl_context=context, timeout=10)
        expect("STARTTLS" not in m.capabilities, f"STARTTLS offered over TLS: {m.capabilities}")
        ok(m.login(USER, PASSWORD), "LOGIN")
        ok(m.select("INBOX"), "SELECT")
        date = imaplib.Time2Internaldate(1767225600)  # 2026-01-01 00:00:00 UTC
        data = ok(m.append("INBOX", "(\\Seen \\Draft)", date, APPENDED), "APPEND")
        out("append", data[0])
        uid = re.search(rb"APPENDUID \d+ (\d+)", data[0])
        expect(uid, f"no APPENDUID in {data!r}")
        uid = uid.group(1).decode()
        ok(m.noop(), "NOOP")
        data = ok(m.uid("FETCH", uid, "(FLAGS INTERNALDATE BODY.PEEK[])"), "UID FETCH of the appended message")
        out("appended_meta", data[0][0])
        out("appended_body", literal_of(data))
        ok(m.uid("MOVE", uid, "Trash"), "UID MOVE")
        # The COPYUID of MOVE comes in an untagged OK, the removal as an untagged EXPUNGE.
        out("move", m.response("COPYUID")[1][0])
        out("move_expunge", m.response("EXPUNGE")[1][0])
        ok(m.store("1", "+FLAGS", "(\\Deleted)"), "STORE \\Deleted")
        out("expunge", b" ".join(ok(m.expunge(), "EXPUNGE")))
        out("exists_after_expunge", ok(m.select("INBOX"), "SELECT again")[0].decode())
        out("archive", ok(m.select("Archive", readonly=True), "EXAMINE Archive")[0].decode())

        # IDLE in the (now empty) INBOX while a second connection changes it.
        ok(m.select("INBOX"), "SELECT for IDLE")
        other = imaplib.IMAP4_SSL(HOST, imaps_port, ssl_context=context, timeout=10)
        ok(other.login(USER, PASSWORD), "LOGIN of the second connection")
        idle = Idle(m)
        ok(other.append("INBOX", None, None, APPENDED), "APPEND by the other connection")
        out("idle_exists", b"".join(idle.wait_for(rb"\* 1 EXISTS", "EXISTS")))
        ok(other.select("INBOX"), "SELECT by the other connection")
        ok(other.store("1", "+FLAGS", "(\\Flagged)"), "STORE by the other connection")
        out("idle_flags", b"".join(idle.wait_for(rb"\* 1 FETCH .*\\Flagged", "FETCH FLAGS")))
        ok(other.store("1", "+FLAGS", "(\\Deleted)"), "STORE \\Deleted by the other connection")
        ok(other.expunge(), "EXPUNGE by the other connection")
        out("idle_expunge", b"".join(idle.wait_for(rb"\* 1 EXPUNGE", "EXPUNGE")))
        other.logout()
        deliver(mx, MESSAGE)
        out("idle_delivery", b"".join(idle.wait_for(rb"\* 1 EXISTS", "EXISTS after an SMTP delivery")))
        idle.done()
        data = ok(m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])"), "FETCH after IDLE")
        out("delivered_subject", literal_of(data))
        out("logout", m.logout()[0])

    elif phase == "compress":
        m = imaplib.IMAP4_SSL(HOST, imaps_port, ssl_context=context, timeout=10)
        ok(m.login(USER, PASSWORD), "LOGIN")
        expect("COMPRESS=DEFLATE" in m.capabilities or b"COMPRESS=DEFLATE" in ok(m.capability(), "CAPABILITY")[0],
               "no COMPRESS=DEFLATE after login")
        sock = m.sock
        sock.sendall(b"z1 COMPRESS DEFLATE\r\n")
        answer = m.readline()
        expect(answer.startswith(b"z1 OK"), f"COMPRESS: {answer!r}")
        deflate = zlib.compressobj(wbits=-15)
        inflate = zlib.decompressobj(wbits=-15)
        commands = b"z2 SELECT INBOX\r\nz3 FETCH 1 (BODY.PEEK[])\r\nz4 COMPRESS DEFLATE\r\n"
        sock.sendall(deflate.compress(commands) + deflate.flush(zlib.Z_SYNC_FLUSH))
        received, compressed = b"", 0
        deadline = time.time() + 10
        while b"z4 " not in received and time.time() < deadline:
            chunk = sock.recv(65536)
            expect(chunk, "the connection closed early")
            compressed += len(chunk)
            received += inflate.decompress(chunk)
        sock.sendall(deflate.compress(b"z5 LOGOUT\r\n") + deflate.flush(zlib.Z_SYNC_FLUSH))
        while b"z5 OK" not in received and time.time() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            compressed += len(chunk)
            received += inflate.decompress(chunk)
        out("compressed_session", received)
        out("compressed_bytes", compressed)

    else:
        sys.exit(f"imaplib client: unknown phase {phase}")


if __name__ == "__main__":
    main()
