//! The SELECTED state: the session's view of one folder (message numbers, UIDs, flags),
//! SELECT and EXAMINE, CLOSE and UNSELECT, and applying other sessions' changes to the view.

use imap_codec::imap_types::{
    command::SelectParameter,
    core::Tag,
    mailbox::Mailbox,
    sequence::{SeqOrUid, Sequence, SequenceSet},
};
use tern_proto::v1::{EventKind, FolderRef, MessageSummary, SelectRequest};

use super::{Flow, Session, Update, astring};

/// The session's copy of the selected folder.
#[derive(Debug, Clone)]
pub(crate) struct Selected {
    pub id: u64,
    pub name: String,
    pub read_only: bool,
    pub highest_modseq: u64,
    /// Message number n is `uids[n - 1]`; UIDs strictly increase.
    pub uids: Vec<u32>,
    pub flags: Vec<Vec<String>>,
    /// The MODSEQ of each message's flags as this session last saw them; an event older than
    /// that (this session's own change, echoed back) changes nothing.
    pub modseqs: Vec<u64>,
    /// UIDs other sessions expunged, not yet announced to this client.
    pub pending_expunges: Vec<u32>,
    /// The keywords this session's last FLAGS response named, sorted. A FETCH may only carry
    /// flags the client has been told about (RFC 9051 section 7.3.5), so a keyword seen for
    /// the first time is announced with a new FLAGS response before the FETCH that carries it.
    pub keywords: Vec<String>,
    /// The UIDs this session reports as \Recent (RFC 3501 section 2.3.2), sorted: the ones
    /// it claimed from the mailbox service, so that exactly one session sees a new message as
    /// recent. Empty for IMAP4rev2 sessions, which have no \Recent.
    pub recent: Vec<u32>,
    /// New messages this session has announced but not yet tried to claim as recent; only a
    /// read-write IMAP4rev1 session claims.
    pub unclaimed: Vec<u32>,
    pub claims_recent: bool,
}

impl Selected {
    /// Message `i`'s flags as this session reports them: with \Recent when it is recent here.
    pub fn shown(&self, i: usize) -> Vec<String> {
        let mut flags = self.flags[i].clone();
        if self.is_recent(self.uids[i]) {
            flags.push("\\Recent".into());
        }
        flags
    }

    pub fn is_recent(&self, uid: u32) -> bool {
        self.recent.binary_search(&uid).is_ok()
    }

    /// Forgets message `i` (0-based).
    pub fn remove(&mut self, i: usize) {
        if let Ok(r) = self.recent.binary_search(&self.uids[i]) {
            self.recent.remove(r);
        }
        self.uids.remove(i);
        self.flags.remove(i);
        self.modseqs.remove(i);
    }

    /// Records a flag change this session is about to report (its own STORE, or flags read
    /// from the mailbox service), so that its echo in the event feed is ignored. A change older
    /// than what the view holds changes nothing: what a session reports never goes back
    /// (RFC 7162 section 3.1).
    pub fn set_flags(&mut self, uid: u32, flags: Vec<String>, modseq: u64) -> Option<usize> {
        let i = self.seq_of(uid)?;
        if modseq >= self.modseqs[i] {
            self.flags[i] = flags;
            self.modseqs[i] = modseq;
        }
        Some(i)
    }

    /// The keywords among `flags` that this session has not announced yet.
    pub fn unannounced<'a>(&self, flags: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        let mut new: Vec<String> = flags
            .into_iter()
            .filter(|f| !f.starts_with('\\') && self.keywords.binary_search(f).is_err())
            .cloned()
            .collect();
        new.sort_unstable();
        new.dedup();
        new
    }

    pub fn seq_of(&self, uid: u32) -> Option<usize> {
        self.uids.binary_search(&uid).ok()
    }

    /// The (index, UID) pairs a sequence set names, by message number or by UID. Numbers
    /// beyond the last message are an error for message numbers (RFC 9051 section 6.4.1
    /// allows BAD), and simply match nothing for UIDs.
    pub fn resolve(&self, set: &SequenceSet, by_uid: bool) -> Result<Vec<(usize, u32)>, &'static str> {
        if by_uid {
            let largest = self.uids.last().copied().unwrap_or(0);
            return Ok(self
                .uids
                .iter()
                .enumerate()
                .filter(|(_, uid)| contains(set, **uid, largest))
                .map(|(i, uid)| (i, *uid))
                .collect());
        }
        let n = self.uids.len() as u32;
        // An empty mailbox has no message numbers at all; "1:*" there names nothing, which is
        // not an error (clients send it to mean "everything").
        if n == 0 {
            return Ok(Vec::new());
        }
        for seq in set.0.as_ref() {
            let bad = |s: &SeqOrUid| matches!(s, SeqOrUid::Value(v) if v.get() > n);
            let out_of_range = match seq {
                Sequence::Single(s) => bad(s),
                Sequence::Range(a, b) => bad(a) || bad(b),
            };
            if out_of_range {
                return Err("Invalid message sequence number");
            }
        }
        Ok((1..=n).filter(|i| contains(set, *i, n)).map(|i| (i as usize - 1, self.uids[i as usize - 1])).collect())
    }
}

/// Whether `n` is in `set`, with `*` standing for `largest`.
pub(crate) fn contains(set: &SequenceSet, n: u32, largest: u32) -> bool {
    let v = |s: &SeqOrUid| match s {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => largest,
    };
    set.0.as_ref().iter().any(|seq| match seq {
        Sequence::Single(s) => v(s) == n,
        Sequence::Range(a, b) => {
            let (lo, hi) = (v(a).min(v(b)), v(a).max(v(b)));
            (lo..=hi).contains(&n)
        }
    })
}

pub(crate) fn flag_list(flags: &[String]) -> String {
    flags.join(" ")
}

impl Session {
    /// A mailbox name as the client sent it, in UTF-8.
    pub(crate) fn mailbox_name(&self, mailbox: &Mailbox<'_>) -> Option<String> {
        match mailbox {
            Mailbox::Inbox => Some("INBOX".into()),
            Mailbox::Other(other) => {
                let raw = String::from_utf8(other.as_ref().to_vec()).ok()?;
                if self.utf8 { Some(raw) } else { Some(crate::utf7::decode_lenient(&raw)) }
            }
        }
    }

    /// A mailbox name as the client expects it: UTF-8 after IMAP4rev2 or UTF8=ACCEPT, modified
    /// UTF-7 otherwise.
    pub(crate) fn encode_name(&self, name: &str) -> String {
        if self.utf8 { astring(name) } else { astring(&crate::utf7::encode(name)) }
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
            self.untagged("OK [CLOSED] Previous mailbox closed");
        }
        let Some(name) = self.mailbox_name(&mailbox) else {
            // NO, not BAD: the command is well formed, the mailbox cannot exist, and some
            // clients drop the connection on a BAD.
            self.no(tag, "[NONEXISTENT] Invalid mailbox name encoding");
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
        let selected = Selected {
            id: folder.id,
            name: folder.name.clone(),
            read_only,
            highest_modseq: folder.highest_modseq,
            uids: response.messages.iter().map(|m| m.uid).collect(),
            flags: response.messages.iter().map(|m| m.flags.clone()).collect(),
            modseqs: response.messages.iter().map(|m| m.modseq).collect(),
            pending_expunges: Vec::new(),
            keywords: Vec::new(),
            recent: Vec::new(),
            unclaimed: Vec::new(),
            claims_recent: !self.rev2 && !read_only,
        };
        let mut selected = selected;
        selected.keywords = selected.unannounced(selected.flags.iter().flatten());
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
        let exists = selected.uids.len();
        self.flags_responses(&selected.keywords, read_only);
        self.untagged(&format!("{exists} EXISTS"));
        if !self.rev2 {
            self.untagged(&format!("{} RECENT", selected.recent.len()));
            if let Some(first) = selected.flags.iter().position(|f| !f.iter().any(|x| x == "\\Seen")) {
                self.untagged(&format!("OK [UNSEEN {}] First unseen", first + 1));
            }
        }
        self.untagged(&format!("OK [UIDVALIDITY {}] UIDs valid", folder.uidvalidity));
        self.untagged(&format!("OK [UIDNEXT {}] Predicted next UID", folder.uidnext));
        self.untagged(&format!("OK [HIGHESTMODSEQ {}] Highest", folder.highest_modseq));
        self.untagged(&format!("OK [MAILBOXID ({})] Ok", super::folders::mailbox_id(folder.id)));
        if self.rev2 {
            let encoded = self.encode_name(&folder.name);
            self.untagged(&format!("LIST () \"/\" {encoded}"));
        }
        self.selected = Some(selected);
        if let Some((uid_validity, since, known)) = qresync {
            self.quick_resync(uid_validity, since, known.as_ref()).await;
        }
        let mode = if read_only { "[READ-ONLY] EXAMINE" } else { "[READ-WRITE] SELECT" };
        self.ok(tag, &format!("{mode} completed"));
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
        if sel.unclaimed.is_empty() {
            return;
        }
        let unclaimed = std::mem::take(&mut sel.unclaimed);
        let folder_id = sel.id;
        let Some(up_to) = unclaimed.iter().max().map(|u| u + 1) else { return };
        let account = self.account.as_ref().map(|a| a.id).unwrap_or_default();
        let from = self.claim_recent(account, folder_id, up_to).await;
        let Some(sel) = self.selected.as_mut().filter(|s| s.id == folder_id) else { return };
        let before = sel.recent.len();
        for uid in unclaimed.into_iter().filter(|u| *u >= from) {
            // Only messages still in the view: one may have been expunged meanwhile.
            if sel.seq_of(uid).is_some()
                && let Err(at) = sel.recent.binary_search(&uid)
            {
                sel.recent.insert(at, uid);
            }
        }
        let after = sel.recent.len();
        if after != before {
            self.untagged(&format!("{after} RECENT"));
        }
    }

    /// FLAGS and PERMANENTFLAGS naming the system flags and `keywords`.
    fn flags_responses(&mut self, keywords: &[String], read_only: bool) {
        let mut all = String::from("\\Answered \\Flagged \\Deleted \\Seen \\Draft");
        for k in keywords {
            all.push(' ');
            all.push_str(k);
        }
        self.untagged(&format!("FLAGS ({all})"));
        if read_only {
            self.untagged("OK [PERMANENTFLAGS ()] No permanent flags permitted");
        } else {
            self.untagged(&format!("OK [PERMANENTFLAGS ({all} \\*)] Flags permitted"));
        }
    }

    /// Announces, with new FLAGS and PERMANENTFLAGS responses, the keywords among `flags` that
    /// the client has not been told about, before a FETCH response carries them.
    pub(crate) fn announce_keywords<'a>(&mut self, flags: impl IntoIterator<Item = &'a String>) {
        let Some(sel) = self.selected.as_ref() else { return };
        let new = sel.unannounced(flags);
        self.announce_new_keywords(new);
    }

    pub(crate) fn announce_new_keywords(&mut self, new: Vec<String>) {
        if new.is_empty() {
            return;
        }
        let Some(sel) = self.selected.as_mut() else { return };
        sel.keywords.extend(new);
        sel.keywords.sort_unstable();
        sel.keywords.dedup();
        let (keywords, read_only) = (sel.keywords.clone(), sel.read_only);
        self.flags_responses(&keywords, read_only);
    }

    /// Drops queued changes (they predate a fresh snapshot).
    fn drain_updates(&mut self) {
        if let Some(rx) = self.updates.as_mut() {
            while let Some(Update::Event(_)) = rx.try_next() {}
        }
    }

    /// Applies other sessions' changes to the selected folder and tells the client. Expunges
    /// are announced only when `allow_expunge` (not during FETCH, STORE or SEARCH).
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
                Update::Event(e) => self.apply(&e),
                Update::Resync => resync = true,
            }
        }
        if resync {
            self.resync().await;
        }
        self.claim_new_recent().await;
        self.announce_expunges(allow_expunge);
    }

    pub(crate) fn apply(&mut self, e: &tern_proto::v1::MailboxEvent) {
        let condstore = self.condstore;
        let Some(sel) = self.selected.as_mut() else { return };
        if e.folder_id != sel.id || e.modseq <= sel.highest_modseq && e.kind != EventKind::Expunge as i32 {
            return;
        }
        let mut lines = Vec::new();
        let mut announced = Vec::new();
        let before = sel.uids.len();
        match EventKind::try_from(e.kind).unwrap_or_default() {
            EventKind::Append => {
                for m in &e.messages {
                    if sel.uids.last().is_none_or(|last| m.uid > *last) {
                        sel.uids.push(m.uid);
                        sel.flags.push(m.flags.clone());
                        sel.modseqs.push(m.modseq);
                        if sel.claims_recent {
                            sel.unclaimed.push(m.uid);
                        }
                    }
                }
            }
            EventKind::Flags => {
                for m in &e.messages {
                    if let Some(i) = sel.seq_of(m.uid)
                        && m.modseq > sel.modseqs[i]
                    {
                        sel.modseqs[i] = m.modseq;
                        if sel.flags[i] != m.flags {
                            sel.flags[i] = m.flags.clone();
                            let shown = MessageSummary { flags: sel.shown(i), ..m.clone() };
                            lines.push(fetch_flags(i + 1, &shown, condstore));
                            announced.push(m);
                        }
                    }
                }
            }
            EventKind::Expunge => {
                for m in &e.messages {
                    if sel.seq_of(m.uid).is_some() && !sel.pending_expunges.contains(&m.uid) {
                        sel.pending_expunges.push(m.uid);
                    }
                }
            }
            _ => {}
        }
        sel.highest_modseq = sel.highest_modseq.max(e.modseq);
        let after = sel.uids.len();
        let new = sel.unannounced(announced.iter().flat_map(|m| m.flags.iter()));
        self.announce_new_keywords(new);
        for l in lines {
            self.untagged(&l);
        }
        if after != before {
            self.untagged(&format!("{after} EXISTS"));
        }
    }

    /// Announces pending expunges: EXPUNGE per message, highest number first so that the
    /// numbers already sent stay right.
    pub(crate) fn announce_expunges(&mut self, allow: bool) {
        if !allow {
            return;
        }
        let Some(sel) = self.selected.as_mut() else { return };
        let gone = std::mem::take(&mut sel.pending_expunges);
        self.remove_messages(&gone);
    }

    /// Removes messages from the view and tells the client: one EXPUNGE per message, highest
    /// number first so that the numbers already sent stay right, or one VANISHED with QRESYNC.
    pub(crate) fn remove_messages(&mut self, uids: &[u32]) {
        let qresync = self.qresync;
        let Some(sel) = self.selected.as_mut() else { return };
        let mut idx: Vec<usize> = uids.iter().filter_map(|u| sel.seq_of(*u)).collect();
        idx.sort_unstable();
        idx.dedup();
        sel.pending_expunges.retain(|u| !uids.contains(u));
        if idx.is_empty() {
            return;
        }
        let mut lines = Vec::new();
        let mut removed = Vec::with_capacity(idx.len());
        for i in idx.into_iter().rev() {
            removed.push(sel.uids[i]);
            sel.remove(i);
            lines.push(format!("{} EXPUNGE", i + 1));
        }
        if qresync {
            self.untagged(&format!("VANISHED {}", super::messages::uid_set(&removed)));
        } else {
            for l in lines {
                self.untagged(&l);
            }
        }
    }

    /// QRESYNC's quick resynchronisation at SELECT (RFC 7162 section 3.2.5): what vanished and
    /// what changed since the client's MODSEQ, if its UIDVALIDITY is still current.
    pub(crate) async fn quick_resync(&mut self, uid_validity: u32, since: u64, known: Option<&SequenceSet>) {
        let condstore = self.condstore;
        let Some(sel) = self.selected.as_ref() else { return };
        let Some(account) = self.account.as_ref().map(|a| a.id) else { return };
        let req = tern_proto::v1::ChangesRequest { account_id: account, folder_id: sel.id, since_modseq: since };
        let Ok(changes) = self.client.changes(req).await else { return };
        let changes = changes.into_inner();
        if changes.uidvalidity != uid_validity {
            return;
        }
        let Some(sel) = self.selected.as_ref() else { return };
        let largest = sel.uids.last().copied().unwrap_or(0).max(changes.vanished.iter().copied().max().unwrap_or(0));
        let vanished: Vec<u32> =
            changes.vanished.into_iter().filter(|u| known.is_none_or(|k| contains(k, *u, largest))).collect();
        let mut lines = Vec::new();
        if !vanished.is_empty() {
            lines.push(format!("VANISHED (EARLIER) {}", super::messages::uid_set(&vanished)));
        }
        let new = sel.unannounced(changes.changed.iter().flat_map(|m| m.flags.iter()));
        let Some(sel) = self.selected.as_mut() else { return };
        for m in &changes.changed {
            // A change newer than the snapshot the view was built from becomes the view's, so
            // that nothing this session reports later goes back to the older state.
            if let Some(i) = sel.set_flags(m.uid, m.flags.clone(), m.modseq) {
                let now = MessageSummary { flags: sel.shown(i), modseq: sel.modseqs[i], ..m.clone() };
                lines.push(fetch_flags(i + 1, &now, condstore));
            }
        }
        self.announce_new_keywords(new);
        for l in lines {
            self.untagged(&l);
        }
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
        let fresh: std::collections::HashMap<u32, &MessageSummary> = r.messages.iter().map(|m| (m.uid, m)).collect();
        let condstore = self.condstore;
        let Some(sel) = self.selected.as_mut() else { return };
        let mut lines = Vec::new();
        let mut changed = Vec::new();
        for (i, uid) in sel.uids.iter().enumerate() {
            match fresh.get(uid) {
                Some(m) if m.flags != sel.flags[i] && m.modseq >= sel.modseqs[i] => {
                    sel.flags[i] = m.flags.clone();
                    sel.modseqs[i] = m.modseq;
                    let mut shown = (*m).clone();
                    if sel.recent.binary_search(uid).is_ok() {
                        shown.flags.push("\\Recent".into());
                    }
                    lines.push(fetch_flags(i + 1, &shown, condstore));
                    changed.push(*m);
                }
                Some(_) => {}
                None => {
                    if !sel.pending_expunges.contains(uid) {
                        sel.pending_expunges.push(*uid);
                    }
                }
            }
        }
        let last = sel.uids.last().copied().unwrap_or(0);
        let before = sel.uids.len();
        for m in r.messages.iter().filter(|m| m.uid > last) {
            sel.uids.push(m.uid);
            sel.flags.push(m.flags.clone());
            sel.modseqs.push(m.modseq);
            if sel.claims_recent {
                sel.unclaimed.push(m.uid);
            }
        }
        let after = sel.uids.len();
        if let Some(f) = &r.folder {
            sel.highest_modseq = sel.highest_modseq.max(f.highest_modseq);
        }
        let new = sel.unannounced(changed.iter().flat_map(|m| m.flags.iter()));
        self.announce_new_keywords(new);
        for l in lines {
            self.untagged(&l);
        }
        if after != before {
            self.untagged(&format!("{after} EXISTS"));
        }
    }

    pub(crate) fn close_selected(&mut self, tag: &Tag<'static>, what: &str) -> Flow {
        if self.selected.take().is_none() {
            return self.bad(tag, "No mailbox selected");
        }
        self.ok(tag, &format!("{what} completed"));
        Flow::Continue
    }
}

pub(crate) fn fetch_flags(seq: usize, m: &MessageSummary, modseq: bool) -> String {
    if modseq {
        format!("{seq} FETCH (UID {} FLAGS ({}) MODSEQ ({}))", m.uid, flag_list(&m.flags), m.modseq)
    } else {
        format!("{seq} FETCH (UID {} FLAGS ({}))", m.uid, flag_list(&m.flags))
    }
}
