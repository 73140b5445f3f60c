//! The IMAP front-end end to end over real loopback sockets: the transcripts of
//! `transcripts/imap/` with the client's bytes cut at many boundaries; other sessions' changes
//! across two front-ends (IDLE, NOOP, never an EXPUNGE during FETCH); a session's own APPEND and
//! COPY visible before their OK; the UID invariant under concurrent delivery; large LITERAL+
//! literals; graceful shutdown; and real clients (Python's imaplib, Debian's isync and
//! offlineimap3, which also syncs Tern with a Dovecot started by the test).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use tern_imap::config::{Limits, ListenerKind};
use tern_tests::{
    common::{ScriptOutput, play_served_transcript_file, run_client, run_python_script, run_transcript_dir},
    imap::{ImapClient, ImapFrontend, ImapTestServer, ImapTranscript, expunges, password_of},
    smtp::{BoxIo, Chunking, SmtpClient, run_steps},
};
use tokio::task::JoinSet;

const ALICE: &str = "alice@example.com";

/// How long a test waits for another session's change to show up.
const SYNC_WAIT: Duration = Duration::from_secs(5);

/// Every file in `transcripts/imap/` is one scenario, played with the client's input cut in
/// several ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transcripts() {
    run_transcript_dir("imap", 25, play_served_transcript_file::<ImapTranscript>).await;
}

/// The transcript runner notices a wrong IMAP response, so that a passing transcript means
/// something.
#[tokio::test]
async fn transcript_runner_detects_differences() {
    let good = "S: * OK *\nC: a1 LOGIN alice@example.com alice-pw\nS: a1 OK *\nC: a2 STATUS INBOX (MESSAGES SIZE UIDVALIDITY)\n\
                S: * STATUS \"INBOX\" (MESSAGES 3 SIZE 467 UIDVALIDITY {UIDVALIDITY})\nS: a2 OK STATUS completed\n\
                C: a3 LOGOUT\nS: * BYE Logging out\nS: a3 OK LOGOUT completed\nCLOSED\n";
    let wrong_size = good.replace("SIZE 467", "SIZE 468");
    let wrong_validity = good.replace("{UIDVALIDITY})", "{UIDVALIDITY:Trash})");
    let no_close = good.replace("CLOSED\n", "S: * OK\n");
    for (what, text, passes) in [
        ("good", good.to_string(), true),
        ("size", wrong_size, false),
        ("uidvalidity", wrong_validity, false),
        ("close", no_close, false),
    ] {
        let transcript = ImapTranscript::parse(what, &text).expect("a well-formed transcript");
        let (server, uidvalidity) = transcript.server().await;
        let io = server.connect_io(&server.frontend, ListenerKind::Imap).await;
        let mut client = SmtpClient::new(io).with_timeout(Duration::from_millis(500));
        let result = run_steps(&mut client, &transcript.steps(&uidvalidity).unwrap(), Chunking::Whole).await;
        assert_eq!(result.is_ok(), passes, "{what}: {result:?}");
    }
}

/// How long a real client program may run.
const CLIENT_LIMIT: Duration = Duration::from_secs(30);

/// One phase of `scripts/imaplib_client.py`; fails the test unless it succeeds, and returns its
/// `key value` lines.
async fn imaplib(server: &ImapTestServer, mx: SocketAddr, phase: &str) -> ScriptOutput {
    let args = [
        phase.to_string(),
        server.frontend.imap.port().to_string(),
        server.frontend.imaps.port().to_string(),
        server.ca_cert.display().to_string(),
        mx.port().to_string(),
    ];
    run_python_script("imaplib_client.py", args, &format!("imaplib phase {phase}"), CLIENT_LIMIT).await
}

/// COMPRESS=DEFLATE from Python's zlib on a real TLS connection: commands and answers both
/// compressed, the fetched message byte for byte, and a second COMPRESS refused.
#[tokio::test]
async fn compress_deflate() {
    let server = ImapTestServer::start(Limits::default(), false).await;
    let (mx, _smtp) = server.start_mx().await;
    imaplib(&server, mx, "send").await;
    let (_, _, messages) = server.inbox(ALICE).await;
    let sent = server.body(ALICE, messages[0].uid).await;
    let r = imaplib(&server, mx, "compress").await;
    let session = r.decoded("compressed_session");
    let text = String::from_utf8_lossy(&session);
    assert!(text.contains("z2 OK [READ-WRITE] SELECT completed"), "{text}");
    let literal = format!("* 1 FETCH (BODY[] {{{}}}\r\n", sent.len());
    let start = text.find(&literal).unwrap_or_else(|| panic!("no FETCH of the message in {text}")) + literal.len();
    assert_eq!(&session[start..start + sent.len()], &sent[..], "the message changed on the way");
    assert!(text.contains("z4 NO [COMPRESSIONACTIVE]"), "{text}");
    assert!(text.contains("* BYE Logging out\r\nz5 OK LOGOUT completed"), "{text}");
    let compressed: usize = r.value("compressed_bytes").parse().expect("a byte count");
    assert!(compressed < session.len(), "{compressed} compressed bytes for {} bytes of answers", session.len());
}

/// Python's imaplib, a real client: a message delivered with smtplib over SMTP is fetched over
/// STARTTLS byte for byte (compared with what the mailbox service stored); LIST, flags, SEARCH,
/// COPY; over implicit TLS APPEND, UID MOVE, EXPUNGE, and IDLE seeing another connection's
/// APPEND, STORE and EXPUNGE and an SMTP delivery.
#[tokio::test]
async fn python_imaplib_client() {
    let server = ImapTestServer::start(Limits::default(), false).await;
    let (mx, _smtp) = server.start_mx().await;

    let sent = imaplib(&server, mx, "send").await.decoded("sent");
    let (_, _, messages) = server.inbox(ALICE).await;
    assert_eq!(messages.len(), 1, "the SMTP delivery did not arrive");
    let uid = messages[0].uid;
    let stored = server.body(ALICE, uid).await;
    assert!(stored.ends_with(&sent), "SMTP changed the message:\n{}", String::from_utf8_lossy(&stored));
    assert!(stored.starts_with(b"Received: "), "no trace header from SMTP");

    let r = imaplib(&server, mx, "starttls").await;
    let list = r.text("list");
    for folder in ["\\Archive) \"/\" \"Archive\"", "\\Sent) \"/\" \"Sent\"", "\\Trash) \"/\" \"Trash\"", "\"INBOX\""] {
        assert!(list.contains(folder), "LIST lacks {folder}:\n{list}");
    }
    assert_eq!(r.value("exists"), "1");
    // imaplib speaks IMAP4rev1, and this is the first session to see the message: \Recent.
    assert_eq!(r.text("meta"), format!("1 (UID {uid} FLAGS (\\Recent) RFC822.SIZE {})", stored.len()));
    let peek = r.decoded("peek");
    assert!(
        peek == stored,
        "BODY.PEEK[] differs from the stored message:\n--- fetched\n{}\n--- stored\n{}",
        String::from_utf8_lossy(&peek),
        String::from_utf8_lossy(&stored)
    );
    assert_eq!(r.decoded("body"), stored, "BODY[] differs from the stored message");
    assert_eq!(r.text("flags_after_peek"), "1 (FLAGS (\\Recent))", "BODY.PEEK[] set a flag");
    assert_eq!(r.text("flags_after_body"), "1 (FLAGS (\\Seen \\Recent))", "BODY[] did not set \\Seen");
    assert_eq!(r.text("store"), "1 (FLAGS (\\Flagged \\Seen \\Recent))");
    assert_eq!(r.text("search_flagged"), "1");
    assert_eq!(r.text("search_subject"), "1");
    assert_eq!(r.text("search_none"), "");
    assert_eq!(r.text("uid_search"), uid.to_string());
    let (archive, archived) = server.folder(ALICE, "Archive").await;
    assert_eq!(r.text("copy"), format!("[COPYUID {} {uid} {}] COPY completed", archive.uidvalidity, archived[0].uid));
    assert_eq!(r.value("objectid"), "kept");
    assert_eq!(r.text("list_status"), "\"INBOX\" (MESSAGES 1 UNSEEN 0)");
    let esearch = r.text("esearch");
    assert!(esearch.starts_with("(TAG \"") && esearch.ends_with(&format!("\") UID MIN {uid} COUNT 1")), "{esearch}");
    assert_eq!(r.value("logout"), "BYE");
    let (_, _, messages) = server.inbox(ALICE).await;
    let mut flags = messages[0].flags.clone();
    flags.sort();
    assert_eq!(flags, ["\\Flagged", "\\Seen"], "the flags did not reach the mailbox");
    assert_eq!(server.body_in(ALICE, "Archive", archived[0].uid).await, stored, "COPY changed the message");

    let r = imaplib(&server, mx, "tls").await;
    let (inbox, _) = server.folder(ALICE, "INBOX").await;
    let (trash, trashed) = server.folder(ALICE, "Trash").await;
    assert_eq!(trashed.len(), 1, "UID MOVE did not reach Trash");
    assert!(r.text("append").starts_with(&format!("[APPENDUID {} ", inbox.uidvalidity)), "{r:?}");
    let appended = r.decoded("appended_body");
    assert_eq!(server.body_in(ALICE, "Trash", trashed[0].uid).await, appended, "MOVE changed the message");
    assert!(appended.starts_with(b"From: alice@example.com\r\n"), "{}", String::from_utf8_lossy(&appended));
    let meta = r.text("appended_meta");
    assert!(meta.contains("\\Seen") && meta.contains("\\Draft"), "APPEND lost its flags: {meta}");
    assert!(meta.contains("INTERNALDATE \"01-Jan-2026 00:00:00 +0000\""), "APPEND lost its date: {meta}");
    let mut flags = trashed[0].flags.clone();
    flags.sort();
    assert_eq!(flags, ["\\Draft", "\\Seen"]);
    assert!(r.text("move").starts_with(&format!("{} ", trash.uidvalidity)), "{r:?}");
    assert_eq!(r.text("move_expunge"), "2");
    assert_eq!(r.text("expunge"), "1");
    assert_eq!(r.value("exists_after_expunge"), "0");
    assert_eq!(r.value("archive"), "1");
    assert!(r.text("idle_exists").ends_with("* 1 EXISTS\r\n"), "{r:?}");
    assert!(r.text("idle_flags").contains("\\Flagged"), "{r:?}");
    assert!(r.text("idle_expunge").ends_with("* 1 EXPUNGE\r\n"), "{r:?}");
    assert!(r.text("idle_delivery").ends_with("* 1 EXISTS\r\n"), "{r:?}");
    assert_eq!(r.text("delivered_subject"), "Subject: imaplib round trip\r\n\r\n");
    let (_, _, messages) = server.inbox(ALICE).await;
    assert_eq!(messages.len(), 1, "the INBOX should hold only the message delivered during IDLE");
}

/// Logs `address` in on `frontend` and selects its INBOX; returns the client and the number of
/// messages SELECT announced.
async fn selected(server: &ImapTestServer, frontend: &ImapFrontend, address: &str) -> (ImapClient<BoxIo>, u32) {
    let mut c = server.login_on(frontend, address).await;
    let select = c.ok("SELECT INBOX").await;
    let exists = select
        .lines()
        .iter()
        .find_map(|l| l.strip_prefix("* ")?.strip_suffix(" EXISTS")?.parse().ok())
        .unwrap_or_else(|| panic!("no EXISTS in {:?}", select.lines()));
    (c, exists)
}

/// The UID a tagged APPEND OK names in its APPENDUID code.
fn appenduid(status: &str) -> u32 {
    let code = status.split("[APPENDUID ").nth(1).unwrap_or_else(|| panic!("no APPENDUID in {status:?}"));
    code.split([' ', ']']).nth(1).and_then(|u| u.parse().ok()).unwrap_or_else(|| panic!("bad APPENDUID in {status:?}"))
}

/// A session's own APPEND (or COPY) into its selected folder is part of its view by the time
/// the tagged OK arrives: EXISTS comes before it, and a UID command on the APPENDUID (COPYUID)
/// right after it finds the message, although the mailbox service's event for the write can
/// reach the front-end after the write's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn own_append_and_copy_are_visible_at_once() {
    let server = ImapTestServer::start(Limits::default(), false).await;
    let (mut c, _) = selected(&server, &server.frontend, ALICE).await;
    let mut exists = 0;
    for n in 0..100 {
        let body = tern_tests::message(&format!("own{n}"), "appended and used at once");
        let tag = c.tag();
        let mut command = format!("{tag} APPEND INBOX {{{}+}}\r\n", body.len()).into_bytes();
        command.extend_from_slice(&body);
        command.extend_from_slice(b"\r\n");
        c.send(&command).await.unwrap();
        let done = c.complete(&tag).await.unwrap();
        assert!(done.status.starts_with("OK"), "{done:?}");
        exists += 1;
        // The session's own new messages are \Recent for it (it is the first to see them).
        assert_eq!(
            done.lines(),
            [format!("* {exists} EXISTS"), format!("* {exists} RECENT")],
            "round {n}: APPEND did not announce its message"
        );
        let uid = appenduid(&done.status);
        let fetch = c.ok(&format!("UID FETCH {uid} (UID RFC822.SIZE)")).await;
        assert_eq!(
            fetch.lines(),
            [format!("* {exists} FETCH (UID {uid} RFC822.SIZE {})", body.len())],
            "round {n}: UID FETCH {uid} right after its APPEND"
        );
        if n % 10 == 0 {
            let copy = c.ok(&format!("UID COPY {uid} INBOX")).await;
            exists += 1;
            assert_eq!(
                copy.lines(),
                [format!("* {exists} EXISTS"), format!("* {exists} RECENT")],
                "round {n}: COPY did not announce its copy"
            );
            let copied: u32 = copy.status.split(' ').nth(4).and_then(|u| u.trim_end_matches(']').parse().ok()).unwrap();
            let fetch = c.ok(&format!("UID FETCH {copied} (UID)")).await;
            assert_eq!(fetch.lines(), [format!("* {exists} FETCH (UID {copied})")], "round {n}: UID FETCH of a copy");
        }
    }
}

/// Delivers `body` to alice over SMTP through the MX listener at `mx`.
async fn smtp_deliver(mx: std::net::SocketAddr, body: &[u8]) {
    let reply = tern_tests::smtp::send_message(mx, ALICE, body).await;
    assert_eq!(reply.code, 250, "{:?}", reply.lines);
}

/// Two sessions on two IMAP front-ends (two "pods") over one mailbox service: a STORE and an
/// EXPUNGE in one reach the other while it idles, as FETCH FLAGS and EXPUNGE; deliveries (the
/// Deliver RPC, and SMTP) reach it as EXISTS; after DONE both see the same mailbox.
#[tokio::test]
async fn changes_reach_idle_across_frontends() {
    let server = ImapTestServer::start(Limits::default(), false).await;
    let other = server.start_frontend().await;
    let (mx, _smtp) = server.start_mx().await;
    for n in 0..3 {
        server.deliver(ALICE, &tern_tests::message(&format!("pods{n}"), "text")).await;
    }
    let (mut a, _) = selected(&server, &server.frontend, ALICE).await;
    let (mut b, exists) = selected(&server, &other, ALICE).await;
    assert_eq!(exists, 3);
    let idle = b.idle().await;

    a.ok("STORE 1 +FLAGS.SILENT (\\Flagged)").await;
    let seen = b.wait_for(SYNC_WAIT, |l| l.starts_with("* 1 FETCH")).await.expect("the flag change in IDLE");
    let flags = seen.last().unwrap();
    assert!(flags.contains("UID 1 ") && flags.contains("FLAGS (\\Flagged)"), "{seen:?}");

    a.ok("STORE 2 +FLAGS.SILENT (\\Deleted)").await;
    let expunge = a.ok("EXPUNGE").await;
    assert_eq!(expunges(&expunge.lines()), [2]);
    let seen = b.wait_for(SYNC_WAIT, |l| l.ends_with(" EXPUNGE")).await.expect("the expunge in IDLE");
    assert_eq!(seen.last().unwrap(), "* 2 EXPUNGE", "{seen:?}");

    server.deliver(ALICE, &tern_tests::message("pods-rpc", "delivered by RPC")).await;
    let seen = b.wait_for(SYNC_WAIT, |l| l.ends_with(" EXISTS")).await.expect("the delivery in IDLE");
    assert_eq!(seen.last().unwrap(), "* 3 EXISTS", "{seen:?}");

    smtp_deliver(mx, &tern_tests::message("pods-smtp", "delivered over SMTP")).await;
    let seen = b.wait_for(SYNC_WAIT, |l| l.ends_with(" EXISTS")).await.expect("the SMTP delivery in IDLE");
    assert_eq!(seen.last().unwrap(), "* 4 EXISTS", "{seen:?}");

    let done = b.done(&idle).await;
    // The idling session was the first to see the two new messages, so they are \Recent for
    // it (the count may follow the last EXISTS), and for it alone; the three delivered before
    // are a's, which selected the INBOX first.
    let left: Vec<String> = done.lines().into_iter().filter(|l| !l.ends_with(" RECENT")).collect();
    assert!(left.is_empty(), "nothing was left to announce: {:?}", done.lines());
    // Session a learns of the deliveries at its next command; then both views agree, but for
    // \Recent.
    a.ok("NOOP").await;
    let view_a = a.ok("FETCH 1:* (UID FLAGS)").await.lines();
    let view_b = b.ok("FETCH 1:* (UID FLAGS)").await.lines();
    let recent = |view: &[String]| view.iter().map(|l| l.contains("\\Recent")).collect::<Vec<bool>>();
    let (recent_a, recent_b) = (recent(&view_a), recent(&view_b));
    assert_eq!(recent_a, [true, true, false, false], "{view_a:?}");
    assert_eq!(recent_b, [false, false, true, true], "{view_b:?}");
    let unrecent = |view: Vec<String>| -> Vec<String> {
        view.into_iter().map(|l| l.replace(" \\Recent", "").replace("\\Recent", "")).collect()
    };
    let (view_a, view_b) = (unrecent(view_a), unrecent(view_b));
    assert_eq!(view_a, view_b);
    assert_eq!(view_a.len(), 4, "{view_a:?}");
    assert!(view_a[0].contains("\\Flagged"), "{view_a:?}");
    b.logout().await;
    a.logout().await;
}

/// RFC 9051 section 7.5.1: while a FETCH, STORE or SEARCH runs, an EXPUNGE would renumber the
/// messages it talks about, so another session's expunge is held back until a command that
/// allows it (NOOP here). Session b expunges on another front-end; session c idles next to a,
/// to know when the expunge has reached a's front-end.
#[tokio::test]
async fn no_expunge_during_fetch_store_search() {
    let server = ImapTestServer::start(Limits::default(), false).await;
    let other = server.start_frontend().await;
    for n in 0..5 {
        server.deliver(ALICE, &tern_tests::message(&format!("held{n}"), "text")).await;
    }
    let (mut a, _) = selected(&server, &server.frontend, ALICE).await;
    let (mut c, _) = selected(&server, &server.frontend, ALICE).await;
    let (mut b, _) = selected(&server, &other, ALICE).await;
    let idle = c.idle().await;
    b.ok("STORE 2,4 +FLAGS.SILENT (\\Deleted)").await;
    assert_eq!(expunges(&b.ok("EXPUNGE").await.lines()), [4, 2]);
    let seen = c.wait_for(SYNC_WAIT, |l| l == "* 2 EXPUNGE").await.expect("the expunges on a's front-end");
    assert!(seen.contains(&"* 4 EXPUNGE".to_string()), "{seen:?}");
    c.done(&idle).await;

    for command in
        ["FETCH 1:* (UID FLAGS)", "FETCH 1:5 (UID)", "STORE 1 +FLAGS (\\Seen)", "SEARCH ALL", "UID SEARCH ALL"]
    {
        let answer = a.ok(command).await;
        assert!(expunges(&answer.lines()).is_empty(), "EXPUNGE during {command}: {:?}", answer.lines());
    }
    let noop = a.ok("NOOP").await;
    assert_eq!(expunges(&noop.lines()), [4, 2], "the held-back expunges at NOOP: {:?}", noop.lines());
    let view = a.ok("FETCH 1:* (UID)").await.lines();
    assert_eq!(view, ["* 1 FETCH (UID 1)", "* 2 FETCH (UID 3)", "* 3 FETCH (UID 5)"]);
    a.expect("FETCH 4 (UID)", "BAD").await;

    // The same while b expunges concurrently, one message at a time: a's FETCH, STORE and
    // SEARCH answers never carry an EXPUNGE, and the NOOP after them announces them all.
    for n in 0..6 {
        server.deliver(ALICE, &tern_tests::message(&format!("more{n}"), "text")).await;
    }
    a.ok("NOOP").await;
    b.ok("NOOP").await;
    let expunger = tokio::spawn(async move {
        for _ in 0..6 {
            b.ok("STORE 1 +FLAGS.SILENT (\\Deleted)").await;
            b.ok("EXPUNGE").await;
        }
        b
    });
    let mut rounds = 0;
    while !expunger.is_finished() && rounds < 500 {
        rounds += 1;
        for command in ["FETCH 1:* (UID FLAGS)", "STORE 1:* +FLAGS.SILENT (\\Seen)", "SEARCH ALL"] {
            let answer = a.ok(command).await;
            assert!(expunges(&answer.lines()).is_empty(), "EXPUNGE during {command}: {:?}", answer.lines());
        }
    }
    let b = expunger.await.expect("the expunging session");
    drop(b);
    let (_, _, left) = server.inbox(ALICE).await;
    let mut noop = a.ok("NOOP").await.lines();
    // The last events may still be on their way to a's front-end.
    let deadline = tokio::time::Instant::now() + SYNC_WAIT;
    while a.ok("FETCH 1:* (UID)").await.lines().len() != left.len() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        noop.extend(a.ok("NOOP").await.lines());
    }
    let view: Vec<String> = a.ok("FETCH 1:* (UID)").await.lines();
    let want: Vec<String> =
        left.iter().enumerate().map(|(i, m)| format!("* {} FETCH (UID {})", i + 1, m.uid)).collect();
    assert_eq!(view, want, "a's view after the expunges (NOOPs said {noop:?})");
    assert_eq!(expunges(&noop).len(), 6, "every expunge announced once: {noop:?}");
}

/// The first storage invariant (ARCHITECTURE.md, "Invariants": UIDs strictly increase in
/// commit order and are never reused) as a client sees it: while messages are delivered
/// concurrently (four delivering tasks), a session polling with NOOP learns of new messages
/// only with UIDs above every UID it has seen, and a session in IDLE on another front-end ends
/// up with all of them in strictly increasing UID order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_messages_never_come_below_a_seen_uid() {
    const TASKS: usize = 4;
    const EACH: usize = 15;
    let server = std::sync::Arc::new(ImapTestServer::start(Limits::default(), false).await);
    let other = server.start_frontend().await;
    let (mut a, _) = selected(&server, &server.frontend, ALICE).await;
    let (mut b, _) = selected(&server, &other, ALICE).await;
    let idle = b.idle().await;
    let mut deliveries = JoinSet::new();
    for t in 0..TASKS {
        let server = server.clone();
        deliveries.spawn(async move {
            for n in 0..EACH {
                server.deliver(ALICE, &tern_tests::message(&format!("race{t}-{n}"), "concurrent")).await;
            }
        });
    }
    let total = (TASKS * EACH) as u32;
    let mut known = 0u32;
    let mut highest = 0u32;
    // The highest EXISTS any response has announced: new messages can be announced at the end
    // of the FETCH too, before its tagged OK.
    let mut announced = 0u32;
    let exists_in = |lines: &[String]| -> Option<u32> {
        lines.iter().filter_map(|l| l.strip_prefix("* ")?.strip_suffix(" EXISTS")?.parse().ok()).max()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while known < total {
        assert!(tokio::time::Instant::now() < deadline, "only {known} of {total} messages seen");
        if announced == known {
            let noop = a.ok("NOOP").await.lines();
            match exists_in(&noop) {
                Some(exists) => {
                    assert!(exists > announced, "EXISTS went from {announced} to {exists}");
                    announced = exists;
                }
                None => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            }
        }
        let upto = announced;
        let fetch = a.ok(&format!("FETCH {}:{upto} (UID)", known + 1)).await.lines();
        if let Some(exists) = exists_in(&fetch) {
            assert!(exists > announced, "EXISTS went from {announced} to {exists}");
            announced = exists;
        }
        let answers: Vec<&String> = fetch.iter().filter(|l| l.contains(" FETCH (")).collect();
        for line in &answers {
            let uid: u32 = line
                .rsplit_once("(UID ")
                .and_then(|(_, u)| u.strip_suffix(')'))
                .and_then(|u| u.parse().ok())
                .unwrap_or_else(|| panic!("not a UID answer: {line:?}"));
            assert!(uid > highest, "a new message with UID {uid} after UID {highest} was seen");
            highest = uid;
        }
        assert_eq!(answers.len() as u32, upto - known, "{fetch:?}");
        known = upto;
    }
    while let Some(r) = deliveries.join_next().await {
        r.expect("a delivering task panicked");
    }
    let seen = b.wait_for(SYNC_WAIT, |l| l == format!("* {total} EXISTS")).await.expect("every delivery in IDLE");
    let counts: Vec<u32> =
        seen.iter().filter_map(|l| l.strip_prefix("* ")?.strip_suffix(" EXISTS")?.parse().ok()).collect();
    assert!(counts.windows(2).all(|w| w[0] < w[1]), "EXISTS went down in IDLE: {counts:?}");
    b.done(&idle).await;
    let uids: Vec<u32> = b
        .ok("FETCH 1:* (UID)")
        .await
        .lines()
        .iter()
        .map(|l| l.rsplit_once("(UID ").and_then(|(_, u)| u.strip_suffix(')')?.parse().ok()).expect("a UID"))
        .collect();
    assert_eq!(uids.len() as u32, total);
    assert!(uids.windows(2).all(|w| w[0] < w[1]), "UIDs not strictly increasing: {uids:?}");
}

/// Graceful shutdown: a session in IDLE and one waiting between commands each get `* BYE` and
/// the connection is closed, well within the grace period.
#[tokio::test]
async fn shutdown_says_bye_to_idle_sessions() {
    let server = ImapTestServer::start(Limits::default(), false).await;
    let mut frontend = server.start_frontend().await;
    let (mut idler, _) = selected(&server, &frontend, ALICE).await;
    idler.idle().await;
    let mut waiting = server.login_on(&frontend, ALICE).await;
    let start = std::time::Instant::now();
    frontend.stop().await;
    assert!(start.elapsed() < Duration::from_secs(2), "shutdown waited for the sessions: {:?}", start.elapsed());
    for (what, c) in [("idle", &mut idler), ("waiting", &mut waiting)] {
        let bye = c.read_response().await.unwrap_or_else(|e| panic!("{what}: no BYE: {e}")).text();
        assert!(bye.starts_with("* BYE "), "{what}: {bye:?}");
        c.expect_closed().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    // The first front-end is unaffected.
    server.login(ALICE).await.logout().await;
}

/// A LITERAL+ APPEND far above the line limit, arriving in many reads together with its command
/// line, is stored byte for byte, and lines inside it that look like commands stay data.
#[tokio::test]
async fn large_literal_plus_append_round_trips() {
    let server = ImapTestServer::start(Limits { max_line: 1024, ..Limits::default() }, false).await;
    let mut c = server.login(ALICE).await;
    let mut body = b"From: big@example.net\r\nSubject: big\r\n\r\n".to_vec();
    let mut n = 0;
    while body.len() < 300 * 1024 {
        body.extend_from_slice(format!("x{n} DELETE Archive\r\nx{n}b LOGOUT\r\n").as_bytes());
        n += 1;
    }
    let tag = c.tag();
    let mut command = format!("{tag} APPEND Trash {{{}+}}\r\n", body.len()).into_bytes();
    command.extend_from_slice(&body);
    command.extend_from_slice(b"\r\n");
    c.send(&command).await.unwrap();
    let done = c.complete(&tag).await.expect("the APPEND completes");
    assert!(done.status.starts_with("OK [APPENDUID"), "{done:?}");
    assert!(done.untagged.is_empty(), "{:?}", done.lines());
    let uid = appenduid(&done.status);
    assert_eq!(server.body_in(ALICE, "Trash", uid).await, body, "the stored message differs");
    c.ok("STATUS Archive (MESSAGES)").await;
    c.ok("SELECT Trash").await;
    let fetch = c.ok(&format!("UID FETCH {uid} BODY.PEEK[]")).await;
    assert_eq!(fetch.untagged.len(), 1);
    assert!(fetch.untagged[0].literal() == Some(&body[..]), "BODY[] differs from the appended message");
    c.logout().await;
}

/// One run of mbsync with the configuration in `home`; fails the test unless it succeeds.
async fn mbsync(home: &Path, what: &str) -> String {
    let mut command = Command::new("mbsync");
    command.arg("-c").arg(home.join("mbsyncrc")).args(["-a", "-V"]).env("HOME", home);
    let out =
        run_client(command, "mbsync is not installed: apt-get install isync (cargo xtask ci does)", CLIENT_LIMIT).await;
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "mbsync ({what}) failed ({}):\n{log}", out.status);
    log
}

/// The messages of a Maildir folder: (file name, contents), sorted by name.
fn maildir(folder: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(folder.join(sub)) else { continue };
        for e in entries {
            let e = e.expect("a Maildir entry");
            let name = e.file_name().to_string_lossy().into_owned();
            files.push((name, std::fs::read(e.path()).expect("read a Maildir message")));
        }
    }
    files.sort();
    files
}

/// The Maildir file whose message has `subject`.
fn find_by_subject<'a>(files: &'a [(String, Vec<u8>)], subject: &str) -> Option<&'a (String, Vec<u8>)> {
    let needle = format!("Subject: {subject}\n");
    files.iter().find(|(_, m)| String::from_utf8_lossy(m).replace("\r\n", "\n").contains(&needle))
}

/// A message with LF line ends and without the X-TUID header mbsync adds to what it copies.
fn without_tuid(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message).replace("\r\n", "\n");
    text.split_inclusive('\n').filter(|l| !l.starts_with("X-TUID: ")).collect()
}

/// The Maildir flag letters of a file name (`...:2,FS` gives `FS`).
fn maildir_flags(name: &str) -> &str {
    name.rsplit_once(":2,").map(|(_, f)| f).unwrap_or("")
}

/// The server's messages of a folder of alice by subject, with their sorted flags.
async fn server_messages(server: &ImapTestServer, folder: &str) -> Vec<(String, Vec<String>)> {
    let (_, messages) = server.folder(ALICE, folder).await;
    let mut out = Vec::new();
    for m in messages {
        let body = server.body_in(ALICE, folder, m.uid).await;
        let text = String::from_utf8_lossy(&body).into_owned();
        let subject = text.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap_or("").trim_end().to_string();
        let mut flags = m.flags.clone();
        flags.sort();
        out.push((subject, flags));
    }
    out.sort();
    out
}

/// Debian's isync (mbsync), a full client, over implicit TLS with the development certificate:
/// it mirrors every folder into a Maildir; flag changes, deletions and a new message made in the
/// Maildir reach the server; flag changes, an expunge and a delivery on the server reach the
/// Maildir.
#[tokio::test]
#[ignore = "needs mbsync; run by cargo xtask ci"]
async fn mbsync_client() {
    let server = ImapTestServer::start(Limits::default(), false).await;
    let mut sent = Vec::new();
    for n in 0..3 {
        let m = tern_tests::message(&format!("sync{n}"), &format!("message {n}\r\n.\r\nend"));
        server.deliver(ALICE, &m).await;
        sent.push(m);
    }
    let mut imap = server.login(ALICE).await;
    imap.ok("SELECT INBOX").await;
    imap.ok("COPY 1 Archive").await;
    imap.ok("STORE 3 +FLAGS (\\Seen)").await;

    let home = tempfile::tempdir().unwrap();
    let mail = home.path().join("mail");
    std::fs::create_dir_all(&mail).unwrap();
    std::fs::write(
        home.path().join("mbsyncrc"),
        format!(
            "IMAPAccount tern\nHost 127.0.0.1\nPort {port}\nUser {ALICE}\nPass {password}\n\
             SSLType IMAPS\nCertificateFile {ca}\n\n\
             IMAPStore tern-remote\nAccount tern\n\n\
             MaildirStore tern-local\nPath {mail}/\nInbox {mail}/INBOX\nSubFolders Verbatim\n\n\
             Channel tern\nFar :tern-remote:\nNear :tern-local:\nPatterns *\nCreate Both\n\
             Expunge Both\nSyncState *\n",
            port = server.frontend.imaps.port(),
            password = password_of(ALICE),
            ca = server.ca_cert.display(),
            mail = mail.display(),
        ),
    )
    .unwrap();

    // 1. Server to Maildir: every folder, every message, its \Seen flag.
    let log = mbsync(home.path(), "first sync").await;
    for folder in ["Archive", "Drafts", "Junk", "Sent", "Trash"] {
        assert!(mail.join(folder).join("cur").is_dir(), "no Maildir for {folder}:\n{log}");
    }
    let inbox = maildir(&mail.join("INBOX"));
    assert_eq!(inbox.len(), 3, "INBOX in the Maildir: {:?}\n{log}", inbox.iter().map(|f| &f.0).collect::<Vec<_>>());
    for (n, m) in sent.iter().enumerate() {
        let (name, got) = find_by_subject(&inbox, &format!("sync{n}")).unwrap_or_else(|| panic!("sync{n} missing"));
        // Maildir holds local line ends, and mbsync adds its X-TUID header; the content is
        // otherwise the message as delivered.
        let want = String::from_utf8_lossy(m).replace("\r\n", "\n");
        assert_eq!(without_tuid(got), want, "{name}");
        assert_eq!(maildir_flags(name), if n == 2 { "S" } else { "" }, "{name}");
    }
    assert_eq!(maildir(&mail.join("Archive")).len(), 1);

    // 2. Maildir to server: flag sync0 \Flagged \Seen, delete sync1, add a message.
    let cur = mail.join("INBOX").join("cur");
    let (name0, _) = find_by_subject(&inbox, "sync0").unwrap().clone();
    let (name1, _) = find_by_subject(&inbox, "sync1").unwrap().clone();
    let dir0 = if cur.join(&name0).exists() { cur.clone() } else { mail.join("INBOX").join("new") };
    let base0 = name0.rsplit_once(":2,").map(|(b, _)| b.to_string()).unwrap_or(name0.clone());
    std::fs::rename(dir0.join(&name0), cur.join(format!("{base0}:2,FS"))).unwrap();
    let dir1 = if cur.join(&name1).exists() { cur.clone() } else { mail.join("INBOX").join("new") };
    std::fs::remove_file(dir1.join(&name1)).unwrap();
    let local = b"From: alice@example.com\nTo: bob@example.com\nSubject: local\n\nwritten in the Maildir\n";
    std::fs::write(cur.join("1767225600.local.test:2,S"), local).unwrap();
    let log = mbsync(home.path(), "Maildir changes").await;
    let inbox_on_server = server_messages(&server, "INBOX").await;
    let s = |v: &[&str]| v.iter().map(|f| f.to_string()).collect::<Vec<_>>();
    assert_eq!(
        inbox_on_server,
        [
            ("local".to_string(), s(&["\\Seen"])),
            ("sync0".to_string(), s(&["\\Flagged", "\\Seen"])),
            ("sync2".to_string(), s(&["\\Seen"])),
        ],
        "the server after the Maildir changes:\n{log}"
    );
    let (_, messages) = server.folder(ALICE, "INBOX").await;
    let local_uid = messages.last().unwrap().uid;
    let uploaded = server.body(ALICE, local_uid).await;
    assert_eq!(without_tuid(&uploaded), String::from_utf8_lossy(local));

    // 3. Server to Maildir again: \Answered on sync2, sync0 expunged, a new delivery.
    let noop = imap.ok("NOOP").await;
    assert!(noop.lines().iter().any(|l| l.ends_with(" EXPUNGE")), "the session did not see mbsync's expunge");
    let view = imap.ok("UID SEARCH SUBJECT sync2").await;
    let uid2 = view.lines()[0].trim_start_matches("* SEARCH ").to_string();
    imap.ok(&format!("UID STORE {uid2} +FLAGS (\\Answered)")).await;
    let view = imap.ok("UID SEARCH SUBJECT sync0").await;
    let uid0 = view.lines()[0].trim_start_matches("* SEARCH ").to_string();
    imap.ok(&format!("UID STORE {uid0} +FLAGS.SILENT (\\Deleted)")).await;
    imap.ok(&format!("UID EXPUNGE {uid0}")).await;
    server.deliver(ALICE, &tern_tests::message("sync-new", "arrived later")).await;
    let log = mbsync(home.path(), "server changes").await;
    let inbox = maildir(&mail.join("INBOX"));
    let mut got: Vec<(String, String)> = ["local", "sync2", "sync-new"]
        .iter()
        .map(|s| {
            let (name, _) =
                find_by_subject(&inbox, s).unwrap_or_else(|| panic!("{s} missing from the Maildir:\n{log}"));
            (s.to_string(), maildir_flags(name).to_string())
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [("local".into(), "S".into()), ("sync-new".into(), "".into()), ("sync2".into(), "RS".into())],
        "the Maildir after the server changes:\n{log}"
    );
    assert_eq!(inbox.len(), 3, "{:?}\n{log}", inbox.iter().map(|f| &f.0).collect::<Vec<_>>());
    imap.logout().await;
}

/// One one-shot run of offlineimap3 with the configuration in `home`; fails the test unless it
/// succeeds, and returns what it printed.
async fn offlineimap(home: &Path, what: &str) -> String {
    let mut command = Command::new("offlineimap");
    command
        .arg("-c")
        .arg(home.join("offlineimaprc"))
        .args(["-o", "-u", "basic"])
        .env("HOME", home)
        .env("LANG", "C.UTF-8");
    let out = run_client(
        command,
        "offlineimap is not installed: apt-get install offlineimap3 (cargo xtask ci does)",
        CLIENT_LIMIT,
    )
    .await;
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "offlineimap ({what}) failed ({}):\n{log}", out.status);
    // offlineimap exits 0 after errors it only reports.
    assert!(!log.contains("ERROR"), "offlineimap ({what}) reported an error:\n{log}");
    log
}

/// APPENDs `message` to `folder` (its name as an IMAP atom) with `flags` and, when given, the
/// INTERNALDATE `date`, through `imap`.
async fn append(imap: &mut ImapClient<BoxIo>, folder: &str, flags: &str, date: Option<&str>, message: &[u8]) {
    let tag = imap.tag();
    let date = date.map(|d| format!("\"{d}\" ")).unwrap_or_default();
    let mut command = format!("{tag} APPEND {folder} ({flags}) {date}{{{}+}}\r\n", message.len()).into_bytes();
    command.extend_from_slice(message);
    command.extend_from_slice(b"\r\n");
    imap.send(&command).await.unwrap();
    let done = imap.complete(&tag).await.expect("the APPEND completes");
    assert!(done.status.starts_with("OK"), "APPEND to {folder}: {done:?}");
}

/// Debian's offlineimap3, over implicit TLS with the development certificate: a first one-shot
/// sync copies INBOX, a created folder and one with a non-ASCII name (modified UTF-7 on the wire,
/// UTF-8 in the Maildir with `utf8foldernames`) with every message and its \Seen, \Answered,
/// \Flagged and a keyword (mapped to a Maildir letter by `customflag_a`); a flag set, a deletion
/// and a new message made in the Maildir reach the server; a run with nothing changed copies
/// nothing and leaves the Maildir as it was.
#[tokio::test]
#[ignore = "needs offlineimap3; run by cargo xtask ci"]
async fn offlineimap_client() {
    let server = ImapTestServer::start(Limits::default(), false).await;
    let mut sent = Vec::new();
    for n in 0..3 {
        let m = tern_tests::message(&format!("oi{n}"), &format!("message {n}\r\n.\r\nend"));
        server.deliver(ALICE, &m).await;
        sent.push(m);
    }
    let mut imap = server.login(ALICE).await;
    imap.ok("SELECT INBOX").await;
    imap.ok("STORE 1 +FLAGS (\\Seen)").await;
    imap.ok("STORE 2 +FLAGS (\\Flagged Work)").await;
    imap.ok("CREATE Projects").await;
    // Zürich in modified UTF-7 (RFC 3501 5.1.3).
    imap.ok("CREATE Z&APw-rich").await;
    let project = tern_tests::message("project", "in Projects");
    append(&mut imap, "Projects", "\\Answered", None, &project).await;
    let zurich = tern_tests::message("zurich", "in Z\u{fc}rich");
    append(&mut imap, "Z&APw-rich", "\\Seen \\Flagged", None, &zurich).await;
    assert_eq!(server_messages(&server, "Z\u{fc}rich").await.len(), 1, "the server decodes the UTF-7 name");

    // offlineimap checks the certificate's DNS names itself and ignores its IP addresses: it
    // connects to localhost, over IPv4 where the server listens.
    let home = tempfile::tempdir().unwrap();
    let mail = home.path().join("mail");
    std::fs::write(
        home.path().join("offlineimaprc"),
        format!(
            "[general]\naccounts = tern\nmetadata = {meta}\n\n\
             [Account tern]\nlocalrepository = local\nremoterepository = remote\nutf8foldernames = yes\n\n\
             [Repository local]\ntype = Maildir\nlocalfolders = {mail}\ncustomflag_a = Work\n\n\
             [Repository remote]\ntype = IMAP\nremotehost = localhost\nipv6 = no\nremoteport = {port}\n\
             remoteuser = {ALICE}\nremotepass = {password}\nssl = yes\nsslcacertfile = {ca}\n\
             maxconnections = 1\n\
             folderfilter = lambda folder: folder in ['INBOX', 'Projects', 'Z\u{fc}rich']\n",
            meta = home.path().join("meta").display(),
            mail = mail.display(),
            port = server.frontend.imaps.port(),
            password = password_of(ALICE),
            ca = server.ca_cert.display(),
        ),
    )
    .unwrap();

    // 1. Server to Maildir: the three folders, every message, its flags and keyword.
    let log = offlineimap(home.path(), "first sync").await;
    assert_eq!(log.matches("Copy message UID").count(), 5, "five messages copied:\n{log}");
    let mut folders: Vec<String> =
        std::fs::read_dir(&mail).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    folders.sort();
    assert_eq!(folders, ["INBOX", "Projects", "Z\u{fc}rich"], "the local folders:\n{log}");
    let lf = |m: &[u8]| String::from_utf8_lossy(m).replace("\r\n", "\n");
    let inbox = maildir(&mail.join("INBOX"));
    assert_eq!(inbox.len(), 3, "INBOX in the Maildir: {:?}\n{log}", inbox.iter().map(|f| &f.0).collect::<Vec<_>>());
    for (n, (m, flags)) in sent.iter().zip(["S", "Fa", ""]).enumerate() {
        let (name, got) = find_by_subject(&inbox, &format!("oi{n}")).unwrap_or_else(|| panic!("oi{n} missing:\n{log}"));
        // Maildir holds local line ends; the content is otherwise the message as delivered.
        assert_eq!(lf(got), lf(m), "{name}");
        assert_eq!(maildir_flags(name), flags, "{name}\n{log}");
    }
    for (folder, message, subject, flags) in
        [("Projects", &project, "project", "R"), ("Z\u{fc}rich", &zurich, "zurich", "FS")]
    {
        let files = maildir(&mail.join(folder));
        assert_eq!(files.len(), 1, "{folder}: {:?}\n{log}", files.iter().map(|f| &f.0).collect::<Vec<_>>());
        let (name, got) = find_by_subject(&files, subject).unwrap_or_else(|| panic!("{subject} missing:\n{log}"));
        assert_eq!(lf(got), lf(message), "{folder}/{name}");
        assert_eq!(maildir_flags(name), flags, "{folder}/{name}\n{log}");
    }

    // 2. Maildir to server: oi2 seen, oi0 deleted, a new message written into new/.
    let locate = |name: &str| -> PathBuf {
        ["cur", "new"]
            .iter()
            .map(|sub| mail.join("INBOX").join(sub).join(name))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{name} is in neither cur nor new"))
    };
    let (name0, _) = find_by_subject(&inbox, "oi0").unwrap().clone();
    let (name2, _) = find_by_subject(&inbox, "oi2").unwrap().clone();
    let base2 = name2.rsplit_once(":2,").map(|(b, _)| b.to_string()).unwrap_or(name2.clone());
    std::fs::rename(locate(&name2), mail.join("INBOX").join("cur").join(format!("{base2}:2,S"))).unwrap();
    std::fs::remove_file(locate(&name0)).unwrap();
    let local = b"From: alice@example.com\nTo: bob@example.com\nSubject: local\nMessage-ID: <local@example.com>\n\n\
                  written in the Maildir\n";
    std::fs::write(mail.join("INBOX").join("new").join("1767225600.local.test"), local).unwrap();
    let log = offlineimap(home.path(), "Maildir changes").await;
    for action in [
        "Copy message UID -1 (1/1) local:INBOX -> remote:INBOX",
        "Deleting 1 messages (1) in IMAP[INBOX]",
        "Adding flag S to 1 messages on INBOX",
    ] {
        assert_eq!(log.matches(action).count(), 1, "{action}:\n{log}");
    }
    let s = |v: &[&str]| v.iter().map(|f| f.to_string()).collect::<Vec<_>>();
    assert_eq!(
        server_messages(&server, "INBOX").await,
        [
            ("local".to_string(), s(&[])),
            ("oi1".to_string(), s(&["Work", "\\Flagged"])),
            ("oi2".to_string(), s(&["\\Seen"])),
        ],
        "the server after the Maildir changes:\n{log}"
    );
    // The session that had oi0 selected is told it is gone (the front-end may learn of the
    // expunge just after offlineimap's answer).
    let deadline = tokio::time::Instant::now() + SYNC_WAIT;
    let mut seen = Vec::new();
    while expunges(&seen).is_empty() && tokio::time::Instant::now() < deadline {
        seen.extend(imap.ok("NOOP").await.lines());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(expunges(&seen), [1], "offlineimap's expunge of oi0: {seen:?}");
    let (_, messages) = server.folder(ALICE, "INBOX").await;
    let uploaded = server.body(ALICE, messages.last().unwrap().uid).await;
    assert_eq!(lf(&uploaded), lf(local), "the uploaded message");
    let inbox = maildir(&mail.join("INBOX"));
    assert_eq!(inbox.len(), 3, "{:?}\n{log}", inbox.iter().map(|f| &f.0).collect::<Vec<_>>());
    let (local_name, _) = find_by_subject(&inbox, "local").unwrap_or_else(|| panic!("local gone:\n{log}"));
    let local_uid = messages.last().unwrap().uid;
    assert!(local_name.contains(&format!(",U={local_uid},")), "{local_name} does not carry UID {local_uid}\n{log}");

    // 3. Nothing changed on either side: nothing copied, no flag changed, the Maildir as it was.
    let before = [maildir(&mail.join("INBOX")), maildir(&mail.join("Projects")), maildir(&mail.join("Z\u{fc}rich"))];
    let on_server = server_messages(&server, "INBOX").await;
    let log = offlineimap(home.path(), "no changes").await;
    for action in ["Copy message", "Deleting", "Adding flag", "Deleting flag"] {
        assert!(!log.contains(action), "a run with nothing to do did something ({action}):\n{log}");
    }
    for folder in ["INBOX", "Projects", "Z\u{fc}rich"] {
        assert!(log.contains(&format!("Syncing {folder}: IMAP -> Maildir")), "{folder} not synced:\n{log}");
    }
    let after = [maildir(&mail.join("INBOX")), maildir(&mail.join("Projects")), maildir(&mail.join("Z\u{fc}rich"))];
    assert!(before == after, "the Maildir changed:\n{log}");
    assert_eq!(server_messages(&server, "INBOX").await, on_server, "the server changed:\n{log}");
    imap.logout().await;
}

/// QRESYNC (RFC 7162): a client that comes back with its UIDVALIDITY and HIGHESTMODSEQ learns
/// at SELECT what vanished and what changed meanwhile, expunges are reported as VANISHED, and
/// UID FETCH with CHANGEDSINCE and VANISHED reports earlier expunges.
#[tokio::test]
async fn qresync_reports_vanished_and_changed_messages() {
    let server = ImapTestServer::start(Limits::default(), false).await;
    for n in 0..5 {
        server.deliver(ALICE, &tern_tests::message(&format!("q{n}"), "for qresync")).await;
    }
    let mut c = server.login(ALICE).await;
    let enabled = c.ok("ENABLE QRESYNC").await;
    assert_eq!(enabled.lines(), ["* ENABLED QRESYNC"]);
    let select = c.ok("SELECT INBOX").await;
    let field = |name: &str| -> u64 {
        select
            .lines()
            .iter()
            .find_map(|l| l.strip_prefix(&format!("* OK [{name} "))?.split(']').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {:?}", select.lines()))
    };
    let (validity, modseq) = (field("UIDVALIDITY"), field("HIGHESTMODSEQ"));
    c.ok("UNSELECT").await;

    // Another session changes one message and expunges two.
    let (mut other, _) = selected(&server, &server.frontend, ALICE).await;
    other.ok("UID STORE 2 +FLAGS (\\Flagged)").await;
    other.ok("UID STORE 3:4 +FLAGS (\\Deleted)").await;
    let expunge = other.ok("EXPUNGE").await;
    assert_eq!(expunge.lines(), ["* 4 EXPUNGE", "* 3 EXPUNGE"], "without QRESYNC, EXPUNGE per message");

    let resync = c.ok(&format!("SELECT INBOX (QRESYNC ({validity} {modseq} 1:5))")).await;
    let lines = resync.lines();
    assert!(lines.contains(&"* VANISHED (EARLIER) 3:4".to_string()), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("* 2 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ (")), "{lines:?}");
    assert!(!lines.iter().any(|l| l.contains("UID 1 ")), "message 1 did not change: {lines:?}");

    let fetch = c.ok(&format!("UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")).await;
    assert_eq!(fetch.lines()[0], "* VANISHED (EARLIER) 3:4", "{:?}", fetch.lines());

    // With QRESYNC on, this session's own expunge comes back as VANISHED.
    c.ok("UID STORE 5 +FLAGS (\\Deleted)").await;
    let mine = c.ok("EXPUNGE").await;
    assert_eq!(mine.lines(), ["* VANISHED 5"]);
    // A QRESYNC parameter without ENABLE is refused.
    let mut plain = server.login(ALICE).await;
    let refused = plain.command(&format!("SELECT INBOX (QRESYNC ({validity} {modseq}))")).await;
    assert!(refused.status.starts_with("BAD"), "{refused:?}");
}

/// The one URL of a `* GENURLAUTH "url"` response.
fn generated_url(c: &tern_tests::imap::Completion) -> String {
    let line = c.lines().into_iter().find(|l| l.starts_with("* GENURLAUTH ")).expect("a GENURLAUTH response");
    line["* GENURLAUTH ".len()..].trim_matches('"').to_string()
}

/// URLAUTH (RFC 4467) and URL-PARTIAL (RFC 5550) between real sessions: alice authorizes URLs
/// of her message for bob alone, for any logged-in user and for a part of it; bob and carol
/// fetch what each may, a changed token, an expired URL and one for a submission server come
/// back NIL, and after alice's RESETKEY none of her URLs works any more.
#[tokio::test]
async fn urlauth_lets_other_users_fetch_what_the_owner_authorized() {
    let server = ImapTestServer::start(Limits::default(), false).await;
    let raw = tern_tests::message("shared", "a body others may read");
    server.deliver(ALICE, &raw).await;
    let (_, _, messages) = server.inbox(ALICE).await;
    let uid = messages[0].uid;
    let mut alice = server.login(ALICE).await;
    let caps = alice.ok("CAPABILITY").await.lines().join(" ");
    assert!(caps.contains(" URLAUTH") && caps.contains(" URL-PARTIAL"), "{caps}");
    let status = alice.ok("STATUS INBOX (UIDVALIDITY)").await.lines().join(" ");
    let validity: u32 = status.split("UIDVALIDITY ").nth(1).and_then(|v| v.trim_end_matches(')').parse().ok()).unwrap();
    let base = format!("imap://alice%40example.com@imap.test/INBOX;UIDVALIDITY={validity}/;UID={uid}");

    let for_bob =
        generated_url(&alice.ok(&format!("GENURLAUTH \"{base};URLAUTH=user+bob%40example.com\" INTERNAL")).await);
    assert!(for_bob.contains(";URLAUTH=user+bob%40example.com:INTERNAL:"), "{for_bob}");
    let for_all = generated_url(&alice.ok(&format!("GENURLAUTH \"{base};URLAUTH=authuser\" INTERNAL")).await);
    let part = generated_url(
        &alice.ok(&format!("GENURLAUTH \"{base}/;SECTION=TEXT/;PARTIAL=2.4;URLAUTH=anonymous\" INTERNAL")).await,
    );
    let expired = generated_url(
        &alice.ok(&format!("GENURLAUTH \"{base};EXPIRE=2001-01-01T00:00:00Z;URLAUTH=anonymous\" INTERNAL")).await,
    );
    let submit =
        generated_url(&alice.ok(&format!("GENURLAUTH \"{base};URLAUTH=submit+bob%40example.com\" INTERNAL")).await);
    // Only the owner authorizes, only INTERNAL exists, and a rump has no token yet.
    alice.expect(&format!("GENURLAUTH \"{base};URLAUTH=anonymous\" HMAC"), "NO [BADURL").await;
    let bobs = "imap://bob%40example.com@imap.test/INBOX/;UID=1;URLAUTH=anonymous";
    alice.expect(&format!("GENURLAUTH \"{bobs}\" INTERNAL"), "NO [BADURL").await;
    alice.expect(&format!("GENURLAUTH \"{for_bob}\" INTERNAL"), "NO [BADURL").await;

    let fetch = |c: &tern_tests::imap::Completion| -> Vec<String> {
        c.untagged.iter().map(|r| r.text()).filter(|t| t.starts_with("* URLFETCH ")).collect()
    };
    let mut bob = server.login("bob@example.com").await;
    let got = fetch(&bob.ok(&format!("URLFETCH \"{for_bob}\" \"{for_all}\" \"{part}\"")).await);
    let text = String::from_utf8_lossy(&raw).into_owned();
    assert_eq!(got.len(), 1, "one URLFETCH response: {got:?}");
    assert_eq!(got[0].matches(&text).count(), 2, "bob reads the whole message twice: {got:?}");
    assert!(got[0].ends_with(" \"body\""), "the part's bytes 2 to 6 of its text: {got:?}");
    // The token's last hex digit changed (to another digit whatever it was).
    let last = if for_all.ends_with('0') { '1' } else { '0' };
    let tampered = format!("{}{last}", &for_all[..for_all.len() - 1]);
    let got = fetch(&bob.ok(&format!("URLFETCH \"{tampered}\" \"{expired}\" \"{submit}\"")).await);
    assert_eq!(got, [format!("* URLFETCH \"{tampered}\" NIL \"{expired}\" NIL \"{submit}\" NIL")]);

    let mut carol = server.login("carol@example.com").await;
    let got = fetch(&carol.ok(&format!("URLFETCH \"{for_bob}\" \"{for_all}\"")).await);
    assert!(got[0].starts_with(&format!("* URLFETCH \"{for_bob}\" NIL \"{for_all}\" {{")), "{got:?}");

    alice.ok("RESETKEY").await;
    let got = fetch(&bob.ok(&format!("URLFETCH \"{for_all}\"")).await);
    assert_eq!(got, [format!("* URLFETCH \"{for_all}\" NIL")], "RESETKEY withdraws every URL");
    // A new authorization works again, with a new key.
    let again = generated_url(&alice.ok(&format!("GENURLAUTH \"{base};URLAUTH=authuser\" INTERNAL")).await);
    assert_ne!(again, for_all);
    assert!(fetch(&bob.ok(&format!("URLFETCH \"{again}\"")).await)[0].contains(&text));
    alice.expect("RESETKEY INBOX HMAC", "BAD").await;
    alice.ok("RESETKEY INBOX INTERNAL").await;
    assert!(fetch(&bob.ok(&format!("URLFETCH \"{again}\"")).await)[0].ends_with(" NIL"));
}

/// One message of a folder as an IMAP server shows it: what `imap_folder` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    subject: String,
    /// Its flags and keywords, sorted, without the session flag \Recent.
    flags: Vec<String>,
    /// The INTERNALDATE as Unix seconds: the instant, whatever zone the server writes it in.
    date: i64,
    body: Vec<u8>,
    uid: u32,
}

/// Unix seconds of an IMAP date-time, `dd-Mon-yyyy hh:mm:ss +zzzz` (the day may be padded with
/// a space).
fn internaldate_secs(text: &str) -> i64 {
    let parse = || -> Option<i64> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [date, time, zone] = parts[..] else { return None };
        let mut date = date.split('-');
        let day: i64 = date.next()?.parse().ok()?;
        let month = date.next()?;
        let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
            .iter()
            .position(|m| *m == month)? as i64
            + 1;
        let year: i64 = date.next()?.parse().ok()?;
        let hms = time.split(':').map(|n| n.parse().ok()).collect::<Option<Vec<i64>>>()?;
        let zone_minutes = zone.get(1..3)?.parse::<i64>().ok()? * 60 + zone.get(3..5)?.parse::<i64>().ok()?;
        let zone_secs = if zone.starts_with('-') { -zone_minutes * 60 } else { zone_minutes * 60 };
        // Days since 1970-01-01 of the proleptic Gregorian calendar (Howard Hinnant's algorithm).
        let (y, m) = if month <= 2 { (year - 1, month + 9) } else { (year, month - 3) };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * m + 2) / 5 + day - 1;
        let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
        Some(days * 86_400 + hms.first()? * 3600 + hms.get(1)? * 60 + hms.get(2)? - zone_secs)
    };
    parse().unwrap_or_else(|| panic!("not an IMAP date-time: {text:?}"))
}

/// Every message of `folder` over IMAP (EXAMINE, so nothing changes), by subject.
async fn imap_folder(imap: &mut ImapClient<BoxIo>, folder: &str) -> Vec<Listed> {
    let examine = imap.ok(&format!("EXAMINE {folder}")).await;
    if examine.lines().iter().any(|l| l == "* 0 EXISTS") {
        return Vec::new();
    }
    let fetched = imap.ok("UID FETCH 1:* (UID FLAGS INTERNALDATE BODY.PEEK[])").await;
    let mut out = Vec::new();
    for r in fetched.untagged.iter().filter(|r| r.text().contains(" FETCH (")) {
        let body = r.literal().unwrap_or_else(|| panic!("no body in {:?}", r.text())).to_vec();
        // The attributes are searched outside the message, which could contain anything.
        let text = r.text().replace(&*String::from_utf8_lossy(&body), "");
        let after = |name: &str| {
            let start = text.find(name).unwrap_or_else(|| panic!("no {name} in {text:?}")) + name.len();
            &text[start..]
        };
        let uid = after("UID ").split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap();
        let flags_text = after("FLAGS (").split(')').next().unwrap();
        let mut flags: Vec<String> =
            flags_text.split_whitespace().filter(|f| *f != "\\Recent").map(str::to_string).collect();
        flags.sort();
        let date = internaldate_secs(after("INTERNALDATE \"").split('"').next().unwrap());
        let message = String::from_utf8_lossy(&body).into_owned();
        let subject = message.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap_or("").trim_end().to_string();
        out.push(Listed { subject, flags, date, body, uid });
    }
    out.sort_by(|a, b| a.subject.cmp(&b.subject));
    out
}

/// The folders of the IMAP-to-IMAP sync: Tern's tree, Dovecot's tree, and `Archive`, which
/// both have. `Z&APw-rich` is Zürich in modified UTF-7, passed through as it is on the wire.
const TREE: [&str; 6] = ["INBOX", "Archive", "Archive/2024", "Z&APw-rich", "Lists", "Lists/rust"];

/// What every folder of [`TREE`] holds on one server.
async fn tree(imap: &mut ImapClient<BoxIo>) -> Vec<(&'static str, Vec<Listed>)> {
    tree_of(imap, &TREE).await
}

/// What each of `folders` holds on one server.
async fn tree_of(imap: &mut ImapClient<BoxIo>, folders: &[&'static str]) -> Vec<(&'static str, Vec<Listed>)> {
    let mut out = Vec::new();
    for folder in folders {
        out.push((*folder, imap_folder(imap, folder).await));
    }
    out
}

/// The tree without UIDs, which each server gives its copies on its own, without the keywords,
/// which offlineimap does not copy between two IMAP servers, and without the dates, which it
/// copies in one direction only (see [`offlineimap_imap_to_imap_with_dovecot`]).
fn comparable(tree: &[(&'static str, Vec<Listed>)]) -> Vec<(&'static str, Vec<Listed>)> {
    tree.iter()
        .map(|(folder, messages)| {
            let messages = messages
                .iter()
                .map(|m| Listed {
                    uid: 0,
                    date: 0,
                    flags: m.flags.iter().filter(|f| f.starts_with('\\')).cloned().collect(),
                    ..m.clone()
                })
                .collect();
            (*folder, messages)
        })
        .collect()
}

/// The subjects with their flags of every folder of a tree, for the expectations.
fn summary(tree: &[(&'static str, Vec<Listed>)]) -> Vec<(&'static str, Vec<(String, String)>)> {
    tree.iter()
        .map(|(folder, messages)| (*folder, messages.iter().map(|m| (m.subject.clone(), m.flags.join(" "))).collect()))
        .collect()
}

/// One account of the IMAP-to-IMAP sync: a user with a connection to each server, and which of
/// the two is offlineimap's "remote" repository.
struct Pair {
    user: &'static str,
    tern: ImapClient<BoxIo>,
    dove: ImapClient<BoxIo>,
    tern_is_remote: bool,
}

/// The messages seeded on Tern: folder, subject, flags and INTERNALDATE, each date in a zone of
/// its own. `Work` is a keyword.
const ON_TERN: [(&str, &str, &str, &str); 5] = [
    ("INBOX", "t-seen", "\\Seen", "01-Feb-2024 10:20:30 +0100"),
    ("INBOX", "t-flagged", "\\Flagged Work", "02-Feb-2024 23:59:59 -0800"),
    ("Archive", "t-answered", "\\Answered \\Seen", "15-Mar-2023 08:00:00 +0000"),
    ("Archive/2024", "t-draft", "\\Draft", "29-Feb-2024 12:00:00 +0530"),
    ("Z&APw-rich", "t-zurich", "", "31-Dec-2022 23:30:00 +0100"),
];

/// The messages seeded on Dovecot, as [`ON_TERN`].
const ON_DOVECOT: [(&str, &str, &str, &str); 4] = [
    ("INBOX", "d-inbox", "\\Seen \\Flagged", "10-Jan-2025 06:07:08 +0200"),
    ("Archive", "d-archive", "", "11-Jan-2021 00:00:01 +0000"),
    ("Lists", "d-lists", "\\Answered", "12-Jun-2024 13:14:15 -0300"),
    ("Lists/rust", "d-rust", "\\Draft \\Seen", "13-Jul-2024 16:17:18 +0900"),
];

/// Debian's offlineimap3 between two IMAP servers, Tern (implicit TLS with the development
/// certificate) and a Dovecot started by the test on loopback (plain-text login), for two users:
/// alice's account has Dovecot as offlineimap's "local" repository and Tern as its "remote" one,
/// bob's the other way round, so that each server is on each side once. A folder tree seeded on
/// Tern (INBOX, Archive, Archive/2024 and a non-ASCII folder, passed through in modified UTF-7)
/// and a different one seeded on Dovecot (INBOX, Archive, Lists, Lists/rust) end up as their
/// union on both servers, every message byte for byte with the same \Seen, \Answered, \Flagged
/// and \Draft flags.
///
/// What offlineimap does not carry, and the test asserts as such: keywords (it maps them only
/// into a Maildir's letters), so a keyword stays on its own server; and the INTERNALDATE of a
/// message copied from the "local" repository, whose IMAP folder class (MappedIMAPFolder) gives
/// no time, so offlineimap APPENDs it with the instant of its Date header instead. A message
/// copied from the "remote" repository keeps its INTERNALDATE instant (offlineimap reads it with
/// FETCH and APPENDs with it, written in its own zone), which here goes from Tern to Dovecot for
/// alice and from Dovecot to Tern for bob.
///
/// Flags changed on Tern and messages deleted on Dovecot then reach the other server, and a run
/// with nothing changed copies, flags and deletes nothing and leaves every UID as it was.
#[tokio::test]
#[ignore = "needs offlineimap3 and dovecot-imapd; run by cargo xtask ci"]
async fn offlineimap_imap_to_imap_with_dovecot() {
    const BOB: &str = "bob@example.com";
    let server = ImapTestServer::start(Limits::default(), false).await;
    let dovecot = tern_tests::dovecot::Dovecot::start(&[(ALICE, password_of(ALICE)), (BOB, password_of(BOB))]).await;
    let mut pairs = Vec::new();
    for (user, tern_is_remote) in [(ALICE, true), (BOB, false)] {
        let tern = server.login(user).await;
        let dove = dovecot.login(user, password_of(user)).await;
        pairs.push(Pair { user, tern, dove, tern_is_remote });
    }

    // Every message has the same Date header, unlike any INTERNALDATE, so that a copy's date
    // shows where offlineimap took it from.
    let header_date = internaldate_secs("26-Nov-2026 10:00:00 +0000");
    for pair in &mut pairs {
        pair.tern.ok("CREATE Archive/2024").await;
        pair.tern.ok("CREATE Z&APw-rich").await;
        for (folder, subject, flags, date) in ON_TERN {
            let message = tern_tests::message(subject, &format!("{subject} on Tern"));
            append(&mut pair.tern, folder, flags, Some(date), &message).await;
        }
        // Dovecot makes no mailbox of a parent that CREATE of a child implies, so it comes first.
        for folder in ["Archive", "Lists", "Lists/rust"] {
            pair.dove.ok(&format!("CREATE {folder}")).await;
        }
        for (folder, subject, flags, date) in ON_DOVECOT {
            let message = tern_tests::message(subject, &format!("{subject} on Dovecot"));
            append(&mut pair.dove, folder, flags, Some(date), &message).await;
        }
    }
    let seeded_tern = tree_of(&mut pairs[0].tern, &["INBOX", "Archive", "Archive/2024", "Z&APw-rich"]).await;
    let seeded_dove = tree_of(&mut pairs[0].dove, &["INBOX", "Archive", "Lists", "Lists/rust"]).await;

    // offlineimap checks Tern's certificate's DNS names itself and ignores its IP addresses: it
    // connects to localhost, over IPv4 where the server listens. Dovecot has no TLS here.
    let home = tempfile::tempdir().unwrap();
    let filter = format!("lambda folder: folder in {TREE:?}");
    let repository = |name: &str, user: &str, on_tern: bool| {
        let common = format!(
            "[Repository {name}]\ntype = IMAP\nremoteuser = {user}\nremotepass = {}\nmaxconnections = 1\n\
             folderfilter = {filter}\n",
            password_of(user)
        );
        if on_tern {
            format!(
                "{common}remotehost = localhost\nipv6 = no\nremoteport = {}\nssl = yes\nsslcacertfile = {}\n\n",
                server.frontend.imaps.port(),
                server.ca_cert.display()
            )
        } else {
            format!("{common}remotehost = 127.0.0.1\nremoteport = {}\nssl = no\nstarttls = no\n\n", dovecot.addr.port())
        }
    };
    std::fs::write(
        home.path().join("offlineimaprc"),
        format!(
            "[general]\naccounts = alice, bob\nmetadata = {meta}\n\n\
             [Account alice]\nlocalrepository = alice-dovecot\nremoterepository = alice-tern\n\n\
             [Account bob]\nlocalrepository = bob-tern\nremoterepository = bob-dovecot\n\n{}{}{}{}",
            repository("alice-dovecot", ALICE, false),
            repository("alice-tern", ALICE, true),
            repository("bob-tern", BOB, true),
            repository("bob-dovecot", BOB, false),
            meta = home.path().join("meta").display(),
        ),
    )
    .unwrap();

    // 1. Both trees become their union on both servers: bytes and flags, and the dates that
    // offlineimap carries.
    let log = offlineimap(home.path(), "first sync").await;
    assert_eq!(log.matches("Copy message UID").count(), 18, "nine messages copied per account:\n{log}");
    let s = |subject: &str, flags: &str| (subject.to_string(), flags.to_string());
    let mut after_first = Vec::new();
    for pair in &mut pairs {
        let user = pair.user;
        let on_tern = tree(&mut pair.tern).await;
        let on_dove = tree(&mut pair.dove).await;
        assert_eq!(
            comparable(&on_tern),
            comparable(&on_dove),
            "{user}: the servers differ after the first sync:\n{log}\nDovecot:\n{}",
            dovecot.log_tail()
        );
        assert_eq!(
            summary(&on_tern),
            [
                (
                    "INBOX",
                    vec![s("d-inbox", "\\Flagged \\Seen"), s("t-flagged", "Work \\Flagged"), s("t-seen", "\\Seen")]
                ),
                ("Archive", vec![s("d-archive", ""), s("t-answered", "\\Answered \\Seen")]),
                ("Archive/2024", vec![s("t-draft", "\\Draft")]),
                ("Z&APw-rich", vec![s("t-zurich", "")]),
                ("Lists", vec![s("d-lists", "\\Answered")]),
                ("Lists/rust", vec![s("d-rust", "\\Draft \\Seen")]),
            ],
            "{user}: Tern after the first sync:\n{log}"
        );
        let flagged = &on_dove[0].1.iter().find(|m| m.subject == "t-flagged").unwrap().flags;
        assert_eq!(flagged, &["\\Flagged"], "{user}: offlineimap copied a keyword between IMAP servers:\n{log}");
        // Every message is, on both servers, what was appended where it started: the same
        // bytes, and the original keeps its date; the copy has the same date when it came from
        // the remote repository and the Date header's otherwise.
        for (seeded, from_tern) in [(&seeded_tern, true), (&seeded_dove, false)] {
            let dates_carried = from_tern == pair.tern_is_remote;
            for (folder, originals) in seeded {
                for original in originals {
                    for (copy_on_tern, got) in [(true, &on_tern), (false, &on_dove)] {
                        let (_, messages) = got.iter().find(|(f, _)| f == folder).unwrap();
                        let copy = messages.iter().find(|m| m.subject == original.subject);
                        let copy = copy.unwrap_or_else(|| panic!("{user}: {folder}: no {}:\n{log}", original.subject));
                        assert_eq!(copy.body, original.body, "{user}: {folder}: {} changed:\n{log}", original.subject);
                        let date = if copy_on_tern == from_tern || dates_carried { original.date } else { header_date };
                        assert_eq!(
                            copy.date,
                            date,
                            "{user}: the INTERNALDATE of {folder}: {} on {}:\n{log}",
                            original.subject,
                            if copy_on_tern { "Tern" } else { "Dovecot" }
                        );
                    }
                }
            }
        }
        after_first.push((on_tern, on_dove));
    }

    // 2. Flags changed on Tern and messages deleted on Dovecot (one that came from Tern and one
    // of Dovecot's own) reach the other server.
    let uid_of = |tree: &[(&'static str, Vec<Listed>)], folder: &str, subject: &str| {
        let (_, messages) = tree.iter().find(|(f, _)| *f == folder).unwrap();
        messages.iter().find(|m| m.subject == subject).unwrap_or_else(|| panic!("no {subject} in {folder}")).uid
    };
    for (pair, (on_tern, on_dove)) in pairs.iter_mut().zip(&after_first) {
        let tern = &mut pair.tern;
        tern.ok("SELECT Z&APw-rich").await;
        tern.ok(&format!("UID STORE {} +FLAGS (\\Seen \\Flagged)", uid_of(on_tern, "Z&APw-rich", "t-zurich"))).await;
        tern.ok("SELECT INBOX").await;
        tern.ok(&format!("UID STORE {} -FLAGS (\\Seen)", uid_of(on_tern, "INBOX", "t-seen"))).await;
        tern.ok(&format!("UID STORE {} +FLAGS (\\Answered)", uid_of(on_tern, "INBOX", "d-inbox"))).await;
        tern.ok("UNSELECT").await;
        for (folder, subject) in [("Archive", "t-answered"), ("Lists/rust", "d-rust")] {
            pair.dove.ok(&format!("SELECT {folder}")).await;
            pair.dove.ok(&format!("UID STORE {} +FLAGS.SILENT (\\Deleted)", uid_of(on_dove, folder, subject))).await;
            pair.dove.ok("EXPUNGE").await;
        }
        pair.dove.ok("UNSELECT").await;
    }
    let log = offlineimap(home.path(), "changes on both").await;
    assert!(!log.contains("Copy message"), "nothing new to copy:\n{log}");
    let mut after_changes = Vec::new();
    for pair in &mut pairs {
        let user = pair.user;
        let on_tern = tree(&mut pair.tern).await;
        let on_dove = tree(&mut pair.dove).await;
        assert_eq!(comparable(&on_tern), comparable(&on_dove), "{user}: the servers differ after the changes:\n{log}");
        assert_eq!(
            summary(&on_tern),
            [
                (
                    "INBOX",
                    vec![
                        s("d-inbox", "\\Answered \\Flagged \\Seen"),
                        s("t-flagged", "Work \\Flagged"),
                        s("t-seen", "")
                    ]
                ),
                ("Archive", vec![s("d-archive", "")]),
                ("Archive/2024", vec![s("t-draft", "\\Draft")]),
                ("Z&APw-rich", vec![s("t-zurich", "\\Flagged \\Seen")]),
                ("Lists", vec![s("d-lists", "\\Answered")]),
                ("Lists/rust", vec![]),
            ],
            "{user}: Tern after the changes:\n{log}"
        );
        after_changes.push((on_tern, on_dove));
    }

    // 3. Nothing changed on either side: nothing copied, flagged or deleted, every UID and date
    // kept.
    let log = offlineimap(home.path(), "no changes").await;
    for action in ["Copy message", "Deleting", "Adding flag", "Deleting flag"] {
        assert!(!log.contains(action), "a run with nothing to do did something ({action}):\n{log}");
    }
    for (pair, (on_tern, on_dove)) in pairs.iter_mut().zip(&after_changes) {
        assert_eq!(&tree(&mut pair.tern).await, on_tern, "{}: Tern changed:\n{log}", pair.user);
        assert_eq!(&tree(&mut pair.dove).await, on_dove, "{}: Dovecot changed:\n{log}", pair.user);
    }
    for pair in pairs {
        pair.tern.logout().await;
        pair.dove.logout().await;
    }
}
