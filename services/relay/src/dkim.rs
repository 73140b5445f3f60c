//! DKIM signing (RFC 6376) of outbound mail with the sender domain's key, relaxed/relaxed over
//! the headers that identify a message. The keys live with the domains in the mailbox service
//! (set by `tern admin domain dkim` or the operator from a Domain's Secret); the relay asks for
//! them and keeps them for a few minutes, so a new or rotated key is used soon without a
//! restart.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mail_auth::{
    common::{
        crypto::{Algorithm, CryptoError, Sha256, SigningKey},
        headers::{HeaderWriter, Writable},
    },
    dkim::{Canonicalization, DkimSigner, Done},
};
use tern_proto::v1::{GetSigningKeyRequest, mailbox_client::MailboxClient};
use tern_runtime::rpc::Channel;

/// The headers signed, when present (RFC 6376 section 5.4.1's list, less the ones that
/// transit often changes).
const SIGNED_HEADERS: [&str; 14] = [
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Id",
    "List-Unsubscribe",
];

/// How long a key (or the knowledge that a domain has none) is kept.
const KEY_TTL: Duration = Duration::from_secs(300);

type Key = Arc<DkimSigner<RingRsa, Done>>;

/// An RSA key signing with ring (already in the build through rustls), for mail-auth's DKIM
/// signer: RSA-2048 with ring takes a fraction of the CPU of the pure-Rust rsa crate, and
/// signing is most of what a delivery costs the relay.
#[derive(Debug)]
pub struct RingRsa(ring::signature::RsaKeyPair);

impl SigningKey for RingRsa {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        // ring hashes what it signs; the input is the canonicalized headers, a few KiB at most.
        let mut data = Vec::with_capacity(1024);
        input.write(&mut data);
        let mut signature = vec![0; self.0.public().modulus_len()];
        self.0
            .sign(&ring::signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), &data, &mut signature)
            .map_err(|e| mail_auth::Error::Crypto(CryptoError::Library(e.to_string())))?;
        Ok(signature)
    }

    fn algorithm(&self) -> Algorithm {
        Algorithm::RsaSha256
    }
}

/// Signs messages with their domain's key.
pub struct Signer {
    client: MailboxClient<Channel>,
    keys: Mutex<HashMap<String, (Option<Key>, Instant)>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("cannot get the DKIM key of {domain}: {detail}")]
    Key { domain: String, detail: String },
    #[error("cannot sign for {domain}: {detail}")]
    Sign { domain: String, detail: String },
}

/// A signer for `domain` from a PEM private key (PKCS#8 or PKCS#1).
pub fn signer(domain: &str, selector: &str, pem: &str) -> Result<DkimSigner<RingRsa, Done>, String> {
    let key = tern_runtime::dkim::parse_private_key_pem(pem).map_err(|e| e.to_string())?;
    let der = rsa_pkcs8_der(&key)?;
    let key = RingRsa(ring::signature::RsaKeyPair::from_pkcs8(&der).map_err(|e| e.to_string())?);
    Ok(DkimSigner::from_key(key)
        .domain(domain)
        .selector(selector)
        .headers(SIGNED_HEADERS)
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed))
}

fn rsa_pkcs8_der(key: &rsa::RsaPrivateKey) -> Result<Vec<u8>, String> {
    use rsa::pkcs8::EncodePrivateKey;
    key.to_pkcs8_der().map(|d| d.as_bytes().to_vec()).map_err(|e| e.to_string())
}

/// The domain a message is signed for: its From: address's, so that DMARC finds the signature
/// aligned (submission already checked that the sender owns that address).
pub fn signing_domain(message: &[u8], mail_from: &str) -> Option<String> {
    let parsed = mail_parser::MessageParser::default().parse_headers(message);
    let from = parsed
        .as_ref()
        .and_then(|m| m.from())
        .and_then(|a| a.first())
        .and_then(|a| a.address.as_deref().map(str::to_string))
        .unwrap_or_else(|| mail_from.to_string());
    from.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).filter(|d| !d.is_empty())
}

impl Signer {
    pub fn new(client: MailboxClient<Channel>) -> Self {
        Self { client, keys: Mutex::default() }
    }

    async fn key(&self, domain: &str) -> Result<Option<Key>, SignError> {
        if let Some((key, at)) = self.keys.lock().unwrap_or_else(|e| e.into_inner()).get(domain)
            && at.elapsed() < KEY_TTL
        {
            return Ok(key.clone());
        }
        let request = GetSigningKeyRequest { domain: domain.to_string() };
        let key = match self.client.clone().get_signing_key(request).await {
            Ok(r) => {
                let r = r.into_inner();
                let s = signer(domain, &r.selector, &r.private_key_pem)
                    .map_err(|detail| SignError::Key { domain: domain.to_string(), detail })?;
                Some(Arc::new(s))
            }
            Err(s) if s.code() == tonic::Code::NotFound => None,
            Err(s) => return Err(SignError::Key { domain: domain.to_string(), detail: s.message().to_string() }),
        };
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).insert(domain.to_string(), (key.clone(), Instant::now()));
        Ok(key)
    }

    /// The message with a DKIM-Signature prepended, or as it is when its domain has no key.
    pub async fn sign(&self, message: Vec<u8>, mail_from: &str) -> Result<Vec<u8>, SignError> {
        let Some(domain) = signing_domain(&message, mail_from) else { return Ok(message) };
        let Some(key) = self.key(&domain).await? else { return Ok(message) };
        // RSA signing takes a millisecond or two of CPU: off the async threads.
        tokio::task::spawn_blocking(move || {
            let signature =
                key.sign(&message).map_err(|e| SignError::Sign { domain: domain.clone(), detail: e.to_string() })?;
            let header = signature.to_header();
            let mut out = Vec::with_capacity(header.len() + message.len());
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(&message);
            Ok(out)
        })
        .await
        .map_err(|e| SignError::Sign { domain: "?".into(), detail: e.to_string() })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_from_domain_signs() {
        let m = b"From: Ann <ann@Example.org>\r\nTo: b@c.d\r\n\r\nhi\r\n";
        assert_eq!(signing_domain(m, "bounce@other.org").as_deref(), Some("example.org"));
        assert_eq!(signing_domain(b"Subject: x\r\n\r\n", "s@other.org").as_deref(), Some("other.org"));
        assert_eq!(signing_domain(b"Subject: x\r\n\r\n", ""), None);
    }

    #[test]
    fn a_signature_covers_the_from_header() {
        let pem = tern_runtime::dkim::generate_private_key_pem().unwrap();
        let s = signer("example.org", "tern", &pem).unwrap();
        let sig = s.sign(b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n").unwrap().to_header();
        assert!(sig.starts_with("DKIM-Signature:"), "{sig}");
        assert!(sig.contains("d=example.org") && sig.contains("s=tern") && sig.contains("c=relaxed/relaxed"), "{sig}");
    }
}
