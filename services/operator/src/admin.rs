//! What the reconcilers need of the mailbox service's Admin API (and of its Mailbox API, for an
//! account's Sieve scripts), as a trait, and its gRPC implementation.

use async_trait::async_trait;
use tern_proto::v1::admin_client::AdminClient;
use tern_proto::v1::mailbox_client::MailboxClient;
use tern_proto::v1::{
    Account, AddAliasRequest, CreateAccountRequest, CreateDomainRequest, DeleteAccountRequest, DeleteDomainRequest,
    DeleteSieveScriptRequest, DkimKey, Domain, ErrorReason, GetAccountRequest, GetDomainRequest, GetSieveScriptRequest,
    GetSieveScriptResponse, GetUsageRequest, Password, PutSieveScriptRequest, RemoveAliasRequest,
    SetActiveSieveScriptRequest, SetDkimKeyRequest, SetPasswordRequest, UpdateAccountRequest, UpdateDomainRequest,
    Usage,
};
use tern_runtime::rpc::Channel;

/// An error of the admin API, sorted by what the reconciler does about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The thing does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// It exists already.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The service refused the request as invalid (a bad address, a hash it cannot read, a
    /// domain that still has accounts): retrying the same request will not help.
    #[error("refused: {0}")]
    Refused(String),
    /// A Sieve script does not pass the service's check; the message says where and why
    /// (`invalid Sieve script: line L, column C: ...`), as the user should see it.
    #[error("{0}")]
    ScriptInvalid(String),
    /// The service could not be reached or could not serve the request now: retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_string();
        match (status.code(), ErrorReason::of(&status)) {
            (_, ErrorReason::ScriptInvalid) => ApiError::ScriptInvalid(message),
            (_, ErrorReason::NotFound) | (tonic::Code::NotFound, _) => ApiError::NotFound(message),
            (_, ErrorReason::AlreadyExists) | (tonic::Code::AlreadyExists, _) => ApiError::AlreadyExists(message),
            (tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition | tonic::Code::PermissionDenied, _) => {
                ApiError::Refused(message)
            }
            (_, ErrorReason::InvalidArgument | ErrorReason::NotAllowed) => ApiError::Refused(message),
            _ => ApiError::Unavailable(format!("{}: {message}", status.code())),
        }
    }
}

/// The admin operations the operator uses. Implemented over gRPC by [`GrpcAdmin`]; tests may
/// implement it to inject failures.
#[async_trait]
pub trait AdminApi: Send + Sync {
    async fn get_domain(&self, name: &str) -> Result<Domain, ApiError>;
    async fn create_domain(&self, request: CreateDomainRequest) -> Result<Domain, ApiError>;
    async fn update_domain(&self, request: UpdateDomainRequest) -> Result<Domain, ApiError>;
    async fn delete_domain(&self, name: &str) -> Result<(), ApiError>;
    /// Sets the key the relay signs the domain's outbound mail with. The request carries the
    /// private key, so implementations must not log it.
    async fn set_dkim_key(&self, request: SetDkimKeyRequest) -> Result<DkimKey, ApiError>;
    async fn get_account(&self, address: &str) -> Result<Account, ApiError>;
    async fn create_account(&self, request: CreateAccountRequest) -> Result<Account, ApiError>;
    async fn update_account(&self, request: UpdateAccountRequest) -> Result<Account, ApiError>;
    async fn delete_account(&self, address: &str) -> Result<(), ApiError>;
    async fn set_password(&self, address: &str, password: Password) -> Result<(), ApiError>;
    async fn add_alias(&self, alias: &str, target: &str) -> Result<(), ApiError>;
    async fn remove_alias(&self, alias: &str) -> Result<(), ApiError>;
    async fn get_usage(&self, address: &str) -> Result<Usage, ApiError>;
    /// The text of an account's Sieve script, and whether it is the active one.
    async fn get_sieve_script(&self, account_id: u64, name: &str) -> Result<GetSieveScriptResponse, ApiError>;
    /// Stores a Sieve script (checked by the service first), making it active if asked.
    async fn put_sieve_script(&self, request: PutSieveScriptRequest) -> Result<(), ApiError>;
    /// Makes the named script the active one, or none with the empty name.
    async fn set_active_sieve_script(&self, account_id: u64, name: &str) -> Result<(), ApiError>;
    /// Deletes a Sieve script; the active one is refused.
    async fn delete_sieve_script(&self, account_id: u64, name: &str) -> Result<(), ApiError>;
}

/// [`AdminApi`] over a gRPC channel to the mailbox service. Cloning shares the channel.
#[derive(Debug, Clone)]
pub struct GrpcAdmin {
    client: AdminClient<Channel>,
    /// The Mailbox API on the same service, for the Sieve scripts, which it names by account id.
    mailbox: MailboxClient<Channel>,
}

impl GrpcAdmin {
    pub fn new(client: AdminClient<Channel>, mailbox: MailboxClient<Channel>) -> Self {
        GrpcAdmin { client, mailbox }
    }

    /// A client of the service `options` name, balanced over its replicas, that connects on
    /// first use and reconnects by itself, so the operator starts while the service is still
    /// down.
    pub fn connect(options: &tern_runtime::rpc::ClientOptions) -> Result<Self, tern_runtime::rpc::RpcError> {
        let channel = tern_runtime::rpc::connect(options)?;
        Ok(GrpcAdmin::new(AdminClient::new(channel.clone()), MailboxClient::new(channel)))
    }
}

#[async_trait]
impl AdminApi for GrpcAdmin {
    async fn get_domain(&self, name: &str) -> Result<Domain, ApiError> {
        let request = GetDomainRequest { name: name.to_string() };
        Ok(self.client.clone().get_domain(request).await?.into_inner())
    }

    async fn create_domain(&self, request: CreateDomainRequest) -> Result<Domain, ApiError> {
        Ok(self.client.clone().create_domain(request).await?.into_inner())
    }

    async fn update_domain(&self, request: UpdateDomainRequest) -> Result<Domain, ApiError> {
        Ok(self.client.clone().update_domain(request).await?.into_inner())
    }

    async fn delete_domain(&self, name: &str) -> Result<(), ApiError> {
        let request = DeleteDomainRequest { name: name.to_string() };
        self.client.clone().delete_domain(request).await?;
        Ok(())
    }

    async fn set_dkim_key(&self, request: SetDkimKeyRequest) -> Result<DkimKey, ApiError> {
        Ok(self.client.clone().set_dkim_key(request).await?.into_inner())
    }

    async fn get_account(&self, address: &str) -> Result<Account, ApiError> {
        let request = GetAccountRequest { address: address.to_string() };
        Ok(self.client.clone().get_account(request).await?.into_inner())
    }

    async fn create_account(&self, request: CreateAccountRequest) -> Result<Account, ApiError> {
        Ok(self.client.clone().create_account(request).await?.into_inner())
    }

    async fn update_account(&self, request: UpdateAccountRequest) -> Result<Account, ApiError> {
        Ok(self.client.clone().update_account(request).await?.into_inner())
    }

    async fn delete_account(&self, address: &str) -> Result<(), ApiError> {
        let request = DeleteAccountRequest { address: address.to_string() };
        self.client.clone().delete_account(request).await?;
        Ok(())
    }

    async fn set_password(&self, address: &str, password: Password) -> Result<(), ApiError> {
        let request = SetPasswordRequest { address: address.to_string(), password: Some(password) };
        self.client.clone().set_password(request).await?;
        Ok(())
    }

    async fn add_alias(&self, alias: &str, target: &str) -> Result<(), ApiError> {
        let request = AddAliasRequest { alias: alias.to_string(), target: target.to_string() };
        self.client.clone().add_alias(request).await?;
        Ok(())
    }

    async fn remove_alias(&self, alias: &str) -> Result<(), ApiError> {
        let request = RemoveAliasRequest { alias: alias.to_string() };
        self.client.clone().remove_alias(request).await?;
        Ok(())
    }

    async fn get_usage(&self, address: &str) -> Result<Usage, ApiError> {
        let request = GetUsageRequest { address: address.to_string() };
        Ok(self.client.clone().get_usage(request).await?.into_inner())
    }

    async fn get_sieve_script(&self, account_id: u64, name: &str) -> Result<GetSieveScriptResponse, ApiError> {
        let request = GetSieveScriptRequest { account_id, name: name.to_string() };
        Ok(self.mailbox.clone().get_sieve_script(request).await?.into_inner())
    }

    async fn put_sieve_script(&self, request: PutSieveScriptRequest) -> Result<(), ApiError> {
        self.mailbox.clone().put_sieve_script(request).await?;
        Ok(())
    }

    async fn set_active_sieve_script(&self, account_id: u64, name: &str) -> Result<(), ApiError> {
        let request = SetActiveSieveScriptRequest { account_id, name: name.to_string() };
        self.mailbox.clone().set_active_sieve_script(request).await?;
        Ok(())
    }

    async fn delete_sieve_script(&self, account_id: u64, name: &str) -> Result<(), ApiError> {
        let request = DeleteSieveScriptRequest { account_id, name: name.to_string() };
        self.mailbox.clone().delete_sieve_script(request).await?;
        Ok(())
    }
}
