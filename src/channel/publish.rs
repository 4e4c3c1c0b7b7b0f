//! The publish path of a channel: confirm sequence numbers, one `Publish` batch per
//! exchange, the memory reservation and window accounting around it, and the mapping of
//! routing outcomes to what the client is told: a confirm over the acked prefix, a nack
//! of its own for a refused message, a return (312 NO_ROUTE) for an unroutable mandatory
//! one.

use super::Channel;
use crate::broker::exchange::ExchangeHandle;
use crate::broker::memory::MemoryGauge;
use crate::broker::messages::{Publish, Routed};
use crate::error::{BrokerError, ErrorCode};
use crate::message::Message;
use crate::server::io::Flow;
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

impl Channel {
    /// Turns publisher confirms on (AMQP `confirm.select`).
    pub fn select_confirms(&mut self) {
        self.confirm_mode = true;
    }

    /// True once confirms are on.
    pub fn confirming(&self) -> bool {
        self.confirm_mode
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

    /// Sends one batch to `exchange` within the publish window: settlements read before
    /// these publishes go first (a crash after the publishes' confirm must not bring
    /// back a message whose ack the client counts as done), the bytes are reserved
    /// against the memory watermark, one window slot is taken. The returned future
    /// resolves with the routing outcomes once the exchange answered, having given the
    /// reservation and the slot back; hand them to [`Channel::on_published`].
    pub fn send_batch(
        &mut self,
        exchange: &ExchangeHandle,
        items: &[Outbound],
        gauge: &Arc<MemoryGauge>,
        flow: &Arc<Flow>,
    ) -> impl Future<Output = Result<Vec<Routed>, BrokerError>> + 'static {
        self.flush_settles();
        let bytes: usize = items.iter().map(|o| o.message.accounted_size()).sum();
        // Reserve before sending: held + in flight stays under the watermark plus one
        // batch per publisher.
        gauge.add(bytes);
        flow.inflight.fetch_add(1, Ordering::AcqRel);
        let (tx, rx) = tokio::sync::oneshot::channel();
        // do_send: the publish window (Flow::inflight) bounds what is in flight, and a
        // reply channel guarantees the batch is handled even if the channel closes.
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
        let gauge = gauge.clone();
        let flow = flow.clone();
        let name = exchange.name().to_string();
        async move {
            let r = rx.await;
            gauge.sub(bytes);
            flow.batch_done();
            match r {
                Ok(r) => r,
                Err(_) => Err(BrokerError::new(
                    ErrorCode::NotFound,
                    format!("exchange '{name}' went away while publishing"),
                )),
            }
        }
    }

    /// Maps a batch's routing outcomes to what the client is told.
    pub fn on_published(
        &mut self,
        items: &[Outbound],
        routed: Result<Vec<Routed>, BrokerError>,
    ) -> Vec<PublishOutcome> {
        let mut out = Vec::new();
        match routed {
            Ok(outcomes) => {
                for (index, (o, r)) in items.iter().zip(outcomes).enumerate() {
                    if let Some(e) = r.refused {
                        if o.seq != 0 {
                            self.confirms.settle(o.seq, false);
                            out.push(PublishOutcome::Nack {
                                seq: o.seq,
                                error: e,
                            });
                        } else if e.code() != ErrorCode::ResourceError {
                            out.push(PublishOutcome::Error(e));
                        }
                        continue;
                    }
                    if r.queues == 0 && o.mandatory {
                        out.push(PublishOutcome::Return { index });
                    }
                    if o.seq != 0 {
                        self.confirms.settle(o.seq, true);
                    }
                }
            }
            Err(e) => {
                for o in items {
                    if o.seq != 0 {
                        self.confirms.settle(o.seq, false);
                        out.push(PublishOutcome::Nack {
                            seq: o.seq,
                            error: e.clone(),
                        });
                    } else {
                        out.push(PublishOutcome::Error(e.clone()));
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

    /// Nacks one publish that never reached an exchange (refused before routing).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::messages::OwnerId;

    fn item(seq: u64, mandatory: bool) -> Outbound {
        Outbound {
            seq,
            mandatory,
            message: Arc::new(Message::new("x", "k", "b")),
        }
    }

    #[test]
    fn outcomes_map_to_returns_nacks_and_one_confirm() {
        let mut ch = Channel::new(OwnerId(1));
        ch.select_confirms();
        let items: Vec<Outbound> = (0..3)
            .map(|i| item(ch.next_seq(), i == 1))
            .collect::<Vec<_>>();
        let refused = BrokerError::new(ErrorCode::ResourceError, "full");
        let out = ch.on_published(
            &items,
            Ok(vec![
                Routed::to(1),
                Routed::to(0),
                Routed::refused(refused.clone()),
            ]),
        );
        assert_eq!(
            out,
            vec![
                PublishOutcome::Return { index: 1 },
                PublishOutcome::Nack {
                    seq: 3,
                    error: refused
                },
                PublishOutcome::Confirm { seq: 2 },
            ]
        );
    }

    #[test]
    fn without_confirms_a_full_queue_is_silent_and_sequence_is_zero() {
        let mut ch = Channel::new(OwnerId(1));
        let items = vec![item(ch.next_seq(), false)];
        assert_eq!(items[0].seq, 0);
        let out = ch.on_published(
            &items,
            Ok(vec![Routed::refused(BrokerError::new(
                ErrorCode::ResourceError,
                "full",
            ))]),
        );
        assert!(out.is_empty());
    }
}
