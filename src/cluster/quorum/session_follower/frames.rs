//! The follower session's frames: the orders of the queue actor while a session is
//! open, and the leader's frames (deliveries under this node's ids, refusals, gets'
//! answers).

use super::*;

impl Task {
    /// An order while a session is open: the frame it sends, if any.
    pub(super) fn online(&mut self, o: Order) -> Option<Up> {
        match o {
            Order::Consume(c) => {
                let frame = Up::Consume {
                    spec: c.spec.clone(),
                    credit: c.window,
                };
                self.consumers.insert(c.tag.clone(), c);
                Some(frame)
            }
            Order::Cancel(tag) => {
                self.consumers.remove(&tag)?;
                Some(Up::Cancel {
                    tag: tag.to_string(),
                })
            }
            Order::Settle(ids, how) => {
                let ids: Vec<u64> = ids.iter().filter_map(|i| self.map.remove(i)).collect();
                (!ids.is_empty()).then_some(Up::Settle { ids, how })
            }
            Order::Credit(id, amount) => {
                let c = self.consumers.values_mut().find(|c| c.id == id)?;
                c.window = c.window.saturating_add(amount);
                Some(Up::Credit {
                    tag: c.tag.to_string(),
                    amount,
                })
            }
            Order::Prefetch(prefetch) => {
                self.consumers
                    .values_mut()
                    .for_each(|c| c.spec.prefetch = prefetch);
                Some(Up::Prefetch { prefetch })
            }
            Order::Get(auto_ack, answer) => {
                let req = self.next_req;
                self.next_req += 1;
                self.gets.insert(req, (auto_ack, answer));
                Some(Up::Get { req, auto_ack })
            }
        }
    }

    /// This node's delivery of `w`: a new id, mapped to the leader's when it is to be
    /// settled.
    fn local(&mut self, w: WireDelivery, settled: bool) -> Delivery {
        let id = NEXT_LOCAL.fetch_add(1, Ordering::Relaxed);
        if !settled {
            self.map.insert(id, w.id);
        }
        Delivery {
            id,
            redelivered: w.redelivered,
            delivery_count: w.delivery_count,
            message: w.message.shared(),
            stored: None,
        }
    }

    /// A frame from the leader: the answer it needs, if any.
    pub(super) fn down(&mut self, f: Down) -> Option<Up> {
        match f {
            Down::Deliver { tag, deliveries } => {
                let Some(c) = self.consumers.get(tag.as_str()) else {
                    // Cancelled here meanwhile: back to the queue.
                    let ids = deliveries.iter().map(|d| d.id).collect();
                    return Some(Up::Settle {
                        ids,
                        how: How::Requeue,
                    });
                };
                let (auto_ack, consumer, ctag) = (c.spec.auto_ack, c.id, c.tag.clone());
                let n = deliveries.len() as u32;
                let deliveries: Vec<Delivery> = deliveries
                    .into_iter()
                    .map(|w| self.local(w, auto_ack))
                    .collect();
                let c = self.consumers.get_mut(tag.as_str())?;
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
                None
            }
            Down::Refused { tag, error } => {
                tracing::info!(queue = %self.open.queue, tag, %error, "quorum queue: the leader refused a forwarded consumer");
                if let Some(c) = self.consumers.remove(tag.as_str()) {
                    if let Some(to) = &c.cancelled {
                        to.do_send(ConsumerCancelled {
                            consumer_tag: c.tag.clone(),
                            reason: error.to_string(),
                        });
                    }
                }
                None
            }
            Down::Got { req, result } => {
                let (auto_ack, answer) = self.gets.remove(&req)?;
                let result = result.map(|got| got.map(|(w, left)| (self.local(w, auto_ack), left)));
                let _ = answer.send(result);
                None
            }
            Down::Cancelled { .. } => None,
        }
    }
}
