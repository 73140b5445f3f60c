//! One account's folders, messages and subscriptions in memory, as the NATS backend rebuilds
//! them from the account's log: a snapshot, then every entry after it, applied in log order. No
//! I/O here.
//!
//! Entries record effects (records as they are after the change, with UIDs and MODSEQs
//! assigned), so applying one cannot fail and every replica that applies the same entries in
//! the same order has the same state. The writer builds an entry against the state it has
//! caught up to, and the log accepts it only if nothing was appended meanwhile; that is what
//! keeps UIDs and MODSEQs strictly increasing across replicas (DESIGN.md section 2).

use std::collections::{BTreeMap, BTreeSet};

use tern_proto::v1::{FolderRef, MailboxEvent, folder_ref};

use crate::{
    error::{MailboxError, Result},
    folder_name,
    records::{AccountSnapshot, Expunged, FolderMessage, FolderRecord, FolderSnapshot, LogEntry, MessageRecord},
    store::{UsageCount, count_flags},
};

#[derive(Debug, Clone, Default)]
pub struct FolderState {
    pub folder: FolderRecord,
    pub messages: BTreeMap<u32, MessageRecord>,
    /// Expunged UIDs with the MODSEQ of their expunge, for QRESYNC's VANISHED.
    pub expunged: Vec<Expunged>,
}

#[derive(Debug, Clone, Default)]
pub struct AccountState {
    /// The log sequence of the last entry applied; zero before the first.
    pub sequence: u64,
    /// The largest UIDVALIDITY any folder of the account ever had, deleted ones included.
    pub max_uidvalidity: u32,
    pub folders: BTreeMap<u64, FolderState>,
    /// The subscribed names that no folder has (see [`crate::store::FolderList`]).
    pub subscribed_without_folder: BTreeSet<String>,
    /// Entries applied since the last snapshot was written.
    pub since_snapshot: u32,
}

impl AccountState {
    pub fn from_snapshot(s: AccountSnapshot) -> Self {
        let folders = s
            .folders
            .into_iter()
            .filter_map(|f| {
                let folder = f.folder?;
                let messages = f.messages.into_iter().map(|m| (m.uid, m)).collect();
                Some((folder.id, FolderState { folder, messages, expunged: f.expunged }))
            })
            .collect();
        Self {
            sequence: s.sequence,
            max_uidvalidity: s.max_uidvalidity,
            folders,
            subscribed_without_folder: s.subscribed_without_folder.into_iter().collect(),
            since_snapshot: 0,
        }
    }

    pub fn snapshot(&self) -> AccountSnapshot {
        AccountSnapshot {
            sequence: self.sequence,
            max_uidvalidity: self.max_uidvalidity,
            folders: self
                .folders
                .values()
                .map(|f| FolderSnapshot {
                    folder: Some(f.folder.clone()),
                    messages: f.messages.values().cloned().collect(),
                    expunged: f.expunged.clone(),
                })
                .collect(),
            subscribed_without_folder: self.subscribed_without_folder.iter().cloned().collect(),
        }
    }

    /// Applies the entry the log holds at `sequence`.
    pub fn apply(&mut self, sequence: u64, e: &LogEntry) {
        for f in &e.folders {
            self.max_uidvalidity = self.max_uidvalidity.max(f.uidvalidity);
            self.folders.entry(f.id).or_default().folder = f.clone();
        }
        for id in &e.deleted_folders {
            self.folders.remove(id);
        }
        for m in &e.messages {
            if let (Some(f), Some(msg)) = (self.folders.get_mut(&m.folder_id), &m.message) {
                f.messages.insert(msg.uid, msg.clone());
            }
        }
        for x in &e.expunged {
            if let Some(f) = self.folders.get_mut(&x.folder_id) {
                f.messages.remove(&x.uid);
                f.expunged.push(*x);
            }
        }
        for name in &e.subscriptions_removed {
            self.subscribed_without_folder.remove(name);
        }
        self.subscribed_without_folder.extend(e.subscriptions_added.iter().cloned());
        self.sequence = sequence;
        self.since_snapshot += 1;
    }

    pub fn by_name(&self, name: &str) -> Option<&FolderState> {
        self.folders.values().find(|f| f.folder.name == name)
    }

    pub fn resolve(&self, account_id: u64, folder: &FolderRef) -> Result<&FolderState> {
        match &folder.by {
            Some(folder_ref::By::Id(id)) => self
                .folders
                .get(id)
                .filter(|f| f.folder.account_id == account_id)
                .ok_or_else(|| MailboxError::not_found("folder", format!("id {id}"))),
            Some(folder_ref::By::Name(name)) => {
                let name = folder_name::canonical(name)?;
                self.by_name(&name).ok_or_else(|| MailboxError::not_found("folder", name))
            }
            None => Err(MailboxError::invalid("folder", "no folder given")),
        }
    }

    pub fn usage(&self) -> UsageCount {
        self.folders.values().fold(UsageCount::default(), |u, f| UsageCount {
            messages: u.messages + f.folder.messages as u64,
            bytes: u.bytes + f.folder.size,
        })
    }

    /// UIDVALIDITY for a new folder: the current time, or one more than any the account has
    /// used, whichever is larger, so a folder deleted and created again in the same second
    /// still gets a new one.
    pub fn next_uidvalidity(&self, now: i64) -> u32 {
        (self.max_uidvalidity as u64 + 1).max(now as u64 & 0x7fff_ffff).max(1) as u32
    }

    /// Folders sorted by name, as LIST wants them.
    pub fn sorted_folders(&self) -> Vec<FolderRecord> {
        let mut out: Vec<FolderRecord> = self.folders.values().map(|f| f.folder.clone()).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// An entry being built against a state: folder records are copied on first change.
#[derive(Debug)]
pub struct Draft<'a> {
    pub state: &'a AccountState,
    changed: BTreeMap<u64, FolderRecord>,
    pub entry: LogEntry,
}

impl<'a> Draft<'a> {
    pub fn new(state: &'a AccountState) -> Self {
        Self { state, changed: BTreeMap::new(), entry: LogEntry::default() }
    }

    /// The folder as this draft has it, to change.
    pub fn folder(&mut self, id: u64) -> Result<&mut FolderRecord> {
        if !self.changed.contains_key(&id) {
            let f = self.state.folders.get(&id).ok_or_else(|| MailboxError::not_found("folder", format!("id {id}")))?;
            self.changed.insert(id, f.folder.clone());
        }
        Ok(self.changed.get_mut(&id).expect("inserted above"))
    }

    /// A new folder; its id must be new too.
    pub fn add_folder(&mut self, f: FolderRecord) {
        self.changed.insert(f.id, f);
    }

    /// Adds a message to a folder, advancing UIDNEXT and HIGHESTMODSEQ.
    pub fn insert_message(&mut self, folder_id: u64, mut m: MessageRecord) -> Result<MessageRecord> {
        let folder = self.folder(folder_id)?;
        folder.highest_modseq += 1;
        m.uid = folder.uidnext;
        m.modseq = folder.highest_modseq;
        folder.uidnext = folder
            .uidnext
            .checked_add(1)
            .ok_or_else(|| MailboxError::NotAllowed(format!("folder {} has used every UID", folder.name)))?;
        folder.messages += 1;
        folder.size += m.size;
        count_flags(folder, &m, 1);
        self.entry.messages.push(FolderMessage { folder_id, message: Some(m.clone()) });
        Ok(m)
    }

    /// Removes messages from a folder under one new MODSEQ; returns it.
    pub fn expunge(&mut self, folder_id: u64, msgs: &[MessageRecord]) -> Result<u64> {
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

    pub fn event(&mut self, e: MailboxEvent) {
        self.entry.events.push(e);
    }

    /// The finished entry, with every changed folder record in it.
    pub fn finish(mut self) -> LogEntry {
        let mut folders: Vec<FolderRecord> = self.changed.into_values().collect();
        // New folders first, so that messages and changes of this entry find them.
        folders.sort_by_key(|f| f.id);
        folders.append(&mut self.entry.folders);
        self.entry.folders = folders;
        self.entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(id: u64, name: &str) -> FolderRecord {
        FolderRecord {
            id,
            account_id: 1,
            name: name.into(),
            uidvalidity: 100 + id as u32,
            uidnext: 1,
            highest_modseq: 1,
            ..Default::default()
        }
    }

    #[test]
    fn drafts_assign_increasing_uids_and_modseqs_and_replay_the_same() {
        let mut state = AccountState::default();
        let mut d = Draft::new(&state);
        d.add_folder(folder(7, "INBOX"));
        let entry = d.finish();
        state.apply(1, &entry);
        let mut d = Draft::new(&state);
        let a = d.insert_message(7, MessageRecord { size: 10, ..Default::default() }).unwrap();
        let b =
            d.insert_message(7, MessageRecord { size: 5, flags: vec!["\\Seen".into()], ..Default::default() }).unwrap();
        assert_eq!((a.uid, a.modseq, b.uid, b.modseq), (1, 2, 2, 3));
        let entry = d.finish();
        state.apply(2, &entry);
        let f = &state.folders[&7];
        assert_eq!((f.folder.messages, f.folder.unseen, f.folder.size, f.folder.uidnext), (2, 1, 15, 3));
        let mut d = Draft::new(&state);
        let gone = vec![f.messages[&1].clone()];
        assert_eq!(d.expunge(7, &gone).unwrap(), 4);
        let entry = d.finish();
        state.apply(3, &entry);
        assert_eq!(state.usage(), UsageCount { messages: 1, bytes: 5 });
        // A snapshot and the log replayed give the same state.
        let again = AccountState::from_snapshot(state.snapshot());
        assert_eq!(again.folders[&7].messages, state.folders[&7].messages);
        assert_eq!(again.folders[&7].folder, state.folders[&7].folder);
        assert_eq!(again.sequence, 3);
        assert!(state.next_uidvalidity(0) > 107);
    }

    #[test]
    fn subscribed_names_without_a_folder_replay_and_survive_a_snapshot() {
        let mut state = AccountState::default();
        let added = LogEntry { subscriptions_added: vec!["Gone".into(), "Old/Child".into()], ..Default::default() };
        state.apply(1, &added);
        let taken = LogEntry { subscriptions_removed: vec!["Gone".into()], ..Default::default() };
        state.apply(2, &taken);
        assert_eq!(state.subscribed_without_folder.iter().collect::<Vec<_>>(), ["Old/Child"]);
        // The list is part of the snapshot, so a replica that opens the account from it has it.
        let again = AccountState::from_snapshot(state.snapshot());
        assert_eq!(again.subscribed_without_folder, state.subscribed_without_folder);
        // A snapshot written before the list existed reads as an empty list.
        let old = AccountSnapshot { sequence: 2, ..Default::default() };
        assert!(AccountState::from_snapshot(old).subscribed_without_folder.is_empty());
    }
}
