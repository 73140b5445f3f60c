//! What mail clients configure themselves from, so that users moving to Tern need no manual:
//!
//! - [`autoconfig`]: Thunderbird's autoconfig (`clientConfig` version 1.1), which Thunderbird,
//!   K-9/Thunderbird for Android, Evolution and KMail ask for at
//!   `/.well-known/autoconfig/mail/config-v1.1.xml` and `autoconfig.<domain>`;
//! - [`autodiscover`]: Outlook's Autodiscover in its plain-old-XML form (the request Outlook
//!   posts, and the `responseschema/2006a` answer);
//! - [`mobileconfig`]: an Apple configuration profile with one mail account, for iOS and macOS;
//! - [`mta_sts`]: the MTA-STS policy file (RFC 8461) and its id for the `_mta-sts` record.
//!
//! Each document describes the real [`Endpoints`], which the caller takes from its
//! configuration. Everything here is pure: functions from the endpoints and a validated
//! [`Address`] to text, with every value XML-escaped where it goes into XML; addresses that are
//! not plainly addresses are refused before they get near a document ([`address`]). The HTTPS
//! server that answers the requests is the `server` feature ([`server`]).

pub mod address;
pub mod autoconfig;
pub mod autodiscover;
pub mod mobileconfig;
pub mod mta_sts;
#[cfg(feature = "server")]
pub mod server;
mod xml;

pub use address::{Address, AddressError};
pub use mta_sts::MtaSts;

/// How a client protects a connection to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (ports 993, 995, 465).
    Tls,
    /// Plain text upgraded with STARTTLS (or POP3's STLS) before authentication (143, 110, 587).
    StartTls,
}

/// One server a client can use: a host name, a port, and how the connection is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub security: Security,
}

/// The endpoints the documents describe. Each list is in the order clients should prefer
/// (implicit TLS first, as RFC 8314 recommends); an empty list means the protocol is not
/// offered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    pub imap: Vec<Server>,
    pub pop3: Vec<Server>,
    /// Message submission (SMTP with authentication: 465 and 587).
    pub smtp: Vec<Server>,
    /// The provider's name as clients show it; unset, the mail domain of the address asked for.
    pub display_name: Option<String>,
    /// The MTA-STS policy served at `/.well-known/mta-sts.txt`; unset, none is served.
    pub mta_sts: Option<MtaSts>,
}

/// Why endpoints cannot be described.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointsError {
    #[error("{what} host {host:?} is not a DNS name")]
    BadHost { what: &'static str, host: String },
    #[error("{what} port must not be 0")]
    ZeroPort { what: &'static str },
    #[error("nothing to describe: no IMAP or POP3 server, so a client could not read its mail")]
    NoIncoming,
    #[error("nothing to describe: no submission server, so a client could not send mail")]
    NoOutgoing,
    #[error("the display name must be 1 to 64 printable characters")]
    BadDisplayName,
    #[error("MTA-STS policy: {0}")]
    MtaSts(#[from] mta_sts::PolicyError),
}

impl Endpoints {
    /// Checks what the configuration gave: host names that are DNS names, ports that are not
    /// 0, at least one server to read mail from and one to send through, a policy that parses.
    /// The documents escape every value anyway; this catches a mistake at start-up rather than
    /// in a user's mail client.
    pub fn check(&self) -> Result<(), EndpointsError> {
        for (what, servers) in [("IMAP", &self.imap), ("POP3", &self.pop3), ("submission", &self.smtp)] {
            for s in servers {
                if !address::is_dns_name(&s.host) {
                    return Err(EndpointsError::BadHost { what, host: s.host.clone() });
                }
                if s.port == 0 {
                    return Err(EndpointsError::ZeroPort { what });
                }
            }
        }
        if self.imap.is_empty() && self.pop3.is_empty() {
            return Err(EndpointsError::NoIncoming);
        }
        if self.smtp.is_empty() {
            return Err(EndpointsError::NoOutgoing);
        }
        if let Some(name) = &self.display_name
            && (name.trim().is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control))
        {
            return Err(EndpointsError::BadDisplayName);
        }
        if let Some(policy) = &self.mta_sts {
            policy.check()?;
        }
        Ok(())
    }

    /// The name clients show for the account's provider.
    fn display_name<'a>(&'a self, domain: &'a str) -> &'a str {
        self.display_name.as_deref().unwrap_or(domain)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// The endpoints of a typical installation: every protocol on its standard ports, implicit
    /// TLS first.
    pub fn endpoints() -> Endpoints {
        let server = |host: &str, port, security| Server { host: host.into(), port, security };
        Endpoints {
            imap: vec![
                server("imap.example.net", 993, Security::Tls),
                server("imap.example.net", 143, Security::StartTls),
            ],
            pop3: vec![
                server("pop.example.net", 995, Security::Tls),
                server("pop.example.net", 110, Security::StartTls),
            ],
            smtp: vec![
                server("smtp.example.net", 465, Security::Tls),
                server("smtp.example.net", 587, Security::StartTls),
            ],
            display_name: None,
            mta_sts: Some(MtaSts { mode: mta_sts::Mode::Enforce, mx: vec!["mx.example.net".into()], max_age: 604_800 }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked() {
        let good = testing::endpoints();
        assert_eq!(good.check(), Ok(()));

        let mut bad = good.clone();
        bad.imap[0].host = "imap.example.net\"><x".into();
        assert!(matches!(bad.check(), Err(EndpointsError::BadHost { what: "IMAP", .. })));

        let mut bad = good.clone();
        bad.smtp[1].port = 0;
        assert_eq!(bad.check(), Err(EndpointsError::ZeroPort { what: "submission" }));

        let mut bad = good.clone();
        bad.imap.clear();
        bad.pop3.clear();
        assert_eq!(bad.check(), Err(EndpointsError::NoIncoming));

        let mut bad = good.clone();
        bad.smtp.clear();
        assert_eq!(bad.check(), Err(EndpointsError::NoOutgoing));

        let mut bad = good.clone();
        bad.display_name = Some("Example\nMail".into());
        assert_eq!(bad.check(), Err(EndpointsError::BadDisplayName));

        // POP3 alone is enough to read mail.
        let mut pop_only = good;
        pop_only.imap.clear();
        assert_eq!(pop_only.check(), Ok(()));
    }
}
