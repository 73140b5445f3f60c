//! `tern admin backup` (asks a running mailbox service for a backup of the whole
//! installation) and `tern restore` (puts one back into an empty installation, with the
//! service stopped). What a backup holds and why it is consistent: `tern_mailbox::backup`.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use tern_proto::v1::{BackupRequest, admin_client::AdminClient};
use tern_runtime::rpc::Channel;

use crate::config::Config;

/// Asks the mailbox service for a backup into `dir` (on its file system), showing progress.
pub async fn backup(admin: &mut AdminClient<Channel>, dir: String, metadata_only: bool) -> anyhow::Result<()> {
    let progress = super::progress::Progress::new("backup", 1);
    let p = progress.account("installation");
    let mut stream = admin
        .backup(BackupRequest { dir: dir.clone(), metadata_only })
        .await
        .map_err(|s| anyhow!("backup: {}", s.message()))?
        .into_inner();
    let mut started = false;
    while let Some(msg) = stream.message().await.map_err(|s| anyhow!("backup: {}", s.message()))? {
        if !msg.manifest.is_empty() {
            p.finish(&format!("{} bodies", msg.done));
            progress.finish();
            println!("backup written to {dir}:\n{}", msg.manifest);
            return Ok(());
        }
        if msg.phase == "bodies" && !started && msg.total > 0 {
            p.start(msg.total, 0);
            started = true;
        }
        p.phase(&msg.phase);
        if msg.phase == "bodies" && started {
            p.set(msg.done);
        }
    }
    Err(anyhow!("the mailbox service ended the backup without finishing it"))
}

/// `tern restore`: the backup in `dir` into the installation `config` describes, which must
/// be empty, with its mailbox service stopped.
pub async fn restore(config: Config, dir: PathBuf) -> anyhow::Result<()> {
    let location = config.blobs.location(&config.data_dir).context("invalid [blobs] configuration")?;
    let blobs = tern_mailbox::blobs::BlobStore::open(&location)
        .with_context(|| format!("cannot open the body store {location}"))?;
    let target = match config.store.nats()? {
        Some(connection) => tern_mailbox::backup::Target::Nats { connection, prefix: config.store.prefix.clone() },
        None => tern_mailbox::backup::Target::Embedded { data_dir: config.data_dir.clone() },
    };
    let progress = super::progress::Progress::new("restore", 1);
    let p = progress.account("installation");
    let started = std::sync::atomic::AtomicBool::new(false);
    let report = |phase: &str, done: u64, total: u64| {
        if phase == "bodies" && !started.swap(true, std::sync::atomic::Ordering::Relaxed) {
            p.start(total, 0);
        }
        p.phase(phase);
        if phase == "bodies" {
            p.set(done);
        }
    };
    let manifest = tern_mailbox::backup::restore(&dir, target, &blobs, &report)
        .await
        .with_context(|| format!("restoring {}", dir.display()))?;
    p.finish(&format!("{} bodies", manifest.bodies));
    progress.finish();
    let bodies = match &manifest.bodies_left_in {
        Some(left) => format!("bodies not in the backup: they were in {left}, and must be in {location}"),
        None => format!("{} bodies into {location}", manifest.bodies),
    };
    println!(
        "restored the {} backup of {} ({}; {bodies}); start the mailbox service now (the full-text index \
         rebuilds itself)",
        manifest.backend, manifest.created, manifest.metadata,
    );
    Ok(())
}
