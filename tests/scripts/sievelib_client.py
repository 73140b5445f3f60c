"""Python's sievelib (PyPI) against Tern's ManageSieve front-end, run by tests/tests/managesieve.rs.

Usage: sievelib_client.py PORT CA_CERT_PEM

Connects to 127.0.0.1:PORT with STARTTLS, the certificate as the only trust anchor (through
SSL_CERT_FILE, which Python's default context reads), logs in with PLAIN, then: CHECKSCRIPT of a
bad and a good script, HAVESPACE, PUTSCRIPT, SETACTIVE, LISTSCRIPTS, GETSCRIPT, RENAMESCRIPT,
DELETESCRIPT of the active script (refused), and LOGOUT.

Results go to standard output, one "key value" line each, binary values in base64. Exits
non-zero with a message on the first surprise.
"""

import base64
import os
import sys

from sievelib.managesieve import Client

USER = "alice@example.com"
PASSWORD = "alice-pw"

SCRIPT = (
    'require ["fileinto", "vacation"];\n'
    'if header :contains "Subject" "[list]" {\n'
    '    fileinto "Lists";\n'
    "}\n"
    'vacation :days 3 "Back on Monday. Grüße";\n'
)


def expect(condition, what):
    if not condition:
        sys.exit(f"sievelib client: {what}")


def out(key, value):
    if isinstance(value, str):
        value = value.encode()
    print(f"{key} {base64.b64encode(value).decode()}", flush=True)


def main():
    port, ca = int(sys.argv[1]), sys.argv[2]
    os.environ["SSL_CERT_FILE"] = ca
    client = Client("127.0.0.1", port, srvhostname="localhost")
    expect(client.connect(USER, PASSWORD, starttls=True, authmech="PLAIN"), f"login failed: {client.errmsg!r}")
    out("implementation", client.get_implementation())
    out("sieve", " ".join(client.get_sieve_capabilities()))
    expect(not client.checkscript('if true { keep }\n'), "a bad script passed CHECKSCRIPT")
    out("check_error", client.errmsg)
    expect(client.checkscript(SCRIPT), f"CHECKSCRIPT refused a good script: {client.errmsg!r}")
    expect(client.havespace("main", len(SCRIPT.encode())), f"HAVESPACE refused: {client.errmsg!r}")
    expect(client.putscript("main", SCRIPT), f"PUTSCRIPT failed: {client.errmsg!r}")
    expect(client.putscript("other", "keep;\n"), f"PUTSCRIPT failed: {client.errmsg!r}")
    expect(client.setactive("main"), f"SETACTIVE failed: {client.errmsg!r}")
    active, others = client.listscripts()
    out("active", active or "")
    out("others", ",".join(others))
    out("script", client.getscript("main"))
    expect(client.renamescript("other", "renamed"), f"RENAMESCRIPT failed: {client.errmsg!r}")
    expect(not client.deletescript("main"), "the active script was deleted")
    out("delete_code", client.errcode)
    expect(client.deletescript("renamed"), f"DELETESCRIPT failed: {client.errmsg!r}")
    active, others = client.listscripts()
    out("active_after", active or "")
    out("others_after", ",".join(others))
    client.logout()


if __name__ == "__main__":
    main()
