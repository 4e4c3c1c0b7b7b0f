//! Long durable queues keep their bodies on disk (`storage.queue_ram_messages`): a
//! backlog far larger than the memory watermark neither blocks publishers nor fills
//! memory, and comes back in order, over the network and after a restart.

use super::{runtime, within};
use crate::support::{eventually, TestServer};
use actormq::client::{Client, ConnectOptions, ConsumeOptions, PublishOptions, QueueOptions};
use actormq::storage::StorageOptions;
use actormq::{Broker, BrokerHandle, Message};
use futures_util::StreamExt;
use std::path::Path;

const WATERMARK: u64 = 1 << 20;

fn body(i: u64) -> Vec<u8> {
    let mut b = format!("{i:06}:").into_bytes();
    b.resize(1024, b'.');
    b
}

fn index(b: &[u8]) -> u64 {
    std::str::from_utf8(&b[..6]).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_far_above_the_memory_watermark_waits_on_disk_and_comes_back_in_order() {
    let server = TestServer::with(|s| {
        s.broker.memory_high_watermark = WATERMARK;
        s.storage.queue_ram_messages = 64;
        s.storage.segment_size = 256 * 1024;
    });
    let client = Client::connect(ConnectOptions::new(server.addr.to_string()))
        .await
        .unwrap();
    client
        .declare_queue("backlog", &QueueOptions::durable())
        .await
        .unwrap();
    // 4 MiB of persistent bodies (every tenth transient: those stay in memory), four
    // times the watermark, and no consumer: without paging the publisher would block.
    const N: u64 = 4000;
    let mut confirms = Vec::new();
    for i in 0..N {
        let options = if i % 10 == 9 {
            PublishOptions::default()
        } else {
            PublishOptions::default().persistent()
        };
        confirms.push(
            client
                .publish_with("", "backlog", body(i), &options)
                .await
                .unwrap(),
        );
    }
    for c in confirms {
        within("a confirm", c)
            .await
            .expect("confirmed, not blocked");
    }
    let memory = server.handle().broker().memory();
    assert!(
        (memory.used() as u64) < WATERMARK / 2,
        "bodies held in memory: {} bytes",
        memory.used()
    );
    let info = client
        .declare_queue("backlog", &QueueOptions::durable())
        .await
        .unwrap();
    assert_eq!(info.messages, N);

    // A few gets, then a consumer for the rest: every message once, in order.
    let mut seen = Vec::new();
    for _ in 0..100 {
        let got = client
            .get("backlog", false)
            .await
            .unwrap()
            .expect("a message");
        seen.push(index(&got.delivery.body));
        got.delivery.ack().unwrap();
    }
    let mut consumer = client
        .consume("backlog", &ConsumeOptions::prefetch(100))
        .await
        .unwrap();
    while (seen.len() as u64) < N {
        let d = within("a delivery", consumer.next())
            .await
            .expect("a delivery")
            .expect("no error");
        assert!(!d.redelivered);
        seen.push(index(&d.body));
        d.ack().unwrap();
    }
    assert_eq!(seen, (0..N).collect::<Vec<_>>());
    eventually("the queue is empty and memory released", || async {
        memory.used() == 0
    })
    .await;
    drop(consumer);
    client.close().await.unwrap();
}

fn start(dir: &Path) -> BrokerHandle {
    let mut options = StorageOptions::in_dir(dir);
    options.segment_size = super::SEGMENT_SIZE;
    options.queue_ram_messages = 64;
    Broker::builder()
        .workers(2)
        .storage(options)
        .start()
        .expect("the broker starts on its data directory")
}

#[test]
fn a_long_backlog_comes_back_after_a_restart_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    const N: u64 = 3000;
    let broker = start(dir.path());
    rt.block_on(async {
        let s = broker.session();
        let q = QueueOptions::durable();
        s.declare_queue("q", &q).await.unwrap();
        for i in 0..N {
            let m = Message::new("", "q", body(i)).persistent();
            s.publish(m).await.unwrap().await.unwrap();
        }
        for _ in 0..10 {
            s.get("q", false).await.unwrap().unwrap().ack();
        }
        let held = s.get("q", false).await.unwrap().unwrap();
        assert_eq!(index(&held.message.body), 10);
        // Delivered, never settled: it comes back first, redelivered.
        std::mem::forget(held);
    });
    broker.shutdown();
    let broker = start(dir.path());
    rt.block_on(async {
        let s = broker.session();
        let mut got = Vec::new();
        while let Some(d) = s.get("q", true).await.unwrap() {
            got.push((index(&d.message.body), d.redelivered));
        }
        let want: Vec<(u64, bool)> = (10..N).map(|i| (i, i == 10)).collect();
        assert_eq!(got, want);
    });
    broker.shutdown();
}
