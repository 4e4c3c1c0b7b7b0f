//! The replicated side's delivery and bounds: sending what the machine checked out to
//! this node's consumers within their transport windows, and holding the group's
//! messages to the broker's memory accounting (the gauge behind the memory watermark)
//! and to the queue flow threshold, as a classic queue is.

use super::*;

impl QueueActor {
    /// Sends each consumer what waits for it, as far as its transport window and its
    /// client's free prefetch slots allow (`credit::sendable`).
    pub(super) fn replica_flush(&mut self) {
        let handle = self.handle.clone();
        let r = self.replica();
        let mut gone = Vec::new();
        // Another consumer would take what an idle one holds beyond its prefetch
        // (looked at only when one holds something back).
        let wanted = r
            .consumers
            .iter()
            .any(|c| c.boosted && !c.waiting.is_empty())
            && r.wanted();
        let now = Instant::now();
        for c in r.consumers.iter_mut() {
            let n = credit::sendable(c.prefetch, c.auto_ack, c.unacked, c.window, c.waiting.len());
            if n == 0 {
                // Its client holds its prefetch and settles nothing: the extra goes
                // back (unsent: not marked) once it has been idle a while or others
                // want it (`extra`).
                if c.waiting.is_empty() {
                    continue;
                }
                if let Some(ids) = extra::give_back(c, &mut r.cmds, now, wanted) {
                    if !ids.is_empty() {
                        r.cmds.push_back(Cmd::GiveBack {
                            ids,
                            then: Vec::new(),
                        });
                    }
                }
                continue;
            }
            if !c.handle.deliver.connected() {
                gone.push(c.id);
                continue;
            }
            let sent: Vec<Picked> = c.waiting.drain(..n).collect();
            let ids: Vec<u64> = sent.iter().map(|p| p.0).collect();
            c.window -= n as u32;
            if c.auto_ack {
                r.cmds.push_back(Cmd::Settle {
                    ids,
                    how: How::Ack,
                    by: Vec::new(),
                });
            } else {
                c.unacked += ids.len();
                for id in ids {
                    r.out.insert(
                        id,
                        Out {
                            consumer: c.id,
                            owner: c.owner,
                        },
                    );
                }
            }
            // do_send: the client's prefetch and the transport window bound what is in
            // flight.
            c.handle.deliver.do_send(Deliver {
                consumer_tag: c.tag.clone(),
                queue: handle.clone().expect("queue handle set in started"),
                deliveries: sent.into_iter().map(delivery).collect(),
                credit: Credit {
                    queue: handle.clone(),
                    consumer: c.id,
                    amount: n as u32,
                },
            });
        }
        for id in gone {
            // Its process went without a release: unregistered, its checkouts back.
            if let Some(at) = r.consumers.iter().position(|c| c.id == id) {
                let c = r.consumers.remove(at);
                r.give_back_unsent(&c);
            }
            r.out.retain(|_, o| o.consumer != id);
            r.return_whole(id);
        }
    }

    /// What the flow threshold bounds, as applied here: the messages held, ready or
    /// checked out, and whether the queue has consumers (`None` on a node that is no
    /// member).
    fn replica_depth(&self) -> Option<(usize, bool)> {
        let r = self.replica.as_ref().expect("a replicated queue");
        r.group
            .read(|q| (q.ready_len() + q.checked_out_len(), q.consumer_count() > 0))
    }

    /// True when the queue has consumers and holds `queue_flow_threshold` messages
    /// or more (on every member: each knows the consumers and the depth).
    pub(super) fn replica_flow_closes(&self) -> bool {
        self.flow_threshold > 0
            && self
                .replica_depth()
                .is_some_and(|(depth, consumers)| consumers && depth >= self.flow_threshold)
    }

    /// Brings the gauge level with the messages this node's member holds (every
    /// member holds each message) and its dead letters on their way out, and reopens the flow once the consumers have
    /// brought the depth down to half the threshold (or are gone).
    pub(super) fn replica_account(&mut self) {
        let held = self
            .replica()
            .group
            .read(|q| q.held_bytes() as usize)
            .unwrap_or(0)
            + self.outbox.as_ref().map_or(0, |o| o.held_bytes());
        if held > self.accounted {
            self.gauge.add(held - self.accounted);
        } else {
            self.gauge.sub(self.accounted - held);
        }
        self.accounted = held;
        if !*self.flow.borrow() {
            let reopen = self
                .replica_depth()
                .is_none_or(|(depth, consumers)| !consumers || depth <= self.flow_threshold / 2);
            if reopen {
                self.flow.send_replace(true);
            }
        }
    }
}
