//! mbox, read and written: one file of messages, each after a `From ` line ("From_ line"),
//! separated by a blank line.
//!
//! A body line that begins with `From ` would be taken for the next message, so writers quote
//! it: mboxrd adds a `>` to every line matching `^>*From ` (reversibly), mboxo only to lines
//! matching `^From ` (so an original `>From ` reads back as `From `). Dovecot quotes nothing
//! and writes a `Content-Length:` header instead; the reader trusts that header where it leads
//! exactly to the next From_ line (or the end of the file), as Dovecot does, and then neither
//! looks for From_ lines inside the body nor unquotes it.
//!
//! Flags live in headers: `Status:` (`R` read; `O` only says the message is not new),
//! `X-Status:` (`A` answered, `F` flagged, `T` draft, `D` deleted) and `X-Keywords:`. UIDs are
//! Dovecot's (and UW-IMAP's) `X-UID:`, valid when the first message carries `X-IMAPbase:`
//! (`<uidvalidity> <uidnext> [keywords]`) or is UW-IMAP's pseudo message with `X-IMAP:`.
//!
//! A directory of mbox files is a folder tree: each file is a folder named by its relative
//! path, directories are levels, and Thunderbird's `Name.sbd/` directories hold the children of
//! the folder `Name`. The writer lays folders out that way too.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tern_mail::utf7;

use crate::util::{
    ANSWERED, DELETED, DRAFT, FLAGGED, SEEN, disk_form, format_err, io_err, is_keyword, join_levels, open, push_flag,
    to_crlf,
};
use crate::{Error, Folder, Listed, Location, Result};

#[cfg(test)]
mod tests;

/// How a body line beginning with `From ` is quoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `^>*From ` gains a `>` when written and loses one when read: reversible.
    Mboxrd,
    /// `^From ` becomes `>From ` when written, and `>From ` becomes `From ` when read.
    Mboxo,
}

impl Variant {
    /// Whether a line of a message must be quoted when written.
    fn needs_quote(self, line: &[u8]) -> bool {
        match self {
            Variant::Mboxrd => line[line.iter().take_while(|&&b| b == b'>').count()..].starts_with(b"From "),
            Variant::Mboxo => line.starts_with(b"From "),
        }
    }

    /// A line read back without its quoting.
    fn unquote(self, line: &[u8]) -> &[u8] {
        let quoted = match self {
            Variant::Mboxrd => {
                let depth = line.iter().take_while(|&&b| b == b'>').count();
                depth > 0 && line[depth..].starts_with(b"From ")
            }
            Variant::Mboxo => line.starts_with(b">From "),
        };
        if quoted { &line[1..] } else { line }
    }
}

/// How much of a line the reader keeps to parse (a From_ line, a header field). Lines can be
/// of any length; only their first bytes matter, and keeping no more bounds the memory a
/// hostile file can take.
const HEAD_MAX: usize = 8 * 1024;
/// How much of one header field's value (with its continuation lines) is kept.
const FIELD_MAX: usize = 16 * 1024;
/// How deep a directory tree of mbox files is walked.
const MAX_DEPTH: usize = 64;
/// Files in a directory of mbox files that are other programs' bookkeeping, not folders:
/// Thunderbird's summaries, filter rules and logs, lock files.
const SKIPPED_EXTENSIONS: &[&str] = &[".msf", ".lock", ".dat", ".html", ".json"];

/// The headers that are the mbox's own bookkeeping: Dovecot hides them from IMAP clients, the
/// reader removes them, the writer writes its own.
fn internal_field(name: &[u8]) -> Option<Field> {
    field_of(name).filter(|&f| f != Field::Date)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Status,
    XStatus,
    XKeywords,
    XUid,
    XImapBase,
    XImap,
    ContentLength,
    Date,
}

fn field_of(name: &[u8]) -> Option<Field> {
    const FIELDS: &[(&str, Field)] = &[
        ("Status", Field::Status),
        ("X-Status", Field::XStatus),
        ("X-Keywords", Field::XKeywords),
        ("X-UID", Field::XUid),
        ("X-IMAPbase", Field::XImapBase),
        ("X-IMAP", Field::XImap),
        ("Content-Length", Field::ContentLength),
        ("Date", Field::Date),
    ];
    let name = name.trim_ascii_end();
    FIELDS.iter().find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name)).map(|&(_, f)| f)
}

/// The field name of a header line (`Name:` up to the colon), if it has one.
fn header_name(line: &[u8]) -> Option<&[u8]> {
    line.iter().position(|&b| b == b':').map(|i| &line[..i])
}

/// Whether a line is blank: the separator before a From_ line, or the end of a header.
fn is_blank(line: &[u8]) -> bool {
    line == b"\n" || line == b"\r\n"
}

fn is_continuation(line: &[u8]) -> bool {
    matches!(line.first(), Some(b' ' | b'\t'))
}

/// The lines of a buffer, each with its line end (the last one may have none).
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split_inclusive(|&b| b == b'\n')
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Reads an mbox file or a directory tree of them.
#[derive(Debug)]
pub struct MboxReader {
    path: PathBuf,
    variant: Variant,
    directory: bool,
}

impl MboxReader {
    /// Opens one mbox file (the folder `INBOX`) or a directory of them.
    pub fn open(path: &Path, variant: Variant) -> Result<MboxReader> {
        let meta = fs::metadata(path).map_err(io_err(path))?;
        if !meta.is_file() && !meta.is_dir() {
            return Err(format_err(path, "neither a file nor a directory"));
        }
        Ok(MboxReader { path: path.to_path_buf(), variant, directory: meta.is_dir() })
    }

    /// The folders: INBOX first (a single file, or a top-level `Inbox` in any case), then the
    /// others by name. All are subscribed; UIDVALIDITY is Dovecot's `X-IMAPbase`.
    pub fn folders(&self) -> Result<Vec<Folder>> {
        let mut out = Vec::new();
        for (name, path) in self.folder_paths()? {
            // A file that is no mbox at all shows as a folder; listing it reports the error.
            let uidvalidity = match scan(&path, true) {
                Ok(scan) => scan.uidvalidity,
                Err(Error::Format { .. }) => None,
                Err(e) => return Err(e),
            };
            out.push(Folder { name, uidvalidity, subscribed: true });
        }
        Ok(out)
    }

    /// The messages of `folder`, in file order, in one streaming pass over the file.
    pub fn list(&self, folder: &str) -> Result<Vec<Listed>> {
        let path = self.folder_path(folder)?;
        Ok(scan(&path, false)?.messages)
    }

    /// The message as IMAP sees it: unquoted, without the mbox's own headers and the blank
    /// line that separates it from the next, with CRLF line ends.
    pub fn read(&self, listed: &Listed) -> Result<Vec<u8>> {
        let Location::Range { path, start, end } = &listed.location else {
            return Err(format_err(&self.path, "a file is not an mbox message"));
        };
        let mut file = open(path)?;
        let len = file.metadata().map_err(io_err(path))?.len();
        if start > end || *end > len {
            return Err(format_err(path, format!("bytes {start}..{end} are not in the file (it changed?)")));
        }
        let size = usize::try_from(end - start).map_err(|_| format_err(path, "message too large for this machine"))?;
        let mut raw = vec![0; size];
        file.seek(SeekFrom::Start(*start)).map_err(io_err(path))?;
        file.read_exact(&mut raw).map_err(io_err(path))?;
        Ok(message_from_raw(&raw, self.variant))
    }

    fn folder_path(&self, folder: &str) -> Result<PathBuf> {
        self.folder_paths()?
            .into_iter()
            .find(|(name, _)| name == folder || (name == "INBOX" && folder.eq_ignore_ascii_case("INBOX")))
            .map(|(_, path)| path)
            .ok_or_else(|| format_err(&self.path, format!("no folder {folder:?} here")))
    }

    /// Every folder's name and file.
    fn folder_paths(&self) -> Result<Vec<(String, PathBuf)>> {
        if !self.directory {
            return Ok(vec![("INBOX".to_string(), self.path.clone())]);
        }
        let mut found = Vec::new();
        walk(&self.path, &mut Vec::new(), &mut found)?;
        // Two files with one name (`A.sbd/B` and `A/B`): the first found is kept, so that
        // every call makes the same choice.
        let mut seen = std::collections::HashSet::new();
        found.retain(|(name, _)| seen.insert(name.clone()));
        found.sort_by(|a, b| (a.0 != "INBOX", &a.0).cmp(&(b.0 != "INBOX", &b.0)));
        Ok(found)
    }
}

/// Collects the mbox files under `dir`. Symbolic links to directories are not followed (a
/// link loop would never end); links to files are.
fn walk(dir: &Path, levels: &mut Vec<String>, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    if levels.len() >= MAX_DEPTH {
        return Ok(());
    }
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        entries.push(entry.map_err(io_err(dir))?);
    }
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let file_type = entry.file_type().map_err(io_err(&path))?;
        let (is_dir, is_file) = if file_type.is_symlink() {
            match fs::metadata(&path) {
                Ok(meta) => (false, meta.is_file()),
                Err(_) => continue,
            }
        } else {
            (file_type.is_dir(), file_type.is_file())
        };
        if is_dir {
            let level = name.strip_suffix(".sbd").unwrap_or(&name);
            if level.is_empty() {
                continue;
            }
            levels.push(utf7::decode_lenient(level));
            walk(&path, levels, out)?;
            levels.pop();
        } else if is_file {
            let lower = name.to_ascii_lowercase();
            if SKIPPED_EXTENSIONS.iter().any(|ext| lower.ends_with(ext)) {
                continue;
            }
            levels.push(utf7::decode_lenient(&name));
            out.push((join_levels(levels.clone()), path));
            levels.pop();
        }
    }
    Ok(())
}

/// Reads lines from a file, keeping the first [`HEAD_MAX`] bytes of each and its offset.
struct LineReader {
    inner: BufReader<File>,
    offset: u64,
}

impl LineReader {
    /// The next line's start and length, its first bytes in `head`; `None` at the end.
    fn next_line(&mut self, head: &mut Vec<u8>) -> io::Result<Option<(u64, u64)>> {
        head.clear();
        let start = self.offset;
        let mut len = 0u64;
        loop {
            let buf = match self.inner.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                break;
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            let room = HEAD_MAX.saturating_sub(head.len());
            head.extend_from_slice(&buf[..take.min(room)]);
            self.inner.consume(take);
            len += take as u64;
            if done {
                break;
            }
        }
        self.offset += len;
        Ok((len > 0).then_some((start, len)))
    }

    fn seek(&mut self, pos: u64) -> io::Result<()> {
        self.inner.seek(SeekFrom::Start(pos))?;
        self.offset = pos;
        Ok(())
    }
}

/// What one pass over an mbox file found.
struct Scan {
    messages: Vec<Listed>,
    uidvalidity: Option<u32>,
}

/// A message being read: where it starts and the header fields that matter.
struct Pending {
    start: u64,
    from_date: Option<i64>,
    in_header: bool,
    fields: Vec<(Field, Vec<u8>)>,
    /// The field a continuation line extends.
    current: Option<usize>,
}

impl Pending {
    fn header_line(&mut self, line: &[u8]) {
        if is_continuation(line) {
            if let Some((_, value)) = self.current.and_then(|i| self.fields.get_mut(i))
                && value.len() < FIELD_MAX
            {
                value.push(b' ');
                value.extend_from_slice(trim_line_end(line).trim_ascii());
                value.truncate(FIELD_MAX);
            }
            return;
        }
        self.current = None;
        let Some(kind) = header_name(line).and_then(field_of) else { return };
        // Keywords may come in several fields; of the others the first counts.
        if kind != Field::XKeywords && self.get(kind).is_some() {
            return;
        }
        let colon = line.iter().position(|&b| b == b':').unwrap_or(0);
        let mut value = trim_line_end(&line[colon + 1..]).trim_ascii().to_vec();
        value.truncate(FIELD_MAX);
        self.fields.push((kind, value));
        self.current = Some(self.fields.len() - 1);
    }

    fn get(&self, kind: Field) -> Option<&[u8]> {
        self.fields.iter().find(|(k, _)| *k == kind).map(|(_, v)| v.as_slice())
    }

    fn flags(&self) -> Vec<String> {
        let status = self.get(Field::Status).unwrap_or_default();
        let x_status = self.get(Field::XStatus).unwrap_or_default();
        let mut flags = Vec::new();
        if status.contains(&b'R') {
            flags.push(SEEN.to_string());
        }
        for (letter, flag) in [(b'A', ANSWERED), (b'F', FLAGGED), (b'D', DELETED), (b'T', DRAFT)] {
            if x_status.contains(&letter) {
                flags.push(flag.to_string());
            }
        }
        for (kind, value) in &self.fields {
            if *kind != Field::XKeywords {
                continue;
            }
            for keyword in String::from_utf8_lossy(value).split([',', ' ', '\t']) {
                if is_keyword(keyword) {
                    push_flag(&mut flags, keyword);
                }
            }
        }
        flags
    }
}

/// The first number of a field (`X-UID: 7`, `X-IMAPbase: <uidvalidity> <uidnext>`), when it
/// is a valid UID or UIDVALIDITY (not 0).
fn first_number(value: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(value).ok()?;
    text.split_ascii_whitespace().next()?.parse().ok().filter(|&n| n != 0)
}

/// Where the next message starts if a message's `Content-Length` is right: the body is then
/// followed by the end of the file, or a blank line and the end or a From_ line, or directly
/// a From_ line (the flag: then no blank line precedes it).
fn content_length_end(file: &File, file_len: u64, body_start: u64, length: &[u8]) -> Option<(u64, bool)> {
    let length: u64 = std::str::from_utf8(length).ok()?.trim().parse().ok()?;
    let end = body_start.checked_add(length)?;
    if end > file_len {
        return None;
    }
    let mut buf = [0u8; 7];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], end + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    let next = &buf[..got];
    let at_end = end + got as u64 == file_len;
    let blank_then_end = (next == b"\n" || next == b"\r\n") && at_end;
    if next.is_empty() || next.starts_with(b"\nFrom ") || next.starts_with(b"\r\nFrom ") || blank_then_end {
        Some((end, false))
    } else if next.starts_with(b"From ") {
        Some((end, true))
    } else {
        None
    }
}

/// One pass over an mbox file. With `first_only`, it stops after the first message's header
/// (for the folder's UIDVALIDITY).
fn scan(path: &Path, first_only: bool) -> Result<Scan> {
    let file = open(path)?;
    let file_len = file.metadata().map_err(io_err(path))?.len();
    let probe = file.try_clone().map_err(io_err(path))?;
    let mut lines = LineReader { inner: BufReader::with_capacity(64 * 1024, file), offset: 0 };
    let mut out = Scan { messages: Vec::new(), uidvalidity: None };
    let mut has_uids = false;
    let mut last_uid = 0u32;
    let mut count = 0usize;
    let mut finish = |p: Pending, end: u64, out: &mut Scan| {
        let first = count == 0;
        count += 1;
        if first {
            if let Some(v) = p.get(Field::XImap) {
                // UW-IMAP's pseudo message keeps the folder's data and is no message.
                has_uids = true;
                out.uidvalidity = first_number(v);
                return;
            }
            if let Some(v) = p.get(Field::XImapBase) {
                has_uids = true;
                out.uidvalidity = first_number(v);
            }
        }
        // UIDs must ascend; one that does not is not trusted (Dovecot renumbers it).
        let uid = p.get(Field::XUid).and_then(first_number).filter(|&u| has_uids && u > last_uid && u != u32::MAX);
        if let Some(uid) = uid {
            last_uid = uid;
        }
        let internal_date = p.from_date.or_else(|| p.get(Field::Date).and_then(parse_date_bytes)).unwrap_or(0);
        out.messages.push(Listed {
            uid,
            flags: p.flags(),
            internal_date,
            size: None,
            location: Location::Range { path: path.to_path_buf(), start: p.start, end },
        });
    };
    let mut head = Vec::new();
    let mut prev_blank = true;
    let mut pending: Option<Pending> = None;
    while let Some((start, len)) = lines.next_line(&mut head).map_err(io_err(path))? {
        let blank = is_blank(&head);
        if prev_blank && head.starts_with(b"From ") {
            if let Some(p) = pending.take() {
                finish(p, start, &mut out);
                if first_only {
                    return Ok(out);
                }
            }
            pending = Some(Pending {
                start: start + len,
                from_date: parse_date_bytes(&head[5..]),
                in_header: true,
                fields: Vec::new(),
                current: None,
            });
            prev_blank = false;
            continue;
        }
        let Some(p) = pending.as_mut() else {
            if blank {
                continue;
            }
            return Err(format_err(path, "not an mbox file: it does not begin with a \"From \" line"));
        };
        if p.in_header {
            if blank {
                p.in_header = false;
                if first_only {
                    break;
                }
                let body_start = start + len;
                if let Some((next, direct)) =
                    p.get(Field::ContentLength).and_then(|cl| content_length_end(&probe, file_len, body_start, cl))
                {
                    lines.seek(next).map_err(io_err(path))?;
                    prev_blank = direct;
                    continue;
                }
            } else {
                p.header_line(&head);
            }
        }
        prev_blank = blank;
    }
    if let Some(p) = pending {
        let end = lines.offset;
        finish(p, end, &mut out);
    }
    Ok(out)
}

/// A message's bytes between its From_ line and the next, as IMAP sees them.
fn message_from_raw(raw: &[u8], variant: Variant) -> Vec<u8> {
    // The header's end and Content-Length decide whether the body was quoted (see the module
    // documentation).
    let mut offset = 0usize;
    let mut body_start = None;
    let mut content_length = None;
    for line in lines(raw) {
        offset += line.len();
        if is_blank(line) {
            body_start = Some(offset);
            break;
        }
        if content_length.is_none() && header_name(line).and_then(field_of) == Some(Field::ContentLength) {
            let colon = line.iter().position(|&b| b == b':').unwrap_or(0);
            content_length = std::str::from_utf8(trim_line_end(&line[colon + 1..]))
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
        }
    }
    let unquoted = match (body_start, content_length) {
        (Some(start), Some(length)) => match start.checked_add(length) {
            Some(end) if end <= raw.len() => {
                let rest = &raw[end..];
                rest.is_empty() || rest == b"\n" || rest == b"\r\n"
            }
            _ => false,
        },
        _ => false,
    };
    // The blank line before the next From_ line (or the end) separates; it is not the message's.
    let content = if raw.ends_with(b"\n\n") {
        &raw[..raw.len() - 1]
    } else if raw.ends_with(b"\n\r\n") {
        &raw[..raw.len() - 2]
    } else {
        raw
    };
    let mut out = Vec::with_capacity(content.len());
    let mut in_header = true;
    let mut internal = InternalFields::default();
    for line in lines(content) {
        let line = if unquoted { line } else { variant.unquote(line) };
        if in_header {
            if is_blank(line) {
                in_header = false;
            } else if internal.skips(line) {
                continue;
            }
        }
        out.extend_from_slice(line);
    }
    to_crlf(&out)
}

/// Picks out the lines of a header that belong to mbox-internal fields (`Status:`,
/// `X-Keywords:`, ... with their continuation lines), line by line.
#[derive(Debug, Default)]
struct InternalFields {
    /// Whether the field the last line began is internal.
    skipping: bool,
}

impl InternalFields {
    /// Whether `line` (of the header, not blank) is part of an internal field.
    fn skips(&mut self, line: &[u8]) -> bool {
        if !is_continuation(line) {
            self.skipping = header_name(line).and_then(internal_field).is_some();
        }
        self.skipping
    }
}

/// Writes mbox files: one file, or a directory tree of them.
///
/// Dovecot reads what this writes (dates, `\Seen`, `\Answered`, `\Flagged`, `\Deleted`,
/// `\Draft`), but it takes only keywords the first message's `X-IMAPbase:` declares, which
/// this writer, appending message by message, does not write: keywords reach mbox readers
/// that take `X-Keywords:` as it stands (this crate's reader, mutt).
#[derive(Debug)]
pub struct MboxWriter {
    path: PathBuf,
    variant: Variant,
    directory: bool,
}

impl MboxWriter {
    /// An existing file is one mbox that every folder is appended to; otherwise `dir_or_file`
    /// is a directory (created if missing) with a file for each folder: `A/B` is `A.sbd/B`
    /// (Thunderbird's layout, which keeps a folder's messages, the file `A`, beside its
    /// children, the directory `A.sbd`). Files are appended to, never truncated; mbox keeps no
    /// UIDs, so exporting twice into the same place writes every message twice.
    pub fn create(dir_or_file: &Path, variant: Variant) -> Result<MboxWriter> {
        let directory = match fs::metadata(dir_or_file) {
            Ok(meta) if meta.is_file() => false,
            Ok(meta) if meta.is_dir() => true,
            Ok(_) => return Err(format_err(dir_or_file, "neither a file nor a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(dir_or_file).map_err(io_err(dir_or_file))?;
                true
            }
            Err(e) => return Err(io_err(dir_or_file)(e)),
        };
        Ok(MboxWriter { path: dir_or_file.to_path_buf(), variant, directory })
    }

    /// Opens a folder's file for appending. A name whose level the reader would not read
    /// back as a folder (empty, `.`-leading, ending in `.sbd` or a skipped extension) fails
    /// with a Format error.
    pub fn folder(&mut self, folder: &Folder) -> Result<MboxFolderWriter> {
        let path = if self.directory { self.folder_path(&folder.name)? } else { self.path.clone() };
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let file = OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(io_err(&path))?;
        let len = file.metadata().map_err(io_err(&path))?.len();
        // What is there must end in a blank line, or the first From_ line would not start a
        // message.
        let mut tail = [0u8; 3];
        let tail_len = len.min(3) as usize;
        file.read_exact_at(&mut tail[..tail_len], len - tail_len as u64).map_err(io_err(&path))?;
        let tail = &tail[..tail_len];
        let separator: &[u8] = if len == 0 || tail.ends_with(b"\n\n") || tail.ends_with(b"\n\r\n") {
            b""
        } else if tail.ends_with(b"\n") {
            b"\n"
        } else {
            b"\n\n"
        };
        let mut out = BufWriter::with_capacity(64 * 1024, file);
        out.write_all(separator).map_err(io_err(&path))?;
        Ok(MboxFolderWriter { path, out, variant: self.variant, dropped_keywords: 0 })
    }

    fn folder_path(&self, name: &str) -> Result<PathBuf> {
        let levels: Vec<&str> = name.split('/').collect();
        let mut path = self.path.clone();
        for (i, level) in levels.iter().enumerate() {
            // A name that modified UTF-7 decoding would change (`a&-b`) is written encoded, so
            // that the reader's lenient decoding gives it back as it was.
            let on_disk = if utf7::decode_lenient(level) == *level { level.to_string() } else { utf7::encode(level) };
            let lower = on_disk.to_ascii_lowercase();
            if on_disk.is_empty()
                || on_disk.starts_with('.')
                || on_disk.contains('\0')
                || lower.ends_with(".sbd")
                || SKIPPED_EXTENSIONS.iter().any(|ext| lower.ends_with(ext))
            {
                return Err(format_err(
                    &self.path,
                    format!("folder {name:?}: the level {level:?} cannot be a file name in an mbox tree"),
                ));
            }
            if i + 1 < levels.len() {
                path.push(format!("{on_disk}.sbd"));
            } else {
                path.push(on_disk);
            }
        }
        Ok(path)
    }
}

/// Appends messages to one mbox file. Call [`finish`](Self::finish) to learn whether the
/// last writes reached the disk.
#[derive(Debug)]
pub struct MboxFolderWriter {
    path: PathBuf,
    out: BufWriter<File>,
    variant: Variant,
    dropped_keywords: u64,
}

impl MboxFolderWriter {
    /// Appends a message: `flags` as IMAP flags (`\Recent` is not stored, `$Forwarded` and
    /// other keywords go to `X-Keywords:`), `internal_date` in seconds since the epoch (the
    /// From_ line's date, UTC), `body` in IMAP's CRLF form. The body's own mbox headers
    /// (`Status:`, `X-UID:`, `Content-Length:`, …) are replaced by this writer's. A body that
    /// does not end in a line end gains one, as mbox has no way to keep that.
    pub fn add(&mut self, flags: &[String], internal_date: i64, body: &[u8]) -> Result<()> {
        let data = disk_form(body);
        let mut header_len = 0;
        for line in lines(&data) {
            if is_blank(line) {
                break;
            }
            header_len += line.len();
        }
        let (header, rest) = data.split_at(header_len);
        let sender = return_path(header).unwrap_or_else(|| "MAILER-DAEMON".to_string());
        let mut msg = Vec::with_capacity(data.len() + 128);
        msg.extend_from_slice(format!("From {sender} {}\n", asctime(internal_date)).as_bytes());
        let mut internal = InternalFields::default();
        let mut ended = true;
        for line in lines(header) {
            if internal.skips(line) {
                continue;
            }
            self.push_quoted(&mut msg, line);
            ended = line.ends_with(b"\n");
        }
        if !ended {
            msg.push(b'\n');
        }
        self.push_flags(&mut msg, flags);
        for line in lines(rest) {
            self.push_quoted(&mut msg, line);
        }
        if !rest.is_empty() && !rest.ends_with(b"\n") {
            msg.push(b'\n');
        }
        msg.push(b'\n');
        self.out.write_all(&msg).map_err(io_err(&self.path))
    }

    /// How many keywords were left out, message by message, because they cannot be written
    /// into `X-Keywords:` (not valid IMAP keywords, or containing a comma).
    pub fn dropped_keywords(&self) -> u64 {
        self.dropped_keywords
    }

    /// Flushes the file and syncs it to disk.
    pub fn finish(mut self) -> Result<()> {
        self.out.flush().map_err(io_err(&self.path))?;
        self.out.get_ref().sync_all().map_err(io_err(&self.path))
    }

    fn push_quoted(&self, msg: &mut Vec<u8>, line: &[u8]) {
        if self.variant.needs_quote(line) {
            msg.push(b'>');
        }
        msg.extend_from_slice(line);
    }

    fn push_flags(&mut self, msg: &mut Vec<u8>, flags: &[String]) {
        let has = |flag: &str| flags.iter().any(|f| f.eq_ignore_ascii_case(flag));
        msg.extend_from_slice(if has(SEEN) { b"Status: RO\n" } else { b"Status: O\n" });
        let mut x_status = String::new();
        for (flag, letter) in [(ANSWERED, 'A'), (FLAGGED, 'F'), (DRAFT, 'T'), (DELETED, 'D')] {
            if has(flag) {
                x_status.push(letter);
            }
        }
        if !x_status.is_empty() {
            msg.extend_from_slice(format!("X-Status: {x_status}\n").as_bytes());
        }
        let mut keywords: Vec<String> = Vec::new();
        for flag in flags.iter().filter(|f| !f.starts_with('\\')) {
            if is_keyword(flag) && !flag.contains(',') {
                push_flag(&mut keywords, flag);
            } else {
                self.dropped_keywords += 1;
            }
        }
        if !keywords.is_empty() {
            msg.extend_from_slice(format!("X-Keywords: {}\n", keywords.join(" ")).as_bytes());
        }
    }
}

/// The address of a `Return-Path:` header, for the From_ line; `None` when there is none or
/// it is empty (`<>`) or could not stand as one word there.
fn return_path(header: &[u8]) -> Option<String> {
    let line = lines(header).find(|l| header_name(l).is_some_and(|n| n.eq_ignore_ascii_case(b"Return-Path")))?;
    let colon = line.iter().position(|&b| b == b':')?;
    let value = std::str::from_utf8(trim_line_end(&line[colon + 1..])).ok()?.trim();
    let addr = value.strip_prefix('<').and_then(|v| v.strip_suffix('>')).unwrap_or(value);
    (!addr.is_empty() && addr.len() <= 256 && addr.bytes().all(|b| b.is_ascii_graphic())).then(|| addr.to_string())
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// A time as a From_ line's asctime date in UTC (`Mon Jan  1 00:00:00 2024`). Times before
/// 1970 or after 9999 are clamped: the From_ line's year has four digits.
fn asctime(secs: i64) -> String {
    let secs = secs.clamp(0, 253_402_300_799);
    chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default().format("%a %b %e %H:%M:%S %Y").to_string()
}

fn parse_date_bytes(text: &[u8]) -> Option<i64> {
    parse_date(&String::from_utf8_lossy(text))
}

/// A date in a From_ line (asctime: `[Mon] Jan  1 00:00:00 [zone] 2024 [zone]`, after the
/// sender) or a `Date:` header (RFC 5322: `[Mon,] 1 Jan 2024 00:00:00 [zone]`), as seconds
/// since the epoch. Without a zone the time is UTC; named zones are the RFC 5322 ones.
fn parse_date(text: &str) -> Option<i64> {
    let tokens: Vec<&str> = text.split(|c: char| c.is_whitespace() || c == ',').filter(|t| !t.is_empty()).collect();
    for (t, token) in tokens.iter().enumerate() {
        let Some((hour, minute, second)) = parse_time(token) else { continue };
        let after = &tokens[t + 1..];
        if t >= 2
            && let (Some(month), Some(day)) = (parse_month(tokens[t - 2]), parse_day(tokens[t - 1]))
            && let Some(year) = after.iter().take(2).find_map(|x| parse_year(x))
        {
            let zone = after.iter().take(3).find_map(|x| parse_zone(x)).unwrap_or(0);
            return compose(year, month, day, hour, minute, second, zone);
        }
        if t >= 3
            && let (Some(day), Some(month), Some(year)) =
                (parse_day(tokens[t - 3]), parse_month(tokens[t - 2]), parse_year(tokens[t - 1]))
        {
            let zone = tokens.get(t + 1).and_then(|x| parse_zone(x)).unwrap_or(0);
            return compose(year, month, day, hour, minute, second, zone);
        }
    }
    None
}

fn compose(year: i64, month: u32, day: u32, hour: i64, minute: i64, second: i64, zone: i64) -> Option<i64> {
    let date = chrono::NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp() + hour * 3600 + minute * 60 + second - zone)
}

fn digits(s: &str, min: usize, max: usize) -> Option<i64> {
    (s.len() >= min && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
}

fn parse_time(s: &str) -> Option<(i64, i64, i64)> {
    let mut parts = s.split(':');
    let hour = digits(parts.next()?, 1, 2)?;
    let minute = digits(parts.next()?, 1, 2)?;
    let second = match parts.next() {
        Some(p) => digits(p, 1, 2)?,
        None => 0,
    };
    (parts.next().is_none() && hour < 24 && minute < 60 && second <= 60).then_some((hour, minute, second))
}

fn parse_month(s: &str) -> Option<u32> {
    if s.len() < 3 || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let prefix = &s.as_bytes()[..3];
    MONTHS.iter().position(|m| m.as_bytes().eq_ignore_ascii_case(prefix)).map(|i| i as u32 + 1)
}

fn parse_day(s: &str) -> Option<u32> {
    digits(s, 1, 2).filter(|d| (1..=31).contains(d)).map(|d| d as u32)
}

/// A year: four digits, or RFC 5322's obsolete two (before 50: 20xx) and three (+1900).
fn parse_year(s: &str) -> Option<i64> {
    let year = digits(s, 2, 4)?;
    Some(match s.len() {
        2 if year < 50 => 2000 + year,
        2 | 3 => 1900 + year,
        _ => year,
    })
}

/// A zone's offset east of UTC in seconds: `+hhmm`, `-hhmm`, or an RFC 5322 name.
fn parse_zone(s: &str) -> Option<i64> {
    let signed = match s.as_bytes().first() {
        Some(b'+') => Some((1, &s[1..])),
        Some(b'-') => Some((-1, &s[1..])),
        _ => None,
    };
    if let Some((sign, rest)) = signed {
        let n = digits(rest, 4, 4)?;
        return Some(sign * (n / 100 * 3600 + n % 100 * 60));
    }
    let hours = match s.to_ascii_uppercase().as_str() {
        "UT" | "UTC" | "GMT" | "Z" => 0,
        "EDT" => -4,
        "EST" | "CDT" => -5,
        "CST" | "MDT" => -6,
        "MST" | "PDT" => -7,
        "PST" => -8,
        _ => return None,
    };
    Some(hours * 3600)
}
