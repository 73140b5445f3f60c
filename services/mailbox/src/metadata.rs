//! IMAP METADATA annotations (RFC 5464) as the mailbox service keeps them: entry names checked
//! and made canonical, changes applied to a sorted list, and the limits on values and on their
//! number. A folder's annotations live in its record, the server's (the mailbox `""`) in the
//! account's record; the IMAP front-end speaks the protocol.

use crate::{
    error::{MailboxError, Result},
    records::MetadataEntry,
};

/// The longest entry name accepted.
const MAX_NAME: usize = 512;

/// The canonical form of an entry name: lower-cased (names are case-insensitive, RFC 5464
/// section 3.2), under `/private/` or `/shared/`, without `*` or `%`, an empty component
/// (`//`) or a trailing slash, and of printable US-ASCII.
pub fn canonical_name(name: &str) -> Result<String> {
    let invalid = |why: &str| MailboxError::invalid("metadata entry", format!("{name:?} {why}"));
    if name.len() > MAX_NAME {
        return Err(invalid("is too long"));
    }
    if !name.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err(invalid("has a character other than printable US-ASCII"));
    }
    let lower = name.to_ascii_lowercase();
    let under = ["/private/", "/shared/"].iter().any(|p| lower.starts_with(p) && lower.len() > p.len());
    if !under {
        return Err(invalid("is not under /private/ or /shared/"));
    }
    if lower.contains("//") || lower.ends_with('/') || lower.contains(['*', '%']) {
        return Err(invalid("has an empty component or a wildcard"));
    }
    Ok(lower)
}

/// Applies `changes` in order to the sorted `entries`: a value sets the entry, `None` removes
/// it. Names must be canonical.
pub fn apply(entries: &mut Vec<MetadataEntry>, changes: &[(String, Option<Vec<u8>>)]) {
    for (name, value) in changes {
        let at = entries.binary_search_by(|e| e.name.as_str().cmp(name));
        match (at, value) {
            (Ok(i), Some(v)) => entries[i].value = v.clone(),
            (Ok(i), None) => {
                entries.remove(i);
            }
            (Err(i), Some(v)) => entries.insert(i, MetadataEntry { name: name.clone(), value: v.clone() }),
            (Err(_), None) => {}
        }
    }
}

/// Why annotations were not set: a limit, which IMAP reports with its own response codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A value is longer than this many octets (`METADATA MAXSIZE`).
    MaxSize(u64),
    /// There would be more entries on the mailbox than allowed (`METADATA TOOMANY`).
    TooMany,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_lower_cased() {
        assert_eq!(canonical_name("/Private/Comment").unwrap(), "/private/comment");
        assert_eq!(canonical_name("/shared/vendor/tern/x").unwrap(), "/shared/vendor/tern/x");
        for bad in
            ["/private/", "/private", "/public/x", "private/x", "/shared//x", "/shared/x/", "/shared/*", "/shared/a b"]
        {
            assert!(canonical_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn changes_keep_the_list_sorted() {
        let mut list = Vec::new();
        let set = |n: &str, v: &str| (n.to_string(), Some(v.as_bytes().to_vec()));
        apply(&mut list, &[set("/shared/b", "1"), set("/private/a", "2"), set("/shared/b", "3")]);
        apply(&mut list, &[("/private/zz".to_string(), None)]);
        let names: Vec<&str> = list.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["/private/a", "/shared/b"]);
        assert_eq!(list[1].value, b"3");
        apply(&mut list, &[("/private/a".to_string(), None)]);
        assert_eq!(list.len(), 1);
    }
}
