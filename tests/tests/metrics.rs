//! The metrics the dashboard and the alerts read, over real sockets: sessions with the SMTP,
//! IMAP and POP3 front-ends move `tern_commands_total`, `tern_smtp_replies_total`,
//! `tern_messages_received_total` and `tern_connections` as `/metrics` shows them, and a failed
//! body read moves `tern_storage_errors_total`.
//!
//! Every test of this file shares the process's registry and runs alongside the others, so
//! each checks that a counter grew by at least what it did, never an exact value.

use std::{net::SocketAddr, time::Duration};

use tern_runtime::http::Readiness;
use tern_smtp::config::{Limits, ListenerKind};
use tern_tests::{
    imap::ImapTestServer,
    pop3::Pop3TestServer,
    smtp::{SmtpTestServer, send_message},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// Serves `/metrics` on a port of its own for the rest of the test process.
async fn metrics_endpoint() -> SocketAddr {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(tern_runtime::http::serve(socket, Readiness::default(), std::future::pending()));
    addr
}

/// The body of `/metrics`, fetched over HTTP/1.1.
/// A scrape that shows every one of `series`, or the last one after ten seconds: the servers'
/// tasks declare their series when they first run, which on a loaded machine can be a moment
/// after `start` returns.
async fn scrape_with(addr: SocketAddr, series: &[&str]) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let scraped = scrape(addr).await;
        if series.iter().all(|s| scraped.contains(s)) || std::time::Instant::now() > deadline {
            return scraped;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn scrape(addr: SocketAddr) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut response)).await.unwrap().unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// The value of the sample `name{labels}` (labels as `/metrics` writes them), 0 when absent.
fn sample(text: &str, name: &str, labels: &str) -> f64 {
    let prefix = format!("{name}{labels} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map(|v| v.trim().parse().unwrap()).unwrap_or(0.0)
}

/// How much `name{labels}` grew from `before` to `after`.
fn grew(before: &str, after: &str, name: &str, labels: &str) -> f64 {
    sample(after, name, labels) - sample(before, name, labels)
}

fn command(protocol: &str, verb: &str) -> String {
    format!("{{protocol=\"{protocol}\",command=\"{verb}\"}}")
}

/// Sends `lines` one at a time on a plain connection, reading whatever comes back, and
/// returns everything the server sent until it closed.
async fn converse(addr: SocketAddr, lines: &[&str]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    // The greeting, then one read per command: enough for these one-line answers.
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await.unwrap().unwrap();
    seen.extend_from_slice(&buf[..n]);
    for line in lines {
        tcp.write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await.unwrap().unwrap();
        seen.extend_from_slice(&buf[..n]);
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut seen)).await;
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_sessions_move_commands_replies_and_messages() {
    let http = metrics_endpoint().await;
    let server = SmtpTestServer::start(Limits::default()).await;
    let before = scrape_with(http, &["tern_connections{protocol=\"smtp\"}"]).await;
    // Every family the dashboard and the alerts use is listed once the front-end runs.
    for family in [
        "tern_connections",
        "tern_commands",
        "tern_smtp_replies",
        "tern_messages_received",
        "tern_storage_errors",
        "tern_messages_stored",
        "tern_grpc_requests",
    ] {
        assert!(before.contains(&format!("# TYPE {family} ")), "{family} is not listed:\n{before}");
    }
    assert!(before.contains("tern_connections{protocol=\"smtp\"}"), "{before}");

    // One transaction, two recipients: one message received, two stored.
    let mut c = server.connect(ListenerKind::Mx).await;
    c.expect_reply("220").await;
    c.expect("EHLO client.test", "250").await;
    let during = scrape(http).await;
    assert!(sample(&during, "tern_connections", "{protocol=\"smtp\"}") >= 1.0, "{during}");
    c.expect("XYZZY plugh", "500").await;
    c.expect("MAIL FROM:<sender@remote.example>", "250").await;
    c.expect("RCPT TO:<alice@example.com>", "250").await;
    c.expect("RCPT TO:<bob@example.com>", "250").await;
    c.expect("DATA", "354").await;
    c.send(b"Subject: counted\r\n\r\nonce\r\n.\r\n").await.unwrap();
    c.expect_reply("250").await;
    c.expect("QUIT", "221").await;
    assert_eq!(send_message(server.mx, "alice@example.com", b"Subject: again\r\n\r\nhi\r\n").await.code, 250);

    let after = scrape(http).await;
    let smtp = |verb| command("smtp", verb);
    assert!(grew(&before, &after, "tern_commands_total", &smtp("EHLO")) >= 2.0);
    assert!(grew(&before, &after, "tern_commands_total", &smtp("RCPT")) >= 3.0);
    assert!(grew(&before, &after, "tern_commands_total", &smtp("DATA")) >= 2.0);
    assert!(grew(&before, &after, "tern_commands_total", &smtp("OTHER")) >= 1.0, "XYZZY is OTHER");
    assert!(!after.contains("XYZZY"), "a client's verb became a label value");
    assert!(grew(&before, &after, "tern_smtp_replies_total", "{code=\"220\"}") >= 2.0, "greetings count");
    assert!(grew(&before, &after, "tern_smtp_replies_total", "{code=\"500\"}") >= 1.0);
    assert!(grew(&before, &after, "tern_smtp_replies_total", "{code=\"354\"}") >= 2.0);
    assert!(grew(&before, &after, "tern_smtp_replies_total", "{code=\"221\"}") >= 2.0);
    assert!(grew(&before, &after, "tern_messages_received_total", "") >= 2.0);
    assert!(grew(&before, &after, "tern_messages_stored_total", "") >= 3.0);

    // Submission sessions have a protocol of their own.
    let mut c = server.connect(ListenerKind::Submission).await;
    c.expect_reply("220").await;
    c.expect("EHLO client.test", "250").await;
    c.expect("QUIT", "221").await;
    let last = scrape(http).await;
    assert!(grew(&after, &last, "tern_commands_total", &command("submission", "EHLO")) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_and_pop3_sessions_move_their_commands() {
    let http = metrics_endpoint().await;
    let imap = ImapTestServer::start(tern_imap::config::Limits::default(), true).await;
    let pop3 = Pop3TestServer::start(tern_pop3::config::Limits::default(), true).await;
    let declared: Vec<String> = [("imap", "UID FETCH"), ("pop3", "RETR")]
        .iter()
        .map(|(p, v)| format!("tern_commands_total{} ", command(p, v)))
        .collect();
    let before = scrape_with(http, &declared.iter().map(String::as_str).collect::<Vec<_>>()).await;
    // The verbs have series from the start, zero or not.
    for (protocol, verb) in [("imap", "UID FETCH"), ("pop3", "RETR")] {
        let series = format!("tern_commands_total{} ", command(protocol, verb));
        assert!(before.contains(&series), "{series}is not listed:\n{before}");
    }

    let seen = converse(imap.frontend.imap, &["a1 CAPABILITY", "a2 UID FETCH 1 FLAGS", "a3 FROB", "a4 LOGOUT"]).await;
    assert!(seen.contains("a4 OK"), "{seen}");
    let seen = converse(pop3.frontend.pop3, &["CAPA", "FROB", "QUIT"]).await;
    assert!(seen.contains("+OK"), "{seen}");

    let after = scrape(http).await;
    for (protocol, verb) in [
        ("imap", "CAPABILITY"),
        ("imap", "UID FETCH"),
        ("imap", "OTHER"),
        ("imap", "LOGOUT"),
        ("pop3", "CAPA"),
        ("pop3", "OTHER"),
        ("pop3", "QUIT"),
    ] {
        let labels = command(protocol, verb);
        assert!(grew(&before, &after, "tern_commands_total", &labels) >= 1.0, "{labels} did not move:\n{after}");
    }
    assert!(!after.contains("FROB"), "a client's verb became a label value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_body_read_counts_as_a_storage_error() {
    let http = metrics_endpoint().await;
    let dir = tempfile::tempdir().unwrap();
    let blobs = tern_mailbox::blobs::BlobStore::local(dir.path()).unwrap();
    let before = scrape(http).await;
    let missing = "0".repeat(64);
    assert!(blobs.get(&missing).await.is_err());
    assert!(blobs.delete(&missing).await.is_ok(), "deleting what is gone is not an error");
    let after = scrape(http).await;
    assert!(grew(&before, &after, "tern_storage_errors_total", "{backend=\"local\"}") >= 1.0, "{after}");
}
