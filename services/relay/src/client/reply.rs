//! Incremental parsing of SMTP server replies (RFC 5321 section 4.2). A reply is one or more
//! lines that share a three-digit code; every line but the last has a `-` after the code. The
//! parser looks at a buffer, says whether it holds a whole reply yet, and never blocks.

use std::fmt;

/// The longest reply line accepted, including its line ending. RFC 5321 allows 512; real
/// servers send longer lines, so the limit only guards memory against a hostile peer.
pub const MAX_LINE_LEN: usize = 4096;
/// The most lines one reply may have. Large EHLO replies have around 20.
pub const MAX_REPLY_LINES: usize = 100;
/// The most bytes one reply may span, including line endings.
pub const MAX_REPLY_LEN: usize = 64 * 1024;

/// One complete server reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code, always in `200..=599`.
    pub code: u16,
    /// The enhanced status code (RFC 3463) as class, subject and detail, when the first line's
    /// text starts with one whose class matches the reply code.
    pub enhanced: Option<(u8, u16, u16)>,
    /// The text of each line after the code and separator, verbatim (so it still includes any
    /// enhanced status code). A line of just the code gives an empty string.
    pub lines: Vec<String>,
}

impl Reply {
    /// Whether the reply is 2xx: the command succeeded.
    pub fn is_positive_completion(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// Whether the reply is 3xx: the server waits for more, such as message data after DATA.
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// Whether the reply is 4xx: the command failed but may succeed if retried later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// Whether the reply is 5xx: the command failed and retrying will not help.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The text of all lines, trimmed and joined with single spaces (empty lines dropped), so
    /// that a multi-line reply fits on one log line or one DSN header line.
    pub fn text(&self) -> String {
        self.lines.iter().map(|l| l.trim()).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
    }
}

impl fmt::Display for Reply {
    /// Formats the reply on one line, like `550 5.1.1 No such user`, as used in the
    /// Diagnostic-Code of a DSN and in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.text();
        if text.is_empty() { write!(f, "{}", self.code) } else { write!(f, "{} {text}", self.code) }
    }
}

/// Why a server's reply could not be parsed. Each of these means the peer does not speak SMTP
/// properly, so the caller should give up on the connection rather than try to resynchronise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("reply line longer than {MAX_LINE_LEN} bytes")]
    LineTooLong,
    #[error("reply longer than {MAX_REPLY_LEN} bytes")]
    ReplyTooLong,
    #[error("reply has more than {MAX_REPLY_LINES} lines")]
    TooManyLines,
    #[error("reply line does not start with a three-digit code from 200 to 599: {0:?}")]
    BadCode(String),
    #[error("reply code {code} is followed by neither a space nor a hyphen: {line:?}")]
    BadSeparator { code: u16, line: String },
    #[error("reply line has code {found} but the reply started with {first}")]
    CodeMismatch { first: u16, found: u16 },
}

/// Parses one reply from the start of `buf`. Returns `Ok(None)` when `buf` does not yet hold a
/// whole reply, and otherwise the reply with the number of bytes it used; bytes after it (a
/// pipelined next reply) are left alone. Lines may end in CRLF or a bare LF, and text that is
/// not UTF-8 is replaced lossily, since reply text is only ever shown to people.
///
/// # Errors
///
/// A [`ReplyError`] when a complete line is malformed or the reply exceeds a limit. The limits
/// are checked on incomplete input too, so a peer that never ends its line gets an error rather
/// than `Ok(None)` forever.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
    let mut pos = 0;
    let mut first_code = None;
    let mut lines = Vec::new();
    loop {
        let rest = &buf[pos..];
        let Some(nl) = rest.iter().position(|b| *b == b'\n') else {
            // Without a line end, the reply can still fail its limits: checking them here stops
            // a peer from making us buffer an endless line.
            if rest.len() >= MAX_LINE_LEN {
                return Err(ReplyError::LineTooLong);
            }
            if buf.len() > MAX_REPLY_LEN {
                return Err(ReplyError::ReplyTooLong);
            }
            return Ok(None);
        };
        if nl + 1 > MAX_LINE_LEN {
            return Err(ReplyError::LineTooLong);
        }
        pos += nl + 1;
        if pos > MAX_REPLY_LEN {
            return Err(ReplyError::ReplyTooLong);
        }
        let raw = &rest[..nl];
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        let code = parse_code(line).ok_or_else(|| ReplyError::BadCode(excerpt(line)))?;
        let first = *first_code.get_or_insert(code);
        if code != first {
            return Err(ReplyError::CodeMismatch { first, found: code });
        }
        let last = match line.get(3) {
            None | Some(b' ') => true,
            Some(b'-') => false,
            Some(_) => return Err(ReplyError::BadSeparator { code, line: excerpt(line) }),
        };
        if lines.len() == MAX_REPLY_LINES {
            return Err(ReplyError::TooManyLines);
        }
        lines.push(String::from_utf8_lossy(line.get(4..).unwrap_or_default()).into_owned());
        if last {
            let enhanced = lines.first().and_then(|l| parse_enhanced(l, code));
            return Ok(Some((Reply { code, enhanced, lines }, pos)));
        }
    }
}

/// Reads the three-digit code at the start of a line, if it is one SMTP can send.
fn parse_code(line: &[u8]) -> Option<u16> {
    let digits = line.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = digits.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    (200..=599).contains(&code).then_some(code)
}

/// Reads an enhanced status code like `5.1.1` at the start of `text`. RFC 2034 requires its
/// class to match the reply code's first digit; one that does not is treated as plain text.
fn parse_enhanced(text: &str, code: u16) -> Option<(u8, u16, u16)> {
    let token = text.split(' ').next()?;
    let mut parts = token.split('.');
    let (class, subject, detail) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let number = |s: &str, max_len: usize| -> Option<u16> {
        let ok = (1..=max_len).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
        if ok { s.parse().ok() } else { None }
    };
    let class = u8::try_from(number(class, 1)?).ok()?;
    if !matches!(class, 2 | 4 | 5) || u16::from(class) != code / 100 {
        return None;
    }
    Some((class, number(subject, 3)?, number(detail, 3)?))
}

/// A short, readable piece of an offending line for an error message, so that a hostile peer
/// cannot fill the logs through our errors.
fn excerpt(line: &[u8]) -> String {
    String::from_utf8_lossy(&line[..line.len().min(64)]).into_owned()
}

/// The body of the `smtp_reply` fuzz target: parsing replies one after another either
/// finishes, asks for more bytes, or fails with an error, and never panics or stalls.
pub fn fuzz_reply(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((reply, used))) = parse_reply(rest) {
        // A reply always uses at least one line, so the loop makes progress and ends.
        assert!(used > 0 && used <= rest.len());
        assert!((200..=599).contains(&reply.code));
        let _ = reply.to_string();
        rest = &rest[used..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> (Reply, usize) {
        parse_reply(input).expect("valid reply").expect("complete reply")
    }

    #[test]
    fn single_and_multi_line() {
        let (r, n) = parse_all(b"550 5.1.1 No such user\r\n");
        assert_eq!((r.code, r.enhanced, n), (550, Some((5, 1, 1)), 24));
        assert!(r.is_permanent() && !r.is_transient());
        assert_eq!(r.to_string(), "550 5.1.1 No such user");

        let input = b"250-mx.example.org Hello\r\n250-PIPELINING\n250 SIZE 1000\r\n354 go\r\n";
        let (r, n) = parse_all(input);
        assert_eq!(r.lines, ["mx.example.org Hello", "PIPELINING", "SIZE 1000"]);
        assert_eq!(&input[n..], b"354 go\r\n");
        assert!(r.is_positive_completion() && r.enhanced.is_none());
        let (r, _) = parse_all(&input[n..]);
        assert!(r.is_intermediate());
    }

    #[test]
    fn bare_code_and_enhanced_edge_cases() {
        let (r, _) = parse_all(b"250\r\n");
        assert_eq!((r.lines.len(), r.to_string()), (1, "250".to_owned()));
        assert_eq!(parse_all(b"451 4.7.1\r\n").0.enhanced, Some((4, 7, 1)));
        assert_eq!(parse_all(b"250 2.1.500 ok\r\n").0.enhanced, Some((2, 1, 500)));
        assert_eq!(parse_all(b"250 5.1.1 mismatched class\r\n").0.enhanced, None);
        assert_eq!(parse_all(b"550 5.1.1000 too long\r\n").0.enhanced, None);
        assert_eq!(parse_all(b"550 5.1 short\r\n").0.enhanced, None);
        assert_eq!(parse_all(b"550 5.1.1.1 extra\r\n").0.enhanced, None);
        assert_eq!(parse_all(b"421 \xffbad\r\n").0.lines, ["\u{fffd}bad"]);
    }

    #[test]
    fn split_at_every_offset() {
        let input = b"250-first\r\n250-8BITMIME\n250 2.0.0 OK\r\n";
        let whole = parse_all(input);
        assert_eq!(whole.1, input.len());
        for cut in 0..input.len() {
            assert_eq!(parse_reply(&input[..cut]), Ok(None), "prefix of {cut} bytes");
        }
        assert_eq!(parse_all(input), whole);
    }

    #[test]
    fn hostile_input() {
        let mut long = b"250 ".to_vec();
        long.resize(MAX_LINE_LEN + 10, b'a');
        assert_eq!(parse_reply(&long), Err(ReplyError::LineTooLong));
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse_reply(&long), Err(ReplyError::LineTooLong));

        let garbage = vec![b'x'; 1 << 20];
        assert_eq!(parse_reply(&garbage), Err(ReplyError::LineTooLong));

        assert!(matches!(parse_reply(b"25 short\r\n"), Err(ReplyError::BadCode(_))));
        assert!(matches!(parse_reply(b"150 low\r\n"), Err(ReplyError::BadCode(_))));
        assert!(matches!(parse_reply(b"600 high\r\n"), Err(ReplyError::BadCode(_))));
        assert!(matches!(parse_reply(b"2x0 ok\r\n"), Err(ReplyError::BadCode(_))));
        assert!(matches!(parse_reply(b"250x ok\r\n"), Err(ReplyError::BadSeparator { .. })));
        let mismatch = parse_reply(b"250-a\r\n550 b\r\n");
        assert_eq!(mismatch, Err(ReplyError::CodeMismatch { first: 250, found: 550 }));

        let many = b"250-x\r\n".repeat(MAX_REPLY_LINES + 1);
        assert_eq!(parse_reply(&many), Err(ReplyError::TooManyLines));
        let line = [b"250-".as_slice(), &[b'a'; 4000], b"\r\n"].concat();
        assert_eq!(parse_reply(&line.repeat(20)), Err(ReplyError::ReplyTooLong));
    }

    /// Runs the fuzz body on pseudo-random input (fixed seed, bounded) in the normal tests.
    #[test]
    fn fuzz_body_holds_on_generated_input() {
        let tokens: [&[u8]; 12] =
            [b"250-", b"250 ", b"451 4.3.0 ", b"550 5.1.1 ", b"\r\n", b"\n", b"-", b" ", b"99", b"x", b"\x00", b"\xff"];
        for input in tern_runtime::generated::inputs(0x9e37_79b9_7f4a_7c15, 3000, 48, &tokens) {
            super::fuzz_reply(&input);
        }
    }
}
