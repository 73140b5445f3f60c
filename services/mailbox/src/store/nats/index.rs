//! The full-text index's coordination on NATS ([`crate::fts::shared`]): a bucket of writer
//! leases and a bucket of manifests, both changed only by compare-and-set.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;

use super::{MAX_ATTEMPTS, conflict};
use crate::{MailboxError, Result, fts::shared::IndexCoordination};

#[derive(Debug)]
pub struct NatsIndexCoordination {
    leases: kv::Store,
    manifests: kv::Store,
}

fn boxed(e: impl std::error::Error + Send + Sync + 'static) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(e)
}

fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl NatsIndexCoordination {
    pub async fn open(js: &jetstream::Context, prefix: &str, replicas: usize) -> Result<Self> {
        let mut stores = Vec::new();
        for name in ["index_leases", "index"] {
            let bucket = format!("{prefix}_{name}");
            let store = match js.get_key_value(&bucket).await {
                Ok(s) => s,
                Err(_) => js
                    .create_key_value(kv::Config {
                        bucket,
                        history: 1,
                        storage: stream::StorageType::File,
                        num_replicas: replicas,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| MailboxError::nats("creating a KV bucket", e))?,
            };
            stores.push(store);
        }
        let manifests = stores.pop().expect("two buckets");
        let leases = stores.pop().expect("two buckets");
        Ok(Self { leases, manifests })
    }
}

/// A lease's value: the expiry in milliseconds since the epoch, then the holder's name.
fn lease_value(until: u64, holder: &str) -> Bytes {
    let mut v = until.to_be_bytes().to_vec();
    v.extend_from_slice(holder.as_bytes());
    Bytes::from(v)
}

fn parse_lease(value: &[u8]) -> Option<(u64, &[u8])> {
    let (until, holder) = value.split_at_checked(8)?;
    Some((u64::from_be_bytes(until.try_into().ok()?), holder))
}

#[async_trait::async_trait]
impl IndexCoordination for NatsIndexCoordination {
    async fn lease(&self, account: u64, holder: &str, ttl: Duration) -> Result<bool> {
        let key = account.to_string();
        for _ in 0..MAX_ATTEMPTS {
            let now = now_millis();
            let value = lease_value(now + ttl.as_millis() as u64, holder);
            let entry = self.leases.entry(key.clone()).await.map_err(|e| MailboxError::nats("reading a lease", e))?;
            let written = match entry {
                Some(entry) if !entry.value.is_empty() => {
                    if let Some((until, current)) = parse_lease(&entry.value)
                        && current != holder.as_bytes()
                        && until > now
                    {
                        return Ok(false);
                    }
                    self.leases.update(&key, value, entry.revision).await.map(drop).map_err(boxed)
                }
                _ => self.leases.create(&key, value).await.map(drop).map_err(boxed),
            };
            match written {
                Ok(()) => return Ok(true),
                Err(e) if conflict::lost_race(&*e) => continue,
                Err(e) => return Err(MailboxError::nats("writing a lease", e)),
            }
        }
        Ok(false)
    }

    async fn manifest(&self, account: u64) -> Result<Option<(Bytes, u64)>> {
        let entry =
            self.manifests.entry(account.to_string()).await.map_err(|e| MailboxError::nats("reading a manifest", e))?;
        Ok(entry.filter(|e| !e.value.is_empty()).map(|e| (e.value, e.revision)))
    }

    async fn put_manifest(&self, account: u64, manifest: Bytes, expected: u64) -> Result<Option<u64>> {
        let key = account.to_string();
        let written = if expected == 0 {
            self.manifests.create(&key, manifest).await.map_err(boxed)
        } else {
            self.manifests.update(&key, manifest, expected).await.map_err(boxed)
        };
        match written {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if conflict::lost_race(&*e) => Ok(None),
            Err(e) => Err(MailboxError::nats("publishing a manifest", e)),
        }
    }
}
