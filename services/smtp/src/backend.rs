//! What the SMTP front-end needs from the rest of Tern, as a trait: resolving recipients,
//! checking logins, delivering, and queueing for the relay. [`GrpcBackend`] implements it over
//! the mailbox gRPC API; tests may implement it in memory.

use std::net::IpAddr;

use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use tern_proto::v1::{
    AuthenticateRequest, DeliverEnvelope, DeliverRequest, DeliveryStatus, EnqueueEnvelope, EnqueueRequest, ErrorReason,
    QueuedRecipient, RateLimitRequest, RecipientStatus, ResolveRecipientRequest, deliver_request, enqueue_request,
    mailbox_client::MailboxClient,
};
use tern_runtime::rpc::Channel;

/// Bodies go to the mailbox service in chunks of this size.
const CHUNK: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: u64,
    pub address: String,
    pub aliases: Vec<String>,
}

impl Account {
    /// Whether the account may send as `address` (its own address or one of its aliases).
    pub fn owns(&self, address: &str) -> bool {
        let a = address.to_lowercase();
        a == self.address || self.aliases.contains(&a)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Local { account_id: u64, quota_bytes: u64, used_bytes: u64, spam: crate::spam::RecipientSpam },
    NotLocal,
    UnknownUser,
    Suspended,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    OverQuota,
    Failed(String),
    /// The recipient's Sieve script rejected the message (RFC 5429), for this reason.
    Rejected(String),
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Retry later: storage or the mailbox service is unavailable.
    #[error("temporary failure: {0}")]
    Temporary(String),
    /// The message is larger than the mailbox service accepts.
    #[error("message too large: {0}")]
    TooLarge(String),
    /// Login refused: wrong credentials.
    #[error("authentication failed")]
    AuthFailed,
    /// Too many failed logins from this address or for this account.
    #[error("too many failed logins")]
    Throttled,
    #[error("{0}")]
    Permanent(String),
}

impl From<tonic::Status> for BackendError {
    fn from(s: tonic::Status) -> Self {
        match ErrorReason::of(&s) {
            ErrorReason::TooLarge | ErrorReason::OverQuota => BackendError::TooLarge(s.message().to_string()),
            ErrorReason::AuthFailed | ErrorReason::Suspended => BackendError::AuthFailed,
            ErrorReason::Throttled => BackendError::Throttled,
            ErrorReason::InvalidArgument | ErrorReason::NotFound | ErrorReason::NotAllowed => {
                BackendError::Permanent(s.message().to_string())
            }
            _ => BackendError::Temporary(s.message().to_string()),
        }
    }
}

/// One recipient for the outbound queue, with its DSN parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRecipient {
    pub address: String,
    pub notify: Vec<String>,
    pub orcpt: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Outbound {
    pub mail_from: String,
    pub recipients: Vec<OutboundRecipient>,
    pub account_id: u64,
    pub ret: Option<String>,
    pub envid: Option<String>,
}

#[async_trait::async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    async fn resolve(&self, address: &str) -> Result<Resolved, BackendError>;
    async fn authenticate(&self, user: &str, password: &SecretString, ip: IpAddr) -> Result<Account, BackendError>;
    /// Stores `message` for local recipients, in the junk folder for those in `junk`; answers
    /// per recipient once durable.
    async fn deliver(
        &self,
        mail_from: &str,
        recipients: &[String],
        junk: &[String],
        spam_percent: Option<u32>,
        message: Bytes,
        ip: IpAddr,
    ) -> Result<Vec<Outcome>, BackendError>;
    /// Queues `message` for the relay; returns the queue id once durable.
    async fn enqueue(&self, outbound: Outbound, message: Bytes) -> Result<String, BackendError>;
    /// Counts one use of the rate `key` in the current window of `window_secs`; whether it is
    /// within `limit`, and the seconds until the window ends. Shared by every front-end.
    async fn rate_limit(&self, key: &str, limit: u64, window_secs: u32) -> Result<(bool, u32), BackendError>;
}

/// Sends a delivery status notification (built with [`crate::dsn`]) to `to`: straight into the
/// mailbox when `to` is local, otherwise onto the outbound queue; from the null sender either
/// way, so that it can never cause another bounce (RFC 5321 section 6.1).
pub async fn send_report(backend: &dyn Backend, to: &str, report: Bytes, ip: IpAddr) -> Result<(), BackendError> {
    match backend.resolve(to).await? {
        Resolved::Local { .. } => match backend.deliver("", &[to.to_string()], &[], None, report, ip).await?.first() {
            Some(Outcome::Delivered) => Ok(()),
            Some(other) => Err(BackendError::Permanent(format!("the report to {to} was not stored: {other:?}"))),
            None => Err(BackendError::Permanent(format!("the report to {to} was not stored"))),
        },
        _ => {
            let outbound = Outbound {
                mail_from: String::new(),
                recipients: vec![OutboundRecipient { address: to.to_string(), notify: vec![], orcpt: None }],
                ..Default::default()
            };
            backend.enqueue(outbound, report).await.map(|_| ())
        }
    }
}

/// The mailbox service over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcBackend {
    client: MailboxClient<Channel>,
}

impl GrpcBackend {
    pub fn new(channel: Channel) -> Self {
        Self { client: MailboxClient::new(channel).max_decoding_message_size(64 << 20) }
    }
}

fn chunks<T>(message: &Bytes, wrap: impl Fn(Vec<u8>) -> T) -> Vec<T> {
    message.chunks(CHUNK).map(|c| wrap(c.to_vec())).collect()
}

#[async_trait::async_trait]
impl Backend for GrpcBackend {
    async fn resolve(&self, address: &str) -> Result<Resolved, BackendError> {
        let r = self
            .client
            .clone()
            .resolve_recipient(ResolveRecipientRequest { address: address.to_string() })
            .await
            .map_err(|s| match ErrorReason::of(&s) {
                // An address the mailbox service cannot parse is nobody's.
                ErrorReason::InvalidArgument => BackendError::Permanent(s.message().to_string()),
                _ => BackendError::from(s),
            })?
            .into_inner();
        Ok(match RecipientStatus::try_from(r.status).unwrap_or_default() {
            RecipientStatus::Local => {
                let a = r.account.unwrap_or_default();
                let s = r.spam.unwrap_or_default();
                let spam = crate::spam::RecipientSpam {
                    // An older mailbox service says nothing (INHERIT): scanning on, the default.
                    scan: s.scan() != tern_proto::v1::SpamScan::Off,
                    allow: s.allow_senders,
                    block: s.block_senders,
                };
                Resolved::Local { account_id: a.id, quota_bytes: a.quota_bytes, used_bytes: r.used_bytes, spam }
            }
            RecipientStatus::NotLocal => Resolved::NotLocal,
            RecipientStatus::Suspended => Resolved::Suspended,
            _ => Resolved::UnknownUser,
        })
    }

    async fn authenticate(&self, user: &str, password: &SecretString, ip: IpAddr) -> Result<Account, BackendError> {
        let r = self
            .client
            .clone()
            .authenticate(AuthenticateRequest::new(user, password.expose_secret(), ip))
            .await?
            .into_inner();
        let a = r.account.ok_or(BackendError::AuthFailed)?;
        Ok(Account { id: a.id, address: a.address, aliases: a.aliases })
    }

    async fn deliver(
        &self,
        mail_from: &str,
        recipients: &[String],
        junk: &[String],
        spam_percent: Option<u32>,
        message: Bytes,
        ip: IpAddr,
    ) -> Result<Vec<Outcome>, BackendError> {
        let mut reqs = vec![DeliverRequest {
            part: Some(deliver_request::Part::Envelope(DeliverEnvelope {
                mail_from: mail_from.to_string(),
                recipients: recipients.to_vec(),
                junk: junk.to_vec(),
                remote_ip: ip.to_string(),
                size_hint: message.len() as u64,
                spam_percent,
            })),
        }];
        reqs.extend(chunks(&message, |c| DeliverRequest { part: Some(deliver_request::Part::Chunk(c)) }));
        let resp = self.client.clone().deliver(futures::stream::iter(reqs)).await?.into_inner();
        Ok(resp
            .results
            .into_iter()
            .map(|r| match DeliveryStatus::try_from(r.status).unwrap_or_default() {
                DeliveryStatus::Delivered => Outcome::Delivered,
                DeliveryStatus::OverQuota => Outcome::OverQuota,
                DeliveryStatus::Rejected => Outcome::Rejected(r.reason),
                other => Outcome::Failed(format!("{other:?}")),
            })
            .collect())
    }

    async fn rate_limit(&self, key: &str, limit: u64, window_secs: u32) -> Result<(bool, u32), BackendError> {
        let request = RateLimitRequest { key: key.to_string(), limit, window_secs, cost: 1 };
        let r = self.client.clone().rate_limit(request).await?.into_inner();
        Ok((r.allowed, r.retry_after_secs))
    }

    async fn enqueue(&self, outbound: Outbound, message: Bytes) -> Result<String, BackendError> {
        let mut reqs = vec![EnqueueRequest {
            part: Some(enqueue_request::Part::Envelope(EnqueueEnvelope {
                mail_from: outbound.mail_from,
                recipients: outbound
                    .recipients
                    .into_iter()
                    .map(|r| QueuedRecipient {
                        address: r.address,
                        notify: r.notify,
                        orcpt: r.orcpt.unwrap_or_default(),
                    })
                    .collect(),
                account_id: outbound.account_id,
                ret: outbound.ret.unwrap_or_default(),
                envid: outbound.envid.unwrap_or_default(),
                size_hint: message.len() as u64,
            })),
        }];
        reqs.extend(chunks(&message, |c| EnqueueRequest { part: Some(enqueue_request::Part::Chunk(c)) }));
        Ok(self.client.clone().enqueue(futures::stream::iter(reqs)).await?.into_inner().queue_id)
    }
}
