//! `cargo xtask bench import`: `tern admin import` as an administrator moving in runs it.
//! 1. From a local Maildir (Dovecot's layout, written here) into `tern dev`'s embedded
//!    backend: messages per second over the whole run, listing and comparing included.
//! 2. From a Dovecot started here on loopback, over IMAP: `tern admin import` into one
//!    account and, beside it, isync's mbsync copying the same Dovecot account into another
//!    account of the same `tern dev` (IMAP to IMAP, the arrival dates kept): messages per
//!    second of each and the ratio, measured in one run.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tern_proto::v1::{CreateAccountRequest, GetUsageRequest, Password, admin_client::AdminClient, password};
use tonic::transport::Channel;

use super::dovecot::{Dovecot, Protocols};

const PASSWORD: &str = "bench";
/// The folders the messages are spread over (a third each).
const FOLDERS: [&str; 3] = ["INBOX", "Archive", "Lists/rust"];
/// The size of each message.
const SIZE: usize = 4096;

/// Writes a Maildir of `messages` messages of 4 KiB over [`FOLDERS`], with UIDs, flags and
/// dates, as Dovecot keeps one.
fn write_maildir(root: &Path, messages: usize) -> anyhow::Result<()> {
    let mut writer = tern_mailfmt::maildir::MaildirWriter::create(root)?;
    for (i, name) in FOLDERS.iter().enumerate() {
        let folder =
            tern_mailfmt::Folder { name: name.to_string(), uidvalidity: Some(1000 + i as u32), subscribed: true };
        let mut f = writer.folder(&folder)?;
        let count = messages / FOLDERS.len() + usize::from(i < messages % FOLDERS.len());
        for n in 1..=count {
            let head = format!(
                "From: Sender {n} <s{n}@example.org>\r\nTo: user@bench.test\r\nSubject: imported {n} of {name}\r\n\
                 Message-ID: <import{i}.{n}@example.org>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n"
            );
            let mut body = head.into_bytes();
            let line = b"A line of an imported message, long enough to look like mail.\r\n";
            while body.len() + line.len() <= SIZE {
                body.extend_from_slice(line);
            }
            let flags: &[String] = if n % 2 == 0 { &[] } else { &[String::from("\\Seen")] };
            f.add(n as u32, flags, 1_700_000_000 + n as i64, &body)?;
        }
        f.finish(count as u32 + 1)?;
    }
    writer.finish()?;
    Ok(())
}

async fn account(admin: &mut AdminClient<Channel>, address: &str) -> anyhow::Result<()> {
    admin
        .create_account(CreateAccountRequest {
            address: address.into(),
            password: Some(Password { value: Some(password::Value::Plain(PASSWORD.into())) }),
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating {address}"))?;
    Ok(())
}

async fn messages_of(admin: &mut AdminClient<Channel>, address: &str) -> anyhow::Result<u64> {
    Ok(admin.get_usage(GetUsageRequest { address: address.into() }).await?.into_inner().messages)
}

/// Runs a command to completion, timed; fails with what it said.
fn timed(command: &mut Command, what: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let out = command.output().with_context(|| format!("cannot run {what}"))?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!("{what} failed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(took)
}

fn rate(messages: u64, took: Duration) -> f64 {
    messages as f64 / took.as_secs_f64().max(1e-9)
}

pub async fn run(messages: usize, imap_messages: usize, connections: usize) -> anyhow::Result<()> {
    super::dovecot::install(Protocols::Imap)?;
    if Command::new("mbsync").arg("--version").output().is_err() {
        bail!("mbsync is missing: apt-get install isync (cargo xtask clients does)");
    }
    println!(
        "import benchmark: {messages} messages of {SIZE} octets from a Maildir into the embedded backend; \
         {imap_messages} from Dovecot over IMAP with tern admin import ({connections} connections) and with mbsync"
    );
    let server = super::Server::start().await?;
    let (channel, _) = super::setup_user(&server).await?;
    let mut admin = AdminClient::new(channel);
    for address in ["maildir@bench.test", "imap@bench.test", "mbsync@bench.test"] {
        account(&mut admin, address).await?;
    }
    let work = tempfile::TempDir::new()?;
    let tern = super::tern_bin();

    // 1. A local Maildir into the embedded backend.
    let maildir = work.path().join("Maildir");
    tokio::task::block_in_place(|| write_maildir(&maildir, messages))?;
    let took = tokio::task::block_in_place(|| {
        timed(
            Command::new(&tern)
                .args(["admin", "--server", &server.grpc, "import", "maildir@bench.test"])
                .arg(format!("maildir:{}", maildir.display())),
            "tern admin import (Maildir)",
        )
    })?;
    let copied = messages_of(&mut admin, "maildir@bench.test").await?;
    if copied != messages as u64 {
        bail!("the Maildir import left {copied} messages of {messages}");
    }
    let maildir_rate = rate(copied, took);
    println!(
        "Maildir -> embedded: {copied} messages in {:.2} s: {maildir_rate:.0} messages/s (target >= 2000)",
        took.as_secs_f64()
    );

    // 2. Over IMAP from Dovecot: tern admin import, and mbsync beside it.
    let dovecot = Dovecot::start(Protocols::Imap, &["src@bench.test"], PASSWORD)?;
    let source = dovecot.maildir("src@bench.test");
    tokio::task::block_in_place(|| write_maildir(&source, imap_messages))?;
    dovecot.own(&source)?;
    // Dovecot indexes a Maildir on first access; a listing does that before either copy.
    let url = format!("imap://{}", dovecot.imap);
    tokio::task::block_in_place(|| {
        timed(
            Command::new(&tern).args(["admin", "--server", &server.grpc, "import", "imap@bench.test", &url]).args([
                "--user",
                "src@bench.test",
                "--password",
                PASSWORD,
                "--dry-run",
            ]),
            "tern admin import --dry-run",
        )
    })?;
    let (dovecot_host, dovecot_port) = dovecot.imap.rsplit_once(':').context("Dovecot's address")?;
    let (tern_host, tern_port) = server.imap.rsplit_once(':').context("Tern's address")?;
    let home = work.path().join("mbsync");
    std::fs::create_dir_all(&home)?;
    let rc = home.join("mbsyncrc");
    std::fs::write(
        &rc,
        format!(
            "IMAPAccount far\nHost {dovecot_host}\nPort {dovecot_port}\nUser src@bench.test\nPass {PASSWORD}\nSSLType None\nAuthMechs LOGIN\n\n\
             IMAPAccount near\nHost {tern_host}\nPort {tern_port}\nUser mbsync@bench.test\nPass {PASSWORD}\nSSLType None\nAuthMechs LOGIN\n\n\
             IMAPStore far\nAccount far\n\nIMAPStore near\nAccount near\n\n\
             Channel copy\nFar :far:\nNear :near:\nPatterns INBOX Archive Lists Lists/*\nCreate Near\nSync Pull\nExpunge None\nCopyArrivalDate yes\nSyncState {}/\n",
            home.display()
        ),
    )?;
    let mbsync = tokio::task::block_in_place(|| {
        timed(Command::new("mbsync").arg("-c").arg(&rc).arg("-a").arg("-q").env("HOME", &home), "mbsync")
    })?;
    let by_mbsync = messages_of(&mut admin, "mbsync@bench.test").await?;
    let import =
        tokio::task::block_in_place(|| {
            timed(
                Command::new(&tern).args(["admin", "--server", &server.grpc, "import", "imap@bench.test", &url]).args(
                    ["--user", "src@bench.test", "--password", PASSWORD, "--connections", &connections.to_string()],
                ),
                "tern admin import (IMAP)",
            )
        })?;
    let by_import = messages_of(&mut admin, "imap@bench.test").await?;
    for (who, n) in [("mbsync", by_mbsync), ("tern admin import", by_import)] {
        if n != imap_messages as u64 {
            bail!("{who} copied {n} messages of {imap_messages}");
        }
    }
    let (import_rate, mbsync_rate) = (rate(by_import, import), rate(by_mbsync, mbsync));
    println!(
        "Dovecot -> Tern over IMAP: tern admin import {by_import} messages in {:.2} s: {import_rate:.0} messages/s; \
         mbsync {by_mbsync} in {:.2} s: {mbsync_rate:.0} messages/s; ratio {:.2} (target >= 0.70)",
        import.as_secs_f64(),
        mbsync.as_secs_f64(),
        import_rate / mbsync_rate
    );
    drop(dovecot);
    drop(server);
    Ok(())
}
