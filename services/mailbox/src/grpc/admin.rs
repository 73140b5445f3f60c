//! The `tern.mailbox.v1.Admin` service: domains, accounts, aliases, passwords and quotas, for
//! `tern admin` and the Kubernetes operator. Every input is validated here, so the store only
//! ever sees normalised addresses and hashed passwords.

use secrecy::SecretString;
use tern_proto::v1::{
    self as pb, Account, AddAliasRequest, AddAliasResponse, Alias, CreateAccountRequest, CreateDomainRequest,
    DeleteAccountRequest, DeleteAccountResponse, DeleteDomainRequest, DeleteDomainResponse, Domain, GetAccountRequest,
    GetDomainRequest, GetUsageRequest, ListAccountsRequest, ListAccountsResponse, ListAliasesRequest,
    ListAliasesResponse, ListDomainsRequest, ListDomainsResponse, Password, RemoveAliasRequest, RemoveAliasResponse,
    SetPasswordRequest, SetPasswordResponse, UpdateAccountRequest, UpdateDomainRequest, Usage, admin_server::Admin,
    password,
};
use tonic::{Request, Response, Status};

use super::{account_pb, usage_pb};
use crate::{
    address::{Address, normalize_domain},
    error::{MailboxError, Result},
    password as pw,
    records::{AccountRecord, DomainRecord},
    service::MailboxService,
    store::AccountChanges,
};

#[derive(Debug, Clone)]
pub struct AdminApi {
    service: MailboxService,
}

impl AdminApi {
    pub fn new(service: MailboxService) -> Self {
        Self { service }
    }

    async fn password_hash(&self, password: Option<Password>) -> Result<String> {
        match password.and_then(|p| p.value) {
            Some(password::Value::Plain(plain)) => self.service.passwords.hash(&SecretString::from(plain)).await,
            Some(password::Value::Hash(hash)) => pw::check_hash(&hash),
            None => Err(MailboxError::invalid("password", "none given")),
        }
    }

    async fn account_by(&self, address: &str) -> Result<AccountRecord> {
        let address = Address::parse(address)?.to_string();
        self.service
            .store
            .account_by_address(&address)
            .await?
            .ok_or_else(|| MailboxError::not_found("mailbox", address))
    }

    async fn domain_pb(&self, d: DomainRecord) -> Result<Domain> {
        let accounts = self.service.store.list_accounts(Some(&d.name)).await?.len() as u64;
        Ok(domain_pb(d, accounts))
    }
}

/// A domain as the admin API shows it: the DKIM selector and public record, never the key.
fn domain_pb(d: DomainRecord, accounts: u64) -> Domain {
    let dkim_txt = if d.dkim_private_key.is_empty() {
        String::new()
    } else {
        tern_mail::dkim::txt_value(&d.dkim_private_key).unwrap_or_default()
    };
    Domain {
        name: d.name,
        catch_all: d.catch_all,
        default_quota_bytes: d.default_quota_bytes,
        accounts,
        dkim_selector: d.dkim_selector,
        dkim_txt,
    }
}

/// Validates a catch-all target: a local part, or a full address.
fn catch_all(value: &str, domain: &str) -> Result<String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(String::new());
    }
    let full = if value.contains('@') { value.to_string() } else { format!("{value}@{domain}") };
    Address::parse(&full)?;
    Ok(value.to_lowercase())
}

type Rpc<T> = std::result::Result<Response<T>, Status>;

#[tonic::async_trait]
impl Admin for AdminApi {
    async fn create_domain(&self, req: Request<CreateDomainRequest>) -> Rpc<Domain> {
        let r = req.into_inner();
        let name = normalize_domain(&r.name)?;
        let record = DomainRecord {
            catch_all: catch_all(&r.catch_all, &name)?,
            name,
            default_quota_bytes: r.default_quota_bytes,
            ..Default::default()
        };
        let d = self.service.store.create_domain(record).await?;
        tracing::info!(domain = %d.name, "domain created");
        Ok(Response::new(self.domain_pb(d).await?))
    }

    async fn update_domain(&self, req: Request<UpdateDomainRequest>) -> Rpc<Domain> {
        let r = req.into_inner();
        let name = normalize_domain(&r.name)?;
        let catch = r.catch_all.map(|c| catch_all(&c, &name)).transpose()?;
        let update = crate::store::DomainUpdate { catch_all: catch, default_quota: r.default_quota_bytes, dkim: None };
        let d = self.service.store.update_domain(&name, update).await?;
        Ok(Response::new(self.domain_pb(d).await?))
    }

    async fn get_domain(&self, req: Request<GetDomainRequest>) -> Rpc<Domain> {
        let name = normalize_domain(&req.into_inner().name)?;
        let d = self.service.store.domain(&name).await?.ok_or_else(|| MailboxError::not_found("domain", &name))?;
        Ok(Response::new(self.domain_pb(d).await?))
    }

    async fn list_domains(&self, _req: Request<ListDomainsRequest>) -> Rpc<ListDomainsResponse> {
        let domains =
            self.service.store.list_domains().await?.into_iter().map(|(d, accounts)| domain_pb(d, accounts)).collect();
        Ok(Response::new(ListDomainsResponse { domains }))
    }

    async fn delete_domain(&self, req: Request<DeleteDomainRequest>) -> Rpc<DeleteDomainResponse> {
        let name = normalize_domain(&req.into_inner().name)?;
        self.service.store.delete_domain(&name).await?;
        tracing::info!(domain = %name, "domain deleted");
        Ok(Response::new(DeleteDomainResponse {}))
    }

    async fn create_account(&self, req: Request<CreateAccountRequest>) -> Rpc<Account> {
        let r = req.into_inner();
        let address = Address::parse(&r.address)?;
        let domain = self
            .service
            .store
            .domain(&address.domain)
            .await?
            .ok_or_else(|| MailboxError::not_found("domain", &address.domain))?;
        if address.split_detail().1.is_some() {
            return Err(MailboxError::invalid(
                "address",
                "a mailbox address cannot contain '+' (it marks a sub-address)",
            )
            .into());
        }
        let record = AccountRecord {
            id: 0,
            address: address.to_string(),
            display_name: r.display_name,
            password_hash: self.password_hash(r.password).await?,
            quota_bytes: if r.quota_bytes == 0 { domain.default_quota_bytes } else { r.quota_bytes },
            suspended: false,
            aliases: vec![],
            pop3_delete: 0,
        };
        let a = self.service.store.create_account(record).await?;
        tracing::info!(address = %a.address, "mailbox created");
        Ok(Response::new(account_pb(a)))
    }

    async fn update_account(&self, req: Request<UpdateAccountRequest>) -> Rpc<Account> {
        let r = req.into_inner();
        let a = self
            .service
            .store
            .update_account(AccountChanges {
                address: Address::parse(&r.address)?.to_string(),
                display_name: r.display_name,
                quota_bytes: r.quota_bytes,
                suspended: r.suspended,
                pop3_delete: r.pop3_delete.map(|p| tern_proto::v1::Pop3DeletePolicy::try_from(p).unwrap_or_default()),
            })
            .await?;
        Ok(Response::new(account_pb(a)))
    }

    async fn get_account(&self, req: Request<GetAccountRequest>) -> Rpc<Account> {
        Ok(Response::new(account_pb(self.account_by(&req.into_inner().address).await?)))
    }

    async fn list_accounts(&self, req: Request<ListAccountsRequest>) -> Rpc<ListAccountsResponse> {
        let domain = req.into_inner().domain;
        let domain = if domain.is_empty() { None } else { Some(normalize_domain(&domain)?) };
        let accounts = self.service.store.list_accounts(domain.as_deref()).await?;
        Ok(Response::new(ListAccountsResponse { accounts: accounts.into_iter().map(account_pb).collect() }))
    }

    async fn delete_account(&self, req: Request<DeleteAccountRequest>) -> Rpc<DeleteAccountResponse> {
        let address = Address::parse(&req.into_inner().address)?.to_string();
        self.service.store.delete_account(&address).await?;
        tracing::info!(address = %address, "mailbox deleted");
        Ok(Response::new(DeleteAccountResponse {}))
    }

    async fn set_password(&self, req: Request<SetPasswordRequest>) -> Rpc<SetPasswordResponse> {
        let r = req.into_inner();
        let address = Address::parse(&r.address)?.to_string();
        let hash = self.password_hash(r.password).await?;
        self.service.store.set_password(&address, hash).await?;
        Ok(Response::new(SetPasswordResponse {}))
    }

    async fn add_alias(&self, req: Request<AddAliasRequest>) -> Rpc<AddAliasResponse> {
        let r = req.into_inner();
        let alias = Address::parse(&r.alias)?.to_string();
        let target = Address::parse(&r.target)?.to_string();
        self.service.store.add_alias(&alias, &target).await?;
        Ok(Response::new(AddAliasResponse {}))
    }

    async fn remove_alias(&self, req: Request<RemoveAliasRequest>) -> Rpc<RemoveAliasResponse> {
        let alias = Address::parse(&req.into_inner().alias)?.to_string();
        self.service.store.remove_alias(&alias).await?;
        Ok(Response::new(RemoveAliasResponse {}))
    }

    async fn list_aliases(&self, req: Request<ListAliasesRequest>) -> Rpc<ListAliasesResponse> {
        let domain = req.into_inner().domain;
        let domain = if domain.is_empty() { None } else { Some(normalize_domain(&domain)?) };
        let aliases = self.service.store.list_aliases(domain.as_deref()).await?;
        Ok(Response::new(ListAliasesResponse {
            aliases: aliases.into_iter().map(|(alias, target)| Alias { alias, target }).collect(),
        }))
    }

    async fn get_usage(&self, req: Request<GetUsageRequest>) -> Rpc<Usage> {
        let a = self.account_by(&req.into_inner().address).await?;
        let usage = self.service.store.usage(a.id).await?;
        Ok(Response::new(usage_pb(&a, usage)))
    }

    async fn set_dkim_key(&self, req: Request<pb::SetDkimKeyRequest>) -> Rpc<pb::DkimKey> {
        let r = req.into_inner();
        let name = normalize_domain(&r.domain)?;
        let selector = if r.selector.is_empty() { tern_mail::dkim::DEFAULT_SELECTOR.to_string() } else { r.selector };
        if !selector.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
            return Err(MailboxError::invalid("selector", "letters, digits, '-' and '.' only").into());
        }
        let d = self.service.store.domain(&name).await?.ok_or_else(|| MailboxError::not_found("domain", &name))?;
        let pem = if !r.private_key_pem.is_empty() {
            r.private_key_pem
        } else if !d.dkim_private_key.is_empty() && d.dkim_selector == selector {
            // Generating is idempotent: the key already published stays.
            d.dkim_private_key
        } else {
            tokio::task::spawn_blocking(tern_mail::dkim::generate_private_key_pem)
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|e| Status::internal(e.to_string()))?
        };
        let txt =
            tern_mail::dkim::txt_value(&pem).map_err(|e| MailboxError::invalid("private_key_pem", e.to_string()))?;
        let update = crate::store::DomainUpdate { dkim: Some((selector.clone(), pem)), ..Default::default() };
        self.service.store.update_domain(&name, update).await?;
        tracing::info!(domain = %name, selector = %selector, "DKIM key set");
        Ok(Response::new(pb::DkimKey { domain: name, selector, txt }))
    }

    async fn get_queued(&self, req: Request<pb::GetQueuedRequest>) -> Rpc<pb::QueuedMessage> {
        let id = req.into_inner().queue_id;
        let entry = self.service.store.queued(&id).await?.ok_or_else(|| MailboxError::not_found("queue entry", &id))?;
        Ok(Response::new(entry))
    }

    async fn delete_queued(&self, req: Request<pb::DeleteQueuedRequest>) -> Rpc<pb::DeleteQueuedResponse> {
        let id = req.into_inner().queue_id;
        self.service.store.delete_queued(&id).await?;
        tracing::info!(queue_id = %id, "queue entry deleted by an administrator");
        Ok(Response::new(pb::DeleteQueuedResponse {}))
    }

    async fn retry_queued(&self, req: Request<pb::RetryQueuedRequest>) -> Rpc<pb::QueuedMessage> {
        Ok(Response::new(self.service.retry_queued(&req.into_inner().queue_id).await?))
    }
}
