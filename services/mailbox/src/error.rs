//! The mailbox service's error type, and how each error becomes a gRPC status with a stable
//! reason that front-ends turn into protocol replies.

use tern_proto::v1::ErrorReason;
use tonic::Code;

/// Everything that can go wrong inside the mailbox service.
#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    #[error("{what} not found: {name}")]
    NotFound { what: &'static str, name: String },
    #[error("{what} already exists: {name}")]
    AlreadyExists { what: &'static str, name: String },
    #[error("authentication failed")]
    AuthFailed,
    #[error("too many failed logins; try again later")]
    Throttled,
    #[error("account {address} is suspended")]
    Suspended { address: String },
    #[error("quota exceeded for {address}: {used} + {size} bytes > {limit} bytes")]
    OverQuota { address: String, used: u64, size: u64, limit: u64 },
    #[error("message too large: {size} bytes > {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("not allowed: {0}")]
    NotAllowed(String),
    #[error(transparent)]
    Sieve(#[from] SieveError),
    #[error("metadata store unavailable: {0}")]
    Metadata(#[from] redb::Error),
    #[error("blob store unavailable while {context}: {source}")]
    Blob {
        context: String,
        #[source]
        source: object_store::Error,
    },
    #[error("stored record is corrupt ({what}): {source}")]
    Corrupt {
        what: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    #[error("NATS unavailable while {context}: {detail}")]
    Nats { context: &'static str, detail: String },
    #[error("the storage writer has stopped")]
    WriterGone,
    #[error("commit failed: {0}")]
    Commit(String),
    /// The full-text index cannot be read or written now (searches then read the messages;
    /// this reaches a caller only from the index's administration).
    #[error("full-text index: {0}")]
    Index(String),
    /// A backup or restore could not be written or read (`tern admin backup`, `tern restore`).
    #[error("backup: {0}")]
    Backup(String),
}

pub type Result<T, E = MailboxError> = std::result::Result<T, E>;

/// Why a Sieve script was refused, each with the reason ManageSieve turns into its response
/// code (RFC 5804 section 1.3). A script or name that is not there, or a name taken, are the
/// general `NotFound` and `AlreadyExists`.
#[derive(Debug, thiserror::Error)]
pub enum SieveError {
    /// The script does not pass [`tern_sieve::check`]; its error says where and why, as
    /// "line L, column C: ...", which reaches the client in the status message.
    #[error("invalid Sieve script: {0}")]
    Invalid(#[source] tern_sieve::Error),
    /// The account has as many scripts as it may (QUOTA/MAXSCRIPTS).
    #[error("too many Sieve scripts: at most {limit} per account")]
    TooMany { limit: usize },
    /// One script is larger than a script may be (QUOTA/MAXSIZE).
    #[error("Sieve script too large: {size} bytes > {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    /// The account's scripts together would be larger than they may be (QUOTA).
    #[error("Sieve scripts over quota: {total} bytes in all > {limit} bytes")]
    OverQuota { total: u64, limit: u64 },
    /// The active script cannot be deleted (ACTIVE).
    #[error("Sieve script {name:?} is active: activate another one or none first")]
    Active { name: String },
}

impl SieveError {
    fn reason(&self) -> ErrorReason {
        match self {
            Self::Invalid(_) => ErrorReason::ScriptInvalid,
            Self::TooMany { .. } => ErrorReason::TooMany,
            Self::TooLarge { .. } => ErrorReason::TooLarge,
            Self::OverQuota { .. } => ErrorReason::OverQuota,
            Self::Active { .. } => ErrorReason::Active,
        }
    }
}

impl MailboxError {
    pub fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Invalid { what, detail: detail.into() }
    }

    pub fn not_found(what: &'static str, name: impl Into<String>) -> Self {
        Self::NotFound { what, name: name.into() }
    }

    pub fn exists(what: &'static str, name: impl Into<String>) -> Self {
        Self::AlreadyExists { what, name: name.into() }
    }

    /// A NATS call that failed, counted in `tern_storage_errors_total{backend="nats"}`. Only
    /// failures are built with this: a lost race that is retried or a key that is not there
    /// is answered before an error is made.
    pub fn nats(context: &'static str, detail: impl ToString) -> Self {
        tern_runtime::metrics::Metrics::global().storage_error("nats");
        Self::Nats { context, detail: detail.to_string() }
    }

    /// An object store call that failed, counted in `tern_storage_errors_total` under
    /// `backend` (`s3` or `local`).
    pub fn blob(backend: &'static str, context: impl Into<String>, source: object_store::Error) -> Self {
        tern_runtime::metrics::Metrics::global().storage_error(backend);
        Self::Blob { context: context.into(), source }
    }

    /// The stable reason front-ends map to protocol replies.
    pub fn reason(&self) -> ErrorReason {
        match self {
            Self::Invalid { .. } => ErrorReason::InvalidArgument,
            Self::NotFound { .. } => ErrorReason::NotFound,
            Self::AlreadyExists { .. } => ErrorReason::AlreadyExists,
            Self::AuthFailed => ErrorReason::AuthFailed,
            Self::Throttled => ErrorReason::Throttled,
            Self::Suspended { .. } => ErrorReason::Suspended,
            Self::OverQuota { .. } => ErrorReason::OverQuota,
            Self::TooLarge { .. } => ErrorReason::TooLarge,
            Self::NotAllowed(_) => ErrorReason::NotAllowed,
            Self::Sieve(e) => e.reason(),
            Self::Metadata(_)
            | Self::Nats { .. }
            | Self::Blob { .. }
            | Self::Corrupt { .. }
            | Self::WriterGone
            | Self::Commit(_)
            | Self::Index(_)
            | Self::Backup(_) => ErrorReason::Unavailable,
        }
    }

    /// True when the caller should retry later (SMTP 451, IMAP NO [UNAVAILABLE]).
    pub fn is_temporary(&self) -> bool {
        self.reason() == ErrorReason::Unavailable
    }
}

impl From<MailboxError> for tonic::Status {
    fn from(err: MailboxError) -> Self {
        let code = match err.reason() {
            ErrorReason::InvalidArgument => Code::InvalidArgument,
            ErrorReason::NotFound => Code::NotFound,
            ErrorReason::AlreadyExists => Code::AlreadyExists,
            ErrorReason::AuthFailed => Code::Unauthenticated,
            ErrorReason::Throttled => Code::ResourceExhausted,
            ErrorReason::Suspended | ErrorReason::NotAllowed => Code::PermissionDenied,
            ErrorReason::OverQuota | ErrorReason::TooLarge | ErrorReason::TooMany => Code::ResourceExhausted,
            ErrorReason::ScriptInvalid => Code::InvalidArgument,
            ErrorReason::Modified | ErrorReason::Active => Code::FailedPrecondition,
            ErrorReason::Unavailable | ErrorReason::Unspecified => Code::Unavailable,
        };
        if err.is_temporary() {
            tracing::warn!(error = %err, "storage failure");
        }
        tern_proto::status(code, err.reason(), err.to_string())
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for MailboxError {
            fn from(e: $t) -> Self {
                Self::Metadata(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::DatabaseError,
    redb::SetDurabilityError
);
