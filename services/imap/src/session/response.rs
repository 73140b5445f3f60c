//! Every response the session sends, as a value, and the one place that turns them into bytes.
//!
//! The session and its view of the selected folder describe what to say with [`Response`] and
//! [`Tagged`]; only [`Response::encode`] and [`Tagged::encode`] know the syntax. Responses that
//! imap-codec can express (EXISTS, RECENT, EXPUNGE, VANISHED, FLAGS, FETCH, SEARCH, and status
//! responses with the codes it knows) are encoded by it; the extensions it lacks (ESEARCH and
//! ESORT, LIST-EXTENDED's CHILDINFO, STATUS with MAILBOXID, OBJECTID and PREVIEW items, QUOTA
//! with our root) are written here by hand. Text that came from elsewhere (an error message of
//! the mailbox service, a mailbox name) never breaks a line: CR and LF in a hand-written line
//! are replaced, as the codec's own types refuse them.

use std::{borrow::Cow, num::NonZeroU32, num::NonZeroU64};

use imap_codec::{
    ResponseCodec,
    encode::Encoder,
    imap_types::{
        IntoStatic,
        core::{Tag, Text, Vec1},
        fetch::MessageDataItem,
        flag::{Flag, FlagPerm},
        response::{self as codec, Data, StatusBody, StatusKind},
        sequence::{SeqOrUid, Sequence, SequenceSet},
    },
};

/// The system flags every FLAGS and PERMANENTFLAGS response names before the keywords.
const SYSTEM_FLAGS: [&str; 5] = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"];

/// The kind of a status response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Ok,
    No,
    Bad,
    Bye,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Ok => "OK",
            Kind::No => "NO",
            Kind::Bad => "BAD",
            Kind::Bye => "BYE",
        }
    }
}

/// A response code, the bracketed part of a status response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Code {
    UidValidity(u32),
    UidNext(u32),
    Unseen(u32),
    HighestModSeq(u64),
    /// PERMANENTFLAGS: the system flags, these keywords and `\*`; or nothing, read-only.
    PermanentFlags(Option<Vec<String>>),
    /// OBJECTID's MAILBOXID (RFC 8474).
    MailboxId(u64),
    Closed,
    Capability(Vec<String>),
    CopyUid {
        validity: u32,
        source: Vec<u32>,
        destination: Vec<u32>,
    },
    /// UIDPLUS's APPENDUID: the UIDs of the messages appended, several after MULTIAPPEND.
    AppendUid {
        validity: u32,
        uids: Vec<u32>,
    },
    /// CATENATE's BADURL (RFC 4469 section 6): the URL that could not be used.
    BadUrl(String),
    /// METADATA's codes (RFC 5464 section 4): `LONGENTRIES n`, `MAXSIZE n`, `TOOMANY`.
    Metadata(String),
    /// CONTEXT's NOUPDATE (RFC 5267 section 4.3.1): the tag of the search not kept up to date.
    NoUpdate(String),
    /// CONDSTORE's MODIFIED: message numbers or UIDs, as the command named them.
    Modified(Vec<u32>),
    TryCreate,
    ReadOnly,
    ReadWrite,
    TooBig,
    CompressionActive,
    /// A code named by the mailbox service's error reason (`NONEXISTENT`, `OVERQUOTA`, ...).
    Atom(&'static str),
}

impl Code {
    /// The code as imap-codec knows it, when it does.
    fn to_codec(&self) -> Option<codec::Code<'static>> {
        Some(match self {
            Code::UidValidity(v) => codec::Code::UidValidity(NonZeroU32::new(*v)?),
            Code::UidNext(v) => codec::Code::UidNext(NonZeroU32::new(*v)?),
            Code::Unseen(v) => codec::Code::Unseen(NonZeroU32::new(*v)?),
            Code::HighestModSeq(v) => codec::Code::HighestModSeq(NonZeroU64::new(*v)?),
            Code::PermanentFlags(None) => codec::Code::PermanentFlags(Vec::new()),
            Code::PermanentFlags(Some(keywords)) => {
                let mut flags: Vec<FlagPerm<'static>> = flags(keywords).into_iter().map(FlagPerm::Flag).collect();
                flags.push(FlagPerm::Asterisk);
                codec::Code::PermanentFlags(flags)
            }
            Code::Closed => codec::Code::Closed,
            Code::TryCreate => codec::Code::TryCreate,
            Code::ReadOnly => codec::Code::ReadOnly,
            Code::ReadWrite => codec::Code::ReadWrite,
            Code::TooBig => codec::Code::TooBig,
            Code::CompressionActive => codec::Code::CompressionActive,
            _ => return None,
        })
    }

    /// The code as written by hand, without its brackets.
    fn write(&self, out: &mut String) {
        match self {
            Code::UidValidity(v) => out.push_str(&format!("UIDVALIDITY {v}")),
            Code::UidNext(v) => out.push_str(&format!("UIDNEXT {v}")),
            Code::Unseen(v) => out.push_str(&format!("UNSEEN {v}")),
            Code::HighestModSeq(v) => out.push_str(&format!("HIGHESTMODSEQ {v}")),
            Code::PermanentFlags(None) => out.push_str("PERMANENTFLAGS ()"),
            Code::PermanentFlags(Some(keywords)) => {
                out.push_str(&format!("PERMANENTFLAGS ({} \\*)", flag_names(keywords).join(" ")));
            }
            Code::MailboxId(id) => out.push_str(&format!("MAILBOXID ({})", mailbox_id(*id))),
            Code::Closed => out.push_str("CLOSED"),
            Code::Capability(caps) => out.push_str(&format!("CAPABILITY {}", caps.join(" "))),
            Code::CopyUid { validity, source, destination } => {
                out.push_str(&format!("COPYUID {validity} {} {}", uid_set(source), uid_set(destination)));
            }
            Code::AppendUid { validity, uids } => out.push_str(&format!("APPENDUID {validity} {}", uid_set(uids))),
            Code::BadUrl(url) => out.push_str(&format!("BADURL {url}")),
            Code::Metadata(what) => out.push_str(&format!("METADATA {what}")),
            Code::NoUpdate(tag) => out.push_str(&format!("NOUPDATE {}", astring(tag))),
            Code::Modified(set) => out.push_str(&format!("MODIFIED {}", uid_set(set))),
            Code::TryCreate => out.push_str("TRYCREATE"),
            Code::ReadOnly => out.push_str("READ-ONLY"),
            Code::ReadWrite => out.push_str("READ-WRITE"),
            Code::TooBig => out.push_str("TOOBIG"),
            Code::CompressionActive => out.push_str("COMPRESSIONACTIVE"),
            Code::Atom(a) => out.push_str(a),
        }
    }
}

/// A STATUS item (RFC 9051 section 7.2.4, with STATUS=SIZE and OBJECTID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StatusItem {
    /// A named number: `MESSAGES 3`.
    Number(&'static str, u64),
    MailboxId(u64),
}

/// An item of a FETCH response that imap-codec does not know yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FetchExtra {
    EmailId(String),
    /// Tern keeps no thread ids, so THREADID is NIL (RFC 8474 section 5.2).
    ThreadIdNil,
    /// PREVIEW (RFC 8970): the text, or NIL; `utf8` when the client accepts 8-bit quoted text.
    Preview {
        text: Option<String>,
        utf8: bool,
    },
    /// SAVEDATE (RFC 8514), in seconds since the Unix epoch; zero (unknown) is NIL.
    SaveDate(i64),
}

/// ESEARCH's answer to SEARCH RETURN or SORT RETURN (RFC 4731, RFC 5267).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Esearch {
    pub tag: String,
    pub uid: bool,
    pub min: Option<u32>,
    pub max: Option<u32>,
    pub count: Option<usize>,
    /// ALL: the numbers, compacted into ranges.
    pub all: Option<Vec<u32>>,
    /// ALL keeps the order of the numbers (ESORT) instead of sorting them.
    pub all_in_order: bool,
    /// PARTIAL (RFC 9394 section 3.1): the range as the client wrote it and the numbers in it,
    /// NIL when there are none; kept in order like ALL.
    pub partial: Option<(String, Vec<u32>)>,
    pub modseq: Option<u64>,
}

/// An untagged response (or a continuation request).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Response {
    Exists(u32),
    Recent(u32),
    /// EXPUNGE of a message number.
    Expunge(u32),
    /// VANISHED of UIDs (QRESYNC), EARLIER when it reports the past.
    Vanished {
        earlier: bool,
        uids: Vec<u32>,
    },
    /// FLAGS: the system flags and these keywords.
    Flags(Vec<String>),
    /// A FETCH of a message's flag state: each item that is there.
    FetchFlags {
        seq: u32,
        uid: Option<u32>,
        flags: Option<Vec<String>>,
        modseq: Option<u64>,
    },
    /// A FETCH built by `crate::fetch`, with the items imap-codec does not know after its own.
    Fetch {
        seq: NonZeroU32,
        items: Vec<MessageDataItem<'static>>,
        extras: Vec<FetchExtra>,
    },
    Status {
        kind: Kind,
        code: Option<Code>,
        text: Cow<'static, str>,
    },
    Capability(Vec<String>),
    Enabled(Vec<&'static str>),
    Id,
    Namespace,
    /// SEARCH, with the highest MODSEQ of the matches when the criteria named MODSEQ.
    Search {
        hits: Vec<u32>,
        modseq: Option<u64>,
    },
    Esearch(Esearch),
    Sort(Vec<u32>),
    /// THREAD, its threads already in their parenthesised form.
    Thread(String),
    /// STATUS of a mailbox, named as the client expects it.
    MailboxStatus {
        name: String,
        items: Vec<StatusItem>,
    },
    /// LIST or LSUB of a name, with a CHILDINFO extended item when `child_info` says why.
    List {
        lsub: bool,
        attributes: Vec<&'static str>,
        name: String,
        child_info: Option<&'static str>,
    },
    /// QUOTA of the one root: used and limit, in KiB, or no limit.
    Quota(Option<(u64, u64)>),
    QuotaRoot(String),
    /// METADATA of a mailbox (or of the server, named ""): entries and their values, NIL for
    /// one that is not there.
    Metadata {
        mailbox: String,
        entries: Vec<(String, Option<Vec<u8>>)>,
    },
    /// Changes to a kept search result (RFC 5267 section 4.3): in order, REMOVEFROM (false) or
    /// ADDTO (true) of the numbers or UIDs, at a position of the result (0: mailbox order).
    ContextUpdate {
        tag: String,
        uid: bool,
        changes: Vec<(bool, u32, Vec<u32>)>,
    },
    /// NOTIFY's LIST of a mailbox created, deleted (`\NonExistent`), renamed (with OLDNAME) or
    /// subscribed (RFC 5465 section 5.4).
    ListNotify {
        attributes: Vec<&'static str>,
        name: String,
        old: Option<String>,
    },
    /// GENURLAUTH's authorized URLs (RFC 4467 section 7).
    GenUrlAuth(Vec<String>),
    /// URLFETCH's URLs, each with what it names or NIL.
    UrlFetch(Vec<(String, Option<Vec<u8>>)>),
    /// A continuation request.
    Continue(&'static str),
}

impl Response {
    pub fn ok(code: Option<Code>, text: impl Into<Cow<'static, str>>) -> Self {
        Response::Status { kind: Kind::Ok, code, text: text.into() }
    }

    pub fn bad(text: &'static str) -> Self {
        Response::Status { kind: Kind::Bad, code: None, text: text.into() }
    }

    pub fn bye(code: Option<Code>, text: &'static str) -> Self {
        Response::Status { kind: Kind::Bye, code, text: text.into() }
    }

    /// Appends the response, with its CRLF, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        if let Some(data) = self.to_codec() {
            out.extend_from_slice(&ResponseCodec::default().encode(&data).dump());
            return;
        }
        match self {
            Response::Fetch { seq, items, extras } => {
                let extras = extras.iter().map(FetchExtra::render).collect::<Vec<_>>().join(" ");
                match Vec1::try_from(items.clone()) {
                    Ok(items) => {
                        // The codec has no OBJECTID or PREVIEW items: they go before the closing
                        // parenthesis.
                        let mut e = ResponseCodec::default()
                            .encode(&codec::Response::Data(Data::Fetch { seq: *seq, items }))
                            .dump();
                        if !extras.is_empty() {
                            e.truncate(e.len() - 3);
                            e.extend_from_slice(format!(" {extras})\r\n").as_bytes());
                        }
                        out.extend_from_slice(&e);
                    }
                    // PREVIEW carries literals of its own: the line goes out as it is.
                    Err(_) if !extras.is_empty() => {
                        out.extend_from_slice(format!("* {seq} FETCH ({extras})\r\n").as_bytes())
                    }
                    Err(_) => {}
                }
            }
            Response::Continue(text) => line(out, &format!("+ {text}")),
            Response::UrlFetch(items) => {
                out.extend_from_slice(b"* URLFETCH");
                for (url, data) in items {
                    out.push(b' ');
                    out.extend_from_slice(astring(url).as_bytes());
                    out.push(b' ');
                    metadata_value(out, data.as_deref());
                }
                out.extend_from_slice(b"\r\n");
            }
            Response::Metadata { mailbox, entries } => {
                out.extend_from_slice(format!("* METADATA {} (", astring(mailbox)).as_bytes());
                for (i, (name, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(b' ');
                    }
                    // Entry names go out as atoms when they can, as clients' examples show them.
                    let atom = name.bytes().all(|b| b > 0x20 && b < 0x7f && !b"(){%*\"\\".contains(&b));
                    if atom {
                        out.extend_from_slice(name.as_bytes())
                    } else {
                        out.extend_from_slice(astring(name).as_bytes())
                    }
                    out.push(b' ');
                    metadata_value(out, value.as_deref());
                }
                out.extend_from_slice(b")\r\n");
            }
            other => line(out, &format!("* {}", other.render())),
        }
    }

    /// The response as imap-codec's type, when the codec can say it exactly.
    fn to_codec(&self) -> Option<codec::Response<'static>> {
        let data = match self {
            Response::Exists(n) => Data::Exists(*n),
            Response::Recent(n) => Data::Recent(*n),
            Response::Expunge(n) => Data::Expunge(NonZeroU32::new(*n)?),
            Response::Vanished { earlier, uids } => {
                Data::Vanished { earlier: *earlier, known_uids: sequence_set(uids)? }
            }
            Response::Flags(keywords) => Data::Flags(flags(keywords)),
            Response::FetchFlags { seq, uid, flags: names, modseq } => {
                let mut items = Vec::with_capacity(3);
                if let Some(uid) = uid {
                    items.push(MessageDataItem::Uid(NonZeroU32::new(*uid)?));
                }
                if let Some(names) = names {
                    items.push(MessageDataItem::Flags(crate::fetch::flags(names)));
                }
                if let Some(modseq) = modseq {
                    // Mod-sequences start at 1 (RFC 7162 section 3.1.4).
                    items.push(MessageDataItem::ModSeq(NonZeroU64::new(*modseq).unwrap_or(NonZeroU64::MIN)));
                }
                Data::Fetch { seq: NonZeroU32::new(*seq)?, items: Vec1::try_from(items).ok()? }
            }
            Response::Search { hits, modseq } => Data::Search(
                hits.iter().map(|h| NonZeroU32::new(*h)).collect::<Option<_>>()?,
                match modseq {
                    Some(m) => Some(NonZeroU64::new(*m)?),
                    None => None,
                },
            ),
            Response::Status { kind, code, text } if *kind != Kind::Bye => {
                let code = match code {
                    Some(c) => Some(c.to_codec()?),
                    None => None,
                };
                let kind = match kind {
                    Kind::Ok => StatusKind::Ok,
                    Kind::No => StatusKind::No,
                    _ => StatusKind::Bad,
                };
                let text = Text::try_from(text.clone().into_owned()).ok()?;
                return Some(codec::Response::Status(codec::Status::Untagged(StatusBody { kind, code, text })));
            }
            _ => return None,
        };
        Some(codec::Response::Data(data))
    }

    /// The response after `* `, for those written by hand.
    fn render(&self) -> String {
        match self {
            Response::Exists(n) => format!("{n} EXISTS"),
            Response::Recent(n) => format!("{n} RECENT"),
            Response::Expunge(n) => format!("{n} EXPUNGE"),
            Response::Vanished { earlier: true, uids } => format!("VANISHED (EARLIER) {}", uid_set(uids)),
            Response::Vanished { earlier: false, uids } => format!("VANISHED {}", uid_set(uids)),
            Response::Flags(keywords) => format!("FLAGS ({})", flag_names(keywords).join(" ")),
            Response::FetchFlags { seq, uid, flags, modseq } => {
                let mut parts = Vec::with_capacity(3);
                if let Some(uid) = uid {
                    parts.push(format!("UID {uid}"));
                }
                if let Some(flags) = flags {
                    parts.push(format!("FLAGS ({})", flags.join(" ")));
                }
                if let Some(modseq) = modseq {
                    parts.push(format!("MODSEQ ({modseq})"));
                }
                format!("{seq} FETCH ({})", parts.join(" "))
            }
            Response::Status { kind, code, text } => status_text(kind.word(), code.as_ref(), text),
            Response::Capability(caps) => format!("CAPABILITY {}", caps.join(" ")),
            Response::Enabled(caps) => {
                let mut s = String::from("ENABLED");
                for c in caps {
                    s.push(' ');
                    s.push_str(c);
                }
                s
            }
            Response::Id => "ID (\"name\" \"Tern\" \"vendor\" \"Tern\")".into(),
            Response::Namespace => "NAMESPACE ((\"\" \"/\")) NIL NIL".into(),
            Response::Search { hits, modseq } => {
                let mut s = String::from("SEARCH");
                for h in hits {
                    s.push_str(&format!(" {h}"));
                }
                if let Some(m) = modseq {
                    s.push_str(&format!(" (MODSEQ {m})"));
                }
                s
            }
            Response::Esearch(e) => e.render(),
            Response::Sort(ids) => {
                let mut s = String::from("SORT");
                for id in ids {
                    s.push_str(&format!(" {id}"));
                }
                s
            }
            Response::Thread(threads) if threads.is_empty() => "THREAD".into(),
            Response::Thread(threads) => format!("THREAD {threads}"),
            Response::MailboxStatus { name, items } => {
                let items: Vec<String> = items
                    .iter()
                    .map(|i| match i {
                        StatusItem::Number(what, n) => format!("{what} {n}"),
                        StatusItem::MailboxId(id) => format!("MAILBOXID ({})", mailbox_id(*id)),
                    })
                    .collect();
                format!("STATUS {} ({})", astring(name), items.join(" "))
            }
            Response::List { lsub, attributes, name, child_info } => {
                let what = if *lsub { "LSUB" } else { "LIST" };
                let mut s = format!("{what} ({}) \"/\" {}", attributes.join(" "), astring(name));
                if let Some(why) = child_info {
                    s.push_str(&format!(" (\"CHILDINFO\" (\"{why}\"))"));
                }
                s
            }
            Response::Quota(Some((used, limit))) => format!("QUOTA \"\" (STORAGE {used} {limit})"),
            Response::Quota(None) => "QUOTA \"\" ()".into(),
            Response::QuotaRoot(name) => format!("QUOTAROOT {} \"\"", astring(name)),
            Response::ContextUpdate { tag, uid, changes } => {
                let mut s = format!("ESEARCH (TAG {})", astring(tag));
                if *uid {
                    s.push_str(" UID");
                }
                for (add, position, ids) in changes {
                    let what = if *add { "ADDTO" } else { "REMOVEFROM" };
                    // A position of 0 is mailbox order, where a compact set says the same; a
                    // sort position keeps the order given.
                    let set = if *position == 0 { uid_set(ids) } else { ordered_set(ids) };
                    s.push_str(&format!(" {what} ({position} {set})"));
                }
                s
            }
            Response::ListNotify { attributes, name, old } => {
                let mut s = format!("LIST ({}) \"/\" {}", attributes.join(" "), astring(name));
                if let Some(old) = old {
                    s.push_str(&format!(" (\"OLDNAME\" ({}))", astring(old)));
                }
                s
            }
            Response::GenUrlAuth(urls) => {
                let urls: Vec<String> = urls.iter().map(|u| astring(u)).collect();
                format!("GENURLAUTH {}", urls.join(" "))
            }
            Response::Fetch { .. } | Response::Continue(_) | Response::Metadata { .. } | Response::UrlFetch(_) => {
                String::new()
            }
        }
    }
}

impl Esearch {
    fn render(&self) -> String {
        let mut line = format!("ESEARCH (TAG \"{}\")", self.tag);
        if self.uid {
            line.push_str(" UID");
        }
        if let Some(min) = self.min {
            line.push_str(&format!(" MIN {min}"));
        }
        if let Some(max) = self.max {
            line.push_str(&format!(" MAX {max}"));
        }
        if let Some(count) = self.count {
            line.push_str(&format!(" COUNT {count}"));
        }
        if let Some(all) = &self.all {
            let set = if self.all_in_order { ordered_set(all) } else { uid_set(all) };
            line.push_str(&format!(" ALL {set}"));
        }
        if let Some((range, numbers)) = &self.partial {
            let set = match numbers.is_empty() {
                true => "NIL".to_string(),
                false if self.all_in_order => ordered_set(numbers),
                false => uid_set(numbers),
            };
            line.push_str(&format!(" PARTIAL ({range} {set})"));
        }
        if let Some(modseq) = self.modseq {
            line.push_str(&format!(" MODSEQ {modseq}"));
        }
        line
    }
}

impl FetchExtra {
    fn render(&self) -> String {
        match self {
            FetchExtra::EmailId(id) => format!("EMAILID ({id})"),
            FetchExtra::ThreadIdNil => "THREADID NIL".into(),
            FetchExtra::SaveDate(0) => "SAVEDATE NIL".into(),
            FetchExtra::SaveDate(secs) => match chrono::DateTime::from_timestamp(*secs, 0) {
                Some(t) => format!("SAVEDATE \"{}\"", t.format("%d-%b-%Y %H:%M:%S +0000")),
                None => "SAVEDATE NIL".into(),
            },
            FetchExtra::Preview { text: None, .. } => "PREVIEW NIL".into(),
            // Without UTF-8 quoted strings (RFC 6855), 8-bit text goes in a literal.
            FetchExtra::Preview { text: Some(t), utf8 } if !t.is_ascii() && !utf8 => {
                format!("PREVIEW {{{}}}\r\n{t}", t.len())
            }
            FetchExtra::Preview { text: Some(t), .. } => format!("PREVIEW {}", astring(t)),
        }
    }
}

/// A tagged status response: the end of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tagged {
    pub tag: String,
    pub kind: Kind,
    pub code: Option<Code>,
    pub text: Cow<'static, str>,
}

impl Tagged {
    pub fn new(tag: &Tag<'_>, kind: Kind, code: Option<Code>, text: impl Into<Cow<'static, str>>) -> Self {
        Tagged { tag: tag.inner().to_string(), kind, code, text: text.into() }
    }

    /// Whether the response carries a response code, its own or one written into its text.
    pub fn has_code(&self) -> bool {
        self.code.is_some() || self.text.starts_with('[')
    }

    /// Appends the response, with its CRLF, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        line(out, &format!("{} {}", self.tag, status_text(self.kind.word(), self.code.as_ref(), &self.text)));
    }
}

/// `OK [CODE] text`, `NO text`, ...
fn status_text(kind: &str, code: Option<&Code>, text: &str) -> String {
    let mut s = String::from(kind);
    if let Some(code) = code {
        s.push_str(" [");
        code.write(&mut s);
        s.push(']');
    }
    if !text.is_empty() {
        s.push(' ');
        s.push_str(text);
    }
    s
}

/// Writes one line; CR and LF inside it are replaced so that no input can inject a response.
fn line(out: &mut Vec<u8>, text: &str) {
    out.extend(text.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
    out.extend_from_slice(b"\r\n");
}

/// The system flags and `keywords`, by name.
fn flag_names(keywords: &[String]) -> Vec<&str> {
    SYSTEM_FLAGS.iter().copied().chain(keywords.iter().map(String::as_str)).collect()
}

/// The system flags and `keywords` as the codec's flags. A stored keyword that is no valid
/// atom is left out rather than breaking the response.
fn flags(keywords: &[String]) -> Vec<Flag<'static>> {
    flag_names(keywords).into_iter().filter_map(|f| Flag::try_from(f).ok().map(IntoStatic::into_static)).collect()
}

/// A compact sequence set of `uids` for the codec, None when there is none.
fn sequence_set(uids: &[u32]) -> Option<SequenceSet> {
    let runs: Vec<Sequence> = runs(&sorted(uids))
        .into_iter()
        .map(|(a, b)| {
            let a = SeqOrUid::Value(NonZeroU32::new(a)?);
            let b = SeqOrUid::Value(NonZeroU32::new(b)?);
            Some(if a == b { Sequence::Single(a) } else { Sequence::Range(a, b) })
        })
        .collect::<Option<_>>()?;
    SequenceSet::try_from(runs).ok()
}

fn sorted(ids: &[u32]) -> Vec<u32> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted
}

/// The ascending runs of `ids`, in their order: `[4, 1, 2, 3]` gives `(4, 4), (1, 3)`.
fn runs(ids: &[u32]) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let start = ids[i];
        while i + 1 < ids.len() && ids[i + 1] == ids[i].wrapping_add(1) {
            i += 1;
        }
        out.push((start, ids[i]));
        i += 1;
    }
    out
}

fn render_runs(runs: &[(u32, u32)]) -> String {
    let parts: Vec<String> =
        runs.iter().map(|(a, b)| if a == b { a.to_string() } else { format!("{a}:{b}") }).collect();
    parts.join(",")
}

/// A compact UID set: `1:3,7,9:10`.
pub(crate) fn uid_set(uids: &[u32]) -> String {
    render_runs(&runs(&sorted(uids)))
}

/// A sequence set that keeps the order of `ids`: ascending runs become ranges.
pub(crate) fn ordered_set(ids: &[u32]) -> String {
    render_runs(&runs(ids))
}

/// The OBJECTID of a folder (RFC 8474): folder ids are never reused, and RENAME keeps them.
pub(crate) fn mailbox_id(folder_id: u64) -> String {
    format!("F{folder_id:016x}")
}

/// A METADATA value or URLFETCH data: NIL, a quoted string when it is short printable text, a
/// literal otherwise
/// (a literal8 when it holds a NUL, which only binary literals may, RFC 5464 section 5).
fn metadata_value(out: &mut Vec<u8>, value: Option<&[u8]>) {
    let Some(value) = value else {
        out.extend_from_slice(b"NIL");
        return;
    };
    if value.len() <= 1024 && value.iter().all(|b| (0x20..0x7f).contains(b) && *b != b'"' && *b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(value);
        out.push(b'"');
        return;
    }
    let tilde = if value.contains(&0) { "~" } else { "" };
    out.extend_from_slice(format!("{tilde}{{{}}}\r\n", value.len()).as_bytes());
    out.extend_from_slice(value);
}

/// Quotes a string for a response: a quoted string when it can be one, a literal otherwise.
pub(crate) fn astring(s: &str) -> String {
    if s.len() <= 1024 && !s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        let mut out = String::with_capacity(s.len() + 2);
        out.push('"');
        for c in s.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        out
    } else {
        format!("{{{}}}\r\n{s}", s.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(r: &Response) -> String {
        let mut out = Vec::new();
        r.encode(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn kw(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    /// Whatever encodes a response, the codec or the hand-written form, the bytes are the same.
    #[track_caller]
    fn same(r: Response, expected: &str) {
        assert_eq!(bytes(&r), format!("{expected}\r\n"));
        assert_eq!(format!("* {}\r\n", r.render()), format!("{expected}\r\n"), "hand-written form");
    }

    #[test]
    fn codec_and_hand_written_forms_agree() {
        same(Response::Exists(3), "* 3 EXISTS");
        same(Response::Recent(0), "* 0 RECENT");
        same(Response::Expunge(2), "* 2 EXPUNGE");
        same(Response::Vanished { earlier: false, uids: vec![9, 1, 2, 3] }, "* VANISHED 1:3,9");
        same(Response::Vanished { earlier: true, uids: vec![4] }, "* VANISHED (EARLIER) 4");
        same(
            Response::Flags(kw(&["$Junk", "work"])),
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Junk work)",
        );
        same(
            Response::FetchFlags { seq: 1, uid: Some(7), flags: Some(kw(&["\\Seen", "\\Recent"])), modseq: Some(5) },
            "* 1 FETCH (UID 7 FLAGS (\\Seen \\Recent) MODSEQ (5))",
        );
        same(Response::FetchFlags { seq: 2, uid: None, flags: Some(vec![]), modseq: None }, "* 2 FETCH (FLAGS ())");
        same(
            Response::FetchFlags { seq: 2, uid: Some(3), flags: None, modseq: Some(6) },
            "* 2 FETCH (UID 3 MODSEQ (6))",
        );
        same(Response::Search { hits: vec![], modseq: None }, "* SEARCH");
        same(Response::Search { hits: vec![1, 2], modseq: Some(6) }, "* SEARCH 1 2 (MODSEQ 6)");
        same(Response::ok(Some(Code::UidNext(4)), "Predicted next UID"), "* OK [UIDNEXT 4] Predicted next UID");
        same(Response::ok(Some(Code::HighestModSeq(4)), "Highest"), "* OK [HIGHESTMODSEQ 4] Highest");
        same(Response::ok(Some(Code::Unseen(1)), "First unseen"), "* OK [UNSEEN 1] First unseen");
        same(
            Response::ok(Some(Code::PermanentFlags(Some(kw(&["x"])))), "Flags permitted"),
            "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft x \\*)] Flags permitted",
        );
        same(
            Response::ok(Some(Code::PermanentFlags(None)), "No permanent flags permitted"),
            "* OK [PERMANENTFLAGS ()] No permanent flags permitted",
        );
        same(Response::ok(Some(Code::Closed), "Previous mailbox closed"), "* OK [CLOSED] Previous mailbox closed");
        same(Response::ok(None, "Still here"), "* OK Still here");
    }

    #[test]
    fn hand_written_responses() {
        assert_eq!(bytes(&Response::ok(Some(Code::MailboxId(1)), "Ok")), "* OK [MAILBOXID (F0000000000000001)] Ok\r\n");
        assert_eq!(bytes(&Response::bye(None, "Logging out")), "* BYE Logging out\r\n");
        assert_eq!(bytes(&Response::Enabled(vec![])), "* ENABLED\r\n");
        assert_eq!(bytes(&Response::Sort(vec![])), "* SORT\r\n");
        assert_eq!(bytes(&Response::Thread(String::new())), "* THREAD\r\n");
        assert_eq!(bytes(&Response::Continue("idling")), "+ idling\r\n");
        let esort = Esearch {
            tag: "a1".into(),
            uid: true,
            min: Some(4),
            count: Some(4),
            all: Some(vec![4, 1, 2, 3]),
            all_in_order: true,
            ..Default::default()
        };
        assert_eq!(bytes(&Response::Esearch(esort)), "* ESEARCH (TAG \"a1\") UID MIN 4 COUNT 4 ALL 4,1:3\r\n");
        let page = |numbers: Vec<u32>, all_in_order| Esearch {
            tag: "a2".into(),
            partial: Some(("-1:-3".into(), numbers)),
            all_in_order,
            ..Default::default()
        };
        assert_eq!(
            bytes(&Response::Esearch(page(vec![7, 5, 6], false))),
            "* ESEARCH (TAG \"a2\") PARTIAL (-1:-3 5:7)\r\n"
        );
        assert_eq!(
            bytes(&Response::Esearch(page(vec![7, 5, 6], true))),
            "* ESEARCH (TAG \"a2\") PARTIAL (-1:-3 7,5:6)\r\n"
        );
        assert_eq!(bytes(&Response::Esearch(page(vec![], false))), "* ESEARCH (TAG \"a2\") PARTIAL (-1:-3 NIL)\r\n");
        let status = Response::MailboxStatus {
            name: "Sent".into(),
            items: vec![StatusItem::Number("MESSAGES", 2), StatusItem::MailboxId(16)],
        };
        assert_eq!(bytes(&status), "* STATUS \"Sent\" (MESSAGES 2 MAILBOXID (F0000000000000010))\r\n");
        let list = Response::List {
            lsub: false,
            attributes: vec!["\\HasNoChildren"],
            name: "a\"b".into(),
            child_info: Some("SUBSCRIBED"),
        };
        assert_eq!(bytes(&list), "* LIST (\\HasNoChildren) \"/\" \"a\\\"b\" (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n");
    }

    #[test]
    fn tagged_responses_and_injection() {
        let tag = Tag::try_from("a1").unwrap();
        let mut out = Vec::new();
        Tagged::new(&tag, Kind::No, Some(Code::Atom("NONEXISTENT")), "no such\r\nfolder").encode(&mut out);
        Tagged::new(
            &tag,
            Kind::Ok,
            Some(Code::CopyUid { validity: 9, source: vec![1, 2], destination: vec![5, 6] }),
            "COPY completed",
        )
        .encode(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a1 NO [NONEXISTENT] no such  folder\r\na1 OK [COPYUID 9 1:2 5:6] COPY completed\r\n"
        );
    }

    #[test]
    fn sets() {
        assert_eq!(ordered_set(&[4, 1, 2, 3, 9, 5]), "4,1:3,9,5");
        assert_eq!(ordered_set(&[]), "");
        assert_eq!(uid_set(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
        assert_eq!(uid_set(&[4]), "4");
        assert_eq!(uid_set(&[9, 1, 2]), "1:2,9");
    }
}
