//! Backpressure, end to end through the embedding API: the memory watermark blocks a
//! publisher until consumers drain, and a stalled hop holds a publisher at its window.
//! Neither relies on timing: "stuck" is shown by a state from which nothing can move
//! (blocked, nothing in flight, no consumer; or a full window behind a closed gate).

use super::*;
use actormq::broker::exchange::{Binding, DestinationId, ExchangeType};
use actormq::settings::BrokerSettings;
use futures_util::FutureExt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_watermark_blocks_the_publisher_until_consumers_drain() {
    const WATERMARK: usize = 4 * 1024 * 1024;
    const BODY: usize = 1024;
    const WINDOW: usize = 16;
    // Three watermarks' worth: without backpressure the producer would simply finish.
    const TOTAL: u64 = 3 * (WATERMARK / BODY) as u64;
    let broker = TestBroker::from_builder(Broker::builder().settings(BrokerSettings {
        workers: 2,
        memory_high_watermark: WATERMARK as u64,
        publish_window: WINDOW,
        ..Default::default()
    }));
    let session = Arc::new(broker.session());
    declare_queues(&session, &["backlog"]).await;
    let gauge = broker.memory().clone();
    let sent = Arc::new(AtomicU64::new(0));
    let max_used = Arc::new(AtomicUsize::new(0));

    let producer = tokio::spawn({
        let (session, gauge) = (session.clone(), gauge.clone());
        let (sent, max_used) = (sent.clone(), max_used.clone());
        async move {
            for i in 0..TOTAL {
                let mut body = format!("{i:010}").into_bytes();
                body.resize(BODY, b'.');
                // Confirms are not awaited: only the window and the watermark can hold
                // this loop back.
                let _confirm = session
                    .publish(Message::new("", "backlog", body))
                    .await
                    .expect("publish");
                max_used.fetch_max(gauge.used(), SeqCst);
                sent.store(i + 1, SeqCst);
            }
        }
    });

    // Blocked, nothing in flight (the gauge holds exactly what the queue holds) and no
    // consumer: nothing can lower the level, so the producer cannot move again.
    eventually("the producer blocked with nothing in flight", || async {
        let before = sent.load(SeqCst);
        let st = session.queue_stats("backlog").await.unwrap();
        gauge.is_blocked()
            && gauge.used() >= WATERMARK
            && gauge.used() as u64 == st.bytes
            && st.ready == before
            && sent.load(SeqCst) == before
    })
    .await;
    let stuck_at = sent.load(SeqCst);
    assert!(
        !producer.is_finished(),
        "the producer finished: not blocked"
    );
    // The queue holds at most one batch (one message here) over the watermark.
    let held = stuck_at as usize * BODY;
    assert!(
        (WATERMARK..WATERMARK + BODY).contains(&held),
        "{held} bytes held for a watermark of {WATERMARK}"
    );
    // A few more observation points, each a round trip through the broker: no progress.
    for _ in 0..3 {
        let st = session.queue_stats("backlog").await.unwrap();
        assert_eq!((st.ready, sent.load(SeqCst)), (stuck_at, stuck_at));
        assert!(gauge.is_blocked());
    }

    // A consumer drains: the producer resumes, and every message arrives once, in order.
    let mut consumer = session
        .consume("backlog", &ConsumeOptions::default())
        .await
        .unwrap();
    for i in 0..TOTAL {
        let r = recv(&mut consumer).await;
        assert_eq!(
            &r.message.body[..10],
            format!("{i:010}").as_bytes(),
            "message {i} out of order"
        );
        assert!(!r.redelivered);
        r.ack();
    }
    within("the producer to finish", producer)
        .await
        .expect("producer task");
    eventually("the queue and the gauge empty", || async {
        let st = session.queue_stats("backlog").await.unwrap();
        (st.ready, st.unacked, gauge.used()) == (0, 0, 0)
    })
    .await;
    assert!(consumer.next().now_or_never().is_none(), "a duplicate");
    assert!(!gauge.is_blocked());

    // What the queues hold stays under the watermark plus one batch (checked above);
    // the gauge itself may read higher for a moment, because a batch counts both as its
    // publisher's reservation and in its queue between the enqueue and the exchange's
    // answer. That overlap is bounded by the publish window.
    let max = max_used.load(SeqCst);
    assert!(
        max < WATERMARK + (WINDOW + 1) * BODY,
        "gauge reached {max} bytes for a watermark of {WATERMARK}"
    );
}

/// Shared by the test and the exchange type: a gate that the first `route` call waits
/// on, and a signal that it has started waiting.
struct Gate {
    /// Taken by the first `route` call, which blocks until the test sends on (or drops)
    /// the other end.
    closed: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    /// Told when `route` starts waiting.
    entered: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

/// A fanout whose first routing decision stalls until the test opens the gate: a hop
/// that stops moving (here it blocks the broker's only worker thread).
struct GatedFanout {
    gate: Arc<Gate>,
}

impl ExchangeType for GatedFanout {
    fn route(&self, _message: &Message, bindings: &[Binding], out: &mut Vec<DestinationId>) {
        let closed = self.gate.closed.lock().unwrap().take();
        if let Some(closed) = closed {
            if let Some(entered) = self.gate.entered.lock().unwrap().take() {
                let _ = entered.send(());
            }
            let _ = closed.recv();
        }
        out.extend(bindings.iter().map(|b| b.destination));
    }
}

#[tokio::test]
async fn a_stalled_hop_holds_the_publisher_at_its_window() {
    const WINDOW: usize = 2;
    const TOTAL: usize = 20;
    let (open, closed) = std::sync::mpsc::channel::<()>();
    let (entered_tx, entered) = tokio::sync::oneshot::channel();
    let gate = Arc::new(Gate {
        closed: Mutex::new(Some(closed)),
        entered: Mutex::new(Some(entered_tx)),
    });
    let broker = TestBroker::from_builder(
        Broker::builder()
            .settings(BrokerSettings {
                workers: 1,
                publish_window: WINDOW,
                ..Default::default()
            })
            .exchange_type("x-gated", move || {
                Box::new(GatedFanout { gate: gate.clone() })
            }),
    );
    // Moved after the broker so that it drops first: a failing test opens the gate
    // before the broker's shutdown waits for the worker thread.
    let open = open;
    let s = broker.session();
    s.declare_exchange("gated", "x-gated", &ExchangeOptions::new())
        .await
        .unwrap();
    declare_queues(&s, &["out"]).await;
    s.bind_queue("out", "gated", "", FieldTable::new())
        .await
        .unwrap();
    let msg = |i: usize| Message::new("gated", "", format!("m{i}"));

    // One batch per publish: the first stalls in route(), the second waits behind it.
    let mut confirms = Vec::new();
    for i in 0..WINDOW {
        confirms.push(
            within("a publish within the window", s.publish(msg(i)))
                .await
                .unwrap(),
        );
    }
    within("the hop to stall", entered).await.unwrap();

    // The window is full and nothing can free it while the gate is closed: the next
    // publish cannot complete, and nothing in flight is confirmed.
    let mut next = Box::pin(s.publish(msg(WINDOW)));
    assert!(
        (&mut next).now_or_never().is_none(),
        "a publish went past a full window"
    );
    for c in &mut confirms {
        assert!(
            c.now_or_never().is_none(),
            "confirmed through a stalled hop"
        );
    }
    assert!((&mut next).now_or_never().is_none());

    open.send(()).unwrap();
    confirms.push(
        within("the held publish once the hop moves", next)
            .await
            .unwrap(),
    );
    for i in WINDOW + 1..TOTAL {
        confirms.push(s.publish(msg(i)).await.unwrap());
    }
    for c in confirms {
        assert_eq!(within("a confirm", c).await.unwrap().queues, 1);
    }
    let expected: Vec<String> = (0..TOTAL).map(|i| format!("m{i}")).collect();
    assert_eq!(drain(&s, "out").await, expected);
}
