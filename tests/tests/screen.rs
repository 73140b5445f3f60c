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
