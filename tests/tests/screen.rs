//! Connection-time checks of MX clients over real sockets: a client whose address a DNS
//! blocklist lists (a loopback DNS server of the test's own, listing 127.0.0.2) is refused with
//! 554 before the greeting, others are greeted, answers are cached; a client that talks before
//! the greeting's last line is refused with 521, and one that waits is served. Submission
//! clients are never screened.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use tern_smtp::{
    config::{Limits, ListenerKind},
    screen::{Dnsbl, DnsblZone},
};
use tern_tests::{
    dnsbl::DnsBl,
    smtp::{SmtpClient, SmtpTestServer},
};
use tokio::{io::AsyncReadExt, net::TcpSocket};

const LISTED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const CLEAN: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// A TCP connection to `to` from the loopback address `from` (all of 127.0.0.0/8 is local).
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> tokio::net::TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

async fn server_with(dnsbl: Option<Dnsbl>, pregreet: Duration) -> SmtpTestServer {
    let limits = Limits { pregreet_wait: pregreet, ..Limits::default() };
    SmtpTestServer::start_screened(limits, tern_mailbox::Limits::default(), None, None, dnsbl.map(Arc::new)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_clients_are_refused_at_connect_and_answers_are_cached() {
    let bl = DnsBl::start("bl.test");
    bl.list_with(IpAddr::V4(LISTED), Ipv4Addr::new(127, 0, 0, 4), None);
    let resolver = tern_mail::dns::resolver(Some(bl.addr)).unwrap();
    let zones = vec![DnsblZone {
        zone: "bl.test".into(),
        codes: BTreeMap::from([(Ipv4Addr::new(127, 0, 0, 4), "XBL: exploited host".to_string())]),
    }];
    let server = server_with(Some(Dnsbl::new(resolver, zones, Duration::from_secs(300))), Duration::ZERO).await;

    for _ in 0..2 {
        let mut c = SmtpClient::new(connect_from(LISTED, server.mx).await);
        let reply = c.read_reply().await.unwrap();
        assert_eq!(
            reply.last(),
            "554 Service unavailable; client [127.0.0.2] blocked using bl.test: XBL: exploited host"
        );
        c.expect_closed().await.unwrap();
    }
    assert_eq!(bl.queries_for(IpAddr::V4(LISTED)), 1, "the listing is cached");

    for _ in 0..2 {
        let mut c = SmtpClient::new(connect_from(CLEAN, server.mx).await);
        c.expect_reply("220 mx.test ESMTP Tern").await;
        c.expect("EHLO clean.test", "250").await;
        c.expect("QUIT", "221").await;
    }
    assert_eq!(bl.queries_for(IpAddr::V4(CLEAN)), 1, "a clean answer is cached too");

    // Submission is for authenticated users, wherever they are: never screened.
    let mut c = SmtpClient::new(connect_from(LISTED, server.submission).await);
    c.expect_reply("220 mx.test ESMTP Tern").await;
    c.expect("QUIT", "221").await;
    let metrics = tern_runtime::metrics::Metrics::global().encode();
    assert!(metrics.contains("tern_smtp_dnsbl_rejections_total{zone=\"bl.test\"} 2"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_talk_before_the_greeting_are_refused() {
    let server = server_with(None, Duration::from_millis(300)).await;

    // A bot: it sends EHLO as soon as it connects, without waiting for the greeting.
    let mut bot = tokio::net::TcpStream::connect(server.mx).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut bot, b"EHLO bot.test\r\n").await.unwrap();
    let mut said = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), bot.read_to_end(&mut said)).await.unwrap().unwrap();
    let said = String::from_utf8_lossy(&said);
    assert_eq!(said, "220-mx.test ESMTP Tern\r\n521 Protocol error: talking before the greeting\r\n");

    // A real MTA waits for the last line, then gets on with it.
    let mut c = server.connect(ListenerKind::Mx).await;
    let greeting = c.read_reply().await.unwrap();
    assert_eq!(greeting.lines, ["220-mx.test ESMTP Tern", "220 mx.test ESMTP Tern"]);
    c.expect("EHLO mta.test", "250").await;
    c.expect("QUIT", "221").await;

    // Submission clients are greeted at once.
    let mut c = server.connect(ListenerKind::Submission).await;
    assert_eq!(c.read_reply().await.unwrap().lines, ["220 mx.test ESMTP Tern"]);
    let metrics = tern_runtime::metrics::Metrics::global().encode();
    assert!(metrics.contains("tern_smtp_pregreet_rejections_total 1"), "{metrics}");
}

/// Sends one message over the MX listener at `mx` from `from` (a loopback address); the reply to
/// MAIL FROM.
async fn mail_from(mx: SocketAddr, from: Ipv4Addr, sender: &str) -> String {
    let mut c = SmtpClient::new(connect_from(from, mx).await);
    c.expect_reply("220 ").await;
    c.expect("EHLO client.test", "250").await;
    c.send(format!("MAIL FROM:<{sender}>\r\n").as_bytes()).await.unwrap();
    let reply = c.read_reply().await.unwrap();
    if reply.code == 250 {
        c.expect("RCPT TO:<alice@example.com>", "250").await;
        c.expect("DATA", "354").await;
        c.send(b"Subject: rate\r\n\r\ncounted\r\n.\r\n").await.unwrap();
        c.expect_reply("250").await;
    }
    c.expect("QUIT", "221").await;
    reply.last().to_string()
}

/// Message rates per client address and per sender are counted by the mailbox service, so
/// that they hold across front-ends: two SMTP front-ends on one mailbox service share one
/// budget, a client or sender over it gets 450 on either, and other clients are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_rates_hold_across_front_ends() {
    let limits = Limits { max_messages_per_ip: 3, max_messages_per_sender: 4, ..Limits::default() };
    let a = server_with_limits(limits.clone()).await;
    let (b, _b_server) = a.start_frontend(limits).await;
    let ip = Ipv4Addr::new(127, 0, 0, 5);
    // Three from one address, through both front-ends, then the fourth is refused on either.
    assert!(mail_from(a.mx, ip, "one@remote.example").await.starts_with("250"));
    assert!(mail_from(b, ip, "two@remote.example").await.starts_with("250"));
    assert!(mail_from(a.mx, ip, "three@remote.example").await.starts_with("250"));
    for mx in [a.mx, b] {
        let refused = mail_from(mx, ip, "four@remote.example").await;
        assert!(refused.starts_with("450 4.7.1 Too many messages from your address, try again in "), "{refused}");
    }
    // The sender's own budget, from other addresses: four, then no more.
    for (n, mx) in [a.mx, b, a.mx, b].into_iter().enumerate() {
        let from = Ipv4Addr::new(127, 0, 1, n as u8 + 1);
        assert!(mail_from(mx, from, "bulk@remote.example").await.starts_with("250"));
    }
    let refused = mail_from(a.mx, Ipv4Addr::new(127, 0, 1, 9), "bulk@remote.example").await;
    assert!(refused.starts_with("450 4.7.1 Too many messages from this sender"), "{refused}");
    assert!(mail_from(b, Ipv4Addr::new(127, 0, 0, 6), "other@remote.example").await.starts_with("250"));
    assert_eq!(a.inbox("alice@example.com").await.len(), 8, "only the accepted messages were stored");
}

async fn server_with_limits(limits: Limits) -> SmtpTestServer {
    SmtpTestServer::start_screened(limits, tern_mailbox::Limits::default(), None, None, None).await
}
