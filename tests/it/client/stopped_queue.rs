//! A queue deleted while a publisher floods it, a classic queue and a stream: every
//! publish is answered, in publish order stored (confirmed), refused (nacked with the
//! reason), then routed nowhere once the queue is gone (a mandatory message given
//! back). The queue actor stops at the delete with batches still in its mailbox, and
//! the exchange goes on sending it more until the registry has removed its bindings:
//! the answers those batches carry are dropped unanswered, and must nack. Before
//! a7953b5 they were confirmed as routed nowhere (given back, being mandatory),
//! though the queue never stored them.

use super::{connect, within};
use crate::support::TestServer;
use actormq::client::{ClientError, Confirmation, PublishConfirm, PublishOptions, QueueOptions};

/// The nack of a message whose queue stopped before it answered.
const STOPPED: &str = "the queue stopped before it answered: the message may not be stored";

/// Rounds (a queue each) before a test gives up on seeing one batch dropped: about
/// one round in five drops some (20 runs at load 17-19: the first in rounds 0 to 15).
const ROUNDS: usize = 60;

/// What the publisher heard about one publish.
#[derive(Debug, PartialEq)]
enum Heard {
    /// Confirmed and kept (not given back).
    Kept,
    /// Nacked with this message.
    Nacked(String),
    /// Confirmed as routed nowhere (a mandatory message given back).
    Returned,
}

fn heard(r: Result<Confirmation, ClientError>) -> Heard {
    match r {
        Ok(c) if c.is_returned() => Heard::Returned,
        Ok(_) => Heard::Kept,
        Err(ClientError::Server { message, .. }) => Heard::Nacked(message),
        Err(e) => panic!("a publish ended without the broker's answer: {e}"),
    }
}

/// One round: declares `name` with `options`, floods it from one connection while
/// another deletes it (once a first publish is confirmed), publishing on until 200
/// more went after the delete-ok; what each publish heard, in publish order.
async fn flood_and_delete(server: &TestServer, name: &str, options: &QueueOptions) -> Vec<Heard> {
    let publisher = connect(server).await;
    let deleter = connect(server).await;
    publisher.declare_queue(name, options).await.unwrap();
    let mandatory = PublishOptions::default().mandatory();
    let first = publisher
        .publish_with("", name, "first", &mandatory)
        .await
        .unwrap();
    assert_eq!(heard(within("the first confirm", first).await), Heard::Kept);
    let deleted = tokio::spawn({
        let name = name.to_string();
        async move { deleter.delete_queue(&name).await }
    });
    let mut pending: Vec<PublishConfirm> = Vec::new();
    let mut after = 0;
    while after < 200 {
        let body = format!("m{}", pending.len());
        pending.push(
            publisher
                .publish_with("", name, body, &mandatory)
                .await
                .unwrap(),
        );
        if deleted.is_finished() {
            after += 1;
        }
        assert!(pending.len() < 1_000_000, "the delete never finished");
    }
    within("the delete", deleted).await.unwrap().unwrap();
    let mut got = Vec::new();
    for p in pending {
        got.push(heard(within("a publish's answer", p).await));
    }
    got
}

/// Floods and deletes a queue of `options` round after round until a round drops a
/// batch: every round's answers in order (`reasons`: the nacks allowed besides
/// [`STOPPED`]), ending with messages routed nowhere.
async fn until_a_batch_is_dropped(options: QueueOptions, reasons: &[&str]) {
    let server = TestServer::start();
    for round in 0..ROUNDS {
        let name = format!("flooded{round}");
        let got = flood_and_delete(&server, &name, &options).await;
        let rank = |h: &Heard| match h {
            Heard::Kept => 0,
            Heard::Nacked(m) => {
                assert!(
                    m.contains(STOPPED) || reasons.iter().any(|r| m.contains(r)),
                    "round {round}: nack reason: {m}"
                );
                1
            }
            Heard::Returned => 2,
        };
        let ranks: Vec<u8> = got.iter().map(rank).collect();
        // A confirm after a refusal would be one for a message the queue never stored.
        assert!(
            ranks.windows(2).all(|w| w[0] <= w[1]),
            "round {round}: out of order: {got:?}"
        );
        assert_eq!(
            ranks.last(),
            Some(&2),
            "round {round}: routed nowhere at last"
        );
        let stopped = got
            .iter()
            .filter(|h| matches!(h, Heard::Nacked(m) if m.contains(STOPPED)))
            .count();
        if stopped > 0 {
            eprintln!(
                "round {round}: {stopped} of {} nacked as dropped",
                got.len()
            );
            return;
        }
    }
    panic!("no batch was nacked as dropped unanswered in {ROUNDS} rounds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classic_queue_deleted_under_a_publish_flood_nacks_the_batches_it_dropped() {
    until_a_batch_is_dropped(QueueOptions::default(), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_deleted_under_a_publish_flood_nacks_the_batches_it_dropped() {
    let stream = QueueOptions::durable().arg("x-queue-type", "stream");
    // Batches its writer held are refused by the writer, naming the stream.
    until_a_batch_is_dropped(
        stream,
        &["was deleted or closed before the messages were stored"],
    )
    .await;
}
