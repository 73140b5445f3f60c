//! The AUTHORIZATION state: CAPA (RFC 2449), USER and PASS, AUTH PLAIN (RFC 5034), STLS
//! (RFC 2595) and QUIT. Credentials are accepted only over TLS unless configured otherwise.

use base64::{Engine, engine::general_purpose::STANDARD};
use secrecy::SecretString;

use super::{Code, Flow, Session};
use crate::{backend::BackendError, codec::Command};

impl Session {
    pub(crate) fn capabilities(&mut self) {
        let may_login = self.is_tls() || self.cfg.allow_plaintext_auth;
        let mut caps =
            vec!["TOP".to_string(), "UIDL".into(), "RESP-CODES".into(), "AUTH-RESP-CODE".into(), "PIPELINING".into()];
        if self.txn.is_none() {
            if may_login {
                caps.push("USER".into());
                caps.push("SASL PLAIN".into());
            }
            if self.cfg.tls.is_some() && !self.is_tls() {
                caps.push("STLS".into());
            }
        }
        if let Some(days) = self.cfg.expire_days {
            caps.push(if days == 0 { "EXPIRE NEVER".into() } else { format!("EXPIRE {days}") });
        }
        if let Some(delay) = self.cfg.login_delay {
            caps.push(format!("LOGIN-DELAY {delay}"));
        }
        caps.push("IMPLEMENTATION Tern".into());
        self.ok("Capability list follows");
        for c in caps {
            self.line(&c);
        }
        self.line(".");
    }

    pub(crate) async fn authorization(&mut self, command: Command) -> std::io::Result<Flow> {
        let may_login = self.is_tls() || self.cfg.allow_plaintext_auth;
        Ok(match command {
            Command::Capa => {
                self.capabilities();
                Flow::Continue
            }
            Command::Quit => {
                self.ok(format!("{} signing off", self.cfg.hostname));
                Flow::Close
            }
            Command::Stls => self.stls().await?,
            Command::User(_) | Command::Pass(_) | Command::Auth { .. } | Command::AuthList if !may_login => {
                self.error(Some(Code::Auth), "Use STLS first: credentials are not accepted in plain text")
            }
            Command::User(name) => {
                self.user = Some(name);
                self.ok("Send PASS");
                Flow::Continue
            }
            Command::Pass(password) => match self.user.take() {
                None => self.error(None, "Send USER first"),
                Some(user) => self.check(user, SecretString::from(password.into_inner())).await,
            },
            Command::AuthList => {
                self.ok("Supported mechanisms follow");
                self.line("PLAIN");
                self.line(".");
                Flow::Continue
            }
            Command::Auth { mechanism, initial } => {
                if !mechanism.eq_ignore_ascii_case("PLAIN") {
                    return Ok(self.error(None, "Unsupported mechanism; use PLAIN"));
                }
                let response = match initial {
                    Some(i) => Some(i.into_inner()),
                    None => {
                        self.line("+ ");
                        self.read_line().await?
                    }
                };
                let Some(response) = response else { return Ok(Flow::Close) };
                if response.trim() == "*" {
                    return Ok(self.error(None, "Authentication cancelled"));
                }
                let decoded =
                    if response.trim() == "=" { Some(Vec::new()) } else { STANDARD.decode(response.trim()).ok() };
                match decoded.as_deref().and_then(|d| tern_runtime::sasl::plain(d).ok()) {
                    Some((user, password)) => self.check(user, password).await,
                    None => self.error(None, "Malformed PLAIN response"),
                }
            }
            _ => self.error(None, "Not allowed before login"),
        })
    }

    async fn check(&mut self, user: String, password: SecretString) -> Flow {
        match self.backend.authenticate(&user, &password, self.peer.ip()).await {
            Ok(account) => self.login(account).await,
            Err(BackendError::AuthFailed) => {
                tracing::info!(user = %user, "authentication failed");
                self.auth_failures += 1;
                // A pause makes guessing slow without holding a thread.
                tokio::time::sleep(std::time::Duration::from_millis(250 * u64::from(self.auth_failures))).await;
                if self.auth_failures >= self.cfg.limits.max_auth_failures {
                    self.err(Some(Code::Auth), "Too many failed logins, closing connection");
                    return Flow::Close;
                }
                self.error(Some(Code::Auth), "Invalid login or password")
            }
            Err(e) => {
                tracing::warn!(error = %e, "authentication backend failed");
                self.err(Some(Code::SysTemp), "Temporary failure, try again later");
                Flow::Continue
            }
        }
    }

    async fn stls(&mut self) -> std::io::Result<Flow> {
        let Some(tls) = self.cfg.tls.clone() else {
            return Ok(self.error(None, "TLS not available"));
        };
        if self.is_tls() {
            return Ok(self.error(None, "TLS already active"));
        }
        self.ok("Begin TLS negotiation");
        // Anything pipelined after STLS was sent in plain text; it must not reach the TLS session.
        self.conn.start_tls(tls, self.cfg.limits.idle_timeout).await?;
        self.user = None;
        Ok(Flow::Continue)
    }
}
