//! The registry's side of durability: its virtual host's durable entities as the
//! metadata snapshot keeps them, saved after every change, and recreated at start-up.
//!
//! - [`Registry::persist`]: after a command that changed a durable definition, the
//!   durable part of the definitions ([`VhostDefinitions::durable`]) goes to
//!   [`Durability::save_vhost`]; a command that touched nothing durable saves nothing.
//!   The handler answers only once the save is on disk, so a declare-ok means "will be
//!   there after a restart".
//! - [`Registry::restore`]: in `started`, before the registry handles any request, the
//!   commands of the stored definitions are applied again and their actors started,
//!   each durable queue with the messages recovered for it; the registry waits
//!   (`ctx.wait`) until every binding is in place, so no publish can see a
//!   half-restored virtual host.
//! - [`Registry::attach_storage`]: a durable queue, new or restored, gets its
//!   [`Durable`](crate::broker::queue::durable::Durable) side.
//!
//! [`Durability::save_vhost`]: crate::broker::durability::Durability::save_vhost

use super::Registry;
use crate::broker::exchange::Destination;
use crate::broker::messages::{AddBinding, BindTarget};
use crate::broker::queue::durable::AttachStorage;
use crate::broker::queue::{QueueHandle, QueueSpec};
use crate::definitions::{Command, VhostDefinitions};
use crate::error::{BrokerError, ErrorCode};
use crate::message::FieldTable;
use crate::storage::StorageError;
use actix::prelude::*;
use futures_util::future::join_all;
use std::future::Future;

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
    /// Saves this virtual host's durable definitions if they changed; the future
    /// resolves once they are on disk (at once when nothing durable changed).
    pub(super) fn persist(&self) -> impl Future<Output = Result<(), BrokerError>> + 'static {
        let saved = if self.ctx.durability.is_enabled() {
            self.ctx
                .durability
                .save_vhost(&self.vhost, self.defs.durable())
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

    /// Applies again the commands of the durable definitions found at start-up and
    /// starts their actors (see the module docs). Nothing stored is dropped: an
    /// exchange whose type is missing is kept dormant, a queue whose actor cannot start
    /// stays defined (and its messages in the log), and so do their bindings.
    pub(super) fn restore(&mut self, ctx: &mut Context<Self>) {
        let Some(stored) = self.ctx.durability.take_vhost(&self.vhost) else {
            return;
        };
        let vhost = self.vhost.clone();
        let mut adds = Vec::new();
        for cmd in VhostDefinitions::restore_commands(stored) {
            // Checked before any actor starts: an actor of a definition left out would
            // run undefined, and the next save would drop what it stores.
            if let Err(e) = self.defs.check(&cmd) {
                tracing::error!(vhost = %vhost, error = %e, ?cmd, "a stored definition does not apply: left out");
                continue;
            }
            match &cmd {
                Command::DeclareExchange(spec) => {
                    let name = spec.name.clone();
                    if !self.ctx.knows_exchange_type(&spec.kind) {
                        tracing::warn!(vhost = %vhost, exchange = %name, kind = %spec.kind, "durable exchange kept dormant: its type is not registered in this broker (publishes to it are refused until a restart with the type)");
                        let reason =
                            format!("its type '{}' is not registered in this broker", spec.kind);
                        self.dormant.insert(name, reason);
                    } else {
                        match self.start_exchange(spec) {
                            Ok(h) => {
                                self.apply_exchange_policy(spec, &h);
                                self.directory.insert(&name, h.clone());
                                self.exchanges.insert(name, h);
                            }
                            Err(e) => {
                                tracing::error!(vhost = %vhost, exchange = %name, error = %e, "cannot restore a durable exchange: kept dormant");
                                let reason = format!("it could not be started: {}", e.message());
                                self.dormant.insert(name, reason);
                            }
                        }
                    }
                }
                Command::DeclareQueue { spec, .. } => {
                    match self.start_queue(spec, None, None, ctx) {
                        Ok(handle) => {
                            if let Some(default) = self.exchanges.get("") {
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
                            tracing::error!(vhost = %vhost, queue = %spec.name, error = %e, "cannot start a durable queue: it stays defined, its messages stay in the log")
                        }
                    }
                }
                Command::Bind(b) => {
                    let source = self.exchanges.get(&b.exchange).cloned();
                    let destination = match &b.target {
                        BindTarget::Queue(q) => self
                            .queues
                            .get(q)
                            .map(|e| Destination::Queue(e.handle.clone())),
                        BindTarget::Exchange(x) => self
                            .exchanges
                            .get(x)
                            .map(|h| Destination::Exchange(h.clone())),
                    };
                    // Both ends running: the exchange routes it; otherwise it is kept
                    // defined (and stored) and routes once they run again.
                    if let (Some(source), Some(destination)) = (source, destination) {
                        adds.push((
                            source,
                            AddBinding {
                                destination,
                                routing_key: b.routing_key.clone(),
                                arguments: b.arguments.clone(),
                            },
                        ));
                    }
                }
                _ => {}
            }
            self.defs.apply(cmd).expect("checked above");
        }
        tracing::info!(vhost = %vhost, exchanges = self.exchanges.len(), queues = self.queues.len(), bindings = self.defs.bindings().len(), dormant = self.dormant.len(), "durable entities restored");
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
