//! Fuzz target: see `actormq::fuzzing::field_table`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    actormq::fuzzing::field_table(data);
});
