//! What an import reads from: a Maildir tree, mbox files or a remote IMAP account, behind one
//! interface (folders, then each folder's messages, then their bodies in batches).
//!
//! Local stores are read on blocking threads. A remote account is read over a small pool of
//! connections: batches of one folder are fetched on several at once (`--connections`), and
//! each connection keeps its folder open between batches.

use std::{path::PathBuf, sync::Arc};

use anyhow::{Context, anyhow};
use tern_mailfmt::{Listed, maildir::MaildirReader, mbox::MboxReader};
use tokio::sync::Mutex;

use super::imap::{Endpoint, Session};

/// One source folder.
#[derive(Debug, Clone)]
pub struct SourceFolder {
    /// Tern's name for it: UTF-8, `/` between levels, `INBOX`.
    pub name: String,
    /// The source's own name (an IMAP server's modified UTF-7), to read it by.
    raw: String,
    /// The source's UIDVALIDITY, when it has UIDs. Filled by [`Source::list`] for IMAP.
    pub uidvalidity: Option<u32>,
    pub subscribed: bool,
    /// The special use the source gives it (an IMAP server's `\Sent`, ...), if it says.
    pub special_use: Option<String>,
    /// The source's name, when the import gives the folder another one here (its special
    /// use's folder).
    pub renamed_from: Option<String>,
}

/// One message of a source folder, before its body is read.
#[derive(Debug, Clone)]
pub struct SourceMessage {
    /// The source's UID, when it has UIDs; for an mbox, the message's position.
    pub uid: Option<u32>,
    pub flags: Vec<String>,
    pub internal_date: i64,
    /// In CRLF form, as IMAP counts it; `None` until known for local files.
    pub size: Option<u64>,
    /// The Message-ID without its angle brackets; `None` until read for local files, and for
    /// messages without one.
    pub message_id: Option<String>,
    /// Whether `size` and `message_id` are known.
    pub identified: bool,
    /// A number identifying the message within its folder for reading and reports.
    pub key: u32,
    listed: Option<Listed>,
}

/// Where an import reads from.
pub enum Source {
    Maildir(Arc<MaildirReader>),
    Mbox(Arc<MboxReader>),
    Imap(ImapPool),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Maildir(_) => f.write_str("Maildir"),
            Source::Mbox(_) => f.write_str("mbox"),
            Source::Imap(p) => write!(f, "{:?}", p.endpoint),
        }
    }
}

/// Connections to one remote account, opened on demand up to a limit.
pub struct ImapPool {
    endpoint: Arc<Endpoint>,
    idle: Mutex<Vec<Session>>,
    permits: tokio::sync::Semaphore,
}

impl ImapPool {
    pub fn new(endpoint: Endpoint, limit: usize) -> Self {
        let permits = tokio::sync::Semaphore::new(limit.max(1));
        Self { endpoint: Arc::new(endpoint), idle: Mutex::new(Vec::new()), permits }
    }

    /// Runs `f` on a connection of the pool (a new one if none is idle). A connection whose
    /// command failed is dropped rather than reused: its state is unknown.
    async fn with<T>(
        &self,
        f: impl for<'a> FnOnce(
            &'a mut Session,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<T>> + Send + 'a>>,
    ) -> anyhow::Result<T> {
        let _permit = self.permits.acquire().await.map_err(|_| anyhow!("connection pool closed"))?;
        let idle = self.idle.lock().await.pop();
        let mut session = match idle {
            Some(s) => s,
            None => Session::connect(self.endpoint.clone()).await?,
        };
        let out = f(&mut session).await;
        if out.is_ok() {
            self.idle.lock().await.push(session);
        }
        out
    }

    /// Logs every idle connection out.
    pub async fn close(&self) {
        let sessions: Vec<Session> = std::mem::take(&mut *self.idle.lock().await);
        for s in sessions {
            s.logout().await;
        }
    }
}

/// How local paths are read.
#[derive(Debug, Clone, Copy)]
pub enum LocalFormat {
    Maildir,
    Mbox(tern_mailfmt::mbox::Variant),
}

impl Source {
    /// Opens a local store; the format is guessed when not given (a directory with `cur`,
    /// `new` or `.Folder` directories is a Maildir, anything else mbox).
    pub fn local(
        path: PathBuf,
        format: Option<LocalFormat>,
        variant: tern_mailfmt::mbox::Variant,
    ) -> anyhow::Result<Self> {
        let format =
            format.unwrap_or_else(|| if is_maildir(&path) { LocalFormat::Maildir } else { LocalFormat::Mbox(variant) });
        Ok(match format {
            LocalFormat::Maildir => Source::Maildir(Arc::new(MaildirReader::open(&path)?)),
            LocalFormat::Mbox(v) => Source::Mbox(Arc::new(MboxReader::open(&path, v)?)),
        })
    }

    /// The source's folders: INBOX first, parents before children.
    pub async fn folders(&self) -> anyhow::Result<Vec<SourceFolder>> {
        let local = |folders: Vec<tern_mailfmt::Folder>| {
            folders
                .into_iter()
                .map(|f| SourceFolder {
                    raw: f.name.clone(),
                    name: f.name,
                    uidvalidity: f.uidvalidity,
                    subscribed: f.subscribed,
                    special_use: None,
                    renamed_from: None,
                })
                .collect::<Vec<_>>()
        };
        let mut folders = match self {
            Source::Maildir(r) => {
                let r = r.clone();
                local(tokio::task::spawn_blocking(move || r.folders()).await??)
            }
            Source::Mbox(r) => {
                let r = r.clone();
                local(tokio::task::spawn_blocking(move || r.folders()).await??)
            }
            Source::Imap(pool) => {
                pool.with(|s| {
                    Box::pin(async move {
                        let listed = s.folders().await?;
                        let subscribed = s.subscribed().await?;
                        Ok(listed
                            .into_iter()
                            .filter(|f| f.selectable)
                            .map(|f| SourceFolder {
                                subscribed: subscribed.contains(&f.name),
                                name: f.name,
                                raw: f.raw,
                                uidvalidity: None,
                                special_use: f.special_use,
                                renamed_from: None,
                            })
                            .collect())
                    })
                })
                .await?
            }
        };
        folders.sort_by(|a, b| (a.name != "INBOX", &a.name).cmp(&(b.name != "INBOX", &b.name)));
        folders.dedup_by(|a, b| a.name == b.name);
        Ok(folders)
    }

    /// A folder's messages in UID (or file) order. For IMAP this also learns the folder's
    /// UIDVALIDITY.
    pub async fn list(&self, folder: &mut SourceFolder) -> anyhow::Result<Vec<SourceMessage>> {
        let local = |listed: Vec<Listed>| {
            listed
                .into_iter()
                .enumerate()
                .map(|(i, l)| SourceMessage {
                    uid: l.uid,
                    flags: l.flags.clone(),
                    internal_date: l.internal_date,
                    size: l.size,
                    message_id: None,
                    identified: false,
                    key: i as u32 + 1,
                    listed: Some(l),
                })
                .collect::<Vec<_>>()
        };
        Ok(match self {
            Source::Maildir(r) => {
                let (r, name) = (r.clone(), folder.raw.clone());
                local(tokio::task::spawn_blocking(move || r.list(&name)).await??)
            }
            Source::Mbox(r) => {
                let (r, name) = (r.clone(), folder.raw.clone());
                let mut listed = local(tokio::task::spawn_blocking(move || r.list(&name)).await??);
                // Without X-UID headers an mbox has no UIDs; its messages are told apart by
                // Message-ID, size and date.
                if folder.uidvalidity.is_none() {
                    listed.iter_mut().for_each(|m| m.uid = None);
                }
                listed
            }
            Source::Imap(pool) => {
                let raw = folder.raw.clone();
                let (uidvalidity, listed) = pool
                    .with(|s| {
                        Box::pin(async move {
                            let v = s.examine(&raw).await?;
                            Ok((v, s.list().await?))
                        })
                    })
                    .await?;
                folder.uidvalidity = (uidvalidity > 0).then_some(uidvalidity);
                listed
                    .into_iter()
                    .map(|m| SourceMessage {
                        uid: Some(m.uid),
                        flags: m.flags,
                        internal_date: m.internal_date,
                        size: Some(m.size),
                        message_id: m.message_id,
                        identified: true,
                        key: m.uid,
                        listed: None,
                    })
                    .collect()
            }
        })
    }

    /// Reads the bodies of `messages` (CRLF), in their order; a message that cannot be read
    /// is an `Err` with the reason, and does not stop the others.
    pub async fn read(
        &self,
        folder: &SourceFolder,
        messages: &[SourceMessage],
    ) -> anyhow::Result<Vec<Result<Vec<u8>, String>>> {
        match self {
            Source::Maildir(_) | Source::Mbox(_) => {
                let listed: Vec<Option<Listed>> = messages.iter().map(|m| m.listed.clone()).collect();
                let reader = match self {
                    Source::Maildir(r) => LocalReader::Maildir(r.clone()),
                    Source::Mbox(r) => LocalReader::Mbox(r.clone()),
                    Source::Imap(_) => unreachable!("matched above"),
                };
                Ok(tokio::task::spawn_blocking(move || {
                    listed
                        .iter()
                        .map(|l| match l {
                            Some(l) => reader.read(l).map_err(|e| format!("unreadable: {e}")),
                            None => Err("unreadable: not listed".to_string()),
                        })
                        .collect()
                })
                .await?)
            }
            Source::Imap(pool) => {
                let raw = folder.raw.clone();
                let uids: Vec<u32> = messages.iter().filter_map(|m| m.uid).collect();
                let bodies = pool
                    .with(|s| {
                        Box::pin(async move {
                            s.ensure_open(&raw).await?;
                            s.bodies(&uids).await
                        })
                    })
                    .await
                    .with_context(|| format!("reading from {}", folder.name))?;
                let mut by_uid: std::collections::HashMap<u32, Vec<u8>> = bodies.into_iter().collect();
                Ok(messages
                    .iter()
                    .map(|m| {
                        m.uid
                            .and_then(|u| by_uid.remove(&u))
                            .ok_or_else(|| "gone from the source while importing".to_string())
                    })
                    .collect())
            }
        }
    }

    /// Fills in the size and Message-ID of local messages, which needs their bodies.
    pub async fn identify(&self, folder: &SourceFolder, messages: &mut [SourceMessage]) -> anyhow::Result<()> {
        let todo: Vec<usize> = (0..messages.len()).filter(|&i| !messages[i].identified).collect();
        for chunk in todo.chunks(256) {
            let batch: Vec<SourceMessage> = chunk.iter().map(|&i| messages[i].clone()).collect();
            let bodies = self.read(folder, &batch).await?;
            for (&i, body) in chunk.iter().zip(bodies) {
                let m = &mut messages[i];
                m.identified = true;
                if let Ok(body) = body {
                    m.size = Some(body.len() as u64);
                    m.message_id = super::message_id(&body);
                }
            }
        }
        Ok(())
    }

    /// Ends the connections of a remote source.
    pub async fn close(&self) {
        if let Source::Imap(pool) = self {
            pool.close().await;
        }
    }
}

enum LocalReader {
    Maildir(Arc<MaildirReader>),
    Mbox(Arc<MboxReader>),
}

impl LocalReader {
    fn read(&self, l: &Listed) -> tern_mailfmt::Result<Vec<u8>> {
        match self {
            LocalReader::Maildir(r) => r.read(l),
            LocalReader::Mbox(r) => r.read(l),
        }
    }
}

/// A directory that looks like a Maildir: `cur` or `new` inside, or Maildir++ folders.
fn is_maildir(path: &std::path::Path) -> bool {
    if !path.is_dir() {
        return false;
    }
    if path.join("cur").is_dir() || path.join("new").is_dir() {
        return true;
    }
    std::fs::read_dir(path)
        .map(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with('.') && name.len() > 1 && e.path().join("cur").is_dir()
            })
        })
        .unwrap_or(false)
}

#[cfg(test)]
impl SourceFolder {
    /// A folder of a name and maybe a special-use attribute, for tests of naming.
    pub fn for_test(name: &str, special_use: Option<&str>) -> Self {
        Self {
            name: name.to_string(),
            raw: name.to_string(),
            uidvalidity: None,
            subscribed: false,
            special_use: special_use.map(str::to_string),
            renamed_from: None,
        }
    }
}

#[cfg(test)]
impl SourceMessage {
    /// A message of a known size and nothing else, for tests of planning.
    pub fn for_test(size: u64) -> Self {
        Self {
            uid: None,
            flags: Vec::new(),
            internal_date: 0,
            size: Some(size),
            message_id: None,
            identified: true,
            key: 0,
            listed: None,
        }
    }
}
