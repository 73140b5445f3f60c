//! Moving mail in and out: `tern admin import` (Maildir, mbox or a remote IMAP account, one
//! account or a CSV of them) and `tern admin export` (Maildir or mbox that Dovecot reads).
//!
//! Both run against a running mailbox service, through its Mailbox API like any front-end;
//! the formats themselves are `tern-mailfmt`'s, the remote IMAP client is [`imap`].

pub mod backup;
pub mod export;
pub mod imap;
pub mod import;
pub mod progress;
pub mod source;

use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use clap::{Args, ValueEnum};
use futures::StreamExt;
use tern_proto::v1::{GetAccountRequest, admin_client::AdminClient, mailbox_client::MailboxClient};
use tern_runtime::rpc::Channel;

use self::{
    import::{Options, Report},
    progress::Progress,
    source::{ImapPool, LocalFormat, Source},
};

/// The Message-ID of a message (its header only is read), in [`import::normalize_message_id`]
/// form.
pub fn message_id(message: &[u8]) -> Option<String> {
    let end = memchr_header_end(message);
    let header = &message[..end];
    let parsed = mail_parser::MessageParser::new().parse_headers(header)?;
    parsed.message_id().and_then(import::normalize_message_id)
}

/// Where a message's header ends (the blank line), or the whole message.
fn memchr_header_end(message: &[u8]) -> usize {
    let crlf = message.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let lf = message.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(message.len()),
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Maildir,
    Mbox,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MboxVariant {
    /// `>From ` quoting that is undone exactly (`>>From ` keeps one `>`).
    Mboxrd,
    /// Only `From ` is quoted; `>From ` lines in the mail itself cannot be told apart.
    Mboxo,
}

impl From<MboxVariant> for tern_mailfmt::mbox::Variant {
    fn from(v: MboxVariant) -> Self {
        match v {
            MboxVariant::Mboxrd => tern_mailfmt::mbox::Variant::Mboxrd,
            MboxVariant::Mboxo => tern_mailfmt::mbox::Variant::Mboxo,
        }
    }
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The mailbox to import into (it must exist); omit with --csv.
    #[arg(required_unless_present = "csv")]
    address: Option<String>,
    /// Where from: a Maildir directory or mbox file or directory (`maildir:PATH` and `mbox:PATH`
    /// say which), or `imap://host[:port]` (STARTTLS when offered) or `imaps://host[:port]`.
    #[arg(required_unless_present = "csv")]
    source: Option<String>,
    /// Many accounts: a CSV of `address,source[,user[,password]]` lines; a password may be
    /// `env:NAME` or `file:PATH`, and when absent is --password's.
    #[arg(long, conflicts_with_all = ["address", "source"])]
    csv: Option<PathBuf>,
    /// The source's login for IMAP; the mailbox's address when not given.
    #[arg(long)]
    user: Option<String>,
    /// The source's password for IMAP.
    #[arg(long, env = "TERN_SOURCE_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// A file holding the source's password (a mounted Secret).
    #[arg(long, conflicts_with = "password")]
    password_file: Option<PathBuf>,
    /// Log in with AUTHENTICATE PLAIN rather than LOGIN.
    #[arg(long)]
    auth_plain: bool,
    /// CA certificates (PEM) the source server's certificate may chain to, besides the
    /// system's.
    #[arg(long)]
    source_ca: Option<PathBuf>,
    /// The format of a local source, when the path does not say it.
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// How an mbox quotes `From ` lines.
    #[arg(long, value_enum, default_value = "mboxrd")]
    mbox_variant: MboxVariant,
    /// IMAP connections per account.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
    connections: u16,
    /// Accounts imported at once (with --csv).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel: u16,
    /// Messages per append (one commit each), at most 500.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(1..=500))]
    batch: u16,
    /// Import even past the mailbox's quota.
    #[arg(long)]
    ignore_quota: bool,
    /// Compare and report what would be copied, changing nothing.
    #[arg(long)]
    dry_run: bool,
    /// Keep the source's folder names for its special-use folders too (by default its sent,
    /// drafts, trash, junk and archive folders go into Tern's Sent, Drafts, Trash, Junk and
    /// Archive, found by their attribute or a usual name such as "Sent Items").
    #[arg(long)]
    keep_names: bool,
    /// Put everything under this folder: the source's INBOX becomes it and every other folder
    /// its sub-folder (an archive kept apart; implies --keep-names).
    #[arg(long, value_name = "FOLDER")]
    into: Option<String>,
}

/// One account to import.
#[derive(Debug, Clone)]
struct Job {
    address: String,
    source: String,
    user: Option<String>,
    password: Option<String>,
}

impl ImportArgs {
    fn password(&self) -> anyhow::Result<Option<String>> {
        match (&self.password, &self.password_file) {
            (Some(p), _) => Ok(Some(p.clone())),
            (None, Some(f)) => Ok(Some(read_secret_file(f)?)),
            (None, None) => Ok(None),
        }
    }

    fn jobs(&self) -> anyhow::Result<Vec<Job>> {
        let password = self.password()?;
        if let Some(csv) = &self.csv {
            let text = std::fs::read_to_string(csv).with_context(|| format!("cannot read {}", csv.display()))?;
            return parse_csv(&text)
                .with_context(|| format!("{}", csv.display()))?
                .into_iter()
                .map(|fields| {
                    let pw = match fields.get(3).filter(|p| !p.is_empty()) {
                        Some(p) => Some(resolve_password(p)?),
                        None => password.clone(),
                    };
                    Ok(Job {
                        address: fields[0].clone(),
                        source: fields[1].clone(),
                        user: fields.get(2).filter(|u| !u.is_empty()).cloned().or_else(|| self.user.clone()),
                        password: pw,
                    })
                })
                .collect();
        }
        Ok(vec![Job {
            address: self.address.clone().unwrap_or_default(),
            source: self.source.clone().unwrap_or_default(),
            user: self.user.clone(),
            password,
        }])
    }

    fn open(&self, job: &Job) -> anyhow::Result<Source> {
        let s = job.source.as_str();
        if s.starts_with("imap://") || s.starts_with("imaps://") {
            let user = job.user.clone().unwrap_or_else(|| job.address.clone());
            let password = job.password.clone().ok_or_else(|| {
                anyhow!("{}: an IMAP source needs a password (--password, --password-file or the CSV)", job.address)
            })?;
            let endpoint = imap::Endpoint::parse(s, user, password, self.auth_plain, self.source_ca.clone())?;
            return Ok(Source::Imap(ImapPool::new(endpoint, self.connections as usize)));
        }
        let variant = self.mbox_variant.into();
        let (path, format) = if let Some(p) = s.strip_prefix("maildir:") {
            (p, Some(LocalFormat::Maildir))
        } else if let Some(p) = s.strip_prefix("mbox:") {
            (p, Some(LocalFormat::Mbox(variant)))
        } else {
            let format = self.format.map(|f| match f {
                Format::Maildir => LocalFormat::Maildir,
                Format::Mbox => LocalFormat::Mbox(variant),
            });
            (s, format)
        };
        let path = PathBuf::from(path);
        if !path.exists() {
            bail!("{}: the source {} does not exist", job.address, path.display());
        }
        Source::local(path, format, variant).with_context(|| format!("opening {s}"))
    }
}

fn read_secret_file(path: &std::path::Path) -> anyhow::Result<String> {
    let s =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the password file {}", path.display()))?;
    Ok(s.trim_end_matches(['\r', '\n']).to_string())
}

/// A CSV password: `env:NAME`, `file:PATH`, or the password itself.
fn resolve_password(p: &str) -> anyhow::Result<String> {
    if let Some(name) = p.strip_prefix("env:") {
        return std::env::var(name).with_context(|| format!("the environment has no {name}"));
    }
    if let Some(path) = p.strip_prefix("file:") {
        return read_secret_file(std::path::Path::new(path));
    }
    Ok(p.to_string())
}

/// Parses CSV lines (RFC 4180 quoting; `#` comments and blank lines skipped; a first line
/// starting `address,` is a header). Every line needs an address and a source.
fn parse_csv(text: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut chars = line.chars().peekable();
        let mut quoted = false;
        while let Some(c) = chars.next() {
            match c {
                '"' if quoted && chars.peek() == Some(&'"') => {
                    field.push('"');
                    chars.next();
                }
                '"' if quoted => quoted = false,
                '"' if field.is_empty() => quoted = true,
                ',' if !quoted => fields.push(std::mem::take(&mut field).trim().to_string()),
                c => field.push(c),
            }
        }
        if quoted {
            bail!("line {}: an unterminated quote", n + 1);
        }
        fields.push(field.trim().to_string());
        if out.is_empty() && fields[0].eq_ignore_ascii_case("address") {
            continue;
        }
        if fields.len() < 2 || fields[0].is_empty() || fields[1].is_empty() {
            bail!("line {}: needs at least an address and a source", n + 1);
        }
        out.push(fields);
    }
    if out.is_empty() {
        bail!("no accounts in it");
    }
    Ok(out)
}

/// `tern admin import`.
pub async fn import(channel: Channel, admin: &mut AdminClient<Channel>, args: ImportArgs) -> anyhow::Result<()> {
    let jobs = args.jobs()?;
    let options = Options {
        batch_messages: args.batch as usize,
        ignore_quota: args.ignore_quota,
        dry_run: args.dry_run,
        keep_names: args.keep_names,
        into: args.into.clone().filter(|f| !f.trim_matches('/').is_empty()),
        read_ahead: args.connections as usize,
        ..Default::default()
    };
    // Every account is looked up first, so that a typo fails before anything is copied.
    let mut resolved = Vec::with_capacity(jobs.len());
    for job in jobs {
        let account = admin
            .get_account(GetAccountRequest { address: job.address.clone() })
            .await
            .map_err(|s| anyhow!("{}: {}", job.address, s.message()))?
            .into_inner();
        let source = args.open(&job)?;
        resolved.push((account.id, job, source));
    }
    let progress = Progress::new("import", resolved.len());
    let run = futures::stream::iter(resolved)
        .map(|(id, job, source)| {
            let (channel, progress, options) = (channel.clone(), progress.clone(), options.clone());
            async move {
                let p = progress.account(&job.address);
                let report =
                    import::import_account(MailboxClient::new(channel), id, &job.address, &source, &options, &p).await;
                p.finish(&summary(&report));
                report
            }
        })
        .buffer_unordered(args.parallel as usize)
        .collect::<Vec<Report>>();
    let reports = tokio::select! {
        r = run => r,
        _ = tokio::signal::ctrl_c() => {
            progress.finish();
            bail!("interrupted: what was appended is kept, and running the same import again continues it without duplicates");
        }
    };
    progress.finish();
    print_reports(&reports, args.dry_run);
    let failed = reports.iter().filter(|r| r.failed.is_some()).count();
    if failed > 0 {
        bail!("{failed} of {} account(s) not finished; running the import again continues them", reports.len());
    }
    Ok(())
}

fn summary(r: &Report) -> String {
    match &r.failed {
        Some(e) => format!("failed after {} copied: {e}", r.copied),
        None => format!(
            "{} copied ({}), {} already here, {} refused, {} flags updated",
            r.copied,
            crate::admin::human(r.copied_bytes),
            r.duplicates,
            r.refused.len(),
            r.flags_updated
        ),
    }
}

fn print_reports(reports: &[Report], dry_run: bool) {
    println!("{}", if dry_run { "import (dry run: nothing copied)" } else { "import report" });
    for r in reports {
        println!("{}: {}", r.address, summary(r));
        if !r.folders.is_empty() {
            println!(
                "  {:<32} {:>7} {:>7} {:>7} {:>7} {:>7}  CHECK",
                "FOLDER", "SOURCE", "ALREADY", "COPIED", "REFUSED", "HERE"
            );
        }
        for f in &r.folders {
            let check = if dry_run {
                format!("{} to copy", f.source - f.already - f.refused)
            } else if f.checked {
                "ok".to_string()
            } else {
                "MISMATCH".to_string()
            };
            let uids = if f.kept_uids { ", UIDs kept" } else { "" };
            let from = f.from.as_ref().map(|n| format!(", from {n}")).unwrap_or_default();
            println!(
                "  {:<32} {:>7} {:>7} {:>7} {:>7} {:>7}  {check}{uids}{from}",
                f.name, f.source, f.already, f.copied, f.refused, f.here
            );
        }
        for (folder, message, reason) in &r.refused {
            println!("  refused: {folder} {message}: {reason}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_lines_quote_comment_and_header() {
        let rows =
            parse_csv("address,source,user,password\n# a comment\n\nann@x.test, imaps://old:993 ,ann,\"p,\"\"w\"\n")
                .unwrap();
        assert_eq!(rows, [vec!["ann@x.test", "imaps://old:993", "ann", "p,\"w"]]);
        assert!(parse_csv("ann@x.test\n").is_err());
        assert!(parse_csv("a@x,\"open\n").is_err());
        assert!(parse_csv("# nothing\n").is_err());
    }

    #[test]
    fn message_ids_are_read_from_the_header_only() {
        assert_eq!(
            message_id(b"Subject: x\r\nMessage-ID:\r\n <a@b.c>\r\n\r\nMessage-ID: <no@no>\r\n").as_deref(),
            Some("a@b.c")
        );
        assert_eq!(message_id(b"Subject: x\n\nbody\n"), None);
        assert_eq!(message_id(b""), None);
    }
}
