//! Fuzz target: see `actormq::fuzzing::walk`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    actormq::fuzzing::walk(data);
});
