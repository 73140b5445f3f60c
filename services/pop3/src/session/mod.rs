//! One POP3 connection: the AUTHORIZATION, TRANSACTION and UPDATE states of RFC 1939.
//!
//! The maildrop is a snapshot taken at login, so message numbers stay put for the whole session
//! while mail arrives or IMAP sessions change the mailbox. DELE only marks; deletion happens in
//! the UPDATE state after QUIT, as one durable change. A connection that drops deletes nothing.
//! One session per account at a time, across every pod, through a lease held in the mailbox
//! service and renewed while the session lives.

mod authorization;
mod transaction;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::{Buf, BytesMut};
use tern_runtime::{
    conn::Conn,
    metrics::{Metrics, verb},
    stream::Stream,
};
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    backend::{Account, Backend, Maildrop},
    codec::{Command, Decoded, ParseError, next_line},
    config::{ListenerKind, Pop3Config},
};

/// The verbs counted by name in `tern_commands_total`; any other line counts as `OTHER`.
pub const COMMANDS: [&str; 14] =
    ["USER", "PASS", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "QUIT", "TOP", "UIDL", "CAPA", "STLS", "AUTH"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Close,
}

/// Response codes of RFC 2449 and RFC 3206.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    Auth,
    InUse,
    SysTemp,
    SysPerm,
}

impl Code {
    fn as_str(self) -> &'static str {
        match self {
            Code::Auth => "AUTH",
            Code::InUse => "IN-USE",
            Code::SysTemp => "SYS/TEMP",
            Code::SysPerm => "SYS/PERM",
        }
    }
}

/// The TRANSACTION state.
#[derive(Debug)]
pub(crate) struct Transaction {
    pub account: Account,
    pub maildrop: Maildrop,
    pub deleted: Vec<bool>,
    renewal: JoinHandle<()>,
}

impl Drop for Transaction {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

#[derive(Debug)]
pub struct Session {
    pub(crate) cfg: Arc<Pop3Config>,
    pub(crate) backend: Backend,
    pub(crate) peer: SocketAddr,
    pub(crate) id: String,
    conn: Conn,
    discarding: bool,
    /// The name given by USER, waiting for PASS.
    pub(crate) user: Option<String>,
    pub(crate) txn: Option<Transaction>,
    errors: u32,
    pub(crate) auth_failures: u32,
    shutdown: watch::Receiver<bool>,
}

impl Session {
    pub fn new(
        cfg: Arc<Pop3Config>,
        backend: Backend,
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
            discarding: false,
            user: None,
            txn: None,
            errors: 0,
            auth_failures: 0,
            shutdown,
        }
    }

    pub(crate) fn is_tls(&self) -> bool {
        self.conn.is_tls()
    }

    pub(crate) fn ok(&mut self, text: impl AsRef<str>) {
        match text.as_ref() {
            "" => self.line("+OK"),
            text => self.line(&format!("+OK {text}")),
        }
    }

    pub(crate) fn err(&mut self, code: Option<Code>, text: impl AsRef<str>) {
        match code {
            Some(c) => self.line(&format!("-ERR [{}] {}", c.as_str(), text.as_ref())),
            None => self.line(&format!("-ERR {}", text.as_ref())),
        }
    }

    pub(crate) fn line(&mut self, s: &str) {
        // Text never carries CR or LF: that would let input inject response lines.
        self.conn.wbuf.extend(s.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
        self.conn.wbuf.extend_from_slice(b"\r\n");
    }

    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        self.conn.wbuf.extend_from_slice(bytes);
    }

    /// Counts a protocol error; past the limit the session ends.
    pub(crate) fn error(&mut self, code: Option<Code>, text: impl AsRef<str>) -> Flow {
        self.err(code, text);
        self.errors += 1;
        if self.errors >= self.cfg.limits.max_errors {
            self.err(None, "Too many errors, closing connection");
            return Flow::Close;
        }
        Flow::Continue
    }

    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
        self.conn.flush().await
    }

    async fn fill(&mut self) -> std::io::Result<bool> {
        self.conn.fill(self.cfg.limits.idle_timeout).await
    }

    /// Reads one line of a SASL exchange (flushing the challenge first).
    pub(crate) async fn read_line(&mut self) -> std::io::Result<Option<String>> {
        self.flush().await?;
        loop {
            match next_line(&self.conn.rbuf, self.cfg.limits.max_line.max(1024)) {
                Decoded::Line(line, used) => {
                    let s = String::from_utf8_lossy(line).into_owned();
                    self.conn.rbuf.advance(used);
                    return Ok(Some(s));
                }
                Decoded::TooLong { .. } => {
                    // Said before the session closes, so the client knows why.
                    self.err(None, "Line too long");
                    return Ok(None);
                }
                Decoded::NeedMore => {
                    if !self.fill().await? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Enters the TRANSACTION state: takes the maildrop lease, keeps it renewed, and takes the
    /// snapshot. Answers the client either way.
    pub(crate) async fn login(&mut self, account: Account) -> Flow {
        let holder = format!("{}/{}", self.cfg.instance, self.id);
        let ttl = self.cfg.limits.lease_ttl.as_secs().max(3) as u32;
        match self.backend.lease(account.id, &holder, ttl).await {
            Ok(true) => {}
            Ok(false) => {
                self.err(Some(Code::InUse), "Maildrop is locked by another session");
                return Flow::Close;
            }
            Err(e) => {
                tracing::warn!(error = %e, "lease failed");
                self.err(Some(Code::SysTemp), "Mailbox unavailable, try again later");
                return Flow::Close;
            }
        }
        let maildrop = match self.backend.maildrop(account.id).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "maildrop snapshot failed");
                let _ = self.backend.release(account.id, &holder).await;
                self.err(Some(Code::SysTemp), "Mailbox unavailable, try again later");
                return Flow::Close;
            }
        };
        let renewal = {
            let (backend, account_id, holder) = (self.backend.clone(), account.id, holder.clone());
            tokio::spawn(async move {
                let every = Duration::from_secs(u64::from(ttl) / 3);
                loop {
                    tokio::time::sleep(every).await;
                    if let Err(e) = backend.lease(account_id, &holder, ttl).await {
                        tracing::warn!(error = %e, "renewing the maildrop lease failed");
                    }
                }
            })
        };
        let n = maildrop.messages.len();
        let octets: u64 = maildrop.messages.iter().map(|m| m.size).sum();
        tracing::info!(user = %account.address, messages = n, "logged in");
        self.txn = Some(Transaction { account, maildrop, deleted: vec![false; n], renewal });
        self.user = None;
        self.ok(format!("Maildrop has {n} messages ({octets} octets)"));
        Flow::Continue
    }

    async fn release_lease(&mut self) {
        if let Some(txn) = self.txn.take() {
            let holder = format!("{}/{}", self.cfg.instance, self.id);
            if let Err(e) = self.backend.release(txn.account.id, &holder).await {
                // The lease expires by itself; this only delays the next login a little.
                tracing::warn!(error = %e, "releasing the maildrop lease failed");
            }
        }
    }

    /// Runs the session to its end; the lease is released however it ends.
    pub async fn run(mut self, kind: ListenerKind) {
        let span = tracing::info_span!("pop3", id = %self.id, peer = %self.peer, listener = ?kind);
        let result = tracing::Instrument::instrument(self.serve(), span.clone()).await;
        if let Err(e) = result {
            tracing::debug!(parent: &span, error = %e, "connection ended");
        }
        self.release_lease().await;
        self.conn.close().await;
    }

    async fn serve(&mut self) -> std::io::Result<()> {
        self.ok(format!("{} Tern POP3 ready", self.cfg.hostname));
        loop {
            match next_line(&self.conn.rbuf, self.cfg.limits.max_line) {
                Decoded::Line(line, used) => {
                    if self.discarding {
                        self.discarding = false;
                        self.conn.rbuf.advance(used);
                        continue;
                    }
                    Metrics::global().command("pop3", verb(line, &COMMANDS));
                    let parsed = Command::parse(line);
                    self.conn.rbuf.advance(used);
                    if self.dispatch(parsed).await? == Flow::Close {
                        self.flush().await?;
                        return Ok(());
                    }
                }
                Decoded::TooLong { skip, ended } => {
                    self.conn.rbuf.advance(skip);
                    let first = !self.discarding;
                    self.discarding = !ended;
                    if first {
                        Metrics::global().command("pop3", "OTHER");
                    }
                    if first && self.error(None, "Line too long") == Flow::Close {
                        self.flush().await?;
                        return Ok(());
                    }
                }
                Decoded::NeedMore => {
                    self.flush().await?;
                    if *self.shutdown.borrow() {
                        self.err(Some(Code::SysTemp), "Server shutting down, try again later");
                        self.flush().await?;
                        return Ok(());
                    }
                    let mut shutdown = self.shutdown.clone();
                    let more = tokio::select! {
                        r = self.fill() => r,
                        () = tern_runtime::listener::stopped(&mut shutdown) => continue,
                    };
                    match more {
                        Ok(true) => {}
                        Ok(false) => return Ok(()),
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                            self.err(None, "Idle timeout, closing connection");
                            self.flush().await?;
                            return Ok(());
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    async fn dispatch(&mut self, parsed: Result<Command, ParseError>) -> std::io::Result<Flow> {
        let command = match parsed {
            Ok(c) => c,
            Err(ParseError::Unknown) => return Ok(self.error(None, "Unknown command")),
            Err(ParseError::Syntax(why)) => return Ok(self.error(None, format!("Syntax error: {why}"))),
        };
        tracing::trace!(command = command.name(), "command");
        if self.txn.is_some() { self.transaction(command).await } else { self.authorization(command).await }
    }
}
