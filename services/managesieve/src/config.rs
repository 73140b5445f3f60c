//! Settings of the ManageSieve front-end. Every limit is explicit and configurable.

use std::{sync::Arc, time::Duration};

/// What a listener is for. ManageSieve has one kind: port 4190, plain text with STARTTLS (RFC
/// 5804 defines no implicit-TLS port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    ManageSieve,
}

/// The SIEVE capability (RFC 5804 section 1.7): the extensions the interpreter implements, from
/// its own list so that the two never disagree, without the comparators every implementation
/// has (RFC 5228 section 2.7.3 makes `i;octet` and `i;ascii-casemap` implicit).
pub fn sieve_extensions() -> String {
    tern_sieve::EXTENSIONS
        .iter()
        .filter(|e| !matches!(**e, "comparator-i;octet" | "comparator-i;ascii-casemap"))
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// The longest command without its literals, in octets including the line end.
    pub max_line: usize,
    /// The largest script, in octets: the most literal data one command may carry once logged
    /// in. Larger scripts are refused with QUOTA/MAXSIZE before their data is read.
    pub max_script_bytes: u64,
    /// The most literal data one command may carry before login (an AUTHENTICATE answer).
    pub max_unauthenticated_literal: u64,
    /// A literal too large for the limits is read and thrown away, to answer NO and go on,
    /// up to this many octets; one announcing more ends the session with BYE at once.
    pub max_discard: u64,
    pub idle_timeout: Duration,
    pub max_errors: u32,
    pub max_auth_failures: u32,
    pub max_connections_per_ip: usize,
    /// Announced as MAXREDIRECTS: the redirects one run of a script may make, which the
    /// mailbox service enforces at delivery (`[limits] sieve_max_redirects` in `tern`).
    pub max_redirects: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_line: 8 * 1024,
            // The mailbox service's default limit on one script, which it enforces itself.
            max_script_bytes: 64 * 1024,
            max_unauthenticated_literal: 8 * 1024,
            max_discard: 16 * 1024 * 1024,
            // RFC 5804 sets none; editing clients keep connections open between saves.
            idle_timeout: Duration::from_secs(1800),
            max_errors: 10,
            max_auth_failures: 3,
            max_connections_per_ip: 20,
            max_redirects: 4,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ManageSieveConfig {
    pub limits: Limits,
    /// The certificate for STARTTLS; without one STARTTLS is not offered.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Allow AUTHENTICATE before TLS (never in production; local tests only).
    pub allow_plaintext_auth: bool,
}
