//! Running roles: `tern mailbox` alone, or `tern dev` with every part in one process.

use std::net::SocketAddr;

use anyhow::Context;
use tern_runtime::{http::Readiness, shutdown::Shutdown};
use tokio::net::TcpListener;

use crate::config::Config;

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} for {what}"))
}

/// Runs the mailbox service on the embedded backend until SIGTERM or Ctrl-C. `dev` adds the
/// development conveniences: a TLS certificate for the front-ends, and a summary of what
/// listens where.
pub async fn run(config: Config, dev: bool) -> anyhow::Result<()> {
    let service = tern_mailbox::server::open_embedded(&config.data_dir, config.limits.to_limits())
        .with_context(|| format!("cannot open the data directory {}", config.data_dir.display()))?;
    let grpc = bind(config.listen.grpc, "gRPC").await?;
    let http = bind(config.listen.http, "metrics and health").await?;
    let shutdown = Shutdown::default();
    let readiness = Readiness::default();

    let tls = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => tern_runtime::tls::CertPaths { cert: cert.clone(), key: key.clone() },
        _ => {
            tern_runtime::tls::dev_certificate(&config.data_dir.join("tls"), &["localhost".into(), "127.0.0.1".into()])?
        }
    };
    // Loading it now reports a bad certificate at start-up rather than at the first STARTTLS.
    tern_runtime::tls::server_config(&tls)?;

    let grpc_addr = grpc.local_addr()?;
    let http_addr = http.local_addr()?;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn({
        let stop = shutdown.wait();
        async move { tern_mailbox::server::serve(service, grpc, stop).await.context("gRPC server failed") }
    });
    tasks.spawn({
        let (stop, readiness) = (shutdown.wait(), readiness.clone());
        async move { tern_runtime::http::serve(http, readiness, stop).await.context("HTTP server failed") }
    });
    readiness.set(true);

    if dev {
        println!("tern dev is running (data in {})", config.data_dir.display());
        println!("  mailbox gRPC API   {grpc_addr}   (tern admin --server http://{grpc_addr})");
        println!("  metrics, health    http://{http_addr}/metrics  /healthz  /readyz");
        println!("  TLS certificate    {}", tls.cert.display());
        println!("Press Ctrl-C to stop.");
    }
    tracing::info!(grpc = %grpc_addr, http = %http_addr, "listening");

    tokio::select! {
        () = tern_runtime::shutdown::signal() => {}
        Some(res) = tasks.join_next() => {
            // A server ending on its own is a failure: report it and stop the rest.
            res.context("server task panicked")??;
        }
    }
    readiness.set(false);
    shutdown.trigger();
    while let Some(res) = tasks.join_next().await {
        res.context("server task panicked")??;
    }
    tracing::info!("stopped");
    Ok(())
}
