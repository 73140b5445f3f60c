//! The ManageSieve side of accepting connections: the session each connection runs. Limits,
//! the PROXY protocol and graceful shutdown are shared ([`tern_runtime::listener`]).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::BytesMut;
use tern_runtime::{
    listener::{self, Handler, ListenerLimits},
    stream::Stream,
};
use tokio::sync::watch;

use crate::{
    backend::Backend,
    config::{ListenerKind, ManageSieveConfig},
    session::Session,
};

/// One listening socket and what it is for.
pub type Listener = listener::Listener<ListenerKind>;

struct ManageSieve {
    cfg: Arc<ManageSieveConfig>,
    backend: Arc<dyn Backend>,
}

impl Handler<ListenerKind> for ManageSieve {
    fn protocol(&self, _kind: &ListenerKind) -> &'static str {
        "managesieve"
    }

    fn implicit_tls(&self, _kind: &ListenerKind) -> bool {
        false
    }

    fn too_many_connections(&self, _kind: &ListenerKind) -> Vec<u8> {
        b"BYE (TRYLATER) \"Too many connections from your address\"\r\n".to_vec()
    }

    async fn session(
        &self,
        _kind: ListenerKind,
        stream: Stream,
        peer: SocketAddr,
        early: BytesMut,
        shutdown: watch::Receiver<bool>,
    ) {
        Session::new(self.cfg.clone(), self.backend.clone(), stream, peer, early, shutdown).run().await;
    }
}

pub async fn serve(
    cfg: Arc<ManageSieveConfig>,
    backend: Arc<dyn Backend>,
    listeners: Vec<Listener>,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let limits = ListenerLimits {
        max_connections_per_ip: cfg.limits.max_connections_per_ip,
        handshake_timeout: Duration::from_secs(30),
        shutdown_grace: grace,
    };
    tern_runtime::metrics::Metrics::global().declare_commands("managesieve", &crate::codec::command::NAMES);
    let tls = cfg.tls.clone();
    listener::serve(listeners, ManageSieve { cfg, backend }, tls, limits, shutdown).await;
}
