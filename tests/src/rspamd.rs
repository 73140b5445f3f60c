//! An rspamd of the test's own, for the spam filtering tests (issue #17): Debian's rspamd 3.4
//! (`rspamd`, which `cargo xtask ci` installs) with a Redis (`redis-server`) for its Bayes
//! statistics, both started in the foreground on free loopback ports, with their databases,
//! run directory and logs in a temporary directory. Whether a system-wide rspamd or Redis runs
//! does not matter.
//!
//! The configuration is `tests/rspamd/` of the workspace (`rspamd.conf` says how to run it by
//! hand): the packaged rules of /etc/rspamd, read but not changed, with a normal worker
//! ([`Rspamd::url`], `/checkv2`) and a controller ([`Rspamd::controller`], `/learnspam`,
//! `/learnham`, `/stat`, no password), per-user Bayes in the Redis, and no network: the modules
//! that ask DNS (DNS lists, SPF, DKIM, DMARC, ...) are off and rspamd's only name server is a
//! loopback port where nothing listens. Its thresholds are [`REJECT_SCORE`],
//! [`REWRITE_SUBJECT_SCORE`], [`ADD_HEADER_SCORE`] and [`GREYLIST_SCORE`].
//!
//! A test chooses the verdict in one of three ways:
//!
//! - a GTUBE pattern in a text part ([`GTUBE`] rejects, [`GTUBE_ADD_HEADER`],
//!   [`GTUBE_REWRITE_SUBJECT`] and [`GTUBE_NO_ACTION`] give those actions), which rspamd checks
//!   before anything else, so that not even a request's `Settings` header changes the outcome;
//! - the header [`ACTION_HEADER`] with an action's name (`soft reject`, `greylist`, ...), which
//!   forces it after the request's settings are applied, so a whitelisting `Settings` header
//!   still wins;
//! - the header [`SCORE_HEADER`] with a number, added to the score, so that the thresholds decide
//!   as they do for real mail. [`message`] writes messages that otherwise score -0.1.
//!
//! Bayes statistics are kept per user: the user is the request's `Deliver-To` header, else its
//! first `Rcpt` header, else the first address of the message's To. [`Rspamd::learned`] reads
//! back how many messages a user's statistics hold from Redis.
//!
//! The first start on a machine compiles rspamd's hyperscan databases, some 10 seconds; they are
//! kept in a cache directory shared by every run of the same user (see [`hyperscan_cache`]), and
//! later starts take about half a second. A running pair takes some 250 MB of memory.
//!
//! A missing or unusable rspamd or Redis fails the test with the package to install; it is never
//! skipped.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tern_testbed::{HttpResponse, Process, free_ports, http_request};

/// The GTUBE pattern: rspamd rejects a message with it in a text part, with the SMTP message
/// "Gtube pattern".
pub const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
/// rspamd's GTUBE variant for the action "add header".
pub const GTUBE_ADD_HEADER: &str = "YJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
/// rspamd's GTUBE variant for the action "rewrite subject".
pub const GTUBE_REWRITE_SUBJECT: &str = "ZJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
/// rspamd's GTUBE variant for "no action", whatever else the message has.
pub const GTUBE_NO_ACTION: &str = "AJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

/// The message header whose value (`reject`, `soft reject`, `rewrite subject`, `add header`,
/// `greylist` or `no action`) forces that action, with the SMTP message
/// "Tern test action <action>" (tests/rspamd/tern.lua).
pub const ACTION_HEADER: &str = "X-Tern-Test-Action";
/// The message header whose value, a number, is added to the message's score as the symbol
/// `TERN_TEST_SCORE` (tests/rspamd/tern.lua).
pub const SCORE_HEADER: &str = "X-Tern-Test-Score";

/// The score from which rspamd says "reject".
pub const REJECT_SCORE: f64 = 15.0;
/// The score from which rspamd says "rewrite subject", proposing [`SUBJECT_PREFIX`] before the
/// subject.
pub const REWRITE_SUBJECT_SCORE: f64 = 10.0;
/// The score from which rspamd says "add header".
pub const ADD_HEADER_SCORE: f64 = 6.0;
/// The score from which rspamd says "greylist".
pub const GREYLIST_SCORE: f64 = 4.0;
/// What "rewrite subject" puts before the subject.
pub const SUBJECT_PREFIX: &str = "[SPAM] ";

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
fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("rspamd")
}

/// The user id the test runs as, from `id -u`, as the Dovecot harness finds it.
fn uid() -> String {
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
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
    /// Starts Redis and rspamd and waits until both rspamd workers answer `/ping`. Panics,
    /// naming what to install, when it cannot.
    pub async fn start() -> Rspamd {
        tokio::task::spawn_blocking(Self::start_blocking).await.expect("the thread starting rspamd panicked")
    }

    fn start_blocking() -> Rspamd {
        let version = Command::new(rspamd_bin())
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("cannot run rspamd ({e}): apt-get install rspamd (cargo xtask ci does)"));
        let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
        // "Rspamd daemon version 3.4". The configuration is written for 3.4 (Debian 12):
        // enable_test_patterns, for one, became gtube_patterns later.
        assert!(
            version.starts_with("Rspamd daemon version 3."),
            "the rspamd configuration in tests/rspamd is for rspamd 3.4, and `rspamd --version` says {version:?}"
        );
        let redis_version = Command::new(redis_bin()).arg("--version").output().unwrap_or_else(|e| {
            panic!("cannot run redis-server ({e}): apt-get install redis-server (cargo xtask ci does)")
        });
        assert!(
            redis_version.status.success(),
            "redis-server --version failed: apt-get install redis-server (cargo xtask ci does)"
        );

        let dir = tempfile::Builder::new().prefix("tern-rspamd-").tempdir().expect("a temporary directory");
        let path = dir.path();
        for sub in ["db", "run", "redis"] {
            std::fs::create_dir(path.join(sub)).expect("create a directory for rspamd");
        }
        let cache = hyperscan_cache();
        std::fs::create_dir_all(&cache).unwrap_or_else(|e| panic!("cannot create {}: {e}", cache.display()));
        // Nothing listens on the last port (UDP, while free_ports checked TCP): rspamd's name
        // server, so that any lookup fails at once rather than reaching the Internet.
        let [normal_port, controller_port, redis_port, dns_port] = free_ports().expect("free loopback ports");
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
        redis.spawn(&redis_args).expect("start redis-server");
        redis
            .wait_ready("it answers PING", || redis_command(redis_addr, &["PING"]).is_ok_and(|r| r == ["PONG"]))
            .unwrap_or_else(|e| panic!("{e:#}"));

        let var = |name: &str, value: &dyn std::fmt::Display| ["--var".to_string(), format!("{name}={value}")];
        let mut args = vec!["-f".to_string(), "-c".to_string(), config_dir().join("rspamd.conf").display().to_string()];
        // rspamd refuses to run its workers as root unless told that it may.
        if uid() == "0" {
            args.push("-i".to_string());
        }
        for pair in [
            var("LOCAL_CONFDIR", &config_dir().display()),
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
        rspamd.spawn(&args).expect("start rspamd");
        // Process::wait_ready gives up after 30 seconds, too soon for a first start on a busy
        // machine, hence a loop of its own.
        let deadline = Instant::now() + READY_TIMEOUT;
        while !(pongs(normal_addr) && pongs(controller_addr)) {
            if rspamd.has_exited() {
                panic!("{:#}", rspamd.failure("exited before its workers answered /ping"));
            }
            if Instant::now() >= deadline {
                let failure = rspamd.failure(&format!("did not answer /ping within {READY_TIMEOUT:?}"));
                // SIGTERM, so that the main process ends its workers: the SIGKILL of a dropped
                // Process would leave them running.
                let _ = rspamd.stop();
                panic!("{failure:#}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Rspamd {
            rspamd,
            redis,
            _dir: dir,
            url: format!("http://{normal_addr}"),
            controller: format!("http://{controller_addr}"),
            normal_addr,
            controller_addr,
            redis_addr,
        }
    }

    /// Scans `message` with `/checkv2`, sending `headers` (`IP`, `From`, `Rcpt`, `Deliver-To`,
    /// `Settings`, ...), and returns rspamd's JSON answer. Panics unless rspamd answers 200.
    pub async fn check(&self, message: &[u8], headers: &[(&str, &str)]) -> serde_json::Value {
        let response = self.post(self.normal_addr, "/checkv2", message, headers).await;
        assert_eq!(response.status, 200, "/checkv2: {}\n{}", String::from_utf8_lossy(&response.body), self.log_tail());
        serde_json::from_slice(&response.body).expect("/checkv2 answers JSON")
    }

    /// Learns `message` as spam for `user` (the `Deliver-To` header) through the controller.
    /// Panics unless rspamd learns it (status 200).
    pub async fn learn_spam(&self, user: &str, message: &[u8]) {
        self.learn("/learnspam", user, message).await;
    }

    /// Learns `message` as ham for `user`, as [`Rspamd::learn_spam`] does spam.
    pub async fn learn_ham(&self, user: &str, message: &[u8]) {
        self.learn("/learnham", user, message).await;
    }

    async fn learn(&self, path: &str, user: &str, message: &[u8]) {
        let response = self.post(self.controller_addr, path, message, &[("Deliver-To", user)]).await;
        // 208 is "already learnt", 204 too few words for Bayes; both leave the counts alone.
        assert_eq!(
            response.status,
            200,
            "{path} for {user}: {} {:?}\n{}",
            String::from_utf8_lossy(&response.body),
            response.headers,
            self.log_tail()
        );
    }

    /// Posts `body` to `path` of the worker at `addr` and returns the response.
    pub async fn post(&self, addr: SocketAddr, path: &str, body: &[u8], headers: &[(&str, &str)]) -> HttpResponse {
        let target = path.to_string();
        let body = body.to_vec();
        let headers: Vec<(String, String)> = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        tokio::task::spawn_blocking(move || {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            http_request(addr, "POST", &target, &headers, &body)
        })
        .await
        .expect("the HTTP request's thread panicked")
        .unwrap_or_else(|e| panic!("POST {path} to rspamd at {addr}: {e}"))
    }

    /// How many messages `user`'s Bayes statistics hold, spam and ham together. A message learnt
    /// again as the other class moves from one count to the other; one learnt again as the same
    /// class is refused and not counted.
    pub async fn learned(&self, user: &str) -> u64 {
        let (spam, ham) = self.learned_spam_ham(user).await;
        spam + ham
    }

    /// How many spam and how many ham messages `user`'s Bayes statistics hold: the fields
    /// `learns_spam` and `learns_ham` of the Redis hash `RS<user>`, which rspamd 3.4 keeps per
    /// user (the sets `BAYES_SPAM_keys` and `BAYES_HAM_keys` list those hashes, and each token
    /// is a hash `RS<user>_<token>`). The controller's `/stat` does not tell users apart.
    pub async fn learned_spam_ham(&self, user: &str) -> (u64, u64) {
        let addr = self.redis_addr;
        let key = format!("RS{user}");
        let reply =
            tokio::task::spawn_blocking(move || redis_command(addr, &["HMGET", &key, "learns_spam", "learns_ham"]))
                .await
                .expect("the Redis request's thread panicked")
                .unwrap_or_else(|e| panic!("HMGET from Redis at {addr}: {e}"));
        let count = |value: Option<&String>| value.filter(|v| !v.is_empty()).map_or(0, |v| v.parse().unwrap_or(0));
        (count(reply.first()), count(reply.get(1)))
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
fn redis_command(addr: SocketAddr, args: &[&str]) -> std::io::Result<Vec<String>> {
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

/// A plain-text message from sender@remote.example to alice@example.com with `subject`, the
/// header fields `headers`, `text` as its body, the current date and a Message-ID no other
/// message of this process has (rspamd refuses to learn the same message twice). rspamd scores
/// it -0.1 (MIME_GOOD) unless `headers` or `text` add to that.
pub fn message(subject: &str, headers: &[(&str, &str)], text: &str) -> Vec<u8> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let id = format!("{}.{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let extra: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    format!(
        "From: Sender <sender@remote.example>\r\nTo: Alice <alice@example.com>\r\nSubject: {subject}\r\n\
         Date: {date}\r\nMessage-ID: <{id}@remote.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n{extra}\r\n{text}\r\n",
        date = rfc5322_date(SystemTime::now()),
    )
    .into_bytes()
}

/// Text that reads as spam, long enough for Bayes (rspamd learns nothing from fewer than 11
/// tokens); `n` makes each copy different.
pub fn spam_text(n: u64) -> String {
    format!(
        "Cheap watches and pills for everyone, buy now while the special offer lasts, limited time \
         only, click the link to claim your prize number {n} today."
    )
}

/// Text that reads as ham, long enough for Bayes; `n` makes each copy different.
pub fn ham_text(n: u64) -> String {
    format!(
        "Hello Alice, the quarterly report is attached, please review the budget figures before our \
         meeting number {n} with the finance team on Monday morning."
    )
}

/// `time` as an RFC 5322 date in UTC (`Sun, 06 Dec 2026 00:35:13 +0000`). rspamd adds a point
/// for a date more than a few hours away from its clock, and for a missing one.
pub fn rfc5322_date(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let (hour, minute, second) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let month =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][month as usize - 1];
    format!("{weekday}, {day:02} {month} {year} {hour:02}:{minute:02}:{second:02} +0000")
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn dates_are_written_as_rfc5322_wants_them() {
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
        // 2000-02-29 (a leap day in a year divisible by 400) at 12:34:56.
        assert_eq!(rfc5322_date(UNIX_EPOCH + Duration::from_secs(951_827_696)), "Tue, 29 Feb 2000 12:34:56 +0000");
        assert_eq!(rfc5322_date(UNIX_EPOCH + Duration::from_secs(1_796_517_313)), "Sun, 06 Dec 2026 00:35:13 +0000");
    }

    #[test]
    fn messages_differ_and_carry_the_headers() {
        let a = String::from_utf8(message("s", &[(SCORE_HEADER, "7")], "text")).unwrap();
        let b = String::from_utf8(message("s", &[], "text")).unwrap();
        assert!(a.contains("\r\nX-Tern-Test-Score: 7\r\n\r\ntext\r\n"), "{a}");
        let mid = |m: &str| m.lines().find(|l| l.starts_with("Message-ID:")).unwrap().to_string();
        assert_ne!(mid(&a), mid(&b));
    }

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
