//! What every Tern process shares, whatever its role: logging and trace export
//! ([`telemetry`]) with the trace context carried across gRPC ([`propagation`]), the HTTP
//! endpoint with Prometheus metrics and health probes ([`http`], [`metrics`]), TLS material
//! including a development certificate ([`tls`]), the shutdown signal ([`shutdown`]), and the
//! SASL PLAIN decoding the front-ends share ([`sasl`]).
//!
//! This crate knows nothing of mail, storage or protocols.

pub mod conn;
pub mod generated;
pub mod grpc_metrics;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod propagation;
pub mod proxy;
pub mod rpc;
pub mod sasl;
pub mod shutdown;
pub mod stream;
pub mod telemetry;
pub mod tls;
