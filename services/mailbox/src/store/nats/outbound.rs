//! The outbound queue in NATS: entries in a KV bucket, woken up by tickets on a JetStream work
//! queue.
//!
//! The KV entry is the truth: a claim is a compare-and-set of its revision that writes the lease
//! into it (the rules are in [`crate::store::queue`]), so two workers on two mailbox replicas
//! never hold one entry. The work queue only says *when to look*, so that a claim reads the
//! entries that are due rather than scanning the bucket:
//!
//! - Every entry has one current ticket, a message on the work-queue stream whose sequence the
//!   entry records (`ticket`). The durable pull consumer `relay` hands each ticket to one
//!   claimer at a time.
//! - A claimer that finds its entry due leases it and NAKs the ticket with a delay of the lease,
//!   so the ticket comes back when the lease would run out: if the worker died, the entry is
//!   claimed again then; if it finished, the ticket finds nothing to do and is dropped.
//! - An entry that is not due yet NAKs its ticket until it is.
//! - A retry or an admin's "retry now" publishes a new ticket and records it in the entry; a
//!   ticket the entry no longer records is stale and dropped. So the tickets never pile up.
//!
//! A ticket is published before its entry is written, and one that finds no entry within a
//! minute of its publication waits a little for it rather than dropping it.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, kv, stream};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use prost::Message as _;
use tern_proto::v1::QueuedMessage;

use super::{decode, err, now};
use crate::{
    error::{MailboxError, Result},
    store::queue,
};

/// How long a claimed ticket may stay unacknowledged before JetStream hands it out again. Every
/// ticket is NAKed (with a delay) or acknowledged right after it is looked at, so this only
/// matters when a mailbox replica dies in between.
const TICKET_ACK_WAIT: Duration = Duration::from_secs(30);

/// How long a ticket without an entry waits for the entry its publisher is about to write.
const ORPHAN_TICKET_GRACE: i64 = 60;

/// How many times a claim fetches tickets before it answers with what it has.
const CLAIM_ROUNDS: usize = 4;

#[derive(Clone)]
pub struct Outbound {
    js: jetstream::Context,
    entries: kv::Store,
    subject: String,
    tickets: consumer::Consumer<consumer::pull::Config>,
}

impl Outbound {
    /// Creates (or opens) the work-queue stream and its consumer next to the `entries` bucket.
    pub async fn open(js: jetstream::Context, entries: kv::Store, prefix: &str, replicas: usize) -> Result<Self> {
        let subject = format!("{prefix}.outbound");
        let stream = js
            .get_or_create_stream(stream::Config {
                name: format!("{}_OUTBOUND", prefix.to_ascii_uppercase()),
                subjects: vec![subject.clone()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(err("creating the outbound stream"))?;
        let tickets = stream
            .get_or_create_consumer(
                "relay",
                consumer::pull::Config {
                    durable_name: Some("relay".into()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: TICKET_ACK_WAIT,
                    // Tickets waiting out a NAK delay count as pending; a queue may hold many.
                    max_ack_pending: -1,
                    ..Default::default()
                },
            )
            .await
            .map_err(err("creating the outbound consumer"))?;
        Ok(Self { js, entries, subject, tickets })
    }

    /// Publishes a ticket for `queue_id`, returning its sequence.
    async fn ticket(&self, queue_id: &str) -> Result<u64> {
        let payload = Bytes::from(format!("{queue_id} {}", now()));
        let ack = self
            .js
            .publish(self.subject.clone(), payload)
            .await
            .map_err(err("publishing a queue ticket"))?
            .await
            .map_err(err("publishing a queue ticket"))?;
        Ok(ack.sequence)
    }

    pub async fn enqueue(&self, mut entry: QueuedMessage) -> Result<QueuedMessage> {
        entry.ticket = self.ticket(&entry.queue_id).await?;
        self.entries.create(&entry.queue_id, Bytes::from(entry.encode_to_vec())).await.map_err(err("queueing"))?;
        Ok(entry)
    }

    /// The entry and its revision; deleted entries are absent.
    async fn entry(&self, queue_id: &str) -> Result<Option<(QueuedMessage, u64)>> {
        match self.entries.entry(queue_id).await.map_err(err("reading the queue"))? {
            Some(e) if e.operation == kv::Operation::Put => Ok(Some((decode("queued message", &e.value)?, e.revision))),
            _ => Ok(None),
        }
    }

    pub async fn get(&self, queue_id: &str) -> Result<Option<QueuedMessage>> {
        Ok(self.entry(queue_id).await?.map(|(e, _)| e))
    }

    pub async fn list(&self) -> Result<Vec<QueuedMessage>> {
        let keys: Vec<String> = match self.entries.keys().await {
            Ok(k) => k.try_collect().await.map_err(err("listing the queue"))?,
            Err(e) => return Err(MailboxError::nats("listing the queue", e)),
        };
        let mut out = Vec::new();
        for k in keys {
            if let Some(e) = self.get(&k).await? {
                out.push(e);
            }
        }
        out.sort_by(|a, b| a.queue_id.cmp(&b.queue_id));
        Ok(out)
    }

    pub async fn claim(&self, holder: &str, now: i64, lease_seconds: i64, max: usize) -> Result<Vec<QueuedMessage>> {
        let mut out = Vec::new();
        for _ in 0..CLAIM_ROUNDS {
            if out.len() >= max {
                break;
            }
            let mut batch = self
                .tickets
                .fetch()
                .max_messages(max - out.len())
                .messages()
                .await
                .map_err(err("fetching queue tickets"))?;
            let mut fetched = 0;
            while let Some(ticket) = batch.next().await {
                let ticket = ticket.map_err(|e| MailboxError::nats("fetching queue tickets", e))?;
                fetched += 1;
                let verdict = self.look_at(&ticket, holder, now, lease_seconds).await;
                let ack = match &verdict {
                    Ok(Some(_)) => AckKind::Nak(Some(Duration::from_secs(lease_seconds.max(1) as u64 + 1))),
                    Ok(None) => AckKind::Ack,
                    Err(Wait(seconds)) => AckKind::Nak(Some(Duration::from_secs(*seconds))),
                };
                // A lost acknowledgement only makes the ticket come back after its ack wait.
                if let Err(e) = ticket.ack_with(ack).await {
                    tracing::debug!(error = %e, "acknowledging a queue ticket failed");
                }
                if let Ok(Some(entry)) = verdict {
                    out.push(entry);
                }
            }
            if fetched == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// What to do with a ticket: claim its entry (`Some`), drop it (`None`), or look again later.
    async fn look_at(
        &self,
        ticket: &jetstream::Message,
        holder: &str,
        now: i64,
        lease_seconds: i64,
    ) -> std::result::Result<Option<QueuedMessage>, Wait> {
        let text = String::from_utf8_lossy(&ticket.payload);
        let mut words = text.split(' ');
        let queue_id = words.next().unwrap_or_default().to_string();
        let published: i64 = words.next().and_then(|t| t.parse().ok()).unwrap_or(0);
        let sequence = ticket.info().map(|i| i.stream_sequence).unwrap_or(0);
        let (mut entry, revision) = match self.entry(&queue_id).await {
            Ok(Some(found)) => found,
            Ok(None) if now - published < ORPHAN_TICKET_GRACE => return Err(Wait(5)),
            Ok(None) => return Ok(None),
            Err(e) => {
                tracing::warn!(error = %e, queue_id, "reading a queue entry failed");
                return Err(Wait(5));
            }
        };
        if entry.ticket != sequence {
            return Ok(None);
        }
        if !queue::claimable(&entry, now) {
            return Err(Wait((queue::due_at(&entry) - now).max(1) as u64));
        }
        queue::lease(&mut entry, holder, now, lease_seconds);
        match self.entries.update(&queue_id, Bytes::from(entry.encode_to_vec()), revision).await {
            Ok(_) => Ok(Some(entry)),
            // Someone else changed the entry in between (an admin, a finishing worker): look at
            // it again soon.
            Err(_) => Err(Wait(1)),
        }
    }

    pub async fn finish(&self, queue_id: &str, holder: &str, now: i64, retry: Option<QueuedMessage>) -> Result<()> {
        let (entry, revision) =
            self.entry(queue_id).await?.ok_or_else(|| MailboxError::not_found("queue entry", queue_id))?;
        queue::check_holder(&entry, holder, now)?;
        match retry {
            None => self
                .entries
                .delete_expect_revision(queue_id, Some(revision))
                .await
                .map_err(|e| changed_while_held(queue_id, "deleting a queue entry", e)),
            Some(report) => {
                let mut back = queue::retry(entry, report)?;
                back.ticket = self.ticket(queue_id).await?;
                self.entries
                    .update(queue_id, Bytes::from(back.encode_to_vec()), revision)
                    .await
                    .map(|_| ())
                    .map_err(|e| changed_while_held(queue_id, "updating a queue entry", e))
            }
        }
    }

    pub async fn delete(&self, queue_id: &str) -> Result<()> {
        let (_, revision) =
            self.entry(queue_id).await?.ok_or_else(|| MailboxError::not_found("queue entry", queue_id))?;
        // Its ticket finds nothing when it comes back, and is dropped.
        self.entries.delete_expect_revision(queue_id, Some(revision)).await.map_err(err("deleting a queue entry"))
    }

    pub async fn retry_now(&self, queue_id: &str, now: i64) -> Result<QueuedMessage> {
        let (mut entry, revision) =
            self.entry(queue_id).await?.ok_or_else(|| MailboxError::not_found("queue entry", queue_id))?;
        entry.next_attempt_at = now;
        entry.ticket = self.ticket(queue_id).await?;
        self.entries
            .update(queue_id, Bytes::from(entry.encode_to_vec()), revision)
            .await
            .map_err(err("updating a queue entry"))?;
        Ok(entry)
    }
}

/// The error of a worker's report on an entry: refused when the entry changed since it was
/// read (the lease was lost to an admin or another worker), a temporary failure otherwise.
fn changed_while_held(queue_id: &str, context: &'static str, e: impl std::error::Error + 'static) -> MailboxError {
    if super::conflict::lost_race(&e) {
        MailboxError::NotAllowed(format!("queue entry {queue_id} changed while held: {e}"))
    } else {
        MailboxError::nats(context, e)
    }
}

/// A ticket to be looked at again in this many seconds.
struct Wait(u64);
