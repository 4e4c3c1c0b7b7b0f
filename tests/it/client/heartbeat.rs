//! Heartbeats, against a scripted fake broker (the real one always answers).

use super::within;
use actormq::client::{Client, ClientError, ConnectOptions};
use actormq::protocol::{
    decode_client, encode_server, frame::take_frame, ClientFrame, ServerFrame,
};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads frames until `want` accepts one.
async fn read_until(
    socket: &mut TcpStream,
    buf: &mut BytesMut,
    mut want: impl FnMut(&ClientFrame<'_>) -> bool,
) {
    loop {
        while let Some(frame) = take_frame(buf, 1 << 20).unwrap() {
            if want(&decode_client(&frame).unwrap()) {
                return;
            }
        }
        assert_ne!(socket.read_buf(buf).await.unwrap(), 0, "client hung up");
    }
}

/// A fake broker that welcomes one client with a 1 s heartbeat and hands back the socket.
async fn fake_broker() -> (String, tokio::task::JoinHandle<(TcpStream, BytesMut)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        read_until(&mut socket, &mut buf, |f| {
            matches!(f, ClientFrame::Hello(_))
        })
        .await;
        let mut out = BytesMut::new();
        let welcome = ServerFrame::Welcome {
            version: actormq::protocol::PROTOCOL_VERSION,
            server: "fake".into(),
            max_frame_size: 1 << 20,
            heartbeat_secs: 1,
        };
        encode_server(&welcome, &mut out).unwrap();
        socket.write_all(&out).await.unwrap();
        (socket, buf)
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_client_sends_heartbeats() {
    let (addr, broker) = fake_broker().await;
    let client = Client::connect(ConnectOptions::new(addr)).await.unwrap();
    assert_eq!(client.server_info().heartbeat_secs, 1);
    let (mut socket, mut buf) = broker.await.unwrap();
    within(
        "a heartbeat from the idle client",
        read_until(&mut socket, &mut buf, |f| {
            matches!(f, ClientFrame::Heartbeat)
        }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_broker_is_declared_dead_after_two_intervals() {
    let (addr, broker) = fake_broker().await;
    let client = Client::connect(ConnectOptions::new(addr)).await.unwrap();
    // Keep the socket open but never answer.
    let (_socket, _buf) = broker.await.unwrap();
    let err = within(
        "the heartbeat timeout",
        client.declare_queue("q", &Default::default()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ClientError::HeartbeatTimeout { .. }),
        "{err:?}"
    );
    assert_eq!(err.code(), Some(actormq::ErrorCode::HeartbeatTimeout));
}
