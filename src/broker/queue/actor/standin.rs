//! A classic queue's stand-in on a cluster node that is not its home: it holds no
//! message. Its publishes go to the home ([`crate::cluster::Home`]); its consumers and
//! gets are served by the home through one consume session per owner, the same
//! sessions a quorum queue's follower opens to its group's leader (see
//! `replica/remote.rs`): on the home a session is one owner of the real queue, so
//! acks, prefetch, redelivery marks and the requeue when the owner goes behave as for
//! a local consumer. Each consume carries the client's arguments (`x-priority`, a
//! stream's `x-stream-offset` and consumer name), so the home serves it as it serves
//! a local consumer. This actor only routes each owner's orders to its session.

use super::*;

/// How long a stream's stand-in waits for its home to attach a consumer before the
/// consume fails (a home frozen after the session opened; a home down fails it at
/// once, when the session cannot open).
const ATTACH_WAIT: Duration = Duration::from_secs(15);

impl QueueActor {
    /// A consume of a stream of another node: its options checked here as the home
    /// checks them, then served by the home through the owner's session with its
    /// arguments (`x-stream-offset`, `x-stream-consumer-name`, ...), and answered only
    /// once the home attached it, as a local consume is: a consumer from `next` sees
    /// every record its client publishes after `consume-ok`, wherever it publishes.
    pub(super) fn standin_stream_consume(
        &mut self,
        msg: Consume,
        ctx: &mut Context<Self>,
    ) -> Response<Result<Arc<str>, BrokerError>> {
        if let Err(e) = super::stream::stream_consumer(&msg.options, &self.name) {
            return Response::reply(Err(e));
        }
        let owner = msg.owner;
        let (attached, answer) = tokio::sync::oneshot::channel();
        let consumed = self.remote_consume(msg, Some(attached));
        self.remote_wait(ctx);
        let tag = match consumed {
            Ok(tag) => tag,
            Err(e) => return Response::reply(Err(e)),
        };
        let handle = self.handle.clone().expect("queue handle set in started");
        let what = format!(
            "stream '{}' in vhost '{}' {}",
            self.name,
            self.vhost,
            self.remote.as_ref().map_or("", |h| h.describe())
        );
        Response::fut(async move {
            let e = match tokio::time::timeout(ATTACH_WAIT, answer).await {
                Ok(Ok(Ok(()))) => return Ok(tag),
                Ok(Ok(Err(e))) => e,
                // Channel-level NOT_FOUND naming the home, as for a home that is down: a
                // connection-level code would close the client's other channels.
                Ok(Err(_)) => BrokerError::new(
                    ErrorCode::NotFound,
                    format!(
                        "{what}: the consume session ended before the home attached consumer '{tag}'"
                    ),
                ),
                Err(_) => BrokerError::new(
                    ErrorCode::NotFound,
                    format!(
                        "{what}: the home did not attach consumer '{tag}' within {ATTACH_WAIT:?}"
                    ),
                ),
            };
            // Forgotten here before the client hears (its tag is free again).
            let _ = handle.cancel(owner, &tag).await;
            Err(e)
        })
    }

    /// Routes the acks, credit, prefetch changes, cancels and releases waiting in the
    /// inbox to their owners' sessions; true if there were any.
    pub(super) fn standin_drain_inbox(&mut self, ctx: &mut Context<Self>) -> bool {
        let items = self.inbox.take();
        if items.is_empty() {
            return false;
        }
        let remotes = self.remotes();
        for item in items {
            match item {
                Control::Settle {
                    owner,
                    ids,
                    settlement,
                } => remotes.settle(owner, &ids, settlement),
                Control::SettleRuns {
                    owner,
                    runs,
                    settlement,
                } => remotes.settle(
                    owner,
                    &crate::broker::queue::inbox::run_ids(&runs),
                    settlement,
                ),
                Control::Credit { consumer, amount } => remotes.credit(consumer, amount),
                Control::Prefetch { owner, prefetch } => remotes.prefetch(owner, prefetch),
                Control::Cancel { owner, tag, done } => {
                    // The consumer's session tells `done` itself.
                    if let Some(done) = remotes.cancel(owner, &tag, done) {
                        let _ = done.send(());
                    }
                }
                Control::Release(owner) => remotes.release(owner),
                // Deliveries of an earlier session: a home never changes.
                Control::Unhold { .. } => {}
            }
        }
        self.remote_wait(ctx);
        true
    }
}
