//! Who gets what, in which order: priority queues, consumer priorities, the single
//! active consumer, and the consumer (visibility) timeout.

use super::*;
use futures_util::FutureExt;

#[tokio::test]
async fn a_priority_queue_delivers_higher_priorities_first_fifo_within_one() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare(&s, "q", &[("x-max-priority", FieldValue::Int(10))]).await;
    send(&s, msg("q", "none")).await.unwrap();
    for (b, p) in [
        ("one", 1),
        ("nine-a", 9),
        ("five", 5),
        ("nine-b", 9),
        ("max", 200),
    ] {
        send(&s, prioritised(msg("q", b), p)).await.unwrap();
    }
    // 200 is above x-max-priority: it counts as 10.
    assert_eq!(
        drain(&s, "q").await,
        ["max", "nine-a", "nine-b", "five", "one", "none"]
    );
}

#[tokio::test]
async fn higher_priority_consumers_are_served_first_while_they_have_room() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare(&s, "q", &[]).await;
    let mut urgent_opts = prefetch(1);
    urgent_opts
        .arguments
        .insert("x-priority".into(), FieldValue::Int(10));
    let mut urgent = s.consume("q", &urgent_opts).await.unwrap();
    let mut normal = s.consume("q", &prefetch(10)).await.unwrap();
    for i in 0..3 {
        send(&s, msg("q", &format!("m{i}"))).await.unwrap();
    }
    let first = recv(&mut urgent).await;
    assert_eq!(body(&first), "m0");
    assert_eq!(bodies(&recv_n(&mut normal, 2).await), ["m1", "m2"]);
    first.ack();
    send(&s, msg("q", "m3")).await.unwrap();
    assert_eq!(
        body(&recv(&mut urgent).await),
        "m3",
        "room again: urgent first"
    );
}

#[tokio::test]
async fn an_ill_typed_consumer_priority_is_refused_naming_it() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare(&s, "q", &[]).await;
    let mut opts = prefetch(1);
    opts.arguments.insert("x-priority".into(), "high".into());
    let e = expect_code(
        s.consume("q", &opts).await.map(|_| ()),
        ErrorCode::PreconditionFailed,
    );
    assert!(e.message().contains("'x-priority'"), "{e}");
}

#[tokio::test]
async fn only_the_single_active_consumer_receives_and_the_next_takes_over_in_order() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare(&s, "q", &[("x-single-active-consumer", true.into())]).await;
    let first_session = broker.session();
    let mut first = first_session.consume("q", &prefetch(10)).await.unwrap();
    let mut second = s.consume("q", &prefetch(10)).await.unwrap();
    for i in 0..4 {
        send(&s, msg("q", &format!("m{i}"))).await.unwrap();
    }
    // All four go to the first consumer: none to the second.
    let got = recv_n(&mut first, 4).await;
    assert_eq!(bodies(&got), ["m0", "m1", "m2", "m3"]);
    let mut got = got.into_iter();
    got.next().unwrap().ack();
    got.next().unwrap().ack();
    // The active consumer's connection goes: its unacked m2, m3 come back first.
    drop(got);
    drop(first);
    drop(first_session);
    send(&s, msg("q", "m4")).await.unwrap();
    let taken = recv_n(&mut second, 3).await;
    assert_eq!(bodies(&taken), ["m2", "m3", "m4"]);
    assert!(taken[0].redelivered && taken[1].redelivered && !taken[2].redelivered);
}

#[tokio::test]
async fn a_delivery_unacked_past_the_consumer_timeout_comes_back_and_a_late_ack_is_harmless() {
    let broker = TestBroker::start();
    let s = broker.session();
    declare(&s, "q", &[("x-consumer-timeout", FieldValue::Int(200))]).await;
    let mut c = s.consume("q", &prefetch(1)).await.unwrap();
    send(&s, msg("q", "job")).await.unwrap();
    let first = recv(&mut c).await;
    assert_eq!(first.delivery_count, 1);
    // Not acked in time: the same consumer (its prefetch slot freed) gets it again.
    let second = recv(&mut c).await;
    assert_eq!(body(&second), "job");
    assert!(second.redelivered);
    assert!(second.delivery_count >= 2);
    assert!(c.cancelled().is_none(), "the consumer is not touched");
    // The late ack names the old delivery: it settles nothing.
    first.ack();
    let st = stats(&s, "q").await;
    assert_eq!(
        (st.ready, st.unacked),
        (0, 1),
        "the redelivery is still out"
    );
    // Ack whatever delivery is current until the queue is empty.
    second.ack();
    within("the message acked for good", async {
        loop {
            while let Some(Some(r)) = c.next().now_or_never() {
                r.ack();
            }
            let st = stats(&s, "q").await;
            if (st.ready, st.unacked) == (0, 0) {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    memory_settles_at_zero(&broker).await;
}
