//! The full-text index (issue #19) end to end over real sockets: whatever state the index is in,
//! IMAP SEARCH's HEADER, BODY and TEXT keys and the Mailbox API's `SearchText` answer exactly
//! what [`tern_mail::text::Searchable`], the reference semantics of those keys, says of the
//! bytes the service stored.
//!
//! - `corpus_searches_match_brute_force`: a generated corpus of a few hundred messages (MIME
//!   trees of every usual shape, UTF-8 and real ISO-8859-1 bytes, 7bit, 8bit, quoted-printable
//!   and base64, encoded header words, attachment names, attached messages, accented, Greek,
//!   Cyrillic and CJK text, long identifiers) is appended, the index is awaited, and some ninety
//!   searches (single words, parts of words, phrases with punctuation, one, two and three CJK
//!   characters, TEXT, HEADER Subject and Message-ID, attachment names, a string found nowhere,
//!   strings longer than the index's exact limit, punctuation only, the empty string, and AND,
//!   OR and NOT of them and of metadata keys) go through the IMAP front-end (UID SEARCH, SEARCH,
//!   ESEARCH's COUNT, SORT), each compared with a brute-force scan of the corpus in the test,
//!   and so do strings cut at random from the messages' own text. Some messages are larger
//!   than the index takes, so they are answered by reading them. SearchText is also asked
//!   directly: an exact one-word search is answered from the index, a message appended a
//!   moment ago is found before the indexer has seen it, and after a MOVE and an EXPUNGE both
//!   folders answer right at once and from the index once it caught up. This test runs on
//!   both backends, like the storage suites.
//! - `index_survives_a_crash_and_a_lost_segment` (embedded only): what a crash leaves on disk
//!   in the middle of indexing a large delivery answers correctly at once and catches up, and
//!   an index missing one of its segment files is dropped and rebuilt, answering correctly
//!   meanwhile.
//! - `reindex_reports_progress_and_keeps_answers`: Admin/Reindex streams monotonic progress to
//!   `done == total == messages`, and searches during and after it are right, on both backends.
//! - `a_lost_index_writer_is_replaced` (its own NATS server): the replica writing the shared
//!   index dies twice over; searches stay right, another replica takes over, and a new replica
//!   answers from the copy in the object store without reading messages.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use base64::Engine as _;
use tern_mail::text::{Searchable, TextKey, needle};
use tern_mailbox::{Limits, fts::Settings};
use tern_proto::v1::{
    AppendHeader, AppendRequest, FolderRef, GetIndexStatusRequest, IndexStatus, ReindexProgress, ReindexRequest,
    SearchTextKey, SearchTextRequest, SearchTextResponse, SelectRequest, TextField, append_request,
};
use tern_tests::{
    Admin, Mailbox, TestServer,
    imap::{ImapClient, ImapOptions, ImapTestServer},
    setup_account,
    smtp::BoxIo,
};

const ALICE: &str = "alice@example.com";

/// The longest the index may take to catch up with what the tests give it.
const WAIT: Duration = Duration::from_secs(30);

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------------------------
// The corpus.

/// A small deterministic generator (splitmix64), so that the corpus is the same on every run
/// and a failure can be reproduced from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True `percent` times in a hundred.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Plain English words, with some punctuation and digits inside.
const ASCII_WORDS: [&str; 36] = [
    "harbor", "velvet", "quantum", "marble", "lantern", "orchard", "pepper", "saffron", "thunder", "meadow", "copper",
    "falcon", "glacier", "hazel", "indigo", "juniper", "kettle", "lemon", "mosaic", "nectar", "oyster", "pebble",
    "quartz", "ribbon", "spruce", "tundra", "umbra", "walnut", "yonder", "zephyr", "e-mail", "re:", "10:30", "B-12",
    "don't", "2026",
];

/// Words that ISO-8859-1 can write, so that they also appear in Latin-1 parts.
const LATIN1_WORDS: [&str; 12] = [
    "straße",
    "élève",
    "Grüße",
    "ÅNGSTRÖM",
    "café",
    "naïve",
    "smørrebrød",
    "Ærø",
    "façade",
    "über",
    "niño",
    "crème brûlée",
];

/// Words beyond Latin-1: Turkish dotted I (whose lowercase is two characters), Greek with a
/// final sigma, Cyrillic, Polish, élève decomposed (NFD), an emoji and a dash.
const OTHER_WORDS: [&str; 8] = ["İstanbul", "ΟΔΟΣ", "Москва", "łódź", "e\u{301}le\u{300}ve", "😀", "—", "Ελλάδα"];

/// Japanese, Korean and Chinese, with their own punctuation.
const CJK: [&str; 7] =
    ["東京都に住んでいます。", "한국어 텍스트", "北京欢迎你", "日本語のテキストです", "中文搜索测试", "京都", "東"];

/// Whole sentences (Latin-1 only, so that they appear in Latin-1 parts too).
const SENTENCES: [&str; 4] =
    ["The meeting is at 10:30, room B-12.", "Grüße aus München!", "Don't forget the e-mail.", "Velvet harbor, again."];

/// Attachment file names, as written in the parameters (see [`attachment`]).
const FILE_NAMES: [&str; 5] =
    ["Rechnung-2026.pdf", "holiday_photos.zip", "Quarterly Report Q3.xlsx", "grüße.txt", "東京.png"];

const FROMS: [&str; 5] = [
    "Alice Example <alice@example.com>",
    "=?utf-8?Q?J=C3=B6rg_M=C3=BCller?= <jorg@example.de>",
    "=?iso-8859-1?Q?Ren=E9e_Fa=E7ade?= <renee@example.fr>",
    "\"Ōkubo 大久保\" <okubo@example.jp>",
    "harbor-master@example.org",
];

/// The charset of a text part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charset {
    Utf8,
    Latin1,
}

impl Charset {
    fn name(self) -> &'static str {
        match self {
            Charset::Utf8 => "utf-8",
            Charset::Latin1 => "iso-8859-1",
        }
    }

    /// `text` in this charset. Latin-1 text must only have characters up to U+00FF.
    fn encode(self, text: &str) -> Vec<u8> {
        match self {
            Charset::Utf8 => text.as_bytes().to_vec(),
            Charset::Latin1 => text
                .chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or_else(|_| panic!("{c:?} is not Latin-1")))
                .collect(),
        }
    }
}

fn is_latin1(text: &str) -> bool {
    text.chars().all(|c| u32::from(c) <= 0xFF)
}

/// What the generator made, besides the messages: the strings the searches look for.
struct Corpus {
    /// Each message's bytes, as appended.
    messages: Vec<Vec<u8>>,
    /// The long identifiers some messages carry (longer than one index term).
    tokens: Vec<String>,
    /// Each message's Message-ID, with its angle brackets.
    ids: Vec<String>,
    /// Each message's subject, decoded.
    subjects: Vec<String>,
    seed: u64,
}

/// `n` messages from `seed`.
fn corpus(seed: u64, n: usize) -> Corpus {
    let mut rng = Rng(seed);
    let tokens: Vec<String> = (0..12)
        .map(|_| {
            let len = 70 + rng.below(60);
            let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
            (0..len).map(|_| char::from(*rng.pick(alphabet))).collect()
        })
        .collect();
    let mut c = Corpus { messages: Vec::new(), tokens, ids: Vec::new(), subjects: Vec::new(), seed };
    for i in 0..n {
        let message = message(&mut rng, &mut c, i);
        c.messages.push(message);
    }
    c
}

/// One word (or sentence) for a part in `charset`.
fn word(rng: &mut Rng, charset: Charset) -> &'static str {
    loop {
        let roll = rng.below(100);
        let w = match roll {
            0..60 => *rng.pick(&ASCII_WORDS),
            60..80 => *rng.pick(&LATIN1_WORDS),
            80..88 => *rng.pick(&OTHER_WORDS),
            88..95 => *rng.pick(&CJK),
            _ => *rng.pick(&SENTENCES),
        };
        if charset == Charset::Utf8 || is_latin1(w) {
            return w;
        }
    }
}

/// Text of `n` words with separators and line breaks, sometimes with one of the long tokens.
fn text(rng: &mut Rng, c: &Corpus, charset: Charset, n: usize) -> String {
    let mut out = String::new();
    let mut line = 0;
    let token_at = rng.chance(20).then(|| rng.below(n.max(1)));
    for k in 0..n {
        let w = if token_at == Some(k) { rng.pick(&c.tokens).as_str() } else { word(rng, charset) };
        if k > 0 {
            let separator = match rng.below(10) {
                0 => ", ",
                1 => ". ",
                _ => " ",
            };
            if line > 60 {
                out.push_str(separator.trim_end());
                out.push_str("\r\n");
                line = 0;
            } else {
                out.push_str(separator);
                line += separator.len();
            }
        }
        out.push_str(w);
        line += w.len();
    }
    out.push_str("\r\n");
    out
}

/// A text part's content transfer encoding.
#[derive(Debug, Clone, Copy)]
enum Encoding {
    /// 7bit for ASCII, 8bit otherwise: the bytes as they are.
    Identity,
    QuotedPrintable,
    Base64,
}

fn quoted_printable(bytes: &[u8]) -> String {
    let mut out = String::new();
    let text = bytes;
    let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    for (n, line) in lines.iter().enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut width = 0;
        for (k, &b) in line.iter().enumerate() {
            let last = k + 1 == line.len();
            let piece = if (33..=126).contains(&b) && b != b'=' || (b == b' ' || b == b'\t') && !last {
                char::from(b).to_string()
            } else {
                format!("={b:02X}")
            };
            if width + piece.len() > 73 {
                out.push_str("=\r\n");
                width = 0;
            }
            out.push_str(&piece);
            width += piece.len();
        }
        if n + 1 < lines.len() {
            out.push_str("\r\n");
        }
    }
    out
}

fn base64_lines(bytes: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::new();
    for chunk in encoded.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push_str("\r\n");
    }
    out
}

/// A MIME entity: its Content-* header lines, an empty line, and its body.
fn entity(header: &str, body: &[u8]) -> Vec<u8> {
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// A text part (`subtype` plain or html) of `text`, in `charset` and `encoding`.
fn text_part(subtype: &str, text: &str, charset: Charset, encoding: Encoding) -> Vec<u8> {
    let bytes = charset.encode(text);
    let (name, body) = match encoding {
        Encoding::Identity if bytes.is_ascii() => ("7bit", bytes),
        Encoding::Identity => ("8bit", bytes),
        Encoding::QuotedPrintable => ("quoted-printable", quoted_printable(&bytes).into_bytes()),
        Encoding::Base64 => ("base64", base64_lines(&bytes).into_bytes()),
    };
    let header =
        format!("Content-Type: text/{subtype}; charset={}\r\nContent-Transfer-Encoding: {name}\r\n", charset.name());
    entity(&header, &body)
}

/// A multipart entity of `parts` with its own boundary.
fn multipart(subtype: &str, boundary: &str, parts: &[Vec<u8>]) -> Vec<u8> {
    let mut body = b"This is a multi-part message in MIME format.\r\n".to_vec();
    for part in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        body.extend_from_slice(part);
        if !part.ends_with(b"\r\n") {
            body.extend_from_slice(b"\r\n");
        }
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    entity(&format!("Content-Type: multipart/{subtype}; boundary=\"{boundary}\"\r\n"), &body)
}

/// An HTML version of `text`, with markup, entities and an attribute whose text is not text.
fn html(text: &str) -> String {
    let escaped = text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    format!(
        "<html><head><title>t</title></head><body><p>{}</p>\r\n<p>Click <b>here</b> &amp; enjoy \
         &eacute;t&eacute;</p>\r\n<a href=\"https://hidden.example/attr\">link text</a></body></html>\r\n",
        escaped.replace("\r\n", "<br>\r\n")
    )
}

/// An attachment named `name` with `size` random bytes.
fn attachment(rng: &mut Rng, name: &str, size: usize) -> Vec<u8> {
    let content: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
    let parameters = if name.is_ascii() {
        format!("name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"")
    } else if rng.chance(50) {
        // RFC 2231: the name percent-encoded with its charset.
        let encoded: String =
            name.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b == b'.' { char::from(b).to_string() } else { format!("%{b:02X}") }
                })
                .collect();
        format!("name*=utf-8''{encoded}\r\nContent-Disposition: attachment; filename*=utf-8''{encoded}")
    } else {
        // RFC 2047 inside the parameter, as many mailers write it.
        let word = format!("=?utf-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(name));
        format!("name=\"{word}\"\r\nContent-Disposition: attachment; filename=\"{word}\"")
    };
    let kind = if name.ends_with(".pdf") { "application/pdf" } else { "application/octet-stream" };
    let header = format!("Content-Type: {kind}; {parameters}\r\nContent-Transfer-Encoding: base64\r\n");
    entity(&header, base64_lines(&content).as_bytes())
}

/// A header value for `text`: as it is when ASCII, otherwise raw UTF-8 or an RFC 2047
/// encoded-word (B or Q, in UTF-8 or in ISO-8859-1 when it can write it).
fn header_value(rng: &mut Rng, text: &str) -> Vec<u8> {
    if text.is_ascii() {
        return text.as_bytes().to_vec();
    }
    let q = |bytes: &[u8]| -> String {
        bytes
            .iter()
            .map(|&b| match b {
                b' ' => "_".to_string(),
                b if b.is_ascii_alphanumeric() => char::from(b).to_string(),
                b => format!("={b:02X}"),
            })
            .collect()
    };
    match rng.below(4) {
        0 => text.as_bytes().to_vec(),
        1 => format!("=?utf-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(text)).into_bytes(),
        2 => format!("=?utf-8?Q?{}?=", q(text.as_bytes())).into_bytes(),
        _ if is_latin1(text) => format!("=?iso-8859-1?Q?{}?=", q(&Charset::Latin1.encode(text))).into_bytes(),
        _ => format!("=?UTF-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(text)).into_bytes(),
    }
}

/// A text part of random charset, encoding and length.
fn random_text_part(rng: &mut Rng, c: &Corpus, subtype: &str) -> Vec<u8> {
    let charset = if rng.chance(30) { Charset::Latin1 } else { Charset::Utf8 };
    let encoding = *rng.pick(&[Encoding::Identity, Encoding::QuotedPrintable, Encoding::Base64]);
    // A few texts are longer than the index takes in the corpus test (`max_text_bytes`).
    let n = if rng.chance(3) { 1500 } else { 15 + rng.below(45) };
    let words = text(rng, c, charset, n);
    let content = if subtype == "html" { html(&words) } else { words };
    text_part(subtype, &content, charset, encoding)
}

/// The header fields every message (and attached message) starts with, ending in the
/// MIME-Version line; its subject is returned beside them.
fn envelope(rng: &mut Rng, id: &str) -> (Vec<u8>, String) {
    let words = 2 + rng.below(4);
    let subject: Vec<&str> = (0..words).map(|_| word(rng, Charset::Utf8)).collect();
    let subject = subject.join(" ");
    let mut out = b"From: ".to_vec();
    out.extend_from_slice(rng.pick(&FROMS).as_bytes());
    out.extend_from_slice(b"\r\nTo: Alice <alice@example.com>\r\nSubject: ");
    out.extend_from_slice(&header_value(rng, &subject));
    out.extend_from_slice(format!("\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: {id}\r\n").as_bytes());
    if rng.chance(30) {
        // A folded field, continued on the next line.
        let (a, b, d) = (rng.pick(&ASCII_WORDS), rng.pick(&ASCII_WORDS), rng.below(7));
        out.extend_from_slice(format!("X-Topic: {a} {b}\r\n\tcontinued-{d}\r\n").as_bytes());
    }
    out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    (out, subject)
}

/// Message `i` of the corpus.
fn message(rng: &mut Rng, c: &mut Corpus, i: usize) -> Vec<u8> {
    let id = format!("<corpus-{}-{i}.{:08x}@tern.test>", c.seed, rng.next() as u32);
    let (mut out, subject) = envelope(rng, &id);
    let boundary = |depth: usize| format!("=_b{i}_{depth}");
    // A few attachments are larger than the index takes in the corpus test
    // (`max_message_bytes`), so those messages are read by every search.
    let attachment_size = |rng: &mut Rng| if rng.chance(4) { 24 * 1024 } else { 200 + rng.below(1800) };
    let body = match rng.below(6) {
        0 => random_text_part(rng, c, "plain"),
        1 => {
            let parts = [random_text_part(rng, c, "plain"), random_text_part(rng, c, "html")];
            multipart("alternative", &boundary(0), &parts)
        }
        2 => {
            let name = *rng.pick(&FILE_NAMES);
            let size = attachment_size(rng);
            let parts = [random_text_part(rng, c, "plain"), attachment(rng, name, size)];
            multipart("mixed", &boundary(0), &parts)
        }
        3 => {
            // A forwarded message, attached whole.
            let nested_id = format!("<nested-{i}@tern.test>");
            let (mut nested, _) = envelope(rng, &nested_id);
            if rng.chance(50) {
                nested.extend(random_text_part(rng, c, "plain"));
            } else {
                let parts = [random_text_part(rng, c, "plain"), random_text_part(rng, c, "html")];
                nested.extend(multipart("alternative", &boundary(1), &parts));
            }
            let parts = [random_text_part(rng, c, "plain"), entity("Content-Type: message/rfc822\r\n", &nested)];
            multipart("mixed", &boundary(0), &parts)
        }
        4 => {
            let alternative = multipart(
                "alternative",
                &boundary(1),
                &[random_text_part(rng, c, "plain"), random_text_part(rng, c, "html")],
            );
            let name = *rng.pick(&FILE_NAMES);
            let size = attachment_size(rng);
            multipart("mixed", &boundary(0), &[alternative, attachment(rng, name, size)])
        }
        _ => random_text_part(rng, c, "html"),
    };
    out.extend(body);
    c.ids.push(id);
    c.subjects.push(subject);
    out
}

// ---------------------------------------------------------------------------------------------
// Searches, and the brute force that says what they must find.

/// A search: text keys, and the AND, OR and NOT of them.
#[derive(Debug, Clone)]
enum Query {
    Body(String),
    Text(String),
    Header(String, String),
    And(Vec<Query>),
    Or(Box<Query>, Box<Query>),
    Not(Box<Query>),
    /// LARGER: a key the session answers from the message's metadata, so that text keys are
    /// combined with the metadata path of the front-end too.
    Larger(usize),
    /// UID first:last.
    Uids(u32, u32),
}

fn body(s: &str) -> Query {
    Query::Body(s.to_string())
}

fn text_key(s: &str) -> Query {
    Query::Text(s.to_string())
}

fn header(name: &str, s: &str) -> Query {
    Query::Header(name.to_string(), s.to_string())
}

impl Query {
    /// The one text key this query is, when it is one.
    fn key(&self) -> Option<TextKey> {
        match self {
            Query::Body(s) => Some(TextKey::Body(needle(s.as_bytes()))),
            Query::Text(s) => Some(TextKey::Text(needle(s.as_bytes()))),
            Query::Header(name, s) => Some(TextKey::Header { name: name.clone(), needle: needle(s.as_bytes()) }),
            _ => None,
        }
    }

    /// Whether the message `uid` of `size` octets matches, by [`Searchable`].
    fn matches(&self, uid: u32, size: usize, message: &Searchable<'_>) -> bool {
        match self {
            Query::And(all) => all.iter().all(|q| q.matches(uid, size, message)),
            Query::Or(a, b) => a.matches(uid, size, message) || b.matches(uid, size, message),
            Query::Not(q) => !q.matches(uid, size, message),
            Query::Larger(n) => size > *n,
            Query::Uids(first, last) => (*first..=*last).contains(&uid),
            key => message.matches(&key.key().expect("a text key")),
        }
    }

    /// The query as IMAP search keys: text, and the strings that go as literals.
    fn imap(&self, out: &mut Vec<Piece>) {
        let string = |out: &mut Vec<Piece>, s: &str| {
            let plain = s.bytes().all(|b| (0x20..0x7F).contains(&b) && b != b'"' && b != b'\\');
            if plain {
                out.push(Piece::Text(format!("\"{s}\"")));
            } else {
                out.push(Piece::Literal(s.as_bytes().to_vec()));
            }
        };
        match self {
            Query::Body(s) => {
                out.push(Piece::Text("BODY ".into()));
                string(out, s);
            }
            Query::Text(s) => {
                out.push(Piece::Text("TEXT ".into()));
                string(out, s);
            }
            Query::Header(name, s) => {
                out.push(Piece::Text(format!("HEADER {name} ")));
                string(out, s);
            }
            Query::And(all) => {
                for (n, q) in all.iter().enumerate() {
                    if n > 0 {
                        out.push(Piece::Text(" ".into()));
                    }
                    q.imap(out);
                }
            }
            Query::Or(a, b) => {
                out.push(Piece::Text("OR ".into()));
                a.imap(out);
                out.push(Piece::Text(" ".into()));
                b.imap(out);
            }
            Query::Not(q) => {
                out.push(Piece::Text("NOT ".into()));
                q.imap(out);
            }
            Query::Larger(n) => out.push(Piece::Text(format!("LARGER {n}"))),
            Query::Uids(first, last) => out.push(Piece::Text(format!("UID {first}:{last}"))),
        }
    }
}

/// A piece of an IMAP command: text, or a string sent as a synchronizing literal.
#[derive(Debug)]
enum Piece {
    Text(String),
    Literal(Vec<u8>),
}

/// The messages of a folder as the test knows them: UID and bytes.
struct Stored<'a> {
    messages: Vec<(u32, usize, Searchable<'a>)>,
}

impl<'a> Stored<'a> {
    fn new(uids: &[u32], bodies: &'a [Vec<u8>]) -> Self {
        assert_eq!(uids.len(), bodies.len());
        Self { messages: uids.iter().zip(bodies).map(|(uid, raw)| (*uid, raw.len(), Searchable::new(raw))).collect() }
    }

    /// The UIDs `query` must find, ascending.
    fn expected(&self, query: &Query) -> Vec<u32> {
        let mut out: Vec<u32> =
            self.messages.iter().filter(|(uid, size, m)| query.matches(*uid, *size, m)).map(|(uid, ..)| *uid).collect();
        out.sort_unstable();
        out
    }

    /// The message sequence numbers `query` must find: the positions of its UIDs among all.
    fn expected_seqs(&self, query: &Query) -> Vec<u32> {
        let mut all: Vec<u32> = self.messages.iter().map(|(uid, ..)| *uid).collect();
        all.sort_unstable();
        let found = self.expected(query);
        all.iter().enumerate().filter(|(_, uid)| found.contains(uid)).map(|(i, _)| i as u32 + 1).collect()
    }
}

/// The searches of the corpus test, built from what the corpus holds.
fn queries(c: &Corpus) -> Vec<Query> {
    let token = |n: usize, from: usize, to: usize| {
        let t = &c.tokens[n];
        t[from.min(t.len())..to.min(t.len())].to_string()
    };
    let subject_word =
        |n: usize| c.subjects[n].split(' ').find(|w| w.chars().count() > 2).unwrap_or(&c.subjects[n]).to_string();
    vec![
        // Single words, in any case.
        body("harbor"),
        body("QUANTUM"),
        body("straße"),
        body("STRAßE"),
        body("élève"),
        body("ÉLÈVE"),
        body("grüße"),
        body("ÅNGSTRÖM"),
        body("smørrebrød"),
        body("москва"),
        body("ΟΔΟΣ"),
        body("οδοσ"),
        body("İSTANBUL"),
        body("istanbul"),
        body("stanbul"),
        // Parts of words.
        body("arbo"),
        body("raß"),
        body("lèv"),
        body("ngströ"),
        body("üß"),
        body("e"),
        body("7"),
        // Phrases, with spaces and punctuation.
        body("velvet harbor"),
        body("harbor, velvet"),
        body("10:30, room b-12"),
        body("at 10:30"),
        body("don't forget"),
        body("e-mail"),
        body("grüße aus münchen!"),
        body("crème brûlée"),
        body("here & enjoy"),
        body("e\u{301}le\u{300}ve"),
        body("hidden.example"),
        body("link text"),
        // CJK of one, two and more characters.
        body("東"),
        body("京"),
        body("東京"),
        body("京都"),
        body("東京都"),
        body("住んでいます"),
        body("한"),
        body("한국"),
        body("한국어"),
        body("北京欢迎你"),
        body("テキスト"),
        body("す。"),
        body("東京タワー"),
        // TEXT: header or body.
        text_key("harbor"),
        text_key("ångström"),
        text_key(&format!("corpus-{}-17.", c.seed)),
        text_key("message-id: <corpus"),
        text_key("jörg"),
        text_key("subject: re:"),
        // HEADER fields.
        header("Subject", &subject_word(5)),
        header("Subject", &subject_word(42)),
        header("Message-ID", &c.ids[17]),
        header("message-id", &format!("corpus-{}-2", c.seed)),
        header("X-Topic", "continued-3"),
        header("Subject", ""),
        header("X-Absent", ""),
        header("From", "müller"),
        header("Subject", "東京"),
        // Attachment names and attached messages.
        body("rechnung-2026.pdf"),
        body("holiday_photos"),
        body("quarterly report q3"),
        body("grüße.txt"),
        body("東京.png"),
        body("<nested-1"),
        body("subject: "),
        // Nothing, and strings longer than the index's exact limit (32 characters).
        body("xylophonezebra"),
        body(&token(0, 10, 40)),
        body(&token(1, 0, 32)),
        body(&token(2, 5, 50)),
        body(&token(3, 0, 200)),
        body(&token(4, 60, 93)),
        body("the meeting is at 10:30, room b-12."),
        // Punctuation and symbols only, and the empty string.
        body("😀"),
        body(", "),
        body("—"),
        body(""),
        // Several keys.
        Query::And(vec![body("harbor"), body("velvet")]),
        Query::Or(Box::new(body("東京")), Box::new(body("한국어"))),
        Query::Not(Box::new(body("harbor"))),
        Query::And(vec![body("grüße"), Query::Not(Box::new(text_key("quantum")))]),
        Query::And(vec![header("Subject", &subject_word(7)), body("e")]),
        // Text keys beside keys the session answers from metadata.
        Query::And(vec![body("harbor"), Query::Larger(4000)]),
        Query::And(vec![Query::Uids(50, 120), Query::Or(Box::new(body("東京")), Box::new(text_key("jörg")))]),
        Query::Or(Box::new(Query::Larger(20_000)), Box::new(body("ÅNGSTRÖM"))),
    ]
}

/// `n` BODY and TEXT searches for strings cut at random from the messages' own searchable
/// text (so they mix scripts, punctuation and line breaks as the text does), some of them in
/// upper case: each finds at least the message it came from unless upper case changed it.
fn random_queries(stored: &Stored<'_>, rng: &mut Rng, n: usize) -> Vec<Query> {
    let mut out = Vec::new();
    while out.len() < n {
        let (_, _, message) = &stored.messages[rng.below(stored.messages.len())];
        let in_header = rng.chance(25);
        let source = if in_header { message.header_text() } else { message.body() };
        let chars: Vec<char> = source.chars().collect();
        if chars.is_empty() {
            continue;
        }
        let start = rng.below(chars.len());
        let end = (start + 1 + rng.below(40)).min(chars.len());
        let mut needle: String = chars[start..end].iter().collect();
        if rng.chance(30) {
            needle = needle.to_uppercase();
        }
        out.push(if in_header { Query::Text(needle) } else { Query::Body(needle) });
    }
    out
}

/// A smaller set of single-key searches, for the tests that ask many times over a larger
/// corpus: exact words and CJK, narrowed phrases, TEXT, HEADER, names, long and empty strings.
fn few_queries(c: &Corpus) -> Vec<Query> {
    let t = &c.tokens[2];
    vec![
        body("harbor"),
        body("straße"),
        body("ÅNGSTRÖM"),
        body("東"),
        body("東京"),
        body("東京都"),
        body("한국어"),
        body("arbo"),
        body("at 10:30"),
        text_key("harbor"),
        header("Subject", c.subjects[3].split(' ').next().unwrap_or("")),
        header("Message-ID", &c.ids[17]),
        body("rechnung-2026.pdf"),
        body("xylophonezebra"),
        body(&t[5..50.min(t.len())]),
        body(&t[3..33]),
        body("😀"),
    ]
}

// ---------------------------------------------------------------------------------------------
// Talking to the servers.

/// Appends `messages` to the INBOX of `account` in batches (AppendAll stores its messages
/// verbatim, as IMAP MULTIAPPEND), and returns their UIDs in order.
async fn append_all(mail: &mut Mailbox, account: u64, messages: &[Vec<u8>]) -> Vec<u32> {
    let mut uids = Vec::new();
    for batch in messages.chunks(50) {
        let mut requests = Vec::new();
        for m in batch {
            let header = AppendHeader {
                account_id: account,
                folder: Some(FolderRef::name("INBOX")),
                flags: vec![],
                internal_date: 0,
                size_hint: 0,
                ..Default::default()
            };
            requests.push(AppendRequest { part: Some(append_request::Part::Header(header)) });
            requests.extend(
                m.chunks(tern_tests::CHUNK)
                    .map(|c| AppendRequest { part: Some(append_request::Part::Chunk(c.to_vec())) }),
            );
        }
        let appended =
            mail.append_all(futures::stream::iter(requests)).await.expect("append a batch").into_inner().appended;
        assert_eq!(appended.len(), batch.len());
        uids.extend(appended.iter().map(|a| a.uid));
    }
    uids
}

async fn inbox_id(mail: &mut Mailbox, account: u64) -> u64 {
    let selected = mail
        .select(SelectRequest { account_id: account, folder: Some(FolderRef::name("INBOX")) })
        .await
        .expect("select INBOX")
        .into_inner();
    selected.folder.expect("a folder").id
}

async fn index_status(admin: &mut Admin) -> IndexStatus {
    admin.get_index_status(GetIndexStatusRequest { address: ALICE.into() }).await.expect("GetIndexStatus").into_inner()
}

/// Waits until the index covers all `messages` of the account.
async fn wait_indexed(admin: &mut Admin, messages: u64) -> IndexStatus {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = index_status(admin).await;
        assert_eq!(status.messages, messages, "the account's messages: {status:?}");
        if status.indexed == messages {
            return status;
        }
        assert!(tokio::time::Instant::now() < deadline, "the index did not catch up within {WAIT:?}: {status:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// SearchText with the one key of `query`.
async fn search_text(mail: &mut Mailbox, account: u64, folder: u64, query: &Query) -> SearchTextResponse {
    let key = match query.key().expect("a single text key") {
        TextKey::Body(needle) => SearchTextKey { field: TextField::Body as i32, header: String::new(), needle },
        TextKey::Text(needle) => SearchTextKey { field: TextField::Text as i32, header: String::new(), needle },
        TextKey::Header { name, needle } => SearchTextKey { field: TextField::Header as i32, header: name, needle },
    };
    mail.search_text(SearchTextRequest { account_id: account, folder_id: folder, keys: vec![key] })
        .await
        .unwrap_or_else(|e| panic!("SearchText {query:?}: {e}"))
        .into_inner()
}

/// Asks SearchText every query that is a single key, checks each answer against the brute
/// force, and returns the messages answered from the index and read, in all.
async fn check_search_text(
    mail: &mut Mailbox,
    account: u64,
    folder: u64,
    stored: &Stored<'_>,
    queries: &[Query],
    when: &str,
) -> (u64, u64) {
    let (mut indexed, mut scanned) = (0, 0);
    for query in queries.iter().filter(|q| q.key().is_some()) {
        let response = search_text(mail, account, folder, query).await;
        let got = response.results.first().map(|r| r.uids.clone()).unwrap_or_default();
        let want = stored.expected(query);
        assert_eq!(
            got, want,
            "{when}: SearchText {query:?} (indexed {}, scanned {})",
            response.indexed, response.scanned
        );
        indexed += u64::from(response.indexed);
        scanned += u64::from(response.scanned);
    }
    (indexed, scanned)
}

/// Sends an IMAP command made of `pieces` after `prefix`, sending each literal after the
/// server's continuation request, and returns the numbers of its `* SEARCH` or `* SORT` reply.
async fn imap_numbers(imap: &mut ImapClient<BoxIo>, prefix: &str, pieces: &[Piece]) -> Vec<u32> {
    let tag = imap.tag();
    let mut pending = format!("{tag} {prefix} ").into_bytes();
    for piece in pieces {
        match piece {
            Piece::Text(t) => pending.extend_from_slice(t.as_bytes()),
            Piece::Literal(bytes) => {
                pending.extend_from_slice(format!("{{{}}}\r\n", bytes.len()).as_bytes());
                imap.send(&pending).await.expect("send a command line");
                let r = imap.read_response().await.expect("the continuation request");
                assert!(r.0.starts_with(b"+"), "expected a continuation request, got {:?}", r.text());
                pending = bytes.clone();
            }
        }
    }
    pending.extend_from_slice(b"\r\n");
    imap.send(&pending).await.expect("send the end of a command");
    let c = imap.complete(&tag).await.unwrap_or_else(|e| panic!("{prefix} {pieces:?}: {e}"));
    assert!(c.status.starts_with("OK"), "{prefix} {pieces:?}: {:?}", c.status);
    let mut out: Vec<u32> = Vec::new();
    for line in c.lines() {
        if let Some(rest) = line.strip_prefix("* SEARCH").or_else(|| line.strip_prefix("* SORT")) {
            out.extend(rest.split_ascii_whitespace().filter_map(|n| n.parse::<u32>().ok()));
        }
    }
    out
}

async fn imap_search(imap: &mut ImapClient<BoxIo>, query: &Query) -> Vec<u32> {
    let mut pieces = Vec::new();
    query.imap(&mut pieces);
    let mut uids = imap_numbers(imap, "UID SEARCH CHARSET UTF-8", &pieces).await;
    uids.sort_unstable();
    uids
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_searches_match_brute_force() {
    let started = std::time::Instant::now();
    // Messages over 16 KiB, or with more than 8 KiB of text, are left out of the index, so
    // that some of the corpus is always read.
    let search = Settings { max_message_bytes: 16 * 1024, max_text_bytes: 8 * 1024, ..Settings::default() };
    let options = ImapOptions {
        mailbox_limits: Limits { search, ..tern_tests::common::lenient_mailbox_limits() },
        ..ImapOptions::default()
    };
    let server = ImapTestServer::start_with(options).await;
    let alice = server.account_id(ALICE);
    let mut mail = server.mailbox_client().await;
    let mut admin = server.mailbox.admin_client().await;

    let c = corpus(1, 250);
    let uids = append_all(&mut mail, alice, &c.messages).await;
    let folder = inbox_id(&mut mail, alice).await;
    // The service stores what it was given, byte for byte; the brute force reads those bytes.
    for (uid, raw) in uids.iter().zip(&c.messages) {
        let (stored, _) = tern_tests::fetch_body(&mut mail, alice, folder, *uid, 0, 0).await.expect("fetch a body");
        assert!(stored == *raw, "message {uid} was stored differently");
    }
    let stored = Stored::new(&uids, &c.messages);

    let status = wait_indexed(&mut admin, c.messages.len() as u64).await;
    assert!(status.skipped > 0, "some messages are over the index's limits: {status:?}");
    assert!(status.skipped < status.messages / 4, "most messages are indexed: {status:?}");
    assert!(status.index_bytes > 0 && status.message_bytes > 0, "{status:?}");

    // Every search through IMAP, with the strings as the client typed them.
    let mut imap = server.login(ALICE).await;
    imap.ok("SELECT INBOX").await;
    let queries = queries(&c);
    let mut selective = 0;
    for query in &queries {
        let want = stored.expected(query);
        let got = imap_search(&mut imap, query).await;
        assert_eq!(got, want, "UID SEARCH {query:?}");
        if !want.is_empty() && want.len() < uids.len() {
            selective += 1;
        }
    }
    // The corpus is made so that most searches find some messages and not all.
    assert!(selective * 10 >= queries.len() * 7, "only {selective} of {} searches are selective", queries.len());

    // Strings cut from the messages at random places, through SearchText, and those without
    // a line break through IMAP too.
    let random = random_queries(&stored, &mut Rng(c.seed ^ 0x5EA2C4), 150);
    check_search_text(&mut mail, alice, folder, &stored, &random, "random").await;
    let one_line = random.iter().filter(|q| q.key().is_some_and(|k| !k.needle().contains(['\r', '\n'])));
    for query in one_line.take(50) {
        assert_eq!(imap_search(&mut imap, query).await, stored.expected(query), "UID SEARCH {query:?}");
    }

    // SORT answers its text keys the same way; the order is the arrival order, here UIDs.
    for query in [body("東京"), Query::And(vec![body("harbor"), Query::Not(Box::new(text_key("grüße")))])] {
        let mut pieces = Vec::new();
        query.imap(&mut pieces);
        let got = imap_numbers(&mut imap, "UID SORT (ARRIVAL) UTF-8", &pieces).await;
        assert_eq!(got, stored.expected(&query), "UID SORT (ARRIVAL) {query:?}");
    }

    // The same single keys asked of SearchText directly.
    let (indexed, scanned) = check_search_text(&mut mail, alice, folder, &stored, &queries, "indexed").await;
    // An exact one-word search is answered from the index: only the skipped messages are read.
    let exact = search_text(&mut mail, alice, folder, &body("harbor")).await;
    assert!(exact.indexed > 0, "an exact search is answered from the index: {exact:?}");
    assert_eq!(u64::from(exact.scanned), status.skipped, "only the skipped messages are read: {exact:?}");

    // Read-your-writes: a message appended now is found at once, before the indexer (which
    // waits half a second before it indexes) has seen it.
    let fresh = tern_tests::message("fresh", "a brand new word: zyzzyvaquokka, and 東京");
    let new_uid = append_all(&mut mail, alice, std::slice::from_ref(&fresh)).await[0];
    let found = search_text(&mut mail, alice, folder, &body("zyzzyvaquokka")).await;
    assert_eq!(found.results[0].uids, [new_uid], "the new message is found at once: {found:?}");
    let found = search_text(&mut mail, alice, folder, &body("東京")).await;
    let mut want = stored.expected(&body("東京"));
    want.push(new_uid);
    assert_eq!(found.results[0].uids, want, "the new message is found at once beside the indexed ones");
    imap.ok("NOOP").await;
    assert_eq!(imap_search(&mut imap, &body("ZYZZYVAQUOKKA")).await, [new_uid]);
    wait_indexed(&mut admin, c.messages.len() as u64 + 1).await;
    let found = search_text(&mut mail, alice, folder, &body("zyzzyvaquokka")).await;
    assert_eq!((found.results[0].uids.as_slice(), found.indexed), ([new_uid].as_slice(), 1), "{found:?}");

    // Moves and expunges: the index drops what left a folder and adds what arrived in another.
    // The session's own view never shows a UID it no longer has, whatever the index says; once
    // the index has caught up, SearchText no longer answers those UIDs either. (Archive is one
    // of the folders every account starts with, empty.)
    let moved: Vec<u32> = uids[..10].to_vec();
    let expunged: Vec<u32> = uids[10..30].to_vec();
    imap.ok(&format!("UID MOVE {}:{} Archive", moved[0], moved[9])).await;
    imap.ok(&format!("UID STORE {}:{} +FLAGS.SILENT (\\Deleted)", expunged[0], expunged[19])).await;
    imap.ok("EXPUNGE").await;
    let mut kept_uids: Vec<u32> = uids[30..].to_vec();
    let mut kept: Vec<Vec<u8>> = c.messages[30..].to_vec();
    kept_uids.push(new_uid);
    kept.push(fresh.clone());
    let inbox = Stored::new(&kept_uids, &kept);
    let selected = mail
        .select(SelectRequest { account_id: alice, folder: Some(FolderRef::name("Archive")) })
        .await
        .expect("select Archive")
        .into_inner();
    let archive_uids: Vec<u32> = selected.messages.iter().map(|m| m.uid).collect();
    let archive_id = selected.folder.expect("a folder").id;
    let mut archived = Vec::new();
    for uid in &archive_uids {
        archived.push(tern_tests::fetch_body(&mut mail, alice, archive_id, *uid, 0, 0).await.expect("fetch a body").0);
    }
    assert_eq!(archived, c.messages[..10], "MOVE keeps the bytes");
    let archive = Stored::new(&archive_uids, &archived);
    check_search_text(&mut mail, alice, archive_id, &archive, &queries, "Archive, just moved").await;
    for query in &queries {
        assert_eq!(imap_search(&mut imap, query).await, inbox.expected(query), "after MOVE and EXPUNGE: {query:?}");
    }
    // SEARCH without UID answers sequence numbers, which the expunges have shifted; ESEARCH's
    // COUNT counts the same matches.
    for query in [body("harbor"), body("東京都"), Query::And(vec![text_key("grüße"), Query::Larger(3000)])] {
        let mut pieces = Vec::new();
        query.imap(&mut pieces);
        let got = imap_numbers(&mut imap, "SEARCH CHARSET UTF-8", &pieces).await;
        assert_eq!(got, inbox.expected_seqs(&query), "SEARCH {query:?}");
        let tag = imap.tag();
        let mut command = format!("{tag} UID SEARCH RETURN (COUNT) CHARSET UTF-8 ").into_bytes();
        for piece in &pieces {
            match piece {
                Piece::Text(t) => command.extend_from_slice(t.as_bytes()),
                // LITERAL+: the string follows its announcement without waiting.
                Piece::Literal(bytes) => {
                    command.extend_from_slice(format!("{{{}+}}\r\n", bytes.len()).as_bytes());
                    command.extend_from_slice(bytes);
                }
            }
        }
        command.extend_from_slice(b"\r\n");
        imap.send(&command).await.expect("send UID SEARCH RETURN (COUNT)");
        let done = imap.complete(&tag).await.expect("the ESEARCH reply");
        assert!(done.status.starts_with("OK"), "{done:?}");
        let count: Option<usize> = done.lines().iter().find_map(|l| {
            let rest = l.strip_prefix("* ESEARCH")?;
            let words: Vec<&str> = rest.split_ascii_whitespace().collect();
            words.windows(2).find(|w| w[0] == "COUNT").and_then(|w| w[1].parse().ok())
        });
        assert_eq!(count, Some(inbox.expected(&query).len()), "UID SEARCH RETURN (COUNT) {query:?}: {done:?}");
    }
    let remaining = kept_uids.len() as u64 + archive_uids.len() as u64;
    wait_indexed(&mut admin, remaining).await;
    check_search_text(&mut mail, alice, folder, &inbox, &queries, "INBOX, indexed after MOVE and EXPUNGE").await;
    check_search_text(&mut mail, alice, archive_id, &archive, &queries, "Archive, indexed").await;
    let exact = search_text(&mut mail, alice, archive_id, &body("harbor")).await;
    assert_eq!(exact.results[0].uids, archive.expected(&body("harbor")));
    // Only those over the index's limits are read.
    assert!((exact.scanned as usize) < archive_uids.len(), "the moved messages are in the index: {exact:?}");

    imap.logout().await;
    println!(
        "search corpus: {} messages, {} queries ({selective} selective), SearchText answered {indexed} from the \
         index and read {scanned}; {:?}",
        c.messages.len(),
        queries.len(),
        started.elapsed()
    );
}

/// Copies a live data directory as a crash would leave it. The index goes first, so that it
/// is no newer than the metadata copied after it (as on disk, where the indexer follows the
/// store); and of an index directory, tantivy's `meta.json` goes first, so that the copy never
/// names a segment whose files were still being written (tantivy writes and syncs a segment
/// before the `meta.json` naming it). Files that vanish meanwhile (merged away) are left out,
/// as a crash would have left them in place; an index that then lacks a file is one the server
/// must rebuild, which the test also allows.
fn crash_copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy's directory");
    let mut entries: Vec<(PathBuf, bool)> = std::fs::read_dir(from)
        .expect("read a directory to copy")
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.path(), e.file_type().ok()?.is_dir())))
        .collect();
    entries.sort_by_key(|(path, _)| match path.file_name().and_then(|n| n.to_str()) {
        Some("meta.json") | Some("index") => 0,
        _ => 1,
    });
    for (path, is_dir) in entries {
        let target = to.join(path.file_name().expect("a file name"));
        if is_dir {
            crash_copy(&path, &target);
        } else {
            match std::fs::copy(&path, &target) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("copy {}: {e}", path.display()),
            }
        }
    }
}

/// The segments tantivy's `meta.json` names in an index directory, with their documents.
fn segments(index_dir: &Path) -> Vec<(String, u64)> {
    let meta = std::fs::read(index_dir.join("meta.json")).expect("read meta.json");
    let meta: serde_json::Value = serde_json::from_slice(&meta).expect("meta.json is JSON");
    meta["segments"]
        .as_array()
        .expect("a list of segments")
        .iter()
        .map(|s| (s["segment_id"].as_str().expect("a segment id").replace('-', ""), s["max_doc"].as_u64().unwrap_or(0)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_survives_a_crash_and_a_lost_segment() {
    let started = std::time::Instant::now();
    // The crashing server's indexer gathers changes for a second before each pass, so that the
    // crash finds it behind (but usually with part of the mail indexed); the server started
    // after the crash has the default settings.
    let search = Settings { commit_delay: Duration::from_secs(1), ..Settings::default() };
    let mut server = TestServer::start(Limits { search, ..Limits::default() }).await;
    let mut admin = server.admin_client().await;
    let alice = setup_account(&mut admin, ALICE, "pw").await.id;
    let mut mail = server.mailbox_client().await;
    let c = corpus(2, 1500);
    let uids = append_all(&mut mail, alice, &c.messages).await;
    let messages = c.messages.len() as u64;
    let stored = Stored::new(&uids, &c.messages);
    let queries = few_queries(&c);

    // The crash: right after the last append was acknowledged, while the indexer is busy.
    let on_disk = tempfile::tempdir().expect("a temporary directory");
    crash_copy(&server.data_dir, on_disk.path());
    server.kill().await;
    drop((mail, admin));
    let mut crashed = TestServer::start_from_copy(Limits::default(), on_disk.path()).await;
    let mut admin = crashed.admin_client().await;
    let mut mail = crashed.mailbox_client().await;
    let folder = inbox_id(&mut mail, alice).await;
    let after_crash = index_status(&mut admin).await;
    assert_eq!(after_crash.messages, messages);
    assert!(after_crash.indexed < messages, "the crash left the index behind: {after_crash:?}");

    // Right away: what the index lacks is read, and every answer is the brute force's.
    let (_, scanned) = check_search_text(&mut mail, alice, folder, &stored, &queries, "after the crash").await;
    assert!(scanned > 0, "the messages the index lacks are read: {after_crash:?}");
    let caught_up = wait_indexed(&mut admin, messages).await;
    let (indexed, _) =
        check_search_text(&mut mail, alice, folder, &stored, &queries, "caught up after the crash").await;
    assert!(indexed > 0, "exact searches are answered from the index once it caught up");

    // A lost segment file: the index no longer opens, so it is dropped and rebuilt, and the
    // answers meanwhile are read from the messages.
    drop((mail, admin));
    crashed.stop().await;
    let index_dir = crashed.data_dir.join("index").join(alice.to_string());
    let (lost, docs) = segments(&index_dir).into_iter().max_by_key(|(_, docs)| *docs).expect("a segment");
    assert!(docs > 0);
    std::fs::remove_file(index_dir.join(format!("{lost}.idx"))).expect("delete a segment's postings");
    crashed.restart().await;
    let mut admin = crashed.admin_client().await;
    let mut mail = crashed.mailbox_client().await;
    let broken = index_status(&mut admin).await;
    assert!(broken.indexed < messages, "the broken index is not served: {broken:?}");
    check_search_text(&mut mail, alice, folder, &stored, &queries, "with a segment lost").await;
    let rebuilt = wait_indexed(&mut admin, messages).await;
    assert!(segments(&index_dir).iter().all(|(id, _)| *id != lost), "the rebuilt index does not name the lost segment");
    let (indexed, _) = check_search_text(&mut mail, alice, folder, &stored, &queries, "rebuilt").await;
    assert!(indexed > 0, "exact searches are answered from the rebuilt index");
    println!(
        "search crash: {messages} messages, {} indexed at the crash, caught up {caught_up:?}, {} after losing a \
         segment, rebuilt {rebuilt:?}; {:?}",
        after_crash.indexed,
        broken.indexed,
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_reports_progress_and_keeps_answers() {
    // Small batches, so that a reindex reports several steps.
    let limits = Limits { search: Settings { batch: 40, ..Settings::default() }, ..Limits::default() };
    let server = TestServer::start(limits).await;
    let mut admin = server.admin_client().await;
    let alice = setup_account(&mut admin, ALICE, "pw").await.id;
    let mut mail = server.mailbox_client().await;
    let c = corpus(3, 250);
    let uids = append_all(&mut mail, alice, &c.messages).await;
    let messages = c.messages.len() as u64;
    let folder = inbox_id(&mut mail, alice).await;
    let stored = Stored::new(&uids, &c.messages);
    let queries = few_queries(&c);
    wait_indexed(&mut admin, messages).await;
    check_search_text(&mut mail, alice, folder, &stored, &queries, "before the reindex").await;

    let mut progress =
        admin.reindex(ReindexRequest { address: ALICE.into() }).await.expect("start a reindex").into_inner();
    let mut steps: Vec<ReindexProgress> = Vec::new();
    let mut searched_during = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let next = tokio::time::timeout_at(deadline, progress.message())
            .await
            .unwrap_or_else(|_| panic!("the reindex did not finish within {WAIT:?}: {steps:?}"))
            .expect("reindex progress");
        let Some(step) = next else { break };
        let finished = step.finished;
        steps.push(step);
        if !searched_during && !finished {
            // Searches stay right while the index is being rebuilt.
            check_search_text(&mut mail, alice, folder, &stored, &queries, "during the reindex").await;
            searched_during = true;
        }
    }
    assert!(!steps.is_empty(), "the reindex reported nothing");
    for pair in steps.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(b.done >= a.done && b.bytes >= a.bytes && b.total == a.total, "progress went back: {steps:?}");
        assert!(!a.finished, "only the last step is finished: {steps:?}");
    }
    assert!(steps.iter().all(|s| s.address == ALICE && s.done <= s.total), "{steps:?}");
    let last = steps.last().expect("a last step");
    assert!(last.finished, "the last step says finished: {steps:?}");
    assert_eq!((last.done, last.total), (messages, messages), "the reindex covered every message: {steps:?}");
    assert!(last.bytes > 0, "{steps:?}");

    let status = wait_indexed(&mut admin, messages).await;
    assert_eq!(status.skipped, 0, "{status:?}");
    let (indexed, _) = check_search_text(&mut mail, alice, folder, &stored, &queries, "after the reindex").await;
    assert!(indexed > 0, "exact searches are answered from the rebuilt index");
    println!("search reindex: {} progress steps: {steps:?}", steps.len());
}

/// On NATS, the replica that writes an account's index dies, twice over: the other replicas
/// answer correctly at once (reading what the index lacks), one of them takes the writer's
/// lease over once it lapses and brings the index up to date from the copy in the object
/// store, and a replica started afterwards answers from that shared index without reading a
/// message. The lease is a second here, thirty in production.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_index_writer_is_replaced() {
    let nats =
        tokio::task::spawn_blocking(tern_testbed::Nats::start).await.expect("start task").expect("start nats-server");
    let limits = Limits {
        search: Settings {
            lease: Duration::from_secs(1),
            commit_delay: Duration::from_millis(100),
            ..Settings::default()
        },
        ..Limits::default()
    };
    let mut a = TestServer::start_on_nats(limits, &nats.url()).await;
    let mut b = a.replica().await;
    let alice = setup_account(&mut a.admin_client().await, ALICE, "pw").await.id;
    let c = corpus(11, 180);
    let (first, rest) = c.messages.split_at(60);
    let (second, third) = rest.split_at(60);
    let queries = few_queries(&c);

    // Sixty messages through A, indexed by whichever replica took the lease.
    let mut uids = append_all(&mut a.mailbox_client().await, alice, first).await;
    let folder = inbox_id(&mut a.mailbox_client().await, alice).await;
    wait_indexed(&mut a.admin_client().await, 60).await;

    // A dies; sixty more through B, which answers at once and has the index caught up.
    a.kill().await;
    uids.extend(append_all(&mut b.mailbox_client().await, alice, second).await);
    let stored = Stored::new(&uids, &c.messages[..120]);
    check_search_text(&mut b.mailbox_client().await, alice, folder, &stored, &queries, "right after A died").await;
    wait_indexed(&mut b.admin_client().await, 120).await;
    let (_, scanned_by_b) =
        check_search_text(&mut b.mailbox_client().await, alice, folder, &stored, &queries, "B caught up").await;

    // A new replica C answers from the shared index: it reads just what B, with the whole
    // index, reads (candidates of the narrowing searches, messages skipped for their size),
    // so every message below the marks came from the copy it downloaded.
    let mut cc = b.replica().await;
    let (indexed, scanned) =
        check_search_text(&mut cc.mailbox_client().await, alice, folder, &stored, &queries, "on a new replica").await;
    assert!(indexed > 0, "the new replica answered nothing from the shared index");
    assert_eq!(scanned, scanned_by_b, "the new replica read more messages than the writer");

    // B dies too; C takes over the writing.
    b.kill().await;
    uids.extend(append_all(&mut cc.mailbox_client().await, alice, third).await);
    let stored = Stored::new(&uids, &c.messages);
    check_search_text(&mut cc.mailbox_client().await, alice, folder, &stored, &queries, "right after B died").await;
    wait_indexed(&mut cc.admin_client().await, 180).await;
    check_search_text(&mut cc.mailbox_client().await, alice, folder, &stored, &queries, "after C took over").await;
    cc.stop().await;
}
