//! The SMTP front-end: MX reception (port 25), submission (587 with STARTTLS, 465 with
//! implicit TLS). It is stateless: each connection's state lives in its [`session`], and
//! everything durable goes through the [`backend::Backend`] to the mailbox service.
//!
//! Layers: [`codec`] turns bytes into commands and message data without I/O; [`session`] is
//! the per-connection state machine, one file per command; [`server`] accepts connections,
//! applies connection limits and the PROXY protocol, and runs sessions.

pub mod backend;
pub mod codec;
pub mod config;
pub mod dsn;
pub mod screen;
pub mod server;
pub mod session;
pub mod spam;
pub mod verify;
