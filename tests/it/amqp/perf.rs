//! `actormq perf --amqp-client raw` end to end against actormq's AMQP port (smoke runs,
//! not measurements): the lean client runs the same workloads as lapin, streams
//! included, and a run ends when its queue was held at the flow threshold.

use super::{amqp_url, within};
use crate::support::TestServer;
use actormq::perf::{run_amqp, AmqpClient, PerfArgs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_client_runs_a_stream_with_confirms_and_reads_it_from_first() {
    let server = TestServer::start();
    let url = amqp_url(&server);
    let args = PerfArgs {
        stream: true,
        confirm: true,
        consumers: 2,
        queues: 1,
        duration: 1,
        warmup: 0,
        size: 64,
        amqp_url: Some(url.clone()),
        amqp_client: AmqpClient::Raw,
        ..Default::default()
    };
    let report = run_amqp(args, url).await.unwrap();
    assert_eq!(report.publish_failures, 0);
    assert!(report.confirmed_per_sec > 0.0, "{}", report.table());
    assert!(report.consumed_per_sec > 0.0, "{}", report.table());
    assert!(report.queue_depth_end > 0, "a stream keeps what was read");
    let client = actormq::client::Client::connect(actormq::client::ConnectOptions::new(
        server.addr.to_string(),
    ))
    .await
    .unwrap();
    let info = client
        .declare_queue(
            "perf.q0",
            &actormq::client::QueueOptions::durable().arg("x-queue-type", "stream"),
        )
        .await
        .unwrap();
    assert_eq!(info.messages, report.queue_depth_end);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_client_refuses_a_stream_without_acks_with_the_reason() {
    let server = TestServer::start();
    let url = amqp_url(&server);
    let args = PerfArgs {
        stream: true,
        auto_ack: true,
        duration: 1,
        warmup: 0,
        amqp_url: Some(url.clone()),
        amqp_client: AmqpClient::Raw,
        ..Default::default()
    };
    let Err(e) = run_amqp(args, url).await else {
        panic!("a stream run without acks was not refused");
    };
    assert!(e.contains("--stream needs acks"), "{e}");
}

/// The broker answers a publish to a queue with consumers past `queue_flow_threshold`
/// only once the consumers bring it down to half. The run used to stop its consumers
/// first, which stay registered until its end (an AMQP consumer is not cancelled when
/// the tool stops reading it), then wait for its producers' last confirms: for good.
/// The producers now stop first and take their confirms while the consumers consume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_ends_with_every_confirm_when_its_queue_was_held_at_the_flow_threshold() {
    let server = TestServer::with(|s| s.broker.queue_flow_threshold = 200);
    let url = amqp_url(&server);
    // The consumer at 50/s, far behind the producer: the queue reaches the threshold
    // within the run and its publisher is held when the run ends.
    let args = PerfArgs {
        confirm: true,
        consumer_rate: 50,
        prefetch: 10,
        duration: 1,
        warmup: 0,
        size: 64,
        amqp_url: Some(url.clone()),
        amqp_client: AmqpClient::Raw,
        ..Default::default()
    };
    let report = within("the perf run to end", run_amqp(args, url))
        .await
        .unwrap();
    assert_eq!(report.publish_failures, 0, "{}", report.table());
    assert_eq!(
        report.unconfirmed_at_end,
        0,
        "every confirm taken before the consumers stopped: {}",
        report.table()
    );
    assert!(report.confirmed_per_sec > 0.0, "{}", report.table());
}

/// Through lapin, a confirm window of 1,000 is 1,000 publishes awaiting their confirms
/// in the producer's own set, not 1,000 tasks: a task per publish cost a spawn and two
/// wake-ups of the runtime from lapin's I/O thread per message (issue 17, branch
/// `lapin5`). Every confirm still arrives, and the consumer (taking what lapin has
/// ready without a boxed future) consumes what was published.
#[cfg(feature = "amqp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lapin_producer_keeps_its_confirm_window_without_a_task_per_publish() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let server = TestServer::start();
    let url = amqp_url(&server);
    let metrics = tokio::runtime::Handle::current().metrics();
    let idle_tasks = metrics.num_alive_tasks();
    let (most, done) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let sampler = tokio::spawn({
        let (most, done) = (most.clone(), done.clone());
        async move {
            while !done.load(Ordering::Relaxed) {
                most.fetch_max(metrics.num_alive_tasks(), Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }
    });
    let args = PerfArgs {
        confirm: true,
        confirm_window: 1000,
        persistent: true,
        duration: 1,
        warmup: 0,
        size: 64,
        amqp_url: Some(url.clone()),
        amqp_client: AmqpClient::Lapin,
        ..Default::default()
    };
    let report = within("the lapin run to end", run_amqp(args, url))
        .await
        .unwrap();
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    assert_eq!(report.publish_failures, 0, "{}", report.table());
    assert_eq!(report.unconfirmed_at_end, 0, "{}", report.table());
    assert!(report.confirmed_per_sec > 0.0, "{}", report.table());
    assert!(report.consumed_per_sec > 0.0, "{}", report.table());
    // The run's own tasks: a producer, a consumer, the sampler, lapin's few.
    let most = most.load(Ordering::Relaxed);
    assert!(
        most < idle_tasks + 50,
        "{most} tasks alive at once during the run ({idle_tasks} before it)"
    );
}
