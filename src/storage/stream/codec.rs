//! The payload of a stream record, inside the message log's checksummed frame
//! ([`crate::storage::disk::frame`]): `[offset u64 LE][timestamp i64 LE][meta_len u32 LE]
//! [meta][body]`, `meta` a MessagePack array (exchange, routing key, properties) as in
//! the message log's publish records. The offset is stored so that recovery can check
//! that the log is contiguous; the timestamp (milliseconds since the Unix epoch, when the
//! broker appended it) serves `x-stream-offset` timestamps and `x-max-age`.

use crate::message::{Message, Properties};
use crate::storage::disk::frame;
use crate::storage::error::StorageError;
use bytes::Bytes;
use std::sync::Arc;

/// Appends the frame of one record to `buf`; answers the frame's length.
pub fn encode(
    buf: &mut Vec<u8>,
    offset: u64,
    timestamp: i64,
    message: &Message,
) -> Result<usize, StorageError> {
    frame::encode_with(buf, |b| {
        b.extend_from_slice(&offset.to_le_bytes());
        b.extend_from_slice(&timestamp.to_le_bytes());
        let len_at = b.len();
        b.extend_from_slice(&[0u8; 4]);
        let meta = (
            &*message.exchange,
            &message.routing_key,
            &*message.properties,
        );
        rmp_serde::encode::write(b, &meta).map_err(|e| StorageError::Encode(e.to_string()))?;
        let meta_len = (b.len() - len_at - 4) as u32;
        b[len_at..len_at + 4].copy_from_slice(&meta_len.to_le_bytes());
        b.extend_from_slice(&message.body);
        Ok(())
    })
}

/// One decoded record: its offset, timestamp and message.
pub type Decoded = (u64, i64, Arc<Message>);

/// Decodes a frame's payload (the body copied out of it).
pub fn decode(payload: &[u8]) -> Result<Decoded, String> {
    decode_with(payload, &mut None, Bytes::copy_from_slice)
}

/// Decodes a frame's payload that lies inside `whole` (a mapped segment): the body is
/// a slice of `whole`, not a copy, so a replay hands the socket writer the page cache's
/// bytes. `exchange` is the exchange name of the record decoded before: a run of
/// records published to one exchange shares one allocation of its name.
pub fn decode_shared(
    whole: &Bytes,
    payload: &[u8],
    exchange: &mut Option<Arc<str>>,
) -> Result<Decoded, String> {
    decode_with(payload, exchange, |b| {
        if b.is_empty() {
            Bytes::new()
        } else {
            whole.slice_ref(b)
        }
    })
}

/// The offset and timestamp of a record, without decoding the rest (recovery and
/// skipping ahead read only these).
pub fn header(payload: &[u8]) -> Result<(u64, i64), String> {
    if payload.len() < 20 {
        return Err(format!("record of {} bytes is too short", payload.len()));
    }
    let offset = u64::from_le_bytes(payload[0..8].try_into().expect("8 bytes"));
    let timestamp = i64::from_le_bytes(payload[8..16].try_into().expect("8 bytes"));
    Ok((offset, timestamp))
}

fn decode_with(
    payload: &[u8],
    last_exchange: &mut Option<Arc<str>>,
    body: impl FnOnce(&[u8]) -> Bytes,
) -> Result<Decoded, String> {
    let (offset, timestamp) = header(payload)?;
    let meta_len = u32::from_le_bytes(payload[16..20].try_into().expect("4 bytes")) as usize;
    if meta_len > payload.len() - 20 {
        return Err(format!("meta of {meta_len} bytes runs past its record"));
    }
    let (exchange, routing_key, properties): (&str, String, Properties) =
        rmp_serde::from_slice(&payload[20..20 + meta_len])
            .map_err(|e| format!("bad stream record: {e}"))?;
    let exchange = match last_exchange {
        Some(x) if **x == *exchange => x.clone(),
        _ => last_exchange.insert(Arc::from(exchange)).clone(),
    };
    let message = Message {
        exchange,
        routing_key,
        properties: Properties::shared(Some(properties)),
        body: body(&payload[20 + meta_len..]),
    };
    Ok((offset, timestamp, Arc::new(message)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::disk::frame::{read_at, FrameAt};

    #[test]
    fn a_record_round_trips_through_a_frame() {
        let m = Message::new("x", "k", "body").with_header("h", "v");
        let mut buf = Vec::new();
        let n = encode(&mut buf, 42, 1_700_000_000_000, &m).unwrap();
        assert_eq!(n, buf.len());
        let FrameAt::Good { payload, next } = read_at(&buf, 0) else {
            panic!("not a good frame");
        };
        assert_eq!(next, n);
        let (o, t, back) = decode(payload).unwrap();
        assert_eq!((o, t), (42, 1_700_000_000_000));
        assert_eq!(*back, m);
        let whole = Bytes::from(buf.clone());
        let mut exchange = None;
        let (o, _, shared) = decode_shared(&whole, &whole[8..], &mut exchange).unwrap();
        assert_eq!((o, &*shared), (42, &m));
        let (_, _, again) = decode_shared(&whole, &whole[8..], &mut exchange).unwrap();
        assert!(
            Arc::ptr_eq(&shared.exchange, &again.exchange),
            "one exchange name for a run of records"
        );
        assert_eq!(
            shared.body.as_ptr(),
            whole[whole.len() - 4..].as_ptr(),
            "a slice, not a copy"
        );
    }
}
