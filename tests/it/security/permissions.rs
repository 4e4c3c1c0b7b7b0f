//! Permissions as RabbitMQ enforces them, over the native client and lapin: every class
//! of operation refused and allowed, the refusal naming permission, resource, vhost and
//! user, the connection (native) or the other channels (AMQP) going on, a change made
//! while a connection is open applying to it, and topic permissions on publish and bind.

use crate::support::{eventually, TestServer, DEADLINE};
use actormq::client::{Client, ClientError, ConnectOptions, ConsumeOptions, QueueOptions};
use actormq::definitions::{Permission, TopicPermission, UserDefinition};
use actormq::{ErrorCode, ExchangeOptions, FieldTable};
use std::future::Future;

/// Awaits `fut` within the generous deadline.
pub(super) async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("not within {DEADLINE:?}: {what}"))
}

/// Creates user `ann` (password `pw`, management tag) with `permission` on `/`.
pub(super) async fn ann(server: &TestServer, permission: Permission) {
    let broker = server.handle().broker();
    let hash = actormq::server::auth::hash_password("pw");
    let user = UserDefinition::new("ann", &hash, [], false, vec!["management".into()]);
    broker.put_user(user).await.unwrap();
    broker
        .set_user_permissions("ann", "/", permission)
        .await
        .unwrap();
}

async fn ann_client(server: &TestServer) -> Client {
    let options = ConnectOptions::new(server.addr.to_string()).credentials("ann", "pw");
    within("ann connects", Client::connect(options))
        .await
        .expect("ann connects")
}

/// Asserts ACCESS_REFUSED with exactly RabbitMQ's words.
fn refused<T: std::fmt::Debug>(r: Result<T, ClientError>, message: &str) {
    match r {
        Err(ClientError::Server { code, message: m }) => {
            assert_eq!(code, ErrorCode::AccessRefused, "{m}");
            assert_eq!(m, message);
        }
        other => panic!("expected ACCESS_REFUSED '{message}', got {other:?}"),
    }
}

fn own_only() -> Permission {
    Permission::new("^ann-", "^ann-", "^ann-").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_operations_are_checked_and_the_connection_goes_on() {
    let server = TestServer::start();
    ann(&server, own_only()).await;
    // Someone else's queue, with a message.
    let guest = server.handle().broker().session();
    guest
        .declare_queue("jobs", &actormq::QueueOptions::new())
        .await
        .unwrap();
    let c = ann_client(&server).await;
    let q = QueueOptions::new();
    let who = "in vhost '/' refused for user 'ann'";
    // Declare: configure on the queue / exchange.
    c.declare_queue("ann-q", &q).await.unwrap();
    refused(
        c.declare_queue("jobs", &q).await,
        &format!("configure access to queue 'jobs' {who}"),
    );
    c.declare_exchange("ann-x", "topic", &ExchangeOptions::new())
        .await
        .unwrap();
    refused(
        c.declare_exchange("x", "topic", &ExchangeOptions::new())
            .await,
        &format!("configure access to exchange 'x' {who}"),
    );
    // A passive declare needs nothing.
    c.declare_queue("jobs", &QueueOptions::new().passive())
        .await
        .unwrap();
    // Bind: write on the queue, read on the exchange.
    c.bind_queue("ann-q", "ann-x", "#", FieldTable::new())
        .await
        .unwrap();
    refused(
        c.bind_queue("ann-q", "amq.direct", "k", FieldTable::new())
            .await,
        &format!("read access to exchange 'amq.direct' {who}"),
    );
    refused(
        c.bind_queue("jobs", "ann-x", "k", FieldTable::new()).await,
        &format!("write access to queue 'jobs' {who}"),
    );
    refused(
        c.bind_exchange("amq.fanout", "ann-x", "k", FieldTable::new())
            .await,
        &format!("write access to exchange 'amq.fanout' {who}"),
    );
    refused(
        c.unbind_queue("ann-q", "amq.topic", "k", FieldTable::new())
            .await,
        &format!("read access to exchange 'amq.topic' {who}"),
    );
    // Publish: write on the exchange (the default one is amq.default).
    c.publish("ann-x", "k", b"mine")
        .await
        .unwrap()
        .await
        .unwrap();
    refused(
        c.publish("", "jobs", b"x").await.unwrap().await,
        &format!("write access to exchange 'amq.default' {who}"),
    );
    // The permission comes first, as in RabbitMQ: not "no exchange 'nope'".
    refused(
        c.publish("nope", "k", b"x").await.unwrap().await,
        &format!("write access to exchange 'nope' {who}"),
    );
    // Get, consume, purge: read on the queue; delete: configure.
    assert!(c.get("ann-q", true).await.unwrap().is_some());
    refused(
        c.get("jobs", true).await,
        &format!("read access to queue 'jobs' {who}"),
    );
    refused(
        c.consume("jobs", &ConsumeOptions::new()).await.map(drop),
        &format!("read access to queue 'jobs' {who}"),
    );
    refused(
        c.purge_queue("jobs").await,
        &format!("read access to queue 'jobs' {who}"),
    );
    refused(
        c.delete_queue("jobs").await,
        &format!("configure access to queue 'jobs' {who}"),
    );
    refused(
        c.delete_exchange("amq.direct", false).await,
        &format!("configure access to exchange 'amq.direct' {who}"),
    );
    // Still the same connection, still working.
    assert_eq!(c.delete_queue("ann-q").await.unwrap(), 0);
    c.delete_exchange("ann-x", false).await.unwrap();
    let stats = guest.queue_stats("jobs").await.unwrap();
    assert_eq!(stats.ready, 0, "nothing reached the refused queue");
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_applies_to_a_connection_already_open() {
    let server = TestServer::start();
    ann(&server, Permission::all()).await;
    let c = ann_client(&server).await;
    c.declare_queue("ann-q", &QueueOptions::new())
        .await
        .unwrap();
    c.publish("", "ann-q", b"1").await.unwrap().await.unwrap();
    let broker = server.handle().broker();
    let read_only = Permission::new("", "", ".*").unwrap();
    broker
        .set_user_permissions("ann", "/", read_only)
        .await
        .unwrap();
    refused(
        c.publish("", "ann-q", b"2").await.unwrap().await,
        "write access to exchange 'amq.default' in vhost '/' refused for user 'ann'",
    );
    assert!(c.get("ann-q", true).await.unwrap().is_some());
    broker.clear_permissions("ann", "/").await.unwrap();
    refused(
        c.get("ann-q", true).await,
        "read access to queue 'ann-q' in vhost '/' refused for user 'ann'",
    );
    broker.set_permissions("ann", "/").await.unwrap();
    c.publish("", "ann-q", b"3").await.unwrap().await.unwrap();
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_permissions_check_routing_keys_on_publish_and_binding_keys_on_bind() {
    let server = TestServer::start();
    ann(&server, Permission::all()).await;
    let broker = server.handle().broker();
    let topic = TopicPermission::new("^{username}\\.", "^{vhost}\\.|^ann\\.").unwrap();
    broker
        .set_topic_permissions("ann", "/", "amq.topic", topic.clone())
        .await
        .unwrap();
    // On a direct exchange a topic permission is not checked.
    broker
        .set_topic_permissions("ann", "/", "amq.direct", topic)
        .await
        .unwrap();
    let c = ann_client(&server).await;
    c.declare_queue("ann-q", &QueueOptions::new())
        .await
        .unwrap();
    let who = "in vhost '/' refused for user 'ann'";
    c.bind_queue("ann-q", "amq.topic", "ann.#", FieldTable::new())
        .await
        .unwrap();
    c.bind_queue("ann-q", "amq.topic", "/.#", FieldTable::new())
        .await
        .unwrap();
    refused(
        c.bind_queue("ann-q", "amq.topic", "bob.#", FieldTable::new())
            .await,
        &format!("read access to topic 'bob.#' in exchange 'amq.topic' {who}"),
    );
    c.bind_queue("ann-q", "amq.direct", "bob.x", FieldTable::new())
        .await
        .unwrap();
    c.publish("amq.topic", "ann.orders", b"ok")
        .await
        .unwrap()
        .await
        .unwrap();
    refused(
        c.publish("amq.topic", "bob.orders", b"no")
            .await
            .unwrap()
            .await,
        &format!("write access to topic 'bob.orders' in exchange 'amq.topic' {who}"),
    );
    c.publish("amq.direct", "bob.x", b"direct")
        .await
        .unwrap()
        .await
        .unwrap();
    let stats = server
        .handle()
        .broker()
        .session()
        .queue_stats("ann-q")
        .await
        .unwrap();
    assert_eq!(stats.ready, 2, "ann.orders and bob.x, not bob.orders");
    // Cleared at run time: the open connection may publish with any key again.
    broker
        .clear_topic_permissions("ann", "/", Some("amq.topic"))
        .await
        .unwrap();
    c.publish("amq.topic", "bob.orders", b"now")
        .await
        .unwrap()
        .await
        .unwrap();
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_refusals_close_the_channel_only() {
    use lapin::options::*;
    use lapin::types::FieldTable as Table;
    use lapin::{BasicProperties, Connection, ConnectionProperties};
    let server = TestServer::start();
    ann(&server, own_only()).await;
    let addr = server.handle().amqp_addrs()[0];
    let url = format!("amqp://ann:pw@{addr}/%2f");
    let conn = within(
        "lapin connects",
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await
    .expect("connects");
    let declare = QueueDeclareOptions::default();
    // Declare refused: 403 closes this channel.
    let ch = conn.create_channel().await.unwrap();
    let e = ch
        .queue_declare("jobs".into(), declare, Table::default())
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("403") || text.contains("ACCESS_REFUSED"),
        "{text}"
    );
    assert!(
        text.contains("configure access to queue 'jobs' in vhost '/' refused for user 'ann'"),
        "{text}"
    );
    eventually("the refused channel is closed", || {
        let closed = !ch.status().connected();
        async move { closed }
    })
    .await;
    // The connection and a new channel go on.
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare("ann-q".into(), declare, Table::default())
        .await
        .unwrap();
    ch.queue_bind(
        "ann-q".into(),
        "amq.direct".into(),
        "k".into(),
        QueueBindOptions::default(),
        Table::default(),
    )
    .await
    .unwrap_err();
    let ch = conn.create_channel().await.unwrap();
    ch.basic_get("ann-q".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    ch.basic_consume(
        "jobs".into(),
        "".into(),
        BasicConsumeOptions::default(),
        Table::default(),
    )
    .await
    .unwrap_err();
    // Publish refused: the channel closes with 403 (the confirm fails).
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let sent = ch
        .basic_publish(
            "".into(),
            "ann-q".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await;
    let failed = match sent {
        Err(_) => true,
        Ok(confirm) => within("the publish is answered", confirm).await.is_err(),
    };
    assert!(failed, "a publish to amq.default is refused");
    eventually("the publishing channel is closed", || {
        let closed = !ch.status().connected();
        async move { closed }
    })
    .await;
    assert!(conn.status().connected());
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete("ann-q".into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    conn.close(200, "bye".into()).await.unwrap();
}
