//! What the controllers do, without Kubernetes: given a Domain or a Mailbox (and the password
//! read from its Secret), converge the mailbox service to it through [`AdminApi`] and compute
//! the resource's status. Every step reads first and writes only what differs, so reconciling
//! an object that has not changed writes nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tern_proto::v1::{
    CreateAccountRequest, CreateDomainRequest, Password, PutSieveScriptRequest, SetDkimKeyRequest, SpamSettings,
    UpdateAccountRequest, UpdateDomainRequest, password,
};

use crate::admin::{AdminApi, ApiError};
use crate::crd::{
    Condition, DnsRecord, Domain, DomainStatus, Mailbox, MailboxStatus, Pop3DeletePolicy, ReclaimPolicy, SieveSpec,
    SpamScan, SpamSpec,
};
use crate::quantity::{format_bytes, parse_bytes};

/// How soon a resource that could not be converged for a reason outside the operator's hands
/// (its domain missing, its Secret missing) is looked at again, besides the watches.
pub const RETRY_SOON: Duration = Duration::from_secs(30);

/// How often a converged resource is looked at again, which refreshes the Mailbox usage and
/// repairs drift (a change made with `tern admin`, say).
pub const RESYNC: Duration = Duration::from_secs(300);

/// The type of the condition that tells whether a Mailbox's Sieve script (`spec.sieve`) is
/// stored and active; a Mailbox without `spec.sieve` has none. It is apart from `Ready`: a
/// script that cannot be installed leaves the account served (Ready) and says why here.
pub const SIEVE_READY: &str = "SieveReady";

/// Reasons of the conditions (`Ready`, and [`SIEVE_READY`] for the last five).
pub mod reason {
    /// The mailbox service has the resource as specified.
    pub const RECONCILED: &str = "Reconciled";
    /// A Mailbox whose domain does not exist in the mailbox service.
    pub const DOMAIN_MISSING: &str = "DomainMissing";
    /// The Secret (or its key) holding a Mailbox's password does not exist.
    pub const PASSWORD_SECRET_MISSING: &str = "PasswordSecretMissing";
    /// The spec cannot be applied as it is (a quota that is not a quantity, say).
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The mailbox service refused a request (an alias taken by another account, a password
    /// hash it cannot read).
    pub const REFUSED: &str = "Refused";
    /// The mailbox service could not be reached; the operator retries with backoff.
    pub const API_UNAVAILABLE: &str = "ApiUnavailable";
    /// The DKIM key of a Domain cannot be read: its Secret or key is missing, or it holds no
    /// RSA private key.
    pub const DKIM_KEY_INVALID: &str = "DkimKeyInvalid";
    /// Another Domain resource (in another namespace, say) names the same domain and was
    /// there first; this one changes nothing until that one is gone.
    pub const DOMAIN_CONFLICT: &str = "DomainConflict";
    /// The resource is in a namespace whose Secrets the operator may not read (it was started
    /// with `--secret-namespace`, and this is not one of them): it is not reconciled.
    pub const SECRET_NAMESPACE_NOT_WATCHED: &str = "SecretNamespaceNotWatched";
    /// The Mailbox's Sieve script is stored and is the active one.
    pub const SCRIPT_ACTIVE: &str = "ScriptActive";
    /// The Mailbox's Sieve script does not pass the mailbox service's check (the message has
    /// the line and column); nothing was stored, and the script stored before stays active.
    pub const SCRIPT_INVALID: &str = "ScriptInvalid";
    /// The ConfigMap `spec.sieve.configMapKeyRef` names does not exist.
    pub const CONFIG_MAP_NOT_FOUND: &str = "ConfigMapNotFound";
    /// The ConfigMap exists but has no such key (or its value is not UTF-8).
    pub const KEY_NOT_FOUND: &str = "KeyNotFound";
}

/// The message of [`reason::SECRET_NAMESPACE_NOT_WATCHED`].
fn not_watched_message(kind: &str, namespace: &str, watched: &str) -> String {
    format!(
        "tern-operator reads Secrets only in namespaces {watched} (--secret-namespace, \
         TERN_OPERATOR_SECRET_NAMESPACES), not in {namespace}, where this {kind}'s Secret is: create the \
         {kind} in one of those namespaces, or let the operator read Secrets in every namespace \
         (Helm value operator.clusterWideSecrets)"
    )
}

/// The outcome for a Mailbox in a namespace whose Secrets the operator may not read (so not
/// its password): not Ready, nothing done in the mailbox service. Looked at again only at the
/// resync, since the operator's configuration changes only with a restart.
pub fn mailbox_secret_namespace_not_watched(mailbox: &Mailbox, watched: &str) -> Outcome<MailboxStatus> {
    use kube::ResourceExt;
    let generation = mailbox.metadata.generation;
    let mut status = mailbox.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    let message = not_watched_message("Mailbox", &mailbox.namespace().unwrap_or_default(), watched);
    set_ready(&mut status.conditions, false, reason::SECRET_NAMESPACE_NOT_WATCHED, message, generation);
    Outcome { status, changes: vec![], next: Next::Resync }
}

/// The outcome for a Domain in a namespace whose Secrets the operator may not read (so not its
/// DKIM key): not Ready, nothing done in the mailbox service, as for a Mailbox.
pub fn domain_secret_namespace_not_watched(domain: &Domain, watched: &str) -> Outcome<DomainStatus> {
    use kube::ResourceExt;
    let generation = domain.metadata.generation;
    let mut status = domain.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    let message = not_watched_message("Domain", &domain.namespace().unwrap_or_default(), watched);
    set_ready(&mut status.conditions, false, reason::SECRET_NAMESPACE_NOT_WATCHED, message, generation);
    Outcome { status, changes: vec![], next: Next::Resync }
}

/// The Domain resource that owns the mail domain `domain` names, when it is not `domain`
/// itself: of all Domains naming it (case-insensitively), the oldest, and among equally old the
/// first by namespace and name. Every replica and every reconcile decides the same way, so two
/// resources never take turns converging one domain to different settings (or DKIM keys).
pub fn domain_owner<'a>(domain: &'a Domain, all: impl IntoIterator<Item = &'a Domain>) -> Option<String> {
    use kube::ResourceExt;
    let name = domain.spec.name.trim().to_ascii_lowercase();
    let key = |d: &Domain| {
        let created = d.metadata.creation_timestamp.as_ref().map(|t| t.0);
        (created, d.namespace().unwrap_or_default(), d.name_any())
    };
    let owner = all
        .into_iter()
        .chain(std::iter::once(domain))
        .filter(|d| d.spec.name.trim().to_ascii_lowercase() == name)
        .min_by_key(|d| key(d))?;
    let me = (domain.namespace().unwrap_or_default(), domain.name_any());
    let it = (owner.namespace().unwrap_or_default(), owner.name_any());
    (it != me).then(|| format!("{}/{}", it.0, it.1))
}

/// The outcome for a Domain whose mail domain another resource owns: not Ready, nothing done.
pub fn domain_conflict(domain: &Domain, owner: &str) -> Outcome<DomainStatus> {
    let generation = domain.metadata.generation;
    let mut status = domain.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    let message =
        format!("domain {} is already managed by Domain {owner}", domain.spec.name.trim().to_ascii_lowercase());
    set_ready(&mut status.conditions, false, reason::DOMAIN_CONFLICT, message, generation);
    Outcome { status, changes: vec![], next: Next::Resync }
}

/// What the controller found of a Domain's DKIM key.
#[derive(Debug, Clone)]
pub enum DkimInput {
    /// Not looked at (reconciles without Kubernetes): no DKIM record is proposed, and the key
    /// the mailbox service has (if any) is left alone.
    Unknown,
    /// The key: its selector, the data of its TXT record (`v=DKIM1; k=rsa; p=...`) and the
    /// private key in PEM, which the mailbox service gets so that the relay signs with it.
    Key { selector: String, txt_value: String, private_key_pem: SecretString },
    /// The key cannot be read, for this reason; the Domain is not Ready.
    Invalid(String),
}

/// The password a Mailbox's Secret holds, with a version that changes whenever the Secret
/// does (the controller uses the Secret's uid and resourceVersion), so the password is set
/// again after a change and not on every reconcile.
#[derive(Debug, Clone)]
pub struct PasswordInput {
    pub value: SecretString,
    pub version: String,
}

/// What the controller found of the ConfigMap a Mailbox's `spec.sieve.configMapKeyRef` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigMapInput {
    /// Not read (reconciles without Kubernetes, or a Mailbox whose script is inline): a script
    /// from a ConfigMap is left as the mailbox service has it.
    Unknown,
    /// The text under the key.
    Text(String),
    /// The ConfigMap or its key is missing: the reason of the `SieveReady` condition
    /// ([`reason::CONFIG_MAP_NOT_FOUND`] or [`reason::KEY_NOT_FOUND`]) and a message.
    Missing { reason: &'static str, message: String },
}

/// What a reconcile produced: the new status, what it changed, and when to look again.
#[derive(Debug, Clone)]
pub struct Outcome<S> {
    pub status: S,
    /// One line per change made in the mailbox service, for Events and logs; empty when the
    /// service already matched.
    pub changes: Vec<String>,
    /// When the resource should be reconciled again.
    pub next: Next,
}

/// When to reconcile again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Converged: after [`RESYNC`].
    Resync,
    /// Waiting on something else (a Domain, a Secret): after [`RETRY_SOON`].
    Soon,
    /// A failure of the mailbox service: retry with backoff.
    Backoff,
}

impl<S> Outcome<S> {
    pub fn is_ready(&self) -> bool {
        self.next == Next::Resync
    }
}

/// The current time as the API server writes it (RFC 3339, UTC).
fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Sets the `Ready` condition, keeping its transition time when its status does not change.
pub fn set_ready(conditions: &mut Vec<Condition>, ready: bool, reason: &str, message: String, generation: Option<i64>) {
    set_condition(conditions, "Ready", ready, reason, message, generation);
}

/// Sets the condition of type `type_`, keeping its transition time when its status does not
/// change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    ready: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) {
    let status = if ready { "True" } else { "False" };
    let previous = conditions.iter().find(|c| c.type_ == type_);
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Some(now()),
    };
    conditions.retain(|c| c.type_ != type_);
    conditions.push(Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        last_transition_time,
        observed_generation: generation,
    });
}

/// The `Ready` condition of a status, if any.
pub fn ready_condition(conditions: &[Condition]) -> Option<&Condition> {
    condition(conditions, "Ready")
}

/// The condition of type `type_` of a status, if any.
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// The ports clients reach the front-ends on (their public Services' ports), which the SRV
/// records of RFC 6186 and RFC 8314 publish; 0 for a protocol that is not offered, whose
/// record then says so (target `.`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientPorts {
    pub submission: u16,
    pub submissions: u16,
    pub imap: u16,
    pub imaps: u16,
    pub pop3: u16,
    pub pop3s: u16,
}

impl Default for ClientPorts {
    /// The standard ports.
    fn default() -> Self {
        Self { submission: 587, submissions: 465, imap: 143, imaps: 993, pop3: 110, pop3s: 995 }
    }
}

/// What the DNS records of a Domain say besides its mail host, from the operator's settings
/// (which the chart sets from the same values as the front-ends' `[discovery]` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// The ports of the SRV records.
    pub ports: ClientPorts,
    /// Whether the front-ends serve the discovery documents over HTTPS on the mail host: then
    /// `autoconfig.<domain>` and `autodiscover.<domain>` are CNAMEs to it.
    pub discovery: bool,
    /// The MTA-STS policy the front-ends serve (it must be the one they serve: its id is
    /// derived from its text). With discovery on, `mta-sts.<domain>` is a CNAME to the mail
    /// host and `_mta-sts.<domain>` carries the id, unless the policy would not allow the
    /// domain's own MX host, which would make senders that enforce it refuse the domain's mail.
    pub mta_sts: Option<tern_discovery::MtaSts>,
    /// Where TLS reports (RFC 8460) go; unset: `postmaster@<domain>`, as DMARC's reports.
    pub tls_rpt_address: Option<String>,
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self { ports: ClientPorts::default(), discovery: true, mta_sts: None, tls_rpt_address: None }
    }
}

/// The DNS records the owner of `domain` publishes: MX to the mail host, SPF allowing the MX
/// hosts, DMARC, and the DKIM key when it is known, as its selector and the data of its TXT
/// record (see [`crate::dkim::txt_value`]); then what lets clients and other servers find the
/// rest: the SRV records of RFC 6186 and RFC 8314 (implicit TLS preferred, IMAP before POP3),
/// the CNAMEs of the discovery documents, MTA-STS and TLS-RPT (see [`DnsSettings`]).
pub fn dns_records(
    domain: &str,
    mail_host: &str,
    dkim: Option<(&str, &str)>,
    settings: &DnsSettings,
) -> Vec<DnsRecord> {
    let record = |type_: &str, name: String, value: String| DnsRecord { type_: type_.to_string(), name, value };
    let mut records = vec![
        record("MX", format!("{domain}."), format!("10 {mail_host}.")),
        record("TXT", format!("{domain}."), "v=spf1 mx -all".to_string()),
        record("TXT", format!("_dmarc.{domain}."), format!("v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}")),
    ];
    if let Some((selector, txt_value)) = dkim {
        records.push(record("TXT", format!("{selector}._domainkey.{domain}."), txt_value.to_string()));
    }
    let ports = &settings.ports;
    // Priorities compare across the services of one purpose (RFC 6186 section 3.4): implicit
    // TLS before STARTTLS (RFC 8314 section 5.1), IMAP before POP3.
    for (service, priority, port) in [
        ("submissions", 0, ports.submissions),
        ("submission", 10, ports.submission),
        ("imaps", 0, ports.imaps),
        ("imap", 10, ports.imap),
        ("pop3s", 20, ports.pop3s),
        ("pop3", 30, ports.pop3),
    ] {
        let value = match port {
            // "Decidedly not available" (RFC 6186 section 3.4 and RFC 2782).
            0 => "0 0 0 .".to_string(),
            port => format!("{priority} 1 {port} {mail_host}."),
        };
        records.push(record("SRV", format!("_{service}._tcp.{domain}."), value));
    }
    if settings.discovery {
        for name in ["autoconfig", "autodiscover"] {
            records.push(record("CNAME", format!("{name}.{domain}."), format!("{mail_host}.")));
        }
        if let Some(policy) =
            settings.mta_sts.as_ref().filter(|p| p.allows(mail_host) || p.mode == tern_discovery::mta_sts::Mode::None)
        {
            records.push(record("CNAME", format!("mta-sts.{domain}."), format!("{mail_host}.")));
            records.push(record("TXT", format!("_mta-sts.{domain}."), policy.txt_record()));
        }
    }
    let reports = settings.tls_rpt_address.clone().unwrap_or_else(|| format!("postmaster@{domain}"));
    records.push(record("TXT", format!("_smtp._tls.{domain}."), format!("v=TLSRPTv1; rua=mailto:{reports}")));
    records
}

/// The spam settings a resource specifies, as the mailbox service stores them, so that they
/// compare equal to what it reports once set: sender entries trimmed, lower-cased, sorted and
/// without duplicates, and the junk folder with a leading `INBOX` level in upper case (the
/// service's canonical folder name). Unset settings are the defaults, which the service
/// reports for a domain or account that never had any. Entries the service would refuse are
/// not checked here but passed on, so that its refusal, with its message, reaches the status.
pub fn spam_settings(spec: Option<&SpamSpec>) -> SpamSettings {
    let Some(spec) = spec else { return SpamSettings::default() };
    let senders = |list: &[String]| -> Vec<String> {
        // A BTreeSet orders Strings bytewise, as the service's sort does.
        let set: BTreeSet<String> = list.iter().map(|s| s.trim().to_lowercase()).collect();
        set.into_iter().collect()
    };
    let scan = match spec.scan {
        SpamScan::Inherit => tern_proto::v1::SpamScan::Inherit,
        SpamScan::Enabled => tern_proto::v1::SpamScan::On,
        SpamScan::Disabled => tern_proto::v1::SpamScan::Off,
    };
    SpamSettings {
        scan: scan as i32,
        junk_folder: spec.junk_folder.as_deref().map(canonical_folder).unwrap_or_default(),
        allow_senders: senders(&spec.allow_senders),
        block_senders: senders(&spec.block_senders),
    }
}

/// A folder name with its first level in upper case when it is INBOX, which is how the mailbox
/// service stores names (IMAP's INBOX is case-insensitive, the other names are not).
fn canonical_folder(name: &str) -> String {
    match name.split_once('/') {
        Some((first, rest)) if first.eq_ignore_ascii_case("INBOX") => format!("INBOX/{rest}"),
        None if name.eq_ignore_ascii_case("INBOX") => "INBOX".to_string(),
        _ => name.to_string(),
    }
}

/// The spam settings for a change line, such as `scan Enabled, junk folder "Spam", 2 allowed and 0
/// blocked senders`; the lists themselves can be long, and are in the resource.
fn describe_spam(settings: &SpamSettings) -> String {
    let folder = match settings.junk_folder.as_str() {
        "" => "junk folder inherited".to_string(),
        folder => format!("junk folder {folder:?}"),
    };
    let scan = match settings.scan() {
        tern_proto::v1::SpamScan::Inherit => "Inherit",
        tern_proto::v1::SpamScan::On => "Enabled",
        tern_proto::v1::SpamScan::Off => "Disabled",
    };
    format!(
        "scan {scan}, {folder}, {} allowed and {} blocked senders",
        settings.allow_senders.len(),
        settings.block_senders.len()
    )
}

/// A refusal of spam settings, pointed at `spec.spam`: the service's message names its own
/// fields (`block_senders`), which alone would not tell which part of the resource to fix.
fn in_spam_spec(error: ApiError) -> ApiError {
    match error {
        ApiError::Refused(message) => ApiError::Refused(format!("spec.spam: {message}")),
        other => other,
    }
}

fn failure<S>(status: S, changes: Vec<String>, error: &ApiError) -> (Outcome<S>, &'static str) {
    match error {
        ApiError::Unavailable(_) => (Outcome { status, changes, next: Next::Backoff }, reason::API_UNAVAILABLE),
        _ => (Outcome { status, changes, next: Next::Soon }, reason::REFUSED),
    }
}

/// Converges the mailbox service to a Domain: creates the domain or updates its catch-all and
/// default quota, then its spam settings, and computes its status (the `Ready` condition and
/// the DNS records), without its DKIM key and with the default [`DnsSettings`]: see
/// [`reconcile_domain_with_dkim`].
pub async fn reconcile_domain(api: &dyn AdminApi, domain: &Domain) -> Outcome<DomainStatus> {
    reconcile_domain_with_dkim(api, domain, &DkimInput::Unknown, &DnsSettings::default()).await
}

/// [`reconcile_domain`] with the DKIM key the controller read or generated: its record joins
/// the DNS records, and the mailbox service gets the key (through `SetDkimKey`) when the
/// selector or the TXT record it reports differ, so an unchanged key is not sent again; a key
/// that cannot be read leaves the Domain not Ready (the domain is still converged in the
/// mailbox service, which keeps signing with the key it has). `dns` says what the DNS records
/// publish besides the mail host.
pub async fn reconcile_domain_with_dkim(
    api: &dyn AdminApi,
    domain: &Domain,
    dkim: &DkimInput,
    dns: &DnsSettings,
) -> Outcome<DomainStatus> {
    let generation = domain.metadata.generation;
    let mut status = domain.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    let spec = &domain.spec;
    let name = spec.name.trim().to_ascii_lowercase();
    let mail_host = spec.mail_host.clone().unwrap_or_else(|| format!("mail.{name}"));
    let dkim_record = match dkim {
        DkimInput::Key { selector, txt_value, .. } => Some((selector.as_str(), txt_value.as_str())),
        DkimInput::Unknown | DkimInput::Invalid(_) => None,
    };
    status.dns_records = dns_records(&name, &mail_host, dkim_record, dns);

    let default_quota = match spec.default_quota.as_deref().map(parse_bytes).transpose() {
        Ok(quota) => quota.unwrap_or(0),
        Err(e) => {
            set_ready(&mut status.conditions, false, reason::INVALID_SPEC, e.to_string(), generation);
            return Outcome { status, changes: vec![], next: Next::Soon };
        }
    };
    let catch_all = spec.catch_all.as_deref().unwrap_or("").trim().to_lowercase();

    let mut changes = vec![];
    let result = async {
        let current = match api.get_domain(&name).await {
            Err(ApiError::NotFound(_)) => {
                let request = CreateDomainRequest {
                    name: name.clone(),
                    catch_all: catch_all.clone(),
                    default_quota_bytes: default_quota,
                };
                let created = api.create_domain(request).await?;
                changes.push(format!("created domain {name}"));
                created
            }
            Err(e) => return Err(e),
            Ok(current) => {
                let mut update = UpdateDomainRequest { name: name.clone(), ..Default::default() };
                if current.catch_all != catch_all {
                    update.catch_all = Some(catch_all.clone());
                    changes.push(format!("set the catch-all of {name} to {catch_all:?}"));
                }
                if current.default_quota_bytes != default_quota {
                    update.default_quota_bytes = Some(default_quota);
                    changes.push(format!("set the default quota of {name} to {default_quota} bytes"));
                }
                if update.catch_all.is_some() || update.default_quota_bytes.is_some() {
                    api.update_domain(update).await?;
                }
                current
            }
        };
        // The service reports the public half of its key only, so the keys are compared by
        // their TXT records: equal records mean equal keys.
        if let DkimInput::Key { selector, txt_value, private_key_pem } = dkim
            && (current.dkim_selector != *selector || current.dkim_txt != *txt_value)
        {
            let request = SetDkimKeyRequest {
                domain: name.clone(),
                selector: selector.clone(),
                private_key_pem: private_key_pem.expose_secret().to_string(),
            };
            api.set_dkim_key(request).await?;
            changes.push(format!("set the DKIM key of {name} (selector {selector})"));
        }
        // The last write, in a request of its own: settings the service refuses (a sender it
        // cannot read) then leave everything else converged, and the refusal in the status.
        let spam = spam_settings(spec.spam.as_ref());
        if current.spam.clone().unwrap_or_default() != spam {
            let request = UpdateDomainRequest { name: name.clone(), spam: Some(spam.clone()), ..Default::default() };
            api.update_domain(request).await.map_err(in_spam_spec)?;
            changes.push(format!("set the spam settings of {name}: {}", describe_spam(&spam)));
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            if let DkimInput::Invalid(why) = dkim {
                let message = format!("domain {name} is served, but not its DKIM key: {why}");
                set_ready(&mut status.conditions, false, reason::DKIM_KEY_INVALID, message, generation);
                return Outcome { status, changes, next: Next::Soon };
            }
            set_ready(&mut status.conditions, true, reason::RECONCILED, format!("domain {name} is served"), generation);
            Outcome { status, changes, next: Next::Resync }
        }
        Err(e) => {
            let message = format!("domain {name}: {e}");
            let (mut outcome, reason) = failure(status, changes, &e);
            set_ready(&mut outcome.status.conditions, false, reason, message, generation);
            outcome
        }
    }
}

/// Applies a Domain's `reclaimPolicy` when it is deleted. `Delete` removes the domain, which
/// the mailbox service refuses while it still has accounts or aliases: that is an error, and
/// the finalizer stays until they are gone.
pub async fn cleanup_domain(api: &dyn AdminApi, domain: &Domain) -> Result<Vec<String>, ApiError> {
    let name = domain.spec.name.trim().to_ascii_lowercase();
    match domain.spec.reclaim_policy {
        ReclaimPolicy::Retain => Ok(vec![format!("left domain {name} in the mailbox service (reclaimPolicy Retain)")]),
        ReclaimPolicy::Delete => match api.delete_domain(&name).await {
            Ok(()) => Ok(vec![format!("deleted domain {name}")]),
            Err(ApiError::NotFound(_)) => Ok(vec![]),
            Err(e) => Err(e),
        },
    }
}

/// A password as the admin API takes it: a PHC hash (`$argon2...`, `$2b$...` bcrypt) is
/// passed on to be stored as it is, anything else is plain text (hashed by the service). One
/// trailing line break is dropped: `kubectl create secret --from-file` keeps the file's.
pub fn password_of(value: &SecretString) -> Password {
    let text = value.expose_secret();
    let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(text);
    let is_hash = text.starts_with("$argon2") || ["$2a$", "$2b$", "$2y$"].iter().any(|p| text.starts_with(p));
    let value =
        if is_hash { password::Value::Hash(text.to_string()) } else { password::Value::Plain(text.to_string()) };
    Password { value: Some(value) }
}

fn pop3_policy(policy: Pop3DeletePolicy) -> tern_proto::v1::Pop3DeletePolicy {
    match policy {
        Pop3DeletePolicy::Expunge => tern_proto::v1::Pop3DeletePolicy::Expunge,
        Pop3DeletePolicy::Keep => tern_proto::v1::Pop3DeletePolicy::Keep,
    }
}

/// Why a Mailbox's password is not available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordMissing(pub String);

/// What a Mailbox waits for before it can be Ready, if anything: the reason of the `Ready`
/// condition and the message.
type Waiting = Option<(&'static str, String)>;

/// Converges the mailbox service to a Mailbox: creates the account (once its domain exists and
/// its password is known) or updates what differs (display name, quota, suspended, POP3 DELE
/// policy, password when its Secret changed, aliases, the Sieve script, spam settings), and
/// computes its status, with the usage. A Sieve script from a ConfigMap is not read here: see
/// [`reconcile_mailbox_with_sieve`].
pub async fn reconcile_mailbox(
    api: &dyn AdminApi,
    mailbox: &Mailbox,
    password: Result<PasswordInput, PasswordMissing>,
) -> Outcome<MailboxStatus> {
    reconcile_mailbox_with_sieve(api, mailbox, password, &ConfigMapInput::Unknown).await
}

/// [`reconcile_mailbox`] with what the controller read of the ConfigMap holding the Sieve
/// script (when `spec.sieve.configMapKeyRef` is set). The script is converged by
/// [`reconcile_sieve`], whose outcome is the `SieveReady` condition: a script that cannot be
/// installed leaves the rest of the account converged and `Ready`.
pub async fn reconcile_mailbox_with_sieve(
    api: &dyn AdminApi,
    mailbox: &Mailbox,
    password: Result<PasswordInput, PasswordMissing>,
    config_map: &ConfigMapInput,
) -> Outcome<MailboxStatus> {
    let generation = mailbox.metadata.generation;
    let mut status = mailbox.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    let spec = &mailbox.spec;
    let address = spec.address.trim().to_lowercase();
    let not_ready = |mut status: MailboxStatus, changes, next, reason: &str, message: String| {
        set_ready(&mut status.conditions, false, reason, message, generation);
        Outcome { status, changes, next }
    };

    let Some((_, domain)) = address.rsplit_once('@') else {
        return not_ready(status, vec![], Next::Soon, reason::INVALID_SPEC, format!("{address:?} is not an address"));
    };
    let quota = match spec.quota.as_deref().map(parse_bytes).transpose() {
        Ok(quota) => quota,
        Err(e) => return not_ready(status, vec![], Next::Soon, reason::INVALID_SPEC, e.to_string()),
    };
    let display_name = spec.display_name.clone().unwrap_or_default();

    let mut changes = vec![];
    // What the account waits for (not Ready), and when the Sieve script wants another look.
    let result: Result<(Waiting, Next), ApiError> = async {
        match api.get_domain(domain).await {
            Err(ApiError::NotFound(_)) => {
                let why = format!("domain {domain} does not exist; create a Domain for it");
                return Ok((Some((reason::DOMAIN_MISSING, why)), Next::Resync));
            }
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        let account = match api.get_account(&address).await {
            Err(ApiError::NotFound(_)) => {
                let password = match &password {
                    Ok(password) => password,
                    Err(PasswordMissing(why)) => {
                        return Ok((Some((reason::PASSWORD_SECRET_MISSING, why.clone())), Next::Resync));
                    }
                };
                let request = CreateAccountRequest {
                    address: address.clone(),
                    password: Some(password_of(&password.value)),
                    display_name: display_name.clone(),
                    quota_bytes: quota.unwrap_or(0),
                };
                let account = api.create_account(request).await?;
                changes.push(format!("created account {address}"));
                status.password_version = Some(password.version.clone());
                account
            }
            Err(e) => return Err(e),
            Ok(account) => account,
        };

        let mut update = UpdateAccountRequest { address: address.clone(), ..Default::default() };
        if account.display_name != display_name {
            update.display_name = Some(display_name.clone());
            changes.push(format!("set the display name of {address} to {display_name:?}"));
        }
        if let Some(quota) = quota.filter(|q| *q != account.quota_bytes) {
            update.quota_bytes = Some(quota);
            changes.push(format!("set the quota of {address} to {quota} bytes"));
        }
        if account.suspended != spec.suspended {
            update.suspended = Some(spec.suspended);
            let what = if spec.suspended { "suspended" } else { "resumed" };
            changes.push(format!("{what} {address}"));
        }
        let pop3 = pop3_policy(spec.pop3_delete_policy);
        if account.pop3_delete() != pop3 {
            update.pop3_delete = Some(pop3 as i32);
            changes.push(format!("set the POP3 DELE policy of {address} to {:?}", spec.pop3_delete_policy));
        }
        if update.display_name.is_some()
            || update.quota_bytes.is_some()
            || update.suspended.is_some()
            || update.pop3_delete.is_some()
        {
            api.update_account(update).await?;
        }

        let mut waiting = None;
        match &password {
            Ok(password) if status.password_version.as_deref() != Some(password.version.as_str()) => {
                api.set_password(&address, password_of(&password.value)).await?;
                changes.push(format!("set the password of {address}"));
                status.password_version = Some(password.version.clone());
            }
            Ok(_) => {}
            Err(PasswordMissing(why)) => waiting = Some((reason::PASSWORD_SECRET_MISSING, why.clone())),
        }

        let current: BTreeSet<String> = account.aliases.iter().map(|a| a.to_lowercase()).collect();
        let desired: BTreeSet<String> = spec.aliases.iter().map(|a| a.trim().to_lowercase()).collect();
        for alias in current.difference(&desired) {
            api.remove_alias(alias).await?;
            changes.push(format!("removed alias {alias} of {address}"));
        }
        for alias in desired.difference(&current) {
            api.add_alias(alias, &address).await?;
            changes.push(format!("added alias {alias} to {address}"));
        }

        // Before the spam settings, whose refusal ends the reconcile; the script's own failures
        // are the SieveReady condition's, and end nothing.
        let sieve = SieveTarget { account_id: account.id, address: &address, generation };
        let sieve_next =
            reconcile_sieve(api, &sieve, spec.sieve.as_ref(), config_map, &mut status, &mut changes).await?;

        // The last write, in a request of its own: settings the service refuses then leave the
        // rest of the account converged, and the refusal in the status.
        let spam = spam_settings(spec.spam.as_ref());
        if account.spam.clone().unwrap_or_default() != spam {
            let request =
                UpdateAccountRequest { address: address.clone(), spam: Some(spam.clone()), ..Default::default() };
            api.update_account(request).await.map_err(in_spam_spec)?;
            changes.push(format!("set the spam settings of {address}: {}", describe_spam(&spam)));
        }

        let usage = api.get_usage(&address).await?;
        // The CRD's integers are int64 (Kubernetes has no unsigned format); a count past
        // i64::MAX cannot happen, so saturating is only for the type.
        status.messages = Some(i64::try_from(usage.messages).unwrap_or(i64::MAX));
        status.bytes_used = Some(i64::try_from(usage.bytes).unwrap_or(i64::MAX));
        let quota = if usage.quota_bytes == 0 { "-".to_string() } else { format_bytes(usage.quota_bytes) };
        status.usage = Some(format!("{}/{quota}", format_bytes(usage.bytes)));
        Ok((waiting, sieve_next))
    }
    .await;

    match result {
        Ok((None, next)) => {
            set_ready(
                &mut status.conditions,
                true,
                reason::RECONCILED,
                format!("account {address} is served"),
                generation,
            );
            Outcome { status, changes, next }
        }
        Ok((Some((reason, why)), _)) => not_ready(status, changes, Next::Soon, reason, why),
        Err(e) => {
            let message = format!("account {address}: {e}");
            let (mut outcome, reason) = failure(status, changes, &e);
            set_ready(&mut outcome.status.conditions, false, reason, message, generation);
            outcome
        }
    }
}

/// The account a Sieve script belongs to, for [`reconcile_sieve`].
#[derive(Debug, Clone, Copy)]
pub struct SieveTarget<'a> {
    /// The account's id, by which the Mailbox API names it.
    pub account_id: u64,
    /// Its address, for the change lines and messages.
    pub address: &'a str,
    /// The generation of the Mailbox, for the condition.
    pub generation: Option<i64>,
}

/// Converges an account's Sieve script to `spec` (the Mailbox's `spec.sieve`), with the text
/// of a ConfigMap in `config_map`, and sets `status.sieveScript` and the `SieveReady`
/// condition.
///
/// With a script: it is stored with `activate` when the service's script of that name differs
/// (or is missing), made active when it is the same but not active, and the script the
/// operator stored under another name before (a renamed `spec.sieve.name`) is deleted. A
/// script the service refuses is not stored, so the one stored before stays active; the
/// condition says why (`ScriptInvalid` with the line and column, `Refused` for a quota), and
/// so does a missing ConfigMap or key, which is looked at again soon. Without `spec.sieve`:
/// the script the operator stored (the one `status.sieveScript` names, and no other) is
/// deactivated and deleted, and the condition removed.
///
/// Returns when to look again; an error only when the mailbox service is unavailable (the
/// reconcile then fails as a whole, and is retried with backoff).
pub async fn reconcile_sieve(
    api: &dyn AdminApi,
    target: &SieveTarget<'_>,
    spec: Option<&SieveSpec>,
    config_map: &ConfigMapInput,
    status: &mut MailboxStatus,
    changes: &mut Vec<String>,
) -> Result<Next, ApiError> {
    let SieveTarget { account_id, address, generation } = *target;
    let installed = status.sieve_script.clone();
    let sieve_ready = |status: &mut MailboxStatus, ready: bool, reason: &str, message: String| {
        set_condition(&mut status.conditions, SIEVE_READY, ready, reason, message, generation);
    };

    let Some(spec) = spec else {
        if let Some(name) = installed {
            match remove_sieve_script(api, account_id, &name).await {
                Ok(removed) => {
                    if removed {
                        changes.push(format!("deactivated and deleted Sieve script {name:?} of {address}"));
                    }
                    status.sieve_script = None;
                }
                Err(e @ ApiError::Unavailable(_)) => return Err(e),
                Err(e) => {
                    let message = format!("Sieve script {name:?} (spec.sieve removed) cannot be deleted: {e}");
                    sieve_ready(status, false, reason::REFUSED, message);
                    return Ok(Next::Soon);
                }
            }
        }
        status.conditions.retain(|c| c.type_ != SIEVE_READY);
        return Ok(Next::Resync);
    };

    let name = spec.name.as_str();
    let text = match (&spec.script, &spec.config_map_key_ref, config_map) {
        (Some(_), Some(_), _) | (None, None, _) => {
            // The CRD's rule refuses both; an object may reach the operator by another way
            // (an older CRD's, say).
            let message = "spec.sieve must set exactly one of configMapKeyRef and script".to_string();
            sieve_ready(status, false, reason::INVALID_SPEC, message);
            return Ok(Next::Soon);
        }
        (Some(text), None, _) => text.clone(),
        (None, Some(_), ConfigMapInput::Text(text)) => text.clone(),
        (None, Some(_), ConfigMapInput::Unknown) => return Ok(Next::Resync),
        (None, Some(_), ConfigMapInput::Missing { reason, message }) => {
            let message = format!("{message}; the Sieve script stored before (if any) is left as it is");
            sieve_ready(status, false, reason, message);
            return Ok(Next::Soon);
        }
    };

    let result = async {
        let stored = match api.get_sieve_script(account_id, name).await {
            Ok(stored) => Some(stored),
            Err(ApiError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let put = || PutSieveScriptRequest { account_id, name: name.to_string(), text: text.clone(), activate: true };
        match stored {
            None => {
                api.put_sieve_script(put()).await?;
                changes.push(format!("stored Sieve script {name:?} of {address} and made it active"));
            }
            Some(stored) if stored.text != text => {
                api.put_sieve_script(put()).await?;
                changes.push(format!("updated Sieve script {name:?} of {address} and made it active"));
            }
            Some(stored) if !stored.active => {
                api.set_active_sieve_script(account_id, name).await?;
                changes.push(format!("made Sieve script {name:?} of {address} active"));
            }
            Some(_) => {}
        }
        // A renamed script: the old name is the operator's too, and no longer wanted.
        if let Some(old) = installed.as_deref().filter(|old| *old != name)
            && remove_sieve_script(api, account_id, old).await?
        {
            changes.push(format!("deleted Sieve script {old:?} of {address} (renamed to {name:?})"));
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            status.sieve_script = Some(name.to_string());
            sieve_ready(status, true, reason::SCRIPT_ACTIVE, format!("Sieve script {name:?} is active for {address}"));
            Ok(Next::Resync)
        }
        Err(e @ ApiError::Unavailable(_)) => Err(e),
        // Looked at again when the spec or the ConfigMap changes (both watched), and at the
        // resync: the same text would be refused the same way until then.
        Err(ApiError::ScriptInvalid(message)) => {
            sieve_ready(status, false, reason::SCRIPT_INVALID, message);
            Ok(Next::Resync)
        }
        Err(e) => {
            sieve_ready(status, false, reason::REFUSED, format!("Sieve script {name:?}: {e}"));
            Ok(Next::Soon)
        }
    }
}

/// Deactivates (when it is the active one) and deletes an account's script; false when there
/// was none of that name.
async fn remove_sieve_script(api: &dyn AdminApi, account_id: u64, name: &str) -> Result<bool, ApiError> {
    match api.get_sieve_script(account_id, name).await {
        Err(ApiError::NotFound(_)) => return Ok(false),
        Err(e) => return Err(e),
        Ok(stored) if stored.active => api.set_active_sieve_script(account_id, "").await?,
        Ok(_) => {}
    }
    match api.delete_sieve_script(account_id, name).await {
        Ok(()) => Ok(true),
        Err(ApiError::NotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Applies a Mailbox's `reclaimPolicy` when it is deleted: `Retain` leaves the account and its
/// mail (no longer managed), `Delete` deletes them.
pub async fn cleanup_mailbox(api: &dyn AdminApi, mailbox: &Mailbox) -> Result<Vec<String>, ApiError> {
    let address = mailbox.spec.address.trim().to_lowercase();
    match mailbox.spec.reclaim_policy {
        ReclaimPolicy::Retain => {
            Ok(vec![format!("left account {address} and its mail in the mailbox service (reclaimPolicy Retain)")])
        }
        ReclaimPolicy::Delete => match api.delete_account(&address).await {
            Ok(()) => Ok(vec![format!("deleted account {address} and its mail")]),
            Err(ApiError::NotFound(_)) => Ok(vec![]),
            Err(e) => Err(e),
        },
    }
}
