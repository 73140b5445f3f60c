"""Python's smtplib against Tern's SMTP server, run by tests/tests/smtp.rs.

Usage: smtplib_client.py MX_PORT SUBMISSION_PORT SUBMISSIONS_PORT CA_CERT_PEM

Sends, on 127.0.0.1:
  - submission (STARTTLS, then AUTH PLAIN through login()): to a local and a remote recipient,
    and checks that a forged sender is refused;
  - submissions (implicit TLS, AUTH LOGIN): to a local recipient;
  - MX (no AUTH): to a local recipient, and checks that relaying is refused.
Exits non-zero with a message on the first surprise. The Rust test checks the mailbox.
"""

import smtplib
import ssl
import sys
from email.message import EmailMessage

HOST = "127.0.0.1"


def message(sender, recipients, subject):
    m = EmailMessage()
    m["From"] = sender
    m["To"] = ", ".join(recipients)
    m["Subject"] = subject
    m.set_content(f"{subject}\n.a line that starts with a dot\nGrüße\n")
    return m


def expect(condition, what):
    if not condition:
        sys.exit(f"smtplib client: {what}")


def main():
    mx, submission, submissions = (int(p) for p in sys.argv[1:4])
    context = ssl.create_default_context(cafile=sys.argv[4])

    with smtplib.SMTP(HOST, submission, local_hostname="python.test", timeout=10) as s:
        s.ehlo()
        expect(s.has_extn("starttls"), "submission does not offer STARTTLS")
        expect(not s.has_extn("auth"), "AUTH offered before TLS")
        s.starttls(context=context)
        s.ehlo()
        expect("PLAIN" in s.esmtp_features.get("auth", "").upper(), "no AUTH PLAIN after STARTTLS")
        s.login("alice@example.com", "alice-pw")
        refused = s.send_message(message("alice@example.com", ["bob@example.com"], "smtplib local"))
        expect(refused == {}, f"local recipient refused: {refused}")
        refused = s.send_message(message("alice@example.com", ["friend@remote.example"], "smtplib remote"))
        expect(refused == {}, f"remote recipient refused: {refused}")
        try:
            s.sendmail("bob@example.com", ["carol@example.com"], "Subject: forged\r\n\r\nno\r\n")
            expect(False, "a forged sender was accepted")
        except smtplib.SMTPSenderRefused as e:
            expect(e.smtp_code == 553, f"forged sender: expected 553, got {e.smtp_code}")

    with smtplib.SMTP_SSL(HOST, submissions, local_hostname="python.test", context=context, timeout=10) as s:
        s.ehlo()
        s.user, s.password = "alice@example.com", "alice-pw"
        code, _ = s.auth("LOGIN", s.auth_login)
        expect(code == 235, f"AUTH LOGIN answered {code}")
        refused = s.send_message(message("alice@example.com", ["bob@example.com"], "smtplib login"))
        expect(refused == {}, f"recipient refused after AUTH LOGIN: {refused}")

    with smtplib.SMTP(HOST, mx, local_hostname="python.test", timeout=10) as s:
        refused = s.send_message(message("someone@remote.example", ["carol@example.com"], "smtplib mx"))
        expect(refused == {}, f"MX refused a local recipient: {refused}")
        try:
            s.sendmail("someone@remote.example", ["other@remote.example"], "Subject: relay\r\n\r\nno\r\n")
            expect(False, "MX relayed to a remote domain")
        except smtplib.SMTPRecipientsRefused as e:
            code = e.recipients["other@remote.example"][0]
            expect(code == 550, f"relay attempt: expected 550, got {code}")

    print("smtplib client: ok")


if __name__ == "__main__":
    main()
