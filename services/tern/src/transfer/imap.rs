//! The IMAP client `tern admin import` reads a remote account with: just what a copy needs
//! (LOGIN or AUTHENTICATE PLAIN, STARTTLS or implicit TLS, LIST, LSUB, EXAMINE and UID FETCH),
//! over imap-codec's response decoder. Framing is imap-codec's `Fragmentizer`, which knows where
//! each response ends (literals included) before it is decoded, so a response the decoder does
//! not understand is skipped whole rather than derailing the stream.
//!
//! Folders are opened with EXAMINE and bodies fetched with BODY.PEEK: an import changes nothing
//! at the source, not even \Seen.

use std::{sync::Arc, time::Duration};

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use imap_codec::{
    GreetingCodec, ResponseCodec,
    fragmentizer::Fragmentizer,
    imap_types::{
        IntoStatic,
        fetch::MessageDataItem,
        flag::FlagFetch,
        mailbox::Mailbox,
        response::{Code, Data, Response, Status, StatusKind},
    },
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

/// How long the source may stay silent in the middle of a command.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// The largest single response accepted: a message body arrives as one.
const MAX_RESPONSE: u32 = 1 << 30;

/// Where and as whom to log in.
#[derive(Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// Implicit TLS (imaps://); otherwise STARTTLS when the server offers it.
    pub tls: bool,
    pub user: String,
    pub password: String,
    /// AUTHENTICATE PLAIN rather than LOGIN.
    pub plain: bool,
    /// Extra CA certificates (PEM) the server's certificate may chain to.
    pub ca: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password stays out of logs and panics.
        write!(f, "{}://{}@{}:{}", if self.tls { "imaps" } else { "imap" }, self.user, self.host, self.port)
    }
}

impl Endpoint {
    /// Parses `imap://host[:port]` or `imaps://host[:port]`.
    pub fn parse(
        url: &str,
        user: String,
        password: String,
        plain: bool,
        ca: Option<std::path::PathBuf>,
    ) -> anyhow::Result<Self> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("imaps://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("imap://") {
            (false, rest)
        } else {
            bail!("{url:?} is not an imap:// or imaps:// address");
        };
        let rest = rest.trim_end_matches('/');
        let default = if tls { 993 } else { 143 };
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => {
                (h.trim_matches(['[', ']']).to_string(), p.parse().with_context(|| format!("bad port in {url:?}"))?)
            }
            _ => (rest.trim_matches(['[', ']']).to_string(), default),
        };
        if host.is_empty() {
            bail!("{url:?} names no host");
        }
        Ok(Self { host, port, tls, user, password, plain, ca })
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One folder as the source lists it.
#[derive(Debug, Clone)]
pub struct RemoteFolder {
    /// The name as the server spells it (modified UTF-7), to send back.
    pub raw: String,
    /// UTF-8, with `/` between levels.
    pub name: String,
    /// \Noselect or \NonExistent: a level of the tree that holds no messages.
    pub selectable: bool,
    /// The special use the server gives it (RFC 6154: `\Sent`, `\Trash`, ...), if any.
    pub special_use: Option<String>,
}

/// One message as UID FETCH lists it.
#[derive(Debug, Clone, Default)]
pub struct RemoteMessage {
    pub uid: u32,
    pub flags: Vec<String>,
    pub internal_date: i64,
    pub size: u64,
    pub message_id: Option<String>,
}

/// A logged-in connection.
pub struct Session {
    io: Box<dyn Io>,
    frag: Fragmentizer,
    tag: u64,
    capabilities: Vec<String>,
    selected: Option<String>,
    endpoint: Arc<Endpoint>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("endpoint", &self.endpoint).field("selected", &self.selected).finish()
    }
}

fn tls_connector(endpoint: &Endpoint) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let config = tern_relay::send::verifying_config(endpoint.ca.as_deref()).map_err(|e| anyhow!(e))?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn wrap_tls(io: Box<dyn Io>, endpoint: &Endpoint) -> anyhow::Result<Box<dyn Io>> {
    let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
        .with_context(|| format!("{:?} is not a host name TLS can verify", endpoint.host))?;
    let tls = tls_connector(endpoint)?
        .connect(name, io)
        .await
        .with_context(|| format!("TLS with {}:{}", endpoint.host, endpoint.port))?;
    Ok(Box::new(tls))
}

/// Quotes an IMAP string, or says it needs a literal (CR, LF, NUL or 8-bit bytes).
fn quoted(s: &str) -> Option<String> {
    if s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0 || b >= 0x80) {
        return None;
    }
    Some(format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
}

impl Session {
    /// Connects, secures and logs in.
    pub async fn connect(endpoint: Arc<Endpoint>) -> anyhow::Result<Session> {
        let addr = format!("{}:{}", endpoint.host, endpoint.port);
        let tcp = tokio::time::timeout(READ_TIMEOUT, TcpStream::connect(&addr))
            .await
            .map_err(|_| anyhow!("connecting to {addr} timed out"))?
            .with_context(|| format!("cannot connect to {addr}"))?;
        let _ = tcp.set_nodelay(true);
        let mut io: Box<dyn Io> = Box::new(tcp);
        if endpoint.tls {
            io = wrap_tls(io, &endpoint).await?;
        }
        let mut s = Session {
            io,
            frag: Fragmentizer::new(MAX_RESPONSE),
            tag: 0,
            capabilities: Vec::new(),
            selected: None,
            endpoint: endpoint.clone(),
        };
        s.greeting().await?;
        if s.capabilities.is_empty() {
            s.capability().await?;
        }
        if !endpoint.tls && s.has("STARTTLS") {
            s.run("STARTTLS").await?;
            let io = std::mem::replace(&mut s.io, Box::new(tokio::io::duplex(1).0));
            s.io = wrap_tls(io, &endpoint).await?;
            s.frag = Fragmentizer::new(MAX_RESPONSE);
            s.capability().await?;
        }
        s.login().await?;
        // The capabilities may change after login (RFC 3501 section 6.2.3).
        s.capability().await?;
        Ok(s)
    }

    fn has(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c.eq_ignore_ascii_case(capability))
    }

    async fn greeting(&mut self) -> anyhow::Result<()> {
        loop {
            if let Some(info) = self.frag.progress() {
                let _ = info;
                if !self.frag.is_message_complete() {
                    continue;
                }
                let greeting = self
                    .frag
                    .decode_message(&GreetingCodec::default())
                    .map_err(|e| anyhow!("the server's greeting is not IMAP: {e:?}"))?;
                if let Some(Code::Capability(caps)) = &greeting.code {
                    self.capabilities = caps.as_ref().iter().map(|c| c.to_string()).collect();
                }
                if greeting.kind == imap_codec::imap_types::response::GreetingKind::Bye {
                    bail!("the server said BYE: {}", greeting.text);
                }
                return Ok(());
            }
            self.fill().await?;
        }
    }

    /// Reads more bytes into the fragmentizer.
    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut buf = [0u8; 64 * 1024];
        let n = tokio::time::timeout(READ_TIMEOUT, self.io.read(&mut buf))
            .await
            .map_err(|_| anyhow!("the source server sent nothing for {} s", READ_TIMEOUT.as_secs()))?
            .context("reading from the source server")?;
        if n == 0 {
            bail!("the source server closed the connection");
        }
        self.frag.enqueue_bytes(&buf[..n]);
        Ok(())
    }

    /// The next whole response; one the decoder cannot read is skipped (its bounds are known).
    async fn response(&mut self) -> anyhow::Result<Response<'static>> {
        loop {
            match self.frag.progress() {
                Some(_) if self.frag.is_message_complete() => {
                    match self.frag.decode_message(&ResponseCodec::default()) {
                        Ok(r) => return Ok(r.into_static()),
                        Err(e) => {
                            let bytes = self.frag.message_bytes();
                            let head = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned();
                            tracing::debug!(response = %head.trim_end(), "skipped a response imap-codec cannot decode: {e:?}");
                        }
                    }
                }
                Some(_) => {}
                None => self.fill().await?,
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.io.write_all(bytes).await.context("writing to the source server")?;
        self.io.flush().await.context("writing to the source server")
    }

    fn next_tag(&mut self) -> String {
        self.tag += 1;
        format!("T{}", self.tag)
    }

    /// Runs a command and gives its untagged responses; NO and BAD are errors.
    async fn run(&mut self, command: &str) -> anyhow::Result<Vec<Response<'static>>> {
        let tag = self.next_tag();
        self.send(format!("{tag} {command}\r\n").as_bytes()).await?;
        self.collect(&tag, command).await
    }

    async fn collect(&mut self, tag: &str, command: &str) -> anyhow::Result<Vec<Response<'static>>> {
        let mut out = Vec::new();
        loop {
            let r = self.response().await?;
            match &r {
                Response::Status(Status::Tagged(t)) if t.tag.as_ref() == tag => {
                    if let Some(Code::Capability(caps)) = &t.body.code {
                        self.capabilities = caps.as_ref().iter().map(|c| c.to_string()).collect();
                    }
                    return match t.body.kind {
                        StatusKind::Ok => Ok(out),
                        _ => {
                            let verb = command.split(' ').next().unwrap_or(command);
                            Err(anyhow!("the source server refused {verb}: {}", t.body.text))
                        }
                    };
                }
                Response::Status(Status::Bye(b)) => bail!("the source server said BYE: {}", b.text),
                Response::Data(Data::Capability(caps)) => {
                    self.capabilities = caps.as_ref().iter().map(|c| c.to_string()).collect();
                }
                _ => out.push(r),
            }
        }
    }

    async fn capability(&mut self) -> anyhow::Result<()> {
        self.run("CAPABILITY").await.map(|_| ())
    }

    async fn login(&mut self) -> anyhow::Result<()> {
        let endpoint = self.endpoint.clone();
        if endpoint.plain || self.has("LOGINDISABLED") {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("\0{}\0{}", endpoint.user, endpoint.password));
            let tag = self.next_tag();
            if self.has("SASL-IR") {
                self.send(format!("{tag} AUTHENTICATE PLAIN {token}\r\n").as_bytes()).await?;
            } else {
                self.send(format!("{tag} AUTHENTICATE PLAIN\r\n").as_bytes()).await?;
                self.continuation().await?;
                self.send(format!("{token}\r\n").as_bytes()).await?;
            }
            return self
                .collect(&tag, "AUTHENTICATE")
                .await
                .map(|_| ())
                .with_context(|| format!("logging in as {}", endpoint.user));
        }
        let tag = self.next_tag();
        self.send(format!("{tag} LOGIN ").as_bytes()).await?;
        self.astring(&endpoint.user).await?;
        self.send(b" ").await?;
        self.astring(&endpoint.password).await?;
        self.send(b"\r\n").await?;
        self.collect(&tag, "LOGIN").await.map(|_| ()).with_context(|| format!("logging in as {}", endpoint.user))
    }

    /// Sends a string argument: quoted when it can be, a synchronising literal otherwise.
    async fn astring(&mut self, s: &str) -> anyhow::Result<()> {
        if let Some(q) = quoted(s) {
            return self.send(q.as_bytes()).await;
        }
        self.send(format!("{{{}}}\r\n", s.len()).as_bytes()).await?;
        self.continuation().await?;
        self.send(s.as_bytes()).await
    }

    async fn continuation(&mut self) -> anyhow::Result<()> {
        loop {
            match self.response().await? {
                Response::CommandContinuationRequest(_) => return Ok(()),
                Response::Status(Status::Tagged(t)) => bail!("the source server refused: {}", t.body.text),
                _ => {}
            }
        }
    }

    /// Every folder (LIST "" "*"), in the server's order.
    pub async fn folders(&mut self) -> anyhow::Result<Vec<RemoteFolder>> {
        let mut out = Vec::new();
        for r in self.run("LIST \"\" \"*\"").await? {
            if let Response::Data(Data::List { items, delimiter, mailbox }) = r {
                let (raw, name) = names(&mailbox, delimiter.map(|d| d.inner()));
                let attributes: Vec<String> = items.iter().map(|a| a.to_string()).collect();
                let selectable = !attributes
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case("\\Noselect") || a.eq_ignore_ascii_case("\\NonExistent"));
                let special_use = attributes.into_iter().find(|a| {
                    ["\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive"].iter().any(|s| a.eq_ignore_ascii_case(s))
                });
                out.push(RemoteFolder { raw, name, selectable, special_use });
            }
        }
        Ok(out)
    }

    /// The subscribed names (LSUB "" "*"), UTF-8 with `/` between levels.
    pub async fn subscribed(&mut self) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        for r in self.run("LSUB \"\" \"*\"").await? {
            if let Response::Data(Data::Lsub { delimiter, mailbox, .. }) = r {
                out.push(names(&mailbox, delimiter.map(|d| d.inner())).1);
            }
        }
        Ok(out)
    }

    /// Opens a folder read-only and gives its UIDVALIDITY.
    pub async fn examine(&mut self, raw: &str) -> anyhow::Result<u32> {
        let name = quoted(raw).ok_or_else(|| anyhow!("folder name {raw:?} is not 7-bit"))?;
        let mut uidvalidity = 0;
        for r in self.run(&format!("EXAMINE {name}")).await.with_context(|| format!("opening {raw}"))? {
            if let Response::Status(Status::Untagged(body)) = &r
                && let Some(Code::UidValidity(v)) = &body.code
            {
                uidvalidity = v.get();
            }
        }
        self.selected = Some(raw.to_string());
        Ok(uidvalidity)
    }

    /// Opens `raw` unless it is open already.
    pub async fn ensure_open(&mut self, raw: &str) -> anyhow::Result<()> {
        if self.selected.as_deref() != Some(raw) {
            self.examine(raw).await?;
        }
        Ok(())
    }

    /// Lists the open folder's messages: UID, flags, internal date, size and Message-ID.
    pub async fn list(&mut self) -> anyhow::Result<Vec<RemoteMessage>> {
        let responses = self
            .run("UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            .await?;
        let mut out = Vec::with_capacity(responses.len());
        for r in responses {
            if let Response::Data(Data::Fetch { items, .. }) = r {
                let mut m = RemoteMessage::default();
                for item in items.into_iter() {
                    match item {
                        MessageDataItem::Uid(uid) => m.uid = uid.get(),
                        MessageDataItem::Flags(flags) => m.flags = flag_names(&flags),
                        MessageDataItem::InternalDate(d) => m.internal_date = d.as_ref().timestamp(),
                        MessageDataItem::Rfc822Size(size) => m.size = u64::from(size),
                        MessageDataItem::BodyExt { data, .. } => {
                            m.message_id = data.0.as_ref().and_then(|h| crate::transfer::message_id(h.as_ref()));
                        }
                        _ => {}
                    }
                }
                if m.uid > 0 {
                    out.push(m);
                }
            }
        }
        out.sort_by_key(|m| m.uid);
        Ok(out)
    }

    /// The bodies of `uids` in the open folder, by UID; a message gone meanwhile is absent.
    pub async fn bodies(&mut self, uids: &[u32]) -> anyhow::Result<Vec<(u32, Vec<u8>)>> {
        let set = uid_set(uids);
        let mut out = Vec::with_capacity(uids.len());
        for r in self.run(&format!("UID FETCH {set} (UID BODY.PEEK[])")).await? {
            if let Response::Data(Data::Fetch { items, .. }) = r {
                let (mut uid, mut body) = (0, None);
                for item in items.into_iter() {
                    match item {
                        MessageDataItem::Uid(u) => uid = u.get(),
                        MessageDataItem::BodyExt { section: None, data, .. } => {
                            body = Some(data.0.map(|b| b.as_ref().to_vec()).unwrap_or_default());
                        }
                        _ => {}
                    }
                }
                if let (true, Some(body)) = (uid > 0, body) {
                    out.push((uid, body));
                }
            }
        }
        Ok(out)
    }

    /// Ends the session politely; errors do not matter any more.
    pub async fn logout(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.run("LOGOUT")).await;
    }
}

/// The raw (to send back) and UTF-8 `/`-separated (for Tern) names of a listed mailbox.
fn names(mailbox: &Mailbox<'_>, delimiter: Option<char>) -> (String, String) {
    let raw = match mailbox {
        Mailbox::Inbox => "INBOX".to_string(),
        Mailbox::Other(other) => String::from_utf8_lossy(other.as_ref()).into_owned(),
    };
    let decoded = tern_mail::utf7::decode_lenient(&raw);
    let name = match delimiter {
        Some(d) if d != '/' => decoded.split(d).collect::<Vec<_>>().join("/"),
        _ => decoded,
    };
    let name = if name.eq_ignore_ascii_case("INBOX") { "INBOX".to_string() } else { name };
    (raw, name)
}

fn flag_names(flags: &[FlagFetch<'_>]) -> Vec<String> {
    flags
        .iter()
        .filter_map(|f| match f {
            FlagFetch::Flag(f) => Some(f.to_string()),
            // \Recent belongs to the source's sessions, not to the message.
            FlagFetch::Recent => None,
        })
        .collect()
}

/// A compact UID set: runs become `a:b`.
pub fn uid_set(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets_are_compact() {
        assert_eq!(uid_set(&[5, 1, 2, 3, 9, 10, 12]), "1:3,5,9:10,12");
        assert_eq!(uid_set(&[7]), "7");
        assert_eq!(uid_set(&[]), "");
    }

    #[test]
    fn endpoints_parse() {
        let e = Endpoint::parse("imaps://mail.example.com", "u".into(), "p".into(), false, None).unwrap();
        assert_eq!((e.host.as_str(), e.port, e.tls), ("mail.example.com", 993, true));
        let e = Endpoint::parse("imap://127.0.0.1:1143/", "u".into(), "p".into(), false, None).unwrap();
        assert_eq!((e.host.as_str(), e.port, e.tls), ("127.0.0.1", 1143, false));
        let e = Endpoint::parse("imap://[::1]:1143", "u".into(), "p".into(), false, None).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 1143));
        assert!(Endpoint::parse("pop3://x", "u".into(), "p".into(), false, None).is_err());
        assert!(format!("{e:?}").contains("u@") && !format!("{e:?}").contains('p'.to_string().repeat(2).as_str()));
    }

    #[test]
    fn names_follow_the_delimiter_and_decode() {
        let other = |s: &str| Mailbox::try_from(s.to_string()).unwrap();
        assert_eq!(names(&other("Archive.2024"), Some('.')).1, "Archive/2024");
        assert_eq!(names(&other("Entw&APw-rfe"), Some('/')).1, "Entwürfe");
        assert_eq!(names(&other("inbox"), Some('/')).1, "INBOX");
    }

    #[test]
    fn strings_are_quoted_or_need_a_literal() {
        assert_eq!(quoted("pa\"ss\\").as_deref(), Some("\"pa\\\"ss\\\\\""));
        assert_eq!(quoted("grüße"), None);
    }
}
