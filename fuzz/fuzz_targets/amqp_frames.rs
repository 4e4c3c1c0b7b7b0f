//! Fuzz target: see `actormq::fuzzing::amqp_frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    actormq::fuzzing::amqp_frames(data);
});
