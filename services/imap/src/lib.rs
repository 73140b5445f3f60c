//! The IMAP front-end (IMAP4rev2, RFC 9051, with IMAP4rev1 compatibility), stateless: each
//! connection's state lives in its [`session`]; folders, messages and flags are the mailbox
//! service's, reached over gRPC, and other sessions' changes arrive as events.
//!
//! Parsing and encoding use imap-codec, whose decoder returns "incomplete" and "literal
//! announced" as values, so the session can answer literals and ask for more bytes without the
//! codec knowing anything of I/O. [`fetch`] and [`search`] are pure functions over stored
//! metadata and message bytes.

pub mod config;
pub mod fetch;
pub mod hub;
pub mod search;
pub mod server;
pub mod session;
pub mod utf7;
