//! Recognising "someone else wrote first" in every form NATS reports it.
//!
//! Optimistic concurrency is how replicas share an account's log, the directory's counters and
//! the outbound queue: a write names the sequence (or KV revision) it was built on, and JetStream
//! refuses it when another writer got there first. The writer then catches up and tries again,
//! which is routine and must never reach a mail client as a failure.
//!
//! A single server reports the lost race as API error 10071 ("wrong last sequence: N"). A
//! clustered stream reports it from the stream's leader as 10164 ("wrong last sequence", the
//! constant form), and the client library maps only the first to
//! `PublishErrorKind::WrongLastSequence` (and so to `WrongLastRevision` and `AlreadyExists` in
//! its KV API); the second arrives as `Other`. Both codes mean the same, so this module looks at
//! the server's code wherever the error carries it, and at the library's kinds otherwise.

use async_nats::jetstream::{self, ErrorCode, context::PublishErrorKind, kv};

/// The server's codes for a conditional write whose condition no longer holds: the single-server
/// form (10071), the clustered form (10164), and "wrong last message id" (10070), which the
/// KV API does not use but which means the same for a deduplicated publish.
const LOST_RACE: [ErrorCode; 3] = [
    ErrorCode::STREAM_WRONG_LAST_SEQUENCE,
    ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT,
    ErrorCode::STREAM_WRONG_LAST_MESSAGE_ID,
];

/// Whether `error` (or any error it was caused by) says that the write lost an optimistic
/// concurrency race: the log or the key had moved on from what the write was built on.
pub(super) fn lost_race(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(api) = e.downcast_ref::<jetstream::Error>()
            && LOST_RACE.contains(&api.error_code())
        {
            return true;
        }
        if let Some(p) = e.downcast_ref::<jetstream::context::PublishError>()
            && p.kind() == PublishErrorKind::WrongLastSequence
        {
            return true;
        }
        if let Some(u) = e.downcast_ref::<kv::UpdateError>()
            && u.kind() == kv::UpdateErrorKind::WrongLastRevision
        {
            return true;
        }
        if let Some(c) = e.downcast_ref::<kv::CreateError>()
            && c.kind() == kv::CreateErrorKind::AlreadyExists
        {
            return true;
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An API error as the server sends it in a publish acknowledgement.
    fn api_error(code: u64) -> jetstream::Error {
        serde_json::from_value(serde_json::json!({
            "code": 400,
            "err_code": code,
            "description": "wrong last sequence",
        }))
        .expect("an API error")
    }

    #[test]
    fn both_forms_of_wrong_last_sequence_are_a_lost_race() {
        for code in [10071, 10164] {
            // The clustered form reaches us as kind Other, with the server's error as source.
            let publish = jetstream::context::PublishError::with_source(PublishErrorKind::Other, api_error(code));
            assert!(lost_race(&publish), "publish error code {code}");
            // The KV API wraps the publish error once more.
            let update = kv::UpdateError::with_source(kv::UpdateErrorKind::Other, publish);
            assert!(lost_race(&update), "KV update error code {code}");
            let create = kv::CreateError::with_source(kv::CreateErrorKind::Other, update);
            assert!(lost_race(&create), "KV create error code {code}");
        }
    }

    #[test]
    fn the_library_kinds_are_a_lost_race() {
        assert!(lost_race(&jetstream::context::PublishError::new(PublishErrorKind::WrongLastSequence)));
        assert!(lost_race(&kv::UpdateError::new(kv::UpdateErrorKind::WrongLastRevision)));
        assert!(lost_race(&kv::CreateError::new(kv::CreateErrorKind::AlreadyExists)));
    }

    #[test]
    fn other_failures_are_not() {
        assert!(!lost_race(&jetstream::context::PublishError::new(PublishErrorKind::TimedOut)));
        let other = jetstream::context::PublishError::with_source(PublishErrorKind::Other, api_error(10077));
        assert!(!lost_race(&other), "10077 is 'maximum messages exceeded'");
        assert!(!lost_race(&kv::UpdateError::new(kv::UpdateErrorKind::TimedOut)));
        assert!(!lost_race(&std::io::Error::other("connection reset")));
    }
}
