//! A harness for end-to-end tests of the ManageSieve front-end over real loopback sockets.
//!
//! [`ManageSieveTestServer::start`] starts a mailbox service ([`TestServer`]) and, in the same
//! process, the ManageSieve server of `tern-managesieve` talking to it over gRPC, on a free
//! `127.0.0.1` port, with STARTTLS on a development certificate made for the test
//! ([`ManageSieveTestServer::ca_cert`] is what clients trust). Every server starts with the
//! accounts of [`ACCOUNTS`] and no scripts.
//!
//! Scripted sessions (transcripts) use the generic runner of [`crate::smtp`];
//! [`ManageSieveTranscript`] reads the ManageSieve directives of a transcript file.

use std::{net::SocketAddr, time::Duration};

use tern_managesieve::{
    backend::grpc::GrpcBackend,
    config::{Limits, ListenerKind, ManageSieveConfig},
    server::Listener,
};

pub use crate::common::{ACCOUNTS, Background, IO_TIMEOUT};
use crate::{
    TestServer,
    common::{DevCert, ServedTranscript, bind_loopback, create_accounts, lenient_mailbox_limits, mailbox_channel},
    smtp::{BoxIo, Chunking, SmtpClient, Transcript, run_steps},
};

/// How long [`ManageSieveTestServer::stop_frontend`] lets sessions finish.
const GRACE: Duration = Duration::from_secs(2);

/// A mailbox service and a ManageSieve server in front of it, both on loopback.
#[derive(Debug)]
pub struct ManageSieveTestServer {
    pub mailbox: TestServer,
    /// The ManageSieve listener (port 4190 semantics: STARTTLS offered).
    pub addr: SocketAddr,
    /// The PEM file of the server's certificate, for clients that verify it.
    pub ca_cert: std::path::PathBuf,
    accounts: std::collections::HashMap<String, u64>,
    server: Background,
    // Declared last: the certificate directory outlives the servers.
    cert: DevCert,
}

impl ManageSieveTestServer {
    /// Starts the servers: the front-end with `limits`, logins before TLS allowed or not; the
    /// mailbox service with `mailbox_limits` (its Sieve quotas among them).
    pub async fn start(
        limits: Limits,
        allow_plaintext_auth: bool,
        mailbox_limits: tern_mailbox::Limits,
    ) -> ManageSieveTestServer {
        let mailbox = TestServer::start(mailbox_limits).await;
        let accounts = create_accounts(&mailbox, &ACCOUNTS).await;
        let cert = DevCert::new("tern-managesieve-test-");
        let (socket, addr) = bind_loopback().await;
        let cfg = std::sync::Arc::new(ManageSieveConfig {
            limits,
            tls: Some(cert.server_config.clone()),
            allow_plaintext_auth,
        });
        let listeners = vec![Listener { kind: ListenerKind::ManageSieve, socket, proxy_protocol: false }];
        let backend = std::sync::Arc::new(GrpcBackend::new(mailbox_channel(mailbox.addr)));
        let server =
            Background::spawn(GRACE * 3, move |rx| tern_managesieve::server::serve(cfg, backend, listeners, rx, GRACE));
        ManageSieveTestServer { mailbox, addr, ca_cert: cert.ca_cert.clone(), accounts, server, cert }
    }

    /// Servers with the default limits and the mailbox service's lenient ones.
    pub async fn start_default(allow_plaintext_auth: bool) -> ManageSieveTestServer {
        Self::start(Limits::default(), allow_plaintext_auth, lenient_mailbox_limits()).await
    }

    /// A new plain TCP connection to the listener, as a boxed stream; the greeting is not read.
    pub async fn connect_io(&self) -> BoxIo {
        crate::common::connect(self.addr, None, "the ManageSieve server").await
    }

    /// The id of one of the accounts of [`ACCOUNTS`].
    pub fn account_id(&self, address: &str) -> u64 {
        crate::common::account_id_in(&self.accounts, address)
    }

    /// Stops the front-end gracefully: sessions waiting for a command are told and closed.
    pub async fn stop_frontend(&mut self) {
        self.server.stop().await;
    }

    /// The server's certificate configuration, for a second front-end.
    pub fn tls(&self) -> std::sync::Arc<rustls::ServerConfig> {
        self.cert.server_config.clone()
    }
}

/// A transcript file of `transcripts/managesieve/`: the generic [`Transcript`] (see
/// [`crate::smtp::Transcript`] for the `C:`, `S:` and `CLOSED` lines) with ManageSieve
/// directives, which are comments to the generic parser:
///
/// ```text
/// # plaintext-auth: yes | no            (default yes: logins before TLS are accepted)
/// # limits: max_errors=3 max_line=64    (fields of tern_managesieve::config::Limits)
/// # mailbox: sieve_max_scripts=2        (the mailbox service's Sieve limits)
/// ```
///
/// A `C:` line is sent with CRLF, so a literal's octets count the CRLF of each of its lines; an
/// empty `C:` line sends the CRLF that ends a command after its literal.
#[derive(Debug, Clone)]
pub struct ManageSieveTranscript {
    pub name: String,
    pub steps: Vec<(usize, crate::smtp::Step)>,
    pub allow_plaintext_auth: bool,
    pub limits: Limits,
    pub mailbox_limits: tern_mailbox::Limits,
}

impl ManageSieveTranscript {
    pub fn parse(name: &str, text: &str) -> Result<ManageSieveTranscript, String> {
        // The generic parser checks the C:/S: lines and collects `# limits:`.
        let generic = Transcript::parse(name, text)?;
        let (_, allow_plaintext_auth) =
            crate::common::port_and_plaintext_auth(name, text, &[("managesieve", ListenerKind::ManageSieve)])?;
        let mut t = ManageSieveTranscript {
            name: name.into(),
            steps: generic.steps,
            allow_plaintext_auth,
            limits: Limits::default(),
            mailbox_limits: lenient_mailbox_limits(),
        };
        for (k, v) in &generic.limits {
            let v = *v;
            let as_usize = || usize::try_from(v).map_err(|_| format!("{name}: {k}={v} is too large"));
            let as_u32 = || u32::try_from(v).map_err(|_| format!("{name}: {k}={v} is too large"));
            match k.as_str() {
                "max_line" => t.limits.max_line = as_usize()?,
                "max_script_bytes" => t.limits.max_script_bytes = v,
                "max_unauthenticated_literal" => t.limits.max_unauthenticated_literal = v,
                "max_discard" => t.limits.max_discard = v,
                "idle_timeout" => t.limits.idle_timeout = Duration::from_secs(v),
                "max_errors" => t.limits.max_errors = as_u32()?,
                "max_auth_failures" => t.limits.max_auth_failures = as_u32()?,
                "max_connections_per_ip" => t.limits.max_connections_per_ip = as_usize()?,
                "max_redirects" => t.limits.max_redirects = as_u32()?,
                other => return Err(format!("{name}: unknown limit {other:?}")),
            }
        }
        for (i, line) in text.lines().enumerate() {
            let Some(fields) = line.strip_prefix("# mailbox:") else { continue };
            for kv in fields.split_whitespace() {
                let (k, v) = kv.split_once('=').ok_or_else(|| format!("{name}:{}: expected key=value", i + 1))?;
                let v: u64 = v.parse().map_err(|_| format!("{name}:{}: not a number: {kv:?}", i + 1))?;
                let m = &mut t.mailbox_limits;
                match k {
                    "sieve_max_scripts" => m.sieve_max_scripts = v as usize,
                    "sieve_max_script_bytes" => m.sieve_max_script_bytes = v,
                    "sieve_max_total_bytes" => m.sieve_max_total_bytes = v,
                    other => return Err(format!("{name}:{}: unknown mailbox limit {other:?}", i + 1)),
                }
            }
        }
        Ok(t)
    }
}

impl ServedTranscript for ManageSieveTranscript {
    fn parse_file(name: &str, text: &str) -> Result<Self, String> {
        ManageSieveTranscript::parse(name, text)
    }

    async fn play(&self, chunking: Chunking) -> Result<(), String> {
        let server =
            ManageSieveTestServer::start(self.limits.clone(), self.allow_plaintext_auth, self.mailbox_limits.clone())
                .await;
        let io = server.connect_io().await;
        run_steps(&mut SmtpClient::new(io), &self.steps, chunking).await
    }
}

/// `"\0user\0password"` in base64, the PLAIN response of one of the accounts of [`ACCOUNTS`].
pub fn plain_response(address: &str) -> String {
    use base64::Engine as _;
    let password = crate::common::password_in(&ACCOUNTS, address);
    base64::engine::general_purpose::STANDARD.encode(format!("\0{address}\0{password}"))
}
