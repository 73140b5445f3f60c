//! AUTH (RFC 4954) with PLAIN (RFC 4616) and LOGIN, on submission listeners, after TLS.
//! Failures are counted per session here and per IP and account by the mailbox service.

use base64::{Engine, engine::general_purpose::STANDARD};
use secrecy::SecretString;

use super::{Flow, Session};
use crate::{
    backend::{Backend, BackendError},
    codec::Reply,
};

/// What a SASL exchange produced.
enum Sasl {
    Credentials(String, SecretString),
    Cancelled,
    Malformed(&'static str),
    Gone,
}

fn decode(s: &str) -> Option<Vec<u8>> {
    if s == "=" {
        return Some(Vec::new());
    }
    STANDARD.decode(s.trim()).ok()
}

fn plain(bytes: &[u8]) -> Sasl {
    match tern_runtime::sasl::plain(bytes) {
        Ok((user, password)) => Sasl::Credentials(user, password),
        Err(e) => Sasl::Malformed(e.as_str()),
    }
}

impl<B: Backend> Session<B> {
    async fn challenge(&mut self, prompt: &str) -> std::io::Result<Option<String>> {
        self.reply(Reply::new(334, "", STANDARD.encode(prompt)));
        self.read_line().await
    }

    async fn exchange(&mut self, mechanism: &str, initial: Option<String>) -> std::io::Result<Sasl> {
        let answer = |line: Option<String>| -> Result<Vec<u8>, Sasl> {
            match line {
                None => Err(Sasl::Gone),
                Some(l) if l.trim() == "*" => Err(Sasl::Cancelled),
                Some(l) => decode(&l).ok_or(Sasl::Malformed("invalid base64")),
            }
        };
        Ok(match mechanism {
            "PLAIN" => {
                let line = match initial {
                    Some(i) => Some(i),
                    None => self.challenge("").await?,
                };
                match answer(line) {
                    Ok(bytes) => plain(&bytes),
                    Err(s) => s,
                }
            }
            "LOGIN" => {
                let user = match initial {
                    Some(i) => Some(i),
                    None => self.challenge("Username:").await?,
                };
                let user = match answer(user).map(String::from_utf8) {
                    Ok(Ok(u)) => u,
                    Ok(Err(_)) => return Ok(Sasl::Malformed("user name must be UTF-8")),
                    Err(s) => return Ok(s),
                };
                let pass = self.challenge("Password:").await?;
                match answer(pass).map(String::from_utf8) {
                    Ok(Ok(p)) => Sasl::Credentials(user, SecretString::from(p)),
                    Ok(Err(_)) => Sasl::Malformed("password must be UTF-8"),
                    Err(s) => s,
                }
            }
            _ => unreachable!("mechanism checked by the caller"),
        })
    }

    pub(crate) async fn auth(&mut self, mechanism: String, initial: Option<String>) -> std::io::Result<Flow> {
        if !self.kind.is_submission() {
            return Ok(self.error(Reply::new(503, "5.5.1", "AUTH is not available on this port; use submission")));
        }
        if self.helo.is_none() || !self.esmtp {
            return Ok(self.error(Reply::new(503, "5.5.1", "Say EHLO first")));
        }
        if self.account.is_some() {
            return Ok(self.error(Reply::new(503, "5.5.1", "Already authenticated")));
        }
        if self.txn.from.is_some() {
            return Ok(self.error(Reply::new(503, "5.5.1", "AUTH not allowed during a mail transaction")));
        }
        if !self.is_tls() && !self.cfg.allow_plaintext_auth {
            return Ok(self.error(Reply::new(538, "5.7.11", "Encryption required: use STARTTLS first")));
        }
        if mechanism != "PLAIN" && mechanism != "LOGIN" {
            return Ok(self.error(Reply::new(504, "5.5.4", "Unrecognized authentication mechanism")));
        }
        let (user, password) = match self.exchange(&mechanism, initial).await? {
            Sasl::Credentials(u, p) => (u, p),
            Sasl::Cancelled => return Ok(self.error(Reply::new(501, "5.0.0", "Authentication cancelled"))),
            Sasl::Malformed(why) => {
                return Ok(self.error(Reply::new(501, "5.5.2", format!("Malformed response: {why}"))));
            }
            Sasl::Gone => return Ok(Flow::Close),
        };
        match self.backend.authenticate(&user, &password, self.peer.ip()).await {
            Ok(account) => {
                tracing::info!(user = %account.address, "authenticated");
                self.account = Some(account);
                self.reply(Reply::new(235, "2.7.0", "Authentication successful"));
                Ok(Flow::Continue)
            }
            Err(BackendError::AuthFailed) => {
                tracing::info!(user = %user, "authentication failed");
                self.auth_failures += 1;
                if self.auth_failures >= self.cfg.limits.max_auth_failures {
                    self.reply(Reply::new(421, "4.7.0", "Too many failed authentications, closing connection"));
                    return Ok(Flow::Close);
                }
                // A pause makes guessing slow without holding a thread.
                tokio::time::sleep(std::time::Duration::from_millis(250 * u64::from(self.auth_failures))).await;
                Ok(self.error(Reply::new(535, "5.7.8", "Authentication credentials invalid")))
            }
            Err(BackendError::Throttled) => {
                // RFC 4954: 454 4.7.0 is the temporary failure; the client may retry later.
                self.reply(Reply::new(454, "4.7.0", "Too many failed authentications, try again later"));
                Ok(Flow::Close)
            }
            Err(e) => {
                tracing::warn!(error = %e, "authentication backend failed");
                self.reply(Reply::new(454, "4.7.0", "Temporary authentication failure"));
                Ok(Flow::Continue)
            }
        }
    }
}
