//! Clients that configure themselves: `tern dev` with a `[discovery]` section serves
//! Thunderbird's autoconfig, Outlook's Autodiscover, an Apple profile and the MTA-STS policy
//! over HTTPS, and Python fetches them as a client would (urllib, with the development
//! certificate unverified). The documents are read by real consumers: the autoconfig XML is
//! checked against Thunderbird's format with libxml2's `xmllint --schema` and parsed with
//! `xml.etree`, the Autodiscover response with `xml.etree`, the profile with `plistlib`, and
//! the policy with the relay's own MTA-STS parser (what Tern's relay believes of other
//! domains). Every server the documents name is the one configured, and the IMAPS and
//! submissions servers named really answer there. Hostile input gets a 400 that does not
//! repeat it.

mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::{Dev, free_port};
use serde_json::Value;

const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../crates/discovery/schema/clientConfig-v1.1.xsd");

/// Fetches every document from the server at argv[1] and prints what it found as JSON; writes
/// the autoconfig document to argv[2] for xmllint.
const CLIENT: &str = r#"
import imaplib, json, plistlib, smtplib, ssl, sys, urllib.error, urllib.parse, urllib.request
import xml.etree.ElementTree as ET

base, autoconfig_file = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE

def fetch(path, data=None, headers=None, method=None):
    req = urllib.request.Request(base + path, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()

def servers(provider, element):
    return [{
        "type": s.get("type"),
        "hostname": s.findtext("hostname"),
        "port": int(s.findtext("port")),
        "socketType": s.findtext("socketType"),
        "username": s.findtext("username"),
        "authentication": s.findtext("authentication"),
    } for s in provider.findall(element)]

def autoconfig(path, headers=None):
    status, h, body = fetch(path, headers=headers)
    root = ET.fromstring(body)
    provider = root.find("emailProvider")
    return {
        "status": status, "content_type": h.get("content-type"), "version": root.get("version"),
        "id": provider.get("id"), "domains": [d.text for d in provider.findall("domain")],
        "displayName": provider.findtext("displayName"),
        "incoming": servers(provider, "incomingServer"), "outgoing": servers(provider, "outgoingServer"),
    }, body

out = {}
out["autoconfig"], body = autoconfig("/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=alice%40Example.COM")
open(autoconfig_file, "wb").write(body)
out["autoconfig_host"], _ = autoconfig("/mail/config-v1.1.xml", {"Host": "autoconfig.example.org"})

REQUEST = """<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>{}</EMailAddress>
    <AcceptableResponseSchema>{}</AcceptableResponseSchema>
  </Request>
</Autodiscover>"""
OUTLOOK = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
NS = {"a": "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006", "o": OUTLOOK}

def autodiscover(path, address):
    status, h, body = fetch(path, REQUEST.format(address, OUTLOOK).encode(), {"Content-Type": "text/xml"})
    root = ET.fromstring(body)
    account = root.find("o:Response/o:Account", NS)
    return {
        "status": status, "content_type": h.get("content-type"),
        "account_type": account.findtext("o:AccountType", namespaces=NS),
        "action": account.findtext("o:Action", namespaces=NS),
        "protocols": [{tag: p.findtext("o:" + tag, namespaces=NS)
                       for tag in ["Type", "Server", "Port", "LoginName", "SSL", "Encryption", "AuthRequired"]}
                      for p in account.findall("o:Protocol", NS)],
    }

out["autodiscover"] = autodiscover("/autodiscover/autodiscover.xml", "alice@example.com")
out["Autodiscover"] = autodiscover("/Autodiscover/Autodiscover.xml", "o&apos;brien@example.com")

def profile(address):
    status, h, body = fetch("/apple/mail.mobileconfig?emailaddress=" + urllib.parse.quote(address, safe=""))
    plist = plistlib.loads(body)
    [payload] = plist["PayloadContent"]
    return {"status": status, "content_type": h.get("content-type"), "top": {k: v for k, v in plist.items() if k != "PayloadContent"}, "payload": payload}

out["profile"] = profile("alice@example.com")
out["profile_again"] = profile("alice@example.com")
out["profile_bob"] = profile("bob@example.com")
out["profile_quote"] = profile("o'brien@example.com")

status, h, body = fetch("/.well-known/mta-sts.txt", headers={"Host": "mta-sts.example.com"})
out["mta_sts"] = {"status": status, "content_type": h.get("content-type"), "text": body.decode()}

# The servers the autoconfig names answer (on loopback: the names are the configured ones).
imaps = next(s for s in out["autoconfig"]["incoming"] if s["socketType"] == "SSL")
with imaplib.IMAP4_SSL("127.0.0.1", imaps["port"], ssl_context=ctx, timeout=10) as imap:
    out["imaps_greeting"] = imap.welcome.decode()
smtps = next(s for s in out["autoconfig"]["outgoing"] if s["socketType"] == "SSL")
with smtplib.SMTP_SSL("127.0.0.1", smtps["port"], context=ctx, timeout=10) as smtp:
    out["submissions_ehlo"] = smtp.ehlo()[0]

hostile = {}
for name, address in [("markup", "<script>alert(1)</script>@example.com"), ("ampersand", "a&b@example.com"),
                      ("quoted", '"x y"@example.com'), ("long", "a" * 300 + "@example.com"),
                      ("long_local", "b" * 65 + "@example.com"), ("domain", "alice@exa<mple.com")]:
    for path in ["/.well-known/autoconfig/mail/config-v1.1.xml", "/apple/mail.mobileconfig"]:
        status, h, body = fetch(path + "?emailaddress=" + urllib.parse.quote(address, safe=""))
        hostile[name + " " + path] = {"status": status, "body": body.decode("utf-8", "replace"), "sent": address}
    status, h, body = fetch("/autodiscover/autodiscover.xml", REQUEST.format(address.replace("&", "&amp;").replace("<", "&lt;"), OUTLOOK).encode())
    hostile[name + " autodiscover"] = {"status": status, "body": body.decode("utf-8", "replace"), "sent": address}
for name, data in [("not xml", b"hello"), ("empty", b""),
                   ("doctype", b'<!DOCTYPE x [<!ENTITY e "a@example.com">]><Autodiscover><Request><EMailAddress>&e;</EMailAddress></Request></Autodiscover>'),
                   ("mobilesync", REQUEST.format("a@example.com", "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006").encode()),
                   ("too large", b"<Autodiscover>" + b" " * 20000 + b"</Autodiscover>")]:
    status, h, body = fetch("/autodiscover/autodiscover.xml", data, {"Content-Type": "text/xml"}, "POST")
    hostile["autodiscover " + name] = {"status": status, "body": body.decode("utf-8", "replace"), "sent": ""}
status, h, body = fetch("/autodiscover/autodiscover.xml")
hostile["autodiscover GET"] = {"status": status, "body": "", "sent": ""}
status, h, body = fetch("/mail/config-v1.1.xml", headers={"Host": "127.0.0.1"})
hostile["autoconfig without address"] = {"status": status, "body": body.decode(), "sent": ""}
status, h, body = fetch("/nothing-here")
hostile["unknown path"] = {"status": status, "body": body.decode(), "sent": ""}
out["hostile"] = hostile
print(json.dumps(out))
"#;

#[test]
fn clients_configure_themselves_from_the_documents_served_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tern.toml");
    std::fs::write(
        &cfg,
        "[smtp]\nhostname = \"mx.example.test\"\n\n\
         [discovery]\nimap_host = \"imap.example.test\"\nsmtp_host = \"smtp.example.test\"\n\
         display_name = \"Example Mail\"\nsubmission_port = 587\npop3_port = 0\n\
         mta_sts_mode = \"enforce\"\nmta_sts_max_age = 86400\nmta_sts_mx = [\"mx.example.test\", \"*.mx.example.test\"]\n",
    )
    .unwrap();
    let (https, imaps, imap, pop3s, submissions) = (free_port(), free_port(), free_port(), free_port(), free_port());
    let listen = |port: u16| format!("127.0.0.1:{port}");
    // These listeners come before the harness's own, so they are each protocol's first, which
    // the documents name.
    let dev = Dev::start_with(
        &dir.path().join("data"),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--discovery-listen",
            &listen(https),
            "--imaps-listen",
            &listen(imaps),
            "--imap-listen",
            &listen(imap),
            "--pop3s-listen",
            &listen(pop3s),
            "--submissions-listen",
            &listen(submissions),
        ],
    );
    dev.ok(&["domain", "add", "example.com"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", https)).is_err() {
        assert!(Instant::now() < deadline, "the discovery server does not listen on {https}");
        std::thread::sleep(Duration::from_millis(50));
    }

    let autoconfig_file = dir.path().join("autoconfig.xml");
    let out = Command::new("python3")
        .args(["-c", CLIENT, &format!("https://127.0.0.1:{https}")])
        .arg(&autoconfig_file)
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "the Python client failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();

    // Thunderbird's autoconfig: valid against the format, and naming the configured servers.
    let xmllint = Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema", SCHEMA])
        .arg(&autoconfig_file)
        .output()
        .expect("xmllint runs: install the Debian package libxml2-utils");
    assert!(
        xmllint.status.success(),
        "xmllint refuses the autoconfig document:\n{}\n{}",
        String::from_utf8_lossy(&xmllint.stderr),
        std::fs::read_to_string(&autoconfig_file).unwrap()
    );
    let a = &got["autoconfig"];
    assert_eq!(a["status"], 200);
    assert_eq!(a["content_type"], "application/xml; charset=utf-8");
    assert_eq!(
        (&a["version"], &a["id"], &a["domains"][0]),
        (&"1.1".into(), &"example.com".into(), &"example.com".into())
    );
    assert_eq!(a["displayName"], "Example Mail");
    let servers = |list: &Value| -> Vec<(String, String, u64, String)> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|s| {
                assert_eq!(
                    (&s["username"], &s["authentication"]),
                    (&"%EMAILADDRESS%".into(), &"password-cleartext".into())
                );
                (
                    s["type"].as_str().unwrap().to_string(),
                    s["hostname"].as_str().unwrap().to_string(),
                    s["port"].as_u64().unwrap(),
                    s["socketType"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let s = |t: &str, h: &str, p: u16, st: &str| (t.to_string(), h.to_string(), u64::from(p), st.to_string());
    assert_eq!(
        servers(&a["incoming"]),
        [
            s("imap", "imap.example.test", imaps, "SSL"),
            s("imap", "imap.example.test", imap, "STARTTLS"),
            // POP3 with STLS is turned off in [discovery] (pop3_port = 0); the host is [smtp]'s.
            s("pop3", "mx.example.test", pop3s, "SSL"),
        ]
    );
    assert_eq!(
        servers(&a["outgoing"]),
        [s("smtp", "smtp.example.test", submissions, "SSL"), s("smtp", "smtp.example.test", 587, "STARTTLS")]
    );
    // On autoconfig.<domain>, without an address, the domain comes from the host.
    let h = &got["autoconfig_host"];
    assert_eq!((&h["status"], &h["id"], &h["domains"][0]), (&200.into(), &"example.org".into(), &"example.org".into()));
    assert_eq!(h["incoming"], a["incoming"]);

    // Outlook's Autodiscover: the preferred server of each protocol, the address as login.
    for (key, login) in [("autodiscover", "alice@example.com"), ("Autodiscover", "o'brien@example.com")] {
        let d = &got[key];
        assert_eq!(
            (&d["status"], &d["content_type"]),
            (&200.into(), &"application/xml; charset=utf-8".into()),
            "{key}"
        );
        assert_eq!((&d["account_type"], &d["action"]), (&"email".into(), &"settings".into()));
        let protocols: Vec<(String, String, String, String)> = d["protocols"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                assert_eq!(
                    (&p["LoginName"], &p["SSL"], &p["AuthRequired"]),
                    (&login.into(), &"on".into(), &"on".into())
                );
                let field = |k: &str| p[k].as_str().unwrap().to_string();
                (field("Type"), field("Server"), field("Port"), field("Encryption"))
            })
            .collect();
        let p = |t: &str, h: &str, port: u16, e: &str| (t.into(), h.into(), port.to_string(), e.into());
        assert_eq!(
            protocols,
            [
                p("IMAP", "imap.example.test", imaps, "SSL"),
                p("POP3", "mx.example.test", pop3s, "SSL"),
                p("SMTP", "smtp.example.test", submissions, "SSL"),
            ],
            "{key}"
        );
    }

    // Apple's profile: one mail payload, stable UUIDs per address, the address back exactly.
    let p = &got["profile"];
    assert_eq!((&p["status"], &p["content_type"]), (&200.into(), &"application/x-apple-aspen-config".into()));
    assert_eq!((&p["top"]["PayloadType"], &p["top"]["PayloadVersion"]), (&"Configuration".into(), &1.into()));
    let payload = &p["payload"];
    for (key, value) in [
        ("PayloadType", Value::from("com.apple.mail.managed")),
        ("EmailAccountType", "EmailTypeIMAP".into()),
        ("EmailAddress", "alice@example.com".into()),
        ("IncomingMailServerHostName", "imap.example.test".into()),
        ("IncomingMailServerPortNumber", imaps.into()),
        ("IncomingMailServerUseSSL", true.into()),
        ("IncomingMailServerUsername", "alice@example.com".into()),
        ("IncomingMailServerAuthentication", "EmailAuthPassword".into()),
        ("OutgoingMailServerHostName", "smtp.example.test".into()),
        ("OutgoingMailServerPortNumber", submissions.into()),
        ("OutgoingMailServerUseSSL", true.into()),
        ("OutgoingMailServerUsername", "alice@example.com".into()),
    ] {
        assert_eq!(payload[key], value, "{key}");
    }
    let uuids = |p: &Value| (p["top"]["PayloadUUID"].clone(), p["payload"]["PayloadUUID"].clone());
    assert_eq!(uuids(p), uuids(&got["profile_again"]));
    assert_ne!(uuids(p), uuids(&got["profile_bob"]));
    assert_ne!(uuids(p).0, uuids(p).1);
    assert_eq!(got["profile_quote"]["payload"]["EmailAddress"], "o'brien@example.com");

    // The MTA-STS policy, as Tern's relay reads other domains' policies.
    let m = &got["mta_sts"];
    assert_eq!((&m["status"], &m["content_type"]), (&200.into(), &"text/plain; charset=utf-8".into()));
    let policy = tern_relay::mta_sts::parse(m["text"].as_str().unwrap()).unwrap();
    assert_eq!(policy.mode, tern_relay::mta_sts::Mode::Enforce);
    assert_eq!(policy.mx, ["mx.example.test", "*.mx.example.test"]);
    assert_eq!(policy.max_age, 86_400);
    assert!(policy.allows("mx.example.test") && policy.allows("b.mx.example.test") && !policy.allows("example.test"));

    // The servers named answer where the documents say.
    assert!(got["imaps_greeting"].as_str().unwrap().starts_with("* OK"), "{}", got["imaps_greeting"]);
    assert_eq!(got["submissions_ehlo"], 250);

    // Hostile input: refused with a reason, never repeated.
    let hostile = got["hostile"].as_object().unwrap();
    for (case, r) in hostile {
        let want = match case.as_str() {
            "autodiscover too large" => 413,
            "autodiscover GET" => 405,
            "unknown path" => 404,
            _ => 400,
        };
        assert_eq!(r["status"], want, "{case}: {r}");
        let (body, sent) = (r["body"].as_str().unwrap(), r["sent"].as_str().unwrap());
        assert!(sent.is_empty() || !body.contains(sent), "{case}: the answer repeats the input: {body}");
        assert!(!body.contains('<') && !body.contains("script"), "{case}: {body}");
    }
    for (case, says) in [
        ("markup /.well-known/autoconfig/mail/config-v1.1.xml", "local part"),
        ("long /apple/mail.mobileconfig", "longer than 254"),
        ("long_local autodiscover", "longer than 64"),
        ("domain /apple/mail.mobileconfig", "not a domain name"),
        ("autodiscover doctype", "document type"),
        ("autodiscover not xml", "not an Autodiscover request"),
        ("autodiscover empty", "empty"),
        ("autodiscover mobilesync", "only the response schema"),
        ("autoconfig without address", "?emailaddress="),
    ] {
        let body = hostile[case]["body"].as_str().unwrap();
        assert!(body.contains(says), "{case}: {body:?} does not say {says:?}");
    }
    dev.stop();
}

/// `tern dev` and every front-end role take `--discovery-listen`; the roles that have no
/// certificate to serve it with do not.
#[test]
fn the_front_end_roles_take_the_discovery_listener() {
    let help = |role: &str| {
        let out = Command::new(common::TERN).args([role, "--help"]).output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for role in ["dev", "smtp", "imap", "pop3", "managesieve"] {
        assert!(help(role).contains("--discovery-listen"), "{role} lacks --discovery-listen");
    }
    for role in ["mailbox", "relay"] {
        assert!(!help(role).contains("--discovery-listen"), "{role} lists --discovery-listen");
    }
}
