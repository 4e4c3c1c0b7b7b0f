//! The delete of a replicated quorum queue unused for its `x-expires` period
//! ([`QueueUnused`], sent by its group leader's queue actor): proposed to the
//! definitions log, as a client's `queue.delete` is, never applied here first, so no
//! node forgets the queue unless every node does (a proposal that fails leaves it
//! everywhere, and the leader asks again later).

use super::*;
use crate::cluster::{Op, Outcome};

impl Handler<QueueUnused> for Registry {
    type Result = ResponseFuture<Result<(), BrokerError>>;

    fn handle(&mut self, msg: QueueUnused, _ctx: &mut Self::Context) -> Self::Result {
        let current = self
            .queues
            .get(&*msg.name)
            .is_some_and(|q| q.incarnation == msg.incarnation);
        if !current {
            // An earlier queue of that name: already gone.
            return Box::pin(async { Ok(()) });
        }
        let Some(c) = self.cluster() else {
            let e = BrokerError::internal(format!(
                "queue '{}' in vhost '{}': a replicated queue's expiry outside a cluster",
                msg.name, self.vhost
            ));
            return Box::pin(async move { Err(e) });
        };
        tracing::info!(vhost = %self.vhost, queue = %msg.name, "x-expires: the quorum queue is unused; its delete is proposed to the cluster");
        let proposal = c.propose(Op::DeleteQueue {
            vhost: self.vhost.to_string(),
            name: msg.name.to_string(),
        });
        Box::pin(async move { proposal.await.and_then(Outcome::deleted).map(|_| ()) })
    }
}
