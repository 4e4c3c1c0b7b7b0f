//! The replicated side's work in the queue actor: following the group, publishing,
//! consumers and gets on the leader, sending what the applied entries checked out to
//! this node's consumers, the leader's commands written one entry at a time and acted
//! on once committed (see the parent module).

use super::*;

impl QueueActor {
    pub(super) fn replica(&mut self) -> &mut Replica {
        self.replica.as_mut().expect("a replicated queue")
    }

    /// Started: follows the group's leadership and applied entries (a task sends
    /// [`GroupChanged`] on each change, at most one every few milliseconds).
    pub(in crate::broker::queue::actor) fn start_replica(&mut self, ctx: &mut Context<Self>) {
        let group = self.replica().group.clone();
        let addr = ctx.address();
        actix::spawn(async move {
            // Outer: this node's member may stop (shrunk out of the group, or moved
            // off by a regroup) and a new one start later (grown back in): the queue
            // follows each in turn for as long as the actor lives.
            while addr.connected() {
                let Some(mut rx) = group.metrics() else {
                    // This node's member is not started yet (a restart), or this node
                    // is no member at all.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                loop {
                    addr.do_send(GroupChanged);
                    if rx.changed().await.is_err() || !addr.connected() {
                        // The member stopped: one last look at the group without it.
                        addr.do_send(GroupChanged);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        });
    }

    /// A publish: the answer waits for the commit.
    pub(in crate::broker::queue::actor) fn replica_enqueue(
        &mut self,
        msg: Enqueue,
    ) -> ResponseFuture<Result<Enqueued, BrokerError>> {
        // Shared with the publisher's message: nothing copied.
        let stored: Vec<StoredMessage> = msg
            .messages
            .iter()
            .map(|m| StoredMessage::from(m.clone()))
            .collect();
        let answers = self.replica().group.publish(stored);
        let full = BrokerError::new(
            ErrorCode::ResourceError,
            format!(
                "queue '{}' in vhost '{}' is full: message refused (x-overflow reject-publish)",
                self.name, self.vhost
            ),
        );
        // As a classic queue's: past the flow threshold, with consumers registered,
        // the answer (and the publisher's window) waits for them to catch up.
        let held = self.replica_flow_closes().then(|| {
            let rx = close_flow(&self.flow);
            let own_acks = self
                .replica()
                .consumers
                .iter()
                .any(|c| Some(c.owner) == msg.publisher && !c.auto_ack);
            (rx, own_acks)
        });
        Box::pin(async move {
            let mut answer = Enqueued::default();
            for (i, a) in answers.await.into_iter().enumerate() {
                let why = match a {
                    Ok(Some(_)) => continue,
                    Ok(None) => full.clone(),
                    Err(e) => e,
                };
                answer.refused.push(i as u32);
                answer.reason.get_or_insert(why);
            }
            if let Some((rx, own_acks)) = held {
                hold_until_reopened(rx, own_acks).await;
            }
            Ok(answer)
        })
    }

    pub(in crate::broker::queue::actor) fn replica_consume(
        &mut self,
        msg: Consume,
        ctx: &mut Context<Self>,
    ) -> Result<Arc<str>, BrokerError> {
        if !self.replica().leads() {
            let consumed = self.remote_consume(msg, None);
            self.remote_wait(ctx);
            return consumed;
        }
        let made_for = msg
            .options
            .arguments
            .get(crate::cluster::quorum::consume_wire::FORWARDED_ARG);
        let forwarded = made_for.is_some();
        // What its follower's client still holds of an earlier leader's session.
        let stale = match forwarded {
            true => crate::cluster::quorum::consume_wire::held_of(&msg.options.arguments),
            false => 0,
        };
        // The other node's consumer it is made for, when its session says.
        let origin = made_for
            .and_then(crate::cluster::quorum::consume_wire::origin_of)
            .map(|(node, consumer)| ConsumerKey { node, consumer });
        let (name, vhost) = (self.name.clone(), self.vhost.clone());
        let r = self.replica();
        if r.consumers.iter().any(|c| c.exclusive) {
            return Err(BrokerError::locked(format!(
                "queue '{name}' in vhost '{vhost}' has an exclusive consumer"
            )));
        }
        if msg.options.exclusive && !r.consumers.is_empty() {
            return Err(BrokerError::locked(format!(
                "queue '{name}' in vhost '{vhost}' already has consumers: exclusive consume refused"
            )));
        }
        let id = r.next_consumer;
        r.next_consumer += 1;
        if forwarded {
            r.remote.mark_forwarded(id);
        }
        let tag: Arc<str> = if msg.options.tag.is_empty() {
            Arc::from(format!("amq.ctag-{}-{id}", self.incarnation))
        } else {
            Arc::from(msg.options.tag.as_str())
        };
        let r = self.replica();
        if r.consumers
            .iter()
            .any(|c| c.owner == msg.owner && c.tag == tag)
        {
            return Err(BrokerError::not_allowed(format!(
                "consumer tag '{tag}' is already in use on queue '{name}'"
            )));
        }
        r.consumers.push(Consumer {
            id,
            tag: tag.clone(),
            owner: msg.owner,
            handle: ConsumerHandle {
                deliver: msg.deliver,
                cancelled: msg.cancelled,
            },
            prefetch: msg.options.prefetch,
            auto_ack: msg.options.auto_ack,
            exclusive: msg.options.exclusive,
            window: msg.window,
            window_size: msg.window,
            unacked: stale,
            stale,
            waiting: VecDeque::new(),
            origin,
            // An auto-ack consumer's deliveries are settled as they are sent: the
            // extra is in use from the start.
            boosted: msg.options.auto_ack,
            settling: 0,
            settled_at: Instant::now(),
        });
        let credit = credit::registered(msg.options.prefetch, msg.options.auto_ack);
        r.cmds.push_back(Cmd::Consume {
            consumer: id,
            credit,
            origin,
            first: true,
        });
        self.replica_dispatch(ctx);
        Ok(tag)
    }

    pub(in crate::broker::queue::actor) fn replica_purge(
        &mut self,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<u64, BrokerError>> {
        if !self.replica().leads() {
            // A purge concerns no consumer of this node: any node may have it
            // committed, through the group's leader (as RabbitMQ forwards it).
            let written = self.replica().group.write_anywhere(Command::Purge);
            return Box::pin(actix::fut::wrap_future::<_, Self>(async move {
                written.await.map(|g| g.purged)
            }));
        }
        let (tx, rx) = oneshot::channel();
        self.replica().cmds.push_back(Cmd::Purge(tx));
        self.replica_pump(ctx);
        Box::pin(actix::fut::wrap_future::<_, Self>(async move {
            rx.await.unwrap_or_else(|_| {
                Err(BrokerError::internal(
                    "quorum queue: the purge was not committed",
                ))
            })
        }))
    }

    pub(in crate::broker::queue::actor) fn replica_settle(
        &mut self,
        owner: OwnerId,
        ids: &[u64],
        s: Settlement,
    ) {
        self.replica().settle(owner, ids, s);
    }

    pub(in crate::broker::queue::actor) fn replica_credit(&mut self, consumer: u64, amount: u32) {
        self.replica().remote.credit(consumer, amount);
        if let Some(c) = self
            .replica()
            .consumers
            .iter_mut()
            .find(|c| c.id == consumer)
        {
            c.window = c.window.saturating_add(amount);
        }
    }

    pub(in crate::broker::queue::actor) fn replica_release(&mut self, owner: OwnerId) {
        self.replica().release(owner);
    }

    pub(in crate::broker::queue::actor) fn replica_cancel(&mut self, owner: OwnerId, tag: &str) {
        // Answered by the reply to the message, not told.
        drop(self.replica().cancel(owner, tag, None));
    }

    /// Applies the inbox (settlements, credit, cancels, releases).
    pub(in crate::broker::queue::actor) fn replica_drain_inbox(&mut self) -> bool {
        let items = self.inbox.take();
        if items.is_empty() {
            return false;
        }
        let r = self.replica();
        for item in items {
            match item {
                Control::Settle {
                    owner,
                    ids,
                    settlement,
                } => r.settle(owner, &ids, settlement),
                Control::SettleRuns {
                    owner,
                    runs,
                    settlement,
                } => r.settle(
                    owner,
                    &crate::broker::queue::inbox::run_ids(&runs),
                    settlement,
                ),
                Control::Credit { consumer, amount } => {
                    r.remote.credit(consumer, amount);
                    if let Some(c) = r.consumers.iter_mut().find(|c| c.id == consumer) {
                        c.window = c.window.saturating_add(amount);
                    }
                }
                Control::Prefetch { owner, prefetch } => {
                    r.remote.prefetch(owner, prefetch);
                    for c in r.consumers.iter_mut().filter(|c| c.owner == owner) {
                        c.prefetch = prefetch;
                        r.cmds.push_back(Cmd::Consume {
                            consumer: c.id,
                            credit: credit::registered(prefetch, c.boosted),
                            origin: c.origin,
                            first: false,
                        });
                    }
                }
                Control::Cancel { owner, tag, done } => {
                    // A forwarded consumer's session tells `done` itself.
                    if let Some(done) = r.cancel(owner, &tag, done) {
                        let _ = done.send(());
                    }
                }
                Control::Release(owner) => {
                    r.release(owner);
                }
                Control::Unhold { owner, tag, n } => r.unhold(owner, &tag, n),
            }
        }
        true
    }

    /// Sends what the machine checked out to this node's consumers (within their
    /// transport windows) and writes the next command.
    pub(in crate::broker::queue::actor) fn replica_dispatch(&mut self, ctx: &mut Context<Self>) {
        if self.deleted {
            return;
        }
        self.replica().take_checkouts();
        self.replica_flush();
        self.replica_dead_letters(ctx);
        self.replica_republish(ctx);
        self.replica_arm_expiry(ctx);
        self.replica_arm_give_back(ctx);
        self.replica_sync_limits(ctx);
        self.replica_watch_lease(ctx);
        self.replica_pump(ctx);
        self.remote_wait(ctx);
    }

    /// Leadership or the applied queue changed.
    pub(in crate::broker::queue::actor) fn replica_changed(&mut self, ctx: &mut Context<Self>) {
        if self.deleted {
            return;
        }
        self.replica_account();
        let name = self.name.clone();
        let r = self.replica();
        let term = r.group.term();
        // Leading again in a later term, with the change in between unseen (the
        // metrics are coalesced): what this node served is stale.
        let stale = r.leads() && (r.serving || r.taking_over) && term != r.term;
        if r.leads() && !stale {
            if !r.serving && !r.taking_over {
                // Every checkout of an earlier leader (or of this node's own consumers
                // of an earlier term) comes back, marked, before anything is served.
                tracing::info!(queue = %name, group = r.group.id(), "quorum queue: this node leads its group; returning earlier checkouts");
                r.taking_over = true;
                r.term = term;
                // Consumer ids of this term never meet those an earlier term (or an
                // earlier run of this node) registered.
                r.next_consumer = r.next_consumer.max(term << 32);
                r.cmds.push_front(Cmd::Return(None));
            }
        } else if r.serving || r.taking_over || !r.consumers.is_empty() {
            tracing::info!(queue = %name, group = r.group.id(), leader = ?r.group.leader(), "quorum queue: this node no longer leads its group; its consumers move to the leader");
            r.serving = false;
            r.limits_written = 0;
            r.cmds.retain(|c| matches!(c, Cmd::Return(None)));
            r.pending.clear();
            // Its consumers go on at the new leader, through consume sessions, with
            // what their clients hold (taken from `out`, which this empties).
            self.forward_own_consumers();
        }
        self.replica_dispatch(ctx);
    }

    /// Writes what waits as the next entry, unless `MAX_INFLIGHT` are in flight (or
    /// the takeover's `Return` is).
    pub(super) fn replica_pump(&mut self, ctx: &mut Context<Self>) {
        let r = self.replica();
        if r.cmds.is_empty() || r.inflight >= MAX_INFLIGHT {
            return;
        }
        if r.taking_over && r.inflight > 0 {
            // The takeover's `Return` commits first, alone: a command after it is
            // written only once this node is known to serve.
            return;
        }
        if !r.serving && !r.taking_over {
            // Leading, the takeover not begun yet: nothing may commit before its
            // `Return` (which would drop a consumer registered before it).
            return;
        }
        // Everything waiting makes one entry, whatever the number of settlements.
        let cmds: Vec<Cmd> = r.cmds.drain(..).collect();
        let mut commands: Vec<Command<StoredMessage>> = cmds.iter().map(|c| r.command(c)).collect();
        if r.limits.at_least_once {
            // What dies in this entry is kept with the machine's clock as its death
            // time (`x-death`'s): the leader's clock as it writes the entry.
            commands.insert(0, Command::Clock { now_ms: wall_ms() });
        }
        let command = match commands.len() {
            1 => commands.pop().expect("one"),
            _ => Command::Batch(commands),
        };
        r.inflight += 1;
        let write = r.group.write(command);
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(write).map(move |result, act, ctx| {
                act.replica().inflight -= 1;
                if let Err(e) = &result {
                    tracing::warn!(queue = %act.name, error = %e, "quorum queue: the leader's commands were not committed");
                }
                if !act.deleted {
                    for cmd in cmds {
                        act.replica_done(cmd, result.clone());
                    }
                    // A takeover's end (or a term that moved meanwhile) is seen now,
                    // not at the group's next change.
                    act.replica_changed(ctx);
                }
            }),
        );
    }
}

impl QueueActor {
    /// Counts from the group's applied queue (zero on a node that is no member).
    pub(in crate::broker::queue::actor) fn replica_stats(&mut self) -> QueueStats {
        let r = self.replica();
        let (ready, unacked, dead, dead_bytes) = r
            .group
            .read(|q| {
                let n = |l: usize| l as u64;
                (
                    n(q.ready_len()),
                    n(q.checked_out_len()),
                    n(q.dead_len()),
                    q.dead_bytes(),
                )
            })
            .unwrap_or_default();
        QueueStats {
            ready,
            unacked,
            dead_lettering: dead,
            dead_lettering_bytes: dead_bytes,
            consumers: (r.consumers.len() + r.remote.count()) as u32,
            bytes: 0,
            delayed: 0,
            counts: Default::default(),
        }
    }

    pub(in crate::broker::queue::actor) fn replica_consumers(&self) -> Vec<ConsumerInfo> {
        let r = self.replica.as_ref().expect("a replicated queue");
        let remote = self.remote_consumers();
        // With a single active consumer, the one the group's machine serves.
        let active = r.group.read(|q| q.active_consumer()).flatten();
        r.consumers
            .iter()
            .map(|c| ConsumerInfo {
                tag: c.tag.to_string(),
                owner: c.owner,
                prefetch: c.prefetch,
                ack_required: !c.auto_ack,
                active: active.is_none_or(|a| a == r.key(c.id)),
                priority: 0,
            })
            .chain(remote)
            .collect()
    }

    /// The queue was deleted: its consumers are told; answers the ready count.
    pub(in crate::broker::queue::actor) fn replica_delete(&mut self, reason: &str) -> u64 {
        self.remote_delete(reason);
        let name = self.name.clone();
        let r = self.replica();
        for c in r.consumers.drain(..) {
            if let Some(to) = &c.handle.cancelled {
                to.do_send(ConsumerCancelled {
                    consumer_tag: c.tag.clone(),
                    reason: format!("queue '{name}' was deleted ({reason})"),
                });
            }
        }
        r.group.read(|q| q.ready_len() as u64).unwrap_or(0)
    }
}
