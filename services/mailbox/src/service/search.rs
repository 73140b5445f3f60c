//! Text search over a folder (`SearchText`), answered from the account's full-text index where
//! it covers the messages and by reading the others; and the index's administration
//! (`Reindex`, `GetIndexStatus`).
//!
//! The answer is always the substring match of [`tern_mail::text`] (RFC 9051 section 6.4.4):
//!
//! - Messages the index covers (below its marks, and not skipped for their size) are answered
//!   from it: directly when the [`crate::fts::analyzer::plan`] is exact, otherwise the index's
//!   candidates are read and checked. HEADER keys are always checked, since the index does not
//!   keep which field a term came from.
//! - Every other message of the folder (appended since the index last caught up, skipped, or
//!   all of them without an index) is read and checked, and the indexer is told to catch up.
//!
//! UIDs of messages expunged after the index last caught up may still be answered; a session
//! keeps only the UIDs of its view.

use std::collections::BTreeSet;

use futures::StreamExt;
use tern_mail::text::{Searchable, TextKey};
use tern_proto::v1::FolderRef;

use super::MailboxService;
use crate::{
    error::{MailboxError, Result},
    fts::{
        analyzer::{Plan, plan},
        index::Snapshot,
    },
    records::MessageRecord,
};

/// Bodies read at once when messages must be checked.
const READ_CONCURRENCY: usize = 16;

/// What a search found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextSearch {
    /// Per key, in the order asked, the matching UIDs ascending.
    pub results: Vec<Vec<u32>>,
    /// Messages answered from the index, and messages read.
    pub indexed: u32,
    pub scanned: u32,
}

/// The state of an account's index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexStatus {
    pub messages: u64,
    pub indexed: u64,
    pub skipped: u64,
    pub index_bytes: u64,
    pub message_bytes: u64,
}

impl MailboxService {
    /// Answers `keys` over the folder `folder_id` of `account_id`.
    pub async fn search_text(&self, account_id: u64, folder_id: u64, keys: &[TextKey]) -> Result<TextSearch> {
        let folder = self.store.folder(account_id, &FolderRef::id(folder_id)).await?;
        let snapshot: Option<Snapshot> = match &self.fulltext {
            Some(fts) => fts.snapshot(account_id).await,
            None => None,
        };
        let next_uid = snapshot.as_ref().map_or(1, |s| s.marks.next_uid(folder.id));
        let mut uncovered: Vec<MessageRecord> = crate::store::read(self.store.as_ref(), account_id, move |v| {
            let mut out = Vec::new();
            v.each_message_from(folder_id, next_uid, &mut |m| out.push(m.clone()))?;
            Ok(out)
        })
        .await?;
        if let Some(s) = &snapshot {
            let skipped = s.skipped(folder.id).map_err(|e| fts("reading skipped messages", e))?;
            if !skipped.is_empty() {
                let found = self.store.messages(account_id, folder.id, &skipped, false).await?;
                uncovered.extend(found.into_iter().map(|(m, _)| m));
            }
        }
        if !uncovered.is_empty()
            && let Some(fts) = &self.fulltext
        {
            fts.touch(account_id);
        }
        let mut out = TextSearch::default();
        let mut all_uids: Option<Vec<u32>> = None;
        let mut checked_in_index: BTreeSet<u32> = BTreeSet::new();
        for key in keys {
            let needle = key.needle();
            let mut plan = plan(needle);
            if let (TextKey::Header { .. }, Plan::Terms { exact, .. }) = (key, &mut plan) {
                *exact = false;
            }
            if matches!((key, &plan), (TextKey::Header { .. }, Plan::All)) {
                plan = Plan::Scan;
            }
            let mut matched: BTreeSet<u32> = BTreeSet::new();
            // The covered messages.
            let covered_candidates: Option<Vec<u32>> = match (&snapshot, &plan) {
                (_, Plan::All) => {
                    let all = match &all_uids {
                        Some(a) => a.clone(),
                        None => {
                            let (_, summaries) = self.store.select(account_id, &FolderRef::id(folder.id)).await?;
                            let a: Vec<u32> = summaries.iter().map(|m| m.uid).collect();
                            all_uids = Some(a.clone());
                            a
                        }
                    };
                    matched.extend(all);
                    None
                }
                (Some(s), Plan::Terms { conditions, exact }) => {
                    let fields = match key {
                        TextKey::Body(_) => vec![s.fields.body],
                        TextKey::Text(_) => vec![s.fields.header, s.fields.body],
                        TextKey::Header { .. } => vec![s.fields.header],
                    };
                    // Reading the index is CPU and memory-mapped reads: off the async threads.
                    let (snapshot, conditions, folder_id) = (s.clone(), conditions.clone(), folder.id);
                    let uids = tokio::task::spawn_blocking(move || snapshot.matching(folder_id, &fields, &conditions))
                        .await
                        .map_err(|e| fts("searching", e))?
                        .map_err(|e| fts("searching", e))?;
                    if *exact {
                        out.indexed += uids.len() as u32;
                        matched.extend(uids);
                        None
                    } else {
                        Some(uids)
                    }
                }
                // No index, or nothing to narrow by: every covered message is read (with no
                // index, none is covered and `uncovered` holds them all).
                (Some(_), Plan::Scan) => {
                    let (_, summaries) = self.store.select(account_id, &FolderRef::id(folder.id)).await?;
                    Some(summaries.iter().map(|m| m.uid).filter(|uid| *uid < next_uid).collect())
                }
                (None, _) => None,
            };
            if matches!(plan, Plan::All) {
                out.results.push(matched.into_iter().collect());
                continue;
            }
            let mut to_check: Vec<MessageRecord> = uncovered.clone();
            if let Some(candidates) = covered_candidates {
                checked_in_index.extend(candidates.iter().copied());
                let found = self.store.messages(account_id, folder.id, &candidates, false).await?;
                to_check.extend(found.into_iter().map(|(m, _)| m));
            }
            out.scanned += to_check.len() as u32;
            matched.extend(self.check(to_check, key).await?);
            out.results.push(matched.into_iter().collect());
        }
        crate::fts::count_search(u64::from(out.indexed), u64::from(out.scanned));
        Ok(out)
    }

    /// The UIDs of `messages` whose text matches `key`, read from the blob store.
    async fn check(&self, messages: Vec<MessageRecord>, key: &TextKey) -> Result<Vec<u32>> {
        let reads = futures::stream::iter(messages.into_iter().map(|m| async move {
            let body = self.body(&m, 0, 0).await?;
            Ok::<_, MailboxError>((m.uid, body))
        }))
        .buffer_unordered(READ_CONCURRENCY);
        let mut reads = std::pin::pin!(reads);
        let mut out = Vec::new();
        while let Some(read) = reads.next().await {
            let (uid, body) = read?;
            if Searchable::new(&body).matches(key) {
                out.push(uid);
            }
        }
        Ok(out)
    }

    /// Rebuilds the index of `address` (or of every account, empty), calling `progress` with
    /// (address, done, total, bytes, finished) as it goes.
    pub async fn reindex(
        &self,
        address: &str,
        progress: &(dyn Fn(&str, u64, u64, u64, bool) + Send + Sync),
    ) -> Result<()> {
        let Some(fts) = &self.fulltext else {
            return Err(MailboxError::NotAllowed("full-text indexing is off ([search] enabled = false)".into()));
        };
        let accounts = if address.is_empty() {
            self.store.list_accounts(None).await?
        } else {
            let address = crate::address::Address::parse(address)?.to_string();
            vec![
                self.store
                    .account_by_address(&address)
                    .await?
                    .ok_or_else(|| MailboxError::not_found("account", &address))?,
            ]
        };
        for account in accounts {
            let name = account.address.clone();
            let (done, total, bytes) = (
                std::sync::atomic::AtomicU64::new(0),
                std::sync::atomic::AtomicU64::new(0),
                std::sync::atomic::AtomicU64::new(0),
            );
            fts.reindex(account.id, &|d, t, b| {
                done.store(d, std::sync::atomic::Ordering::Relaxed);
                total.store(t, std::sync::atomic::Ordering::Relaxed);
                bytes.store(b, std::sync::atomic::Ordering::Relaxed);
                progress(&name, d, t, b, false);
            })
            .await?;
            let ordering = std::sync::atomic::Ordering::Relaxed;
            progress(&name, done.load(ordering), total.load(ordering), bytes.load(ordering), true);
        }
        Ok(())
    }

    /// How much of the account's mail its index covers, and the index's size.
    pub async fn index_status(&self, address: &str) -> Result<IndexStatus> {
        let address = crate::address::Address::parse(address)?.to_string();
        let account = self
            .store
            .account_by_address(&address)
            .await?
            .ok_or_else(|| MailboxError::not_found("account", &address))?;
        let usage = self.store.usage(account.id).await?;
        let mut status = IndexStatus { messages: usage.messages, ..IndexStatus::default() };
        let Some(fts) = &self.fulltext else { return Ok(status) };
        let Some(snapshot) = fts.snapshot(account.id).await else { return Ok(status) };
        let (docs, skipped) = snapshot.counts().map_err(fts_status)?;
        status.indexed = docs;
        status.skipped = skipped;
        status.index_bytes = fts.index_bytes(account.id);
        let marks = snapshot.marks.clone();
        status.message_bytes = crate::store::read(self.store.as_ref(), account.id, move |v| {
            let mut bytes = 0;
            for f in v.folders()? {
                let next = marks.next_uid(f.id);
                v.each_message(f.id, &mut |m| {
                    if m.uid < next {
                        bytes += m.size;
                    }
                })?;
            }
            Ok(bytes)
        })
        .await?;
        Ok(status)
    }
}

fn fts(context: &str, e: impl std::fmt::Display) -> MailboxError {
    MailboxError::Index(format!("{context}: {e}"))
}

fn fts_status(e: impl std::fmt::Display) -> MailboxError {
    fts("counting", e)
}
