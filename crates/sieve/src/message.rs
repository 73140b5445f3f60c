//! The message as a script sees it: its header fields in order (which `editheader` changes),
//! decoded header values, the addresses in address headers, dates, and the body parts the
//! `body` test reads.
//!
//! Header fields are kept raw (name and unfolded raw value) so that an edited message can be
//! written back byte for byte apart from the edits; decoding (RFC 2047 encoded words, address
//! lists, dates) is mail-parser's, done when a test asks for it.

use mail_parser::{HeaderValue, MessageParser, MimeHeaders, PartType, parsers::MessageStream};

/// One header field: its name as written and its raw value (after the colon, with the line
/// breaks of folding kept, without the final line break).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub raw: Vec<u8>,
}

/// A message split into its header fields and its body.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub fields: Vec<Field>,
    /// The body, after the blank line that ends the header.
    pub body: Vec<u8>,
    /// The line ending the message uses, to write added fields the same way.
    pub crlf: bool,
    /// Whether `editheader` changed the fields.
    pub edited: bool,
}

impl Parsed {
    pub fn new(message: &[u8]) -> Parsed {
        // The first line break decides.
        let crlf = message.iter().position(|&b| b == b'\n').is_some_and(|at| at > 0 && message[at - 1] == b'\r');
        let mut fields: Vec<Field> = Vec::new();
        let mut at = 0;
        let mut body_start = message.len();
        while at < message.len() {
            let end = message[at..].iter().position(|&b| b == b'\n').map_or(message.len(), |p| at + p + 1);
            let line = &message[at..end];
            let content = trim_eol(line);
            if content.is_empty() {
                body_start = end;
                break;
            }
            if matches!(content[0], b' ' | b'\t') {
                // A continuation line: part of the previous field's value.
                if let Some(last) = fields.last_mut() {
                    last.raw.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
                    last.raw.extend_from_slice(content);
                }
            } else if let Some(colon) = content.iter().position(|&b| b == b':') {
                let name = String::from_utf8_lossy(&content[..colon]).trim_end().to_string();
                fields.push(Field { name, raw: content[colon + 1..].to_vec() });
            } else {
                // Not a header line: the header ended without a blank line (RFC 5322 allows no
                // such thing, but mail arrives like this); the rest is body.
                body_start = at;
                break;
            }
            at = end;
        }
        Parsed { fields, body: message[body_start.min(message.len())..].to_vec(), crlf, edited: false }
    }

    /// The raw values of the fields called `name` (case-insensitive), in order.
    pub fn raw_values<'a>(&'a self, name: &'a str) -> impl DoubleEndedIterator<Item = &'a [u8]> + 'a {
        self.fields.iter().filter(move |f| f.name.eq_ignore_ascii_case(name)).map(|f| f.raw.as_slice())
    }

    pub fn has(&self, name: &str) -> bool {
        self.raw_values(name).next().is_some()
    }

    /// The message as bytes, with any edits.
    pub fn to_bytes(&self) -> Vec<u8> {
        let eol: &[u8] = if self.crlf { b"\r\n" } else { b"\n" };
        let mut out = Vec::with_capacity(self.body.len() + 1024);
        for f in &self.fields {
            out.extend_from_slice(f.name.as_bytes());
            out.push(b':');
            out.extend_from_slice(&f.raw);
            out.extend_from_slice(eol);
        }
        out.extend_from_slice(eol);
        out.extend_from_slice(&self.body);
        out
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A raw header value decoded for comparison (RFC 5228 section 2.7.2): encoded words decoded,
/// folding removed, leading and trailing white space dropped.
pub fn decode_text(raw: &[u8]) -> String {
    let mut input = raw.to_vec();
    input.extend_from_slice(b"\n");
    match MessageStream::new(&input).parse_unstructured() {
        HeaderValue::Text(t) => t.trim().to_string(),
        HeaderValue::TextList(list) => list.join(",").trim().to_string(),
        _ => unfold(raw).trim().to_string(),
    }
}

fn unfold(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).replace("\r\n", "").replace('\n', "")
}

/// The addresses in an address header's raw value (`local@domain`), groups flattened. A value
/// that holds no parseable address yields the trimmed text itself, as Pigeonhole does, so
/// `:all` can still compare it.
pub fn addresses(raw: &[u8]) -> Vec<String> {
    let mut input = raw.to_vec();
    input.extend_from_slice(b"\n");
    let mut out = Vec::new();
    if let HeaderValue::Address(list) = MessageStream::new(&input).parse_address() {
        for addr in list.iter() {
            if let Some(a) = &addr.address {
                out.push(a.to_string());
            }
        }
    }
    out
}

/// The parts of an address the `:localpart`, `:domain`, `:user` and `:detail` tags select.
pub fn local_part(address: &str) -> &str {
    address.rfind('@').map_or(address, |at| &address[..at])
}

pub fn domain(address: &str) -> &str {
    address.rfind('@').map_or("", |at| &address[at + 1..])
}

/// The subaddress separator (RFC 5233 leaves it to the implementation; `+` is what Tern's
/// delivery understands).
pub const SEPARATOR: char = '+';

pub fn user(address: &str) -> &str {
    let local = local_part(address);
    local.find(SEPARATOR).map_or(local, |at| &local[..at])
}

/// `None` when the local part has no separator, so the test fails (RFC 5233 section 4).
pub fn detail(address: &str) -> Option<&str> {
    let local = local_part(address);
    local.find(SEPARATOR).map(|at| &local[at + 1..])
}

/// A date header's value, with its zone offset in seconds east of UTC.
pub fn date(raw: &[u8]) -> Option<(i64, i32)> {
    let mut input = raw.to_vec();
    input.extend_from_slice(b"\n");
    match MessageStream::new(&input).parse_date() {
        HeaderValue::DateTime(dt) if dt.is_valid() => {
            let offset =
                (i32::from(dt.tz_hour) * 3600 + i32::from(dt.tz_minute) * 60) * if dt.tz_before_gmt { -1 } else { 1 };
            Some((dt.to_timestamp(), offset))
        }
        _ => None,
    }
}

/// What the `body` test compares (RFC 5173 section 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transform {
    /// The body as it is, undecoded.
    Raw,
    /// The decoded content of the parts whose types match: `""` every part, `"text"` every
    /// `text/*`, `"text/html"` only that.
    Content(Vec<String>),
}

/// The strings the `body` test compares under `transform`.
pub fn body_texts(parsed: &Parsed, transform: &Transform) -> Vec<String> {
    match transform {
        Transform::Raw => vec![String::from_utf8_lossy(&parsed.body).into_owned()],
        Transform::Content(types) => {
            let whole = parsed.to_bytes();
            let Some(message) = MessageParser::default().parse(&whole) else { return Vec::new() };
            let mut out = Vec::new();
            for part in &message.parts {
                let (ctype, subtype) = match part.content_type() {
                    Some(ct) => (ct.ctype().to_ascii_lowercase(), ct.subtype().unwrap_or("").to_ascii_lowercase()),
                    None => ("text".to_string(), "plain".to_string()),
                };
                let wanted = types.iter().any(|t| {
                    let t = t.to_ascii_lowercase();
                    t.is_empty()
                        || match t.split_once('/') {
                            Some((a, b)) => a == ctype && b == subtype,
                            None => t == ctype,
                        }
                });
                if !wanted {
                    continue;
                }
                match &part.body {
                    PartType::Text(text) => out.push(text.to_string()),
                    PartType::Html(html) => out.push(html.to_string()),
                    PartType::Binary(b) | PartType::InlineBinary(b) => {
                        out.push(String::from_utf8_lossy(b).into_owned())
                    }
                    // A multipart's own text is its prologue, before the first boundary (RFC
                    // 5173 section 5.2 has `:content "multipart"` match it).
                    PartType::Multipart(_) => {
                        let raw = whole.get(part.offset_body as usize..part.offset_end as usize).unwrap_or(&[]);
                        let mut prologue = Vec::new();
                        for line in raw.split_inclusive(|&b| b == b'\n') {
                            if line.starts_with(b"--") {
                                break;
                            }
                            prologue.extend_from_slice(line);
                        }
                        out.push(String::from_utf8_lossy(&prologue).trim_end().to_string());
                    }
                    PartType::Message(_) => {}
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_fields_and_keeps_folding() {
        let p = Parsed::new(b"Subject: a\r\n b\r\nTo: x@y\r\n\r\nbody\r\n");
        assert!(p.crlf);
        assert_eq!(p.fields.len(), 2);
        assert_eq!(decode_text(p.raw_values("subject").next().unwrap()), "a b");
        assert_eq!(p.body, b"body\r\n");
        assert_eq!(p.to_bytes(), b"Subject: a\r\n b\r\nTo: x@y\r\n\r\nbody\r\n");
    }

    #[test]
    fn decodes_encoded_words_and_addresses() {
        assert_eq!(decode_text(b" =?UTF-8?Q?caf=C3=A9?="), "café");
        assert_eq!(addresses(b" \"A\" <a@x.org>, b@y.org"), ["a@x.org", "b@y.org"]);
        assert_eq!(user("u+tag@x"), "u");
        assert_eq!(detail("u+tag@x"), Some("tag"));
        assert_eq!(detail("u@x"), None);
    }

    #[test]
    fn reads_dates_with_zone() {
        let (t, off) = date(b" Sat, 14 Feb 2009 14:31:30 +0100").unwrap();
        assert_eq!(t, 1_234_618_290);
        assert_eq!(off, 3600);
    }
}
