//! Fuzz target: see `actormq::fuzzing::amqp_content`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    actormq::fuzzing::amqp_content(data);
});
