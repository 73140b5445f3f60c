//! PROXY protocol in front of an implicit-TLS listener, over real sockets. Load balancers send
//! the PROXY header and the client's first bytes (the TLS ClientHello) together, often in one
//! segment; the listener must read the header and no further, or the handshake loses the
//! start of the ClientHello.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::BytesMut;
use rustls::pki_types::{CertificateDer, ServerName};
use tern_runtime::{
    listener::{self, Handler, Listener, ListenerLimits},
    stream::Stream,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tokio_rustls::TlsConnector;

const WAIT: Duration = Duration::from_secs(10);

/// Answers with the client address the session was given, then closes.
struct Peer;

impl Handler<()> for Peer {
    fn protocol(&self, _kind: &()) -> &'static str {
        "test"
    }

    fn implicit_tls(&self, _kind: &()) -> bool {
        true
    }

    fn too_many_connections(&self, _kind: &()) -> Vec<u8> {
        Vec::new()
    }

    async fn session(
        &self,
        _kind: (),
        mut stream: Stream,
        peer: SocketAddr,
        _early: BytesMut,
        _: watch::Receiver<bool>,
    ) {
        let _ = stream.write_all(format!("{peer}\r\n").as_bytes()).await;
        let _ = stream.shutdown().await;
    }
}

/// A TCP stream whose first write carries `prefix` in front of the caller's bytes, in one
/// system call: the PROXY header and the ClientHello leave together, as a load balancer sends
/// them.
struct Prefixed {
    prefix: Option<Vec<u8>>,
    tcp: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let Some(prefix) = self.prefix.take() else { return Pin::new(&mut self.tcp).poll_write(cx, buf) };
        let both = [prefix.as_slice(), buf].concat();
        // A fresh loopback socket takes a few hundred bytes at once; anything else would not
        // test what this test is for.
        match Pin::new(&mut self.tcp).poll_write(cx, &both) {
            Poll::Ready(Ok(n)) => {
                assert_eq!(n, both.len(), "the header and the ClientHello did not leave in one write");
                Poll::Ready(Ok(buf.len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                self.prefix = Some(prefix);
                Poll::Pending
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_header_sent_with_the_client_hello_is_read_and_the_handshake_completes() {
    tern_runtime::tls::install_crypto_provider();
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let paths = tern_runtime::tls::CertPaths { cert: dir.path().join("tls.crt"), key: dir.path().join("tls.key") };
    std::fs::write(&paths.cert, generated.cert.pem()).unwrap();
    std::fs::write(&paths.key, generated.signing_key.serialize_pem()).unwrap();
    let config = tern_runtime::tls::server_config(&paths).unwrap();

    let (_stop, stopped) = watch::channel(false);
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let limits =
        ListenerLimits { max_connections_per_ip: 100, handshake_timeout: WAIT, shutdown_grace: Duration::from_secs(1) };
    let listeners = vec![Listener { kind: (), socket, proxy_protocol: true }];
    tokio::spawn(listener::serve(listeners, Peer, Some(config), limits, stopped));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(generated.cert.der().to_vec())).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(client));

    // Several connections: each must complete its handshake and be told the proxied address.
    for i in 0..5u16 {
        let real: SocketAddr = format!("203.0.113.9:{}", 40000 + i).parse().unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let io = Prefixed { prefix: Some(tern_runtime::proxy::encode(real, addr)), tcp };
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = tokio::time::timeout(WAIT, connector.connect(name, io))
            .await
            .expect("handshake in time")
            .expect("the handshake after a PROXY header sent with the ClientHello");
        let mut answer = String::new();
        tokio::time::timeout(WAIT, tls.read_to_string(&mut answer)).await.unwrap().unwrap();
        assert_eq!(answer, format!("{real}\r\n"));
    }
}
