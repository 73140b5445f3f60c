//! The command syntax that imap-codec does not parse yet, decoded here without I/O, like the
//! codec itself: LIST-EXTENDED with its selection and return options and LIST-STATUS (RFC 5258,
//! RFC 5819, RFC 6154), SEARCH RETURN (ESEARCH, RFC 4731) and SORT RETURN (ESORT, RFC 5267)
//! with SAVE and the `$` marker (SEARCHRES, RFC 5182) and PARTIAL (RFC 9394), the OBJECTID
//! items EMAILID,
//! THREADID and MAILBOXID (RFC 8474), FETCH PREVIEW (RFC 8970), SAVEDATE's FETCH item and search
//! keys (RFC 8514), MULTIAPPEND and CATENATE (framed here, parsed by [`crate::append`]), and
//! FETCH's PARTIAL modifier
//! (RFC 9394 section 3.3), whose range, when it is none, is refused with a text saying why.
//!
//! [`decode`] is the session's one entry point for turning bytes into a command. It asks
//! imap-codec first; only when the codec finds a syntax error does it look at the command
//! again. LIST is parsed here in full, since its extended form cannot be expressed in the
//! codec's types. SEARCH, FETCH and STATUS are rewritten into the form the codec knows, with
//! the extension removed and remembered in [`Extras`], so the search, fetch and status code
//! stays the codec's; FETCH's modifier list loses PARTIAL the same way and keeps CHANGEDSINCE
//! and VANISHED for the codec. The results have the codec's shape: "incomplete" and "literal
//! found" are values, so the session answers literals the same way for both.
//!
//! `$` (RFC 5182 section 3: `sequence-set =/ seq-last-command`) names the result a SEARCH or SORT
//! saved, which only the session knows. Where it stands as a whole sequence set, it is written
//! into the command as [`LAST_RESULT`], a set the codec parses and no client sends, and
//! [`Extras::last_result`] says so; the session puts the saved messages in its place
//! ([`is_last_result`] finds it).

use imap_codec::{
    CommandCodec,
    decode::{CommandDecodeError, Decoder},
    imap_types::{
        IntoStatic,
        command::{Command, CommandBody},
        core::{LiteralMode, Tag},
        mailbox::{ListMailbox, Mailbox},
        sequence::{SeqOrUid, Sequence, SequenceSet},
        status::StatusDataItemName,
    },
};

/// What `$` becomes in a command handed to the codec: `*:*,*`, a sequence set the codec parses
/// wherever one is allowed, that names nothing a client would write this way (the last message,
/// twice), and that nothing else in a command can be (`*` is not an atom character, so it is
/// neither a flag, a number nor a string). A command that sends it next to a `$` is refused, so
/// that the session never mistakes the client's own set for the marker.
pub const LAST_RESULT: &[u8] = b"*:*,*";

/// Whether `set` is [`LAST_RESULT`], the stand-in for `$` in a command whose
/// [`Extras::last_result`] is set.
pub fn is_last_result(set: &SequenceSet) -> bool {
    matches!(
        set.0.as_ref(),
        [Sequence::Range(SeqOrUid::Asterisk, SeqOrUid::Asterisk), Sequence::Single(SeqOrUid::Asterisk)]
    )
}

/// What the codec's command does not carry: the extension items that were taken out of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    /// SEARCH RETURN options; None for a SEARCH without RETURN.
    pub search: Option<SearchReturn>,
    /// FETCH EMAILID.
    pub email_id: bool,
    /// FETCH THREADID.
    pub thread_id: bool,
    /// FETCH PREVIEW, with or without the LAZY modifier (RFC 8970).
    pub preview: bool,
    /// FETCH SAVEDATE (RFC 8514).
    pub save_date: bool,
    /// FETCH's PARTIAL modifier (RFC 9394 section 3.3): only the messages of the set (after
    /// CHANGEDSINCE) in this window of it are answered.
    pub partial: Option<Partial>,
    /// STATUS MAILBOXID.
    pub mailbox_id: bool,
    /// Items that were added only to keep the codec's list from being empty, and that the
    /// answer leaves out.
    pub placeholder: bool,
    /// The command used `$` (RFC 5182): every sequence set in it that [`is_last_result`] is the
    /// result the last SEARCH or SORT with SAVE kept.
    pub last_result: bool,
}

/// The result options of ESEARCH (RFC 4731) and SAVE (RFC 5182). An empty RETURN () means ALL;
/// SAVE alone returns nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchReturn {
    pub min: bool,
    pub max: bool,
    pub count: bool,
    pub all: bool,
    /// Keep the result for `$` (RFC 5182 section 2.1).
    pub save: bool,
    /// Return one page of the result (RFC 9394 section 3.1).
    pub partial: Option<Partial>,
    /// Keep the result up to date with ADDTO and REMOVEFROM (CONTEXT=SEARCH and CONTEXT=SORT,
    /// RFC 5267 section 4.3). Its hint CONTEXT (section 4.2) is taken and changes nothing.
    pub update: bool,
}

/// A PARTIAL range (RFC 9394 section 3.1): positions in the result, counted from 1 at its start
/// (`1:100`), or from its end when negative (`-1:-100`, -1 being the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    /// The range as the client wrote it, which the answer repeats.
    pub text: String,
    /// The positions, the lower first: `500:400` is the same as `400:500`.
    pub first: u32,
    pub last: u32,
    /// Whether the positions count from the end of the result.
    pub from_end: bool,
}

/// Why a PARTIAL range is not one (RFC 9394 section 4), said in the BAD that refuses a FETCH
/// with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// Not two numbers joined by a colon: `5`, `1:*`, `01:5`, a quoted string.
    #[error("a PARTIAL range is two numbers joined by a colon, such as 1:50 or -1:-50")]
    Malformed,
    /// A position of 0: positions count from 1 (`nz-number`).
    #[error("PARTIAL range positions count from 1 (or -1 for the last message); 0 is none")]
    Zero,
    /// One end counts from the start and the other from the end.
    #[error("both ends of a PARTIAL range are positive (from the first) or both negative (from the last)")]
    MixedSigns,
    /// A position past the largest 32-bit number.
    #[error("PARTIAL range positions are at most 4294967295")]
    TooLarge,
}

impl Partial {
    /// Parses `partial-range-first = nz-number ":" nz-number` or `partial-range-last = MINUS
    /// nz-number ":" MINUS nz-number` (RFC 9394 section 4); neither may contain `*`, and the two
    /// ends have the same sign.
    pub fn parse(text: &[u8]) -> Option<Partial> {
        Partial::check(text).ok()
    }

    /// [`Partial::parse`], saying what is wrong with a range that is not one.
    pub fn check(text: &[u8]) -> Result<Partial, RangeError> {
        let nz_number = |s: &[u8]| -> Result<u32, RangeError> {
            if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
                return Err(RangeError::Malformed);
            }
            if s.iter().all(|d| *d == b'0') {
                return Err(RangeError::Zero);
            }
            // `nz-number` has no leading zero, so `01` is no number here.
            if s[0] == b'0' {
                return Err(RangeError::Malformed);
            }
            std::str::from_utf8(s).map_err(|_| RangeError::Malformed)?.parse().map_err(|_| RangeError::TooLarge)
        };
        let text_str = std::str::from_utf8(text).map_err(|_| RangeError::Malformed)?;
        let colon = text.iter().position(|c| *c == b':').ok_or(RangeError::Malformed)?;
        let (a, b) = (&text[..colon], &text[colon + 1..]);
        let (a, b, from_end) = match (a.strip_prefix(b"-"), b.strip_prefix(b"-")) {
            (Some(a), Some(b)) => (a, b, true),
            (None, None) => (a, b, false),
            _ => return Err(RangeError::MixedSigns),
        };
        let (a, b) = (nz_number(a)?, nz_number(b)?);
        Ok(Partial { text: text_str.to_string(), first: a.min(b), last: a.max(b), from_end })
    }

    /// The part of `results` (in the order they are returned) that the range names; positions
    /// past either end name nothing.
    pub fn select<'a, T>(&self, results: &'a [T]) -> &'a [T] {
        let n = results.len();
        let (first, last) = (self.first as usize, self.last as usize);
        let (start, end) = if self.from_end {
            (n.saturating_sub(last), n.saturating_sub(first - 1))
        } else {
            (first - 1, last.min(n))
        };
        results.get(start..end).unwrap_or_default()
    }
}

impl SearchReturn {
    /// Whether the command answers with an ESEARCH response: with SAVE alone it does not
    /// (RFC 5182 section 2.1).
    pub fn returns_anything(&self) -> bool {
        self.min || self.max || self.count || self.all || self.partial.is_some()
    }

    /// Whether SAVE keeps every match: with MIN, MAX or PARTIAL and neither ALL nor COUNT, `$`
    /// keeps only the messages those return (RFC 5182 section 2.1, RFC 9394 section 3.2).
    pub fn saves_every_match(&self) -> bool {
        self.all || self.count || !(self.min || self.max || self.partial.is_some())
    }
}

/// A LIST or LSUB command, basic or extended, in one shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCommand {
    pub tag: Tag<'static>,
    pub lsub: bool,
    /// Raw bytes of the reference and the patterns, as the client sent them (modified UTF-7
    /// unless UTF-8 was enabled).
    pub reference: Vec<u8>,
    pub patterns: Vec<Vec<u8>>,
    /// Selection options: only subscribed folders, or only special-use ones; RECURSIVEMATCH
    /// reports parents of selected folders with CHILDINFO. REMOTE changes nothing here.
    pub select_subscribed: bool,
    pub select_special_use: bool,
    pub recursive_match: bool,
    /// Return options. CHILDREN and SPECIAL-USE are always returned, so only these remain.
    pub return_subscribed: bool,
    pub return_status: Option<Vec<StatusDataItemName>>,
    pub return_mailbox_id: bool,
    /// Whether the command used the extended syntax; a basic LIST answers as before.
    pub extended: bool,
}

/// A decoded command.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Command(Command<'static>, Extras),
    List(ListCommand),
    /// An APPEND of several messages (MULTIAPPEND) or with CATENATE, which the codec does not
    /// parse.
    Append(crate::append::AppendCommand),
    /// GENURLAUTH, URLFETCH and RESETKEY (RFC 4467).
    UrlAuth(crate::urlauth::UrlAuthCommand),
    /// NOTIFY (RFC 5465).
    Notify(crate::notify::NotifyCommand),
    /// CANCELUPDATE (RFC 5267 section 4.3.5): the tags of the searches to stop updating.
    CancelUpdate {
        tag: Tag<'static>,
        tags: Vec<String>,
    },
    /// A command whose syntax is wrong in a way worth saying (`$` used as part of a sequence
    /// set, a FETCH PARTIAL range that is none): it is answered BAD with this text, and the
    /// session goes on.
    Refused {
        tag: Tag<'static>,
        text: String,
    },
}

type Error = CommandDecodeError<'static>;

/// Decodes the command at the start of `input`; on success, how many bytes it used.
pub fn decode(input: &[u8]) -> Result<(usize, Decoded), Error> {
    match CommandCodec::default().decode(input) {
        Ok((rest, command)) => {
            let used = input.len() - rest.len();
            let command = command.into_static();
            Ok((used, from_codec(command)))
        }
        Err(CommandDecodeError::Failed) => extended(input),
        Err(e) => Err(e.into_static()),
    }
}

/// A LIST or LSUB from the codec becomes a [`ListCommand`], so one code answers both forms.
fn from_codec(command: Command<'static>) -> Decoded {
    let (lsub, reference, pattern) = match command.body {
        CommandBody::List { reference, mailbox_wildcard } => (false, reference, mailbox_wildcard),
        CommandBody::Lsub { reference, mailbox_wildcard } => (true, reference, mailbox_wildcard),
        _ => return Decoded::Command(command, Extras::default()),
    };
    let reference = match reference {
        Mailbox::Inbox => b"INBOX".to_vec(),
        Mailbox::Other(o) => o.as_ref().to_vec(),
    };
    let pattern = match pattern {
        ListMailbox::Token(t) => t.as_ref().to_vec(),
        ListMailbox::String(s) => s.as_ref().to_vec(),
    };
    Decoded::List(ListCommand {
        tag: command.tag,
        lsub,
        reference,
        patterns: vec![pattern],
        select_subscribed: false,
        select_special_use: false,
        recursive_match: false,
        return_subscribed: false,
        return_status: None,
        return_mailbox_id: false,
        extended: false,
    })
}

/// Looks again at a command the codec could not parse.
fn extended(input: &[u8]) -> Result<(usize, Decoded), Error> {
    let first_line = input.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut words = first_line.split(|b| *b == b' ');
    let tag = words.next().unwrap_or_default();
    let name = words.next().unwrap_or_default().to_ascii_uppercase();
    let name = if name == b"UID" { words.next().unwrap_or_default().to_ascii_uppercase() } else { name };
    let name = name.strip_suffix(b"\r").unwrap_or(&name).to_vec();
    // A name only this file knows, cut short by a split read: the codec fails on it at once,
    // since no command it knows starts that way, but more bytes may make it one.
    if !input.contains(&b'\n') {
        let after_tag = first_line.iter().position(|b| *b == b' ').map(|i| &first_line[i + 1..]);
        let partial = after_tag.is_some_and(|rest| {
            let rest = rest.to_ascii_uppercase();
            !rest.is_empty()
                && !rest.contains(&b' ')
                && [&b"CANCELUPDATE"[..], b"GENURLAUTH", b"URLFETCH", b"RESETKEY", b"NOTIFY"]
                    .iter()
                    .any(|n| n.starts_with(&rest))
        });
        if partial {
            return Err(Error::Incomplete);
        }
    }
    if !matches!(
        name.as_slice(),
        b"LIST"
            | b"SEARCH"
            | b"SORT"
            | b"THREAD"
            | b"FETCH"
            | b"STORE"
            | b"COPY"
            | b"MOVE"
            | b"EXPUNGE"
            | b"STATUS"
            | b"APPEND"
            | b"CANCELUPDATE"
            | b"GENURLAUTH"
            | b"URLFETCH"
            | b"RESETKEY"
            | b"NOTIFY"
    ) {
        return Err(Error::Failed);
    }
    // These commands have nothing the codec lacks but `$`: without one, the codec's verdict
    // stands, as soon as it is given.
    let set_only = matches!(name.as_slice(), b"THREAD" | b"STORE" | b"COPY" | b"MOVE" | b"EXPUNGE");
    if set_only && !input.contains(&b'$') {
        return Err(Error::Failed);
    }
    let Ok(tag) = std::str::from_utf8(tag).map_err(|_| ()).and_then(|t| Tag::try_from(t).map_err(|_| ())) else {
        return Err(Error::Failed);
    };
    let tag = tag.into_static();
    let end = frame(input, &tag)?;
    let original = &input[..end];
    if name == b"CANCELUPDATE" {
        return Ok((end, parse_cancel_update(original, tag)));
    }
    if name == b"NOTIFY" {
        let words = after_word(original, b"NOTIFY").and_then(|start| tokens(&original[start..]));
        let words: Vec<crate::notify::Token> = words
            .unwrap_or_default()
            .into_iter()
            .map(|t| match t {
                Token::Atom(w) | Token::String(w) => crate::notify::Token::Word(w),
                Token::Open => crate::notify::Token::Open,
                Token::Close => crate::notify::Token::Close,
            })
            .collect();
        return Ok(match crate::notify::parse(tag.clone(), &words) {
            Ok(command) => (end, Decoded::Notify(command)),
            Err(e) => (end, Decoded::Refused { tag, text: e.to_string() }),
        });
    }
    if matches!(name.as_slice(), b"GENURLAUTH" | b"URLFETCH" | b"RESETKEY") {
        return Ok((end, parse_urlauth(original, &name, tag)));
    }
    if name == b"APPEND" {
        // MULTIAPPEND and CATENATE; a `$` in APPEND is text, never a search result.
        return Ok(match crate::append::parse(original, tag.clone()) {
            Ok(command) => (end, Decoded::Append(command)),
            Err(e) => (end, Decoded::Refused { tag, text: e.to_string() }),
        });
    }
    let marked = match mark_last_result(original, &name) {
        Ok(marked) => marked,
        Err(refused) => return Ok((end, Decoded::Refused { tag, text: refused.to_string() })),
    };
    let command = marked.as_deref().unwrap_or(original);
    let saved = if matches!(name.as_slice(), b"SEARCH" | b"SORT") {
        match rewrite_saved_keys(command, &name) {
            Ok(saved) => saved,
            Err(text) => return Ok((end, Decoded::Refused { tag, text })),
        }
    } else {
        None
    };
    let command = saved.as_deref().unwrap_or(command);
    if (marked.is_some() || saved.is_some())
        && let Ok(([], decoded)) = CommandCodec::default().decode(command)
    {
        let extras = Extras { last_result: marked.is_some(), ..Extras::default() };
        return Ok((end, Decoded::Command(decoded.into_static(), extras)));
    }
    let mut decoded = match name.as_slice() {
        b"LIST" => Decoded::List(parse_list(command, tag)?),
        b"SEARCH" => rewrite_search(command, b"SEARCH")?,
        b"SORT" => rewrite_search(command, b"SORT")?,
        b"FETCH" => rewrite_fetch(command, &tag)?,
        b"STATUS" => rewrite_status(command)?,
        _ => return Err(Error::Failed),
    };
    if let Decoded::Command(_, extras) = &mut decoded {
        extras.last_result = marked.is_some();
    }
    Ok((end, decoded))
}

/// Writes SAVEDATE's search keys (RFC 8514) of a SEARCH or SORT (`name`) in terms the codec
/// parses: `SAVEDBEFORE date` as a HEADER key standing for it (see [`crate::search::SAVED_KEYS`])
/// and `SAVEDATESUPPORTED`, true of every Tern mailbox, as `ALL`. A key word that is the
/// argument of another key (`SUBJECT SAVEDON`) stays as it is. None when there is no such key;
/// the error's text says what is wrong with a date.
fn rewrite_saved_keys(command: &[u8], name: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let words = words(command);
    let atom = |w: Option<&Word>| match w {
        Some(Word::Atom(a, b)) => Some(&command[*a..*b]),
        _ => None,
    };
    // The keys come after the command's name (after the tag and any UID).
    let Some(first) = words.iter().position(|w| atom(Some(w)).is_some_and(|a| a.eq_ignore_ascii_case(name))) else {
        return Ok(None);
    };
    let mut spans = Vec::new();
    for i in first + 1..words.len() {
        let Some(word) = atom(words.get(i)) else { continue };
        let word = word.to_ascii_uppercase();
        let is_argument = |back: usize, keys: &[&[u8]]| {
            i.checked_sub(back)
                .and_then(|j| atom(words.get(j)))
                .is_some_and(|a| keys.iter().any(|k| a.eq_ignore_ascii_case(k)))
        };
        if i > first + 1 && (is_argument(1, &STRING_KEYS) || is_argument(2, &[b"HEADER"])) {
            continue;
        }
        let replacement = if word == b"SAVEDATESUPPORTED" {
            b"ALL".to_vec()
        } else if let Some((key, stand_in)) = crate::search::SAVED_KEYS.iter().find(|(key, _)| word == key.as_bytes()) {
            match words.get(i + 1) {
                Some(Word::Atom(a, b)) if crate::search::search_day(&command[*a..*b]).is_none() => {
                    return Err(format!("{key} takes a date such as 1-Feb-2024"));
                }
                Some(_) => format!("HEADER \"{stand_in}\"").into_bytes(),
                None => return Err(format!("{key} takes a date such as 1-Feb-2024")),
            }
        } else {
            continue;
        };
        let Word::Atom(a, b) = words[i] else { continue };
        spans.push((a, b, replacement));
    }
    if spans.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(command.len() + 16 * spans.len());
    let mut from = 0;
    for (a, b, replacement) in spans {
        out.extend_from_slice(&command[from..a]);
        out.extend_from_slice(&replacement);
        from = b;
    }
    out.extend_from_slice(&command[from..]);
    Ok(Some(out))
}

/// GENURLAUTH (`url mechanism` pairs), URLFETCH (urls) and RESETKEY (`[mailbox *mechanism]`), RFC
/// 4467 section 9: astrings and atoms.
fn parse_urlauth(command: &[u8], name: &[u8], tag: Tag<'static>) -> Decoded {
    use crate::urlauth::UrlAuthCommand;
    let text = |t: &Token| match t {
        Token::Atom(a) | Token::String(a) => String::from_utf8(a.clone()).ok(),
        _ => None,
    };
    let words: Option<Vec<String>> = after_word(command, name)
        .and_then(|start| tokens(&command[start..]))
        .map(|t| t.iter().map(text).collect())
        .unwrap_or_else(|| Some(Vec::new()));
    let refused = |tag, why: &str| Decoded::Refused { tag, text: why.to_string() };
    let Some(words) = words else { return refused(tag, "URLAUTH arguments are URLs, names and mechanisms") };
    match name {
        b"RESETKEY" => {
            let mut words = words.into_iter();
            let mailbox = words.next().map(String::into_bytes);
            Decoded::UrlAuth(UrlAuthCommand::ResetKey { tag, mailbox, mechanisms: words.collect() })
        }
        b"GENURLAUTH" if !words.is_empty() && words.len() % 2 == 0 => {
            let urls = words.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
            Decoded::UrlAuth(UrlAuthCommand::GenUrlAuth { tag, urls })
        }
        b"GENURLAUTH" => refused(tag, "GENURLAUTH takes pairs of a URL and a mechanism"),
        _ if words.is_empty() => refused(tag, "URLFETCH takes one or more URLs"),
        _ => Decoded::UrlAuth(UrlAuthCommand::UrlFetch { tag, urls: words }),
    }
}

/// `tag CANCELUPDATE "t1" "t2"`: one or more quoted tags (RFC 5267 section 5).
fn parse_cancel_update(command: &[u8], tag: Tag<'static>) -> Decoded {
    let refused = |tag| Decoded::Refused { tag, text: "CANCELUPDATE takes the quoted tags of searches".into() };
    let Some(start) = after_word(command, b"CANCELUPDATE") else { return refused(tag) };
    match tokens(&command[start..]) {
        Some(list) if !list.is_empty() && list.iter().all(|t| matches!(t, Token::String(_))) => {
            let tags = list
                .into_iter()
                .filter_map(|t| match t {
                    Token::String(s) => Some(String::from_utf8_lossy(&s).into_owned()),
                    _ => None,
                })
                .collect();
            Decoded::CancelUpdate { tag, tags }
        }
        _ => refused(tag),
    }
}

/// Why a command with `$` is refused before the codec sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum Refusal {
    /// `$` joined to numbers or ranges (`$:3`, `1,$`): RFC 5182 section 3 makes it a whole
    /// sequence set of its own.
    #[error("$ stands alone for the saved search result and cannot be part of a sequence set")]
    Joined,
    /// The client's own `*:*,*` next to a `$`: the session could not tell them apart.
    #[error("*:*,* cannot be used in the same command as $")]
    Ambiguous,
}

/// The search keys whose next argument is a string or a flag keyword, which may be `$` itself.
const STRING_KEYS: [&[u8]; 11] =
    [b"BCC", b"BODY", b"CC", b"FROM", b"SUBJECT", b"TEXT", b"TO", b"KEYWORD", b"UNKEYWORD", b"HEADER", b"CHARSET"];

/// One word of a complete command, as far as `$` is concerned: an atom (its span), or a string,
/// a literal or a parenthesis, which `$` never is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word {
    Atom(usize, usize),
    Other,
}

/// Splits a complete command into [`Word`]s, stepping over quoted strings and the data of
/// literals (a `$` in them is text).
fn words(command: &[u8]) -> Vec<Word> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < command.len() {
        match command[i] {
            b' ' | b'\r' | b'\n' => i += 1,
            b'(' | b')' => {
                out.push(Word::Other);
                i += 1;
            }
            b'"' => {
                i += 1;
                while i < command.len() && !matches!(command[i], b'"' | b'\n') {
                    i += if command[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push(Word::Other);
            }
            b'{' => {
                // A literal: its announcement ends the line, and its data follows the CRLF.
                let line_end = command[i..].iter().position(|b| *b == b'\n').map_or(command.len(), |n| i + n + 1);
                // The character before the brace counts: a literal starts an argument.
                let announcement = &command[i.saturating_sub(1)..line_end.saturating_sub(1).max(i)];
                let length = literal_at_end(announcement).map_or(0, |(n, _)| n as usize);
                i = line_end.saturating_add(length);
                out.push(Word::Other);
            }
            _ => {
                let len = command[i..]
                    .iter()
                    .position(|b| matches!(b, b' ' | b'(' | b')' | b'"' | b'\r' | b'\n' | b'{'))
                    .unwrap_or(command.len() - i);
                out.push(Word::Atom(i, i + len));
                i += len;
            }
        }
    }
    out
}

/// Writes [`LAST_RESULT`] where `$` stands as a sequence set in the complete `command` named
/// `name` (after UID): the first argument of FETCH, STORE, COPY, MOVE and UID EXPUNGE, and any
/// search key of SEARCH, SORT and THREAD except the argument of a key that takes a string or a
/// keyword (`SUBJECT $`, `KEYWORD $`). None when there is no such `$`.
fn mark_last_result(command: &[u8], name: &[u8]) -> Result<Option<Vec<u8>>, Refusal> {
    // LIST and STATUS take no sequence set: a `$` there is a mailbox name.
    let takes_set =
        matches!(name, b"FETCH" | b"STORE" | b"COPY" | b"MOVE" | b"EXPUNGE" | b"SEARCH" | b"SORT" | b"THREAD");
    if !takes_set || !command.contains(&b'$') {
        return Ok(None);
    }
    let words = words(command);
    let atom = |w: Option<&Word>| match w {
        Some(Word::Atom(a, b)) => Some(&command[*a..*b]),
        _ => None,
    };
    // The arguments start after the tag, the name and UID.
    let uid = atom(words.get(1)).is_some_and(|w| w.eq_ignore_ascii_case(b"UID"));
    let first = if uid { 3 } else { 2 };
    let criteria = matches!(name, b"SEARCH" | b"SORT" | b"THREAD");
    let mut spans = Vec::new();
    for (n, word) in words.iter().enumerate().skip(first) {
        let Word::Atom(a, b) = *word else { continue };
        let text = &command[a..b];
        let set_position = if criteria {
            let after = |back: usize| {
                n.checked_sub(back).and_then(|k| atom(words.get(k))).is_some_and(|w| {
                    STRING_KEYS.iter().any(|key| w.eq_ignore_ascii_case(key))
                        && (back == 1 || w.eq_ignore_ascii_case(b"HEADER"))
                })
            };
            // HEADER takes two strings: the field name and the value.
            !after(1) && !after(2)
        } else {
            n == first
        };
        if !set_position {
            continue;
        }
        let looks_like_set = text.iter().all(|c| c.is_ascii_digit() || matches!(c, b'*' | b':' | b',' | b'$'));
        if text == b"$" {
            spans.push((a, b));
        } else if looks_like_set && text.contains(&b'$') {
            return Err(Refusal::Joined);
        }
    }
    if spans.is_empty() {
        return Ok(None);
    }
    if words.iter().any(|w| atom(Some(w)) == Some(LAST_RESULT)) {
        return Err(Refusal::Ambiguous);
    }
    let mut out = Vec::with_capacity(command.len() + spans.len() * LAST_RESULT.len());
    let mut from = 0;
    for (a, b) in spans {
        out.extend_from_slice(&command[from..a]);
        out.extend_from_slice(LAST_RESULT);
        from = b;
    }
    out.extend_from_slice(&command[from..]);
    Ok(Some(out))
}

/// Where the command at the start of `input` ends, once all of it (literals included) is here.
fn frame(input: &[u8], tag: &Tag<'static>) -> Result<usize, Error> {
    let mut pos = 0;
    loop {
        let Some(nl) = input[pos..].iter().position(|b| *b == b'\n') else { return Err(Error::Incomplete) };
        let line = &input[pos..pos + nl];
        pos += nl + 1;
        let Some((length, mode)) = literal_at_end(line) else { return Ok(pos) };
        if pos == input.len() {
            return Err(Error::LiteralFound { tag: tag.clone(), length, mode });
        }
        pos = pos.saturating_add(length as usize);
        if pos > input.len() {
            return Err(Error::Incomplete);
        }
    }
}

/// The literal a line announces at its end (`{n}`, `{n+}`, literal8's `~{n}`), if any, with
/// whether the client waits for a continuation.
pub(crate) fn literal_at_end(line: &[u8]) -> Option<(u32, LiteralMode)> {
    let inner = line.strip_suffix(b"\r").unwrap_or(line).strip_suffix(b"}")?;
    let open = inner.iter().rposition(|b| *b == b'{')?;
    let digits = &inner[open + 1..];
    let (digits, mode) = match digits.strip_suffix(b"+") {
        Some(d) => (d, LiteralMode::NonSync),
        None => (digits, LiteralMode::Sync),
    };
    // A literal starts an argument: it follows a space, a parenthesis or literal8's tilde.
    let starts_argument = open > 0 && matches!(inner[open - 1], b' ' | b'(' | b'~');
    if !starts_argument || digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok().map(|n| (n, mode))
}

/// A token of a complete command.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Atom(Vec<u8>),
    String(Vec<u8>),
    Open,
    Close,
}

/// Splits a complete command (after its tag and name) into tokens; None on broken syntax.
fn tokens(input: &[u8]) -> Option<Vec<Token>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b' ' => i += 1,
            b'\r' | b'\n' => break,
            b'(' => {
                out.push(Token::Open);
                i += 1;
            }
            b')' => {
                out.push(Token::Close);
                i += 1;
            }
            b'"' => {
                let mut s = Vec::new();
                i += 1;
                loop {
                    match *input.get(i)? {
                        b'\\' => {
                            s.push(*input.get(i + 1)?);
                            i += 2;
                        }
                        b'"' => break,
                        b'\r' | b'\n' => return None,
                        b => {
                            s.push(b);
                            i += 1;
                        }
                    }
                }
                i += 1;
                out.push(Token::String(s));
            }
            b'{' => {
                let close = i + input[i..].iter().position(|b| *b == b'}')?;
                let digits = &input[i + 1..close];
                let digits = digits.strip_suffix(b"+").unwrap_or(digits);
                let n: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
                let start = close + 1 + input.get(close + 1..)?.strip_prefix(b"\r\n").map(|_| 2)?;
                out.push(Token::String(input.get(start..start + n)?.to_vec()));
                i = start + n;
            }
            _ => {
                let len = input[i..]
                    .iter()
                    .position(|b| matches!(b, b' ' | b'(' | b')' | b'"' | b'\r' | b'\n' | b'{'))
                    .unwrap_or(input.len() - i);
                out.push(Token::Atom(input[i..i + len].to_vec()));
                i += len;
            }
        }
    }
    Some(out)
}

fn is_word(t: Option<&Token>, word: &str) -> bool {
    matches!(t, Some(Token::Atom(a)) if a.eq_ignore_ascii_case(word.as_bytes()))
}

/// Reads a parenthesised list of atoms starting at `tokens[*i]` (which must be `(`).
fn atom_list(tokens: &[Token], i: &mut usize) -> Result<Vec<Vec<u8>>, Error> {
    if tokens.get(*i) != Some(&Token::Open) {
        return Err(Error::Failed);
    }
    *i += 1;
    let mut out = Vec::new();
    loop {
        match tokens.get(*i) {
            Some(Token::Close) => {
                *i += 1;
                return Ok(out);
            }
            Some(Token::Atom(a)) => {
                out.push(a.to_ascii_uppercase());
                *i += 1;
            }
            _ => return Err(Error::Failed),
        }
    }
}

/// One STATUS item name; MAILBOXID is reported apart, since the codec has no such item.
fn status_item(name: &[u8]) -> Option<Option<StatusDataItemName>> {
    Some(Some(match name {
        b"MESSAGES" => StatusDataItemName::Messages,
        b"RECENT" => StatusDataItemName::Recent,
        b"UIDNEXT" => StatusDataItemName::UidNext,
        b"UIDVALIDITY" => StatusDataItemName::UidValidity,
        b"UNSEEN" => StatusDataItemName::Unseen,
        b"DELETED" => StatusDataItemName::Deleted,
        b"DELETED-STORAGE" => StatusDataItemName::DeletedStorage,
        b"SIZE" => StatusDataItemName::Size,
        b"HIGHESTMODSEQ" => StatusDataItemName::HighestModSeq,
        b"MAILBOXID" => return Some(None),
        _ => return None,
    }))
}

/// Parses `tag LIST [(selection)] reference (pattern | (patterns)) [RETURN (options)]`.
fn parse_list(command: &[u8], tag: Tag<'static>) -> Result<ListCommand, Error> {
    // Skip the tag and the command name; the rest is tokens.
    let after_name =
        command.iter().enumerate().filter(|(_, b)| **b == b' ').nth(1).map(|(i, _)| i + 1).ok_or(Error::Failed)?;
    let tokens = tokens(&command[after_name..]).ok_or(Error::Failed)?;
    let mut list = ListCommand {
        tag,
        lsub: false,
        reference: Vec::new(),
        patterns: Vec::new(),
        select_subscribed: false,
        select_special_use: false,
        recursive_match: false,
        return_subscribed: false,
        return_status: None,
        return_mailbox_id: false,
        extended: true,
    };
    let mut i = 0;
    if tokens.first() == Some(&Token::Open) {
        for option in atom_list(&tokens, &mut i)? {
            match option.as_slice() {
                b"SUBSCRIBED" => list.select_subscribed = true,
                b"SPECIAL-USE" => list.select_special_use = true,
                b"RECURSIVEMATCH" => list.recursive_match = true,
                b"REMOTE" => {}
                _ => return Err(Error::Failed),
            }
        }
        // RECURSIVEMATCH alone means nothing (RFC 5258 section 3.1).
        if list.recursive_match && !list.select_subscribed && !list.select_special_use {
            return Err(Error::Failed);
        }
    }
    list.reference = match tokens.get(i) {
        Some(Token::Atom(a) | Token::String(a)) => a.clone(),
        _ => return Err(Error::Failed),
    };
    i += 1;
    match tokens.get(i) {
        Some(Token::Atom(a) | Token::String(a)) => {
            list.patterns.push(a.clone());
            i += 1;
        }
        Some(Token::Open) => {
            i += 1;
            loop {
                match tokens.get(i) {
                    Some(Token::Atom(a) | Token::String(a)) => list.patterns.push(a.clone()),
                    Some(Token::Close) if !list.patterns.is_empty() => break,
                    _ => return Err(Error::Failed),
                }
                i += 1;
            }
            i += 1;
        }
        _ => return Err(Error::Failed),
    }
    if is_word(tokens.get(i), "RETURN") {
        i += 1;
        if tokens.get(i) != Some(&Token::Open) {
            return Err(Error::Failed);
        }
        i += 1;
        loop {
            match tokens.get(i) {
                Some(Token::Close) => {
                    i += 1;
                    break;
                }
                Some(Token::Atom(a)) => {
                    match a.to_ascii_uppercase().as_slice() {
                        b"SUBSCRIBED" => list.return_subscribed = true,
                        b"CHILDREN" | b"SPECIAL-USE" => {}
                        b"STATUS" => {
                            i += 1;
                            let mut items = Vec::new();
                            for name in atom_list(&tokens, &mut i)? {
                                match status_item(&name).ok_or(Error::Failed)? {
                                    Some(item) => items.push(item),
                                    None => list.return_mailbox_id = true,
                                }
                            }
                            list.return_status = Some(items);
                            continue;
                        }
                        _ => return Err(Error::Failed),
                    }
                    i += 1;
                }
                _ => return Err(Error::Failed),
            }
        }
    }
    if i != tokens.len() {
        return Err(Error::Failed);
    }
    Ok(list)
}

/// The codec's decoding of a rewritten command, which must use all of it.
fn codec(rewritten: &[u8], extras: Extras) -> Result<Decoded, Error> {
    match CommandCodec::default().decode(rewritten) {
        Ok(([], command)) => Ok(Decoded::Command(command.into_static(), extras)),
        _ => Err(Error::Failed),
    }
}

/// Where the word after `name` starts in the first line (`name` is SEARCH, FETCH or STATUS).
fn after_word(command: &[u8], name: &[u8]) -> Option<usize> {
    let mut spaces = command.iter().enumerate().filter(|(_, b)| **b == b' ').map(|(i, _)| i);
    let first = spaces.next()?;
    let second = spaces.next()?;
    let word = &command[first + 1..second];
    if word.eq_ignore_ascii_case(name) {
        return Some(second + 1);
    }
    // UID SEARCH, UID FETCH.
    let third = spaces.next()?;
    command[second + 1..third].eq_ignore_ascii_case(name).then_some(third + 1)
}

/// `SEARCH RETURN (options) criteria` becomes `SEARCH criteria`, and `SORT RETURN (options)
/// ...` (ESORT, RFC 5267) becomes `SORT ...`.
fn rewrite_search(command: &[u8], word: &[u8]) -> Result<Decoded, Error> {
    let start = after_word(command, word).ok_or(Error::Failed)?;
    let rest = &command[start..];
    if rest.len() < 8 || !rest[..8].eq_ignore_ascii_case(b"RETURN (") {
        return Err(Error::Failed);
    }
    let close = rest.iter().position(|b| *b == b')').ok_or(Error::Failed)?;
    let mut options = SearchReturn::default();
    let mut list = rest[8..close].split(|b| *b == b' ').filter(|o| !o.is_empty());
    while let Some(option) = list.next() {
        match option.to_ascii_uppercase().as_slice() {
            b"MIN" => options.min = true,
            b"MAX" => options.max = true,
            b"COUNT" => options.count = true,
            b"ALL" => options.all = true,
            b"SAVE" => options.save = true,
            b"UPDATE" => options.update = true,
            b"CONTEXT" => {}
            // One PARTIAL at most, never with ALL (RFC 9394 section 3.1).
            b"PARTIAL" if options.partial.is_none() => {
                options.partial = Some(list.next().and_then(Partial::parse).ok_or(Error::Failed)?);
            }
            _ => return Err(Error::Failed),
        }
    }
    if options.partial.is_some() && options.all {
        return Err(Error::Failed);
    }
    // RETURN () means ALL (RFC 4731 section 3.1); RETURN (SAVE) and RETURN (UPDATE) return
    // nothing.
    if !options.returns_anything() && !options.save && !options.update {
        options.all = true;
    }
    let criteria = rest.get(close + 1..).and_then(|r| r.strip_prefix(b" ")).ok_or(Error::Failed)?;
    let mut rewritten = command[..start].to_vec();
    rewritten.extend_from_slice(criteria);
    codec(&rewritten, Extras { search: Some(options), ..Extras::default() })
}

/// Splits a parenthesised FETCH item list (without its parentheses) into its items: spaces
/// inside `[...]` and `(...)` (HEADER.FIELDS lists) do not separate items.
fn fetch_items(list: &[u8]) -> Vec<&[u8]> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, b) in list.iter().enumerate() {
        match b {
            b'[' | b'(' => depth += 1,
            b']' | b')' => depth -= 1,
            b' ' if depth == 0 => {
                items.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&list[start..]);
    items.into_iter().filter(|i| !i.is_empty()).collect()
}

/// Where the one FETCH item at the start of `rest` (written without parentheses) ends: spaces
/// inside `[...]` and `(...)` (`BODY[HEADER.FIELDS (FROM TO)]`) do not end it.
fn item_end(rest: &[u8]) -> usize {
    let mut depth = 0i32;
    rest.iter()
        .position(|b| {
            match b {
                b'[' | b'(' => depth += 1,
                b']' | b')' => depth -= 1,
                _ => {}
            }
            depth <= 0 && matches!(b, b' ' | b'\r' | b'\n')
        })
        .unwrap_or(rest.len())
}

/// What the modifier list of a FETCH (` (CHANGEDSINCE 4 PARTIAL 1:50)`) holds once PARTIAL is
/// taken out of it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Modifiers {
    /// The other modifiers, written back for the codec (` (CHANGEDSINCE 4)`), or nothing when
    /// PARTIAL was the only one.
    kept: Vec<u8>,
    partial: Option<Partial>,
}

/// Why a FETCH modifier list is refused with a text of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum ModifierError {
    #[error("PARTIAL needs a range, such as 1:50 or -1:-50")]
    MissingRange,
    #[error("PARTIAL can be given only once")]
    Twice,
    #[error(transparent)]
    Range(#[from] RangeError),
}

/// Takes PARTIAL (RFC 9394 section 3.3) out of `tail`, what follows a FETCH's item list: a
/// modifier list or nothing, then the line end. None when `tail` is neither, which the codec
/// then refuses; the order of the modifiers does not matter (RFC 9394 section 3.4).
fn fetch_modifiers(tail: &[u8]) -> Option<Result<Modifiers, ModifierError>> {
    // The line end is kept as the client sent it, so the codec judges it as before.
    let line = tail.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let ending = &tail[line.len()..];
    let Some(list) = line.strip_prefix(b" (").and_then(|l| l.strip_suffix(b")")) else {
        return Some(Ok(Modifiers { kept: tail.to_vec(), partial: None }));
    };
    // The modifiers known here are atoms and numbers: a parenthesis or a quote inside is
    // something else, left to the codec.
    if list.iter().any(|b| matches!(b, b'(' | b')' | b'"' | b'{')) {
        return None;
    }
    let mut words = list.split(|b| *b == b' ');
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut partial = None;
    while let Some(word) = words.next() {
        if !word.eq_ignore_ascii_case(b"PARTIAL") {
            kept.push(word);
            continue;
        }
        if partial.is_some() {
            return Some(Err(ModifierError::Twice));
        }
        let range = match words.next() {
            None | Some(b"") => return Some(Err(ModifierError::MissingRange)),
            Some(range) => range,
        };
        partial = Some(match Partial::check(range) {
            Ok(p) => p,
            Err(e) => return Some(Err(e.into())),
        });
    }
    let mut out = Vec::new();
    if !kept.is_empty() {
        out.extend_from_slice(b" (");
        out.extend_from_slice(&kept.join(&b' '));
        out.push(b')');
    }
    out.extend_from_slice(ending);
    Some(Ok(Modifiers { kept: out, partial }))
}

/// `FETCH set (... EMAILID THREADID ...)` becomes the FETCH without them, and `FETCH set items
/// (PARTIAL range ...)` the FETCH without PARTIAL.
fn rewrite_fetch(command: &[u8], tag: &Tag<'static>) -> Result<Decoded, Error> {
    let start = after_word(command, b"FETCH").ok_or(Error::Failed)?;
    let set_end = start + command[start..].iter().position(|b| *b == b' ').ok_or(Error::Failed)?;
    let items_start = set_end + 1;
    let rest = &command[items_start..];
    let mut extras = Extras::default();
    let object_id = |item: &[u8], extras: &mut Extras| {
        if item.eq_ignore_ascii_case(b"EMAILID") {
            extras.email_id = true;
        } else if item.eq_ignore_ascii_case(b"THREADID") {
            extras.thread_id = true;
        } else if item.eq_ignore_ascii_case(b"PREVIEW") {
            extras.preview = true;
        } else if item.eq_ignore_ascii_case(b"SAVEDATE") {
            extras.save_date = true;
        } else if extras.preview && item.eq_ignore_ascii_case(b"(LAZY)") {
            // PREVIEW's one modifier: Tern always has the preview at hand, so LAZY changes
            // nothing.
        } else {
            return false;
        }
        true
    };
    let (kept, tail): (Vec<u8>, &[u8]) = if rest.first() == Some(&b'(') {
        // The matching parenthesis of the item list.
        let mut depth = 0;
        let close = rest
            .iter()
            .position(|b| {
                match b {
                    b'(' | b'[' => depth += 1,
                    b')' | b']' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .ok_or(Error::Failed)?;
        let items: Vec<&[u8]> =
            fetch_items(&rest[1..close]).into_iter().filter(|i| !object_id(i, &mut extras)).collect();
        let kept = if items.is_empty() {
            extras.placeholder = true;
            b"(UID)".to_vec()
        } else {
            let mut k = b"(".to_vec();
            k.extend_from_slice(&items.join(&b' '));
            k.push(b')');
            k
        };
        (kept, &rest[close + 1..])
    } else {
        let len = item_end(rest);
        if object_id(&rest[..len], &mut extras) {
            extras.placeholder = true;
            (b"UID".to_vec(), &rest[len..])
        } else {
            // A plain item or macro (FLAGS, FAST), kept as it is for the codec.
            (rest[..len].to_vec(), &rest[len..])
        }
    };
    let tail = match fetch_modifiers(tail) {
        Some(Ok(modifiers)) => {
            extras.partial = modifiers.partial;
            modifiers.kept
        }
        Some(Err(e)) => return Ok(Decoded::Refused { tag: tag.clone(), text: e.to_string() }),
        None => tail.to_vec(),
    };
    if !extras.email_id && !extras.thread_id && !extras.preview && !extras.save_date && extras.partial.is_none() {
        return Err(Error::Failed);
    }
    let mut rewritten = command[..items_start].to_vec();
    rewritten.extend_from_slice(&kept);
    rewritten.extend_from_slice(&tail);
    codec(&rewritten, extras)
}

/// `STATUS mailbox (... MAILBOXID ...)` becomes the STATUS without it.
fn rewrite_status(command: &[u8]) -> Result<Decoded, Error> {
    // The item list is the last parenthesised group of the last line: a mailbox name (quoted or
    // a literal) comes before it.
    let line_start = command[..command.len().saturating_sub(1)].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let open = line_start + command[line_start..].iter().rposition(|b| *b == b'(').ok_or(Error::Failed)?;
    let close = open + command[open..].iter().position(|b| *b == b')').ok_or(Error::Failed)?;
    let mut extras = Extras::default();
    let items: Vec<&[u8]> = command[open + 1..close]
        .split(|b| *b == b' ')
        .filter(|i| !i.is_empty())
        .filter(|i| {
            let id = i.eq_ignore_ascii_case(b"MAILBOXID");
            extras.mailbox_id |= id;
            !id
        })
        .collect();
    if !extras.mailbox_id {
        return Err(Error::Failed);
    }
    let mut rewritten = command[..=open].to_vec();
    if items.is_empty() {
        extras.placeholder = true;
        rewritten.extend_from_slice(b"MESSAGES");
    } else {
        rewritten.extend_from_slice(&items.join(&b' '));
    }
    rewritten.extend_from_slice(&command[close..]);
    codec(&rewritten, extras)
}

#[cfg(test)]
mod tests {
    use imap_codec::imap_types::{command::FetchModifier, search::SearchKey};

    use super::*;

    fn list(input: &str) -> ListCommand {
        match decode(input.as_bytes()) {
            Ok((used, Decoded::List(l))) => {
                assert_eq!(used, input.len());
                l
            }
            other => panic!("{input:?}: {other:?}"),
        }
    }

    fn extras(input: &str) -> (Command<'static>, Extras) {
        match decode(input.as_bytes()) {
            Ok((used, Decoded::Command(c, e))) => {
                assert_eq!(used, input.len());
                (c, e)
            }
            other => panic!("{input:?}: {other:?}"),
        }
    }

    #[test]
    fn basic_list_and_lsub_are_list_commands() {
        let l = list("a LIST \"\" \"*\"\r\n");
        assert!(!l.extended && !l.lsub);
        assert_eq!(l.patterns, vec![b"*".to_vec()]);
        let l = list("a LSUB \"\" %\r\n");
        assert!(l.lsub);
    }

    #[test]
    fn extended_list() {
        let l = list(
            "a LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (\"INBOX\" %/x {3+}\r\nS/%) RETURN (CHILDREN STATUS (MESSAGES MAILBOXID SIZE))\r\n",
        );
        assert!(l.extended && l.select_subscribed && l.recursive_match);
        assert_eq!(l.patterns, vec![b"INBOX".to_vec(), b"%/x".to_vec(), b"S/%".to_vec()]);
        assert_eq!(l.return_status, Some(vec![StatusDataItemName::Messages, StatusDataItemName::Size]));
        assert!(l.return_mailbox_id);
        let l = list("a list \"\" \"*\" return (subscribed special-use)\r\n");
        assert!(l.return_subscribed && l.return_status.is_none());
        let l = list("a LIST () \"\" \"*\" RETURN ()\r\n");
        assert!(l.extended);
    }

    #[test]
    fn bad_extended_list() {
        for input in [
            "a LIST (RECURSIVEMATCH) \"\" *\r\n",
            "a LIST (BOGUS) \"\" *\r\n",
            "a LIST \"\" * RETURN (BOGUS)\r\n",
            "a LIST \"\" * RETURN (STATUS (NOPE))\r\n",
            "a LIST \"\" () \r\n",
            "a LIST \"\" * RETURN\r\n",
            "a LIST \"\" * extra\r\n",
            "a LIST (\r\n",
        ] {
            assert!(matches!(decode(input.as_bytes()), Err(Error::Failed)), "{input:?}");
        }
    }

    #[test]
    fn split_extended_list_waits_for_more() {
        let input = b"a LIST (SUBSCRIBED) \"\" {3}\r\nabc RETURN (CHILDREN)\r\n";
        for cut in 1..input.len() {
            match decode(&input[..cut]) {
                Err(Error::Incomplete | Error::LiteralFound { .. }) => {}
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        assert!(matches!(decode(&input[..28]), Err(Error::LiteralFound { length: 3, .. })));
    }

    #[test]
    fn search_return() {
        let (c, e) = extras("a UID SEARCH RETURN (MIN COUNT) UNSEEN\r\n");
        assert!(matches!(c.body, CommandBody::Search { uid: true, .. }));
        assert_eq!(e.search, Some(SearchReturn { min: true, count: true, ..Default::default() }));
        let (_, e) = extras("a SEARCH RETURN () ALL\r\n");
        assert_eq!(e.search, Some(SearchReturn { all: true, ..Default::default() }));
        let (_, e) = extras("a SEARCH RETURN (SAVE) ALL\r\n");
        let save = e.search.unwrap();
        assert!(save.save && !save.returns_anything(), "SAVE alone returns nothing: {save:?}");
        let (_, e) = extras("a SEARCH RETURN (save min) ALL\r\n");
        assert_eq!(e.search, Some(SearchReturn { save: true, min: true, ..Default::default() }));
        assert!(decode(b"a SEARCH RETURN (MIN)\r\n").is_err());
        let (c, e) = extras("a UID SORT RETURN (MIN MAX) (DATE) UTF-8 ALL\r\n");
        assert!(matches!(c.body, CommandBody::Sort { uid: true, .. }));
        assert_eq!(e.search, Some(SearchReturn { min: true, max: true, ..Default::default() }));
        let (_, e) = extras("a SORT RETURN (PARTIAL 5:1) (DATE) UTF-8 ALL\r\n");
        let partial = Partial { text: "5:1".into(), first: 1, last: 5, from_end: false };
        assert_eq!(e.search, Some(SearchReturn { partial: Some(partial), ..Default::default() }));
    }

    #[test]
    fn partial_ranges() {
        let (_, e) = extras("a UID SEARCH RETURN (SAVE partial -1:-100 COUNT) UNSEEN\r\n");
        let options = e.search.unwrap();
        assert!(options.save && options.count && options.returns_anything() && options.saves_every_match());
        assert_eq!(options.partial, Some(Partial { text: "-1:-100".into(), first: 1, last: 100, from_end: true }));
        let (_, e) = extras("a SEARCH RETURN (PARTIAL 2:3 MIN) ALL\r\n");
        assert!(!e.search.unwrap().saves_every_match());
        for input in [
            "a SEARCH RETURN (PARTIAL 1:5 ALL) ALL\r\n",
            "a SEARCH RETURN (ALL PARTIAL 1:5) ALL\r\n",
            "a SEARCH RETURN (PARTIAL 1:5 PARTIAL 6:9) ALL\r\n",
            "a SEARCH RETURN (PARTIAL) ALL\r\n",
            "a SEARCH RETURN (PARTIAL 0:5) ALL\r\n",
            "a SEARCH RETURN (PARTIAL 1:*) ALL\r\n",
            "a SEARCH RETURN (PARTIAL -1:5) ALL\r\n",
            "a SEARCH RETURN (PARTIAL 5) ALL\r\n",
            "a SEARCH RETURN (PARTIAL 1:4294967296) ALL\r\n",
            "a SEARCH RETURN (PARTIAL 01:5) ALL\r\n",
        ] {
            assert!(matches!(decode(input.as_bytes()), Err(Error::Failed)), "{input:?}");
        }
        let page = |text: &str, n: u32| -> Vec<u32> {
            let results: Vec<u32> = (1..=n).collect();
            Partial::parse(text.as_bytes()).unwrap().select(&results).to_vec()
        };
        assert_eq!(page("1:2", 5), [1, 2]);
        assert_eq!(page("4:9", 5), [4, 5]);
        assert_eq!(page("6:9", 5), [] as [u32; 0]);
        assert_eq!(page("-1:-2", 5), [4, 5]);
        assert_eq!(page("-2:-1", 5), [4, 5]);
        assert_eq!(page("-4:-100", 5), [1, 2]);
        assert_eq!(page("-6:-9", 5), [] as [u32; 0]);
        assert_eq!(page("-1:-4294967295", 3), [1, 2, 3]);
        assert_eq!(page("4294967295:4294967295", 3), [] as [u32; 0]);
    }

    /// How many of a command's sequence sets are `$`.
    fn last_results(c: &Command<'static>) -> usize {
        fn keys(list: &[SearchKey<'_>]) -> usize {
            list.iter()
                .map(|k| match k {
                    SearchKey::SequenceSet(s) | SearchKey::Uid(s) => usize::from(is_last_result(s)),
                    SearchKey::And(ks) => keys(ks.as_ref()),
                    SearchKey::Not(k) => keys(std::slice::from_ref(k)),
                    SearchKey::Or(a, b) => keys(std::slice::from_ref(a)) + keys(std::slice::from_ref(b)),
                    _ => 0,
                })
                .sum()
        }
        match &c.body {
            CommandBody::Fetch { sequence_set, .. }
            | CommandBody::Store { sequence_set, .. }
            | CommandBody::Copy { sequence_set, .. }
            | CommandBody::Move { sequence_set, .. }
            | CommandBody::ExpungeUid { sequence_set } => usize::from(is_last_result(sequence_set)),
            CommandBody::Search { criteria, .. } => keys(criteria.as_ref()),
            CommandBody::Sort { search_criteria, .. } | CommandBody::Thread { search_criteria, .. } => {
                keys(search_criteria.as_ref())
            }
            _ => 0,
        }
    }

    #[test]
    fn last_result_as_a_sequence_set() {
        for (input, count) in [
            ("a FETCH $ (FLAGS)\r\n", 1),
            ("a uid fetch $ FLAGS\r\n", 1),
            // A `$` keyword in the flag list stays a keyword.
            ("a STORE $ +FLAGS ($)\r\n", 1),
            ("a UID COPY $ Trash\r\n", 1),
            ("a MOVE $ \"$\"\r\n", 1),
            ("a UID EXPUNGE $\r\n", 1),
            ("a SEARCH $ OR UID $ NOT ($) SUBJECT $ HEADER $ $ KEYWORD $\r\n", 3),
            ("a SEARCH SUBJECT {1+}\r\n$ $\r\n", 1),
            ("a SEARCH SUBJECT \"$ x\" $\r\n", 1),
            ("a UID SORT (DATE) UTF-8 $\r\n", 1),
            ("a THREAD REFERENCES UTF-8 $ UNSEEN\r\n", 1),
        ] {
            let (c, e) = extras(input);
            assert!(e.last_result, "{input:?}");
            assert_eq!(last_results(&c), count, "{input:?}");
        }
        // With the extensions rewritten away: RETURN options, EMAILID.
        let (c, e) = extras("a UID SEARCH RETURN (SAVE MIN) $ UNSEEN\r\n");
        assert!(e.last_result && e.search.as_ref().is_some_and(|s| s.save && s.min));
        assert_eq!(last_results(&c), 1);
        let (c, e) = extras("a SORT RETURN (SAVE) (SUBJECT) UTF-8 $\r\n");
        assert!(e.last_result && e.search.is_some_and(|s| s.save));
        assert_eq!(last_results(&c), 1);
        let (c, e) = extras("a UID FETCH $ (UID EMAILID)\r\n");
        assert!(e.last_result && e.email_id);
        assert_eq!(last_results(&c), 1);
        // A command without `$` says nothing of it, even with `$` keywords and strings.
        let (_, e) = extras("a SEARCH KEYWORD $ SUBJECT $\r\n");
        assert!(!e.last_result);
        // Where a mailbox name goes, `$` is a mailbox name.
        let (c, e) = extras("a STATUS $ (MAILBOXID)\r\n");
        assert!(e.mailbox_id && !e.last_result);
        assert!(matches!(c.body, CommandBody::Status { mailbox: Mailbox::Other(m), .. } if m.as_ref() == b"$"));
        assert_eq!(list("a LIST $ * RETURN (CHILDREN)\r\n").reference, b"$");
        let (c, e) = extras("a COPY $ $\r\n");
        assert!(e.last_result && last_results(&c) == 1);
        assert!(matches!(c.body, CommandBody::Copy { mailbox: Mailbox::Other(m), .. } if m.as_ref() == b"$"));
    }

    #[test]
    fn last_result_joined_to_numbers_is_refused() {
        for input in [
            "a FETCH $:3 FLAGS\r\n",
            "a UID FETCH 1,$ FLAGS\r\n",
            "a STORE $,1 +FLAGS (\\Seen)\r\n",
            "a SEARCH UID 1:$\r\n",
            "a SEARCH $$\r\n",
            "a UID FETCH $ FLAGS\r\nb NOOP\r\n",
            "a SEARCH *:*,* $\r\n",
        ] {
            match decode(input.as_bytes()) {
                Ok((used, Decoded::Refused { tag, text })) => {
                    assert_eq!(tag.inner(), "a");
                    assert!(text.contains('$'), "{text}");
                    assert_eq!(used, input.find('\n').unwrap() + 1, "{input:?}");
                }
                Ok((used, Decoded::Command(c, e))) if input.contains("NOOP") => {
                    // The one well-formed command of the list: only the first line is used.
                    assert!(e.last_result && last_results(&c) == 1);
                    assert_eq!(used, input.find('\n').unwrap() + 1);
                }
                other => panic!("{input:?}: {other:?}"),
            }
        }
        // `$` where no sequence set goes is a plain syntax error.
        for input in ["a FETCH 1 $\r\n", "a SEARCH LARGER $\r\n", "a EXPUNGE $\r\n", "a NOOP $\r\n"] {
            assert!(matches!(decode(input.as_bytes()), Err(Error::Failed)), "{input:?}");
        }
    }

    #[test]
    fn multiappend_and_catenate_cut_anywhere_wait_for_more_then_decode_whole() {
        let input: &[u8] = b"a APPEND INBOX (\\Seen) {5}\r\nhello \"01-Jan-2024 10:00:00 +0000\" CATENATE (TEXT {3+}\r\nab) URL \"/INBOX/;UID=1\") ~{2}\r\nhi\r\nb NOOP\r\n";
        let end = input.len() - b"b NOOP\r\n".len();
        for cut in 1..end {
            match decode(&input[..cut]) {
                Err(Error::Incomplete) => {}
                // Announced at the very end of what is here: the session asks for it.
                Err(Error::LiteralFound { length, .. }) => assert!(matches!(length, 5 | 3 | 2), "cut at {cut}"),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        let Ok((used, Decoded::Append(command))) = decode(input) else { panic!("{:?}", decode(input)) };
        assert_eq!(used, end);
        assert_eq!(command.messages.len(), 3);
        assert_eq!(command.messages[1].parts.len(), 2);
        assert_eq!(command.messages[2].parts, vec![crate::append::CatPart::Text(b"hi".to_vec())]);
        // A broken one is refused with why, and only its own bytes are used.
        let broken = b"a APPEND INBOX {1+}\r\nx CATENATE (BODY x)\r\nb NOOP\r\n";
        let Ok((used, Decoded::Refused { text, .. })) = decode(broken) else { panic!() };
        assert!(text.contains("CATENATE part"), "{text}");
        assert_eq!(&broken[used..], b"b NOOP\r\n");
    }

    #[test]
    fn split_last_result_waits_for_more() {
        let input = b"a UID FETCH $ (FLAGS)\r\n";
        for cut in 1..input.len() {
            assert!(matches!(decode(&input[..cut]), Err(Error::Incomplete)), "cut at {cut}");
        }
        let input = b"a SEARCH SUBJECT {1}\r\n$ $\r\n";
        for cut in 1..input.len() {
            assert!(
                matches!(decode(&input[..cut]), Err(Error::Incomplete | Error::LiteralFound { .. })),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn fetch_preview() {
        let (c, e) = extras("a FETCH 1:* (UID PREVIEW (LAZY) FLAGS)\r\n");
        assert!(e.preview && !e.placeholder && !e.email_id);
        assert!(matches!(c.body, CommandBody::Fetch { .. }));
        let (_, e) = extras("a UID FETCH 1 PREVIEW\r\n");
        assert!(e.preview && e.placeholder);
        let (_, e) = extras("a FETCH 2 (PREVIEW)\r\n");
        assert!(e.preview && e.placeholder);
        // LAZY belongs to PREVIEW, not to the item list on its own.
        assert!(decode(b"a FETCH 1 (UID (LAZY))\r\n").is_err());
    }

    #[test]
    fn fetch_object_ids() {
        let (c, e) = extras("a FETCH 1:* (FLAGS EMAILID BODY.PEEK[HEADER.FIELDS (FROM TO)] THREADID)\r\n");
        assert!(e.email_id && e.thread_id && !e.placeholder);
        assert!(matches!(c.body, CommandBody::Fetch { .. }));
        let (_, e) = extras("a UID FETCH 1 EMAILID\r\n");
        assert!(e.email_id && e.placeholder);
        let (_, e) = extras("a UID FETCH 1 (emailid) (CHANGEDSINCE 4)\r\n");
        assert!(e.email_id && e.placeholder);
        assert!(decode(b"a FETCH 1 (BOGUS)\r\n").is_err());
    }

    #[test]
    fn fetch_partial() {
        let window = |text: &str, first, last, from_end| Some(Partial { text: text.into(), first, last, from_end });
        let (c, e) = extras("a UID FETCH 1:* (FLAGS) (PARTIAL -1:-30)\r\n");
        assert!(matches!(&c.body, CommandBody::Fetch { uid: true, modifiers, .. } if modifiers.is_empty()));
        assert_eq!(e.partial, window("-1:-30", 1, 30, true));
        assert!(!e.placeholder && !e.email_id);
        // Lower case, a single item, a macro, an item with spaces inside its brackets.
        let (c, e) = extras("a fetch 1:5 flags (partial 5:2)\r\n");
        assert!(matches!(c.body, CommandBody::Fetch { uid: false, .. }));
        assert_eq!(e.partial, window("5:2", 2, 5, false));
        let (_, e) = extras("a FETCH 1:* FAST (PARTIAL 1:1)\r\n");
        assert_eq!(e.partial, window("1:1", 1, 1, false));
        let (_, e) = extras("a FETCH 1:* BODY.PEEK[HEADER.FIELDS (FROM TO)] (PARTIAL 1:2)\r\n");
        assert_eq!(e.partial, window("1:2", 1, 2, false));
        // With CHANGEDSINCE and VANISHED, in either order: those stay the codec's.
        for input in [
            "a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 4 PARTIAL 1:2 VANISHED)\r\n",
            "a UID FETCH 1:* (FLAGS) (PARTIAL 1:2 CHANGEDSINCE 4 VANISHED)\r\n",
        ] {
            let (c, e) = extras(input);
            let CommandBody::Fetch { modifiers, .. } = &c.body else { panic!("{input:?}: {c:?}") };
            assert_eq!(modifiers.len(), 2, "{input:?}");
            assert!(modifiers.iter().any(|m| matches!(m, FetchModifier::ChangedSince(v) if v.get() == 4)));
            assert!(modifiers.iter().any(|m| matches!(m, FetchModifier::Vanished)));
            assert_eq!(e.partial, window("1:2", 1, 2, false));
        }
        // With the OBJECTID items and `$`.
        let (_, e) = extras("a UID FETCH 1:* (EMAILID) (PARTIAL -1:-1)\r\n");
        assert!(e.email_id && e.placeholder && e.partial.is_some());
        let (c, e) = extras("a UID FETCH $ (UID) (PARTIAL 1:10)\r\n");
        assert!(e.last_result && e.partial.is_some());
        assert_eq!(last_results(&c), 1);
        // Other modifiers keep their meaning: no PARTIAL, no extras.
        let (_, e) = extras("a UID FETCH 1 (FLAGS) (CHANGEDSINCE 4)\r\n");
        assert_eq!(e, Extras::default());
    }

    #[test]
    fn fetch_partial_refused_with_a_reason() {
        for (input, reason) in [
            ("a FETCH 1:* (FLAGS) (PARTIAL 0:5)\r\n", RangeError::Zero.to_string()),
            ("a FETCH 1:* (FLAGS) (PARTIAL 1:0)\r\n", RangeError::Zero.to_string()),
            ("a FETCH 1:* (FLAGS) (PARTIAL -0:-1)\r\n", RangeError::Zero.to_string()),
            ("a FETCH 1:* (FLAGS) (PARTIAL -1:5)\r\n", RangeError::MixedSigns.to_string()),
            ("a FETCH 1:* (FLAGS) (PARTIAL 1:-5)\r\n", RangeError::MixedSigns.to_string()),
            ("a UID FETCH 1:* FLAGS (PARTIAL 1:4294967296)\r\n", RangeError::TooLarge.to_string()),
            ("a UID FETCH 1:* FLAGS (PARTIAL -99999999999999999999:-1)\r\n", RangeError::TooLarge.to_string()),
            ("a FETCH 1:* (FLAGS) (PARTIAL 1:*)\r\n", RangeError::Malformed.to_string()),
            ("a FETCH 1:* (FLAGS) (PARTIAL 5)\r\n", RangeError::Malformed.to_string()),
            ("a FETCH 1:* (FLAGS) (PARTIAL 01:5)\r\n", RangeError::Malformed.to_string()),
            ("a FETCH 1:* (FLAGS) (PARTIAL 1:2:3)\r\n", RangeError::Malformed.to_string()),
            ("a FETCH 1:* (FLAGS) (PARTIAL --1:--2)\r\n", RangeError::Malformed.to_string()),
            ("a FETCH 1:* (FLAGS) (PARTIAL \u{e9}:1)\r\n", RangeError::Malformed.to_string()),
            ("a FETCH 1:* (FLAGS) (PARTIAL)\r\n", ModifierError::MissingRange.to_string()),
            ("a FETCH 1:* (FLAGS) (CHANGEDSINCE 1 PARTIAL)\r\n", ModifierError::MissingRange.to_string()),
            ("a FETCH 1:* (FLAGS) (PARTIAL 1:2 PARTIAL 1:2)\r\n", ModifierError::Twice.to_string()),
            ("a FETCH 1:* (FLAGS) (PARTIAL 1:2 CHANGEDSINCE 3 partial -1:-2)\r\n", ModifierError::Twice.to_string()),
        ] {
            match decode(input.as_bytes()) {
                Ok((used, Decoded::Refused { tag, text })) => {
                    assert_eq!(tag.inner(), "a");
                    assert_eq!(text, reason, "{input:?}");
                    assert_eq!(used, input.len());
                }
                other => panic!("{input:?}: {other:?}"),
            }
        }
        // What is wrong besides PARTIAL stays a syntax error.
        for input in [
            "a FETCH 1:* (FLAGS) (PARTIAL 1:2 CHANGEDSINCE 0)\r\n",
            "a FETCH 1:* (FLAGS) (PARTIAL 1:2 BOGUS)\r\n",
            "a FETCH 1:* (FLAGS) (PARTIAL 1:2\r\n",
            "a FETCH 1:* (FLAGS) (PARTIAL \"1:2\")\r\n",
            "a FETCH 1:* (FLAGS) PARTIAL 1:2\r\n",
            "a FETCH 1:* (BOGUS) (PARTIAL 1:2)\r\n",
            "a FETCH 1:* (FLAGS) (PARTIAL 1:2)\n",
            "a STORE 1 FLAGS () (PARTIAL 1:2)\r\n",
        ] {
            assert!(matches!(decode(input.as_bytes()), Err(Error::Failed)), "{input:?}");
        }
    }

    #[test]
    fn split_fetch_partial_waits_for_more() {
        let input = b"a UID FETCH 1:* (FLAGS) (PARTIAL -1:-30)\r\n";
        for cut in 1..input.len() {
            assert!(matches!(decode(&input[..cut]), Err(Error::Incomplete)), "cut at {cut}");
        }
    }

    #[test]
    fn status_mailbox_id() {
        let (c, e) = extras("a STATUS \"a (b\" (MESSAGES MAILBOXID)\r\n");
        assert!(e.mailbox_id && !e.placeholder);
        assert!(matches!(c.body, CommandBody::Status { .. }));
        let (_, e) = extras("a STATUS {3+}\r\nabc (MAILBOXID)\r\n");
        assert!(e.mailbox_id && e.placeholder);
    }

    #[test]
    fn hostile_input_never_panics() {
        let samples: [&[u8]; 16] = [
            b"a FETCH 1 FLAGS (PARTIAL -",
            b"a FETCH 1 (FLAGS) (PARTIAL :) (PARTIAL -:-)\r\n",
            b"a FETCH 1 BODY[(((] (PARTIAL 1:2)\r\n",
            b"a FETCH 1 ) (PARTIAL 1:2)\r\n",
            b"a FETCH $ (FLAGS {5}\r\n",
            b"a SEARCH \"$\\",
            b"a SEARCH {2}\r\n",
            b"a UID $ $ $\r\n",
            b"a LIST (((((\r\n",
            b"a LIST \"\" {99999999999}\r\n",
            b"a UID FETCH\r\n",
            b"a STATUS )(\r\n",
            b"a SEARCH RETURN (\r\n",
            b"a FETCH 1 (EMAILID\r\n",
            b"\xff LIST \"\" *\r\n",
            b"a LIST \"\\\r\n",
        ];
        for s in samples {
            for cut in 0..=s.len() {
                let _ = decode(&s[..cut]);
            }
        }
    }
}
