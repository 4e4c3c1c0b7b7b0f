//! The permission check of each AMQP channel method, made by the channel core
//! ([`crate::channel::access`]) before the method does anything: a refusal closes the
//! channel with 403 ACCESS_REFUSED (the connection goes on), as RabbitMQ does.

use super::connection::AmqpConnection;
use super::properties::args_in;
use super::reply_to::REPLY_TO;
use crate::broker::exchange::ExchangeSpec;
use crate::broker::messages::BindTarget;
use crate::broker::queue::QueueSpec;
use crate::channel::TopicGate;
use crate::error::BrokerError;
use amq_protocol::protocol::{basic, exchange as ex, queue as qu, AMQPClass};

impl AmqpConnection {
    /// Checks method `m` of channel `ch` against the user's permissions; answers the
    /// topic check a bind or unbind must enforce with it.
    pub(super) fn authorize(&mut self, ch: u16, m: &AMQPClass) -> Result<TopicGate, BrokerError> {
        // Names first: AMQP's empty queue name is the channel's last declared queue.
        let queue = |me: &Self, name: &str| me.queue_name(ch, name);
        let check = match m {
            AMQPClass::Exchange(ex::AMQPMethod::Declare(d)) => {
                let mut spec = ExchangeSpec::new(d.exchange.as_str(), d.kind.as_str());
                spec.arguments = args_in(&d.arguments);
                Check::DeclareExchange(spec, d.passive)
            }
            AMQPClass::Exchange(ex::AMQPMethod::Delete(d)) => {
                Check::DeleteExchange(d.exchange.to_string())
            }
            AMQPClass::Exchange(ex::AMQPMethod::Bind(b)) => Check::Bind(
                b.source.to_string(),
                BindTarget::Exchange(b.destination.to_string()),
                b.routing_key.to_string(),
            ),
            AMQPClass::Exchange(ex::AMQPMethod::Unbind(b)) => Check::Bind(
                b.source.to_string(),
                BindTarget::Exchange(b.destination.to_string()),
                b.routing_key.to_string(),
            ),
            AMQPClass::Queue(qu::AMQPMethod::Declare(d)) => {
                let mut spec = QueueSpec::new(d.queue.as_str());
                spec.arguments = args_in(&d.arguments);
                Check::DeclareQueue(spec, d.passive)
            }
            AMQPClass::Queue(qu::AMQPMethod::Delete(d)) => {
                Check::DeleteQueue(queue(self, d.queue.as_str()))
            }
            AMQPClass::Queue(qu::AMQPMethod::Purge(p)) => {
                Check::ReadQueue(queue(self, p.queue.as_str()))
            }
            AMQPClass::Queue(qu::AMQPMethod::Bind(b)) => Check::Bind(
                b.exchange.to_string(),
                BindTarget::Queue(queue(self, b.queue.as_str())),
                b.routing_key.to_string(),
            ),
            AMQPClass::Queue(qu::AMQPMethod::Unbind(b)) => Check::Bind(
                b.exchange.to_string(),
                BindTarget::Queue(queue(self, b.queue.as_str())),
                b.routing_key.to_string(),
            ),
            AMQPClass::Basic(basic::AMQPMethod::Get(g)) => {
                Check::ReadQueue(queue(self, g.queue.as_str()))
            }
            // The direct reply-to pseudo queue is the channel's own (RabbitMQ checks
            // nothing for it).
            AMQPClass::Basic(basic::AMQPMethod::Consume(c)) => {
                let name = queue(self, c.queue.as_str());
                if name == REPLY_TO {
                    return Ok(TopicGate::open());
                }
                Check::ReadQueue(name)
            }
            _ => return Ok(TopicGate::open()),
        };
        let Some(st) = self.channels.get_mut(&ch) else {
            return Ok(TopicGate::open());
        };
        let core = &mut st.core;
        match check {
            Check::DeclareExchange(spec, passive) => core.may_declare_exchange(&spec, passive)?,
            Check::DeleteExchange(name) => core.may_delete_exchange(&name)?,
            Check::DeclareQueue(spec, passive) => core.may_declare_queue(&spec, passive)?,
            Check::DeleteQueue(name) => core.may_delete_queue(&name)?,
            Check::ReadQueue(name) => core.may_read_queue(&name)?,
            Check::Bind(source, target, key) => return core.may_bind(&source, &target, &key),
        }
        Ok(TopicGate::open())
    }
}

/// What a method needs checked.
enum Check {
    DeclareExchange(ExchangeSpec, bool),
    DeleteExchange(String),
    DeclareQueue(QueueSpec, bool),
    DeleteQueue(String),
    ReadQueue(String),
    Bind(String, BindTarget, String),
}
