//! DNS for mail: the resolver mail-auth asks (the system's, or one given name server) and
//! [`TtlCache`], the answer cache honouring expiry times that mail-auth consults first.
//!
//! The SMTP front-end verifies SPF, DKIM and DMARC with them; the relay looks up MX records and
//! MTA-STS policy ids. A cache can also be filled by hand, which is how tests give mail-auth the
//! answers they want without any network.

use std::{
    borrow::Borrow,
    collections::HashMap,
    hash::Hash,
    net::SocketAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use mail_auth::{
    MessageAuthenticator, ResolverCache,
    hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts},
};

/// Most entries one cache keeps; past it, expired entries go, then everything.
const MAX_ENTRIES: usize = 20_000;

/// The resolver could not be set up (an unreadable `/etc/resolv.conf`, for one).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the DNS resolver: {0}")]
pub struct ResolverError(String);

/// A resolver on the system's configuration (`/etc/resolv.conf`), or asking one given name
/// server (UDP, a short timeout: tests and in-cluster resolvers answer fast).
pub fn resolver(nameserver: Option<SocketAddr>) -> Result<MessageAuthenticator, ResolverError> {
    match nameserver {
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
    .map_err(|e| ResolverError(e.to_string()))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_kept_until_it_expires() {
        let cache: TtlCache<Box<str>, u32> = TtlCache::default();
        let now = Instant::now();
        cache.insert("fresh.test.".into(), 1, now + Duration::from_secs(60));
        cache.insert("stale.test.".into(), 2, now - Duration::from_secs(1));
        assert_eq!(cache.get("fresh.test."), Some(1));
        assert_eq!(cache.get("stale.test."), None, "an expired answer must be asked again");
        assert_eq!(cache.remove("fresh.test."), Some(1));
        assert_eq!(cache.get("fresh.test."), None);
    }

    #[test]
    fn a_full_cache_drops_expired_answers_first() {
        let cache: TtlCache<u32, u32> = TtlCache::default();
        let now = Instant::now();
        for i in 0..MAX_ENTRIES as u32 {
            // Every other answer has expired already.
            let until = if i % 2 == 0 { now - Duration::from_secs(1) } else { now + Duration::from_secs(60) };
            cache.insert(i, i, until);
        }
        cache.insert(u32::MAX, 0, now + Duration::from_secs(60));
        assert_eq!(cache.get(&1), Some(1), "a live answer survives when expired ones make room");
        assert_eq!(cache.get(&u32::MAX), Some(0));
        assert_eq!(cache.0.lock().unwrap().len(), MAX_ENTRIES / 2 + 1);
    }

    #[test]
    fn a_given_name_server_needs_no_system_configuration() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        assert!(resolver(Some(closed)).is_ok());
    }
}
