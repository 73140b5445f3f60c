//! Spam filtering settings of domains and accounts: checking what an administrator sets, and
//! the settings that hold for one recipient (its account's, completed by its domain's).
//!
//! The mailbox service does not scan anything. The SMTP front-end asks rspamd for a verdict
//! and applies these settings to it per recipient; this module only keeps them and says which
//! folder a message judged to be spam goes to.

use tern_proto::v1 as pb;

use crate::{
    Result,
    error::MailboxError,
    records::{SpamScan, SpamSettingsRecord},
};

/// The folder spam goes to when neither the account nor its domain names one; also the name of
/// the `\Junk` folder every new account gets.
pub const DEFAULT_JUNK_FOLDER: &str = "Junk";

/// Most entries one allow or block list may hold, so that a record (and the per-recipient
/// answer every RCPT gets) stays small.
pub const MAX_SENDERS: usize = 1000;

/// Checks and normalises settings an administrator gives: sender entries lower-cased, sorted
/// and without duplicates, each an address or `@domain`; a junk folder name in canonical form.
pub fn validate(settings: pb::SpamSettings) -> Result<SpamSettingsRecord> {
    let mut record = SpamSettingsRecord::from(settings);
    if !record.junk_folder.is_empty() {
        record.junk_folder = crate::folder_name::canonical(&record.junk_folder)?;
        if crate::folder_name::is_inbox(&record.junk_folder) {
            return Err(MailboxError::invalid("junk folder", "INBOX cannot be the junk folder"));
        }
    }
    record.allow_senders = senders("allow_senders", record.allow_senders)?;
    record.block_senders = senders("block_senders", record.block_senders)?;
    Ok(record)
}

fn senders(what: &'static str, list: Vec<String>) -> Result<Vec<String>> {
    if list.len() > MAX_SENDERS {
        return Err(MailboxError::invalid(what, format!("more than {MAX_SENDERS} entries")));
    }
    let mut out = Vec::with_capacity(list.len());
    for entry in list {
        let e = entry.trim().to_lowercase();
        let ok = match e.rsplit_once('@') {
            Some((local, domain)) => {
                !domain.is_empty() && domain.contains('.') && !local.contains('@') && !e.contains(char::is_whitespace)
            }
            None => false,
        };
        if !ok {
            return Err(MailboxError::invalid(what, format!("{entry:?} is neither an address nor @domain")));
        }
        out.push(e);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The settings that hold for a recipient: the account's where it sets them, else its domain's,
/// else scanning on and the junk folder [`DEFAULT_JUNK_FOLDER`]; the lists are both sets.
pub fn effective(domain: Option<&SpamSettingsRecord>, account: &SpamSettingsRecord) -> pb::SpamSettings {
    let empty = SpamSettingsRecord::default();
    let domain = domain.unwrap_or(&empty);
    let scan = match (account.scan(), domain.scan()) {
        (SpamScan::Off, _) | (SpamScan::Inherit, SpamScan::Off) => pb::SpamScan::Off,
        _ => pb::SpamScan::On,
    };
    let junk_folder = [&account.junk_folder, &domain.junk_folder]
        .into_iter()
        .find(|f| !f.is_empty())
        .cloned()
        .unwrap_or_else(|| DEFAULT_JUNK_FOLDER.to_string());
    let union = |a: &[String], d: &[String]| {
        let mut all: Vec<String> = d.iter().chain(a).cloned().collect();
        all.sort();
        all.dedup();
        all
    };
    pb::SpamSettings {
        scan: scan as i32,
        junk_folder,
        allow_senders: union(&account.allow_senders, &domain.allow_senders),
        block_senders: union(&account.block_senders, &domain.block_senders),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(scan: pb::SpamScan, junk: &str, allow: &[&str], block: &[&str]) -> pb::SpamSettings {
        pb::SpamSettings {
            scan: scan as i32,
            junk_folder: junk.into(),
            allow_senders: allow.iter().map(|s| s.to_string()).collect(),
            block_senders: block.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn senders_are_normalised_and_bad_ones_refused() {
        let r = validate(settings(
            pb::SpamScan::On,
            "",
            &[" Bob@Example.org", "@lists.example.net", "bob@example.org"],
            &[],
        ))
        .unwrap();
        assert_eq!(r.allow_senders, vec!["@lists.example.net", "bob@example.org"]);
        for bad in ["bob", "bob@", "@", "a b@example.org", "bob@localhost", "a@b@example.org"] {
            let err = validate(settings(pb::SpamScan::On, "", &[], &[bad])).unwrap_err();
            assert!(err.to_string().contains("block_senders"), "{bad}: {err}");
        }
        let many: Vec<String> = (0..=MAX_SENDERS).map(|i| format!("u{i}@example.org")).collect();
        let too_many = pb::SpamSettings { allow_senders: many, ..Default::default() };
        assert!(validate(too_many).is_err());
    }

    #[test]
    fn the_junk_folder_is_a_valid_name_and_not_inbox() {
        assert_eq!(validate(settings(pb::SpamScan::On, "Spam/Suspect", &[], &[])).unwrap().junk_folder, "Spam/Suspect");
        assert!(validate(settings(pb::SpamScan::On, "inbox", &[], &[])).is_err());
    }

    #[test]
    fn accounts_inherit_from_their_domain() {
        let account = validate(settings(pb::SpamScan::Inherit, "", &["a@example.org"], &[])).unwrap();
        let domain = validate(settings(pb::SpamScan::Off, "Spam", &["@partner.example"], &["x@bad.example"])).unwrap();
        let e = effective(Some(&domain), &account);
        assert_eq!(e.scan(), pb::SpamScan::Off);
        assert_eq!(e.junk_folder, "Spam");
        assert_eq!(e.allow_senders, vec!["@partner.example", "a@example.org"]);
        assert_eq!(e.block_senders, vec!["x@bad.example"]);
        // The account's own choice wins over its domain's.
        let own = validate(settings(pb::SpamScan::On, "Junk/Rspamd", &[], &[])).unwrap();
        let e = effective(Some(&domain), &own);
        assert_eq!((e.scan(), e.junk_folder.as_str()), (pb::SpamScan::On, "Junk/Rspamd"));
        // Nothing set anywhere: scanning on, into Junk.
        let e = effective(None, &SpamSettingsRecord::default());
        assert_eq!((e.scan(), e.junk_folder.as_str()), (pb::SpamScan::On, DEFAULT_JUNK_FOLDER));
    }
}
