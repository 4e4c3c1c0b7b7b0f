//! The registry's message handlers: each operation of [`super::Registry`], answered
//! at once or, when it must await an exchange or queue actor, as an atomic response.

use super::*;

impl Registry {
    /// Applies a `DeclareExchange` here at once: on a single node, or once the cluster has
    /// committed it (the public handler is in `replicated.rs`).
    pub(super) fn declare_exchange_now(
        &mut self,
        msg: DeclareExchange,
        _ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<(), BrokerError>> {
        let result = self.declare_exchange(msg);
        // A new durable exchange is answered once it is saved.
        let saved = matches!(result, Ok(true)).then(|| self.persist());
        Box::pin(async move {
            result?;
            match saved {
                Some(saved) => saved.await,
                None => Ok(()),
            }
        })
    }
}

impl Registry {
    /// Applies a `DeleteExchange` here at once: on a single node, or once the cluster has
    /// committed it (the public handler is in `replicated.rs`).
    pub(super) fn delete_exchange_now(
        &mut self,
        msg: DeleteExchange,
        _ctx: &mut Context<Self>,
    ) -> AtomicResponse<Self, Result<(), BrokerError>> {
        // Deleting an exchange that does not exist succeeds, as in RabbitMQ.
        let (removals, durable) = match self.apply(Command::DeleteExchange {
            name: msg.name,
            if_unused: msg.if_unused,
        }) {
            Ok(done) => done,
            Err(e) => return AtomicResponse::new(Box::pin(fut::ready(Err(e)))),
        };
        let saved = durable.then(|| self.persist());
        AtomicResponse::new(Box::pin(
            removed_then_saved(removals, saved).into_actor(self),
        ))
    }
}

impl Registry {
    /// Applies a `DeclareQueue` here at once: on a single node, or once the cluster has
    /// committed it (the public handler is in `replicated.rs`).
    pub(super) fn declare_queue_now(
        &mut self,
        msg: DeclareQueue,
        ctx: &mut Context<Self>,
    ) -> AtomicResponse<Self, Result<QueueDeclared, BrokerError>> {
        type Declared = (QueueHandle, Option<(ExchangeHandle, AddBinding)>, bool);
        let (stale, stale_durable) = self.forget_if_stopped(&msg.spec.name);
        let result = (|| -> Result<Declared, BrokerError> {
            let mut spec = msg.spec;
            if let Some(existing) = self.queues.get(&spec.name) {
                let existing = existing.clone();
                self.queue_for(&spec.name, msg.owner)?;
                if !msg.passive && spec.exclusive != existing.owner.is_some() {
                    // RabbitMQ checks exclusivity before the other properties, strictly:
                    // 405, not 406 (aiormq's test_exclusive_queue_locked expects it).
                    return Err(self.locked(&spec.name));
                }
                if !msg.passive {
                    // Equivalent to the definition, or PRECONDITION_FAILED naming the
                    // difference.
                    self.defs.check(&Command::DeclareQueue {
                        spec,
                        server_named: false,
                    })?;
                    // A redeclare renews an x-expires lease (a passive one only looks).
                    // do_send: nothing to wait for.
                    existing.handle.addr().do_send(Touch);
                }
                return Ok((existing.handle, None, false));
            }
            if msg.passive {
                return Err(self.not_found("queue", &spec.name));
            }
            crate::broker::queue_args::check_queue_type(&self.vhost, &spec)?;
            // A server-named queue committed by the cluster arrives named.
            let server_named = spec.name.is_empty()
                || (msg.owner == crate::cluster::LOG_OWNER && spec.name.starts_with("amq.gen-"));
            if spec.name.is_empty() {
                spec.name = format!("amq.gen-{}", self.ctx.unique_suffix());
            }
            let cmd = Command::DeclareQueue {
                spec: spec.clone(),
                server_named,
            };
            self.defs.check(&cmd)?;
            // A declare the cluster committed was admitted where it was proposed.
            if msg.owner != crate::cluster::LOG_OWNER {
                let queues = self.defs.queues().count();
                self.ctx.admit_queue(&self.vhost, queues, &spec.name)?;
            }
            // Exclusive queues are never stored: durable or not, they go with their owner.
            if spec.durable && !spec.exclusive {
                self.ctx.admit_durable("queue", &spec.name)?;
            }
            // Every queue is bound to the default exchange by its name.
            let default = self
                .exchanges
                .get("")
                .cloned()
                .ok_or_else(|| self.closing_error())?;
            let owner = spec.exclusive.then_some(msg.owner);
            let handle = self.start_queue(&spec, owner, msg.placement.as_ref(), ctx)?;
            let (_, durable) = self.apply(cmd).expect("checked above");
            tracing::debug!(vhost = %self.vhost, queue = %spec.name, "queue declared");
            if self.ctx.cluster.is_none() && crate::broker::queue::quorum::is_quorum(&spec) {
                if let Some(why) =
                    crate::broker::queue::quorum::dead_letter_fallback(&spec.arguments, false)
                {
                    tracing::warn!(vhost = %self.vhost, queue = %spec.name, "quorum queue declared: {why}");
                }
            }
            let add = AddBinding {
                destination: Destination::Queue(handle.clone()),
                routing_key: spec.name.clone(),
                arguments: FieldTable::new(),
            };
            // Awaited atomically below: the binding is in place before the declare is
            // answered.
            Ok((handle, Some((default, add)), durable))
        })();
        let vhost = self.vhost.clone();
        let asker = msg.owner;
        // A new durable queue (or a stale one forgotten) is answered once saved.
        let changed = stale_durable || matches!(&result, Ok((_, _, true)));
        let saved = changed.then(|| self.persist());
        AtomicResponse::new(Box::pin(
            async move {
                apply_removals(stale).await;
                let (handle, default_bind, _) = result?;
                if let Some((default, add)) = default_bind {
                    default.add_binding(add).await?;
                }
                if let Some(saved) = saved {
                    saved.await?;
                }
                // Closed: the queue deleted itself between the registry's look and now.
                let local = handle
                    .addr()
                    .send(GetDeclareCounts)
                    .await
                    .map_err(|_| BrokerError::not_found("queue", handle.name(), &vhost))??;
                // A stand-in's counts are its home's, asked by the declare's caller
                // (not here: the registry would wait on another node). The log's own
                // declares (applied on every node) answer no client: none asked.
                let home = local.home.filter(|_| asker != crate::cluster::LOG_OWNER);
                Ok(QueueDeclared {
                    name: handle.name().to_string(),
                    messages: local.counts.messages,
                    consumers: local.counts.consumers,
                    home: crate::broker::messages::AskHome(home),
                })
            }
            .into_actor(self),
        ))
    }
}

impl Registry {
    /// Applies a `DeleteQueue` here at once: on a single node, or once the cluster has
    /// committed it (the public handler is in `replicated.rs`).
    pub(super) fn delete_queue_now(
        &mut self,
        msg: DeleteQueue,
        _ctx: &mut Context<Self>,
    ) -> AtomicResponse<Self, Result<u64, BrokerError>> {
        let handle = match self.queue_for(&msg.name, msg.owner) {
            Ok(q) => q.handle.clone(),
            // Deleting a queue that does not exist succeeds, as in RabbitMQ. One that is
            // defined but has no actor (it could not start after a restart) loses its
            // definition: its messages left in the log are dropped at the next start.
            Err(e) if e.code() == ErrorCode::NotFound => {
                let (removals, durable) = match self.queues.contains_key(&msg.name) {
                    true => (Vec::new(), false),
                    false => self.remove_queue(&msg.name),
                };
                let saved = durable.then(|| self.persist());
                return AtomicResponse::new(Box::pin(
                    async move { removed_then_saved(removals, saved).await.map(|()| 0) }
                        .into_actor(self),
                ));
            }
            Err(e) => return AtomicResponse::new(Box::pin(fut::ready(Err(e)))),
        };
        let name = msg.name.clone();
        AtomicResponse::new(Box::pin(
            async move {
                handle
                    .addr()
                    .send(DeleteSelf {
                        if_unused: msg.if_unused,
                        if_empty: msg.if_empty,
                        ready_only: msg.ready_only,
                    })
                    .await?
            }
            .into_actor(self)
            .then(move |res, act: &mut Registry, _ctx| {
                let (removals, durable) = if res.is_ok() {
                    act.remove_queue(&name)
                } else {
                    (Vec::new(), false)
                };
                let saved = durable.then(|| act.persist());
                async move {
                    removed_then_saved(removals, saved).await?;
                    res
                }
                .into_actor(act)
            }),
        ))
    }
}

impl Handler<PurgeQueue> for Registry {
    type Result = ResponseFuture<Result<u64, BrokerError>>;

    fn handle(&mut self, msg: PurgeQueue, _ctx: &mut Self::Context) -> Self::Result {
        let handle = self
            .queue_for(&msg.name, msg.owner)
            .map(|q| q.handle.clone());
        Box::pin(async move { handle?.addr().send(Purge).await? })
    }
}

impl Registry {
    /// Applies a `Bind` here at once: on a single node, or once the cluster has
    /// committed it (the public handler is in `replicated.rs`).
    pub(super) fn bind_now(
        &mut self,
        msg: Bind,
        _ctx: &mut Context<Self>,
    ) -> AtomicResponse<Self, Result<(), BrokerError>> {
        let record = BindingRecord::from_bind(&msg);
        let cmd = Command::Bind(record);
        let prepared = (|| -> Result<(ExchangeHandle, Destination), BrokerError> {
            self.defs.check(&cmd)?;
            // Defined; now the running actors (a dormant end is refused, saying why).
            let source = self.exchange(&msg.exchange)?.clone();
            let destination = match &msg.target {
                BindTarget::Queue(q) => {
                    Destination::Queue(self.queue_for(q, msg.owner)?.handle.clone())
                }
                BindTarget::Exchange(x) => Destination::Exchange(self.exchange(x)?.clone()),
            };
            Ok((source, destination))
        })();
        AtomicResponse::new(Box::pin(
            async move {
                let (source, destination) = prepared?;
                source
                    .add_binding(AddBinding {
                        destination,
                        routing_key: msg.routing_key,
                        arguments: msg.arguments,
                    })
                    .await
            }
            .into_actor(self)
            .then(move |res, act: &mut Registry, _ctx| {
                // The exchange took it: now it is defined (atomic: nothing changed since
                // the check).
                let saved = match res {
                    Ok(()) => act
                        .apply(cmd)
                        .map(|(_, durable)| durable.then(|| act.persist())),
                    Err(e) => Err(e),
                };
                async move {
                    match saved? {
                        Some(saved) => saved.await,
                        None => Ok(()),
                    }
                }
                .into_actor(act)
            }),
        ))
    }
}

impl Registry {
    /// Applies a `Unbind` here at once: on a single node, or once the cluster has
    /// committed it (the public handler is in `replicated.rs`).
    pub(super) fn unbind_now(
        &mut self,
        msg: Unbind,
        _ctx: &mut Context<Self>,
    ) -> AtomicResponse<Self, Result<(), BrokerError>> {
        let b = msg.binding;
        let cmd = Command::Unbind(BindingRecord::from_bind(&b));
        let checked = (|| -> Result<(), BrokerError> {
            self.defs.check(&cmd)?;
            if let BindTarget::Queue(q) = &b.target {
                // An exclusive queue of another connection is RESOURCE_LOCKED.
                self.queue_for(q, b.owner)?;
            }
            Ok(())
        })();
        let applied = checked.and_then(|()| self.apply(cmd));
        let (removals, durable) = match applied {
            Ok(done) => done,
            Err(e) => return AtomicResponse::new(Box::pin(fut::ready(Err(e)))),
        };
        let saved = durable.then(|| self.persist());
        AtomicResponse::new(Box::pin(
            removed_then_saved(removals, saved).into_actor(self),
        ))
    }
}

impl Handler<LookupExchange> for Registry {
    type Result = Result<ExchangeHandle, BrokerError>;

    fn handle(&mut self, msg: LookupExchange, _ctx: &mut Self::Context) -> Self::Result {
        self.exchange(&msg.name).cloned()
    }
}

impl Handler<LookupQueue> for Registry {
    type Result = Result<QueueHandle, BrokerError>;

    fn handle(&mut self, msg: LookupQueue, _ctx: &mut Self::Context) -> Self::Result {
        self.queue_for(&msg.name, msg.owner)
            .map(|q| q.handle.clone())
    }
}

impl Handler<OwnerGone> for Registry {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: OwnerGone, _ctx: &mut Self::Context) -> Self::Result {
        let owned: Vec<(String, QueueHandle)> = self
            .queues
            .iter()
            .filter(|(_, q)| q.owner == Some(msg.0))
            .map(|(n, q)| (n.clone(), q.handle.clone()))
            .collect();
        let mut removals = Vec::new();
        let mut durable = false;
        for (name, handle) in &owned {
            handle.addr().do_send(DeleteSelf {
                if_unused: false,
                if_empty: false,
                ready_only: false,
            });
            let (r, d) = self.remove_queue(name);
            removals.extend(r);
            durable |= d;
        }
        // Exclusive queues are never stored, but an auto-delete exchange may go with them.
        let saved = durable.then(|| self.persist());
        // A failed save is logged by persist(); these handlers answer nothing.
        AtomicResponse::new(Box::pin(
            async move {
                let _ = removed_then_saved(removals, saved).await;
            }
            .into_actor(self),
        ))
    }
}

impl Handler<QueueGone> for Registry {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: QueueGone, _ctx: &mut Self::Context) -> Self::Result {
        let current = self
            .queues
            .get(&*msg.name)
            .is_some_and(|q| q.incarnation == msg.incarnation);
        let (removals, durable) = if current {
            // In a cluster the other nodes forget it too (auto-delete, x-expires).
            self.replicate_gone(&msg.name);
            self.remove_queue(&msg.name)
        } else {
            (Vec::new(), false)
        };
        let saved = durable.then(|| self.persist());
        // A failed save is logged by persist(); these handlers answer nothing.
        AtomicResponse::new(Box::pin(
            async move {
                let _ = removed_then_saved(removals, saved).await;
            }
            .into_actor(self),
        ))
    }
}

impl Handler<ListQueues> for Registry {
    type Result = MessageResult<ListQueues>;

    fn handle(&mut self, _msg: ListQueues, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.defs
                .queues()
                .map(|q| (q.name.clone(), q.clone()))
                .collect(),
        )
    }
}

impl Handler<ListQueueHandles> for Registry {
    type Result = MessageResult<ListQueueHandles>;

    fn handle(&mut self, _msg: ListQueueHandles, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.defs
                .queues()
                .filter_map(|spec| {
                    let q = self.queues.get(&spec.name)?;
                    Some((spec.clone(), q.handle.clone()))
                })
                .collect(),
        )
    }
}

impl Handler<ListExchangeHandles> for Registry {
    type Result = MessageResult<ListExchangeHandles>;

    fn handle(&mut self, _msg: ListExchangeHandles, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.exchanges.values().cloned().collect())
    }
}

impl Handler<ListExchanges> for Registry {
    type Result = MessageResult<ListExchanges>;

    fn handle(&mut self, _msg: ListExchanges, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.defs.exchanges().cloned().collect())
    }
}

impl Handler<ListBindings> for Registry {
    type Result = MessageResult<ListBindings>;

    fn handle(&mut self, _msg: ListBindings, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.defs.bindings().to_vec())
    }
}

impl Handler<DeleteAll> for Registry {
    type Result = AtomicResponse<Self, ()>;

    /// Atomic: no declare or bind is handled while the queues delete themselves, and
    /// the registry stops right after (later requests find its mailbox closed).
    fn handle(&mut self, _msg: DeleteAll, _ctx: &mut Self::Context) -> Self::Result {
        self.closing = true;
        for x in self.exchanges.values() {
            x.stop();
        }
        let deleted: Vec<_> = self
            .queues
            .values()
            .map(|q| {
                q.handle.addr().send(DeleteSelf {
                    if_unused: false,
                    if_empty: false,
                    ready_only: false,
                })
            })
            .collect();
        self.queues.clear();
        self.exchanges.clear();
        self.directory.clear();
        AtomicResponse::new(Box::pin(
            actix::fut::wrap_future::<_, Self>(futures_util::future::join_all(deleted))
                .map(|_, _act, ctx| ctx.stop()),
        ))
    }
}

impl Handler<StopAll> for Registry {
    type Result = AtomicResponse<Self, ()>;

    /// Stops the virtual host's actors and answers once every queue has written what it
    /// holds (its last acks and publishes are appended before it answers), so that the
    /// broker closes its store only after them.
    fn handle(&mut self, _msg: StopAll, _ctx: &mut Self::Context) -> Self::Result {
        self.closing = true;
        for x in self.exchanges.values() {
            x.stop();
        }
        // send(), not do_send(): the answer is the queue's "written".
        let stopped: Vec<_> = self
            .queues
            .values()
            .map(|q| q.handle.addr().send(crate::broker::queue::actor::StopQueue))
            .collect();
        self.queues.clear();
        self.exchanges.clear();
        self.directory.clear();
        AtomicResponse::new(Box::pin(
            actix::fut::wrap_future::<_, Self>(futures_util::future::join_all(stopped))
                .map(|_, _act, ctx| ctx.stop()),
        ))
    }
}
