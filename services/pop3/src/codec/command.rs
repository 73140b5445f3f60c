//! Parsing one POP3 command line: the commands of RFC 1939 (without APOP), CAPA of RFC 2449,
//! STLS of RFC 2595 and AUTH of RFC 5034.
//!
//! A line is a case-insensitive keyword and arguments separated by single spaces; runs of
//! spaces and trailing spaces are accepted too, except in PASS, whose argument is the rest of
//! the line as sent. Message numbers are decimal, at least 1 and at most ten digits.

/// A credential from the client: a PASS argument or a SASL initial response. Its `Debug`
/// output is `<redacted>`, so it can sit in a logged [`Command`] without leaking. Equality is
/// for tests; check credentials through the password hash, never by comparing these.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// USER name: one argument, valid UTF-8 without control characters.
    User(String),
    /// PASS string: the rest of the line after `PASS `, spaces included.
    Pass(Secret),
    Stat,
    /// LIST with an optional message number.
    List(Option<u32>),
    Retr(u32),
    Dele(u32),
    Noop,
    Rset,
    Quit,
    /// TOP msg n: the header and the first `lines` lines of the body of message `msg`.
    Top {
        msg: u32,
        lines: u32,
    },
    /// UIDL with an optional message number.
    Uidl(Option<u32>),
    Capa,
    Stls,
    /// AUTH without arguments: the client asks for the list of SASL mechanisms.
    AuthList,
    /// AUTH mechanism [initial-response]. The mechanism is upper-cased; the initial response
    /// is base64 as sent, where a lone `=` stands for an empty response (RFC 5034 section 4).
    Auth {
        mechanism: String,
        initial: Option<Secret>,
    },
}

impl Command {
    /// The command's keyword, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::Stat => "STAT",
            Command::List(_) => "LIST",
            Command::Retr(_) => "RETR",
            Command::Dele(_) => "DELE",
            Command::Noop => "NOOP",
            Command::Rset => "RSET",
            Command::Quit => "QUIT",
            Command::Top { .. } => "TOP",
            Command::Uidl(_) => "UIDL",
            Command::Capa => "CAPA",
            Command::Stls => "STLS",
            Command::AuthList | Command::Auth { .. } => "AUTH",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unknown command")]
    Unknown,
    #[error("{0}")]
    Syntax(&'static str),
}

/// The longest SASL mechanism name (RFC 4422 section 3.1).
const MAX_MECHANISM: usize = 20;

impl Command {
    /// Parses one command line, without its line end (see [`super::next_line`]).
    pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
        let (keyword, rest) = match line.iter().position(|b| *b == b' ') {
            Some(i) => (&line[..i], Some(&line[i + 1..])),
            None => (line, None),
        };
        // Every keyword has three or four letters; anything longer is unknown without a look.
        if keyword.len() > 4 {
            return Err(ParseError::Unknown);
        }
        let mut upper = [0u8; 4];
        upper[..keyword.len()].copy_from_slice(keyword);
        upper.make_ascii_uppercase();
        let args = rest.unwrap_or_default();
        let no_args = |c: Command| if words(args).next().is_none() { Ok(c) } else { Err(no_arguments()) };
        match &upper[..keyword.len()] {
            b"USER" => {
                let name = text(args, "the user name must be UTF-8 without control characters")?;
                let mut it = name.split(' ').filter(|w| !w.is_empty());
                match (it.next(), it.next()) {
                    (Some(name), None) => Ok(Command::User(name.to_string())),
                    (None, _) => Err(ParseError::Syntax("USER needs a name")),
                    (Some(_), Some(_)) => Err(ParseError::Syntax("the user name cannot contain spaces")),
                }
            }
            b"PASS" => {
                // The password is everything after the first space, as RFC 1939 allows, so
                // leading and trailing spaces belong to it.
                let password = text(args, "the password must be UTF-8 without control characters")?;
                if password.is_empty() {
                    return Err(ParseError::Syntax("PASS needs a password"));
                }
                Ok(Command::Pass(Secret::new(password)))
            }
            b"STAT" => no_args(Command::Stat),
            b"LIST" => Ok(Command::List(optional_number(args)?)),
            b"RETR" => Ok(Command::Retr(one_number(args)?)),
            b"DELE" => Ok(Command::Dele(one_number(args)?)),
            b"NOOP" => no_args(Command::Noop),
            b"RSET" => no_args(Command::Rset),
            b"QUIT" => no_args(Command::Quit),
            b"TOP" => {
                let mut it = words(args);
                let (Some(msg), Some(lines), None) = (it.next(), it.next(), it.next()) else {
                    return Err(ParseError::Syntax("expected TOP <message> <lines>"));
                };
                let msg = message_number(msg)?;
                let lines = number(lines).ok_or(ParseError::Syntax("the line count must be a number"))?;
                Ok(Command::Top { msg, lines })
            }
            b"UIDL" => Ok(Command::Uidl(optional_number(args)?)),
            b"CAPA" => no_args(Command::Capa),
            b"STLS" => no_args(Command::Stls),
            b"AUTH" => {
                let mut it = words(args);
                let Some(mechanism) = it.next() else { return Ok(Command::AuthList) };
                let valid = mechanism.len() <= MAX_MECHANISM
                    && mechanism.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
                if !valid {
                    return Err(ParseError::Syntax("invalid SASL mechanism name"));
                }
                let mechanism = String::from_utf8_lossy(mechanism).to_ascii_uppercase();
                let initial = match it.next() {
                    None => None,
                    Some(r) if r.iter().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(b)) => {
                        Some(Secret::new(String::from_utf8_lossy(r)))
                    }
                    Some(_) => return Err(ParseError::Syntax("the initial response must be base64")),
                };
                if it.next().is_some() {
                    return Err(ParseError::Syntax("expected AUTH [<mechanism> [<initial-response>]]"));
                }
                Ok(Command::Auth { mechanism, initial })
            }
            // APOP is deliberately not offered: it needs the plain password on the server.
            _ => Err(ParseError::Unknown),
        }
    }
}

fn no_arguments() -> ParseError {
    ParseError::Syntax("no arguments allowed")
}

/// The arguments, split on runs of spaces.
fn words(args: &[u8]) -> impl Iterator<Item = &[u8]> {
    args.split(|b| *b == b' ').filter(|w| !w.is_empty())
}

/// A free-text argument: valid UTF-8 and free of control characters (NUL above all).
fn text<'a>(args: &'a [u8], error: &'static str) -> Result<&'a str, ParseError> {
    let s = std::str::from_utf8(args).map_err(|_| ParseError::Syntax(error))?;
    if s.chars().any(char::is_control) {
        return Err(ParseError::Syntax(error));
    }
    Ok(s)
}

/// A non-negative decimal number of at most ten digits that fits in 32 bits.
fn number(arg: &[u8]) -> Option<u32> {
    if arg.is_empty() || arg.len() > 10 || !arg.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = arg.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    u32::try_from(value).ok()
}

fn message_number(arg: &[u8]) -> Result<u32, ParseError> {
    match number(arg) {
        Some(0) => Err(ParseError::Syntax("message numbers start at 1")),
        Some(n) => Ok(n),
        None => Err(ParseError::Syntax("invalid message number")),
    }
}

fn one_number(args: &[u8]) -> Result<u32, ParseError> {
    let mut it = words(args);
    match (it.next(), it.next()) {
        (Some(n), None) => message_number(n),
        (None, _) => Err(ParseError::Syntax("a message number is required")),
        (Some(_), Some(_)) => Err(ParseError::Syntax("only one message number is allowed")),
    }
}

fn optional_number(args: &[u8]) -> Result<Option<u32>, ParseError> {
    let mut it = words(args);
    match (it.next(), it.next()) {
        (None, _) => Ok(None),
        (Some(n), None) => message_number(n).map(Some),
        (Some(_), Some(_)) => Err(ParseError::Syntax("only one message number is allowed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, ParseError> {
        Command::parse(s.as_bytes())
    }

    fn syntax(r: Result<Command, ParseError>) -> bool {
        matches!(r, Err(ParseError::Syntax(_)))
    }

    #[test]
    fn parses_every_command() {
        assert_eq!(p("USER bob@example.com"), Ok(Command::User("bob@example.com".into())));
        assert_eq!(p("PASS s3cret"), Ok(Command::Pass(Secret::new("s3cret"))));
        assert_eq!(p("STAT"), Ok(Command::Stat));
        assert_eq!(p("LIST"), Ok(Command::List(None)));
        assert_eq!(p("LIST 2"), Ok(Command::List(Some(2))));
        assert_eq!(p("RETR 1"), Ok(Command::Retr(1)));
        assert_eq!(p("DELE 4294967295"), Ok(Command::Dele(u32::MAX)));
        assert_eq!(p("NOOP"), Ok(Command::Noop));
        assert_eq!(p("RSET"), Ok(Command::Rset));
        assert_eq!(p("QUIT"), Ok(Command::Quit));
        assert_eq!(p("TOP 3 10"), Ok(Command::Top { msg: 3, lines: 10 }));
        assert_eq!(p("TOP 3 0"), Ok(Command::Top { msg: 3, lines: 0 }));
        assert_eq!(p("UIDL"), Ok(Command::Uidl(None)));
        assert_eq!(p("UIDL 7"), Ok(Command::Uidl(Some(7))));
        assert_eq!(p("CAPA"), Ok(Command::Capa));
        assert_eq!(p("STLS"), Ok(Command::Stls));
        assert_eq!(p("AUTH"), Ok(Command::AuthList));
        assert_eq!(p("AUTH plain"), Ok(Command::Auth { mechanism: "PLAIN".into(), initial: None }));
        assert_eq!(
            p("AUTH PLAIN AGJvYgBzM2NyZXQ="),
            Ok(Command::Auth { mechanism: "PLAIN".into(), initial: Some(Secret::new("AGJvYgBzM2NyZXQ=")) })
        );
        assert_eq!(
            p("AUTH SCRAM-SHA-256 ="),
            Ok(Command::Auth { mechanism: "SCRAM-SHA-256".into(), initial: Some(Secret::new("=")) })
        );
    }

    #[test]
    fn keywords_ignore_case_and_spaces_are_lenient() {
        assert_eq!(p("stat"), Ok(Command::Stat));
        assert_eq!(p("QuIt"), Ok(Command::Quit));
        assert_eq!(p("top  1   5 "), Ok(Command::Top { msg: 1, lines: 5 }));
        assert_eq!(p("RETR  12"), Ok(Command::Retr(12)));
        assert_eq!(p("LIST "), Ok(Command::List(None)));
        assert_eq!(p("USER   bob  "), Ok(Command::User("bob".into())));
        assert_eq!(p("STAT  "), Ok(Command::Stat));
        assert_eq!(p("RETR 007"), Ok(Command::Retr(7)));
        assert_eq!(p("USER Jörg"), Ok(Command::User("Jörg".into())));
    }

    #[test]
    fn the_password_is_the_rest_of_the_line() {
        assert_eq!(p("PASS correct horse battery"), Ok(Command::Pass(Secret::new("correct horse battery"))));
        assert_eq!(p("pass  two leading "), Ok(Command::Pass(Secret::new(" two leading "))));
        assert_eq!(p("PASS pässwörd"), Ok(Command::Pass(Secret::new("pässwörd"))));
        assert!(syntax(p("PASS")));
        assert!(syntax(p("PASS ")));
        assert!(syntax(Command::parse(b"PASS a\0b")));
        assert!(syntax(Command::parse(b"PASS \xff\xfe")));
        assert!(syntax(Command::parse(b"PASS a\tb")));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let pass = p("PASS hunter2").unwrap();
        assert_eq!(format!("{pass:?}"), "Pass(<redacted>)");
        let auth = p("AUTH PLAIN AGJvYgBodW50ZXIy").unwrap();
        let debug = format!("{auth:?}");
        assert!(!debug.contains("AGJvYgBodW50ZXIy"), "{debug}");
        assert!(debug.contains("<redacted>"));
        assert_eq!(format!("{:#?}", Secret::new("hunter2")), "<redacted>");
        let Command::Pass(secret) = pass else { panic!() };
        assert_eq!(secret.expose(), "hunter2");
        assert_eq!(secret.into_inner(), "hunter2");
    }

    #[test]
    fn names_match_keywords() {
        for line in ["USER a", "PASS b", "STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET", "QUIT", "TOP 1 1"] {
            assert_eq!(p(line).unwrap().name(), line.split(' ').next().unwrap());
        }
        for line in ["UIDL", "CAPA", "STLS", "AUTH", "AUTH X"] {
            assert_eq!(p(line).unwrap().name(), &line[..4]);
        }
    }

    #[test]
    fn rejects_unknown_commands() {
        for bad in
            ["", " ", " STAT", "APOP bob c4c9334bac560ecc979e58001b3e22fb", "XYZZY", "LAST", "STA", "STATS", "TO"]
        {
            assert_eq!(p(bad), Err(ParseError::Unknown), "{bad:?}");
        }
        assert_eq!(Command::parse(b"ST\0T"), Err(ParseError::Unknown));
        assert_eq!(Command::parse(b"\xff\xfe\xfd"), Err(ParseError::Unknown));
        assert_eq!(Command::parse(b"STAT\r"), Err(ParseError::Unknown));
        assert_eq!(Command::parse(b"STAT\tx"), Err(ParseError::Unknown));
        assert_eq!(Command::parse(&[b'A'; 100_000]), Err(ParseError::Unknown));
    }

    #[test]
    fn rejects_bad_arguments() {
        for bad in [
            "USER",
            "USER ",
            "USER bob smith",
            "STAT 1",
            "NOOP x",
            "RSET now",
            "QUIT please",
            "CAPA x",
            "STLS x",
            "LIST 0",
            "LIST 1 2",
            "LIST -1",
            "LIST +1",
            "LIST x",
            "LIST 1x",
            "LIST 1.0",
            "RETR",
            "RETR 0",
            "RETR 000",
            "RETR 4294967296",
            "RETR 99999999999999999999999999",
            "RETR 00000000001",
            "RETR 1 2",
            "DELE",
            "DELE -0",
            "TOP",
            "TOP 1",
            "TOP 0 1",
            "TOP 1 -1",
            "TOP 1 2 3",
            "TOP 1 4294967296",
            "UIDL 0",
            "UIDL a b",
            "AUTH PL@IN",
            "AUTH ABCDEFGHIJKLMNOPQRSTU",
            "AUTH PLAIN not*base64",
            "AUTH PLAIN abc def",
        ] {
            assert!(syntax(p(bad)), "{bad:?} gave {:?}", p(bad));
        }
        assert!(syntax(Command::parse(b"USER \xc3\x28")));
        assert!(syntax(Command::parse(b"USER bo\0b")));
        assert!(syntax(Command::parse(b"USER bob\r")));
        assert!(syntax(Command::parse(b"RETR \xff")));
        assert!(syntax(Command::parse(b"RETR 1\0")));
        assert!(syntax(Command::parse(b"AUTH PLAIN \xff")));
        assert_eq!(p("AUTH ABCDEFGHIJKLMNOPQRST").map(|c| c.name()), Ok("AUTH"));
    }

    #[test]
    fn errors_read_as_sentences() {
        assert_eq!(ParseError::Unknown.to_string(), "unknown command");
        assert_eq!(p("RETR 0").unwrap_err().to_string(), "message numbers start at 1");
    }
}
