//! The outbound relay against real SMTP receivers (aiosmtpd) and a real DNS server (dnslib) on
//! loopback: delivery with a DKIM signature dkimpy verifies, MX preference and fallback, retry
//! after a temporary failure, bounces with well-formed delivery status notifications, expiry,
//! null MX, required TLS, and queue claims shared by workers without double delivery, also when
//! a worker dies mid-delivery.

use std::time::Duration;

use tern_proto::v1::{FolderRef, GetQueuedRequest, ListQueueRequest, SelectRequest, SetDkimKeyRequest, folder_ref};
use tern_relay::config::TlsPolicy;
use tern_tests::{
    TestServer, fetch_body,
    relay::{Dns, Receiver, RelayWorker, dkim_verify, enqueue, enqueue_with, relay_config},
    setup_account,
};

const WAIT: Duration = Duration::from_secs(30);

/// The zone of most tests: `accept.test` to the receiver at 127.0.0.1, `fallback.test` first to
/// an address where nothing listens, `nullmx.test` with a null MX, `down.test` only to nowhere.
fn zone() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        ("accept.test", "MX", "10 mx.accept.test"),
        ("mx.accept.test", "A", "127.0.0.1"),
        ("fallback.test", "MX", "10 mx1.fallback.test"),
        ("fallback.test", "MX", "20 mx2.fallback.test"),
        ("mx1.fallback.test", "A", "127.0.0.77"),
        ("mx2.fallback.test", "A", "127.0.0.1"),
        ("nullmx.test", "MX", "0 ."),
        ("down.test", "MX", "10 mx.down.test"),
        ("mx.down.test", "A", "127.0.0.78"),
    ]
}

fn message(from: &str, to: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: Ann <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n\
         Message-ID: <{subject}@here.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Hello from the relay test.\r\n.leading dot line\r\n"
    )
    .into_bytes()
}

/// Waits until the queue is empty.
async fn wait_queue_empty(server: &TestServer) {
    let mut client = server.mailbox_client().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let list = client.list_queue(ListQueueRequest {}).await.expect("list the queue").into_inner().messages;
        if list.is_empty() {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the queue still holds {list:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The messages in an account's INBOX, waiting until there are at least `n`.
async fn inbox(server: &TestServer, account_id: u64, n: usize) -> Vec<String> {
    let mut client = server.mailbox_client().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let folder = Some(FolderRef { by: Some(folder_ref::By::Name("INBOX".into())) });
        let selected = client.select(SelectRequest { account_id, folder }).await.expect("select").into_inner();
        if selected.messages.len() >= n {
            let folder_id = selected.folder.expect("a folder").id;
            let mut out = Vec::new();
            for m in selected.messages {
                let (bytes, _) = fetch_body(&mut client, account_id, folder_id, m.uid, 0, 0).await.expect("fetch");
                out.push(String::from_utf8_lossy(&bytes).into_owned());
            }
            return out;
        }
        assert!(tokio::time::Instant::now() < deadline, "INBOX has {} of {n} messages", selected.messages.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_over_starttls_with_a_dkim_signature_dkimpy_verifies() {
    let server = TestServer::start(Default::default()).await;
    let mut admin = server.admin_client().await;
    setup_account(&mut admin, "ann@here.test", "pw").await;
    let key = admin
        .set_dkim_key(SetDkimKeyRequest {
            domain: "here.test".into(),
            selector: "s1".into(),
            private_key_pem: String::new(),
        })
        .await
        .expect("generate a DKIM key")
        .into_inner();
    let dns = Dns::start(&zone());
    let receiver = Receiver::start(true, 1);
    let _relay = RelayWorker::start(server.addr, relay_config(&dns, receiver.port), "w1");

    let ids = enqueue(
        server.addr,
        "ann@here.test",
        &["bob@accept.test", "carol@accept.test"],
        &message("ann@here.test", "bob@accept.test", "m1"),
    )
    .await;
    assert_eq!(ids.len(), 1, "one domain, one entry");
    let got = receiver.wait_for(1, WAIT).await;
    wait_queue_empty(&server).await;
    assert_eq!(got.len(), 1, "one transaction for both recipients of one domain");
    let m = &got[0];
    assert_eq!(m.mail_from, "ann@here.test");
    assert_eq!(m.rcpt_tos, ["bob@accept.test", "carol@accept.test"]);
    assert!(m.tls, "STARTTLS was offered, so it must have been used");
    assert!(m.text().starts_with("DKIM-Signature:"), "{}", m.text());
    assert!(m.text().contains("\r\n.leading dot line\r\n"), "dot-stuffing round trip: {}", m.text());
    let (pass, verdict) = dkim_verify(&m.path, &key.txt);
    assert!(pass, "dkimpy: {verdict}");
    assert!(
        verdict.contains("d=here.test") && verdict.contains("s=s1") && verdict.contains("c=relaxed/relaxed"),
        "{verdict}"
    );

    // A second domain of the same submission is an entry of its own, and a domain without a key
    // sends unsigned.
    let ids = enqueue(
        server.addr,
        "dave@nokey.test",
        &["x@accept.test", "y@fallback.test"],
        &message("dave@nokey.test", "x@accept.test", "m2"),
    )
    .await;
    assert_eq!(ids.len(), 2, "two domains, two entries: {ids:?}");
    let got = receiver.wait_for(3, WAIT).await;
    wait_queue_empty(&server).await;
    assert_eq!(got.len(), 3);
    assert!(got[1..].iter().all(|m| !m.text().contains("DKIM-Signature")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tries_mx_hosts_in_order_and_retries_a_temporary_failure_later() {
    let server = TestServer::start(Default::default()).await;
    let mut dns = Dns::start(&zone());
    let receiver = Receiver::start(false, 1);
    let _relay = RelayWorker::start(server.addr, relay_config(&dns, receiver.port), "w1");

    // The preferred MX refuses connections; the second takes the message at the first attempt.
    enqueue(server.addr, "ann@here.test", &["bob@fallback.test"], &message("ann@here.test", "bob@fallback.test", "f1"))
        .await;
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_tos, ["bob@fallback.test"]);
    wait_queue_empty(&server).await;

    // Every host of down.test refuses: the entry stays, with the attempt in its history...
    let ids =
        enqueue(server.addr, "ann@here.test", &["bob@down.test"], &message("ann@here.test", "bob@down.test", "d1"))
            .await;
    let mut admin = server.admin_client().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let entry = loop {
        let e = admin.get_queued(GetQueuedRequest { queue_id: ids[0].clone() }).await.expect("the entry").into_inner();
        if e.attempts >= 1 && e.lease_holder.is_empty() {
            break e;
        }
        assert!(tokio::time::Instant::now() < deadline, "no attempt recorded: {e:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(entry.history[0].result.contains("bob@down.test"), "{:?}", entry.history);
    assert!(entry.next_attempt_at > entry.history[0].at - 1, "{entry:?}");
    // ...until the domain's MX comes back: the next retry delivers it.
    let mut records = zone();
    records.retain(|(name, _, _)| *name != "mx.down.test");
    records.push(("mx.down.test", "A", "127.0.0.1"));
    dns.set(&records);
    let got = receiver.wait_for(2, WAIT).await;
    assert_eq!(got[1].rcpt_tos, ["bob@down.test"]);
    wait_queue_empty(&server).await;
    assert_eq!(receiver.messages().len(), 2, "delivered once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_recipient_bounces_to_the_sender_with_a_delivery_status_notification() {
    let server = TestServer::start(Default::default()).await;
    let mut admin = server.admin_client().await;
    let ann = setup_account(&mut admin, "ann@here.test", "pw").await;
    let dns = Dns::start(&zone());
    let receiver = Receiver::start(false, 1);
    let _relay = RelayWorker::start(server.addr, relay_config(&dns, receiver.port), "w1");

    let mut recipients: Vec<tern_proto::v1::QueuedRecipient> = ["good@accept.test", "reject-me@accept.test"]
        .iter()
        .map(|a| tern_proto::v1::QueuedRecipient {
            address: a.to_string(),
            orcpt: format!("rfc822;{a}"),
            ..Default::default()
        })
        .collect();
    recipients[0].notify = vec!["SUCCESS".into(), "FAILURE".into()];
    enqueue_with(server.addr, "ann@here.test", recipients, &message("ann@here.test", "good@accept.test", "b1")).await;
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_tos, ["good@accept.test"]);
    wait_queue_empty(&server).await;

    // Two reports: the failure, and the success good@ asked for.
    let reports = inbox(&server, ann.id, 2).await;
    let failure = reports.iter().find(|r| r.contains("Action: failed")).expect("a failure report");
    let parsed = mail_parser::MessageParser::default().parse(failure.as_bytes()).expect("a parsable report");
    use mail_parser::MimeHeaders;
    let root = parsed.root_part();
    assert_eq!(root.content_type().and_then(|c| c.subtype()), Some("report"));
    assert_eq!(parsed.parts.len(), 4, "the report, its three parts: {failure}");
    assert!(failure.contains("report-type=delivery-status"), "{failure}");
    assert!(failure.contains("Content-Type: message/delivery-status"), "{failure}");
    assert!(failure.contains("Reporting-MTA: dns; relay.tern.test"), "{failure}");
    assert!(failure.contains("Original-Recipient: rfc822;reject-me@accept.test"), "{failure}");
    assert!(failure.contains("Final-Recipient: rfc822; reject-me@accept.test\r\nAction: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.accept.test"), "{failure}");
    assert!(failure.contains("Diagnostic-Code: smtp; 550 5.1.1"), "{failure}");
    assert!(failure.contains("Subject: b1"), "the original is returned: {failure}");
    assert!(!failure.contains("good@accept.test>:"), "only the failed recipient is named: {failure}");
    // The receiver does not support DSN, so the relay reports the message as relayed.
    let success = reports.iter().find(|r| r.contains("Action: relayed")).expect("a success report");
    assert!(success.contains("Final-Recipient: rfc822; good@accept.test"), "{success}");

    // A bounce (null sender) that fails is never bounced.
    enqueue(server.addr, "", &["reject-again@accept.test"], &message("mailer-daemon@here.test", "x@accept.test", "b2"))
        .await;
    wait_queue_empty(&server).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(inbox(&server, ann.id, 2).await.len(), 2, "no report about a report");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_mail_warns_the_sender_then_expires_with_a_report() {
    let server = TestServer::start(Default::default()).await;
    let mut admin = server.admin_client().await;
    let ann = setup_account(&mut admin, "ann@here.test", "pw").await;
    let dns = Dns::start(&zone());
    let receiver = Receiver::start(false, 1);
    let config =
        tern_relay::RelayConfig { lifetime_secs: 3, delay_warning_secs: 1, ..relay_config(&dns, receiver.port) };
    let _relay = RelayWorker::start(server.addr, config, "w1");

    enqueue(
        server.addr,
        "ann@here.test",
        &["tempfail@accept.test"],
        &message("ann@here.test", "tempfail@accept.test", "e1"),
    )
    .await;
    wait_queue_empty(&server).await;
    let reports = inbox(&server, ann.id, 2).await;
    let delayed = reports.iter().find(|r| r.contains("Action: delayed")).expect("a delay warning");
    assert!(delayed.contains("Status: 4.3.0") && delayed.contains("451 4.3.0"), "{delayed}");
    let failed = reports.iter().find(|r| r.contains("Action: failed")).expect("an expiry report");
    assert!(failed.contains("Status: 4.4.7"), "{failed}");
    assert!(failed.contains("gave up after"), "{failed}");
    assert!(receiver.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_mx_domain_bounces_at_once_and_required_tls_is_never_skipped() {
    let server = TestServer::start(Default::default()).await;
    let mut admin = server.admin_client().await;
    let ann = setup_account(&mut admin, "ann@here.test", "pw").await;
    let dns = Dns::start(&zone());
    let receiver = Receiver::start(false, 1);
    let mut config = relay_config(&dns, receiver.port);
    config.tls_policies.insert("accept.test".into(), TlsPolicy::Required);
    let _relay = RelayWorker::start(server.addr, config, "w1");

    enqueue(server.addr, "ann@here.test", &["bob@nullmx.test"], &message("ann@here.test", "bob@nullmx.test", "n1"))
        .await;
    let reports = inbox(&server, ann.id, 1).await;
    assert!(reports[0].contains("Status: 5.1.10") && reports[0].contains("null MX"), "{}", reports[0]);

    // The receiver offers no STARTTLS, and accept.test requires TLS: nothing is sent in clear.
    let ids =
        enqueue(server.addr, "ann@here.test", &["bob@accept.test"], &message("ann@here.test", "bob@accept.test", "t1"))
            .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let e = admin.get_queued(GetQueuedRequest { queue_id: ids[0].clone() }).await.expect("the entry").into_inner();
        if e.attempts >= 2 {
            assert!(e.history.iter().all(|a| a.result.contains("TLS is required")), "{:?}", e.history);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no attempts: {e:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(receiver.messages().is_empty(), "nothing went in clear");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_deliver_every_message_exactly_once() {
    let server = TestServer::start(Default::default()).await;
    let dns = Dns::start(&zone());
    let receiver = Receiver::start(false, 1);
    let _a = RelayWorker::start(server.addr, relay_config(&dns, receiver.port), "worker-a");
    let _b = RelayWorker::start(server.addr, relay_config(&dns, receiver.port), "worker-b");

    const N: usize = 40;
    for i in 0..N {
        let rcpt = format!("r{i}@accept.test");
        enqueue(server.addr, "ann@here.test", &[rcpt.as_str()], &message("ann@here.test", &rcpt, &format!("x{i}")))
            .await;
    }
    receiver.wait_for(N, WAIT).await;
    wait_queue_empty(&server).await;
    // Leases are short here (10 s): wait past one, so a double claim would have shown up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = receiver.messages();
    let mut seen: Vec<String> = got.iter().flat_map(|m| m.rcpt_tos.clone()).collect();
    seen.sort();
    let mut want: Vec<String> = (0..N).map(|i| format!("r{i}@accept.test")).collect();
    want.sort();
    assert_eq!(seen, want, "every message delivered exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_delivery_loses_nothing_and_delivers_nothing_twice() {
    let server = TestServer::start(Default::default()).await;
    let dns = Dns::start(&zone());
    // The receiver waits 3 s before it answers the end of data: the worker is killed then.
    let receiver = Receiver::start(false, 3);
    let mut a = RelayWorker::start(server.addr, relay_config(&dns, receiver.port), "worker-a");

    let ids = enqueue(
        server.addr,
        "ann@here.test",
        &["slow@accept.test"],
        &message("ann@here.test", "slow@accept.test", "k1"),
    )
    .await;
    let mut admin = server.admin_client().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let e = admin.get_queued(GetQueuedRequest { queue_id: ids[0].clone() }).await.expect("the entry").into_inner();
        if e.lease_holder == "worker-a" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "worker-a never claimed the entry");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.kill().await;
    let b = RelayWorker::start(server.addr, relay_config(&dns, receiver.port), "worker-b");
    // Worker B may take the entry only once A's lease (10 s) has run out.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(receiver.messages().is_empty(), "nothing delivered while A's lease holds");
    let e = admin.get_queued(GetQueuedRequest { queue_id: ids[0].clone() }).await.expect("the entry").into_inner();
    assert_eq!(e.lease_holder, "worker-a", "B must not take a leased entry");
    let got = receiver.wait_for(1, WAIT).await;
    wait_queue_empty(&server).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.messages().len(), 1, "delivered exactly once: {got:?}");
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_to_one_domain_keep_to_its_rate_limit() {
    let server = TestServer::start(Default::default()).await;
    let dns = Dns::start(&zone());
    let receiver = Receiver::start(false, 1);
    const N: usize = 10;
    for i in 0..N {
        let rcpt = format!("p{i}@accept.test");
        enqueue(server.addr, "ann@here.test", &[rcpt.as_str()], &message("ann@here.test", &rcpt, &format!("p{i}")))
            .await;
    }
    // Five starts per second: ten deliveries take at least 9 × 200 ms, however fast the rest is.
    let config = tern_relay::RelayConfig { per_domain_rate: 5.0, ..relay_config(&dns, receiver.port) };
    let started = std::time::Instant::now();
    let _relay = RelayWorker::start(server.addr, config, "w1");
    receiver.wait_for(N, WAIT).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1700), "10 deliveries at 5/s took only {took:?}");
    wait_queue_empty(&server).await;
    assert_eq!(receiver.messages().len(), N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dsn_parameters_go_on_to_a_server_that_supports_dsn() {
    let server = TestServer::start(Default::default()).await;
    let mut admin = server.admin_client().await;
    let ann = setup_account(&mut admin, "ann@here.test", "pw").await;
    let dns = Dns::start(&zone());
    let receiver = Receiver::start_with(false, 1, true);
    let _relay = RelayWorker::start(server.addr, relay_config(&dns, receiver.port), "w1");

    let recipient = tern_proto::v1::QueuedRecipient {
        address: "bob@accept.test".into(),
        notify: vec!["SUCCESS".into(), "FAILURE".into()],
        orcpt: "rfc822;bob@accept.test".into(),
    };
    let mut client =
        tern_proto::v1::mailbox_client::MailboxClient::connect(format!("http://{}", server.addr)).await.unwrap();
    let envelope = tern_proto::v1::EnqueueEnvelope {
        mail_from: "ann@here.test".into(),
        recipients: vec![recipient],
        ret: "HDRS".into(),
        envid: "id 1+2".into(),
        ..Default::default()
    };
    let requests = vec![
        tern_proto::v1::EnqueueRequest { part: Some(tern_proto::v1::enqueue_request::Part::Envelope(envelope)) },
        tern_proto::v1::EnqueueRequest {
            part: Some(tern_proto::v1::enqueue_request::Part::Chunk(message("ann@here.test", "bob@accept.test", "d1"))),
        },
    ];
    client.enqueue(futures::stream::iter(requests)).await.expect("enqueue");
    let got = receiver.wait_for(1, WAIT).await;
    wait_queue_empty(&server).await;
    assert_eq!(got[0].dsn_mail, ["RET=HDRS", "ENVID=id+201+2B2"]);
    assert_eq!(
        got[0].dsn_rcpt,
        [vec!["NOTIFY=SUCCESS,FAILURE".to_string(), "ORCPT=rfc822;bob@accept.test".to_string()]]
    );
    // That server reports success itself: the relay sends no report of its own.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut mail = server.mailbox_client().await;
    let folder = Some(FolderRef { by: Some(folder_ref::By::Name("INBOX".into())) });
    let inbox = mail.select(SelectRequest { account_id: ann.id, folder }).await.unwrap().into_inner();
    assert!(inbox.messages.is_empty(), "no relayed report when the next server takes NOTIFY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_bit_bodies_and_utf8_addresses_are_announced() {
    let server = TestServer::start(Default::default()).await;
    let dns = Dns::start(&zone());
    let receiver = Receiver::start(false, 1);
    let _relay = RelayWorker::start(server.addr, relay_config(&dns, receiver.port), "w1");

    let body = "From: ann@here.test\r\nSubject: caf\u{e9}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nd\u{e9}j\u{e0} vu\r\n";
    enqueue(server.addr, "ann@here.test", &["bob@accept.test"], body.as_bytes()).await;
    enqueue(server.addr, "ann@here.test", &["j\u{f6}rg@accept.test"], b"Subject: plain\r\n\r\nascii\r\n").await;
    let got = receiver.wait_for(2, WAIT).await;
    wait_queue_empty(&server).await;
    let by_rcpt = |r: &str| got.iter().find(|m| m.rcpt_tos.iter().any(|x| x == r)).expect("delivered");
    let eight = by_rcpt("bob@accept.test");
    assert!(eight.mail_options.iter().any(|o| o == "BODY=8BITMIME"), "{:?}", eight.mail_options);
    assert_eq!(eight.raw, body.as_bytes(), "8-bit content unchanged");
    let utf8 = by_rcpt("j\u{f6}rg@accept.test");
    assert!(utf8.mail_options.iter().any(|o| o == "SMTPUTF8"), "{:?}", utf8.mail_options);
    assert!(!utf8.mail_options.iter().any(|o| o.starts_with("BODY")), "{:?}", utf8.mail_options);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mta_sts_policy_in_enforce_mode_is_honoured() {
    use tern_tests::relay::HttpsServer;
    let server = TestServer::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    // One certificate for the receiver and the policy host, trusted as the relay's extra root.
    let names = ["mx.sts.test", "mta-sts.sts.test", "mta-sts.bad.test", "mta-sts.unlisted.test"];
    let cert = tern_runtime::tls::dev_certificate(dir.path(), &names.map(String::from)).unwrap();
    let receiver = Receiver::start_with_cert(&cert);
    let https = HttpsServer::start(&cert);
    https.put(
        ".well-known/mta-sts.txt",
        "version: STSv1\nmode: enforce\nmx: mx.sts.test\nmx: mx.bad.test\nmax_age: 86400\n",
    );
    let mut owned: Vec<(String, &str, String)> = Vec::new();
    for domain in ["sts.test", "bad.test", "unlisted.test"] {
        owned.push((domain.into(), "MX", format!("10 mx.{domain}")));
        owned.push((format!("mx.{domain}"), "A", "127.0.0.1".into()));
        owned.push((format!("mta-sts.{domain}"), "A", "127.0.0.1".into()));
        owned.push((format!("_mta-sts.{domain}"), "TXT", "v=STSv1; id=20261126".into()));
    }
    let mut records: Vec<(&str, &str, &str)> = zone();
    records.extend(owned.iter().map(|(n, t, v)| (n.as_str(), *t, v.as_str())));
    let dns = Dns::start(&records);
    let config = tern_relay::RelayConfig {
        mta_sts_port: https.port,
        extra_ca_file: Some(cert.cert.clone()),
        ..relay_config(&dns, receiver.port)
    };
    let _relay = RelayWorker::start(server.addr, config, "w1");
    let mut admin = server.admin_client().await;

    // The policy names the MX and its certificate verifies: delivered, over TLS.
    enqueue(server.addr, "ann@here.test", &["bob@sts.test"], &message("ann@here.test", "bob@sts.test", "s1")).await;
    let got = receiver.wait_for(1, WAIT).await;
    assert!(got[0].tls && got[0].rcpt_tos == ["bob@sts.test"]);

    // The same server, whose certificate is not valid for mx.bad.test; and a domain whose MX the
    // policy does not name. Neither is delivered: both are deferred, with the reason.
    let bad =
        enqueue(server.addr, "ann@here.test", &["bob@bad.test"], &message("ann@here.test", "bob@bad.test", "s2")).await;
    let unlisted = enqueue(
        server.addr,
        "ann@here.test",
        &["bob@unlisted.test"],
        &message("ann@here.test", "bob@unlisted.test", "s3"),
    )
    .await;
    for (id, reason) in [(&bad[0], "TLS handshake failed"), (&unlisted[0], "MTA-STS policy names")] {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let e = admin.get_queued(GetQueuedRequest { queue_id: id.clone() }).await.expect("the entry").into_inner();
            if let Some(a) = e.history.first() {
                assert!(a.result.contains(reason), "{reason}: {:?}", e.history);
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "no attempt of {id}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(receiver.messages().len(), 1, "nothing went to a host the policy does not vouch for");
}
