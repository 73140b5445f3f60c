//! The `tern.mailbox.v1.Admin` service: domains, accounts, aliases, passwords and quotas, for
//! `tern admin` and the Kubernetes operator. A translation only: each RPC is one call of
//! [`MailboxService`], which validates its input (see the `service` module).

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
    records::DomainRecord,
    service::{MailboxService, NewPassword},
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
}

/// A password of a request; `None` when the request carries none.
fn new_password(password: Option<Password>) -> Option<NewPassword> {
    match password.and_then(|p| p.value)? {
        password::Value::Plain(plain) => Some(NewPassword::Plain(SecretString::from(plain))),
        password::Value::Hash(hash) => Some(NewPassword::Hash(hash)),
    }
}

/// A domain as the admin API shows it: the DKIM selector and public record, never the key.
fn domain_pb((d, accounts): (DomainRecord, u64)) -> Domain {
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
        spam: d.spam.map(Into::into),
    }
}

type Rpc<T> = std::result::Result<Response<T>, Status>;

#[tonic::async_trait]
impl Admin for AdminApi {
    async fn create_domain(&self, req: Request<CreateDomainRequest>) -> Rpc<Domain> {
        let r = req.into_inner();
        let d = self.service.create_domain(&r.name, &r.catch_all, r.default_quota_bytes).await?;
        Ok(Response::new(domain_pb(d)))
    }

    async fn update_domain(&self, req: Request<UpdateDomainRequest>) -> Rpc<Domain> {
        let r = req.into_inner();
        let d = self.service.update_domain(&r.name, r.catch_all.as_deref(), r.default_quota_bytes, r.spam).await?;
        Ok(Response::new(domain_pb(d)))
    }

    async fn get_domain(&self, req: Request<GetDomainRequest>) -> Rpc<Domain> {
        Ok(Response::new(domain_pb(self.service.domain(&req.into_inner().name).await?)))
    }

    async fn list_domains(&self, _req: Request<ListDomainsRequest>) -> Rpc<ListDomainsResponse> {
        let domains = self.service.list_domains().await?.into_iter().map(domain_pb).collect();
        Ok(Response::new(ListDomainsResponse { domains }))
    }

    async fn delete_domain(&self, req: Request<DeleteDomainRequest>) -> Rpc<DeleteDomainResponse> {
        self.service.delete_domain(&req.into_inner().name).await?;
        Ok(Response::new(DeleteDomainResponse {}))
    }

    async fn create_account(&self, req: Request<CreateAccountRequest>) -> Rpc<Account> {
        let r = req.into_inner();
        let a =
            self.service.create_account(&r.address, r.display_name, new_password(r.password), r.quota_bytes).await?;
        Ok(Response::new(account_pb(a)))
    }

    async fn update_account(&self, req: Request<UpdateAccountRequest>) -> Rpc<Account> {
        let r = req.into_inner();
        let a = self
            .service
            .update_account(AccountChanges {
                address: r.address,
                display_name: r.display_name,
                quota_bytes: r.quota_bytes,
                suspended: r.suspended,
                pop3_delete: r.pop3_delete.map(|p| pb::Pop3DeletePolicy::try_from(p).unwrap_or_default()),
                metadata: None,
                spam: r.spam.map(crate::spam::validate).transpose()?,
                sieve: None,
            })
            .await?;
        Ok(Response::new(account_pb(a)))
    }

    async fn get_account(&self, req: Request<GetAccountRequest>) -> Rpc<Account> {
        Ok(Response::new(account_pb(self.service.account_by_address(&req.into_inner().address).await?)))
    }

    async fn list_accounts(&self, req: Request<ListAccountsRequest>) -> Rpc<ListAccountsResponse> {
        let accounts = self.service.list_accounts(&req.into_inner().domain).await?;
        Ok(Response::new(ListAccountsResponse { accounts: accounts.into_iter().map(account_pb).collect() }))
    }

    async fn delete_account(&self, req: Request<DeleteAccountRequest>) -> Rpc<DeleteAccountResponse> {
        self.service.delete_account(&req.into_inner().address).await?;
        Ok(Response::new(DeleteAccountResponse {}))
    }

    async fn set_password(&self, req: Request<SetPasswordRequest>) -> Rpc<SetPasswordResponse> {
        let r = req.into_inner();
        self.service.set_password(&r.address, new_password(r.password)).await?;
        Ok(Response::new(SetPasswordResponse {}))
    }

    async fn add_alias(&self, req: Request<AddAliasRequest>) -> Rpc<AddAliasResponse> {
        let r = req.into_inner();
        self.service.add_alias(&r.alias, &r.target).await?;
        Ok(Response::new(AddAliasResponse {}))
    }

    async fn remove_alias(&self, req: Request<RemoveAliasRequest>) -> Rpc<RemoveAliasResponse> {
        self.service.remove_alias(&req.into_inner().alias).await?;
        Ok(Response::new(RemoveAliasResponse {}))
    }

    async fn list_aliases(&self, req: Request<ListAliasesRequest>) -> Rpc<ListAliasesResponse> {
        let aliases = self.service.list_aliases(&req.into_inner().domain).await?;
        Ok(Response::new(ListAliasesResponse {
            aliases: aliases.into_iter().map(|(alias, target)| Alias { alias, target }).collect(),
        }))
    }

    async fn get_usage(&self, req: Request<GetUsageRequest>) -> Rpc<Usage> {
        let (account, usage) = self.service.usage_of(&req.into_inner().address).await?;
        Ok(Response::new(usage_pb(&account, usage)))
    }

    type ReindexStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::ReindexProgress, Status>> + Send>>;

    /// Runs the reindex in a task of its own, so that it goes on to the end when the client
    /// stops listening, and streams its progress at most a few times a second.
    async fn reindex(&self, req: Request<pb::ReindexRequest>) -> Rpc<Self::ReindexStream> {
        let address = req.into_inner().address;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::ReindexProgress, Status>>(64);
        let service = self.service.clone();
        tokio::spawn(async move {
            let last = std::sync::Mutex::new(std::time::Instant::now() - std::time::Duration::from_secs(1));
            let sent = service
                .reindex(&address, &|address: &str, done, total, bytes, finished| {
                    let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
                    if finished || last.elapsed() >= std::time::Duration::from_millis(200) {
                        *last = std::time::Instant::now();
                        let progress =
                            pb::ReindexProgress { address: address.to_string(), done, total, bytes, finished };
                        let _ = tx.try_send(Ok(progress));
                    }
                })
                .await;
            if let Err(e) = sent {
                let _ = tx.send(Err(Status::from(e))).await;
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    type BackupStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::BackupProgress, Status>> + Send>>;

    async fn backup(&self, req: Request<pb::BackupRequest>) -> Rpc<Self::BackupStream> {
        let req = req.into_inner();
        let (dir, metadata_only) = (req.dir, req.metadata_only);
        if dir.is_empty() {
            return Err(Status::invalid_argument("name the directory to back up into"));
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::BackupProgress, Status>>(64);
        let service = self.service.clone();
        tokio::spawn(async move {
            let last = std::sync::Mutex::new(std::time::Instant::now() - std::time::Duration::from_secs(1));
            let progress = |phase: &str, done: u64, total: u64| {
                let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
                if done == total || last.elapsed() >= std::time::Duration::from_millis(200) {
                    *last = std::time::Instant::now();
                    let p = pb::BackupProgress { phase: phase.to_string(), done, total, manifest: String::new() };
                    let _ = tx.try_send(Ok(p));
                }
            };
            let out = match service.backup(std::path::Path::new(&dir), metadata_only, &progress).await {
                Ok(m) => Ok(pb::BackupProgress {
                    phase: "done".into(),
                    done: m.bodies,
                    total: m.bodies,
                    manifest: serde_json::to_string_pretty(&m).unwrap_or_default(),
                }),
                Err(e) => Err(Status::from(e)),
            };
            let _ = tx.send(out).await;
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn get_index_status(&self, req: Request<pb::GetIndexStatusRequest>) -> Rpc<pb::IndexStatus> {
        let s = self.service.index_status(&req.into_inner().address).await?;
        Ok(Response::new(pb::IndexStatus {
            messages: s.messages,
            indexed: s.indexed,
            skipped: s.skipped,
            index_bytes: s.index_bytes,
            message_bytes: s.message_bytes,
        }))
    }

    async fn set_dkim_key(&self, req: Request<pb::SetDkimKeyRequest>) -> Rpc<pb::DkimKey> {
        let r = req.into_inner();
        Ok(Response::new(self.service.set_dkim_key(&r.domain, &r.selector, &r.private_key_pem).await?))
    }

    async fn get_queued(&self, req: Request<pb::GetQueuedRequest>) -> Rpc<pb::QueuedMessage> {
        Ok(Response::new(self.service.queued(&req.into_inner().queue_id).await?))
    }

    async fn delete_queued(&self, req: Request<pb::DeleteQueuedRequest>) -> Rpc<pb::DeleteQueuedResponse> {
        self.service.delete_queued(&req.into_inner().queue_id).await?;
        Ok(Response::new(pb::DeleteQueuedResponse {}))
    }

    async fn retry_queued(&self, req: Request<pb::RetryQueuedRequest>) -> Rpc<pb::QueuedMessage> {
        Ok(Response::new(self.service.retry_queued(&req.into_inner().queue_id).await?))
    }
}
