//! [`BatchAnswer`]: the publisher's answer to a batch whose messages all went to one
//! queue, carried by that queue's [`Enqueue`] so that whoever stores the batch answers
//! the publisher itself.
//!
//! The exchange still routes every batch (bindings, alternate exchange, refusals, the
//! per-exchange order of batches into each queue); what it no longer does for such a
//! batch is wait for the queue's answer only to pass it on. A classic queue answers
//! from its own thread once the batch is stored; a stream hands the answer to its
//! writer thread, which gives it after the fsync. The reply wakes the publishing
//! connection directly: one thread hand-off instead of three (writer → queue →
//! exchange → connection). A batch with a second destination (another queue, a bound
//! custom exchange actor, the alternate exchange) is merged by the exchange as before.
//!
//! What a queue's answer means for the messages is one rule ([`fold`]), used by both
//! paths: taken, refused (nacked with the queue's reason), or routed nowhere when the
//! queue was deleted or stopped before it answered.
//!
//! [`Enqueue`]: crate::broker::messages::Enqueue

use crate::broker::messages::{Enqueued, Routed};
use crate::error::{BrokerError, ErrorCode};
use tokio::sync::oneshot;

/// The answer channel of a [`crate::broker::messages::Publish`].
pub(super) type Reply = oneshot::Sender<Result<Vec<Routed>, BrokerError>>;

/// The publisher's answer to a batch that reached a single queue: the outcome of every
/// message decided by the exchange (refused, unroutable) and the batch positions of
/// those the queue was sent. [`BatchAnswer::finish`] folds in the queue's answer and
/// replies; dropped unfinished (the queue actor stopped before it handled the batch),
/// it replies as [`fold`] does for a queue that never answered.
pub struct BatchAnswer {
    /// Where the outcome goes (taken when replied).
    reply: Option<Reply>,
    /// The outcome per message of the whole batch, as the exchange left it.
    routed: Vec<Routed>,
    /// Positions in the batch of the messages this queue was sent, in order.
    idx: Vec<u32>,
}

impl BatchAnswer {
    pub(super) fn new(reply: Reply, routed: Vec<Routed>, idx: Vec<u32>) -> Self {
        BatchAnswer {
            reply: Some(reply),
            routed,
            idx,
        }
    }

    /// Replies to the publisher with the queue's answer to its share of the batch
    /// (what [`crate::broker::messages::Enqueue`] would have answered the exchange).
    pub fn finish(mut self, answer: &Result<Enqueued, BrokerError>) {
        self.reply_with(Some(answer));
    }

    fn reply_with(&mut self, answer: Option<&Result<Enqueued, BrokerError>>) {
        if let Some(reply) = self.reply.take() {
            let mut routed = std::mem::take(&mut self.routed);
            fold(&mut routed, &self.idx, answer);
            let _ = reply.send(Ok(routed));
        }
    }
}

impl Drop for BatchAnswer {
    fn drop(&mut self) {
        // The queue never answered: as a dropped `Enqueue` request would read.
        self.reply_with(None);
    }
}

/// Folds a queue's answer for the messages at batch positions `idx` into `routed`:
/// `None` when the queue stopped before it answered.
pub(super) fn fold(
    routed: &mut [Routed],
    idx: &[u32],
    answer: Option<&Result<Enqueued, BrokerError>>,
) {
    match answer {
        Some(Ok(answer)) => count_enqueued(routed, idx, answer),
        // The queue was deleted while the batch was on its way: like a message routed
        // nowhere (RabbitMQ confirms it, returns it if mandatory).
        Some(Err(e)) if e.code() == ErrorCode::NotFound => {}
        // Anything else means the message may not be stored: never confirm it as if
        // it were.
        Some(Err(e)) => {
            for &i in idx {
                routed[i as usize].merge(Routed::refused(e.clone()));
            }
        }
        // The queue's answer was dropped unanswered (its actor stopped with the batch
        // in its mailbox, or a stream's writer stopped holding it): the messages may
        // not be stored, so they are refused, never confirmed as routed nowhere. Only
        // a queue that answers that it was deleted counts as routed nowhere (above).
        None => {
            let e = BrokerError::new(
                ErrorCode::ResourceError,
                "the queue stopped before it answered: the message may not be stored",
            );
            for &i in idx {
                routed[i as usize].merge(Routed::refused(e.clone()));
            }
        }
    }
}

/// Folds a queue's [`Enqueued`] answer for the messages at batch positions `idx` into
/// `routed`.
fn count_enqueued(routed: &mut [Routed], idx: &[u32], answer: &Enqueued) {
    let mut refused = answer.refused.iter().copied().peekable();
    for (j, &i) in idx.iter().enumerate() {
        let r = &mut routed[i as usize];
        if refused.next_if_eq(&(j as u32)).is_some() {
            if r.refused.is_none() {
                r.refused = Some(answer.reason.clone().unwrap_or_else(|| {
                    BrokerError::new(ErrorCode::ResourceError, "a queue refused the message")
                }));
            }
        } else {
            r.queues += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(
        idx: Vec<u32>,
        n: usize,
    ) -> (
        BatchAnswer,
        oneshot::Receiver<Result<Vec<Routed>, BrokerError>>,
    ) {
        let (tx, rx) = oneshot::channel();
        (BatchAnswer::new(tx, vec![Routed::default(); n], idx), rx)
    }

    #[test]
    fn a_finished_answer_counts_the_queue_for_its_messages_only() {
        let (a, mut rx) = answer(vec![0, 2], 3);
        a.finish(&Ok(Enqueued::default()));
        let routed = rx.try_recv().unwrap().unwrap();
        assert_eq!(routed, vec![Routed::to(1), Routed::to(0), Routed::to(1)]);
    }

    #[test]
    fn a_failed_store_refuses_the_queues_messages_with_its_reason() {
        let (a, mut rx) = answer(vec![1], 2);
        let e = BrokerError::internal("stream 's' could not store the messages: disk");
        a.finish(&Err(e.clone()));
        let routed = rx.try_recv().unwrap().unwrap();
        assert_eq!(routed, vec![Routed::to(0), Routed::refused(e)]);
    }

    #[test]
    fn a_dropped_answer_refuses_the_queues_messages_never_confirms_them() {
        let (a, mut rx) = answer(vec![0], 2);
        drop(a);
        let routed = rx.try_recv().unwrap().unwrap();
        assert!(routed[0].refused.is_some(), "{routed:?}");
        assert_eq!(routed[1], Routed::to(0));
    }
}
