//! Settings of the POP3 front-end. Every limit is explicit and configurable.

use std::{sync::Arc, time::Duration};

/// What a listener is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Port 110: plain text, STLS available.
    Pop3,
    /// Port 995: implicit TLS.
    Pop3s,
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest command line including CRLF (RFC 2449: 255 octets).
    pub max_line: usize,
    /// RFC 1939 asks for at least ten minutes.
    pub idle_timeout: Duration,
    pub max_errors: u32,
    pub max_auth_failures: u32,
    pub max_connections_per_ip: usize,
    /// How long the maildrop lease lasts without renewal (a crashed front-end's lease expires).
    pub lease_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_line: crate::codec::MAX_COMMAND_LINE,
            idle_timeout: Duration::from_secs(600),
            max_errors: 10,
            max_auth_failures: 3,
            max_connections_per_ip: 20,
            lease_ttl: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Pop3Config {
    pub hostname: String,
    pub limits: Limits,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Allow USER/PASS and AUTH before TLS (never in production; local tests only).
    pub allow_plaintext_auth: bool,
    /// Advertised as LOGIN-DELAY in CAPA, when set (seconds between logins).
    pub login_delay: Option<u32>,
    /// Advertised as EXPIRE in CAPA, when set (days a message is kept; "NEVER" when zero).
    pub expire_days: Option<u32>,
    /// Who this front-end is, for lease holders ("pod name"); unique per process.
    pub instance: String,
}
