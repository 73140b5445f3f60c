//! The IMAP front-end (IMAP4rev2, RFC 9051, with IMAP4rev1 compatibility), stateless: each
//! connection's state lives in its [`session`]; folders, messages and flags are the mailbox
//! service's, reached over gRPC, and other sessions' changes arrive as events.
//!
//! Parsing and encoding use imap-codec, whose decoder returns "incomplete" and "literal
//! announced" as values, so the session can answer literals and ask for more bytes without the
//! codec knowing anything of I/O. [`fetch`] and [`search`] are pure functions over stored
//! metadata and message bytes.

pub mod append;
pub mod config;
pub mod extended;
pub mod fetch;
pub mod hub;
pub mod notify;
pub mod search;
pub mod server;
pub mod session;
pub mod sort;
pub mod urlauth;
pub use tern_mail::utf7;

/// The body of the `imap_command` fuzz target: decoding any input with the session's decoder
/// (imap-codec plus [`extended`]) and our mailbox-name code never panics, and a decoded command
/// never claims more input than given.
pub fn fuzz_command(data: &[u8]) {
    use imap_codec::decode::CommandDecodeError;
    let mut rest = data;
    for _ in 0..64 {
        match extended::decode(rest) {
            Ok((used, _)) => {
                assert!(used > 0 && used <= rest.len(), "a command must consume input it was given");
                rest = &rest[used..];
            }
            Err(CommandDecodeError::Incomplete | CommandDecodeError::LiteralFound { .. }) => break,
            Err(CommandDecodeError::Failed) => match rest.iter().position(|b| *b == b'\n') {
                Some(i) => rest = &rest[i + 1..],
                None => break,
            },
        }
    }
    let text = String::from_utf8_lossy(data);
    if let Some(decoded) = utf7::decode(&text) {
        // Whatever decodes must encode to something that decodes to the same name.
        assert_eq!(utf7::decode(&utf7::encode(&decoded)).as_deref(), Some(decoded.as_str()));
    }
}

#[cfg(test)]
mod fuzz_tests {
    /// Runs the fuzz body on pseudo-random input (fixed seed, bounded) in the normal tests.
    #[test]
    fn fuzz_body_holds_on_generated_input() {
        let tokens: [&[u8]; 36] = [
            b"UID FETCH $ ",
            b"SEARCH RETURN (SAVE) $ OR UID $ ",
            b"$:1,$ ",
            b"a1 ",
            b"LOGIN ",
            b"FETCH 1:* ",
            b"(BODY[1.2]<0.10>) ",
            b"{3}\r\n",
            b"{2+}\r\n",
            b"\"x\" ",
            b"\r\n",
            b"&AOk-",
            b"&-",
            b"SEARCH OR FROM a NOT SEEN ",
            b"UID STORE 1 +FLAGS (\\Seen)",
            b"*",
            b"\x00",
            b"\xff",
            b"APPEND INBOX ",
            b"LIST (SUBSCRIBED RECURSIVEMATCH) ",
            b"RETURN (STATUS (MESSAGES MAILBOXID)) ",
            b"SEARCH RETURN (MIN COUNT) ",
            b"FETCH 1 (EMAILID THREADID) ",
            b"STATUS INBOX (MAILBOXID) ",
            b"(\"a\" %) ",
            b"CATENATE (TEXT ",
            b"URL \"/INBOX/;UID=1/;PARTIAL=0.5\" ",
            b"~{1+}\r\n",
            b"NOTIFY SET STATUS ",
            b"(subtree (Lists \"x\") (MessageNew MessageExpunge)) ",
            b"GENURLAUTH \"imap://a@h/INBOX/;UID=1;URLAUTH=anonymous\" INTERNAL ",
            b"URLFETCH ",
            b"CANCELUPDATE \"a1\" ",
            b"SETMETADATA INBOX (/private/x NIL) ",
            b"SEARCH SAVEDON 1-Jan-2024 ",
            b"RETURN (UPDATE) ",
        ];
        for input in tern_runtime::generated::inputs(0x2545_f491_4f6c_dd1d, 2000, 12, &tokens) {
            super::fuzz_command(&input);
        }
    }
}
