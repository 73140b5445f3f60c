//! Copying one account from a [`Source`] into a Tern mailbox, through the Mailbox API.
//!
//! Each run compares the source with what the mailbox holds and copies the difference, so a
//! run that was interrupted (Ctrl-C, a killed pod) is finished by running it again, and a run
//! after the first copies only what is new:
//! - A folder created by an import takes the source's UIDVALIDITY, and its messages keep their
//!   source UIDs ([`tern_proto::v1::AppendHeader::uid`]). While the two UIDVALIDITYs are equal, a
//!   source message is here when a message of the same UID and size is.
//! - Otherwise (an mbox, a folder that had mail before), a message is here when one with the
//!   same Message-ID, size and internal date is, as imapsync decides.
//!
//! Messages are appended in batches with AppendAll, each batch one commit: an interrupted run
//! leaves whole batches, never half of one. For messages found here the flags are brought in
//! line with the source's. Nothing is ever changed or deleted at the source.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use tern_proto::v1::{
    AppendHeader, AppendRequest, CreateFolderRequest, ErrorReason, FetchMessagesRequest, FlagsMode, Folder, FolderRef,
    ListFoldersRequest, SelectRequest, SpecialUse, StoreFlagsRequest, SubscribeFolderRequest, append_request,
    mailbox_client::MailboxClient,
};
use tern_runtime::rpc::Channel;

use super::{
    progress::AccountProgress,
    source::{Source, SourceFolder, SourceMessage},
};

/// The Mailbox API's limit on one AppendAll.
const MAX_BATCH_MESSAGES: usize = 500;
/// Bodies travel in chunks of this size within an append stream.
const CHUNK: usize = 256 * 1024;
/// How often a batch is retried when the mailbox service is unavailable.
const RETRIES: u32 = 5;

/// How an import runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Messages per append (at most 500) and bytes per append.
    pub batch_messages: usize,
    pub batch_bytes: usize,
    /// Batches read from the source ahead of the one being appended.
    pub read_ahead: usize,
    /// Append past the account's quota.
    pub ignore_quota: bool,
    /// Plan and report without copying anything.
    pub dry_run: bool,
    /// Keep the source's folder names even for its special-use folders.
    pub keep_names: bool,
    /// Put every source folder under this folder (the source's INBOX becomes it).
    pub into: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            batch_messages: 200,
            batch_bytes: 4 << 20,
            read_ahead: 2,
            ignore_quota: false,
            dry_run: false,
            keep_names: false,
            into: None,
        }
    }
}

/// One folder's outcome.
#[derive(Debug, Clone, Default)]
pub struct FolderReport {
    pub name: String,
    /// The source's name, when it differs (a special-use folder given Tern's name).
    pub from: Option<String>,
    /// Messages at the source.
    pub source: u64,
    /// Found here before copying.
    pub already: u64,
    pub copied: u64,
    pub refused: u64,
    /// Messages in the folder here afterwards.
    pub here: u64,
    /// Whether every source message was found here afterwards (or refused, with a reason).
    pub checked: bool,
    /// Whether the folder kept the source's UIDVALIDITY and UIDs.
    pub kept_uids: bool,
}

/// What one account's import did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub address: String,
    pub copied: u64,
    pub copied_bytes: u64,
    /// Found here already (copied by an earlier run, or there before).
    pub duplicates: u64,
    pub flags_updated: u64,
    /// `(folder, message, reason)` of each message not copied.
    pub refused: Vec<(String, String, String)>,
    pub folders: Vec<FolderReport>,
    /// Set when the account could not be finished.
    pub failed: Option<String>,
}

/// A folder's plan: what to copy and whose flags to change.
struct Plan {
    folder: SourceFolder,
    target: Folder,
    kept_uids: bool,
    source_count: u64,
    copy: Vec<SourceMessage>,
    /// Target UID → the source's flags, for messages found here with other flags.
    flags: Vec<(u32, Vec<String>)>,
    already: u64,
}

/// The Message-ID in the comparable form: trimmed, without angle brackets.
pub fn normalize_message_id(raw: &str) -> Option<String> {
    let t = raw.trim();
    let inner = match (t.find('<'), t.rfind('>')) {
        (Some(a), Some(b)) if a < b => &t[a + 1..b],
        _ => t,
    };
    let inner = inner.trim();
    (!inner.is_empty()).then(|| inner.to_string())
}

/// Flags Tern stores: the system flags and valid keywords; \Recent and unknown system flags
/// are dropped (they are session state or another server's extension).
fn storable(flags: &[String]) -> Vec<String> {
    let mut out: Vec<String> = flags.iter().filter_map(|f| tern_mailbox::flags::canonical(f).ok()).collect();
    out.sort();
    out.dedup();
    out
}

fn status_err(what: &str) -> impl Fn(tonic::Status) -> anyhow::Error + '_ {
    move |s| anyhow!("{what}: {}", s.message())
}

/// Imports one account. Errors that stop the account are in `Report::failed`.
pub async fn import_account(
    mut mailbox: MailboxClient<Channel>,
    account_id: u64,
    address: &str,
    source: &Source,
    options: &Options,
    progress: &AccountProgress,
) -> Report {
    let mut report = Report { address: address.to_string(), ..Default::default() };
    if let Err(e) = run(&mut mailbox, account_id, source, options, progress, &mut report).await {
        report.failed = Some(format!("{e:#}"));
    }
    source.close().await;
    report
}

async fn run(
    mailbox: &mut MailboxClient<Channel>,
    account_id: u64,
    source: &Source,
    options: &Options,
    progress: &AccountProgress,
    report: &mut Report,
) -> anyhow::Result<()> {
    progress.phase("listing the source");
    let mut folders = source.folders().await.context("listing the source's folders")?;
    if let Some(into) = &options.into {
        place_under(&mut folders, into);
    } else if !options.keep_names {
        let here = mailbox
            .list_folders(ListFoldersRequest { account_id, with_status: false })
            .await
            .map_err(status_err("listing the mailbox's folders"))?
            .into_inner()
            .folders;
        map_special_use(&mut folders, &here);
    }
    let mut plans = Vec::with_capacity(folders.len());
    for mut folder in folders {
        let messages = source.list(&mut folder).await.with_context(|| format!("listing {}", folder.name))?;
        progress.phase(&format!("comparing {}", folder.name));
        plans.push(plan(mailbox, account_id, source, folder, messages, options).await?);
    }
    let total: u64 = plans.iter().map(|p| p.copy.len() as u64).sum();
    let bytes: u64 = plans.iter().flat_map(|p| p.copy.iter().filter_map(|m| m.size)).sum();
    progress.start(total, bytes);
    for p in plans {
        let mut folder_report = FolderReport {
            name: p.folder.name.clone(),
            from: p.folder.renamed_from.clone(),
            source: p.source_count,
            already: p.already,
            kept_uids: p.kept_uids,
            ..Default::default()
        };
        report.duplicates += p.already;
        if !options.dry_run {
            progress.phase(&format!("copying {}", p.folder.name));
            let (copied, bytes, refused) = copy(mailbox, account_id, source, &p, options, progress).await?;
            report.copied += copied;
            report.copied_bytes += bytes;
            folder_report.copied = copied;
            folder_report.refused += refused.len() as u64;
            report.refused.extend(refused.into_iter().map(|(k, r)| (p.folder.name.clone(), k, r)));
            report.flags_updated += update_flags(mailbox, account_id, &p).await?;
            let after = select(mailbox, account_id, p.target.id).await?;
            folder_report.here = after.len() as u64;
            folder_report.checked =
                folder_report.already + folder_report.copied + folder_report.refused == folder_report.source;
        }
        report.folders.push(folder_report);
    }
    progress.phase("done");
    Ok(())
}

async fn select(
    mailbox: &mut MailboxClient<Channel>,
    account_id: u64,
    folder_id: u64,
) -> anyhow::Result<Vec<tern_proto::v1::MessageSummary>> {
    Ok(mailbox
        .select(SelectRequest { account_id, folder: Some(FolderRef::id(folder_id)) })
        .await
        .map_err(status_err("reading a folder of the mailbox"))?
        .into_inner()
        .messages)
}

/// Makes sure the folder (and its parents) exist here, with the source's UIDVALIDITY when it
/// is new or never held a message, and subscribed as at the source.
async fn ensure_folder(
    mailbox: &mut MailboxClient<Channel>,
    account_id: u64,
    folder: &SourceFolder,
) -> anyhow::Result<Folder> {
    let existing: BTreeMap<String, Folder> = mailbox
        .list_folders(ListFoldersRequest { account_id, with_status: false })
        .await
        .map_err(status_err("listing the mailbox's folders"))?
        .into_inner()
        .folders
        .into_iter()
        .map(|f| (f.name.clone(), f))
        .collect();
    // Parents first: Tern's tree has no holes.
    let levels: Vec<&str> = folder.name.split('/').collect();
    for depth in 1..levels.len() {
        let parent = levels[..depth].join("/");
        if !existing.contains_key(&parent) {
            let req = CreateFolderRequest { account_id, name: parent.clone(), ..Default::default() };
            if let Err(s) = mailbox.create_folder(req).await
                && ErrorReason::of(&s) != ErrorReason::AlreadyExists
            {
                bail!("creating folder {parent}: {}", s.message());
            }
        }
    }
    let uidvalidity = folder.uidvalidity.unwrap_or(0);
    let target = match existing.get(&folder.name) {
        Some(f) if uidvalidity == 0 || f.uidvalidity == uidvalidity || f.uidnext > 1 => f.clone(),
        _ => {
            let req = CreateFolderRequest { account_id, name: folder.name.clone(), uidvalidity, ..Default::default() };
            match mailbox.create_folder(req).await {
                Ok(r) => {
                    r.into_inner().folder.ok_or_else(|| anyhow!("creating {}: no folder in the answer", folder.name))?
                }
                Err(s) if ErrorReason::of(&s) == ErrorReason::AlreadyExists => mailbox
                    .select(SelectRequest { account_id, folder: Some(FolderRef::name(folder.name.clone())) })
                    .await
                    .map_err(status_err("opening a folder"))?
                    .into_inner()
                    .folder
                    .ok_or_else(|| anyhow!("{}: no folder in the answer", folder.name))?,
                Err(s) => bail!("creating folder {}: {}", folder.name, s.message()),
            }
        }
    };
    if folder.subscribed && !target.subscribed {
        mailbox
            .subscribe_folder(SubscribeFolderRequest { account_id, name: target.name.clone(), subscribed: true })
            .await
            .map_err(status_err("subscribing a folder"))?;
    }
    Ok(target)
}

/// The names other servers and mail clients give the special-use folders, by Tern's use.
const KNOWN_NAMES: [(SpecialUse, &[&str]); 5] = [
    (
        SpecialUse::Sent,
        &["Sent", "Sent Items", "Sent Messages", "Sent Mail", "Sent-Mail", "Gesendet", "Gesendete Objekte", "Envoyés"],
    ),
    (SpecialUse::Drafts, &["Drafts", "Draft", "Entwürfe", "Brouillons"]),
    (SpecialUse::Trash, &["Trash", "Deleted Items", "Deleted Messages", "Deleted", "Bin", "Papierkorb", "Corbeille"]),
    (SpecialUse::Junk, &["Junk", "Spam", "Junk E-mail", "Junk Email", "Junk-E-Mail", "Bulk Mail"]),
    (SpecialUse::Archive, &["Archive", "Archives", "Archiv"]),
];

/// The special use of an RFC 6154 attribute.
fn attribute_use(attribute: &str) -> Option<SpecialUse> {
    let a = attribute.trim_start_matches('\\');
    [
        ("Sent", SpecialUse::Sent),
        ("Drafts", SpecialUse::Drafts),
        ("Trash", SpecialUse::Trash),
        ("Junk", SpecialUse::Junk),
        ("Archive", SpecialUse::Archive),
    ]
    .into_iter()
    .find(|(n, _)| n.eq_ignore_ascii_case(a))
    .map(|(_, u)| u)
}

/// Gives the source's special-use folders the names of Tern's folders of the same use, so that
/// a client finds its sent mail in Sent whatever the old server called it (imapsync's
/// `--automap`). A source folder is taken by its RFC 6154 attribute, else by a name other
/// servers use (at the top or under `INBOX/`, as Courier keeps them). Its sub-folders follow
/// it. Nothing is mapped where the source also has a folder of Tern's name: two source folders
/// are never merged into one.
pub fn map_special_use(folders: &mut [SourceFolder], here: &[Folder]) {
    for (use_, names) in KNOWN_NAMES {
        let Some(target) = here.iter().find(|f| f.special_use == use_ as i32) else { continue };
        if folders.iter().any(|f| f.name.eq_ignore_ascii_case(&target.name)) {
            continue;
        }
        let by_attribute = folders.iter().position(|f| f.special_use.as_deref().and_then(attribute_use) == Some(use_));
        let by_name = || {
            folders.iter().position(|f| {
                let base = f.name.strip_prefix("INBOX/").unwrap_or(&f.name);
                f.special_use.is_none() && !base.contains('/') && names.iter().any(|n| n.eq_ignore_ascii_case(base))
            })
        };
        let Some(i) = by_attribute.or_else(by_name) else { continue };
        let from = folders[i].name.clone();
        let children = format!("{from}/");
        for f in folders.iter_mut() {
            if f.name == from || f.name.starts_with(&children) {
                let renamed = format!("{}{}", target.name, &f.name[from.len()..]);
                f.renamed_from = Some(std::mem::replace(&mut f.name, renamed));
            }
        }
    }
}

/// Puts every source folder under `into`: the source's INBOX becomes `into` itself, another
/// folder `into/name` (an old archive kept apart from the mail that arrives now).
pub fn place_under(folders: &mut [SourceFolder], into: &str) {
    let into = into.trim_matches('/');
    for f in folders.iter_mut() {
        let name = if f.name == "INBOX" { into.to_string() } else { format!("{into}/{}", f.name) };
        f.renamed_from = Some(std::mem::replace(&mut f.name, name));
    }
}

/// The comparable identity of a message: Message-ID, size and internal date.
type Identity = (Option<String>, u64, i64);

async fn plan(
    mailbox: &mut MailboxClient<Channel>,
    account_id: u64,
    source: &Source,
    folder: SourceFolder,
    mut messages: Vec<SourceMessage>,
    options: &Options,
) -> anyhow::Result<Plan> {
    let target = if options.dry_run {
        // A dry run creates nothing; a folder that is not here yet has nothing in it.
        let list = mailbox
            .list_folders(ListFoldersRequest { account_id, with_status: false })
            .await
            .map_err(status_err("listing the mailbox's folders"))?
            .into_inner();
        list.folders.into_iter().find(|f| f.name == folder.name).unwrap_or_default()
    } else {
        ensure_folder(mailbox, account_id, &folder).await?
    };
    let kept_uids = folder.uidvalidity.is_some_and(|v| v == target.uidvalidity);
    let here = if target.id == 0 { Vec::new() } else { select(mailbox, account_id, target.id).await? };
    let source_count = messages.len() as u64;
    let mut p = Plan { folder, target, kept_uids, source_count, copy: Vec::new(), flags: Vec::new(), already: 0 };
    if here.is_empty() {
        p.copy = messages;
        return Ok(p);
    }
    // Sizes decide a UID match, and identities the others: local messages are read for them.
    source.identify(&p.folder, &mut messages).await?;
    let by_uid: HashMap<u32, &tern_proto::v1::MessageSummary> = here.iter().map(|m| (m.uid, m)).collect();
    let mut matched_uids = std::collections::HashSet::new();
    let mut unmatched = Vec::new();
    for m in messages {
        let found = kept_uids.then(|| m.uid.and_then(|u| by_uid.get(&u)).filter(|t| Some(t.size) == m.size)).flatten();
        match found {
            Some(t) => {
                matched_uids.insert(t.uid);
                p.already += 1;
                let wanted = storable(&m.flags);
                if storable(&t.flags) != wanted {
                    p.flags.push((t.uid, wanted));
                }
            }
            None => unmatched.push(m),
        }
    }
    if unmatched.is_empty() {
        return Ok(p);
    }
    // The identities of the messages here that no UID matched.
    let rest: Vec<u32> = here.iter().map(|m| m.uid).filter(|u| !matched_uids.contains(u)).collect();
    let mut identities: HashMap<Identity, Vec<(u32, Vec<String>)>> = HashMap::new();
    for chunk in rest.chunks(1000) {
        let metas = mailbox
            .fetch_messages(FetchMessagesRequest {
                account_id,
                folder_id: p.target.id,
                uids: chunk.to_vec(),
                with_structure: true,
                ..Default::default()
            })
            .await
            .map_err(status_err("reading the mailbox's messages"))?
            .into_inner()
            .messages;
        for meta in metas {
            let id = meta.envelope.as_ref().and_then(|e| normalize_message_id(&e.message_id));
            identities.entry((id, meta.size, meta.internal_date)).or_default().push((meta.uid, meta.flags));
        }
    }
    for m in unmatched {
        let identity = (m.message_id.clone(), m.size.unwrap_or(0), m.internal_date);
        match identities.get_mut(&identity).and_then(|v| v.pop()) {
            Some((uid, flags)) => {
                p.already += 1;
                let wanted = storable(&m.flags);
                if storable(&flags) != wanted {
                    p.flags.push((uid, wanted));
                }
            }
            None => p.copy.push(m),
        }
    }
    Ok(p)
}

/// Splits the messages to copy into batches of at most `batch_messages` and `batch_bytes`
/// (by known sizes; a message of unknown size counts as 4 KiB).
fn batches(copy: &[SourceMessage], options: &Options) -> Vec<Vec<SourceMessage>> {
    let max = options.batch_messages.clamp(1, MAX_BATCH_MESSAGES);
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0usize;
    for m in copy {
        let size = m.size.unwrap_or(4096) as usize;
        if !current.is_empty() && (current.len() >= max || bytes + size > options.batch_bytes) {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(m.clone());
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn describe(m: &SourceMessage) -> String {
    match m.uid {
        Some(uid) => format!("UID {uid}"),
        None => format!("message {}", m.key),
    }
}

/// Copies a folder's plan; gives the messages and bytes copied and the refusals.
async fn copy(
    mailbox: &mut MailboxClient<Channel>,
    account_id: u64,
    source: &Source,
    p: &Plan,
    options: &Options,
    progress: &AccountProgress,
) -> anyhow::Result<(u64, u64, Vec<(String, String)>)> {
    let (mut copied, mut bytes) = (0u64, 0u64);
    let mut refused = Vec::new();
    // Reading runs ahead of appending, in order: kept UIDs must arrive ascending.
    let mut reads = futures::stream::iter(batches(&p.copy, options))
        .map(|batch| async move {
            let bodies = source.read(&p.folder, &batch).await;
            (batch, bodies)
        })
        .buffered(options.read_ahead.max(1));
    while let Some((batch, bodies)) = reads.next().await {
        let bodies = bodies?;
        let mut ready = Vec::with_capacity(batch.len());
        for (m, body) in batch.into_iter().zip(bodies) {
            match body {
                Ok(b) if b.is_empty() => refused.push((describe(&m), "empty: not a message".to_string())),
                Ok(b) => ready.push((m, b)),
                Err(reason) => refused.push((describe(&m), reason)),
            }
        }
        let (c, b, r) = append(mailbox, account_id, p, ready, options).await?;
        progress.add(c + r.len() as u64, b);
        copied += c;
        bytes += b;
        refused.extend(r);
    }
    Ok((copied, bytes, refused))
}

fn requests(account_id: u64, p: &Plan, batch: &[(SourceMessage, Vec<u8>)], options: &Options) -> Vec<AppendRequest> {
    let mut out = Vec::new();
    for (m, body) in batch {
        let header = AppendHeader {
            account_id,
            folder: Some(FolderRef::id(p.target.id)),
            flags: storable(&m.flags),
            internal_date: m.internal_date,
            size_hint: body.len() as u64,
            uid: if p.kept_uids { m.uid.unwrap_or(0) } else { 0 },
            ignore_quota: options.ignore_quota,
        };
        out.push(AppendRequest { part: Some(append_request::Part::Header(header)) });
        out.extend(body.chunks(CHUNK).map(|c| AppendRequest { part: Some(append_request::Part::Chunk(c.to_vec())) }));
    }
    out
}

/// Appends a batch in one commit. When the service refuses the batch for one message's sake,
/// the messages are appended one by one so that only that one is refused (and, over the
/// quota, so that what fits is kept before the import stops); when it is unavailable, the
/// batch is retried.
async fn append(
    mailbox: &mut MailboxClient<Channel>,
    account_id: u64,
    p: &Plan,
    batch: Vec<(SourceMessage, Vec<u8>)>,
    options: &Options,
) -> anyhow::Result<(u64, u64, Vec<(String, String)>)> {
    if batch.is_empty() {
        return Ok((0, 0, Vec::new()));
    }
    let bytes: u64 = batch.iter().map(|(_, b)| b.len() as u64).sum();
    let status = match append_with_retries(mailbox, account_id, p, &batch, options).await? {
        Ok(()) => return Ok((batch.len() as u64, bytes, Vec::new())),
        Err(status) => status,
    };
    if batch.len() == 1 {
        return Ok((0, 0, vec![refusal(&batch[0].0, status)?]));
    }
    let (mut copied, mut copied_bytes, mut refused) = (0, 0, Vec::new());
    for one in batch {
        let size = one.1.len() as u64;
        let single = [one];
        match append_with_retries(mailbox, account_id, p, &single, options).await? {
            Ok(()) => {
                copied += 1;
                copied_bytes += size;
            }
            Err(s) => refused.push(refusal(&single[0].0, s)?),
        }
    }
    Ok((copied, copied_bytes, refused))
}

/// The report of a message the service refused; over the quota, the error that stops the
/// account instead (every later message would be refused too).
fn refusal(m: &SourceMessage, status: tonic::Status) -> anyhow::Result<(String, String)> {
    if ErrorReason::of(&status) == ErrorReason::OverQuota {
        bail!("the mailbox is over its quota: {} (raise the quota, or import with --ignore-quota)", status.message());
    }
    Ok((describe(m), status.message().to_string()))
}

/// One AppendAll, retried while the service is unavailable. The outer error stops the import;
/// the inner one is the service's refusal of the batch.
async fn append_with_retries(
    mailbox: &mut MailboxClient<Channel>,
    account_id: u64,
    p: &Plan,
    batch: &[(SourceMessage, Vec<u8>)],
    options: &Options,
) -> anyhow::Result<Result<(), tonic::Status>> {
    let mut attempt = 0;
    loop {
        let reqs = requests(account_id, p, batch, options);
        match mailbox.append_all(futures::stream::iter(reqs)).await {
            Ok(_) => return Ok(Ok(())),
            Err(s) if ErrorReason::of(&s) == ErrorReason::Unavailable || s.code() == tonic::Code::Unavailable => {
                attempt += 1;
                if attempt > RETRIES {
                    bail!("the mailbox service stayed unavailable: {}", s.message());
                }
                tokio::time::sleep(std::time::Duration::from_millis(500 << attempt)).await;
            }
            Err(s) => return Ok(Err(s)),
        }
    }
}

/// Brings the flags of messages found here in line with the source's.
async fn update_flags(mailbox: &mut MailboxClient<Channel>, account_id: u64, p: &Plan) -> anyhow::Result<u64> {
    let mut by_flags: BTreeMap<Vec<String>, Vec<u32>> = BTreeMap::new();
    for (uid, flags) in &p.flags {
        by_flags.entry(flags.clone()).or_default().push(*uid);
    }
    let mut updated = 0;
    for (flags, uids) in by_flags {
        for chunk in uids.chunks(1000) {
            let r = mailbox
                .store_flags(StoreFlagsRequest {
                    account_id,
                    folder_id: p.target.id,
                    uids: chunk.to_vec(),
                    mode: FlagsMode::Replace as i32,
                    flags: flags.clone(),
                    unchanged_since: 0,
                })
                .await
                .map_err(status_err("updating flags"))?
                .into_inner();
            updated += r.updated.len() as u64;
        }
    }
    Ok(updated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_compare_without_brackets_and_space() {
        assert_eq!(normalize_message_id(" <a@b> ").as_deref(), Some("a@b"));
        assert_eq!(normalize_message_id("a@b").as_deref(), Some("a@b"));
        assert_eq!(normalize_message_id("  "), None);
        assert_eq!(normalize_message_id("<>"), None);
    }

    #[test]
    fn flags_are_what_tern_stores() {
        let flags = ["\\Seen", "\\Recent", "$Forwarded", "bad word", "\\seen", "\\X-Custom"].map(String::from);
        assert_eq!(storable(&flags), ["$Forwarded", "\\Seen"]);
    }

    #[test]
    fn special_use_folders_take_terns_names() {
        let folder = |name: &str, special: Option<&str>| SourceFolder::for_test(name, special);
        let here: Vec<Folder> = tern_mailbox::store::DEFAULT_FOLDERS
            .iter()
            .map(|(name, u)| Folder { name: name.to_string(), special_use: *u as i32, ..Default::default() })
            .collect();
        let mut folders = vec![
            folder("INBOX", None),
            folder("Sent Items", None),
            folder("Sent Items/2023", None),
            folder("Gelöscht", Some("\\Trash")),
            folder("INBOX/Spam", None),
            folder("Drafts", None),
            folder("Entwürfe", None),
            folder("Projects/Archive", None),
        ];
        map_special_use(&mut folders, &here);
        let names: Vec<(&str, Option<&str>)> =
            folders.iter().map(|f| (f.name.as_str(), f.renamed_from.as_deref())).collect();
        assert_eq!(
            names,
            [
                ("INBOX", None),
                ("Sent", Some("Sent Items")),
                ("Sent/2023", Some("Sent Items/2023")),
                ("Trash", Some("Gelöscht")),
                ("Junk", Some("INBOX/Spam")),
                // The source has Drafts itself, so Entwürfe stays apart; nested names are not guessed.
                ("Drafts", None),
                ("Entwürfe", None),
                ("Projects/Archive", None),
            ]
        );
    }

    #[test]
    fn folders_go_under_another() {
        let mut folders = vec![SourceFolder::for_test("INBOX", None), SourceFolder::for_test("Sent", Some("\\Sent"))];
        place_under(&mut folders, "Old/2019/");
        let names: Vec<&str> = folders.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["Old/2019", "Old/2019/Sent"]);
    }

    #[test]
    fn batches_respect_both_limits() {
        let m = SourceMessage::for_test;
        let copy: Vec<SourceMessage> = vec![m(100), m(100), m(3000), m(10), m(10)];
        let options = Options { batch_messages: 2, batch_bytes: 1000, ..Default::default() };
        let sizes: Vec<Vec<u64>> =
            batches(&copy, &options).iter().map(|b| b.iter().map(|m| m.size.unwrap()).collect()).collect();
        assert_eq!(sizes, [vec![100, 100], vec![3000], vec![10, 10]]);
    }
}
