//! gRPC between Tern's parts: the client channel every front-end, relay, operator and `tern
//! admin` uses to reach the mailbox service, and the server side of the same settings.
//!
//! **Balancing.** Behind a Kubernetes ClusterIP Service, one HTTP/2 connection lands on one pod
//! for its whole life, so replicas would not share the load and a new one would get nothing.
//! [`connect`] therefore resolves the URL's host to every address it has (a headless Service
//! has one per ready pod; a comma-separated list of URLs names several hosts), keeps one
//! lazily connected channel per address, and re-resolves every
//! [`ClientOptions::resolve_every`], adding and dropping addresses while running. Each call
//! goes to the next address in turn, so calls spread evenly and a new replica gets calls as
//! soon as it is resolved.
//!
//! **Failover.** An address whose connection fails is marked down for a moment and left out of
//! the choice, so one dead replica costs the calls that were in flight on it, not every call
//! until DNS forgets it. A call is sent again to another address when that is safe: always when
//! the connection could not be made (nothing was sent), and after any transport failure when the
//! method is read-only ([`ClientOptions::read_only`]). To resend, the request body is kept when
//! it is small ([`REPLAY_LIMIT`]); a larger one is streamed through and not resent.
//!
//! **Read-your-writes.** Replicas answer reads from state they keep current from a
//! subscription that may run a moment behind. Every answer names the position in the service's
//! history it reflects ([`POSITION_HEADER`]); the channel remembers the highest one it was told
//! and sends it with every call, and a replica answers only once it has caught up to it. So a
//! process never reads older state than it has already seen, whichever replica answers.
//!
//! **Security.** With [`InternalTls`] both sides use mutual TLS: the server asks for a client
//! certificate signed by the internal CA, and the client verifies the server against the same
//! CA. A bearer token ([`ClientOptions::token`]) is sent with every call of a client that holds
//! one: the Admin API's credential, which front-ends do not have; [`check_token`] is the server
//! side.
//!
//! This module knows nothing of the mailbox API: which methods are read-only is the caller's
//! knowledge, passed in as a function of the gRPC path.

use std::{
    collections::HashSet,
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    sync::{
        Arc, Mutex, RwLock, Weak,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::BodyExt;
use tonic::{
    body::Body,
    transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig},
};
use tower::{Service, ServiceExt};

/// Request bodies up to this size are kept so that the call can be sent again to another
/// replica; larger ones (a big message being delivered) are streamed through once.
pub const REPLAY_LIMIT: usize = 256 * 1024;

/// The header that carries a position in the service's history, both ways (see the module's
/// documentation).
pub const POSITION_HEADER: &str = "tern-position";

/// How long an address whose connection failed is left out before it is tried again.
const DOWN_FOR: Duration = Duration::from_secs(2);

/// How long a client waits for a TCP connection to a replica.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// HTTP/2 pings that find a replica gone without a reset (a node lost, a network cut).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("invalid URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("internal TLS: {0}")]
    Tls(#[from] tonic::transport::Error),
    #[error("no replica of {0} is reachable: none resolved, or all are down")]
    NoReplica(String),
    #[error("the bearer token is not valid in an HTTP header")]
    Token,
}

/// Mutual TLS between Tern's parts: the internal CA and this process's certificate and key
/// (PEM files, as cert-manager writes them into a Secret).
#[derive(Debug, Clone)]
pub struct InternalTls {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The name the server's certificate is checked against; the URL's host when unset.
    pub server_name: Option<String>,
}

fn read(path: &PathBuf) -> Result<Vec<u8>, RpcError> {
    std::fs::read(path).map_err(|source| RpcError::Read { path: path.clone(), source })
}

impl InternalTls {
    /// The server side: this certificate, and client certificates required, signed by the CA.
    pub fn server_config(&self) -> Result<ServerTlsConfig, RpcError> {
        let identity = Identity::from_pem(read(&self.cert_file)?, read(&self.key_file)?);
        Ok(ServerTlsConfig::new()
            .identity(identity)
            .client_ca_root(Certificate::from_pem(read(&self.ca_file)?))
            .client_auth_optional(false))
    }

    fn client_config(&self, host: &str) -> Result<ClientTlsConfig, RpcError> {
        let identity = Identity::from_pem(read(&self.cert_file)?, read(&self.key_file)?);
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca_file)?))
            .identity(identity)
            .domain_name(self.server_name.clone().unwrap_or_else(|| host.to_string())))
    }
}

/// Where a client reaches the service and how.
#[derive(Clone)]
pub struct ClientOptions {
    /// `http://host:port`, or `https://host:port` with [`InternalTls`].
    pub url: String,
    pub tls: Option<InternalTls>,
    /// Sent as `authorization: Bearer <token>` with every call.
    pub token: Option<String>,
    /// How often the host is resolved again.
    pub resolve_every: Duration,
    /// The longest one call may take, when calls should not wait forever (the operator's).
    /// Streams that stay open (Watch) need none.
    pub timeout: Option<Duration>,
    /// Whether a method (its gRPC path, `/package.Service/Method`) only reads, so that a call
    /// that failed after it was sent may be sent again.
    pub read_only: fn(&str) -> bool,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("url", &self.url)
            .field("tls", &self.tls)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("resolve_every", &self.resolve_every)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ClientOptions {
    /// Plain HTTP/2 to `url`, no token, resolved every 10 seconds, no method read-only.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            tls: None,
            token: None,
            resolve_every: Duration::from_secs(10),
            timeout: None,
            read_only: |_| false,
        }
    }
}

/// The client channel of every generated gRPC client in Tern: balanced, failing over, with the
/// bearer token when the client holds one.
pub type Channel = Balanced;

/// The server side of the token: a request passes when it carries `authorization: Bearer
/// <token>` (compared in constant time), and gets `Unauthenticated` otherwise.
pub fn check_token(token: &str, request: &tonic::Request<()>) -> Result<(), tonic::Status> {
    let presented = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(presented.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(tonic::Status::unauthenticated("this API needs the admin token"))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A channel to `options.url`, balanced over every address its host resolves to. Nothing is
/// connected or resolved before the first call needs it, so this succeeds while the service is
/// still starting; a call made before the name has resolved waits for it (up to the connect
/// timeout). It must be called within a tokio runtime, which runs the resolver.
pub fn connect(options: &ClientOptions) -> Result<Channel, RpcError> {
    let bad = |reason: &str| RpcError::Url { url: options.url.clone(), reason: reason.into() };
    let mut scheme = None;
    let mut targets = Vec::new();
    for url in options.url.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let this = uri.scheme_str().unwrap_or("http").to_string();
        if this != "http" && this != "https" {
            return Err(bad("the scheme must be http or https"));
        }
        if scheme.as_ref().is_some_and(|s| *s != this) {
            return Err(bad("every URL of the list must have the same scheme"));
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?.trim_matches(['[', ']']).to_string();
        let port = uri.port_u16().unwrap_or(if this == "https" { 443 } else { 80 });
        scheme = Some(this);
        targets.push((host, port));
    }
    let scheme = scheme.ok_or_else(|| bad("no URL"))?;
    if scheme == "https" && options.tls.is_none() {
        return Err(bad("https needs the internal TLS settings (CA, certificate and key)"));
    }
    if scheme == "http" && options.tls.is_some() {
        return Err(bad("with internal TLS the URL must be https://"));
    }
    let tls = options.tls.as_ref().map(|t| t.client_config(&targets[0].0)).transpose()?;
    let bearer = match &options.token {
        Some(t) => {
            let mut value: http::HeaderValue = format!("Bearer {t}").parse().map_err(|_| RpcError::Token)?;
            value.set_sensitive(true);
            Some(value)
        }
        None => None,
    };
    let shared = Arc::new(Shared {
        name: options.url.clone(),
        scheme,
        tls,
        timeout: options.timeout,
        replicas: RwLock::new(Vec::new()),
        known: tokio::sync::watch::channel(0).0,
        position: std::sync::atomic::AtomicU64::new(0),
        turn: AtomicUsize::new(0),
        read_only: options.read_only,
    });
    let literal: Option<Vec<SocketAddr>> =
        targets.iter().map(|(host, port)| host.parse().ok().map(|ip| SocketAddr::new(ip, *port))).collect();
    match literal {
        Some(addrs) => shared.set_addresses(&addrs),
        None => {
            tokio::spawn(re_resolve(Arc::downgrade(&shared), targets, options.resolve_every));
        }
    }
    Ok(Balanced { shared, bearer, local: None })
}

/// Every address of every target, sorted and without duplicates.
async fn resolve(targets: &[(String, u16)]) -> std::io::Result<Vec<SocketAddr>> {
    let mut addrs = Vec::new();
    for (host, port) in targets {
        addrs.extend(tokio::net::lookup_host((host.as_str(), *port)).await?);
    }
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}

/// Resolves the targets again and again while the channel lives. A failed or empty answer
/// keeps the addresses known, since a DNS hiccup is no reason to forget working replicas.
async fn re_resolve(shared: Weak<Shared>, targets: Vec<(String, u16)>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let answer = resolve(&targets).await;
        let Some(shared) = shared.upgrade() else { return };
        match answer {
            Ok(addrs) if !addrs.is_empty() => shared.set_addresses(&addrs),
            Ok(_) => {
                tracing::warn!(service = %shared.name, "the mailbox service resolved to no address; keeping the known ones")
            }
            Err(error) => {
                tracing::warn!(service = %shared.name, %error, "cannot resolve the mailbox service; keeping the known addresses")
            }
        }
    }
}

struct Shared {
    name: String,
    scheme: String,
    tls: Option<ClientTlsConfig>,
    timeout: Option<Duration>,
    replicas: RwLock<Vec<Arc<Replica>>>,
    /// How many replicas are known, for calls waiting for the first resolution.
    known: tokio::sync::watch::Sender<usize>,
    /// The highest position any answer named.
    position: std::sync::atomic::AtomicU64,
    turn: AtomicUsize,
    read_only: fn(&str) -> bool,
}

/// One address of the service and its own channel.
struct Replica {
    addr: SocketAddr,
    channel: tonic::transport::Channel,
    down_until: Mutex<Option<Instant>>,
}

impl Replica {
    fn is_down(&self, now: Instant) -> bool {
        self.down_until.lock().expect("down lock").is_some_and(|until| until > now)
    }

    fn mark_down(&self) {
        *self.down_until.lock().expect("down lock") = Some(Instant::now() + DOWN_FOR);
    }

    fn mark_up(&self) {
        let mut down = self.down_until.lock().expect("down lock");
        if down.is_some() {
            *down = None;
        }
    }
}

impl Shared {
    fn set_addresses(&self, addrs: &[SocketAddr]) {
        let mut replicas = self.replicas.write().expect("replicas lock");
        let wanted: HashSet<SocketAddr> = addrs.iter().copied().collect();
        let before = replicas.len();
        replicas.retain(|r| wanted.contains(&r.addr));
        let removed = before - replicas.len();
        let mut added = 0;
        for addr in addrs {
            if replicas.iter().any(|r| r.addr == *addr) {
                continue;
            }
            match self.endpoint(*addr) {
                Ok(endpoint) => {
                    replicas.push(Arc::new(Replica {
                        addr: *addr,
                        channel: endpoint.connect_lazy(),
                        down_until: Mutex::new(None),
                    }));
                    added += 1;
                }
                Err(error) => tracing::warn!(%addr, %error, "cannot make a channel"),
            }
        }
        self.known.send_replace(replicas.len());
        if added > 0 || removed > 0 {
            tracing::info!(service = %self.name, added, removed, replicas = replicas.len(), "mailbox replicas changed");
        }
    }

    fn endpoint(&self, addr: SocketAddr) -> Result<Endpoint, tonic::transport::Error> {
        let mut endpoint = Endpoint::from_shared(format!("{}://{addr}", self.scheme))?
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone())?;
        }
        if let Some(timeout) = self.timeout {
            endpoint = endpoint.timeout(timeout);
        }
        Ok(endpoint)
    }

    /// The replica for the next call: those up and not yet tried, in turn. (Choosing the one
    /// with the fewest calls in flight spread calls less evenly on a busy machine, where a
    /// replica slowed by its neighbours got fewer and fewer.) When every replica is down, the one down longest
    /// gets a chance, since "down" is a guess that may be stale.
    fn pick(&self, tried: &[SocketAddr]) -> Option<Arc<Replica>> {
        let replicas = self.replicas.read().expect("replicas lock");
        let candidates: Vec<&Arc<Replica>> = replicas.iter().filter(|r| !tried.contains(&r.addr)).collect();
        if candidates.is_empty() {
            return None;
        }
        let now = Instant::now();
        let up: Vec<&Arc<Replica>> = candidates.iter().copied().filter(|r| !r.is_down(now)).collect();
        if up.is_empty() {
            let soonest = candidates.iter().min_by_key(|r| r.down_until.lock().expect("down lock").unwrap_or(now))?;
            return Some(Arc::clone(soonest));
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        Some(Arc::clone(up[turn % up.len()]))
    }
}

/// The balancing service under [`Channel`]; see the module's documentation.
#[derive(Clone)]
pub struct Balanced {
    shared: Arc<Shared>,
    /// `authorization: Bearer <token>`, sent with every call.
    bearer: Option<http::HeaderValue>,
    /// The service itself, when it runs in this process: calls go to it directly.
    local: Option<LocalService>,
}

/// A gRPC service answered in this process: the mailbox service's routes, when the front-ends
/// run in the process that serves it (`tern dev`).
pub type LocalService =
    tower::util::BoxCloneSyncService<http::Request<Body>, http::Response<Body>, std::convert::Infallible>;

/// A channel whose calls `service` answers in this process, with no network, HTTP/2 framing or
/// socket between them; the token of `options` is still sent, and the position of answers
/// kept, as over the network.
pub fn local(service: LocalService, options: &ClientOptions) -> Result<Channel, RpcError> {
    let mut channel = connect(&ClientOptions { url: "http://127.0.0.1:1".into(), tls: None, ..options.clone() })?;
    channel.local = Some(service);
    Ok(channel)
}

impl std::fmt::Debug for Balanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let replicas = self.shared.replicas.read().map(|r| r.iter().map(|r| r.addr).collect::<Vec<_>>());
        f.debug_struct("Balanced").field("service", &self.shared.name).field("replicas", &replicas).finish()
    }
}

impl Balanced {
    /// The addresses calls are spread over now.
    pub fn replicas(&self) -> Vec<SocketAddr> {
        self.shared.replicas.read().expect("replicas lock").iter().map(|r| r.addr).collect()
    }
}

/// A request body kept for resending, or streamed through once.
enum Replay {
    Whole(Bytes),
    Once(Option<Body>),
}

impl Replay {
    /// Reads frames of `body` until it ends or passes [`REPLAY_LIMIT`]; in the second case the
    /// frames read so far are put back in front of the rest.
    async fn read(mut body: Body) -> Result<Replay, tonic::Status> {
        let mut kept: Vec<Bytes> = Vec::new();
        let mut size = 0;
        loop {
            match body.frame().await {
                None => break,
                Some(Err(status)) => return Err(status),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        size += data.len();
                        kept.push(data);
                        if size > REPLAY_LIMIT {
                            let head = tokio_stream::iter(kept.into_iter().map(Ok));
                            let rest = body.into_data_stream();
                            let frames =
                                tokio_stream::StreamExt::map(tokio_stream::StreamExt::chain(head, rest), |r| {
                                    r.map(http_body::Frame::data)
                                });
                            return Ok(Replay::Once(Some(Body::new(http_body_util::StreamBody::new(frames)))));
                        }
                    }
                    // gRPC requests have no trailers; a body that sends some is not kept.
                    Err(_) => break,
                },
            }
        }
        let mut whole = bytes::BytesMut::with_capacity(size);
        for part in kept {
            whole.extend_from_slice(&part);
        }
        Ok(Replay::Whole(whole.freeze()))
    }

    fn body(&mut self) -> Option<Body> {
        match self {
            Replay::Whole(bytes) => Some(Body::new(http_body_util::Full::new(bytes.clone()))),
            Replay::Once(body) => body.take(),
        }
    }

    fn can_resend(&self) -> bool {
        matches!(self, Replay::Whole(_))
    }
}

/// Whether a call's error means the connection was never made, so the request was not sent.
fn not_sent(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        next = e.source();
    }
    false
}

impl Service<http::Request<Body>> for Balanced {
    type Response = http::Response<Body>;
    type Error = tonic::Status;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each replica's channel is made ready in `call`, on the replica the call goes to.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        if let Some(bearer) = &self.bearer {
            request.headers_mut().insert(http::header::AUTHORIZATION, bearer.clone());
        }
        // The call's own span, a child of the caller's (current here, before the future is
        // boxed), and its context in the headers, so that the server's span is the next link.
        let span = client_span(request.uri().path());
        crate::propagation::inject_span(&span, request.headers_mut());
        let position = self.shared.position.load(Ordering::Acquire);
        if position > 0 {
            request.headers_mut().insert(POSITION_HEADER, http::HeaderValue::from(position));
        }
        if let Some(local) = &self.local {
            let local = local.clone();
            let call = async move {
                let response = match local.oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                if let Some(p) = response.headers().get(POSITION_HEADER).and_then(|v| v.to_str().ok()?.parse().ok()) {
                    shared.position.fetch_max(p, Ordering::AcqRel);
                }
                Ok(response)
            };
            return Box::pin(tracing::Instrument::instrument(call, span));
        }
        let call = async move {
            let (parts, body) = request.into_parts();
            let read_only = (shared.read_only)(parts.uri.path());
            let mut replay = Replay::read(body).await?;
            if *shared.known.borrow() == 0 {
                // The name has not resolved yet (a process that just started): wait for it.
                let mut known = shared.known.subscribe();
                let _ = tokio::time::timeout(CONNECT_TIMEOUT, known.wait_for(|n| *n > 0)).await;
            }
            let mut tried = Vec::new();
            loop {
                let Some(replica) = shared.pick(&tried) else {
                    return Err(tonic::Status::unavailable(RpcError::NoReplica(shared.name.clone()).to_string()));
                };
                tried.push(replica.addr);
                let Some(body) = replay.body() else {
                    return Err(tonic::Status::internal("a streamed request cannot be sent twice"));
                };
                let mut request = http::Request::new(body);
                *request.method_mut() = parts.method.clone();
                *request.uri_mut() = parts.uri.clone();
                *request.version_mut() = parts.version;
                *request.headers_mut() = parts.headers.clone();
                *request.extensions_mut() = parts.extensions.clone();
                let result = replica.channel.clone().oneshot(request).await;
                match result {
                    Ok(response) => {
                        replica.mark_up();
                        if let Some(p) =
                            response.headers().get(POSITION_HEADER).and_then(|v| v.to_str().ok()?.parse().ok())
                        {
                            shared.position.fetch_max(p, Ordering::AcqRel);
                        }
                        return Ok(response);
                    }
                    Err(error) => {
                        let unsent = not_sent(&error);
                        if unsent {
                            replica.mark_down();
                        }
                        let again = replay.can_resend() && (unsent || read_only);
                        tracing::debug!(replica = %replica.addr, %error, again, "a call to a mailbox replica failed");
                        if !again {
                            return Err(tonic::Status::from_error(Box::new(error)));
                        }
                    }
                }
            }
        };
        Box::pin(tracing::Instrument::instrument(call, span))
    }
}

/// The client span of one call, named after the method as OpenTelemetry's RPC conventions say
/// (`tern.mailbox.v1.Mailbox/Deliver`).
fn client_span(path: &str) -> tracing::Span {
    let method = path.trim_start_matches('/');
    tracing::info_span!("grpc.client", otel.name = method, otel.kind = "client")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        let request = |value: &str| {
            let mut r = tonic::Request::new(());
            r.metadata_mut().insert("authorization", value.parse().unwrap());
            r
        };
        assert!(check_token("s3cret", &request("Bearer s3cret")).is_ok());
        assert!(check_token("s3cret", &request("Bearer s3cre")).is_err());
        assert!(check_token("s3cret", &request("Bearer s3cretx")).is_err());
        assert!(check_token("s3cret", &request("s3cret")).is_err());
        assert_eq!(check_token("s3cret", &tonic::Request::new(())).unwrap_err().code(), tonic::Code::Unauthenticated);
    }

    #[tokio::test]
    async fn urls_and_tls_must_agree() {
        assert!(connect(&ClientOptions::new("ftp://127.0.0.1:1")).is_err());
        assert!(connect(&ClientOptions::new("https://127.0.0.1:1")).is_err(), "https without TLS files");
        let channel = connect(&ClientOptions::new("http://127.0.0.1:1")).unwrap();
        assert_eq!(channel.replicas(), ["127.0.0.1:1".parse().unwrap()]);
        let channel = connect(&ClientOptions::new("http://127.0.0.2:1, http://127.0.0.1:1")).unwrap();
        assert_eq!(channel.replicas(), ["127.0.0.2:1".parse().unwrap(), "127.0.0.1:1".parse().unwrap()]);
        assert!(connect(&ClientOptions::new("http://127.0.0.1:1,https://127.0.0.2:1")).is_err(), "mixed schemes");
    }

    #[tokio::test]
    async fn a_name_resolves_to_every_address() {
        let channel = connect(&ClientOptions::new("http://localhost:50051")).unwrap();
        let mut known = channel.shared.known.subscribe();
        tokio::time::timeout(Duration::from_secs(5), known.wait_for(|n| *n > 0)).await.unwrap().unwrap();
        let replicas = channel.replicas();
        assert!(!replicas.is_empty(), "localhost resolves");
        assert!(replicas.iter().all(|a| a.ip().is_loopback() && a.port() == 50051), "{replicas:?}");
    }

    #[tokio::test]
    async fn replay_keeps_small_bodies_and_streams_large_ones() {
        let small = Body::new(http_body_util::Full::new(Bytes::from_static(b"hello")));
        let mut replay = Replay::read(small).await.unwrap();
        assert!(replay.can_resend());
        for _ in 0..2 {
            let bytes = replay.body().unwrap().collect().await.unwrap().to_bytes();
            assert_eq!(&bytes[..], b"hello");
        }
        let chunks: Vec<Result<http_body::Frame<Bytes>, tonic::Status>> =
            (0..5).map(|i| Ok(http_body::Frame::data(Bytes::from(vec![i as u8; REPLAY_LIMIT / 2])))).collect();
        let large = Body::new(http_body_util::StreamBody::new(tokio_stream::iter(chunks)));
        let mut replay = Replay::read(large).await.unwrap();
        assert!(!replay.can_resend());
        let bytes = replay.body().unwrap().collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len(), 5 * (REPLAY_LIMIT / 2), "nothing lost when streaming through");
        assert_eq!(bytes[REPLAY_LIMIT / 2 * 3], 3);
        assert!(replay.body().is_none());
    }
}
