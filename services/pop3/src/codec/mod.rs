//! The POP3 codec: bytes in, commands out; responses and message bodies in, bytes out. It has
//! no I/O and knows nothing of tokio, gRPC or storage. A function that needs more input says so
//! with a value ([`Decoded::NeedMore`]) rather than by blocking.

pub mod command;
pub mod response;

pub use command::{Command, ParseError, Secret};
pub use response::{MultilineEncoder, RespCode, Response, encode_multiline, top};

/// The longest command line a server must accept, in octets including the CRLF (RFC 2449
/// section 4). It is the usual `max_len` for [`next_line`].
pub const MAX_COMMAND_LINE: usize = 255;

/// The outcome of looking for one line in a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A complete line without its line end, and how many bytes it used (including the line end).
    Line(&'a [u8], usize),
    /// The line is longer than allowed; `skip` bytes can be discarded, and `ended` says whether
    /// they include the end of the line. If not, the caller keeps discarding until it does.
    TooLong { skip: usize, ended: bool },
    /// No complete line yet.
    NeedMore,
}

/// Finds the next command line in `buf`. A line ends with CRLF; a bare LF is accepted as a
/// line end too, since some clients send it. `max_len` is the longest line allowed in octets,
/// counting its line end, as RFC 2449 counts it: pass [`MAX_COMMAND_LINE`] for commands, or
/// something larger for the client's lines of a SASL exchange if the session allows longer ones.
pub fn next_line(buf: &[u8], max_len: usize) -> Decoded<'_> {
    match buf.iter().position(|b| *b == b'\n') {
        Some(i) if i + 1 > max_len => Decoded::TooLong { skip: i + 1, ended: true },
        Some(i) => {
            let line = &buf[..i];
            Decoded::Line(line.strip_suffix(b"\r").unwrap_or(line), i + 1)
        }
        // Without a line end among the first `max_len` bytes, the line can only end too late.
        None if !buf.is_empty() && buf.len() >= max_len => Decoded::TooLong { skip: buf.len(), ended: false },
        None => Decoded::NeedMore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_anywhere() {
        let input = b"USER bob\r\nSTAT\nQUIT\r\n";
        // The ends of the three lines, each just past its LF.
        let ends = [10, 15, 21];
        for cut in 0..=input.len() {
            let mut rest = &input[..cut];
            let mut consumed = 0;
            let mut lines = Vec::new();
            loop {
                match next_line(rest, MAX_COMMAND_LINE) {
                    Decoded::Line(l, n) => {
                        lines.push(l.to_vec());
                        consumed += n;
                        rest = &rest[n..];
                    }
                    Decoded::NeedMore => break,
                    Decoded::TooLong { .. } => panic!("short line reported too long"),
                }
            }
            let complete = ends.iter().filter(|e| **e <= cut).count();
            assert_eq!(lines.len(), complete, "cut at {cut}");
            assert_eq!(consumed, if complete == 0 { 0 } else { ends[complete - 1] });
            let want: [&[u8]; 3] = [b"USER bob", b"STAT", b"QUIT"];
            assert_eq!(lines, want[..complete].iter().map(|l| l.to_vec()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn the_limit_counts_the_line_end() {
        let mut ok = vec![b'a'; 253];
        ok.extend_from_slice(b"\r\n");
        assert_eq!(next_line(&ok, 255), Decoded::Line(&ok[..253], 255));
        let mut long = vec![b'a'; 254];
        long.extend_from_slice(b"\r\nSTAT\r\n");
        assert_eq!(next_line(&long, 255), Decoded::TooLong { skip: 256, ended: true });
        assert_eq!(next_line(&long[256..], 255), Decoded::Line(b"STAT", 6));
        // A bare LF is one octet, so the same text fits with it.
        let mut bare = vec![b'a'; 254];
        bare.push(b'\n');
        assert_eq!(next_line(&bare, 255), Decoded::Line(&bare[..254], 255));
    }

    #[test]
    fn long_lines_without_an_end_are_reported() {
        assert_eq!(next_line(&[b'a'; 254], 255), Decoded::NeedMore);
        assert_eq!(next_line(&[b'a'; 255], 255), Decoded::TooLong { skip: 255, ended: false });
        assert_eq!(next_line(&[b'a'; 10_000], 255), Decoded::TooLong { skip: 10_000, ended: false });
        assert_eq!(next_line(b"", 255), Decoded::NeedMore);
        assert_eq!(next_line(b"", 0), Decoded::NeedMore);
        assert_eq!(next_line(b"\n", 0), Decoded::TooLong { skip: 1, ended: true });
    }

    #[test]
    fn hostile_bytes_stay_in_their_line() {
        let input = b"US\0ER \xff\xfe\rx\r\nNOOP\r\n";
        let Decoded::Line(line, used) = next_line(input, MAX_COMMAND_LINE) else { panic!() };
        assert_eq!(line, b"US\0ER \xff\xfe\rx");
        assert_eq!(&input[used..], b"NOOP\r\n");
        assert!(Command::parse(line).is_err());
    }
}

/// The body of the `pop3_command` fuzz target: every input parses or errors without panicking,
/// line splitting agrees with itself, passwords stay out of debug output, and multi-line
/// encoding always yields a body that ends only at its terminator and that the client can
/// decode back into the (line-end normalised) input.
pub fn fuzz_command(data: &[u8]) {
    check_parse(data);
    let mut rest = data;
    loop {
        match next_line(rest, MAX_COMMAND_LINE) {
            Decoded::Line(line, used) => {
                assert!(used > line.len() && used <= rest.len() && used <= MAX_COMMAND_LINE);
                assert!(!line.contains(&b'\n'));
                check_parse(line);
                rest = &rest[used..];
            }
            Decoded::TooLong { skip, ended } => {
                assert!(skip > 0 && skip <= rest.len());
                assert_eq!(ended, rest[skip - 1] == b'\n');
                rest = &rest[skip..];
            }
            Decoded::NeedMore => {
                assert!(!rest.contains(&b'\n') && rest.len() < MAX_COMMAND_LINE);
                break;
            }
        }
    }
    check_multiline(data);
    check_top(data);
    check_response(data);
}

fn check_parse(line: &[u8]) {
    let Ok(command) = Command::parse(line) else { return };
    let debug = format!("{command:?}");
    match &command {
        Command::Pass(p) => {
            assert!(!p.expose().is_empty());
            assert_eq!(debug, "Pass(<redacted>)");
        }
        Command::Auth { initial: Some(_), .. } => assert!(debug.contains("initial: Some(<redacted>)")),
        Command::List(Some(n)) | Command::Uidl(Some(n)) | Command::Retr(n) | Command::Dele(n) => assert!(*n > 0),
        Command::Top { msg, .. } => assert!(*msg > 0),
        _ => {}
    }
}

fn check_multiline(data: &[u8]) {
    let mut whole = Vec::new();
    encode_multiline(data, &mut whole);
    assert!(whole.ends_with(b".\r\n"));
    // Seen from the client, the body follows the CRLF of the status line. The only
    // CRLF "." CRLF must be the terminator at the very end.
    let mut seen = b"\r\n".to_vec();
    seen.extend_from_slice(&whole);
    let terminator = seen.windows(5).position(|w| w == b"\r\n.\r\n");
    assert_eq!(terminator, Some(seen.len() - 5), "early terminator in {whole:?}");
    assert!(!whole.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'), "bare LF sent");
    assert!(!whole.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n'), "bare CR sent");
    assert!(whole[0] != b'\n' && whole[whole.len() - 1] == b'\n');
    // The client strips the stuffed dots and gets the input back, with CRLF line ends.
    let body = &whole[..whole.len() - 3];
    let mut decoded = Vec::new();
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let line = line.strip_suffix(b"\r").expect("every line ends with CRLF");
        decoded.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        decoded.extend_from_slice(b"\r\n");
    }
    assert_eq!(decoded, normalise(data));
    // Streaming in two chunks gives the same bytes.
    let cut = data.first().map(|b| *b as usize % (data.len() + 1)).unwrap_or(0);
    let mut encoder = MultilineEncoder::new();
    let mut split = Vec::new();
    encoder.feed(&data[..cut], &mut split);
    encoder.feed(&data[cut..], &mut split);
    encoder.finish(&mut split);
    assert_eq!(split, whole, "split at {cut} changed the encoding");
}

/// The input with every line ended by CRLF, as the client should see it after unstuffing.
fn normalise(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\r' if data.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn check_top(data: &[u8]) {
    let mut previous = 0;
    for n in [0, 1, 2, 5, usize::MAX] {
        let part = top(data, n);
        assert!(data.starts_with(part));
        assert!(part.len() >= previous);
        previous = part.len();
    }
    assert_eq!(top(data, usize::MAX), data);
}

fn check_response(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for response in [
        Response::ok(text.clone()),
        Response::err(text.clone()),
        Response::err_code(RespCode::SysTemp, text.clone()),
        Response::challenge(data),
    ] {
        let bytes = response.to_bytes();
        assert!(bytes.ends_with(b"\r\n"));
        let line = &bytes[..bytes.len() - 2];
        assert!(!line.contains(&b'\r') && !line.contains(&b'\n'), "line break in {bytes:?}");
        if !matches!(response, Response::Challenge(_)) {
            assert!(bytes.len() <= response::MAX_RESPONSE_LINE);
        }
    }
}

#[cfg(test)]
mod fuzz_tests {
    /// Runs the fuzz body on pseudo-random input (fixed seed, bounded) in the normal tests.
    #[test]
    fn fuzz_body_holds_on_generated_input() {
        // Whole keywords as well as single bytes, so that many lines parse and their checks run.
        let alphabet: [&[u8]; 26] = [
            b"\r\n",
            b"\n",
            b"\r",
            b".",
            b"..",
            b" ",
            b"  ",
            b"\r\nUSER ",
            b"\r\npass ",
            b"\r\nTOP 1 ",
            b"\r\nLIST ",
            b"\r\nRETR ",
            b"\r\nAUTH ",
            b"\r\nSTAT",
            b"PLAIN",
            b"=",
            b"1",
            b"0",
            b"9999999999",
            b"\0",
            b"\xff",
            b"\xc3",
            b"[",
            b"a",
            b"\r\n.\r\n",
            b"\r\n\r\n",
        ];
        for input in tern_runtime::generated::inputs(0x9e37_79b9_7f4a_7c15, 3000, 32, &alphabet) {
            super::fuzz_command(&input);
        }
    }

    /// Every complete command also goes through the fuzz body, so the checks on its parse run.
    #[test]
    fn fuzz_body_holds_on_valid_commands() {
        for line in ["USER a\r\nPASS b c\r\n", "AUTH PLAIN AGEAYg==\r\n", "TOP 1 0\r\nLIST 2\r\n", ".\r\n..\n.\r"] {
            super::fuzz_command(line.as_bytes());
        }
    }
}
