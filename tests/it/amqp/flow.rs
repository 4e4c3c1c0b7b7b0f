//! What limits deliveries to a channel: `basic.qos global=true` (one limit shared by
//! the channel's consumers, as RabbitMQ reads it) and `channel.flow`; and what a memory
//! alarm does not stop: a connection that only consumes.

use super::{connect, declare, within};
use crate::support::TestServer;
use futures_util::{FutureExt, StreamExt};
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Consumer};

async fn fill(ch: &Channel, queue: &str, n: usize) {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for _ in 0..n {
        let c = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                b"m",
                BasicProperties::default(),
            )
            .await
            .unwrap();
        within("confirm", c).await.unwrap();
    }
}

async fn consume(ch: &Channel, queue: &str) -> Consumer {
    ch.basic_consume(
        queue.into(),
        format!("c-{queue}").as_str().into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap()
}

/// True when `c` has a delivery waiting right now.
fn has_more(c: &mut Consumer) -> bool {
    c.next().now_or_never().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_qos_is_one_limit_shared_by_the_channels_consumers() {
    let server = TestServer::start();
    let conn = connect(&server).await;
    let publisher = conn.create_channel().await.unwrap();
    declare(&publisher, "g1").await;
    declare(&publisher, "g2").await;
    fill(&publisher, "g1", 5).await;
    fill(&publisher, "g2", 5).await;
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(3, BasicQosOptions { global: true })
        .await
        .unwrap();
    let mut a = consume(&ch, "g1").await;
    let mut b = consume(&ch, "g2").await;
    let mut tags = Vec::new();
    let mut streams = futures_util::stream::select(&mut a, &mut b);
    for i in 0..3 {
        let d = within(&format!("delivery {i}"), streams.next())
            .await
            .unwrap()
            .unwrap();
        tags.push(d.delivery_tag);
    }
    drop(streams);
    // A round trip on the channel: whatever the broker wrote before its answer is here.
    ch.basic_qos(3, BasicQosOptions { global: true })
        .await
        .unwrap();
    assert!(
        !has_more(&mut a) && !has_more(&mut b),
        "3 unacked on the channel: no 4th"
    );
    ch.basic_ack(tags[0], BasicAckOptions::default())
        .await
        .unwrap();
    let mut streams = futures_util::stream::select(&mut a, &mut b);
    let d = within("a 4th after one ack", streams.next())
        .await
        .unwrap()
        .unwrap();
    drop(streams);
    ch.basic_qos(3, BasicQosOptions { global: true })
        .await
        .unwrap();
    assert!(!has_more(&mut a) && !has_more(&mut b), "back at the limit");
    // Raising the shared limit releases the rest at once.
    ch.basic_qos(0, BasicQosOptions { global: true })
        .await
        .unwrap();
    let mut streams = futures_util::stream::select(&mut a, &mut b);
    for i in 4..10 {
        within(&format!("delivery {i} after the raise"), streams.next())
            .await
            .unwrap()
            .unwrap();
    }
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_flow_pauses_and_resumes_deliveries_when_set_to() {
    // RabbitMQ refuses active=false (suites::channel_flow_active_false_is_...); the
    // spec's pause is served with `amqp.channel_flow_pause`.
    let server = TestServer::with(|s| s.amqp.channel_flow_pause = true);
    let conn = connect(&server).await;
    let publisher = conn.create_channel().await.unwrap();
    declare(&publisher, "paused").await;
    let ch = conn.create_channel().await.unwrap();
    let mut c = consume(&ch, "paused").await;
    let active = ch
        .channel_flow(ChannelFlowOptions { active: false })
        .await
        .unwrap();
    assert!(!active, "flow-ok echoes active=false");
    fill(&publisher, "paused", 3).await;
    // Enqueued (confirmed) and dispatched to the consumer: held by the paused channel.
    ch.basic_qos(0, BasicQosOptions::default()).await.unwrap();
    assert!(!has_more(&mut c), "nothing delivered while paused");
    let active = ch
        .channel_flow(ChannelFlowOptions { active: true })
        .await
        .unwrap();
    assert!(active);
    for i in 0..3 {
        within(&format!("delivery {i} after resuming"), c.next())
            .await
            .unwrap()
            .unwrap();
    }
}

/// During a memory alarm only publishing connections are blocked and told so, as in
/// RabbitMQ. A consume-only lapin connection told `connection.blocked` would send
/// nothing at all, its acks included, and the alarm it could clear would never clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_memory_alarm_a_consume_only_connection_consumes_acks_and_clears_it() {
    let server = TestServer::with(|s| s.broker.memory_high_watermark = 64 * 1024);
    let gauge = server.handle().broker().memory().clone();
    // Connected before the alarm: it is told nothing when the alarm starts.
    let consumer_conn = connect(&server).await;
    let publisher = connect(&server).await;
    let pch = publisher.create_channel().await.unwrap();
    declare(&pch, "alarmed").await;
    for _ in 0..2 {
        within(
            "a publish",
            pch.basic_publish(
                "".into(),
                "alarmed".into(),
                BasicPublishOptions::default(),
                &vec![7u8; 40 * 1024],
                BasicProperties::default(),
            ),
        )
        .await
        .unwrap();
    }
    let end = std::time::Instant::now() + crate::support::DEADLINE;
    while !gauge.is_blocked() {
        assert!(std::time::Instant::now() < end, "the alarm never started");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // During the alarm it opens a channel, consumes one at a time, and acks.
    let ch = within("a channel", consumer_conn.create_channel())
        .await
        .unwrap();
    within("qos", ch.basic_qos(1, BasicQosOptions::default()))
        .await
        .unwrap();
    let mut consumer = within("a consume", consume(&ch, "alarmed")).await;
    for n in 0..2 {
        let d = within("a delivery", consumer.next())
            .await
            .expect("the consumer goes on")
            .expect("a delivery");
        assert_eq!(d.data.len(), 40 * 1024, "delivery {n}");
        within("an ack", d.ack(BasicAckOptions::default()))
            .await
            .unwrap();
    }
    while gauge.is_blocked() {
        assert!(
            std::time::Instant::now() < end,
            "the acks did not clear the alarm"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
