//! The payload of a stream record, inside the message log's checksummed frame
//! ([`crate::storage::disk::frame`]): `[offset u64 LE][timestamp i64 LE][meta_len u32 LE]
//! [meta][body]`, `meta` a MessagePack array (exchange, routing key, properties) as in
//! the message log's publish records. The offset is stored so that recovery can check
//! that the log is contiguous; the timestamp (milliseconds since the Unix epoch, when the
//! broker appended it) serves `x-stream-offset` timestamps and `x-max-age`.
//!
//! `meta`'s three values are exactly what the native protocol's deliver frame carries
//! for them, so a record read back is kept as it is stored ([`StoredMessage`]) and
//! decoded only for a consumer that needs a [`Message`] (AMQP, embedded).

use crate::message::{Message, Properties};
use crate::protocol::wire::STORED_META_HEAD;
use crate::storage::disk::frame;
use crate::storage::error::StorageError;
use bytes::Bytes;
use serde::Deserialize;
use std::sync::{Arc, OnceLock};

/// Appends the frame of one record to `buf`; answers the frame's length.
pub fn encode(
    buf: &mut Vec<u8>,
    offset: u64,
    timestamp: i64,
    message: &Message,
) -> Result<usize, StorageError> {
    encode_frame(buf, offset, timestamp, message, |b| {
        let meta = (
            &*message.exchange,
            &message.routing_key,
            &*message.properties,
        );
        rmp_serde::encode::write(b, &meta).map_err(|e| StorageError::Encode(e.to_string()))
    })
}

/// Appends the frame of the record appended at `offset`: `message` with its
/// `x-stream-offset` header set to `offset`, the message only read (its meta written
/// by [`super::meta`]). The same bytes as [`encode`] of the message with that header.
pub fn encode_appended(
    buf: &mut Vec<u8>,
    offset: u64,
    timestamp: i64,
    message: &Message,
) -> Result<usize, StorageError> {
    encode_frame(buf, offset, timestamp, message, |b| {
        super::meta::write_meta(b, message, offset)
    })
}

/// A record's frame: offset, timestamp, the meta's length and the meta `write_meta`
/// writes, then the body.
fn encode_frame(
    buf: &mut Vec<u8>,
    offset: u64,
    timestamp: i64,
    message: &Message,
    write_meta: impl FnOnce(&mut Vec<u8>) -> Result<(), StorageError>,
) -> Result<usize, StorageError> {
    frame::encode_with(buf, |b| {
        b.extend_from_slice(&offset.to_le_bytes());
        b.extend_from_slice(&timestamp.to_le_bytes());
        let len_at = b.len();
        b.extend_from_slice(&[0u8; 4]);
        write_meta(b)?;
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

/// A record's message as its segment stores it: the MessagePack of its exchange,
/// routing key and properties (the meta array's values, its header left out), then its
/// body, one slice of the segment's mapping. A consumer writing native deliver frames
/// copies it into them as it is ([`crate::protocol::encode_deliver_stored`]); others
/// take [`StoredMessage::message`], decoded once however many read it.
pub struct StoredMessage {
    /// The bytes it lies in: the segment's mapping, or the chunk it was appended in.
    whole: Bytes,
    /// Where its three values start in `whole`.
    fields_at: usize,
    /// Bytes of the three values.
    fields_len: usize,
    /// Where its frame ends in `whole` (the end of its body).
    end: usize,
    /// Its whole storage frame (length, CRC, record head) lies in `whole` before its
    /// values, so it can go to a consumer of runs as stored ([`Self::frame_in`]).
    framed: bool,
    decoded: OnceLock<Arc<Message>>,
}

/// Bytes from a storage frame's start to its record's three values: the frame's
/// length and CRC, the record's offset, timestamp and meta length, the meta's array
/// header.
pub(super) const FIELDS_IN_FRAME: usize = frame::FRAME_HEADER + 21;

impl std::fmt::Debug for StoredMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredMessage")
            .field("fields", &self.fields_len)
            .field("body", &self.body().len())
            .field("decoded", &self.decoded.get().is_some())
            .finish()
    }
}

impl StoredMessage {
    /// The exchange, routing key and properties: three MessagePack values.
    pub fn fields(&self) -> &[u8] {
        &self.whole[self.fields_at..self.fields_at + self.fields_len]
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.whole[self.fields_at + self.fields_len..self.end]
    }

    /// The body, as a slice of the bytes it lies in (a segment's mapping, or the chunk
    /// it was appended in): no copy.
    pub fn body_bytes(&self) -> Bytes {
        self.whole.slice(self.fields_at + self.fields_len..self.end)
    }

    /// Bytes held: the three values and the body.
    pub fn len(&self) -> usize {
        self.end - self.fields_at
    }

    /// Never true: a stored message has its three values at least.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes its storage frame lies in and where the frame is in them, when it was
    /// read (or appended) with its frame: consecutive records whose frames are adjacent
    /// in the same bytes go to a consumer of runs as one slice
    /// ([`crate::protocol::DeliverRunFrame`]).
    pub fn frame_in(&self) -> Option<(&Bytes, std::ops::Range<usize>)> {
        self.framed
            .then(|| (&self.whole, self.fields_at - FIELDS_IN_FRAME..self.end))
    }

    /// The message, if already decoded.
    pub fn decoded(&self) -> Option<&Arc<Message>> {
        self.decoded.get()
    }

    /// The message, decoded on the first call (its body a slice of the mapping, not a
    /// copy). `exchange` is the exchange name of the record decoded before: a run of
    /// records published to one exchange shares one allocation of its name.
    pub fn message(&self, exchange: &mut Option<Arc<str>>) -> Result<&Arc<Message>, String> {
        if let Some(m) = self.decoded.get() {
            return Ok(m);
        }
        let bad = |e: rmp_serde::decode::Error| format!("bad stream record: {e}");
        // The three values one after the other, as the array held them.
        let mut de = rmp_serde::Deserializer::from_read_ref(self.fields());
        let exchange_name = <&str>::deserialize(&mut de).map_err(bad)?;
        let routing_key = String::deserialize(&mut de).map_err(bad)?;
        let properties = Properties::deserialize(&mut de).map_err(bad)?;
        let message = Message {
            exchange: shared_name(exchange, exchange_name),
            routing_key,
            properties: Properties::shared(Some(properties)),
            body: self.body_bytes(),
        };
        // Two readers decoding at once both succeed; the first one set is kept.
        Ok(self.decoded.get_or_init(|| Arc::new(message)))
    }
}

/// The record whose frame starts at `at` in `chunk` (frames [`encode_appended`] wrote
/// just now), as stored: a slice of `chunk`, decoded only for a consumer that needs a
/// [`Message`], as a record read back from a segment is. Nothing is checked: the bytes
/// are this process's own.
pub fn appended(chunk: &Bytes, at: usize) -> StoredMessage {
    let payload = at + frame::FRAME_HEADER;
    let meta_len = u32::from_le_bytes(
        chunk[payload + 16..payload + 20]
            .try_into()
            .expect("4 bytes"),
    ) as usize;
    debug_assert_eq!(chunk[payload + 20], STORED_META_HEAD);
    let len = u32::from_le_bytes(chunk[at..at + 4].try_into().expect("4 bytes")) as usize;
    StoredMessage {
        whole: chunk.clone(),
        fields_at: payload + 21,
        fields_len: meta_len - 1,
        end: payload + len,
        framed: true,
        decoded: OnceLock::new(),
    }
}

fn shared_name(last: &mut Option<Arc<str>>, name: &str) -> Arc<str> {
    match last {
        Some(x) if **x == *name => x.clone(),
        _ => last.insert(Arc::from(name)).clone(),
    }
}

/// Reads the record of a frame's payload that lies inside `whole` (a mapped segment;
/// `payload` the payload of one of its frames, or `whole` itself) without decoding its message, on its first read: the meta's shape is checked and
/// its properties walked marker by marker to end exactly where the meta ends, so the
/// bytes a deliver frame copies are one whole value (a record with bytes after its
/// properties, which the writer never makes, would otherwise give a client a frame it
/// must refuse).
pub fn stored(whole: &Bytes, payload: &[u8]) -> Result<(u64, i64, StoredMessage), String> {
    read_stored(whole, payload, true)
}

/// [`stored`] for a frame read before (its CRC and meta checked then): the meta's
/// shape only (`check_meta`), its values not walked (a walk cost ~4% of a replay's
/// broker CPU).
pub fn stored_reread(whole: &Bytes, payload: &[u8]) -> Result<(u64, i64, StoredMessage), String> {
    read_stored(whole, payload, false)
}

fn read_stored(
    whole: &Bytes,
    payload: &[u8],
    walk: bool,
) -> Result<(u64, i64, StoredMessage), String> {
    let (offset, timestamp) = header(payload)?;
    let meta_len = u32::from_le_bytes(payload[16..20].try_into().expect("4 bytes")) as usize;
    if meta_len > payload.len() - 20 {
        return Err(format!("meta of {meta_len} bytes runs past its record"));
    }
    let meta = &payload[20..20 + meta_len];
    let props = check_meta(meta).map_err(|e| format!("bad stream record {offset}: {e}"))?;
    if walk && crate::protocol::walk_value(&meta[props..]).0 != Some(meta.len() - props) {
        return Err(format!(
            "bad stream record {offset}: its properties do not end where its meta ends"
        ));
    }
    let at = (payload.as_ptr() as usize)
        .checked_sub(whole.as_ptr() as usize)
        .filter(|at| at + payload.len() <= whole.len())
        .expect("the payload lies in `whole`");
    Ok((
        offset,
        timestamp,
        StoredMessage {
            whole: whole.clone(),
            fields_at: at + 21,
            fields_len: meta_len - 1,
            end: at + payload.len(),
            // A frame's payload follows its length and CRC.
            framed: at >= frame::FRAME_HEADER,
            decoded: OnceLock::new(),
        },
    ))
}

/// Checks that `meta` is `[str, str, array of 13]`, each string within the meta and
/// room left for the 13 values, by their markers and lengths alone: what a deliver
/// frame may carry without the values being parsed. A full walk of the values cost ~4%
/// of a replay's broker CPU; the bytes are the writer's own under a verified CRC.
/// Answers where the properties array starts.
fn check_meta(meta: &[u8]) -> Result<usize, String> {
    if meta.first() != Some(&STORED_META_HEAD) {
        return Err("meta is not an array of three values".into());
    }
    let mut at = 1;
    for what in ["exchange", "routing key"] {
        let len = str_len(&meta[at..])
            .ok_or_else(|| format!("its {what} is not a string within its meta"))?;
        at += len;
    }
    // The properties: an array of 13, each value one byte at least.
    if meta.get(at) != Some(&0x9d) || meta.len() - at < 14 {
        return Err("its properties are not an array of 13 values within its meta".into());
    }
    Ok(at)
}

/// The length (marker included) of the MessagePack string at the start of `b`, if it is
/// one that `b` holds whole.
fn str_len(b: &[u8]) -> Option<usize> {
    let be = |n: usize| -> Option<usize> {
        Some(
            b.get(1..1 + n)?
                .iter()
                .fold(0usize, |acc, x| (acc << 8) | *x as usize),
        )
    };
    let len = match *b.first()? {
        m @ 0xa0..=0xbf => 1 + (m & 0x1f) as usize,
        0xd9 => 2 + be(1)?,
        0xda => 3 + be(2)?,
        0xdb => 5 + be(4)?,
        _ => return None,
    };
    (len <= b.len()).then_some(len)
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
    let exchange = shared_name(last_exchange, exchange);
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
    fn a_first_read_refuses_bytes_after_the_properties() {
        let mut buf = Vec::new();
        encode(&mut buf, 1, 2, &Message::new("x", "k", "body")).unwrap();
        let FrameAt::Good { payload, .. } = read_at(&buf, 0) else {
            panic!("not a good frame");
        };
        let mut p = payload.to_vec();
        let meta_len = u32::from_le_bytes(p[16..20].try_into().unwrap()) as usize;
        p.insert(20 + meta_len, 0xc0);
        p[16..20].copy_from_slice(&(meta_len as u32 + 1).to_le_bytes());
        let p = Bytes::from(p);
        let e = stored(&p, &p).unwrap_err();
        assert!(e.contains("do not end where its meta ends"), "{e}");
        // A re-read trusts what its first read checked.
        assert!(stored_reread(&p, &p).is_ok());
    }

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
        let (o, t, stored) = stored(&whole, &whole[8..]).unwrap();
        assert_eq!((o, t), (42, 1_700_000_000_000));
        assert_eq!(stored.body(), b"body");
        assert_eq!(
            stored.body().as_ptr(),
            whole[whole.len() - 4..].as_ptr(),
            "a slice, not a copy"
        );
        assert!(stored.decoded().is_none(), "not decoded until asked");
        let shared = stored.message(&mut exchange).unwrap().clone();
        assert_eq!(*shared, m);
        assert!(
            Arc::ptr_eq(&shared, stored.decoded().unwrap()),
            "decoded once"
        );
        assert_eq!(shared.body.as_ptr(), stored.body().as_ptr());
        let (_, _, again) = super::stored(&whole, &whole[8..]).unwrap();
        let again = again.message(&mut exchange).unwrap();
        assert!(
            Arc::ptr_eq(&shared.exchange, &again.exchange),
            "one exchange name for a run of records"
        );
        // The stored values are what a deliver frame carries for the message.
        let mut want = rmp_serde::to_vec(&(&*m.exchange, &m.routing_key, &*m.properties)).unwrap();
        want.remove(0);
        assert_eq!(stored.fields(), &want[..]);
    }
}

#[cfg(test)]
mod check_tests {
    use super::*;

    fn payload(meta: &[u8], body: &[u8]) -> Bytes {
        let mut p = Vec::new();
        p.extend_from_slice(&7u64.to_le_bytes());
        p.extend_from_slice(&1i64.to_le_bytes());
        p.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        p.extend_from_slice(meta);
        p.extend_from_slice(body);
        Bytes::from(p)
    }

    #[test]
    fn a_stored_record_whose_meta_is_not_two_strings_and_a_properties_array_is_refused() {
        let props = rmp_serde::to_vec(&Properties::default()).unwrap();
        let good = [&[0x93, 0xa1, b'x', 0xa0][..], &props].concat();
        let p = payload(&good, b"b");
        let (_, _, s) = stored(&p, &p).unwrap();
        assert_eq!((s.fields(), s.body()), (&good[1..], &b"b"[..]));
        let bad: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "not an array of three"),
            (
                [&[0x92, 0xa1, b'x', 0xa0][..], &props].concat(),
                "not an array of three",
            ),
            ([&[0x93, 0x01, 0xa0][..], &props].concat(), "its exchange"),
            (
                [&[0x93, 0xa1, b'x', 0xc0][..], &props].concat(),
                "its routing key",
            ),
            (vec![0x93, 0xa1, b'x', 0xa0, 0x90], "its properties"),
            (
                [&[0x93, 0xa1, b'x', 0xa0][..], &props[..props.len() - 1]].concat(),
                "its properties",
            ),
            (
                [&[0x93, 0xda, 0, 200, b'x', b'y', 0xa0][..], &props].concat(),
                "its exchange",
            ),
            (vec![0x93, 0xa5, b'x'], "its exchange"),
        ];
        // A str16 exchange is a string too.
        let long = [&[0x93, 0xda, 0, 2, b'x', b'y', 0xa0][..], &props].concat();
        let p = payload(&long, b"");
        assert_eq!(stored(&p, &p).unwrap().2.fields(), &long[1..]);
        for (meta, want) in bad {
            let p = payload(&meta, b"");
            let e = stored(&p, &p).unwrap_err();
            assert!(e.contains(want) && e.contains("record 7"), "{meta:x?}: {e}");
        }
        // A meta length past the record.
        let mut p = payload(&good, b"").to_vec();
        p[16] = 200;
        let p = Bytes::from(p);
        assert!(stored(&p, &p).unwrap_err().contains("runs past"));
    }
}
