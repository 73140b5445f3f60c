//! The IMAP side of accepting connections: listener kinds and the session each connection
//! runs. Limits, the PROXY protocol, implicit TLS and graceful shutdown are shared
//! ([`tern_runtime::listener`]).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::BytesMut;
use tern_proto::v1::mailbox_client::MailboxClient;
use tern_runtime::rpc::Channel;
use tern_runtime::{
    listener::{self, Handler, ListenerLimits},
    stream::Stream,
};
use tokio::sync::watch;

use crate::{
    config::{ImapConfig, ListenerKind},
    session::Session,
};

/// One listening socket and what it is for.
pub type Listener = listener::Listener<ListenerKind>;

struct Imap {
    cfg: Arc<ImapConfig>,
    client: MailboxClient<Channel>,
    hub: crate::hub::Hub,
}

impl Handler<ListenerKind> for Imap {
    fn protocol(&self, _kind: &ListenerKind) -> &'static str {
        "imap"
    }

    fn implicit_tls(&self, kind: &ListenerKind) -> bool {
        *kind == ListenerKind::Imaps
    }

    fn too_many_connections(&self, _kind: &ListenerKind) -> Vec<u8> {
        b"* BYE Too many connections from your address\r\n".to_vec()
    }

    async fn session(
        &self,
        _kind: ListenerKind,
        stream: Stream,
        peer: SocketAddr,
        early: BytesMut,
        shutdown: watch::Receiver<bool>,
    ) {
        Session::new(self.cfg.clone(), self.client.clone(), self.hub.clone(), stream, peer, early, shutdown)
            .run()
            .await;
    }
}

pub async fn serve(
    cfg: Arc<ImapConfig>,
    channel: Channel,
    listeners: Vec<Listener>,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let limits = ListenerLimits {
        max_connections_per_ip: cfg.limits.max_connections_per_ip,
        handshake_timeout: Duration::from_secs(30),
        shutdown_grace: grace,
    };
    tern_runtime::metrics::Metrics::global().declare_commands("imap", &crate::session::COMMANDS);
    let tls = cfg.tls.clone();
    let client = MailboxClient::new(channel).max_decoding_message_size(128 << 20).max_encoding_message_size(128 << 20);
    let hub = crate::hub::Hub::new(client.clone());
    listener::serve(listeners, Imap { cfg, client, hub }, tls, limits, shutdown).await;
}
