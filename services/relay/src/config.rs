//! The relay's settings, all with defaults an MTA administrator would expect (Postfix's in
//! spirit: opportunistic TLS, retries for five days, a delay warning after four hours).

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

/// TLS towards a destination, named after Postfix's security levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsPolicy {
    /// STARTTLS when the server offers it, plain text otherwise ("may").
    #[default]
    Opportunistic,
    /// STARTTLS or no delivery ("encrypt"). Certificates are not verified: without DANE or
    /// MTA-STS there is no name to verify them against that an attacker could not also change.
    Required,
    /// Never STARTTLS.
    Disabled,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// The name this relay gives in EHLO and in the bounces it writes.
    pub hostname: String,
    /// How many deliveries one worker runs at once.
    pub concurrency: usize,
    /// How many of those may go to one destination domain at once.
    pub per_domain_concurrency: usize,
    /// Most deliveries started per second to one destination domain (0: no limit), so a burst
    /// of mail to one provider does not trip its rate limits.
    pub per_domain_rate: f64,
    /// The SMTP port of remote servers. 25 on the Internet; tests point it at their receivers.
    pub port: u16,
    /// The DNS server to ask (`ip:port`); the system resolver when unset.
    pub dns_server: Option<SocketAddr>,
    /// Seconds to wait before each retry: the first after the first failed attempt, and so on;
    /// the last one repeats.
    pub retry_schedule_secs: Vec<u64>,
    /// How long a message is retried before it bounces.
    pub lifetime_secs: u64,
    /// Warn the sender once when a message has waited this long (0: never).
    pub delay_warning_secs: u64,
    /// How long a worker holds a claimed entry; an attempt gives up well before it runs out.
    pub lease_secs: u32,
    /// How long an idle worker waits before asking the queue again.
    pub poll_interval_ms: u64,
    pub connect_timeout_secs: u64,
    /// Timeout of each command's reply (RFC 5321 section 4.5.3.2 suggests minutes; the end of
    /// data gets twice this).
    pub command_timeout_secs: u64,
    /// How many MX hosts (addresses) one attempt tries before it gives up for now.
    pub max_hosts_per_attempt: usize,
    /// TLS for every destination not named in `tls_policies`.
    pub tls: TlsPolicy,
    /// TLS per destination domain, e.g. `{ "bank.example" = "required" }`.
    pub tls_policies: BTreeMap<String, TlsPolicy>,
    /// Sign outbound mail with the sender domain's DKIM key, when it has one.
    pub dkim: bool,
    /// Honour the MTA-STS policies (RFC 8461) of destination domains: with an `enforce`
    /// policy, deliver only to the MX hosts it names, over TLS with a certificate valid for the
    /// host's name.
    pub mta_sts: bool,
    /// The HTTPS port MTA-STS policies are fetched from: 443 on the Internet; tests use others.
    pub mta_sts_port: u16,
    /// PEM certificates trusted besides the system's roots when a certificate must verify
    /// (MTA-STS): for a private PKI, and for tests.
    pub extra_ca_file: Option<PathBuf>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            concurrency: 64,
            per_domain_concurrency: 16,
            per_domain_rate: 0.0,
            port: 25,
            dns_server: None,
            retry_schedule_secs: vec![60, 300, 900, 1800, 3600, 7200, 14_400],
            lifetime_secs: 5 * 24 * 3600,
            delay_warning_secs: 4 * 3600,
            lease_secs: 600,
            poll_interval_ms: 1000,
            connect_timeout_secs: 30,
            command_timeout_secs: 120,
            max_hosts_per_attempt: 5,
            tls: TlsPolicy::Opportunistic,
            tls_policies: BTreeMap::new(),
            dkim: true,
            mta_sts: true,
            mta_sts_port: 443,
            extra_ca_file: None,
        }
    }
}

impl RelayConfig {
    /// The wait after the `attempts`-th failed attempt (1-based).
    pub fn backoff(&self, attempts: u32) -> Duration {
        let i = (attempts.max(1) - 1) as usize;
        let secs = self.retry_schedule_secs.get(i).or(self.retry_schedule_secs.last()).copied().unwrap_or(300);
        Duration::from_secs(secs)
    }

    pub fn tls_for(&self, domain: &str) -> TlsPolicy {
        self.tls_policies.get(domain).copied().unwrap_or(self.tls)
    }

    /// How long one attempt may take in all: it must end before the lease does, or another
    /// worker could claim the entry while this one is still sending it.
    pub fn attempt_deadline(&self) -> Duration {
        Duration::from_secs(u64::from(self.lease_secs) * 3 / 4)
    }

    /// Checks values that would make the relay misbehave rather than fail.
    pub fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 || self.per_domain_concurrency == 0 {
            return Err("relay concurrency must be at least 1".into());
        }
        if self.lease_secs < 10 {
            return Err("relay lease_secs must be at least 10".into());
        }
        if !(self.per_domain_rate >= 0.0 && self.per_domain_rate.is_finite()) {
            return Err("relay per_domain_rate must be a number of deliveries per second, 0 for no limit".into());
        }
        if self.retry_schedule_secs.is_empty() {
            return Err("relay retry_schedule_secs must name at least one wait".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_backoff_step_repeats() {
        let c = RelayConfig { retry_schedule_secs: vec![10, 20], ..Default::default() };
        assert_eq!(c.backoff(1), Duration::from_secs(10));
        assert_eq!(c.backoff(2), Duration::from_secs(20));
        assert_eq!(c.backoff(9), Duration::from_secs(20));
    }

    #[test]
    fn a_domain_policy_overrides_the_default() {
        let mut c = RelayConfig::default();
        c.tls_policies.insert("bank.example".into(), TlsPolicy::Required);
        assert_eq!(c.tls_for("bank.example"), TlsPolicy::Required);
        assert_eq!(c.tls_for("other.example"), TlsPolicy::Opportunistic);
    }
}
