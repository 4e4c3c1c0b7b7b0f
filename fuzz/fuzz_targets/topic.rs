//! Fuzz target: see `actormq::fuzzing::topic`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    actormq::fuzzing::topic(data);
});
