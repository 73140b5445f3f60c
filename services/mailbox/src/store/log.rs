//! The mail rules, written once for both storage backends: given one account's state (a
//! [`View`]) and a command, decide the outcome and the [`LogEntry`] that records its effects.
//! No I/O happens here, so every rule is unit- and property-tested against an in-memory state.
//!
//! This module owns every check a write makes (a folder exists and belongs to the account, the
//! INBOX rules, the sub-folder rule of DELETE, the quota) and all the arithmetic of a folder:
//! UID and MODSEQ assignment, the message, unseen, deleted and size counters. A backend does
//! three things around it: load the account's state, call a function here, and commit the
//! entry it returns (when it returns one; `None` means nothing changes). The embedded backend
//! commits inside its redb write transaction; the NATS backend appends the entry to the
//! account's log conditionally on the last entry it applied, and on a lost race calls the same
//! function again on the newer state. That is why these functions are pure: calling one twice
//! on the same state gives the same answer.
//!
//! Entries record effects, not commands: folders and messages as they are after the change,
//! with UIDs and MODSEQs assigned, and the UIDs expunged with the MODSEQ of their expunge.
//! Applying an entry therefore cannot fail, and replaying a log gives the same state
//! ([`super::state::AccountState::apply`] is that fold).
//!
//! The invariants this module keeps, for every folder:
//! 1. UIDs strictly increase: a new message gets UIDNEXT, and UIDNEXT only grows.
//! 2. MODSEQs strictly increase: every change takes HIGHESTMODSEQ + 1 and stores it back, and a
//!    change (one STORE, one EXPUNGE, one appended message) has exactly one MODSEQ.
//! 3. The folder's counters equal what its messages say.

use std::collections::BTreeMap;

use tern_proto::v1::{FlagsMode, FolderRef, MessageSummary, SpecialUse, folder_ref};

use super::{
    Appended, Changes, CopyOutcome, DEFAULT_FOLDERS, FlagsOutcome, FolderList, NewMessage, UsageCount, count_flags,
    event, summary,
};
use crate::{
    error::{MailboxError, Result},
    flags, folder_name,
    records::{
        self, AccountRecord, EventKind, EventRecord, Expunged, FolderMessage, FolderRecord, LogEntry, MessageRecord,
    },
};

/// What a write decided: the entry to commit (none when nothing changes) and the answer.
pub type Step<T> = (Option<LogEntry>, T);

/// One account's folders and messages as a backend has them at one moment. Reads only; a
/// backend answers from memory (NATS) or from its open transaction (embedded).
pub trait View {
    /// The account whose state this is.
    fn account_id(&self) -> u64;
    /// A folder by id, whichever account it belongs to (the core checks the account).
    fn folder(&self, id: u64) -> Result<Option<FolderRecord>>;
    /// One of this account's folders by canonical name.
    fn folder_named(&self, name: &str) -> Result<Option<FolderRecord>>;
    /// All of this account's folders, sorted by name.
    fn folders(&self) -> Result<Vec<FolderRecord>>;
    fn message(&self, folder: u64, uid: u32) -> Result<Option<MessageRecord>>;
    /// Calls `f` with each message of a folder, in UID order.
    fn each_message(&self, folder: u64, f: &mut dyn FnMut(&MessageRecord)) -> Result<()>;
    /// How many messages of a folder have a UID of at least `uid`.
    fn count_from(&self, folder: u64, uid: u32) -> Result<u32>;
    /// The UIDs expunged from a folder by changes after `modseq`, sorted.
    fn vanished_since(&self, folder: u64, modseq: u64) -> Result<Vec<u32>>;
    /// The subscribed names that no folder has, sorted.
    fn subscribed_without_folder(&self) -> Result<Vec<String>>;
    /// Messages and bytes in all the account's folders.
    fn usage(&self) -> Result<UsageCount>;
    /// The largest UIDVALIDITY given out before (by the account or the whole store), deleted
    /// folders included; committing a new folder raises it.
    fn last_uidvalidity(&self) -> Result<u64>;
}

/// An entry being built against a view: a folder record is copied on its first change, so
/// that later steps of the same command see the earlier ones.
pub struct Draft<'a> {
    view: &'a dyn View,
    changed: BTreeMap<u64, FolderRecord>,
    entry: LogEntry,
}

impl std::fmt::Debug for Draft<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Draft").field("changed", &self.changed).field("entry", &self.entry).finish_non_exhaustive()
    }
}

impl<'a> Draft<'a> {
    pub fn new(view: &'a dyn View) -> Self {
        Self { view, changed: BTreeMap::new(), entry: LogEntry::default() }
    }

    /// The folder as this draft has it, to change.
    fn folder(&mut self, id: u64) -> Result<&mut FolderRecord> {
        if !self.changed.contains_key(&id) {
            let f = self.view.folder(id)?.ok_or_else(|| MailboxError::not_found("folder", format!("id {id}")))?;
            self.changed.insert(id, f);
        }
        Ok(self.changed.get_mut(&id).expect("inserted above"))
    }

    /// A new folder, or a folder record replaced as a whole (a rename, a subscription).
    fn put_folder(&mut self, f: FolderRecord) {
        self.changed.insert(f.id, f);
    }

    /// Adds a message to a folder under a new UID and a new MODSEQ (invariants 1 and 2).
    fn insert_message(&mut self, folder_id: u64, mut m: MessageRecord) -> Result<MessageRecord> {
        let folder = self.folder(folder_id)?;
        m.uid = folder.uidnext;
        folder.uidnext = folder
            .uidnext
            .checked_add(1)
            .ok_or_else(|| MailboxError::NotAllowed(format!("folder {} has used every UID", folder.name)))?;
        folder.highest_modseq += 1;
        m.modseq = folder.highest_modseq;
        folder.messages += 1;
        folder.size += m.size;
        count_flags(folder, &m, 1);
        self.entry.messages.push(FolderMessage { folder_id, message: Some(m.clone()) });
        Ok(m)
    }

    /// Removes messages from a folder under one new MODSEQ, and returns it.
    fn expunge(&mut self, folder_id: u64, msgs: &[MessageRecord]) -> Result<u64> {
        let folder = self.folder(folder_id)?;
        folder.highest_modseq += 1;
        let modseq = folder.highest_modseq;
        for m in msgs {
            folder.messages = folder.messages.saturating_sub(1);
            folder.size = folder.size.saturating_sub(m.size);
            count_flags(folder, m, -1);
        }
        self.entry.expunged.extend(msgs.iter().map(|m| Expunged { folder_id, uid: m.uid, modseq }));
        Ok(modseq)
    }

    fn event(&mut self, e: EventRecord) {
        self.entry.events.push(e);
    }

    /// The finished entry, with every changed folder record in it, in id order (so that a new
    /// folder comes before anything of this entry that refers to it).
    fn finish(self) -> LogEntry {
        let mut entry = self.entry;
        entry.folders = self.changed.into_values().collect();
        entry
    }
}

/// Resolves a folder reference to one of the account's folders.
pub fn resolve(view: &dyn View, folder: &FolderRef) -> Result<FolderRecord> {
    match &folder.by {
        Some(folder_ref::By::Id(id)) => view
            .folder(*id)?
            .filter(|f| f.account_id == view.account_id())
            .ok_or_else(|| MailboxError::not_found("folder", format!("id {id}"))),
        Some(folder_ref::By::Name(name)) => {
            let name = folder_name::canonical(name)?;
            view.folder_named(&name)?.ok_or_else(|| MailboxError::not_found("folder", name))
        }
        None => Err(MailboxError::invalid("folder", "no folder given")),
    }
}

fn messages_by_uid(view: &dyn View, folder: u64, uids: &[u32]) -> Result<Vec<MessageRecord>> {
    let mut out = Vec::with_capacity(uids.len());
    for uid in uids {
        if let Some(m) = view.message(folder, *uid)? {
            out.push(m);
        }
    }
    Ok(out)
}

fn all_messages(view: &dyn View, folder: u64) -> Result<Vec<MessageRecord>> {
    let mut out = Vec::new();
    view.each_message(folder, &mut |m| out.push(m.clone()))?;
    Ok(out)
}

fn quota_check(account: &AccountRecord, used: u64, size: u64) -> Result<()> {
    if account.quota_bytes > 0 && used.saturating_add(size) > account.quota_bytes {
        return Err(MailboxError::OverQuota {
            address: account.address.clone(),
            used,
            size,
            limit: account.quota_bytes,
        });
    }
    Ok(())
}

fn new_folder_record(account_id: u64, name: &str, special_use: SpecialUse, id: u64, uidvalidity: u32) -> FolderRecord {
    FolderRecord {
        id,
        account_id,
        name: name.to_string(),
        uidvalidity,
        uidnext: 1,
        highest_modseq: 1,
        special_use: records::SpecialUse::from(special_use) as i32,
        subscribed: true,
        ..Default::default()
    }
}

/// UIDVALIDITY for a new folder: the current time, or one more than the last one given out,
/// whichever is larger, so that a folder deleted and created again in the same second still
/// gets a new UIDVALIDITY.
pub fn next_uidvalidity(last: u64, now: i64) -> u32 {
    (last + 1).max(now as u64 & 0x7fff_ffff).max(1) as u32
}

/// INBOX and the special-use folders of a new account, with ids from `first_id` on (ids come
/// from a counter of the whole store, which the core cannot see) at `now` (Unix seconds).
/// Nothing when the account has folders already (a retry of a creation that was committed).
pub fn create_account_folders(view: &dyn View, first_id: u64, now: i64) -> Result<Step<()>> {
    if !view.folders()?.is_empty() {
        return Ok((None, ()));
    }
    let uidvalidity = next_uidvalidity(view.last_uidvalidity()?, now);
    let mut d = Draft::new(view);
    for (i, (name, special_use)) in DEFAULT_FOLDERS.into_iter().enumerate() {
        let (id, uidvalidity) = (first_id + i as u64, uidvalidity + i as u32);
        d.put_folder(new_folder_record(view.account_id(), name, special_use, id, uidvalidity));
    }
    Ok((Some(d.finish()), ()))
}

/// CREATE of a folder with the new id `id` at `now` (Unix seconds). `name` must be canonical.
pub fn create_folder(
    view: &dyn View,
    name: &str,
    special_use: SpecialUse,
    id: u64,
    now: i64,
) -> Result<Step<FolderRecord>> {
    if view.folder_named(name)?.is_some() {
        return Err(MailboxError::exists("folder", name));
    }
    let uidvalidity = next_uidvalidity(view.last_uidvalidity()?, now);
    let f = new_folder_record(view.account_id(), name, special_use, id, uidvalidity);
    let mut d = Draft::new(view);
    d.put_folder(f.clone());
    // The name may have been subscribed without a folder; the folder holds the subscription now.
    if view.subscribed_without_folder()?.iter().any(|n| n == name) {
        d.entry.subscriptions_removed.push(name.to_string());
    }
    d.event(event(&f, EventKind::FolderCreated, f.highest_modseq, vec![]));
    Ok((Some(d.finish()), f))
}

/// DELETE. `name` must be canonical.
pub fn delete_folder(view: &dyn View, name: &str) -> Result<Step<()>> {
    if folder_name::is_inbox(name) {
        return Err(MailboxError::NotAllowed("INBOX cannot be deleted".into()));
    }
    let f = view.folder_named(name)?.ok_or_else(|| MailboxError::not_found("folder", name))?;
    // RFC 9051 section 6.3.5: a folder with children cannot be deleted while they exist (there
    // are no \Noselect placeholders, so refusing is the honest answer).
    let prefix = format!("{name}{}", folder_name::DELIMITER);
    if view.folders()?.iter().any(|c| c.name.starts_with(&prefix)) {
        return Err(MailboxError::NotAllowed(format!("folder {name} has sub-folders")));
    }
    let entry = LogEntry {
        deleted_folders: vec![f.id],
        events: vec![event(&f, EventKind::FolderDeleted, f.highest_modseq, vec![])],
        // DELETE does not unsubscribe (RFC 3501 section 6.3.6): the name stays subscribed.
        subscriptions_added: if f.subscribed { vec![name.to_string()] } else { vec![] },
        ..Default::default()
    };
    Ok((Some(entry), ()))
}

/// RENAME of a folder with its sub-folders. Names must be canonical.
pub fn rename_folder(view: &dyn View, from: &str, to: &str) -> Result<Step<FolderRecord>> {
    if folder_name::is_inbox(from) || folder_name::is_inbox(to) {
        return Err(MailboxError::NotAllowed("INBOX cannot be renamed".into()));
    }
    if view.folder_named(to)?.is_some() {
        return Err(MailboxError::exists("folder", to));
    }
    let prefix = format!("{from}{}", folder_name::DELIMITER);
    if to.starts_with(&prefix) {
        return Err(MailboxError::NotAllowed(format!("cannot move {from} under itself")));
    }
    let all = view.folders()?;
    let moving: Vec<&FolderRecord> = all.iter().filter(|f| f.name == from || f.name.starts_with(&prefix)).collect();
    if moving.iter().all(|f| f.name != from) {
        return Err(MailboxError::not_found("folder", from));
    }
    // Every target name is checked before anything is renamed.
    for f in &moving {
        let new = format!("{to}{}", &f.name[from.len()..]);
        if all.iter().any(|o| o.name == new) {
            return Err(MailboxError::exists("folder", new));
        }
    }
    let subscribed = view.subscribed_without_folder()?;
    let mut d = Draft::new(view);
    let mut renamed = None;
    for f in moving {
        let mut f = f.clone();
        f.name = format!("{to}{}", &f.name[from.len()..]);
        // A subscription to the new name, kept from a deleted folder, is the folder's now.
        if subscribed.contains(&f.name) {
            f.subscribed = true;
            d.entry.subscriptions_removed.push(f.name.clone());
        }
        d.event(event(&f, EventKind::FolderRenamed, f.highest_modseq, vec![]));
        if f.name == to {
            renamed = Some(f.clone());
        }
        d.put_folder(f);
    }
    let renamed = renamed.ok_or_else(|| MailboxError::not_found("folder", from))?;
    Ok((Some(d.finish()), renamed))
}

/// SUBSCRIBE or UNSUBSCRIBE. Subscribing needs a folder (not found otherwise, as Dovecot
/// answers); unsubscribing works on any name, with a folder, on the list of subscribed names
/// without a folder, or not subscribed at all. `name` must be canonical.
pub fn subscribe_folder(view: &dyn View, name: &str, subscribed: bool) -> Result<Step<()>> {
    let Some(mut f) = view.folder_named(name)? else {
        if subscribed {
            return Err(MailboxError::not_found("folder", name));
        }
        // That is how a deleted folder's subscription goes.
        if !view.subscribed_without_folder()?.iter().any(|n| n == name) {
            return Ok((None, ()));
        }
        return Ok((Some(LogEntry { subscriptions_removed: vec![name.to_string()], ..Default::default() }), ()));
    };
    if f.subscribed == subscribed {
        return Ok((None, ()));
    }
    f.subscribed = subscribed;
    let mut d = Draft::new(view);
    d.put_folder(f);
    Ok((Some(d.finish()), ()))
}

/// Claims the folder's messages below `up_to` as \Recent for one session: answers the lowest
/// UID not claimed before and how many messages from that UID on exist (before the claim).
pub fn claim_recent(view: &dyn View, folder_id: u64, up_to: u32) -> Result<Step<(u32, u32)>> {
    let mut f = resolve(view, &FolderRef::id(folder_id))?;
    let out = (f.recent_uid, view.count_from(f.id, f.recent_uid)?);
    if up_to <= f.recent_uid {
        return Ok((None, out));
    }
    f.recent_uid = up_to;
    let mut d = Draft::new(view);
    d.put_folder(f);
    Ok((Some(d.finish()), out))
}

/// APPEND (or one recipient of a delivery) of a stored body. `flags` must be normalised.
pub fn append(
    view: &dyn View,
    account: &AccountRecord,
    folder: &FolderRef,
    flags: &[String],
    message: &NewMessage,
    email_id: u64,
) -> Result<Step<Appended>> {
    let folder = resolve(view, folder)?;
    quota_check(account, view.usage()?.bytes, message.size)?;
    let record = MessageRecord {
        uid: 0,
        flags: flags.to_vec(),
        modseq: 0,
        size: message.size,
        internal_date: message.internal_date,
        blob_id: message.blob_id.clone(),
        email_id,
    };
    let mut d = Draft::new(view);
    let m = d.insert_message(folder.id, record)?;
    let f = d.folder(folder.id)?.clone();
    d.event(event(&f, EventKind::Append, m.modseq, vec![summary(&m)]));
    let appended =
        Appended { folder_id: f.id, folder_name: f.name, uidvalidity: f.uidvalidity, uid: m.uid, modseq: m.modseq };
    Ok((Some(d.finish()), appended))
}

/// STORE. `new_flags` must be normalised; every message it changes shares one new MODSEQ.
/// A message changed after `unchanged_since` (when not zero) is left alone and reported
/// (CONDSTORE, RFC 7162 section 3.1.3).
pub fn store_flags(
    view: &dyn View,
    folder_id: u64,
    uids: &[u32],
    mode: FlagsMode,
    new_flags: &[String],
    unchanged_since: u64,
) -> Result<Step<FlagsOutcome>> {
    if mode == FlagsMode::Unspecified {
        return Err(MailboxError::invalid("flags mode", "unspecified"));
    }
    let mut folder = resolve(view, &FolderRef::id(folder_id))?;
    let mut out = FlagsOutcome::default();
    let mut changed = Vec::new();
    for mut m in messages_by_uid(view, folder.id, uids)? {
        if unchanged_since > 0 && m.modseq > unchanged_since {
            out.modified.push(m.uid);
            continue;
        }
        let next = flags::apply(mode, &m.flags, new_flags);
        if next == m.flags {
            continue;
        }
        count_flags(&mut folder, &m, -1);
        m.flags = next;
        count_flags(&mut folder, &m, 1);
        changed.push(m);
    }
    if changed.is_empty() {
        out.highest_modseq = folder.highest_modseq;
        return Ok((None, out));
    }
    folder.highest_modseq += 1;
    let mut d = Draft::new(view);
    for m in &mut changed {
        m.modseq = folder.highest_modseq;
        d.entry.messages.push(FolderMessage { folder_id: folder.id, message: Some(m.clone()) });
    }
    out.updated = changed.iter().map(summary).collect();
    out.highest_modseq = folder.highest_modseq;
    d.event(event(&folder, EventKind::Flags, folder.highest_modseq, out.updated.clone()));
    d.put_folder(folder);
    Ok((Some(d.finish()), out))
}

/// COPY, or MOVE when `remove_source`. A copy counts against the quota; a move does not.
pub fn copy(
    view: &dyn View,
    account: &AccountRecord,
    folder_id: u64,
    uids: &[u32],
    destination: &FolderRef,
    remove_source: bool,
) -> Result<Step<CopyOutcome>> {
    let src = resolve(view, &FolderRef::id(folder_id))?;
    let dst = resolve(view, destination)?;
    let msgs = messages_by_uid(view, src.id, uids)?;
    let added: u64 = msgs.iter().map(|m| m.size).sum();
    if !remove_source {
        quota_check(account, view.usage()?.bytes, added)?;
    }
    let mut out = CopyOutcome {
        uidvalidity: dst.uidvalidity,
        destination_folder_id: dst.id,
        highest_modseq: src.highest_modseq,
        ..Default::default()
    };
    if msgs.is_empty() {
        return Ok((None, out));
    }
    let mut d = Draft::new(view);
    let mut copies = Vec::with_capacity(msgs.len());
    for m in &msgs {
        let c = d.insert_message(dst.id, MessageRecord { uid: 0, modseq: 0, ..m.clone() })?;
        out.source_uids.push(m.uid);
        out.destination_uids.push(c.uid);
        copies.push(summary(&c));
    }
    // Each copied message is one change of the destination, with the MODSEQ it got.
    let dst_folder = d.folder(dst.id)?.clone();
    for s in copies {
        d.event(event(&dst_folder, EventKind::Append, s.modseq, vec![s]));
    }
    // A MOVE within one folder (legal, RFC 6851 section 3.3) expunges from the record the
    // copies were just added to, which the draft holds.
    if remove_source {
        let modseq = d.expunge(src.id, &msgs)?;
        let src_folder = d.folder(src.id)?.clone();
        let gone =
            out.source_uids.iter().map(|uid| MessageSummary { uid: *uid, flags: vec![], modseq, size: 0 }).collect();
        d.event(event(&src_folder, EventKind::Expunge, modseq, gone));
        out.highest_modseq = modseq;
    } else {
        out.highest_modseq = d.folder(src.id)?.highest_modseq;
    }
    Ok((Some(d.finish()), out))
}

/// EXPUNGE of `uids` (every message when None), only those flagged \Deleted if asked; answers
/// the UIDs expunged and the folder's HIGHESTMODSEQ after it.
pub fn expunge(
    view: &dyn View,
    folder_id: u64,
    uids: Option<&[u32]>,
    only_deleted: bool,
) -> Result<Step<(Vec<u32>, u64)>> {
    let f = resolve(view, &FolderRef::id(folder_id))?;
    let msgs = match uids {
        Some(uids) => messages_by_uid(view, f.id, uids)?,
        None => all_messages(view, f.id)?,
    };
    let doomed: Vec<MessageRecord> =
        msgs.into_iter().filter(|m| !only_deleted || flags::has(&m.flags, flags::DELETED)).collect();
    if doomed.is_empty() {
        return Ok((None, (vec![], f.highest_modseq)));
    }
    let mut d = Draft::new(view);
    let modseq = d.expunge(f.id, &doomed)?;
    let folder = d.folder(f.id)?.clone();
    let gone: Vec<u32> = doomed.iter().map(|m| m.uid).collect();
    let summaries = gone.iter().map(|uid| MessageSummary { uid: *uid, flags: vec![], modseq, size: 0 }).collect();
    d.event(event(&folder, EventKind::Expunge, modseq, summaries));
    Ok((Some(d.finish()), (gone, modseq)))
}

/// The account's folders and the subscribed names without one.
pub fn list_folders(view: &dyn View) -> Result<FolderList> {
    Ok(FolderList { folders: view.folders()?, subscribed_without_folder: view.subscribed_without_folder()? })
}

/// SELECT: the folder and a summary of each of its messages, as of one moment.
pub fn select(view: &dyn View, folder: &FolderRef) -> Result<(FolderRecord, Vec<MessageSummary>)> {
    let f = resolve(view, folder)?;
    let mut out = Vec::with_capacity(f.messages as usize);
    view.each_message(f.id, &mut |m| out.push(summary(m)))?;
    Ok((f, out))
}

/// The messages with these UIDs that exist, in the order asked.
pub fn messages(view: &dyn View, folder_id: u64, uids: &[u32]) -> Result<Vec<MessageRecord>> {
    let f = resolve(view, &FolderRef::id(folder_id))?;
    messages_by_uid(view, f.id, uids)
}

/// What changed in a folder after `since_modseq` (QRESYNC, CONDSTORE's CHANGEDSINCE).
pub fn changes(view: &dyn View, folder_id: u64, since_modseq: u64) -> Result<Changes> {
    let f = resolve(view, &FolderRef::id(folder_id))?;
    let mut out = Changes { uidvalidity: f.uidvalidity, highest_modseq: f.highest_modseq, ..Default::default() };
    view.each_message(f.id, &mut |m| {
        if m.modseq > since_modseq {
            out.changed.push(summary(m));
        }
    })?;
    out.vanished = view.vanished_since(f.id, since_modseq)?;
    Ok(out)
}
