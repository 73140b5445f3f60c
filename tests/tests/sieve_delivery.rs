//! Sieve at delivery (issue #18), end to end over real sockets: mail goes in through the SMTP
//! front-end (MX, or submission with a login), the recipient's active script runs in the
//! mailbox service, and what it decided is read back the way its owner or the outside world
//! would see it: folders and flags over IMAP, stored bodies over gRPC, replies, redirects and
//! rejection notices at a real SMTP receiver (aiosmtpd) that a relay worker reaches through a
//! real DNS server (dnslib), both on loopback.
//!
//! Each test starts its own servers; scripts are stored with the Mailbox API's
//! `PutSieveScript`, as ManageSieve does. The relay's Python fixtures need the libraries that
//! `cargo xtask ci` installs into `.tools/py`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tern_imap::{
    config::{ImapConfig, ListenerKind as ImapListenerKind},
    server::Listener as ImapListener,
};
use tern_proto::v1::ListFoldersRequest;
use tern_smtp::config::Limits as SmtpLimits;
use tern_tests::{
    common::{Background, bind_loopback, mailbox_channel},
    imap::ImapClient,
    relay::{Dns, Received, Receiver, RelayWorker, relay_config},
    smtp::{SmtpClient, SmtpReply, SmtpTestServer},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";
const DAVE: &str = "dave@example.com";

/// The longest any wait for mail to arrive or a queue to drain may take.
const WAIT: Duration = Duration::from_secs(30);

/// How long a test keeps watching after the last expected message, so that one sent too many
/// (a second vacation reply, a redirect that should not have happened) has time to show up.
const SETTLE: Duration = Duration::from_millis(1500);

/// The zone of the relay tests: `accept.test` has its MX on 127.0.0.1, where the receiver
/// listens (on the port the relay is configured with).
fn zone() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![("accept.test", "MX", "10 mx.accept.test"), ("mx.accept.test", "A", "127.0.0.1")]
}

/// A small message with the given header fields first, its Message-ID made from `id`.
fn mail(from: &str, to: &str, subject: &str, id: &str, extra: &[(&str, &str)]) -> String {
    let mut text = format!("From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n");
    for (name, value) in extra {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!(
        "Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{id}@sieve.test>\r\n\r\nThe text of {id}.\r\n"
    ));
    text
}

/// Runs one transaction on an open, greeted session: MAIL FROM `from` (empty for the null
/// sender), each RCPT accepted, DATA; returns the reply to the end of data. `body` must end
/// with CRLF and have no line starting with a dot.
async fn transaction<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut SmtpClient<S>,
    from: &str,
    to: &[&str],
    body: &str,
) -> SmtpReply {
    c.expect(&format!("MAIL FROM:<{from}>"), "250").await;
    for rcpt in to {
        c.expect(&format!("RCPT TO:<{rcpt}>"), "250").await;
    }
    c.expect("DATA", "354").await;
    c.send(format!("{body}.\r\n").as_bytes()).await.expect("send the message");
    c.read_reply().await.expect("the reply to the end of DATA")
}

/// Sends `body` from `from` to `to` through the MX listener on a connection of its own.
async fn send_mx(server: &SmtpTestServer, from: &str, to: &[&str], body: &str) -> SmtpReply {
    let stream = TcpStream::connect(server.mx).await.expect("connect to the MX listener");
    let mut c = SmtpClient::new(stream);
    c.expect_reply("220").await;
    c.expect("EHLO client.test", "250").await;
    let reply = transaction(&mut c, from, to, body).await;
    c.expect("QUIT", "221").await;
    reply
}

/// Stores `text` as the active script of `address`, checking that the service accepts it.
async fn activate(server: &SmtpTestServer, address: &str, text: &str) {
    server.activate_sieve(address, "test", text).await;
}

/// How many messages `address` has in all its folders.
async fn messages_everywhere(server: &SmtpTestServer, address: &str) -> u32 {
    let request = ListFoldersRequest { account_id: server.account_id(address), with_status: true };
    let folders = server
        .mailbox_client()
        .await
        .list_folders(request)
        .await
        .unwrap_or_else(|e| panic!("list the folders of {address}: {e}"))
        .into_inner()
        .folders;
    folders.iter().map(|f| f.messages).sum()
}

/// Waits until the outbound queue is empty: every reply and redirect the relay has to carry
/// is then at the receiver (or was given up on, which the test would see as missing mail).
async fn wait_queue_empty(server: &SmtpTestServer) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let queue = server.queue().await;
        if queue.is_empty() {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the queue still holds {queue:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the INBOX of `address` holds at least `n` messages and returns them as text.
async fn wait_inbox(server: &SmtpTestServer, address: &str, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let inbox = server.inbox(address).await;
        if inbox.len() >= n {
            return inbox.iter().map(|m| String::from_utf8_lossy(m).into_owned()).collect();
        }
        assert!(tokio::time::Instant::now() < deadline, "the INBOX of {address} has {} of {n}", inbox.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a receiver saw the null sender: aiosmtpd records `MAIL FROM:<>` as `<>` (and would
/// refuse anything like `<<>>`), so this is exactly the reverse path RFC 5230 section 5 asks
/// for.
fn from_null_sender(m: &Received) -> bool {
    m.mail_from == "<>"
}

/// The value of `tern_sieve_runs{result="<result>"}` in this process's metrics (the mailbox
/// service runs in it), 0 when absent. The counter may carry the `_total` suffix.
fn sieve_runs(result: &str) -> f64 {
    let text = tern_runtime::metrics::Metrics::global().encode();
    let label = format!("{{result=\"{result}\"}}");
    text.lines()
        .filter(|l| l.starts_with("tern_sieve_runs"))
        .find_map(|l| l.split_once(&label).and_then(|(_, value)| value.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// An IMAP front-end on plain TCP with logins allowed before TLS, in front of the mailbox
/// service at `mailbox`: the SMTP harness made the accounts there already, so the IMAP
/// harness (which makes them itself) cannot be used as it is.
async fn start_imap(mailbox: SocketAddr) -> (SocketAddr, Background) {
    let cfg = Arc::new(ImapConfig {
        hostname: "imap.test".into(),
        limits: tern_imap::config::Limits::default(),
        tls: None,
        allow_plaintext_auth: true,
    });
    let (socket, addr) = bind_loopback().await;
    let listeners = vec![ImapListener { kind: ImapListenerKind::Imap, socket, proxy_protocol: false }];
    let channel = mailbox_channel(mailbox);
    let grace = Duration::from_secs(2);
    let server = Background::spawn(grace * 3, move |rx| tern_imap::server::serve(cfg, channel, listeners, rx, grace));
    (addr, server)
}

/// Logs `address` in over IMAP at `addr` with its password from the SMTP harness's accounts.
async fn imap_login(addr: SocketAddr, address: &str) -> ImapClient<TcpStream> {
    let password = tern_tests::common::password_in(&tern_tests::smtp::ACCOUNTS, address);
    let stream = TcpStream::connect(addr).await.expect("connect to the IMAP front-end");
    let mut c = ImapClient::new(stream);
    c.greeting().await;
    c.ok(&format!("LOGIN {address} {password}")).await;
    c
}

/// The number of messages a SELECT reported (`* n EXISTS`).
fn exists(lines: &[String]) -> u32 {
    lines
        .iter()
        .find_map(|l| l.strip_prefix("* ")?.strip_suffix(" EXISTS")?.parse().ok())
        .unwrap_or_else(|| panic!("no EXISTS in {lines:?}"))
}

/// fileinto with imap4flags, seen the way the owner sees it: over IMAP, the message is in the
/// folder the script named with `\Seen` set, and not in INBOX. `:create` makes a folder that
/// did not exist, and a missing folder without it falls back to INBOX.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fileinto_with_flags_lands_in_the_folder_as_imap_shows_it() {
    let server = SmtpTestServer::start(SmtpLimits::default()).await;
    let (imap, _imap_server) = start_imap(server.mailbox.addr).await;

    // Alice makes the folder herself over IMAP, as a mail client would, before filing into it.
    let mut alice = imap_login(imap, ALICE).await;
    alice.ok("CREATE Projects").await;
    activate(
        &server,
        ALICE,
        "require [\"fileinto\", \"imap4flags\"];\r\n\
         if header :contains \"subject\" \"[proj]\" {\r\n  fileinto :flags \"\\\\Seen\" \"Projects\";\r\n}\r\n",
    )
    .await;
    let reply =
        send_mx(&server, "ann@remote.test", &[ALICE], &mail("ann@remote.test", ALICE, "[proj] plan", "p1", &[])).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    // A message the test does not match takes the implicit keep.
    let reply =
        send_mx(&server, "ann@remote.test", &[ALICE], &mail("ann@remote.test", ALICE, "lunch", "p2", &[])).await;
    assert_eq!(reply.code, 250, "{reply:?}");

    let selected = alice.ok("SELECT Projects").await;
    assert_eq!(exists(&selected.lines()), 1, "{:?}", selected.lines());
    let fetched = alice.ok("FETCH 1 (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT MESSAGE-ID)])").await;
    let text = fetched.lines().join("\n");
    assert!(text.contains("\\Seen"), "the script's flag is set: {text}");
    assert!(text.contains("Subject: [proj] plan") && text.contains("<p1@sieve.test>"), "{text}");
    let selected = alice.ok("SELECT INBOX").await;
    assert_eq!(exists(&selected.lines()), 1, "only the unmatched message is in INBOX: {:?}", selected.lines());
    let fetched = alice.ok("FETCH 1 (FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])").await;
    let text = fetched.lines().join("\n");
    assert!(text.contains("<p2@sieve.test>"), "{text}");
    assert!(!text.contains("\\Seen"), "the implicit keep sets no flag: {text}");
    alice.logout().await;

    // `:create` makes the folder (a nested one here); without it, a missing folder is INBOX,
    // and an explicit keep into that same INBOX makes no second copy. setflag with the
    // implicit keep flags the INBOX copy.
    activate(&server, BOB, "require [\"fileinto\", \"mailbox\"];\r\nfileinto :create \"Lists/Rust\";\r\n").await;
    activate(&server, CAROL, "require \"fileinto\";\r\nfileinto \"Nowhere\";\r\nkeep;\r\n").await;
    activate(&server, DAVE, "require \"imap4flags\";\r\nsetflag \"\\\\Flagged\";\r\n").await;
    let reply =
        send_mx(&server, "ann@remote.test", &[BOB, CAROL, DAVE], &mail("ann@remote.test", BOB, "crates", "p3", &[]))
            .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let mut bob = imap_login(imap, BOB).await;
    let listed = bob.ok("LIST \"\" \"Lists/*\"").await;
    assert!(listed.lines().iter().any(|l| l.contains("Lists/Rust")), "{:?}", listed.lines());
    let selected = bob.ok("SELECT \"Lists/Rust\"").await;
    assert_eq!(exists(&selected.lines()), 1, "{:?}", selected.lines());
    assert_eq!(exists(&bob.ok("SELECT INBOX").await.lines()), 0);
    bob.logout().await;
    let mut carol = imap_login(imap, CAROL).await;
    assert_eq!(exists(&carol.ok("SELECT INBOX").await.lines()), 1, "a missing folder falls back to INBOX");
    carol.expect("SELECT Nowhere", "NO").await;
    carol.logout().await;
    let mut dave = imap_login(imap, DAVE).await;
    assert_eq!(exists(&dave.ok("SELECT INBOX").await.lines()), 1);
    let fetched = dave.ok("FETCH 1 (FLAGS)").await.lines().join("\n");
    assert!(fetched.contains("\\Flagged") && !fetched.contains("\\Seen"), "{fetched}");
    dave.logout().await;
}

/// vacation: one reply per sender within the period, from the null sender, marked as an
/// automatic reply and threaded to the original, through the relay to the sender's domain;
/// none to lists, to the null sender, or when the recipient is not among To/Cc. Every original
/// is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacation_replies_once_per_sender_through_the_relay() {
    let server = SmtpTestServer::start(SmtpLimits::default()).await;
    let dns = Dns::start(&zone());
    let receiver = Receiver::start(false, 1);
    let _relay = RelayWorker::start(server.mailbox.addr, relay_config(&dns, receiver.port), "w1");
    activate(&server, ALICE, "require \"vacation\";\r\nvacation :days 1 :subject \"Away\" \"I am away.\";\r\n").await;

    let sends = [
        ("ann@accept.test", mail("ann@accept.test", ALICE, "first", "v1", &[])),
        // The same sender again within the period: no second reply.
        ("ann@accept.test", mail("ann@accept.test", ALICE, "second", "v2", &[])),
        // Another sender gets a reply of its own.
        ("ben@accept.test", mail("ben@accept.test", ALICE, "from ben", "v3", &[])),
        // Mailing lists are never answered (RFC 5230 section 4.6).
        ("list@accept.test", mail("list@accept.test", ALICE, "digest", "v4", &[("List-Id", "<news.accept.test>")])),
        // The null sender is never answered (RFC 5230 section 4.5).
        ("", mail("mailer@accept.test", ALICE, "notice", "v5", &[])),
        // Alice is not in To or Cc (a Bcc copy, or a list expanded elsewhere): no reply.
        ("cid@accept.test", mail("cid@accept.test", "someone@accept.test", "bcc", "v6", &[])),
    ];
    for (from, body) in &sends {
        let reply = send_mx(&server, from, &[ALICE], body).await;
        assert_eq!(reply.code, 250, "from {from:?}: {reply:?}");
    }

    let got = receiver.wait_for(2, WAIT).await;
    wait_queue_empty(&server).await;
    tokio::time::sleep(SETTLE).await;
    let got_now = receiver.messages();
    assert_eq!(got_now.len(), 2, "one reply to ann, one to ben, nothing else: {:#?}", got_now);
    for (to, original) in [("ann@accept.test", "v1"), ("ben@accept.test", "v3")] {
        let m = got.iter().find(|m| m.rcpt_tos == [to]).unwrap_or_else(|| panic!("no reply to {to}: {got:#?}"));
        assert!(from_null_sender(m), "a vacation reply comes from the null sender: {:?}", m.mail_from);
        let text = m.text();
        assert!(text.contains("Auto-Submitted: auto-replied (vacation)\r\n"), "{text}");
        assert!(text.contains(&format!("In-Reply-To: <{original}@sieve.test>\r\n")), "{text}");
        assert!(text.contains("Subject: Away\r\n"), "the :subject given: {text}");
        assert!(text.contains("From: <alice@example.com>") || text.contains("From: alice@example.com"), "{text}");
        assert!(text.contains("I am away."), "{text}");
    }

    // A local sender's reply is delivered to her INBOX, not queued. She is away too, but her
    // own vacation never answers Alice's reply, which comes from the null sender and says it
    // is automatic: two away accounts do not write to each other forever.
    activate(&server, CAROL, "require \"vacation\";\r\nvacation :days 1 \"Carol is away.\";\r\n").await;
    let mut c = server.connect_authenticated(CAROL).await;
    let reply = transaction(&mut c, CAROL, &[ALICE], &mail(CAROL, ALICE, "from carol", "v7", &[])).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    c.expect("QUIT", "221").await;
    let carol = wait_inbox(&server, CAROL, 1).await;
    assert_eq!(carol.len(), 1, "{carol:#?}");
    assert!(carol[0].contains("Auto-Submitted: auto-replied (vacation)\r\n"), "{}", carol[0]);
    assert!(carol[0].contains("In-Reply-To: <v7@sieve.test>\r\n") && carol[0].contains("I am away."), "{}", carol[0]);

    // The vacation action keeps the message too: every original is in INBOX, and nothing else
    // (no reply from Carol) is.
    tokio::time::sleep(SETTLE).await;
    let inbox = wait_inbox(&server, ALICE, sends.len() + 1).await;
    assert_eq!(inbox.len(), sends.len() + 1, "the originals and nothing more");
    for id in ["v1", "v2", "v3", "v4", "v5", "v6", "v7"] {
        assert!(inbox.iter().any(|m| m.contains(&format!("<{id}@sieve.test>"))), "{id} is not in INBOX");
    }
    assert!(server.queue().await.is_empty(), "nothing more was queued");
    assert_eq!(receiver.messages().len(), 2, "nothing more went out");
}

/// reject and ereject: with one recipient, the SMTP server refuses the message at the end of
/// DATA with the script's reason and nothing is stored; with several, the message is taken
/// for the others and the sender (a local account here) gets an RFC 5429 disposition
/// notification instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_refuses_a_lone_recipient_and_notifies_when_there_are_others() {
    let server = SmtpTestServer::start(SmtpLimits::default()).await;
    activate(&server, ALICE, "require \"reject\";\r\nreject \"I do not take mail on Sundays.\";\r\n").await;
    activate(&server, DAVE, "require \"ereject\";\r\nereject \"No thanks.\";\r\n").await;

    let reply =
        send_mx(&server, "ann@remote.test", &[ALICE], &mail("ann@remote.test", ALICE, "sunday", "r1", &[])).await;
    assert_eq!((reply.code, reply.last()), (550, "550 5.7.1 Rejected: I do not take mail on Sundays."), "{reply:?}");
    let reply = send_mx(&server, "ann@remote.test", &[DAVE], &mail("ann@remote.test", DAVE, "hello", "r2", &[])).await;
    assert_eq!((reply.code, reply.last()), (550, "550 5.7.1 Rejected: No thanks."), "{reply:?}");
    assert_eq!(messages_everywhere(&server, ALICE).await, 0, "nothing stored for a rejection");
    assert_eq!(messages_everywhere(&server, DAVE).await, 0, "nothing stored for a rejection");
    assert!(server.queue().await.is_empty(), "the refusal told the sender: nothing is queued to it");

    // Carol, logged in on submission, writes to Alice (who rejects) and Bob (no script).
    let mut c = server.connect_authenticated(CAROL).await;
    let body = mail(CAROL, ALICE, "two of you", "r3", &[("Cc", "<bob@example.com>")]);
    let reply = transaction(&mut c, CAROL, &[ALICE, BOB], &body).await;
    assert_eq!(reply.code, 250, "accepted for Bob: {reply:?}");
    c.expect("QUIT", "221").await;

    let bob = wait_inbox(&server, BOB, 1).await;
    assert!(bob[0].contains("<r3@sieve.test>"), "{}", bob[0]);
    assert_eq!(messages_everywhere(&server, ALICE).await, 0, "Alice's script rejected it");
    let notices = wait_inbox(&server, CAROL, 1).await;
    assert_eq!(notices.len(), 1, "one notification: {notices:#?}");
    let mdn = &notices[0];
    assert!(mdn.contains("multipart/report; report-type=disposition-notification"), "{mdn}");
    assert!(mdn.contains("Content-Type: message/disposition-notification"), "{mdn}");
    assert!(mdn.contains("Disposition: automatic-action/MDN-sent-automatically; deleted\r\n"), "{mdn}");
    assert!(mdn.contains("Final-Recipient: rfc822; alice@example.com\r\n"), "{mdn}");
    assert!(mdn.contains("Original-Message-ID: <r3@sieve.test>"), "{mdn}");
    assert!(mdn.contains("I do not take mail on Sundays."), "the reason is in the notice: {mdn}");
    assert!(server.queue().await.is_empty(), "the notice to a local sender is delivered, not queued");

    // A remote sender with two local recipients: the notice to it goes on the outbound queue,
    // from the null sender (a notification is never answered with another).
    let body = mail("ann@remote.test", ALICE, "again", "r4", &[("Cc", "<bob@example.com>")]);
    let reply = send_mx(&server, "ann@remote.test", &[ALICE, BOB], &body).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    assert_eq!(wait_inbox(&server, BOB, 2).await.len(), 2);
    assert_eq!(messages_everywhere(&server, ALICE).await, 0);
    let queue = server.queue().await;
    assert_eq!(queue.len(), 1, "{queue:?}");
    assert_eq!(queue[0].mail_from, "", "{queue:?}");
    let to: Vec<&str> = queue[0].recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(to, ["ann@remote.test"], "{queue:?}");
}

/// redirect: to a remote address the message goes out through the relay from the original
/// envelope sender, marked with the redirecting account, and no copy stays unless `:copy`; to
/// a local address it is delivered there directly; and two accounts redirecting to each other
/// stop after one round, the message kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_sends_on_through_the_relay_or_locally() {
    let server = SmtpTestServer::start(SmtpLimits::default()).await;
    let dns = Dns::start(&zone());
    let receiver = Receiver::start(false, 1);
    let _relay = RelayWorker::start(server.mailbox.addr, relay_config(&dns, receiver.port), "w1");

    activate(&server, ALICE, "redirect \"someone@accept.test\";\r\n").await;
    let reply = send_mx(&server, "ann@remote.test", &[ALICE], &mail("ann@remote.test", ALICE, "fwd", "d1", &[])).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let got = receiver.wait_for(1, WAIT).await;
    let m = &got[0];
    assert_eq!(m.mail_from, "ann@remote.test", "a redirect keeps the original envelope sender");
    assert_eq!(m.rcpt_tos, ["someone@accept.test"]);
    let text = m.text();
    assert!(text.contains("X-Sieve-Redirected-From: alice@example.com\r\n"), "{text}");
    assert!(text.contains("Message-ID: <d1@sieve.test>") && text.contains("The text of d1."), "{text}");
    assert_eq!(messages_everywhere(&server, ALICE).await, 0, "a redirect without :copy keeps nothing");

    activate(&server, ALICE, "require \"copy\";\r\nredirect :copy \"someone@accept.test\";\r\n").await;
    let reply = send_mx(&server, "ann@remote.test", &[ALICE], &mail("ann@remote.test", ALICE, "cc", "d2", &[])).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let got = receiver.wait_for(2, WAIT).await;
    assert!(got[1].text().contains("Message-ID: <d2@sieve.test>"), "{}", got[1].text());
    assert_eq!(got[1].mail_from, "ann@remote.test");
    let inbox = wait_inbox(&server, ALICE, 1).await;
    assert!(inbox[0].contains("<d2@sieve.test>"), "with :copy the message is kept too");
    assert!(!inbox[0].contains("X-Sieve-Redirected-From"), "the kept copy is not marked: {}", inbox[0]);

    // A local target: delivered to Dave at once, nothing queued.
    activate(&server, BOB, "redirect \"dave@example.com\";\r\n").await;
    let reply = send_mx(&server, "ann@remote.test", &[BOB], &mail("ann@remote.test", BOB, "local", "d3", &[])).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let dave = wait_inbox(&server, DAVE, 1).await;
    assert!(dave[0].contains("<d3@sieve.test>"), "{}", dave[0]);
    assert!(dave[0].contains("X-Sieve-Redirected-From: bob@example.com\r\n"), "{}", dave[0]);
    assert_eq!(messages_everywhere(&server, BOB).await, 0);
    assert!(server.queue().await.is_empty(), "a local redirect is not queued");

    // Dave now sends everything back to Bob: Bob's script sees its own mark and keeps the
    // message instead of going round again.
    activate(&server, DAVE, "redirect \"bob@example.com\";\r\n").await;
    let reply = send_mx(&server, "ann@remote.test", &[BOB], &mail("ann@remote.test", BOB, "loop", "d4", &[])).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let bob = wait_inbox(&server, BOB, 1).await;
    assert_eq!(bob.len(), 1);
    assert!(bob[0].contains("<d4@sieve.test>"), "{}", bob[0]);
    assert!(bob[0].contains("X-Sieve-Redirected-From: bob@example.com\r\n"), "it went round once: {}", bob[0]);
    assert!(bob[0].contains("X-Sieve-Redirected-From: dave@example.com\r\n"), "{}", bob[0]);
    assert_eq!(messages_everywhere(&server, DAVE).await, 1, "Dave kept nothing of the loop");

    wait_queue_empty(&server).await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(receiver.messages().len(), 2, "only the two remote redirects went out");
}

/// What must never lose mail or run away: a script that fails at run time keeps the message
/// (and is counted), too many redirects keep it and send nothing, `discard` stores nothing,
/// and editheader's changes are in the stored copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_keep_the_message_and_discard_and_editheader_do_what_they_say() {
    let mailbox_limits = tern_mailbox::Limits { sieve_max_redirects: 4, ..Default::default() };
    let server = SmtpTestServer::start_with(SmtpLimits::default(), mailbox_limits).await;

    // reject cannot be combined with fileinto (RFC 5429 section 2.1): an error at run time.
    activate(&server, ALICE, "require [\"fileinto\", \"reject\"];\r\nfileinto \"A\";\r\nreject \"x\";\r\n").await;
    let errors_before = sieve_runs("error");
    let reply = send_mx(&server, "ann@remote.test", &[ALICE], &mail("ann@remote.test", ALICE, "oops", "s1", &[])).await;
    assert_eq!(reply.code, 250, "a failed script neither rejects nor loses the message: {reply:?}");
    let inbox = wait_inbox(&server, ALICE, 1).await;
    assert!(inbox[0].contains("<s1@sieve.test>"), "{}", inbox[0]);
    assert!(sieve_runs("error") > errors_before, "the failed run is counted");

    // Five redirects where four are allowed: the limit fails the run, and nothing goes out.
    let five: String = (1..=5).map(|i| format!("redirect \"r{i}@accept.test\";\r\n")).collect();
    activate(&server, BOB, &five).await;
    let errors_before = sieve_runs("error");
    let reply = send_mx(&server, "ann@remote.test", &[BOB], &mail("ann@remote.test", BOB, "many", "s2", &[])).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let inbox = wait_inbox(&server, BOB, 1).await;
    assert!(inbox[0].contains("<s2@sieve.test>"), "{}", inbox[0]);
    assert!(server.queue().await.is_empty(), "no redirect was queued: {:?}", server.queue().await);
    assert!(sieve_runs("error") > errors_before, "the limit is counted as an error");

    // discard: accepted, and stored nowhere.
    activate(&server, CAROL, "discard;\r\n").await;
    let reply = send_mx(&server, "ann@remote.test", &[CAROL], &mail("ann@remote.test", CAROL, "bin", "s3", &[])).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    assert_eq!(messages_everywhere(&server, CAROL).await, 0, "discard stores nothing");
    assert!(server.queue().await.is_empty());

    // editheader: the stored copy has the added field and lacks the deleted one.
    activate(
        &server,
        DAVE,
        "require \"editheader\";\r\naddheader \"X-Tern-Filed\" \"by sieve\";\r\ndeleteheader \"X-Remove-Me\";\r\n",
    )
    .await;
    let body = mail("ann@remote.test", DAVE, "edit", "s4", &[("X-Remove-Me", "secret"), ("X-Stay", "here")]);
    let reply = send_mx(&server, "ann@remote.test", &[DAVE], &body).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let inbox = wait_inbox(&server, DAVE, 1).await;
    let stored = &inbox[0];
    assert!(stored.contains("X-Tern-Filed: by sieve\r\n"), "{stored}");
    assert!(!stored.contains("X-Remove-Me"), "{stored}");
    assert!(stored.contains("X-Stay: here\r\n") && stored.contains("The text of s4."), "{stored}");
    assert_eq!(messages_everywhere(&server, DAVE).await, 1);
}

/// Sieve has no loops, but a script can still look endless: one that includes itself, or one
/// that asks for the decoded body hundreds of times on a large message. The limits stop both,
/// the message is kept, and each stopped run is counted; delivery goes on for the next
/// message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_that_would_run_away_are_stopped_by_the_limits() {
    let server = SmtpTestServer::start_with(SmtpLimits::default(), tern_mailbox::Limits::default()).await;

    // A script that includes itself: RFC 6609 section 3.2 makes the recursion an error. It is
    // stored all the same, since includes are found when a script runs.
    server.activate_sieve(ALICE, "again", "require \"include\";\r\ninclude :personal \"again\";\r\n").await;
    let errors_before = sieve_runs("error");
    let reply = send_mx(&server, "ann@remote.test", &[ALICE], &mail("ann@remote.test", ALICE, "loop", "l1", &[])).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let inbox = wait_inbox(&server, ALICE, 1).await;
    assert!(inbox[0].contains("<l1@sieve.test>"), "{}", inbox[0]);
    assert!(sieve_runs("error") > errors_before, "the stopped run is counted");

    // Nine hundred body tests on a message of 300 KiB: with the default limit of 200,000
    // steps (one per KiB compared) the run stops after a few hundred of them.
    let rules: String =
        (0..900).map(|i| format!("if body :contains [\"needle{i}\", \"pin{i}\"] {{ discard; }}\r\n")).collect();
    activate(&server, BOB, &format!("require \"body\";\r\n{rules}")).await;
    let line = "A line of text that contains neither of the things the script looks for.\r\n";
    let big = mail("ann@remote.test", BOB, "big", "l2", &[])
        .replace("The text of l2.", &line.repeat(300 * 1024 / line.len()));
    let errors_before = sieve_runs("error");
    let started = std::time::Instant::now();
    let reply = send_mx(&server, "ann@remote.test", &[BOB], &big).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let inbox = wait_inbox(&server, BOB, 1).await;
    assert!(inbox[0].contains("<l2@sieve.test>"), "kept, not discarded");
    assert!(sieve_runs("error") > errors_before, "the stopped run is counted");
    println!("the runaway script was stopped and the message stored in {:?}", started.elapsed());

    // The next message to the same recipient is delivered as usual.
    let reply = send_mx(&server, "ann@remote.test", &[BOB], &mail("ann@remote.test", BOB, "small", "l3", &[])).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    wait_inbox(&server, BOB, 2).await;
}

/// Messages from one sender arriving at the same moment, each delivered on its own connection
/// (and so by concurrent deliveries in the mailbox service), get one vacation reply between
/// them: the reply is sent only by the delivery that records it, in one atomic step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_messages_from_one_sender_get_one_vacation_reply() {
    let server = Arc::new(SmtpTestServer::start_with(SmtpLimits::default(), tern_mailbox::Limits::default()).await);
    activate(&server, ALICE, "require \"vacation\";\r\nvacation :days 3 :subject \"Away\" \"I am away.\";\r\n").await;
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..8 {
        let server = Arc::clone(&server);
        sends.spawn(async move {
            let id = format!("c{i}");
            send_mx(&server, CAROL, &[ALICE], &mail(CAROL, ALICE, &format!("at once {i}"), &id, &[])).await
        });
    }
    while let Some(reply) = sends.join_next().await {
        let reply = reply.expect("the send task");
        assert_eq!(reply.code, 250, "{reply:?}");
    }
    wait_inbox(&server, ALICE, 8).await;
    wait_inbox(&server, CAROL, 1).await;
    tokio::time::sleep(SETTLE).await;
    let replies: Vec<String> = server
        .inbox(CAROL)
        .await
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .filter(|m| m.contains("Auto-Submitted: auto-replied"))
        .collect();
    assert_eq!(replies.len(), 1, "one reply for eight messages at once: {replies:#?}");
}

/// `include :global` (RFC 6609) reads the server's scripts from `[sieve] global_dir`: a
/// user's script includes the administrator's rules, a missing global script fails the run
/// (the message is kept) unless `:optional`, and a name cannot reach outside the directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_scripts_are_included_from_the_configured_directory() {
    // The global directory inside a temporary one, so that a script beside it (which a name
    // with a path would reach) exists and is not read.
    let root = tempfile::tempdir().expect("a temporary directory");
    let global = root.path().join("global");
    std::fs::create_dir(&global).expect("the global directory");
    std::fs::write(root.path().join("outside.sieve"), "discard;\r\n").expect("write the outside script");
    std::fs::write(
        global.join("junk-rules.sieve"),
        "require [\"fileinto\", \"mailbox\"];\r\nif header :contains \"subject\" \"[SPAM]\" { fileinto :create \"Quarantine\"; stop; }\r\n",
    )
    .expect("write the global script");
    let limits = tern_mailbox::Limits { sieve_global_dir: Some(global), ..Default::default() };
    let server = SmtpTestServer::start_with(SmtpLimits::default(), limits).await;
    activate(
        &server,
        ALICE,
        "require \"include\";\r\ninclude :global \"junk-rules\";\r\ninclude :global :optional \"not-there\";\r\n",
    )
    .await;
    let reply =
        send_mx(&server, "ann@remote.test", &[ALICE], &mail("ann@remote.test", ALICE, "[SPAM] cheap", "g1", &[])).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let reply =
        send_mx(&server, "ann@remote.test", &[ALICE], &mail("ann@remote.test", ALICE, "hello", "g2", &[])).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let quarantined = wait_folder(&server, ALICE, "Quarantine", 1).await;
    assert!(quarantined[0].contains("<g1@sieve.test>"), "{}", quarantined[0]);
    let inbox = wait_inbox(&server, ALICE, 1).await;
    assert!(inbox[0].contains("<g2@sieve.test>"), "{}", inbox[0]);

    // A global script that does not exist fails the run; one named with a path is not read.
    for (i, name) in ["missing", "../outside"].iter().enumerate() {
        activate(&server, BOB, &format!("require \"include\";\r\ninclude :global \"{name}\";\r\ndiscard;\r\n")).await;
        let errors_before = sieve_runs("error");
        let id = format!("m{i}");
        let reply = send_mx(&server, "ann@remote.test", &[BOB], &mail("ann@remote.test", BOB, name, &id, &[])).await;
        assert_eq!(reply.code, 250, "{reply:?}");
        let inbox = wait_inbox(&server, BOB, i + 1).await;
        assert!(inbox.iter().any(|m| m.contains(&format!("<{id}@sieve.test>"))), "kept, not discarded: {name}");
        assert!(sieve_runs("error") > errors_before, "the failed include is counted: {name}");
    }
}

/// Waits until `folder` of `address` holds at least `n` messages and returns them as text.
async fn wait_folder(server: &SmtpTestServer, address: &str, folder: &str, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let messages = server.folder(address, folder).await;
        if messages.len() >= n {
            return messages.iter().map(|m| String::from_utf8_lossy(m).into_owned()).collect();
        }
        assert!(tokio::time::Instant::now() < deadline, "{folder} of {address} has {} of {n}", messages.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
