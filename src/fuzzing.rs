//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer): each takes
//! arbitrary bytes the way the broker takes them from a socket or a file, and must
//! neither panic nor allocate without bound whatever they hold. Not an API.

use bytes::BytesMut;

/// Feeds `data` to the native protocol's framing and client-frame decoder, as the
/// connection's reader does (frames up to 64 KiB here, to keep runs fast).
pub fn native_frames(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = crate::protocol::frame::take_frame(&mut buf, 64 * 1024) {
        let _ = crate::protocol::decode_client(&frame);
    }
    // The body alone, without the length prefix, reaches the decoder too.
    let _ = crate::protocol::decode_client(data);
}

/// Walks `data` as a frame body and checks what the walk promises the decoder: a
/// value it accepts within the budget is decoded without panicking.
pub fn walk(data: &[u8]) {
    let (len, cost) = crate::protocol::walk_value(data);
    if let Some(n) = len {
        assert!(n <= data.len(), "the walk went past the end");
        if n == data.len() && cost <= crate::protocol::decode_budget(n) {
            let _ = crate::protocol::decode_client(data);
        }
    }
}

/// Feeds `data` to the AMQP listener's frame cutter (after the protocol header), and
/// every content header's properties to their conversion into actormq's.
pub fn amqp_frames(data: &[u8]) {
    use crate::amqp::codec::{take_frame, Incoming};
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = take_frame(&mut buf, 131_072) {
        if let Incoming::Header(_, h) = frame {
            let _ = crate::amqp::properties::properties_in(&h.properties());
        }
    }
}

/// Parses `data` as a `Settings.toml` (no environment overrides).
pub fn settings(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::settings::Settings::from_toml(text);
    }
}
