//! The index on the distributed backend: segments in the object store, one writer per account
//! elected through NATS, and every replica a reader with a local copy.
//!
//! Why this shape: an index is per account and written in bursts (deliveries), and read by
//! whichever replica a search reaches. Keeping tantivy's files where the bodies are (S3) makes
//! them survive any process, and a replica that starts, or takes over, downloads them instead
//! of reading every body again. Tantivy's segment files never change once written (new names
//! for new segments, deletes as new files), so copying is the whole protocol:
//!
//! - **Writer.** Before a pass, the indexer takes or renews the account's lease (a KV entry
//!   holding the replica's name and an expiry, changed by compare-and-set; `[search]
//!   writer_lease_secs`, 30 s by default). A replica
//!   that has just become the writer first brings its local copy to the published manifest.
//!   After a commit it uploads the files it has not uploaded yet to `index/<account>/<file>`,
//!   then publishes the manifest (tantivy's `meta.json`, the file list and the [`Marks`]) by
//!   compare-and-set on the manifest's revision. A writer that lost its lease meanwhile loses
//!   that race, drops its writer and reloads: the manifest only ever names uploaded files, and
//!   never goes back.
//! - **Reader.** A search reads the manifest's revision (one KV read); when it changed, the
//!   replica downloads the files it lacks, writes `meta.json` and reloads. The marks come with
//!   the manifest, so a reader covers exactly what the files cover.
//! - **Loss of a process.** A writer that dies leaves a lease that expires; the next change or
//!   search on another replica takes it over from the last manifest. Work it had not published
//!   is redone. A reader that dies loses a cache.
//! - Files a newer manifest no longer names are deleted from the object store [`GRACE`] after,
//!   so that a reader still downloading the previous manifest finds them.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Account, FullText, fts_err};
use crate::{
    blobs::BlobStore,
    error::Result,
    fts::index::{AccountIndex, Marks, Snapshot},
};

/// How long files dropped from the manifest stay in the object store.
pub const GRACE: Duration = Duration::from_secs(120);

/// What the backend provides for sharing indexes between replicas: the leases and manifests.
#[async_trait::async_trait]
pub trait IndexCoordination: Send + Sync + std::fmt::Debug {
    /// Takes or renews the lease on writing `account`'s index for `holder`; false when another
    /// holder has it.
    async fn lease(&self, account: u64, holder: &str, ttl: Duration) -> Result<bool>;
    /// The account's manifest and its revision, when one was published.
    async fn manifest(&self, account: u64) -> Result<Option<(Bytes, u64)>>;
    /// Publishes a manifest if the current one is still at `expected` (0: none yet); `None`
    /// when another writer published first.
    async fn put_manifest(&self, account: u64, manifest: Bytes, expected: u64) -> Result<Option<u64>>;
}

/// The published state of an account's index.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Manifest {
    /// tantivy's `meta.json` of the commit.
    meta: String,
    /// The files the commit's segments consist of.
    files: Vec<String>,
    marks: Marks,
}

#[derive(Debug, Default)]
struct State {
    /// The manifest revision the local copy is at.
    revision: u64,
    /// Until when this replica holds the lease, as far as it knows.
    leading_until: Option<Instant>,
    /// Files known to be in the object store.
    uploaded: HashSet<String>,
    /// Files dropped from the manifest, and when.
    dropped: Vec<(Instant, Vec<String>)>,
}

#[derive(Debug, Clone)]
pub struct Shared {
    coordination: Arc<dyn IndexCoordination>,
    blobs: BlobStore,
    holder: String,
    /// How long a lease lasts without renewal.
    lease: Duration,
    accounts: Arc<Mutex<HashMap<u64, Arc<tokio::sync::Mutex<State>>>>>,
}

fn object(account: u64, file: &str) -> String {
    format!("index/{account}/{file}")
}

impl Shared {
    pub fn new(coordination: Arc<dyn IndexCoordination>, blobs: BlobStore, lease: Duration) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "tern".into());
        let nonce: u64 = rand_u64();
        Self {
            coordination,
            blobs,
            holder: format!("{host}-{}-{nonce:016x}", std::process::id()),
            lease,
            accounts: Arc::default(),
        }
    }

    fn state(&self, account: u64) -> Arc<tokio::sync::Mutex<State>> {
        Arc::clone(self.accounts.lock().unwrap_or_else(|e| e.into_inner()).entry(account).or_default())
    }

    /// Brings the local copy to the published manifest when it changed; answers the snapshot
    /// searches read. A replica whose lease is current reads its own commits.
    pub(super) async fn refresh(&self, fts: &FullText, account_id: u64) -> Result<Option<Snapshot>> {
        let account = fts.account(account_id)?;
        let state = self.state(account_id);
        // A writer uploading segments, or another search downloading them, holds the state
        // for seconds: a search does not wait, but reads the copy it has, which is consistent
        // with its marks (what it lacks is read).
        let Ok(mut state) = state.try_lock() else {
            return Ok(account.snapshot.lock().unwrap_or_else(|e| e.into_inner()).clone());
        };
        if state.leading_until.is_some_and(|until| until > Instant::now()) {
            return Ok(account.snapshot.lock().unwrap_or_else(|e| e.into_inner()).clone());
        }
        self.sync(account_id, &account, &mut state).await?;
        Ok(account.snapshot.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Downloads what the newest manifest names and the local copy lacks, and reloads.
    async fn sync(&self, account_id: u64, account: &Account, state: &mut State) -> Result<()> {
        let Some((bytes, revision)) = self.coordination.manifest(account_id).await? else {
            return Ok(());
        };
        if revision == state.revision {
            return Ok(());
        }
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| fts_err("reading the manifest", e))?;
        let dir = account.index.dir();
        for file in &manifest.files {
            if dir.join(file).exists() {
                continue;
            }
            let content = self.blobs.get_object(&object(account_id, file)).await?;
            write_atomically(&dir, file, &content)?;
            state.uploaded.insert(file.clone());
        }
        write_atomically(&dir, "meta.json", manifest.meta.as_bytes())?;
        let snapshot = account.index.snapshot(manifest.marks.clone()).map_err(|e| fts_err("reloading", e))?;
        *account.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Some(snapshot);
        state.revision = revision;
        Ok(())
    }

    /// Takes or renews the lease before a pass of the indexer; false when another replica
    /// writes this account. On taking it over, the local copy is first brought to the manifest.
    pub(super) async fn lead(&self, fts: &FullText, account_id: u64, account: &Account) -> Result<bool> {
        let _ = fts;
        let state = self.state(account_id);
        let mut state = state.lock().await;
        if !self.coordination.lease(account_id, &self.holder, self.lease).await? {
            if state.leading_until.take().is_some() {
                *account.writer.lock().await = None;
            }
            return Ok(false);
        }
        let was_leading = state.leading_until.is_some_and(|until| until > Instant::now());
        if !was_leading {
            // Whatever this replica wrote before is not to be trusted over the manifest.
            *account.writer.lock().await = None;
            self.sync(account_id, account, &mut state).await?;
        }
        // Renewed well before it expires: the lease is taken again at every pass.
        state.leading_until = Some(Instant::now() + self.lease / 2);
        Ok(true)
    }

    /// After a commit: uploads the new files and publishes the manifest.
    pub(super) async fn publish(&self, account_id: u64, index: &AccountIndex, marks: &Marks) -> Result<()> {
        let state = self.state(account_id);
        let mut state = state.lock().await;
        let dir = index.dir();
        let meta = std::fs::read_to_string(dir.join("meta.json")).map_err(|e| fts_err("reading meta.json", e))?;
        let files = index.files().map_err(|e| fts_err("listing segment files", e))?;
        for file in &files {
            if state.uploaded.contains(file) {
                continue;
            }
            let content = tokio::fs::read(dir.join(file)).await.map_err(|e| fts_err("reading a segment file", e))?;
            self.blobs.put_object(&object(account_id, file), Bytes::from(content)).await?;
            state.uploaded.insert(file.clone());
        }
        let previous: HashSet<String> = match self.coordination.manifest(account_id).await? {
            Some((bytes, _)) => {
                serde_json::from_slice::<Manifest>(&bytes).map(|m| m.files.into_iter().collect()).unwrap_or_default()
            }
            None => HashSet::new(),
        };
        let manifest = Manifest { meta, files: files.clone(), marks: marks.clone() };
        let body = serde_json::to_vec(&manifest).map_err(|e| fts_err("writing the manifest", e))?;
        match self.coordination.put_manifest(account_id, Bytes::from(body), state.revision).await? {
            Some(revision) => state.revision = revision,
            None => {
                // Another replica published meanwhile: this one is no longer the writer.
                state.leading_until = None;
                return Err(fts_err("publishing", "another replica writes this account's index now"));
            }
        }
        let current: HashSet<&String> = files.iter().collect();
        let gone: Vec<String> = previous.into_iter().filter(|f| !current.contains(f)).collect();
        if !gone.is_empty() {
            state.dropped.push((Instant::now(), gone));
        }
        let (due, keep): (Vec<_>, Vec<_>) =
            std::mem::take(&mut state.dropped).into_iter().partition(|(at, _)| at.elapsed() > GRACE);
        state.dropped = keep;
        for (_, files) in due {
            for file in files {
                let _ = self.blobs.delete_object(&object(account_id, &file)).await;
                state.uploaded.remove(&file);
            }
        }
        Ok(())
    }
}

fn write_atomically(dir: &Path, name: &str, content: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.download"));
    std::fs::write(&tmp, content)
        .and_then(|()| std::fs::rename(&tmp, dir.join(name)))
        .map_err(|e| fts_err("writing a downloaded file", e))
}

fn rand_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // The nonce only tells apart two processes of the same host and pid (a restarted
    // container); the clock's nanoseconds do that.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    bytes.copy_from_slice(&(nanos as u64).to_le_bytes());
    u64::from_le_bytes(bytes)
}
