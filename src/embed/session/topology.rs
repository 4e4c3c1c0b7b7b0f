//! The definitions side of a [`Session`]: exchanges, queues, bindings and super streams
//! declared, deleted and listed through the broker's registry, with the session's
//! permissions, as a client connection's would be.

use super::Session;
use crate::broker::exchange::ExchangeSpec;
use crate::broker::messages::*;
use crate::broker::queue::QueueSpec;
use crate::broker::registry::{BindingRecord, ListBindings, ListExchanges, ListQueues};
use crate::error::BrokerError;
use crate::message::FieldTable;
use crate::options::{ExchangeOptions, QueueOptions};

impl Session {
    /// Declares an exchange of type `kind` (`direct`, `fanout`, `topic`, `headers`, or
    /// one registered with the broker), or with `passive` checks that it exists. Same
    /// signature as [`Client::declare_exchange`](crate::client::Client::declare_exchange).
    pub async fn declare_exchange(
        &self,
        name: &str,
        kind: &str,
        options: &ExchangeOptions,
    ) -> Result<(), BrokerError> {
        let spec = options.to_spec(name, kind);
        self.channel()
            .may_declare_exchange(&spec, options.passive)?;
        self.registry
            .send(DeclareExchange {
                spec,
                passive: options.passive,
            })
            .await?
    }

    /// Deletes an exchange.
    pub async fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<(), BrokerError> {
        self.channel().may_delete_exchange(name)?;
        self.channel().forget_exchange(name);
        self.registry
            .send(DeleteExchange {
                name: name.to_string(),
                if_unused,
            })
            .await?
    }

    /// Declares a queue (or with `passive`, checks that it exists) and answers its name
    /// and counts. An empty `name` asks the broker to generate one. Same signature as
    /// [`Client::declare_queue`](crate::client::Client::declare_queue).
    pub async fn declare_queue(
        &self,
        name: &str,
        options: &QueueOptions,
    ) -> Result<QueueDeclared, BrokerError> {
        let spec = options.to_spec(name);
        self.channel().may_declare_queue(&spec, options.passive)?;
        self.registry
            .send(DeclareQueue {
                spec,
                passive: options.passive,
                owner: self.owner,
                placement: None,
            })
            .await??
            .with_home_counts()
            .await
    }

    /// Deletes a queue; answers the messages it held.
    pub async fn delete_queue(
        &self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u64, BrokerError> {
        self.channel().may_delete_queue(name)?;
        self.registry
            .send(DeleteQueue {
                name: name.to_string(),
                if_unused,
                if_empty,
                ready_only: false,
                owner: self.owner,
            })
            .await?
    }

    /// Removes the ready messages of a queue; answers how many.
    pub async fn purge(&self, queue: &str) -> Result<u64, BrokerError> {
        self.channel().may_read_queue(queue)?;
        self.registry
            .send(PurgeQueue {
                name: queue.to_string(),
                owner: self.owner,
            })
            .await?
    }

    /// Binds `queue` to `exchange` with a binding key and arguments. Destination first,
    /// as AMQP's `queue.bind(queue, exchange, routing_key)` and
    /// [`Client::bind_queue`](crate::client::Client::bind_queue).
    pub async fn bind_queue(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), BrokerError> {
        let bind = self.binding(
            exchange,
            BindTarget::Queue(queue.into()),
            routing_key,
            arguments,
        );
        self.authorize_bind(&bind).await?;
        self.registry.send(bind).await?
    }

    /// Removes a queue binding.
    pub async fn unbind_queue(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), BrokerError> {
        let binding = self.binding(
            exchange,
            BindTarget::Queue(queue.into()),
            routing_key,
            arguments,
        );
        self.authorize_bind(&binding).await?;
        self.registry.send(Unbind { binding }).await?
    }

    /// Binds exchange `destination` to exchange `source`: what `source` routes with
    /// this key goes on through `destination`. Destination first, as AMQP's
    /// `exchange.bind(destination, source, routing_key)`.
    pub async fn bind_exchange(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), BrokerError> {
        let target = BindTarget::Exchange(destination.into());
        let bind = self.binding(source, target, routing_key, arguments);
        self.authorize_bind(&bind).await?;
        self.registry.send(bind).await?
    }

    /// Removes an exchange-to-exchange binding.
    pub async fn unbind_exchange(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), BrokerError> {
        let target = BindTarget::Exchange(destination.into());
        let binding = self.binding(source, target, routing_key, arguments);
        self.authorize_bind(&binding).await?;
        self.registry.send(Unbind { binding }).await?
    }

    /// The permission check of a bind or unbind (with its topic part).
    async fn authorize_bind(&self, b: &Bind) -> Result<(), BrokerError> {
        let gate = self
            .channel()
            .may_bind(&b.exchange, &b.target, &b.routing_key)?;
        gate.enforce(&self.registry).await
    }

    fn binding(
        &self,
        exchange: &str,
        target: BindTarget,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Bind {
        Bind {
            exchange: exchange.to_string(),
            target,
            routing_key: routing_key.to_string(),
            arguments,
            owner: self.owner,
        }
    }

    /// Declares a super stream (a partitioned stream): its exchange, its partition
    /// streams and their bindings, in one call; answers the partitions in order.
    /// Declaring it again with the same layout changes nothing. See docs/STREAMS.md.
    ///
    /// ```no_run
    /// # async fn f(session: &actormq::Session) -> Result<(), actormq::BrokerError> {
    /// use actormq::broker::superstream::SuperStreamSpec;
    /// let parts = session
    ///     .declare_super_stream(&SuperStreamSpec::with_partitions("invoices", 3))
    ///     .await?;
    /// assert_eq!(parts, ["invoices-0", "invoices-1", "invoices-2"]);
    /// # Ok(()) }
    /// ```
    pub async fn declare_super_stream(
        &self,
        spec: &crate::broker::superstream::SuperStreamSpec,
    ) -> Result<Vec<String>, BrokerError> {
        self.channel().may_declare_super_stream(spec)?;
        crate::broker::superstream::declare(&self.registry, self.owner, spec).await
    }

    /// Deletes a super stream: its partition streams (with their records) and its
    /// exchange; answers the partitions deleted.
    pub async fn delete_super_stream(&self, name: &str) -> Result<Vec<String>, BrokerError> {
        self.channel().may_delete_super_stream(name)?;
        self.channel().forget_exchange(name);
        crate::broker::superstream::delete(&self.registry, &self.vhost, self.owner, name).await
    }

    /// The partition streams of a super stream, in partition order.
    pub async fn super_stream_partitions(&self, name: &str) -> Result<Vec<String>, BrokerError> {
        crate::broker::superstream::partitions(&self.registry, &self.vhost, name).await
    }

    /// Lists the queues of the session's virtual host.
    pub async fn list_queues(&self) -> Result<Vec<(String, QueueSpec)>, BrokerError> {
        Ok(self.registry.send(ListQueues).await?)
    }

    /// Lists the exchanges of the session's virtual host.
    pub async fn list_exchanges(&self) -> Result<Vec<ExchangeSpec>, BrokerError> {
        Ok(self.registry.send(ListExchanges).await?)
    }

    /// Lists the explicit bindings of the session's virtual host.
    pub async fn list_bindings(&self) -> Result<Vec<BindingRecord>, BrokerError> {
        Ok(self.registry.send(ListBindings).await?)
    }

    /// Counts of a queue.
    pub async fn queue_stats(&self, queue: &str) -> Result<QueueStats, BrokerError> {
        let q = self.lookup_queue(queue).await?;
        Ok(q.addr().send(GetStats).await?)
    }
}
