//! What a queue tells about itself: its counts, its consumers, and the touches that
//! keep an unused queue from expiring.

use super::*;

/// Marks the queue as used (sent by the registry on a redeclare; `x-expires`).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Touch;

/// Asks a queue for what a `queue.declare-ok` reports: its ready messages and its
/// consumers. A classic queue's stand-in (a cluster node that is not its home) holds
/// none: it answers zeros and its home, which the declare's caller asks afterwards
/// ([`QueueDeclared::with_home_counts`]), outside the registry's atomic declare, so
/// that no registry waits on another node.
///
/// [`QueueDeclared::with_home_counts`]: crate::broker::messages::QueueDeclared::with_home_counts
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<LocalCounts, BrokerError>")]
pub struct GetDeclareCounts;

/// The answer to [`GetDeclareCounts`]: this node's counts, and the home to ask
/// instead when this queue is a stand-in.
pub struct LocalCounts {
    /// The counts this queue actor holds (zeros for a stand-in).
    pub counts: DeclareCounts,
    /// A stand-in's home, whose counts are the queue's.
    pub home: Option<Arc<crate::cluster::Home>>,
}

/// The answer to [`GetDeclareCounts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct DeclareCounts {
    /// Messages ready for delivery (a stream's: its records).
    pub messages: u64,
    /// Consumers attached (at the home: those served through sessions too).
    pub consumers: u32,
}

impl Handler<GetStats> for QueueActor {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _msg: GetStats, ctx: &mut Self::Context) -> Self::Result {
        if self.stream.is_some() {
            if self.drain_inbox(ctx) {
                self.stream_dispatch(ctx);
            }
            return MessageResult(self.stream_stats());
        }
        if self.replica.is_some() {
            if self.drain_inbox(ctx) {
                self.replica_dispatch(ctx);
            }
            return MessageResult(self.replica_stats());
        }
        if self.drain_inbox(ctx) {
            self.dispatch(ctx);
        }
        MessageResult(QueueStats {
            ready: self.state.ready_len() as u64,
            unacked: self.state.unacked_len() as u64,
            // A stand-in's own: those served by the home through its sessions.
            consumers: (self.state.consumers().len() + self.standin.count()) as u32,
            bytes: self.state.bytes() as u64,
            delayed: self.state.delayed_len() as u64,
            counts: self.state.counts(),
            ..QueueStats::default()
        })
    }
}

impl Handler<GetDeclareCounts> for QueueActor {
    type Result = MessageResult<GetDeclareCounts>;

    fn handle(&mut self, _msg: GetDeclareCounts, ctx: &mut Self::Context) -> Self::Result {
        if let Some(home) = self.remote.as_ref().filter(|_| !self.deleted) {
            // A stand-in holds nothing: the home's counts are the queue's.
            return MessageResult(Ok(LocalCounts {
                counts: DeclareCounts::default(),
                home: Some(home.clone()),
            }));
        }
        let stats = <Self as Handler<GetStats>>::handle(self, GetStats, ctx).0;
        MessageResult(Ok(LocalCounts {
            counts: DeclareCounts {
                messages: stats.ready,
                consumers: stats.consumers,
            },
            home: None,
        }))
    }
}

impl Handler<ListConsumers> for QueueActor {
    type Result = MessageResult<ListConsumers>;

    fn handle(&mut self, _msg: ListConsumers, _ctx: &mut Self::Context) -> Self::Result {
        if self.replica.is_some() {
            return MessageResult(self.replica_consumers());
        }
        if self.remote.is_some() {
            return MessageResult(self.remote_consumers());
        }
        if let Some(s) = self.stream.as_ref() {
            // A stream consumer always acks; `active` is false for a waiting group member.
            return MessageResult(
                s.consumers()
                    .iter()
                    .map(|c| ConsumerInfo {
                        tag: c.tag.to_string(),
                        owner: c.owner,
                        prefetch: c.prefetch(),
                        ack_required: true,
                        active: c.is_active(),
                        priority: 0,
                    })
                    .collect(),
            );
        }
        let active = self.state.active_consumer();
        MessageResult(
            self.state
                .consumers()
                .iter()
                .map(|c| ConsumerInfo {
                    tag: c.tag.to_string(),
                    owner: c.owner,
                    prefetch: c.prefetch,
                    ack_required: !c.auto_ack,
                    active: active.is_none_or(|a| a == c.id),
                    priority: c.priority,
                })
                .collect(),
        )
    }
}

impl Handler<Touch> for QueueActor {
    type Result = ();

    fn handle(&mut self, _msg: Touch, _ctx: &mut Self::Context) {
        self.last_used = Instant::now();
        if self.replica.is_some() {
            self.replica_touch();
        }
    }
}
