//! The session's view of the selected folder, and what the client is told as it changes.
//!
//! [`Selected`] is pure: it does no I/O and knows nothing of tokio or gRPC. Every change to it
//! (another session's change arriving as an event, a resynchronisation from a fresh snapshot,
//! this session's own STORE or EXPUNGE) returns the untagged responses that tell the client of
//! it, in the order they must be sent, so the rules that keep a client consistent are tested
//! here without a server: a keyword is announced with FLAGS and PERMANENTFLAGS before the first
//! FETCH carrying it, a message's MODSEQ never goes back, EXISTS follows the FETCHes of the
//! same event, expunges wait until the session may send them and then go out highest number
//! first (or as one VANISHED with QRESYNC), and `\Recent` is reported for the messages this
//! session claimed alone.

use std::num::NonZeroU32;

use imap_codec::imap_types::{
    core::Vec1,
    search::SearchKey,
    sequence::{SeqOrUid, Sequence, SequenceSet},
};
use tern_proto::v1::{EventKind, MailboxEvent, MessageSummary};

use super::response::{Code, Response};
use crate::extended::is_last_result;

/// What the client enabled that changes the form of the responses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Modes {
    /// CONDSTORE: flag changes carry MODSEQ.
    pub condstore: bool,
    /// QRESYNC: expunges are reported as VANISHED.
    pub qresync: bool,
}

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
    /// The result the last SEARCH or SORT with RETURN (SAVE) kept for `$` (RFC 5182), as UIDs
    /// in increasing order, so that it names the same messages however the numbers change. A
    /// message leaves it when it leaves the view (RFC 5182 section 2.1: an expunged message is
    /// removed from the variable); a new SELECT or EXAMINE starts with a new, empty view.
    pub saved: Vec<u32>,
    /// Searches the client asked to keep up to date (RETURN (UPDATE), RFC 5267 section 4.3);
    /// they end with the selection.
    pub contexts: Vec<SearchContext>,
}

/// A SEARCH or SORT whose result the session keeps current for the client (CONTEXT=SEARCH,
/// CONTEXT=SORT): the command, and its result as last told.
#[derive(Debug, Clone)]
pub(crate) struct SearchContext {
    /// The tag of the command, which the updates carry.
    pub tag: String,
    /// UID SEARCH or UID SORT: updates name UIDs, otherwise message numbers.
    pub uid: bool,
    pub criteria: Vec<imap_codec::imap_types::search::SearchKey<'static>>,
    /// The sort order, for SORT; None for SEARCH, whose result is in mailbox order.
    pub sort: Option<Vec<imap_codec::imap_types::extensions::sort::SortCriterion>>,
    /// The result as the client has it, as UIDs, in result order.
    pub result: Vec<u32>,
    /// What the view looked like when the result was last computed (messages, highest MODSEQ
    /// of any message): every change since gives a new MODSEQ above all older ones, or
    /// changes the count, so an unchanged mark means an unchanged result.
    pub mark: (usize, u64),
}

impl Selected {
    /// The view of a folder's snapshot; the keywords its messages carry count as announced,
    /// since SELECT's FLAGS response names them.
    pub fn new(id: u64, name: String, read_only: bool, highest_modseq: u64, messages: &[MessageSummary]) -> Self {
        let mut selected = Selected {
            id,
            name,
            read_only,
            highest_modseq,
            uids: messages.iter().map(|m| m.uid).collect(),
            flags: messages.iter().map(|m| m.flags.clone()).collect(),
            modseqs: messages.iter().map(|m| m.modseq).collect(),
            pending_expunges: Vec::new(),
            keywords: Vec::new(),
            recent: Vec::new(),
            unclaimed: Vec::new(),
            claims_recent: false,
            saved: Vec::new(),
            contexts: Vec::new(),
        };
        selected.keywords = selected.unannounced(selected.flags.iter().flatten());
        selected
    }

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
    fn remove(&mut self, i: usize) {
        if let Ok(r) = self.recent.binary_search(&self.uids[i]) {
            self.recent.remove(r);
        }
        if let Ok(s) = self.saved.binary_search(&self.uids[i]) {
            self.saved.remove(s);
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

    /// The (index, UID) pairs of a command's sequence set: the saved result when the set is the
    /// command's `$` (`last_result`, see [`crate::extended::Extras::last_result`]), else as
    /// [`Selected::resolve`] says. An empty saved result names no message, which is no error
    /// (RFC 5182 section 2.1): FETCH $ then answers OK and nothing else.
    pub fn targets(
        &self,
        set: &SequenceSet,
        by_uid: bool,
        last_result: bool,
    ) -> Result<Vec<(usize, u32)>, &'static str> {
        if last_result && is_last_result(set) {
            return Ok(self.saved.iter().filter_map(|uid| self.seq_of(*uid).map(|i| (i, *uid))).collect());
        }
        self.resolve(set, by_uid)
    }

    /// Keeps `uids` as the result `$` names (RFC 5182 section 2.1); an empty list empties it, as
    /// a SEARCH with SAVE that failed must.
    pub fn save(&mut self, mut uids: Vec<u32>) {
        uids.sort_unstable();
        uids.dedup();
        self.saved = uids;
    }

    /// `keys` with each `$` (a sequence set that [`is_last_result`]) replaced by a key that
    /// matches the saved messages: a UID set of them, or NOT ALL when there are none. Both
    /// SEARCH and UID SEARCH mean the same messages by `$`, whichever command saved them.
    pub fn with_last_result(&self, keys: &[SearchKey<'static>]) -> Vec<SearchKey<'static>> {
        keys.iter().map(|k| self.replace_last_result(k)).collect()
    }

    fn replace_last_result(&self, key: &SearchKey<'static>) -> SearchKey<'static> {
        match key {
            SearchKey::SequenceSet(set) | SearchKey::Uid(set) if is_last_result(set) => match uid_set(&self.saved) {
                Some(set) => SearchKey::Uid(set),
                None => SearchKey::Not(Box::new(SearchKey::All)),
            },
            // The codec limits how deep keys nest, so this recursion is shallow.
            SearchKey::And(keys) => SearchKey::And(Vec1::unvalidated(self.with_last_result(keys.as_ref()))),
            SearchKey::Not(key) => SearchKey::Not(Box::new(self.replace_last_result(key))),
            SearchKey::Or(a, b) => {
                SearchKey::Or(Box::new(self.replace_last_result(a)), Box::new(self.replace_last_result(b)))
            }
            other => other.clone(),
        }
    }

    /// FLAGS and PERMANENTFLAGS naming the system flags and the announced keywords.
    pub fn flags_responses(&self) -> Vec<Response> {
        let permanent = if self.read_only {
            Response::ok(Some(Code::PermanentFlags(None)), "No permanent flags permitted")
        } else {
            Response::ok(Some(Code::PermanentFlags(Some(self.keywords.clone()))), "Flags permitted")
        };
        vec![Response::Flags(self.keywords.clone()), permanent]
    }

    /// Announces the keywords among `flags` that the client has not been told about, with new
    /// FLAGS and PERMANENTFLAGS responses, before a FETCH response carries them.
    pub fn announce_keywords<'a>(&mut self, flags: impl IntoIterator<Item = &'a String>) -> Vec<Response> {
        let new = self.unannounced(flags);
        self.announce_new_keywords(new)
    }

    fn announce_new_keywords(&mut self, new: Vec<String>) -> Vec<Response> {
        if new.is_empty() {
            return Vec::new();
        }
        self.keywords.extend(new);
        self.keywords.sort_unstable();
        self.keywords.dedup();
        self.flags_responses()
    }

    /// A FETCH of message `i`'s flags as the view holds them.
    fn fetch_flags(&self, i: usize, modes: Modes) -> Response {
        Response::FetchFlags {
            seq: i as u32 + 1,
            uid: Some(self.uids[i]),
            flags: Some(self.shown(i)),
            modseq: modes.condstore.then(|| self.modseqs[i]),
        }
    }

    /// Adds a message announced by another session's change or a fresh snapshot.
    fn push(&mut self, m: &MessageSummary) {
        self.uids.push(m.uid);
        self.flags.push(m.flags.clone());
        self.modseqs.push(m.modseq);
        if self.claims_recent {
            self.unclaimed.push(m.uid);
        }
    }

    /// Applies another session's change: new messages become EXISTS, flag changes FETCH
    /// responses (after FLAGS for a keyword the client has not seen), and expunges wait in
    /// `pending_expunges` until [`Selected::expunge_pending`]. An event of another folder, or
    /// no newer than the view (this session's own change echoed back), changes nothing.
    pub fn apply(&mut self, e: &MailboxEvent, modes: Modes) -> Vec<Response> {
        if e.folder_id != self.id || e.modseq <= self.highest_modseq && e.kind != EventKind::Expunge as i32 {
            return Vec::new();
        }
        let mut fetches = Vec::new();
        let mut changed: Vec<&String> = Vec::new();
        let before = self.uids.len();
        match EventKind::try_from(e.kind).unwrap_or_default() {
            EventKind::Append => {
                for m in &e.messages {
                    if self.uids.last().is_none_or(|last| m.uid > *last) {
                        self.push(m);
                    }
                }
            }
            EventKind::Flags => {
                for m in &e.messages {
                    if let Some(i) = self.seq_of(m.uid)
                        && m.modseq > self.modseqs[i]
                    {
                        self.modseqs[i] = m.modseq;
                        if self.flags[i] != m.flags {
                            self.flags[i] = m.flags.clone();
                            fetches.push(i);
                            changed.extend(&m.flags);
                        }
                    }
                }
            }
            EventKind::Expunge => {
                for m in &e.messages {
                    if self.seq_of(m.uid).is_some() && !self.pending_expunges.contains(&m.uid) {
                        self.pending_expunges.push(m.uid);
                    }
                }
            }
            _ => {}
        }
        self.highest_modseq = self.highest_modseq.max(e.modseq);
        let after = self.uids.len();
        // The FETCHes are built before the announcement changes nothing they say, but go out
        // after it.
        let fetches: Vec<Response> = fetches.into_iter().map(|i| self.fetch_flags(i, modes)).collect();
        let new = self.unannounced(changed);
        let mut out = self.announce_new_keywords(new);
        out.extend(fetches);
        if after != before {
            out.push(Response::Exists(after as u32));
        }
        out
    }

    /// Announces the expunges other sessions made, now that the client may be told.
    pub fn expunge_pending(&mut self, modes: Modes) -> Vec<Response> {
        let gone = std::mem::take(&mut self.pending_expunges);
        self.remove_messages(&gone, modes)
    }

    /// Removes messages from the view and tells the client: one EXPUNGE per message, highest
    /// number first so that the numbers already sent stay right, or one VANISHED with QRESYNC.
    pub fn remove_messages(&mut self, uids: &[u32], modes: Modes) -> Vec<Response> {
        let mut idx: Vec<usize> = uids.iter().filter_map(|u| self.seq_of(*u)).collect();
        idx.sort_unstable();
        idx.dedup();
        self.pending_expunges.retain(|u| !uids.contains(u));
        if idx.is_empty() {
            return Vec::new();
        }
        let mut expunges = Vec::with_capacity(idx.len());
        let mut removed = Vec::with_capacity(idx.len());
        for i in idx.into_iter().rev() {
            removed.push(self.uids[i]);
            self.remove(i);
            expunges.push(Response::Expunge(i as u32 + 1));
        }
        if modes.qresync { vec![Response::Vanished { earlier: false, uids: removed }] } else { expunges }
    }

    /// QRESYNC's quick resynchronisation at SELECT (RFC 7162 section 3.2.5): what vanished
    /// since the client's MODSEQ (of the UIDs it knows, when it said which) and the changes
    /// since, which become the view's so that nothing reported later goes back to the older
    /// state of the snapshot.
    pub fn quick_resync(
        &mut self,
        vanished: Vec<u32>,
        changed: &[MessageSummary],
        known: Option<&SequenceSet>,
        modes: Modes,
    ) -> Vec<Response> {
        let largest = self.uids.last().copied().unwrap_or(0).max(vanished.iter().copied().max().unwrap_or(0));
        let vanished: Vec<u32> =
            vanished.into_iter().filter(|u| known.is_none_or(|k| contains(k, *u, largest))).collect();
        let new = self.unannounced(changed.iter().flat_map(|m| m.flags.iter()));
        let mut rest = Vec::new();
        if !vanished.is_empty() {
            rest.push(Response::Vanished { earlier: true, uids: vanished });
        }
        for m in changed {
            if let Some(i) = self.set_flags(m.uid, m.flags.clone(), m.modseq) {
                rest.push(self.fetch_flags(i, modes));
            }
        }
        let mut out = self.announce_new_keywords(new);
        out.extend(rest);
        out
    }

    /// Brings the view to a fresh snapshot of the folder after the event feed broke: changed
    /// flags become FETCHes (never going back to an older MODSEQ), new messages EXISTS, and
    /// messages gone from the snapshot pending expunges.
    pub fn resync(&mut self, fresh: &[MessageSummary], highest_modseq: Option<u64>, modes: Modes) -> Vec<Response> {
        let by_uid: std::collections::HashMap<u32, &MessageSummary> = fresh.iter().map(|m| (m.uid, m)).collect();
        let mut fetches = Vec::new();
        let mut changed: Vec<&String> = Vec::new();
        for i in 0..self.uids.len() {
            let uid = self.uids[i];
            match by_uid.get(&uid) {
                Some(m) if m.flags != self.flags[i] && m.modseq >= self.modseqs[i] => {
                    self.flags[i] = m.flags.clone();
                    self.modseqs[i] = m.modseq;
                    fetches.push(i);
                    changed.extend(&m.flags);
                }
                Some(_) => {}
                None => {
                    if !self.pending_expunges.contains(&uid) {
                        self.pending_expunges.push(uid);
                    }
                }
            }
        }
        let fetches: Vec<Response> = fetches.into_iter().map(|i| self.fetch_flags(i, modes)).collect();
        let last = self.uids.last().copied().unwrap_or(0);
        let before = self.uids.len();
        for m in fresh.iter().filter(|m| m.uid > last) {
            self.push(m);
        }
        let after = self.uids.len();
        if let Some(h) = highest_modseq {
            self.highest_modseq = self.highest_modseq.max(h);
        }
        let new = self.unannounced(changed);
        let mut out = self.announce_new_keywords(new);
        out.extend(fetches);
        if after != before {
            out.push(Response::Exists(after as u32));
        }
        out
    }

    /// The new messages to claim as recent, now, and forgotten until the next ones come.
    pub fn take_unclaimed(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.unclaimed)
    }

    /// Records the outcome of a claim of `claimed`: those from `first` on are recent here. The
    /// new number of recent messages is reported when it changed.
    pub fn claimed(&mut self, claimed: Vec<u32>, first: u32) -> Vec<Response> {
        let before = self.recent.len();
        for uid in claimed.into_iter().filter(|u| *u >= first) {
            // Only messages still in the view: one may have been expunged meanwhile.
            if self.seq_of(uid).is_some()
                && let Err(at) = self.recent.binary_search(&uid)
            {
                self.recent.insert(at, uid);
            }
        }
        let after = self.recent.len();
        if after != before { vec![Response::Recent(after as u32)] } else { Vec::new() }
    }

    /// Records this session's STORE and says what it tells the client: the messages' flags
    /// as the view now holds them (the same as the STORE's, unless a newer change had already
    /// been reported), for a non-silent STORE or under CONDSTORE; and for a non-silent STORE,
    /// the messages it left alone because their flags already matched (RFC 9051 asks for
    /// their FLAGS too), after FLAGS for any keyword the client has not seen.
    pub fn stored(
        &mut self,
        targets: &[(usize, u32)],
        updated: &[MessageSummary],
        modified: &[u32],
        answer: bool,
        by_uid: bool,
        modes: Modes,
    ) -> Vec<Response> {
        let condstore = modes.condstore;
        let mut fetches = Vec::new();
        let flags_of = |sel: &Selected, i: usize| answer.then(|| sel.shown(i));
        for u in updated {
            if let Some(i) = self.set_flags(u.uid, u.flags.clone(), u.modseq)
                && (answer || condstore)
            {
                fetches.push(Response::FetchFlags {
                    seq: i as u32 + 1,
                    uid: (by_uid || condstore).then_some(u.uid),
                    flags: flags_of(self, i),
                    modseq: condstore.then(|| self.modseqs[i]),
                });
            }
        }
        if answer {
            for (i, uid) in targets {
                if !updated.iter().any(|u| u.uid == *uid) && !modified.contains(uid) {
                    // Under CONDSTORE every FETCH carries UID and MODSEQ (RFC 7162 section
                    // 3.1), these too.
                    fetches.push(Response::FetchFlags {
                        seq: *i as u32 + 1,
                        uid: (by_uid || condstore).then_some(*uid),
                        flags: Some(self.shown(*i)),
                        modseq: condstore.then(|| self.modseqs[*i]),
                    });
                }
            }
        }
        let mut out = Vec::new();
        if answer {
            let flags: Vec<String> =
                targets.iter().filter_map(|(_, uid)| self.seq_of(*uid)).flat_map(|i| self.flags[i].clone()).collect();
            out = self.announce_keywords(flags.iter());
        }
        out.extend(fetches);
        out
    }

    /// CONDSTORE's MODIFIED code for the UIDs a STORE left alone: by UID for UID STORE, by
    /// message number otherwise.
    pub fn modified(&self, modified: &[u32], by_uid: bool) -> Code {
        if by_uid {
            return Code::Modified(modified.to_vec());
        }
        Code::Modified(modified.iter().filter_map(|u| self.seq_of(*u)).map(|i| i as u32 + 1).collect())
    }
}

/// The sequence set of `uids` (in increasing order), runs of consecutive UIDs as ranges; None
/// when there are none, which no sequence set can say.
fn uid_set(uids: &[u32]) -> Option<SequenceSet> {
    let value = |u: u32| NonZeroU32::new(u).map(SeqOrUid::Value);
    let mut out: Vec<Sequence> = Vec::new();
    let mut run: Option<(u32, u32)> = None;
    for &uid in uids {
        run = match run {
            Some((first, last)) if last.checked_add(1) == Some(uid) => Some((first, uid)),
            Some((first, last)) => {
                out.extend(run_sequence(first, last, value));
                Some((uid, uid))
            }
            None => Some((uid, uid)),
        };
    }
    if let Some((first, last)) = run {
        out.extend(run_sequence(first, last, value));
    }
    (!out.is_empty()).then(|| SequenceSet(Vec1::unvalidated(out)))
}

/// One run of [`uid_set`] as a number or a range.
fn run_sequence(first: u32, last: u32, value: impl Fn(u32) -> Option<SeqOrUid>) -> Option<Sequence> {
    Some(if first == last { Sequence::Single(value(first)?) } else { Sequence::Range(value(first)?, value(last)?) })
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

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Modes = Modes { condstore: false, qresync: false };
    const CONDSTORE: Modes = Modes { condstore: true, qresync: false };
    const QRESYNC: Modes = Modes { condstore: true, qresync: true };

    fn msg(uid: u32, flags: &[&str], modseq: u64) -> MessageSummary {
        MessageSummary { uid, flags: flags.iter().map(|f| f.to_string()).collect(), modseq, ..Default::default() }
    }

    fn event(kind: EventKind, modseq: u64, messages: Vec<MessageSummary>) -> MailboxEvent {
        MailboxEvent { folder_id: 1, kind: kind as i32, modseq, messages, ..Default::default() }
    }

    /// A folder with messages 1, 2 and 3 (UIDs 10, 20, 30), the highest MODSEQ 5.
    fn view() -> Selected {
        Selected::new(1, "INBOX".into(), false, 5, &[msg(10, &[], 2), msg(20, &["\\Seen"], 3), msg(30, &[], 5)])
    }

    /// The responses as the client reads them.
    fn wire(responses: &[Response]) -> Vec<String> {
        responses
            .iter()
            .map(|r| {
                let mut out = Vec::new();
                r.encode(&mut out);
                String::from_utf8(out).unwrap().trim_end().to_string()
            })
            .collect()
    }

    #[test]
    fn new_messages_are_announced_with_exists() {
        let mut sel = view();
        let out = sel.apply(&event(EventKind::Append, 6, vec![msg(40, &[], 6), msg(41, &[], 6)]), PLAIN);
        assert_eq!(wire(&out), ["* 5 EXISTS"]);
        assert_eq!(sel.uids, [10, 20, 30, 40, 41]);
        assert_eq!(sel.highest_modseq, 6);
        // The same event again (a replay) adds nothing.
        assert!(sel.apply(&event(EventKind::Append, 6, vec![msg(40, &[], 6)]), PLAIN).is_empty());
    }

    #[test]
    fn a_new_keyword_is_announced_before_the_fetch_that_carries_it() {
        let mut sel = view();
        let out = sel.apply(&event(EventKind::Flags, 6, vec![msg(20, &["\\Seen", "work"], 6)]), PLAIN);
        assert_eq!(
            wire(&out),
            [
                "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft work)",
                "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft work \\*)] Flags permitted",
                "* 2 FETCH (UID 20 FLAGS (\\Seen work))",
            ]
        );
        // Known now: the next use needs no announcement.
        let out = sel.apply(&event(EventKind::Flags, 7, vec![msg(10, &["work"], 7)]), PLAIN);
        assert_eq!(wire(&out), ["* 1 FETCH (UID 10 FLAGS (work))"]);
    }

    #[test]
    fn a_read_only_view_permits_no_flags() {
        let mut sel = Selected::new(1, "INBOX".into(), true, 5, &[msg(10, &["x"], 2)]);
        assert_eq!(sel.keywords, ["x"]);
        let out = sel.announce_keywords(&["y".to_string()]);
        assert_eq!(wire(&out)[1], "* OK [PERMANENTFLAGS ()] No permanent flags permitted");
    }

    #[test]
    fn fetches_go_before_exists_and_carry_modseq_only_under_condstore() {
        let e = event(EventKind::Flags, 6, vec![msg(30, &["\\Flagged"], 6)]);
        let mut plain = view();
        assert_eq!(wire(&plain.apply(&e, PLAIN)), ["* 3 FETCH (UID 30 FLAGS (\\Flagged))"]);
        let mut condstore = view();
        assert_eq!(wire(&condstore.apply(&e, CONDSTORE)), ["* 3 FETCH (UID 30 FLAGS (\\Flagged) MODSEQ (6))"]);
        // A resync that finds both a flag change and a new message: the FETCH first.
        let mut sel = view();
        let fresh = [msg(10, &[], 2), msg(20, &["\\Seen"], 3), msg(30, &["\\Flagged"], 6), msg(40, &[], 7)];
        assert_eq!(
            wire(&sel.resync(&fresh, Some(7), CONDSTORE)),
            ["* 3 FETCH (UID 30 FLAGS (\\Flagged) MODSEQ (6))", "* 4 EXISTS"]
        );
        assert_eq!(sel.highest_modseq, 7);
    }

    #[test]
    fn modseq_never_goes_back() {
        let mut sel = view();
        // This session's own STORE at MODSEQ 8 is recorded first ...
        sel.set_flags(10, vec!["\\Seen".into()], 8);
        // ... so its echo, and an older change arriving late, change nothing.
        assert!(sel.apply(&event(EventKind::Flags, 8, vec![msg(10, &["\\Seen"], 8)]), CONDSTORE).is_empty());
        assert!(sel.apply(&event(EventKind::Flags, 9, vec![msg(10, &[], 7)]), CONDSTORE).is_empty());
        assert_eq!((sel.flags[0].as_slice(), sel.modseqs[0]), (&["\\Seen".to_string()][..], 8));
        // Nor does a flags read older than the view.
        sel.set_flags(10, vec![], 6);
        assert_eq!(sel.modseqs[0], 8);
        // Nor a snapshot older than the view.
        let fresh = [msg(10, &[], 6), msg(20, &["\\Seen"], 3), msg(30, &[], 5)];
        assert!(sel.resync(&fresh, Some(6), CONDSTORE).is_empty());
        assert_eq!(sel.modseqs[0], 8);
    }

    #[test]
    fn expunges_wait_and_go_out_highest_number_first() {
        let mut sel = view();
        assert!(sel.apply(&event(EventKind::Expunge, 6, vec![msg(10, &[], 6), msg(30, &[], 6)]), PLAIN).is_empty());
        // Not yet told: the message numbers stay as they were.
        assert_eq!(sel.uids, [10, 20, 30]);
        assert_eq!(wire(&sel.expunge_pending(PLAIN)), ["* 3 EXPUNGE", "* 1 EXPUNGE"]);
        assert_eq!(sel.uids, [20]);
        assert!(sel.expunge_pending(PLAIN).is_empty());
    }

    #[test]
    fn expunges_are_one_vanished_under_qresync() {
        let mut sel = view();
        sel.apply(&event(EventKind::Expunge, 6, vec![msg(10, &[], 6), msg(20, &[], 6)]), QRESYNC);
        // A new message after the expunge: EXISTS counts the messages not yet expunged.
        let out = sel.apply(&event(EventKind::Append, 7, vec![msg(40, &[], 7)]), QRESYNC);
        assert_eq!(wire(&out), ["* 4 EXISTS"]);
        assert_eq!(wire(&sel.expunge_pending(QRESYNC)), ["* VANISHED 10,20"]);
        assert_eq!(sel.uids, [30, 40]);
    }

    #[test]
    fn own_expunge_removes_pending_ones_too() {
        let mut sel = view();
        sel.apply(&event(EventKind::Expunge, 6, vec![msg(20, &[], 6)]), PLAIN);
        assert_eq!(wire(&sel.remove_messages(&[20, 30], PLAIN)), ["* 3 EXPUNGE", "* 2 EXPUNGE"]);
        assert!(sel.pending_expunges.is_empty());
    }

    #[test]
    fn recent_is_what_this_session_claimed() {
        let mut sel = view();
        sel.claims_recent = true;
        sel.apply(&event(EventKind::Append, 6, vec![msg(40, &[], 6), msg(41, &[], 6)]), PLAIN);
        let unclaimed = sel.take_unclaimed();
        assert_eq!(unclaimed, [40, 41]);
        // Another session claimed 40 first.
        assert_eq!(wire(&sel.claimed(unclaimed, 41)), ["* 1 RECENT"]);
        assert_eq!(sel.shown(4), ["\\Recent"]);
        assert!(sel.shown(3).is_empty());
        // A flag change on a recent message keeps \Recent in its FETCH.
        let out = sel.apply(&event(EventKind::Flags, 7, vec![msg(41, &["\\Seen"], 7)]), PLAIN);
        assert_eq!(wire(&out), ["* 5 FETCH (UID 41 FLAGS (\\Seen \\Recent))"]);
        // An expunged message is no longer recent; a claim that changes nothing says nothing.
        sel.remove_messages(&[41], PLAIN);
        assert!(sel.recent.is_empty());
        assert!(sel.claimed(vec![41], 0).is_empty());
        // A session that does not claim (EXAMINE, IMAP4rev2) has nothing to claim.
        let mut examine = view();
        examine.apply(&event(EventKind::Append, 6, vec![msg(40, &[], 6)]), PLAIN);
        assert!(examine.take_unclaimed().is_empty());
    }

    #[test]
    fn events_of_other_folders_or_old_ones_change_nothing() {
        let mut sel = view();
        let mut other = event(EventKind::Append, 9, vec![msg(50, &[], 9)]);
        other.folder_id = 2;
        assert!(sel.apply(&other, PLAIN).is_empty());
        assert!(sel.apply(&event(EventKind::Append, 5, vec![msg(50, &[], 5)]), PLAIN).is_empty());
        assert_eq!(sel.uids.len(), 3);
    }

    #[test]
    fn quick_resync_reports_vanished_then_changes() {
        let mut sel = view();
        let known: SequenceSet = "1:15".try_into().unwrap();
        let out = sel.quick_resync(vec![5, 12, 16], &[msg(20, &["\\Seen", "new"], 9)], Some(&known), QRESYNC);
        assert_eq!(wire(&out)[2..], ["* VANISHED (EARLIER) 5,12", "* 2 FETCH (UID 20 FLAGS (\\Seen new) MODSEQ (9))"]);
        assert!(wire(&out)[0].starts_with("* FLAGS"));
    }

    #[test]
    fn store_answers_from_the_view() {
        let mut sel = view();
        let targets = sel.resolve(&"1:2".try_into().unwrap(), false).unwrap();
        // Message 1 changed, message 2 already had the flag.
        let out = sel.stored(&targets, &[msg(10, &["\\Seen"], 6)], &[], true, false, PLAIN);
        assert_eq!(wire(&out), ["* 1 FETCH (FLAGS (\\Seen))", "* 2 FETCH (FLAGS (\\Seen))"]);
        // Silent, without CONDSTORE: nothing to say.
        assert!(sel.stored(&targets, &[msg(10, &[], 7)], &[], false, false, PLAIN).is_empty());
        // Silent under CONDSTORE: UID and MODSEQ.
        let out = sel.stored(&targets, &[msg(20, &[], 8)], &[], false, false, CONDSTORE);
        assert_eq!(wire(&out), ["* 2 FETCH (UID 20 MODSEQ (8))"]);
        assert_eq!(sel.modified(&[20, 30], false), Code::Modified(vec![2, 3]));
        assert_eq!(sel.modified(&[20, 30], true), Code::Modified(vec![20, 30]));
    }

    /// `$` as a command's sequence set, parsed the way the decoder leaves it.
    fn last_result() -> SequenceSet {
        std::str::from_utf8(crate::extended::LAST_RESULT).unwrap().try_into().unwrap()
    }

    #[test]
    fn saved_result_names_messages_by_uid() {
        let mut sel = view();
        // Nothing saved yet: `$` names no message, and that is no error.
        assert_eq!(sel.targets(&last_result(), false, true), Ok(vec![]));
        sel.save(vec![30, 10, 30]);
        assert_eq!(sel.saved, [10, 30]);
        assert_eq!(sel.targets(&last_result(), false, true), Ok(vec![(0, 10), (2, 30)]));
        assert_eq!(sel.targets(&last_result(), true, true), Ok(vec![(0, 10), (2, 30)]));
        // The same set written by the client (no `$` in its command) is the last message.
        assert_eq!(sel.targets(&last_result(), false, false), Ok(vec![(2, 30)]));
        // An expunge takes the message out of `$`, and `$` follows the renumbering.
        let out = sel.remove_messages(&[10], PLAIN);
        assert_eq!(wire(&out), ["* 1 EXPUNGE"]);
        assert_eq!(sel.saved, [30]);
        assert_eq!(sel.targets(&last_result(), false, true), Ok(vec![(1, 30)]));
        // Another session's expunge, once announced, does the same.
        sel.apply(&event(EventKind::Expunge, 9, vec![msg(30, &[], 9)]), PLAIN);
        assert_eq!(sel.saved, [30], "not announced yet: the message still has its number");
        sel.expunge_pending(PLAIN);
        assert!(sel.saved.is_empty());
    }

    #[test]
    fn search_keys_take_the_saved_result() {
        let mut sel = view();
        let parse = |criteria: &str| -> Vec<SearchKey<'static>> {
            let command = format!("a SEARCH {criteria}\r\n");
            match crate::extended::decode(command.as_bytes()) {
                Ok((_, crate::extended::Decoded::Command(c, _))) => match c.body {
                    imap_codec::imap_types::command::CommandBody::Search { criteria, .. } => criteria.into_inner(),
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            }
        };
        let keys = parse("$ OR UID $ NOT ($)");
        // Empty: nothing matches `$`.
        let none = SearchKey::Not(Box::new(SearchKey::All));
        assert_eq!(sel.with_last_result(&keys)[0], none);
        sel.save(vec![10, 20, 30, 40, 60]);
        let set = |s: &str| SearchKey::Uid(s.try_into().unwrap());
        let keys = sel.with_last_result(&keys);
        assert_eq!(keys[0], set("10,20,30,40,60"));
        let SearchKey::Or(a, b) = &keys[1] else { panic!("{keys:?}") };
        assert_eq!(**a, set("10,20,30,40,60"));
        let SearchKey::Not(inner) = &**b else { panic!("{b:?}") };
        let SearchKey::And(inner) = &**inner else { panic!("{inner:?}") };
        assert_eq!(inner.as_ref(), [set("10,20,30,40,60")]);
        // Runs of UIDs become ranges.
        assert_eq!(uid_set(&[1, 2, 3, 5, 7, 8]), Some("1:3,5,7:8".try_into().unwrap()));
        assert_eq!(uid_set(&[]), None);
        // Other keys, and sets that are not `$`, are left as they are.
        let keys = parse("1:2 SUBJECT $");
        assert_eq!(sel.with_last_result(&keys), keys);
    }
}
