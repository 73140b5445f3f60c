//! `tern admin import` and `tern admin export` as an administrator runs them, against `tern
//! dev` and a real Dovecot of the test's own (Debian's packages, on loopback): import over IMAP
//! and from Dovecot's Maildir, compared message by message with Python's imaplib on both
//! servers (bytes, flags, keywords, internal dates, UIDs); reruns that copy nothing; an import
//! killed half-way and run again; an export that Dovecot serves with the same UIDs; mbox; and
//! the refusals (quota, broken messages) reported without stopping the run.

mod common;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{Dev, TERN, free_port};
use tern_tests::dovecot::Dovecot;

const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts");

/// `tern dev` with an IMAPS listener, and the port.
fn dev(dir: &Path) -> (Dev, u16) {
    let imaps = free_port();
    let dev = Dev::start_with(dir, &["--imaps-listen", &format!("127.0.0.1:{imaps}")]);
    dev.ok(&["domain", "add", "example.com"]);
    (dev, imaps)
}

fn python(script: &str, args: &[String]) -> String {
    let out = Command::new("python3").arg(format!("{SCRIPTS}/{script}")).args(args).output().expect("python3 runs");
    assert!(
        out.status.success(),
        "{script} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Compares two IMAP accounts (`plain:` or `tls:` specs), UIDs too when asked; returns how
/// many messages are the same.
fn same(a: &str, b: &str, uids: bool) -> u64 {
    let mut args = vec![a.to_string(), b.to_string(), "--subscriptions".to_string()];
    if uids {
        args.push("--uids".to_string());
    }
    let out = python("imap_compare.py", &args);
    out.trim().strip_prefix("same ").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("compare said {out}"))
}

/// The number before `label` in a report line such as `12 copied (3 KiB), 0 already here`.
fn count(report: &str, label: &str) -> u64 {
    let first = report.lines().find(|l| l.contains(label)).unwrap_or_else(|| panic!("no {label:?} in:\n{report}"));
    let before = &first[..first.find(label).unwrap()];
    let number = before.trim_end().rsplit([' ', ',', ':']).next().unwrap();
    number.parse().unwrap_or_else(|_| panic!("no count before {label:?} in {first:?}"))
}

fn import(dev: &Dev, args: &[&str]) -> String {
    let out = dev.admin(&[&["import"], args].concat());
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "tern admin import {args:?} failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dovecot_account_moves_in_over_imap_and_from_its_maildir_and_back_out() {
    let dovecot = Dovecot::start(&[("ann", "dove-pw"), ("back", "dove-pw")]).await;
    let port = dovecot.addr.port();
    let populated = python(
        "imap_populate.py",
        &["127.0.0.1".into(), port.to_string(), "ann".into(), "dove-pw".into(), "60".into()],
    );
    assert!(populated.contains("appended 118"), "{populated}");
    let dir = tempfile::tempdir().unwrap();
    let (dev, imaps) = dev(dir.path());
    dev.ok(&["mailbox", "add", "ann@example.com", "--password", "tern-pw"]);
    dev.ok(&["mailbox", "add", "disk@example.com", "--password", "tern-pw"]);
    let source = format!("plain:127.0.0.1:{port}:ann:dove-pw");
    let ann = format!("tls:127.0.0.1:{imaps}:ann@example.com:tern-pw");

    // Over IMAP, with two connections: everything arrives, with the source's UIDs.
    let url = format!("imap://127.0.0.1:{port}");
    let first = import(
        &dev,
        &["ann@example.com", &url, "--user", "ann", "--password", "dove-pw", "--connections", "2", "--keep-names"],
    );
    assert_eq!(count(&first, " copied"), 118, "{first}");
    assert!(first.contains("UIDs kept") && !first.contains("MISMATCH"), "{first}");
    assert_eq!(same(&source, &ann, true), 118);

    // A rerun copies nothing.
    let again = import(&dev, &["ann@example.com", &url, "--user", "ann", "--password", "dove-pw", "--keep-names"]);
    assert_eq!((count(&again, " copied"), count(&again, " already here")), (0, 118), "{again}");

    // New mail and a changed flag at the source: the next run brings exactly those.
    let script = format!(
        "import imaplib; m = imaplib.IMAP4('127.0.0.1', {port}); m.login('ann', 'dove-pw'); \
         m.append('INBOX', '(\\\\Flagged)', imaplib.Time2Internaldate(1_750_000_000), b'Subject: late\\r\\n\\r\\nlate\\r\\n'); \
         m.select('Lists/rust'); m.uid('STORE', '1:3', '+FLAGS', '(\\\\Seen $Done)'); m.logout()"
    );
    assert!(Command::new("python3").args(["-c", &script]).status().unwrap().success());
    let third = import(&dev, &["ann@example.com", &url, "--user", "ann", "--password", "dove-pw", "--keep-names"]);
    assert_eq!(count(&third, " copied"), 1, "{third}");
    assert!(count(&third, " flags updated") >= 1, "{third}");
    assert_eq!(same(&source, &ann, true), 119);

    // From Dovecot's Maildir directly: UIDs from dovecot-uidlist, keywords from
    // dovecot-keywords, flags from the file names, dates from the files.
    let maildir = dovecot.maildir("ann");
    let from_disk = import(&dev, &["disk@example.com", &format!("maildir:{}", maildir.display()), "--keep-names"]);
    assert_eq!(count(&from_disk, " copied"), 119, "{from_disk}");
    let disk = format!("tls:127.0.0.1:{imaps}:disk@example.com:tern-pw");
    assert_eq!(same(&source, &disk, true), 119);
    let again = import(&dev, &["disk@example.com", &maildir.display().to_string(), "--keep-names"]);
    assert_eq!(count(&again, " copied"), 0, "{again}");

    // Out again: an export Dovecot serves as the same mailbox, UIDs and all.
    let back = maildir.parent().unwrap().parent().unwrap().join("back");
    std::fs::create_dir_all(&back).unwrap();
    let exported = dev.ok(&["export", "ann@example.com", &back.join("Maildir").display().to_string()]);
    assert!(exported.contains("119 messages"), "{exported}");
    chown_nobody(&back);
    assert_eq!(same(&ann, &format!("plain:127.0.0.1:{port}:back:dove-pw"), true), 119);
    // Exporting again writes nothing new.
    let exported = dev.ok(&["export", "ann@example.com", &back.join("Maildir").display().to_string()]);
    assert!(exported.contains(" 0 messages") && exported.contains("119 there"), "{exported}");

    // A whole domain from a CSV, two accounts at once: one over IMAP with its password from
    // the environment, one from the Maildir. Without a terminal, progress comes as lines on
    // standard error (a Job's log), the report on standard output.
    dev.ok(&["mailbox", "add", "csv1@example.com", "--password", "tern-pw"]);
    dev.ok(&["mailbox", "add", "csv2@example.com", "--password", "tern-pw"]);
    let csv = dir.path().join("accounts.csv");
    std::fs::write(
        &csv,
        format!(
            "address,source,user,password\ncsv1@example.com,{url},ann,env:SOURCE_PW\ncsv2@example.com,maildir:{}\n",
            maildir.display()
        ),
    )
    .unwrap();
    let out = Command::new(TERN)
        .args(["admin", "--server", &dev.server, "import", "--keep-names", "--csv"])
        .arg(&csv)
        .env("SOURCE_PW", "dove-pw")
        .output()
        .unwrap();
    let (report, log) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{report}\n{log}");
    for account in ["csv1@example.com", "csv2@example.com"] {
        assert!(report.contains(&format!("{account}: 119 copied")), "{report}");
        assert!(log.contains(&format!("import {account}: 119 messages")), "{log}");
    }
    assert_eq!(same(&source, &format!("tls:127.0.0.1:{imaps}:csv1@example.com:tern-pw"), true), 119);
    drop(dovecot);
    dev.stop();
}

/// Dovecot's sessions run as nobody, who must own the Maildir it serves.
fn chown_nobody(path: &Path) {
    assert!(Command::new("chown").args(["-R", "65534:65534"]).arg(path).status().unwrap().success());
}

/// A Maildir of `n` messages written with Tern's own writer (UIDs 1..=n).
fn maildir_of(root: &Path, n: u32) {
    let mut w = tern_mailfmt::maildir::MaildirWriter::create(root).unwrap();
    let folder = tern_mailfmt::Folder { name: "INBOX".into(), uidvalidity: Some(4242), subscribed: true };
    let mut f = w.folder(&folder).unwrap();
    for uid in 1..=n {
        let body = format!(
            "Message-ID: <bulk{uid}@example.org>\r\nSubject: bulk {uid}\r\n\r\n{}\r\n",
            "text of a bulk message ".repeat(uid as usize % 50 + 1)
        );
        f.add(uid, &["\\Seen".to_string()], 1_700_000_000 + i64::from(uid), body.as_bytes()).unwrap();
    }
    f.finish(n + 1).unwrap();
    w.finish().unwrap();
}

/// Asserts that INBOX has UIDs 1..=n, each once, under [`maildir_of`]'s UIDVALIDITY 4242:
/// nothing doubled, nothing renumbered.
fn assert_inbox_uids(imaps: u16, user: &str, n: u32) {
    let script = format!(
        "import imaplib, ssl; c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE; \
         m = imaplib.IMAP4_SSL('127.0.0.1', {imaps}, ssl_context=c); m.login('{user}', 'tern-pw'); \
         t, d = m.select('INBOX', readonly=True); v = m.response('UIDVALIDITY')[1][0]; \
         t, u = m.uid('SEARCH', 'ALL'); print(v.decode(), u[0].decode() == ' '.join(str(i) for i in range(1, {n} + 1)))"
    );
    let out = Command::new("python3").args(["-c", &script]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "4242 True", "{}", String::from_utf8_lossy(&out.stderr));
}

fn messages_in(dev: &Dev, address: &str) -> u64 {
    let usage = dev.ok(&["usage", address]);
    count(&usage, " message")
}

/// Starts an import of 3000 messages in batches of 10, SIGKILLs it once at least 200 are in
/// (a killed pod), and gives how many are.
fn kill_half_way(dev: &Dev, address: &str, source: &[&str]) -> u64 {
    let mut child = Command::new(TERN)
        .args(["admin", "--server", &dev.server, "import", address])
        .args(source)
        .args(["--batch", "10"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = messages_in(dev, address);
        if n >= 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the import did not get going");
        assert!(child.try_wait().unwrap().is_none(), "the import ended before it could be killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let halfway = messages_in(dev, address);
    assert!(halfway < 3000, "killed too late to show anything ({halfway})");
    halfway
}

/// The same over IMAP from a Dovecot account, one connection: killed, run again, and the
/// account is the Dovecot one message for message, UIDs included.
#[tokio::test(flavor = "multi_thread")]
async fn an_import_over_imap_killed_half_way_finishes_without_duplicates() {
    let dovecot = Dovecot::start(&[("bulk", "dove-pw")]).await;
    let maildir = dovecot.maildir("bulk");
    maildir_of(&maildir, 3000);
    chown_nobody(maildir.parent().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let (dev, imaps) = dev(dir.path());
    dev.ok(&["mailbox", "add", "bulk@example.com", "--password", "tern-pw"]);
    let url = format!("imap://127.0.0.1:{}", dovecot.addr.port());
    let source = [url.as_str(), "--user", "bulk", "--password", "dove-pw", "--connections", "1"];
    let halfway = tokio::task::block_in_place(|| kill_half_way(&dev, "bulk@example.com", &source));
    let rest = import(&dev, &[&["bulk@example.com"][..], &source].concat());
    assert_eq!((count(&rest, " copied"), count(&rest, " already here")), (3000 - halfway, halfway), "{rest}");
    let dovecot_side = format!("plain:127.0.0.1:{}:bulk:dove-pw", dovecot.addr.port());
    assert_eq!(same(&dovecot_side, &format!("tls:127.0.0.1:{imaps}:bulk@example.com:tern-pw"), true), 3000);
    drop(dovecot);
    dev.stop();
}

#[test]
fn an_import_killed_half_way_finishes_on_the_next_run_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let (dev, imaps) = dev(dir.path());
    dev.ok(&["mailbox", "add", "bulk@example.com", "--password", "tern-pw"]);
    let source = dir.path().join("source");
    maildir_of(&source, 3000);
    let halfway = kill_half_way(&dev, "bulk@example.com", &[&source.display().to_string()]);
    let rest = import(&dev, &["bulk@example.com", &source.display().to_string()]);
    assert_eq!(count(&rest, " copied") + count(&rest, " already here"), 3000, "{rest}");
    assert_eq!(count(&rest, " already here"), halfway, "{rest}");
    assert_eq!(messages_in(&dev, "bulk@example.com"), 3000);
    // Every UID of the source once: nothing doubled, nothing renumbered.
    assert_inbox_uids(imaps, "bulk@example.com", 3000);
    dev.stop();
}

#[test]
fn mbox_quota_and_broken_messages_are_reported_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (dev, imaps) = dev(dir.path());
    dev.ok(&["mailbox", "add", "box@example.com", "--password", "tern-pw", "--quota", "3k"]);
    let mbox = dir.path().join("saved.mbox");
    std::fs::write(
        &mbox,
        "From alice@example.org Mon Jan  1 10:00:00 2024\nMessage-ID: <one@x>\nSubject: one\nStatus: RO\nX-Status: AF\n\
         X-Keywords: $Forwarded, project-x\n\nFirst.\n>From the quoted line.\n\n\
         From bob@example.org Tue Jan  2 11:30:00 2024\nMessage-ID: <two@x>\nSubject: two\n\nSecond, unread.\n\n\
         From carol@example.org Wed Jan  3 12:00:00 2024\nMessage-ID: <big@x>\nSubject: big\n\n"
            .to_string()
            + &"x".repeat(4000) + "\n",
    )
    .unwrap();
    // Over the quota: the run stops on it, says what to do, and keeps what fitted.
    let out = dev.admin(&["import", "box@example.com", &mbox.display().to_string()]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && said.contains("--ignore-quota"), "{said}");
    assert_eq!(messages_in(&dev, "box@example.com"), 2, "what fitted is kept");
    // Told to ignore it, the next run copies the rest, once.
    let rest = import(&dev, &["box@example.com", &mbox.display().to_string(), "--ignore-quota"]);
    assert_eq!(count(&rest, " copied") + count(&rest, " already here"), 3, "{rest}");
    let again = import(&dev, &["box@example.com", &format!("mbox:{}", mbox.display())]);
    assert_eq!((count(&again, " copied"), count(&again, " already here")), (0, 3), "{again}");
    let script = format!(
        "import imaplib, ssl; c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE; \
         m = imaplib.IMAP4_SSL('127.0.0.1', {imaps}, ssl_context=c); m.login('box@example.com', 'tern-pw'); \
         m.select('INBOX', readonly=True); t, d = m.fetch('1', '(FLAGS INTERNALDATE BODY.PEEK[])'); print(d[0][0].decode()); \
         print(d[0][1].decode())"
    );
    let out = String::from_utf8(Command::new("python3").args(["-c", &script]).output().unwrap().stdout).unwrap();
    for want in ["\\Seen", "\\Answered", "\\Flagged", "$Forwarded", "project-x", "01-Jan-2024 10:00:00 +0000"] {
        assert!(out.contains(want), "{want} missing from {out}");
    }
    assert!(out.contains("\r\nFrom the quoted line.\r\n") && !out.contains("Status:"), "{out}");

    // An old mbox into a folder of its own.
    dev.ok(&["mailbox", "add", "old@example.com", "--password", "tern-pw"]);
    let archived = import(&dev, &["old@example.com", &mbox.display().to_string(), "--into", "Old/2024"]);
    assert!(archived.contains("Old/2024") && archived.contains("from INBOX"), "{archived}");
    assert_eq!(count(&archived, " copied"), 3, "{archived}");
    assert_eq!(messages_in(&dev, "old@example.com"), 3);

    // Out as mbox files and in again elsewhere: the same messages, flags and dates.
    let out_dir = dir.path().join("exported-mbox");
    let exported = dev.ok(&["export", "box@example.com", &out_dir.display().to_string(), "--format", "mbox"]);
    assert!(exported.contains("3 messages"), "{exported}");
    dev.ok(&["mailbox", "add", "again@example.com", "--password", "tern-pw"]);
    let back = import(&dev, &["again@example.com", &format!("mbox:{}", out_dir.display()), "--ignore-quota"]);
    assert_eq!(count(&back, " copied"), 3, "{back}");
    let (a, b) = (
        format!("tls:127.0.0.1:{imaps}:box@example.com:tern-pw"),
        format!("tls:127.0.0.1:{imaps}:again@example.com:tern-pw"),
    );
    assert_eq!(same(&a, &b, false), 3);

    // Over implicit TLS with AUTHENTICATE PLAIN, the server's certificate verified against the
    // CA given (here Tern's own development certificate, Tern being the source).
    dev.ok(&["mailbox", "add", "tls@example.com", "--password", "tern-pw"]);
    let ca = dir.path().join("tls").join("dev-cert.pem");
    let url = format!("imaps://127.0.0.1:{imaps}");
    let over_tls = import(
        &dev,
        &[
            "tls@example.com",
            &url,
            "--user",
            "box@example.com",
            "--password",
            "tern-pw",
            "--auth-plain",
            "--source-ca",
            &ca.display().to_string(),
        ],
    );
    assert_eq!(count(&over_tls, " copied"), 3, "{over_tls}");
    assert_eq!(same(&a, &format!("tls:127.0.0.1:{imaps}:tls@example.com:tern-pw"), true), 3);
    // Without the CA the certificate is refused, and nothing is copied.
    let refused = dev.admin(&["import", "tls@example.com", &url, "--user", "box@example.com", "--password", "tern-pw"]);
    assert!(!refused.status.success(), "an unverifiable certificate was accepted");

    // A Maildir with an empty file among good ones: the empty one is refused by name, the
    // others copied, and the run succeeds.
    dev.ok(&["mailbox", "add", "md@example.com", "--password", "tern-pw"]);
    let md = dir.path().join("md");
    maildir_of(&md, 5);
    std::fs::write(md.join("cur").join("1700000099.broken.host:2,S"), "").unwrap();
    let report = import(&dev, &["md@example.com", &md.display().to_string()]);
    assert_eq!(count(&report, " copied"), 5, "{report}");
    assert!(report.contains("refused: INBOX") && report.contains("empty"), "{report}");

    // Another server's names for the special-use folders: by default their mail goes into
    // Tern's Sent and Trash (sub-folders following), where clients look for it.
    dev.ok(&["mailbox", "add", "named@example.com", "--password", "tern-pw"]);
    let named = dir.path().join("named");
    let mut w = tern_mailfmt::maildir::MaildirWriter::create(&named).unwrap();
    for (i, name) in ["Sent Items", "Sent Items/2023", "Deleted Messages"].into_iter().enumerate() {
        let folder = tern_mailfmt::Folder { name: name.into(), uidvalidity: Some(70 + i as u32), subscribed: true };
        let mut f = w.folder(&folder).unwrap();
        f.add(1, &[], 1_700_000_000, format!("Subject: in {name}\r\n\r\nx\r\n").as_bytes()).unwrap();
        f.finish(2).unwrap();
    }
    w.finish().unwrap();
    let mapped = import(&dev, &["named@example.com", &named.display().to_string()]);
    assert!(mapped.contains("from Sent Items/2023") && mapped.contains("from Deleted Messages"), "{mapped}");
    let script = format!(
        "import imaplib, ssl; c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE; \
         m = imaplib.IMAP4_SSL('127.0.0.1', {imaps}, ssl_context=c); m.login('named@example.com', 'tern-pw'); \
         print(' '.join(m.status(f, '(MESSAGES)')[1][0].decode().split()[-1].rstrip(')') for f in ['Sent', 'Sent/2023', 'Trash'])); \
         print(len([l for l in m.list()[1] if b'Items' in l or b'Deleted' in l]))"
    );
    let out = Command::new("python3").args(["-c", &script]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1 1 1\n0", "{}", String::from_utf8_lossy(&out.stderr));

    // A mailbox over its quota already still takes an import told to ignore it, once.
    let over = import(&dev, &["box@example.com", &mbox.display().to_string(), "--into", "Old", "--ignore-quota"]);
    assert_eq!(count(&over, " copied"), 3, "{over}");
    let again = import(&dev, &["box@example.com", &mbox.display().to_string(), "--into", "Old", "--ignore-quota"]);
    assert_eq!(count(&again, " copied"), 0, "{again}");
    dev.stop();
}

/// Mail with a history: appends in two folders, flag changes and expunges (so QRESYNC has
/// VANISHED to report), over IMAPS.
fn mail_with_history(imaps: u16, user: &str) {
    let script = format!(
        "import imaplib, ssl; c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE\n\
         m = imaplib.IMAP4_SSL('127.0.0.1', {imaps}, ssl_context=c); m.login('{user}', 'tern-pw')\n\
         m.create('Projects/Old')\n\
         for i in range(30):\n\
         \x20   folder = 'INBOX' if i % 3 else 'Projects/Old'\n\
         \x20   m.append(folder, '(\\\\Seen)' if i % 2 else '()', imaplib.Time2Internaldate(1_700_000_000 + i), \
         ('Subject: kept %d\\r\\nMessage-ID: <k%d@x>\\r\\n\\r\\n' % (i, i) + 'body %d\\r\\n' % i * (i + 1)).encode())\n\
         m.select('INBOX'); m.uid('STORE', '2:6', '+FLAGS', '(\\\\Flagged $Important)'); m.uid('STORE', '3', '+FLAGS', '(\\\\Deleted)'); m.expunge()\n\
         m.uid('STORE', '1', '-FLAGS', '(\\\\Seen)')\n\
         m.logout()"
    );
    let out = Command::new("python3").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn qresync(mode: &str, imaps: u16, user: &str, cache: &Path) -> String {
    python(
        "imap_qresync.py",
        &[
            mode.into(),
            "127.0.0.1".into(),
            imaps.to_string(),
            user.into(),
            "tern-pw".into(),
            cache.display().to_string(),
        ],
    )
}

/// Backup while serving, a wipe, a restore into the empty installation: a QRESYNC client that
/// cached every folder before the backup resyncs and sees no change, on `tern dev` with `extra`
/// arguments (the storage), which `fresh` gives anew for the installation restored into.
/// With `metadata_only`, the bodies stay in the body store and are copied to the new one
/// after the backup, as `aws s3 sync` would copy a bucket's prefix.
fn backup_wipe_restore(
    extra: &dyn Fn(&Path) -> Vec<String>,
    fresh: &dyn Fn(&Path) -> Vec<String>,
    metadata_only: bool,
) {
    let dir = tempfile::tempdir().unwrap();
    let (data, restored, backup) = (dir.path().join("data"), dir.path().join("restored"), dir.path().join("backup"));
    let imaps = free_port();
    let mut args = vec!["--imaps-listen".to_string(), format!("127.0.0.1:{imaps}")];
    args.extend(extra(&data));
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let dev = Dev::start_with(&data, &args_ref);
    dev.ok(&["domain", "add", "example.com"]);
    dev.ok(&["mailbox", "add", "kept@example.com", "--password", "tern-pw"]);
    mail_with_history(imaps, "kept@example.com");
    let cache = dir.path().join("cache.json");
    assert!(qresync("record", imaps, "kept@example.com", &cache).contains("recorded 29"));
    let out = if metadata_only {
        dev.ok(&["backup", &backup.display().to_string(), "--metadata-only"])
    } else {
        dev.ok(&["backup", &backup.display().to_string()])
    };
    assert!(out.contains("\"bodies\""), "{out}");
    assert_eq!(out.contains("bodies_left_in"), metadata_only, "{out}");
    // A backup goes into a new directory only.
    assert!(dev.fails(&["backup", &backup.display().to_string()]).contains("not empty"));
    dev.stop();
    if metadata_only {
        std::fs::create_dir_all(&restored).unwrap();
        let copied =
            Command::new("cp").arg("-r").arg(data.join("bodies")).arg(restored.join("bodies")).status().unwrap();
        assert!(copied.success());
    }

    // The installation is gone; a new, empty one takes the backup.
    let mut args = vec!["--imaps-listen".to_string(), format!("127.0.0.1:{imaps}")];
    args.extend(fresh(&restored));
    let store_args: Vec<String> = args[2..].to_vec();
    let restore = || {
        Command::new(TERN)
            .arg("restore")
            .arg(&backup)
            .arg("--data-dir")
            .arg(&restored)
            .args(&store_args)
            .output()
            .unwrap()
    };
    let out = restore();
    assert!(
        out.status.success(),
        "restore: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Restoring into the same installation again is refused: a restore never merges.
    assert!(!restore().status.success(), "a second restore into a non-empty installation was accepted");
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let dev = Dev::start_with(&restored, &args_ref);
    assert!(qresync("check", imaps, "kept@example.com", &cache).contains("unchanged 29"));
    dev.stop();
}

#[test]
fn an_embedded_installation_backed_up_while_serving_restores_to_the_same_imap_view() {
    backup_wipe_restore(&|_| Vec::new(), &|_| Vec::new(), false);
}

/// [`backup_wipe_restore`] on NATS: the installation on one nats-server, restored into a
/// fresh one, each with its own body directory.
fn nats_backup_wipe_restore(metadata_only: bool) {
    let nats = tern_testbed::Nats::start().expect("nats-server (the test tooling installs it)");
    let fresh = tern_testbed::Nats::start().expect("a second nats-server");
    let on = |url: String| {
        move |data: &Path| {
            vec!["--store".into(), url.clone(), "--blobs".into(), data.join("bodies").display().to_string()]
        }
    };
    backup_wipe_restore(&on(nats.url()), &on(fresh.url()), metadata_only);
}

#[test]
fn a_nats_installation_backed_up_while_serving_restores_to_the_same_imap_view() {
    nats_backup_wipe_restore(false);
}

/// NATS's snapshots alone, the bodies copied from their store after the backup: the order
/// (metadata first) that makes the pair consistent for an S3 bucket copied with its own tools.
#[test]
fn a_nats_metadata_backup_and_a_later_copy_of_the_bodies_restore_the_same_imap_view() {
    nats_backup_wipe_restore(true);
}

/// The same import into the distributed backend (metadata in NATS JetStream): the source's
/// UIDVALIDITY and UIDs kept through the log's entries, and a rerun that copies nothing.
#[test]
fn an_import_into_the_nats_backend_keeps_uids_and_reruns_copy_nothing() {
    let nats = tern_testbed::Nats::start().expect("nats-server (the test tooling installs it)");
    let dir = tempfile::tempdir().unwrap();
    let imaps = free_port();
    let bodies = dir.path().join("bodies").display().to_string();
    let dev = Dev::start_with(
        dir.path(),
        &["--imaps-listen", &format!("127.0.0.1:{imaps}"), "--store", &nats.url(), "--blobs", &bodies],
    );
    dev.ok(&["domain", "add", "example.com"]);
    dev.ok(&["mailbox", "add", "far@example.com", "--password", "tern-pw"]);
    let source = dir.path().join("source");
    maildir_of(&source, 300);
    let first = import(&dev, &["far@example.com", &source.display().to_string(), "--batch", "50"]);
    assert_eq!(count(&first, " copied"), 300, "{first}");
    assert!(first.contains("UIDs kept"), "{first}");
    let again = import(&dev, &["far@example.com", &source.display().to_string()]);
    assert_eq!((count(&again, " copied"), count(&again, " already here")), (0, 300), "{again}");
    assert_inbox_uids(imaps, "far@example.com", 300);
    dev.stop();
}
