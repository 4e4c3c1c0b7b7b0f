//! Fuzz target: see `actormq::fuzzing::stream_records`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    actormq::fuzzing::stream_records(data);
});
