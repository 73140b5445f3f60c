//! The mailbox service: the only part of Tern that touches storage.
//!
//! It owns accounts, domains, aliases, credentials, folders, messages, flags and quotas, and
//! serves them over gRPC (`tern.mailbox.v1`) to the front-ends, the operator and `tern admin`.
//! Replicas are stateless: everything they know is in the [`store::MetadataStore`] and the
//! [`blobs::BlobStore`].
//!
//! Layers, from the wire inwards: [`grpc`] translates protobuf to calls on
//! [`service::MailboxService`], which holds the logic that does not depend on a backend
//! (resolution, delivery, login throttling, garbage collection) and calls the
//! [`store::MetadataStore`] trait, implemented by [`store::embedded::EmbeddedStore`].

pub mod address;
pub mod backup;
pub mod blobs;
pub mod error;
pub mod flags;
pub mod folder_name;
pub mod fts;
pub mod grpc;
pub mod metadata;
pub mod password;
pub mod position;
pub mod records;
pub mod server;
pub mod service;
pub mod spam;
pub mod store;

pub use error::{MailboxError, Result};
pub use service::{Limits, MailboxService};
/// Message parsing at delivery lives in `tern-mail`, which the IMAP front-end's tests share;
/// re-exported so that `crate::parse` names it throughout this crate.
pub use tern_mail::parse;
