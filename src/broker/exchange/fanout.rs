//! The `fanout` exchange: every message goes to every bound destination; the routing key
//! is ignored.

use super::kind::{Binding, DestinationId, ExchangeType};
use crate::message::Message;

/// Routes to all bindings.
pub struct FanoutExchange;

impl ExchangeType for FanoutExchange {
    fn route(&self, _message: &Message, bindings: &[Binding], out: &mut Vec<DestinationId>) {
        out.extend(bindings.iter().map(|b| b.destination));
    }
}
