//! Just enough raw AMQP 0-9-1 to drive a handshake over any stream (plain or TLS) and
//! read what the broker answers, byte by byte.

use crate::support::DEADLINE;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Reads one frame: (type, channel, payload).
pub async fn frame<S: AsyncRead + Unpin>(s: &mut S) -> (u8, u16, Vec<u8>) {
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

/// A method frame on `channel`.
pub fn method(channel: u16, class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut payload = class.to_be_bytes().to_vec();
    payload.extend_from_slice(&method.to_be_bytes());
    payload.extend_from_slice(args);
    raw_frame(1, channel, &payload)
}

/// A frame of `kind` (1 method, 2 header, 3 body) on `channel`.
pub fn raw_frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(0xCE);
    f
}

/// `n` one-byte publishes on `channel` to the routing key "nowhere" of the default
/// exchange, which routes them to no queue: a burst that keeps a connection busy.
pub fn unroutable_publishes(channel: u16, n: usize) -> Vec<u8> {
    let mut publish = method(
        channel,
        60,
        40,
        &[&[0, 0][..], &shortstr(""), &shortstr("nowhere"), &[0]].concat(),
    );
    let mut header = 60u16.to_be_bytes().to_vec();
    header.extend_from_slice(&[0, 0]);
    header.extend_from_slice(&1u64.to_be_bytes());
    header.extend_from_slice(&[0, 0]);
    publish.extend(raw_frame(2, channel, &header));
    publish.extend(raw_frame(3, channel, b"x"));
    publish.repeat(n)
}

/// A no-ack `basic.consume` of `queue` as consumer `tag` on `channel`.
pub fn consume_no_ack(channel: u16, queue: &str, tag: &str) -> Vec<u8> {
    let args = [
        &[0, 0][..],
        &shortstr(queue),
        &shortstr(tag),
        &[0b10, 0, 0, 0, 0],
    ];
    method(channel, 60, 20, &args.concat())
}

/// A `basic.cancel` of consumer `tag` on `channel`.
pub fn cancel(channel: u16, tag: &str) -> Vec<u8> {
    method(channel, 60, 30, &[&shortstr(tag)[..], &[0]].concat())
}

/// A short string's encoding.
pub fn shortstr(s: &str) -> Vec<u8> {
    let mut v = vec![s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

/// A connection.close's reply code and text.
pub fn close_of(p: &[u8]) -> (u16, String) {
    assert_eq!(&p[..4], &[0, 10, 0, 50], "connection.close");
    let code = u16::from_be_bytes([p[4], p[5]]);
    let len = p[6] as usize;
    (code, String::from_utf8_lossy(&p[7..7 + len]).into_owned())
}

/// Runs the handshake as guest with `channel_max`, up to the answer to connection.open:
/// its payload (open-ok, or a close).
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, channel_max: u16) -> Vec<u8> {
    s.write_all(b"AMQP\x00\x00\x09\x01").await.unwrap();
    let (t, _, p) = frame(s).await;
    assert_eq!((t, &p[..4]), (1, &[0, 10, 0, 10][..]), "connection.start");
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
    assert_eq!(frame_max, 131_072, "RabbitMQ's default frame_max");
    let mut args = channel_max.to_be_bytes().to_vec();
    args.extend_from_slice(&131_072u32.to_be_bytes());
    args.extend_from_slice(&0u16.to_be_bytes());
    s.write_all(&method(0, 10, 31, &args)).await.unwrap();
    let mut args = shortstr("/");
    args.extend(shortstr(""));
    args.push(0);
    s.write_all(&method(0, 10, 40, &args)).await.unwrap();
    frame(s).await.2
}
