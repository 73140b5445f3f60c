//! A harness for end-to-end tests of the IMAP front-end over real loopback sockets.
//!
//! [`ImapTestServer::start`] starts a mailbox service ([`TestServer`]) and, in the same process,
//! the IMAP server of `tern-imap` talking to it over gRPC, with an `imap` listener (plain text,
//! STARTTLS offered) and an `imaps` listener (implicit TLS) on free `127.0.0.1` ports. The
//! certificate is a development certificate made for the test; [`ImapTestServer::tls_connector`]
//! trusts it. Every server starts with the accounts of [`ACCOUNTS`] and their default folders.
//!
//! [`ImapTestServer::start_frontend`] starts another IMAP server against the same mailbox
//! service, as a second pod would be, for what must hold across front-ends (other sessions'
//! changes in IDLE). [`ImapTestServer::deliver`] delivers through the mailbox Deliver RPC, as
//! SMTP does; [`ImapTestServer::start_mx`] puts a real SMTP MX listener in front of the same
//! mailbox.
//!
//! [`ImapClient`] speaks IMAP as a client: tagged commands, untagged responses with their
//! literals, continuation requests, IDLE. Scripted sessions (transcripts) use the generic runner
//! of [`crate::smtp`]; [`ImapTranscript`] reads the IMAP directives of a transcript file.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use tern_imap::{
    config::{ImapConfig, Limits, ListenerKind},
    server::Listener,
};
use tern_proto::v1::{Folder, MessageSummary};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsConnector;

pub use crate::common::{ACCOUNTS, IO_TIMEOUT, transcript_files};
use crate::{
    Mailbox, TestServer,
    common::{
        Background, DevCert, FrontendOptions, ServedTranscript, account_id_in, bind_loopback, create_accounts,
        deliver_one, mailbox_channel, password_in, port_and_plaintext_auth, select_folder, stored_body,
    },
    smtp::{BoxIo, Chunking, SmtpClient, Step, Transcript, run_steps},
};

/// The name the test server gives in its greeting.
pub const HOSTNAME: &str = "imap.test";

/// How long [`ImapFrontend::stop`] lets sessions finish.
const GRACE: Duration = Duration::from_secs(2);

/// How an [`ImapTestServer`] is configured (see [`FrontendOptions`]).
pub type ImapOptions = FrontendOptions<Limits>;

/// One IMAP server (one "pod") in front of the mailbox service.
#[derive(Debug)]
pub struct ImapFrontend {
    /// The plain-text listener (port 143 semantics, STARTTLS offered).
    pub imap: SocketAddr,
    /// The implicit-TLS listener (port 993 semantics).
    pub imaps: SocketAddr,
    server: Background,
}

impl ImapFrontend {
    /// The address of the listener of `kind`.
    pub fn addr(&self, kind: ListenerKind) -> SocketAddr {
        match kind {
            ListenerKind::Imap => self.imap,
            ListenerKind::Imaps => self.imaps,
        }
    }

    /// Stops the server gracefully: every session, IDLE included, is told (`* BYE`) and closed.
    pub async fn stop(&mut self) {
        self.server.stop().await;
    }
}

/// A mailbox service and an IMAP server in front of it, both on loopback.
#[derive(Debug)]
pub struct ImapTestServer {
    pub mailbox: TestServer,
    /// The first front-end; [`ImapTestServer::start_frontend`] makes more.
    pub frontend: ImapFrontend,
    /// The PEM file of the server's certificate, for clients that verify it.
    pub ca_cert: std::path::PathBuf,
    pub options: ImapOptions,
    accounts: HashMap<String, u64>,
    // Declared last: the certificate directory outlives the servers.
    cert: DevCert,
}

impl ImapTestServer {
    /// Starts the servers with `limits`, plain-text logins allowed or not, and lenient mailbox
    /// limits (see [`FrontendOptions::default`]).
    pub async fn start(limits: Limits, allow_plaintext_auth: bool) -> ImapTestServer {
        Self::start_with(ImapOptions { limits, allow_plaintext_auth, ..Default::default() }).await
    }

    pub async fn start_with(options: ImapOptions) -> ImapTestServer {
        let mailbox = TestServer::start_with_blobs(options.mailbox_limits.clone(), options.blobs.clone()).await;
        Self::start_on(mailbox, options).await
    }

    /// Starts an IMAP server in front of `mailbox` (a replica on NATS, say), with the test
    /// accounts created through it.
    pub async fn start_on(mailbox: TestServer, options: ImapOptions) -> ImapTestServer {
        let accounts = create_accounts(&mailbox, &ACCOUNTS).await;
        let cert = DevCert::new("tern-imap-test-");
        let frontend =
            start_frontend(mailbox.addr, options.limits.clone(), options.allow_plaintext_auth, &cert.server_config)
                .await;
        ImapTestServer { mailbox, frontend, ca_cert: cert.ca_cert.clone(), options, accounts, cert }
    }

    /// Another IMAP server against the same mailbox service, with the same settings, as another
    /// pod would be.
    pub async fn start_frontend(&self) -> ImapFrontend {
        let (limits, allow) = (self.options.limits.clone(), self.options.allow_plaintext_auth);
        start_frontend(self.mailbox.addr, limits, allow, &self.cert.server_config).await
    }

    /// Another IMAP server, with the same settings, in front of another mailbox replica.
    pub async fn start_frontend_on(&self, mailbox: SocketAddr) -> ImapFrontend {
        let (limits, allow) = (self.options.limits.clone(), self.options.allow_plaintext_auth);
        start_frontend(mailbox, limits, allow, &self.cert.server_config).await
    }

    /// An SMTP MX listener in front of the mailbox replica at `mailbox`.
    pub async fn start_mx_on(&self, mailbox: SocketAddr) -> (SocketAddr, Background) {
        crate::pop3::start_mx(mailbox, &self.cert.server_config).await
    }

    /// An SMTP MX listener (no AUTH, STARTTLS offered) in front of the same mailbox service,
    /// for delivering with a real SMTP client. Stops when the handle is dropped.
    pub async fn start_mx(&self) -> (SocketAddr, Background) {
        crate::pop3::start_mx(self.mailbox.addr, &self.cert.server_config).await
    }

    /// A TLS client configuration that trusts the server's certificate (and nothing else).
    pub fn tls_connector(&self) -> TlsConnector {
        crate::common::tls_connector(&self.ca_cert)
    }

    /// Runs a TLS handshake as a client over `stream`, verifying the server's certificate.
    pub async fn tls_handshake<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<S>> {
        crate::common::tls_handshake(&self.ca_cert, stream).await
    }

    /// A new connection to the listener of `kind` of `frontend`, with the TLS handshake done
    /// for implicit TLS, as a boxed stream; the greeting is not read yet.
    pub async fn connect_io(&self, frontend: &ImapFrontend, kind: ListenerKind) -> BoxIo {
        let implicit_tls = (kind == ListenerKind::Imaps).then_some(self.ca_cert.as_path());
        crate::common::connect(frontend.addr(kind), implicit_tls, "the IMAP server").await
    }

    /// A new connection to the first front-end's listener of `kind`; the greeting is not read.
    pub async fn connect(&self, kind: ListenerKind) -> ImapClient<BoxIo> {
        ImapClient::new(self.connect_io(&self.frontend, kind).await)
    }

    /// Logs `address` in with LOGIN over implicit TLS on `frontend` and checks the OK.
    pub async fn login_on(&self, frontend: &ImapFrontend, address: &str) -> ImapClient<BoxIo> {
        let mut c = ImapClient::new(self.connect_io(frontend, ListenerKind::Imaps).await);
        c.greeting().await;
        c.ok(&format!("LOGIN {address} {}", password_of(address))).await;
        c
    }

    /// Logs `address` in on the first front-end (see [`ImapTestServer::login_on`]).
    pub async fn login(&self, address: &str) -> ImapClient<BoxIo> {
        self.login_on(&self.frontend, address).await
    }

    /// The id of one of the accounts of [`ACCOUNTS`].
    pub fn account_id(&self, address: &str) -> u64 {
        account_id_in(&self.accounts, address)
    }

    pub async fn mailbox_client(&self) -> Mailbox {
        self.mailbox.mailbox_client().await
    }

    /// Delivers `body` to `address` through the Deliver RPC (as SMTP does) and returns its UID.
    pub async fn deliver(&self, address: &str, body: &[u8]) -> u32 {
        deliver_one(&self.mailbox, address, body).await
    }

    /// A folder of `address` as the mailbox API shows it, with its messages in UID order.
    pub async fn folder(&self, address: &str, name: &str) -> (Folder, Vec<MessageSummary>) {
        select_folder(&mut self.mailbox_client().await, self.account_id(address), address, name).await
    }

    /// The INBOX of `address` as the mailbox API shows it: its id, UIDVALIDITY and messages.
    pub async fn inbox(&self, address: &str) -> (u64, u32, Vec<MessageSummary>) {
        let (folder, messages) = self.folder(address, "INBOX").await;
        (folder.id, folder.uidvalidity, messages)
    }

    /// The stored bytes of message `uid` in folder `name` of `address`.
    pub async fn body_in(&self, address: &str, name: &str, uid: u32) -> Vec<u8> {
        let (folder, _) = self.folder(address, name).await;
        let what = format!("{name} of {address}");
        stored_body(&mut self.mailbox_client().await, self.account_id(address), folder.id, uid, &what).await
    }

    /// The stored bytes of message `uid` in the INBOX of `address`.
    pub async fn body(&self, address: &str, uid: u32) -> Vec<u8> {
        self.body_in(address, "INBOX", uid).await
    }
}

/// The password of one of the accounts of [`ACCOUNTS`].
pub fn password_of(address: &str) -> &'static str {
    password_in(&ACCOUNTS, address)
}

async fn start_frontend(
    mailbox: SocketAddr,
    limits: Limits,
    allow_plaintext_auth: bool,
    tls: &Arc<rustls::ServerConfig>,
) -> ImapFrontend {
    let cfg = Arc::new(ImapConfig { hostname: HOSTNAME.into(), limits, tls: Some(tls.clone()), allow_plaintext_auth });
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    for kind in [ListenerKind::Imap, ListenerKind::Imaps] {
        let (socket, addr) = bind_loopback().await;
        addrs.push(addr);
        listeners.push(Listener { kind, socket, proxy_protocol: false });
    }
    let channel = mailbox_channel(mailbox);
    let server = Background::spawn(GRACE * 3, move |rx| tern_imap::server::serve(cfg, channel, listeners, rx, GRACE));
    ImapFrontend { imap: addrs[0], imaps: addrs[1], server }
}

/// One server response as received: its lines joined with the literals they announce, without
/// the final CRLF. `* 1 FETCH (BODY[] {5}\r\nhello)` is one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response(pub Vec<u8>);

impl Response {
    /// The response as text (literals included), lossily decoded.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }

    pub fn is_untagged(&self) -> bool {
        self.0.starts_with(b"* ")
    }

    /// The first literal of the response, if it has one.
    pub fn literal(&self) -> Option<&[u8]> {
        literals(&self.0).into_iter().next()
    }
}

/// The literals of a response, in order.
pub fn literals(response: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = response;
    while let Some(end) = rest.windows(3).position(|w| w == b"}\r\n") {
        let open = rest[..end].iter().rposition(|b| *b == b'{');
        let size = open.and_then(|o| std::str::from_utf8(&rest[o + 1..end]).ok()).and_then(|s| s.parse::<usize>().ok());
        let start = end + 3;
        match size {
            Some(n) if start + n <= rest.len() => {
                out.push(&rest[start..start + n]);
                rest = &rest[start + n..];
            }
            _ => rest = &rest[start..],
        }
    }
    out
}

/// What a tagged command got: the untagged responses before the tagged one, and the tagged
/// status line (`a1 OK ...`) without the tag.
#[derive(Debug, Clone)]
pub struct Completion {
    pub untagged: Vec<Response>,
    pub status: String,
}

impl Completion {
    /// The untagged responses as text.
    pub fn lines(&self) -> Vec<String> {
        self.untagged.iter().map(Response::text).collect()
    }

    /// The untagged responses whose text starts with `* {prefix}`.
    pub fn starting_with(&self, prefix: &str) -> Vec<String> {
        self.lines().into_iter().filter(|l| l.starts_with(&format!("* {prefix}"))).collect()
    }

    /// The untagged responses that contain `needle`.
    pub fn containing(&self, needle: &str) -> Vec<String> {
        self.lines().into_iter().filter(|l| l.contains(needle)).collect()
    }
}

/// An IMAP client connection that reads and checks responses.
#[derive(Debug)]
pub struct ImapClient<S> {
    stream: S,
    buf: Vec<u8>,
    timeout: Duration,
    next_tag: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ImapClient<S> {
    pub fn new(stream: S) -> Self {
        Self { stream, buf: Vec::new(), timeout: IO_TIMEOUT, next_tag: 1 }
    }

    /// How long to wait for a line or the close ([`IO_TIMEOUT`] unless changed).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The connection and whatever was received but not read yet.
    pub fn into_parts(self) -> (S, Vec<u8>) {
        (self.stream, self.buf)
    }

    /// Bytes received but not read yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Writes `bytes` in one write and flushes.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Reads more bytes into the buffer, waiting at most `wait`.
    async fn fill(&mut self, wait: Duration) -> Result<(), String> {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(wait, self.stream.read(&mut chunk)).await {
            Err(_) => Err(format!("nothing within {wait:?} (pending: {:?})", String::from_utf8_lossy(&self.buf))),
            Ok(Err(e)) => Err(format!("read failed: {e}")),
            Ok(Ok(0)) => {
                Err(format!("the server closed the connection (pending: {:?})", String::from_utf8_lossy(&self.buf)))
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
        }
    }

    /// Reads one response with the literals it announces, waiting at most `wait` for each
    /// piece. Fails on a line end other than CRLF.
    pub async fn read_response_within(&mut self, wait: Duration) -> Result<Response, String> {
        // Where the part of the response after the last literal starts.
        let mut from = 0;
        loop {
            let Some(i) = self.buf[from..].iter().position(|b| *b == b'\n').map(|p| p + from) else {
                self.fill(wait).await?;
                continue;
            };
            if i == 0 || self.buf[i - 1] != b'\r' {
                return Err(format!("line without CRLF: {:?}", String::from_utf8_lossy(&self.buf[..=i])));
            }
            // A line ending in {n} announces n octets, after which the response goes on.
            let literal = self.buf[from..i - 1]
                .strip_suffix(b"}")
                .and_then(|l| l.iter().rposition(|b| *b == b'{').map(|o| &l[o + 1..]))
                .and_then(|n| std::str::from_utf8(n).ok())
                .and_then(|n| n.parse::<usize>().ok());
            match literal {
                Some(n) => {
                    while self.buf.len() < i + 1 + n {
                        self.fill(wait).await?;
                    }
                    from = i + 1 + n;
                }
                None => {
                    let response: Vec<u8> = self.buf.drain(..=i).collect();
                    return Ok(Response(response[..response.len() - 2].to_vec()));
                }
            }
        }
    }

    /// Reads one response (see [`ImapClient::read_response_within`]) within the client timeout.
    pub async fn read_response(&mut self) -> Result<Response, String> {
        self.read_response_within(self.timeout).await
    }

    /// Reads the greeting and checks it is `* OK`.
    pub async fn greeting(&mut self) -> String {
        let r = self.read_response().await.unwrap_or_else(|e| panic!("expected the greeting: {e}")).text();
        assert!(r.starts_with("* OK "), "the greeting is not OK: {r:?}");
        r
    }

    /// A new tag.
    pub fn tag(&mut self) -> String {
        let tag = format!("a{}", self.next_tag);
        self.next_tag += 1;
        tag
    }

    /// Sends `command` under a new tag and returns the tag.
    pub async fn send_command(&mut self, command: &str) -> String {
        let tag = self.tag();
        self.send(format!("{tag} {command}\r\n").as_bytes()).await.unwrap_or_else(|e| panic!("send {command:?}: {e}"));
        tag
    }

    /// Reads responses up to the tagged one of `tag`.
    pub async fn complete(&mut self, tag: &str) -> Result<Completion, String> {
        let mut untagged = Vec::new();
        loop {
            let r = self.read_response().await?;
            let text = r.text();
            if let Some(status) = text.strip_prefix(&format!("{tag} ")) {
                return Ok(Completion { untagged, status: status.to_string() });
            }
            if !r.is_untagged() {
                return Err(format!("unexpected response {text:?} while waiting for {tag} (after {untagged:?})"));
            }
            untagged.push(r);
        }
    }

    /// Sends `command` and reads everything up to its tagged response.
    pub async fn command(&mut self, command: &str) -> Completion {
        let tag = self.send_command(command).await;
        self.complete(&tag).await.unwrap_or_else(|e| panic!("after {command:?}: {e}"))
    }

    /// Sends `command` and checks that it completes with OK; returns the untagged responses.
    pub async fn ok(&mut self, command: &str) -> Completion {
        let c = self.command(command).await;
        assert!(c.status.starts_with("OK"), "after {command:?}, expected OK, got {:?} ({:?})", c.status, c.lines());
        c
    }

    /// Sends `command` and checks that the tagged status starts with `prefix` (`NO [TRYCREATE]`).
    pub async fn expect(&mut self, command: &str, prefix: &str) -> Completion {
        let c = self.command(command).await;
        assert!(c.status.starts_with(prefix), "after {command:?}, expected {prefix:?}, got {:?}", c.status);
        c
    }

    /// Starts IDLE and waits for the continuation request.
    pub async fn idle(&mut self) -> String {
        let tag = self.send_command("IDLE").await;
        loop {
            let r = self.read_response().await.unwrap_or_else(|e| panic!("waiting for the IDLE continuation: {e}"));
            if r.0.starts_with(b"+") {
                return tag;
            }
            assert!(r.is_untagged(), "unexpected response before the IDLE continuation: {:?}", r.text());
        }
    }

    /// Reads untagged responses (during IDLE) until one satisfies `want`, for at most `wait`.
    /// Returns every response read, the wanted one last.
    pub async fn wait_for(&mut self, wait: Duration, want: impl Fn(&str) -> bool) -> Result<Vec<String>, String> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(format!("nothing wanted within {wait:?}; got {seen:?}"));
            }
            let r = self.read_response_within(left).await.map_err(|e| format!("{e}; got {seen:?}"))?;
            let text = r.text();
            let done = want(&text);
            seen.push(text);
            if done {
                return Ok(seen);
            }
        }
    }

    /// Ends IDLE with DONE and reads up to its tagged OK.
    pub async fn done(&mut self, tag: &str) -> Completion {
        self.send(b"DONE\r\n").await.expect("send DONE");
        let c = self.complete(tag).await.unwrap_or_else(|e| panic!("after DONE: {e}"));
        assert!(c.status.starts_with("OK"), "IDLE ended with {:?}", c.status);
        c
    }

    /// LOGOUT, its BYE and OK, and the close.
    pub async fn logout(mut self) {
        let c = self.ok("LOGOUT").await;
        assert!(c.lines().iter().any(|l| l.starts_with("* BYE")), "no BYE before the LOGOUT OK: {:?}", c.lines());
        self.expect_closed().await.unwrap_or_else(|e| panic!("after LOGOUT: {e}"));
    }

    /// Checks that the server closes the connection without sending anything more.
    pub async fn expect_closed(&mut self) -> Result<(), String> {
        if !self.buf.is_empty() {
            return Err(format!("unexpected data before the close: {:?}", String::from_utf8_lossy(&self.buf)));
        }
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout(self.timeout, self.stream.read(&mut chunk)).await {
            Err(_) => Err(format!("the server did not close the connection within {:?}", self.timeout)),
            Ok(Ok(0)) => Ok(()),
            Ok(Ok(n)) => Err(format!("unexpected data instead of a close: {:?}", String::from_utf8_lossy(&chunk[..n]))),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
            Ok(Err(e)) => Err(format!("read failed while waiting for the close: {e}")),
        }
    }
}

/// The numbers of the untagged `* n EXPUNGE` responses among `lines`.
pub fn expunges(lines: &[String]) -> Vec<u32> {
    lines.iter().filter_map(|l| l.strip_prefix("* ")?.strip_suffix(" EXPUNGE")?.parse().ok()).collect()
}

/// The messages every transcript finds in the INBOX of alice@example.com, in this order (UIDs
/// 1, 2, 3); bob@example.com's is empty. Their sizes are in the transcripts.
pub const TRANSCRIPT_MAIL: [&[u8]; 3] = [
    b"From: Bob <bob@example.com>\r\nTo: alice@example.com\r\nSubject: one\r\n\
      Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <one@example.com>\r\n\r\nHello Alice.\r\n",
    b"From: bob@example.com\r\nTo: alice@example.com\r\nSubject: two\r\nMIME-Version: 1.0\r\n\
      Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\npart one\r\n\
      --b\r\nContent-Type: text/html\r\n\r\n<p>part two</p>\r\n--b--\r\n",
    b"From: carol@example.com\r\nTo: alice@example.com\r\nSubject: three\r\n\r\nline 1\r\nline 2\r\nline 3\r\n",
];

/// A transcript file of `transcripts/imap/`: the generic [`Transcript`] (see
/// [`crate::smtp::Transcript`] for the `C:`, `S:` and `CLOSED` lines and the trailing `*`
/// wildcard) with IMAP directives, which are comments to the generic parser:
///
/// ```text
/// # port: imap | imaps              (default imap; imaps is implicit TLS)
/// # plaintext-auth: yes | no        (default yes: logins before TLS are accepted)
/// # limits: max_literal=100 max_errors=3   (fields of tern_imap::config::Limits)
/// ```
///
/// Before parsing, `{UIDVALIDITY}` is replaced by the UIDVALIDITY of alice's INBOX on the server
/// the transcript runs against, and `{UIDVALIDITY:Name}` by that of her folder `Name` (one of the
/// folders every account starts with).
#[derive(Debug, Clone)]
pub struct ImapTranscript {
    pub name: String,
    pub text: String,
    pub port: ListenerKind,
    pub allow_plaintext_auth: bool,
    pub limits: Limits,
}

impl ImapTranscript {
    pub fn parse(name: &str, text: &str) -> Result<ImapTranscript, String> {
        // The generic parser checks the C:/S: lines and collects `# limits:`.
        let generic = Transcript::parse(name, text)?;
        let (port, allow_plaintext_auth) =
            port_and_plaintext_auth(name, text, &[("imap", ListenerKind::Imap), ("imaps", ListenerKind::Imaps)])?;
        let mut t = ImapTranscript {
            name: name.into(),
            text: text.into(),
            port,
            allow_plaintext_auth,
            limits: Limits::default(),
        };
        for (k, v) in &generic.limits {
            let v = *v;
            let as_usize = || usize::try_from(v).map_err(|_| format!("{name}: {k}={v} is too large"));
            let as_u32 = || u32::try_from(v).map_err(|_| format!("{name}: {k}={v} is too large"));
            match k.as_str() {
                "max_literal" => t.limits.max_literal = as_u32()?,
                "max_line" => t.limits.max_line = as_usize()?,
                "max_command_literals" => t.limits.max_command_literals = v,
                "max_errors" => t.limits.max_errors = as_u32()?,
                "max_auth_failures" => t.limits.max_auth_failures = as_u32()?,
                "idle_timeout" => t.limits.idle_timeout = Duration::from_secs(v),
                "idle_keepalive" => t.limits.idle_keepalive = Duration::from_secs(v),
                "max_connections_per_ip" => t.limits.max_connections_per_ip = as_usize()?,
                other => return Err(format!("{name}: unknown limit {other:?}")),
            }
        }
        Ok(t)
    }

    /// The steps with the server's values filled in: `uidvalidity` maps alice's folder names to
    /// their UIDVALIDITY.
    pub fn steps(&self, uidvalidity: &HashMap<String, u32>) -> Result<Vec<(usize, Step)>, String> {
        let mut text = self.text.clone();
        while let Some(start) = text.find("{UIDVALIDITY") {
            let end =
                text[start..].find('}').map(|e| start + e).ok_or_else(|| format!("{}: unclosed {{", self.name))?;
            let folder = text[start + "{UIDVALIDITY".len()..end].strip_prefix(':').unwrap_or("INBOX");
            let value = uidvalidity.get(folder).ok_or_else(|| format!("{}: no folder {folder:?}", self.name))?;
            text.replace_range(start..=end, &value.to_string());
        }
        Ok(Transcript::parse(&self.name, &text)?.steps)
    }

    /// A new server for this transcript: its settings, and [`TRANSCRIPT_MAIL`] in alice's INBOX.
    /// Returns it with the UIDVALIDITY of each of alice's folders.
    pub async fn server(&self) -> (ImapTestServer, HashMap<String, u32>) {
        let server = ImapTestServer::start(self.limits.clone(), self.allow_plaintext_auth).await;
        for body in TRANSCRIPT_MAIL {
            server.deliver("alice@example.com", body).await;
        }
        let (inbox, _, messages) = server.inbox("alice@example.com").await;
        assert_eq!(messages.len(), TRANSCRIPT_MAIL.len(), "the transcript mail was not all delivered");
        let account_id = server.account_id("alice@example.com");
        // The INBOX's mail has been seen by an earlier session, so it is not \Recent for the
        // transcript's session; `recent.txt` follows new mail from its arrival.
        let up_to = messages.iter().map(|m| m.uid).max().unwrap_or(0) + 1;
        server
            .mailbox_client()
            .await
            .claim_recent(tern_proto::v1::ClaimRecentRequest { account_id, folder_id: inbox, up_to })
            .await
            .expect("claim the INBOX's messages as seen");
        let folders = server
            .mailbox_client()
            .await
            .list_folders(tern_proto::v1::ListFoldersRequest { account_id, with_status: false })
            .await
            .expect("list alice's folders")
            .into_inner()
            .folders;
        let uidvalidity = folders.into_iter().map(|f| (f.name, f.uidvalidity)).collect();
        (server, uidvalidity)
    }
}

impl ServedTranscript for ImapTranscript {
    fn parse_file(name: &str, text: &str) -> Result<Self, String> {
        ImapTranscript::parse(name, text)
    }

    async fn play(&self, chunking: Chunking) -> Result<(), String> {
        let (server, uidvalidity) = self.server().await;
        let steps = self.steps(&uidvalidity)?;
        let io = server.connect_io(&server.frontend, self.port).await;
        run_steps(&mut SmtpClient::new(io), &steps, chunking).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_literals() {
        assert_eq!(literals(b"* 1 FETCH (BODY[] {5}\r\nhello UID 3)"), [b"hello".as_slice()]);
        assert_eq!(literals(b"* 1 FETCH (A {1}\r\nx B {0}\r\n)"), [b"x".as_slice(), b"".as_slice()]);
        assert!(literals(b"* OK no literal").is_empty());
    }

    #[test]
    fn parses_imap_transcripts() {
        let t = ImapTranscript::parse(
            "t",
            "# port: imaps\n# plaintext-auth: no\n# limits: max_literal=10\nS: * OK *\nC: a LOGOUT\nS: a OK {UIDVALIDITY}\n",
        )
        .unwrap();
        assert_eq!(t.port, ListenerKind::Imaps);
        assert!(!t.allow_plaintext_auth);
        assert_eq!(t.limits.max_literal, 10);
        let values = HashMap::from([("INBOX".to_string(), 7), ("Trash".to_string(), 9)]);
        assert_eq!(t.steps(&values).unwrap()[2].1, Step::Expect("a OK 7".into()));
        let t = ImapTranscript::parse("t", "S: x {UIDVALIDITY:Trash} {UIDVALIDITY}\n").unwrap();
        assert_eq!(t.steps(&values).unwrap()[0].1, Step::Expect("x 9 7".into()));
        let t = ImapTranscript::parse("t", "S: x {UIDVALIDITY:Nope}\n").unwrap();
        assert!(t.steps(&values).is_err());
        assert!(ImapTranscript::parse("t", "# limits: nope=1\nS: x\n").is_err());
        assert!(ImapTranscript::parse("t", "# port: pop3\nS: x\n").is_err());
    }
}
