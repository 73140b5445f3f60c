//! How a mailbox replica reaches NATS: which servers, with which credentials, over which TLS.
//!
//! A cluster is named by several server URLs (a comma-separated list, as every NATS client
//! takes it); the client connects to whichever answers, learns the rest of the cluster from it,
//! and fails over between them, so a replica starts and keeps working while some servers are
//! down. At most one way to authenticate is chosen (user and password, a token, an NKey seed or
//! a `.creds` file), since the server accepts one per connection. TLS is used when the URLs say
//! `tls://`, when a CA or a client certificate is given, or when it is required explicitly.

use std::{path::PathBuf, time::Duration};

use secrecy::{ExposeSecret, SecretString};

use crate::error::{MailboxError, Result};

/// Where NATS is and how to authenticate to it.
#[derive(Debug, Clone, Default)]
pub struct NatsConnection {
    /// `nats://host:port` or `tls://host:port` URLs of one cluster's servers; any of them will do.
    pub servers: Vec<String>,
    /// User name, with `password`.
    pub user: Option<String>,
    pub password: Option<SecretString>,
    /// A token the server's `authorization { token }` expects.
    pub token: Option<SecretString>,
    /// A file holding an NKey seed (`SU...`).
    pub nkey_seed_file: Option<PathBuf>,
    /// A `.creds` file: a user JWT and its NKey seed, as `nsc` writes them.
    pub credentials_file: Option<PathBuf>,
    /// PEM file of the CA that signed the servers' certificates (instead of the system roots).
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for servers that verify clients (`verify: true`).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Refuse to talk to a server without TLS.
    pub tls_required: bool,
}

impl NatsConnection {
    /// The servers of `urls`, a comma-separated list (`nats://a:4222,nats://b:4222`), with no
    /// credentials.
    pub fn from_urls(urls: &str) -> Result<Self> {
        let servers = split_urls(urls);
        let connection = Self { servers, ..Self::default() };
        connection.check()?;
        Ok(connection)
    }

    /// Checks what can be checked before connecting: at least one server, every URL parses,
    /// at most one way to authenticate, a client certificate comes with its key.
    pub fn check(&self) -> Result<()> {
        let invalid = |detail: String| MailboxError::invalid("NATS connection", detail);
        if self.servers.is_empty() {
            return Err(invalid("no NATS server URL given".into()));
        }
        for url in &self.servers {
            url.parse::<async_nats::ServerAddr>().map_err(|e| invalid(format!("{url:?} is not a NATS URL: {e}")))?;
        }
        let methods = [
            ("user and password", self.user.is_some() || self.password.is_some()),
            ("token", self.token.is_some()),
            ("NKey seed file", self.nkey_seed_file.is_some()),
            ("credentials file", self.credentials_file.is_some()),
        ];
        let chosen: Vec<&str> = methods.iter().filter(|(_, set)| *set).map(|(name, _)| *name).collect();
        if chosen.len() > 1 {
            return Err(invalid(format!("choose one way to authenticate, not {}", chosen.join(" and "))));
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(invalid("a NATS user needs a password, and a password a user".into()));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(invalid("a TLS client certificate needs its key, and a key its certificate".into()));
        }
        Ok(())
    }

    /// Whether the connection uses TLS.
    pub fn uses_tls(&self) -> bool {
        self.tls_required
            || self.tls_ca_file.is_some()
            || self.tls_cert_file.is_some()
            || self.servers.iter().any(|u| u.starts_with("tls://"))
    }

    /// The servers as one line for logs (credentials in URLs are not printed).
    pub fn display_servers(&self) -> String {
        self.servers.iter().map(|u| strip_userinfo(u)).collect::<Vec<_>>().join(",")
    }

    /// Connects, named `name` in the server's connection list. With several servers, the client
    /// tries them in random order and keeps trying in the background when none answers yet, so
    /// a replica starts while part of the cluster is down.
    ///
    /// Also returns how many times the client has connected: the count goes up on every
    /// reconnect, so followers of the server's state (account feeds) can start again at once
    /// instead of waiting for their consumers to notice missed heartbeats.
    pub async fn connect(&self, name: &str) -> Result<(async_nats::Client, tokio::sync::watch::Receiver<u64>)> {
        self.check()?;
        let (connections, connected) = tokio::sync::watch::channel(0u64);
        let connections = std::sync::Arc::new(connections);
        let failed = |detail: String| MailboxError::nats("connecting", detail);
        let mut options = match &self.credentials_file {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| failed(format!("cannot read the credentials file {}: {e}", path.display())))?,
            None => async_nats::ConnectOptions::new(),
        };
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.expose_secret().to_string());
        }
        if let Some(token) = &self.token {
            options = options.token(token.expose_secret().to_string());
        }
        if let Some(path) = &self.nkey_seed_file {
            let seed = std::fs::read_to_string(path)
                .map_err(|e| failed(format!("cannot read the NKey seed file {}: {e}", path.display())))?;
            options = options.nkey(seed.trim().to_string());
        }
        if let Some(ca) = &self.tls_ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert_file, &self.tls_key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.uses_tls() {
            options = options.require_tls(true);
        }
        options
            .name(name)
            // What the client meets while (re)connecting reaches the log, so a wrong password
            // or certificate says so instead of ending in a timeout.
            .event_callback(move |event| {
                let connections = connections.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("connected to NATS");
                            connections.send_modify(|n| *n += 1);
                        }
                        async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS; reconnecting"),
                        other => tracing::warn!(event = %other, "NATS connection"),
                    }
                }
            })
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(5)))
            .connect(self.servers.as_slice())
            .await
            .map(|client| (client, connected))
            .map_err(|e| failed(e.to_string()))
    }
}

/// The URLs of a comma-separated list, trimmed, without empty items.
pub fn split_urls(urls: &str) -> Vec<String> {
    urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(String::from).collect()
}

/// `nats://user:pass@host:4222` without `user:pass@`.
fn strip_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_is_a_comma_separated_list() {
        let c = NatsConnection::from_urls(" nats://a:4222, nats://b:4222 ,,tls://c:4222").unwrap();
        assert_eq!(c.servers, ["nats://a:4222", "nats://b:4222", "tls://c:4222"]);
        assert!(c.uses_tls(), "a tls:// server means TLS");
        assert!(NatsConnection::from_urls("").is_err());
        assert!(NatsConnection::from_urls("nats://a:notaport").is_err());
    }

    #[test]
    fn one_way_to_authenticate() {
        let mut c = NatsConnection::from_urls("nats://a:4222").unwrap();
        c.token = Some("t".into());
        assert!(c.check().is_ok());
        c.user = Some("u".into());
        c.password = Some("p".into());
        let e = c.check().unwrap_err().to_string();
        assert!(e.contains("user and password and token"), "{e}");
        c.token = None;
        c.password = None;
        assert!(c.check().is_err(), "a user without a password");
        c.password = Some("p".into());
        c.tls_cert_file = Some("cert.pem".into());
        assert!(c.check().is_err(), "a certificate without a key");
    }

    #[test]
    fn credentials_in_urls_are_not_displayed() {
        let c = NatsConnection::from_urls("nats://u:secret@a:4222,nats://b:4222").unwrap();
        assert_eq!(c.display_servers(), "nats://a:4222,nats://b:4222");
    }
}
