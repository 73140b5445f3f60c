//! ManageSieve responses (RFC 5804 section 1.3 and 4): `OK`, `NO` and `BYE`, each with an
//! optional response code in parentheses and an optional human-readable string; and the
//! strings that data lines are made of, quoted when short and plain, a literal `{N}` otherwise.

/// The response codes Tern sends (RFC 5804 section 1.3). REFERRAL, TRANSITION-NEEDED and
/// WARNINGS are never sent: there is no other server to refer to, no SASL mechanism that needs
/// a password transition, and the check passes or fails, without warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    /// The mechanism is refused by policy on this connection, and STARTTLS would not help.
    AuthTooWeak,
    /// The mechanism needs an encrypted connection: STARTTLS first.
    EncryptNeeded,
    /// The account's scripts together would be over quota.
    Quota,
    /// The account has as many scripts as it may.
    QuotaMaxScripts,
    /// The script is larger than a script may be.
    QuotaMaxSize,
    /// The server's last SASL data, in base64, with the final OK.
    Sasl(String),
    /// A temporary failure (the mailbox service is unavailable): try again later.
    TryLater,
    /// The script is the active one (DELETESCRIPT).
    Active,
    /// There is no script of that name.
    NonExistent,
    /// There is a script of that name already (RENAMESCRIPT).
    AlreadyExists,
    /// The tag of a NOOP, echoed back.
    Tag(String),
}

impl Code {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(b'(');
        match self {
            Code::AuthTooWeak => out.extend_from_slice(b"AUTH-TOO-WEAK"),
            Code::EncryptNeeded => out.extend_from_slice(b"ENCRYPT-NEEDED"),
            Code::Quota => out.extend_from_slice(b"QUOTA"),
            Code::QuotaMaxScripts => out.extend_from_slice(b"QUOTA/MAXSCRIPTS"),
            Code::QuotaMaxSize => out.extend_from_slice(b"QUOTA/MAXSIZE"),
            Code::Sasl(data) => {
                out.extend_from_slice(b"SASL ");
                encode_string(data.as_bytes(), out);
            }
            Code::TryLater => out.extend_from_slice(b"TRYLATER"),
            Code::Active => out.extend_from_slice(b"ACTIVE"),
            Code::NonExistent => out.extend_from_slice(b"NONEXISTENT"),
            Code::AlreadyExists => out.extend_from_slice(b"ALREADYEXISTS"),
            Code::Tag(tag) => {
                out.extend_from_slice(b"TAG ");
                encode_string(tag.as_bytes(), out);
            }
        }
        out.push(b')');
    }
}

/// A status response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Ok(Option<Code>, String),
    No(Option<Code>, String),
    /// The server closes the connection after it.
    Bye(Option<Code>, String),
}

/// The longest human-readable text of a response; longer text is cut (at a character), so that
/// a message from below cannot make a response of any size.
const MAX_TEXT: usize = 1000;

impl Response {
    pub fn ok(text: impl Into<String>) -> Self {
        Response::Ok(None, text.into())
    }

    pub fn no(text: impl Into<String>) -> Self {
        Response::No(None, text.into())
    }

    pub fn no_code(code: Code, text: impl Into<String>) -> Self {
        Response::No(Some(code), text.into())
    }

    pub fn bye(text: impl Into<String>) -> Self {
        Response::Bye(None, text.into())
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, Response::Ok(..))
    }

    /// The response on the wire: `OK`, `NO` or `BYE`, the code, the text as a quoted string
    /// (omitted when empty), CRLF. Control characters in the text become spaces, so that it is
    /// always one quoted string on one line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (word, code, text): (&[u8], _, _) = match self {
            Response::Ok(c, t) => (b"OK", c, t),
            Response::No(c, t) => (b"NO", c, t),
            Response::Bye(c, t) => (b"BYE", c, t),
        };
        out.extend_from_slice(word);
        if let Some(code) = code {
            out.push(b' ');
            code.encode(out);
        }
        if !text.is_empty() {
            let mut clean = String::with_capacity(text.len().min(MAX_TEXT));
            for c in text.chars() {
                if clean.len() + c.len_utf8() > MAX_TEXT {
                    break;
                }
                clean.push(if c.is_control() { ' ' } else { c });
            }
            out.push(b' ');
            encode_string(clean.as_bytes(), out);
        }
        out.extend_from_slice(b"\r\n");
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Appends `s` as a ManageSieve string: quoted, with `"` and `\` escaped, when it is at most
/// 1024 octets of text without CR, LF or NUL; a literal `{N}` CRLF and the octets otherwise
/// (`literal-s2c`, which clients read without answering).
pub fn encode_string(s: &[u8], out: &mut Vec<u8>) {
    if s.len() <= super::MAX_QUOTED && !s.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
        out.extend_from_slice(s);
    }
}

/// The fuzz body's checks on encoding: any text makes one response line; any bytes make a
/// string that reads back as the same bytes.
pub(crate) fn check_encoding(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    for r in [
        Response::ok(text.clone()),
        Response::no_code(Code::Tag(text.clone()), text.clone()),
        Response::Bye(Some(Code::QuotaMaxSize), text.clone()),
    ] {
        let bytes = r.to_bytes();
        assert!(bytes.ends_with(b"\r\n"));
        let line = &bytes[..bytes.len() - 2];
        // A tag code may need a literal; the text never does.
        if !matches!(r, Response::No(..)) {
            assert!(!line.contains(&b'\r') && !line.contains(&b'\n'), "line break in {bytes:?}");
        }
    }
    let mut out = Vec::new();
    encode_string(data, &mut out);
    assert_eq!(read_string(&out), Some((data.to_vec(), out.len())));
}

/// Reads a string as [`encode_string`] writes it: the client's side, for tests.
pub(crate) fn read_string(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    match buf.first()? {
        b'"' => {
            let mut out = Vec::new();
            let mut i = 1;
            loop {
                match *buf.get(i)? {
                    b'"' => return Some((out, i + 1)),
                    b'\\' => {
                        out.push(*buf.get(i + 1)?);
                        i += 2;
                    }
                    b => {
                        out.push(b);
                        i += 1;
                    }
                }
            }
        }
        b'{' => {
            let close = buf.iter().position(|b| *b == b'}')?;
            let n: usize = std::str::from_utf8(&buf[1..close]).ok()?.parse().ok()?;
            let start = close + 3;
            (buf.get(close + 1..start)? == b"\r\n").then_some(())?;
            Some((buf.get(start..start + n)?.to_vec(), start + n))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_status_responses() {
        assert_eq!(Response::ok("").to_bytes(), b"OK\r\n");
        assert_eq!(Response::ok("Logged in").to_bytes(), b"OK \"Logged in\"\r\n");
        assert_eq!(
            Response::no_code(Code::NonExistent, "There is no script \"x\"").to_bytes(),
            b"NO (NONEXISTENT) \"There is no script \\\"x\\\"\"\r\n"
        );
        assert_eq!(
            Response::Ok(Some(Code::Tag("STARTTLS-SYNC".into())), "Done".into()).to_bytes(),
            b"OK (TAG \"STARTTLS-SYNC\") \"Done\"\r\n"
        );
        assert_eq!(Response::bye("Too many errors").to_bytes(), b"BYE \"Too many errors\"\r\n");
        assert!(Response::ok("x").is_ok() && !Response::no("x").is_ok());
    }

    #[test]
    fn encodes_every_code() {
        for (code, wire) in [
            (Code::AuthTooWeak, "(AUTH-TOO-WEAK)"),
            (Code::EncryptNeeded, "(ENCRYPT-NEEDED)"),
            (Code::Quota, "(QUOTA)"),
            (Code::QuotaMaxScripts, "(QUOTA/MAXSCRIPTS)"),
            (Code::QuotaMaxSize, "(QUOTA/MAXSIZE)"),
            (Code::Sasl("AAEC".into()), "(SASL \"AAEC\")"),
            (Code::TryLater, "(TRYLATER)"),
            (Code::Active, "(ACTIVE)"),
            (Code::NonExistent, "(NONEXISTENT)"),
            (Code::AlreadyExists, "(ALREADYEXISTS)"),
            (Code::Tag("t".into()), "(TAG \"t\")"),
        ] {
            assert_eq!(Response::no_code(code, "").to_bytes(), format!("NO {wire}\r\n").as_bytes());
        }
    }

    #[test]
    fn text_cannot_inject_lines_and_is_bounded() {
        assert_eq!(Response::no("a\r\nOK \"b\"").to_bytes(), b"NO \"a  OK \\\"b\\\"\"\r\n");
        let long = Response::no("é".repeat(5000)).to_bytes();
        assert!(long.len() <= MAX_TEXT + 10, "{}", long.len());
        assert!(std::str::from_utf8(&long).is_ok());
    }

    #[test]
    fn strings_are_quoted_or_literal() {
        let enc = |s: &[u8]| {
            let mut out = Vec::new();
            encode_string(s, &mut out);
            out
        };
        assert_eq!(enc(b"abc"), b"\"abc\"");
        assert_eq!(enc(b""), b"\"\"");
        assert_eq!(enc(b"a\"b\\"), b"\"a\\\"b\\\\\"");
        assert_eq!(enc(b"keep;\r\n"), b"{7}\r\nkeep;\r\n");
        assert_eq!(enc(&[b'a'; 1025]), [b"{1025}\r\n".as_slice(), &[b'a'; 1025]].concat());
        assert_eq!(enc(&[b'a'; 1024]).len(), 1026);
        for s in [&b"x\0y"[..], b"", b"\"\\", b"\r", "Grüße".as_bytes()] {
            let e = enc(s);
            assert_eq!(read_string(&e), Some((s.to_vec(), e.len())));
        }
    }
}
