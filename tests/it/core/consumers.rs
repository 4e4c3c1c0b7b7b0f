//! Consumers: round-robin, prefetch, settlements, what happens to unacked deliveries
//! when a consumer or session goes, broker-side cancels, exclusive consumers, and an
//! application actor as a consumer.

use super::*;
use actix::{Actor, Context, Handler};
use actormq::broker::messages::{Deliver, Settlement};
use futures_util::FutureExt;
use std::sync::Arc;
use tokio::sync::mpsc;

fn prefetch(n: u32) -> ConsumeOptions {
    ConsumeOptions {
        prefetch: n,
        ..Default::default()
    }
}

/// Publishes `m0`, `m1`, ... to `queue` through the default exchange.
async fn publish_numbered(s: &Session, queue: &str, n: usize) {
    for i in 0..n {
        assert_eq!(publish(s, "", queue, &format!("m{i}")).await, 1);
    }
}

fn names(prefix: &str, range: impl IntoIterator<Item = usize>) -> Vec<String> {
    range.into_iter().map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test]
async fn consumers_of_one_queue_are_served_round_robin() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare_queues(&s, &["work"]).await;
    let mut a = s.consume("work", &prefetch(0)).await.unwrap();
    let mut b = s.consume("work", &prefetch(0)).await.unwrap();

    publish_numbered(&s, "work", 10).await;

    let got_a = recv_n(&mut a, 5).await;
    let got_b = recv_n(&mut b, 5).await;
    assert_eq!(bodies(&got_a), names("m", (0..10).step_by(2)));
    assert_eq!(bodies(&got_b), names("m", (1..10).step_by(2)));
    assert_ne!(a.tag(), b.tag());
}

#[tokio::test]
async fn prefetch_limits_unacked_deliveries_until_acks_free_it() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare_queues(&s, &["q"]).await;
    publish_numbered(&s, "q", 5).await;

    let mut c = s.consume("q", &prefetch(2)).await.unwrap();
    let first = recv_n(&mut c, 2).await;
    assert_eq!(bodies(&first), ["m0", "m1"]);
    // Taking both out of the stream returned their transport credit (before this stats
    // request, from this task); only an ack frees prefetch, so nothing more went out.
    let st = s.queue_stats("q").await.unwrap();
    assert_eq!((st.ready, st.unacked), (3, 2));
    assert!(c.next().now_or_never().is_none(), "a third delivery");

    let mut first = first.into_iter();
    first.next().unwrap().ack();
    let third = recv(&mut c).await;
    assert_eq!(body(&third), "m2");
    let st = s.queue_stats("q").await.unwrap();
    assert_eq!((st.ready, st.unacked), (2, 2));
    assert!(c.next().now_or_never().is_none(), "a fourth delivery");

    first.next().unwrap().ack();
    third.ack();
    let rest = recv_n(&mut c, 2).await;
    assert_eq!(bodies(&rest), ["m3", "m4"]);
    for r in rest {
        r.ack();
    }
    eventually("every message acked", || async {
        let st = s.queue_stats("q").await.unwrap();
        (st.ready, st.unacked, st.bytes) == (0, 0, 0)
    })
    .await;
}

#[tokio::test]
async fn nack_with_requeue_puts_messages_back_at_the_head_in_order() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare_queues(&s, &["q"]).await;
    publish_numbered(&s, "q", 5).await;

    let mut c = s.consume("q", &prefetch(2)).await.unwrap();
    let got = recv_n(&mut c, 2).await;
    assert!(got.iter().all(|r| !r.redelivered && r.delivery_count == 1));
    drop(c);
    // Requeued in reverse order: each goes back to its original place.
    let mut got = got.into_iter();
    let (m0, m1) = (got.next().unwrap(), got.next().unwrap());
    m1.nack(true);
    m0.nack(true);

    let mut c = s.consume("q", &prefetch(0)).await.unwrap();
    let again = recv_n(&mut c, 5).await;
    assert_eq!(bodies(&again), names("m", 0..5));
    let flags: Vec<(bool, u32)> = again
        .iter()
        .map(|r| (r.redelivered, r.delivery_count))
        .collect();
    assert_eq!(
        flags,
        [(true, 2), (true, 2), (false, 1), (false, 1), (false, 1)]
    );
}

#[tokio::test]
async fn nack_or_reject_without_requeue_discards_and_with_requeue_redelivers() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare_queues(&s, &["q"]).await;
    publish_numbered(&s, "q", 3).await;

    let mut c = s.consume("q", &prefetch(0)).await.unwrap();
    let mut got = recv_n(&mut c, 3).await.into_iter();
    got.next().unwrap().nack(false);
    got.next().unwrap().reject(false);
    got.next().unwrap().reject(true);

    let back = recv(&mut c).await;
    assert_eq!(body(&back), "m2");
    assert!(back.redelivered);
    let st = s.queue_stats("q").await.unwrap();
    assert_eq!((st.ready, st.unacked), (0, 1), "m0 and m1 are gone");
    back.ack();
    eventually("the queue empty", || async {
        let st = s.queue_stats("q").await.unwrap();
        (st.ready, st.unacked, st.bytes) == (0, 0, 0)
    })
    .await;
}

/// Regression: a dropped Consumer used to leave the deliveries it had received but not
/// yet handed out unacked, with nobody able to settle them, until its session dropped.
#[tokio::test]
async fn dropping_a_consumer_requeues_what_it_never_handed_out() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare_queues(&s, &["q"]).await;
    publish_numbered(&s, "q", 10).await;

    let mut c = s.consume("q", &prefetch(0)).await.unwrap();
    let held = recv_n(&mut c, 2).await;
    eventually("all ten sent to the consumer", || async {
        let st = s.queue_stats("q").await.unwrap();
        (st.ready, st.unacked) == (0, 10)
    })
    .await;

    drop(c);
    eventually("the eight never handed out are back", || async {
        let st = s.queue_stats("q").await.unwrap();
        (st.ready, st.unacked, st.consumers) == (8, 2, 0)
    })
    .await;
    // What was handed out is still the application's to settle.
    for r in held {
        r.ack();
    }
    eventually("the two held ones acked", || async {
        s.queue_stats("q").await.unwrap().unacked == 0
    })
    .await;
    let mut rest = Vec::new();
    while let Some(r) = s.get("q", true).await.unwrap() {
        assert!(r.redelivered, "{} was sent once already", body(&r));
        rest.push(body(&r));
    }
    assert_eq!(rest, names("m", 2..10));
}

#[tokio::test]
async fn dropping_a_session_requeues_its_unacked_deliveries_and_loses_none() {
    let broker = TestBroker::start();
    let first = broker.session();
    declare_queues(&first, &["q"]).await;
    publish_numbered(&first, "q", 6).await;

    // m0 taken with a get, m1 and m2 by a consumer; m1 acked, which lets m3 go out to
    // the consumer, where it stays in the stream.
    let m0 = first.get("q", false).await.unwrap().expect("m0");
    let mut c = first.consume("q", &prefetch(2)).await.unwrap();
    let mut got = recv_n(&mut c, 2).await.into_iter();
    got.next().unwrap().ack();
    let m2 = got.next().unwrap();
    assert_eq!((body(&m0), body(&m2)), ("m0".into(), "m2".into()));
    eventually("m3 sent to the consumer", || async {
        let st = first.queue_stats("q").await.unwrap();
        (st.ready, st.unacked) == (2, 3)
    })
    .await;

    drop((c, m0, m2, first));

    let second = broker.session();
    eventually("everything unacked back in the queue", || async {
        let st = second.queue_stats("q").await.unwrap();
        (st.ready, st.unacked) == (5, 0)
    })
    .await;
    let mut c = second.consume("q", &prefetch(0)).await.unwrap();
    let again = recv_n(&mut c, 5).await;
    assert_eq!(bodies(&again), ["m0", "m2", "m3", "m4", "m5"]);
    let redelivered: Vec<bool> = again.iter().map(|r| r.redelivered).collect();
    assert_eq!(redelivered, [true, true, true, false, false]);
}

#[tokio::test]
async fn deleting_a_queue_cancels_its_consumers() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare_queues(&s, &["doomed"]).await;
    let mut c = s.consume("doomed", &prefetch(0)).await.unwrap();
    publish(&s, "", "doomed", "last").await;
    assert_eq!(body(&recv(&mut c).await), "last");

    s.delete_queue("doomed", false, false).await.unwrap();
    let end = within("the stream to end", c.next()).await;
    assert!(end.is_none(), "a delivery after the delete");
    let why = c.cancelled().expect("told why it ended");
    assert!(why.contains("'doomed'"), "{why}");
}

#[tokio::test]
async fn a_consumer_stream_ends_when_its_session_drops() {
    let broker = TestBroker::start();
    let s = broker.session();
    let other = broker.session();
    declare_queues(&s, &["q"]).await;
    let mut c = s.consume("q", &prefetch(0)).await.unwrap();
    drop(s);
    let end = within("the stream to end", c.next()).await;
    assert!(end.is_none());
    assert!(c.cancelled().is_none(), "not a broker-side cancel");
    eventually("the consumer detached", || async {
        other.queue_stats("q").await.unwrap().consumers == 0
    })
    .await;
}

#[tokio::test]
async fn exclusive_consumer_excludes_others_both_ways() {
    let broker = TestBroker::start();
    let s = broker.session();
    let other = broker.session();
    declare_queues(&s, &["q"]).await;
    let exclusive = ConsumeOptions {
        exclusive: true,
        ..Default::default()
    };

    let plain = s.consume("q", &prefetch(0)).await.unwrap();
    expect_code(
        s.consume("q", &exclusive.clone()).await.map(|_| ()),
        ErrorCode::ResourceLocked,
    );
    drop(plain);
    eventually("the plain consumer detached", || async {
        s.queue_stats("q").await.unwrap().consumers == 0
    })
    .await;

    let _only = s.consume("q", &exclusive.clone()).await.unwrap();
    for (who, session) in [("same session", &s), ("other session", &other)] {
        let e = expect_code(
            session.consume("q", &prefetch(0)).await.map(|_| ()),
            ErrorCode::ResourceLocked,
        );
        assert!(e.message().contains("exclusive"), "{who}: {e}");
    }
}

#[tokio::test]
async fn consumer_tags_are_unique_per_queue_and_owner() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare_queues(&s, &["q"]).await;
    let tagged = ConsumeOptions {
        consumer_tag: "mine".into(),
        ..Default::default()
    };
    let c = s.consume("q", &tagged.clone()).await.unwrap();
    assert_eq!(c.tag(), "mine");
    expect_code(
        s.consume("q", &tagged).await.map(|_| ()),
        ErrorCode::NotAllowed,
    );
}

/// An application actor consuming through `Session::subscribe`, settling through
/// `Session::settle`.
struct Worker {
    session: Arc<Session>,
    seen: mpsc::UnboundedSender<String>,
}

impl Actor for Worker {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Worker {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _ctx: &mut Self::Context) {
        for d in &msg.deliveries {
            let _ = self
                .seen
                .send(String::from_utf8_lossy(&d.message.body).into_owned());
        }
        let ids = msg.deliveries.iter().map(|d| d.id).collect();
        self.session.settle(&msg.queue, ids, Settlement::Ack);
    }
}

#[tokio::test]
async fn an_actor_subscribed_to_a_queue_receives_and_acks_deliveries() {
    let broker = TestBroker::start();
    let s = Arc::new(broker.session());
    declare_queues(&s, &["jobs"]).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let session = s.clone();
    // Actors live on the broker's arbiters: the test runtime has no actix System.
    let worker = Worker::start_in_arbiter(&broker.context().next_arbiter(), move |_| Worker {
        session,
        seen: tx,
    });
    // Prefetch 2: twenty messages only get through if the acks arrive.
    let tag = s
        .subscribe("jobs", &prefetch(2), worker.recipient(), None)
        .await
        .unwrap();
    publish_numbered(&s, "jobs", 20).await;

    let mut seen = Vec::new();
    for _ in 0..20 {
        seen.push(within("a job", rx.recv()).await.expect("worker alive"));
    }
    assert_eq!(seen, names("m", 0..20));
    eventually("every delivery acked", || async {
        let st = s.queue_stats("jobs").await.unwrap();
        (st.ready, st.unacked, st.consumers) == (0, 0, 1)
    })
    .await;

    s.cancel("jobs", &tag).await.unwrap();
    assert_eq!(s.queue_stats("jobs").await.unwrap().consumers, 0);
    publish(&s, "", "jobs", "after-cancel").await;
    assert_eq!(drain(&s, "jobs").await, ["after-cancel"]);
    assert!(rx.try_recv().is_err(), "delivered after cancel");
}
