//! DKIM keys of Domains: the key helpers are `tern_mail::dkim`; this adds where the
//! operator keeps a key in Kubernetes.

pub use tern_mail::dkim::*;

/// The key of the generated Secret holding the private key (PKCS#8 PEM).
pub const PRIVATE_KEY: &str = "private.pem";

/// The key of the generated Secret holding the selector the key was generated for.
pub const SELECTOR_KEY: &str = "selector";
