//! The embedded backend: every record in one redb database file, written by one thread.
//!
//! redb allows one write transaction at a time and makes a commit durable with an fsync. One
//! fsync per delivery would cap a disk at a few hundred deliveries a second, so all writes go
//! through a single writer thread that drains every job waiting in its queue into one
//! transaction and commits them together (group commit). A job is acknowledged only after the
//! commit that holds it has returned, so nothing is acknowledged before it is durable.
//!
//! Because there is exactly one writer, each folder's change log is appended in a total order
//! and the invariants of DESIGN.md section 2 follow directly: UIDNEXT and HIGHESTMODSEQ are read
//! and advanced inside the transaction that uses them, so UIDs and MODSEQs strictly increase in
//! commit order. Events are published by the writer thread after each commit, in commit order.
//!
//! A job must check everything that can refuse it before it writes anything: a job that
//! returns a logical error (not found, over quota) simply contributes nothing to the batch. A
//! job that fails with a storage error aborts the whole batch, and every job in it is told so.

use std::{path::Path, sync::Arc, thread};

use futures::{StreamExt, stream::BoxStream};
use prost::Message as _;
use redb::{Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use tern_proto::v1::{
    EventKind, FlagsMode, FolderRef, MailboxEvent, MessageSummary, QueuedMessage, SpecialUse, folder_ref,
};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::BroadcastStream;

use super::{
    AccountChanges, AppendOp, Appended, Changes, CopyOutcome, DEFAULT_FOLDERS, FlagsOutcome, FolderList, MetadataStore,
    NewMessage, UsageCount, count_flags, event, queue, summary,
};
use crate::{
    error::{MailboxError, Result},
    flags, folder_name,
    records::{AccountRecord, ChangeRecord, DomainRecord, FolderRecord, MessageRecord, ParsedRecord},
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
}

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
        Ok(Self { db, jobs, events })
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

/// UIDVALIDITY for a new folder: the current time, or one more than the last one given out,
/// whichever is larger, so a folder deleted and created again in the same second still gets a
/// new UIDVALIDITY.
fn next_uidvalidity(txn: &WriteTransaction) -> Result<u32> {
    let mut t = txn.open_table(META)?;
    let last = t.get("uidvalidity")?.map(|v| v.value()).unwrap_or(0);
    let next = (last + 1).max(now() as u64 & 0x7fff_ffff).max(1);
    t.insert("uidvalidity", next)?;
    Ok(next as u32)
}

fn get_folder(t: &impl ReadableTable<u64, &'static [u8]>, id: u64) -> Result<Option<FolderRecord>> {
    t.get(id)?.map(|v| decode("folder", v.value())).transpose()
}

fn resolve_folder_id(
    names: &impl ReadableTable<(u64, &'static str), u64>,
    account_id: u64,
    folder: &FolderRef,
    folders: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<FolderRecord> {
    let id = match &folder.by {
        Some(folder_ref::By::Id(id)) => *id,
        Some(folder_ref::By::Name(name)) => {
            let name = folder_name::canonical(name)?;
            names
                .get((account_id, name.as_str()))?
                .map(|v| v.value())
                .ok_or_else(|| MailboxError::not_found("folder", name))?
        }
        None => return Err(MailboxError::invalid("folder", "no folder given")),
    };
    match get_folder(folders, id)? {
        Some(f) if f.account_id == account_id => Ok(f),
        _ => Err(MailboxError::not_found("folder", format!("id {id}"))),
    }
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

/// Inserts a message record into a folder, advancing UIDNEXT and HIGHESTMODSEQ.
fn insert_message(txn: &WriteTransaction, folder: &mut FolderRecord, mut m: MessageRecord) -> Result<MessageRecord> {
    folder.highest_modseq += 1;
    m.uid = folder.uidnext;
    m.modseq = folder.highest_modseq;
    folder.uidnext = folder
        .uidnext
        .checked_add(1)
        .ok_or_else(|| MailboxError::NotAllowed(format!("folder {} has used every UID", folder.name)))?;
    folder.messages += 1;
    folder.size += m.size;
    count_flags(folder, &m, 1);
    txn.open_table(MESSAGES)?.insert((folder.id, m.uid), m.encode_to_vec().as_slice())?;
    blob_ref(txn, &m.blob_id, 1)?;
    add_usage(txn, folder.account_id, 1, m.size as i64)?;
    Ok(m)
}

fn load_messages(txn: &WriteTransaction, folder: u64, uids: &[u32]) -> Result<Vec<MessageRecord>> {
    let t = txn.open_table(MESSAGES)?;
    let mut out = Vec::with_capacity(uids.len());
    for uid in uids {
        if let Some(v) = t.get((folder, *uid))? {
            out.push(decode::<MessageRecord>("message", v.value())?);
        }
    }
    Ok(out)
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

fn create_folder_in(
    txn: &WriteTransaction,
    account_id: u64,
    name: &str,
    special_use: SpecialUse,
) -> Result<FolderRecord> {
    let mut names = txn.open_table(FOLDER_NAMES)?;
    if names.get((account_id, name))?.is_some() {
        return Err(MailboxError::exists("folder", name));
    }
    let f = FolderRecord {
        id: next_id(txn, "folder")?,
        account_id,
        name: name.to_string(),
        uidvalidity: next_uidvalidity(txn)?,
        uidnext: 1,
        highest_modseq: 1,
        special_use: special_use as i32,
        subscribed: true,
        ..Default::default()
    };
    names.insert((account_id, name), f.id)?;
    drop(names);
    // The name may have been subscribed without a folder; the folder holds the subscription now.
    txn.open_table(SUBSCRIPTIONS)?.remove((account_id, name))?;
    put_folder(txn, &f)?;
    Ok(f)
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

#[async_trait::async_trait]
impl MetadataStore for EmbeddedStore {
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
        self.write(move |txn, _| {
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
            for (name, special_use) in DEFAULT_FOLDERS {
                create_folder_in(txn, account.id, name, special_use)?;
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
            if let Some(d) = changes.display_name {
                a.display_name = d;
            }
            if let Some(q) = changes.quota_bytes {
                a.quota_bytes = q;
            }
            if let Some(s) = changes.suspended {
                a.suspended = s;
            }
            if let Some(p) = changes.pop3_delete {
                a.pop3_delete = p as i32;
            }
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

    async fn usage(&self, account_id: u64) -> Result<UsageCount> {
        self.read(|txn| {
            let (messages, bytes) = txn.open_table(USAGE)?.get(account_id)?.map(|v| v.value()).unwrap_or((0, 0));
            Ok(UsageCount { messages, bytes })
        })
    }

    async fn list_folders(&self, account_id: u64) -> Result<FolderList> {
        self.read(|txn| {
            let folders = txn.open_table(FOLDERS)?;
            let mut out = FolderList::default();
            for item in txn.open_table(FOLDER_NAMES)?.range((account_id, "")..(account_id + 1, ""))? {
                let (_, v) = item?;
                if let Some(f) = get_folder(&folders, v.value())? {
                    out.folders.push(f);
                }
            }
            for item in txn.open_table(SUBSCRIPTIONS)?.range((account_id, "")..(account_id + 1, ""))? {
                let (k, _) = item?;
                out.subscribed_without_folder.push(k.value().1.to_string());
            }
            Ok(out)
        })
    }

    async fn create_folder(&self, account_id: u64, name: &str, special_use: SpecialUse) -> Result<FolderRecord> {
        let name = folder_name::canonical(name)?;
        self.write(move |txn, events| {
            if load_account(&txn.open_table(ACCOUNTS)?, account_id)?.is_none() {
                return Err(MailboxError::not_found("account", account_id.to_string()));
            }
            let f = create_folder_in(txn, account_id, &name, special_use)?;
            events.push(event(&f, EventKind::FolderCreated, f.highest_modseq, vec![]));
            Ok(f)
        })
        .await
    }

    async fn delete_folder(&self, account_id: u64, name: &str) -> Result<()> {
        let name = folder_name::canonical(name)?;
        if folder_name::is_inbox(&name) {
            return Err(MailboxError::NotAllowed("INBOX cannot be deleted".into()));
        }
        self.write(move |txn, events| {
            let f = resolve_folder_id(
                &txn.open_table(FOLDER_NAMES)?,
                account_id,
                &FolderRef::name(name.clone()),
                &txn.open_table(FOLDERS)?,
            )?;
            // RFC 9051 section 6.3.5: a folder with children cannot be deleted while they exist
            // (we have no \Noselect placeholders, so refusing is the honest answer).
            let prefix = format!("{name}{}", folder_name::DELIMITER);
            let has_children = match txn.open_table(FOLDER_NAMES)?.range((account_id, prefix.as_str())..)?.next() {
                Some(item) => {
                    let (k, _) = item?;
                    let (acc, child) = k.value();
                    acc == account_id && child.starts_with(&prefix)
                }
                None => false,
            };
            if has_children {
                return Err(MailboxError::NotAllowed(format!("folder {name} has sub-folders")));
            }
            drop_folder(txn, &f)?;
            // DELETE does not unsubscribe (RFC 3501 section 6.3.6): the name stays subscribed.
            if f.subscribed {
                txn.open_table(SUBSCRIPTIONS)?.insert((account_id, name.as_str()), ())?;
            }
            events.push(event(&f, EventKind::FolderDeleted, f.highest_modseq, vec![]));
            Ok(())
        })
        .await
    }

    async fn rename_folder(&self, account_id: u64, from: &str, to: &str) -> Result<FolderRecord> {
        let from = folder_name::canonical(from)?;
        let to = folder_name::canonical(to)?;
        if folder_name::is_inbox(&from) || to == "INBOX" || to.starts_with("INBOX/") && from == "INBOX" {
            return Err(MailboxError::NotAllowed("INBOX cannot be renamed".into()));
        }
        self.write(move |txn, events| {
            let names = txn.open_table(FOLDER_NAMES)?;
            if names.get((account_id, to.as_str()))?.is_some() {
                return Err(MailboxError::exists("folder", &to));
            }
            let prefix = format!("{from}{}", folder_name::DELIMITER);
            if to.starts_with(&prefix) {
                return Err(MailboxError::NotAllowed(format!("cannot move {from} under itself")));
            }
            // The folder and every sub-folder move together.
            let mut moving = Vec::new();
            for item in names.range((account_id, from.as_str())..)? {
                let (k, v) = item?;
                let (acc, name) = k.value();
                if acc != account_id || !(name == from || name.starts_with(&prefix)) {
                    if acc != account_id || name > prefix.as_str() {
                        break;
                    }
                    continue;
                }
                moving.push((name.to_string(), v.value()));
            }
            drop(names);
            if moving.iter().all(|(n, _)| n != &from) {
                return Err(MailboxError::not_found("folder", &from));
            }
            // Every target name is checked before anything is renamed: a job must not write
            // before it can no longer refuse (see the module documentation).
            for (old, _) in &moving {
                let new = format!("{to}{}", &old[from.len()..]);
                if txn.open_table(FOLDER_NAMES)?.get((account_id, new.as_str()))?.is_some() {
                    return Err(MailboxError::exists("folder", new));
                }
            }
            let mut renamed = None;
            for (old, id) in moving {
                let new = format!("{to}{}", &old[from.len()..]);
                let mut f = get_folder(&txn.open_table(FOLDERS)?, id)?
                    .ok_or_else(|| MailboxError::not_found("folder", &old))?;
                txn.open_table(FOLDER_NAMES)?.remove((account_id, old.as_str()))?;
                txn.open_table(FOLDER_NAMES)?.insert((account_id, new.as_str()), id)?;
                // A subscription to the new name, kept from a deleted folder, is the folder's now.
                if txn.open_table(SUBSCRIPTIONS)?.remove((account_id, new.as_str()))?.is_some() {
                    f.subscribed = true;
                }
                f.name = new;
                put_folder(txn, &f)?;
                events.push(event(&f, EventKind::FolderRenamed, f.highest_modseq, vec![]));
                if old == from {
                    renamed = Some(f);
                }
            }
            renamed.ok_or_else(|| MailboxError::not_found("folder", &from))
        })
        .await
    }

    async fn subscribe_folder(&self, account_id: u64, name: &str, subscribed: bool) -> Result<()> {
        let name = folder_name::canonical(name)?;
        self.write(move |txn, _| {
            let folder = resolve_folder_id(
                &txn.open_table(FOLDER_NAMES)?,
                account_id,
                &FolderRef::name(name.clone()),
                &txn.open_table(FOLDERS)?,
            );
            match folder {
                Ok(mut f) => {
                    f.subscribed = subscribed;
                    put_folder(txn, &f)
                }
                // A name without a folder can only be unsubscribed, whether it was subscribed
                // or not, as Dovecot does: that is how a deleted folder's subscription goes.
                Err(MailboxError::NotFound { .. }) if !subscribed => {
                    txn.open_table(SUBSCRIPTIONS)?.remove((account_id, name.as_str()))?;
                    Ok(())
                }
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn claim_recent(&self, account_id: u64, folder_id: u64, up_to: u32) -> Result<(u32, u32)> {
        // How many messages from the first unclaimed UID on exist.
        fn unclaimed(messages: &impl ReadableTable<(u64, u32), &'static [u8]>, f: &FolderRecord) -> Result<u32> {
            Ok(messages.range((f.id, f.recent_uid)..=(f.id, u32::MAX))?.count() as u32)
        }
        let folder = FolderRef::id(folder_id);
        let (from, count) = self.read(|txn| {
            let f = resolve_folder_id(&txn.open_table(FOLDER_NAMES)?, account_id, &folder, &txn.open_table(FOLDERS)?)?;
            Ok((f.recent_uid, unclaimed(&txn.open_table(MESSAGES)?, &f)?))
        })?;
        // Claiming nothing new needs no write, which is the common case: every session that
        // sees a new message asks, and only the first one claims it.
        if up_to <= from {
            return Ok((from, count));
        }
        self.write(move |txn, _| {
            let mut f =
                resolve_folder_id(&txn.open_table(FOLDER_NAMES)?, account_id, &folder, &txn.open_table(FOLDERS)?)?;
            let out = (f.recent_uid, unclaimed(&txn.open_table(MESSAGES)?, &f)?);
            if up_to > f.recent_uid {
                f.recent_uid = up_to;
                put_folder(txn, &f)?;
            }
            Ok(out)
        })
        .await
    }

    async fn folder(&self, account_id: u64, folder: &FolderRef) -> Result<FolderRecord> {
        self.read(|txn| {
            resolve_folder_id(&txn.open_table(FOLDER_NAMES)?, account_id, folder, &txn.open_table(FOLDERS)?)
        })
    }

    async fn select(&self, account_id: u64, folder: &FolderRef) -> Result<(FolderRecord, Vec<MessageSummary>)> {
        self.read(|txn| {
            let f = resolve_folder_id(&txn.open_table(FOLDER_NAMES)?, account_id, folder, &txn.open_table(FOLDERS)?)?;
            let msgs = all_messages(&txn.open_table(MESSAGES)?, f.id)?;
            Ok((f, msgs.iter().map(summary).collect()))
        })
    }

    async fn blob_refs(&self, blob_id: &str) -> Result<u64> {
        self.read(|txn| Ok(txn.open_table(BLOB_REFS)?.get(blob_id)?.map(|v| v.value()).unwrap_or(0)))
    }

    async fn append(&self, message: NewMessage, ops: Vec<AppendOp>) -> Result<Vec<Result<Appended>>> {
        let flag_sets = ops.iter().map(|op| flags::normalize(&op.flags)).collect::<Vec<_>>();
        self.write(move |txn, events| {
            let parsed = ParsedRecord { envelope: Some(message.parsed.envelope), body: Some(message.parsed.body) };
            let mut results = Vec::with_capacity(ops.len());
            let mut stored_parsed = false;
            for (op, flag_set) in ops.into_iter().zip(flag_sets) {
                let outcome = (|| -> Result<Appended> {
                    let flag_set = flag_set?;
                    let account = load_account(&txn.open_table(ACCOUNTS)?, op.account_id)?
                        .ok_or_else(|| MailboxError::not_found("account", op.account_id.to_string()))?;
                    let mut folder = resolve_folder_id(
                        &txn.open_table(FOLDER_NAMES)?,
                        op.account_id,
                        &op.folder,
                        &txn.open_table(FOLDERS)?,
                    )?;
                    let (_, used) = txn.open_table(USAGE)?.get(op.account_id)?.map(|v| v.value()).unwrap_or((0, 0));
                    if account.quota_bytes > 0 && used + message.size > account.quota_bytes {
                        return Err(MailboxError::OverQuota {
                            address: account.address,
                            used,
                            size: message.size,
                            limit: account.quota_bytes,
                        });
                    }
                    let record = MessageRecord {
                        uid: 0,
                        flags: flag_set,
                        modseq: 0,
                        size: message.size,
                        internal_date: message.internal_date,
                        blob_id: message.blob_id.clone(),
                        email_id: next_id(txn, "email")?,
                    };
                    let m = insert_message(txn, &mut folder, record)?;
                    log_change(txn, folder.id, m.modseq, EventKind::Append, vec![m.uid])?;
                    put_folder(txn, &folder)?;
                    events.push(event(&folder, EventKind::Append, m.modseq, vec![summary(&m)]));
                    Ok(Appended {
                        folder_id: folder.id,
                        folder_name: folder.name.clone(),
                        uidvalidity: folder.uidvalidity,
                        uid: m.uid,
                        modseq: m.modseq,
                    })
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

    async fn messages(
        &self,
        account_id: u64,
        folder_id: u64,
        uids: &[u32],
        with_structure: bool,
    ) -> Result<Vec<(MessageRecord, Option<ParsedRecord>)>> {
        self.read(|txn| {
            let f = resolve_folder_id(
                &txn.open_table(FOLDER_NAMES)?,
                account_id,
                &FolderRef::id(folder_id),
                &txn.open_table(FOLDERS)?,
            )?;
            let msgs = txn.open_table(MESSAGES)?;
            let parsed = txn.open_table(PARSED)?;
            let mut out = Vec::with_capacity(uids.len());
            for uid in uids {
                let Some(v) = msgs.get((f.id, *uid))? else { continue };
                let m: MessageRecord = decode("message", v.value())?;
                let p = if with_structure {
                    parsed.get(m.blob_id.as_str())?.map(|v| decode("parsed", v.value())).transpose()?
                } else {
                    None
                };
                out.push((m, p));
            }
            Ok(out)
        })
    }

    async fn store_flags(
        &self,
        account_id: u64,
        folder_id: u64,
        uids: &[u32],
        mode: FlagsMode,
        new_flags: Vec<String>,
        unchanged_since: u64,
    ) -> Result<FlagsOutcome> {
        let new_flags = flags::normalize(&new_flags)?;
        if mode == FlagsMode::Unspecified {
            return Err(MailboxError::invalid("flags mode", "unspecified"));
        }
        let uids = uids.to_vec();
        self.write(move |txn, events| {
            let mut folder = resolve_folder_id(
                &txn.open_table(FOLDER_NAMES)?,
                account_id,
                &FolderRef::id(folder_id),
                &txn.open_table(FOLDERS)?,
            )?;
            let msgs = load_messages(txn, folder.id, &uids)?;
            let mut out = FlagsOutcome::default();
            let mut changed = Vec::new();
            for mut m in msgs {
                if unchanged_since > 0 && m.modseq > unchanged_since {
                    out.modified.push(m.uid);
                    continue;
                }
                let next = flags::apply(mode, &m.flags, &new_flags);
                if next == m.flags {
                    continue;
                }
                count_flags(&mut folder, &m, -1);
                m.flags = next;
                count_flags(&mut folder, &m, 1);
                changed.push(m);
            }
            if !changed.is_empty() {
                // One change, one MODSEQ: every message touched by this STORE shares it.
                folder.highest_modseq += 1;
                let mut t = txn.open_table(MESSAGES)?;
                for m in &mut changed {
                    m.modseq = folder.highest_modseq;
                    t.insert((folder.id, m.uid), m.encode_to_vec().as_slice())?;
                }
                drop(t);
                log_change(
                    txn,
                    folder.id,
                    folder.highest_modseq,
                    EventKind::Flags,
                    changed.iter().map(|m| m.uid).collect(),
                )?;
                put_folder(txn, &folder)?;
                out.updated = changed.iter().map(summary).collect();
                events.push(event(&folder, EventKind::Flags, folder.highest_modseq, out.updated.clone()));
            }
            out.highest_modseq = folder.highest_modseq;
            Ok(out)
        })
        .await
    }

    async fn copy(
        &self,
        account_id: u64,
        folder_id: u64,
        uids: &[u32],
        destination: &FolderRef,
        remove_source: bool,
    ) -> Result<CopyOutcome> {
        let uids = uids.to_vec();
        let destination = destination.clone();
        self.write(move |txn, events| {
            let names = txn.open_table(FOLDER_NAMES)?;
            let folders = txn.open_table(FOLDERS)?;
            let mut src = resolve_folder_id(&names, account_id, &FolderRef::id(folder_id), &folders)?;
            let mut dst = resolve_folder_id(&names, account_id, &destination, &folders)?;
            drop((names, folders));
            let msgs = load_messages(txn, src.id, &uids)?;
            let account = load_account(&txn.open_table(ACCOUNTS)?, account_id)?
                .ok_or_else(|| MailboxError::not_found("account", account_id.to_string()))?;
            let added: u64 = msgs.iter().map(|m| m.size).sum();
            let (_, used) = txn.open_table(USAGE)?.get(account_id)?.map(|v| v.value()).unwrap_or((0, 0));
            if !remove_source && account.quota_bytes > 0 && used + added > account.quota_bytes {
                return Err(MailboxError::OverQuota {
                    address: account.address,
                    used,
                    size: added,
                    limit: account.quota_bytes,
                });
            }
            let mut out =
                CopyOutcome { uidvalidity: dst.uidvalidity, destination_folder_id: dst.id, ..Default::default() };
            let mut dst_summaries = Vec::new();
            for m in &msgs {
                let copy = MessageRecord { uid: 0, modseq: 0, ..m.clone() };
                let c = insert_message(txn, &mut dst, copy)?;
                out.source_uids.push(m.uid);
                out.destination_uids.push(c.uid);
                dst_summaries.push(summary(&c));
            }
            if !msgs.is_empty() {
                // Appends in one COPY are one change of the destination per message, matching
                // the MODSEQ each got from insert_message.
                for s in &dst_summaries {
                    log_change(txn, dst.id, s.modseq, EventKind::Append, vec![s.uid])?;
                }
                put_folder(txn, &dst)?;
                for s in dst_summaries {
                    events.push(event(&dst, EventKind::Append, s.modseq, vec![s]));
                }
                // A MOVE within one folder (legal, RFC 6851 section 3.3) removes the originals
                // from the record the copies were just added to.
                if src.id == dst.id {
                    src = dst.clone();
                }
            }
            if remove_source && !msgs.is_empty() {
                src.highest_modseq += 1;
                let mut t = txn.open_table(MESSAGES)?;
                for m in &msgs {
                    t.remove((src.id, m.uid))?;
                }
                drop(t);
                for m in &msgs {
                    src.messages -= 1;
                    src.size -= m.size;
                    count_flags(&mut src, m, -1);
                    blob_ref(txn, &m.blob_id, -1)?;
                }
                add_usage(txn, account_id, -(msgs.len() as i64), -(added as i64))?;
                log_change(txn, src.id, src.highest_modseq, EventKind::Expunge, out.source_uids.clone())?;
                put_folder(txn, &src)?;
                let gone = out
                    .source_uids
                    .iter()
                    .map(|uid| MessageSummary { uid: *uid, flags: vec![], modseq: src.highest_modseq, size: 0 })
                    .collect();
                events.push(event(&src, EventKind::Expunge, src.highest_modseq, gone));
            }
            out.highest_modseq = src.highest_modseq;
            Ok(out)
        })
        .await
    }

    async fn expunge(
        &self,
        account_id: u64,
        folder_id: u64,
        uids: Option<&[u32]>,
        only_deleted: bool,
    ) -> Result<(Vec<u32>, u64)> {
        let uids = uids.map(<[u32]>::to_vec);
        self.write(move |txn, events| {
            let mut folder = resolve_folder_id(
                &txn.open_table(FOLDER_NAMES)?,
                account_id,
                &FolderRef::id(folder_id),
                &txn.open_table(FOLDERS)?,
            )?;
            let msgs = match &uids {
                Some(uids) => load_messages(txn, folder.id, uids)?,
                None => all_messages(&txn.open_table(MESSAGES)?, folder.id)?,
            };
            let doomed: Vec<MessageRecord> =
                msgs.into_iter().filter(|m| !only_deleted || flags::has(&m.flags, flags::DELETED)).collect();
            if doomed.is_empty() {
                return Ok((vec![], folder.highest_modseq));
            }
            folder.highest_modseq += 1;
            let mut bytes = 0;
            let mut t = txn.open_table(MESSAGES)?;
            for m in &doomed {
                t.remove((folder.id, m.uid))?;
            }
            drop(t);
            for m in &doomed {
                folder.messages -= 1;
                folder.size -= m.size;
                bytes += m.size;
                count_flags(&mut folder, m, -1);
                blob_ref(txn, &m.blob_id, -1)?;
            }
            add_usage(txn, account_id, -(doomed.len() as i64), -(bytes as i64))?;
            let gone: Vec<u32> = doomed.iter().map(|m| m.uid).collect();
            log_change(txn, folder.id, folder.highest_modseq, EventKind::Expunge, gone.clone())?;
            put_folder(txn, &folder)?;
            let summaries = gone
                .iter()
                .map(|uid| MessageSummary { uid: *uid, flags: vec![], modseq: folder.highest_modseq, size: 0 })
                .collect();
            events.push(event(&folder, EventKind::Expunge, folder.highest_modseq, summaries));
            Ok((gone, folder.highest_modseq))
        })
        .await
    }

    async fn changes(&self, account_id: u64, folder_id: u64, since_modseq: u64) -> Result<Changes> {
        self.read(|txn| {
            let f = resolve_folder_id(
                &txn.open_table(FOLDER_NAMES)?,
                account_id,
                &FolderRef::id(folder_id),
                &txn.open_table(FOLDERS)?,
            )?;
            let mut out =
                Changes { uidvalidity: f.uidvalidity, highest_modseq: f.highest_modseq, ..Default::default() };
            for m in all_messages(&txn.open_table(MESSAGES)?, f.id)? {
                if m.modseq > since_modseq {
                    out.changed.push(summary(&m));
                }
            }
            // Saturating: a client may send any MODSEQ, and u64::MAX + 1 would panic (debug) or
            // wrap to zero and report every expunge ever made (release).
            for item in txn.open_table(CHANGES)?.range((f.id, since_modseq.saturating_add(1))..=(f.id, u64::MAX))? {
                let (_, v) = item?;
                let c: ChangeRecord = decode("change", v.value())?;
                if c.kind == EventKind::Expunge as i32 {
                    out.vanished.extend(c.uids);
                }
            }
            out.vanished.sort_unstable();
            Ok(out)
        })
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
