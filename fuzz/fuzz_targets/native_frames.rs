//! Fuzz target: see `actormq::fuzzing::native_frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    actormq::fuzzing::native_frames(data);
});
