//! Platform backup and restore, for both backends: a directory holding a consistent copy of
//! the metadata, the message bodies, and a manifest (`backup.json`).
//!
//! The order is what makes the pair consistent while mail keeps arriving: **metadata first,
//! then bodies.** Every body the metadata copy refers to was stored before it was referred to,
//! and is deleted only after nothing has referred to it for the grace period
//! (`blob_grace_secs`, an hour), so copying the bodies afterwards finds them all, provided it
//! ends within the grace period. On this replica the collector is held off meanwhile, so the
//! grace period only matters for the collectors of other replicas.
//! - **Embedded:** one redb read transaction copied table by table into a new database
//!   (`metadata.redb`), while writers go on.
//! - **NATS:** JetStream's own stream snapshots (sequences and all), of the snapshot bucket
//!   before the mail stream (a snapshot names a stream sequence, which must be in the copy),
//!   then the directory, the parsed structures, the queue and Sieve's tracking.
//! - **Bodies:** every body in the blob store, into `blobs/` in the same layout as a local
//!   store.
//!
//! Left out on purpose: the full-text index (rebuilt from the messages after a restore;
//! searches stay correct meanwhile) and rate counters (which expire within a day anyway).
//!
//! A restore goes into an empty installation with the service stopped (`tern restore`), and
//! gives back the same IMAP view: UIDs, UIDVALIDITY, MODSEQ, flags, and for QRESYNC the
//! expunge history.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{
    blobs::BlobStore,
    error::{MailboxError, Result},
    service::MailboxService,
};

/// The manifest's file name in a backup directory.
pub const MANIFEST: &str = "backup.json";
/// Where the bodies are in a backup directory.
pub const BLOBS_DIR: &str = "blobs";
/// Bodies copied at once.
const PARALLEL_COPIES: usize = 16;

/// What a backup holds, written last: a directory without it is an unfinished backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// The format of this directory; a restore refuses one it does not know.
    pub format: u32,
    /// `embedded` or `nats`.
    pub backend: String,
    /// When the metadata was copied (Unix seconds).
    pub created: i64,
    /// What the metadata copy holds, for people.
    pub metadata: String,
    /// How many bodies were copied (none when `bodies_left_in` says where they are).
    pub bodies: u64,
    /// The bytes of those bodies.
    pub body_bytes: u64,
    /// For a metadata-only backup: the body store the bodies stayed in, which a restore must
    /// be given (or a copy of it made after the backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bodies_left_in: Option<String>,
}

const FORMAT: u32 = 1;

fn io(context: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> MailboxError {
    move |e| MailboxError::Backup(format!("{context}: {e}"))
}

/// Makes `dir` an empty directory for a backup, refusing one with anything in it.
fn prepare(dir: &Path) -> Result<()> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(io(format!("reading {}", dir.display())))?;
        if entries.next().is_some() {
            return Err(MailboxError::Backup(format!(
                "{} is not empty: a backup goes into a new directory",
                dir.display()
            )));
        }
    }
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))
}

/// Progress of a backup or restore: a phase, and how far into it.
pub type Progress<'a> = &'a (dyn Fn(&str, u64, u64) + Send + Sync);

impl MailboxService {
    /// Backs up the whole installation into the new directory `dir` on this service's file
    /// system, while it keeps serving; with `metadata_only`, the bodies stay in the body store
    /// (to be copied with its own tools afterwards, which the order above makes consistent).
    pub async fn backup(&self, dir: &Path, metadata_only: bool, progress: Progress<'_>) -> Result<Manifest> {
        prepare(dir)?;
        progress("metadata", 0, 1);
        let created = crate::store::now();
        let metadata = self.store.backup(dir).await?;
        progress("metadata", 1, 1);
        let (bodies, body_bytes) = if metadata_only {
            (0, 0)
        } else {
            // The collector of this replica waits until the bodies are copied.
            let _gate = self.blob_gate.read().await;
            copy_bodies(&self.blobs, &BlobStore::local(dir.join(BLOBS_DIR))?, progress).await?
        };
        let manifest = Manifest {
            format: FORMAT,
            backend: if self.store.counts_references() { "embedded" } else { "nats" }.to_string(),
            created,
            metadata,
            bodies,
            body_bytes,
            bodies_left_in: metadata_only.then(|| self.blobs.location().to_string()),
        };
        write_manifest(dir, &manifest)?;
        Ok(manifest)
    }
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| MailboxError::Backup(e.to_string()))?;
    let tmp = dir.join(format!("{MANIFEST}.tmp"));
    std::fs::write(&tmp, json).map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, dir.join(MANIFEST)).map_err(io("finishing the manifest"))
}

/// Reads a finished backup's manifest.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let bytes = std::fs::read(&path)
        .map_err(io(format!("reading {} (a directory without it is not a finished backup)", path.display())))?;
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| MailboxError::Backup(format!("{}: {e}", path.display())))?;
    if manifest.format != FORMAT {
        return Err(MailboxError::Backup(format!("{} is of format {}, not {FORMAT}", path.display(), manifest.format)));
    }
    Ok(manifest)
}

/// Copies every body of `from` into `to`; gives how many and their bytes.
async fn copy_bodies(from: &BlobStore, to: &BlobStore, progress: Progress<'_>) -> Result<(u64, u64)> {
    use futures::{StreamExt, TryStreamExt};
    let ids = from.list_older_than(i64::MAX).await?;
    let total = ids.len() as u64;
    progress("bodies", 0, total);
    let mut done = 0u64;
    let mut bytes = 0u64;
    let mut copies = futures::stream::iter(ids)
        .map(|id| async move {
            let body = from.get(&id).await?;
            let n = body.len() as u64;
            to.put(&id, body).await?;
            Ok::<_, MailboxError>(n)
        })
        .buffer_unordered(PARALLEL_COPIES);
    while let Some(n) = copies.try_next().await? {
        done += 1;
        bytes += n;
        if done.is_multiple_of(256) || done == total {
            progress("bodies", done, total);
        }
    }
    Ok((done, bytes))
}

/// Where a restore goes: the installation's metadata store, empty, and its blob store.
#[derive(Debug)]
pub enum Target {
    /// The data directory of the embedded backend (its `metadata.redb` must not exist).
    Embedded { data_dir: PathBuf },
    /// A NATS server or cluster without any of the prefix's streams.
    Nats { connection: crate::store::nats::NatsConnection, prefix: String },
}

/// Restores the backup in `dir` into `target` and `blobs`, which must be an empty
/// installation; the mailbox service must not be running on it.
pub async fn restore(dir: &Path, target: Target, blobs: &BlobStore, progress: Progress<'_>) -> Result<Manifest> {
    let manifest = read_manifest(dir)?;
    progress("metadata", 0, 1);
    match (&target, manifest.backend.as_str()) {
        (Target::Embedded { data_dir }, "embedded") => {
            let dest = data_dir.join(crate::store::embedded::DATABASE_FILE);
            if dest.exists() {
                return Err(MailboxError::Backup(format!(
                    "{} exists: a restore goes into an empty installation (move it away first)",
                    dest.display()
                )));
            }
            std::fs::create_dir_all(data_dir).map_err(io(format!("creating {}", data_dir.display())))?;
            let tmp = data_dir.join(format!("{}.restoring", crate::store::embedded::DATABASE_FILE));
            std::fs::copy(dir.join(crate::store::embedded::DATABASE_FILE), &tmp).map_err(io("copying the metadata"))?;
            std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io("syncing the metadata"))?;
            std::fs::rename(&tmp, &dest).map_err(io("finishing the metadata"))?;
        }
        (Target::Nats { connection, prefix }, "nats") => {
            crate::store::nats::backup::restore(connection, prefix, dir).await?;
        }
        (_, backend) => {
            return Err(MailboxError::Backup(format!(
                "this backup is of the {backend} backend, and restores only into that backend"
            )));
        }
    }
    progress("metadata", 1, 1);
    if manifest.bodies_left_in.is_none() {
        copy_bodies(&BlobStore::local(dir.join(BLOBS_DIR))?, blobs, progress).await?;
    }
    Ok(manifest)
}
