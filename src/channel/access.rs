//! Who may do what on a channel: RabbitMQ's access-control table, checked once here for
//! every front end (native connection, AMQP channel, `embed::Session`, and through it
//! the management API).
//!
//! | operation                         | configure | write          | read     |
//! |-----------------------------------|-----------|----------------|----------|
//! | exchange.declare (passive: none)  | exchange  | AE (with one)  | exchange (with an AE) |
//! | exchange.delete                   | exchange  |                |          |
//! | queue.declare (passive: none)     | queue     | DLX (with one) | queue (with a DLX) |
//! | queue.delete                      | queue     |                |          |
//! | queue.purge                       |           |                | queue    |
//! | queue.bind / unbind               |           | queue          | exchange |
//! | exchange.bind / unbind            |           | destination    | source   |
//! | basic.publish                     |           | exchange       |          |
//! | basic.get / basic.consume         |           |                | queue    |
//!
//! The default exchange is checked under the name `amq.default`; a server-named queue
//! under a name of the form the broker gives it (`amq.gen-…`). On a topic exchange the
//! user's topic permission for it, if any, is checked too: `write` against the routing
//! key of a publish, `read` against the binding key of a bind or unbind.
//!
//! The permissions are read from the shared definitions only when their
//! [`crate::definitions::Generation`] moved (one atomic load per check), so
//! a change applies to open channels at their next operation; publish decisions are
//! cached per exchange (and per routing key on a topic exchange with a topic
//! permission), so a publish costs an atomic load and a hash lookup, no regex.

use super::Channel;
use crate::broker::exchange::{ExchangeHandle, ExchangeSpec};
use crate::broker::messages::{BindTarget, LookupExchange};
use crate::broker::queue::QueueSpec;
use crate::broker::registry::Registry;
use crate::definitions::{
    Generation, Pattern, Perm, Permission, SharedDefinitions, TopicPermission, TopicVariables,
};
use crate::error::{clip, BrokerError};
use actix::Addr;
use std::collections::HashMap;
use std::future::Future;

/// How many (exchange, routing key) topic decisions a channel remembers before it
/// starts again (a bound on memory for clients that use ever new keys).
const TOPIC_CACHE: usize = 1024;

/// A user's permissions on one virtual host, as one channel sees them.
pub struct Access {
    defs: SharedDefinitions,
    generation: Generation,
    /// The generation the cached values were read at (`u64::MAX`: never read).
    seen: u64,
    /// Values of the topic variables; user name and vhost in every refusal.
    vars: TopicVariables,
    /// The permission, None when the user has none here (or was deleted).
    grant: Option<Permission>,
    /// The user's topic permissions in the vhost, by exchange.
    topics: HashMap<String, TopicPermission>,
    /// Compiled topic patterns, by (exchange, perm); None: it does not compile with
    /// this connection's variables, so it allows nothing.
    compiled: HashMap<(String, Perm), Option<Pattern>>,
    /// Publish decisions by exchange name: may write, and whether a topic permission
    /// applies to it.
    publish: HashMap<String, (bool, bool)>,
    /// Topic decisions by (exchange, perm, key).
    topic_keys: HashMap<(String, Perm, String), bool>,
}

impl Access {
    /// The access of `user` in `vhost`, read from `defs` (live: a change to the user's
    /// permissions applies at the next check).
    pub fn new(defs: SharedDefinitions, user: &str, vhost: &str) -> Access {
        let generation = defs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .generation()
            .clone();
        Access {
            defs,
            generation,
            seen: u64::MAX,
            vars: TopicVariables {
                username: user.to_string(),
                vhost: vhost.to_string(),
                client_id: None,
            },
            grant: None,
            topics: HashMap::new(),
            compiled: HashMap::new(),
            publish: HashMap::new(),
            topic_keys: HashMap::new(),
        }
    }

    /// The user.
    pub fn user(&self) -> &str {
        &self.vars.username
    }

    /// Re-reads the permissions when the definitions changed since the last read.
    fn refresh(&mut self) {
        // Load first: a change after this load bumps it again and is seen next time.
        let now = self.generation.get();
        if now == self.seen {
            return;
        }
        let defs = self.defs.read().unwrap_or_else(|p| p.into_inner());
        let user = defs.user(&self.vars.username);
        self.grant = user.and_then(|u| u.permission(&self.vars.vhost));
        self.topics = user
            .map(|u| {
                u.topic_permissions_in(&self.vars.vhost)
                    .map(|(x, t)| (x.to_string(), t.clone()))
                    .collect()
            })
            .unwrap_or_default();
        drop(defs);
        self.compiled.clear();
        self.publish.clear();
        self.topic_keys.clear();
        self.seen = now;
    }

    fn refused(&self, perm: Perm, what: &str) -> BrokerError {
        let (user, vhost) = (clip(&self.vars.username), clip(&self.vars.vhost));
        tracing::warn!(%user, %vhost, permission = perm.as_str(), resource = %what, "access refused");
        BrokerError::access_refused(format!(
            "{} access to {what} in vhost '{vhost}' refused for user '{user}'",
            perm.as_str()
        ))
    }

    fn allows(&self, perm: Perm, name: &str) -> bool {
        self.grant
            .as_ref()
            .is_some_and(|g| g.pattern(perm).is_match(name))
    }

    /// Checks `perm` on the resource `kind` ("exchange" or "queue") named `name`.
    pub fn check(&mut self, perm: Perm, kind: &str, name: &str) -> Result<(), BrokerError> {
        self.refresh();
        let name = resource_name(kind, name);
        if self.allows(perm, name) {
            Ok(())
        } else {
            Err(self.refused(perm, &format!("{kind} '{}'", clip(name))))
        }
    }

    /// Checks the topic permission `perm` of `exchange` (a topic exchange) against
    /// `key`; no topic permission for it allows everything (RabbitMQ's rule).
    pub fn check_topic(
        &mut self,
        perm: Perm,
        exchange: &str,
        key: &str,
    ) -> Result<(), BrokerError> {
        self.refresh();
        if !self.topics.contains_key(exchange) {
            return Ok(());
        }
        let cache_key = (exchange.to_string(), perm, key.to_string());
        let allowed = match self.topic_keys.get(&cache_key) {
            Some(a) => *a,
            None => {
                let allowed = self
                    .topic_pattern(exchange, perm)
                    .is_some_and(|p| p.is_match(key));
                if self.topic_keys.len() >= TOPIC_CACHE {
                    self.topic_keys.clear();
                }
                self.topic_keys.insert(cache_key, allowed);
                allowed
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(self.refused(
                perm,
                &format!("topic '{}' in exchange '{}'", clip(key), clip(exchange)),
            ))
        }
    }

    /// The compiled topic pattern `perm` of `exchange` (which has a topic permission).
    fn topic_pattern(&mut self, exchange: &str, perm: Perm) -> Option<&Pattern> {
        let key = (exchange.to_string(), perm);
        if !self.compiled.contains_key(&key) {
            let t = &self.topics[exchange];
            // Checked when set; a pattern the variables break allows nothing.
            let p = t
                .compile(perm, &self.vars)
                .map_err(|e| tracing::error!(exchange, error = %e, "a topic permission does not compile here: nothing allowed"))
                .ok();
            self.compiled.insert(key.clone(), p);
        }
        self.compiled[&key].as_ref()
    }

    /// May this channel publish to exchange `name` (`is_topic` tells its type, asked on
    /// a cache miss only) with `routing_key`? The hot path: an atomic load and a
    /// lookup once the decision for `name` is cached.
    pub fn check_publish(
        &mut self,
        name: &str,
        is_topic: impl FnOnce() -> bool,
        routing_key: &str,
    ) -> Result<(), BrokerError> {
        self.refresh();
        let (write, topic) = match self.publish.get(name) {
            Some(d) => *d,
            None => {
                let d = (
                    self.allows(Perm::Write, resource_name("exchange", name)),
                    self.topics.contains_key(name) && is_topic(),
                );
                self.publish.insert(name.to_string(), d);
                d
            }
        };
        if !write {
            return Err(self.refused(
                Perm::Write,
                &format!("exchange '{}'", clip(resource_name("exchange", name))),
            ));
        }
        if topic {
            self.check_topic(Perm::Write, name, routing_key)?;
        }
        Ok(())
    }
}

/// The name a resource is checked under: the default exchange is `amq.default`.
fn resource_name<'a>(kind: &str, name: &'a str) -> &'a str {
    if kind == "exchange" && name.is_empty() {
        "amq.default"
    } else {
        name
    }
}

/// The topic part of a bind or unbind check, decided before the bind is sent but
/// applying only if the source exchange is a topic exchange (which the channel learns
/// from the registry): see [`TopicGate::enforce`].
#[derive(Debug, Default)]
#[must_use = "a refused topic bind is only refused when the gate is enforced"]
pub struct TopicGate(Option<(String, BrokerError)>);

impl TopicGate {
    /// A gate that lets everything through.
    pub fn open() -> TopicGate {
        TopicGate(None)
    }

    /// Resolves to the refusal when there is one and the exchange is a topic exchange.
    pub fn enforce(
        self,
        registry: &Addr<Registry>,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send + 'static {
        let lookup = self
            .0
            .as_ref()
            .map(|(name, _)| registry.send(LookupExchange { name: name.clone() }));
        async move {
            let (Some(lookup), Some((_, refusal))) = (lookup, self.0) else {
                return Ok(());
            };
            match lookup.await {
                Ok(Ok(x)) if x.spec().kind == "topic" => Err(refusal),
                // Not a topic exchange, or none: the bind itself says what is wrong.
                _ => Ok(()),
            }
        }
    }
}

impl Channel {
    /// Makes this channel check `access` on every operation (a channel without one is
    /// trusted: an embedded session of the application itself).
    pub fn set_access(&mut self, access: Access) {
        self.access = Some(access);
    }

    /// The access this channel checks, if any.
    pub fn access(&self) -> Option<&Access> {
        self.access.as_ref()
    }

    fn check(&mut self, perm: Perm, kind: &str, name: &str) -> Result<(), BrokerError> {
        match &mut self.access {
            Some(a) => a.check(perm, kind, name),
            None => Ok(()),
        }
    }

    /// exchange.declare: configure on it; with an alternate exchange, write on that
    /// and read on this one. A passive declare needs nothing.
    pub fn may_declare_exchange(
        &mut self,
        spec: &ExchangeSpec,
        passive: bool,
    ) -> Result<(), BrokerError> {
        if passive {
            return Ok(());
        }
        self.check(Perm::Configure, "exchange", &spec.name)?;
        if let Some(ae) = spec
            .arguments
            .get("alternate-exchange")
            .and_then(|v| v.as_str())
        {
            self.check(Perm::Write, "exchange", ae)?;
            self.check(Perm::Read, "exchange", &spec.name)?;
        }
        Ok(())
    }

    /// exchange.delete: configure on it.
    pub fn may_delete_exchange(&mut self, name: &str) -> Result<(), BrokerError> {
        self.check(Perm::Configure, "exchange", name)
    }

    /// queue.declare: configure on it (a server-named one under an `amq.gen-` name);
    /// with a dead-letter exchange, write on that and read on the queue. A passive
    /// declare needs nothing.
    pub fn may_declare_queue(
        &mut self,
        spec: &QueueSpec,
        passive: bool,
    ) -> Result<(), BrokerError> {
        if passive {
            return Ok(());
        }
        let generated;
        let name = if spec.name.is_empty() {
            generated = server_name_sample();
            generated.as_str()
        } else {
            spec.name.as_str()
        };
        self.check(Perm::Configure, "queue", name)?;
        if let Some(dlx) = spec
            .arguments
            .get("x-dead-letter-exchange")
            .and_then(|v| v.as_str())
        {
            self.check(Perm::Write, "exchange", dlx)?;
            self.check(Perm::Read, "queue", name)?;
        }
        Ok(())
    }

    /// queue.delete: configure on it.
    pub fn may_delete_queue(&mut self, name: &str) -> Result<(), BrokerError> {
        self.check(Perm::Configure, "queue", name)
    }

    /// queue.purge, basic.get, basic.consume: read on the queue.
    pub fn may_read_queue(&mut self, name: &str) -> Result<(), BrokerError> {
        self.check(Perm::Read, "queue", name)
    }

    /// queue.bind / exchange.bind and their unbinds: write on the destination, read on
    /// the source; the answer carries the topic check of the binding key, to enforce
    /// with the bind.
    pub fn may_bind(
        &mut self,
        source: &str,
        target: &BindTarget,
        routing_key: &str,
    ) -> Result<TopicGate, BrokerError> {
        let Some(access) = &mut self.access else {
            return Ok(TopicGate::open());
        };
        match target {
            BindTarget::Queue(q) => access.check(Perm::Write, "queue", q)?,
            BindTarget::Exchange(x) => access.check(Perm::Write, "exchange", x)?,
        }
        access.check(Perm::Read, "exchange", source)?;
        Ok(match access.check_topic(Perm::Read, source, routing_key) {
            Ok(()) => TopicGate::open(),
            Err(e) => TopicGate(Some((source.to_string(), e))),
        })
    }

    /// Write on exchange `name`: a publish whose exchange is not looked up (AMQP's
    /// direct reply-to goes through the default exchange).
    pub fn may_write_exchange(&mut self, name: &str) -> Result<(), BrokerError> {
        self.check(Perm::Write, "exchange", name)
    }

    /// basic.publish to `x` with `routing_key`: write on the exchange, and the topic
    /// permission on a topic exchange. Cached: see the module documentation.
    pub fn may_publish(
        &mut self,
        x: &ExchangeHandle,
        routing_key: &str,
    ) -> Result<(), BrokerError> {
        match &mut self.access {
            Some(a) => a.check_publish(x.name(), || x.spec().kind == "topic", routing_key),
            None => Ok(()),
        }
    }
}

impl Channel {
    /// A super stream declare: what declaring its exchange, each partition stream and
    /// each binding needs (configure on them, write on the streams, read on the
    /// exchange).
    pub fn may_declare_super_stream(
        &mut self,
        spec: &crate::broker::superstream::SuperStreamSpec,
    ) -> Result<(), BrokerError> {
        self.may_declare_exchange(&spec.exchange(), false)?;
        for p in spec.layout() {
            self.may_declare_queue(&spec.queue(&p), false)?;
            let target = BindTarget::Queue(p.queue.clone());
            // A super stream's exchange is not a topic exchange: no topic check.
            let _ = self.may_bind(&spec.name, &target, &p.binding_key)?;
        }
        Ok(())
    }

    /// A super stream delete: configure on its exchange.
    pub fn may_delete_super_stream(&mut self, name: &str) -> Result<(), BrokerError> {
        self.may_delete_exchange(name)
    }
}

/// A name of the form the registry gives a server-named queue, to check a declare
/// without a name against (the registry picks the real one).
fn server_name_sample() -> String {
    "amq.gen-0000000000000000".to_string()
}

#[cfg(test)]
mod tests;
