//! Spam filtering as an administrator sets it up and users live with it: `tern dev` with a
//! `[spam]` section pointing at a real rspamd (Debian's, with Redis, started by the harness),
//! mail sent with Python's smtplib, settings changed with `tern admin mailbox spam`, and
//! messages moved into and out of Junk with Python's imaplib, which teaches rspamd's per-user
//! statistics through the relay's learner.

mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::{Dev, free_port, http_get};
use tern_tests::rspamd::{GTUBE, Rspamd, SCORE_HEADER, ham_text, spam_text};

const ALICE: &str = "alice@example.com";

fn python(script: &str) -> String {
    let out = Command::new("python3").arg("-c").arg(script).output().expect("python3 runs");
    assert!(
        out.status.success(),
        "python: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `rspamd` holds `want` (spam, ham) learns for alice.
async fn learned(rspamd: &Rspamd, want: (u64, u64)) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = rspamd.learned_spam_ham(ALICE).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "rspamd holds {got:?} learns for {ALICE}, not {want:?}:\n{}",
            rspamd.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs rspamd and redis-server (Debian packages); run by cargo xtask ci"]
async fn spam_is_refused_filed_and_learned_from_moves() {
    let mut rspamd = Rspamd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tern.toml");
    std::fs::write(
        &cfg,
        format!(
            "[spam]\nrspamd_url = \"{}\"\ncontroller_url = \"{}\"\n\n[relay]\npoll_interval_ms = 100\n",
            rspamd.url, rspamd.controller
        ),
    )
    .unwrap();
    let (mx, imaps) = (free_port(), free_port());
    let dev = Dev::start_with(
        &dir.path().join("data"),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--smtp-listen",
            &format!("127.0.0.1:{mx}"),
            "--imaps-listen",
            &format!("127.0.0.1:{imaps}"),
        ],
    );
    dev.ok(&["domain", "add", "example.com"]);
    dev.ok(&["mailbox", "add", ALICE, "--password", "secret"]);
    let shown = dev.ok(&["mailbox", "spam", ALICE]);
    assert!(shown.contains("scan:         inherit") && shown.contains("junk folder:  Junk"), "{shown}");

    // Three messages from the Internet: GTUBE is refused at the end of DATA, an ordinary one
    // reaches INBOX, and one that scores "add header" reaches Junk.
    let send = format!(
        r#"
import smtplib
def msg(subject, extra, text):
    return ("From: Sender <sender@remote.example>\r\nTo: Alice <{ALICE}>\r\nSubject: " + subject +
            "\r\nMessage-ID: <" + subject.replace(" ", ".") + "@remote.example>\r\n" + extra + "\r\n" + text + "\r\n")
s = smtplib.SMTP("127.0.0.1", {mx}, timeout=30)
try:
    s.sendmail("sender@remote.example", ["{ALICE}"], msg("gtube", "", "{GTUBE}"))
    raise SystemExit("GTUBE was accepted")
except smtplib.SMTPDataError as e:
    print("refused", e.smtp_code, e.smtp_error.decode())
s.sendmail("sender@remote.example", ["{ALICE}"], msg("report", "", "{ham}"))
s.sendmail("sender@remote.example", ["{ALICE}"], msg("offer", "{SCORE_HEADER}: 7\r\n", "{spam}"))
s.quit()
"#,
        ham = ham_text(1),
        spam = spam_text(1),
    );
    let said = python(&send);
    assert!(said.contains("refused 550 5.7.1 Gtube pattern"), "{said}");

    // The user sees the verdicts, moves the report into Junk (it was spam after all) and the
    // offer out of it (it was wanted), and empties nothing.
    let imap = format!(
        r#"
import imaplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4_SSL("127.0.0.1", {imaps}, ssl_context=ctx)
m.login("{ALICE}", "secret")
def subjects(folder):
    m.select(folder)
    typ, data = m.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT X-SPAM-STATUS)])")
    return [d[1].decode() for d in data if isinstance(d, tuple)]
print("INBOX", subjects("INBOX"))
print("Junk", subjects("Junk"))
m.select("INBOX"); typ, data = m.uid("MOVE", "1", "Junk"); assert typ == "OK", data
m.select("Junk"); typ, data = m.uid("MOVE", "1", "INBOX"); assert typ == "OK", data
print("after", subjects("INBOX"), subjects("Junk"))
m.logout()
"#
    );
    let seen = python(&imap);
    let inbox_line = seen.lines().find(|l| l.starts_with("INBOX")).unwrap_or_default();
    let junk_line = seen.lines().find(|l| l.starts_with("Junk")).unwrap_or_default();
    assert!(inbox_line.contains("Subject: report") && inbox_line.contains("X-Spam-Status: No"), "{seen}");
    assert!(junk_line.contains("Subject: offer") && junk_line.contains("X-Spam-Status: Yes"), "{seen}");
    assert!(!seen.contains("gtube"), "{seen}");
    // The relay's learner teaches rspamd: one spam (the report moved in), one ham (the offer
    // moved out), for alice's own statistics.
    learned(&rspamd, (1, 1)).await;

    // Scanning off for alice: GTUBE is delivered to her INBOX.
    let off = dev.ok(&["mailbox", "spam", ALICE, "--scan", "off", "--allow", "@partner.example"]);
    assert!(off.contains("scan:         off") && off.contains("@partner.example"), "{off}");
    let send_gtube = format!(
        r#"
import smtplib
s = smtplib.SMTP("127.0.0.1", {mx}, timeout=30)
s.sendmail("sender@remote.example", ["{ALICE}"], "From: sender@remote.example\r\nSubject: again\r\n\r\n{GTUBE}\r\n")
s.quit()
print("accepted")
"#
    );
    assert!(python(&send_gtube).contains("accepted"));

    let metrics = http_get(&dev.http, "/metrics");
    for sample in [
        "tern_spam_scans_total{result=\"reject\"} 1",
        "tern_spam_scans_total{result=\"add header\"} 1",
        "tern_spam_failure_policy{policy=\"tempfail\"} 1",
        "tern_spam_learns_total{class=\"spam\",result=\"learned\"} 1",
        "tern_spam_learns_total{class=\"ham\",result=\"learned\"} 1",
        "tern_readiness_dependency_up{dependency=\"rspamd\"} 1",
        "tern_smtp_pregreet_rejections_total 0",
    ] {
        assert!(metrics.contains(sample), "no {sample} in\n{metrics}");
    }

    // rspamd stops: under the default policy (tempfail) the front-end says it is not ready, and
    // mail for a scanning recipient is deferred; alice, who scans nothing, still gets hers.
    dev.ok(&["mailbox", "add", "bob@example.com", "--password", "secret"]);
    assert!(http_get(&dev.http, "/readyz").contains("\r\n\r\nready"), "ready while rspamd is up");
    rspamd.stop();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http_get(&dev.http, "/readyz").contains("not ready: rspamd is unavailable") {
        assert!(Instant::now() < deadline, "still ready with rspamd stopped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = http_get(&dev.http, "/metrics");
    assert!(metrics.contains("tern_readiness_dependency_up{dependency=\"rspamd\"} 0"), "{metrics}");
    let deferred = format!(
        r#"
import smtplib
s = smtplib.SMTP("127.0.0.1", {mx}, timeout=30)
try:
    s.sendmail("sender@remote.example", ["bob@example.com"], "From: sender@remote.example\r\nSubject: later\r\n\r\ntext\r\n")
    print("accepted")
except smtplib.SMTPDataError as e:
    print("deferred", e.smtp_code, e.smtp_error.decode())
s.sendmail("sender@remote.example", ["{ALICE}"], "From: sender@remote.example\r\nSubject: now\r\n\r\ntext\r\n")
print("alice accepted")
s.quit()
"#
    );
    let said = python(&deferred);
    assert!(said.contains("deferred 451 4.7.1 Spam filter unavailable") && said.contains("alice accepted"), "{said}");
    dev.stop();
}
