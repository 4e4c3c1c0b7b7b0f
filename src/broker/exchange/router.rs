//! The bindings of one exchange and the resolution of a message to its destination
//! queues, through bound exchanges, without duplicates or loops.

use super::kind::{Binding, DestinationId, ExchangeType};
use super::{Destination, ExchangeHandle};
use crate::broker::messages::BindTarget;
use crate::broker::queue::QueueHandle;
use crate::message::{FieldTable, Message};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// An exchange's bindings and routing strategy.
pub struct Router {
    /// The type's routing logic (and its own index of the bindings).
    kind: Box<dyn ExchangeType>,
    /// Every binding, in the order added.
    bindings: Vec<Binding>,
    /// Destination slab, indexed by [`DestinationId`]; `None` marks a free slot.
    destinations: Vec<Option<Destination>>,
    /// Bindings per destination slot, to free a slot when its last binding goes.
    refs: Vec<u32>,
    /// Free destination slots.
    free: Vec<DestinationId>,
    /// Destination slot by target name.
    by_target: HashMap<BindTarget, DestinationId>,
}

/// Buffers reused across the messages of a batch (no allocation, no lock per message).
#[derive(Default)]
pub struct RouteScratch {
    /// The type's output for the router being resolved.
    ids: Vec<DestinationId>,
    /// Bound exchanges still to visit.
    pending: Vec<Arc<RwLock<Router>>>,
}

impl Router {
    /// A router with no bindings.
    pub fn new(kind: Box<dyn ExchangeType>) -> Self {
        Router {
            kind,
            bindings: Vec::new(),
            destinations: Vec::new(),
            refs: Vec::new(),
            free: Vec::new(),
            by_target: HashMap::new(),
        }
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    /// True when there are no bindings.
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// Adds a binding; adding an existing one is a no-op. Errors come from the type's
    /// `validate_binding`.
    pub fn add(
        &mut self,
        destination: Destination,
        routing_key: String,
        arguments: FieldTable,
    ) -> Result<(), String> {
        self.kind.validate_binding(&routing_key, &arguments)?;
        let target = destination.target();
        if let Some(&id) = self.by_target.get(&target) {
            if self.bindings.iter().any(|b| {
                b.destination == id && b.routing_key == routing_key && b.arguments == arguments
            }) {
                return Ok(());
            }
        }
        let id = match self.by_target.get(&target) {
            Some(&id) => {
                // Refresh the handle: a queue deleted and redeclared has a new actor.
                self.destinations[id as usize] = Some(destination);
                id
            }
            None => {
                let id = match self.free.pop() {
                    Some(id) => {
                        self.destinations[id as usize] = Some(destination);
                        id
                    }
                    None => {
                        self.destinations.push(Some(destination));
                        self.refs.push(0);
                        (self.destinations.len() - 1) as DestinationId
                    }
                };
                self.by_target.insert(target, id);
                id
            }
        };
        self.refs[id as usize] += 1;
        let binding = Binding {
            destination: id,
            routing_key,
            arguments,
        };
        self.kind.bind(&binding);
        self.bindings.push(binding);
        Ok(())
    }

    /// Removes a binding; answers whether it existed.
    pub fn remove(
        &mut self,
        target: &BindTarget,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> bool {
        let Some(&id) = self.by_target.get(target) else {
            return false;
        };
        let Some(pos) = self.bindings.iter().position(|b| {
            b.destination == id && b.routing_key == routing_key && &b.arguments == arguments
        }) else {
            return false;
        };
        let binding = self.bindings.remove(pos);
        self.kind.unbind(&binding);
        self.refs[id as usize] -= 1;
        if self.refs[id as usize] == 0 {
            self.destinations[id as usize] = None;
            self.by_target.remove(target);
            self.free.push(id);
        }
        true
    }

    /// Pushes the queues `message` reaches from this exchange (following bindings to
    /// other exchanges, skipping any already in `hops`) onto `queues`, and custom
    /// exchange actors reached onto `actors`. Each queue is pushed once.
    ///
    /// Bound exchanges are not locked from here: their routers are pushed onto `pending`
    /// and [`Router::resolve_all`] visits them one at a time after this lock is released
    /// by its caller's loop, so no thread ever waits for a router lock while holding one
    /// other than its own exchange's (nested read locks with a writer queued could
    /// otherwise deadlock across an exchange-to-exchange cycle).
    pub fn resolve(
        &self,
        message: &Message,
        hops: &mut Vec<Arc<str>>,
        queues: &mut Vec<QueueHandle>,
        actors: &mut Vec<ExchangeHandle>,
        scratch: &mut RouteScratch,
    ) {
        let ids = &mut scratch.ids;
        ids.clear();
        self.kind.route(message, &self.bindings, ids);
        if ids.len() > 1 {
            ids.sort_unstable();
            ids.dedup();
        }
        for &id in ids.iter() {
            match self.destinations.get(id as usize) {
                Some(Some(Destination::Queue(q))) if !queues.iter().any(|x| x.same(q)) => {
                    queues.push(q.clone());
                }
                Some(Some(Destination::Exchange(x))) => {
                    if hops.iter().any(|h| **h == *x.name()) {
                        continue;
                    }
                    hops.push(x.name_arc().clone());
                    match &x.inner.router {
                        Some(r) => scratch.pending.push(r.clone()),
                        None => actors.push(x.clone()),
                    }
                }
                _ => {}
            }
        }
    }

    /// Resolves `message` from this router (already locked by the caller) and then
    /// through every bound exchange, each locked on its own and released before the
    /// next.
    pub fn resolve_all(
        &self,
        message: &Message,
        hops: &mut Vec<Arc<str>>,
        queues: &mut Vec<QueueHandle>,
        actors: &mut Vec<ExchangeHandle>,
        scratch: &mut RouteScratch,
    ) {
        scratch.pending.clear();
        self.resolve(message, hops, queues, actors, scratch);
        while let Some(next) = scratch.pending.pop() {
            let r = next.read().expect("router lock poisoned");
            r.resolve(message, hops, queues, actors, scratch);
        }
    }
}
