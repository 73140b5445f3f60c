//! APPEND's extended syntax, which imap-codec does not parse, decoded without I/O:
//! MULTIAPPEND (RFC 3502), several messages in one command that are appended all or none, and
//! CATENATE (RFC 4469), a message put together from literal text and IMAP URLs of messages or
//! parts already stored.
//!
//! ```text
//! append         = "APPEND" SP mailbox 1*append-message
//! append-message = SP [flag-list SP] [date-time SP] append-data
//! append-data    = literal / literal8 / "CATENATE" SP "(" cat-part *(SP cat-part) ")"
//! cat-part       = "TEXT" SP (literal / literal8) / "URL" SP astring
//! ```
//!
//! [`parse`] takes a whole command, literals included, as [`crate::extended`] frames it (that
//! framing is what answers "need more bytes" and "literal announced" for these commands too).
//! A plain APPEND of one literal is the codec's; only the forms it refuses come here. The
//! session resolves the URLs, since only it can read messages (see `session::append`).

use imap_codec::imap_types::{IntoStatic, core::Tag, flag::Flag};

/// An APPEND of one or more messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendCommand {
    pub tag: Tag<'static>,
    /// The mailbox as the client sent it (modified UTF-7 unless UTF-8 was enabled).
    pub mailbox: Vec<u8>,
    pub messages: Vec<AppendMessage>,
}

/// One message of an APPEND.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendMessage {
    pub flags: Vec<Flag<'static>>,
    /// The internal date, in seconds since the Unix epoch, when one was given.
    pub date: Option<i64>,
    /// What the message is made of: one text part for a literal, one or more parts for
    /// CATENATE.
    pub parts: Vec<CatPart>,
    /// Whether the message came as CATENATE, whose failures have codes of their own.
    pub catenate: bool,
}

/// A piece of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatPart {
    Text(Vec<u8>),
    /// An IMAP URL (RFC 5092), absolute or relative, as the client wrote it.
    Url(String),
}

/// Why an APPEND is not one, said in the BAD that answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("APPEND needs a mailbox name")]
    Mailbox,
    #[error("APPEND needs a message: a literal, or CATENATE with its parts")]
    NoMessage,
    #[error("a flag list is flags in parentheses, such as (\\Seen $Label)")]
    Flags,
    #[error("an internal date is written \"dd-Mon-yyyy hh:mm:ss +zzzz\"")]
    Date,
    #[error("a CATENATE part is TEXT with a literal or URL with an IMAP URL, in parentheses")]
    CatPart,
    #[error("CATENATE needs at least one part")]
    NoParts,
    #[error("unexpected text after a message of APPEND")]
    Trailing,
}

/// A byte cursor over one command.
struct Cursor<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    /// Takes one space; false (and nothing taken) when there is none.
    fn space(&mut self) -> bool {
        let found = self.peek() == Some(b' ');
        if found {
            self.pos += 1;
        }
        found
    }

    /// Whether the command's line ends here (CRLF, or a bare LF, which the codec tolerates).
    fn at_end(&self) -> bool {
        matches!(&self.input[self.pos..], b"\r\n" | b"\n" | b"")
    }

    /// An atom: the characters up to a space, parenthesis, quote, brace or line end.
    fn atom(&mut self) -> &'a [u8] {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if matches!(b, b' ' | b'(' | b')' | b'"' | b'{' | b'\r' | b'\n') || b < 0x20 || b == 0x7f {
                break;
            }
            self.pos += 1;
        }
        &self.input[start..self.pos]
    }

    /// A quoted string, the cursor on its opening quote.
    fn quoted(&mut self) -> Option<Vec<u8>> {
        if self.peek() != Some(b'"') {
            return None;
        }
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek()? {
                b'\\' => {
                    let escaped = *self.input.get(self.pos + 1)?;
                    if !matches!(escaped, b'\\' | b'"') {
                        return None;
                    }
                    out.push(escaped);
                    self.pos += 2;
                }
                b'"' => {
                    self.pos += 1;
                    return Some(out);
                }
                b'\r' | b'\n' => return None,
                b => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
    }

    /// A literal (`{n}`, `{n+}`) or a literal8 (`~{n}`, `~{n+}`), the cursor on its first
    /// character: its data.
    fn literal(&mut self) -> Option<Vec<u8>> {
        let start = self.pos;
        if self.peek() == Some(b'~') {
            self.pos += 1;
        }
        if self.peek() != Some(b'{') {
            self.pos = start;
            return None;
        }
        let close = self.pos + self.input[self.pos..].iter().position(|b| *b == b'}')?;
        let digits = &self.input[self.pos + 1..close];
        let digits = digits.strip_suffix(b"+").unwrap_or(digits);
        if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
        let after = &self.input[close + 1..];
        let skip = if after.starts_with(b"\r\n") {
            2
        } else if after.starts_with(b"\n") {
            1
        } else {
            return None;
        };
        let data_start = close + 1 + skip;
        let data = self.input.get(data_start..data_start.checked_add(n)?)?.to_vec();
        self.pos = data_start + n;
        Some(data)
    }

    /// An astring: an atom (`]` allowed), a quoted string or a literal.
    fn astring(&mut self) -> Option<Vec<u8>> {
        match self.peek()? {
            b'"' => self.quoted(),
            b'{' | b'~' => self.literal(),
            _ => Some(self.atom().to_vec()).filter(|a| !a.is_empty()),
        }
    }
}

/// Parses a whole APPEND command whose tag is `tag`; the command starts with the tag.
pub fn parse(command: &[u8], tag: Tag<'static>) -> Result<AppendCommand, AppendError> {
    let mut c = Cursor { input: command, pos: 0 };
    c.atom(); // the tag
    c.space();
    c.atom(); // APPEND
    if !c.space() {
        return Err(AppendError::Mailbox);
    }
    let mailbox = c.astring().ok_or(AppendError::Mailbox)?;
    let mut messages = Vec::new();
    while !c.at_end() {
        if !c.space() {
            return Err(AppendError::Trailing);
        }
        messages.push(message(&mut c)?);
    }
    if messages.is_empty() {
        return Err(AppendError::NoMessage);
    }
    Ok(AppendCommand { tag, mailbox, messages })
}

/// One `append-message`, after its leading space.
fn message(c: &mut Cursor<'_>) -> Result<AppendMessage, AppendError> {
    let mut flags = Vec::new();
    if c.peek() == Some(b'(') {
        c.pos += 1;
        loop {
            match c.peek() {
                Some(b')') => {
                    c.pos += 1;
                    break;
                }
                Some(b' ') if !flags.is_empty() => c.pos += 1,
                _ => {}
            }
            let atom = c.atom();
            if atom.is_empty() {
                return Err(AppendError::Flags);
            }
            let text = std::str::from_utf8(atom).map_err(|_| AppendError::Flags)?;
            let flag = Flag::try_from(text).map_err(|_| AppendError::Flags)?;
            flags.push(flag.into_static());
            if !matches!(c.peek(), Some(b' ' | b')')) {
                return Err(AppendError::Flags);
            }
        }
        if !c.space() {
            return Err(AppendError::NoMessage);
        }
    }
    let mut date = None;
    if c.peek() == Some(b'"') {
        let text = c.quoted().ok_or(AppendError::Date)?;
        if c.at_end() {
            // `APPEND INBOX "text"`: a quoted message, which APPEND does not take.
            return Err(AppendError::NoMessage);
        }
        date = Some(parse_date(&text).ok_or(AppendError::Date)?);
        if !c.space() {
            return Err(AppendError::NoMessage);
        }
    }
    if let Some(data) = c.literal() {
        return Ok(AppendMessage { flags, date, parts: vec![CatPart::Text(data)], catenate: false });
    }
    if !c.atom().eq_ignore_ascii_case(b"CATENATE") || !c.space() || c.peek() != Some(b'(') {
        return Err(AppendError::NoMessage);
    }
    c.pos += 1;
    let mut parts = Vec::new();
    loop {
        if c.peek() == Some(b')') {
            c.pos += 1;
            break;
        }
        if !parts.is_empty() && !c.space() {
            return Err(AppendError::CatPart);
        }
        let kind = c.atom().to_ascii_uppercase();
        if !c.space() {
            return Err(AppendError::CatPart);
        }
        let part = match kind.as_slice() {
            b"TEXT" => CatPart::Text(c.literal().ok_or(AppendError::CatPart)?),
            b"URL" => {
                let url = c.astring().ok_or(AppendError::CatPart)?;
                CatPart::Url(String::from_utf8(url).map_err(|_| AppendError::CatPart)?)
            }
            _ => return Err(AppendError::CatPart),
        };
        parts.push(part);
    }
    if parts.is_empty() {
        return Err(AppendError::NoParts);
    }
    Ok(AppendMessage { flags, date, parts, catenate: true })
}

/// An IMAP `date-time` (`"dd-Mon-yyyy hh:mm:ss +zzzz"`, the day possibly a space and one digit)
/// as seconds since the Unix epoch.
pub fn parse_date(text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?;
    // `date-day-fixed` is two digits or a space and one; chrono reads the day without the space.
    let text = text.strip_prefix(' ').unwrap_or(text);
    if text.len() < 25 || text.len() > 26 {
        return None;
    }
    chrono::DateTime::parse_from_str(text, "%d-%b-%Y %H:%M:%S %z").ok().map(|d| d.timestamp())
}

/// A CATENATE URL taken apart (RFC 5092): the message, and the part of it, it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapUrl {
    /// The user the URL names (`imap://user@host/...`), percent-decoded; None when it names
    /// none.
    pub user: Option<String>,
    /// The mailbox, as UTF-8 (RFC 5092 section 5: mailbox names in URLs are UTF-8, then
    /// percent-encoded); None for a relative URL that starts at `;UID=`, which names a message
    /// of the selected mailbox.
    pub mailbox: Option<String>,
    pub uidvalidity: Option<u32>,
    pub uid: u32,
    /// A section of `BODY[section]`, such as `1.2`, `HEADER` or `1.MIME`.
    pub section: Option<String>,
    /// `;PARTIAL=offset.length` (the length absent: to the end).
    pub partial: Option<(u64, Option<u64>)>,
}

/// Why a CATENATE URL cannot be used, given after its BADURL code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("not an IMAP URL of a message")]
    Malformed,
    #[error("URLAUTH-authorized URLs are not supported")]
    Urlauth,
}

/// Parses an IMAP URL naming a message or a part of one, absolute (`imap://user@host/INBOX
/// ;UIDVALIDITY=1/;UID=2/;SECTION=1.2/;PARTIAL=0.100`), relative to the server
/// (`/INBOX/;UID=2`) or to the selected mailbox (`;UID=2`). Case is ignored in the parameter
/// names, as in the RFC's ABNF.
pub fn parse_url(url: &str) -> Result<ImapUrl, UrlError> {
    let malformed = UrlError::Malformed;
    let upper = url.to_ascii_uppercase();
    if upper.contains(";URLAUTH=") || upper.contains(";EXPIRE=") {
        return Err(UrlError::Urlauth);
    }
    let (user, path) = if upper.starts_with("IMAP://") {
        let rest = &url[7..];
        let slash = rest.find('/').ok_or(malformed)?;
        let (authority, path) = (&rest[..slash], &rest[slash + 1..]);
        let user = match authority.rfind('@') {
            // `user;AUTH=mech@host`: the user is what comes before the first `;`.
            Some(at) => Some(percent_decode(authority[..at].split(';').next().unwrap_or_default())?),
            None => None,
        };
        (user, path)
    } else if url.contains("://") {
        return Err(malformed);
    } else if let Some(path) = url.strip_prefix('/') {
        (None, path)
    } else {
        (None, url)
    };
    // `mailbox[;UIDVALIDITY=n]` then `/;UID=n`, or only `;UID=n` for the selected mailbox.
    let path_upper = path.to_ascii_uppercase();
    let (mailbox, uidvalidity, rest) = if path_upper.starts_with(";UID=") {
        if !url.starts_with(';') {
            return Err(malformed);
        }
        (None, None, &path[5..])
    } else {
        let at = path_upper.find("/;UID=").ok_or(malformed)?;
        let (mailbox, validity) = match path_upper[..at].find(";UIDVALIDITY=") {
            Some(v) => (&path[..v], Some(number(&path[v + 13..at]).ok_or(malformed)?)),
            None => (&path[..at], None),
        };
        if mailbox.is_empty() {
            return Err(malformed);
        }
        (Some(percent_decode(mailbox)?), validity, &path[at + 6..])
    };
    let mut segments = rest.split("/;");
    let uid = number(segments.next().unwrap_or_default()).ok_or(malformed)?;
    let (mut section, mut partial) = (None, None);
    for segment in segments {
        let upper = segment.to_ascii_uppercase();
        if let Some(value) = upper.strip_prefix("SECTION=").map(|_| &segment[8..]) {
            if section.is_some() || partial.is_some() || value.is_empty() {
                return Err(malformed);
            }
            section = Some(percent_decode(value)?);
        } else if let Some(value) = upper.strip_prefix("PARTIAL=").map(|_| &segment[8..]) {
            if partial.is_some() {
                return Err(malformed);
            }
            partial = Some(match value.split_once('.') {
                Some((offset, length)) => {
                    let length = number(length).filter(|l| *l > 0).ok_or(malformed)?;
                    (u64::from(number(offset).ok_or(malformed)?), Some(u64::from(length)))
                }
                None => (u64::from(number(value).ok_or(malformed)?), None),
            });
        } else {
            return Err(malformed);
        }
    }
    Ok(ImapUrl { user, mailbox, uidvalidity, uid, section, partial })
}

/// A decimal number of at most 32 bits, nothing else.
fn number(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Undoes `%XX` escapes; the result must be UTF-8.
pub(crate) fn percent_decode(text: &str) -> Result<String, UrlError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).ok_or(UrlError::Malformed)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| UrlError::Malformed)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UrlError::Malformed)
}

#[cfg(test)]
mod tests {
    //! Each form of the grammar in the module documentation, and the inputs it refuses.

    use super::*;

    fn tag() -> Tag<'static> {
        Tag::try_from("a1").unwrap()
    }

    fn text(data: &[u8]) -> CatPart {
        CatPart::Text(data.to_vec())
    }

    #[test]
    fn several_messages_each_with_their_own_flags_and_date() {
        let input = b"a1 APPEND INBOX (\\Seen) \"01-Jan-2024 10:00:00 +0000\" {5}\r\nhello \"02-Jan-2024 10:00:00 +0100\" ~{3+}\r\nbye {2}\r\nhi\r\n";
        let cmd = parse(input, tag()).unwrap();
        assert_eq!(cmd.mailbox, b"INBOX");
        assert_eq!(cmd.messages.len(), 3);
        assert_eq!(cmd.messages[0].flags, vec![Flag::Seen]);
        assert_eq!(cmd.messages[0].date, Some(1_704_103_200));
        assert_eq!(cmd.messages[0].parts, vec![text(b"hello")]);
        assert!(cmd.messages[1].flags.is_empty());
        assert_eq!(cmd.messages[1].date, Some(1_704_103_200 + 86_400 - 3600));
        assert_eq!(cmd.messages[1].parts, vec![text(b"bye")]);
        assert_eq!(cmd.messages[2].parts, vec![text(b"hi")]);
        assert!(!cmd.messages[2].catenate);
    }

    #[test]
    fn catenate_of_text_and_urls_also_within_a_multiappend() {
        let input = b"a1 APPEND \"Sent Items\" (\\Draft $Work) CATENATE (URL \"/INBOX;UIDVALIDITY=7/;UID=20/;SECTION=1\" TEXT {4+}\r\nabcd URL /INBOX/;UID=3) {2}\r\nok\r\n";
        let cmd = parse(input, tag()).unwrap();
        assert_eq!(cmd.mailbox, b"Sent Items");
        let m = &cmd.messages[0];
        assert!(m.catenate);
        assert_eq!(m.flags.len(), 2);
        assert_eq!(
            m.parts,
            vec![
                CatPart::Url("/INBOX;UIDVALIDITY=7/;UID=20/;SECTION=1".into()),
                text(b"abcd"),
                CatPart::Url("/INBOX/;UID=3".into())
            ]
        );
        assert_eq!(cmd.messages[1].parts, vec![text(b"ok")]);
    }

    #[test]
    fn a_literal_may_hold_anything_even_what_looks_like_syntax() {
        let input = b"a1 APPEND {5}\r\nINBOX CATENATE (TEXT {7}\r\n) {3}\r\n) CATENATE (TEXT {1}\r\nx)\r\n";
        let cmd = parse(input, tag()).unwrap();
        assert_eq!(cmd.mailbox, b"INBOX");
        assert_eq!(cmd.messages[0].parts, vec![text(b") {3}\r\n")]);
        assert_eq!(cmd.messages[1].parts, vec![text(b"x")]);
    }

    #[test]
    fn broken_forms_say_what_is_wrong() {
        let cases: [(&[u8], AppendError); 10] = [
            (b"a1 APPEND\r\n", AppendError::Mailbox),
            (b"a1 APPEND INBOX\r\n", AppendError::NoMessage),
            (b"a1 APPEND INBOX \"not a literal\"\r\n", AppendError::NoMessage),
            (b"a1 APPEND INBOX (\\Seen\r\n", AppendError::Flags),
            (b"a1 APPEND INBOX (\\Seen) \"1-Jan-2024\" {1}\r\nx\r\n", AppendError::Date),
            (b"a1 APPEND INBOX CATENATE ()\r\n", AppendError::NoParts),
            (b"a1 APPEND INBOX CATENATE (BODY {1}\r\nx)\r\n", AppendError::CatPart),
            (b"a1 APPEND INBOX CATENATE (TEXT \"quoted\")\r\n", AppendError::CatPart),
            (b"a1 APPEND INBOX {1}\r\nx junk\r\n", AppendError::NoMessage),
            (b"a1 APPEND INBOX {1}\r\nx{1}\r\ny\r\n", AppendError::Trailing),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input, tag()), Err(want), "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn dates_with_a_one_digit_day_and_bad_dates() {
        assert_eq!(parse_date(b" 1-Jan-2024 10:00:00 +0000"), Some(1_704_103_200));
        assert_eq!(parse_date(b"01-Jan-2024 10:00:00 +0000"), Some(1_704_103_200));
        assert_eq!(parse_date(b"01-Foo-2024 10:00:00 +0000"), None);
        assert_eq!(parse_date(b"01-Jan-2024 25:00:00 +0000"), None);
        assert_eq!(parse_date(b"01-Jan-2024"), None);
    }

    #[test]
    fn urls_absolute_relative_and_to_the_selected_mailbox() {
        let url = parse_url(
            "imap://bob;AUTH=*@mail.example.org/Sent%20Items;UIDVALIDITY=385759045/;UID=20/;SECTION=1.2/;PARTIAL=10.20",
        )
        .unwrap();
        assert_eq!(url.user.as_deref(), Some("bob"));
        assert_eq!(url.mailbox.as_deref(), Some("Sent Items"));
        assert_eq!(url.uidvalidity, Some(385_759_045));
        assert_eq!(url.uid, 20);
        assert_eq!(url.section.as_deref(), Some("1.2"));
        assert_eq!(url.partial, Some((10, Some(20))));
        let url = parse_url("/INBOX/;uid=3/;section=HEADER.FIELDS%20(SUBJECT)").unwrap();
        assert_eq!((url.user, url.mailbox.as_deref(), url.uid), (None, Some("INBOX"), 3));
        assert_eq!(url.section.as_deref(), Some("HEADER.FIELDS (SUBJECT)"));
        let url = parse_url(";UID=7/;PARTIAL=5").unwrap();
        assert_eq!((url.mailbox, url.uid, url.partial), (None, 7, Some((5, None))));
        assert_eq!(parse_url("/%C3%A9t%C3%A9/;UID=1").unwrap().mailbox.as_deref(), Some("été"));
    }

    #[test]
    fn urls_that_are_not_of_a_message() {
        for url in [
            "",
            "/INBOX",
            "/INBOX/;UID=",
            "/INBOX/;UID=0x1",
            "/;UID=1",
            "INBOX/;UID=1/;SECTION=",
            "/INBOX/;UID=1/;PARTIAL=1.0",
            "/INBOX/;UID=1/;FOO=1",
            "/INBOX;UIDVALIDITY=x/;UID=1",
            "/%ZZ/;UID=1",
            "http://example.org/INBOX/;UID=1",
        ] {
            assert_eq!(parse_url(url), Err(UrlError::Malformed), "{url}");
        }
        let authorized = "imap://joe@example.com/INBOX/;uid=20/;section=1.2;urlauth=submit+fred:internal:91354a47";
        assert_eq!(parse_url(authorized), Err(UrlError::Urlauth));
    }
}
