//! The payload of a log frame: `[kind u8][meta_len u32 LE][meta][body]`.
//!
//! `meta` is a MessagePack array (rmp-serde, positional: compact, and the segment
//! header's magic carries the format version). A publish's body follows the meta as raw
//! bytes, copied once into the write buffer and never run through serde. A pure codec:
//! no I/O.

use crate::message::{Message, Properties};
use crate::storage::error::StorageError;
use crate::storage::record::{QueueId, Record};
use bytes::Bytes;
use std::sync::Arc;

const KIND_PUBLISH: u8 = 1;
const KIND_ACK: u8 = 2;
const KIND_DELIVERED: u8 = 3;
const KIND_PURGE: u8 = 4;
const KIND_DELETE: u8 = 5;
const KIND_MARK: u8 = 6;
/// Added after the first version: older logs simply have none.
const KIND_DELIVERY_COUNTS: u8 = 7;

/// One decoded payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A record appended by a queue.
    Record(Record),
    /// A queue's next id and delivered watermark, written at the start of each new
    /// segment so that reclaiming older segments never loses them.
    Mark {
        /// The queue.
        queue: QueueId,
        /// Above every id seen for the queue.
        next_id: u64,
        /// The delivered watermark.
        delivered: u64,
    },
}

fn put_meta<T: serde::Serialize>(
    buf: &mut Vec<u8>,
    kind: u8,
    meta: &T,
) -> Result<(), StorageError> {
    buf.push(kind);
    let len_at = buf.len();
    buf.extend_from_slice(&[0u8; 4]);
    rmp_serde::encode::write(buf, meta).map_err(|e| StorageError::Encode(e.to_string()))?;
    let meta_len = (buf.len() - len_at - 4) as u32;
    buf[len_at..len_at + 4].copy_from_slice(&meta_len.to_le_bytes());
    Ok(())
}

/// Appends the payload of `record` to `buf`.
pub fn encode_record(buf: &mut Vec<u8>, record: &Record) -> Result<(), StorageError> {
    match record {
        Record::Publish { queue, id, message } => {
            let meta = (
                &*queue.vhost,
                &*queue.name,
                id,
                &*message.exchange,
                &message.routing_key,
                &*message.properties,
            );
            put_meta(buf, KIND_PUBLISH, &meta)?;
            buf.extend_from_slice(&message.body);
            Ok(())
        }
        Record::Ack { queue, ids } => put_meta(buf, KIND_ACK, &(&*queue.vhost, &*queue.name, ids)),
        Record::Delivered { queue, up_to } => {
            put_meta(buf, KIND_DELIVERED, &(&*queue.vhost, &*queue.name, up_to))
        }
        Record::DeliveryCounts { queue, counts } => put_meta(
            buf,
            KIND_DELIVERY_COUNTS,
            &(&*queue.vhost, &*queue.name, counts),
        ),
        Record::Purge {
            queue,
            below,
            except,
        } => put_meta(
            buf,
            KIND_PURGE,
            &(&*queue.vhost, &*queue.name, below, except),
        ),
        Record::DeleteQueue { queue } => put_meta(buf, KIND_DELETE, &(&*queue.vhost, &*queue.name)),
    }
}

/// Appends the payload of a mark to `buf`.
pub fn encode_mark(
    buf: &mut Vec<u8>,
    queue: &QueueId,
    next_id: u64,
    delivered: u64,
) -> Result<(), StorageError> {
    put_meta(
        buf,
        KIND_MARK,
        &(&*queue.vhost, &*queue.name, next_id, delivered),
    )
}

fn meta<'a, T: serde::Deserialize<'a>>(meta: &'a [u8], what: &str) -> Result<T, String> {
    rmp_serde::from_slice(meta).map_err(|e| format!("bad {what} record: {e}"))
}

/// Decodes a payload.
pub fn decode(payload: &[u8]) -> Result<Entry, String> {
    if payload.len() < 5 {
        return Err(format!("payload of {} bytes is too short", payload.len()));
    }
    let kind = payload[0];
    let meta_len = u32::from_le_bytes(payload[1..5].try_into().expect("4 bytes")) as usize;
    if meta_len > payload.len() - 5 {
        return Err(format!(
            "meta of {meta_len} bytes runs past a payload of {}",
            payload.len()
        ));
    }
    let m = &payload[5..5 + meta_len];
    let rest = &payload[5 + meta_len..];
    let q = |vhost: &str, name: &str| QueueId::new(vhost, name);
    let record = match kind {
        KIND_PUBLISH => {
            let (vhost, name, id, exchange, routing_key, properties): (
                &str,
                &str,
                u64,
                &str,
                String,
                Properties,
            ) = meta(m, "publish")?;
            Record::Publish {
                queue: q(vhost, name),
                id,
                message: Arc::new(Message {
                    exchange: Arc::from(exchange),
                    routing_key,
                    properties: Properties::shared(Some(properties)),
                    body: Bytes::copy_from_slice(rest),
                }),
            }
        }
        KIND_ACK => {
            let (vhost, name, ids): (&str, &str, Vec<u64>) = meta(m, "ack")?;
            Record::Ack {
                queue: q(vhost, name),
                ids,
            }
        }
        KIND_DELIVERED => {
            let (vhost, name, up_to): (&str, &str, u64) = meta(m, "delivered")?;
            Record::Delivered {
                queue: q(vhost, name),
                up_to,
            }
        }
        KIND_DELIVERY_COUNTS => {
            let (vhost, name, counts): (&str, &str, Vec<(u64, u32)>) = meta(m, "delivery counts")?;
            Record::DeliveryCounts {
                queue: q(vhost, name),
                counts,
            }
        }
        KIND_PURGE => {
            let (vhost, name, below, except): (&str, &str, u64, Vec<u64>) = meta(m, "purge")?;
            Record::Purge {
                queue: q(vhost, name),
                below,
                except,
            }
        }
        KIND_DELETE => {
            let (vhost, name): (&str, &str) = meta(m, "delete")?;
            Record::DeleteQueue {
                queue: q(vhost, name),
            }
        }
        KIND_MARK => {
            let (vhost, name, next_id, delivered): (&str, &str, u64, u64) = meta(m, "mark")?;
            return Ok(Entry::Mark {
                queue: q(vhost, name),
                next_id,
                delivered,
            });
        }
        other => return Err(format!("unknown record kind {other}")),
    };
    Ok(Entry::Record(record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::FieldValue;

    fn queue() -> QueueId {
        QueueId::new("/", "orders")
    }

    fn round_trip(record: Record) {
        let mut buf = Vec::new();
        encode_record(&mut buf, &record).unwrap();
        assert_eq!(decode(&buf).unwrap(), Entry::Record(record));
    }

    fn publish(body: &'static [u8]) -> Record {
        let props = Properties {
            delivery_mode: Some(2),
            kind: Some("order".into()),
            ..Default::default()
        };
        let m = Message::new("ex", "order.created", body)
            .with_properties(props)
            .with_header("n", FieldValue::Int(3));
        Record::Publish {
            queue: queue(),
            id: 42,
            message: Arc::new(m),
        }
    }

    #[test]
    fn every_record_kind_round_trips() {
        round_trip(publish(b"hello"));
        round_trip(publish(b""));
        round_trip(Record::Ack {
            queue: queue(),
            ids: vec![1, 5, 9],
        });
        round_trip(Record::Delivered {
            queue: queue(),
            up_to: 7,
        });
        round_trip(Record::DeliveryCounts {
            queue: queue(),
            counts: vec![(3, 2), (9, 70_000)],
        });
        round_trip(Record::Purge {
            queue: queue(),
            below: 10,
            except: vec![3],
        });
        round_trip(Record::DeleteQueue { queue: queue() });
        let mut buf = Vec::new();
        encode_mark(&mut buf, &queue(), 11, 4).unwrap();
        assert_eq!(
            decode(&buf).unwrap(),
            Entry::Mark {
                queue: queue(),
                next_id: 11,
                delivered: 4
            }
        );
    }

    #[test]
    fn the_body_is_stored_as_raw_bytes_at_the_end() {
        let mut buf = Vec::new();
        encode_record(&mut buf, &publish(b"\x01\x02BODY")).unwrap();
        assert!(buf.ends_with(b"\x01\x02BODY"));
        assert_eq!(buf[0], KIND_PUBLISH);
    }

    #[test]
    fn a_truncated_payload_is_an_error_not_a_panic() {
        let mut buf = Vec::new();
        encode_record(
            &mut buf,
            &Record::Ack {
                queue: queue(),
                ids: vec![1, 2],
            },
        )
        .unwrap();
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode(&[9, 0, 0, 0, 0]).is_err());
    }
}
