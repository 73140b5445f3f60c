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

/// The body of the `smtp_command` fuzz target: every input parses or errors, without panicking,
/// and line splitting agrees with itself.
pub fn fuzz_command(data: &[u8]) {
    let _ = Command::parse(data);
    let mut rest = data;
    loop {
        match next_line(rest, 512) {
            Decoded::Line(line, used) => {
                assert!(used > line.len() && used <= rest.len());
                let _ = Command::parse(line);
                rest = &rest[used..];
            }
            Decoded::TooLong { skip, .. } => {
                assert!(skip > 0 && skip <= rest.len());
                rest = &rest[skip..];
            }
            Decoded::NeedMore => break,
        }
    }
}

/// The body of the `smtp_data` fuzz target: the DATA decoder gives the same result however
/// the input is split, and the stored message never holds a bare CR or LF.
pub fn fuzz_data(data: &[u8]) {
    let whole = {
        let mut d = DataDecoder::new(1 << 20);
        let (used, end) = d.feed(data);
        (used, end, d.into_message())
    };
    let cut = data.first().map(|b| *b as usize % (data.len() + 1)).unwrap_or(0);
    let mut d = DataDecoder::new(1 << 20);
    let (a, end_a) = d.feed(&data[..cut]);
    let (used, end) = if end_a == DataEnd::Complete {
        (a, end_a)
    } else {
        let (b, end_b) = d.feed(&data[cut..]);
        (a + b, end_b)
    };
    assert_eq!((used, end), (whole.0, whole.1), "split at {cut} changed where the data ends");
    let split = d.into_message();
    assert_eq!(split, whole.2, "split at {cut} changed the message");
    assert!(!split.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'), "bare LF stored");
    assert!(!split.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n'), "bare CR stored");
}

#[cfg(test)]
mod fuzz_tests {
    /// Runs the fuzz bodies on pseudo-random input (fixed seed, bounded) in the normal tests.
    #[test]
    fn fuzz_bodies_hold_on_generated_input() {
        let alphabet =
            tern_runtime::generated::bytes_of(b"\r\n.\r\n.ABC MAIL FROM:<a@b> RCPT TO:<> BDAT 1 LAST\x00\xff=");
        for input in tern_runtime::generated::inputs(0x9e37_79b9_7f4a_7c15, 3000, 64, &alphabet) {
            super::fuzz_command(&input);
            super::fuzz_data(&input);
        }
    }
}
