//! MTA-STS (RFC 8461): a domain's published promise that its MX hosts speak TLS with
//! certificates valid for their names. With a policy in `enforce` mode the relay delivers only to
//! MX hosts the policy names, only over STARTTLS, and only to a certificate that verifies for the
//! host's name; otherwise the attempt is deferred, never sent in clear.
//!
//! The policy text is parsed here (pure); [`Fetcher`] finds it: the `_mta-sts.<domain>` TXT
//! record says a policy exists and names its version (`id`), and the policy itself comes over
//! HTTPS from `mta-sts.<domain>`. Policies are cached for their `max_age` and fetched again only
//! when the TXT record's id changes; when a fetch fails, a cached policy still applies, and
//! without one the domain is treated as having none (as the RFC says).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mail_auth::{IpLookupStrategy, MessageAuthenticator, mta_sts::MtaSts};

/// The longest policy file read; RFC 8461 section 3.3 suggests 64 KiB.
const MAX_POLICY_BYTES: usize = 64 * 1024;

/// The longest a policy is cached, whatever it says (RFC 8461: max_age at most 31557600).
const MAX_AGE: u64 = 31_557_600;

/// How long "this domain publishes no policy" is believed: the TXT lookup of every delivery
/// would otherwise cost as much as the rest of the attempt's DNS (the negative answer is not
/// cached by the resolver library).
const ABSENT_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Deliver only as the policy says.
    Enforce,
    /// Report failures, deliver anyway (Tern reports them in its logs).
    Testing,
    /// The domain withdrew its policy.
    None,
}

/// A domain's MTA-STS policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    /// MX host patterns: a name, or `*.` and a name (matching exactly one more label).
    pub mx: Vec<String>,
    pub max_age: u64,
}

/// Parses a policy file (RFC 8461 section 3.2): `key: value` lines, CRLF or LF.
pub fn parse(text: &str) -> Result<Policy, String> {
    let (mut version, mut mode, mut max_age, mut mx) = (None, None, None, Vec::new());
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!("not a `key: value` line: {line:?}"));
        };
        let value = value.trim();
        match key.trim() {
            "version" => version = Some(value.to_string()),
            "mode" => {
                mode = Some(match value {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    other => return Err(format!("unknown mode {other:?}")),
                })
            }
            "max_age" => {
                max_age = Some(value.parse::<u64>().map_err(|_| format!("max_age {value:?} is not a number"))?)
            }
            "mx" => mx.push(value.trim_end_matches('.').to_ascii_lowercase()),
            // Unknown keys are ignored, for extensions (section 3.2).
            _ => {}
        }
    }
    if version.as_deref() != Some("STSv1") {
        return Err("version is not STSv1".into());
    }
    let mode = mode.ok_or("no mode")?;
    let max_age = max_age.ok_or("no max_age")?.min(MAX_AGE);
    if mode != Mode::None && mx.is_empty() {
        return Err("no mx pattern".into());
    }
    Ok(Policy { mode, mx, max_age })
}

impl Policy {
    /// Whether MX host `host` is one the policy names (section 4.1).
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx.iter().any(|pattern| match pattern.strip_prefix("*.") {
            Some(parent) => host.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
            None => *pattern == host,
        })
    }
}

/// Finds and caches domains' policies.
pub struct Fetcher {
    dns: Arc<MessageAuthenticator>,
    http: reqwest::Client,
    port: u16,
    cache: Mutex<HashMap<String, Cached>>,
    /// TXT answers, for their TTL.
    txt: tern_mail::dns::TtlCache<Box<str>, mail_auth::Txt>,
    /// Domains found without a policy, until when.
    absent: Mutex<HashMap<String, Instant>>,
}

#[derive(Clone)]
struct Cached {
    id: String,
    policy: Arc<Policy>,
    until: Instant,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher").field("port", &self.port).finish_non_exhaustive()
    }
}

impl Fetcher {
    /// A fetcher verifying the policy hosts' certificates with `tls` (which must verify: the
    /// policy is only as good as the HTTPS it came over), on `port` (443; tests use others).
    pub fn new(dns: Arc<MessageAuthenticator>, tls: rustls::ClientConfig, port: u16) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            // The policy host is found through the relay's resolver, as the MX hosts are.
            .dns_resolver(Arc::new(Resolver(dns.clone())))
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the MTA-STS HTTPS client: {e}"))?;
        Ok(Self {
            dns,
            http,
            port,
            cache: Mutex::default(),
            txt: tern_mail::dns::TtlCache::default(),
            absent: Mutex::default(),
        })
    }

    fn cached(&self, domain: &str) -> Option<Cached> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(domain).filter(|c| c.until > Instant::now()).cloned()
    }

    /// Whether `domain` was found without a policy less than [`ABSENT_TTL`] ago.
    fn known_absent(&self, domain: &str) -> bool {
        let absent = self.absent.lock().unwrap_or_else(|e| e.into_inner());
        absent.get(domain).is_some_and(|until| *until > Instant::now())
    }

    /// The policy of `domain`, if it has one.
    pub async fn policy(&self, domain: &str) -> Option<Arc<Policy>> {
        let cached = self.cached(domain);
        if cached.is_none() && self.known_absent(domain) {
            return None;
        }
        let txt = self.dns.txt_lookup::<MtaSts>(format!("_mta-sts.{domain}."), Some(&self.txt)).await;
        let id = match txt {
            Ok(record) => record.id.clone(),
            // No record (or no answer): a policy cached earlier still holds until it expires.
            Err(_) => {
                if cached.is_none() {
                    let mut absent = self.absent.lock().unwrap_or_else(|e| e.into_inner());
                    if absent.len() > 10_000 {
                        let now = Instant::now();
                        absent.retain(|_, until| *until > now);
                    }
                    absent.insert(domain.to_string(), Instant::now() + ABSENT_TTL);
                }
                return cached.map(|c| c.policy);
            }
        };
        if let Some(c) = &cached
            && c.id == id
        {
            return Some(c.policy.clone());
        }
        match self.fetch(domain).await {
            Ok(policy) => {
                let policy = Arc::new(policy);
                let until = Instant::now() + Duration::from_secs(policy.max_age);
                let entry = Cached { id, policy: policy.clone(), until };
                let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() > 10_000 {
                    let now = Instant::now();
                    cache.retain(|_, c| c.until > now);
                }
                cache.insert(domain.to_string(), entry);
                Some(policy)
            }
            Err(e) => {
                tracing::warn!(%domain, error = %e, "cannot fetch the MTA-STS policy");
                cached.map(|c| c.policy)
            }
        }
    }

    async fn fetch(&self, domain: &str) -> Result<Policy, String> {
        let url = if self.port == 443 {
            format!("https://mta-sts.{domain}/.well-known/mta-sts.txt")
        } else {
            format!("https://mta-sts.{domain}:{}/.well-known/mta-sts.txt", self.port)
        };
        let response = self.http.get(&url).send().await.map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url}: HTTP {}", response.status()));
        }
        let body = response.bytes().await.map_err(|e| format!("{url}: {e}"))?;
        if body.len() > MAX_POLICY_BYTES {
            return Err(format!("{url}: the policy is larger than {MAX_POLICY_BYTES} bytes"));
        }
        parse(&String::from_utf8_lossy(&body)).map_err(|e| format!("{url}: {e}"))
    }
}

/// The relay's resolver, for reqwest.
struct Resolver(Arc<MessageAuthenticator>);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let dns = self.0.clone();
        Box::pin(async move {
            let ips = dns
                .ip_lookup(
                    name.as_str(),
                    IpLookupStrategy::Ipv4thenIpv6,
                    4,
                    None::<&NoCache<_, _>>,
                    None::<&NoCache<_, _>>,
                )
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            let addrs: reqwest::dns::Addrs = Box::new(ips.into_iter().map(|ip| std::net::SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

type NoCache<K, V> = mail_auth::common::cache::NoCache<K, V>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_parses_and_names_its_hosts() {
        let p =
            parse("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 86400\r\n")
                .unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 86400);
        assert!(p.allows("mail.example.com") && p.allows("MAIL.example.com."));
        assert!(p.allows("mx1.example.net"));
        assert!(!p.allows("example.net"), "a wildcard needs one more label");
        assert!(!p.allows("a.b.example.net"), "and only one");
        assert!(!p.allows("evil.example.com"));
    }

    #[test]
    fn a_bad_policy_is_refused() {
        assert!(parse("mode: enforce\nmx: a\nmax_age: 1\n").is_err(), "no version");
        assert!(parse("version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n").is_err());
        assert!(parse("version: STSv1\nmode: enforce\nmax_age: 1\n").is_err(), "no mx");
        assert!(parse("version: STSv1\nmode: enforce\nmx: a\n").is_err(), "no max_age");
        assert!(parse("version: STSv1\nmode: none\nmax_age: 1\n").is_ok(), "none needs no mx");
        assert_eq!(parse("version: STSv1\nmode: testing\nmx: a\nmax_age: 999999999999\n").unwrap().max_age, MAX_AGE);
    }
}
