//! Fuzz target: see `actormq::fuzzing::server_deliver`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    actormq::fuzzing::server_deliver(data);
});
