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
            ErrorReason::ScriptInvalid => "script-invalid",
            ErrorReason::TooMany => "too-many",
            ErrorReason::Active => "active",
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
            ErrorReason::ScriptInvalid,
            ErrorReason::TooMany,
            ErrorReason::Active,
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

impl v1::AuthenticateRequest {
    /// A front-end's login request: the name and password the client gave, and the client's
    /// address (for the service's throttling per IP).
    pub fn new(username: &str, password: &str, remote_ip: std::net::IpAddr) -> Self {
        Self { username: username.to_string(), password: password.to_string(), remote_ip: remote_ip.to_string() }
    }
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
        for r in [
            ErrorReason::TooLarge,
            ErrorReason::Modified,
            ErrorReason::NotAllowed,
            ErrorReason::ScriptInvalid,
            ErrorReason::TooMany,
            ErrorReason::Active,
        ] {
            assert_eq!(ErrorReason::from_slug(r.slug()), r);
        }
    }
}

/// The methods that only read: a call to one of them that failed in transit may be sent again
/// to another mailbox replica (`tern_runtime::rpc`). Every other method writes, and is sent
/// again only when it was never sent at all.
const READ_ONLY: [&str; 27] = [
    "/tern.mailbox.v1.Mailbox/Authenticate",
    "/tern.mailbox.v1.Mailbox/ResolveRecipient",
    "/tern.mailbox.v1.Mailbox/ListFolders",
    "/tern.mailbox.v1.Mailbox/Select",
    "/tern.mailbox.v1.Mailbox/Status",
    "/tern.mailbox.v1.Mailbox/FetchMessages",
    "/tern.mailbox.v1.Mailbox/FetchBody",
    "/tern.mailbox.v1.Mailbox/SearchText",
    "/tern.mailbox.v1.Mailbox/Changes",
    "/tern.mailbox.v1.Mailbox/Watch",
    "/tern.mailbox.v1.Mailbox/GetQuota",
    "/tern.mailbox.v1.Mailbox/GetMetadata",
    "/tern.mailbox.v1.Mailbox/ListQueue",
    "/tern.mailbox.v1.Mailbox/FetchQueuedBody",
    "/tern.mailbox.v1.Mailbox/GetSigningKey",
    "/tern.mailbox.v1.Mailbox/ListSieveScripts",
    "/tern.mailbox.v1.Mailbox/GetSieveScript",
    "/tern.mailbox.v1.Mailbox/CheckSieveScript",
    "/tern.mailbox.v1.Mailbox/HaveSieveSpace",
    "/tern.mailbox.v1.Admin/GetDomain",
    "/tern.mailbox.v1.Admin/ListDomains",
    "/tern.mailbox.v1.Admin/GetAccount",
    "/tern.mailbox.v1.Admin/ListAccounts",
    "/tern.mailbox.v1.Admin/ListAliases",
    "/tern.mailbox.v1.Admin/GetUsage",
    "/tern.mailbox.v1.Admin/GetQueued",
    "/tern.mailbox.v1.Admin/GetIndexStatus",
];

/// Whether the method at gRPC path `path` (`/tern.mailbox.v1.Mailbox/Select`) only reads.
pub fn read_only(path: &str) -> bool {
    READ_ONLY.contains(&path)
}

#[cfg(test)]
mod read_only_tests {
    /// Every read-only path names a method the services have, so a renamed method cannot
    /// silently lose its retries.
    #[test]
    fn read_only_methods_exist() {
        let protos = [include_str!("../tern/mailbox/v1/mailbox.proto"), include_str!("../tern/mailbox/v1/admin.proto")];
        for path in super::READ_ONLY {
            let method = path.rsplit('/').next().unwrap();
            let declared = format!("rpc {method}(");
            assert!(protos.iter().any(|p| p.contains(&declared)), "{path} is not a method of the API");
        }
        assert!(super::read_only("/tern.mailbox.v1.Mailbox/Select"));
        assert!(!super::read_only("/tern.mailbox.v1.Mailbox/Deliver"));
    }
}
