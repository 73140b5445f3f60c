//! A harness for end-to-end tests of the POP3 front-end over real loopback sockets.
//!
//! [`Pop3TestServer::start`] starts a mailbox service ([`TestServer`]) and, in the same process,
//! the POP3 server of `tern-pop3` talking to it over gRPC, with a `pop3` listener (plain text,
//! STLS offered) and a `pop3s` listener (implicit TLS) on free `127.0.0.1` ports. The
//! certificate is a development certificate made for the test; [`Pop3TestServer::tls_connector`]
//! trusts it. Every server starts with the accounts of [`ACCOUNTS`] and an empty INBOX each.
//!
//! [`Pop3TestServer::start_frontend`] starts another POP3 server against the same mailbox
//! service, as a second pod would be, for what must hold across front-ends (one session per
//! maildrop). [`Pop3TestServer::start_mx`] puts an SMTP MX listener in front of the same
//! mailbox, for tests that deliver with a real SMTP client.
//!
//! [`Pop3Client`] speaks POP3 as a client and checks the form of what it reads (CRLF line ends,
//! `+OK`/`-ERR` status lines, multi-line bodies ending with a lone dot). Scripted sessions
//! (transcripts) use the generic runner of [`crate::smtp`]; [`Pop3Transcript`] reads the POP3
//! directives of a transcript file.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use tern_pop3::{
    backend::Backend,
    config::{Limits, ListenerKind, Pop3Config},
    server::Listener,
};
use tern_proto::v1::{MessageSummary, Pop3DeletePolicy, UpdateAccountRequest};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsConnector;

pub use crate::common::{ACCOUNTS, Background, IO_TIMEOUT, transcript_files};
use crate::{
    Mailbox, TestServer,
    common::{
        DevCert, FrontendOptions, ServedTranscript, account_id_in, bind_loopback, create_accounts, deliver_one,
        mailbox_channel, password_in, port_and_plaintext_auth, select_folder, stored_body,
    },
    smtp::{BoxIo, Chunking, SmtpClient, Step, Transcript, run_steps},
};

/// The name the test server gives in its greeting and sign-off.
pub const HOSTNAME: &str = "pop.test";

/// How long [`Pop3Frontend::stop`] lets sessions finish.
const GRACE: Duration = Duration::from_secs(2);

/// How a [`Pop3TestServer`] is configured (see [`FrontendOptions`]).
pub type Pop3Options = FrontendOptions<Limits>;

/// One POP3 server (one "pod") in front of the mailbox service.
#[derive(Debug)]
pub struct Pop3Frontend {
    /// The plain-text listener (port 110 semantics, STLS offered).
    pub pop3: SocketAddr,
    /// The implicit-TLS listener (port 995 semantics).
    pub pop3s: SocketAddr,
    /// The instance name this front-end holds maildrop leases under.
    pub instance: String,
    server: Background,
}

impl Pop3Frontend {
    /// The address of the listener of `kind`.
    pub fn addr(&self, kind: ListenerKind) -> SocketAddr {
        match kind {
            ListenerKind::Pop3 => self.pop3,
            ListenerKind::Pop3s => self.pop3s,
        }
    }

    /// Stops the server gracefully: sessions waiting for a command are told and closed.
    pub async fn stop(&mut self) {
        self.server.stop().await;
    }
}

/// A mailbox service and a POP3 server in front of it, both on loopback.
#[derive(Debug)]
pub struct Pop3TestServer {
    pub mailbox: TestServer,
    /// The first front-end; [`Pop3TestServer::start_frontend`] makes more.
    pub frontend: Pop3Frontend,
    /// The PEM file of the server's certificate, for clients that verify it.
    pub ca_cert: std::path::PathBuf,
    pub options: Pop3Options,
    accounts: HashMap<String, u64>,
    frontends_started: usize,
    // Declared last: the certificate directory outlives the servers.
    cert: DevCert,
}

impl Pop3TestServer {
    /// Starts the servers with `limits`, plain-text logins allowed or not, and lenient mailbox
    /// limits (see [`FrontendOptions::default`]).
    pub async fn start(limits: Limits, allow_plaintext_auth: bool) -> Pop3TestServer {
        Self::start_with(Pop3Options { limits, allow_plaintext_auth, ..Default::default() }).await
    }

    pub async fn start_with(options: Pop3Options) -> Pop3TestServer {
        let mailbox = TestServer::start_with_blobs(options.mailbox_limits.clone(), options.blobs.clone()).await;
        let accounts = create_accounts(&mailbox, &ACCOUNTS).await;
        let cert = DevCert::new("tern-pop3-test-");
        let frontend = start_frontend(
            mailbox.addr,
            "pop3-a",
            options.limits.clone(),
            options.allow_plaintext_auth,
            &cert.server_config,
        )
        .await;
        Pop3TestServer {
            mailbox,
            frontend,
            ca_cert: cert.ca_cert.clone(),
            options,
            accounts,
            frontends_started: 1,
            cert,
        }
    }

    /// Another POP3 server against the same mailbox service, with the same settings and its own
    /// instance name, as another pod would be.
    pub async fn start_frontend(&mut self) -> Pop3Frontend {
        let (limits, allow) = (self.options.limits.clone(), self.options.allow_plaintext_auth);
        self.start_frontend_with(limits, allow).await
    }

    /// Another POP3 server against the same mailbox service with its own settings.
    pub async fn start_frontend_with(&mut self, limits: Limits, allow_plaintext_auth: bool) -> Pop3Frontend {
        self.frontends_started += 1;
        let instance = format!("pop3-{}", self.frontends_started);
        start_frontend(self.mailbox.addr, &instance, limits, allow_plaintext_auth, &self.cert.server_config).await
    }

    /// Restarts the mailbox service on the same data directory (see [`TestServer::restart`]),
    /// then replaces the first front-end with a new one that talks to it. The listeners move
    /// to new ports.
    pub async fn restart_mailbox(&mut self) {
        self.frontend.stop().await;
        self.mailbox.restart().await;
        self.frontend = self.start_frontend().await;
    }

    /// An SMTP MX listener (no AUTH, STARTTLS offered) in front of the same mailbox service,
    /// for delivering with a real SMTP client. Stops when the handle is dropped.
    pub async fn start_mx(&self) -> (SocketAddr, Background) {
        start_mx(self.mailbox.addr, &self.cert.server_config).await
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
    pub async fn connect_io(&self, frontend: &Pop3Frontend, kind: ListenerKind) -> BoxIo {
        let implicit_tls = (kind == ListenerKind::Pop3s).then_some(self.ca_cert.as_path());
        crate::common::connect(frontend.addr(kind), implicit_tls, "the POP3 server").await
    }

    /// A new connection to the first front-end's listener of `kind`; the greeting is not read.
    pub async fn connect(&self, kind: ListenerKind) -> Pop3Client<BoxIo> {
        Pop3Client::new(self.connect_io(&self.frontend, kind).await)
    }

    /// Logs `address` in with USER/PASS over implicit TLS on `frontend` and checks the `+OK`.
    pub async fn login_on(&self, frontend: &Pop3Frontend, address: &str) -> Pop3Client<BoxIo> {
        let mut c = Pop3Client::new(self.connect_io(frontend, ListenerKind::Pop3s).await);
        c.greeting().await;
        c.ok(&format!("USER {address}")).await;
        c.ok(&format!("PASS {}", password_of(address))).await;
        c
    }

    /// Logs `address` in on the first front-end (see [`Pop3TestServer::login_on`]).
    pub async fn login(&self, address: &str) -> Pop3Client<BoxIo> {
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

    /// The INBOX of `address` as the mailbox API shows it: its id, UIDVALIDITY and messages.
    pub async fn inbox(&self, address: &str) -> (u64, u32, Vec<MessageSummary>) {
        let mut mail = self.mailbox_client().await;
        let (folder, messages) = select_folder(&mut mail, self.account_id(address), address, "INBOX").await;
        (folder.id, folder.uidvalidity, messages)
    }

    /// The stored bytes of message `uid` in the INBOX of `address`.
    pub async fn body(&self, address: &str, uid: u32) -> Vec<u8> {
        let (folder_id, _, _) = self.inbox(address).await;
        stored_body(&mut self.mailbox_client().await, self.account_id(address), folder_id, uid, address).await
    }

    /// Sets what DELE does at QUIT for `address`: keep the message for IMAP, or expunge it.
    pub async fn set_pop3_keep(&self, address: &str, keep: bool) {
        let policy = if keep { Pop3DeletePolicy::Keep } else { Pop3DeletePolicy::Expunge };
        self.mailbox
            .admin_client()
            .await
            .update_account(UpdateAccountRequest {
                address: address.into(),
                pop3_delete: Some(policy as i32),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("set the POP3 delete policy of {address}: {e}"));
    }
}

/// The password of one of the accounts of [`ACCOUNTS`].
pub fn password_of(address: &str) -> &'static str {
    password_in(&ACCOUNTS, address)
}

/// An SMTP MX listener (no AUTH, STARTTLS offered with `tls`) in front of the mailbox service at
/// `mailbox`, for tests that deliver with a real SMTP client. Stops when the handle is dropped.
pub(crate) async fn start_mx(mailbox: SocketAddr, tls: &Arc<rustls::ServerConfig>) -> (SocketAddr, Background) {
    use tern_smtp::{backend::GrpcBackend, config::SmtpConfig};
    let cfg = Arc::new(SmtpConfig {
        hostname: "mx.test".into(),
        limits: tern_smtp::config::Limits::default(),
        tls: Some(tls.clone()),
        allow_plaintext_auth: false,
        verifier: None,
        spam: None,
        dnsbl: None,
    });
    let (socket, addr) = bind_loopback().await;
    let listeners =
        vec![tern_smtp::server::Listener { kind: tern_smtp::config::ListenerKind::Mx, socket, proxy_protocol: false }];
    let backend = Arc::new(GrpcBackend::new(mailbox_channel(mailbox)));
    let server = Background::spawn(GRACE * 3, move |rx| tern_smtp::server::serve(cfg, backend, listeners, rx, GRACE));
    (addr, server)
}

async fn start_frontend(
    mailbox: SocketAddr,
    instance: &str,
    limits: Limits,
    allow_plaintext_auth: bool,
    tls: &Arc<rustls::ServerConfig>,
) -> Pop3Frontend {
    let cfg = Arc::new(Pop3Config {
        hostname: HOSTNAME.into(),
        limits,
        tls: Some(tls.clone()),
        allow_plaintext_auth,
        login_delay: None,
        expire_days: None,
        instance: instance.into(),
    });
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    for kind in [ListenerKind::Pop3, ListenerKind::Pop3s] {
        let (socket, addr) = bind_loopback().await;
        addrs.push(addr);
        listeners.push(Listener { kind, socket, proxy_protocol: false });
    }
    let backend = Backend::new(mailbox_channel(mailbox));
    let server = Background::spawn(GRACE * 3, move |rx| tern_pop3::server::serve(cfg, backend, listeners, rx, GRACE));
    Pop3Frontend { pop3: addrs[0], pop3s: addrs[1], instance: instance.into(), server }
}

/// A POP3 client connection that reads and checks responses.
#[derive(Debug)]
pub struct Pop3Client<S> {
    stream: S,
    buf: Vec<u8>,
    timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Pop3Client<S> {
    pub fn new(stream: S) -> Self {
        Self { stream, buf: Vec::new(), timeout: IO_TIMEOUT }
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

    /// Reads one line with its CRLF. Fails on a line end other than CRLF, on the end of the
    /// stream and after the timeout.
    pub async fn read_raw_line(&mut self) -> Result<Vec<u8>, String> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                if !line.ends_with(b"\r\n") || line[..line.len() - 2].contains(&b'\r') {
                    return Err(format!("line without a proper CRLF: {:?}", String::from_utf8_lossy(&line)));
                }
                return Ok(line);
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout(self.timeout, self.stream.read(&mut chunk)).await {
                Err(_) => {
                    return Err(format!(
                        "no line within {:?} (pending: {:?})",
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

    /// Reads a status line (`+OK`, `-ERR` or a SASL `+ ` challenge), without its CRLF.
    pub async fn read_status(&mut self) -> Result<String, String> {
        let raw = self.read_raw_line().await?;
        let line = String::from_utf8(raw[..raw.len() - 2].to_vec()).map_err(|e| format!("status not UTF-8: {e}"))?;
        let well_formed = line == "+OK"
            || line.starts_with("+OK ")
            || line == "-ERR"
            || line.starts_with("-ERR ")
            || line.starts_with("+ ");
        if !well_formed {
            return Err(format!("not a status line: {line:?}"));
        }
        if line.len() + 2 > 512 {
            return Err(format!("status line longer than 512 octets: {line:?}"));
        }
        Ok(line)
    }

    /// Reads the data of a multi-line response up to the line with a lone dot, as it came
    /// over the wire (dot-stuffed, every line with CRLF, the terminator included).
    pub async fn read_multiline_raw(&mut self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        loop {
            let line = self.read_raw_line().await?;
            out.extend_from_slice(&line);
            if line == b".\r\n" {
                return Ok(out);
            }
        }
    }

    /// Reads the data of a multi-line response and undoes the dot-stuffing: the lines, each
    /// with its CRLF, without the terminator.
    pub async fn read_multiline(&mut self) -> Result<Vec<u8>, String> {
        Ok(unstuff(&self.read_multiline_raw().await?))
    }

    /// Reads the greeting and checks it is `+OK`.
    pub async fn greeting(&mut self) -> String {
        let line = self.read_status().await.unwrap_or_else(|e| panic!("expected the greeting: {e}"));
        assert!(line.starts_with("+OK "), "the greeting is not +OK: {line:?}");
        line
    }

    /// Sends `line` with CRLF and reads the status line.
    pub async fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await.unwrap_or_else(|e| panic!("send {line:?}: {e}"));
        self.read_status().await.unwrap_or_else(|e| panic!("after {line:?}: {e}"))
    }

    /// Sends `line` and checks that the answer is `+OK`; returns the status line.
    pub async fn ok(&mut self, line: &str) -> String {
        let status = self.command(line).await;
        assert!(status.starts_with("+OK"), "after {line:?}, expected +OK, got {status:?}");
        status
    }

    /// Sends `line` and checks that the answer starts with `prefix` (such as `-ERR [IN-USE]`).
    pub async fn expect(&mut self, line: &str, prefix: &str) -> String {
        let status = self.command(line).await;
        assert!(status.starts_with(prefix), "after {line:?}, expected {prefix:?}, got {status:?}");
        status
    }

    /// Sends `line`, checks the `+OK` and reads the multi-line data, un-stuffed.
    pub async fn multiline(&mut self, line: &str) -> (String, Vec<u8>) {
        let status = self.ok(line).await;
        let data = self.read_multiline().await.unwrap_or_else(|e| panic!("data of {line:?}: {e}"));
        (status, data)
    }

    /// The `(number, argument)` pairs of a LIST or UIDL listing.
    pub async fn listing(&mut self, line: &str) -> Vec<(u32, String)> {
        let (_, data) = self.multiline(line).await;
        String::from_utf8(data)
            .expect("a UTF-8 listing")
            .lines()
            .map(|l| {
                let (n, arg) = l.split_once(' ').unwrap_or_else(|| panic!("bad listing line {l:?}"));
                (n.parse().unwrap_or_else(|_| panic!("bad message number in {l:?}")), arg.to_string())
            })
            .collect()
    }

    /// STAT: the number of messages and their size in octets.
    pub async fn stat(&mut self) -> (u64, u64) {
        let status = self.ok("STAT").await;
        let mut it = status["+OK ".len()..].split(' ');
        let (Some(n), Some(size), None) = (it.next(), it.next(), it.next()) else {
            panic!("STAT answer is not `+OK n size`: {status:?}")
        };
        (n.parse().expect("a message count"), size.parse().expect("a size"))
    }

    /// QUIT, its `+OK` and the close.
    pub async fn quit(mut self) -> String {
        let status = self.ok("QUIT").await;
        self.expect_closed().await.unwrap_or_else(|e| panic!("after QUIT: {e}"));
        status
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

/// Undoes the dot-stuffing of multi-line data as read by [`Pop3Client::read_multiline_raw`]:
/// drops the terminator and the extra dot in front of lines that start with one.
pub fn unstuff(raw: &[u8]) -> Vec<u8> {
    let body = raw.strip_suffix(b".\r\n").unwrap_or(raw);
    let mut out = Vec::with_capacity(body.len());
    for line in body.split_inclusive(|b| *b == b'\n') {
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    out
}

/// The messages every transcript finds in the INBOX of alice@example.com, in this order;
/// bob@example.com's is empty. Their sizes are in the transcripts.
pub const TRANSCRIPT_MAIL: [&[u8]; 3] = [
    b"From: bob@example.com\r\nTo: alice@example.com\r\nSubject: one\r\n\r\nHello Alice.\r\n",
    b"From: bob@example.com\r\nTo: alice@example.com\r\nSubject: dots\r\n\r\n.\r\n..two dots\r\n.leading dot\r\nend\r\n",
    b"From: carol@example.com\r\nTo: alice@example.com\r\nSubject: three\r\n\r\nline 1\r\nline 2\r\nline 3\r\n",
];

/// A transcript file of `transcripts/pop3/`: the generic [`Transcript`] (see
/// [`crate::smtp::Transcript`] for the `C:`, `S:` and `CLOSED` lines) with POP3 directives,
/// which are comments to the generic parser:
///
/// ```text
/// # port: pop3 | pop3s             (default pop3; pop3s is implicit TLS)
/// # plaintext-auth: yes | no       (default yes: logins before TLS are accepted)
/// # limits: max_errors=3 max_line=64   (fields of tern_pop3::config::Limits)
/// ```
///
/// Before parsing, `{UIDVALIDITY}` is replaced by the UIDVALIDITY of alice's INBOX on the
/// server the transcript runs against.
#[derive(Debug, Clone)]
pub struct Pop3Transcript {
    pub name: String,
    pub text: String,
    pub port: ListenerKind,
    pub allow_plaintext_auth: bool,
    pub limits: Limits,
}

impl Pop3Transcript {
    pub fn parse(name: &str, text: &str) -> Result<Pop3Transcript, String> {
        // The generic parser checks the C:/S: lines and collects `# limits:`.
        let generic = Transcript::parse(name, text)?;
        let (port, allow_plaintext_auth) =
            port_and_plaintext_auth(name, text, &[("pop3", ListenerKind::Pop3), ("pop3s", ListenerKind::Pop3s)])?;
        let mut t = Pop3Transcript {
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
                "max_line" => t.limits.max_line = as_usize()?,
                "max_errors" => t.limits.max_errors = as_u32()?,
                "max_auth_failures" => t.limits.max_auth_failures = as_u32()?,
                "idle_timeout" => t.limits.idle_timeout = Duration::from_secs(v),
                "max_connections_per_ip" => t.limits.max_connections_per_ip = as_usize()?,
                "lease_ttl" => t.limits.lease_ttl = Duration::from_secs(v),
                other => return Err(format!("{name}: unknown limit {other:?}")),
            }
        }
        Ok(t)
    }

    /// The steps with the server's values filled in.
    pub fn steps(&self, uidvalidity: u32) -> Result<Vec<(usize, Step)>, String> {
        let text = self.text.replace("{UIDVALIDITY}", &uidvalidity.to_string());
        Ok(Transcript::parse(&self.name, &text)?.steps)
    }

    /// A new server for this transcript: its settings, and [`TRANSCRIPT_MAIL`] in alice's INBOX.
    /// Returns it with the UIDVALIDITY of that INBOX.
    pub async fn server(&self) -> (Pop3TestServer, u32) {
        let server = Pop3TestServer::start(self.limits.clone(), self.allow_plaintext_auth).await;
        for body in TRANSCRIPT_MAIL {
            server.deliver("alice@example.com", body).await;
        }
        let (_, uidvalidity, messages) = server.inbox("alice@example.com").await;
        assert_eq!(messages.len(), TRANSCRIPT_MAIL.len(), "the transcript mail was not all delivered");
        (server, uidvalidity)
    }
}

impl ServedTranscript for Pop3Transcript {
    fn parse_file(name: &str, text: &str) -> Result<Self, String> {
        Pop3Transcript::parse(name, text)
    }

    async fn play(&self, chunking: Chunking) -> Result<(), String> {
        let (server, uidvalidity) = self.server().await;
        let steps = self.steps(uidvalidity)?;
        let io = server.connect_io(&server.frontend, self.port).await;
        run_steps(&mut SmtpClient::new(io), &steps, chunking).await
    }
}
