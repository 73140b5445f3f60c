//! Backup and restore of the NATS backend's streams with JetStream's own snapshot API
//! (`$JS.API.STREAM.SNAPSHOT` and `$JS.API.STREAM.RESTORE`), which keeps everything a stream
//! is, sequences included: the account snapshots name stream sequences, and the restored
//! mail stream must have the same ones.
//!
//! A snapshot is delivered as chunks on an inbox, each acknowledged for the server's flow
//! control and ended by an empty message; a restore sends the chunks back as requests, each
//! answered, and an empty one that the server answers with the stream's info or an error.
//! Each stream's chunks are kept as they come (`<stream>.snapshot`), with its configuration and
//! state (`<stream>.json`), under `nats/` in the backup directory.

use std::{path::Path, time::Duration};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::NatsConnection;
use crate::error::{MailboxError, Result};

/// Where the streams go in a backup directory.
pub const NATS_DIR: &str = "nats";
/// The bytes of one snapshot chunk.
const CHUNK: usize = 128 * 1024;
/// How long the server may pause within a snapshot or restore.
const WAIT: Duration = Duration::from_secs(60);

/// The streams of `prefix` a backup holds, in the order they are copied: the account
/// snapshots before the mail stream whose sequences they name, and what refers to the mail
/// after it. Rate counters and the search index's coordination are left out (see
/// [`crate::backup`]).
pub fn streams(prefix: &str) -> Vec<String> {
    let upper = prefix.to_ascii_uppercase();
    vec![
        format!("KV_{prefix}_snapshots"),
        format!("{upper}_MAIL"),
        format!("KV_{prefix}_directory"),
        format!("KV_{prefix}_parsed"),
        format!("KV_{prefix}_queue"),
        format!("{upper}_OUTBOUND"),
        format!("KV_{prefix}_tracking"),
    ]
}

fn fail(context: impl std::fmt::Display) -> impl FnOnce(String) -> MailboxError {
    move |detail| MailboxError::Backup(format!("{context}: {detail}"))
}

/// The API's error in a response, if it has one.
fn api_error(response: &Value) -> Option<String> {
    response.get("error").map(|e| {
        let description = e.get("description").and_then(Value::as_str).unwrap_or("no description");
        format!("{description} ({})", e.get("err_code").or_else(|| e.get("code")).unwrap_or(&Value::Null))
    })
}

async fn request(client: &async_nats::Client, subject: String, payload: Bytes) -> Result<async_nats::Message> {
    client
        .send_request(subject.clone(), async_nats::Request::new().payload(payload).timeout(Some(WAIT)))
        .await
        .map_err(|e| MailboxError::Backup(format!("{subject}: {e}")))
}

/// Snapshots one stream into `dir`; false when the stream does not exist (a bucket nothing
/// was ever written to).
async fn snapshot(client: &async_nats::Client, stream: &str, dir: &Path) -> Result<bool> {
    let inbox = client.new_inbox();
    let mut chunks = client.subscribe(inbox.clone()).await.map_err(|e| MailboxError::Backup(e.to_string()))?;
    let req = json!({ "deliver_subject": inbox, "no_consumers": true, "chunk_size": CHUNK });
    let answer = request(client, format!("$JS.API.STREAM.SNAPSHOT.{stream}"), req.to_string().into()).await?;
    let answer: Value = serde_json::from_slice(&answer.payload).map_err(|e| fail(stream)(e.to_string()))?;
    if let Some(e) = api_error(&answer) {
        if answer["error"]["code"] == 404 {
            return Ok(false);
        }
        return Err(fail(format!("snapshot of {stream}"))(e));
    }
    let path = dir.join(format!("{stream}.snapshot"));
    let mut file = tokio::fs::File::create(&path).await.map_err(|e| fail(path.display())(e.to_string()))?;
    loop {
        let chunk = tokio::time::timeout(WAIT, chunks.next())
            .await
            .map_err(|_| fail(format!("snapshot of {stream}"))("the server sent nothing for a minute".into()))?
            .ok_or_else(|| fail(format!("snapshot of {stream}"))("the subscription ended".into()))?;
        if chunk.payload.is_empty() {
            // The end. A status other than success says the snapshot failed.
            if let Some(status) = chunk.status.filter(|s| !s.is_success()) {
                let why = chunk.description.unwrap_or_default();
                return Err(fail(format!("snapshot of {stream}"))(format!("{status} {why}")));
            }
            break;
        }
        file.write_all(&chunk.payload).await.map_err(|e| fail(path.display())(e.to_string()))?;
        if let Some(reply) = chunk.reply {
            client.publish(reply, Bytes::new()).await.map_err(|e| fail(stream)(e.to_string()))?;
        }
    }
    file.sync_all().await.map_err(|e| fail(path.display())(e.to_string()))?;
    let meta = json!({ "config": answer["config"], "state": answer["state"] });
    let meta_path = dir.join(format!("{stream}.json"));
    tokio::fs::write(&meta_path, meta.to_string()).await.map_err(|e| fail(meta_path.display())(e.to_string()))?;
    Ok(true)
}

/// Snapshots the prefix's streams into `<dir>/nats`; says which.
pub async fn backup(client: &async_nats::Client, prefix: &str, dir: &Path) -> Result<String> {
    let dir = dir.join(NATS_DIR);
    tokio::fs::create_dir_all(&dir).await.map_err(|e| fail(dir.display())(e.to_string()))?;
    let mut kept = Vec::new();
    for stream in streams(prefix) {
        if snapshot(client, &stream, &dir).await? {
            kept.push(stream);
        }
    }
    let order = dir.join("streams");
    tokio::fs::write(&order, kept.join("\n")).await.map_err(|e| fail(order.display())(e.to_string()))?;
    Ok(format!("NATS streams {}", kept.join(", ")))
}

/// Restores the streams of a backup into a NATS that has none of them.
pub async fn restore(connection: &NatsConnection, prefix: &str, dir: &Path) -> Result<()> {
    let dir = dir.join(NATS_DIR);
    let order = tokio::fs::read_to_string(dir.join("streams")).await.map_err(|e| fail(dir.display())(e.to_string()))?;
    let (client, _) = connection.connect("tern-restore").await?;
    let names: Vec<&str> = order.lines().filter(|l| !l.is_empty()).collect();
    // Every stream must be of this prefix, and none may exist yet: a restore never merges.
    let wanted = streams(prefix);
    for name in &names {
        if !wanted.iter().any(|w| w == name) {
            return Err(MailboxError::Backup(format!("the backup's stream {name} is not of the prefix {prefix}")));
        }
        let info = request(&client, format!("$JS.API.STREAM.INFO.{name}"), Bytes::new()).await?;
        let info: Value = serde_json::from_slice(&info.payload).map_err(|e| fail(name)(e.to_string()))?;
        if api_error(&info).is_none() {
            return Err(MailboxError::Backup(format!(
                "the stream {name} exists: a restore goes into an empty installation (delete the prefix's streams first)"
            )));
        }
    }
    for name in names {
        restore_stream(&client, name, &dir).await?;
    }
    Ok(())
}

async fn restore_stream(client: &async_nats::Client, stream: &str, dir: &Path) -> Result<()> {
    let meta_path = dir.join(format!("{stream}.json"));
    let meta = tokio::fs::read(&meta_path).await.map_err(|e| fail(meta_path.display())(e.to_string()))?;
    let answer = request(client, format!("$JS.API.STREAM.RESTORE.{stream}"), meta.into()).await?;
    let answer: Value = serde_json::from_slice(&answer.payload).map_err(|e| fail(stream)(e.to_string()))?;
    if let Some(e) = api_error(&answer) {
        return Err(fail(format!("restore of {stream}"))(e));
    }
    let deliver = answer["deliver_subject"]
        .as_str()
        .ok_or_else(|| fail(format!("restore of {stream}"))("no deliver_subject in the answer".into()))?
        .to_string();
    let path = dir.join(format!("{stream}.snapshot"));
    let mut file = tokio::fs::File::open(&path).await.map_err(|e| fail(path.display())(e.to_string()))?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let mut filled = 0;
        while filled < CHUNK {
            let n = file.read(&mut buf[filled..]).await.map_err(|e| fail(path.display())(e.to_string()))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        let reply = request(client, deliver.clone(), Bytes::copy_from_slice(&buf[..filled])).await?;
        if let Ok(v) = serde_json::from_slice::<Value>(&reply.payload)
            && let Some(e) = api_error(&v)
        {
            return Err(fail(format!("restore of {stream}"))(e));
        }
    }
    // The empty message ends the restore; the answer is the stream's info or why it failed.
    let done = request(client, deliver, Bytes::new()).await?;
    let done: Value = serde_json::from_slice(&done.payload).map_err(|e| fail(stream)(e.to_string()))?;
    if let Some(e) = api_error(&done) {
        return Err(fail(format!("restore of {stream}"))(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_come_before_the_mail_they_name() {
        let s = streams("tern");
        let pos = |n: &str| s.iter().position(|x| x == n).unwrap();
        assert!(pos("KV_tern_snapshots") < pos("TERN_MAIL"));
        assert!(pos("TERN_MAIL") < pos("KV_tern_parsed"));
        assert!(!s.iter().any(|n| n.contains("rates")));
    }
}
