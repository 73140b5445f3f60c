//! The Dovecot that the side-by-side benchmarks (`imap-append`, `imap --peer dovecot`,
//! `pop3 --peer dovecot`) compare Tern with: Debian's Dovecot 2.3, installed when missing, run
//! as a master process of the benchmark's own on free loopback ports with a temporary
//! configuration, and the CPU time of all its processes. The master runs in the foreground as a
//! `tern_testbed` [`Process`], so its log is collected, quoted when it fails to start, and the
//! master is killed if the benchmark fails before it is stopped.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tern_testbed::{Process, free_ports, greets};

/// The server a benchmark compares Tern with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// Dovecot (Debian's dovecot-imapd, and dovecot-pop3d for POP3, installed when missing),
    /// run on its own loopback ports.
    Dovecot,
    /// Tern alone.
    None,
}

/// The protocols a Dovecot of the benchmark's serves: IMAP always, because the benchmarks put
/// their messages in over IMAP APPEND, and POP3 when asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    Imap,
    ImapAndPop3,
}

/// Installs the Debian packages that `protocols` need when any is missing.
pub fn install(protocols: Protocols) -> anyhow::Result<()> {
    let mut packages = vec!["dovecot-imapd"];
    if protocols == Protocols::ImapAndPop3 {
        packages.push("dovecot-pop3d");
    }
    packages.retain(|package| !crate::deb_installed(package));
    if packages.is_empty() {
        return Ok(());
    }
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(&packages);
    // A fresh machine may have no package lists yet, so a failed install is retried after an
    // update rather than failing the benchmark.
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
/// loopback ports in a temporary directory, accounts in a passwd-file whose Maildirs belong to
/// `nobody`, plain-text login without TLS. Whether a system-wide Dovecot runs does not matter.
/// Stopped when dropped.
pub struct Dovecot {
    // Declared before the directory, which must outlive the processes using it.
    process: Process,
    config: PathBuf,
    _dir: tempfile::TempDir,
    /// The IMAP listener, `127.0.0.1:port`.
    pub imap: String,
    /// The POP3 listener, when POP3 was asked for.
    pub pop3: Option<String>,
}

/// The user Dovecot runs the mail sessions as; Dovecot refuses root.
const MAIL_UID: u32 = 65534;
const MAIL_GID: u32 = 65534;

impl Dovecot {
    /// Starts Dovecot with `users`, each with `password`, and waits until each listener greets.
    pub fn start(protocols: Protocols, users: &[&str], password: &str) -> anyhow::Result<Self> {
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
        let passwd: String = users.iter().map(|user| format!("{user}:{{PLAIN}}{password}\n")).collect();
        std::fs::write(path.join("passwd"), passwd)?;
        let [imap_port, pop3_port] = free_ports()?;
        let pop3_port = match protocols {
            Protocols::Imap => None,
            Protocols::ImapAndPop3 => Some(pop3_port),
        };
        let p = path.display();
        // The services of a protocol are configured only when it is served, so that a machine
        // without dovecot-pop3d can run the IMAP benchmarks.
        let pop3_service = pop3_port
            .map(|port| {
                format!(
                    "service pop3-login {{\n  chroot =\n  inet_listener pop3 {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n\
                     \x20 inet_listener pop3s {{\n    port = 0\n  }}\n}}\n"
                )
            })
            .unwrap_or_default();
        let config = path.join("dovecot.conf");
        // The benchmarks log in many sessions of one user from one address, more than the
        // default of 10 per user and address that mail_max_userip_connections allows.
        std::fs::write(
            &config,
            format!(
                "base_dir = {p}/run\nstate_dir = {p}/state\ninstance_name = tern-bench-{imap_port}\nlog_path = /dev/stderr\n\
                 protocols = imap{}\nlisten = 127.0.0.1\nssl = no\ndisable_plaintext_auth = no\nauth_mechanisms = plain login\n\
                 mail_location = maildir:~/Maildir\nmail_max_userip_connections = 10000\n\
                 passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {p}/passwd\n}}\n\
                 userdb {{\n  driver = static\n  args = uid={MAIL_UID} gid={MAIL_GID} home={p}/home/%u\n}}\n\
                 service imap-login {{\n  chroot =\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {imap_port}\n  }}\n\
                 \x20 inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
                 {pop3_service}\
                 service anvil {{\n  chroot =\n}}\n",
                if pop3_port.is_some() { " pop3" } else { "" }
            ),
        )?;
        std::fs::create_dir(path.join("run"))?;
        std::fs::create_dir(path.join("state"))?;
        // In the foreground (-F), logging to its standard error (`log_path`), which the
        // Process collects.
        let mut process = Process::new(dovecot_bin(), path);
        process.spawn(&["-F".as_ref(), "-c".as_ref(), config.as_os_str()])?;
        let imap = super::loopback(imap_port);
        let pop3 = pop3_port.map(super::loopback);
        // Each listener is ready once it greets; the probes block, as testbed's do.
        tokio::task::block_in_place(|| {
            process.wait_ready("its IMAP listener greets", || greets(imap, "* OK"))?;
            match pop3 {
                Some(pop3) => process.wait_ready("its POP3 listener greets", || greets(pop3, "+OK")),
                None => Ok(()),
            }
        })?;
        Ok(Self { process, config, _dir: dir, imap: imap.to_string(), pop3: pop3.map(|addr| addr.to_string()) })
    }

    /// The Maildir of `user` (`~/Maildir`), for a benchmark that fills it directly.
    pub fn maildir(&self, user: &str) -> PathBuf {
        self._dir.path().join("home").join(user).join("Maildir")
    }

    /// Gives `path` (a Maildir written here) to the user the mail sessions run as.
    pub fn own(&self, path: &std::path::Path) -> anyhow::Result<()> {
        let home = path.parent().context("a Maildir has a home")?;
        let status = Command::new("chown").args(["-R", &format!("{MAIL_UID}:{MAIL_GID}")]).arg(home).status()?;
        if !status.success() {
            bail!("chown of {} failed", home.display());
        }
        Ok(())
    }

    /// The master's process id, the root of every Dovecot process of this instance.
    pub fn pid(&self) -> u32 {
        self.process.id().unwrap_or_default()
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
            if self.process.has_exited() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Dropping the Process kills the master if it is still there.
    }
}
