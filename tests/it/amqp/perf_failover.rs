//! `actormq perf --failover` against one broker: the broker closes the publisher's
//! connection in the middle of the run (as `rabbitmqctl close_connection` or a node's
//! death would), the tool connects again, republishes what was left unconfirmed and
//! carries on, and the history check finds every confirmed message in the quorum queue.

use super::{amqp_url, within};
use crate::support::{eventually, TestServer};
use actormq::perf::{AmqpClient, PerfArgs, PerfReport, QueueType, Watch};
use std::sync::Arc;
use tokio::task::JoinHandle;

/// A failover run that lasts until the test stops it.
fn failover_args() -> PerfArgs {
    PerfArgs {
        failover: true,
        queue_type: QueueType::Quorum,
        size: 1024,
        confirm_window: 100,
        rate: 5000,
        duration: 3600,
        warmup: 0,
        failover_timeout: 20,
        prefix: "fo".into(),
        ..Default::default()
    }
}

/// Closes the publisher's connection from the broker once it has confirms, waits for
/// the run to carry on past it, stops it and checks the report.
async fn close_the_publisher_and_check(
    server: &TestServer,
    watch: &Watch,
    run: JoinHandle<Result<PerfReport, String>>,
) {
    eventually("the first confirms", || async { watch.confirmed() >= 200 }).await;
    let conns = server.handle().front_end().connections();
    let publisher = conns
        .list()
        .into_iter()
        .find(|c| c.published > 0)
        .expect("the publisher's connection");
    assert!(conns.close(&publisher.id.to_string(), "test: failover"));
    eventually("the publisher back", || async { watch.reconnects() >= 1 }).await;
    let before = watch.confirmed();
    eventually("confirms after the reconnect", || async {
        watch.confirmed() >= before + 200
    })
    .await;
    watch.stop();
    let report = within("the run's end and check", run)
        .await
        .expect("the run's task")
        .expect("the run");
    let table = report.table();
    let f = report.failover.as_ref().expect("a failover report");
    assert_eq!(f.reconnects, 1, "{table}");
    assert_eq!(f.errors.len(), 1, "{table}");
    assert!(f.failover_ms.is_some(), "{table}");
    assert_eq!(f.gave_up, None, "{table}");
    let check = f
        .check
        .as_ref()
        .unwrap_or_else(|| panic!("the history check ran: {table}"));
    assert_eq!(check.confirmed_missing, 0, "{table}");
    assert!(check.distinct >= f.confirmed, "{table}");
    assert_eq!(check.consumed, report.queue_depth_end, "{table}");
    assert_eq!(f.unconfirmed_at_end, 0, "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_amqp_client_moves_on_after_the_broker_closes_its_connection() {
    let server = TestServer::start();
    let url = amqp_url(&server);
    let list = format!("{url},{url}");
    let args = PerfArgs {
        amqp_client: AmqpClient::Raw,
        amqp_url: Some(list.clone()),
        ..failover_args()
    };
    let watch = Arc::new(Watch::default());
    let run = tokio::spawn(actormq::perf::run_amqp_watching(args, list, watch.clone()));
    close_the_publisher_and_check(&server, &watch, run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_native_client_moves_on_after_the_broker_closes_its_connection() {
    let server = TestServer::start();
    let addr = server.addr.to_string();
    let options = actormq::client::ConnectOptions::new(format!("{addr},{addr}"));
    let watch = Arc::new(Watch::default());
    let run = tokio::spawn(actormq::perf::run_watching(
        failover_args(),
        options,
        watch.clone(),
    ));
    close_the_publisher_and_check(&server, &watch, run).await;
}
