//! `tern admin export`: an account's folders written as a Maildir in Dovecot's layout (with
//! `dovecot-uidlist`, so Dovecot shows the same UIDVALIDITY and UIDs, and `dovecot-keywords`)
//! or as mbox files, with flags, keywords and internal dates. It reads through the Mailbox API
//! and changes nothing in the mailbox.
//!
//! A Maildir export is incremental: run again into the same directory, it writes only the
//! messages it has not written before (by UID), and refuses a folder whose UIDVALIDITY changed
//! (its old copy would mix two numberings). An mbox export writes new files only.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use tern_mailfmt::{Folder as FmtFolder, maildir::MaildirWriter, mbox::MboxWriter};
use tern_proto::v1::{
    FetchBodyRequest, FetchMessagesRequest, FolderRef, GetAccountRequest, ListFoldersRequest, MessageMeta,
    SelectRequest, admin_client::AdminClient, mailbox_client::MailboxClient,
};
use tern_runtime::rpc::Channel;

use super::{Format, MboxVariant, progress::Progress};

/// Messages asked for in one FetchMessages, and the bytes of bodies it may carry inline.
const FETCH_MESSAGES: usize = 200;
const INLINE_BYTES: u64 = 8 << 20;

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The mailbox to export.
    address: String,
    /// The directory to write: a Maildir (added to when it exists) or a directory of mbox files
    /// (which must not exist yet).
    target: PathBuf,
    #[arg(long, value_enum, default_value = "maildir")]
    format: Format,
    /// How mbox files quote `From ` lines.
    #[arg(long, value_enum, default_value = "mboxrd")]
    mbox_variant: MboxVariant,
    /// Only these folders (repeatable); all when not given.
    #[arg(long = "folder")]
    folders: Vec<String>,
}

enum Writer {
    Maildir(MaildirWriter),
    Mbox(MboxWriter),
}

/// What the export wrote.
#[derive(Debug, Default)]
struct Totals {
    messages: u64,
    bytes: u64,
    skipped: u64,
    dropped_keywords: u64,
}

pub async fn export(channel: Channel, admin: &mut AdminClient<Channel>, args: ExportArgs) -> anyhow::Result<()> {
    let account = admin
        .get_account(GetAccountRequest { address: args.address.clone() })
        .await
        .map_err(|s| anyhow!("{}: {}", args.address, s.message()))?
        .into_inner();
    let mut mailbox = MailboxClient::new(channel);
    let folders = mailbox
        .list_folders(ListFoldersRequest { account_id: account.id, with_status: true })
        .await
        .map_err(|s| anyhow!("listing folders: {}", s.message()))?
        .into_inner()
        .folders;
    let folders: Vec<_> = folders
        .into_iter()
        .filter(|f| args.folders.is_empty() || args.folders.iter().any(|n| n.eq_ignore_ascii_case(&f.name)))
        .collect();
    if folders.is_empty() {
        bail!("{} has no folder to export by those names", args.address);
    }
    let mut writer = open_writer(&args.target, args.format, args.mbox_variant)?;
    let progress = Progress::new("export", 1);
    let p = progress.account(&args.address);
    let total: u64 = folders.iter().map(|f| u64::from(f.messages)).sum();
    let bytes: u64 = folders.iter().map(|f| f.size).sum();
    p.start(total, bytes);
    let mut totals = Totals::default();
    for f in &folders {
        p.phase(&format!("writing {}", f.name));
        let selected = mailbox
            .select(SelectRequest { account_id: account.id, folder: Some(FolderRef::id(f.id)) })
            .await
            .map_err(|s| anyhow!("opening {}: {}", f.name, s.message()))?
            .into_inner();
        let folder = FmtFolder { name: f.name.clone(), uidvalidity: Some(f.uidvalidity), subscribed: f.subscribed };
        let uids: Vec<u32> = selected.messages.iter().map(|m| m.uid).collect();
        let uidnext = selected.folder.map(|f| f.uidnext).unwrap_or(0);
        match &mut writer {
            Writer::Maildir(w) => {
                let mut fw = w.folder(&folder).with_context(|| format!("folder {}", f.name))?;
                let todo: Vec<u32> = uids.iter().copied().filter(|u| !fw.has(*u)).collect();
                totals.skipped += (uids.len() - todo.len()) as u64;
                p.add((uids.len() - todo.len()) as u64, 0);
                let mut stream = std::pin::pin!(bodies(&mut mailbox, account.id, f.id, &todo));
                while let Some(item) = stream.next().await {
                    let (meta, body) = item?;
                    fw.add(meta.uid, &meta.flags, meta.internal_date, &body)
                        .with_context(|| format!("folder {}", f.name))?;
                    totals.messages += 1;
                    totals.bytes += body.len() as u64;
                    p.add(1, body.len() as u64);
                }
                totals.dropped_keywords += fw.dropped_keywords();
                fw.finish(uidnext).with_context(|| format!("folder {}", f.name))?;
            }
            Writer::Mbox(w) => {
                let mut fw = w.folder(&folder).with_context(|| format!("folder {}", f.name))?;
                let mut stream = std::pin::pin!(bodies(&mut mailbox, account.id, f.id, &uids));
                while let Some(item) = stream.next().await {
                    let (meta, body) = item?;
                    fw.add(&meta.flags, meta.internal_date, &body).with_context(|| format!("folder {}", f.name))?;
                    totals.messages += 1;
                    totals.bytes += body.len() as u64;
                    p.add(1, body.len() as u64);
                }
                fw.finish().with_context(|| format!("folder {}", f.name))?;
            }
        }
    }
    if let Writer::Maildir(w) = writer {
        w.finish().context("writing the subscriptions")?;
    }
    let summary = format!(
        "{} messages ({}) written to {}, {} there from an earlier export{}",
        totals.messages,
        crate::admin::human(totals.bytes),
        args.target.display(),
        totals.skipped,
        if totals.dropped_keywords > 0 {
            format!(", {} keywords left out (Maildir names at most 26 per folder)", totals.dropped_keywords)
        } else {
            String::new()
        }
    );
    p.finish("done");
    progress.finish();
    println!("export of {}: {summary}", args.address);
    Ok(())
}

fn open_writer(target: &Path, format: Format, variant: MboxVariant) -> anyhow::Result<Writer> {
    Ok(match format {
        Format::Maildir => Writer::Maildir(MaildirWriter::create(target)?),
        Format::Mbox => {
            if target.exists() && std::fs::read_dir(target).map(|mut d| d.next().is_some()).unwrap_or(true) {
                bail!("{} exists and is not empty: an mbox export writes new files only", target.display());
            }
            Writer::Mbox(MboxWriter::create(target, variant.into())?)
        }
    })
}

/// The messages of `uids` with their bodies, in UID order: bodies come inline with the
/// metadata while they fit [`INLINE_BYTES`], and are streamed one by one otherwise.
fn bodies<'a>(
    mailbox: &'a mut MailboxClient<Channel>,
    account_id: u64,
    folder_id: u64,
    uids: &'a [u32],
) -> impl futures::Stream<Item = anyhow::Result<(MessageMeta, Vec<u8>)>> + 'a {
    let chunks: Vec<&'a [u32]> = uids.chunks(FETCH_MESSAGES).collect();
    futures::stream::unfold(
        (mailbox, chunks.into_iter(), Vec::<MessageMeta>::new().into_iter()),
        move |(m, mut chunks, mut pending)| async move {
            loop {
                if let Some(meta) = pending.next() {
                    let body = if meta.has_raw {
                        Ok(meta.raw.clone())
                    } else {
                        fetch_body(m, account_id, folder_id, meta.uid).await
                    };
                    let item = body.map(|b| (MessageMeta { raw: Vec::new(), ..meta }, b));
                    return Some((item, (m, chunks, pending)));
                }
                let chunk = chunks.next()?;
                let metas = m
                    .fetch_messages(FetchMessagesRequest {
                        account_id,
                        folder_id,
                        uids: chunk.to_vec(),
                        with_structure: false,
                        inline_body_limit: INLINE_BYTES,
                    })
                    .await;
                match metas {
                    Ok(r) => pending = r.into_inner().messages.into_iter(),
                    Err(s) => {
                        return Some((
                            Err(anyhow!("reading messages: {}", s.message())),
                            (m, Vec::new().into_iter(), pending),
                        ));
                    }
                }
            }
        },
    )
}

async fn fetch_body(
    m: &mut MailboxClient<Channel>,
    account_id: u64,
    folder_id: u64,
    uid: u32,
) -> anyhow::Result<Vec<u8>> {
    let mut stream = m
        .fetch_body(FetchBodyRequest { account_id, folder_id, uid, offset: 0, length: 0 })
        .await
        .map_err(|s| anyhow!("reading message {uid}: {}", s.message()))?
        .into_inner();
    let mut body = Vec::new();
    while let Some(part) = stream.message().await.map_err(|s| anyhow!("reading message {uid}: {}", s.message()))? {
        body.extend_from_slice(&part.chunk);
    }
    Ok(body)
}
