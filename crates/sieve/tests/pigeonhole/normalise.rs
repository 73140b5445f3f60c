//! Turns what Pigeonhole's `sieve-test` prints into the corpus's canonical lines (`README.md`).
//!
//! A run is two steps. The dry run (`sieve-test` without `-e`) lists the actions the script
//! decided, which [`dry_run`] reads. A dry run cannot say whether a vacation reply would really
//! be sent, because Pigeonhole decides that (mailing list, bulk, system sender, a recipient not
//! in To or Cc) only when it executes the action, and it does not print the reply's recipient
//! nor its default Subject. So when the dry run has a vacation action, the runner executes the
//! script once more (`-e`), and [`executed_vacation`] reads the log line that says whether the
//! reply went out and the reply that `sieve-test` prints instead of sending it.
//!
//! Every line of output that is not understood is an error rather than skipped, so that a
//! Pigeonhole upgrade which prints something new stops the recorder instead of being lost.

/// What a dry run says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DryRun {
    /// The script did not compile.
    CompileError,
    /// A runtime error stopped the script; Pigeonhole then kept the message in INBOX.
    RuntimeError,
    /// The script ran: its lines without any vacation, and the vacation's period if it had one.
    Done { lines: Vec<String>, vacation_seconds: Option<u64>, mailboxes: Vec<String> },
}

/// The result line that says the script ran to its end.
const SUCCESS: &str = "final result: success";
/// The result line of a runtime error, after which Pigeonhole falls back on the implicit keep.
const FAILED_KEPT: &str = "final result: failed; resolved with successful implicit keep";

/// Reads a dry run's output.
pub fn dry_run(stdout: &str, stderr: &str) -> Result<DryRun, String> {
    if stderr.contains("failed to compile sieve script") {
        return Ok(DryRun::CompileError);
    }
    if stderr.contains(FAILED_KEPT) {
        return Ok(DryRun::RuntimeError);
    }
    if !stderr.contains(SUCCESS) {
        return Err(format!("sieve-test gave no result that is understood\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    }
    let mut lines = Vec::new();
    let mut mailboxes = Vec::new();
    let mut vacation_seconds = None;
    // The store being read, whose flags may follow on `+ add IMAP flags:` lines.
    let mut store: Option<(String, Vec<String>)> = None;
    let mut in_vacation = false;
    // The vacation's handle is printed last, and the default handle contains the reason, whose
    // lines run on until the reply's text begins.
    let mut in_handle = false;
    let mut in_message = false;
    let mut seen_sections = 0;
    let finish = |store: &mut Option<(String, Vec<String>)>, lines: &mut Vec<String>| {
        if let Some((mailbox, flags)) = store.take() {
            lines.push(store_line(&mailbox, &flags));
        }
    };
    for raw in stdout.lines() {
        if in_message {
            in_message = raw != "END MESSAGE";
            continue;
        }
        let line = raw.trim();
        if line.is_empty() || line == "(none)" {
            continue;
        }
        if line == "Performed actions:" || line == "Implicit keep:" {
            seen_sections += 1;
            continue;
        }
        if line == "START MESSAGE" {
            in_message = true;
            in_handle = false;
            continue;
        }
        if in_handle {
            continue;
        }
        if let Some(action) = line.strip_prefix("* ") {
            finish(&mut store, &mut lines);
            in_vacation = false;
            if let Some(mailbox) = action.strip_prefix("store message in folder: ") {
                mailboxes.push(mailbox.to_string());
                store = Some((mailbox.to_string(), Vec::new()));
            } else if let Some(address) = action.strip_prefix("redirect message to: ") {
                let address = address.strip_prefix('<').and_then(|a| a.strip_suffix('>')).unwrap_or(address);
                lines.push(format!("redirect {address}"));
            } else if let Some(reason) = action.strip_prefix("reject message with reason: ") {
                lines.push(reject_line(reason)?);
            } else if action == "send vacation message:" {
                in_vacation = true;
                vacation_seconds = Some(0);
            } else if action == "discard" || action == "track duplicate" {
                // A discard only cancels the implicit keep, which the output already shows,
                // and tracking a duplicate is bookkeeping, not a disposition of the message.
            } else {
                return Err(format!("unknown action `{action}`"));
            }
            continue;
        }
        if let Some(modifier) = line.strip_prefix("+ ") {
            if let Some(flags) = modifier.strip_prefix("add IMAP flags:") {
                let Some((_, current)) = store.as_mut() else {
                    return Err(format!("flags `{flags}` without a store"));
                };
                current.extend(flags.split_whitespace().map(str::to_string));
            } else if modifier == "create mailbox if it does not exist" || modifier == "preserve implicit keep" {
                // `:create` is not in the canonical form (README: a dry run cannot tell it
                // apart), and `:copy`'s kept implicit keep is printed under "Implicit keep:".
            } else {
                return Err(format!("unknown action modifier `{modifier}`"));
            }
            continue;
        }
        if let Some(parameter) = line.strip_prefix("=> ") {
            if !in_vacation {
                return Err(format!("a parameter `{parameter}` outside a vacation action"));
            }
            if let Some((key, value)) = parameter.split_once(':') {
                in_handle = key.trim() == "handle";
                if key.trim() == "seconds" {
                    let seconds = value.trim().parse().map_err(|_| format!("a vacation period `{value}`"))?;
                    vacation_seconds = Some(seconds);
                }
            }
            continue;
        }
        return Err(format!("a line of sieve-test's output that is not understood: `{raw}`"));
    }
    finish(&mut store, &mut lines);
    if seen_sections != 2 {
        return Err(format!("sieve-test's output lacks its two sections\nstdout:\n{stdout}"));
    }
    Ok(DryRun::Done { lines, vacation_seconds, mailboxes })
}

/// The canonical line of a store: the mailbox, then its flags lower-cased, sorted and
/// deduplicated (Pigeonhole prints system flags lower-cased and keywords as written).
pub fn store_line(mailbox: &str, flags: &[String]) -> String {
    let mut flags: Vec<String> = flags.iter().map(|flag| flag.to_lowercase()).collect();
    flags.sort();
    flags.dedup();
    if flags.is_empty() { format!("store {mailbox}") } else { format!("store {mailbox} flags {}", flags.join(" ")) }
}

/// The canonical line of a reject. Pigeonhole prints each control character of the reason as
/// `?`, and a line break of the script's string is CRLF in the reason, so `??` is a line break;
/// it cuts a reason after 128 characters and adds `...`, which the corpus must avoid.
fn reject_line(reason: &str) -> Result<String, String> {
    if reason.ends_with("...") && reason.chars().count() > 128 {
        return Err(format!("the reject reason `{reason}` was cut short by Pigeonhole: keep reasons short"));
    }
    let reason = reason.replace("??", "\n");
    let reason = reason.trim_end_matches('\n').replace('\n', "\\n");
    Ok(format!("reject {reason}"))
}

/// Reads an executed run (`-e`) for its vacation reply: `Some((recipient, subject))` when the
/// reply was sent, `None` when Pigeonhole decided not to send it.
pub fn executed_vacation(stdout: &str, stderr: &str) -> Result<Option<(String, String)>, String> {
    let sent = stderr.lines().find_map(|line| {
        let (_, rest) = line.split_once("vacation action: sent vacation response to <")?;
        rest.split_once('>').map(|(address, _)| address.to_string())
    });
    let Some(recipient) = sent else {
        if stderr.contains("vacation action: ") {
            return Ok(None);
        }
        return Err(format!("an executed vacation that the log does not mention\nstderr:\n{stderr}"));
    };
    // sieve-test prints each outgoing message whole; the reply is the one that says it is one.
    let lines: Vec<&str> = stdout.lines().collect();
    let marker = lines
        .iter()
        .position(|line| line.trim_end() == "Auto-Submitted: auto-replied (vacation)")
        .ok_or_else(|| format!("the vacation reply is not in sieve-test's output\nstdout:\n{stdout}"))?;
    let start = lines[..marker].iter().rposition(|line| line.starts_with("X-Sieve:")).unwrap_or(0);
    let end = lines[marker..].iter().position(|line| line.trim_end().is_empty()).map_or(lines.len(), |i| marker + i);
    let mut subject: Option<String> = None;
    for line in &lines[start..end] {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            // A folded continuation of the header above.
            if let Some(subject) = subject.as_mut() {
                subject.push_str(line);
            }
            continue;
        }
        if subject.is_some() {
            break;
        }
        if let Some(value) = line.strip_prefix("Subject:") {
            subject = Some(value.to_string());
        }
    }
    let subject = subject.ok_or_else(|| "the vacation reply has no Subject".to_string())?;
    Ok(Some((recipient, decode_words(subject.trim()))))
}

/// The canonical line of a vacation reply that was sent.
pub fn vacation_line(recipient: &str, seconds: u64, subject: &str) -> String {
    format!("vacation to {recipient} seconds {seconds} subject {subject}")
}

/// Sorts and deduplicates lines, and writes an empty result as `(none)`.
pub fn canonical(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines.dedup();
    if lines.is_empty() {
        lines.push("(none)".to_string());
    }
    lines
}

/// Decodes the RFC 2047 encoded words of a header value (UTF-8, US-ASCII and ISO-8859-1, the
/// charsets Pigeonhole writes and the corpus's messages use); whitespace between two encoded
/// words is dropped, as RFC 2047 section 6.2 says.
pub fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut after_word = false;
    while !rest.is_empty() {
        let gap = rest.len() - rest.trim_start().len();
        let (space, tail) = rest.split_at(gap);
        if let Some((decoded, len)) = encoded_word(tail) {
            if !after_word {
                out.push_str(space);
            }
            out.push_str(&decoded);
            rest = &tail[len..];
            after_word = true;
            continue;
        }
        out.push_str(space);
        let word_end = tail.find(char::is_whitespace).unwrap_or(tail.len());
        out.push_str(&tail[..word_end]);
        rest = &tail[word_end..];
        after_word = false;
    }
    out
}

/// Decodes one encoded word at the start of `text`: the text and the length consumed.
fn encoded_word(text: &str) -> Option<(String, usize)> {
    let inner = text.strip_prefix("=?")?;
    let (charset, inner) = inner.split_once('?')?;
    let (encoding, inner) = inner.split_once('?')?;
    let (payload, _) = inner.split_once("?=")?;
    if payload.contains(char::is_whitespace) {
        return None;
    }
    let len = 2 + charset.len() + 1 + encoding.len() + 1 + payload.len() + 2;
    let bytes = match encoding {
        "Q" | "q" => {
            let mut bytes = Vec::new();
            let mut input = payload.bytes();
            while let Some(b) = input.next() {
                match b {
                    b'_' => bytes.push(b' '),
                    b'=' => {
                        let hex = [input.next()?, input.next()?];
                        bytes.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
                    }
                    b => bytes.push(b),
                }
            }
            bytes
        }
        "B" | "b" => base64(payload)?,
        _ => return None,
    };
    let charset = charset.split('*').next().unwrap_or(charset).to_ascii_lowercase();
    let decoded = match charset.as_str() {
        "utf-8" | "us-ascii" => String::from_utf8(bytes).ok()?,
        "iso-8859-1" | "latin1" => bytes.iter().map(|&b| char::from(b)).collect(),
        _ => return None,
    };
    Some((decoded, len))
}

/// Decodes standard base64 with padding, the B encoding of RFC 2047 section 4.1.
fn base64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let text = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::new();
    for chunk in text.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}
