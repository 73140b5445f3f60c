//! Folder names: `/` is the hierarchy delimiter and `INBOX` is case-insensitive. The mailbox
//! service stores names in UTF-8; IMAP's modified UTF-7 is the IMAP front-end's business.

use crate::error::{MailboxError, Result};

pub const DELIMITER: char = '/';
const MAX_NAME: usize = 512;
const MAX_DEPTH: usize = 16;

/// Validates a folder name and returns its canonical form (`INBOX` in upper case, also as the
/// first component of a path).
pub fn canonical(name: &str) -> Result<String> {
    let bad = |why: &str| Err(MailboxError::invalid("folder name", format!("{name:?}: {why}")));
    if name.is_empty() || name.len() > MAX_NAME {
        return bad("empty or too long");
    }
    if name.chars().any(|c| c.is_control()) {
        return bad("control characters are not allowed");
    }
    let parts: Vec<&str> = name.split(DELIMITER).collect();
    if parts.len() > MAX_DEPTH {
        return bad("too deeply nested");
    }
    if parts.iter().any(|p| p.is_empty()) {
        return bad("empty hierarchy level");
    }
    if parts.iter().any(|p| p.chars().any(|c| c == '*' || c == '%')) {
        return bad("wildcards are not allowed");
    }
    let mut out = String::with_capacity(name.len());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(DELIMITER);
        }
        if i == 0 && p.eq_ignore_ascii_case("INBOX") {
            out.push_str("INBOX");
        } else {
            out.push_str(p);
        }
    }
    Ok(out)
}

pub fn is_inbox(name: &str) -> bool {
    name.eq_ignore_ascii_case("INBOX")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_is_case_insensitive() {
        assert_eq!(canonical("inbox").unwrap(), "INBOX");
        assert_eq!(canonical("Inbox/Lists").unwrap(), "INBOX/Lists");
        assert_eq!(canonical("Archive/inbox").unwrap(), "Archive/inbox");
    }

    #[test]
    fn rejects_bad_names() {
        for bad in ["", "/", "a/", "/a", "a//b", "a\0b", "a\r\nb", "a*", "%"] {
            assert!(canonical(bad).is_err(), "{bad:?} accepted");
        }
        assert!(canonical(&"x".repeat(600)).is_err());
        assert!(canonical(&["a"; 20].join("/")).is_err());
    }
}
