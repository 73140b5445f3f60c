//! Spam filtering at the end of DATA against a real rspamd (Debian's, started by the harness
//! with Redis): every action rspamd can give, the recipients' own settings, rspamd down under
//! both failure policies, and outbound spam from an authenticated account. Mail goes in over
//! SMTP on loopback and is read back from the mailbox service, folder by folder.

use std::time::Duration;

use tern_proto::v1::{SpamScan, SpamSettings, UpdateAccountRequest};
use tern_rspamd::Options;
use tern_smtp::{
    config::ListenerKind,
    spam::{FailurePolicy, SpamFilter},
};
use tern_tests::{
    rspamd::{self, ACTION_HEADER, GTUBE, GTUBE_ADD_HEADER, GTUBE_REWRITE_SUBJECT, Rspamd, SUBJECT_PREFIX},
    smtp::{SmtpTestServer, send_message},
};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";

fn filter(url: &str, on_failure: FailurePolicy) -> SpamFilter {
    let options = Options {
        url: url.to_string(),
        controller_url: String::new(),
        password: None,
        timeout: Duration::from_secs(10),
    };
    SpamFilter { client: tern_rspamd::Client::new(options).unwrap(), on_failure, max_scan_bytes: 10 << 20 }
}

fn text(m: &[u8]) -> String {
    String::from_utf8_lossy(m).into_owned()
}

/// The message as sent over DATA: the harness's message, whose text is `body`.
fn mail(subject: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    rspamd::message(subject, headers, body)
}

async fn set_spam(server: &SmtpTestServer, address: &str, spam: SpamSettings) {
    server
        .mailbox
        .admin_client()
        .await
        .update_account(UpdateAccountRequest { address: address.into(), spam: Some(spam), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("set the spam settings of {address}: {e}"));
}

/// Sends one message from sender@remote.example to several recipients over the MX listener;
/// the reply to the end of DATA.
async fn send_to_all(server: &SmtpTestServer, to: &[&str], body: &[u8]) -> tern_tests::smtp::SmtpReply {
    let mut c = server.connect_ehlo(ListenerKind::Mx).await;
    c.expect("MAIL FROM:<sender@remote.example>", "250").await;
    for r in to {
        c.expect(&format!("RCPT TO:<{r}>"), "250").await;
    }
    c.expect("DATA", "354").await;
    let mut data = body.to_vec();
    data.extend_from_slice(b".\r\n");
    c.send(&data).await.unwrap();
    let reply = c.read_reply().await.unwrap();
    c.expect("QUIT", "221").await;
    reply
}

/// rspamd's actions, each as a real message would get it: GTUBE is refused with rspamd's text,
/// ham reaches INBOX with a verdict saying so, "add header" and "rewrite subject" reach Junk
/// with rspamd's headers (and the new subject), "soft reject" and "greylist" are 451, and the
/// spam headers a sender wrote are not what the recipient reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs rspamd and redis-server (Debian packages); run by cargo xtask ci"]
async fn every_action_of_rspamd_is_honoured() {
    let rspamd = Rspamd::start().await;
    let server = SmtpTestServer::start_with_spam(filter(&rspamd.url, FailurePolicy::Tempfail)).await;

    let reply = send_message(server.mx, ALICE, &mail("gtube", &[], GTUBE)).await;
    assert_eq!((reply.code, reply.last()), (550, "550 5.7.1 Gtube pattern"), "{reply:?}");

    let ham = mail("lunch", &[("X-Spam-Status", "No, forged by the sender")], "See you at noon.");
    let reply = send_message(server.mx, ALICE, &ham).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let inbox = server.inbox(ALICE).await;
    assert_eq!(inbox.len(), 1);
    let delivered = text(&inbox[0]);
    assert!(delivered.contains("X-Spam-Status: No, score="), "{delivered}");
    assert!(!delivered.contains("forged by the sender"), "a forged spam header survived: {delivered}");
    assert!(delivered.contains("X-Spamd-Result: default: False ["), "{delivered}");
    assert!(delivered.contains("See you at noon."));

    let reply = send_message(server.mx, ALICE, &mail("offer", &[], GTUBE_ADD_HEADER)).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let reply = send_message(server.mx, ALICE, &mail("prize", &[], GTUBE_REWRITE_SUBJECT)).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    assert_eq!(server.inbox(ALICE).await.len(), 1, "spam stays out of INBOX");
    let junk = server.folder(ALICE, "Junk").await;
    assert_eq!(junk.len(), 2);
    let (added, rewritten) = (text(&junk[0]), text(&junk[1]));
    assert!(added.contains("X-Spam-Status: Yes, score=") && added.contains("action=add_header"), "{added}");
    assert!(added.contains("GTUBE"), "the symbols are reported: {added}");
    assert!(added.contains("Subject: offer\r\n"), "{added}");
    assert!(rewritten.contains(&format!("Subject: {SUBJECT_PREFIX}prize")), "{rewritten}");
    assert_eq!(rewritten.matches("Subject:").count(), 1, "one Subject: {rewritten}");
    // Trace headers stay first: the Received of this server tops every copy.
    assert!(added.starts_with("Received: from client.test"), "{added}");

    for action in ["soft reject", "greylist"] {
        let reply = send_message(server.mx, ALICE, &mail(action, &[(ACTION_HEADER, action)], "text")).await;
        assert_eq!((reply.code, reply.last()), (451, &*format!("451 4.7.1 Tern test action {action}")), "{reply:?}");
    }
    assert_eq!(server.inbox(ALICE).await.len() + server.folder(ALICE, "Junk").await.len(), 3, "nothing else stored");
}

/// A recipient's own settings: scanning off takes even GTUBE into INBOX, an allowed sender
/// skips Junk, a blocked sender goes to Junk whatever rspamd says, and a junk folder of one's
/// own is created on first use. With several recipients, a refusal that one of them is exempt
/// from becomes delivery: INBOX for that one, Junk for the others, and one scan for all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs rspamd and redis-server (Debian packages); run by cargo xtask ci"]
async fn recipients_settings_apply_to_the_verdict() {
    let rspamd = Rspamd::start().await;
    let server = SmtpTestServer::start_with_spam(filter(&rspamd.url, FailurePolicy::Tempfail)).await;
    set_spam(&server, BOB, SpamSettings { scan: SpamScan::Off as i32, ..Default::default() }).await;
    set_spam(&server, ALICE, SpamSettings { allow_senders: vec!["@remote.example".into()], ..Default::default() })
        .await;
    set_spam(
        &server,
        CAROL,
        SpamSettings {
            junk_folder: "Spam/Suspect".into(),
            block_senders: vec!["sender@remote.example".into()],
            ..Default::default()
        },
    )
    .await;

    let reply = send_message(server.mx, BOB, &mail("gtube for bob", &[], GTUBE)).await;
    assert_eq!(reply.code, 250, "scanning off: {reply:?}");
    assert_eq!(server.inbox(BOB).await.len(), 1);
    let reply = send_message(server.mx, ALICE, &mail("allowed", &[], GTUBE_ADD_HEADER)).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    assert_eq!(server.inbox(ALICE).await.len(), 1, "an allowed sender reaches INBOX");
    let reply = send_message(server.mx, CAROL, &mail("blocked", &[], "Perfectly fine text.")).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    assert_eq!(server.inbox(CAROL).await.len(), 0);
    let suspect = server.folder(CAROL, "Spam/Suspect").await;
    assert_eq!(suspect.len(), 1, "a blocked sender goes to the junk folder, created for it");

    let scans_before = scans(&rspamd).await;
    let reply = send_to_all(&server, &[BOB, "dave@example.com"], &mail("gtube for two", &[], GTUBE)).await;
    assert_eq!(reply.code, 250, "bob scans nothing, so the message is taken: {reply:?}");
    assert_eq!(server.inbox(BOB).await.len(), 2);
    assert_eq!(server.inbox("dave@example.com").await.len(), 0);
    assert_eq!(server.folder("dave@example.com", "Junk").await.len(), 1, "dave's copy is junk");
    assert_eq!(scans(&rspamd).await, scans_before + 1, "one scan for both recipients");
    let reply = send_to_all(&server, &[CAROL, "dave@example.com"], &mail("gtube again", &[], GTUBE)).await;
    assert_eq!(reply.code, 550, "nobody is exempt: {reply:?}");
}

/// How many messages rspamd has scanned, from its controller's `/stat`.
async fn scans(rspamd: &Rspamd) -> u64 {
    let r = rspamd.post(rspamd.controller_addr, "/stat", b"", &[]).await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("/stat: {e}: {r:?}"));
    v["scanned"].as_u64().unwrap_or_else(|| panic!("no scanned count in {v}"))
}

/// rspamd stopped: under `tempfail` the sender is told 451 and nothing is stored; under `accept`
/// the message is delivered unscanned (to INBOX, with no verdict header), and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs rspamd and redis-server (Debian packages); run by cargo xtask ci"]
async fn rspamd_down_is_a_policy_choice() {
    let mut rspamd = Rspamd::start().await;
    let url = rspamd.url.clone();
    let tempfail = SmtpTestServer::start_with_spam(filter(&url, FailurePolicy::Tempfail)).await;
    let accept = SmtpTestServer::start_with_spam(filter(&url, FailurePolicy::Accept)).await;
    assert_eq!(send_message(tempfail.mx, ALICE, &mail("before", &[], "up")).await.code, 250);
    rspamd.stop();

    let reply = send_message(tempfail.mx, ALICE, &mail("while down", &[], "text")).await;
    assert_eq!((reply.code, reply.last()), (451, "451 4.7.1 Spam filter unavailable, try again later"));
    assert_eq!(tempfail.inbox(ALICE).await.len(), 1, "nothing stored while rspamd is down");

    let unscanned_before = counter("tern_spam_unscanned_deliveries_total");
    let reply = send_message(accept.mx, ALICE, &mail("while down", &[], GTUBE)).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let inbox = accept.inbox(ALICE).await;
    assert_eq!(inbox.len(), 1);
    assert!(!text(&inbox[0]).contains("X-Spam-Status"), "no verdict without a scan");
    assert!(counter("tern_spam_unscanned_deliveries_total") > unscanned_before);
    assert!(counter("tern_spam_scans_total{result=\"unavailable\"}") >= 2.0);
}

/// A sample of this process's metrics (the SMTP servers run in it), 0 when absent.
fn counter(name: &str) -> f64 {
    let text = tern_runtime::metrics::Metrics::global().encode();
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

/// Outbound spam: an authenticated account sending GTUBE to a remote address is refused, and
/// nothing is queued for the relay; a clean submission is queued as the sender wrote it,
/// without spam headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs rspamd and redis-server (Debian packages); run by cargo xtask ci"]
async fn outbound_spam_is_refused() {
    let rspamd = Rspamd::start().await;
    let server = SmtpTestServer::start_with_spam(filter(&rspamd.url, FailurePolicy::Tempfail)).await;
    let mut c = server.connect_authenticated(ALICE).await;
    let from_alice = |subject: &str, text: &str| {
        format!(
            "From: Alice <{ALICE}>\r\nTo: x@far.example\r\nSubject: {subject}\r\nDate: {}\r\nMessage-ID: <{subject}@example.com>\r\n\r\n{text}\r\n.\r\n",
            rspamd::rfc5322_date(std::time::SystemTime::now())
        )
    };
    c.expect(&format!("MAIL FROM:<{ALICE}>"), "250").await;
    c.expect("RCPT TO:<x@far.example>", "250").await;
    c.expect("DATA", "354").await;
    c.send(from_alice("spam", GTUBE).as_bytes()).await.unwrap();
    let reply = c.read_reply().await.unwrap();
    assert_eq!(reply.code, 550, "{reply:?}");
    assert!(server.queue().await.is_empty(), "nothing queued");

    c.expect(&format!("MAIL FROM:<{ALICE}>"), "250").await;
    c.expect("RCPT TO:<x@far.example>", "250").await;
    c.expect("DATA", "354").await;
    c.send(from_alice("hello", "An ordinary message.").as_bytes()).await.unwrap();
    let reply = c.read_reply().await.unwrap();
    assert_eq!(reply.code, 250, "{reply:?}");
    let queue = server.queue().await;
    assert_eq!(queue.len(), 1);
    c.expect("QUIT", "221").await;
}
