//! Memory that a message holds beyond its body (issue 16, section 2): a frame packed
//! with tiny header values is refused before it is decoded (the publish nacked, the
//! request failed, the connection kept), and the memory watermark counts properties and
//! decoded headers, not bodies alone.

use crate::support::{eventually, TestServer, DEADLINE};
use actormq::client::{Client, ConnectOptions, PublishOptions, QueueOptions};
use actormq::{ErrorCode, FieldValue};

async fn connect(srv: &TestServer) -> Client {
    Client::connect(ConnectOptions::new(srv.addr.to_string()))
        .await
        .expect("connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_whose_headers_decode_to_many_times_its_size_is_refused() {
    let srv = TestServer::start();
    let gauge = srv.handle().broker().memory().clone();
    let c = connect(&srv).await;
    c.declare_queue("nils", &Default::default()).await.unwrap();
    // 256 Ki nils: a 256 KiB frame that would take 10 MiB decoded (40x).
    let nils = || FieldValue::Array(vec![FieldValue::Void; 256 * 1024]);
    let options = PublishOptions::default().header("h", nils());
    let confirm = c.publish_with("", "nils", "", &options).await.unwrap();
    let err = tokio::time::timeout(DEADLINE, confirm)
        .await
        .expect("an answer")
        .expect_err("nacked");
    assert_eq!(err.code(), Some(ErrorCode::ResourceError), "{err:?}");
    assert!(
        err.server_message()
            .is_some_and(|m| m.contains("too many tiny values")),
        "{err:?}"
    );
    // The same in a request's arguments: that request fails.
    let args = QueueOptions {
        arguments: [("x-nils".to_string(), nils())].into_iter().collect(),
        ..Default::default()
    };
    let err = c.declare_queue("other", &args).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ResourceError), "{err:?}");
    // Nothing was taken in, and the connection carries on.
    assert_eq!(gauge.used(), 0);
    let passive = QueueOptions {
        passive: true,
        ..Default::default()
    };
    assert_eq!(c.declare_queue("nils", &passive).await.unwrap().messages, 0);
    assert!(c.declare_queue("other", &passive).await.is_err());
    // An ordinary header table of the same encoded size goes through.
    let strings = FieldValue::Array(vec![FieldValue::Str("s".repeat(40)); 6000]);
    let options = PublishOptions::default().header("h", strings);
    let confirm = c.publish_with("", "nils", "", &options).await.unwrap();
    tokio::time::timeout(DEADLINE, confirm)
        .await
        .expect("a confirm")
        .expect("confirmed");
    assert!(c.get("nils", true).await.unwrap().is_some());
    assert!(c.closed_reason().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watermark_counts_headers_not_bodies_alone() {
    const WATERMARK: u64 = 1024 * 1024;
    const TOTAL: usize = 30;
    let srv = TestServer::with(|s| s.broker.memory_high_watermark = WATERMARK);
    let gauge = srv.handle().broker().memory().clone();
    let c = connect(&srv).await;
    c.declare_queue("heavy", &Default::default()).await.unwrap();
    // Empty bodies, ~200 KiB of decoded headers each (a thousand small entries, a few
    // KiB on the wire): counted by bodies, thirty of them would weigh nothing.
    let mut options = PublishOptions::default();
    for i in 0..1000 {
        options = options.header(&format!("k{i}"), i as i64);
    }
    let publisher = tokio::spawn({
        let c = c.clone();
        async move {
            let mut confirms = Vec::new();
            for _ in 0..TOTAL {
                confirms.push(c.publish_with("", "heavy", "", &options).await.unwrap());
            }
            for confirm in confirms {
                confirm.await.unwrap();
            }
        }
    });
    let observer = connect(&srv).await;
    let passive = QueueOptions {
        passive: true,
        ..Default::default()
    };
    eventually("the publisher blocked by headers alone", || async {
        gauge.is_blocked() && gauge.used() as u64 >= WATERMARK
    })
    .await;
    let held = observer
        .declare_queue("heavy", &passive)
        .await
        .unwrap()
        .messages;
    assert!(
        (1..TOTAL as u64).contains(&held),
        "{held} messages held at the watermark"
    );
    assert!(!publisher.is_finished(), "not held back");
    // Consumers drain: the publisher resumes and finishes.
    let mut got = 0;
    while got < TOTAL {
        if observer.get("heavy", true).await.unwrap().is_some() {
            got += 1;
        } else {
            tokio::task::yield_now().await;
        }
    }
    tokio::time::timeout(DEADLINE, publisher)
        .await
        .expect("the publisher finishes")
        .unwrap();
    eventually("the gauge back to zero", || async { gauge.used() == 0 }).await;
}
