//! The end and the setup of a queue: purge, delete, stop, and its storage attached.

use super::*;

impl Handler<Purge> for QueueActor {
    type Result = ResponseActFuture<Self, Result<u64, BrokerError>>;

    fn handle(&mut self, _msg: Purge, ctx: &mut Self::Context) -> Self::Result {
        if self.replica.is_some() && !self.deleted {
            self.drain_inbox(ctx);
            return self.replica_purge(ctx);
        }
        Box::pin(actix::fut::ready(self.purge(ctx)))
    }
}

impl QueueActor {
    fn purge(&mut self, ctx: &mut Context<Self>) -> Result<u64, BrokerError> {
        if self.stream.is_some() {
            return Err(BrokerError::precondition(format!(
                "purge is not supported by stream queue '{}' in vhost '{}': retention removes old segments",
                self.name, self.vhost
            )));
        }
        if self.drain_inbox(ctx) {
            self.dispatch_ready(ctx);
        }
        if self.deleted {
            return Err(self.not_found());
        }
        if let Some(home) = &self.remote {
            // A stand-in holds nothing: answering 0 would leave the home's messages
            // while saying they were purged. Refused as a conditional delete is.
            return Err(BrokerError::precondition(format!(
                "queue '{}' in vhost '{}' {}: purge it there (a purge is not forwarded between nodes)",
                self.name,
                self.vhost,
                home.describe()
            )));
        }
        let n = self.state.purge();
        self.durable.on_purge(&mut self.state);
        self.after(ctx);
        Ok(n)
    }
}

impl Handler<DeleteSelf> for QueueActor {
    type Result = Result<u64, BrokerError>;

    fn handle(&mut self, msg: DeleteSelf, ctx: &mut Self::Context) -> Self::Result {
        self.drain_inbox(ctx);
        if self.deleted {
            return Err(self.not_found());
        }
        if let Some(s) = self.stream.as_ref() {
            let (consumers, len) = (s.consumers().len(), s.log().len());
            if msg.if_unused && consumers > 0 {
                return Err(BrokerError::precondition(format!(
                    "queue '{}' in vhost '{}' in use: it has {consumers} consumer(s)",
                    self.name, self.vhost
                )));
            }
            if msg.if_empty && len > 0 {
                return Err(BrokerError::precondition(format!(
                    "queue '{}' in vhost '{}' not empty: it holds {len} message(s)",
                    self.name, self.vhost,
                )));
            }
            return Ok(self.delete(ctx, "deleted"));
        }
        if self.replica.is_some() {
            let s = self.replica_stats();
            if msg.if_unused && s.consumers > 0 {
                return Err(BrokerError::precondition(format!(
                    "queue '{}' in vhost '{}' in use: it has {} consumer(s)",
                    self.name, self.vhost, s.consumers
                )));
            }
            let held = if msg.ready_only {
                s.ready
            } else {
                s.ready + s.unacked
            };
            if msg.if_empty && held > 0 {
                return Err(BrokerError::precondition(format!(
                    "queue '{}' in vhost '{}' not empty: it holds {held} message(s)",
                    self.name, self.vhost,
                )));
            }
            return Ok(self.delete(ctx, "deleted"));
        }
        if msg.if_unused && !self.state.consumers().is_empty() {
            self.dispatch(ctx);
            return Err(BrokerError::precondition(format!(
                "queue '{}' in vhost '{}' in use: it has {} consumer(s)",
                self.name,
                self.vhost,
                self.state.consumers().len()
            )));
        }
        let held = if msg.ready_only {
            self.state.ready_len()
        } else {
            self.state.ready_len() + self.state.unacked_len() + self.state.delayed_len()
        };
        if msg.if_empty && held > 0 {
            self.dispatch(ctx);
            return Err(BrokerError::precondition(format!(
                "queue '{}' in vhost '{}' not empty: it holds {held} message(s)",
                self.name, self.vhost,
            )));
        }
        Ok(self.delete(ctx, "deleted"))
    }
}

impl Handler<StopQueue> for QueueActor {
    type Result = ();

    /// Takes the acks and cancels already in the inbox and appends what they settled
    /// (with any publish not yet written) before answering: the broker closes its store
    /// only after every queue has answered.
    fn handle(&mut self, _msg: StopQueue, ctx: &mut Self::Context) {
        self.drain_inbox(ctx);
        self.durable.commit(&mut self.state);
        ctx.stop();
    }
}

impl Handler<AttachStorage> for QueueActor {
    type Result = ();

    /// Makes the queue durable, refilled with what survived the restart (if anything).
    fn handle(&mut self, msg: AttachStorage, ctx: &mut Self::Context) {
        let now = self.now();
        self.durable = msg.durable;
        self.durable.attach(&mut self.state, msg.recovered, now);
        self.dispatch(ctx);
    }
}
