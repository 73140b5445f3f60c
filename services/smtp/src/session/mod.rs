//! One SMTP connection: its state machine and the loop that reads commands, answers them, and
//! reads message data. Each command has its own file in this module.
//!
//! Commands are answered in the order they arrive; replies of pipelined commands (RFC 2920) are
//! collected and written together when the client's buffer runs dry or a command must wait for
//! the client (DATA's 354, AUTH challenges, STARTTLS).

mod auth;
mod bdat;
mod data;
mod ehlo;
mod greet;
mod mail;
mod rcpt;
mod simple;
mod spam;
mod starttls;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::{Buf, BytesMut};
use tern_runtime::{
    conn::Conn,
    metrics::{Metrics, verb},
    stream::Stream,
};

use crate::{
    backend::{Account, Backend},
    codec::{Command, Decoded, MailParams, ParseError, Path, RcptParams, Reply, next_line},
    config::{ListenerKind, SmtpConfig},
};

/// The verbs counted by name in `tern_commands_total`; any other line counts as `OTHER`.
pub const COMMANDS: [&str; 14] = [
    "EHLO", "HELO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP", "STARTTLS", "AUTH",
];

/// What the loop does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Close,
}

/// A recipient accepted by RCPT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recipient {
    pub path: Path,
    pub params: RcptParams,
    /// Delivered here, or queued for the relay.
    pub local: bool,
    /// A local recipient's spam settings (the default for others).
    pub spam: crate::spam::RecipientSpam,
}

/// The mail transaction between MAIL and the end of data.
#[derive(Debug, Clone, Default)]
pub(crate) struct Transaction {
    pub from: Option<Path>,
    pub params: MailParams,
    pub recipients: Vec<Recipient>,
    /// Chunks received by BDAT so far; `None` until the first BDAT.
    pub chunks: Option<Vec<u8>>,
    pub chunks_too_large: bool,
}

#[derive(Debug)]
pub struct Session<B: Backend> {
    pub(crate) cfg: Arc<SmtpConfig>,
    pub(crate) backend: Arc<B>,
    pub(crate) kind: ListenerKind,
    pub(crate) peer: SocketAddr,
    pub(crate) id: String,
    conn: Conn,
    /// Discarding the rest of an over-long line.
    discarding: bool,
    pub(crate) helo: Option<String>,
    pub(crate) esmtp: bool,
    pub(crate) account: Option<Account>,
    pub(crate) txn: Transaction,
    errors: u32,
    commands: u32,
    pub(crate) auth_failures: u32,
    shutdown: Option<tokio::sync::watch::Receiver<bool>>,
}

fn session_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{t:X}{:06X}", NEXT.fetch_add(1, Ordering::Relaxed) & 0xff_ffff)
}

impl<B: Backend> Session<B> {
    pub fn new(
        cfg: Arc<SmtpConfig>,
        backend: Arc<B>,
        kind: ListenerKind,
        stream: Stream,
        peer: SocketAddr,
        early: BytesMut,
    ) -> Self {
        Self {
            cfg,
            backend,
            kind,
            peer,
            id: session_id(),
            conn: Conn::new(stream, early),
            discarding: false,
            helo: None,
            esmtp: false,
            account: None,
            txn: Transaction::default(),
            errors: 0,
            commands: 0,
            auth_failures: 0,
            shutdown: None,
        }
    }

    /// When `shutdown` turns true, a session waiting for a command is told 421 and closed; a
    /// transaction in progress is allowed to finish first.
    pub fn with_shutdown(mut self, shutdown: tokio::sync::watch::Receiver<bool>) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    fn shutting_down(&self) -> bool {
        self.shutdown.as_ref().is_some_and(|s| *s.borrow())
    }

    /// Waits for more input, or for shutdown while no transaction is open.
    async fn fill_or_shutdown(&mut self) -> std::io::Result<Option<bool>> {
        let idle = self.cfg.limits.idle_timeout;
        let Some(mut shutdown) = self.shutdown.clone().filter(|_| self.txn.from.is_none()) else {
            return self.fill(idle).await.map(Some);
        };
        tokio::select! {
            r = self.fill(idle) => r.map(Some),
            () = tern_runtime::listener::stopped(&mut shutdown) => Ok(None),
        }
    }

    pub(crate) fn is_tls(&self) -> bool {
        self.conn.is_tls()
    }

    /// Queues a reply. Every reply of a session goes through here, so this is where replies
    /// are counted.
    pub(crate) fn reply(&mut self, r: Reply) {
        Metrics::global().smtp_reply(r.code);
        r.encode(self.esmtp, &mut self.conn.wbuf);
    }

    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
        self.conn.flush().await
    }

    /// Reads more input; false at end of stream.
    pub(crate) async fn fill(&mut self, timeout: Duration) -> std::io::Result<bool> {
        self.conn.fill(timeout).await
    }

    /// Reads one line for an AUTH exchange (flushing the challenge first).
    pub(crate) async fn read_line(&mut self) -> std::io::Result<Option<String>> {
        self.flush().await?;
        loop {
            match next_line(&self.conn.rbuf, self.cfg.limits.max_line) {
                Decoded::Line(line, used) => {
                    let s = String::from_utf8_lossy(line).into_owned();
                    self.conn.rbuf.advance(used);
                    return Ok(Some(s));
                }
                Decoded::TooLong { .. } => return Ok(None),
                Decoded::NeedMore => {
                    if !self.fill(self.cfg.limits.idle_timeout).await? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Counts a protocol error; past the limit the session is closed.
    pub(crate) fn error(&mut self, r: Reply) -> Flow {
        self.reply(r);
        self.errors += 1;
        if self.errors >= self.cfg.limits.max_errors {
            self.reply(Reply::new(421, "4.7.0", "Too many errors, closing connection"));
            return Flow::Close;
        }
        Flow::Continue
    }

    /// Runs the session to its end. I/O errors end it quietly (the client went away).
    pub async fn run(mut self) {
        let span = tracing::info_span!("smtp", id = %self.id, peer = %self.peer, listener = ?self.kind);
        let result = tracing::Instrument::instrument(self.serve(), span.clone()).await;
        if let Err(e) = result {
            tracing::debug!(parent: &span, error = %e, "connection ended");
        }
        self.conn.close().await;
    }

    async fn serve(&mut self) -> std::io::Result<()> {
        if self.greet().await? == Flow::Close {
            self.flush().await?;
            return Ok(());
        }
        loop {
            match next_line(&self.conn.rbuf, self.cfg.limits.max_line) {
                Decoded::Line(line, used) => {
                    if self.discarding {
                        // The tail of an over-long line: it was answered already.
                        self.discarding = false;
                        self.conn.rbuf.advance(used);
                        continue;
                    }
                    Metrics::global().command(self.kind.protocol(), verb(line, &COMMANDS));
                    let parsed = Command::parse(line);
                    self.conn.rbuf.advance(used);
                    if self.dispatch(parsed).await? == Flow::Close {
                        self.flush().await?;
                        return Ok(());
                    }
                }
                Decoded::TooLong { skip, ended } => {
                    self.conn.rbuf.advance(skip);
                    // One error per long line, however many reads it takes to get past it.
                    let first = !self.discarding;
                    self.discarding = !ended;
                    if first {
                        Metrics::global().command(self.kind.protocol(), "OTHER");
                    }
                    if first && self.error(Reply::new(500, "5.5.2", "Line too long")) == Flow::Close {
                        self.flush().await?;
                        return Ok(());
                    }
                }
                Decoded::NeedMore => {
                    self.flush().await?;
                    if self.shutting_down() && self.txn.from.is_none() {
                        self.reply(Reply::new(421, "4.3.2", "Service shutting down, try again later"));
                        self.flush().await?;
                        return Ok(());
                    }
                    match self.fill_or_shutdown().await {
                        Ok(Some(true)) => {}
                        Ok(Some(false)) => return Ok(()),
                        // Shutdown began while waiting: the check above answers 421.
                        Ok(None) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                            self.reply(Reply::new(421, "4.4.2", "Idle timeout, closing connection"));
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
        self.commands += 1;
        let command = match parsed {
            Ok(c) => c,
            Err(ParseError::Unknown) => return Ok(self.error(Reply::new(500, "5.5.2", "Command not recognized"))),
            Err(ParseError::Parameter(p)) => {
                return Ok(self.error(Reply::new(555, "5.5.4", format!("Unsupported parameter {p}"))));
            }
            Err(ParseError::Syntax(why)) => {
                return Ok(self.error(Reply::new(501, "5.5.4", format!("Syntax error: {why}"))));
            }
        };
        if self.kind.is_submission()
            && self.account.is_none()
            && self.commands > self.cfg.limits.max_commands_before_auth
        {
            self.reply(Reply::new(421, "4.7.0", "Too many commands without authentication"));
            return Ok(Flow::Close);
        }
        tracing::trace!(?command, "command");
        Ok(match command {
            Command::Ehlo(host) => self.ehlo(host, true),
            Command::Helo(host) => self.ehlo(host, false),
            Command::Mail(path, params) => self.mail(path, params).await,
            Command::Rcpt(path, params) => self.rcpt(path, params).await,
            Command::Data => self.data().await?,
            Command::Bdat { size, last } => self.bdat(size, last).await?,
            Command::Rset => self.rset(),
            Command::Noop => self.noop(),
            Command::Quit => self.quit(),
            Command::Vrfy(_) => self.vrfy(),
            Command::Expn(_) => self.expn(),
            Command::Help => self.help(),
            Command::StartTls => self.starttls().await?,
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial).await?,
        })
    }

    /// Consumes `n` raw bytes (a BDAT chunk) into `sink` (None discards them).
    pub(crate) async fn read_exact_into(&mut self, mut n: u64, mut sink: Option<&mut Vec<u8>>) -> std::io::Result<()> {
        let deadline = tokio::time::Instant::now() + self.cfg.limits.data_timeout;
        loop {
            let take = (self.conn.rbuf.len() as u64).min(n) as usize;
            if let Some(s) = sink.as_deref_mut() {
                s.extend_from_slice(&self.conn.rbuf[..take]);
            }
            self.conn.rbuf.advance(take);
            n -= take as u64;
            if n == 0 {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !self.fill(left).await? {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed inside BDAT"));
            }
        }
    }

    pub(crate) async fn start_tls(&mut self, tls: std::sync::Arc<rustls::ServerConfig>) -> std::io::Result<()> {
        self.conn.start_tls(tls, self.cfg.limits.idle_timeout).await
    }

    pub(crate) fn input(&mut self) -> &mut BytesMut {
        &mut self.conn.rbuf
    }

    pub(crate) fn tls_description(&self) -> Option<String> {
        self.conn.tls_description()
    }
}
