//! Editing a message's header block in place, as bytes: dropping fields by name and adding
//! fields at the top, leaving every other byte (and the body) exactly as it was. Used where a
//! server must remove what a sender may have forged before adding its own (trace and spam
//! headers) and where the spam filter rewrites the Subject.

/// Where the header block ends: the offset just past the CRLF of its last field, so that the
/// empty line and the body follow. A message without an empty line is all header.
pub fn header_end(message: &[u8]) -> usize {
    if message.starts_with(b"\r\n") {
        return 0;
    }
    message.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 2).unwrap_or(message.len())
}

/// The message without the header fields for which `drop(name)` is true (`name` as written,
/// without the colon), continuation lines included.
pub fn remove_fields(message: &[u8], mut drop: impl FnMut(&str, &[u8]) -> bool) -> Vec<u8> {
    let (header, body) = message.split_at(header_end(message));
    let mut out = Vec::with_capacity(message.len());
    let mut fields = Vec::new();
    // A field and its continuation lines are decided together, so collect each whole first.
    let mut flush = |field: &mut Vec<u8>, out: &mut Vec<u8>| {
        if field.is_empty() {
            return;
        }
        let name_end = field.iter().position(|b| *b == b':').unwrap_or(0);
        let name = String::from_utf8_lossy(&field[..name_end]);
        if name_end == 0 || !drop(name.trim_end(), &field[name_end + 1..]) {
            out.extend_from_slice(field);
        }
        field.clear();
    };
    for line in header.split_inclusive(|b| *b == b'\n') {
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continuation {
            flush(&mut fields, &mut out);
        }
        fields.extend_from_slice(line);
    }
    flush(&mut fields, &mut out);
    out.extend_from_slice(body);
    out
}

/// Folds a header value onto lines of at most about 78 octets at spaces (RFC 5322 section
/// 2.2.3), so that long generated values (a spam report's list of symbols) stay valid.
pub fn field(name: &str, value: &str) -> String {
    let mut out = format!("{name}:");
    let mut line_len = out.len();
    for word in value.split(' ').filter(|w| !w.is_empty()) {
        if line_len + 1 + word.len() > 78 && line_len > name.len() + 1 {
            out.push_str("\r\n\t");
            line_len = 1;
        } else {
            out.push(' ');
            line_len += 1;
        }
        out.push_str(word);
        line_len += word.len();
    }
    out.push_str("\r\n");
    out
}

/// A header value as it reads, unfolded, with an encoded word left as it is.
pub fn unfold(value: &[u8]) -> String {
    let s = String::from_utf8_lossy(value);
    s.split(['\r', '\n']).filter(|l| !l.is_empty()).map(str::trim).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_whole_fields_and_keeps_every_other_byte() {
        let m = b"X-Spam: yes\r\n\tfolded\r\nSubject: s\r\nx-spam-status: No\r\nTo: a@b\r\n\r\nX-Spam: in body\r\n";
        let out = remove_fields(m, |name, _| name.to_ascii_lowercase().starts_with("x-spam"));
        assert_eq!(out, b"Subject: s\r\nTo: a@b\r\n\r\nX-Spam: in body\r\n");
        let same = remove_fields(m, |_, _| false);
        assert_eq!(same, m);
    }

    #[test]
    fn a_message_without_body_or_header_is_handled() {
        assert_eq!(header_end(b"Subject: s\r\n"), 12);
        assert_eq!(header_end(b"\r\nbody"), 0);
        assert_eq!(remove_fields(b"\r\nbody", |_, _| true), b"\r\nbody");
        assert_eq!(remove_fields(b"Subject: s", |_, _| true), b"");
    }

    #[test]
    fn long_values_are_folded_at_spaces() {
        let value = (0..40).map(|i| format!("SYMBOL_{i}(1.00)")).collect::<Vec<_>>().join(" ");
        let f = field("X-Spamd-Result", &value);
        assert!(f.lines().all(|l| l.len() <= 78), "{f}");
        assert_eq!(unfold(f.split_once(':').unwrap().1.as_bytes()), value);
    }
}
