//! The custom resources: `Domain` and `Mailbox` in `mail.tern.dev/v1alpha1`.
//!
//! The doc comments of the fields are the descriptions `kubectl explain` shows, and the
//! `schemars` attributes the validation the API server applies: patterns and lengths, list
//! types, and the CEL rules (`x-kubernetes-validations`) that make the names immutable, relate
//! fields and check what a pattern cannot (a junk folder is not INBOX in any case). `cargo xtask
//! codegen` writes the CustomResourceDefinitions generated from these types into [`CRD_DIRS`].

use kube::CustomResource;
use kube::core::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::quantity::QUANTITY_PATTERN;

/// The API group of Tern's resources.
pub const GROUP: &str = "mail.tern.dev";

/// The finalizer through which the operator sees deletions and applies `reclaimPolicy`.
pub const FINALIZER: &str = "mail.tern.dev/cleanup";

/// A catch-all target: a local part of the domain, or a full address.
pub const CATCH_ALL_PATTERN: &str = r"^[a-z0-9!#$%&'*/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*/=?^_`{|}~-]+)*(@([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)?$";

/// A DNS domain name of at least two labels, lower case (the API server compares as written).
pub const DOMAIN_PATTERN: &str = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

/// An e-mail address as the mailbox service accepts it: a lower-case local part without `+`
/// (which marks sub-addresses) and a domain name.
pub const ADDRESS_PATTERN: &str = r"^[a-z0-9!#$%&'*/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*/=?^_`{|}~-]+)*@([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

/// An entry of a spam allow or block list: an address (`bob@example.org`) or a whole domain
/// (`@example.org`), of any case. The mailbox service takes anything with one `@`, no white
/// space and a dot in the domain; this also refuses empty labels (`bob@example..org`), which
/// no sender has, so that a typo is caught by `kubectl apply` rather than in the status.
pub const SENDER_PATTERN: &str = r"^[^@\s]*@[^@\s.]+(\.[^@\s.]+)+$";

/// A folder name as the mailbox service accepts it: levels separated by `/`, none empty, at
/// most 16 of them, without control characters (Unicode's Cc, written as ranges rather than
/// `\p{Cc}`, which JavaScript and Python validators of the schema do not read) or the IMAP
/// wildcards `*` and `%`.
pub const FOLDER_PATTERN: &str = r"^[^/*%\x00-\x1f\x7f-\x9f]+(/[^/*%\x00-\x1f\x7f-\x9f]+){0,15}$";

/// The rule that the junk folder is not INBOX (in any case), which the mailbox service would
/// refuse: spam delivered to INBOX would make the filter pointless.
pub const JUNK_NOT_INBOX: &str = "self.lowerAscii() != 'inbox'";

/// A Sieve script name as RFC 5804 section 1.6 allows it (and the mailbox service checks):
/// no control characters (Unicode's Cc, as ranges for the reasons of [`FOLDER_PATTERN`]); the
/// length, 1 to 128 characters, is the schema's. The line and paragraph separators (U+2028,
/// U+2029), which the RFC also refuses, are left to the mailbox service, whose refusal reaches
/// the status.
pub const SIEVE_NAME_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]+$";

/// The name the Mailbox's Sieve script is stored under when `spec.sieve.name` is unset.
pub const DEFAULT_SIEVE_NAME: &str = "kubernetes";

/// The rule that `spec.sieve` names exactly one source of the script.
pub const SIEVE_ONE_SOURCE: &str = "has(self.configMapKeyRef) != has(self.script)";

/// The `x-kubernetes-validations` rule that makes a field immutable once created.
pub const IMMUTABLE: &str = "self == oldSelf";

/// The rule that an alias cannot be the mailbox's own address (the mailbox service would
/// refuse it, and the Mailbox would never become Ready).
pub const ALIAS_NOT_ADDRESS: &str = "!has(self.aliases) || !(self.address in self.aliases)";

/// A mail domain served by Tern: mail for any address in it is accepted and delivered to its
/// mailboxes.
// Each `printcolumn(...)` repeats the same keys, which clippy takes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[kube(
    group = "mail.tern.dev",
    version = "v1alpha1",
    kind = "Domain",
    doc = "A mail domain served by Tern, reconciled into the mailbox service by tern-operator.",
    namespaced,
    status = "DomainStatus",
    shortname = "mdom",
    category = "tern",
    printcolumn(name = "Domain", type_ = "string", json_path = ".spec.name", description = "The DNS name"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the domain exists in the mailbox service as specified"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why the domain is (not) Ready"
    ),
    printcolumn(
        name = "Reclaim",
        type_ = "string",
        json_path = ".spec.reclaimPolicy",
        description = "What deleting the Domain does",
        priority = "1"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct DomainSpec {
    /// The DNS name of the mail domain, lower case, such as `example.com`. Mailboxes join it by
    /// their address (`alice@example.com`). Cannot be changed once created: create a new Domain
    /// for another name.
    #[schemars(regex(pattern = DOMAIN_PATTERN), length(max = 253))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": IMMUTABLE,
        "message": "spec.name cannot be changed: create a new Domain for another mail domain"
    }]))]
    pub name: String,
    /// Where mail for unknown local parts of the domain goes: a local part of this domain
    /// (`postmaster`) or a full address of this server (`info@example.org`). Unset (the
    /// default): mail to an unknown address is refused at RCPT TO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = CATCH_ALL_PATTERN), length(max = 254))]
    pub catch_all: Option<String>,
    /// The quota of the domain's mailboxes that do not set their own: a Kubernetes quantity of
    /// bytes such as `1Gi`, `500Mi` or `2G` (never negative); `0` is unlimited. Unset (the
    /// default): unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = QUANTITY_PATTERN), length(max = 32))]
    pub default_quota: Option<String>,
    /// DKIM signing of the domain's outgoing mail. Unset (the default): the operator generates
    /// a key with the selector `tern`, as when `secretRef` is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim: Option<DkimSpec>,
    /// The host name of the MX record the status proposes: where other servers deliver the
    /// domain's mail and clients reach Tern's SMTP, such as `mx.example.com`. Unset (the
    /// default): `mail.` followed by the domain name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DOMAIN_PATTERN), length(max = 253))]
    pub mail_host: Option<String>,
    /// Spam filtering of mail to the domain's mailboxes, where a Mailbox does not set its own
    /// (its `spam.scan` is `Inherit`, its `spam.junkFolder` unset); their allow and block lists
    /// add to the domain's. Unset (the default): scanning on, spam into `Junk`, no lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spam: Option<SpamSpec>,
    /// What deleting this Domain does to the domain in the mailbox service: `Retain` (the
    /// default) leaves it, no longer managed; `Delete` removes it once it has no mailboxes or
    /// aliases left.
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,
}

/// DKIM signing of a domain.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DkimSpec {
    /// The DKIM selector, a DNS label such as `tern` or `s2026`: the public key is published at
    /// `<selector>._domainkey.<domain>`. Default: `tern`. Change it (with a new key) to rotate
    /// keys without breaking the signatures of mail in transit.
    #[serde(default = "default_selector")]
    #[schemars(regex(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))]
    pub selector: String,
    /// A Secret in the Domain's namespace holding the RSA private key (PEM, PKCS#8 or PKCS#1)
    /// under the given key. Unset (the default): the operator generates an RSA-2048 key pair
    /// into the Secret `<Domain name>-dkim` (keys `private.pem` and `selector`), owned by the
    /// Domain, and keeps it while it exists. The public key is published in
    /// `status.dnsRecords`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
}

fn default_selector() -> String {
    crate::dkim::DEFAULT_SELECTOR.to_string()
}

/// The state of a Domain as the operator last saw it.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DomainStatus {
    /// The latest observations of the domain's state, one per type; `Ready` tells whether the
    /// mailbox service has the domain as specified, and if not why (`reason`, `message`).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The DNS records the owner of the domain must publish for mail to reach Tern, for Tern's
    /// mail to be trusted, and for clients and other servers to find their way: MX, SPF, DKIM
    /// and DMARC; the SRV records of RFC 6186 and RFC 8314 (`_submissions._tcp`,
    /// `_submission._tcp`, `_imaps._tcp`, `_imap._tcp`, `_pop3s._tcp`, `_pop3._tcp`); the
    /// `autoconfig` and `autodiscover` CNAMEs of mail clients' self-configuration; MTA-STS
    /// (`mta-sts` CNAME and `_mta-sts` TXT, when the operator knows the policy the front-ends
    /// serve) and TLS-RPT (`_smtp._tls` TXT).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub dns_records: Vec<DnsRecord>,
    /// The `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A DNS record to publish, ready to paste into a zone.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DnsRecord {
    /// The record type: `MX`, `TXT`, `SRV` or `CNAME`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The fully qualified owner name of the record, with a trailing dot, such as
    /// `tern._domainkey.example.com.`.
    pub name: String,
    /// The record's data as a zone file writes it (TXT data without the quotes), such as
    /// `10 mail.example.com.` for an MX record, `0 1 993 mail.example.com.` for an SRV record
    /// (priority, weight, port, target; `0 0 0 .` for a service not offered) or
    /// `mail.example.com.` for a CNAME.
    pub value: String,
}

/// A mailbox: an account with an address and a password, reachable over IMAP, POP3 and SMTP
/// submission, receiving mail for its address and aliases.
// Each `printcolumn(...)` repeats the same keys, which clippy takes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[kube(
    group = "mail.tern.dev",
    version = "v1alpha1",
    kind = "Mailbox",
    doc = "A mailbox of Tern (an account with its address, password, quota and aliases), reconciled into the mailbox service by tern-operator.",
    namespaced,
    status = "MailboxStatus",
    shortname = "mbx",
    category = "tern",
    printcolumn(name = "Address", type_ = "string", json_path = ".spec.address", description = "The primary address"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the account exists in the mailbox service as specified"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why the mailbox is (not) Ready"
    ),
    printcolumn(name = "Usage", type_ = "string", json_path = ".status.usage", description = "Bytes stored / quota"),
    printcolumn(
        name = "Sieve",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"SieveReady\")].reason",
        description = "Whether the Sieve script of spec.sieve is active (empty: no spec.sieve)",
        priority = "1"
    ),
    printcolumn(
        name = "Quota",
        type_ = "string",
        json_path = ".spec.quota",
        description = "The quota the Mailbox sets (empty: the domain's default)",
        priority = "1"
    ),
    printcolumn(
        name = "Messages",
        type_ = "integer",
        json_path = ".status.messages",
        description = "Messages stored, in every folder",
        priority = "1"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": ALIAS_NOT_ADDRESS,
    "message": "spec.aliases cannot contain the mailbox's own address (spec.address)",
    "fieldPath": ".aliases",
    "reason": "FieldValueInvalid"
}]))]
pub struct MailboxSpec {
    /// The primary address of the mailbox, lower case, such as `alice@example.com`; also its
    /// login name for IMAP, POP3 and SMTP submission. Its domain must exist in the mailbox
    /// service (a Domain resource, or a domain created otherwise). Cannot be changed once
    /// created: the stored mail belongs to the address; create a new Mailbox instead.
    #[schemars(regex(pattern = ADDRESS_PATTERN), length(max = 254))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": IMMUTABLE,
        "message": "spec.address cannot be changed: create a new Mailbox for another address"
    }]))]
    pub address: String,
    /// The name shown for the mailbox's owner, such as `Alice Example`. Unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub display_name: Option<String>,
    /// The Secret key holding the password, in the Mailbox's namespace: plain text, or a hash
    /// stored as it is, argon2 (`$argon2id$...`) or bcrypt (`$2b$...`, `$2y$...`). Editing the
    /// Secret changes the password within seconds.
    pub password_secret_ref: SecretKeyRef,
    /// The most the mailbox may store: a Kubernetes quantity of bytes such as `1Gi` (2^30
    /// bytes), `500Mi` or `2G` (10^9 bytes), never negative; `0` is unlimited. Unset (the
    /// default): the Domain's `defaultQuota`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = QUANTITY_PATTERN), length(max = 32))]
    pub quota: Option<String>,
    /// Further addresses delivered to this mailbox, such as `info@example.com`: in its domain or
    /// another domain of the server, each at most once, never the mailbox's own address, at
    /// most 100. Default: none.
    #[serde(default)]
    #[schemars(inner(regex(pattern = ADDRESS_PATTERN), length(max = 254)), length(max = 100))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub aliases: Vec<String>,
    /// A suspended mailbox cannot log in and receives no mail (senders get a temporary
    /// failure); what it stores is kept. Default: false.
    #[serde(default)]
    pub suspended: bool,
    /// What POP3 DELE does: `expunge` (the default) removes the message for every protocol,
    /// `keep` hides it from later POP3 sessions only, leaving it visible over IMAP.
    #[serde(default)]
    pub pop3_delete_policy: Pop3DeletePolicy,
    /// Spam filtering of mail to this mailbox: what it leaves unset (`scan: Inherit`, no
    /// `junkFolder`) is the Domain's, and its allow and block lists add to the Domain's. Unset
    /// (the default): all the Domain's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spam: Option<SpamSpec>,
    /// The Sieve script (RFC 5228) that filters mail delivered to this mailbox: written here
    /// (`script`) or kept in a ConfigMap (`configMapKeyRef`), stored under `name` in the mailbox
    /// service and made the active script. While it is set the operator keeps that script
    /// active (a script activated over ManageSieve is replaced at the next reconcile); scripts
    /// of other names are the owner's, made over ManageSieve, and left alone. A script with a
    /// syntax error is not stored (the one stored before stays active) and the `SieveReady`
    /// condition says where the error is. Removing `sieve` deactivates and deletes the
    /// operator's script. Unset (the default): the operator manages no script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sieve: Option<SieveSpec>,
    /// What deleting this Mailbox does to the stored mail: `Retain` (the default) leaves the
    /// account and its mail in the mailbox service, no longer managed; `Delete` deletes them.
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,
}

/// Spam filtering settings of a Domain or a Mailbox. Mail is scanned by rspamd when the SMTP
/// front-end has one configured; these settings say what happens to a recipient's mail.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpamSpec {
    /// Whether mail is scanned for spam: `Enabled`, `Disabled`, or `Inherit` (the default),
    /// which on a Mailbox takes its Domain's choice and on a Domain means enabled. (Not On and
    /// Off: kubectl and Helm read those, unquoted, as the booleans true and false.)
    #[serde(default)]
    pub scan: SpamScan,
    /// The folder mail judged to be spam is delivered to, such as `Junk` or `Spam/Suspect`
    /// (levels separated by `/`; never `INBOX`). A missing folder is created with the first
    /// spam. Unset (the default): on a Mailbox its Domain's, else `Junk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = FOLDER_PATTERN), length(min = 1, max = 512))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": JUNK_NOT_INBOX,
        "message": "spec.spam.junkFolder cannot be INBOX: spam would be delivered with the rest of the mail",
        "reason": "FieldValueInvalid"
    }]))]
    pub junk_folder: Option<String>,
    /// Senders whose mail is never treated as spam: addresses (`bob@example.org`) or whole
    /// domains (`@example.org`), compared case-insensitively with the envelope sender and the
    /// From: address; each at most once, at most 1000. A Mailbox's list adds to its Domain's.
    /// Default: none.
    #[serde(default)]
    #[schemars(inner(regex(pattern = SENDER_PATTERN), length(max = 254)), length(max = 1000))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub allow_senders: Vec<String>,
    /// Senders whose mail is always treated as spam, written as in `allowSenders`; at most
    /// 1000. A Mailbox's list adds to its Domain's. Default: none.
    #[serde(default)]
    #[schemars(inner(regex(pattern = SENDER_PATTERN), length(max = 254)), length(max = 1000))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub block_senders: Vec<String>,
}

/// The Sieve script of a Mailbox: exactly one of `configMapKeyRef` and `script`, and the name
/// it is stored under.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": SIEVE_ONE_SOURCE,
    "message": "spec.sieve takes exactly one of configMapKeyRef and script",
    "reason": "FieldValueInvalid"
}]))]
pub struct SieveSpec {
    /// The name the script is stored under in the mailbox service, as ManageSieve clients list
    /// it: 1 to 128 characters, no control characters. Default: `kubernetes`. Renaming it
    /// stores the script under the new name and deletes the old one.
    #[serde(default = "default_sieve_name")]
    #[schemars(regex(pattern = SIEVE_NAME_PATTERN), length(min = 1, max = 128))]
    pub name: String,
    /// A key of a ConfigMap in the Mailbox's namespace holding the script's text (under `data`,
    /// or UTF-8 under `binaryData`). Editing the ConfigMap changes the script within seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<ConfigMapKeyRef>,
    /// The script's text, such as `require "fileinto"; if header :contains "subject" "[list]"
    /// { fileinto "Lists"; }`. The mailbox service's limit on a script's size applies
    /// (`[limits] sieve_max_script_bytes`, 64 KiB by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1048576))]
    pub script: Option<String>,
}

fn default_sieve_name() -> String {
    DEFAULT_SIEVE_NAME.to_string()
}

/// A key of a ConfigMap in the resource's namespace.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// The name of the ConfigMap, in the namespace of the resource that refers to it, such as
    /// `alice-sieve`.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key in the ConfigMap's `data` (or `binaryData`), such as `filter.sieve`.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Whether mail is scanned for spam.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq, JsonSchema)]
pub enum SpamScan {
    /// As the Domain says (for a Domain: on).
    #[default]
    Inherit,
    /// Scan.
    Enabled,
    /// Do not scan.
    Disabled,
}

/// A key of a Secret in the resource's namespace.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The name of the Secret, in the namespace of the resource that refers to it, such as
    /// `alice-password`.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key in the Secret's `data` (or `stringData`), such as `password`.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// What POP3 DELE does to a message.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Pop3DeletePolicy {
    /// Expunge the message at QUIT: gone for every protocol.
    #[default]
    Expunge,
    /// Hide it from later POP3 sessions; IMAP still sees it.
    Keep,
}

/// What the deletion of a resource does to what it manages in the mailbox service.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq, JsonSchema)]
pub enum ReclaimPolicy {
    /// Leave it in the mailbox service, no longer managed.
    #[default]
    Retain,
    /// Delete it, with the stored mail.
    Delete,
}

/// The state of a Mailbox as the operator last saw it.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MailboxStatus {
    /// The latest observations of the mailbox's state, one per type; `Ready` tells whether the
    /// mailbox service has the account as specified, and if not why (`reason`, `message`).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The number of messages stored, in every folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub messages: Option<i64>,
    /// The bytes stored, in every folder (bytes, not a quantity: `1048576` is 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub bytes_used: Option<i64>,
    /// Bytes stored and quota for people, such as `1.2Mi/1.0Gi` (`-` for no quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<String>,
    /// Which version of the password Secret was last set, so that a change of the Secret sets
    /// the password again (the Secret's uid and resourceVersion, never the password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_version: Option<String>,
    /// The name under which the operator stored the Sieve script of `spec.sieve`, so that it
    /// deletes that script, and no other, when `spec.sieve` is removed or renamed. Written as
    /// null (not left out) when there is none, so that the status patch clears it.
    #[serde(default)]
    pub sieve_script: Option<String>,
    /// The `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One observation of a resource's state, as in `metav1.Condition`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The kind of observation: `Ready`, and on a Mailbox with `spec.sieve` also `SieveReady`
    /// (whether its Sieve script is stored and active). At most one condition of each type.
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 316))]
    pub type_: String,
    /// Whether the observation holds: `True`, `False` or `Unknown`.
    #[schemars(extend("enum" = ["True", "False", "Unknown"]))]
    pub status: String,
    /// A CamelCase word for programs: `Reconciled`, `DomainMissing`,
    /// `PasswordSecretMissing`, `SecretNamespaceNotWatched`, `InvalidSpec`, `Refused`,
    /// `ApiUnavailable`, `DkimKeyInvalid`, `DomainConflict`; for `SieveReady`: `ScriptActive`,
    /// `ScriptInvalid`, `ConfigMapNotFound`, `KeyNotFound`, `Refused`.
    #[schemars(length(max = 1024))]
    pub reason: String,
    /// What happened, for people.
    #[serde(default)]
    #[schemars(length(max = 32768))]
    pub message: String,
    /// When `status` last changed, an RFC 3339 date-time such as `2026-01-31T12:00:00Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: Option<String>,
    /// The `metadata.generation` of the spec the observation was made against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The status types, which carry conditions.
pub trait HasConditions {
    fn conditions(&self) -> &[Condition];
}

impl HasConditions for DomainStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

impl HasConditions for MailboxStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

/// Where the generated CRDs are committed, relative to the repository's root: `crds/` for
/// `kubectl apply --server-side -f crds/`, and the chart's copy, which the chart installs and
/// upgrades from a template (Helm never upgrades what a chart's own `crds/` holds).
pub const CRD_DIRS: [&str; 2] = ["crds", "charts/tern/files/crds"];

/// The CustomResourceDefinitions as YAML documents, with the file names they have in each of
/// [`CRD_DIRS`].
pub fn crd_manifests() -> Vec<(&'static str, String)> {
    fn yaml(crd: &impl Serialize) -> String {
        let body = serde_saphyr::to_string(crd).expect("a CRD serialises to YAML");
        format!("# Generated from services/operator/src/crd.rs by `cargo xtask codegen`; do not edit.\n{body}")
    }
    vec![("domain.yaml", yaml(&Domain::crd())), ("mailbox.yaml", yaml(&Mailbox::crd()))]
}

/// Writes [`crd_manifests`] into `dir`.
pub fn write_crds(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in crd_manifests() {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}
