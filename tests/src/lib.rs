//! A harness for end-to-end tests of the mailbox service over real loopback sockets.
//!
//! [`TestServer::start`] opens the embedded backend in a fresh temporary directory, binds
//! `127.0.0.1:0` and serves the Mailbox and Admin gRPC services on it. Tests talk to it only
//! through gRPC clients (one per "session"), except for the few things that have no RPC, such
//! as running body garbage collection now, for which [`TestServer::service`] gives the service
//! itself. [`TestServer::restart`] stops the server, drops every handle on the store and opens
//! the same data directory again, as a restarted process would; [`TestServer::start_from_copy`]
//! opens a copy of a directory that a running server still holds, which is what a process crash
//! leaves behind. [`TestServer::start_with_blobs`] keeps the bodies elsewhere, in an S3 bucket.
//!
//! The free functions are the client-side chores every test needs: creating an account,
//! streaming a message into Deliver or Append, reading a body back, and checking an error's
//! gRPC code together with its machine-readable reason.
//!
//! [`smtp`] puts the SMTP front-end in front of such a server, with clients and a transcript
//! runner for tests of the SMTP protocol; [`pop3`], [`imap`] and [`managesieve`] do the same for
//! POP3, IMAP and ManageSieve. [`common`] holds what those harnesses and their test files
//! share: accounts, the development certificate and TLS, front-end start and stop, the
//! transcript directory runner and the runner of real client programs.
//!
//! [`servers`] starts the real NATS JetStream and SeaweedFS S3 servers that the tests of the
//! distributed backend run against; [`blobs`] is the conformance suite every body store
//! backend passes.
//!
//! [`rspamd`] starts a real rspamd with its Redis for the spam filtering tests, and [`dnsbl`]
//! serves a DNS blocklist zone of the test's own on a loopback UDP port.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use tern_mailbox::{Limits, MailboxService, blobs::BlobLocation};
use tern_proto::v1::{
    Account, AppendHeader, AppendRequest, AppendResponse, CreateAccountRequest, CreateDomainRequest, DeliverEnvelope,
    DeliverRequest, DeliverResponse, ErrorReason, FetchBodyRequest, FolderRef, Password, admin_client::AdminClient,
    append_request, deliver_request, mailbox_client::MailboxClient, password,
};
use tern_runtime::rpc::Channel;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Code, Status};

pub mod blobs;
pub mod common;
pub mod dnsbl;
pub mod dovecot;
pub mod imap;
pub mod managesieve;
pub mod pop3;
pub mod relay;
pub mod rspamd;
pub mod smtp;

/// The real NATS JetStream and SeaweedFS S3 servers of the distributed tests, from the crate
/// `tern-testbed` (which tests of other crates use directly).
pub use tern_testbed as servers;

pub use tern_imap;
pub use tern_mailbox;
pub use tern_proto;
pub use tern_smtp;

/// A Mailbox API client over a real connection.
pub type Mailbox = MailboxClient<Channel>;
/// An Admin API client over a real connection.
pub type Admin = AdminClient<Channel>;

/// A gRPC channel to the mailbox service at `addr`, as the front-ends make it
/// (`tern_runtime::rpc`), so every test goes through the balancing client.
pub fn channel_to(addr: SocketAddr) -> Channel {
    let mut options = tern_runtime::rpc::ClientOptions::new(format!("http://{addr}"));
    options.read_only = tern_proto::read_only;
    tern_runtime::rpc::connect(&options).expect("a channel to the mailbox service")
}

/// Size of the chunks the helpers stream bodies in; small enough that a test message of a few
/// hundred kilobytes crosses several chunk boundaries.
pub const CHUNK: usize = 16 * 1024;

/// How long [`TestServer::stop`] waits for the server to drain its connections.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long reopening a data directory is retried while the previous store's writer thread
/// is still letting go of the database file lock.
const REOPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// A running mailbox service on the embedded backend, listening on loopback.
#[derive(Debug)]
pub struct TestServer {
    /// Where the server listens now; it changes on every restart.
    pub addr: SocketAddr,
    /// The data directory (`metadata.redb` and `blobs/`), kept across restarts.
    pub data_dir: PathBuf,
    limits: Limits,
    /// Where bodies go when not to `blobs/` in the data directory (an S3 bucket).
    blobs: Option<BlobLocation>,
    /// With `TERN_TEST_NATS_URL` set, the metadata is in that NATS JetStream server (or cluster)
    /// instead of the data directory, under this server's own prefix (kept across restarts).
    nats: Option<NatsBackend>,
    running: Option<Running>,
    // Declared last, so that the directory is removed after the server's handles are dropped.
    _dir: tempfile::TempDir,
}

/// Where a [`TestServer`] on the NATS backend keeps its metadata.
#[derive(Debug, Clone)]
struct NatsBackend {
    /// The server URL, or several separated by commas (the nodes of a cluster).
    url: String,
    /// The prefix of this server's stream and buckets, which its replicas share.
    prefix: String,
    /// On how many JetStream servers the stream and buckets are kept.
    replicas: usize,
}

#[derive(Debug)]
struct Running {
    service: MailboxService,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl TestServer {
    /// Starts a server with `limits` on a new, empty data directory.
    pub async fn start(limits: Limits) -> TestServer {
        Self::start_with(limits, None, None).await
    }

    /// Starts a server with `limits` on a new, empty data directory, with bodies in `blobs`
    /// (an S3 bucket, say) when given, and in the data directory otherwise.
    pub async fn start_with_blobs(limits: Limits, blobs: Option<BlobLocation>) -> TestServer {
        Self::start_with(limits, None, blobs).await
    }

    /// Starts a server on a copy of `source`, a data directory another server may still have
    /// open. Copying a live directory after its writes were acknowledged captures what a process
    /// crash would leave on disk, without the clean shutdown that [`TestServer::restart`] does.
    pub async fn start_from_copy(limits: Limits, source: &Path) -> TestServer {
        Self::start_with(limits, Some(source), None).await
    }

    /// Starts a server whose metadata is in the NATS server at `url`, under a new prefix, with
    /// one replica of its stream and buckets.
    pub async fn start_on_nats(limits: Limits, url: &str) -> TestServer {
        Self::start_on_nats_with_replicas(limits, url, 1).await
    }

    /// Starts a server whose metadata is in the NATS cluster at `url` (the nodes' URLs separated
    /// by commas, as [`servers::NatsCluster::url`] gives them), under a new prefix, its stream
    /// and buckets kept on `replicas` servers.
    pub async fn start_on_nats_with_replicas(limits: Limits, url: &str, replicas: usize) -> TestServer {
        let mut server = Self::start_with_backend(limits, None, None, Some(nats_prefix(url, replicas))).await;
        server.open().await;
        server
    }

    /// The prefix of this server's NATS stream and buckets (shared with its replicas), when its
    /// metadata is in NATS.
    pub fn nats_prefix(&self) -> Option<&str> {
        self.nats.as_ref().map(|nats| nats.prefix.as_str())
    }

    /// The name of the JetStream stream that holds the accounts' logs of this server (and its
    /// replicas), `<PREFIX>_MAIL`, as the NATS store names it, when its metadata is in NATS.
    pub fn nats_mail_stream(&self) -> Option<String> {
        self.nats_prefix().map(|prefix| format!("{}_MAIL", prefix.to_ascii_uppercase()))
    }

    /// Another mailbox replica over the same metadata (the same NATS prefix) and bodies (the
    /// same directory or bucket), serving on its own port, as a second pod would.
    pub async fn replica(&self) -> TestServer {
        assert!(self.nats.is_some(), "replicas share a NATS store; this server is embedded");
        let mut server =
            Self::start_with_backend(self.limits.clone(), None, self.blobs.clone(), self.nats.clone()).await;
        if self.blobs.is_none() {
            server.blobs = Some(BlobLocation::Local(self.data_dir.join("blobs")));
        }
        server.open().await;
        server
    }

    /// Changes the limits the server has from its next start ([`TestServer::restart`]) on.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Stops the server abruptly, as `kill -9` would stop a process: its task is aborted
    /// without draining connections or finishing calls in progress.
    pub async fn kill(&mut self) {
        if let Some(Running { service, shutdown, task }) = self.running.take() {
            task.abort();
            let _ = task.await;
            drop((service, shutdown));
        }
    }

    async fn start_with(limits: Limits, copy_of: Option<&Path>, blobs: Option<BlobLocation>) -> TestServer {
        let mut server = Self::start_with_backend(limits, copy_of, blobs, nats_backend()).await;
        server.open().await;
        server
    }

    async fn start_with_backend(
        limits: Limits,
        copy_of: Option<&Path>,
        blobs: Option<BlobLocation>,
        nats: Option<NatsBackend>,
    ) -> TestServer {
        let dir = tempfile::Builder::new().prefix("tern-test-").tempdir().expect("create a temporary directory");
        let data_dir = dir.path().join("data");
        if let Some(source) = copy_of {
            copy_dir(source, &data_dir);
        }
        TestServer {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir,
            limits,
            blobs,
            nats,
            running: None,
            _dir: dir,
        }
    }

    /// Opens the store in `data_dir` and serves it: on the port it had before, when it can,
    /// so that front-ends connected to it reconnect by themselves, as after a restart in a
    /// cluster; otherwise on a new loopback port.
    async fn open(&mut self) {
        assert!(self.running.is_none(), "the server is already running");
        let service = match &self.nats {
            Some(NatsBackend { url, prefix, replicas }) => {
                let blobs = match &self.blobs {
                    Some(location) => tern_mailbox::blobs::BlobStore::open(location),
                    None => tern_mailbox::blobs::BlobStore::local(self.data_dir.join("blobs")),
                }
                .expect("open the body store");
                tern_mailbox::server::open_nats(url, prefix, *replicas, blobs, self.limits.clone())
                    .await
                    .unwrap_or_else(|e| panic!("cannot open the NATS store at {url}: {e}"))
            }
            None => open_with_retry(&self.data_dir, &self.limits, self.blobs.as_ref()).await,
        };
        let listener = match tokio::net::TcpListener::bind(self.addr).await {
            Ok(l) => l,
            Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port"),
        };
        self.addr = listener.local_addr().expect("local address of the listener");
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(tern_mailbox::server::serve(service.clone(), listener, async move {
            // A dropped sender also means stop, so a panicking test does not leave it serving.
            let _ = signal.await;
        }));
        self.running = Some(Running { service, shutdown, task });
    }

    /// The service behind the socket, for what has no RPC (running garbage collection now).
    ///
    /// Panics when the server is stopped. A clone kept by a test keeps the store open, so
    /// drop it before calling [`TestServer::restart`].
    pub fn service(&self) -> &MailboxService {
        &self.running.as_ref().expect("the server is stopped").service
    }

    /// A new Mailbox client on its own connection: one client is one "session".
    pub async fn mailbox_client(&self) -> Mailbox {
        MailboxClient::new(channel_to(self.addr))
    }

    /// A new Admin client on its own connection.
    pub async fn admin_client(&self) -> Admin {
        AdminClient::new(channel_to(self.addr))
    }

    /// Stops the server and drops every handle on the store, so that the database file lock is
    /// released. Idle client connections are closed by the server; a client that still holds
    /// an open stream (a Watch) keeps the server draining, so drop those first.
    pub async fn stop(&mut self) {
        let Some(Running { service, shutdown, task }) = self.running.take() else {
            return;
        };
        // The server owns clones of the service; ours goes first so that, once the server
        // task has returned, nothing refers to the store any more and its writer thread exits.
        drop(service);
        let _ = shutdown.send(());
        match tokio::time::timeout(STOP_TIMEOUT, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("the server failed: {e}"),
            Ok(Err(e)) => panic!("the server task failed: {e}"),
            Err(_) => panic!("the server did not stop within {STOP_TIMEOUT:?}: is a client stream still open?"),
        }
    }

    /// Stops the server and opens the same data directory again on a new port, as a restarted
    /// process would. Clients made before must be made again.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.open().await;
    }
}

/// The NATS server (or cluster) the metadata of every [`TestServer`] goes to when
/// `TERN_TEST_NATS_URL` is set, with a prefix of this server's own, so tests sharing the server
/// never see each other's data. The variable holds one URL, or several separated by commas (the
/// nodes of a cluster); `TERN_TEST_NATS_REPLICAS` says on how many servers the stream and
/// buckets are kept (1 when unset). `cargo xtask e2e` and `ci` start a three-node cluster and
/// run the storage suites against it with three replicas.
fn nats_backend() -> Option<NatsBackend> {
    let url = std::env::var("TERN_TEST_NATS_URL").ok().filter(|u| !u.is_empty())?;
    Some(nats_prefix(&url, nats_replicas()))
}

/// `TERN_TEST_NATS_REPLICAS`, 1 when unset or empty; panics on anything but a positive number,
/// which would otherwise run the suites on a configuration nobody asked for.
fn nats_replicas() -> usize {
    match std::env::var("TERN_TEST_NATS_REPLICAS") {
        Ok(n) if !n.trim().is_empty() => match n.trim().parse() {
            Ok(n) if n > 0 => n,
            _ => panic!("TERN_TEST_NATS_REPLICAS must be a positive number, not {n:?}"),
        },
        _ => 1,
    }
}

/// `url` with `replicas` and a prefix no other test server of any test process uses.
fn nats_prefix(url: &str, replicas: usize) -> NatsBackend {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = format!("t{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    NatsBackend { url: url.to_string(), prefix, replicas }
}

/// The content hash a body's name starts with. Stores that count references name a body by
/// its hash alone; the others (NATS) add a suffix per stored object.
pub fn blob_hash(blob_id: &str) -> &str {
    blob_id.split_once('-').map_or(blob_id, |(hash, _)| hash)
}

/// Whether the storage suites run against NATS (see [`nats_backend`]).
pub fn on_nats() -> bool {
    std::env::var("TERN_TEST_NATS_URL").is_ok_and(|u| !u.is_empty())
}

/// Opens the embedded store, retrying while the previous instance still holds the file lock:
/// its writer thread and the server's background task let go of the database shortly after
/// the last handle is dropped, not at that very moment.
async fn open_with_retry(data_dir: &Path, limits: &Limits, blobs: Option<&BlobLocation>) -> MailboxService {
    let deadline = tokio::time::Instant::now() + REOPEN_TIMEOUT;
    let open = || match blobs {
        None => tern_mailbox::server::open_embedded(data_dir, limits.clone()),
        Some(location) => tern_mailbox::server::open_embedded_with_blobs(
            data_dir,
            tern_mailbox::blobs::BlobStore::open(location)?,
            limits.clone(),
        ),
    };
    loop {
        match open() {
            Ok(service) => return service,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot open the data directory {}: {e}", data_dir.display()),
        }
    }
}

/// Creates the address's domain unless it exists, then a mailbox with `password` and no
/// quota. Returns the new account.
pub async fn setup_account(admin: &mut Admin, address: &str, password: &str) -> Account {
    setup_account_with_quota(admin, address, password, 0).await
}

/// Like [`setup_account`], with a quota in bytes (zero: the domain's default, unlimited here).
pub async fn setup_account_with_quota(admin: &mut Admin, address: &str, password: &str, quota_bytes: u64) -> Account {
    let domain = address.rsplit_once('@').expect("an address with a domain").1;
    ensure_domain(admin, domain).await;
    admin
        .create_account(CreateAccountRequest {
            address: address.to_string(),
            password: Some(plain(password)),
            display_name: String::new(),
            quota_bytes,
        })
        .await
        .unwrap_or_else(|e| panic!("create account {address}: {e}"))
        .into_inner()
}

/// Creates a domain, accepting that it already exists.
pub async fn ensure_domain(admin: &mut Admin, domain: &str) {
    let request = CreateDomainRequest { name: domain.to_string(), ..Default::default() };
    match admin.create_domain(request).await {
        Ok(_) => {}
        Err(e) if e.code() == Code::AlreadyExists => {}
        Err(e) => panic!("create domain {domain}: {e}"),
    }
}

/// A password given in plain text.
pub fn plain(password: &str) -> Password {
    Password { value: Some(password::Value::Plain(password.to_string())) }
}

/// Delivers `body` to `recipients` the way the SMTP front-end does: the envelope first, then
/// the body in [`CHUNK`]-sized pieces.
pub async fn deliver(client: &mut Mailbox, recipients: &[&str], body: &[u8]) -> Result<DeliverResponse, Status> {
    let envelope = DeliverEnvelope {
        mail_from: "sender@remote.example".into(),
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        remote_ip: "127.0.0.1".into(),
        size_hint: 0,
        junk: vec![],
        spam_percent: None,
    };
    let mut requests = vec![DeliverRequest { part: Some(deliver_request::Part::Envelope(envelope)) }];
    requests
        .extend(body.chunks(CHUNK).map(|c| DeliverRequest { part: Some(deliver_request::Part::Chunk(c.to_vec())) }));
    client.deliver(futures::stream::iter(requests)).await.map(tonic::Response::into_inner)
}

/// Appends `body` to `folder` of `account_id` with `flags` (IMAP APPEND); the internal date is
/// left for the service to set.
pub async fn append(
    client: &mut Mailbox,
    account_id: u64,
    folder: FolderRef,
    flags: &[&str],
    body: &[u8],
) -> Result<AppendResponse, Status> {
    let header = AppendHeader {
        account_id,
        folder: Some(folder),
        flags: flags.iter().map(|f| f.to_string()).collect(),
        ..Default::default()
    };
    append_with_header(client, header, body).await
}

/// Appends `body` after the given header, for tests that set the date or a size hint.
pub async fn append_with_header(
    client: &mut Mailbox,
    header: AppendHeader,
    body: &[u8],
) -> Result<AppendResponse, Status> {
    let mut requests = vec![AppendRequest { part: Some(append_request::Part::Header(header)) }];
    requests.extend(body.chunks(CHUNK).map(|c| AppendRequest { part: Some(append_request::Part::Chunk(c.to_vec())) }));
    client.append(futures::stream::iter(requests)).await.map(tonic::Response::into_inner)
}

/// Reads a message body (or the byte range `offset..offset+length`, zero length meaning to the
/// end) and returns the bytes with the total size the first chunk announced.
pub async fn fetch_body(
    client: &mut Mailbox,
    account_id: u64,
    folder_id: u64,
    uid: u32,
    offset: u64,
    length: u64,
) -> Result<(Vec<u8>, u64), Status> {
    let mut stream =
        client.fetch_body(FetchBodyRequest { account_id, folder_id, uid, offset, length }).await?.into_inner();
    let mut bytes = Vec::new();
    let mut total = None;
    while let Some(chunk) = stream.message().await? {
        total.get_or_insert(chunk.total_size);
        bytes.extend_from_slice(&chunk.chunk);
    }
    Ok((bytes, total.unwrap_or(0)))
}

/// Asserts that `result` failed with `code` and carries `reason`, and returns the status.
#[track_caller]
pub fn expect_error<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, reason: ErrorReason) -> Status {
    match result {
        Ok(v) => panic!("expected {code:?}/{reason:?}, got success: {v:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "wrong gRPC code in {status:?}");
            assert_eq!(ErrorReason::of(&status), reason, "wrong reason in {status:?}");
            status
        }
    }
}

/// A small but well-formed RFC 5322 message with a distinct subject and text.
pub fn message(subject: &str, text: &str) -> Vec<u8> {
    format!(
        "From: Sender <sender@remote.example>\r\nTo: Alice <alice@example.com>\r\nSubject: {subject}\r\n\
         Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@remote.example>\r\n\r\n{text}\r\n"
    )
    .into_bytes()
}

/// The bodies stored under a blob directory, however deep: the files whose names start with a
/// content hash (64 hex digits), as the body collector recognises them. The full-text index's segment files, which the blob store also holds on
/// the NATS backend (`index/<account>/`), are not bodies.
pub fn count_bodies(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .map(|e| e.expect("read a directory entry"))
        .map(|e| {
            let kind = e.file_type().expect("file type of a directory entry");
            let name = e.file_name();
            let name = name.to_string_lossy();
            if kind.is_dir() {
                count_bodies(&e.path())
            } else {
                usize::from(
                    kind.is_file() && name.len() >= 64 && name.as_bytes()[..64].iter().all(u8::is_ascii_hexdigit),
                )
            }
        })
        .sum()
}

/// Copies a directory tree.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy's directory");
    for entry in std::fs::read_dir(from).expect("read the directory to copy") {
        let entry = entry.expect("read a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type of a directory entry").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

/// Where bodies live inside a data directory.
pub fn blobs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("blobs")
}

/// The file that holds the body named `blob_id` in a data directory (two levels of fan-out by
/// the first four hex digits).
pub fn blob_path(data_dir: &Path, blob_id: &str) -> PathBuf {
    blobs_dir(data_dir).join(&blob_id[..2]).join(&blob_id[2..4]).join(blob_id)
}

/// Runs body garbage collection until it has deleted at least `want` bodies, or gives up after
/// a few seconds and returns what it deleted. Orphans carry a timestamp in whole seconds and are
/// collected once it is strictly older than the grace period, so even with a zero grace a
/// body orphaned in the current second waits for the next one.
pub async fn collect_garbage_until(service: &MailboxService, want: usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut deleted = 0;
    loop {
        deleted += service.collect_garbage().await.expect("collect garbage");
        if deleted >= want || tokio::time::Instant::now() >= deadline {
            return deleted;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
