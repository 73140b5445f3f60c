//! Fuzzes the ManageSieve codec: any bytes give a command, a refusal, a fault or a request for
//! more input, never a panic; literals never read past the input; responses always encode to
//! lines a client can split again.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tern_managesieve::fuzz_command(data);
});
