//! Fuzz target: see `actormq::fuzzing::disk_recovery`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    actormq::fuzzing::disk_recovery(data);
});
