//! The full-text index (issue #19): one tantivy index per account, derived from the messages,
//! kept current in the background, and asked by `SearchText` which messages contain a string.
//!
//! **What it promises.** The index never decides an answer on its own about a message it does
//! not cover. Each commit records, per folder, the UID below which every message has been
//! indexed and the MODSEQ up to which expunges have been applied ([`index::Marks`]); a search
//! reads from the index only the messages below those marks, and reads (scans) the others: the
//! message appended a moment ago, one the index skipped for its size, every message when the
//! index is missing or broken. So a stale, missing or half-written index costs time, never a
//! wrong answer. How a search string maps onto index terms, exactly or as a narrowing whose
//! candidates are read and checked, is [`analyzer`]'s.
//!
//! **How it is kept.** Writes of mail wake the indexer for their account ([`FullText::touch`]);
//! the store's feed of accounts changed on other replicas does too. The indexer waits
//! [`Settings::commit_delay`] to gather more, then asks the store for what changed after its
//! marks (messages at or above the next UID of each folder, UIDs expunged after the MODSEQ,
//! folders gone), reads the new bodies, adds and deletes documents, and commits with the new
//! marks, in batches of at most [`Settings::batch`] messages. It runs beside delivery, never in
//! its path: a 250 or an APPEND OK never waits for it.
//!
//! **Where it lives.** On the embedded backend, in `index/<account>` next to the data. On NATS,
//! see [`shared`]: the segments are in the object store and one replica at a time writes an
//! account's index.

pub mod analyzer;
pub mod index;
pub mod shared;

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use futures::StreamExt;
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use tantivy::IndexWriter;
use tokio::sync::mpsc;

use crate::{
    blobs::BlobStore,
    error::{MailboxError, Result},
    store::MetadataStore,
};
use index::{AccountIndex, FolderMark, Marks, NewDoc, Snapshot};

/// The least memory tantivy lets a writer have.
pub const MIN_WRITER_MEMORY: usize = 15_000_000;

/// The full-text index's settings (`[search]`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Index at all; when off, every text search reads the messages.
    pub enabled: bool,
    /// Where the indexes are kept when the backend has no directory of its own (NATS: the
    /// replica's cache of the shared indexes).
    pub dir: Option<PathBuf>,
    /// Messages larger than this are not indexed (searches read them).
    pub max_message_bytes: u64,
    /// Nor those whose decoded text is larger than this.
    pub max_text_bytes: usize,
    /// Memory of an account's writer (tantivy takes at least 15 MB).
    pub writer_memory: usize,
    /// Writers kept open at once; the least recently used is closed past this.
    pub max_open_writers: usize,
    /// How long the indexer gathers changes before it indexes them.
    pub commit_delay: Duration,
    /// Most messages indexed in one commit.
    pub batch: usize,
    /// On NATS, how long an account's index writer holds its lease without renewing it: how
    /// soon another replica takes over from one that died.
    pub lease: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
            max_message_bytes: 25 * 1024 * 1024,
            max_text_bytes: 4 * 1024 * 1024,
            writer_memory: MIN_WRITER_MEMORY,
            max_open_writers: 4,
            commit_delay: Duration::from_millis(1000),
            batch: 2000,
            lease: Duration::from_secs(30),
        }
    }
}

/// The index's metrics, registered at first use.
#[derive(Debug)]
struct FtsMetrics {
    /// Messages known to be waiting for the index.
    lag_messages: Gauge,
    /// Seconds since the oldest change the index has not caught up with.
    lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    indexed: Counter,
    skipped: Counter,
    /// Messages a search answered from the index, and those it read.
    answered: Counter,
    scanned: Counter,
}

fn metrics() -> &'static FtsMetrics {
    static M: OnceLock<FtsMetrics> = OnceLock::new();
    M.get_or_init(|| {
        let m = FtsMetrics {
            lag_messages: Gauge::default(),
            lag_seconds: Gauge::default(),
            indexed: Counter::default(),
            skipped: Counter::default(),
            answered: Counter::default(),
            scanned: Counter::default(),
        };
        let r = tern_runtime::metrics::Metrics::global();
        r.register(
            "search_index_lag_messages",
            "Messages the full-text index has not caught up with",
            m.lag_messages.clone(),
        );
        r.register(
            "search_index_lag_seconds",
            "Age of the oldest change the full-text index has not caught up with",
            m.lag_seconds.clone(),
        );
        r.register("search_indexed_messages", "Messages added to the full-text index", m.indexed.clone());
        r.register(
            "search_skipped_messages",
            "Messages left out of the full-text index for their size",
            m.skipped.clone(),
        );
        r.register("search_answered_messages", "Messages a text search answered from the index", m.answered.clone());
        r.register(
            "search_scanned_messages",
            "Messages a text search read because the index did not cover or could not decide them",
            m.scanned.clone(),
        );
        m
    })
}

/// Counts what a search did.
pub fn count_search(answered: u64, scanned: u64) {
    metrics().answered.inc_by(answered);
    metrics().scanned.inc_by(scanned);
}

fn fts_err(context: &str, e: impl std::fmt::Display) -> MailboxError {
    MailboxError::Index(format!("{context}: {e}"))
}

/// One account's index, open.
struct Account {
    index: AccountIndex,
    /// What searches read: the newest commit this process knows with its marks.
    snapshot: Mutex<Option<Snapshot>>,
    writer: tokio::sync::Mutex<Option<IndexWriter>>,
    last_write: Mutex<Instant>,
    /// When a search or the indexer last opened it, so that idle accounts are closed.
    last_used: Mutex<Instant>,
}

/// How long an account's index stays open without a search or a write. Each open index maps
/// its segment files, and a server of many accounts would otherwise keep them all mapped.
const IDLE_ACCOUNT: Duration = Duration::from_secs(600);

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account").finish_non_exhaustive()
    }
}

/// The indexes of this process.
#[derive(Debug, Clone)]
pub struct FullText {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: Settings,
    root: PathBuf,
    store: Arc<dyn MetadataStore>,
    blobs: BlobStore,
    accounts: Mutex<HashMap<u64, Arc<Account>>>,
    /// Accounts to catch up, and since when; the indexer task is started at the first.
    pending: Mutex<HashMap<u64, Instant>>,
    wake: OnceLock<mpsc::UnboundedSender<()>>,
    shared: Option<shared::Shared>,
    /// The indexes are a cache of this process's (the NATS backend's local copies in a
    /// temporary directory), removed when the service is dropped.
    ephemeral: bool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.ephemeral {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// A message the indexer is to read and add.
#[derive(Debug)]
struct Add {
    folder: u64,
    uid: u32,
    blob_id: String,
    size: u64,
}

/// What one pass of the indexer does for an account.
#[derive(Debug, Default)]
struct Work {
    adds: Vec<Add>,
    deletes: Vec<(u64, u32)>,
    dropped_folders: Vec<u64>,
    marks: Marks,
    /// More messages wait after this batch.
    more: bool,
}

impl Work {
    fn is_empty(&self) -> bool {
        self.adds.is_empty() && self.deletes.is_empty() && self.dropped_folders.is_empty()
    }
}

/// Decides the next batch against the account's state.
fn plan_work(view: &dyn crate::store::log::View, marks: &Marks, batch: usize) -> Result<Work> {
    let mut work = Work::default();
    let folders = view.folders()?;
    let present: HashSet<u64> = folders.iter().map(|f| f.id).collect();
    work.dropped_folders = marks.folders.keys().filter(|id| !present.contains(id)).copied().collect();
    for f in &folders {
        let old = marks.folders.get(&f.id).copied();
        let mut next = old.map_or(1, |m| m.next_uid.max(1));
        if let Some(old) = old
            && old.modseq < f.highest_modseq
        {
            for uid in view.vanished_since(f.id, old.modseq)? {
                if uid < old.next_uid {
                    work.deletes.push((f.id, uid));
                }
            }
        }
        let mut full = false;
        view.each_message_from(f.id, next, &mut |m| {
            if work.adds.len() < batch {
                work.adds.push(Add { folder: f.id, uid: m.uid, blob_id: m.blob_id.clone(), size: m.size });
                next = m.uid + 1;
            } else {
                full = true;
            }
        })?;
        if !full {
            next = next.max(f.uidnext);
        }
        work.more |= full;
        work.marks.folders.insert(f.id, FolderMark { next_uid: next, modseq: f.highest_modseq });
    }
    Ok(work)
}

impl FullText {
    /// Indexes kept in `root` (one directory per account), of the mail in `store`.
    pub fn new(
        settings: Settings,
        root: PathBuf,
        ephemeral: bool,
        store: Arc<dyn MetadataStore>,
        blobs: BlobStore,
    ) -> Self {
        let _ = metrics();
        let shared = store.index_coordination().map(|c| shared::Shared::new(c, blobs.clone(), settings.lease));
        Self {
            inner: Arc::new(Inner {
                settings,
                root,
                store,
                blobs,
                accounts: Mutex::new(HashMap::new()),
                pending: Mutex::new(HashMap::new()),
                wake: OnceLock::new(),
                shared,
                ephemeral,
            }),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Asks the indexer to catch up with `account_id` soon. Cheap; call after every write of
    /// mail.
    pub fn touch(&self, account_id: u64) {
        self.inner.pending.lock().unwrap_or_else(|e| e.into_inner()).entry(account_id).or_insert_with(Instant::now);
        if let Some(wake) = self.start() {
            let _ = wake.send(());
        }
    }

    /// Starts the indexer, and the task that follows the store's changes of every account (on
    /// NATS, those written through other replicas, so that this replica indexes the accounts
    /// whose writer it is). Outside a tokio runtime nothing starts, and searches read the
    /// messages.
    pub fn start(&self) -> Option<&mpsc::UnboundedSender<()>> {
        if let Some(wake) = self.inner.wake.get() {
            return Some(wake);
        }
        let handle = tokio::runtime::Handle::try_current().ok()?;
        Some(self.inner.wake.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            handle.spawn(run(Arc::downgrade(&self.inner), rx));
            if let Some(mut feed) = self.inner.store.mail_changes() {
                let weak = Arc::downgrade(&self.inner);
                handle.spawn(async move {
                    while let Some(id) = feed.next().await {
                        let Some(inner) = weak.upgrade() else { return };
                        FullText { inner }.touch(id);
                    }
                });
            }
            tx
        }))
    }

    fn account(&self, account_id: u64) -> Result<Arc<Account>> {
        let mut accounts = self.inner.accounts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = accounts.get(&account_id) {
            *a.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            return Ok(Arc::clone(a));
        }
        let dir = self.inner.root.join(account_id.to_string());
        let index = match AccountIndex::open(&dir) {
            Ok(index) => index,
            Err(error) => {
                // Derived data: an index that cannot be opened is rebuilt, and searches read
                // the messages meanwhile.
                tracing::warn!(account = account_id, %error, "the full-text index is unreadable; rebuilding it");
                let _ = std::fs::remove_dir_all(&dir);
                AccountIndex::open(&dir).map_err(|e| fts_err("creating", e))?
            }
        };
        let marks = index.committed_marks().map_err(|e| fts_err("reading", e))?;
        let snapshot = index.snapshot(marks).map_err(|e| fts_err("reading", e))?;
        let account = Arc::new(Account {
            index,
            snapshot: Mutex::new(Some(snapshot)),
            writer: tokio::sync::Mutex::new(None),
            last_write: Mutex::new(Instant::now()),
            last_used: Mutex::new(Instant::now()),
        });
        accounts.insert(account_id, Arc::clone(&account));
        Ok(account)
    }

    /// What searches of `account_id` read now, when there is an index to read.
    pub async fn snapshot(&self, account_id: u64) -> Option<Snapshot> {
        if !self.inner.settings.enabled {
            return None;
        }
        if let Some(shared) = &self.inner.shared {
            match shared.refresh(self, account_id).await {
                Ok(snapshot) => return snapshot,
                Err(error) => {
                    tracing::warn!(account = account_id, %error, "cannot read the shared full-text index; searches read the messages");
                    return None;
                }
            }
        }
        let account = self.account(account_id).ok()?;
        account.snapshot.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The bytes of the account's index on this process's disk.
    pub fn index_bytes(&self, account_id: u64) -> u64 {
        let dir = self.inner.root.join(account_id.to_string());
        std::fs::read_dir(dir)
            .map(|entries| {
                entries.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
            })
            .unwrap_or(0)
    }

    /// Forgets an account's index (the account was deleted).
    pub fn forget(&self, account_id: u64) {
        self.inner.accounts.lock().unwrap_or_else(|e| e.into_inner()).remove(&account_id);
        let _ = std::fs::remove_dir_all(self.inner.root.join(account_id.to_string()));
    }

    /// Drops an account's index and builds it again from its messages, calling `progress`
    /// with (done, total, bytes) after each batch.
    pub async fn reindex(&self, account_id: u64, progress: &(dyn Fn(u64, u64, u64) + Send + Sync)) -> Result<()> {
        let account = self.account(account_id)?;
        let total = self.inner.store.usage(account_id).await?.messages;
        if let Some(shared) = &self.inner.shared
            && !shared.lead(self, account_id, &account).await?
        {
            // Only the writer may replace the published index; it is elsewhere until its
            // lease lapses.
            return Err(MailboxError::Index(format!(
                "another mailbox replica writes the index of this account; try again in {} s",
                self.inner.settings.lease.as_secs()
            )));
        }
        {
            let mut writer = account.writer.lock().await;
            let w = match writer.as_mut() {
                Some(w) => w,
                None => writer.insert(
                    account
                        .index
                        .writer(self.inner.settings.writer_memory)
                        .map_err(|e| fts_err("opening a writer", e))?,
                ),
            };
            w.delete_all_documents().map_err(|e| fts_err("clearing", e))?;
            AccountIndex::commit(w, &Marks::default()).map_err(|e| fts_err("clearing", e))?;
            let snapshot = account.index.snapshot(Marks::default()).map_err(|e| fts_err("reading", e))?;
            *account.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Some(snapshot);
        }
        let (mut done, mut bytes) = (0u64, 0u64);
        progress(0, total, 0);
        loop {
            let (added, added_bytes, more) = self.catch_up_account(account_id, &account).await?;
            // Done is what the index holds since it was cleared, not only what this loop added:
            // the background indexer may take a batch in between (a search touched the
            // account meanwhile), and those messages are indexed all the same.
            let held = account
                .snapshot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .and_then(|s| s.counts().ok())
                .map_or(0, |(docs, _)| docs);
            done = (done + added).max(held);
            bytes += added_bytes;
            progress(done, total.max(done), bytes);
            if !more {
                break;
            }
        }
        Ok(())
    }

    /// One pass for an account: plans a batch, indexes it, commits. Answers the messages and
    /// bytes added and whether more wait.
    async fn catch_up_account(&self, account_id: u64, account: &Account) -> Result<(u64, u64, bool)> {
        let settings = &self.inner.settings;
        if let Some(shared) = &self.inner.shared
            && !shared.lead(self, account_id, account).await?
        {
            return Ok((0, 0, false));
        }
        let mut writer = account.writer.lock().await;
        let marks = match account.snapshot.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(s) => (*s.marks).clone(),
            None => Marks::default(),
        };
        let batch = settings.batch;
        let work =
            crate::store::read(self.inner.store.as_ref(), account_id, move |v| plan_work(v, &marks, batch)).await?;
        // Nothing to add or delete: the marks are left where they are rather than committed
        // (flag changes move a folder's MODSEQ on every STORE; an expunge after them is still
        // found from the older MODSEQ).
        if work.is_empty() {
            return Ok((0, 0, false));
        }
        metrics().lag_messages.set(work.adds.len() as i64);
        let w = match writer.as_mut() {
            Some(w) => w,
            None => {
                writer.insert(account.index.writer(settings.writer_memory).map_err(|e| fts_err("opening a writer", e))?)
            }
        };
        let fields = account.index.fields;
        for folder in &work.dropped_folders {
            AccountIndex::delete_folder(w, &fields, *folder);
        }
        for (folder, uid) in &work.deletes {
            AccountIndex::delete(w, &fields, *folder, *uid);
        }
        let (max_message, max_text) = (settings.max_message_bytes, settings.max_text_bytes);
        let blobs = self.inner.blobs.clone();
        let adds: Vec<Add> = work.adds;
        let mut docs = futures::stream::iter(adds.into_iter().map(|add| {
            let blobs = blobs.clone();
            async move {
                if add.size > max_message {
                    return Ok::<_, MailboxError>((NewDoc { folder: add.folder, uid: add.uid, text: None }, 0));
                }
                let raw = blobs.get(&add.blob_id).await?;
                let size = raw.len() as u64;
                let (folder, uid) = (add.folder, add.uid);
                let doc = tokio::task::spawn_blocking(move || {
                    let text = tern_mail::text::Searchable::new(&raw);
                    let (header, body) = (text.header_text().to_string(), text.body().to_string());
                    let text = (header.len() + body.len() <= max_text).then_some((header, body));
                    NewDoc { folder, uid, text }
                })
                .await
                .map_err(|e| fts_err("extracting text", e))?;
                Ok((doc, size))
            }
        }))
        .buffered(8);
        let (mut added, mut bytes) = (0u64, 0u64);
        while let Some(doc) = docs.next().await {
            let (doc, size) = match doc {
                Ok(d) => d,
                // A body that cannot be read now (the object store is down) stops the batch
                // without committing; the marks stay, and the next pass retries.
                Err(e) => return Err(e),
            };
            if doc.text.is_none() {
                metrics().skipped.inc();
            }
            AccountIndex::add(w, &fields, &doc).map_err(|e| fts_err("adding", e))?;
            added += 1;
            bytes += size;
        }
        drop(docs);
        let marks = work.marks.clone();
        // Committing writes and syncs files: on a blocking thread, the writer moved there and
        // back (the lock stays held, so nobody else sees it missing).
        let mut taken = writer.take().expect("the writer was opened above");
        let commit_marks = marks.clone();
        let (taken, committed) = tokio::task::spawn_blocking(move || {
            let committed = AccountIndex::commit(&mut taken, &commit_marks);
            (taken, committed)
        })
        .await
        .map_err(|e| fts_err("committing", e))?;
        if let Err(e) = committed {
            // The writer is unusable after a failed commit; it is dropped, and the next pass
            // opens another.
            return Err(fts_err("committing", e));
        }
        *writer = Some(taken);
        let snapshot = account.index.snapshot(marks.clone()).map_err(|e| fts_err("reading", e))?;
        if let Some(shared) = &self.inner.shared {
            shared.publish(account_id, &account.index, &marks).await?;
        }
        *account.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Some(snapshot);
        *account.last_write.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        metrics().indexed.inc_by(added);
        metrics().lag_messages.set(0);
        Ok((added, bytes, work.more))
    }

    /// Closes the writers of all but the most recently written accounts, and the accounts idle
    /// for [`IDLE_ACCOUNT`].
    async fn close_idle_writers(&self) {
        let accounts: Vec<Arc<Account>> =
            self.inner.accounts.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        let mut open: Vec<(Instant, Arc<Account>)> = Vec::new();
        for a in accounts {
            if let Ok(w) = a.writer.try_lock()
                && w.is_some()
            {
                let last = *a.last_write.lock().unwrap_or_else(|e| e.into_inner());
                open.push((last, Arc::clone(&a)));
            }
        }
        open.sort_by_key(|(last, _)| std::cmp::Reverse(*last));
        for (i, (last, a)) in open.into_iter().enumerate() {
            if i >= self.inner.settings.max_open_writers || last.elapsed() > Duration::from_secs(60) {
                let mut w = a.writer.lock().await;
                if let Some(writer) = w.take() {
                    let _ = tokio::task::spawn_blocking(move || writer.wait_merging_threads()).await;
                }
            }
        }
        // Then the accounts nobody has used for a while and nobody holds: opened again (from
        // their directory, with the marks of their last commit) at their next search or write.
        self.inner.accounts.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, a| {
            let idle = a.last_used.lock().unwrap_or_else(|e| e.into_inner()).elapsed() > IDLE_ACCOUNT;
            let closed = a.writer.try_lock().is_ok_and(|w| w.is_none());
            !(idle && closed && Arc::strong_count(a) == 1)
        });
    }
}

/// The indexer: catches up with the accounts touched, one at a time, until the service is
/// dropped.
async fn run(inner: std::sync::Weak<Inner>, mut wake: mpsc::UnboundedReceiver<()>) {
    loop {
        let Some(strong) = inner.upgrade() else { return };
        let delay = strong.settings.commit_delay;
        let has_pending = !strong.pending.lock().unwrap_or_else(|e| e.into_inner()).is_empty();
        drop(strong);
        if !has_pending {
            match tokio::time::timeout(Duration::from_secs(30), wake.recv()).await {
                Ok(None) => return,
                Ok(Some(())) => {}
                Err(_) => {
                    let Some(strong) = inner.upgrade() else { return };
                    FullText { inner: strong }.close_idle_writers().await;
                    continue;
                }
            }
        }
        tokio::time::sleep(delay).await;
        while wake.try_recv().is_ok() {}
        let Some(strong) = inner.upgrade() else { return };
        let fts = FullText { inner: strong };
        let pending: Vec<(u64, Instant)> =
            fts.inner.pending.lock().unwrap_or_else(|e| e.into_inner()).drain().collect();
        if let Some(oldest) = pending.iter().map(|(_, t)| *t).min() {
            metrics().lag_seconds.set(oldest.elapsed().as_secs_f64());
        }
        for (account_id, since) in pending {
            if !fts.inner.settings.enabled {
                continue;
            }
            let account = match fts.account(account_id) {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(account = account_id, %error, "cannot open the full-text index");
                    continue;
                }
            };
            match fts.catch_up_account(account_id, &account).await {
                Ok((_, _, true)) => {
                    // More to do: come back after the other accounts.
                    fts.inner.pending.lock().unwrap_or_else(|e| e.into_inner()).entry(account_id).or_insert(since);
                }
                Ok(_) => {}
                Err(MailboxError::NotFound { .. }) => fts.forget(account_id),
                Err(error) => {
                    tracing::warn!(account = account_id, %error, "indexing failed; retrying later");
                    fts.inner.pending.lock().unwrap_or_else(|e| e.into_inner()).entry(account_id).or_insert(since);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        // What is still pending (a failing account, one with more to do) keeps its age, so a
        // lag that does not come down shows.
        let oldest = fts.inner.pending.lock().unwrap_or_else(|e| e.into_inner()).values().min().copied();
        metrics().lag_seconds.set(oldest.map_or(0.0, |t| t.elapsed().as_secs_f64()));
        fts.close_idle_writers().await;
    }
}
