//! Prometheus metrics shared by every part of a process. One registry per process; each part
//! registers its families once, at start-up, through [`Metrics::global`].

use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodOnly {
    pub method: String,
}

/// Every metric family Tern exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    /// gRPC requests served, by method and status code.
    pub grpc_requests: Family<MethodLabels, Counter>,
    /// gRPC request latency in seconds, by method.
    pub grpc_latency: Family<MethodOnly, Histogram>,
    /// Messages stored by Deliver (one per recipient) and by Append.
    pub messages_stored: Counter,
    /// Open client connections of the protocol front-ends.
    pub connections: Gauge,
}

fn latency_histogram() -> Histogram {
    Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("tern");
        let grpc_requests = Family::<MethodLabels, Counter>::default();
        let grpc_latency = Family::<MethodOnly, Histogram>::new_with_constructor(latency_histogram);
        let messages_stored = Counter::default();
        let connections = Gauge::default();
        registry.register("grpc_requests", "gRPC requests served", grpc_requests.clone());
        registry.register("grpc_request_seconds", "gRPC request latency", grpc_latency.clone());
        registry.register("messages_stored", "Messages stored, one per recipient", messages_stored.clone());
        registry.register("connections", "Open client connections", connections.clone());
        Self { registry: Arc::new(Mutex::new(registry)), grpc_requests, grpc_latency, messages_stored, connections }
    }

    /// The process-wide metrics.
    pub fn global() -> &'static Metrics {
        static METRICS: OnceLock<Metrics> = OnceLock::new();
        METRICS.get_or_init(Metrics::new)
    }

    /// Registers a family of a part that has metrics of its own (the operator's reconciles),
    /// under the `tern_` prefix.
    pub fn register(&self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
        self.registry.lock().unwrap_or_else(|e| e.into_inner()).register(name, help, metric);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = encode(&mut out, &registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}
