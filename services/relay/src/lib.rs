//! The outbound relay: the second SMTP hop, from Tern to the recipients' mail servers.
//!
//! Workers claim entries of the outbound queue from the mailbox service with a lease, deliver
//! each to the servers its domain's MX records name, and report back what is left to do. The
//! relay keeps no state of its own: the queue, its leases and the bodies live behind the mailbox
//! API, so relay workers scale by replicas and a worker that dies loses nothing.
//!
//! - [`client`]: the SMTP client's codec (replies, EHLO capabilities, dot-stuffing), no I/O.
//! - [`route`]: where a domain's mail goes (MX, null MX, A/AAAA fallback).
//! - [`send`]: one SMTP transaction with one server over TCP, with STARTTLS.
//! - [`dkim`]: signing with the sender domain's key, fetched from the mailbox service.
//! - [`mta_sts`]: destination domains' MTA-STS policies (RFC 8461).
//! - [`worker`]: the claim loop, retries with backoff, expiry and bounces (written with
//!   [`tern_mail::dsn`], sent with [`report`]).
//!
//! The mail logic it shares with the other services (DKIM, DSN, the resolver and its caches) is
//! `tern-mail`'s; the relay does not link the SMTP server.

pub mod client;
pub mod config;
pub mod dkim;
pub mod learn;
pub mod mta_sts;
pub mod report;
pub mod route;
pub mod send;
pub mod worker;

pub use config::RelayConfig;
pub use worker::Relay;
