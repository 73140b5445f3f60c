//! Mail stores on disk, read and written: Maildir in Dovecot's layout and mbox. `tern admin
//! import` reads them and `tern admin export` writes them.
//!
//! This crate knows files and formats only: nothing of tokio, gRPC or Tern's storage. Messages
//! are handed out and taken in as IMAP sees them: lines end in CRLF, folder names are UTF-8
//! with `/` between levels, flags are IMAP flags (`\Seen`, `$Forwarded`, keywords).

pub mod maildir;
pub mod mbox;
mod util;

/// One message of a source folder, as listed before its body is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The UID the source gave it (a Maildir's `dovecot-uidlist`), when it has one.
    pub uid: Option<u32>,
    /// IMAP system flags and keywords, e.g. `\Seen`, `\Answered`, `$Forwarded`, `$Junk`.
    pub flags: Vec<String>,
    /// The internal date: seconds since the Unix epoch.
    pub internal_date: i64,
    /// The size in CRLF form (as IMAP's RFC822.SIZE), when known without reading the body
    /// (Dovecot's `W=`); otherwise `None`.
    pub size: Option<u64>,
    /// Where the body is: a file (Maildir) or a byte range of the mbox file.
    pub location: Location,
}

/// Where a listed message's body is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    File(std::path::PathBuf),
    /// Bytes `start..end` of the mbox file `path`: the message after its From_ line, up to the
    /// next From_ line. The path is here because a directory of mbox files has many.
    Range {
        path: std::path::PathBuf,
        start: u64,
        end: u64,
    },
}

/// One folder of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folder {
    /// The IMAP name, UTF-8, `/` between levels; `INBOX` for the inbox.
    pub name: String,
    /// The source's UIDVALIDITY, when it has one (`dovecot-uidlist`).
    pub uidvalidity: Option<u32>,
    /// Whether the source subscribes it.
    pub subscribed: bool,
}

/// What went wrong reading or writing a mail store, with the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Format { path: std::path::PathBuf, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
