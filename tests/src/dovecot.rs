//! A Dovecot of the test's own, for real-client tests that copy mail between Tern and another
//! IMAP server: Debian's Dovecot 2.3 (`dovecot-imapd`, which `cargo xtask ci` installs) started
//! in the foreground on a free loopback port with a configuration, passwd-file and Maildirs in a
//! temporary directory, plain-text login without TLS. Whether a system-wide Dovecot runs does
//! not matter. `xtask`'s benchmark Dovecot is configured the same way; the two are kept apart
//! because neither crate depends on the other.
//!
//! A missing or unusable Dovecot fails the test with the package to install; it is never
//! skipped.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tern_testbed::{Process, free_ports, greets};
use tokio::net::TcpStream;

use crate::{imap::ImapClient, smtp::BoxIo};

/// The user Dovecot runs mail sessions as, because it refuses root; it owns the Maildirs.
const MAIL_UID: u32 = 65534;
const MAIL_GID: u32 = 65534;

/// How long a stopping Dovecot may take before its master is killed.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// A running Dovecot master and its temporary directory; stopped when dropped.
#[derive(Debug)]
pub struct Dovecot {
    // Declared before the directory, which must outlive the processes using it.
    process: Process,
    config: PathBuf,
    _dir: tempfile::TempDir,
    /// The IMAP listener (no TLS).
    pub addr: SocketAddr,
}

/// The `dovecot` binary: in /usr/sbin on Debian, which is not on every user's PATH.
fn dovecot_bin() -> PathBuf {
    let sbin = Path::new("/usr/sbin/dovecot");
    if sbin.is_file() { sbin.to_path_buf() } else { PathBuf::from("dovecot") }
}

impl Dovecot {
    /// Starts Dovecot with `users` (address and password) and waits until it greets. Panics,
    /// naming what to install or change, when it cannot.
    pub async fn start(users: &[(&str, &str)]) -> Dovecot {
        let users: Vec<(String, String)> = users.iter().map(|(u, p)| (u.to_string(), p.to_string())).collect();
        tokio::task::spawn_blocking(move || Self::start_blocking(&users))
            .await
            .expect("the thread starting Dovecot panicked")
    }

    fn start_blocking(users: &[(String, String)]) -> Dovecot {
        let version = Command::new(dovecot_bin()).arg("--version").output().unwrap_or_else(|e| {
            panic!("cannot run dovecot ({e}): apt-get install dovecot-core dovecot-imapd (cargo xtask ci does)")
        });
        let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
        // 2.4 changed the configuration's syntax; this one is 2.3's (Debian 12).
        assert!(version.starts_with("2.3."), "the Dovecot configuration here is for Dovecot 2.3, not {version:?}");
        let uid = Command::new("id").arg("-u").output().expect("run id");
        assert_eq!(
            String::from_utf8_lossy(&uid.stdout).trim(),
            "0",
            "Dovecot is started as root here (it switches each session to the user nobody): run as root"
        );
        let dir = tempfile::Builder::new().prefix("tern-dovecot-").tempdir().expect("a temporary directory");
        let path = dir.path();
        // The sessions run as nobody, who must reach its home below the temporary directory.
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let home = path.join("home");
        std::fs::create_dir(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(MAIL_UID), Some(MAIL_GID)).unwrap();
        let passwd: String = users.iter().map(|(user, password)| format!("{user}:{{PLAIN}}{password}\n")).collect();
        std::fs::write(path.join("passwd"), passwd).unwrap();
        std::fs::create_dir(path.join("run")).unwrap();
        std::fs::create_dir(path.join("state")).unwrap();
        let [port] = free_ports().expect("a free loopback port");
        let p = path.display();
        // The namespace separator is Tern's `/`, so that a folder tree has the same names on
        // both servers; Dovecot's Maildir++ keeps its `.` on disk regardless.
        let config = path.join("dovecot.conf");
        std::fs::write(
            &config,
            format!(
                "base_dir = {p}/run\nstate_dir = {p}/state\ninstance_name = tern-test-{port}\nlog_path = /dev/stderr\n\
                 protocols = imap\nlisten = 127.0.0.1\nssl = no\ndisable_plaintext_auth = no\n\
                 auth_mechanisms = plain login\nmail_location = maildir:~/Maildir\n\
                 namespace inbox {{\n  inbox = yes\n  separator = /\n}}\n\
                 passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {p}/passwd\n}}\n\
                 userdb {{\n  driver = static\n  args = uid={MAIL_UID} gid={MAIL_GID} home={p}/home/%u\n}}\n\
                 service imap-login {{\n  chroot =\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n\
                 \x20 inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
                 service anvil {{\n  chroot =\n}}\n"
            ),
        )
        .unwrap();
        // In the foreground (-F), logging to its standard error, which the Process collects.
        let mut process = Process::new(dovecot_bin(), path);
        process.spawn(&["-F".as_ref(), "-c".as_ref(), config.as_os_str()]).expect("start dovecot");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        process.wait_ready("its IMAP listener greets", || greets(addr, "* OK")).unwrap_or_else(|e| panic!("{e:#}"));
        Dovecot { process, config, _dir: dir, addr }
    }

    /// A new plain connection, logged in as `user` with LOGIN.
    pub async fn login(&self, user: &str, password: &str) -> ImapClient<BoxIo> {
        let stream = TcpStream::connect(self.addr).await.expect("connect to Dovecot");
        let mut c = ImapClient::new(Box::new(stream) as BoxIo);
        c.greeting().await;
        c.ok(&format!("LOGIN {user} {password}")).await;
        c
    }

    /// The Maildir of `user` (`~/Maildir`), which Dovecot creates at the user's first login.
    pub fn maildir(&self, user: &str) -> PathBuf {
        self._dir.path().join("home").join(user).join("Maildir")
    }

    /// The end of Dovecot's log, for failure messages.
    pub fn log_tail(&self) -> String {
        self.process.log_tail(8192)
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
        let deadline = Instant::now() + STOP_WAIT;
        while Instant::now() < deadline && !self.process.has_exited() {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Dropping the Process kills the master if it is still there.
    }
}
