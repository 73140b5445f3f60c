//! POP3 responses: the status line (`+OK`, `-ERR` with an optional response code of RFC 2449
//! and RFC 3206), the SASL continuation of RFC 5034, and multi-line bodies, which are
//! dot-stuffed and end with a line holding a single dot (RFC 1939 section 3).

use base64::Engine as _;

/// The longest status line, in octets including the CRLF (RFC 2449 section 4). Longer text is
/// cut to fit.
pub const MAX_RESPONSE_LINE: usize = 512;

/// The extended response codes Tern sends in `-ERR` responses, announced by the RESP-CODES
/// capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespCode {
    /// The failure is about the credentials, not the system (RFC 3206 section 4).
    Auth,
    /// The maildrop is in use by another session (RFC 2449 section 8.1.1).
    InUse,
    /// A temporary system problem; trying again later may work (RFC 3206 section 4).
    SysTemp,
    /// A permanent system problem; trying again will not help (RFC 3206 section 4).
    SysPerm,
    /// The user logged in too soon after the last login (RFC 2449 section 8.1.2).
    LoginDelay,
}

impl RespCode {
    /// The code as it appears between the brackets.
    pub fn as_str(self) -> &'static str {
        match self {
            RespCode::Auth => "AUTH",
            RespCode::InUse => "IN-USE",
            RespCode::SysTemp => "SYS/TEMP",
            RespCode::SysPerm => "SYS/PERM",
            RespCode::LoginDelay => "LOGIN-DELAY",
        }
    }
}

impl std::fmt::Display for RespCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One response line. A multi-line response is an [`Response::Ok`] followed by a body from
/// [`encode_multiline`] or a [`MultilineEncoder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `+OK text`, or a bare `+OK` when the text is empty.
    Ok(String),
    /// `-ERR [CODE] text`. Without a code, the text should not begin with `[`, which clients
    /// would take for one.
    Err { code: Option<RespCode>, text: String },
    /// A SASL challenge, `+ ` and the base64 of these bytes (RFC 5034 section 4).
    Challenge(Vec<u8>),
}

impl Response {
    pub fn ok(text: impl Into<String>) -> Self {
        Response::Ok(text.into())
    }

    pub fn err(text: impl Into<String>) -> Self {
        Response::Err { code: None, text: text.into() }
    }

    pub fn err_code(code: RespCode, text: impl Into<String>) -> Self {
        Response::Err { code: Some(code), text: text.into() }
    }

    pub fn challenge(data: impl Into<Vec<u8>>) -> Self {
        Response::Challenge(data.into())
    }

    pub fn is_ok(&self) -> bool {
        !matches!(self, Response::Err { .. })
    }

    /// The response on the wire. Text never carries CR, LF or other control characters, which
    /// could let input inject lines, and is cut so the line fits in [`MAX_RESPONSE_LINE`].
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Response::Ok(text) => status_line(b"+OK", text, out),
            Response::Err { code: None, text } => status_line(b"-ERR", text, out),
            Response::Err { code: Some(code), text } => {
                let mut prefix = b"-ERR [".to_vec();
                prefix.extend_from_slice(code.as_str().as_bytes());
                prefix.push(b']');
                status_line(&prefix, text, out);
            }
            Response::Challenge(data) => {
                out.extend_from_slice(b"+ ");
                out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(data).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

fn status_line(prefix: &[u8], text: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(prefix);
    if !text.is_empty() {
        out.push(b' ');
        // Room for the text: the line less the prefix, the space and the CRLF.
        let mut room = MAX_RESPONSE_LINE - prefix.len() - 3;
        for c in text.chars() {
            let c = if c.is_control() { ' ' } else { c };
            if c.len_utf8() > room {
                break;
            }
            room -= c.len_utf8();
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Encodes `body` as the data of a multi-line response and appends the terminating `.` line.
/// See [`MultilineEncoder`] for the rules; this is the whole-body form.
pub fn encode_multiline(body: &[u8], out: &mut Vec<u8>) {
    let mut encoder = MultilineEncoder::new();
    encoder.feed(body, out);
    encoder.finish(out);
}

/// Encodes a multi-line body in chunks, for a message read piece by piece. Every bare LF and
/// bare CR becomes CRLF, a line starting with `.` gets another `.` in front, and
/// [`MultilineEncoder::finish`] ends an unterminated last line with CRLF before it appends
/// `.` CRLF. An empty body gives just the terminator. The result is the same however the body
/// is split into chunks.
#[derive(Debug, Clone)]
pub struct MultilineEncoder {
    /// The next byte starts a line.
    at_line_start: bool,
    /// The last byte fed was a CR, which ends a line whether or not an LF follows.
    pending_cr: bool,
}

impl Default for MultilineEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl MultilineEncoder {
    pub fn new() -> Self {
        Self { at_line_start: true, pending_cr: false }
    }

    /// Encodes the next chunk of the body into `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + 2);
        while let Some(&first) = chunk.first() {
            if self.pending_cr {
                self.pending_cr = false;
                self.at_line_start = true;
                out.extend_from_slice(b"\r\n");
                if first == b'\n' {
                    chunk = &chunk[1..];
                    continue;
                }
            }
            if self.at_line_start && first == b'.' {
                out.push(b'.');
            }
            // The rest of the line is copied as it is.
            let end = chunk.iter().position(|b| *b == b'\r' || *b == b'\n').unwrap_or(chunk.len());
            out.extend_from_slice(&chunk[..end]);
            if end > 0 {
                self.at_line_start = false;
            }
            match chunk.get(end) {
                Some(b'\n') => {
                    out.extend_from_slice(b"\r\n");
                    self.at_line_start = true;
                }
                Some(_) => self.pending_cr = true,
                None => return,
            }
            chunk = &chunk[end + 1..];
        }
    }

    /// Ends the body: closes an unterminated last line and appends the `.` CRLF terminator.
    pub fn finish(self, out: &mut Vec<u8>) {
        if self.pending_cr || !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// The part of `message` that TOP sends (RFC 1939 section 7): the header, the empty line that
/// ends it and the first `lines` lines of the body. A message without an empty line is all
/// header, and is sent whole, as is one whose body has no more than `lines` lines. Lines end
/// as [`MultilineEncoder`] sees them: at CRLF, a bare LF or a bare CR.
pub fn top(message: &[u8], lines: usize) -> &[u8] {
    let mut pos = 0;
    loop {
        let Some((content_end, next)) = line_at(message, pos) else { return message };
        let empty = content_end == pos;
        pos = next;
        if empty {
            break;
        }
    }
    for _ in 0..lines {
        match line_at(message, pos) {
            Some((_, next)) => pos = next,
            None => return message,
        }
    }
    &message[..pos]
}

/// For the line starting at `pos`, where its content ends and where the next line starts;
/// `None` if there is no line left.
fn line_at(message: &[u8], pos: usize) -> Option<(usize, usize)> {
    let rest = message.get(pos..).filter(|r| !r.is_empty())?;
    Some(match rest.iter().position(|b| *b == b'\r' || *b == b'\n') {
        None => (message.len(), message.len()),
        Some(i) if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') => (pos + i, pos + i + 2),
        Some(i) => (pos + i, pos + i + 1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn multiline(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_multiline(body, &mut out);
        out
    }

    #[test]
    fn encodes_status_lines() {
        assert_eq!(
            Response::ok("maildrop has 2 messages (320 octets)").to_bytes(),
            b"+OK maildrop has 2 messages (320 octets)\r\n"
        );
        assert_eq!(Response::ok("").to_bytes(), b"+OK\r\n");
        assert_eq!(Response::err("no such message").to_bytes(), b"-ERR no such message\r\n");
        assert_eq!(Response::err("").to_bytes(), b"-ERR\r\n");
        assert!(Response::ok("x").is_ok() && !Response::err("x").is_ok() && Response::challenge(*b"").is_ok());
    }

    #[test]
    fn encodes_every_response_code() {
        for (code, wire) in [
            (RespCode::Auth, "-ERR [AUTH] invalid credentials\r\n"),
            (RespCode::InUse, "-ERR [IN-USE] invalid credentials\r\n"),
            (RespCode::SysTemp, "-ERR [SYS/TEMP] invalid credentials\r\n"),
            (RespCode::SysPerm, "-ERR [SYS/PERM] invalid credentials\r\n"),
            (RespCode::LoginDelay, "-ERR [LOGIN-DELAY] invalid credentials\r\n"),
        ] {
            assert_eq!(Response::err_code(code, "invalid credentials").to_bytes(), wire.as_bytes());
        }
        assert_eq!(Response::err_code(RespCode::SysTemp, "").to_bytes(), b"-ERR [SYS/TEMP]\r\n");
        assert_eq!(RespCode::InUse.to_string(), "IN-USE");
    }

    #[test]
    fn text_cannot_inject_lines() {
        assert_eq!(Response::err("no\r\n+OK such\0user").to_bytes(), b"-ERR no  +OK such user\r\n");
        assert_eq!(Response::ok("a\rb\nc").to_bytes(), b"+OK a b c\r\n");
    }

    #[test]
    fn long_text_is_cut_to_the_line_limit() {
        let r = Response::ok("a".repeat(1000)).to_bytes();
        assert_eq!(r.len(), MAX_RESPONSE_LINE);
        assert!(r.starts_with(b"+OK aaa") && r.ends_with(b"a\r\n"));
        let r = Response::err_code(RespCode::LoginDelay, "é".repeat(1000)).to_bytes();
        assert!(r.len() <= MAX_RESPONSE_LINE && r.len() >= MAX_RESPONSE_LINE - 1);
        assert!(std::str::from_utf8(&r).is_ok(), "cut inside a character");
        let r = Response::err("b".repeat(MAX_RESPONSE_LINE - 7)).to_bytes();
        assert_eq!(r.len(), MAX_RESPONSE_LINE);
    }

    #[test]
    fn encodes_sasl_challenges() {
        assert_eq!(Response::challenge(*b"").to_bytes(), b"+ \r\n");
        assert_eq!(Response::challenge(b"hello".to_vec()).to_bytes(), b"+ aGVsbG8=\r\n");
        let long = Response::challenge(vec![0xa5; 1000]).to_bytes();
        assert!(long.len() > MAX_RESPONSE_LINE && long.ends_with(b"\r\n"));
    }

    #[test]
    fn multiline_bodies_are_dot_stuffed() {
        assert_eq!(multiline(b"a\r\n.\r\nb\r\n"), b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(multiline(b"..x\r\n"), b"...x\r\n.\r\n");
        assert_eq!(multiline(b".\r\n"), b"..\r\n.\r\n");
        assert_eq!(multiline(b"."), b"..\r\n.\r\n");
        assert_eq!(multiline(b"a.b\r\n .c\r\n"), b"a.b\r\n .c\r\n.\r\n");
        assert_eq!(multiline(b"x\r\n.\r\n.\r\n"), b"x\r\n..\r\n..\r\n.\r\n");
    }

    #[test]
    fn multiline_line_ends_are_normalised() {
        assert_eq!(multiline(b"a\nb\n"), b"a\r\nb\r\n.\r\n");
        assert_eq!(multiline(b"a\rb\r"), b"a\r\nb\r\n.\r\n");
        assert_eq!(multiline(b"a\r\r\nb"), b"a\r\n\r\nb\r\n.\r\n");
        assert_eq!(multiline(b"a\n\rb"), b"a\r\n\r\nb\r\n.\r\n");
        assert_eq!(multiline(b"\n.\n"), b"\r\n..\r\n.\r\n");
        assert_eq!(multiline(b"\r.\r"), b"\r\n..\r\n.\r\n");
        assert_eq!(multiline(b"no end"), b"no end\r\n.\r\n");
        assert_eq!(multiline(b"\r\n"), b"\r\n.\r\n");
    }

    #[test]
    fn empty_multiline_body_is_just_the_terminator() {
        assert_eq!(multiline(b""), b".\r\n");
        let mut out = Vec::new();
        let mut e = MultilineEncoder::default();
        e.feed(b"", &mut out);
        e.finish(&mut out);
        assert_eq!(out, b".\r\n");
    }

    #[test]
    fn multiline_chunks_split_anywhere() {
        let body = b"From: a\r\n\r\n.hi\n..\r.\r\n\rend\r";
        let whole = multiline(body);
        for cut in 0..=body.len() {
            for cut2 in cut..=body.len() {
                let mut out = Vec::new();
                let mut e = MultilineEncoder::new();
                e.feed(&body[..cut], &mut out);
                e.feed(&body[cut..cut2], &mut out);
                e.feed(&body[cut2..], &mut out);
                e.finish(&mut out);
                assert_eq!(out, whole, "cuts at {cut} and {cut2}");
            }
        }
    }

    const MESSAGE: &[u8] = b"From: a@b\r\nSubject: hi\r\n\r\nline 1\r\nline 2\r\nline 3\r\n";

    #[test]
    fn top_sends_the_header_and_some_lines() {
        assert_eq!(top(MESSAGE, 0), b"From: a@b\r\nSubject: hi\r\n\r\n");
        assert_eq!(top(MESSAGE, 1), b"From: a@b\r\nSubject: hi\r\n\r\nline 1\r\n");
        assert_eq!(top(MESSAGE, 2), b"From: a@b\r\nSubject: hi\r\n\r\nline 1\r\nline 2\r\n");
        assert_eq!(top(MESSAGE, 3), MESSAGE);
        assert_eq!(top(MESSAGE, 100), MESSAGE);
        assert_eq!(top(MESSAGE, usize::MAX), MESSAGE);
    }

    #[test]
    fn top_handles_odd_messages() {
        // No empty line: all of it is header.
        assert_eq!(top(b"From: a\r\nSubject: b\r\n", 0), b"From: a\r\nSubject: b\r\n");
        assert_eq!(top(b"From: a\r\nSubject: b", 5), b"From: a\r\nSubject: b");
        // An empty line and no body.
        assert_eq!(top(b"From: a\r\n\r\n", 0), b"From: a\r\n\r\n");
        assert_eq!(top(b"From: a\r\n\r\n", 3), b"From: a\r\n\r\n");
        // No header at all: the empty line comes first.
        assert_eq!(top(b"\r\nbody 1\r\nbody 2\r\n", 0), b"\r\n");
        assert_eq!(top(b"\r\nbody 1\r\nbody 2\r\n", 1), b"\r\nbody 1\r\n");
        // A last line without a line end.
        assert_eq!(top(b"A: b\r\n\r\nx\r\ny", 1), b"A: b\r\n\r\nx\r\n");
        assert_eq!(top(b"A: b\r\n\r\nx\r\ny", 2), b"A: b\r\n\r\nx\r\ny");
        // Bare LF and bare CR line ends.
        assert_eq!(top(b"A: b\n\nx\ny\n", 1), b"A: b\n\nx\n");
        assert_eq!(top(b"A: b\r\rx\ry\r", 1), b"A: b\r\rx\r");
        assert_eq!(top(b"", 0), b"");
        assert_eq!(top(b"", 10), b"");
    }

    #[test]
    fn top_output_encodes_cleanly() {
        let mut out = Vec::new();
        encode_multiline(top(b"A: b\r\n\r\n.x\r\ny\r\n", 1), &mut out);
        assert_eq!(out, b"A: b\r\n\r\n..x\r\n.\r\n");
    }
}
