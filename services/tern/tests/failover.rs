//! The mailbox tier as a cluster, with separate `tern` processes as a deployment runs them: a
//! three-node NATS JetStream cluster, three `tern mailbox` replicas (each entry kept on three
//! NATS servers), and one `tern smtp` whose `mailbox_url` names all three replicas, so its calls
//! are balanced over them (`tern_runtime::rpc`).
//!
//! - **Balance:** under a steady stream of SMTP deliveries, each replica serves a share of the
//!   front-end's gRPC calls within 20% of an even third (read from each replica's `/metrics`).
//! - **Failover:** one replica is killed with SIGKILL in the middle of the stream. The test
//!   prints the window in which senders got 451s (first to last), and requires it to be at most
//!   one second; every message that got a 250 is in the mailbox afterwards.
//! - **Coming back:** the killed replica, started again on its address, gets calls again within
//!   seconds, without the front-end being told (the time is printed).
//! - **Security:** the replicas require the Admin API token; `tern admin` without it is refused
//!   with a clear message and changes nothing. A second test runs the parts with mutual TLS
//!   (a CA of the test's own): a front-end with a certificate works, a client without TLS or
//!   with another CA's certificate gets nothing, and the Admin API also needs the token.
//!
//! It needs `nats-server` (installed by `cargo xtask e2e` and `ci`; see
//! [`tern_testbed::find_binary`]). Bodies are in one directory all replicas share, which on one
//! machine stands in for S3. Every load loop is bounded in count and time.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tern_testbed::{NatsCluster, Process, free_ports, http_request};

const TERN: &str = env!("CARGO_BIN_EXE_tern");
const ALICE: &str = "alice@example.com";
const TOKEN: &str = "failover-admin-token";
/// Concurrent SMTP senders.
const SENDERS: usize = 6;
/// Deliveries before the kill, and the most the whole run makes.
const BEFORE_KILL: usize = 240;
const MAX_DELIVERIES: usize = 700;
/// How long the stream of deliveries may run at most.
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// The longest window of 451s a replica's death may cause.
const MAX_WINDOW: Duration = Duration::from_secs(1);

/// One `tern` process, killed when dropped.
struct Node {
    process: Process,
    http: SocketAddr,
    addr: SocketAddr,
}

impl Node {
    fn spawn(root: &Path, name: &str, command: &str, config: &str) -> Node {
        Self::spawn_with_env(root, name, command, config, &[])
    }

    /// [`Node::spawn`] with environment variables (credentials, say).
    fn spawn_with_env(root: &Path, name: &str, command: &str, config: &str, env: &[(&str, &str)]) -> Node {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("the node's directory");
        let [http, port] = free_ports().expect("free ports");
        let (http, addr) = (SocketAddr::from(([127, 0, 0, 1], http)), SocketAddr::from(([127, 0, 0, 1], port)));
        let config = config.replace("{ADDR}", &addr.to_string()).replace("{HTTP}", &http.to_string());
        let path = dir.join("tern.toml");
        std::fs::write(&path, format!("data_dir = {:?}\n{config}", dir.join("data"))).expect("write the config");
        let mut process = Process::new(TERN, &dir);
        process.env("NO_COLOR", "1");
        for (key, value) in env {
            process.env(key, value);
        }
        process.spawn(&[command, "--config", path.to_str().expect("UTF-8 path")]).expect("start tern");
        let ready = || http_request(http, "GET", "/readyz", &[], b"").is_ok_and(|r| r.status == 200);
        process.wait_ready("it is ready", ready).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        Node { process, http, addr }
    }

    /// The gRPC requests this replica has served, from its `/metrics`.
    fn grpc_requests(&self) -> u64 {
        let response = http_request(self.http, "GET", "/metrics", &[], b"").expect("metrics");
        String::from_utf8_lossy(&response.body)
            .lines()
            .filter(|l| l.starts_with("tern_grpc_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

fn admin(server: &str, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(TERN);
    command.args(["admin", "--server", server]).args(args).stdin(Stdio::null()).env_remove("TERN_ADMIN_TOKEN");
    if let Some(token) = token {
        command.env("TERN_ADMIN_TOKEN", token);
    }
    command.output().expect("run tern admin")
}

/// What one delivery came to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Accepted,
    Deferred,
}

#[test]
fn a_front_end_balances_over_replicas_and_survives_losing_one() {
    let root = tempfile::Builder::new().prefix("tern-failover-").tempdir().expect("a temporary directory");
    let nats = NatsCluster::start().expect("a NATS cluster");
    let bodies = root.path().join("bodies");
    let mailbox_config = format!(
        "[listen]\ngrpc = \"{{ADDR}}\"\nhttp = \"{{HTTP}}\"\n[admin]\ntoken_file = {:?}\n\
         [store]\nurl = {:?}\nprefix = \"failover\"\nreplicas = 3\n[blobs]\nurl = {:?}\n",
        root.path().join("admin-token"),
        nats.urls(),
        bodies.to_str().expect("UTF-8 path"),
    );
    std::fs::write(root.path().join("admin-token"), format!("{TOKEN}\n")).expect("write the token");
    let mut replicas: Vec<Node> =
        (0..3).map(|i| Node::spawn(root.path(), &format!("mailbox-{i}"), "mailbox", &mailbox_config)).collect();
    let first = format!("http://{}", replicas[0].addr);

    // The Admin API wants the token: without it nothing is created.
    let refused = admin(&first, None, &["domain", "add", "example.com"]);
    assert!(!refused.status.success(), "the Admin API served a caller without the token");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("admin token"), "not a clear refusal: {said}");
    assert!(!String::from_utf8_lossy(&admin(&first, Some(TOKEN), &["domain", "list"]).stdout).contains("example.com"));
    for args in [&["domain", "add", "example.com"][..], &["mailbox", "add", ALICE, "--password", "pw", "--quota", "1G"]]
    {
        let out = admin(&first, Some(TOKEN), args);
        assert!(out.status.success(), "tern admin {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    let urls: Vec<String> = replicas.iter().map(|r| format!("http://{}", r.addr)).collect();
    let smtp = Node::spawn(
        root.path(),
        "smtp",
        "smtp",
        &format!(
            "mailbox_url = {:?}\n[listen]\nhttp = \"{{HTTP}}\"\n[smtp]\nhostname = \"mx.failover.test\"\n\
             mx = [\"{{ADDR}}\"]\nsubmission = []\nsubmissions = []\nverify_inbound = false\n",
            urls.join(",")
        ),
    );
    let before: Vec<u64> = replicas.iter().map(Node::grpc_requests).collect();

    // The stream of deliveries: each sender one message per connection, until the limit.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    let outcomes: Arc<Mutex<Vec<(Instant, Outcome, usize)>>> = Arc::default();
    let started = Instant::now();
    let mx = smtp.addr;
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let outcomes = Arc::clone(&outcomes);
            runtime.spawn(async move {
                for n in (s..MAX_DELIVERIES).step_by(SENDERS) {
                    if started.elapsed() > RUN_LIMIT {
                        break;
                    }
                    let body = format!("Subject: failover {n}\r\nMessage-ID: <{n}@failover.test>\r\n\r\nbody {n}\r\n");
                    let reply = tern_tests::smtp::send_message(mx, ALICE, body.as_bytes()).await;
                    let outcome = match reply.code {
                        250 => Outcome::Accepted,
                        451 => Outcome::Deferred,
                        other => panic!("delivery {n}: unexpected reply {other} {:?}", reply.lines),
                    };
                    outcomes.lock().expect("outcomes").push((Instant::now(), outcome, n));
                }
            })
        })
        .collect();

    // Balance: once BEFORE_KILL deliveries are done, each replica's share of the calls.
    let deadline = Instant::now() + RUN_LIMIT;
    while outcomes.lock().expect("outcomes").len() < BEFORE_KILL {
        assert!(Instant::now() < deadline, "the deliveries did not get going");
        std::thread::sleep(Duration::from_millis(20));
    }
    let served: Vec<u64> = replicas.iter().zip(&before).map(|(r, b)| r.grpc_requests() - b).collect();
    let total: u64 = served.iter().sum();
    let shares: Vec<f64> = served.iter().map(|&n| n as f64 / total as f64 * 3.0).collect();
    println!("calls served per replica: {served:?} (share of an even third: {shares:.2?})");
    assert!(shares.iter().all(|s| (0.8..=1.2).contains(s)), "calls are not spread within 20% of even: {served:?}");

    // Failover: SIGKILL one replica while deliveries go on.
    let killed_at = Instant::now();
    replicas[1].process.kill();
    for sender in senders {
        runtime.block_on(sender).expect("a sender");
    }
    let outcomes = outcomes.lock().expect("outcomes").clone();
    let deferred: Vec<Instant> = outcomes.iter().filter(|o| o.1 == Outcome::Deferred).map(|o| o.0).collect();
    let window = match (deferred.first(), deferred.last()) {
        (Some(first), Some(last)) => *last - *first,
        _ => Duration::ZERO,
    };
    let after_kill = outcomes.iter().filter(|o| o.0 > killed_at).count();
    println!(
        "replica killed: {} deliveries after the kill, {} answered 451, 451 window {window:?} (target ≤ {MAX_WINDOW:?})",
        after_kill,
        deferred.len()
    );
    assert!(after_kill >= 100, "too few deliveries after the kill to judge: {after_kill}");
    assert!(window <= MAX_WINDOW, "451s for {window:?} after a replica died");

    // Every acknowledged message is there, read through a surviving replica.
    let listed = admin(&format!("http://{}", replicas[2].addr), Some(TOKEN), &["mail", "list", ALICE]);
    assert!(listed.status.success(), "tern admin mail list: {}", String::from_utf8_lossy(&listed.stderr));
    let listing = String::from_utf8_lossy(&listed.stdout);
    for (_, outcome, n) in &outcomes {
        if *outcome == Outcome::Accepted {
            assert!(
                listing.contains(&format!("failover {n}\n")) || listing.contains(&format!("failover {n} ")),
                "message {n} got a 250 but is not in the mailbox"
            );
        }
    }

    // The replica comes back on its address and is given calls again.
    replicas[1].process.respawn().expect("restart the replica");
    let http = replicas[1].http;
    let ready = || http_request(http, "GET", "/readyz", &[], b"").is_ok_and(|r| r.status == 200);
    replicas[1].process.wait_ready("it is ready again", ready).expect("the replica is ready again");
    let back_at = Instant::now();
    let mut first_call = None;
    for n in 0..200 {
        let body = format!("Subject: back {n}\r\n\r\nbody\r\n");
        let reply = runtime.block_on(tern_tests::smtp::send_message(mx, ALICE, body.as_bytes()));
        assert_eq!(reply.code, 250, "delivery {n} after the replica came back: {:?}", reply.lines);
        if replicas[1].grpc_requests() > 0 {
            first_call = Some(back_at.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let first_call = first_call.expect("the replica that came back never got a call");
    println!("the replica that came back got its first call {first_call:?} after it was ready");
    assert!(first_call < Duration::from_secs(30));
    drop(smtp);
    drop(replicas);
}

/// A certificate authority of the test's own, issuing the parts' certificates.
struct Authority {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Authority {
    fn new(name: &str) -> Authority {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().expect("a CA key");
        Authority { issuer: rcgen::CertifiedIssuer::self_signed(params, key).expect("a CA certificate") }
    }

    /// Writes `ca.crt`, `<name>.crt` and `<name>.key` (valid for 127.0.0.1, for servers and
    /// clients) into `dir`, and returns the three paths.
    fn issue(&self, dir: &Path, name: &str) -> [String; 3] {
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("parameters");
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.issuer).expect("a certificate");
        let paths = [dir.join("ca.crt"), dir.join(format!("{name}.crt")), dir.join(format!("{name}.key"))];
        std::fs::write(&paths[0], self.issuer.pem()).expect("write the CA");
        std::fs::write(&paths[1], cert.pem()).expect("write the certificate");
        std::fs::write(&paths[2], key.serialize_pem()).expect("write the key");
        paths.map(|p| p.to_str().expect("UTF-8 path").to_string())
    }
}

/// Mutual TLS between the parts: the mailbox service serves only clients with a certificate
/// of the internal CA, a front-end with one works (an IMAP login and SELECT through `tern
/// imap`), `tern admin` needs both a certificate and the token, and a client without TLS or
/// with a certificate of another CA gets nothing.
#[test]
fn the_parts_talk_mutual_tls_and_admin_needs_the_token() {
    let root = tempfile::Builder::new().prefix("tern-mtls-").tempdir().expect("a temporary directory");
    let ca = Authority::new("tern internal test CA");
    let [ca_file, cert, key] = ca.issue(root.path(), "mailbox");
    let [_, imap_cert, imap_key] = ca.issue(root.path(), "imap");
    let tls = |cert: &str, key: &str| {
        format!("[internal_tls]\nca_file = {ca_file:?}\ncert_file = {cert:?}\nkey_file = {key:?}\n")
    };
    std::fs::write(root.path().join("token"), TOKEN).expect("write the token");
    let mailbox = Node::spawn(
        root.path(),
        "mailbox",
        "mailbox",
        &format!(
            "[listen]\ngrpc = \"{{ADDR}}\"\nhttp = \"{{HTTP}}\"\n[admin]\ntoken_file = {:?}\n{}",
            root.path().join("token"),
            tls(&cert, &key)
        ),
    );
    let url = format!("https://{}", mailbox.addr);
    let admin_tls = |token: Option<&str>, cert: &str, key: &str, args: &[&str]| {
        let mut all = vec!["--ca", &ca_file, "--cert", cert, "--key", key];
        all.extend_from_slice(args);
        admin(&url, token, &all)
    };
    for args in [&["domain", "add", "example.com"][..], &["mailbox", "add", ALICE, "--password", "pw"]] {
        let out = admin_tls(Some(TOKEN), &cert, &key, args);
        assert!(out.status.success(), "tern admin {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let no_token = admin_tls(None, &cert, &key, &["domain", "list"]);
    assert!(!no_token.status.success(), "the Admin API served a caller without the token");
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("admin token"));
    let plain = admin(&format!("http://{}", mailbox.addr), Some(TOKEN), &["domain", "list"]);
    assert!(!plain.status.success(), "the service answered a client without TLS");
    let stranger = Authority::new("another CA");
    let strange_dir = root.path().join("stranger");
    std::fs::create_dir_all(&strange_dir).expect("a directory");
    let [_, strange_cert, strange_key] = stranger.issue(&strange_dir, "client");
    let refused = admin_tls(Some(TOKEN), &strange_cert, &strange_key, &["domain", "list"]);
    assert!(!refused.status.success(), "the service answered a client certificate of another CA");

    let imap = Node::spawn(
        root.path(),
        "imap",
        "imap",
        &format!(
            "mailbox_url = {url:?}\n[listen]\nhttp = \"{{HTTP}}\"\n[imap]\nimap = [\"{{ADDR}}\"]\nimaps = []\n\
             allow_plaintext_auth = true\n{}",
            tls(&imap_cert, &imap_key)
        ),
    );
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect(imap.addr).expect("connect to IMAP");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("a timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("a second handle"));
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line).expect("the greeting");
    assert!(line.starts_with("* OK"), "{line}");
    for (command, tag) in [(format!("a LOGIN {ALICE} pw\r\n"), "a "), ("b SELECT INBOX\r\n".to_string(), "b ")] {
        writer.write_all(command.as_bytes()).expect("send");
        loop {
            line.clear();
            reader.read_line(&mut line).expect("a reply");
            if line.starts_with(tag) {
                assert!(line.starts_with(&format!("{tag}OK")), "{command:?}: {line}");
                break;
            }
        }
    }
}

/// A `tern mailbox` reaches a NATS server that wants credentials and verifies clients over TLS:
/// with the token and a client certificate of the server's CA it starts and serves; with a
/// wrong token it refuses to start and says why. Then user and password, the same way.
#[test]
fn the_mailbox_authenticates_to_nats_over_tls() {
    let root = tempfile::Builder::new().prefix("tern-nats-auth-").tempdir().expect("a temporary directory");
    let ca = Authority::new("NATS test CA");
    let [ca_file, server_cert, server_key] = ca.issue(root.path(), "nats");
    let [_, client_cert, client_key] = ca.issue(root.path(), "tern");
    let binary = tern_testbed::find_binary("nats-server", "TERN_NATS_SERVER").expect("nats-server");
    for (auth, good, bad) in [
        (vec!["--auth", "s3cret-token"], ("TERN_NATS_TOKEN", "s3cret-token"), ("TERN_NATS_TOKEN", "wrong")),
        (
            vec!["--user", "tern", "--pass", "s3cret-pass"],
            ("TERN_NATS_PASSWORD", "s3cret-pass"),
            ("TERN_NATS_PASSWORD", "wrong"),
        ),
    ] {
        let [port] = free_ports().expect("a free port");
        let mut nats = Process::new(&binary, root.path());
        let store = root.path().join(format!("js-{port}"));
        let mut args = vec!["-js", "-sd", store.to_str().unwrap(), "-a", "127.0.0.1", "-p"];
        let port_text = port.to_string();
        args.push(&port_text);
        args.extend(["--tlsverify", "--tlscert", &server_cert, "--tlskey", &server_key, "--tlscacert", &ca_file]);
        args.extend(auth.iter().copied());
        nats.spawn(&args).expect("start nats-server");
        nats.wait_ready("it listens", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
            .expect("nats-server listens");
        let user = if auth[0] == "--user" { "user = \"tern\"\n" } else { "" };
        let config = format!(
            "[listen]\ngrpc = \"{{ADDR}}\"\nhttp = \"{{HTTP}}\"\n[store]\nurl = \"tls://127.0.0.1:{port}\"\n{user}\
             tls_ca_file = {ca_file:?}\ntls_cert_file = {client_cert:?}\ntls_key_file = {client_key:?}\n"
        );
        // The wrong secret: the mailbox does not start, and says why.
        let dir = root.path().join(format!("refused-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let [grpc, http] = free_ports().expect("free ports");
        let path = dir.join("tern.toml");
        let text =
            config.replace("{ADDR}", &format!("127.0.0.1:{grpc}")).replace("{HTTP}", &format!("127.0.0.1:{http}"));
        std::fs::write(&path, format!("data_dir = {:?}\n{text}", dir.join("data"))).unwrap();
        let mut refused = Command::new(TERN);
        refused.args(["mailbox", "--config", path.to_str().unwrap()]).env(bad.0, bad.1).stdin(Stdio::null());
        let refused = refused.output().expect("run tern mailbox");
        assert!(!refused.status.success(), "tern mailbox started with a wrong NATS secret");
        let said = String::from_utf8_lossy(&refused.stderr).to_lowercase();
        assert!(said.contains("authorization") || said.contains("auth"), "no reason given: {said}");

        // The right secret: it starts, and serves an admin call that writes to NATS.
        let node = Node::spawn_with_env(root.path(), &format!("mailbox-{port}"), "mailbox", &config, &[good]);
        let out = admin(&format!("http://{}", node.addr), None, &["domain", "add", "example.com"]);
        assert!(
            out.status.success(),
            "tern admin over an authenticated NATS: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
