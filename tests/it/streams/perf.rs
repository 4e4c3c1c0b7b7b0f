//! `actormq perf --stream` end to end (a smoke run, not a measurement): it declares a
//! stream, publishes with confirms, and each consumer reads it from `first`.

use crate::support::TestServer;
use actormq::client::ConnectOptions;
use actormq::perf::{run, PerfArgs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perf_stream_mode_publishes_with_confirms_and_every_consumer_reads_from_first() {
    let server = TestServer::start();
    let args = PerfArgs {
        stream: true,
        confirm: true,
        consumers: 2,
        queues: 1,
        duration: 1,
        warmup: 0,
        size: 64,
        ..Default::default()
    };
    let report = run(args, ConnectOptions::new(server.addr.to_string()))
        .await
        .unwrap();
    assert_eq!(report.publish_failures, 0);
    assert!(report.confirmed_per_sec > 0.0, "{}", report.table());
    assert!(report.queue_depth_end > 0, "a stream keeps what was read");
    let c = super::connect(&server).await;
    let info = c.declare_queue("perf.q0", &super::stream()).await.unwrap();
    assert_eq!(info.messages, report.queue_depth_end);
}
