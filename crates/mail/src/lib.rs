//! Mail logic that several Tern services share, as plain functions and types over bytes and
//! strings:
//!
//! - [`autoreply`]: the messages Sieve sends for a recipient, the vacation reply (RFC 5230,
//!   marked per RFC 3834) and a `reject`'s disposition notification (RFC 5429).
//! - [`dkim`]: DKIM keys (generating one, reading PEM, the TXT record that publishes it) and the
//!   signer the relay signs outbound mail with. The mailbox service, the operator and the relay
//!   use the keys.
//! - [`dsn`]: delivery status notifications (RFC 3464), written by the SMTP front-end for
//!   local recipients that could not store a message and by the relay for remote refusals,
//!   delays and expiry.
//! - [`dns`]: the resolver (the system's or one given name server) and the TTL cache that
//!   mail-auth consults, shared by the SMTP front-end's SPF/DKIM/DMARC checks and the relay's
//!   MX and MTA-STS lookups.
//! - [`headers`]: removing header fields by name and writing folded ones, byte for byte
//!   otherwise (forged trace and spam headers, the spam filter's Subject).
//! - [`parse`]: a message's IMAP envelope and body structure with byte offsets, computed once
//!   by the mailbox service at delivery and read by the IMAP front-end's tests.
//! - [`text`]: a message's searchable text and the HEADER, BODY and TEXT search keys, shared
//!   by the IMAP front-end's scan and the mailbox service's full-text index.
//!
//! It deliberately knows nothing of sessions (no tokio tasks, connections or protocol state), of
//! gRPC (it
//! uses `tern-proto`'s message types for the envelope and body structure it builds, never a
//! client or a server), or of storage. Whoever needs a key fetched, a report sent or a message
//! stored does that itself and calls in here for the mail part, so this crate stays cheap to
//! depend on and its functions stay testable without a running service.

pub mod autoreply;
pub mod dkim;
pub mod dns;
pub mod dsn;
pub mod headers;
pub mod parse;
pub mod text;
pub mod utf7;

/// Seconds since the Unix epoch, for the Date fields of the messages written here.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}
