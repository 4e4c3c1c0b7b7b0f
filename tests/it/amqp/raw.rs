//! Raw-frame tests of the AMQP listener's error paths and limits: what a broken or
//! hostile client gets, byte by byte.

use crate::security::amqp_raw::{self, close_of, frame, method};
use crate::support::{TestServer, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn open(server: &TestServer) -> TcpStream {
    TcpStream::connect(server.handle().amqp_addrs()[0])
        .await
        .expect("connects")
}

/// Reads until the server closes the socket; everything it sent.
async fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut all))
        .await
        .expect("the server closes the socket")
        .expect("read");
    all
}

/// Runs the handshake as guest up to open-ok.
async fn handshake(s: &mut TcpStream) {
    let answer = amqp_raw::handshake(s, 2047).await;
    assert_eq!(&answer[..4], &[0, 10, 0, 41], "connection.open-ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_protocol_header_gets_the_right_one_back_then_close() {
    let server = TestServer::start();
    let mut s = open(&server).await;
    s.write_all(b"AMQP\x01\x01\x00\x0a").await.unwrap();
    let got = read_to_close(&mut s).await;
    assert_eq!(got, b"AMQP\x00\x00\x09\x01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_frame_max_closes_the_connection_with_501() {
    let server = TestServer::start();
    let mut s = open(&server).await;
    handshake(&mut s).await;
    // A body frame header announcing more than frame_max.
    let mut f = vec![3u8, 0, 1];
    f.extend_from_slice(&(200_000u32).to_be_bytes());
    s.write_all(&f).await.unwrap();
    let (t, ch, p) = frame(&mut s).await;
    assert_eq!((t, ch), (1, 0));
    let (code, text) = close_of(&p);
    assert_eq!(code, 501);
    assert!(text.starts_with("FRAME_ERROR - "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_on_an_unopened_channel_is_a_channel_error_504() {
    let server = TestServer::start();
    let mut s = open(&server).await;
    handshake(&mut s).await;
    // basic.qos on channel 5, never opened.
    let mut args = 0u32.to_be_bytes().to_vec();
    args.extend_from_slice(&10u16.to_be_bytes());
    args.push(0);
    s.write_all(&method(5, 60, 10, &args)).await.unwrap();
    let (_, ch, p) = frame(&mut s).await;
    assert_eq!(ch, 0);
    assert_eq!(close_of(&p).0, 504);
}

/// A short string as AMQP writes it.
fn short(s: &str) -> Vec<u8> {
    let mut v = vec![s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_exchange_type_closes_the_connection_with_503_in_rabbitmqs_words() {
    let server = TestServer::start();
    let mut s = open(&server).await;
    handshake(&mut s).await;
    s.write_all(&method(1, 20, 10, &[0])).await.unwrap();
    let (_, ch, p) = frame(&mut s).await;
    assert_eq!((ch, &p[..4]), (1, &[0u8, 20, 0, 11][..]), "channel.open-ok");
    // exchange.declare(ticket 0, "x1", type "no-such-type", no flags, no arguments).
    let mut args = 0u16.to_be_bytes().to_vec();
    args.extend(short("x1"));
    args.extend(short("no-such-type"));
    args.push(0);
    args.extend_from_slice(&0u32.to_be_bytes());
    s.write_all(&method(1, 40, 10, &args)).await.unwrap();
    let (t, ch, p) = frame(&mut s).await;
    assert_eq!((t, ch), (1, 0), "connection.close, not channel.close");
    assert_eq!(
        close_of(&p),
        (
            503,
            "COMMAND_INVALID - unknown exchange type 'no-such-type'".to_string()
        )
    );
    // It names exchange.declare (class 40, method 10) after the reply text.
    let text_len = p[6] as usize;
    assert_eq!(&p[7 + text_len..7 + text_len + 4], &[0, 40, 0, 10]);
}
