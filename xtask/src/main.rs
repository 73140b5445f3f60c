//! The project's tasks, run as `cargo xtask <task>`:
//!
//! - `ci`: what CI checks: formatting, clippy with `-D warnings`, and the test suite.
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

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Ci => {
            run("cargo", &["fmt", "--all", "--", "--check"])?;
            run("cargo", &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
            run("cargo", &["test", "--workspace"])?;
            Ok(())
        }
        Task::Bench { which } => bench::run(which),
    }
}
