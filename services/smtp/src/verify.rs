//! SPF, DKIM and DMARC verification of inbound mail (mail-auth), summarised in an
//! Authentication-Results header (RFC 8601) that is prepended to the message.
//!
//! DNS answers are cached with their TTL in [`DnsCache`]. The cache can also be filled by hand,
//! which is how tests give the verifier the DNS answers they want without any network.

use std::{
    borrow::Borrow,
    collections::HashMap,
    hash::Hash,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant},
};

use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, MX, MessageAuthenticator, Parameters, RecordSet, ResolverCache, Txt,
    dmarc::verify::DmarcParameters,
    hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts},
    spf::verify::SpfParameters,
};

/// Most entries one cache keeps; past it, expired entries go, then everything.
const MAX_ENTRIES: usize = 20_000;

/// A DNS answer cache honouring expiry times.
pub struct TtlCache<K, V>(Mutex<HashMap<K, (V, Instant)>>);

impl<K, V> std::fmt::Debug for TtlCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("TtlCache").field("entries", &n).finish()
    }
}

impl<K, V> Default for TtlCache<K, V> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<K: Hash + Eq, V: Clone> ResolverCache<K, V> for TtlCache<K, V> {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(name).filter(|(_, until)| *until > Instant::now()).map(|(v, _)| v.clone())
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(name).map(|(v, _)| v)
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            let now = Instant::now();
            map.retain(|_, (_, until)| *until > now);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(key, (value, valid_until));
    }
}

/// The caches mail-auth consults before asking DNS.
#[derive(Debug, Default)]
pub struct DnsCache {
    pub txt: TtlCache<Box<str>, Txt>,
    pub mx: TtlCache<Box<str>, RecordSet<MX>>,
    pub ipv4: TtlCache<Box<str>, RecordSet<Ipv4Addr>>,
    pub ipv6: TtlCache<Box<str>, RecordSet<Ipv6Addr>>,
    pub ptr: TtlCache<IpAddr, RecordSet<Box<str>>>,
}

fn fqdn(name: &str) -> Box<str> {
    let n = name.to_ascii_lowercase();
    if n.ends_with('.') { n.into_boxed_str() } else { format!("{n}.").into_boxed_str() }
}

impl DnsCache {
    /// Adds a TXT answer (SPF, DKIM key, DMARC policy) valid for an hour.
    pub fn add_txt(&self, name: &str, value: impl Into<Txt>) {
        self.txt.insert(fqdn(name), value.into(), Instant::now() + Duration::from_secs(3600));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot set up the DNS resolver: {0}")]
    Resolver(String),
}

/// mail-auth's parameters with every cache of [`DnsCache`] attached.
type CachedParameters<'x, P> = Parameters<
    'x,
    P,
    TtlCache<Box<str>, Txt>,
    TtlCache<Box<str>, RecordSet<MX>>,
    TtlCache<Box<str>, RecordSet<Ipv4Addr>>,
    TtlCache<Box<str>, RecordSet<Ipv6Addr>>,
    TtlCache<IpAddr, RecordSet<Box<str>>>,
>;

pub struct Verifier {
    auth: MessageAuthenticator,
    pub cache: DnsCache,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

impl Verifier {
    /// Uses the system's resolver (`/etc/resolv.conf`), or the given name server.
    pub fn new(nameserver: Option<SocketAddr>) -> Result<Self, VerifyError> {
        let auth = match nameserver {
            None => MessageAuthenticator::new_system_conf(),
            Some(addr) => {
                let mut server = NameServerConfig::udp(addr.ip());
                for c in &mut server.connections {
                    c.port = addr.port();
                }
                let mut opts = ResolverOpts::default();
                opts.timeout = Duration::from_secs(2);
                opts.attempts = 1;
                MessageAuthenticator::new(ResolverConfig::from_name_servers(vec![server]), opts)
            }
        }
        .map_err(|e| VerifyError::Resolver(e.to_string()))?;
        Ok(Self { auth, cache: DnsCache::default() })
    }

    fn params<P>(&self, p: P) -> CachedParameters<'_, P> {
        Parameters {
            params: p,
            cache_txt: Some(&self.cache.txt),
            cache_mx: Some(&self.cache.mx),
            cache_ptr: Some(&self.cache.ptr),
            cache_ipv4: Some(&self.cache.ipv4),
            cache_ipv6: Some(&self.cache.ipv6),
        }
    }

    /// Verifies SPF (HELO and MAIL FROM), DKIM and DMARC of an inbound message and returns the
    /// Authentication-Results header line to prepend (with CRLF).
    pub async fn authentication_results(
        &self,
        hostname: &str,
        ip: IpAddr,
        helo: &str,
        mail_from: &str,
        message: &[u8],
    ) -> String {
        let spf = self.auth.verify_spf(self.params(SpfParameters::verify(ip, helo, hostname, mail_from))).await;
        let mut results = AuthenticationResults::new(hostname);
        results = if mail_from.is_empty() {
            results.with_spf_ehlo_result(&spf, ip, helo)
        } else {
            results.with_spf_mailfrom_result(&spf, ip, mail_from, helo)
        };
        if let Some(msg) = AuthenticatedMessage::parse(message) {
            let dkim = self.auth.verify_dkim(self.params(&msg)).await;
            let from_domain = msg.from().rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            results = results.with_dkim_results(&dkim, from_domain);
            let mail_from_domain = mail_from.rsplit_once('@').map(|(_, d)| d).unwrap_or(helo);
            let dmarc =
                self.auth.verify_dmarc(self.params(DmarcParameters::new(&msg, &dkim, mail_from_domain, &spf))).await;
            results = results.with_dmarc_result(&dmarc);
            format!("Authentication-Results: {results}\r\n")
        } else {
            format!("Authentication-Results: {results}\r\n")
        }
    }
}

/// Removes Authentication-Results headers that claim to come from `hostname`: only this
/// server may write those (RFC 8601 section 5), and a sender must not forge them.
pub fn strip_forged_results(message: &[u8], hostname: &str) -> Vec<u8> {
    let header_end = message.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 2).unwrap_or(message.len());
    let (header, body) = message.split_at(header_end);
    let mut out = Vec::with_capacity(message.len());
    let mut skipping = false;
    for line in header.split_inclusive(|b| *b == b'\n') {
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if continuation {
            if !skipping {
                out.extend_from_slice(line);
            }
            continue;
        }
        skipping = false;
        let lower = String::from_utf8_lossy(line).to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("authentication-results:") {
            let authserv = value.trim_start().split(|c: char| c == ';' || c.is_whitespace()).next().unwrap_or("");
            if authserv.eq_ignore_ascii_case(hostname) {
                skipping = true;
                continue;
            }
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_only_our_forged_results() {
        let m = b"Authentication-Results: mx.test; spf=pass\r\n\tsmtp.mailfrom=x\r\nAuthentication-Results: other.example; dkim=pass\r\nSubject: s\r\n\r\nAuthentication-Results: mx.test; body stays\r\n";
        let out = String::from_utf8(strip_forged_results(m, "mx.test")).unwrap();
        assert!(!out.contains("spf=pass"));
        assert!(out.contains("other.example; dkim=pass"));
        assert!(out.contains("Subject: s"));
        assert!(out.contains("body stays"));
    }
}
