//! SPF, DKIM and DMARC verification of inbound mail (mail-auth), summarised in an
//! Authentication-Results header (RFC 8601) that is prepended to the message.
//!
//! DNS answers are cached with their TTL in [`DnsCache`], built of [`tern_mail::dns`]'s caches
//! and asked through its resolver. The cache can also be filled by hand, which is how tests give
//! the verifier the DNS answers they want without any network.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, Instant},
};

use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, MX, MessageAuthenticator, Parameters, RecordSet, ResolverCache, Txt,
    dmarc::verify::DmarcParameters, spf::verify::SpfParameters,
};
use tern_mail::dns::{TtlCache, resolver};

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

    /// Records that a name has no TXT record (NXDOMAIN), valid for an hour.
    pub fn add_no_txt(&self, name: &str) {
        let nx = mail_auth::Error::Dns(mail_auth::DnsError::RecordNotFound(
            mail_auth::hickory_resolver::proto::op::ResponseCode::NXDomain,
        ));
        self.txt.insert(fqdn(name), Txt::Error(nx), Instant::now() + Duration::from_secs(3600));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Resolver(#[from] tern_mail::dns::ResolverError),
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
        Ok(Self { auth: resolver(nameserver)?, cache: DnsCache::default() })
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
        // The MAIL FROM identity decides (RFC 7208 section 2.4); the HELO identity only for the
        // null sender, as bounces have no other.
        let spf_params = if mail_from.is_empty() {
            SpfParameters::verify_ehlo(ip, helo, hostname)
        } else {
            SpfParameters::verify_mail_from(ip, helo, hostname, mail_from)
        };
        let spf = self.auth.verify_spf(self.params(spf_params)).await;
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
    tern_mail::headers::remove_fields(message, |name, value| {
        if !name.eq_ignore_ascii_case("authentication-results") {
            return false;
        }
        let value = String::from_utf8_lossy(value);
        let authserv = value.trim_start().split(|c: char| c == ';' || c.is_whitespace()).next().unwrap_or("");
        authserv.eq_ignore_ascii_case(hostname)
    })
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

#[cfg(test)]
mod dns_tests {
    //! SPF, DKIM and DMARC end to end with DNS answers the test controls: the cache is filled by
    //! hand and the resolver points at a closed local port, so nothing leaves the machine.

    use mail_auth::{
        common::{crypto::Ed25519Key, headers::HeaderWriter, parse::TxtRecordParser, verify::DomainKey},
        dkim::DkimSigner,
        dmarc::Dmarc,
        spf::Spf,
    };

    use super::*;

    const SEED: [u8; 32] = [7; 32];

    fn verifier() -> Verifier {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let v = Verifier::new(Some(closed)).unwrap();
        let key = Ed25519Key::from_seed_and_public_key(&SEED, &ed25519_public()).unwrap();
        let p = base64_encode(&key.public_key());
        let spf = |r: &str| Spf::parse(r.as_bytes()).unwrap();
        v.cache.add_txt("sender.test", spf("v=spf1 ip4:192.0.2.1 -all"));
        v.cache.add_txt("mail.sender.test", spf("v=spf1 ip4:192.0.2.1 -all"));
        v.cache.add_txt(
            "sel._domainkey.sender.test",
            DomainKey::parse(format!("v=DKIM1; k=ed25519; p={p}").as_bytes()).unwrap(),
        );
        v.cache.add_txt("_dmarc.sender.test", Dmarc::parse(b"v=DMARC1; p=reject").unwrap());
        // The DMARC tree walk also asks the parent domain.
        v.cache.add_no_txt("_dmarc.test");
        v
    }

    fn ed25519_public() -> Vec<u8> {
        // The public key that belongs to SEED, from a key object built from the seed alone.
        let der = {
            // PKCS#8 v1 wrapping of an Ed25519 seed (RFC 8410): a fixed prefix and the 32 bytes.
            let mut d =
                vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
            d.extend_from_slice(&SEED);
            d
        };
        Ed25519Key::from_pkcs8_der(&der).unwrap().public_key()
    }

    fn base64_encode(b: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    fn signed(body: &str) -> Vec<u8> {
        let message = format!(
            "From: Sender <news@sender.test>\r\nTo: alice@example.com\r\nSubject: checked\r\nMessage-ID: <1@sender.test>\r\n\r\n{body}"
        );
        let key = Ed25519Key::from_seed_and_public_key(&SEED, &ed25519_public()).unwrap();
        let signature = DkimSigner::from_key(key)
            .domain("sender.test")
            .selector("sel")
            .headers(["From", "To", "Subject", "Message-ID"])
            .sign(message.as_bytes())
            .unwrap();
        let mut out = signature.to_header().into_bytes();
        out.extend_from_slice(message.as_bytes());
        out
    }

    #[tokio::test]
    async fn aligned_mail_passes_spf_dkim_and_dmarc() {
        let v = verifier();
        let msg = signed("Hello.\r\n");
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let header = v.authentication_results("mx.test", ip, "mail.sender.test", "bounce@sender.test", &msg).await;
        assert!(header.starts_with("Authentication-Results: mx.test;"), "{header}");
        assert!(header.contains("spf=pass"), "{header}");
        assert!(header.contains("dkim=pass"), "{header}");
        assert!(header.contains("dmarc=pass"), "{header}");
        assert!(header.ends_with("\r\n"));
    }

    #[tokio::test]
    async fn forged_mail_fails_all_three() {
        let v = verifier();
        let mut msg = signed("Hello.\r\n");
        // A changed body breaks the signature; a foreign IP breaks SPF.
        msg.extend_from_slice(b"Send money.\r\n");
        let ip: IpAddr = "198.51.100.9".parse().unwrap();
        let header = v.authentication_results("mx.test", ip, "mail.sender.test", "bounce@sender.test", &msg).await;
        assert!(header.contains("spf=fail"), "{header}");
        // A body that no longer matches its hash is "neutral" in mail-auth (RFC 6376 allows
        // either); what matters is that it is not a pass and DMARC fails.
        assert!(!header.contains("dkim=pass") && header.contains("body hash did not verify"), "{header}");
        assert!(header.contains("dmarc=fail"), "{header}");
    }
}
