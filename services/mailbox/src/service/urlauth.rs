//! URLAUTH (RFC 4467): the mailbox access keys that authorize IMAP URLs, which never leave this
//! service. A key is 32 random bytes per folder, made the first time a URL of the folder is
//! authorized and kept in the folder's record as an annotation under a name IMAP cannot reach
//! (METADATA names start with `/private` or `/shared`), so RENAME keeps it and DELETE drops it.
//! The INTERNAL mechanism's token is the HMAC-SHA256 of the URL's rump under that key, in hex.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tern_proto::v1::FolderRef;

use super::MailboxService;
use crate::{
    error::{MailboxError, Result},
    folder_name,
};

/// The annotation that holds a folder's access key.
const KEY_ENTRY: &str = "/tern/urlauth-key";

type HmacSha256 = Hmac<Sha256>;

impl MailboxService {
    /// The INTERNAL token of `rump` (an IMAP URL up to and including `;URLAUTH=access`) for the
    /// folder `folder` of `account_id`, making the folder's key if it has none.
    pub async fn sign_url(&self, account_id: u64, folder: &str, rump: &str) -> Result<String> {
        let name = folder_name::canonical(folder)?;
        let key = match self.url_key(account_id, &name).await? {
            Some(key) => key,
            None => {
                use password_hash::rand_core::{OsRng, RngCore};
                let mut key = vec![0u8; 32];
                OsRng.fill_bytes(&mut key);
                let change = vec![(KEY_ENTRY.to_string(), Some(key.clone()))];
                // The key does not count against the folder's METADATA limit.
                let limit = self.limits.max_metadata_entries + 1;
                self.store.set_folder_metadata(account_id, &name, change, limit).await?;
                key
            }
        };
        Ok(hex::encode(mac(&key, rump).finalize().into_bytes()))
    }

    /// Whether `token` is the INTERNAL token of `rump` under the folder's current key. A folder
    /// without a key, or one that does not exist, authorizes nothing.
    pub async fn verify_url(&self, account_id: u64, folder: &str, rump: &str, token: &str) -> Result<bool> {
        let Ok(name) = folder_name::canonical(folder) else { return Ok(false) };
        let key = match self.url_key(account_id, &name).await {
            Ok(Some(key)) => key,
            Ok(None) | Err(MailboxError::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let Ok(token) = hex::decode(token) else { return Ok(false) };
        // A constant-time comparison, so that a token cannot be guessed byte by byte.
        Ok(mac(&key, rump).verify_slice(&token).is_ok())
    }

    /// Forgets the access key of a folder, or of every folder when `folder` is empty (IMAP
    /// RESETKEY): every URL authorized before stops working; the next one makes a new key.
    pub async fn reset_url_keys(&self, account_id: u64, folder: &str) -> Result<()> {
        let names = if folder.is_empty() {
            self.store.list_folders(account_id).await?.folders.into_iter().map(|f| f.name).collect()
        } else {
            vec![folder_name::canonical(folder)?]
        };
        for name in names {
            let change = vec![(KEY_ENTRY.to_string(), None)];
            self.store.set_folder_metadata(account_id, &name, change, usize::MAX).await?;
        }
        Ok(())
    }

    async fn url_key(&self, account_id: u64, name: &str) -> Result<Option<Vec<u8>>> {
        let folder = self.store.folder(account_id, &FolderRef::name(name)).await?;
        Ok(folder.metadata.into_iter().find(|e| e.name == KEY_ENTRY).map(|e| e.value))
    }
}

fn mac(key: &[u8], rump: &str) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(rump.as_bytes());
    mac
}
