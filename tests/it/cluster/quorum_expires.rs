//! Expiry on quorum queues replicated across a 3-node cluster (real processes):
//! `x-expires` deletes a queue unused for its period on every node (its group too),
//! while a consumer, `basic.get`s or redeclares on a node that does not lead the group
//! keep one alive, and it goes once they stop, also when its group's leader is killed
//! before its period is up (the new leader counts it), and when a policy gave it
//! `x-expires` after its declare (redeclares through a node that does not lead still
//! count); a `basic.get` passes over messages past their TTL that no `Clock` has
//! expired yet, and never answers empty while a live message is behind them.

use super::quorum::{connect, declare_quorum, publish_persistent, queue_leader, try_consume};
use super::{converged, has, three_led, wait_for, Node};
use crate::support::DEADLINE;
use lapin::options::{
    BasicCancelOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::task::block_in_place;

/// `x-expires` of the test's queues (ms): long beside the pace of the uses below.
const EXPIRES: i64 = 3000;

/// The arguments of a quorum queue with [`EXPIRES`], as an AMQP client declares it.
fn expiring_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert("x-expires".into(), AMQPValue::LongInt(EXPIRES as i32));
    args
}

/// Declares (or redeclares) `name` with [`expiring_args`] on `ch`: the messages it
/// holds.
async fn declare_expiring(ch: &Channel, name: &str) -> u32 {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        expiring_args(),
    )
    .await
    .unwrap_or_else(|e| panic!("declare '{name}': {e}"))
    .message_count()
}

/// A `basic.get` of `queue` on `ch` every 150 ms (the pace of the uses below).
async fn keep_getting(ch: &Channel, queue: &str) -> std::convert::Infallible {
    loop {
        ch.basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("a get on a used queue");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// A redeclare of `queue` on `ch` every 150 ms, each finding its one message.
async fn keep_redeclaring(ch: &Channel, queue: &str) -> std::convert::Infallible {
    loop {
        assert_eq!(declare_expiring(ch, queue).await, 1, "'{queue}' expired");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// The quorum group directories of `node` (one per group it runs a member of).
fn group_dirs(node: &Node) -> usize {
    std::fs::read_dir(node.data_dir().join("raft").join("queues"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A node of `nodes` other than `id`.
fn other_than(nodes: &[Node], id: u64) -> &Node {
    nodes.iter().find(|n| n.id != id).expect("three nodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_quorum_queue_expires_on_every_node_and_a_used_one_stays_until_unused() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_led(dir.path()));
    let all: Vec<&Node> = nodes.iter().collect();
    // A queue's period starts at its declare, and finding its group's leader (for a
    // use through a node that does not lead) may outlast a period on a loaded
    // machine: before, 'redeclared' expired during the others' setup, before its
    // first redeclare. So each queue is used through node 1 (which may lead it) from
    // its declare until its use through another node is in place; the loop below then
    // uses them only through nodes that do not lead, for two periods at least.
    let mut conns = Vec::new();
    for n in &nodes {
        conns.push(connect(n).await);
    }
    let channel_to = |id: u64| {
        let i = nodes.iter().position(|n| n.id == id).expect("a node");
        conns[i].create_channel()
    };
    let ch = conns[0].create_channel().await.unwrap();
    // One channel per keeper below: a get or redeclare cut off when its keeper
    // stops is never waited behind.
    let mut kch = Vec::new();
    for _ in 0..3 {
        kch.push(conns[0].create_channel().await.unwrap());
    }
    let pch = conns[0].create_channel().await.unwrap();
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    declare_expiring(&ch, "idle").await;
    // Each use is made on a node that does not lead the queue's group: a consumer
    // and a get are forwarded to the leader, a redeclare is committed as a `Touch`.
    declare_expiring(&ch, "consumed").await;
    let (_cconn, cch, _consumer) = tokio::select! {
        c = async {
            let consumed_leader = queue_leader(&all, "consumed").await;
            try_consume(other_than(&nodes, consumed_leader), "consumed", 1)
                .await
                .expect("a consumer on a follower")
        } => c,
        never = keep_getting(&kch[0], "consumed") => match never {},
    };
    declare_expiring(&ch, "polled").await;
    let gch = tokio::select! {
        g = async {
            let polled_leader = queue_leader(&all, "polled").await;
            channel_to(other_than(&nodes, polled_leader).id).await.unwrap()
        } => g,
        never = keep_getting(&kch[1], "polled") => match never {},
    };
    // A redeclare would make the queue again had it expired: its one message tells.
    let redeclared = async {
        declare_expiring(&ch, "redeclared").await;
        let kept = publish_persistent(&pch, "redeclared", b"kept").await;
        assert!(kept.await.unwrap().is_ack(), "confirmed");
        tokio::select! {
            r = async {
                let redeclared_leader = queue_leader(&all, "redeclared").await;
                channel_to(other_than(&nodes, redeclared_leader).id).await.unwrap()
            } => r,
            never = keep_redeclaring(&kch[2], "redeclared") => match never {},
        }
    };
    let rch = tokio::select! {
        rch = redeclared => rch,
        never = keep_getting(&gch, "polled") => match never {},
    };

    // Used all along (a get and a redeclare every 150 ms, a period being 3 s) until
    // the unused queue is gone from every node, and for two periods at least: long
    // enough for any of them to have expired, had its use not counted.
    let start = Instant::now();
    let end = start + DEADLINE * 2;
    loop {
        gch.basic_get("polled".into(), BasicGetOptions { no_ack: true })
            .await
            .expect("a get on a used queue");
        assert_eq!(
            declare_expiring(&rch, "redeclared").await,
            1,
            "'redeclared' expired (and was made again) while redeclared"
        );
        let mut idle_left = false;
        for n in &all {
            idle_left |= has(&n.definitions().await, "queues", "idle");
        }
        if !idle_left && start.elapsed() >= Duration::from_millis(2 * EXPIRES as u64) {
            break;
        }
        assert!(Instant::now() < end, "'idle' did not expire on every node");
        // The pace of the uses, not a wait for an outcome.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    converged(&all, |d| {
        !has(d, "queues", "idle")
            && ["consumed", "polled", "redeclared"]
                .iter()
                .all(|q| has(d, "queues", q))
    })
    .await;

    // Unused from now on: the consumer goes, the gets and redeclares stop.
    cch.basic_cancel("c".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    converged(&all, |d| {
        ["consumed", "polled", "redeclared"]
            .iter()
            .all(|q| !has(d, "queues", q))
    })
    .await;
    // Their groups went with them, on every node.
    block_in_place(|| {
        wait_for("no group directory left", DEADLINE, || {
            nodes.iter().all(|n| group_dirs(n) == 0).then_some(())
        })
    });
    super::assert_no_panic(&nodes);
}

/// Milliseconds since the Unix epoch (the nodes run on this machine's clock).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A `basic.get` (auto-ack) on `ch`: the body, if any.
async fn get(ch: &Channel, queue: &str) -> Option<String> {
    ch.basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("a get")
        .map(|m| String::from_utf8(m.delivery.data.clone()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_passes_over_messages_past_their_ttl_and_takes_the_live_one_behind() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_led(dir.path()));
    let all: Vec<&Node> = nodes.iter().collect();
    declare_quorum(&nodes[0], "gets", "").await;
    let led = queue_leader(&all, "gets").await;
    let at = nodes.iter().find(|n| n.id == led).unwrap();
    let conn = connect(at).await;
    let pch = conn.create_channel().await.unwrap();
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    // Each get on its own connection: neither waits behind the other's answer.
    let (c1, c2) = (connect(at).await, connect(at).await);
    let (g1, g2) = (
        c1.create_channel().await.unwrap(),
        c2.create_channel().await.unwrap(),
    );
    for round in 0..5 {
        // `dead` has a TTL of 0: it is past its deadline from the next millisecond
        // on, behind a head without a TTL, so no expiry timer writes a `Clock` for it.
        let a = publish_persistent(&pch, "gets", format!("a{round}").as_bytes()).await;
        let dead = pch
            .basic_publish(
                "".into(),
                "gets".into(),
                BasicPublishOptions::default(),
                format!("dead{round}").as_bytes(),
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_expiration("0".into()),
            )
            .await
            .unwrap();
        let b = publish_persistent(&pch, "gets", format!("b{round}").as_bytes()).await;
        for c in [a, dead, b] {
            assert!(c.await.unwrap().is_ack(), "confirmed");
        }
        // Its deadline (the leader's clock before the confirm) has passed.
        let confirmed = now_ms();
        while now_ms() <= confirmed + 1 {
            tokio::task::yield_now().await;
        }
        // Two gets at once: the second is chosen while the first's entry commits.
        let (x, y) = tokio::join!(get(&g1, "gets"), get(&g2, "gets"));
        let mut got = [x, y];
        got.sort();
        assert_eq!(
            got,
            [Some(format!("a{round}")), Some(format!("b{round}"))],
            "round {round}: the live messages, never the dead one nor an empty answer"
        );
        assert_eq!(get(&g1, "gets").await, None, "round {round}: nothing left");
    }
    super::assert_no_panic(&nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_quorum_queue_still_expires_when_its_group_leader_is_killed_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = block_in_place(|| three_led(dir.path()));
    let all: Vec<&Node> = nodes.iter().collect();
    declare_quorum(&nodes[0], "orphan", &format!(r#","x-expires":{EXPIRES}"#)).await;
    // Killed well within its period: the new leader counts the period afresh from
    // its takeover, and deletes the queue through the survivors' log.
    let led = queue_leader(&all, "orphan").await;
    let at = nodes.iter().position(|n| n.id == led).unwrap();
    nodes[at].kill9();
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.id != led).collect();
    converged(&survivors, |d| !has(d, "queues", "orphan")).await;
    super::assert_no_panic(&nodes);
}

/// A policy gives an existing quorum queue `x-expires`; a client redeclares it only
/// through a node whose member does not lead the group. That member learns of the
/// new limit only by applying the leader's `SetLimits` (its node's own look at the
/// policy change may come first, while its machine still has the old limits), so it
/// must follow what it applied: else it never commits a redeclare as a use (`Touch`),
/// and the leader expires a queue still redeclared there (before 0ba31f4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_adding_x_expires_is_followed_where_the_group_is_not_led_so_redeclares_there_keep_the_queue(
) {
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| three_led(dir.path()));
    let all: Vec<&Node> = nodes.iter().collect();
    declare_quorum(&nodes[0], "leased", "").await;
    // A redeclare would make the queue again had it expired: its one message tells.
    let pch = connect(&nodes[0]).await.create_channel().await.unwrap();
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let kept = publish_persistent(&pch, "leased", b"kept").await;
    assert!(kept.await.unwrap().is_ack(), "confirmed");
    // Redeclared through a node that does not lead the group; the definitions' leader
    // when it can be (it applies the policy change first, well before the group's
    // `SetLimits`, so its first look finds the old limits).
    let group_leader = queue_leader(&all, "leased").await;
    let defs_leader = block_in_place(|| super::leader(&all));
    let through = match defs_leader != group_leader {
        true => nodes.iter().find(|n| n.id == defs_leader).unwrap(),
        false => other_than(&nodes, group_leader),
    };
    let rch = connect(through).await.create_channel().await.unwrap();
    let declare = |ch: &Channel| {
        let ch = ch.clone();
        async move {
            let mut args = FieldTable::default();
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
            ch.queue_declare(
                "leased".into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await
            .map(|q| q.message_count())
        }
    };
    assert_eq!(declare(&rch).await.unwrap(), 1);
    let r = nodes[0]
        .api()
        .put(
            "/api/policies/%2F/lease",
            &format!(r#"{{"pattern":"^leased$","definition":{{"expires":{EXPIRES}}},"apply-to":"queues"}}"#),
        )
        .await;
    assert!((200..300).contains(&r.status), "policy: {}", r.text());
    // Every member enforces it: its machine applied the group's `SetLimits`.
    for n in &nodes {
        super::queue_until(n, "leased", "x-expires in the group's limits", |q| {
            q["group_limits"]["expires"] == EXPIRES
        })
        .await;
    }

    // Redeclared there every 150 ms for three periods: long enough for the leader to
    // have expired it twice over, had the redeclares not counted.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(3 * EXPIRES as u64) {
        let held = declare(&rch).await;
        assert_eq!(
            held.ok(),
            Some(1),
            "'leased' expired (and was made again, or is going) while redeclared through node {} (group leader {group_leader})",
            through.id
        );
        // The pace of the uses, not a wait for an outcome.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Unused from now on: it goes from every node.
    converged(&all, |d| !has(d, "queues", "leased")).await;
    super::assert_no_panic(&nodes);
}
