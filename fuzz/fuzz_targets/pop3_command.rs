//! Fuzzes the POP3 codec: any bytes give a command or an error, never a panic, and multi-line
//! encoding never ends the body early or sends a bare CR or LF.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tern_pop3::codec::fuzz_command(data);
});
