//! A cluster of real processes, as a distributed deployment runs them: NATS JetStream and
//! SeaweedFS S3 (started by [`tern_testbed`]), two `tern mailbox` replicas sharing them, an
//! `tern imap` in front of each replica, a `tern pop3` and a `tern smtp` (MX), each its own
//! process with its own config file, ports and data directory, talking to each other over
//! loopback only.
//!
//! One test walks through what only separate processes can show:
//!
//! - an SMTP delivery through the MX of replica A appears as EXISTS in an IDLE on the IMAP
//!   process of replica B, with the latency printed (p50 and max over 20 deliveries);
//! - replica A killed with SIGKILL in the middle of a stream of SMTP deliveries (one connection
//!   each): every message that got a 250 is readable byte for byte through replica B, and any
//!   message that got a 4xx or a broken connection is absent or whole; a second MX on replica B
//!   takes mail at once, the IDLE on B sees all of it, and A restarted on its old ports serves
//!   the same mailbox;
//! - POP3 lists and retrieves the same messages, byte for byte.
//!
//! Another shows that SMTP message rates are counted once for the whole cluster: two `tern smtp`
//! processes, each on its own mailbox replica, share one budget per client address.
//!
//! Every read has a timeout, every process is killed when the test ends (also when it panics),
//! and every directory is removed. It needs the `nats-server` and `weed` binaries that
//! `cargo xtask e2e` and `cargo xtask ci` install (see [`tern_testbed::find_binary`]).

use std::{
    collections::BTreeMap,
    io::{self, BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use tern_testbed::{Nats, Process, SeaweedS3, free_ports, http_request};

const TERN: &str = env!("CARGO_BIN_EXE_tern");
const ALICE: &str = "alice@example.com";
const PASSWORD: &str = "cluster-secret";
/// How long any one read from a server may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a `tern admin` command may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a delivery may take to show in an IDLE on the other replica.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// How many clients deliver at once while replica A is killed.
const SENDERS: usize = 4;
/// How many of their deliveries get a 250 before the kill.
const KILL_AFTER: usize = 40;

/// One `tern` process of the cluster. The process is declared first, so it is killed before
/// anything else of the node goes.
struct Node {
    process: Process,
    name: &'static str,
    /// The metrics and health endpoint, probed for readiness.
    http: SocketAddr,
    /// The gRPC API of a mailbox replica, or the protocol listener of a front-end.
    addr: SocketAddr,
}

/// What a node runs, with the settings of its part of the config file.
enum Role<'a> {
    Mailbox {
        nats: &'a Nats,
        s3: &'a SeaweedS3,
    },
    /// A replica with its metadata in NATS and bodies in its own directory (for tests that
    /// store no mail).
    MailboxLocal {
        nats: &'a Nats,
    },
    Smtp {
        mailbox: &'a Node,
    },
    /// An MX with extra `[smtp]` settings.
    SmtpWith {
        mailbox: &'a Node,
        settings: &'a str,
    },
    Imap {
        mailbox: &'a Node,
    },
    Pop3 {
        mailbox: &'a Node,
    },
}

impl Node {
    /// Writes the node's config file into `root/name` and starts `tern <role>` on it, without
    /// waiting for it to be ready.
    fn spawn(root: &Path, name: &'static str, role: Role<'_>) -> Node {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("create the node's directory");
        let [http, port] = free_ports().expect("free ports");
        let (http, addr) = (SocketAddr::from(([127, 0, 0, 1], http)), SocketAddr::from(([127, 0, 0, 1], port)));
        let data = dir.join("data");
        let (command, top, section) = match role {
            Role::Mailbox { nats, s3 } => (
                "mailbox",
                format!("[listen]\ngrpc = \"{addr}\"\nhttp = \"{http}\"\n"),
                format!(
                    "[store]\nurl = \"{}\"\nprefix = \"cluster\"\n\n[blobs]\nurl = \"s3://{}/cluster\"\n\
                     endpoint = \"{}\"\nregion = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
                    nats.url(),
                    s3.bucket(),
                    s3.endpoint(),
                    SeaweedS3::REGION,
                    s3.access_key(),
                    s3.secret_key(),
                ),
            ),
            Role::MailboxLocal { nats } => (
                "mailbox",
                format!("[listen]\ngrpc = \"{addr}\"\nhttp = \"{http}\"\n"),
                format!("[store]\nurl = \"{}\"\nprefix = \"cluster\"\n", nats.url()),
            ),
            Role::Smtp { mailbox } | Role::SmtpWith { mailbox, .. } => (
                "smtp",
                format!("mailbox_url = \"{}\"\n[listen]\nhttp = \"{http}\"\n", mailbox.url()),
                format!(
                    "[smtp]\nhostname = \"{name}.cluster.test\"\nmx = [\"{addr}\"]\nsubmission = []\nsubmissions = []\n\
                     verify_inbound = false\n{}",
                    if let Role::SmtpWith { settings, .. } = role { settings } else { "" }
                ),
            ),
            Role::Imap { mailbox } => (
                "imap",
                format!("mailbox_url = \"{}\"\n[listen]\nhttp = \"{http}\"\n", mailbox.url()),
                format!("[imap]\nimap = [\"{addr}\"]\nimaps = []\nallow_plaintext_auth = true\n"),
            ),
            Role::Pop3 { mailbox } => (
                "pop3",
                format!("mailbox_url = \"{}\"\n[listen]\nhttp = \"{http}\"\n", mailbox.url()),
                format!("[pop3]\npop3 = [\"{addr}\"]\npop3s = []\nallow_plaintext_auth = true\n"),
            ),
        };
        // The top-level keys first: after a [section] header every key belongs to it.
        let config = format!("data_dir = {:?}\n{top}\n{section}", data.to_str().expect("a UTF-8 temporary path"));
        let config_path = dir.join("tern.toml");
        std::fs::write(&config_path, config).expect("write the config file");
        let mut process = Process::new(TERN, &dir);
        // Plain log lines, for the failure report that quotes them.
        process.env("NO_COLOR", "1");
        process.spawn(&[command.as_ref(), "--config".as_ref(), config_path.as_os_str()]).expect("start tern");
        Node { process, name, http, addr }
    }

    /// Waits until the node answers `/readyz` with 200, failing with the end of its log if it
    /// exits first or takes too long.
    fn wait_ready(&mut self) {
        let http = self.http;
        let ready = || http_request(http, "GET", "/readyz", &[], b"").is_ok_and(|r| r.status == 200);
        if let Err(e) = self.process.wait_ready("it is ready", ready) {
            panic!("{}: {e:#}", self.name);
        }
    }

    /// The gRPC URL of a mailbox replica.
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// NATS, SeaweedFS and the `tern` processes, and the directory they run in. Fields drop in
/// order: the `tern` processes are killed first, then the servers, then the directory goes.
struct Cluster {
    mailbox_a: Node,
    mailbox_b: Node,
    imap_a: Node,
    imap_b: Node,
    pop3: Node,
    smtp_a: Node,
    /// The MX started on replica B once A is dead.
    smtp_b: Option<Node>,
    _s3: SeaweedS3,
    _nats: Nats,
    root: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let started = Instant::now();
        // SeaweedFS takes a second or more; NATS starts meanwhile.
        let s3 = thread::spawn(SeaweedS3::start);
        let nats = Nats::start().expect("start nats-server");
        let s3 = s3.join().expect("the SeaweedFS start thread").expect("start SeaweedFS");
        let servers = started.elapsed();
        let root = tempfile::Builder::new().prefix("tern-cluster-").tempdir().expect("a temporary directory");
        let r = root.path();
        let mailbox_a = Node::spawn(r, "mailbox-a", Role::Mailbox { nats: &nats, s3: &s3 });
        let mailbox_b = Node::spawn(r, "mailbox-b", Role::Mailbox { nats: &nats, s3: &s3 });
        let imap_a = Node::spawn(r, "imap-a", Role::Imap { mailbox: &mailbox_a });
        let imap_b = Node::spawn(r, "imap-b", Role::Imap { mailbox: &mailbox_b });
        // POP3 and the second MX serve through replica B, which lives through the whole test.
        let pop3 = Node::spawn(r, "pop3-b", Role::Pop3 { mailbox: &mailbox_b });
        let smtp_a = Node::spawn(r, "smtp-a", Role::Smtp { mailbox: &mailbox_a });
        let mut cluster =
            Cluster { mailbox_a, mailbox_b, imap_a, imap_b, pop3, smtp_a, smtp_b: None, _s3: s3, _nats: nats, root };
        for node in [
            &mut cluster.mailbox_a,
            &mut cluster.mailbox_b,
            &mut cluster.imap_a,
            &mut cluster.imap_b,
            &mut cluster.pop3,
            &mut cluster.smtp_a,
        ] {
            node.wait_ready();
        }
        println!("NATS and SeaweedFS ready in {servers:?}, six tern processes in {:?}", started.elapsed() - servers);
        cluster
    }

    /// Runs `tern admin --server <replica B> <args>` and returns its output, failing if it fails
    /// or takes longer than [`ADMIN_TIMEOUT`].
    fn admin(&self, args: &[&str]) -> String {
        let mut child = Command::new(TERN)
            .args(["admin", "--server", &self.mailbox_b.url()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run tern admin");
        let deadline = Instant::now() + ADMIN_TIMEOUT;
        while child.try_wait().expect("wait for tern admin").is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("tern admin {args:?} did not finish within {ADMIN_TIMEOUT:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("the output of tern admin");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "tern admin {args:?} failed: {}{stdout}", String::from_utf8_lossy(&out.stderr));
        stdout
    }
}

impl Drop for Cluster {
    /// When the test fails, shows the end of every node's log before the directory goes.
    fn drop(&mut self) {
        if !thread::panicking() {
            return;
        }
        let nodes = [&self.mailbox_a, &self.mailbox_b, &self.imap_a, &self.imap_b, &self.pop3, &self.smtp_a];
        for node in nodes.into_iter().chain(self.smtp_b.as_ref()) {
            eprintln!("--- the end of the log of {} ---\n{}", node.name, node.process.log_tail(4096));
        }
    }
}

#[test]
fn smtp_imap_pop3_across_processes_survive_a_replica_killed_mid_stream() {
    let started = Instant::now();
    let mut cluster = Cluster::start();
    cluster.admin(&["domain", "add", "example.com"]);
    cluster.admin(&["mailbox", "add", ALICE, "--password", PASSWORD]);
    // Every message sent, by its Subject, with what the MX answered.
    let mut sent: BTreeMap<String, (Vec<u8>, Outcome)> = BTreeMap::new();

    // (a) SMTP through replica A, IDLE on replica B.
    let mut idler = Idler::start(cluster.imap_b.addr);
    assert_eq!(idler.exists, 0, "a fresh INBOX");
    let mut latencies = Vec::new();
    for i in 1..=20 {
        let subject = format!("idle-{i}");
        let body = message(&subject, i);
        let (outcome, data_sent) = smtp_send(cluster.smtp_a.addr, &body);
        assert_eq!(outcome, Outcome::Accepted, "delivery {subject} through the MX of replica A");
        let seen = idler.wait_exists(i, NOTIFY_TIMEOUT);
        latencies.push(seen.saturating_duration_since(data_sent));
        sent.insert(subject, (body, outcome));
    }
    latencies.sort();
    println!(
        "end of DATA at the MX of replica A to EXISTS in IDLE on the IMAP process of replica B, 20 deliveries: \
         p50 {:?}, max {:?}",
        latencies[10], latencies[19]
    );

    // (b) SIGKILL replica A in the middle of a stream of deliveries through it, from a few
    // senders at once so that deliveries are in flight at every stage when it dies.
    let phase = Instant::now();
    let accepted = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let (accepted, killed, mx) = (accepted.clone(), killed.clone(), cluster.smtp_a.addr);
            thread::spawn(move || {
                let mut results = Vec::new();
                let mut failed_after_kill = 0;
                let deadline = Instant::now() + Duration::from_secs(30);
                for i in 1.. {
                    let subject = format!("kill-{sender}-{i}");
                    let body = message(&subject, i);
                    let was_killed = killed.load(Ordering::SeqCst);
                    let (outcome, _) = smtp_send(mx, &body);
                    match outcome {
                        Outcome::Accepted => {
                            accepted.fetch_add(1, Ordering::SeqCst);
                        }
                        _ if was_killed => failed_after_kill += 1,
                        _ => {}
                    }
                    results.push((subject, body, outcome));
                    if failed_after_kill >= 3 || Instant::now() >= deadline {
                        break;
                    }
                }
                results
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while accepted.load(Ordering::SeqCst) < KILL_AFTER {
        let stuck = Instant::now() >= deadline || senders.iter().any(|s| s.is_finished());
        assert!(!stuck, "the stream of deliveries does not get through");
        thread::sleep(Duration::from_millis(1));
    }
    cluster.mailbox_a.process.kill();
    killed.store(true, Ordering::SeqCst);
    let results: Vec<_> = senders.into_iter().flat_map(|s| s.join().expect("a sender thread")).collect();
    let (mut acked, mut refused, mut broken) = (0, BTreeMap::<u16, usize>::new(), 0);
    for (subject, body, outcome) in results {
        match &outcome {
            Outcome::Accepted => acked += 1,
            Outcome::Refused(code) => {
                assert!((400..500).contains(code), "{subject} got {code}: a permanent failure for a dead replica");
                *refused.entry(*code).or_default() += 1;
            }
            Outcome::Broken(_) => broken += 1,
        }
        sent.insert(subject, (body, outcome));
    }
    let refused_count: usize = refused.values().sum();
    println!(
        "{SENDERS} senders through replica A, killed with SIGKILL after {KILL_AFTER} deliveries: {acked} got 250, \
         {refused_count} got 4xx (by code {refused:?}), {broken} lost the connection ({:?})",
        phase.elapsed()
    );
    assert!(
        acked >= KILL_AFTER && refused_count + broken >= SENDERS * 3,
        "{acked} accepted, {refused_count} refused, {broken} broken"
    );

    // A second MX, on replica B, takes mail at once.
    let mut smtp_b = Node::spawn(cluster.root.path(), "smtp-b", Role::Smtp { mailbox: &cluster.mailbox_b });
    smtp_b.wait_ready();
    for i in 1..=3 {
        let subject = format!("after-{i}");
        let body = message(&subject, i);
        let (outcome, _) = smtp_send(smtp_b.addr, &body);
        assert_eq!(outcome, Outcome::Accepted, "delivery {subject} through the MX of replica B");
        sent.insert(subject, (body, outcome));
    }
    cluster.smtp_b = Some(smtp_b);

    // Replica B has every acknowledged message byte for byte, and nothing half there.
    let stored = fetch_all(cluster.imap_b.addr);
    check_stored(&sent, &stored);
    let in_flight = stored.len() - sent.values().filter(|(_, o)| *o == Outcome::Accepted).count();
    println!("{} messages stored, {in_flight} of them stored without their 250", stored.len());
    // The IDLE on B lived through the kill and saw every one of them.
    idler.wait_exists(stored.len(), NOTIFY_TIMEOUT);

    // (c) POP3, through replica B: the same messages, byte for byte.
    let popped = pop3_retrieve_all(cluster.pop3.addr);
    assert_eq!(popped.len(), stored.len(), "POP3 lists {} messages, IMAP {}", popped.len(), stored.len());
    for (n, ((uid, imap), pop3)) in stored.iter().zip(&popped).enumerate() {
        assert!(imap == pop3, "POP3 message {} differs from IMAP UID {uid}", n + 1);
    }

    // Replica A, restarted on its old ports and no data of its own, serves the same mailbox;
    // its IMAP and SMTP processes, which lived through its death, reconnect by themselves.
    cluster.mailbox_a.process.respawn().expect("restart replica A");
    cluster.mailbox_a.wait_ready();
    let mut imap_a = Imap::login(cluster.imap_a.addr);
    let select = imap_a.command("SELECT INBOX");
    assert!(select.ok(), "SELECT on the IMAP process of replica A: {}", select.status);
    assert_eq!(select.exists(), Some(stored.len()), "replica A after its restart: {select:?}");
    let subject = "restarted".to_string();
    let body = message(&subject, 1);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match smtp_send(cluster.smtp_a.addr, &body).0 {
            Outcome::Accepted => break,
            other if Instant::now() < deadline => {
                println!("the MX of the restarted replica A: {other:?}, retrying");
                thread::sleep(Duration::from_millis(200));
            }
            other => panic!("the MX of the restarted replica A still answers {other:?}"),
        }
    }
    idler.wait_exists(stored.len() + 1, NOTIFY_TIMEOUT);
    idler.done();
    println!("cluster test done in {:?}", started.elapsed());
}

/// A message whose Subject and Message-ID carry `subject`, with a body of a size that varies
/// with `n` and repeats the subject on every line, so any part of it names the message.
fn message(subject: &str, n: usize) -> Vec<u8> {
    let mut text = format!(
        "From: Sender <sender@remote.example>\r\nTo: Alice <{ALICE}>\r\nSubject: {subject}\r\n\
         Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@remote.example>\r\n\r\n"
    );
    // Mostly a few KiB, now and then a few hundred.
    let lines = if n % 10 == 3 { 4000 } else { 1 + n % 7 * 40 };
    for line in 0..lines {
        text.push_str(&format!("{subject} line {line}: the quick brown fox jumps over the lazy dog\r\n"));
    }
    text.into_bytes()
}

/// The Subject of a stored message.
fn subject_of(message: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    let start = text.find("\r\nSubject: ")? + "\r\nSubject: ".len();
    let end = start + text[start..].find("\r\n")?;
    Some(text[start..end].to_string())
}

/// Checks what replica B stores against what was sent: every message that got a 250 is there
/// once; a message that did not is there at most once; each is the bytes sent after the
/// Received: header the MX added; UIDs increase.
fn check_stored(sent: &BTreeMap<String, (Vec<u8>, Outcome)>, stored: &[(u32, Vec<u8>)]) {
    let mut found = BTreeMap::new();
    for window in stored.windows(2) {
        assert!(window[0].0 < window[1].0, "UIDs out of order: {} then {}", window[0].0, window[1].0);
    }
    for (uid, bytes) in stored {
        let subject = subject_of(bytes).unwrap_or_else(|| panic!("UID {uid} has no Subject: {bytes:?}"));
        let (body, outcome) = sent.get(&subject).unwrap_or_else(|| panic!("UID {uid} is {subject}, never sent"));
        assert!(
            bytes.starts_with(b"Received: ") && bytes.ends_with(body),
            "UID {uid} ({subject}, {outcome:?}) is not the message sent after a Received: header:\n{}",
            String::from_utf8_lossy(bytes)
        );
        if let Some(other) = found.insert(subject.clone(), *uid) {
            panic!("{subject} is stored twice, as UIDs {other} and {uid}");
        }
    }
    for (subject, (_, outcome)) in sent {
        if *outcome == Outcome::Accepted {
            assert!(found.contains_key(subject), "{subject} got a 250 and is missing");
        }
    }
}

/// What the MX answered to one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// 250 to the end of DATA.
    Accepted,
    /// Any other reply code, at whatever step.
    Refused(u16),
    /// The connection failed or closed before a reply to the end of DATA.
    Broken(String),
}

/// Delivers `message` to alice through the MX at `mx` on a connection of its own; returns the
/// answer and when the end of DATA was sent.
fn smtp_send(mx: SocketAddr, message: &[u8]) -> (Outcome, Instant) {
    let mut data_sent = Instant::now();
    let outcome = (|| -> io::Result<Outcome> {
        let stream = connect(mx)?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        let mut step = |command: &[u8], want: u16| -> io::Result<Option<Outcome>> {
            if !command.is_empty() {
                writer.write_all(command)?;
            }
            let code = smtp_reply(&mut reader)?;
            Ok((code != want).then_some(Outcome::Refused(code)))
        };
        for (command, want) in [
            (&b""[..], 220),
            (b"EHLO client.test\r\n", 250),
            (b"MAIL FROM:<sender@remote.example>\r\n", 250),
            (format!("RCPT TO:<{ALICE}>\r\n").as_bytes(), 250),
            (b"DATA\r\n", 354),
        ] {
            if let Some(refused) = step(command, want)? {
                return Ok(refused);
            }
        }
        let mut data = message.to_vec();
        data.extend_from_slice(b".\r\n");
        writer.write_all(&data)?;
        data_sent = Instant::now();
        let code = smtp_reply(&mut reader)?;
        let _ = writer.write_all(b"QUIT\r\n");
        Ok(if code == 250 { Outcome::Accepted } else { Outcome::Refused(code) })
    })()
    .unwrap_or_else(|e| Outcome::Broken(e.to_string()));
    (outcome, data_sent)
}

/// Reads one SMTP reply, multi-line or not, and returns its code.
fn smtp_reply(reader: &mut impl BufRead) -> io::Result<u16> {
    loop {
        let line = read_line(reader)?;
        let code = line.get(..3).and_then(|c| c.parse().ok());
        match (code, line.as_bytes().get(3)) {
            (Some(code), Some(b' ') | None) => return Ok(code),
            (Some(_), Some(b'-')) => {}
            _ => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("not an SMTP reply: {line:?}"))),
        }
    }
}

/// Connects with [`READ_TIMEOUT`] on the connection and on every read and write.
fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, READ_TIMEOUT)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads one CRLF-terminated line as text, failing at the end of the stream.
fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line)? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"));
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// A plain-text IMAP session, one command at a time.
struct Imap {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    tag: u32,
}

/// The answer to one IMAP command.
#[derive(Debug)]
struct ImapResponse {
    /// The untagged responses, each with the literals it carried.
    untagged: Vec<(String, Vec<Vec<u8>>)>,
    /// The tagged status line, without the tag.
    status: String,
}

impl ImapResponse {
    fn ok(&self) -> bool {
        self.status.starts_with("OK")
    }

    /// The count of the last `* n EXISTS`.
    fn exists(&self) -> Option<usize> {
        self.untagged.iter().rev().find_map(|(line, _)| exists_count(line))
    }
}

/// `n` of a `* n EXISTS` line.
fn exists_count(line: &str) -> Option<usize> {
    line.strip_prefix("* ")?.trim_end().strip_suffix(" EXISTS")?.parse().ok()
}

impl Imap {
    /// Connects and logs in as alice.
    fn login(addr: SocketAddr) -> Imap {
        let stream = connect(addr).unwrap_or_else(|e| panic!("connect to IMAP at {addr}: {e}"));
        let mut imap = Imap { reader: BufReader::new(stream.try_clone().expect("clone")), writer: stream, tag: 0 };
        let greeting = read_line(&mut imap.reader).expect("the IMAP greeting");
        assert!(greeting.starts_with("* OK"), "IMAP greeting {greeting:?}");
        let login = imap.command(&format!("LOGIN \"{ALICE}\" \"{PASSWORD}\""));
        assert!(login.ok(), "LOGIN at {addr}: {}", login.status);
        imap
    }

    /// Sends `command` under a new tag and reads everything up to its tagged status.
    fn command(&mut self, command: &str) -> ImapResponse {
        self.tag += 1;
        let tag = format!("t{}", self.tag);
        self.writer.write_all(format!("{tag} {command}\r\n").as_bytes()).expect("send an IMAP command");
        let mut untagged = Vec::new();
        loop {
            let (line, literals) = self.response().unwrap_or_else(|e| panic!("the answer to {command}: {e}"));
            if let Some(status) = line.strip_prefix(&format!("{tag} ")) {
                return ImapResponse { untagged, status: status.trim_end().to_string() };
            }
            untagged.push((line, literals));
        }
    }

    /// Reads one response line, with the literals it announces (`{n}` at the end of a line).
    fn response(&mut self) -> io::Result<(String, Vec<Vec<u8>>)> {
        let mut text = String::new();
        let mut literals = Vec::new();
        loop {
            let line = read_line(&mut self.reader)?;
            let size = line
                .trim_end()
                .strip_suffix('}')
                .and_then(|l| l.rsplit_once('{'))
                .and_then(|(_, n)| n.parse::<usize>().ok());
            text.push_str(&line);
            let Some(size) = size else { return Ok((text, literals)) };
            let mut literal = vec![0; size];
            self.reader.read_exact(&mut literal)?;
            literals.push(literal);
        }
    }
}

/// Every message of alice's INBOX through the IMAP process at `addr`, as (UID, bytes) in UID
/// order.
fn fetch_all(addr: SocketAddr) -> Vec<(u32, Vec<u8>)> {
    let mut imap = Imap::login(addr);
    let select = imap.command("SELECT INBOX");
    assert!(select.ok(), "SELECT: {}", select.status);
    let fetch = imap.command("UID FETCH 1:* (UID BODY.PEEK[])");
    assert!(fetch.ok(), "FETCH: {}", fetch.status);
    let mut messages: Vec<(u32, Vec<u8>)> = fetch
        .untagged
        .into_iter()
        .filter(|(line, _)| line.contains(" FETCH "))
        .map(|(line, mut literals)| {
            let uid = line
                .split_once("UID ")
                .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
                .unwrap_or_else(|| panic!("no UID in {line:?}"));
            assert_eq!(literals.len(), 1, "one body in {line:?}");
            (uid, literals.remove(0))
        })
        .collect();
    messages.sort_by_key(|(uid, _)| *uid);
    assert_eq!(Some(messages.len()), select.exists(), "FETCH 1:* against SELECT");
    let _ = imap.command("LOGOUT");
    messages
}

/// An IMAP session in IDLE on INBOX, whose lines a thread reads and timestamps as they arrive.
struct Idler {
    writer: TcpStream,
    lines: mpsc::Receiver<(Instant, String)>,
    reader: Option<thread::JoinHandle<()>>,
    /// The last EXISTS count seen.
    exists: usize,
}

impl Idler {
    fn start(addr: SocketAddr) -> Idler {
        let mut imap = Imap::login(addr);
        let select = imap.command("SELECT INBOX");
        assert!(select.ok(), "SELECT: {}", select.status);
        let exists = select.exists().expect("EXISTS in the answer to SELECT");
        imap.writer.write_all(b"idle IDLE\r\n").expect("send IDLE");
        let go_ahead = read_line(&mut imap.reader).expect("the answer to IDLE");
        assert!(go_ahead.starts_with("+ "), "IDLE answered {go_ahead:?}");
        let Imap { mut reader, writer, .. } = imap;
        let (tx, lines) = mpsc::channel();
        // The reader ends when the connection does: `done` and `drop` shut it down.
        reader.get_ref().set_read_timeout(None).expect("no timeout on the IDLE reader");
        let reader = thread::spawn(move || {
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                if tx.send((Instant::now(), String::from_utf8_lossy(&line).into_owned())).is_err() {
                    return;
                }
                line.clear();
            }
        });
        Idler { writer, lines, reader: Some(reader), exists }
    }

    /// Waits until an `* n EXISTS` with `n >= want` arrives, and returns when it arrived.
    fn wait_exists(&mut self, want: usize, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) => {
                    if let Some(n) = exists_count(&line) {
                        self.exists = n;
                        if n >= want {
                            return at;
                        }
                    }
                }
                Err(e) => panic!("no * {want} EXISTS in IDLE within {timeout:?} (last {}): {e}", self.exists),
            }
        }
    }

    /// Ends the IDLE and the session.
    fn done(mut self) {
        self.writer.write_all(b"DONE\r\n").expect("send DONE");
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (_, line) = self.lines.recv_timeout(left).expect("the end of IDLE");
            if line.starts_with("idle ") {
                assert!(line.starts_with("idle OK"), "IDLE ended with {line:?}");
                return;
            }
        }
    }
}

impl Drop for Idler {
    fn drop(&mut self) {
        let _ = self.writer.shutdown(Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Logs in to the POP3 process at `addr`, checks STAT and LIST, and retrieves every message
/// (dot-stuffing undone), in order; quits without deleting anything.
fn pop3_retrieve_all(addr: SocketAddr) -> Vec<Vec<u8>> {
    let stream = connect(addr).unwrap_or_else(|e| panic!("connect to POP3 at {addr}: {e}"));
    let mut pop3 = Pop3 { reader: BufReader::new(stream.try_clone().expect("clone")), writer: stream };
    pop3.command("");
    pop3.command(&format!("USER {ALICE}"));
    pop3.command(&format!("PASS {PASSWORD}"));
    let stat = pop3.command("STAT");
    let count: usize = stat.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a count in STAT");
    pop3.command("LIST");
    let list = pop3.multiline();
    let sizes: Vec<usize> = String::from_utf8_lossy(&list)
        .lines()
        .map(|l| l.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("LIST line {l:?}")))
        .collect();
    assert_eq!(sizes.len(), count, "LIST against STAT");
    let mut messages = Vec::new();
    for (n, size) in sizes.iter().enumerate() {
        pop3.command(&format!("RETR {}", n + 1));
        let message = pop3.multiline();
        assert_eq!(message.len(), *size, "RETR {} against its LIST size", n + 1);
        messages.push(message);
    }
    pop3.command("QUIT");
    messages
}

/// A plain-text POP3 session.
struct Pop3 {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Pop3 {
    /// Sends `command` (nothing when empty: the greeting) and expects `+OK`; returns the line.
    fn command(&mut self, command: &str) -> String {
        if !command.is_empty() {
            self.writer.write_all(format!("{command}\r\n").as_bytes()).expect("send a POP3 command");
        }
        let line = read_line(&mut self.reader).unwrap_or_else(|e| panic!("the answer to {command:?}: {e}"));
        assert!(line.starts_with("+OK"), "POP3 {command:?} answered {line:?}");
        line
    }

    /// Reads a multi-line body up to the line `.`, undoing dot-stuffing.
    fn multiline(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = self.reader.read_until(b'\n', &mut line).expect("a POP3 multi-line response");
            assert!(n > 0, "the POP3 server closed the connection in a multi-line response");
            if line == b".\r\n" {
                return body;
            }
            body.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
        }
    }
}

/// Message rates hold across processes: two `tern smtp` processes, each on its own `tern
/// mailbox` replica, both replicas on one NATS, with three messages per client address per
/// hour. MAIL FROM counts in NATS wherever it arrives: three are taken through either MX in
/// turn, the fourth is refused with 450 on both, and another address is unaffected.
#[test]
fn message_rates_hold_across_smtp_processes_and_mailbox_replicas() {
    let nats = Nats::start().expect("start nats-server");
    let root = tempfile::Builder::new().prefix("tern-rates-").tempdir().expect("a temporary directory");
    let r = root.path();
    let mut mailbox_a = Node::spawn(r, "mailbox-a", Role::MailboxLocal { nats: &nats });
    let mut mailbox_b = Node::spawn(r, "mailbox-b", Role::MailboxLocal { nats: &nats });
    let settings = "max_messages_per_ip = 3\nrate_window_secs = 3600\npregreet_ms = 0\n";
    let mut smtp_a = Node::spawn(r, "smtp-a", Role::SmtpWith { mailbox: &mailbox_a, settings });
    let mut smtp_b = Node::spawn(r, "smtp-b", Role::SmtpWith { mailbox: &mailbox_b, settings });
    for node in [&mut mailbox_a, &mut mailbox_b, &mut smtp_a, &mut smtp_b] {
        node.wait_ready();
    }
    let mail_from = |mx: SocketAddr, from: [u8; 4]| -> String {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
        socket.bind(&SocketAddr::from((from, 0)).into()).expect("bind a loopback address");
        socket.connect_timeout(&mx.into(), READ_TIMEOUT).expect("connect to the MX");
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        let mut said = Vec::new();
        for command in ["", "EHLO client.test\r\n", "MAIL FROM:<sender@remote.example>\r\n", "QUIT\r\n"] {
            writer.write_all(command.as_bytes()).unwrap();
            // The last line of a reply is the one without a hyphen after the code.
            loop {
                let line = read_line(&mut reader).expect("a reply line");
                if line.as_bytes().get(3) != Some(&b'-') {
                    said.push(line);
                    break;
                }
            }
        }
        said[2].clone()
    };
    let client = [127, 0, 0, 7];
    for mx in [smtp_a.addr, smtp_b.addr, smtp_a.addr] {
        let reply = mail_from(mx, client);
        assert!(reply.starts_with("250"), "{reply}");
    }
    for mx in [smtp_a.addr, smtp_b.addr] {
        let reply = mail_from(mx, client);
        assert!(reply.starts_with("450 4.7.1 Too many messages from your address"), "{reply}");
    }
    assert!(mail_from(smtp_b.addr, [127, 0, 0, 8]).starts_with("250"), "another address has its own budget");
}
