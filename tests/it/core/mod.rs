//! The broker core through the embedding API, with no TCP: routing, declarations,
//! queues, consumers, flow control and custom exchange types, each test against a real
//! in-process broker of its own.
//!
//! Waits are on conditions with a generous deadline, never on time: a test that would
//! hang fails with a message instead.

mod consumers;
mod custom_types;
mod declare;
mod flow;
mod queues;
mod routing;
mod semantics;

use actormq::{Broker, BrokerBuilder, BrokerError, BrokerHandle, Consumer, ErrorCode, Received};
use actormq::{ConsumeOptions, ExchangeOptions, FieldTable, Message, QueueOptions, Session};
use std::future::Future;
use std::ops::Deref;

pub use crate::support::{eventually, DEADLINE};

/// A broker for one test, shut down when the test ends, failed or not.
pub struct TestBroker(BrokerHandle);

impl TestBroker {
    /// A broker with two workers and default settings.
    pub fn start() -> TestBroker {
        Self::from_builder(Broker::builder().workers(2))
    }

    /// A broker from a configured builder.
    pub fn from_builder(builder: BrokerBuilder) -> TestBroker {
        TestBroker(builder.start().expect("the broker starts"))
    }
}

impl Deref for TestBroker {
    type Target = BrokerHandle;

    fn deref(&self) -> &BrokerHandle {
        &self.0
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

/// Awaits `fut`, failing the test naming `what` if it does not finish by the deadline.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("not done within {DEADLINE:?}: {what}"))
}

/// The next delivery of `consumer` (the test fails if none comes or it was cancelled).
pub async fn recv(consumer: &mut Consumer) -> Received {
    within("the next delivery", consumer.next())
        .await
        .unwrap_or_else(|| panic!("consumer cancelled: {:?}", consumer.cancelled()))
}

/// The next `n` deliveries of `consumer`.
pub async fn recv_n(consumer: &mut Consumer, n: usize) -> Vec<Received> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(recv(consumer).await);
    }
    out
}

/// A delivery's body as text.
pub fn body(r: &Received) -> String {
    String::from_utf8(r.message.body.to_vec()).expect("utf-8 body")
}

/// The bodies of deliveries.
pub fn bodies(rs: &[Received]) -> Vec<String> {
    rs.iter().map(body).collect()
}

/// Declares plain queues.
pub async fn declare_queues(session: &Session, names: &[&str]) {
    for n in names {
        session
            .declare_queue(n, &QueueOptions::new())
            .await
            .unwrap_or_else(|e| panic!("declare queue {n}: {e}"));
    }
}

/// Publishes and waits for the confirmation; answers how many queues it reached.
pub async fn publish(session: &Session, exchange: &str, key: &str, body: &str) -> u32 {
    let confirm = session
        .publish(Message::new(exchange, key, body.to_string()))
        .await
        .expect("publish accepted");
    within("a confirmation", confirm)
        .await
        .expect("publish confirmed")
        .queues
}

/// Every message `queue` holds now, taken with auto-ack `get`s, as bodies.
pub async fn drain(session: &Session, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(r) = session.get(queue, true).await.expect("get") {
        out.push(body(&r));
    }
    out
}

/// The error of `res`, checked to carry `code`.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(
    res: Result<T, BrokerError>,
    code: ErrorCode,
) -> BrokerError {
    match res {
        Ok(v) => panic!("expected {code}, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(e.code(), code, "unexpected error: {e}");
            e
        }
    }
}
