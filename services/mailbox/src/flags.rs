//! Message flags: the IMAP system flags in their canonical spelling, and keywords, which are
//! atoms. Flags are kept sorted and without duplicates so that comparing two sets is cheap.

use crate::error::{MailboxError, Result};

pub const SEEN: &str = "\\Seen";
pub const DELETED: &str = "\\Deleted";
const SYSTEM: [&str; 5] = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"];
const MAX_FLAG: usize = 128;
const MAX_FLAGS: usize = 64;

/// Validates one flag and returns its canonical spelling.
pub fn canonical(flag: &str) -> Result<String> {
    if let Some(sys) = SYSTEM.iter().find(|s| s.eq_ignore_ascii_case(flag)) {
        return Ok((*sys).to_string());
    }
    // \Recent is session state in IMAP4rev1 and gone in IMAP4rev2; it is never stored.
    if flag.starts_with('\\') {
        return Err(MailboxError::invalid("flag", format!("{flag:?} is not a settable system flag")));
    }
    let atom_ok = !flag.is_empty()
        && flag.len() <= MAX_FLAG
        && flag.bytes().all(|b| b > 0x20 && b < 0x7f && !b"(){%*\"\\]".contains(&b));
    if !atom_ok {
        return Err(MailboxError::invalid("flag", format!("{flag:?} is not a valid keyword")));
    }
    Ok(flag.to_string())
}

/// Canonicalises a list of flags: valid, sorted, unique.
pub fn normalize(flags: &[String]) -> Result<Vec<String>> {
    let mut out = flags.iter().map(|f| canonical(f)).collect::<Result<Vec<_>>>()?;
    out.sort();
    out.dedup();
    if out.len() > MAX_FLAGS {
        return Err(MailboxError::invalid("flags", format!("more than {MAX_FLAGS} flags on one message")));
    }
    Ok(out)
}

pub fn has(flags: &[String], flag: &str) -> bool {
    flags.iter().any(|f| f == flag)
}

/// A message's flags after a STORE: `new` replaces, is added to or is removed from `current`
/// (both normalised); sorted and unique. `Unspecified` changes nothing.
pub fn apply(mode: tern_proto::v1::FlagsMode, current: &[String], new: &[String]) -> Vec<String> {
    use tern_proto::v1::FlagsMode;
    let mut next: Vec<String> = match mode {
        FlagsMode::Replace => new.to_vec(),
        FlagsMode::Add => current.iter().chain(new.iter()).cloned().collect(),
        FlagsMode::Remove => current.iter().filter(|f| !new.contains(f)).cloned().collect(),
        FlagsMode::Unspecified => current.to_vec(),
    };
    next.sort();
    next.dedup();
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalises_system_flags() {
        let f = normalize(&["\\seen".into(), "$Label1".into(), "\\SEEN".into()]).unwrap();
        assert_eq!(f, vec!["$Label1".to_string(), "\\Seen".to_string()]);
    }

    #[test]
    fn rejects_bad_flags() {
        for bad in ["", "a b", "\\Recent", "\\Foo", "(x", "x*", "\"q\""] {
            assert!(canonical(bad).is_err(), "{bad:?} accepted");
        }
    }
}
