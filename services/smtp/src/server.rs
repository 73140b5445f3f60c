//! The SMTP side of accepting connections: the listener kinds and the session each
//! connection runs. Connection limits, the PROXY protocol, implicit TLS and graceful shutdown
//! are shared by every front-end ([`tern_runtime::listener`]).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::BytesMut;
use tern_runtime::{
    listener::{self, Handler, ListenerLimits},
    stream::Stream,
};
use tokio::sync::watch;

use crate::{
    backend::Backend,
    codec::Reply,
    config::{ListenerKind, SmtpConfig},
    session::Session,
};

pub use tern_runtime::listener::stopped;

/// One listening socket and what it is for.
pub type Listener = listener::Listener<ListenerKind>;

struct Smtp<B> {
    cfg: Arc<SmtpConfig>,
    backend: Arc<B>,
}

impl<B: Backend> Handler<ListenerKind> for Smtp<B> {
    fn protocol(&self, kind: &ListenerKind) -> &'static str {
        kind.protocol()
    }

    fn implicit_tls(&self, kind: &ListenerKind) -> bool {
        *kind == ListenerKind::Submissions
    }

    fn too_many_connections(&self, _kind: &ListenerKind) -> Vec<u8> {
        tern_runtime::metrics::Metrics::global().smtp_reply(421);
        Reply::new(421, "4.7.0", "Too many connections from your address").to_bytes(false)
    }

    async fn session(
        &self,
        kind: ListenerKind,
        stream: Stream,
        peer: SocketAddr,
        early: BytesMut,
        shutdown: watch::Receiver<bool>,
    ) {
        Session::new(self.cfg.clone(), self.backend.clone(), kind, stream, peer, early)
            .with_shutdown(shutdown)
            .run()
            .await;
    }
}

/// Serves every listener until `shutdown` turns true, then waits up to `grace` for sessions.
pub async fn serve<B: Backend>(
    cfg: Arc<SmtpConfig>,
    backend: Arc<B>,
    listeners: Vec<Listener>,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let limits = ListenerLimits {
        max_connections_per_ip: cfg.limits.max_connections_per_ip,
        handshake_timeout: cfg.limits.idle_timeout.min(Duration::from_secs(30)),
        shutdown_grace: grace,
    };
    // Zero samples from the start, so that rates and ratios have series before the first mail.
    let metrics = tern_runtime::metrics::Metrics::global();
    for l in &listeners {
        metrics.declare_commands(l.kind.protocol(), &crate::session::COMMANDS);
    }
    metrics.declare_smtp_replies(&[220, 250, 421, 451, 550]);
    let tls = cfg.tls.clone();
    listener::serve(listeners, Smtp { cfg, backend }, tls, limits, shutdown).await;
}
