//! SMTP replies: a code, an enhanced status code (RFC 3463) and one or more text lines.

use std::fmt::Write;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Enhanced status code like "2.1.0"; empty for replies that carry none (220, 221, 354).
    pub enhanced: &'static str,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, enhanced: &'static str, text: impl Into<String>) -> Self {
        Self { code, enhanced, lines: vec![text.into()] }
    }

    pub fn multi(code: u16, enhanced: &'static str, lines: Vec<String>) -> Self {
        Self { code, enhanced, lines }
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// The reply on the wire: continuation lines with `-`, the last with a space.
    pub fn encode(&self, enhanced_codes: bool, out: &mut Vec<u8>) {
        let mut s = String::new();
        let n = self.lines.len().max(1);
        for i in 0..n {
            let sep = if i + 1 == n { ' ' } else { '-' };
            let text = self.lines.get(i).map(String::as_str).unwrap_or("");
            // Text never carries CR or LF: that would let input inject reply lines.
            let text: String = text.chars().map(|c| if c == '\r' || c == '\n' { ' ' } else { c }).collect();
            if enhanced_codes && !self.enhanced.is_empty() {
                let _ = write!(s, "{}{sep}{} {text}\r\n", self.code, self.enhanced);
            } else {
                let _ = write!(s, "{}{sep}{text}\r\n", self.code);
            }
        }
        out.extend_from_slice(s.as_bytes());
    }

    pub fn to_bytes(&self, enhanced_codes: bool) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(enhanced_codes, &mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_multiline_and_strips_newlines() {
        let r = Reply::multi(250, "", vec!["mx.example".into(), "PIPELINING".into(), "SIZE 10".into()]);
        assert_eq!(r.to_bytes(true), b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
        let r = Reply::new(550, "5.1.1", "no\r\nsuch user");
        assert_eq!(r.to_bytes(true), b"550 5.1.1 no  such user\r\n");
        assert_eq!(r.to_bytes(false), b"550 no  such user\r\n");
    }
}
