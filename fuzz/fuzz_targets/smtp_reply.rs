//! Fuzzes the relay's reply parser (see `tern_relay::client::reply::fuzz_reply`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_relay::client::reply::fuzz_reply(data));
