//! Configuration: a TOML file (`--config`), overridden by command-line flags. Every listen
//! address and limit has a default that works on a laptop.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;
use tern_mailbox::Limits;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the embedded backend keeps its data (metadata.redb, blobs/, tls/).
    pub data_dir: PathBuf,
    pub listen: Listen,
    pub limits: LimitsConfig,
    pub telemetry: TelemetryConfig,
    pub tls: TlsConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    /// The mailbox gRPC API.
    pub grpc: SocketAddr,
    /// Metrics, /healthz and /readyz.
    pub http: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_message_bytes: u64,
    pub max_recipients: usize,
    pub max_auth_failures: u32,
    pub auth_window_secs: u64,
    pub blob_grace_secs: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/gRPC endpoint for traces, e.g. `http://otel-collector:4317`.
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain and key; a development certificate is generated when unset.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("tern-data"),
            listen: Listen::default(),
            limits: LimitsConfig::default(),
            telemetry: TelemetryConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

impl Default for Listen {
    fn default() -> Self {
        Self { grpc: SocketAddr::from(([127, 0, 0, 1], 50051)), http: SocketAddr::from(([127, 0, 0, 1], 9095)) }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = Limits::default();
        Self {
            max_message_bytes: l.max_message_bytes,
            max_recipients: l.max_recipients,
            max_auth_failures: l.max_auth_failures,
            auth_window_secs: l.auth_window.as_secs(),
            blob_grace_secs: l.blob_grace.as_secs(),
        }
    }
}

impl LimitsConfig {
    pub fn to_limits(&self) -> Limits {
        Limits {
            max_message_bytes: self.max_message_bytes,
            max_recipients: self.max_recipients,
            max_auth_failures: self.max_auth_failures,
            auth_window: Duration::from_secs(self.auth_window_secs),
            blob_grace: Duration::from_secs(self.blob_grace_secs),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
}

impl Config {
    pub fn load(path: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else { return Ok(Self::default()) };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_defaults_and_rejects_typos() {
        let c: Config = toml::from_str(
            "data_dir = \"/var/lib/tern\"\n[listen]\ngrpc = \"0.0.0.0:7000\"\n[limits]\nmax_message_bytes = 1000\n",
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/tern"));
        assert_eq!(c.listen.grpc.port(), 7000);
        assert_eq!(c.listen.http, Listen::default().http);
        assert_eq!(c.limits.to_limits().max_message_bytes, 1000);
        assert!(toml::from_str::<Config>("[listen]\ngrpcc = \"0.0.0.0:1\"\n").is_err());
    }
}
