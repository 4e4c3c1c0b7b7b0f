//! Differences from RabbitMQ 3.x that real clients' own test suites found
//! (scripts/client-suites.sh): each case is what the suite needed, by raw frames where
//! the bytes matter and with lapin where a second client observes.

use super::{connect, within};
use crate::security::amqp_raw::{self, close_of, frame, method};
use crate::support::{eventually, TestServer, DEADLINE};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A socket past `connection.open-ok`, with channel 1 open.
async fn opened(server: &TestServer) -> TcpStream {
    let mut s = TcpStream::connect(server.handle().amqp_addrs()[0])
        .await
        .expect("connects");
    let answer = amqp_raw::handshake(&mut s, 2047).await;
    assert_eq!(&answer[..4], &[0, 10, 0, 41], "connection.open-ok");
    s.write_all(&method(1, 20, 10, &[0])).await.unwrap();
    let (_, ch, p) = frame(&mut s).await;
    assert_eq!((ch, &p[..4]), (1, &[0u8, 20, 0, 11][..]), "channel.open-ok");
    s
}

/// `connection.close` (reply 200) as a client sends it.
fn connection_close() -> Vec<u8> {
    let mut args = 200u16.to_be_bytes().to_vec();
    args.push(3);
    args.extend_from_slice(b"bye");
    args.extend_from_slice(&[0, 0, 0, 0]);
    method(0, 10, 50, &args)
}

/// The reply code, text and offending method of a `connection.close` payload.
fn hard_error(p: &[u8]) -> (u16, String, [u8; 4]) {
    let (code, text) = close_of(p);
    let at = 7 + p[6] as usize;
    (code, text, [p[at], p[at + 1], p[at + 2], p[at + 3]])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_close_ok_the_client_closes_the_socket_and_repeated_closes_are_ignored() {
    // amqp091-go's TestConcurrentClose: 32 goroutines close one connection at once; a
    // broker that closes the socket right after close-ok makes one of them see
    // `501 EOF` instead of a clean close (RabbitMQ waits for the client to close).
    let server = TestServer::start();
    let mut s = opened(&server).await;
    // queue.declare(ticket 0, "held", exclusive) on channel 1.
    let mut args = 0u16.to_be_bytes().to_vec();
    args.push(4);
    args.extend_from_slice(b"held");
    args.push(4);
    args.extend_from_slice(&0u32.to_be_bytes());
    s.write_all(&method(1, 50, 10, &args)).await.unwrap();
    let (_, ch, p) = frame(&mut s).await;
    assert_eq!(
        (ch, &p[..4]),
        (1, &[0u8, 50, 0, 11][..]),
        "queue.declare-ok"
    );

    let twice = [connection_close(), connection_close()].concat();
    s.write_all(&twice).await.unwrap();
    let (t, ch, p) = frame(&mut s).await;
    assert_eq!((t, ch, &p[..]), (1, 0, &[0u8, 10, 0, 51][..]), "close-ok");

    // The connection's exclusive queue goes at close-ok, not when the socket does.
    let observer = connect(&server).await;
    eventually("the exclusive queue is gone after close-ok", || async {
        let ch = observer.create_channel().await.expect("channel");
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        ch.queue_declare("held".into(), passive, FieldTable::default())
            .await
            .is_err()
    })
    .await;
    // By now a broker that closed the socket itself would have been read as the end
    // of the stream; the socket is still the client's, with nothing more on it (the
    // second close got no second close-ok).
    let mut buf = [0u8; 64];
    match s.try_read(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok(0) => panic!("the broker closed the socket after close-ok"),
        other => panic!("unexpected after close-ok: {other:?}"),
    }
    // The client closes; the broker follows.
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(DEADLINE, s.read_to_end(&mut rest))
        .await
        .expect("the broker closes its side once the client has")
        .expect("read");
    assert_eq!(n, 0, "nothing after close-ok: {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_flow_active_false_is_not_implemented_as_in_rabbitmq() {
    let server = TestServer::start();
    let mut s = opened(&server).await;
    s.write_all(&method(1, 20, 20, &[0])).await.unwrap();
    let (t, ch, p) = frame(&mut s).await;
    assert_eq!((t, ch), (1, 0), "connection.close, not channel.close");
    assert_eq!(
        hard_error(&p),
        (
            540,
            "NOT_IMPLEMENTED - active=false".to_string(),
            [0, 20, 0, 20]
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_flow_active_true_is_answered() {
    let server = TestServer::start();
    let mut s = opened(&server).await;
    s.write_all(&method(1, 20, 20, &[1])).await.unwrap();
    let (_, ch, p) = frame(&mut s).await;
    assert_eq!(
        (ch, &p[..]),
        (1, &[0u8, 20, 0, 21, 1][..]),
        "flow-ok active"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_without_requeue_is_not_implemented_as_in_rabbitmq() {
    let server = TestServer::start();
    // basic.recover (60, 110) and basic.recover-async (60, 100), requeue=false.
    for m in [110u16, 100] {
        let mut s = opened(&server).await;
        s.write_all(&method(1, 60, m, &[0])).await.unwrap();
        let (t, ch, p) = within("the answer to recover", frame(&mut s)).await;
        assert_eq!((t, ch), (1, 0), "connection.close, not channel.close");
        let [hi, lo] = m.to_be_bytes();
        assert_eq!(
            hard_error(&p),
            (
                540,
                "NOT_IMPLEMENTED - requeue=false".to_string(),
                [0, 60, hi, lo]
            )
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redeclare_with_another_exclusive_flag_is_resource_locked() {
    // aiormq's test_exclusive_queue_locked: RabbitMQ checks exclusivity strictly and
    // first, so a plain declare of the connection's own exclusive queue is 405, not 406.
    let server = TestServer::start();
    let conn = connect(&server).await;
    let ch = conn.create_channel().await.unwrap();
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    ch.queue_declare("mine".into(), exclusive, FieldTable::default())
        .await
        .unwrap();
    let other = conn.create_channel().await.unwrap();
    let err = other
        .queue_declare(
            "mine".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'mine' in vhost '/'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration."),
        "{err}"
    );
    // The same the other way: an exclusive declare of a shared queue.
    let third = conn.create_channel().await.unwrap();
    third
        .queue_declare(
            "shared".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let err = third
        .queue_declare("shared".into(), exclusive, FieldTable::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("RESOURCE_LOCKED"), "{err}");
    // The owner's own exclusive redeclare is fine.
    let fourth = conn.create_channel().await.unwrap();
    fourth
        .queue_declare("mine".into(), exclusive, FieldTable::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passive_declare_of_the_default_exchange_is_access_refused() {
    // aiormq's test_channel_closed_reuse expects RabbitMQ's 403 here.
    let server = TestServer::start();
    let conn = connect(&server).await;
    let ch = conn.create_channel().await.unwrap();
    let passive = lapin::options::ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let err = within(
        "the answer to the passive declare",
        ch.exchange_declare(
            "".into(),
            lapin::ExchangeKind::Direct,
            passive,
            FieldTable::default(),
        ),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("ACCESS_REFUSED - operation not permitted on the default exchange"),
        "{err}"
    );
    // Named exchanges still answer a passive declare.
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        "amq.direct".into(),
        lapin::ExchangeKind::Direct,
        passive,
        FieldTable::default(),
    )
    .await
    .unwrap();
}
