//! DKIM signing (RFC 6376) of outbound mail with the sender domain's key; how a message is
//! signed is [`tern_mail::dkim`]'s, where the key comes from is this module's. The keys live with
//! the domains in the mailbox service (set by `tern admin domain dkim` or the operator from a
//! Domain's Secret); the relay asks for them and keeps them for a few minutes, so a new or
//! rotated key is used soon without a restart.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mail_auth::{
    common::headers::HeaderWriter,
    dkim::{DkimSigner, Done},
};
use tern_mail::dkim::{RingRsa, signer, signing_domain};
use tern_proto::v1::{GetSigningKeyRequest, mailbox_client::MailboxClient};
use tern_runtime::rpc::Channel;

/// How long a key (or the knowledge that a domain has none) is kept.
const KEY_TTL: Duration = Duration::from_secs(300);

type Key = Arc<DkimSigner<RingRsa, Done>>;

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
                    .map_err(|e| SignError::Key { domain: domain.to_string(), detail: e.to_string() })?;
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
