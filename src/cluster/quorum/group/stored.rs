//! The message as a queue group's log and machine hold it ([`StoredMessage`]).

use super::super::machine::Weighed;
use crate::message::{Message, Properties};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A message as a queue group's log carries it: the broker's [`Message`] itself,
/// shared. The publish, its log entry (kept in memory for replication), the machine's
/// copy, a snapshot and the delivery all hold the same one, so a replication read, a
/// snapshot's clone of the queue or a checkout costs a reference count, not a copy of
/// the exchange, routing key and properties (each an allocation, once per message and
/// per hop before).
///
/// Encoded as it always was (exchange, routing key, properties, body: the log and the
/// cluster's frames read either form), through [`StoredForm`] / [`StoredFormRef`].
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage(Arc<Message>);

/// The encoded form of a [`StoredMessage`], as read back.
#[derive(Deserialize)]
#[serde(rename = "StoredMessage")]
struct StoredForm {
    exchange: String,
    routing_key: String,
    properties: Properties,
    body: Bytes,
}

/// The encoded form of a [`StoredMessage`], written from the shared message.
#[derive(Serialize)]
#[serde(rename = "StoredMessage")]
struct StoredFormRef<'a> {
    exchange: &'a str,
    routing_key: &'a str,
    properties: &'a Properties,
    body: &'a Bytes,
}

impl Serialize for StoredMessage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = &*self.0;
        StoredFormRef {
            exchange: &m.exchange,
            routing_key: &m.routing_key,
            properties: &m.properties,
            body: &m.body,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for StoredMessage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f = StoredForm::deserialize(d)?;
        // Most messages carry no properties: they share the one empty set, as a
        // published one does.
        let properties = if f.properties == Properties::default() {
            Properties::shared_empty()
        } else {
            Arc::new(f.properties)
        };
        Ok(StoredMessage(Arc::new(Message {
            exchange: Arc::from(f.exchange),
            routing_key: f.routing_key,
            properties,
            body: f.body,
        })))
    }
}

impl From<&Message> for StoredMessage {
    /// The message's parts are shared (reference counts), not copied.
    fn from(m: &Message) -> Self {
        StoredMessage(Arc::new(m.clone()))
    }
}

impl From<Arc<Message>> for StoredMessage {
    fn from(m: Arc<Message>) -> Self {
        StoredMessage(m)
    }
}

impl std::ops::Deref for StoredMessage {
    type Target = Message;

    fn deref(&self) -> &Message {
        &self.0
    }
}

impl StoredMessage {
    /// The broker's form, to deliver: the message itself, shared.
    pub fn shared(&self) -> Arc<Message> {
        self.0.clone()
    }

    /// The broker's form, owned (its parts shared).
    pub fn to_message(&self) -> Message {
        (*self.0).clone()
    }
}

impl Weighed for StoredMessage {
    fn body_len(&self) -> usize {
        self.body.len()
    }

    /// As [`Message::accounted_size`] counts a classic queue's message (the body, the
    /// properties and decoded headers), plus the shared message's own allocation, its
    /// strings and its slot in the machine's B-tree: an estimate on the high side, as
    /// the gauge's model is.
    fn accounted_len(&self) -> usize {
        use crate::message::size::{heap, properties_size};
        /// The message's slot in a B-tree leaf (with the tree's slack) beside its id,
        /// and the shared message it points to (with its reference counts).
        const SLOT: usize = (std::mem::size_of::<StoredMessage>() + 16) * 11 / 5
            + std::mem::size_of::<Message>()
            + 16;
        let m = &*self.0;
        let properties = if Properties::is_shared_empty(&m.properties) {
            0
        } else {
            properties_size(&m.properties)
        };
        SLOT + heap(m.exchange.len()) + heap(m.routing_key.len()) + properties + m.body.len()
    }

    /// The `expiration` property, as a classic queue reads it.
    fn ttl_ms(&self) -> Option<u64> {
        self.properties.expiration.as_deref()?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::FieldValue;

    /// The form written before the message was shared: an owned struct, derived.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Before {
        exchange: String,
        routing_key: String,
        properties: Properties,
        body: Bytes,
    }

    fn samples() -> Vec<Message> {
        vec![
            Message::new("", "q", "plain"),
            Message::new("orders", "order.created", vec![7u8; 1024])
                .persistent()
                .with_header("tenant", "acme")
                .with_header("n", FieldValue::Int(-3)),
        ]
    }

    #[test]
    fn the_encoding_is_the_one_logs_already_hold() {
        for m in samples() {
            let before = Before {
                exchange: m.exchange.to_string(),
                routing_key: m.routing_key.clone(),
                properties: (*m.properties).clone(),
                body: m.body.clone(),
            };
            let old = rmp_serde::to_vec(&before).unwrap();
            let shared = StoredMessage::from(&m);
            // Written the same...
            assert_eq!(rmp_serde::to_vec(&shared).unwrap(), old);
            // ...and an old record reads back as the message.
            let read: StoredMessage = rmp_serde::from_slice(&old).unwrap();
            assert_eq!(read, shared);
            assert_eq!(*read.shared(), m);
            // Named fields too (the cluster's frames use the compact form, but a
            // self-describing one must not change either).
            let named = rmp_serde::to_vec_named(&before).unwrap();
            assert_eq!(rmp_serde::to_vec_named(&shared).unwrap(), named);
        }
    }

    #[test]
    fn a_message_without_properties_reads_back_sharing_the_empty_set() {
        let m = Message::new("", "q", "x");
        let read: StoredMessage =
            rmp_serde::from_slice(&rmp_serde::to_vec(&StoredMessage::from(&m)).unwrap()).unwrap();
        assert!(Properties::is_shared_empty(&read.properties));
    }

    #[test]
    fn a_stored_message_shares_the_published_one() {
        let m = Arc::new(Message::new("x", "k", vec![1u8; 64]));
        let s = StoredMessage::from(m.clone());
        assert!(Arc::ptr_eq(&s.shared(), &m));
        assert!(Arc::ptr_eq(&s.clone().shared(), &m));
    }
}
