//! Sending a delivery status notification (written with [`tern_mail::dsn`]) to the sender:
//! straight into the mailbox when the sender is local, otherwise onto the outbound queue; from
//! the null sender either way, so that it can never cause another bounce (RFC 5321 section
//! 6.1).
//!
//! The SMTP front-end does the same for its own bounces through its `Backend` trait, which its
//! tests implement in memory; the relay speaks to the mailbox API directly everywhere else, so
//! it does here too, with the three calls this takes, instead of linking the SMTP server.

use std::net::IpAddr;

use bytes::Bytes;
use tern_proto::v1::{
    DeliverEnvelope, DeliverRequest, DeliveryStatus, EnqueueEnvelope, EnqueueRequest, QueuedRecipient, RecipientStatus,
    ResolveRecipientRequest, deliver_request, enqueue_request, mailbox_client::MailboxClient,
};
use tern_runtime::rpc::Channel;

/// Bodies go to the mailbox service in chunks of this size, as the SMTP front-end sends them.
const CHUNK: usize = 256 * 1024;

/// A notification that was not sent.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the mailbox service refused: {}", .0.message())]
    Rpc(#[from] tonic::Status),
    #[error("the report to {to} was not stored: {status:?}")]
    NotStored { to: String, status: DeliveryStatus },
}

/// Sends `report` to `to` from the null sender; `ip` is the client address the mailbox service
/// records for the delivery.
pub async fn send_report(
    client: &MailboxClient<Channel>,
    to: &str,
    report: Bytes,
    ip: IpAddr,
) -> Result<(), ReportError> {
    let resolved =
        client.clone().resolve_recipient(ResolveRecipientRequest { address: to.to_string() }).await?.into_inner();
    if RecipientStatus::try_from(resolved.status).unwrap_or_default() == RecipientStatus::Local {
        let mut requests = vec![DeliverRequest {
            part: Some(deliver_request::Part::Envelope(DeliverEnvelope {
                mail_from: String::new(),
                recipients: vec![to.to_string()],
                remote_ip: ip.to_string(),
                size_hint: report.len() as u64,
                // A report is the server's own mail: never spam.
                junk: vec![],
                spam_percent: None,
            })),
        }];
        requests.extend(
            report.chunks(CHUNK).map(|c| DeliverRequest { part: Some(deliver_request::Part::Chunk(c.to_vec())) }),
        );
        let results = client.clone().deliver(futures::stream::iter(requests)).await?.into_inner().results;
        let status = results.first().map_or(DeliveryStatus::default(), |r| r.status());
        return match status {
            DeliveryStatus::Delivered => Ok(()),
            status => Err(ReportError::NotStored { to: to.to_string(), status }),
        };
    }
    let mut requests = vec![EnqueueRequest {
        part: Some(enqueue_request::Part::Envelope(EnqueueEnvelope {
            mail_from: String::new(),
            recipients: vec![QueuedRecipient { address: to.to_string(), ..Default::default() }],
            size_hint: report.len() as u64,
            ..Default::default()
        })),
    }];
    requests
        .extend(report.chunks(CHUNK).map(|c| EnqueueRequest { part: Some(enqueue_request::Part::Chunk(c.to_vec())) }));
    client.clone().enqueue(futures::stream::iter(requests)).await?;
    Ok(())
}
