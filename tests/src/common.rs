//! Pieces that the SMTP, POP3 and IMAP harnesses, and the test files built on them, share.
//!
//! For the servers: [`create_accounts`] makes the standard accounts with [`cheap_hash`]es,
//! [`DevCert`] makes a development certificate and the TLS configuration that serves it, and
//! [`tls_connector`], [`tls_handshake`] and [`connect`] are the client side of that TLS.
//! [`bind_loopback`], [`mailbox_channel`] and [`Background`] start a front-end and stop it
//! again; [`deliver_one`], [`select_folder`] and [`stored_body`] look at the mailbox behind it.
//!
//! For the test files: [`run_transcript_dir`] plays every transcript of a directory, and
//! [`play_every_chunking`] plays one transcript once per way of cutting the client's bytes
//! ([`chunkings`]); [`play_served_transcript_file`] does that for a [`ServedTranscript`], which
//! starts a server of its own for every run. [`run_client`] runs a real client program with a time limit, and
//! [`run_python_script`] runs one of the scripts of `scripts/` and reads the `key value` lines
//! it prints ([`ScriptOutput`]).

use std::{
    collections::HashMap,
    ffi::OsStr,
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::Arc,
    time::Duration,
};

use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tern_proto::v1::{
    CreateAccountRequest, DeliveryStatus, Folder, FolderRef, MessageSummary, SelectRequest, password,
};
use tern_runtime::rpc::Channel;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::{JoinHandle, JoinSet},
};
use tokio_rustls::TlsConnector;

use crate::{
    Mailbox, TestServer, deliver, ensure_domain, fetch_body,
    smtp::{BoxIo, Chunking},
};

/// How long a client waits for one line from the server, for the server to close, or for a TLS
/// handshake to finish.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The accounts every POP3 and IMAP test server starts with, with their passwords.
pub const ACCOUNTS: [(&str, &str); 4] = [
    ("alice@example.com", "alice-pw"),
    ("bob@example.com", "bob-pw"),
    ("carol@example.com", "carol-pw"),
    ("dave@example.com", "dave-pw"),
];

/// Mailbox limits that do not throttle the logins of tests that fail some on purpose: the
/// per-IP throttle of the mailbox service would otherwise refuse the good logins that follow.
pub fn lenient_mailbox_limits() -> tern_mailbox::Limits {
    tern_mailbox::Limits { max_auth_failures: 10_000, ..Default::default() }
}

/// How a POP3 or IMAP test server is configured; `L` is the protocol's limits.
#[derive(Debug, Clone)]
pub struct FrontendOptions<L> {
    /// The protocol limits of every front-end the server starts.
    pub limits: L,
    /// Whether logins (USER/PASS, LOGIN, AUTH, AUTHENTICATE) are accepted before TLS.
    pub allow_plaintext_auth: bool,
    /// The limits of the mailbox service behind the front-ends.
    pub mailbox_limits: tern_mailbox::Limits,
    /// Where the mailbox service keeps bodies; unset: its data directory.
    pub blobs: Option<tern_mailbox::blobs::BlobLocation>,
}

impl<L: Default> Default for FrontendOptions<L> {
    /// Default protocol limits, plain-text logins refused (as in production), and mailbox limits
    /// that do not throttle the logins of tests that fail some on purpose.
    fn default() -> Self {
        Self {
            limits: L::default(),
            allow_plaintext_auth: false,
            mailbox_limits: lenient_mailbox_limits(),
            blobs: None,
        }
    }
}

/// An argon2id PHC hash of `password` with the smallest parameters argon2 allows. The mailbox
/// service verifies a password with the parameters stored in its hash, so logins still run
/// argon2, only without the cost of production parameters, which would make the dozens of
/// servers and logins of the protocol tests CPU-bound.
pub fn cheap_hash(password: &str) -> String {
    use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version, password_hash::SaltString};
    let params = Params::new(Params::MIN_M_COST, 1, 1, None).expect("valid argon2 parameters");
    let salt = SaltString::encode_b64(b"tern-smtp-tests").expect("a valid salt");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .expect("hash a password")
        .to_string()
}

/// Creates every `(address, password)` of `accounts` on `mailbox`, with a [`cheap_hash`] of the
/// password and the domains they need. Returns the id of each account by its address.
pub async fn create_accounts(mailbox: &TestServer, accounts: &[(&str, &str)]) -> HashMap<String, u64> {
    let mut admin = mailbox.admin_client().await;
    let mut ids = HashMap::new();
    for &(address, password) in accounts {
        ensure_domain(&mut admin, address.rsplit_once('@').expect("an address with a domain").1).await;
        let request = CreateAccountRequest {
            address: address.into(),
            password: Some(tern_proto::v1::Password { value: Some(password::Value::Hash(cheap_hash(password))) }),
            ..Default::default()
        };
        let account = admin
            .create_account(request)
            .await
            .unwrap_or_else(|e| panic!("create account {address}: {e}"))
            .into_inner();
        ids.insert(address.to_string(), account.id);
    }
    ids
}

/// The id of `address` among the accounts that [`create_accounts`] made.
pub fn account_id_in(ids: &HashMap<String, u64>, address: &str) -> u64 {
    *ids.get(address).unwrap_or_else(|| panic!("{address} is not a standard account"))
}

/// The password of `address` in a list of standard accounts.
pub fn password_in(accounts: &[(&'static str, &'static str)], address: &str) -> &'static str {
    accounts.iter().find(|(a, _)| *a == address).unwrap_or_else(|| panic!("{address} is not a standard account")).1
}

/// A development certificate for `localhost` and `127.0.0.1` in a temporary directory, and the
/// server TLS configuration that presents it. The directory lives as long as the value.
#[derive(Debug)]
pub struct DevCert {
    /// The PEM file of the certificate, for clients that verify it.
    pub ca_cert: PathBuf,
    /// The server side of TLS with this certificate.
    pub server_config: Arc<rustls::ServerConfig>,
    _dir: tempfile::TempDir,
}

impl DevCert {
    /// Makes a certificate in a new temporary directory whose name starts with `prefix`.
    pub fn new(prefix: &str) -> DevCert {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().expect("create a temporary directory");
        let paths = tern_runtime::tls::dev_certificate(dir.path(), &["localhost".into(), "127.0.0.1".into()])
            .expect("generate a development certificate");
        let server_config = tern_runtime::tls::server_config(&paths).expect("load the development certificate");
        DevCert { ca_cert: paths.cert, server_config, _dir: dir }
    }
}

/// A TLS client configuration that trusts the certificate in the PEM file `ca_cert` (and
/// nothing else).
pub fn tls_connector(ca_cert: &Path) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_cert).expect("read the certificate") {
        roots.add(cert.expect("a PEM certificate")).expect("a usable root certificate");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// Runs a TLS handshake as a client for `localhost` over `stream`, verifying the server's
/// certificate against `ca_cert`, within [`IO_TIMEOUT`].
pub async fn tls_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    ca_cert: &Path,
    stream: S,
) -> std::io::Result<tokio_rustls::client::TlsStream<S>> {
    let name = ServerName::try_from("localhost").expect("a valid server name");
    tokio::time::timeout(IO_TIMEOUT, tls_connector(ca_cert).connect(name, stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// A listener on a free loopback port, with its address.
pub async fn bind_loopback() -> (TcpListener, SocketAddr) {
    let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let addr = socket.local_addr().expect("local address of the listener");
    (socket, addr)
}

/// A gRPC channel to the mailbox service at `mailbox`, connected on first use, as a front-end
/// has it.
pub fn mailbox_channel(mailbox: SocketAddr) -> Channel {
    crate::channel_to(mailbox)
}

/// A server task serving in the background until stopped or dropped.
#[derive(Debug)]
pub struct Background {
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    stop_within: Duration,
}

impl Background {
    /// Spawns a server: `serve` gets the receiver that tells it to stop, and
    /// [`Background::stop`] waits at most `stop_within` for it to return.
    pub fn spawn<F>(stop_within: Duration, serve: impl FnOnce(watch::Receiver<bool>) -> F) -> Background
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (shutdown, rx) = watch::channel(false);
        Background { shutdown, task: Some(tokio::spawn(serve(rx))), stop_within }
    }

    /// Asks the server to stop and waits for it (open sessions get the server's grace period).
    pub async fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            tokio::time::timeout(self.stop_within, task)
                .await
                .expect("the server did not stop in time")
                .expect("the server task failed");
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Delivers `body` to `address` through the Deliver RPC (as SMTP does), checks that it was
/// delivered and returns its UID.
pub async fn deliver_one(mailbox: &TestServer, address: &str, body: &[u8]) -> u32 {
    let response = deliver(&mut mailbox.mailbox_client().await, &[address], body)
        .await
        .unwrap_or_else(|e| panic!("deliver to {address}: {e}"));
    let result = response.results.first().expect("a result for the recipient");
    assert_eq!(result.status, DeliveryStatus::Delivered as i32, "delivery to {address}: {result:?}");
    result.uid
}

/// The folder `name` of account `account_id` (whose address is `address`) as the mailbox API
/// shows it, with its messages in UID order.
pub async fn select_folder(
    mail: &mut Mailbox,
    account_id: u64,
    address: &str,
    name: &str,
) -> (Folder, Vec<MessageSummary>) {
    let selected = mail
        .select(SelectRequest { account_id, folder: Some(FolderRef::name(name)) })
        .await
        .unwrap_or_else(|e| panic!("select {name} of {address}: {e}"))
        .into_inner();
    (selected.folder.expect("a folder in the select response"), selected.messages)
}

/// The stored bytes of message `uid` in folder `folder_id` of account `account_id`, checked
/// against the size that FetchBody announced. `what` names the message in a failure.
pub async fn stored_body(mail: &mut Mailbox, account_id: u64, folder_id: u64, uid: u32, what: &str) -> Vec<u8> {
    let (body, total) = fetch_body(mail, account_id, folder_id, uid, 0, 0)
        .await
        .unwrap_or_else(|e| panic!("fetch message {uid} of {what}: {e}"));
    assert_eq!(body.len() as u64, total, "FetchBody announced a different size than it sent");
    body
}

/// The transcript files of a directory (`*.txt`), sorted by name.
pub fn transcript_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read the transcript directory {}: {e}", dir.display()))
        .map(|e| e.expect("read a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    files
}

/// The name and the text of a transcript file.
pub fn read_transcript_file(path: &Path) -> Result<(String, String), String> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
    Ok((name, text))
}

/// The `# port:` and `# plaintext-auth:` directives of the POP3 or IMAP transcript `name`: the
/// listener named there among `ports` (the first of them when the transcript names none), and
/// whether logins before TLS are accepted (`yes` unless it says `no`).
pub fn port_and_plaintext_auth<K: Copy>(name: &str, text: &str, ports: &[(&str, K)]) -> Result<(K, bool), String> {
    let (mut port, mut allow_plaintext_auth) = (ports[0].1, true);
    for (i, line) in text.lines().enumerate() {
        if let Some(v) = line.strip_prefix("# port:") {
            let v = v.trim();
            port = ports
                .iter()
                .find(|(p, _)| *p == v)
                .map(|(_, k)| *k)
                .ok_or_else(|| format!("{name}:{}: unknown port {v:?}", i + 1))?;
        } else if let Some(v) = line.strip_prefix("# plaintext-auth:") {
            allow_plaintext_auth = match v.trim() {
                "yes" => true,
                "no" => false,
                other => return Err(format!("{name}:{}: expected yes or no, got {other:?}", i + 1)),
            };
        }
    }
    Ok((port, allow_plaintext_auth))
}

/// The ways every transcript is played: each flight of client lines in one write, then cut in
/// pieces of 1 to 7 bytes (1 puts every byte boundary of the input in front of the server).
pub fn chunkings() -> Vec<Chunking> {
    std::iter::once(Chunking::Whole).chain((1..=7).map(Chunking::Bytes)).collect()
}

/// Waits for every task of `runs` and returns the errors they ended with. `what` names the
/// tasks in the panic that a panicking task causes.
async fn failures_of(mut runs: JoinSet<Result<(), String>>, what: &str) -> Vec<String> {
    let mut failures = Vec::new();
    while let Some(result) = runs.join_next().await {
        if let Err(e) = result.unwrap_or_else(|e| panic!("{what} panicked: {e}")) {
            failures.push(e);
        }
    }
    failures
}

/// Plays the transcript `name` once per way of [`chunkings`], side by side: `play` runs one
/// session cut that way. Fails with every run's error, each prefixed with `name`.
pub async fn play_every_chunking<F, Fut>(name: &str, play: F) -> Result<(), String>
where
    F: Fn(Chunking) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let mut runs = JoinSet::new();
    for chunking in chunkings() {
        let run = play(chunking);
        runs.spawn(async move { run.await.map_err(|e| format!("({chunking:?}): {e}")) });
    }
    let failures = failures_of(runs, "a transcript run").await;
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.iter().map(|e| format!("{name} {e}")).collect::<Vec<_>>().join("\n"))
    }
}

/// A transcript that brings its own server (those of POP3 and IMAP): a session changes the
/// mailbox, so every run of it needs a fresh one.
pub trait ServedTranscript: Clone + Send + Sync + Sized + 'static {
    /// Parses the transcript file `name` with the text `text`.
    fn parse_file(name: &str, text: &str) -> Result<Self, String>;

    /// Starts a server for the transcript and plays it over one connection, the client's bytes
    /// cut by `chunking`.
    fn play(&self, chunking: Chunking) -> impl Future<Output = Result<(), String>> + Send;
}

/// Plays the transcript file at `path` once per way of [`chunkings`], each on a server of its
/// own.
pub async fn play_served_transcript_file<T: ServedTranscript>(path: PathBuf) -> Result<(), String> {
    let (name, text) = read_transcript_file(&path)?;
    let transcript = T::parse_file(&name, &text)?;
    play_every_chunking(&name, |chunking| {
        let transcript = transcript.clone();
        async move { transcript.play(chunking).await }
    })
    .await
}

/// Plays every transcript file of `transcripts/{protocol}/` side by side with `run_file`, and
/// fails the test if there are fewer than `at_least` files or any of them fails.
pub async fn run_transcript_dir<F, Fut>(protocol: &str, at_least: usize, run_file: F)
where
    F: Fn(PathBuf) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("transcripts").join(protocol);
    let mut files = transcript_files(&dir);
    // While working on one scenario, `TERN_TRANSCRIPT=name` plays only the files whose names
    // contain `name`; the count check then applies to what is left, so a typo still fails.
    let at_least = match std::env::var("TERN_TRANSCRIPT") {
        Ok(only) => {
            files.retain(|f| f.file_stem().is_some_and(|s| s.to_string_lossy().contains(&only)));
            1
        }
        Err(_) => at_least,
    };
    assert!(files.len() >= at_least, "expected the {protocol} transcripts in {}, found {}", dir.display(), files.len());
    let mut runs = JoinSet::new();
    for file in files {
        runs.spawn(run_file(file));
    }
    let failures = failures_of(runs, "a transcript task").await;
    assert!(failures.is_empty(), "{} transcript(s) failed:\n{}", failures.len(), failures.join("\n"));
}

/// Runs a client program to its end (at most `limit`), killing it if it takes longer. A
/// missing program fails the test with `install_hint`.
pub fn run_program(mut command: Command, install_hint: &str, limit: Duration) -> Output {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}); {install_hint}"));
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().expect("wait for the client program").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect the output of the killed client");
            panic!(
                "{program} did not finish within {limit:?}:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect the output of the client program")
}

/// Runs a client program (see [`run_program`]) on a blocking thread, so that the servers of the
/// test keep running.
pub async fn run_client(command: Command, install_hint: &'static str, limit: Duration) -> Output {
    tokio::task::spawn_blocking(move || run_program(command, install_hint, limit))
        .await
        .expect("the client thread panicked")
}

/// Runs `scripts/{script}` with Python 3 and `args` (at most `limit`), and fails the test,
/// naming the run `what`, unless it succeeds. Returns what the script printed.
pub async fn run_python_script<I>(script: &str, args: I, what: &str, limit: Duration) -> ScriptOutput
where
    I: IntoIterator,
    I::Item: AsRef<OsStr>,
{
    let mut command = Command::new("python3");
    command.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(script)).args(args);
    let out = run_client(command, "install Python 3 (apt-get install python3)", limit).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    ScriptOutput::parse(&stdout)
}

/// The `key value` lines a script of `scripts/` printed, in order; values of binary data are
/// base64.
#[derive(Debug, Clone, Default)]
pub struct ScriptOutput(pub Vec<(String, String)>);

impl ScriptOutput {
    /// The lines of `stdout` that have a space, split at the first one.
    pub fn parse(stdout: &str) -> ScriptOutput {
        ScriptOutput(stdout.lines().filter_map(|l| l.split_once(' ')).map(|(k, v)| (k.into(), v.into())).collect())
    }

    /// The value of `key`; panics when the script did not print it.
    pub fn value(&self, key: &str) -> &str {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no {key} in {self:?}"))
    }

    /// The value of `key`, base64-decoded.
    pub fn decoded(&self, key: &str) -> Vec<u8> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(self.value(key))
            .unwrap_or_else(|e| panic!("{key}: base64 from the script: {e}"))
    }

    /// The value of `key`, base64-decoded and read as text (lossily).
    pub fn text(&self, key: &str) -> String {
        String::from_utf8_lossy(&self.decoded(key)).into_owned()
    }
}

/// A new TCP connection to `addr` (with TCP_NODELAY) as a boxed stream, with the TLS handshake
/// done when `implicit_tls` gives the certificate to verify the server with. `server` names the
/// server in a failure.
pub async fn connect(addr: SocketAddr, implicit_tls: Option<&Path>, server: &str) -> BoxIo {
    let tcp = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect to {server}: {e}"));
    tcp.set_nodelay(true).expect("set TCP_NODELAY");
    match implicit_tls {
        Some(ca_cert) => Box::new(
            tls_handshake(ca_cert, tcp).await.unwrap_or_else(|e| panic!("TLS handshake with {server} ({addr}): {e}")),
        ),
        None => Box::new(tcp),
    }
}
