//! The publish path of a channel: looking an exchange up for publishing, confirm
//! sequence numbers, one `Publish` batch per exchange, the memory reservation and window
//! slot held while it is in flight, and the fate of each message ([`fates`]) turned into
//! what the client is told: a confirm over the acked prefix, a nack of its own for a
//! refused message, a return (312 NO_ROUTE) for an unroutable mandatory one.

use super::Channel;
use crate::broker::exchange::ExchangeHandle;
use crate::broker::memory::MemoryGauge;
use crate::broker::messages::{LookupExchange, Publish, Routed};
use crate::broker::registry::Registry;
use crate::error::{clip, BrokerError, ErrorCode};
use crate::message::Message;
use crate::server::io::Flow;
use actix::Addr;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A message waiting to be batched.
pub struct Outbound {
    /// Confirm sequence number; 0 = no confirm asked.
    pub seq: u64,
    /// Return it when no queue takes it.
    pub mandatory: bool,
    /// The message.
    pub message: Arc<Message>,
}

/// What the client is told about its publishes, in this order.
#[derive(Debug, PartialEq)]
pub enum PublishOutcome {
    /// An unroutable mandatory message: return `items[index]` with 312 NO_ROUTE.
    Return {
        /// Position in the batch.
        index: usize,
    },
    /// A message a queue refused (or the whole batch failed): nack `seq` alone.
    Nack {
        /// The sequence number.
        seq: u64,
        /// Why.
        error: BrokerError,
    },
    /// A refused message without confirms: report it (not for a full queue, which
    /// drops silently as RabbitMQ does).
    Error(BrokerError),
    /// Every publish up to `seq` not nacked is confirmed (`multiple`).
    Confirm {
        /// The highest sequence number confirmed.
        seq: u64,
    },
}

/// What became of one message of a batch: the one rule every front end follows,
/// whatever it then tells its client (see [`fates`]).
#[derive(Debug, PartialEq)]
pub enum Fate {
    /// Taken by `queues` queues (maybe none).
    Taken {
        /// How many queues hold it now.
        queues: u32,
        /// Mandatory and in no queue: it goes back to the publisher (312 NO_ROUTE).
        returned: bool,
    },
    /// Refused by a queue on its way (x-overflow reject-publish, an unreadable
    /// `expiration`...), or the whole batch failed: a nack.
    Refused(BrokerError),
}

/// The fate of each of `items`, in order, from the exchange's answer to their batch.
pub fn fates(
    items: &[Outbound],
    routed: Result<Vec<Routed>, BrokerError>,
) -> impl Iterator<Item = Fate> + '_ {
    let (mut each, failed) = match routed {
        Ok(r) => (r.into_iter(), None),
        Err(e) => (Vec::new().into_iter(), Some(e)),
    };
    items.iter().map_while(move |o| {
        if let Some(e) = &failed {
            return Some(Fate::Refused(e.clone()));
        }
        let r = each.next()?;
        Some(match r.refused {
            Some(e) => Fate::Refused(e),
            None => Fate::Taken {
                queues: r.queues,
                returned: r.queues == 0 && o.mandatory,
            },
        })
    })
}

/// Looks exchange `name` up for publishing. An internal exchange takes no publishes
/// from clients (ACCESS_REFUSED), as in RabbitMQ.
pub fn lookup_exchange(
    registry: &Addr<Registry>,
    name: &str,
    vhost: &str,
) -> impl Future<Output = Result<ExchangeHandle, BrokerError>> + Send + 'static {
    let lookup = registry.send(LookupExchange {
        name: name.to_string(),
    });
    let refused = format!(
        "cannot publish to internal exchange '{}' in vhost '{}'",
        clip(name),
        clip(vhost)
    );
    async move {
        let x = lookup.await??;
        if x.spec().internal {
            return Err(BrokerError::access_refused(refused));
        }
        Ok(x)
    }
}

/// A slot of a connection's publish window (the flow's in-flight count): taken when a batch is
/// sent, given back when it is dropped.
pub struct FlowSlot(Arc<Flow>);

impl FlowSlot {
    /// Takes a slot of `flow`'s window.
    pub fn take(flow: &Arc<Flow>) -> Self {
        flow.inflight.fetch_add(1, Ordering::AcqRel);
        FlowSlot(flow.clone())
    }
}

impl Drop for FlowSlot {
    fn drop(&mut self) {
        self.0.batch_done();
    }
}

/// What a batch in flight holds: its bytes reserved against the memory watermark and
/// its window slot. Given back when dropped: when the exchange answered, and also when
/// the one waiting for the answer stopped first (a connection closed mid-publish), so
/// nothing stays reserved for a batch nobody waits for.
struct InFlight<S> {
    gauge: Arc<MemoryGauge>,
    bytes: usize,
    _slot: S,
}

impl<S> Drop for InFlight<S> {
    fn drop(&mut self) {
        self.gauge.sub(self.bytes);
    }
}

impl Channel {
    /// Turns publisher confirms on (AMQP `confirm.select`).
    pub fn select_confirms(&mut self) {
        self.confirm_mode = true;
    }

    /// True once confirms are on.
    pub fn confirming(&self) -> bool {
        self.confirm_mode
    }

    /// Publishes in confirm mode not yet confirmed to the client (RabbitMQ's
    /// `messages_unconfirmed` of a channel).
    pub fn unconfirmed(&self) -> usize {
        self.confirms.len()
    }

    /// The sequence number of the next publish: the next one in confirm mode, else 0.
    pub fn next_seq(&mut self) -> u64 {
        if !self.confirm_mode {
            return 0;
        }
        self.last_seq += 1;
        self.confirms.register(self.last_seq);
        self.last_seq
    }

    /// Registers a client-chosen sequence number (the native protocol); false when it
    /// does not increase.
    pub fn register_seq(&mut self, seq: u64) -> bool {
        self.confirms.register(seq)
    }

    /// Sends one batch to `exchange` within the connection's publish window `flow`
    /// (see [`send_batch_with`](Channel::send_batch_with)).
    pub fn send_batch(
        &mut self,
        exchange: &ExchangeHandle,
        items: &[Outbound],
        gauge: &Arc<MemoryGauge>,
        flow: &Arc<Flow>,
    ) -> impl Future<Output = Result<Vec<Routed>, BrokerError>> + Send + 'static {
        self.send_batch_with(exchange, items, gauge, FlowSlot::take(flow))
    }

    /// Sends one batch to `exchange` holding `slot`, a slot of the sender's publish
    /// window: settlements read before these publishes go first (a crash after the
    /// publishes' confirm must not bring back a message whose ack the client counts as
    /// done), and the bytes are reserved against the memory watermark. The returned
    /// future resolves with the routing outcomes once the exchange answered, having
    /// given the reservation and the slot back; hand them to
    /// [`Channel::on_published`] (or [`fates`]).
    pub fn send_batch_with<S: Send + 'static>(
        &mut self,
        exchange: &ExchangeHandle,
        items: &[Outbound],
        gauge: &Arc<MemoryGauge>,
        slot: S,
    ) -> impl Future<Output = Result<Vec<Routed>, BrokerError>> + Send + 'static {
        self.flush_settles();
        let bytes: usize = items.iter().map(|o| o.message.accounted_size()).sum();
        // Reserve before sending: held + in flight stays under the watermark plus one
        // batch per publisher.
        gauge.add(bytes);
        let held = InFlight {
            gauge: gauge.clone(),
            bytes,
            _slot: slot,
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        // do_send: the publish window bounds what is in flight, and a reply channel
        // guarantees the batch is handled even if the channel closes.
        exchange.publish_recipient().do_send(Publish {
            messages: items.iter().map(|o| o.message.clone()).collect(),
            hops: Vec::new(),
            reply: Some(tx),
            dead_letter: false,
            // A queue whose flow is closed holds this channel's publishes no longer than
            // FLOW_MAX_HOLD when this channel also consumes from it with acks. (Another
            // channel of the same connection is not recognised yet: see docs/AMQP.md.)
            publisher: Some(self.owner),
        });
        let name = exchange.name().to_string();
        async move {
            let r = rx.await;
            drop(held);
            match r {
                Ok(r) => r,
                Err(_) => Err(BrokerError::new(
                    ErrorCode::NotFound,
                    format!("exchange '{}' went away while publishing", clip(&name)),
                )),
            }
        }
    }

    /// Maps a batch's routing outcomes to what the client is told. A failed batch also
    /// drops its exchange from the cache (it may have gone: the next publish looks it
    /// up again).
    pub fn on_published(
        &mut self,
        items: &[Outbound],
        routed: Result<Vec<Routed>, BrokerError>,
    ) -> Vec<PublishOutcome> {
        let failed = routed.is_err();
        if let (true, Some(o)) = (failed, items.first()) {
            self.exchanges.remove(&*o.message.exchange);
        }
        let mut out = Vec::new();
        for (index, (o, fate)) in items.iter().zip(fates(items, routed)).enumerate() {
            match fate {
                Fate::Refused(error) => {
                    if o.seq != 0 {
                        self.confirms.settle(o.seq, false);
                        out.push(PublishOutcome::Nack { seq: o.seq, error });
                    } else if failed || error.code() != ErrorCode::ResourceError {
                        // Without confirms a full queue drops it silently, as
                        // RabbitMQ does; anything else is reported.
                        out.push(PublishOutcome::Error(error));
                    }
                }
                Fate::Taken { returned, .. } => {
                    if returned {
                        out.push(PublishOutcome::Return { index });
                    }
                    if o.seq != 0 {
                        self.confirms.settle(o.seq, true);
                    }
                }
            }
        }
        if let Some(seq) = self.confirms.advance() {
            out.push(PublishOutcome::Confirm { seq });
        }
        out
    }

    /// Confirms one publish that was handled without an exchange (AMQP direct
    /// reply-to); the confirm waits for earlier publishes, as always.
    pub fn confirm_now(&mut self, seq: u64) -> Vec<PublishOutcome> {
        let mut out = Vec::new();
        if seq != 0 {
            self.confirms.settle(seq, true);
            if let Some(s) = self.confirms.advance() {
                out.push(PublishOutcome::Confirm { seq: s });
            }
        }
        out
    }

    /// Nacks one publish that never reached an exchange (refused before routing); its
    /// `seq` must be registered.
    pub fn refuse(&mut self, seq: u64, error: BrokerError) -> Vec<PublishOutcome> {
        let mut out = Vec::new();
        if seq != 0 {
            self.confirms.settle(seq, false);
            out.push(PublishOutcome::Nack { seq, error });
            if let Some(s) = self.confirms.advance() {
                out.push(PublishOutcome::Confirm { seq: s });
            }
        }
        out
    }
}
