//! Fuzzes the SMTP command-line parser: any bytes give a command or an error, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tern_smtp::codec::fuzz_command(data);
});
