//! Settings of the IMAP front-end. Every limit is explicit and configurable.

use std::{sync::Arc, time::Duration};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Port 143: plain text, STARTTLS available.
    Imap,
    /// Port 993: implicit TLS.
    Imaps,
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest literal (and so APPEND) accepted; advertised as APPENDLIMIT.
    pub max_literal: u32,
    /// Most bytes of literals in one command: a MULTIAPPEND (RFC 3502) or CATENATE (RFC 4469)
    /// holds every message's data in memory until the command is complete.
    pub max_command_literals: u64,
    /// Longest command line outside literals.
    pub max_line: usize,
    /// Autologout timer (RFC 9051 asks for at least 30 minutes).
    pub idle_timeout: Duration,
    /// How often an IDLE client gets an untagged OK, so that NAT boxes keep the connection.
    pub idle_keepalive: Duration,
    pub max_errors: u32,
    pub max_auth_failures: u32,
    pub max_connections_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_literal: 50 * 1024 * 1024,
            max_command_literals: 100 * 1024 * 1024,
            max_line: 64 * 1024,
            idle_timeout: Duration::from_secs(30 * 60),
            idle_keepalive: Duration::from_secs(120),
            max_errors: 20,
            max_auth_failures: 3,
            max_connections_per_ip: 50,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ImapConfig {
    pub hostname: String,
    pub limits: Limits,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Allow LOGIN and AUTHENTICATE before TLS (never in production; local tests only).
    pub allow_plaintext_auth: bool,
}
