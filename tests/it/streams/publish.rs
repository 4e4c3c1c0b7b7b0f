//! The confirm path of a stream publish: the stream's writer thread answers the
//! publisher after its fsync. What must hold whoever answers: a failed write nacks
//! with the reason and nothing after it is confirmed; a stream deleted while
//! publishes are in flight answers every one of them, never confirming one it did not
//! store.

use super::*;
use actormq::client::{ClientError, Confirmation, PublishConfirm, PublishOptions};

/// What the client heard about one publish.
#[derive(Debug, PartialEq)]
enum Heard {
    /// Confirmed and kept (not returned).
    Kept,
    /// Confirmed as routed nowhere (a mandatory message given back).
    Returned,
    /// Nacked with this message.
    Nacked(String),
}

fn heard(r: Result<Confirmation, ClientError>) -> Heard {
    match r {
        Ok(c) if c.is_returned() => Heard::Returned,
        Ok(_) => Heard::Kept,
        Err(ClientError::Server { message, .. }) => Heard::Nacked(message),
        Err(e) => panic!("a publish ended without the broker's answer: {e}"),
    }
}

async fn answers(pending: Vec<PublishConfirm>) -> Vec<Heard> {
    let mut out = Vec::new();
    for p in pending {
        out.push(heard(within("a publish's answer", p).await));
    }
    out
}

/// Where stream `name` of vhost `/` keeps its segments.
fn stream_dir(server: &TestServer, name: &str) -> std::path::PathBuf {
    let data = server.data.as_ref().expect("storage").path();
    data.join("streams").join("%2F").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_stream_write_nacks_with_its_reason_and_nothing_after_it_is_confirmed() {
    let server = TestServer::start();
    let c = connect(&server).await;
    let small = stream().arg("x-stream-max-segment-size-bytes", 4096i64);
    c.declare_queue("s", &small).await.unwrap();
    // Every segment file the stream could roll to is a directory: the first roll's
    // open fails, a write error injected without touching the broker.
    let dir = stream_dir(&server, "s");
    assert!(dir.is_dir(), "{}", dir.display());
    for first in 1..=400u64 {
        std::fs::create_dir(dir.join(format!("{first:020}.seg"))).unwrap();
    }
    // A group written before the first roll is confirmed (a group that reaches the
    // roll fails whole, so the 300 below may all be refused).
    let first = c.publish("", "s", "first").await.unwrap();
    assert_eq!(heard(within("the first confirm", first).await), Heard::Kept);
    let mut pending = Vec::new();
    for i in 0..300 {
        pending.push(
            c.publish("", "s", format!("m{i:04}-{}", "x".repeat(100)))
                .await
                .unwrap(),
        );
    }
    let got = answers(pending).await;
    let kept = got.iter().take_while(|h| **h == Heard::Kept).count();
    assert!(kept < got.len(), "kept all {kept}: no write failed");
    for h in &got[kept..] {
        match h {
            Heard::Nacked(m) => assert!(
                m.contains("stream 's' could not store the messages"),
                "nack reason: {m}"
            ),
            other => panic!("after a failed write: {other:?} (all: {got:?})"),
        }
    }
    // The first failure names the file it could not open.
    let Heard::Nacked(first) = &got[kept] else {
        unreachable!()
    };
    assert!(first.contains("opening segment"), "{first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_deleted_mid_publish_answers_every_publish_and_confirms_none_it_dropped() {
    let server = TestServer::start();
    let c = connect(&server).await;
    c.declare_queue("s", &stream()).await.unwrap();
    let opts = PublishOptions::default().mandatory();
    let mut pending = Vec::new();
    for i in 0..500 {
        pending.push(
            c.publish_with("", "s", format!("a{i}"), &opts)
                .await
                .unwrap(),
        );
    }
    // Deleted while most of those are on their way (the first is answered: the
    // stream is publishing); publishing goes on after the delete-ok.
    let first = pending.remove(0);
    assert_eq!(heard(within("the first answer", first).await), Heard::Kept);
    within("the delete", c.delete_queue("s")).await.unwrap();
    for i in 0..100 {
        pending.push(
            c.publish_with("", "s", format!("c{i}"), &opts)
                .await
                .unwrap(),
        );
    }
    let got = answers(pending).await;
    // In publish order: stored (confirmed) before the delete, then refused while the
    // stream went (nacked, naming it), then routed nowhere once it was gone. A
    // confirm after a refusal would be one for a message the stream never stored.
    let rank = |h: &Heard| match h {
        Heard::Kept => 0,
        Heard::Nacked(m) => {
            assert!(
                m.contains("stream 's' was deleted or closed before the messages were stored"),
                "nack reason: {m}"
            );
            1
        }
        Heard::Returned => 2,
    };
    let ranks: Vec<u8> = got.iter().map(rank).collect();
    assert!(
        ranks.windows(2).all(|w| w[0] <= w[1]),
        "out of order: {got:?}"
    );
    // The last ones were published after the delete-ok: routed nowhere.
    assert_eq!(*ranks.last().unwrap(), 2);
}
