//! The AUTHENTICATED state: ENABLE, NAMESPACE, LIST and LSUB, STATUS, CREATE, DELETE,
//! RENAME, SUBSCRIBE, UNSUBSCRIBE, APPEND and the QUOTA commands; and the dispatcher that
//! sends SELECTED-state commands on to their files.

use imap_codec::imap_types::{
    command::CommandBody,
    core::Tag,
    extensions::{binary::LiteralOrLiteral8, enable::CapabilityEnable},
    flag::Flag,
    mailbox::{ListMailbox, Mailbox},
    status::StatusDataItemName,
};
use tern_proto::v1::{
    AppendHeader, AppendRequest, CreateFolderRequest, DeleteFolderRequest, ErrorReason, Folder, FolderRef,
    GetQuotaRequest, ListFoldersRequest, RenameFolderRequest, SpecialUse, StatusRequest, SubscribeFolderRequest,
    append_request,
};

use super::{Flow, Session};

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

pub(crate) fn flag_string(f: &Flag<'_>) -> String {
    f.to_string()
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
    fn account_id(&self) -> u64 {
        self.account.as_ref().map(|a| a.id).unwrap_or_default()
    }

    fn status_items(f: &Folder, items: &[StatusDataItemName]) -> String {
        let parts: Vec<String> = items
            .iter()
            .map(|i| match i {
                StatusDataItemName::Messages => format!("MESSAGES {}", f.messages),
                StatusDataItemName::Recent => "RECENT 0".to_string(),
                StatusDataItemName::UidNext => format!("UIDNEXT {}", f.uidnext),
                StatusDataItemName::UidValidity => format!("UIDVALIDITY {}", f.uidvalidity),
                StatusDataItemName::Unseen => format!("UNSEEN {}", f.unseen),
                StatusDataItemName::Deleted => format!("DELETED {}", f.deleted),
                StatusDataItemName::DeletedStorage => "DELETED-STORAGE 0".to_string(),
                StatusDataItemName::Size => format!("SIZE {}", f.size),
                StatusDataItemName::HighestModSeq => format!("HIGHESTMODSEQ {}", f.highest_modseq),
            })
            .collect();
        parts.join(" ")
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
                            self.condstore = true;
                            enabled.push("CONDSTORE".to_string());
                        }
                        CapabilityEnable::Utf8(_) => {
                            self.utf8 = true;
                            enabled.push("UTF8=ACCEPT".to_string());
                        }
                        other if other.to_string().eq_ignore_ascii_case("QRESYNC") => {
                            // QRESYNC implies CONDSTORE (RFC 7162 section 3.2.3).
                            self.qresync = true;
                            self.condstore = true;
                            enabled.push("QRESYNC".to_string());
                        }
                        other => {
                            if other.to_string().eq_ignore_ascii_case("IMAP4rev2") {
                                self.rev2 = true;
                                self.utf8 = true;
                                enabled.push("IMAP4rev2".to_string());
                            }
                        }
                    }
                }
                self.untagged(format!("ENABLED {}", enabled.join(" ")).trim_end());
                self.ok(tag, "ENABLE completed");
                Flow::Continue
            }
            CommandBody::Namespace => {
                self.untagged("NAMESPACE ((\"\" \"/\")) NIL NIL");
                self.ok(tag, "NAMESPACE completed");
                Flow::Continue
            }
            CommandBody::Check => {
                self.sync_updates(true).await;
                self.ok(tag, "CHECK completed");
                Flow::Continue
            }
            CommandBody::List { reference, mailbox_wildcard } => {
                self.list(tag, reference, mailbox_wildcard, false).await
            }
            CommandBody::Lsub { reference, mailbox_wildcard } => {
                self.list(tag, reference, mailbox_wildcard, true).await
            }
            CommandBody::Status { mailbox, item_names } => {
                let Some(name) = self.mailbox_name(&mailbox) else { return Ok(self.bad(tag, "Invalid mailbox name")) };
                match self
                    .client
                    .status(StatusRequest { account_id: account, folder: Some(FolderRef::name(name)) })
                    .await
                {
                    Ok(r) => {
                        let f = r.into_inner().folder.unwrap_or_default();
                        let items = Self::status_items(&f, &item_names);
                        let name = self.encode_name(&f.name);
                        self.untagged(&format!("STATUS {name} ({items})"));
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
                let req = CreateFolderRequest { account_id: account, name, special_use: 0 };
                match self.client.create_folder(req).await {
                    Ok(_) => self.ok(tag, "CREATE completed"),
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
            CommandBody::Unsubscribe { mailbox } => self.subscribe(tag, mailbox, false).await,
            CommandBody::Append { mailbox, flags, date, message } => {
                let Some(name) = self.mailbox_name(&mailbox) else { return Ok(self.bad(tag, "Invalid mailbox name")) };
                let data = match message {
                    LiteralOrLiteral8::Literal(l) => l.data().to_vec(),
                    LiteralOrLiteral8::Literal8(l) => l.data.to_vec(),
                };
                let header = AppendHeader {
                    account_id: account,
                    folder: Some(FolderRef::name(name)),
                    flags: flags.iter().map(flag_string).collect(),
                    internal_date: date.map(|d| d.as_ref().timestamp()).unwrap_or(0),
                    size_hint: data.len() as u64,
                };
                let mut reqs = vec![AppendRequest { part: Some(append_request::Part::Header(header)) }];
                reqs.extend(
                    data.chunks(256 * 1024)
                        .map(|c| AppendRequest { part: Some(append_request::Part::Chunk(c.to_vec())) }),
                );
                match self.client.append(futures::stream::iter(reqs)).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        self.catch_up(r.folder_id, r.modseq, r.uid).await;
                        self.sync_updates(true).await;
                        self.ok(tag, &format!("[APPENDUID {} {}] APPEND completed", r.uidvalidity, r.uid));
                    }
                    Err(s) if s.code() == tonic::Code::NotFound => {
                        self.no(tag, &format!("[TRYCREATE] {}", s.message()));
                    }
                    Err(s) => self.failed(tag, &s),
                }
                Flow::Continue
            }
            CommandBody::GetQuotaRoot { mailbox } => {
                let name = self.mailbox_name(&mailbox).unwrap_or_default();
                self.untagged(&format!("QUOTAROOT {} \"\"", self.encode_name(&name)));
                self.quota(tag, "GETQUOTAROOT").await
            }
            CommandBody::GetQuota { root } => {
                if !root.as_ref().is_empty() {
                    self.no(tag, "[NONEXISTENT] No such quota root");
                    return Ok(Flow::Continue);
                }
                self.quota(tag, "GETQUOTA").await
            }
            CommandBody::Select { mailbox, parameters } => self.select(tag, mailbox, parameters, false).await,
            CommandBody::Examine { mailbox, parameters } => self.select(tag, mailbox, parameters, true).await,
            CommandBody::Idle => self.idle(tag).await?,
            other if self.selected.is_none() => {
                let name = other.name();
                self.bad(tag, &format!("{name} needs a selected mailbox"))
            }
            other => self.in_selected(tag, other).await?,
        })
    }

    /// Creates the superior names that `name` needs and that do not exist yet (RFC 9051 section
    /// 6.3.4); without them a LIST with `%` would never show the folder.
    async fn create_parents(&mut self, name: &str) -> Result<(), tonic::Status> {
        let account_id = self.account_id();
        for (i, _) in name.match_indices('/').filter(|(i, _)| *i > 0) {
            let req = CreateFolderRequest { account_id, name: name[..i].to_string(), special_use: 0 };
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
                    self.untagged(&format!("QUOTA \"\" (STORAGE {} {})", u.bytes.div_ceil(1024), u.quota_bytes / 1024));
                } else {
                    self.untagged("QUOTA \"\" ()");
                }
                self.ok(tag, &format!("{what} completed"));
            }
            Err(s) => self.failed(tag, &s),
        }
        Flow::Continue
    }

    async fn list(
        &mut self,
        tag: &Tag<'static>,
        reference: Mailbox<'static>,
        pattern: ListMailbox<'static>,
        lsub: bool,
    ) -> Flow {
        let what = if lsub { "LSUB" } else { "LIST" };
        let pattern_bytes = match &pattern {
            ListMailbox::Token(t) => t.as_ref().to_vec(),
            ListMailbox::String(s) => s.as_ref().to_vec(),
        };
        let reference = match &reference {
            Mailbox::Inbox => "INBOX".to_string(),
            Mailbox::Other(o) => String::from_utf8_lossy(o.as_ref()).into_owned(),
        };
        let raw_pattern = String::from_utf8_lossy(&pattern_bytes).into_owned();
        let (reference, raw_pattern) = if self.utf8 {
            (reference, raw_pattern)
        } else {
            (
                crate::utf7::decode(&reference).unwrap_or(reference),
                crate::utf7::decode(&raw_pattern).unwrap_or(raw_pattern),
            )
        };
        if raw_pattern.is_empty() && !lsub {
            // The hierarchy delimiter request (RFC 9051 section 6.3.9).
            self.untagged("LIST (\\Noselect) \"/\" \"\"");
            self.ok(tag, "LIST completed");
            return Flow::Continue;
        }
        let full: Vec<char> = format!("{reference}{raw_pattern}").chars().collect();
        let folders = match self
            .client
            .list_folders(ListFoldersRequest { account_id: self.account_id(), with_status: false })
            .await
        {
            Ok(r) => r.into_inner().folders,
            Err(s) => {
                self.failed(tag, &s);
                return Flow::Continue;
            }
        };
        let names: Vec<String> = folders.iter().map(|f| f.name.clone()).collect();
        let mut lines = Vec::new();
        for f in &folders {
            if lsub && !f.subscribed {
                continue;
            }
            let chars: Vec<char> = f.name.chars().collect();
            // INBOX matches case-insensitively.
            let upper: Vec<char> = full.iter().map(|c| c.to_ascii_uppercase()).collect();
            let matched = wildcard(&full, &chars) || (f.name == "INBOX" && wildcard(&upper, &chars));
            if !matched {
                continue;
            }
            let prefix = format!("{}/", f.name);
            let mut attrs =
                vec![if names.iter().any(|n| n.starts_with(&prefix)) { "\\HasChildren" } else { "\\HasNoChildren" }];
            if let Some(su) = special_use(f) {
                attrs.push(su);
            }
            if f.subscribed && !lsub && self.rev2 {
                attrs.push("\\Subscribed");
            }
            lines.push(format!("{what} ({}) \"/\" {}", attrs.join(" "), self.encode_name(&f.name)));
        }
        for l in lines {
            self.untagged(&l);
        }
        self.ok(tag, &format!("{what} completed"));
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::wildcard;

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
}
