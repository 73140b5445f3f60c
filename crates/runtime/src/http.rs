//! The operations endpoint every process serves: `/metrics` (Prometheus), `/healthz`
//! (liveness: the process runs) and `/readyz` (readiness: its dependencies answer).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Whether the process is ready for traffic. Starts not ready; the role sets it once its
/// listeners are up and its backends answer, and clears it when shutdown begins so that the
/// load balancer stops sending new connections.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

async fn metrics() -> impl IntoResponse {
    ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], Metrics::global().encode())
}

async fn ready(State(r): State<Readiness>) -> impl IntoResponse {
    if r.get() { (StatusCode::OK, "ready\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready\n") }
}

/// Serves the endpoint until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    readiness: Readiness,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(readiness);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
