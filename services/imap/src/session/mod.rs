//! One IMAP connection: reading commands (with literals), the NOT AUTHENTICATED,
//! AUTHENTICATED and SELECTED states, and the untagged updates that keep a client in step
//! with changes made by other sessions on any pod.
//!
//! Other sessions' changes arrive as events from the mailbox service in commit order. They are
//! turned into EXISTS, FETCH FLAGS and EXPUNGE (or VANISHED) responses at command boundaries and
//! during IDLE, never in the middle of a command, and never an EXPUNGE while a FETCH, STORE or
//! SEARCH runs, since it would renumber the messages that command is talking about (RFC 9051
//! section 7.5.1).

mod append;
mod auth;
mod context;
mod folders;
mod idle;
mod messages;
mod metadata;
mod notify;
mod response;
mod selected;
mod urlauth;
mod view;

use std::{net::SocketAddr, sync::Arc};

use bytes::{Buf, BytesMut};
use imap_codec::{
    decode::CommandDecodeError,
    imap_types::IntoStatic,
    imap_types::{
        command::CommandBody,
        core::{LiteralMode, Tag},
    },
};
use tern_proto::v1::{ErrorReason, mailbox_client::MailboxClient};
use tern_runtime::rpc::Channel;
use tern_runtime::{conn::Conn, metrics::Metrics, stream::Stream};
use tokio::sync::watch;

pub(crate) use crate::hub::Update;
use response::{Code, Kind, Response, Tagged};
use view::Modes;
pub(crate) use view::Selected;

use crate::{
    config::ImapConfig,
    extended::{Decoded, Extras},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Close,
}

/// The logged-in account.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub id: u64,
    pub address: String,
}

#[derive(Debug)]
pub struct Session {
    pub(crate) cfg: Arc<ImapConfig>,
    pub(crate) client: MailboxClient<Channel>,
    pub(crate) peer: SocketAddr,
    pub(crate) id: String,
    conn: Conn,
    /// The buffer length a granted literal needs before decoding is worth trying again.
    literal_wait: Option<usize>,
    pub(crate) account: Option<Account>,
    pub(crate) hub: crate::hub::Hub,
    pub(crate) updates: Option<crate::hub::Subscription>,
    pub(crate) selected: Option<Selected>,
    /// IMAP4rev2 enabled: UTF-8 mailbox names, no \Recent, ESEARCH-style answers.
    pub(crate) rev2: bool,
    pub(crate) utf8: bool,
    pub(crate) condstore: bool,
    /// QRESYNC enabled: expunges are reported as VANISHED.
    pub(crate) qresync: bool,
    /// What the command being answered asked for beyond the codec's syntax.
    pub(crate) extras: Extras,
    /// While a command on the selected mailbox runs, its tagged response waits here, so that
    /// the other sessions' changes sent at the end of the command come before it.
    held: Option<Vec<Tagged>>,
    /// What NOTIFY asked to be told of, while it is set (RFC 5465).
    pub(crate) notify: Option<notify::NotifyState>,
    /// CONDSTORE was just enabled with a mailbox selected: the command's tagged OK carries
    /// HIGHESTMODSEQ (RFC 7162 section 3.1).
    announce_highest_modseq: bool,
    errors: u32,
    pub(crate) auth_failures: u32,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// The commands whose zero samples exist from the start (every name [`command_name`] gives).
pub const COMMANDS: [&str; 44] = [
    "CAPABILITY",
    "NOOP",
    "LOGOUT",
    "STARTTLS",
    "AUTHENTICATE",
    "LOGIN",
    "SELECT",
    "EXAMINE",
    "UNSELECT",
    "CREATE",
    "DELETE",
    "RENAME",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "LIST",
    "LSUB",
    "STATUS",
    "APPEND",
    "CHECK",
    "CLOSE",
    "EXPUNGE",
    "SEARCH",
    "SORT",
    "THREAD",
    "FETCH",
    "STORE",
    "COPY",
    "MOVE",
    "IDLE",
    "ENABLE",
    "COMPRESS",
    "GETQUOTA",
    "GETQUOTAROOT",
    "SETQUOTA",
    "ID",
    "NAMESPACE",
    "UID FETCH",
    "UID STORE",
    "UID COPY",
    "UID MOVE",
    "UID SEARCH",
    "UID SORT",
    "UID THREAD",
    "UID EXPUNGE",
];

/// The `command` label of a command in `tern_commands_total`: the codec's name, which comes
/// from a fixed list, with `UID ` before the commands sent as UID commands.
fn command_name(body: &CommandBody<'_>) -> &'static str {
    match body {
        CommandBody::Fetch { uid: true, .. } => "UID FETCH",
        CommandBody::Store { uid: true, .. } => "UID STORE",
        CommandBody::Copy { uid: true, .. } => "UID COPY",
        CommandBody::Move { uid: true, .. } => "UID MOVE",
        CommandBody::Search { uid: true, .. } => "UID SEARCH",
        CommandBody::Sort { uid: true, .. } => "UID SORT",
        CommandBody::Thread { uid: true, .. } => "UID THREAD",
        CommandBody::ExpungeUid { .. } => "UID EXPUNGE",
        body => body.name(),
    }
}

/// What an incomplete command is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// The data of a literal of `length` octets, which ends at offset `end` of the input.
    Literal { end: usize, length: u32 },
    /// The end of a line, of which this many octets (after the last literal) are here.
    Line(usize),
}

/// The length of the literal a line announces at its end (`{n}`, `{n+}`, `~{n}`), if any.
fn literal_header(line: &[u8]) -> Option<u32> {
    crate::extended::literal_at_end(line).map(|(length, _)| length)
}

/// Follows the lines and announced literals of the command at the start of `input`.
fn scan_incomplete(input: &[u8]) -> Pending {
    let mut pos = 0;
    loop {
        let Some(nl) = input[pos..].iter().position(|b| *b == b'\n') else {
            return Pending::Line(input.len() - pos);
        };
        let line = &input[pos..pos + nl];
        pos += nl + 1;
        if let Some(length) = literal_header(line) {
            let end = pos.saturating_add(length as usize);
            if end > input.len() {
                return Pending::Literal { end, length };
            }
            pos = end;
        }
    }
}

/// What makes a complete command too large: a line (outside literals) over the line limit, or
/// a literal over the literal limit. Reads can be large enough to hold a whole command, so the
/// limits are checked on complete commands too, not only while one is still arriving.
#[derive(Debug, PartialEq, Eq)]
enum Oversize {
    Line,
    Literal,
}

fn oversize(command: &[u8], max_line: usize, max_literal: u32, max_literals: u64) -> Option<Oversize> {
    let mut pos = 0;
    let mut literals = 0u64;
    while let Some(nl) = command[pos..].iter().position(|b| *b == b'\n') {
        let line = &command[pos..pos + nl];
        pos += nl + 1;
        if line.len() > max_line {
            return Some(Oversize::Line);
        }
        if let Some(length) = literal_header(line) {
            literals += u64::from(length);
            if length > max_literal || literals > max_literals {
                return Some(Oversize::Literal);
            }
            pos = pos.saturating_add(length as usize).min(command.len());
        }
    }
    None
}

/// Where the command at the start of `input` ends: after its first line and after every
/// literal (with the line that follows it) whose data is already in `input`. None when the
/// line the command ends with has not all arrived yet.
fn command_end(input: &[u8]) -> Option<usize> {
    let mut pos = 0;
    loop {
        let nl = input[pos..].iter().position(|b| *b == b'\n')?;
        let line = &input[pos..pos + nl];
        pos += nl + 1;
        match literal_header(line) {
            Some(length) if pos.saturating_add(length as usize) <= input.len() => pos += length as usize,
            _ => return Some(pos),
        }
    }
}

impl Session {
    pub fn new(
        cfg: Arc<ImapConfig>,
        client: MailboxClient<Channel>,
        hub: crate::hub::Hub,
        stream: Stream,
        peer: SocketAddr,
        early: BytesMut,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            cfg,
            client,
            hub,
            peer,
            id: tern_runtime::conn::session_id(),
            conn: Conn::new(stream, early),
            literal_wait: None,
            account: None,
            updates: None,
            selected: None,
            notify: None,
            rev2: false,
            utf8: false,
            condstore: false,
            qresync: false,
            extras: Extras::default(),
            held: None,
            announce_highest_modseq: false,
            errors: 0,
            auth_failures: 0,
            shutdown,
        }
    }

    pub(crate) fn is_tls(&self) -> bool {
        self.conn.is_tls()
    }

    /// Sends an untagged response (or a continuation request).
    pub(crate) fn send(&mut self, response: Response) {
        response.encode(&mut self.conn.wbuf);
    }

    /// Sends untagged responses in their order.
    pub(crate) fn send_all(&mut self, responses: Vec<Response>) {
        for r in responses {
            self.send(r);
        }
    }

    /// What the client enabled that changes the form of the selected folder's updates.
    pub(crate) fn modes(&self) -> Modes {
        Modes { condstore: self.condstore, qresync: self.qresync }
    }

    pub(crate) fn ok(&mut self, tag: &Tag<'_>, text: impl Into<std::borrow::Cow<'static, str>>) {
        self.tagged(Tagged::new(tag, Kind::Ok, None, text));
    }

    pub(crate) fn ok_code(&mut self, tag: &Tag<'_>, code: Code, text: impl Into<std::borrow::Cow<'static, str>>) {
        self.tagged(Tagged::new(tag, Kind::Ok, Some(code), text));
    }

    pub(crate) fn no(&mut self, tag: &Tag<'_>, text: impl Into<std::borrow::Cow<'static, str>>) {
        self.tagged(Tagged::new(tag, Kind::No, None, text));
    }

    pub(crate) fn no_code(&mut self, tag: &Tag<'_>, code: Code, text: impl Into<std::borrow::Cow<'static, str>>) {
        self.tagged(Tagged::new(tag, Kind::No, Some(code), text));
    }

    pub(crate) fn bad(&mut self, tag: &Tag<'_>, text: impl Into<std::borrow::Cow<'static, str>>) -> Flow {
        self.tagged(Tagged::new(tag, Kind::Bad, None, text));
        self.count_error()
    }

    fn tagged(&mut self, response: Tagged) {
        match self.held.as_mut() {
            Some(held) => held.push(response),
            None => response.encode(&mut self.conn.wbuf),
        }
    }

    /// Holds tagged responses back until [`Session::release_tagged`].
    pub(crate) fn hold_tagged(&mut self) {
        self.held.get_or_insert_with(Vec::new);
    }

    /// Writes the held tagged responses, after every untagged one the command produced.
    pub(crate) fn release_tagged(&mut self) {
        let Some(held) = self.held.take() else { return };
        for mut response in held {
            if std::mem::take(&mut self.announce_highest_modseq)
                && let Some(highest) = self.selected.as_ref().map(|s| s.highest_modseq)
            {
                if response.kind == Kind::Ok && !response.has_code() {
                    response.code = Some(Code::HighestModSeq(highest));
                } else {
                    // A tagged response with a response code of its own, or a failure: the
                    // code goes in an untagged OK before it.
                    self.send(Response::ok(Some(Code::HighestModSeq(highest)), "Highest"));
                }
            }
            response.encode(&mut self.conn.wbuf);
        }
    }

    /// Enables CONDSTORE, as ENABLE does and as the commands that use MODSEQ do implicitly
    /// (RFC 7162 section 3.1). When a mailbox is selected, the client learns its
    /// HIGHESTMODSEQ with the command's tagged response.
    pub(crate) fn enable_condstore(&mut self) {
        if !self.condstore && self.selected.is_some() {
            self.announce_highest_modseq = true;
        }
        self.condstore = true;
    }

    fn count_error(&mut self) -> Flow {
        self.errors += 1;
        if self.errors >= self.cfg.limits.max_errors {
            self.send(Response::bye(None, "Too many errors"));
            return Flow::Close;
        }
        Flow::Continue
    }

    /// Answers a failed call to the mailbox service with the response code its reason calls
    /// for.
    pub(crate) fn failed(&mut self, tag: &Tag<'_>, status: &tonic::Status) {
        let code = match ErrorReason::of(status) {
            ErrorReason::NotFound => "NONEXISTENT",
            ErrorReason::AlreadyExists => "ALREADYEXISTS",
            ErrorReason::OverQuota => "OVERQUOTA",
            ErrorReason::TooLarge => "TOOBIG",
            ErrorReason::InvalidArgument | ErrorReason::NotAllowed => "CANNOT",
            ErrorReason::Modified => "MODIFIED",
            ErrorReason::AuthFailed | ErrorReason::Suspended => "AUTHENTICATIONFAILED",
            _ => "UNAVAILABLE",
        };
        if code == "UNAVAILABLE" {
            tracing::warn!(error = %status.message(), "mailbox service call failed");
        }
        self.no_code(tag, Code::Atom(code), status.message().to_string());
    }

    /// Answers a failed write into a folder named by the client: a folder that does not exist
    /// is TRYCREATE (RFC 9051 section 7.1), so that the client may create it and try again.
    pub(crate) fn failed_into(&mut self, tag: &Tag<'_>, status: &tonic::Status) {
        match ErrorReason::of(status) {
            ErrorReason::NotFound => self.no_code(tag, Code::TryCreate, status.message().to_string()),
            _ => self.failed(tag, status),
        }
    }

    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
        self.conn.flush().await
    }

    /// Reads more input; an error of kind `TimedOut` means the autologout timer ran out.
    pub(crate) async fn fill(&mut self) -> std::io::Result<bool> {
        self.conn.fill(self.cfg.limits.idle_timeout).await
    }

    pub(crate) async fn conn_start_tls(&mut self, tls: Arc<rustls::ServerConfig>) -> std::io::Result<()> {
        self.conn.start_tls(tls, std::time::Duration::from_secs(30)).await
    }

    /// COMPRESS DEFLATE (RFC 4978): the tagged OK is the last thing sent uncompressed.
    pub(crate) async fn compress(&mut self, tag: &Tag<'_>) -> std::io::Result<Flow> {
        if self.conn.is_compressed() {
            self.no_code(tag, Code::CompressionActive, "DEFLATE is active already");
            return Ok(Flow::Continue);
        }
        self.ok(tag, "DEFLATE active");
        self.flush().await?;
        self.conn.start_deflate()?;
        Ok(Flow::Continue)
    }

    pub(crate) fn input(&mut self) -> &mut BytesMut {
        &mut self.conn.rbuf
    }

    /// Starts following the account's changes. Called at login, before any SELECT, so no
    /// change committed after a snapshot can be missed: the subscription is in place when this
    /// returns.
    pub(crate) async fn start_updates(&mut self, account: u64) {
        self.updates = match self.hub.subscribe(account).await {
            Ok(s) => Some(s),
            Err(e) => {
                // Without a feed the session still works; it resynchronises at every command.
                tracing::warn!(error = %e, "cannot follow the account's changes");
                None
            }
        };
    }

    /// Runs the session to its end.
    pub async fn run(mut self) {
        let span = tracing::info_span!("imap", id = %self.id, peer = %self.peer, user = tracing::field::Empty);
        let result = tracing::Instrument::instrument(self.serve(), span.clone()).await;
        if let Err(e) = result {
            tracing::debug!(parent: &span, error = %e, "connection ended");
        }
        self.conn.close().await;
    }

    pub(crate) fn capabilities(&self) -> Vec<String> {
        let mut caps = vec!["IMAP4rev2", "IMAP4rev1"];
        if self.account.is_none() {
            if self.cfg.tls.is_some() && !self.is_tls() {
                caps.push("STARTTLS");
            }
            if self.is_tls() || self.cfg.allow_plaintext_auth {
                caps.extend(["AUTH=PLAIN", "SASL-IR"]);
            } else {
                caps.push("LOGINDISABLED");
            }
        }
        caps.extend([
            "LITERAL+",
            "ENABLE",
            "IDLE",
            "UIDPLUS",
            "MOVE",
            "UNSELECT",
            "NAMESPACE",
            "ID",
            "CONDSTORE",
            "QRESYNC",
            "SPECIAL-USE",
            "STATUS=SIZE",
            "QUOTA",
            "QUOTA=RES-STORAGE",
            "BINARY",
            "ESEARCH",
            "LIST-EXTENDED",
            "LIST-STATUS",
            "OBJECTID",
            "SORT",
            "SORT=DISPLAY",
            "ESORT",
            "THREAD=ORDEREDSUBJECT",
            "THREAD=REFERENCES",
            "THREAD=REFS",
            "WITHIN",
            "UTF8=ACCEPT",
            "PREVIEW",
            "SEARCHRES",
            // SEARCH and SORT RETURN (PARTIAL) and the FETCH modifier of RFC 9394: a client
            // that sees it may page through UID FETCH 1:* (PARTIAL -1:-50).
            "PARTIAL",
            "MULTIAPPEND",
            "CATENATE",
            "SAVEDATE",
            "METADATA",
            "CONTEXT=SEARCH",
            "CONTEXT=SORT",
            "URLAUTH",
            "URL-PARTIAL",
            "NOTIFY",
        ]);
        if self.account.is_some() && !self.conn.is_compressed() {
            caps.push("COMPRESS=DEFLATE");
        }
        let mut caps: Vec<String> = caps.into_iter().map(String::from).collect();
        caps.push(format!("APPENDLIMIT={}", self.cfg.limits.max_literal));
        caps
    }

    async fn serve(&mut self) -> std::io::Result<()> {
        let caps = self.capabilities();
        let greeting = format!("{} Tern IMAP ready", self.cfg.hostname);
        self.send(Response::ok(Some(Code::Capability(caps)), greeting));
        loop {
            if self.literal_wait.is_some_and(|need| self.conn.rbuf.len() < need) {
                if !self.read_more().await? {
                    return Ok(());
                }
                continue;
            }
            self.literal_wait = None;
            if self.conn.rbuf.is_empty() {
                if !self.read_more().await? {
                    return Ok(());
                }
                continue;
            }
            match crate::extended::decode(&self.conn.rbuf) {
                Ok((used, command)) => {
                    let limits = &self.cfg.limits;
                    match oversize(
                        &self.conn.rbuf[..used],
                        limits.max_line,
                        limits.max_literal,
                        limits.max_command_literals,
                    ) {
                        Some(Oversize::Literal) => {
                            // The data came with the command (LITERAL+): refuse and close.
                            self.send(Response::bye(Some(Code::TooBig), "Literal too large"));
                            self.flush().await?;
                            return Ok(());
                        }
                        Some(Oversize::Line) => {
                            Metrics::global().command("imap", "OTHER");
                            self.conn.rbuf.advance(used);
                            self.send(Response::bad("Command line too long"));
                            if self.count_error() == Flow::Close {
                                self.flush().await?;
                                return Ok(());
                            }
                            continue;
                        }
                        None => {}
                    }
                    self.conn.rbuf.advance(used);
                    if self.dispatch(command).await? == Flow::Close {
                        self.flush().await?;
                        return Ok(());
                    }
                }
                Err(CommandDecodeError::Incomplete) => {
                    // The codec reports a literal only when the input ends right after its
                    // announcement; when some of its data came along (LITERAL+, or a split
                    // read), the command is just incomplete, and the literal is found here.
                    match scan_incomplete(&self.conn.rbuf) {
                        Pending::Literal { length, end }
                            if length > self.cfg.limits.max_literal
                                || end as u64 > self.cfg.limits.max_command_literals =>
                        {
                            // The client is already sending the data: close, as for LITERAL+.
                            self.send(Response::bye(Some(Code::TooBig), "Literal too large"));
                            self.flush().await?;
                            return Ok(());
                        }
                        Pending::Literal { end, .. } => self.literal_wait = Some(end),
                        // Only the text outside literals counts against the line limit.
                        Pending::Line(len) if len > self.cfg.limits.max_line => {
                            self.send(Response::bad("Command line too long"));
                            self.conn.rbuf.clear();
                            if self.count_error() == Flow::Close {
                                self.flush().await?;
                                return Ok(());
                            }
                            // The rest of the line is skipped as it arrives, not read as a command.
                            if !self.skip_line().await? {
                                return Ok(());
                            }
                            continue;
                        }
                        Pending::Line(_) => {}
                    }
                    if !self.read_more().await? {
                        return Ok(());
                    }
                }
                Err(CommandDecodeError::LiteralFound { tag, length, mode }) => {
                    // A MULTIAPPEND holds all its messages until the last one is here.
                    let command_total = self.conn.rbuf.len() as u64 + u64::from(length);
                    let whole_too_big = command_total > self.cfg.limits.max_command_literals;
                    if length > self.cfg.limits.max_literal || whole_too_big {
                        let tag = tag.into_static();
                        if mode == LiteralMode::NonSync {
                            // The client is already sending the data; the only safe way out is
                            // to close the connection.
                            self.send(Response::bye(Some(Code::TooBig), "Literal too large"));
                            self.flush().await?;
                            return Ok(());
                        }
                        // Not held: this answer ends a command that never ran.
                        let text = if whole_too_big {
                            let limit = self.cfg.limits.max_command_literals;
                            format!("The literals of this command exceed the limit of {limit} octets")
                        } else {
                            format!("Literal exceeds the limit of {} octets", self.cfg.limits.max_literal)
                        };
                        Tagged::new(&tag, Kind::No, Some(Code::TooBig), text).encode(&mut self.conn.wbuf);
                        // The announced literal never arrives. The codec reports a literal only
                        // when the input ends with its announcement, so all that is here is the
                        // command (with the messages of a MULTIAPPEND before this one): drop it.
                        self.conn.rbuf.clear();
                        continue;
                    }
                    if mode == LiteralMode::Sync {
                        self.send(Response::Continue("Ready for literal data"));
                        self.flush().await?;
                    }
                    self.literal_wait = Some(self.conn.rbuf.len() + length as usize);
                }
                Err(CommandDecodeError::Failed) => {
                    Metrics::global().command("imap", "OTHER");
                    // Skip the broken command, with the literals it announced that are here
                    // already (their data must not be read as commands); answer with its tag
                    // when one can be read.
                    let first =
                        self.conn.rbuf.iter().position(|b| *b == b'\n').map(|i| i + 1).unwrap_or(self.conn.rbuf.len());
                    let line = String::from_utf8_lossy(&self.conn.rbuf[..first]).into_owned();
                    let end = command_end(&self.conn.rbuf);
                    self.conn.rbuf.advance(end.unwrap_or(self.conn.rbuf.len()));
                    // A line that is only a tag still has one.
                    let tag =
                        line.trim_end_matches(['\r', '\n']).split(' ').next().filter(|t| {
                            !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic() && b != b'+' && b != b'*')
                        });
                    match tag {
                        Some(t) => {
                            let bad =
                                Tagged { tag: t.to_string(), kind: Kind::Bad, code: None, text: "Syntax error".into() };
                            bad.encode(&mut self.conn.wbuf);
                        }
                        None => self.send(Response::bad("Syntax error")),
                    }
                    if self.count_error() == Flow::Close {
                        self.flush().await?;
                        return Ok(());
                    }
                    // The codec can fail before the whole line is here: the rest of it is part
                    // of the broken command, not a command of its own.
                    if end.is_none() && !self.skip_line().await? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Skips input up to the end of the current line, all of which is still to come; false
    /// when the connection ended meanwhile.
    pub(crate) async fn skip_line(&mut self) -> std::io::Result<bool> {
        loop {
            if let Some(i) = self.conn.rbuf.iter().position(|b| *b == b'\n') {
                self.conn.rbuf.advance(i + 1);
                return Ok(true);
            }
            self.conn.rbuf.clear();
            if !self.read_more().await? {
                return Ok(false);
            }
        }
    }

    /// Flushes and waits for more input, answering autologout and shutdown; false to end.
    async fn read_more(&mut self) -> std::io::Result<bool> {
        self.flush().await?;
        if *self.shutdown.borrow() {
            self.send(Response::bye(None, "Server shutting down, reconnect later"));
            self.flush().await?;
            return Ok(false);
        }
        let mut shutdown = self.shutdown.clone();
        // With NOTIFY set, changes are told as they happen, also between commands (RFC 5465
        // section 1); not while a command is half read, whose literal the client is sending.
        let listen = self.notify.is_some() && self.conn.rbuf.is_empty() && self.updates.is_some();
        let more = loop {
            let mut rx = if listen { self.updates.take() } else { None };
            let event = async {
                match rx.as_mut() {
                    Some(rx) => rx.next().await,
                    None => std::future::pending().await,
                }
            };
            let outcome = tokio::select! {
                r = self.fill() => Some(r),
                update = event => {
                    self.updates = rx.take();
                    match update {
                        Update::Event(e) => {
                            // EXISTS and FETCH of the selected mailbox may go out now; its
                            // EXPUNGEs wait for a command, as RFC 3501 section 7.4.1 asks.
                            self.apply(&e);
                            self.notify_other(&e).await;
                        }
                        Update::Resync => self.sync_updates(false).await,
                    }
                    self.flush().await?;
                    None
                }
                () = tern_runtime::listener::stopped(&mut shutdown) => {
                    self.send(Response::bye(None, "Server shutting down, reconnect later"));
                    self.flush().await?;
                    return Ok(false);
                }
            };
            if rx.is_some() {
                self.updates = rx;
            }
            if let Some(r) = outcome {
                break r;
            }
        };
        match more {
            Ok(more) => Ok(more),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                self.send(Response::bye(None, "Autologout: idle for too long"));
                self.flush().await?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    async fn dispatch(&mut self, command: Decoded) -> std::io::Result<Flow> {
        let name = match &command {
            Decoded::Command(command, _) => command_name(&command.body),
            Decoded::List(_) => "LIST",
            Decoded::Append(_) => "APPEND",
            Decoded::CancelUpdate { .. } | Decoded::UrlAuth(_) | Decoded::Notify(_) => "OTHER",
            // Counted as the broken commands the codec refuses are.
            Decoded::Refused { .. } => "OTHER",
        };
        Metrics::global().command("imap", name);
        let command = match command {
            Decoded::Command(command, extras) => {
                self.extras = extras;
                command
            }
            Decoded::List(list) if self.account.is_some() => return Ok(self.list(list).await),
            Decoded::List(list) => return Ok(self.bad(&list.tag, "Log in first")),
            Decoded::Refused { tag, text } => return Ok(self.bad(&tag, text)),
            Decoded::Append(append) if self.account.is_some() => {
                self.hold_tagged();
                let flow = self.append(append).await;
                self.release_tagged();
                return Ok(flow);
            }
            Decoded::Append(append) => return Ok(self.bad(&append.tag, "Log in first")),
            Decoded::CancelUpdate { tag, tags } => return Ok(self.cancel_update(&tag, &tags)),
            Decoded::UrlAuth(command) if self.account.is_some() => return Ok(self.urlauth(command).await),
            Decoded::UrlAuth(command) => return Ok(self.bad(command.tag(), "Log in first")),
            Decoded::Notify(command) if self.account.is_some() => return Ok(self.notify(command).await),
            Decoded::Notify(
                crate::notify::NotifyCommand::None { tag } | crate::notify::NotifyCommand::Set { tag, .. },
            ) => {
                return Ok(self.bad(&tag, "Log in first"));
            }
        };
        let tag = command.tag.clone();
        tracing::trace!(command = command.body.name(), "command");
        let logged_in = self.account.is_some();
        let flow = match command.body {
            CommandBody::Capability => {
                let caps = self.capabilities();
                self.send(Response::Capability(caps));
                self.ok(&tag, "CAPABILITY completed");
                Flow::Continue
            }
            CommandBody::Noop => {
                self.sync_updates(true).await;
                self.ok(&tag, "NOOP completed");
                Flow::Continue
            }
            CommandBody::Logout => {
                if let Some(a) = &self.account {
                    tracing::info!(user = %a.address, "logged out");
                }
                self.send(Response::bye(None, "Logging out"));
                self.ok(&tag, "LOGOUT completed");
                Flow::Close
            }
            CommandBody::Id { .. } => {
                self.send(Response::Id);
                self.ok(&tag, "ID completed");
                Flow::Continue
            }
            CommandBody::StartTLS => self.starttls(&tag).await?,
            CommandBody::Login { username, password } if !logged_in => {
                let user = String::from_utf8_lossy(username.as_ref()).into_owned();
                let pass = String::from_utf8_lossy(password.declassify().as_ref()).into_owned();
                self.login(&tag, user, pass).await
            }
            CommandBody::Authenticate { mechanism, initial_response } if !logged_in => {
                self.authenticate(&tag, mechanism, initial_response).await?
            }
            CommandBody::Login { .. } | CommandBody::Authenticate { .. } => self.bad(&tag, "Already authenticated"),
            _ if !logged_in => self.bad(&tag, "Log in first"),
            // COMPRESS's tagged OK is the last thing sent uncompressed: it cannot wait.
            body @ CommandBody::Compress { .. } => self.authenticated(&tag, body).await?,
            body => {
                // Other sessions' changes go out at the end of every command (expunges only
                // after commands that do not refer to messages by number), before its tagged
                // response.
                self.hold_tagged();
                let flow = self.authenticated(&tag, body).await;
                self.release_tagged();
                flow?
            }
        };
        Ok(flow)
    }
}

#[cfg(test)]
mod tests {
    use super::{Pending, command_end, literal_header, scan_incomplete};

    #[test]
    fn literal_headers() {
        assert_eq!(literal_header(b"a APPEND INBOX {12}\r"), Some(12));
        assert_eq!(literal_header(b"a APPEND INBOX {12+}"), Some(12));
        assert_eq!(literal_header(b"a APPEND INBOX ~{0}\r"), Some(0));
        assert_eq!(literal_header(b"a LOGIN x {}"), None);
        assert_eq!(literal_header(b"a LOGIN x {1a}"), None);
        assert_eq!(literal_header(b"a NOOP"), None);
        assert_eq!(literal_header(b"a SEARCH TEXT x{5}"), None);
        assert_eq!(literal_header(b"a FETCH 1 BODY[HEADER.FIELDS ({7}"), Some(7));
    }

    #[test]
    fn incomplete_commands() {
        // Part of a LITERAL+ literal is here: wait for exactly the rest.
        assert_eq!(scan_incomplete(b"a APPEND INBOX {10+}\r\nhello"), Pending::Literal { end: 32, length: 10 });
        // The literal is complete, the line after it is not: only that part is a line.
        assert_eq!(scan_incomplete(b"a APPEND INBOX {5+}\r\nhello (x"), Pending::Line(3));
        assert_eq!(scan_incomplete(b"a LOGIN {1}\r\nx {3}\r\nab"), Pending::Literal { end: 23, length: 3 });
        assert_eq!(scan_incomplete(b"a NOOP"), Pending::Line(6));
    }

    #[test]
    fn broken_commands_end_after_their_literals() {
        assert_eq!(command_end(b"a FOO\r\nb NOOP\r\n"), Some(7));
        assert_eq!(command_end(b"a FOO {5+}\r\nhello\r\nb NOOP\r\n"), Some(19));
        assert_eq!(command_end(b"a FOO {5+}\r\nhel"), Some(12));
        assert_eq!(command_end(b"a FOO {5+}\r\nhello"), None);
        assert_eq!(command_end(b"a FOO x"), None);
    }
}
