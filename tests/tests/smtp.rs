//! The SMTP front-end end to end over real loopback sockets: the transcripts of
//! `transcripts/smtp/` with the client's bytes cut at every boundary, byte-exact cases that a
//! line-based transcript cannot express (SMTP smuggling, bare LF), what ends up in the mailbox,
//! the open-relay matrix, quotas, STARTTLS and AUTH, real clients (Python's smtplib, swaks), and
//! garbage input.

use std::{path::PathBuf, process::Command, sync::Arc, time::Duration};

use tern_smtp::config::{Limits, ListenerKind};
use tern_tests::{
    common::{
        lenient_mailbox_limits, play_every_chunking, read_transcript_file, run_client, run_python_script,
        run_transcript_dir,
    },
    smtp::{
        BoxIo, Chunking, HOSTNAME, SmtpClient, SmtpTestServer, Transcript, auth_plain, base64_encode, run_steps,
        run_transcript,
    },
};
use tokio::{io::AsyncWriteExt, net::TcpStream, task::JoinSet};

/// Plays one transcript against a server of its own, with the limits it asks for.
async fn run_transcript_file(path: PathBuf) -> Result<(), String> {
    let (name, text) = read_transcript_file(&path)?;
    let transcript = Transcript::parse(&name, &text)?;
    let limits = transcript.limits(Limits::default())?;
    let server = Arc::new(SmtpTestServer::start_with(limits, lenient_mailbox_limits()).await);
    // The ways of cutting run side by side, each on its own connection: sessions are
    // independent, and the pauses after failed logins then add up only once.
    play_every_chunking(&name, |chunking| {
        let (server, transcript) = (server.clone(), transcript.clone());
        async move {
            let mut client = server.connect(transcript.listener).await;
            run_steps(&mut client, &transcript.steps, chunking).await
        }
    })
    .await
}

/// Every file in `transcripts/smtp/` is one scenario; each runs against its own server (with
/// the limits it asks for), once per way of cutting the client's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transcripts() {
    run_transcript_dir("smtp", 25, run_transcript_file).await;
}

/// The transcript runner itself notices a wrong reply, a missing close, and a reply nobody
/// expected, so that a passing transcript means something.
#[tokio::test]
async fn transcript_runner_detects_differences() {
    let server = SmtpTestServer::start(Limits::default()).await;
    run_transcript(server.mx, "S: 220 mx.test ESMTP Tern\nC: QUIT\nS: 221 mx.test closing connection\nCLOSED\n")
        .await
        .expect("the correct transcript passes");
    for (what, wrong) in [
        ("a wrong reply", "S: 220 mx.test ESMTP Tern\nC: NOOP\nS: 250 2.0.0 OK\n"),
        ("a wrong greeting", "S: 220 other ESMTP\nC: QUIT\n"),
        ("a wildcard that does not match", "S: 220 mx.test ESMTP Tern\nC: NOOP\nS: 251 *\n"),
        ("a close that does not come", "S: 220 mx.test ESMTP Tern\nC: NOOP\nS: 250 OK\nCLOSED\n"),
        ("an extra reply before the close", "S: 220 mx.test ESMTP Tern\nC: NOOP\nC: QUIT\nS: 250 OK\nCLOSED\n"),
        ("a reply that never comes", "S: 220 mx.test ESMTP Tern\nC: QUIT\nS: 221 *\nS: 250 OK\n"),
    ] {
        let transcript = Transcript::parse(what, wrong).expect("a well-formed transcript");
        let tcp = TcpStream::connect(server.mx).await.unwrap();
        // A short wait: two of these wait for something that never comes.
        let mut client = SmtpClient::new(tcp).with_timeout(Duration::from_millis(500));
        let result =
            tokio::time::timeout(Duration::from_secs(20), run_steps(&mut client, &transcript.steps, Chunking::Whole))
                .await
                .unwrap_or_else(|_| panic!("the runner hung on {what}"));
        assert!(result.is_err(), "the runner accepted {what}");
    }
}

/// Adds the dot-stuffing of RFC 5321 section 4.5.2 to a message whose lines end with CRLF,
/// and the end-of-data line.
fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    let mut line_start = true;
    for &b in body {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    assert!(body.is_empty() || body.ends_with(b"\r\n"), "a message to send must end with CRLF");
    out.extend_from_slice(b".\r\n");
    out
}

/// One transaction with DATA; every step must succeed up to the 354, and the reply to the end
/// of data is returned.
async fn send_message(c: &mut SmtpClient<BoxIo>, from: &str, to: &[&str], body: &[u8]) -> tern_tests::smtp::SmtpReply {
    c.expect(&format!("MAIL FROM:<{from}>"), "250 2.1.0").await;
    for rcpt in to {
        c.expect(&format!("RCPT TO:<{rcpt}>"), "250 2.1.5").await;
    }
    c.expect("DATA", "354 ").await;
    c.send(&dot_stuff(body)).await.expect("send the message");
    c.read_reply().await.expect("the reply to the end of data")
}

async fn quit(mut c: SmtpClient<BoxIo>) {
    c.expect("QUIT", "221 ").await;
    c.expect_closed().await.expect("the server closes after QUIT");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Splits a stored message into the trace header the server prepended and the rest, checking
/// that the rest is exactly `body` and the prefix is one well-formed Received: header.
fn split_received<'a>(stored: &'a [u8], body: &[u8]) -> &'a str {
    assert!(
        stored.ends_with(body),
        "the stored message does not end with the bytes sent:\n{}",
        String::from_utf8_lossy(&stored[..stored.len().min(2000)])
    );
    let prefix = std::str::from_utf8(&stored[..stored.len() - body.len()]).expect("the trace header is UTF-8");
    assert!(prefix.starts_with("Received: from "), "no Received: header first: {prefix:?}");
    assert!(prefix.ends_with("\r\n"), "the trace header does not end with CRLF: {prefix:?}");
    let lines: Vec<&str> = prefix.trim_end_matches("\r\n").split("\r\n").collect();
    assert!(
        lines[1..].iter().all(|l| l.starts_with('\t')),
        "more than one header (or a bad fold) was prepended: {prefix:?}"
    );
    prefix
}

/// A message with what tends to break byte-exactness: dot lines, 8-bit text, a very long line,
/// blank lines, trailing white space, tabs, and a body larger than the chunks of the gRPC hop.
fn tricky_message(subject: &str) -> Vec<u8> {
    let mut m = format!(
        "From: Sender <sender@remote.example>\r\nTo: Alice <alice@example.com>\r\nSubject: {subject}\r\n\
         Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@remote.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
         .a line that starts with a dot\r\n..two dots\r\n.\r\n...\r\n\r\n\r\nGrüße, ñ, €, 日本語\r\n\
         trailing spaces   \r\n\ttab first\r\n"
    )
    .into_bytes();
    m.extend_from_slice(&[b'L'; 2000]);
    m.extend_from_slice(b"\r\n");
    for i in 0..6000 {
        m.extend_from_slice(format!("line {i:05} of the long part of the body, .dot inside.\r\n").as_bytes());
    }
    m.extend_from_slice(b"the end\r\n");
    m
}

/// A message sent over SMTP is stored exactly: read back whole through the mailbox API it is
/// the Received: header the server added, then the very bytes the client sent (after the
/// dot-stuffing is undone), over DATA and over BDAT.
#[tokio::test]
async fn message_is_stored_byte_for_byte() {
    let server = SmtpTestServer::start(Limits::default()).await;
    let mut c = server.connect_ehlo(ListenerKind::Mx).await;

    let body = tricky_message("over-data");
    assert!(body.len() > 300 * 1024, "the message must span several gRPC chunks");
    let reply = send_message(&mut c, "sender@remote.example", &["alice@example.com"], &body).await;
    assert!(reply.last().starts_with("250 2.0.0 OK queued as "), "{reply:?}");

    // BDAT: no dot-stuffing, so a CRLF . CRLF inside a chunk is plain content.
    let mut raw = tricky_message("over-bdat");
    raw.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
    c.expect("MAIL FROM:<sender@remote.example> BODY=8BITMIME", "250 2.1.0").await;
    c.expect("RCPT TO:<alice@example.com>", "250 2.1.5").await;
    let (first, rest) = raw.split_at(1000);
    c.send(format!("BDAT {}\r\n", first.len()).as_bytes()).await.unwrap();
    c.send(first).await.unwrap();
    c.expect_reply("250 2.0.0 1000 octets received").await;
    c.send(format!("BDAT {} LAST\r\n", rest.len()).as_bytes()).await.unwrap();
    c.send(rest).await.unwrap();
    c.expect_reply("250 2.0.0 OK queued as ").await;
    quit(c).await;

    let inbox = server.inbox("alice@example.com").await;
    assert_eq!(inbox.len(), 2, "two messages were sent");
    for (stored, sent) in inbox.iter().zip([&body, &raw]) {
        let received = split_received(stored, sent);
        assert!(
            received.starts_with("Received: from client.test ([127.0.0.1])\r\n\tby mx.test (Tern) with ESMTP id "),
            "{received:?}"
        );
        assert!(received.contains("\r\n\tfor <alice@example.com>;\r\n\t"), "no for clause: {received:?}");
    }
}

/// RFC 1870: the size limit is about what the client sends. A message of exactly the
/// announced SIZE must be accepted, whatever trace headers the server adds; one byte more is
/// refused.
#[tokio::test]
async fn message_of_exactly_the_size_limit_is_accepted() {
    let limits = Limits { max_message_bytes: 2000, ..Default::default() };
    let server = SmtpTestServer::start(limits).await;
    let mut c = server.connect_ehlo(ListenerKind::Mx).await;
    let head = b"Subject: exactly at the limit\r\n\r\n".to_vec();
    let mut body = head.clone();
    while body.len() + 2 * 50 <= 2000 {
        body.extend_from_slice(&[b'a'; 48]);
        body.extend_from_slice(b"\r\n");
    }
    body.resize(2000 - 2, b'b');
    body.extend_from_slice(b"\r\n");
    assert_eq!(body.len(), 2000);
    c.expect("MAIL FROM:<sender@remote.example> SIZE=2000", "250 2.1.0").await;
    c.expect("RCPT TO:<alice@example.com>", "250 2.1.5").await;
    c.expect("DATA", "354 ").await;
    c.send(&dot_stuff(&body)).await.unwrap();
    c.expect_reply("250 2.0.0 OK queued as ").await;

    let mut over = body.clone();
    over.insert(head.len(), b'x');
    c.expect("MAIL FROM:<sender@remote.example>", "250 2.1.0").await;
    c.expect("RCPT TO:<alice@example.com>", "250 2.1.5").await;
    c.expect("DATA", "354 ").await;
    c.send(&dot_stuff(&over)).await.unwrap();
    c.expect_reply("552 5.3.4").await;
    quit(c).await;

    let inbox = server.inbox("alice@example.com").await;
    assert_eq!(inbox.len(), 1);
    split_received(&inbox[0], &body);
}

/// Tern is never an open relay: who may send to whom, listener by listener.
#[tokio::test]
async fn open_relay_matrix() {
    let server = SmtpTestServer::start(Limits::default()).await;
    let mut admin = server.mailbox.admin_client().await;
    admin
        .add_alias(tern_proto::v1::AddAliasRequest {
            alias: "al@example.com".into(),
            target: "alice@example.com".into(),
        })
        .await
        .expect("add an alias of alice");

    // MX, unauthenticated, to a domain that is not local: refused at RCPT.
    let mut c = server.connect_ehlo(ListenerKind::Mx).await;
    c.expect("MAIL FROM:<sender@remote.example>", "250 2.1.0").await;
    c.expect("RCPT TO:<someone@elsewhere.example>", "550 5.7.1").await;
    // A local sender address does not help on MX.
    c.expect("RSET", "250 ").await;
    c.expect("MAIL FROM:<alice@example.com>", "250 2.1.0").await;
    c.expect("RCPT TO:<someone@elsewhere.example>", "550 5.7.1").await;
    // Local to local on MX is what MX is for.
    c.expect("RCPT TO:<bob@example.com>", "250 2.1.5").await;
    c.expect("DATA", "354 ").await;
    c.send(&dot_stuff(b"From: alice@example.com\r\nSubject: local to local\r\n\r\nhi\r\n")).await.unwrap();
    c.expect_reply("250 2.0.0 OK queued as ").await;
    quit(c).await;

    // Submission without AUTH, before and after STARTTLS: 530 at MAIL.
    let mut c = server.connect_ehlo(ListenerKind::Submission).await;
    c.expect("MAIL FROM:<alice@example.com>", "530 5.7.0").await;
    c.expect("STARTTLS", "220 ").await;
    let (io, rest) = c.into_parts();
    assert!(rest.is_empty());
    let mut c = SmtpClient::new(Box::new(server.tls_handshake(io).await.expect("STARTTLS handshake")) as BoxIo);
    c.expect("EHLO client.test", "250 ").await;
    c.expect("MAIL FROM:<alice@example.com>", "530 5.7.0").await;
    c.expect("RCPT TO:<someone@elsewhere.example>", "503 5.5.1").await;
    quit(c).await;
    // The same on the implicit TLS port.
    let mut c = server.connect_ehlo(ListenerKind::Submissions).await;
    c.expect("MAIL FROM:<alice@example.com>", "530 5.7.0").await;
    quit(c).await;

    // Authenticated, with a forged envelope sender: 553 at MAIL.
    let mut c = server.connect_authenticated("alice@example.com").await;
    c.expect("MAIL FROM:<bob@example.com>", "553 5.7.1").await;
    c.expect("MAIL FROM:<alice@elsewhere.example>", "553 5.7.1").await;
    // Authenticated with its own envelope sender but someone else's From: header: 553 at the
    // end of data, and nothing is queued or delivered.
    let forged = b"From: Bob <bob@example.com>\r\nTo: someone@elsewhere.example\r\nSubject: forged\r\n\r\nhi\r\n";
    let reply =
        send_message(&mut c, "alice@example.com", &["someone@elsewhere.example", "carol@example.com"], forged).await;
    assert!(reply.last().starts_with("553 5.7.1"), "{reply:?}");
    let forged_group = b"From: alice@example.com, bob@example.com\r\nSubject: forged too\r\n\r\nhi\r\n";
    let reply = send_message(&mut c, "alice@example.com", &["someone@elsewhere.example"], forged_group).await;
    assert!(reply.last().starts_with("553 5.7.1"), "a second From: address must be owned too: {reply:?}");
    assert!(server.queue().await.is_empty(), "a refused message was queued");
    assert!(server.inbox("carol@example.com").await.is_empty(), "a refused message was delivered");

    // Authenticated as itself: relayed, which means queued for the relay.
    let own = b"From: Alice <alice@example.com>\r\nTo: someone@elsewhere.example\r\nSubject: relayed\r\n\r\nhi\r\n";
    let reply = send_message(&mut c, "alice@example.com", &["someone@elsewhere.example"], own).await;
    assert!(reply.last().starts_with("250 2.0.0 OK queued as "), "{reply:?}");
    let queue_id = reply.last().rsplit(' ').next().unwrap().to_string();
    // An alias of the account is its own address too.
    let alias = b"From: Al <al@example.com>\r\nTo: other@elsewhere.example\r\nSubject: from the alias\r\n\r\nhi\r\n";
    let reply = send_message(&mut c, "al@example.com", &["other@elsewhere.example"], alias).await;
    assert!(reply.last().starts_with("250 2.0.0 OK queued as "), "{reply:?}");
    quit(c).await;

    let queue = server.queue().await;
    assert_eq!(queue.len(), 2, "{queue:?}");
    let entry = queue.iter().find(|q| q.queue_id == queue_id).expect("the queue id of the 250 reply is in the queue");
    assert_eq!(entry.mail_from, "alice@example.com");
    let rcpts: Vec<&str> = entry.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(rcpts, ["someone@elsewhere.example"]);
    assert_eq!(entry.account_id, server.account_id("alice@example.com"));
    let inbox = server.inbox("bob@example.com").await;
    assert_eq!(inbox.len(), 1, "only the local-to-local message reached bob");
    assert!(contains(&inbox[0], b"Subject: local to local"));
}

/// A message of `size` bytes (CRLF lines) with a subject.
fn sized_message(subject: &str, size: usize) -> Vec<u8> {
    let mut m = format!("From: dave@example.com\r\nSubject: {subject}\r\n\r\n").into_bytes();
    while m.len() + 50 <= size {
        m.extend_from_slice(&[b'q'; 48]);
        m.extend_from_slice(b"\r\n");
    }
    m
}

/// Three local recipients, one of them with a full mailbox. With SIZE the sender learns it at
/// RCPT (452 4.2.2) and the others get the message.
#[tokio::test]
async fn over_quota_recipient_is_refused_at_rcpt_with_size() {
    let server = SmtpTestServer::start(Limits::default()).await;
    server.set_quota("carol@example.com", 1000).await;
    let body = sized_message("quota with SIZE", 5000);
    let mut c = server.connect_ehlo(ListenerKind::Mx).await;
    c.expect(&format!("MAIL FROM:<dave@example.com> SIZE={}", body.len()), "250 2.1.0").await;
    c.expect("RCPT TO:<alice@example.com>", "250 2.1.5").await;
    c.expect("RCPT TO:<carol@example.com>", "452 4.2.2 <carol@example.com>: mailbox full").await;
    c.expect("RCPT TO:<bob@example.com>", "250 2.1.5").await;
    c.expect("DATA", "354 ").await;
    c.send(&dot_stuff(&body)).await.unwrap();
    c.expect_reply("250 2.0.0 OK queued as ").await;
    // A message that fits is still welcome in the small mailbox.
    c.expect("MAIL FROM:<dave@example.com> SIZE=200", "250 2.1.0").await;
    c.expect("RCPT TO:<carol@example.com>", "250 2.1.5").await;
    c.expect("RSET", "250 ").await;
    quit(c).await;

    for (rcpt, want) in [("alice@example.com", 1), ("bob@example.com", 1), ("carol@example.com", 0)] {
        let inbox = server.inbox(rcpt).await;
        assert_eq!(inbox.len(), want, "messages for {rcpt}");
        for m in &inbox {
            split_received(m, &body);
        }
    }
    assert!(server.inbox("dave@example.com").await.is_empty(), "no bounce: the sender was told at RCPT");
}

/// Without SIZE the full mailbox shows only when the message is stored: the sender gets 250
/// (the others have it) and a delivery status notification naming the failed recipient, in
/// its own INBOX when it is local, on the outbound queue when it is not.
#[tokio::test]
async fn over_quota_at_delivery_bounces_to_the_sender() {
    let server = SmtpTestServer::start(Limits::default()).await;
    server.set_quota("carol@example.com", 1000).await;
    let body = sized_message("quota without SIZE", 5000);
    let mut c = server.connect_ehlo(ListenerKind::Mx).await;
    let reply =
        send_message(&mut c, "dave@example.com", &["alice@example.com", "carol@example.com", "bob@example.com"], &body)
            .await;
    assert!(reply.last().starts_with("250 2.0.0 OK queued as "), "{reply:?}");
    // The same from a remote sender: the bounce goes to the queue, from the null sender.
    let reply =
        send_message(&mut c, "someone@remote.example", &["alice@example.com", "carol@example.com"], &body).await;
    assert!(reply.last().starts_with("250 2.0.0 OK queued as "), "{reply:?}");
    quit(c).await;

    assert_eq!(server.inbox("alice@example.com").await.len(), 2);
    assert_eq!(server.inbox("bob@example.com").await.len(), 1);
    assert!(server.inbox("carol@example.com").await.is_empty(), "carol's mailbox is full");

    let bounces = server.inbox("dave@example.com").await;
    assert_eq!(bounces.len(), 1, "one delivery status notification for the local sender");
    let dsn = String::from_utf8_lossy(&bounces[0]);
    for needle in [
        "Content-Type: multipart/report; report-type=delivery-status",
        "Content-Type: message/delivery-status",
        "Final-Recipient: rfc822; carol@example.com",
        "Action: failed",
        "Status: 5.2.2",
        "Subject: quota without SIZE",
    ] {
        assert!(dsn.contains(needle), "the DSN lacks {needle:?}:\n{dsn}");
    }
    assert!(!dsn.contains("Final-Recipient: rfc822; alice@example.com"), "alice got the message:\n{dsn}");

    let queue = server.queue().await;
    assert_eq!(queue.len(), 1, "one bounce for the remote sender: {queue:?}");
    assert_eq!(queue[0].mail_from, "", "a bounce has the null sender");
    let rcpts: Vec<&str> = queue[0].recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(rcpts, ["someone@remote.example"]);
}

/// STARTTLS (RFC 3207): what the client pipelined after STARTTLS is thrown away, neither
/// answered in plain text nor run inside TLS; the session starts over under TLS, where AUTH
/// is offered (on submission) and STARTTLS is not.
#[tokio::test]
async fn starttls_discards_pipelined_commands() {
    let server = SmtpTestServer::start(Limits::default()).await;
    for kind in [ListenerKind::Submission, ListenerKind::Mx] {
        let mut c = server.connect_ehlo(kind).await;
        c.send(b"STARTTLS\r\nNOOP\r\n").await.unwrap();
        let reply = c.read_reply().await.expect("the reply to STARTTLS");
        assert_eq!(reply.lines, ["220 2.0.0 Ready to start TLS"]);
        // Anything the server wrote in plain text after the 220 (an answer to NOOP) would
        // break the handshake.
        let (io, rest) = c.into_parts();
        assert!(rest.is_empty(), "plain text after the 220: {:?}", String::from_utf8_lossy(&rest));
        let tls = server.tls_handshake(io).await.expect("TLS handshake after STARTTLS");
        let mut c = SmtpClient::new(Box::new(tls) as BoxIo);
        // The first reply under TLS must be the one to EHLO, not one to the discarded NOOP.
        c.send(b"EHLO client.test\r\n").await.unwrap();
        let ehlo = c.read_reply().await.expect("EHLO under TLS");
        assert_eq!(ehlo.lines[0], "250-mx.test greets client.test", "{ehlo:?}");
        let caps = ehlo.texts();
        assert!(!caps.contains(&"STARTTLS"), "STARTTLS offered twice: {caps:?}");
        assert_eq!(caps.contains(&"AUTH PLAIN LOGIN"), kind == ListenerKind::Submission, "{kind:?}: {caps:?}");
        c.expect("STARTTLS", "503 5.5.1").await;

        let (from, subject) = if kind == ListenerKind::Submission {
            c.expect(&format!("AUTH PLAIN {}", auth_plain("alice@example.com", "alice-pw")), "235 2.7.0").await;
            ("alice@example.com", "over STARTTLS and AUTH")
        } else {
            ("sender@remote.example", "over STARTTLS on MX")
        };
        let body = format!("From: {from}\r\nSubject: {subject}\r\n\r\nsecret\r\n").into_bytes();
        let reply = send_message(&mut c, from, &["bob@example.com"], &body).await;
        assert!(reply.last().starts_with("250 2.0.0"), "{reply:?}");
        quit(c).await;
    }
    let inbox = server.inbox("bob@example.com").await;
    assert_eq!(inbox.len(), 2);
    let first = String::from_utf8_lossy(&inbox[0]);
    assert!(first.contains("with ESMTPSA id") && first.contains("(using TLS"), "{first}");
    let second = String::from_utf8_lossy(&inbox[1]);
    assert!(second.contains("with ESMTPS id") && second.contains("(using TLS"), "{second}");
}

/// AUTH PLAIN and LOGIN over implicit TLS, right and wrong; the third failure in a session
/// closes it with 421.
#[tokio::test]
async fn auth_plain_and_login_over_implicit_tls() {
    let server = SmtpTestServer::start(Limits::default()).await;
    let b64 = |s: &str| base64_encode(s.as_bytes());

    let mut c = server.connect_ehlo(ListenerKind::Submissions).await;
    c.expect(&format!("AUTH PLAIN {}", auth_plain("alice@example.com", "nope")), "535 5.7.8").await;
    c.expect("MAIL FROM:<alice@example.com>", "530 5.7.0").await;
    c.expect(&format!("AUTH PLAIN {}", auth_plain("alice@example.com", "alice-pw")), "235 2.7.0").await;
    c.expect("MAIL FROM:<alice@example.com>", "250 2.1.0").await;
    quit(c).await;

    let mut c = server.connect_ehlo(ListenerKind::Submissions).await;
    c.expect("AUTH LOGIN", "334 VXNlcm5hbWU6").await;
    c.expect(&b64("bob@example.com"), "334 UGFzc3dvcmQ6").await;
    c.expect(&b64("wrong"), "535 5.7.8").await;
    c.expect("AUTH LOGIN", "334 VXNlcm5hbWU6").await;
    c.expect(&b64("bob@example.com"), "334 UGFzc3dvcmQ6").await;
    c.expect(&b64("bob-pw"), "235 2.7.0").await;
    c.expect("MAIL FROM:<bob@example.com>", "250 2.1.0").await;
    c.expect("RCPT TO:<alice@example.com>", "250 2.1.5").await;
    quit(c).await;

    let mut c = server.connect_ehlo(ListenerKind::Submissions).await;
    c.expect(&format!("AUTH PLAIN {}", auth_plain("carol@example.com", "1")), "535 5.7.8").await;
    c.expect(&format!("AUTH PLAIN {}", auth_plain("carol@example.com", "2")), "535 5.7.8").await;
    c.expect(&format!("AUTH PLAIN {}", auth_plain("carol@example.com", "3")), "421 4.7.0").await;
    c.expect_closed().await.expect("the session is closed after three failures");

    // Passwords are per account: alice's does not open bob's mailbox.
    let mut c = server.connect_ehlo(ListenerKind::Submissions).await;
    c.expect(&format!("AUTH PLAIN {}", auth_plain("bob@example.com", "alice-pw")), "535 5.7.8").await;
    quit(c).await;
}

/// The published SMTP smuggling variants: a bare LF or CR around the dot is not an end of
/// data, so the "second message" hidden in the data is content of the first, which arrives
/// as one message, and nothing is sent to the smuggled recipient.
#[tokio::test]
async fn smtp_smuggling_is_one_message() {
    let server = SmtpTestServer::start(Limits::default()).await;
    let variants: [&[u8]; 10] = [
        b"\n.\n",
        b"\n.\r\n",
        b"\r\n.\n",
        b"\r.\r",
        b"\r\n.\r",
        b"\r.\r\n",
        b"\n.\r",
        b"\r.\n",
        b"\r\n\x00.\r\n",
        b"\r\n.\r\r\n",
    ];
    for (i, smuggle) in variants.iter().enumerate() {
        let mut c = server.connect_ehlo(ListenerKind::Mx).await;
        c.expect("MAIL FROM:<sender@remote.example>", "250 2.1.0").await;
        c.expect("RCPT TO:<alice@example.com>", "250 2.1.5").await;
        c.expect("DATA", "354 ").await;
        let mut data = format!("From: sender@remote.example\r\nSubject: smuggling {i}\r\n\r\nharmless").into_bytes();
        data.extend_from_slice(smuggle);
        data.extend_from_slice(
            b"MAIL FROM:<evil@x.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n\
              From: ceo@example.com\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\nQUIT\r\n",
        );
        // Everything at once, as an attacker would, then the real end of data and QUIT.
        let mut all = data.clone();
        all.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
        c.send(&all).await.unwrap();
        let reply = c.read_reply().await.expect("the reply to the end of data");
        assert!(reply.last().starts_with("250 2.0.0 OK queued as "), "variant {smuggle:?}: {reply:?}");
        let reply = c.read_reply().await.expect("the reply to QUIT");
        assert!(reply.last().starts_with("221 "), "variant {smuggle:?}: a smuggled command was run: {reply:?}");
        c.expect_closed().await.unwrap();
    }
    let inbox = server.inbox("alice@example.com").await;
    assert_eq!(inbox.len(), variants.len(), "one message per variant");
    for (i, m) in inbox.iter().enumerate() {
        assert!(contains(m, format!("Subject: smuggling {i}\r\n").as_bytes()));
        assert!(contains(m, b"MAIL FROM:<evil@x.example>\r\nRCPT TO:<bob@example.com>\r\n"), "message {i}");
        assert!(contains(m, b"Subject: smuggled"), "message {i}");
        // Stored with CRLF only, so that nothing downstream can find a hidden end of data.
        assert!(!m.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'), "bare LF stored in message {i}");
        assert!(!m.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n'), "bare CR stored in message {i}");
    }
    assert!(server.inbox("bob@example.com").await.is_empty(), "the smuggled message was delivered");
}

/// In the command phase a bare LF ends a line too (some clients send it), and a bare CR is
/// part of the line (so it never splits one line into two commands).
#[tokio::test]
async fn bare_line_endings_in_commands() {
    let server = SmtpTestServer::start(Limits::default()).await;
    let mut c = server.connect(ListenerKind::Mx).await;
    c.expect_reply("220 ").await;
    c.send(b"EHLO client.test\nNOOP\n").await.unwrap();
    c.expect_reply("250 STARTTLS").await;
    c.expect_reply("250 2.0.0 OK").await;
    // One line with a CR inside: one unknown command, not NOOP then RSET.
    c.send(b"NOOP\rRSET\r\nRSET\r\r\nNOOP\r\n").await.unwrap();
    c.expect_reply("500 5.5.2").await;
    c.expect_reply("500 5.5.2").await;
    c.expect_reply("250 2.0.0 OK").await;
    quit(c).await;
}

/// How long a real client program may run.
const CLIENT_LIMIT: Duration = Duration::from_secs(60);

fn subjects(messages: &[Vec<u8>]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            let text = String::from_utf8_lossy(m);
            text.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap_or("").to_string()
        })
        .collect()
}

/// Python's smtplib, a real client: STARTTLS and AUTH PLAIN on submission, implicit TLS and
/// AUTH LOGIN on submissions, MX without AUTH; local and remote recipients.
#[tokio::test]
async fn python_smtplib_client() {
    let server = SmtpTestServer::start(Limits::default()).await;
    let args = [
        server.mx.port().to_string(),
        server.submission.port().to_string(),
        server.submissions.port().to_string(),
        server.ca_cert.display().to_string(),
    ];
    run_python_script("smtplib_client.py", args, "the smtplib client", CLIENT_LIMIT).await;
    assert_eq!(subjects(&server.inbox("bob@example.com").await), ["smtplib local", "smtplib login"]);
    assert_eq!(subjects(&server.inbox("carol@example.com").await), ["smtplib mx"]);
    let queue = server.queue().await;
    assert_eq!(queue.len(), 1, "{queue:?}");
    assert_eq!(queue[0].recipients[0].address, "friend@remote.example");
    assert_eq!(queue[0].mail_from, "alice@example.com");
}

/// swaks (Debian package swaks), the Swiss army knife for SMTP: MX with pipelining, a relay
/// attempt, submission with STARTTLS and AUTH PLAIN, submissions with implicit TLS and AUTH
/// LOGIN.
#[tokio::test]
#[ignore = "needs swaks; run by cargo xtask ci"]
async fn swaks_client() {
    const HINT: &str = "swaks is not installed: apt-get install swaks";
    let server = SmtpTestServer::start(Limits::default()).await;
    let swaks = |port: u16, from: &str, to: &str, subject: &str, extra: &[&str]| {
        let mut c = Command::new("swaks");
        c.args(["--server", "127.0.0.1", "--port", &port.to_string(), "--helo", "swaks.test", "--timeout", "10"])
            .args(["--from", from, "--to", to, "--header", &format!("Subject: {subject}")])
            .args(["--body", "sent by swaks\n.a line that starts with a dot\n"])
            .args(extra);
        c
    };
    let check = |out: &std::process::Output, what: &str| {
        assert!(
            out.status.success(),
            "swaks ({what}) failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };

    let out = run_client(
        swaks(server.mx.port(), "someone@remote.example", "carol@example.com", "swaks mx", &["--pipeline"]),
        HINT,
        CLIENT_LIMIT,
    )
    .await;
    check(&out, "MX");
    let out = run_client(
        swaks(server.mx.port(), "someone@remote.example", "other@remote.example", "relay", &[]),
        HINT,
        CLIENT_LIMIT,
    )
    .await;
    assert!(!out.status.success(), "swaks relayed through MX");
    assert!(String::from_utf8_lossy(&out.stdout).contains("550 5.7.1"), "{}", String::from_utf8_lossy(&out.stdout));
    let auth = ["--auth-user", "alice@example.com", "--auth-password", "alice-pw"];
    let out = run_client(
        swaks(
            server.submission.port(),
            "alice@example.com",
            "bob@example.com",
            "swaks submission",
            &[&["--tls", "--auth", "PLAIN"][..], &auth[..]].concat(),
        ),
        HINT,
        CLIENT_LIMIT,
    )
    .await;
    check(&out, "submission");
    let out = run_client(
        swaks(
            server.submissions.port(),
            "alice@example.com",
            "bob@example.com",
            "swaks submissions",
            &[&["--tlsc", "--auth", "LOGIN"][..], &auth[..]].concat(),
        ),
        HINT,
        CLIENT_LIMIT,
    )
    .await;
    check(&out, "submissions");

    assert_eq!(subjects(&server.inbox("carol@example.com").await), ["swaks mx"]);
    assert_eq!(subjects(&server.inbox("bob@example.com").await), ["swaks submission", "swaks submissions"]);
    let stored = String::from_utf8_lossy(&server.inbox("bob@example.com").await[0]).into_owned();
    assert!(stored.contains("\r\n.a line that starts with a dot\r\n"), "dot-stuffing was not undone:\n{stored}");
}

/// A small deterministic generator (xorshift64*), so that a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Pieces that steer garbage into the corners of the protocol: half commands, commands that
/// switch the session into reading data, TLS or SASL, end-of-data look-alikes, bad bytes.
const HOSTILE_TOKENS: &[&[u8]] = &[
    b"EHLO x\r\n",
    b"HELO x\r\n",
    b"MAIL FROM:<a@b.example>\r\n",
    b"MAIL FROM:<",
    b"RCPT TO:<alice@example.com>\r\n",
    b"RCPT TO:<postmaster>\r\n",
    b"RCPT TO:<",
    b"DATA\r\n",
    b"BDAT 7\r\n",
    b"BDAT 0 LAST\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH LOGIN\r\n",
    b"AUTH PLAIN AGFAYgBj\r\n",
    b"STARTTLS\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY\r\n",
    b"\r\n.\r\n",
    b".\r\n",
    b"\r",
    b"\n",
    b"\0",
    b" SIZE=99999999999999999999",
    b" SMTPUTF8",
    b" BODY=BINARYMIME",
    b"\xff\xfe\xc3\x28",
    b"=?utf-8?",
    b"<>",
];

/// Chunk sizes that swallow the rest of the input as message data; rare, or they would end
/// most sessions early.
const HOSTILE_SINKS: &[&[u8]] =
    &[b"BDAT 100000 LAST\r\n", b"BDAT 18446744073709551615\r\n", b"BDAT 99999999999999999999999\r\n"];

fn garbage(rng: &mut Rng) -> Vec<u8> {
    let len = rng.below(8192);
    let mut out = Vec::with_capacity(len + 128);
    // A quarter of the sessions start a real transaction, so that the garbage is message data.
    match rng.below(8) {
        0 => out.extend_from_slice(b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n"),
        1 => {
            out.extend_from_slice(b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.com>\r\nBDAT 3000\r\n")
        }
        _ => {}
    }
    while out.len() < len {
        match rng.below(20) {
            0..=8 => out.extend_from_slice(HOSTILE_TOKENS[rng.below(HOSTILE_TOKENS.len())]),
            9 if rng.below(20) == 0 => out.extend_from_slice(HOSTILE_SINKS[rng.below(HOSTILE_SINKS.len())]),
            9 => out.extend_from_slice(b"\r\n"),
            10..=15 => {
                for _ in 0..1 + rng.below(64) {
                    out.push(rng.next() as u8);
                }
            }
            16..=18 => {
                // A long line, sometimes past every line limit.
                let n = 1 + rng.below(6000);
                out.extend(std::iter::repeat_n(b'A' + rng.below(26) as u8, n));
            }
            _ => out.extend_from_slice(&[b'\r', b'\n', b'.', b'\r', b'\n'][rng.below(5)..]),
        }
    }
    out
}

/// Panics in this process whose location is outside the tests themselves: a session task that
/// panics would otherwise only look like a closed connection.
fn foreign_panics() -> &'static std::sync::Mutex<Vec<String>> {
    static PANICS: std::sync::OnceLock<std::sync::Mutex<Vec<String>>> = std::sync::OnceLock::new();
    PANICS.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let location = info.location().map(|l| l.file().to_string()).unwrap_or_default();
            if !location.starts_with("tests/")
                && let Some(p) = PANICS.get()
            {
                p.lock().unwrap_or_else(|e| e.into_inner()).push(info.to_string());
            }
            previous(info);
        }));
        std::sync::Mutex::new(Vec::new())
    })
}

/// Throws garbage at one connection, reading replies as they come; returns what the server
/// sent. The server must close the connection once the client has stopped sending.
async fn hostile_session(addr: std::net::SocketAddr, input: Vec<u8>, seed: u64) -> (Vec<u8>, bool) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let reader = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match tokio::time::timeout(Duration::from_secs(15), rd.read(&mut buf)).await {
                Err(_) => panic!("seed {seed}: the server neither answered nor closed within 15 s"),
                Ok(Ok(0)) => return (got, false),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Ok(Err(_)) => return (got, true),
            }
        }
    });
    let mut rng = Rng(seed);
    let mut rest = &input[..];
    while !rest.is_empty() {
        let n = (1 + rng.below(1500)).min(rest.len());
        if wr.write_all(&rest[..n]).await.is_err() {
            break;
        }
        rest = &rest[n..];
        if rng.below(4) == 0 {
            tokio::task::yield_now().await;
        }
    }
    let _ = wr.shutdown().await;
    reader.await.expect("the reader task")
}

/// Checks that everything the server sent is well-formed replies, up to a switch to TLS.
fn check_replies(got: &[u8], reset: bool, seed: u64, first: &str) {
    let mut rest = got;
    let mut n = 0;
    while !rest.is_empty() {
        let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
            assert!(reset, "seed {seed}: a reply without CRLF: {:?}", String::from_utf8_lossy(rest));
            return;
        };
        let line = std::str::from_utf8(&rest[..end]).unwrap_or_else(|_| panic!("seed {seed}: reply is not UTF-8"));
        let b = line.as_bytes();
        assert!(
            b.len() >= 4
                && (b'2'..=b'5').contains(&b[0])
                && b[1..3].iter().all(u8::is_ascii_digit)
                && b" -".contains(&b[3]),
            "seed {seed}: malformed reply line {line:?}"
        );
        assert!(!line.contains('\r') && !line.contains('\n'), "seed {seed}: {line:?}");
        if n == 0 {
            assert_eq!(line, first, "seed {seed}: no greeting first");
        }
        n += 1;
        rest = &rest[end + 2..];
        if line.starts_with("220 ") && line.ends_with("Ready to start TLS") {
            // What follows is the server's side of a failed TLS handshake.
            return;
        }
    }
}

/// Random bytes and protocol fragments against every listener: the server answers with
/// well-formed replies, closes each connection once the client is done, never panics, and
/// then serves a normal session as if nothing happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_input_does_not_hurt_the_server() {
    let panics = foreign_panics();
    let limits = Limits { max_errors: 1000, max_line: 1000, ..Default::default() };
    let server = SmtpTestServer::start(limits).await;
    let greeting = format!("220 {HOSTNAME} ESMTP Tern");
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let mut codes = std::collections::BTreeSet::new();
    for batch in 0..25 {
        let mut sessions = JoinSet::new();
        for i in 0..8 {
            let seed = rng.next() | 1;
            let input = garbage(&mut Rng(seed));
            let kind = match (batch * 8 + i) % 8 {
                0 => ListenerKind::Submission,
                1 => ListenerKind::Submissions,
                _ => ListenerKind::Mx,
            };
            let addr = server.addr(kind);
            sessions.spawn(async move { (kind, seed, hostile_session(addr, input, seed).await) });
        }
        while let Some(done) = sessions.join_next().await {
            let (kind, seed, (got, reset)) = done.expect("a hostile session panicked");
            if kind != ListenerKind::Submissions {
                check_replies(&got, reset, seed, &greeting);
            }
            codes.extend(String::from_utf8_lossy(&got).lines().filter_map(|l| l.get(..3)).map(str::to_string));
        }
    }
    let recorded = panics.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(recorded.is_empty(), "the server panicked: {recorded:#?}");
    // The garbage reached every phase: commands, errors, and message data.
    for code in ["220", "250", "354", "500", "501", "503"] {
        assert!(codes.contains(code), "no {code} reply in the whole run: {codes:?}");
    }

    for kind in [ListenerKind::Mx, ListenerKind::Submission, ListenerKind::Submissions] {
        let c = server.connect_ehlo(kind).await;
        quit(c).await;
    }
    let mut c = server.connect_ehlo(ListenerKind::Mx).await;
    let reply = send_message(
        &mut c,
        "sender@remote.example",
        &["alice@example.com"],
        b"Subject: after the storm\r\n\r\nok\r\n",
    )
    .await;
    assert!(reply.last().starts_with("250 2.0.0"), "{reply:?}");
    quit(c).await;
    let inbox = server.inbox("alice@example.com").await;
    assert_eq!(subjects(&inbox).last().map(String::as_str), Some("after the storm"));
}

/// Shutdown: an idle session is told 421 4.3.2 at once; a transaction in progress finishes
/// (and its message is stored) before its session gets the 421; new connections are refused.
#[tokio::test]
async fn shutdown_lets_transactions_finish() {
    let mut server = SmtpTestServer::start(Limits::default()).await;
    let mut idle = server.connect_ehlo(ListenerKind::Mx).await;
    let mut busy = server.connect_ehlo(ListenerKind::Mx).await;
    busy.expect("MAIL FROM:<sender@remote.example>", "250 2.1.0").await;
    let mx = server.mx;
    let stopping = tokio::spawn(async move {
        server.stop().await;
        server
    });
    idle.expect_reply("421 4.3.2").await;
    idle.expect_closed().await.expect("the idle session is closed");
    busy.expect("RCPT TO:<alice@example.com>", "250 2.1.5").await;
    busy.expect("DATA", "354 ").await;
    busy.send(&dot_stuff(b"Subject: during shutdown\r\n\r\nstill delivered\r\n")).await.unwrap();
    busy.expect_reply("250 2.0.0 OK queued as ").await;
    busy.expect_reply("421 4.3.2").await;
    busy.expect_closed().await.expect("the busy session is closed after its transaction");
    let server = tokio::time::timeout(Duration::from_secs(20), stopping).await.expect("stop in time").unwrap();
    assert!(TcpStream::connect(mx).await.is_err(), "the MX port still accepts connections");
    assert_eq!(subjects(&server.inbox("alice@example.com").await), ["during shutdown"]);
}

/// Mail arriving on the MX listener gets an Authentication-Results header from this server;
/// one a sender forged in our name is removed, and submitted mail gets none.
#[tokio::test]
async fn mx_mail_gets_authentication_results_and_forged_ones_are_removed() {
    use mail_auth::{common::parse::TxtRecordParser, dmarc::Dmarc, spf::Spf};
    // DNS answers the test controls: the cache holds them; the resolver points at a closed
    // loopback port, so nothing leaves the machine.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let verifier = tern_smtp::verify::Verifier::new(Some(closed)).unwrap();
    verifier.cache.add_txt("remote.example", Spf::parse(b"v=spf1 ip4:127.0.0.1 -all").unwrap());
    verifier.cache.add_txt("client.test", Spf::parse(b"v=spf1 -all").unwrap());
    verifier.cache.add_txt("_dmarc.remote.example", Dmarc::parse(b"v=DMARC1; p=none").unwrap());
    verifier.cache.add_no_txt("_dmarc.example");
    let server = SmtpTestServer::start_full(
        Limits::default(),
        tern_mailbox::Limits::default(),
        Some(std::sync::Arc::new(verifier)),
    )
    .await;
    let mut c = server.connect_ehlo(ListenerKind::Mx).await;
    let body = b"Authentication-Results: mx.test; spf=pass; dkim=pass; dmarc=pass\r\nFrom: news@remote.example\r\nSubject: checked\r\n\r\nHello.\r\n";
    let reply = send_message(&mut c, "bounce@remote.example", &["alice@example.com"], body).await;
    assert!(reply.last().starts_with("250 "), "{reply:?}");
    quit(c).await;
    let stored = String::from_utf8(server.inbox("alice@example.com").await.remove(0)).unwrap();
    let ours: Vec<&str> = stored.split("\r\n").filter(|l| l.starts_with("Authentication-Results:")).collect();
    assert_eq!(ours.len(), 1, "exactly our own header: {stored}");
    assert!(stored.contains("spf=pass (mx.test: domain of bounce@remote.example designates 127.0.0.1"), "{stored}");
    assert!(stored.contains("dmarc=pass"), "SPF aligns with From: {stored}");
    assert!(!stored.contains("dkim=pass"), "the forged header must be gone: {stored}");
}

/// Storage that cannot be reached means 451 (the sender retries), never a 250 that loses the
/// message; once it is back, the same session delivers, and exactly one copy is stored.
#[tokio::test]
async fn storage_outage_is_451_and_mail_flows_again_afterwards() {
    let mut server = SmtpTestServer::start(Limits::default()).await;
    let mut c = server.connect_ehlo(ListenerKind::Mx).await;
    c.expect("MAIL FROM:<sender@remote.example>", "250 2.1.0").await;
    c.expect("RCPT TO:<alice@example.com>", "250 2.1.5").await;
    server.mailbox.stop().await;
    c.expect("DATA", "354").await;
    c.send(b"Subject: during the outage\r\n\r\nbody\r\n.\r\n").await.unwrap();
    c.expect_reply("451 4.3.0").await;
    c.expect("MAIL FROM:<sender@remote.example>", "250 2.1.0").await;
    c.expect("RCPT TO:<alice@example.com>", "451 4.4.3").await;
    c.expect("RSET", "250").await;
    server.mailbox.restart().await;
    // The front-end reconnects by itself; give it a moment, bounded.
    let mut delivered = false;
    for _ in 0..50 {
        c.expect("MAIL FROM:<sender@remote.example>", "250 2.1.0").await;
        c.send(b"RCPT TO:<alice@example.com>\r\n").await.unwrap();
        let reply = c.read_reply().await.expect("a reply to RCPT");
        if reply.last().starts_with("250") {
            c.expect("DATA", "354 ").await;
            c.send(b"Subject: after the outage\r\n\r\nbody\r\n.\r\n").await.unwrap();
            let reply = c.read_reply().await.expect("the reply to the end of data");
            assert!(reply.last().starts_with("250 2.0.0"), "{reply:?}");
            delivered = true;
            break;
        }
        c.expect("RSET", "250").await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(delivered, "mail did not flow again after the mailbox service came back");
    quit(c).await;
    let inbox = server.inbox("alice@example.com").await;
    assert_eq!(inbox.len(), 1, "only the message that got 250 is stored");
    assert!(String::from_utf8_lossy(&inbox[0]).contains("after the outage"));
}

/// Behind a load balancer the PROXY v2 header carries the client's address, which is the one
/// the Received: header names.
#[tokio::test]
async fn proxy_protocol_v2_gives_the_client_address() {
    let server = SmtpTestServer::start(Limits::default()).await;
    let client: std::net::SocketAddr = "203.0.113.7:40000".parse().unwrap();
    let mut tcp = tokio::net::TcpStream::connect(server.mx_proxy).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, &tern_runtime::proxy::encode(client, server.mx_proxy)).await.unwrap();
    let mut c = tern_tests::smtp::SmtpClient::new(Box::new(tcp) as tern_tests::smtp::BoxIo);
    c.expect_reply("220 ").await;
    c.expect("EHLO client.test", "250").await;
    let reply =
        send_message(&mut c, "sender@remote.example", &["alice@example.com"], b"Subject: proxied\r\n\r\nhi\r\n").await;
    assert!(reply.last().starts_with("250 "), "{reply:?}");
    quit(c).await;
    let stored = String::from_utf8(server.inbox("alice@example.com").await.remove(0)).unwrap();
    assert!(stored.starts_with("Received: from client.test ([203.0.113.7])"), "{stored}");
    // A connection without the header is refused on that listener.
    let mut bare = tokio::net::TcpStream::connect(server.mx_proxy).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut bare, b"EHLO x\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), tokio::io::AsyncReadExt::read(&mut bare, &mut buf))
        .await
        .expect("closed promptly")
        .unwrap_or(0);
    assert_eq!(n, 0, "no SMTP greeting without a PROXY header: {:?}", String::from_utf8_lossy(&buf[..n]));
}
