//! The POP3 front-end (RFC 1939, with the extensions of RFC 2449, RFC 2595 and RFC 5034).
//!
//! So far it holds only the [`codec`], which turns bytes into commands and responses into
//! bytes without any I/O. The per-connection session and the server that runs it come later.

pub mod codec;
