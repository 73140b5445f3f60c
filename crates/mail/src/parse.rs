//! Parses a message once, at delivery, into what IMAP needs without reading the body again: the
//! envelope, and the body structure with the byte offsets of every part so that `BODY[n]` is a
//! range read of the stored object.

use mail_parser::{Addr, Address as MpAddress, HeaderName, HeaderValue, Message, MessageParser, MessagePart, PartType};
use tern_proto::v1::{Address, BodyPart, Envelope, Param};

/// What a message's content looks like.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub envelope: Envelope,
    pub body: BodyPart,
}

/// Parses raw RFC 5322 bytes. Input that is not a valid message still gets a structure (a
/// single text/plain part spanning the bytes), because mail must be stored even when malformed.
pub fn parse(raw: &[u8]) -> Parsed {
    match MessageParser::default().parse(raw) {
        Some(msg) if !msg.parts.is_empty() => Parsed { envelope: envelope(&msg), body: part(&msg, 0, 0) },
        _ => Parsed {
            envelope: Envelope::default(),
            body: BodyPart {
                media_type: "text".into(),
                media_subtype: "plain".into(),
                params: vec![Param { name: "charset".into(), value: "us-ascii".into() }],
                encoding: "7bit".into(),
                size: raw.len() as u64,
                lines: count_lines(raw),
                end_offset: raw.len() as u64,
                ..Default::default()
            },
        },
    }
}

fn raw_header<'a>(msg: &'a Message<'_>, part: &MessagePart<'_>, name: HeaderName<'_>) -> Option<&'a str> {
    let h = part.headers.iter().find(|h| h.name == name)?;
    std::str::from_utf8(msg.raw_message.get(h.offset_start as usize..h.offset_end as usize)?).ok()
}

/// Unfolds and trims a raw header value.
fn unfold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for piece in s.split(['\r', '\n']) {
        out.push_str(piece);
    }
    out.trim().to_string()
}

fn envelope(msg: &Message<'_>) -> Envelope {
    let root = msg.root_part();
    let text = |name: HeaderName<'_>| raw_header(msg, root, name).map(unfold).unwrap_or_default();
    let addrs = |name: HeaderName<'_>| -> Vec<Address> {
        match root.headers.iter().find(|h| h.name == name).map(|h| &h.value) {
            Some(HeaderValue::Address(a)) => addresses(a),
            _ => Vec::new(),
        }
    };
    let from = addrs(HeaderName::From);
    // RFC 3501 section 7.4.2: sender and reply-to default to from when absent.
    let sender = Some(addrs(HeaderName::Sender)).filter(|a| !a.is_empty()).unwrap_or_else(|| from.clone());
    let reply_to = Some(addrs(HeaderName::ReplyTo)).filter(|a| !a.is_empty()).unwrap_or_else(|| from.clone());
    Envelope {
        date: text(HeaderName::Date),
        subject: text(HeaderName::Subject),
        from,
        sender,
        reply_to,
        to: addrs(HeaderName::To),
        cc: addrs(HeaderName::Cc),
        bcc: addrs(HeaderName::Bcc),
        in_reply_to: text(HeaderName::InReplyTo),
        message_id: text(HeaderName::MessageId),
        references: text(HeaderName::References),
    }
}

/// The mailbox name an envelope address gets when its header has none (`To: Some Name`), as
/// Dovecot writes it.
pub const MISSING_MAILBOX: &str = "MISSING_MAILBOX";

/// The host name an envelope address gets when its header has none (`To: root`), as Dovecot
/// writes it. An empty host is what marks the start of a group (RFC 3501 section 7.4.2), so a
/// hostless mailbox stored with an empty host could not be told from a group start.
pub const MISSING_DOMAIN: &str = "MISSING_DOMAIN";

/// One envelope address. A missing mailbox or host is filled with [`MISSING_MAILBOX`] or
/// [`MISSING_DOMAIN`], as Dovecot fills them in its envelopes, so that only group markers have
/// empty ones.
fn one(a: &Addr<'_>) -> Address {
    let mut name = a.name.as_deref().unwrap_or_default();
    let mut full = a.address.as_deref().unwrap_or_default();
    // mail-parser reads a lone word without `@` (`To: root`) as a display name. It is a local
    // mailbox name missing its host, as in Dovecot, sendmail and c-client; a phrase of several
    // words stays a name.
    if full.is_empty() && is_bare_local_part(name) {
        (full, name) = (name, "");
    }
    let (mailbox, host) = full.rsplit_once('@').unwrap_or((full, ""));
    let filled = |s: &str, missing: &str| if s.is_empty() { missing.to_string() } else { s.to_string() };
    Address {
        name: name.to_string(),
        adl: String::new(),
        mailbox: filled(mailbox, MISSING_MAILBOX),
        host: filled(host, MISSING_DOMAIN),
    }
}

/// Whether a display name is one dot-atom (RFC 5322 section 3.2.3, with 8-bit octets allowed as
/// RFC 6532 does), which is what a local part without `@domain` looks like.
fn is_bare_local_part(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| !c.is_ascii() || c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
}

fn addresses(a: &MpAddress<'_>) -> Vec<Address> {
    match a {
        MpAddress::List(list) => list.iter().map(one).collect(),
        // Groups become the RFC 3501 group syntax: a start marker with the group name as
        // mailbox and no host, the members, and an end marker with neither.
        MpAddress::Group(groups) => {
            let mut out = Vec::new();
            for g in groups {
                if let Some(name) = &g.name {
                    out.push(Address { mailbox: name.to_string(), ..Default::default() });
                    out.extend(g.addresses.iter().map(one));
                    out.push(Address::default());
                } else {
                    out.extend(g.addresses.iter().map(one));
                }
            }
            out
        }
    }
}

fn count_lines(body: &[u8]) -> u64 {
    body.iter().filter(|b| **b == b'\n').count() as u64
}

fn params(attrs: Option<&Vec<mail_parser::Attribute<'_>>>) -> Vec<Param> {
    attrs
        .map(|v| v.iter().map(|a| Param { name: a.name.to_string(), value: a.value.to_string() }).collect())
        .unwrap_or_default()
}

/// Converts part `id` of `msg` into a [`BodyPart`]; `base` is where `msg` starts inside the
/// stored object (non-zero for a message embedded in a message/rfc822 part).
fn part(msg: &Message<'_>, id: usize, base: u64) -> BodyPart {
    let p = &msg.parts[id];
    let raw = &msg.raw_message;
    let mut out = BodyPart {
        header_offset: base + u64::from(p.offset_header),
        body_offset: base + u64::from(p.offset_body),
        end_offset: base + u64::from(p.offset_end),
        ..Default::default()
    };
    let ct = p.headers.iter().find(|h| h.name == HeaderName::ContentType).and_then(|h| match &h.value {
        HeaderValue::ContentType(ct) => Some(ct),
        _ => None,
    });
    match ct {
        Some(ct) => {
            out.media_type = ct.c_type.to_ascii_lowercase();
            out.media_subtype = ct.c_subtype.as_deref().unwrap_or_default().to_ascii_lowercase();
            out.params = params(ct.attributes.as_ref());
        }
        None => {
            // RFC 2045 section 5.2 default, and RFC 2046 section 5.1.5 for digest children is
            // left to the parser's judgement of the part type below.
            let is_message = matches!(p.body, PartType::Message(_));
            out.media_type = if is_message { "message" } else { "text" }.into();
            out.media_subtype = if is_message { "rfc822" } else { "plain" }.into();
            if !is_message {
                out.params = vec![Param { name: "charset".into(), value: "us-ascii".into() }];
            }
        }
    }
    if out.media_subtype.is_empty() {
        out.media_subtype = if out.media_type == "text" { "plain".into() } else { "octet-stream".into() };
    }
    let text = |name: HeaderName<'_>| raw_header(msg, p, name).map(unfold).unwrap_or_default();
    out.content_id = text(HeaderName::ContentId);
    out.description = text(HeaderName::ContentDescription);
    // The encoding is one token (RFC 2045 section 6.1), which a comment may follow.
    out.encoding = text(HeaderName::ContentTransferEncoding)
        .split(|c: char| c.is_ascii_whitespace() || c == '(' || c == ';')
        .next()
        .filter(|e| !e.is_empty())
        .map_or_else(|| "7bit".into(), str::to_ascii_lowercase);
    out.md5 = text(HeaderName::Other("Content-MD5".into()));
    out.location = text(HeaderName::ContentLocation);
    out.language =
        text(HeaderName::ContentLanguage).split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    if let Some(HeaderValue::ContentType(d)) =
        p.headers.iter().find(|h| h.name == HeaderName::ContentDisposition).map(|h| &h.value)
    {
        out.disposition = d.c_type.to_ascii_lowercase();
        out.disposition_params = params(d.attributes.as_ref());
    }
    let body = raw.get(p.offset_body as usize..p.offset_end as usize).unwrap_or_default();
    out.size = body.len() as u64;
    match &p.body {
        PartType::Multipart(children) => {
            out.parts = children.iter().map(|c| part(msg, *c as usize, base)).collect();
        }
        PartType::Message(inner) if !inner.parts.is_empty() => {
            // mail-parser gives offsets of an embedded message relative to the outermost one.
            let inner_base = base;
            out.message_envelope = Some(envelope(inner));
            out.message_body = Some(Box::new(part(inner, 0, inner_base)));
            out.lines = count_lines(body);
        }
        _ => {
            if out.media_type == "text" {
                out.lines = count_lines(body);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIMPLE: &[u8] = b"From: Alice Example <alice@example.com>\r\nTo: bob@example.org, \"Carol\" <carol@example.net>\r\nSubject: Hello\r\n there\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\nline one\r\nline two\r\n";

    #[test]
    fn envelope_of_simple_message() {
        let p = parse(SIMPLE);
        assert_eq!(p.envelope.subject, "Hello there");
        assert_eq!(p.envelope.message_id, "<1@example.com>");
        assert_eq!(p.envelope.date, "Thu, 26 Nov 2026 10:00:00 +0000");
        assert_eq!(p.envelope.from[0].name, "Alice Example");
        assert_eq!(p.envelope.from[0].mailbox, "alice");
        assert_eq!(p.envelope.from[0].host, "example.com");
        assert_eq!(p.envelope.sender, p.envelope.from);
        assert_eq!(p.envelope.to.len(), 2);
        assert_eq!(p.body.media_type, "text");
        assert_eq!(p.body.lines, 2);
        assert_eq!(&SIMPLE[p.body.body_offset as usize..p.body.end_offset as usize], b"line one\r\nline two\r\n");
    }

    #[test]
    fn multipart_offsets_are_range_reads() {
        let raw = b"From: a@b.c\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\npreamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=a.bin\r\n\r\nAAEC\r\n--XX\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nFrom: x@y.z\r\n\r\ninner body\r\n--XX--\r\n";
        let p = parse(raw);
        assert_eq!((p.body.media_type.as_str(), p.body.media_subtype.as_str()), ("multipart", "mixed"));
        assert_eq!(p.body.parts.len(), 3);
        let text = &p.body.parts[0];
        assert_eq!(&raw[text.body_offset as usize..text.end_offset as usize], b"hello");
        let bin = &p.body.parts[1];
        assert_eq!(bin.encoding, "base64");
        assert_eq!(bin.disposition, "attachment");
        assert_eq!(&raw[bin.body_offset as usize..bin.end_offset as usize], b"AAEC");
        let msg = &p.body.parts[2];
        assert_eq!(msg.message_envelope.as_ref().unwrap().subject, "inner");
        let inner = msg.message_body.as_ref().unwrap();
        assert_eq!(&raw[inner.body_offset as usize..inner.end_offset as usize], b"inner body");
        assert_eq!(inner.header_offset, msg.body_offset);
    }

    #[test]
    fn groups_and_addresses_without_host() {
        let raw = b"From: root\r\nTo: undisclosed-recipients:;\r\n\
Cc: A Group: a@example.com, b;, Some Name, (c) x.y, Name <z>\r\n\r\n";
        let e = parse(raw).envelope;
        let addr = |name: &str, mailbox: &str, host: &str| Address {
            name: name.into(),
            adl: String::new(),
            mailbox: mailbox.into(),
            host: host.into(),
        };
        // A lone word is a mailbox without its host; only group markers have an empty host.
        assert_eq!(e.from, [addr("", "root", MISSING_DOMAIN)]);
        assert_eq!(e.sender, e.from);
        assert_eq!(e.to, [addr("", "undisclosed-recipients", ""), Address::default()]);
        assert_eq!(
            e.cc,
            [
                addr("", "A Group", ""),
                addr("", "a", "example.com"),
                addr("", "b", MISSING_DOMAIN),
                Address::default(),
                addr("Some Name", MISSING_MAILBOX, MISSING_DOMAIN),
                addr("c", "x.y", MISSING_DOMAIN),
                addr("Name", "z", MISSING_DOMAIN),
            ]
        );
    }

    #[test]
    fn transfer_encoding_is_its_token() {
        let raw = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: BASE64 (a comment)\r\n\r\naGk=\r\n";
        assert_eq!(parse(raw).body.encoding, "base64");
        let raw = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: (only a comment)\r\n\r\nhi\r\n";
        assert_eq!(parse(raw).body.encoding, "7bit");
    }

    #[test]
    fn garbage_still_gets_a_structure() {
        for raw in [&b""[..], b"\x00\xff\xfe", b"no header at all", b"\r\n\r\n\r\n"] {
            let p = parse(raw);
            assert!(!p.body.media_type.is_empty());
            assert!(p.body.end_offset as usize <= raw.len().max(1));
        }
    }
}
