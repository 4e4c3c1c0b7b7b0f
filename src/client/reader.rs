//! The reader task: splits the socket's byte stream into frames and dispatches each one
//! (replies to their requests, confirms to their publishes, deliveries to their
//! consumers) under one lock per socket read.
//!
//! Bodies are never copied: a delivery's body is a slice of the read buffer
//! ([`body_bytes`]). Deliver frames, nearly every frame a consumer's connection reads,
//! are decoded by hand ([`decode_deliver`]), and the deliveries of one read that go to
//! the same consumer one after another reach its stream as one event (one channel
//! send and one wake-up per read, not per delivery).

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
    body_bytes, decode_deliver, decode_deliver_run, decode_server, frame::take_frame, split_run,
    ClientFrame, DeliverParts, DeliverRunFrame, Op, ReplyBody, ServerFrame, LENGTH_PREFIX,
};
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
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

/// Deliveries for one consumer from consecutive deliver frames of one read, sent to its
/// stream as one event when a frame for another consumer or any other frame comes, and
/// at the end of the read (so a consumer's events keep the wire's order).
struct Batch {
    /// The consumer's tag, to tell whether the next delivery is its too.
    tag: Arc<str>,
    /// Its stream's channel.
    tx: mpsc::UnboundedSender<ConsumerEvent>,
    /// Its deliveries need no settling (and must not be rejected if it is gone).
    no_ack: bool,
    /// The deliveries, in wire order.
    deliveries: Vec<Delivery>,
}

/// Most deliveries one batch is sized for up front (it grows past it if need be).
/// Small: consumers sharing a connection whose deliveries alternate start a batch per
/// delivery, and each would reserve room for the whole read's frames.
const BATCH_CAPACITY: usize = 64;

/// Handles every complete frame in `buf`, under one lock.
fn drain(shared: &Arc<Shared>, buf: &mut BytesMut, max: usize) -> Result<(), ClientError> {
    let mut guard = None;
    let mut wrote = false;
    let mut batch = None;
    let result = loop {
        let frame = match take_frame(buf, max) {
            Ok(Some(f)) => f,
            Ok(None) => break Ok(()),
            Err(e) => break Err(ClientError::Protocol(e.to_string())),
        };
        let st = guard.get_or_insert_with(|| shared.lock());
        let handled = match decode_deliver(&frame) {
            Some(d) => deliver(shared, st, &frame, d, &mut batch, buf.len(), &mut wrote),
            None => match decode_deliver_run(&frame) {
                Some(r) => deliver_run(shared, st, &frame, r, &mut batch, &mut wrote),
                None => flush(st, &mut batch, &mut wrote)
                    .and_then(|()| handle(shared, st, &frame, &mut wrote)),
            },
        };
        if let Err(e) = handled {
            break Err(e);
        }
    };
    // What was gathered before an error still goes out, ahead of the failure event.
    let result = match (guard.as_mut(), result) {
        (Some(st), Ok(())) => flush(st, &mut batch, &mut wrote),
        (Some(st), Err(e)) => flush(st, &mut batch, &mut wrote).and(Err(e)),
        (None, result) => result,
    };
    drop(guard);
    if wrote {
        shared.wake_writer();
    }
    result
}

/// Adds a delivery decoded by hand to the batch, sending the batch first when it is
/// another consumer's. `left` is what the read buffer holds after this frame, from
/// which a new batch guesses how many more deliveries this read brings.
fn deliver(
    shared: &Arc<Shared>,
    st: &mut State,
    frame: &Bytes,
    d: DeliverParts<'_>,
    batch: &mut Option<Batch>,
    left: usize,
    wrote: &mut bool,
) -> Result<(), ClientError> {
    if batch.as_ref().is_some_and(|b| *b.tag != *d.consumer_tag) {
        flush(st, batch, wrote)?;
    }
    if batch.is_none() {
        let Some(slot) = st.consumers.get(d.consumer_tag) else {
            tracing::warn!(
                consumer_tag = %d.consumer_tag,
                delivery_tag = d.delivery_tag,
                "a delivery for an unknown consumer"
            );
            return Ok(());
        };
        let guess = 1 + left / (frame.len() + LENGTH_PREFIX);
        *batch = Some(Batch {
            tag: slot.tag.clone(),
            tx: slot.tx.clone(),
            no_ack: slot.no_ack,
            deliveries: Vec::with_capacity(guess.min(BATCH_CAPACITY)),
        });
    }
    let Some(b) = batch.as_mut() else {
        return Ok(());
    };
    let acker = (!b.no_ack).then(|| shared.clone());
    b.deliveries
        .push(Delivery::from_parts(frame, d, b.tag.clone(), acker));
    Ok(())
}

/// Splits a run of stream records into deliveries, added to the batch as
/// [`deliver`] adds one. A record that does not check (length, CRC, offsets, meta)
/// ends the consumer: the records before it are delivered, then its stream fails with
/// the reason and the broker is asked to cancel it (detached). The connection and its
/// other consumers go on.
fn deliver_run(
    shared: &Arc<Shared>,
    st: &mut State,
    frame: &Bytes,
    r: DeliverRunFrame<'_>,
    batch: &mut Option<Batch>,
    wrote: &mut bool,
) -> Result<(), ClientError> {
    // The run's delivery tags must fit in a u64: a broker that says otherwise is broken
    // (an error ends the connection rather than wrapping tags round to ones in use).
    let Some(last) = r.first_tag.checked_add(u64::from(r.count.max(1)) - 1) else {
        return Err(ClientError::Protocol(format!(
            "a run of {} deliveries for consumer '{}' from delivery tag {}: its tags overflow",
            r.count, r.consumer_tag, r.first_tag
        )));
    };
    if batch.as_ref().is_some_and(|b| *b.tag != *r.consumer_tag) {
        flush(st, batch, wrote)?;
    }
    if batch.is_none() {
        let Some(slot) = st.consumers.get(r.consumer_tag.as_ref()) else {
            tracing::warn!(
                consumer_tag = %r.consumer_tag,
                delivery_tag = r.first_tag,
                records = r.count,
                "a run of deliveries for an unknown consumer"
            );
            return Ok(());
        };
        *batch = Some(Batch {
            tag: slot.tag.clone(),
            tx: slot.tx.clone(),
            no_ack: slot.no_ack,
            deliveries: Vec::new(),
        });
    }
    let Some(b) = batch.as_mut() else {
        return Ok(());
    };
    b.deliveries.reserve(r.count.min(4096) as usize);
    let acker = (!b.no_ack).then(|| shared.clone());
    let mut tag = r.first_tag;
    let split = split_run(r.records, r.count, |rec| {
        let run = (r.redelivered, r.delivery_count);
        let d = Delivery::from_record(frame, rec, tag, run, b.tag.clone(), acker.clone());
        b.deliveries.push(d);
        // Past `last` only after the run's final record (then unused): checked above.
        tag = tag.wrapping_add(1);
    });
    let Err(e) = split else {
        return Ok(());
    };
    let consumer = b.tag.clone();
    let error = ClientError::Protocol(format!(
        "a run of stream records for consumer '{consumer}' (delivery tags {}..={last}) \
         cannot be delivered: {e}; the records before it were delivered and the consumer \
         is cancelled",
        r.first_tag
    ));
    tracing::error!(consumer_tag = %consumer, delivery_tag = tag, %error, "damaged run of stream records: consumer cancelled");
    flush(st, batch, wrote)?;
    if let Some(slot) = st.consumers.remove(&*consumer) {
        let _ = slot.tx.send(ConsumerEvent::Failed(error));
    }
    let cancel = Op::Cancel {
        consumer_tag: consumer.to_string(),
    };
    drop(st.queue_request(cancel, OnReply::Nothing, shared.max_frame)?);
    *wrote = true;
    Ok(())
}

/// Sends the batch, if any, to its consumer's stream.
fn flush(st: &mut State, batch: &mut Option<Batch>, wrote: &mut bool) -> Result<(), ClientError> {
    match batch.take() {
        Some(b) => send(st, &b.tx, b.no_ack, b.deliveries, wrote),
        None => Ok(()),
    }
}

/// Sends deliveries to a consumer's stream; if the stream was dropped, puts them back
/// in the queue for other consumers (unless they needed no ack).
fn send(
    st: &mut State,
    tx: &mpsc::UnboundedSender<ConsumerEvent>,
    no_ack: bool,
    deliveries: Vec<Delivery>,
    wrote: &mut bool,
) -> Result<(), ClientError> {
    let Err(mpsc::error::SendError(ConsumerEvent::Deliveries(back))) =
        tx.send(ConsumerEvent::Deliveries(deliveries))
    else {
        return Ok(());
    };
    if !no_ack {
        for d in back {
            let reject = ClientFrame::Reject {
                tag: d.delivery_tag,
                requeue: true,
            };
            st.encode(&reject, usize::MAX)?;
            *wrote = true;
        }
    }
    Ok(())
}

/// Handles one frame (a deliver frame here only when it is not in the encoder's own
/// shape). An error ends the connection.
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
            let (no_ack, tx) = (slot.no_ack, slot.tx.clone());
            let acker = (!no_ack).then(|| shared.clone());
            let delivery = Delivery::from_frame(frame, d, slot.tag.clone(), acker);
            send(st, &tx, no_ack, vec![delivery], wrote)?;
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
        ServerFrame::DeliverRun(r) => {
            // A run in another shape than the broker's encoder writes.
            let mut batch = None;
            deliver_run(shared, st, frame, r, &mut batch, wrote)?;
            flush(st, &mut batch, wrote)?;
        }
        ServerFrame::Heartbeat => {}
        other @ ServerFrame::Welcome { .. } => {
            return Err(ClientError::unexpected("no second Welcome", other))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
