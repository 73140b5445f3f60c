//! Message bodies: immutable objects named by the SHA-256 of their content, kept in any
//! object_store backend (a local directory in the embedded mode, S3 in the distributed one).

use std::{path::PathBuf, sync::Arc};

use bytes::Bytes;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, local::LocalFileSystem, path::Path};
use sha2::{Digest, Sha256};

use crate::error::{MailboxError, Result};

/// The content hash that names a body: lower-case hex SHA-256.
pub fn blob_id(content: &[u8]) -> String {
    hex::encode(Sha256::digest(content))
}

/// Bodies are immutable and named by their content, so a cache of recently read ones can never
/// be stale. It holds small bodies only, up to a byte budget, and drops the least recently
/// used first. It is filled by reads, not by deliveries, so ingest does not grow memory.
#[derive(Debug, Default)]
struct ReadCache {
    budget: usize,
    used: usize,
    tick: u64,
    entries: std::collections::HashMap<String, (Bytes, u64)>,
}

/// Largest body the read cache keeps.
const CACHE_MAX_ITEM: usize = 256 * 1024;

impl ReadCache {
    fn get(&mut self, id: &str) -> Option<Bytes> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(id).map(|(b, t)| {
            *t = tick;
            b.clone()
        })
    }

    fn put(&mut self, id: &str, body: &Bytes) {
        if body.len() > CACHE_MAX_ITEM || body.len() > self.budget || self.entries.contains_key(id) {
            return;
        }
        while self.used + body.len() > self.budget {
            // Evicting by scan is linear, but it runs only when the cache is full and the cache
            // holds at most a few thousand entries.
            let Some(oldest) = self.entries.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| k.clone()) else { break };
            if let Some((b, _)) = self.entries.remove(&oldest) {
                self.used -= b.len();
            }
        }
        self.tick += 1;
        self.used += body.len();
        self.entries.insert(id.to_string(), (body.clone(), self.tick));
    }

    fn remove(&mut self, id: &str) {
        if let Some((b, _)) = self.entries.remove(id) {
            self.used -= b.len();
        }
    }
}

#[derive(Debug, Clone)]
pub struct BlobStore {
    cache: Arc<std::sync::Mutex<ReadCache>>,
    store: Arc<dyn ObjectStore>,
    /// Set for the local file system, where object_store renames a temporary file into place
    /// but does not fsync it; we do, so an acknowledged body survives a machine crash too.
    local_root: Option<PathBuf>,
}

impl BlobStore {
    /// Bodies under `root` on the local file system.
    pub fn local(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| MailboxError::Blob {
            context: format!("creating {}", root.display()),
            source: object_store::Error::Generic { store: "local", source: Box::new(e) },
        })?;
        let fs = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| MailboxError::Blob { context: format!("opening {}", root.display()), source: e })?;
        Ok(Self { store: Arc::new(fs), local_root: Some(root), cache: Default::default() })
    }

    /// Bodies in any object store (S3 and friends).
    pub fn remote(store: Arc<dyn ObjectStore>) -> Self {
        Self { store, local_root: None, cache: Default::default() }
    }

    fn path(id: &str) -> Path {
        // Two levels of fan-out keep directories small on file systems and spread S3 prefixes.
        Path::from(format!("{}/{}/{}", &id[..2], &id[2..4], id))
    }

    fn err(context: String) -> impl FnOnce(object_store::Error) -> MailboxError {
        move |source| MailboxError::Blob { context, source }
    }

    pub async fn put(&self, id: &str, content: Bytes) -> Result<()> {
        let path = Self::path(id);
        self.store
            .put(&path, PutPayload::from_bytes(content))
            .await
            .map_err(Self::err(format!("storing body {id}")))?;
        if let Some(root) = &self.local_root {
            let file = root.join(path.as_ref());
            tokio::task::spawn_blocking(move || std::fs::File::open(&file)?.sync_all())
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
                .map_err(|e| MailboxError::Blob {
                    context: format!("syncing body {id}"),
                    source: object_store::Error::Generic { store: "local", source: Box::new(e) },
                })?;
        }
        Ok(())
    }

    /// Keeps up to `bytes` of recently read small bodies in memory (0 turns the cache off).
    pub fn with_read_cache(self, bytes: usize) -> Self {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).budget = bytes;
        self
    }

    pub async fn get(&self, id: &str) -> Result<Bytes> {
        if let Some(hit) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
            return Ok(hit);
        }
        let got = self.store.get(&Self::path(id)).await.map_err(Self::err(format!("reading body {id}")))?;
        let body = got.bytes().await.map_err(Self::err(format!("reading body {id}")))?;
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).put(id, &body);
        Ok(body)
    }

    /// Reads `start..end` of a body (a FETCH BODY[n] or partial fetch).
    pub async fn get_range(&self, id: &str, start: u64, end: u64) -> Result<Bytes> {
        if start >= end {
            return Ok(Bytes::new());
        }
        if let Some(hit) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(id)
            && end as usize <= hit.len()
        {
            return Ok(hit.slice(start as usize..end as usize));
        }
        self.store.get_range(&Self::path(id), start..end).await.map_err(Self::err(format!("reading body {id}")))
    }

    pub async fn delete(&self, id: &str) -> Result<()> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        match self.store.delete(&Self::path(id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Self::err(format!("deleting body {id}"))(e)),
        }
    }

    pub async fn exists(&self, id: &str) -> Result<bool> {
        match self.store.head(&Self::path(id)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(Self::err(format!("checking body {id}"))(e)),
        }
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_within_budget() {
        let mut c = ReadCache { budget: 10, ..Default::default() };
        c.put("a", &Bytes::from_static(b"aaaa"));
        c.put("b", &Bytes::from_static(b"bbbb"));
        assert!(c.get("a").is_some());
        c.put("c", &Bytes::from_static(b"cccc"));
        assert!(c.get("b").is_none(), "b was least recently used");
        assert!(c.get("a").is_some() && c.get("c").is_some());
        assert!(c.used <= 10);
        c.put("big", &Bytes::from(vec![0u8; 11]));
        assert!(c.get("big").is_none(), "larger than the budget");
        c.remove("a");
        assert_eq!(c.used, 4);
    }
}
