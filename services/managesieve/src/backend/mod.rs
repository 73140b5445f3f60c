//! What the ManageSieve front-end asks of the mailbox service: logins and an account's
//! scripts. [`Backend`] is the session's view of it; the gRPC implementation is in [`grpc`].
//! The front-end knows nothing of how scripts are stored or checked: a syntax error, a quota,
//! a name taken, all come back as a [`BackendError`] that the session turns into a response.

pub mod grpc;

use std::net::IpAddr;

use async_trait::async_trait;
use secrecy::SecretString;

/// A logged-in account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: u64,
    pub address: String,
}

/// One of an account's scripts, as LISTSCRIPTS shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptEntry {
    pub name: String,
    pub active: bool,
}

/// Why the mailbox service refused or failed, each with the response code it becomes. The
/// texts are the service's own, told to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("authentication failed")]
    AuthFailed,
    /// The script does not pass the check; the text says where ("line L, column C: ...").
    #[error("{0}")]
    Invalid(String),
    /// No script of that name (NONEXISTENT).
    #[error("{0}")]
    NonExistent(String),
    /// The name is taken (ALREADYEXISTS).
    #[error("{0}")]
    AlreadyExists(String),
    /// The script is the active one (ACTIVE).
    #[error("{0}")]
    Active(String),
    /// The account has as many scripts as it may (QUOTA/MAXSCRIPTS).
    #[error("{0}")]
    TooMany(String),
    /// The script is larger than one may be (QUOTA/MAXSIZE).
    #[error("{0}")]
    TooLarge(String),
    /// The account's scripts together would be over quota (QUOTA).
    #[error("{0}")]
    OverQuota(String),
    /// The request itself is refused (a name RFC 5804 does not allow).
    #[error("{0}")]
    Refused(String),
    /// The mailbox service is unavailable or failed (TRYLATER).
    #[error("temporary failure: {0}")]
    Unavailable(String),
}

/// The mailbox service as the session sees it. Every call names the account it is for.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    async fn authenticate(&self, user: &str, password: &SecretString, ip: IpAddr) -> Result<Account, BackendError>;
    /// The account's scripts, sorted by name.
    async fn list(&self, account: u64) -> Result<Vec<ScriptEntry>, BackendError>;
    async fn get(&self, account: u64, name: &str) -> Result<String, BackendError>;
    /// Checks and stores a script, replacing one of the same name.
    async fn put(&self, account: u64, name: &str, script: &str) -> Result<(), BackendError>;
    /// Checks a script without storing it.
    async fn check(&self, script: &str) -> Result<(), BackendError>;
    async fn delete(&self, account: u64, name: &str) -> Result<(), BackendError>;
    async fn rename(&self, account: u64, old: &str, new: &str) -> Result<(), BackendError>;
    /// Makes `name` the active script, or none when it is empty.
    async fn set_active(&self, account: u64, name: &str) -> Result<(), BackendError>;
    /// Whether a script of `size` octets could be stored under `name`.
    async fn have_space(&self, account: u64, name: &str, size: u64) -> Result<(), BackendError>;
}
