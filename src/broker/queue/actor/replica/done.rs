//! The leader's commands once committed (or refused): a get answered with the message
//! its `Deliver` checked out, a purge's count, a takeover's end, a consumer whose
//! registration failed cancelled.

use super::*;

/// Most times one `basic.get` picks again after its message was gone as its entry
/// applied (each time one message expired or went to a consumer): then it answers
/// empty.
const GET_RETRIES: u32 = 16;

impl QueueActor {
    /// A command was committed (or not).
    pub(super) fn replica_done(&mut self, cmd: Cmd, result: Result<GroupResponse, BrokerError>) {
        let r = self.replica();
        match cmd {
            Cmd::Return(None) => {
                r.taking_over = false;
                r.serving = result.is_ok() && r.leads() && r.group.term() == r.term;
                // A new leader's machine may be behind the definitions' limits.
                r.limits_check = true;
            }
            Cmd::Return(Some(_)) => {}
            // Committed or not, a get waiting on it looks again.
            Cmd::GiveBack { then, .. } => {
                for t in then {
                    let _ = t.send(());
                }
            }
            Cmd::Settle { by, .. } => {
                for c in r.consumers.iter_mut().filter(|c| by.contains(&c.id)) {
                    c.settling = c.settling.saturating_sub(1);
                }
            }
            Cmd::Clock(_) => {
                // Committed or not, the timer is armed again for the head as it is;
                // unless it already was (the head changed while this one was in
                // flight), whose timer must not be forgotten.
                if matches!(r.expiry, Some((_, None))) {
                    r.expiry = None;
                }
            }
            Cmd::Purge(tx) => {
                let _ = tx.send(result.map(|g| g.purged));
            }
            Cmd::Get {
                consumer,
                owner,
                auto_ack,
                picked,
                answer,
                tries,
            } => {
                r.pending.remove(&picked.0);
                let key = r.key(consumer);
                let held =
                    result.is_ok() && r.group.read(|q| q.holder(picked.0)) == Some(Some(key));
                if !held {
                    if result.is_err() {
                        // Refused or timed out: an entry that times out may still
                        // commit later, and its checkout would belong to nobody.
                        // Returned (a no-op if it never commits).
                        r.cmds.push_back(Cmd::Return(Some(key)));
                    } else if tries < GET_RETRIES && r.serving && r.leads() {
                        // Committed, but the message was gone as it applied (expired
                        // by the get's own `Clock`, or checked out to a consumer
                        // meanwhile): the next live one is taken instead of an empty
                        // answer while the queue holds one.
                        if let Some(next) = r.pick_for_get() {
                            let consumer = r.next_consumer;
                            r.next_consumer += 1;
                            r.pending.insert(next.0);
                            r.cmds.push_back(Cmd::Get {
                                consumer,
                                owner,
                                auto_ack,
                                picked: next,
                                answer,
                                tries: tries + 1,
                            });
                            return;
                        }
                    }
                    let _ = answer.send(Ok(None));
                    return;
                }
                let left = r.group.read(|q| q.ready_len() as u64).unwrap_or(0);
                if auto_ack {
                    r.cmds.push_back(Cmd::Settle {
                        ids: vec![picked.0],
                        how: How::Ack,
                        by: Vec::new(),
                    });
                } else {
                    r.out.insert(picked.0, Out { consumer, owner });
                }
                let _ = answer.send(Ok(Some((delivery(picked), left))));
            }
            Cmd::Consume {
                consumer, first, ..
            } => {
                if let Err(e) = result {
                    // Not committed because this node lost the leadership (frozen or
                    // cut off right after the consume was answered): the consumer
                    // moves to the new leader with the others (`replica_changed`),
                    // whose takeover returns whatever the entry, if it did commit,
                    // checked out to it here. Cancelling it instead lost an exclusive
                    // consumer across a leader change
                    // (`cluster::quorum_session::an_exclusive_consumer_stays_...`).
                    if !r.leads() || e.code() == ErrorCode::NotAllowed {
                        return;
                    }
                    // A credit change of a registered consumer that may not have
                    // committed: the consumer goes on (cancelling it would hand the
                    // messages its client still holds to others: delivered twice).
                    // Its credit in the machine is unknown, so it counts as the
                    // higher one: the next give-back of the extra writes it again.
                    if !first {
                        let acking = r
                            .consumers
                            .iter_mut()
                            .find(|c| c.id == consumer && !c.auto_ack && c.prefetch > 0);
                        if let Some(c) = acking {
                            c.boosted = true;
                        }
                        tracing::warn!(group = r.group.id(), consumer, error = %e, "quorum queue: a consumer's credit change was not committed; it keeps its consumer");
                        return;
                    }
                    // Not registered (or not known to be: a timed-out entry may still
                    // commit, and what the machine then checks out to it must come
                    // back): returned, a no-op if it never commits.
                    let key = r.key(consumer);
                    r.cmds.push_back(Cmd::Return(Some(key)));
                    if let Some(at) = r.consumers.iter().position(|c| c.id == consumer) {
                        let c = r.consumers.remove(at);
                        if let Some(to) = &c.handle.cancelled {
                            to.do_send(ConsumerCancelled {
                                consumer_tag: c.tag.clone(),
                                reason: format!(
                                    "quorum queue: the consumer was not registered: {e}"
                                ),
                            });
                        }
                    }
                }
            }
            Cmd::DeadSettled(ids) => r.dlx.settle_done(&ids, result.is_ok()),
            // Committed: followed (`x-expires`); not: written again if still behind.
            Cmd::SetLimits { .. } => {
                if result.is_err() {
                    r.limits_written = 0;
                }
                r.limits_check = true;
            }
            Cmd::Cancel(id) => {
                // Every checkout its cancel's entry came after is in the outbox now.
                r.take_checkouts();
                r.cancelled.remove(&id);
            }
        }
    }
}
