//! A service embedding the broker: no TCP, no separate process.
//!
//! - A work queue `jobs` shared by two worker *actors* of different speeds: each is
//!   subscribed with [`Session::subscribe`] (the queue sees it as a
//!   `Recipient<Deliver>`), works on one job at a time, and acks it with
//!   [`Session::settle`] when done.
//! - A fanout exchange `events` with two queues, each read as a `Stream` through
//!   [`Session::consume`] by an ordinary tokio task: every listener sees every event.
//!
//! What prefetch 1 guarantees: a worker holds at most one unacked job, so the queue
//! gives the next job to a worker that has finished its previous one. It does *not*
//! make the workers take turns: a free worker takes the next job whoever had the last
//! one, so the faster worker does more of the work (with the speeds below, about three
//! jobs in four; the exact split changes from run to run). Two equally fast workers
//! doing near-instant jobs do not alternate either: whichever acks first gets the next
//! job. The program checks the guarantee (at most one job in hand per worker) and
//! prints the split.
//!
//! The program runs a bounded amount of work and exits.
//!
//! ```text
//! cargo run --example embedded
//! ```

use actix::{Actor, AsyncContext, Context, Handler};
use actormq::broker::messages::{Deliver, Settlement};
use actormq::{
    Broker, BrokerError, ConsumeOptions, ExchangeOptions, FieldTable, Message, QueueOptions,
    Session,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const JOBS: u64 = 20;
const EVENTS: usize = 5;

/// What a worker reports for each job it finished.
struct Done {
    worker: &'static str,
    job: u64,
    result: u64,
    /// Jobs the worker had in hand (received, not yet acked) while on this one.
    in_hand: u32,
}

/// A worker actor: takes jobs off the work queue, works on each for `job_time`, acks,
/// reports.
struct Worker {
    /// Shown in the report.
    name: &'static str,
    /// How long one job takes (timer-driven, so the broker's threads never block).
    job_time: Duration,
    /// Jobs received and not yet acked: prefetch 1 keeps it at most 1.
    in_hand: u32,
    /// Where acks go (the session that subscribed this worker owns its deliveries).
    session: Arc<Session>,
    /// Results, back to `main`.
    done: mpsc::UnboundedSender<Done>,
}

impl Actor for Worker {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Worker {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        for d in msg.deliveries {
            self.in_hand += 1;
            let in_hand = self.in_hand;
            let queue = msg.queue.clone();
            // Finish the job later; the queue sends this worker nothing meanwhile.
            ctx.run_later(self.job_time, move |w, _| {
                let text = String::from_utf8_lossy(&d.message.body);
                let job: u64 = text.trim_start_matches("job-").parse().unwrap_or(0);
                // The "work": the sum 1 + 2 + ... + job.
                let result = (1..=job).sum();
                let _ = w.done.send(Done {
                    worker: w.name,
                    job,
                    result,
                    in_hand,
                });
                // Acked once done: with prefetch 1 the queue sends the next job only now.
                w.in_hand -= 1;
                w.session.settle(&queue, vec![d.id], Settlement::Ack);
            });
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), BrokerError> {
    // The broker runs its actix System on threads of its own: plain tokio is fine here.
    let broker = Broker::builder().workers(2).start()?;
    let session = Arc::new(broker.session());

    // --- Work queue with two worker actors.
    session.declare_queue("jobs", &QueueOptions::new()).await?;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut worker_tags = Vec::new();
    for (name, job_ms) in [("fast", 5), ("slow", 20)] {
        let worker = Worker {
            name,
            job_time: Duration::from_millis(job_ms),
            in_hand: 0,
            session: session.clone(),
            done: done_tx.clone(),
        };
        // Actors need a running actix System: start them on the broker's arbiters.
        let addr = Worker::start_in_arbiter(&broker.context().next_arbiter(), |_| worker);
        let options = ConsumeOptions::prefetch(1);
        let tag = session
            .subscribe("jobs", &options, addr.recipient(), None)
            .await?;
        worker_tags.push(tag);
    }

    // --- Fanout of events, each queue read as a stream by a tokio task.
    session
        .declare_exchange("events", "fanout", &ExchangeOptions::new())
        .await?;
    let mut listeners = Vec::new();
    for name in ["audit", "metrics"] {
        session.declare_queue(name, &QueueOptions::new()).await?;
        session
            .bind_queue(name, "events", "", FieldTable::new())
            .await?;
        let mut events = session.consume(name, &ConsumeOptions::default()).await?;
        listeners.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while seen.len() < EVENTS {
                let Some(event) = events.next().await else {
                    break;
                };
                seen.push(String::from_utf8_lossy(&event.message.body).into_owned());
                event.ack();
            }
            (name, seen)
        }));
    }

    // --- Publish, then wait until the broker has everything.
    let mut confirms = Vec::new();
    for job in 1..=JOBS {
        confirms.push(
            session
                .publish(Message::new("", "jobs", format!("job-{job}")))
                .await?,
        );
    }
    for event in 1..=EVENTS {
        confirms.push(
            session
                .publish(Message::new("events", "", format!("event-{event}")))
                .await?,
        );
    }
    for c in confirms {
        c.await?;
    }

    // --- Collect the results.
    let mut per_worker: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut most_in_hand = 0;
    for _ in 0..JOBS {
        let done = done_rx.recv().await.expect("the workers are running");
        println!(
            "{} finished job {:>2}: {}",
            done.worker, done.job, done.result
        );
        most_in_hand = most_in_hand.max(done.in_hand);
        per_worker.entry(done.worker).or_default().push(done.job);
    }
    // The guarantee of prefetch 1.
    assert_eq!(most_in_hand, 1, "a worker held more than one unacked job");
    println!("each worker held at most {most_in_hand} job at a time (prefetch 1)");
    for (worker, jobs) in &per_worker {
        println!("{worker} handled {} jobs: {jobs:?}", jobs.len());
    }
    println!("(the faster worker takes more jobs; the exact split varies per run)");
    for listener in listeners {
        let (name, seen) = listener.await.expect("listener task");
        println!("{name} saw {} events: {}", seen.len(), seen.join(", "));
    }

    // --- Clean up: detach the workers, stop the broker.
    for tag in worker_tags {
        session.cancel("jobs", &tag).await?;
    }
    broker.shutdown();
    Ok(())
}
