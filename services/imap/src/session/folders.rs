//! The AUTHENTICATED state: ENABLE, NAMESPACE, LIST and LSUB, STATUS, CREATE, DELETE,
//! RENAME, SUBSCRIBE, UNSUBSCRIBE, APPEND and the QUOTA commands; and the dispatcher that
//! sends SELECTED-state commands on to their files.

use std::{collections::BTreeMap, ops::Bound};

use imap_codec::imap_types::{
    command::CommandBody,
    core::Tag,
    extensions::{binary::LiteralOrLiteral8, enable::CapabilityEnable},
    mailbox::Mailbox,
    status::StatusDataItemName,
};
use tern_proto::v1::{
    CreateFolderRequest, DeleteFolderRequest, ErrorReason, Folder, FolderRef, GetQuotaRequest, ListFoldersRequest,
    RenameFolderRequest, SpecialUse, StatusRequest, SubscribeFolderRequest,
};

use super::{
    Flow, Session,
    response::{Code, Response, StatusItem},
};
use crate::{
    append::{AppendCommand, AppendMessage, CatPart},
    extended::ListCommand,
};

/// Matches a LIST pattern: `*` matches anything, `%` anything but the delimiter.
fn wildcard(pattern: &[char], name: &[char]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some(('*', rest)) => (0..=name.len()).any(|i| wildcard(rest, &name[i..])),
        Some(('%', rest)) => {
            (0..=name.len()).take_while(|i| *i == 0 || name[i - 1] != '/').any(|i| wildcard(rest, &name[i..]))
        }
        Some((c, rest)) => name.first() == Some(c) && wildcard(rest, &name[1..]),
    }
}

fn special_use(f: &Folder) -> Option<&'static str> {
    match SpecialUse::try_from(f.special_use).unwrap_or_default() {
        SpecialUse::None => None,
        SpecialUse::All => Some("\\All"),
        SpecialUse::Archive => Some("\\Archive"),
        SpecialUse::Drafts => Some("\\Drafts"),
        SpecialUse::Flagged => Some("\\Flagged"),
        SpecialUse::Junk => Some("\\Junk"),
        SpecialUse::Sent => Some("\\Sent"),
        SpecialUse::Trash => Some("\\Trash"),
    }
}

impl Session {
    pub(crate) fn account_id(&self) -> u64 {
        self.account.as_ref().map(|a| a.id).unwrap_or_default()
    }

    fn status_items(f: &Folder, items: &[StatusDataItemName]) -> Vec<StatusItem> {
        items
            .iter()
            .map(|i| match i {
                StatusDataItemName::Messages => StatusItem::Number("MESSAGES", f.messages.into()),
                StatusDataItemName::Recent => StatusItem::Number("RECENT", f.recent.into()),
                StatusDataItemName::UidNext => StatusItem::Number("UIDNEXT", f.uidnext.into()),
                StatusDataItemName::UidValidity => StatusItem::Number("UIDVALIDITY", f.uidvalidity.into()),
                StatusDataItemName::Unseen => StatusItem::Number("UNSEEN", f.unseen.into()),
                StatusDataItemName::Deleted => StatusItem::Number("DELETED", f.deleted.into()),
                StatusDataItemName::DeletedStorage => StatusItem::Number("DELETED-STORAGE", 0),
                StatusDataItemName::Size => StatusItem::Number("SIZE", f.size),
                StatusDataItemName::HighestModSeq => StatusItem::Number("HIGHESTMODSEQ", f.highest_modseq),
            })
            .collect()
    }

    /// Commands of the AUTHENTICATED and SELECTED states.
    pub(crate) async fn authenticated(
        &mut self,
        tag: &Tag<'static>,
        body: CommandBody<'static>,
    ) -> std::io::Result<Flow> {
        let account = self.account_id();
        Ok(match body {
            CommandBody::Enable { capabilities } => {
                let mut enabled = Vec::new();
                for c in capabilities.as_ref() {
                    match c {
                        CapabilityEnable::CondStore => {
                            self.enable_condstore();
                            enabled.push("CONDSTORE");
                        }
                        CapabilityEnable::Utf8(_) => {
                            self.utf8 = true;
                            enabled.push("UTF8=ACCEPT");
                        }
                        other if other.to_string().eq_ignore_ascii_case("QRESYNC") => {
                            // QRESYNC implies CONDSTORE (RFC 7162 section 3.2.3).
                            self.qresync = true;
                            self.enable_condstore();
                            enabled.push("QRESYNC");
                        }
                        other => {
                            if other.to_string().eq_ignore_ascii_case("IMAP4rev2") {
                                self.rev2 = true;
                                self.utf8 = true;
                                enabled.push("IMAP4rev2");
                            }
                        }
                    }
                }
                self.send(Response::Enabled(enabled));
                self.ok(tag, "ENABLE completed");
                Flow::Continue
            }
            CommandBody::Namespace => {
                self.send(Response::Namespace);
                self.ok(tag, "NAMESPACE completed");
                Flow::Continue
            }
            CommandBody::Check => {
                self.sync_updates(true).await;
                self.ok(tag, "CHECK completed");
                Flow::Continue
            }
            CommandBody::Status { mailbox, item_names } => {
                let Some(name) = self.mailbox_name(&mailbox) else { return Ok(self.bad(tag, "Invalid mailbox name")) };
                if item_names.iter().any(|i| matches!(i, StatusDataItemName::HighestModSeq)) {
                    self.enable_condstore();
                }
                match self
                    .client
                    .status(StatusRequest { account_id: account, folder: Some(FolderRef::name(name)) })
                    .await
                {
                    Ok(r) => {
                        let f = r.into_inner().folder.unwrap_or_default();
                        let mut items =
                            if self.extras.placeholder { Vec::new() } else { Self::status_items(&f, &item_names) };
                        if self.extras.mailbox_id {
                            items.push(StatusItem::MailboxId(f.id));
                        }
                        let name = self.wire_name(&f.name);
                        self.send(Response::MailboxStatus { name, items });
                        self.ok(tag, "STATUS completed");
                    }
                    Err(s) => self.failed(tag, &s),
                }
                Flow::Continue
            }
            CommandBody::Create { mailbox } => {
                let Some(name) = self.mailbox_name(&mailbox) else { return Ok(self.bad(tag, "Invalid mailbox name")) };
                // A trailing delimiter only says the client intends to create children.
                let name = name.trim_end_matches('/').to_string();
                if let Err(s) = self.create_parents(&name).await {
                    self.failed(tag, &s);
                    return Ok(Flow::Continue);
                }
                let req = CreateFolderRequest { account_id: account, name, ..Default::default() };
                match self.client.create_folder(req).await {
                    Ok(r) => {
                        let id = r.into_inner().folder.map(|f| f.id).unwrap_or_default();
                        self.ok_code(tag, Code::MailboxId(id), "CREATE completed")
                    }
                    Err(s) => self.failed(tag, &s),
                }
                Flow::Continue
            }
            CommandBody::Delete { mailbox } => {
                let Some(name) = self.mailbox_name(&mailbox) else { return Ok(self.bad(tag, "Invalid mailbox name")) };
                if self.selected.as_ref().is_some_and(|s| s.name == name) {
                    self.selected = None;
                }
                match self.client.delete_folder(DeleteFolderRequest { account_id: account, name }).await {
                    Ok(_) => self.ok(tag, "DELETE completed"),
                    Err(s) => self.failed(tag, &s),
                }
                Flow::Continue
            }
            CommandBody::Rename { from, to } => {
                let (Some(from), Some(to)) = (self.mailbox_name(&from), self.mailbox_name(&to)) else {
                    return Ok(self.bad(tag, "Invalid mailbox name"));
                };
                match self.client.rename_folder(RenameFolderRequest { account_id: account, from, to: to.clone() }).await
                {
                    Ok(_) => {
                        if let Err(s) = self.create_parents(&to).await {
                            tracing::warn!(error = %s.message(), "cannot create the parents of a renamed folder");
                        }
                        self.ok(tag, "RENAME completed")
                    }
                    Err(s) => self.failed(tag, &s),
                }
                Flow::Continue
            }
            CommandBody::Subscribe { mailbox } => self.subscribe(tag, mailbox, true).await,
            CommandBody::GetMetadata { options, mailbox, entries } => {
                self.get_metadata(tag, options, mailbox, entries).await
            }
            CommandBody::SetMetadata { mailbox, entry_values } => self.set_metadata(tag, mailbox, entry_values).await,
            CommandBody::Unsubscribe { mailbox } => self.subscribe(tag, mailbox, false).await,
            CommandBody::Append { mailbox, flags, date, message } => {
                let mailbox = match mailbox {
                    Mailbox::Inbox => b"INBOX".to_vec(),
                    Mailbox::Other(other) => other.as_ref().to_vec(),
                };
                let data = match message {
                    LiteralOrLiteral8::Literal(l) => l.data().to_vec(),
                    LiteralOrLiteral8::Literal8(l) => l.data.to_vec(),
                };
                let message = AppendMessage {
                    flags,
                    date: date.map(|d| d.as_ref().timestamp()),
                    parts: vec![CatPart::Text(data)],
                    catenate: false,
                };
                self.append(AppendCommand { tag: tag.clone(), mailbox, messages: vec![message] }).await
            }
            CommandBody::GetQuotaRoot { mailbox } => {
                let name = self.mailbox_name(&mailbox).unwrap_or_default();
                self.send(Response::QuotaRoot(self.wire_name(&name)));
                self.quota(tag, "GETQUOTAROOT").await
            }
            CommandBody::GetQuota { root } => {
                if !root.as_ref().is_empty() {
                    self.no_code(tag, Code::Atom("NONEXISTENT"), "No such quota root");
                    return Ok(Flow::Continue);
                }
                self.quota(tag, "GETQUOTA").await
            }
            CommandBody::Select { mailbox, parameters } => self.select(tag, mailbox, parameters, false).await,
            CommandBody::Examine { mailbox, parameters } => self.select(tag, mailbox, parameters, true).await,
            CommandBody::Idle => self.idle(tag).await?,
            CommandBody::Compress { .. } => self.compress(tag).await?,
            other if self.selected.is_none() => {
                let name = other.name();
                self.bad(tag, format!("{name} needs a selected mailbox"))
            }
            other => self.in_selected(tag, other).await?,
        })
    }

    /// Creates the superior names that `name` needs and that do not exist yet (RFC 9051 section
    /// 6.3.4); without them a LIST with `%` would never show the folder.
    async fn create_parents(&mut self, name: &str) -> Result<(), tonic::Status> {
        let account_id = self.account_id();
        for (i, _) in name.match_indices('/').filter(|(i, _)| *i > 0) {
            let req = CreateFolderRequest { account_id, name: name[..i].to_string(), ..Default::default() };
            match self.client.create_folder(req).await {
                Err(s) if ErrorReason::of(&s) != ErrorReason::AlreadyExists => return Err(s),
                _ => {}
            }
        }
        Ok(())
    }

    async fn subscribe(&mut self, tag: &Tag<'static>, mailbox: Mailbox<'static>, subscribed: bool) -> Flow {
        let Some(name) = self.mailbox_name(&mailbox) else { return self.bad(tag, "Invalid mailbox name") };
        let req = SubscribeFolderRequest { account_id: self.account_id(), name, subscribed };
        match self.client.subscribe_folder(req).await {
            Ok(_) => self.ok(tag, if subscribed { "SUBSCRIBE completed" } else { "UNSUBSCRIBE completed" }),
            Err(s) => self.failed(tag, &s),
        }
        Flow::Continue
    }

    async fn quota(&mut self, tag: &Tag<'static>, what: &str) -> Flow {
        match self.client.get_quota(GetQuotaRequest { account_id: self.account_id() }).await {
            Ok(r) => {
                let u = r.into_inner().usage.unwrap_or_default();
                if u.quota_bytes > 0 {
                    // STORAGE is in units of 1024 octets (RFC 9208).
                    self.send(Response::Quota(Some((u.bytes.div_ceil(1024), u.quota_bytes / 1024))));
                } else {
                    self.send(Response::Quota(None));
                }
                self.ok(tag, format!("{what} completed"));
            }
            Err(s) => self.failed(tag, &s),
        }
        Flow::Continue
    }

    /// LIST and LSUB, basic and extended (RFC 5258), with LIST-STATUS (RFC 5819).
    pub(crate) async fn list(&mut self, cmd: ListCommand) -> Flow {
        let tag = &cmd.tag;
        let what = if cmd.lsub { "LSUB" } else { "LIST" };
        let decode = |raw: &[u8], utf8: bool| {
            let s = String::from_utf8_lossy(raw).into_owned();
            if utf8 { s } else { crate::utf7::decode(&s).unwrap_or(s) }
        };
        let reference = decode(&cmd.reference, self.utf8);
        let patterns: Vec<String> = cmd.patterns.iter().map(|p| decode(p, self.utf8)).collect();
        if !cmd.lsub && !cmd.extended && patterns.iter().all(String::is_empty) {
            // The hierarchy delimiter request (RFC 9051 section 6.3.9).
            self.send(Response::List {
                lsub: false,
                attributes: vec!["\\Noselect"],
                name: String::new(),
                child_info: None,
            });
            self.ok(tag, "LIST completed");
            return Flow::Continue;
        }
        let with_status = cmd.return_status.is_some() || cmd.return_mailbox_id;
        let req = ListFoldersRequest { account_id: self.account_id(), with_status };
        let list = match self.client.list_folders(req).await {
            Ok(r) => r.into_inner(),
            Err(s) => {
                self.failed(tag, &s);
                return Flow::Continue;
            }
        };
        let full: Vec<Vec<char>> = patterns.iter().map(|p| format!("{reference}{p}").chars().collect()).collect();
        let matches = |name: &str| {
            let chars: Vec<char> = name.chars().collect();
            full.iter().any(|p| {
                // INBOX matches case-insensitively.
                let upper: Vec<char> = p.iter().map(|c| c.to_ascii_uppercase()).collect();
                wildcard(p, &chars) || (name == "INBOX" && wildcard(&upper, &chars))
            })
        };
        // LSUB reports a parent that is not subscribed itself, for its subscribed descendants
        // that `%` stops short of (RFC 3501 section 6.3.9); like Dovecot, only when the pattern
        // ends in `%`, the case the RFC describes.
        let ends_in_percent = full.iter().any(|p| p.last() == Some(&'%'));
        let names = listed_names(&list.folders, &list.subscribed_without_folder);
        // LSUB and the SUBSCRIBED selection option list subscribed names, whether a folder has
        // them or not; otherwise only folders are listed. SPECIAL-USE lists those with a
        // special use.
        let subscribed_only = cmd.lsub || cmd.select_subscribed;
        let selected = |l: &Listed| {
            (if subscribed_only { l.subscribed } else { l.folder.is_some() })
                && (!cmd.select_special_use || l.folder.and_then(special_use).is_some())
        };
        let mut out = Vec::new();
        for (name, l) in &names {
            if !matches(name) {
                continue;
            }
            let prefix = format!("{name}/");
            let below = || descendants(&names, &prefix);
            // RECURSIVEMATCH: a name with a selected descendant that the patterns do not match
            // is reported with CHILDINFO, whether it is selected itself or not, and whether a
            // folder has it or not (RFC 5258 section 3.5).
            let child_info = cmd.recursive_match && below().any(|(n, d)| selected(d) && !matches(n));
            let noselect_parent =
                cmd.lsub && ends_in_percent && !l.subscribed && below().any(|(n, d)| d.subscribed && !matches(n));
            if !selected(l) && !child_info && !noselect_parent {
                continue;
            }
            let mut attrs = Vec::new();
            if cmd.lsub {
                // LSUB answers as Dovecot does: \Noselect for such a parent, a folder's special
                // use (which Dovecot keeps in LSUB for Outlook 2013), and nothing else, since
                // the attributes of LIST are the authoritative ones (RFC 3501 section 7.2.3).
                if noselect_parent {
                    attrs.push("\\Noselect");
                } else {
                    attrs.extend(l.folder.and_then(special_use));
                }
            } else {
                if l.folder.is_none() {
                    attrs.push("\\NonExistent");
                }
                // Children are folders; in a listing of subscribed names, subscribed names too,
                // as Dovecot counts them, so a name reported for its subscribed descendants
                // does not say it has none.
                let has_children = below().any(|(_, d)| d.folder.is_some() || (subscribed_only && d.subscribed));
                attrs.push(if has_children { "\\HasChildren" } else { "\\HasNoChildren" });
                attrs.extend(l.folder.and_then(special_use));
                if l.subscribed && (self.rev2 || subscribed_only || cmd.return_subscribed) {
                    attrs.push("\\Subscribed");
                }
            }
            let encoded = self.wire_name(name);
            let why = if subscribed_only { "SUBSCRIBED" } else { "SPECIAL-USE" };
            out.push(Response::List {
                lsub: cmd.lsub,
                attributes: attrs,
                name: encoded.clone(),
                child_info: child_info.then_some(why),
            });
            // A name without a folder has no status (RFC 5819).
            if let (true, Some(f)) = (with_status, l.folder) {
                let mut items = cmd.return_status.as_deref().map(|i| Self::status_items(f, i)).unwrap_or_default();
                if cmd.return_mailbox_id {
                    items.push(StatusItem::MailboxId(f.id));
                }
                out.push(Response::MailboxStatus { name: encoded, items });
            }
        }
        self.send_all(out);
        self.ok(tag, format!("{what} completed"));
        Flow::Continue
    }
}

/// A name LIST or LSUB may report: a folder, a subscribed name that no folder has, or a
/// parent of either that is neither.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Listed<'a> {
    folder: Option<&'a Folder>,
    subscribed: bool,
}

/// Every name a listing may report, sorted: the folders, the subscribed names without a
/// folder, and the parents of both, which RECURSIVEMATCH and LSUB report for their
/// descendants even when no folder has them.
fn listed_names<'a>(folders: &'a [Folder], subscribed_without_folder: &'a [String]) -> BTreeMap<&'a str, Listed<'a>> {
    let mut names = BTreeMap::new();
    for f in folders {
        names.insert(f.name.as_str(), Listed { folder: Some(f), subscribed: f.subscribed });
    }
    for n in subscribed_without_folder {
        names.entry(n.as_str()).or_insert(Listed { folder: None, subscribed: false }).subscribed = true;
    }
    let parents: Vec<&str> =
        names.keys().flat_map(|n| n.match_indices('/').map(|(i, _)| &n[..i])).filter(|p| !p.is_empty()).collect();
    for p in parents {
        names.entry(p).or_insert(Listed { folder: None, subscribed: false });
    }
    names
}

/// The names below `prefix` (a name and the delimiter), which sort together after it.
fn descendants<'m, 'a>(
    names: &'m BTreeMap<&'a str, Listed<'a>>,
    prefix: &'m str,
) -> impl Iterator<Item = (&'m &'a str, &'m Listed<'a>)> {
    names.range::<str, _>((Bound::Excluded(prefix), Bound::Unbounded)).take_while(move |(n, _)| n.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use tern_proto::v1::Folder;

    use super::{descendants, listed_names, wildcard};

    fn m(p: &str, n: &str) -> bool {
        wildcard(&p.chars().collect::<Vec<_>>(), &n.chars().collect::<Vec<_>>())
    }

    #[test]
    fn list_wildcards() {
        assert!(m("*", "a/b/c"));
        assert!(m("%", "Sent"));
        assert!(!m("%", "a/b"));
        assert!(m("a/%", "a/b"));
        assert!(!m("a/%", "a/b/c"));
        assert!(m("a/*", "a/b/c"));
        assert!(m("INBOX", "INBOX"));
        assert!(!m("Sent", "Sent/2024"));
    }

    #[test]
    fn listed_names_hold_subscriptions_without_folders_and_their_parents() {
        let folder = |name: &str, subscribed: bool| Folder { name: name.into(), subscribed, ..Default::default() };
        let folders = [folder("INBOX", true), folder("Work", false)];
        let lone = ["Gone/Child".to_string(), "Work/Old".to_string()];
        let names = listed_names(&folders, &lone);
        let summary: Vec<(&str, bool, bool)> =
            names.iter().map(|(n, l)| (*n, l.folder.is_some(), l.subscribed)).collect();
        assert_eq!(
            summary,
            [
                ("Gone", false, false),
                ("Gone/Child", false, true),
                ("INBOX", true, true),
                ("Work", true, false),
                ("Work/Old", false, true)
            ]
        );
        let below: Vec<&str> = descendants(&names, "Work/").map(|(n, _)| *n).collect();
        assert_eq!(below, ["Work/Old"]);
        assert_eq!(descendants(&names, "INBOX/").count(), 0);
    }
}
