//! The message log's and the stream log's record decoders, and recovery's scan of a
//! damaged segment.

use crate::storage::disk::codec::{self, Entry};
use crate::storage::disk::frame::{self, FrameAt};
use crate::storage::disk::recovery::replay_bytes;
use crate::storage::disk::segment::{header, HEADER_LEN};
use crate::storage::stream::codec as stream_codec;
use crate::storage::stream::index_file::SealedIndex;
use crate::storage::stream::resync;

/// The payload bytes of a decoded message-log entry.
fn disk_bytes(entry: &Entry) -> Vec<u8> {
    let mut buf = Vec::new();
    match entry {
        Entry::Record(r) => codec::encode_record(&mut buf, r),
        Entry::Mark {
            queue,
            next_id,
            delivered,
        } => codec::encode_mark(&mut buf, queue, *next_id, *delivered),
    }
    .expect("a decoded record encodes");
    buf
}

/// Every frame of `data` from offset 0 while frames are good.
fn good_payloads(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut off = 0;
    while let FrameAt::Good { payload, next } = frame::read_at(data, off) {
        out.push(payload);
        off = next;
    }
    out
}

/// Decodes `data` as one message-log payload, and as a run of frames whose payloads are
/// decoded too. A payload that decodes encodes again to bytes that decode to the same.
pub fn disk_records(data: &[u8]) {
    for payload in std::iter::once(data).chain(good_payloads(data)) {
        if let Ok(entry) = codec::decode(payload) {
            let bytes = disk_bytes(&entry);
            let back = codec::decode(&bytes).expect("a re-encoded record decodes");
            assert_eq!(disk_bytes(&back), bytes, "record round trip");
        }
    }
}

/// Runs recovery's scan over `data` as the body of segment 1 (after a good header, so
/// that the scan reaches the records), as the tail segment and as an older one. What
/// recovery reports stays inside the file, and a torn tail, once zeroed as recovery
/// zeroes it, is found clean by the next scan with the same records.
pub fn disk_recovery(data: &[u8]) {
    let mut seg = header(1).to_vec();
    seg.extend_from_slice(data);
    let (index, report) = replay_bytes(1, &seg, true);
    for c in report.truncated.iter().chain(&report.skipped) {
        assert!(
            c.offset >= HEADER_LEN && c.offset + c.len <= seg.len() as u64,
            "{c:?} outside a segment of {} bytes",
            seg.len()
        );
    }
    assert!(report.truncated.len() <= 1, "one torn tail at most");
    for _ in index.queues() {}
    let _ = index.reclaimable(2);
    let _ = index.compactable(2);
    if let Some(t) = report.truncated.first() {
        let (start, end) = (t.offset as usize, (t.offset + t.len) as usize);
        seg[start..end].fill(0);
        let (_, again) = replay_bytes(1, &seg, true);
        assert!(again.truncated.is_empty(), "a zeroed tail is clean");
        // Zeroing adds nothing. It can take a record away only when a damaged frame
        // whose checksum covers the zeroed bytes becomes whole and hides the record
        // inside it (the fuzzer writes such checksums; the writer never overlaps
        // frames), so only "no more" holds for every input.
        assert!(again.records <= report.records, "zeroing added records");
    }
    let _ = replay_bytes(1, &seg, false);
}

/// Decodes `data` as one stream-log payload, and as a run of frames. A record that
/// decodes encodes again (in its frame) to bytes that decode to the same. A record
/// kept as stored whose message decodes goes into a native deliver frame (its stored
/// bytes copied in) that a client decodes to that same message. And as a sealed
/// segment's index file or a recovery point, whose decoder must refuse, never panic,
/// and re-encode exactly; and as a segment whose first record is damaged, where the
/// search for the next record must stay within the data.
pub fn stream_records(data: &[u8]) {
    // As a sealed segment's index file, or an active one's recovery point (the same
    // layout under its own magic): one that reads back is its own encoding.
    if let Ok(idx) = SealedIndex::decode(data) {
        assert_eq!(idx.encode(), data, "index file round trip");
    }
    if let Ok(idx) = SealedIndex::decode_point(data) {
        assert_eq!(idx.encode_point(), data, "recovery point round trip");
    }
    // As a segment whose first record (offset 0) is damaged, described by an index
    // with one entry: where a reader goes on lies within it, after the damage.
    let index = SealedIndex {
        first: 0,
        next: data.len() as u64 + 1,
        bytes: data.len() as u64,
        last_timestamp: 0,
        run_start: 0,
        entries: vec![(0, 0, 0)],
    };
    for idx in [None, Some(&index)] {
        if let Some(r) = resync::after_damage(data, 0, 0, idx) {
            assert!(r.pos > 0 && r.pos <= data.len() && r.offset >= 1, "{r:?}");
        }
    }
    for payload in std::iter::once(data).chain(good_payloads(data)) {
        stored_record(payload);
        if let Ok((offset, ts, message)) = stream_codec::decode(payload) {
            let mut framed = Vec::new();
            stream_codec::encode(&mut framed, offset, ts, &message).expect("encodes");
            let FrameAt::Good { payload: p, .. } = frame::read_at(&framed, 0) else {
                panic!("a written frame reads back");
            };
            let (o2, t2, m2) = stream_codec::decode(p).expect("a re-encoded record decodes");
            assert_eq!((o2, t2), (offset, ts));
            // As the tail cache keeps it: the same fields and body as read back.
            let chunk = bytes::Bytes::from(framed.clone());
            let kept = stream_codec::appended(&chunk, 0);
            if let Ok((_, _, read)) = stream_codec::stored(&chunk, &chunk[frame::FRAME_HEADER..]) {
                assert_eq!((kept.fields(), kept.body()), (read.fields(), read.body()));
            }
            // An append writes the offset header into the frame by hand: the bytes of
            // the message with the header added.
            if let Ok(offset_i64) = i64::try_from(offset) {
                let mut by_hand = Vec::new();
                stream_codec::encode_appended(&mut by_hand, offset, ts, &m2).expect("encodes");
                let with = crate::message::Message::clone(&m2)
                    .with_header(crate::storage::stream::meta::OFFSET_HEADER, offset_i64);
                let mut want = Vec::new();
                stream_codec::encode(&mut want, offset, ts, &with).expect("encodes");
                assert_eq!(
                    by_hand, want,
                    "an appended record's offset header written by hand"
                );
            }
            let mut again = Vec::new();
            stream_codec::encode(&mut again, o2, t2, &m2).expect("encodes");
            assert_eq!(again, framed, "stream record round trip");
        }
    }
}

fn stored_record(payload: &[u8]) {
    use crate::protocol::frame::take_frame;
    use crate::protocol::{decode_server, encode_deliver_stored, ServerFrame};
    let whole = bytes::Bytes::copy_from_slice(payload);
    let Ok((offset, _, stored)) = stream_codec::stored(&whole, &whole) else {
        return;
    };
    let Ok(m) = stored.message(&mut None) else {
        return;
    };
    let (o, _, decoded) = stream_codec::decode(payload).expect("decodes as stored");
    assert_eq!(o, offset);
    // Compared encoded: a NaN in a header is not equal to itself.
    let encoded = |m: &crate::message::Message| {
        let mut out = Vec::new();
        stream_codec::encode(&mut out, o, 0, m).expect("encodes");
        out
    };
    assert_eq!(encoded(m), encoded(&decoded), "stored and decoded agree");
    let mut out = bytes::BytesMut::new();
    encode_deliver_stored(&mut out, "t", 1, false, 1, stored.fields(), stored.body())
        .expect("encodes");
    // The head alone then the body (a plain TCP socket's writev): the same bytes.
    let mut split = bytes::BytesMut::new();
    let body_len = stored.body().len();
    crate::protocol::encode_deliver_stored_head(
        &mut split,
        "t",
        1,
        false,
        1,
        stored.fields(),
        body_len,
    );
    split.extend_from_slice(stored.body());
    assert_eq!(split, out, "head and body as one frame");
    let body = take_frame(&mut out, usize::MAX)
        .unwrap()
        .expect("a whole frame");
    let Ok(ServerFrame::Deliver(d)) = decode_server(&body) else {
        panic!(
            "a deliver frame of a stored record decodes: {:?} {:?}",
            decode_server(&body).err(),
            m
        );
    };
    assert_eq!(
        (&*d.exchange, &*d.routing_key, d.body),
        (&*m.exchange, m.routing_key.as_str(), &m.body[..])
    );
    // An empty set travels as nil when encoded, as an array of nils when copied: the
    // same to a client.
    let got = d.properties.map(|p| p.into_owned()).unwrap_or_default();
    let bytes = |p: &crate::message::Properties| rmp_serde::to_vec(p).expect("encodes");
    assert_eq!(bytes(&got), bytes(&m.properties));
}
