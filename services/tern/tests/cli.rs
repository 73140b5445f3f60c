//! The `tern` binary as a user runs it: `tern dev` on free loopback ports with its own data
//! directory, `tern admin` commands against it, and a restart that keeps everything.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

mod common;

use common::{Dev, TERN, free_port, http_get};

#[test]
fn admin_walkthrough_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(dir.path());

    assert!(dev.ok(&["domain", "add", "Example.COM", "--default-quota", "1G"]).contains("created domain example.com"));
    assert!(
        dev.ok(&["mailbox", "add", "alice@example.com", "--password", "pw", "--name", "Alice"]).contains("1.0 GiB")
    );
    assert!(dev.ok(&["mailbox", "add", "bob@example.com", "--password", "pw", "--quota", "10M"]).contains("10.0 MiB"));
    dev.ok(&["alias", "add", "postmaster@example.com", "alice@example.com"]);
    dev.ok(&["domain", "update", "example.com", "--catch-all", "alice"]);

    // Clear errors for bad input.
    assert!(dev.fails(&["domain", "add", "example.com"]).contains("already exists"));
    assert!(dev.fails(&["mailbox", "add", "carol@nowhere.test", "--password", "pw"]).contains("domain not found"));
    assert!(dev.fails(&["mailbox", "add", "not-an-address", "--password", "pw"]).contains("invalid address"));
    assert!(dev.fails(&["mailbox", "add", "alice@example.com", "--password", "pw"]).contains("already exists"));
    assert!(dev.fails(&["mailbox", "add", "dave@example.com"]).contains("password"));
    assert!(dev.fails(&["domain", "remove", "example.com"]).contains("still has"));
    assert!(
        dev.fails(&["mailbox", "add", "x@example.com", "--password", "pw", "--quota", "lots"]).contains("not a size")
    );

    let list = dev.ok(&["mailbox", "list"]);
    assert!(list.contains("alice@example.com") && list.contains("Alice") && list.contains("bob@example.com"), "{list}");
    let show = dev.ok(&["mailbox", "show", "alice@example.com"]);
    assert!(show.contains("postmaster@example.com") && show.contains("0 messages"), "{show}");
    assert!(dev.ok(&["domain", "list"]).contains("alice"));

    assert!(http_get(&dev.http, "/healthz").starts_with("HTTP/1.1 200"));
    assert!(http_get(&dev.http, "/readyz").starts_with("HTTP/1.1 200"));
    let metrics = http_get(&dev.http, "/metrics");
    assert!(metrics.contains("tern_grpc_requests_total{method=\"CreateAccount\""), "{metrics}");

    dev.stop();
    let dev = Dev::start(dir.path());
    let list = dev.ok(&["mailbox", "list", "example.com"]);
    assert!(list.contains("alice@example.com") && list.contains("bob@example.com"), "lost after restart: {list}");
    assert!(dev.ok(&["alias", "list"]).contains("postmaster@example.com"));
    dev.ok(&["mailbox", "update", "bob@example.com", "--suspend"]);
    assert!(dev.ok(&["mailbox", "list"]).lines().any(|l| l.starts_with("bob@example.com") && l.ends_with("yes")));
    dev.ok(&["mailbox", "remove", "bob@example.com"]);
    assert!(!dev.ok(&["mailbox", "list"]).contains("bob@example.com"));
    assert!(dir.path().join("tls/dev-cert.pem").exists(), "tern dev generates a development certificate");
}

#[test]
fn admin_sieve_round_trip_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let scripts = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = scripts.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let junk_text =
        "require \"fileinto\";\r\nif header :contains \"subject\" \"[SPAM]\" {\r\n  fileinto \"Junk\";\r\n}\r\n";
    let junk = file("junk.sieve", junk_text);
    let keep = file("keep.sieve", "keep;\n");
    let broken = file("broken.sieve", "require \"fileinto\";\nif true {\n  fileinto \"Junk\"\n}\n");

    let dev = Dev::start(dir.path());
    dev.ok(&["domain", "add", "example.com"]);
    dev.ok(&["mailbox", "add", "alice@example.com", "--password", "pw"]);
    let alice = "alice@example.com";
    let out = dev.ok(&["sieve", "put", alice, "junk", &junk, "--activate"]);
    assert!(out.contains("stored Sieve script \"junk\"") && out.contains("active"), "{out}");
    dev.ok(&["sieve", "put", alice, "keep", &keep]);

    // A syntax error names the file, the line and the column, exits non-zero, stores nothing.
    let err = dev.fails(&["sieve", "put", alice, "broken", &broken]);
    assert!(err.contains(&format!("{broken}: invalid Sieve script: line 4, column 1: ")), "{err}");
    assert!(dev.fails(&["sieve", "check", &broken]).contains("line 4, column 1"));
    assert!(dev.ok(&["sieve", "check", &junk]).contains("no errors"));
    assert!(dev.fails(&["sieve", "get", alice, "broken"]).contains("not found"));

    let listed = |dev: &Dev| -> Vec<(String, String)> {
        let out = dev.ok(&["sieve", "list", alice]);
        let rows = out.lines().skip(1).map(|l| l.split_whitespace().collect::<Vec<_>>());
        rows.map(|cols| (cols[0].to_string(), cols[cols.len() - 1].to_string())).collect()
    };
    let rows = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter().map(|(n, a)| (n.to_string(), a.to_string())).collect()
    };
    assert_eq!(listed(&dev), rows(&[("junk", "yes"), ("keep", "no")]));
    assert_eq!(dev.ok(&["sieve", "get", alice, "junk"]), junk_text, "the script comes back byte for byte");

    assert!(dev.fails(&["sieve", "delete", alice, "junk"]).contains("is active"));
    dev.ok(&["sieve", "activate", alice, "keep"]);
    dev.ok(&["sieve", "rename", alice, "keep", "away"]);
    assert!(dev.fails(&["sieve", "rename", alice, "away", "junk"]).contains("already exists"));
    assert_eq!(listed(&dev), rows(&[("away", "yes"), ("junk", "no")]));

    dev.stop();
    let dev = Dev::start(dir.path());
    assert_eq!(listed(&dev), rows(&[("away", "yes"), ("junk", "no")]), "kept across a restart");
    assert_eq!(dev.ok(&["sieve", "get", alice, "away"]), "keep;\n");
    dev.ok(&["sieve", "deactivate", alice]);
    assert_eq!(listed(&dev), rows(&[("away", "no"), ("junk", "no")]));
    dev.ok(&["sieve", "activate", alice, "junk"]);
    dev.ok(&["sieve", "activate", alice, "--none"]);
    assert_eq!(listed(&dev), rows(&[("away", "no"), ("junk", "no")]));
    dev.fails(&["sieve", "activate", alice]);
    dev.ok(&["sieve", "delete", alice, "junk"]);
    assert!(dev.fails(&["sieve", "delete", alice, "junk"]).contains("not found"));
    assert!(dev.fails(&["sieve", "list", "nobody@example.com"]).contains("not found"));
    assert_eq!(listed(&dev), rows(&[("away", "no")]));
}

#[test]
fn admin_without_server_says_so() {
    let port = free_port();
    let out = Command::new(TERN)
        .args(["admin", "--server", &format!("http://127.0.0.1:{port}"), "domain", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the mailbox service"));
}

#[test]
fn bad_config_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tern.toml");
    std::fs::write(&cfg, "[listen]\ngrpcc = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(TERN).args(["dev", "--config"]).arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid config file"));
}

/// An empty listener list turns a protocol off in `tern dev`, which says so and keeps running;
/// a role with nothing to serve refuses to start, non-zero and saying why.
#[test]
fn empty_listener_lists_turn_a_protocol_off() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tern.toml");
    std::fs::write(&cfg, "[pop3]\npop3 = []\npop3s = []\n").unwrap();
    // Free ports are found by binding and letting go, so a test running beside this one can
    // take one before tern dev binds it: that one reason (and only it) is worth another try.
    let mut attempt = 0;
    let (mut dev, printed) = loop {
        attempt += 1;
        // Every other protocol gets a free port; POP3 gets none, from the file.
        let (grpc, http) = (free_port(), free_port());
        let listen = |flag: &str| [flag.to_string(), format!("127.0.0.1:{}", free_port())];
        let mut args: Vec<String> = vec!["dev".into(), "--config".into(), cfg.to_str().unwrap().into()];
        args.extend([
            "--grpc-listen".into(),
            format!("127.0.0.1:{grpc}"),
            "--http-listen".into(),
            format!("127.0.0.1:{http}"),
        ]);
        for flag in [
            "--smtp-listen",
            "--submission-listen",
            "--submissions-listen",
            "--imap-listen",
            "--imaps-listen",
            "--managesieve-listen",
        ] {
            args.extend(listen(flag));
        }
        let errors = dir.path().join(format!("stderr-{attempt}"));
        let child = Command::new(TERN)
            .args(&args)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&errors).unwrap())
            .spawn()
            .unwrap();
        let mut dev = Dev { child, server: format!("http://127.0.0.1:{grpc}"), http: format!("127.0.0.1:{http}") };
        let mut stdout = std::io::BufReader::new(dev.child.stdout.take().unwrap());
        let mut printed = String::new();
        let mut stopped = false;
        while !printed.contains("Press Ctrl-C") {
            let mut line = String::new();
            if std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() == 0 {
                stopped = true;
                break;
            }
            printed.push_str(&line);
        }
        if !stopped {
            break (dev, printed);
        }
        let _ = dev.child.wait();
        let why = std::fs::read_to_string(&errors).unwrap_or_default();
        assert!(why.contains("in use") && attempt < 3, "tern dev stopped: {printed}\n{why}");
    };
    assert!(printed.contains("POP3               off"), "{printed}");
    assert!(printed.contains("IMAP "), "{printed}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(dev.child.try_wait().unwrap().is_none(), "tern dev exited with POP3 off");
    dev.ok(&["domain", "add", "off.test"]);
    assert!(dev.ok(&["domain", "list"]).contains("off.test"), "the rest of tern dev does not work");

    let out = Command::new(TERN)
        .args(["pop3", "--config", cfg.to_str().unwrap(), "--http-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.path().join("pop3"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "tern pop3 without listeners exited with success");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("nothing to serve") && said.contains("[pop3] pop3 and pop3s"), "{said}");
}

/// Each role's help lists the flags that role uses, and only those.
#[test]
fn each_role_lists_its_own_flags() {
    let help = |role: &str| {
        let out = Command::new(TERN).args([role, "--help"]).output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (dev, mailbox, smtp, imap, pop3, relay) =
        (help("dev"), help("mailbox"), help("smtp"), help("imap"), help("pop3"), help("relay"));
    for flag in
        ["--store ", "--store-replicas", "--store-prefix", "--blobs", "--grpc-listen", "--smtp-listen", "--imap-listen"]
    {
        assert!(dev.contains(flag), "dev lacks {flag}");
    }
    for flag in ["--store ", "--store-replicas", "--store-prefix", "--blobs", "--grpc-listen"] {
        assert!(mailbox.contains(flag), "mailbox lacks {flag}");
    }
    for (role, text) in [("smtp", &smtp), ("imap", &imap), ("pop3", &pop3), ("relay", &relay)] {
        assert!(text.contains("--mailbox-url"), "{role} lacks --mailbox-url");
        for flag in ["--store", "--blobs", "--grpc-listen"] {
            assert!(!text.contains(flag), "{role} lists {flag}, which it does not use");
        }
    }
    assert!(!mailbox.contains("--mailbox-url") && !mailbox.contains("--smtp-listen"));
    assert!(smtp.contains("--submission-listen") && !smtp.contains("--imap-listen") && !smtp.contains("--pop3-listen"));
    assert!(imap.contains("--imaps-listen") && !imap.contains("--smtp-listen"));
    assert!(pop3.contains("--pop3s-listen") && !pop3.contains("--imap-listen"));
    let managesieve = help("managesieve");
    assert!(managesieve.contains("--managesieve-listen") && managesieve.contains("--mailbox-url"));
    assert!(!managesieve.contains("--pop3-listen") && !managesieve.contains("--grpc-listen"));
    assert!(dev.contains("--managesieve-listen"), "dev lacks --managesieve-listen");
    for flag in ["--smtp-listen", "--imap-listen", "--pop3-listen"] {
        assert!(!relay.contains(flag), "relay lists {flag}");
    }
    assert!(relay.contains("--hostname"), "relay lacks --hostname");
}

/// Outbound mail as a user sends it: `tern dev` with `[relay]` pointed at a DNS server and an SMTP
/// receiver on loopback, a DKIM key from `tern admin domain dkim`, a message submitted with
/// Python's smtplib over STARTTLS and AUTH, the receiver getting it signed (verified by
/// dkimpy), and `tern admin queue` showing, retrying and deleting what is still deferred.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_mail_is_signed_relayed_and_managed_from_the_queue() {
    use tern_tests::relay::{Dns, Receiver, dkim_verify};
    let dns = Dns::start(&[("far.test", "MX", "10 mx.far.test"), ("mx.far.test", "A", "127.0.0.1")]);
    let receiver = Receiver::start(true, 1);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tern.toml");
    std::fs::write(
        &cfg,
        format!(
            "[relay]\nport = {}\ndns_server = \"{}\"\nretry_schedule_secs = [600]\npoll_interval_ms = 100\n",
            receiver.port, dns.addr
        ),
    )
    .unwrap();
    let submission = free_port();
    let dev = Dev::start_with(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap(), "--submission-listen", &format!("127.0.0.1:{submission}")],
    );
    dev.ok(&["domain", "add", "here.test"]);
    dev.ok(&["mailbox", "add", "ann@here.test", "--password", "secret"]);
    let published = dev.ok(&["domain", "dkim", "here.test", "--selector", "mail"]);
    let txt = published.lines().find_map(|l| l.split_once("IN TXT ")).map(|(_, v)| v.trim_matches('"').to_string());
    let txt = txt.unwrap_or_else(|| panic!("no TXT record in {published}"));
    assert!(dev.ok(&["domain", "show", "here.test"]).contains("mail._domainkey.here.test"));
    assert_eq!(dev.ok(&["domain", "dkim", "here.test", "--selector", "mail"]), published, "the key is kept");

    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", {submission}, timeout=30)
s.starttls(context=ctx)
s.login("ann@here.test", "secret")
msg = "From: Ann <ann@here.test>\r\nTo: bob@far.test\r\nSubject: over the relay\r\nMessage-ID: <r1@here.test>\r\n\r\nHello Bob.\r\n"
refused = s.sendmail("ann@here.test", ["bob@far.test", "tempfail@far.test"], msg)
assert not refused, refused
s.quit()
"#
    );
    let out = Command::new("python3").arg("-c").arg(&script).output().unwrap();
    assert!(out.status.success(), "smtplib: {}", String::from_utf8_lossy(&out.stderr));

    let got = receiver.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].rcpt_tos, ["bob@far.test"]);
    assert!(got[0].tls, "the relay used STARTTLS");
    let (pass, verdict) = dkim_verify(&got[0].path, &txt);
    assert!(pass, "dkimpy: {verdict}");

    // tempfail@ was deferred: the queue shows it, with the attempt; retry and delete work.
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = loop {
        let list = dev.ok(&["queue", "list"]);
        if let Some(line) = list.lines().find(|l| l.contains("tempfail@far.test") && !l.contains("being delivered")) {
            let id = line.split_whitespace().next().unwrap().to_string();
            if dev.ok(&["queue", "show", &id]).contains("attempt:") {
                break id;
            }
        }
        assert!(Instant::now() < deadline, "no deferred entry in {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let show = dev.ok(&["queue", "show", &id]);
    assert!(show.contains("451 4.3.0") && show.contains("mx.far.test [127.0.0.1]"), "{show}");
    assert!(dev.ok(&["queue", "retry", &id]).contains("is due now"));
    dev.ok(&["queue", "delete", &id]);
    assert!(dev.fails(&["queue", "show", &id]).contains("not found"));
    assert!(!dev.ok(&["queue", "list"]).contains(&id));
    let metrics = http_get(&dev.http, "/metrics");
    assert!(metrics.contains("tern_relay_recipients_total{result=\"delivered\"}"), "{metrics}");
    assert_eq!(receiver.messages().len(), 1, "delivered once");
    dev.stop();
}

/// Every protocol through `tern dev`, whose front-ends call its mailbox service in process:
/// Python's imaplib waits in IDLE over TLS while smtplib delivers (a client-streamed call), the
/// EXISTS arrives (the Watch stream), the body is fetched whole (the FetchBody stream), and
/// poplib retrieves the same bytes; a restart keeps it all.
#[test]
fn every_protocol_works_through_the_in_process_mailbox_api() {
    let dir = tempfile::tempdir().unwrap();
    let (mx, imaps, pop3s) = (free_port(), free_port(), free_port());
    let listen = [
        "--smtp-listen".to_string(),
        format!("127.0.0.1:{mx}"),
        "--imaps-listen".to_string(),
        format!("127.0.0.1:{imaps}"),
        "--pop3s-listen".to_string(),
        format!("127.0.0.1:{pop3s}"),
    ];
    let listen: Vec<&str> = listen.iter().map(String::as_str).collect();
    let dev = Dev::start_with(dir.path(), &listen);
    dev.ok(&["domain", "add", "example.com"]);
    dev.ok(&["mailbox", "add", "alice@example.com", "--password", "secret"]);
    let script = format!(
        r#"
import imaplib, poplib, smtplib, ssl, threading, time
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4_SSL("127.0.0.1", {imaps}, ssl_context=ctx)
m.login("alice@example.com", "secret")
m.select("INBOX")
tag = m._new_tag().decode()
m.send(f"{{tag}} IDLE\r\n".encode())
assert m.readline().startswith(b"+"), "no continuation for IDLE"
body = "From: bob@remote.example\r\nSubject: in process\r\n\r\n" + "line of text\r\n" * 2000
def send():
    time.sleep(0.3)
    s = smtplib.SMTP("127.0.0.1", {mx}, timeout=30)
    s.sendmail("bob@remote.example", ["alice@example.com"], body)
    s.quit()
threading.Thread(target=send).start()
m.sock.settimeout(20)
line = m.readline()
assert line.strip() == b"* 1 EXISTS", line
m.send(b"DONE\r\n")
while not m.readline().startswith(tag.encode()):
    pass
typ, data = m.fetch("1", "(BODY.PEEK[])")
imap_body = data[0][1]
assert imap_body.endswith(body.encode()), len(imap_body)
m.logout()
p = poplib.POP3_SSL("127.0.0.1", {pop3s}, context=ctx)
p.user("alice@example.com"); p.pass_("secret")
resp, lines, octets = p.retr(1)
assert b"\r\n".join(lines) + b"\r\n" == imap_body, "POP3 and IMAP differ"
p.quit()
print("ok", len(imap_body))
"#
    );
    let out = Command::new("python3").arg("-c").arg(&script).output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("ok"),
        "python: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    dev.stop();
}
