//! The replica's subscription to the whole mail log, which keeps the accounts it serves current
//! without asking NATS on every read.
//!
//! One ordered consumer per replica receives every entry appended to `<PREFIX>_MAIL`, by any
//! replica, in log order. For each it records the account's newest sequence (its *head*) and,
//! for accounts this replica holds in memory, keeps the entry itself until a reader or writer
//! of that account applies it under the account's lock. The follower never takes that lock, so
//! it never waits behind a slow operation, and a reader never waits behind the follower.
//!
//! A read may use the state in memory when it is *current as of the follower*: the follower has
//! reached the position the client asked for ([`crate::position`]), and the state has applied
//! the account's head. Everything else (no position asked, a follower behind or broken, a gap in
//! the kept entries) falls back to reading the log's tail, as every read did before.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{
    consumer::{DeliverPolicy, pull::OrderedConfig},
    stream,
};
use bytes::Bytes;
use futures::StreamExt;

/// Entries kept per account for readers to apply. An account written to faster than it is
/// read drops its kept entries past this, and its next reader reads the log instead.
const MAX_PENDING: usize = 512;

/// How long a read waits for the follower to reach the position its client asked for before
/// reading the log itself.
pub(super) const MAX_WAIT: Duration = Duration::from_millis(500);

/// An entry the follower received: the account's previous head, its sequence and content.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub previous: u64,
    pub sequence: u64,
    pub payload: Bytes,
}

#[derive(Debug, Default)]
struct Account {
    /// The sequence of the newest entry of the account the follower received.
    head: u64,
    /// Entries after those the in-memory state had applied, oldest first; `None` when some
    /// were dropped.
    pending: Option<Vec<Pending>>,
}

/// What the follower knows; shared by the store and the follower's task.
#[derive(Debug)]
pub(super) struct Follower {
    accounts: Mutex<HashMap<u64, Account>>,
    /// The stream sequence of the last entry received.
    reached: tokio::sync::watch::Sender<u64>,
    /// False while the subscription is being re-established: reads then use the log.
    healthy: AtomicBool,
    /// The account of every entry received, for the full-text indexer.
    changes: tokio::sync::broadcast::Sender<u64>,
}

impl Follower {
    /// Starts following `stream` from its current end, with `subject_prefix.<account id>`
    /// subjects.
    pub async fn start(
        stream: stream::Stream,
        subject_prefix: String,
        cached: Arc<dyn Fn(u64) -> bool + Send + Sync>,
    ) -> crate::Result<Arc<Follower>> {
        let mut info = stream.clone();
        let last =
            info.info().await.map_err(|e| crate::MailboxError::nats("reading the mail stream", e))?.state.last_sequence;
        let follower = Arc::new(Follower {
            accounts: Mutex::default(),
            reached: tokio::sync::watch::channel(last).0,
            healthy: AtomicBool::new(false),
            changes: tokio::sync::broadcast::channel(4096).0,
        });
        let consumer = subscribe(&stream, &subject_prefix, last + 1).await?;
        follower.healthy.store(true, Ordering::Release);
        tokio::spawn(run(Arc::downgrade(&follower), stream, subject_prefix, consumer, cached));
        Ok(follower)
    }

    /// Waits until the follower has received everything up to `position`; false when it is
    /// unhealthy or does not get there within [`MAX_WAIT`].
    pub async fn reach(&self, position: u64) -> bool {
        if !self.healthy.load(Ordering::Acquire) {
            return false;
        }
        if *self.reached.borrow() >= position {
            return true;
        }
        let mut rx = self.reached.subscribe();
        matches!(tokio::time::timeout(MAX_WAIT, rx.wait_for(|r| *r >= position)).await, Ok(Ok(_)))
            && self.healthy.load(Ordering::Acquire)
    }

    /// The accounts of the entries received from now on.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The position the follower has reached.
    pub fn reached(&self) -> u64 {
        *self.reached.borrow()
    }

    /// The entries of `account_id` after `applied` that the follower holds, in order, or
    /// `None` when the state cannot be brought up to the head from memory (entries were
    /// dropped, or the state was loaded before the follower started).
    pub fn take_after(&self, account_id: u64, applied: u64) -> Option<Vec<Pending>> {
        let mut accounts = self.accounts.lock().expect("follower lock");
        let Some(account) = accounts.get_mut(&account_id) else {
            // No entry since the follower started, and every state is loaded after it started:
            // the state is current.
            return Some(Vec::new());
        };
        if applied >= account.head {
            account.pending = Some(Vec::new());
            return Some(Vec::new());
        }
        let pending = account.pending.as_mut()?;
        pending.retain(|p| p.sequence > applied);
        // The kept entries must start right after what the state applied.
        match pending.first() {
            Some(first) if first.previous == applied => Some(pending.clone()),
            _ => None,
        }
    }

    /// Records that the state of `account_id` has applied everything up to `applied`, after a
    /// read of the log: entries kept from before are dropped, later ones are kept.
    pub fn applied(&self, account_id: u64, applied: u64) {
        let mut accounts = self.accounts.lock().expect("follower lock");
        let account = accounts.entry(account_id).or_default();
        account.head = account.head.max(applied);
        match &mut account.pending {
            Some(pending) => pending.retain(|p| p.sequence > applied),
            None => account.pending = (applied >= account.head).then(Vec::new),
        }
    }

    /// Forgets an account (dropped from memory, or deleted).
    pub fn forget(&self, account_id: u64) {
        if let Some(account) = self.accounts.lock().expect("follower lock").get_mut(&account_id) {
            account.pending = None;
        }
    }

    fn received(&self, account_id: u64, sequence: u64, payload: Bytes, keep: bool) {
        // Nobody listening (no index) is not an error.
        let _ = self.changes.send(account_id);
        {
            let mut accounts = self.accounts.lock().expect("follower lock");
            let account = accounts.entry(account_id).or_default();
            let previous = account.head;
            if sequence <= previous {
                // Already applied by this replica's own write or a read of the log.
                drop(accounts);
                self.advance(sequence);
                return;
            }
            account.head = sequence;
            match (&mut account.pending, keep) {
                (Some(pending), true) if pending.len() < MAX_PENDING => {
                    pending.push(Pending { previous, sequence, payload });
                }
                (pending, _) => *pending = None,
            }
        }
        self.advance(sequence);
    }

    fn advance(&self, sequence: u64) {
        self.reached.send_if_modified(|r| {
            let advanced = sequence > *r;
            *r = (*r).max(sequence);
            advanced
        });
    }
}

async fn subscribe(
    stream: &stream::Stream,
    subject_prefix: &str,
    from: u64,
) -> crate::Result<async_nats::jetstream::consumer::pull::Ordered> {
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: format!("{subject_prefix}.*"),
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: from },
            max_expires: super::FEED_PULL_EXPIRES,
            ..Default::default()
        })
        .await
        .map_err(|e| crate::MailboxError::nats("following the mail log", e))?;
    consumer.messages().await.map_err(|e| crate::MailboxError::nats("following the mail log", e))
}

/// The follower's task: receives entries until the store is dropped, re-subscribing after the
/// last received sequence when the subscription breaks.
async fn run(
    follower: std::sync::Weak<Follower>,
    stream: stream::Stream,
    subject_prefix: String,
    mut messages: async_nats::jetstream::consumer::pull::Ordered,
    cached: Arc<dyn Fn(u64) -> bool + Send + Sync>,
) {
    loop {
        while let Some(message) = messages.next().await {
            let Some(f) = follower.upgrade() else { return };
            let message = match message {
                Ok(m) => m,
                Err(error) => {
                    tracing::warn!(%error, "the mail log subscription broke; reads go to the log until it is back");
                    f.healthy.store(false, Ordering::Release);
                    break;
                }
            };
            let Ok(info) = message.info() else { continue };
            let sequence = info.stream_sequence;
            let Some(account_id) = message.subject.rsplit('.').next().and_then(|id| id.parse::<u64>().ok()) else {
                continue;
            };
            f.received(account_id, sequence, message.payload.clone(), cached(account_id));
        }
        // Broken or ended: subscribe again after what was received.
        loop {
            let Some(f) = follower.upgrade() else { return };
            f.healthy.store(false, Ordering::Release);
            let from = f.reached() + 1;
            drop(f);
            match subscribe(&stream, &subject_prefix, from).await {
                Ok(m) => {
                    messages = m;
                    if let Some(f) = follower.upgrade() {
                        f.healthy.store(true, Ordering::Release);
                    }
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot follow the mail log; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follower(started_at: u64) -> Follower {
        Follower {
            accounts: Mutex::default(),
            reached: tokio::sync::watch::channel(started_at - 1).0,
            healthy: AtomicBool::new(true),
            changes: tokio::sync::broadcast::channel(16).0,
        }
    }

    #[test]
    fn kept_entries_bring_a_state_to_the_head() {
        let f = follower(10);
        // A state loaded at 12 after the follower started, then entries 15 and 20 arrive.
        f.applied(7, 12);
        f.received(7, 15, Bytes::from_static(b"a"), true);
        f.received(9, 16, Bytes::from_static(b"other account"), true);
        f.received(7, 20, Bytes::from_static(b"b"), true);
        let pending = f.take_after(7, 12).expect("from memory");
        assert_eq!(pending.iter().map(|p| (p.previous, p.sequence)).collect::<Vec<_>>(), [(12, 15), (15, 20)]);
        // A writer applied 15 itself: only 20 is left.
        let pending = f.take_after(7, 15).expect("from memory");
        assert_eq!(pending.iter().map(|p| p.sequence).collect::<Vec<_>>(), [20]);
        f.applied(7, 20);
        assert!(f.take_after(7, 20).unwrap().is_empty());
        assert_eq!(f.reached(), 20);
    }

    #[test]
    fn a_gap_means_reading_the_log() {
        let f = follower(10);
        // The state applied 12, but the follower's entries for the account start after 14
        // (it knew the account's head only from an entry it did not keep).
        f.received(7, 14, Bytes::new(), false);
        f.received(7, 18, Bytes::new(), true);
        assert!(f.take_after(7, 12).is_none());
        // After a read of the log up to 18 the account is followed from memory again.
        f.applied(7, 18);
        f.received(7, 22, Bytes::new(), true);
        assert_eq!(f.take_after(7, 18).unwrap().len(), 1);
        // Too many entries without a reader: dropped, and the reader goes to the log.
        for s in 23..23 + MAX_PENDING as u64 {
            f.received(7, s, Bytes::new(), true);
        }
        assert!(f.take_after(7, 18).is_none());
    }

    #[test]
    fn an_account_without_entries_is_current() {
        let f = follower(10);
        assert!(f.take_after(3, 4).unwrap().is_empty(), "no entry since the follower started");
        assert!(f.take_after(3, 0).unwrap().is_empty(), "a new account");
        // This replica's own write at 25 is known before the follower receives it.
        f.applied(3, 25);
        f.received(3, 25, Bytes::new(), true);
        f.received(3, 27, Bytes::new(), true);
        assert_eq!(
            f.take_after(3, 25).unwrap().iter().map(|p| (p.previous, p.sequence)).collect::<Vec<_>>(),
            [(25, 27)]
        );
    }

    #[tokio::test]
    async fn reaching_a_position() {
        let f = follower(10);
        assert!(f.reach(9).await);
        f.received(1, 11, Bytes::new(), false);
        assert!(f.reach(11).await);
        assert!(!f.reach(12).await, "not received within the wait");
        f.healthy.store(false, Ordering::Release);
        assert!(!f.reach(11).await, "unhealthy");
    }
}
