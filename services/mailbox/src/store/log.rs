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
    /// Calls `f` with each message of a folder whose UID is at least `uid`, in UID order (what
    /// the full-text indexer has not seen yet: UIDs only grow).
    fn each_message_from(&self, folder: u64, uid: u32, f: &mut dyn FnMut(&MessageRecord)) -> Result<()> {
        self.each_message(folder, &mut |m| {
            if m.uid >= uid {
                f(m)
            }
        })
    }
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

    /// Adds a message to a folder under a new UID and a new MODSEQ (invariants 1 and 2), saved
    /// now (SAVEDATE: a copy or a move is saved anew).
    /// Adds a message to a folder under the next UID, or under `m.uid` when that is not below
    /// UIDNEXT (an import keeping its source's UIDs; UIDs still only ever grow).
    fn insert_message(&mut self, folder_id: u64, mut m: MessageRecord) -> Result<MessageRecord> {
        m.save_date = super::now();
        let folder = self.folder(folder_id)?;
        m.uid = m.uid.max(folder.uidnext);
        folder.uidnext = m
            .uid
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

/// The messages with these UIDs that exist, each once: a client may name a message twice (`1,1`
/// or `1:3,2`), and a STORE or EXPUNGE that took it twice would count its flags or its size
/// twice in the folder's counters.
fn messages_by_uid(view: &dyn View, folder: u64, uids: &[u32]) -> Result<Vec<MessageRecord>> {
    let mut out = Vec::with_capacity(uids.len());
    let mut seen = std::collections::HashSet::with_capacity(uids.len());
    for uid in uids {
        if !seen.insert(*uid) {
            continue;
        }
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
    import_folder(view, name, special_use, id, now, 0)
}

/// CREATE for an import, which keeps the source's UIDVALIDITY (`uidvalidity`; zero chooses one)
/// so that the source's UIDs keep their meaning, and clients' caches stay valid when the
/// messages keep their UIDs too. An existing folder that has never held a message (UIDNEXT 1:
/// no client can have cached a UID of it) takes the UIDVALIDITY instead; one that has is left
/// as it is (the caller sees its UIDVALIDITY in the answer), and without `uidvalidity` an
/// existing folder is refused as with CREATE.
pub fn import_folder(
    view: &dyn View,
    name: &str,
    special_use: SpecialUse,
    id: u64,
    now: i64,
    uidvalidity: u32,
) -> Result<Step<FolderRecord>> {
    if let Some(existing) = view.folder_named(name)? {
        if uidvalidity == 0 {
            return Err(MailboxError::exists("folder", name));
        }
        if existing.uidnext > 1 || existing.uidvalidity == uidvalidity {
            return Ok((None, existing));
        }
        let f = FolderRecord { uidvalidity, ..existing };
        let mut d = Draft::new(view);
        d.put_folder(f.clone());
        return Ok((Some(d.finish()), f));
    }
    let uidvalidity = if uidvalidity == 0 { next_uidvalidity(view.last_uidvalidity()?, now) } else { uidvalidity };
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
        let gone = EventRecord {
            account_id: view.account_id(),
            folder_id: 0,
            kind: EventKind::Unsubscribed as i32,
            modseq: 0,
            messages: vec![],
            folder_name: name.to_string(),
        };
        let entry =
            LogEntry { subscriptions_removed: vec![name.to_string()], events: vec![gone], ..Default::default() };
        return Ok((Some(entry), ()));
    };
    if f.subscribed == subscribed {
        return Ok((None, ()));
    }
    f.subscribed = subscribed;
    let mut d = Draft::new(view);
    let kind = if subscribed { EventKind::Subscribed } else { EventKind::Unsubscribed };
    // No MODSEQ of the folder changes: sessions with the folder selected take the event as
    // nothing new for their view.
    d.event(event(&f, kind, f.highest_modseq, vec![]));
    d.put_folder(f);
    Ok((Some(d.finish()), ()))
}

/// Sets and removes (a `None` value) annotations of the folder `name` (IMAP SETMETADATA): the
/// changes are applied in order to the folder's sorted list. Answers false, and writes nothing,
/// when the folder would then have more than `max_entries`. Names must be canonical already
/// (see [`crate::metadata::canonical_name`]).
pub fn set_folder_metadata(
    view: &dyn View,
    name: &str,
    changes: &[(String, Option<Vec<u8>>)],
    max_entries: usize,
) -> Result<Step<bool>> {
    let mut f = view.folder_named(name)?.ok_or_else(|| MailboxError::not_found("folder", name))?;
    let before = f.metadata.clone();
    crate::metadata::apply(&mut f.metadata, changes);
    if f.metadata.len() > max_entries && f.metadata.len() > before.len() {
        return Ok((None, false));
    }
    if f.metadata == before {
        return Ok((None, true));
    }
    let mut d = Draft::new(view);
    d.put_folder(f);
    Ok((Some(d.finish()), true))
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
    let (entry, mut appended) = append_all(view, account, folder, &[(message, flags, email_id)])?;
    Ok((entry, appended.pop().expect("one message appended")))
}

/// Several stored bodies appended to one folder in one entry, so that all of them are there or
/// none is (MULTIAPPEND, RFC 3502): each message `(body, normalised flags, EMAILID)` gets the
/// next UID and a MODSEQ of its own, in the order given, and the quota counts them together.
pub fn append_all(
    view: &dyn View,
    account: &AccountRecord,
    folder: &FolderRef,
    messages: &[(&NewMessage, &[String], u64)],
) -> Result<Step<Vec<Appended>>> {
    let folder = resolve(view, folder)?;
    // Messages exempt from the quota (an import told to ignore it) are not checked at all:
    // the mailbox may be over its quota already.
    let counted: Vec<u64> = messages.iter().filter(|(m, _, _)| !m.quota_exempt).map(|(m, _, _)| m.size).collect();
    if !counted.is_empty() {
        quota_check(account, view.usage()?.bytes, counted.iter().fold(0u64, |a, b| a.saturating_add(*b)))?;
    }
    let mut d = Draft::new(view);
    let mut inserted = Vec::with_capacity(messages.len());
    for (message, flags, email_id) in messages {
        let record = MessageRecord {
            uid: message.uid,
            flags: flags.to_vec(),
            modseq: 0,
            size: message.size,
            internal_date: message.internal_date,
            blob_id: message.blob_id.clone(),
            email_id: *email_id,
            save_date: 0,
        };
        inserted.push(d.insert_message(folder.id, record)?);
    }
    let f = d.folder(folder.id)?.clone();
    // Each message is one change of the folder, with the MODSEQ it got, as with COPY.
    for m in &inserted {
        d.event(event(&f, EventKind::Append, m.modseq, vec![summary(m)]));
    }
    let appended = inserted
        .iter()
        .map(|m| Appended {
            folder_id: f.id,
            folder_name: f.name.clone(),
            uidvalidity: f.uidvalidity,
            uid: m.uid,
            modseq: m.modseq,
        })
        .collect();
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

/// The messages with these UIDs that exist, in the order asked, each once.
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

#[cfg(test)]
pub(crate) mod tests {
    //! The rules one by one, then random command sequences with the invariants checked after
    //! every step. [`Model`] is also what the embedded backend's tests run against the real
    //! store, to show that committing an entry there gives the state folding it here gives.

    use proptest::prelude::*;
    use tern_proto::v1::FolderRef;

    use super::*;
    use crate::{parse, store::state::AccountState};

    pub(crate) const ACCOUNT: u64 = 1;
    /// Folder names the commands pick from: some exist from the start, some nest.
    pub(crate) const NAMES: [&str; 7] = ["INBOX", "Sent", "A", "A/B", "A/B/C", "B", "Trash"];
    const FLAGS: [&str; 4] = ["\\Seen", "\\Deleted", "$Junk", "\\Flagged"];

    #[derive(Debug, Clone)]
    pub(crate) enum Cmd {
        Append { folder: usize, size: u64, seen: bool },
        Store { folder: usize, pick: Vec<usize>, mode: usize, flag: usize, unchanged_since: bool },
        Copy { from: usize, to: usize, pick: Vec<usize>, remove: bool },
        Expunge { folder: usize, only_deleted: bool },
        Create { name: usize },
        Delete { name: usize },
        Rename { from: usize, to: usize },
        Subscribe { name: usize, on: bool },
        Claim { folder: usize, ahead: u32 },
    }

    pub(crate) fn cmd() -> impl Strategy<Value = Cmd> {
        let n = 0..NAMES.len();
        let pick = prop::collection::vec(0usize..8, 0..4);
        prop_oneof![
            4 => (n.clone(), 1u64..5000, any::<bool>()).prop_map(|(folder, size, seen)| Cmd::Append { folder, size, seen }),
            3 => (n.clone(), pick.clone(), 0usize..3, 0..FLAGS.len(), any::<bool>()).prop_map(
                |(folder, pick, mode, flag, unchanged_since)| Cmd::Store { folder, pick, mode, flag, unchanged_since }
            ),
            2 => (n.clone(), n.clone(), pick, any::<bool>()).prop_map(|(from, to, pick, remove)| Cmd::Copy { from, to, pick, remove }),
            2 => (n.clone(), any::<bool>()).prop_map(|(folder, only_deleted)| Cmd::Expunge { folder, only_deleted }),
            1 => n.clone().prop_map(|name| Cmd::Create { name }),
            1 => n.clone().prop_map(|name| Cmd::Delete { name }),
            1 => (n.clone(), n.clone()).prop_map(|(from, to)| Cmd::Rename { from, to }),
            1 => (n.clone(), any::<bool>()).prop_map(|(name, on)| Cmd::Subscribe { name, on }),
            1 => (n, 0u32..3).prop_map(|(folder, ahead)| Cmd::Claim { folder, ahead }),
        ]
    }

    pub(crate) fn message(size: u64) -> NewMessage {
        NewMessage {
            blob_id: format!("blob-{size}"),
            size,
            internal_date: 0,
            parsed: parse::parse(b""),
            uid: 0,
            quota_exempt: false,
        }
    }

    /// An account with a quota, so that some appends and copies are refused.
    pub(crate) fn account() -> AccountRecord {
        AccountRecord { id: ACCOUNT, address: "ann@example.test".into(), quota_bytes: 40_000, ..Default::default() }
    }

    /// The UIDs a command picks in a folder, from the folder's messages as `view` has them.
    pub(crate) fn pick_uids(view: &dyn View, folder: usize, pick: &[usize]) -> Vec<u32> {
        let Ok(Some(f)) = view.folder_named(NAMES[folder]) else { return pick.iter().map(|p| *p as u32 + 1).collect() };
        let uids = all_messages(view, f.id).unwrap().iter().map(|m| m.uid).collect::<Vec<_>>();
        // A pick past the end names a UID that does not exist, which a client may send too.
        pick.iter().map(|p| uids.get(*p).copied().unwrap_or(f.uidnext + *p as u32)).collect()
    }

    pub(crate) fn flags_mode(mode: usize) -> FlagsMode {
        [FlagsMode::Add, FlagsMode::Remove, FlagsMode::Replace][mode]
    }

    pub(crate) fn flag(i: usize) -> Vec<String> {
        vec![FLAGS[i].to_string()]
    }

    /// The in-memory account the commands run against, with the log it wrote.
    #[derive(Debug, Default)]
    pub(crate) struct Model {
        pub state: AccountState,
        pub log: Vec<LogEntry>,
        next_folder: u64,
        next_email: u64,
    }

    impl Model {
        pub fn new() -> Self {
            let mut m = Self { next_folder: DEFAULT_FOLDERS.len() as u64 + 1, ..Default::default() };
            let (entry, ()) = create_account_folders(&m.state.view(ACCOUNT), 1, 1_000).unwrap();
            m.commit(entry);
            m
        }

        fn commit(&mut self, entry: Option<LogEntry>) {
            if let Some(entry) = entry {
                self.state.apply(self.state.sequence + 1, &entry);
                self.log.push(entry);
            }
        }

        fn step<T>(&mut self, decided: Result<Step<T>>) -> Result<T> {
            let (entry, out) = decided?;
            self.commit(entry);
            Ok(out)
        }

        /// Runs one command; answers its error's text, if it failed.
        pub fn run(&mut self, cmd: &Cmd) -> std::result::Result<(), String> {
            let state = std::mem::take(&mut self.state);
            let view = state.view(ACCOUNT);
            let id_of = |i: usize| view.folder_named(NAMES[i]).ok().flatten().map_or(999, |f| f.id);
            let decided: Result<Step<()>> = match cmd {
                Cmd::Append { folder, size, seen } => {
                    self.next_email += 1;
                    let flags = if *seen { flag(0) } else { vec![] };
                    append(
                        &view,
                        &account(),
                        &FolderRef::name(NAMES[*folder]),
                        &flags,
                        &message(*size),
                        self.next_email,
                    )
                    .map(|(e, _)| (e, ()))
                }
                Cmd::Store { folder, pick, mode, flag: f, unchanged_since } => {
                    let uids = pick_uids(&view, *folder, pick);
                    let since = if *unchanged_since { 3 } else { 0 };
                    store_flags(&view, id_of(*folder), &uids, flags_mode(*mode), &flag(*f), since).map(|(e, _)| (e, ()))
                }
                Cmd::Copy { from, to, pick, remove } => {
                    let uids = pick_uids(&view, *from, pick);
                    copy(&view, &account(), id_of(*from), &uids, &FolderRef::name(NAMES[*to]), *remove)
                        .map(|(e, _)| (e, ()))
                }
                Cmd::Expunge { folder, only_deleted } => {
                    expunge(&view, id_of(*folder), None, *only_deleted).map(|(e, _)| (e, ()))
                }
                Cmd::Create { name } => {
                    let id = self.next_folder;
                    self.next_folder += 1;
                    create_folder(&view, NAMES[*name], SpecialUse::None, id, 1_000).map(|(e, _)| (e, ()))
                }
                Cmd::Delete { name } => delete_folder(&view, NAMES[*name]),
                Cmd::Rename { from, to } => rename_folder(&view, NAMES[*from], NAMES[*to]).map(|(e, _)| (e, ())),
                Cmd::Subscribe { name, on } => subscribe_folder(&view, NAMES[*name], *on),
                Cmd::Claim { folder, ahead } => {
                    let up_to = view.folder_named(NAMES[*folder]).ok().flatten().map_or(0, |f| f.uidnext + ahead);
                    claim_recent(&view, id_of(*folder), up_to).map(|(e, _)| (e, ()))
                }
            };
            self.state = state;
            self.step(decided).map_err(|e| e.to_string())
        }
    }

    /// Invariants 1 to 3 across one step, and the entry's own MODSEQs.
    fn check_step(before: &AccountState, entry: Option<&LogEntry>, after: &AccountState) {
        for (id, f) in &after.folders {
            let r = &f.folder;
            if let Some(b) = before.folders.get(id) {
                let b = &b.folder;
                assert!(r.uidnext >= b.uidnext, "UIDNEXT went back in {}", r.name);
                assert!(r.highest_modseq >= b.highest_modseq, "HIGHESTMODSEQ went back in {}", r.name);
                assert_eq!(r.uidvalidity, b.uidvalidity, "UIDVALIDITY changed in {}", r.name);
            }
            let (mut messages, mut size, mut unseen, mut deleted) = (0, 0, 0, 0);
            for m in f.messages.values() {
                assert!(m.uid < r.uidnext && m.modseq <= r.highest_modseq, "{m:?} beyond {r:?}");
                messages += 1;
                size += m.size;
                unseen += u32::from(!flags::has(&m.flags, flags::SEEN));
                deleted += u32::from(flags::has(&m.flags, flags::DELETED));
            }
            assert_eq!((r.messages, r.size, r.unseen, r.deleted), (messages, size, unseen, deleted), "{r:?}");
        }
        let Some(entry) = entry else { return };
        let highest = |folder: u64| before.folders.get(&folder).map_or(0, |f| f.folder.highest_modseq);
        for fm in &entry.messages {
            let m = fm.message.as_ref().expect("a message");
            assert!(m.modseq > highest(fm.folder_id), "a change reused a MODSEQ: {m:?}");
            let existed = before.folders.get(&fm.folder_id).is_some_and(|f| f.messages.contains_key(&m.uid));
            let uidnext = before.folders.get(&fm.folder_id).map_or(1, |f| f.folder.uidnext);
            assert!(existed || m.uid >= uidnext, "a new message reused a UID: {m:?}");
        }
        for x in &entry.expunged {
            assert!(x.modseq > highest(x.folder_id), "an expunge reused a MODSEQ: {x:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn invariants_hold_after_every_step_and_the_log_folds_to_the_state(cmds in prop::collection::vec(cmd(), 1..60)) {
            let mut model = Model::new();
            for cmd in &cmds {
                let before = model.state.clone();
                let logged = model.log.len();
                let _ = model.run(cmd);
                check_step(&before, model.log.get(logged), &model.state);
                if model.log.len() == logged {
                    // A refusal or a no-op changes nothing.
                    prop_assert_eq!(model.state.snapshot(), before.snapshot());
                }
            }
            let mut folded = AccountState::default();
            for (i, entry) in model.log.iter().enumerate() {
                folded.apply(i as u64 + 1, entry);
            }
            prop_assert_eq!(folded.snapshot(), model.state.snapshot());
            prop_assert_eq!(AccountState::from_snapshot(model.state.snapshot()).snapshot(), model.state.snapshot());
            let usage = model.state.usage();
            prop_assert!(usage.bytes <= account().quota_bytes + 5000);
        }
    }

    fn model_with(cmds: &[Cmd]) -> Model {
        let mut m = Model::new();
        for c in cmds {
            m.run(c).unwrap();
        }
        m
    }

    /// Two unseen messages in INBOX, UIDs 1 and 2.
    fn two_in_inbox() -> Model {
        let unseen = Cmd::Append { folder: 0, size: 10, seen: false };
        model_with(&[unseen.clone(), unseen])
    }

    fn folder<'a>(m: &'a Model, name: &str) -> &'a FolderRecord {
        &m.state.folders.values().find(|f| f.folder.name == name).expect("the folder").folder
    }

    #[test]
    fn inbox_can_be_neither_deleted_nor_renamed_nor_replaced() {
        let mut m = Model::new();
        assert_eq!(m.run(&Cmd::Delete { name: 0 }).unwrap_err(), "not allowed: INBOX cannot be deleted");
        assert!(m.run(&Cmd::Rename { from: 0, to: 2 }).unwrap_err().contains("INBOX cannot be renamed"));
        assert!(m.run(&Cmd::Rename { from: 1, to: 0 }).unwrap_err().contains("INBOX cannot be renamed"));
        assert!(m.run(&Cmd::Create { name: 0 }).unwrap_err().contains("exists"));
    }

    #[test]
    fn a_folder_with_children_is_not_deleted_and_moves_with_them() {
        let mut m = model_with(&[Cmd::Create { name: 2 }, Cmd::Create { name: 3 }]);
        assert!(m.run(&Cmd::Delete { name: 2 }).unwrap_err().contains("has sub-folders"));
        assert!(m.run(&Cmd::Rename { from: 2, to: 4 }).unwrap_err().contains("under itself"));
        m.run(&Cmd::Rename { from: 2, to: 5 }).unwrap();
        let names: Vec<_> = m.state.view(ACCOUNT).folders().unwrap().into_iter().map(|f| f.name).collect();
        assert!(names.contains(&"B".to_string()) && names.contains(&"B/B".to_string()), "{names:?}");
        assert!(!names.iter().any(|n| n == "A" || n.starts_with("A/")), "{names:?}");
    }

    #[test]
    fn a_deleted_folder_stays_subscribed_until_unsubscribed_or_created_again() {
        let mut m = model_with(&[Cmd::Create { name: 5 }, Cmd::Delete { name: 5 }]);
        assert_eq!(m.state.view(ACCOUNT).subscribed_without_folder().unwrap(), ["B"]);
        m.run(&Cmd::Create { name: 5 }).unwrap();
        assert!(m.state.view(ACCOUNT).subscribed_without_folder().unwrap().is_empty());
        assert!(folder(&m, "B").subscribed);
        m.run(&Cmd::Delete { name: 5 }).unwrap();
        m.run(&Cmd::Subscribe { name: 5, on: false }).unwrap();
        assert!(m.state.view(ACCOUNT).subscribed_without_folder().unwrap().is_empty());
        assert!(m.run(&Cmd::Subscribe { name: 5, on: true }).unwrap_err().contains("not found"));
    }

    #[test]
    fn one_store_is_one_modseq_and_a_conditional_store_spares_what_changed_since() {
        let m = two_in_inbox();
        let view = m.state.view(ACCOUNT);
        let inbox = folder(&m, "INBOX").clone();
        assert_eq!(inbox.highest_modseq, 3);
        let (entry, out) = store_flags(&view, inbox.id, &[1, 2, 9], FlagsMode::Add, &flag(2), 0).unwrap();
        assert_eq!(out.updated.iter().map(|s| (s.uid, s.modseq)).collect::<Vec<_>>(), [(1, 4), (2, 4)]);
        assert_eq!(entry.unwrap().events.len(), 1);
        // UID 2 was appended at MODSEQ 3: UNCHANGEDSINCE 2 spares it and reports it.
        let (_, out) = store_flags(&view, inbox.id, &[1, 2], FlagsMode::Add, &flag(2), 2).unwrap();
        assert_eq!((out.updated.len(), out.modified), (1, vec![2]));
        // Setting what is set already is no change at all.
        let (entry, _) = store_flags(&view, inbox.id, &[1], FlagsMode::Remove, &flag(2), 0).unwrap();
        assert!(entry.is_none());
    }

    #[test]
    fn a_message_named_twice_is_changed_and_counted_once() {
        let m = model_with(&[Cmd::Append { folder: 0, size: 10, seen: false }]);
        let view = m.state.view(ACCOUNT);
        let inbox = folder(&m, "INBOX").id;
        let (entry, out) = store_flags(&view, inbox, &[1, 1], FlagsMode::Add, &flag(1), 0).unwrap();
        assert_eq!(out.updated.len(), 1);
        let mut state = m.state.clone();
        state.apply(state.sequence + 1, &entry.unwrap());
        assert_eq!(state.folders[&inbox].folder.deleted, 1);
        let (_, (gone, _)) = expunge(&state.view(ACCOUNT), inbox, Some(&[1, 1]), true).unwrap();
        assert_eq!(gone, [1]);
    }

    #[test]
    fn quota_refuses_appends_and_copies_but_not_moves() {
        let mut m = model_with(&[Cmd::Append { folder: 0, size: 30_000, seen: false }]);
        let err = m.run(&Cmd::Append { folder: 0, size: 20_000, seen: false }).unwrap_err();
        assert!(err.contains("quota"), "{err}");
        assert!(m.run(&Cmd::Copy { from: 0, to: 1, pick: vec![0], remove: false }).unwrap_err().contains("quota"));
        m.run(&Cmd::Copy { from: 0, to: 1, pick: vec![0], remove: true }).unwrap();
        assert_eq!((folder(&m, "INBOX").messages, folder(&m, "Sent").messages), (0, 1));
    }

    #[test]
    fn a_move_within_one_folder_renumbers_the_message() {
        let m = model_with(&[
            Cmd::Append { folder: 0, size: 10, seen: true },
            Cmd::Copy { from: 0, to: 0, pick: vec![0], remove: true },
        ]);
        let inbox = &m.state.folders[&folder(&m, "INBOX").id];
        assert_eq!(inbox.messages.keys().copied().collect::<Vec<_>>(), [2]);
        assert_eq!((inbox.folder.messages, inbox.folder.unseen, inbox.folder.highest_modseq), (1, 0, 4));
        assert_eq!(m.state.view(ACCOUNT).vanished_since(inbox.folder.id, 2).unwrap(), [1]);
    }

    #[test]
    fn recent_is_claimed_once() {
        let m = two_in_inbox();
        let view = m.state.view(ACCOUNT);
        let inbox = folder(&m, "INBOX").id;
        let (entry, first) = claim_recent(&view, inbox, 3).unwrap();
        assert_eq!(first, (0, 2));
        let mut state = m.state.clone();
        state.apply(state.sequence + 1, &entry.unwrap());
        let (entry, again) = claim_recent(&state.view(ACCOUNT), inbox, 3).unwrap();
        assert_eq!((entry, again), (None, (3, 0)));
    }

    #[test]
    fn another_accounts_folder_is_not_found() {
        let m = Model::new();
        let other = m.state.view(ACCOUNT + 1);
        let err = resolve(&other, &FolderRef::id(1)).unwrap_err();
        assert!(matches!(err, MailboxError::NotFound { .. }), "{err}");
    }

    #[test]
    fn an_import_keeps_its_sources_uidvalidity_and_uids_where_it_can() {
        let mut m = Model::new();
        let inbox = folder(&m, "INBOX").id;
        // An INBOX that never held a message takes the source's UIDVALIDITY.
        let kept = m.step(import_folder(&m.state.view(ACCOUNT), "INBOX", SpecialUse::None, 90, 1_000, 77)).unwrap();
        assert_eq!((kept.id, kept.uidvalidity), (inbox, 77));
        // A new folder gets it at creation; asked again, it is answered as it is.
        let new = m.step(import_folder(&m.state.view(ACCOUNT), "Old", SpecialUse::None, 91, 1_000, 55)).unwrap();
        assert_eq!((new.id, new.uidvalidity, new.uidnext), (91, 55, 1));
        let again = m.step(import_folder(&m.state.view(ACCOUNT), "Old", SpecialUse::None, 92, 1_000, 56)).unwrap();
        assert_eq!((again.id, again.uidvalidity), (91, 56), "an empty folder still takes another");
        // Source UIDs are kept while they are not below UIDNEXT; a lower one takes the next.
        let uids = |m: &NewMessage, uid| NewMessage { uid, ..m.clone() };
        let (a, b, c) = (uids(&message(1), 5), uids(&message(2), 9), uids(&message(3), 3));
        let items: Vec<(&NewMessage, &[String], u64)> = vec![(&a, &[], 1), (&b, &[], 2), (&c, &[], 3)];
        let appended = m.step(append_all(&m.state.view(ACCOUNT), &account(), &FolderRef::name("Old"), &items)).unwrap();
        assert_eq!(appended.iter().map(|a| a.uid).collect::<Vec<_>>(), [5, 9, 10]);
        assert_eq!(folder(&m, "Old").uidnext, 11);
        // A folder that has held messages keeps its UIDVALIDITY: its UIDs may be in caches.
        let held = m.step(import_folder(&m.state.view(ACCOUNT), "Old", SpecialUse::None, 93, 1_000, 99)).unwrap();
        assert_eq!(held.uidvalidity, 56);
        let err = import_folder(&m.state.view(ACCOUNT), "Old", SpecialUse::None, 94, 1_000, 0).unwrap_err();
        assert!(matches!(err, MailboxError::AlreadyExists { .. }), "{err}");
        // Later folders still get UIDVALIDITYs above every one given out.
        let later = m.step(create_folder(&m.state.view(ACCOUNT), "Later", SpecialUse::None, 95, 1_000)).unwrap();
        assert!(later.uidvalidity > 77, "{}", later.uidvalidity);
    }

    #[test]
    fn an_import_may_pass_the_quota_when_told_to() {
        let mut m = Model::new();
        let big = NewMessage { quota_exempt: true, ..message(50_000) };
        let items: Vec<(&NewMessage, &[String], u64)> = vec![(&big, &[], 1)];
        let view = m.state.view(ACCOUNT);
        m.step(append_all(&view, &account(), &FolderRef::name("INBOX"), &items)).unwrap();
        let refused = message(50_001);
        let items: Vec<(&NewMessage, &[String], u64)> = vec![(&refused, &[], 2)];
        let err = append_all(&m.state.view(ACCOUNT), &account(), &FolderRef::name("INBOX"), &items).unwrap_err();
        assert!(matches!(err, MailboxError::OverQuota { .. }), "{err}");
        // Over the quota already, an exempt message still goes in.
        let more = NewMessage { quota_exempt: true, ..message(10) };
        let items: Vec<(&NewMessage, &[String], u64)> = vec![(&more, &[], 3)];
        m.step(append_all(&m.state.view(ACCOUNT), &account(), &FolderRef::name("INBOX"), &items)).unwrap();
    }
}
