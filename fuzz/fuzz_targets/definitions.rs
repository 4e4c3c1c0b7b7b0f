//! Fuzz target: see `actormq::fuzzing::definitions`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    actormq::fuzzing::definitions(data);
});
