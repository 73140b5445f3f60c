//! Parsing one SMTP command line (RFC 5321 section 4.1, with the parameters of the ESMTP
//! extensions Tern offers: SIZE, BODY, SMTPUTF8, AUTH, DSN).

/// A reverse or forward path: `None` is the null path `<>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path(pub Option<String>);

impl Path {
    pub fn address(&self) -> Option<&str> {
        self.0.as_deref()
    }

    pub fn is_null(&self) -> bool {
        self.0.is_none()
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{}>", self.0.as_deref().unwrap_or(""))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Body {
    #[default]
    SevenBit,
    EightBitMime,
    BinaryMime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: Body,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    pub envid: Option<String>,
    /// AUTH= of RFC 4954; kept for the trace only.
    pub auth: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptParams {
    /// NOTIFY= values, upper-cased (NEVER, SUCCESS, FAILURE, DELAY).
    pub notify: Vec<String>,
    /// ORCPT= as given (`rfc822;user@example.com`).
    pub orcpt: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Mail(Path, MailParams),
    Rcpt(Path, RcptParams),
    Data,
    Bdat { size: u64, last: bool },
    Rset,
    Noop,
    Quit,
    Vrfy(String),
    Expn(String),
    Help,
    StartTls,
    Auth { mechanism: String, initial: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unrecognised command")]
    Unknown,
    #[error("{0}")]
    Syntax(&'static str),
    #[error("unsupported parameter {0}")]
    Parameter(String),
}

/// Longest path (RFC 5321 section 4.5.3.1.3).
const MAX_PATH: usize = 256;

impl Command {
    pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
        let line = std::str::from_utf8(line).map_err(|_| ParseError::Syntax("command is not valid UTF-8"))?;
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        let no_args =
            |c: Command| if rest.is_empty() { Ok(c) } else { Err(ParseError::Syntax("no arguments allowed")) };
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" | "HELO" => {
                if rest.is_empty() || rest.contains(char::is_whitespace) && !rest.starts_with('[') {
                    return Err(ParseError::Syntax("a domain or address literal is required"));
                }
                let host = rest.split_whitespace().next().unwrap_or_default().to_string();
                Ok(if verb.eq_ignore_ascii_case("EHLO") { Command::Ehlo(host) } else { Command::Helo(host) })
            }
            "MAIL" => {
                let rest = strip_keyword(rest, "FROM:").ok_or(ParseError::Syntax("expected MAIL FROM:<address>"))?;
                let (path, params) = parse_path(rest, true)?;
                Ok(Command::Mail(path, mail_params(params)?))
            }
            "RCPT" => {
                let rest = strip_keyword(rest, "TO:").ok_or(ParseError::Syntax("expected RCPT TO:<address>"))?;
                let (path, params) = parse_path(rest, false)?;
                Ok(Command::Rcpt(path, rcpt_params(params)?))
            }
            "DATA" => no_args(Command::Data),
            "BDAT" => {
                let mut it = rest.split_whitespace();
                let size = it
                    .next()
                    .and_then(|s| if s.bytes().all(|b| b.is_ascii_digit()) { s.parse().ok() } else { None })
                    .ok_or(ParseError::Syntax("BDAT needs a chunk size"))?;
                let last = match it.next() {
                    None => false,
                    Some(l) if l.eq_ignore_ascii_case("LAST") => true,
                    Some(_) => return Err(ParseError::Syntax("expected BDAT <size> [LAST]")),
                };
                if it.next().is_some() {
                    return Err(ParseError::Syntax("expected BDAT <size> [LAST]"));
                }
                Ok(Command::Bdat { size, last })
            }
            "RSET" => no_args(Command::Rset),
            // NOOP may carry an argument, which is ignored (RFC 5321 section 4.1.1.9).
            "NOOP" => Ok(Command::Noop),
            "QUIT" => no_args(Command::Quit),
            "VRFY" => Ok(Command::Vrfy(rest.to_string())),
            "EXPN" => Ok(Command::Expn(rest.to_string())),
            "HELP" => Ok(Command::Help),
            "STARTTLS" => no_args(Command::StartTls),
            "AUTH" => {
                let mut it = rest.split_whitespace();
                let mechanism = it.next().ok_or(ParseError::Syntax("AUTH needs a mechanism"))?.to_ascii_uppercase();
                let initial = it.next().map(str::to_string);
                if it.next().is_some() {
                    return Err(ParseError::Syntax("expected AUTH <mechanism> [initial-response]"));
                }
                Ok(Command::Auth { mechanism, initial })
            }
            _ => Err(ParseError::Unknown),
        }
    }
}

fn strip_keyword<'a>(s: &'a str, kw: &str) -> Option<&'a str> {
    if s.len() >= kw.len() && s[..kw.len()].eq_ignore_ascii_case(kw) { Some(s[kw.len()..].trim_start()) } else { None }
}

/// Parses `<path> params...`; returns the path and the parameter string.
fn parse_path(s: &str, reverse: bool) -> Result<(Path, &str), ParseError> {
    let s = s.strip_prefix('<').ok_or(ParseError::Syntax("the address must be in angle brackets"))?;
    let end = find_path_end(s).ok_or(ParseError::Syntax("missing closing angle bracket"))?;
    let inner = &s[..end];
    let params = s[end + 1..].trim();
    if !params.is_empty() && !s[end + 1..].starts_with(' ') {
        return Err(ParseError::Syntax("expected a space before parameters"));
    }
    if inner.len() > MAX_PATH {
        return Err(ParseError::Syntax("path too long"));
    }
    if inner.is_empty() {
        return if reverse {
            Ok((Path(None), params))
        } else {
            Err(ParseError::Syntax("an empty recipient is not allowed"))
        };
    }
    // A source route (`@a,@b:user@c`) is accepted and ignored (RFC 5321 section 4.1.2).
    let mailbox = match inner.strip_prefix('@') {
        Some(route) => route.split_once(':').map(|(_, m)| m).ok_or(ParseError::Syntax("bad source route"))?,
        None => inner,
    };
    validate_mailbox(mailbox, reverse)?;
    Ok((Path(Some(mailbox.to_string())), params))
}

/// The closing `>` of a path, skipping quoted local parts.
fn find_path_end(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

fn validate_mailbox(m: &str, reverse: bool) -> Result<(), ParseError> {
    if m.chars().any(|c| c.is_control() || c == ' ' && !m.starts_with('"')) {
        return Err(ParseError::Syntax("invalid character in address"));
    }
    match m.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {
            let domain_ok = (domain.starts_with('[') && domain.ends_with(']'))
                || domain.split('.').all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'))
                    && domain.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '.');
            if !domain_ok {
                return Err(ParseError::Syntax("invalid domain in address"));
            }
            Ok(())
        }
        // RCPT TO:<Postmaster> without a domain must be accepted (RFC 5321 section 4.5.1).
        None if !reverse && m.eq_ignore_ascii_case("postmaster") => Ok(()),
        _ => Err(ParseError::Syntax("an address needs a local part and a domain")),
    }
}

fn params(s: &str) -> impl Iterator<Item = (String, Option<&str>)> {
    s.split_whitespace().map(|p| match p.split_once('=') {
        Some((k, v)) => (k.to_ascii_uppercase(), Some(v)),
        None => (p.to_ascii_uppercase(), None),
    })
}

fn mail_params(s: &str) -> Result<MailParams, ParseError> {
    let mut out = MailParams::default();
    for (key, value) in params(s) {
        match (key.as_str(), value) {
            ("SIZE", Some(v)) => {
                out.size = Some(v.parse().map_err(|_| ParseError::Syntax("SIZE needs a number"))?);
            }
            ("BODY", Some(v)) => {
                out.body = match v.to_ascii_uppercase().as_str() {
                    "7BIT" => Body::SevenBit,
                    "8BITMIME" => Body::EightBitMime,
                    "BINARYMIME" => Body::BinaryMime,
                    _ => return Err(ParseError::Parameter(format!("BODY={v}"))),
                }
            }
            ("SMTPUTF8", None) => out.smtputf8 = true,
            ("RET", Some(v)) => {
                out.ret = Some(match v.to_ascii_uppercase().as_str() {
                    "FULL" => Ret::Full,
                    "HDRS" => Ret::Hdrs,
                    _ => return Err(ParseError::Parameter(format!("RET={v}"))),
                })
            }
            ("ENVID", Some(v)) if v.len() <= 100 => out.envid = Some(v.to_string()),
            ("AUTH", Some(v)) => out.auth = Some(v.to_string()),
            _ => return Err(ParseError::Parameter(key)),
        }
    }
    Ok(out)
}

fn rcpt_params(s: &str) -> Result<RcptParams, ParseError> {
    let mut out = RcptParams::default();
    for (key, value) in params(s) {
        match (key.as_str(), value) {
            ("NOTIFY", Some(v)) => {
                let list: Vec<String> = v.split(',').map(|x| x.to_ascii_uppercase()).collect();
                let valid = list.iter().all(|x| ["NEVER", "SUCCESS", "FAILURE", "DELAY"].contains(&x.as_str()));
                if !valid || (list.len() > 1 && list.iter().any(|x| x == "NEVER")) {
                    return Err(ParseError::Parameter(format!("NOTIFY={v}")));
                }
                out.notify = list;
            }
            ("ORCPT", Some(v)) if v.contains(';') && v.len() <= 500 => out.orcpt = Some(v.to_string()),
            _ => return Err(ParseError::Parameter(key)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, ParseError> {
        Command::parse(s.as_bytes())
    }

    #[test]
    fn parses_commands() {
        assert_eq!(p("ehlo client.example"), Ok(Command::Ehlo("client.example".into())));
        assert_eq!(p("EHLO [127.0.0.1]"), Ok(Command::Ehlo("[127.0.0.1]".into())));
        assert_eq!(p("MAIL FROM:<>"), Ok(Command::Mail(Path(None), MailParams::default())));
        let Ok(Command::Mail(path, params)) = p("MAIL FROM:<a@b.c> SIZE=100 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x1")
        else {
            panic!()
        };
        assert_eq!(path.address(), Some("a@b.c"));
        assert_eq!(params.size, Some(100));
        assert_eq!(params.body, Body::EightBitMime);
        assert!(params.smtputf8);
        assert_eq!(params.ret, Some(Ret::Hdrs));
        assert_eq!(p("mail from: <a@b.c>").map(|c| matches!(c, Command::Mail(..))), Ok(true));
        let Ok(Command::Rcpt(path, params)) =
            p("RCPT TO:<@relay.example:x@y.z> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y.z")
        else {
            panic!()
        };
        assert_eq!(path.address(), Some("x@y.z"));
        assert_eq!(params.notify, vec!["SUCCESS", "FAILURE"]);
        assert_eq!(
            p("RCPT TO:<Postmaster>"),
            Ok(Command::Rcpt(Path(Some("Postmaster".into())), RcptParams::default()))
        );
        assert!(p("RCPT TO:<\"john doe\"@example.com>").is_ok());
        assert_eq!(p("BDAT 1000 LAST"), Ok(Command::Bdat { size: 1000, last: true }));
        assert_eq!(
            p("AUTH plain AGFAYg=="),
            Ok(Command::Auth { mechanism: "PLAIN".into(), initial: Some("AGFAYg==".into()) })
        );
        assert_eq!(p("NOOP whatever"), Ok(Command::Noop));
    }

    #[test]
    fn rejects_bad_syntax() {
        for bad in [
            "EHLO",
            "MAIL FROM:a@b.c",
            "MAIL FROM:<a@b.c",
            "MAIL TO:<a@b.c>",
            "RCPT TO:<>",
            "RCPT TO:<nodomain>",
            "MAIL FROM:<a@b.c> SIZE=lots",
            "MAIL FROM:<a@b.c> FOO=1",
            "RCPT TO:<a@b.c> NOTIFY=NEVER,SUCCESS",
            "BDAT",
            "BDAT -1",
            "BDAT 10 FIRST",
            "DATA now",
            "QUIT please",
            "MAIL FROM:<a@-b.c>",
            "XYZZY",
        ] {
            assert!(p(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Command::parse(b"MAIL FROM:<\xff@b.c>").is_err());
        let long = format!("RCPT TO:<{}@b.c>", "a".repeat(300));
        assert!(p(&long).is_err());
    }
}
