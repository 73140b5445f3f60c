//! `cargo xtask bench pop3`: POP3 sessions against `tern dev` and, with `--peer dovecot`, then
//! against a Dovecot of the benchmark's own on loopback, with messages retrieved per second
//! and the servers' CPU time per message side by side.
//!
//! Each account's INBOX is filled with the same messages on both servers, over IMAP APPEND,
//! before the clock starts. One client per account then runs whole sessions one after another
//! (a POP3 server locks the maildrop for a session, so the accounts are what runs side by
//! side): connect, USER/PASS, STAT, LIST, UIDL, RETR of every message, QUIT and the close, no
//! DELE, so every session finds the same maildrop. The run ends after `sessions` sessions or
//! `seconds`, whichever comes first. Every session logs in afresh; Dovecot keeps its passwords
//! in PLAIN in a passwd-file, Tern argon2id hashes behind its cache of verified logins, and an
//! unmeasured session per account first fills that cache (and both servers' indexes).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tern_proto::v1::{CreateAccountRequest, CreateDomainRequest, Password, admin_client::AdminClient, password};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

use super::dovecot::{Dovecot, Peer, Protocols};

const PASSWORD: &str = "bench";

/// What the benchmark is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Accounts, each with `messages` messages of 4 KiB; one client per account.
    pub accounts: usize,
    pub messages: usize,
    /// The count bound: sessions over all clients.
    pub sessions: usize,
    /// The time bound: no session starts after it.
    pub seconds: u64,
}

/// The figures of one server's run.
struct Figures {
    retrieved: usize,
    octets: usize,
    sessions: usize,
    secs: f64,
    slowest: Duration,
    server_cpu: f64,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.retrieved as f64 / self.secs
    }

    fn cpu_per_message(&self) -> f64 {
        self.server_cpu / self.retrieved.max(1) as f64
    }
}

pub async fn run(workload: Workload, peer: Peer) -> anyhow::Result<()> {
    let Workload { accounts, messages, sessions, seconds } = workload;
    if accounts == 0 || sessions == 0 || seconds == 0 {
        bail!("need at least one account, one session and one second");
    }
    // Installed first, so that a missing package fails the run before any measurement.
    if peer == Peer::Dovecot {
        super::dovecot::install(Protocols::ImapAndPop3)?;
    }
    let users: Vec<String> = (0..accounts).map(|i| format!("pop{i}@bench.test")).collect();
    // The same messages on every server: message n of account i is `message(i * messages + n)`.
    let mailboxes: Vec<Vec<Vec<u8>>> =
        (0..accounts).map(|i| (0..messages).map(|n| super::message(i * messages + n)).collect()).collect();
    println!(
        "pop3 benchmark: {accounts} accounts x {messages} messages of 4 KiB, {accounts} concurrent clients (one per \
         account) running sessions of USER/PASS, STAT, LIST, UIDL, RETR all, QUIT (plain TCP, TCP_NODELAY), \
         {sessions} sessions or {seconds} s, whichever first"
    );

    let server = super::Server::start().await?;
    create_accounts(&server, &users).await?;
    seed(&server.imap, &users, &mailboxes).await.context("tern: seeding the maildrops")?;
    let (rss_idle, _) = server.memory();
    let tern = measure("tern", &server.pop3, server.pid(), &users, workload).await?;
    let (rss, hwm) = server.memory();
    println!(
        "           tern dev memory: idle {} MiB, after {} MiB, peak RSS {} MiB",
        rss_idle / 1024,
        rss / 1024,
        hwm / 1024
    );
    drop(server);

    if peer == Peer::Dovecot {
        let names: Vec<&str> = users.iter().map(String::as_str).collect();
        let dovecot = Dovecot::start(Protocols::ImapAndPop3, &names, PASSWORD)?;
        seed(&dovecot.imap, &users, &mailboxes).await.context("dovecot: seeding the maildrops")?;
        let pop3 = dovecot.pop3.clone().context("Dovecot was started without POP3")?;
        let theirs = measure("dovecot", &pop3, dovecot.pid(), &users, workload).await?;
        drop(dovecot);
        println!(
            "  tern / dovecot:  messages/s {:.2}x   server CPU per message {:.2}x",
            tern.rate() / theirs.rate(),
            tern.cpu_per_message() / theirs.cpu_per_message()
        );
    }
    Ok(())
}

/// The POP3 accounts on `tern dev`, all with the password [`PASSWORD`].
async fn create_accounts(server: &super::Server, users: &[String]) -> anyhow::Result<()> {
    let channel = Channel::from_shared(server.grpc.clone())?.connect().await?;
    let mut admin = AdminClient::new(channel);
    admin.create_domain(CreateDomainRequest { name: "bench.test".into(), ..Default::default() }).await?;
    for user in users {
        admin
            .create_account(CreateAccountRequest {
                address: user.clone(),
                password: Some(Password { value: Some(password::Value::Plain(PASSWORD.into())) }),
                ..Default::default()
            })
            .await?;
    }
    Ok(())
}

/// Appends each account's messages to its INBOX over IMAP, the accounts side by side.
async fn seed(imap: &str, users: &[String], mailboxes: &[Vec<Vec<u8>>]) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for (user, messages) in users.iter().zip(mailboxes) {
        let (imap, user, messages) = (imap.to_string(), user.clone(), messages.clone());
        tasks.spawn(async move { super::imap_sessions::seed_inbox(&imap, &user, PASSWORD, &messages).await });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

/// Runs the sessions against `addr` and prints the figures of server `name`, whose processes
/// are `pid` and everything below it.
async fn measure(name: &str, addr: &str, pid: u32, users: &[String], workload: Workload) -> anyhow::Result<Figures> {
    // One unmeasured session per account.
    for user in users {
        session(addr, user, workload.messages).await.with_context(|| format!("{name}: the warm-up session"))?;
    }
    let load_before = super::load_average();
    let (server_before, client_before) = (super::tree_cpu(pid), super::self_cpu());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(workload.seconds);
    let started = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for user in users {
        let (addr, user, started) = (addr.to_string(), user.clone(), started.clone());
        tasks.spawn(async move {
            let (mut retrieved, mut octets, mut sessions, mut slowest) = (0, 0, 0, Duration::ZERO);
            while Instant::now() < deadline && started.fetch_add(1, Ordering::Relaxed) < workload.sessions {
                let t = Instant::now();
                let (n, o) = session(&addr, &user, workload.messages).await?;
                slowest = slowest.max(t.elapsed());
                (retrieved, octets, sessions) = (retrieved + n, octets + o, sessions + 1);
            }
            anyhow::Ok((retrieved, octets, sessions, slowest))
        });
    }
    let mut figures =
        Figures { retrieved: 0, octets: 0, sessions: 0, secs: 0.0, slowest: Duration::ZERO, server_cpu: 0.0 };
    while let Some(r) = tasks.join_next().await {
        let (retrieved, octets, sessions, slowest) = r?.with_context(|| format!("{name}: a session failed"))?;
        figures.retrieved += retrieved;
        figures.octets += octets;
        figures.sessions += sessions;
        figures.slowest = figures.slowest.max(slowest);
    }
    figures.secs = start.elapsed().as_secs_f64();
    // Dovecot ends a process per session; the master must have waited for the last ones for
    // their CPU time to be counted, which it does within moments.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let server_cpu = super::tree_cpu(pid) - server_before;
    figures.server_cpu = server_cpu.total();
    let client_cpu = super::self_cpu() - client_before;
    let load_after = super::load_average();
    let per = |cpu: super::Cpu| cpu.total() * 1e6 / figures.retrieved.max(1) as f64;
    println!(
        "  {name:<8} {:>8.0} messages/s retrieved  ({} messages, {:.1} MiB, in {:.2} s); {:.1} sessions/s (mean {:.0} \
         ms, slowest {} ms, each with a login)",
        figures.rate(),
        figures.retrieved,
        figures.octets as f64 / (1024.0 * 1024.0),
        figures.secs,
        figures.sessions as f64 / figures.secs,
        figures.secs * 1000.0 * users.len() as f64 / figures.sessions.max(1) as f64,
        figures.slowest.as_millis()
    );
    println!(
        "           server CPU {server_cpu} = {:.0} us/message; client CPU {client_cpu} = {:.0} us/message; load \
         average {load_before} before, {load_after} after",
        per(server_cpu),
        per(client_cpu)
    );
    Ok(figures)
}

/// One POP3 session of `user`, whose maildrop holds `expect` messages: login, STAT, LIST,
/// UIDL, RETR of every message, QUIT, and the close (after which the maildrop is free for the
/// next session). Returns the messages and octets retrieved.
async fn session(addr: &str, user: &str, expect: usize) -> anyhow::Result<(usize, usize)> {
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut c = Client::connect(addr).await?;
        c.command(&format!("USER {user}")).await?;
        c.command(&format!("PASS {PASSWORD}")).await?;
        let stat = c.command("STAT").await?;
        let count: usize = stat.split(' ').nth(1).and_then(|n| n.parse().ok()).context("STAT answer")?;
        if count != expect {
            bail!("{user}: STAT says {count} messages, expected {expect}");
        }
        for listing in ["LIST", "UIDL"] {
            c.command(listing).await?;
            let (lines, _) = c.data().await?;
            if lines != count {
                bail!("{user}: {listing} listed {lines} messages, expected {count}");
            }
        }
        let mut octets = 0;
        for n in 1..=count {
            c.command(&format!("RETR {n}")).await?;
            let (_, got) = c.data().await?;
            if got < 4096 {
                bail!("{user}: RETR {n} sent {got} octets, expected at least 4096");
            }
            octets += got;
        }
        c.command("QUIT").await?;
        let mut rest = Vec::new();
        c.stream.read_to_end(&mut rest).await.context("the POP3 server did not close after QUIT")?;
        Ok((count, octets))
    })
    .await
    .with_context(|| format!("{user}: the session took over 60 s"))?
}

/// A minimal POP3 client for the load generator: status lines and multi-line data, checked.
struct Client {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
    line: Vec<u8>,
}

impl Client {
    async fn connect(addr: &str) -> anyhow::Result<Self> {
        let tcp = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
        tcp.set_nodelay(true)?;
        let mut c = Self { stream: tokio::io::BufReader::with_capacity(64 * 1024, tcp), line: Vec::new() };
        c.status().await.context("greeting")?;
        Ok(c)
    }

    async fn read_line(&mut self) -> anyhow::Result<()> {
        self.line.clear();
        let n = self.stream.read_until(b'\n', &mut self.line).await?;
        if n == 0 || !self.line.ends_with(b"\r\n") {
            bail!("the POP3 server closed the connection or sent a line without CRLF");
        }
        Ok(())
    }

    /// Reads a status line; an `-ERR` is an error.
    async fn status(&mut self) -> anyhow::Result<String> {
        self.read_line().await?;
        let line = String::from_utf8_lossy(&self.line[..self.line.len() - 2]).into_owned();
        if !line.starts_with("+OK") {
            bail!("POP3 server answered {line:?}");
        }
        Ok(line)
    }

    /// Sends a command and reads its status line.
    async fn command(&mut self, command: &str) -> anyhow::Result<String> {
        self.stream.get_mut().write_all(format!("{command}\r\n").as_bytes()).await?;
        self.status().await.with_context(|| command.split(' ').next().unwrap_or_default().to_string())
    }

    /// Reads multi-line data up to the terminating dot; returns its lines and octets.
    async fn data(&mut self) -> anyhow::Result<(usize, usize)> {
        let (mut lines, mut octets) = (0, 0);
        loop {
            self.read_line().await?;
            if self.line == b".\r\n" {
                return Ok((lines, octets));
            }
            lines += 1;
            octets += self.line.len();
        }
    }
}
