//! The embedded backend: every record in one redb database file, written by one thread.
//!
//! redb allows one write transaction at a time and makes a commit durable with an fsync. One
//! fsync per delivery would cap a disk at a few hundred deliveries a second, so all writes go
//! through a single writer thread that drains every job waiting in its queue into one
//! transaction and commits them together (group commit). A job is acknowledged only after the
//! commit that holds it has returned, so nothing is acknowledged before it is durable.
//!
//! Because there is exactly one writer, each folder's change log is appended in a total order,
//! and the core ([`super::log`]) decides every change against the state in the very transaction
//! that commits it: UIDNEXT and HIGHESTMODSEQ are read and advanced there, so UIDs and MODSEQs
//! strictly increase in commit order (ARCHITECTURE's invariants 1 and 2). Events are published
//! by the writer thread after each commit, in commit order.
//!
//! A job must check everything that can refuse it before it writes anything: a job that
//! returns a logical error (not found, over quota) simply contributes nothing to the batch. A
//! job that fails with a storage error aborts the whole batch, and every job in it is told so.

use std::{collections::HashMap, path::Path, sync::Arc, thread};

use futures::{StreamExt, stream::BoxStream};
use prost::Message as _;
use redb::{Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use tern_proto::v1::{FolderRef, MailboxEvent, QueuedMessage};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::BroadcastStream;

use super::{
    AccountChanges, AppendOp, Appended, DEFAULT_FOLDERS, MetadataStore, NewMessage, ReadFn, UsageCount, WriteFn, log,
    queue,
};
use crate::{
    error::{MailboxError, Result},
    records::{
        AccountRecord, ChangeRecord, DomainRecord, EventKind, FolderRecord, LogEntry, MessageRecord, ParsedRecord,
    },
};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const DOMAINS: TableDefinition<&str, &[u8]> = TableDefinition::new("domains");
const ACCOUNTS: TableDefinition<u64, &[u8]> = TableDefinition::new("accounts");
const ADDRESSES: TableDefinition<&str, u64> = TableDefinition::new("addresses");
const ALIASES: TableDefinition<&str, u64> = TableDefinition::new("aliases");
const USAGE: TableDefinition<u64, (u64, u64)> = TableDefinition::new("usage");
const FOLDERS: TableDefinition<u64, &[u8]> = TableDefinition::new("folders");
const FOLDER_NAMES: TableDefinition<(u64, &str), u64> = TableDefinition::new("folder_names");
// The subscribed names that no folder has, by account: a subscription outlives its folder (see
// `FolderList`), while a folder's own subscription is its record's `subscribed`.
const SUBSCRIPTIONS: TableDefinition<(u64, &str), ()> = TableDefinition::new("subscriptions");
const MESSAGES: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("messages");
const CHANGES: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("changes");
const PARSED: TableDefinition<&str, &[u8]> = TableDefinition::new("parsed");
const BLOB_REFS: TableDefinition<&str, u64> = TableDefinition::new("blob_refs");
const ORPHANS: TableDefinition<&str, i64> = TableDefinition::new("orphans");
// The outbound queue: entries by id, and an index by due time (next attempt or end of lease)
// so that a claim reads only the entries that are due.
const OUTBOUND: TableDefinition<&str, &[u8]> = TableDefinition::new("outbound");
/// Sieve's tracking records (vacation replies sent, duplicate ids seen): key to expiry, and
/// expiry to key so that expired ones are pruned oldest first.
const TRACKING: TableDefinition<&str, i64> = TableDefinition::new("tracking");
const TRACKING_DUE: TableDefinition<(i64, &str), ()> = TableDefinition::new("tracking_due");
const OUTBOUND_DUE: TableDefinition<(i64, &str), ()> = TableDefinition::new("outbound_due");

/// Most jobs one transaction takes; bounds commit latency under a flood.
const MAX_BATCH: usize = 256;

type Events = Vec<MailboxEvent>;
type Finish = Box<dyn FnOnce(Option<&str>) + Send>;
type Job = Box<dyn FnOnce(&WriteTransaction, &mut Events) -> (bool, Finish) + Send>;

#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    jobs: mpsc::UnboundedSender<Job>,
    events: broadcast::Sender<MailboxEvent>,
    /// Rate counters: in memory, because one process serves every front-end of an embedded
    /// installation and a restart that forgets a window's counts costs nothing.
    rates: Arc<std::sync::Mutex<HashMap<String, (u64, std::time::Instant)>>>,
}

/// Most rate counters kept in memory; past it, the expired ones go (and all, if none has).
const MAX_RATE_COUNTERS: usize = 100_000;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn decode<T: prost::Message + Default>(what: &'static str, bytes: &[u8]) -> Result<T> {
    T::decode(bytes).map_err(|source| MailboxError::Corrupt { what, source })
}

impl EmbeddedStore {
    /// Opens (or creates) the database at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Arc::new(Database::create(path)?);
        // Create every table up front so that read transactions never meet a missing table.
        {
            let txn = db.begin_write()?;
            txn.open_table(META)?;
            txn.open_table(DOMAINS)?;
            txn.open_table(ACCOUNTS)?;
            txn.open_table(ADDRESSES)?;
            txn.open_table(ALIASES)?;
            txn.open_table(USAGE)?;
            txn.open_table(FOLDERS)?;
            txn.open_table(FOLDER_NAMES)?;
            txn.open_table(SUBSCRIPTIONS)?;
            txn.open_table(MESSAGES)?;
            txn.open_table(CHANGES)?;
            txn.open_table(PARSED)?;
            txn.open_table(BLOB_REFS)?;
            txn.open_table(ORPHANS)?;
            txn.open_table(OUTBOUND)?;
            txn.open_table(OUTBOUND_DUE)?;
            txn.open_table(TRACKING)?;
            txn.open_table(TRACKING_DUE)?;
            txn.commit()?;
        }
        let (jobs, rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(8192);
        let writer_db = db.clone();
        let writer_events = events.clone();
        thread::Builder::new()
            .name("tern-store-writer".into())
            .spawn(move || writer(writer_db, rx, writer_events))
            .map_err(|e| MailboxError::Commit(format!("cannot start writer thread: {e}")))?;
        Ok(Self { db, jobs, events, rates: Arc::default() })
    }

    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction, &mut Events) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |txn, events| {
            let mark = events.len();
            let result = f(txn, events);
            let poison = matches!(result, Err(MailboxError::Metadata(_) | MailboxError::Corrupt { .. }));
            if result.is_err() {
                events.truncate(mark);
            }
            let finish: Finish = Box::new(move |commit_error| {
                let out = match commit_error {
                    None => result,
                    Some(e) => Err(result.err().unwrap_or(MailboxError::Commit(e.to_string()))),
                };
                let _ = tx.send(out);
            });
            (poison, finish)
        });
        self.jobs.send(job).map_err(|_| MailboxError::WriterGone)?;
        rx.await.map_err(|_| MailboxError::WriterGone)?
    }

    fn read<T>(&self, f: impl FnOnce(&ReadTransaction) -> Result<T>) -> Result<T> {
        let txn = self.db.begin_read()?;
        f(&txn)
    }
}

fn writer(db: Arc<Database>, mut rx: mpsc::UnboundedReceiver<Job>, events: broadcast::Sender<MailboxEvent>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut txn = match db.begin_write() {
            Ok(txn) => txn,
            Err(e) => {
                let msg = e.to_string();
                // The jobs never ran; tell each one why.
                for job in batch {
                    drop(job);
                }
                tracing::error!(error = %msg, "cannot begin write transaction");
                continue;
            }
        };
        if let Err(e) = txn.set_durability(Durability::Immediate) {
            tracing::error!(error = %e, "cannot set durability");
        }
        let mut pending = Events::new();
        let mut finishes = Vec::with_capacity(batch.len());
        let mut poisoned = false;
        for job in batch {
            let (poison, finish) = job(&txn, &mut pending);
            poisoned |= poison;
            finishes.push(finish);
        }
        let outcome = if poisoned {
            let _ = txn.abort();
            Err("a storage error aborted the transaction".to_string())
        } else {
            txn.commit().map_err(|e| e.to_string())
        };
        match outcome {
            Ok(()) => {
                // Events go out before the acknowledgements, so that a client that subscribes
                // after its write returned never receives that write's event late.
                for event in pending {
                    // No receiver is not an error: nobody is watching.
                    let _ = events.send(event);
                }
                for finish in finishes {
                    finish(None);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "commit failed");
                for finish in finishes {
                    finish(Some(&e));
                }
            }
        }
    }
}

// Counters in the META table.
fn next_id(txn: &WriteTransaction, key: &str) -> Result<u64> {
    let mut t = txn.open_table(META)?;
    let next = t.get(key)?.map(|v| v.value()).unwrap_or(0) + 1;
    t.insert(key, next)?;
    Ok(next)
}

fn get_folder(t: &impl ReadableTable<u64, &'static [u8]>, id: u64) -> Result<Option<FolderRecord>> {
    t.get(id)?.map(|v| decode("folder", v.value())).transpose()
}

fn put_folder(txn: &WriteTransaction, f: &FolderRecord) -> Result<()> {
    txn.open_table(FOLDERS)?.insert(f.id, f.encode_to_vec().as_slice())?;
    Ok(())
}

fn log_change(txn: &WriteTransaction, folder: u64, modseq: u64, kind: EventKind, uids: Vec<u32>) -> Result<()> {
    let rec = ChangeRecord { kind: kind as i32, uids };
    txn.open_table(CHANGES)?.insert((folder, modseq), rec.encode_to_vec().as_slice())?;
    Ok(())
}

fn add_usage(txn: &WriteTransaction, account: u64, messages: i64, bytes: i64) -> Result<()> {
    let mut t = txn.open_table(USAGE)?;
    let (m, b) = t.get(account)?.map(|v| v.value()).unwrap_or((0, 0));
    t.insert(account, (m.saturating_add_signed(messages), b.saturating_add_signed(bytes)))?;
    Ok(())
}

fn blob_ref(txn: &WriteTransaction, blob: &str, delta: i64) -> Result<()> {
    let mut refs = txn.open_table(BLOB_REFS)?;
    let n = refs.get(blob)?.map(|v| v.value()).unwrap_or(0).saturating_add_signed(delta);
    if n == 0 {
        refs.remove(blob)?;
        txn.open_table(ORPHANS)?.insert(blob, now())?;
    } else {
        refs.insert(blob, n)?;
        txn.open_table(ORPHANS)?.remove(blob)?;
    }
    Ok(())
}

/// Writes a queue entry and its place in the due index.
fn put_queued(txn: &WriteTransaction, entry: &QueuedMessage) -> Result<()> {
    txn.open_table(OUTBOUND)?.insert(entry.queue_id.as_str(), entry.encode_to_vec().as_slice())?;
    txn.open_table(OUTBOUND_DUE)?.insert((queue::due_at(entry), entry.queue_id.as_str()), ())?;
    Ok(())
}

/// Removes a queue entry and its place in the due index, returning it.
fn take_queued(txn: &WriteTransaction, queue_id: &str) -> Result<Option<QueuedMessage>> {
    let Some(entry) = txn
        .open_table(OUTBOUND)?
        .remove(queue_id)?
        .map(|v| decode::<QueuedMessage>("queued message", v.value()))
        .transpose()?
    else {
        return Ok(None);
    };
    txn.open_table(OUTBOUND_DUE)?.remove((queue::due_at(&entry), queue_id))?;
    Ok(Some(entry))
}

fn all_messages(t: &impl ReadableTable<(u64, u32), &'static [u8]>, folder: u64) -> Result<Vec<MessageRecord>> {
    let mut out = Vec::new();
    for item in t.range((folder, 0)..=(folder, u32::MAX))? {
        let (_, v) = item?;
        out.push(decode("message", v.value())?);
    }
    Ok(out)
}

/// Removes a folder's messages, log and name; drops its body references.
fn drop_folder(txn: &WriteTransaction, folder: &FolderRecord) -> Result<()> {
    let msgs = all_messages(&txn.open_table(MESSAGES)?, folder.id)?;
    let mut bytes = 0i64;
    for m in &msgs {
        txn.open_table(MESSAGES)?.remove((folder.id, m.uid))?;
        blob_ref(txn, &m.blob_id, -1)?;
        bytes += m.size as i64;
    }
    add_usage(txn, folder.account_id, -(msgs.len() as i64), -bytes)?;
    txn.open_table(CHANGES)?.retain_in((folder.id, 0)..=(folder.id, u64::MAX), |_, _| false)?;
    txn.open_table(FOLDER_NAMES)?.remove((folder.account_id, folder.name.as_str()))?;
    txn.open_table(FOLDERS)?.remove(folder.id)?;
    Ok(())
}

/// A transaction that can open tables for reading: a read transaction, or the writer's
/// transaction, so that the core reads the same state whichever it runs in.
trait Open {
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<'_, K, V>,
    ) -> Result<impl ReadableTable<K, V> + '_>;
}

// Both transactions open tables the same way; only the table type they return differs.
macro_rules! open_for {
    ($($txn:ty),*) => {$(
        impl Open for $txn {
            fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
                &self,
                def: TableDefinition<'_, K, V>,
            ) -> Result<impl ReadableTable<K, V> + '_> {
                Ok(self.open_table(def)?)
            }
        }
    )*};
}

open_for!(ReadTransaction, WriteTransaction);

/// One account's state in a transaction, as the core reads it ([`log::View`]). Every method
/// opens the tables it needs and closes them again: redb refuses to open a table twice in one
/// write transaction, and the commit that follows opens them too.
struct TxnView<'t, T> {
    txn: &'t T,
    account_id: u64,
}

impl<T: Open> log::View for TxnView<'_, T> {
    fn account_id(&self) -> u64 {
        self.account_id
    }

    fn folder(&self, id: u64) -> Result<Option<FolderRecord>> {
        get_folder(&self.txn.table(FOLDERS)?, id)
    }

    fn folder_named(&self, name: &str) -> Result<Option<FolderRecord>> {
        match self.txn.table(FOLDER_NAMES)?.get((self.account_id, name))? {
            Some(id) => get_folder(&self.txn.table(FOLDERS)?, id.value()),
            None => Ok(None),
        }
    }

    fn folders(&self) -> Result<Vec<FolderRecord>> {
        let folders = self.txn.table(FOLDERS)?;
        let mut out = Vec::new();
        for item in self.txn.table(FOLDER_NAMES)?.range((self.account_id, "")..(self.account_id + 1, ""))? {
            if let Some(f) = get_folder(&folders, item?.1.value())? {
                out.push(f);
            }
        }
        Ok(out)
    }

    fn message(&self, folder: u64, uid: u32) -> Result<Option<MessageRecord>> {
        self.txn.table(MESSAGES)?.get((folder, uid))?.map(|v| decode("message", v.value())).transpose()
    }

    fn each_message(&self, folder: u64, f: &mut dyn FnMut(&MessageRecord)) -> Result<()> {
        for item in self.txn.table(MESSAGES)?.range((folder, 0)..=(folder, u32::MAX))? {
            f(&decode("message", item?.1.value())?);
        }
        Ok(())
    }

    fn each_message_from(&self, folder: u64, uid: u32, f: &mut dyn FnMut(&MessageRecord)) -> Result<()> {
        for item in self.txn.table(MESSAGES)?.range((folder, uid)..=(folder, u32::MAX))? {
            f(&decode("message", item?.1.value())?);
        }
        Ok(())
    }

    fn count_from(&self, folder: u64, uid: u32) -> Result<u32> {
        Ok(self.txn.table(MESSAGES)?.range((folder, uid)..=(folder, u32::MAX))?.count() as u32)
    }

    fn vanished_since(&self, folder: u64, modseq: u64) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        // Saturating: a client may send any MODSEQ, and u64::MAX + 1 would panic (debug) or
        // wrap to zero and report every expunge ever made (release).
        for item in self.txn.table(CHANGES)?.range((folder, modseq.saturating_add(1))..=(folder, u64::MAX))? {
            let c: ChangeRecord = decode("change", item?.1.value())?;
            if c.kind == EventKind::Expunge as i32 {
                out.extend(c.uids);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn subscribed_without_folder(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for item in self.txn.table(SUBSCRIPTIONS)?.range((self.account_id, "")..(self.account_id + 1, ""))? {
            out.push(item?.0.value().1.to_string());
        }
        Ok(out)
    }

    fn usage(&self) -> Result<UsageCount> {
        let (messages, bytes) = self.txn.table(USAGE)?.get(self.account_id)?.map(|v| v.value()).unwrap_or((0, 0));
        Ok(UsageCount { messages, bytes })
    }

    fn last_uidvalidity(&self) -> Result<u64> {
        Ok(self.txn.table(META)?.get("uidvalidity")?.map(|v| v.value()).unwrap_or(0))
    }
}

/// Writes what an entry of the core says into the tables, with what follows from it here: the
/// name index of folders, the account's usage, body references, the expunge log (for QRESYNC's
/// VANISHED) and the last UIDVALIDITY given out. The entry's events go out after the commit.
fn commit(txn: &WriteTransaction, account_id: u64, entry: LogEntry, events: &mut Events) -> Result<()> {
    for f in &entry.folders {
        let old = get_folder(&txn.open_table(FOLDERS)?, f.id)?;
        let mut names = txn.open_table(FOLDER_NAMES)?;
        match &old {
            Some(old) if old.name == f.name => {}
            Some(old) => {
                names.remove((old.account_id, old.name.as_str()))?;
                names.insert((f.account_id, f.name.as_str()), f.id)?;
            }
            None => {
                names.insert((f.account_id, f.name.as_str()), f.id)?;
                let mut meta = txn.open_table(META)?;
                let last = meta.get("uidvalidity")?.map(|v| v.value()).unwrap_or(0);
                meta.insert("uidvalidity", last.max(f.uidvalidity as u64))?;
            }
        }
        drop(names);
        put_folder(txn, f)?;
    }
    for id in &entry.deleted_folders {
        let folder = get_folder(&txn.open_table(FOLDERS)?, *id)?;
        if let Some(f) = folder {
            drop_folder(txn, &f)?;
        }
    }
    for fm in &entry.messages {
        let Some(m) = &fm.message else { continue };
        let old = txn.open_table(MESSAGES)?.insert((fm.folder_id, m.uid), m.encode_to_vec().as_slice())?.is_some();
        if !old {
            blob_ref(txn, &m.blob_id, 1)?;
            add_usage(txn, account_id, 1, m.size as i64)?;
        }
    }
    // One expunge record per change: the UIDs of one folder that share a MODSEQ.
    let mut expunges: std::collections::BTreeMap<(u64, u64), Vec<u32>> = std::collections::BTreeMap::new();
    for x in &entry.expunged {
        let old = txn
            .open_table(MESSAGES)?
            .remove((x.folder_id, x.uid))?
            .map(|v| decode::<MessageRecord>("message", v.value()));
        if let Some(m) = old.transpose()? {
            blob_ref(txn, &m.blob_id, -1)?;
            add_usage(txn, account_id, -1, -(m.size as i64))?;
        }
        expunges.entry((x.folder_id, x.modseq)).or_default().push(x.uid);
    }
    for ((folder, modseq), uids) in expunges {
        log_change(txn, folder, modseq, EventKind::Expunge, uids)?;
    }
    let mut subscriptions = txn.open_table(SUBSCRIPTIONS)?;
    for name in &entry.subscriptions_removed {
        subscriptions.remove((account_id, name.as_str()))?;
    }
    for name in &entry.subscriptions_added {
        subscriptions.insert((account_id, name.as_str()), ())?;
    }
    // Watchers are told in the API's terms; the entry's events are records until here.
    events.extend(entry.events.into_iter().map(MailboxEvent::from));
    Ok(())
}

fn account_id_by_address(txn: &WriteTransaction, address: &str) -> Result<u64> {
    txn.open_table(ADDRESSES)?
        .get(address)?
        .map(|v| v.value())
        .ok_or_else(|| MailboxError::not_found("account", address))
}

fn load_account(t: &impl ReadableTable<u64, &'static [u8]>, id: u64) -> Result<Option<AccountRecord>> {
    t.get(id)?.map(|v| decode("account", v.value())).transpose()
}

fn put_account(txn: &WriteTransaction, a: &AccountRecord) -> Result<()> {
    txn.open_table(ACCOUNTS)?.insert(a.id, a.encode_to_vec().as_slice())?;
    Ok(())
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
}

/// Every table of the database: a backup copies each, and refuses a database that has one
/// not listed here, so that a table added later cannot be left out of backups silently.
const TABLE_NAMES: [&str; 18] = [
    "meta",
    "domains",
    "accounts",
    "addresses",
    "aliases",
    "usage",
    "folders",
    "folder_names",
    "subscriptions",
    "messages",
    "changes",
    "parsed",
    "blob_refs",
    "orphans",
    "outbound",
    "tracking",
    "tracking_due",
    "outbound_due",
];

/// The name of the database file in a backup (and in a data directory).
pub const DATABASE_FILE: &str = "metadata.redb";

impl EmbeddedStore {
    /// Copies the database as one read transaction sees it into a new database at `dest`:
    /// consistent, while writers go on (redb's readers never block them). Gives the number
    /// of entries copied.
    pub fn backup_to(&self, dest: &Path) -> Result<u64> {
        use redb::TableHandle;
        let src = self.db.begin_read()?;
        for table in src.list_tables()? {
            if !TABLE_NAMES.contains(&table.name()) {
                return Err(MailboxError::Backup(format!(
                    "the database has a table {:?} the backup does not know",
                    table.name()
                )));
            }
        }
        if src.list_multimap_tables()?.next().is_some() {
            return Err(MailboxError::Backup("the database has a multimap table the backup does not know".into()));
        }
        let out = Database::create(dest)?;
        let w = out.begin_write()?;
        let mut n = 0;
        n += copy_table(&src, &w, META)?;
        n += copy_table(&src, &w, DOMAINS)?;
        n += copy_table(&src, &w, ACCOUNTS)?;
        n += copy_table(&src, &w, ADDRESSES)?;
        n += copy_table(&src, &w, ALIASES)?;
        n += copy_table(&src, &w, USAGE)?;
        n += copy_table(&src, &w, FOLDERS)?;
        n += copy_table(&src, &w, FOLDER_NAMES)?;
        n += copy_table(&src, &w, SUBSCRIPTIONS)?;
        n += copy_table(&src, &w, MESSAGES)?;
        n += copy_table(&src, &w, CHANGES)?;
        n += copy_table(&src, &w, PARSED)?;
        n += copy_table(&src, &w, BLOB_REFS)?;
        n += copy_table(&src, &w, ORPHANS)?;
        n += copy_table(&src, &w, OUTBOUND)?;
        n += copy_table(&src, &w, TRACKING)?;
        n += copy_table(&src, &w, TRACKING_DUE)?;
        n += copy_table(&src, &w, OUTBOUND_DUE)?;
        w.commit()?;
        Ok(n)
    }
}

/// Copies one table, when the source has it (tables are created on first write).
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    src: &ReadTransaction,
    dst: &WriteTransaction,
    def: TableDefinition<'_, K, V>,
) -> Result<u64> {
    let table = match src.open_table(def) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut out = dst.open_table(def)?;
    let mut n = 0;
    for entry in table.iter()? {
        let (k, v) = entry?;
        out.insert(k.value(), v.value())?;
        n += 1;
    }
    Ok(n)
}

#[async_trait::async_trait]
impl MetadataStore for EmbeddedStore {
    async fn backup(&self, dir: &Path) -> Result<String> {
        let this = self.clone();
        let dest = dir.join(DATABASE_FILE);
        let n = tokio::task::spawn_blocking(move || this.backup_to(&dest))
            .await
            .map_err(|e| MailboxError::Backup(format!("the copying thread failed: {e}")))??;
        Ok(format!("{DATABASE_FILE}: {n} entries"))
    }

    async fn count_rate(&self, key: &str, cost: u64, ttl: std::time::Duration) -> Result<u64> {
        let now = std::time::Instant::now();
        let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        if rates.len() >= MAX_RATE_COUNTERS && !rates.contains_key(key) {
            rates.retain(|_, (_, until)| *until > now);
            if rates.len() >= MAX_RATE_COUNTERS {
                rates.clear();
            }
        }
        let entry = rates.entry(key.to_string()).or_insert((0, now));
        if entry.1 <= now {
            entry.0 = 0;
        }
        entry.0 += cost;
        entry.1 = now + ttl;
        Ok(entry.0)
    }

    async fn tracked(&self, key: &str, now: i64) -> Result<bool> {
        self.read(|txn| Ok(txn.open_table(TRACKING)?.get(key)?.is_some_and(|until| until.value() > now)))
    }

    async fn track(&self, key: &str, now: i64, until: i64) -> Result<bool> {
        let key = key.to_string();
        self.write(move |txn, _| {
            let mut t = txn.open_table(TRACKING)?;
            let mut due = txn.open_table(TRACKING_DUE)?;
            let current = t.get(key.as_str())?.map(|v| v.value());
            if current.is_some_and(|at| at > now) {
                return Ok(false);
            }
            if let Some(old) = current {
                due.remove((old, key.as_str()))?;
            }
            t.insert(key.as_str(), until)?;
            due.insert((until, key.as_str()), ())?;
            // Each write prunes a few expired records, so the tables stay the size of what
            // is current without a sweeper of their own.
            let expired: Vec<(i64, String)> = due
                .range(..(now, ""))?
                .take(16)
                .filter_map(|e| e.ok().map(|(k, _)| (k.value().0, k.value().1.to_string())))
                .collect();
            for (at, k) in expired {
                due.remove((at, k.as_str()))?;
                t.remove(k.as_str())?;
            }
            Ok(true)
        })
        .await
    }

    async fn create_domain(&self, domain: DomainRecord) -> Result<DomainRecord> {
        self.write(move |txn, _| {
            let mut t = txn.open_table(DOMAINS)?;
            if t.get(domain.name.as_str())?.is_some() {
                return Err(MailboxError::exists("domain", &domain.name));
            }
            t.insert(domain.name.as_str(), domain.encode_to_vec().as_slice())?;
            Ok(domain)
        })
        .await
    }

    async fn update_domain(&self, name: &str, update: super::DomainUpdate) -> Result<DomainRecord> {
        let name = name.to_string();
        self.write(move |txn, _| {
            let mut t = txn.open_table(DOMAINS)?;
            let mut d: DomainRecord = match t.get(name.as_str())? {
                Some(v) => decode("domain", v.value())?,
                None => return Err(MailboxError::not_found("domain", name)),
            };
            update.apply(&mut d);
            t.insert(name.as_str(), d.encode_to_vec().as_slice())?;
            Ok(d)
        })
        .await
    }

    async fn domain(&self, name: &str) -> Result<Option<DomainRecord>> {
        self.read(|txn| txn.open_table(DOMAINS)?.get(name)?.map(|v| decode("domain", v.value())).transpose())
    }

    async fn list_domains(&self) -> Result<Vec<(DomainRecord, u64)>> {
        self.read(|txn| {
            let addresses = txn.open_table(ADDRESSES)?;
            let mut out = Vec::new();
            for item in txn.open_table(DOMAINS)?.iter()? {
                let (_, v) = item?;
                let d: DomainRecord = decode("domain", v.value())?;
                let mut n = 0;
                for a in addresses.iter()? {
                    if domain_of(a?.0.value()) == d.name {
                        n += 1;
                    }
                }
                out.push((d, n));
            }
            Ok(out)
        })
    }

    async fn delete_domain(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.write(move |txn, _| {
            if txn.open_table(DOMAINS)?.get(name.as_str())?.is_none() {
                return Err(MailboxError::not_found("domain", name));
            }
            for item in txn.open_table(ADDRESSES)?.iter()? {
                if domain_of(item?.0.value()) == name {
                    return Err(MailboxError::NotAllowed(format!("domain {name} still has mailboxes")));
                }
            }
            for item in txn.open_table(ALIASES)?.iter()? {
                if domain_of(item?.0.value()) == name {
                    return Err(MailboxError::NotAllowed(format!("domain {name} still has aliases")));
                }
            }
            txn.open_table(DOMAINS)?.remove(name.as_str())?;
            Ok(())
        })
        .await
    }

    async fn create_account(&self, account: AccountRecord) -> Result<AccountRecord> {
        self.write(move |txn, events| {
            let domain = domain_of(&account.address).to_string();
            if txn.open_table(DOMAINS)?.get(domain.as_str())?.is_none() {
                return Err(MailboxError::not_found("domain", domain));
            }
            if txn.open_table(ADDRESSES)?.get(account.address.as_str())?.is_some() {
                return Err(MailboxError::exists("mailbox", &account.address));
            }
            if txn.open_table(ALIASES)?.get(account.address.as_str())?.is_some() {
                return Err(MailboxError::exists("alias", &account.address));
            }
            let mut account = account;
            account.id = next_id(txn, "account")?;
            put_account(txn, &account)?;
            txn.open_table(ADDRESSES)?.insert(account.address.as_str(), account.id)?;
            txn.open_table(USAGE)?.insert(account.id, (0, 0))?;
            let first_folder = next_id(txn, "folder")?;
            for _ in 1..DEFAULT_FOLDERS.len() {
                next_id(txn, "folder")?;
            }
            let view = TxnView { txn, account_id: account.id };
            if let (Some(entry), ()) = log::create_account_folders(&view, first_folder, now())? {
                commit(txn, account.id, entry, events)?;
            }
            Ok(account)
        })
        .await
    }

    async fn update_account(&self, changes: AccountChanges) -> Result<AccountRecord> {
        self.write(move |txn, _| {
            let id = account_id_by_address(txn, &changes.address)?;
            let mut a = load_account(&txn.open_table(ACCOUNTS)?, id)?
                .ok_or_else(|| MailboxError::not_found("account", &changes.address))?;
            changes.apply(&mut a);
            put_account(txn, &a)?;
            Ok(a)
        })
        .await
    }

    async fn set_password(&self, address: &str, hash: String) -> Result<()> {
        let address = address.to_string();
        self.write(move |txn, _| {
            let id = account_id_by_address(txn, &address)?;
            let mut a = load_account(&txn.open_table(ACCOUNTS)?, id)?
                .ok_or_else(|| MailboxError::not_found("account", &address))?;
            a.password_hash = hash;
            put_account(txn, &a)
        })
        .await
    }

    async fn account(&self, id: u64) -> Result<Option<AccountRecord>> {
        self.read(|txn| load_account(&txn.open_table(ACCOUNTS)?, id))
    }

    async fn account_by_address(&self, address: &str) -> Result<Option<AccountRecord>> {
        self.read(|txn| match txn.open_table(ADDRESSES)?.get(address)? {
            Some(id) => load_account(&txn.open_table(ACCOUNTS)?, id.value()),
            None => Ok(None),
        })
    }

    async fn list_accounts(&self, domain: Option<&str>) -> Result<Vec<AccountRecord>> {
        self.read(|txn| {
            let mut out = Vec::new();
            for item in txn.open_table(ACCOUNTS)?.iter()? {
                let (_, v) = item?;
                let a: AccountRecord = decode("account", v.value())?;
                if domain.is_none_or(|d| domain_of(&a.address) == d) {
                    out.push(a);
                }
            }
            out.sort_by(|a, b| a.address.cmp(&b.address));
            Ok(out)
        })
    }

    async fn delete_account(&self, address: &str) -> Result<()> {
        let address = address.to_string();
        self.write(move |txn, _| {
            let id = account_id_by_address(txn, &address)?;
            let a = load_account(&txn.open_table(ACCOUNTS)?, id)?
                .ok_or_else(|| MailboxError::not_found("account", &address))?;
            let folder_ids: Vec<u64> = txn
                .open_table(FOLDER_NAMES)?
                .range((id, "")..)?
                .map(|i| i.map(|(k, v)| (k.value().0, v.value())))
                .take_while(|r| r.as_ref().map(|(acc, _)| *acc == id).unwrap_or(true))
                .map(|r| r.map(|(_, f)| f))
                .collect::<std::result::Result<_, _>>()?;
            for fid in folder_ids {
                // Bound first: a table opened in the `if let` would stay open through
                // drop_folder, which opens it again, and redb refuses that.
                let folder = get_folder(&txn.open_table(FOLDERS)?, fid)?;
                if let Some(f) = folder {
                    drop_folder(txn, &f)?;
                }
            }
            for alias in &a.aliases {
                txn.open_table(ALIASES)?.remove(alias.as_str())?;
            }
            txn.open_table(SUBSCRIPTIONS)?.retain_in((id, "")..(id + 1, ""), |_, _| false)?;
            txn.open_table(ADDRESSES)?.remove(address.as_str())?;
            txn.open_table(USAGE)?.remove(id)?;
            txn.open_table(ACCOUNTS)?.remove(id)?;
            Ok(())
        })
        .await
    }

    async fn add_alias(&self, alias: &str, target: &str) -> Result<()> {
        let (alias, target) = (alias.to_string(), target.to_string());
        self.write(move |txn, _| {
            let domain = domain_of(&alias).to_string();
            if txn.open_table(DOMAINS)?.get(domain.as_str())?.is_none() {
                return Err(MailboxError::not_found("domain", domain));
            }
            if txn.open_table(ADDRESSES)?.get(alias.as_str())?.is_some() {
                return Err(MailboxError::exists("mailbox", &alias));
            }
            if txn.open_table(ALIASES)?.get(alias.as_str())?.is_some() {
                return Err(MailboxError::exists("alias", &alias));
            }
            let id = account_id_by_address(txn, &target)?;
            let mut a = load_account(&txn.open_table(ACCOUNTS)?, id)?
                .ok_or_else(|| MailboxError::not_found("account", &target))?;
            a.aliases.push(alias.clone());
            a.aliases.sort();
            put_account(txn, &a)?;
            txn.open_table(ALIASES)?.insert(alias.as_str(), id)?;
            Ok(())
        })
        .await
    }

    async fn remove_alias(&self, alias: &str) -> Result<()> {
        let alias = alias.to_string();
        self.write(move |txn, _| {
            let id = txn
                .open_table(ALIASES)?
                .get(alias.as_str())?
                .map(|v| v.value())
                .ok_or_else(|| MailboxError::not_found("alias", &alias))?;
            // Bound first, so that ACCOUNTS is closed again before put_account opens it.
            let account = load_account(&txn.open_table(ACCOUNTS)?, id)?;
            if let Some(mut a) = account {
                a.aliases.retain(|x| x != &alias);
                put_account(txn, &a)?;
            }
            txn.open_table(ALIASES)?.remove(alias.as_str())?;
            Ok(())
        })
        .await
    }

    async fn alias(&self, alias: &str) -> Result<Option<u64>> {
        self.read(|txn| Ok(txn.open_table(ALIASES)?.get(alias)?.map(|v| v.value())))
    }

    async fn list_aliases(&self, domain: Option<&str>) -> Result<Vec<(String, String)>> {
        self.read(|txn| {
            let accounts = txn.open_table(ACCOUNTS)?;
            let mut out = Vec::new();
            for item in txn.open_table(ALIASES)?.iter()? {
                let (k, v) = item?;
                let alias = k.value().to_string();
                if domain.is_some_and(|d| domain_of(&alias) != d) {
                    continue;
                }
                let target = load_account(&accounts, v.value())?.map(|a| a.address).unwrap_or_default();
                out.push((alias, target));
            }
            Ok(out)
        })
    }

    async fn read_account(&self, account_id: u64, read: ReadFn<'_>) -> Result<()> {
        self.read(|txn| read(&TxnView { txn, account_id }))
    }

    async fn write_account(&self, account_id: u64, mut write: WriteFn) -> Result<()> {
        self.write(move |txn, events| match write(&TxnView { txn, account_id })? {
            Some(entry) => commit(txn, account_id, entry, events),
            None => Ok(()),
        })
        .await
    }

    async fn new_folder_id(&self) -> Result<u64> {
        self.write(|txn, _| next_id(txn, "folder")).await
    }

    async fn parsed(&self, blob_id: &str) -> Result<Option<ParsedRecord>> {
        self.read(|txn| txn.open_table(PARSED)?.get(blob_id)?.map(|v| decode("parsed", v.value())).transpose())
    }

    async fn blob_refs(&self, blob_id: &str) -> Result<u64> {
        self.read(|txn| Ok(txn.open_table(BLOB_REFS)?.get(blob_id)?.map(|v| v.value()).unwrap_or(0)))
    }

    async fn append(&self, message: NewMessage, ops: Vec<AppendOp>) -> Result<Vec<Result<Appended>>> {
        self.write(move |txn, events| {
            let parsed = ParsedRecord::from(&message.parsed);
            let mut results = Vec::with_capacity(ops.len());
            let mut stored_parsed = false;
            for op in ops {
                let outcome = (|| -> Result<Appended> {
                    let account = load_account(&txn.open_table(ACCOUNTS)?, op.account_id)?
                        .ok_or_else(|| MailboxError::not_found("account", op.account_id.to_string()))?;
                    let email_id = next_id(txn, "email")?;
                    let view = TxnView { txn, account_id: op.account_id };
                    let (entry, appended) = log::append(&view, &account, &op.folder, &op.flags, &message, email_id)?;
                    if let Some(entry) = entry {
                        commit(txn, op.account_id, entry, events)?;
                    }
                    Ok(appended)
                })();
                if let Err(e @ (MailboxError::Metadata(_) | MailboxError::Corrupt { .. })) = outcome {
                    return Err(e);
                }
                if outcome.is_ok() && !stored_parsed {
                    txn.open_table(PARSED)?.insert(message.blob_id.as_str(), parsed.encode_to_vec().as_slice())?;
                    stored_parsed = true;
                }
                results.push(outcome);
            }
            // The body was stored before this commit. When no op took it and nothing else
            // refers to it, it is recorded as an orphan so that garbage collection deletes it;
            // otherwise every refused write (over quota, unknown folder) would leave an object
            // on disk that nothing tracks.
            if !results.iter().any(Result::is_ok) && txn.open_table(BLOB_REFS)?.get(message.blob_id.as_str())?.is_none()
            {
                let mut orphans = txn.open_table(ORPHANS)?;
                if orphans.get(message.blob_id.as_str())?.is_none() {
                    orphans.insert(message.blob_id.as_str(), now())?;
                }
            }
            Ok(results)
        })
        .await
    }

    async fn append_all(
        &self,
        account_id: u64,
        folder: FolderRef,
        messages: Vec<(NewMessage, Vec<String>)>,
    ) -> Result<Vec<Appended>> {
        // The closure's own result is the refusal, kept apart from storage failures so that
        // the orphans it records commit.
        self.write(move |txn, events| {
            let outcome = (|| -> Result<Vec<Appended>> {
                let account = load_account(&txn.open_table(ACCOUNTS)?, account_id)?
                    .ok_or_else(|| MailboxError::not_found("account", account_id.to_string()))?;
                let mut items = Vec::with_capacity(messages.len());
                for (message, flags) in &messages {
                    items.push((message, flags.as_slice(), next_id(txn, "email")?));
                }
                let view = TxnView { txn, account_id };
                let (entry, appended) = log::append_all(&view, &account, &folder, &items)?;
                if let Some(entry) = entry {
                    commit(txn, account_id, entry, events)?;
                }
                Ok(appended)
            })();
            match outcome {
                Err(e @ (MailboxError::Metadata(_) | MailboxError::Corrupt { .. })) => Err(e),
                Ok(appended) => {
                    let mut parsed = txn.open_table(PARSED)?;
                    for (message, _) in &messages {
                        let record = ParsedRecord::from(&message.parsed);
                        parsed.insert(message.blob_id.as_str(), record.encode_to_vec().as_slice())?;
                    }
                    Ok(Ok(appended))
                }
                // Refused (over quota, unknown folder): the bodies stored for it are
                // orphans unless other messages refer to them, as in `append`.
                Err(refused) => {
                    let refs = txn.open_table(BLOB_REFS)?;
                    let mut orphans = txn.open_table(ORPHANS)?;
                    for (message, _) in &messages {
                        let id = message.blob_id.as_str();
                        if refs.get(id)?.is_none() && orphans.get(id)?.is_none() {
                            orphans.insert(id, now())?;
                        }
                    }
                    Ok(Err(refused))
                }
            }
        })
        .await?
    }

    fn mail_changes(&self) -> Option<BoxStream<'static, u64>> {
        use futures::StreamExt;
        let events = tokio_stream::wrappers::BroadcastStream::new(self.events.subscribe());
        Some(
            events
                .filter_map(|e| async move {
                    // Flag changes leave the index as it is.
                    e.ok().filter(|e| e.kind != tern_proto::v1::EventKind::Flags as i32).map(|e| e.account_id)
                })
                .boxed(),
        )
    }

    async fn watch(&self, account_id: u64) -> Result<BoxStream<'static, MailboxEvent>> {
        Ok(BroadcastStream::new(self.events.subscribe())
            .take_while(|e| {
                // A subscriber that fell too far behind ends its stream: it must resynchronise
                // with `changes`, rather than silently miss events.
                let lagged = e.is_err();
                if lagged {
                    tracing::warn!("event subscriber lagged; closing its stream");
                }
                std::future::ready(!lagged)
            })
            .filter_map(move |e| std::future::ready(e.ok().filter(|e| e.account_id == account_id)))
            .boxed())
    }

    async fn enqueue(&self, entries: Vec<QueuedMessage>) -> Result<Vec<QueuedMessage>> {
        self.write(move |txn, _| {
            let mut out = Vec::with_capacity(entries.len());
            for mut entry in entries {
                entry.queue_id = format!("{:016X}", next_id(txn, "queue")?);
                blob_ref(txn, &entry.blob_id, 1)?;
                put_queued(txn, &entry)?;
                out.push(entry);
            }
            Ok(out)
        })
        .await
    }

    async fn list_queue(&self) -> Result<Vec<QueuedMessage>> {
        self.read(|txn| {
            let mut out = Vec::new();
            for item in txn.open_table(OUTBOUND)?.iter()? {
                out.push(decode("queued message", item?.1.value())?);
            }
            Ok(out)
        })
    }

    async fn queued(&self, queue_id: &str) -> Result<Option<QueuedMessage>> {
        self.read(|txn| {
            txn.open_table(OUTBOUND)?.get(queue_id)?.map(|v| decode("queued message", v.value())).transpose()
        })
    }

    async fn claim_queue(&self, holder: &str, now: i64, lease_seconds: i64, max: usize) -> Result<Vec<QueuedMessage>> {
        let holder = holder.to_string();
        self.write(move |txn, _| {
            let ids: Vec<String> = {
                let due = txn.open_table(OUTBOUND_DUE)?;
                let mut ids = Vec::new();
                for item in due.range((i64::MIN, "")..)? {
                    let (k, _) = item?;
                    let (at, id) = k.value();
                    if at > now || ids.len() >= max {
                        break;
                    }
                    ids.push(id.to_string());
                }
                ids
            };
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let Some(mut entry) = take_queued(txn, &id)? else { continue };
                queue::lease(&mut entry, &holder, now, lease_seconds);
                put_queued(txn, &entry)?;
                out.push(entry);
            }
            Ok(out)
        })
        .await
    }

    async fn finish_queued(&self, queue_id: &str, holder: &str, now: i64, retry: Option<QueuedMessage>) -> Result<()> {
        let (queue_id, holder) = (queue_id.to_string(), holder.to_string());
        self.write(move |txn, _| {
            let entry =
                take_queued(txn, &queue_id)?.ok_or_else(|| MailboxError::not_found("queue entry", &queue_id))?;
            queue::check_holder(&entry, &holder, now)?;
            match retry {
                Some(report) => put_queued(txn, &queue::retry(entry, report)?),
                None => blob_ref(txn, &entry.blob_id, -1),
            }
        })
        .await
    }

    async fn delete_queued(&self, queue_id: &str) -> Result<()> {
        let queue_id = queue_id.to_string();
        self.write(move |txn, _| {
            let entry =
                take_queued(txn, &queue_id)?.ok_or_else(|| MailboxError::not_found("queue entry", &queue_id))?;
            blob_ref(txn, &entry.blob_id, -1)
        })
        .await
    }

    async fn retry_queued(&self, queue_id: &str, now: i64) -> Result<QueuedMessage> {
        let queue_id = queue_id.to_string();
        self.write(move |txn, _| {
            let mut entry =
                take_queued(txn, &queue_id)?.ok_or_else(|| MailboxError::not_found("queue entry", &queue_id))?;
            entry.next_attempt_at = now;
            put_queued(txn, &entry)?;
            Ok(entry)
        })
        .await
    }

    async fn orphaned_blobs(&self, before: i64, limit: usize) -> Result<Vec<String>> {
        self.read(|txn| {
            let mut out = Vec::new();
            for item in txn.open_table(ORPHANS)?.iter()? {
                let (k, v) = item?;
                if v.value() < before {
                    out.push(k.value().to_string());
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    async fn forget_blob(&self, blob_id: &str) -> Result<bool> {
        let blob_id = blob_id.to_string();
        self.write(move |txn, _| {
            if txn.open_table(BLOB_REFS)?.get(blob_id.as_str())?.is_some() {
                return Ok(false);
            }
            txn.open_table(ORPHANS)?.remove(blob_id.as_str())?;
            txn.open_table(PARSED)?.remove(blob_id.as_str())?;
            Ok(true)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    //! The embedded backend against the core's in-memory model: the same random commands, the
    //! same answers, and after every step the same folders, messages, subscriptions, usage and
    //! expunge log. What the model folds from the core's entries is what this backend commits.

    use proptest::prelude::*;
    use tern_proto::v1::FolderRef;

    use super::*;
    use crate::store::log::{
        View,
        tests::{ACCOUNT, Cmd, Model, NAMES, account, flag, flags_mode, message, pick_uids},
    };

    async fn open() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("meta.redb")).unwrap();
        store.create_domain(DomainRecord { name: "example.test".into(), ..Default::default() }).await.unwrap();
        let a = store.create_account(account()).await.unwrap();
        assert_eq!(a.id, ACCOUNT);
        (dir, store)
    }

    /// Runs one command through the trait, as the service would; `model` is the state before it.
    async fn run(store: &EmbeddedStore, model: &dyn View, cmd: &Cmd) -> std::result::Result<(), String> {
        let id_of = |i: usize| model.folder_named(NAMES[i]).ok().flatten().map_or(999, |f| f.id);
        let out = match cmd {
            Cmd::Append { folder, size, seen } => {
                let op = AppendOp {
                    account_id: ACCOUNT,
                    folder: FolderRef::name(NAMES[*folder]),
                    flags: if *seen { flag(0) } else { vec![] },
                };
                let mut results = store.append(message(*size), vec![op]).await.unwrap();
                results.pop().unwrap().map(|_| ())
            }
            Cmd::Store { folder, pick, mode, flag: f, unchanged_since } => {
                let uids = pick_uids(model, *folder, pick);
                let since = if *unchanged_since { 3 } else { 0 };
                store.store_flags(ACCOUNT, id_of(*folder), &uids, flags_mode(*mode), flag(*f), since).await.map(|_| ())
            }
            Cmd::Copy { from, to, pick, remove } => {
                let uids = pick_uids(model, *from, pick);
                store.copy(ACCOUNT, id_of(*from), &uids, &FolderRef::name(NAMES[*to]), *remove).await.map(|_| ())
            }
            Cmd::Expunge { folder, only_deleted } => {
                store.expunge(ACCOUNT, id_of(*folder), None, *only_deleted).await.map(|_| ())
            }
            Cmd::Create { name } => {
                store.create_folder(ACCOUNT, NAMES[*name], tern_proto::v1::SpecialUse::None).await.map(|_| ())
            }
            Cmd::Delete { name } => store.delete_folder(ACCOUNT, NAMES[*name]).await,
            Cmd::Rename { from, to } => store.rename_folder(ACCOUNT, NAMES[*from], NAMES[*to]).await.map(|_| ()),
            Cmd::Subscribe { name, on } => store.subscribe_folder(ACCOUNT, NAMES[*name], *on).await,
            Cmd::Claim { folder, ahead } => {
                let up_to = model.folder_named(NAMES[*folder]).ok().flatten().map_or(0, |f| f.uidnext + ahead);
                store.claim_recent(ACCOUNT, id_of(*folder), up_to).await.map(|_| ())
            }
        };
        out.map_err(|e| e.to_string())
    }

    /// The account as the store has it, in the model's terms; UIDVALIDITY aside, which comes
    /// from the clock.
    async fn observe(store: &EmbeddedStore) -> Vec<String> {
        let list = store.list_folders(ACCOUNT).await.unwrap();
        let mut out = vec![format!("{:?} {:?}", list.subscribed_without_folder, store.usage(ACCOUNT).await.unwrap())];
        for f in list.folders {
            let (_, messages) = store.select(ACCOUNT, &FolderRef::id(f.id)).await.unwrap();
            let vanished = store.changes(ACCOUNT, f.id, 0).await.unwrap().vanished;
            out.push(format!("{:?} {messages:?} {vanished:?}", FolderRecord { uidvalidity: 0, ..f }));
        }
        out
    }

    fn expected(model: &Model) -> Vec<String> {
        let view = model.state.view(ACCOUNT);
        let mut out = vec![format!("{:?} {:?}", view.subscribed_without_folder().unwrap(), view.usage().unwrap())];
        for f in view.folders().unwrap() {
            let (_, messages) = crate::store::log::select(&view, &FolderRef::id(f.id)).unwrap();
            let vanished = view.vanished_since(f.id, 0).unwrap();
            out.push(format!("{:?} {messages:?} {vanished:?}", FolderRecord { uidvalidity: 0, ..f }));
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn the_backend_commits_what_the_core_decides(cmds in prop::collection::vec(crate::store::log::tests::cmd(), 1..40)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let (_dir, store) = open().await;
                let mut model = Model::new();
                assert_eq!(observe(&store).await, expected(&model));
                for cmd in &cmds {
                    let got = run(&store, &model.state.view(ACCOUNT), cmd).await;
                    let want = model.run(cmd);
                    assert_eq!(got, want, "{cmd:?}");
                    assert_eq!(observe(&store).await, expected(&model), "after {cmd:?}");
                }
            });
        }
    }
}
