//! The commands of RFC 5804 section 2, built from the tokens of one line: their names are
//! atoms in any case, their arguments strings (quoted or literal) and, for HAVESPACE, a number.

use super::Token;

/// A credential from the client: a SASL response. Its `Debug` output is `<redacted>`, so it can
/// sit in a logged [`Command`] without leaking. Equality is for tests.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// AUTHENTICATE mechanism [initial-response]: the mechanism upper-cased, the response the
    /// base64 text as sent.
    Authenticate {
        mechanism: String,
        initial: Option<Secret>,
    },
    StartTls,
    Logout,
    Capability,
    /// HAVESPACE name size.
    HaveSpace {
        name: String,
        size: u64,
    },
    /// PUTSCRIPT name script.
    PutScript {
        name: String,
        script: Vec<u8>,
    },
    /// CHECKSCRIPT script.
    CheckScript {
        script: Vec<u8>,
    },
    ListScripts,
    /// SETACTIVE name; the empty name deactivates.
    SetActive {
        name: String,
    },
    GetScript {
        name: String,
    },
    DeleteScript {
        name: String,
    },
    RenameScript {
        old: String,
        new: String,
    },
    /// NOOP [tag]: the tag comes back in the OK's TAG response code.
    Noop {
        tag: Option<String>,
    },
    Unauthenticate,
}

/// The client's answer to a SASL challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslAnswer {
    /// The base64 text of the answer.
    Data(Secret),
    /// `"*"`: the client gives up the exchange.
    Cancel,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("Unknown command")]
    Unknown,
    #[error("{0}")]
    Syntax(&'static str),
}

/// The commands by name, as counted in `tern_commands_total`.
pub const NAMES: [&str; 14] = [
    "AUTHENTICATE",
    "STARTTLS",
    "LOGOUT",
    "CAPABILITY",
    "HAVESPACE",
    "PUTSCRIPT",
    "CHECKSCRIPT",
    "LISTSCRIPTS",
    "SETACTIVE",
    "GETSCRIPT",
    "DELETESCRIPT",
    "RENAMESCRIPT",
    "NOOP",
    "UNAUTHENTICATE",
];

/// The known command `name` is, upper-cased, as a static text.
pub fn known_name(name: &[u8]) -> Option<&'static str> {
    NAMES.iter().find(|n| n.as_bytes().eq_ignore_ascii_case(name)).copied()
}

impl Command {
    /// The command's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Authenticate { .. } => "AUTHENTICATE",
            Command::StartTls => "STARTTLS",
            Command::Logout => "LOGOUT",
            Command::Capability => "CAPABILITY",
            Command::HaveSpace { .. } => "HAVESPACE",
            Command::PutScript { .. } => "PUTSCRIPT",
            Command::CheckScript { .. } => "CHECKSCRIPT",
            Command::ListScripts => "LISTSCRIPTS",
            Command::SetActive { .. } => "SETACTIVE",
            Command::GetScript { .. } => "GETSCRIPT",
            Command::DeleteScript { .. } => "DELETESCRIPT",
            Command::RenameScript { .. } => "RENAMESCRIPT",
            Command::Noop { .. } => "NOOP",
            Command::Unauthenticate => "UNAUTHENTICATE",
        }
    }

    /// The command of a line's tokens.
    pub fn from_tokens(tokens: Vec<Token>) -> Result<Command, ParseError> {
        let mut it = tokens.into_iter();
        let name = match it.next() {
            None => return Err(ParseError::Syntax("empty command")),
            Some(Token::Atom(name)) => name,
            Some(_) => return Err(ParseError::Syntax("a command starts with its name")),
        };
        let Some(name) = known_name(&name) else { return Err(ParseError::Unknown) };
        let args: Vec<Token> = it.collect();
        let arity = |min: usize, max: usize, usage: &'static str| {
            if args.len() < min || args.len() > max { Err(ParseError::Syntax(usage)) } else { Ok(()) }
        };
        Ok(match name {
            "AUTHENTICATE" => {
                arity(1, 2, "expected AUTHENTICATE <mechanism> [<initial response>]")?;
                let mechanism = text(&args[0], "the mechanism must be a SASL name")?;
                let valid = !mechanism.is_empty()
                    && mechanism.len() <= 20
                    && mechanism.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !valid {
                    return Err(ParseError::Syntax("the mechanism must be a SASL name"));
                }
                let initial = args.get(1).map(|t| Secret::new(t.as_string()));
                Command::Authenticate { mechanism: mechanism.to_ascii_uppercase(), initial }
            }
            "STARTTLS" => none(&args, Command::StartTls)?,
            "LOGOUT" => none(&args, Command::Logout)?,
            "CAPABILITY" => none(&args, Command::Capability)?,
            "LISTSCRIPTS" => none(&args, Command::ListScripts)?,
            "UNAUTHENTICATE" => none(&args, Command::Unauthenticate)?,
            "HAVESPACE" => {
                arity(2, 2, "expected HAVESPACE <name> <size>")?;
                let name = script_name(&args[0])?;
                let size = match &args[1] {
                    Token::Atom(n) => number(n),
                    _ => None,
                }
                .ok_or(ParseError::Syntax("the size must be a number below 2^32"))?;
                Command::HaveSpace { name, size }
            }
            "PUTSCRIPT" => {
                arity(2, 2, "expected PUTSCRIPT <name> <script>")?;
                let name = script_name(&args[0])?;
                Command::PutScript { name, script: args[1].as_string().to_vec() }
            }
            "CHECKSCRIPT" => {
                arity(1, 1, "expected CHECKSCRIPT <script>")?;
                Command::CheckScript { script: args[0].as_string().to_vec() }
            }
            "SETACTIVE" => {
                arity(1, 1, "expected SETACTIVE <name>")?;
                Command::SetActive { name: script_name(&args[0])? }
            }
            "GETSCRIPT" => {
                arity(1, 1, "expected GETSCRIPT <name>")?;
                Command::GetScript { name: script_name(&args[0])? }
            }
            "DELETESCRIPT" => {
                arity(1, 1, "expected DELETESCRIPT <name>")?;
                Command::DeleteScript { name: script_name(&args[0])? }
            }
            "RENAMESCRIPT" => {
                arity(2, 2, "expected RENAMESCRIPT <old name> <new name>")?;
                Command::RenameScript { old: script_name(&args[0])?, new: script_name(&args[1])? }
            }
            "NOOP" => {
                arity(0, 1, "expected NOOP [<tag>]")?;
                let tag = match args.first() {
                    Some(t) => Some(text(t, "the tag must be UTF-8 without control characters")?.to_string()),
                    None => None,
                };
                Command::Noop { tag }
            }
            _ => return Err(ParseError::Unknown),
        })
    }
}

impl SaslAnswer {
    pub fn from_tokens(tokens: Vec<Token>) -> Result<SaslAnswer, ParseError> {
        let mut it = tokens.into_iter();
        match (it.next(), it.next()) {
            (Some(t), None) if t.as_string() == b"*" => Ok(SaslAnswer::Cancel),
            (Some(Token::Atom(_)), None) => Err(ParseError::Syntax("the SASL answer must be a string")),
            (Some(t), None) => Ok(SaslAnswer::Data(Secret::new(t.as_string()))),
            _ => Err(ParseError::Syntax("expected one string as the SASL answer")),
        }
    }
}

fn none(args: &[Token], command: Command) -> Result<Command, ParseError> {
    if args.is_empty() { Ok(command) } else { Err(ParseError::Syntax("no arguments allowed")) }
}

/// A string argument as text: valid UTF-8 without control characters.
fn text<'a>(token: &'a Token, error: &'static str) -> Result<&'a str, ParseError> {
    let s = std::str::from_utf8(token.as_string()).map_err(|_| ParseError::Syntax(error))?;
    if s.chars().any(char::is_control) {
        return Err(ParseError::Syntax(error));
    }
    Ok(s)
}

/// A script name as sent. The rules of RFC 5804 section 1.6 beyond UTF-8 are the mailbox
/// service's to apply, the one home of input validation; only bytes that are not text at all
/// are refused here.
fn script_name(token: &Token) -> Result<String, ParseError> {
    std::str::from_utf8(token.as_string())
        .map(str::to_string)
        .map_err(|_| ParseError::Syntax("a script name must be UTF-8"))
}

/// A number of RFC 5804: decimal, fitting in 32 bits.
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    (value <= u64::from(u32::MAX)).then_some(value)
}

/// The fuzz body's checks on a parsed command: the arguments it needs are there, and the
/// credential of AUTHENTICATE stays out of debug output.
pub(crate) fn check_parsed(command: &Command) {
    let debug = format!("{command:?}");
    match command {
        Command::Authenticate { mechanism, initial } => {
            assert!(!mechanism.is_empty() && mechanism.len() <= 20);
            assert_eq!(mechanism, &mechanism.to_ascii_uppercase());
            if let Some(i) = initial
                && !i.expose().is_empty()
            {
                assert!(debug.contains("initial: Some(<redacted>)"), "{debug}");
            }
        }
        Command::HaveSpace { size, .. } => assert!(*size <= u64::from(u32::MAX)),
        Command::Noop { tag: Some(t) } => assert!(!t.chars().any(char::is_control)),
        _ => {}
    }
    assert!(NAMES.contains(&command.name()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Decoded, Limits, parse_command};

    const LIMITS: Limits = Limits { max_line: 1024, max_literal: 1 << 20 };

    fn p(s: &str) -> Result<Command, ParseError> {
        match parse_command(format!("{s}\r\n").as_bytes(), &LIMITS) {
            Decoded::Done(r, _) => r,
            other => panic!("{s:?} gave {other:?}"),
        }
    }

    #[test]
    fn parses_every_command() {
        assert_eq!(
            p("AUTHENTICATE \"plain\" \"AGEAYg==\""),
            Ok(Command::Authenticate { mechanism: "PLAIN".into(), initial: Some(Secret::new(*b"AGEAYg==")) })
        );
        assert_eq!(p("Authenticate PLAIN"), Ok(Command::Authenticate { mechanism: "PLAIN".into(), initial: None }));
        assert_eq!(p("STARTTLS"), Ok(Command::StartTls));
        assert_eq!(p("logout"), Ok(Command::Logout));
        assert_eq!(p("CAPABILITY"), Ok(Command::Capability));
        assert_eq!(
            p("HAVESPACE \"myscript\" 999999"),
            Ok(Command::HaveSpace { name: "myscript".into(), size: 999999 })
        );
        assert_eq!(
            p("PUTSCRIPT \"a b\" \"keep;\""),
            Ok(Command::PutScript { name: "a b".into(), script: b"keep;".to_vec() })
        );
        assert_eq!(p("CHECKSCRIPT \"keep;\""), Ok(Command::CheckScript { script: b"keep;".to_vec() }));
        assert_eq!(p("LISTSCRIPTS"), Ok(Command::ListScripts));
        assert_eq!(p("SETACTIVE \"\""), Ok(Command::SetActive { name: String::new() }));
        assert_eq!(p("GETSCRIPT \"x\""), Ok(Command::GetScript { name: "x".into() }));
        assert_eq!(p("DELETESCRIPT \"x\""), Ok(Command::DeleteScript { name: "x".into() }));
        assert_eq!(p("RENAMESCRIPT \"x\" \"y\""), Ok(Command::RenameScript { old: "x".into(), new: "y".into() }));
        assert_eq!(p("NOOP"), Ok(Command::Noop { tag: None }));
        assert_eq!(p("NOOP \"STARTTLS-SYNC-42\""), Ok(Command::Noop { tag: Some("STARTTLS-SYNC-42".into()) }));
        assert_eq!(p("UNAUTHENTICATE"), Ok(Command::Unauthenticate));
    }

    #[test]
    fn quoted_strings_unescape() {
        assert_eq!(
            p(r#"RENAMESCRIPT "a\"b" "c\\d""#),
            Ok(Command::RenameScript { old: "a\"b".into(), new: "c\\d".into() })
        );
        assert_eq!(p("GETSCRIPT \"Jörg\""), Ok(Command::GetScript { name: "Jörg".into() }));
    }

    #[test]
    fn refuses_bad_arguments() {
        for bad in [
            "STARTTLS x",
            "LOGOUT \"now\"",
            "AUTHENTICATE",
            "AUTHENTICATE \"PL@IN\"",
            "AUTHENTICATE \"\"",
            "AUTHENTICATE \"PLAIN\" \"a\" \"b\"",
            "HAVESPACE \"x\"",
            "HAVESPACE \"x\" -1",
            "HAVESPACE \"x\" \"10\"",
            "HAVESPACE \"x\" 4294967296",
            "HAVESPACE \"x\" 12345678901",
            "PUTSCRIPT \"x\"",
            "CHECKSCRIPT",
            "SETACTIVE",
            "RENAMESCRIPT \"x\"",
            "NOOP \"a\" \"b\"",
            "GETSCRIPT \"x\"\"y\"",
            "GETSCRIPT \"unterminated",
            r#"GETSCRIPT "bad \n escape""#,
            "\"GETSCRIPT\"",
        ] {
            assert!(matches!(p(bad), Err(ParseError::Syntax(_))), "{bad:?} gave {:?}", p(bad));
        }
        assert_eq!(p("HAVESPACE \"x\" 4294967295"), Ok(Command::HaveSpace { name: "x".into(), size: 4294967295 }));
        assert_eq!(p("XYZZY"), Err(ParseError::Unknown));
        assert_eq!(p("LISTSCRIPT"), Err(ParseError::Unknown));
        assert_eq!(p(""), Err(ParseError::Syntax("empty command")));
        let Decoded::Done(r, _) = parse_command(b"GETSCRIPT \"\xff\"\r\n", &LIMITS) else { panic!() };
        assert!(matches!(r, Err(ParseError::Syntax(_))));
        let Decoded::Done(r, _) = parse_command(b"NOOP \"a\0b\"\r\n", &LIMITS) else { panic!() };
        assert!(matches!(r, Err(ParseError::Syntax(_))));
    }

    #[test]
    fn credentials_stay_out_of_debug_output() {
        let auth = p("AUTHENTICATE \"PLAIN\" \"AGJvYgBodW50ZXIy\"").unwrap();
        let debug = format!("{auth:?}");
        assert!(!debug.contains("AGJvYgBodW50ZXIy") && debug.contains("<redacted>"), "{debug}");
        assert_eq!(format!("{:?}", SaslAnswer::Data(Secret::new(*b"x"))), "Data(<redacted>)");
    }

    #[test]
    fn names_match_keywords() {
        for line in ["STARTTLS", "LOGOUT", "CAPABILITY", "LISTSCRIPTS", "UNAUTHENTICATE", "NOOP"] {
            assert_eq!(p(line).unwrap().name(), line);
        }
        assert_eq!(known_name(b"putscript"), Some("PUTSCRIPT"));
        assert_eq!(known_name(b"PUTSCRIPTS"), None);
    }
}
