//! Strings as the extensions see them: `${hex:…}` and `${unicode:…}` encoded characters (RFC
//! 5228 section 2.4.2.4), templates with `${name}` and `${N}` references (RFC 5229 section
//! 3), `set`'s modifiers, and the small syntax checks the compiler makes on literal arguments.

use crate::compile::Modifier;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    /// A variable, its name lower-cased (names are case-insensitive).
    Variable(String),
    /// `${N}`, a match variable.
    Match(usize),
}

/// A string argument: literal, or, when `variables` is required, a template expanded at run
/// time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Str {
    parts: Vec<Part>,
}

impl Str {
    pub fn new(text: &str, variables: bool) -> Str {
        if !variables || !text.contains("${") {
            return Str { parts: vec![Part::Text(text.to_string())] };
        }
        let mut parts = Vec::new();
        let mut text_part = String::new();
        let mut rest = text;
        while let Some(at) = rest.find("${") {
            text_part.push_str(&rest[..at]);
            let after = &rest[at + 2..];
            let reference = after.find('}').map(|end| &after[..end]).filter(|name| {
                !name.is_empty() && (name.bytes().all(|b| b.is_ascii_digit()) || is_variable_name(name))
            });
            match reference {
                Some(name) => {
                    if !text_part.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text_part)));
                    }
                    parts.push(if name.bytes().all(|b| b.is_ascii_digit()) {
                        Part::Match(name.parse().unwrap_or(usize::MAX))
                    } else {
                        Part::Variable(name.to_ascii_lowercase())
                    });
                    rest = &after[name.len() + 1..];
                }
                None => {
                    // Not a reference: the characters stand for themselves.
                    text_part.push_str("${");
                    rest = after;
                }
            }
        }
        text_part.push_str(rest);
        if !text_part.is_empty() || parts.is_empty() {
            parts.push(Part::Text(text_part));
        }
        Str { parts }
    }

    /// The text, if the string holds no references.
    pub fn literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// The string with its references replaced: `variable` answers a name, `matched` a match
    /// variable's number; unknown ones are empty (RFC 5229 section 3).
    pub fn expand(
        &self,
        variable: impl Fn(&str) -> Option<String>,
        matched: impl Fn(usize) -> Option<String>,
    ) -> String {
        if let Some(t) = self.literal() {
            return t.to_string();
        }
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Variable(name) => out.push_str(&variable(name).unwrap_or_default()),
                Part::Match(n) => out.push_str(&matched(*n).unwrap_or_default()),
            }
        }
        out
    }
}

/// Decodes `${hex:…}` and `${unicode:…}`. A sequence that is not well formed is left as it
/// is; a Unicode scalar value out of range is an error (RFC 5228 section 2.4.2.4).
pub fn decode_encoded_characters(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let decoded = after.find('}').and_then(|end| {
            let inner = &after[..end];
            let (kind, body) = inner.split_once(':')?;
            let kind = kind.to_ascii_lowercase();
            if kind != "hex" && kind != "unicode" {
                return None;
            }
            let mut chars = String::new();
            let mut bytes = Vec::new();
            for hex in body.split([' ', '\t', '\r', '\n']).filter(|s| !s.is_empty()) {
                if hex.is_empty() || hex.len() > 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                let value = u32::from_str_radix(hex, 16).ok()?;
                if kind == "hex" {
                    bytes.push(u8::try_from(value).ok()?);
                } else {
                    match char::from_u32(value) {
                        Some(c) => chars.push(c),
                        None => return Some(Err(format!("invalid Unicode character U+{value:X}"))),
                    }
                }
            }
            if kind == "hex" {
                chars = String::from_utf8_lossy(&bytes).into_owned();
            }
            Some(Ok((chars, end)))
        });
        match decoded {
            Some(Ok((chars, end))) => {
                out.push_str(&chars);
                rest = &after[end + 1..];
            }
            Some(Err(e)) => return Err(e),
            None => {
                out.push_str("${");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `identifier` of RFC 5228: a letter or `_`, then letters, digits and `_`.
pub fn is_variable_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A header field name (RFC 5322 section 3.6.8): printable ASCII but the colon.
pub fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// The address a redirect goes to: a bare address (`a@b`, `<a@b>`) or one with a display name
/// (`Name <a@b>`, as RFC 5228 section 4.2 allows any RFC 5322 address); `None` if there is not
/// exactly one address with a local part and a domain.
pub fn redirect_address(text: &str) -> Option<String> {
    let found = crate::message::addresses(format!(" {}", text.trim()).as_bytes());
    let [address] = found.as_slice() else { return None };
    let (local, domain) = address.rsplit_once('@')?;
    let sane = !local.is_empty()
        && !domain.is_empty()
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !address.chars().any(|c| c.is_whitespace() || c.is_control());
    sane.then(|| address.clone())
}

/// The headers whose values are addresses (RFC 5228 section 5.1 leaves the list to the
/// implementation; these are RFC 5322's and its resent- forms, and the common extras).
pub fn is_address_header(name: &str) -> bool {
    const ADDRESS_HEADERS: [&str; 17] = [
        "from",
        "sender",
        "reply-to",
        "to",
        "cc",
        "bcc",
        "resent-from",
        "resent-sender",
        "resent-to",
        "resent-cc",
        "resent-bcc",
        "return-receipt-to",
        "errors-to",
        "disposition-notification-to",
        "delivered-to",
        "envelope-to",
        "x-original-to",
    ];
    ADDRESS_HEADERS.contains(&name.to_ascii_lowercase().as_str())
}

/// Applies `set`'s modifiers, sorted by precedence already (RFC 5229 section 4.1).
pub(crate) fn apply_modifiers(value: String, modifiers: &[Modifier]) -> String {
    let mut value = value;
    for m in modifiers {
        value = match m {
            Modifier::Lower => value.to_lowercase(),
            Modifier::Upper => value.to_uppercase(),
            Modifier::LowerFirst => first_char(&value, |c| c.to_lowercase().collect()),
            Modifier::UpperFirst => first_char(&value, |c| c.to_uppercase().collect()),
            Modifier::QuoteWildcard => {
                let mut out = String::with_capacity(value.len());
                for c in value.chars() {
                    if matches!(c, '*' | '?' | '\\') {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out
            }
            Modifier::QuoteRegex => regex::escape(&value),
            Modifier::Length => value.chars().count().to_string(),
        };
    }
    value
}

fn first_char(value: &str, f: impl Fn(char) -> String) -> String {
    let mut chars = value.chars();
    match chars.next() {
        Some(c) => f(c) + chars.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_split_references_and_keep_the_rest() {
        let s = Str::new("a${b}c${1}${x.y}${", true);
        let got = s.expand(|n| (n == "b").then(|| "B".into()), |n| (n == 1).then(|| "1".into()));
        assert_eq!(got, "aBc1${x.y}${");
        assert_eq!(Str::new("${b}", false).literal(), Some("${b}"));
        assert_eq!(Str::new("${B}", true).expand(|n| Some(n.to_string()), |_| None), "b");
    }

    #[test]
    fn encoded_characters() {
        assert_eq!(decode_encoded_characters("${hex:40}${HEX: 41 42 }").unwrap(), "@AB");
        assert_eq!(decode_encoded_characters("${unicode:263a}").unwrap(), "\u{263a}");
        assert_eq!(decode_encoded_characters("${hex:zz}${x}").unwrap(), "${hex:zz}${x}");
        assert!(decode_encoded_characters("${unicode:D800}").is_err());
    }

    #[test]
    fn modifiers_apply_by_precedence() {
        let m = [Modifier::Upper, Modifier::QuoteWildcard, Modifier::Length];
        assert_eq!(apply_modifiers("a*".into(), &m), "3");
        assert_eq!(apply_modifiers("juMP".into(), &[Modifier::Lower, Modifier::UpperFirst]), "Jump");
    }
}
