//! Deliveries from queues to this connection's consumers, and broker-side cancels.

use super::Connection;
use crate::broker::messages::{ConsumerCancelled, Deliver, Delivery, Settlement};
use crate::protocol::wire::{properties_or_none, DeliverFrame, ServerFrame};
use actix::prelude::*;
use std::borrow::Cow;

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

impl Handler<Deliver> for Connection {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _ctx: &mut Self::Context) {
        let no_ack = match self.consumers.get(&*msg.consumer_tag) {
            Some(c) => c.no_ack,
            None => {
                let auto_acked = self
                    .recently_cancelled
                    .iter()
                    .any(|(t, no_ack)| **t == *msg.consumer_tag && *no_ack);
                if !auto_acked {
                    // Cancelled meanwhile: give unacked deliveries back at once.
                    let ids: Vec<u64> = msg.deliveries.iter().map(|d| d.id).collect();
                    msg.queue.settle(self.owner, ids, Settlement::Requeue);
                    return;
                }
                // Auto-acked ones already left the queue: they are the client's.
                true
            }
        };
        if self.closing {
            // Stopping: Release (in `stopped`) requeues them. Hold the credit: returned,
            // it would only bring more deliveries to a connection that cannot take them.
            self.held_credits.push(msg.credit);
            return;
        }
        self.stats.add_delivered(msg.deliveries.len() as u64);
        for d in &msg.deliveries {
            let tag = self.next_tag;
            self.next_tag += 1;
            if !no_ack {
                self.unacked.push(tag, msg.queue.clone(), d.id);
            }
            self.frame(&ServerFrame::Deliver(deliver_frame(
                &msg.consumer_tag,
                tag,
                d,
            )));
        }
        // The credit goes back to the queue once these bytes are on the socket.
        self.out_credits.push(msg.credit);
        self.flush();
    }
}

impl Handler<ConsumerCancelled> for Connection {
    type Result = ();

    fn handle(&mut self, msg: ConsumerCancelled, _ctx: &mut Self::Context) {
        if let Some(c) = self.consumers.remove(&*msg.consumer_tag) {
            self.remember_cancelled(msg.consumer_tag.to_string(), c.no_ack);
            self.frame(&ServerFrame::ConsumerCancelled {
                consumer_tag: msg.consumer_tag.to_string(),
                reason: msg.reason,
            });
            self.flush();
        }
    }
}
