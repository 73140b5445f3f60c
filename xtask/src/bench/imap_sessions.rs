//! `cargo xtask bench imap --peer dovecot`: the same persistent-session IMAP workload against
//! `tern dev` and then a Dovecot of the benchmark's own, one after the other on loopback, with
//! commands per second and the servers' CPU time per command side by side.
//!
//! Every session logs in and selects INBOX once, before the clock starts, and stays logged in:
//! the benchmark measures the commands of established sessions, not logins. Each session then
//! repeats one round of commands on the shared INBOX: the flags of every message, headers and
//! bodies of seeded messages, a keyword set and cleared, and a message appended, marked
//! \Deleted and expunged, so the mailbox stays at the seeded size give or take one message per
//! session. The client writes each command in one write with TCP_NODELAY, reads the replies
//! through a buffer and never sleeps, so that the servers, not the client, are the limit; its
//! own CPU time is reported to show how much of the machine it took.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use super::{
    dovecot::{Dovecot, Peer, Protocols},
    imap_client::{ImapClient, Reply},
};

const USER: &str = "user@bench.test";
const PASSWORD: &str = "bench";

/// What the workload is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Sessions at once, all on the one INBOX.
    pub sessions: usize,
    /// Messages seeded into INBOX before the clock starts; the FETCHes and STOREs pick from
    /// their UIDs (1 to `messages`, since both servers number a fresh INBOX from 1).
    pub messages: usize,
    /// The time bound.
    pub seconds: u64,
    /// The count bound: commands over all sessions, after which no session starts a round.
    pub commands: u64,
}

/// Octets of every message, seeded or appended.
const SIZE: usize = 4096;

/// The kinds of command in a round, in the order the report lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    FetchFlags,
    FetchHeader,
    FetchBody,
    StoreKeyword,
    ClearKeyword,
    Append,
    StoreDeleted,
    Expunge,
}

const KINDS: [Kind; 8] = [
    Kind::FetchFlags,
    Kind::FetchHeader,
    Kind::FetchBody,
    Kind::StoreKeyword,
    Kind::ClearKeyword,
    Kind::Append,
    Kind::StoreDeleted,
    Kind::Expunge,
];

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::FetchFlags => "FETCH 1:* (UID FLAGS)",
            Kind::FetchHeader => "UID FETCH x BODY.PEEK[HEADER]",
            Kind::FetchBody => "UID FETCH x BODY.PEEK[]",
            Kind::StoreKeyword => "UID STORE x +FLAGS ($Foo)",
            Kind::ClearKeyword => "UID STORE x -FLAGS ($Foo)",
            Kind::Append => "APPEND INBOX {4096}",
            Kind::StoreDeleted => "UID STORE u +FLAGS.SILENT (\\Deleted)",
            Kind::Expunge => "EXPUNGE",
        }
    }

    fn index(self) -> usize {
        KINDS.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// Header and body fetches in a round, each of a different message.
const READS_PER_ROUND: usize = 3;

/// Commands in a round: the flags, the reads, the keyword set and cleared, and the append,
/// \Deleted and EXPUNGE of the appended message.
const ROUND: u64 = 1 + 2 * READS_PER_ROUND as u64 + 2 + 3;

/// Counts and times of one kind of command in one run.
#[derive(Debug, Clone, Copy, Default)]
struct KindStats {
    count: u64,
    errors: u64,
    total: Duration,
}

/// What one session, or the sum of a run's sessions, did.
#[derive(Debug, Clone, Default)]
struct Tally {
    kinds: [KindStats; KINDS.len()],
    /// The first few failed replies, to show what went wrong.
    errors: Vec<String>,
}

impl Tally {
    fn record(&mut self, kind: Kind, took: Duration, error: Option<String>) {
        let stats = &mut self.kinds[kind.index()];
        stats.count += 1;
        stats.total += took;
        if let Some(error) = error {
            stats.errors += 1;
            if self.errors.len() < 5 {
                self.errors.push(error);
            }
        }
    }

    fn add(&mut self, other: Tally) {
        for (mine, theirs) in self.kinds.iter_mut().zip(other.kinds) {
            mine.count += theirs.count;
            mine.errors += theirs.errors;
            mine.total += theirs.total;
        }
        for error in other.errors {
            if self.errors.len() < 5 {
                self.errors.push(error);
            }
        }
    }

    fn commands(&self) -> u64 {
        self.kinds.iter().map(|k| k.count).sum()
    }

    fn errors(&self) -> u64 {
        self.kinds.iter().map(|k| k.errors).sum()
    }
}

/// The figures of one server's run.
struct Figures {
    commands: u64,
    secs: f64,
    server_cpu: f64,
    tally: Tally,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.commands as f64 / self.secs
    }

    fn cpu_per_command(&self) -> f64 {
        self.server_cpu / self.commands.max(1) as f64
    }
}

/// The benchmark: Tern first, then the peer, each with a freshly seeded INBOX.
pub async fn run(workload: Workload, peer: Peer) -> anyhow::Result<()> {
    if workload.sessions == 0 || workload.messages == 0 || workload.seconds == 0 {
        bail!("need at least one session, one message and one second");
    }
    // Installed first, so that a missing package fails the run before any measurement.
    if peer == Peer::Dovecot {
        super::dovecot::install(Protocols::Imap)?;
    }
    let Workload { sessions, messages, seconds, commands } = workload;
    println!(
        "imap benchmark (persistent sessions): {sessions} sessions on one INBOX of {messages} messages of {SIZE} \
         octets (seeded by APPEND), each logged in and INBOX selected before the clock starts; rounds of \
         FETCH 1:* (UID FLAGS), {READS_PER_ROUND} x (UID FETCH x BODY.PEEK[HEADER], UID FETCH x BODY.PEEK[]), \
         UID STORE x +FLAGS ($Foo), UID STORE x -FLAGS ($Foo), APPEND, UID STORE u +FLAGS.SILENT (\\Deleted), \
         EXPUNGE; {seconds} s or {commands} commands, whichever first; TCP_NODELAY, no pipelining"
    );

    let server = super::Server::start().await?;
    super::setup_user(&server).await?;
    let tern = measure("tern", &server.imap, server.pid(), workload).await?;
    drop(server);

    let dovecot = match peer {
        Peer::Dovecot => {
            let dovecot = Dovecot::start(Protocols::Imap, &[USER], PASSWORD)?;
            let figures = measure("dovecot", &dovecot.imap, dovecot.pid(), workload).await?;
            drop(dovecot);
            Some(figures)
        }
        Peer::None => None,
    };
    if let Some(dovecot) = &dovecot {
        println!(
            "  tern / dovecot:  commands/s {:.2}x   server CPU per command {:.2}x",
            tern.rate() / dovecot.rate(),
            tern.cpu_per_command() / dovecot.cpu_per_command(),
        );
        println!("  mean latency per kind of command, tern / dovecot:");
        for kind in KINDS {
            let mean = |f: &Figures| {
                let s = f.tally.kinds[kind.index()];
                s.total.as_secs_f64() / s.count.max(1) as f64
            };
            println!("    {:<38} {:>6.2}x", kind.label(), mean(&tern) / mean(dovecot));
        }
    }
    // The figures are printed whatever happened; a failed command still fails the run, so that
    // no one takes the figures of a broken workload for a measurement.
    let errors = tern.tally.errors() + dovecot.as_ref().map_or(0, |d| d.tally.errors());
    if errors > 0 {
        bail!("{errors} commands failed (NO, BAD or a short reply); see above");
    }
    Ok(())
}

/// Seeds INBOX on `addr`, runs the sessions, and prints the figures of server `name`, whose
/// processes are `pid` and everything below it.
async fn measure(name: &str, addr: &str, pid: u32, workload: Workload) -> anyhow::Result<Figures> {
    let seed: Vec<Vec<u8>> = (0..workload.messages).map(super::message).collect();
    seed_inbox(addr, USER, PASSWORD, &seed).await.with_context(|| format!("{name}: seeding INBOX"))?;

    // Every session logs in, selects and does one round unmeasured, so that the clock starts on
    // established sessions whose first reads have warmed whatever the server caches.
    let mut setup = tokio::task::JoinSet::new();
    for w in 0..workload.sessions {
        let addr = addr.to_string();
        setup.spawn(async move {
            let mut session = Session::open(&addr, w, workload.messages).await?;
            let mut warm = Tally::default();
            session.round(&mut warm).await?;
            if let Some(error) = warm.errors.first() {
                bail!("the warm-up round failed: {error}");
            }
            anyhow::Ok(session)
        });
    }
    let mut sessions = Vec::with_capacity(workload.sessions);
    while let Some(r) = setup.join_next().await {
        sessions.push(r?.with_context(|| format!("{name}: opening a session"))?);
    }

    let load_before = super::load_average();
    let (server_before, client_before) = (super::tree_cpu(pid), super::self_cpu());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(workload.seconds);
    let started = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for mut session in sessions {
        let started = started.clone();
        tasks.spawn(async move {
            let mut tally = Tally::default();
            // A round is started only while both bounds allow all of it.
            while Instant::now() < deadline && started.fetch_add(ROUND, Ordering::Relaxed) + ROUND <= workload.commands
            {
                session.round(&mut tally).await?;
            }
            session.logout().await;
            anyhow::Ok(tally)
        });
    }
    let mut tally = Tally::default();
    while let Some(r) = tasks.join_next().await {
        tally.add(r?.with_context(|| format!("{name}: a session broke off"))?);
    }
    let secs = start.elapsed().as_secs_f64();
    let (server_cpu, client_cpu) = (super::tree_cpu(pid) - server_before, super::self_cpu() - client_before);
    let load_after = super::load_average();

    let figures = Figures { commands: tally.commands(), secs, server_cpu: server_cpu.total(), tally };
    let per = |cpu: super::Cpu| cpu.total() * 1e6 / figures.commands.max(1) as f64;
    println!(
        "  {name:<8} {:>8.0} commands/s  ({} commands in {secs:.2} s, {} failed)",
        figures.rate(),
        figures.commands,
        figures.tally.errors(),
    );
    println!(
        "           server CPU {server_cpu} = {:.0} us/command; client CPU {client_cpu} = {:.0} us/command; load \
         average {load_before} before, {load_after} after",
        per(server_cpu),
        per(client_cpu),
    );
    for kind in KINDS {
        let s = figures.tally.kinds[kind.index()];
        println!(
            "      {:<38} {:>8} x  mean {:>7.3} ms{}",
            kind.label(),
            s.count,
            s.total.as_secs_f64() * 1e3 / s.count.max(1) as f64,
            if s.errors > 0 { format!("  {} FAILED", s.errors) } else { String::new() }
        );
    }
    for error in &figures.tally.errors {
        println!("      failed: {error}");
    }
    Ok(figures)
}

/// Logs in as `user` on `addr` and appends `messages` to INBOX, which must be empty: the
/// servers must number them 1, 2, ... (APPENDUID), since the workload picks UIDs from that
/// range.
pub(super) async fn seed_inbox(addr: &str, user: &str, password: &str, messages: &[Vec<u8>]) -> anyhow::Result<()> {
    let mut conn = ImapClient::connect(addr).await?;
    conn.expect_ok(&format!("LOGIN {user} {password}"), None).await?;
    for (n, message) in messages.iter().enumerate() {
        let reply = conn.expect_ok("APPEND INBOX", Some(message)).await?;
        if reply.appenduid.is_some_and(|uid| uid as usize != n + 1) {
            bail!("APPEND of message {} was given UID {:?}: INBOX was not empty", n + 1, reply.appenduid);
        }
    }
    conn.expect_ok("LOGOUT", None).await?;
    Ok(())
}

/// One logged-in session of the workload with INBOX selected.
struct Session {
    conn: ImapClient,
    /// The session's number, which makes its message choices and appended messages its own.
    number: usize,
    messages: usize,
    rounds: usize,
    /// The state of the session's pseudo-random choice of messages: the same sequence on every
    /// server, so both serve the same requests.
    choice: u64,
}

impl Session {
    async fn open(addr: &str, number: usize, messages: usize) -> anyhow::Result<Self> {
        let mut conn = ImapClient::connect(addr).await?;
        conn.expect_ok(&format!("LOGIN {USER} {PASSWORD}"), None).await?;
        conn.expect_ok("SELECT INBOX", None).await?;
        Ok(Self { conn, number, messages, rounds: 0, choice: 0x9E37_79B9_7F4A_7C15 ^ number as u64 })
    }

    /// The UID of a seeded message (xorshift64).
    fn pick(&mut self) -> usize {
        self.choice ^= self.choice << 13;
        self.choice ^= self.choice >> 7;
        self.choice ^= self.choice << 17;
        1 + (self.choice % self.messages as u64) as usize
    }

    /// Sends one command, times it and records it; `check` judges a tagged OK reply (the
    /// size of a body, say) and names what is wrong with it.
    async fn timed(
        &mut self,
        tally: &mut Tally,
        kind: Kind,
        command: &str,
        literal: Option<&[u8]>,
        check: impl FnOnce(&Reply) -> Option<String>,
    ) -> anyhow::Result<Reply> {
        let start = Instant::now();
        let reply = self.conn.command(command, literal).await.with_context(|| command.to_string())?;
        let took = start.elapsed();
        let error = if reply.ok {
            check(&reply).map(|why| format!("{command}: {why}"))
        } else {
            Some(format!("{command}: {}", self.conn.last_line()))
        };
        tally.record(kind, took, error);
        Ok(reply)
    }

    /// One round of the workload (see the module's documentation).
    async fn round(&mut self, tally: &mut Tally) -> anyhow::Result<()> {
        self.rounds += 1;
        let messages = self.messages;
        self.timed(tally, Kind::FetchFlags, "FETCH 1:* (UID FLAGS)", None, |r| {
            (r.untagged < messages).then(|| format!("{} untagged responses for {messages} messages", r.untagged))
        })
        .await?;
        for _ in 0..READS_PER_ROUND {
            let uid = self.pick();
            self.timed(tally, Kind::FetchHeader, &format!("UID FETCH {uid} BODY.PEEK[HEADER]"), None, |r| {
                (r.literal == 0).then(|| "no header".to_string())
            })
            .await?;
            self.timed(tally, Kind::FetchBody, &format!("UID FETCH {uid} BODY.PEEK[]"), None, |r| {
                (r.literal != SIZE).then(|| format!("{} octets of body, expected {SIZE}", r.literal))
            })
            .await?;
        }
        let uid = self.pick();
        self.timed(tally, Kind::StoreKeyword, &format!("UID STORE {uid} +FLAGS ($Foo)"), None, |_| None).await?;
        self.timed(tally, Kind::ClearKeyword, &format!("UID STORE {uid} -FLAGS ($Foo)"), None, |_| None).await?;
        // A message of its own for every append, as real mail would be: a server that keeps
        // one copy of identical bodies must not be flattered.
        let body = super::message(1_000_000 * (self.number + 1) + self.rounds);
        let appended = self
            .timed(tally, Kind::Append, "APPEND INBOX", Some(&body), |r| {
                r.appenduid.is_none().then(|| "no APPENDUID".to_string())
            })
            .await?;
        if let Some(uid) = appended.appenduid {
            let command = format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted)");
            self.timed(tally, Kind::StoreDeleted, &command, None, |_| None).await?;
        }
        self.timed(tally, Kind::Expunge, "EXPUNGE", None, |_| None).await?;
        Ok(())
    }

    async fn logout(mut self) {
        let _ = self.conn.command("LOGOUT", None).await;
    }
}
