//! The SMTP codec: bytes in, commands and message data out, with no I/O. It knows nothing of
//! tokio, gRPC or storage. Every function that needs more input says so with a value
//! ([`Decoded::NeedMore`]) rather than by blocking.

pub mod command;
pub mod data;
pub mod reply;

pub use command::{Command, MailParams, ParseError, Path, RcptParams};
pub use data::{DataDecoder, DataEnd};
pub use reply::Reply;

/// The outcome of looking for one line in a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A complete line without its CRLF, and how many bytes it used (including the CRLF).
    Line(&'a [u8], usize),
    /// The line is longer than allowed; `skip` bytes can be discarded, and `ended` says whether
    /// they include the end of the line. If not, the caller keeps discarding until it does.
    TooLong { skip: usize, ended: bool },
    /// No complete line yet.
    NeedMore,
}

/// Finds the next command line in `buf`. A line ends with CRLF; a bare LF is accepted as a
/// line end too, since some clients send it in the command phase (never in data, where it
/// could be used for smuggling).
pub fn next_line(buf: &[u8], max_len: usize) -> Decoded<'_> {
    match memchr(b'\n', buf) {
        Some(i) => {
            let line = &buf[..i];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > max_len {
                Decoded::TooLong { skip: i + 1, ended: true }
            } else {
                Decoded::Line(line, i + 1)
            }
        }
        None if buf.len() > max_len + 1 => Decoded::TooLong { skip: buf.len(), ended: false },
        None => Decoded::NeedMore,
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|b| *b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_anywhere() {
        let input = b"EHLO a\r\nNOOP\r\n";
        for cut in 0..input.len() {
            let (a, _) = input.split_at(cut);
            match next_line(a, 512) {
                Decoded::Line(l, n) => {
                    assert_eq!(l, b"EHLO a");
                    assert_eq!(n, 8);
                    assert!(cut >= 8);
                }
                Decoded::NeedMore => assert!(cut < 8),
                Decoded::TooLong { .. } => panic!("short line reported too long"),
            }
        }
    }

    #[test]
    fn long_lines_are_reported() {
        let long = vec![b'a'; 600];
        assert_eq!(next_line(&long, 512), Decoded::TooLong { skip: 600, ended: false });
        let mut l = vec![b'a'; 520];
        l.extend_from_slice(b"\r\nNOOP\r\n");
        assert_eq!(next_line(&l, 512), Decoded::TooLong { skip: 522, ended: true });
    }
}
