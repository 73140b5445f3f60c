//! The [`Backend`] over the mailbox service's gRPC API: `Authenticate` and the Sieve script
//! RPCs, their refusals told apart by the `tern-reason` of each status.

use std::net::IpAddr;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use tern_proto::v1::{
    AuthenticateRequest, CheckSieveScriptRequest, DeleteSieveScriptRequest, ErrorReason, GetSieveScriptRequest,
    HaveSieveSpaceRequest, ListSieveScriptsRequest, PutSieveScriptRequest, RenameSieveScriptRequest,
    SetActiveSieveScriptRequest, mailbox_client::MailboxClient,
};
use tern_runtime::rpc::Channel;

use super::{Account, Backend, BackendError, ScriptEntry};

/// The prefix of the mailbox service's message for a script that fails the check; the rest
/// says where ("line L, column C: ..."), which is what the client is told.
const INVALID_PREFIX: &str = "invalid Sieve script: ";

impl From<tonic::Status> for BackendError {
    fn from(s: tonic::Status) -> Self {
        let message = s.message().to_string();
        match ErrorReason::of(&s) {
            ErrorReason::AuthFailed | ErrorReason::Suspended | ErrorReason::NotAllowed => BackendError::AuthFailed,
            ErrorReason::ScriptInvalid => {
                BackendError::Invalid(message.strip_prefix(INVALID_PREFIX).unwrap_or(&message).to_string())
            }
            ErrorReason::NotFound => BackendError::NonExistent(message),
            ErrorReason::AlreadyExists => BackendError::AlreadyExists(message),
            ErrorReason::Active => BackendError::Active(message),
            ErrorReason::TooMany => BackendError::TooMany(message),
            ErrorReason::TooLarge => BackendError::TooLarge(message),
            ErrorReason::OverQuota => BackendError::OverQuota(message),
            ErrorReason::InvalidArgument => BackendError::Refused(message),
            _ => BackendError::Unavailable(message),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcBackend {
    client: MailboxClient<Channel>,
}

impl GrpcBackend {
    pub fn new(channel: Channel) -> Self {
        Self { client: MailboxClient::new(channel) }
    }
}

#[async_trait]
impl Backend for GrpcBackend {
    async fn authenticate(&self, user: &str, password: &SecretString, ip: IpAddr) -> Result<Account, BackendError> {
        let a = self
            .client
            .clone()
            .authenticate(AuthenticateRequest::new(user, password.expose_secret(), ip))
            .await?
            .into_inner()
            .account
            .ok_or(BackendError::AuthFailed)?;
        Ok(Account { id: a.id, address: a.address })
    }

    async fn list(&self, account: u64) -> Result<Vec<ScriptEntry>, BackendError> {
        let r = self.client.clone().list_sieve_scripts(ListSieveScriptsRequest { account_id: account }).await?;
        Ok(r.into_inner().scripts.into_iter().map(|s| ScriptEntry { name: s.name, active: s.active }).collect())
    }

    async fn get(&self, account: u64, name: &str) -> Result<String, BackendError> {
        let r = self
            .client
            .clone()
            .get_sieve_script(GetSieveScriptRequest { account_id: account, name: name.into() })
            .await?;
        Ok(r.into_inner().text)
    }

    async fn put(&self, account: u64, name: &str, script: &str) -> Result<(), BackendError> {
        let request =
            PutSieveScriptRequest { account_id: account, name: name.into(), text: script.into(), activate: false };
        self.client.clone().put_sieve_script(request).await?;
        Ok(())
    }

    async fn check(&self, script: &str) -> Result<(), BackendError> {
        self.client.clone().check_sieve_script(CheckSieveScriptRequest { text: script.into() }).await?;
        Ok(())
    }

    async fn delete(&self, account: u64, name: &str) -> Result<(), BackendError> {
        self.client
            .clone()
            .delete_sieve_script(DeleteSieveScriptRequest { account_id: account, name: name.into() })
            .await?;
        Ok(())
    }

    async fn rename(&self, account: u64, old: &str, new: &str) -> Result<(), BackendError> {
        let request = RenameSieveScriptRequest { account_id: account, from: old.into(), to: new.into() };
        self.client.clone().rename_sieve_script(request).await?;
        Ok(())
    }

    async fn set_active(&self, account: u64, name: &str) -> Result<(), BackendError> {
        self.client
            .clone()
            .set_active_sieve_script(SetActiveSieveScriptRequest { account_id: account, name: name.into() })
            .await?;
        Ok(())
    }

    async fn have_space(&self, account: u64, name: &str, size: u64) -> Result<(), BackendError> {
        self.client
            .clone()
            .have_sieve_space(HaveSieveSpaceRequest { account_id: account, name: name.into(), size })
            .await?;
        Ok(())
    }
}
