//! Deliveries from queues to a connection's consumers (routed to their channel by
//! consumer tag), `basic.get` answers, and broker-side cancels (`basic.cancel` to a
//! client that announced `consumer_cancel_notify`).

use super::codec::DeliverHead;
use super::connection::{AmqpConnection, Phase};
use super::properties::{properties_out, short};
use super::reply_to::DirectReply;
use crate::broker::messages::{ConsumerCancelled, Deliver, Delivery};
use crate::broker::queue::QueueHandle;
use crate::channel::DeliveryAction;
use crate::message::Properties;
use actix::prelude::*;
use amq_protocol::protocol::{basic, AMQPClass};

impl AmqpConnection {
    /// Writes a `Deliver` batch on channel `ch` (tracked unless auto-acked).
    pub(super) fn write_deliver(&mut self, ch: u16, msg: Deliver) {
        let Some(st) = self.channels.get_mut(&ch) else {
            return;
        };
        let (action, msg) = st.core.accept_delivery(msg);
        let (DeliveryAction::Write { no_ack }, Some(msg)) = (action, msg) else {
            return;
        };
        self.stats.add_delivered(msg.deliveries.len() as u64);
        let fm = self.frame_max();
        let Some(st) = self.channels.get_mut(&ch) else {
            return;
        };
        for d in &msg.deliveries {
            let tag = st.core.track(&msg.queue, d.id, no_ack);
            let m = &d.message;
            let head = DeliverHead {
                consumer_tag: &msg.consumer_tag,
                delivery_tag: tag,
                redelivered: d.redelivered,
                exchange: &m.exchange,
                routing_key: &m.routing_key,
            };
            let props = (!Properties::is_shared_empty(&m.properties))
                .then(|| properties_out(&m.properties));
            self.enc
                .deliver(&mut self.out, ch, &head, props.as_ref(), &m.body, fm);
        }
        // The credit goes back to the queue once these bytes are on the socket.
        self.out_credits.push(msg.credit);
    }

    /// Answers a `basic.get`.
    pub(super) fn got(
        &mut self,
        ch: u16,
        q: QueueHandle,
        got: Option<(Delivery, u64)>,
        no_ack: bool,
    ) {
        let Some(st) = self.channels.get_mut(&ch) else {
            return;
        };
        st.core.touch(&q);
        let Some((d, left)) = got else {
            self.method(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})),
            );
            return;
        };
        let tag = st.core.track(&q, d.id, no_ack);
        self.stats.add_delivered(1);
        let m = &d.message;
        self.method(
            ch,
            AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                delivery_tag: tag,
                redelivered: d.redelivered,
                exchange: short(&m.exchange),
                routing_key: short(&m.routing_key),
                message_count: left.min(u32::MAX as u64) as u32,
            })),
        );
        let fm = self.frame_max();
        self.enc.content(
            &mut self.out,
            ch,
            properties_out(&m.properties),
            &m.body,
            fm,
        );
    }
}

impl AmqpConnection {
    /// True when the client's cancel of consumer `tag` is not answered yet.
    pub(super) fn cancelling_anywhere(&self, tag: &str) -> bool {
        self.consumer_channels
            .get(tag)
            .and_then(|ch| self.channels.get(ch))
            .is_some_and(|st| st.core.is_cancelling(tag))
    }

    /// The client's cancel of `tag` on `ch` is answered: the tag is forgotten (unless
    /// a new consumer took it meanwhile).
    pub(super) fn end_cancel(&mut self, ch: u16, tag: &str) {
        let Some(st) = self.channels.get_mut(&ch) else {
            return;
        };
        st.core.end_cancel(tag);
        if !st.core.has_consumer(tag) && self.consumer_channels.get(tag) == Some(&ch) {
            self.consumer_channels.remove(tag);
        }
    }
}

impl Handler<Deliver> for AmqpConnection {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _ctx: &mut Self::Context) {
        if self.phase == Phase::Closing {
            // Stopping: release requeues them. Hold the credit so no more come here.
            self.held_credits.push(msg.credit);
            return;
        }
        let tag = &*msg.consumer_tag;
        let ch = match self.consumer_channels.get(tag) {
            Some(&ch) => ch,
            // Cancelled and answered, yet sent before the queue had the cancel: the
            // channel core writes it if auto-acked (it left the queue), else requeues.
            None => match self
                .channels
                .iter()
                .find(|(_, s)| s.core.was_cancelled(tag))
            {
                Some((&ch, _)) => ch,
                // The channel closed: its release requeues what was on its way, and
                // the consumer is gone at the queue, so the credit returned is moot.
                None => return,
            },
        };
        self.deliver_or_hold(ch, msg);
        self.flush();
    }
}

impl Handler<ConsumerCancelled> for AmqpConnection {
    type Result = ();

    fn handle(&mut self, msg: ConsumerCancelled, _ctx: &mut Self::Context) {
        if self.cancelling_anywhere(&msg.consumer_tag) {
            // The client's own cancel is being answered; its cancel-ok ends it.
            return;
        }
        let Some(ch) = self.consumer_channels.remove(&*msg.consumer_tag) else {
            return;
        };
        if let Some(st) = self.channels.get_mut(&ch) {
            st.core.remove_consumer(&msg.consumer_tag);
        }
        tracing::debug!(channel = ch, tag = %msg.consumer_tag, reason = %msg.reason, "consumer cancelled by the broker");
        if self.cancel_notify && self.phase != Phase::Closing {
            self.notify_cancelled(ch, msg.consumer_tag.to_string());
            self.flush();
        }
    }
}

impl Handler<DirectReply> for AmqpConnection {
    type Result = ();

    fn handle(&mut self, msg: DirectReply, _ctx: &mut Self::Context) {
        if self.phase == Phase::Closing {
            return;
        }
        let Some(st) = self.channels.get_mut(&msg.channel) else {
            return;
        };
        let Some((token, tag)) = &st.reply_to else {
            return;
        };
        if *token != msg.token {
            return;
        }
        let tag = tag.clone();
        let delivery_tag = st.core.untracked_tag();
        self.stats.add_delivered(1);
        let m = &msg.message;
        self.method(
            msg.channel,
            AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: short(&tag),
                delivery_tag,
                redelivered: false,
                exchange: short(&m.exchange),
                routing_key: short(&m.routing_key),
            })),
        );
        let fm = self.frame_max();
        self.enc.content(
            &mut self.out,
            msg.channel,
            properties_out(&m.properties),
            &m.body,
            fm,
        );
        self.flush();
    }
}
