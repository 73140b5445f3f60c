//! Accepting client connections for any protocol front-end: per-IP connection limits, the
//! PROXY protocol, implicit TLS, and graceful shutdown (stop accepting, let sessions finish
//! within a grace period, then close the rest). The protocol is the [`Handler`]'s business.

use std::{
    collections::HashMap,
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::BytesMut;
use prometheus_client::metrics::gauge::Gauge;
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
};

use crate::{
    metrics::{Metrics, ProtocolLabels},
    stream::Stream,
};

/// One listening socket.
#[derive(Debug)]
pub struct Listener<K> {
    /// What the listener is for (the protocol decides what that means).
    pub kind: K,
    pub socket: TcpListener,
    /// Expect a PROXY v2 header on every connection (behind a load balancer).
    pub proxy_protocol: bool,
}

#[derive(Debug, Clone)]
pub struct ListenerLimits {
    pub max_connections_per_ip: usize,
    /// How long the PROXY header and the TLS handshake may take.
    pub handshake_timeout: Duration,
    /// How long shutdown waits for sessions before closing them.
    pub shutdown_grace: Duration,
}

/// A protocol's side of a connection.
pub trait Handler<K>: Send + Sync + 'static {
    /// The `protocol` label of listeners of `kind` in the metrics: `smtp`, `submission`,
    /// `imap`, `pop3`.
    fn protocol(&self, kind: &K) -> &'static str;

    /// Whether listeners of `kind` speak TLS from the first byte (ports 465, 993, 995).
    fn implicit_tls(&self, kind: &K) -> bool;

    /// The reply for a client over its connection limit, written before closing.
    fn too_many_connections(&self, kind: &K) -> Vec<u8>;

    /// Runs one session. `early` holds input read before the session started: none today, as
    /// the PROXY header is read to its last byte and no further. When
    /// `shutdown` turns true the session should end at its next safe point.
    fn session(
        &self,
        kind: K,
        stream: Stream,
        peer: SocketAddr,
        early: BytesMut,
        shutdown: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send;
}

/// Completes once `shutdown` turns true (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Counts connections per client IP; a [`Slot`] gives its place back when dropped.
#[derive(Debug, Default, Clone)]
struct PerIp(Arc<Mutex<HashMap<IpAddr, usize>>>);

#[derive(Debug)]
struct Slot(PerIp, IpAddr);

impl PerIp {
    fn take(&self, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot(self.clone(), ip))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.1);
            }
        }
    }
}

struct Shared<K, H> {
    handler: H,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ListenerLimits,
    per_ip: PerIp,
    _kind: std::marker::PhantomData<fn() -> K>,
}

/// Serves every listener until `shutdown` turns true, then waits for sessions up to the
/// grace period.
pub async fn serve<K, H>(
    listeners: Vec<Listener<K>>,
    handler: H,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ListenerLimits,
    mut shutdown: watch::Receiver<bool>,
) where
    K: Clone + Send + Sync + 'static,
    H: Handler<K>,
{
    let grace = limits.shutdown_grace;
    // A protocol with no connection yet shows 0 rather than no series at all.
    for l in &listeners {
        let _ = Metrics::global().connections.get_or_create(&ProtocolLabels { protocol: handler.protocol(&l.kind) });
    }
    let shared = Arc::new(Shared { handler, tls, limits, per_ip: PerIp::default(), _kind: std::marker::PhantomData });
    let mut sessions = JoinSet::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(TcpStream, SocketAddr, K, bool)>(1024);
    let mut accepts = JoinSet::new();
    for l in listeners {
        let (tx, mut stop) = (tx.clone(), shutdown.clone());
        accepts.spawn(async move {
            loop {
                tokio::select! {
                    accepted = l.socket.accept() => match accepted {
                        Ok((tcp, peer)) => {
                            let _ = tcp.set_nodelay(true);
                            if tx.send((tcp, peer, l.kind.clone(), l.proxy_protocol)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            // Out of file descriptors and the like: wait rather than spin.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    },
                    () = stopped(&mut stop) => return,
                }
            }
        });
    }
    drop(tx);
    loop {
        tokio::select! {
            next = rx.recv() => {
                let Some((tcp, peer, kind, proxy)) = next else { break };
                sessions.spawn(connection(shared.clone(), tcp, peer, kind, proxy, shutdown.clone()));
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            () = stopped(&mut shutdown) => break,
        }
    }
    accepts.shutdown().await;
    if tokio::time::timeout(grace, async { while sessions.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!(open = sessions.len(), "sessions still open after the grace period; closing them");
        sessions.shutdown().await;
    }
}

async fn connection<K, H: Handler<K>>(
    shared: Arc<Shared<K, H>>,
    mut tcp: TcpStream,
    mut peer: SocketAddr,
    kind: K,
    proxy: bool,
    shutdown: watch::Receiver<bool>,
) {
    if proxy {
        match crate::stream::read_proxy_header(&mut tcp, shared.limits.handshake_timeout).await {
            Ok(addr) => {
                if let Some(a) = addr {
                    peer = a;
                }
            }
            Err(e) => {
                tracing::info!(%peer, error = %e, "bad PROXY header; closing");
                return;
            }
        }
    }
    let Some(_slot) = shared.per_ip.take(peer.ip(), shared.limits.max_connections_per_ip) else {
        let _ = tcp.write_all(&shared.handler.too_many_connections(&kind)).await;
        return;
    };
    let stream = if shared.handler.implicit_tls(&kind) {
        let Some(tls) = shared.tls.clone() else {
            tracing::error!("implicit TLS listener without a TLS configuration");
            return;
        };
        match tokio::time::timeout(shared.limits.handshake_timeout, Stream::Plain(tcp).upgrade(tls)).await {
            Ok(Ok(s)) => s,
            _ => return,
        }
    } else {
        Stream::Plain(tcp)
    };
    // A clone of the gauge, not the family's guard: the guard would hold the family's lock for
    // the whole session.
    let open = Metrics::global()
        .connections
        .get_or_create(&ProtocolLabels { protocol: shared.handler.protocol(&kind) })
        .clone();
    open.inc();
    // Decremented on drop, so that a session cancelled at shutdown is not left counted.
    struct Open(Gauge);
    impl Drop for Open {
        fn drop(&mut self) {
            self.0.dec();
        }
    }
    let _open = Open(open);
    shared.handler.session(kind, stream, peer, BytesMut::new(), shutdown).await;
}
