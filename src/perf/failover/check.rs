//! The end of a failover run: the queue consumed to its end, each id set against the
//! confirmed ones.

use super::history::{self, History, HistoryCheck};
use crate::perf::driver::{Conn, Consumer, Driver};
use std::sync::Arc;
use std::time::Duration;

/// Consumes the queue to its end on the first server (from `at`) that serves it,
/// recording each id; answers the depth read before.
pub async fn check_queue<D: Driver>(
    drivers: &[Arc<D>],
    at: usize,
    queue: &str,
    history: &mut History,
    published: u64,
    idle: Duration,
) -> (u64, Result<HistoryCheck, String>) {
    // Every server's refusal, in the order tried: the last alone (often the killed
    // node's "connection refused") hides why the live ones could not serve.
    let mut refusals = Vec::new();
    for k in 0..drivers.len() {
        let d = &drivers[(at + k) % drivers.len()];
        let depth = d.depth(std::slice::from_ref(&queue.to_string())).await;
        match consume_all(d.as_ref(), queue, depth, history, published, idle).await {
            Ok(()) => return (depth, Ok(history.check())),
            Err(e) => refusals.push(format!("server {}: {e}", (at + k) % drivers.len() + 1)),
        }
    }
    if refusals.is_empty() {
        refusals.push("no server".into());
    }
    (0, Err(refusals.join("; ")))
}

async fn consume_all<D: Driver>(
    d: &D,
    queue: &str,
    depth: u64,
    history: &mut History,
    published: u64,
    idle: Duration,
) -> Result<(), String> {
    let conn = d.connect().await?;
    let mut consumer = conn.consume(queue, 1000, false, false, None).await?;
    // A leader change during the pass requeues and redelivers what this consumer holds
    // unacked: such a redelivery of an id this pass already had is not counted against
    // the depth, or the pass would stop short of the queue's tail and report its last
    // messages missing. (An id the queue holds twice, a republished message, counts
    // twice: both are in the depth.) Should the pass still come short, it ends when the
    // queue goes idle after at least `depth` deliveries.
    let mut this_pass = std::collections::HashSet::new();
    let (mut got, mut deliveries, mut unacked) = (0u64, 0u64, None);
    while got < depth {
        match tokio::time::timeout(idle, consumer.next()).await {
            Ok(Some(r)) => {
                let id = history::id_of(&r.body);
                history.consumed(id, published);
                deliveries += 1;
                let first = id.is_none_or(|id| this_pass.insert(id));
                if first || !r.redelivered {
                    got += 1;
                }
                unacked = Some(r.tag);
                if deliveries % 250 == 0 || got == depth {
                    consumer.ack(r.tag, true);
                    unacked = None;
                }
            }
            Ok(None) => return Err(format!("the consumer ended after {got} of {depth}")),
            Err(_) if deliveries >= depth => {
                if let Some(tag) = unacked {
                    consumer.ack(tag, true);
                }
                break;
            }
            Err(_) => {
                return Err(format!(
                    "nothing delivered for {idle:?} after {got} of {depth}"
                ))
            }
        }
    }
    // The last acks go out before the connection closes.
    tokio::task::yield_now().await;
    Ok(())
}
