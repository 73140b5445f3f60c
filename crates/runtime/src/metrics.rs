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

/// A front-end's protocol: `smtp` (MX), `submission`, `imap` or `pop3`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    pub protocol: &'static str,
}

/// A command a front-end received: the protocol and the upper-case verb from the protocol's
/// fixed list, or `OTHER`, so that clients cannot make up label values.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub protocol: &'static str,
    pub command: &'static str,
}

/// An SMTP reply code (`250`, `451`, ...), or `other` outside 200 to 599.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

/// A backend of the mailbox service: `nats`, `s3` or `local`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: &'static str,
}

/// The PEM file a certificate was loaded from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    pub certificate: String,
}

/// How a certificate reload ended: `ok` or `error`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
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
    /// Open client connections of the protocol front-ends, by protocol.
    pub connections: Family<ProtocolLabels, Gauge>,
    /// Commands the front-ends received, by protocol and verb.
    pub commands: Family<CommandLabels, Counter>,
    /// Replies the SMTP server sent, by code.
    pub smtp_replies: Family<CodeLabels, Counter>,
    /// Messages SMTP accepted: one per transaction, however many recipients it has.
    pub messages_received: Counter,
    /// Failed calls of the mailbox service to its backends, by backend.
    pub storage_errors: Family<BackendLabels, Counter>,
    /// The notAfter of each loaded certificate, in Unix seconds.
    pub tls_certificate_expiry: Family<CertificateLabels, Gauge>,
    /// Certificate reloads, by result.
    pub tls_certificate_reloads: Family<ResultLabels, Counter>,
    /// 1 while a dependency of readiness answers, 0 while it does not, by dependency.
    pub dependencies: Family<DependencyLabels, Gauge>,
}

/// A dependency of a process's readiness (`rspamd`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DependencyLabels {
    pub dependency: &'static str,
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
        let connections = Family::<ProtocolLabels, Gauge>::default();
        let commands = Family::<CommandLabels, Counter>::default();
        let smtp_replies = Family::<CodeLabels, Counter>::default();
        let messages_received = Counter::default();
        let storage_errors = Family::<BackendLabels, Counter>::default();
        let tls_certificate_expiry = Family::<CertificateLabels, Gauge>::default();
        let tls_certificate_reloads = Family::<ResultLabels, Counter>::default();
        let dependencies = Family::<DependencyLabels, Gauge>::default();
        // Every family is registered here, at the first use of the registry. A family shows on
        // a scrape only once it has a sample, so families whose label values are known ahead
        // get their zeros here or where their part starts (the front-ends' protocols and
        // verbs, a certificate's reloads), and a freshly started process lists every name the
        // dashboards and alerts use.
        for backend in ["nats", "s3", "local"] {
            let _ = storage_errors.get_or_create(&BackendLabels { backend });
        }
        registry.register("grpc_requests", "gRPC requests served", grpc_requests.clone());
        registry.register("grpc_request_seconds", "gRPC request latency", grpc_latency.clone());
        registry.register("messages_stored", "Messages stored, one per recipient", messages_stored.clone());
        registry.register("connections", "Open client connections, by protocol", connections.clone());
        registry.register("commands", "Commands received by the front-ends, by protocol and verb", commands.clone());
        registry.register("smtp_replies", "Replies sent by the SMTP server, by code", smtp_replies.clone());
        registry.register(
            "messages_received",
            "Messages accepted by SMTP, one per transaction",
            messages_received.clone(),
        );
        registry.register(
            "storage_errors",
            "Failed calls of the mailbox service to its backends (nats, s3, local)",
            storage_errors.clone(),
        );
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When each loaded certificate expires (its notAfter), in Unix seconds",
            tls_certificate_expiry.clone(),
        );
        registry.register(
            "tls_certificate_reloads",
            "Reloads of changed certificate files, by result (ok, error)",
            tls_certificate_reloads.clone(),
        );
        registry.register(
            "readiness_dependency_up",
            "Whether each dependency of the process's readiness answers (1) or not (0)",
            dependencies.clone(),
        );
        Self {
            registry: Arc::new(Mutex::new(registry)),
            grpc_requests,
            grpc_latency,
            messages_stored,
            connections,
            commands,
            smtp_replies,
            messages_received,
            storage_errors,
            tls_certificate_expiry,
            tls_certificate_reloads,
            dependencies,
        }
    }

    /// The process-wide metrics.
    pub fn global() -> &'static Metrics {
        static METRICS: OnceLock<Metrics> = OnceLock::new();
        METRICS.get_or_init(Metrics::new)
    }

    /// Counts a command a front-end received. `command` comes from the protocol's fixed list
    /// of verbs (see [`verb`]).
    pub fn command(&self, protocol: &'static str, command: &'static str) {
        self.commands.get_or_create(&CommandLabels { protocol, command }).inc();
    }

    /// Creates the zero samples of `protocol`'s commands: each of `verbs`, and `OTHER`.
    pub fn declare_commands(&self, protocol: &'static str, verbs: &[&'static str]) {
        for command in verbs.iter().copied().chain(["OTHER"]) {
            let _ = self.commands.get_or_create(&CommandLabels { protocol, command });
        }
    }

    /// Creates the zero samples of SMTP reply codes (those the dashboards look for before any
    /// reply is sent).
    pub fn declare_smtp_replies(&self, codes: &[u16]) {
        for code in codes {
            let _ = self.smtp_replies.get_or_create(&CodeLabels { code: code.to_string() });
        }
    }

    /// Counts a reply the SMTP server sent. Codes outside 200 to 599 cannot be sent, but are
    /// folded into `other` rather than trusted to stay few.
    pub fn smtp_reply(&self, code: u16) {
        let code = if (200..=599).contains(&code) { code.to_string() } else { "other".to_string() };
        self.smtp_replies.get_or_create(&CodeLabels { code }).inc();
    }

    /// Records whether a dependency of readiness is up.
    pub fn dependency_up(&self, dependency: &'static str, up: bool) {
        self.dependencies.get_or_create(&DependencyLabels { dependency }).set(i64::from(up));
    }

    /// Counts a failed call of the mailbox service to `backend` (`nats`, `s3`, `local`).
    pub fn storage_error(&self, backend: &'static str) {
        self.storage_errors.get_or_create(&BackendLabels { backend }).inc();
    }

    /// Registers a family of a part that has metrics of its own (the operator's reconciles),
    /// under the `tern_` prefix.
    pub fn register(&self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
        self.registry.lock().unwrap_or_else(|e| e.into_inner()).register(name, help, metric);
    }

    /// The OpenMetrics text exposition.
    ///
    /// Families without samples still appear, with their `# HELP` and `# TYPE` lines.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = encode(&mut out, &registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// The verb of a text protocol's command line (SMTP, POP3): its first word, upper-cased, when
/// it is one of `known`, and `OTHER` otherwise. Returning only `known`'s strings keeps the
/// `command` label of [`Metrics::commands`] bounded whatever clients send.
pub fn verb(line: &[u8], known: &[&'static str]) -> &'static str {
    let word = line.split(|b| *b == b' ').next().unwrap_or_default();
    known.iter().find(|k| k.as_bytes().eq_ignore_ascii_case(word)).copied().unwrap_or("OTHER")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_are_bounded() {
        let known = ["MAIL", "RCPT", "STARTTLS"];
        assert_eq!(verb(b"mail FROM:<a@b>", &known), "MAIL");
        assert_eq!(verb(b"StartTLS", &known), "STARTTLS");
        assert_eq!(verb(b"XYZZY 1 2", &known), "OTHER");
        assert_eq!(verb(b"", &known), "OTHER");
        assert_eq!(verb(b"MAILX", &known), "OTHER");
    }

    /// The families whose samples exist from the start; the others get theirs when the part
    /// that exports them starts (checked end to end by the metrics tests of `tern-tests`).
    #[test]
    fn families_with_known_labels_are_listed_before_any_event() {
        let text = Metrics::global().encode();
        for name in ["tern_messages_stored", "tern_messages_received", "tern_storage_errors"] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing from\n{text}");
        }
        assert!(text.contains("tern_storage_errors_total{backend=\"nats\"} 0"), "{text}");
    }
}
