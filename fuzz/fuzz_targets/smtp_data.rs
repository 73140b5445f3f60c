//! Fuzzes the DATA decoder: split anywhere, it finds the same end and the same message, and
//! never stores a bare CR or LF.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tern_smtp::codec::fuzz_data(data);
});
