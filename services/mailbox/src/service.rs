//! The mailbox service's logic, independent of gRPC and of the storage backend: resolving
//! recipients, delivering and appending (hash, store the body, parse once, record), login with
//! throttling, reading bodies, and collecting bodies nothing refers to any more; folders and
//! messages (the `folders` module); the directory the admin API changes (`directory`); and
//! the accounts' Sieve scripts (`sieve`).
//!
//! Every RPC is one call of [`MailboxService`], and this is where input is validated, once, for
//! every backend; the gRPC layer only translates, and the store is only called with:
//!
//! - addresses parsed and normalised ([`Address::parse`]: lower case, no brackets), domain
//!   names checked and lower-cased ([`crate::address::normalize_domain`]), catch-all targets
//!   checked as addresses, no `+` in a mailbox's own address, DKIM selectors of letters,
//!   digits, `-` and `.` only, and a DKIM private key given checked to parse;
//! - passwords present, hashed with argon2, or given hashes checked to parse
//!   ([`crate::password`]);
//! - folder names in canonical form ([`crate::folder_name::canonical`]: valid, `INBOX` upper
//!   case), also inside a [`FolderRef`] by name, and a `FolderRef` that names no folder refused;
//! - flags normalised ([`crate::flags::normalize`]: valid, canonical spelling, sorted, unique)
//!   for APPEND and STORE;
//! - sizes and recipient counts within [`Limits`], and queue leases within bounds;
//! - Sieve script names by RFC 5804 section 1.6, scripts by [`tern_sieve::check`], and their
//!   number and sizes within [`Limits`] (the `sieve` module).
//!
//! What depends on stored state (a folder exists, has no sub-folders, a quota has room) and the
//! rules of the folder tree (INBOX cannot be deleted or replaced) are the storage core's
//! ([`crate::store::log`]), checked inside the commit that relies on them; renaming INBOX,
//! which moves its messages to a new folder (RFC 9051 section 6.3.6), is orchestrated here.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use secrecy::SecretString;
use tern_proto::v1::{DeliveryStatus, FolderRef, QueuedMessage, RecipientStatus, ResolvedVia};
use tokio::sync::RwLock;

use crate::{
    address::Address,
    blobs::{BlobStore, blob_id},
    error::{MailboxError, Result},
    flags, parse, password,
    records::{AccountRecord, DomainRecord, MessageRecord},
    store::{AppendOp, Appended, MetadataStore, NewMessage},
};

mod directory;
mod filter;
mod folders;
mod learn;
mod search;
mod sieve;
mod urlauth;

pub use directory::{DkimKeyError, NewPassword};
pub use folders::{FetchedMessage, FolderStatus};
pub use sieve::{ActiveSieve, SieveScriptInfo, active_script};

/// The longest lease a relay worker may take on a queue entry, in seconds.
pub const MAX_QUEUE_LEASE: i64 = 3600;

/// One message of [`MailboxService::append_all`].
#[derive(Debug, Clone, Default)]
pub struct AppendItem {
    pub flags: Vec<String>,
    /// Seconds since the Unix epoch; zero for now.
    pub internal_date: i64,
    pub content: Bytes,
    /// The UID to keep (an import's source UID), honoured when not below UIDNEXT; zero for the
    /// next.
    pub uid: u32,
    /// Recorded even past the account's quota (an import told to ignore it).
    pub ignore_quota: bool,
}

/// The most messages one [`MailboxService::append_all`] takes. They are committed as one entry,
/// which must stay well under NATS's largest message (about 450 bytes of metadata each); the
/// IMAP front-end's own limit on a command's literals keeps real MULTIAPPENDs far below it.
pub const MAX_APPEND_MESSAGES: usize = 500;

/// Limits of the mailbox service, all configurable.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest message accepted by Deliver and Append, in bytes.
    pub max_message_bytes: u64,
    /// Most recipients of one Deliver call.
    pub max_recipients: usize,
    /// Failed logins allowed per client IP, and per account, within `auth_window`.
    pub max_auth_failures: u32,
    pub auth_window: Duration,
    /// How long an orphaned body is kept before it is deleted.
    pub blob_grace: Duration,
    /// Memory for recently read small bodies (immutable, so never stale); 0 turns it off.
    pub blob_cache_bytes: usize,
    /// Longest IMAP METADATA value, in octets (RFC 5464's MAXSIZE).
    pub max_metadata_value: u64,
    /// Most METADATA entries on one mailbox, and on the server of one account (TOOMANY).
    pub max_metadata_entries: usize,
    /// Queue a learning task for the spam filter when a message is moved into or out of a junk
    /// folder (on when rspamd's controller is configured, so that a learner exists).
    pub learn_spam: bool,
    /// Most learning tasks one COPY or MOVE queues; the rest of a larger one is not learned.
    pub max_learn_per_command: usize,
    /// Most Sieve scripts one account keeps (ManageSieve's QUOTA/MAXSCRIPTS).
    pub sieve_max_scripts: usize,
    /// Largest Sieve script, in bytes (QUOTA/MAXSIZE).
    pub sieve_max_script_bytes: u64,
    /// Most bytes of Sieve scripts one account keeps in all (QUOTA). The scripts live in the
    /// account's record, which every delivery and login reads and which the NATS backend keeps
    /// as one KV value (at most the server's max_payload, 1 MiB by default), so this is a
    /// bound of its own rather than the product of the two above.
    pub sieve_max_total_bytes: u64,
    /// What one run of a Sieve script at delivery may take: steps (commands, tests,
    /// comparisons, and one per KiB compared), actions, and redirects. A script that goes over
    /// fails, and the message is kept.
    pub sieve_max_steps: u64,
    pub sieve_max_actions: usize,
    pub sieve_max_redirects: usize,
    /// The bounds a script's vacation period is held to (RFC 5230 section 4.1 and RFC 6131
    /// leave the minimum to the site; a day is what Pigeonhole defaults to).
    pub sieve_vacation_min_period: Duration,
    pub sieve_vacation_max_period: Duration,
    /// The directory of the server's global Sieve scripts (`<name>.sieve`, for `include
    /// :global`, RFC 6609); none when unset.
    pub sieve_global_dir: Option<std::path::PathBuf>,
    /// The full-text index (`[search]`).
    pub search: crate::fts::Settings,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 50 * 1024 * 1024,
            max_recipients: 1000,
            max_auth_failures: 10,
            auth_window: Duration::from_secs(300),
            blob_grace: Duration::from_secs(3600),
            blob_cache_bytes: 8 * 1024 * 1024,
            max_metadata_value: 64 * 1024,
            max_metadata_entries: 100,
            learn_spam: false,
            max_learn_per_command: 500,
            sieve_max_scripts: 16,
            sieve_max_script_bytes: 64 * 1024,
            sieve_max_total_bytes: 256 * 1024,
            sieve_max_steps: 200_000,
            sieve_max_actions: 32,
            sieve_max_redirects: 4,
            sieve_vacation_min_period: Duration::from_secs(86_400),
            sieve_vacation_max_period: Duration::from_secs(90 * 86_400),
            sieve_global_dir: None,
            search: crate::fts::Settings::default(),
        }
    }
}

/// The outcome of resolving one address.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    pub status: RecipientStatus,
    pub account: Option<AccountRecord>,
    pub via: ResolvedVia,
    pub detail: String,
    /// The spam settings that hold for the account found (see [`crate::spam::effective`]).
    pub spam: tern_proto::v1::SpamSettings,
}

impl Resolution {
    fn none(status: RecipientStatus) -> Self {
        Self { status, account: None, via: ResolvedVia::Unspecified, detail: String::new(), spam: Default::default() }
    }
}

/// One recipient's outcome of a delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct RecipientOutcome {
    pub recipient: String,
    pub status: DeliveryStatus,
    pub account_id: u64,
    pub appended: Option<Appended>,
    /// Why the recipient's script rejected the message (status `Rejected`).
    pub reason: String,
}

/// A delivery's envelope.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    /// The reverse path, empty for the null sender.
    pub mail_from: String,
    pub recipients: Vec<String>,
    /// The recipients whose copy goes to their junk folder.
    pub junk: Vec<String>,
    /// The spam filter's verdict in percent, when the message was scanned.
    pub spam_percent: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub blob_id: String,
    pub size: u64,
    pub results: Vec<RecipientOutcome>,
}

#[derive(Debug, Default)]
struct Throttle {
    failures: HashMap<String, (u32, Instant)>,
}

impl Throttle {
    fn blocked(&mut self, key: &str, max: u32, window: Duration) -> bool {
        match self.failures.get(key) {
            Some((n, since)) if since.elapsed() < window => *n >= max,
            Some(_) => {
                self.failures.remove(key);
                false
            }
            None => false,
        }
    }

    fn fail(&mut self, key: String, window: Duration) {
        let entry = self.failures.entry(key).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= window {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
        // Keep the table bounded under a spray of addresses.
        if self.failures.len() > 100_000 {
            self.failures.retain(|_, (_, since)| since.elapsed() < window);
        }
    }
}

/// (account, lease name) -> (holder, expiry).
type Leases = HashMap<(u64, String), (String, Instant)>;

#[derive(Debug, Clone)]
pub struct MailboxService {
    pub store: Arc<dyn MetadataStore>,
    pub blobs: BlobStore,
    pub limits: Limits,
    /// Held shared by every write that adds a body reference from the moment its body is
    /// stored until its metadata commits, and exclusively by garbage collection; so GC never
    /// deletes a body that a delivery in flight is about to refer to.
    pub(crate) blob_gate: Arc<RwLock<()>>,
    throttle: Arc<Mutex<Throttle>>,
    /// Named exclusive leases on accounts: (account, name) -> (holder, expiry). The embedded
    /// backend runs in one process, so memory is the right place; a lease does not need to
    /// survive a restart, since every session holding one ends with the process.
    leases: Arc<Mutex<Leases>>,
    /// Held by every change of an account's Sieve scripts, from reading the record to writing
    /// it back, so that two changes in this process never build on the same old record and
    /// lose one of them. Changes are rare (a user saving a script), so one lock for all
    /// accounts costs nothing.
    sieve_writes: Arc<tokio::sync::Mutex<()>>,
    /// Compiled Sieve scripts by account and name, so that a delivery runs the active
    /// script without parsing and compiling it (and its patterns) again.
    sieve_programs: filter::Programs,
    pub passwords: password::Checker,
    /// The accounts' full-text indexes, when indexing is on.
    pub fulltext: Option<crate::fts::FullText>,
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl MailboxService {
    pub fn new(store: Arc<dyn MetadataStore>, blobs: BlobStore, limits: Limits) -> Self {
        filter::declare_metrics();
        Self {
            store,
            blobs,
            limits,
            blob_gate: Arc::new(RwLock::new(())),
            throttle: Arc::new(Mutex::new(Throttle::default())),
            leases: Arc::new(Mutex::new(HashMap::new())),
            sieve_writes: Arc::new(tokio::sync::Mutex::new(())),
            sieve_programs: filter::Programs::default(),
            // One hashing thread: its working memory is ~19 MiB, and with the cache of
            // successful checks a busy server still runs few argon2 checks per second.
            passwords: password::Checker::new(1, Duration::from_secs(300)),
            fulltext: None,
        }
    }

    /// Keeps full-text indexes of the accounts under `root` (or `[search] dir`, which wins),
    /// when `[search]` enables them. The indexer starts following the store's changes at once.
    /// `ephemeral` when `root` is a temporary cache to remove when the service is dropped.
    pub fn with_fulltext(mut self, root: std::path::PathBuf, ephemeral: bool) -> Self {
        let settings = self.limits.search.clone();
        if settings.enabled {
            let (root, ephemeral) = match &settings.dir {
                Some(dir) => (dir.clone(), false),
                None => (root, ephemeral),
            };
            let fts = crate::fts::FullText::new(settings, root, ephemeral, Arc::clone(&self.store), self.blobs.clone());
            fts.start();
            self.fulltext = Some(fts);
        }
        self
    }

    /// Takes (or renews) an exclusive lease; false when someone else holds it.
    pub fn acquire_lease(&self, account_id: u64, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        if holder.is_empty() || name.is_empty() {
            return Err(MailboxError::invalid("lease", "name and holder are required"));
        }
        let ttl = ttl.clamp(Duration::from_secs(1), Duration::from_secs(3600));
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let key = (account_id, name.to_string());
        match leases.get(&key) {
            Some((h, until)) if *until > now && h != holder => Ok(false),
            _ => {
                leases.insert(key, (holder.to_string(), now + ttl));
                Ok(true)
            }
        }
    }

    /// Counts `cost` uses of the rate `key` in the current fixed window of `window_secs` (1 s
    /// to a day, windows aligned on the epoch) and says whether the window's total is within
    /// `limit`, with the total and the seconds until the window ends. The counters live in the
    /// store, so every front-end and every replica counts into the same ones.
    pub async fn rate_limit(&self, key: &str, limit: u64, window_secs: u32, cost: u64) -> Result<(bool, u64, u32)> {
        if key.is_empty() || key.len() > 256 {
            return Err(MailboxError::invalid("rate key", "empty or longer than 256 bytes"));
        }
        let window = i64::from(window_secs.clamp(1, 86_400));
        let now = now();
        let index = now.div_euclid(window);
        let ttl = Duration::from_secs(2 * window as u64);
        let count = self.store.count_rate(&format!("{key}|{window}|{index}"), cost.max(1), ttl).await?;
        let retry_after = ((index + 1) * window - now).clamp(0, i64::from(u32::MAX)) as u32;
        Ok((count <= limit, count, retry_after))
    }

    /// Gives a lease back, if `holder` holds it.
    pub fn release_lease(&self, account_id: u64, name: &str, holder: &str) {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        let key = (account_id, name.to_string());
        if leases.get(&key).is_some_and(|(h, _)| h == holder) {
            leases.remove(&key);
        }
        let now = Instant::now();
        leases.retain(|_, (_, until)| *until > now);
    }

    /// Checks a login. Failures are throttled per client IP and per account: past the limit
    /// the answer is a failure without even checking the password.
    pub async fn authenticate(
        &self,
        username: &str,
        password: &SecretString,
        remote_ip: Option<IpAddr>,
    ) -> Result<AccountRecord> {
        let ip_key = remote_ip.map(|ip| format!("ip:{ip}"));
        let user_key = format!("user:{}", username.trim().to_lowercase());
        {
            let mut t = self.throttle.lock().unwrap_or_else(|e| e.into_inner());
            let (max, window) = (self.limits.max_auth_failures, self.limits.auth_window);
            if ip_key.as_deref().is_some_and(|k| t.blocked(k, max, window)) || t.blocked(&user_key, max, window) {
                tracing::warn!(user = %username, ip = ?remote_ip, "login throttled");
                return Err(MailboxError::Throttled);
            }
        }
        let account = match Address::parse(username) {
            Ok(addr) => self.lookup_login(&addr.to_string()).await?,
            Err(_) => None,
        };
        // Verify against a fixed hash when the account is unknown, so that timing does not
        // tell which addresses exist.
        let ok = match &account {
            Some(a) => self.passwords.verify(password, &a.password_hash).await,
            None => {
                let _ = self.passwords.verify(password, DUMMY_HASH).await;
                false
            }
        };
        match account {
            Some(a) if ok => {
                if a.suspended {
                    return Err(MailboxError::Suspended { address: a.address });
                }
                Ok(a)
            }
            _ => {
                let mut t = self.throttle.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(k) = ip_key {
                    t.fail(k, self.limits.auth_window);
                }
                t.fail(user_key, self.limits.auth_window);
                Err(MailboxError::AuthFailed)
            }
        }
    }

    /// An account by its address or one of its aliases.
    async fn lookup_login(&self, address: &str) -> Result<Option<AccountRecord>> {
        if let Some(a) = self.store.account_by_address(address).await? {
            return Ok(Some(a));
        }
        match self.store.alias(address).await? {
            Some(id) => self.store.account(id).await,
            None => Ok(None),
        }
    }

    /// Resolves an address: mailbox, then alias, then the same without a `+detail`, then the
    /// domain's catch-all.
    pub async fn resolve(&self, input: &str) -> Result<Resolution> {
        let addr = Address::parse(input)?;
        let Some(domain) = self.store.domain(&addr.domain).await? else {
            return Ok(Resolution::none(RecipientStatus::NotLocal));
        };
        let detail = addr.split_detail().1.unwrap_or_default().to_string();
        let candidates = std::iter::once(addr.clone()).chain(addr.without_detail());
        for (i, candidate) in candidates.enumerate() {
            let key = candidate.to_string();
            let (account, via) = match self.store.account_by_address(&key).await? {
                Some(a) => (Some(a), ResolvedVia::Mailbox),
                None => match self.store.alias(&key).await? {
                    Some(id) => (self.store.account(id).await?, ResolvedVia::Alias),
                    None => (None, ResolvedVia::Unspecified),
                },
            };
            if let Some(a) = account {
                let detail = if i == 0 { String::new() } else { detail.clone() };
                return self.found(a, via, detail, &domain).await;
            }
        }
        if !domain.catch_all.is_empty() {
            let target = if domain.catch_all.contains('@') {
                domain.catch_all.clone()
            } else {
                format!("{}@{}", domain.catch_all, domain.name)
            };
            if let Some(a) = self.lookup_login(&target.to_lowercase()).await? {
                return self.found(a, ResolvedVia::CatchAll, String::new(), &domain).await;
            }
        }
        Ok(Resolution::none(RecipientStatus::UnknownUser))
    }

    /// Resolves an address (see [`MailboxService::resolve`]) and tells how many bytes the
    /// account found holds, so that SMTP can refuse a message over quota at RCPT.
    pub async fn resolve_recipient(&self, input: &str) -> Result<(Resolution, u64)> {
        let r = self.resolve(input).await?;
        let used_bytes = match &r.account {
            Some(a) => self.store.usage(a.id).await?.bytes,
            None => 0,
        };
        Ok((r, used_bytes))
    }

    /// The resolution to `account`, with the spam settings of the account's own domain (which
    /// an alias or a catch-all in another domain, `asked`, may not be).
    async fn found(
        &self,
        account: AccountRecord,
        via: ResolvedVia,
        detail: String,
        asked: &DomainRecord,
    ) -> Result<Resolution> {
        let status = if account.suspended { RecipientStatus::Suspended } else { RecipientStatus::Local };
        let own = account.address.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        let domain = if own == asked.name { Some(asked.clone()) } else { self.store.domain(own).await? };
        let empty = Default::default();
        let spam = crate::spam::effective(
            domain.as_ref().and_then(|d| d.spam.as_ref()),
            account.spam.as_ref().unwrap_or(&empty),
        );
        Ok(Resolution { status, account: Some(account), via, detail, spam })
    }

    fn check_size(&self, size: u64) -> Result<()> {
        if size > self.limits.max_message_bytes {
            return Err(MailboxError::TooLarge { size, limit: self.limits.max_message_bytes });
        }
        Ok(())
    }

    /// The name of a body about to be stored: its content hash when the store counts
    /// references (one object per content), the hash and a random suffix otherwise (one object
    /// per delivery; see [`MailboxService::collect_garbage`]).
    fn new_blob_id(&self, content: &[u8]) -> String {
        let hash = blob_id(content);
        if self.store.counts_references() {
            return hash;
        }
        use password_hash::rand_core::{OsRng, RngCore};
        format!("{hash}-{:016x}", OsRng.next_u64())
    }

    /// Stores a body unless a stored message already refers to it (one object per content).
    /// The returned guard must be held until the metadata that refers to the body commits, so
    /// that garbage collection cannot delete it in between.
    async fn put_body(&self, id: &str, content: Bytes) -> Result<tokio::sync::RwLockReadGuard<'_, ()>> {
        let gate = self.blob_gate.read().await;
        if self.store.blob_refs(id).await? == 0 {
            self.blobs.put(id, content).await?;
        }
        Ok(gate)
    }

    /// Stores a body (once per content) and records it with `ops`, holding the blob gate so
    /// garbage collection cannot remove the body between the two steps.
    async fn store_and_record(
        &self,
        content: Bytes,
        internal_date: i64,
        ops: Vec<AppendOp>,
    ) -> Result<(String, Vec<Result<Appended>>)> {
        let id = self.new_blob_id(&content);
        let size = content.len() as u64;
        let parsed = parse::parse(&content);
        let message = NewMessage { blob_id: id.clone(), size, internal_date, parsed, uid: 0, quota_exempt: false };
        // The body and what the store needs before its entry go out side by side; the entry
        // that refers to the body is written only once both are stored.
        let (gate, staged) = tokio::join!(self.put_body(&id, content), self.store.stage(&message));
        let _gate = gate?;
        staged?;
        let results = self.store.append(message, ops).await?;
        let stored = results.iter().filter(|r| r.is_ok()).count() as u64;
        tern_runtime::metrics::Metrics::global().messages_stored.inc_by(stored);
        Ok((id, results))
    }

    /// Delivers one message to local recipients from the null sender and unscanned (reports,
    /// tests): [`MailboxService::deliver_envelope`] with an envelope of just the recipients.
    pub async fn deliver(&self, recipients: &[String], junk: &[String], content: Bytes) -> Result<Delivery> {
        let envelope = Envelope { recipients: recipients.to_vec(), junk: junk.to_vec(), ..Envelope::default() };
        self.deliver_envelope(&envelope, content).await
    }

    /// Delivers one message to local recipients: each is resolved again (aliases, catch-alls,
    /// suspension), an account gets one copy however many of its addresses are named, and the
    /// copy goes where the account's active Sieve script says (INBOX, or the junk folder for the
    /// recipients in `junk`, without one). The body is stored once for every recipient the
    /// script leaves it unchanged for. Redirects are queued before anything is stored, so that
    /// if queueing fails the sender retries and nothing is lost; vacation replies and tracking
    /// records follow the stores, and their failures are logged, not fatal.
    pub async fn deliver_envelope(&self, envelope: &Envelope, content: Bytes) -> Result<Delivery> {
        let recipients = &envelope.recipients;
        if recipients.is_empty() {
            return Err(MailboxError::invalid("recipients", "none given"));
        }
        if recipients.len() > self.limits.max_recipients {
            return Err(MailboxError::invalid("recipients", format!("more than {}", self.limits.max_recipients)));
        }
        self.check_size(content.len() as u64)?;
        let mut results = Vec::with_capacity(recipients.len());
        // Appends of the message as it arrived, and of messages a script edited, each with the
        // result they report to.
        let mut ops = Vec::new();
        let mut op_index = Vec::new();
        let mut edited: Vec<(Bytes, Vec<AppendOp>, usize)> = Vec::new();
        let mut after: Vec<(AccountRecord, String, filter::Decision)> = Vec::new();
        // The first recipient of each account, and the later ones that point at it.
        let mut seen_accounts: HashMap<u64, usize> = HashMap::new();
        let mut duplicates: Vec<(usize, usize)> = Vec::new();
        for rcpt in recipients {
            let r = match self.resolve(rcpt).await {
                Ok(r) => r,
                Err(MailboxError::Invalid { .. }) => Resolution::none(RecipientStatus::UnknownUser),
                Err(e) => return Err(e),
            };
            let (status, account_id) = match (&r.status, &r.account) {
                (RecipientStatus::Local, Some(a)) => (DeliveryStatus::Delivered, a.id),
                (RecipientStatus::Suspended, Some(a)) => (DeliveryStatus::Suspended, a.id),
                _ => (DeliveryStatus::UnknownUser, 0),
            };
            let index = results.len();
            results.push(RecipientOutcome {
                recipient: rcpt.clone(),
                status,
                account_id,
                appended: None,
                reason: String::new(),
            });
            // Two addresses of one account (an alias and the mailbox) get one copy, as with
            // every MTA; the later recipient reports the first one's result.
            if status != DeliveryStatus::Delivered {
                continue;
            }
            if let Some(&first) = seen_accounts.get(&account_id) {
                duplicates.push((index, first));
                continue;
            }
            seen_accounts.insert(account_id, index);
            let folder = if envelope.junk.iter().any(|j| j.eq_ignore_ascii_case(rcpt)) {
                self.junk_folder(account_id, &r.spam.junk_folder).await?
            } else {
                "INBOX".to_string()
            };
            let account = r.account.clone().expect("a local recipient has an account");
            let Some(script) = sieve::active_script(&account) else {
                op_index.push(index);
                ops.push(AppendOp { account_id, folder: FolderRef::name(folder), flags: vec![] });
                continue;
            };
            let decision = self.run_sieve(&account, &script, rcpt, envelope, &folder, &content).await?;
            if let Some(reason) = &decision.rejected {
                results[index].status = DeliveryStatus::Rejected;
                results[index].reason = reason.clone();
            }
            let appends: Vec<AppendOp> = decision
                .stores
                .iter()
                .map(|(f, flags)| AppendOp { account_id, folder: FolderRef::name(f.clone()), flags: flags.clone() })
                .collect();
            match &decision.message {
                Some(message) if !appends.is_empty() => edited.push((message.clone(), appends, index)),
                _ => {
                    op_index.extend(std::iter::repeat_n(index, appends.len()));
                    ops.extend(appends);
                }
            }
            after.push((account, rcpt.clone(), decision));
        }
        // Redirects first: a failure here fails the delivery before anything is stored.
        for (account, _, decision) in &after {
            for to in &decision.redirects {
                let message = decision.message.clone().unwrap_or_else(|| content.clone());
                self.redirect(account, &envelope.mail_from, to, message).await?;
            }
        }
        let size = content.len() as u64;
        let mut blob = blob_id(&content);
        let mut outcomes: Vec<(usize, Result<Appended>)> = Vec::new();
        if !ops.is_empty() {
            let (id, appended) = self.store_and_record(content.clone(), now(), ops).await?;
            blob = id;
            outcomes.extend(op_index.into_iter().zip(appended));
        }
        for (message, appends, index) in edited {
            let n = appends.len();
            let (_, appended) = self.store_and_record(message, now(), appends).await?;
            outcomes.extend(std::iter::repeat_n(index, n).zip(appended));
        }
        for (index, outcome) in outcomes {
            let r = &mut results[index];
            // A recipient with several stores is delivered if any of them is.
            match outcome {
                Ok(a) => {
                    if r.appended.is_none() {
                        r.appended = Some(a);
                        r.status = DeliveryStatus::Delivered;
                    }
                }
                Err(MailboxError::OverQuota { .. }) if r.appended.is_none() => r.status = DeliveryStatus::OverQuota,
                Err(MailboxError::NotFound { .. }) if r.appended.is_none() => r.status = DeliveryStatus::UnknownUser,
                Err(MailboxError::OverQuota { .. } | MailboxError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        for (account, rcpt, decision) in after {
            self.after_sieve(&account, &rcpt, &content, decision).await;
        }
        // Duplicates of an account report the first recipient's result.
        for (duplicate, first) in duplicates {
            let (status, appended, reason) =
                (results[first].status, results[first].appended.clone(), results[first].reason.clone());
            let r = &mut results[duplicate];
            r.status = status;
            r.appended = appended;
            r.reason = reason;
        }
        Ok(Delivery { blob_id: blob, size, results })
    }

    /// The folder an account's spam goes to: `name`, created (as `\\Junk` when the account
    /// has no such folder yet) if it does not exist. Another session creating it at the same
    /// moment is no failure; the folder is there either way.
    async fn junk_folder(&self, account_id: u64, name: &str) -> Result<String> {
        let name = if name.is_empty() { crate::spam::DEFAULT_JUNK_FOLDER } else { name };
        match self.store.folder(account_id, &FolderRef::name(name)).await {
            Ok(f) => return Ok(f.name),
            Err(MailboxError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let folders = self.store.list_folders(account_id).await?;
        let special = if folders.folders.iter().any(|f| f.special_use() == crate::records::SpecialUse::Junk) {
            tern_proto::v1::SpecialUse::None
        } else {
            tern_proto::v1::SpecialUse::Junk
        };
        match self.store.create_folder(account_id, name, special).await {
            Ok(f) => {
                tracing::info!(account_id, folder = %f.name, "created the junk folder");
                Ok(f.name)
            }
            Err(MailboxError::AlreadyExists { .. }) => Ok(name.to_string()),
            Err(e) => Err(e),
        }
    }

    /// Puts a submitted message on the outbound queue: the body is stored once, and there is
    /// one entry per remote domain, each referring to the body until the relay is done with it,
    /// so that a slow domain never holds up the others. Answers the entries, all or none queued.
    pub async fn enqueue(&self, entry: QueuedMessage, content: Bytes) -> Result<Vec<QueuedMessage>> {
        self.check_size(content.len() as u64)?;
        if entry.recipients.is_empty() {
            return Err(MailboxError::invalid("recipients", "none given"));
        }
        if entry.recipients.len() > self.limits.max_recipients {
            return Err(MailboxError::invalid("recipients", format!("more than {}", self.limits.max_recipients)));
        }
        let mut by_domain: Vec<(String, Vec<tern_proto::v1::QueuedRecipient>)> = Vec::new();
        for r in entry.recipients.iter().cloned() {
            let domain = match r.address.rsplit_once('@') {
                Some((local, domain)) if !local.is_empty() && !domain.is_empty() => domain.to_ascii_lowercase(),
                _ => return Err(MailboxError::invalid("recipient", format!("{} has no domain", r.address))),
            };
            match by_domain.iter_mut().find(|(d, _)| *d == domain) {
                Some((_, list)) => list.push(r),
                None => by_domain.push((domain, vec![r])),
            }
        }
        let id = self.new_blob_id(&content);
        let size = content.len() as u64;
        let queued_at = now();
        let entries = by_domain
            .into_iter()
            .map(|(domain, recipients)| QueuedMessage {
                domain,
                recipients,
                blob_id: id.clone(),
                size,
                queued_at,
                next_attempt_at: queued_at,
                // The envelope (sender, account, DSN parameters); attempts and leases start empty.
                ..QueuedMessage {
                    mail_from: entry.mail_from.clone(),
                    account_id: entry.account_id,
                    ret: entry.ret.clone(),
                    envid: entry.envid.clone(),
                    ..Default::default()
                }
            })
            .collect();
        let _gate = self.put_body(&id, content).await?;
        self.store.enqueue(entries).await
    }

    /// Claims due queue entries for a relay worker (see [`MetadataStore::claim_queue`]).
    pub async fn claim_queue(&self, holder: &str, max: usize, lease_seconds: i64) -> Result<Vec<QueuedMessage>> {
        if holder.is_empty() {
            return Err(MailboxError::invalid("holder", "empty"));
        }
        self.store.claim_queue(holder, now(), lease_seconds.clamp(1, MAX_QUEUE_LEASE), max.clamp(1, 1000)).await
    }

    /// Ends a relay worker's claim on a queue entry.
    pub async fn finish_queued(&self, queue_id: &str, holder: &str, retry: Option<QueuedMessage>) -> Result<()> {
        self.store.finish_queued(queue_id, holder, now(), retry).await
    }

    /// The body of a queue entry.
    pub async fn queued_body(&self, queue_id: &str) -> Result<Bytes> {
        let entry = self.queued(queue_id).await?;
        self.blobs.get(&entry.blob_id).await
    }

    /// Appends a message to one folder (IMAP APPEND). The flags and the folder's name are
    /// checked before the body is stored, so a refused APPEND leaves no object behind.
    pub async fn append(
        &self,
        account_id: u64,
        folder: FolderRef,
        flags: Vec<String>,
        internal_date: i64,
        content: Bytes,
    ) -> Result<Appended> {
        self.check_size(content.len() as u64)?;
        let flags = flags::normalize(&flags)?;
        let folder = folders::canonical_ref(folder)?;
        let date = if internal_date == 0 { now() } else { internal_date };
        let (_, mut results) =
            self.store_and_record(content, date, vec![AppendOp { account_id, folder, flags }]).await?;
        results.pop().unwrap_or_else(|| Err(MailboxError::Commit("append produced no result".into())))
    }

    /// Appends several messages to one folder, all or none (IMAP MULTIAPPEND, RFC 3502, and
    /// `tern admin import`), and they get ascending UIDs in that order. Every message is checked
    /// before any body is stored; the bodies are stored under one hold of the blob gate and
    /// recorded in one commit.
    pub async fn append_all(
        &self,
        account_id: u64,
        folder: FolderRef,
        messages: Vec<AppendItem>,
    ) -> Result<Vec<Appended>> {
        if messages.is_empty() {
            return Err(MailboxError::invalid("messages", "none given"));
        }
        if messages.len() > MAX_APPEND_MESSAGES {
            return Err(MailboxError::invalid("messages", format!("more than {MAX_APPEND_MESSAGES} in one append")));
        }
        let folder = folders::canonical_ref(folder)?;
        let mut checked = Vec::with_capacity(messages.len());
        for item in messages {
            self.check_size(item.content.len() as u64)?;
            let date = if item.internal_date == 0 { now() } else { item.internal_date };
            checked.push((flags::normalize(&item.flags)?, date, item.content, item.uid, item.ignore_quota));
        }
        let _gate = self.blob_gate.read().await;
        // The bodies go to the blob store a few at a time (on S3 each put is a round trip),
        // and come back in order.
        let staged: Vec<(NewMessage, Vec<String>)> = {
            use futures::{StreamExt, TryStreamExt};
            futures::stream::iter(checked.into_iter().map(
                |(flags, internal_date, content, uid, quota_exempt)| async move {
                    let blob_id = self.new_blob_id(&content);
                    let size = content.len() as u64;
                    let parsed = parse::parse(&content);
                    let message =
                        NewMessage { blob_id: blob_id.clone(), size, internal_date, parsed, uid, quota_exempt };
                    if self.store.blob_refs(&blob_id).await? == 0 {
                        let (put, stage) = tokio::join!(self.blobs.put(&blob_id, content), self.store.stage(&message));
                        put?;
                        stage?;
                    } else {
                        self.store.stage(&message).await?;
                    }
                    Ok::<_, MailboxError>((message, flags))
                },
            ))
            .buffered(8)
            .try_collect()
            .await?
        };
        let appended = self.store.append_all(account_id, folder, staged).await?;
        tern_runtime::metrics::Metrics::global().messages_stored.inc_by(appended.len() as u64);
        Ok(appended)
    }

    /// Reads a message body, or `length` bytes of it from `offset` (zero length: to the end).
    pub async fn body(&self, m: &MessageRecord, offset: u64, length: u64) -> Result<Bytes> {
        let end = if length == 0 { m.size } else { offset.saturating_add(length).min(m.size) };
        if offset == 0 && end == m.size {
            self.blobs.get(&m.blob_id).await
        } else {
            self.blobs.get_range(&m.blob_id, offset.min(m.size), end).await
        }
    }

    /// Deletes bodies that no message has referred to for the grace period. Returns how many.
    ///
    /// With a store that does not count references, this is a mark-and-sweep: the bodies
    /// referred to are collected first, then every object older than the grace period that is
    /// not among them is deleted. Such stores name each stored body uniquely, so an object
    /// older than the grace period that nothing refers to belongs to no delivery in flight
    /// (deliveries take seconds) and can never be referred to again. Several replicas may
    /// collect at once: deletes are idempotent.
    pub async fn collect_garbage(&self) -> Result<usize> {
        let before = now() - self.limits.blob_grace.as_secs() as i64;
        if !self.store.counts_references() {
            // Marked under the gate: a delivery of this replica that wrote its body before
            // `before` has committed by then, so its body is marked. One that writes after the
            // gate is let go has a newer object, which this sweep does not list. (Deliveries
            // of other replicas are covered by the grace period, as the doc above says.)
            let referenced = {
                let _gate = self.blob_gate.write().await;
                self.store.referenced_blobs().await?
            };
            let mut deleted = 0;
            for id in self.blobs.list_older_than(before).await? {
                if !referenced.contains(&id) {
                    self.blobs.delete(&id).await?;
                    self.store.forget_blob(&id).await?;
                    deleted += 1;
                }
            }
            return Ok(deleted);
        }
        let candidates = self.store.orphaned_blobs(before, 1000).await?;
        if candidates.is_empty() {
            return Ok(0);
        }
        let _gate = self.blob_gate.write().await;
        let mut deleted = 0;
        for id in candidates {
            // Delete the object before forgetting it: if the delete fails, the body stays an
            // orphan and the next run tries again, instead of leaking an object nobody tracks.
            if self.store.blob_refs(&id).await? == 0 {
                self.blobs.delete(&id).await?;
                if self.store.forget_blob(&id).await? {
                    deleted += 1;
                }
            }
        }
        Ok(deleted)
    }
}

/// An argon2id hash of a random password, verified against when the account does not exist.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3hG2GgOqO0ChhV2Ko3GBYnFRvO6YNzFsk+2V9AbOh2E";

#[cfg(test)]
mod tests {
    //! The validation rules of the module documentation, each checked through the service
    //! against the embedded store in a temporary directory.

    use tern_proto::v1::{FlagsMode, FolderRef, SpecialUse};

    use super::*;

    /// A service on a fresh embedded store, with the domain `example.com` and the mailbox
    /// `alice@example.com`. The directory must outlive the service.
    async fn service() -> (tempfile::TempDir, MailboxService, AccountRecord) {
        let dir = tempfile::tempdir().unwrap();
        let service = crate::server::open_embedded(dir.path(), Limits::default()).unwrap();
        service.create_domain("Example.COM", "", 0).await.unwrap();
        let hash = NewPassword::Hash(DUMMY_HASH.to_string());
        let alice = service.create_account("<Alice@Example.com>", String::new(), Some(hash), 0).await.unwrap();
        (dir, service, alice)
    }

    fn is_invalid<T: std::fmt::Debug>(result: Result<T>, field: &str) -> bool {
        matches!(result, Err(MailboxError::Invalid { what, .. }) if what == field)
    }

    fn is_not_allowed<T: std::fmt::Debug>(result: Result<T>) -> bool {
        matches!(result, Err(MailboxError::NotAllowed(_)))
    }

    async fn append(service: &MailboxService, account: u64, folder: &str, flags: &[&str]) -> Result<Appended> {
        let flags = flags.iter().map(|f| f.to_string()).collect();
        service.append(account, FolderRef::name(folder), flags, 0, Bytes::from_static(b"Subject: x\r\n\r\nx\r\n")).await
    }

    #[tokio::test]
    async fn addresses_are_normalised_and_bad_ones_refused() {
        let (_dir, service, alice) = service().await;
        assert_eq!(alice.address, "alice@example.com");
        assert_eq!(service.account_by_address(" ALICE@example.com ").await.unwrap().id, alice.id);
        assert_eq!(service.domain("EXAMPLE.com.").await.unwrap().1, 1);

        let hash = || Some(NewPassword::Hash(DUMMY_HASH.to_string()));
        for bad in ["not an address", "a@b@example.com", "@example.com", "a b@example.com", "a..b@example.com"] {
            assert!(is_invalid(service.create_account(bad, String::new(), hash(), 0).await, "address"), "{bad:?}");
            assert!(is_invalid(service.add_alias(bad, "alice@example.com").await, "address"), "{bad:?}");
            assert!(is_invalid(service.add_alias("postmaster@example.com", bad).await, "address"), "{bad:?}");
            assert!(is_invalid(service.set_password(bad, hash()).await, "address"), "{bad:?}");
            assert!(is_invalid(service.delete_account(bad).await, "address"), "{bad:?}");
        }
        let sub_address = service.create_account("bob+lists@example.com", String::new(), hash(), 0).await;
        assert!(is_invalid(sub_address, "address"));
        assert!(is_invalid(service.create_domain("bad_domain.com", "", 0).await, "domain"));
        assert!(is_invalid(service.list_accounts("-bad.com").await, "domain"));
        assert!(is_invalid(service.create_domain("example.org", "a b", 0).await, "address"));
        assert!(is_invalid(
            service.set_dkim_key("example.com", "no/slash", "").await.map_err(|e| match e {
                DkimKeyError::Mailbox(e) => e,
                DkimKeyError::Generate(e) => panic!("{e}"),
            }),
            "selector"
        ));
        assert!(is_invalid(service.create_account("bob@example.com", String::new(), None, 0).await, "password"));

        // An alias given in any case resolves to the mailbox.
        service.add_alias("Postmaster@EXAMPLE.com", "ALICE@example.com").await.unwrap();
        assert_eq!(
            service.list_aliases("example.com").await.unwrap(),
            [("postmaster@example.com".to_string(), "alice@example.com".to_string())]
        );
    }

    #[tokio::test]
    async fn inbox_cannot_be_deleted_or_renamed_to() {
        let (_dir, service, alice) = service().await;
        for inbox in ["INBOX", "inbox", "InBoX"] {
            assert!(is_not_allowed(service.delete_folder(alice.id, inbox).await), "{inbox}");
            assert!(is_not_allowed(service.rename_folder(alice.id, "Archive", inbox).await), "{inbox}");
            assert!(is_not_allowed(service.rename_folder(alice.id, "INBOX", inbox).await), "{inbox}");
        }
        let folders = service.list_folders(alice.id).await.unwrap().folders;
        assert!(folders.iter().any(|f| f.name == "INBOX") && folders.iter().any(|f| f.name == "Archive"));
    }

    #[tokio::test]
    async fn renaming_inbox_moves_its_messages() {
        let (_dir, service, alice) = service().await;
        append(&service, alice.id, "INBOX", &[]).await.unwrap();
        let old = service.rename_folder(alice.id, "inbox", "Old").await.unwrap();
        assert_eq!((old.name.as_str(), old.messages), ("Old", 1));
        let (inbox, messages) = service.select(alice.id, FolderRef::name("Inbox")).await.unwrap();
        assert_eq!((inbox.name.as_str(), messages.len()), ("INBOX", 0));
    }

    #[tokio::test]
    async fn folder_names_are_canonicalised_and_bad_ones_refused() {
        let (_dir, service, alice) = service().await;
        for bad in ["", "a//b", "/a", "a/", "x*", "%", "a\r\nb"] {
            assert!(is_invalid(service.create_folder(alice.id, bad, SpecialUse::None).await, "folder name"), "{bad:?}");
            assert!(is_invalid(service.delete_folder(alice.id, bad).await, "folder name"), "{bad:?}");
            assert!(is_invalid(service.rename_folder(alice.id, "Archive", bad).await, "folder name"), "{bad:?}");
            assert!(is_invalid(service.subscribe_folder(alice.id, bad, true).await, "folder name"), "{bad:?}");
            assert!(is_invalid(service.select(alice.id, FolderRef::name(bad)).await, "folder name"), "{bad:?}");
            assert!(is_invalid(append(&service, alice.id, bad, &[]).await, "folder name"), "{bad:?}");
        }
        assert!(is_invalid(service.select(alice.id, FolderRef::default()).await, "folder"));
        assert!(is_invalid(service.status(alice.id, FolderRef::default()).await, "folder"));

        // "inbox/Lists" is created as "INBOX/Lists", and found by either spelling.
        let lists = service.create_folder(alice.id, "inbox/Lists", SpecialUse::None).await.unwrap();
        assert_eq!(lists.name, "INBOX/Lists");
        assert_eq!(service.status(alice.id, FolderRef::name("Inbox/Lists")).await.unwrap().folder.id, lists.id);
        let inbox = service.select(alice.id, FolderRef::name("INBOX")).await.unwrap().0;
        let appended = append(&service, alice.id, "inbox", &[]).await.unwrap();
        assert_eq!(appended.folder_id, inbox.id);
        let moved = service.move_messages(alice.id, inbox.id, &[appended.uid], FolderRef::name("inbox/lists")).await;
        assert!(matches!(moved, Err(MailboxError::NotFound { .. })), "INBOX/lists is not INBOX/Lists: {moved:?}");
        let moved = service.move_messages(alice.id, inbox.id, &[appended.uid], FolderRef::name("inbox/Lists")).await;
        assert_eq!(moved.unwrap().destination_folder_id, lists.id);
    }

    #[tokio::test]
    async fn flags_are_normalised_and_bad_ones_refused() {
        let (_dir, service, alice) = service().await;
        for bad in ["\\Recent", "\\Foo", "a b", "", "x*", "(x"] {
            assert!(is_invalid(append(&service, alice.id, "INBOX", &[bad]).await, "flag"), "{bad:?}");
        }
        // A refused APPEND stored nothing.
        let (inbox, messages) = service.select(alice.id, FolderRef::name("INBOX")).await.unwrap();
        assert!(messages.is_empty());

        let a = append(&service, alice.id, "INBOX", &["\\seen", "$Label1", "\\SEEN"]).await.unwrap();
        let stored = service.message(alice.id, inbox.id, a.uid).await.unwrap();
        assert_eq!(stored.flags, ["$Label1", "\\Seen"]);

        let uids = [a.uid];
        let store = |mode, flags: &[&str]| {
            let flags = flags.iter().map(|f| f.to_string()).collect();
            service.store_flags(alice.id, inbox.id, &uids, mode, flags, 0)
        };
        assert!(is_invalid(store(FlagsMode::Add, &["\\Recent"]).await, "flag"));
        assert!(is_invalid(store(FlagsMode::Replace, &["bad flag"]).await, "flag"));
        assert!(is_invalid(store(FlagsMode::Unspecified, &["\\Seen"]).await, "flags mode"));
        let too_many: Vec<String> = (0..65).map(|i| format!("k{i}")).collect();
        let refs: Vec<&str> = too_many.iter().map(String::as_str).collect();
        assert!(is_invalid(store(FlagsMode::Add, &refs).await, "flags"));
        let o = store(FlagsMode::Add, &["\\flagged", "\\Flagged"]).await.unwrap();
        assert_eq!(o.updated[0].flags, ["$Label1", "\\Flagged", "\\Seen"]);
    }
}
