//! Where a domain's mail goes (RFC 5321 section 5.1): the hosts of its MX records in order of
//! preference (equal preferences shuffled, to spread the load), the domain itself when it has
//! no MX records, and nowhere when it publishes a null MX (RFC 7505) or does not exist.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use mail_auth::{
    DnsError, IpLookupStrategy, MX, MessageAuthenticator, RecordSet, hickory_resolver::proto::op::ResponseCode,
};
use tern_mail::dns::TtlCache;

/// Most addresses taken from one host name.
const MAX_ADDRESSES_PER_HOST: usize = 4;

/// One server to try: its name (for logs, the attempt history and SNI) and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub ip: IpAddr,
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [{}]", self.name, self.ip)
    }
}

/// Why a domain has no route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Final: the message can never be delivered there.
    #[error("{0}")]
    Permanent(String),
    /// DNS did not answer well enough now; try again later.
    #[error("{0}")]
    Transient(String),
}

/// Looks up routes, caching answers for their TTL.
pub struct Router {
    dns: std::sync::Arc<MessageAuthenticator>,
    mx: TtlCache<Box<str>, RecordSet<MX>>,
    ipv4: TtlCache<Box<str>, RecordSet<Ipv4Addr>>,
    ipv6: TtlCache<Box<str>, RecordSet<Ipv6Addr>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").finish_non_exhaustive()
    }
}

fn not_found(e: &mail_auth::Error) -> Option<ResponseCode> {
    match e {
        mail_auth::Error::Dns(DnsError::RecordNotFound(code)) => Some(*code),
        _ => None,
    }
}

impl Router {
    pub fn new(dns: std::sync::Arc<MessageAuthenticator>) -> Self {
        Self { dns, mx: TtlCache::default(), ipv4: TtlCache::default(), ipv6: TtlCache::default() }
    }

    /// The hosts to try for `domain`, best first, at most `max` of them.
    pub async fn route(&self, domain: &str, max: usize) -> Result<Vec<Host>, RouteError> {
        let exchanges: Vec<String> = match self.dns.mx_lookup(domain, Some(&self.mx)).await {
            Ok(set) => {
                if is_null_mx(&set.rrset) {
                    return Err(RouteError::Permanent(format!(
                        "556 5.1.10 Domain {domain} does not accept mail (null MX)"
                    )));
                }
                let mut out = Vec::new();
                for mx in set.rrset.iter() {
                    let mut names: Vec<String> =
                        mx.exchanges.iter().map(|e| e.trim_end_matches('.').to_string()).collect();
                    shuffle(&mut names);
                    out.extend(names);
                }
                out
            }
            Err(e) if not_found(&e) == Some(ResponseCode::NXDomain) => {
                return Err(RouteError::Permanent(format!("550 5.1.2 Domain {domain} does not exist")));
            }
            // No MX records at all: the domain is its own mail server (implicit MX).
            Err(e) if not_found(&e).is_some() => vec![],
            Err(e) => return Err(RouteError::Transient(format!("DNS lookup of MX {domain} failed: {e}"))),
        };
        let names = if exchanges.is_empty() { vec![domain.to_string()] } else { exchanges };
        let mut hosts = Vec::new();
        let mut last_error = None;
        for name in names {
            if hosts.len() >= max {
                break;
            }
            match self
                .dns
                .ip_lookup(
                    &name,
                    IpLookupStrategy::Ipv4thenIpv6,
                    MAX_ADDRESSES_PER_HOST,
                    Some(&self.ipv4),
                    Some(&self.ipv6),
                )
                .await
            {
                Ok(ips) => hosts.extend(ips.into_iter().map(|ip| Host { name: name.clone(), ip })),
                Err(e) => last_error = Some(format!("DNS lookup of {name} failed: {e}")),
            }
        }
        hosts.truncate(max);
        if hosts.is_empty() {
            return Err(RouteError::Transient(last_error.unwrap_or_else(|| format!("no address for {domain}"))));
        }
        Ok(hosts)
    }
}

/// RFC 7505: a single MX record with an empty exchange (".").
fn is_null_mx(rrset: &[MX]) -> bool {
    rrset.len() == 1 && rrset[0].exchanges.len() == 1 && matches!(rrset[0].exchanges[0].trim_end_matches('.'), "")
}

/// Shuffles hosts of equal preference (RFC 5321 section 5.1), without a random number crate:
/// the low bits of the clock are random enough to spread load.
fn shuffle(names: &mut [String]) {
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    if names.len() > 1 {
        names.rotate_left(seed as usize % names.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_dot_exchange_is_a_null_mx() {
        let null = [MX { exchanges: vec![".".into()].into_boxed_slice(), preference: 0 }];
        assert!(is_null_mx(&null));
        let real = [MX { exchanges: vec!["mx.example.".into()].into_boxed_slice(), preference: 0 }];
        assert!(!is_null_mx(&real));
    }
}
