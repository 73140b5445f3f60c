//! Folders and the messages in them, as the front-ends use them: LIST, CREATE, DELETE, RENAME,
//! SUBSCRIBE, SELECT, STATUS, FETCH, STORE, COPY, MOVE, EXPUNGE and following changes.
//!
//! Folder names are canonicalised here (see [`folder_name::canonical`]) and flags normalised
//! (see [`flags::normalize`]) before the store sees them. The rules of the folder tree (INBOX
//! cannot be deleted, nothing is renamed to INBOX, no DELETE of a folder with sub-folders) and
//! of messages (quota, UIDs, MODSEQs) are the storage core's ([`crate::store::log`]), checked
//! in the commit that relies on them. One orchestration is here: renaming INBOX moves its
//! messages to a new folder instead (RFC 9051 section 6.3.6).

use bytes::Bytes;
use futures::stream::BoxStream;
use tern_proto::v1::{FlagsMode, FolderRef, MailboxEvent, MessageSummary, SpecialUse, folder_ref};

use super::MailboxService;
use crate::{
    error::{MailboxError, Result},
    flags, folder_name,
    metadata::{self, Refusal},
    records::{FolderRecord, MessageRecord, MetadataEntry, ParsedRecord},
    store::{AccountChanges, Changes, CopyOutcome, FlagsOutcome, FolderList},
};

/// A folder as STATUS reports it: its record and the messages that are \Recent for the
/// session asking.
#[derive(Debug, Clone, PartialEq)]
pub struct FolderStatus {
    pub folder: FolderRecord,
    /// The lowest UID no session has claimed as \Recent.
    pub first_recent_uid: u32,
    /// How many messages from `first_recent_uid` on exist.
    pub recent: u32,
}

/// One message as FetchMessages answers it: its record, its parsed structure when asked for,
/// and its whole body when it fitted in the caller's budget for bodies sent inline.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedMessage {
    pub record: MessageRecord,
    pub parsed: Option<ParsedRecord>,
    pub raw: Option<Bytes>,
}

/// A folder reference with its name, if it has one, in canonical form.
pub(super) fn canonical_ref(folder: FolderRef) -> Result<FolderRef> {
    match folder.by {
        Some(folder_ref::By::Name(name)) => Ok(FolderRef::name(folder_name::canonical(&name)?)),
        Some(folder_ref::By::Id(_)) => Ok(folder),
        None => Err(MailboxError::invalid("folder", "no folder given")),
    }
}

impl MailboxService {
    /// An account's folders and its subscriptions; not found when the account does not exist
    /// (an account without folders does not exist: every account has INBOX).
    pub async fn list_folders(&self, account_id: u64) -> Result<FolderList> {
        if self.store.account(account_id).await?.is_none() {
            return Err(MailboxError::not_found("account", account_id.to_string()));
        }
        self.store.list_folders(account_id).await
    }

    pub async fn create_folder(&self, account_id: u64, name: &str, special_use: SpecialUse) -> Result<FolderRecord> {
        let name = folder_name::canonical(name)?;
        self.store.create_folder(account_id, &name, special_use).await
    }

    /// Creates a folder for an import with the source's UIDVALIDITY (zero: like
    /// [`Self::create_folder`]); an existing folder is answered as it is, or takes the
    /// UIDVALIDITY when it has never held a message ([`crate::store::log::import_folder`]).
    pub async fn import_folder(
        &self,
        account_id: u64,
        name: &str,
        special_use: SpecialUse,
        uidvalidity: u32,
    ) -> Result<FolderRecord> {
        let name = folder_name::canonical(name)?;
        self.store.import_folder(account_id, &name, special_use, uidvalidity).await
    }

    /// Deletes a folder with its messages. INBOX cannot be deleted, nor a folder with
    /// sub-folders: rules of the folder tree, which the storage core ([`crate::store::log`])
    /// keeps.
    pub async fn delete_folder(&self, account_id: u64, name: &str) -> Result<()> {
        let name = folder_name::canonical(name)?;
        self.store.delete_folder(account_id, &name).await
    }

    /// Renames a folder with its sub-folders. Nothing can be renamed to INBOX. Renaming INBOX
    /// is special (RFC 9051 section 6.3.6): its messages move to a new folder of the new name
    /// and INBOX stays, empty; its sub-folders stay where they are. Each batch of messages
    /// moves atomically, so a crash midway leaves every message in exactly one of the two
    /// folders.
    pub async fn rename_folder(&self, account_id: u64, from: &str, to: &str) -> Result<FolderRecord> {
        let from = folder_name::canonical(from)?;
        let to = folder_name::canonical(to)?;
        if !folder_name::is_inbox(&from) {
            // Renaming to INBOX is refused by the storage core with the other rules of RENAME.
            return self.store.rename_folder(account_id, &from, &to).await;
        }
        if folder_name::is_inbox(&to) {
            return Err(MailboxError::NotAllowed("cannot rename INBOX to itself".into()));
        }
        let dest = self.store.create_folder(account_id, &to, SpecialUse::None).await?;
        let (inbox, messages) = self.store.select(account_id, &FolderRef::name("INBOX")).await?;
        let uids: Vec<u32> = messages.iter().map(|m| m.uid).collect();
        for batch in uids.chunks(1000) {
            self.store.copy(account_id, inbox.id, batch, &FolderRef::id(dest.id), true).await?;
        }
        self.store.folder(account_id, &FolderRef::id(dest.id)).await
    }

    /// The annotations (IMAP METADATA, RFC 5464) of a folder, or of the account's server when
    /// `folder` is empty, sorted by name.
    pub async fn get_metadata(&self, account_id: u64, folder: &str) -> Result<Vec<MetadataEntry>> {
        if folder.is_empty() {
            let account = self.store.account(account_id).await?;
            return Ok(account.ok_or_else(|| MailboxError::not_found("account", account_id.to_string()))?.metadata);
        }
        let name = folder_name::canonical(folder)?;
        Ok(self.store.folder(account_id, &FolderRef::name(name)).await?.metadata)
    }

    /// Sets (a value) and removes (`None`) annotations of a folder, or of the account's server
    /// when `folder` is empty, all or none. A limit passed is answered as a [`Refusal`], with
    /// nothing written; a name that is not one is an error.
    ///
    /// The server's annotations are kept in the account's record, which is written whole, so
    /// two clients of one account setting server annotations at the same moment may lose one
    /// of the writes; a folder's are written to the account's log like any folder change.
    pub async fn set_metadata(
        &self,
        account_id: u64,
        folder: &str,
        changes: Vec<(String, Option<Vec<u8>>)>,
    ) -> Result<Option<Refusal>> {
        let (max_value, max_entries) = (self.limits.max_metadata_value, self.limits.max_metadata_entries);
        let mut canonical = Vec::with_capacity(changes.len());
        for (name, value) in changes {
            if value.as_ref().is_some_and(|v| v.len() as u64 > max_value) {
                return Ok(Some(Refusal::MaxSize(max_value)));
            }
            canonical.push((metadata::canonical_name(&name)?, value));
        }
        if !folder.is_empty() {
            let name = folder_name::canonical(folder)?;
            let applied = self.store.set_folder_metadata(account_id, &name, canonical, max_entries).await?;
            return Ok((!applied).then_some(Refusal::TooMany));
        }
        let account = self
            .store
            .account(account_id)
            .await?
            .ok_or_else(|| MailboxError::not_found("account", account_id.to_string()))?;
        let mut entries = account.metadata.clone();
        metadata::apply(&mut entries, &canonical);
        if entries.len() > max_entries && entries.len() > account.metadata.len() {
            return Ok(Some(Refusal::TooMany));
        }
        if entries != account.metadata {
            let changes = AccountChanges { address: account.address, metadata: Some(entries), ..Default::default() };
            self.store.update_account(changes).await?;
        }
        Ok(None)
    }

    /// Subscribes to an existing folder, or unsubscribes from a name, folder or not.
    pub async fn subscribe_folder(&self, account_id: u64, name: &str, subscribed: bool) -> Result<()> {
        let name = folder_name::canonical(name)?;
        self.store.subscribe_folder(account_id, &name, subscribed).await
    }

    /// A folder and all its messages as of one MODSEQ.
    pub async fn select(&self, account_id: u64, folder: FolderRef) -> Result<(FolderRecord, Vec<MessageSummary>)> {
        self.store.select(account_id, &canonical_ref(folder)?).await
    }

    /// A folder's counts, and its \Recent messages without claiming them.
    pub async fn status(&self, account_id: u64, folder: FolderRef) -> Result<FolderStatus> {
        let folder = self.store.folder(account_id, &canonical_ref(folder)?).await?;
        let (first_recent_uid, recent) = self.store.claim_recent(account_id, folder.id, 0).await?;
        Ok(FolderStatus { folder, first_recent_uid, recent })
    }

    /// Claims a folder's messages below `up_to` as \Recent for one session; returns the lowest
    /// UID not claimed before.
    pub async fn claim_recent(&self, account_id: u64, folder_id: u64, up_to: u32) -> Result<u32> {
        let (first_recent_uid, _) = self.store.claim_recent(account_id, folder_id, up_to).await?;
        Ok(first_recent_uid)
    }

    /// Messages of a folder by UID (unknown UIDs are left out), with their parsed structure
    /// if asked. Whole bodies come too while `inline_body_limit` bytes last: a client that
    /// reads a few small messages then needs one call instead of one per message plus one.
    pub async fn fetch_messages(
        &self,
        account_id: u64,
        folder_id: u64,
        uids: &[u32],
        with_structure: bool,
        inline_body_limit: u64,
    ) -> Result<Vec<FetchedMessage>> {
        let found = self.store.messages(account_id, folder_id, uids, with_structure).await?;
        let mut budget = inline_body_limit;
        let mut out = Vec::with_capacity(found.len());
        for (record, parsed) in found {
            // Once one message does not fit, the budget is spent: a later, smaller message is
            // not sent inline in its place.
            let raw = if record.size <= budget {
                budget -= record.size;
                Some(self.body(&record, 0, 0).await?)
            } else {
                budget = 0;
                None
            };
            out.push(FetchedMessage { record, parsed, raw });
        }
        Ok(out)
    }

    /// The stored record of one message, checked to belong to the account.
    pub async fn message(&self, account_id: u64, folder_id: u64, uid: u32) -> Result<MessageRecord> {
        self.store
            .messages(account_id, folder_id, &[uid], false)
            .await?
            .pop()
            .map(|(m, _)| m)
            .ok_or_else(|| MailboxError::not_found("message", format!("uid {uid}")))
    }

    /// Replaces, adds or removes flags of messages (IMAP STORE), skipping those changed since
    /// `unchanged_since` when it is not 0 (CONDSTORE).
    pub async fn store_flags(
        &self,
        account_id: u64,
        folder_id: u64,
        uids: &[u32],
        mode: FlagsMode,
        new_flags: Vec<String>,
        unchanged_since: u64,
    ) -> Result<FlagsOutcome> {
        let new_flags = flags::normalize(&new_flags)?;
        self.store.store_flags(account_id, folder_id, uids, mode, new_flags, unchanged_since).await
    }

    /// Copies messages to another folder of the account, within its quota.
    pub async fn copy_messages(
        &self,
        account_id: u64,
        folder_id: u64,
        uids: &[u32],
        destination: FolderRef,
    ) -> Result<CopyOutcome> {
        let outcome = self.store.copy(account_id, folder_id, uids, &canonical_ref(destination)?, false).await?;
        self.learn_from_copy(account_id, folder_id, &outcome).await;
        Ok(outcome)
    }

    /// Moves messages to another folder of the account, atomically.
    pub async fn move_messages(
        &self,
        account_id: u64,
        folder_id: u64,
        uids: &[u32],
        destination: FolderRef,
    ) -> Result<CopyOutcome> {
        let outcome = self.store.copy(account_id, folder_id, uids, &canonical_ref(destination)?, true).await?;
        self.learn_from_copy(account_id, folder_id, &outcome).await;
        Ok(outcome)
    }

    /// Expunges `uids` (every message when None), only those flagged \Deleted if asked.
    /// Returns the expunged UIDs and the folder's new highest MODSEQ.
    pub async fn expunge(
        &self,
        account_id: u64,
        folder_id: u64,
        uids: Option<&[u32]>,
        only_deleted: bool,
    ) -> Result<(Vec<u32>, u64)> {
        self.store.expunge(account_id, folder_id, uids, only_deleted).await
    }

    /// What changed in a folder since a MODSEQ (CONDSTORE and QRESYNC).
    pub async fn changes(&self, account_id: u64, folder_id: u64, since_modseq: u64) -> Result<Changes> {
        self.store.changes(account_id, folder_id, since_modseq).await
    }

    /// An existing account's committed changes from now on, in commit order.
    pub async fn watch(&self, account_id: u64) -> Result<BoxStream<'static, MailboxEvent>> {
        if self.store.account(account_id).await?.is_none() {
            return Err(MailboxError::not_found("account", account_id.to_string()));
        }
        self.store.watch(account_id).await
    }
}
