//! The distributed backend: NATS JetStream holds the metadata, so any number of mailbox
//! replicas can serve the same accounts.
//!
//! - **Accounts' mail** is one JetStream stream, `<PREFIX>_MAIL`, with a subject per account
//!   (`<prefix>.mail.<account id>`). Each message on a subject is a [`LogEntry`]: the effects of
//!   one write (folders and messages as they are after it, expunged UIDs, subscribed names
//!   without a folder put on or taken off the account's list, the events to tell watchers). A
//!   replica keeps the accounts it serves in memory ([`super::state::AccountState`]), catching up from
//!   the log before each operation.
//! - **Optimistic concurrency:** a writer builds its entry against the state it caught up to
//!   and publishes it with `Nats-Expected-Last-Subject-Sequence` set to the last entry it
//!   applied. If another replica appended first, the publish is refused, the writer catches
//!   up and builds the entry again. Two replicas therefore never extend the same state, and
//!   UIDs and MODSEQs strictly increase in log order (invariants 1 and 2). An entry is
//!   acknowledged by JetStream only once stored, so an acknowledged write is durable.
//! - **Group commit:** writes to one account that arrive while an append is in flight wait,
//!   and the next append carries all of them as one entry (its `batch`), so a busy account is
//!   not limited to one write per NATS round trip.
//! - **Snapshots** of an account's state go to the KV bucket `<prefix>_snapshots` every
//!   [`SNAPSHOT_EVERY`] entries (in parts, since a KV value must fit NATS's max_payload), so
//!   opening an account replays only the entries after the last one. A replica keeps at most
//!   [`MAX_CACHED_ACCOUNTS`] accounts in memory.
//! - **The directory** (domains, accounts, addresses, aliases, id counters) is the KV bucket
//!   `<prefix>_directory`; uniqueness (an address, an alias) is a KV create, counters are
//!   compare-and-set updates. A replica keeps the entries it has read in memory, current
//!   through a watch on the bucket ([`directory`]).
//! - **Parsed structure** of each body (envelope, MIME tree), immutable per content hash, is in
//!   `<prefix>_parsed`; the outbound queue in `<prefix>_queue`.
//! - **Watch** is an ordered consumer on the account's subject, started after its last entry:
//!   the events of every later entry, in log order. After a NATS reconnect, the client library
//!   resumes it from the last sequence it delivered.
//!
//! - **Bodies are not reference-counted:** replicas would have to agree on counters that span
//!   accounts. Every delivery stores its own object instead (named by content hash plus a
//!   random suffix), and garbage collection is a mark-and-sweep: objects older than the grace
//!   period that no account and no queue entry refers to. An object's name is known only to
//!   the delivery that wrote it until that delivery's entries are in the log, so an object
//!   that is old and unreferenced can never be referred to again.
//!
//! What it does not give: atomicity across accounts. A delivery to several accounts is one
//! entry per account; when NATS fails half-way, the sender is told to retry and the accounts
//! already written get the message twice (duplicates rather than loss).

pub mod backup;
mod conflict;
mod connect;
mod directory;
mod follow;
mod index;
mod outbound;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull::OrderedConfig},
    kv,
    message::PublishMessage,
    stream::{self, DirectGetErrorKind},
};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream::BoxStream};
use password_hash::rand_core::{OsRng, RngCore};
use prost::Message as _;
use tern_proto::v1::{FolderRef, MailboxEvent, QueuedMessage};

pub use self::connect::NatsConnection;
use super::{
    AccountChanges, AppendOp, Appended, DEFAULT_FOLDERS, MetadataStore, NewMessage, ReadFn, WriteFn, log,
    state::AccountState,
};
use crate::{
    error::{MailboxError, Result},
    records::{AccountRecord, DomainRecord, LogEntry, ParsedRecord},
};

/// Entries between two snapshots of an account.
const SNAPSHOT_EVERY: u32 = 64;
/// A snapshot is stored in parts of at most this size, since a KV value must fit NATS's
/// max_payload (1 MiB by default).
const SNAPSHOT_PART: usize = 512 * 1024;
/// Accounts a replica keeps in memory; past this, those not in use are dropped (and opened
/// again from their snapshot when next needed).
const MAX_CACHED_ACCOUNTS: usize = 4096;
/// The longest a pull request of an account feed or of the follower waits. The client library
/// asks for idle heartbeats at half of it and starts a consumer again after two are missed,
/// so this bounds how long a consumer that went silent (one created as NATS came back, say)
/// stays silent: 10 s rather than the library's default of 30 s. An idle feed costs a pull
/// request per 10 s and a heartbeat per 5 s.
pub(crate) const FEED_PULL_EXPIRES: std::time::Duration = std::time::Duration::from_secs(10);
/// A group commit stops adding writes to its entry past this size, well under NATS's default
/// max_payload (1 MiB).
const BATCH_BYTES: usize = 256 * 1024;
/// Attempts at a write that keeps losing the race to other replicas.
const MAX_ATTEMPTS: usize = 32;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn err<E: std::error::Error + Send + Sync + 'static>(context: &'static str) -> impl Fn(E) -> MailboxError {
    move |e| MailboxError::nats(context, e)
}

fn decode<T: prost::Message + Default>(what: &'static str, bytes: &[u8]) -> Result<T> {
    T::decode(bytes).map_err(|source| MailboxError::Corrupt { what, source })
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
}

/// KV keys allow only a few characters; names and addresses are hex-encoded in them.
fn key(kind: &str, name: &str) -> String {
    format!("{kind}.{}", hex::encode(name.as_bytes()))
}

fn unkey(key: &str) -> Option<String> {
    let (_, hexed) = key.split_once('.')?;
    String::from_utf8(hex::decode(hexed).ok()?).ok()
}

/// The header of a snapshot: `<log sequence> <number of parts>`.
fn snapshot_header(header: &[u8]) -> Option<(u64, usize)> {
    let (sequence, parts) = std::str::from_utf8(header).ok()?.split_once(' ')?;
    Some((sequence.parse().ok()?, parts.parse().ok()?))
}

fn id_bytes(id: u64) -> Bytes {
    Bytes::copy_from_slice(&id.to_be_bytes())
}

fn id_of(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// One account as a replica serves it: its state, and the writes waiting to be appended.
#[derive(Default)]
struct AccountCell {
    /// The account's state; whoever holds the lock may read it or append to the account's log.
    state: Arc<tokio::sync::Mutex<Option<AccountState>>>,
    /// Writes waiting for the state's lock; whoever takes it next appends them all at once.
    queue: Mutex<Vec<Job>>,
}

type Cell = Arc<AccountCell>;

/// What a queued write does with the state it is given: its entry, if it changes anything.
type Build = Box<dyn FnMut(&AccountState) -> Result<Option<LogEntry>> + Send>;

/// One write waiting in an account's queue: it builds its entry from the state it is given
/// (and keeps its own answer), and is told once its entry is in the log.
struct Job {
    build: Build,
    done: tokio::sync::oneshot::Sender<Result<()>>,
}

#[derive(Clone)]
pub struct NatsStore {
    js: jetstream::Context,
    stream: stream::Stream,
    subject_prefix: String,
    directory: kv::Store,
    snapshots: kv::Store,
    parsed: kv::Store,
    /// Rate counters, kept a day after their last count (the longest window).
    rates: kv::Store,
    /// Sieve's tracking records ([`MetadataStore::track`]).
    tracking: kv::Store,
    /// The full-text index's leases and manifests.
    index: Arc<index::NatsIndexCoordination>,
    outbound: outbound::Outbound,
    accounts: Arc<Mutex<HashMap<u64, Cell>>>,
    parsed_cache: Arc<Mutex<HashMap<String, ParsedRecord>>>,
    follower: Arc<follow::Follower>,
    /// The directory entries this replica has read, kept current by a watch.
    directory_cache: Arc<directory::DirectoryCache>,
    /// How many times the client has connected; see [`NatsStore::watch`].
    connections: tokio::sync::watch::Receiver<u64>,
}

impl std::fmt::Debug for NatsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStore").field("subjects", &self.subject_prefix).finish_non_exhaustive()
    }
}

impl NatsStore {
    /// Connects to NATS (see [`NatsConnection`]) and creates the stream and buckets named after `prefix` when
    /// they do not exist, each kept on `replicas` JetStream servers. Mailbox replicas pointed at
    /// the same server and prefix share everything.
    ///
    /// Durability is JetStream's: an acknowledged entry is on `replicas` servers. A single
    /// server (replicas 1) writes to its disk at its `sync_interval` (2 minutes by default),
    /// which survives a crash of the server process but not of the machine; a cluster should
    /// use 3 replicas, or the single server `sync_interval: always`.
    pub async fn connect(connection: &NatsConnection, prefix: &str, replicas: usize) -> Result<Self> {
        let (client, connections) = connection.connect("tern-mailbox").await?;
        let js = jetstream::new(client);
        let stream = js
            .get_or_create_stream(stream::Config {
                name: format!("{}_MAIL", prefix.to_ascii_uppercase()),
                subjects: vec![format!("{prefix}.mail.*")],
                allow_direct: true,
                storage: stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(err("creating the mail stream"))?;
        let bucket = |name: &str, history: i64| kv::Config {
            bucket: format!("{prefix}_{name}"),
            history,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        };
        let mut stores = Vec::new();
        for name in ["directory", "snapshots", "parsed", "queue"] {
            let store = match js.get_key_value(format!("{prefix}_{name}")).await {
                Ok(s) => s,
                Err(_) => js.create_key_value(bucket(name, 1)).await.map_err(err("creating a KV bucket"))?,
            };
            stores.push(store);
        }
        let accounts: Arc<Mutex<HashMap<u64, Cell>>> = Arc::default();
        let cached = {
            let accounts = Arc::clone(&accounts);
            Arc::new(move |id: u64| accounts.lock().expect("accounts lock").contains_key(&id))
        };
        let follower = follow::Follower::start(stream.clone(), format!("{prefix}.mail"), cached).await?;
        let rates = match js.get_key_value(format!("{prefix}_rates")).await {
            Ok(s) => s,
            Err(_) => js
                .create_key_value(kv::Config { max_age: std::time::Duration::from_secs(86_400), ..bucket("rates", 1) })
                .await
                .map_err(err("creating a KV bucket"))?,
        };
        // Sieve's tracking records live no longer than the longest period they may hold, so
        // the bucket forgets expired ones by itself.
        let tracking = match js.get_key_value(format!("{prefix}_tracking")).await {
            Ok(s) => s,
            Err(_) => js
                .create_key_value(kv::Config {
                    max_age: std::time::Duration::from_secs(super::MAX_TRACKING_SECONDS),
                    ..bucket("tracking", 1)
                })
                .await
                .map_err(err("creating a KV bucket"))?,
        };
        let index = Arc::new(index::NatsIndexCoordination::open(&js, prefix, replicas).await?);
        let queue = stores.pop().expect("four buckets");
        let parsed = stores.pop().expect("four buckets");
        let snapshots = stores.pop().expect("four buckets");
        let directory = stores.pop().expect("four buckets");
        let directory_cache = directory::DirectoryCache::start(directory.clone(), connections.clone());
        Ok(Self {
            js: js.clone(),
            stream,
            subject_prefix: format!("{prefix}.mail"),
            directory,
            snapshots,
            parsed,
            rates,
            tracking,
            index,
            outbound: outbound::Outbound::open(js.clone(), queue, prefix, replicas).await?,
            accounts,
            parsed_cache: Arc::default(),
            follower,
            directory_cache,
            connections,
        })
    }

    fn subject(&self, account_id: u64) -> String {
        format!("{}.{account_id}", self.subject_prefix)
    }

    fn cell(&self, account_id: u64) -> Cell {
        let mut accounts = self.accounts.lock().expect("accounts lock");
        if accounts.len() >= MAX_CACHED_ACCOUNTS && !accounts.contains_key(&account_id) {
            // Only this map holds a cell no operation is using.
            accounts.retain(|id, cell| {
                let keep = Arc::strong_count(cell) > 1;
                if !keep {
                    self.follower.forget(*id);
                }
                keep
            });
        }
        accounts.entry(account_id).or_default().clone()
    }

    /// The account's last snapshot: a header `<sequence> <parts>` under the account id, and the
    /// parts under `<id>.<sequence>.<n>`, written before the header, so a reader never combines
    /// parts of two snapshots.
    async fn load_snapshot(&self, account_id: u64) -> Result<Option<AccountState>> {
        let Some(header) = self.snapshot_part(account_id.to_string()).await? else {
            return Ok(None);
        };
        let Some((sequence, parts)) = snapshot_header(&header) else {
            tracing::warn!(account_id, "unreadable snapshot header; replaying the log");
            return Ok(None);
        };
        let mut bytes = Vec::new();
        for n in 0..parts {
            match self.snapshot_part(format!("{account_id}.{sequence}.{n}")).await? {
                Some(part) => bytes.extend_from_slice(&part),
                None => {
                    tracing::warn!(account_id, "incomplete snapshot; replaying the log");
                    return Ok(None);
                }
            }
        }
        Ok(Some(AccountState::from_snapshot(decode("snapshot", &bytes)?)))
    }

    /// One key of the snapshot bucket. Right after a clustered bucket is created its servers
    /// answer reads with "no responders" for a moment (the first account of a new deployment
    /// meets it); that is waited out for up to two seconds rather than failing the write.
    async fn snapshot_part(&self, key: String) -> Result<Option<Bytes>> {
        let mut attempts = 0;
        loop {
            match self.snapshots.get(key.clone()).await {
                Ok(value) => return Ok(value),
                Err(e) if attempts < 20 && e.to_string().contains("no responders") => {
                    attempts += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(MailboxError::nats("reading a snapshot", e)),
            }
        }
    }

    /// The last entry of an account's log: its sequence and content (None when empty).
    async fn last_entry(&self, account_id: u64) -> Result<Option<(u64, Bytes)>> {
        match self.stream.direct_get_last_for_subject(self.subject(account_id)).await {
            Ok(m) => Ok(Some((m.sequence, m.payload))),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(MailboxError::nats("reading an account's log", e)),
        }
    }

    /// Brings `state` up to the end of the account's log (loading it first if needed), and
    /// tells the follower and the request's position how far it got.
    async fn catch_up(&self, account_id: u64, slot: &mut Option<AccountState>) -> Result<()> {
        self.catch_up_from(account_id, slot, false).await
    }

    /// [`NatsStore::catch_up`], from the stream's leader when `leader` is set.
    async fn catch_up_from(&self, account_id: u64, slot: &mut Option<AccountState>, leader: bool) -> Result<()> {
        match self.read_log(account_id, slot, leader).await {
            // Direct gets have no responder for a moment after a clustered stream is created,
            // and a follower may be down: the leader answers those reads too.
            Err(e) if !leader => {
                tracing::debug!(account_id, error = %e, "direct read failed; reading from the stream's leader");
                self.read_log(account_id, slot, true).await?;
            }
            result => result?,
        }
        let sequence = slot.as_ref().map_or(0, |s| s.sequence);
        self.follower.applied(account_id, sequence);
        crate::position::saw(sequence);
        Ok(())
    }

    /// Reads the log from the state's sequence to its end into the state. Direct gets may be
    /// answered by any server of a clustered stream, including one a moment behind its leader;
    /// `leader` asks the stream's leader instead, which a writer that just lost a race needs:
    /// a lagging answer would make it build on the same stale state and lose again.
    async fn read_log(&self, account_id: u64, slot: &mut Option<AccountState>, leader: bool) -> Result<()> {
        if slot.is_none() {
            *slot = Some(self.load_snapshot(account_id).await?.unwrap_or_default());
        }
        let state = slot.as_mut().expect("loaded above");
        let last =
            if leader { self.last_entry_from_leader(account_id).await? } else { self.last_entry(account_id).await? };
        let Some((last, payload)) = last else {
            if state.sequence != 0 {
                // The log was purged (the account was deleted): start again from nothing.
                *state = AccountState::default();
            }
            return Ok(());
        };
        if last <= state.sequence {
            return Ok(());
        }
        let subject = self.subject(account_id);
        while state.sequence < last {
            let next = if leader {
                match self.stream.get_first_raw_message_by_subject(&subject, state.sequence + 1).await {
                    Ok(m) => Some((m.sequence, m.payload)),
                    Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => None,
                    Err(e) => return Err(MailboxError::nats("replaying a log", e)),
                }
            } else {
                match self.stream.direct_get_next_for_subject(subject.clone(), Some(state.sequence + 1)).await {
                    Ok(m) => Some((m.sequence, m.payload)),
                    Err(e) if e.kind() == DirectGetErrorKind::NotFound => None,
                    Err(e) => return Err(MailboxError::nats("replaying a log", e)),
                }
            };
            let Some((seq, bytes)) = next else { break };
            let bytes = if seq == last { payload.clone() } else { bytes };
            let entry: LogEntry = decode("log entry", &bytes)?;
            state.apply(seq, &entry);
        }
        Ok(())
    }

    /// The last entry of an account's log as the stream's leader has it.
    async fn last_entry_from_leader(&self, account_id: u64) -> Result<Option<(u64, Bytes)>> {
        match self.stream.get_last_raw_message_by_subject(&self.subject(account_id)).await {
            Ok(m) => Ok(Some((m.sequence, m.payload))),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(MailboxError::nats("reading an account's log", e)),
        }
    }

    /// Runs a read against the account's current state.
    ///
    /// When the client sent the position it has seen ([`crate::position`]) and the follower
    /// has reached it, the state in memory, brought up to the account's head with the entries
    /// the follower kept, is current enough: no round trip to NATS. Otherwise the state catches
    /// up from the log's tail.
    #[tracing::instrument(name = "nats.read", skip_all, fields(account_id = account_id))]
    async fn read<T>(&self, account_id: u64, f: impl FnOnce(&AccountState) -> Result<T>) -> Result<T> {
        let cell = self.cell(account_id);
        let min = crate::position::min();
        if min > 0 {
            let mut slot = cell.state.lock().await;
            // A state that has applied an entry at or past the position asked for holds every
            // entry of the account up to it (entries apply in log order): the client's own
            // write through this replica, typically. Nothing to wait for.
            if slot.as_ref().is_some_and(|s| s.sequence >= min) {
                self.apply_followed(account_id, &mut slot)?;
                let state = slot.as_ref().expect("checked above");
                crate::position::saw(state.sequence);
                return f(state);
            }
        }
        let followed = min > 0 && self.follower.reach(min).await;
        let mut slot = cell.state.lock().await;
        let reached = self.follower.reached();
        if followed && self.apply_followed(account_id, &mut slot)? {
            crate::position::saw(reached);
        } else {
            self.catch_up(account_id, &mut slot).await?;
        }
        f(slot.as_ref().expect("caught up"))
    }

    /// Applies the entries the follower kept for the account to its state in memory; false
    /// when there is no state or it cannot be made current from memory.
    fn apply_followed(&self, account_id: u64, slot: &mut Option<AccountState>) -> Result<bool> {
        let Some(state) = slot.as_mut() else { return Ok(false) };
        let Some(pending) = self.follower.take_after(account_id, state.sequence) else { return Ok(false) };
        for p in &pending {
            let entry: LogEntry = decode("log entry", &p.payload)?;
            state.apply(p.sequence, &entry);
        }
        if !pending.is_empty() {
            self.follower.applied(account_id, state.sequence);
        }
        Ok(true)
    }

    /// Builds an entry against the account's state and appends it to the log, again and again
    /// while other replicas append first. `f` returns the entry (none for no change) and the
    /// answer.
    ///
    /// Writes to one account are serialised, and each waits for NATS to acknowledge its entry:
    /// one at a time, a busy account would get no more writes per second than round trips to
    /// NATS. So writes that arrive while another is in flight queue up, and the next writer to
    /// take the account appends all of them as one entry (a group commit, see [`LogEntry`]'s
    /// batch), each built against the state the ones before it leave.
    #[tracing::instrument(name = "nats.append", skip_all, fields(account_id = account_id))]
    async fn write<T: Send + 'static>(
        &self,
        account_id: u64,
        mut f: impl FnMut(&AccountState) -> Result<(Option<LogEntry>, T)> + Send + 'static,
    ) -> Result<T> {
        let cell = self.cell(account_id);
        let answer = Arc::new(Mutex::new(None));
        let (done, result) = tokio::sync::oneshot::channel();
        let kept = Arc::clone(&answer);
        let build = Box::new(move |state: &AccountState| {
            let (entry, out) = f(state)?;
            *kept.lock().expect("answer lock") = Some(out);
            Ok(entry)
        });
        cell.queue.lock().expect("queue lock").push(Job { build, done });
        let slot = Arc::clone(&cell.state).lock_owned().await;
        let jobs = std::mem::take(&mut *cell.queue.lock().expect("queue lock"));
        if jobs.is_empty() {
            // The writer before this one appended this write with its own.
            drop(slot);
        } else {
            // The appends run on a task of their own, so that a caller that goes away (a
            // client hanging up) cannot leave the other writers of the batch without an answer.
            let this = self.clone();
            let commit = async move { this.commit(account_id, slot, jobs).await };
            let _ = tokio::spawn(tracing::Instrument::in_current_span(commit)).await;
        }
        match result.await {
            Ok(Ok(())) => Ok(answer.lock().expect("answer lock").take().expect("answered by build")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(MailboxError::Commit(format!("account {account_id}: the write was interrupted"))),
        }
    }

    /// Appends the entries of `jobs` to the account's log as one entry and answers each job.
    ///
    /// The first attempt uses the state this replica already has, without asking the log
    /// whether it is current: the append is conditional on the last sequence that state has
    /// applied, so an entry built on a stale state is refused, and the writer catches up and
    /// builds it again. For the same reason a refusal or a no-op of one job is answered only
    /// once the entry of its batch was accepted (which shows that the state it was decided on
    /// was current), or, when no job changes anything, once it is decided again on a state
    /// known to be current.
    async fn commit(
        &self,
        account_id: u64,
        mut slot: tokio::sync::OwnedMutexGuard<Option<AccountState>>,
        jobs: Vec<Job>,
    ) {
        // A caller that went away before its write began is not written for.
        let mut jobs: Vec<Job> = jobs.into_iter().filter(|j| !j.done.is_closed()).collect();
        while !jobs.is_empty() {
            let outcomes = match self.commit_jobs(account_id, &mut slot, &mut jobs).await {
                Ok(outcomes) => outcomes,
                Err(e) => {
                    let detail = e.to_string();
                    let mut first = Some(e);
                    (0..jobs.len())
                        .map(|_| Err(first.take().unwrap_or_else(|| MailboxError::Commit(detail.clone()))))
                        .collect()
                }
            };
            // The jobs answered; any left over did not fit in the entry and go in the next.
            let rest = jobs.split_off(outcomes.len());
            for (job, outcome) in jobs.into_iter().zip(outcomes) {
                let _ = job.done.send(outcome);
            }
            jobs = rest;
        }
    }

    /// The work of [`NatsStore::commit`]: the outcomes of the jobs from the first on that went
    /// into the entry (all of them, unless the entry grew too large), or an error for all.
    async fn commit_jobs(
        &self,
        account_id: u64,
        slot: &mut Option<AccountState>,
        jobs: &mut [Job],
    ) -> Result<Vec<Result<()>>> {
        let mut fresh = false;
        if slot.is_none() {
            self.catch_up(account_id, slot).await?;
            fresh = true;
        } else {
            // Entries of other replicas the follower already has: fewer lost races.
            self.apply_followed(account_id, slot)?;
        }
        let mut lost = 0u32;
        for attempt in 0..MAX_ATTEMPTS {
            let state = slot.as_mut().expect("loaded above");
            let base = state.sequence;
            // With one job the state is changed only once NATS has the entry; with several,
            // each entry is applied as it is built so that the next job sees it, and a failed
            // append throws the state away (the next operation loads it again).
            let tentative = jobs.len() > 1;
            let mut entries = Vec::new();
            let mut size = 0;
            let mut outcomes = Vec::with_capacity(jobs.len());
            for job in jobs.iter_mut() {
                match (job.build)(state) {
                    Ok(Some(entry)) => {
                        size += entry.encoded_len();
                        if !entries.is_empty() && size > BATCH_BYTES {
                            // NATS refuses a message past its max_payload: the jobs from this
                            // one on wait for the next append.
                            break;
                        }
                        if tentative {
                            state.apply(base, &entry);
                        }
                        entries.push(entry);
                        outcomes.push(Ok(()));
                    }
                    Ok(None) => outcomes.push(Ok(())),
                    Err(e) => outcomes.push(Err(e)),
                }
            }
            if entries.is_empty() {
                if fresh {
                    return Ok(outcomes);
                }
                self.catch_up(account_id, slot).await?;
                fresh = true;
                continue;
            }
            let entry = if entries.len() == 1 {
                entries.pop().expect("one entry")
            } else {
                LogEntry { batch: entries, ..Default::default() }
            };
            let publish = PublishMessage::build()
                .payload(Bytes::from(entry.encode_to_vec()))
                .expected_last_subject_sequence(base);
            let sent = self.js.send_publish(self.subject(account_id), publish).await;
            let acked = match sent {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match acked {
                Ok(ack) => {
                    if tentative {
                        state.sequence = ack.sequence;
                    } else {
                        state.apply(ack.sequence, &entry);
                    }
                    self.follower.applied(account_id, ack.sequence);
                    crate::position::saw(ack.sequence);
                    if state.since_snapshot >= SNAPSHOT_EVERY {
                        self.save_snapshot(account_id, state).await;
                    }
                    return Ok(outcomes);
                }
                Err(e) if conflict::lost_race(&e) => {
                    tracing::debug!(account_id, attempt, "another replica wrote first; retrying");
                    if tentative {
                        *slot = None;
                    }
                    lost += 1;
                    if lost > 2 {
                        // Several writers keep colliding: spread them out a little.
                        let ceiling = 1u64 << lost.min(6);
                        tokio::time::sleep(std::time::Duration::from_millis(1 + OsRng.next_u64() % ceiling)).await;
                    }
                    self.catch_up_from(account_id, slot, true).await?;
                    fresh = true;
                }
                Err(e) => {
                    // The entry may or may not have been stored (a timeout after the server
                    // took it); the next operation catches up either way.
                    if tentative {
                        *slot = None;
                    }
                    return Err(MailboxError::nats("appending to an account's log", e));
                }
            }
        }
        Err(MailboxError::Commit(format!("account {account_id}: too many concurrent writers")))
    }

    async fn save_snapshot(&self, account_id: u64, state: &mut AccountState) {
        let bytes = state.snapshot().encode_to_vec();
        let sequence = state.sequence;
        let previous = self.snapshots.get(account_id.to_string()).await.ok().flatten();
        let parts: Vec<&[u8]> = bytes.chunks(SNAPSHOT_PART).collect();
        for (n, part) in parts.iter().enumerate() {
            let key = format!("{account_id}.{sequence}.{n}");
            if let Err(e) = self.snapshots.put(key, Bytes::copy_from_slice(part)).await {
                tracing::warn!(account_id, error = %e, "cannot write a snapshot");
                return;
            }
        }
        let header = Bytes::from(format!("{sequence} {}", parts.len()));
        if let Err(e) = self.snapshots.put(account_id.to_string(), header).await {
            tracing::warn!(account_id, error = %e, "cannot write a snapshot");
            return;
        }
        state.since_snapshot = 0;
        // The parts of the snapshot this one replaces are no longer read.
        if let Some((old, n)) = previous.as_deref().and_then(snapshot_header)
            && old != sequence
        {
            for i in 0..n {
                let _ = self.snapshots.purge(format!("{account_id}.{old}.{i}")).await;
            }
        }
    }

    /// Adds `cost` to a rate counter, compare-and-set against other writers.
    async fn add_to_rate(&self, key: &str, cost: u64) -> Result<u64> {
        // KV keys allow few characters; the counter's name is hex, whatever it holds.
        let key = format!("r.{}", hex::encode(key));
        for _ in 0..MAX_ATTEMPTS * 4 {
            match self.rates.entry(key.clone()).await.map_err(err("reading a rate counter"))? {
                None => match self.rates.create(&key, id_bytes(cost)).await {
                    Ok(_) => return Ok(cost),
                    Err(e) if conflict::lost_race(&e) => continue,
                    Err(e) => return Err(MailboxError::nats("creating a rate counter", e)),
                },
                Some(entry) => {
                    let total = id_of(&entry.value).unwrap_or(0) + cost;
                    match self.rates.update(&key, id_bytes(total), entry.revision).await {
                        Ok(_) => return Ok(total),
                        Err(e) if conflict::lost_race(&e) => continue,
                        Err(e) => return Err(MailboxError::nats("counting a rate", e)),
                    }
                }
            }
        }
        Err(MailboxError::Commit(format!("rate counter {key}: too many concurrent writers")))
    }

    /// Allocates `n` consecutive ids from a directory counter; returns the first.
    async fn next_ids(&self, counter: &str, n: u64) -> Result<u64> {
        let key = format!("counter.{counter}");
        for _ in 0..MAX_ATTEMPTS * 4 {
            match self.directory.entry(key.clone()).await.map_err(err("reading a counter"))? {
                None => match self.directory.create(&key, id_bytes(n)).await {
                    Ok(_) => return Ok(1),
                    Err(e) if conflict::lost_race(&e) => continue,
                    Err(e) => return Err(MailboxError::nats("creating a counter", e)),
                },
                Some(entry) => {
                    let current = id_of(&entry.value).unwrap_or(0);
                    match self.directory.update(&key, id_bytes(current + n), entry.revision).await {
                        Ok(_) => return Ok(current + 1),
                        Err(e) if conflict::lost_race(&e) => continue,
                        Err(e) => {
                            return Err(MailboxError::nats("advancing a counter", e));
                        }
                    }
                }
            }
        }
        Err(MailboxError::Commit(format!("counter {counter}: too many concurrent writers")))
    }

    /// A directory value, from this replica's cache of the directory when it has it.
    async fn directory_get(&self, key: &str) -> Result<Option<Bytes>> {
        self.directory_cache.get(&self.directory, key).await.map_err(err("reading the directory"))
    }

    /// Creates a directory key that must not exist yet (a uniqueness claim).
    async fn directory_create(&self, key: String, value: Bytes) -> std::result::Result<(), kv::CreateError> {
        let revision = self.directory.create(&key, value.clone()).await?;
        self.directory_cache.wrote(&key, revision, value);
        Ok(())
    }

    async fn directory_purge(&self, key: String, context: &'static str) -> Result<()> {
        self.directory.purge(&key).await.map_err(err(context))?;
        self.directory_cache.deleted(&key);
        Ok(())
    }

    async fn get_record<T: prost::Message + Default>(&self, what: &'static str, key: String) -> Result<Option<T>> {
        match self.directory_get(&key).await? {
            Some(bytes) => Ok(Some(decode(what, &bytes)?)),
            None => Ok(None),
        }
    }

    async fn put_record(&self, key: String, record: &impl prost::Message) -> Result<()> {
        let value = Bytes::from(record.encode_to_vec());
        let revision = self.directory.put(&key, value.clone()).await.map_err(err("writing the directory"))?;
        self.directory_cache.wrote(&key, revision, value);
        Ok(())
    }

    async fn id_by(&self, kind: &str, name: &str) -> Result<Option<u64>> {
        Ok(self.directory_get(&key(kind, name)).await?.and_then(|b| id_of(&b)))
    }

    async fn keys_with(&self, prefix: &str) -> Result<Vec<String>> {
        let keys = match self.directory.keys().await {
            Ok(k) => k,
            Err(e) => return Err(MailboxError::nats("listing the directory", e)),
        };
        let keys: Vec<String> = keys.try_collect().await.map_err(err("listing the directory"))?;
        Ok(keys.into_iter().filter(|k| k.starts_with(prefix)).collect())
    }

    async fn account_record(&self, address: &str) -> Result<AccountRecord> {
        let id = self.id_by("address", address).await?.ok_or_else(|| MailboxError::not_found("account", address))?;
        self.get_record("account", format!("account.{id}"))
            .await?
            .ok_or_else(|| MailboxError::not_found("account", address))
    }

    async fn parsed_of(&self, blob_id: &str) -> Result<Option<ParsedRecord>> {
        if let Some(p) = self.parsed_cache.lock().expect("parsed cache").get(blob_id) {
            return Ok(Some(p.clone()));
        }
        let Some(bytes) = self.parsed.get(blob_id).await.map_err(err("reading a message structure"))? else {
            return Ok(None);
        };
        let p: ParsedRecord = decode("parsed", &bytes)?;
        self.cache_parsed(blob_id, p.clone());
        Ok(Some(p))
    }

    fn cache_parsed(&self, blob_id: &str, parsed: ParsedRecord) {
        let mut cache = self.parsed_cache.lock().expect("parsed cache");
        // Structures are immutable per content; the cache is only bounded, never invalidated.
        if cache.len() > 4096 {
            cache.clear();
        }
        cache.insert(blob_id.to_string(), parsed);
    }
}

#[async_trait::async_trait]
impl MetadataStore for NatsStore {
    async fn backup(&self, dir: &std::path::Path) -> Result<String> {
        let prefix = self.subject_prefix.strip_suffix(".mail").unwrap_or(&self.subject_prefix);
        backup::backup(&self.js.client(), prefix, dir).await
    }

    async fn create_domain(&self, domain: DomainRecord) -> Result<DomainRecord> {
        match self.directory_create(key("domain", &domain.name), Bytes::from(domain.encode_to_vec())).await {
            Ok(_) => Ok(domain),
            Err(e) if conflict::lost_race(&e) => Err(MailboxError::exists("domain", &domain.name)),
            Err(e) => Err(MailboxError::nats("creating a domain", e)),
        }
    }

    async fn update_domain(&self, name: &str, update: super::DomainUpdate) -> Result<DomainRecord> {
        let mut d: DomainRecord = self
            .get_record("domain", key("domain", name))
            .await?
            .ok_or_else(|| MailboxError::not_found("domain", name))?;
        update.apply(&mut d);
        self.put_record(key("domain", name), &d).await?;
        Ok(d)
    }

    async fn domain(&self, name: &str) -> Result<Option<DomainRecord>> {
        self.get_record("domain", key("domain", name)).await
    }

    async fn list_domains(&self) -> Result<Vec<(DomainRecord, u64)>> {
        let addresses: Vec<String> = self.keys_with("address.").await?.iter().filter_map(|k| unkey(k)).collect();
        let mut out = Vec::new();
        for k in self.keys_with("domain.").await? {
            if let Some(d) = self.get_record::<DomainRecord>("domain", k).await? {
                let n = addresses.iter().filter(|a| domain_of(a) == d.name).count() as u64;
                out.push((d, n));
            }
        }
        out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        Ok(out)
    }

    async fn delete_domain(&self, name: &str) -> Result<()> {
        if self.domain(name).await?.is_none() {
            return Err(MailboxError::not_found("domain", name));
        }
        for (kind, what) in [("address.", "mailboxes"), ("alias.", "aliases")] {
            if self.keys_with(kind).await?.iter().filter_map(|k| unkey(k)).any(|a| domain_of(&a) == name) {
                return Err(MailboxError::NotAllowed(format!("domain {name} still has {what}")));
            }
        }
        self.directory_purge(key("domain", name), "deleting a domain").await?;
        Ok(())
    }

    async fn create_account(&self, account: AccountRecord) -> Result<AccountRecord> {
        let domain = domain_of(&account.address).to_string();
        if self.domain(&domain).await?.is_none() {
            return Err(MailboxError::not_found("domain", domain));
        }
        if self.id_by("alias", &account.address).await?.is_some() {
            return Err(MailboxError::exists("alias", &account.address));
        }
        let mut account = account;
        account.id = self.next_ids("account", 1).await?;
        // The address is claimed first: of two replicas creating it, one wins here.
        match self.directory_create(key("address", &account.address), id_bytes(account.id)).await {
            Ok(_) => {}
            Err(e) if conflict::lost_race(&e) => {
                return Err(MailboxError::exists("mailbox", &account.address));
            }
            Err(e) => return Err(MailboxError::nats("creating an account", e)),
        }
        self.put_record(format!("account.{}", account.id), &account).await?;
        let first_folder = self.next_ids("folder", DEFAULT_FOLDERS.len() as u64).await?;
        let account_id = account.id;
        self.write(account_id, move |state| log::create_account_folders(&state.view(account_id), first_folder, now()))
            .await?;
        Ok(account)
    }

    async fn update_account(&self, changes: AccountChanges) -> Result<AccountRecord> {
        let mut a = self.account_record(&changes.address).await?;
        changes.apply(&mut a);
        self.put_record(format!("account.{}", a.id), &a).await?;
        Ok(a)
    }

    async fn set_password(&self, address: &str, hash: String) -> Result<()> {
        let mut a = self.account_record(address).await?;
        a.password_hash = hash;
        self.put_record(format!("account.{}", a.id), &a).await
    }

    async fn account(&self, id: u64) -> Result<Option<AccountRecord>> {
        self.get_record("account", format!("account.{id}")).await
    }

    async fn account_by_address(&self, address: &str) -> Result<Option<AccountRecord>> {
        match self.id_by("address", address).await? {
            Some(id) => self.account(id).await,
            None => Ok(None),
        }
    }

    async fn list_accounts(&self, domain: Option<&str>) -> Result<Vec<AccountRecord>> {
        let mut out = Vec::new();
        for k in self.keys_with("account.").await? {
            if let Some(a) = self.get_record::<AccountRecord>("account", k).await?
                && domain.is_none_or(|d| domain_of(&a.address) == d)
            {
                out.push(a);
            }
        }
        out.sort_by(|a, b| a.address.cmp(&b.address));
        Ok(out)
    }

    async fn delete_account(&self, address: &str) -> Result<()> {
        let a = self.account_record(address).await?;
        for alias in &a.aliases {
            self.directory_purge(key("alias", alias), "deleting an alias").await?;
        }
        self.directory_purge(key("address", address), "deleting an account").await?;
        self.directory_purge(format!("account.{}", a.id), "deleting an account").await?;
        if let Some(header) = self.snapshots.get(a.id.to_string()).await.map_err(err("reading a snapshot"))?
            && let Some((seq, n)) = snapshot_header(&header)
        {
            for i in 0..n {
                self.snapshots.purge(format!("{}.{seq}.{i}", a.id)).await.map_err(err("deleting a snapshot"))?;
            }
        }
        self.snapshots.purge(a.id.to_string()).await.map_err(err("deleting a snapshot"))?;
        self.stream.purge().filter(self.subject(a.id)).await.map_err(err("deleting an account's log"))?;
        self.accounts.lock().expect("accounts lock").remove(&a.id);
        Ok(())
    }

    async fn add_alias(&self, alias: &str, target: &str) -> Result<()> {
        let domain = domain_of(alias).to_string();
        if self.domain(&domain).await?.is_none() {
            return Err(MailboxError::not_found("domain", domain));
        }
        if self.id_by("address", alias).await?.is_some() {
            return Err(MailboxError::exists("mailbox", alias));
        }
        let mut a = self.account_record(target).await?;
        match self.directory_create(key("alias", alias), id_bytes(a.id)).await {
            Ok(_) => {}
            Err(e) if conflict::lost_race(&e) => {
                return Err(MailboxError::exists("alias", alias));
            }
            Err(e) => return Err(MailboxError::nats("creating an alias", e)),
        }
        a.aliases.push(alias.to_string());
        a.aliases.sort();
        self.put_record(format!("account.{}", a.id), &a).await
    }

    async fn remove_alias(&self, alias: &str) -> Result<()> {
        let id = self.id_by("alias", alias).await?.ok_or_else(|| MailboxError::not_found("alias", alias))?;
        if let Some(mut a) = self.account(id).await? {
            a.aliases.retain(|x| x != alias);
            self.put_record(format!("account.{}", a.id), &a).await?;
        }
        self.directory_purge(key("alias", alias), "deleting an alias").await?;
        Ok(())
    }

    async fn alias(&self, alias: &str) -> Result<Option<u64>> {
        self.id_by("alias", alias).await
    }

    async fn list_aliases(&self, domain: Option<&str>) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for k in self.keys_with("alias.").await? {
            let Some(alias) = unkey(&k) else { continue };
            if domain.is_some_and(|d| domain_of(&alias) != d) {
                continue;
            }
            let Some(id) = self.id_by("alias", &alias).await? else { continue };
            let target = self.account(id).await?.map(|a| a.address).unwrap_or_default();
            out.push((alias, target));
        }
        out.sort();
        Ok(out)
    }

    async fn read_account(&self, account_id: u64, read: ReadFn<'_>) -> Result<()> {
        self.read(account_id, |state| read(&state.view(account_id))).await
    }

    async fn write_account(&self, account_id: u64, mut write: WriteFn) -> Result<()> {
        self.write(account_id, move |state| Ok((write(&state.view(account_id))?, ()))).await
    }

    async fn new_folder_id(&self) -> Result<u64> {
        self.next_ids("folder", 1).await
    }

    async fn parsed(&self, blob_id: &str) -> Result<Option<ParsedRecord>> {
        self.parsed_of(blob_id).await
    }

    async fn tracked(&self, key: &str, now: i64) -> Result<bool> {
        let key = format!("t.{}", hex::encode(key));
        let entry = self.tracking.entry(key).await.map_err(err("reading a tracking record"))?;
        Ok(entry.and_then(|e| <[u8; 8]>::try_from(e.value.as_ref()).ok()).is_some_and(|b| i64::from_be_bytes(b) > now))
    }

    async fn track(&self, key: &str, now: i64, until: i64) -> Result<bool> {
        let key = format!("t.{}", hex::encode(key));
        let value = bytes::Bytes::copy_from_slice(&until.to_be_bytes());
        for _ in 0..MAX_ATTEMPTS * 4 {
            match self.tracking.entry(key.clone()).await.map_err(err("reading a tracking record"))? {
                // A deleted or purged key reads as an entry without a value.
                Some(entry) if !entry.value.is_empty() => {
                    let at = <[u8; 8]>::try_from(entry.value.as_ref()).map(i64::from_be_bytes).unwrap_or(0);
                    if at > now {
                        return Ok(false);
                    }
                    match self.tracking.update(&key, value.clone(), entry.revision).await {
                        Ok(_) => return Ok(true),
                        Err(e) if conflict::lost_race(&e) => continue,
                        Err(e) => return Err(MailboxError::nats("writing a tracking record", e)),
                    }
                }
                _ => match self.tracking.create(&key, value.clone()).await {
                    Ok(_) => return Ok(true),
                    Err(e) if conflict::lost_race(&e) => continue,
                    Err(e) => return Err(MailboxError::nats("creating a tracking record", e)),
                },
            }
        }
        Err(MailboxError::Commit(format!("tracking record {key}: too many concurrent writers")))
    }

    async fn count_rate(&self, key: &str, cost: u64, _ttl: std::time::Duration) -> Result<u64> {
        // The bucket forgets a counter a day after its last count, which is at least `ttl`.
        self.add_to_rate(key, cost).await
    }

    async fn blob_refs(&self, _blob_id: &str) -> Result<u64> {
        // Not counted in this backend: zero makes every delivery write its body, which is
        // idempotent for content-addressed objects.
        Ok(0)
    }

    async fn append(&self, message: NewMessage, ops: Vec<AppendOp>) -> Result<Vec<Result<Appended>>> {
        // The structure is stored before any entry refers to it, by `stage` when the service
        // called it (the structure is then in the cache).
        let staged = self.parsed_cache.lock().expect("parsed cache").contains_key(&message.blob_id);
        if !staged {
            self.stage(&message).await?;
        }
        let message = Arc::new(message);
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let account = match self.account(op.account_id).await? {
                Some(a) => a,
                None => {
                    results.push(Err(MailboxError::not_found("account", op.account_id.to_string())));
                    continue;
                }
            };
            let email_id = OsRng.next_u64() >> 1;
            let message = Arc::clone(&message);
            let outcome = self
                .write(op.account_id, move |state| {
                    log::append(&state.view(op.account_id), &account, &op.folder, &op.flags, &message, email_id)
                })
                .await;
            match outcome {
                // A storage failure fails the delivery (the sender retries), as in the
                // embedded backend; entries already appended for other accounts stay.
                Err(e) if e.is_temporary() => return Err(e),
                outcome => results.push(outcome),
            }
        }
        Ok(results)
    }

    async fn append_all(
        &self,
        account_id: u64,
        folder: FolderRef,
        messages: Vec<(NewMessage, Vec<String>)>,
    ) -> Result<Vec<Appended>> {
        for (message, _) in &messages {
            let staged = self.parsed_cache.lock().expect("parsed cache").contains_key(&message.blob_id);
            if !staged {
                self.stage(message).await?;
            }
        }
        let account = self
            .account(account_id)
            .await?
            .ok_or_else(|| MailboxError::not_found("account", account_id.to_string()))?;
        // The EMAILIDs are drawn once, so that a retried build (a lost race) gives the same ones.
        let messages: Vec<(NewMessage, Vec<String>, u64)> =
            messages.into_iter().map(|(m, flags)| (m, flags, OsRng.next_u64() >> 1)).collect();
        // Bodies of a refused append are left to the mark-and-sweep, which deletes every
        // unreferenced object once it is old enough (see `counts_references`).
        self.write(account_id, move |state| {
            let items: Vec<(&NewMessage, &[String], u64)> =
                messages.iter().map(|(m, flags, id)| (m, flags.as_slice(), *id)).collect();
            log::append_all(&state.view(account_id), &account, &folder, &items)
        })
        .await
    }

    async fn stage(&self, message: &NewMessage) -> Result<()> {
        // Body names are unique per delivery in this backend (see `counts_references`), so
        // there is never a structure stored under this one already.
        let parsed = ParsedRecord::from(&message.parsed);
        self.parsed
            .put(&message.blob_id, Bytes::from(parsed.encode_to_vec()))
            .await
            .map_err(err("storing a message structure"))?;
        self.cache_parsed(&message.blob_id, parsed);
        Ok(())
    }

    fn mail_changes(&self) -> Option<BoxStream<'static, u64>> {
        use futures::StreamExt;
        // A listener that falls behind misses some accounts; the indexer catches up with an
        // account at its next change or search, which is all a missed wake-up costs.
        Some(
            tokio_stream::wrappers::BroadcastStream::new(self.follower.changes())
                .filter_map(|r| async move { r.ok() })
                .boxed(),
        )
    }

    fn index_coordination(&self) -> Option<Arc<dyn crate::fts::shared::IndexCoordination>> {
        Some(Arc::clone(&self.index) as Arc<dyn crate::fts::shared::IndexCoordination>)
    }

    async fn watch(&self, account_id: u64) -> Result<BoxStream<'static, MailboxEvent>> {
        // Starting after the log's current end means: every entry appended after this call
        // returns is delivered, and nothing before it.
        let start = self.last_entry(account_id).await?.map(|(seq, _)| seq).unwrap_or(0) + 1;
        let consumer = self
            .stream
            .create_consumer(OrderedConfig {
                filter_subject: self.subject(account_id),
                deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: start },
                max_expires: FEED_PULL_EXPIRES,
                ..Default::default()
            })
            .await
            .map_err(err("following an account"))?;
        let messages = consumer.messages().await.map_err(err("following an account"))?;
        // A reconnect ends the feed: the ordered consumer would resume by itself, but only once
        // it has missed two idle heartbeats (15 s each in async-nats), and until then watchers
        // hear nothing. Ending it makes them resynchronise and watch again at once.
        let mut connections = self.connections.clone();
        connections.borrow_and_update();
        let reconnected = async move {
            if connections.changed().await.is_ok() {
                tracing::info!("NATS reconnected; ending the account feed so that its watcher starts again");
            }
        };
        Ok(messages
            .take_until(reconnected)
            .take_while(|m| {
                // An error the ordered consumer could not recover from ends the stream: the
                // watcher resynchronises rather than miss events.
                if let Err(e) = m {
                    tracing::warn!(error = %e, "account feed broke; closing it");
                }
                std::future::ready(m.is_ok())
            })
            .flat_map(|m| {
                let events = m
                    .ok()
                    .and_then(|m| LogEntry::decode(m.payload.clone()).ok())
                    .map(LogEntry::into_events)
                    .unwrap_or_default();
                // Watchers are told in the API's terms; the entry's events are records until here.
                futures::stream::iter(events.into_iter().map(MailboxEvent::from))
            })
            .boxed())
    }

    async fn enqueue(&self, entries: Vec<QueuedMessage>) -> Result<Vec<QueuedMessage>> {
        let first = self.next_ids("queue", entries.len() as u64).await?;
        let mut out = Vec::with_capacity(entries.len());
        for (n, mut entry) in entries.into_iter().enumerate() {
            entry.queue_id = format!("{:016X}", first + n as u64);
            out.push(self.outbound.enqueue(entry).await?);
        }
        Ok(out)
    }

    async fn list_queue(&self) -> Result<Vec<QueuedMessage>> {
        self.outbound.list().await
    }

    async fn queued(&self, queue_id: &str) -> Result<Option<QueuedMessage>> {
        self.outbound.get(queue_id).await
    }

    async fn claim_queue(&self, holder: &str, now: i64, lease_seconds: i64, max: usize) -> Result<Vec<QueuedMessage>> {
        self.outbound.claim(holder, now, lease_seconds, max).await
    }

    async fn finish_queued(&self, queue_id: &str, holder: &str, now: i64, retry: Option<QueuedMessage>) -> Result<()> {
        self.outbound.finish(queue_id, holder, now, retry).await
    }

    async fn delete_queued(&self, queue_id: &str) -> Result<()> {
        self.outbound.delete(queue_id).await
    }

    async fn retry_queued(&self, queue_id: &str, now: i64) -> Result<QueuedMessage> {
        self.outbound.retry_now(queue_id, now).await
    }

    fn counts_references(&self) -> bool {
        // Replicas would have to agree on counters across accounts; instead every delivery
        // stores its own object and collection is a mark-and-sweep (see MailboxService).
        false
    }

    async fn referenced_blobs(&self) -> Result<std::collections::HashSet<String>> {
        let mut out = std::collections::HashSet::new();
        for k in self.keys_with("account.").await? {
            let Some(id) = k.strip_prefix("account.").and_then(|i| i.parse::<u64>().ok()) else { continue };
            self.read(id, |s| {
                out.extend(s.folders.values().flat_map(|f| f.messages.values().map(|m| m.blob_id.clone())));
                Ok(())
            })
            .await?;
        }
        out.extend(self.list_queue().await?.into_iter().map(|q| q.blob_id));
        Ok(out)
    }

    async fn orphaned_blobs(&self, _before: i64, _limit: usize) -> Result<Vec<String>> {
        // Not used: this store does not count references (see `referenced_blobs`).
        Ok(vec![])
    }

    async fn forget_blob(&self, blob_id: &str) -> Result<bool> {
        self.parsed.purge(blob_id).await.map_err(err("forgetting a message structure"))?;
        self.parsed_cache.lock().expect("parsed cache").remove(blob_id);
        Ok(true)
    }
}
