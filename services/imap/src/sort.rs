//! SORT and THREAD (RFC 5256, with SORT=DISPLAY from RFC 5957): orderings and thread trees
//! computed from what was stored at delivery (envelope, size, internal date, the References
//! header), never from message bodies. Pure functions, like [`crate::search`]: the session
//! chooses the messages with SEARCH's criteria and hands their metadata here.
//!
//! Choices where the RFCs leave room:
//! - Strings compare by Unicode lowercasing, an approximation of `i;unicode-casemap`.
//! - A Date header that cannot be parsed counts as the internal date, as RFC 5256 asks.
//! - An address key is the first address's local part (`addr-mailbox`); DISPLAYFROM and
//!   DISPLAYTO use the display name and fall back to the address (RFC 5957 section 3).
//! - Messages equal under every criterion stay in mailbox order (sequence number).

use std::{cmp::Ordering, collections::HashMap};

use imap_codec::imap_types::extensions::sort::{SortCriterion, SortKey};
use tern_proto::v1::{Address, Envelope};

/// One message as SORT and THREAD see it.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    /// What the answer names the message by: its sequence number or its UID.
    pub id: u32,
    /// Its position in the mailbox, which breaks ties.
    pub seq: u32,
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub internal_date: i64,
    pub envelope: Option<&'a Envelope>,
}

impl Item<'_> {
    /// The sent date (RFC 5256 section 2.2): the Date header in UTC, or the internal date when
    /// there is none that parses.
    fn sent(&self) -> i64 {
        self.envelope
            .and_then(|e| mail_parser::DateTime::parse_rfc822(&e.date))
            .filter(|d| d.is_valid())
            .map(|d| d.to_timestamp())
            .unwrap_or(self.internal_date)
    }

    fn subject(&self) -> String {
        base_subject(&self.decoded_subject()).0
    }

    fn decoded_subject(&self) -> String {
        self.envelope.map(|e| crate::search::decode_words(e.subject.as_bytes())).unwrap_or_default()
    }

    fn first(&self, pick: fn(&Envelope) -> &Vec<Address>) -> Option<&Address> {
        self.envelope.and_then(|e| pick(e).iter().find(|a| !a.mailbox.is_empty() || !a.host.is_empty()))
    }

    fn mailbox_of(&self, pick: fn(&Envelope) -> &Vec<Address>) -> String {
        self.first(pick).map(|a| a.mailbox.to_lowercase()).unwrap_or_default()
    }

    fn display_of(&self, pick: fn(&Envelope) -> &Vec<Address>) -> String {
        let Some(a) = self.first(pick) else { return String::new() };
        let name = crate::search::decode_words(a.name.as_bytes());
        let name = name.trim();
        if name.is_empty() { format!("{}@{}", a.mailbox, a.host).to_lowercase() } else { name.to_lowercase() }
    }
}

/// A sort key's value for one message.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Value {
    Number(i64),
    Text(String),
}

fn value(item: &Item<'_>, key: &SortKey) -> Value {
    match key {
        SortKey::Arrival => Value::Number(item.internal_date),
        SortKey::Date => Value::Number(item.sent()),
        SortKey::Size => Value::Number(item.size.min(i64::MAX as u64) as i64),
        SortKey::Subject => Value::Text(item.subject().to_lowercase()),
        SortKey::From => Value::Text(item.mailbox_of(|e| &e.from)),
        SortKey::To => Value::Text(item.mailbox_of(|e| &e.to)),
        SortKey::Cc => Value::Text(item.mailbox_of(|e| &e.cc)),
        SortKey::DisplayFrom => Value::Text(item.display_of(|e| &e.from)),
        SortKey::DisplayTo => Value::Text(item.display_of(|e| &e.to)),
    }
}

/// The ids of `items` in the order `criteria` give (RFC 5256 section 3, SORT).
pub fn sort(items: &[Item<'_>], criteria: &[SortCriterion]) -> Vec<u32> {
    // Each key is computed once per message, not once per comparison.
    let mut keyed: Vec<(Vec<Value>, &Item<'_>)> =
        items.iter().map(|i| (criteria.iter().map(|c| value(i, &c.key)).collect(), i)).collect();
    keyed.sort_by(|(a, ia), (b, ib)| {
        for (n, c) in criteria.iter().enumerate() {
            let o = a[n].cmp(&b[n]);
            let o = if c.reverse { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        ia.seq.cmp(&ib.seq)
    });
    keyed.into_iter().map(|(_, i)| i.id).collect()
}

/// The base subject of a decoded subject (RFC 5256 section 2.1), and whether leaders such as
/// "Re:" or "Fwd:" or a "(fwd)" trailer were removed, which makes the message a reply or a
/// forward for THREAD=REFERENCES.
pub fn base_subject(subject: &str) -> (String, bool) {
    // (1) Runs of whitespace become one space.
    let mut s = subject.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut reply = false;
    loop {
        let before = s.clone();
        // (2) Trailers: "(fwd)" and whitespace at the end.
        loop {
            let trimmed = s.trim_end();
            let lower = trimmed.to_ascii_lowercase();
            if lower.ends_with("(fwd)") {
                s = trimmed[..trimmed.len() - 5].to_string();
                reply = true;
            } else {
                s = trimmed.to_string();
                break;
            }
        }
        // (3) Leaders: "re:", "fw:", "fwd:" with optional [blob]s, and a leading [blob]
        // when something is left after it.
        loop {
            let t = s.trim_start();
            if let Some(rest) = strip_refwd(t) {
                s = rest.to_string();
                reply = true;
                continue;
            }
            if let Some(rest) = strip_blob(t)
                && !rest.trim().is_empty()
            {
                s = rest.to_string();
                continue;
            }
            s = t.to_string();
            break;
        }
        // (5) A "[fwd: ...]" wrapper.
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("[fwd:") && s.ends_with(']') {
            s = s[5..s.len() - 1].trim().to_string();
            reply = true;
        }
        if s == before {
            return (s, reply);
        }
    }
}

/// `subj-refwd`: ("re" / ("fw" ["d"])) *WSP *subj-blob ":".
fn strip_refwd(s: &str) -> Option<&str> {
    let lower = s.to_ascii_lowercase();
    let after = if lower.starts_with("re") {
        &s[2..]
    } else if lower.starts_with("fwd") {
        &s[3..]
    } else if lower.starts_with("fw") {
        &s[2..]
    } else {
        return None;
    };
    let mut rest = after.trim_start();
    while let Some(r) = strip_blob(rest) {
        rest = r;
    }
    rest.strip_prefix(':')
}

/// `subj-blob`: "[" *BLOBCHAR "]" *WSP, where a BLOBCHAR is anything but "[" and "]".
fn strip_blob(s: &str) -> Option<&str> {
    let inner = s.strip_prefix('[')?;
    let end = inner.find([']', '['])?;
    if inner.as_bytes()[end] != b']' {
        return None;
    }
    Some(inner[end + 1..].trim_start())
}

/// One node of a thread tree: a message, or a placeholder for one that is referred to but not
/// in the set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    pub id: Option<u32>,
    pub children: Vec<Node>,
}

/// THREAD=ORDEREDSUBJECT (RFC 5256 section 3): messages with the same base subject form one
/// thread, the earliest its root and the others its children in sent-date order; threads are
/// in the order of their roots' sent dates.
pub fn ordered_subject(items: &[Item<'_>]) -> Vec<Node> {
    let mut sorted: Vec<(String, i64, &Item<'_>)> =
        items.iter().map(|i| (i.subject().to_lowercase(), i.sent(), i)).collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.seq.cmp(&b.2.seq)));
    let mut threads: Vec<(i64, u32, Node)> = Vec::new();
    let mut current: Option<&str> = None;
    for (subject, sent, item) in &sorted {
        match (current, threads.last_mut()) {
            (Some(c), Some((_, _, root))) if c == subject => {
                root.children.push(Node { id: Some(item.id), children: Vec::new() });
            }
            _ => {
                threads.push((*sent, item.seq, Node { id: Some(item.id), children: Vec::new() }));
                current = Some(subject);
            }
        }
    }
    threads.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    threads.into_iter().map(|(_, _, n)| n).collect()
}

/// The message ids (`<...>`) in a header value, in order.
fn msg_ids(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find('<') {
        let Some(len) = rest[start..].find('>') else { break };
        let id: String = rest[start + 1..start + len].chars().filter(|c| !c.is_whitespace()).collect();
        if !id.is_empty() {
            out.push(id);
        }
        rest = &rest[start + len + 1..];
    }
    out
}

/// The working tree of THREAD=REFERENCES: containers by index.
#[derive(Debug, Default)]
struct Container {
    item: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

struct Forest {
    nodes: Vec<Container>,
}

impl Forest {
    /// Whether `a` is `b` or one of its ancestors.
    fn is_ancestor(&self, a: usize, b: usize) -> bool {
        let mut at = Some(b);
        while let Some(n) = at {
            if n == a {
                return true;
            }
            at = self.nodes[n].parent;
        }
        false
    }

    fn unlink(&mut self, child: usize) {
        if let Some(p) = self.nodes[child].parent.take() {
            self.nodes[p].children.retain(|c| *c != child);
        }
    }

    fn link(&mut self, parent: usize, child: usize) {
        self.unlink(child);
        self.nodes[child].parent = Some(parent);
        self.nodes[parent].children.push(child);
    }
}

/// How [`references`] finishes its threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threading {
    /// THREAD=REFERENCES: threads whose roots share a base subject are merged, and threads are
    /// ordered by their first messages' sent dates.
    References,
    /// THREAD=REFS, as Dovecot defines it: no merging by subject, and threads are ordered by
    /// their newest messages, so the thread with the latest activity comes last.
    Refs,
}

/// THREAD=REFERENCES (RFC 5256 section 3) and THREAD=REFS: threads from Message-ID,
/// In-Reply-To and References; children by sent date.
pub fn references(items: &[Item<'_>], how: Threading) -> Vec<Node> {
    let mut forest = Forest { nodes: Vec::new() };
    let mut by_id: HashMap<String, usize> = HashMap::new();
    fn container(forest: &mut Forest, by_id: &mut HashMap<String, usize>, id: &str) -> usize {
        *by_id.entry(id.to_string()).or_insert_with(|| {
            forest.nodes.push(Container::default());
            forest.nodes.len() - 1
        })
    }
    // (1) Containers for every message and everything it refers to.
    for (i, item) in items.iter().enumerate() {
        let env = item.envelope;
        let own = env.and_then(|e| msg_ids(&e.message_id).into_iter().next());
        // A message without a Message-ID, or with one already taken, gets a unique one.
        let me = match own {
            Some(id) if by_id.get(&id).is_none_or(|c| forest.nodes[*c].item.is_none()) => {
                container(&mut forest, &mut by_id, &id)
            }
            _ => {
                forest.nodes.push(Container::default());
                forest.nodes.len() - 1
            }
        };
        forest.nodes[me].item = Some(i);
        let mut refs = msg_ids(env.map(|e| e.references.as_str()).unwrap_or_default());
        if refs.is_empty()
            && let Some(first) = env.and_then(|e| msg_ids(&e.in_reply_to).into_iter().next())
        {
            refs.push(first);
        }
        // (1B) Each reference is the parent of the next, unless that makes a loop or the
        // child already has a parent.
        let mut prev: Option<usize> = None;
        for r in &refs {
            let c = container(&mut forest, &mut by_id, r);
            if let Some(p) = prev
                && forest.nodes[c].parent.is_none()
                && !forest.is_ancestor(c, p)
            {
                forest.link(p, c);
            }
            prev = Some(c);
        }
        // (1C) The last reference is the message's parent, replacing any other.
        match prev {
            Some(p) if !forest.is_ancestor(me, p) => forest.link(p, me),
            _ => forest.unlink(me),
        }
    }
    // (2) The root set.
    let roots: Vec<usize> = (0..forest.nodes.len()).filter(|n| forest.nodes[*n].parent.is_none()).collect();
    // (3) Prune placeholders and turn the arena into trees.
    let mut trees: Vec<Node> = Vec::new();
    for r in roots {
        trees.extend(prune(&forest, r, true));
    }
    // Until the end, a node's id is its message's index in `items`.
    let dates: Vec<(i64, u32)> = items.iter().map(|i| (i.sent(), i.seq)).collect();
    let date = |n: &Node| first_date(n, &dates);
    // (5) Merge threads whose roots share a base subject.
    let subject_of = |n: &Node| -> Option<(String, bool)> {
        let index = n.id.or_else(|| n.children.first().and_then(|c| c.id))?;
        let (s, reply) = base_subject(&items.get(index as usize)?.decoded_subject());
        (!s.is_empty()).then(|| (s.to_lowercase(), reply))
    };
    let mut table: HashMap<String, usize> = HashMap::new();
    for (i, t) in trees.iter().enumerate().filter(|_| how == Threading::References) {
        let Some((s, reply)) = subject_of(t) else { continue };
        match table.get(&s) {
            None => {
                table.insert(s, i);
            }
            Some(&old) => {
                let o = &trees[old];
                let o_reply = subject_of(o).is_some_and(|(_, r)| r);
                if (t.id.is_none() && o.id.is_some()) || (o.id.is_some() && t.id.is_some() && o_reply && !reply) {
                    table.insert(s, i);
                }
            }
        }
    }
    let mut merged: Vec<Option<Node>> = trees.into_iter().map(Some).collect();
    for i in 0..merged.len() {
        let Some(t) = merged[i].as_ref() else { continue };
        let Some((s, reply)) = subject_of(t) else { continue };
        let Some(&target) = table.get(&s) else { continue };
        if target == i || merged[target].is_none() {
            continue;
        }
        let this = merged[i].take().expect("checked above");
        let into = merged[target].take().expect("checked above");
        let into_reply = subject_of(&into).is_some_and(|(_, r)| r);
        let combined = match (into.id.is_none(), this.id.is_none()) {
            (true, true) => Node { id: None, children: into.children.into_iter().chain(this.children).collect() },
            (true, false) => {
                let mut into = into;
                into.children.push(this);
                into
            }
            (false, _) if !into_reply && reply && this.id.is_some() => {
                let mut into = into;
                into.children.push(this);
                into
            }
            _ => Node { id: None, children: vec![into, this] },
        };
        merged[target] = Some(combined);
    }
    let mut out: Vec<Node> = merged.into_iter().flatten().collect();
    // (4, 6) Order by sent date, throughout.
    for t in &mut out {
        sort_children(t, &date);
    }
    match how {
        Threading::References => out.sort_by_key(|t| date(t)),
        Threading::Refs => out.sort_by_key(|t| last_date(t, &dates)),
    }
    with_ids(out, items)
}

/// The arena node `n` as trees: itself, or, for a placeholder that is not kept, its children
/// promoted to its level (RFC 5256 section 3 step 3).
fn prune(forest: &Forest, n: usize, at_root: bool) -> Vec<Node> {
    let c = &forest.nodes[n];
    let children: Vec<Node> = c.children.iter().flat_map(|k| prune(forest, *k, false)).collect();
    match c.item {
        Some(_) => vec![Node { id: c.item.map(|i| i as u32), children }],
        None if children.is_empty() => Vec::new(),
        // A placeholder stays only at the root and only over two or more children.
        None if at_root && children.len() > 1 => vec![Node { id: None, children }],
        None => children,
    }
}

/// The sent date (and mailbox position) a tree sorts by: its message's, or its earliest
/// child's for a placeholder.
fn first_date(n: &Node, dates: &[(i64, u32)]) -> (i64, u32) {
    match n.id {
        Some(index) => dates.get(index as usize).copied().unwrap_or_default(),
        None => n.children.iter().map(|c| first_date(c, dates)).min().unwrap_or_default(),
    }
}

/// The newest sent date (and mailbox position) in a tree.
fn last_date(n: &Node, dates: &[(i64, u32)]) -> (i64, u32) {
    let own = n.id.and_then(|i| dates.get(i as usize).copied()).unwrap_or_default();
    n.children.iter().map(|c| last_date(c, dates)).fold(own, std::cmp::max)
}

fn sort_children(n: &mut Node, date: &impl Fn(&Node) -> (i64, u32)) {
    for c in &mut n.children {
        sort_children(c, date);
    }
    n.children.sort_by_key(|c| date(c));
}

/// Replaces the item indexes in the nodes with the items' ids.
fn with_ids(nodes: Vec<Node>, items: &[Item<'_>]) -> Vec<Node> {
    nodes
        .into_iter()
        .map(|n| Node {
            id: n.id.and_then(|i| items.get(i as usize)).map(|i| i.id),
            children: with_ids(n.children, items),
        })
        .collect()
}

/// The THREAD response's data (RFC 5256 section 4): `(1 2 (3)(4))(5)`.
pub fn render(threads: &[Node]) -> String {
    let mut out = String::new();
    for t in threads {
        out.push('(');
        members(t, &mut out);
        out.push(')');
    }
    out
}

fn members(n: &Node, out: &mut String) {
    if let Some(id) = n.id {
        out.push_str(&id.to_string());
    }
    match n.children.as_slice() {
        [] => {}
        [only] => {
            if n.id.is_some() {
                out.push(' ');
            }
            members(only, out);
        }
        many => {
            if n.id.is_some() {
                out.push(' ');
            }
            for c in many {
                out.push('(');
                members(c, out);
                out.push(')');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::imap_types::extensions::sort::SortCriterion;

    fn env(subject: &str, date: &str, from: (&str, &str), message_id: &str, in_reply_to: &str) -> Envelope {
        let (name, mailbox) = from;
        Envelope {
            subject: subject.into(),
            date: date.into(),
            from: vec![Address {
                name: name.into(),
                adl: String::new(),
                mailbox: mailbox.into(),
                host: "ex.com".into(),
            }],
            message_id: message_id.into(),
            in_reply_to: in_reply_to.into(),
            ..Default::default()
        }
    }

    fn items(envs: &[Envelope]) -> Vec<Item<'_>> {
        envs.iter()
            .enumerate()
            .map(|(i, e)| Item {
                id: i as u32 + 1,
                seq: i as u32 + 1,
                size: 100 * (envs.len() - i) as u64,
                internal_date: 1_000 + i as i64,
                envelope: Some(e),
            })
            .collect()
    }

    fn by(key: SortKey, reverse: bool) -> SortCriterion {
        SortCriterion { reverse, key }
    }

    #[test]
    fn base_subjects() {
        for (raw, base, reply) in [
            ("Hello", "Hello", false),
            ("Re: Hello", "Hello", true),
            ("RE: re: Fwd: Hello", "Hello", true),
            ("Re[2]: Hello", "Hello", true),
            ("[list] Re: Hello", "Hello", true),
            ("[list] Hello  (fwd)", "Hello", true),
            ("[Fwd: Re: Hello]", "Hello", true),
            ("  Hello   world  ", "Hello world", false),
            ("[only a blob]", "[only a blob]", false),
            ("Re:", "", true),
            ("Reply to all", "Reply to all", false),
        ] {
            assert_eq!(base_subject(raw), (base.to_string(), reply), "{raw:?}");
        }
    }

    #[test]
    fn sorts_by_each_key_with_ties_in_mailbox_order() {
        let envs = [
            env("Re: beta", "Mon, 1 Jan 2024 10:00:00 +0000", ("Zed", "zed"), "<a@x>", ""),
            env("alpha", "Mon, 1 Jan 2024 09:00:00 +0000", ("", "amy"), "<b@x>", ""),
            env("Beta", "not a date", ("bob", "bob"), "<c@x>", ""),
        ];
        let it = items(&envs);
        assert_eq!(sort(&it, &[by(SortKey::Subject, false)]), [2, 1, 3]);
        assert_eq!(sort(&it, &[by(SortKey::Subject, true)]), [1, 3, 2]);
        // The unparseable date counts as the internal date (1002, in 1970): first.
        assert_eq!(sort(&it, &[by(SortKey::Date, false)]), [3, 2, 1]);
        assert_eq!(sort(&it, &[by(SortKey::Arrival, true)]), [3, 2, 1]);
        assert_eq!(sort(&it, &[by(SortKey::Size, false)]), [3, 2, 1]);
        assert_eq!(sort(&it, &[by(SortKey::From, false)]), [2, 3, 1]);
        // DISPLAYFROM: "amy@ex.com" (no name), "bob", "Zed".
        assert_eq!(sort(&it, &[by(SortKey::DisplayFrom, false)]), [2, 3, 1]);
        assert_eq!(sort(&it, &[by(SortKey::To, false)]), [1, 2, 3]);
        assert_eq!(sort(&it, &[by(SortKey::Subject, false), by(SortKey::Arrival, true)]), [2, 3, 1]);
    }

    #[test]
    fn renders_thread_lists() {
        let leaf = |id| Node { id: Some(id), children: vec![] };
        let chain = Node { id: Some(1), children: vec![Node { id: Some(2), children: vec![leaf(3)] }] };
        let fork = Node { id: Some(4), children: vec![leaf(5), Node { id: Some(6), children: vec![leaf(7)] }] };
        let dummy = Node { id: None, children: vec![leaf(8), leaf(9)] };
        assert_eq!(render(&[chain, fork, dummy, leaf(10)]), "(1 2 3)(4 (5)(6 7))((8)(9))(10)");
    }

    #[test]
    fn ordered_subject_groups_by_base_subject() {
        let envs = [
            env("Re: lunch", "Tue, 2 Jan 2024 10:00:00 +0000", ("", "a"), "", ""),
            env("lunch", "Mon, 1 Jan 2024 10:00:00 +0000", ("", "b"), "", ""),
            env("other", "Mon, 1 Jan 2024 09:00:00 +0000", ("", "c"), "", ""),
            env("Fwd: lunch", "Wed, 3 Jan 2024 10:00:00 +0000", ("", "d"), "", ""),
        ];
        assert_eq!(render(&ordered_subject(&items(&envs))), "(3)(2 (1)(4))");
    }

    #[test]
    fn references_build_trees_and_merge_by_subject() {
        let envs = [
            env("lunch", "Mon, 1 Jan 2024 10:00:00 +0000", ("", "a"), "<1@x>", ""),
            env("Re: lunch", "Mon, 1 Jan 2024 11:00:00 +0000", ("", "b"), "<2@x>", "<1@x>"),
            env("Re: lunch", "Mon, 1 Jan 2024 12:00:00 +0000", ("", "c"), "<3@x>", "<1@x>"),
            // Replies to a message that is not here: a placeholder over two children.
            env("Re: gone", "Mon, 1 Jan 2024 08:00:00 +0000", ("", "d"), "<4@x>", "<missing@x>"),
            env("Re: gone", "Mon, 1 Jan 2024 08:30:00 +0000", ("", "e"), "<5@x>", "<missing@x>"),
            // No references, but the same base subject as the first thread: merged under it.
            env("Re: lunch", "Tue, 2 Jan 2024 10:00:00 +0000", ("", "f"), "<6@x>", ""),
            env("alone", "Sun, 31 Dec 2023 10:00:00 +0000", ("", "g"), "<7@x>", ""),
        ];
        let it = items(&envs);
        let threads = references(&it, Threading::References);
        assert_eq!(render(&threads), "(7)((4)(5))(1 (2)(3)(6))");
        // REFS: no merging by subject, and the thread with the newest message last.
        let threads = references(&it, Threading::Refs);
        assert_eq!(render(&threads), "(7)((4)(5))(1 (2)(3))(6)");
    }

    #[test]
    fn references_header_orders_the_chain_and_survives_loops() {
        let envs = [
            env("a", "Mon, 1 Jan 2024 10:00:00 +0000", ("", "a"), "<1@x>", ""),
            env("b", "Mon, 1 Jan 2024 11:00:00 +0000", ("", "b"), "<2@x>", ""),
            env("c", "Mon, 1 Jan 2024 12:00:00 +0000", ("", "c"), "<3@x>", ""),
            // Claims to be the parent of its own ancestor: the loop is not made.
            env("d", "Mon, 1 Jan 2024 13:00:00 +0000", ("", "d"), "<1@x>", ""),
        ];
        let mut envs = envs;
        envs[1].references = "<1@x>".into();
        envs[2].references = "<1@x>\r\n <2@x>".into();
        let it = items(&envs);
        let threads = references(&it, Threading::References);
        // The fourth message's Message-ID is taken, so it stands alone.
        assert_eq!(render(&threads), "(1 2 3)(4)");
    }
}
