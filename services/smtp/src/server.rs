//! Accepting SMTP connections: per-IP connection limits, the PROXY protocol, implicit TLS on
//! port 465, and graceful shutdown (stop accepting, let transactions finish, close the rest).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::BytesMut;
use tern_runtime::{metrics::Metrics, stream::Stream};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
};

use crate::{
    backend::Backend,
    codec::Reply,
    config::{ListenerKind, SmtpConfig},
    session::Session,
};

/// One listening socket and what it is for.
#[derive(Debug)]
pub struct Listener {
    pub kind: ListenerKind,
    pub socket: TcpListener,
    /// Expect a PROXY v2 header on every connection (behind a load balancer).
    pub proxy_protocol: bool,
}

/// Counts connections per client IP, and releases the count when dropped.
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

/// Completes once `shutdown` turns true (or its sender is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Serves every listener until `shutdown` turns true, then waits up to `grace` for sessions.
pub async fn serve<B: Backend>(
    cfg: Arc<SmtpConfig>,
    backend: Arc<B>,
    listeners: Vec<Listener>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let per_ip = PerIp::default();
    let mut sessions = JoinSet::new();
    let mut accepts = JoinSet::new();
    for l in listeners {
        let (cfg, backend, per_ip, shutdown) = (cfg.clone(), backend.clone(), per_ip.clone(), shutdown.clone());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        accepts.spawn(accept_loop(l, tx, shutdown.clone()));
        sessions.spawn(run_sessions(cfg, backend, per_ip, rx, shutdown));
    }
    stopped(&mut shutdown).await;
    accepts.shutdown().await;
    if tokio::time::timeout(grace, async { while sessions.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!("SMTP sessions still open after the grace period; closing them");
        sessions.shutdown().await;
    }
}

async fn accept_loop(
    l: Listener,
    tx: tokio::sync::mpsc::UnboundedSender<(TcpStream, SocketAddr, ListenerKind, bool)>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = l.socket.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    if tx.send((tcp, peer, l.kind, l.proxy_protocol)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = stopped(&mut shutdown) => return,
        }
    }
}

async fn run_sessions<B: Backend>(
    cfg: Arc<SmtpConfig>,
    backend: Arc<B>,
    per_ip: PerIp,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(TcpStream, SocketAddr, ListenerKind, bool)>,
    shutdown: watch::Receiver<bool>,
) {
    let mut set = JoinSet::new();
    loop {
        tokio::select! {
            next = rx.recv() => {
                let Some((tcp, peer, kind, proxy)) = next else { break };
                let (cfg, backend, per_ip, shutdown) = (cfg.clone(), backend.clone(), per_ip.clone(), shutdown.clone());
                set.spawn(connection(cfg, backend, per_ip, tcp, peer, kind, proxy, shutdown));
            }
            Some(_) = set.join_next(), if !set.is_empty() => {}
        }
    }
    while set.join_next().await.is_some() {}
}

#[allow(clippy::too_many_arguments)]
async fn connection<B: Backend>(
    cfg: Arc<SmtpConfig>,
    backend: Arc<B>,
    per_ip: PerIp,
    mut tcp: TcpStream,
    mut peer: SocketAddr,
    kind: ListenerKind,
    proxy: bool,
    shutdown: watch::Receiver<bool>,
) {
    let mut early = BytesMut::new();
    if proxy {
        match tern_runtime::stream::read_proxy_header(&mut tcp, Duration::from_secs(10)).await {
            Ok((addr, rest)) => {
                if let Some(a) = addr {
                    peer = a;
                }
                early = rest;
            }
            Err(e) => {
                tracing::info!(%peer, error = %e, "bad PROXY header; closing");
                return;
            }
        }
    }
    let Some(_slot) = per_ip.take(peer.ip(), cfg.limits.max_connections_per_ip) else {
        let reply = Reply::new(421, "4.7.0", "Too many connections from your address");
        let _ = tcp.write_all(&reply.to_bytes(false)).await;
        return;
    };
    let stream = if kind == ListenerKind::Submissions {
        let Some(tls) = cfg.tls.clone() else {
            tracing::error!("implicit TLS listener without a TLS configuration");
            return;
        };
        match tokio::time::timeout(cfg.limits.idle_timeout, Stream::Plain(tcp).upgrade(tls)).await {
            Ok(Ok(s)) => s,
            _ => return,
        }
    } else {
        Stream::Plain(tcp)
    };
    let metrics = Metrics::global();
    metrics.connections.inc();
    Session::new(cfg, backend, kind, stream, peer, early).with_shutdown(shutdown).run().await;
    metrics.connections.dec();
}
