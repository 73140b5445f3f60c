//! `tern admin`: domains, mailboxes, aliases, passwords, quotas, usage and Sieve scripts,
//! against a running mailbox service's admin API (and its Mailbox API, by the account id the
//! admin API gives, for mail and scripts).

use std::io::Read;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use tern_proto::v1::{
    AddAliasRequest, CreateAccountRequest, CreateDomainRequest, DeleteAccountRequest, DeleteDomainRequest,
    DeleteQueuedRequest, FetchBodyRequest, FetchMessagesRequest, FolderRef, GetAccountRequest, GetDomainRequest,
    GetQueuedRequest, GetUsageRequest, LearnClass, ListAccountsRequest, ListAliasesRequest, ListDomainsRequest,
    ListQueueRequest, Password, Pop3DeletePolicy, RemoveAliasRequest, ResolveRecipientRequest, RetryQueuedRequest,
    SelectRequest, SetDkimKeyRequest, SetPasswordRequest, SpamScan, SpamSettings, UpdateAccountRequest,
    UpdateDomainRequest, admin_client::AdminClient, mailbox_client::MailboxClient, password,
};
use tern_proto::v1::{
    CheckSieveScriptRequest, DeleteSieveScriptRequest, ErrorReason, GetSieveScriptRequest, ListSieveScriptsRequest,
    PutSieveScriptRequest, RenameSieveScriptRequest, SetActiveSieveScriptRequest,
};
use tern_runtime::rpc::Channel;

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The mailbox service's gRPC address (https:// with internal TLS).
    #[arg(long, env = "TERN_SERVER", default_value = "http://127.0.0.1:50051", global = true)]
    server: String,
    /// The Admin API's token, when the service requires one.
    #[arg(long, env = "TERN_ADMIN_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Internal mutual TLS: the CA, and a client certificate and key (PEM files).
    #[arg(long, env = "TERN_INTERNAL_CA", global = true, requires_all = ["cert", "key"])]
    ca: Option<std::path::PathBuf>,
    #[arg(long, env = "TERN_INTERNAL_CERT", global = true)]
    cert: Option<std::path::PathBuf>,
    #[arg(long, env = "TERN_INTERNAL_KEY", global = true)]
    key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Domains Tern receives mail for.
    #[command(subcommand)]
    Domain(DomainCommand),
    /// Mailboxes (accounts): one login, one password, one quota.
    #[command(subcommand)]
    Mailbox(MailboxCommand),
    /// Extra addresses delivered to a mailbox.
    #[command(subcommand)]
    Alias(AliasCommand),
    /// Messages and bytes a mailbox uses, against its quota.
    Usage { address: String },
    /// Reads a mailbox's messages (until you point a mail client at it).
    #[command(subcommand)]
    Mail(MailCommand),
    /// The outbound queue: submitted mail waiting for the relay.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// A mailbox's Sieve scripts (filters run at delivery); at most one is active.
    #[command(subcommand)]
    Sieve(SieveCommand),
    /// Rebuilds the full-text search index of a mailbox (or of every mailbox, with --all)
    /// from its messages. Searches stay correct meanwhile, reading what the index lacks.
    Reindex {
        /// The mailbox; omit with --all.
        address: Option<String>,
        #[arg(long, conflicts_with = "address")]
        all: bool,
    },
    /// How much of a mailbox the full-text search index covers, and its size.
    Index { address: String },
    /// Copies mail into a mailbox from a Maildir (Dovecot's layout), mbox files or a remote
    /// IMAP account, keeping folders, subscriptions, flags, keywords, internal dates and, where
    /// it can, UIDs. Run again, it copies only what is new; it never changes the source.
    Import(crate::transfer::ImportArgs),
    /// Writes a mailbox's folders as a Maildir (which Dovecot reads, with the same UIDs) or as
    /// mbox files, with flags, keywords and internal dates.
    Export(crate::transfer::export::ExportArgs),
    /// Backs the whole installation up while it serves: metadata, then message bodies, into a
    /// new directory on the mailbox service's file system. `tern restore` puts it back.
    Backup {
        /// An absent or empty directory, as the mailbox service sees its file system.
        dir: String,
        /// The metadata only; copy the body store (an S3 bucket's prefix) with its own tools
        /// afterwards, within the grace period (`[limits] blob_grace_secs`).
        #[arg(long)]
        metadata_only: bool,
    },
}

#[derive(Debug, Subcommand)]
enum SieveCommand {
    /// The mailbox's scripts, with their sizes and which one is active.
    List {
        address: String,
    },
    /// Prints one script as stored.
    Get {
        address: String,
        name: String,
    },
    /// Stores a script (replacing one of the same name) after checking it; a syntax error is
    /// printed with its line and nothing is stored.
    Put {
        address: String,
        name: String,
        /// The script's file, UTF-8; `-` reads standard input.
        file: std::path::PathBuf,
        /// Also make it the active script.
        #[arg(long)]
        activate: bool,
    },
    /// Checks a script's syntax without storing it.
    Check {
        /// The script's file; `-` reads standard input.
        file: std::path::PathBuf,
    },
    /// Makes a script the one that runs at delivery; with --none, no script runs.
    Activate {
        address: String,
        #[arg(required_unless_present = "none", conflicts_with = "none")]
        name: Option<String>,
        #[arg(long)]
        none: bool,
    },
    /// Makes no script run at delivery (the scripts are kept).
    Deactivate {
        address: String,
    },
    Rename {
        address: String,
        from: String,
        to: String,
    },
    /// Deletes a script; the active one is refused (deactivate it first).
    Delete {
        address: String,
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum MailCommand {
    /// Lists the messages of a folder.
    List {
        address: String,
        #[arg(long, default_value = "INBOX")]
        folder: String,
    },
    /// Prints one message, raw, as stored.
    Show {
        address: String,
        uid: u32,
        #[arg(long, default_value = "INBOX")]
        folder: String,
    },
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// Every entry: one per message and remote domain.
    List,
    /// One entry, with its recipients and attempt history.
    Show { queue_id: String },
    /// Makes an entry due now, skipping what is left of its backoff.
    Retry { queue_id: String },
    /// Removes an entry without delivering it or telling the sender.
    Delete { queue_id: String },
}

#[derive(Debug, Subcommand)]
enum DomainCommand {
    Add {
        name: String,
        /// Local part (or address) that receives mail for unknown users of the domain.
        #[arg(long, default_value = "")]
        catch_all: String,
        /// Quota of new mailboxes that set none (e.g. 1G, 500M; 0 = unlimited).
        #[arg(long, default_value = "0", value_parser = parse_size)]
        default_quota: u64,
    },
    Update {
        name: String,
        #[arg(long)]
        catch_all: Option<String>,
        #[arg(long, value_parser = parse_size)]
        default_quota: Option<u64>,
    },
    Show {
        name: String,
    },
    /// Spam filtering of mail to the domain's mailboxes (those that set nothing themselves):
    /// shows the settings, or changes those given.
    Spam {
        name: String,
        #[command(flatten)]
        spam: SpamArgs,
    },
    List,
    /// Refused while the domain has mailboxes or aliases.
    Remove {
        name: String,
    },
    /// Sets the DKIM key outbound mail of the domain is signed with, and prints the DNS record
    /// to publish. Without --key-file, generates an RSA-2048 key (once: the key of the same
    /// selector is kept when run again).
    Dkim {
        name: String,
        #[arg(long, default_value = "tern")]
        selector: String,
        /// An RSA private key in PEM (PKCS#8 or PKCS#1).
        #[arg(long)]
        key_file: Option<std::path::PathBuf>,
    },
}

/// Changes to spam settings; none given shows them.
#[derive(Debug, Args)]
struct SpamArgs {
    /// Scan incoming mail: `on`, `off`, or `inherit` (the domain's setting; for a domain, on).
    #[arg(long, value_parser = ["on", "off", "inherit"])]
    scan: Option<String>,
    /// The folder spam is delivered to (created when missing); an empty name inherits ("Junk").
    #[arg(long)]
    junk_folder: Option<String>,
    /// Never treat mail from this sender (address or @domain) as spam; repeatable.
    #[arg(long = "allow", value_name = "SENDER")]
    allow: Vec<String>,
    /// Always treat mail from this sender (address or @domain) as spam; repeatable.
    #[arg(long = "block", value_name = "SENDER")]
    block: Vec<String>,
    /// Takes a sender off both lists; repeatable.
    #[arg(long = "forget", value_name = "SENDER")]
    forget: Vec<String>,
}

impl SpamArgs {
    fn is_empty(&self) -> bool {
        self.scan.is_none()
            && self.junk_folder.is_none()
            && self.allow.is_empty()
            && self.block.is_empty()
            && self.forget.is_empty()
    }

    /// `current` with these changes; the service checks and normalises the result.
    fn apply(self, mut s: SpamSettings) -> SpamSettings {
        if let Some(scan) = self.scan {
            s.scan = match scan.as_str() {
                "on" => SpamScan::On,
                "off" => SpamScan::Off,
                _ => SpamScan::Inherit,
            } as i32;
        }
        if let Some(j) = self.junk_folder {
            s.junk_folder = j;
        }
        let forget: Vec<String> =
            self.forget.iter().chain(&self.allow).chain(&self.block).map(|f| f.to_lowercase()).collect();
        s.allow_senders.retain(|a| !forget.contains(&a.to_lowercase()));
        s.block_senders.retain(|b| !forget.contains(&b.to_lowercase()));
        s.allow_senders.extend(self.allow);
        s.block_senders.extend(self.block);
        s
    }
}

fn print_spam(label: &str, s: &SpamSettings) {
    let scan = match s.scan() {
        SpamScan::On => "on",
        SpamScan::Off => "off",
        SpamScan::Inherit => "inherit",
    };
    let list = |l: &[String]| if l.is_empty() { "-".to_string() } else { l.join(", ") };
    println!("{label}");
    println!("  scan:         {scan}");
    println!("  junk folder:  {}", if s.junk_folder.is_empty() { "(inherit)" } else { &s.junk_folder });
    println!("  allowed:      {}", list(&s.allow_senders));
    println!("  blocked:      {}", list(&s.block_senders));
}

#[derive(Debug, Args)]
struct PasswordArgs {
    /// The password in plain text (visible to other users of this machine; prefer --password-stdin).
    #[arg(long, conflicts_with_all = ["password_stdin", "password_hash"])]
    password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
    /// A password hash, stored as it is: argon2 (`$argon2id$...`) or bcrypt (`$2b$...`, `$2y$...`).
    #[arg(long, conflicts_with = "password_stdin")]
    password_hash: Option<String>,
}

impl PasswordArgs {
    fn into_password(self) -> anyhow::Result<Password> {
        let value = if let Some(p) = self.password {
            password::Value::Plain(p)
        } else if let Some(h) = self.password_hash {
            password::Value::Hash(h)
        } else if self.password_stdin {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("cannot read the password from standard input")?;
            password::Value::Plain(s.trim_end_matches(['\r', '\n']).to_string())
        } else {
            bail!("give a password with --password, --password-stdin or --password-hash");
        };
        Ok(Password { value: Some(value) })
    }
}

#[derive(Debug, Subcommand)]
enum MailboxCommand {
    Add {
        address: String,
        #[command(flatten)]
        password: PasswordArgs,
        /// Display name.
        #[arg(long, default_value = "")]
        name: String,
        /// Quota (e.g. 2G, 750M); 0 takes the domain's default.
        #[arg(long, default_value = "0", value_parser = parse_size)]
        quota: u64,
    },
    Update {
        address: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_parser = parse_size)]
        quota: Option<u64>,
        /// Refuse logins and deliveries (mail is kept).
        #[arg(long, conflicts_with = "unsuspend")]
        suspend: bool,
        #[arg(long)]
        unsuspend: bool,
        /// What POP3 DELE does: `expunge` (gone everywhere) or `keep` (hidden from POP3 only).
        #[arg(long, value_parser = ["expunge", "keep"])]
        pop3_delete: Option<String>,
    },
    Passwd {
        address: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Spam filtering of mail to the mailbox: shows the settings (its own, and those that hold
    /// with its domain's), or changes those given.
    Spam {
        address: String,
        #[command(flatten)]
        spam: SpamArgs,
    },
    Show {
        address: String,
    },
    List {
        /// Only this domain's mailboxes.
        domain: Option<String>,
    },
    /// Deletes the mailbox with all its mail.
    Remove {
        address: String,
    },
}

#[derive(Debug, Subcommand)]
enum AliasCommand {
    Add { alias: String, target: String },
    Remove { alias: String },
    List { domain: Option<String> },
}

/// Parses `1024`, `10k`, `500M`, `2G`, `1T` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = s.find(|c: char| !c.is_ascii_digit()).map(|i| s.split_at(i)).unwrap_or((s, ""));
    let n: u64 = digits.parse().map_err(|_| format!("{s:?} is not a size (e.g. 500M, 2G)"))?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().trim_end_matches("IB").trim_end_matches('B') {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        other => return Err(format!("unknown size unit {other:?} (use K, M, G or T)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[i]) }
}

fn quota(q: u64) -> String {
    if q == 0 { "unlimited".into() } else { human(q) }
}

/// Turns a gRPC status into a one-line error an administrator can act on.
fn explain(status: tonic::Status) -> anyhow::Error {
    match status.code() {
        tonic::Code::Unavailable if status.metadata().get(tern_proto::REASON_KEY).is_none() => {
            anyhow::anyhow!("cannot reach the mailbox service (is `tern dev` running?): {}", status.message())
        }
        tonic::Code::Unauthenticated => {
            anyhow::anyhow!("{} (give it with --token or TERN_ADMIN_TOKEN)", status.message())
        }
        _ => anyhow::anyhow!("{}", status.message()),
    }
}

async fn queue(channel: Channel, c: &mut AdminClient<Channel>, cmd: QueueCommand) -> anyhow::Result<()> {
    let time = |t: i64| mail_parser::DateTime::from_timestamp(t).to_rfc3339();
    match cmd {
        QueueCommand::List => {
            let list = MailboxClient::new(channel).list_queue(ListQueueRequest {}).await.map_err(explain)?.into_inner();
            println!(
                "{:<18} {:>9} {:>8}  {:<20}  {:<28} RECIPIENTS",
                "QUEUE ID", "SIZE", "ATTEMPTS", "NEXT ATTEMPT", "FROM"
            );
            for m in list.messages {
                let rcpts: Vec<String> = m.recipients.iter().map(|r| r.address.clone()).collect();
                // A learning task for the spam filter says so where outbound mail has a sender.
                let from = match m.learn() {
                    LearnClass::Spam => "(learn as spam)".to_string(),
                    LearnClass::Ham => "(learn as ham)".to_string(),
                    LearnClass::None if m.mail_from.is_empty() => "<>".to_string(),
                    LearnClass::None => m.mail_from.clone(),
                };
                let next = if m.lease_holder.is_empty() { time(m.next_attempt_at) } else { "being delivered".into() };
                println!(
                    "{:<18} {:>9} {:>8}  {:<20}  {:<28} {}",
                    m.queue_id,
                    human(m.size),
                    m.attempts,
                    next,
                    from,
                    rcpts.join(", ")
                );
            }
        }
        QueueCommand::Show { queue_id } => {
            let m = c.get_queued(GetQueuedRequest { queue_id }).await.map_err(explain)?.into_inner();
            println!("queue id:      {}", m.queue_id);
            println!("from:          {}", if m.mail_from.is_empty() { "<>" } else { &m.mail_from });
            println!("domain:        {}", m.domain);
            for r in &m.recipients {
                let notify =
                    if r.notify.is_empty() { String::new() } else { format!(" (NOTIFY={})", r.notify.join(",")) };
                println!("recipient:     {}{notify}", r.address);
            }
            println!("size:          {}", human(m.size));
            println!("queued:        {}", time(m.queued_at));
            println!("attempts:      {}", m.attempts);
            println!("next attempt:  {}", time(m.next_attempt_at));
            if !m.lease_holder.is_empty() {
                println!("held by:       {} until {}", m.lease_holder, time(m.lease_until));
            }
            for a in &m.history {
                let host = if a.host.is_empty() { "-" } else { &a.host };
                println!("attempt:       {}  {host}  {}", time(a.at), a.result);
            }
        }
        QueueCommand::Retry { queue_id } => {
            let m = c.retry_queued(RetryQueuedRequest { queue_id }).await.map_err(explain)?.into_inner();
            println!("{} is due now", m.queue_id);
        }
        QueueCommand::Delete { queue_id } => {
            c.delete_queued(DeleteQueuedRequest { queue_id: queue_id.clone() }).await.map_err(explain)?;
            println!("deleted {queue_id}");
        }
    }
    Ok(())
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let mut options = tern_runtime::rpc::ClientOptions::new(args.server.clone());
    options.token = args.token.clone();
    options.read_only = tern_proto::read_only;
    if let (Some(ca_file), Some(cert_file), Some(key_file)) = (args.ca.clone(), args.cert.clone(), args.key.clone()) {
        options.tls = Some(tern_runtime::rpc::InternalTls { ca_file, cert_file, key_file, server_name: None });
    }
    let channel =
        tern_runtime::rpc::connect(&options).with_context(|| format!("invalid server address {:?}", args.server))?;
    let mut c = AdminClient::new(channel.clone());
    match args.command {
        AdminCommand::Domain(cmd) => match cmd {
            DomainCommand::Add { name, catch_all, default_quota } => {
                let d = c
                    .create_domain(CreateDomainRequest { name, catch_all, default_quota_bytes: default_quota })
                    .await
                    .map_err(explain)?
                    .into_inner();
                println!("created domain {}", d.name);
            }
            DomainCommand::Spam { name, spam } => {
                let d = c.get_domain(GetDomainRequest { name: name.clone() }).await.map_err(explain)?.into_inner();
                let current = d.spam.unwrap_or_default();
                if spam.is_empty() {
                    print_spam(&format!("spam filtering of {name}:"), &current);
                } else {
                    let d = c
                        .update_domain(UpdateDomainRequest {
                            name,
                            spam: Some(spam.apply(current)),
                            ..Default::default()
                        })
                        .await
                        .map_err(explain)?
                        .into_inner();
                    print_spam(&format!("spam filtering of {} is now:", d.name), &d.spam.unwrap_or_default());
                }
            }
            DomainCommand::Update { name, catch_all, default_quota } => {
                let d = c
                    .update_domain(UpdateDomainRequest {
                        name,
                        catch_all,
                        default_quota_bytes: default_quota,
                        spam: None,
                    })
                    .await
                    .map_err(explain)?
                    .into_inner();
                println!("updated domain {}", d.name);
            }
            DomainCommand::Show { name } => {
                let d = c.get_domain(GetDomainRequest { name }).await.map_err(explain)?.into_inner();
                println!("domain:         {}", d.name);
                println!("mailboxes:      {}", d.accounts);
                println!("catch-all:      {}", if d.catch_all.is_empty() { "-" } else { &d.catch_all });
                println!("default quota:  {}", quota(d.default_quota_bytes));
                if d.dkim_selector.is_empty() {
                    println!("DKIM:           none (tern admin domain dkim {})", d.name);
                } else {
                    println!("DKIM:           {}._domainkey.{} TXT \"{}\"", d.dkim_selector, d.name, d.dkim_txt);
                }
            }
            DomainCommand::Dkim { name, selector, key_file } => {
                let private_key_pem = match key_file {
                    Some(path) => std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read the key file {}", path.display()))?,
                    None => String::new(),
                };
                let k = c
                    .set_dkim_key(SetDkimKeyRequest { domain: name, selector, private_key_pem })
                    .await
                    .map_err(explain)?
                    .into_inner();
                println!("outbound mail of {} is signed with selector {}; publish:", k.domain, k.selector);
                println!("{}._domainkey.{}. IN TXT \"{}\"", k.selector, k.domain, k.txt);
            }
            DomainCommand::List => {
                let list = c.list_domains(ListDomainsRequest {}).await.map_err(explain)?.into_inner();
                println!("{:<40} {:>9}  {:<24} DEFAULT QUOTA", "DOMAIN", "MAILBOXES", "CATCH-ALL");
                for d in list.domains {
                    let catch = if d.catch_all.is_empty() { "-".to_string() } else { d.catch_all };
                    println!("{:<40} {:>9}  {:<24} {}", d.name, d.accounts, catch, quota(d.default_quota_bytes));
                }
            }
            DomainCommand::Remove { name } => {
                c.delete_domain(DeleteDomainRequest { name: name.clone() }).await.map_err(explain)?;
                println!("removed domain {name}");
            }
        },
        AdminCommand::Mailbox(cmd) => match cmd {
            MailboxCommand::Add { address, password, name, quota: q } => {
                let a = c
                    .create_account(CreateAccountRequest {
                        address,
                        password: Some(password.into_password()?),
                        display_name: name,
                        quota_bytes: q,
                    })
                    .await
                    .map_err(explain)?
                    .into_inner();
                println!("created mailbox {} (quota {})", a.address, quota(a.quota_bytes));
            }
            MailboxCommand::Update { address, name, quota: q, suspend, unsuspend, pop3_delete } => {
                let suspended = if suspend {
                    Some(true)
                } else if unsuspend {
                    Some(false)
                } else {
                    None
                };
                let pop3_delete = pop3_delete.map(|p| {
                    if p == "keep" { Pop3DeletePolicy::Keep as i32 } else { Pop3DeletePolicy::Expunge as i32 }
                });
                let a = c
                    .update_account(UpdateAccountRequest {
                        address,
                        display_name: name,
                        quota_bytes: q,
                        suspended,
                        pop3_delete,
                        spam: None,
                    })
                    .await
                    .map_err(explain)?
                    .into_inner();
                println!("updated mailbox {}", a.address);
            }
            MailboxCommand::Passwd { address, password } => {
                c.set_password(SetPasswordRequest {
                    address: address.clone(),
                    password: Some(password.into_password()?),
                })
                .await
                .map_err(explain)?;
                println!("password of {address} changed");
            }
            MailboxCommand::Spam { address, spam } => {
                let mut a =
                    c.get_account(GetAccountRequest { address: address.clone() }).await.map_err(explain)?.into_inner();
                if !spam.is_empty() {
                    let current = a.spam.clone().unwrap_or_default();
                    a = c
                        .update_account(UpdateAccountRequest {
                            address: address.clone(),
                            spam: Some(spam.apply(current)),
                            ..Default::default()
                        })
                        .await
                        .map_err(explain)?
                        .into_inner();
                }
                print_spam(
                    &format!("spam filtering of {address}, as set on the mailbox:"),
                    &a.spam.unwrap_or_default(),
                );
                let r = MailboxClient::new(channel.clone())
                    .resolve_recipient(ResolveRecipientRequest { address: address.clone() })
                    .await
                    .map_err(explain)?
                    .into_inner();
                print_spam("with its domain's, what holds:", &r.spam.unwrap_or_default());
            }
            MailboxCommand::Show { address } => {
                let a =
                    c.get_account(GetAccountRequest { address: address.clone() }).await.map_err(explain)?.into_inner();
                let u = c.get_usage(GetUsageRequest { address }).await.map_err(explain)?.into_inner();
                println!("address:    {}", a.address);
                println!("name:       {}", if a.display_name.is_empty() { "-" } else { &a.display_name });
                println!("aliases:    {}", if a.aliases.is_empty() { "-".into() } else { a.aliases.join(", ") });
                println!("suspended:  {}", if a.suspended { "yes" } else { "no" });
                let keep = a.pop3_delete == Pop3DeletePolicy::Keep as i32;
                println!("pop3 DELE:  {}", if keep { "keep (hidden from POP3, kept for IMAP)" } else { "expunge" });
                println!("usage:      {} messages, {} of {}", u.messages, human(u.bytes), quota(u.quota_bytes));
            }
            MailboxCommand::List { domain } => {
                let list = c
                    .list_accounts(ListAccountsRequest { domain: domain.unwrap_or_default() })
                    .await
                    .map_err(explain)?
                    .into_inner();
                println!("{:<40} {:<24} {:<12} SUSPENDED", "ADDRESS", "NAME", "QUOTA");
                for a in list.accounts {
                    let name = if a.display_name.is_empty() { "-".to_string() } else { a.display_name };
                    println!(
                        "{:<40} {:<24} {:<12} {}",
                        a.address,
                        name,
                        quota(a.quota_bytes),
                        if a.suspended { "yes" } else { "no" }
                    );
                }
            }
            MailboxCommand::Remove { address } => {
                c.delete_account(DeleteAccountRequest { address: address.clone() }).await.map_err(explain)?;
                println!("removed mailbox {address}");
            }
        },
        AdminCommand::Alias(cmd) => match cmd {
            AliasCommand::Add { alias, target } => {
                c.add_alias(AddAliasRequest { alias: alias.clone(), target: target.clone() }).await.map_err(explain)?;
                println!("{alias} now delivers to {target}");
            }
            AliasCommand::Remove { alias } => {
                c.remove_alias(RemoveAliasRequest { alias: alias.clone() }).await.map_err(explain)?;
                println!("removed alias {alias}");
            }
            AliasCommand::List { domain } => {
                let list = c
                    .list_aliases(ListAliasesRequest { domain: domain.unwrap_or_default() })
                    .await
                    .map_err(explain)?
                    .into_inner();
                println!("{:<40} TARGET", "ALIAS");
                for a in list.aliases {
                    println!("{:<40} {}", a.alias, a.target);
                }
            }
        },
        AdminCommand::Mail(cmd) => mail(channel, &mut c, cmd).await?,
        AdminCommand::Queue(cmd) => queue(channel, &mut c, cmd).await?,
        AdminCommand::Sieve(cmd) => sieve(channel, &mut c, cmd).await?,
        AdminCommand::Usage { address } => {
            let u = c.get_usage(GetUsageRequest { address }).await.map_err(explain)?.into_inner();
            println!("{}: {} messages, {} of {}", u.address, u.messages, human(u.bytes), quota(u.quota_bytes));
        }
        AdminCommand::Reindex { address, all } => {
            let address = match (address, all) {
                (Some(a), false) => a,
                (None, true) => String::new(),
                _ => anyhow::bail!("name a mailbox, or --all for every mailbox"),
            };
            reindex(&mut c, address).await?;
        }
        AdminCommand::Backup { dir, metadata_only } => {
            crate::transfer::backup::backup(&mut c, dir, metadata_only).await?
        }
        AdminCommand::Import(args) => crate::transfer::import(channel.clone(), &mut c, args).await?,
        AdminCommand::Export(args) => crate::transfer::export::export(channel.clone(), &mut c, args).await?,
        AdminCommand::Index { address } => {
            let s = c
                .get_index_status(tern_proto::v1::GetIndexStatusRequest { address: address.clone() })
                .await
                .map_err(explain)?
                .into_inner();
            let ratio = if s.message_bytes == 0 { 0.0 } else { s.index_bytes as f64 / s.message_bytes as f64 };
            println!(
                "{address}: {} of {} messages indexed ({} skipped for their size); index {} for {} of mail ({:.0}%)",
                s.indexed,
                s.messages,
                s.skipped,
                human(s.index_bytes),
                human(s.message_bytes),
                ratio * 100.0
            );
        }
    }
    Ok(())
}

/// Streams a reindex's progress: a bar per mailbox on a terminal, a line every few seconds
/// otherwise (a Kubernetes Job's log).
async fn reindex(c: &mut AdminClient<Channel>, address: String) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let mut stream = c.reindex(tern_proto::v1::ReindexRequest { address }).await.map_err(explain)?.into_inner();
    let terminal = std::io::stderr().is_terminal();
    let style = indicatif::ProgressStyle::with_template(
        "{prefix:>24} [{bar:30}] {pos}/{len} messages, {msg} ({per_sec}, eta {eta})",
    )
    .map_err(|e| anyhow::anyhow!("progress bar: {e}"))?
    .progress_chars("=> ");
    let mut bar: Option<(String, indicatif::ProgressBar)> = None;
    let mut last_line = std::time::Instant::now();
    let mut accounts = 0u64;
    while let Some(p) = stream.message().await.map_err(explain)? {
        if terminal {
            if bar.as_ref().is_none_or(|(a, _)| *a != p.address) {
                let b = indicatif::ProgressBar::new(p.total).with_style(style.clone()).with_prefix(p.address.clone());
                bar = Some((p.address.clone(), b));
            }
            if let Some((_, b)) = &bar {
                b.set_length(p.total);
                b.set_position(p.done);
                b.set_message(human(p.bytes));
                if p.finished {
                    b.finish();
                }
            }
        } else if p.finished || last_line.elapsed() >= std::time::Duration::from_secs(5) {
            last_line = std::time::Instant::now();
            println!(
                "{}: {}/{} messages, {}{}",
                p.address,
                p.done,
                p.total,
                human(p.bytes),
                if p.finished { ", done" } else { "" }
            );
        }
        if p.finished {
            accounts += 1;
        }
    }
    println!("reindexed {accounts} mailbox{}", if accounts == 1 { "" } else { "es" });
    Ok(())
}

/// Reads a script from `file` (`-`: standard input).
fn read_script(file: &std::path::Path) -> anyhow::Result<String> {
    if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("cannot read the script from standard input (UTF-8)")?;
        return Ok(s);
    }
    std::fs::read_to_string(file).with_context(|| format!("cannot read the script {} (UTF-8)", file.display()))
}

/// A refused script names its file before the checker's "line L, column C: ...", as a
/// compiler's message does; other errors are explained as any other call's.
fn explain_script(file: &std::path::Path, status: tonic::Status) -> anyhow::Error {
    if ErrorReason::of(&status) == ErrorReason::ScriptInvalid {
        anyhow::anyhow!("{}: {}", file.display(), status.message())
    } else {
        explain(status)
    }
}

async fn sieve(channel: Channel, admin: &mut AdminClient<Channel>, cmd: SieveCommand) -> anyhow::Result<()> {
    let mut m = MailboxClient::new(channel);
    // The Mailbox API names accounts by id; the admin API finds it by address.
    let address = match &cmd {
        SieveCommand::Check { file } => {
            let text = read_script(file)?;
            m.check_sieve_script(CheckSieveScriptRequest { text }).await.map_err(|e| explain_script(file, e))?;
            println!("{}: no errors", file.display());
            return Ok(());
        }
        SieveCommand::List { address }
        | SieveCommand::Get { address, .. }
        | SieveCommand::Put { address, .. }
        | SieveCommand::Activate { address, .. }
        | SieveCommand::Deactivate { address }
        | SieveCommand::Rename { address, .. }
        | SieveCommand::Delete { address, .. } => address.clone(),
    };
    let account_id =
        admin.get_account(GetAccountRequest { address: address.clone() }).await.map_err(explain)?.into_inner().id;
    match cmd {
        SieveCommand::Check { .. } => unreachable!("answered above"),
        SieveCommand::List { .. } => {
            let list =
                m.list_sieve_scripts(ListSieveScriptsRequest { account_id }).await.map_err(explain)?.into_inner();
            println!("{:<40} {:>9}  ACTIVE", "SCRIPT", "SIZE");
            for s in list.scripts {
                println!("{:<40} {:>9}  {}", s.name, human(s.size), if s.active { "yes" } else { "no" });
            }
        }
        SieveCommand::Get { name, .. } => {
            let r = m.get_sieve_script(GetSieveScriptRequest { account_id, name }).await.map_err(explain)?.into_inner();
            print!("{}", r.text);
        }
        SieveCommand::Put { name, file, activate, .. } => {
            let text = read_script(&file)?;
            let request = PutSieveScriptRequest { account_id, name: name.clone(), text, activate };
            m.put_sieve_script(request).await.map_err(|e| explain_script(&file, e))?;
            let active = if activate { " and made it active" } else { "" };
            println!("stored Sieve script {name:?} for {address}{active}");
        }
        SieveCommand::Activate { name, .. } => {
            let name = name.unwrap_or_default();
            let request = SetActiveSieveScriptRequest { account_id, name: name.clone() };
            m.set_active_sieve_script(request).await.map_err(explain)?;
            if name.is_empty() {
                println!("no Sieve script runs for {address}");
            } else {
                println!("Sieve script {name:?} runs for {address}");
            }
        }
        SieveCommand::Deactivate { .. } => {
            let request = SetActiveSieveScriptRequest { account_id, name: String::new() };
            m.set_active_sieve_script(request).await.map_err(explain)?;
            println!("no Sieve script runs for {address}");
        }
        SieveCommand::Rename { from, to, .. } => {
            let request = RenameSieveScriptRequest { account_id, from: from.clone(), to: to.clone() };
            m.rename_sieve_script(request).await.map_err(explain)?;
            println!("renamed Sieve script {from:?} to {to:?}");
        }
        SieveCommand::Delete { name, .. } => {
            m.delete_sieve_script(DeleteSieveScriptRequest { account_id, name: name.clone() })
                .await
                .map_err(explain)?;
            println!("deleted Sieve script {name:?}");
        }
    }
    Ok(())
}

async fn mail(channel: Channel, admin: &mut AdminClient<Channel>, cmd: MailCommand) -> anyhow::Result<()> {
    let mut m = MailboxClient::new(channel);
    let (address, folder) = match &cmd {
        MailCommand::List { address, folder } | MailCommand::Show { address, folder, .. } => (address, folder),
    };
    let account =
        admin.get_account(GetAccountRequest { address: address.clone() }).await.map_err(explain)?.into_inner();
    let selected = m
        .select(SelectRequest { account_id: account.id, folder: Some(FolderRef::name(folder.clone())) })
        .await
        .map_err(explain)?
        .into_inner();
    let folder_id = selected.folder.map(|f| f.id).unwrap_or_default();
    match cmd {
        MailCommand::List { .. } => {
            let uids: Vec<u32> = selected.messages.iter().map(|s| s.uid).collect();
            let metas = m
                .fetch_messages(FetchMessagesRequest {
                    account_id: account.id,
                    folder_id,
                    uids,
                    with_structure: true,
                    ..Default::default()
                })
                .await
                .map_err(explain)?
                .into_inner();
            println!("{:>6} {:>9}  {:<32} {:<20} SUBJECT", "UID", "SIZE", "FROM", "FLAGS");
            for msg in metas.messages {
                let env = msg.envelope.unwrap_or_default();
                let from = env.from.first().map(|a| format!("{}@{}", a.mailbox, a.host)).unwrap_or_default();
                println!(
                    "{:>6} {:>9}  {:<32} {:<20} {}",
                    msg.uid,
                    human(msg.size),
                    from,
                    msg.flags.join(" "),
                    env.subject
                );
            }
        }
        MailCommand::Show { uid, .. } => {
            let mut stream = m
                .fetch_body(FetchBodyRequest { account_id: account.id, folder_id, uid, offset: 0, length: 0 })
                .await
                .map_err(explain)?
                .into_inner();
            let mut out = std::io::stdout().lock();
            while let Some(part) = stream.message().await.map_err(explain)? {
                std::io::Write::write_all(&mut out, &part.chunk)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("10k"), Ok(10 << 10));
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5X").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(human(1536), "1.5 KiB");
    }
}
