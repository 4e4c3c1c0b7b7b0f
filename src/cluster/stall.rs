//! The cluster runtime's stalls: blocking work kept off its worker threads, and a
//! probe that names the stalls left.
//!
//! The cluster runtime has two worker threads, which run every Raft core, the cluster
//! port's connections and the members' appends. A task that blocks one of them (a file
//! write and fsync, a large clone under a lock) holds up everything queued behind it on
//! that thread, and with both blocked the node answers nothing: its votes and appends
//! arrive late and elections take longer. An fsync is usually a few milliseconds, but
//! while a member writes a snapshot of hundreds of megabytes to the same disk one takes
//! hundreds (docs/CLUSTERING.md, "Where a failover's time goes"). [`blocking`] runs
//! such work with the worker's other tasks handed to another thread meanwhile.
//!
//! The probe ([`spawn_probe`]) names the stalls, so a slow failover can be laid beside
//! what the node's runtime was doing. It runs only when `actormq::cluster::stages`
//! logs at debug, so it costs nothing otherwise.

use std::time::Duration;

/// How often the probe asks to run.
const PERIOD: Duration = Duration::from_millis(20);

/// Lateness worth a log line: beyond the scheduler's ordinary jitter on a loaded
/// machine, and well under an election timeout.
const REPORTED: Duration = Duration::from_millis(50);

/// Runs `work`, which blocks its thread (file writes and fsyncs), without holding up
/// the other tasks of the runtime worker it is called on: they are handed to another
/// thread meanwhile (`tokio::task::block_in_place`). The calling task waits, as it
/// would for the work itself. Outside a multi-threaded runtime (a current-thread
/// runtime, which has no other worker to hand them to, or no runtime) it just runs.
pub(super) fn blocking<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// Starts the probe on the current runtime when the stage logs are on.
pub(super) fn spawn_probe() {
    if !tracing::enabled!(target: "actormq::cluster::stages", tracing::Level::DEBUG) {
        return;
    }
    tokio::spawn(async {
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let asked = tokio::time::Instant::now() + PERIOD;
            tick.tick().await;
            if let Some(late) = late_by(asked, tokio::time::Instant::now()) {
                tracing::debug!(
                    target: "actormq::cluster::stages",
                    late_ms = late.as_millis() as u64,
                    "cluster runtime stalled"
                );
            }
        }
    });
}

/// How late a task due at `due` ran at `ran`, when worth reporting.
fn late_by(due: tokio::time::Instant, ran: tokio::time::Instant) -> Option<Duration> {
    let late = ran.saturating_duration_since(due);
    (late >= REPORTED).then_some(late)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn blocking_work_leaves_the_workers_other_tasks_running() {
        // One worker, and the task it queues is the one the work waits for: without
        // the hand-off it could not run until the work ended.
        let seen = tokio::spawn(async {
            let (tx, rx) = std::sync::mpsc::channel();
            tokio::spawn(async move {
                let _ = tx.send(());
            });
            blocking(|| rx.recv_timeout(Duration::from_secs(10)).is_ok())
        });
        assert!(seen.await.unwrap(), "the worker's other task ran meanwhile");
    }

    #[tokio::test]
    async fn on_a_current_thread_runtime_blocking_work_just_runs() {
        assert_eq!(blocking(|| 7), 7);
        assert_eq!(std::thread::spawn(|| blocking(|| 8)).join().unwrap(), 8);
    }

    #[test]
    fn only_lateness_beyond_jitter_is_reported() {
        let due = tokio::time::Instant::now();
        assert_eq!(late_by(due, due + Duration::from_millis(10)), None);
        assert_eq!(late_by(due + Duration::from_millis(5), due), None);
        assert_eq!(
            late_by(due, due + Duration::from_millis(80)),
            Some(Duration::from_millis(80))
        );
    }
}
