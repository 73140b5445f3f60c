//! One SMTP transaction with one remote server (RFC 5321): greeting, EHLO, STARTTLS when offered
//! or required, MAIL with SIZE, BODY=8BITMIME and SMTPUTF8 as the message needs and the server
//! allows, RCPT for every recipient (pipelined when the server allows), DATA, QUIT.
//!
//! The outcome is per recipient. A failure of the whole session (no connection, a refused
//! greeting, TLS required but not offered, a dropped connection) is a [`HostFailure`], after
//! which the worker tries the next host.

use std::{sync::Arc, time::Duration};

use bytes::BytesMut;
use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

use crate::{
    client::{Capabilities, Reply, dot_stuff, header_needs_smtputf8, needs_8bit, parse_reply},
    config::TlsPolicy,
    route::Host,
};

/// What one recipient's delivery came to, with the server's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptOutcome {
    Delivered(String),
    Transient(String),
    Permanent(String),
}

/// The session failed before any recipient got a final answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HostFailure {
    /// True when every host would refuse the same way (the sender was refused, the message is
    /// too large for the server): the recipients fail for good.
    pub permanent: bool,
    pub message: String,
}

impl HostFailure {
    fn transient(message: impl Into<String>) -> Self {
        Self { permanent: false, message: message.into() }
    }
}

/// How the relay talks to remote servers.
#[derive(Debug, Clone)]
pub struct Settings {
    pub hostname: String,
    pub port: u16,
    pub tls: TlsPolicy,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// A TLS configuration that verifies certificates: when set (an MTA-STS policy in
    /// `enforce` mode), STARTTLS is required and the server's certificate must be valid for the
    /// host's name.
    pub verify: Option<Arc<rustls::ClientConfig>>,
}

/// One message for one server.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    pub mail_from: &'a str,
    pub recipients: &'a [String],
    pub message: &'a [u8],
    /// The sender's DSN parameters (RFC 3461), passed on to servers that support DSN.
    pub dsn: Option<&'a Dsn>,
}

/// DSN parameters of a message: RET and ENVID for MAIL, NOTIFY and ORCPT per recipient (in the
/// order of `Envelope::recipients`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dsn {
    pub ret: String,
    pub envid: String,
    pub notify: Vec<Vec<String>>,
    pub orcpt: Vec<String>,
}

/// An xtext (RFC 3461 section 4) of a parameter value: `+XX` for `+`, `=`, and bytes outside
/// `!`..`~`.
fn xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Conn {
    io: Box<dyn Io>,
    buf: BytesMut,
    timeout: Duration,
    host: String,
}

impl Conn {
    async fn reply(&mut self) -> Result<Reply, HostFailure> {
        loop {
            match parse_reply(&self.buf) {
                Ok(Some((reply, used))) => {
                    let _ = self.buf.split_to(used);
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(e) => return Err(HostFailure::transient(format!("{}: bad reply: {e}", self.host))),
            }
            let read = tokio::time::timeout(self.timeout, self.io.read_buf(&mut self.buf)).await;
            match read {
                Ok(Ok(0)) => return Err(HostFailure::transient(format!("{}: connection closed", self.host))),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(HostFailure::transient(format!("{}: {e}", self.host))),
                Err(_) => return Err(HostFailure::transient(format!("{}: timed out waiting for a reply", self.host))),
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), HostFailure> {
        let write = async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(HostFailure::transient(format!("{}: {e}", self.host))),
            Err(_) => Err(HostFailure::transient(format!("{}: timed out sending", self.host))),
        }
    }

    async fn command(&mut self, line: &str) -> Result<Reply, HostFailure> {
        self.send(format!("{line}\r\n").as_bytes()).await?;
        self.reply().await
    }

    async fn ehlo(&mut self, hostname: &str) -> Result<Capabilities, HostFailure> {
        let reply = self.command(&format!("EHLO {hostname}")).await?;
        if reply.is_positive_completion() {
            return Ok(Capabilities::from_ehlo(&reply));
        }
        // An old server without ESMTP: HELO, and no extensions.
        let reply = self.command(&format!("HELO {hostname}")).await?;
        if reply.is_positive_completion() {
            Ok(Capabilities::default())
        } else {
            Err(HostFailure::transient(format!("{}: HELO refused: {reply}", self.host)))
        }
    }
}

/// What a server answered: an outcome per recipient, in order, and whether it took the DSN
/// parameters (and so will report delivery itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub outcomes: Vec<RcptOutcome>,
    pub dsn: bool,
}

/// Delivers `envelope` to `host`.
pub async fn send(host: &Host, settings: &Settings, envelope: Envelope<'_>) -> Result<Sent, HostFailure> {
    let addr = std::net::SocketAddr::new(host.ip, settings.port);
    let tcp = match tokio::time::timeout(settings.connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(HostFailure::transient(format!("{host}: {e}"))),
        Err(_) => return Err(HostFailure::transient(format!("{host}: connection timed out"))),
    };
    let _ = tcp.set_nodelay(true);
    let mut conn = Conn {
        io: Box::new(tcp),
        buf: BytesMut::with_capacity(4096),
        timeout: settings.command_timeout,
        host: host.to_string(),
    };
    let greeting = conn.reply().await?;
    if !greeting.is_positive_completion() {
        let _ = conn.command("QUIT").await;
        return Err(HostFailure::transient(format!("{host}: greeting refused: {greeting}")));
    }
    let mut caps = conn.ehlo(&settings.hostname).await?;
    let required = settings.tls == TlsPolicy::Required || settings.verify.is_some();
    if caps.starttls && (settings.tls != TlsPolicy::Disabled || settings.verify.is_some()) {
        let reply = conn.command("STARTTLS").await?;
        if reply.code == 220 {
            conn = start_tls(conn, &host.name, settings.verify.clone()).await?;
            caps = conn.ehlo(&settings.hostname).await?;
        } else if required {
            return Err(HostFailure::transient(format!("{host}: STARTTLS refused: {reply}")));
        }
    } else if required {
        let _ = conn.command("QUIT").await;
        let why = if settings.verify.is_some() { "its MTA-STS policy" } else { "this domain's TLS policy" };
        return Err(HostFailure::transient(format!(
            "{host}: TLS is required by {why} but the server does not offer STARTTLS"
        )));
    }
    let outcomes = transaction(&mut conn, &caps, envelope, host).await?;
    // The outcome is decided; a QUIT that goes wrong changes nothing.
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.command("QUIT")).await;
    Ok(Sent { outcomes, dsn: caps.dsn && envelope.dsn.is_some() })
}

async fn transaction(
    conn: &mut Conn,
    caps: &Capabilities,
    envelope: Envelope<'_>,
    host: &Host,
) -> Result<Vec<RcptOutcome>, HostFailure> {
    let size = envelope.message.len() as u64;
    if let Some(limit) = caps.size
        && size > limit
    {
        return Err(HostFailure {
            permanent: true,
            message: format!("552 5.3.4 Message of {size} bytes exceeds the {limit} bytes {host} accepts"),
        });
    }
    let utf8 =
        header_needs_smtputf8(envelope.mail_from) || envelope.recipients.iter().any(|r| header_needs_smtputf8(r));
    if utf8 && !caps.smtputf8 {
        return Err(HostFailure {
            permanent: true,
            message: format!("553 5.6.7 {host} does not support SMTPUTF8, which the addresses need"),
        });
    }
    let mut mail = format!("MAIL FROM:<{}>", envelope.mail_from);
    if caps.size.is_some() {
        mail.push_str(&format!(" SIZE={size}"));
    }
    // Without 8BITMIME on the server, the message goes as it is, as Postfix does by default:
    // converting it would break its DKIM signature, and such servers are rare.
    if caps.eight_bit_mime && needs_8bit(envelope.message) {
        mail.push_str(" BODY=8BITMIME");
    }
    if utf8 {
        mail.push_str(" SMTPUTF8");
    }
    let dsn = envelope.dsn.filter(|_| caps.dsn);
    if let Some(d) = dsn {
        if !d.ret.is_empty() {
            mail.push_str(&format!(" RET={}", d.ret));
        }
        if !d.envid.is_empty() {
            mail.push_str(&format!(" ENVID={}", xtext(&d.envid)));
        }
    }
    let rcpts: Vec<String> = envelope
        .recipients
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut line = format!("RCPT TO:<{r}>");
            if let Some(d) = dsn {
                if let Some(n) = d.notify.get(i).filter(|n| !n.is_empty()) {
                    line.push_str(&format!(" NOTIFY={}", n.join(",")));
                }
                if let Some(o) = d.orcpt.get(i).filter(|o| !o.is_empty()) {
                    // ORCPT is kept as the sender gave it: `type;xtext`.
                    line.push_str(&format!(" ORCPT={o}"));
                }
            }
            line
        })
        .collect();
    let (mail_reply, rcpt_replies) = if caps.pipelining {
        let mut batch = format!("{mail}\r\n");
        for r in &rcpts {
            batch.push_str(r);
            batch.push_str("\r\n");
        }
        conn.send(batch.as_bytes()).await?;
        let mail_reply = conn.reply().await?;
        let mut replies = Vec::with_capacity(rcpts.len());
        for _ in &rcpts {
            replies.push(conn.reply().await?);
        }
        (mail_reply, replies)
    } else {
        let mail_reply = conn.command(&mail).await?;
        let mut replies = Vec::with_capacity(rcpts.len());
        if mail_reply.is_positive_completion() {
            for r in &rcpts {
                replies.push(conn.command(r).await?);
            }
        }
        (mail_reply, replies)
    };
    if !mail_reply.is_positive_completion() {
        let message = format!("{host} refused the sender: {mail_reply}");
        return Err(HostFailure { permanent: mail_reply.is_permanent(), message });
    }
    let mut outcomes: Vec<Option<RcptOutcome>> = rcpt_replies
        .iter()
        .map(|r| match r.code {
            200..=299 => None,
            400..=499 => Some(RcptOutcome::Transient(r.to_string())),
            _ => Some(RcptOutcome::Permanent(r.to_string())),
        })
        .collect();
    if outcomes.iter().all(Option::is_some) {
        let _ = conn.command("RSET").await;
        return Ok(outcomes.into_iter().flatten().collect());
    }
    let data = conn.command("DATA").await?;
    let final_reply = if data.code == 354 {
        conn.send(&dot_stuff(envelope.message)).await?;
        // The end of data is where servers do their work (filters, storage): give it longer.
        let timeout = conn.timeout;
        conn.timeout = timeout * 2;
        let reply = conn.reply().await?;
        conn.timeout = timeout;
        reply
    } else {
        data
    };
    let verdict = match final_reply.code {
        200..=299 => RcptOutcome::Delivered(final_reply.to_string()),
        400..=499 => RcptOutcome::Transient(final_reply.to_string()),
        _ => RcptOutcome::Permanent(final_reply.to_string()),
    };
    for o in &mut outcomes {
        if o.is_none() {
            *o = Some(verdict.clone());
        }
    }
    Ok(outcomes.into_iter().flatten().collect())
}

async fn start_tls(conn: Conn, name: &str, verify: Option<Arc<rustls::ClientConfig>>) -> Result<Conn, HostFailure> {
    let Conn { io, buf, timeout, host } = conn;
    if !buf.is_empty() {
        // Bytes after the 220 would be injected by a man in the middle (CVE-2011-0411).
        return Err(HostFailure::transient(format!("{host}: data after the STARTTLS reply")));
    }
    let server_name = match (ServerName::try_from(name.to_string()), verify.is_some()) {
        (Ok(n), _) => n,
        (Err(_), true) => return Err(HostFailure::transient(format!("{host}: {name:?} is not a name to verify"))),
        (Err(_), false) => ServerName::try_from("localhost").expect("a valid name"),
    };
    let config = verify.unwrap_or_else(client_config);
    let handshake = TlsConnector::from(config).connect(server_name, io);
    let tls: TlsStream<Box<dyn Io>> = match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(HostFailure::transient(format!("{host}: TLS handshake failed: {e}"))),
        Err(_) => return Err(HostFailure::transient(format!("{host}: TLS handshake timed out"))),
    };
    Ok(Conn { io: Box::new(tls), buf, timeout, host })
}

/// A TLS configuration that verifies server certificates against the system's roots and the
/// PEM certificates in `extra` (MTA-STS delivery, and the HTTPS fetch of the policies).
pub fn verifying_config(extra: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = extra {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let certs = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{} holds no PEM certificates: {e}", path.display()))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!("{} holds no usable certificate", path.display()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// TLS between mail servers without DANE or MTA-STS authenticates nothing (an attacker who can
/// intercept can also strip STARTTLS), so certificates are not verified, as in Postfix's "may"
/// and "encrypt" levels. Signatures still are: the handshake must be a real one.
fn client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext_escapes_plus_equals_and_controls() {
        assert_eq!(xtext("abc-123"), "abc-123");
        assert_eq!(xtext("a+b=c d"), "a+2Bb+3Dc+20d");
    }
}
