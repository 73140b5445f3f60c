"""Fills an IMAP account with a known, varied mailbox for the import tests: nested and
non-ASCII folders, subscriptions, every system flag, keywords, internal dates, messages with
and without a Message-ID, 8-bit and large bodies.

usage: imap_populate.py HOST PORT USER PASSWORD INBOX_MESSAGES
"""

import imaplib
import random
import sys

host, port, user, password, inbox = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
rng = random.Random(20261206)
m = imaplib.IMAP4(host, port)
m.login(user, password)
# "Entwürfe" in modified UTF-7.
folders = {"INBOX": inbox, "Archive": 3, "Archive/2024": 30, "Entw&APw-rfe": 5, "Lists/rust": 20}
for f in folders:
    if f != "INBOX":
        m.create(f)
for f in ["INBOX", "Archive/2024", "Lists/rust"]:
    m.subscribe(f)
choices = ["\\Seen", "\\Answered", "\\Flagged", "\\Draft", "\\Deleted", "$Forwarded", "$Junk", "project-x"]
n = 0
for folder, count in folders.items():
    for i in range(count):
        n += 1
        flags = [f for f in choices if rng.random() < 0.3]
        date = imaplib.Time2Internaldate(1_700_000_000 + n * 3600 + rng.randrange(3600))
        header = f"From: Sender {n} <s{n}@example.org>\r\nTo: {user}@example.net\r\nSubject: message {n} in {folder}\r\n"
        if n % 7 != 0:
            header += f"Message-ID: <m{n}.{rng.randrange(10**9)}@example.org>\r\n"
        text = f"Body of message {n}.\r\nFrom the start of a line.\r\n>From quoted.\r\n"
        if n % 5 == 0:
            header += "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
            text += "Grüße, naïve café.\r\n"
        if n == 17:
            text += ("a long line of filler text for a larger message " * 2 + "\r\n") * 2500
        body = (header + "\r\n" + text).encode()
        typ, data = m.append(folder, "(" + " ".join(flags) + ")", date, body)
        assert typ == "OK", (folder, data)
m.logout()
print("appended", n)
