//! The `direct` exchange: a message goes to every destination bound with exactly its
//! routing key. Keeps a hash index so routing is one lookup, whatever the binding count.

use super::kind::{Binding, DestinationId, ExchangeType};
use crate::message::Message;
use std::collections::HashMap;

/// Routes by exact routing-key match.
#[derive(Default)]
pub struct DirectExchange {
    /// Routing key → destinations bound with it (a destination appears once per binding).
    index: HashMap<String, Vec<DestinationId>>,
}

impl ExchangeType for DirectExchange {
    fn bind(&mut self, binding: &Binding) {
        self.index
            .entry(binding.routing_key.clone())
            .or_default()
            .push(binding.destination);
    }

    fn unbind(&mut self, binding: &Binding) {
        if let Some(dests) = self.index.get_mut(&binding.routing_key) {
            if let Some(pos) = dests.iter().position(|d| *d == binding.destination) {
                dests.swap_remove(pos);
            }
            if dests.is_empty() {
                self.index.remove(&binding.routing_key);
            }
        }
    }

    fn route(&self, message: &Message, _bindings: &[Binding], out: &mut Vec<DestinationId>) {
        if let Some(dests) = self.index.get(message.routing_key.as_str()) {
            out.extend_from_slice(dests);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::FieldTable;

    fn b(dest: DestinationId, key: &str) -> Binding {
        Binding {
            destination: dest,
            routing_key: key.into(),
            arguments: FieldTable::new(),
        }
    }

    #[test]
    fn routes_only_the_exact_key() {
        let mut x = DirectExchange::default();
        x.bind(&b(1, "a"));
        x.bind(&b(2, "b"));
        let mut out = vec![];
        x.route(&Message::new("x", "a", ""), &[], &mut out);
        assert_eq!(out, vec![1]);
        out.clear();
        x.route(&Message::new("x", "c", ""), &[], &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn unbind_removes_one_binding_only() {
        let mut x = DirectExchange::default();
        x.bind(&b(1, "a"));
        x.bind(&b(2, "a"));
        x.unbind(&b(1, "a"));
        let mut out = vec![];
        x.route(&Message::new("x", "a", ""), &[], &mut out);
        assert_eq!(out, vec![2]);
    }
}
