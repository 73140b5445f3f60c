//! The Kubernetes operator: the `Domain` and `Mailbox` custom resources (`mail.tern.dev`) and
//! their controllers, which converge the mailbox service to them through its Admin gRPC API.
//!
//! - [`crd`]: the resource types, from which `cargo xtask codegen` writes `crds/`.
//! - [`reconcile`]: what a reconcile does, as plain async functions over [`admin::AdminApi`]
//!   with no Kubernetes in them, so they are tested against a real mailbox service.
//! - [`dkim`]: DKIM key generation and the DKIM TXT record, without Kubernetes.
//! - [`controller`]: the kube-runtime wiring: watches, the finalizer, Secrets, ConfigMaps,
//!   Events, requeues with backoff.
//! - [`watch`]: where Secrets (and the ConfigMaps of Sieve scripts) may be read, and the
//!   health of the watches (readiness, the watch error counter).
//!
//! Only this crate knows kube.

pub mod admin;
pub mod controller;
pub mod crd;
pub mod dkim;
pub mod leader;
pub mod quantity;
pub mod reconcile;
pub mod watch;
