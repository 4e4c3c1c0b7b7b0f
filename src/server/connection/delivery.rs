//! Deliveries from queues to this connection's consumers (through its channel, which
//! decides what becomes of each batch and gives the delivery tags), and broker-side
//! cancels.

use super::Connection;
use crate::broker::messages::{ConsumerCancelled, Deliver, Delivery, RecordRun};
use crate::channel::DeliveryAction;
use crate::protocol::wire::{
    encode_deliver_run_head, encode_deliver_stored, encode_deliver_stored_head, properties_or_none,
    DeliverFrame, ServerFrame,
};
use actix::prelude::*;
use std::borrow::Cow;

/// Bodies of stream records from this many bytes on go to a plain TCP socket by
/// reference (their own `writev` slice) instead of being copied behind their frame
/// head: below it, copying costs less than a slice (a reference count taken and
/// dropped, an iovec entry the kernel walks).
const BY_REFERENCE: usize = 256;

/// Most bytes of records in one run: a run is one frame, which the client takes up to
/// the broker's `max_frame_size`; and a run's frame is held whole in the client's read
/// buffer before its first record is handed over, so runs stay well below that.
const RUN_MAX_BYTES: usize = 1024 * 1024;

/// Most bytes of records in a run for a broker whose largest frame is `max_frame`: what
/// a consume of runs asks the stream for ([`crate::broker::messages::Consume::run_bytes`]).
pub(super) fn run_max(max_frame: u32) -> usize {
    // Room for the run's head: the consumer tag (bounded by 255 bytes) and numbers.
    RUN_MAX_BYTES.min((max_frame as usize).saturating_sub(512))
}

/// The wire form of a delivery.
pub(super) fn deliver_frame<'a>(
    consumer_tag: &'a str,
    tag: u64,
    d: &'a Delivery,
) -> DeliverFrame<'a> {
    let m = &d.message;
    DeliverFrame {
        consumer_tag: Cow::Borrowed(consumer_tag),
        delivery_tag: tag,
        redelivered: d.redelivered,
        delivery_count: d.delivery_count,
        exchange: Cow::Borrowed(&m.exchange),
        routing_key: Cow::Borrowed(&m.routing_key),
        properties: properties_or_none(&m.properties),
        body: &m.body,
    }
}

impl Connection {
    /// Writes a `Deliver` batch the channel accepted, with the channel's delivery tags
    /// (tracked for settlement unless auto-acked).
    pub(super) fn write_deliver(&mut self, msg: Deliver, no_ack: bool) {
        let records: u32 = msg.deliveries.iter().map(Delivery::records).sum();
        self.stats.add_delivered(u64::from(records));
        for d in &msg.deliveries {
            if let Some(run) = &d.run {
                // A stream's run of records, handed over as one: one tag range tracked,
                // one head, the records one slice.
                let tag = self.channel.track_run(&msg.queue, d.id, run.count, no_ack);
                self.write_run(&msg.consumer_tag, tag, d, run);
                continue;
            }
            let tag = self.channel.track(&msg.queue, d.id, no_ack);
            if let Some(s) = &d.stored {
                // A stream record as stored: its exchange, routing key and properties
                // are copied into the frame as they are (the same bytes as encoded).
                let (again, count) = (d.redelivered, d.delivery_count);
                let (fields, body) = (s.fields(), s.body());
                if self.vectored && body.len() >= BY_REFERENCE {
                    // The head here, the body as the writer's next slice: a slice of
                    // the segment's mapping (or of the appended chunk), never copied.
                    encode_deliver_stored_head(
                        &mut self.out,
                        &msg.consumer_tag,
                        tag,
                        again,
                        count,
                        fields,
                        body.len(),
                    );
                    self.parts.push(self.out.split().freeze());
                    self.parts.push(s.body_bytes());
                    continue;
                }
                if let Err(e) = encode_deliver_stored(
                    &mut self.out,
                    &msg.consumer_tag,
                    tag,
                    again,
                    count,
                    fields,
                    body,
                ) {
                    tracing::error!(error = %e, "cannot encode a server frame");
                }
                continue;
            }
            self.frame(&ServerFrame::Deliver(deliver_frame(
                &msg.consumer_tag,
                tag,
                d,
            )));
        }
        // The credit goes back to the queue once these bytes are on the socket.
        self.out_credits.push(msg.credit);
    }

    /// Writes `run` (delivery `d`, first tag `first_tag`) as one `deliver_run` frame.
    fn write_run(&mut self, consumer_tag: &str, first_tag: u64, d: &Delivery, run: &RecordRun) {
        encode_deliver_run_head(
            &mut self.out,
            consumer_tag,
            first_tag,
            d.redelivered,
            d.delivery_count,
            run.count,
            run.records.len(),
        );
        if self.vectored && run.records.len() >= BY_REFERENCE {
            // The records as the writer's next slice: one slice of the segment's
            // mapping (or of the appended chunk) for the whole run.
            self.parts.push(self.out.split().freeze());
            self.parts.push(run.records.clone());
        } else {
            self.out.extend_from_slice(&run.records);
        }
    }
}

impl Handler<Deliver> for Connection {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _ctx: &mut Self::Context) {
        // The connection's one channel has every consumer tag: it takes the batch, or
        // (a consumer cancelled meanwhile) gives unacked deliveries back at once.
        let (action, msg) = self.channel.accept_delivery(msg);
        let (DeliveryAction::Write { no_ack }, Some(msg)) = (action, msg) else {
            return;
        };
        if self.closing {
            // Stopping: Release (in `stopped`) requeues them. Hold the credit: returned,
            // it would only bring more deliveries to a connection that cannot take them.
            self.held_credits.push(msg.credit);
            return;
        }
        self.write_deliver(msg, no_ack);
        self.flush();
    }
}

impl Handler<ConsumerCancelled> for Connection {
    type Result = ();

    fn handle(&mut self, msg: ConsumerCancelled, _ctx: &mut Self::Context) {
        if self.channel.remove_consumer(&msg.consumer_tag).is_some() {
            self.frame(&ServerFrame::ConsumerCancelled {
                consumer_tag: msg.consumer_tag.to_string(),
                reason: msg.reason,
            });
            self.flush();
        }
    }
}
