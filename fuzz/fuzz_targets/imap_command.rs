//! Fuzzes IMAP command decoding (imap-codec as Tern configures it) and mailbox-name decoding.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tern_imap::fuzz_command(data);
});
