//! Maildir in Dovecot's layout (Maildir++), read and written.
//!
//! The root's `cur/`, `new/` and `tmp/` are INBOX; every other folder is a directory
//! `root/.Level1.Level2` whose levels are modified UTF-7. In each folder Dovecot keeps
//! `dovecot-uidlist` (UIDVALIDITY, the next UID and a UID for each message, by the message's
//! base file name) and `dovecot-keywords` (the names of the keyword letters `a`–`z` of the file
//! names' `:2,` info). The root's `subscriptions` lists the subscribed folders.
//!
//! What was checked against Dovecot 2.3 and why this module follows it where a Maildir text
//! says otherwise: Dovecot reads the flags of files in `new/` too (it writes flagged files
//! there itself, e.g. after `doveadm flags add`), so the reader does as well. Dovecot ignores
//! the letter `P` and stores `$Forwarded` as a keyword letter, so the writer does that, while
//! the reader, for messages other programs flagged, also takes `P` as `$Forwarded`. Dovecot
//! writes the names in `subscriptions` version 2 in modified UTF-7 (as on disk), TAB between
//! levels, so the writer does too and the reader decodes them leniently.
//!
//! The `LAYOUT=fs` variant and other control-directory settings are not supported: a Maildir
//! to import is taken as Dovecot lays it out by default.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tern_mail::utf7;

use crate::util::{
    ANSWERED, DELETED, DRAFT, FLAGGED, FORWARDED, SEEN, crlf_size, disk_form, format_err, io_err, is_keyword,
    join_levels, push_flag, read_optional, system_time, to_crlf, unix_secs, write_atomic,
};
use crate::{Folder, Listed, Location, Result};

#[cfg(test)]
mod tests;

const UIDLIST: &str = "dovecot-uidlist";
const KEYWORDS: &str = "dovecot-keywords";
const SUBSCRIPTIONS: &str = "subscriptions";
/// Maildir has the 26 letters `a`–`z` for keywords; Dovecot keeps any more in its index only.
const MAX_KEYWORDS: usize = 26;
/// The header of Dovecot 2.x's `subscriptions` file.
const SUBSCRIPTIONS_V2: &[u8] = b"V\t2\n\n";

/// Reads a Maildir++ tree as Dovecot lays it out.
#[derive(Debug)]
pub struct MaildirReader {
    root: PathBuf,
}

impl MaildirReader {
    /// Opens the Maildir whose root (INBOX's `cur`, `new`, `tmp`, and the `.Folder`
    /// directories) is `root`.
    pub fn open(root: &Path) -> Result<MaildirReader> {
        let meta = fs::metadata(root).map_err(io_err(root))?;
        if !meta.is_dir() {
            return Err(format_err(root, "not a directory, so not a Maildir"));
        }
        Ok(MaildirReader { root: root.to_path_buf() })
    }

    /// The folders: INBOX first (when the root has `cur/` or `new/`), then the others by name.
    pub fn folders(&self) -> Result<Vec<Folder>> {
        let subscribed = match read_optional(&self.root.join(SUBSCRIPTIONS))? {
            Some(data) => parse_subscriptions(&data),
            None => BTreeSet::new(),
        };
        let mut out = Vec::new();
        for (name, dir) in self.folder_dirs()? {
            let uidvalidity = read_uidvalidity(&dir.join(UIDLIST))?;
            let subscribed = subscribed.contains(&name);
            out.push(Folder { name, uidvalidity, subscribed });
        }
        Ok(out)
    }

    /// The messages of `folder` (a name [`folders`](Self::folders) gave): by UID, then those
    /// without one in the order Dovecot would number them (by the time in their file name).
    pub fn list(&self, folder: &str) -> Result<Vec<Listed>> {
        let dir = self.folder_dir(folder)?;
        let keywords = match read_optional(&dir.join(KEYWORDS))? {
            Some(data) => parse_keywords(&data),
            None => vec![None; MAX_KEYWORDS],
        };
        let uidlist = match read_optional(&dir.join(UIDLIST))? {
            Some(data) => parse_uidlist(&data).unwrap_or_default(),
            None => Uidlist::default(),
        };
        let mut by_base: HashMap<&[u8], &Record> = HashMap::with_capacity(uidlist.records.len());
        for rec in &uidlist.records {
            by_base.entry(base_name(&rec.filename)).or_insert(rec);
        }
        let mut used_uids = HashSet::new();
        let mut listed: Vec<(Vec<u8>, Listed)> = Vec::new();
        for sub in ["cur", "new"] {
            let subdir = dir.join(sub);
            let entries = match fs::read_dir(&subdir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&subdir)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(io_err(&subdir))?;
                let file_name = entry.file_name();
                let name = file_name.as_bytes();
                if name.is_empty() || name[0] == b'.' {
                    continue;
                }
                let path = entry.path();
                // A file renamed by another program between the directory read and this stat
                // is skipped rather than failing the whole folder.
                let meta = match fs::metadata(&path) {
                    Ok(meta) => meta,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err(&path)(e)),
                };
                if !meta.is_file() {
                    continue;
                }
                let base = base_name(name);
                let rec = by_base.get(base).copied();
                // One UID names one message: a second file with the same base name (a copy
                // in both cur/ and new/) is listed without it.
                let uid = rec.map(|r| r.uid).filter(|uid| used_uids.insert(*uid));
                let internal_date = meta.modified().map(unix_secs).unwrap_or_else(|_| leading_number(name));
                let size = size_field(base, b'W').or_else(|| rec.and_then(Record::vsize));
                let flags = parse_flags(name, &keywords);
                listed
                    .push((name.to_vec(), Listed { uid, flags, internal_date, size, location: Location::File(path) }));
            }
        }
        listed.sort_by(|(a_name, a), (b_name, b)| match (a.uid, b.uid) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => {
                (leading_number(a_name), base_name(a_name)).cmp(&(leading_number(b_name), base_name(b_name)))
            }
        });
        Ok(listed.into_iter().map(|(_, l)| l).collect())
    }

    /// The message as IMAP sees it (bare LF made CRLF). When the file has gone because another
    /// program renamed it (a flag change moves it within `cur/` or from `new/` to `cur/`), it
    /// is looked up again by its base name.
    pub fn read(&self, listed: &Listed) -> Result<Vec<u8>> {
        let Location::File(path) = &listed.location else {
            return Err(format_err(&self.root, "a byte range is not a Maildir message"));
        };
        match fs::read(path) {
            Ok(data) => Ok(to_crlf(&data)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match find_moved(path) {
                Some(moved) => fs::read(&moved).map(|d| to_crlf(&d)).map_err(io_err(&moved)),
                None => Err(io_err(path)(e)),
            },
            Err(e) => Err(io_err(path)(e)),
        }
    }

    /// The directory of a folder name.
    fn folder_dir(&self, folder: &str) -> Result<PathBuf> {
        self.folder_dirs()?
            .into_iter()
            .find(|(name, _)| name == folder || (name == "INBOX" && folder.eq_ignore_ascii_case("INBOX")))
            .map(|(_, dir)| dir)
            .ok_or_else(|| format_err(&self.root, format!("no folder {folder:?} in this Maildir")))
    }

    /// Every folder's name and directory, INBOX first and the others by name. Names are
    /// matched to directories by scanning, because a name decoded leniently (not valid
    /// modified UTF-7) does not encode back to its directory.
    fn folder_dirs(&self) -> Result<Vec<(String, PathBuf)>> {
        let mut candidates = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(io_err(&self.root))? {
            let entry = entry.map_err(io_err(&self.root))?;
            let file_name = entry.file_name();
            let bytes = file_name.as_bytes();
            if bytes.len() < 2 || bytes[0] != b'.' || bytes == b".." {
                continue;
            }
            let path = entry.path();
            if !is_mail_dir(&path) {
                continue;
            }
            let name = name_from_disk(&String::from_utf8_lossy(&bytes[1..]));
            // INBOX is the root in Maildir++; a `.INBOX` directory cannot be reached under
            // that name, as in Dovecot.
            if name == "INBOX" {
                continue;
            }
            candidates.push((name, path));
        }
        // Two directories that decode to one name (`.a&AOQ-` and a raw UTF-8 `.aä`): the
        // first by directory name is kept, so the choice is the same on every call.
        candidates.sort_by(|a, b| a.1.cmp(&b.1));
        let mut others = BTreeMap::new();
        for (name, path) in candidates {
            others.entry(name).or_insert(path);
        }
        let mut out = Vec::with_capacity(others.len() + 1);
        if is_mail_dir(&self.root) {
            out.push(("INBOX".to_string(), self.root.clone()));
        }
        out.extend(others);
        Ok(out)
    }
}

/// Whether a directory holds a Maildir folder.
fn is_mail_dir(dir: &Path) -> bool {
    dir.join("cur").is_dir() || dir.join("new").is_dir()
}

/// The IMAP name of a Maildir++ directory name (without its leading dot): levels separated
/// by `.`, each modified UTF-7, or taken as it stands where it is not valid modified UTF-7.
fn name_from_disk(on_disk: &str) -> String {
    let levels: Vec<String> = on_disk.split('.').map(|l| utf7::decode(l).unwrap_or_else(|| l.to_string())).collect();
    join_levels(levels)
}

/// The base name of a Maildir file: up to the first `:`, which starts the info (`:2,FS`).
/// Dovecot's UID list matches files by it, so a flag change keeps the UID.
fn base_name(name: &[u8]) -> &[u8] {
    match name.iter().position(|&b| b == b':') {
        Some(i) => &name[..i],
        None => name,
    }
}

/// The number a Maildir file name starts with: the delivery time, by convention.
fn leading_number(name: &[u8]) -> i64 {
    name.iter().take_while(|b| b.is_ascii_digit()).take(18).fold(0i64, |n, &b| n * 10 + i64::from(b - b'0'))
}

/// A `,<key>=<n>` field of a base name (Dovecot's `S=` file size and `W=` CRLF size), when
/// its digits end the name or are followed by `,`, as Dovecot requires.
fn size_field(base: &[u8], key: u8) -> Option<u64> {
    let mut i = 0;
    while i + 3 <= base.len() {
        if base[i] == b',' && base[i + 1] == key && base[i + 2] == b'=' {
            let digits: &[u8] = &base[i + 3..];
            let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
            if len == 0 || len > 19 || !matches!(digits.get(len), None | Some(b',')) {
                return None;
            }
            return std::str::from_utf8(&digits[..len]).ok()?.parse().ok();
        }
        i += 1;
    }
    None
}

/// The IMAP flags of a file name's `:2,` info. Uppercase letters are the system flags (and
/// `P`, passed, is `$Forwarded`); `a`–`z` are keywords named in `dovecot-keywords`; a letter
/// without a name, and anything else, is ignored; a `,` ends the letters (Dovecot's
/// extension fields follow it).
fn parse_flags(name: &[u8], keywords: &[Option<String>]) -> Vec<String> {
    let Some(colon) = name.iter().rposition(|&b| b == b':') else { return Vec::new() };
    let Some(letters) = name[colon + 1..].strip_prefix(b"2,") else { return Vec::new() };
    let letters: Vec<u8> = letters.iter().copied().take_while(|&b| b != b',').collect();
    let mut flags = Vec::new();
    for (letter, flag) in [(b'S', SEEN), (b'R', ANSWERED), (b'F', FLAGGED), (b'T', DELETED), (b'D', DRAFT)] {
        if letters.contains(&letter) {
            flags.push(flag.to_string());
        }
    }
    if letters.contains(&b'P') {
        flags.push(FORWARDED.to_string());
    }
    for (i, keyword) in keywords.iter().enumerate().take(MAX_KEYWORDS) {
        if let Some(keyword) = keyword
            && letters.contains(&(b'a' + i as u8))
        {
            push_flag(&mut flags, keyword);
        }
    }
    flags
}

/// Finds a file that was renamed since it was listed: same base name, in `cur/` or `new/` of
/// the same folder.
fn find_moved(path: &Path) -> Option<PathBuf> {
    let base = base_name(path.file_name()?.as_bytes()).to_vec();
    let folder = path.parent()?.parent()?;
    for sub in ["cur", "new"] {
        let Ok(entries) = fs::read_dir(folder.join(sub)) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.as_bytes();
            if !name.starts_with(b".") && base_name(name) == base.as_slice() {
                return Some(entry.path());
            }
        }
    }
    None
}

/// `dovecot-keywords`: lines `<index> <name>`, index 0 for the letter `a`. Lines that do not
/// parse, and indexes past `z`, are ignored; the first line for an index wins.
fn parse_keywords(data: &[u8]) -> Vec<Option<String>> {
    let mut slots = vec![None; MAX_KEYWORDS];
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(space) = line.iter().position(|&b| b == b' ') else { continue };
        let Some(index) = std::str::from_utf8(&line[..space]).ok().and_then(|s| s.parse::<usize>().ok()) else {
            continue;
        };
        let Ok(name) = std::str::from_utf8(&line[space + 1..]) else { continue };
        let name = name.trim();
        if index < MAX_KEYWORDS && !name.is_empty() && slots[index].is_none() {
            slots[index] = Some(name.to_string());
        }
    }
    slots
}

/// One line of `dovecot-uidlist`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    uid: u32,
    /// Extension fields before the file name (`W<vsize>`, …), kept when the list is rewritten.
    ext: Vec<String>,
    /// The last known file name (with or without its `:2,` info).
    filename: Vec<u8>,
}

impl Record {
    /// The CRLF size from a `W<n>` field.
    fn vsize(&self) -> Option<u64> {
        self.ext.iter().find_map(|e| e.strip_prefix('W')?.parse().ok())
    }
}

/// A parsed `dovecot-uidlist`.
#[derive(Debug, Default)]
struct Uidlist {
    uidvalidity: Option<u32>,
    next_uid: u32,
    /// Header fields other than `V` and `N` (the mailbox GUID `G…`), kept on rewrite.
    header_ext: Vec<String>,
    /// The records in file order; lines that do not parse are left out.
    records: Vec<Record>,
}

/// Parses `dovecot-uidlist`, version 3 (`3 V<uidvalidity> N<nextuid> G<guid>`, lines
/// `<uid> [<ext>…] :<filename>`), version 1 (`1 <uidvalidity> <nextuid>`, lines
/// `<uid> <filename>`) or the short-lived version 2 (`<uid> <flags> <filename>`). `None` when
/// the header is not one of these: then no message has a UID, as Dovecot would renumber them.
/// A last line without its newline is ignored: it is an append that was cut off, and Dovecot
/// does not read it either.
fn parse_uidlist(data: &[u8]) -> Option<Uidlist> {
    let complete = match data.iter().rposition(|&b| b == b'\n') {
        Some(i) => &data[..i],
        None => data,
    };
    let mut lines = complete.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let header = std::str::from_utf8(lines.next()?).ok()?;
    let (version, rest) = header.split_once(' ')?;
    let mut list = Uidlist::default();
    let version: u32 = version.parse().ok()?;
    match version {
        1 | 2 => {
            let mut fields = rest.split_ascii_whitespace();
            list.uidvalidity = fields.next()?.parse().ok();
            list.next_uid = fields.next()?.parse().ok()?;
        }
        3 => {
            for field in rest.split(' ').filter(|f| !f.is_empty()) {
                if let Some(v) = field.strip_prefix('V') {
                    list.uidvalidity = v.parse().ok();
                } else if let Some(n) = field.strip_prefix('N') {
                    list.next_uid = n.parse().unwrap_or(0);
                } else {
                    list.header_ext.push(field.to_string());
                }
            }
        }
        _ => return None,
    }
    list.uidvalidity = list.uidvalidity.filter(|&v| v != 0);
    for line in lines {
        if let Some(rec) = parse_uidlist_line(version, line) {
            list.records.push(rec);
        }
    }
    Some(list)
}

/// One record line of a UID list; `None` for a line that does not parse.
fn parse_uidlist_line(version: u32, line: &[u8]) -> Option<Record> {
    let digits = line.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 10 || line.get(digits) != Some(&b' ') {
        return None;
    }
    let uid: u32 = std::str::from_utf8(&line[..digits]).ok()?.parse().ok()?;
    if uid == 0 || uid == u32::MAX {
        return None;
    }
    let mut rest = trim_spaces(&line[digits..]);
    let mut ext = Vec::new();
    match version {
        3 => {
            while let Some(&first) = rest.first() {
                if first == b':' {
                    rest = &rest[1..];
                    break;
                }
                let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
                if let Ok(field) = std::str::from_utf8(&rest[..end]) {
                    ext.push(field.to_string());
                }
                rest = trim_spaces(&rest[end..]);
            }
        }
        2 => {
            let end = rest.iter().position(|&b| b == b' ')?;
            rest = trim_spaces(&rest[end..]);
        }
        _ => {}
    }
    // A file name is one path component; Dovecot takes a `/` as a broken file.
    if rest.is_empty() || rest.contains(&b'/') {
        return None;
    }
    Some(Record { uid, ext, filename: rest.to_vec() })
}

fn trim_spaces(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ').unwrap_or(s.len());
    &s[start..]
}

/// The UIDVALIDITY in a UID list's header, reading only its first line.
fn read_uidvalidity(path: &Path) -> Result<Option<u32>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut header = Vec::new();
    BufReader::new(file.take(4096)).read_until(b'\n', &mut header).map_err(io_err(path))?;
    Ok(parse_uidlist(&header).and_then(|l| l.uidvalidity))
}

/// The names in a `subscriptions` file. Version 2 (`V\t2`, a blank line, then one name a
/// line with TAB between levels, each level TAB-escaped); the older format is one name a line
/// with the namespace's separator, taken here as `.` or `/`. Levels are modified UTF-7 where
/// valid (what Dovecot writes), otherwise taken as they stand.
fn parse_subscriptions(data: &[u8]) -> BTreeSet<String> {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).peekable();
    let v2 = lines.peek() == Some(&"V\t2");
    if v2 {
        lines.next();
    }
    let mut names = BTreeSet::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let levels: Vec<String> = if v2 {
            line.split('\t').map(|l| utf7::decode_lenient(&tab_unescape(l))).collect()
        } else {
            line.split(['.', '/']).map(utf7::decode_lenient).collect()
        };
        names.insert(join_levels(levels));
    }
    names
}

/// Undoes Dovecot's TAB escaping (`\x01` followed by `1`, `t`, `r`, `n` or `0`).
fn tab_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1}' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('1') => out.push('\u{1}'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// Dovecot's TAB escaping, so that a level cannot contain the level separator or a line end.
fn tab_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\u{1}' => out.push_str("\u{1}1"),
            '\t' => out.push_str("\u{1}t"),
            '\r' => out.push_str("\u{1}r"),
            '\n' => out.push_str("\u{1}n"),
            '\0' => out.push_str("\u{1}0"),
            c => out.push(c),
        }
    }
    out
}

/// Writes a Maildir++ tree that Dovecot 2.3 reads with `mail_location = maildir:<root>`.
///
/// Export is incremental: an existing Maildir is added to, and [`FolderWriter::has`] tells
/// which UIDs a previous run wrote. The target must not be in use by a running Dovecot
/// meanwhile (this writer does not take Dovecot's `dovecot-uidlist.lock`).
#[derive(Debug)]
pub struct MaildirWriter {
    root: PathBuf,
    hostname: String,
    /// The subscription state of the folders given to [`folder`](Self::folder), by name.
    subscriptions: BTreeMap<String, bool>,
}

impl MaildirWriter {
    /// Creates the root and INBOX's `cur/`, `new/`, `tmp/` where missing.
    pub fn create(root: &Path) -> Result<MaildirWriter> {
        create_mail_dirs(root)?;
        Ok(MaildirWriter { root: root.to_path_buf(), hostname: hostname(), subscriptions: BTreeMap::new() })
    }

    /// Opens a folder for writing, creating its directory where missing. Fails (Format) when
    /// the folder already holds a UID list of another UIDVALIDITY: its content came from
    /// another source, and mixing the two would give Dovecot UIDs of two numberings. A name
    /// Maildir++ cannot store (a level with `.` or an empty level) fails too. Keep one
    /// [`FolderWriter`] per folder at a time: each rewrites the folder's UID list.
    pub fn folder(&mut self, folder: &Folder) -> Result<FolderWriter> {
        let dir = self.folder_dir(&folder.name)?;
        create_mail_dirs(&dir)?;
        if dir != self.root {
            // Dovecot's marker of a Maildir++ sub-folder (used by deliver and quota).
            let marker = dir.join("maildirfolder");
            OpenOptions::new().create(true).append(true).open(&marker).map_err(io_err(&marker))?;
        }
        let writer = FolderWriter::open(dir, folder.uidvalidity.filter(|&v| v != 0), self.hostname.clone())?;
        let name = join_levels(folder.name.split('/').map(str::to_string).collect());
        self.subscriptions.insert(name, folder.subscribed);
        Ok(writer)
    }

    /// Writes the root's `subscriptions` in Dovecot 2.x's format: the names an existing file
    /// lists, plus the folders given subscribed, minus those given unsubscribed.
    pub fn finish(self) -> Result<()> {
        let path = self.root.join(SUBSCRIPTIONS);
        let mut names = match read_optional(&path)? {
            Some(data) => parse_subscriptions(&data),
            None => BTreeSet::new(),
        };
        for (name, subscribed) in self.subscriptions {
            if subscribed {
                names.insert(name);
            } else {
                names.remove(&name);
            }
        }
        let mut out = SUBSCRIPTIONS_V2.to_vec();
        for name in names {
            let levels: Vec<String> = name.split('/').map(|l| tab_escape(&utf7::encode(l))).collect();
            out.extend_from_slice(levels.join("\t").as_bytes());
            out.push(b'\n');
        }
        write_atomic(&path, &out)
    }

    /// The directory of a folder: the root for INBOX, else `.` and the modified UTF-7 levels
    /// joined with `.`.
    fn folder_dir(&self, name: &str) -> Result<PathBuf> {
        if name.eq_ignore_ascii_case("INBOX") {
            return Ok(self.root.clone());
        }
        let mut on_disk = String::from(".");
        for (i, level) in name.split('/').enumerate() {
            if level.is_empty() || level.contains(['.', '\0']) {
                return Err(format_err(
                    &self.root,
                    format!("folder {name:?}: Maildir++ cannot store an empty level or a '.' in a level"),
                ));
            }
            if i > 0 {
                on_disk.push('.');
            }
            on_disk.push_str(&utf7::encode(level));
        }
        Ok(self.root.join(on_disk))
    }
}

/// Creates a folder directory with `cur/`, `new/` and `tmp/`.
fn create_mail_dirs(dir: &Path) -> Result<()> {
    for sub in ["cur", "new", "tmp"] {
        let path = dir.join(sub);
        fs::create_dir_all(&path).map_err(io_err(&path))?;
    }
    Ok(())
}

/// This host's name for Maildir file names, with `/`, `:` and `,` escaped as Dovecot escapes
/// `/` and `:` (`\057`, `\072`), so that it cannot end the base name or fake a size field.
fn hostname() -> String {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let mut out = String::new();
    for c in raw.trim().chars() {
        match c {
            '/' => out.push_str("\\057"),
            ':' => out.push_str("\\072"),
            ',' => out.push_str("\\054"),
            c if c.is_ascii_graphic() => out.push(c),
            _ => {}
        }
    }
    if out.is_empty() { "localhost".to_string() } else { out }
}

/// Counts the files this process delivered, for the `Q<n>` part of their unique names.
static DELIVERIES: AtomicU64 = AtomicU64::new(0);

/// Writes the messages of one folder.
///
/// Each message goes to `tmp/` and is renamed into `cur/`, so an interrupted export never
/// leaves part of a message in `cur/`. Its UID is appended to `dovecot-uidlist` right after
/// (Dovecot allows appending records to a version 3 list and reads UIDs past the header's
/// next UID), so after a crash Dovecot and a later run still know every UID but perhaps the
/// very last one; [`finish`](Self::finish) then rewrites the list whole, sorted, with the
/// next UID. Appending keeps `add` cheap where rewriting the list periodically would cost
/// time quadratic in the folder's size.
#[derive(Debug)]
pub struct FolderWriter {
    dir: PathBuf,
    hostname: String,
    uidvalidity: u32,
    /// The next UID of the header, at least one past every record.
    next_uid: u32,
    header_ext: Vec<String>,
    records: BTreeMap<u32, Record>,
    /// The highest UID in the list on disk: a record above it may be appended, one below it
    /// needs a rewrite (UIDs must ascend in the file, or Dovecot discards the whole list).
    max_on_disk: u32,
    needs_rewrite: bool,
    appender: Option<File>,
    keywords: Vec<Option<String>>,
    /// The base names in use (files in `cur/` and `new/`, and records whose file is gone), so
    /// that a new file never takes one: Dovecot would take it for the old message.
    bases: HashSet<Vec<u8>>,
    dropped_keywords: u64,
}

impl FolderWriter {
    fn open(dir: PathBuf, uidvalidity: Option<u32>, hostname: String) -> Result<FolderWriter> {
        let uidlist_path = dir.join(UIDLIST);
        let existing = read_optional(&uidlist_path)?.and_then(|d| parse_uidlist(&d)).unwrap_or_default();
        let keywords = match read_optional(&dir.join(KEYWORDS))? {
            Some(data) => parse_keywords(&data),
            None => vec![None; MAX_KEYWORDS],
        };
        let mut bases = HashSet::new();
        for sub in ["cur", "new"] {
            let subdir = dir.join(sub);
            for entry in fs::read_dir(&subdir).map_err(io_err(&subdir))? {
                let entry = entry.map_err(io_err(&subdir))?;
                bases.insert(base_name(entry.file_name().as_bytes()).to_vec());
            }
        }
        let mut records = BTreeMap::new();
        for rec in existing.records {
            bases.insert(base_name(&rec.filename).to_vec());
            records.entry(rec.uid).or_insert(rec);
        }
        let empty = records.is_empty() && bases.is_empty();
        let uidvalidity = match (existing.uidvalidity, uidvalidity) {
            (Some(old), Some(new)) if old != new && !empty => {
                return Err(format_err(
                    &uidlist_path,
                    format!(
                        "this folder has UIDVALIDITY {old}, the source {new}: its messages come from \
                         another source; export into a new directory"
                    ),
                ));
            }
            (_, Some(new)) if empty => new,
            (Some(old), _) => old,
            (None, Some(new)) => new,
            (None, None) => generated_uidvalidity(),
        };
        let last = records.keys().next_back().copied().unwrap_or(0);
        let next_uid = existing.next_uid.max(last + 1);
        let mut writer = FolderWriter {
            dir,
            hostname,
            uidvalidity,
            next_uid,
            header_ext: existing.header_ext,
            records,
            max_on_disk: 0,
            needs_rewrite: false,
            appender: None,
            keywords,
            bases,
            dropped_keywords: 0,
        };
        // A list of our own now, so that records can be appended to it (the existing one may
        // be version 1, or lack its final newline).
        writer.write_uidlist()?;
        Ok(writer)
    }

    /// The folder's UIDVALIDITY: the existing one, else the source's, else a new one.
    pub fn uidvalidity(&self) -> u32 {
        self.uidvalidity
    }

    /// Whether the folder already has a message of this UID (a previous export wrote it).
    pub fn has(&self, uid: u32) -> bool {
        self.records.contains_key(&uid)
    }

    /// How many keywords were left out, message by message: past the 26 Maildir can name in a
    /// folder, or not valid IMAP keywords.
    pub fn dropped_keywords(&self) -> u64 {
        self.dropped_keywords
    }

    /// Adds a message: `flags` as IMAP flags (`\Recent` and unknown system flags are not
    /// stored), `internal_date` in seconds since the epoch (the file's mtime, which Dovecot
    /// reports as INTERNALDATE), `body` in IMAP's CRLF form (stored with LF, as Dovecot stores
    /// it). A UID the folder already has is skipped: see [`has`](Self::has).
    pub fn add(&mut self, uid: u32, flags: &[String], internal_date: i64, body: &[u8]) -> Result<()> {
        if uid == 0 || uid == u32::MAX {
            return Err(format_err(&self.dir, format!("UID {uid} is not a valid UID")));
        }
        if self.records.contains_key(&uid) {
            return Ok(());
        }
        let letters = self.letters(flags)?;
        let data = disk_form(body);
        let (size, vsize) = (data.len() as u64, crlf_size(&data));
        let base = self.unique_base(internal_date, size, vsize);
        let base_str = String::from_utf8_lossy(&base).into_owned();
        let tmp = self.dir.join("tmp").join(&base_str);
        let target = self.dir.join("cur").join(format!("{base_str}:2,{letters}"));
        let written = (|| {
            let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            file.write_all(&data)?;
            let time = system_time(internal_date);
            file.set_times(fs::FileTimes::new().set_modified(time).set_accessed(time))?;
            file.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&tmp)(e));
        }
        if let Err(e) = fs::rename(&tmp, &target) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&target)(e));
        }
        self.bases.insert(base.clone());
        self.records.insert(uid, Record { uid, ext: Vec::new(), filename: base.clone() });
        self.next_uid = self.next_uid.max(uid + 1);
        if uid > self.max_on_disk && !self.needs_rewrite {
            self.append_record(uid, &base)?;
        } else {
            self.needs_rewrite = true;
        }
        Ok(())
    }

    /// Writes `dovecot-uidlist` whole, with the next UID at least `uidnext`, and
    /// `dovecot-keywords`.
    pub fn finish(mut self, uidnext: u32) -> Result<()> {
        self.next_uid = self.next_uid.max(uidnext);
        self.write_keywords()?;
        self.write_uidlist()
    }

    /// The info letters of `flags`, sorted (system letters, then keyword letters: ASCII order,
    /// as Maildir requires), allocating keyword letters as needed.
    fn letters(&mut self, flags: &[String]) -> Result<String> {
        let mut letters = Vec::new();
        for flag in flags {
            if flag.starts_with('\\') {
                let letter = match flag.to_ascii_lowercase().as_str() {
                    "\\seen" => b'S',
                    "\\answered" => b'R',
                    "\\flagged" => b'F',
                    "\\deleted" => b'T',
                    "\\draft" => b'D',
                    _ => continue,
                };
                letters.push(letter);
            } else if !is_keyword(flag) {
                self.dropped_keywords += 1;
            } else if let Some(letter) = self.keyword_letter(flag)? {
                letters.push(letter);
            } else {
                self.dropped_keywords += 1;
            }
        }
        letters.sort_unstable();
        letters.dedup();
        Ok(letters.into_iter().map(char::from).collect())
    }

    /// The letter of a keyword, allocating the first free one (and writing
    /// `dovecot-keywords` at once, so that the letter is named before a file uses it); `None`
    /// when all 26 are taken.
    fn keyword_letter(&mut self, keyword: &str) -> Result<Option<u8>> {
        let found = self.keywords.iter().position(|k| k.as_deref().is_some_and(|k| k.eq_ignore_ascii_case(keyword)));
        if let Some(i) = found {
            return Ok(Some(b'a' + i as u8));
        }
        let Some(free) = self.keywords.iter().position(Option::is_none) else { return Ok(None) };
        self.keywords[free] = Some(keyword.to_string());
        self.write_keywords()?;
        Ok(Some(b'a' + free as u8))
    }

    /// A base name no file or record of the folder has: `<time>.M<µs>P<pid>Q<n>.<host>`
    /// (Dovecot's form, the time being the internal date) with the LF size `S=` and the CRLF
    /// size `W=`.
    fn unique_base(&self, internal_date: i64, size: u64, vsize: u64) -> Vec<u8> {
        loop {
            let q = DELIVERIES.fetch_add(1, Ordering::Relaxed);
            let micros = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_micros()).unwrap_or(0);
            let base = format!(
                "{}.M{micros}P{}Q{q}.{},S={size},W={vsize}",
                internal_date.max(0),
                std::process::id(),
                self.hostname
            );
            if !self.bases.contains(base.as_bytes()) {
                return base.into_bytes();
            }
        }
    }

    fn append_record(&mut self, uid: u32, base: &[u8]) -> Result<()> {
        let path = self.dir.join(UIDLIST);
        if self.appender.is_none() {
            self.appender = Some(OpenOptions::new().append(true).open(&path).map_err(io_err(&path))?);
        }
        let mut line = format!("{uid} :").into_bytes();
        line.extend_from_slice(base);
        line.push(b'\n');
        if let Some(file) = self.appender.as_mut() {
            file.write_all(&line).map_err(io_err(&path))?;
        }
        self.max_on_disk = uid;
        Ok(())
    }

    fn write_uidlist(&mut self) -> Result<()> {
        let last = self.records.keys().next_back().copied().unwrap_or(0);
        self.next_uid = self.next_uid.max(last + 1);
        let mut out = format!("3 V{} N{}", self.uidvalidity, self.next_uid).into_bytes();
        for ext in &self.header_ext {
            out.push(b' ');
            out.extend_from_slice(ext.as_bytes());
        }
        out.push(b'\n');
        for (uid, rec) in &self.records {
            out.extend_from_slice(uid.to_string().as_bytes());
            for ext in &rec.ext {
                out.push(b' ');
                out.extend_from_slice(ext.as_bytes());
            }
            out.extend_from_slice(b" :");
            out.extend_from_slice(&rec.filename);
            out.push(b'\n');
        }
        // The appender's file is replaced by the rename: appends go to the new one.
        self.appender = None;
        write_atomic(&self.dir.join(UIDLIST), &out)?;
        self.max_on_disk = last;
        self.needs_rewrite = false;
        Ok(())
    }

    fn write_keywords(&self) -> Result<()> {
        let path = self.dir.join(KEYWORDS);
        if self.keywords.iter().all(Option::is_none) && !path.exists() {
            return Ok(());
        }
        let mut out = String::new();
        for (i, keyword) in self.keywords.iter().enumerate() {
            if let Some(keyword) = keyword {
                out.push_str(&format!("{i} {keyword}\n"));
            }
        }
        write_atomic(&path, out.as_bytes())
    }
}

/// A UIDVALIDITY for a folder whose source has none: the current time, as Dovecot makes them.
fn generated_uidvalidity() -> u32 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(1);
    u32::try_from(now).unwrap_or(u32::MAX - 1).max(1)
}
