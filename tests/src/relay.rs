//! What the relay tests stand on: real SMTP receivers (aiosmtpd) and a real DNS server (dnslib)
//! started on loopback with free ports, a relay worker in the test process, and helpers to
//! queue messages and read what the receivers got. The Python fixtures are in
//! `tests/fixtures/relay/`; `cargo xtask ci` installs their libraries into `.tools/py`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use tern_proto::v1::{
    EnqueueEnvelope, EnqueueRequest, QueuedRecipient, enqueue_request, mailbox_client::MailboxClient,
};
use tern_relay::RelayConfig;
use tern_runtime::shutdown::Shutdown;
use tern_testbed::{Process, workspace_root};
use tokio::task::JoinHandle;

/// How long a fixture may take to print `READY <port>`.
const READY_WAIT: &str = "printing READY";

/// A Python fixture process, run with the libraries `cargo xtask ci` installs, in `dir`
/// (its output goes to `dir/python3.log`). The relay's fixtures and other tests' use it.
pub fn python(dir: &Path) -> Process {
    let root = workspace_root().expect("the workspace root");
    let mut p = Process::new("python3", dir);
    p.env("PYTHONPATH", root.join(".tools").join("py"));
    p.env("PYTHONUNBUFFERED", "1");
    p
}

fn fixture(name: &str) -> PathBuf {
    workspace_root().expect("the workspace root").join("tests").join("fixtures").join("relay").join(name)
}

/// Waits for `READY <port>` in the process's log and returns the port.
pub fn wait_port(process: &mut Process, log: &Path) -> u16 {
    let mut port = 0;
    process
        .wait_ready(READY_WAIT, || {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            match text.lines().find_map(|l| l.strip_prefix("READY ")) {
                Some(p) => {
                    port = p.trim().parse().unwrap_or(0);
                    port != 0
                }
                None => false,
            }
        })
        .expect("the fixture starts");
    port
}

/// One message a receiver accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub tls: bool,
    pub mail_options: Vec<String>,
    /// DSN parameters of MAIL, and of each accepted RCPT (receivers started with DSN only).
    pub dsn_mail: Vec<String>,
    pub dsn_rcpt: Vec<Vec<String>>,
    pub path: PathBuf,
    pub raw: Vec<u8>,
}

impl Received {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }
}

/// An SMTP server on 127.0.0.1 that accepts, defers or refuses by the recipient's local part:
/// `tempfail*` (451 at RCPT), `reject*` (550 at RCPT), `datafail*` (554 after DATA), `slow*`
/// (accepted after a wait), anything else accepted.
#[derive(Debug)]
pub struct Receiver {
    process: Process,
    pub port: u16,
    spool: PathBuf,
    _dir: tempfile::TempDir,
}

impl Receiver {
    /// A receiver offering STARTTLS (with a self-signed certificate) when `tls`.
    pub fn start(tls: bool, slow_seconds: u32) -> Receiver {
        Self::start_with(tls, slow_seconds, false)
    }

    /// [`Receiver::start`], also offering DSN (RFC 3461) when `dsn`.
    pub fn start_with(tls: bool, slow_seconds: u32, dsn: bool) -> Receiver {
        let cert = tls.then(|| CertPaths::Generated(vec!["mx.test".into()]));
        Self::start_full(cert, slow_seconds, dsn)
    }

    /// A receiver offering STARTTLS with the certificate and key given.
    pub fn start_with_cert(cert: &tern_runtime::tls::CertPaths) -> Receiver {
        Self::start_full(Some(CertPaths::Given(cert.clone())), 1, false)
    }

    fn start_full(cert: Option<CertPaths>, slow_seconds: u32, dsn: bool) -> Receiver {
        let dir = tempfile::Builder::new().prefix("tern-receiver-").tempdir().expect("a temporary directory");
        let spool = dir.path().join("spool");
        std::fs::create_dir_all(&spool).expect("the spool directory");
        let mut args: Vec<String> = vec![
            fixture("smtp_receiver.py").display().to_string(),
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            "0".into(),
            "--spool".into(),
            spool.display().to_string(),
            "--slow-seconds".into(),
            slow_seconds.to_string(),
        ];
        if dsn {
            args.push("--dsn".into());
        }
        if let Some(cert) = cert {
            let paths = match cert {
                CertPaths::Given(paths) => paths,
                CertPaths::Generated(names) => {
                    tern_runtime::tls::dev_certificate(&dir.path().join("tls"), &names).expect("a certificate")
                }
            };
            args.extend([
                "--tls-cert".into(),
                paths.cert.display().to_string(),
                "--tls-key".into(),
                paths.key.display().to_string(),
            ]);
        }
        let mut process = python(dir.path());
        process.spawn(&args).expect("start the SMTP receiver");
        let port = wait_port(&mut process, &dir.path().join("python3.log"));
        Receiver { process, port, spool, _dir: dir }
    }

    /// Every message accepted so far, in order.
    pub fn messages(&self) -> Vec<Received> {
        let mut out = Vec::new();
        for n in 1.. {
            let eml = self.spool.join(format!("{n}.eml"));
            // The receiver writes the .json first and the .eml last: once the .eml is there,
            // both are complete.
            let Ok(raw) = std::fs::read(&eml) else { break };
            let json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(self.spool.join(format!("{n}.json"))).expect("the .json"))
                    .expect("valid JSON");
            let strings = |key: &str| -> Vec<String> {
                json[key]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                    .unwrap_or_default()
            };
            out.push(Received {
                mail_from: json["mail_from"].as_str().unwrap_or_default().to_string(),
                rcpt_tos: strings("rcpt_tos"),
                tls: json["tls"].as_bool().unwrap_or(false),
                mail_options: strings("mail_options"),
                dsn_mail: strings("dsn_mail"),
                dsn_rcpt: json["dsn_rcpt"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|r| {
                                r.as_array()
                                    .map(|x| x.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                                    .unwrap_or_default()
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                path: eml,
                raw,
            });
        }
        out
    }

    /// Waits until at least `n` messages arrived, and returns them all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the receiver got {} of {n} messages within {timeout:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }
}

/// Where a fixture's certificate comes from.
enum CertPaths {
    Given(tern_runtime::tls::CertPaths),
    Generated(Vec<String>),
}

/// An HTTPS server on 127.0.0.1 serving the files of a directory (an MTA-STS policy host).
#[derive(Debug)]
pub struct HttpsServer {
    _process: Process,
    pub port: u16,
    pub root: PathBuf,
    _dir: tempfile::TempDir,
}

impl HttpsServer {
    pub fn start(cert: &tern_runtime::tls::CertPaths) -> HttpsServer {
        let dir = tempfile::Builder::new().prefix("tern-https-").tempdir().expect("a temporary directory");
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).expect("the document root");
        let args = [
            fixture("https_server.py").display().to_string(),
            "--port".into(),
            "0".into(),
            "--root".into(),
            root.display().to_string(),
            "--tls-cert".into(),
            cert.cert.display().to_string(),
            "--tls-key".into(),
            cert.key.display().to_string(),
        ];
        let mut process = python(dir.path());
        process.spawn(&args).expect("start the HTTPS server");
        let port = wait_port(&mut process, &dir.path().join("python3.log"));
        HttpsServer { _process: process, port, root, _dir: dir }
    }

    /// Serves `text` at `path` (relative to the root, e.g. `.well-known/mta-sts.txt`).
    pub fn put(&self, path: &str, text: &str) {
        let file = self.root.join(path);
        std::fs::create_dir_all(file.parent().expect("a parent")).expect("create the directory");
        std::fs::write(file, text).expect("write the file");
    }
}

/// A DNS server on 127.0.0.1 answering from a zone the test sets, and can change.
#[derive(Debug)]
pub struct Dns {
    _process: Process,
    pub addr: SocketAddr,
    zone: PathBuf,
    _dir: tempfile::TempDir,
}

/// A DNS record for [`Dns`]: `("example.test", "MX", "10 mx.example.test")`,
/// `("mx.example.test", "A", "127.0.0.1")`, `("example.test", "TXT", "v=spf1 -all")`.
pub type Record<'a> = (&'a str, &'a str, &'a str);

impl Dns {
    pub fn start(records: &[Record<'_>]) -> Dns {
        let dir = tempfile::Builder::new().prefix("tern-dns-").tempdir().expect("a temporary directory");
        let zone = dir.path().join("zone.json");
        let mut dns =
            Dns { _process: python(dir.path()), addr: SocketAddr::from(([127, 0, 0, 1], 0)), zone, _dir: dir };
        dns.set(records);
        let args = [
            fixture("dns_server.py").display().to_string(),
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            "0".into(),
            "--zone".into(),
            dns.zone.display().to_string(),
        ];
        dns._process.spawn(&args).expect("start the DNS server");
        let log = dns._dir.path().join("python3.log");
        dns.addr = SocketAddr::from(([127, 0, 0, 1], wait_port(&mut dns._process, &log)));
        dns
    }

    /// Replaces the zone; the server reads it again at its next query. Every record has a TTL
    /// of one second, so resolvers see a change at once.
    pub fn set(&mut self, records: &[Record<'_>]) {
        let records: Vec<serde_json::Value> = records
            .iter()
            .map(|(name, kind, value)| match *kind {
                "MX" => {
                    let (pref, host) = value.split_once(' ').expect("MX value is `<pref> <host>`");
                    serde_json::json!({"name": name, "type": "MX", "pref": pref.parse::<u16>().expect("MX preference"), "value": host, "ttl": 1})
                }
                _ => serde_json::json!({"name": name, "type": kind, "value": value, "ttl": 1}),
            })
            .collect();
        let tmp = self.zone.with_extension("tmp");
        std::fs::write(&tmp, serde_json::json!({ "records": records }).to_string()).expect("write the zone");
        std::fs::rename(&tmp, &self.zone).expect("replace the zone");
    }
}

/// The relay settings for tests: the test's DNS server and receivers' port, fast retries, short
/// leases, and no DKIM unless a domain has a key.
pub fn relay_config(dns: &Dns, port: u16) -> RelayConfig {
    RelayConfig {
        hostname: "relay.tern.test".into(),
        port,
        dns_server: Some(dns.addr),
        retry_schedule_secs: vec![1],
        lease_secs: 10,
        poll_interval_ms: 50,
        connect_timeout_secs: 5,
        command_timeout_secs: 10,
        concurrency: 16,
        ..RelayConfig::default()
    }
}

/// A relay worker running in this process until stopped or dropped.
#[derive(Debug)]
pub struct RelayWorker {
    stop: Shutdown,
    task: Option<JoinHandle<()>>,
}

impl RelayWorker {
    pub fn start(mailbox: SocketAddr, config: RelayConfig, holder: &str) -> RelayWorker {
        let channel = crate::channel_to(mailbox);
        let relay = tern_relay::Relay::new(channel, config, holder.to_string()).expect("a relay");
        let stop = Shutdown::default();
        let wait = stop.wait();
        let task = tokio::spawn(relay.run(wait, Duration::from_secs(5)));
        RelayWorker { stop, task: Some(task) }
    }

    /// Stops the worker abruptly, as SIGKILL would: attempts in flight are cut off and their
    /// leases are left to run out.
    pub async fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    pub async fn stop(&mut self) {
        self.stop.trigger();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for RelayWorker {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Queues `body` from `from` to `recipients` (as a submission would) and returns the entries'
/// ids, one per remote domain.
pub async fn enqueue(mailbox: SocketAddr, from: &str, recipients: &[&str], body: &[u8]) -> Vec<String> {
    enqueue_with(
        mailbox,
        from,
        recipients.iter().map(|r| QueuedRecipient { address: r.to_string(), ..Default::default() }).collect(),
        body,
    )
    .await
}

pub async fn enqueue_with(
    mailbox: SocketAddr,
    from: &str,
    recipients: Vec<QueuedRecipient>,
    body: &[u8],
) -> Vec<String> {
    let mut client = MailboxClient::new(crate::channel_to(mailbox));
    let envelope = EnqueueEnvelope { mail_from: from.to_string(), recipients, ..Default::default() };
    let requests = vec![
        EnqueueRequest { part: Some(enqueue_request::Part::Envelope(envelope)) },
        EnqueueRequest { part: Some(enqueue_request::Part::Chunk(body.to_vec())) },
    ];
    client.enqueue(futures::stream::iter(requests)).await.expect("enqueue").into_inner().queue_ids
}

/// Runs the independent DKIM verifier (dkimpy) on a received message, given the TXT record of
/// the key; returns its verdict line (`PASS d=... s=... c=...` or `FAIL ...`) and whether it
/// passed.
pub fn dkim_verify(message: &Path, txt: &str) -> (bool, String) {
    let root = workspace_root().expect("the workspace root");
    let out = std::process::Command::new("python3")
        .env("PYTHONPATH", root.join(".tools").join("py"))
        .arg(fixture("dkim_verify.py"))
        .arg(message)
        .arg("--txt")
        .arg(txt)
        .output()
        .expect("run dkim_verify.py");
    let verdict = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), verdict.trim().to_string())
}
