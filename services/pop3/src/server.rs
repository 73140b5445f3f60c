//! The POP3 side of accepting connections: listener kinds and the session each connection
//! runs. Limits, the PROXY protocol, implicit TLS and graceful shutdown are shared
//! ([`tern_runtime::listener`]).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::BytesMut;
use tern_runtime::{
    listener::{self, Handler, ListenerLimits},
    stream::Stream,
};
use tokio::sync::watch;

use crate::{
    backend::Backend,
    config::{ListenerKind, Pop3Config},
    session::Session,
};

/// One listening socket and what it is for.
pub type Listener = listener::Listener<ListenerKind>;

struct Pop3 {
    cfg: Arc<Pop3Config>,
    backend: Backend,
}

impl Handler<ListenerKind> for Pop3 {
    fn protocol(&self, _kind: &ListenerKind) -> &'static str {
        "pop3"
    }

    fn implicit_tls(&self, kind: &ListenerKind) -> bool {
        *kind == ListenerKind::Pop3s
    }

    fn too_many_connections(&self, _kind: &ListenerKind) -> Vec<u8> {
        b"-ERR [SYS/TEMP] Too many connections from your address\r\n".to_vec()
    }

    async fn session(
        &self,
        kind: ListenerKind,
        stream: Stream,
        peer: SocketAddr,
        early: BytesMut,
        shutdown: watch::Receiver<bool>,
    ) {
        Session::new(self.cfg.clone(), self.backend.clone(), stream, peer, early, shutdown).run(kind).await;
    }
}

pub async fn serve(
    cfg: Arc<Pop3Config>,
    backend: Backend,
    listeners: Vec<Listener>,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let limits = ListenerLimits {
        max_connections_per_ip: cfg.limits.max_connections_per_ip,
        handshake_timeout: Duration::from_secs(30),
        shutdown_grace: grace,
    };
    tern_runtime::metrics::Metrics::global().declare_commands("pop3", &crate::session::COMMANDS);
    let tls = cfg.tls.clone();
    listener::serve(listeners, Pop3 { cfg, backend }, tls, limits, shutdown).await;
}
