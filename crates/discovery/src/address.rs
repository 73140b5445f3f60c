//! The address a client asks about, checked before it reaches any document.
//!
//! Clients send it before anyone has logged in, so it is untrusted input: only a plain
//! `local@domain` of sane length is taken. The local part is dot-atoms of RFC 5322's `atext`
//! without `&` (no real mailbox needs it, and it is the one character of `atext` that is markup
//! in XML), plus letters and digits of any script (RFC 6531); the domain is labels of letters,
//! digits and hyphens (U-labels allowed), lower-cased. Quoted local parts, comments, address
//! literals and white space are refused. Errors never repeat the input.

/// The longest address: a forward-path's 256 octets less the angle brackets (RFC 5321 4.5.3.1.3).
pub const MAX_ADDRESS: usize = 254;
/// The longest local part (RFC 5321 4.5.3.1.1).
pub const MAX_LOCAL_PART: usize = 64;
/// The longest domain name (RFC 1035), and label.
pub const MAX_DOMAIN: usize = 253;
const MAX_LABEL: usize = 63;

/// A checked e-mail address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// `local@domain`, the domain lower-cased.
    text: String,
    /// Where the `@` is.
    at: usize,
}

/// Why an address (or a domain) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("no e-mail address was given")]
    Missing,
    #[error("the e-mail address is longer than {MAX_ADDRESS} bytes")]
    TooLong,
    #[error("the e-mail address is not of the form local-part@domain")]
    NotAnAddress,
    #[error("the local part of the e-mail address is longer than {MAX_LOCAL_PART} bytes")]
    LocalPartTooLong,
    #[error("the local part of the e-mail address has characters that are not allowed")]
    BadLocalPart,
    #[error("the domain of the e-mail address is not a domain name")]
    BadDomain,
}

impl Address {
    /// Checks `s` as described in the module's documentation.
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        if s.is_empty() {
            return Err(AddressError::Missing);
        }
        if s.len() > MAX_ADDRESS {
            return Err(AddressError::TooLong);
        }
        let Some((local, domain)) = s.rsplit_once('@') else { return Err(AddressError::NotAnAddress) };
        if local.is_empty() || domain.is_empty() || local.contains('@') {
            return Err(AddressError::NotAnAddress);
        }
        if local.len() > MAX_LOCAL_PART {
            return Err(AddressError::LocalPartTooLong);
        }
        if !is_local_part(local) {
            return Err(AddressError::BadLocalPart);
        }
        let domain = mail_domain(domain)?;
        Ok(Self { text: format!("{local}@{domain}"), at: local.len() })
    }

    /// The address, `local@domain`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn local_part(&self) -> &str {
        &self.text[..self.at]
    }

    /// The domain, lower case.
    pub fn domain(&self) -> &str {
        &self.text[self.at + 1..]
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// A mail domain as [`Address::parse`] takes it (a trailing dot dropped), lower-cased.
pub fn mail_domain(s: &str) -> Result<String, AddressError> {
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() || s.len() > MAX_DOMAIN {
        return Err(AddressError::BadDomain);
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= MAX_LABEL
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_alphanumeric() || c == '-')
    };
    // A last label of digits alone is an IPv4 address, not a domain (no top-level domain is
    // numeric).
    if !s.split('.').all(label_ok) || s.rsplit('.').next().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
        return Err(AddressError::BadDomain);
    }
    Ok(s.to_lowercase())
}

/// Whether `s` is a host name as configuration gives one: ASCII letters, digits and hyphens in
/// dot-separated labels (A-labels for international names), no trailing dot.
pub fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_DOMAIN
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Dot-atoms of `atext` less `&`, or letters and digits of any script.
fn is_local_part(s: &str) -> bool {
    let atom_char = |c: char| c.is_alphanumeric() || "!#$%'*+-/=?^_`{|}~".contains(c);
    s.split('.').all(|atom| !atom.is_empty() && atom.chars().all(atom_char))
}

/// The value of the query parameter `name` in `query` (the part of a URI after `?`), decoded;
/// the first one when it is given more than once.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let query = query?;
    form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == name).map(|(_, value)| value.into_owned())
}

/// The address of the query parameter `name` (`emailaddress` for Thunderbird and the Apple
/// profile), checked.
pub fn from_query(query: Option<&str>, name: &str) -> Result<Address, AddressError> {
    Address::parse(query_param(query, name).as_deref().unwrap_or_default().trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_addresses_are_taken_and_the_domain_lower_cased() {
        let a = Address::parse("Alice.Smith+tag@Example.COM").unwrap();
        assert_eq!(a.as_str(), "Alice.Smith+tag@example.com");
        assert_eq!((a.local_part(), a.domain()), ("Alice.Smith+tag", "example.com"));
        assert_eq!(Address::parse("o'brien@example.com").unwrap().local_part(), "o'brien");
        assert_eq!(Address::parse("jörg@bücher.example").unwrap().domain(), "bücher.example");
        assert_eq!(Address::parse("root@localhost").unwrap().domain(), "localhost");
        assert_eq!(Address::parse("a@example.com.").unwrap().as_str(), "a@example.com");
    }

    #[test]
    fn anything_else_is_refused_without_repeating_it() {
        for (input, why) in [
            ("", AddressError::Missing),
            ("alice", AddressError::NotAnAddress),
            ("@example.com", AddressError::NotAnAddress),
            ("alice@", AddressError::NotAnAddress),
            ("a@b@example.com", AddressError::NotAnAddress),
            ("<script>@example.com", AddressError::BadLocalPart),
            ("a&b@example.com", AddressError::BadLocalPart),
            ("\"quoted\"@example.com", AddressError::BadLocalPart),
            ("a b@example.com", AddressError::BadLocalPart),
            ("a..b@example.com", AddressError::BadLocalPart),
            (".a@example.com", AddressError::BadLocalPart),
            ("a\n@example.com", AddressError::BadLocalPart),
            ("alice@exa<mple.com", AddressError::BadDomain),
            ("alice@example..com", AddressError::BadDomain),
            ("alice@-example.com", AddressError::BadDomain),
            ("alice@[127.0.0.1]", AddressError::BadDomain),
            ("alice@127.0.0.1", AddressError::BadDomain),
            ("alice@example.com&x", AddressError::BadDomain),
        ] {
            let got = Address::parse(input).unwrap_err();
            assert_eq!(got, why, "{input:?}");
            assert!(input.is_empty() || !got.to_string().contains(input), "{got} repeats {input:?}");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert_eq!(Address::parse(&long_local), Err(AddressError::LocalPartTooLong));
        let long = format!("a@{}.com", "b".repeat(260));
        assert_eq!(Address::parse(&long), Err(AddressError::TooLong));
        let long_label = format!("a@{}.com", "b".repeat(64));
        assert_eq!(Address::parse(&long_label), Err(AddressError::BadDomain));
    }

    #[test]
    fn the_address_comes_from_the_query_decoded() {
        let q = Some("emailaddress=alice%40example.com&x=1");
        assert_eq!(from_query(q, "emailaddress").unwrap().as_str(), "alice@example.com");
        assert_eq!(from_query(Some("emailaddress=bob+x@example.com"), "emailaddress"), Err(AddressError::BadLocalPart));
        assert_eq!(
            from_query(Some("emailaddress=bob%2Bx%40example.com"), "emailaddress").unwrap().local_part(),
            "bob+x"
        );
        assert_eq!(from_query(Some("other=1"), "emailaddress"), Err(AddressError::Missing));
        assert_eq!(from_query(None, "emailaddress"), Err(AddressError::Missing));
        assert_eq!(
            from_query(Some("emailaddress=%3Cx%3E%40example.com"), "emailaddress"),
            Err(AddressError::BadLocalPart)
        );
    }

    #[test]
    fn host_names_are_ascii_labels() {
        assert!(is_dns_name("mail.example.com"));
        assert!(is_dns_name("localhost"));
        assert!(is_dns_name("xn--bcher-kva.example"));
        for bad in ["", "mail.example.com.", "a..b", "-a.b", "a b", "a<b", "bücher.example", &"a".repeat(64)] {
            assert!(!is_dns_name(bad), "{bad:?}");
        }
    }
}
