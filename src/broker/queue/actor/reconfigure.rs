//! Settings changed while the queue runs: the registry sends [`Reconfigure`] when the
//! policies that apply to the queue change (set, changed or cleared), with the
//! settings its arguments and policies now give.

use super::*;

/// The queue's settings from now on (declare arguments merged with its policies).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Reconfigure(pub QueueConfig);

impl Handler<Reconfigure> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: Reconfigure, ctx: &mut Self::Context) {
        // A stream's settings are its own declare arguments (docs/STREAMS.md):
        // classic-queue policies do not apply to it.
        if self.deleted || self.stream.is_some() || self.remote.is_some() {
            return;
        }
        let config = match self.replica {
            // A replicated quorum queue's policies reach its dead-letter target here;
            // its limits through its group's log, which its leader writes now if the
            // definitions changed them (`replica/limits.rs`).
            Some(_) => {
                self.replica_policies_changed(ctx);
                msg.0.dead_letter_only()
            }
            None => msg.0,
        };
        if *self.state.config() == config {
            return;
        }
        tracing::debug!(queue = %self.name, vhost = %self.vhost, ?config, "queue settings changed by a policy");
        // Without a dead-letter exchange now the state dead-letters nothing new, and
        // what is in flight finishes.
        if let Some(x) = &config.dead_letter_exchange {
            let target = Target {
                exchange: Arc::from(x.as_str()),
                routing_key: config.dead_letter_routing_key.clone(),
            };
            match &mut self.outbox {
                Some(o) => o.retarget(target),
                None => {
                    let exchanges = self.exchanges.clone();
                    self.outbox = Some(DeadLetterOutbox::new(self.name.clone(), target, exchanges));
                }
            }
        }
        // `x-expires` is re-armed with the new period (or not at all) by `after`.
        if let Some(h) = self.expires_check.take() {
            ctx.cancel_future(h);
        }
        self.state.reconfigure(config);
        if self.replica.is_some() {
            return;
        }
        self.dispatch(ctx);
    }
}
