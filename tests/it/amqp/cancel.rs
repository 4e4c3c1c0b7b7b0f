//! A client's `basic.cancel` while deliveries for that consumer are on their way: the
//! ones the queue sent before it saw the cancel are written to the client before the
//! cancel-ok (as RabbitMQ does), neither dropped (auto-acked ones would be lost) nor
//! left unacked at the queue (manual ones, until the channel closed).

use super::{connect, declare, ready, within};
use crate::security::amqp_raw::{
    frame, handshake, method, shortstr as short, unroutable_publishes,
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
    declare(&pch, "c").await;
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut confirms = Vec::with_capacity(N);
    for n in 0..N {
        let c = pch
            .basic_publish(
                "".into(),
                "c".into(),
                BasicPublishOptions::default(),
                n.to_string().as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap();
        confirms.push(c);
    }
    for c in confirms {
        assert!(within("confirm", c).await.unwrap().is_ack());
    }

    let s = tokio::net::TcpStream::connect(server.handle().amqp_addrs()[0])
        .await
        .unwrap();
    let (rd, mut wr) = s.into_split();
    let mut rd = BufReader::new(rd);
    handshake(&mut tokio::io::join(&mut rd, &mut wr), 2047).await;
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
