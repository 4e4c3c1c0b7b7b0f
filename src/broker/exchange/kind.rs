//! The [`ExchangeType`] trait: how an exchange chooses destinations, and the registry of
//! types by name.
//!
//! Every exchange actor owns one boxed `ExchangeType`, made by the factory registered
//! under its type name. The built-in types (`direct`, `fanout`, `topic`, `headers`) use
//! exactly this trait; a user type registered with
//! [`ExchangeTypes::register`](crate::broker::exchange::ExchangeTypes::register) is
//! indistinguishable from them. An unknown type name is refused when the exchange is
//! declared.

use crate::message::{FieldTable, Message};
use std::collections::HashMap;
use std::sync::Arc;

/// Identifies one destination (a queue or another exchange) bound to an exchange.
///
/// An exchange numbers its destinations itself; several bindings (with different keys or
/// arguments) may share one destination, and a message routed to it twice is delivered
/// once.
pub type DestinationId = u32;

/// One binding as an exchange type sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// Where matching messages go.
    pub destination: DestinationId,
    /// The binding key (for topic exchanges, a pattern).
    pub routing_key: String,
    /// The binding arguments (for headers exchanges, the headers to match).
    pub arguments: FieldTable,
}

/// A routing strategy. One instance lives inside each exchange of this type, so it may
/// keep its own index of the bindings (a trie, a hash ring) through the `bind` / `unbind`
/// hooks.
///
/// `bind`, `unbind` and `validate_binding` are called on the exchange actor's thread;
/// `route` may also be called concurrently from other threads, by exchanges bound to this
/// one resolving through it (hence `Sync`).
///
/// A panic in any method is caught and fails this exchange only (see
/// [`Router`](super::Router)): a panic in `validate`, `validate_binding` or `route` fails
/// that declare, bind or message with `INTERNAL_ERROR`; a panic in `bind` or `unbind`,
/// after which the type's state cannot be trusted, puts the exchange out of order until
/// it is deleted and declared again.
pub trait ExchangeType: Send + Sync + 'static {
    /// Called once when the exchange is declared, before it exists, with the declare
    /// arguments. An `Err` refuses the declare with `PRECONDITION_FAILED` and this text.
    fn validate(&self, arguments: &FieldTable) -> Result<(), String> {
        let _ = arguments;
        Ok(())
    }

    /// Called before a binding is added. An `Err` refuses the bind with
    /// `PRECONDITION_FAILED` and this text; nothing changes.
    fn validate_binding(&self, routing_key: &str, arguments: &FieldTable) -> Result<(), String> {
        let _ = (routing_key, arguments);
        Ok(())
    }

    /// Called after a binding was added (and `validate_binding` accepted it).
    fn bind(&mut self, binding: &Binding) {
        let _ = binding;
    }

    /// Called after a binding was removed, by an unbind or because its destination was
    /// deleted.
    fn unbind(&mut self, binding: &Binding) {
        let _ = binding;
    }

    /// Called for every message published to the exchange: push the destinations the
    /// message goes to onto `out`. `bindings` holds every current binding. Duplicates in
    /// `out` are allowed (they are removed afterwards); pushing nothing makes the message
    /// unroutable.
    fn route(&self, message: &Message, bindings: &[Binding], out: &mut Vec<DestinationId>);
}

/// Makes a fresh [`ExchangeType`] instance for a newly declared exchange.
pub type ExchangeTypeFactory = Arc<dyn Fn() -> Box<dyn ExchangeType> + Send + Sync>;

/// The exchange types known to a broker, by name.
///
/// ```
/// use actormq::broker::exchange::{ExchangeTypes, ExchangeType, Binding, DestinationId};
/// use actormq::Message;
///
/// /// Routes every message to the first bound destination only.
/// struct First;
/// impl ExchangeType for First {
///     fn route(&self, _m: &Message, bindings: &[Binding], out: &mut Vec<DestinationId>) {
///         out.extend(bindings.first().map(|b| b.destination));
///     }
/// }
///
/// let mut types = ExchangeTypes::with_builtins();
/// types.register("x-first", || Box::new(First));
/// assert!(types.create("x-first").is_some());
/// assert!(types.create("topic").is_some());
/// assert!(types.create("x-unknown").is_none());
/// ```
#[derive(Clone)]
pub struct ExchangeTypes {
    factories: HashMap<String, ExchangeTypeFactory>,
}

impl ExchangeTypes {
    /// The built-in types: `direct`, `fanout`, `topic`, `headers`, and `x-super-stream`
    /// (hash routing over a super stream's partitions).
    pub fn with_builtins() -> Self {
        let mut types = ExchangeTypes {
            factories: HashMap::new(),
        };
        types.register("direct", || {
            Box::new(super::direct::DirectExchange::default())
        });
        types.register("fanout", || Box::new(super::fanout::FanoutExchange));
        types.register("topic", || Box::new(super::topic::TopicExchange::default()));
        types.register("headers", || Box::new(super::headers::HeadersExchange));
        types.register(crate::broker::superstream::EXCHANGE_TYPE, || {
            Box::new(crate::broker::superstream::SuperStreamExchange::default())
        });
        types
    }

    /// Registers (or replaces) the type `name`.
    pub fn register<F>(&mut self, name: &str, factory: F)
    where
        F: Fn() -> Box<dyn ExchangeType> + Send + Sync + 'static,
    {
        self.factories.insert(name.to_string(), Arc::new(factory));
    }

    /// A new instance of the type `name`, or `None` if no such type is registered.
    pub fn create(&self, name: &str) -> Option<Box<dyn ExchangeType>> {
        self.factories.get(name).map(|f| f())
    }

    /// True when `name` is a registered type.
    pub fn contains(&self, name: &str) -> bool {
        self.factories.contains_key(name)
    }

    /// The registered type names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.factories.keys().cloned().collect();
        v.sort();
        v
    }
}

impl Default for ExchangeTypes {
    fn default() -> Self {
        Self::with_builtins()
    }
}
