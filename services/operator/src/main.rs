//! `tern-operator`: the Kubernetes operator of Tern, a binary of its own so that kube is not
//! in every build of `tern`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tern_operator::admin::GrpcAdmin;
use tern_operator::controller::{self, Context};

#[derive(Debug, Parser)]
#[command(name = "tern-operator", about = "Converges Tern's mailbox service to Domain and Mailbox resources")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the controllers, with the in-cluster or kubeconfig credentials.
    Run {
        /// The mailbox service's gRPC endpoint.
        #[arg(long, env = "TERN_MAILBOX_ENDPOINT", default_value = "http://tern-mailbox:7000")]
        mailbox: String,
        /// This replica's name in Events (the pod name).
        #[arg(long, env = "POD_NAME")]
        instance: Option<String>,
        /// Where `/metrics`, `/healthz` and `/readyz` are served.
        #[arg(long, env = "TERN_OPERATOR_HTTP", default_value = "0.0.0.0:9090")]
        http: std::net::SocketAddr,
        /// OTLP endpoint to export traces to.
        #[arg(long, env = "TERN_OTLP_ENDPOINT")]
        otlp: Option<String>,
    },
    /// Writes the CustomResourceDefinitions into a directory (`cargo xtask codegen` does this
    /// for `crds/`).
    Crds { dir: PathBuf },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crds { dir } => tern_operator::crd::write_crds(&dir)?,
        Command::Run { mailbox, instance, http, otlp } => {
            tern_runtime::tls::install_crypto_provider();
            let _telemetry = tern_runtime::telemetry::init("tern-operator", otlp.as_deref())?;
            controller::reconciles();
            let readiness = tern_runtime::http::Readiness::default();
            let listener = tokio::net::TcpListener::bind(http).await?;
            let endpoint =
                tokio::spawn(tern_runtime::http::serve(listener, readiness.clone(), tern_runtime::shutdown::signal()));
            let client = kube::Client::try_default().await?;
            let admin = Arc::new(GrpcAdmin::connect_lazy(&mailbox)?);
            readiness.set(true);
            tracing::info!(%mailbox, %http, "tern-operator started");
            // TODO(issue 7): leader election (a coordination.k8s.io Lease) before running, so that
            // two replicas are safe; until then the chart runs one replica.
            controller::run(Arc::new(Context::new(client, admin, instance))).await;
            endpoint.abort();
        }
    }
    Ok(())
}
