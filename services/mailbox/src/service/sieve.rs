//! An account's Sieve scripts (RFC 5228), as ManageSieve (RFC 5804) and `tern admin sieve` keep
//! them: listed, read, stored (checked first), checked alone, deleted, renamed, activated, and
//! the quota question HAVESPACE asks; and the active script, which delivery runs.
//!
//! The scripts live in the account's record (`AccountRecord.sieve`), so they go wherever the
//! account goes (both backends, the NATS directory cache, deleting the account) and delivery
//! finds the active one in the record it reads anyway to resolve the recipient. A change reads
//! the record, decides against it, and writes the whole [`SieveRecord`] back through
//! [`crate::store::MetadataStore::update_account`], as METADATA on the server does.
//!
//! Everything is checked here, before anything is written: names by RFC 5804 section 1.6
//! ([`check_name`]), scripts by [`tern_sieve::check`], and the quotas of [`crate::Limits`]
//! (`sieve_max_scripts`, `sieve_max_script_bytes`, `sieve_max_total_bytes`). Every refusal is a
//! [`SieveError`] (or `NotFound` / `AlreadyExists`), whose reason ManageSieve turns into its
//! response code.

use super::MailboxService;
use crate::{
    error::{MailboxError, Result, SieveError},
    records::{AccountRecord, SieveRecord, SieveScriptRecord},
    store::AccountChanges,
};

/// The longest script name, in Unicode characters. RFC 5804 section 1.6 requires servers to
/// allow 128 and lets them allow more; names are for people to read, so no more.
pub const MAX_NAME_CHARS: usize = 128;

/// One script as ListSieveScripts shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SieveScriptInfo {
    pub name: String,
    pub active: bool,
    /// The size of the script's UTF-8 text, in bytes.
    pub size: u64,
}

/// The script delivery runs for an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSieve {
    pub name: String,
    pub text: String,
}

/// Checks a script name by RFC 5804 section 1.6: at least one character, at most
/// [`MAX_NAME_CHARS`], and none of the control characters (U+0000 to U+001F, U+007F to U+009F)
/// nor the line and paragraph separators (U+2028, U+2029). A `&str` is UTF-8 already. The
/// empty name is not a name: SetActive takes it to mean "none", and only there.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(MailboxError::invalid("Sieve script name", "empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(MailboxError::invalid("Sieve script name", format!("longer than {MAX_NAME_CHARS} characters")));
    }
    if let Some(c) = name.chars().find(|&c| c.is_control() || c == '\u{2028}' || c == '\u{2029}') {
        return Err(MailboxError::invalid(
            "Sieve script name",
            format!("control character U+{:04X} not allowed", u32::from(c)),
        ));
    }
    Ok(())
}

/// The script `account` runs at delivery, if one is active. Delivery has the record already
/// (resolving the recipient reads it), so this costs nothing.
pub fn active_script(account: &AccountRecord) -> Option<ActiveSieve> {
    let sieve = account.sieve.as_ref()?;
    if sieve.active.is_empty() {
        return None;
    }
    let i = position(sieve, &sieve.active).ok()?;
    let script = &sieve.scripts[i];
    Some(ActiveSieve { name: script.name.clone(), text: script.text.clone() })
}

/// Where `name` is in the record's scripts, which are sorted by name: `Ok` with its index, or
/// `Err` with the index it would be inserted at.
fn position(sieve: &SieveRecord, name: &str) -> std::result::Result<usize, usize> {
    sieve.scripts.binary_search_by(|s| s.name.as_str().cmp(name))
}

fn not_found(name: &str) -> MailboxError {
    MailboxError::not_found("Sieve script", name)
}

/// Checks that a script of `size` bytes may be stored under `name` in `sieve`: its own size,
/// the number of scripts (a new name only), and all the scripts' bytes together. A write that
/// leaves the total no larger than it was is allowed even over the limit, so that an account
/// over a limit lowered since can still shrink its scripts.
fn check_space(limits: &crate::Limits, sieve: &SieveRecord, name: &str, size: u64) -> Result<()> {
    if size > limits.sieve_max_script_bytes {
        return Err(SieveError::TooLarge { size, limit: limits.sieve_max_script_bytes }.into());
    }
    let existing = position(sieve, name).ok();
    if existing.is_none() && sieve.scripts.len() >= limits.sieve_max_scripts {
        return Err(SieveError::TooMany { limit: limits.sieve_max_scripts }.into());
    }
    let now: u64 = sieve.scripts.iter().map(|s| s.text.len() as u64).sum();
    let replaced = existing.map_or(0, |i| sieve.scripts[i].text.len() as u64);
    let total = now - replaced + size;
    if total > limits.sieve_max_total_bytes && total > now {
        return Err(SieveError::OverQuota { total, limit: limits.sieve_max_total_bytes }.into());
    }
    Ok(())
}

impl MailboxService {
    async fn sieve_account(&self, account_id: u64) -> Result<AccountRecord> {
        self.store.account(account_id).await?.ok_or_else(|| MailboxError::not_found("account", account_id.to_string()))
    }

    /// Reads the account's scripts, lets `edit` change them (or refuse), and writes them back
    /// when `edit` says it changed something. The whole is under `sieve_writes`, so edits in
    /// this process never overwrite each other.
    async fn edit_sieve(&self, account_id: u64, edit: impl FnOnce(&mut SieveRecord) -> Result<bool>) -> Result<()> {
        let _one_at_a_time = self.sieve_writes.lock().await;
        let account = self.sieve_account(account_id).await?;
        let mut sieve = account.sieve.unwrap_or_default();
        if edit(&mut sieve)? {
            let changes = AccountChanges { address: account.address, sieve: Some(sieve), ..Default::default() };
            self.store.update_account(changes).await?;
        }
        Ok(())
    }

    /// Every script of the account, sorted by name, with its size and whether it is active.
    pub async fn list_sieve_scripts(&self, account_id: u64) -> Result<Vec<SieveScriptInfo>> {
        let sieve = self.sieve_account(account_id).await?.sieve.unwrap_or_default();
        Ok(sieve
            .scripts
            .iter()
            .map(|s| SieveScriptInfo {
                active: s.name == sieve.active,
                size: s.text.len() as u64,
                name: s.name.clone(),
            })
            .collect())
    }

    /// One script's text, and whether it is the active one.
    pub async fn sieve_script(&self, account_id: u64, name: &str) -> Result<(String, bool)> {
        check_name(name)?;
        let mut sieve = self.sieve_account(account_id).await?.sieve.unwrap_or_default();
        let i = position(&sieve, name).map_err(|_| not_found(name))?;
        let active = sieve.active == name;
        Ok((sieve.scripts.swap_remove(i).text, active))
    }

    /// Checks a script as [`MailboxService::put_sieve_script`] does, storing nothing.
    pub fn check_sieve_script(&self, text: &str) -> Result<()> {
        tern_sieve::check(text).map_err(|e| SieveError::Invalid(e).into())
    }

    /// Stores `text` as the script `name`, replacing one of that name (which stays active if
    /// it was), and makes it the active one when `activate` is set. Checked in the order of
    /// cost: the name, the script's size, its syntax, then the account's quotas.
    pub async fn put_sieve_script(&self, account_id: u64, name: &str, text: String, activate: bool) -> Result<()> {
        check_name(name)?;
        let size = text.len() as u64;
        let limit = self.limits.sieve_max_script_bytes;
        if size > limit {
            return Err(SieveError::TooLarge { size, limit }.into());
        }
        self.check_sieve_script(&text)?;
        self.edit_sieve(account_id, |sieve| {
            check_space(&self.limits, sieve, name, size)?;
            let script = SieveScriptRecord { name: name.to_string(), text };
            match position(sieve, name) {
                Ok(i) => sieve.scripts[i] = script,
                Err(i) => sieve.scripts.insert(i, script),
            }
            if activate {
                sieve.active = name.to_string();
            }
            Ok(true)
        })
        .await?;
        tracing::info!(account_id, script = %name, size, activate, "Sieve script stored");
        Ok(())
    }

    /// Deletes a script; the active one is refused (RFC 5804 section 2.10).
    pub async fn delete_sieve_script(&self, account_id: u64, name: &str) -> Result<()> {
        check_name(name)?;
        self.edit_sieve(account_id, |sieve| {
            let i = position(sieve, name).map_err(|_| not_found(name))?;
            if sieve.active == name {
                return Err(SieveError::Active { name: name.to_string() }.into());
            }
            sieve.scripts.remove(i);
            Ok(true)
        })
        .await?;
        tracing::info!(account_id, script = %name, "Sieve script deleted");
        Ok(())
    }

    /// Renames a script; a new name that is taken (itself included) is refused (RFC 5804
    /// section 2.11.1). The active script stays active under its new name.
    pub async fn rename_sieve_script(&self, account_id: u64, from: &str, to: &str) -> Result<()> {
        check_name(from)?;
        check_name(to)?;
        self.edit_sieve(account_id, |sieve| {
            let i = position(sieve, from).map_err(|_| not_found(from))?;
            if position(sieve, to).is_ok() {
                return Err(MailboxError::exists("Sieve script", to));
            }
            let mut script = sieve.scripts.remove(i);
            script.name = to.to_string();
            let at = position(sieve, to).unwrap_err();
            sieve.scripts.insert(at, script);
            if sieve.active == from {
                sieve.active = to.to_string();
            }
            Ok(true)
        })
        .await?;
        tracing::info!(account_id, from = %from, to = %to, "Sieve script renamed");
        Ok(())
    }

    /// Makes `name` the active script, or none when `name` is empty (RFC 5804 section 2.8).
    pub async fn set_active_sieve_script(&self, account_id: u64, name: &str) -> Result<()> {
        if !name.is_empty() {
            check_name(name)?;
        }
        self.edit_sieve(account_id, |sieve| {
            if !name.is_empty() && position(sieve, name).is_err() {
                return Err(not_found(name));
            }
            let changed = sieve.active != name;
            sieve.active = name.to_string();
            Ok(changed)
        })
        .await?;
        tracing::info!(account_id, script = %name, "Sieve script activated");
        Ok(())
    }

    /// Whether a script of `size` bytes could be stored as `name` now (RFC 5804 HAVESPACE):
    /// the refusal PutSieveScript would give for the quotas, or nothing.
    pub async fn have_sieve_space(&self, account_id: u64, name: &str, size: u64) -> Result<()> {
        check_name(name)?;
        let sieve = self.sieve_account(account_id).await?.sieve.unwrap_or_default();
        check_space(&self.limits, &sieve, name, size)
    }

    /// The script delivery runs for the account, if one is active: one read of the account's
    /// record (from memory on NATS). Delivery that holds the record already uses
    /// [`active_script`] instead.
    pub async fn active_sieve(&self, account_id: u64) -> Result<Option<ActiveSieve>> {
        Ok(active_script(&self.sieve_account(account_id).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(names: &[(&str, usize)], active: &str) -> SieveRecord {
        SieveRecord {
            scripts: names
                .iter()
                .map(|(n, len)| SieveScriptRecord { name: (*n).into(), text: "x".repeat(*len) })
                .collect(),
            active: active.into(),
        }
    }

    #[test]
    fn names_follow_rfc_5804() {
        for good in ["a", "vacation", "Ferien 2026", "été", "日本語", &"n".repeat(MAX_NAME_CHARS)] {
            assert!(check_name(good).is_ok(), "{good:?} refused");
        }
        let long = "n".repeat(MAX_NAME_CHARS + 1);
        for bad in ["", "a\0b", "tab\there", "line\nbreak", "del\u{7f}", "c1\u{85}", "ls\u{2028}", "ps\u{2029}", &long]
        {
            let e = check_name(bad).expect_err(bad);
            assert_eq!(e.reason(), tern_proto::v1::ErrorReason::InvalidArgument, "{bad:?}: {e}");
        }
    }

    #[test]
    fn space_counts_scripts_sizes_and_the_total() {
        let limits = crate::Limits {
            sieve_max_scripts: 2,
            sieve_max_script_bytes: 10,
            sieve_max_total_bytes: 15,
            ..Default::default()
        };
        let reason = |r: Result<()>| r.map_err(|e| e.reason());
        use tern_proto::v1::ErrorReason::{OverQuota, TooLarge, TooMany};
        let one = record(&[("a", 8)], "");
        assert_eq!(reason(check_space(&limits, &one, "b", 7)), Ok(()));
        assert_eq!(reason(check_space(&limits, &one, "b", 8)), Err(OverQuota));
        assert_eq!(reason(check_space(&limits, &one, "b", 11)), Err(TooLarge));
        // Replacing a script counts its new size instead of its old one.
        assert_eq!(reason(check_space(&limits, &one, "a", 10)), Ok(()));
        let two = record(&[("a", 5), ("b", 5)], "a");
        assert_eq!(reason(check_space(&limits, &two, "c", 1)), Err(TooMany));
        assert_eq!(reason(check_space(&limits, &two, "b", 10)), Ok(()));
        // Over a limit lowered since, shrinking is still allowed; growing is not.
        let over = record(&[("a", 10), ("b", 10)], "");
        assert_eq!(reason(check_space(&limits, &over, "a", 9)), Ok(()));
        assert_eq!(reason(check_space(&limits, &over, "a", 10)), Ok(()));
        let grown = record(&[("a", 9), ("b", 10)], "");
        assert_eq!(reason(check_space(&limits, &grown, "a", 10)), Err(OverQuota));
    }

    #[test]
    fn the_active_script_is_found_by_name() {
        let mut account = AccountRecord::default();
        assert_eq!(active_script(&account), None);
        account.sieve = Some(record(&[("a", 1), ("b", 2)], ""));
        assert_eq!(active_script(&account), None);
        account.sieve = Some(record(&[("a", 1), ("b", 2)], "b"));
        assert_eq!(active_script(&account), Some(ActiveSieve { name: "b".into(), text: "xx".into() }));
        // A record whose active name has no script (never written so) runs nothing.
        account.sieve = Some(record(&[("a", 1)], "gone"));
        assert_eq!(active_script(&account), None);
    }
}
