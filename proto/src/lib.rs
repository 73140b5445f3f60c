//! The mailbox gRPC API, generated from `proto/tern/mailbox/v1/*.proto`.
//!
//! This crate is the contract between the mailbox service and everything that talks to it: the
//! SMTP, IMAP and POP3 front-ends, the operator and `tern admin`. It holds generated code and a
//! few helpers for the error convention, nothing else.

#![allow(missing_debug_implementations)]

pub mod mailbox {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic)]
        tonic::include_proto!("tern.mailbox.v1");
    }
}

pub use mailbox::v1;

use v1::ErrorReason;

/// The metadata key under which every error status carries its [`ErrorReason`].
pub const REASON_KEY: &str = "tern-reason";

impl ErrorReason {
    /// The value sent in the `tern-reason` metadata, e.g. `over-quota`.
    pub fn slug(self) -> &'static str {
        match self {
            ErrorReason::Unspecified => "unspecified",
            ErrorReason::InvalidArgument => "invalid-argument",
            ErrorReason::NotFound => "not-found",
            ErrorReason::AlreadyExists => "already-exists",
            ErrorReason::AuthFailed => "auth-failed",
            ErrorReason::OverQuota => "over-quota",
            ErrorReason::TooLarge => "too-large",
            ErrorReason::Unavailable => "unavailable",
            ErrorReason::Modified => "modified",
            ErrorReason::Suspended => "suspended",
            ErrorReason::NotAllowed => "not-allowed",
            ErrorReason::Throttled => "throttled",
        }
    }

    /// Parses a `tern-reason` value; unknown values map to `Unspecified`.
    pub fn from_slug(slug: &str) -> Self {
        [
            ErrorReason::InvalidArgument,
            ErrorReason::NotFound,
            ErrorReason::AlreadyExists,
            ErrorReason::AuthFailed,
            ErrorReason::OverQuota,
            ErrorReason::TooLarge,
            ErrorReason::Unavailable,
            ErrorReason::Modified,
            ErrorReason::Suspended,
            ErrorReason::NotAllowed,
            ErrorReason::Throttled,
        ]
        .into_iter()
        .find(|r| r.slug() == slug)
        .unwrap_or(ErrorReason::Unspecified)
    }

    /// The reason carried by a status returned from the mailbox service.
    pub fn of(status: &tonic::Status) -> Self {
        status
            .metadata()
            .get(REASON_KEY)
            .and_then(|v| v.to_str().ok())
            .map(Self::from_slug)
            .unwrap_or(ErrorReason::Unspecified)
    }
}

/// Builds an error status with its machine-readable reason attached.
pub fn status(code: tonic::Code, reason: ErrorReason, message: impl Into<String>) -> tonic::Status {
    let mut status = tonic::Status::new(code, message);
    if let Ok(value) = reason.slug().parse() {
        status.metadata_mut().insert(REASON_KEY, value);
    }
    status
}

impl v1::FolderRef {
    pub fn id(id: u64) -> Self {
        Self { by: Some(v1::folder_ref::By::Id(id)) }
    }

    pub fn name(name: impl Into<String>) -> Self {
        Self { by: Some(v1::folder_ref::By::Name(name.into())) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_round_trips_through_status_metadata() {
        let s = status(tonic::Code::ResourceExhausted, ErrorReason::OverQuota, "full");
        assert_eq!(ErrorReason::of(&s), ErrorReason::OverQuota);
        assert_eq!(ErrorReason::of(&tonic::Status::internal("x")), ErrorReason::Unspecified);
        for r in [ErrorReason::TooLarge, ErrorReason::Modified, ErrorReason::NotAllowed] {
            assert_eq!(ErrorReason::from_slug(r.slug()), r);
        }
    }
}
