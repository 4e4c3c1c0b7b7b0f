//! The bindings of one exchange and the resolution of a message to its destination
//! queues, through bound exchanges, without duplicates or loops.
//!
//! Every call into the exchange's [`ExchangeType`] goes through `catch_unwind`: a user
//! type that panics must fail its own exchange only. The router lock is shared with the
//! exchanges bound to this one, so a panic unwinding through it would poison it for all
//! of them (and a half-updated type would go on routing). Instead:
//! * a panic in `validate_binding` or `route` (`&self`: the type's state is untouched)
//!   fails that bind or that message with `INTERNAL_ERROR` naming the exchange and type;
//! * a panic in `bind` or `unbind` (`&mut self`: the state may be half-updated) marks the
//!   exchange broken: from then on its type is never called again, every message routed
//!   through it is refused with `INTERNAL_ERROR`, binds are refused, unbinds only update
//!   the bookkeeping. Deleting and redeclaring the exchange makes a fresh type instance.

use super::kind::{Binding, DestinationId, ExchangeType};
use super::{Destination, ExchangeHandle};
use crate::broker::messages::BindTarget;
use crate::broker::queue::QueueHandle;
use crate::error::BrokerError;
use crate::message::{FieldTable, Message};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, RwLock};

/// An exchange's bindings and routing strategy.
pub struct Router {
    /// The type's routing logic (and its own index of the bindings).
    kind: Box<dyn ExchangeType>,
    /// The exchange's name, for errors and logs.
    exchange: Arc<str>,
    /// The exchange's type name, for errors and logs.
    type_name: Arc<str>,
    /// Set once the type panicked in `bind` or `unbind`: why the exchange is broken.
    broken: Option<BrokerError>,
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
    pub(super) pending: Vec<Arc<RwLock<Router>>>,
}

impl Router {
    /// A router with no bindings for the exchange `exchange` of type `type_name`.
    pub fn new(kind: Box<dyn ExchangeType>, exchange: &str, type_name: &str) -> Self {
        Router {
            kind,
            exchange: Arc::from(exchange),
            type_name: Arc::from(type_name),
            broken: None,
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

    /// The error for a panic of the type in `what`, logged once here.
    fn panicked(&self, what: &str, payload: Box<dyn std::any::Any + Send>) -> BrokerError {
        let why = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string panic payload".into());
        tracing::error!(exchange = %self.exchange, kind = %self.type_name, call = what, panic = %why, "exchange type panicked");
        BrokerError::internal(format!(
            "exchange '{}' of type '{}' failed: its {what} panicked: {why}",
            self.exchange, self.type_name
        ))
    }

    /// Marks the exchange broken after a panic of its type in `what` (see the module doc).
    fn break_down(&mut self, what: &str, payload: Box<dyn std::any::Any + Send>) -> BrokerError {
        let e = self.panicked(what, payload);
        self.broken = Some(BrokerError::internal(format!(
            "exchange '{}' of type '{}' is out of order since its {what} panicked; delete \
             and redeclare it",
            self.exchange, self.type_name
        )));
        e
    }

    /// Why the exchange is out of order, if its type panicked in `bind` or `unbind`.
    pub fn broken(&self) -> Option<&BrokerError> {
        self.broken.as_ref()
    }

    /// Adds a binding; adding an existing one is a no-op. Refused with
    /// `PRECONDITION_FAILED` when the type's `validate_binding` says no, with
    /// `INTERNAL_ERROR` when the type panicked or the exchange is broken.
    pub fn add(
        &mut self,
        destination: Destination,
        routing_key: String,
        arguments: FieldTable,
    ) -> Result<(), BrokerError> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        let kind = &self.kind;
        match catch_unwind(AssertUnwindSafe(|| {
            kind.validate_binding(&routing_key, &arguments)
        })) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(BrokerError::precondition(format!(
                    "binding refused by exchange '{}': {e}",
                    self.exchange
                )))
            }
            Err(payload) => return Err(self.panicked("validate_binding", payload)),
        }
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
        let kind = &mut self.kind;
        let bound = catch_unwind(AssertUnwindSafe(|| kind.bind(&binding)));
        // Kept even when bind panicked: the bookkeeping stays consistent, so that the
        // binding can be removed like any other.
        self.bindings.push(binding);
        bound.map_err(|payload| self.break_down("bind", payload))
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
        if self.broken.is_none() {
            let kind = &mut self.kind;
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| kind.unbind(&binding))) {
                self.break_down("unbind", payload);
            }
        }
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
    ///
    /// An error (the type panicked, or the exchange is broken) means the message cannot
    /// be routed as it should: the caller refuses it rather than deliver it to part of
    /// its destinations.
    pub fn resolve(
        &self,
        message: &Message,
        hops: &mut Vec<Arc<str>>,
        queues: &mut Vec<QueueHandle>,
        actors: &mut Vec<ExchangeHandle>,
        scratch: &mut RouteScratch,
    ) -> Result<(), BrokerError> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        let ids = &mut scratch.ids;
        ids.clear();
        let (kind, bindings) = (&self.kind, &self.bindings);
        catch_unwind(AssertUnwindSafe(|| kind.route(message, bindings, ids)))
            .map_err(|payload| self.panicked("route", payload))?;
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
                    follow(x, hops, actors, &mut scratch.pending);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Resolves `message` from this router (already locked by the caller) and then
    /// through every bound exchange, each locked on its own and released before the
    /// next. Stops at the first error (see [`Router::resolve`]).
    pub fn resolve_all(
        &self,
        message: &Message,
        hops: &mut Vec<Arc<str>>,
        queues: &mut Vec<QueueHandle>,
        actors: &mut Vec<ExchangeHandle>,
        scratch: &mut RouteScratch,
    ) -> Result<(), BrokerError> {
        scratch.pending.clear();
        self.resolve(message, hops, queues, actors, scratch)?;
        resolve_pending(message, hops, queues, actors, scratch)
    }
}

/// Follows a binding to the exchange `x`, unless the message already passed through it
/// (`hops`): a built-in exchange's router joins `pending`, to be resolved by
/// [`resolve_pending`]; a custom exchange actor joins `actors`, to be forwarded the
/// message.
pub(super) fn follow(
    x: &ExchangeHandle,
    hops: &mut Vec<Arc<str>>,
    actors: &mut Vec<ExchangeHandle>,
    pending: &mut Vec<Arc<RwLock<Router>>>,
) {
    if hops.iter().any(|h| **h == *x.name()) {
        return;
    }
    hops.push(x.name_arc().clone());
    match &x.inner.router {
        Some(r) => pending.push(r.clone()),
        None => actors.push(x.clone()),
    }
}

/// Resolves `message` through the routers waiting in `scratch.pending` (and those they
/// lead to), each locked on its own and released before the next.
pub(super) fn resolve_pending(
    message: &Message,
    hops: &mut Vec<Arc<str>>,
    queues: &mut Vec<QueueHandle>,
    actors: &mut Vec<ExchangeHandle>,
    scratch: &mut RouteScratch,
) -> Result<(), BrokerError> {
    while let Some(next) = scratch.pending.pop() {
        // Every call into a type is caught, so the lock is never poisoned by one; the
        // router's own code does not panic while holding it.
        let r = next.read().expect("router lock poisoned");
        if let Err(e) = r.resolve(message, hops, queues, actors, scratch) {
            scratch.pending.clear();
            return Err(e);
        }
    }
    Ok(())
}
