//! `cargo xtask bench`: load generators that run against a real `tern` process (release
//! build) on loopback, with its own temporary data directory and free ports, and report
//! throughput and the server's memory. Some run the same workload against a Dovecot started
//! beside it (`--peer dovecot`) and report the two side by side.
//!
//! The processes (`tern dev`, `tern mailbox`, `tern relay`, NATS, SeaweedFS, Dovecot, the DNS
//! fixture) run on `tern_testbed`'s [`Process`] and servers, as the tests' do: free loopback
//! ports, output collected in a log file that errors quote, a readiness probe, and SIGKILL when
//! dropped, also when a benchmark fails half-way.

mod append;
mod dovecot;
mod imap_client;
mod imap_sessions;
mod import;
mod pop3;

use std::{
    net::{Ipv4Addr, SocketAddr},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Subcommand;
use tern_proto::v1::{
    CreateAccountRequest, CreateDomainRequest, DeliverEnvelope, DeliverRequest, DeliveryStatus, EnqueueEnvelope,
    EnqueueRequest, FetchBodyRequest, FolderRef, ListQueueRequest, Password, QueuedRecipient, SelectRequest,
    SetDkimKeyRequest, admin_client::AdminClient, deliver_request, enqueue_request, mailbox_client::MailboxClient,
    password,
};
use tern_testbed::{Process, free_ports, http_request};
use tonic::transport::Channel;

use imap_client::ImapClient;

#[derive(Debug, Subcommand)]
pub enum Which {
    /// Deliveries/s (4 KiB, durable) with 1 and 16 clients, fetches/s, and server memory.
    Mailbox {
        /// Deliveries per concurrency level.
        #[arg(long, default_value_t = 5000)]
        messages: usize,
    },
    /// postfix's smtp-source against `tern dev`: messages/s until all are readable, peak RSS.
    /// With `--spam`, the same run twice, without and with spam scanning by an rspamd (Debian's,
    /// started here), and the CPU per message of Tern and of rspamd for each.
    Smtp {
        #[arg(long, default_value_t = 5000)]
        messages: usize,
        #[arg(long, default_value_t = 20)]
        sessions: usize,
        #[arg(long)]
        spam: bool,
        /// The same run twice, without and with a Sieve script on the recipient (headers, an
        /// address, the envelope, a regex, the body, flags), and Tern's CPU per message of each:
        /// what filtering at delivery costs.
        #[arg(long, conflicts_with = "spam")]
        sieve: bool,
    },
    /// POP3 sessions against `tern dev` (USER/PASS, STAT, LIST, UIDL, RETR of every message,
    /// QUIT, no DELE): messages/s retrieved, server CPU per message and memory; with `--peer
    /// dovecot` the same against a Dovecot started beside it, and the ratios.
    Pop3 {
        /// Accounts, each with `messages` messages of 4 KiB; one client per account.
        #[arg(long, default_value_t = 4)]
        accounts: usize,
        #[arg(long, default_value_t = 100)]
        messages: usize,
        /// Sessions in all, spread over the accounts' clients, which run side by side.
        #[arg(long, default_value_t = 200)]
        sessions: usize,
        /// Seconds after which no session starts, if `sessions` have not been run by then.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// The server to compare with.
        #[arg(long, value_enum, default_value_t = dovecot::Peer::None)]
        peer: dovecot::Peer,
    },
    /// The distributed deployment (metadata in NATS JetStream, bodies in SeaweedFS S3, both
    /// started here) beside the embedded one: SMTP ingest and the IMAP mixed workload on each,
    /// then the latency from an SMTP 250 on one process to EXISTS in an IDLE on another.
    Distributed {
        #[arg(long, default_value_t = 5000)]
        messages: usize,
        #[arg(long, default_value_t = 20)]
        sessions: usize,
        /// Seconds each mixed IMAP workload runs.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Deliveries whose notification latency is measured.
        #[arg(long, default_value_t = 1000)]
        deliveries: usize,
    },
    /// The outbound relay: `messages` queued messages of 4 KiB (one recipient each) delivered
    /// by a `tern relay` process to postfix's smtp-sink on loopback, the MX found through a
    /// local DNS server: deliveries/s with DKIM signing on, then off, and the relay's memory.
    Relay {
        #[arg(long, default_value_t = 5000)]
        messages: usize,
        /// The relay's `concurrency`: deliveries at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// The relay's `per_domain_concurrency`. Every message goes to one domain, so this
        /// caps the connections to the sink. Default: as `--concurrency`.
        #[arg(long)]
        per_domain_concurrency: Option<usize>,
        /// Seconds the relay may take to empty the queue before the run fails.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// Keep the queue in NATS JetStream (a server started on loopback per run) instead of
        /// the embedded store: claims go through the work-queue tickets and KV entries.
        #[arg(long)]
        nats: bool,
    },
    /// One client's sequential APPENDs with synchronising literals, written as Python's imaplib
    /// writes them (literal and CRLF in two writes, no TCP_NODELAY): p50, p99 and mean latency
    /// on `tern dev` and on a Dovecot started on loopback beside it.
    ImapAppend {
        #[arg(long, default_value_t = 200)]
        appends: usize,
        /// Octets per message.
        #[arg(long, default_value_t = 3072)]
        size: usize,
        /// The server to compare with.
        #[arg(long, value_enum, default_value_t = dovecot::Peer::Dovecot)]
        peer: dovecot::Peer,
        /// Set TCP_NODELAY on the client, which imaplib does not: what the servers take
        /// without any wait on acknowledgements.
        #[arg(long)]
        nodelay: bool,
    },
    /// IMAP: memory per idle connection (each logged in, INBOX of 100 messages selected, in
    /// IDLE), then a mixed workload from 10 logged-in clients: commands/s. With `--peer`, instead,
    /// persistent sessions on one INBOX (FETCH of flags, headers and bodies, STORE of a keyword,
    /// APPEND, EXPUNGE) against `tern dev` and the peer one after the other: commands/s, server
    /// CPU per command, failed commands, and the ratios.
    Imap {
        /// Idle connections (without `--peer`).
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Seconds the mixed workload runs (with `--peer`: at most, on each server).
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Run the persistent-session workload against Tern and this server (`none`: Tern
        /// alone) instead of the idle connections and the mixed workload.
        #[arg(long, value_enum)]
        peer: Option<dovecot::Peer>,
        /// Sessions at once (with `--peer`).
        #[arg(long, default_value_t = 10)]
        sessions: usize,
        /// Messages of 4 KiB seeded into INBOX (with `--peer`).
        #[arg(long, default_value_t = 100)]
        messages: usize,
        /// Commands over all sessions after which the run ends, if the time has not run out
        /// first (with `--peer`).
        #[arg(long, default_value_t = 1_000_000)]
        commands: u64,
    },
    /// `tern admin import` (issue #20): messages/s from a local Maildir into the embedded
    /// backend, and from a Dovecot started here over IMAP beside mbsync copying the same
    /// account between the same two servers, and the ratio.
    Import {
        /// Messages of 4 KiB in the local Maildir.
        #[arg(long, default_value_t = 20_000)]
        messages: usize,
        /// Messages of 4 KiB in the Dovecot account.
        #[arg(long, default_value_t = 5_000)]
        imap_messages: usize,
        /// IMAP connections of `tern admin import`.
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
    /// The full-text index (issue #19): a mailbox of English-like messages of 4 to 20 KiB
    /// loaded through AppendAll, the time until the index covers them, IMAP `UID SEARCH BODY` of
    /// a rare and of a common word (median, p95) and the index's size against the mail's; the
    /// same on NATS + S3 (and a second replica reading the shared index); then SMTP ingest with
    /// indexing off and on (smtp-source, off, on, on, off).
    Search {
        /// Messages of the embedded mailbox.
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
        /// Messages of the distributed mailbox (NATS JetStream + SeaweedFS S3, started with
        /// room for them); default as `--messages`; 0 skips the distributed run. When it
        /// differs from `--messages`, an embedded mailbox of this size is measured too, for the
        /// ratio.
        #[arg(long)]
        nats_messages: Option<usize>,
        /// Timed searches of each word, after two warm-ups.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Messages of each SMTP ingest run; 0 skips them.
        #[arg(long, default_value_t = 5000)]
        ingest: usize,
        /// smtp-source's parallel sessions.
        #[arg(long, default_value_t = 20)]
        sessions: usize,
        /// Skip timing a rebuild of the embedded index from scratch (Admin/Reindex).
        #[arg(long)]
        no_reindex: bool,
    },
}

pub fn run(which: Which) -> anyhow::Result<()> {
    // TERN_BENCH_BIN names another build to measure (an earlier commit's, for a before and
    // after on the same machine); otherwise the benchmark builds the tree it runs in.
    if std::env::var_os(BIN_VAR).is_none() {
        crate::run("cargo", &["build", "--release", "-p", "tern"])?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match which {
        Which::Mailbox { messages } => rt.block_on(mailbox(messages)),
        Which::Smtp { messages, sessions, spam: false, sieve: false } => rt.block_on(smtp(messages, sessions)),
        Which::Smtp { messages, sessions, spam: true, .. } => rt.block_on(smtp_spam(messages, sessions)),
        Which::Smtp { messages, sessions, sieve: true, .. } => rt.block_on(smtp_sieve(messages, sessions)),
        Which::Pop3 { accounts, messages, sessions, seconds, peer } => {
            rt.block_on(pop3::run(pop3::Workload { accounts, messages, sessions, seconds }, peer))
        }
        Which::Imap { connections, seconds, peer: None, .. } => rt.block_on(imap(connections, seconds)),
        Which::Imap { seconds, peer: Some(peer), sessions, messages, commands, .. } => {
            rt.block_on(imap_sessions::run(imap_sessions::Workload { sessions, messages, seconds, commands }, peer))
        }
        Which::ImapAppend { appends, size, peer, nodelay } => rt.block_on(append::run(appends, size, peer, nodelay)),
        Which::Relay { messages, concurrency, per_domain_concurrency, timeout, nats } => {
            let per_domain = per_domain_concurrency.unwrap_or(concurrency);
            rt.block_on(relay(messages, concurrency, per_domain, Duration::from_secs(timeout), nats))
        }
        Which::Distributed { messages, sessions, seconds, deliveries } => {
            rt.block_on(distributed(messages, sessions, seconds, deliveries))
        }
        Which::Import { messages, imap_messages, connections } => {
            rt.block_on(import::run(messages, imap_messages, connections))
        }
        Which::Search { messages, nats_messages, runs, ingest, sessions, no_reindex } => {
            rt.block_on(search::run(search::Workload {
                messages,
                nats_messages: nats_messages.unwrap_or(messages),
                runs,
                ingest,
                sessions,
                reindex: !no_reindex,
            }))
        }
    }
}

/// `127.0.0.1:port`.
fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A `tern` process of any role, started with `RUST_LOG=warn` (its log is quoted when it fails).
fn tern_process(dir: &std::path::Path) -> Process {
    let mut process = Process::new(tern_bin(), dir);
    process.env("RUST_LOG", "warn").env("NO_COLOR", "1");
    process
}

/// Waits until the `tern` process whose operations endpoint is on port `http` answers
/// `/readyz` with 200, which every role does once it listens on all its ports. The wait blocks
/// a runtime thread (the benchmarks' runtime has several), as testbed's probes are blocking.
fn wait_ready(process: &mut Process, http: u16) -> anyhow::Result<()> {
    let ready = || http_request(loopback(http), "GET", "/readyz", &[], b"").is_ok_and(|r| r.status == 200);
    tokio::task::block_in_place(|| process.wait_ready("it answers /readyz", ready))
}

/// A `tern dev` process, killed when dropped.
struct Server {
    // Declared before the directory, so that dropping a server kills the process before its
    // data directory is removed.
    process: Process,
    _dir: tempfile::TempDir,
    grpc: String,
    smtp: String,
    pop3: String,
    imap: String,
}

impl Server {
    async fn start() -> anyhow::Result<Self> {
        Self::start_with("").await
    }

    /// A `tern dev` with `extra` appended to its configuration file (a `[store]` and a
    /// `[blobs]` section, say).
    async fn start_with(extra: &str) -> anyhow::Result<Self> {
        let dir = tempfile::TempDir::new()?;
        let [grpc, http, smtp, submission, submissions, pop3, pop3s, imap, imaps, managesieve] = free_ports()?;
        // The load comes from one address, so the per-IP connection limit is raised; the POP3
        // load generator logs in without TLS.
        let config = dir.path().join("bench.toml");
        std::fs::write(
            &config,
            format!(
                "[smtp]\nmax_connections_per_ip = 1000\nverify_inbound = false\n\n[pop3]\nallow_plaintext_auth = true\n\n[imap]\nallow_plaintext_auth = true\nmax_connections_per_ip = 100000\n\n{extra}"
            ),
        )?;
        let listen = [
            ("--grpc-listen", grpc),
            ("--http-listen", http),
            ("--smtp-listen", smtp),
            ("--submission-listen", submission),
            ("--submissions-listen", submissions),
            ("--pop3-listen", pop3),
            ("--pop3s-listen", pop3s),
            ("--imap-listen", imap),
            ("--imaps-listen", imaps),
            ("--managesieve-listen", managesieve),
        ];
        let mut args = vec!["dev".to_string()];
        for (flag, port) in listen {
            args.extend([flag.to_string(), loopback(port).to_string()]);
        }
        let data = dir.path().join("data");
        args.extend(["--config".to_string(), config.display().to_string()]);
        args.extend(["--data-dir".to_string(), data.display().to_string()]);
        let mut process = tern_process(dir.path());
        process.spawn(&args)?;
        wait_ready(&mut process, http)?;
        Ok(Self {
            process,
            _dir: dir,
            grpc: format!("http://{}", loopback(grpc)),
            smtp: loopback(smtp).to_string(),
            pop3: loopback(pop3).to_string(),
            imap: loopback(imap).to_string(),
        })
    }

    /// The server's process id, for its memory and CPU time.
    fn pid(&self) -> u32 {
        self.process.id().unwrap_or_default()
    }

    /// Resident and peak resident memory of the server, in KiB, from /proc.
    fn memory(&self) -> (u64, u64) {
        memory_of(self.pid())
    }
}

/// The environment variable that names a `tern` binary to measure instead of this tree's.
const BIN_VAR: &str = "TERN_BENCH_BIN";

/// The release `tern` binary that `run` built, or the one `TERN_BENCH_BIN` names.
fn tern_bin() -> std::path::PathBuf {
    if let Some(bin) = std::env::var_os(BIN_VAR) {
        return bin.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"));
    target.join("release/tern")
}

/// Resident and peak resident memory of process `pid`, in KiB, from /proc.
fn memory_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A 4 KiB message, different for every `n` so that no two share a body object.
fn message(n: usize) -> Vec<u8> {
    padded(format!(
        "From: bench@example.net\r\nTo: user@bench.test\r\nSubject: bench {n}\r\nMessage-ID: <{n}@bench>\r\n\r\n"
    ))
}

/// `header` (ending in the blank line) and a body of text lines, 4096 octets in all.
fn padded(header: String) -> Vec<u8> {
    padded_to(header, 4096)
}

/// `header` (ending in the blank line) and a body of text lines, `size` octets in all.
fn padded_to(header: String, size: usize) -> Vec<u8> {
    let mut m = header.into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    while m.len() + line.len() <= size {
        m.extend_from_slice(line);
    }
    m.resize(size, b'.');
    m
}

async fn deliver(client: &mut MailboxClient<Channel>, body: Vec<u8>) -> anyhow::Result<()> {
    deliver_to(client, "user@bench.test", body).await
}

async fn deliver_to(client: &mut MailboxClient<Channel>, recipient: &str, body: Vec<u8>) -> anyhow::Result<()> {
    let reqs = vec![
        DeliverRequest {
            part: Some(deliver_request::Part::Envelope(DeliverEnvelope {
                mail_from: "bench@example.net".into(),
                recipients: vec![recipient.into()],
                remote_ip: "127.0.0.1".into(),
                size_hint: body.len() as u64,
                junk: vec![],
                spam_percent: None,
            })),
        },
        DeliverRequest { part: Some(deliver_request::Part::Chunk(body)) },
    ];
    let resp = client.deliver(futures::stream::iter(reqs)).await?.into_inner();
    if resp.results.first().map(|r| r.status) != Some(DeliveryStatus::Delivered as i32) {
        bail!("delivery not acknowledged: {resp:?}");
    }
    Ok(())
}

async fn mailbox(messages: usize) -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (channel, account_id) = setup_user(&server).await?;
    let (rss_idle, _) = server.memory();
    println!("mailbox benchmark: {messages} deliveries of 4 KiB per run, fsync on every commit");
    let mut next = 0usize;
    for clients in [1usize, 16] {
        let start = Instant::now();
        let counter = Arc::new(std::sync::atomic::AtomicUsize::new(next));
        let end = next + messages;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..clients {
            // Each client has its own HTTP/2 connection, as separate front-end pods would.
            let channel = Channel::from_shared(server.grpc.clone())?.connect().await?;
            let counter = counter.clone();
            tasks.spawn(async move {
                let mut client = MailboxClient::new(channel);
                loop {
                    let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= end {
                        return anyhow::Ok(());
                    }
                    deliver(&mut client, message(n)).await?;
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        next = end;
        let secs = start.elapsed().as_secs_f64();
        let (rss, hwm) = server.memory();
        println!(
            "  deliver  {clients:>2} client(s): {:>8.0} deliveries/s  ({messages} in {secs:.2} s; server RSS {} MiB, peak {} MiB)",
            messages as f64 / secs,
            rss / 1024,
            hwm / 1024
        );
    }

    let mut client = MailboxClient::new(channel);
    let selected =
        client.select(SelectRequest { account_id, folder: Some(FolderRef::name("INBOX")) }).await?.into_inner();
    let folder_id = selected.folder.context("select returned no folder")?.id;
    let uids: Vec<u32> = selected.messages.iter().map(|m| m.uid).collect();
    if uids.len() != 2 * messages {
        bail!("expected {} messages in INBOX, found {}", 2 * messages, uids.len());
    }
    let fetches = uids.len().min(10_000);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let per = fetches.div_ceil(16);
    for chunk in uids[..fetches].chunks(per) {
        let chunk = chunk.to_vec();
        let channel = Channel::from_shared(server.grpc.clone())?.connect().await?;
        tasks.spawn(async move {
            let mut client = MailboxClient::new(channel);
            for uid in chunk {
                let mut stream = client
                    .fetch_body(FetchBodyRequest { account_id, folder_id, uid, offset: 0, length: 0 })
                    .await?
                    .into_inner();
                let mut got = 0;
                while let Some(part) = stream.message().await? {
                    got += part.chunk.len();
                }
                if got != 4096 {
                    bail!("fetched {got} bytes of uid {uid}, expected 4096");
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("  fetch    16 client(s): {:>8.0} whole messages/s  ({fetches} in {secs:.2} s)", fetches as f64 / secs);
    let (rss, hwm) = server.memory();
    println!("  server memory: idle {} MiB, now {} MiB, peak {} MiB", rss_idle / 1024, rss / 1024, hwm / 1024);
    Ok(())
}

async fn setup_user(server: &Server) -> anyhow::Result<(Channel, u64)> {
    let channel = Channel::from_shared(server.grpc.clone())?.connect().await?;
    let mut admin = AdminClient::new(channel.clone());
    admin.create_domain(CreateDomainRequest { name: "bench.test".into(), ..Default::default() }).await?;
    let account = admin
        .create_account(CreateAccountRequest {
            address: "user@bench.test".into(),
            password: Some(Password { value: Some(password::Value::Plain("bench".into())) }),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok((channel, account.id))
}

/// Runs postfix's smtp-source (one message per connection) and waits until every message is
/// readable in the mailbox.
async fn smtp(messages: usize, sessions: usize) -> anyhow::Result<()> {
    let server = Server::start().await?;
    smtp_ingest(&server, messages, sessions).await?;
    Ok(())
}

/// SMTP ingest without and then with spam scanning, one run each on a fresh `tern dev`, with an
/// rspamd started here: messages/s, and CPU per message of Tern and of rspamd (its main process
/// and workers). Tern's own cost of scanning is the difference of its CPU per message.
async fn smtp_spam(messages: usize, sessions: usize) -> anyhow::Result<()> {
    let rspamd = tokio::task::block_in_place(tern_testbed::rspamd::Rspamd::start)?;
    // No process has id 0: without one, rspamd's CPU reads as nothing.
    let rspamd_pid = rspamd.pid().unwrap_or_default();
    let config = format!("[spam]\nrspamd_url = \"{}\"\n", rspamd.url);
    let mut results = Vec::new();
    for (label, extra) in [("scanning off", ""), ("scanning on", config.as_str())] {
        let server = Server::start_with(extra).await?;
        println!("{label}:");
        let (tern_before, rspamd_before) = (tree_cpu(server.pid()), tree_cpu(rspamd_pid));
        let rate = smtp_ingest(&server, messages, sessions).await?;
        let (tern, scanner) = (tree_cpu(server.pid()) - tern_before, tree_cpu(rspamd_pid) - rspamd_before);
        println!("  CPU: tern {tern}, rspamd {scanner}");
        let per = |c: Cpu| c.total() / messages as f64;
        println!("  CPU per message: tern {:.3} ms, rspamd {:.3} ms", per(tern) * 1e3, per(scanner) * 1e3);
        results.push((rate, per(tern), per(scanner)));
    }
    let [(off_rate, off_tern, _), (on_rate, on_tern, on_rspamd)] = results[..] else { unreachable!() };
    // At full speed the two runs differ in more than the scan: the scanned one is slower (rspamd
    // is the bottleneck), so the store's group commits batch fewer messages. At one pace, below
    // both, the difference in Tern's CPU is what scanning costs it.
    let pace = (on_rate.min(off_rate) * 0.7).max(10.0);
    let mut paced = Vec::new();
    for (label, extra) in [("scanning off", ""), ("scanning on", config.as_str())] {
        let server = Server::start_with(extra).await?;
        let (channel, account_id) = setup_user(&server).await?;
        let (tern_before, rspamd_before) = (tree_cpu(server.pid()), tree_cpu(rspamd_pid));
        let n = paced_smtp(&server, pace, messages.min(3000)).await?;
        wait_stored(&mut MailboxClient::new(channel), account_id, n).await?;
        let (tern, scanner) = (tree_cpu(server.pid()) - tern_before, tree_cpu(rspamd_pid) - rspamd_before);
        println!("{label} at {pace:.0} messages/s: CPU tern {tern}, rspamd {scanner}");
        paced.push((tern.total() / n as f64, scanner.total() / n as f64));
    }
    let [(paced_off, _), (paced_on, paced_rspamd)] = paced[..] else { unreachable!() };
    println!("smtp with spam scanning, side by side:");
    println!("  messages/s:          off {off_rate:>7.0}   on {on_rate:>7.0}   ({:.2}x)", on_rate / off_rate);
    println!(
        "  tern CPU per message: off {:.3} ms   on {:.3} ms   (scanning costs tern {:+.1}%)",
        off_tern * 1e3,
        on_tern * 1e3,
        (on_tern / off_tern - 1.0) * 100.0
    );
    println!("  rspamd CPU per message: {:.3} ms ({:.2}x tern's unscanned)", on_rspamd * 1e3, on_rspamd / off_tern);
    println!(
        "  at one pace ({pace:.0} messages/s): tern CPU per message off {:.3} ms   on {:.3} ms   (scanning costs tern {:+.1}%), rspamd {:.3} ms",
        paced_off * 1e3,
        paced_on * 1e3,
        (paced_on / paced_off - 1.0) * 100.0,
        paced_rspamd * 1e3
    );
    Ok(())
}

/// The script of `bench smtp --sieve`: thirty rules of the kinds a user's filter has (list
/// headers, senders' domains and addresses, subjects with wildcards and a regex, the envelope
/// with a match variable, the decoded body, the size), none of which the benchmark's mail
/// matches, so every rule is evaluated and every message is kept in INBOX with a flag.
const BENCH_SCRIPT: &str = r#"require ["fileinto", "imap4flags", "variables", "body", "envelope", "regex", "relational", "comparator-i;ascii-numeric"];
if header :contains "list-id" "tern-users" { fileinto "Lists/tern-users"; stop; }
if header :contains "list-id" "tern-announce" { fileinto "Lists/announce"; stop; }
if header :contains "list-id" "rust-users" { fileinto "Lists/rust"; stop; }
if header :contains "list-id" "debian-devel" { fileinto "Lists/debian"; stop; }
if header :contains "list-id" "postfix-users" { fileinto "Lists/postfix"; stop; }
if header :is "x-mailing-list" ["dovecot@dovecot.org", "nats@nats.io"] { fileinto "Lists/other"; stop; }
if exists "x-github-reason" { fileinto "GitHub"; stop; }
if address :domain :is "from" ["spam.example", "junk.example", "casino.example"] { discard; stop; }
if address :is "from" ["boss@corp.example", "ceo@corp.example"] { addflag "\\Flagged"; }
if address :localpart :is "from" ["noreply", "no-reply", "donotreply"] { addflag "$NoReply"; }
if address :domain :matches "to" "*.internal.example" { fileinto "Internal"; stop; }
if address :all :contains "cc" "team@corp.example" { fileinto "Team"; stop; }
if envelope :matches "from" "*@*" { set "sender_domain" "${2}"; }
if string :is "${sender_domain}" "partner.example" { fileinto "Partners"; stop; }
if header :matches "subject" "*[SPAM]*" { fileinto "Junk"; stop; }
if header :matches "subject" "Invoice ?*" { fileinto "Invoices"; stop; }
if header :contains "subject" ["unsubscribe", "newsletter", "digest"] { fileinto "Newsletters"; stop; }
if header :regex "subject" "^\\[(urgent|alert|page)\\]" { addflag "\\Flagged"; }
if header :regex "subject" "ticket #[0-9]{6}" { fileinto "Tickets"; stop; }
if header :regex "from" "billing@(shop|store)\\.example" { fileinto "Receipts"; stop; }
if header :is "x-priority" "1" { addflag "\\Flagged"; }
if header :value "ge" :comparator "i;ascii-numeric" "x-spam-level" "8" { fileinto "Junk"; stop; }
if header :count "ge" :comparator "i;ascii-numeric" "received" "30" { discard; stop; }
if header :contains "precedence" ["bulk", "list"] { addflag "$Bulk"; }
if header :contains "auto-submitted" "auto-" { addflag "$Auto"; }
if body :contains ["lottery", "you have won"] { fileinto "Junk"; stop; }
if body :contains "unsubscribe here" { addflag "$Bulk"; }
if body :raw :contains "BEGIN:VCALENDAR" { addflag "$Invitation"; }
if size :over 1M { addflag "$Large"; }
if allof (header :contains "from" "calendar", header :contains "subject" "invitation") { fileinto "Calendar"; stop; }
addflag "$Filtered";
keep;
"#;

/// Puts [`BENCH_SCRIPT`] on the account, active.
async fn install_script(channel: &Channel, account_id: u64) -> anyhow::Result<()> {
    MailboxClient::new(channel.clone())
        .put_sieve_script(tern_proto::v1::PutSieveScriptRequest {
            account_id,
            name: "bench".into(),
            text: BENCH_SCRIPT.into(),
            activate: true,
        })
        .await?;
    Ok(())
}

/// SMTP ingest without and with a Sieve script on the recipient, each run on a fresh `tern
/// dev`: messages/s and Tern's CPU per message, at full speed and then at one pace below both
/// (where the store's group commits batch alike, so the difference is the filtering).
///
/// Each variant runs twice, in the order off, on, on, off, and the figures are the means: a
/// run pays for the disk writeback the one before it left (the previous data directory, its
/// fsyncs), so a fixed order would charge that to whichever variant always comes second. The
/// page cache is flushed (`sync`) before each run for the same reason.
async fn smtp_sieve(messages: usize, sessions: usize) -> anyhow::Result<()> {
    const ORDER: [bool; 4] = [false, true, true, false];
    let label = |script: bool| if script { "with a script" } else { "no script" };
    // (rate, CPU per message, user CPU per message) averaged per variant, off then on.
    let mut full = [(0.0, 0.0, 0.0); 2];
    for script in ORDER {
        flush_disk().await;
        let server = Server::start().await?;
        println!("{}:", label(script));
        let before = tree_cpu(server.pid());
        let rate = smtp_ingest_scripted(&server, messages, sessions, script).await?;
        let cpu = tree_cpu(server.pid()) - before;
        println!("  CPU: tern {cpu}, per message {:.3} ms", cpu.total() / messages as f64 * 1e3);
        let slot = &mut full[usize::from(script)];
        slot.0 += rate / 2.0;
        slot.1 += cpu.total() / messages as f64 / 2.0;
        slot.2 += cpu.user / messages as f64 / 2.0;
    }
    let [(off_rate, off_cpu, off_user), (on_rate, on_cpu, on_user)] = full;
    let pace = (on_rate.min(off_rate) * 0.7).max(10.0);
    let mut paced = [0.0; 2];
    for script in ORDER {
        flush_disk().await;
        let server = Server::start().await?;
        let (channel, account_id) = setup_user(&server).await?;
        if script {
            install_script(&channel, account_id).await?;
        }
        let before = tree_cpu(server.pid());
        let n = paced_smtp(&server, pace, messages.min(3000)).await?;
        wait_stored(&mut MailboxClient::new(channel), account_id, n).await?;
        let cpu = tree_cpu(server.pid()) - before;
        println!("{} at {pace:.0} messages/s: CPU tern {cpu}", label(script));
        paced[usize::from(script)] += cpu.total() / n as f64 / 2.0;
    }
    let [paced_off, paced_on] = paced;
    println!("smtp with a Sieve script (thirty rules), side by side, means of two runs each:");
    println!(
        "  messages/s:           off {off_rate:>7.0}   on {on_rate:>7.0}   ({:.2}x, {:+.1}%)",
        on_rate / off_rate,
        (on_rate / off_rate - 1.0) * 100.0
    );
    println!(
        "  tern CPU per message: off {:.3} ms   on {:.3} ms   (the script costs {:+.1}%)",
        off_cpu * 1e3,
        on_cpu * 1e3,
        (on_cpu / off_cpu - 1.0) * 100.0
    );
    // User time is the interpreter's own work; system time (the disk's) drifts from run to run.
    println!(
        "  tern user CPU per message: off {:.3} ms   on {:.3} ms   (the script adds {:.0} µs)",
        off_user * 1e3,
        on_user * 1e3,
        (on_user - off_user) * 1e6
    );
    println!(
        "  at one pace ({pace:.0} messages/s): tern CPU per message off {:.3} ms   on {:.3} ms   (the script costs {:+.1}%)",
        paced_off * 1e3,
        paced_on * 1e3,
        (paced_on / paced_off - 1.0) * 100.0
    );
    Ok(())
}

/// Writes the page cache out and lets the disk settle, so that a run does not pay for the
/// writeback of the one before.
async fn flush_disk() {
    let _ = tokio::process::Command::new("sync").status().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// Sends `count` messages of about 4 KiB, one per connection, started at `rate` per second (as
/// many connections at once as that takes); returns how many were accepted.
async fn paced_smtp(server: &Server, rate: f64, count: usize) -> anyhow::Result<usize> {
    let body: Arc<Vec<u8>> = Arc::new(
        format!(
            "From: Bench <bench@example.net>\r\nTo: <user@bench.test>\r\nSubject: paced\r\n\
             Message-ID: <paced@example.net>\r\n\r\n{}",
            "The quick brown fox jumps over the lazy dog, again and again.\r\n".repeat(64)
        )
        .into_bytes(),
    );
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut sends = tokio::task::JoinSet::new();
    for _ in 0..count {
        tick.tick().await;
        let (addr, body) = (server.smtp.clone(), body.clone());
        sends.spawn(async move { smtp_once(&addr, &body).await });
    }
    let mut accepted = 0;
    while let Some(sent) = sends.join_next().await {
        if sent?.is_ok() {
            accepted += 1;
        }
    }
    Ok(accepted)
}

/// Waits until `count` messages are in the account's INBOX and Junk together.
async fn wait_stored(client: &mut MailboxClient<Channel>, account_id: u64, count: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut n = 0;
        for folder in ["INBOX", "Junk"] {
            let st = client
                .status(tern_proto::v1::StatusRequest { account_id, folder: Some(FolderRef::name(folder)) })
                .await?
                .into_inner();
            n += st.folder.map(|f| f.messages as usize).unwrap_or(0);
        }
        if n >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {n} of {count} messages arrived");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The SMTP ingest benchmark on `server`: messages/s until all are readable.
async fn smtp_ingest(server: &Server, messages: usize, sessions: usize) -> anyhow::Result<f64> {
    smtp_ingest_scripted(server, messages, sessions, false).await
}

/// [`smtp_ingest`], with [`BENCH_SCRIPT`] active on the recipient when `script`.
async fn smtp_ingest_scripted(server: &Server, messages: usize, sessions: usize, script: bool) -> anyhow::Result<f64> {
    smtp_ingest_with(server, messages, sessions, script, None).await
}

/// [`smtp_ingest_scripted`], sending the message in `file` (header and body with LF line ends,
/// smtp-source's `-F`; its size in octets beside it) instead of smtp-source's own of 4 KiB.
async fn smtp_ingest_with(
    server: &Server,
    messages: usize,
    sessions: usize,
    script: bool,
    file: Option<(&std::path::Path, usize)>,
) -> anyhow::Result<f64> {
    let smtp_source = ["/usr/sbin/smtp-source", "/usr/bin/smtp-source"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .context("smtp-source not found: apt-get install postfix (only its client is used)")?;
    let (channel, account_id) = setup_user(server).await?;
    if script {
        install_script(&channel, account_id).await?;
    }
    let mut client = MailboxClient::new(channel);
    let (rss_idle, _) = server.memory();
    let size = file.map_or("4 KiB".to_string(), |(_, size)| format!("{size} octets"));
    println!("smtp benchmark: {messages} messages of {size}, {sessions} parallel sessions, one message per connection");
    let start = Instant::now();
    let mut command = tokio::process::Command::new(smtp_source);
    command.args(["-s", &sessions.to_string(), "-m", &messages.to_string()]);
    match file {
        Some((path, _)) => command.arg("-F").arg(path),
        None => command.args(["-l", "4096"]),
    };
    let status = command
        .args(["-f", "bench@example.net", "-t", "user@bench.test", "-M", "bench.example.net", &server.smtp])
        .status()
        .await?;
    if !status.success() {
        bail!("smtp-source failed: {status}");
    }
    // With spam scanning, what rspamd judges spam is in Junk: it arrived all the same.
    wait_stored(&mut client, account_id, messages).await?;
    let secs = start.elapsed().as_secs_f64();
    let (rss, hwm) = server.memory();
    println!(
        "  {:>8.0} messages/s  ({messages} in {secs:.2} s, all readable in INBOX or Junk)",
        messages as f64 / secs
    );
    println!("  tern dev memory: idle {} MiB, after {} MiB, peak RSS {} MiB", rss_idle / 1024, rss / 1024, hwm / 1024);
    Ok(messages as f64 / secs)
}

async fn imap(connections: usize, seconds: u64) -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (channel, _) = setup_user(&server).await?;
    let mut client = MailboxClient::new(channel);
    for n in 0..100 {
        deliver_to(&mut client, "user@bench.test", message(n)).await?;
    }
    // One session first, so that the process has done every one-off allocation (the password
    // check's working memory, the account's event feed) before the baseline is taken.
    let mut warm = ImapClient::connect_idle(&server.imap).await?;
    warm.expect_ok("LOGIN user@bench.test bench", None).await?;
    warm.expect_ok("SELECT INBOX", None).await?;
    warm.idle().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (before, _) = server.memory();
    println!("imap benchmark 1: {connections} connections, each logged in with INBOX (100 messages) selected, in IDLE");
    let start = Instant::now();
    let mut open = Vec::with_capacity(connections);
    let mut batch = tokio::task::JoinSet::new();
    let addr = server.imap.clone();
    for i in 0..connections {
        let addr = addr.clone();
        batch.spawn(async move {
            let mut c = ImapClient::connect_idle(&addr).await?;
            c.expect_ok("LOGIN user@bench.test bench", None).await?;
            c.expect_ok("SELECT INBOX", None).await?;
            c.idle().await?;
            anyhow::Ok(c)
        });
        if batch.len() >= 200 || i + 1 == connections {
            while let Some(r) = batch.join_next().await {
                open.push(r??);
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (after, peak) = server.memory();
    let per = (after.saturating_sub(before)) as f64 / connections as f64;
    println!(
        "  {} idle connections set up in {:.1} s; server RSS {} MiB -> {} MiB (peak {} MiB): {per:.1} KiB per idle connection",
        open.len(),
        start.elapsed().as_secs_f64(),
        before / 1024,
        after / 1024,
        peak / 1024
    );
    drop(open);
    drop(warm);
    tokio::time::sleep(Duration::from_secs(1)).await;

    imap_mixed(&server, seconds).await?;
    Ok(())
}

/// The mixed IMAP workload on `server`, whose user has 100 messages in INBOX: commands/s.
async fn imap_mixed(server: &Server, seconds: u64) -> anyhow::Result<f64> {
    let addr = server.imap.clone();
    println!("imap benchmark 2: 10 clients, {seconds} s of select, fetch flags/headers/bodies, store, append, expunge");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..10u32 {
        let addr = addr.clone();
        tasks.spawn(async move {
            let mut c = ImapClient::connect(&addr).await?;
            c.expect_ok("LOGIN user@bench.test bench", None).await?;
            let mut commands = 0u64;
            let mut round = 0u32;
            let body = message(1_000_000 + w as usize);
            while Instant::now() < deadline {
                round += 1;
                let n = 1 + (round * 7 + w) % 100;
                c.expect_ok("SELECT INBOX", None).await?;
                c.expect_ok("FETCH 1:* (UID FLAGS)", None).await?;
                c.expect_ok(&format!("FETCH {n} (BODY.PEEK[HEADER] ENVELOPE)"), None).await?;
                c.expect_ok(&format!("FETCH {n} (BODY.PEEK[])"), None).await?;
                c.expect_ok(&format!("STORE {n} +FLAGS (\\Flagged)"), None).await?;
                c.expect_ok(&format!("STORE {n} -FLAGS (\\Flagged)"), None).await?;
                c.expect_ok("APPEND Archive (\\Seen)", Some(&body)).await?;
                c.expect_ok("SELECT Archive", None).await?;
                c.expect_ok("STORE 1:* +FLAGS.SILENT (\\Deleted)", None).await?;
                c.expect_ok("EXPUNGE", None).await?;
                commands += 10;
            }
            c.command("LOGOUT", None).await.ok();
            anyhow::Ok(commands)
        });
    }
    let mut total = 0;
    while let Some(r) = tasks.join_next().await {
        total += r??;
    }
    let (rss, peak) = server.memory();
    println!(
        "  {:>8.0} commands/s  ({total} commands in {seconds} s; server RSS {} MiB, peak {} MiB)",
        total as f64 / seconds as f64,
        rss / 1024,
        peak / 1024
    );
    Ok(total as f64 / seconds as f64)
}

/// The configuration that points a `tern dev` at NATS and S3, under its own `prefix`.
fn distributed_config(nats: &tern_testbed::Nats, s3: &tern_testbed::SeaweedS3, prefix: &str) -> String {
    format!(
        "[store]\nurl = \"{}\"\nprefix = \"{prefix}\"\n\n[blobs]\nurl = \"s3://{}/{prefix}\"\nendpoint = \"{}\"\n\
         region = \"us-east-1\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\nallow_http = true\n",
        nats.url(),
        s3.bucket(),
        s3.endpoint(),
        s3.access_key(),
        s3.secret_key()
    )
}

/// A user with 100 messages in INBOX, as the mixed IMAP workload wants.
async fn user_with_inbox(server: &Server) -> anyhow::Result<()> {
    let (channel, _) = setup_user(server).await?;
    let mut client = MailboxClient::new(channel);
    for n in 0..100 {
        deliver_to(&mut client, "user@bench.test", message(n)).await?;
    }
    Ok(())
}

/// Sends one message over SMTP and returns, once the server answered the end of data with
/// 250, the moment the end of data was sent.
async fn smtp_once(addr: &str, body: &[u8]) -> anyhow::Result<Instant> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut s = tokio::io::BufStream::new(tcp);
    let reply = async |s: &mut tokio::io::BufStream<tokio::net::TcpStream>, want: &str| -> anyhow::Result<()> {
        loop {
            let mut line = String::new();
            if s.read_line(&mut line).await? == 0 {
                bail!("the SMTP server closed the connection");
            }
            if line.as_bytes().get(3) == Some(&b'-') {
                continue;
            }
            if !line.starts_with(want) {
                bail!("expected {want}, got {line:?}");
            }
            return Ok(());
        }
    };
    reply(&mut s, "220").await?;
    for (command, want) in [
        ("EHLO bench.example.net\r\n", "250"),
        ("MAIL FROM:<bench@example.net>\r\n", "250"),
        ("RCPT TO:<user@bench.test>\r\n", "250"),
        ("DATA\r\n", "354"),
    ] {
        s.write_all(command.as_bytes()).await?;
        s.flush().await?;
        reply(&mut s, want).await?;
    }
    s.write_all(body).await?;
    s.write_all(b".\r\n").await?;
    s.flush().await?;
    let sent = Instant::now();
    reply(&mut s, "250").await?;
    s.write_all(b"QUIT\r\n").await?;
    s.flush().await?;
    Ok(sent)
}

async fn distributed(messages: usize, sessions: usize, seconds: u64, deliveries: usize) -> anyhow::Result<()> {
    let nats = tokio::task::spawn_blocking(tern_testbed::Nats::start).await??;
    let s3 = tokio::task::spawn_blocking(tern_testbed::SeaweedS3::start).await??;
    println!("distributed benchmark: NATS JetStream at {}, SeaweedFS S3 at {}", nats.url(), s3.endpoint());

    // Zero messages or seconds skip a part.
    let (mut embedded_smtp, mut distributed_smtp, mut embedded_imap, mut distributed_imap) = (0.0, 0.0, 0.0, 0.0);
    // CPU per message or command, in seconds: Tern's when embedded, then Tern's, NATS's and
    // SeaweedFS's when distributed. On a machine this small the three share its cores, so the
    // throughput ratio is bounded by their sum; Tern's own share says how efficient it is.
    let (mut smtp_cpu, mut imap_cpu) = ((0.0, [0.0; 3]), (0.0, [0.0; 3]));
    let processes = |server: &Server| [server.pid(), nats.pid().unwrap_or_default(), s3.pid().unwrap_or_default()];
    if messages > 0 {
        println!("\n== SMTP ingest, embedded ==");
        let server = Server::start().await?;
        let probe = CpuProbe::start([server.pid(), 0, 0]);
        embedded_smtp = smtp_ingest(&server, messages, sessions).await?;
        smtp_cpu.0 = probe.per(messages as f64)[0];
        drop(server);
        println!("\n== SMTP ingest, distributed (NATS + S3) ==");
        let server = Server::start_with(&distributed_config(&nats, &s3, "ingest")).await?;
        let probe = CpuProbe::start(processes(&server));
        distributed_smtp = smtp_ingest(&server, messages, sessions).await?;
        smtp_cpu.1 = probe.per(messages as f64);
        println!("{}", cpu_line("message", smtp_cpu));
    }
    if seconds > 0 {
        println!("\n== IMAP mixed workload, embedded ==");
        let server = Server::start().await?;
        user_with_inbox(&server).await?;
        let probe = CpuProbe::start([server.pid(), 0, 0]);
        embedded_imap = imap_mixed(&server, seconds).await?;
        imap_cpu.0 = probe.per(embedded_imap * seconds as f64)[0];
        drop(server);
        println!("\n== IMAP mixed workload, distributed ==");
        let server = Server::start_with(&distributed_config(&nats, &s3, "mixed")).await?;
        user_with_inbox(&server).await?;
        let probe = CpuProbe::start(processes(&server));
        distributed_imap = imap_mixed(&server, seconds).await?;
        imap_cpu.1 = probe.per(distributed_imap * seconds as f64);
        println!("{}", cpu_line("command", imap_cpu));
        drop(server);
    }
    // Two processes over one store: deliveries through A's SMTP, an IDLE on B's IMAP.
    println!("\n== Notification latency: end of SMTP DATA on process A to EXISTS in IDLE on process B ==");
    let config = distributed_config(&nats, &s3, "notify");
    let a = Server::start_with(&config).await?;
    let b = Server::start_with(&config).await?;
    setup_user(&a).await?;
    let mut idle = ImapClient::connect_idle(&b.imap).await?;
    idle.expect_ok("LOGIN user@bench.test bench", None).await?;
    idle.expect_ok("SELECT INBOX", None).await?;
    idle.idle().await?;
    // A reader timestamps every line of the IDLE as it arrives, so the latency is not the
    // time this loop took to look.
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let mut stream = idle.into_stream();
    let reader = tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        loop {
            let mut line = String::new();
            match stream.read_line(&mut line).await {
                Ok(n) if n > 0 => {
                    if tx.send((line.trim_end().to_string(), Instant::now())).is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    });
    let mut latencies = Vec::with_capacity(deliveries);
    for n in 1..=deliveries {
        let body = format!("From: bench@example.net\r\nTo: user@bench.test\r\nSubject: notify {n}\r\n\r\nhello\r\n");
        let sent = smtp_once(&a.smtp, body.as_bytes()).await?;
        let want = format!("* {n} EXISTS");
        loop {
            match tokio::time::timeout(Duration::from_secs(10), lines.recv()).await {
                Ok(Some((line, at))) if line == want => {
                    latencies.push(at.saturating_duration_since(sent));
                    break;
                }
                Ok(Some(_)) => {}
                Ok(None) => bail!("the IDLE connection closed"),
                Err(_) => bail!("no {want} within 10 s"),
            }
        }
    }
    reader.abort();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "  {deliveries} deliveries: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies[latencies.len() - 1].as_secs_f64() * 1e3
    );

    println!("\n== Summary (same machine, same run) ==");
    println!(
        "  SMTP ingest:   embedded {embedded_smtp:>7.0} msg/s   distributed {distributed_smtp:>7.0} msg/s   ({:.2}x)",
        distributed_smtp / embedded_smtp
    );
    println!(
        "  IMAP mixed:    embedded {embedded_imap:>7.0} cmd/s   distributed {distributed_imap:>7.0} cmd/s   ({:.2}x)",
        distributed_imap / embedded_imap
    );
    println!(
        "  IDLE notification across processes: p50 {:.2} ms, p99 {:.2} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
    // NATS and SeaweedFS run on the same cores as Tern here, so they cap the distributed
    // throughput whatever Tern does: even a Tern that spent no more CPU per operation than the
    // embedded one could not go past `cores / (its CPU + NATS's + S3's)` operations a second.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    for (what, (embedded, distributed), embedded_rate) in
        [("SMTP ingest", smtp_cpu, embedded_smtp), ("IMAP mixed", imap_cpu, embedded_imap)]
    {
        if embedded > 0.0 && distributed[0] > 0.0 {
            let ceiling = cores / (embedded + distributed[1] + distributed[2]);
            println!(
                "  {what}: Tern's own CPU per operation, embedded/distributed {:.2}x; ceiling on {cores} shared \
                 cores with no Tern overhead {ceiling:.0}/s ({:.2}x embedded)",
                embedded / distributed[0],
                ceiling / embedded_rate
            );
        }
    }
    Ok(())
}

/// The CPU time of up to three processes (0 for none) from a starting point.
struct CpuProbe {
    pids: [u32; 3],
    start: [f64; 3],
}

impl CpuProbe {
    fn start(pids: [u32; 3]) -> Self {
        Self { pids, start: pids.map(|p| if p == 0 { 0.0 } else { cpu_of(p) }) }
    }

    /// CPU seconds each process used since the start, per `operations`.
    fn per(&self, operations: f64) -> [f64; 3] {
        let mut out = [0.0; 3];
        for (i, pid) in self.pids.iter().enumerate().filter(|(_, p)| **p != 0) {
            out[i] = (cpu_of(*pid) - self.start[i]) / operations.max(1.0);
        }
        out
    }
}

/// `CPU per message: tern 2.40 ms embedded; distributed tern 2.01 ms, NATS 0.62 ms, S3 2.68 ms`.
fn cpu_line(operation: &str, (embedded, distributed): (f64, [f64; 3])) -> String {
    format!(
        "  CPU per {operation}: embedded tern {:.3} ms; distributed tern {:.3} ms, NATS {:.3} ms, S3 {:.3} ms",
        embedded * 1e3,
        distributed[0] * 1e3,
        distributed[1] * 1e3,
        distributed[2] * 1e3
    )
}

/// The local domain the relay benchmark sends from (with a DKIM key) and the remote one it
/// sends to (an MX record pointing at the sink).
const RELAY_FROM: &str = "bench@relay.bench.test";
const SINK_DOMAIN: &str = "sink.test";

/// CPU time (user and system) that process `pid` has used so far, in seconds, from
/// /proc/PID/stat (in clock ticks, 100 a second on Linux).
fn cpu_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces: the
    // state is field 3, utime 14 and stime 15.
    let rest: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// CPU time in seconds, in user space and in the kernel (system calls, and on a virtual machine
/// the cost of the disk's and the network's emulation that an fsync or a send incurs).
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    user: f64,
    system: f64,
}

impl Cpu {
    fn total(self) -> f64 {
        self.user + self.system
    }
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;

    fn sub(self, earlier: Cpu) -> Cpu {
        Cpu { user: self.user - earlier.user, system: self.system - earlier.system }
    }
}

impl std::fmt::Display for Cpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} s (user {:.2} s, system {:.2} s)", self.total(), self.user, self.system)
    }
}

/// The CPU time of process `root`, every process below it, and the children they have waited
/// for, from /proc: for a Dovecot, its master and every service and session process it
/// started, including those that ended since (the master waits for its children, which adds
/// their times to its own cutime and cstime).
fn tree_cpu(root: u32) -> Cpu {
    // Each process's parent and its own ticks, with those of the children it waited for.
    let mut processes = std::collections::HashMap::new();
    let mut children: std::collections::HashMap<u32, Vec<u32>> = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // The fields after the command name, which is in parentheses and may hold spaces: ppid
        // is field 4, utime 14, stime 15, cutime 16 and cstime 17.
        let fields: Vec<u64> = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0)).collect())
            .unwrap_or_default();
        if fields.len() > 14 {
            processes.insert(pid, (fields[10] + fields[12], fields[11] + fields[13]));
            children.entry(fields[0] as u32).or_default().push(pid);
        }
    }
    let (mut user, mut system, mut stack) = (0, 0, vec![root]);
    while let Some(pid) = stack.pop() {
        let (u, s) = processes.get(&pid).copied().unwrap_or_default();
        (user, system) = (user + u, system + s);
        stack.extend(children.get(&pid).into_iter().flatten());
    }
    Cpu { user: user as f64 / 100.0, system: system as f64 / 100.0 }
}

/// The CPU time (user and system, in seconds) of this process, the benchmark's client.
fn self_cpu() -> Cpu {
    // Not `tree_cpu`: the servers under test are this process's children.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().map(|v| v.parse().unwrap_or(0.0)).collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15, the 12th and 13th after the command name.
    let ticks = |i: usize| fields.get(i).copied().unwrap_or(0.0) / 100.0;
    Cpu { user: ticks(11), system: ticks(12) }
}

/// The 1, 5 and 15 minute load averages, from /proc/loadavg.
fn load_average() -> String {
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    loadavg.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// A 4 KiB message from the relay benchmark's sender, with the headers a DKIM signature covers.
fn relay_message(n: usize) -> Vec<u8> {
    padded(format!(
        "From: Bench <{RELAY_FROM}>\r\nTo: <user{n}@{SINK_DOMAIN}>\r\nSubject: relay bench {n}\r\n\
         Date: Mon, 01 Jan 2024 00:00:00 +0000\r\nMessage-ID: <{n}@relay.bench.test>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    ))
}

async fn enqueue(client: &mut MailboxClient<Channel>, n: usize) -> anyhow::Result<()> {
    let body = relay_message(n);
    let reqs = vec![
        EnqueueRequest {
            part: Some(enqueue_request::Part::Envelope(EnqueueEnvelope {
                mail_from: RELAY_FROM.into(),
                recipients: vec![QueuedRecipient { address: format!("user{n}@{SINK_DOMAIN}"), ..Default::default() }],
                size_hint: body.len() as u64,
                ..Default::default()
            })),
        },
        EnqueueRequest { part: Some(enqueue_request::Part::Chunk(body)) },
    ];
    let resp = client.enqueue(futures::stream::iter(reqs)).await?.into_inner();
    if resp.queue_ids.len() != 1 {
        bail!("enqueue made {} entries, expected 1", resp.queue_ids.len());
    }
    Ok(())
}

/// The DNS server of the relay's tests (`tests/fixtures/relay/dns_server.py`), serving
/// `records` on a free loopback port, which it announces with `READY <port>`; killed when
/// dropped.
fn dns_fixture(dir: &std::path::Path, records: &str) -> anyhow::Result<(Process, u16)> {
    crate::install_tools()?;
    let root = crate::workspace_root();
    let zone = dir.join("zone.json");
    std::fs::write(&zone, format!("{{\"records\": [{records}]}}"))?;
    let mut process = Process::new("python3", dir);
    process.env("PYTHONPATH", root.join(".tools/py"));
    let script = root.join("tests/fixtures/relay/dns_server.py");
    let args = [script.as_os_str(), "--host".as_ref(), "127.0.0.1".as_ref(), "--port".as_ref(), "0".as_ref()];
    process.spawn(&[&args[..], &["--zone".as_ref(), zone.as_os_str()]].concat())?;
    let line = tokio::task::block_in_place(|| process.wait_for_line("READY "))?;
    let port = line
        .strip_prefix("READY ")
        .and_then(|p| p.trim().parse().ok())
        .with_context(|| format!("unexpected line from the DNS server: {line:?}"))?;
    Ok((process, port))
}

/// What postfix's smtp-sink has received so far, from its running counters (`-c`).
#[derive(Debug, Default)]
struct SinkCount {
    messages: usize,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// smtp-sink on `addr`, counting; killed when dropped.
async fn smtp_sink(addr: SocketAddr) -> anyhow::Result<(tokio::process::Child, Arc<std::sync::Mutex<SinkCount>>)> {
    use tokio::io::AsyncReadExt;
    let bin = ["/usr/sbin/smtp-sink", "/usr/bin/smtp-sink"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .context("smtp-sink not found: apt-get install postfix (only its test server is used)")?;
    let mut command = tokio::process::Command::new(bin);
    command.arg("-c");
    // smtp-sink refuses to run as root without a user to drop to.
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        .unwrap_or(false);
    if root {
        command.args(["-u", "nobody"]);
    }
    // -m: connections served at once (default 256); the backlog takes the rest.
    let mut child = command
        .args(["-m", "1024", &addr.to_string(), "1024"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {bin}"))?;
    let mut stdout = child.stdout.take().context("no stdout")?;
    let count = Arc::new(std::sync::Mutex::new(SinkCount::default()));
    let counter = count.clone();
    // Each update is `sess=N quit=N mesg=N` and a carriage return.
    tokio::spawn(async move {
        let (mut pending, mut chunk) = (Vec::new(), vec![0u8; 8192]);
        while let Ok(n) = stdout.read(&mut chunk).await {
            if n == 0 {
                return;
            }
            let now = Instant::now();
            pending.extend_from_slice(&chunk[..n]);
            while let Some(end) = pending.iter().position(|b| *b == b'\r' || *b == b'\n') {
                let record: Vec<u8> = pending.drain(..=end).collect();
                let mesg = String::from_utf8_lossy(&record)
                    .split_whitespace()
                    .find_map(|f| f.strip_prefix("mesg=").and_then(|v| v.parse::<usize>().ok()));
                let mut c = counter.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(m) = mesg.filter(|m| *m > c.messages) {
                    c.messages = m;
                    c.first.get_or_insert(now);
                    c.last = Some(now);
                }
            }
        }
    });
    // smtp-sink is not a testbed `Process`: its counters are read from its output as they
    // come. It is ready when it greets, as testbed's probe sees it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tokio::task::block_in_place(|| tern_testbed::greets(addr, "220")) {
        if let Some(status) = child.try_wait()? {
            bail!("smtp-sink exited with {status} before it listened on {addr}");
        }
        if Instant::now() > deadline {
            bail!("smtp-sink did not start listening on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((child, count))
}

/// A `tern` process of one role (`tern mailbox`, `tern relay`) running in `dir`, where its log
/// is, ready when this returns; killed when dropped. Only roles that keep data take
/// `--data-dir` (the relay refuses it), so `args` says where, if anywhere.
fn tern_role(role: &str, dir: &std::path::Path, args: &[String]) -> anyhow::Result<Process> {
    std::fs::create_dir_all(dir)?;
    let [http] = free_ports()?;
    let mut all = vec![role.to_string()];
    all.extend_from_slice(args);
    all.extend(["--http-listen".to_string(), loopback(http).to_string()]);
    let mut process = tern_process(dir);
    process.spawn(&all)?;
    wait_ready(&mut process, http)?;
    Ok(process)
}

/// The figures of one relay run.
#[derive(Debug)]
struct RelayRun {
    /// From starting the relay to an empty queue.
    secs: f64,
    /// From the sink's first message to its last.
    steady_secs: f64,
    enqueue_secs: f64,
    relay_rss: u64,
    relay_peak: u64,
    relay_cpu: f64,
    mailbox_cpu: f64,
    sink_cpu: f64,
}

/// One run: a fresh `tern mailbox` whose queue is filled through the gRPC `Enqueue`, then a
/// `tern relay` started against it that delivers everything to a fresh smtp-sink.
async fn relay_run(
    dkim: bool,
    messages: usize,
    concurrency: usize,
    per_domain: usize,
    timeout: Duration,
    dns: u16,
    nats: bool,
) -> anyhow::Result<RelayRun> {
    let dir = tempfile::TempDir::new()?;
    let [grpc] = free_ports()?;
    let grpc = loopback(grpc).to_string();
    let url = format!("http://{grpc}");
    let mailbox_dir = dir.path().join("mailbox");
    // A NATS server of this run's own, stopped when the run ends.
    let nats = if nats { Some(tern_testbed::Nats::start()?) } else { None };
    let mut mailbox_args =
        vec!["--grpc-listen".to_string(), grpc.clone(), "--data-dir".to_string(), mailbox_dir.display().to_string()];
    if let Some(n) = &nats {
        mailbox_args.extend(["--store".to_string(), n.url()]);
    }
    let mailbox = tern_role("mailbox", &mailbox_dir, &mailbox_args)?;
    let mailbox_pid = mailbox.id().context("tern mailbox exited")?;
    let channel = Channel::from_shared(url.clone())?.connect().await?;
    let mut admin = AdminClient::new(channel.clone());
    let domain = RELAY_FROM.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
    admin.create_domain(CreateDomainRequest { name: domain.into(), ..Default::default() }).await?;
    // An empty key asks the mailbox service to generate one (RSA, as `tern admin domain dkim`).
    admin
        .set_dkim_key(SetDkimKeyRequest { domain: domain.into(), selector: "bench".into(), private_key_pem: "".into() })
        .await?;

    // Phase 1: the queue, filled while no relay runs, by 16 clients as submission pods would.
    let start = Instant::now();
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let channel = Channel::from_shared(url.clone())?.connect().await?;
        let counter = counter.clone();
        tasks.spawn(async move {
            let mut client = MailboxClient::new(channel);
            loop {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= messages {
                    return anyhow::Ok(());
                }
                enqueue(&mut client, n).await?;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let enqueue_secs = start.elapsed().as_secs_f64();
    let mut client = MailboxClient::new(channel).max_decoding_message_size(256 << 20);
    let queued = client.list_queue(ListQueueRequest {}).await?.into_inner().messages.len();
    if queued != messages {
        bail!("{queued} entries on the queue after enqueueing {messages}");
    }

    // Phase 2: a relay worker alone, started now, against the full queue.
    let [sink_port] = free_ports()?;
    let (sink, count) = smtp_sink(loopback(sink_port)).await?;
    let sink_pid = sink.id().context("smtp-sink exited")?;
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[relay]\nhostname = \"relay.bench.test\"\nport = {sink_port}\ndns_server = \"127.0.0.1:{dns}\"\n\
             concurrency = {concurrency}\nper_domain_concurrency = {per_domain}\ndkim = {dkim}\n"
        ),
    )?;
    let (cpu_mailbox_before, cpu_sink_before) = (cpu_of(mailbox_pid), cpu_of(sink_pid));
    let start = Instant::now();
    let mut relay = tern_role(
        "relay",
        &dir.path().join("relay"),
        &["--mailbox-url".into(), url.clone(), "--config".into(), config.display().to_string()],
    )?;
    let relay_pid = relay.id().context("tern relay exited")?;
    let delivered = || count.lock().unwrap_or_else(|e| e.into_inner()).messages;
    // The sink's counter first (cheap to watch), then the queue until every entry is finished.
    loop {
        if delivered() >= messages && client.list_queue(ListQueueRequest {}).await?.into_inner().messages.is_empty() {
            break;
        }
        if relay.has_exited() {
            return Err(relay.failure("exited"));
        }
        if start.elapsed() > timeout {
            let left = client.list_queue(ListQueueRequest {}).await?.into_inner().messages;
            let why = left
                .iter()
                .find_map(|m| m.history.last())
                .map(|a| format!("; an entry's last attempt: {} {}", a.host, a.result))
                .unwrap_or_default();
            bail!(
                "after {} s the sink has {} of {messages} messages and {} entries are still queued{why}",
                timeout.as_secs(),
                delivered(),
                left.len()
            );
        }
        let wait = if delivered() >= messages { 5 } else { 10 };
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let (relay_rss, relay_peak) = memory_of(relay_pid);
    let relay_cpu = cpu_of(relay_pid);
    let (mailbox_cpu, sink_cpu) = (cpu_of(mailbox_pid) - cpu_mailbox_before, cpu_of(sink_pid) - cpu_sink_before);
    // A message delivered twice would show as one too many.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = count.lock().unwrap_or_else(|e| e.into_inner());
    if c.messages != messages {
        bail!("the sink received {} messages, expected {messages}", c.messages);
    }
    let steady_secs = match (c.first, c.last) {
        (Some(first), Some(last)) => last.duration_since(first).as_secs_f64(),
        _ => secs,
    };
    drop(c);
    drop((relay, sink, mailbox));
    Ok(RelayRun { secs, steady_secs, enqueue_secs, relay_rss, relay_peak, relay_cpu, mailbox_cpu, sink_cpu })
}

async fn relay(
    messages: usize,
    concurrency: usize,
    per_domain: usize,
    timeout: Duration,
    nats: bool,
) -> anyhow::Result<()> {
    if messages < 2 {
        bail!("need at least two messages");
    }
    let dir = tempfile::TempDir::new()?;
    let records = format!(
        "{{\"name\": \"{SINK_DOMAIN}\", \"type\": \"MX\", \"pref\": 10, \"value\": \"mx.{SINK_DOMAIN}\"}}, \
         {{\"name\": \"mx.{SINK_DOMAIN}\", \"type\": \"A\", \"value\": \"127.0.0.1\"}}"
    );
    let (_dns, dns) = dns_fixture(dir.path(), &records)?;
    println!(
        "relay benchmark: {messages} queued messages of 4 KiB (one recipient each) delivered by `tern relay` \
         (concurrency {concurrency}, {per_domain} per domain) to smtp-sink on loopback, MX from a local DNS server; \
         a fresh `tern mailbox` and sink per run; queue in {}",
        if nats { "NATS JetStream" } else { "the embedded store" }
    );
    let mut rates = Vec::new();
    for dkim in [true, false] {
        let r = relay_run(dkim, messages, concurrency, per_domain, timeout, dns, nats).await?;
        let rate = messages as f64 / r.secs;
        println!(
            "  DKIM {:<3}: {rate:>7.0} deliveries/s  ({messages} in {:.2} s from the relay's start to an empty queue; \
             {:.0}/s first to last message at the sink)",
            if dkim { "on" } else { "off" },
            r.secs,
            (messages - 1) as f64 / r.steady_secs.max(1e-9),
        );
        println!(
            "             CPU: relay {:.2} s ({:.0} us/delivery), mailbox {:.2} s, smtp-sink {:.2} s; \
             relay RSS {} MiB, peak {} MiB; queue filled at {:.0}/s",
            r.relay_cpu,
            r.relay_cpu * 1e6 / messages as f64,
            r.mailbox_cpu,
            r.sink_cpu,
            r.relay_rss / 1024,
            r.relay_peak / 1024,
            messages as f64 / r.enqueue_secs
        );
        rates.push(rate);
    }
    let (signed, plain) = (rates[0], rates[1]);
    println!(
        "  DKIM signing costs {:.0}% of the rate ({signed:.0} vs {plain:.0} deliveries/s); target 1000/s signed: {}",
        (1.0 - signed / plain) * 100.0,
        if signed >= 1000.0 { "met" } else { "NOT met" }
    );
    Ok(())
}

/// `bench search`: the full-text index (issue #19) on a mailbox of generated English-like mail.
///
/// The messages come from [`search::Corpus`]: a deterministic generator (SplitMix64) drawing
/// words from a vocabulary of about 200 common English words and 3800 made-up ones with a Zipf
/// distribution (the word of rank r has weight 1/r), a few hundred jargon tokens (product codes,
/// part numbers) sprinkled in, and a reference and a ticket number of its own in every message,
/// so that the index's term dictionary grows with the mailbox as real mail's does. One rare
/// word is put in exactly five messages; the common word is a real one of rank about fifty,
/// in most messages. The generator counts which messages contain each (as IMAP's substring
/// match does, case-insensitively), so every search is checked against the exact answer.
mod search {
    use std::{
        collections::HashSet,
        sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
    };

    use tern_proto::v1::{
        AppendHeader, AppendRequest, GetIndexStatusRequest, IndexStatus, ReindexRequest, SearchTextKey,
        SearchTextRequest, TextField, append_request,
    };
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

    use super::*;

    pub struct Workload {
        pub messages: usize,
        pub nats_messages: usize,
        pub runs: usize,
        pub ingest: usize,
        pub sessions: usize,
        pub reindex: bool,
    }

    const ADDRESS: &str = "user@bench.test";
    /// The most messages one AppendAll takes (the mailbox service's `MAX_APPEND_MESSAGES`).
    const BATCH: usize = 500;
    /// AppendAll calls in flight at once while loading.
    const STREAMS: usize = 4;
    /// The rare word, in exactly [`RARE_MESSAGES`] messages; no other token contains it.
    const RARE: &str = "zyqvorthex";
    const RARE_MESSAGES: usize = 5;
    /// The common word: a real word of rank about fifty.
    const COMMON: &str = "which";
    const WARMUPS: usize = 2;
    /// Words in the vocabulary, real and made up.
    const VOCABULARY: usize = 4000;
    /// Distinct jargon tokens.
    const JARGON: usize = 300;
    /// Octets of the message smtp-source sends in the ingest runs: the corpus's mean size.
    const INGEST_SIZE: usize = 12 * 1024;
    const SEED: u64 = 0x7465_726e_5f66_7473;

    /// Common English words, roughly by frequency: the top of the Zipf ranking.
    const ENGLISH: &[&str] = &[
        "the", "of", "and", "to", "a", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are", "with", "as",
        "i", "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by", "not", "but", "what", "some",
        "we", "can", "out", "other", "were", "all", "there", "when", "up", "use", "your", "how", "said", "an", "each",
        "she", "which", "do", "their", "time", "if", "will", "way", "about", "many", "then", "them", "write", "would",
        "like", "so", "these", "her", "long", "make", "thing", "see", "him", "two", "has", "look", "more", "day",
        "could", "go", "come", "did", "number", "sound", "no", "most", "people", "my", "over", "know", "water", "than",
        "call", "first", "who", "may", "down", "side", "been", "now", "find", "any", "new", "work", "part", "take",
        "get", "place", "made", "live", "where", "after", "back", "little", "only", "round", "man", "year", "came",
        "show", "every", "good", "me", "give", "our", "under", "name", "very", "through", "just", "form", "sentence",
        "great", "think", "say", "help", "low", "line", "differ", "turn", "cause", "much", "mean", "before", "move",
        "right", "boy", "old", "too", "same", "tell", "does", "set", "three", "want", "air", "well", "also", "play",
        "small", "end", "put", "home", "read", "hand", "port", "large", "spell", "add", "even", "land", "here", "must",
        "big", "high", "such", "follow", "act", "why", "ask", "men", "change", "went", "light", "kind", "off", "need",
        "house", "picture", "try", "us", "again", "animal", "point", "mother", "world", "near", "build", "self",
        "earth", "father", "head", "stand", "own", "page", "should", "country", "found", "answer", "school", "grow",
        "study", "still", "learn", "plant", "cover", "food", "sun", "four", "between", "state", "keep", "eye", "never",
        "last", "let", "thought", "city", "tree", "cross", "farm", "hard", "start", "might", "story", "saw", "far",
        "sea", "draw", "left", "late", "run", "while", "press", "close", "night", "real", "life", "few", "north",
        "meeting", "report", "project", "team", "please", "thanks", "attached", "review", "update", "week",
    ];
    const FIRST_NAMES: &[&str] = &[
        "Alice", "Bruno", "Chloe", "Daniel", "Emma", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Karin", "Luca",
        "Maya", "Nils", "Olga", "Pedro", "Quentin", "Rosa", "Sven", "Tara", "Ugo", "Vera", "Wim", "Yara",
    ];
    const LAST_NAMES: &[&str] = &[
        "Andersen", "Bauer", "Costa", "Dubois", "Eriksson", "Fischer", "Garcia", "Horvat", "Ivanova", "Jensen",
        "Kowalski", "Larsen", "Moreau", "Novak", "Olsen", "Petrov", "Rossi", "Silva", "Tanaka", "Weber",
    ];
    const DOMAINS: &[&str] = &["example.com", "example.org", "example.net", "mail.example", "corp.example"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    const ONSETS: &[&str] = &[
        "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "br", "cr", "dr", "fl",
        "gr", "pl", "pr", "st", "tr", "ch", "sh", "th", "",
    ];
    const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ea", "ou", "io", "ee"];
    const CODAS: &[&str] = &["", "", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ng", "ck", "rt"];
    const SUFFIXES: &[&str] = &["", "", "", "", "ing", "ed", "er", "s", "ly", "tion", "ment", "ness", "able"];

    /// SplitMix64: small, fast and the same everywhere.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in `0..n`.
        fn below(&mut self, n: usize) -> usize {
            ((u128::from(self.next()) * n as u128) >> 64) as usize
        }

        /// Uniform in `lo..=hi`.
        fn range(&mut self, lo: usize, hi: usize) -> usize {
            lo + self.below(hi - lo + 1)
        }

        /// Uniform in `[0, 1)`.
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    /// The generator of a benchmark mailbox of `messages` messages.
    pub struct Corpus {
        words: Vec<String>,
        /// Cumulative Zipf weights of `words`, for drawing one by rank.
        cdf: Vec<f64>,
        jargon: Vec<String>,
        messages: usize,
    }

    /// One generated message, and whether its body contains the rare and the common word.
    pub struct Generated {
        pub bytes: Vec<u8>,
        pub rare: bool,
        pub common: bool,
    }

    /// Words wrapped into lines of at most 72 characters.
    struct Text {
        out: String,
        column: usize,
        eol: &'static str,
    }

    impl Text {
        fn word(&mut self, w: &str) {
            if self.column > 0 && self.column + 1 + w.len() > 72 {
                self.out.push_str(self.eol);
                self.column = 0;
            }
            if self.column > 0 {
                self.out.push(' ');
                self.column += 1;
            }
            self.out.push_str(w);
            self.column += w.len();
        }

        fn end_line(&mut self) {
            if self.column > 0 {
                self.out.push_str(self.eol);
                self.column = 0;
            }
        }

        fn line(&mut self, line: &str) {
            self.end_line();
            self.out.push_str(line);
            self.out.push_str(self.eol);
        }

        fn blank(&mut self) {
            self.end_line();
            self.out.push_str(self.eol);
        }
    }

    fn capitalized(w: &str) -> String {
        let mut c = w.chars();
        c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
    }

    impl Corpus {
        pub fn new(messages: usize) -> Self {
            let mut rng = Rng(SEED);
            let mut seen: HashSet<String> = HashSet::new();
            let mut words: Vec<String> = Vec::with_capacity(VOCABULARY);
            for w in ENGLISH {
                if seen.insert(w.to_string()) {
                    words.push(w.to_string());
                }
            }
            while words.len() < VOCABULARY {
                let mut w = String::new();
                for _ in 0..rng.range(1, 3) {
                    w.push_str(rng.pick(ONSETS));
                    w.push_str(rng.pick(VOWELS));
                    w.push_str(rng.pick(CODAS));
                }
                w.push_str(rng.pick(SUFFIXES));
                if w.len() >= 3 && !w.contains(RARE) && seen.insert(w.clone()) {
                    words.push(w);
                }
            }
            // Made-up words take the ranks below the real ones, shuffled so that their length
            // does not follow their rank.
            for i in (ENGLISH.len() + 1..words.len()).rev() {
                let j = ENGLISH.len() + rng.below(i - ENGLISH.len() + 1);
                words.swap(i, j);
            }
            let mut total = 0.0;
            let cdf = (1..=words.len())
                .map(|rank| {
                    total += 1.0 / rank as f64;
                    total
                })
                .collect();
            const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
            let mut jargon = Vec::with_capacity(JARGON);
            while jargon.len() < JARGON {
                let len = rng.range(5, 9);
                let t: String = (0..len).map(|_| ALNUM[rng.below(ALNUM.len())] as char).collect();
                if t.bytes().any(|b| b.is_ascii_digit()) && !t.contains(RARE) && seen.insert(t.clone()) {
                    jargon.push(t);
                }
            }
            Self { words, cdf, jargon, messages }
        }

        fn word(&self, rng: &mut Rng) -> &str {
            let u = rng.unit() * self.cdf[self.cdf.len() - 1];
            let i = self.cdf.partition_point(|c| *c < u).min(self.words.len() - 1);
            &self.words[i]
        }

        /// Whether message `n` gets the rare word: five of them, spread over the mailbox.
        fn is_rare(&self, n: usize) -> bool {
            let step = (self.messages / RARE_MESSAGES).max(1);
            n % step == step / 2 && n / step < RARE_MESSAGES
        }

        /// Message `n`: of `size` octets or so (otherwise its own, 4 to 20 KiB), with lines
        /// ending in `eol`.
        pub fn message(&self, n: usize, size: Option<usize>, eol: &'static str) -> Generated {
            let mut rng = Rng(SEED ^ (n as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
            let size = size.unwrap_or_else(|| rng.range(4096, 20480));
            let (first, last, domain) = (rng.pick(FIRST_NAMES), rng.pick(LAST_NAMES), rng.pick(DOMAINS));
            let mut subject = Vec::new();
            for i in 0..rng.range(3, 8) {
                let w = self.word(&mut rng);
                subject.push(if i == 0 { capitalized(w) } else { w.to_string() });
            }
            let header = format!(
                "From: {first} {last} <{}.{}@{domain}>{eol}To: Bench User <{ADDRESS}>{eol}Subject: {}{eol}\
                 Date: {} {} 2024 {:02}:{:02}:{:02} +0000{eol}Message-ID: <{n}.{:016x}@{domain}>{eol}\
                 MIME-Version: 1.0{eol}Content-Type: text/plain; charset=us-ascii{eol}\
                 Content-Transfer-Encoding: 7bit{eol}{eol}",
                first.to_lowercase(),
                last.to_lowercase(),
                subject.join(" "),
                1 + n % 28,
                MONTHS[n / 28 % 12],
                n % 24,
                n / 24 % 60,
                n / 7 % 60,
                rng.next(),
            );
            let mut text = Text { out: String::with_capacity(size + 256), column: 0, eol };
            text.line(&format!("Hello {},", rng.pick(FIRST_NAMES)));
            text.blank();
            text.line(&format!("Reference: ref-{:016x}, ticket {}", rng.next(), 100_000 + n));
            text.blank();
            let target = size.saturating_sub(header.len() + 40);
            let rare_at = self.is_rare(n).then(|| rng.below(150));
            let mut count = 0;
            'paragraphs: while text.out.len() < target {
                for _ in 0..rng.range(2, 6) {
                    let words = rng.range(4, 18);
                    for i in 0..words {
                        let w = if rare_at == Some(count) {
                            RARE
                        } else if rng.below(120) == 0 {
                            &self.jargon[rng.below(self.jargon.len())]
                        } else {
                            self.word(&mut rng)
                        };
                        count += 1;
                        let mut w = if i == 0 { capitalized(w) } else { w.to_string() };
                        if i + 1 == words {
                            w.push(if rng.below(12) == 0 { '?' } else { '.' });
                        } else if rng.below(10) == 0 {
                            w.push(',');
                        }
                        text.word(&w);
                    }
                    if text.out.len() >= target {
                        break 'paragraphs;
                    }
                }
                text.blank();
            }
            text.blank();
            text.line("Regards,");
            text.line(first);
            let body = text.out.to_ascii_lowercase();
            let (rare, common) = (body.contains(RARE), body.contains(COMMON));
            let mut bytes = header.into_bytes();
            bytes.extend_from_slice(text.out.as_bytes());
            Generated { bytes, rare, common }
        }
    }

    /// What loading a mailbox took and what it holds.
    struct Loaded {
        folder_id: u64,
        secs: f64,
        bytes: u64,
        rare: usize,
        common: usize,
    }

    /// Appends every message of `corpus` to the account's INBOX, [`BATCH`] per AppendAll,
    /// [`STREAMS`] calls at once.
    async fn load(server: &Server, account_id: u64, corpus: Arc<Corpus>) -> anyhow::Result<Loaded> {
        let total = corpus.messages;
        let next = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let found = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let folder_id = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..STREAMS {
            let channel = Channel::from_shared(server.grpc.clone())?.connect().await?;
            let (next, done, bytes, found, corpus, folder_id) =
                (next.clone(), done.clone(), bytes.clone(), found.clone(), corpus.clone(), folder_id.clone());
            tasks.spawn(async move {
                let mut client = MailboxClient::new(channel);
                loop {
                    let first = next.fetch_add(BATCH, Relaxed);
                    if first >= total {
                        return anyhow::Ok(());
                    }
                    let last = (first + BATCH).min(total);
                    let corpus = corpus.clone();
                    let generated = tokio::task::spawn_blocking(move || {
                        (first..last).map(|n| corpus.message(n, None, "\r\n")).collect::<Vec<_>>()
                    })
                    .await?;
                    let mut requests = Vec::with_capacity(2 * generated.len());
                    for m in generated {
                        bytes.fetch_add(m.bytes.len() as u64, Relaxed);
                        found[0].fetch_add(usize::from(m.rare), Relaxed);
                        found[1].fetch_add(usize::from(m.common), Relaxed);
                        requests.push(AppendRequest {
                            part: Some(append_request::Part::Header(AppendHeader {
                                account_id,
                                folder: Some(FolderRef::name("INBOX")),
                                flags: vec![],
                                internal_date: 0,
                                size_hint: m.bytes.len() as u64,
                                ..Default::default()
                            })),
                        });
                        requests.push(AppendRequest { part: Some(append_request::Part::Chunk(m.bytes)) });
                    }
                    let appended = tokio::time::timeout(
                        Duration::from_secs(300),
                        client.append_all(futures::stream::iter(requests)),
                    )
                    .await
                    .context("AppendAll: no answer within 300 s")?
                    .with_context(|| format!("AppendAll of messages {first}..{last}"))?
                    .into_inner()
                    .appended;
                    if appended.len() != last - first {
                        bail!("AppendAll of {} messages answered {}", last - first, appended.len());
                    }
                    folder_id.store(appended[0].folder_id, Relaxed);
                    done.fetch_add(last - first, Relaxed);
                }
            });
        }
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.tick().await;
        loop {
            tokio::select! {
                joined = tasks.join_next() => match joined {
                    Some(r) => r??,
                    None => break,
                },
                _ = tick.tick() => {
                    let n = done.load(Relaxed);
                    println!(
                        "  loading: {n}/{total} after {:.0} s ({:.0} messages/s)",
                        start.elapsed().as_secs_f64(),
                        n as f64 / start.elapsed().as_secs_f64()
                    );
                }
            }
        }
        Ok(Loaded {
            folder_id: folder_id.load(Relaxed),
            secs: start.elapsed().as_secs_f64(),
            bytes: bytes.load(Relaxed),
            rare: found[0].load(Relaxed),
            common: found[1].load(Relaxed),
        })
    }

    /// Asks GetIndexStatus once a second until the index covers `want` messages, printing the
    /// progress every 10 s; fails when it has not moved for 180 s, or after an hour.
    async fn wait_indexed(admin: &mut AdminClient<Channel>, want: u64, since: Instant) -> anyhow::Result<IndexStatus> {
        let deadline = Instant::now() + Duration::from_secs(3600);
        let (mut last, mut moved, mut printed) = (u64::MAX, Instant::now(), Instant::now());
        loop {
            let status = admin.get_index_status(GetIndexStatusRequest { address: ADDRESS.into() }).await?.into_inner();
            if status.messages >= want && status.indexed >= status.messages {
                return Ok(status);
            }
            if status.indexed != last {
                (last, moved) = (status.indexed, Instant::now());
            } else if moved.elapsed() > Duration::from_secs(180) {
                bail!("the index has stayed at {} of {} messages for 180 s", status.indexed, status.messages);
            }
            if Instant::now() > deadline {
                bail!("the index covers only {} of {} messages after an hour", status.indexed, status.messages);
            }
            if printed.elapsed() >= Duration::from_secs(10) {
                println!(
                    "  index: {}/{} messages, {:.0} s since the load began",
                    status.indexed,
                    status.messages,
                    since.elapsed().as_secs_f64()
                );
                printed = Instant::now();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// An IMAP session with INBOX selected that times `UID SEARCH BODY`.
    struct Searcher {
        stream: tokio::io::BufStream<tokio::net::TcpStream>,
        line: Vec<u8>,
        next: u64,
    }

    impl Searcher {
        async fn connect(addr: &str) -> anyhow::Result<Self> {
            let mut c = ImapClient::connect(addr).await?;
            c.expect_ok("LOGIN user@bench.test bench", None).await?;
            c.expect_ok("SELECT INBOX", None).await?;
            Ok(Self { stream: c.into_stream(), line: Vec::with_capacity(1 << 20), next: 0 })
        }

        /// How long `UID SEARCH BODY word` took, to its tagged OK, and how many UIDs it answered.
        async fn search(&mut self, word: &str) -> anyhow::Result<(Duration, usize)> {
            self.next += 1;
            let tag = format!("s{}", self.next);
            let command = format!("{tag} UID SEARCH BODY {word}\r\n");
            let exchange = async {
                let start = Instant::now();
                self.stream.write_all(command.as_bytes()).await?;
                self.stream.flush().await?;
                let mut hits = 0;
                loop {
                    self.line.clear();
                    if self.stream.read_until(b'\n', &mut self.line).await? == 0 {
                        bail!("the server closed the connection");
                    }
                    if let Some(uids) = self.line.strip_prefix(b"* SEARCH") {
                        hits = String::from_utf8_lossy(uids).split_whitespace().count();
                    } else if let Some(rest) = self.line.strip_prefix(format!("{tag} ").as_bytes()) {
                        if !rest.starts_with(b"OK") {
                            bail!("{}", String::from_utf8_lossy(&self.line).trim_end());
                        }
                        return Ok((start.elapsed(), hits));
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(300), exchange)
                .await
                .with_context(|| format!("UID SEARCH BODY {word}: no answer within 300 s"))?
        }
    }

    /// Timed searches of one word.
    #[derive(Debug, Clone, Default)]
    struct Timed {
        /// The first search of the session (a warm-up), in ms.
        first: f64,
        /// The timed ones, sorted, in ms.
        samples: Vec<f64>,
        hits: usize,
        expected: usize,
        /// What the mailbox service said it answered from the index and read (SearchText
        /// called directly only).
        indexed: u32,
        scanned: u32,
    }

    impl Timed {
        /// The nearest-rank percentile `p` (0 to 1), in ms.
        fn percentile(&self, p: f64) -> f64 {
            let n = self.samples.len();
            if n == 0 {
                return f64::NAN;
            }
            self.samples[((p * n as f64).ceil() as usize).clamp(1, n) - 1]
        }

        fn median(&self) -> f64 {
            self.percentile(0.5)
        }

        fn p95(&self) -> f64 {
            self.percentile(0.95)
        }

        fn correct(&self) -> bool {
            self.hits == self.expected
        }
    }

    /// [`WARMUPS`] searches of `word` and then `runs` timed ones on a new session.
    async fn measure(addr: &str, word: &str, expected: usize, runs: usize) -> anyhow::Result<Timed> {
        let mut session = Searcher::connect(addr).await?;
        let mut timed = Timed { expected, ..Timed::default() };
        for i in 0..WARMUPS + runs {
            let (took, hits) = session.search(word).await?;
            let ms = took.as_secs_f64() * 1e3;
            if i == 0 {
                timed.first = ms;
                timed.hits = hits;
            } else if hits != timed.hits {
                println!("  WRONG: UID SEARCH BODY {word} answered {hits} UIDs, and {} before", timed.hits);
            }
            if i >= WARMUPS {
                timed.samples.push(ms);
            }
        }
        timed.samples.sort_by(f64::total_cmp);
        println!(
            "  UID SEARCH BODY {word}: {} UIDs{}; first {:.1} ms, then over {runs} runs median {:.1} ms, p95 {:.1} ms, \
             min {:.1} ms, max {:.1} ms",
            timed.hits,
            if timed.correct() { String::new() } else { format!(" (WRONG: {expected} messages contain it)") },
            timed.first,
            timed.median(),
            timed.p95(),
            timed.samples.first().copied().unwrap_or(f64::NAN),
            timed.samples.last().copied().unwrap_or(f64::NAN),
        );
        Ok(timed)
    }

    /// The same searches as [`measure`], through the mailbox service's SearchText directly
    /// (without the IMAP front-end): what the index costs, and whether it answered alone.
    async fn measure_grpc(
        server: &Server,
        account_id: u64,
        folder_id: u64,
        word: &str,
        expected: usize,
        runs: usize,
    ) -> anyhow::Result<Timed> {
        let mut client = MailboxClient::new(Channel::from_shared(server.grpc.clone())?.connect().await?)
            .max_decoding_message_size(64 << 20);
        let request = SearchTextRequest {
            account_id,
            folder_id,
            keys: vec![SearchTextKey { field: TextField::Body as i32, header: String::new(), needle: word.into() }],
        };
        let mut timed = Timed { expected, ..Timed::default() };
        for i in 0..WARMUPS + runs {
            let start = Instant::now();
            let response = client.search_text(request.clone()).await?.into_inner();
            let ms = start.elapsed().as_secs_f64() * 1e3;
            let hits = response.results.first().map_or(0, |r| r.uids.len());
            if i == 0 {
                (timed.first, timed.hits) = (ms, hits);
            }
            if i >= WARMUPS {
                timed.samples.push(ms);
                timed.indexed = timed.indexed.max(response.indexed);
                timed.scanned = timed.scanned.max(response.scanned);
            }
        }
        timed.samples.sort_by(f64::total_cmp);
        println!(
            "  SearchText (gRPC) {word}: {} UIDs{}, {} messages answered from the index and {} read; median {:.1} ms, \
             p95 {:.1} ms",
            timed.hits,
            if timed.hits == expected { String::new() } else { format!(" (WRONG: {expected} messages contain it)") },
            timed.indexed,
            timed.scanned,
            timed.median(),
            timed.p95(),
        );
        Ok(timed)
    }

    /// One backend's figures.
    #[derive(Debug, Clone, Default)]
    struct Figures {
        messages: usize,
        load_secs: f64,
        /// From the end of the load, and from its start, until the index covered every message.
        index_after_load: f64,
        index_since_start: f64,
        status: IndexStatus,
        rare: Timed,
        common: Timed,
        /// The same through SearchText directly.
        grpc: (Timed, Timed),
        /// A rebuild from scratch (Admin/Reindex), in seconds.
        reindex: Option<f64>,
        /// A second replica's (NATS): its first search, which brings its copy of the index,
        /// and then its timed ones.
        replica: Option<(Timed, Timed)>,
    }

    fn mib(bytes: u64) -> f64 {
        bytes as f64 / (1024.0 * 1024.0)
    }

    fn print_status(status: &IndexStatus) {
        println!(
            "  index {:.1} MiB for {:.1} MiB of mail ({:.1}%); {} of {} messages indexed, {} skipped",
            mib(status.index_bytes),
            mib(status.message_bytes),
            ratio(status) * 100.0,
            status.indexed,
            status.messages,
            status.skipped
        );
    }

    fn ratio(status: &IndexStatus) -> f64 {
        status.index_bytes as f64 / status.message_bytes.max(1) as f64
    }

    /// Loads a mailbox of `messages` on `server`, waits for its index, and times the searches.
    async fn backend(server: &Server, messages: usize, runs: usize) -> anyhow::Result<Figures> {
        let (channel, account_id) = setup_user(server).await?;
        let corpus = Arc::new(Corpus::new(messages));
        let start = Instant::now();
        let loaded = load(server, account_id, corpus).await?;
        let loaded_at = Instant::now();
        println!(
            "  loaded {messages} messages ({:.0} MiB, mean {:.1} KiB) through AppendAll in {:.1} s ({:.0} messages/s, \
             {STREAMS} calls of {BATCH} at once); {} contain {RARE:?}, {} ({:.0}%) contain {COMMON:?}",
            mib(loaded.bytes),
            loaded.bytes as f64 / messages as f64 / 1024.0,
            loaded.secs,
            messages as f64 / loaded.secs,
            loaded.rare,
            loaded.common,
            loaded.common as f64 * 100.0 / messages as f64
        );
        let mut admin = AdminClient::new(channel);
        let status = wait_indexed(&mut admin, messages as u64, start).await?;
        let (index_after_load, index_since_start) = (loaded_at.elapsed().as_secs_f64(), start.elapsed().as_secs_f64());
        println!(
            "  the index covers all {messages} messages {index_after_load:.1} s after the load ended, \
             {index_since_start:.1} s after it began ({:.0} messages/s)",
            messages as f64 / index_since_start
        );
        print_status(&status);
        let rare = measure(&server.imap, RARE, loaded.rare, runs).await?;
        let common = measure(&server.imap, COMMON, loaded.common, runs).await?;
        let grpc = (
            measure_grpc(server, account_id, loaded.folder_id, RARE, loaded.rare, runs).await?,
            measure_grpc(server, account_id, loaded.folder_id, COMMON, loaded.common, runs).await?,
        );
        Ok(Figures {
            grpc,
            messages,
            load_secs: loaded.secs,
            index_after_load,
            index_since_start,
            status,
            rare,
            common,
            ..Figures::default()
        })
    }

    /// Rebuilds the account's index from scratch through Admin/Reindex: seconds taken.
    async fn reindex(server: &Server) -> anyhow::Result<f64> {
        let mut admin = AdminClient::new(Channel::from_shared(server.grpc.clone())?.connect().await?);
        let start = Instant::now();
        let mut progress = admin.reindex(ReindexRequest { address: ADDRESS.into() }).await?.into_inner();
        let mut printed = Instant::now();
        loop {
            let Some(p) = tokio::time::timeout(Duration::from_secs(600), progress.message())
                .await
                .context("Reindex: no progress within 600 s")??
            else {
                bail!("Reindex ended without finishing");
            };
            if p.finished {
                let secs = start.elapsed().as_secs_f64();
                println!(
                    "  rebuilt from scratch (Admin/Reindex) in {secs:.1} s: {} messages, {:.0} messages/s, {:.1} MiB/s",
                    p.done,
                    p.done as f64 / secs,
                    mib(p.bytes) / secs
                );
                return Ok(secs);
            }
            if printed.elapsed() >= Duration::from_secs(10) {
                println!("  reindex: {}/{} after {:.0} s", p.done, p.total, start.elapsed().as_secs_f64());
                printed = Instant::now();
            }
        }
    }

    /// SMTP ingest with indexing off and on.
    #[derive(Debug, Clone, Copy, Default)]
    struct Ingest {
        /// Messages/s, means of two runs, off then on.
        rate: [f64; 2],
        /// Tern's CPU per message (ms) to the last one readable, off then on, and its user CPU
        /// alone (the system time of the disk's writes drifts from run to run on a virtual
        /// machine; the user time is the work of delivery and indexing).
        cpu: [f64; 2],
        user: [f64; 2],
        /// With indexing on: seconds from the last message readable to the index covering all,
        /// and Tern's CPU per message (ms) including that.
        catch_up: f64,
        cpu_indexed: f64,
    }

    /// smtp-source against `tern dev` with `[search] enabled = false` and `true`, in the order
    /// off, on, on, off (the means of each; see [`smtp_sieve`] for why), sending a generated
    /// message of [`INGEST_SIZE`] octets.
    async fn ingest(messages: usize, sessions: usize) -> anyhow::Result<Ingest> {
        const ORDER: [bool; 4] = [false, true, true, false];
        let corpus = Corpus::new(messages.max(RARE_MESSAGES));
        // smtp-source's -F wants LF line ends, and sends each line with CRLF.
        let message = corpus.message(corpus.messages, Some(INGEST_SIZE), "\n");
        let dir = tempfile::TempDir::new()?;
        let file = dir.path().join("message.eml");
        std::fs::write(&file, &message.bytes)?;
        let size = message.bytes.len() + message.bytes.iter().filter(|b| **b == b'\n').count();
        let mut out = Ingest::default();
        for on in ORDER {
            flush_disk().await;
            let server = Server::start_with(&format!("[search]\nenabled = {on}\n")).await?;
            println!("indexing {}:", if on { "on" } else { "off" });
            let before = tree_cpu(server.pid());
            let rate = smtp_ingest_with(&server, messages, sessions, false, Some((&file, size))).await?;
            let cpu = tree_cpu(server.pid()) - before;
            println!("  CPU: tern {cpu}, per message {:.3} ms", cpu.total() / messages as f64 * 1e3);
            out.rate[usize::from(on)] += rate / 2.0;
            out.cpu[usize::from(on)] += cpu.total() / messages as f64 * 1e3 / 2.0;
            out.user[usize::from(on)] += cpu.user / messages as f64 * 1e3 / 2.0;
            if on {
                let stored = Instant::now();
                let mut admin = AdminClient::new(Channel::from_shared(server.grpc.clone())?.connect().await?);
                let status = wait_indexed(&mut admin, messages as u64, stored).await?;
                let all = tree_cpu(server.pid()) - before;
                let catch_up = stored.elapsed().as_secs_f64();
                println!(
                    "  the index covered all {messages} messages {catch_up:.2} s after the last was readable; \
                     CPU with that {:.3} ms per message",
                    all.total() / messages as f64 * 1e3
                );
                print_status(&status);
                out.catch_up += catch_up / 2.0;
                out.cpu_indexed += all.total() / messages as f64 * 1e3 / 2.0;
            }
        }
        Ok(out)
    }

    pub async fn run(w: Workload) -> anyhow::Result<()> {
        if w.messages < 100 || (w.nats_messages != 0 && w.nats_messages < 100) {
            bail!("--messages and --nats-messages are at least 100 (0 skips the distributed run)");
        }
        println!(
            "search benchmark: {} messages embedded, {} on NATS + S3; UID SEARCH BODY {RARE:?} (rare) and \
             {COMMON:?} (common), {WARMUPS} warm-ups and {} timed runs each",
            w.messages, w.nats_messages, w.runs
        );
        println!("\n== Embedded, {} messages ==", w.messages);
        let server = Server::start().await?;
        let mut embedded = backend(&server, w.messages, w.runs).await?;
        if w.reindex {
            embedded.reindex = Some(reindex(&server).await?);
            let mut admin = AdminClient::new(Channel::from_shared(server.grpc.clone())?.connect().await?);
            print_status(
                &admin.get_index_status(GetIndexStatusRequest { address: ADDRESS.into() }).await?.into_inner(),
            );
        }
        drop(server);

        let (mut same_size, mut distributed) = (None, None);
        if w.nats_messages > 0 {
            // A search's cost grows with the mailbox: NATS + S3 is compared with an embedded
            // mailbox of its own size.
            if w.nats_messages != w.messages {
                println!("\n== Embedded, {} messages (the size of the distributed mailbox) ==", w.nats_messages);
                let server = Server::start().await?;
                same_size = Some(backend(&server, w.nats_messages, w.runs).await?);
            }
            let nats = tokio::task::spawn_blocking(tern_testbed::Nats::start).await??;
            // Room for the bodies (12 KiB on average) and the index, with a margin: volumes of
            // 64 MB, at least the 8 the tests use.
            let volumes = ((w.nats_messages * 12 * 1024 * 3 / 2) / (64 << 20) + 1).max(8) as u32;
            let s3 = tokio::task::spawn_blocking(move || tern_testbed::SeaweedS3::start_holding(volumes)).await??;
            println!(
                "\n== NATS JetStream ({}) + SeaweedFS S3 ({}), {} messages ==",
                nats.url(),
                s3.endpoint(),
                w.nats_messages
            );
            let config = distributed_config(&nats, &s3, "search");
            let server = Server::start_with(&config).await?;
            let mut figures = backend(&server, w.nats_messages, w.runs).await?;
            // Another process on the same store: its first search brings its local copy of the
            // index from the object store.
            println!("  a second replica (another tern dev on the same NATS and S3):");
            let replica = Server::start_with(&config).await?;
            let rare = measure(&replica.imap, RARE, figures.rare.expected, w.runs).await?;
            let common = measure(&replica.imap, COMMON, figures.common.expected, w.runs).await?;
            figures.replica = Some((rare, common));
            distributed = Some(figures);
        }

        let ingest = if w.ingest > 0 {
            println!("\n== SMTP ingest, indexing off and on ==");
            Some(ingest(w.ingest, w.sessions).await?)
        } else {
            None
        };

        summary(&w, &embedded, same_size.as_ref(), distributed.as_ref(), ingest);
        Ok(())
    }

    fn verdict(ok: bool) -> &'static str {
        if ok { "met" } else { "NOT met" }
    }

    /// The summary table: a column per mailbox (embedded, embedded of the distributed one's size
    /// when that differs, NATS + S3), and the ratio of NATS + S3 to the embedded mailbox of the
    /// same size.
    fn summary(w: &Workload, e: &Figures, same: Option<&Figures>, d: Option<&Figures>, ingest: Option<Ingest>) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!("\n== Summary ({cores} cores, load average {}) ==", load_average());
        let mut columns: Vec<(String, &Figures)> = vec![(format!("embedded {}", e.messages), e)];
        if let Some(s) = same {
            columns.push((format!("embedded {}", s.messages), s));
        }
        if let Some(d) = d {
            columns.push((format!("NATS+S3 {}", d.messages), d));
        }
        let base = same.unwrap_or(e);
        let mut header = format!("  {:<36}", "");
        for (name, _) in &columns {
            header += &format!(" {name:>16}");
        }
        println!("{header} {:>8}  target", if d.is_some() { "NATS/emb" } else { "" });
        type Value<'a> = &'a dyn Fn(&Figures) -> String;
        type Number<'a> = &'a dyn Fn(&Figures) -> f64;
        let row = |name: &str, value: Value, ratio: Option<Number>, target: &str| {
            let mut line = format!("  {name:<36}");
            for (_, f) in &columns {
                line += &format!(" {:>16}", value(f));
            }
            let r = match (ratio, d) {
                (Some(r), Some(d)) => format!("{:.2}x", r(d) / r(base)),
                _ => String::new(),
            };
            println!("{line} {r:>8}  {target}");
        };
        row("messages/s loaded (AppendAll)", &|f| format!("{:.0}", f.messages as f64 / f.load_secs), None, "");
        row("index complete, after the load", &|f| format!("{:.1} s", f.index_after_load), None, "");
        row(
            "index build, from the load's start",
            &|f| format!("{:.0} s {:.0}/s", f.index_since_start, f.messages as f64 / f.index_since_start),
            None,
            "",
        );
        row(
            "rebuild from scratch (Reindex)",
            &|f| f.reindex.map_or("-".into(), |s| format!("{s:.0} s {:.0}/s", f.messages as f64 / s)),
            None,
            "",
        );
        type Pick = fn(&Figures) -> &Timed;
        let words: [(&str, Pick, Pick, f64); 2] =
            [("rare", |f| &f.rare, |f| &f.grpc.0, 50.0), ("common", |f| &f.common, |f| &f.grpc.1, 300.0)];
        for (word, imap, grpc, target) in words {
            let median = |f: &Figures| imap(f).median();
            let p95 = |f: &Figures| imap(f).p95();
            let mut goal = format!("< {target:.0} ms embedded: {}", verdict(median(e) < target));
            if d.is_some() {
                let r = d.map_or(0.0, median) / median(base);
                goal += &format!("; NATS < 2x: {}", verdict(r < 2.0));
            }
            row(&format!("UID SEARCH BODY {word}: median"), &|f| format!("{:.1} ms", median(f)), Some(&median), &goal);
            row(&format!("UID SEARCH BODY {word}: p95"), &|f| format!("{:.1} ms", p95(f)), Some(&p95), "");
            let correct = columns.iter().all(|(_, f)| imap(f).correct() && grpc(f).hits == grpc(f).expected);
            row(
                "  UIDs answered (messages with it)",
                &|f| format!("{} ({})", imap(f).hits, imap(f).expected),
                None,
                if correct { "exact" } else { "WRONG" },
            );
            row(
                "  SearchText gRPC median, read",
                &|f| format!("{:.1} ms, {}", grpc(f).median(), grpc(f).scanned),
                Some(&|f| grpc(f).median()),
                "(without IMAP; messages read: 0 = index alone)",
            );
        }
        if d.is_some() {
            let replica = |f: &Figures, v: &dyn Fn(&(Timed, Timed)) -> String| f.replica.as_ref().map_or("-".into(), v);
            row("2nd replica: first search", &|f| replica(f, &|r| format!("{:.1} ms", r.0.first)), None, "");
            row(
                "2nd replica: rare/common median",
                &|f| replica(f, &|r| format!("{:.1}/{:.1} ms", r.0.median(), r.1.median())),
                None,
                "",
            );
        }
        row("index bytes / message bytes", &|f| format!("{:.1}%", ratio(&f.status) * 100.0), None, "");
        if let Some(i) = ingest {
            let r = i.rate[1] / i.rate[0];
            println!(
                "  {:<36} {:>16}  off {:.0}/s, on {:.0}/s ({} messages of {} KiB, {} sessions, mean of 2 runs each); \
                 >= 0.70: {}",
                "SMTP ingest, indexing on/off",
                format!("{r:.2}x"),
                i.rate[0],
                i.rate[1],
                w.ingest,
                INGEST_SIZE / 1024,
                w.sessions,
                verdict(r >= 0.70)
            );
            println!(
                "  {:<36} {:>16}  off {:.3} ms, on {:.3} ms to readable, {:.3} ms with the index caught up \
                 ({:.2} s after)",
                "tern CPU per message, indexing",
                format!("{:+.0}%", (i.cpu_indexed / i.cpu[0] - 1.0) * 100.0),
                i.cpu[0],
                i.cpu[1],
                i.cpu_indexed,
                i.catch_up
            );
            println!(
                "  {:<36} {:>16}  off {:.3} ms, on {:.3} ms to readable",
                "tern user CPU per message, indexing",
                format!("{:+.0}%", (i.user[1] / i.user[0] - 1.0) * 100.0),
                i.user[0],
                i.user[1],
            );
        }
    }
}

#[cfg(test)]
mod tests {
    /// The benchmark's script compiles, and keeps the benchmark's mail (in INBOX, flagged),
    /// having evaluated its thirty rules.
    #[test]
    fn the_bench_script_compiles_and_keeps_the_bench_mail() {
        let body = format!(
            "From: Bench <bench@example.net>\r\nTo: <user@bench.test>\r\nSubject: paced\r\n\r\n{}",
            "The quick brown fox jumps over the lazy dog, again and again.\r\n".repeat(64)
        );
        let lines =
            tern_sieve::describe_run(super::BENCH_SCRIPT, body.as_bytes(), "bench@example.net", "user@bench.test", &[]);
        assert_eq!(lines, ["store INBOX flags $filtered"]);
        assert_eq!(super::BENCH_SCRIPT.lines().filter(|l| l.starts_with("if ")).count(), 30);
    }

    /// The search benchmark's mailbox: the same every time, 4 to 20 KiB a message, the rare
    /// word in exactly five messages and the common one in most.
    #[test]
    fn the_search_corpus_has_a_rare_and_a_common_word() {
        let corpus = super::search::Corpus::new(1000);
        let messages: Vec<_> = (0..1000).map(|n| corpus.message(n, None, "\r\n")).collect();
        assert_eq!(messages.iter().filter(|m| m.rare).count(), 5);
        assert!(messages.iter().filter(|m| m.common).count() > 600);
        assert!(messages.iter().all(|m| (4000..21_000).contains(&m.bytes.len())));
        assert_eq!(super::search::Corpus::new(1000).message(7, None, "\r\n").bytes, messages[7].bytes);
    }
}
