//! Comparators (RFC 4790's `i;octet`, `i;ascii-casemap`, `i;ascii-numeric`), match types
//! (`:is`, `:contains`, `:matches`, `:regex`, and relational's `:value` and `:count`), and the
//! match variables a successful `:matches` or `:regex` leaves behind.
//!
//! `:matches` patterns are translated to regular expressions of the `regex` crate, whose engine
//! runs in time linear in the input: a hostile pattern cannot make a delivery backtrack for
//! ever. Regular expressions are compiled with a size limit for the same reason.

use std::cmp::Ordering;

use regex::{Regex, RegexBuilder};

/// The largest compiled regular expression, in bytes of the `regex` crate's program.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparator {
    Octet,
    AsciiCasemap,
    AsciiNumeric,
}

impl Comparator {
    pub fn named(name: &str) -> Option<Comparator> {
        match name.to_ascii_lowercase().as_str() {
            "i;octet" => Some(Comparator::Octet),
            "i;ascii-casemap" => Some(Comparator::AsciiCasemap),
            "i;ascii-numeric" => Some(Comparator::AsciiNumeric),
            _ => None,
        }
    }

    /// Orders two values. `i;ascii-numeric` reads the leading digits; a value without them is
    /// positive infinity, equal to every other such value (RFC 4790 section 9.1).
    pub fn compare(self, a: &str, b: &str) -> Ordering {
        match self {
            Comparator::Octet => a.as_bytes().cmp(b.as_bytes()),
            Comparator::AsciiCasemap => {
                a.bytes().map(|c| c.to_ascii_lowercase()).cmp(b.bytes().map(|c| c.to_ascii_lowercase()))
            }
            Comparator::AsciiNumeric => match (numeric(a), numeric(b)) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(x), Some(y)) => x.len().cmp(&y.len()).then_with(|| x.cmp(y)),
            },
        }
    }

    fn contains(self, haystack: &str, needle: &str) -> bool {
        match self {
            Comparator::AsciiCasemap => haystack.to_ascii_lowercase().contains(&needle.to_ascii_lowercase()),
            _ => haystack.contains(needle),
        }
    }
}

/// The leading digits of `s` without leading zeros (`"0"` for all zeros), or `None`.
fn numeric(s: &str) -> Option<&str> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let d = &s[..digits];
    let trimmed = d.trim_start_matches('0');
    Some(if trimmed.is_empty() { "0" } else { trimmed })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl Relation {
    pub fn named(name: &str) -> Option<Relation> {
        match name.to_ascii_lowercase().as_str() {
            "gt" => Some(Relation::Gt),
            "ge" => Some(Relation::Ge),
            "lt" => Some(Relation::Lt),
            "le" => Some(Relation::Le),
            "eq" => Some(Relation::Eq),
            "ne" => Some(Relation::Ne),
            _ => None,
        }
    }

    fn holds(self, o: Ordering) -> bool {
        match self {
            Relation::Gt => o == Ordering::Greater,
            Relation::Ge => o != Ordering::Less,
            Relation::Lt => o == Ordering::Less,
            Relation::Le => o != Ordering::Greater,
            Relation::Eq => o == Ordering::Equal,
            Relation::Ne => o != Ordering::Equal,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchType {
    Is,
    Contains,
    Matches,
    Regex,
    Value(Relation),
    Count(Relation),
}

/// Compiles a `:regex` key (POSIX extended syntax, which the `regex` crate's syntax covers for
/// the constructs scripts use).
pub fn compile_regex(pattern: &str, comparator: Comparator) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .case_insensitive(comparator == Comparator::AsciiCasemap)
        .dot_matches_new_line(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// A `:matches` pattern as an anchored regular expression: each `*` a lazy group and each `?`
/// a group of one character, so the groups are the match variables `${1}`… in order, filled
/// from the left as short as they can be (RFC 5229 section 3.2).
pub fn glob_regex(pattern: &str, comparator: Comparator) -> Result<Regex, regex::Error> {
    let mut re = String::with_capacity(pattern.len() * 2 + 8);
    re.push('^');
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str("(.*?)"),
            '?' => re.push_str("(.)"),
            '\\' => {
                if let Some(next) = chars.next() {
                    re.push_str(&regex::escape(&next.to_string()));
                }
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    compile_regex(&re, comparator)
}

/// The outcome of matching one value against one key.
#[derive(Debug)]
pub enum Matched {
    No,
    Yes,
    /// A match that sets the match variables: `${0}` the whole value, then the groups.
    WithGroups(Vec<String>),
}

/// Matches one value against one key under a match type other than `:count`. `regex_of`
/// compiles (and caches) patterns; a pattern that does not compile does not match.
pub fn match_value(
    kind: MatchType,
    comparator: Comparator,
    value: &str,
    key: &str,
    regex_of: &mut dyn FnMut(&str, bool) -> Option<Regex>,
) -> Matched {
    let yes = |b: bool| if b { Matched::Yes } else { Matched::No };
    match kind {
        MatchType::Is => yes(comparator.compare(value, key) == Ordering::Equal),
        MatchType::Contains => yes(comparator.contains(value, key)),
        MatchType::Value(rel) => yes(rel.holds(comparator.compare(value, key))),
        MatchType::Count(_) => Matched::No,
        MatchType::Matches | MatchType::Regex => {
            let Some(re) = regex_of(key, kind == MatchType::Matches) else { return Matched::No };
            match re.captures(value) {
                Some(caps) => Matched::WithGroups(
                    caps.iter().map(|m| m.map(|m| m.as_str().to_string()).unwrap_or_default()).collect(),
                ),
                None => Matched::No,
            }
        }
    }
}

/// `:count`: the number of values against each key.
pub fn match_count(rel: Relation, comparator: Comparator, count: usize, key: &str) -> bool {
    rel.holds(comparator.compare(&count.to_string(), key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, value: &str, c: Comparator) -> Option<Vec<String>> {
        let re = glob_regex(pattern, c).unwrap();
        re.captures(value).map(|caps| caps.iter().map(|m| m.unwrap().as_str().to_string()).collect())
    }

    #[test]
    fn globs_fill_groups_from_the_left() {
        assert_eq!(m("*@*.*", "a@b.c.d", Comparator::Octet).unwrap(), ["a@b.c.d", "a", "b", "c.d"]);
        assert_eq!(m("?x*", "axyz", Comparator::Octet).unwrap(), ["axyz", "a", "yz"]);
        assert!(m("\\*", "*", Comparator::Octet).is_some());
        assert!(m("\\*", "a", Comparator::Octet).is_none());
        assert!(m("A*", "abc", Comparator::AsciiCasemap).is_some());
        assert!(m("A*", "abc", Comparator::Octet).is_none());
        assert!(m("a", "a\nb", Comparator::Octet).is_none());
        assert!(m("a*", "a\nb", Comparator::Octet).is_some());
    }

    #[test]
    fn numeric_comparator_reads_leading_digits() {
        let c = Comparator::AsciiNumeric;
        assert_eq!(c.compare("010", "10"), Ordering::Equal);
        assert_eq!(c.compare("9", "10"), Ordering::Less);
        assert_eq!(c.compare("x", "10"), Ordering::Greater);
        assert_eq!(c.compare("x", "y"), Ordering::Equal);
        assert!(match_count(Relation::Ge, c, 2, "2"));
    }
}
