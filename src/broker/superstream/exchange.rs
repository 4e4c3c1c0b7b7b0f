//! The `x-super-stream` exchange type: routes each message to one partition, chosen by
//! the hash of its routing key ([`partition_of`]) among the bindings ordered by their
//! `x-stream-partition-order` argument. Being an exchange type, it routes the same way
//! for every front end (native, AMQP, embedded, HTTP publish).

use super::hash::partition_of;
use super::PARTITION_ORDER;
use crate::broker::exchange::{Binding, DestinationId, ExchangeType};
use crate::message::{FieldTable, FieldValue, Message};

/// The type name.
pub const TYPE: &str = "x-super-stream";

/// The partitions, sorted by (order, binding key, destination): index `i` is partition
/// `i` of the hash rule.
#[derive(Default)]
pub struct SuperStreamExchange {
    partitions: Vec<(i64, String, DestinationId)>,
}

fn order_of(arguments: &FieldTable) -> Option<i64> {
    arguments.get(PARTITION_ORDER).and_then(FieldValue::as_int)
}

impl ExchangeType for SuperStreamExchange {
    fn validate_binding(&self, _routing_key: &str, arguments: &FieldTable) -> Result<(), String> {
        match order_of(arguments) {
            Some(o) if o >= 0 => Ok(()),
            _ => Err(format!(
                "a binding of an {TYPE} exchange needs the argument '{PARTITION_ORDER}' (the partition's index, an integer >= 0)"
            )),
        }
    }

    fn bind(&mut self, binding: &Binding) {
        let order = order_of(&binding.arguments).unwrap_or(i64::MAX);
        let entry = (order, binding.routing_key.clone(), binding.destination);
        if let Err(at) = self.partitions.binary_search(&entry) {
            self.partitions.insert(at, entry);
        }
    }

    fn unbind(&mut self, binding: &Binding) {
        let order = order_of(&binding.arguments).unwrap_or(i64::MAX);
        let entry = (order, binding.routing_key.clone(), binding.destination);
        if let Ok(at) = self.partitions.binary_search(&entry) {
            self.partitions.remove(at);
        }
    }

    fn route(&self, message: &Message, _bindings: &[Binding], out: &mut Vec<DestinationId>) {
        if self.partitions.is_empty() {
            return;
        }
        let i = partition_of(&message.routing_key, self.partitions.len());
        out.push(self.partitions[i].2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(dest: DestinationId, key: &str, order: i64) -> Binding {
        let mut arguments = FieldTable::new();
        arguments.insert(PARTITION_ORDER.into(), order.into());
        Binding {
            destination: dest,
            routing_key: key.into(),
            arguments,
        }
    }

    fn route(x: &SuperStreamExchange, key: &str) -> Vec<DestinationId> {
        let mut out = vec![];
        x.route(&Message::new("s", key, ""), &[], &mut out);
        out
    }

    #[test]
    fn routes_by_hash_in_partition_order_whatever_the_bind_order() {
        let mut x = SuperStreamExchange::default();
        // Bound out of order: the partition order decides, not the bind order.
        for (dest, order) in [(12, 2), (10, 0), (11, 1)] {
            x.bind(&b(dest, &order.to_string(), order));
        }
        // murmur3("hello", 104729) % 3 == 0, "order-2" -> 2 (see hash.rs).
        assert_eq!(route(&x, "hello"), vec![10]);
        assert_eq!(route(&x, "order-2"), vec![12]);
        x.unbind(&b(12, "2", 2));
        assert_eq!(route(&x, "order-2").len(), 1);
        x.unbind(&b(10, "0", 0));
        x.unbind(&b(11, "1", 1));
        assert!(route(&x, "hello").is_empty());
    }

    #[test]
    fn a_binding_without_partition_order_is_refused() {
        let x = SuperStreamExchange::default();
        assert!(x.validate_binding("k", &FieldTable::new()).is_err());
        let mut args = FieldTable::new();
        args.insert(PARTITION_ORDER.into(), (-1).into());
        assert!(x.validate_binding("k", &args).is_err());
        args.insert(PARTITION_ORDER.into(), 0.into());
        assert!(x.validate_binding("k", &args).is_ok());
    }
}
