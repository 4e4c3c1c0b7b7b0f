//! `deliver_run`: a run of consecutive stream records in one frame, as the stream's
//! segment (or the tail cache's chunk) stores them, for a native consumer that asked
//! for runs (`runs` in its consume). The broker writes one head per run and hands the
//! socket the records as one slice of the mapping, so an extra consumer of the same
//! stream costs the broker a head and a `writev` slice per run instead of a frame head,
//! two slices and a frame's bookkeeping per record (docs/STREAMS.md, "Read path").
//!
//! Frame: `{"deliver_run": [consumer_tag, first_tag, redelivered, delivery_count,
//! count, records]}`, `records` a bin of `count` storage frames back to back, each
//! `[len u32 LE][crc32 u32 LE][offset u64 LE][timestamp i64 LE][meta_len u32 LE][meta]
//! [body]`, the CRC over the length bytes and the rest (docs/PROTOCOL.md). The records
//! are delivery tags `first_tag`, `first_tag + 1`, ..., all with the same `redelivered`
//! and `delivery_count`. The client ([`split_run`]) checks every record's length, CRC,
//! consecutive offsets and meta, and makes an ordinary delivery of each.

use super::super::frame::LENGTH_PREFIX;
use super::deliver::Reader;
use super::stored::{put_len, put_uint};
use crate::message::Properties;
use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// `{"deliver_run": [` with its six fields.
const RUN_HEAD: &[u8] = b"\x81\xabdeliver_run\x96";

/// Bytes of a storage frame's head: length and CRC.
const FRAME_HEAD: usize = 8;

/// Bytes of a record's own head inside its frame: offset, timestamp, meta length.
const RECORD_HEAD: usize = 20;

/// A run of stream records for one consumer (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliverRunFrame<'a> {
    /// The consumer's tag.
    #[serde(borrow)]
    pub consumer_tag: Cow<'a, str>,
    /// The first record's delivery tag; the others follow one by one.
    pub first_tag: u64,
    /// Every record of the run was delivered before.
    pub redelivered: bool,
    /// Deliveries of each record, this one included.
    pub delivery_count: u32,
    /// Records in the run.
    pub count: u32,
    /// The records' storage frames, back to back.
    #[serde(borrow, with = "serde_bytes")]
    pub records: &'a [u8],
}

/// Appends the head of a `deliver_run` frame to `out`: everything up to and including
/// the length marker of `records`, the frame's length prefix counting the
/// `records_len` bytes the caller sends right after (a slice of the mapping).
///
/// ```
/// use actormq::protocol::{decode_server, encode_deliver_run_head, frame::take_frame, ServerFrame};
/// use bytes::BytesMut;
/// let mut out = BytesMut::new();
/// encode_deliver_run_head(&mut out, "c", 5, false, 1, 0, 0);
/// let body = take_frame(&mut out, 1 << 20).unwrap().unwrap();
/// let ServerFrame::DeliverRun(r) = decode_server(&body).unwrap() else { panic!() };
/// assert_eq!((r.first_tag, r.count, r.records), (5, 0, &[][..]));
/// ```
pub fn encode_deliver_run_head(
    out: &mut BytesMut,
    consumer_tag: &str,
    first_tag: u64,
    redelivered: bool,
    delivery_count: u32,
    count: u32,
    records_len: usize,
) {
    let start = out.len();
    out.put_u32(0);
    out.extend_from_slice(RUN_HEAD);
    put_len(out, consumer_tag.len(), [0xd9, 0xda, 0xdb], Some(0xa0));
    out.extend_from_slice(consumer_tag.as_bytes());
    put_uint(out, first_tag);
    out.put_u8(if redelivered { 0xc3 } else { 0xc2 });
    put_uint(out, u64::from(delivery_count));
    put_uint(out, u64::from(count));
    // Always bin32, so the head's length does not depend on the run's.
    out.put_u8(0xc6);
    out.put_u32(records_len as u32);
    let len = (out.len() - start - LENGTH_PREFIX + records_len) as u32;
    out[start..start + LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
}

/// Decodes `body` by hand when it is a `deliver_run` frame in the encoder's shape;
/// `None` for anything else (the generic decoder then decides).
pub fn decode_deliver_run(body: &[u8]) -> Option<DeliverRunFrame<'_>> {
    let mut r = Reader {
        b: body.strip_prefix(RUN_HEAD)?,
    };
    let consumer_tag = r.str()?;
    let first_tag = r.uint()?;
    let redelivered = r.bool()?;
    let delivery_count = u32::try_from(r.uint()?).ok()?;
    let count = u32::try_from(r.uint()?).ok()?;
    let records = r.bin()?;
    r.b.is_empty().then_some(DeliverRunFrame {
        consumer_tag: Cow::Borrowed(consumer_tag),
        first_tag,
        redelivered,
        delivery_count,
        count,
        records,
    })
}

/// One record of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord<'a> {
    /// Its offset in the stream (its properties carry it too, as `x-stream-offset`).
    pub offset: u64,
    /// When the broker appended it, milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The exchange it was published to.
    pub exchange: Cow<'a, str>,
    /// Its routing key.
    pub routing_key: Cow<'a, str>,
    /// Its properties.
    pub properties: Properties,
    /// Its body, a slice of the run.
    pub body: &'a [u8],
}

/// A record of a run that cannot be delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {index} of a run of {count} (byte {at}) {reason}")]
pub struct RunError {
    /// Its place in the run, from 0 (the records before it are good).
    pub index: u32,
    /// Records the run said it holds.
    pub count: u32,
    /// Where its frame starts in the run.
    pub at: usize,
    /// What is wrong.
    pub reason: String,
}

/// Splits a run of `count` records, checking each one (its length, its CRC, that its
/// offset follows the one before, that its meta is an exchange, a routing key and
/// properties ending where the meta ends), and hands each good one to `each`, in
/// order. Stops at the first record that does not check, answering what is wrong with
/// it; the records before it were handed over. The run must hold exactly `count`
/// records.
///
/// ```
/// use actormq::protocol::split_run;
/// let mut n = 0;
/// split_run(&[], 0, |_| n += 1).unwrap();
/// assert_eq!(n, 0);
/// let e = split_run(&[1, 0, 0], 1, |_| n += 1).unwrap_err();
/// assert!(e.reason.contains("runs past the run"), "{e}");
/// ```
pub fn split_run<'a>(
    records: &'a [u8],
    count: u32,
    mut each: impl FnMut(RunRecord<'a>),
) -> Result<(), RunError> {
    let mut at = 0;
    let mut expect = None;
    for index in 0..count {
        let fail = |reason: String| RunError {
            index,
            count,
            at,
            reason,
        };
        let (record, next) = one(records, at, expect).map_err(fail)?;
        expect = Some(record.offset + 1);
        at = next;
        each(record);
    }
    if at != records.len() {
        return Err(RunError {
            index: count,
            count,
            at,
            reason: format!(
                "is not there: {} bytes follow the last record",
                records.len() - at
            ),
        });
    }
    Ok(())
}

/// The record whose frame starts at `at`, and where the next one starts.
fn one(b: &[u8], at: usize, expect: Option<u64>) -> Result<(RunRecord<'_>, usize), String> {
    let Some(head) = b.get(at..at + FRAME_HEAD) else {
        return Err("runs past the run (no room for its frame's head)".into());
    };
    let len_bytes: [u8; 4] = head[..4].try_into().expect("4 bytes");
    let len = u32::from_le_bytes(len_bytes) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    let start = at + FRAME_HEAD;
    let Some(payload) = start.checked_add(len).and_then(|end| b.get(start..end)) else {
        return Err(format!("runs past the run (a frame of {len} bytes)"));
    };
    let mut h = crc32fast::Hasher::new();
    h.update(&len_bytes);
    h.update(payload);
    if h.finalize() != crc {
        return Err("fails its checksum".into());
    }
    if payload.len() < RECORD_HEAD {
        return Err(format!("is too short ({} bytes)", payload.len()));
    }
    let offset = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
    let timestamp = i64::from_le_bytes(payload[8..16].try_into().expect("8 bytes"));
    if expect.is_some_and(|e| e != offset) {
        return Err(format!(
            "has offset {offset}, not {} after the one before",
            expect.unwrap_or_default()
        ));
    }
    let meta_len = u32::from_le_bytes(payload[16..20].try_into().expect("4 bytes")) as usize;
    let Some(meta) = payload.get(RECORD_HEAD..RECORD_HEAD + meta_len) else {
        return Err(format!(
            "(offset {offset}) has a meta of {meta_len} bytes running past its frame"
        ));
    };
    let (exchange, routing_key, properties) = fields(meta).ok_or_else(|| {
        format!(
            "(offset {offset}) has a meta that is not an exchange, a routing key and properties"
        )
    })?;
    let record = RunRecord {
        offset,
        timestamp,
        exchange,
        routing_key,
        properties,
        body: &payload[RECORD_HEAD + meta_len..],
    };
    Ok((record, start + len))
}

/// The meta's three values: by hand in the writer's shape, else through rmp-serde.
fn fields(meta: &[u8]) -> Option<(Cow<'_, str>, Cow<'_, str>, Properties)> {
    let mut r = Reader {
        b: meta.strip_prefix(&[super::STORED_META_HEAD])?,
    };
    let hand = (|| {
        let exchange = r.str()?;
        let routing_key = r.str()?;
        let properties = if r.nil() {
            Properties::default()
        } else {
            r.properties()?
        };
        r.b.is_empty().then_some((
            Cow::Borrowed(exchange),
            Cow::Borrowed(routing_key),
            properties,
        ))
    })();
    if hand.is_some() {
        return hand;
    }
    // Another marker width than the writer's: the generic decoder, with the same
    // limits as any frame (walked first, so nothing deeper than a frame may be is taken).
    if super::walk_value(meta).0 != Some(meta.len()) {
        return None;
    }
    let (e, k, p): (String, String, Option<Properties>) = rmp_serde::from_slice(meta).ok()?;
    Some((Cow::Owned(e), Cow::Owned(k), p.unwrap_or_default()))
}

#[cfg(test)]
mod tests;
