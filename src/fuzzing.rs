//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer): each takes
//! arbitrary bytes the way the broker takes them from a socket or a file, and must
//! neither panic nor allocate without bound whatever they hold. Not an API.
//!
//! Where a decoded value can be encoded again, the entry points also check that it
//! round-trips, so that a decoder accepting what the encoder cannot reproduce fails
//! the run as surely as a panic. The seeds checked in under `fuzz/seeds/` run through
//! every entry point in `cargo test` (crashes found become seeds, so regressions).

mod defs;
#[cfg(test)]
mod seeds;
mod storage;
mod tables;

pub use defs::definitions;
pub use storage::{disk_records, disk_recovery, stream_records};
pub use tables::{field_table, topic};

use bytes::BytesMut;
use std::collections::HashMap;

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

/// Feeds `data` to the client's hand decoders of deliver and deliver_run frames: a
/// frame one takes, the generic decoder takes too, as the same frame (it may leave any
/// frame to the generic decoder, never decode one differently). Compared encoded, so
/// that a NaN header equals itself. A run's records, whatever they hold, are split
/// without a panic.
pub fn server_deliver(data: &[u8]) {
    use crate::protocol::{
        decode_deliver, decode_deliver_run, decode_server_generic, encode_server, split_run,
        ServerFrame,
    };
    let hand = decode_deliver(data)
        .map(|d| ServerFrame::Deliver(d.into_frame()))
        .or_else(|| decode_deliver_run(data).map(ServerFrame::DeliverRun));
    if let Some(hand) = hand {
        let generic = decode_server_generic(data).expect("the generic decoder takes it");
        let (mut want, mut got) = (BytesMut::new(), BytesMut::new());
        encode_server(&generic, &mut want).expect("encodes");
        encode_server(&hand, &mut got).expect("encodes");
        assert!(want == got, "decoded differently");
    }
    if let Ok(ServerFrame::DeliverRun(r)) = decode_server_generic(data) {
        let _ = split_run(r.records, r.count, |_| {});
    }
    // The bytes as a run's records too: a storage frame's checks on any input.
    let _ = split_run(data, 3, |_| {});
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

/// Feeds `data` to the AMQP frame cutter, then every method, content header and body
/// frame to the broker's content reassembly (`amqp::content`), channel by channel, as a
/// connection does: a complete publish carries exactly the body its header announced,
/// and an error empties the channel's slot (505 and other connection-level codes close
/// the connection).
pub fn amqp_content(data: &[u8]) {
    use crate::amqp::codec::{take_frame, Incoming};
    use crate::amqp::content::{on_body, on_header, Content};
    use amq_protocol::protocol::{basic, AMQPClass};
    // Small, so that headers over the limit are found.
    const MAX: u64 = 64 * 1024;
    let mut slots: HashMap<u16, Option<Content>> = HashMap::new();
    let mut announced: HashMap<u16, u64> = HashMap::new();
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = take_frame(&mut buf, 131_072) {
        let publish = |ch: u16, p: basic::Publish, slots: &mut HashMap<u16, Option<Content>>| {
            let slot = slots.entry(ch).or_default();
            // A method where content was expected: 505, the connection closes.
            let expected = slot.is_none();
            if expected {
                *slot = Some(Content::new(p));
            }
            expected
        };
        let (ch, step) = match frame {
            Incoming::Method(ch, m) => {
                if slots.get(&ch).is_some_and(|s| s.is_some()) {
                    return;
                }
                if let AMQPClass::Basic(basic::AMQPMethod::Publish(p)) = *m {
                    publish(ch, p, &mut slots);
                }
                continue;
            }
            Incoming::Publish(ch, p) => {
                if !publish(ch, p, &mut slots) {
                    return;
                }
                continue;
            }
            Incoming::Ack(ch, ..) => {
                if slots.get(&ch).is_some_and(|s| s.is_some()) {
                    return;
                }
                continue;
            }
            Incoming::Header(ch, h) => {
                let _ = crate::amqp::properties::properties_in(&h.properties());
                announced.insert(ch, h.body_size);
                let slot = slots.entry(ch).or_default();
                (ch, on_header(slot, ch, h.body_size, h.properties, MAX))
            }
            Incoming::Body(ch, b) => (ch, on_body(slots.entry(ch).or_default(), ch, b)),
            Incoming::Heartbeat(_) => continue,
        };
        match step {
            Ok(None) => {}
            Ok(Some(cmd)) => {
                assert_eq!(Some(&(cmd.body.len() as u64)), announced.get(&ch));
                assert!(slots[&ch].is_none(), "a complete publish leaves its slot");
            }
            Err(e) => {
                assert!(slots[&ch].is_none(), "an error drops the channel's content");
                if e.is_connection_level() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Runs every checked-in seed of `target` through `f`.
    fn seeds(target: &str, f: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds")
            .join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
            let path = entry.expect("a directory entry").path();
            f(&std::fs::read(&path).expect("a seed"));
            n += 1;
        }
        assert!(n > 0, "no seeds in {dir:?}");
    }

    #[test]
    fn every_seed_runs_clean_through_its_target() {
        seeds("native_frames", super::native_frames);
        seeds("server_deliver", super::server_deliver);
        seeds("wire_walk", super::walk);
        seeds("amqp_frames", super::amqp_frames);
        seeds("settings", super::settings);
        seeds("field_table", super::field_table);
        seeds("topic", super::topic);
        seeds("definitions", super::definitions);
        seeds("disk_records", super::disk_records);
        seeds("disk_recovery", super::disk_recovery);
        seeds("stream_records", super::stream_records);
        seeds("amqp_content", super::amqp_content);
    }
}
