//! Connection-time checks of MX clients, before a single command: DNS blocklists (the client's
//! address looked up in each configured zone) and pregreet detection (a client that talks
//! before the greeting is a bot that does not wait for the server, as Postfix's postscreen
//! finds them). Submission listeners are never screened: their users authenticate.
//!
//! Lookups go through the resolver the SPF/DKIM/DMARC checks use, and their answers, listed or
//! not, are cached so that a client connecting many times costs one lookup per zone.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr},
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use mail_auth::MessageAuthenticator;
use prometheus_client::metrics::{counter::Counter, family::Family};

/// Most cached answers; past it the cache is emptied (expired entries first would need a scan
/// per insert, and a full cache only costs fresh lookups).
const MAX_CACHED: usize = 50_000;

/// One DNS blocklist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsblZone {
    /// The zone, e.g. `zen.spamhaus.org`.
    pub zone: String,
    /// What each answer means (`127.0.0.2` → `SBL`). Empty: every answer in 127.0.0.0/8 lists
    /// the client, with no meaning given. Answers not named are ignored (a list's "query
    /// refused" codes, 127.255.255.x, must never block mail).
    pub codes: BTreeMap<Ipv4Addr, String>,
}

/// Why a client is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub zone: String,
    pub answer: Ipv4Addr,
    pub meaning: String,
}

/// The DNS blocklist checker of a front-end: zones, resolver and answer cache.
pub struct Dnsbl {
    resolver: MessageAuthenticator,
    zones: Vec<DnsblZone>,
    /// How long a "not listed" answer (or a failed lookup) is kept.
    negative_ttl: Duration,
    cache: Mutex<HashMap<IpAddr, (Option<Listing>, Instant)>>,
}

impl std::fmt::Debug for Dnsbl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dnsbl").field("zones", &self.zones).finish_non_exhaustive()
    }
}

/// The name to look up for `ip` in `zone`: the address's octets (IPv4) or nibbles (IPv6) in
/// reverse order, then the zone (RFC 5782 section 2.1).
pub fn query_name(ip: IpAddr, zone: &str) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.{zone}.")
        }
        IpAddr::V6(v6) => {
            let mut out = String::with_capacity(64 + zone.len());
            for byte in v6.octets().iter().rev() {
                out.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            out.push_str(zone);
            out.push('.');
            out
        }
    }
}

impl Dnsbl {
    pub fn new(resolver: MessageAuthenticator, zones: Vec<DnsblZone>, negative_ttl: Duration) -> Self {
        Self { resolver, zones, negative_ttl, cache: Mutex::default() }
    }

    pub fn zones(&self) -> &[DnsblZone] {
        &self.zones
    }

    /// What an answer from `zone` means, if it lists the client.
    fn meaning(zone: &DnsblZone, answer: Ipv4Addr) -> Option<String> {
        if zone.codes.is_empty() {
            let [a, b, c, _] = answer.octets();
            // 127.255.255.x are the lists' errors ("you are over the free use limit").
            return (a == 127 && !(b == 255 && c == 255)).then(String::new);
        }
        zone.codes.get(&answer).cloned()
    }

    /// The first zone that lists `ip`, asking each in turn (cached). A lookup that fails lists
    /// nothing: a broken list must not stop mail.
    pub async fn check(&self, ip: IpAddr) -> Option<Listing> {
        if let Some((found, until)) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&ip)
            && *until > Instant::now()
        {
            return found.clone();
        }
        let mut found = None;
        let mut until = Instant::now() + self.negative_ttl;
        for zone in &self.zones {
            let name = query_name(ip, &zone.zone);
            match self.resolver.ipv4_lookup_raw(&name).await {
                Ok(entry) => {
                    if let Some((answer, meaning)) =
                        entry.entry.iter().find_map(|a| Self::meaning(zone, *a).map(|m| (*a, m)))
                    {
                        found = Some(Listing { zone: zone.zone.clone(), answer, meaning });
                        until = entry.expires.max(Instant::now() + Duration::from_secs(1));
                        break;
                    }
                }
                Err(mail_auth::Error::Dns(mail_auth::DnsError::RecordNotFound(_))) => {}
                Err(e) => tracing::info!(zone = %zone.zone, %ip, error = %e, "DNS blocklist lookup failed"),
            }
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(ip, (found.clone(), until));
        found
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ZoneLabel {
    pub zone: String,
}

/// Clients refused at connect, by DNS blocklist zone, and for talking before the greeting.
#[derive(Debug, Clone)]
pub struct ScreenMetrics {
    pub dnsbl: Family<ZoneLabel, Counter>,
    pub pregreet: Counter,
}

impl ScreenMetrics {
    pub fn global() -> &'static ScreenMetrics {
        static METRICS: OnceLock<ScreenMetrics> = OnceLock::new();
        METRICS.get_or_init(|| {
            let m = ScreenMetrics { dnsbl: Family::default(), pregreet: Counter::default() };
            let global = tern_runtime::metrics::Metrics::global();
            global.register(
                "smtp_dnsbl_rejections",
                "MX clients refused as listed, by DNS blocklist zone",
                m.dnsbl.clone(),
            );
            global.register(
                "smtp_pregreet_rejections",
                "MX clients refused for talking before the greeting",
                m.pregreet.clone(),
            );
            m
        })
    }

    /// Zero samples for every configured zone, from the start.
    pub fn declare(zones: &[DnsblZone]) {
        let m = Self::global();
        for z in zones {
            let _ = m.dnsbl.get_or_create(&ZoneLabel { zone: z.zone.clone() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names_reverse_the_address() {
        assert_eq!(query_name("192.0.2.99".parse().unwrap(), "bl.test"), "99.2.0.192.bl.test.");
        assert_eq!(
            query_name("2001:db8::1".parse().unwrap(), "bl.test"),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test."
        );
    }

    #[test]
    fn answers_mean_what_the_zone_says() {
        let any = DnsblZone { zone: "bl.test".into(), codes: BTreeMap::new() };
        assert_eq!(Dnsbl::meaning(&any, Ipv4Addr::new(127, 0, 0, 2)), Some(String::new()));
        assert_eq!(Dnsbl::meaning(&any, Ipv4Addr::new(127, 255, 255, 254)), None, "a list's error is no listing");
        assert_eq!(Dnsbl::meaning(&any, Ipv4Addr::new(10, 0, 0, 2)), None);
        let coded = DnsblZone {
            zone: "zen.test".into(),
            codes: BTreeMap::from([(Ipv4Addr::new(127, 0, 0, 4), "XBL: exploited host".to_string())]),
        };
        assert_eq!(Dnsbl::meaning(&coded, Ipv4Addr::new(127, 0, 0, 4)).as_deref(), Some("XBL: exploited host"));
        assert_eq!(Dnsbl::meaning(&coded, Ipv4Addr::new(127, 0, 0, 2)), None, "codes not named are ignored");
    }
}
