//! A service embedding the broker: no TCP, no separate process.
//!
//! - A work queue `jobs` shared by two worker *actors*: each is subscribed with
//!   [`Session::subscribe`] (the queue sees it as a `Recipient<Deliver>`), handles its
//!   jobs, and acks them with [`Session::settle`]. Prefetch 1 spreads the jobs fairly.
//! - A fanout exchange `events` with two queues, each read as a `Stream` through
//!   [`Session::consume`] by an ordinary tokio task: every listener sees every event.
//!
//! The program runs a bounded amount of work and exits.
//!
//! ```text
//! cargo run --example embedded
//! ```

use actix::{Actor, Context, Handler};
use actormq::broker::messages::{Deliver, Settlement};
use actormq::{
    Broker, BrokerError, ConsumeOptions, ExchangeOptions, FieldTable, Message, QueueOptions,
    Session,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc;

const JOBS: u64 = 20;
const EVENTS: usize = 5;

/// What a worker reports for each job it finished.
struct Done {
    worker: &'static str,
    job: u64,
    result: u64,
}

/// A worker actor: takes jobs off the work queue, computes, acks, reports.
struct Worker {
    /// Shown in the report.
    name: &'static str,
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

    fn handle(&mut self, msg: Deliver, _ctx: &mut Self::Context) {
        for d in &msg.deliveries {
            let text = String::from_utf8_lossy(&d.message.body);
            let job: u64 = text.trim_start_matches("job-").parse().unwrap_or(0);
            // The "work": the sum 1 + 2 + ... + job.
            let result = (1..=job).sum();
            let _ = self.done.send(Done {
                worker: self.name,
                job,
                result,
            });
        }
        // Acked once handled: with prefetch 1 the queue sends the next job only now.
        let ids = msg.deliveries.iter().map(|d| d.id).collect();
        self.session.settle(&msg.queue, ids, Settlement::Ack);
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
    for name in ["worker-1", "worker-2"] {
        let worker = Worker {
            name,
            session: session.clone(),
            done: done_tx.clone(),
        };
        // Actors need a running actix System: start them on the broker's arbiters.
        let addr = Worker::start_in_arbiter(&broker.context().next_arbiter(), |_| worker);
        let options = ConsumeOptions {
            prefetch: 1,
            ..Default::default()
        };
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
    for _ in 0..JOBS {
        let done = done_rx.recv().await.expect("the workers are running");
        println!(
            "{} finished job {:>2}: {}",
            done.worker, done.job, done.result
        );
        per_worker.entry(done.worker).or_default().push(done.job);
    }
    for (worker, jobs) in &per_worker {
        println!("{worker} handled {} jobs: {jobs:?}", jobs.len());
    }
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
