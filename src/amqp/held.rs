//! Deliveries a channel holds back: while `channel.flow(active=false)` pauses it, and
//! beyond its shared `basic.qos global=true` limit. Kept per channel, in order, and
//! written as acks and flow make room; the queue's credit stays with a batch until
//! all of it is written.

use super::connection::AmqpConnection;
use crate::broker::messages::{Credit, Deliver};

impl AmqpConnection {
    /// Writes a delivery for channel `ch`, or holds it while the channel is paused or at
    /// its shared limit (behind any held before it, in order).
    pub(super) fn deliver_or_hold(&mut self, ch: u16, msg: Deliver) {
        let Some(st) = self.channels.get_mut(&ch) else {
            return;
        };
        if st.held.is_empty() && !st.flow_paused && st.global_prefetch == 0 {
            self.write_deliver(ch, msg);
            return;
        }
        st.held.push_back(msg);
        self.write_held(ch);
    }

    /// Writes the held deliveries of channel `ch` that its flow and shared limit allow
    /// (after a `channel.flow(true)`, an ack, a raised `basic.qos global=true`).
    pub(super) fn write_held(&mut self, ch: u16) {
        loop {
            let Some(st) = self.channels.get_mut(&ch) else {
                return;
            };
            if st.flow_paused {
                return;
            }
            let Some(mut msg) = st.held.pop_front() else {
                return;
            };
            if st.global_prefetch > 0 {
                let room = (st.global_prefetch as usize).saturating_sub(st.core.unacked());
                if room == 0 {
                    st.held.push_front(msg);
                    return;
                }
                if msg.deliveries.len() > room {
                    // Write what fits; the rest keeps the batch's credit until written.
                    let rest = msg.deliveries.split_off(room);
                    let first = Deliver {
                        consumer_tag: msg.consumer_tag.clone(),
                        queue: msg.queue.clone(),
                        deliveries: std::mem::replace(&mut msg.deliveries, rest),
                        credit: Credit::none(),
                    };
                    st.held.push_front(msg);
                    self.write_deliver(ch, first);
                    continue;
                }
            }
            self.write_deliver(ch, msg);
        }
    }
}
