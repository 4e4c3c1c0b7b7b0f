//! `broker.queue_flow_threshold` as a bound (issue 16, section 3): once a queue with
//! consumers holds the threshold (ready + unacked), its publishers get no further in,
//! whatever the consumers do; without consumers the memory watermark is the bound.
//!
//! "Gets no further" is shown without timing: after the queue reached the threshold, an
//! unrelated queue moves thousands of messages through the broker (work that takes far
//! longer than any hold the broker might time out), twice, and the held queue's depth
//! must be the same after both and within the threshold plus what was in flight.

use super::{connect, within};
use crate::support::{eventually, TestServer};
use actormq::client::{Client, ConsumeOptions};
use actormq::protocol::frame::take_frame;
use actormq::protocol::wire::*;
use actormq::{FieldTable, Session};
use bytes::BytesMut;
use futures_util::StreamExt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const THRESHOLD: usize = 500;
const WINDOW: usize = 1;
/// What may be in flight when the flow closes: the publish window's batches plus the
/// batch of the read that filled it (at most 256 messages each).
const SLACK: u64 = (WINDOW as u64 + 1) * 256;
/// Published in all: far beyond the bound.
const TOTAL: u64 = THRESHOLD as u64 + 8 * SLACK;
/// Published in all to a consumer that stops reading its socket: the socket buffers
/// (several MiB on loopback) take deliveries before the queue backs up.
const TOTAL_PAST_SOCKETS: u64 = 40_000;
const BODY: usize = 1024;

fn server() -> TestServer {
    TestServer::with(|s| {
        s.broker.queue_flow_threshold = THRESHOLD;
        s.broker.publish_window = WINDOW;
    })
}

/// Ready + unacked: what the threshold bounds.
async fn depth(s: &Session, queue: &str) -> u64 {
    let st = s.queue_stats(queue).await.unwrap();
    st.ready + st.unacked
}

/// Work through the broker that takes far longer than any bounded hold: `n` messages
/// published to a queue of their own and consumed back.
async fn clock(c: &Client, n: usize) {
    c.declare_queue("clock", &Default::default()).await.unwrap();
    let mut consumer = c
        .consume(
            "clock",
            &ConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    for i in 0..n {
        drop(c.publish("", "clock", i.to_string()).await.unwrap());
    }
    within("the clock messages back", async {
        for _ in 0..n {
            consumer.next().await.expect("a delivery").unwrap();
        }
    })
    .await;
    consumer.cancel().await.unwrap();
}

/// Waits for `queue` to reach the threshold, then checks that its depth stays put, within
/// the bound, while the broker does other work; answers that depth.
async fn assert_held(srv: &TestServer, queue: &str) -> u64 {
    let s = srv.handle().broker().session();
    eventually("the queue at the flow threshold", || async {
        depth(&s, queue).await >= THRESHOLD as u64
    })
    .await;
    let clocks = connect(srv).await;
    clock(&clocks, 5000).await;
    let held = depth(&s, queue).await;
    clock(&clocks, 5000).await;
    assert_eq!(
        depth(&s, queue).await,
        held,
        "the publisher got further while held"
    );
    assert!(
        held <= THRESHOLD as u64 + SLACK,
        "{held} messages held for a threshold of {THRESHOLD}"
    );
    held
}

/// Publishes `total` messages of BODY bytes on `c` with confirms, counting the confirms.
fn publisher(
    c: Client,
    queue: &'static str,
    total: u64,
) -> (tokio::task::JoinHandle<()>, Arc<AtomicU64>) {
    let confirmed = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn({
        let confirmed = confirmed.clone();
        async move {
            let mut pending = Vec::new();
            for _ in 0..total {
                pending.push(c.publish("", queue, vec![b'.'; BODY]).await.unwrap());
            }
            for p in pending {
                p.await.unwrap();
                confirmed.fetch_add(1, SeqCst);
            }
        }
    });
    (task, confirmed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_never_acks_stops_the_publisher() {
    for prefetch in [10, 0] {
        // prefetch 0: every message goes unacked at once, none stays ready.
        let srv = server();
        let consumer_conn = connect(&srv).await;
        consumer_conn
            .declare_queue("q", &Default::default())
            .await
            .unwrap();
        let consumer = consumer_conn
            .consume("q", &ConsumeOptions::prefetch(prefetch))
            .await
            .unwrap();
        let (task, _) = publisher(connect(&srv).await, "q", TOTAL);
        assert_held(&srv, "q").await;
        assert!(!task.is_finished(), "prefetch {prefetch}: not held");
        // The consumer goes (its deliveries back to ready): nobody to wait for, the
        // publisher finishes.
        drop(consumer);
        consumer_conn.close().await.unwrap();
        within("the publisher to finish", task).await.unwrap();
        let s = srv.handle().broker().session();
        assert_eq!(depth(&s, "q").await, TOTAL);
    }
}

/// A hand-driven connection: what the Rust client cannot be, a consumer that stops
/// reading its socket.
struct Raw {
    s: TcpStream,
    buf: BytesMut,
}

impl Raw {
    async fn open(addr: SocketAddr) -> Raw {
        let mut r = Raw {
            s: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        };
        r.send(&ClientFrame::Hello(Hello {
            version: 1,
            user: "guest".into(),
            password: "guest".into(),
            vhost: "/".into(),
            client: "flow-bound".into(),
            heartbeat_secs: Some(0),
            mechanism: None,
        }))
        .await;
        r.next_frame().await;
        r
    }

    async fn send(&mut self, f: &ClientFrame<'_>) {
        let mut out = BytesMut::new();
        encode_client(f, &mut out).unwrap();
        self.s.write_all(&out).await.unwrap();
    }

    async fn next_frame(&mut self) -> bytes::Bytes {
        loop {
            if let Some(f) = take_frame(&mut self.buf, 64 << 20).unwrap() {
                return f;
            }
            assert!(self.s.read_buf(&mut self.buf).await.unwrap() > 0, "closed");
        }
    }

    /// Declares `queue` and starts a no-ack consumer on it (answers read).
    async fn consume_no_ack(&mut self, queue: &str) {
        for (id, op) in [
            (
                1,
                Op::DeclareQueue {
                    name: queue.into(),
                    durable: false,
                    exclusive: false,
                    auto_delete: false,
                    passive: false,
                    arguments: FieldTable::new(),
                },
            ),
            (
                2,
                Op::Consume {
                    queue: queue.into(),
                    consumer_tag: "c".into(),
                    prefetch: 0,
                    no_ack: true,
                    exclusive: false,
                    arguments: FieldTable::new(),
                },
            ),
        ] {
            self.send(&ClientFrame::Request(Request { id, op })).await;
            let f = self.next_frame().await;
            assert!(
                matches!(decode_server(&f).unwrap(), ServerFrame::Reply { id: r, .. } if r == id)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_ack_consumer_slower_than_the_publisher_stops_it() {
    let srv = server();
    let mut slow = Raw::open(srv.addr).await;
    slow.consume_no_ack("q").await;
    // It reads nothing more: deliveries fill its socket and the queue backs up.
    let (task, _) = publisher(connect(&srv).await, "q", TOTAL_PAST_SOCKETS);
    assert_held(&srv, "q").await;
    assert!(!task.is_finished(), "not held");
    // The consumer reads again: the publisher finishes.
    let drain = tokio::spawn(async move {
        loop {
            slow.next_frame().await;
        }
    });
    within("the publisher to finish", task).await.unwrap();
    drain.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_publishing_to_its_own_no_ack_consumer_is_held() {
    let srv = server();
    let mut both = Raw::open(srv.addr).await;
    both.consume_no_ack("q").await;
    // Publishes without reading a thing: deliveries, confirms, all left unread.
    let body = vec![b'.'; BODY];
    let task = tokio::spawn(async move {
        for seq in 1..=TOTAL_PAST_SOCKETS {
            both.send(&ClientFrame::Publish(PublishFrame {
                seq,
                exchange: "",
                routing_key: "q",
                mandatory: false,
                properties: None,
                body: &body,
            }))
            .await;
        }
    });
    assert_held(&srv, "q").await;
    assert!(!task.is_finished(), "not held");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_consumers_the_memory_watermark_is_the_bound() {
    // Not slowed by the threshold (a queue may buffer while nobody consumes), but held
    // by the watermark, which counts everything a message holds.
    const WATERMARK: u64 = 2 * 1024 * 1024;
    let srv = TestServer::with(|s| {
        s.broker.queue_flow_threshold = THRESHOLD;
        s.broker.publish_window = WINDOW;
        s.broker.memory_high_watermark = WATERMARK;
    });
    let c = connect(&srv).await;
    c.declare_queue("q", &Default::default()).await.unwrap();
    let gauge = srv.handle().broker().memory().clone();
    let (task, confirmed) = publisher(c, "q", TOTAL);
    eventually("blocked at the watermark", || async { gauge.is_blocked() }).await;
    let s = srv.handle().broker().session();
    let held = depth(&s, "q").await;
    assert!(held > THRESHOLD as u64, "slowed by the flow threshold");
    assert!(
        held * (BODY as u64) < WATERMARK + (SLACK + 64) * BODY as u64,
        "{held} messages of {BODY} B for a watermark of {WATERMARK}"
    );
    assert!(!task.is_finished());
    s.purge("q").await.unwrap();
    eventually("the publisher goes on", || async {
        s.purge("q").await.unwrap();
        task.is_finished()
    })
    .await;
    assert_eq!(confirmed.load(SeqCst), TOTAL);
}
