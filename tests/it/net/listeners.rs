//! Listeners opened on a running broker: an embedded broker with its own exchange type
//! served over TCP, two listeners sharing one broker, and the registry of live
//! connections (listed, and closed by an operator).

use crate::support::{eventually, DEADLINE};
use actormq::broker::exchange::{Binding, DestinationId, ExchangeType};
use actormq::client::{Client, ConnectOptions, ExchangeOptions, QueueOptions};
use actormq::server::{FrontEnd, ServerHandle};
use actormq::{Broker, ErrorCode, FieldTable, Message, Settings};

/// Routes every message to every binding whose key is a prefix of its routing key.
struct Prefix;

impl ExchangeType for Prefix {
    fn route(&self, message: &Message, bindings: &[Binding], out: &mut Vec<DestinationId>) {
        out.extend(
            bindings
                .iter()
                .filter(|b| message.routing_key.starts_with(&b.routing_key))
                .map(|b| b.destination),
        );
    }
}

fn settings() -> Settings {
    let mut s = Settings::default();
    s.server.bind = "127.0.0.1:0".into();
    s.amqp.bind = vec!["127.0.0.1:0".into()];
    s.http.bind = Vec::new(); // the management API only where a test asks for it
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_broker_serves_its_own_exchange_type_over_the_network() {
    let broker = Broker::builder()
        .workers(1)
        .exchange_type("x-prefix", || Box::new(Prefix))
        .start()
        .unwrap();
    let server = ServerHandle::start_on(broker, settings()).unwrap();
    let client =
        Client::connect(ConnectOptions::new(server.local_addr().to_string()).confirms(true))
            .await
            .unwrap();
    client
        .declare_exchange("by-prefix", "x-prefix", &ExchangeOptions::default())
        .await
        .expect("the type registered in Rust is known to network clients");
    client
        .declare_queue("eu", &QueueOptions::default())
        .await
        .unwrap();
    client
        .bind_queue("eu", "by-prefix", "eu.", FieldTable::new())
        .await
        .unwrap();
    for key in ["eu.paris", "us.austin"] {
        let confirm = client.publish("by-prefix", key, key).await.unwrap();
        tokio::time::timeout(DEADLINE, confirm)
            .await
            .expect("confirmed in time")
            .unwrap();
    }
    let got = client
        .get("eu", true)
        .await
        .unwrap()
        .expect("routed by the type");
    assert_eq!(&got.delivery.body[..], b"eu.paris");
    assert!(client.get("eu", true).await.unwrap().is_none());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_listeners_share_one_broker() {
    let broker = Broker::builder().workers(2).start().unwrap();
    let front = FrontEnd::new(broker, settings()).unwrap();
    let a = front
        .listen_native(std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .unwrap();
    let b = front
        .listen_native(std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .unwrap();
    assert_ne!(a, b);
    let on_a = Client::connect(ConnectOptions::new(a.to_string()).confirms(true))
        .await
        .unwrap();
    let on_b = Client::connect(ConnectOptions::new(b.to_string()))
        .await
        .unwrap();
    on_a.declare_queue("shared", &QueueOptions::default())
        .await
        .unwrap();
    let confirm = on_a.publish("", "shared", "hello").await.unwrap();
    tokio::time::timeout(DEADLINE, confirm)
        .await
        .expect("confirmed in time")
        .unwrap();
    let got = on_b
        .get("shared", true)
        .await
        .unwrap()
        .expect("published on A, confirmed");
    assert_eq!(&got.delivery.body[..], b"hello");
    assert_eq!(front.connections().len(), 2);
    front.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_connections_are_listed_and_an_operator_can_close_one() {
    let data = tempfile::tempdir().unwrap();
    let mut s = settings();
    s.storage.data_dir = data.path().to_path_buf();
    let server = ServerHandle::start(s).unwrap();
    let addr = server.local_addr().to_string();
    let watched = Client::connect(ConnectOptions::new(addr.clone()))
        .await
        .unwrap();
    let other = Client::connect(ConnectOptions::new(addr).confirms(true))
        .await
        .unwrap();
    watched
        .declare_queue("q", &QueueOptions::default())
        .await
        .unwrap();
    for i in 0..3 {
        drop(watched.publish("", "q", format!("{i}")).await.unwrap());
    }
    // The publishes are counted once the broker has read them: a request after them
    // is answered after they were handled.
    watched
        .declare_queue("q", &QueueOptions::default())
        .await
        .unwrap();
    let registry = server.front_end().connections();
    let list = registry.list();
    assert_eq!(list.len(), 2);
    let me = list
        .iter()
        .find(|c| c.published == 3)
        .expect("the publishing connection, with its count");
    assert_eq!(me.user, "guest");
    assert_eq!(me.vhost, "/");
    assert_eq!(me.protocol, "native");
    assert_eq!(me.channels, 1);
    assert!(me.peer.ip().is_loopback());

    assert!(registry.close(&me.id.to_string(), "maintenance"));
    assert!(!registry.close("no-such-connection", "x"));
    eventually("the closed client sees why", || async {
        watched.closed_reason().is_some()
    })
    .await;
    let reason = watched.closed_reason().unwrap();
    assert_eq!(reason.code(), Some(ErrorCode::ConnectionForced));
    assert!(reason.to_string().contains("maintenance"), "{reason}");
    eventually("the registry forgets it", || async { registry.len() == 1 }).await;
    // The other connection carries on.
    let confirm = other.publish("", "q", "still here").await.unwrap();
    tokio::time::timeout(DEADLINE, confirm)
        .await
        .expect("confirmed in time")
        .expect("the other connection is unaffected");
    server.stop().await;
}
