//! The operations endpoint every process serves: `/metrics` (Prometheus), `/healthz`
//! (liveness: the process runs) and `/readyz` (readiness: its dependencies answer).

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Whether the process is ready for traffic. Starts not ready; the role sets it once its
/// listeners are up and its backends answer, and clears it when shutdown begins so that the
/// load balancer stops sending new connections. A role may also name dependencies without
/// which it should get no traffic (the spam filter, when mail would only be deferred without
/// it): the process is ready only while every one of them is up.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
    dependencies: Arc<Mutex<Vec<Dependency>>>,
}

/// One dependency of readiness, set up or down by whoever watches it; starts down.
#[derive(Debug, Clone)]
pub struct Dependency {
    name: &'static str,
    up: Arc<AtomicBool>,
}

impl Dependency {
    /// Also sets `tern_readiness_dependency_up{dependency}`, which a monitoring system reads
    /// from a process that is not ready as well (it is still scraped).
    pub fn set(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        Metrics::global().dependency_up(self.name, up);
    }
}

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn get(&self) -> bool {
        self.down().is_none()
    }

    /// Adds a dependency named `name` (said in `/readyz`'s answer while it is down).
    pub fn dependency(&self, name: &'static str) -> Dependency {
        let d = Dependency { name, up: Arc::new(AtomicBool::new(false)) };
        Metrics::global().dependency_up(name, false);
        self.dependencies.lock().unwrap_or_else(|e| e.into_inner()).push(d.clone());
        d
    }

    /// Why the process is not ready: `Some("")` when it is not (yet, or any more), the name of
    /// a dependency that is down, or `None` when it is ready.
    fn down(&self) -> Option<&'static str> {
        if !self.ready.load(Ordering::SeqCst) {
            return Some("");
        }
        let deps = self.dependencies.lock().unwrap_or_else(|e| e.into_inner());
        deps.iter().find(|d| !d.up.load(Ordering::SeqCst)).map(|d| d.name)
    }
}

async fn metrics() -> impl IntoResponse {
    ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], Metrics::global().encode())
}

async fn ready(State(r): State<Readiness>) -> impl IntoResponse {
    match r.down() {
        None => (StatusCode::OK, "ready\n".to_string()),
        Some("") => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_string()),
        Some(dependency) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {dependency} is unavailable\n")),
    }
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
