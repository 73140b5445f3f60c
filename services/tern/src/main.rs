//! `tern`: the one binary of Tern. `tern dev` runs every part in one process on embedded
//! storage; `tern mailbox`, `tern smtp`, `tern imap` and `tern pop3` run one
//! part for a distributed deployment; `tern admin` manages domains and mailboxes.

mod admin;
mod config;
mod serve;

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
    Dev(ServeArgs),
    /// Runs the mailbox service alone (the part that owns storage).
    Mailbox(ServeArgs),
    /// Runs the SMTP front-end alone, against the mailbox service at --mailbox-url.
    Smtp(ServeArgs),
    /// Runs the POP3 front-end alone, against the mailbox service at --mailbox-url.
    Pop3(ServeArgs),
    /// Runs the IMAP front-end alone, against the mailbox service at --mailbox-url.
    Imap(ServeArgs),
    /// Runs a relay worker alone: delivers the outbound queue of the mailbox service at
    /// --mailbox-url to other mail servers.
    Relay(ServeArgs),
    /// Manages domains, mailboxes and aliases of a running mailbox service.
    Admin(admin::AdminArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// A TOML config file; flags override it.
    #[arg(long, env = "TERN_CONFIG")]
    config: Option<PathBuf>,
    /// Where data is kept (default: ./tern-data).
    #[arg(long, env = "TERN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Where message bodies are kept: s3://bucket[/prefix], file:///path or a path
    /// (default: blobs/ in the data directory). S3 settings come from [blobs] and AWS_*.
    #[arg(long, env = "TERN_BLOBS", value_name = "URL")]
    blobs: Option<String>,
    /// Where metadata is kept: nats://host:port (NATS JetStream, shared by every mailbox
    /// replica) or "embedded" (default: the database in the data directory).
    #[arg(long, env = "TERN_STORE", value_name = "URL")]
    store: Option<String>,
    /// Listen address of the mailbox gRPC API (default 127.0.0.1:50051).
    #[arg(long)]
    grpc_listen: Option<SocketAddr>,
    /// Listen address of /metrics, /healthz, /readyz (default 127.0.0.1:9095).
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// OTLP/gRPC endpoint to export traces to.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// The mailbox service, for parts that run without it (default http://127.0.0.1:50051).
    #[arg(long, env = "TERN_MAILBOX_URL")]
    mailbox_url: Option<String>,
    /// This server's host name (SMTP greeting, Received: headers).
    #[arg(long)]
    hostname: Option<String>,
    /// SMTP listener with port 25 semantics (repeatable; default 127.0.0.1:2525).
    #[arg(long)]
    smtp_listen: Vec<SocketAddr>,
    /// Submission listener, STARTTLS then AUTH (repeatable; default 127.0.0.1:5587).
    #[arg(long)]
    submission_listen: Vec<SocketAddr>,
    /// Submission listener with implicit TLS (repeatable; default 127.0.0.1:5465).
    #[arg(long)]
    submissions_listen: Vec<SocketAddr>,
    /// POP3 listener, STLS available (repeatable; default 127.0.0.1:1110).
    #[arg(long)]
    pop3_listen: Vec<SocketAddr>,
    /// POP3 listener with implicit TLS (repeatable; default 127.0.0.1:1995).
    #[arg(long)]
    pop3s_listen: Vec<SocketAddr>,
    /// IMAP listener, STARTTLS available (repeatable; default 127.0.0.1:1143).
    #[arg(long)]
    imap_listen: Vec<SocketAddr>,
    /// IMAP listener with implicit TLS (repeatable; default 127.0.0.1:1993).
    #[arg(long)]
    imaps_listen: Vec<SocketAddr>,
}

impl ServeArgs {
    fn config(self) -> anyhow::Result<Config> {
        let mut c = Config::load(self.config.as_deref())?;
        if let Some(d) = self.data_dir {
            c.data_dir = d;
        }
        if self.blobs.is_some() {
            c.blobs.url = self.blobs;
        }
        if self.store.is_some() {
            c.store.url = self.store;
        }
        if let Some(a) = self.grpc_listen {
            c.listen.grpc = a;
        }
        if let Some(a) = self.http_listen {
            c.listen.http = a;
        }
        if self.otlp_endpoint.is_some() {
            c.telemetry.otlp_endpoint = self.otlp_endpoint;
        }
        if let Some(u) = self.mailbox_url {
            c.mailbox_url = u;
        }
        if let Some(h) = self.hostname {
            c.smtp.hostname = h;
        }
        if !self.smtp_listen.is_empty() {
            c.smtp.mx = self.smtp_listen;
        }
        if !self.submission_listen.is_empty() {
            c.smtp.submission = self.submission_listen;
        }
        if !self.submissions_listen.is_empty() {
            c.smtp.submissions = self.submissions_listen;
        }
        if !self.pop3_listen.is_empty() {
            c.pop3.pop3 = self.pop3_listen;
        }
        if !self.pop3s_listen.is_empty() {
            c.pop3.pop3s = self.pop3s_listen;
        }
        if !self.imap_listen.is_empty() {
            c.imap.imap = self.imap_listen;
        }
        if !self.imaps_listen.is_empty() {
            c.imap.imaps = self.imaps_listen;
        }
        Ok(c)
    }
}

async fn serve(args: ServeArgs, name: &str, roles: serve::Roles, dev: bool) -> anyhow::Result<()> {
    let config = args.config()?;
    let _telemetry = tern_runtime::telemetry::init(name, config.telemetry.otlp_endpoint.as_deref())?;
    serve::run(config, roles, dev).await
}

#[tokio::main]
async fn main() -> ExitCode {
    // Before anything can build a TLS client: the S3 client uses the process default.
    tern_runtime::tls::install_crypto_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dev(args) => {
            serve(
                args,
                "tern-dev",
                serve::Roles { mailbox: true, smtp: true, pop3: true, imap: true, relay: true },
                true,
            )
            .await
        }
        Command::Mailbox(args) => {
            serve(
                args,
                "tern-mailbox",
                serve::Roles { mailbox: true, smtp: false, pop3: false, imap: false, relay: false },
                false,
            )
            .await
        }
        Command::Smtp(args) => {
            serve(
                args,
                "tern-smtp",
                serve::Roles { mailbox: false, smtp: true, pop3: false, imap: false, relay: false },
                false,
            )
            .await
        }
        Command::Imap(args) => {
            serve(
                args,
                "tern-imap",
                serve::Roles { mailbox: false, smtp: false, pop3: false, imap: true, relay: false },
                false,
            )
            .await
        }
        Command::Pop3(args) => {
            serve(
                args,
                "tern-pop3",
                serve::Roles { mailbox: false, smtp: false, pop3: true, imap: false, relay: false },
                false,
            )
            .await
        }
        Command::Relay(args) => {
            let roles = serve::Roles { mailbox: false, smtp: false, pop3: false, imap: false, relay: true };
            serve(args, "tern-relay", roles, false).await
        }
        Command::Admin(args) => admin::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
