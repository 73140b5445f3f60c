//! One ManageSieve connection: the non-authenticated and authenticated states of RFC 5804
//! section 1.4, one file per command.
//!
//! The session holds nothing of the account's scripts: every command that reads or changes
//! them is one call to the mailbox service, which checks names, syntax and quotas, so that
//! front-ends in every pod agree and a dropped connection leaves nothing half done.
//!
//! Input is read into one buffer and parsed again from its start until a whole command is
//! there ([`crate::codec`] says how many bytes it still lacks); a command's literal is bounded
//! before its data is read: the script limit once logged in, a few kilobytes before.

mod authenticate;
mod capability;
mod checkscript;
mod deletescript;
mod getscript;
mod havespace;
mod listscripts;
mod logout;
mod noop;
mod putscript;
mod renamescript;
mod setactive;
mod starttls;
mod unauthenticate;

#[cfg(test)]
mod tests;

use std::{net::SocketAddr, sync::Arc};

use bytes::{Buf, BytesMut};
use tern_runtime::{conn::Conn, metrics::Metrics, stream::Stream};
use tokio::sync::watch;

use crate::{
    backend::{Account, Backend, BackendError},
    codec::{self, Code, Command, Decoded, Fault, ParseError, Response},
    config::ManageSieveConfig,
};

/// Whether the session goes on after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Close,
}

#[derive(Debug)]
pub struct Session {
    pub(crate) cfg: Arc<ManageSieveConfig>,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) peer: SocketAddr,
    id: String,
    pub(crate) conn: Conn,
    /// The logged-in account: the authenticated state.
    pub(crate) account: Option<Account>,
    errors: u32,
    pub(crate) auth_failures: u32,
    shutdown: watch::Receiver<bool>,
}

impl Session {
    pub fn new(
        cfg: Arc<ManageSieveConfig>,
        backend: Arc<dyn Backend>,
        stream: Stream,
        peer: SocketAddr,
        early: BytesMut,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            cfg,
            backend,
            peer,
            id: tern_runtime::conn::session_id(),
            conn: Conn::new(stream, early),
            account: None,
            errors: 0,
            auth_failures: 0,
            shutdown,
        }
    }

    pub(crate) fn is_tls(&self) -> bool {
        self.conn.is_tls()
    }

    /// Whether AUTHENTICATE is accepted on this connection now.
    pub(crate) fn may_login(&self) -> bool {
        self.is_tls() || self.cfg.allow_plaintext_auth
    }

    /// Queues a status response.
    pub(crate) fn send(&mut self, response: Response) {
        response.encode(&mut self.conn.wbuf);
    }

    /// Queues raw bytes of a data response (capability lines, script names, a script).
    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        self.conn.wbuf.extend_from_slice(bytes);
    }

    /// Answers a mistake of the client's and counts it; past the limit the session ends.
    pub(crate) fn error(&mut self, response: Response) -> Flow {
        self.send(response);
        self.errors += 1;
        if self.errors >= self.cfg.limits.max_errors {
            self.send(Response::bye("Too many errors, closing connection"));
            return Flow::Close;
        }
        Flow::Continue
    }

    /// Answers a refusal or failure of the mailbox service with its response code.
    pub(crate) fn failed(&mut self, e: BackendError) {
        let response = match e {
            BackendError::AuthFailed => Response::no("Authentication failed"),
            BackendError::Invalid(m) | BackendError::Refused(m) => Response::no(m),
            BackendError::NonExistent(m) => Response::no_code(Code::NonExistent, m),
            BackendError::AlreadyExists(m) => Response::no_code(Code::AlreadyExists, m),
            BackendError::Active(m) => Response::no_code(Code::Active, m),
            BackendError::TooMany(m) => Response::no_code(Code::QuotaMaxScripts, m),
            BackendError::TooLarge(m) => Response::no_code(Code::QuotaMaxSize, m),
            BackendError::OverQuota(m) => Response::no_code(Code::Quota, m),
            BackendError::Unavailable(m) => {
                tracing::warn!(error = %m, "mailbox service failed");
                Response::no_code(Code::TryLater, "Mailbox service unavailable, try again later")
            }
        };
        self.send(response);
    }

    /// The account of the authenticated state; commands of that state are dispatched only
    /// with one.
    pub(crate) fn account_id(&self) -> u64 {
        self.account.as_ref().map(|a| a.id).unwrap_or_default()
    }

    /// The bounds the next command is parsed under.
    pub(crate) fn codec_limits(&self) -> codec::Limits {
        let max_literal = match self.account {
            Some(_) => self.cfg.limits.max_script_bytes,
            None => self.cfg.limits.max_unauthenticated_literal,
        };
        codec::Limits { max_line: self.cfg.limits.max_line, max_literal }
    }

    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
        self.conn.flush().await
    }

    /// Reads until the buffer holds at least `n` bytes. False when the session should end:
    /// the client left, went idle (told with BYE) or the server is shutting down (likewise).
    pub(crate) async fn wait_for(&mut self, n: usize) -> std::io::Result<bool> {
        self.flush().await?;
        while self.conn.rbuf.len() < n {
            if *self.shutdown.borrow() {
                self.send(Response::Bye(Some(Code::TryLater), "Server shutting down, try again later".into()));
                self.flush().await?;
                return Ok(false);
            }
            let mut shutdown = self.shutdown.clone();
            let more = tokio::select! {
                r = self.conn.fill(self.cfg.limits.idle_timeout) => r,
                () = tern_runtime::listener::stopped(&mut shutdown) => continue,
            };
            match more {
                Ok(true) => {}
                Ok(false) => return Ok(false),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    self.send(Response::bye("Idle timeout, closing connection"));
                    self.flush().await?;
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Throws away `n` bytes of input, as they come. False when the session should end.
    async fn discard(&mut self, mut n: u64) -> std::io::Result<bool> {
        loop {
            let there = (self.conn.rbuf.len() as u64).min(n);
            self.conn.rbuf.advance(there as usize);
            n -= there;
            if n == 0 {
                return Ok(true);
            }
            if !self.wait_for(1).await? {
                return Ok(false);
            }
        }
    }

    /// Throws away input up to and including the next line end. False when the session
    /// should end.
    async fn discard_line(&mut self) -> std::io::Result<bool> {
        loop {
            match self.conn.rbuf.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    self.conn.rbuf.advance(i + 1);
                    return Ok(true);
                }
                None => {
                    self.conn.rbuf.clear();
                    if !self.wait_for(1).await? {
                        return Ok(false);
                    }
                }
            }
        }
    }

    /// Runs the session to its end.
    pub async fn run(mut self) {
        let span = tracing::info_span!("managesieve", id = %self.id, peer = %self.peer, user = tracing::field::Empty);
        let result = tracing::Instrument::instrument(self.serve(), span.clone()).await;
        if let Err(e) = result {
            tracing::debug!(parent: &span, error = %e, "connection ended");
        }
        self.conn.close().await;
    }

    async fn serve(&mut self) -> std::io::Result<()> {
        // The greeting is the capability response (RFC 5804 section 1.7).
        self.capabilities();
        self.send(Response::ok("Tern ManageSieve ready"));
        loop {
            let limits = self.codec_limits();
            let flow = match codec::parse_command(&self.conn.rbuf, &limits) {
                Decoded::Done(parsed, used) => {
                    let name = parsed.as_ref().map(Command::name).unwrap_or("OTHER");
                    Metrics::global().command("managesieve", name);
                    self.conn.rbuf.advance(used);
                    self.dispatch(parsed).await?
                }
                Decoded::NeedMore(n) => {
                    if !self.wait_for(n).await? {
                        return Ok(());
                    }
                    Flow::Continue
                }
                Decoded::Fault(fault) => {
                    Metrics::global().command("managesieve", "OTHER");
                    self.fault(fault).await?
                }
            };
            if flow == Flow::Close {
                self.flush().await?;
                return Ok(());
            }
        }
    }

    /// Input that breaks a limit or cannot be framed: skipped with NO where the next command
    /// can still be found, answered with BYE where it cannot.
    async fn fault(&mut self, fault: Fault) -> std::io::Result<Flow> {
        match fault {
            Fault::LineTooLong { skip, ended } => {
                self.conn.rbuf.advance(skip);
                if !ended && !self.discard_line().await? {
                    return Ok(Flow::Close);
                }
                let max = self.cfg.limits.max_line;
                Ok(self.error(Response::no(format!("Line too long: at most {max} octets besides literals"))))
            }
            Fault::LiteralTooLarge { command, size, header } => {
                let limits = self.codec_limits();
                // Before login nothing large is read; after it, a script a little too large is
                // read and thrown away so that its client hears why and can go on.
                if self.account.is_none() || size > self.cfg.limits.max_discard {
                    self.send(Response::bye(format!("A literal of {size} octets is too large, closing connection")));
                    return Ok(Flow::Close);
                }
                self.conn.rbuf.advance(header);
                if !self.discard(size).await? || !self.discard_line().await? {
                    return Ok(Flow::Close);
                }
                Ok(match command {
                    Some("PUTSCRIPT" | "CHECKSCRIPT" | "HAVESPACE") => {
                        let max = limits.max_literal;
                        self.send(Response::no_code(
                            Code::QuotaMaxSize,
                            format!("Script too large: at most {max} octets"),
                        ));
                        Flow::Continue
                    }
                    _ => self.error(Response::no(format!("Literal too large: at most {} octets", limits.max_literal))),
                })
            }
            Fault::BadLiteral(why) => {
                self.send(Response::bye(format!("Malformed literal ({why}), closing connection")));
                Ok(Flow::Close)
            }
        }
    }

    async fn dispatch(&mut self, parsed: Result<Command, ParseError>) -> std::io::Result<Flow> {
        let command = match parsed {
            Ok(c) => c,
            Err(ParseError::Unknown) => return Ok(self.error(Response::no("Unknown command"))),
            Err(ParseError::Syntax(why)) => return Ok(self.error(Response::no(format!("Syntax error: {why}")))),
        };
        tracing::trace!(command = command.name(), "command");
        let authenticated = self.account.is_some();
        Ok(match command {
            Command::Capability => self.capability(),
            Command::Logout => self.logout(),
            Command::Noop { tag } => self.noop(tag),
            Command::StartTls => self.starttls().await?,
            Command::Authenticate { mechanism, initial } => self.authenticate(mechanism, initial).await?,
            _ if !authenticated => self.error(Response::no("Authenticate first")),
            Command::HaveSpace { name, size } => self.havespace(name, size).await,
            Command::PutScript { name, script } => self.putscript(name, script).await,
            Command::CheckScript { script } => self.checkscript(script).await,
            Command::ListScripts => self.listscripts().await,
            Command::SetActive { name } => self.setactive(name).await,
            Command::GetScript { name } => self.getscript(name).await,
            Command::DeleteScript { name } => self.deletescript(name).await,
            Command::RenameScript { old, new } => self.renamescript(old, new).await,
            Command::Unauthenticate => self.unauthenticate(),
        })
    }
}

/// A script's text, which Sieve wants in UTF-8 (RFC 5228 section 2.1); `None` when it is not.
pub(crate) fn script_text(script: Vec<u8>) -> Option<String> {
    String::from_utf8(script).ok()
}
