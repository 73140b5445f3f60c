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
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// The server the benchmark compares Tern with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// Dovecot (Debian's dovecot-imapd, installed when missing), run on its own loopback port.
    Dovecot,
    /// Tern alone.
    None,
}

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
        install_dovecot()?;
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
            let dovecot = Dovecot::start()?;
            Some(measure("dovecot", &dovecot.addr, appends, size, nodelay).await?)
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

/// Installs Debian's dovecot-imapd when it is missing.
fn install_dovecot() -> anyhow::Result<()> {
    if crate::deb_installed("dovecot-imapd") {
        return Ok(());
    }
    let args = ["install", "-y", "--no-install-recommends", "dovecot-imapd"];
    if crate::run("apt-get", &args).is_err() {
        crate::run("apt-get", &["update"])?;
        crate::run("apt-get", &args)?;
    }
    Ok(())
}

/// The `dovecot` binary: in /usr/sbin on Debian, which is not on every user's PATH.
fn dovecot_bin() -> PathBuf {
    let sbin = Path::new("/usr/sbin/dovecot");
    if sbin.is_file() { sbin.to_path_buf() } else { PathBuf::from("dovecot") }
}

/// A Dovecot master process of the benchmark's own: its own configuration, directories and
/// loopback port in a temporary directory, one account (in a passwd-file) whose Maildir belongs
/// to `nobody`, plain-text LOGIN without TLS. Whether a system-wide Dovecot runs does not
/// matter. Stopped when dropped.
struct Dovecot {
    child: Child,
    config: PathBuf,
    dir: tempfile::TempDir,
    addr: String,
}

/// The user Dovecot runs the IMAP sessions as; Dovecot refuses root.
const MAIL_UID: u32 = 65534;
const MAIL_GID: u32 = 65534;

impl Dovecot {
    fn start() -> anyhow::Result<Self> {
        let version = Command::new(dovecot_bin()).arg("--version").output().context("cannot run dovecot")?;
        let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
        // 2.4 changed the configuration's syntax; this one is 2.3's (Debian 12).
        if !version.starts_with("2.3.") {
            bail!("the Dovecot configuration here is written for Dovecot 2.3, and this is {version:?}");
        }
        let uid = Command::new("id").arg("-u").output().context("cannot run id")?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            bail!("Dovecot is started as root here (it switches each session to the user nobody): run as root");
        }
        let dir = tempfile::TempDir::new()?;
        let path = dir.path();
        // The sessions run as nobody, who must reach its home below the temporary directory.
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let home = path.join("home");
        std::fs::create_dir(&home)?;
        std::os::unix::fs::chown(&home, Some(MAIL_UID), Some(MAIL_GID))?;
        std::fs::write(path.join("passwd"), format!("{USER}:{{PLAIN}}{PASSWORD}\n"))?;
        let port = super::free_port()?;
        let p = path.display();
        let config = path.join("dovecot.conf");
        std::fs::write(
            &config,
            format!(
                "base_dir = {p}/run\nstate_dir = {p}/state\ninstance_name = tern-bench-{port}\nlog_path = {p}/dovecot.log\n\
                 protocols = imap\nlisten = 127.0.0.1\nssl = no\ndisable_plaintext_auth = no\nauth_mechanisms = plain login\n\
                 mail_location = maildir:~/Maildir\n\
                 passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {p}/passwd\n}}\n\
                 userdb {{\n  driver = static\n  args = uid={MAIL_UID} gid={MAIL_GID} home={p}/home/%u\n}}\n\
                 service imap-login {{\n  chroot =\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n\
                 \x20 inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
                 service anvil {{\n  chroot =\n}}\n"
            ),
        )?;
        std::fs::create_dir(path.join("run"))?;
        std::fs::create_dir(path.join("state"))?;
        let child = Command::new(dovecot_bin())
            .arg("-F")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start dovecot")?;
        let mut dovecot = Self { child, config, dir, addr: format!("127.0.0.1:{port}") };
        // Ready once it greets.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(tcp) = TcpStream::connect(&dovecot.addr) {
                tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
                let mut greeting = String::new();
                if BufReader::new(tcp).read_line(&mut greeting).is_ok() && greeting.starts_with("* OK") {
                    return Ok(dovecot);
                }
            }
            if let Some(status) = dovecot.child.try_wait()? {
                bail!("dovecot exited with {status}:\n{}", dovecot.log());
            }
            if Instant::now() > deadline {
                bail!("dovecot did not greet on {} within 20 s:\n{}", dovecot.addr, dovecot.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // `dovecot stop` ends the master and its children; killing the master alone would leave
        // them to notice.
        let _ = Command::new(dovecot_bin())
            .arg("-c")
            .arg(&self.config)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
