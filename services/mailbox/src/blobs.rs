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

#[derive(Debug, Clone)]
pub struct BlobStore {
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
        Ok(Self { store: Arc::new(fs), local_root: Some(root) })
    }

    /// Bodies in any object store (S3 and friends).
    pub fn remote(store: Arc<dyn ObjectStore>) -> Self {
        Self { store, local_root: None }
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

    pub async fn get(&self, id: &str) -> Result<Bytes> {
        let got = self.store.get(&Self::path(id)).await.map_err(Self::err(format!("reading body {id}")))?;
        got.bytes().await.map_err(Self::err(format!("reading body {id}")))
    }

    /// Reads `start..end` of a body (a FETCH BODY[n] or partial fetch).
    pub async fn get_range(&self, id: &str, start: u64, end: u64) -> Result<Bytes> {
        if start >= end {
            return Ok(Bytes::new());
        }
        self.store.get_range(&Self::path(id), start..end).await.map_err(Self::err(format!("reading body {id}")))
    }

    pub async fn delete(&self, id: &str) -> Result<()> {
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
