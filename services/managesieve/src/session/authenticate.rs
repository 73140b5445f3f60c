//! AUTHENTICATE (RFC 5804 section 2.1) with PLAIN (RFC 4616), its initial response in the
//! command or as the answer to an empty challenge, a string either way (quoted or literal, as
//! sieve-connect sends it); `"*"` cancels. Credentials are accepted only over TLS unless
//! configured otherwise. Failures are counted per session here and per IP and account by the
//! mailbox service.

use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::Buf;
use secrecy::SecretString;

use super::{Flow, Session};
use crate::{
    backend::BackendError,
    codec::{self, Code, Decoded, Response, SaslAnswer, Secret},
};

/// What the client answered to the challenge.
enum Answer {
    Data(Secret),
    Cancelled,
    Malformed(&'static str),
    /// The session ends (the client left, or sent what cannot be framed, already answered).
    Gone,
}

impl Session {
    pub(crate) async fn authenticate(&mut self, mechanism: String, initial: Option<Secret>) -> std::io::Result<Flow> {
        if self.account.is_some() {
            return Ok(self.error(Response::no("Already authenticated")));
        }
        if mechanism != "PLAIN" {
            return Ok(self.error(Response::no("Unsupported mechanism; use PLAIN")));
        }
        if !self.may_login() {
            // With a certificate, STARTTLS makes PLAIN acceptable; without one, nothing does.
            let response = if self.cfg.tls.is_some() {
                Response::no_code(Code::EncryptNeeded, "Use STARTTLS first: credentials are not accepted in plain text")
            } else {
                Response::no_code(Code::AuthTooWeak, "Credentials are not accepted in plain text")
            };
            return Ok(self.error(response));
        }
        let answer = match initial {
            Some(i) => Answer::Data(i),
            None => {
                // The empty challenge of PLAIN, as a string.
                self.raw(b"\"\"\r\n");
                self.read_answer().await?
            }
        };
        let data = match answer {
            Answer::Data(d) => d,
            Answer::Cancelled => return Ok(self.error(Response::no("Authentication cancelled"))),
            Answer::Malformed(why) => return Ok(self.error(Response::no(format!("Malformed SASL answer: {why}")))),
            Answer::Gone => return Ok(Flow::Close),
        };
        let Ok(decoded) = STANDARD.decode(data.expose().trim_ascii()) else {
            return Ok(self.error(Response::no("Malformed PLAIN response: invalid base64")));
        };
        match tern_runtime::sasl::plain(&decoded) {
            Ok((user, password)) => Ok(self.check(user, password).await),
            Err(e) => Ok(self.error(Response::no(format!("Malformed PLAIN response: {e}")))),
        }
    }

    /// Reads the client's answer to a challenge.
    async fn read_answer(&mut self) -> std::io::Result<Answer> {
        loop {
            let limits = self.codec_limits();
            match codec::parse_sasl_answer(&self.conn.rbuf, &limits) {
                Decoded::Done(parsed, used) => {
                    self.conn.rbuf.advance(used);
                    return Ok(match parsed {
                        Ok(SaslAnswer::Data(d)) => Answer::Data(d),
                        Ok(SaslAnswer::Cancel) => Answer::Cancelled,
                        Err(e) => Answer::Malformed(match e {
                            codec::ParseError::Syntax(why) => why,
                            codec::ParseError::Unknown => "expected a string",
                        }),
                    });
                }
                Decoded::NeedMore(n) => {
                    if !self.wait_for(n).await? {
                        return Ok(Answer::Gone);
                    }
                }
                Decoded::Fault(_) => {
                    // An answer is a few hundred octets at most; anything that breaks the
                    // limits is not a client that means to log in.
                    self.send(Response::bye("Malformed SASL answer, closing connection"));
                    return Ok(Answer::Gone);
                }
            }
        }
    }

    async fn check(&mut self, user: String, password: SecretString) -> Flow {
        match self.backend.authenticate(&user, &password, self.peer.ip()).await {
            Ok(account) => {
                tracing::info!(user = %account.address, "logged in");
                tracing::Span::current().record("user", account.address.as_str());
                self.account = Some(account);
                self.send(Response::ok("Logged in"));
                Flow::Continue
            }
            Err(BackendError::AuthFailed) => {
                tracing::info!(user = %user, "authentication failed");
                self.auth_failures += 1;
                // A pause makes guessing slow without holding a thread.
                tokio::time::sleep(std::time::Duration::from_millis(250 * u64::from(self.auth_failures))).await;
                if self.auth_failures >= self.cfg.limits.max_auth_failures {
                    self.send(Response::no("Invalid credentials"));
                    self.send(Response::bye("Too many failed logins, closing connection"));
                    return Flow::Close;
                }
                self.error(Response::no("Invalid credentials"))
            }
            Err(e) => {
                self.failed(e);
                Flow::Continue
            }
        }
    }
}
