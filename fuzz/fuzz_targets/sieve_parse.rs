//! Fuzzes the Sieve lexer and parser (see `tern_sieve::fuzz_parse`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_sieve::fuzz_parse(data));
