//! How text becomes index terms, and how a search string becomes a question about them.
//!
//! The index must give the answers of IMAP SEARCH's substring match (RFC 9051 section 6.4.4),
//! not those of a word search, so the analyser is chosen for exactness rather than recall:
//!
//! - The text indexed is [`tern_mail::text`]'s, already lowercased as the scan lowercases it,
//!   so no case folding, stemming or stop words happen here: those would answer a different
//!   question.
//! - A *word* is a maximal run of alphanumeric characters (any script's letters and digits)
//!   outside the CJK scripts. Every occurrence of a search string made of word characters only
//!   lies inside one word, so the messages containing it are exactly those with a term that
//!   contains it. Words of up to [`CHUNK`] characters are one term each; longer runs (base64
//!   that was not decoded, long identifiers) are cut into terms of [`CHUNK`] characters that
//!   overlap by [`CHUNK`]/2, so that any string of up to [`EXACT_MAX`] characters inside the run
//!   lies whole in one term.
//! - CJK text has no spaces between words, so a run of Han, Hiragana, Katakana or Hangul
//!   characters is indexed as overlapping *bigrams* (each character with the next), and its
//!   last character alone. A two-character search string is then one term, a one-character
//!   string is the terms that start with it, and a longer one is the AND of its bigrams.
//! - Everything else (spaces, punctuation, symbols, combining marks) separates terms.
//!
//! [`plan`] says, for a search string, which terms a matching message must have and whether
//! having them is the same as matching (*exact*) or only necessary (*narrowing*: the candidates
//! are then read and checked). A string of word characters of up to [`EXACT_MAX`] characters,
//! or of one or two CJK characters, is exact; anything else (several words, punctuation,
//! mixed scripts, longer strings) narrows.

use std::collections::HashSet;

/// Characters in one term cut from a long run.
pub const CHUNK: usize = 64;
/// The longest search string, in characters, that one term of a long run is sure to contain.
pub const EXACT_MAX: usize = CHUNK / 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Word,
    Cjk,
    Separator,
}

fn class(c: char) -> Class {
    if is_cjk(c) {
        Class::Cjk
    } else if c.is_alphanumeric() {
        Class::Word
    } else {
        Class::Separator
    }
}

/// Han (with its extensions and compatibility ideographs), Hiragana, Katakana, Hangul and the
/// CJK symbols that are letters (the iteration marks), as Unicode blocks.
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3005..=0x3007
        | 0x3040..=0x30FF
        | 0x3130..=0x318F
        | 0x31F0..=0x31FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xAC00..=0xD7AF
        | 0xF900..=0xFAFF
        | 0xFF66..=0xFF9D
        | 0x20000..=0x2FA1F)
}

/// Maximal runs of one class, separators left out.
fn runs(text: &str) -> impl Iterator<Item = (Class, &str)> {
    let mut rest = text;
    std::iter::from_fn(move || {
        loop {
            let first = rest.chars().next()?;
            let kind = class(first);
            let end = rest.char_indices().find(|(_, c)| class(*c) != kind).map_or(rest.len(), |(i, _)| i);
            let (run, next) = rest.split_at(end);
            rest = next;
            if kind != Class::Separator {
                return Some((kind, run));
            }
        }
    })
}

/// The distinct terms of an (already lowercased) text.
pub fn terms(text: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    for (kind, run) in runs(text) {
        // A run of at most CHUNK bytes has at most CHUNK characters: the common case needs no
        // character count.
        if kind == Class::Word && (run.len() <= CHUNK || run.chars().count() <= CHUNK) {
            // Most words repeat: allocate only the first time.
            if !out.contains(run) {
                out.insert(run.to_string());
            }
            continue;
        }
        let chars: Vec<char> = run.chars().collect();
        match kind {
            Class::Word => {
                let mut start = 0;
                loop {
                    let end = (start + CHUNK).min(chars.len());
                    out.insert(chars[start..end].iter().collect());
                    if end == chars.len() {
                        break;
                    }
                    start += CHUNK / 2;
                }
            }
            Class::Cjk => {
                for pair in chars.windows(2) {
                    out.insert(pair.iter().collect());
                }
                if let Some(last) = chars.last() {
                    out.insert(last.to_string());
                }
            }
            Class::Separator => {}
        }
    }
    out
}

/// What a message's terms must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Some term contains this string.
    Contains(String),
    /// Some term starts with this string.
    Prefix(String),
    /// This term.
    Term(String),
}

/// How a search string is answered from the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Every message matches (the empty string).
    All,
    /// The messages whose terms satisfy every condition; `exact` when those are exactly the
    /// messages that contain the string, otherwise they are candidates to check.
    Terms { conditions: Vec<Condition>, exact: bool },
    /// The index cannot narrow the search (only separators): every message is read.
    Scan,
}

/// The plan for a lowercased search string.
pub fn plan(needle: &str) -> Plan {
    if needle.is_empty() {
        return Plan::All;
    }
    let runs: Vec<(Class, &str)> = runs(needle).collect();
    if runs.is_empty() {
        return Plan::Scan;
    }
    let whole = runs.len() == 1 && runs[0].1.len() == needle.len();
    let mut conditions = Vec::new();
    let mut exact = whole;
    for (kind, run) in &runs {
        let chars: Vec<char> = run.chars().collect();
        match kind {
            Class::Word if chars.len() <= EXACT_MAX => conditions.push(Condition::Contains(run.to_string())),
            Class::Word => {
                exact = false;
                conditions.push(Condition::Contains(chars[..EXACT_MAX].iter().collect()));
            }
            Class::Cjk if chars.len() == 1 => conditions.push(Condition::Prefix(run.to_string())),
            Class::Cjk => {
                exact &= chars.len() == 2;
                for pair in chars.windows(2) {
                    let term: String = pair.iter().collect();
                    if !conditions.contains(&Condition::Term(term.clone())) {
                        conditions.push(Condition::Term(term));
                    }
                }
            }
            Class::Separator => {}
        }
    }
    Plan::Terms { conditions, exact }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(text: &str, needle: &str) -> bool {
        let terms = terms(text);
        match plan(needle) {
            Plan::All => true,
            Plan::Scan => text.contains(needle),
            Plan::Terms { conditions, exact } => {
                let found = conditions.iter().all(|c| match c {
                    Condition::Contains(s) => terms.iter().any(|t| t.contains(s.as_str())),
                    Condition::Prefix(s) => terms.iter().any(|t| t.starts_with(s.as_str())),
                    Condition::Term(s) => terms.contains(s),
                });
                if exact {
                    assert_eq!(found, text.contains(needle), "{needle:?} in {text:?}");
                    found
                } else {
                    // Narrowing never loses a match.
                    assert!(found || !text.contains(needle), "{needle:?} in {text:?}");
                    found && text.contains(needle)
                }
            }
        }
    }

    #[test]
    fn words_and_substrings() {
        let text = "the quick brown fox, jumps; über 42x straße";
        for needle in
            ["quick", "uic", "k", "ox", "über", "ber", "42", "2x", "traß", "e q", "fox, j", "zzz", "quickbrown"]
        {
            assert_eq!(has(text, needle), text.contains(needle), "{needle}");
        }
        assert_eq!(plan("uic"), Plan::Terms { conditions: vec![Condition::Contains("uic".into())], exact: true });
        assert!(matches!(plan("a b"), Plan::Terms { exact: false, .. }));
        assert_eq!(plan(""), Plan::All);
        assert_eq!(plan(" ,;"), Plan::Scan);
    }

    #[test]
    fn long_runs_are_cut_so_short_strings_stay_exact() {
        let run: String = (0..300).map(|i| char::from(b'a' + (i * 7 % 26) as u8)).collect();
        let text = format!("x {run} y");
        for start in [0, 1, 31, 32, 33, 63, 64, 100, 250, 268] {
            for len in [1, 5, 31, 32] {
                if start + len <= run.len() {
                    assert!(has(&text, &run[start..start + len]));
                }
            }
            if start + 50 <= run.len() {
                assert!(has(&text, &run[start..start + 50]));
            }
        }
    }

    #[test]
    fn cjk_is_bigrams() {
        let text = "東京都に住んでいます。한국어 텍스트";
        for needle in ["東", "京", "東京", "京都", "都に住", "す", "ます", "국어", "한국어", "트", "東都", "北"]
        {
            assert_eq!(has(text, needle), text.contains(needle), "{needle}");
        }
        assert!(matches!(plan("東京"), Plan::Terms { exact: true, .. }));
        assert!(matches!(plan("東京都"), Plan::Terms { exact: false, .. }));
        assert!(matches!(plan("東"), Plan::Terms { exact: true, .. }));
    }

    proptest::proptest! {
        /// Over texts and needles drawn from a small alphabet of every class (so that
        /// matches are frequent), an exact plan answers exactly `contains`, and a narrowing one
        /// never loses a match. `has` asserts both.
        #[test]
        fn plans_agree_with_substring_search(
            text in "[ab1é東京国 ,.\u{301}-]{0,80}",
            needle in "[ab1é東京国 ,.\u{301}-]{0,6}",
        ) {
            let text = text.to_lowercase();
            let needle = needle.to_lowercase();
            proptest::prop_assert_eq!(has(&text, &needle), text.contains(needle.as_str()));
        }

        /// Long runs: any needle up to EXACT_MAX characters inside a run of hundreds.
        #[test]
        fn long_runs_keep_short_needles_exact(run in "[ab]{100,400}", start in 0usize..400, len in 1usize..=EXACT_MAX) {
            let start = start.min(run.len() - 1);
            let end = (start + len).min(run.len());
            proptest::prop_assert!(has(&run, &run[start..end]));
        }
    }

    #[test]
    fn mixed_scripts_narrow() {
        let text = "price 100円 today";
        for needle in ["100円", "0円", "円 t", "e 1"] {
            assert_eq!(has(text, needle), text.contains(needle), "{needle}");
        }
    }
}
