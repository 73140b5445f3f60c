//! A harness for end-to-end tests of the SMTP front-end over real loopback sockets.
//!
//! [`SmtpTestServer::start`] starts a mailbox service ([`TestServer`]) and, in the same process,
//! the SMTP server of `tern-smtp` talking to it over gRPC, with three listeners on free
//! `127.0.0.1` ports: MX (STARTTLS offered, no AUTH), submission (STARTTLS, then AUTH) and
//! submissions (implicit TLS). The certificate is a development certificate made for the test;
//! [`SmtpTestServer::tls_connector`] trusts it. Every server starts with the accounts of
//! [`ACCOUNTS`].
//!
//! [`SmtpClient`] reads replies line by line and checks their form (CRLF endings, three-digit
//! codes). [`Transcript`] is a scripted session, `C:` lines sent by the client and `S:` lines
//! expected from the server, which [`run_steps`] plays with the client's bytes cut into pieces of
//! any size ([`Chunking`]), so that every byte boundary of the input reaches the server.

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use tern_proto::v1::{GetAccountRequest, ListQueueRequest, QueuedMessage, UpdateAccountRequest};
use tern_smtp::{
    backend::GrpcBackend,
    config::{Limits, ListenerKind, SmtpConfig},
    server::Listener,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

pub use crate::common::{IO_TIMEOUT, transcript_files};
use crate::{
    Mailbox, TestServer,
    common::{
        Background, DevCert, account_id_in, bind_loopback, create_accounts, mailbox_channel, password_in,
        select_folder, stored_body,
    },
};

/// The name the test server gives in its greeting, EHLO reply and Received: headers.
pub const HOSTNAME: &str = "mx.test";

/// How long [`SmtpTestServer::stop`] lets sessions finish.
const GRACE: Duration = Duration::from_secs(5);

/// The accounts every [`SmtpTestServer`] has, with their passwords. `postmaster@mx.test` makes
/// `RCPT TO:<Postmaster>` (the server's own postmaster) deliverable.
pub const ACCOUNTS: [(&str, &str); 5] = [
    ("alice@example.com", "alice-pw"),
    ("bob@example.com", "bob-pw"),
    ("carol@example.com", "carol-pw"),
    ("dave@example.com", "dave-pw"),
    ("postmaster@mx.test", "postmaster-pw"),
];

/// Any byte stream a client speaks SMTP over: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A boxed [`Io`], so that plain and TLS connections have one type.
pub type BoxIo = Box<dyn Io>;

/// A mailbox service and an SMTP server in front of it, both on loopback.
#[derive(Debug)]
pub struct SmtpTestServer {
    pub mailbox: TestServer,
    pub mx: SocketAddr,
    pub submission: SocketAddr,
    pub submissions: SocketAddr,
    /// An MX listener that expects a PROXY protocol v2 header on every connection.
    pub mx_proxy: SocketAddr,
    /// The PEM file of the server's certificate, for clients that verify it.
    pub ca_cert: PathBuf,
    pub limits: Limits,
    accounts: HashMap<String, u64>,
    server: Background,
    // Declared last: the certificate directory outlives the server.
    _cert: DevCert,
}

impl SmtpTestServer {
    /// Starts both servers with the SMTP `limits` and default mailbox limits.
    pub async fn start(limits: Limits) -> SmtpTestServer {
        Self::start_with(limits, tern_mailbox::Limits::default()).await
    }

    /// Starts both servers with the given limits of each.
    pub async fn start_with(limits: Limits, mailbox_limits: tern_mailbox::Limits) -> SmtpTestServer {
        Self::start_full(limits, mailbox_limits, None).await
    }

    /// Like `start_with`, with an SPF/DKIM/DMARC verifier on the MX listener.
    pub async fn start_full(
        limits: Limits,
        mailbox_limits: tern_mailbox::Limits,
        verifier: Option<Arc<tern_smtp::verify::Verifier>>,
    ) -> SmtpTestServer {
        Self::start_screened(limits, mailbox_limits, verifier, None, None).await
    }

    /// Default limits, and `spam` filtering every listener's mail.
    pub async fn start_with_spam(spam: tern_smtp::spam::SpamFilter) -> SmtpTestServer {
        Self::start_screened(Limits::default(), tern_mailbox::Limits::default(), None, Some(Arc::new(spam)), None).await
    }

    /// Every check an MX can make: SPF/DKIM/DMARC with `verifier`, spam filtering with `spam`,
    /// DNS blocklists with `dnsbl` (and pregreet detection through `limits`).
    pub async fn start_screened(
        limits: Limits,
        mailbox_limits: tern_mailbox::Limits,
        verifier: Option<Arc<tern_smtp::verify::Verifier>>,
        spam: Option<Arc<tern_smtp::spam::SpamFilter>>,
        dnsbl: Option<Arc<tern_smtp::screen::Dnsbl>>,
    ) -> SmtpTestServer {
        let mailbox = TestServer::start(mailbox_limits).await;
        let accounts = create_accounts(&mailbox, &ACCOUNTS).await;
        let cert = DevCert::new("tern-smtp-test-");
        let backend = Arc::new(GrpcBackend::new(mailbox_channel(mailbox.addr)));
        let cfg = Arc::new(SmtpConfig {
            hostname: HOSTNAME.into(),
            limits: limits.clone(),
            tls: Some(cert.server_config.clone()),
            allow_plaintext_auth: false,
            // SPF, DKIM and DMARC need DNS answers: a test that wants them gives a verifier whose
            // cache holds them.
            verifier,
            spam,
            dnsbl,
        });
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        // The three standard listeners, then an MX listener behind a PROXY protocol v2 header.
        for (kind, proxy_protocol) in [
            (ListenerKind::Mx, false),
            (ListenerKind::Submission, false),
            (ListenerKind::Submissions, false),
            (ListenerKind::Mx, true),
        ] {
            let (socket, addr) = bind_loopback().await;
            addrs.push(addr);
            listeners.push(Listener { kind, socket, proxy_protocol });
        }
        let server =
            Background::spawn(GRACE * 2, move |rx| tern_smtp::server::serve(cfg, backend, listeners, rx, GRACE));
        SmtpTestServer {
            mailbox,
            mx: addrs[0],
            submission: addrs[1],
            submissions: addrs[2],
            mx_proxy: addrs[3],
            ca_cert: cert.ca_cert.clone(),
            limits,
            accounts,
            server,
            _cert: cert,
        }
    }

    /// Stops the SMTP server gracefully: open sessions get 421, transactions finish.
    pub async fn stop(&mut self) {
        self.server.stop().await;
    }

    /// The address of the listener of `kind`.
    pub fn addr(&self, kind: ListenerKind) -> SocketAddr {
        match kind {
            ListenerKind::Mx => self.mx,
            ListenerKind::Submission => self.submission,
            ListenerKind::Submissions => self.submissions,
        }
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

    /// A new connection to the listener of `kind` (with the TLS handshake done for implicit
    /// TLS); the greeting is not read yet.
    pub async fn connect(&self, kind: ListenerKind) -> SmtpClient<BoxIo> {
        let implicit_tls = (kind == ListenerKind::Submissions).then_some(self.ca_cert.as_path());
        SmtpClient::new(crate::common::connect(self.addr(kind), implicit_tls, "the SMTP server").await)
    }

    /// Another SMTP front-end (an MX listener) with `limits`, on the same mailbox service, as a
    /// second replica of the front-end would be; stops when the handle is dropped.
    pub async fn start_frontend(&self, limits: Limits) -> (SocketAddr, Background) {
        let cfg = Arc::new(SmtpConfig {
            hostname: HOSTNAME.into(),
            limits,
            tls: None,
            allow_plaintext_auth: false,
            verifier: None,
            spam: None,
            dnsbl: None,
        });
        let (socket, addr) = bind_loopback().await;
        let listeners = vec![Listener { kind: ListenerKind::Mx, socket, proxy_protocol: false }];
        let backend = Arc::new(GrpcBackend::new(mailbox_channel(self.mailbox.addr)));
        let server =
            Background::spawn(GRACE * 2, move |rx| tern_smtp::server::serve(cfg, backend, listeners, rx, GRACE));
        (addr, server)
    }

    /// Connects to `kind`, reads the greeting and says EHLO.
    pub async fn connect_ehlo(&self, kind: ListenerKind) -> SmtpClient<BoxIo> {
        let mut c = self.connect(kind).await;
        c.expect_reply("220 ").await;
        c.expect("EHLO client.test", "250 ").await;
        c
    }

    /// Connects to the submissions port (implicit TLS) and logs in as `address` with its
    /// password from [`ACCOUNTS`].
    pub async fn connect_authenticated(&self, address: &str) -> SmtpClient<BoxIo> {
        let password = password_in(&ACCOUNTS, address);
        let mut c = self.connect_ehlo(ListenerKind::Submissions).await;
        c.expect(&format!("AUTH PLAIN {}", auth_plain(address, password)), "235 2.7.0").await;
        c
    }

    /// The id of one of the accounts of [`ACCOUNTS`].
    /// Stores `text` as the active Sieve script of `address` (named `name`), as ManageSieve
    /// would, panicking with the script when the service refuses it.
    pub async fn activate_sieve(&self, address: &str, name: &str, text: &str) {
        let request = tern_proto::v1::PutSieveScriptRequest {
            account_id: self.account_id(address),
            name: name.into(),
            text: text.into(),
            activate: true,
        };
        self.mailbox_client()
            .await
            .put_sieve_script(request)
            .await
            .unwrap_or_else(|e| panic!("store the script of {address}: {e}\n{text}"));
    }

    pub fn account_id(&self, address: &str) -> u64 {
        account_id_in(&self.accounts, address)
    }

    pub async fn mailbox_client(&self) -> Mailbox {
        self.mailbox.mailbox_client().await
    }

    /// Every message in the INBOX of `address`, in UID order, read back whole.
    pub async fn inbox(&self, address: &str) -> Vec<Vec<u8>> {
        self.folder(address, "INBOX").await
    }

    /// Every message in the folder `name` of `address`, in UID order, read back whole.
    pub async fn folder(&self, address: &str, name: &str) -> Vec<Vec<u8>> {
        let account_id = self.account_id(address);
        let mut mail = self.mailbox_client().await;
        let (folder, messages) = select_folder(&mut mail, account_id, address, name).await;
        let mut out = Vec::new();
        for m in messages {
            out.push(stored_body(&mut mail, account_id, folder.id, m.uid, address).await);
        }
        out
    }

    /// Sets the quota of `address` in bytes.
    pub async fn set_quota(&self, address: &str, quota_bytes: u64) {
        let mut admin = self.mailbox.admin_client().await;
        admin
            .update_account(UpdateAccountRequest {
                address: address.into(),
                quota_bytes: Some(quota_bytes),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("set the quota of {address}: {e}"));
        let account = admin
            .get_account(GetAccountRequest { address: address.into() })
            .await
            .unwrap_or_else(|e| panic!("get the account {address}: {e}"))
            .into_inner();
        assert_eq!(account.quota_bytes, quota_bytes, "the quota of {address} did not change");
    }

    /// The outbound queue, as the relay would see it.
    pub async fn queue(&self) -> Vec<QueuedMessage> {
        self.mailbox_client()
            .await
            .list_queue(ListQueueRequest {})
            .await
            .unwrap_or_else(|e| panic!("list the outbound queue: {e}"))
            .into_inner()
            .messages
    }
}

/// The base64 initial response of AUTH PLAIN (RFC 4616) with an empty authorisation identity.
pub fn auth_plain(user: &str, password: &str) -> String {
    base64_encode(format!("\0{user}\0{password}").as_bytes())
}

/// Standard base64 with padding; small enough not to need a dependency here.
pub fn base64_encode(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One reply: every line as received (code, separator and text), without CRLF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl SmtpReply {
    /// The last line, the one with the space after the code.
    pub fn last(&self) -> &str {
        self.lines.last().map(String::as_str).unwrap_or("")
    }

    /// The text of every line after its code and separator.
    pub fn texts(&self) -> Vec<&str> {
        self.lines.iter().map(|l| l.get(4..).unwrap_or("")).collect()
    }
}

/// An SMTP client connection that reads and checks reply lines.
#[derive(Debug)]
pub struct SmtpClient<S> {
    stream: S,
    buf: Vec<u8>,
    timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> SmtpClient<S> {
    pub fn new(stream: S) -> Self {
        Self { stream, buf: Vec::new(), timeout: IO_TIMEOUT }
    }

    /// How long to wait for a reply line or the close ([`IO_TIMEOUT`] unless changed).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The connection and whatever was received but not read as lines yet.
    pub fn into_parts(self) -> (S, Vec<u8>) {
        (self.stream, self.buf)
    }

    /// Bytes received but not read as lines yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Writes `bytes` in one write and flushes.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Reads one reply line and returns it without its CRLF. Fails on a line that does not end
    /// with CRLF, on the end of the stream and after the timeout.
    pub async fn read_line(&mut self) -> Result<String, String> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let Some(line) = line.strip_suffix(b"\r\n") else {
                    return Err(format!("reply line without CRLF: {:?}", String::from_utf8_lossy(&line)));
                };
                return String::from_utf8(line.to_vec()).map_err(|e| format!("reply line is not UTF-8: {e}"));
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(self.timeout, self.stream.read(&mut chunk)).await {
                Err(_) => {
                    return Err(format!(
                        "no reply line within {:?} (pending: {:?})",
                        self.timeout,
                        String::from_utf8_lossy(&self.buf)
                    ));
                }
                Ok(Err(e)) => return Err(format!("read failed: {e}")),
                Ok(Ok(0)) => {
                    return Err(format!(
                        "the server closed the connection (pending: {:?})",
                        String::from_utf8_lossy(&self.buf)
                    ));
                }
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads one whole reply, checking that every line has the same three-digit code and that
    /// only the last has a space after it.
    pub async fn read_reply(&mut self) -> Result<SmtpReply, String> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line().await?;
            let code = line
                .get(..3)
                .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| format!("reply line without a code: {line:?}"))?;
            if let Some(first) = lines.first().and_then(|l: &String| l.get(..3))
                && first != &line[..3]
            {
                return Err(format!("reply code changed inside a reply: {lines:?} then {line:?}"));
            }
            let sep = line.as_bytes().get(3).copied();
            lines.push(line);
            match sep {
                Some(b' ') => return Ok(SmtpReply { code, lines }),
                Some(b'-') => {}
                // A bare code is allowed by RFC 5321 for the last line; Tern never sends it.
                _ => return Err(format!("reply line without a separator after the code: {lines:?}")),
            }
        }
    }

    /// Reads a reply and checks that its last line starts with `prefix`; panics otherwise.
    pub async fn expect_reply(&mut self, prefix: &str) -> SmtpReply {
        let reply = self.read_reply().await.unwrap_or_else(|e| panic!("expected {prefix:?}: {e}"));
        assert!(reply.last().starts_with(prefix), "expected a reply starting with {prefix:?}, got {:?}", reply.lines);
        reply
    }

    /// Sends `line` with CRLF and checks the reply as [`SmtpClient::expect_reply`] does.
    pub async fn expect(&mut self, line: &str, prefix: &str) -> SmtpReply {
        self.send(format!("{line}\r\n").as_bytes()).await.unwrap_or_else(|e| panic!("send {line:?}: {e}"));
        let reply = self.read_reply().await.unwrap_or_else(|e| panic!("after {line:?}, expected {prefix:?}: {e}"));
        assert!(
            reply.last().starts_with(prefix),
            "after {line:?}, expected a reply starting with {prefix:?}, got {:?}",
            reply.lines
        );
        reply
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

/// One step of a transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Bytes the client sends (a `C:` line with its CRLF).
    Send(Vec<u8>),
    /// A reply line the server must send next; a trailing `*` matches any rest of the line.
    Expect(String),
    /// The server closes the connection here, having sent nothing more.
    Closed,
}

/// A scripted session. The text format, one item a line:
///
/// ```text
/// # a comment; directives are comments of the form "# key: value"
/// # listener: mx | submission | submissions   (default mx; submissions is implicit TLS)
/// # limits: max_recipients=2 max_errors=5     (fields of tern_smtp::config::Limits)
/// S: 220 mx.test ESMTP Tern
/// C: EHLO client.test
/// S: 250-mx.test greets client.test
/// S: 250 2.0.0 OK queued as *
/// CLOSED
/// ```
///
/// `C:` lines are sent with CRLF; consecutive `C:` lines are sent together (pipelined) before
/// the `S:` lines that follow are read. Each line of a multi-line reply is its own `S:` line.
/// `CLOSED` says the server closes the connection there.
#[derive(Debug, Clone)]
pub struct Transcript {
    pub name: String,
    pub listener: ListenerKind,
    /// `(field, value)` overrides of the SMTP limits.
    pub limits: Vec<(String, u64)>,
    /// Steps with the line number they come from.
    pub steps: Vec<(usize, Step)>,
}

impl Transcript {
    pub fn parse(name: &str, text: &str) -> Result<Transcript, String> {
        let mut t = Transcript { name: name.into(), listener: ListenerKind::Mx, limits: Vec::new(), steps: Vec::new() };
        for (i, raw) in text.split('\n').enumerate() {
            let n = i + 1;
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if let Some(rest) = line.strip_prefix("C:") {
                let rest = rest.strip_prefix(' ').unwrap_or(rest);
                let mut bytes = rest.as_bytes().to_vec();
                bytes.extend_from_slice(b"\r\n");
                t.steps.push((n, Step::Send(bytes)));
            } else if let Some(rest) = line.strip_prefix("S: ") {
                t.steps.push((n, Step::Expect(rest.to_string())));
            } else if line == "CLOSED" {
                t.steps.push((n, Step::Closed));
            } else if let Some(v) = line.strip_prefix("# listener:") {
                t.listener = match v.trim() {
                    "mx" => ListenerKind::Mx,
                    "submission" => ListenerKind::Submission,
                    "submissions" => ListenerKind::Submissions,
                    other => return Err(format!("{name}:{n}: unknown listener {other:?}")),
                };
            } else if let Some(v) = line.strip_prefix("# limits:") {
                for kv in v.split_whitespace() {
                    let (k, v) = kv.split_once('=').ok_or_else(|| format!("{name}:{n}: expected key=value: {kv:?}"))?;
                    let v = v.parse().map_err(|_| format!("{name}:{n}: not a number: {kv:?}"))?;
                    t.limits.push((k.to_string(), v));
                }
            } else if line.starts_with('#') || line.trim().is_empty() {
                // A comment or a blank line.
            } else {
                return Err(format!("{name}:{n}: expected C:, S:, CLOSED or a # comment: {line:?}"));
            }
        }
        if !t.steps.iter().any(|(_, s)| matches!(s, Step::Expect(_))) {
            return Err(format!("{name}: a transcript needs at least one S: line"));
        }
        if let Some((n, _)) = t.steps.iter().skip_while(|(_, s)| *s != Step::Closed).nth(1) {
            return Err(format!("{name}:{n}: nothing can follow CLOSED"));
        }
        Ok(t)
    }

    /// `base` with the transcript's `# limits:` applied.
    pub fn limits(&self, mut base: Limits) -> Result<Limits, String> {
        for (k, v) in &self.limits {
            let v = *v;
            let as_usize = || usize::try_from(v).map_err(|_| format!("{k}={v} is too large"));
            let as_u32 = || u32::try_from(v).map_err(|_| format!("{k}={v} is too large"));
            match k.as_str() {
                "max_line" => base.max_line = as_usize()?,
                "max_message_bytes" => base.max_message_bytes = v,
                "max_recipients" => base.max_recipients = as_usize()?,
                "max_errors" => base.max_errors = as_u32()?,
                "max_commands_before_auth" => base.max_commands_before_auth = as_u32()?,
                "max_auth_failures" => base.max_auth_failures = as_u32()?,
                "idle_timeout" => base.idle_timeout = Duration::from_secs(v),
                "max_connections_per_ip" => base.max_connections_per_ip = as_usize()?,
                other => return Err(format!("{}: unknown limit {other:?}", self.name)),
            }
        }
        Ok(base)
    }

    /// The bytes the client sends in the whole transcript.
    pub fn client_bytes(&self) -> usize {
        self.steps.iter().map(|(_, s)| if let Step::Send(b) = s { b.len() } else { 0 }).sum()
    }
}

/// How the client's bytes are cut into writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunking {
    /// All `C:` lines up to the next `S:` line in one write.
    Whole,
    /// The same bytes in writes of at most this many bytes, each flushed on its own (with
    /// TCP_NODELAY, one segment each), so the server sees the input cut at every multiple.
    Bytes(usize),
}

/// Sends `body` from a remote sender to `to` through the MX listener at `mx`, on a connection
/// of its own, and returns the reply that decided its fate: the reply to RCPT when the
/// recipient was refused, the reply to the end of DATA otherwise (250 when stored). `body`
/// must end with CRLF and have no line that starts with a dot.
pub async fn send_message(mx: SocketAddr, to: &str, body: &[u8]) -> SmtpReply {
    let stream = tokio::net::TcpStream::connect(mx).await.expect("connect to the MX listener");
    let mut c = SmtpClient::new(stream);
    c.expect_reply("220").await;
    c.expect("EHLO client.test", "250").await;
    c.expect("MAIL FROM:<sender@remote.example>", "250").await;
    c.send(format!("RCPT TO:<{to}>\r\n").as_bytes()).await.expect("send RCPT");
    let rcpt = c.read_reply().await.expect("the reply to RCPT");
    let reply = if rcpt.code == 250 {
        c.expect("DATA", "354").await;
        let mut data = body.to_vec();
        data.extend_from_slice(b".\r\n");
        c.send(&data).await.expect("send the message");
        c.read_reply().await.expect("the reply to the end of DATA")
    } else {
        rcpt
    };
    c.expect("QUIT", "221").await;
    reply
}

/// Whether a reply line matches an `S:` pattern, in which `*` stands for any text (a trailing
/// one for the rest of the line).
pub fn line_matches(pattern: &str, line: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = line.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Plays `steps` over `client`. Returns a description of the first difference.
pub async fn run_steps<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<S>,
    steps: &[(usize, Step)],
    chunking: Chunking,
) -> Result<(), String> {
    let mut i = 0;
    let mut write_error = None;
    while i < steps.len() {
        match &steps[i].1 {
            Step::Send(_) => {
                let mut flight = Vec::new();
                while let Some((_, Step::Send(b))) = steps.get(i) {
                    flight.extend_from_slice(b);
                    i += 1;
                }
                let size = match chunking {
                    Chunking::Whole => flight.len(),
                    Chunking::Bytes(k) => k.max(1),
                };
                for piece in flight.chunks(size) {
                    // The server may close the connection in the middle of a flight (after 421);
                    // what it said before is checked by the S: lines that follow.
                    if let Err(e) = client.send(piece).await {
                        write_error = Some(e);
                        break;
                    }
                    if chunking != Chunking::Whole {
                        tokio::task::yield_now().await;
                    }
                }
            }
            Step::Expect(pattern) => {
                let line = client.read_line().await.map_err(|e| {
                    let hint =
                        write_error.as_ref().map(|w| format!(" (a write failed before: {w})")).unwrap_or_default();
                    format!("line {}: expected {pattern:?}: {e}{hint}", steps[i].0)
                })?;
                if !line_matches(pattern, &line) {
                    return Err(format!("line {}: expected {pattern:?}, got {line:?}", steps[i].0));
                }
                i += 1;
            }
            Step::Closed => {
                client.expect_closed().await.map_err(|e| format!("line {}: expected the close: {e}", steps[i].0))?;
                i += 1;
            }
        }
    }
    if !client.pending().is_empty() {
        return Err(format!(
            "unexpected reply after the last S: line: {:?}",
            String::from_utf8_lossy(client.pending())
        ));
    }
    Ok(())
}

/// Runs the transcript `text` over a new plain TCP connection to `addr`, each flight of client
/// lines in one write.
pub async fn run_transcript(addr: SocketAddr, text: &str) -> Result<(), String> {
    run_transcript_chunked(addr, text, Chunking::Whole).await
}

/// Runs the transcript `text` over a new plain TCP connection to `addr` with `chunking`.
pub async fn run_transcript_chunked(addr: SocketAddr, text: &str, chunking: Chunking) -> Result<(), String> {
    let t = Transcript::parse("transcript", text)?;
    let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect to {addr}: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| format!("set TCP_NODELAY: {e}"))?;
    run_steps(&mut SmtpClient::new(tcp), &t.steps, chunking).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foob"), "Zm9vYg==");
        assert_eq!(base64_encode(b"\0a@b.c\0pw"), "AGFAYi5jAHB3");
    }

    #[test]
    fn parses_transcripts() {
        let t = Transcript::parse(
            "t",
            "# listener: submission\n# limits: max_errors=3\nS: 220 *\nC: EHLO x\nC:\nS: 250 ok\nCLOSED\n",
        )
        .unwrap();
        assert_eq!(t.listener, ListenerKind::Submission);
        assert_eq!(t.limits(Limits::default()).unwrap().max_errors, 3);
        assert_eq!(t.steps[1].1, Step::Send(b"EHLO x\r\n".to_vec()));
        assert_eq!(t.steps[2].1, Step::Send(b"\r\n".to_vec()));
        assert_eq!(t.client_bytes(), 10);
        assert!(Transcript::parse("t", "C: x\n").is_err(), "no S: line");
        assert!(Transcript::parse("t", "S: 220\nCLOSED\nC: x\n").is_err(), "C: after CLOSED");
        assert!(Transcript::parse("t", "X: y\nS: 220\n").is_err(), "unknown line");
        assert!(line_matches("250 2.0.0 OK queued as *", "250 2.0.0 OK queued as 1F00"));
        assert!(!line_matches("250 2.0.0 OK", "250 2.0.0 OK queued as 1F00"));
    }
}
