//! The NOT AUTHENTICATED state: STARTTLS, LOGIN and AUTHENTICATE PLAIN (with SASL-IR).
//! Credentials are accepted only over TLS unless configured otherwise.

use std::borrow::Cow;

use bytes::Buf;
use imap_codec::{
    AuthenticateDataCodec,
    decode::{AuthenticateDataDecodeError, Decoder},
    imap_types::{
        auth::{AuthMechanism, AuthenticateData},
        core::Tag,
        secret::Secret,
    },
};
use secrecy::{ExposeSecret, SecretString};
use tern_proto::v1::{AuthenticateRequest, ErrorReason};

use super::{
    Account, Flow, Session,
    response::{Code, Response},
};

impl Session {
    pub(crate) async fn starttls(&mut self, tag: &Tag<'static>) -> std::io::Result<Flow> {
        let Some(tls) = self.cfg.tls.clone() else {
            return Ok(self.bad(tag, "TLS not available"));
        };
        if self.is_tls() || self.account.is_some() {
            return Ok(self.bad(tag, "STARTTLS not allowed now"));
        }
        self.ok(tag, "Begin TLS negotiation now");
        // Anything pipelined after STARTTLS was sent in plain text and must not be executed.
        self.conn_start_tls(tls).await?;
        Ok(Flow::Continue)
    }

    fn may_login(&self) -> bool {
        self.is_tls() || self.cfg.allow_plaintext_auth
    }

    pub(crate) async fn login(&mut self, tag: &Tag<'static>, user: String, password: String) -> Flow {
        if !self.may_login() {
            self.no(tag, "[PRIVACYREQUIRED] Use STARTTLS first");
            return Flow::Continue;
        }
        self.check(tag, user, SecretString::from(password)).await
    }

    pub(crate) async fn authenticate(
        &mut self,
        tag: &Tag<'static>,
        mechanism: AuthMechanism<'static>,
        initial: Option<Secret<Cow<'static, [u8]>>>,
    ) -> std::io::Result<Flow> {
        if !self.may_login() {
            self.no(tag, "[PRIVACYREQUIRED] Use STARTTLS first");
            return Ok(Flow::Continue);
        }
        if mechanism != AuthMechanism::Plain {
            self.no(tag, "Unsupported mechanism; use PLAIN");
            return Ok(Flow::Continue);
        }
        let response = match initial {
            Some(i) => i.declassify().to_vec(),
            None => {
                self.send(Response::Continue(""));
                self.flush().await?;
                loop {
                    let input_len = self.input().len();
                    let decoded = AuthenticateDataCodec::default().decode(self.input()).map(|(rest, data)| {
                        let data = match data {
                            AuthenticateData::Continue(d) => Some(d.declassify().to_vec()),
                            AuthenticateData::Cancel => None,
                        };
                        (input_len - rest.len(), data)
                    });
                    match decoded {
                        Ok((used, data)) => {
                            self.input().advance(used);
                            match data {
                                Some(d) => break d,
                                None => return Ok(self.bad(tag, "Authentication cancelled")),
                            }
                        }
                        Err(AuthenticateDataDecodeError::Incomplete) => {
                            if self.input().len() > 16 * 1024 || !self.fill().await? {
                                return Ok(Flow::Close);
                            }
                        }
                        Err(AuthenticateDataDecodeError::Failed) => {
                            // The rest of the line, arrived or not, goes with it.
                            let flow = self.bad(tag, "Malformed authentication data");
                            if flow == Flow::Close || !self.skip_line().await? {
                                return Ok(Flow::Close);
                            }
                            return Ok(flow);
                        }
                    }
                }
            }
        };
        let parsed = tern_runtime::sasl::plain(&response).ok();
        Ok(match parsed {
            Some((user, pass)) => self.check(tag, user, pass).await,
            None => self.bad(tag, "Malformed PLAIN response"),
        })
    }

    async fn check(&mut self, tag: &Tag<'static>, user: String, password: SecretString) -> Flow {
        let request = AuthenticateRequest::new(&user, password.expose_secret(), self.peer.ip());
        match self.client.authenticate(request).await {
            Ok(r) => {
                let Some(a) = r.into_inner().account else {
                    self.no_code(tag, Code::Atom("UNAVAILABLE"), "No account returned");
                    return Flow::Continue;
                };
                tracing::info!(user = %a.address, "logged in");
                tracing::Span::current().record("user", a.address.as_str());
                self.start_updates(a.id).await;
                self.account = Some(Account { id: a.id, address: a.address });
                let caps = self.capabilities();
                self.ok_code(tag, Code::Capability(caps), "Logged in");
                Flow::Continue
            }
            // Wrong credentials, or an account that may not log in: the same answer, so that
            // it tells nothing of which.
            Err(status)
                if matches!(
                    ErrorReason::of(&status),
                    ErrorReason::AuthFailed | ErrorReason::Suspended | ErrorReason::NotAllowed
                ) =>
            {
                tracing::info!(user = %user, "authentication failed");
                self.auth_failures += 1;
                tokio::time::sleep(std::time::Duration::from_millis(250 * u64::from(self.auth_failures))).await;
                if self.auth_failures >= self.cfg.limits.max_auth_failures {
                    self.no_code(tag, Code::Atom("AUTHENTICATIONFAILED"), "Invalid credentials");
                    self.send(Response::bye(None, "Too many failed logins"));
                    return Flow::Close;
                }
                self.no_code(tag, Code::Atom("AUTHENTICATIONFAILED"), "Invalid credentials");
                Flow::Continue
            }
            Err(status) => {
                self.failed(tag, &status);
                Flow::Continue
            }
        }
    }
}
