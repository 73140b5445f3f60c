//! NOTIFY (RFC 5465): the client names the mailboxes and the kinds of change it wants to hear
//! of, and is told as they happen, even between commands, without IDLE.
//!
//! The selected mailbox is told as always (EXISTS, FETCH, and EXPUNGE only while a command
//! runs). Other mailboxes: a new, expunged or changed message is a STATUS response with
//! MESSAGES, UIDNEXT and UNSEEN (and HIGHESTMODSEQ under CONDSTORE); a created, deleted or
//! renamed mailbox is a LIST response (`\NonExistent`, `OLDNAME`); a subscription change is a
//! LIST with or without `\Subscribed`. Every change reaches the session through the account's
//! event feed, which it follows from login on.

use std::collections::{HashMap, HashSet};

use tern_proto::v1::{EventKind, Folder, FolderRef, ListFoldersRequest, MailboxEvent, StatusRequest};

use super::{
    Flow, Session,
    response::{Code, Response, StatusItem},
};
use crate::notify::{Event, Filter, NotifyCommand, covers};

/// The code that refuses an event Tern does not send, listing those it does (section 3.1).
const BADEVENT: &str = "BADEVENT (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)";

/// What a NOTIFY SET asked for, and what the session knows of the user's mailboxes to answer it.
#[derive(Debug, Clone, Default)]
pub(crate) struct NotifyState {
    /// Each group's filter, the names its subtree or mailboxes filter gives (decoded), and
    /// its events.
    groups: Vec<(Filter, Vec<String>, Vec<Event>)>,
    /// Folder names by id, for a rename's OLDNAME.
    folders: HashMap<u64, String>,
    /// The subscribed names, for the `subscribed` filter.
    subscribed: HashSet<String>,
}

impl NotifyState {
    /// Whether a change of `kind` to the mailbox `name` is wanted.
    fn wants(&self, name: &str, event: &Event) -> bool {
        let subscribed = self.subscribed.contains(name);
        self.groups
            .iter()
            .any(|(filter, names, events)| events.contains(event) && covers(filter, names, name, subscribed))
    }
}

impl Session {
    pub(crate) async fn notify(&mut self, command: NotifyCommand) -> Flow {
        let (tag, status, groups) = match command {
            NotifyCommand::None { tag } => {
                self.notify = None;
                self.ok(&tag, "NOTIFY completed");
                return Flow::Continue;
            }
            NotifyCommand::Set { tag, status, groups } => (tag, status, groups),
        };
        if groups.iter().flat_map(|g| &g.events).any(|e| matches!(e, Event::Other(_))) {
            self.no_code(&tag, Code::Atom(BADEVENT), "Tern does not send some of these events");
            return Flow::Continue;
        }
        let mut state = NotifyState::default();
        for group in groups {
            let raw = match &group.filter {
                Filter::Subtree(names) | Filter::Mailboxes(names) => names.clone(),
                _ => Vec::new(),
            };
            let mut names = Vec::with_capacity(raw.len());
            for name in raw {
                match self.raw_mailbox_name(&name) {
                    Some(n) => names.push(n),
                    None => return self.bad(&tag, "Invalid mailbox name"),
                }
            }
            state.groups.push((group.filter, names, group.events));
        }
        let account_id = self.account_id();
        let list = match self.client.list_folders(ListFoldersRequest { account_id, with_status: status }).await {
            Ok(r) => r.into_inner(),
            Err(s) => {
                self.failed(&tag, &s);
                return Flow::Continue;
            }
        };
        state.folders = list.folders.iter().map(|f| (f.id, f.name.clone())).collect();
        state.subscribed = list.folders.iter().filter(|f| f.subscribed).map(|f| f.name.clone()).collect();
        state.subscribed.extend(list.subscribed_without_folder.iter().cloned());
        if status {
            // The state of each mailbox the client will hear of, to start from (section 5.1).
            let selected = self.selected.as_ref().map(|s| s.id);
            for f in &list.folders {
                if Some(f.id) == selected || !state.wants(&f.name, &Event::MessageNew) {
                    continue;
                }
                self.send_status(f, ("UIDVALIDITY", u64::from(f.uidvalidity)));
            }
        }
        self.notify = Some(state);
        self.ok(&tag, "NOTIFY completed");
        Flow::Continue
    }

    /// A STATUS notification of a mailbox: MESSAGES, UIDNEXT, `third`, and HIGHESTMODSEQ under
    /// CONDSTORE.
    fn send_status(&mut self, f: &Folder, third: (&'static str, u64)) {
        let mut items = vec![
            StatusItem::Number("MESSAGES", u64::from(f.messages)),
            StatusItem::Number("UIDNEXT", u64::from(f.uidnext)),
            StatusItem::Number(third.0, third.1),
        ];
        if self.condstore {
            items.push(StatusItem::Number("HIGHESTMODSEQ", f.highest_modseq));
        }
        self.send(Response::MailboxStatus { name: self.wire_name(&f.name), items });
    }

    /// Tells the client of a change outside the selected mailbox, when NOTIFY asked for it.
    pub(crate) async fn notify_other(&mut self, e: &MailboxEvent) {
        let Some(state) = self.notify.as_mut() else { return };
        let selected = self.selected.as_ref().map(|s| s.id);
        let name = e.folder_name.clone();
        let kind = EventKind::try_from(e.kind).unwrap_or_default();
        let message_event = match kind {
            EventKind::Append => Some(Event::MessageNew),
            EventKind::Expunge => Some(Event::MessageExpunge),
            EventKind::Flags => Some(Event::FlagChange),
            _ => None,
        };
        if let Some(event) = message_event {
            if Some(e.folder_id) == selected || !state.wants(&name, &event) {
                return;
            }
            let req = StatusRequest { account_id: e.account_id, folder: Some(FolderRef::id(e.folder_id)) };
            // A folder gone meanwhile has nothing to tell; its deletion is an event of its own.
            let Ok(Some(f)) = self.client.status(req).await.map(|r| r.into_inner().folder) else { return };
            self.send_status(&f, ("UNSEEN", u64::from(f.unseen)));
            return;
        }
        let response = match kind {
            EventKind::FolderCreated => {
                state.folders.insert(e.folder_id, name.clone());
                state.wants(&name, &Event::MailboxName).then(|| (vec![], None))
            }
            EventKind::FolderDeleted => {
                state.folders.remove(&e.folder_id);
                state.wants(&name, &Event::MailboxName).then(|| (vec!["\\NonExistent"], None))
            }
            EventKind::FolderRenamed => {
                let old = state.folders.insert(e.folder_id, name.clone());
                let wanted = state.wants(&name, &Event::MailboxName)
                    || old.as_deref().is_some_and(|o| state.wants(o, &Event::MailboxName));
                wanted.then(|| (vec![], old))
            }
            EventKind::Subscribed | EventKind::Unsubscribed => {
                let on = kind == EventKind::Subscribed;
                if on {
                    state.subscribed.insert(name.clone());
                } else {
                    state.subscribed.remove(&name);
                }
                let wanted = state.wants(&name, &Event::SubscriptionChange);
                wanted.then(|| (if on { vec!["\\Subscribed"] } else { vec![] }, None))
            }
            _ => None,
        };
        if let Some((attributes, old)) = response {
            let name = self.wire_name(&name);
            let old = old.map(|o| self.wire_name(&o));
            self.send(Response::ListNotify { attributes, name, old });
        }
    }
}
