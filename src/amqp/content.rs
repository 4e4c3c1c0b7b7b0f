//! Content reassembly: a `basic.publish`, its content header and its body frames made
//! into one [`PublishCommand`], with the limits RabbitMQ applies (the size a header may
//! announce, bodies that carry more than announced, frames out of order). Pure: the
//! connection actor decides what an error closes (see `dispatch`).
//!
//! A large body that came in one frame is kept as that frame's slice of the read
//! buffer (no copy); a small one is copied out of it, so that it does not hold the
//! whole buffer while it waits in a queue (`protocol::wire::kept_body`); several
//! frames are joined.

use super::errors::AmqpError;
use amq_protocol::protocol::basic::{self, AMQPProperties};
use bytes::{Bytes, BytesMut};

/// A complete `basic.publish`: method, properties, body.
pub(crate) struct PublishCommand {
    /// The method.
    pub publish: basic::Publish,
    /// The content header's properties; None when none is set.
    pub properties: Option<Box<AMQPProperties>>,
    /// The body.
    pub body: Bytes,
}

impl PublishCommand {
    /// The `reply_to` property, if set.
    pub fn reply_to(&self) -> Option<&str> {
        self.properties
            .as_deref()
            .and_then(|p| p.reply_to().as_ref())
            .map(|r| r.as_str())
    }

    /// The `user_id` property, if set.
    pub fn user_id(&self) -> Option<&str> {
        self.properties
            .as_deref()
            .and_then(|p| p.user_id().as_ref())
            .map(|r| r.as_str())
    }
}

/// A `basic.publish` whose content is still arriving.
pub(crate) struct Content {
    publish: basic::Publish,
    /// Set by the content header: properties, announced body size.
    header: Option<(Option<Box<AMQPProperties>>, u64)>,
    /// The first body frame.
    first: Option<Bytes>,
    /// Later body frames (a body over `frame_max`).
    rest: Vec<Bytes>,
    /// Body bytes so far.
    got: u64,
}

impl Content {
    /// The content of `publish`, before its header.
    pub fn new(publish: basic::Publish) -> Self {
        Content {
            publish,
            header: None,
            first: None,
            rest: Vec::new(),
            got: 0,
        }
    }

    fn finish(self) -> PublishCommand {
        let (properties, size) = self.header.expect("finished after the header");
        let body = match (self.first, self.rest.is_empty()) {
            (None, _) => Bytes::new(),
            // A body of one frame is that frame's slice of the read buffer: a small
            // one is copied, so a kept message does not hold the whole buffer.
            (Some(b), true) if b.len() < crate::protocol::wire::SHARED_BODY_MIN => {
                Bytes::copy_from_slice(&b)
            }
            (Some(b), true) => b,
            (Some(first), false) => {
                let mut b = BytesMut::with_capacity(size as usize);
                b.extend_from_slice(&first);
                for p in &self.rest {
                    b.extend_from_slice(p);
                }
                b.freeze()
            }
        };
        PublishCommand {
            publish: self.publish,
            properties,
            body,
        }
    }
}

/// True when `slot` holds a publish whose content header has not come yet.
pub(crate) fn awaits_header(slot: &Option<Content>) -> bool {
    matches!(slot, Some(c) if c.header.is_none())
}

/// A content header for the publish in `slot` (channel `ch`): the command when the
/// body is empty. `max` is the largest body accepted. The slot is emptied on error.
pub(crate) fn on_header(
    slot: &mut Option<Content>,
    ch: u16,
    size: u64,
    properties: Option<Box<AMQPProperties>>,
    max: u64,
) -> Result<Option<PublishCommand>, AmqpError> {
    match slot {
        Some(c) if c.header.is_none() => {
            if size > max {
                *slot = None;
                return Err(AmqpError::new(
                    406,
                    format!("message size {size} is larger than configured max size {max} (amqp.max_message_size)"),
                )
                .on((60, 40)));
            }
            c.header = Some((properties, size));
            if size == 0 {
                return Ok(slot.take().map(Content::finish));
            }
            Ok(None)
        }
        _ => {
            *slot = None;
            Err(AmqpError::new(
                505,
                format!("unexpected content header on channel {ch}"),
            ))
        }
    }
}

/// A body frame for the publish in `slot` (channel `ch`): the command once complete.
/// The slot is emptied on error.
pub(crate) fn on_body(
    slot: &mut Option<Content>,
    ch: u16,
    b: Bytes,
) -> Result<Option<PublishCommand>, AmqpError> {
    let Some(
        c @ Content {
            header: Some(_), ..
        },
    ) = slot
    else {
        *slot = None;
        return Err(AmqpError::new(
            505,
            format!("unexpected content body on channel {ch}"),
        ));
    };
    let size = c.header.as_ref().map_or(0, |(_, s)| *s);
    c.got += b.len() as u64;
    if c.got > size {
        *slot = None;
        return Err(AmqpError::new(
            501,
            format!("body frames carry more than the {size} bytes announced"),
        ));
    }
    if c.first.is_none() {
        c.first = Some(b);
    } else {
        c.rest.push(b);
    }
    if c.got == size {
        return Ok(slot.take().map(Content::finish));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish() -> basic::Publish {
        basic::Publish {
            exchange: "x".into(),
            routing_key: "k".into(),
            ..Default::default()
        }
    }

    #[test]
    fn one_large_body_frame_is_kept_as_it_came_a_small_one_copied_and_several_joined() {
        use crate::protocol::wire::SHARED_BODY_MIN;
        let buffer = Bytes::from(vec![7u8; 4 * SHARED_BODY_MIN]);
        let size = SHARED_BODY_MIN as u64;
        let mut slot = Some(Content::new(publish()));
        assert!(on_header(&mut slot, 1, size, None, u64::MAX)
            .unwrap()
            .is_none());
        let frame = buffer.slice(..SHARED_BODY_MIN);
        let cmd = on_body(&mut slot, 1, frame.clone()).unwrap().unwrap();
        assert_eq!(cmd.body.as_ptr(), frame.as_ptr(), "no copy");
        assert!(slot.is_none());

        // A small body would hold the whole read buffer: it is copied out of it.
        let mut slot = Some(Content::new(publish()));
        on_header(&mut slot, 1, 5, None, 100).unwrap();
        let cmd = on_body(&mut slot, 1, buffer.slice(..5)).unwrap().unwrap();
        assert_eq!(&cmd.body[..], &[7; 5]);
        assert!(cmd.body.is_unique(), "its own allocation");

        let mut slot = Some(Content::new(publish()));
        on_header(&mut slot, 1, 5, None, 100).unwrap();
        assert!(on_body(&mut slot, 1, Bytes::from_static(b"he"))
            .unwrap()
            .is_none());
        let cmd = on_body(&mut slot, 1, Bytes::from_static(b"llo"))
            .unwrap()
            .unwrap();
        assert_eq!(&cmd.body[..], b"hello");
        assert_eq!(cmd.publish.routing_key.as_str(), "k");
    }

    #[test]
    fn an_empty_body_is_complete_at_the_header() {
        let mut slot = Some(Content::new(publish()));
        let props = AMQPProperties::default().with_user_id("guest".into());
        let cmd = on_header(&mut slot, 1, 0, Some(Box::new(props)), 100)
            .unwrap()
            .unwrap();
        assert!(cmd.body.is_empty());
        assert_eq!(cmd.user_id(), Some("guest"));
        assert_eq!(cmd.reply_to(), None);
    }

    #[test]
    fn limits_and_order_are_errors_with_rabbitmqs_codes() {
        let mut slot = Some(Content::new(publish()));
        let e = on_header(&mut slot, 1, 101, None, 100).err().unwrap();
        assert_eq!((e.code, e.method), (406, (60, 40)));
        assert!(slot.is_none());

        let mut slot = Some(Content::new(publish()));
        on_header(&mut slot, 1, 2, None, 100).unwrap();
        let e = on_body(&mut slot, 1, Bytes::from_static(b"abc"))
            .err()
            .unwrap();
        assert_eq!(e.code, 501);

        let mut slot = Some(Content::new(publish()));
        let e = on_body(&mut slot, 3, Bytes::from_static(b"a"))
            .err()
            .unwrap();
        assert_eq!(e.code, 505);
        assert!(e.text.contains("channel 3"), "{}", e.text);
        let mut none = None;
        assert_eq!(
            on_header(&mut none, 3, 1, None, 100).err().unwrap().code,
            505
        );
    }
}
