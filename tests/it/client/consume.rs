//! Consuming and getting: acks, nacks, requeues, cancels.

use super::{connect, within};
use crate::support::{eventually, TestServer};
use actormq::client::{Client, ClientError, ConsumeOptions, QueueOptions};
use futures_util::StreamExt;

async fn queue_with(client: &Client, name: &str, bodies: &[&str]) {
    client
        .declare_queue(name, &QueueOptions::default())
        .await
        .unwrap();
    let mut confirms = Vec::new();
    for b in bodies {
        confirms.push(client.publish("", name, b).await.unwrap());
    }
    for c in confirms {
        within("confirm", c).await.unwrap();
    }
}

async fn ready(client: &Client, queue: &str) -> u64 {
    let passive = QueueOptions {
        passive: true,
        ..Default::default()
    };
    client
        .declare_queue(queue, &passive)
        .await
        .unwrap()
        .messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumed_and_acked_messages_leave_the_queue() {
    let server = TestServer::start();
    let client = connect(&server).await;
    queue_with(&client, "q", &["a", "b", "c"]).await;
    let mut consumer = client
        .consume("q", &ConsumeOptions::prefetch(10))
        .await
        .unwrap();
    assert!(!consumer.tag().is_empty());
    for want in ["a", "b", "c"] {
        let d = within("delivery", consumer.next()).await.unwrap().unwrap();
        assert_eq!(d.body, want.as_bytes());
        assert_eq!(&*d.consumer_tag, consumer.tag());
        assert!(!d.redelivered && d.needs_ack());
        assert_eq!(d.delivery_count, 1);
        d.ack().unwrap();
    }
    consumer.cancel().await.unwrap();
    assert!(
        within("end", consumer.next()).await.is_none(),
        "stream ends"
    );
    drop(consumer);
    let other = connect(&server).await;
    drop(client);
    // Acked, so nothing comes back when the first connection goes.
    assert_eq!(ready(&other, "q").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_with_requeue_redelivers_the_message() {
    let server = TestServer::start();
    let client = connect(&server).await;
    queue_with(&client, "q", &["again"]).await;
    let mut consumer = client
        .consume("q", &ConsumeOptions::prefetch(1))
        .await
        .unwrap();
    let first = within("delivery", consumer.next()).await.unwrap().unwrap();
    assert!(!first.redelivered);
    first.nack(true).unwrap();
    let second = within("redelivery", consumer.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.body, "again".as_bytes());
    assert!(second.redelivered);
    assert_eq!(second.delivery_count, 2);
    assert!(second.delivery_tag > first.delivery_tag);
    second.reject(false).unwrap();
    consumer.cancel().await.unwrap();
    assert_eq!(ready(&client, "q").await, 0, "rejected without requeue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_answers_a_message_and_the_count_left_or_none() {
    let server = TestServer::start();
    let client = connect(&server).await;
    queue_with(&client, "q", &["one", "two"]).await;
    let got = client.get("q", false).await.unwrap().expect("a message");
    assert_eq!(got.delivery.body, "one".as_bytes());
    assert_eq!(got.message_count, 1);
    assert!(got.delivery.consumer_tag.is_empty());
    got.delivery.ack().unwrap();
    let got = client.get("q", true).await.unwrap().expect("a message");
    assert_eq!(got.delivery.body, "two".as_bytes());
    assert!(!got.delivery.needs_ack());
    assert!(client.get("q", false).await.unwrap().is_none());
    let err = client.get("missing", false).await.unwrap_err();
    assert_eq!(err.code(), Some(actormq::ErrorCode::NotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_multiple_settles_every_delivery_up_to_the_tag() {
    let server = TestServer::start();
    let client = connect(&server).await;
    queue_with(&client, "q", &["1", "2", "3", "4"]).await;
    let mut consumer = client
        .consume("q", &ConsumeOptions::prefetch(4))
        .await
        .unwrap();
    let mut last = 0;
    for _ in 0..4 {
        last = within("delivery", consumer.next())
            .await
            .unwrap()
            .unwrap()
            .delivery_tag;
    }
    client.ack_multiple(last).unwrap();
    consumer.cancel().await.unwrap();
    drop(consumer);
    drop(client);
    let other = connect(&server).await;
    assert_eq!(ready(&other, "q").await, 0, "all four acked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_consumer_receives_no_more() {
    let server = TestServer::start();
    let client = connect(&server).await;
    queue_with(&client, "q", &[]).await;
    let mut consumer = client
        .consume("q", &ConsumeOptions::prefetch(10))
        .await
        .unwrap();
    consumer.cancel().await.unwrap();
    assert!(within("end", consumer.next()).await.is_none());
    within("confirm", client.publish("", "q", "later").await.unwrap())
        .await
        .unwrap();
    let got = client.get("q", true).await.unwrap().expect("still queued");
    assert_eq!(got.delivery.body, "later".as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_consumer_requeues_what_it_did_not_settle() {
    let server = TestServer::start();
    let client = connect(&server).await;
    queue_with(&client, "q", &["a", "b", "c", "d", "e"]).await;
    let mut consumer = client
        .consume("q", &ConsumeOptions::prefetch(5))
        .await
        .unwrap();
    let d = within("delivery", consumer.next()).await.unwrap().unwrap();
    d.ack().unwrap();
    drop(consumer);
    eventually("the four others are back", || async {
        ready(&client, "q").await == 4
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_ack_consumer_empties_the_queue_without_acks() {
    let server = TestServer::start();
    let client = connect(&server).await;
    queue_with(&client, "q", &["a", "b"]).await;
    let options = ConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut consumer = client.consume("q", &options).await.unwrap();
    for _ in 0..2 {
        let d = within("delivery", consumer.next()).await.unwrap().unwrap();
        assert!(!d.needs_ack());
        d.ack().unwrap(); // a no-op
    }
    consumer.cancel().await.unwrap();
    drop(consumer);
    drop(client);
    let other = connect(&server).await;
    assert_eq!(ready(&other, "q").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_queue_cancels_its_consumer() {
    let server = TestServer::start();
    let client = connect(&server).await;
    queue_with(&client, "q", &[]).await;
    let mut consumer = client
        .consume("q", &ConsumeOptions::default())
        .await
        .unwrap();
    let admin = connect(&server).await;
    admin.delete_queue("q").await.unwrap();
    match within("cancel notice", consumer.next()).await {
        Some(Err(ClientError::ConsumerCancelled { consumer_tag, .. })) => {
            assert_eq!(consumer_tag, consumer.tag())
        }
        other => panic!("expected a cancel notice, got {other:?}"),
    }
    assert!(consumer.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_consumer_locks_out_others() {
    let server = TestServer::start();
    let client = connect(&server).await;
    queue_with(&client, "q", &[]).await;
    let options = ConsumeOptions {
        exclusive: true,
        ..Default::default()
    };
    let _first = client.consume("q", &options).await.unwrap();
    let err = client
        .consume("q", &ConsumeOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(actormq::ErrorCode::ResourceLocked),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settling_an_unknown_tag_is_reported_and_harmless() {
    let server = TestServer::start();
    let client = connect(&server).await;
    queue_with(&client, "q", &["a"]).await;
    client.ack(999).unwrap();
    eventually("the broker's complaint arrives", || async {
        let errors = client.take_errors();
        assert!(errors
            .iter()
            .all(|e| e.code() == Some(actormq::ErrorCode::PreconditionFailed)));
        !errors.is_empty()
    })
    .await;
    assert_eq!(ready(&client, "q").await, 1, "the connection goes on");
}
