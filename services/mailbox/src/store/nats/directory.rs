//! A replica's copy of the directory entries it has read (domains, addresses, aliases,
//! account records), kept current by one watch on the directory bucket, so that resolving a
//! recipient or checking a login needs no round trip to NATS.
//!
//! The cache is filled lazily: a key is read from NATS the first time it is asked for, and
//! from then on every change to it arrives through the watch. Three rules keep it from ever
//! holding a value older than one the watch has already delivered:
//!
//! - A value read from NATS is kept only when the read started after the current watch was
//!   established (the *generation* it saw is still current). A change made between an older
//!   read and the watch's start would otherwise never arrive to replace it.
//! - A value replaces another only when its revision is higher, so a slow read cannot undo a
//!   change the watch delivered meanwhile; deletions are kept as tombstones for that reason.
//! - While the watch is down (starting, failed, or the client reconnecting) nothing is served
//!   from or added to the cache, and it is emptied when the watch starts again.
//!
//! What it deliberately does not do: cache absence. A key that is not found is asked of NATS
//! each time, so an account created through another replica is found at once. A change made
//! through another replica (a password, a suspension, a deletion) is seen here as soon as the
//! watch delivers it, a few milliseconds later on a healthy cluster.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::StreamExt;

/// Keys kept at most; past this the cache starts again empty (and fills as keys are read).
const MAX_KEYS: usize = 200_000;

#[derive(Debug)]
struct Cached {
    revision: u64,
    /// None for a deleted key: kept only so that an older value cannot come back.
    value: Option<Bytes>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Changes each time the watch starts or stops, or the cache is emptied.
    generation: u64,
    /// Whether the watch is running: only then is anything served or kept.
    live: bool,
    entries: HashMap<String, Cached>,
}

impl Inner {
    fn keep(&mut self, key: &str, revision: u64, value: Option<Bytes>) {
        if self.entries.len() >= MAX_KEYS && !self.entries.contains_key(key) {
            self.entries.clear();
            self.generation += 1;
        }
        match self.entries.get_mut(key) {
            Some(c) if c.revision >= revision => {}
            Some(c) => *c = Cached { revision, value },
            None => {
                self.entries.insert(key.to_string(), Cached { revision, value });
            }
        }
    }

    fn reset(&mut self, live: bool) {
        self.entries.clear();
        self.generation += 1;
        self.live = live;
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct DirectoryCache {
    inner: Mutex<Inner>,
}

impl DirectoryCache {
    /// Starts watching `bucket`; the watch starts again after an error or a reconnect of the
    /// client (`connections` changes).
    pub fn start(bucket: kv::Store, connections: tokio::sync::watch::Receiver<u64>) -> Arc<Self> {
        let cache = Arc::new(Self::default());
        let weak = Arc::downgrade(&cache);
        tokio::spawn(async move {
            let mut connections = connections;
            loop {
                connections.borrow_and_update();
                let watch = bucket.watch_all().await;
                let Some(cache) = weak.upgrade() else { return };
                let mut watch = match watch {
                    Ok(w) => w,
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot watch the directory; reading it from NATS meanwhile");
                        drop(cache);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                cache.lock().reset(true);
                drop(cache);
                loop {
                    let next = tokio::select! {
                        next = watch.next() => next,
                        changed = connections.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            tracing::debug!("NATS reconnected; watching the directory again");
                            None
                        }
                    };
                    let Some(cache) = weak.upgrade() else { return };
                    match next {
                        Some(Ok(entry)) => {
                            let value = matches!(entry.operation, kv::Operation::Put).then_some(entry.value);
                            cache.lock().keep(&entry.key, entry.revision, value);
                        }
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "the directory watch failed; starting it again");
                            cache.lock().reset(false);
                            break;
                        }
                        None => {
                            cache.lock().reset(false);
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        cache
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value of `key`, from the cache when it holds it, otherwise read from `bucket` (and
    /// kept when it may be).
    pub async fn get(&self, bucket: &kv::Store, key: &str) -> Result<Option<Bytes>, kv::EntryError> {
        let generation = {
            let inner = self.lock();
            if let Some(Cached { value: Some(v), .. }) = inner.entries.get(key).filter(|_| inner.live) {
                return Ok(Some(v.clone()));
            }
            inner.live.then_some(inner.generation)
        };
        let entry = bucket.entry(key).await?;
        let Some(entry) = entry else { return Ok(None) };
        let value = matches!(entry.operation, kv::Operation::Put).then_some(entry.value);
        if let Some(generation) = generation {
            let mut inner = self.lock();
            if inner.live && inner.generation == generation {
                inner.keep(key, entry.revision, value.clone());
            }
        }
        Ok(value)
    }

    /// Records a value this replica wrote, at the revision NATS gave it, so that the next read
    /// here sees it without waiting for the watch.
    pub fn wrote(&self, key: &str, revision: u64, value: Bytes) {
        let mut inner = self.lock();
        if inner.live {
            inner.keep(key, revision, Some(value));
        }
    }

    /// Records that this replica deleted `key`. The deletion's own revision is not known, so
    /// the key is marked deleted above every revision: from then on it is read from NATS each
    /// time (until the watch starts again), since neither a read already under way nor a
    /// change the watch has not delivered yet can be told apart from what came after.
    pub fn deleted(&self, key: &str) {
        let mut inner = self.lock();
        inner.entries.insert(key.to_string(), Cached { revision: u64::MAX, value: None });
    }
}
