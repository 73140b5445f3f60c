//! The directory as the admin API changes it: domains and their DKIM keys, accounts,
//! passwords, aliases, usage, and the administrator's view of the outbound queue.
//!
//! Every address is parsed and normalised here (lower case, brackets and spaces gone), every
//! domain name checked, and every password hashed or its hash checked, so the store only ever
//! sees normalised names and hashed passwords.

use secrecy::SecretString;
use tern_proto::v1::{DkimKey, QueuedMessage};

use super::{MailboxService, now};
use crate::{
    address::{Address, normalize_domain},
    error::{MailboxError, Result},
    password,
    records::{AccountRecord, DomainRecord},
    store::{AccountChanges, DomainUpdate, UsageCount},
};

/// A password as an administrator gives it: in clear, to be hashed here, or already hashed (for
/// example from a Kubernetes Secret), to be checked and kept as it is.
#[derive(Debug, Clone)]
pub enum NewPassword {
    Plain(SecretString),
    Hash(String),
}

/// Why a DKIM key could not be set.
#[derive(Debug, thiserror::Error)]
pub enum DkimKeyError {
    /// The request was refused or the store failed, as any other call.
    #[error(transparent)]
    Mailbox(#[from] MailboxError),
    /// A new key could not be generated. This is a fault of the server, not of the request
    /// and not of the store, so it is neither "invalid" nor "unavailable".
    #[error("{0}")]
    Generate(String),
}

/// Validates a catch-all target: a local part of `domain`, or a full address. Empty turns the
/// catch-all off.
fn catch_all(value: &str, domain: &str) -> Result<String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(String::new());
    }
    let full = if value.contains('@') { value.to_string() } else { format!("{value}@{domain}") };
    Address::parse(&full)?;
    Ok(value.to_lowercase())
}

/// A normalised domain, or `None` for the empty string, which asks for every domain.
fn domain_filter(domain: &str) -> Result<Option<String>> {
    if domain.is_empty() { Ok(None) } else { normalize_domain(domain).map(Some) }
}

impl MailboxService {
    /// Hashes a password given in clear, or checks one given hashed.
    async fn password_hash(&self, password: Option<NewPassword>) -> Result<String> {
        match password {
            Some(NewPassword::Plain(plain)) => self.passwords.hash(&plain).await,
            Some(NewPassword::Hash(hash)) => password::check_hash(&hash),
            None => Err(MailboxError::invalid("password", "none given")),
        }
    }

    /// A domain with the number of its accounts, as the admin API shows it.
    async fn with_accounts(&self, d: DomainRecord) -> Result<(DomainRecord, u64)> {
        let accounts = self.store.list_accounts(Some(&d.name)).await?.len() as u64;
        Ok((d, accounts))
    }

    /// Creates a domain; `catch_all` is a local part, a full address, or empty for none.
    pub async fn create_domain(
        &self,
        name: &str,
        catch_all_to: &str,
        default_quota_bytes: u64,
    ) -> Result<(DomainRecord, u64)> {
        let name = normalize_domain(name)?;
        let record = DomainRecord {
            catch_all: catch_all(catch_all_to, &name)?,
            name,
            default_quota_bytes,
            ..Default::default()
        };
        let d = self.store.create_domain(record).await?;
        tracing::info!(domain = %d.name, "domain created");
        self.with_accounts(d).await
    }

    /// Changes a domain's catch-all, default quota and spam settings; `None` leaves a field as
    /// it is.
    pub async fn update_domain(
        &self,
        name: &str,
        catch_all_to: Option<&str>,
        default_quota_bytes: Option<u64>,
        spam: Option<tern_proto::v1::SpamSettings>,
    ) -> Result<(DomainRecord, u64)> {
        let name = normalize_domain(name)?;
        let catch_all = catch_all_to.map(|c| catch_all(c, &name)).transpose()?;
        let spam = spam.map(crate::spam::validate).transpose()?;
        let update = DomainUpdate { catch_all, default_quota: default_quota_bytes, dkim: None, spam };
        let d = self.store.update_domain(&name, update).await?;
        self.with_accounts(d).await
    }

    /// A domain and the number of its accounts.
    pub async fn domain(&self, name: &str) -> Result<(DomainRecord, u64)> {
        let name = normalize_domain(name)?;
        let d = self.store.domain(&name).await?.ok_or_else(|| MailboxError::not_found("domain", &name))?;
        self.with_accounts(d).await
    }

    /// Every domain with the number of its accounts.
    pub async fn list_domains(&self) -> Result<Vec<(DomainRecord, u64)>> {
        self.store.list_domains().await
    }

    /// Deletes a domain that has no accounts and no aliases any more.
    pub async fn delete_domain(&self, name: &str) -> Result<()> {
        let name = normalize_domain(name)?;
        self.store.delete_domain(&name).await?;
        tracing::info!(domain = %name, "domain deleted");
        Ok(())
    }

    /// Sets a domain's DKIM key: the PEM given, or else the key already set under `selector`,
    /// or else a new one. An empty selector is the default one.
    pub async fn set_dkim_key(
        &self,
        domain: &str,
        selector: &str,
        private_key_pem: &str,
    ) -> std::result::Result<DkimKey, DkimKeyError> {
        let name = normalize_domain(domain)?;
        let selector = if selector.is_empty() { tern_mail::dkim::DEFAULT_SELECTOR } else { selector }.to_string();
        if !selector.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
            return Err(MailboxError::invalid("selector", "letters, digits, '-' and '.' only").into());
        }
        let d = self.store.domain(&name).await?.ok_or_else(|| MailboxError::not_found("domain", &name))?;
        let pem = if !private_key_pem.is_empty() {
            private_key_pem.to_string()
        } else if !d.dkim_private_key.is_empty() && d.dkim_selector == selector {
            // Generating is idempotent: the key already published stays.
            d.dkim_private_key
        } else {
            tokio::task::spawn_blocking(tern_mail::dkim::generate_private_key_pem)
                .await
                .map_err(|e| DkimKeyError::Generate(e.to_string()))?
                .map_err(|e| DkimKeyError::Generate(e.to_string()))?
        };
        let txt =
            tern_mail::dkim::txt_value(&pem).map_err(|e| MailboxError::invalid("private_key_pem", e.to_string()))?;
        let update = DomainUpdate { dkim: Some((selector.clone(), pem)), ..Default::default() };
        self.store.update_domain(&name, update).await?;
        tracing::info!(domain = %name, selector = %selector, "DKIM key set");
        Ok(DkimKey { domain: name, selector, txt })
    }

    /// The selector and private key (PEM) a domain signs with.
    pub async fn signing_key(&self, domain: &str) -> Result<(String, String)> {
        let name = normalize_domain(domain)?;
        let d = self.store.domain(&name).await?.ok_or_else(|| MailboxError::not_found("domain", &name))?;
        if d.dkim_private_key.is_empty() {
            return Err(MailboxError::not_found("DKIM key of domain", &name));
        }
        Ok((d.dkim_selector, d.dkim_private_key))
    }

    /// Creates a mailbox in an existing domain, with INBOX and the special-use folders. A quota
    /// of 0 takes the domain's default.
    pub async fn create_account(
        &self,
        address: &str,
        display_name: String,
        password: Option<NewPassword>,
        quota_bytes: u64,
    ) -> Result<AccountRecord> {
        let address = Address::parse(address)?;
        let domain = self
            .store
            .domain(&address.domain)
            .await?
            .ok_or_else(|| MailboxError::not_found("domain", &address.domain))?;
        if address.split_detail().1.is_some() {
            return Err(MailboxError::invalid(
                "address",
                "a mailbox address cannot contain '+' (it marks a sub-address)",
            ));
        }
        let record = AccountRecord {
            id: 0,
            address: address.to_string(),
            display_name,
            password_hash: self.password_hash(password).await?,
            quota_bytes: if quota_bytes == 0 { domain.default_quota_bytes } else { quota_bytes },
            suspended: false,
            aliases: vec![],
            pop3_delete: 0,
            metadata: vec![],
            spam: None,
            sieve: None,
        };
        let a = self.store.create_account(record).await?;
        tracing::info!(address = %a.address, "mailbox created");
        Ok(a)
    }

    /// Changes an account's settings; the account is `changes.address`, normalised here.
    pub async fn update_account(&self, changes: AccountChanges) -> Result<AccountRecord> {
        let address = Address::parse(&changes.address)?.to_string();
        self.store.update_account(AccountChanges { address, ..changes }).await
    }

    /// The account of a mailbox address (not of an alias).
    pub async fn account_by_address(&self, address: &str) -> Result<AccountRecord> {
        let address = Address::parse(address)?.to_string();
        self.store.account_by_address(&address).await?.ok_or_else(|| MailboxError::not_found("mailbox", address))
    }

    /// The accounts of one domain, or of every domain when `domain` is empty.
    pub async fn list_accounts(&self, domain: &str) -> Result<Vec<AccountRecord>> {
        self.store.list_accounts(domain_filter(domain)?.as_deref()).await
    }

    /// Deletes a mailbox with its folders and messages.
    pub async fn delete_account(&self, address: &str) -> Result<()> {
        let address = Address::parse(address)?.to_string();
        let account = self.store.account_by_address(&address).await?;
        self.store.delete_account(&address).await?;
        if let (Some(fts), Some(account)) = (&self.fulltext, account) {
            fts.forget(account.id);
        }
        tracing::info!(address = %address, "mailbox deleted");
        Ok(())
    }

    /// Replaces a mailbox's password.
    pub async fn set_password(&self, address: &str, password: Option<NewPassword>) -> Result<()> {
        let address = Address::parse(address)?.to_string();
        let hash = self.password_hash(password).await?;
        self.store.set_password(&address, hash).await
    }

    /// Makes `alias` deliver to the mailbox `target`.
    pub async fn add_alias(&self, alias: &str, target: &str) -> Result<()> {
        let alias = Address::parse(alias)?.to_string();
        let target = Address::parse(target)?.to_string();
        self.store.add_alias(&alias, &target).await
    }

    pub async fn remove_alias(&self, alias: &str) -> Result<()> {
        let alias = Address::parse(alias)?.to_string();
        self.store.remove_alias(&alias).await
    }

    /// The aliases (alias, target) of one domain, or of every domain when `domain` is empty.
    pub async fn list_aliases(&self, domain: &str) -> Result<Vec<(String, String)>> {
        self.store.list_aliases(domain_filter(domain)?.as_deref()).await
    }

    /// A mailbox and what it holds, by its address.
    pub async fn usage_of(&self, address: &str) -> Result<(AccountRecord, UsageCount)> {
        let account = self.account_by_address(address).await?;
        let usage = self.store.usage(account.id).await?;
        Ok((account, usage))
    }

    /// An account and what it holds, by its id (the front-ends' GetQuota).
    pub async fn quota(&self, account_id: u64) -> Result<(AccountRecord, UsageCount)> {
        let account = self
            .store
            .account(account_id)
            .await?
            .ok_or_else(|| MailboxError::not_found("account", account_id.to_string()))?;
        let usage = self.store.usage(account_id).await?;
        Ok((account, usage))
    }

    /// Every entry of the outbound queue.
    pub async fn list_queue(&self) -> Result<Vec<QueuedMessage>> {
        self.store.list_queue().await
    }

    /// One entry of the outbound queue.
    pub async fn queued(&self, queue_id: &str) -> Result<QueuedMessage> {
        self.store.queued(queue_id).await?.ok_or_else(|| MailboxError::not_found("queue entry", queue_id))
    }

    /// Removes an entry from the outbound queue (`tern admin queue delete`).
    pub async fn delete_queued(&self, queue_id: &str) -> Result<()> {
        self.store.delete_queued(queue_id).await?;
        tracing::info!(queue_id = %queue_id, "queue entry deleted by an administrator");
        Ok(())
    }

    /// Makes a queue entry due now (`tern admin queue retry`).
    pub async fn retry_queued(&self, queue_id: &str) -> Result<QueuedMessage> {
        self.store.retry_queued(queue_id, now()).await
    }
}
