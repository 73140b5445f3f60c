//! `tern`: the one binary of Tern. `tern dev` runs every part in one process on embedded
//! storage; `tern mailbox`, `tern smtp`, `tern imap`, `tern pop3` and `tern managesieve` run
//! one part for a distributed deployment; `tern admin` manages domains and mailboxes.

mod admin;
mod config;
mod serve;
mod transfer;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(name = "tern", version, about = "A Kubernetes-native, distributed e-mail platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs every part in one process on embedded storage, listening on 127.0.0.1.
    Dev(DevArgs),
    /// Runs the mailbox service alone (the part that owns storage).
    Mailbox(MailboxArgs),
    /// Runs the SMTP front-end alone, against the mailbox service at --mailbox-url.
    Smtp(SmtpArgs),
    /// Runs the POP3 front-end alone, against the mailbox service at --mailbox-url.
    Pop3(Pop3Args),
    /// Runs the IMAP front-end alone, against the mailbox service at --mailbox-url.
    Imap(ImapArgs),
    /// Runs the ManageSieve front-end alone (Sieve scripts, RFC 5804), against the mailbox
    /// service at --mailbox-url.
    Managesieve(ManageSieveArgs),
    /// Runs a relay worker alone: delivers the outbound queue of the mailbox service at
    /// --mailbox-url to other mail servers.
    Relay(RelayArgs),
    /// Manages domains, mailboxes and aliases of a running mailbox service.
    Admin(admin::AdminArgs),
    /// Restores a backup (`tern admin backup`) into an empty installation: the data directory,
    /// or the NATS prefix, and the body store of the configuration. Stop the mailbox service
    /// first.
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
struct RestoreArgs {
    /// The backup directory (with its backup.json).
    dir: PathBuf,
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    store: StoreArgs,
}

/// What every role takes.
#[derive(Debug, Args)]
struct CommonArgs {
    /// A TOML config file; flags override it.
    #[arg(long, env = "TERN_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address of /metrics, /healthz, /readyz (default 127.0.0.1:9095).
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// OTLP/gRPC endpoint to export traces to.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

/// Where the mailbox service keeps its data, and where it listens.
#[derive(Debug, Args)]
struct StoreArgs {
    /// Where data is kept (default: ./tern-data).
    #[arg(long, env = "TERN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Where message bodies are kept: s3://bucket[/prefix], file:///path or a path
    /// (default: blobs/ in the data directory). S3 settings come from [blobs] and AWS_*.
    #[arg(long, env = "TERN_BLOBS", value_name = "URL")]
    blobs: Option<String>,
    /// Where metadata is kept: nats://host:port, several of a cluster's servers separated by
    /// commas (NATS JetStream, shared by every mailbox replica), or "embedded" (default: the
    /// database in the data directory). Credentials: [store] or TERN_NATS_USER, _PASSWORD, _TOKEN.
    #[arg(long, env = "TERN_STORE", value_name = "URL")]
    store: Option<String>,
    /// JetStream servers that keep a copy of each entry, when the stream is created (1-5).
    #[arg(long, env = "TERN_STORE_REPLICAS")]
    store_replicas: Option<usize>,
    /// Names the JetStream stream and buckets, so installations can share a NATS cluster.
    #[arg(long, env = "TERN_STORE_PREFIX")]
    store_prefix: Option<String>,
    /// Listen address of the mailbox gRPC API (default 127.0.0.1:50051).
    #[arg(long)]
    grpc_listen: Option<SocketAddr>,
}

/// How a part that runs without the mailbox service reaches it.
#[derive(Debug, Args)]
struct ClientArgs {
    /// The mailbox service (default http://127.0.0.1:50051). A name with several addresses
    /// (a headless Service) is balanced over all of them, re-resolved every
    /// mailbox_resolve_secs; https:// with [internal_tls].
    #[arg(long, env = "TERN_MAILBOX_URL")]
    mailbox_url: Option<String>,
}

/// What front-ends with TLS listeners take.
#[derive(Debug, Args)]
struct FrontArgs {
    /// This server's host name (greetings, Received: headers, the development certificate).
    #[arg(long)]
    hostname: Option<String>,
    /// Where the development certificate is kept when [tls] names none (default ./tern-data).
    #[arg(long, env = "TERN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    discovery: DiscoveryListenArgs,
}

#[derive(Debug, Args)]
struct DiscoveryListenArgs {
    /// HTTPS listener of what mail clients configure themselves from: Thunderbird's autoconfig,
    /// Outlook's Autodiscover, Apple's profile, and the MTA-STS policy (repeatable; default
    /// 127.0.0.1:8443 in tern dev, none in the other roles; [discovery] has the rest).
    #[arg(long)]
    discovery_listen: Vec<SocketAddr>,
}

#[derive(Debug, Args)]
struct SmtpListenArgs {
    /// SMTP listener with port 25 semantics (repeatable; default 127.0.0.1:2525).
    #[arg(long)]
    smtp_listen: Vec<SocketAddr>,
    /// Submission listener, STARTTLS then AUTH (repeatable; default 127.0.0.1:5587).
    #[arg(long)]
    submission_listen: Vec<SocketAddr>,
    /// Submission listener with implicit TLS (repeatable; default 127.0.0.1:5465).
    #[arg(long)]
    submissions_listen: Vec<SocketAddr>,
}

#[derive(Debug, Args)]
struct Pop3ListenArgs {
    /// POP3 listener, STLS available (repeatable; default 127.0.0.1:1110).
    #[arg(long)]
    pop3_listen: Vec<SocketAddr>,
    /// POP3 listener with implicit TLS (repeatable; default 127.0.0.1:1995).
    #[arg(long)]
    pop3s_listen: Vec<SocketAddr>,
}

#[derive(Debug, Args)]
struct ImapListenArgs {
    /// IMAP listener, STARTTLS available (repeatable; default 127.0.0.1:1143).
    #[arg(long)]
    imap_listen: Vec<SocketAddr>,
    /// IMAP listener with implicit TLS (repeatable; default 127.0.0.1:1993).
    #[arg(long)]
    imaps_listen: Vec<SocketAddr>,
}

#[derive(Debug, Args)]
struct ManageSieveListenArgs {
    /// ManageSieve listener, STARTTLS available (repeatable; default 127.0.0.1:4190).
    #[arg(long)]
    managesieve_listen: Vec<SocketAddr>,
}

#[derive(Debug, Args)]
struct DevArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    store: StoreArgs,
    /// This server's host name (greetings, Received: headers, the development certificate).
    #[arg(long)]
    hostname: Option<String>,
    #[command(flatten)]
    smtp: SmtpListenArgs,
    #[command(flatten)]
    pop3: Pop3ListenArgs,
    #[command(flatten)]
    imap: ImapListenArgs,
    #[command(flatten)]
    managesieve: ManageSieveListenArgs,
    #[command(flatten)]
    discovery: DiscoveryListenArgs,
}

#[derive(Debug, Args)]
struct MailboxArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Args)]
struct SmtpArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    front: FrontArgs,
    #[command(flatten)]
    listen: SmtpListenArgs,
}

#[derive(Debug, Args)]
struct Pop3Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    front: FrontArgs,
    #[command(flatten)]
    listen: Pop3ListenArgs,
}

#[derive(Debug, Args)]
struct ImapArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    front: FrontArgs,
    #[command(flatten)]
    listen: ImapListenArgs,
}

#[derive(Debug, Args)]
struct ManageSieveArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    front: FrontArgs,
    #[command(flatten)]
    listen: ManageSieveListenArgs,
}

#[derive(Debug, Args)]
struct RelayArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    client: ClientArgs,
    /// This server's host name (EHLO, DSN reports).
    #[arg(long)]
    hostname: Option<String>,
}

impl CommonArgs {
    fn load(self) -> anyhow::Result<Config> {
        let mut c = Config::load(self.config.as_deref())?;
        c.store.apply_env(|name| std::env::var(name).ok());
        c.admin.apply_env(|name| std::env::var(name).ok());
        if let Some(a) = self.http_listen {
            c.listen.http = a;
        }
        if self.otlp_endpoint.is_some() {
            c.telemetry.otlp_endpoint = self.otlp_endpoint;
        }
        Ok(c)
    }
}

impl StoreArgs {
    fn apply(self, c: &mut Config) {
        if let Some(d) = self.data_dir {
            c.data_dir = d;
        }
        if self.blobs.is_some() {
            c.blobs.url = self.blobs;
        }
        if let Some(url) = self.store {
            c.store.url = Some(config::Urls::One(url));
        }
        if let Some(n) = self.store_replicas {
            c.store.replicas = n;
        }
        if let Some(p) = self.store_prefix {
            c.store.prefix = p;
        }
        if let Some(a) = self.grpc_listen {
            c.listen.grpc = a;
        }
    }
}

impl ClientArgs {
    fn apply(self, c: &mut Config) {
        if let Some(u) = self.mailbox_url {
            c.mailbox_url = u;
        }
    }
}

impl FrontArgs {
    fn apply(self, c: &mut Config) {
        if let Some(h) = self.hostname {
            c.smtp.hostname = h;
        }
        if let Some(d) = self.data_dir {
            c.data_dir = d;
        }
        self.discovery.apply(c);
    }
}

impl DiscoveryListenArgs {
    fn apply(self, c: &mut Config) {
        if !self.discovery_listen.is_empty() {
            c.discovery.listen = Some(self.discovery_listen);
        }
    }
}

impl SmtpListenArgs {
    fn apply(self, c: &mut Config) {
        if !self.smtp_listen.is_empty() {
            c.smtp.mx = self.smtp_listen;
        }
        if !self.submission_listen.is_empty() {
            c.smtp.submission = self.submission_listen;
        }
        if !self.submissions_listen.is_empty() {
            c.smtp.submissions = self.submissions_listen;
        }
    }
}

impl Pop3ListenArgs {
    fn apply(self, c: &mut Config) {
        if !self.pop3_listen.is_empty() {
            c.pop3.pop3 = self.pop3_listen;
        }
        if !self.pop3s_listen.is_empty() {
            c.pop3.pop3s = self.pop3s_listen;
        }
    }
}

impl ImapListenArgs {
    fn apply(self, c: &mut Config) {
        if !self.imap_listen.is_empty() {
            c.imap.imap = self.imap_listen;
        }
        if !self.imaps_listen.is_empty() {
            c.imap.imaps = self.imaps_listen;
        }
    }
}

impl ManageSieveListenArgs {
    fn apply(self, c: &mut Config) {
        if !self.managesieve_listen.is_empty() {
            c.managesieve.managesieve = self.managesieve_listen;
        }
    }
}

impl Command {
    /// The configuration a serving role runs with, its roles and its name in traces.
    fn serving(self) -> anyhow::Result<Option<(Config, serve::Roles, &'static str)>> {
        let none =
            serve::Roles { mailbox: false, smtp: false, pop3: false, imap: false, managesieve: false, relay: false };
        Ok(Some(match self {
            Command::Dev(a) => {
                let mut c = a.common.load()?;
                a.store.apply(&mut c);
                if let Some(h) = a.hostname {
                    c.smtp.hostname = h;
                }
                a.smtp.apply(&mut c);
                a.pop3.apply(&mut c);
                a.imap.apply(&mut c);
                a.managesieve.apply(&mut c);
                a.discovery.apply(&mut c);
                let all =
                    serve::Roles { mailbox: true, smtp: true, pop3: true, imap: true, managesieve: true, relay: true };
                (c, all, "tern-dev")
            }
            Command::Mailbox(a) => {
                let mut c = a.common.load()?;
                a.store.apply(&mut c);
                (c, serve::Roles { mailbox: true, ..none }, "tern-mailbox")
            }
            Command::Smtp(a) => {
                let mut c = a.common.load()?;
                a.client.apply(&mut c);
                a.front.apply(&mut c);
                a.listen.apply(&mut c);
                (c, serve::Roles { smtp: true, ..none }, "tern-smtp")
            }
            Command::Pop3(a) => {
                let mut c = a.common.load()?;
                a.client.apply(&mut c);
                a.front.apply(&mut c);
                a.listen.apply(&mut c);
                (c, serve::Roles { pop3: true, ..none }, "tern-pop3")
            }
            Command::Imap(a) => {
                let mut c = a.common.load()?;
                a.client.apply(&mut c);
                a.front.apply(&mut c);
                a.listen.apply(&mut c);
                (c, serve::Roles { imap: true, ..none }, "tern-imap")
            }
            Command::Managesieve(a) => {
                let mut c = a.common.load()?;
                a.client.apply(&mut c);
                a.front.apply(&mut c);
                a.listen.apply(&mut c);
                (c, serve::Roles { managesieve: true, ..none }, "tern-managesieve")
            }
            Command::Relay(a) => {
                let mut c = a.common.load()?;
                a.client.apply(&mut c);
                if let Some(h) = a.hostname {
                    c.smtp.hostname = h;
                }
                (c, serve::Roles { relay: true, ..none }, "tern-relay")
            }
            Command::Admin(_) | Command::Restore(_) => return Ok(None),
        }))
    }
}

async fn serve(config: Config, roles: serve::Roles, name: &str) -> anyhow::Result<()> {
    let _telemetry = tern_runtime::telemetry::init(name, config.telemetry.otlp_endpoint.as_deref())?;
    serve::run(config, roles, name == "tern-dev").await
}

#[tokio::main]
async fn main() -> ExitCode {
    // Before anything can build a TLS client: the S3 client uses the process default.
    tern_runtime::tls::install_crypto_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Admin(args) => admin::run(args).await,
        Command::Restore(args) => match args.common.load() {
            Ok(mut c) => {
                args.store.apply(&mut c);
                transfer::backup::restore(c, args.dir).await
            }
            Err(e) => Err(e),
        },
        command => match command.serving() {
            Ok(Some((config, roles, name))) => serve(config, roles, name).await,
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
