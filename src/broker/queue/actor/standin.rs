//! A classic queue's stand-in on a cluster node that is not its home: it holds no
//! message. Its publishes go to the home ([`crate::cluster::Home`]); its consumers and
//! gets are served by the home through one consume session per owner, the same
//! sessions a quorum queue's follower opens to its group's leader (see
//! `replica/remote.rs`): on the home a session is one owner of the real queue, so
//! acks, prefetch, redelivery marks and the requeue when the owner goes behave as for
//! a local consumer. This actor only routes each owner's orders to its session.

use super::*;

impl QueueActor {
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
                    remotes.cancel(owner, &tag);
                    if let Some(done) = done {
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
