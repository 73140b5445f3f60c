//! Helpers the Maildir and mbox modules share: errors that carry their path, line-end
//! conversion, keyword names, calendar arithmetic and atomic file replacement.

use std::borrow::Cow;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::Error;

/// Wraps an I/O error with the path it concerns, for `map_err`.
pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// A format error about `path`.
pub(crate) fn format_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Format { path: path.to_path_buf(), reason: reason.into() }
}

/// The IMAP view of stored bytes: every bare LF becomes CRLF, an existing CRLF stays.
pub(crate) fn to_crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 32 + 2);
    let mut prev = 0u8;
    for &b in data {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// The size of [`to_crlf`]'s result, without building it.
pub(crate) fn crlf_size(data: &[u8]) -> u64 {
    let mut bare = 0u64;
    let mut prev = 0u8;
    for &b in data {
        if b == b'\n' && prev != b'\r' {
            bare += 1;
        }
        prev = b;
    }
    data.len() as u64 + bare
}

/// The on-disk form of a message for the LF-terminated stores (Maildir as Dovecot keeps it,
/// mbox): CRLF becomes LF. A message containing CR CR LF is kept as it is, because there the
/// conversion would lose a CR that the IMAP view (LF back to CRLF) cannot restore; both
/// readers accept CRLF on disk.
pub(crate) fn disk_form(body: &[u8]) -> Cow<'_, [u8]> {
    if !body.contains(&b'\r') || body.windows(3).any(|w| w == b"\r\r\n") {
        return Cow::Borrowed(body);
    }
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i] == b'\r' && body.get(i + 1) == Some(&b'\n') {
            out.push(b'\n');
            i += 2;
        } else {
            out.push(body[i]);
            i += 1;
        }
    }
    Cow::Owned(out)
}

/// The IMAP system flags, in the order the readers hand them out.
pub(crate) const SEEN: &str = "\\Seen";
pub(crate) const ANSWERED: &str = "\\Answered";
pub(crate) const FLAGGED: &str = "\\Flagged";
pub(crate) const DELETED: &str = "\\Deleted";
pub(crate) const DRAFT: &str = "\\Draft";
pub(crate) const FORWARDED: &str = "$Forwarded";

/// Whether `name` can be an IMAP keyword (RFC 3501 `flag-keyword`, an atom without `]`), so
/// that writing it into a keywords file or header cannot break that file's syntax.
pub(crate) fn is_keyword(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']'))
}

/// Pushes `flag` unless it is already there (keywords compare case-insensitively, as IMAP
/// compares them).
pub(crate) fn push_flag(flags: &mut Vec<String>, flag: &str) {
    if !flags.iter().any(|f| f.eq_ignore_ascii_case(flag)) {
        flags.push(flag.to_string());
    }
}

/// Joins name levels with `/`, spelling a first level `INBOX` in any case as `INBOX`, as IMAP
/// matches it.
pub(crate) fn join_levels(mut levels: Vec<String>) -> String {
    if let Some(first) = levels.first_mut()
        && first.eq_ignore_ascii_case("INBOX")
    {
        *first = "INBOX".to_string();
    }
    levels.join("/")
}

/// The system time of a Unix timestamp, for setting a file's mtime.
pub(crate) fn system_time(secs: i64) -> SystemTime {
    let delta = Duration::from_secs(secs.unsigned_abs());
    let time = if secs >= 0 { UNIX_EPOCH.checked_add(delta) } else { UNIX_EPOCH.checked_sub(delta) };
    time.unwrap_or(UNIX_EPOCH)
}

/// A Unix timestamp of a system time (negative before 1970).
pub(crate) fn unix_secs(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map(|s| -s).unwrap_or(i64::MIN),
    }
}

/// Replaces `path` with `data` atomically: a temporary file beside it, synced, then renamed
/// over it, so a reader (Dovecot or a later run) sees the old or the new content, never a part.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> crate::Result<()> {
    let mut tmp_name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    tmp_name.push(format!(".tern-tmp.{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        file.write_all(data)?;
        file.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(&tmp)(e));
    }
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err(path)(e)
    })
}

/// Reads a whole small file (a UID list, keywords, subscriptions); `None` if it does not exist.
pub(crate) fn read_optional(path: &Path) -> crate::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(data) => Ok(Some(data)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Opens a file for reading, with the path as context on failure.
pub(crate) fn open(path: &Path) -> crate::Result<File> {
    File::open(path).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_conversion_keeps_existing_crlf() {
        assert_eq!(to_crlf(b"a\nb\r\nc\rd\n"), b"a\r\nb\r\nc\rd\r\n");
        assert_eq!(crlf_size(b"a\nb\r\nc\rd\n"), to_crlf(b"a\nb\r\nc\rd\n").len() as u64);
        assert_eq!(to_crlf(b""), b"");
    }

    #[test]
    fn disk_form_is_lf_unless_that_would_lose_a_cr() {
        assert_eq!(&*disk_form(b"a\r\nb\r\n"), b"a\nb\n");
        assert_eq!(&*disk_form(b"a\nb\rc"), b"a\nb\rc");
        assert_eq!(&*disk_form(b"a\r\r\nb\r\n"), b"a\r\r\nb\r\n");
        for body in [&b"x\r\ny\r\n"[..], b"x\ny", b"x\r\r\n", b"\r", b"\r\n\r\n"] {
            assert_eq!(to_crlf(&disk_form(body)), to_crlf(body), "{body:?}");
        }
    }

    #[test]
    fn keywords_are_atoms() {
        assert!(is_keyword("$Junk"));
        assert!(is_keyword("NonJunk"));
        assert!(!is_keyword(""));
        assert!(!is_keyword("a b"));
        assert!(!is_keyword("\\Seen"));
        assert!(!is_keyword("a]"));
        assert!(!is_keyword("ä"));
        assert!(!is_keyword("a\nb"));
    }

    #[test]
    fn times_before_the_epoch() {
        assert_eq!(unix_secs(system_time(-5)), -5);
        assert_eq!(unix_secs(system_time(1_700_000_000)), 1_700_000_000);
    }
}
