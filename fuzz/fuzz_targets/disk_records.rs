//! Fuzz target: see `actormq::fuzzing::disk_records`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    actormq::fuzzing::disk_records(data);
});
