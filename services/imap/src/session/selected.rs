//! The SELECTED state's session side: SELECT and EXAMINE, CLOSE and UNSELECT, claiming new
//! messages as `\Recent`, and feeding other sessions' changes (or a fresh snapshot when the
//! feed broke) into the view of the selected folder, whose answers are sent at command
//! boundaries. The view itself, and everything it says, is `view.rs`.

use imap_codec::imap_types::{command::SelectParameter, core::Tag, mailbox::Mailbox, sequence::SequenceSet};
use tern_proto::v1::{FolderRef, SelectRequest};

use super::{
    Flow, Session, Update,
    response::{Code, Response},
    view::Selected,
};

impl Session {
    /// A mailbox name as the client sent it, in UTF-8.
    pub(crate) fn mailbox_name(&self, mailbox: &Mailbox<'_>) -> Option<String> {
        match mailbox {
            Mailbox::Inbox => Some("INBOX".into()),
            Mailbox::Other(other) => self.raw_mailbox_name(other.as_ref()),
        }
    }

    /// [`Session::mailbox_name`] of a name as the client sent it, for commands the codec does
    /// not parse: INBOX in any case is INBOX.
    pub(crate) fn raw_mailbox_name(&self, raw: &[u8]) -> Option<String> {
        if raw.eq_ignore_ascii_case(b"INBOX") {
            return Some("INBOX".into());
        }
        let raw = String::from_utf8(raw.to_vec()).ok()?;
        if self.utf8 { Some(raw) } else { Some(crate::utf7::decode_lenient(&raw)) }
    }

    /// A mailbox name as the client expects it: UTF-8 after IMAP4rev2 or UTF8=ACCEPT, modified
    /// UTF-7 otherwise.
    pub(crate) fn wire_name(&self, name: &str) -> String {
        if self.utf8 { name.to_string() } else { crate::utf7::encode(name) }
    }

    pub(crate) async fn select(
        &mut self,
        tag: &Tag<'static>,
        mailbox: Mailbox<'static>,
        parameters: Vec<SelectParameter>,
        read_only: bool,
    ) -> Flow {
        // A failed SELECT leaves no mailbox selected (RFC 9051 section 6.3.2).
        if self.selected.take().is_some() && self.rev2 {
            self.send(Response::ok(Some(Code::Closed), "Previous mailbox closed"));
        }
        let Some(name) = self.mailbox_name(&mailbox) else {
            // NO, not BAD: the command is well formed, the mailbox cannot exist, and some
            // clients drop the connection on a BAD.
            self.no_code(tag, Code::Atom("NONEXISTENT"), "Invalid mailbox name encoding");
            return Flow::Continue;
        };
        if parameters.iter().any(|p| matches!(p, SelectParameter::CondStore)) {
            self.condstore = true;
        }
        let qresync = parameters.iter().find_map(|p| match p {
            SelectParameter::QResync { uid_validity, mod_sequence_value, known_uids, .. } => {
                Some((uid_validity.get(), mod_sequence_value.get(), known_uids.clone()))
            }
            _ => None,
        });
        if qresync.is_some() && !self.qresync {
            return self.bad(tag, "QRESYNC parameter without ENABLE QRESYNC");
        }
        let account = self.account.as_ref().map(|a| a.id).unwrap_or_default();
        // Changes already queued belong to whatever was selected before.
        self.drain_updates();
        let response = match self
            .client
            .select(SelectRequest { account_id: account, folder: Some(FolderRef::name(name.clone())) })
            .await
        {
            Ok(r) => r.into_inner(),
            Err(status) => {
                self.failed(tag, &status);
                return Flow::Continue;
            }
        };
        let folder = response.folder.unwrap_or_default();
        let mut selected =
            Selected::new(folder.id, folder.name.clone(), read_only, folder.highest_modseq, &response.messages);
        selected.claims_recent = !self.rev2 && !read_only;
        if !self.rev2 {
            // EXAMINE shows what is recent without taking it from the session that will
            // SELECT the mailbox (RFC 3501 section 6.3.2); SELECT claims what no one has.
            let from = if read_only || folder.uidnext <= folder.first_recent_uid {
                if read_only { folder.first_recent_uid } else { u32::MAX }
            } else {
                self.claim_recent(account, folder.id, folder.uidnext).await
            };
            selected.recent = selected.uids.iter().copied().filter(|u| *u >= from).collect();
        }
        let mut out = selected.flags_responses();
        out.push(Response::Exists(selected.uids.len() as u32));
        if !self.rev2 {
            out.push(Response::Recent(selected.recent.len() as u32));
            if let Some(first) = selected.flags.iter().position(|f| !f.iter().any(|x| x == "\\Seen")) {
                out.push(Response::ok(Some(Code::Unseen(first as u32 + 1)), "First unseen"));
            }
        }
        out.push(Response::ok(Some(Code::UidValidity(folder.uidvalidity)), "UIDs valid"));
        out.push(Response::ok(Some(Code::UidNext(folder.uidnext)), "Predicted next UID"));
        out.push(Response::ok(Some(Code::HighestModSeq(folder.highest_modseq)), "Highest"));
        out.push(Response::ok(Some(Code::MailboxId(folder.id)), "Ok"));
        if self.rev2 {
            let name = self.wire_name(&folder.name);
            out.push(Response::List { lsub: false, attributes: Vec::new(), name, child_info: None });
        }
        self.send_all(out);
        self.selected = Some(selected);
        if let Some((uid_validity, since, known)) = qresync {
            self.quick_resync(uid_validity, since, known.as_ref()).await;
        }
        if read_only {
            self.ok_code(tag, Code::ReadOnly, "EXAMINE completed");
        } else {
            self.ok_code(tag, Code::ReadWrite, "SELECT completed");
        }
        Flow::Continue
    }

    /// Claims the folder's messages below `up_to` as recent for this session; the first UID
    /// that is recent here, or none when the claim fails (a missing \Recent loses nothing).
    async fn claim_recent(&mut self, account_id: u64, folder_id: u64, up_to: u32) -> u32 {
        // A claim is a write; while the store is slow or away (a NATS leader election), the
        // session goes on without \Recent rather than hold up what it has to say.
        const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
        let req = tern_proto::v1::ClaimRecentRequest { account_id, folder_id, up_to };
        match tokio::time::timeout(CLAIM_WAIT, self.client.claim_recent(req)).await {
            Ok(Ok(r)) => r.into_inner().first_recent_uid,
            Ok(Err(status)) => {
                tracing::warn!(error = %status.message(), "cannot claim recent messages");
                u32::MAX
            }
            Err(_) => {
                tracing::warn!("claiming recent messages took too long");
                u32::MAX
            }
        }
    }

    /// Claims the new messages this session announced as recent, and reports the new number
    /// of recent messages when it changed.
    pub(crate) async fn claim_new_recent(&mut self) {
        let Some(sel) = self.selected.as_mut() else { return };
        let unclaimed = sel.take_unclaimed();
        let folder_id = sel.id;
        let Some(up_to) = unclaimed.iter().max().map(|u| u + 1) else { return };
        let account = self.account.as_ref().map(|a| a.id).unwrap_or_default();
        let from = self.claim_recent(account, folder_id, up_to).await;
        let Some(sel) = self.selected.as_mut().filter(|s| s.id == folder_id) else { return };
        let out = sel.claimed(unclaimed, from);
        self.send_all(out);
    }

    /// Announces, with new FLAGS and PERMANENTFLAGS responses, the keywords among `flags` that
    /// the client has not been told about, before a FETCH response carries them.
    pub(crate) fn announce_keywords<'a>(&mut self, flags: impl IntoIterator<Item = &'a String>) {
        let Some(sel) = self.selected.as_mut() else { return };
        let out = sel.announce_keywords(flags);
        self.send_all(out);
    }

    /// Drops queued changes (they predate a fresh snapshot).
    fn drain_updates(&mut self) {
        if let Some(rx) = self.updates.as_mut() {
            while let Some(Update::Event(_)) = rx.try_next() {}
        }
    }

    /// Brings the view up to this session's own write into the selected folder `folder_id`
    /// (an APPEND reaching `modseq`, or a COPY whose highest new UID is `uid`), so that the new
    /// messages are announced before the tagged OK and the UIDs the client was just given work
    /// at once: the write's answer can come before its event. If the feed does not bring the
    /// change in time, the view is rebuilt from a fresh snapshot.
    pub(crate) async fn catch_up(&mut self, folder_id: u64, modseq: u64, uid: u32) {
        self.catch_up_view(folder_id, modseq, uid).await;
        self.claim_new_recent().await;
    }

    async fn catch_up_view(&mut self, folder_id: u64, modseq: u64, uid: u32) {
        const WAIT: std::time::Duration = std::time::Duration::from_secs(2);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let caught_up = |s: &Selected| s.highest_modseq >= modseq || s.uids.last().is_some_and(|l| *l >= uid);
            match self.selected.as_ref() {
                Some(s) if s.id == folder_id && !caught_up(s) => {}
                _ => return,
            }
            let next = match self.updates.as_mut() {
                Some(rx) => tokio::time::timeout_at(deadline, rx.next()).await.ok(),
                None => None,
            };
            match next {
                Some(Update::Event(e)) => self.apply(&e),
                Some(Update::Resync) | None => {
                    self.resync().await;
                    return;
                }
            }
        }
    }

    /// Applies other sessions' changes to the selected folder and tells the client. Expunges
    /// are announced only when `allow_expunge` (not during FETCH, STORE or SEARCH).
    pub(crate) async fn sync_updates(&mut self, allow_expunge: bool) {
        let mut updates = Vec::new();
        match self.updates.as_mut() {
            Some(rx) => {
                while let Some(u) = rx.try_next() {
                    let stop = matches!(u, Update::Resync);
                    updates.push(u);
                    if stop {
                        break;
                    }
                }
            }
            // No feed (the mailbox service was unreachable at login): catch up by snapshot.
            None if self.account.is_some() && self.selected.is_some() => updates.push(Update::Resync),
            None => {}
        }
        let mut resync = false;
        for u in updates {
            match u {
                Update::Event(e) => {
                    self.apply(&e);
                    self.notify_other(&e).await;
                }
                Update::Resync => resync = true,
            }
        }
        if resync {
            self.resync().await;
        }
        self.claim_new_recent().await;
        self.announce_expunges(allow_expunge);
        self.update_contexts().await;
    }

    /// Applies one change of another session to the view and sends what the view says.
    pub(crate) fn apply(&mut self, e: &tern_proto::v1::MailboxEvent) {
        let modes = self.modes();
        let Some(sel) = self.selected.as_mut() else { return };
        let out = sel.apply(e, modes);
        self.send_all(out);
    }

    /// Announces pending expunges, when `allow` (no command is referring to messages by
    /// number).
    pub(crate) fn announce_expunges(&mut self, allow: bool) {
        if !allow {
            return;
        }
        let pending = self.selected.as_ref().map(|s| s.pending_expunges.clone()).unwrap_or_default();
        self.contexts_lose(&pending);
        let modes = self.modes();
        let Some(sel) = self.selected.as_mut() else { return };
        let out = sel.expunge_pending(modes);
        self.send_all(out);
    }

    /// Removes messages from the view and tells the client.
    pub(crate) fn remove_messages(&mut self, uids: &[u32]) {
        self.contexts_lose(uids);
        let modes = self.modes();
        let Some(sel) = self.selected.as_mut() else { return };
        let out = sel.remove_messages(uids, modes);
        self.send_all(out);
    }

    /// QRESYNC's quick resynchronisation at SELECT (RFC 7162 section 3.2.5): what vanished and
    /// what changed since the client's MODSEQ, if its UIDVALIDITY is still current.
    pub(crate) async fn quick_resync(&mut self, uid_validity: u32, since: u64, known: Option<&SequenceSet>) {
        let Some(sel) = self.selected.as_ref() else { return };
        let Some(account) = self.account.as_ref().map(|a| a.id) else { return };
        let req = tern_proto::v1::ChangesRequest { account_id: account, folder_id: sel.id, since_modseq: since };
        let Ok(changes) = self.client.changes(req).await else { return };
        let changes = changes.into_inner();
        if changes.uidvalidity != uid_validity {
            return;
        }
        let modes = self.modes();
        let Some(sel) = self.selected.as_mut() else { return };
        let out = sel.quick_resync(changes.vanished, &changes.changed, known, modes);
        self.send_all(out);
    }

    /// Rebuilds the view from a fresh snapshot after the event feed broke, announcing the
    /// difference, and follows the account's changes again.
    async fn resync(&mut self) {
        let Some(account) = self.account.as_ref().map(|a| a.id) else { return };
        self.start_updates(account).await;
        let Some(folder) = self.selected.as_ref().map(|s| s.id) else { return };
        let Ok(r) =
            self.client.select(SelectRequest { account_id: account, folder: Some(FolderRef::id(folder)) }).await
        else {
            return;
        };
        let r = r.into_inner();
        let modes = self.modes();
        let Some(sel) = self.selected.as_mut() else { return };
        let out = sel.resync(&r.messages, r.folder.as_ref().map(|f| f.highest_modseq), modes);
        self.send_all(out);
    }

    pub(crate) fn close_selected(&mut self, tag: &Tag<'static>, what: &'static str) -> Flow {
        if self.selected.take().is_none() {
            return self.bad(tag, "No mailbox selected");
        }
        self.ok(tag, format!("{what} completed"));
        Flow::Continue
    }
}
