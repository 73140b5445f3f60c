//! Preparing a message for the DATA command (RFC 5321 section 4.5.2) and deciding which
//! extensions its content needs. The message bytes are sent as stored; only the dot-stuffing
//! and the terminating line are added, so the signatures (DKIM) over them stay valid.

/// Builds the DATA payload for `message`: every line that starts with `.` gets a second `.`,
/// the payload is made to end with CRLF, and the terminating `.` line is appended.
///
/// A line starts at the beginning of the message and after every LF, bare or not, so that a
/// receiver that ends lines at a bare LF can never see a lone `.` line inside the message. A
/// line is also taken to start after a bare CR: some receivers have accepted `<CR>.<CR><LF>` as
/// the end of data, and stuffing that dot stops a message from smuggling a second one through
/// them. Messages from our own reception never contain bare CR or LF, so this only changes
/// malformed input.
///
/// A message that ends without a line ending gets CRLF; one that ends in a bare LF gets a CR
/// before it, rather than an extra empty line. The empty message becomes just `.` CRLF.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 5);
    let mut line_start = true;
    for &byte in message {
        if line_start && byte == b'.' {
            out.push(b'.');
        }
        out.push(byte);
        line_start = byte == b'\n' || byte == b'\r';
    }
    match out.last() {
        None => {}
        Some(b'\n') if out.ends_with(b"\r\n") => {}
        Some(b'\n') => out.insert(out.len() - 1, b'\r'),
        Some(b'\r') => out.push(b'\n'),
        Some(_) => out.extend_from_slice(b"\r\n"),
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Whether the message has any byte of 0x80 or above, and so needs `BODY=8BITMIME` on MAIL
/// FROM, and a server that offers 8BITMIME.
pub fn needs_8bit(message: &[u8]) -> bool {
    message.iter().any(|b| *b >= 0x80)
}

/// Whether an address has non-ASCII characters, and so needs `SMTPUTF8` on MAIL FROM and a
/// server that offers it.
pub fn header_needs_smtputf8(addr: &str) -> bool {
    !addr.is_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuffs_dots_at_line_starts() {
        assert_eq!(dot_stuff(b".\r\n"), b"..\r\n.\r\n");
        assert_eq!(dot_stuff(b".."), b"...\r\n.\r\n");
        assert_eq!(dot_stuff(b"a\r\n.\r\nb\r\n"), b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(dot_stuff(b".x\r\n..y\r\nz.\r\n"), b"..x\r\n...y\r\nz.\r\n.\r\n");
        assert_eq!(dot_stuff(b"a\n.\nb\r\n"), b"a\n..\nb\r\n.\r\n");
        assert_eq!(dot_stuff(b"a\r.\r\nb\r\n"), b"a\r..\r\nb\r\n.\r\n");
    }

    #[test]
    fn ends_with_crlf_and_terminator() {
        assert_eq!(dot_stuff(b""), b".\r\n");
        assert_eq!(dot_stuff(b"\r\n"), b"\r\n.\r\n");
        assert_eq!(dot_stuff(b"Subject: x\r\n\r\nbody"), b"Subject: x\r\n\r\nbody\r\n.\r\n");
        assert_eq!(dot_stuff(b"body\n"), b"body\r\n.\r\n");
        assert_eq!(dot_stuff(b"body\r"), b"body\r\n.\r\n");
        assert_eq!(dot_stuff(b"a\r\n."), b"a\r\n..\r\n.\r\n");
    }

    #[test]
    fn payload_never_ends_early() {
        // Whatever the input, the only `CRLF . CRLF` is the terminator at the very end, and the
        // payload never starts with the terminating line unless the message is empty.
        let pieces: [&[u8]; 6] = [b".", b"\r", b"\n", b"\r\n", b"x", b".\r\n"];
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let message = [a, b, c].concat();
                    let out = dot_stuff(&message);
                    let end = out.windows(5).position(|w| w == b"\r\n.\r\n");
                    assert_eq!(end, Some(out.len() - 5), "{message:?}");
                    assert!(!out.starts_with(b".\r\n"), "{message:?}");
                    assert!(!out[..out.len() - 3].windows(3).any(|w| w == b"\n.\r" || w == b"\r.\r"), "{message:?}");
                }
            }
        }
    }

    #[test]
    fn extension_needs() {
        assert!(!needs_8bit(b"plain ascii\r\n"));
        assert!(needs_8bit("caf\u{e9}".as_bytes()));
        assert!(!header_needs_smtputf8("user@example.org"));
        assert!(header_needs_smtputf8("j\u{f6}rg@example.org"));
    }
}
