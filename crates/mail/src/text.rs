//! The searchable text of a message, as IMAP SEARCH's HEADER, BODY and TEXT keys see it
//! (RFC 9051 section 6.4.4), written once for the two places that compare against it: the IMAP
//! front-end's scan of a message and the mailbox service's full-text index, which indexes
//! exactly these strings so that its answers are the scan's answers.
//!
//! - Header values are unfolded and their RFC 2047 encoded-words decoded.
//! - The body is the decoded text of every text part (base64 and quoted-printable undone,
//!   charsets converted to UTF-8 by mail-parser, HTML reduced to text), the header and text of
//!   attached messages, and the file names of attachments, one part per line so that no match
//!   spans two parts.
//! - Comparison is case-insensitive by Unicode lowercasing of both sides ([`str::to_lowercase`]
//!   of the whole text), then plain substring search. An empty search string matches every
//!   message, except that HEADER with an empty value matches the messages that have the field.

use mail_parser::decoders::html::html_to_text;
use mail_parser::parsers::MessageStream;
use mail_parser::{HeaderValue, Message, MessageParser, MimeHeaders, PartType};

/// One text search key, its search string already lowercased ([`needle`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TextKey {
    /// BODY: the body text.
    Body(String),
    /// TEXT: the header text or the body text.
    Text(String),
    /// HEADER name value: the value of a top-level field of that name (ASCII case-insensitive).
    Header { name: String, needle: String },
}

impl TextKey {
    /// The key's search string.
    pub fn needle(&self) -> &str {
        match self {
            TextKey::Body(n) | TextKey::Text(n) | TextKey::Header { needle: n, .. } => n,
        }
    }
}

/// A search string as compared: UTF-8 (invalid sequences become U+FFFD rather than failing the
/// search), lowercased.
pub fn needle(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_lowercase()
}

/// A message's searchable text, each part computed when first asked for.
#[derive(Debug)]
pub struct Searchable<'a> {
    raw: &'a [u8],
    headers: std::cell::OnceCell<Vec<(String, String)>>,
    header_text: std::cell::OnceCell<String>,
    body: std::cell::OnceCell<String>,
}

impl<'a> Searchable<'a> {
    pub fn new(raw: &'a [u8]) -> Self {
        Self { raw, headers: Default::default(), header_text: Default::default(), body: Default::default() }
    }

    /// The top-level header fields: names as written, values unfolded, decoded and lowercased.
    pub fn headers(&self) -> &[(String, String)] {
        self.headers.get_or_init(|| {
            header_fields(self.raw)
                .into_iter()
                .map(|(name, value)| (name, decode_words(&value).to_lowercase()))
                .collect()
        })
    }

    /// The top-level header as `name: value` lines, lowercased: what TEXT searches besides the
    /// body.
    pub fn header_text(&self) -> &str {
        self.header_text.get_or_init(|| {
            let mut out = String::new();
            for (name, value) in self.headers() {
                out.push_str(&name.to_lowercase());
                out.push_str(": ");
                out.push_str(value);
                out.push('\n');
            }
            out
        })
    }

    /// The body text, lowercased.
    pub fn body(&self) -> &str {
        self.body.get_or_init(|| body_text(self.raw).to_lowercase())
    }

    /// Whether the field `name` has a value containing `needle` (lowercased).
    pub fn header_contains(&self, name: &str, needle: &str) -> bool {
        self.headers().iter().any(|(n, v)| n.eq_ignore_ascii_case(name) && v.contains(needle))
    }

    /// Whether the message matches `key`.
    pub fn matches(&self, key: &TextKey) -> bool {
        match key {
            TextKey::Body(n) => self.body().contains(n.as_str()),
            TextKey::Text(n) => self.header_text().contains(n.as_str()) || self.body().contains(n.as_str()),
            TextKey::Header { name, needle } => self.header_contains(name, needle),
        }
    }
}

/// Decodes the RFC 2047 encoded-words of an unfolded header value.
pub fn decode_words(value: &[u8]) -> String {
    // mail-parser's unstructured-field parser reads up to the end of a header line, so the value
    // gets one; line breaks inside it would end it early and are dropped, as unfolding does.
    let mut line: Vec<u8> = value.iter().copied().filter(|b| !matches!(b, b'\r' | b'\n')).collect();
    line.push(b'\n');
    match MessageStream::new(&line).parse_unstructured() {
        HeaderValue::Text(text) => text.into_owned(),
        _ => String::new(),
    }
}

/// Splits the header block at the start of `raw` into fields: the name as written and the value
/// unfolded (line breaks removed, the leading whitespace of continuation lines kept). The block
/// ends at the first empty line. Lines that are neither fields nor continuations are skipped.
pub fn header_fields(raw: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(&first) = line.first() else { break };
        if first == b' ' || first == b'\t' {
            if let Some((_, value)) = out.last_mut() {
                value.extend_from_slice(line);
            }
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        // RFC 5322 field names are printable ASCII without spaces; obsolete syntax allows
        // whitespace before the colon.
        let name = line[..colon].trim_ascii_end();
        if !name.is_empty() && name.iter().all(|b| (33..=126).contains(b)) {
            out.push((String::from_utf8_lossy(name).into_owned(), line[colon + 1..].to_vec()));
        }
    }
    out
}

/// The decoded text of a message's body: every text part (HTML reduced to text), the header
/// and text parts of attached messages, and the names of attached files, separated by line
/// breaks so that no match spans two parts.
pub fn body_text(raw: &[u8]) -> String {
    let Some(message) = MessageParser::default().parse(raw) else {
        // Not even a header was found: the bytes are all body.
        return String::from_utf8_lossy(raw).into_owned();
    };
    let mut out = String::new();
    let mut stack: Vec<&Message<'_>> = vec![&message];
    while let Some(m) = stack.pop() {
        for part in &m.parts {
            match &part.body {
                PartType::Text(text) => push_line(&mut out, text),
                PartType::Html(html) => push_line(&mut out, &html_to_text(html)),
                PartType::Message(nested) => {
                    // The attached message's header is part of the outer message's body.
                    if let Some(root) = nested.parts.first() {
                        let start = root.offset_header as usize;
                        let end = root.offset_body as usize;
                        if let Some(block) = nested.raw_message.get(start..end.max(start)) {
                            for (name, value) in header_fields(block) {
                                push_line(&mut out, &format!("{name}: {}", decode_words(&value)));
                            }
                        }
                    }
                    stack.push(nested);
                }
                PartType::Binary(_) | PartType::InlineBinary(_) => {
                    // An attachment's content is not text, but its name is what people search
                    // for ("the invoice PDF").
                    if let Some(name) = part.attachment_name() {
                        push_line(&mut out, name);
                    }
                }
                PartType::Multipart(_) => {}
            }
        }
    }
    out
}

fn push_line(out: &mut String, text: &str) {
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(text);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crlf(s: &str) -> Vec<u8> {
        s.replace('\n', "\r\n").into_bytes()
    }

    #[test]
    fn keys_match_decoded_text() {
        let raw = crlf(
            "Subject: =?utf-8?q?M=C3=BCnchen?=\nX-Tag: Blue\n  Moon\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\nGr=C3=BC=C3=9Fe aus Berlin\n--b\nContent-Type: application/pdf; name=\"Invoice-42.pdf\"\nContent-Disposition: attachment; filename=\"Invoice-42.pdf\"\nContent-Transfer-Encoding: base64\n\nJVBERi0=\n--b--\n",
        );
        let s = Searchable::new(&raw);
        assert!(s.matches(&TextKey::Body(needle("GRÜSSE".as_bytes()).replace("ss", "ß"))));
        assert!(s.matches(&TextKey::Body("invoice-42".into())));
        assert!(!s.matches(&TextKey::Body("münchen".into())));
        assert!(s.matches(&TextKey::Text("münchen".into())));
        assert!(s.matches(&TextKey::Header { name: "x-tag".into(), needle: "blue  moon".into() }));
        assert!(!s.matches(&TextKey::Header { name: "subject".into(), needle: "blue".into() }));
        assert!(s.matches(&TextKey::Header { name: "X-TAG".into(), needle: String::new() }));
        assert!(!s.matches(&TextKey::Header { name: "cc".into(), needle: String::new() }));
    }
}
