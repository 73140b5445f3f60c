{{- /* The helm test's script (Python 3, standard library only): IMAP login, one message
submitted over SMTP to the test mailbox itself, and that message read back over IMAP. */ -}}
{{- define "tern.test.script" -}}
import imaplib, os, smtplib, socket, ssl, sys, time, uuid
from email.message import EmailMessage

env = os.environ
user, password = env["TEST_USER"], env["TEST_PASSWORD"]
tls_name = env["TEST_TLS_NAME"]
timeout = int(env["TEST_TIMEOUT_SECS"])
proxied = set(filter(None, env.get("TEST_PROXY_PROTOCOL", "").split(",")))


class Context(ssl.SSLContext):
    # Connects to the Services' in-cluster names, checks the certificate against hostname.
    def wrap_socket(self, sock, *args, server_hostname=None, **kwargs):
        return super().wrap_socket(sock, *args, server_hostname=tls_name, **kwargs)


ctx = Context(ssl.PROTOCOL_TLS_CLIENT)
if env["TEST_VERIFY_TLS"] == "true":
    ctx.load_default_certs()
else:
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

connect = socket.create_connection


def create_connection(address, *args, **kwargs):
    # A front-end with proxyProtocol refuses connections without a PROXY v2 header: send a
    # LOCAL one (no client address), as a load balancer's health check does.
    sock = connect(address, *args, **kwargs)
    if "%s:%s" % address in proxied:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20, 0x00, 0x00, 0x00]))
        # Let the server read the header alone before the TLS ClientHello follows.
        time.sleep(0.5)
    return sock


socket.create_connection = create_connection
imap_host, imap_port = env["TEST_IMAP_HOST"], int(env["TEST_IMAP_PORT"])
smtp_host, smtp_port = env["TEST_SMTP_HOST"], int(env["TEST_SMTP_PORT"])

imap = imaplib.IMAP4_SSL(imap_host, imap_port, ssl_context=ctx, timeout=30)
imap.login(user, password)
imap.select("INBOX")
print(f"IMAP {imap_host}:{imap_port}: logged in as {user}", flush=True)

token = uuid.uuid4().hex
msg = EmailMessage()
msg["From"] = msg["To"] = user
msg["Subject"] = f"Tern helm test {token}"
msg.set_content("Sent by helm test; deleted again once it arrived.\n")
with smtplib.SMTP_SSL(smtp_host, smtp_port, context=ctx, timeout=30) as smtp:
    smtp.login(user, password)
    smtp.send_message(msg)
print(f"SMTP {smtp_host}:{smtp_port}: submitted {msg['Subject']!r} to {user}", flush=True)

deadline = time.time() + timeout
while True:
    imap.noop()
    typ, data = imap.uid("SEARCH", None, "HEADER", "Subject", token)
    uids = data[0].split() if typ == "OK" and data and data[0] else []
    if uids:
        break
    if time.time() > deadline:
        sys.exit(f"the message did not arrive in {user}'s INBOX within {timeout} s")
    time.sleep(1)
print(f"IMAP: the message is in the INBOX (UID {uids[0].decode()}); deleting it", flush=True)
imap.uid("STORE", b",".join(uids), "+FLAGS", "(\\Deleted)")
imap.expunge()
imap.logout()
print("ok")
{{- end }}
