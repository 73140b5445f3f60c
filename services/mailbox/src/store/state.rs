//! One account's folders, messages and subscriptions in memory: the fold of the account's log
//! (a snapshot, then every entry after it, applied in log order). No I/O here.
//!
//! The NATS backend keeps the accounts it serves in this form, and the core's property tests
//! use it as the reference state. Entries record effects (records as they are after the
//! change, with UIDs and MODSEQs assigned; see [`super::log`]), so applying one cannot fail and
//! every replica that applies the same entries in the same order has the same state.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    error::Result,
    records::{AccountSnapshot, Expunged, FolderRecord, FolderSnapshot, LogEntry, MessageRecord},
    store::{UsageCount, log},
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
    pub fn apply(&mut self, sequence: u64, entry: &LogEntry) {
        for part in entry.parts() {
            self.apply_part(part);
        }
        self.sequence = sequence;
        self.since_snapshot += 1;
    }

    /// Applies one write of an entry (the entry itself, or one of its batch).
    fn apply_part(&mut self, e: &LogEntry) {
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
    }

    pub fn usage(&self) -> UsageCount {
        self.folders.values().fold(UsageCount::default(), |u, f| UsageCount {
            messages: u.messages + f.folder.messages as u64,
            bytes: u.bytes + f.folder.size,
        })
    }

    /// The state as the core reads it, for the account `account_id`.
    pub fn view(&self, account_id: u64) -> StateView<'_> {
        StateView { account_id, state: self }
    }
}

/// An [`AccountState`] read by the core ([`log::View`]).
#[derive(Debug, Clone, Copy)]
pub struct StateView<'a> {
    account_id: u64,
    state: &'a AccountState,
}

impl log::View for StateView<'_> {
    fn account_id(&self) -> u64 {
        self.account_id
    }

    fn folder(&self, id: u64) -> Result<Option<FolderRecord>> {
        Ok(self.state.folders.get(&id).map(|f| f.folder.clone()))
    }

    fn folder_named(&self, name: &str) -> Result<Option<FolderRecord>> {
        Ok(self.state.folders.values().find(|f| f.folder.name == name).map(|f| f.folder.clone()))
    }

    fn folders(&self) -> Result<Vec<FolderRecord>> {
        let mut out: Vec<FolderRecord> = self.state.folders.values().map(|f| f.folder.clone()).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn message(&self, folder: u64, uid: u32) -> Result<Option<MessageRecord>> {
        Ok(self.state.folders.get(&folder).and_then(|f| f.messages.get(&uid)).cloned())
    }

    fn each_message(&self, folder: u64, f: &mut dyn FnMut(&MessageRecord)) -> Result<()> {
        if let Some(folder) = self.state.folders.get(&folder) {
            folder.messages.values().for_each(f);
        }
        Ok(())
    }

    fn each_message_from(&self, folder: u64, uid: u32, f: &mut dyn FnMut(&MessageRecord)) -> Result<()> {
        if let Some(folder) = self.state.folders.get(&folder) {
            folder.messages.range(uid..).for_each(|(_, m)| f(m));
        }
        Ok(())
    }

    fn count_from(&self, folder: u64, uid: u32) -> Result<u32> {
        Ok(self.state.folders.get(&folder).map_or(0, |f| f.messages.range(uid..).count() as u32))
    }

    fn vanished_since(&self, folder: u64, modseq: u64) -> Result<Vec<u32>> {
        let mut out: Vec<u32> = self
            .state
            .folders
            .get(&folder)
            .map(|f| f.expunged.iter().filter(|x| x.modseq > modseq).map(|x| x.uid).collect())
            .unwrap_or_default();
        out.sort_unstable();
        Ok(out)
    }

    fn subscribed_without_folder(&self) -> Result<Vec<String>> {
        Ok(self.state.subscribed_without_folder.iter().cloned().collect())
    }

    fn usage(&self) -> Result<UsageCount> {
        Ok(self.state.usage())
    }

    fn last_uidvalidity(&self) -> Result<u64> {
        Ok(self.state.max_uidvalidity as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::AccountRecord;

    #[test]
    fn entries_of_the_core_replay_to_the_same_state() {
        use tern_proto::v1::{FolderRef, SpecialUse};

        use crate::{parse, store::NewMessage};

        let mut state = AccountState::default();
        let mut seq = 0;
        let mut commit = |state: &mut AccountState, entry: Option<LogEntry>| {
            seq += 1;
            state.apply(seq, &entry.expect("a change"));
        };
        let (entry, inbox) = log::create_folder(&state.view(1), "INBOX", SpecialUse::None, 7, 107).unwrap();
        commit(&mut state, entry);
        let account = AccountRecord { id: 1, ..Default::default() };
        let message = |size| NewMessage {
            blob_id: "b".into(),
            size,
            internal_date: 0,
            parsed: parse::parse(b""),
            uid: 0,
            quota_exempt: false,
        };
        let (entry, a) = log::append(&state.view(1), &account, &FolderRef::id(inbox.id), &[], &message(10), 1).unwrap();
        commit(&mut state, entry);
        let (entry, b) =
            log::append(&state.view(1), &account, &FolderRef::id(7), &["\\Seen".into()], &message(5), 2).unwrap();
        commit(&mut state, entry);
        assert_eq!((a.uid, a.modseq, b.uid, b.modseq), (1, 2, 2, 3));
        let f = &state.folders[&7];
        assert_eq!((f.folder.messages, f.folder.unseen, f.folder.size, f.folder.uidnext), (2, 1, 15, 3));
        let (entry, (gone, modseq)) = log::expunge(&state.view(1), 7, Some(&[1]), false).unwrap();
        commit(&mut state, entry);
        assert_eq!((gone, modseq), (vec![1], 4));
        assert_eq!(state.usage(), UsageCount { messages: 1, bytes: 5 });
        // A snapshot and the log replayed give the same state.
        let again = AccountState::from_snapshot(state.snapshot());
        assert_eq!(again.folders[&7].messages, state.folders[&7].messages);
        assert_eq!(again.folders[&7].folder, state.folders[&7].folder);
        assert_eq!(again.sequence, 3 + 1);
        assert_eq!(state.max_uidvalidity, 107);
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

    #[test]
    fn a_batch_applies_its_writes_in_turn_as_one_entry() {
        use tern_proto::v1::{FolderRef, SpecialUse};

        use crate::{parse, store::NewMessage};

        // Built one after another against the state each leaves, as a group commit does.
        let mut state = AccountState::default();
        let mut parts = Vec::new();
        let mut step = |state: &mut AccountState, entry: Option<LogEntry>| {
            let entry = entry.expect("a change");
            state.apply(0, &entry);
            parts.push(entry);
        };
        let (entry, inbox) = log::create_folder(&state.view(1), "INBOX", SpecialUse::None, 7, 107).unwrap();
        step(&mut state, entry);
        let account = AccountRecord { id: 1, ..Default::default() };
        let message = NewMessage {
            blob_id: "b".into(),
            size: 10,
            internal_date: 0,
            parsed: parse::parse(b""),
            uid: 0,
            quota_exempt: false,
        };
        for email_id in 1..=3 {
            let (entry, _) =
                log::append(&state.view(1), &account, &FolderRef::id(inbox.id), &[], &message, email_id).unwrap();
            step(&mut state, entry);
        }
        let (entry, _) = log::expunge(&state.view(1), 7, Some(&[2]), false).unwrap();
        step(&mut state, entry);
        // Order matters within a batch: a name subscribed and then unsubscribed is not subscribed.
        step(&mut state, Some(LogEntry { subscriptions_added: vec!["X".into()], ..Default::default() }));
        step(&mut state, Some(LogEntry { subscriptions_removed: vec!["X".into()], ..Default::default() }));

        let batch = LogEntry { batch: parts.clone(), ..Default::default() };
        let mut replayed = AccountState::default();
        replayed.apply(9, &batch);
        assert_eq!(replayed.sequence, 9);
        assert_eq!(replayed.folders[&7].folder, state.folders[&7].folder);
        assert_eq!(replayed.folders[&7].messages.keys().collect::<Vec<_>>(), [&1, &3]);
        assert_eq!(replayed.folders[&7].messages, state.folders[&7].messages);
        assert!(replayed.subscribed_without_folder.is_empty());
        let events: usize = parts.iter().map(|p| p.events.len()).sum();
        assert_eq!(batch.into_events().len(), events);
    }
}
