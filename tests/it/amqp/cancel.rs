//! A client's `basic.cancel` while deliveries for that consumer are on their way: the
//! ones the queue sent before it saw the cancel are written to the client before the
//! cancel-ok (as RabbitMQ does), neither dropped (auto-acked ones would be lost) nor
//! left unacked at the queue (manual ones, until the channel closed).

use super::{connect, declare, ready, within};
use crate::security::amqp_raw::{
    close_of, frame, handshake, method, shortstr as short, unroutable_publishes,
};
use crate::support::{TestServer, DEADLINE};
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};

const N: usize = 10_000;
/// Publishes to no queue (on channel 2) written with the cancel, to keep the
/// connection busy.
const FLOOD: usize = 1000;
const ROUNDS: usize = 40;

/// A raw AMQP connection to `server`, past its handshake (up to 2047 channels).
async fn raw_connection(
    server: &TestServer,
) -> (
    BufReader<tokio::net::tcp::OwnedReadHalf>,
    tokio::net::tcp::OwnedWriteHalf,
) {
    let s = tokio::net::TcpStream::connect(server.handle().amqp_addrs()[0])
        .await
        .unwrap();
    let (rd, mut wr) = s.into_split();
    let mut rd = BufReader::new(rd);
    handshake(&mut tokio::io::join(&mut rd, &mut wr), 2047).await;
    (rd, wr)
}

/// Declares `queue` and fills it with `n` numbered messages, confirmed.
async fn numbered(pch: &lapin::Channel, queue: &str, n: usize) {
    declare(pch, queue).await;
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut confirms = Vec::with_capacity(n);
    for i in 0..n {
        let c = pch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                i.to_string().as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap();
        confirms.push(c);
    }
    for c in confirms {
        assert!(within("confirm", c).await.unwrap().is_ack());
    }
}

/// Rounds of a consumer (`no_ack` or not) of a queue of `N` numbered messages, each
/// cancelled after ten deliveries at the end of one write of `FLOOD` publishes on
/// another channel, so deliveries are in the connection's mailbox when it handles the
/// cancel. The manual consumer acks all it received after each cancel-ok. Then
/// whatever the client did not receive must still be in the queue, while the raw
/// connection (and its channel) stays open.
async fn cancel_in_rounds(no_ack: bool) {
    // Small delivery batches: more of them on their way at any time.
    let server = TestServer::with(|s| s.broker.consumer_window = 50);
    let conn = connect(&server).await;
    let pch = conn.create_channel().await.unwrap();
    numbered(&pch, "c", N).await;

    let (mut rd, mut wr) = raw_connection(&server).await;
    wr.write_all(&method(1, 20, 10, &[0])).await.unwrap();
    wr.write_all(&method(2, 20, 10, &[0])).await.unwrap();
    let flood = unroutable_publishes(2, FLOOD);
    let mut seen = BTreeSet::new();
    for round in 0..ROUNDS {
        if ready(&pch, "c").await < 200 {
            break;
        }
        let tag = format!("c{round}");
        let mut consume = vec![0, 0];
        consume.extend(short("c"));
        consume.extend(short(&tag));
        consume.extend_from_slice(&[if no_ack { 0b10 } else { 0 }, 0, 0, 0, 0]);
        wr.write_all(&method(1, 60, 20, &consume)).await.unwrap();
        let mut burst = flood.clone();
        burst.extend(method(1, 60, 30, &[&short(&tag)[..], &[0]].concat()));
        let (mut n, mut sent, mut body_next, mut last) = (0, false, false, 0u64);
        loop {
            let (kind, ch, p) = frame(&mut rd).await;
            match (kind, ch) {
                (1, 1) if p[..4] == [0, 60, 0, 60] => {
                    body_next = true;
                    let at = 5 + p[4] as usize;
                    last = u64::from_be_bytes(p[at..at + 8].try_into().unwrap());
                }
                (1, 1) if p[..4] == [0, 60, 0, 31] => break,
                (1, _) if p[..4] == [0, 20, 0, 40] || p[..4] == [0, 10, 0, 50] => {
                    panic!("closed: {}", String::from_utf8_lossy(&p))
                }
                (3, 1) if body_next => {
                    body_next = false;
                    seen.insert(std::str::from_utf8(&p).unwrap().parse::<usize>().unwrap());
                    n += 1;
                    if n == 10 && !sent {
                        sent = true;
                        wr.write_all(&burst).await.unwrap();
                    }
                }
                _ => {}
            }
        }
        if !no_ack && last > 0 {
            let mut ack = last.to_be_bytes().to_vec();
            ack.push(1);
            wr.write_all(&method(1, 60, 80, &ack)).await.unwrap();
        }
        eprintln!("round {round}: {n} received before cancel-ok");
    }
    let received = seen.len();

    // The rest, consumed with acks on another connection (the raw one stays open).
    let cch = conn.create_channel().await.unwrap();
    let mut rest = cch
        .basic_consume(
            "c".into(),
            "rest".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let end = tokio::time::Instant::now() + DEADLINE;
    while seen.len() < N {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        let next = tokio::time::timeout(left.min(Duration::from_secs(1)), rest.next()).await;
        let Ok(next) = next else {
            assert!(
                tokio::time::Instant::now() < end,
                "{} of {N} missing ({received} received by the cancelled consumers)",
                N - seen.len()
            );
            continue;
        };
        let d = next.unwrap().unwrap();
        seen.insert(
            std::str::from_utf8(&d.data)
                .unwrap()
                .parse::<usize>()
                .unwrap(),
        );
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    eprintln!("{received} received by the cancelled consumers, the rest after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_ack_deliveries_in_flight_at_a_cancel_are_written_not_lost() {
    cancel_in_rounds(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_deliveries_in_flight_at_a_cancel_are_written_and_ackable() {
    cancel_in_rounds(false).await;
}

/// A basic.consume (manual acks) of `queue` as `tag` on `ch`.
fn consume_frame(ch: u16, queue: &str, tag: &str) -> Vec<u8> {
    let args = [&[0, 0][..], &short(queue), &short(tag), &[0, 0, 0, 0, 0]].concat();
    method(ch, 60, 20, &args)
}

/// A consumer tag whose cancel is not answered yet is still its channel's: a consume
/// on another channel that takes it is refused with 530, as for any tag in use. Taken,
/// the cancelled consumer's deliveries still on their way (routed by tag) were written
/// on the other channel, as that channel's, where an ack left them unacked at their
/// queue. Rounds as in `cancel_in_rounds`, the burst ending with the cancel on channel
/// 1 and a consume of an empty queue on channel 3 under the same tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_being_cancelled_is_not_taken_by_a_consume_on_another_channel() {
    let server = TestServer::with(|s| s.broker.consumer_window = 50);
    let conn = connect(&server).await;
    let pch = conn.create_channel().await.unwrap();
    declare(&pch, "empty").await;
    numbered(&pch, "c", N).await;

    let (mut rd, mut wr) = raw_connection(&server).await;
    for ch in 1..=3 {
        wr.write_all(&method(ch, 20, 10, &[0])).await.unwrap();
    }
    let flood = unroutable_publishes(2, FLOOD);
    // Deliveries of queue "c" written on channel 3, whose consumer is of "empty".
    let mut misrouted = 0;
    for round in 0..ROUNDS {
        let tag = format!("t{round}");
        wr.write_all(&consume_frame(1, "c", &tag)).await.unwrap();
        let mut burst = flood.clone();
        burst.extend(method(1, 60, 30, &[&short(&tag)[..], &[0]].concat()));
        burst.extend(consume_frame(3, "empty", &tag));
        let (mut n, mut last) = (0, 0u64);
        let (mut cancel_ok, mut consume_ok) = (false, false);
        while !(cancel_ok && consume_ok) {
            let (kind, ch, p) = frame(&mut rd).await;
            match (kind, ch) {
                (1, 0) if p[..4] == [0, 10, 0, 50] => {
                    let (code, text) = close_of(&p);
                    assert_eq!(misrouted, 0, "deliveries of 'c' on channel 3");
                    assert_eq!(code, 530, "{text}");
                    assert!(text.contains(&format!("'{tag}'")), "{text}");
                    assert!(text.contains("channel 1 is not answered"), "{text}");
                    return;
                }
                (1, _) if p[..4] == [0, 20, 0, 40] => {
                    panic!("channel closed: {}", String::from_utf8_lossy(&p))
                }
                (1, 1) if p[..4] == [0, 60, 0, 60] => {
                    let at = 5 + p[4] as usize;
                    last = u64::from_be_bytes(p[at..at + 8].try_into().unwrap());
                    n += 1;
                    if n == 10 {
                        wr.write_all(&burst).await.unwrap();
                    }
                }
                (1, 3) if p[..4] == [0, 60, 0, 60] => misrouted += 1,
                (1, 1) if p[..4] == [0, 60, 0, 31] => cancel_ok = true,
                (1, 3) if p[..4] == [0, 60, 0, 21] => consume_ok = true,
                _ => {}
            }
        }
        // Channel 3's consumer ends too; what it was given comes before its cancel-ok.
        let cancel = method(3, 60, 30, &[&short(&tag)[..], &[0]].concat());
        wr.write_all(&cancel).await.unwrap();
        loop {
            let (kind, ch, p) = frame(&mut rd).await;
            match (kind, ch) {
                (1, 3) if p[..4] == [0, 60, 0, 60] => misrouted += 1,
                (1, 3) if p[..4] == [0, 60, 0, 31] => break,
                _ => {}
            }
        }
        assert_eq!(
            misrouted, 0,
            "round {round}: deliveries of the cancelled consumer of 'c' written on channel 3"
        );
        let mut ack = last.to_be_bytes().to_vec();
        ack.push(1);
        wr.write_all(&method(1, 60, 80, &ack)).await.unwrap();
    }
    panic!("no consume came while a cancel was unanswered in {ROUNDS} rounds");
}
