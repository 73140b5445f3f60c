//! What the POP3 front-end asks of the mailbox service, over gRPC: logins, the maildrop lease,
//! the INBOX snapshot, message bodies, and the deletions of the UPDATE state.

use std::net::IpAddr;

use secrecy::{ExposeSecret, SecretString};
use tern_proto::v1::{
    AcquireLeaseRequest, AuthenticateRequest, ErrorReason, ExpungeRequest, FetchBodyRequest, FlagsMode, FolderRef,
    Pop3DeletePolicy, ReleaseLeaseRequest, SelectRequest, StoreFlagsRequest, mailbox_client::MailboxClient,
};
use tern_runtime::rpc::Channel;

/// The keyword that hides a message from POP3 when the account keeps deleted messages.
pub const POP3_DELETED: &str = "$POP3Deleted";
/// The lease name that makes one POP3 session per account at a time.
const LEASE: &str = "pop3";

#[derive(Debug, Clone)]
pub struct Account {
    pub id: u64,
    pub address: String,
    pub keep_deleted: bool,
}

/// One message of the maildrop, numbered by its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub uid: u32,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct Maildrop {
    pub folder_id: u64,
    pub uidvalidity: u32,
    pub messages: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("authentication failed")]
    AuthFailed,
    #[error("the message no longer exists")]
    Gone,
    #[error("temporary failure: {0}")]
    Temporary(String),
}

impl From<tonic::Status> for BackendError {
    fn from(s: tonic::Status) -> Self {
        match ErrorReason::of(&s) {
            ErrorReason::AuthFailed | ErrorReason::Suspended => BackendError::AuthFailed,
            ErrorReason::NotFound => BackendError::Gone,
            _ => BackendError::Temporary(s.message().to_string()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Backend {
    client: MailboxClient<Channel>,
}

impl Backend {
    pub fn new(channel: Channel) -> Self {
        Self { client: MailboxClient::new(channel).max_decoding_message_size(64 << 20) }
    }

    pub async fn authenticate(&self, user: &str, password: &SecretString, ip: IpAddr) -> Result<Account, BackendError> {
        let a = self
            .client
            .clone()
            .authenticate(AuthenticateRequest::new(user, password.expose_secret(), ip))
            .await?
            .into_inner()
            .account
            .ok_or(BackendError::AuthFailed)?;
        Ok(Account { id: a.id, address: a.address, keep_deleted: a.pop3_delete == Pop3DeletePolicy::Keep as i32 })
    }

    /// Takes or renews the maildrop lease; false when another session holds it.
    pub async fn lease(&self, account: u64, holder: &str, ttl_seconds: u32) -> Result<bool, BackendError> {
        let r = self
            .client
            .clone()
            .acquire_lease(AcquireLeaseRequest {
                account_id: account,
                name: LEASE.into(),
                holder: holder.into(),
                ttl_seconds,
            })
            .await?;
        Ok(r.into_inner().granted)
    }

    pub async fn release(&self, account: u64, holder: &str) -> Result<(), BackendError> {
        self.client
            .clone()
            .release_lease(ReleaseLeaseRequest { account_id: account, name: LEASE.into(), holder: holder.into() })
            .await?;
        Ok(())
    }

    /// The INBOX as of now, without messages an earlier session deleted under the keep policy.
    pub async fn maildrop(&self, account: u64) -> Result<Maildrop, BackendError> {
        let r = self
            .client
            .clone()
            .select(SelectRequest { account_id: account, folder: Some(FolderRef::name("INBOX")) })
            .await?
            .into_inner();
        let folder = r.folder.ok_or_else(|| BackendError::Temporary("no INBOX".into()))?;
        let messages = r
            .messages
            .into_iter()
            .filter(|m| !m.flags.iter().any(|f| f == POP3_DELETED))
            .map(|m| Entry { uid: m.uid, size: m.size })
            .collect();
        Ok(Maildrop { folder_id: folder.id, uidvalidity: folder.uidvalidity, messages })
    }

    /// The whole message as stored.
    pub async fn body(&self, account: u64, folder_id: u64, uid: u32) -> Result<Vec<u8>, BackendError> {
        let mut stream = self
            .client
            .clone()
            .fetch_body(FetchBodyRequest { account_id: account, folder_id, uid, offset: 0, length: 0 })
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(part) = stream.message().await? {
            if out.is_empty() {
                out.reserve(part.total_size as usize);
            }
            out.extend_from_slice(&part.chunk);
        }
        Ok(out)
    }

    /// The UPDATE state: removes the deleted messages in one durable change, or hides them from
    /// POP3 when the account keeps them for IMAP.
    pub async fn delete(&self, account: &Account, folder_id: u64, uids: Vec<u32>) -> Result<(), BackendError> {
        if uids.is_empty() {
            return Ok(());
        }
        let mut client = self.client.clone();
        if account.keep_deleted {
            client
                .store_flags(StoreFlagsRequest {
                    account_id: account.id,
                    folder_id,
                    uids,
                    mode: FlagsMode::Add as i32,
                    flags: vec![POP3_DELETED.into()],
                    unchanged_since: 0,
                })
                .await?;
        } else {
            client.expunge(ExpungeRequest { account_id: account.id, folder_id, uids, only_deleted: false }).await?;
        }
        Ok(())
    }
}
