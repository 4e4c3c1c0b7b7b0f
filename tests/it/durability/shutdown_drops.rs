//! What a broker shutdown drops is refused, never confirmed: a queue stopped by
//! `BrokerHandle::shutdown` was not deleted, so a publish batch its actor dropped
//! unhandled (in its mailbox behind the stop) may have been meant to be stored. Only a
//! queue that was deleted counts what it dropped as routed nowhere (fc7b207,
//! `broker::exchange::answer::unanswered`).

use super::{runtime, within};
use actormq::{BrokerHandle, Message, QueueOptions};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Rounds of flood-then-shutdown. A batch lands behind a queue's stop in about one round
/// in four on a loaded two-core machine; 40 rounds make missing it unlikely.
const ROUNDS: u32 = 40;

/// Publishers per round, each its own session (its own publish window).
const PUBLISHERS: usize = 4;

/// What one round's publishes came to.
#[derive(Default, Debug)]
struct Outcomes {
    /// Confirmed as in the queue.
    stored: u64,
    /// Confirmed as routed nowhere: the defect this file is about.
    routed_nowhere: u64,
    /// Refused (nacked) or failed to send: what a shutdown may answer.
    refused: u64,
}

/// Publishes persistent messages to `jobs` until the broker refuses to take more,
/// counting each one sent in `sent`; answers every confirm's outcome.
async fn flood(broker: BrokerHandle, sent: Arc<AtomicU64>) -> Outcomes {
    let session = broker.session();
    let mut confirms = Vec::new();
    // Bounded, should the shutdown never come (the test then fails on its deadline).
    for i in 0..200_000u32 {
        let m = Message::new("", "jobs", format!("m{i}")).persistent();
        match session.publish(m).await {
            Ok(c) => confirms.push(c),
            Err(_) => break,
        }
        sent.fetch_add(1, Ordering::Relaxed);
    }
    let mut out = Outcomes::default();
    for c in confirms {
        match within("a confirm after the shutdown", c).await {
            Ok(c) if c.queues == 1 => out.stored += 1,
            Ok(_) => out.routed_nowhere += 1,
            Err(_) => out.refused += 1,
        }
    }
    out
}

/// Many publishes in flight to a durable queue when `BrokerHandle::shutdown` stops it:
/// every one is confirmed stored or refused, none confirmed as routed nowhere.
#[test]
fn a_publish_dropped_by_a_shutdown_is_refused_never_confirmed_as_routed_nowhere() {
    let rt = runtime();
    let mut total = Outcomes::default();
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let broker = super::embedded(dir.path());
        let outcomes = rt.block_on(async {
            broker
                .session()
                .declare_queue("jobs", &QueueOptions::durable())
                .await
                .unwrap();
            let sent = Arc::new(AtomicU64::new(0));
            let floods: Vec<_> = (0..PUBLISHERS)
                .map(|_| tokio::spawn(flood(broker.clone(), sent.clone())))
                .collect();
            // In full flow before the shutdown: a few windows' worth sent.
            crate::support::eventually("the publishers in full flow", || {
                let sent = sent.clone();
                async move { sent.load(Ordering::Relaxed) > 2_000 }
            })
            .await;
            let stopping = broker.clone();
            tokio::task::spawn_blocking(move || stopping.shutdown())
                .await
                .unwrap();
            let mut round_total = Outcomes::default();
            for f in floods {
                let o = within("a publisher to stop", f).await.unwrap();
                round_total.stored += o.stored;
                round_total.routed_nowhere += o.routed_nowhere;
                round_total.refused += o.refused;
            }
            round_total
        });
        assert_eq!(
            outcomes.routed_nowhere, 0,
            "round {round}: publishes to a queue stopped (never deleted) confirmed as routed nowhere: {outcomes:?}"
        );
        total.stored += outcomes.stored;
        total.refused += outcomes.refused;
    }
    assert!(total.stored > 0, "{total:?}");
    eprintln!("over {ROUNDS} rounds: {total:?}");
}
