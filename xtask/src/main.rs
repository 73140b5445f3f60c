//! The project's tasks, run as `cargo xtask <task>`:
//!
//! - `ci`: what CI checks: formatting, clippy with `-D warnings`, the test suite, and the
//!   tests that drive real mail clients (installing those clients first).
//! - `bench mailbox`: durable deliveries per second through the gRPC API into the embedded
//!   store, with 1 and 16 concurrent clients, fetches per second, and the server's memory.

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
    /// Formatting, clippy (-D warnings) and the tests, as CI runs them.
    Ci,
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
    use std::io::{BufRead, BufReader};
    eprintln!("$ cargo {}", args.join(" "));
    let mut child = Command::new("cargo")
        .args(args)
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

/// Installs the mail clients the real-client tests use (Debian packages), when missing.
fn install_clients() -> anyhow::Result<()> {
    let missing: Vec<&str> =
        [("swaks", "/usr/bin/swaks"), ("fetchmail", "/usr/bin/fetchmail"), ("isync", "/usr/bin/mbsync")]
            .into_iter()
            .filter(|(_, path)| !std::path::Path::new(path).exists())
            .map(|(pkg, _)| pkg)
            .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(&missing);
    if run("apt-get", &args).is_err() {
        run("apt-get", &["update"])?;
        run("apt-get", &args)?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Ci => {
            install_clients()?;
            run("cargo", &["fmt", "--all", "--", "--check"])?;
            run("cargo", &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
            let mut total = test(&["test", "--workspace"])?;
            // The tests that drive real mail clients from Debian packages.
            let clients = test(&["test", "-p", "tern-tests", "--", "--ignored"])?;
            total.0 += clients.0;
            total.1 += clients.1;
            println!("ci: {} passed, {} failed", total.0, total.1);
            if total.1 > 0 {
                bail!("{} tests failed", total.1);
            }
            Ok(())
        }
        Task::Bench { which } => bench::run(which),
    }
}
