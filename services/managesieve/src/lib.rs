//! The ManageSieve front-end (RFC 5804), stateless: each connection's state lives in its
//! [`session`]; an account's scripts, their checks and quotas are the mailbox service's, reached
//! through a [`backend`].
//!
//! Layers: [`codec`] turns bytes into commands and responses into bytes without any I/O;
//! [`session`] is the per-connection state machine, one file per command; [`server`] runs
//! sessions on listeners.

pub mod backend;
pub mod codec;
pub mod config;
pub mod server;
pub mod session;

pub use codec::fuzz_command;
