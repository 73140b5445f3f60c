//! Commands on the messages of the selected mailbox: FETCH, STORE, SEARCH, COPY, MOVE,
//! EXPUNGE (and UID EXPUNGE), CLOSE and UNSELECT, each also as its UID variant.

use std::num::NonZeroU32;

use imap_codec::imap_types::{
    command::{CommandBody, FetchModifier, StoreModifier},
    core::{Charset, Tag},
    extensions::{sort::SortCriterion, thread::ThreadingAlgorithm},
    fetch::{MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName},
    flag::{Flag, StoreResponse, StoreType},
    search::SearchKey,
    sequence::SequenceSet,
};
use tern_proto::v1::{
    CopyRequest, ErrorReason, ExpungeRequest, FetchBodyRequest, FetchMessagesRequest, FlagsMode, FolderRef,
    MessageMeta, MoveRequest, StoreFlagsRequest,
};

use super::{
    Flow, Session,
    response::{Code, Esearch, FetchExtra, Response},
    view::contains,
};
use crate::{fetch, search};

/// Most UIDs asked of the mailbox service in one call.
const BATCH: usize = 500;
/// How many bytes of message bodies a FETCH asks to get inline with their metadata, per batch.
const INLINE_BODIES: u64 = 1 << 20;

/// A message that matched a SEARCH key list.
pub(crate) struct Match {
    /// Its position in the session's view (message number - 1).
    pub index: usize,
    /// The MODSEQ the session has reported for it.
    pub modseq: u64,
    pub meta: MessageMeta,
}

/// The matches as SORT and THREAD take them, named by UID or by message number.
pub(crate) fn sort_items(matches: &[Match], by_uid: bool) -> Vec<crate::sort::Item<'_>> {
    matches
        .iter()
        .map(|m| {
            let seq = m.index as u32 + 1;
            crate::sort::Item {
                id: if by_uid { m.meta.uid } else { seq },
                seq,
                size: m.meta.size,
                internal_date: m.meta.internal_date,
                envelope: m.meta.envelope.as_ref(),
            }
        })
        .collect()
}

impl Session {
    fn folder_id(&self) -> u64 {
        self.selected.as_ref().map(|s| s.id).unwrap_or_default()
    }

    fn account(&self) -> u64 {
        self.account.as_ref().map(|a| a.id).unwrap_or_default()
    }

    /// Metadata of `uids` (in the order asked), in batches.
    async fn metas(&mut self, uids: &[u32], structure: bool) -> Result<Vec<MessageMeta>, tonic::Status> {
        self.metas_inline(uids, structure, 0).await
    }

    /// The messages' metadata, with the raw messages inline while their sizes add up to at most
    /// `inline` bytes per batch.
    async fn metas_inline(
        &mut self,
        uids: &[u32],
        structure: bool,
        inline: u64,
    ) -> Result<Vec<MessageMeta>, tonic::Status> {
        let mut out = Vec::with_capacity(uids.len());
        for chunk in uids.chunks(BATCH) {
            let req = FetchMessagesRequest {
                account_id: self.account(),
                folder_id: self.folder_id(),
                uids: chunk.to_vec(),
                with_structure: structure,
                inline_body_limit: inline,
            };
            out.extend(self.client.fetch_messages(req).await?.into_inner().messages);
        }
        Ok(out)
    }

    async fn message_bytes(&mut self, uid: u32) -> Result<Vec<u8>, tonic::Status> {
        let req =
            FetchBodyRequest { account_id: self.account(), folder_id: self.folder_id(), uid, offset: 0, length: 0 };
        let mut stream = self.client.fetch_body(req).await?.into_inner();
        let mut out = Vec::new();
        while let Some(part) = stream.message().await? {
            if out.is_empty() {
                out.reserve(part.total_size as usize);
            }
            out.extend_from_slice(&part.chunk);
        }
        Ok(out)
    }

    pub(crate) async fn in_selected(
        &mut self,
        tag: &Tag<'static>,
        body: CommandBody<'static>,
    ) -> std::io::Result<Flow> {
        Ok(match body {
            CommandBody::Fetch { sequence_set, macro_or_item_names, uid, modifiers } => {
                let flow = self.fetch(tag, &sequence_set, &macro_or_item_names, uid, &modifiers).await;
                self.sync_updates(false).await;
                flow
            }
            CommandBody::Store { sequence_set, kind, response, flags, uid, modifiers } => {
                let flow = self.store(tag, &sequence_set, kind, response, &flags, uid, &modifiers).await;
                self.sync_updates(false).await;
                flow
            }
            CommandBody::Search { charset, criteria, uid } => {
                let criteria = self.search_keys(criteria.as_ref());
                let flow = self.search(tag, charset.as_ref(), &criteria, uid).await;
                self.sync_updates(false).await;
                flow
            }
            CommandBody::Sort { sort_criteria, charset, search_criteria, uid } => {
                let criteria = self.search_keys(search_criteria.as_ref());
                let flow = self.sort(tag, sort_criteria.as_ref(), &charset, &criteria, uid).await;
                self.sync_updates(false).await;
                flow
            }
            CommandBody::Thread { algorithm, charset, search_criteria, uid } => {
                let criteria = self.search_keys(search_criteria.as_ref());
                let flow = self.thread(tag, &algorithm, &charset, &criteria, uid).await;
                self.sync_updates(false).await;
                flow
            }
            CommandBody::Copy { sequence_set, mailbox, uid } => {
                let Some(dest) = self.mailbox_name(&mailbox) else { return Ok(self.bad(tag, "Invalid mailbox name")) };
                let flow = self.copy(tag, &sequence_set, dest, uid, false).await;
                self.sync_updates(true).await;
                flow
            }
            CommandBody::Move { sequence_set, mailbox, uid } => {
                let Some(dest) = self.mailbox_name(&mailbox) else { return Ok(self.bad(tag, "Invalid mailbox name")) };
                let flow = self.copy(tag, &sequence_set, dest, uid, true).await;
                self.sync_updates(true).await;
                flow
            }
            CommandBody::Expunge => self.expunge(tag, None, "EXPUNGE").await,
            CommandBody::ExpungeUid { sequence_set } => self.expunge(tag, Some(&sequence_set), "UID EXPUNGE").await,
            CommandBody::Close => {
                if self.selected.as_ref().is_some_and(|s| !s.read_only) {
                    // CLOSE expunges silently (RFC 9051 section 6.4.1).
                    let req = ExpungeRequest {
                        account_id: self.account(),
                        folder_id: self.folder_id(),
                        uids: vec![],
                        only_deleted: true,
                    };
                    if let Err(s) = self.client.expunge(req).await {
                        self.failed(tag, &s);
                        return Ok(Flow::Continue);
                    }
                }
                self.close_selected(tag, "CLOSE")
            }
            CommandBody::Unselect => self.close_selected(tag, "UNSELECT"),
            other => self.bad(tag, format!("{} is not supported", other.name())),
        })
    }

    /// The command's search keys, with the saved result in place of `$` (RFC 5182) when the
    /// command used it.
    fn search_keys(&self, keys: &[SearchKey<'static>]) -> Vec<SearchKey<'static>> {
        match self.selected.as_ref() {
            Some(sel) if self.extras.last_result => sel.with_last_result(keys),
            _ => keys.to_vec(),
        }
    }

    /// Keeps `uids` for `$` (RFC 5182 section 2.1); a SEARCH or SORT with SAVE that failed keeps
    /// an empty result.
    fn save_result(&mut self, uids: Vec<u32>) {
        if let Some(sel) = self.selected.as_mut() {
            sel.save(uids);
        }
    }

    /// Sets the messages' FLAGS (with \Recent where this session reports it) and MODSEQ to
    /// the session's view.
    fn flags_from_view(&self, metas: &mut [MessageMeta]) {
        let Some(sel) = self.selected.as_ref() else { return };
        for m in metas {
            if let Some(i) = sel.seq_of(m.uid) {
                m.flags = sel.shown(i);
                m.modseq = sel.modseqs[i];
            }
        }
    }

    async fn fetch(
        &mut self,
        tag: &Tag<'static>,
        set: &SequenceSet,
        names: &MacroOrMessageDataItemNames<'static>,
        by_uid: bool,
        modifiers: &[FetchModifier],
    ) -> Flow {
        let Some(sel) = self.selected.as_ref() else { return Flow::Continue };
        let mut targets = match sel.targets(set, by_uid, self.extras.last_result) {
            Ok(t) => t,
            Err(why) => return self.bad(tag, why),
        };
        let read_only = sel.read_only;
        let items = fetch::expand(names);
        let mut needs = fetch::needs(&items);
        // PREVIEW is made from the first text part of the message.
        needs.body |= self.extras.preview;
        needs.structure |= self.extras.preview;
        let changed_since = modifiers.iter().find_map(|m| match m {
            FetchModifier::ChangedSince(v) => Some(v.get()),
            _ => None,
        });
        if changed_since.is_some() || items.iter().any(|i| matches!(i, MessageDataItemName::ModSeq)) {
            self.enable_condstore();
        }
        if let (Some(window), Some(sel)) = (self.extras.partial.as_ref(), self.selected.as_ref()) {
            // With CHANGEDSINCE, the window counts the messages that changed, not those of the
            // whole set (RFC 9394 section 3.4), so they are picked out first, by the MODSEQ
            // this client was told, which is the one the filter below uses as well.
            if let Some(since) = changed_since {
                targets.retain(|(i, _)| sel.modseqs.get(*i).is_some_and(|m| *m > since));
            }
            // The targets are in ascending order, as the window counts them; one past the set
            // leaves nothing to answer, which is no error.
            targets = window.select(&targets).to_vec();
        }
        let vanished = modifiers.iter().any(|m| matches!(m, FetchModifier::Vanished));
        if vanished && (!by_uid || !self.qresync || changed_since.is_none()) {
            return self.bad(tag, "VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC");
        }
        if let (true, Some(since)) = (vanished, changed_since) {
            // RFC 7162 section 3.2.6: the expunged UIDs of the set since that MODSEQ.
            let (account_id, folder_id) = (self.account(), self.folder_id());
            let req = tern_proto::v1::ChangesRequest { account_id, folder_id, since_modseq: since };
            // `$` names messages still in the view (an expunged one left the saved result), so
            // none of them has vanished.
            let last_result = self.extras.last_result && crate::extended::is_last_result(set);
            match self.client.changes(req).await {
                Ok(c) => {
                    let gone: Vec<u32> = c
                        .into_inner()
                        .vanished
                        .into_iter()
                        .filter(|u| !last_result && contains(set, *u, u32::MAX))
                        .collect();
                    if !gone.is_empty() {
                        self.send(Response::Vanished { earlier: true, uids: gone });
                    }
                }
                Err(s) => {
                    self.failed(tag, &s);
                    return Flow::Continue;
                }
            }
        }
        let uids: Vec<u32> = targets.iter().map(|(_, uid)| *uid).collect();
        // UID, FLAGS and MODSEQ are what the session's view already holds (kept current by the
        // event feed); asking the mailbox service for them would cost a round trip per FETCH,
        // and a client resynchronising its flags sends exactly that FETCH most often.
        let local_only = !self.extras.email_id
            && !self.extras.preview
            && !self.extras.save_date
            && items.iter().all(|i| {
                matches!(i, MessageDataItemName::Uid | MessageDataItemName::Flags | MessageDataItemName::ModSeq)
            });
        let metas = if local_only {
            // The flags are those of the session's view: what this client has been told, with
            // newer changes following as unsolicited FETCH responses at the end of the command.
            let sel = self.selected.as_ref();
            Ok(targets
                .iter()
                .filter_map(|(i, uid)| {
                    let sel = sel?;
                    Some(MessageMeta {
                        uid: *uid,
                        flags: sel.flags.get(*i)?.clone(),
                        modseq: *sel.modseqs.get(*i)?,
                        ..Default::default()
                    })
                })
                .collect())
        } else {
            // Bodies of small messages come with their metadata, in the same call.
            let inline = if needs.body { INLINE_BODIES } else { 0 };
            self.metas_inline(&uids, needs.structure, inline).await
        };
        let mut metas = match metas {
            Ok(m) => m,
            Err(s) => {
                self.failed(tag, &s);
                return Flow::Continue;
            }
        };
        // FLAGS and MODSEQ are always answered from the session's view, whatever else the
        // mailbox service sent along: the view is what this client has been told, newer changes
        // reach it in order through the event feed, and answering from a newer read now and
        // from the view later would make a message's MODSEQ go backwards (RFC 7162 section 3.1).
        self.flags_from_view(&mut metas);
        if let Some(since) = changed_since {
            metas.retain(|m| m.modseq > since);
        }
        // Reading a body sets \Seen; it is stored before answering so the FLAGS sent are true.
        let mut seen_now = Vec::new();
        if fetch::sets_seen(&items) && !read_only {
            let unseen: Vec<u32> =
                metas.iter().filter(|m| !m.flags.iter().any(|f| f == "\\Seen")).map(|m| m.uid).collect();
            if !unseen.is_empty() {
                let req = StoreFlagsRequest {
                    account_id: self.account(),
                    folder_id: self.folder_id(),
                    uids: unseen,
                    mode: FlagsMode::Add as i32,
                    flags: vec!["\\Seen".into()],
                    unchanged_since: 0,
                };
                match self.client.store_flags(req).await {
                    Ok(r) => {
                        for u in r.into_inner().updated {
                            seen_now.push(u.uid);
                            if let Some(m) = metas.iter_mut().find(|m| m.uid == u.uid) {
                                m.flags = u.flags.clone();
                                m.modseq = u.modseq;
                            }
                            if let Some(sel) = self.selected.as_mut() {
                                sel.set_flags(u.uid, u.flags, u.modseq);
                            }
                        }
                    }
                    Err(s) => {
                        self.failed(tag, &s);
                        return Flow::Continue;
                    }
                }
            }
        }
        if !seen_now.is_empty() {
            self.flags_from_view(&mut metas);
        }
        if items.iter().any(|i| matches!(i, MessageDataItemName::Flags)) || !seen_now.is_empty() {
            self.announce_keywords(metas.iter().flat_map(|m| m.flags.iter()));
        }
        let modseq = self.condstore;
        for meta in &mut metas {
            let Some(seq) = self.selected.as_ref().and_then(|s| s.seq_of(meta.uid)) else { continue };
            let inline = std::mem::take(&mut meta.raw);
            let meta = &*meta;
            let raw = if needs.body && meta.has_raw {
                Some(inline)
            } else if needs.body {
                match self.message_bytes(meta.uid).await {
                    Ok(r) => Some(r),
                    // Expunged by another session meanwhile: nothing to say about it.
                    Err(s) if ErrorReason::of(&s) == ErrorReason::NotFound => continue,
                    Err(s) => {
                        self.failed(tag, &s);
                        return Flow::Continue;
                    }
                }
            } else {
                None
            };
            let Some(seq) = NonZeroU32::new(seq as u32 + 1) else { continue };
            let view = fetch::MessageView { seq, meta, raw: raw.as_deref() };
            // A message whose \Seen was just set gets its new FLAGS too (RFC 9051 section 6.4.5).
            let with_flags;
            let message_items =
                if seen_now.contains(&meta.uid) && !items.iter().any(|i| matches!(i, MessageDataItemName::Flags)) {
                    with_flags = items.iter().cloned().chain([MessageDataItemName::Flags]).collect::<Vec<_>>();
                    &with_flags
                } else {
                    &items
                };
            let built = match fetch::build(message_items, &view, by_uid, modseq) {
                Ok(b) => b,
                Err(e) if e.is_unknown_cte() => {
                    self.no_code(tag, Code::Atom("UNKNOWN-CTE"), e.to_string());
                    return Flow::Continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, uid = meta.uid, "cannot build a FETCH response");
                    self.no_code(tag, Code::Atom("SERVERBUG"), e.to_string());
                    return Flow::Continue;
                }
            };
            let built = if self.extras.placeholder && !by_uid {
                built.into_iter().filter(|i| !matches!(i, MessageDataItem::Uid(_))).collect()
            } else {
                built
            };
            let mut extras = Vec::new();
            if self.extras.email_id {
                extras.push(FetchExtra::EmailId(meta.email_id.clone()));
            }
            if self.extras.thread_id {
                extras.push(FetchExtra::ThreadIdNil);
            }
            if self.extras.preview {
                let text = raw.as_deref().and_then(fetch::preview);
                extras.push(FetchExtra::Preview { text, utf8: self.utf8 });
            }
            if self.extras.save_date {
                extras.push(FetchExtra::SaveDate(meta.save_date));
            }
            self.send(Response::Fetch { seq, items: built, extras });
        }
        self.ok(tag, if by_uid { "UID FETCH completed" } else { "FETCH completed" });
        Flow::Continue
    }

    #[allow(clippy::too_many_arguments)]
    async fn store(
        &mut self,
        tag: &Tag<'static>,
        set: &SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags: &[Flag<'static>],
        by_uid: bool,
        modifiers: &[StoreModifier],
    ) -> Flow {
        let Some(sel) = self.selected.as_ref() else { return Flow::Continue };
        if sel.read_only {
            self.no_code(tag, Code::ReadOnly, "Mailbox is read-only");
            return Flow::Continue;
        }
        let targets = match sel.targets(set, by_uid, self.extras.last_result) {
            Ok(t) => t,
            Err(why) => return self.bad(tag, why),
        };
        let unchanged_since = modifiers.iter().map(|m| match m {
            StoreModifier::UnchangedSince(v) => *v,
        });
        let unchanged_since = unchanged_since.max();
        if unchanged_since.is_some() {
            self.enable_condstore();
        }
        let mode = match kind {
            StoreType::Replace => FlagsMode::Replace,
            StoreType::Add => FlagsMode::Add,
            StoreType::Remove => FlagsMode::Remove,
        };
        let req = StoreFlagsRequest {
            account_id: self.account(),
            folder_id: self.folder_id(),
            uids: targets.iter().map(|(_, u)| *u).collect(),
            mode: mode as i32,
            flags: flags.iter().map(Flag::to_string).collect(),
            // UNCHANGEDSINCE 0 means "only if never changed", which no message is here.
            unchanged_since: unchanged_since.map(|v| v.max(1)).unwrap_or(0),
        };
        let r = match self.client.store_flags(req).await {
            Ok(r) => r.into_inner(),
            Err(s) => {
                self.failed(tag, &s);
                return Flow::Continue;
            }
        };
        let modes = self.modes();
        let Some(sel) = self.selected.as_mut() else { return Flow::Continue };
        let answer = response == StoreResponse::Answer;
        let out = sel.stored(&targets, &r.updated, &r.modified, answer, by_uid, modes);
        let modified = (!r.modified.is_empty()).then(|| sel.modified(&r.modified, by_uid));
        self.send_all(out);
        match modified {
            None => self.ok(tag, if by_uid { "UID STORE completed" } else { "STORE completed" }),
            Some(code) => self.ok_code(tag, code, "Some messages were modified since"),
        }
        Flow::Continue
    }

    /// The answers to the text keys (HEADER, BODY, TEXT) of a search, from the mailbox
    /// service's SearchText, which answers them for the whole folder from its full-text index.
    async fn text_answers(
        &mut self,
        keys: Vec<tern_mail::text::TextKey>,
    ) -> Result<search::TextAnswers, tonic::Status> {
        use tern_mail::text::TextKey;
        use tern_proto::v1::{SearchTextKey, SearchTextRequest, TextField};
        let request = SearchTextRequest {
            account_id: self.account(),
            folder_id: self.folder_id(),
            keys: keys
                .iter()
                .map(|k| match k {
                    TextKey::Body(n) => {
                        SearchTextKey { field: TextField::Body as i32, header: String::new(), needle: n.clone() }
                    }
                    TextKey::Text(n) => {
                        SearchTextKey { field: TextField::Text as i32, header: String::new(), needle: n.clone() }
                    }
                    TextKey::Header { name, needle } => {
                        SearchTextKey { field: TextField::Header as i32, header: name.clone(), needle: needle.clone() }
                    }
                })
                .collect(),
        };
        let response = self.client.search_text(request).await?.into_inner();
        Ok(search::TextAnswers { keys: keys.into_iter().zip(response.results.into_iter().map(|r| r.uids)).collect() })
    }

    /// The selected mailbox's messages that match `criteria`, in mailbox order, with their
    /// metadata (and envelope, when `envelope` or the criteria need it).
    ///
    /// Text keys are answered for the whole folder by one SearchText call rather than by
    /// reading each message. When what is left needs neither the envelope, the message nor its
    /// size and dates, the keys are decided by the session's view alone and the metadata is
    /// fetched for the matches only (and not at all when only their UIDs are wanted), so a
    /// search of a large mailbox costs what it finds.
    pub(crate) async fn matching(
        &mut self,
        criteria: &[SearchKey<'static>],
        envelope: bool,
    ) -> Result<Vec<Match>, tonic::Status> {
        let Some(sel) = self.selected.as_ref() else { return Ok(Vec::new()) };
        let empty = sel.uids.is_empty();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let mut needs = search::needs_all(criteria);
        let text_keys = search::text_keys(criteria);
        let answers = if text_keys.is_empty() || empty {
            None
        } else {
            match self.text_answers(text_keys).await {
                Ok(answers) => {
                    needs.raw = false;
                    Some(answers)
                }
                // A mailbox service older than SearchText: read the messages, as before it.
                Err(status) if status.code() == tonic::Code::Unimplemented => None,
                Err(status) => return Err(status),
            }
        };
        if !needs.envelope && !needs.raw && !needs.meta {
            return self.matching_by_view(criteria, envelope, answers.as_ref(), now).await;
        }
        let Some(sel) = self.selected.as_ref() else { return Ok(Vec::new()) };
        let uids = sel.uids.clone();
        let flags = sel.flags.clone();
        let ctx = search::Context { max_seq: uids.len() as u32, max_uid: uids.last().copied().unwrap_or(0), now };
        let modseqs = sel.modseqs.clone();
        let recent: Vec<bool> = uids.iter().map(|u| sel.is_recent(*u)).collect();
        let metas = self.metas(&uids, needs.envelope || envelope).await?;
        // The metadata comes in the order asked, less the messages expunged meanwhile; both
        // lists are in UID order, so one walk pairs them.
        let mut metas = metas.into_iter().peekable();
        let mut out = Vec::new();
        for (i, uid) in uids.iter().enumerate() {
            while metas.next_if(|m| m.uid < *uid).is_some() {}
            let Some(meta) = metas.next_if(|m| m.uid == *uid) else { continue };
            let raw = if needs.raw {
                match self.message_bytes(*uid).await {
                    Ok(r) => Some(r),
                    Err(_) => continue,
                }
            } else {
                None
            };
            let candidate = search::Candidate {
                seq: i as u32 + 1,
                uid: *uid,
                flags: &flags[i],
                // The view's MODSEQ, as FETCH reports it.
                modseq: modseqs[i],
                recent: recent[i],
                size: meta.size,
                internal_date: meta.internal_date,
                save_date: meta.save_date,
                envelope: meta.envelope.as_ref(),
                raw: raw.as_deref(),
                answers: answers.as_ref(),
            };
            if search::matches_all(criteria, &candidate, &ctx) {
                out.push(Match { index: i, modseq: modseqs[i], meta });
            }
        }
        Ok(out)
    }

    /// [`Self::matching`] for keys the session's view decides alone (flags, UIDs, sequence
    /// numbers, MODSEQ, and text keys already answered): nothing is copied or fetched but the
    /// metadata of the matches, and that only when `envelope` asks for it.
    async fn matching_by_view(
        &mut self,
        criteria: &[SearchKey<'static>],
        envelope: bool,
        answers: Option<&search::TextAnswers>,
        now: i64,
    ) -> Result<Vec<Match>, tonic::Status> {
        let Some(sel) = self.selected.as_ref() else { return Ok(Vec::new()) };
        let ctx =
            search::Context { max_seq: sel.uids.len() as u32, max_uid: sel.uids.last().copied().unwrap_or(0), now };
        let wanted: Vec<usize> = match (answers, criteria) {
            // The most common text search, one key alone: its answer's UIDs are the matches.
            (Some(a), [key]) if a.keys.len() == 1 && search::text_key(key).is_some() => {
                a.keys[0].1.iter().filter_map(|uid| sel.uids.binary_search(uid).ok()).collect()
            }
            _ => {
                let recent = search::mentions_recent(criteria);
                (0..sel.uids.len())
                    .filter(|&i| {
                        let uid = sel.uids[i];
                        let candidate = search::Candidate {
                            seq: i as u32 + 1,
                            uid,
                            flags: &sel.flags[i],
                            modseq: sel.modseqs[i],
                            recent: recent && sel.is_recent(uid),
                            size: 0,
                            internal_date: 0,
                            save_date: 0,
                            envelope: None,
                            raw: None,
                            answers,
                        };
                        search::matches_all(criteria, &candidate, &ctx)
                    })
                    .collect()
            }
        };
        if !envelope {
            // SEARCH wants the matches' UIDs and positions only, which the view has: a
            // message another session expunged meanwhile is still in this session's view
            // until it is told, and may be named.
            return Ok(wanted
                .into_iter()
                .map(|i| Match {
                    index: i,
                    modseq: sel.modseqs[i],
                    meta: MessageMeta { uid: sel.uids[i], ..MessageMeta::default() },
                })
                .collect());
        }
        let pairs: Vec<(usize, u32, u64)> = wanted.iter().map(|&i| (i, sel.uids[i], sel.modseqs[i])).collect();
        let wanted_uids: Vec<u32> = pairs.iter().map(|p| p.1).collect();
        let metas = self.metas(&wanted_uids, true).await?;
        // The metadata comes in the order asked, less the messages expunged meanwhile.
        let mut metas = metas.into_iter().peekable();
        let mut out = Vec::with_capacity(pairs.len());
        for (i, uid, modseq) in pairs {
            while metas.next_if(|m| m.uid < uid).is_some() {}
            if let Some(meta) = metas.next_if(|m| m.uid == uid) {
                out.push(Match { index: i, modseq, meta });
            }
        }
        Ok(out)
    }

    /// SORT (RFC 5256, and SORT=DISPLAY, RFC 5957): SEARCH's matches in the order asked.
    async fn sort(
        &mut self,
        tag: &Tag<'static>,
        criteria: &[SortCriterion],
        charset: &Charset<'static>,
        keys: &[SearchKey<'static>],
        by_uid: bool,
    ) -> Flow {
        let save = self.extras.search.as_ref().is_some_and(|o| o.save);
        let update = self.extras.search.as_ref().is_some_and(|o| o.update);
        if update && self.context_tag_in_use(tag) {
            return self.bad(tag, "Tag reuse: a search kept up to date has this tag");
        }
        let Some(matches) = self.sort_or_thread_matches(tag, charset, keys).await else {
            if save {
                self.save_result(Vec::new());
            }
            return Flow::Continue;
        };
        let items = sort_items(&matches, by_uid);
        let sorted = crate::sort::sort(&items, criteria);
        if update {
            let uids = crate::sort::sort(&sort_items(&matches, true), criteria);
            self.keep_context(tag, by_uid, keys, Some(criteria), uids);
        }
        match self.extras.search.take() {
            Some(options) => {
                if options.save {
                    // The UIDs of the sorted messages; MIN and MAX alone keep only the first and
                    // the last in sort order (RFC 5267 section 3.2, RFC 5182 section 2.1).
                    let uid_of = |id: u32| {
                        if by_uid {
                            Some(id)
                        } else {
                            // The matches are in mailbox order, so by message number.
                            let i = matches.binary_search_by_key(&(id as usize), |m| m.index + 1).ok()?;
                            Some(matches[i].meta.uid)
                        }
                    };
                    let kept: Vec<u32> = if options.saves_every_match() {
                        sorted.iter().filter_map(|id| uid_of(*id)).collect()
                    } else {
                        let first = sorted.first().filter(|_| options.min);
                        let last = sorted.last().filter(|_| options.max);
                        let page = options.partial.as_ref().map(|p| p.select(&sorted)).unwrap_or_default();
                        first.into_iter().chain(last).chain(page).filter_map(|id| uid_of(*id)).collect()
                    };
                    self.save_result(kept);
                }
                if options.returns_anything() {
                    self.send_esort(tag, by_uid, &options, &sorted);
                }
            }
            None => self.send(Response::Sort(sorted)),
        }
        self.ok(tag, if by_uid { "UID SORT completed" } else { "SORT completed" });
        Flow::Continue
    }

    /// ESORT's answer (RFC 5267): MIN and MAX are the first and last in sort order, and ALL
    /// keeps the order.
    fn send_esort(
        &mut self,
        tag: &Tag<'static>,
        by_uid: bool,
        options: &crate::extended::SearchReturn,
        sorted: &[u32],
    ) {
        self.send(Response::Esearch(Esearch {
            tag: tag.inner().to_string(),
            uid: by_uid,
            min: sorted.first().copied().filter(|_| options.min),
            max: sorted.last().copied().filter(|_| options.max),
            count: options.count.then_some(sorted.len()),
            all: (options.all && !sorted.is_empty()).then(|| sorted.to_vec()),
            all_in_order: true,
            // PARTIAL pages through the sort order (RFC 9394 section 3.1).
            partial: options.partial.as_ref().map(|p| (p.text.clone(), p.select(sorted).to_vec())),
            modseq: None,
        }));
    }

    /// THREAD (RFC 5256): SEARCH's matches as threads, by ORDEREDSUBJECT or REFERENCES.
    async fn thread(
        &mut self,
        tag: &Tag<'static>,
        algorithm: &ThreadingAlgorithm<'static>,
        charset: &Charset<'static>,
        keys: &[SearchKey<'static>],
        by_uid: bool,
    ) -> Flow {
        let how = match algorithm {
            ThreadingAlgorithm::OrderedSubject => None,
            ThreadingAlgorithm::References => Some(crate::sort::Threading::References),
            ThreadingAlgorithm::Other(o) if o.as_ref().eq_ignore_ascii_case("REFS") => {
                Some(crate::sort::Threading::Refs)
            }
            ThreadingAlgorithm::Other(_) => return self.bad(tag, "Unknown threading algorithm"),
        };
        let Some(matches) = self.sort_or_thread_matches(tag, charset, keys).await else { return Flow::Continue };
        let items = sort_items(&matches, by_uid);
        let threads = match how {
            None => crate::sort::ordered_subject(&items),
            Some(how) => crate::sort::references(&items, how),
        };
        self.send(Response::Thread(crate::sort::render(&threads)));
        self.ok(tag, if by_uid { "UID THREAD completed" } else { "THREAD completed" });
        Flow::Continue
    }

    async fn sort_or_thread_matches(
        &mut self,
        tag: &Tag<'static>,
        charset: &Charset<'static>,
        keys: &[SearchKey<'static>],
    ) -> Option<Vec<Match>> {
        if search::check_charset(Some(charset)).is_err() {
            self.no_code(tag, Code::Atom("BADCHARSET (US-ASCII UTF-8)"), "Unsupported charset");
            return None;
        }
        match self.matching(keys, true).await {
            Ok(m) => Some(m),
            Err(s) => {
                self.failed(tag, &s);
                None
            }
        }
    }

    async fn search(
        &mut self,
        tag: &Tag<'static>,
        charset: Option<&imap_codec::imap_types::core::Charset<'static>>,
        criteria: &[SearchKey<'static>],
        by_uid: bool,
    ) -> Flow {
        // A SEARCH with SAVE that answers NO leaves `$` empty (RFC 5182 section 2.1).
        let save = self.extras.search.as_ref().is_some_and(|o| o.save);
        let update = self.extras.search.as_ref().is_some_and(|o| o.update);
        if update && self.context_tag_in_use(tag) {
            return self.bad(tag, "Tag reuse: a search kept up to date has this tag");
        }
        if search::check_charset(charset).is_err() {
            if save {
                self.save_result(Vec::new());
            }
            self.no_code(tag, Code::Atom("BADCHARSET (US-ASCII UTF-8)"), "Unsupported charset");
            return Flow::Continue;
        }
        let with_modseq = search::mentions_modseq(criteria);
        if with_modseq {
            self.enable_condstore();
        }
        let matches = match self.matching(criteria, false).await {
            Ok(m) => m,
            Err(s) => {
                if save {
                    self.save_result(Vec::new());
                }
                self.failed(tag, &s);
                return Flow::Continue;
            }
        };
        let hits: Vec<u32> = matches.iter().map(|m| if by_uid { m.meta.uid } else { m.index as u32 + 1 }).collect();
        if update {
            let uids = matches.iter().map(|m| m.meta.uid).collect();
            self.keep_context(tag, by_uid, criteria, None, uids);
        }
        let highest = matches.iter().map(|m| m.modseq).max().unwrap_or(0);
        let options = match self.extras.search.take() {
            Some(options) => Some(options),
            None if self.rev2 => Some(crate::extended::SearchReturn { all: true, ..Default::default() }),
            None => None,
        };
        if let Some(options) = options.as_ref().filter(|o| o.save) {
            // With MIN or MAX and neither ALL nor COUNT, `$` keeps only the messages returned
            // (RFC 5182 section 2.1); otherwise every match.
            let kept: Vec<u32> = if options.saves_every_match() {
                matches.iter().map(|m| m.meta.uid).collect()
            } else {
                let first = matches.first().filter(|_| options.min);
                let last = matches.last().filter(|_| options.max);
                let page = options.partial.as_ref().map(|p| p.select(&matches)).unwrap_or_default();
                first.into_iter().chain(last).chain(page).map(|m| m.meta.uid).collect()
            };
            self.save_result(kept);
        }
        let plain = options.is_none();
        if let Some(options) = options.filter(|o| o.returns_anything()) {
            // RFC 4731: MIN, MAX and ALL are left out when nothing matched; COUNT is not.
            self.send(Response::Esearch(Esearch {
                tag: tag.inner().to_string(),
                uid: by_uid,
                min: hits.iter().min().copied().filter(|_| options.min),
                max: hits.iter().max().copied().filter(|_| options.max),
                count: options.count.then_some(hits.len()),
                all: (options.all && !hits.is_empty()).then(|| hits.clone()),
                all_in_order: false,
                partial: options.partial.as_ref().map(|p| (p.text.clone(), p.select(&hits).to_vec())),
                modseq: (with_modseq && !hits.is_empty()).then_some(highest),
            }));
        } else if plain {
            let modseq = (with_modseq && !hits.is_empty()).then_some(highest);
            self.send(Response::Search { hits, modseq });
        }
        self.ok(tag, if by_uid { "UID SEARCH completed" } else { "SEARCH completed" });
        Flow::Continue
    }

    async fn copy(&mut self, tag: &Tag<'static>, set: &SequenceSet, dest: String, by_uid: bool, remove: bool) -> Flow {
        let what = match (by_uid, remove) {
            (false, false) => "COPY",
            (true, false) => "UID COPY",
            (false, true) => "MOVE",
            (true, true) => "UID MOVE",
        };
        let Some(sel) = self.selected.as_ref() else { return Flow::Continue };
        if remove && sel.read_only {
            self.no_code(tag, Code::ReadOnly, "Mailbox is read-only");
            return Flow::Continue;
        }
        let targets = match sel.targets(set, by_uid, self.extras.last_result) {
            Ok(t) => t,
            Err(why) => return self.bad(tag, why),
        };
        let uids: Vec<u32> = targets.iter().map(|(_, u)| *u).collect();
        if uids.is_empty() {
            self.ok(tag, format!("{what} completed (nothing to do)"));
            return Flow::Continue;
        }
        let (account_id, folder_id) = (self.account(), self.folder_id());
        let result = if remove {
            self.client
                .r#move(MoveRequest { account_id, folder_id, uids, destination: Some(FolderRef::name(dest)) })
                .await
                .map(|r| {
                    let r = r.into_inner();
                    (r.uidvalidity, r.source_uids, r.destination_uids, r.destination_folder_id)
                })
        } else {
            self.client
                .copy(CopyRequest { account_id, folder_id, uids, destination: Some(FolderRef::name(dest)) })
                .await
                .map(|r| {
                    let r = r.into_inner();
                    (r.uidvalidity, r.source_uids, r.destination_uids, r.destination_folder_id)
                })
        };
        match result {
            Ok((validity, src, dst, dest_id)) => {
                let code = Code::CopyUid { validity, source: src.clone(), destination: dst.clone() };
                if remove {
                    self.send(Response::ok(Some(code), "Moved"));
                    self.remove_messages(&src);
                    // A move within the selected folder: the moved messages' new UIDs too.
                    if let Some(last) = dst.iter().max() {
                        self.catch_up(dest_id, u64::MAX, *last).await;
                    }
                    self.ok(tag, format!("{what} completed"));
                } else {
                    // A copy into the selected folder itself: announce the copies first.
                    if let Some(last) = dst.iter().max() {
                        self.catch_up(dest_id, u64::MAX, *last).await;
                    }
                    self.ok_code(tag, code, format!("{what} completed"));
                }
            }
            Err(s) => self.failed_into(tag, &s),
        }
        Flow::Continue
    }

    async fn expunge(&mut self, tag: &Tag<'static>, set: Option<&SequenceSet>, what: &str) -> Flow {
        let Some(sel) = self.selected.as_ref() else { return Flow::Continue };
        if sel.read_only {
            self.no_code(tag, Code::ReadOnly, "Mailbox is read-only");
            return Flow::Continue;
        }
        let uids = match set {
            Some(set) => match sel.targets(set, true, self.extras.last_result) {
                Ok(t) => t.into_iter().map(|(_, u)| u).collect(),
                Err(why) => return self.bad(tag, why),
            },
            None => Vec::new(),
        };
        if set.is_some() && uids.is_empty() {
            self.ok(tag, format!("{what} completed"));
            return Flow::Continue;
        }
        let req = ExpungeRequest { account_id: self.account(), folder_id: self.folder_id(), uids, only_deleted: true };
        match self.client.expunge(req).await {
            Ok(r) => {
                let r = r.into_inner();
                self.sync_updates(false).await;
                self.remove_messages(&r.expunged);
                self.announce_expunges(true);
                self.ok(tag, format!("{what} completed"));
            }
            Err(s) => self.failed(tag, &s),
        }
        Flow::Continue
    }
}
