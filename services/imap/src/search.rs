//! SEARCH (RFC 9051 section 6.4.4): evaluating search keys against one message at a time.
//!
//! The session calls [`needs`] (or [`needs_all`]) once per command to learn what each message
//! must bring besides its metadata, builds a [`Candidate`] per message, and keeps the messages for
//! which [`matches_all`] holds. [`check_charset`] validates the CHARSET argument beforehand.
//!
//! Choices this module makes where the RFC leaves room:
//!
//! - BEFORE, ON and SINCE compare the calendar day of the internal date in UTC, which is the
//!   server's day: the internal date is stored as Unix seconds without a zone, so the day in which
//!   those seconds fall in UTC is the only stable answer.
//! - SENTBEFORE, SENTON and SENTSINCE compare the calendar day written in the `Date:` header, in
//!   the sender's own zone, as the RFC says ("disregarding time and timezone"). A missing or
//!   unparsable `Date:` matches none of them (so `NOT SENTON ...` matches it).
//! - FROM, TO, CC and BCC search the envelope's addresses, written as `Name <mailbox@host>` with
//!   the display names already decoded from RFC 2047, so they need no message bytes. SUBJECT
//!   searches the envelope's subject after decoding its encoded-words. HEADER, BODY and TEXT read
//!   the message itself: header values are unfolded and their encoded-words decoded, and bodies
//!   are the decoded text of every text part (base64 and quoted-printable undone, charsets
//!   converted, HTML reduced to text), including the parts and headers of attached messages.
//! - String comparisons are case-insensitive by Unicode lowercasing of both sides, then plain
//!   substring search. The RFC allows fuzzy matching; this module does none. An empty search
//!   string matches every message, except that for HEADER it matches the messages that have the
//!   field at all.
//! - Keyword and system flag names are compared ASCII case-insensitively.
//! - RECENT matches the messages the session reports as `\Recent`, NEW those of them that are
//!   unseen, OLD the others. An IMAP4rev2 session has no `\Recent`, so there RECENT and NEW
//!   match nothing and OLD matches everything.
//! - `*` in a sequence set stands for [`Context::max_seq`] (or [`Context::max_uid`] under UID),
//!   and `a:b` is the same range as `b:a`, so `559:*` includes the last message even when 559 is
//!   past it.
//! - MODSEQ (RFC 7162) matches messages whose mod-sequence is at least the given value. Per-flag
//!   mod-sequences are not kept, so the optional entry name and type are ignored, as section
//!   3.1.5 of that RFC requires of such servers.
//!
//! Evaluation walks the key tree with an explicit stack, visits each node at most once and
//! short-circuits AND and OR, so it costs time linear in the size of the tree and no native stack
//! however deep the tree is. imap-codec's parser already refuses nesting deeper than a handful of
//! levels (its `search_key` recursion limit; see the `parser_limits_depth` test), but keys built
//! by other means are not limited.

use std::cell::OnceCell;
use std::fmt;

use imap_codec::imap_types::core::{AString, Charset};
use imap_codec::imap_types::datetime::NaiveDate;
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use tern_mail::text::{Searchable, TextKey};
use tern_proto::v1::{Address, Envelope};

/// The charsets accepted in `SEARCH CHARSET`, in the spelling of the `BADCHARSET` response code.
pub const SUPPORTED_CHARSETS: [&str; 2] = ["US-ASCII", "UTF-8"];

const SECONDS_PER_DAY: i64 = 86_400;

/// SAVEDATE's search keys (RFC 8514), which imap-codec does not parse: [`crate::extended`]
/// writes `SAVEDBEFORE date` as `HEADER "SAVEDBEFORE " date`, and so on, a HEADER key whose
/// field name has a space, which no header field can have (RFC 5322 section 2.2), so it never
/// stands for a real header search.
pub const SAVED_KEYS: [(&str, &str); 3] =
    [("SAVEDBEFORE", "SAVEDBEFORE "), ("SAVEDON", "SAVEDON "), ("SAVEDSINCE", "SAVEDSINCE ")];

/// Which SAVEDATE key a HEADER key stands for, if it is one of [`SAVED_KEYS`].
fn saved_key(name: &[u8]) -> Option<&'static str> {
    SAVED_KEYS.iter().find(|(_, stand_in)| name == stand_in.as_bytes()).map(|(key, _)| *key)
}

/// A search date (`1-Feb-2024`) in days since the epoch.
pub fn search_day(text: &[u8]) -> Option<i64> {
    let date = chrono::NaiveDate::parse_from_str(std::str::from_utf8(text).ok()?, "%d-%b-%Y").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp().div_euclid(SECONDS_PER_DAY))
}

/// One message as seen by the search: its metadata, and the envelope and bytes when [`needs`]
/// asked for them.
pub struct Candidate<'a> {
    /// The message sequence number in the session.
    pub seq: u32,
    pub uid: u32,
    /// System flags in their canonical spelling (`\Seen`) and keywords.
    pub flags: &'a [String],
    pub modseq: u64,
    /// Whether this session reports the message as \Recent.
    pub recent: bool,
    /// RFC822.SIZE in octets.
    pub size: u64,
    /// The internal date in seconds since the Unix epoch.
    pub internal_date: i64,
    /// When the message was saved into the mailbox (SAVEDATE), in seconds since the Unix
    /// epoch; zero when unknown, and then the internal date stands in for it.
    pub save_date: i64,
    /// Present when `needs()` asked for it.
    pub envelope: Option<&'a Envelope>,
    /// The raw message, present when `needs()` asked for it.
    pub raw: Option<&'a [u8]>,
    /// The text keys' answers computed beforehand; a key answered there needs no raw message.
    pub answers: Option<&'a TextAnswers>,
}

impl fmt::Debug for Candidate<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The message bytes are summarised by their length: they can be megabytes long.
        f.debug_struct("Candidate")
            .field("seq", &self.seq)
            .field("uid", &self.uid)
            .field("flags", &self.flags)
            .field("modseq", &self.modseq)
            .field("size", &self.size)
            .field("internal_date", &self.internal_date)
            .field("envelope", &self.envelope)
            .field("raw_len", &self.raw.map(<[u8]>::len))
            .finish()
    }
}

/// What a search needs besides the metadata every candidate carries.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// The envelope: address, SUBJECT and SENT* keys.
    pub envelope: bool,
    /// The raw message: HEADER, BODY and TEXT keys.
    pub raw: bool,
    /// The size and dates of the message's metadata: LARGER, SMALLER, BEFORE, ON, SINCE,
    /// OLDER, YOUNGER and SAVEDATE's keys. Without it (and without the other two) a search
    /// is decided by what the session's view holds, and the metadata is fetched for the matches
    /// only.
    pub meta: bool,
}

/// The mailbox state a search is evaluated against.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// The highest message sequence number, which `*` stands for in a sequence set; 0 when the
    /// mailbox is empty.
    pub max_seq: u32,
    /// The highest UID in the mailbox, which `*` stands for under UID; 0 when the mailbox is
    /// empty.
    pub max_uid: u32,
    /// The time the search runs at, in seconds since the Unix epoch, for OLDER and YOUNGER
    /// (WITHIN, RFC 5032).
    pub now: i64,
}

/// Why a search cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// The CHARSET argument is not one of [`SUPPORTED_CHARSETS`]; the session answers
    /// `NO [BADCHARSET (US-ASCII UTF-8)]`.
    #[error("unsupported search charset {0:?}")]
    BadCharset(String),
}

/// Validates the CHARSET argument: US-ASCII and UTF-8 are accepted (case-insensitively), and no
/// argument means UTF-8 in IMAP4rev2 and US-ASCII in IMAP4rev1, both of which are accepted.
/// Search strings are then read as UTF-8, which US-ASCII is a subset of.
pub fn check_charset(charset: Option<&Charset<'_>>) -> Result<(), SearchError> {
    let Some(charset) = charset else { return Ok(()) };
    let name: &str = charset.as_ref();
    if SUPPORTED_CHARSETS.iter().any(|s| s.eq_ignore_ascii_case(name)) {
        Ok(())
    } else {
        Err(SearchError::BadCharset(name.to_string()))
    }
}

/// Reports what the candidates must carry for `key` to be evaluated.
pub fn needs(key: &SearchKey<'_>) -> Needs {
    needs_all(std::slice::from_ref(key))
}

/// Reports what the candidates must carry for all of `keys` to be evaluated.
pub fn needs_all(keys: &[SearchKey<'_>]) -> Needs {
    let mut out = Needs::default();
    for key in leaves(keys) {
        match key {
            SearchKey::And(_) | SearchKey::Not(_) | SearchKey::Or(..) => {}
            SearchKey::Bcc(_)
            | SearchKey::Cc(_)
            | SearchKey::From(_)
            | SearchKey::To(_)
            | SearchKey::Subject(_)
            | SearchKey::SentBefore(_)
            | SearchKey::SentOn(_)
            | SearchKey::SentSince(_) => out.envelope = true,
            SearchKey::Header(name, _) if saved_key(name.as_ref()).is_some() => out.meta = true,
            SearchKey::Header(..) | SearchKey::Body(_) | SearchKey::Text(_) => out.raw = true,
            SearchKey::Before(_)
            | SearchKey::On(_)
            | SearchKey::Since(_)
            | SearchKey::Larger(_)
            | SearchKey::Smaller(_)
            | SearchKey::Older(_)
            | SearchKey::Younger(_) => out.meta = true,
            SearchKey::SequenceSet(_)
            | SearchKey::All
            | SearchKey::Answered
            | SearchKey::Deleted
            | SearchKey::Draft
            | SearchKey::Flagged
            | SearchKey::Keyword(_)
            | SearchKey::New
            | SearchKey::Old
            | SearchKey::Recent
            | SearchKey::Seen
            | SearchKey::Uid(_)
            | SearchKey::Unanswered
            | SearchKey::Undeleted
            | SearchKey::Undraft
            | SearchKey::Unflagged
            | SearchKey::Unkeyword(_)
            | SearchKey::Unseen
            | SearchKey::ModSequence { .. } => {}
        }
        if out.envelope && out.raw && out.meta {
            break;
        }
    }
    out
}

/// Whether any of `keys` is a MODSEQ key, which enables CONDSTORE for the session and adds
/// the highest MODSEQ of the matches to the answer (RFC 7162 sections 3.1 and 3.1.5).
pub fn mentions_modseq(keys: &[SearchKey<'_>]) -> bool {
    leaves(keys).any(|k| matches!(k, SearchKey::ModSequence { .. }))
}

/// Whether any of `keys` asks about \Recent (RECENT, NEW, OLD).
pub fn mentions_recent(keys: &[SearchKey<'_>]) -> bool {
    leaves(keys).any(|k| matches!(k, SearchKey::Recent | SearchKey::New | SearchKey::Old))
}

/// The keys of `keys` that are not AND, OR or NOT, however deeply nested.
fn leaves<'k, 'a>(keys: &'k [SearchKey<'a>]) -> impl Iterator<Item = &'k SearchKey<'a>> {
    let mut stack: Vec<&'k SearchKey<'a>> = keys.iter().collect();
    std::iter::from_fn(move || {
        while let Some(key) = stack.pop() {
            match key {
                SearchKey::And(keys) => stack.extend(keys.as_ref()),
                SearchKey::Not(key) => stack.push(key),
                SearchKey::Or(a, b) => {
                    stack.push(a);
                    stack.push(b);
                }
                leaf => return Some(leaf),
            }
        }
        None
    })
}

/// Whether the candidate matches `key`.
///
/// A key whose data the candidate lacks (an envelope or raw message that [`needs`] asked for but
/// the caller did not supply) does not match.
pub fn matches(key: &SearchKey<'_>, c: &Candidate<'_>, ctx: &Context) -> bool {
    Evaluator::new(c, ctx).all(std::slice::from_ref(key))
}

/// RFC 9051 section 6.4.4: AND of a list of keys (the top-level Vec1 of the SEARCH command).
pub fn matches_all(keys: &[SearchKey<'_>], c: &Candidate<'_>, ctx: &Context) -> bool {
    Evaluator::new(c, ctx).all(keys)
}

/// One step of the evaluation. The evaluator keeps the value of the last key evaluated; these
/// steps say what to do with it.
enum Step<'k, 'a> {
    /// Evaluates a key, leaving its value.
    Eval(&'k SearchKey<'a>),
    /// Negates the value.
    Not,
    /// If the value is true, goes on with the remaining keys of an AND; otherwise it stays false.
    And(&'k [SearchKey<'a>]),
    /// If the value is false, evaluates the second key of an OR; otherwise it stays true.
    Or(&'k SearchKey<'a>),
}

/// The envelope fields searched by substring.
#[derive(Clone, Copy)]
enum Field {
    From = 0,
    To = 1,
    Cc = 2,
    Bcc = 3,
    Subject = 4,
}

/// Evaluates keys against one candidate, computing each derived text (decoded, lowercased) at
/// most once however many keys use it.
struct Evaluator<'c, 'a> {
    c: &'c Candidate<'a>,
    ctx: &'c Context,
    fields: [OnceCell<Option<String>>; 5],
    text: OnceCell<Option<Searchable<'a>>>,
}

impl<'c, 'a> Evaluator<'c, 'a> {
    fn new(c: &'c Candidate<'a>, ctx: &'c Context) -> Self {
        Self { c, ctx, fields: Default::default(), text: OnceCell::new() }
    }

    /// Evaluates the AND of `keys` (true when there are none).
    fn all(&self, keys: &[SearchKey<'_>]) -> bool {
        let mut steps = vec![Step::And(keys)];
        let mut value = true;
        while let Some(step) = steps.pop() {
            match step {
                Step::Not => value = !value,
                Step::And(rest) => {
                    if value && let Some((first, rest)) = rest.split_first() {
                        steps.push(Step::And(rest));
                        steps.push(Step::Eval(first));
                    }
                }
                Step::Or(second) => {
                    if !value {
                        steps.push(Step::Eval(second));
                    }
                }
                Step::Eval(key) => match key {
                    SearchKey::And(keys) => {
                        value = true;
                        steps.push(Step::And(keys.as_ref()));
                    }
                    SearchKey::Not(key) => {
                        steps.push(Step::Not);
                        steps.push(Step::Eval(key));
                    }
                    SearchKey::Or(a, b) => {
                        steps.push(Step::Or(b));
                        steps.push(Step::Eval(a));
                    }
                    leaf => value = self.leaf(leaf),
                },
            }
        }
        value
    }

    /// Evaluates a key that has no sub-keys.
    fn leaf(&self, key: &SearchKey<'_>) -> bool {
        let c = self.c;
        match key {
            // The compound keys are taken apart by `all`; reaching them here would be a bug, and
            // evaluating them through `all` keeps the answer right regardless.
            SearchKey::And(_) | SearchKey::Not(_) | SearchKey::Or(..) => self.all(std::slice::from_ref(key)),
            SearchKey::All => true,
            SearchKey::SequenceSet(set) => in_set(set, c.seq, self.ctx.max_seq),
            SearchKey::Uid(set) => in_set(set, c.uid, self.ctx.max_uid),

            SearchKey::Answered => self.has_flag("\\Answered"),
            SearchKey::Deleted => self.has_flag("\\Deleted"),
            SearchKey::Draft => self.has_flag("\\Draft"),
            SearchKey::Flagged => self.has_flag("\\Flagged"),
            SearchKey::Seen => self.has_flag("\\Seen"),
            SearchKey::Unanswered => !self.has_flag("\\Answered"),
            SearchKey::Undeleted => !self.has_flag("\\Deleted"),
            SearchKey::Undraft => !self.has_flag("\\Draft"),
            SearchKey::Unflagged => !self.has_flag("\\Flagged"),
            SearchKey::Unseen => !self.has_flag("\\Seen"),
            SearchKey::Keyword(k) => self.has_flag(k.as_ref()),
            SearchKey::Unkeyword(k) => !self.has_flag(k.as_ref()),
            // An IMAP4rev2 session has no \Recent: no message is recent there, so none is new
            // and all are old.
            SearchKey::Recent => c.recent,
            SearchKey::New => c.recent && !self.has_flag("\\Seen"),
            SearchKey::Old => !c.recent,

            SearchKey::Larger(n) => c.size > u64::from(*n),
            SearchKey::Smaller(n) => c.size < u64::from(*n),
            SearchKey::ModSequence { modseq, .. } => c.modseq >= *modseq,

            // WITHIN (RFC 5032): by the internal date's distance from now, in seconds.
            SearchKey::Older(n) => c.internal_date <= self.ctx.now - i64::from(n.get()),
            SearchKey::Younger(n) => c.internal_date >= self.ctx.now - i64::from(n.get()),
            SearchKey::Before(d) => internal_day(c) < date_day(d),
            SearchKey::On(d) => internal_day(c) == date_day(d),
            SearchKey::Since(d) => internal_day(c) >= date_day(d),
            SearchKey::SentBefore(d) => self.sent_day().is_some_and(|s| s < date_day(d)),
            SearchKey::SentOn(d) => self.sent_day().is_some_and(|s| s == date_day(d)),
            SearchKey::SentSince(d) => self.sent_day().is_some_and(|s| s >= date_day(d)),

            SearchKey::From(s) => self.field_contains(Field::From, s),
            SearchKey::To(s) => self.field_contains(Field::To, s),
            SearchKey::Cc(s) => self.field_contains(Field::Cc, s),
            SearchKey::Bcc(s) => self.field_contains(Field::Bcc, s),
            SearchKey::Subject(s) => self.field_contains(Field::Subject, s),

            SearchKey::Header(name, value) if let Some(key) = saved_key(name.as_ref()) => {
                let date = if c.save_date != 0 { c.save_date } else { c.internal_date };
                let saved = date.div_euclid(SECONDS_PER_DAY);
                search_day(value.as_ref()).is_some_and(|day| match key {
                    "SAVEDBEFORE" => saved < day,
                    "SAVEDON" => saved == day,
                    _ => saved >= day,
                })
            }
            SearchKey::Header(..) | SearchKey::Body(_) | SearchKey::Text(_) => {
                let Some(text_key) = text_key(key) else { return false };
                if let Some(answers) = self.c.answers
                    && let Some(answer) = answers.answer(&text_key, self.c.uid)
                {
                    return answer;
                }
                self.text().is_some_and(|text| text.matches(&text_key))
            }
        }
    }

    fn has_flag(&self, flag: &str) -> bool {
        self.c.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }

    /// The day of the `Date:` header as written, in days since the epoch.
    fn sent_day(&self) -> Option<i64> {
        let date = &self.c.envelope?.date;
        let dt = mail_parser::DateTime::parse_rfc822(date)?;
        civil_day(i64::from(dt.year), dt.month, dt.day)
    }

    fn field_contains(&self, field: Field, s: &AString<'_>) -> bool {
        let text = self.fields[field as usize].get_or_init(|| {
            let env = self.c.envelope?;
            let text = match field {
                Field::From => addresses(&env.from),
                Field::To => addresses(&env.to),
                Field::Cc => addresses(&env.cc),
                Field::Bcc => addresses(&env.bcc),
                Field::Subject => decode_words(env.subject.as_bytes()),
            };
            Some(text.to_lowercase())
        });
        text.as_deref().is_some_and(|text| text.contains(&needle(s)))
    }

    /// The message's searchable text, when the candidate carries the message.
    fn text(&self) -> Option<&Searchable<'a>> {
        self.text.get_or_init(|| self.c.raw.map(Searchable::new)).as_ref()
    }
}

/// The search string of a key, lowercased. Strings are UTF-8 (see [`check_charset`]); invalid
/// sequences become U+FFFD rather than failing the search.
fn needle(s: &AString<'_>) -> String {
    tern_mail::text::needle(s.as_ref())
}

/// The text key (HEADER, BODY or TEXT) `key` is, in the form the mailbox service's SearchText
/// takes; `None` for every other key, SAVEDATE's stand-ins included.
pub fn text_key(key: &SearchKey<'_>) -> Option<TextKey> {
    match key {
        SearchKey::Header(name, _) if saved_key(name.as_ref()).is_some() => None,
        SearchKey::Header(name, value) => {
            Some(TextKey::Header { name: String::from_utf8_lossy(name.as_ref()).into_owned(), needle: needle(value) })
        }
        SearchKey::Body(s) => Some(TextKey::Body(needle(s))),
        SearchKey::Text(s) => Some(TextKey::Text(needle(s))),
        _ => None,
    }
}

/// The distinct text keys of `keys`, however deeply nested.
pub fn text_keys(keys: &[SearchKey<'_>]) -> Vec<TextKey> {
    let mut out: Vec<TextKey> = Vec::new();
    for key in leaves(keys).filter_map(text_key) {
        if !out.contains(&key) {
            out.push(key);
        }
    }
    out
}

/// The answers to a search's text keys, computed for all messages at once (by the mailbox
/// service's index) rather than by reading each message: for each key, the UIDs that match it,
/// sorted.
#[derive(Debug, Default, Clone)]
pub struct TextAnswers {
    pub keys: Vec<(TextKey, Vec<u32>)>,
}

impl TextAnswers {
    /// Whether the message `uid` matches `key`; `None` when `key` was not answered.
    pub fn answer(&self, key: &TextKey, uid: u32) -> Option<bool> {
        let (_, uids) = self.keys.iter().find(|(k, _)| k == key)?;
        Some(uids.binary_search(&uid).is_ok())
    }
}

/// Whether `n` is in `set`, with `*` standing for `star`.
fn in_set(set: &SequenceSet, n: u32, star: u32) -> bool {
    let resolve = |v: &SeqOrUid| match v {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => star,
    };
    set.0.as_ref().iter().any(|seq| match seq {
        Sequence::Single(v) => resolve(v) == n,
        Sequence::Range(a, b) => {
            let (a, b) = (resolve(a), resolve(b));
            a.min(b) <= n && n <= a.max(b)
        }
    })
}

/// The UTC day of the candidate's internal date, in days since the epoch.
fn internal_day(c: &Candidate<'_>) -> i64 {
    c.internal_date.div_euclid(SECONDS_PER_DAY)
}

/// A search date in days since the epoch.
fn date_day(d: &NaiveDate) -> i64 {
    let d = d.as_ref();
    // Midnight always exists, so `and_hms_opt` cannot fail; the fallback only satisfies the type.
    d.and_hms_opt(0, 0, 0).map_or(i64::MIN, |t| t.and_utc().timestamp().div_euclid(SECONDS_PER_DAY))
}

/// Days since 1970-01-01 of a proleptic Gregorian date, or `None` when the date does not exist.
fn civil_day(year: i64, month: u8, day: u8) -> Option<i64> {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > days_in_month {
        return None;
    }
    // Howard Hinnant's days_from_civil, with years starting in March so that the leap day is
    // the last day of the year.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (i64::from(month) + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    Some(era * 146_097 + day_of_era - 719_468)
}

/// Envelope addresses as one string: `Name <mailbox@host>` joined by commas, with RFC 3501 group
/// markers turned back into `group:` and `;`.
fn addresses(list: &[Address]) -> String {
    let mut out = String::new();
    for a in list {
        if !out.is_empty() {
            out.push_str(", ");
        }
        if a.host.is_empty() {
            // A group start carries the group name as mailbox; a group end carries nothing.
            if a.mailbox.is_empty() {
                out.push(';');
            } else {
                out.push_str(&a.mailbox);
                out.push(':');
            }
            continue;
        }
        if !a.name.is_empty() {
            out.push_str(&a.name);
            out.push_str(" <");
        }
        out.push_str(&a.mailbox);
        out.push('@');
        out.push_str(&a.host);
        if !a.name.is_empty() {
            out.push('>');
        }
    }
    out
}

/// Decodes the RFC 2047 encoded-words of an unfolded header value (SORT uses it too).
pub(crate) use tern_mail::text::decode_words;

#[cfg(test)]
mod tests {
    use imap_codec::CommandCodec;
    use imap_codec::decode::Decoder;
    use imap_codec::imap_types::command::CommandBody;
    use tern_proto::v1::Envelope;

    use super::*;

    /// A stored message: its bytes, parsed envelope and metadata.
    struct Msg {
        raw: Vec<u8>,
        envelope: Envelope,
        uid: u32,
        flags: Vec<String>,
        modseq: u64,
        internal_date: i64,
    }

    impl Msg {
        fn new(raw: &str, uid: u32, flags: &[&str], modseq: u64, internal_date: i64) -> Self {
            let raw = raw.replace('\n', "\r\n").into_bytes();
            let envelope = tern_mail::parse::parse(&raw).envelope;
            Self { raw, envelope, uid, flags: flags.iter().map(|f| f.to_string()).collect(), modseq, internal_date }
        }

        fn candidate(&self, seq: u32, needs: Needs) -> Candidate<'_> {
            Candidate {
                seq,
                uid: self.uid,
                flags: &self.flags,
                modseq: self.modseq,
                recent: false,
                size: self.raw.len() as u64,
                internal_date: self.internal_date,
                save_date: 0,
                envelope: needs.envelope.then_some(&self.envelope),
                raw: needs.raw.then_some(&self.raw[..]),
                answers: None,
            }
        }
    }

    /// Parses a SEARCH or UID SEARCH command, returning its charset and keys.
    fn parse(command: &[u8]) -> (Option<Charset<'static>>, Vec<SearchKey<'static>>) {
        let (rest, command) = CommandCodec::default()
            .decode_static(command)
            .unwrap_or_else(|e| panic!("{:?} does not parse: {e:?}", String::from_utf8_lossy(command)));
        assert!(rest.is_empty());
        match command.body {
            CommandBody::Search { charset, criteria, .. } => (charset, criteria.into_iter().collect()),
            other => panic!("not a search: {other:?}"),
        }
    }

    /// A command whose last argument is `text` sent as a literal, as IMAP4rev1 clients send 8-bit
    /// strings.
    fn lit(prefix: &str, text: &str, suffix: &str) -> Vec<u8> {
        format!("{prefix}{{{}}}\r\n{text}{suffix}\r\n", text.len()).into_bytes()
    }

    fn parses(command: &[u8]) -> bool {
        CommandCodec::default().decode(command).is_ok()
    }

    /// Runs a search over `msgs` (sequence numbers from 1) and returns the matching UIDs.
    fn search(command: &str, msgs: &[Msg]) -> Vec<u32> {
        search_bytes(command.as_bytes(), msgs)
    }

    fn search_bytes(command: &[u8], msgs: &[Msg]) -> Vec<u32> {
        let (charset, keys) = parse(command);
        check_charset(charset.as_ref()).unwrap();
        let needs = needs_all(&keys);
        let ctx = Context {
            max_seq: msgs.len() as u32,
            max_uid: msgs.iter().map(|m| m.uid).max().unwrap_or(0),
            now: 1_700_000_000,
        };
        let mut out = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            let c = m.candidate(i as u32 + 1, needs);
            if matches_all(&keys, &c, &ctx) {
                out.push(m.uid);
            }
        }
        out
    }

    /// 2024-01-15 12:00:00 UTC.
    const JAN15_NOON: i64 = 1_705_320_000;

    fn mailbox() -> Vec<Msg> {
        vec![
            // UID 10: plain ASCII, seen and answered.
            Msg::new(
                "From: \"Alice Example\" <alice@example.com>
To: bob@example.org
Cc: Carol <carol@example.net>
Subject: Hello world
Date: Mon, 15 Jan 2024 23:30:00 -0800
Message-ID: <one@example.com>
X-Mailer: Tern test

The quick brown fox jumps over the lazy dog.
",
                10,
                &["\\Seen", "\\Answered", "$Label1"],
                5,
                JAN15_NOON,
            ),
            // UID 20: encoded-words, a base64 text part and a quoted-printable HTML part.
            Msg::new(
                "From: =?ISO-8859-1?Q?Andr=E9?= <andre@example.com>
To: alice@example.com
Bcc: secret@example.com
Subject: =?UTF-8?B?aMOpbGxvIFfDtnJsZA==?=
Date: Tue, 16 Jan 2024 01:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary=\"b1\"

--b1
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: base64

R3LDvMOfZSBhdXMgTcO8bmNoZW4h
--b1
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable

<p>Sch=C3=B6ne <b>Gr=C3=BC=C3=9Fe</b> vom Bodensee</p>
--b1--
",
                20,
                &["\\Flagged"],
                9,
                JAN15_NOON + 43_199,
            ),
            // UID 30: no Date, no Subject, an unparsable extra header, a large body.
            Msg::new(
                &format!(
                    "From: bob@example.org
To: alice@example.com
X-Folded: first
  second line

{}
",
                    "lorem ipsum ".repeat(200)
                ),
                30,
                &["\\Deleted", "\\Draft"],
                12,
                JAN15_NOON + 86_400,
            ),
        ]
    }

    #[test]
    fn charset() {
        assert_eq!(check_charset(None), Ok(()));
        let (charset, _) = parse(b"a SEARCH CHARSET utf-8 ALL\r\n");
        assert_eq!(check_charset(charset.as_ref()), Ok(()));
        let (charset, _) = parse(b"a SEARCH CHARSET \"US-ASCII\" ALL\r\n");
        assert_eq!(check_charset(charset.as_ref()), Ok(()));
        let (charset, _) = parse(b"a SEARCH CHARSET ISO-8859-1 ALL\r\n");
        assert_eq!(check_charset(charset.as_ref()), Err(SearchError::BadCharset("ISO-8859-1".into())));
    }

    #[test]
    fn needs_per_key() {
        let n = |cmd: &str| needs_all(&parse(cmd.as_bytes()).1);
        assert_eq!(n("a SEARCH ALL SEEN UID 1:* 2,4 MODSEQ 7\r\n"), Needs::default());
        assert_eq!(n("a SEARCH SEEN LARGER 5\r\n"), Needs { envelope: false, raw: false, meta: true });
        assert_eq!(n("a SEARCH SINCE 1-Jan-2024\r\n"), Needs { envelope: false, raw: false, meta: true });
        assert_eq!(n("a SEARCH NOT FROM x\r\n"), Needs { envelope: true, raw: false, meta: false });
        assert_eq!(n("a SEARCH SENTON 1-Jan-2024\r\n"), Needs { envelope: true, raw: false, meta: false });
        assert_eq!(n("a SEARCH OR SEEN (ALL BODY x)\r\n"), Needs { envelope: false, raw: true, meta: false });
        assert_eq!(n("a SEARCH HEADER X-A \"\" SUBJECT y\r\n"), Needs { envelope: true, raw: true, meta: false });
        assert_eq!(
            needs(&SearchKey::Text(AString::try_from("x").unwrap())),
            Needs { envelope: false, raw: true, meta: false }
        );
    }

    #[test]
    fn or_from_not_seen_larger() {
        let msgs = mailbox();
        // 10 is from alice; 20 is unseen; 30 is unseen. Everything is larger than 100 octets.
        assert_eq!(search("a SEARCH OR FROM \"alice\" NOT SEEN LARGER 100\r\n", &msgs), [10, 20, 30]);
        assert_eq!(search("a SEARCH OR FROM \"alice\" NOT SEEN LARGER 1000\r\n", &msgs), [30]);
        assert_eq!(search("a SEARCH FROM alice SEEN\r\n", &msgs), [10]);
    }

    #[test]
    fn flags() {
        let msgs = mailbox();
        assert_eq!(search("a SEARCH ALL\r\n", &msgs), [10, 20, 30]);
        assert_eq!(search("a SEARCH ANSWERED\r\n", &msgs), [10]);
        assert_eq!(search("a SEARCH UNANSWERED\r\n", &msgs), [20, 30]);
        assert_eq!(search("a SEARCH DELETED\r\n", &msgs), [30]);
        assert_eq!(search("a SEARCH UNDELETED\r\n", &msgs), [10, 20]);
        assert_eq!(search("a SEARCH DRAFT\r\n", &msgs), [30]);
        assert_eq!(search("a SEARCH UNDRAFT\r\n", &msgs), [10, 20]);
        assert_eq!(search("a SEARCH FLAGGED\r\n", &msgs), [20]);
        assert_eq!(search("a SEARCH UNFLAGGED\r\n", &msgs), [10, 30]);
        assert_eq!(search("a SEARCH SEEN\r\n", &msgs), [10]);
        assert_eq!(search("a SEARCH UNSEEN\r\n", &msgs), [20, 30]);
        assert_eq!(search("a SEARCH KEYWORD $label1\r\n", &msgs), [10]);
        assert_eq!(search("a SEARCH UNKEYWORD $Label1\r\n", &msgs), [20, 30]);
        assert_eq!(search("a SEARCH KEYWORD $Other\r\n", &msgs), [] as [u32; 0]);
        // No \Recent in IMAP4rev2.
        assert_eq!(search("a SEARCH RECENT\r\n", &msgs), [] as [u32; 0]);
        assert_eq!(search("a SEARCH NEW\r\n", &msgs), [] as [u32; 0]);
        assert_eq!(search("a SEARCH OLD\r\n", &msgs), [10, 20, 30]);
        assert_eq!(search("a SEARCH NOT RECENT\r\n", &msgs), [10, 20, 30]);
    }

    #[test]
    fn sizes_and_modseq() {
        let msgs = mailbox();
        let size = msgs[0].raw.len();
        assert_eq!(search(&format!("a SEARCH LARGER {}\r\n", size - 1), &msgs), [10, 20, 30]);
        assert_eq!(search(&format!("a SEARCH LARGER {size} SMALLER 2000\r\n"), &msgs), [20]);
        assert_eq!(search(&format!("a SEARCH SMALLER {size}\r\n"), &msgs), [] as [u32; 0]);
        assert_eq!(search(&format!("a SEARCH SMALLER {}\r\n", size + 1), &msgs), [10]);
        assert_eq!(search("a SEARCH MODSEQ 9\r\n", &msgs), [20, 30]);
        assert_eq!(search("a SEARCH MODSEQ 5\r\n", &msgs), [10, 20, 30]);
        assert_eq!(search("a SEARCH MODSEQ 13\r\n", &msgs), [] as [u32; 0]);
        // The entry name and type are ignored: there is one mod-sequence per message.
        assert_eq!(search("a SEARCH MODSEQ \"/flags/\\\\draft\" all 10\r\n", &msgs), [30]);
    }

    #[test]
    fn internal_dates_use_the_utc_day() {
        let msgs = mailbox();
        // 10 is 2024-01-15 12:00 UTC, 20 is 2024-01-15 23:59:59 UTC, 30 is 2024-01-16 12:00 UTC.
        assert_eq!(search("a SEARCH ON 15-Jan-2024\r\n", &msgs), [10, 20]);
        assert_eq!(search("a SEARCH ON 16-Jan-2024\r\n", &msgs), [30]);
        assert_eq!(search("a SEARCH BEFORE 16-Jan-2024\r\n", &msgs), [10, 20]);
        assert_eq!(search("a SEARCH BEFORE 15-Jan-2024\r\n", &msgs), [] as [u32; 0]);
        assert_eq!(search("a SEARCH SINCE 16-Jan-2024\r\n", &msgs), [30]);
        assert_eq!(search("a SEARCH SINCE 1-Jan-1970\r\n", &msgs), [10, 20, 30]);
        assert_eq!(search("a SEARCH SINCE 15-Jan-2024 BEFORE 16-Jan-2024\r\n", &msgs), [10, 20]);
    }

    #[test]
    fn sent_dates_use_the_header_day() {
        let msgs = mailbox();
        // 10 was sent on 2024-01-15 in its zone (2024-01-16 in UTC); 20 on 2024-01-16; 30 has
        // no Date.
        assert_eq!(search("a SEARCH SENTON 15-Jan-2024\r\n", &msgs), [10]);
        assert_eq!(search("a SEARCH SENTON 16-Jan-2024\r\n", &msgs), [20]);
        assert_eq!(search("a SEARCH SENTBEFORE 16-Jan-2024\r\n", &msgs), [10]);
        assert_eq!(search("a SEARCH SENTSINCE 15-Jan-2024\r\n", &msgs), [10, 20]);
        assert_eq!(search("a SEARCH NOT SENTSINCE 15-Jan-2024\r\n", &msgs), [30]);

        let garbled = [
            Msg::new("Date: yesterday-ish\nSubject: x\n\nbody\n", 1, &[], 1, 0),
            Msg::new("Date: Mon, 31 Feb 2024 10:00:00 +0000\n\nbody\n", 2, &[], 1, 0),
            Msg::new("Date: 1 Jan 2024 10:00:00 +0000\n\nbody\n", 3, &[], 1, 0),
        ];
        assert_eq!(search("a SEARCH SENTSINCE 1-Jan-1970\r\n", &garbled), [3]);
        assert_eq!(search("a SEARCH SENTBEFORE 1-Jan-9999\r\n", &garbled), [3]);
        assert_eq!(search("a SEARCH SENTON 1-Jan-2024\r\n", &garbled), [3]);
    }

    #[test]
    fn address_fields() {
        let msgs = mailbox();
        assert_eq!(search("a SEARCH FROM ALICE@EXAMPLE.COM\r\n", &msgs), [10]);
        assert_eq!(search("a SEARCH FROM \"Alice Example\"\r\n", &msgs), [10]);
        // The display name was encoded in ISO-8859-1; the search string is UTF-8, here in a
        // literal as IMAP4rev1 clients send it.
        assert_eq!(search_bytes(&lit("a SEARCH FROM ", "ANDRÉ", ""), &msgs), [20]);
        assert_eq!(search("a SEARCH TO alice\r\n", &msgs), [20, 30]);
        assert_eq!(search("a SEARCH TO bob@example.org\r\n", &msgs), [10]);
        assert_eq!(search("a SEARCH CC carol\r\n", &msgs), [10]);
        assert_eq!(search("a SEARCH CC \"Carol <carol@\"\r\n", &msgs), [10]);
        assert_eq!(search("a SEARCH BCC secret\r\n", &msgs), [20]);
        assert_eq!(search("a SEARCH BCC example\r\n", &msgs), [20]);
        assert_eq!(search("a SEARCH FROM nobody\r\n", &msgs), [] as [u32; 0]);
    }

    #[test]
    fn subjects_with_encoded_words() {
        let msgs = mailbox();
        assert_eq!(search("a SEARCH SUBJECT hello\r\n", &msgs), [10]);
        assert_eq!(search_bytes(&lit("a UID SEARCH 1:* SUBJECT ", "héllo", ""), &msgs), [20]);
        // Case-insensitive beyond ASCII: "Wörld" is found as "WÖRLD".
        assert_eq!(search_bytes(&lit("a SEARCH SUBJECT ", "WÖRLD", ""), &msgs), [20]);
        // The encoded form itself is not what is searched.
        assert_eq!(search("a SEARCH SUBJECT aMOpbGxv\r\n", &msgs), [] as [u32; 0]);
        // An empty string matches every message, even one without a subject.
        assert_eq!(search("a SEARCH SUBJECT \"\"\r\n", &msgs), [10, 20, 30]);
        // With UTF8=ACCEPT support compiled in, imap-codec also takes UTF-8 in quoted strings.
        assert_eq!(search("a UID SEARCH 1:* SUBJECT \"héllo\"\r\n", &msgs), [20]);
    }

    #[test]
    fn headers() {
        let msgs = mailbox();
        // An empty value matches the messages that have the field.
        assert_eq!(search("a SEARCH HEADER X-Mailer \"\"\r\n", &msgs), [10]);
        assert_eq!(search("a SEARCH HEADER x-mailer tern\r\n", &msgs), [10]);
        assert_eq!(search("a SEARCH HEADER X-Mailer other\r\n", &msgs), [] as [u32; 0]);
        assert_eq!(search("a SEARCH NOT HEADER X-Mailer \"\"\r\n", &msgs), [20, 30]);
        assert_eq!(search("a SEARCH HEADER Date \"\"\r\n", &msgs), [10, 20]);
        assert_eq!(search("a SEARCH HEADER Message-ID one@\r\n", &msgs), [10]);
        // Folded values are unfolded.
        assert_eq!(search("a SEARCH HEADER X-Folded \"first  second\"\r\n", &msgs), [30]);
        // Encoded-words are decoded in any field.
        assert_eq!(search_bytes(&lit("a SEARCH HEADER SUBJECT ", "HÉLLO", ""), &msgs), [20]);
        assert_eq!(search_bytes(&lit("a SEARCH HEADER From ", "andré", ""), &msgs), [20]);
        // Body parts' headers are not the message's header.
        assert_eq!(search("a SEARCH HEADER Content-Transfer-Encoding \"\"\r\n", &msgs), [] as [u32; 0]);
    }

    #[test]
    fn bodies_and_text() {
        let msgs = mailbox();
        assert_eq!(search("a SEARCH BODY \"QUICK brown\"\r\n", &msgs), [10]);
        // The base64 text part, matched case-insensitively beyond ASCII.
        assert_eq!(search_bytes(&lit("a SEARCH BODY ", "MÜNCHEN", ""), &msgs), [20]);
        // The quoted-printable HTML part, as text: the tags are gone.
        assert_eq!(search_bytes(&lit("a SEARCH BODY ", "schöne grüße vom", ""), &msgs), [20]);
        assert_eq!(search("a SEARCH BODY \"<b>\"\r\n", &msgs), [] as [u32; 0]);
        // Encoded bytes are not what is searched.
        assert_eq!(search("a SEARCH BODY R3LDvMOfZSBhdXMg\r\n", &msgs), [] as [u32; 0]);
        // BODY does not look at the header; TEXT looks at both.
        assert_eq!(search("a SEARCH BODY alice\r\n", &msgs), [] as [u32; 0]);
        assert_eq!(search("a SEARCH TEXT alice\r\n", &msgs), [10, 20, 30]);
        assert_eq!(search("a SEARCH TEXT lazy\r\n", &msgs), [10]);
        assert_eq!(search_bytes(&lit("a SEARCH TEXT ", "héllo", ""), &msgs), [20]);
        assert_eq!(search("a SEARCH TEXT \"x-mailer: tern\"\r\n", &msgs), [10]);
        assert_eq!(search("a SEARCH TEXT \"lorem ipsum lorem\"\r\n", &msgs), [30]);
        assert_eq!(search("a SEARCH BODY \"\"\r\n", &msgs), [10, 20, 30]);
    }

    #[test]
    fn attached_messages_are_body() {
        let msgs = [Msg::new(
            "From: outer@example.com
Subject: fwd
Content-Type: multipart/mixed; boundary=\"o\"

--o
Content-Type: text/plain

see attached
--o
Content-Type: message/rfc822

From: inner@example.com
Subject: =?UTF-8?Q?caf=C3=A9?=

inner words
--o--
",
            1,
            &[],
            1,
            0,
        )];
        assert_eq!(search("a SEARCH BODY \"see attached\"\r\n", &msgs), [1]);
        assert_eq!(search("a SEARCH BODY \"inner words\"\r\n", &msgs), [1]);
        assert_eq!(search_bytes(&lit("a SEARCH BODY ", "café", ""), &msgs), [1]);
        assert_eq!(search("a SEARCH BODY inner@example.com\r\n", &msgs), [1]);
        assert_eq!(search("a SEARCH FROM inner\r\n", &msgs), [] as [u32; 0]);
        assert_eq!(search("a SEARCH HEADER Subject fwd\r\n", &msgs), [1]);
    }

    #[test]
    fn sequence_sets() {
        let msgs = mailbox();
        assert_eq!(search("a SEARCH *\r\n", &msgs), [30]);
        assert_eq!(search("a SEARCH 2\r\n", &msgs), [20]);
        assert_eq!(search("a SEARCH 3:2\r\n", &msgs), [20, 30]);
        assert_eq!(search("a SEARCH 5:2\r\n", &msgs), [20, 30]);
        assert_eq!(search("a SEARCH 1,3\r\n", &msgs), [10, 30]);
        assert_eq!(search("a SEARCH *:2\r\n", &msgs), [20, 30]);
        assert_eq!(search("a SEARCH 1:*\r\n", &msgs), [10, 20, 30]);
        assert_eq!(search("a SEARCH 4:*\r\n", &msgs), [30]);
        assert_eq!(search("a SEARCH 7\r\n", &msgs), [] as [u32; 0]);
        assert_eq!(search("a SEARCH NOT 2\r\n", &msgs), [10, 30]);
        assert_eq!(search("a SEARCH 1:2 2:3\r\n", &msgs), [20]);
        // UIDs: `*` is the highest UID, and a range past it still includes it (RFC 9051
        // section 6.4.8).
        assert_eq!(search("a UID SEARCH UID *\r\n", &msgs), [30]);
        assert_eq!(search("a UID SEARCH UID 559:*\r\n", &msgs), [30]);
        assert_eq!(search("a UID SEARCH UID 15:25\r\n", &msgs), [20]);
        assert_eq!(search("a UID SEARCH UID 25:15,10\r\n", &msgs), [10, 20]);
        assert_eq!(search("a UID SEARCH UID 1,2,3\r\n", &msgs), [] as [u32; 0]);
        // An empty mailbox: nothing matches, and `*` stands for no message.
        assert_eq!(search("a SEARCH 1:*\r\n", &[]), [] as [u32; 0]);
        let (_, keys) = parse(b"a UID SEARCH * UID *\r\n");
        let lone = &mailbox()[0];
        let empty = Context::default();
        assert!(!matches(&keys[0], &lone.candidate(1, Needs::default()), &empty));
        assert!(!matches(&keys[1], &lone.candidate(1, Needs::default()), &empty));
    }

    #[test]
    fn nested_or_and_not() {
        let msgs = mailbox();
        assert_eq!(
            search("a SEARCH OR (FROM alice SEEN) NOT (OR SUBJECT hello KEYWORD $label1)\r\n", &msgs),
            [10, 20, 30]
        );
        assert_eq!(search("a SEARCH OR (FROM alice UNSEEN) (TO alice DRAFT)\r\n", &msgs), [30]);
        assert_eq!(search("a SEARCH NOT (OR FLAGGED (DELETED DRAFT))\r\n", &msgs), [10]);
        assert_eq!(search("a SEARCH NOT NOT NOT NOT SEEN\r\n", &msgs), [10]);
        assert_eq!(search("a SEARCH OR OR 1 2 OR 3 4\r\n", &msgs), [10, 20, 30]);
        assert_eq!(search("a SEARCH (((SEEN)))\r\n", &msgs), [10]);
        assert_eq!(search_bytes(&lit("a SEARCH OR HEADER X-Mailer \"\" BODY ", "münchen", ""), &msgs), [10, 20]);
    }

    #[test]
    fn missing_data_does_not_match() {
        let msgs = mailbox();
        let ctx = Context { max_seq: 3, max_uid: 30, now: 1_700_000_000 };
        let bare = msgs[0].candidate(1, Needs::default());
        for cmd in ["a SEARCH FROM alice\r\n", "a SEARCH HEADER X-Mailer \"\"\r\n", "a SEARCH BODY fox\r\n"] {
            let (_, keys) = parse(cmd.as_bytes());
            assert!(!matches_all(&keys, &bare, &ctx), "{cmd}");
            assert!(matches_all(&keys, &msgs[0].candidate(1, needs_all(&keys)), &ctx), "{cmd}");
        }
    }

    #[test]
    fn malformed_messages() {
        let msgs = [
            // No header at all.
            Msg::new("just some words\n", 1, &[], 1, 0),
            // A header that ends without a body and lines that are not fields.
            Msg::new("this is not a field\nX-A: b\n", 2, &[], 1, 0),
            // Invalid UTF-8 in the header and body.
            Msg { raw: b"Subject: caf\xe9\r\n\r\nna\xefve\r\n".to_vec(), ..Msg::new("", 3, &[], 1, 0) },
        ];
        assert_eq!(search("a SEARCH TEXT words\r\n", &msgs), [1]);
        assert_eq!(search("a SEARCH HEADER X-A b\r\n", &msgs), [2]);
        assert_eq!(search("a SEARCH HEADER Subject caf\r\n", &msgs), [3]);
        assert_eq!(search("a SEARCH BODY na\r\n", &msgs), [3]);
    }

    #[test]
    fn civil_days() {
        assert_eq!(civil_day(1970, 1, 1), Some(0));
        assert_eq!(civil_day(2000, 3, 1), Some(11_017));
        assert_eq!(civil_day(2024, 2, 29), Some(19_782));
        assert_eq!(civil_day(2023, 2, 29), None);
        assert_eq!(civil_day(1900, 2, 29), None);
        assert_eq!(civil_day(1969, 12, 31), Some(-1));
        assert_eq!(civil_day(2024, 13, 1), None);
        assert_eq!(civil_day(2024, 1, 0), None);
        let (_, keys) = parse(b"a SEARCH ON 29-Feb-2024\r\n");
        let SearchKey::On(d) = &keys[0] else { panic!() };
        assert_eq!(date_day(d), 19_782);
    }

    /// imap-codec limits search-key nesting, so hostile commands are refused by the parser.
    #[test]
    fn parser_limits_depth() {
        let nots = |n: usize| format!("a SEARCH {}ALL\r\n", "NOT ".repeat(n));
        let parens = |n: usize| format!("a SEARCH {}ALL{}\r\n", "(".repeat(n), ")".repeat(n));
        let ors = |n: usize| format!("a SEARCH {}ALL{}\r\n", "OR ".repeat(n), " ALL".repeat(n));
        for build in [nots, parens, ors] {
            let deepest = (0..50).take_while(|&n| parses(build(n).as_bytes())).last().unwrap();
            // The top-level key may nest eight more: the parser's limit of nine levels.
            assert_eq!(deepest, 8, "{}", build(deepest));
            assert!(!parses(build(1000).as_bytes()));
            assert!(!parses(build(100_000).as_bytes()));
        }
    }

    /// Keys built by other means may be arbitrarily deep; evaluation must neither recurse nor
    /// blow up.
    #[test]
    fn deep_keys_evaluate_iteratively() {
        let msgs = mailbox();
        let ctx = Context { max_seq: 3, max_uid: 30, now: 1_700_000_000 };
        let c = msgs[0].candidate(1, Needs { envelope: true, raw: true, meta: false });
        for depth in [1000usize, 1001, 50_000] {
            let mut not = SearchKey::Seen;
            let mut or = SearchKey::Unseen;
            let mut and = SearchKey::Seen;
            for _ in 0..depth {
                not = SearchKey::Not(Box::new(not));
                or = SearchKey::Or(Box::new(SearchKey::Deleted), Box::new(or));
                and = SearchKey::And(vec![SearchKey::All, and].try_into().unwrap());
            }
            assert_eq!(matches(&not, &c, &ctx), depth % 2 == 0);
            assert!(!matches(&or, &c, &ctx));
            assert!(matches(&and, &c, &ctx));
            assert_eq!(needs(&or), Needs::default());
            // Dropping a `Box` chain this deep recurses in the compiler's drop glue, which is
            // the owner's concern, not the evaluator's: leak the deepest ones instead.
            if depth > 10_000 {
                std::mem::forget((not, or, and));
            }
        }
        // Wide trees are linear too: a thousand keys, each a sub-tree of ORs over text keys,
        // evaluated once per candidate with the body parsed once.
        let wide: Vec<SearchKey<'_>> = (0..1000)
            .map(|i| {
                SearchKey::Or(
                    Box::new(SearchKey::Body(AString::try_from(format!("absent{i}")).unwrap())),
                    Box::new(SearchKey::Text(AString::try_from("fox").unwrap())),
                )
            })
            .collect();
        assert!(matches_all(&wide, &c, &ctx));
    }
}
