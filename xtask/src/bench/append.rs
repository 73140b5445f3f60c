//! `cargo xtask bench imap-append`: the latency of one client's sequential APPENDs with
//! synchronising literals, written the way Python's imaplib writes them, against `tern dev` and,
//! beside it, a Dovecot of the benchmark's own on loopback.
//!
//! imaplib sends the command line, waits for the "+" continuation, then sends the literal and
//! the CRLF that ends the command in two separate writes, on a socket without TCP_NODELAY. With
//! Nagle's algorithm the CRLF stays in the client's kernel until the literal is acknowledged, so
//! a server that lets its kernel delay that ACK (40 ms on Linux) makes every APPEND that slow.
//! The client here does exactly the same writes, so the benchmark measures what imaplib's users
//! see; `--nodelay` sets TCP_NODELAY to show what the servers take without that wait.

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use super::dovecot::{Dovecot, Peer, Protocols};

/// What the benchmark measures on one server.
#[derive(Debug, Clone, Copy)]
struct Figures {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

/// APPENDs made first on each connection and not measured: Linux acknowledges the first
/// segments of a connection at once whatever the server does, which would flatter both sides.
const WARM_UP: usize = 20;

const USER: &str = "user@bench.test";
const PASSWORD: &str = "bench";

pub async fn run(appends: usize, size: usize, peer: Peer, nodelay: bool) -> anyhow::Result<()> {
    if appends == 0 {
        bail!("--appends must be at least 1");
    }
    // Installed first, so that a missing package fails the run before any measurement.
    if peer == Peer::Dovecot {
        super::dovecot::install(Protocols::Imap)?;
    }
    let writes = if nodelay {
        "TCP_NODELAY set on the client"
    } else {
        "literal and CRLF in two writes, no TCP_NODELAY, as imaplib"
    };
    println!(
        "imap-append benchmark: one client, {appends} sequential APPENDs of {size} octets with synchronising literals \
         ({writes}), after {WARM_UP} unmeasured ones"
    );
    let server = super::Server::start().await?;
    super::setup_user(&server).await?;
    let tern = measure("tern", &server.imap, appends, size, nodelay).await?;
    drop(server);
    let dovecot = match peer {
        Peer::Dovecot => {
            let dovecot = Dovecot::start(Protocols::Imap, &[USER], PASSWORD)?;
            Some(measure("dovecot", &dovecot.imap, appends, size, nodelay).await?)
        }
        Peer::None => None,
    };
    if let Some(dovecot) = dovecot {
        println!(
            "  tern / dovecot:  p50 {:.2}x   p99 {:.2}x   mean {:.2}x",
            tern.p50.as_secs_f64() / dovecot.p50.as_secs_f64(),
            tern.p99.as_secs_f64() / dovecot.p99.as_secs_f64(),
            tern.mean.as_secs_f64() / dovecot.mean.as_secs_f64()
        );
    }
    Ok(())
}

/// Runs the APPENDs against `addr` on a blocking thread (the client is a plain blocking socket,
/// as imaplib's is) and prints the figures.
async fn measure(name: &str, addr: &str, appends: usize, size: usize, nodelay: bool) -> anyhow::Result<Figures> {
    let addr = addr.to_string();
    let mut latencies = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Duration>> {
        let mut client = Client::connect(&addr, nodelay)?;
        client.command(&format!("LOGIN {USER} {PASSWORD}"))?;
        let mut latencies = Vec::with_capacity(appends);
        for n in 0..WARM_UP + appends {
            let took = client.append("INBOX", &message(n, size))?;
            if n >= WARM_UP {
                latencies.push(took);
            }
        }
        client.command("LOGOUT")?;
        Ok(latencies)
    })
    .await??;
    latencies.sort();
    let at = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1];
    let figures =
        Figures { p50: at(0.50), p99: at(0.99), mean: latencies.iter().sum::<Duration>() / latencies.len() as u32 };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "  {name:<8} p50 {:>7.2} ms   p99 {:>7.2} ms   mean {:>7.2} ms   (min {:.2} ms, max {:.2} ms)",
        ms(figures.p50),
        ms(figures.p99),
        ms(figures.mean),
        ms(latencies[0]),
        ms(latencies[latencies.len() - 1])
    );
    Ok(figures)
}

/// A message of exactly `size` octets, different for every `n`.
fn message(n: usize, size: usize) -> Vec<u8> {
    super::padded_to(
        format!(
            "From: bench@example.net\r\nTo: {USER}\r\nSubject: append {n}\r\nMessage-ID: <append-{n}@bench>\r\n\r\n"
        ),
        size,
    )
}

/// An IMAP client that writes as imaplib does: a blocking socket, TCP_NODELAY left off (unless
/// asked for), the literal and its closing CRLF in two writes.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next: u64,
}

impl Client {
    fn connect(addr: &str, nodelay: bool) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(addr).with_context(|| format!("cannot connect to {addr}"))?;
        tcp.set_nodelay(nodelay)?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut client = Self { reader: BufReader::new(tcp.try_clone()?), writer: tcp, next: 0 };
        let greeting = client.line()?;
        if !greeting.starts_with("* OK") {
            bail!("unexpected greeting from {addr}: {greeting:?}");
        }
        Ok(client)
    }

    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("the server closed the connection");
        }
        Ok(line)
    }

    fn tag(&mut self) -> String {
        self.next += 1;
        format!("A{:04}", self.next)
    }

    /// Reads to the tagged reply, which must be OK.
    fn tagged(&mut self, tag: &str) -> anyhow::Result<()> {
        loop {
            let line = self.line()?;
            if let Some(rest) = line.strip_prefix(tag).and_then(|rest| rest.strip_prefix(' ')) {
                if !rest.starts_with("OK") {
                    bail!("{tag} failed: {line:?}");
                }
                return Ok(());
            }
        }
    }

    /// One command without literals, in one write.
    fn command(&mut self, command: &str) -> anyhow::Result<()> {
        let tag = self.tag();
        self.writer.write_all(format!("{tag} {command}\r\n").as_bytes())?;
        self.tagged(&tag)
    }

    /// One APPEND, timed from its first write to its tagged OK.
    fn append(&mut self, folder: &str, message: &[u8]) -> anyhow::Result<Duration> {
        let tag = self.tag();
        let start = Instant::now();
        self.writer.write_all(format!("{tag} APPEND {folder} {{{}}}\r\n", message.len()).as_bytes())?;
        loop {
            let line = self.line()?;
            if line.starts_with('+') {
                break;
            }
            if line.starts_with(&tag) {
                bail!("APPEND refused: {line:?}");
            }
        }
        // imaplib's `self.send(literal)` and `self.send(CRLF)`: two writes, two segments.
        self.writer.write_all(message)?;
        self.writer.write_all(b"\r\n")?;
        self.tagged(&tag)?;
        Ok(start.elapsed())
    }
}
