//! Fuzzes the relay's reply parser: whatever a remote server sends, parsing replies one after
//! another either finishes, asks for more bytes, or fails with an error, and never panics.
#![no_main]

use tern_relay::client::reply::parse_reply;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((reply, used))) = parse_reply(rest) {
        // A reply always uses at least one line, so the loop makes progress and ends.
        assert!(used > 0 && used <= rest.len());
        assert!((200..=599).contains(&reply.code));
        let _ = reply.to_string();
        rest = &rest[used..];
    }
});
