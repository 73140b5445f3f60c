//! Certificate rotation over real sockets: an implicit-TLS listener serves the certificate in
//! its files, picks up a new pair written over them (by rename, and by the kubelet's swap of a
//! `..data` symbolic link) on a later connection, keeps the last good pair when a broken one
//! is written, and shows each step on `/metrics`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use bytes::BytesMut;
use rustls::pki_types::{CertificateDer, ServerName};
use tern_runtime::{
    http::Readiness,
    listener::{self, Handler, Listener, ListenerLimits},
    stream::Stream,
    tls::{CertPaths, ReloadingCert},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tokio_rustls::TlsConnector;

/// How often the test's listener reads its files again.
const POLL: Duration = Duration::from_millis(100);
/// How long a new pair may take to be served.
const WAIT: Duration = Duration::from_secs(10);

/// Greets and closes: enough to see which certificate the handshake presented.
struct Hello;

impl Handler<()> for Hello {
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
        _peer: SocketAddr,
        _early: BytesMut,
        _: watch::Receiver<bool>,
    ) {
        let _ = stream.write_all(b"hello\r\n").await;
        let _ = stream.shutdown().await;
    }
}

/// A fresh self-signed certificate for `localhost` and its key, as PEM.
fn pair() -> (String, String, CertificateDer<'static>) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    (generated.cert.pem(), generated.signing_key.serialize_pem(), generated.cert.der().clone())
}

/// Writes `content` to `path` the way tools replace files: a new file, then a rename over the
/// old one, so a reader sees either the whole old file or the whole new one.
fn replace(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A client that trusts every certificate of the test (they are self-signed) and never
/// resumes a session.
fn connector(certs: &[&CertificateDer<'static>]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add((*cert).clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // A resumed session presents no certificate (the client reports the one of the session it
    // resumed), so every connection here is a full handshake.
    config.resumption = rustls::client::Resumption::disabled();
    TlsConnector::from(Arc::new(config))
}

/// Connects and returns the certificate the server presented.
async fn served(addr: SocketAddr, connector: &TlsConnector) -> CertificateDer<'static> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = tokio::time::timeout(WAIT, connector.connect(name, tcp)).await.unwrap().unwrap();
    let mut greeting = Vec::new();
    tokio::time::timeout(WAIT, tls.read_to_end(&mut greeting)).await.unwrap().unwrap();
    assert_eq!(greeting, b"hello\r\n");
    tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

/// Connects until the server presents `want`, for up to [`WAIT`].
async fn wait_for(addr: SocketAddr, connector: &TlsConnector, want: &CertificateDer<'static>, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while served(addr, connector).await != *want {
        assert!(tokio::time::Instant::now() < deadline, "{what} was not served within {WAIT:?}");
        tokio::time::sleep(POLL / 2).await;
    }
}

/// Fetches `/metrics` over HTTP/1.1 and returns the body.
async fn scrape(addr: SocketAddr) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
}

/// The value of the sample `name` with exactly `labels` (`{a="b"}`), 0 when absent.
fn sample(text: &str, name: &str, labels: &str) -> f64 {
    let prefix = format!("{name}{labels} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map(|v| v.trim().parse().unwrap()).unwrap_or(0.0)
}

struct Running {
    tls: SocketAddr,
    http: SocketAddr,
    _stop: watch::Sender<bool>,
}

/// Serves the pair in `paths` on an implicit-TLS listener, polling the files every [`POLL`],
/// with a `/metrics` endpoint beside it.
async fn start(paths: &CertPaths) -> Running {
    tern_runtime::tls::install_crypto_provider();
    let (stop, stopped) = watch::channel(false);
    let reloading = ReloadingCert::load(paths).unwrap();
    let config = reloading.server_config().unwrap();
    let mut until = stopped.clone();
    tokio::spawn(reloading.watch(POLL, async move { listener::stopped(&mut until).await }));
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls = socket.local_addr().unwrap();
    let limits =
        ListenerLimits { max_connections_per_ip: 100, handshake_timeout: WAIT, shutdown_grace: Duration::from_secs(1) };
    let listeners = vec![Listener { kind: (), socket, proxy_protocol: false }];
    tokio::spawn(listener::serve(listeners, Hello, Some(config), limits, stopped.clone()));
    let http_socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = http_socket.local_addr().unwrap();
    let mut until = stopped;
    tokio::spawn(tern_runtime::http::serve(http_socket, Readiness::default(), async move {
        listener::stopped(&mut until).await
    }));
    Running { tls, http, _stop: stop }
}

fn label(path: &Path) -> String {
    format!("{{certificate=\"{}\"}}", path.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_renamed_over_the_old_one_is_served_and_a_broken_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let paths = CertPaths { cert: dir.path().join("tls.crt"), key: dir.path().join("tls.key") };
    let (a_pem, a_key, a) = pair();
    let (b_pem, b_key, b) = pair();
    let (c_pem, _, c) = pair();
    replace(&paths.cert, &a_pem);
    replace(&paths.key, &a_key);
    let server = start(&paths).await;
    let client = connector(&[&a, &b, &c]);
    assert_eq!(served(server.tls, &client).await, a);
    let before = scrape(server.http).await;
    assert!(sample(&before, "tern_tls_certificate_expiry_timestamp_seconds", &label(&paths.cert)) > 1.7e9);

    // The key first, then the certificate: between the two the pair does not match, and
    // whatever poll sees that must keep A.
    replace(&paths.key, &b_key);
    replace(&paths.cert, &b_pem);
    wait_for(server.tls, &client, &b, "certificate B").await;
    let after = scrape(server.http).await;
    let ok = r#"{result="ok"}"#;
    assert!(
        sample(&after, "tern_tls_certificate_reloads_total", ok)
            > sample(&before, "tern_tls_certificate_reloads_total", ok)
    );

    // A certificate whose key is not there: refused, B stays.
    let errors = sample(&after, "tern_tls_certificate_reloads_total", r#"{result="error"}"#);
    replace(&paths.cert, &c_pem);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = scrape(server.http).await;
        if sample(&now, "tern_tls_certificate_reloads_total", r#"{result="error"}"#) > errors {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the broken pair was not reported:\n{now}");
        tokio::time::sleep(POLL).await;
    }
    for _ in 0..3 {
        assert_eq!(served(server.tls, &client).await, b, "a broken pair replaced the good one");
        tokio::time::sleep(POLL).await;
    }
    // Garbage in the certificate file: the same.
    replace(&paths.cert, "-----BEGIN CERTIFICATE-----\nnot base64\n");
    tokio::time::sleep(POLL * 3).await;
    assert_eq!(served(server.tls, &client).await, b);
}

/// The layout of a mounted Secret: `tls.crt` and `tls.key` are links to `..data/tls.crt`
/// and `..data/tls.key`, `..data` is a link to a timestamped directory, and an update writes
/// a new directory and renames a new `..data` link over the old one.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubelet_style_symlink_swap_is_served() {
    use std::os::unix::fs::symlink;

    fn version(dir: &Path, name: &str, cert: &str, key: &str) -> PathBuf {
        let v = dir.join(name);
        std::fs::create_dir(&v).unwrap();
        std::fs::write(v.join("tls.crt"), cert).unwrap();
        std::fs::write(v.join("tls.key"), key).unwrap();
        v
    }

    let dir = tempfile::tempdir().unwrap();
    let (a_pem, a_key, a) = pair();
    let (b_pem, b_key, b) = pair();
    version(dir.path(), "..2026_01_01_v1", &a_pem, &a_key);
    symlink("..2026_01_01_v1", dir.path().join("..data")).unwrap();
    symlink("..data/tls.crt", dir.path().join("tls.crt")).unwrap();
    symlink("..data/tls.key", dir.path().join("tls.key")).unwrap();
    let paths = CertPaths { cert: dir.path().join("tls.crt"), key: dir.path().join("tls.key") };
    let server = start(&paths).await;
    let client = connector(&[&a, &b]);
    assert_eq!(served(server.tls, &client).await, a);

    version(dir.path(), "..2026_03_01_v2", &b_pem, &b_key);
    symlink("..2026_03_01_v2", dir.path().join("..data_tmp")).unwrap();
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
    std::fs::remove_dir_all(dir.path().join("..2026_01_01_v1")).unwrap();
    wait_for(server.tls, &client, &b, "the swapped-in certificate").await;
}
