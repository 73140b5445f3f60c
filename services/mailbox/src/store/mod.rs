//! The metadata store: the directory (domains, accounts, aliases), every account's folders and
//! messages, and the outbound queue.
//!
//! [`MetadataStore`] is the one trait a backend implements. The embedded backend
//! ([`embedded::EmbeddedStore`], redb) is the default; the distributed one
//! ([`nats::NatsStore`], NATS JetStream) is a second implementation of the same trait. Bodies
//! are not here: they live in the [`crate::blobs::BlobStore`].
//!
//! The mail rules are not in the backends either. [`log`] decides every change of an account's
//! folders and messages against a read-only [`log::View`] of its state and returns the
//! [`LogEntry`] that records it; a backend only gives that view
//! ([`MetadataStore::read_account`]) and commits the entry
//! ([`MetadataStore::write_account`]). The folder and message operations of this trait are
//! written once, here, on top of those two.
//!
//! Every write is atomic: it commits entirely or not at all, and it returns only after its
//! commit is durable. Events for committed changes reach subscribers in commit order.

pub mod embedded;
pub mod log;
pub mod nats;
pub mod queue;
pub mod state;

use std::sync::{Arc, Mutex};

use futures::stream::BoxStream;
use tern_proto::v1::{FlagsMode, FolderRef, MailboxEvent, MessageSummary, QueuedMessage, SpecialUse};

use crate::{
    error::{MailboxError, Result},
    parse::Parsed,
    records::{
        AccountRecord, DomainRecord, EventKind, EventRecord, FolderRecord, LogEntry, MessageRecord, ParsedRecord,
    },
};

/// A read of one account's state; a backend runs it once against its current state.
pub type ReadFn<'a> = Box<dyn FnOnce(&dyn log::View) -> Result<()> + Send + 'a>;
/// A write of one account: decides the entry to commit (none for no change) against the
/// account's state. A backend may run it again on a newer state when another writer committed
/// first, so it must decide from the view alone.
pub type WriteFn = Box<dyn FnMut(&dyn log::View) -> Result<Option<LogEntry>> + Send + 'static>;

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Runs `f` against the account's current state.
pub(crate) async fn read<S, T>(
    store: &S,
    account_id: u64,
    f: impl FnOnce(&dyn log::View) -> Result<T> + Send,
) -> Result<T>
where
    S: MetadataStore + ?Sized,
    T: Send,
{
    let mut out = None;
    store
        .read_account(
            account_id,
            Box::new(|view| {
                out = Some(f(view)?);
                Ok(())
            }),
        )
        .await?;
    out.ok_or_else(|| MailboxError::Commit("the store did not run a read".into()))
}

/// Decides a change with `f` (see [`WriteFn`]) and commits it; answers what `f` answered on
/// the state it was committed against.
async fn write<S, T>(
    store: &S,
    account_id: u64,
    mut f: impl FnMut(&dyn log::View) -> Result<log::Step<T>> + Send + 'static,
) -> Result<T>
where
    S: MetadataStore + ?Sized,
    T: Send + 'static,
{
    let out = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&out);
    store
        .write_account(
            account_id,
            Box::new(move |view| {
                let (entry, answer) = f(view)?;
                *slot.lock().expect("write answer") = Some(answer);
                Ok(entry)
            }),
        )
        .await?;
    let answer = out.lock().expect("write answer").take();
    answer.ok_or_else(|| MailboxError::Commit("the store did not run a write".into()))
}

/// What an update of a domain changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct DomainUpdate {
    pub catch_all: Option<String>,
    pub default_quota: Option<u64>,
    /// The DKIM selector and private key (PEM).
    pub dkim: Option<(String, String)>,
    /// The spam settings, replaced as a whole.
    pub spam: Option<crate::records::SpamSettingsRecord>,
}

impl DomainUpdate {
    pub fn apply(self, d: &mut DomainRecord) {
        if let Some(c) = self.catch_all {
            d.catch_all = c;
        }
        if let Some(q) = self.default_quota {
            d.default_quota_bytes = q;
        }
        if let Some((selector, key)) = self.dkim {
            d.dkim_selector = selector;
            d.dkim_private_key = key;
        }
        if let Some(s) = self.spam {
            d.spam = Some(s);
        }
    }
}

/// The folders every new account gets.
pub const DEFAULT_FOLDERS: [(&str, SpecialUse); 6] = [
    ("INBOX", SpecialUse::None),
    ("Sent", SpecialUse::Sent),
    ("Drafts", SpecialUse::Drafts),
    ("Trash", SpecialUse::Trash),
    ("Junk", SpecialUse::Junk),
    ("Archive", SpecialUse::Archive),
];

/// What a session is told of a message.
pub fn summary(m: &MessageRecord) -> MessageSummary {
    MessageSummary { uid: m.uid, flags: m.flags.clone(), modseq: m.modseq, size: m.size }
}

/// The event for a change of `folder`, as a log entry records it; `messages` are what the
/// change answers its caller.
pub fn event(folder: &FolderRecord, kind: EventKind, modseq: u64, messages: Vec<MessageSummary>) -> EventRecord {
    EventRecord {
        account_id: folder.account_id,
        folder_id: folder.id,
        kind: kind as i32,
        modseq,
        messages: messages.into_iter().map(Into::into).collect(),
        folder_name: folder.name.clone(),
    }
}

/// Adds (`sign` 1) or removes (-1) a message from the counts of a folder that depend on its
/// flags.
pub fn count_flags(f: &mut FolderRecord, m: &MessageRecord, sign: i32) {
    let apply = |v: u32| v.saturating_add_signed(sign);
    if !crate::flags::has(&m.flags, crate::flags::SEEN) {
        f.unseen = apply(f.unseen);
    }
    if crate::flags::has(&m.flags, crate::flags::DELETED) {
        f.deleted = apply(f.deleted);
    }
}

/// A message ready to be recorded: its body is already stored under `blob_id`.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub blob_id: String,
    pub size: u64,
    pub internal_date: i64,
    pub parsed: Parsed,
    /// The UID an import keeps from its source (`tern admin import`): given when it is not below
    /// the folder's UIDNEXT, and otherwise, as when zero, the next UID is.
    pub uid: u32,
    /// Recorded even past the account's quota (`tern admin import --ignore-quota`).
    pub quota_exempt: bool,
}

/// One message appended to one folder of one account.
#[derive(Debug, Clone)]
pub struct AppendOp {
    pub account_id: u64,
    pub folder: FolderRef,
    /// Normalised ([`crate::flags::normalize`]), as the service makes them.
    pub flags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    pub folder_id: u64,
    pub folder_name: String,
    pub uidvalidity: u32,
    pub uid: u32,
    pub modseq: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlagsOutcome {
    pub updated: Vec<MessageSummary>,
    pub modified: Vec<u32>,
    pub highest_modseq: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CopyOutcome {
    pub uidvalidity: u32,
    pub destination_folder_id: u64,
    pub source_uids: Vec<u32>,
    pub destination_uids: Vec<u32>,
    pub highest_modseq: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    pub uidvalidity: u32,
    pub highest_modseq: u64,
    pub changed: Vec<MessageSummary>,
    pub vanished: Vec<u32>,
}

/// The longest a tracking record ([`MetadataStore::track`]) is kept: the longest vacation
/// period Tern allows, with a day to spare.
pub const MAX_TRACKING_SECONDS: u64 = 91 * 86_400;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountChanges {
    pub address: String,
    pub display_name: Option<String>,
    pub quota_bytes: Option<u64>,
    pub suspended: Option<bool>,
    pub pop3_delete: Option<tern_proto::v1::Pop3DeletePolicy>,
    /// The server annotations (IMAP METADATA on the mailbox ""), replaced as a whole.
    pub metadata: Option<Vec<crate::records::MetadataEntry>>,
    /// The spam settings, replaced as a whole.
    pub spam: Option<crate::records::SpamSettingsRecord>,
    /// The Sieve scripts and which one is active, replaced as a whole (checked by the
    /// service's `sieve` module).
    pub sieve: Option<crate::records::SieveRecord>,
}

impl AccountChanges {
    /// Applies the changes to the account's record; `None` leaves a field as it is.
    pub fn apply(self, a: &mut AccountRecord) {
        if let Some(d) = self.display_name {
            a.display_name = d;
        }
        if let Some(q) = self.quota_bytes {
            a.quota_bytes = q;
        }
        if let Some(s) = self.suspended {
            a.suspended = s;
        }
        if let Some(p) = self.pop3_delete {
            a.pop3_delete = crate::records::Pop3DeletePolicy::from(p) as i32;
        }
        if let Some(m) = self.metadata {
            a.metadata = m;
        }
        if let Some(s) = self.spam {
            a.spam = Some(s);
        }
        if let Some(s) = self.sieve {
            a.sieve = Some(s);
        }
    }
}

/// An account's folders and its subscriptions, as of one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FolderList {
    /// Sorted by name. A folder's own subscription is its record's `subscribed`.
    pub folders: Vec<FolderRecord>,
    /// The subscribed names that no folder has, sorted. A subscription outlives its folder
    /// (DELETE does not unsubscribe, RFC 3501 section 6.3.6), so a subscribed folder that is
    /// deleted leaves its name here; creating or renaming a folder to that name takes it back.
    pub subscribed_without_folder: Vec<String>,
}

/// Messages and bytes an account holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageCount {
    pub messages: u64,
    pub bytes: u64,
}

#[async_trait::async_trait]
pub trait MetadataStore: Send + Sync + std::fmt::Debug + 'static {
    // The directory.
    async fn create_domain(&self, domain: DomainRecord) -> Result<DomainRecord>;
    async fn update_domain(&self, name: &str, update: DomainUpdate) -> Result<DomainRecord>;
    async fn domain(&self, name: &str) -> Result<Option<DomainRecord>>;
    async fn list_domains(&self) -> Result<Vec<(DomainRecord, u64)>>;
    async fn delete_domain(&self, name: &str) -> Result<()>;

    /// Creates an account with INBOX and the special-use folders.
    async fn create_account(&self, account: AccountRecord) -> Result<AccountRecord>;
    async fn update_account(&self, changes: AccountChanges) -> Result<AccountRecord>;
    async fn set_password(&self, address: &str, hash: String) -> Result<()>;
    async fn account(&self, id: u64) -> Result<Option<AccountRecord>>;
    async fn account_by_address(&self, address: &str) -> Result<Option<AccountRecord>>;
    async fn list_accounts(&self, domain: Option<&str>) -> Result<Vec<AccountRecord>>;
    /// Removes the account with its folders and messages, and drops its body references.
    async fn delete_account(&self, address: &str) -> Result<()>;
    async fn add_alias(&self, alias: &str, target: &str) -> Result<()>;
    async fn remove_alias(&self, alias: &str) -> Result<()>;
    async fn alias(&self, alias: &str) -> Result<Option<u64>>;
    async fn list_aliases(&self, domain: Option<&str>) -> Result<Vec<(String, String)>>;

    // Accounts' folders and messages: the two primitives every operation below is built on.
    /// Runs `read` once against the account's current state (current as of the client's last
    /// write, at least).
    async fn read_account(&self, account_id: u64, read: ReadFn<'_>) -> Result<()>;
    /// Runs `write` against the account's current state and commits the entry it returns,
    /// atomically and durably; events of the entry go to watchers in commit order.
    async fn write_account(&self, account_id: u64, write: WriteFn) -> Result<()>;
    /// An id for a new folder, unique in the store.
    async fn new_folder_id(&self) -> Result<u64>;
    /// The parsed structure (envelope, MIME tree) stored with a body.
    async fn parsed(&self, blob_id: &str) -> Result<Option<ParsedRecord>>;

    async fn usage(&self, account_id: u64) -> Result<UsageCount> {
        read(self, account_id, |v| v.usage()).await
    }

    async fn list_folders(&self, account_id: u64) -> Result<FolderList> {
        read(self, account_id, log::list_folders).await
    }

    /// Creates a folder; `name` must be canonical ([`crate::folder_name::canonical`]), as every name
    /// the operations below take: the service makes it so.
    async fn create_folder(&self, account_id: u64, name: &str, special_use: SpecialUse) -> Result<FolderRecord> {
        self.import_folder(account_id, name, special_use, 0).await
    }

    /// Creates a folder with a given UIDVALIDITY (zero: one of its own), or gives it to a folder
    /// that has never held a message: see [`log::import_folder`].
    async fn import_folder(
        &self,
        account_id: u64,
        name: &str,
        special_use: SpecialUse,
        uidvalidity: u32,
    ) -> Result<FolderRecord> {
        let name = name.to_string();
        if self.account(account_id).await?.is_none() {
            return Err(MailboxError::not_found("account", account_id.to_string()));
        }
        let id = self.new_folder_id().await?;
        write(self, account_id, move |v| log::import_folder(v, &name, special_use, id, now(), uidvalidity)).await
    }

    /// Deletes a folder with its messages; its subscription stays, by name (see [`FolderList`]).
    async fn delete_folder(&self, account_id: u64, name: &str) -> Result<()> {
        let name = name.to_string();
        write(self, account_id, move |v| log::delete_folder(v, &name)).await
    }

    /// Renames a folder and its sub-folders; each keeps its subscription, and one whose new name
    /// was subscribed without a folder becomes subscribed.
    async fn rename_folder(&self, account_id: u64, from: &str, to: &str) -> Result<FolderRecord> {
        let (from, to) = (from.to_string(), to.to_string());
        write(self, account_id, move |v| log::rename_folder(v, &from, &to)).await
    }

    /// Subscribes to an existing folder (not found when there is none, as Dovecot answers), or
    /// unsubscribes from a name, whether a folder has it, it is only on the list of subscribed
    /// names without a folder, or it is not subscribed at all.
    async fn subscribe_folder(&self, account_id: u64, name: &str, subscribed: bool) -> Result<()> {
        let name = name.to_string();
        write(self, account_id, move |v| log::subscribe_folder(v, &name, subscribed)).await
    }

    /// Sets and removes annotations of a folder (see [`log::set_folder_metadata`]); false when
    /// the folder would have more than `max_entries`, and then nothing is written.
    async fn set_folder_metadata(
        &self,
        account_id: u64,
        name: &str,
        changes: Vec<(String, Option<Vec<u8>>)>,
        max_entries: usize,
    ) -> Result<bool> {
        let name = name.to_string();
        write(self, account_id, move |v| log::set_folder_metadata(v, &name, &changes, max_entries)).await
    }

    async fn folder(&self, account_id: u64, folder: &FolderRef) -> Result<FolderRecord> {
        read(self, account_id, |v| log::resolve(v, folder)).await
    }

    /// Claims the folder's messages below `up_to` as \Recent for one session: returns the
    /// lowest UID not claimed before, and how many messages from that UID on exist (before the
    /// claim). An `up_to` at or below that UID claims nothing and writes nothing.
    async fn claim_recent(&self, account_id: u64, folder_id: u64, up_to: u32) -> Result<(u32, u32)> {
        // Claiming nothing new needs no write, which is the common case: every session that
        // sees a new message asks, and only the first one claims it.
        let (entry, seen) = read(self, account_id, |v| log::claim_recent(v, folder_id, up_to)).await?;
        if entry.is_none() {
            return Ok(seen);
        }
        write(self, account_id, move |v| log::claim_recent(v, folder_id, up_to)).await
    }

    /// The folder and all its messages as of one MODSEQ.
    async fn select(&self, account_id: u64, folder: &FolderRef) -> Result<(FolderRecord, Vec<MessageSummary>)> {
        read(self, account_id, |v| log::select(v, folder)).await
    }

    async fn messages(
        &self,
        account_id: u64,
        folder_id: u64,
        uids: &[u32],
        with_structure: bool,
    ) -> Result<Vec<(MessageRecord, Option<ParsedRecord>)>> {
        let found = read(self, account_id, |v| log::messages(v, folder_id, uids)).await?;
        let mut out = Vec::with_capacity(found.len());
        for m in found {
            let p = if with_structure { self.parsed(&m.blob_id).await? } else { None };
            out.push((m, p));
        }
        Ok(out)
    }

    /// Changes flags; `new_flags` must be normalised ([`crate::flags::normalize`]), as the service
    /// makes them.
    async fn store_flags(
        &self,
        account_id: u64,
        folder_id: u64,
        uids: &[u32],
        mode: FlagsMode,
        new_flags: Vec<String>,
        unchanged_since: u64,
    ) -> Result<FlagsOutcome> {
        let uids = uids.to_vec();
        write(self, account_id, move |v| log::store_flags(v, folder_id, &uids, mode, &new_flags, unchanged_since)).await
    }

    async fn copy(
        &self,
        account_id: u64,
        folder_id: u64,
        uids: &[u32],
        destination: &FolderRef,
        remove_source: bool,
    ) -> Result<CopyOutcome> {
        let account = self
            .account(account_id)
            .await?
            .ok_or_else(|| MailboxError::not_found("account", account_id.to_string()))?;
        let (uids, destination) = (uids.to_vec(), destination.clone());
        write(self, account_id, move |v| log::copy(v, &account, folder_id, &uids, &destination, remove_source)).await
    }

    /// Expunges `uids` (all messages when None), only those flagged \Deleted if asked.
    async fn expunge(
        &self,
        account_id: u64,
        folder_id: u64,
        uids: Option<&[u32]>,
        only_deleted: bool,
    ) -> Result<(Vec<u32>, u64)> {
        let uids = uids.map(<[u32]>::to_vec);
        write(self, account_id, move |v| log::expunge(v, folder_id, uids.as_deref(), only_deleted)).await
    }

    async fn changes(&self, account_id: u64, folder_id: u64, since_modseq: u64) -> Result<Changes> {
        read(self, account_id, |v| log::changes(v, folder_id, since_modseq)).await
    }

    // Messages.
    /// How many messages refer to a body: zero means it may not be stored (yet, or any more).
    async fn blob_refs(&self, blob_id: &str) -> Result<u64>;

    /// Adds `cost` to the rate counter `key` and returns its new total. Counters are shared by
    /// every process using the store and are forgotten `ttl` after they were last counted; the
    /// caller puts the window in the key.
    async fn count_rate(&self, key: &str, cost: u64, ttl: std::time::Duration) -> Result<u64>;
    /// Whether the tracking key was recorded with [`MetadataStore::track`] and its time has not
    /// run out at `now` (seconds since the epoch). Sieve keeps here the vacation replies it sent
    /// and the `duplicate` ids it saw, so that every replica answers alike. Keys are short
    /// (the caller hashes them).
    async fn tracked(&self, key: &str, now: i64) -> Result<bool>;
    /// Records the tracking key until `until` (seconds since the epoch) unless a record of it
    /// is current at `now`, in one atomic step; answers whether it recorded. A vacation reply
    /// is sent only by the delivery that recorded it, so two replicas delivering to the same
    /// recipient from the same sender at once send one reply between them. Records are kept at
    /// most [`MAX_TRACKING_SECONDS`].
    async fn track(&self, key: &str, now: i64, until: i64) -> Result<bool>;
    /// Appends one message to several folders (a delivery to many recipients), each through
    /// [`log::append`]. Each op succeeds or fails on its own (unknown folder, over quota); a
    /// storage failure fails them all. When no op succeeds and nothing else refers to the body,
    /// the body is recorded as orphaned, so that garbage collection deletes it.
    async fn append(&self, message: NewMessage, ops: Vec<AppendOp>) -> Result<Vec<Result<Appended>>>;
    /// Appends several messages to one folder of one account, all or none (MULTIAPPEND), through
    /// [`log::append_all`]: one entry, so no reader ever sees some of them without the others.
    /// When they are refused, the bodies that nothing else refers to are recorded as orphaned.
    async fn append_all(
        &self,
        account_id: u64,
        folder: FolderRef,
        messages: Vec<(NewMessage, Vec<String>)>,
    ) -> Result<Vec<Appended>>;
    /// Stores what [`MetadataStore::append`] will need of `message` before it can write an
    /// entry, and may store while the body is being written (the distributed backend puts the
    /// parsed structure then, so the two round trips overlap). `append` works without it.
    async fn stage(&self, _message: &NewMessage) -> Result<()> {
        Ok(())
    }

    /// Committed changes of one account from now on, in commit order. When this returns, the
    /// subscription is in place: no change committed afterwards can be missed.
    async fn watch(&self, account_id: u64) -> Result<BoxStream<'static, MailboxEvent>>;

    /// The ids of accounts whose messages or folders changed, written through any process, for
    /// the full-text indexer; `None` when the backend cannot say.
    fn mail_changes(&self) -> Option<BoxStream<'static, u64>> {
        None
    }

    /// Leases and manifests for sharing full-text indexes between processes
    /// ([`crate::fts::shared`]); `None` when the index is local to this process.
    fn index_coordination(&self) -> Option<Arc<dyn crate::fts::shared::IndexCoordination>> {
        None
    }

    // The outbound queue.
    /// Records a message for the relay; `message.blob_id` must already be stored. Assigns
    /// `queue_id` and takes a reference on the body.
    // The outbound queue. Entries are claimed by relay workers with a lease; a store makes the
    // claim atomic, so no two workers ever hold one entry at once.
    /// Puts entries on the queue (one per remote domain of one submission, sharing a body, whose
    /// reference each holds), all or none. Their ids are assigned here.
    async fn enqueue(&self, entries: Vec<QueuedMessage>) -> Result<Vec<QueuedMessage>>;
    async fn list_queue(&self) -> Result<Vec<QueuedMessage>>;
    async fn queued(&self, queue_id: &str) -> Result<Option<QueuedMessage>>;
    /// Up to `max` entries due at `now` and not leased, now leased to `holder` until
    /// `now + lease_seconds`.
    async fn claim_queue(&self, holder: &str, now: i64, lease_seconds: i64, max: usize) -> Result<Vec<QueuedMessage>>;
    /// Ends `holder`'s claim: removes the entry (`retry` None) or puts it back updated
    /// (see [`queue::retry`]). `NotAllowed` when `holder` does not hold it any more.
    async fn finish_queued(&self, queue_id: &str, holder: &str, now: i64, retry: Option<QueuedMessage>) -> Result<()>;
    async fn delete_queued(&self, queue_id: &str) -> Result<()>;
    /// Makes an entry due at `now`; a lease it is under stays.
    async fn retry_queued(&self, queue_id: &str, now: i64) -> Result<QueuedMessage>;

    // Body garbage collection. A store either counts references to bodies (and then knows the
    // orphans itself), or gives every stored body an object of its own and tells which bodies
    // it refers to, for a mark-and-sweep over the blob store.
    /// Whether this store counts body references (and so dedupes bodies by content).
    fn counts_references(&self) -> bool {
        true
    }
    /// Every body a message or a queue entry refers to; only for stores that do not count
    /// references.
    async fn referenced_blobs(&self) -> Result<std::collections::HashSet<String>> {
        Ok(std::collections::HashSet::new())
    }
    /// Bodies no message refers to any more, orphaned before `before` (Unix seconds).
    async fn orphaned_blobs(&self, before: i64, limit: usize) -> Result<Vec<String>>;
    /// Forgets an orphaned body; false if a message refers to it again.
    async fn forget_blob(&self, blob_id: &str) -> Result<bool>;

    /// Writes a consistent copy of all metadata into the empty directory `dir`, while the
    /// store stays in use, and says what it wrote (see [`crate::backup`]).
    async fn backup(&self, dir: &std::path::Path) -> Result<String>;
}
