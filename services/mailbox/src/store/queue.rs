//! The outbound queue's rules that both backends share, as pure functions over entries: when an
//! entry is due, whether a worker may claim it, and what a worker's report changes.
//!
//! A claim is a lease (`lease_holder`, `lease_until`) written into the entry itself, in the same
//! atomic step that checks it is free. A worker that dies simply stops renewing nothing: its
//! lease runs out and the entry is due again, so nothing is lost; a live worker that finishes
//! after its lease ran out is refused, so nothing is applied twice.

use tern_proto::v1::QueuedMessage;

use crate::error::{MailboxError, Result};

/// When the entry may next be claimed: its next attempt, or the end of its lease if later.
pub fn due_at(entry: &QueuedMessage) -> i64 {
    if entry.lease_holder.is_empty() { entry.next_attempt_at } else { entry.next_attempt_at.max(entry.lease_until) }
}

/// Whether a worker may claim the entry at `now`.
pub fn claimable(entry: &QueuedMessage, now: i64) -> bool {
    due_at(entry) <= now
}

/// Leases the entry to `holder`.
pub fn lease(entry: &mut QueuedMessage, holder: &str, now: i64, lease_seconds: i64) {
    entry.lease_holder = holder.to_string();
    entry.lease_until = now + lease_seconds.max(1);
}

/// Checks that `holder` still holds the entry at `now`.
pub fn check_holder(entry: &QueuedMessage, holder: &str, now: i64) -> Result<()> {
    if entry.lease_holder != holder || entry.lease_until < now {
        return Err(MailboxError::NotAllowed(format!(
            "queue entry {} is not leased to {holder} (any more)",
            entry.queue_id
        )));
    }
    Ok(())
}

/// The entry as it goes back on the queue after an attempt: what the worker reports changes
/// (recipients left, attempts, history, next attempt, delay warning), nothing else does, and
/// the lease ends.
pub fn retry(mut entry: QueuedMessage, report: QueuedMessage) -> Result<QueuedMessage> {
    if report.recipients.is_empty() {
        return Err(MailboxError::invalid("retry", "no recipients left; finish the entry as done instead"));
    }
    entry.recipients = report.recipients;
    entry.attempts = report.attempts;
    entry.history = report.history;
    entry.next_attempt_at = report.next_attempt_at;
    entry.delay_warned = report.delay_warned;
    entry.lease_holder.clear();
    entry.lease_until = 0;
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_delays_the_entry_and_only_its_holder_may_finish() {
        let mut e = QueuedMessage { queue_id: "1".into(), next_attempt_at: 100, ..Default::default() };
        assert!(claimable(&e, 100));
        assert!(!claimable(&e, 99));
        lease(&mut e, "w1", 100, 30);
        assert!(!claimable(&e, 129));
        assert!(claimable(&e, 130), "an expired lease frees the entry");
        assert!(check_holder(&e, "w1", 120).is_ok());
        assert!(check_holder(&e, "w2", 120).is_err());
        assert!(check_holder(&e, "w1", 131).is_err(), "a lease that ran out is lost");
    }

    #[test]
    fn a_retry_keeps_the_envelope_and_ends_the_lease() {
        let mut e = QueuedMessage { queue_id: "1".into(), mail_from: "a@b".into(), ..Default::default() };
        lease(&mut e, "w1", 0, 30);
        let report = QueuedMessage {
            mail_from: "forged@x".into(),
            recipients: vec![Default::default()],
            attempts: 1,
            next_attempt_at: 60,
            ..Default::default()
        };
        let back = retry(e, report).unwrap();
        assert_eq!(back.mail_from, "a@b");
        assert_eq!(back.next_attempt_at, 60);
        assert!(back.lease_holder.is_empty());
        assert!(retry(back, QueuedMessage::default()).is_err());
    }
}
