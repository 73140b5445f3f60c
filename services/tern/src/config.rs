//! Configuration: a TOML file (`--config`), overridden by command-line flags. Every listen
//! address and limit has a default that works on a laptop.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;
use tern_mailbox::{
    Limits,
    blobs::{BlobLocation, S3Config},
};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the embedded backend keeps its data (metadata.redb, blobs/, tls/).
    pub data_dir: PathBuf,
    pub listen: Listen,
    pub limits: LimitsConfig,
    pub telemetry: TelemetryConfig,
    pub tls: TlsConfig,
    pub smtp: SmtpSection,
    pub pop3: Pop3Section,
    pub imap: ImapSection,
    pub managesieve: ManageSieveSection,
    /// Spam filtering with rspamd: the SMTP front-end's scans, the relay's learning.
    pub spam: SpamSection,
    /// Sieve: the server's global scripts.
    pub sieve: SieveSection,
    /// The full-text index of IMAP SEARCH's text keys.
    pub search: SearchSection,
    /// The outbound relay (`tern relay`, and `tern dev`).
    pub relay: tern_relay::RelayConfig,
    /// Where the mailbox service keeps message bodies.
    pub blobs: BlobsConfig,
    /// Where the mailbox service keeps its metadata.
    pub store: StoreConfig,
    /// Where front-ends reach the mailbox service when it runs in another process. A name
    /// with several addresses (a headless Service) is balanced over every one of them.
    pub mailbox_url: String,
    /// How often `mailbox_url`'s name is resolved again, so replicas that come and go are
    /// added and dropped.
    pub mailbox_resolve_secs: u64,
    /// Mutual TLS between the parts (gRPC); plain HTTP/2 when absent.
    pub internal_tls: Option<InternalTlsConfig>,
    /// The Admin API's credential.
    pub admin: AdminSection,
    /// The HTTPS server mail clients configure themselves from.
    pub discovery: DiscoverySection,
}

/// The `[internal_tls]` section: the internal CA and this process's certificate, used both to
/// serve the mailbox gRPC API (client certificates required) and to call it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalTlsConfig {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The name the mailbox service's certificate carries, when it is not `mailbox_url`'s host.
    pub server_name: Option<String>,
}

impl InternalTlsConfig {
    pub fn to_runtime(&self) -> tern_runtime::rpc::InternalTls {
        tern_runtime::rpc::InternalTls {
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            server_name: self.server_name.clone(),
        }
    }
}

/// The `[admin]` section. On the mailbox service, a token makes the Admin API require it
/// (`authorization: Bearer <token>`); front-ends never need it. `TERN_ADMIN_TOKEN` overrides
/// the file.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSection {
    /// A file whose content (trimmed) is the token.
    pub token_file: Option<PathBuf>,
    #[serde(skip)]
    pub token_from_env: Option<String>,
}

impl std::fmt::Debug for AdminSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSection")
            .field("token_file", &self.token_file)
            .field("token_from_env", &self.token_from_env.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl AdminSection {
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) {
        self.token_from_env = env("TERN_ADMIN_TOKEN").filter(|t| !t.trim().is_empty());
    }

    /// The token, from the environment or the file; none when neither is set.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        if let Some(t) = &self.token_from_env {
            return Ok(Some(t.trim().to_string()));
        }
        let Some(path) = &self.token_file else { return Ok(None) };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the admin token file {}: {e}", path.display()))?;
        let token = text.trim();
        if token.is_empty() {
            anyhow::bail!("the admin token file {} is empty", path.display());
        }
        Ok(Some(token.to_string()))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpSection {
    /// The name in the greeting, EHLO reply and Received: headers.
    pub hostname: String,
    /// Port 25 semantics: mail from other servers, local recipients only.
    pub mx: Vec<SocketAddr>,
    /// Port 587 semantics: STARTTLS, then AUTH.
    pub submission: Vec<SocketAddr>,
    /// Port 465 semantics: implicit TLS, then AUTH.
    pub submissions: Vec<SocketAddr>,
    /// Expect a PROXY protocol v2 header on every connection (behind a load balancer).
    pub proxy_protocol: bool,
    /// Allow AUTH without TLS. Never in production.
    pub allow_plaintext_auth: bool,
    /// Verify SPF, DKIM and DMARC of mail arriving on MX listeners (Authentication-Results).
    /// Unset: on for `tern smtp`, off for `tern dev` (which gets no mail from the Internet).
    pub verify_inbound: Option<bool>,
    /// The DNS server for those checks and the DNS blocklists (`ip:port`); the system
    /// resolver when unset.
    pub dns_server: Option<SocketAddr>,
    /// How long MX clients are watched for talking before the greeting's last line (Postfix
    /// postscreen's pregreet test), in milliseconds; 0 turns it off. Unset: 1000 for
    /// `tern smtp`, off for `tern dev`.
    pub pregreet_ms: Option<u64>,
    /// DNS blocklists MX clients are checked against at connect (`[[smtp.dnsbl]]`).
    pub dnsbl: Vec<DnsblSection>,
    /// How long a "not listed" answer of the blocklists is kept, in seconds (a listing is
    /// kept for its DNS TTL).
    pub dnsbl_negative_cache_secs: u64,
    /// The window of the message rates below, in seconds (at most a day).
    pub rate_window_secs: u64,
    /// Most messages from one MX client address (an IPv6 /64) per window, across every
    /// front-end (counted by the mailbox service); 0 is no limit.
    pub max_messages_per_ip: u64,
    /// Most messages from one envelope sender (MX) or authenticated account (submission) per
    /// window, across every front-end; 0 is no limit.
    pub max_messages_per_sender: u64,
    pub max_line: usize,
    pub max_message_bytes: u64,
    pub max_recipients: usize,
    pub max_errors: u32,
    pub max_commands_before_auth: u32,
    pub max_auth_failures: u32,
    pub idle_timeout_secs: u64,
    pub data_timeout_secs: u64,
    pub max_connections_per_ip: usize,
    /// How long shutdown waits for transactions in progress.
    pub shutdown_grace_secs: u64,
}

impl Default for SmtpSection {
    fn default() -> Self {
        let l = tern_smtp::config::Limits::default();
        Self {
            hostname: "localhost".into(),
            mx: vec![SocketAddr::from(([127, 0, 0, 1], 2525))],
            submission: vec![SocketAddr::from(([127, 0, 0, 1], 5587))],
            submissions: vec![SocketAddr::from(([127, 0, 0, 1], 5465))],
            proxy_protocol: false,
            allow_plaintext_auth: false,
            verify_inbound: None,
            dns_server: None,
            pregreet_ms: None,
            dnsbl: vec![],
            dnsbl_negative_cache_secs: 300,
            rate_window_secs: l.rate_window.as_secs(),
            max_messages_per_ip: l.max_messages_per_ip,
            max_messages_per_sender: l.max_messages_per_sender,
            max_line: l.max_line,
            max_message_bytes: l.max_message_bytes,
            max_recipients: l.max_recipients,
            max_errors: l.max_errors,
            max_commands_before_auth: l.max_commands_before_auth,
            max_auth_failures: l.max_auth_failures,
            idle_timeout_secs: l.idle_timeout.as_secs(),
            data_timeout_secs: l.data_timeout.as_secs(),
            max_connections_per_ip: l.max_connections_per_ip,
            shutdown_grace_secs: 25,
        }
    }
}

/// The `[sieve]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SieveSection {
    /// A directory of global scripts, `<name>.sieve`, which users' scripts may `include
    /// :global "<name>"` (RFC 6609); read by the mailbox service at delivery. In Kubernetes, a
    /// ConfigMap mounted there. Unset: no global scripts.
    pub global_dir: Option<PathBuf>,
}

/// The `[search]` section: the mailbox service's full-text index (one per account; on the
/// embedded backend in `<data_dir>/index`, on NATS in the object store with a local copy).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchSection {
    /// Index at all. Off, every SEARCH BODY/TEXT/HEADER reads the messages.
    pub enabled: bool,
    /// Where the indexes (embedded) or the local copies (NATS) are kept, instead of the
    /// default.
    pub dir: Option<PathBuf>,
    /// Messages larger than this are not indexed; searches read them.
    pub max_message_bytes: u64,
    /// Nor those whose decoded text is larger than this.
    pub max_text_bytes: usize,
    /// Memory of one account's index writer (at least 15 MB).
    pub writer_memory_bytes: usize,
    /// Writers kept open at once.
    pub max_open_writers: usize,
    /// How long the indexer gathers changes before indexing them, in milliseconds.
    pub commit_delay_ms: u64,
    /// Most messages indexed in one commit.
    pub batch: usize,
    /// On NATS: how long an account's index writer holds its lease without renewing it, so
    /// how soon another replica takes over from one that died, in seconds.
    pub writer_lease_secs: u64,
}

impl Default for SearchSection {
    fn default() -> Self {
        let s = tern_mailbox::fts::Settings::default();
        Self {
            enabled: s.enabled,
            dir: s.dir,
            max_message_bytes: s.max_message_bytes,
            max_text_bytes: s.max_text_bytes,
            writer_memory_bytes: s.writer_memory,
            max_open_writers: s.max_open_writers,
            commit_delay_ms: s.commit_delay.as_millis() as u64,
            batch: s.batch,
            writer_lease_secs: s.lease.as_secs(),
        }
    }
}

impl SearchSection {
    pub fn settings(&self) -> tern_mailbox::fts::Settings {
        tern_mailbox::fts::Settings {
            enabled: self.enabled,
            dir: self.dir.clone(),
            max_message_bytes: self.max_message_bytes,
            max_text_bytes: self.max_text_bytes,
            writer_memory: self.writer_memory_bytes.max(tern_mailbox::fts::MIN_WRITER_MEMORY),
            max_open_writers: self.max_open_writers.max(1),
            commit_delay: std::time::Duration::from_millis(self.commit_delay_ms),
            batch: self.batch.max(1),
            lease: std::time::Duration::from_secs(self.writer_lease_secs.max(1)),
        }
    }
}

/// The `[spam]` section. Without `rspamd_url` nothing is scanned.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpamSection {
    /// An rspamd normal worker, e.g. `http://rspamd:11333`; empty turns spam filtering off.
    pub rspamd_url: String,
    /// rspamd's controller, where messages moved into or out of Junk are learned, e.g.
    /// `http://rspamd:11334`; empty: nothing is learned.
    pub controller_url: String,
    /// A file holding the controller's password, when it requires one to learn.
    pub password_file: Option<PathBuf>,
    /// The longest a scan may take before the failure policy applies.
    pub timeout_ms: u64,
    /// When rspamd cannot be asked: `tempfail` (451, the sender retries) or `accept` (deliver
    /// unscanned, counted in `tern_spam_unscanned_deliveries_total`).
    pub on_failure: String,
    /// Larger messages are delivered unscanned.
    pub max_scan_bytes: u64,
}

impl Default for SpamSection {
    fn default() -> Self {
        Self {
            rspamd_url: String::new(),
            controller_url: String::new(),
            password_file: None,
            timeout_ms: 10_000,
            on_failure: "tempfail".into(),
            max_scan_bytes: 20 * 1024 * 1024,
        }
    }
}

impl SpamSection {
    fn password(&self) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.password_file else { return Ok(None) };
        let p = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the rspamd password file {}: {e}", path.display()))?;
        Ok(Some(p.trim().to_string()))
    }

    /// The rspamd client, when one is configured. Only the learner (`learner`) reads the
    /// controller's password: it lets its holder write statistics, so a front-end that only
    /// scans never needs the file.
    pub fn client(&self, learner: bool) -> anyhow::Result<Option<tern_rspamd::Client>> {
        if self.rspamd_url.is_empty() && self.controller_url.is_empty() {
            return Ok(None);
        }
        let options = tern_rspamd::Options {
            url: self.rspamd_url.clone(),
            controller_url: self.controller_url.clone(),
            password: if learner { self.password()? } else { None },
            timeout: Duration::from_millis(self.timeout_ms.max(1)),
        };
        Ok(Some(tern_rspamd::Client::new(options)?))
    }

    /// The SMTP front-end's filter, when `rspamd_url` is set.
    pub fn filter(&self) -> anyhow::Result<Option<tern_smtp::spam::SpamFilter>> {
        if self.rspamd_url.is_empty() {
            return Ok(None);
        }
        let on_failure = match self.on_failure.as_str() {
            "tempfail" => tern_smtp::spam::FailurePolicy::Tempfail,
            "accept" => tern_smtp::spam::FailurePolicy::Accept,
            other => anyhow::bail!("[spam] on_failure must be \"tempfail\" or \"accept\", not {other:?}"),
        };
        let client = self.client(false)?.expect("rspamd_url is set");
        Ok(Some(tern_smtp::spam::SpamFilter { client, on_failure, max_scan_bytes: self.max_scan_bytes }))
    }
}

/// One `[[smtp.dnsbl]]` entry: a zone, and what its answers mean.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsblSection {
    /// e.g. `zen.spamhaus.org`.
    pub zone: String,
    /// Answer → meaning, e.g. `"127.0.0.2" = "SBL"`. Only the answers named list a client;
    /// without any, every 127.0.0.0/8 answer does (but 127.255.255.x, a list's error codes).
    #[serde(default)]
    pub codes: std::collections::BTreeMap<String, String>,
}

impl SmtpSection {
    /// The DNS blocklist checker, when zones are configured.
    pub fn dnsbl(&self) -> anyhow::Result<Option<tern_smtp::screen::Dnsbl>> {
        if self.dnsbl.is_empty() {
            return Ok(None);
        }
        let mut zones = Vec::new();
        for z in &self.dnsbl {
            let zone = z.zone.trim().trim_end_matches('.').to_ascii_lowercase();
            if zone.is_empty() || !zone.contains('.') {
                anyhow::bail!("[[smtp.dnsbl]] zone {:?} is not a DNS zone", z.zone);
            }
            let mut codes = std::collections::BTreeMap::new();
            for (answer, meaning) in &z.codes {
                let ip: std::net::Ipv4Addr = answer
                    .parse()
                    .map_err(|_| anyhow::anyhow!("[[smtp.dnsbl]] {zone}: {answer:?} is not an IPv4 answer"))?;
                codes.insert(ip, meaning.clone());
            }
            zones.push(tern_smtp::screen::DnsblZone { zone, codes });
        }
        let resolver = tern_mail::dns::resolver(self.dns_server)?;
        let ttl = Duration::from_secs(self.dnsbl_negative_cache_secs);
        Ok(Some(tern_smtp::screen::Dnsbl::new(resolver, zones, ttl)))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Pop3Section {
    /// Port 110 semantics: plain text with STLS.
    pub pop3: Vec<SocketAddr>,
    /// Port 995 semantics: implicit TLS.
    pub pop3s: Vec<SocketAddr>,
    pub proxy_protocol: bool,
    /// Allow USER/PASS and AUTH without TLS. Never in production.
    pub allow_plaintext_auth: bool,
    pub max_line: usize,
    pub idle_timeout_secs: u64,
    pub max_errors: u32,
    pub max_auth_failures: u32,
    pub max_connections_per_ip: usize,
    /// How long a maildrop lease lasts without renewal.
    pub lease_ttl_secs: u64,
    /// Advertised in CAPA as LOGIN-DELAY (seconds), when set.
    pub login_delay_secs: Option<u32>,
    /// Advertised in CAPA as EXPIRE (days; 0 is NEVER), when set.
    pub expire_days: Option<u32>,
    pub shutdown_grace_secs: u64,
}

impl Default for Pop3Section {
    fn default() -> Self {
        let l = tern_pop3::config::Limits::default();
        Self {
            pop3: vec![SocketAddr::from(([127, 0, 0, 1], 1110))],
            pop3s: vec![SocketAddr::from(([127, 0, 0, 1], 1995))],
            proxy_protocol: false,
            allow_plaintext_auth: false,
            max_line: l.max_line,
            idle_timeout_secs: l.idle_timeout.as_secs(),
            max_errors: l.max_errors,
            max_auth_failures: l.max_auth_failures,
            max_connections_per_ip: l.max_connections_per_ip,
            lease_ttl_secs: l.lease_ttl.as_secs(),
            login_delay_secs: None,
            expire_days: None,
            shutdown_grace_secs: 25,
        }
    }
}

impl Pop3Section {
    pub fn limits(&self) -> tern_pop3::config::Limits {
        tern_pop3::config::Limits {
            max_line: self.max_line,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            max_errors: self.max_errors,
            max_auth_failures: self.max_auth_failures,
            max_connections_per_ip: self.max_connections_per_ip,
            lease_ttl: Duration::from_secs(self.lease_ttl_secs),
        }
    }
}

/// The `[managesieve]` section: the ManageSieve front-end (RFC 5804), which manages the
/// accounts' Sieve scripts.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManageSieveSection {
    /// Port 4190: plain text with STARTTLS (RFC 5804 defines no implicit-TLS port).
    pub managesieve: Vec<SocketAddr>,
    pub proxy_protocol: bool,
    /// Allow AUTHENTICATE without TLS. Never in production.
    pub allow_plaintext_auth: bool,
    /// The longest command without its literals, in octets. The largest script a command may
    /// carry is `[limits] sieve_max_script_bytes`, the mailbox service's own limit.
    pub max_line: usize,
    /// The most literal data a command may carry before login.
    pub max_unauthenticated_literal: u64,
    /// A script too large is read and dropped, so that the client hears why, up to this many
    /// octets; a larger one ends the session.
    pub max_discard: u64,
    pub idle_timeout_secs: u64,
    pub max_errors: u32,
    pub max_auth_failures: u32,
    pub max_connections_per_ip: usize,
    pub shutdown_grace_secs: u64,
}

impl Default for ManageSieveSection {
    fn default() -> Self {
        let l = tern_managesieve::config::Limits::default();
        Self {
            managesieve: vec![SocketAddr::from(([127, 0, 0, 1], 4190))],
            proxy_protocol: false,
            allow_plaintext_auth: false,
            max_line: l.max_line,
            max_unauthenticated_literal: l.max_unauthenticated_literal,
            max_discard: l.max_discard,
            idle_timeout_secs: l.idle_timeout.as_secs(),
            max_errors: l.max_errors,
            max_auth_failures: l.max_auth_failures,
            max_connections_per_ip: l.max_connections_per_ip,
            shutdown_grace_secs: 25,
        }
    }
}

impl ManageSieveSection {
    /// The front-end's limits, with what the mailbox service enforces taken from `[limits]`:
    /// the largest script, so that one it would refuse is refused before its bytes are read,
    /// and the redirects a run may make, which MAXREDIRECTS announces.
    pub fn limits(&self, mailbox: &LimitsConfig) -> tern_managesieve::config::Limits {
        tern_managesieve::config::Limits {
            max_line: self.max_line,
            max_script_bytes: mailbox.sieve_max_script_bytes,
            max_unauthenticated_literal: self.max_unauthenticated_literal,
            max_discard: self.max_discard,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            max_errors: self.max_errors,
            max_auth_failures: self.max_auth_failures,
            max_connections_per_ip: self.max_connections_per_ip,
            max_redirects: u32::try_from(mailbox.sieve_max_redirects).unwrap_or(u32::MAX),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImapSection {
    /// Port 143 semantics: plain text with STARTTLS.
    pub imap: Vec<SocketAddr>,
    /// Port 993 semantics: implicit TLS.
    pub imaps: Vec<SocketAddr>,
    pub proxy_protocol: bool,
    /// Allow LOGIN and AUTHENTICATE without TLS. Never in production.
    pub allow_plaintext_auth: bool,
    /// Largest literal, and so largest APPEND (advertised as APPENDLIMIT).
    pub max_literal: u32,
    /// Most bytes of literals in one command (a MULTIAPPEND of several messages).
    pub max_command_literals: u64,
    pub max_line: usize,
    /// Autologout (at least 30 minutes by RFC 9051).
    pub idle_timeout_secs: u64,
    /// How often IDLE clients get a keepalive.
    pub idle_keepalive_secs: u64,
    pub max_errors: u32,
    pub max_auth_failures: u32,
    pub max_connections_per_ip: usize,
    pub shutdown_grace_secs: u64,
}

impl Default for ImapSection {
    fn default() -> Self {
        let l = tern_imap::config::Limits::default();
        Self {
            imap: vec![SocketAddr::from(([127, 0, 0, 1], 1143))],
            imaps: vec![SocketAddr::from(([127, 0, 0, 1], 1993))],
            proxy_protocol: false,
            allow_plaintext_auth: false,
            max_literal: l.max_literal,
            max_command_literals: l.max_command_literals,
            max_line: l.max_line,
            idle_timeout_secs: l.idle_timeout.as_secs(),
            idle_keepalive_secs: l.idle_keepalive.as_secs(),
            max_errors: l.max_errors,
            max_auth_failures: l.max_auth_failures,
            max_connections_per_ip: l.max_connections_per_ip,
            shutdown_grace_secs: 25,
        }
    }
}

impl ImapSection {
    pub fn limits(&self) -> tern_imap::config::Limits {
        tern_imap::config::Limits {
            max_literal: self.max_literal,
            max_command_literals: self.max_command_literals,
            max_line: self.max_line,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            idle_keepalive: Duration::from_secs(self.idle_keepalive_secs.max(1)),
            max_errors: self.max_errors,
            max_auth_failures: self.max_auth_failures,
            max_connections_per_ip: self.max_connections_per_ip,
        }
    }
}

impl SmtpSection {
    /// The SMTP limits; pregreet detection, unless set, is on for `tern smtp` and off for
    /// `tern dev` (whose clients are local programs, not the Internet's bots).
    pub fn limits(&self, dev: bool) -> tern_smtp::config::Limits {
        let pregreet_ms = self.pregreet_ms.unwrap_or(if dev { 0 } else { 1000 });
        tern_smtp::config::Limits {
            pregreet_wait: Duration::from_millis(pregreet_ms),
            rate_window: Duration::from_secs(self.rate_window_secs),
            max_messages_per_ip: self.max_messages_per_ip,
            max_messages_per_sender: self.max_messages_per_sender,
            max_line: self.max_line,
            max_message_bytes: self.max_message_bytes,
            max_recipients: self.max_recipients,
            max_errors: self.max_errors,
            max_commands_before_auth: self.max_commands_before_auth,
            max_auth_failures: self.max_auth_failures,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            data_timeout: Duration::from_secs(self.data_timeout_secs),
            max_connections_per_ip: self.max_connections_per_ip,
        }
    }
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
    /// Memory for recently read small message bodies.
    pub blob_cache_bytes: usize,
    /// Longest IMAP METADATA value, and most entries on one mailbox (or the server).
    pub max_metadata_value: u64,
    pub max_metadata_entries: usize,
    /// Sieve scripts per account: how many (QUOTA/MAXSCRIPTS), the largest one in bytes
    /// (QUOTA/MAXSIZE), and all of one account's together in bytes (QUOTA). They live in the
    /// account's record, read at every delivery and one NATS KV value, hence the total.
    pub sieve_max_scripts: usize,
    pub sieve_max_script_bytes: u64,
    pub sieve_max_total_bytes: u64,
    /// What one run of a script at delivery may take (steps, actions, redirects); a script
    /// over them fails and the message is kept.
    pub sieve_max_steps: u64,
    pub sieve_max_actions: usize,
    pub sieve_max_redirects: usize,
    /// The bounds of a vacation period, in seconds.
    pub sieve_vacation_min_period_secs: u64,
    pub sieve_vacation_max_period_secs: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/gRPC endpoint for traces, e.g. `http://otel-collector:4317`.
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain and key; a development certificate is generated when unset.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// How often the front-ends read the certificate and key again, to serve a renewed pair
    /// from the next connection on without a restart; 0 turns the reading off.
    pub reload_interval_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self { cert: None, key: None, reload_interval_secs: 10 }
    }
}

impl Config {
    /// The mailbox service's limits, learning for the spam filter on when there is a learner
    /// (rspamd's controller is configured).
    pub fn mailbox_limits(&self) -> Limits {
        Limits {
            learn_spam: !self.spam.controller_url.is_empty(),
            sieve_global_dir: self.sieve.global_dir.clone(),
            search: self.search.settings(),
            ..self.limits.to_limits()
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("tern-data"),
            listen: Listen::default(),
            limits: LimitsConfig::default(),
            telemetry: TelemetryConfig::default(),
            tls: TlsConfig::default(),
            smtp: SmtpSection::default(),
            spam: SpamSection::default(),
            sieve: SieveSection::default(),
            search: SearchSection::default(),
            relay: tern_relay::RelayConfig::default(),
            pop3: Pop3Section::default(),
            imap: ImapSection::default(),
            managesieve: ManageSieveSection::default(),
            blobs: BlobsConfig::default(),
            store: StoreConfig::default(),
            mailbox_url: "http://127.0.0.1:50051".into(),
            mailbox_resolve_secs: 10,
            internal_tls: None,
            admin: AdminSection::default(),
            discovery: DiscoverySection::default(),
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
            blob_cache_bytes: l.blob_cache_bytes,
            max_metadata_value: l.max_metadata_value,
            max_metadata_entries: l.max_metadata_entries,
            sieve_max_scripts: l.sieve_max_scripts,
            sieve_max_script_bytes: l.sieve_max_script_bytes,
            sieve_max_total_bytes: l.sieve_max_total_bytes,
            sieve_max_steps: l.sieve_max_steps,
            sieve_max_actions: l.sieve_max_actions,
            sieve_max_redirects: l.sieve_max_redirects,
            sieve_vacation_min_period_secs: l.sieve_vacation_min_period.as_secs(),
            sieve_vacation_max_period_secs: l.sieve_vacation_max_period.as_secs(),
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
            blob_cache_bytes: self.blob_cache_bytes,
            max_metadata_value: self.max_metadata_value,
            max_metadata_entries: self.max_metadata_entries,
            sieve_max_scripts: self.sieve_max_scripts,
            sieve_max_script_bytes: self.sieve_max_script_bytes,
            sieve_max_total_bytes: self.sieve_max_total_bytes,
            sieve_max_steps: self.sieve_max_steps,
            sieve_max_actions: self.sieve_max_actions,
            sieve_max_redirects: self.sieve_max_redirects,
            sieve_vacation_min_period: Duration::from_secs(self.sieve_vacation_min_period_secs),
            sieve_vacation_max_period: Duration::from_secs(self.sieve_vacation_max_period_secs),
            ..Limits::default()
        }
    }
}

/// The `[store]` section: where the mailbox service keeps its metadata. Without a URL it is
/// the embedded database in the data directory; `nats://host:port` puts it in NATS JetStream,
/// shared by every mailbox replica pointed at the same servers and prefix. A NATS cluster is
/// named by several URLs: a TOML list, or one comma-separated string.
///
/// Credentials: at most one of `user` with `password`, `token`, `nkey_seed_file` and
/// `credentials_file`. The variables `TERN_NATS_USER`, `TERN_NATS_PASSWORD` and
/// `TERN_NATS_TOKEN` override the file, so a Kubernetes Secret can supply them.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub url: Option<Urls>,
    /// Names the JetStream stream and KV buckets, so several installations can share a server.
    pub prefix: String,
    /// JetStream servers that keep a copy of every entry when the stream and buckets are
    /// created: 1 for a single server, 3 (or 5) for a cluster.
    pub replicas: usize,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// A file holding an NKey seed.
    pub nkey_seed_file: Option<PathBuf>,
    /// A `.creds` file (user JWT and NKey seed).
    pub credentials_file: Option<PathBuf>,
    /// The CA of the NATS servers' certificates, when not a public one.
    pub tls_ca_file: Option<PathBuf>,
    /// A client certificate and key, for servers that verify clients.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Refuse to connect without TLS (implied by `tls://` URLs, a CA or a client certificate).
    pub tls_required: bool,
}

/// One URL, a comma-separated list of them, or a TOML list.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Urls {
    One(String),
    Many(Vec<String>),
}

impl Urls {
    /// Every URL, trimmed, without empty items.
    pub fn list(&self) -> Vec<String> {
        let items: Vec<&str> = match self {
            Urls::One(s) => s.split(',').collect(),
            Urls::Many(v) => v.iter().flat_map(|s| s.split(',')).collect(),
        };
        items.into_iter().map(str::trim).filter(|u| !u.is_empty()).map(String::from).collect()
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: None,
            prefix: "tern".into(),
            replicas: 1,
            user: None,
            password: None,
            token: None,
            nkey_seed_file: None,
            credentials_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_required: false,
        }
    }
}

// By hand, so that the password and token never reach a log line that prints the configuration.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "[redacted]");
        f.debug_struct("StoreConfig")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("replicas", &self.replicas)
            .field("user", &self.user)
            .field("password", &redacted(&self.password))
            .field("token", &redacted(&self.token))
            .field("nkey_seed_file", &self.nkey_seed_file)
            .field("credentials_file", &self.credentials_file)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("tls_required", &self.tls_required)
            .finish()
    }
}

impl StoreConfig {
    /// Takes `TERN_NATS_USER`, `TERN_NATS_PASSWORD` and `TERN_NATS_TOKEN` from `env` where set.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) {
        let set = |name: &str| env(name).filter(|v| !v.is_empty());
        if let Some(v) = set("TERN_NATS_USER") {
            self.user = Some(v);
        }
        if let Some(v) = set("TERN_NATS_PASSWORD") {
            self.password = Some(v);
        }
        if let Some(v) = set("TERN_NATS_TOKEN") {
            self.token = Some(v);
        }
    }

    /// How to reach NATS, when the metadata is in NATS; an error for a URL of another kind
    /// or settings that do not fit together.
    pub fn nats(&self) -> anyhow::Result<Option<tern_mailbox::store::nats::NatsConnection>> {
        let urls = self.url.as_ref().map(Urls::list).unwrap_or_default();
        match urls.as_slice() {
            [] => return Ok(None),
            [only] if only == "embedded" => return Ok(None),
            _ => {}
        }
        if let Some(other) = urls.iter().find(|u| !(u.starts_with("nats://") || u.starts_with("tls://"))) {
            anyhow::bail!("[store] url must be nats://host:port (or a list of them) or \"embedded\", not {other:?}");
        }
        if !(1..=5).contains(&self.replicas) {
            anyhow::bail!("[store] replicas must be 1 to 5, not {}", self.replicas);
        }
        if self.prefix.is_empty() || !self.prefix.bytes().all(|b| b.is_ascii_alphanumeric()) {
            anyhow::bail!("[store] prefix must be letters and digits, not {:?}", self.prefix);
        }
        let connection = tern_mailbox::store::nats::NatsConnection {
            servers: urls,
            user: self.user.clone(),
            password: self.password.clone().map(Into::into),
            token: self.token.clone().map(Into::into),
            nkey_seed_file: self.nkey_seed_file.clone(),
            credentials_file: self.credentials_file.clone(),
            tls_ca_file: self.tls_ca_file.clone(),
            tls_cert_file: self.tls_cert_file.clone(),
            tls_key_file: self.tls_key_file.clone(),
            tls_required: self.tls_required,
        };
        connection.check().map_err(|e| anyhow::anyhow!("[store]: {e}"))?;
        Ok(Some(connection))
    }
}

/// The `[blobs]` section: where message bodies are kept. Without a URL they go to `blobs/`
/// in the data directory. The S3 settings apply to `s3://` URLs only; each one left unset
/// comes from the standard AWS environment variable (`AWS_ENDPOINT`, `AWS_REGION`,
/// `AWS_ACCESS_KEY_ID`, ...), so a deployment can keep its keys out of the file.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlobsConfig {
    /// `s3://bucket[/prefix]`, `file:///path` or a path.
    pub url: Option<String>,
    /// The S3 endpoint of a store other than AWS, e.g. `http://seaweedfs:8333`.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Unset: allowed exactly when `endpoint` is an `http://` URL.
    pub allow_http: Option<bool>,
    /// `https://bucket.host/key` rather than `https://host/bucket/key` (unset: path-style).
    pub virtual_hosted_style_request: Option<bool>,
    /// The longest one S3 request may take.
    pub timeout_secs: u64,
    pub connect_timeout_secs: u64,
    /// Retries of a failed S3 request, all started within `retry_timeout_secs`.
    pub max_retries: usize,
    pub retry_timeout_secs: u64,
}

impl Default for BlobsConfig {
    fn default() -> Self {
        let s3 = S3Config::default();
        Self {
            url: None,
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            allow_http: None,
            virtual_hosted_style_request: None,
            timeout_secs: s3.request_timeout.as_secs(),
            connect_timeout_secs: s3.connect_timeout.as_secs(),
            max_retries: s3.max_retries,
            retry_timeout_secs: s3.retry_timeout.as_secs(),
        }
    }
}

// By hand, so that the secret key never reaches a log line that prints the configuration.
impl std::fmt::Debug for BlobsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobsConfig")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "[redacted]"))
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style_request", &self.virtual_hosted_style_request)
            .field("timeout_secs", &self.timeout_secs)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("max_retries", &self.max_retries)
            .field("retry_timeout_secs", &self.retry_timeout_secs)
            .finish()
    }
}

impl BlobsConfig {
    /// Where bodies go: the URL with these settings, or `blobs/` in `data_dir`.
    pub fn location(&self, data_dir: &std::path::Path) -> Result<BlobLocation, tern_mailbox::MailboxError> {
        let location = match &self.url {
            Some(url) => BlobLocation::parse(url)?,
            None => BlobLocation::Local(data_dir.join("blobs")),
        };
        let BlobLocation::S3(mut s3) = location else {
            // S3 settings next to a local directory are a mistake (a forgotten url), and
            // ignoring them would put bodies somewhere the operator did not mean.
            let s3_settings = self.endpoint.is_some()
                || self.region.is_some()
                || self.access_key_id.is_some()
                || self.secret_access_key.is_some()
                || self.allow_http.is_some()
                || self.virtual_hosted_style_request.is_some();
            if s3_settings {
                return Err(tern_mailbox::MailboxError::invalid(
                    "[blobs] section",
                    format!("S3 settings are given but bodies go to the directory {location}; set url = \"s3://...\""),
                ));
            }
            return Ok(location);
        };
        s3.endpoint = self.endpoint.clone();
        s3.region = self.region.clone();
        s3.access_key_id = self.access_key_id.clone();
        s3.secret_access_key = self.secret_access_key.clone().map(Into::into);
        s3.allow_http = self.allow_http;
        s3.virtual_hosted_style_request = self.virtual_hosted_style_request;
        s3.request_timeout = Duration::from_secs(self.timeout_secs.max(1));
        s3.connect_timeout = Duration::from_secs(self.connect_timeout_secs.max(1));
        s3.max_retries = self.max_retries;
        s3.retry_timeout = Duration::from_secs(self.retry_timeout_secs);
        Ok(BlobLocation::S3(s3))
    }
}

/// Where `tern dev` serves the discovery documents unless told otherwise.
pub const DEV_DISCOVERY_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8443);

/// The `[discovery]` section: the HTTPS server of the documents mail clients configure
/// themselves from (Thunderbird's autoconfig, Outlook's Autodiscover, Apple's profile) and of
/// the MTA-STS policy, run by a front-end role. The documents name the servers as clients
/// reach them: host names and ports default to this process's own settings, and a deployment
/// behind a load balancer or a Service that maps ports sets them here.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoverySection {
    /// HTTPS listeners. Unset: 127.0.0.1:8443 in `tern dev` (left off, with a warning, when
    /// that port is taken), none in the other roles; empty: off.
    pub listen: Option<Vec<SocketAddr>>,
    /// Expect a PROXY protocol v2 header on every connection (behind a load balancer).
    pub proxy_protocol: bool,
    pub max_connections_per_ip: usize,
    /// The host names clients connect to; unset: `[smtp] hostname`.
    pub imap_host: Option<String>,
    pub pop3_host: Option<String>,
    pub smtp_host: Option<String>,
    /// The ports clients connect to; unset: the port of the first listener of the matching
    /// setting (`[imap] imaps`, `[smtp] submission`, ...), or not offered when it has none;
    /// 0: not offered.
    pub imap_port: Option<u16>,
    pub imaps_port: Option<u16>,
    pub pop3_port: Option<u16>,
    pub pop3s_port: Option<u16>,
    pub submission_port: Option<u16>,
    pub submissions_port: Option<u16>,
    /// The provider's name in clients; unset: the mail domain.
    pub display_name: Option<String>,
    /// The MTA-STS policy at /.well-known/mta-sts.txt: `enforce`, `testing` or `none`.
    pub mta_sts_mode: String,
    /// How long senders keep the policy, in seconds (at most 31557600).
    pub mta_sts_max_age: u64,
    /// The MX host names (or `*.` patterns) the policy allows; empty: `[smtp] hostname`.
    pub mta_sts_mx: Vec<String>,
}

impl Default for DiscoverySection {
    fn default() -> Self {
        Self {
            listen: None,
            proxy_protocol: false,
            max_connections_per_ip: 20,
            imap_host: None,
            pop3_host: None,
            smtp_host: None,
            imap_port: None,
            imaps_port: None,
            pop3_port: None,
            pop3s_port: None,
            submission_port: None,
            submissions_port: None,
            display_name: None,
            mta_sts_mode: "testing".into(),
            mta_sts_max_age: 604_800,
            mta_sts_mx: vec![],
        }
    }
}

impl DiscoverySection {
    /// The HTTPS listeners, and whether they are `tern dev`'s default rather than configured.
    pub fn listeners(&self, dev: bool) -> (Vec<SocketAddr>, bool) {
        match &self.listen {
            Some(addrs) => (addrs.clone(), false),
            None if dev => (vec![DEV_DISCOVERY_LISTEN], true),
            None => (vec![], false),
        }
    }
}

impl Config {
    /// The endpoints the discovery documents describe: the implicit-TLS port of each protocol
    /// first (RFC 8314), then its STARTTLS port.
    pub fn discovery_endpoints(&self) -> anyhow::Result<tern_discovery::Endpoints> {
        use tern_discovery::{Security, Server};
        let d = &self.discovery;
        let host = |h: &Option<String>| h.clone().unwrap_or_else(|| self.smtp.hostname.clone());
        let port = |set: Option<u16>, listeners: &[SocketAddr]| match set {
            Some(0) => None,
            Some(p) => Some(p),
            None => listeners.first().map(SocketAddr::port),
        };
        let servers = |host: String, tls: Option<u16>, starttls: Option<u16>| {
            let tls = tls.map(|port| Server { host: host.clone(), port, security: Security::Tls });
            let starttls = starttls.map(|port| Server { host: host.clone(), port, security: Security::StartTls });
            tls.into_iter().chain(starttls).collect::<Vec<_>>()
        };
        let mode: tern_discovery::mta_sts::Mode =
            d.mta_sts_mode.parse().map_err(|e| anyhow::anyhow!("[discovery] mta_sts_mode: {e}"))?;
        let mx = if d.mta_sts_mx.is_empty() { vec![self.smtp.hostname.clone()] } else { d.mta_sts_mx.clone() };
        let endpoints = tern_discovery::Endpoints {
            imap: servers(host(&d.imap_host), port(d.imaps_port, &self.imap.imaps), port(d.imap_port, &self.imap.imap)),
            pop3: servers(host(&d.pop3_host), port(d.pop3s_port, &self.pop3.pop3s), port(d.pop3_port, &self.pop3.pop3)),
            smtp: servers(
                host(&d.smtp_host),
                port(d.submissions_port, &self.smtp.submissions),
                port(d.submission_port, &self.smtp.submission),
            ),
            display_name: d.display_name.clone(),
            mta_sts: Some(tern_discovery::MtaSts { mode, mx, max_age: d.mta_sts_max_age }),
        };
        endpoints.check().map_err(|e| anyhow::anyhow!("[discovery]: {e}"))?;
        Ok(endpoints)
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

impl Config {
    /// How front-ends, the relay and `tern dev` reach the mailbox service at `url`.
    pub fn client_options(&self, url: &str) -> tern_runtime::rpc::ClientOptions {
        let mut options = tern_runtime::rpc::ClientOptions::new(url);
        options.tls = self.internal_tls.as_ref().map(InternalTlsConfig::to_runtime);
        options.resolve_every = Duration::from_secs(self.mailbox_resolve_secs.max(1));
        options.read_only = tern_proto::read_only;
        options
    }

    /// How long a stopping relay lets its attempts in flight finish: as long as the SMTP
    /// front-end's drain, so one `terminationGracePeriodSeconds` fits every part.
    pub fn relay_shutdown_grace_secs(&self) -> u64 {
        self.smtp.shutdown_grace_secs
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

    #[test]
    fn discovery_describes_the_listeners_unless_told_otherwise() {
        use tern_discovery::Security;
        let c = Config::default();
        assert_eq!(c.discovery.listeners(true), (vec![DEV_DISCOVERY_LISTEN], true));
        assert_eq!(c.discovery.listeners(false), (vec![], false));
        let e = c.discovery_endpoints().unwrap();
        fn ports(servers: &[tern_discovery::Server]) -> Vec<(&str, u16, Security)> {
            servers.iter().map(|s| (s.host.as_str(), s.port, s.security)).collect()
        }
        assert_eq!(ports(&e.imap), [("localhost", 1993, Security::Tls), ("localhost", 1143, Security::StartTls)]);
        assert_eq!(ports(&e.pop3), [("localhost", 1995, Security::Tls), ("localhost", 1110, Security::StartTls)]);
        assert_eq!(ports(&e.smtp), [("localhost", 5465, Security::Tls), ("localhost", 5587, Security::StartTls)]);
        let policy = e.mta_sts.unwrap();
        assert_eq!(
            (policy.mode, policy.mx, policy.max_age),
            (tern_discovery::mta_sts::Mode::Testing, vec!["localhost".to_string()], 604_800)
        );

        let c: Config = toml::from_str(
            "[smtp]\nhostname = \"mx.example.com\"\n[pop3]\npop3 = []\n\
             [discovery]\nlisten = []\nimap_host = \"imap.example.com\"\nimaps_port = 993\nimap_port = 0\n\
             pop3s_port = 995\nsubmission_port = 587\nmta_sts_mode = \"enforce\"\nmta_sts_mx = [\"*.example.com\"]\n",
        )
        .unwrap();
        assert_eq!(c.discovery.listeners(true), (vec![], false));
        let e = c.discovery_endpoints().unwrap();
        assert_eq!(ports(&e.imap), [("imap.example.com", 993, Security::Tls)]);
        assert_eq!(ports(&e.pop3), [("mx.example.com", 995, Security::Tls)]);
        assert_eq!(
            ports(&e.smtp),
            [("mx.example.com", 5465, Security::Tls), ("mx.example.com", 587, Security::StartTls)]
        );
        assert_eq!(e.mta_sts.unwrap().mx, ["*.example.com"]);

        let bad: Config = toml::from_str("[discovery]\nmta_sts_mode = \"strict\"\n").unwrap();
        assert!(format!("{:#}", bad.discovery_endpoints().unwrap_err()).contains("mta_sts_mode"));
        let bad: Config = toml::from_str("[discovery]\nsmtp_host = \"smtp example\"\n").unwrap();
        assert!(format!("{:#}", bad.discovery_endpoints().unwrap_err()).contains("not a DNS name"));
        assert!(toml::from_str::<Config>("[discovery]\nimap_hostname = \"x\"\n").is_err());
    }

    #[test]
    fn blobs_default_to_the_data_dir_and_take_s3_settings() {
        let c = Config::default();
        let location = c.blobs.location(&c.data_dir).unwrap();
        assert!(matches!(&location, BlobLocation::Local(p) if p == &c.data_dir.join("blobs")));

        let c: Config = toml::from_str(
            "[blobs]\nurl = \"s3://bodies/tern\"\nendpoint = \"http://127.0.0.1:8333\"\nregion = \"eu-west-1\"\n\
             access_key_id = \"k\"\nsecret_access_key = \"s\"\ntimeout_secs = 7\nmax_retries = 1\n",
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("\"s\""), "the secret key is printed: {c:?}");
        let BlobLocation::S3(s3) = c.blobs.location(&c.data_dir).unwrap() else { panic!("not S3") };
        assert_eq!((s3.bucket.as_str(), s3.prefix.as_str()), ("bodies", "tern"));
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        assert_eq!(s3.region.as_deref(), Some("eu-west-1"));
        assert_eq!((s3.request_timeout, s3.max_retries), (Duration::from_secs(7), 1));

        let c: Config = toml::from_str("[blobs]\nendpoint = \"http://127.0.0.1:8333\"\n").unwrap();
        assert!(c.blobs.location(&c.data_dir).is_err(), "S3 settings without an s3:// URL");
        assert!(toml::from_str::<Config>("[blobs]\nbucket = \"b\"\n").is_err());
    }
}
