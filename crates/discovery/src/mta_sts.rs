//! The MTA-STS policy (RFC 8461): the file other mail servers fetch from
//! `https://mta-sts.<domain>/.well-known/mta-sts.txt` before they deliver, and the id that
//! the domain's `_mta-sts` TXT record carries so that they know when to fetch it again.
//!
//! The id is derived from the policy's text, so the front-ends that serve the file and the
//! operator that publishes the record agree on it without talking to each other, and it
//! changes exactly when the policy does.

use sha2::{Digest, Sha256};

/// The longest `max_age` RFC 8461 allows (section 3.2: about a year).
pub const MAX_MAX_AGE: u64 = 31_557_600;

/// What sending servers do with a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Deliver only over TLS, to an MX host the policy names, with a valid certificate.
    Enforce,
    /// Deliver anyway, and report failures (TLS-RPT).
    Testing,
    /// The domain withdraws its policy.
    None,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "enforce" => Ok(Mode::Enforce),
            "testing" => Ok(Mode::Testing),
            "none" => Ok(Mode::None),
            other => Err(PolicyError::BadMode(other.to_string())),
        }
    }
}

/// Why a policy cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("mode must be enforce, testing or none, not {0:?}")]
    BadMode(String),
    #[error("max_age must be at most {MAX_MAX_AGE} seconds, not {0}")]
    MaxAge(u64),
    #[error("no mx pattern: a policy in enforce or testing mode names the MX hosts")]
    NoMx,
    #[error("mx pattern {0:?} is neither a host name nor *. followed by one")]
    BadMx(String),
}

/// A domain's MTA-STS policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtaSts {
    pub mode: Mode,
    /// The MX hosts: names, or `*.` and a name for any host one label below it.
    pub mx: Vec<String>,
    /// How long senders keep the policy, in seconds.
    pub max_age: u64,
}

impl MtaSts {
    /// Checks the policy as RFC 8461 section 3.2 constrains it.
    pub fn check(&self) -> Result<(), PolicyError> {
        if self.max_age > MAX_MAX_AGE {
            return Err(PolicyError::MaxAge(self.max_age));
        }
        if self.mode != Mode::None && self.mx.is_empty() {
            return Err(PolicyError::NoMx);
        }
        for pattern in &self.mx {
            let host = pattern.strip_prefix("*.").unwrap_or(pattern);
            if !crate::address::is_dns_name(host) {
                return Err(PolicyError::BadMx(pattern.clone()));
            }
        }
        Ok(())
    }

    /// The policy file. Its lines end in CRLF, as section 3.2 describes the format (parsers
    /// take LF too).
    pub fn policy(&self) -> String {
        let mut text = format!("version: STSv1\r\nmode: {}\r\n", self.mode.as_str());
        for mx in &self.mx {
            text.push_str(&format!("mx: {}\r\n", mx.to_ascii_lowercase()));
        }
        text.push_str(&format!("max_age: {}\r\n", self.max_age));
        text
    }

    /// The policy's id for the `_mta-sts` TXT record (`v=STSv1; id=<id>`): 20 hexadecimal
    /// digits of the SHA-256 of [`policy`](Self::policy), within the 1 to 32 letters and
    /// digits section 3.1 allows.
    pub fn id(&self) -> String {
        let digest = Sha256::digest(self.policy().as_bytes());
        digest[..10].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The `_mta-sts` TXT record's data (without the quotes).
    pub fn txt_record(&self) -> String {
        format!("v=STSv1; id={}", self.id())
    }

    /// Whether MX host `host` is one the policy names (section 4.1): a pattern `*.b.c` matches
    /// `a.b.c` but neither `b.c` nor `x.a.b.c`.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx.iter().map(|p| p.to_ascii_lowercase()).any(|pattern| match pattern.strip_prefix("*.") {
            Some(parent) => host.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
            None => pattern == host,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> MtaSts {
        MtaSts { mode: Mode::Enforce, mx: vec!["mail.example.com".into(), "*.example.net".into()], max_age: 604_800 }
    }

    #[test]
    fn the_file_is_rfc_8461s_format() {
        assert_eq!(
            policy().policy(),
            "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n"
        );
        let none = MtaSts { mode: Mode::None, mx: vec![], max_age: 86_400 };
        assert_eq!(none.check(), Ok(()));
        assert_eq!(none.policy(), "version: STSv1\r\nmode: none\r\nmax_age: 86400\r\n");
    }

    #[test]
    fn the_id_is_stable_and_changes_with_the_policy() {
        let id = policy().id();
        assert_eq!(id, policy().id());
        assert_eq!(id.len(), 20);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(policy().txt_record(), format!("v=STSv1; id={id}"));
        let mut testing = policy();
        testing.mode = Mode::Testing;
        assert_ne!(testing.id(), id);
        let mut longer = policy();
        longer.max_age += 1;
        assert_ne!(longer.id(), id);
    }

    #[test]
    fn bad_policies_are_refused() {
        let mut p = policy();
        p.max_age = MAX_MAX_AGE + 1;
        assert_eq!(p.check(), Err(PolicyError::MaxAge(MAX_MAX_AGE + 1)));
        let mut p = policy();
        p.mx.clear();
        assert_eq!(p.check(), Err(PolicyError::NoMx));
        let mut p = policy();
        p.mx.push("mx\r\nmode: none".into());
        assert!(matches!(p.check(), Err(PolicyError::BadMx(_))));
        assert_eq!("enforce".parse::<Mode>(), Ok(Mode::Enforce));
        assert!(matches!("strict".parse::<Mode>(), Err(PolicyError::BadMode(_))));
    }

    #[test]
    fn mx_hosts_match_as_section_4_1_says() {
        let p = policy();
        assert!(p.allows("mail.example.com"));
        assert!(p.allows("MAIL.example.com."));
        assert!(p.allows("mx1.example.net"));
        assert!(!p.allows("example.net"));
        assert!(!p.allows("a.mx1.example.net"));
        assert!(!p.allows("other.example.com"));
    }
}
