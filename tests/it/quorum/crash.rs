//! A quorum queue's confirm means "on disk" for every message, transient ones
//! (`delivery_mode` 1) included: `kill -9` the broker after confirms, acks and
//! unsettled deliveries, restart it, and check what comes back.

use super::quorum;
use crate::durability::{runtime, within, BrokerProcess};
use actormq::client::{Client, ConnectOptions, Delivery, PublishOptions};
use actormq::FieldValue;

const N: u64 = 100;

async fn connect(broker: &BrokerProcess) -> Client {
    within(
        "connect",
        Client::connect(ConnectOptions::new(&broker.addr).confirms(true)),
    )
    .await
    .unwrap()
}

/// A confirmed transient publish of `id` to the quorum queue.
async fn publish(c: &Client, id: u64) {
    let transient = PublishOptions {
        properties: actormq::Properties {
            delivery_mode: Some(1),
            ..Default::default()
        },
        ..Default::default()
    };
    let confirm = c
        .publish_with("", "safe", id.to_be_bytes(), &transient)
        .await
        .unwrap();
    within("a confirm", confirm)
        .await
        .unwrap_or_else(|e| panic!("publish {id} refused: {e}"));
}

fn id(d: &Delivery) -> u64 {
    u64::from_be_bytes(d.body[..8].try_into().unwrap())
}

async fn get(c: &Client) -> Option<Delivery> {
    within("a get", c.get("safe", false))
        .await
        .unwrap()
        .map(|g| g.delivery)
}

#[test]
fn confirmed_transient_messages_survive_kill_9_and_acked_ones_stay_gone() {
    let root = tempfile::tempdir().unwrap();
    let rt = runtime();
    let broker = BrokerProcess::start(root.path());
    let held = rt.block_on(async {
        let c = connect(&broker).await;
        c.declare_queue("safe", &quorum()).await.unwrap();
        for i in 1..=N {
            publish(&c, i).await;
        }
        let mut held = Vec::new();
        for i in 1..=15 {
            let d = get(&c).await.expect("a message");
            assert_eq!(id(&d), i);
            if i <= 10 {
                d.ack().unwrap();
            } else {
                held.push(d);
            }
        }
        // The log is written in order: once this publish is confirmed, the acks and
        // deliveries before it are on disk too.
        publish(&c, N + 1).await;
        (c, held)
    });
    broker.kill9();
    drop(held);

    let broker = BrokerProcess::start(root.path());
    rt.block_on(async {
        let c = connect(&broker).await;
        let info = c.declare_queue("safe", &quorum()).await.unwrap();
        assert_eq!(
            info.messages,
            N + 1 - 10,
            "every confirmed message not acked"
        );
        let mut back = Vec::new();
        while let Some(d) = get(&c).await {
            let header = d
                .properties
                .headers
                .as_ref()
                .and_then(|h| h.get("x-delivery-count"))
                .cloned();
            if (11..=15).contains(&id(&d)) {
                assert!(d.redelivered, "{} was delivered before the kill", id(&d));
                assert_eq!(header, Some(FieldValue::Int(1)), "{}", id(&d));
            } else {
                assert_eq!(header, None, "{} was never delivered", id(&d));
            }
            assert_eq!(d.properties.delivery_mode, Some(1), "stored as it came");
            back.push(id(&d));
            d.ack().unwrap();
        }
        let expected: Vec<u64> = (11..=N + 1).collect();
        assert_eq!(back, expected, "in order, once, none acked");
    });
    broker.stop();
}
