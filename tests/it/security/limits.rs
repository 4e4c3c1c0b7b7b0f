//! Connection limits (per user, per vhost) in both protocols, AMQP's channel_max, and
//! failed logins.

use super::amqp_raw;
use crate::support::TestServer;
use actormq::client::{Client, ConnectOptions};
use actormq::ErrorCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_user_connection_limit_refuses_with_not_allowed() {
    let server = TestServer::with(|s| s.server.max_connections_per_user = 1);
    let first = Client::connect(ConnectOptions::new(server.addr.to_string()))
        .await
        .expect("the first connection of guest");
    let e = Client::connect(ConnectOptions::new(server.addr.to_string()))
        .await
        .expect_err("a second connection of guest is over the limit");
    assert_eq!(e.code(), Some(ErrorCode::NotAllowed), "{e}");
    assert!(
        e.to_string()
            .contains("Connection refused for user 'guest'. User connection limit (1) is reached"),
        "{e}"
    );
    // Closing the first makes room.
    first.close().await.unwrap();
    crate::support::eventually("the first connection is gone", || {
        let n = server.handle().front_end().connections().len();
        async move { n == 0 }
    })
    .await;
    Client::connect(ConnectOptions::new(server.addr.to_string()))
        .await
        .expect("room again once the first closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_vhost_connection_limit_closes_amqp_with_530_in_rabbitmq_words() {
    let server = TestServer::with(|s| s.server.max_connections_per_vhost = 1);
    // The native connection takes the vhost's one place.
    let _native = Client::connect(ConnectOptions::new(server.addr.to_string()))
        .await
        .expect("the first connection to /");
    let mut s = tokio::net::TcpStream::connect(server.handle().amqp_addrs()[0])
        .await
        .unwrap();
    let answer = amqp_raw::handshake(&mut s, 2047).await;
    let (code, text) = amqp_raw::close_of(&answer);
    assert_eq!(code, 530);
    assert_eq!(
        text,
        "NOT_ALLOWED - access to vhost '/' refused for user 'guest': connection limit (1) is reached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_over_the_negotiated_channel_max_closes_with_530() {
    // As RabbitMQ: channel_max bounds how many channels are open at once; any number
    // up to 65535 may name one.
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start();
    let mut s = tokio::net::TcpStream::connect(server.handle().amqp_addrs()[0])
        .await
        .unwrap();
    let answer = amqp_raw::handshake(&mut s, 4).await;
    assert_eq!(&answer[..4], &[0, 10, 0, 41], "connection.open-ok");
    for ch in [1u16, 2, 4, 65535] {
        s.write_all(&amqp_raw::method(ch, 20, 10, &[0]))
            .await
            .unwrap();
        let (_, got, p) = amqp_raw::frame(&mut s).await;
        assert_eq!((got, &p[..4]), (ch, &[0, 20, 0, 11][..]), "channel.open-ok");
    }
    s.write_all(&amqp_raw::method(3, 20, 10, &[0]))
        .await
        .unwrap();
    let (_, ch, p) = amqp_raw::frame(&mut s).await;
    assert_eq!(ch, 0);
    let (code, text) = amqp_raw::close_of(&p);
    assert_eq!(
        (code, text.as_str()),
        (
            530,
            "NOT_ALLOWED - number of channels opened (4) has reached the negotiated channel_max (4)"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_refused_and_a_right_password_still_gets_in() {
    let server = TestServer::start();
    for _ in 0..3 {
        let e = Client::connect(
            ConnectOptions::new(server.addr.to_string()).credentials("guest", "wrong"),
        )
        .await
        .expect_err("a wrong password is refused");
        assert_eq!(e.code(), Some(ErrorCode::AccessRefused), "{e}");
    }
    // Slowed, not locked out: the right password gets in (and clears the record).
    Client::connect(ConnectOptions::new(server.addr.to_string()))
        .await
        .expect("the right password still logs in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_basic_auth_failures_go_through_the_shared_login_throttle() {
    use crate::mgmt::http::{server, Http};
    let server = server();
    let throttle = || server.handle().front_end().login_throttle();
    assert!(throttle().is_empty());
    let wrong = Http::new(&server).user("guest", "wrong");
    for _ in 0..2 {
        assert_eq!(wrong.get("/api/overview").await.status, 401);
    }
    assert_eq!(
        throttle().len(),
        1,
        "the failures are remembered for 127.0.0.1"
    );
    // A native failure from the same address counts against the same record.
    Client::connect(ConnectOptions::new(server.addr.to_string()).credentials("guest", "bad"))
        .await
        .expect_err("a wrong password is refused");
    assert_eq!(throttle().len(), 1);
    // Slowed, not locked out: the right password gets in, over HTTP, and clears it.
    assert_eq!(Http::guest(&server).get("/api/overview").await.status, 200);
    assert!(throttle().is_empty(), "a success forgets the address");
}
