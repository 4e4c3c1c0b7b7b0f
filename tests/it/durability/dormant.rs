//! A durable exchange whose custom type is missing after a restart is kept dormant:
//! publishes to it are refused naming the type, later durable changes do not erase it
//! or its bindings, and it routes again once the broker starts with the type.

use super::{runtime, within};
use actormq::broker::exchange::{Binding, DestinationId, ExchangeType};
use actormq::storage::StorageOptions;
use actormq::{
    Broker, BrokerHandle, ErrorCode, ExchangeOptions, FieldTable, Message, QueueOptions,
};
use std::path::Path;

/// Routes to every binding (a fanout under a name of its own).
struct Everyone;

impl ExchangeType for Everyone {
    fn route(&self, _message: &Message, bindings: &[Binding], out: &mut Vec<DestinationId>) {
        out.extend(bindings.iter().map(|b| b.destination));
    }
}

const TYPE: &str = "x-everyone";

fn start(dir: &Path, with_type: bool) -> BrokerHandle {
    let mut options = StorageOptions::in_dir(dir);
    options.segment_size = super::SEGMENT_SIZE;
    let mut builder = Broker::builder().workers(2).storage(options);
    if with_type {
        builder = builder.exchange_type(TYPE, || Box::new(Everyone));
    }
    builder.start().expect("the broker starts")
}

#[test]
fn a_durable_exchange_of_a_missing_type_is_kept_dormant_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();

    let broker = start(dir.path(), true);
    rt.block_on(async {
        let s = broker.session();
        s.declare_exchange("all", TYPE, &ExchangeOptions::durable())
            .await
            .unwrap();
        s.declare_queue("a", &QueueOptions::durable())
            .await
            .unwrap();
        s.bind_queue("a", "all", "", FieldTable::new())
            .await
            .unwrap();
    });
    broker.shutdown();

    // Started without the type: the exchange is there but dormant.
    let broker = start(dir.path(), false);
    rt.block_on(async {
        let s = broker.session();
        // A durable change saves the metadata again: it must keep the dormant exchange.
        s.declare_queue("b", &QueueOptions::durable())
            .await
            .unwrap();
        let err = match s.publish(Message::new("all", "k", "lost?")).await {
            Err(e) => e,
            Ok(confirm) => within("the refusal", confirm)
                .await
                .expect_err("a publish to a dormant exchange is refused"),
        };
        assert_eq!(err.code(), ErrorCode::NotFound, "{err}");
        assert!(
            err.message().contains(TYPE),
            "names the missing type: {err}"
        );
        assert!(err.message().contains("dormant"), "{err}");
        let listed = s.list_exchanges().await.unwrap();
        assert!(listed.iter().any(|x| x.name == "all" && x.kind == TYPE));
        let bindings = s.list_bindings().await.unwrap();
        assert!(bindings.iter().any(|b| b.exchange == "all"), "{bindings:?}");
        // Binding to it is refused the same way, and declaring it again too.
        let bind = s
            .bind_queue("b", "all", "", FieldTable::new())
            .await
            .expect_err("dormant");
        assert!(bind.message().contains(TYPE), "{bind}");
    });
    broker.shutdown();

    // With the type registered again: it routes, with its old binding.
    let broker = start(dir.path(), true);
    rt.block_on(async {
        let s = broker.session();
        let confirm = s.publish(Message::new("all", "k", "back")).await.unwrap();
        assert_eq!(within("a confirm", confirm).await.unwrap().queues, 1);
        let got = s
            .get("a", true)
            .await
            .unwrap()
            .expect("routed through the old binding");
        assert_eq!(&got.message.body[..], b"back");
    });
    broker.shutdown();
}

#[test]
fn a_dormant_exchange_can_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let broker = start(dir.path(), true);
    rt.block_on(async {
        let s = broker.session();
        s.declare_exchange("all", TYPE, &ExchangeOptions::durable())
            .await
            .unwrap();
        s.declare_queue("a", &QueueOptions::durable())
            .await
            .unwrap();
        s.bind_queue("a", "all", "", FieldTable::new())
            .await
            .unwrap();
    });
    broker.shutdown();
    let broker = start(dir.path(), false);
    rt.block_on(async {
        let s = broker.session();
        s.delete_exchange("all", false).await.unwrap();
        assert!(!s
            .list_exchanges()
            .await
            .unwrap()
            .iter()
            .any(|x| x.name == "all"));
        assert!(s.list_bindings().await.unwrap().is_empty());
    });
    broker.shutdown();
    let broker = start(dir.path(), true);
    rt.block_on(async {
        let s = broker.session();
        assert!(!s
            .list_exchanges()
            .await
            .unwrap()
            .iter()
            .any(|x| x.name == "all"));
    });
    broker.shutdown();
}
