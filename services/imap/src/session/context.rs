//! CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267 section 4): a SEARCH or SORT with RETURN (UPDATE)
//! stays open while its mailbox is selected, and the client is told how its result changes,
//! with ADDTO and REMOVEFROM in ESEARCH responses carrying the command's tag; CANCELUPDATE
//! ends one.
//!
//! The search is evaluated again, as the command did it, whenever the view changed (a new
//! message, a flag change or an expunge, of this session or another): messages that left the
//! result are removed first, then those that joined are added, so that a sort result stays in
//! its order (a sort key never depends on flags, so the messages that stay keep their places).
//! A message expunged while the view is told of it leaves the result before its EXPUNGE is
//! sent, as section 4.3.4 asks; a new one joins after its EXISTS.

use imap_codec::imap_types::{core::Tag, extensions::sort::SortCriterion, search::SearchKey};

use super::{
    Flow, Session,
    response::{Code, Kind, Response},
    view::SearchContext,
};

/// The most searches one session keeps up to date; one more is answered without updates and an
/// untagged NO [NOUPDATE] (RFC 5267 section 4.3.1 asks for at least one).
pub(crate) const MAX_CONTEXTS: usize = 8;

impl Session {
    /// Whether a search with UPDATE may use `tag`: not while another kept search has it
    /// (section 4.3: the updates are told apart by tag).
    pub(crate) fn context_tag_in_use(&self, tag: &Tag<'_>) -> bool {
        self.selected.as_ref().is_some_and(|s| s.contexts.iter().any(|c| c.tag == tag.inner()))
    }

    /// Keeps a search up to date from now on: `result` is what the command answered, as UIDs
    /// in result order.
    pub(crate) fn keep_context(
        &mut self,
        tag: &Tag<'_>,
        uid: bool,
        criteria: &[SearchKey<'static>],
        sort: Option<&[SortCriterion]>,
        result: Vec<u32>,
    ) {
        let Some(sel) = self.selected.as_mut() else { return };
        if sel.contexts.len() >= MAX_CONTEXTS {
            let text = format!("{MAX_CONTEXTS} searches are kept up to date already; this one will not be");
            let code = Code::NoUpdate(tag.inner().to_string());
            self.send(Response::Status { kind: Kind::No, code: Some(code), text: text.into() });
            return;
        }
        let mark = mark(sel);
        sel.contexts.push(SearchContext {
            tag: tag.inner().to_string(),
            uid,
            criteria: criteria.to_vec(),
            sort: sort.map(<[SortCriterion]>::to_vec),
            result,
            mark,
        });
    }

    /// CANCELUPDATE: the searches with these tags are no longer kept up to date.
    pub(crate) fn cancel_update(&mut self, tag: &Tag<'static>, tags: &[String]) -> Flow {
        let Some(sel) = self.selected.as_mut() else { return self.bad(tag, "CANCELUPDATE needs a selected mailbox") };
        sel.contexts.retain(|c| !tags.contains(&c.tag));
        self.ok(tag, "CANCELUPDATE completed");
        Flow::Continue
    }

    /// Before the view removes `uids` and tells the client (an EXPUNGE or VANISHED): each kept
    /// result that holds any of them says REMOVEFROM first, while their numbers are still valid.
    pub(crate) fn contexts_lose(&mut self, uids: &[u32]) {
        let Some(sel) = self.selected.as_mut() else { return };
        if sel.contexts.is_empty() || uids.is_empty() {
            return;
        }
        let mut out = Vec::new();
        for context in &mut sel.contexts {
            let changes = removals(context, |u| uids.contains(&u), &sel.uids);
            if !changes.is_empty() {
                out.push(Response::ContextUpdate { tag: context.tag.clone(), uid: context.uid, changes });
            }
        }
        self.send_all(out);
    }

    /// Evaluates each kept search again if the view changed, and tells the client how its
    /// result changed.
    pub(crate) async fn update_contexts(&mut self) {
        let Some(sel) = self.selected.as_mut() else { return };
        if sel.contexts.is_empty() {
            return;
        }
        let now = mark(sel);
        let mut contexts = std::mem::take(&mut sel.contexts);
        for context in contexts.iter_mut().filter(|c| c.mark != now) {
            let Ok(matches) = self.matching(&context.criteria, context.sort.is_some()).await else {
                // The mailbox service is unreachable: try again at the next change.
                continue;
            };
            let fresh: Vec<u32> = match &context.sort {
                None => matches.iter().map(|m| m.meta.uid).collect(),
                Some(criteria) => crate::sort::sort(&super::messages::sort_items(&matches, true), criteria),
            };
            let Some(sel) = self.selected.as_ref() else { return };
            let mut changes = removals(context, |u| !fresh.contains(&u), &sel.uids);
            changes.extend(additions(context, &fresh, &sel.uids));
            context.mark = now;
            if !changes.is_empty() {
                self.send(Response::ContextUpdate { tag: context.tag.clone(), uid: context.uid, changes });
            }
        }
        if let Some(sel) = self.selected.as_mut() {
            // A command may not select another mailbox in between (this runs between commands),
            // but a context cancelled meanwhile stays cancelled.
            sel.contexts = contexts;
        }
    }
}

/// The view's change mark (see [`SearchContext::mark`]).
fn mark(sel: &super::view::Selected) -> (usize, u64) {
    (sel.uids.len(), sel.modseqs.iter().copied().max().unwrap_or(0).max(sel.highest_modseq))
}

/// How a UID is named to the client: itself, or its message number in the view.
fn name(uid: bool, id: u32, view: &[u32]) -> Option<u32> {
    if uid { Some(id) } else { view.iter().position(|u| *u == id).map(|i| i as u32 + 1) }
}

/// Takes the messages that `gone` says out of `context`'s result: REMOVEFROM changes, at the
/// position each had (a SEARCH says 0, mailbox order being its order).
fn removals(context: &mut SearchContext, gone: impl Fn(u32) -> bool, view: &[u32]) -> Vec<(bool, u32, Vec<u32>)> {
    let mut changes = Vec::new();
    let mut i = 0;
    let mut unsorted = Vec::new();
    while i < context.result.len() {
        let id = context.result[i];
        if !gone(id) {
            i += 1;
            continue;
        }
        context.result.remove(i);
        let Some(named) = name(context.uid, id, view) else { continue };
        if context.sort.is_none() {
            unsorted.push(named);
        } else {
            changes.push((false, i as u32 + 1, vec![named]));
        }
    }
    if !unsorted.is_empty() {
        changes.push((false, 0, unsorted));
    }
    changes
}

/// Puts the messages of `fresh` (the new result, in result order) that `context`'s result
/// lacks into it: ADDTO changes, at their positions for a SORT and at 0 for a SEARCH.
fn additions(context: &mut SearchContext, fresh: &[u32], view: &[u32]) -> Vec<(bool, u32, Vec<u32>)> {
    let mut changes = Vec::new();
    let mut unsorted = Vec::new();
    for (position, id) in fresh.iter().enumerate() {
        if context.result.contains(id) {
            continue;
        }
        let Some(named) = name(context.uid, *id, view) else { continue };
        if context.sort.is_none() {
            unsorted.push(named);
            let at = context.result.partition_point(|u| u < id);
            context.result.insert(at, *id);
        } else {
            // Added in increasing position order, each lands where the new order has it.
            context.result.insert(position.min(context.result.len()), *id);
            changes.push((true, position as u32 + 1, vec![named]));
        }
    }
    if !unsorted.is_empty() {
        changes.push((true, 0, unsorted));
    }
    changes
}
