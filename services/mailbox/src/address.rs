//! E-mail addresses and domain names as the directory keeps them: validated, with the domain
//! lower-cased, and the local part lower-cased too, since mail administrators expect
//! `Alice@Example.com` and `alice@example.com` to be one mailbox.

use crate::error::{MailboxError, Result};

/// Longest address accepted (RFC 5321 section 4.5.3.1.3 limits a path to 256 octets).
const MAX_ADDRESS: usize = 254;
const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 253;

/// A normalised `local@domain`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    pub local: String,
    pub domain: String,
}

impl Address {
    pub fn parse(input: &str) -> Result<Self> {
        let input = input.trim();
        let input = input.strip_prefix('<').and_then(|s| s.strip_suffix('>')).unwrap_or(input);
        if input.len() > MAX_ADDRESS {
            return Err(MailboxError::invalid("address", format!("longer than {MAX_ADDRESS} octets")));
        }
        let (local, domain) =
            input.rsplit_once('@').ok_or_else(|| MailboxError::invalid("address", format!("{input:?} has no @")))?;
        if local.is_empty() || local.len() > MAX_LOCAL {
            return Err(MailboxError::invalid("address", format!("bad local part in {input:?}")));
        }
        if local.chars().any(|c| c.is_control() || c.is_whitespace() || "<>()[]\\,;:\"@".contains(c)) {
            return Err(MailboxError::invalid("address", format!("bad character in local part of {input:?}")));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(MailboxError::invalid("address", format!("misplaced dot in {input:?}")));
        }
        Ok(Self { local: local.to_lowercase(), domain: normalize_domain(domain)? })
    }

    /// The local part without a `+detail` sub-address, and the detail.
    pub fn split_detail(&self) -> (&str, Option<&str>) {
        match self.local.split_once('+') {
            Some((base, detail)) if !base.is_empty() => (base, Some(detail)),
            _ => (&self.local, None),
        }
    }

    pub fn without_detail(&self) -> Option<Address> {
        let (base, detail) = self.split_detail();
        detail.map(|_| Address { local: base.to_string(), domain: self.domain.clone() })
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// Validates a DNS domain name and lower-cases it.
pub fn normalize_domain(input: &str) -> Result<String> {
    let domain = input.trim().trim_end_matches('.').to_ascii_lowercase();
    let bad = |why: &str| Err(MailboxError::invalid("domain", format!("{input:?}: {why}")));
    if domain.is_empty() || domain.len() > MAX_DOMAIN {
        return bad("empty or too long");
    }
    for label in domain.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("empty or over-long label");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("label starts or ends with a hyphen");
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return bad("only letters, digits and hyphens are allowed (use the A-label form)");
        }
    }
    Ok(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_brackets() {
        let a = Address::parse("<Alice@Example.COM>").unwrap();
        assert_eq!(a.to_string(), "alice@example.com");
    }

    #[test]
    fn splits_sub_address() {
        let a = Address::parse("bob+lists@example.com").unwrap();
        assert_eq!(a.split_detail(), ("bob", Some("lists")));
        assert_eq!(a.without_detail().unwrap().to_string(), "bob@example.com");
        assert!(Address::parse("+x@example.com").unwrap().without_detail().is_none());
    }

    #[test]
    fn rejects_hostile_input() {
        for bad in ["", "@", "a@", "@b.c", "a b@c.d", "a@b..c", "a@-b.c", "a@b_c.d", ".a@b.c", "a@b@c"] {
            assert!(Address::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Address::parse(&format!("{}@b.c", "a".repeat(65))).is_err());
    }
}
