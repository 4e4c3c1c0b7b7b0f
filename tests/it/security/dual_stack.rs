//! Listeners bound to `[::]` (both address families, as an operator binds a broker
//! that must be reachable over IPv4 and IPv6): an IPv4 client on this host arrives as
//! `::ffff:127.0.0.1` and must count as loopback, so `guest` logs in over each protocol
//! as it does on an IPv4 listener and as RabbitMQ lets it.

use crate::support::{TestServer, DEADLINE};
use actormq::client::{Client, ConnectOptions, QueueOptions};
use std::net::SocketAddr;

/// A server whose native and AMQP listeners are bound to `[::]:0`; None (and why) when
/// this machine has no IPv6 to bind.
fn dual_stack_server() -> Option<TestServer> {
    if std::net::TcpListener::bind("[::]:0").is_err() {
        eprintln!("no IPv6 on this machine: the dual-stack listener is not checked");
        return None;
    }
    Some(TestServer::with(|s| {
        s.server.bind = "[::]:0".into();
        s.amqp.bind = vec!["[::]:0".into()];
    }))
}

/// The IPv4 loopback address of a listener bound to `[::]`.
fn ipv4(addr: SocketAddr) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], addr.port()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_logs_in_over_ipv4_to_a_dual_stack_listener() {
    let Some(server) = dual_stack_server() else {
        return;
    };
    // Native protocol.
    let native = ipv4(server.addr);
    let client = tokio::time::timeout(
        DEADLINE,
        Client::connect(ConnectOptions::new(native.to_string())),
    )
    .await
    .expect("in time")
    .expect("guest logs in over IPv4 to [::]");
    client
        .declare_queue("dual", &QueueOptions::default())
        .await
        .unwrap();
    // AMQP 0-9-1.
    let amqp = ipv4(server.handle().amqp_addrs()[0]);
    let url = format!("amqp://guest:guest@{amqp}/%2f");
    let conn = tokio::time::timeout(
        DEADLINE,
        lapin::Connection::connect(&url, lapin::ConnectionProperties::default()),
    )
    .await
    .expect("in time")
    .expect("guest logs in over IPv4 to [::] with AMQP");
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            "dual".into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("the queue the native client declared");
    assert_eq!(q.name().as_str(), "dual");
}
