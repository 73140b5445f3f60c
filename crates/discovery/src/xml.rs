//! Escaping for the XML the documents are written in. Every value that is not a constant of
//! this crate goes through one of these, whatever was checked before.

use std::borrow::Cow;

/// `s` as XML character data: `&`, `<` and `>` escaped (the last so that `]]>` never appears).
pub fn text(s: &str) -> Cow<'_, str> {
    escape(s, false)
}

/// `s` as the value of an attribute in double or single quotes: also `"` and `'`.
pub fn attribute(s: &str) -> Cow<'_, str> {
    escape(s, true)
}

fn escape(s: &str, quotes: bool) -> Cow<'_, str> {
    let special = |c: char| matches!(c, '&' | '<' | '>') || (quotes && matches!(c, '"' | '\''));
    if !s.contains(special) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if quotes => out.push_str("&quot;"),
            '\'' if quotes => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped() {
        assert_eq!(text("plain"), "plain");
        assert!(matches!(text("plain"), Cow::Borrowed(_)));
        assert_eq!(text("a<b>&c]]>\"'"), "a&lt;b&gt;&amp;c]]&gt;\"'");
        assert_eq!(attribute("a<b>&c\"'"), "a&lt;b&gt;&amp;c&quot;&apos;");
        assert_eq!(text("&amp;"), "&amp;amp;");
    }
}
