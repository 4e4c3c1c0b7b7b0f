//! Message rates (`message_stats.*_details.rate`) of queues, exchanges, connections,
//! virtual hosts and the overview, and the overview's samples for plots, following real
//! traffic from the native client.

use super::http::{server, Http};
use crate::support::DEADLINE;
use actormq::client::{Client, ConnectOptions};
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// `message_stats.{field}` of `v` (0 when absent).
fn count(v: &Value, field: &str) -> u64 {
    v["message_stats"][field].as_u64().unwrap_or(0)
}

/// `message_stats.{field}_details.rate` of `v`.
fn rate(v: &Value, field: &str) -> f64 {
    v["message_stats"][format!("{field}_details")]["rate"]
        .as_f64()
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_follow_publishes_deliveries_acks_and_redeliveries() {
    let server = server();
    let http = Http::guest(&server);
    assert_eq!(http.put("/api/queues/%2F/rated", "{}").await.status, 201);
    // First readings: rates are differences from them.
    let paths = [
        "/api/queues/%2F/rated",
        "/api/exchanges/%2F/amq.default",
        "/api/vhosts/%2F",
        "/api/overview",
    ];
    for p in paths {
        let r = http.get(p).await;
        assert_eq!(r.status, 200, "{p}: {}", r.text());
        assert_eq!(rate(&r.json(), "publish"), 0.0, "{p}: no rate yet");
    }

    let client = Client::connect(ConnectOptions::new(server.addr.to_string()).confirms(true))
        .await
        .unwrap();
    assert!(
        http.get("/api/connections").await.json()[0]["message_stats"].is_object(),
        "connections carry message_stats"
    );
    for i in 0..20 {
        let confirm = client.publish("", "rated", format!("m{i}")).await.unwrap();
        tokio::time::timeout(DEADLINE, confirm)
            .await
            .unwrap()
            .unwrap();
    }
    // Five gets acked; one nacked back and got again (a redelivery), then acked.
    for _ in 0..5 {
        let got = client
            .get("rated", false)
            .await
            .unwrap()
            .expect("a message");
        client.ack(got.delivery.delivery_tag).unwrap();
    }
    let got = client.get("rated", false).await.unwrap().unwrap();
    client.nack(got.delivery.delivery_tag, false, true).unwrap();
    let again = client.get("rated", false).await.unwrap().unwrap();
    assert!(again.delivery.redelivered);
    client.ack(again.delivery.delivery_tag).unwrap();

    // Every increase lands in some reading's window: poll until the totals are all
    // there, keeping the highest rate each series showed.
    let mut best: HashMap<String, f64> = HashMap::new();
    let end = Instant::now() + DEADLINE;
    let (queue, exchange, vhost, overview) = loop {
        let mut views = Vec::new();
        for p in paths {
            views.push(http.get(p).await.json());
        }
        let [q, x, v, o]: [Value; 4] = views.try_into().unwrap();
        let series = [
            ("q.publish", rate(&q, "publish")),
            ("q.deliver_get", rate(&q, "deliver_get")),
            ("q.ack", rate(&q, "ack")),
            ("q.redeliver", rate(&q, "redeliver")),
            ("x.publish_in", rate(&x, "publish_in")),
            ("v.publish", rate(&v, "publish")),
            ("v.ack", rate(&v, "ack")),
            ("o.publish", rate(&o, "publish")),
            ("o.deliver_get", rate(&o, "deliver_get")),
        ];
        for (k, r) in series {
            assert!(r >= 0.0, "{k}: negative rate {r}");
            let b = best.entry(k.to_string()).or_default();
            *b = b.max(r);
        }
        let totals_in = count(&q, "ack") == 6 && count(&q, "deliver_get") == 7;
        if totals_in && best.values().all(|r| *r > 0.0) {
            break (q, x, v, o);
        }
        assert!(
            Instant::now() < end,
            "rates not all seen within {DEADLINE:?}: {best:?}\nqueue: {q}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(count(&queue, "publish"), 20, "{queue}");
    assert_eq!(count(&queue, "get"), 7);
    assert_eq!(count(&queue, "redeliver"), 1);
    assert_eq!(count(&exchange, "publish_in"), 20, "{exchange}");
    assert_eq!(count(&exchange, "publish_out"), 20);
    assert!(count(&vhost, "publish") >= 20, "{vhost}");
    assert!(count(&overview, "ack") >= 6, "{overview}");

    let conns = http.get("/api/connections").await.json();
    let native = conns
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["protocol"] == "native")
        .expect("the native client's connection");
    assert_eq!(count(native, "publish"), 20, "{native}");
    assert_eq!(count(native, "deliver_get"), 7);

    // The overview's samples, for plots: newest first, totals that only grow. A point
    // is recorded at most every two seconds: wait for one with the traffic in it.
    let end = Instant::now() + DEADLINE;
    loop {
        let o = http
            .get("/api/overview?msg_rates_age=600&lengths_age=600")
            .await
            .json();
        let samples = o["message_stats"]["publish_details"]["samples"]
            .as_array()
            .unwrap_or_else(|| panic!("publish samples: {o}"))
            .clone();
        let totals: Vec<u64> = samples
            .iter()
            .map(|s| s["sample"].as_u64().unwrap())
            .collect();
        assert!(totals.windows(2).all(|w| w[0] >= w[1]), "{totals:?}");
        let depth = &o["queue_totals"]["messages_ready_details"]["samples"][0]["sample"];
        if totals.first().is_some_and(|t| *t >= 20) && depth == 14 {
            break;
        }
        assert!(Instant::now() < end, "no sample with the traffic: {o}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Without the ages, no samples (the plain RabbitMQ overview).
    let plain = http.get("/api/overview").await.json();
    assert!(plain["message_stats"]["publish_details"]["samples"].is_null());
}
