//! Settings of the SMTP front-end. Every limit is explicit and configurable.

use std::{sync::Arc, time::Duration};

/// What a listener is for, which decides the rules of its sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Port 25 (and 2525): mail from other servers; no AUTH, local recipients only.
    Mx,
    /// Port 587: STARTTLS, then AUTH before MAIL.
    Submission,
    /// Port 465: implicit TLS, then AUTH before MAIL.
    Submissions,
}

impl ListenerKind {
    pub fn is_submission(self) -> bool {
        !matches!(self, ListenerKind::Mx)
    }

    /// The `protocol` label of the metrics: `smtp` for MX, `submission` for both submission
    /// ports (STARTTLS and implicit TLS).
    pub fn protocol(self) -> &'static str {
        if self.is_submission() { "submission" } else { "smtp" }
    }
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest command line, without CRLF (RFC 5321 requires at least 512).
    pub max_line: usize,
    pub max_message_bytes: u64,
    pub max_recipients: usize,
    /// Protocol errors before the session is closed with 421.
    pub max_errors: u32,
    /// Commands accepted on a submission listener before AUTH succeeds.
    pub max_commands_before_auth: u32,
    /// Failed AUTH attempts in one session before it is closed.
    pub max_auth_failures: u32,
    pub idle_timeout: Duration,
    /// How long a whole DATA or BDAT transfer may take.
    pub data_timeout: Duration,
    pub max_connections_per_ip: usize,
    /// How long an MX client is watched for talking before the greeting is complete (the
    /// greeting's first line goes out at once, its last after this wait); zero turns the check
    /// off.
    pub pregreet_wait: Duration,
    /// The window the message rates below are counted in.
    pub rate_window: Duration,
    /// Most messages (MAIL commands accepted) from one MX client address (an IPv6 client's
    /// /64) per window, counted across every front-end; 0 is no limit.
    pub max_messages_per_ip: u64,
    /// Most messages from one envelope sender (MX) or one authenticated account (submission)
    /// per window, counted across every front-end; 0 is no limit.
    pub max_messages_per_sender: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_line: 4096,
            max_message_bytes: 25 * 1024 * 1024,
            max_recipients: 100,
            max_errors: 10,
            max_commands_before_auth: 20,
            max_auth_failures: 3,
            idle_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            max_connections_per_ip: 20,
            pregreet_wait: Duration::ZERO,
            rate_window: Duration::from_secs(3600),
            max_messages_per_ip: 0,
            max_messages_per_sender: 0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// The name this server gives in its greeting, EHLO reply and Received: headers.
    pub hostname: String,
    pub limits: Limits,
    /// TLS for STARTTLS and implicit TLS; without it STARTTLS is not offered.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Allow AUTH over plain text connections (never in production; for local tests only).
    pub allow_plaintext_auth: bool,
    /// SPF, DKIM and DMARC verification of mail arriving on MX listeners; None turns it off.
    pub verifier: Option<Arc<crate::verify::Verifier>>,
    /// Spam filtering with rspamd at the end of DATA; None turns it off.
    pub spam: Option<Arc<crate::spam::SpamFilter>>,
    /// DNS blocklists MX clients are checked against at connect; None checks none.
    pub dnsbl: Option<Arc<crate::screen::Dnsbl>>,
}
