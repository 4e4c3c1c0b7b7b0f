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

/// Rounds of an auto-ack consumer of a queue of `N` messages, cancelled after ten
/// deliveries; its stream yields what came before the cancel's answer. Whatever no
/// round received must still be in the queue: an auto-acked delivery on its way at
/// the cancel has left the queue, so it must reach the client, not come after the
/// answer (the client drops deliveries for a consumer it no longer has).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_ack_deliveries_on_their_way_at_a_cancel_are_not_lost() {
    const N: usize = 10_000;
    let server = TestServer::with(|s| s.broker.consumer_window = 50);
    let client = connect(&server).await;
    let bodies: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    queue_with(&client, "q", &refs).await;
    let mut received = 0;
    let options = ConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    for _ in 0..40 {
        if ready(&client, "q").await < 200 {
            break;
        }
        let mut consumer = client.consume("q", &options).await.unwrap();
        for _ in 0..10 {
            within("delivery", consumer.next()).await.unwrap().unwrap();
            received += 1;
        }
        consumer.cancel().await.unwrap();
        while let Some(d) = within("the stream's end", consumer.next()).await {
            d.unwrap();
            received += 1;
        }
    }
    let left = ready(&client, "q").await as usize;
    assert_eq!(
        left + received,
        N,
        "{} missing: {received} received, {left} left",
        N - left - received
    );
}

/// Frames sent right behind a cancel wait for its answer (which waits for the
/// deliveries before it), then are handled: nothing stalls, and a publish and a
/// request pipelined behind the cancel are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_pipelined_behind_a_cancel_are_handled_after_it() {
    let server = TestServer::with(|s| s.broker.consumer_window = 50);
    let client = connect(&server).await;
    let bodies: Vec<String> = (0..2000).map(|i| i.to_string()).collect();
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    queue_with(&client, "q", &refs).await;
    queue_with(&client, "after", &[]).await;
    let mut consumer = client
        .consume("q", &ConsumeOptions::prefetch(0))
        .await
        .unwrap();
    within("delivery", consumer.next()).await.unwrap().unwrap();
    let tag = consumer.tag().to_string();
    let declare = QueueOptions::default();
    let (cancelled, published, declared) = within("the pipelined requests", async {
        tokio::join!(
            client.cancel(&tag),
            async { client.publish("", "after", "x").await.unwrap().await },
            client.declare_queue("after", &declare),
        )
    })
    .await;
    cancelled.unwrap();
    published.unwrap();
    declared.unwrap();
    assert_eq!(ready(&client, "after").await, 1);
    // The deliveries the consumer holds are acked, the rest is still in the queue.
    let mut held = 0;
    while let Some(d) = within("the stream's end", consumer.next()).await {
        d.unwrap().ack().unwrap();
        held += 1;
    }
    eventually("every message held or ready", || async {
        ready(&client, "q").await as usize + held + 1 == 2000
    })
    .await;
}
