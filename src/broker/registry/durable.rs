//! The registry's side of durability: its virtual host's durable entities as the
//! metadata snapshot keeps them, saved after every change, and recreated at start-up.
//!
//! - [`Registry::persist`]: after a change, the registry computes its durable exchanges,
//!   queues and bindings and hands them to [`Durability::save_vhost`]; a change that
//!   touched nothing durable saves nothing. The handler answers only once the save is
//!   on disk, so a declare-ok means "will be there after a restart".
//! - [`Registry::restore`]: in `started`, before the registry handles any request, the
//!   durable entities found at start-up are declared again, each durable queue with the
//!   messages recovered for it; the registry waits (`ctx.wait`) until every binding is
//!   in place, so no publish can see a half-restored virtual host.
//! - [`Registry::attach_storage`]: a durable queue, new or restored, gets its
//!   [`Durable`](crate::broker::queue::durable::Durable) side.
//!
//! [`Durability::save_vhost`]: crate::broker::durability::Durability::save_vhost

use super::{BindingRecord, Dormant, Registry};
use crate::broker::exchange::{Destination, ExchangeSpec};
use crate::broker::messages::{AddBinding, BindTarget, DeclareExchange};
use crate::broker::queue::durable::AttachStorage;
use crate::broker::queue::{QueueHandle, QueueSpec};
use crate::error::{BrokerError, ErrorCode};
use crate::message::FieldTable;
use crate::storage::{
    StorageError, StoredBinding, StoredBindingTarget, StoredExchange, StoredQueue, StoredVhost,
};
use actix::prelude::*;
use futures_util::future::join_all;
use std::future::Future;

/// True for the exchanges every virtual host has from the start (never stored).
fn predeclared(name: &str) -> bool {
    name.is_empty() || name.starts_with("amq.")
}

/// The client-facing error for a snapshot that could not be saved.
fn save_error(vhost: &str, e: &StorageError) -> BrokerError {
    let code = if e.is_disk_full() {
        ErrorCode::ResourceError
    } else {
        ErrorCode::InternalError
    };
    BrokerError::new(
        code,
        format!("cannot save the durable entities of vhost '{vhost}': {e}"),
    )
}

impl Registry {
    /// True when the queue `name` is known and stored (durable, not exclusive).
    pub(super) fn stores_queue(&self, name: &str) -> bool {
        self.queues
            .get(name)
            .is_some_and(|q| self.ctx.durability.stores(&q.spec))
    }

    /// True when the exchange `name` is known and durable.
    fn durable_exchange(&self, name: &str) -> bool {
        self.exchanges.get(name).is_some_and(|x| x.spec().durable)
            || self.dormant.contains_key(name)
    }

    /// True when `b` is stored: its source and its destination are durable. The
    /// handlers save only after changes that may touch what is stored (a durable
    /// binding, a stored queue, any exchange), so that declaring thousands of transient
    /// queues and bindings costs nothing here.
    pub(super) fn binding_is_durable(&self, b: &BindingRecord) -> bool {
        self.durable_exchange(&b.exchange)
            && match &b.target {
                BindTarget::Queue(q) => self.stores_queue(q),
                BindTarget::Exchange(x) => self.durable_exchange(x),
            }
    }

    /// The durable entities of this virtual host, in a stable order.
    pub(super) fn stored_vhost(&self) -> StoredVhost {
        let mut exchanges: Vec<StoredExchange> = self
            .exchanges
            .values()
            .map(|x| x.spec())
            .chain(self.dormant.values().map(|d| &d.spec))
            .filter(|s| s.durable && !predeclared(&s.name))
            .map(|s| StoredExchange {
                name: s.name.clone(),
                kind: s.kind.clone(),
                durable: s.durable,
                auto_delete: s.auto_delete,
                internal: s.internal,
                arguments: s.arguments.clone(),
            })
            .collect();
        exchanges.sort_by(|a, b| a.name.cmp(&b.name));
        let mut queues: Vec<StoredQueue> = self
            .queues
            .values()
            .filter(|q| self.ctx.durability.stores(&q.spec))
            .map(|q| StoredQueue {
                name: q.spec.name.clone(),
                durable: q.spec.durable,
                auto_delete: q.spec.auto_delete,
                arguments: q.spec.arguments.clone(),
            })
            .collect();
        queues.sort_by(|a, b| a.name.cmp(&b.name));
        let bindings = self
            .bindings
            .iter()
            .filter(|b| self.binding_is_durable(b))
            .map(|b| StoredBinding {
                source: b.exchange.clone(),
                destination: match &b.target {
                    BindTarget::Queue(q) => StoredBindingTarget::Queue(q.clone()),
                    BindTarget::Exchange(x) => StoredBindingTarget::Exchange(x.clone()),
                },
                routing_key: b.routing_key.clone(),
                arguments: b.arguments.clone(),
            })
            .collect();
        StoredVhost {
            exchanges,
            queues,
            bindings,
        }
    }

    /// Saves this virtual host's durable entities if they changed; the future resolves
    /// once they are on disk (at once when nothing durable changed).
    pub(super) fn persist(&self) -> impl Future<Output = Result<(), BrokerError>> + 'static {
        let saved = if self.ctx.durability.is_enabled() {
            self.ctx
                .durability
                .save_vhost(&self.vhost, self.stored_vhost())
        } else {
            None
        };
        let vhost = self.vhost.clone();
        async move {
            match saved {
                Some(c) => c.await.map_err(|e| {
                    tracing::error!(vhost = %vhost, error = %e, "cannot save the durable entities");
                    save_error(&vhost, &e)
                }),
                None => Ok(()),
            }
        }
    }

    /// Hands a queue just started its durable side, with the messages recovered for it
    /// (sent first thing: nobody else knows the queue yet).
    pub(super) fn attach_storage(&self, handle: &QueueHandle, spec: &QueueSpec) {
        let d = &self.ctx.durability;
        if !d.stores(spec) {
            return;
        }
        handle.addr().do_send(AttachStorage {
            durable: d.durable_for(&self.vhost, spec),
            recovered: d.take_recovered(&self.vhost, &spec.name),
        });
    }

    /// Declares again the durable entities found at start-up (see the module docs).
    pub(super) fn restore(&mut self, ctx: &mut Context<Self>) {
        let Some(stored) = self.ctx.durability.take_vhost(&self.vhost) else {
            return;
        };
        let vhost = self.vhost.clone();
        for x in stored.exchanges {
            let spec = ExchangeSpec {
                name: x.name,
                kind: x.kind,
                durable: true,
                auto_delete: x.auto_delete,
                internal: x.internal,
                arguments: x.arguments,
            };
            let name = spec.name.clone();
            if !self.ctx.knows_exchange_type(&spec.kind) {
                tracing::warn!(vhost = %vhost, exchange = %name, kind = %spec.kind, "durable exchange kept dormant: its type is not registered in this broker (publishes to it are refused until a restart with the type)");
                let reason = format!("its type '{}' is not registered in this broker", spec.kind);
                self.dormant.insert(name, Dormant { spec, reason });
                continue;
            }
            if let Err(e) = self.declare_exchange(DeclareExchange {
                spec: spec.clone(),
                passive: false,
            }) {
                // Kept in the store all the same: a failure now must not erase it.
                tracing::error!(vhost = %vhost, exchange = %name, error = %e, "cannot restore a durable exchange: kept dormant");
                let reason = format!("it could not be started: {}", e.message());
                self.dormant.insert(name, Dormant { spec, reason });
            }
        }
        let mut adds = Vec::new();
        let default = self.exchanges.get("").cloned();
        for q in stored.queues {
            let spec = QueueSpec {
                name: q.name,
                durable: true,
                exclusive: false,
                auto_delete: q.auto_delete,
                arguments: q.arguments,
            };
            match self.start_queue(&spec, None, None, ctx) {
                Ok(handle) => {
                    if let Some(default) = &default {
                        adds.push((
                            default.clone(),
                            AddBinding {
                                destination: Destination::Queue(handle),
                                routing_key: spec.name.clone(),
                                arguments: FieldTable::new(),
                            },
                        ));
                    }
                }
                Err(e) => {
                    tracing::error!(vhost = %vhost, queue = %spec.name, error = %e, "cannot restore a durable queue; its messages stay in the log")
                }
            }
        }
        for b in stored.bindings {
            let record = BindingRecord {
                exchange: b.source.clone(),
                target: match &b.destination {
                    StoredBindingTarget::Queue(q) => BindTarget::Queue(q.clone()),
                    StoredBindingTarget::Exchange(x) => BindTarget::Exchange(x.clone()),
                },
                routing_key: b.routing_key.clone(),
                arguments: b.arguments.clone(),
            };
            let touches_dormant = self.dormant.contains_key(&b.source)
                || matches!(&b.destination, StoredBindingTarget::Exchange(x) if self.dormant.contains_key(x));
            if touches_dormant {
                // Kept as a record (and so in the store); it routes once the type is back.
                if !self.bindings.contains(&record) {
                    self.bindings.push(record);
                }
                continue;
            }
            let Some(source) = self.exchanges.get(&b.source).cloned() else {
                tracing::error!(vhost = %vhost, exchange = %b.source, "a stored binding's source exchange is missing: binding dropped");
                continue;
            };
            let destination = match &b.destination {
                StoredBindingTarget::Queue(q) => self
                    .queues
                    .get(q)
                    .map(|e| Destination::Queue(e.handle.clone())),
                StoredBindingTarget::Exchange(x) => self
                    .exchanges
                    .get(x)
                    .map(|h| Destination::Exchange(h.clone())),
            };
            let Some(destination) = destination else {
                tracing::error!(vhost = %vhost, destination = %record.target.name(), "a stored binding's destination is missing: binding dropped");
                continue;
            };
            if !self.bindings.contains(&record) {
                self.bindings.push(record);
            }
            adds.push((
                source,
                AddBinding {
                    destination,
                    routing_key: b.routing_key,
                    arguments: b.arguments,
                },
            ));
        }
        tracing::info!(vhost = %vhost, exchanges = self.exchanges.len(), queues = self.queues.len(), bindings = self.bindings.len(), "durable entities restored");
        // Every binding in place before the registry answers anything.
        ctx.wait(
            async move {
                let names: Vec<String> = adds.iter().map(|(x, _)| x.name().to_string()).collect();
                let results = join_all(adds.into_iter().map(|(x, add)| async move {
                    x.add_binding(add).await
                }))
                .await;
                for (name, r) in names.into_iter().zip(results) {
                    if let Err(e) = r {
                        tracing::error!(vhost = %vhost, exchange = %name, error = %e, "cannot restore a binding");
                    }
                }
            }
            .into_actor(self),
        );
    }
}
