//! Regression: one connection that publishes to a queue and consumes it must never
//! lock itself up when the queue's flow control holds its publishes (its acks wait
//! unread behind them in the socket).

use super::{connect, within};
use crate::support::TestServer;
use actormq::client::{ConsumeOptions, PublishOptions};
use futures_util::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_and_consuming_one_queue_on_one_connection_completes() {
    let server = TestServer::with(|s| {
        s.broker.queue_flow_threshold = 50;
        s.broker.publish_window = 2;
    });
    let client = connect(&server).await;
    client
        .declare_queue("self", &Default::default())
        .await
        .unwrap();
    let mut consumer = client
        .consume("self", &ConsumeOptions::prefetch(10))
        .await
        .unwrap();
    const N: usize = 3000;
    let publisher = client.clone();
    let publish = tokio::spawn(async move {
        let no_confirm = PublishOptions {
            confirm: Some(false),
            ..Default::default()
        };
        for i in 0..N {
            // Fire and forget: the confirm (ready at once, none was asked) is dropped.
            drop(
                publisher
                    .publish_with("", "self", i.to_string(), &no_confirm)
                    .await
                    .unwrap(),
            );
        }
    });
    within(
        "every message consumed on the publishing connection",
        async {
            for i in 0..N {
                let d = consumer.next().await.expect("a delivery").unwrap();
                assert_eq!(d.body, i.to_string().as_bytes());
                d.ack().unwrap();
            }
        },
    )
    .await;
    publish.await.unwrap();
}
