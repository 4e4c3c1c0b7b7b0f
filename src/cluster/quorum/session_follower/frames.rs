//! The follower session's frames: the orders of the queue actor while a session is
//! open, and the leader's frames (deliveries under this node's ids, refusals, gets'
//! answers), each making the frames to send back in `out`.

use super::*;

impl Task {
    /// An order while a session is open.
    pub(super) fn online(&mut self, o: Order, out: &mut Vec<Up>) {
        match o {
            Order::Consume(mut c) => {
                self.stale.add(c.id, std::mem::take(&mut c.held));
                out.push(Up::Consume {
                    spec: written::wire_spec(&c.spec),
                    credit: c.window,
                    held: self.stale.count(c.id),
                });
                if c.spec.auto_ack {
                    self.written.skip(c.id, c.unwritten);
                }
                self.consumers.insert(c.tag.clone(), c);
            }
            Order::Cancel(tag, done) => {
                if let Some(c) = self.consumers.remove(&tag) {
                    out.push(Up::Cancel {
                        tag: tag.to_string(),
                    });
                    self.stale.forget(c.id);
                    // Its auto-ack deliveries handed over and not written yet stay in
                    // `written`: the client's connection writes them before the
                    // cancel's answer (they are ahead of it in its mailbox, below),
                    // and their credit still comes here, acking them then.
                }
                // Nothing more is handed to it (what the leader still sends for it is
                // given back unsent): the cancel's answer, made once `done` is told,
                // comes behind every delivery handed to its client.
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Order::Settle(ids, how) => {
                // Stale ones free prefetch slots at the leader and settle nothing.
                for (consumer, n) in self.stale.settled(&ids) {
                    if let Some(c) = self.consumers.values().find(|c| c.id == consumer) {
                        let tag = c.tag.to_string();
                        out.push(Up::Released { tag, n });
                    }
                }
                let ids: Vec<u64> = ids
                    .iter()
                    .filter_map(|i| self.map.remove(i).map(|(leader, _)| leader))
                    .collect();
                if !ids.is_empty() {
                    out.push(Up::Settle { ids, how });
                }
            }
            Order::Credit(id, amount) => {
                let acked = self.written.take(id, amount);
                if !acked.is_empty() {
                    out.push(Up::Settle {
                        ids: acked,
                        how: How::Ack,
                    });
                }
                if let Some(c) = self.consumers.values_mut().find(|c| c.id == id) {
                    c.window = c.window.saturating_add(amount);
                    out.push(Up::Credit {
                        tag: c.tag.to_string(),
                        amount,
                    });
                }
            }
            Order::Prefetch(prefetch) => {
                self.consumers
                    .values_mut()
                    .for_each(|c| c.spec.prefetch = prefetch);
                out.push(Up::Prefetch { prefetch });
            }
            Order::Get(auto_ack, answer) => {
                let req = self.next_req;
                self.next_req += 1;
                self.gets.insert(req, (auto_ack, answer));
                // With an ack: an auto-ack one is acked once handed over.
                out.push(Up::Get {
                    req,
                    auto_ack: false,
                });
            }
        }
    }

    /// This node's delivery of `w` (to `consumer`, or a get's): a new id, mapped to
    /// the leader's when it is to be settled.
    fn local(&mut self, w: WireDelivery, settled: bool, consumer: Option<u64>) -> Delivery {
        let id = NEXT_LOCAL.fetch_add(1, Ordering::Relaxed);
        if !settled {
            self.map.insert(id, (w.id, consumer));
        }
        Delivery {
            id,
            redelivered: w.redelivered,
            delivery_count: w.delivery_count,
            message: w.message.shared(),
            stored: None,
            run: None,
        }
    }

    /// A frame from the leader.
    pub(super) fn down(&mut self, f: Down, out: &mut Vec<Up>) {
        match f {
            Down::Deliver { tag, deliveries } => {
                let Some(c) = self.consumers.get(tag.as_str()) else {
                    // Cancelled here meanwhile: never written, back to the queue as
                    // unsent (no delivery attempt counted).
                    let ids = deliveries.iter().map(|d| d.id).collect();
                    out.push(Up::Settle {
                        ids,
                        how: How::Unsent,
                    });
                    return;
                };
                let (auto_ack, consumer, ctag) = (c.spec.auto_ack, c.id, c.tag.clone());
                let n = deliveries.len() as u32;
                if auto_ack {
                    self.written
                        .handed(consumer, deliveries.iter().map(|d| d.id));
                }
                let deliveries: Vec<Delivery> = deliveries
                    .into_iter()
                    .map(|w| self.local(w, auto_ack, Some(consumer)))
                    .collect();
                let Some(c) = self.consumers.get_mut(tag.as_str()) else {
                    return;
                };
                c.window = c.window.saturating_sub(n);
                // do_send: the credit the leader was given bounds what is in flight.
                c.deliver.do_send(Deliver {
                    consumer_tag: ctag,
                    queue: self.handle.clone(),
                    deliveries,
                    credit: Credit {
                        queue: Some(self.handle.clone()),
                        consumer,
                        amount: n,
                    },
                });
            }
            Down::Refused { tag, error } => {
                tracing::info!(queue = %self.open.queue, tag, %error, "quorum queue: the leader refused a forwarded consumer");
                let Some(mut c) = self.consumers.remove(tag.as_str()) else {
                    return;
                };
                self.written.forget(c.id);
                self.stale.forget(c.id);
                if let Some(waiting) = c.attached.take() {
                    // Its client was not answered yet: the consume itself fails, with
                    // the leader's reason (its queue actor drops it on the answer).
                    let _ = waiting.send(Err(error));
                    return;
                }
                // The queue actor forgets it first (through the queue's inbox, ahead
                // of anything the client does once told): else it would still count
                // it, and refuse the same tag or an exclusive consume for good.
                // Not waited for: it is queued ahead of the client's next move.
                drop(self.handle.cancel(self.owner, &c.tag));
                if let Some(to) = &c.cancelled {
                    to.do_send(ConsumerCancelled {
                        consumer_tag: c.tag.clone(),
                        reason: format!(
                            "{} '{}': its {} refused consumer '{}': {error}",
                            self.served.kind(),
                            self.open.queue,
                            if self.served.is_home() {
                                "home node"
                            } else {
                                "leader"
                            },
                            c.tag
                        ),
                    });
                }
            }
            Down::Got { req, result } => {
                let Some((auto_ack, answer)) = self.gets.remove(&req) else {
                    return;
                };
                let leader_id = match &*result {
                    Ok(Some((w, _))) => Some(w.id),
                    _ => None,
                };
                // Asked with an ack: one whose asker went is given back, an auto-ack
                // one is acked once handed over.
                if answer.is_closed() {
                    if let Some(id) = leader_id {
                        out.push(Up::Settle {
                            ids: vec![id],
                            how: How::Unsent,
                        });
                    }
                    return;
                }
                let result =
                    result.map(|got| got.map(|(w, left)| (self.local(w, auto_ack, None), left)));
                let how = match answer.send(result) {
                    Ok(()) if auto_ack => How::Ack,
                    Ok(()) => return,
                    // The asker went meanwhile: never handed over.
                    Err(result) => {
                        if let Ok(Some((d, _))) = result {
                            self.map.remove(&d.id);
                        }
                        How::Unsent
                    }
                };
                if let Some(id) = leader_id {
                    out.push(Up::Settle { ids: vec![id], how });
                }
            }
            Down::Attached { tag } => {
                if let Some(waiting) = self
                    .consumers
                    .get_mut(tag.as_str())
                    .and_then(|c| c.attached.take())
                {
                    let _ = waiting.send(Ok(()));
                }
            }
            Down::Cancelled { .. } => {}
        }
    }
}
