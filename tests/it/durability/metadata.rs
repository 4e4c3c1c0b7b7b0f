//! Durable exchanges, queues and bindings survive a restart (in-process, compared with
//! the list APIs; over the network after `kill -9`, checked by passive declares and
//! routing); transient entities and transient messages do not.

use super::{runtime, within, BrokerProcess};
use actormq::broker::exchange::ExchangeSpec;
use actormq::broker::messages::BindTarget;
use actormq::broker::queue::QueueSpec;
use actormq::broker::registry::BindingRecord;
use actormq::client::{Client, ConnectOptions, ExchangeOptions, PublishOptions, QueueOptions};
use actormq::{BrokerHandle, ErrorCode, FieldTable, FieldValue, Message};
use std::path::Path;

fn start(dir: &Path) -> BrokerHandle {
    super::embedded(dir)
}

fn queue(durable: bool) -> QueueOptions {
    QueueOptions {
        durable,
        ..Default::default()
    }
}

/// What a restart must give back: the durable subset, as the list APIs show it.
struct Listing {
    exchanges: Vec<ExchangeSpec>,
    queues: Vec<(String, QueueSpec)>,
    bindings: Vec<BindingRecord>,
}

async fn listing(broker: &BrokerHandle) -> Listing {
    let s = broker.session();
    let mut bindings = s.list_bindings().await.unwrap();
    bindings.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    Listing {
        exchanges: s.list_exchanges().await.unwrap(),
        queues: s.list_queues().await.unwrap(),
        bindings,
    }
}

#[test]
fn durable_entities_and_persistent_messages_come_back_transient_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let broker = start(dir.path());
    let expected = rt.block_on(async {
        let s = broker.session();
        // Exchanges: durable of every type (one with arguments), and a transient one.
        s.declare_exchange("orders", "topic", &ExchangeOptions::durable())
            .await
            .unwrap();
        s.declare_exchange("fan", "fanout", &ExchangeOptions::durable())
            .await
            .unwrap();
        let alt = ExchangeOptions::durable().arg("alternate-exchange", "fan");
        s.declare_exchange("with-alt", "direct", &alt)
            .await
            .unwrap();
        s.declare_exchange("doomed", "direct", &ExchangeOptions::durable())
            .await
            .unwrap();
        s.declare_exchange("scratch", "direct", &ExchangeOptions::new())
            .await
            .unwrap();
        // Queues: durable (one with arguments), transient, exclusive durable, doomed.
        let jobs = QueueOptions::durable().arg("x-max-length", 1000i64);
        s.declare_queue("jobs", &jobs).await.unwrap();
        s.declare_queue("audit", &queue(true)).await.unwrap();
        s.declare_queue("tmp", &queue(false)).await.unwrap();
        let mine = QueueOptions::durable().exclusive();
        s.declare_queue("mine", &mine).await.unwrap();
        s.declare_queue("gone", &queue(true)).await.unwrap();
        // Bindings: between durable entities (kept), touching a transient one (not).
        s.bind_queue("jobs", "orders", "order.*", FieldTable::new())
            .await
            .unwrap();
        s.bind_queue("audit", "orders", "#", FieldTable::new())
            .await
            .unwrap();
        let mut args = FieldTable::new();
        args.insert("x-match".into(), FieldValue::from("all"));
        s.bind_queue("audit", "fan", "", args).await.unwrap();
        s.bind_exchange("fan", "orders", "fan.#", FieldTable::new())
            .await
            .unwrap();
        s.bind_queue("tmp", "orders", "#", FieldTable::new())
            .await
            .unwrap();
        s.bind_queue("jobs", "scratch", "x", FieldTable::new())
            .await
            .unwrap();
        s.bind_queue("mine", "orders", "#", FieldTable::new())
            .await
            .unwrap();
        s.bind_queue("gone", "orders", "#", FieldTable::new())
            .await
            .unwrap();
        s.bind_queue("jobs", "doomed", "d", FieldTable::new())
            .await
            .unwrap();
        s.bind_queue("jobs", "orders", "unbound", FieldTable::new())
            .await
            .unwrap();
        // Deletes and unbinds are remembered too.
        s.delete_queue("gone", false, false).await.unwrap();
        s.delete_exchange("doomed", false).await.unwrap();
        s.unbind_queue("jobs", "orders", "unbound", FieldTable::new())
            .await
            .unwrap();
        // Messages: persistent and transient in a durable queue, persistent in a
        // transient one.
        for (i, persistent) in [(1, true), (2, false), (3, true)] {
            let m = Message::new("orders", "order.new", format!("m{i}"));
            let m = if persistent { m.persistent() } else { m };
            s.publish(m).await.unwrap().await.unwrap();
        }

        let before = listing(&broker).await;
        let durable_queue = |n: &str| n == "jobs" || n == "audit";
        Listing {
            exchanges: before.exchanges.into_iter().filter(|x| x.durable).collect(),
            queues: before
                .queues
                .into_iter()
                .filter(|(n, _)| durable_queue(n))
                .collect(),
            bindings: before
                .bindings
                .into_iter()
                .filter(|b| b.exchange != "scratch" && durable_queue_or_exchange(&b.target))
                .collect(),
        }
    });
    broker.shutdown();

    let broker = start(dir.path());
    rt.block_on(async {
        let after = listing(&broker).await;
        assert_eq!(after.exchanges, expected.exchanges);
        assert_eq!(after.queues, expected.queues);
        assert_eq!(after.bindings, expected.bindings);
        let names: Vec<&str> = after.queues.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["audit", "jobs"]);
        assert!(after
            .exchanges
            .iter()
            .all(|x| x.name != "scratch" && x.name != "doomed"));

        let s = broker.session();
        // The persistent messages, not the transient one, marked as not delivered.
        for q in ["jobs", "audit"] {
            let mut got = Vec::new();
            while let Some(r) = s.get(q, true).await.unwrap() {
                assert!(!r.redelivered, "never delivered before the restart");
                got.push(String::from_utf8(r.message.body.to_vec()).unwrap());
            }
            assert_eq!(got, ["m1", "m3"], "queue {q}");
        }
        // The restored bindings route.
        let c = s
            .publish(Message::new("orders", "order.x", "routed").persistent())
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(c.queues, 2, "jobs and audit");
        let c = s
            .publish(Message::new("orders", "fan.y", "via fan"))
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(
            c.queues, 1,
            "audit, through the exchange-to-exchange binding"
        );
    });
    broker.shutdown();
}

fn durable_queue_or_exchange(t: &BindTarget) -> bool {
    match t {
        BindTarget::Queue(q) => q == "jobs" || q == "audit",
        BindTarget::Exchange(_) => true,
    }
}

#[test]
fn acked_and_delivered_messages_are_remembered_across_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let broker = start(dir.path());
    rt.block_on(async {
        let s = broker.session();
        s.declare_queue("q", &queue(true)).await.unwrap();
        for i in 1..=4 {
            let m = Message::new("", "q", format!("m{i}")).persistent();
            s.publish(m).await.unwrap().await.unwrap();
        }
        let m1 = s.get("q", false).await.unwrap().unwrap();
        m1.ack();
        let m2 = s.get("q", false).await.unwrap().unwrap();
        std::mem::drop(m2); // delivered, never settled
        let m3 = s.get("q", true).await.unwrap().unwrap(); // auto-acked
        assert_eq!(&m3.message.body[..], b"m3");
        // The session still holds m2; a clean shutdown does not settle it.
    });
    broker.shutdown();
    let broker = start(dir.path());
    rt.block_on(async {
        let s = broker.session();
        let a = s.get("q", true).await.unwrap().unwrap();
        assert_eq!((&a.message.body[..], a.redelivered), (&b"m2"[..], true));
        let b = s.get("q", true).await.unwrap().unwrap();
        assert_eq!((&b.message.body[..], b.redelivered), (&b"m4"[..], false));
        assert!(s.get("q", true).await.unwrap().is_none());
    });
    broker.shutdown();
    // And the auto-acks above are remembered as well.
    let broker = start(dir.path());
    rt.block_on(async {
        let s = broker.session();
        assert!(s.get("q", true).await.unwrap().is_none());
        // Purge and delete reach the log too.
        for i in 1..=3 {
            let m = Message::new("", "q", format!("p{i}")).persistent();
            s.publish(m).await.unwrap().await.unwrap();
        }
        let held = s.get("q", false).await.unwrap().unwrap();
        assert_eq!(s.purge("q").await.unwrap(), 2);
        std::mem::drop(held);
    });
    broker.shutdown();
    let broker = start(dir.path());
    rt.block_on(async {
        let s = broker.session();
        let a = s.get("q", true).await.unwrap().unwrap();
        assert_eq!(
            &a.message.body[..],
            b"p1",
            "the unacked one survives a purge"
        );
        assert!(s.get("q", true).await.unwrap().is_none());
        s.delete_queue("q", false, false).await.unwrap();
        s.declare_queue("q", &queue(true)).await.unwrap();
    });
    broker.shutdown();
    let broker = start(dir.path());
    rt.block_on(async {
        let s = broker.session();
        let q = s.declare_queue("q", &queue(true).passive()).await.unwrap();
        assert_eq!(q.messages, 0, "a deleted queue's messages do not come back");
    });
    broker.shutdown();
}

#[test]
fn over_the_network_durable_entities_survive_kill9() {
    let root = tempfile::tempdir().unwrap();
    let rt = runtime();
    let broker = BrokerProcess::start(root.path());
    rt.block_on(async {
        let c = within(
            "connect",
            Client::connect(ConnectOptions::new(&broker.addr)),
        )
        .await
        .unwrap();
        let durable_x = ExchangeOptions {
            durable: true,
            ..Default::default()
        };
        c.declare_exchange("events", "topic", &durable_x)
            .await
            .unwrap();
        c.declare_exchange("temp-x", "fanout", &ExchangeOptions::default())
            .await
            .unwrap();
        c.declare_queue("inbox", &QueueOptions::durable().arg("x-max-length", 10i64))
            .await
            .unwrap();
        c.declare_queue("scratch", &QueueOptions::default())
            .await
            .unwrap();
        c.bind_queue("inbox", "events", "user.*", FieldTable::new())
            .await
            .unwrap();
        c.bind_queue("scratch", "events", "#", FieldTable::new())
            .await
            .unwrap();
        c.publish_with(
            "events",
            "user.new",
            "kept",
            &PublishOptions::default().persistent(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        c.publish_with(
            "events",
            "user.new",
            "transient",
            &PublishOptions::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    });
    broker.kill9();

    let broker = BrokerProcess::start(root.path());
    rt.block_on(async {
        let c = within(
            "connect",
            Client::connect(ConnectOptions::new(&broker.addr)),
        )
        .await
        .unwrap();
        let passive_x = ExchangeOptions {
            passive: true,
            ..Default::default()
        };
        c.declare_exchange("events", "topic", &passive_x)
            .await
            .expect("the durable exchange is back");
        let e = c
            .declare_exchange("temp-x", "fanout", &passive_x)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::NotFound));
        let passive_q = QueueOptions {
            passive: true,
            ..Default::default()
        };
        let inbox = c.declare_queue("inbox", &passive_q).await.unwrap();
        assert_eq!(
            inbox.messages, 1,
            "the persistent message, not the transient one"
        );
        let e = c.declare_queue("scratch", &passive_q).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::NotFound));
        // Redeclared with its arguments: equivalent, so accepted.
        c.declare_queue("inbox", &QueueOptions::durable().arg("x-max-length", 10i64))
            .await
            .expect("the same arguments came back");
        // The binding routes again.
        let got = c
            .get("inbox", true)
            .await
            .unwrap()
            .expect("the kept message");
        assert_eq!(&got.delivery.body[..], b"kept");
        c.publish_with(
            "events",
            "user.x",
            "again",
            &PublishOptions::default().mandatory(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        let got = c.get("inbox", true).await.unwrap().expect("routed");
        assert_eq!(&got.delivery.body[..], b"again");
    });
    broker.stop();
}
