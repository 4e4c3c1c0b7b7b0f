//! Connecting, declaring, binding, deleting, and how broker errors surface.

use super::{connect, options, within};
use crate::support::{eventually, TestServer};
use actormq::client::{Client, ClientError, ExchangeOptions, QueueOptions};
use actormq::settings::UserSettings;
use actormq::{ErrorCode, FieldTable};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_reports_the_welcome() {
    let server = TestServer::start();
    let client = connect(&server).await;
    let info = client.server_info();
    assert_eq!(info.version, actormq::protocol::PROTOCOL_VERSION);
    assert!(info.max_frame_size >= 4096);
    client.close().await.expect("closes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_access_refused() {
    let server = TestServer::start();
    let err = Client::connect(options(&server).credentials("guest", "wrong"))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Some(ErrorCode::AccessRefused), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permitted_but_missing_vhost_is_not_found() {
    let server = TestServer::with(|s| {
        s.users.push(UserSettings {
            name: "app".into(),
            password_hash: actormq::server::auth::hash_password("s3cret"),
            vhosts: vec!["/".into(), "/nowhere".into()],
            loopback_only: false,
            tags: Vec::new(),
        })
    });
    let err = Client::connect(
        options(&server)
            .credentials("app", "s3cret")
            .vhost("/nowhere"),
    )
    .await
    .expect_err("refused");
    assert_eq!(err.code(), Some(ErrorCode::NotFound), "{err}");
    let client = Client::connect(options(&server).credentials("app", "s3cret"))
        .await
        .expect("a configured user opens '/'");
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vhost_the_user_may_not_open_is_access_refused() {
    // "/other" exists, but guest is allowed "/" only.
    let server = TestServer::with(|s| s.broker.vhosts = vec!["/".into(), "/other".into()]);
    let err = Client::connect(options(&server).vhost("/other"))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Some(ErrorCode::AccessRefused), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_an_io_error() {
    let server = TestServer::start();
    let addr = server.addr;
    drop(server);
    let err = Client::connect(actormq::client::ConnectOptions::new(addr.to_string()))
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, ClientError::Io { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_queue_answers_name_and_counts() {
    let server = TestServer::start();
    let client = connect(&server).await;
    let q = client
        .declare_queue("orders", &QueueOptions::default())
        .await
        .expect("declared");
    assert_eq!((q.name.as_str(), q.messages, q.consumers), ("orders", 0, 0));

    client
        .publish("", "orders", "a")
        .await
        .unwrap()
        .await
        .unwrap();
    client
        .publish("", "orders", "b")
        .await
        .unwrap()
        .await
        .unwrap();
    let passive = QueueOptions {
        passive: true,
        ..Default::default()
    };
    let q = client.declare_queue("orders", &passive).await.unwrap();
    assert_eq!(q.messages, 2);

    let generated = client
        .declare_queue(
            "",
            &QueueOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!generated.name.is_empty(), "the broker names it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passive_declare_of_a_missing_queue_is_not_found() {
    let server = TestServer::start();
    let client = connect(&server).await;
    let passive = QueueOptions {
        passive: true,
        ..Default::default()
    };
    let err = client.declare_queue("missing", &passive).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound), "{err}");
    assert!(err.server_message().unwrap().contains("missing"), "{err}");
    // A refused request leaves the connection usable.
    client
        .declare_queue("present", &QueueOptions::default())
        .await
        .expect("still open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ill_typed_queue_argument_is_precondition_failed() {
    let server = TestServer::start();
    let client = connect(&server).await;
    let err = client
        .declare_queue("q", &QueueOptions::default().arg("x-message-ttl", "abc"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::PreconditionFailed), "{err}");
    client
        .declare_queue(
            "q",
            &QueueOptions::default().arg("x-message-ttl", 60_000i64),
        )
        .await
        .expect("an integer ttl is fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_and_delete_answer_message_counts() {
    let server = TestServer::start();
    let client = connect(&server).await;
    client
        .declare_queue("q", &QueueOptions::default())
        .await
        .unwrap();
    let mut confirms = Vec::new();
    for i in 0..4 {
        confirms.push(client.publish("", "q", format!("{i}")).await.unwrap());
    }
    for c in confirms {
        within("confirm", c).await.unwrap();
    }
    assert_eq!(client.purge_queue("q").await.unwrap(), 4);
    client.publish("", "q", "x").await.unwrap().await.unwrap();
    assert_eq!(client.delete_queue("q").await.unwrap(), 1);
    let passive = QueueOptions {
        passive: true,
        ..Default::default()
    };
    let err = client.declare_queue("q", &passive).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_declare_bind_route_unbind_and_delete() {
    let server = TestServer::start();
    let client = connect(&server).await;
    client
        .declare_exchange("logs", "topic", &ExchangeOptions::default())
        .await
        .unwrap();
    client
        .declare_queue("errors", &QueueOptions::default())
        .await
        .unwrap();
    client
        .bind_queue("errors", "logs", "*.error", FieldTable::new())
        .await
        .unwrap();
    client
        .publish("logs", "db.error", "boom")
        .await
        .unwrap()
        .await
        .unwrap();
    client
        .publish("logs", "db.info", "fine")
        .await
        .unwrap()
        .await
        .unwrap();
    let got = client.get("errors", true).await.unwrap().expect("routed");
    assert_eq!(&got.delivery.body[..], b"boom");
    assert_eq!(got.delivery.routing_key, "db.error");
    assert_eq!(got.delivery.exchange, "logs");
    assert_eq!(got.message_count, 0, "the info message went nowhere");

    client
        .unbind_queue("errors", "logs", "*.error", FieldTable::new())
        .await
        .unwrap();
    client
        .publish("logs", "db.error", "unrouted")
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(client.get("errors", true).await.unwrap().is_none());

    client.delete_exchange("logs", false).await.unwrap();
    let passive = ExchangeOptions {
        passive: true,
        ..Default::default()
    };
    let err = client
        .declare_exchange("logs", "topic", &passive)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_to_exchange_bindings_route() {
    let server = TestServer::start();
    let client = connect(&server).await;
    let opts = ExchangeOptions::default();
    client
        .declare_exchange("front", "fanout", &opts)
        .await
        .unwrap();
    client
        .declare_exchange("back", "direct", &opts)
        .await
        .unwrap();
    client
        .declare_queue("q", &QueueOptions::default())
        .await
        .unwrap();
    client
        .bind_exchange("back", "front", "", FieldTable::new())
        .await
        .unwrap();
    client
        .bind_queue("q", "back", "k", FieldTable::new())
        .await
        .unwrap();
    client
        .publish("front", "k", "via front")
        .await
        .unwrap()
        .await
        .unwrap();
    let got = client.get("q", true).await.unwrap().expect("routed twice");
    assert_eq!(&got.delivery.body[..], b"via front");
    client
        .unbind_exchange("back", "front", "", FieldTable::new())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_exchange_type_is_refused_with_its_name() {
    let server = TestServer::start();
    let client = connect(&server).await;
    let err = client
        .declare_exchange("x", "no-such-type", &ExchangeOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::PreconditionFailed), "{err}");
    assert!(err.to_string().contains("no-such-type"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_are_pipelined_on_one_connection() {
    let server = TestServer::start();
    let client = connect(&server).await;
    let names: Vec<String> = (0..200).map(|i| format!("q{i}")).collect();
    let opts = QueueOptions::default();
    let declares = names.iter().map(|n| client.declare_queue(n, &opts));
    let declared = within("200 declares", futures_util::future::join_all(declares)).await;
    for (d, n) in declared.into_iter().zip(&names) {
        assert_eq!(&d.expect("declared").name, n, "replies matched by id");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_close_every_operation_fails_closed() {
    let server = TestServer::start();
    let client = connect(&server).await;
    let clone = client.clone();
    client.close().await.expect("closes");
    let err = clone
        .declare_queue("q", &QueueOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Closed), "{err:?}");
    assert!(matches!(
        client.publish("", "q", "x").await,
        Err(ClientError::Closed)
    ));
    client.close().await.expect("closing twice is fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_shutdown_fails_the_connection_with_connection_forced() {
    let server = TestServer::start();
    let client = connect(&server).await;
    client
        .declare_queue("q", &QueueOptions::default())
        .await
        .unwrap();
    let handle = server;
    tokio::task::spawn_blocking(move || drop(handle))
        .await
        .unwrap();
    eventually("the connection fails", || async {
        client.closed_reason().is_some()
    })
    .await;
    let reason = client.closed_reason().unwrap();
    assert_eq!(reason.code(), Some(ErrorCode::ConnectionForced), "{reason}");
    let err = client.purge_queue("q").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ConnectionForced), "{err}");
}
