//! The metadata store: the directory (domains, accounts, aliases) and every folder's change log.
//!
//! [`MetadataStore`] is the one trait a backend implements. The embedded backend
//! ([`embedded::EmbeddedStore`], redb) is the default; the distributed one (NATS JetStream) is
//! a second implementation of the same trait. Bodies are not here: they live in the
//! [`crate::blobs::BlobStore`], and the store only counts references to them.
//!
//! Every write method is atomic: it commits entirely or not at all, and it returns only after
//! its commit is durable. Events for committed changes reach subscribers in commit order.

pub mod embedded;
pub mod nats;
pub mod queue;

use futures::stream::BoxStream;
use tern_proto::v1::{FlagsMode, FolderRef, MailboxEvent, MessageSummary, QueuedMessage, SpecialUse};

use crate::{
    error::Result,
    parse::Parsed,
    records::{AccountRecord, DomainRecord, FolderRecord, MessageRecord, ParsedRecord},
};

/// What an update of a domain changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct DomainUpdate {
    pub catch_all: Option<String>,
    pub default_quota: Option<u64>,
    /// The DKIM selector and private key (PEM).
    pub dkim: Option<(String, String)>,
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

/// The event for a change of `folder`.
pub fn event(
    folder: &FolderRecord,
    kind: tern_proto::v1::EventKind,
    modseq: u64,
    messages: Vec<MessageSummary>,
) -> MailboxEvent {
    MailboxEvent {
        account_id: folder.account_id,
        folder_id: folder.id,
        kind: kind as i32,
        modseq,
        messages,
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
}

/// One message appended to one folder of one account.
#[derive(Debug, Clone)]
pub struct AppendOp {
    pub account_id: u64,
    pub folder: FolderRef,
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

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountChanges {
    pub address: String,
    pub display_name: Option<String>,
    pub quota_bytes: Option<u64>,
    pub suspended: Option<bool>,
    pub pop3_delete: Option<tern_proto::v1::Pop3DeletePolicy>,
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
    async fn usage(&self, account_id: u64) -> Result<UsageCount>;

    // Folders.
    async fn list_folders(&self, account_id: u64) -> Result<FolderList>;
    async fn create_folder(&self, account_id: u64, name: &str, special_use: SpecialUse) -> Result<FolderRecord>;
    /// Deletes a folder with its messages; its subscription stays, by name (see [`FolderList`]).
    async fn delete_folder(&self, account_id: u64, name: &str) -> Result<()>;
    /// Renames a folder and its sub-folders; each keeps its subscription, and one whose new name
    /// was subscribed without a folder becomes subscribed.
    async fn rename_folder(&self, account_id: u64, from: &str, to: &str) -> Result<FolderRecord>;
    /// Subscribes to an existing folder (not found when there is none, as Dovecot answers), or
    /// unsubscribes from a name, whether a folder has it, it is only on the list of subscribed
    /// names without a folder, or it is not subscribed at all.
    async fn subscribe_folder(&self, account_id: u64, name: &str, subscribed: bool) -> Result<()>;
    async fn folder(&self, account_id: u64, folder: &FolderRef) -> Result<FolderRecord>;
    /// Claims the folder's messages below `up_to` as \Recent for one session: returns the
    /// lowest UID not claimed before, and how many messages from that UID on exist (before the
    /// claim). An `up_to` at or below that UID claims nothing and writes nothing.
    async fn claim_recent(&self, account_id: u64, folder_id: u64, up_to: u32) -> Result<(u32, u32)>;
    /// The folder and all its messages as of one MODSEQ.
    async fn select(&self, account_id: u64, folder: &FolderRef) -> Result<(FolderRecord, Vec<MessageSummary>)>;

    // Messages.
    /// How many messages refer to a body: zero means it may not be stored (yet, or any more).
    async fn blob_refs(&self, blob_id: &str) -> Result<u64>;
    /// Appends one message to several folders (a delivery to many recipients) in one commit.
    /// Each op succeeds or fails on its own (unknown folder, over quota); a storage failure
    /// fails them all. When no op succeeds and nothing else refers to the body, the body is
    /// recorded as orphaned, so that garbage collection deletes it.
    async fn append(&self, message: NewMessage, ops: Vec<AppendOp>) -> Result<Vec<Result<Appended>>>;
    async fn messages(
        &self,
        account_id: u64,
        folder_id: u64,
        uids: &[u32],
        with_structure: bool,
    ) -> Result<Vec<(MessageRecord, Option<ParsedRecord>)>>;
    async fn store_flags(
        &self,
        account_id: u64,
        folder_id: u64,
        uids: &[u32],
        mode: FlagsMode,
        flags: Vec<String>,
        unchanged_since: u64,
    ) -> Result<FlagsOutcome>;
    async fn copy(
        &self,
        account_id: u64,
        folder_id: u64,
        uids: &[u32],
        destination: &FolderRef,
        remove_source: bool,
    ) -> Result<CopyOutcome>;
    /// Expunges `uids` (all messages when None), only those flagged \Deleted if asked.
    async fn expunge(
        &self,
        account_id: u64,
        folder_id: u64,
        uids: Option<&[u32]>,
        only_deleted: bool,
    ) -> Result<(Vec<u32>, u64)>;
    async fn changes(&self, account_id: u64, folder_id: u64, since_modseq: u64) -> Result<Changes>;

    /// Committed changes of one account from now on, in commit order. When this returns, the
    /// subscription is in place: no change committed afterwards can be missed.
    async fn watch(&self, account_id: u64) -> Result<BoxStream<'static, MailboxEvent>>;

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
}
