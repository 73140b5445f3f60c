//! Message bodies: immutable objects named by the SHA-256 of their content, kept in any
//! object_store backend: a local directory in the embedded mode, or any S3-compatible store
//! (AWS S3, SeaweedFS, MinIO, Ceph, R2, ...) in the distributed one.
//!
//! Where bodies go is a [`BlobLocation`], parsed from a URL (`s3://bucket/prefix`,
//! `file:///path` or a plain path). For S3 the bucket and prefix come from the URL and the
//! rest ([`S3Config`]: endpoint, region, keys, plain HTTP, path-style requests) from the
//! configuration, falling back on the standard `AWS_*` environment variables.
//!
//! Every failure of the store is a [`MailboxError::Blob`], which callers see as "unavailable"
//! (SMTP 451, IMAP `NO [UNAVAILABLE]`): the client tries again later, and nothing was
//! acknowledged. Requests to S3 have a short timeout and a small retry budget, so an S3 outage
//! turns into that answer within seconds rather than minutes of retries.

use std::{fmt, path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use object_store::{
    BackoffConfig, ClientConfigKey, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
    WriteMultipart,
    aws::{AmazonS3Builder, AmazonS3ConfigKey},
    local::LocalFileSystem,
    path::Path,
    prefix::PrefixStore,
};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::error::{MailboxError, Result};

/// Bodies larger than this are uploaded in parts (S3 multipart upload), so that one request
/// never carries a whole large message and a failed part is retried alone.
pub const MULTIPART_THRESHOLD: usize = 8 * 1024 * 1024;

/// The size of every part of a multipart upload but the last. S3 refuses parts smaller than
/// 5 MiB (except the last one).
pub const MULTIPART_PART_BYTES: usize = 8 * 1024 * 1024;

/// How many parts of one body are uploaded at the same time.
const MULTIPART_CONCURRENCY: usize = 4;

/// The content hash that names a body: lower-case hex SHA-256.
pub fn blob_id(content: &[u8]) -> String {
    hex::encode(Sha256::digest(content))
}

/// Where bodies are kept.
#[derive(Debug, Clone)]
pub enum BlobLocation {
    /// A directory on the local file system.
    Local(PathBuf),
    /// A bucket (and a key prefix in it) of an S3-compatible store.
    S3(S3Config),
}

impl BlobLocation {
    /// Parses `s3://bucket[/prefix]`, `file:///absolute/path` or a plain path. An S3 location
    /// gets the default [`S3Config`] settings; the caller fills in the rest.
    pub fn parse(url: &str) -> Result<Self> {
        let invalid = |detail: String| MailboxError::invalid("blob store URL", detail);
        let url = url.trim();
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid(format!("{url:?} names no bucket (s3://bucket or s3://bucket/prefix)")));
            }
            let prefix = prefix.trim_matches('/').to_string();
            return Ok(Self::S3(S3Config { bucket: bucket.to_string(), prefix, ..S3Config::default() }));
        }
        if let Some(path) = url.strip_prefix("file://") {
            // file://host/path names a file on another host; we only have this one.
            if !path.starts_with('/') {
                return Err(invalid(format!("{url:?}: a file URL takes an absolute path (file:///var/lib/tern)")));
            }
            return Ok(Self::Local(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = url.split_once("://") {
            return Err(invalid(format!("{url:?}: unsupported scheme {scheme:?} (use s3://, file:// or a path)")));
        }
        if url.is_empty() {
            return Err(invalid("empty (use s3://bucket, file:///path or a path)".into()));
        }
        Ok(Self::Local(PathBuf::from(url)))
    }
}

impl fmt::Display for BlobLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(path) => write!(f, "{}", path.display()),
            Self::S3(s3) => {
                write!(f, "s3://{}", s3.bucket)?;
                if !s3.prefix.is_empty() {
                    write!(f, "/{}", s3.prefix)?;
                }
                if let Some(endpoint) = &s3.endpoint {
                    write!(f, " at {endpoint}")?;
                }
                Ok(())
            }
        }
    }
}

/// How to reach an S3 bucket. Settings left unset come from the standard AWS environment
/// variables (`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`, `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`, ...), and without
/// keys from the usual credential chain (web identity, ECS, instance metadata).
#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    /// Keys start with this, without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
    /// For stores other than AWS, e.g. `http://seaweedfs:8333`.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<SecretString>,
    /// Whether plain `http://` is allowed. Unset: allowed exactly when the endpoint (this one or
    /// `AWS_ENDPOINT`) is an `http://` URL, since whoever wrote that URL chose plain HTTP.
    pub allow_http: Option<bool>,
    /// Virtual-hosted-style requests (`https://bucket.host/key`) instead of path-style
    /// (`https://host/bucket/key`). Unset: path-style, which every S3-compatible store serves.
    pub virtual_hosted_style_request: Option<bool>,
    /// The longest one request may take, a part of a multipart upload included.
    pub request_timeout: Duration,
    /// The longest connecting may take.
    pub connect_timeout: Duration,
    /// How many times a failed request is tried again (connection errors, 5xx, 429).
    pub max_retries: usize,
    /// No retry starts later than this after the first attempt.
    pub retry_timeout: Duration,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            prefix: String::new(),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            allow_http: None,
            virtual_hosted_style_request: None,
            // Long enough for an 8 MiB part on a slow link; a store that accepts connections
            // but never answers costs one request this long, since a retry would start after
            // the retry timeout.
            request_timeout: Duration::from_secs(30),
            // A store that is down refuses connections at once; one that is unreachable (a
            // black-holed address) costs the connect timeout per attempt.
            connect_timeout: Duration::from_secs(2),
            // object_store's defaults are 10 retries within 3 minutes, which holds an SMTP
            // client and a gRPC call for minutes; a few quick retries ride out a restart of
            // one S3 node without that.
            max_retries: 2,
            retry_timeout: Duration::from_secs(5),
        }
    }
}

impl S3Config {
    fn build(&self) -> Result<Arc<dyn ObjectStore>> {
        // reqwest is built with rustls and no provider of its own (to keep aws-lc-rs out of the
        // build); it panics without a process default. The binary installs it at start, this
        // covers every other caller (tests, tools).
        tern_runtime::tls::install_crypto_provider();
        let millis = |d: Duration| format!("{}ms", d.as_millis());
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&self.bucket)
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), millis(self.request_timeout))
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout), millis(self.connect_timeout))
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(1),
                    base: 2.0,
                },
                max_retries: self.max_retries,
                retry_timeout: self.retry_timeout,
            });
        if let Some(endpoint) = &self.endpoint {
            // Both keys: object_store prefers AWS_ENDPOINT_URL_S3 from the environment over the
            // plain endpoint, and the configuration must win over the environment.
            builder = builder.with_endpoint(endpoint).with_config(AmazonS3ConfigKey::S3Endpoint, endpoint);
        }
        if let Some(region) = &self.region {
            builder = builder.with_region(region);
        }
        if let Some(key) = &self.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &self.secret_access_key {
            builder = builder.with_secret_access_key(secret.expose_secret());
        }
        // The endpoint in effect: ours, or one from the environment (AWS_ENDPOINT_URL_S3 wins
        // over AWS_ENDPOINT and AWS_ENDPOINT_URL).
        let plain_endpoint = [AmazonS3ConfigKey::S3Endpoint, AmazonS3ConfigKey::Endpoint]
            .iter()
            .find_map(|key| builder.get_config_value(key))
            .is_some_and(|e| e.starts_with("http://"));
        match self.allow_http {
            Some(allow) => {
                if plain_endpoint && !allow {
                    return Err(MailboxError::invalid(
                        "S3 settings",
                        "the endpoint is an http:// URL but allow_http is false",
                    ));
                }
                builder = builder.with_allow_http(allow);
            }
            // An http:// endpoint is a choice of plain HTTP (a store inside the cluster), unless
            // AWS_ALLOW_HTTP says otherwise (from_env applied it already).
            None if plain_endpoint && std::env::var_os("AWS_ALLOW_HTTP").is_none() => {
                builder = builder.with_allow_http(true);
            }
            None => {}
        }
        if let Some(virtual_hosted) = self.virtual_hosted_style_request {
            builder = builder.with_virtual_hosted_style_request(virtual_hosted);
        }
        let s3 = builder
            .build()
            .map_err(|source| MailboxError::blob("s3", format!("configuring s3://{}", self.bucket), source))?;
        Ok(if self.prefix.is_empty() { Arc::new(s3) } else { Arc::new(PrefixStore::new(s3, self.prefix.as_str())) })
    }
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

/// The body store: put, whole and range reads, delete, each by content id.
#[derive(Debug, Clone)]
pub struct BlobStore {
    cache: Arc<std::sync::Mutex<ReadCache>>,
    store: Arc<dyn ObjectStore>,
    /// Set for the local file system, where object_store renames a temporary file into place
    /// but does not fsync it; we do, so an acknowledged body survives a machine crash too.
    local_root: Option<PathBuf>,
    /// Where the bodies are, for people: a directory, or `s3://bucket/prefix at endpoint`.
    location: String,
}

impl BlobStore {
    /// Opens the store at `location`. Nothing is read or written yet: [`BlobStore::check`]
    /// does that.
    pub fn open(location: &BlobLocation) -> Result<Self> {
        match location {
            BlobLocation::Local(root) => Self::local(root.clone()),
            BlobLocation::S3(s3) => {
                let mut store = Self::remote(s3.build()?);
                store.location = location.to_string();
                Ok(store)
            }
        }
    }

    /// Bodies under `root` on the local file system.
    pub fn local(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| {
            let source = object_store::Error::Generic { store: "local", source: Box::new(e) };
            MailboxError::blob("local", format!("creating {}", root.display()), source)
        })?;
        let fs = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| MailboxError::blob("local", format!("opening {}", root.display()), e))?;
        let location = root.display().to_string();
        Ok(Self { store: Arc::new(fs), local_root: Some(root), cache: Default::default(), location })
    }

    /// Bodies in any object store.
    pub fn remote(store: Arc<dyn ObjectStore>) -> Self {
        let location = store.to_string();
        Self { store, local_root: None, cache: Default::default(), location }
    }

    /// Where the bodies are: a directory, or `s3://bucket/prefix at endpoint`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Writes and reads back the empty body, so that a wrong endpoint, bucket or key shows at
    /// start rather than at the first delivery. The empty body is a body like any other
    /// (named by its hash), so the probe leaves nothing foreign in the store.
    pub async fn check(&self) -> Result<()> {
        let id = blob_id(b"");
        self.put(&id, Bytes::new()).await?;
        self.store.head(&Self::path(&id)).await.map_err(self.err(format!("reading body {id}")))?;
        Ok(())
    }

    /// The ids of the bodies stored before `before` (Unix seconds), for garbage collection by
    /// mark-and-sweep. Objects that are not bodies (not named by a content hash) are left out.
    pub async fn list_older_than(&self, before: i64) -> Result<Vec<String>> {
        use futures::TryStreamExt;
        let objects: Vec<object_store::ObjectMeta> =
            self.store.list(None).try_collect().await.map_err(self.err("listing bodies".to_string()))?;
        Ok(objects
            .into_iter()
            .filter(|o| o.last_modified.timestamp() < before)
            .filter_map(|o| o.location.filename().map(str::to_string))
            .filter(|name| name.len() >= 64 && name[..64].bytes().all(|b| b.is_ascii_hexdigit()))
            .collect())
    }

    fn path(id: &str) -> Path {
        // Two levels of fan-out keep directories small on file systems and spread S3 prefixes.
        Path::from(format!("{}/{}/{}", &id[..2], &id[2..4], id))
    }

    /// The `backend` label of `tern_storage_errors_total`: `local` for a directory, `s3` for
    /// any object store (S3 and its look-alikes).
    fn backend(&self) -> &'static str {
        if self.local_root.is_some() { "local" } else { "s3" }
    }

    fn err(&self, context: String) -> impl FnOnce(object_store::Error) -> MailboxError + use<> {
        let backend = self.backend();
        move |source| MailboxError::blob(backend, context, source)
    }

    /// Stores a body under `id` and returns once it is durable: S3 answers a PUT (or completes
    /// a multipart upload) only once the object is stored, and on the local file system the
    /// file is fsynced. Putting an id that exists writes the same bytes again, which is
    /// harmless: the content is the name.
    #[tracing::instrument(name = "blob.put", skip_all, fields(id = id, size = content.len()))]
    pub async fn put(&self, id: &str, content: Bytes) -> Result<()> {
        let path = Self::path(id);
        if content.len() > MULTIPART_THRESHOLD {
            self.put_multipart(&path, content).await
        } else {
            self.store.put(&path, PutPayload::from_bytes(content)).await.map(drop)
        }
        .map_err(self.err(format!("storing body {id}")))?;
        if let Some(root) = &self.local_root {
            let file = root.join(path.as_ref());
            tokio::task::spawn_blocking(move || std::fs::File::open(&file)?.sync_all())
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
                .map_err(|e| {
                    let source = object_store::Error::Generic { store: "local", source: Box::new(e) };
                    MailboxError::blob("local", format!("syncing body {id}"), source)
                })?;
        }
        Ok(())
    }

    /// Uploads a large body in [`MULTIPART_PART_BYTES`] parts, a few at a time. The parts are
    /// slices of `content`, not copies.
    async fn put_multipart(&self, path: &Path, mut content: Bytes) -> object_store::Result<()> {
        let upload = self.store.put_multipart(path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART_BYTES);
        while !content.is_empty() {
            if let Err(e) = writer.wait_for_capacity(MULTIPART_CONCURRENCY).await {
                // Best effort: parts of an upload that is neither completed nor aborted take
                // space until a lifecycle rule of the bucket removes them.
                let _ = writer.abort().await;
                return Err(e);
            }
            writer.put(content.split_to(content.len().min(MULTIPART_PART_BYTES)));
        }
        // finish() aborts the upload itself when a part or the completion fails.
        writer.finish().await.map(drop)
    }

    /// Keeps up to `bytes` of recently read small bodies in memory (0 turns the cache off).
    pub fn with_read_cache(self, bytes: usize) -> Self {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).budget = bytes;
        self
    }

    /// Reads a whole body.
    #[tracing::instrument(name = "blob.get", skip_all, fields(id = id))]
    pub async fn get(&self, id: &str) -> Result<Bytes> {
        if let Some(hit) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
            return Ok(hit);
        }
        let got = self.store.get(&Self::path(id)).await.map_err(self.err(format!("reading body {id}")))?;
        let body = got.bytes().await.map_err(self.err(format!("reading body {id}")))?;
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).put(id, &body);
        Ok(body)
    }

    /// Reads `start..end` of a body (a FETCH BODY[n] or partial fetch) with a range request,
    /// so only those bytes travel. A range that runs past the end of the body is cut at the
    /// end; one that starts at or after the end is empty.
    #[tracing::instrument(name = "blob.get_range", skip_all, fields(id = id, start = start, end = end))]
    pub async fn get_range(&self, id: &str, start: u64, end: u64) -> Result<Bytes> {
        if start >= end {
            return Ok(Bytes::new());
        }
        if let Some(hit) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
            let len = hit.len() as u64;
            return Ok(hit.slice(start.min(len) as usize..end.min(len) as usize));
        }
        let path = Self::path(id);
        // get_opts cuts a range that runs past the end on every backend (get_range does not on
        // the local file system). An end past what any object can hold means "to the end"
        // (`bytes=start-`): S3 servers written in Go parse range bounds as signed 64-bit
        // numbers and refuse larger ones.
        let range = if end > i64::MAX as u64 { GetRange::Offset(start) } else { GetRange::Bounded(start..end) };
        let options = GetOptions { range: Some(range), ..GetOptions::default() };
        let read = async { self.store.get_opts(&path, options).await?.bytes().await };
        match read.await {
            Ok(bytes) => Ok(bytes),
            Err(e @ object_store::Error::NotFound { .. }) => Err(self.err(format!("reading body {id}"))(e)),
            Err(e) => {
                // Every backend refuses a range that starts at or after the end, each with its
                // own error; the size tells that case apart from a failure of the store.
                match self.store.head(&path).await {
                    Ok(meta) if start >= meta.size => Ok(Bytes::new()),
                    _ => Err(self.err(format!("reading body {id}"))(e)),
                }
            }
        }
    }

    /// Deletes a body. A body that is not there is not an error: garbage collection may have
    /// deleted it in a run that failed before it could record that.
    pub async fn delete(&self, id: &str) -> Result<()> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        match self.store.delete(&Self::path(id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(format!("deleting body {id}"))(e)),
        }
    }

    /// Stores an object that is not a body under a path of its own (the full-text index's
    /// segment files, `index/<account>/<file>`); garbage collection of bodies never lists it,
    /// since its name is not a content hash.
    pub async fn put_object(&self, path: &str, content: Bytes) -> Result<()> {
        self.store
            .put(&Path::from(path), PutPayload::from_bytes(content))
            .await
            .map(drop)
            .map_err(self.err(format!("storing {path}")))
    }

    /// Reads an object stored with [`BlobStore::put_object`].
    pub async fn get_object(&self, path: &str) -> Result<Bytes> {
        let got = self.store.get(&Path::from(path)).await.map_err(self.err(format!("reading {path}")))?;
        got.bytes().await.map_err(self.err(format!("reading {path}")))
    }

    /// Deletes an object stored with [`BlobStore::put_object`]; a missing one is not an error.
    pub async fn delete_object(&self, path: &str) -> Result<()> {
        match self.store.delete(&Path::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(format!("deleting {path}"))(e)),
        }
    }

    pub async fn exists(&self, id: &str) -> Result<bool> {
        match self.store.head(&Self::path(id)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err(format!("checking body {id}"))(e)),
        }
    }
}

#[cfg(test)]
mod location_tests {
    use super::*;

    #[test]
    fn parses_s3_file_and_plain_locations() {
        let BlobLocation::S3(s3) = BlobLocation::parse("s3://bodies").unwrap() else { panic!("not S3") };
        assert_eq!((s3.bucket.as_str(), s3.prefix.as_str()), ("bodies", ""));
        let BlobLocation::S3(s3) = BlobLocation::parse("s3://bodies/tern/prod/").unwrap() else { panic!("not S3") };
        assert_eq!((s3.bucket.as_str(), s3.prefix.as_str()), ("bodies", "tern/prod"));
        assert!(matches!(BlobLocation::parse("file:///var/lib/tern/blobs").unwrap(),
            BlobLocation::Local(p) if p == std::path::Path::new("/var/lib/tern/blobs")));
        assert!(matches!(BlobLocation::parse("tern-data/blobs").unwrap(),
            BlobLocation::Local(p) if p == std::path::Path::new("tern-data/blobs")));
        for bad in ["s3://", "s3:///prefix", "file://host/x", "gs://bucket", ""] {
            assert!(BlobLocation::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn shows_where_bodies_are() {
        let mut location = BlobLocation::parse("s3://bodies/tern").unwrap();
        if let BlobLocation::S3(s3) = &mut location {
            s3.endpoint = Some("http://127.0.0.1:8333".into());
        }
        assert_eq!(location.to_string(), "s3://bodies/tern at http://127.0.0.1:8333");
    }

    #[test]
    fn refuses_plain_http_when_told_to() {
        let s3 = S3Config {
            bucket: "b".into(),
            endpoint: Some("http://127.0.0.1:1".into()),
            allow_http: Some(false),
            ..S3Config::default()
        };
        assert!(matches!(s3.build(), Err(MailboxError::Invalid { .. })));
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
