//! Content reassembly, pure: a `basic.publish` method, then its content header, then
//! body frames until the announced size is reached, with the checks RabbitMQ makes on
//! the way (a header announcing more than `max_message_size`, a second header, a body
//! frame without a header or past the announced size). The connection actor feeds its
//! frames through here and acts on the [`Step`]; `actormq::fuzzing::amqp_content`
//! drives the same functions with arbitrary frames, so what the fuzzer proves is the
//! code the broker runs.

use super::errors::AmqpError;
use amq_protocol::protocol::basic::{self, AMQPProperties};
use bytes::{Bytes, BytesMut};

/// A complete `basic.publish`: method, properties, body.
pub(crate) struct PublishCommand {
    /// The method.
    pub publish: basic::Publish,
    /// The content header's properties.
    pub properties: AMQPProperties,
    /// The body.
    pub body: Bytes,
}

/// A `basic.publish` whose content is still arriving.
pub(crate) struct Content {
    publish: basic::Publish,
    /// Set by the content header.
    header: Option<(AMQPProperties, u64)>,
    /// Body frames so far.
    parts: Vec<Bytes>,
    /// Body bytes so far.
    got: u64,
}

impl Content {
    /// The content of `publish`, before its header.
    pub fn new(publish: basic::Publish) -> Self {
        Content {
            publish,
            header: None,
            parts: Vec::new(),
            got: 0,
        }
    }
}

/// What a content frame leads to.
pub(crate) enum Step {
    /// More frames are needed.
    Wait,
    /// The publish is complete (taken out of the channel's slot).
    Done(Box<PublishCommand>),
    /// The channel closes with this error (its content is dropped).
    Channel(AmqpError),
    /// The connection closes with this error.
    Connection(AmqpError),
}

/// A content header on channel `ch`, whose publish in progress (if any) is `slot`.
pub(crate) fn on_header(
    slot: &mut Option<Content>,
    ch: u16,
    properties: AMQPProperties,
    size: u64,
    max: u64,
) -> Step {
    match slot {
        Some(c) if c.header.is_none() => {
            if size > max {
                *slot = None;
                return Step::Channel(
                    AmqpError::new(
                        406,
                        format!("message size {size} is larger than configured max size {max}"),
                    )
                    .on((60, 40)),
                );
            }
            c.header = Some((properties, size));
            if size == 0 {
                return done(slot);
            }
            Step::Wait
        }
        _ => Step::Connection(AmqpError::new(
            505,
            format!("unexpected content header on channel {ch}"),
        )),
    }
}

/// A body frame on channel `ch`, whose publish in progress (if any) is `slot`.
pub(crate) fn on_body(slot: &mut Option<Content>, ch: u16, b: Bytes) -> Step {
    match slot {
        Some(Content {
            header: Some((_, size)),
            parts,
            got,
            ..
        }) => {
            *got += b.len() as u64;
            if *got > *size {
                return Step::Connection(AmqpError::new(
                    501,
                    format!("body frames carry more than the {size} bytes announced"),
                ));
            }
            parts.push(b);
            if *got == *size {
                return done(slot);
            }
            Step::Wait
        }
        _ => Step::Connection(AmqpError::new(
            505,
            format!("unexpected content body on channel {ch}"),
        )),
    }
}

/// Takes the complete publish out of `slot`, its body frames joined (copied only when
/// there are several).
fn done(slot: &mut Option<Content>) -> Step {
    let Some(Content {
        publish,
        header: Some((properties, size)),
        mut parts,
        ..
    }) = slot.take()
    else {
        return Step::Wait;
    };
    let body = if parts.len() == 1 {
        parts.pop().expect("one part")
    } else {
        let mut b = BytesMut::with_capacity(size as usize);
        for p in &parts {
            b.extend_from_slice(p);
        }
        b.freeze()
    };
    Step::Done(Box::new(PublishCommand {
        publish,
        properties,
        body,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> Option<Content> {
        Some(Content::new(basic::Publish::default()))
    }

    #[test]
    fn body_frames_are_joined_up_to_the_announced_size() {
        let mut s = slot();
        assert!(matches!(
            on_header(&mut s, 1, AMQPProperties::default(), 5, 10),
            Step::Wait
        ));
        assert!(matches!(
            on_body(&mut s, 1, Bytes::from_static(b"ab")),
            Step::Wait
        ));
        let Step::Done(cmd) = on_body(&mut s, 1, Bytes::from_static(b"cde")) else {
            panic!("complete");
        };
        assert_eq!(&cmd.body[..], b"abcde");
        assert!(s.is_none());
    }

    #[test]
    fn an_empty_body_is_complete_at_its_header() {
        let mut s = slot();
        let step = on_header(&mut s, 1, AMQPProperties::default(), 0, 10);
        assert!(matches!(step, Step::Done(c) if c.body.is_empty()));
    }

    #[test]
    fn breaches_close_the_channel_or_the_connection() {
        let mut s = slot();
        let Step::Channel(e) = on_header(&mut s, 1, AMQPProperties::default(), 11, 10) else {
            panic!("too large closes the channel");
        };
        assert_eq!(e.code, 406);
        assert!(s.is_none());
        let Step::Connection(e) = on_body(&mut s, 1, Bytes::from_static(b"x")) else {
            panic!("a body without a publish");
        };
        assert_eq!(e.code, 505);
        let mut s = slot();
        on_header(&mut s, 1, AMQPProperties::default(), 1, 10);
        let Step::Connection(e) = on_header(&mut s, 1, AMQPProperties::default(), 1, 10) else {
            panic!("a second header");
        };
        assert_eq!(e.code, 505);
        let Step::Connection(e) = on_body(&mut s, 1, Bytes::from_static(b"xy")) else {
            panic!("more than announced");
        };
        assert_eq!(e.code, 501);
    }
}
