//! `cargo xtask bench`: load generators that run against a real `tern` process (release
//! build) on loopback, with its own temporary data directory and free ports, and report
//! throughput and the server's memory.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Subcommand;
use tern_proto::v1::{
    CreateAccountRequest, CreateDomainRequest, DeliverEnvelope, DeliverRequest, DeliveryStatus, FetchBodyRequest,
    FolderRef, Password, SelectRequest, admin_client::AdminClient, deliver_request, mailbox_client::MailboxClient,
    password,
};
use tonic::transport::Channel;

#[derive(Debug, Subcommand)]
pub enum Which {
    /// Deliveries/s (4 KiB, durable) with 1 and 16 clients, fetches/s, and server memory.
    Mailbox {
        /// Deliveries per concurrency level.
        #[arg(long, default_value_t = 5000)]
        messages: usize,
    },
}

pub fn run(which: Which) -> anyhow::Result<()> {
    crate::run("cargo", &["build", "--release", "-p", "tern"])?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match which {
        Which::Mailbox { messages } => rt.block_on(mailbox(messages)),
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A `tern dev` process that is killed when dropped.
struct Server {
    child: Child,
    _dir: tempfile::TempDir,
    grpc: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::TempDir::new()?;
        let (grpc_port, http_port) = (free_port()?, free_port()?);
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| crate::workspace_root().join("target"));
        let bin = target.join("release/tern");
        let child = Command::new(&bin)
            .args([
                "dev",
                "--grpc-listen",
                &format!("127.0.0.1:{grpc_port}"),
                "--http-listen",
                &format!("127.0.0.1:{http_port}"),
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let server = Self { child, _dir: dir, grpc: format!("http://127.0.0.1:{grpc_port}") };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Channel::from_shared(server.grpc.clone())?.connect().await.is_err() {
            if Instant::now() > deadline {
                bail!("tern dev did not start listening on {}", server.grpc);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(server)
    }

    /// Resident and peak resident memory of the server, in KiB, from /proc.
    fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
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
}

/// A 4 KiB message, different for every `n` so that no two share a body object.
fn message(n: usize) -> Vec<u8> {
    let mut m = format!(
        "From: bench@example.net\r\nTo: user@bench.test\r\nSubject: bench {n}\r\nMessage-ID: <{n}@bench>\r\n\r\n"
    )
    .into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    while m.len() + line.len() <= 4096 {
        m.extend_from_slice(line);
    }
    m.resize(4096, b'.');
    m
}

async fn deliver(client: &mut MailboxClient<Channel>, body: Vec<u8>) -> anyhow::Result<()> {
    let reqs = vec![
        DeliverRequest {
            part: Some(deliver_request::Part::Envelope(DeliverEnvelope {
                mail_from: "bench@example.net".into(),
                recipients: vec!["user@bench.test".into()],
                remote_ip: "127.0.0.1".into(),
                size_hint: body.len() as u64,
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
    let selected = client
        .select(SelectRequest { account_id: account.id, folder: Some(FolderRef::name("INBOX")) })
        .await?
        .into_inner();
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
        let account_id = account.id;
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
