//! Raw-frame tests of the AMQP listener's error paths and limits: what a broken or
//! hostile client gets, byte by byte.

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

/// Reads one frame: (type, channel, payload).
async fn frame(s: &mut TcpStream) -> (u8, u16, Vec<u8>) {
    let mut head = [0u8; 7];
    tokio::time::timeout(DEADLINE, s.read_exact(&mut head))
        .await
        .expect("a frame in time")
        .expect("frame header");
    let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
    let mut payload = vec![0u8; size + 1];
    s.read_exact(&mut payload).await.expect("frame payload");
    assert_eq!(payload.pop(), Some(0xCE), "frame end");
    (head[0], u16::from_be_bytes([head[1], head[2]]), payload)
}

fn method(channel: u16, class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut payload = class.to_be_bytes().to_vec();
    payload.extend_from_slice(&method.to_be_bytes());
    payload.extend_from_slice(args);
    let mut f = vec![1u8];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(&payload);
    f.push(0xCE);
    f
}

fn shortstr(s: &str) -> Vec<u8> {
    let mut v = vec![s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

/// Runs the handshake as guest up to open-ok.
async fn handshake(s: &mut TcpStream) {
    s.write_all(b"AMQP\x00\x00\x09\x01").await.unwrap();
    let (t, _, p) = frame(s).await;
    assert_eq!((t, &p[..4]), (1, &[0, 10, 0, 10][..]), "connection.start");
    // start-ok: client-properties (empty table), PLAIN, response, locale.
    let mut args = 0u32.to_be_bytes().to_vec();
    args.extend(shortstr("PLAIN"));
    let resp = b"\0guest\0guest";
    args.extend_from_slice(&(resp.len() as u32).to_be_bytes());
    args.extend_from_slice(resp);
    args.extend(shortstr("en_US"));
    s.write_all(&method(0, 10, 11, &args)).await.unwrap();
    let (_, _, p) = frame(s).await;
    assert_eq!(&p[..4], &[0, 10, 0, 30], "connection.tune");
    let frame_max = u32::from_be_bytes([p[6], p[7], p[8], p[9]]);
    assert_eq!(frame_max, 131_072);
    // tune-ok: channel_max 2047, frame_max 131072, heartbeat 0.
    let mut args = 2047u16.to_be_bytes().to_vec();
    args.extend_from_slice(&131_072u32.to_be_bytes());
    args.extend_from_slice(&0u16.to_be_bytes());
    s.write_all(&method(0, 10, 31, &args)).await.unwrap();
    // open: vhost "/", reserved shortstr, reserved bit.
    let mut args = shortstr("/");
    args.extend(shortstr(""));
    args.push(0);
    s.write_all(&method(0, 10, 40, &args)).await.unwrap();
    let (_, _, p) = frame(s).await;
    assert_eq!(&p[..4], &[0, 10, 0, 41], "connection.open-ok");
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
    assert_eq!(&p[..4], &[0, 10, 0, 50], "connection.close");
    assert_eq!(u16::from_be_bytes([p[4], p[5]]), 501);
    let text_len = p[6] as usize;
    let text = std::str::from_utf8(&p[7..7 + text_len]).unwrap();
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
    assert_eq!(&p[..4], &[0, 10, 0, 50], "connection.close");
    assert_eq!(u16::from_be_bytes([p[4], p[5]]), 504);
}
