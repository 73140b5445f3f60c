//! DKIM (RFC 6376) keys of domains and signing with them.
//!
//! The keys are shared by the mailbox service (`tern admin domain dkim`), the operator (a
//! Domain's Secret) and the relay: generating an RSA key pair (PKCS#8 PEM) and computing the
//! TXT record that publishes its public key. The signer signs relaxed/relaxed over the headers
//! that identify a message, for the domain of its From: address. Where a key comes from and how
//! long it is kept is the caller's business (the relay asks the mailbox service for it).

use base64::Engine;
use mail_auth::{
    common::crypto::{Algorithm, CryptoError, Sha256, SigningKey},
    common::headers::Writable,
    dkim::{Canonicalization, DkimSigner, Done},
};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::{RsaPrivateKey, RsaPublicKey};

/// The size of the keys the operator generates (RFC 8301: at least 1024, 2048 recommended).
pub const KEY_BITS: usize = 2048;

/// The selector of a Domain that names none.
pub const DEFAULT_SELECTOR: &str = "tern";

/// A private key that cannot be used for DKIM.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not an RSA private key in PEM (PKCS#8 or PKCS#1): {0}")]
    Parse(String),
    #[error("cannot encode the key: {0}")]
    Encode(String),
    #[error("cannot generate a key: {0}")]
    Generate(String),
    #[error("the key cannot sign with ring: {0}")]
    Signing(String),
}

/// Generates an RSA key pair of [`KEY_BITS`] and returns its private key as PKCS#8 PEM.
/// CPU-bound (a fraction of a second to seconds): call it off the async threads.
pub fn generate_private_key_pem() -> Result<String, KeyError> {
    let key =
        RsaPrivateKey::new(&mut rsa::rand_core::OsRng, KEY_BITS).map_err(|e| KeyError::Generate(e.to_string()))?;
    let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| KeyError::Encode(e.to_string()))?;
    Ok(pem.to_string())
}

/// Reads an RSA private key in PEM: PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1
/// (`BEGIN RSA PRIVATE KEY`).
pub fn parse_private_key_pem(pem: &str) -> Result<RsaPrivateKey, KeyError> {
    let pem = pem.trim();
    RsaPrivateKey::from_pkcs8_pem(pem)
        .or_else(|e| RsaPrivateKey::from_pkcs1_pem(pem).map_err(|_| KeyError::Parse(e.to_string())))
}

/// The base64 of the DER SubjectPublicKeyInfo of the public key of a private key in PEM: the
/// `p=` tag of the DKIM record.
pub fn public_key_base64(pem: &str) -> Result<String, KeyError> {
    let key = parse_private_key_pem(pem)?;
    let der = RsaPublicKey::from(&key).to_public_key_der().map_err(|e| KeyError::Encode(e.to_string()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(der.as_bytes()))
}

/// The data of the DKIM TXT record of a private key in PEM: `v=DKIM1; k=rsa; p=<key>`, as one
/// string (a zone file splits it into strings of at most 255 characters).
pub fn txt_value(pem: &str) -> Result<String, KeyError> {
    Ok(format!("v=DKIM1; k=rsa; p={}", public_key_base64(pem)?))
}

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

/// A signer for `domain` from a PEM private key (PKCS#8 or PKCS#1), relaxed/relaxed over
/// [`SIGNED_HEADERS`]. Signing takes a millisecond or two of CPU per message: callers on async
/// threads sign on a blocking thread.
pub fn signer(domain: &str, selector: &str, pem: &str) -> Result<DkimSigner<RingRsa, Done>, KeyError> {
    let key = parse_private_key_pem(pem)?;
    // ring reads PKCS#8 only, so a PKCS#1 key is re-encoded first.
    let der = key.to_pkcs8_der().map_err(|e| KeyError::Encode(e.to_string()))?;
    let key =
        RingRsa(ring::signature::RsaKeyPair::from_pkcs8(der.as_bytes()).map_err(|e| KeyError::Signing(e.to_string()))?);
    Ok(DkimSigner::from_key(key)
        .domain(domain)
        .selector(selector)
        .headers(SIGNED_HEADERS)
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed))
}

/// The domain a message is signed for: its From: address's, so that DMARC finds the signature
/// aligned (submission already checked that the sender owns that address); the envelope
/// sender's when the message has no From: address.
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

#[cfg(test)]
mod tests {
    use rsa::pkcs8::DecodePublicKey;
    use rsa::traits::PublicKeyParts;

    use super::*;

    /// A 1024-bit key made with `openssl genpkey`; the expected value with
    /// `openssl pkey -pubout -outform DER | base64 -w0`.
    const KNOWN_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIICdgIBADANBgkqhkiG9w0BAQEFAASCAmAwggJcAgEAAoGBAN00oZA15B6THqHf
AD852HE2uOuemYllvxLsvLDaUDd9oA/PmK/5xZJGV099+8c/uNU4VkIP3kacEo23
GYmdYEdbLUOzir0NWSaBobUbCyXR/4e+o99gZqTGXEXmRf1DcJ+DDQOMynccuPLP
JtUU7w/D2WjeLeiMUad+xLVPDUU9AgMBAAECgYEA0e6iKk/K6G1tU+hkvpxyWre5
dfv18Ny8IwTD6v+1w4QZBQha+x+Lrs/NCucgrS8/hjPKQTX4GIEEZrRPqzfNZwcS
rjbhODcoQHEXaCN7uselzKRqJmKBe5JWgRzSwwLrsGS5uJvYdCLXJM61YFIvTbIz
2YtSa4QyWdf4WAGrMSECQQD3EhNstjzH+393hiPrnVVWb8FIEG/UdLjG4SkUCdfV
bKL3rIzDIZnB6MkRa9ri2ZTT5HPGK3XEaqmuf5KpVZcJAkEA5TM/z+XWSeqI94dl
XPfqeS4iqOC65Q1FpfeB2JHmD9PKn9t55aXaE8VHHgfVnFjXqNKcXY6Wyv1k+Xle
+pu1lQJAbKoukOm14d7jORZuRfp0xgdw4tkX1kFf41i0UHPj0aJuKrBhWJE2pupT
RK5DHvLDWk5n/QiwSyr+ZhkF0CQswQJADrobSI15FmjGgjkl7zJS05R+T6GZAKy4
o/BiXHsLcErogxsEGxhsCccsSaaxOAmRWdymhXBrCgH8IfeFfc7RfQJAFCxkyyux
kv59Os1JsbG9eVb8w3YHMcpIUE5wXhi5RSx3CCLpvj/4BaG37jjYHQKetRuUf2BN
I8mnH1t3KcYH7w==
-----END PRIVATE KEY-----";
    const KNOWN_SPKI: &str = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDdNKGQNeQekx6h3wA/OdhxNrjrnpmJZb8S7Lyw2lA3faAPz5iv+cWSRldPffvHP7jVOFZCD95GnBKNtxmJnWBHWy1Ds4q9DVkmgaG1Gwsl0f+HvqPfYGakxlxF5kX9Q3Cfgw0DjMp3HLjyzybVFO8Pw9lo3i3ojFGnfsS1Tw1FPQIDAQAB";

    #[test]
    fn the_txt_value_of_a_known_key() {
        assert_eq!(txt_value(KNOWN_KEY).unwrap(), format!("v=DKIM1; k=rsa; p={KNOWN_SPKI}"));
        // The same key in PKCS#1 gives the same record.
        let pkcs1 =
            rsa::pkcs1::EncodeRsaPrivateKey::to_pkcs1_pem(&parse_private_key_pem(KNOWN_KEY).unwrap(), LineEnding::LF)
                .unwrap();
        assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        assert_eq!(public_key_base64(&pkcs1).unwrap(), KNOWN_SPKI);
    }

    #[test]
    fn a_generated_key_round_trips_and_its_record_holds_its_public_key() {
        let started = std::time::Instant::now();
        let pem = generate_private_key_pem().unwrap();
        eprintln!("generated an RSA-{KEY_BITS} key in {:?}", started.elapsed());
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        let key = parse_private_key_pem(&pem).unwrap();
        assert_eq!(key.size() * 8, KEY_BITS);
        assert_eq!(*key.to_pkcs8_pem(LineEnding::LF).unwrap(), pem);

        let value = txt_value(&pem).unwrap();
        let p = value.strip_prefix("v=DKIM1; k=rsa; p=").unwrap();
        let der = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
        let public = RsaPublicKey::from_public_key_der(&der).unwrap();
        assert_eq!(public, RsaPublicKey::from(&key));
    }

    #[test]
    fn what_is_not_a_key_is_refused() {
        assert!(matches!(txt_value("not a key"), Err(KeyError::Parse(_))));
        assert!(txt_value("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").is_err());
    }

    #[test]
    fn the_from_domain_signs() {
        let m = b"From: Ann <ann@Example.org>\r\nTo: b@c.d\r\n\r\nhi\r\n";
        assert_eq!(signing_domain(m, "bounce@other.org").as_deref(), Some("example.org"));
        assert_eq!(signing_domain(b"Subject: x\r\n\r\n", "s@other.org").as_deref(), Some("other.org"));
        assert_eq!(signing_domain(b"Subject: x\r\n\r\n", ""), None);
    }

    #[test]
    fn a_signature_covers_the_from_header() {
        use mail_auth::common::headers::HeaderWriter;
        let pem = generate_private_key_pem().unwrap();
        let s = signer("example.org", "tern", &pem).unwrap();
        let sig = s.sign(b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n").unwrap().to_header();
        assert!(sig.starts_with("DKIM-Signature:"), "{sig}");
        assert!(sig.contains("d=example.org") && sig.contains("s=tern") && sig.contains("c=relaxed/relaxed"), "{sig}");
    }
}
