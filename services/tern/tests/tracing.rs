//! One SMTP delivery is one trace, across the gRPC hop: the `tern` binary exports its spans
//! over OTLP/gRPC to a real receiver (`tests/fixtures/otlp/receiver.py`, the official
//! OpenTelemetry protos on grpcio), and the test follows the parent links of what arrived, from
//! the body's put in the mailbox service up to the SMTP connection that received the message.
//!
//! - `tern dev`: every part in one process, still talking over gRPC on loopback.
//! - `tern mailbox` on NATS JetStream and SeaweedFS S3, and `tern smtp` in front of it: two
//!   processes, two service names, one trace id, with the NATS append and the S3 put in it.
//!
//! The receiver needs grpcio and opentelemetry-proto, which `cargo xtask ci` installs into
//! `.tools/py` (a run by hand may have them in `.tools/otlp`); the second test also needs the
//! `nats-server` and `weed` binaries (see [`tern_testbed::find_binary`]).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use tern_testbed::{Nats, Process, SeaweedS3, free_ports, http_request, workspace_root};

const TERN: &str = env!("CARGO_BIN_EXE_tern");
const ALICE: &str = "alice@example.com";
/// How long the spans of a delivery may take to arrive (the processes export every 100 ms).
const EXPORT_WAIT: Duration = Duration::from_secs(30);

/// One span as the receiver wrote it.
#[derive(Debug, Clone)]
struct Span {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: String,
    service: String,
}

/// The OTLP receiver: a Python process on a free loopback port, writing what it receives into a
/// file of JSON lines.
struct Receiver {
    _process: Process,
    port: u16,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Receiver {
    fn start() -> Receiver {
        let dir = tempfile::Builder::new().prefix("tern-otlp-").tempdir().expect("a temporary directory");
        let root = workspace_root().expect("the workspace root");
        let tools = root.join(".tools");
        let mut process = tern_tests::relay::python(dir.path());
        let path = std::env::join_paths([tools.join("py"), tools.join("otlp")]).expect("a PYTHONPATH");
        process.env("PYTHONPATH", path);
        let out = dir.path().join("spans.jsonl");
        let script = root.join("tests").join("fixtures").join("otlp").join("receiver.py");
        process
            .spawn(&[script.as_os_str(), "--port".as_ref(), "0".as_ref(), "--out".as_ref(), out.as_os_str()])
            .expect("start the OTLP receiver");
        let port = tern_tests::relay::wait_port(&mut process, &dir.path().join("python3.log"));
        Receiver { _process: process, port, out, _dir: dir }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every span received so far (a line still being written is left for the next look).
    fn spans(&self) -> Vec<Span> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
                let field = |key: &str| v[key].as_str().unwrap_or_default().to_string();
                Span {
                    trace_id: field("trace_id"),
                    span_id: field("span_id"),
                    parent_span_id: field("parent_span_id"),
                    name: field("name"),
                    kind: field("kind"),
                    service: field("service"),
                }
            })
            .collect()
    }

    /// Waits for a delivery's trace: spans named `leaves` (the storage steps) whose parent
    /// links all reach the same root, an SMTP connection's span. Returns, for each leaf, the
    /// chain from it to the root.
    fn wait_for_delivery(&self, leaves: &[&str]) -> Vec<Vec<Span>> {
        let deadline = Instant::now() + EXPORT_WAIT;
        loop {
            let spans = self.spans();
            if let Some(chains) = delivery(&spans, leaves) {
                return chains;
            }
            if Instant::now() > deadline {
                // The relay's polling (tern dev) adds a trace a second: the newest spans only.
                let shown: Vec<String> = spans[spans.len().saturating_sub(60)..]
                    .iter()
                    .map(|s| {
                        format!(
                            "{} {} <- {} {} {} ({})",
                            s.trace_id, s.span_id, s.parent_span_id, s.kind, s.name, s.service
                        )
                    })
                    .collect();
                panic!(
                    "no trace links {leaves:?} to an SMTP connection within {EXPORT_WAIT:?}; received last:\n{}",
                    shown.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The chains from spans named `leaves` up to one root `smtp` span, if every leaf has one (the
/// newest such trace).
fn delivery(spans: &[Span], leaves: &[&str]) -> Option<Vec<Vec<Span>>> {
    let mut roots = spans.iter().rev().filter(|s| s.name == "smtp" && s.parent_span_id.is_empty());
    roots.find_map(|root| {
        leaves
            .iter()
            .map(|leaf| {
                spans
                    .iter()
                    .filter(|s| s.name == *leaf && s.trace_id == root.trace_id)
                    .map(|s| chain(spans, s))
                    .find(|c| c.last().is_some_and(|top| top.span_id == root.span_id))
            })
            .collect()
    })
}

/// `span` and its ancestors, nearest first, as far as they were received.
fn chain(spans: &[Span], span: &Span) -> Vec<Span> {
    let mut out = vec![span.clone()];
    while let Some(parent) = out
        .last()
        .filter(|s| !s.parent_span_id.is_empty())
        .and_then(|s| spans.iter().find(|p| p.trace_id == s.trace_id && p.span_id == s.parent_span_id))
    {
        out.push(parent.clone());
    }
    out
}

/// Checks the links of a delivery's chain, from a storage step up to the SMTP connection: the
/// mailbox service's Deliver span (kind server) is the child of the front-end's call (kind
/// client), which is inside the SMTP message's span. Returns the two: (server, client).
fn check_hop(chain: &[Span]) -> (Span, Span) {
    let names: Vec<String> = chain.iter().map(|s| format!("{} ({}, {})", s.name, s.kind, s.service)).collect();
    let at = |name: &str, kind: &str| {
        chain
            .iter()
            .position(|s| s.name == name && s.kind == kind)
            .unwrap_or_else(|| panic!("no {kind} span {name} in the chain {names:#?}"))
    };
    let server = at("tern.mailbox.v1.Mailbox/Deliver", "SPAN_KIND_SERVER");
    let client = at("tern.mailbox.v1.Mailbox/Deliver", "SPAN_KIND_CLIENT");
    let message = at("smtp.message", "SPAN_KIND_INTERNAL");
    assert_eq!(client, server + 1, "the server span's parent is the client span: {names:#?}");
    assert!(message > client, "the call is made inside the message's span: {names:#?}");
    assert!(chain.iter().all(|s| s.trace_id == chain[0].trace_id));
    (chain[server].clone(), chain[client].clone())
}

fn admin(server: &str, args: &[&str]) {
    let out = Command::new(TERN).args(["admin", "--server", server]).args(args).output().expect("tern admin runs");
    assert!(out.status.success(), "tern admin {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Sends one message to alice through the MX listener at `mx`, and checks that it was stored.
fn deliver(mx: SocketAddr) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let body = b"From: sender@remote.example\r\nTo: alice@example.com\r\nSubject: traced\r\n\r\nOne trace.\r\n";
    let reply = runtime.block_on(tern_tests::smtp::send_message(mx, ALICE, body));
    assert_eq!(reply.code, 250, "the message was stored: {reply:?}");
}

/// Starts `tern` in `dir` with `args`, exporting to `receiver` every 100 ms, and waits until
/// its `/readyz` at `http` answers 200.
fn start(dir: &Path, args: &[String], http: SocketAddr, receiver: &Receiver) -> Process {
    let mut process = Process::new(TERN, dir);
    process.env("NO_COLOR", "1").env("OTEL_BSP_SCHEDULE_DELAY", "100");
    let mut args = args.to_vec();
    args.extend(["--otlp-endpoint".into(), receiver.endpoint()]);
    process.spawn(&args).expect("start tern");
    let ready = || http_request(http, "GET", "/readyz", &[], b"").is_ok_and(|r| r.status == 200);
    if let Err(e) = process.wait_ready("it is ready", ready) {
        panic!("tern {}: {e:#}", args[0]);
    }
    process
}

#[test]
fn a_delivery_through_tern_dev_is_one_trace() {
    let receiver = Receiver::start();
    let dir = tempfile::Builder::new().prefix("tern-tracing-").tempdir().expect("a temporary directory");
    let ports: [u16; 10] = free_ports().expect("free ports");
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    let mut args = vec!["dev".to_string(), "--data-dir".into(), dir.path().join("data").display().to_string()];
    for (i, flag) in [
        "--grpc-listen",
        "--http-listen",
        "--smtp-listen",
        "--submission-listen",
        "--submissions-listen",
        "--pop3-listen",
        "--pop3s-listen",
        "--imap-listen",
        "--imaps-listen",
        "--managesieve-listen",
    ]
    .into_iter()
    .enumerate()
    {
        args.extend([flag.to_string(), addr(i).to_string()]);
    }
    let _dev = start(dir.path(), &args, addr(1), &receiver);
    let server = format!("http://{}", addr(0));
    admin(&server, &["domain", "add", "example.com"]);
    admin(&server, &["mailbox", "add", ALICE, "--password", "pw"]);

    deliver(addr(2));

    let chains = receiver.wait_for_delivery(&["blob.put"]);
    let (server_span, client_span) = check_hop(&chains[0]);
    assert_eq!((server_span.service.as_str(), client_span.service.as_str()), ("tern-dev", "tern-dev"));
}

#[test]
fn a_delivery_across_processes_is_one_trace_through_nats_and_s3() {
    let receiver = Receiver::start();
    // SeaweedFS takes a second or more; NATS starts meanwhile.
    let s3 = std::thread::spawn(SeaweedS3::start);
    let nats = Nats::start().expect("start nats-server");
    let s3 = s3.join().expect("the SeaweedFS start thread").expect("start SeaweedFS");
    let root = tempfile::Builder::new().prefix("tern-tracing-").tempdir().expect("a temporary directory");
    let [grpc, mailbox_http, mx, smtp_http] =
        free_ports().expect("free ports").map(|p| SocketAddr::from(([127, 0, 0, 1], p)));

    let dir = root.path().join("mailbox");
    std::fs::create_dir_all(&dir).expect("the mailbox's directory");
    let config = format!(
        "data_dir = {:?}\n[listen]\ngrpc = \"{grpc}\"\nhttp = \"{mailbox_http}\"\n\n\
         [store]\nurl = \"{}\"\nprefix = \"tracing\"\n\n\
         [blobs]\nurl = \"s3://{}/tracing\"\nendpoint = \"{}\"\nregion = \"{}\"\naccess_key_id = \"{}\"\n\
         secret_access_key = \"{}\"\n",
        dir.join("data").to_str().expect("a UTF-8 temporary path"),
        nats.url(),
        s3.bucket(),
        s3.endpoint(),
        SeaweedS3::REGION,
        s3.access_key(),
        s3.secret_key(),
    );
    std::fs::write(dir.join("tern.toml"), config).expect("write the mailbox's config");
    let mailbox_args = ["mailbox".to_string(), "--config".into(), dir.join("tern.toml").display().to_string()];
    let _mailbox = start(&dir, &mailbox_args, mailbox_http, &receiver);

    let dir = root.path().join("smtp");
    std::fs::create_dir_all(&dir).expect("the front-end's directory");
    let config = format!(
        "data_dir = {:?}\nmailbox_url = \"http://{grpc}\"\n[listen]\nhttp = \"{smtp_http}\"\n\n\
         [smtp]\nhostname = \"mx.tracing.test\"\nmx = [\"{mx}\"]\nsubmission = []\nsubmissions = []\n\
         verify_inbound = false\n",
        dir.join("data").to_str().expect("a UTF-8 temporary path"),
    );
    std::fs::write(dir.join("tern.toml"), config).expect("write the front-end's config");
    let smtp_args = ["smtp".to_string(), "--config".into(), dir.join("tern.toml").display().to_string()];
    let _smtp = start(&dir, &smtp_args, smtp_http, &receiver);

    let server = format!("http://{grpc}");
    admin(&server, &["domain", "add", "example.com"]);
    admin(&server, &["mailbox", "add", ALICE, "--password", "pw"]);

    deliver(mx);

    let chains = receiver.wait_for_delivery(&["blob.put", "nats.append"]);
    for chain in &chains {
        let (server_span, client_span) = check_hop(chain);
        assert_eq!(server_span.service, "tern-mailbox", "{chain:#?}");
        assert_eq!(client_span.service, "tern-smtp", "{chain:#?}");
        assert_eq!(chain[0].service, "tern-mailbox", "the storage step is the mailbox service's: {chain:#?}");
        assert_eq!(chain.last().expect("a root").service, "tern-smtp", "{chain:#?}");
    }
    assert_eq!(chains[0][0].trace_id, chains[1][0].trace_id, "the S3 put and the NATS append are in one trace");
}
