//! Auto-ack deliveries between the leader and the client's socket. The leader is
//! asked for them with acks ([`wire_spec`]); each is acked by the session once the
//! client's connection wrote it out, which the consumer's transport credit says (a
//! connection returns a delivery's credit once its bytes are on the socket, in
//! delivery order). One the client was never sent (its consumer cancelled, the
//! session broken, the client gone) is not acked, so it goes back to the queue.

use super::*;
use std::collections::VecDeque;

/// What the leader is asked for consumer `spec`: an auto-ack one is made with acks
/// and no prefetch of its own (the session's credit bounds it; the session acks).
pub(super) fn wire_spec(spec: &Spec) -> Spec {
    if !spec.auto_ack {
        return spec.clone();
    }
    Spec {
        tag: spec.tag.clone(),
        prefetch: 0,
        auto_ack: false,
        exclusive: spec.exclusive,
        local: spec.local,
        arguments: spec.arguments.clone(),
    }
}

/// The auto-ack deliveries handed to each consumer's client and not written yet.
#[derive(Default)]
pub(super) struct Written {
    /// By the queue actor's consumer id, in delivery order: the leader's id, or
    /// `None` for a delivery whose credit is still out but that acks nothing (of an
    /// ended session, or made before the consumer was moved to a session).
    out: HashMap<u64, VecDeque<Option<u64>>>,
}

impl Written {
    /// `n` deliveries to `consumer` whose credit is out and that ack nothing.
    pub(super) fn skip(&mut self, consumer: u64, n: u32) {
        if n > 0 {
            let q = self.out.entry(consumer).or_default();
            q.extend(std::iter::repeat_n(None, n as usize));
        }
    }

    /// Deliveries of the leader's `ids` handed to `consumer`'s client.
    pub(super) fn handed(&mut self, consumer: u64, ids: impl IntoIterator<Item = u64>) {
        self.out
            .entry(consumer)
            .or_default()
            .extend(ids.into_iter().map(Some));
    }

    /// `n` deliveries of `consumer` were written out: the leader's ids to ack.
    pub(super) fn take(&mut self, consumer: u64, n: u32) -> Vec<u64> {
        let Some(q) = self.out.get_mut(&consumer) else {
            return Vec::new();
        };
        let n = (n as usize).min(q.len());
        let acked = q.drain(..n).flatten().collect();
        if q.is_empty() {
            self.out.remove(&consumer);
        }
        acked
    }

    /// `consumer` went: the leader's ids of what its client was not sent (its credit
    /// no longer comes here: a connection drops deliveries for a cancelled consumer).
    pub(super) fn forget(&mut self, consumer: u64) -> Vec<u64> {
        self.out
            .remove(&consumer)
            .map(|q| q.into_iter().flatten().collect())
            .unwrap_or_default()
    }

    /// The session ended: its leader gives back what it held, so the credit still
    /// out acks nothing.
    pub(super) fn session_ended(&mut self) {
        for q in self.out.values_mut() {
            q.iter_mut().for_each(|id| *id = None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_acks_what_was_written_in_order_and_nothing_of_an_ended_session() {
        let mut w = Written::default();
        w.skip(1, 2);
        w.handed(1, [10, 11, 12]);
        assert_eq!(w.take(1, 3), vec![10], "two moved deliveries ack nothing");
        w.session_ended();
        w.handed(1, [20]);
        assert_eq!(
            w.take(1, 3),
            vec![20],
            "the ended session's 11 and 12 are not acked"
        );
        assert!(w.take(1, 5).is_empty());
        w.handed(2, [30, 31]);
        assert_eq!(w.take(2, 1), vec![30]);
        assert_eq!(w.forget(2), vec![31], "not written: given back");
        assert!(w.take(2, 1).is_empty());
    }

    #[test]
    fn an_auto_ack_consumer_is_asked_of_the_leader_with_acks() {
        let spec = Spec {
            tag: "t".into(),
            prefetch: 7,
            auto_ack: true,
            exclusive: true,
            local: 4,
            arguments: [("x-priority".to_string(), crate::message::FieldValue::Int(5))].into(),
        };
        let w = wire_spec(&spec);
        assert!(!w.auto_ack);
        assert_eq!(w.prefetch, 0);
        assert!(w.exclusive);
        assert_eq!(w.local, 4);
        assert_eq!(w.arguments, spec.arguments, "its arguments carried");
        let acked = Spec {
            auto_ack: false,
            ..spec
        };
        assert_eq!(wire_spec(&acked).prefetch, 7);
    }
}
