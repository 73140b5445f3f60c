//! Logging and tracing: structured logs on stderr (filtered by `RUST_LOG`, default `info`),
//! and, when an OTLP endpoint is configured, spans exported over OTLP/gRPC in batches (every
//! five seconds, or `OTEL_BSP_SCHEDULE_DELAY` milliseconds). Spans of one request join the
//! caller's trace across processes: see [`crate::propagation`].

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

/// Keeps the trace exporter alive; dropping it flushes spans that are still buffered.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("flushing traces failed: {e}");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP exporter for {endpoint}: {source}")]
    Exporter {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// Installs the global subscriber. `otlp_endpoint` (e.g. `http://collector:4317`) turns on
/// trace export; `service` names this process in traces (`tern-mailbox`, `tern-dev`, ...).
pub fn init(service: &str, otlp_endpoint: Option<&str>) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false);
    let registry = tracing_subscriber::registry().with(filter).with(fmt);
    crate::propagation::install();
    let Some(endpoint) = otlp_endpoint else {
        // A second init (tests start several servers in one process) is not an error.
        let _ = registry.try_init();
        return Ok(Telemetry { provider: None });
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|source| TelemetryError::Exporter { endpoint: endpoint.to_string(), source })?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service.to_string()).build())
        .build();
    let tracer = provider.tracer("tern");
    let _ = registry.with(tracing_opentelemetry::layer().with_tracer(tracer)).try_init();
    Ok(Telemetry { provider: Some(provider) })
}
