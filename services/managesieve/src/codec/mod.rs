//! The ManageSieve codec: bytes in, commands out; responses in, bytes out. It has no I/O and
//! knows nothing of tokio, gRPC or storage. A function that needs more input says so with a
//! value ([`Decoded::NeedMore`], with how many bytes at least) rather than by blocking.
//!
//! A command is a line of tokens (RFC 5804 section 4): an atom (the command's name, a number),
//! a quoted string of at most 1024 octets with `\"` and `\\` escapes, or a literal, `{N+}` CRLF
//! and then N octets, after which the line goes on. Literals are counted apart from the line:
//! [`Limits::max_line`] bounds what is not literal data, [`Limits::max_literal`] the literal
//! data of one command, so a script of a megabyte is one short line and one literal.
//!
//! Clients send only non-synchronising literals (`literal-c2s`, `{N+}`): ManageSieve has no
//! continuation response that a client could wait for. A synchronising `{N}` from a client is
//! read the same way, its octets taken as they come, as Dovecot's Pigeonhole does too; a
//! client that waited for a go-ahead would wait for nothing, and none is known to.

pub mod command;
pub mod response;

pub use command::{Command, ParseError, SaslAnswer, Secret};
pub use response::{Code, Response, encode_string};

/// Quoted strings are at most this long (RFC 5804 section 4, `quoted`).
pub const MAX_QUOTED: usize = 1024;

/// The bounds one command is parsed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest command without its literal data, in octets, line end included.
    pub max_line: usize,
    /// The most literal data one command may carry, in octets.
    pub max_literal: u64,
}

/// A token of a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// Characters other than the atom-specials: a command name, a number, `*`.
    Atom(Vec<u8>),
    /// A quoted string, its escapes undone.
    Quoted(Vec<u8>),
    /// A literal's octets.
    Literal(Vec<u8>),
}

impl Token {
    /// The token's octets as a string argument: literals and quoted strings, and atoms too,
    /// since clients that send `AUTHENTICATE PLAIN` unquoted mean the same thing.
    pub fn as_string(&self) -> &[u8] {
        match self {
            Token::Atom(b) | Token::Quoted(b) | Token::Literal(b) => b,
        }
    }
}

/// Why the input cannot be parsed as a command, when that is not the command's own fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The line is longer than [`Limits::max_line`]: `skip` bytes can be discarded, and
    /// `ended` says whether they include the line's end. If not, the caller keeps discarding
    /// until it does.
    LineTooLong { skip: usize, ended: bool },
    /// A literal announces more octets than [`Limits::max_literal`] leaves. `header` bytes
    /// (up to and including the CRLF after `{N+}`) can be discarded; the client sends `size`
    /// octets after them, whatever the server answers, and then the rest of the line.
    /// `command` is the line's first word, upper-cased, when it is a known one.
    LiteralTooLarge { command: Option<&'static str>, size: u64, header: usize },
    /// A `{` that does not start a well-formed literal header (`{` digits `+`? `}` CRLF):
    /// where the command ends cannot be known any more.
    BadLiteral(&'static str),
}

/// The outcome of looking for one command (or one SASL answer) in a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<T> {
    /// A whole command, parsed or refused, and how many bytes it used (its line end
    /// included). A refused one is the client's mistake, answered with NO.
    Done(Result<T, ParseError>, usize),
    /// Not complete: try again once the buffer holds at least this many bytes.
    NeedMore(usize),
    /// See [`Fault`].
    Fault(Fault),
}

/// The tokens of one line, and how many bytes they used.
struct Framed {
    tokens: Vec<Token>,
    /// The first lexical error, reported once the whole line has been read.
    error: Option<&'static str>,
    used: usize,
}

/// Atom characters: anything but the atom-specials of RFC 5804 (`(`, `)`, `{`, SP, CTL,
/// `"`, `\`) and octets above 0x7F.
fn is_atom_char(b: u8) -> bool {
    b > b' ' && b < 0x7f && !matches!(b, b'(' | b')' | b'{' | b'"' | b'\\')
}

/// Splits the line at the start of `buf` into tokens, honouring literals.
fn frame(buf: &[u8], limits: &Limits) -> Result<Framed, Decoded<()>> {
    let mut tokens = Vec::new();
    let mut error = None;
    let mut pos = 0;
    // Octets that are not literal data, and literal data, so far.
    let mut line = 0usize;
    let mut literal_total = 0u64;
    // The line is too long: it is discarded up to its end, literal or not.
    let too_long = |pos: usize, buf: &[u8]| -> Decoded<()> {
        match buf[pos..].iter().position(|b| *b == b'\n') {
            Some(i) => Decoded::Fault(Fault::LineTooLong { skip: pos + i + 1, ended: true }),
            None => Decoded::Fault(Fault::LineTooLong { skip: buf.len(), ended: false }),
        }
    };
    loop {
        if line > limits.max_line {
            return Err(too_long(pos, buf));
        }
        let Some(&b) = buf.get(pos) else {
            return Err(if line >= limits.max_line { too_long(pos, buf) } else { Decoded::NeedMore(buf.len() + 1) });
        };
        match b {
            b'\n' | b'\r' if b == b'\n' || buf.get(pos + 1) == Some(&b'\n') => {
                // The line end counts towards the limit: CRLF two octets, a bare LF one.
                let ending = if b == b'\n' { 1 } else { 2 };
                if line + ending > limits.max_line {
                    return Err(Decoded::Fault(Fault::LineTooLong { skip: pos + ending, ended: true }));
                }
                return Ok(Framed { tokens, error, used: pos + ending });
            }
            b'\r' if pos + 1 == buf.len() => return Err(Decoded::NeedMore(buf.len() + 1)),
            b' ' => {
                pos += 1;
                line += 1;
            }
            b'"' => {
                let mut value = Vec::new();
                let mut i = pos + 1;
                loop {
                    match buf.get(i) {
                        None => {
                            // The string may end in bytes not come yet; the line limit still
                            // applies to what has.
                            if line + (i - pos) >= limits.max_line {
                                return Err(too_long(i, buf));
                            }
                            return Err(Decoded::NeedMore(buf.len() + 1));
                        }
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => match buf.get(i + 1) {
                            None => return Err(Decoded::NeedMore(buf.len() + 1)),
                            Some(&c @ (b'"' | b'\\')) => {
                                value.push(c);
                                i += 2;
                            }
                            Some(b'\r' | b'\n') => {
                                error.get_or_insert("unterminated quoted string");
                                i += 1;
                                break;
                            }
                            Some(&c) => {
                                error.get_or_insert("only \\\" and \\\\ may be escaped in a quoted string");
                                value.push(c);
                                i += 2;
                            }
                        },
                        Some(b'\r' | b'\n') => {
                            // The line ends inside the string; the line end is the command's.
                            error.get_or_insert("unterminated quoted string");
                            break;
                        }
                        Some(0) => {
                            error.get_or_insert("NUL in a quoted string");
                            i += 1;
                        }
                        Some(&c) => {
                            value.push(c);
                            i += 1;
                        }
                    }
                }
                if value.len() > MAX_QUOTED {
                    error.get_or_insert("quoted strings are at most 1024 octets; send a literal");
                }
                line += i - pos;
                pos = i;
                tokens.push(Token::Quoted(value));
            }
            b'{' => {
                // `{` digits [`+`] `}` CRLF: the header must be whole before it is judged.
                let rest = &buf[pos + 1..];
                let Some(close) = rest.iter().position(|b| !b.is_ascii_digit() && *b != b'+') else {
                    if rest.len() > 24 {
                        return Err(Decoded::Fault(Fault::BadLiteral("the literal's length is too long")));
                    }
                    return Err(Decoded::NeedMore(buf.len() + 1));
                };
                let (inside, after) = (&rest[..close], &rest[close..]);
                let digits = inside.strip_suffix(b"+").unwrap_or(inside);
                if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) || after[0] != b'}' {
                    return Err(Decoded::Fault(Fault::BadLiteral("expected {N+} with N the literal's length")));
                }
                // CRLF ends the header, or a bare LF as on command lines.
                let ending = match (after.get(1), after.get(2)) {
                    (Some(b'\r'), Some(b'\n')) => 2,
                    (Some(b'\n'), _) => 1,
                    (None, _) | (Some(b'\r'), None) => return Err(Decoded::NeedMore(buf.len() + 1)),
                    _ => return Err(Decoded::Fault(Fault::BadLiteral("a literal's header must end the line"))),
                };
                let header = pos + 1 + close + 1 + ending;
                line += header - pos;
                if line > limits.max_line {
                    return Err(too_long(pos, buf));
                }
                // Twenty digits may not fit in 64 bits; such a length is too large either way.
                let size = std::str::from_utf8(digits).ok().and_then(|d| d.parse::<u64>().ok()).unwrap_or(u64::MAX);
                literal_total = literal_total.saturating_add(size);
                if literal_total > limits.max_literal {
                    let command = match tokens.first() {
                        Some(Token::Atom(name)) => command::known_name(name),
                        _ => None,
                    };
                    return Err(Decoded::Fault(Fault::LiteralTooLarge { command, size, header }));
                }
                // Within max_literal, which a usize holds on every platform Tern runs on.
                let size = size as usize;
                if buf.len() < header + size {
                    return Err(Decoded::NeedMore(header + size));
                }
                tokens.push(Token::Literal(buf[header..header + size].to_vec()));
                pos = header + size;
            }
            _ => {
                let end = buf[pos..].iter().position(|b| !is_atom_char(*b)).map(|i| pos + i);
                let end = match end {
                    Some(e) => e,
                    None => {
                        if line + (buf.len() - pos) >= limits.max_line {
                            return Err(too_long(pos, buf));
                        }
                        return Err(Decoded::NeedMore(buf.len() + 1));
                    }
                };
                if end == pos {
                    // A character that starts no token (a control character, `(`, 8-bit).
                    error.get_or_insert("unexpected character");
                    pos += 1;
                    line += 1;
                    continue;
                }
                tokens.push(Token::Atom(buf[pos..end].to_vec()));
                line += end - pos;
                pos = end;
                if !matches!(buf[pos], b' ' | b'\r' | b'\n') {
                    error.get_or_insert("expected a space between arguments");
                }
            }
        }
    }
}

impl Decoded<()> {
    fn cast<T>(self) -> Decoded<T> {
        match self {
            Decoded::NeedMore(n) => Decoded::NeedMore(n),
            Decoded::Fault(f) => Decoded::Fault(f),
            Decoded::Done(_, _) => unreachable!("framing never finishes with Done"),
        }
    }
}

/// Parses the command at the start of `buf`.
pub fn parse_command(buf: &[u8], limits: &Limits) -> Decoded<Command> {
    match frame(buf, limits) {
        Ok(Framed { error: Some(e), used, .. }) => Decoded::Done(Err(ParseError::Syntax(e)), used),
        Ok(Framed { tokens, error: None, used }) => Decoded::Done(Command::from_tokens(tokens), used),
        Err(d) => d.cast(),
    }
}

/// Parses the client's answer to a SASL challenge (RFC 5804 section 2.1): one string, or
/// `"*"` (or a bare `*`) to cancel.
pub fn parse_sasl_answer(buf: &[u8], limits: &Limits) -> Decoded<SaslAnswer> {
    match frame(buf, limits) {
        Ok(Framed { error: Some(e), used, .. }) => Decoded::Done(Err(ParseError::Syntax(e)), used),
        Ok(Framed { tokens, error: None, used }) => Decoded::Done(SaslAnswer::from_tokens(tokens), used),
        Err(d) => d.cast(),
    }
}

#[cfg(test)]
mod tests;

/// The body of the `managesieve_parse` fuzz target: any input parses, is refused or asks for
/// more without panicking; whatever is asked for is more than there is; consuming commands one
/// after another never goes past the input; a command that parses has the arguments it needs;
/// credentials stay out of debug output; and every response encodes to lines the client can
/// split again.
pub fn fuzz_command(data: &[u8]) {
    let limits = Limits { max_line: 256, max_literal: 512 };
    let mut rest = data;
    for parse in [0, 1] {
        rest = data;
        loop {
            let outcome = if parse == 0 {
                match parse_command(rest, &limits) {
                    Decoded::Done(r, used) => {
                        if let Ok(c) = &r {
                            command::check_parsed(c);
                        }
                        Decoded::Done(r.map(|_| ()), used)
                    }
                    Decoded::NeedMore(n) => Decoded::NeedMore(n),
                    Decoded::Fault(f) => Decoded::Fault(f),
                }
            } else {
                match parse_sasl_answer(rest, &limits) {
                    Decoded::Done(r, used) => Decoded::Done(r.map(|_| ()), used),
                    Decoded::NeedMore(n) => Decoded::NeedMore(n),
                    Decoded::Fault(f) => Decoded::Fault(f),
                }
            };
            match outcome {
                Decoded::Done(_, used) => {
                    assert!(used > 0 && used <= rest.len());
                    assert_eq!(rest[used - 1], b'\n');
                    rest = &rest[used..];
                }
                Decoded::NeedMore(n) => {
                    assert!(n > rest.len());
                    break;
                }
                Decoded::Fault(Fault::LineTooLong { skip, ended }) => {
                    assert!(skip > 0 && skip <= rest.len());
                    assert_eq!(ended, rest[skip - 1] == b'\n');
                    rest = &rest[skip..];
                }
                Decoded::Fault(Fault::LiteralTooLarge { size, header, .. }) => {
                    assert!(size > limits.max_literal || header > 0);
                    assert!(header <= rest.len());
                    // The session would discard the literal and the rest of its line.
                    let skip = (header as u64).saturating_add(size).min(rest.len() as u64) as usize;
                    rest = &rest[skip..];
                    match rest.iter().position(|b| *b == b'\n') {
                        Some(i) => rest = &rest[i + 1..],
                        None => break,
                    }
                }
                Decoded::Fault(Fault::BadLiteral(why)) => {
                    assert!(!why.is_empty());
                    break;
                }
            }
        }
    }
    let _ = rest;
    response::check_encoding(data);
}

#[cfg(test)]
mod fuzz_tests {
    /// Runs the fuzz body on pseudo-random input (fixed seed, bounded) in the normal tests.
    #[test]
    fn fuzz_body_holds_on_generated_input() {
        // Whole keywords and literal headers as well as single bytes, so that many commands
        // parse and their checks run.
        let alphabet: [&[u8]; 30] = [
            b"\r\n",
            b"\n",
            b"\r",
            b" ",
            b"\"",
            b"\\",
            b"{",
            b"}",
            b"+",
            b"{3+}\r\n",
            b"{0}\r\n",
            b"{999999+}\r\n",
            b"\r\nPUTSCRIPT ",
            b"\r\nAUTHENTICATE \"PLAIN\" ",
            b"\r\nHAVESPACE \"a\" ",
            b"\r\nNOOP ",
            b"\r\nRENAMESCRIPT ",
            b"\r\nsetactive ",
            b"\"x\"",
            b"\"*\"",
            b"*",
            b"1",
            b"4294967296",
            b"abc",
            b"\0",
            b"\xff",
            b"\xc3\xa9",
            b"(",
            b"AGEAYg==",
            b"\r\n\r\n",
        ];
        for input in tern_runtime::generated::inputs(0x51e7_e5ee_d0c0_ffee, 3000, 32, &alphabet) {
            super::fuzz_command(&input);
        }
    }

    /// Every complete command also goes through the fuzz body, so the checks on its parse run.
    #[test]
    fn fuzz_body_holds_on_valid_commands() {
        for input in [
            "PUTSCRIPT \"a\" {4+}\r\nkeep\r\nLISTSCRIPTS\r\n",
            "AUTHENTICATE \"PLAIN\" \"AGEAYg==\"\r\n",
            "HAVESPACE \"x\" 100\r\nNOOP \"t\"\r\nRENAMESCRIPT \"a\" \"b\"\r\n",
        ] {
            super::fuzz_command(input.as_bytes());
        }
    }
}
