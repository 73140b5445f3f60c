//! rspamd, the spam engine, with a Redis for its Bayes statistics: Debian's rspamd 3.4 and
//! redis-server, started in the foreground on free loopback ports with their databases, run
//! directory and logs in a temporary directory, for the spam filtering tests and the SMTP
//! benchmark with scanning. Whether a system-wide rspamd or Redis runs does not matter.
//!
//! The configuration is `tests/rspamd/` of the workspace (its `rspamd.conf` says how to run it
//! by hand and what it changes of the packaged rules): a normal worker ([`Rspamd::url`]) and a
//! controller ([`Rspamd::controller`]) with no password on loopback, per-user Bayes in the
//! Redis, and no network. The first start on a machine compiles rspamd's hyperscan databases,
//! some 10 seconds; they are kept in [`hyperscan_cache`], and later starts take about half a
//! second. A running pair takes some 250 MB of memory.
//!
//! Starting blocks the calling thread. A missing rspamd or Redis is an error naming the package
//! to install.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::{Process, free_ports, http_request, workspace_root};

/// How long rspamd may take to answer after it starts: the first start on a machine compiles
/// the hyperscan databases, which takes 10 seconds on an idle machine and longer on a busy one.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// How long one HTTP or Redis exchange may take.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A running rspamd and its Redis, with their temporary directory; stopped when dropped.
#[derive(Debug)]
pub struct Rspamd {
    // Declared in the order they must stop: rspamd uses the Redis, and both the directory.
    rspamd: Process,
    redis: Process,
    _dir: tempfile::TempDir,
    /// The normal worker, `http://127.0.0.1:<port>`: `/checkv2`, `/ping`.
    pub url: String,
    /// The controller, `http://127.0.0.1:<port>`: `/learnspam`, `/learnham`, `/stat`, `/ping`.
    pub controller: String,
    /// The normal worker's address.
    pub normal_addr: SocketAddr,
    /// The controller's address.
    pub controller_addr: SocketAddr,
    /// The Redis that holds the Bayes statistics.
    pub redis_addr: SocketAddr,
}

/// The `rspamd` binary: /usr/bin on Debian.
fn rspamd_bin() -> PathBuf {
    let bin = Path::new("/usr/bin/rspamd");
    if bin.is_file() { bin.to_path_buf() } else { PathBuf::from("rspamd") }
}

/// The `redis-server` binary: /usr/bin on Debian.
fn redis_bin() -> PathBuf {
    let bin = Path::new("/usr/bin/redis-server");
    if bin.is_file() { bin.to_path_buf() } else { PathBuf::from("redis-server") }
}

/// The configuration directory, `tests/rspamd` of the workspace.
fn config_dir() -> anyhow::Result<PathBuf> {
    Ok(workspace_root()?.join("tests").join("rspamd"))
}

/// The user id the test runs as, from `id -u`, as the Dovecot harness finds it.
fn uid() -> String {
    // Without `id` the user is unknown, and the cache directory is shared under that name.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// Where rspamd keeps its compiled hyperscan databases across runs: one directory per user in
/// the system's temporary directory, because a database written by another user is not to be
/// trusted, and rspamd must be able to write there. The files are named by a hash of their
/// contents' source, so different configurations (other checkouts, other branches) share the
/// directory; a stopping rspamd removes the files its configuration does not use, which at worst
/// makes another configuration's next start slow again.
pub fn hyperscan_cache() -> PathBuf {
    std::env::temp_dir().join(format!("tern-rspamd-hyperscan-{}", uid()))
}

impl Rspamd {
    /// Starts Redis and rspamd and waits until both rspamd workers answer `/ping`.
    pub fn start() -> anyhow::Result<Rspamd> {
        let version = Command::new(rspamd_bin())
            .arg("--version")
            .output()
            .context("cannot run rspamd: apt-get install rspamd (cargo xtask ci does)")?;
        let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
        // "Rspamd daemon version 3.4". The configuration is written for 3.4 (Debian 12):
        // enable_test_patterns, for one, became gtube_patterns later.
        if !version.starts_with("Rspamd daemon version 3.") {
            bail!(
                "the rspamd configuration in tests/rspamd is for rspamd 3.4, and `rspamd --version` says {version:?}"
            );
        }
        let redis_version = Command::new(redis_bin())
            .arg("--version")
            .output()
            .context("cannot run redis-server: apt-get install redis-server (cargo xtask ci does)")?;
        if !redis_version.status.success() {
            bail!("redis-server --version failed: apt-get install redis-server (cargo xtask ci does)");
        }

        let dir = tempfile::Builder::new().prefix("tern-rspamd-").tempdir().context("a temporary directory")?;
        let path = dir.path();
        for sub in ["db", "run", "redis"] {
            std::fs::create_dir(path.join(sub)).context("create a directory for rspamd")?;
        }
        let cache = hyperscan_cache();
        std::fs::create_dir_all(&cache).with_context(|| format!("cannot create {}", cache.display()))?;
        // Nothing listens on the last port (UDP, while free_ports checked TCP): rspamd's name
        // server, so that any lookup fails at once rather than reaching the Internet.
        let [normal_port, controller_port, redis_port, dns_port] = free_ports()?;
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let (normal_addr, controller_addr, redis_addr) =
            (loopback(normal_port), loopback(controller_port), loopback(redis_port));

        // No snapshots and no append-only file: the statistics live as long as the test.
        let mut redis = Process::new(redis_bin(), &path.join("redis"));
        let redis_args: Vec<String> = [
            "--bind",
            "127.0.0.1",
            "--port",
            &redis_port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            &path.join("redis").display().to_string(),
            "--logfile",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        redis.spawn(&redis_args).context("start redis-server")?;
        redis.wait_ready("it answers PING", || redis_command(redis_addr, &["PING"]).is_ok_and(|r| r == ["PONG"]))?;

        let var = |name: &str, value: &dyn std::fmt::Display| ["--var".to_string(), format!("{name}={value}")];
        let config = config_dir()?;
        let mut args = vec!["-f".to_string(), "-c".to_string(), config.join("rspamd.conf").display().to_string()];
        // rspamd refuses to run its workers as root unless told that it may.
        if uid() == "0" {
            args.push("-i".to_string());
        }
        for pair in [
            var("LOCAL_CONFDIR", &config.display()),
            var("DBDIR", &path.join("db").display()),
            var("RUNDIR", &path.join("run").display()),
            var("LOGDIR", &path.display()),
            var("TERN_NORMAL", &normal_addr),
            var("TERN_CONTROLLER", &controller_addr),
            var("TERN_REDIS", &redis_addr),
            var("TERN_DNS", &loopback(dns_port)),
            var("TERN_HS_CACHE", &cache.display()),
        ] {
            args.extend(pair);
        }
        let mut rspamd = Process::new(rspamd_bin(), path);
        rspamd.spawn(&args).context("start rspamd")?;
        // Process::wait_ready gives up after 30 seconds, too soon for a first start on a busy
        // machine, hence a loop of its own.
        let deadline = Instant::now() + READY_TIMEOUT;
        while !(pongs(normal_addr) && pongs(controller_addr)) {
            if rspamd.has_exited() {
                return Err(rspamd.failure("exited before its workers answered /ping"));
            }
            if Instant::now() >= deadline {
                let failure = rspamd.failure(&format!("did not answer /ping within {READY_TIMEOUT:?}"));
                // SIGTERM, so that the main process ends its workers: the SIGKILL of a dropped
                // Process would leave them running.
                let _ = rspamd.stop();
                return Err(failure);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Rspamd {
            rspamd,
            redis,
            _dir: dir,
            url: format!("http://{normal_addr}"),
            controller: format!("http://{controller_addr}"),
            normal_addr,
            controller_addr,
            redis_addr,
        })
    }

    /// The main process's id; its workers are its children (for CPU accounting).
    pub fn pid(&self) -> Option<u32> {
        self.rspamd.id()
    }

    /// Stops rspamd (SIGTERM, which ends its workers too) and then Redis. Stopping twice does
    /// nothing.
    pub fn stop(&mut self) {
        if let Err(e) = self.rspamd.stop() {
            eprintln!("rspamd did not stop: {e:#}");
        }
        if let Err(e) = self.redis.stop() {
            eprintln!("redis-server did not stop: {e:#}");
        }
    }

    /// The end of rspamd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        self.rspamd.log_tail(8192)
    }
}

impl Drop for Rspamd {
    fn drop(&mut self) {
        // A graceful stop: rspamd's workers outlive a main process killed with SIGKILL.
        self.stop();
    }
}

/// Whether the rspamd worker at `addr` answers `/ping` with "pong".
fn pongs(addr: SocketAddr) -> bool {
    http_request(addr, "GET", "/ping", &[], b"").is_ok_and(|r| r.status == 200 && r.body.starts_with(b"pong"))
}

/// Sends one command to the Redis at `addr` on a new connection and returns its reply as
/// strings: a simple string, an integer or a bulk string as one element, an array as its
/// elements (a nil as the empty string). An error reply is an error.
pub fn redis_command(addr: SocketAddr, args: &[&str]) -> std::io::Result<Vec<String>> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let first = read_line(&mut reader)?;
    match first.split_at(1) {
        ("*", count) => {
            let count: i64 = count.parse().map_err(|_| invalid(&first))?;
            (0..count.max(0)).map(|_| read_value(&mut reader)).collect()
        }
        _ => Ok(vec![value_of(&first, &mut reader)?]),
    }
}

/// One value of a Redis reply.
fn read_value(reader: &mut impl BufRead) -> std::io::Result<String> {
    let line = read_line(reader)?;
    value_of(&line, reader)
}

/// The value whose first line is `line`, reading a bulk string's data from `reader`.
fn value_of(line: &str, reader: &mut impl BufRead) -> std::io::Result<String> {
    match line.split_at(1) {
        ("+" | ":", value) => Ok(value.to_string()),
        ("-", error) => Err(std::io::Error::other(format!("Redis says: {error}"))),
        ("$", len) => {
            let len: i64 = len.parse().map_err(|_| invalid(line))?;
            if len < 0 {
                return Ok(String::new());
            }
            let mut data = vec![0; usize::try_from(len).map_err(|_| invalid(line))? + 2];
            reader.read_exact(&mut data)?;
            data.truncate(data.len() - 2);
            Ok(String::from_utf8_lossy(&data).into_owned())
        }
        _ => Err(invalid(line)),
    }
}

/// One line of a Redis reply, without its CRLF; an empty reply is an error.
fn read_line(reader: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let line = line.trim_end_matches(['\r', '\n']).to_string();
    if line.is_empty() { Err(invalid(&line)) } else { Ok(line) }
}

fn invalid(line: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("unexpected Redis reply line {line:?}"))
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// A Redis stand-in that answers one connection with `reply`, for the reply parser.
    fn serve_once(reply: &'static [u8]) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = [0u8; 256];
            let _ = stream.read(&mut buf);
            stream.write_all(reply).unwrap();
        });
        addr
    }

    #[test]
    fn redis_replies_are_read() {
        assert_eq!(redis_command(serve_once(b"+PONG\r\n"), &["PING"]).unwrap(), ["PONG"]);
        let addr = serve_once(b"*2\r\n$1\r\n3\r\n$-1\r\n");
        assert_eq!(redis_command(addr, &["HMGET", "k", "a", "b"]).unwrap(), ["3", ""]);
        assert!(redis_command(serve_once(b"-ERR no\r\n"), &["X"]).is_err());
    }
}
