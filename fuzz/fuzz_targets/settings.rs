//! Fuzz target: see `actormq::fuzzing::settings`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    actormq::fuzzing::settings(data);
});
