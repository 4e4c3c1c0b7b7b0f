//! The reader task: splits the socket's byte stream into frames and dispatches each one
//! (replies to their requests, confirms to their publishes, deliveries to their
//! consumers) under one lock per socket read.
//!
//! Bodies are never copied: a delivery's body is a slice of the read buffer
//! ([`body_bytes`]).

use super::connection::{
    ConsumerEvent, ConsumerSlot, OnReply, PendingRequest, Shared, State, MAX_ASYNC_ERRORS,
};
use super::consumer::{Delivery, GetOk};
use super::error::ClientError;
use super::ops::QueueInfo;
use super::publish::Returned;
use super::readbuf::ReadPlan;
use crate::protocol::PropertiesRef;
use crate::protocol::{
    body_bytes, decode_server, frame::take_frame, ClientFrame, ReplyBody, ServerFrame,
};
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
/// The reading half of the socket.
type OwnedReadHalf =
    crate::server::stream::ReadHalf<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A reply, owned (the wire's borrows the read buffer).
#[derive(Debug)]
pub(crate) enum Reply {
    /// Done.
    Ok,
    /// A queue was declared.
    QueueDeclared(QueueInfo),
    /// Messages removed.
    MessageCount(u64),
    /// A consumer started with this tag.
    ConsumeOk(String),
    /// A get found a message (boxed: rare, and much larger than the others).
    GetOk(Box<GetOk>),
    /// A get found the queue empty.
    GetEmpty,
}

/// Frames from the broker may exceed its own maximum by the delivery's envelope.
const FRAME_SLACK: usize = 64 * 1024;

/// Reads until the socket closes or fails, then fails the connection with the reason.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut rd: OwnedReadHalf,
    mut buf: BytesMut,
    heartbeat: Duration,
) {
    let max = shared.max_frame.saturating_add(FRAME_SLACK);
    let mut plan = ReadPlan::default();
    let error = loop {
        if let Err(e) = drain(&shared, &mut buf, max) {
            break e;
        }
        let limit = plan.next(&mut buf);
        let mut window = (&mut buf).limit(limit);
        let read = if heartbeat.is_zero() {
            rd.read_buf(&mut window).await
        } else {
            // Two silent intervals: the broker (or the network) is gone.
            match tokio::time::timeout(heartbeat * 2, rd.read_buf(&mut window)).await {
                Ok(r) => r,
                Err(_) => {
                    break ClientError::HeartbeatTimeout {
                        secs: heartbeat.as_secs() * 2,
                    }
                }
            }
        };
        match read {
            Ok(0) if shared.lock().shutdown => break ClientError::Closed,
            Ok(0) => {
                break ClientError::io(
                    "reading from the broker",
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the broker closed the connection",
                    ),
                )
            }
            Ok(_) => {}
            Err(e) => break ClientError::io("reading from the broker", e),
        }
    };
    shared.fail(error);
}

/// Handles every complete frame in `buf`, under one lock.
fn drain(shared: &Arc<Shared>, buf: &mut BytesMut, max: usize) -> Result<(), ClientError> {
    let mut guard = None;
    let mut wrote = false;
    let result = loop {
        let frame = match take_frame(buf, max) {
            Ok(Some(f)) => f,
            Ok(None) => break Ok(()),
            Err(e) => break Err(ClientError::Protocol(e.to_string())),
        };
        let st = guard.get_or_insert_with(|| shared.lock());
        if let Err(e) = handle(shared, st, &frame, &mut wrote) {
            break Err(e);
        }
    };
    drop(guard);
    if wrote {
        shared.wake_writer();
    }
    result
}

/// Handles one frame. An error ends the connection.
fn handle(
    shared: &Arc<Shared>,
    st: &mut State,
    frame: &Bytes,
    wrote: &mut bool,
) -> Result<(), ClientError> {
    let decoded = decode_server(frame).map_err(|e| ClientError::Protocol(e.to_string()))?;
    match decoded {
        ServerFrame::Reply { id, body } => {
            let Some(PendingRequest { tx, on_reply }) = st.pending.remove(&id) else {
                return Err(ClientError::Protocol(format!(
                    "a reply to request {id}, which is not outstanding"
                )));
            };
            let reply = match (body, on_reply) {
                (ReplyBody::Ok, OnReply::Close) => {
                    st.shutdown = true;
                    *wrote = true;
                    Reply::Ok
                }
                (ReplyBody::Ok, OnReply::RemoveConsumer(tag)) => {
                    st.consumers.remove(&tag);
                    Reply::Ok
                }
                (ReplyBody::Ok, _) => Reply::Ok,
                (
                    ReplyBody::QueueDeclared {
                        name,
                        messages,
                        consumers,
                    },
                    _,
                ) => Reply::QueueDeclared(QueueInfo {
                    name,
                    messages,
                    consumers,
                }),
                (ReplyBody::MessageCount { messages }, _) => Reply::MessageCount(messages),
                (ReplyBody::ConsumeOk { consumer_tag }, on_reply) => {
                    if let OnReply::RegisterConsumer { tx, no_ack } = on_reply {
                        let slot = ConsumerSlot {
                            tag: Arc::from(consumer_tag.as_str()),
                            tx,
                            no_ack,
                        };
                        st.consumers.insert(consumer_tag.clone(), slot);
                    }
                    Reply::ConsumeOk(consumer_tag)
                }
                (
                    ReplyBody::GetOk {
                        delivery,
                        message_count,
                    },
                    on_reply,
                ) => {
                    let no_ack = matches!(on_reply, OnReply::Get { no_ack: true });
                    let acker = (!no_ack).then(|| shared.clone());
                    let delivery = Delivery::from_frame(frame, delivery, Arc::from(""), acker);
                    Reply::GetOk(Box::new(GetOk {
                        delivery,
                        message_count,
                    }))
                }
                (ReplyBody::GetEmpty, _) => Reply::GetEmpty,
            };
            let _ = tx.send(Ok(reply));
        }
        ServerFrame::Error {
            id,
            code,
            message,
            fatal,
        } => {
            let error = ClientError::server(code, message);
            if let Some(p) = id.and_then(|id| st.pending.remove(&id)) {
                let _ = p.tx.send(Err(error.clone()));
            } else if !fatal {
                tracing::warn!(%error, "the broker reported an error");
                if st.async_errors.len() == MAX_ASYNC_ERRORS {
                    st.async_errors.pop_front();
                }
                st.async_errors.push_back(error.clone());
            }
            if fatal {
                return Err(error);
            }
        }
        ServerFrame::Deliver(d) => {
            let delivery_tag = d.delivery_tag;
            let Some(slot) = st.consumers.get(d.consumer_tag.as_ref()) else {
                tracing::warn!(
                    consumer_tag = %d.consumer_tag,
                    delivery_tag,
                    "a delivery for an unknown consumer"
                );
                return Ok(());
            };
            let no_ack = slot.no_ack;
            let acker = (!no_ack).then(|| shared.clone());
            let delivery = Delivery::from_frame(frame, d, slot.tag.clone(), acker);
            let gone = slot.tx.send(ConsumerEvent::Delivery(delivery)).is_err();
            if gone && !no_ack {
                // The consumer's stream was dropped: put the message back for others.
                let reject = ClientFrame::Reject {
                    tag: delivery_tag,
                    requeue: true,
                };
                st.encode(&reject, usize::MAX)?;
                *wrote = true;
            }
        }
        ServerFrame::Confirm { seq, multiple } => {
            let n = st.confirms.confirm(seq, multiple);
            shared.window.add_permits(n);
        }
        ServerFrame::Nack { seq, code, message } => {
            let n = st.confirms.nack(seq, ClientError::server(code, message));
            shared.window.add_permits(n);
        }
        ServerFrame::Return {
            seq,
            code,
            reason,
            exchange,
            routing_key,
            properties,
            body,
        } => {
            let returned = Returned {
                code,
                reason,
                exchange: exchange.into_owned(),
                routing_key: routing_key.into_owned(),
                properties: properties
                    .map(PropertiesRef::into_owned)
                    .unwrap_or_default(),
                body: body_bytes(frame, body),
            };
            if seq == 0 || !st.confirms.returned(seq, returned) {
                tracing::debug!(seq, "a returned message with no outstanding confirm");
            }
        }
        ServerFrame::Blocked { reason } => {
            shared.blocked.send_replace(Some(reason));
        }
        ServerFrame::Unblocked => {
            shared.blocked.send_replace(None);
        }
        ServerFrame::ConsumerCancelled {
            consumer_tag,
            reason,
        } => {
            if let Some(slot) = st.consumers.remove(&consumer_tag) {
                let _ = slot.tx.send(ConsumerEvent::Cancelled(reason));
            }
        }
        ServerFrame::Heartbeat => {}
        other @ ServerFrame::Welcome { .. } => {
            return Err(ClientError::unexpected("no second Welcome", other))
        }
    }
    Ok(())
}
