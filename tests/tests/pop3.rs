//! The POP3 front-end end to end over real loopback sockets: the transcripts of
//! `transcripts/pop3/` with the client's bytes cut at many boundaries; the maildrop lease across
//! two front-ends; stable UIDLs across sessions and a restart of the mailbox service; the
//! maildrop snapshot; the keep policy of DELE; STLS; line ends and dot-stuffing on the wire;
//! and real clients (Python's poplib, Debian's fetchmail).

use std::{net::SocketAddr, path::Path, process::Command, time::Duration};

use tern_pop3::config::{Limits, ListenerKind};
use tern_tests::{
    common::{ScriptOutput, play_served_transcript_file, run_client, run_python_script, run_transcript_dir},
    pop3::{Pop3Client, Pop3TestServer, Pop3Transcript, password_of},
    smtp::{BoxIo, Chunking, SmtpClient, run_steps},
};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

/// Every file in `transcripts/pop3/` is one scenario, played with the client's input cut in
/// several ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transcripts() {
    run_transcript_dir("pop3", 20, play_served_transcript_file::<Pop3Transcript>).await;
}

/// The transcript runner notices a wrong POP3 response, so that a passing transcript means
/// something.
#[tokio::test]
async fn transcript_runner_detects_differences() {
    let good = "S: +OK pop.test Tern POP3 ready\nC: USER alice@example.com\nS: +OK Send PASS\n\
                C: PASS alice-pw\nS: +OK Maildrop has 3 messages (263 octets)\nC: UIDL 1\n\
                S: +OK 1 {UIDVALIDITY}.1\nC: QUIT\nS: +OK pop.test signing off (0 messages deleted)\nCLOSED\n";
    let wrong_size = good.replace("263 octets", "264 octets");
    let wrong_uidl = good.replace("{UIDVALIDITY}.1", "{UIDVALIDITY}.2");
    let no_close = good.replace("CLOSED\n", "S: +OK\n");
    for (what, text, passes) in [
        ("good", good.to_string(), true),
        ("size", wrong_size, false),
        ("uidl", wrong_uidl, false),
        ("close", no_close, false),
    ] {
        let transcript = Pop3Transcript::parse(what, &text).expect("a well-formed transcript");
        let (server, uidvalidity) = transcript.server().await;
        let io = server.connect_io(&server.frontend, ListenerKind::Pop3).await;
        let mut client = SmtpClient::new(io).with_timeout(Duration::from_millis(500));
        let result = run_steps(&mut client, &transcript.steps(uidvalidity).unwrap(), Chunking::Whole).await;
        assert_eq!(result.is_ok(), passes, "{what}: {result:?}");
    }
}

/// How long a real client program may run.
const CLIENT_LIMIT: Duration = Duration::from_secs(30);

/// One phase of `scripts/poplib_client.py`; fails the test unless it succeeds, and returns its
/// `key value` lines.
async fn poplib(server: &Pop3TestServer, mx: SocketAddr, phase: &str) -> ScriptOutput {
    let args = [
        phase.to_string(),
        server.frontend.pop3.port().to_string(),
        server.frontend.pop3s.port().to_string(),
        server.ca_cert.display().to_string(),
        mx.port().to_string(),
    ];
    run_python_script("poplib_client.py", args, &format!("poplib phase {phase}"), CLIENT_LIMIT).await
}

/// The header of a message, with the empty line that ends it.
fn header(message: &[u8]) -> &[u8] {
    let end = message.windows(4).position(|w| w == b"\r\n\r\n").expect("a message with a body") + 4;
    &message[..end]
}

/// Python's poplib, a real client: a message delivered with smtplib over SMTP is read back
/// over STLS byte for byte (dot lines included); DELE then a dropped connection keeps it; DELE
/// then QUIT removes it. AUTH PLAIN over implicit TLS.
#[tokio::test]
async fn python_poplib_client() {
    let server = Pop3TestServer::start(Limits::default(), false).await;
    let (mx, _smtp) = server.start_mx().await;

    let sent = poplib(&server, mx, "send").await.decoded("sent");
    let (_, uidvalidity, messages) = server.inbox(ALICE).await;
    assert_eq!(messages.len(), 1, "the SMTP delivery did not arrive");
    let uid = messages[0].uid;
    let stored = server.body(ALICE, uid).await;
    assert!(stored.ends_with(&sent), "SMTP changed the message:\n{}", String::from_utf8_lossy(&stored));
    assert!(stored.starts_with(b"Received: "), "no trace header from SMTP");

    let fetched = poplib(&server, mx, "fetch").await;
    assert_eq!(fetched.value("stat"), format!("1 {}", stored.len()));
    assert_eq!(fetched.decoded("list"), format!("1 {}", stored.len()).into_bytes());
    assert_eq!(fetched.decoded("list1"), format!("+OK 1 {}", stored.len()).into_bytes());
    assert_eq!(fetched.decoded("uidl"), format!("1 {uidvalidity}.{uid}").into_bytes());
    assert_eq!(fetched.decoded("uidl1"), format!("+OK 1 {uidvalidity}.{uid}").into_bytes());
    assert_eq!(fetched.decoded("top"), header(&stored), "TOP 1 0 is not the stored header");
    let retr = fetched.decoded("retr");
    assert!(
        retr == stored,
        "RETR differs from the stored message:\n--- RETR\n{}\n--- stored\n{}",
        String::from_utf8_lossy(&retr),
        String::from_utf8_lossy(&stored)
    );
    assert!(fetched.decoded("quit").starts_with(b"+OK"));
    assert_eq!(server.inbox(ALICE).await.2.len(), 1, "QUIT without DELE removed something");

    let dropped = poplib(&server, mx, "dele-drop").await;
    assert!(dropped.decoded("dele").starts_with(b"+OK"));
    let (_, _, messages) = server.inbox(ALICE).await;
    assert_eq!(messages.len(), 1, "DELE without QUIT removed the message");
    assert!(messages[0].flags.is_empty(), "DELE without QUIT changed flags: {:?}", messages[0].flags);

    let quit = poplib(&server, mx, "dele-quit").await;
    assert!(quit.decoded("quit").starts_with(b"+OK"), "{quit:?}");
    assert!(server.inbox(ALICE).await.2.is_empty(), "DELE then QUIT did not remove the message");
}

/// One session per maildrop across front-ends (the lease lives in the mailbox service): a
/// login on a second POP3 server gets IN-USE while the first holds the maildrop, and works
/// once the first QUITs or its connection drops. Other accounts are not affected.
#[tokio::test]
async fn maildrop_is_in_use_across_frontends() {
    let mut server = Pop3TestServer::start(Limits::default(), false).await;
    server.deliver(ALICE, &tern_tests::message("lease", "one session at a time")).await;
    let second = server.start_frontend().await;

    let mut first = server.login(ALICE).await;
    assert_eq!(first.stat().await.0, 1);
    let mut other = Pop3Client::new(server.connect_io(&second, ListenerKind::Pop3s).await);
    other.greeting().await;
    other.ok(&format!("USER {ALICE}")).await;
    other.expect(&format!("PASS {}", password_of(ALICE)), "-ERR [IN-USE]").await;
    other.expect_closed().await.expect("the refused session closes");
    // AUTH PLAIN meets the same lock; another account is free.
    let mut other = Pop3Client::new(server.connect_io(&second, ListenerKind::Pop3s).await);
    other.greeting().await;
    let plain = tern_tests::smtp::auth_plain(ALICE, password_of(ALICE));
    other.expect(&format!("AUTH PLAIN {plain}"), "-ERR [IN-USE]").await;
    let bob = server.login_on(&second, BOB).await;
    bob.quit().await;

    // The first session did not notice, and its QUIT releases the maildrop at once.
    assert_eq!(first.stat().await.0, 1);
    first.quit().await;
    let mut taken = server.login_on(&second, ALICE).await;
    assert_eq!(taken.stat().await.0, 1);

    // A session that just drops (no QUIT) releases it too, well before the lease would expire.
    drop(taken);
    let start = std::time::Instant::now();
    loop {
        let mut c = Pop3Client::new(server.connect_io(&server.frontend, ListenerKind::Pop3s).await);
        c.greeting().await;
        c.ok(&format!("USER {ALICE}")).await;
        let status = c.command(&format!("PASS {}", password_of(ALICE))).await;
        if status.starts_with("+OK") {
            c.quit().await;
            break;
        }
        assert!(status.starts_with("-ERR [IN-USE]"), "{status}");
        assert!(start.elapsed() < Duration::from_secs(5), "the dropped session kept the maildrop locked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// UIDL of every message of a session.
async fn uidls(server: &Pop3TestServer) -> Vec<(u32, String)> {
    let mut c = server.login(ALICE).await;
    let list = c.listing("UIDL").await;
    c.quit().await;
    list
}

/// UIDLs stay the same across sessions, across a deletion of another message and across a
/// restart of the mailbox service; each is unique, and a new message never gets the UIDL of
/// one deleted before.
#[tokio::test]
async fn uidls_are_stable_and_unique() {
    let mut server = Pop3TestServer::start(Limits::default(), false).await;
    for n in 0..3 {
        server.deliver(ALICE, &tern_tests::message(&format!("uidl{n}"), "text")).await;
    }
    let first = uidls(&server).await;
    assert_eq!(first.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [1, 2, 3]);
    let ids: std::collections::HashSet<&String> = first.iter().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), 3, "UIDLs are not unique: {first:?}");
    for (_, id) in &first {
        assert!(id.len() <= 70 && id.bytes().all(|b| (0x21..=0x7e).contains(&b)), "RFC 1939 forbids UIDL {id:?}");
    }
    assert_eq!(uidls(&server).await, first, "UIDLs changed between sessions");

    let mut c = server.login(ALICE).await;
    c.ok("DELE 1").await;
    c.quit().await;
    let after_delete = uidls(&server).await;
    assert_eq!(after_delete, [(1, first[1].1.clone()), (2, first[2].1.clone())], "renumbered, same UIDLs");

    server.restart_mailbox().await;
    assert_eq!(uidls(&server).await, after_delete, "UIDLs changed across a restart of the mailbox service");
    server.deliver(ALICE, &tern_tests::message("uidl-new", "text")).await;
    let now = uidls(&server).await;
    assert_eq!(now.len(), 3);
    assert_eq!(now[..2], after_delete[..]);
    assert!(first.iter().all(|(_, id)| *id != now[2].1), "a new message reused the UIDL {}", now[2].1);
}

/// The maildrop is a snapshot taken at login: mail delivered during a session changes neither
/// STAT nor the numbering, and shows in the next session.
#[tokio::test]
async fn maildrop_is_a_snapshot() {
    let server = Pop3TestServer::start(Limits::default(), false).await;
    server.deliver(ALICE, &tern_tests::message("before1", "text")).await;
    server.deliver(ALICE, &tern_tests::message("before2", "text")).await;
    let mut c = server.login(ALICE).await;
    let stat = c.stat().await;
    assert_eq!(stat.0, 2);
    let list = c.listing("LIST").await;
    let uidl = c.listing("UIDL").await;

    let during = tern_tests::message("during", "delivered while a session is open");
    server.deliver(ALICE, &during).await;
    assert_eq!(server.inbox(ALICE).await.2.len(), 3, "the delivery did not arrive");
    assert_eq!(c.stat().await, stat);
    assert_eq!(c.listing("LIST").await, list);
    assert_eq!(c.listing("UIDL").await, uidl);
    c.expect("RETR 3", "-ERR").await;
    c.expect("LIST 3", "-ERR").await;
    c.ok("NOOP").await;
    assert_eq!(c.stat().await, stat);
    c.quit().await;

    let mut c = server.login(ALICE).await;
    assert_eq!(c.stat().await, (3, stat.1 + during.len() as u64));
    let (_, body) = c.multiline("RETR 3").await;
    assert_eq!(body, during);
    c.quit().await;
}

/// With the keep policy, DELE then QUIT hides the message from later POP3 sessions, but it is
/// still in the INBOX for IMAP, flagged `$POP3Deleted`.
#[tokio::test]
async fn keep_policy_hides_instead_of_expunging() {
    let server = Pop3TestServer::start(Limits::default(), false).await;
    server.set_pop3_keep(ALICE, true).await;
    let gone = server.deliver(ALICE, &tern_tests::message("keep1", "read over POP3, kept for IMAP")).await;
    let stays = tern_tests::message("keep2", "never deleted");
    let stays_uid = server.deliver(ALICE, &stays).await;

    let mut c = server.login(ALICE).await;
    assert_eq!(c.stat().await.0, 2);
    c.ok("DELE 1").await;
    assert!(c.quit().await.contains("1 messages deleted"));

    let mut c = server.login(ALICE).await;
    assert_eq!(c.stat().await, (1, stays.len() as u64));
    let uidl = c.listing("UIDL").await;
    assert_eq!(uidl.len(), 1);
    assert!(uidl[0].1.ends_with(&format!(".{stays_uid}")), "{uidl:?}");
    assert_eq!(c.multiline("RETR 1").await.1, stays);
    c.quit().await;

    let (_, _, messages) = server.inbox(ALICE).await;
    assert_eq!(messages.iter().map(|m| m.uid).collect::<Vec<_>>(), [gone, stays_uid], "kept message missing");
    assert!(messages[0].flags.iter().any(|f| f == "$POP3Deleted"), "no $POP3Deleted: {:?}", messages[0].flags);
    assert!(!messages[1].flags.iter().any(|f| f == "$POP3Deleted"), "{:?}", messages[1].flags);

    // With the default policy the same steps expunge.
    server.set_pop3_keep(ALICE, false).await;
    let mut c = server.login(ALICE).await;
    c.ok("DELE 1").await;
    c.quit().await;
    let (_, _, messages) = server.inbox(ALICE).await;
    assert_eq!(messages.iter().map(|m| m.uid).collect::<Vec<_>>(), [gone], "the expunge policy did not expunge");
}

/// With plain-text logins refused, USER, PASS and AUTH before TLS get `-ERR [AUTH]`; STLS
/// discards what the client pipelined after it in plain text, and logins work after it.
#[tokio::test]
async fn stls_is_required_and_discards_pipelined_input() {
    let server = Pop3TestServer::start(Limits::default(), false).await;
    server.deliver(ALICE, &tern_tests::message("stls", "text")).await;
    let mut c = server.connect(ListenerKind::Pop3).await;
    c.greeting().await;
    let (_, capa) = c.multiline("CAPA").await;
    let capa = String::from_utf8(capa).unwrap();
    assert!(capa.lines().any(|l| l == "STLS"), "{capa}");
    assert!(!capa.lines().any(|l| l == "USER" || l.starts_with("SASL")), "logins offered in plain text: {capa}");
    c.expect(&format!("USER {ALICE}"), "-ERR [AUTH]").await;
    c.expect(&format!("PASS {}", password_of(ALICE)), "-ERR [AUTH]").await;
    c.expect(&format!("AUTH PLAIN {}", tern_tests::smtp::auth_plain(ALICE, password_of(ALICE))), "-ERR [AUTH]").await;

    // STLS with a login pipelined behind it, in the same segment.
    c.send(format!("STLS\r\nUSER {ALICE}\r\nPASS {}\r\nNOOP\r\n", password_of(ALICE)).as_bytes()).await.unwrap();
    assert_eq!(c.read_status().await.unwrap(), "+OK Begin TLS negotiation");
    let (tcp, pending) = c.into_parts();
    assert!(pending.is_empty(), "the server answered pipelined commands before TLS: {pending:?}");
    let tls: BoxIo = Box::new(server.tls_handshake(tcp).await.expect("TLS handshake after STLS"));
    let mut c = Pop3Client::new(tls);
    // The first answer over TLS is CAPA's: nothing sent before the handshake was executed.
    let (status, capa) = c.multiline("CAPA").await;
    assert_eq!(status, "+OK Capability list follows");
    let capa = String::from_utf8(capa).unwrap();
    assert!(capa.lines().any(|l| l == "USER") && !capa.lines().any(|l| l == "STLS"), "{capa}");
    c.expect(&format!("PASS {}", password_of(ALICE)), "-ERR Send USER first").await;
    c.expect("STLS", "-ERR").await;
    c.ok(&format!("USER {ALICE}")).await;
    c.ok(&format!("PASS {}", password_of(ALICE))).await;
    assert_eq!(c.stat().await.0, 1);
    c.quit().await;
}

/// Messages stored with bare LF (or bare CR) line ends go out with CRLF, dot-stuffed; the
/// stored bytes are not changed.
#[tokio::test]
async fn bare_line_ends_are_sent_as_crlf() {
    let server = Pop3TestServer::start(Limits::default(), false).await;
    let stored = b"From: a@example.net\nSubject: bare\n\nline one\n.\n..two\nbare\rcr\nend".to_vec();
    let uid = server.deliver(ALICE, &stored).await;
    let mut c = server.login(ALICE).await;
    c.send(b"RETR 1\r\n").await.unwrap();
    assert!(c.read_status().await.unwrap().starts_with("+OK"));
    let wire = c.read_multiline_raw().await.unwrap();
    let want = b"From: a@example.net\r\nSubject: bare\r\n\r\nline one\r\n..\r\n...two\r\nbare\r\ncr\r\nend\r\n.\r\n";
    assert!(wire == want, "RETR sent {:?}", String::from_utf8_lossy(&wire));
    c.send(b"TOP 1 2\r\n").await.unwrap();
    assert!(c.read_status().await.unwrap().starts_with("+OK"));
    let wire = c.read_multiline_raw().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&wire), "From: a@example.net\r\nSubject: bare\r\n\r\nline one\r\n..\r\n.\r\n");
    c.quit().await;
    assert_eq!(server.body(ALICE, uid).await, stored, "the stored message changed");
}

/// A message of several hundred kilobytes, in the gRPC chunks of the mailbox service, comes
/// back whole, and a client that reads slowly still gets all of it.
#[tokio::test]
async fn large_message_round_trips() {
    let server = Pop3TestServer::start(Limits::default(), false).await;
    let mut body = b"From: big@example.net\r\nSubject: big\r\n\r\n".to_vec();
    let mut n = 0;
    while body.len() < 600 * 1024 {
        body.extend_from_slice(format!(".line {n} of a large message, with a leading dot\r\n").as_bytes());
        n += 1;
    }
    server.deliver(ALICE, &body).await;
    let mut c = server.login(ALICE).await;
    assert_eq!(c.listing("LIST").await, [(1, body.len().to_string())]);
    let (status, got) = c.multiline("RETR 1").await;
    assert_eq!(status, format!("+OK {} octets", body.len()));
    assert!(got == body, "the large message came back different ({} bytes, want {})", got.len(), body.len());
    c.quit().await;
}

/// One run of fetchmail against the pop3 port (STLS, the development certificate as the only
/// trust anchor), with a fetchmailrc of mode 0600 in `home`, delivering into a BSMTP file.
/// Returns the exit code (0: mail fetched, 1: no mail) and the output.
async fn fetchmail(server: &Pop3TestServer, home: &Path, keep: bool) -> (i32, String) {
    use std::os::unix::fs::PermissionsExt as _;
    let rc = home.join("fetchmailrc");
    // UIDL is a server option: with keep, fetchmail remembers which messages it has seen.
    let (server_options, disposal) = if keep { ("uidl", "keep") } else { ("", "no keep fetchall") };
    std::fs::write(
        &rc,
        format!(
            "set no syslog\nset invisible\n\
             poll 127.0.0.1 with proto POP3 service {port} auth password {server_options}\n\
             \x20   user \"{ALICE}\" there with password \"{password}\" is \"root\" here\n\
             \x20   options {disposal} no rewrite sslproto \"TLS1.2+\" sslcertck sslcertfile \"{ca}\"\n\
             \x20   sslcommonname \"localhost\" bsmtp \"{out}\"\n",
            port = server.frontend.pop3.port(),
            password = password_of(ALICE),
            ca = server.ca_cert.display(),
            out = home.join("mail.bsmtp").display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut command = Command::new("fetchmail");
    command
        .args(["--fetchmailrc"])
        .arg(&rc)
        .args(["--pidfile"])
        .arg(home.join("fetchmail.pid"))
        .args(["--idfile"])
        .arg(home.join("fetchids"))
        .args(["--nodetach", "--verbose", "--timeout", "10"])
        .env("HOME", home)
        .env("FETCHMAILHOME", home)
        .env("FETCHMAILUSER", "root");
    let out = run_client(
        command,
        "fetchmail is not installed: apt-get install fetchmail (cargo xtask ci does)",
        CLIENT_LIMIT,
    )
    .await;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// The messages of a BSMTP file as fetchmail writes it: each one's data, un-dot-stuffed.
fn bsmtp_messages(file: &Path) -> Vec<Vec<u8>> {
    let Ok(text) = std::fs::read(file) else { return Vec::new() };
    let mut messages = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    for line in text.split_inclusive(|b| *b == b'\n') {
        let bare = line.strip_suffix(b"\n").unwrap_or(line);
        let bare = bare.strip_suffix(b"\r").unwrap_or(bare);
        match current.as_mut() {
            None if bare == b"DATA" => current = Some(Vec::new()),
            None => {}
            Some(_) if bare == b"." => messages.push(current.take().unwrap()),
            Some(m) => {
                m.extend_from_slice(bare.strip_prefix(b".").unwrap_or(bare));
                m.extend_from_slice(b"\r\n");
            }
        }
    }
    messages
}

/// Debian's fetchmail, a full client: in keep mode with UIDL it fetches every message once and
/// leaves them on the server, then only a new one; without keep it fetches everything and the
/// server deletes it at QUIT.
#[tokio::test]
#[ignore = "needs fetchmail; run by cargo xtask ci"]
async fn fetchmail_client() {
    let server = Pop3TestServer::start(Limits::default(), false).await;
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("mail.bsmtp");
    let mut sent = Vec::new();
    for n in 0..3 {
        let m = tern_tests::message(&format!("fetchmail{n}"), &format!("message {n}\r\n.\r\n..dots\r\nend"));
        server.deliver(ALICE, &m).await;
        sent.push(m);
    }
    let check = |fetched: &[Vec<u8>], want: &[Vec<u8>], when: &str| {
        assert_eq!(fetched.len(), want.len(), "{when}: fetchmail delivered {} messages", fetched.len());
        for (got, want) in fetched.iter().zip(want) {
            assert!(
                got == want,
                "{when}: fetchmail got a different message:\n{}\n--- sent\n{}",
                String::from_utf8_lossy(got),
                String::from_utf8_lossy(want)
            );
        }
    };

    let (code, log) = fetchmail(&server, home.path(), true).await;
    assert_eq!(code, 0, "fetchmail --keep failed:\n{log}");
    assert!(log.contains("STLS"), "fetchmail did not use STLS:\n{log}");
    check(&bsmtp_messages(&out), &sent, "keep");
    assert_eq!(server.inbox(ALICE).await.2.len(), 3, "keep mode deleted messages:\n{log}");

    // Keep with UIDL: nothing new, then only the new message.
    let (code, log) = fetchmail(&server, home.path(), true).await;
    assert_eq!(code, 1, "expected no new mail:\n{log}");
    check(&bsmtp_messages(&out), &sent, "keep again");
    let new = tern_tests::message("fetchmail-new", "arrived later");
    server.deliver(ALICE, &new).await;
    let (code, log) = fetchmail(&server, home.path(), true).await;
    assert_eq!(code, 0, "fetchmail did not fetch the new message:\n{log}");
    sent.push(new);
    check(&bsmtp_messages(&out), &sent, "keep, new message");

    // No keep: everything again, deleted on the server at QUIT.
    std::fs::remove_file(&out).unwrap();
    let (code, log) = fetchmail(&server, home.path(), false).await;
    assert_eq!(code, 0, "fetchmail --nokeep failed:\n{log}");
    check(&bsmtp_messages(&out), &sent, "no keep");
    assert!(server.inbox(ALICE).await.2.is_empty(), "no-keep mode left messages on the server:\n{log}");
    let (code, log) = fetchmail(&server, home.path(), false).await;
    assert_eq!(code, 1, "expected an empty maildrop:\n{log}");
}

/// With the mailbox service down, the front-end answers with the SYS/TEMP response code
/// (RFC 3206) instead of failing the session: a login, and a RETR in an open session.
#[tokio::test]
async fn mailbox_down_is_a_temporary_failure() {
    let mut server = Pop3TestServer::start(Limits::default(), false).await;
    server.deliver(ALICE, &tern_tests::message("down", "text")).await;
    let mut open = server.login(ALICE).await;
    server.mailbox.stop().await;
    open.expect("RETR 1", "-ERR [SYS/TEMP]").await;
    assert_eq!(open.stat().await.0, 1, "the session's snapshot is still there");
    let mut c = server.connect(ListenerKind::Pop3s).await;
    c.greeting().await;
    c.ok(&format!("USER {BOB}")).await;
    c.expect(&format!("PASS {}", password_of(BOB)), "-ERR [SYS/TEMP]").await;
    c.ok("QUIT").await;
}
