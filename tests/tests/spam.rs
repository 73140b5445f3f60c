//! Spam filtering at the end of DATA against a real rspamd (Debian's, started by the harness
//! with Redis): every action rspamd can give, the recipients' own settings, rspamd down under
//! both failure policies, outbound spam from an authenticated account, and the verdict as a
//! recipient's Sieve script sees it through `spamtest` (issue #18). Mail goes in over SMTP on
//! loopback and is read back from the mailbox service, folder by folder.

use std::time::Duration;

use tern_proto::v1::{ListFoldersRequest, SpamScan, SpamSettings, UpdateAccountRequest};
use tern_rspamd::Options;
use tern_smtp::{
    config::ListenerKind,
    spam::{FailurePolicy, SpamFilter},
};
use tern_tests::{
    rspamd::{
        self, ACTION_HEADER, GTUBE, GTUBE_ADD_HEADER, GTUBE_REWRITE_SUBJECT, REJECT_SCORE, Rspamd, SCORE_HEADER,
        SUBJECT_PREFIX,
    },
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

/// The script of the spamtest test: it writes what `spamtest` and `spamtest :percent` said into
/// a header of the stored copy (so the test reads the exact values, not just the branch taken),
/// then files by them as RFC 5235 suggests.
const SPAMTEST_SCRIPT: &str = r#"require ["spamtest", "spamtestplus", "relational", "comparator-i;ascii-numeric",
         "fileinto", "mailbox", "variables", "editheader"];
if spamtest :matches "*" { set "level" "${1}"; }
if spamtest :percent :matches "*" { set "percent" "${1}"; }
addheader "X-Tern-Spamtest" "${level} ${percent}";
if spamtest :percent :value "ge" :comparator "i;ascii-numeric" "50" { fileinto :create "Spammy"; stop; }
if spamtest :value "eq" :comparator "i;ascii-numeric" "0" { fileinto :create "Unscanned"; stop; }
keep;
"#;

/// Stores `text` as the active Sieve script of `address`, as ManageSieve would.
async fn activate(server: &SmtpTestServer, address: &str, text: &str) {
    server.activate_sieve(address, "spamtest", text).await;
}

/// The messages in each folder of `address` that holds any, by name.
async fn folder_counts(server: &SmtpTestServer, address: &str) -> Vec<(String, u32)> {
    let request = ListFoldersRequest { account_id: server.account_id(address), with_status: true };
    let folders = server
        .mailbox_client()
        .await
        .list_folders(request)
        .await
        .unwrap_or_else(|e| panic!("list the folders of {address}: {e}"))
        .into_inner()
        .folders;
    let mut counts: Vec<(String, u32)> =
        folders.into_iter().filter(|f| f.messages > 0).map(|f| (f.name, f.messages)).collect();
    counts.sort();
    counts
}

/// The value of the header field `name` of `message`, unfolded, if it has one.
fn field(message: &str, name: &str) -> Option<String> {
    let head = message.split("\r\n\r\n").next().unwrap_or_default();
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    let prefix = format!("{name}: ");
    unfolded.lines().find_map(|l| l.strip_prefix(&prefix)).map(str::to_string)
}

/// The score and required score of a delivered copy's verdict, from `X-Spamd-Result`
/// (`default: True [8.00 / 15.00]; ...`): the numbers the SMTP front-end had from rspamd.
fn verdict_scores(message: &str) -> (f64, f64) {
    let result = field(message, "X-Spamd-Result").unwrap_or_else(|| panic!("no X-Spamd-Result in {message}"));
    let numbers = result.split_once('[').and_then(|(_, rest)| rest.split_once(']')).map(|(inside, _)| inside);
    let (score, required) = numbers
        .and_then(|n| n.split_once(" / "))
        .unwrap_or_else(|| panic!("no [score / required] in X-Spamd-Result: {result}"));
    let number = |n: &str| -> f64 { n.parse().unwrap_or_else(|e| panic!("{n} in X-Spamd-Result {result}: {e}")) };
    (number(score), number(required))
}

/// What the script wrote in `X-Tern-Spamtest`: spamtest's level and percentage.
fn spamtest_seen(message: &str) -> String {
    field(message, "X-Tern-Spamtest").unwrap_or_else(|| panic!("the script added no X-Tern-Spamtest: {message}"))
}

/// Sieve's `spamtest` and `spamtest :percent` (RFC 5235) see rspamd's verdict, end to end: the
/// SMTP front-end scans with the real rspamd, turns the verdict into a percentage of the reject
/// score (15), and the mailbox service hands it to the recipient's script.
///
/// Over SMTP, [`message`] scores 0.00 (its MIME_GOOD, -0.1, and the RCVD_NO_TLS_LAST, +0.1, that
/// the front-end's own Received header earns it), and `X-Tern-Test-Score` adds to that, so the
/// scores are exact:
///
/// - 8 is "add header", 53% (rounded from 53.3), level 1 + 53 * 9 / 100 = 5: the script files it
///   into Spammy, instead of the Junk the spam filter chose;
/// - 7 is "add header" too, but 47% (level 5), so the script's `keep` leaves it in Junk;
/// - 3 is below "greylist" (4), 20% (level 2), kept in INBOX;
/// - 0 is 0% and level 1 (scanned, hence not "unscanned"), kept in INBOX;
/// - and for a recipient who has scanning off nothing is scanned, and spamtest says 0, which
///   RFC 5235 reserves for a message that was not tested.
///
/// The script writes the two values it saw into a header of the stored copy, so each case
/// checks the exact numbers, and that they follow from the verdict in the same copy.
///
/// [`message`]: rspamd::message
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs rspamd and redis-server (Debian packages); run by cargo xtask ci"]
async fn sieve_spamtest_sees_the_verdict_of_rspamd() {
    let rspamd = Rspamd::start().await;
    let server = SmtpTestServer::start_with_spam(filter(&rspamd.url, FailurePolicy::Tempfail)).await;
    activate(&server, ALICE, SPAMTEST_SCRIPT).await;
    activate(&server, BOB, SPAMTEST_SCRIPT).await;
    set_spam(&server, BOB, SpamSettings { scan: SpamScan::Off as i32, ..Default::default() }).await;

    // Each case: the score added, the folder the copy lands in, rspamd's score, and what the
    // script saw ("<level> <percent>").
    let cases = [
        (Some("8"), "Spammy", 8.0, "5 53"),
        (Some("7"), "Junk", 7.0, "5 47"),
        (Some("3"), "INBOX", 3.0, "2 20"),
        (None, "INBOX", 0.0, "1 0"),
    ];
    for (n, (added, folder, score, seen)) in cases.into_iter().enumerate() {
        let headers: Vec<(&str, &str)> = added.map(|a| (SCORE_HEADER, a)).into_iter().collect();
        let reply = send_message(server.mx, ALICE, &mail(&format!("case {n}"), &headers, "Some text.")).await;
        assert_eq!(reply.code, 250, "score {score}: {reply:?}");
        let counts = folder_counts(&server, ALICE).await;
        assert!(counts.iter().any(|(f, _)| f == folder), "score {score}: nothing in {folder}: {counts:?}");
        let stored = server.folder(ALICE, folder).await;
        let copy = stored.iter().map(|m| text(m)).find(|m| m.contains(&format!("Subject: case {n}\r\n")));
        let copy = copy.unwrap_or_else(|| panic!("score {score}: not in {folder}: {counts:?}"));
        assert_eq!(verdict_scores(&copy), (score, REJECT_SCORE), "the verdict of case {n}: {copy}");
        // The front-end's percentage (rounded, clamped to 0..=100) and spamtest's level from it.
        let percent = (score / REJECT_SCORE * 100.0).clamp(0.0, 100.0).round() as u32;
        assert_eq!(format!("{} {percent}", 1 + percent * 9 / 100), seen, "the arithmetic of case {n}");
        assert_eq!(spamtest_seen(&copy), seen, "what spamtest said for score {score}: {copy}");
        // rspamd's "add header" and above is what sends a copy to Junk, and marks it X-Spam.
        let add_header = score >= rspamd::ADD_HEADER_SCORE;
        assert_eq!(field(&copy, "X-Spam").is_some(), add_header, "the action for score {score}: {copy}");
    }
    assert_eq!(
        folder_counts(&server, ALICE).await,
        [("INBOX".to_string(), 2), ("Junk".to_string(), 1), ("Spammy".to_string(), 1)],
        "one copy each, and nothing in Unscanned"
    );

    let scans_before = scans(&rspamd).await;
    let to_bob = rspamd::message("unscanned", &[(SCORE_HEADER, "9")], "Some text.");
    let reply = send_message(server.mx, BOB, &to_bob).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    assert_eq!(scans(&rspamd).await, scans_before, "bob's mail is not scanned");
    let unscanned = server.folder(BOB, "Unscanned").await;
    assert_eq!(unscanned.len(), 1, "{:?}", folder_counts(&server, BOB).await);
    let copy = text(&unscanned[0]);
    assert!(!copy.contains("X-Spam-Status"), "no verdict without a scan: {copy}");
    assert_eq!(spamtest_seen(&copy), "0 0", "spamtest of an unscanned message: {copy}");
}
