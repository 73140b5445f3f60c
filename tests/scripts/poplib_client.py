"""Python's poplib (and smtplib to deliver) against Tern, run by tests/tests/pop3.rs.

Usage: poplib_client.py PHASE POP3_PORT POP3S_PORT CA_CERT_PEM MX_PORT

Phases, each run by the Rust test, which checks the mailbox in between:
  send       delivers MESSAGE to alice@example.com with smtplib over the MX port.
  fetch      POP3 on the plain port: CAPA, USER refused before TLS, STLS with the certificate
             as the only trust anchor, USER/PASS, then STAT, LIST, LIST 1, UIDL, UIDL 1,
             TOP 1 0 and RETR 1; QUIT without deleting.
  dele-drop  POP3 over implicit TLS: AUTH PLAIN (poplib has no helper; a raw command), DELE 1,
             then the connection is dropped without QUIT.
  dele-quit  POP3 with STLS and USER/PASS: DELE 1 and QUIT.

Results go to standard output, one "key value" line each, binary values in base64. Exits
non-zero with a message on the first surprise.
"""

import base64
import poplib
import smtplib
import ssl
import sys
import time

HOST = "127.0.0.1"
USER = "alice@example.com"
PASSWORD = "alice-pw"

# A line that is a lone dot, lines starting with one and two dots, an empty line and a
# non-ASCII line: what dot-stuffing on both SMTP and POP3 must carry through unchanged.
MESSAGE = (
    b"From: Python <python@remote.example>\r\n"
    b"To: alice@example.com\r\n"
    b"Subject: poplib round trip\r\n"
    b"Message-ID: <poplib-round-trip@remote.example>\r\n"
    b"\r\n"
    b"first line\r\n"
    b".\r\n"
    b"..two dots\r\n"
    b".one dot\r\n"
    b"\r\n"
    b"Gr\xc3\xbc\xc3\x9fe\r\n"
    b".\r\n"
    b"last line\r\n"
)


def expect(condition, what):
    if not condition:
        sys.exit(f"poplib client: {what}")


def out(key, value):
    if isinstance(value, bytes):
        value = base64.b64encode(value).decode()
    print(f"{key} {value}", flush=True)


def retry_in_use(login):
    """Logs in, retrying for a few seconds while the last session's lease is being released."""
    for _ in range(50):
        try:
            return login()
        except poplib.error_proto as e:
            if b"[IN-USE]" not in e.args[0]:
                raise
            time.sleep(0.1)
    sys.exit("poplib client: the maildrop stayed in use")


def stls_login(port, context):
    def login():
        p = poplib.POP3(HOST, port, timeout=10)
        p.stls(context=context)
        p.user(USER)
        p.pass_(PASSWORD)
        return p

    return retry_in_use(login)


def main():
    phase = sys.argv[1]
    pop3, pop3s = int(sys.argv[2]), int(sys.argv[3])
    context = ssl.create_default_context(cafile=sys.argv[4])
    mx = int(sys.argv[5])

    if phase == "send":
        with smtplib.SMTP(HOST, mx, local_hostname="python.test", timeout=10) as s:
            refused = s.sendmail("python@remote.example", [USER], MESSAGE)
            expect(refused == {}, f"recipient refused: {refused}")
        out("sent", MESSAGE)

    elif phase == "fetch":
        p = poplib.POP3(HOST, pop3, timeout=10)
        expect(p.getwelcome().startswith(b"+OK"), f"greeting {p.getwelcome()!r}")
        caps = p.capa()
        expect("STLS" in caps, f"no STLS in {caps}")
        expect("USER" not in caps and "SASL" not in caps, f"logins offered before TLS: {caps}")
        for name in ("TOP", "UIDL", "RESP-CODES", "PIPELINING"):
            expect(name in caps, f"no {name} in {caps}")
        try:
            p.user(USER)
            expect(False, "USER accepted before TLS")
        except poplib.error_proto as e:
            expect(e.args[0].startswith(b"-ERR [AUTH]"), f"USER before TLS: {e.args[0]!r}")
        p.stls(context=context)
        caps = p.capa()
        expect("USER" in caps and caps.get("SASL") == ["PLAIN"], f"logins not offered after STLS: {caps}")
        expect("STLS" not in caps, f"STLS offered again: {caps}")
        p.user(USER)
        p.pass_(PASSWORD)
        count, size = p.stat()
        out("stat", f"{count} {size}")
        _, listing, _ = p.list()
        out("list", b"\n".join(listing))
        out("list1", p.list(1))
        _, uidls, _ = p.uidl()
        out("uidl", b"\n".join(uidls))
        out("uidl1", p.uidl(1))
        _, lines, _ = p.top(1, 0)
        out("top", b"".join(line + b"\r\n" for line in lines))
        resp, lines, octets = p.retr(1)
        out("retr_status", resp)
        out("retr", b"".join(line + b"\r\n" for line in lines))
        out("quit", p.quit())

    elif phase == "dele-drop":
        def login():
            p = poplib.POP3_SSL(HOST, pop3s, context=context, timeout=10)
            token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
            resp = p._shortcmd("AUTH PLAIN " + token)
            expect(resp.startswith(b"+OK"), f"AUTH PLAIN: {resp!r}")
            return p

        p = retry_in_use(login)
        count, _ = p.stat()
        expect(count == 1, f"expected one message before DELE, found {count}")
        out("dele", p.dele(1))
        # Dropped without QUIT: no TLS close_notify, no UPDATE state.
        p.file.close()
        p.sock.close()

    elif phase == "dele-quit":
        p = stls_login(pop3, context)
        count, _ = p.stat()
        expect(count == 1, f"expected the message to survive the dropped session, found {count}")
        out("dele", p.dele(1))
        out("quit", p.quit())

    else:
        sys.exit(f"poplib client: unknown phase {phase}")


if __name__ == "__main__":
    main()
