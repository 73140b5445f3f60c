//! The POP3 front-end (RFC 1939, with the extensions of RFC 2449, RFC 2595 and RFC 5034),
//! stateless: each connection's state lives in its [`session`]; the maildrop, its lease and
//! every deletion go through the mailbox service's gRPC API ([`backend`]).
//!
//! Layers: [`codec`] turns bytes into commands and responses into bytes without any I/O;
//! [`session`] is the per-connection state machine; [`server`] runs sessions on listeners.

pub mod backend;
pub mod codec;
pub mod config;
pub mod server;
pub mod session;
