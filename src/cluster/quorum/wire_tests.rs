//! Two quorum queue groups over the same three cluster ports (real TCP, the cluster
//! protocol's frames, [`Link`]), answered through each node's [`Groups`]: both groups
//! commit independently, and when one node stops running its members, each group goes
//! on with the other two, the new leader of the first returning what the old one had
//! delivered and nobody acked.

use super::*;
use crate::cluster::log_store::{Encoded, LogStore};
use crate::cluster::quorum::group::tests::config;
use crate::cluster::quorum::group::{GroupStateMachine, StoredMessage};
use crate::cluster::quorum::machine::{Command, ConsumerKey, Limits, Settle};
use crate::cluster::rpc::{decode_frame, read_frame_body, write_frame};
use crate::cluster::transport::Transport;
use crate::message::Message;
use openraft::error::{ClientWriteError, RaftError};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One node: its cluster port (answering group traffic only) and its groups.
pub(in crate::cluster::quorum) struct Node {
    pub addr: String,
    pub groups: Arc<Groups>,
    pub machines: BTreeMap<GroupId, GroupStateMachine>,
    /// Each member's encoded entries, as the runtime shares them.
    pub encoded: BTreeMap<GroupId, Arc<Encoded>>,
}

async fn serve(listener: tokio::net::TcpListener, groups: Arc<Groups>) {
    while let Ok((stream, peer)) = listener.accept().await {
        let groups = groups.clone();
        tokio::spawn(async move {
            let Some(mut stream) = groups.transport().accept(stream, peer).await else {
                return;
            };
            // As the cluster port's listener reads them: the body kept beside what it
            // decodes to, for a follower's log to write the entries as they came.
            while let Ok(Some(body)) = read_frame_body(&mut stream).await {
                let body = bytes::Bytes::from(body);
                let (id, rpc) = decode_frame::<Rpc>(&body).unwrap();
                let reply = match rpc {
                    Rpc::Group { group, rpc } => {
                        Reply::Group(groups.answer_frame(group, rpc, Some(&body)).await)
                    }
                    Rpc::GroupWrite { group, command } => {
                        Reply::GroupWrite(groups.write(group, command).await)
                    }
                    other => panic!("only group traffic here: {other:?}"),
                };
                if write_frame(&mut stream, id, &reply).await.is_err() {
                    break;
                }
            }
        });
    }
}

pub(in crate::cluster::quorum) fn msg(tag: u64, i: u64) -> StoredMessage {
    let body = [tag.to_be_bytes(), i.to_be_bytes()].concat();
    StoredMessage::from(&Message::new("", "q", body))
}

/// (tag, number, earlier deliveries) of the ready messages of `sm`.
pub(in crate::cluster::quorum) fn ready(sm: &GroupStateMachine) -> Vec<(u64, u64, u32)> {
    sm.read(|q| {
        q.peek(usize::MAX)
            .map(|r| {
                let b = &r.message.body;
                let tag = u64::from_be_bytes(b[..8].try_into().unwrap());
                let n = u64::from_be_bytes(b[8..16].try_into().unwrap());
                (tag, n, r.deliveries)
            })
            .collect()
    })
}

/// Waits for a member of `group` among `nodes` that leads it; answers its index.
pub(in crate::cluster::quorum) async fn leader(
    nodes: &[Node],
    among: &[usize],
    group: GroupId,
) -> usize {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        for i in among {
            if let Some(r) = nodes[*i].groups.get(group) {
                let m = r.metrics().borrow().clone();
                if m.current_leader == Some(m.id) {
                    return *i;
                }
            }
        }
        assert!(Instant::now() < end, "no leader of group {group}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until node `i`'s member of `group` applied `index`.
pub(in crate::cluster::quorum) async fn applied(
    nodes: &[Node],
    i: usize,
    group: GroupId,
    index: u64,
) {
    let end = Instant::now() + Duration::from_secs(20);
    let raft = nodes[i].groups.get(group).unwrap();
    loop {
        let m = raft.metrics().borrow().clone();
        if m.last_applied.is_some_and(|l| l.index >= index) {
            return;
        }
        assert!(
            Instant::now() < end,
            "node {i} did not apply {index} of {group}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Three nodes, each running a member of every group of `groups`, initialized.
async fn three_nodes(dir: &std::path::Path, group_ids: &[GroupId]) -> Vec<Node> {
    three_nodes_with(dir, group_ids, config()).await
}

/// Starts node `i`'s member of `group` (again) on its log under `dir`.
pub(in crate::cluster::quorum) async fn start_member(
    dir: &std::path::Path,
    node: &mut Node,
    i: usize,
    group: GroupId,
    config: Arc<openraft::Config>,
) {
    let id = i as NodeId + 1;
    let encoded = Arc::new(Encoded::new());
    let log: LogStore<QueueTypes> = LogStore::open(&dir.join(format!("{id}/{group}")))
        .unwrap()
        .with_encoded(encoded.clone());
    let sm = GroupStateMachine::new(Limits::default());
    let network = GroupNetwork {
        group,
        transport: node.groups.transport(),
        encoded: Some(encoded.clone()),
    };
    let raft = Raft::new(id, config, network, log, sm.clone())
        .await
        .unwrap();
    node.groups.insert_encoded(group, raft, encoded.clone());
    node.machines.insert(group, sm);
    node.encoded.insert(group, encoded);
}

/// [`three_nodes`] with the groups' Raft `config`.
pub(in crate::cluster::quorum) async fn three_nodes_with(
    dir: &std::path::Path,
    group_ids: &[GroupId],
    config: Arc<openraft::Config>,
) -> Vec<Node> {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let groups = Arc::new(Groups::new(Arc::new(Transport::plain(
            "the wire test's cluster secret",
        ))));
        tokio::spawn(serve(listener, groups.clone()));
        nodes.push(Node {
            addr,
            groups,
            machines: BTreeMap::new(),
            encoded: BTreeMap::new(),
        });
    }
    let members: BTreeMap<NodeId, BasicNode> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (i as NodeId + 1, BasicNode::new(&n.addr)))
        .collect();
    for group in group_ids.iter().copied() {
        for (i, node) in nodes.iter_mut().enumerate() {
            start_member(dir, node, i, group, config.clone()).await;
        }
        nodes[0]
            .groups
            .get(group)
            .unwrap()
            .initialize(members.clone())
            .await
            .unwrap();
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_groups_share_the_cluster_ports_and_survive_a_node_leaving() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_nodes(dir.path(), &[1, 2]).await;
    let all = [0, 1, 2];
    let write = |i: usize, group: GroupId, c: Command<StoredMessage>| {
        let raft = nodes[i].groups.get(group).unwrap();
        async move { raft.client_write(c).await.unwrap() }
    };

    let l1 = leader(&nodes, &all, 1).await;
    for batch in 0..3 {
        let ms = (1..=10).map(|i| msg(1, batch * 10 + i)).collect();
        write(l1, 1, Command::Enqueue(ms)).await;
    }
    let l2 = leader(&nodes, &all, 2).await;
    let r = write(
        l2,
        2,
        Command::Enqueue((1..=5).map(|i| msg(2, i)).collect()),
    )
    .await;
    assert_eq!(
        r.data.enqueued,
        [Some(1), Some(2), Some(3), Some(4), Some(5)]
    );
    let to = ConsumerKey {
        node: l1 as NodeId + 1,
        consumer: 1,
    };
    write(
        l1,
        1,
        Command::Deliver {
            to,
            ids: (1..=10).collect(),
        },
    )
    .await;
    let acked = write(
        l1,
        1,
        Command::Settle {
            ids: (1..=5).collect(),
            how: Settle::Ack,
        },
    )
    .await
    .log_id
    .index;

    // Group 1's leader node stops running its members (both groups).
    for group in [1, 2] {
        let raft = nodes[l1].groups.remove(group).unwrap();
        raft.shutdown().await.unwrap();
    }
    let rest: Vec<usize> = all.into_iter().filter(|i| *i != l1).collect();
    let n1 = leader(&nodes, &rest, 1).await;
    applied(&nodes, n1, 1, acked).await;
    let back = write(
        n1,
        1,
        Command::Return {
            keep_node: Some(n1 as NodeId + 1),
            consumer: None,
        },
    )
    .await
    .log_id
    .index;
    let expected: Vec<(u64, u64, u32)> = (6..=30).map(|i| (1, i, u32::from(i <= 10))).collect();
    for i in &rest {
        applied(&nodes, *i, 1, back).await;
        assert_eq!(
            ready(&nodes[*i].machines[&1]),
            expected,
            "node {i}, group 1"
        );
    }
    // Group 2 commits with the two members left, its queue untouched by group 1's.
    let n2 = leader(&nodes, &rest, 2).await;
    let r = write(n2, 2, Command::Enqueue(vec![msg(2, 6)])).await;
    assert_eq!(r.data.enqueued, [Some(6)]);
    let expected2: Vec<(u64, u64, u32)> = (1..=6).map(|i| (2, i, 0)).collect();
    for i in &rest {
        applied(&nodes, *i, 2, r.log_id.index).await;
        assert_eq!(
            ready(&nodes[*i].machines[&2]),
            expected2,
            "node {i}, group 2"
        );
    }
    for n in &nodes {
        for group in [1, 2] {
            if let Some(r) = n.groups.remove(group) {
                r.shutdown().await.unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_on_a_follower_are_batched_forwarded_and_confirmed_across_a_leader_change() {
    let dir = tempfile::tempdir().unwrap();
    let group = 7;
    let nodes = three_nodes(dir.path(), &[group]).await;
    let all = [0, 1, 2];
    let first = leader(&nodes, &all, group).await;
    let here = (first + 1) % 3;
    let publisher = super::super::publisher::Publisher::start(group, nodes[here].groups.clone());

    // 2000 publishes at once on a follower: forwarded, batched, confirmed in order.
    const N: u64 = 2000;
    let confirms: Vec<_> = (1..=N).map(|i| publisher.publish(msg(7, i))).collect();
    let ids: Vec<u64> = futures_util::future::join_all(confirms)
        .await
        .into_iter()
        .map(|r| r.expect("confirmed").expect("accepted"))
        .collect();
    assert_eq!(ids, (1..=N).collect::<Vec<u64>>(), "ids in publish order");
    let m = nodes[first]
        .groups
        .get(group)
        .unwrap()
        .metrics()
        .borrow()
        .clone();
    let entries = m.last_log_index.unwrap();
    eprintln!("{N} publishes from a follower in {entries} log entries (with the initial ones)");
    assert!(
        entries < N / 10,
        "{N} publishes took {entries} entries: not batched"
    );

    // The leader's node goes; the next publishes find the new leader.
    let raft = nodes[first].groups.remove(group).unwrap();
    raft.shutdown().await.unwrap();
    let confirms: Vec<_> = (N + 1..=N + 100)
        .map(|i| publisher.publish(msg(7, i)))
        .collect();
    let ids: Vec<u64> = futures_util::future::join_all(confirms)
        .await
        .into_iter()
        .map(|r| r.expect("confirmed after the failover").expect("accepted"))
        .collect();
    assert_eq!(ids, (N + 1..=N + 100).collect::<Vec<u64>>());
    let rest: Vec<usize> = all.into_iter().filter(|i| *i != first).collect();
    let second = leader(&nodes, &rest, group).await;
    let last = nodes[second]
        .groups
        .get(group)
        .unwrap()
        .metrics()
        .borrow()
        .last_log_index
        .unwrap();
    let expected: Vec<(u64, u64, u32)> = (1..=N + 100).map(|i| (7, i, 0)).collect();
    for i in &rest {
        applied(&nodes, *i, group, last).await;
        assert_eq!(ready(&nodes[*i].machines[&group]), expected, "node {i}");
    }
    for n in &nodes {
        if let Some(r) = n.groups.remove(group) {
            r.shutdown().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_majority_fails_a_write_instead_of_holding_it() {
    let dir = tempfile::tempdir().unwrap();
    let group = 9;
    let nodes = three_nodes(dir.path(), &[group]).await;
    let first = leader(&nodes, &[0, 1, 2], group).await;
    // Its two followers go: it still leads, and can commit nothing.
    for (i, n) in nodes.iter().enumerate() {
        if i != first {
            n.groups.remove(group).unwrap().shutdown().await.unwrap();
        }
    }
    let write = nodes[first].groups.write_within(
        group,
        Command::Enqueue(vec![msg(9, 1)]),
        Duration::from_millis(300),
    );
    let answered = tokio::time::timeout(Duration::from_secs(10), write)
        .await
        .expect("the write is answered, not held until the majority is back");
    match answered {
        Err(GroupWriteError::Failed(e)) => assert!(e.contains("not committed within"), "{e}"),
        other => panic!("a failed write, not {other:?}"),
    }
    nodes[first]
        .groups
        .remove(group)
        .unwrap()
        .shutdown()
        .await
        .unwrap();
}

/// The records of the log in `dir`, its segments concatenated in order.
fn log_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n.starts_with("log-"))
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|n| std::fs::read(dir.join(n)).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_entry_is_encoded_once_by_its_leader_and_written_as_received_by_followers() {
    let dir = tempfile::tempdir().unwrap();
    let group = 11;
    let nodes = three_nodes(dir.path(), &[group]).await;
    let all = [0, 1, 2];
    let batch = |b: u64| Command::Enqueue((1..=50).map(|i| msg(b, i)).collect());
    // The writes go to the leader found, as a client's do; one refused because
    // leadership moved meanwhile (an election on a loaded machine: `ForwardToLeader`,
    // nothing appended) makes the round start again on the new leader, so that what
    // is counted below is one leader's work.
    let end = Instant::now() + Duration::from_secs(60);
    let (l, before, last) = 'round: loop {
        assert!(Instant::now() < end, "no round of writes on one leader");
        let l = leader(&nodes, &all, group).await;
        let raft = nodes[l].groups.get(group).unwrap();
        let mut before = None;
        let mut last = 0;
        for b in 0..=20 {
            match raft.client_write(batch(b)).await {
                Ok(r) => last = r.log_id.index,
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => continue 'round,
                Err(e) => panic!("write {b} on node {l}: {e}"),
            }
            if b == 0 {
                before = Some(nodes[l].encoded[&group].counts());
            }
        }
        break (l, before.expect("the first write counted"), last);
    };
    for i in all {
        applied(&nodes, i, group, last).await;
    }
    // The leader copied its log's bytes of every entry into both followers' appends
    // and encoded none of them again.
    let after = nodes[l].encoded[&group].counts();
    // Unless an append failed or a client was replaced meanwhile (a loaded machine's
    // timeouts), after which what the follower lacks is encoded again, as it must be.
    if after.lost == before.lost {
        assert_eq!(after.encoded, before.encoded, "{before:?} -> {after:?}");
    }
    assert!(
        after.copied - before.copied >= 2 * 20,
        "{before:?} -> {after:?}"
    );
    // Each follower wrote the 20 entries from the bytes it received, and keeps none.
    for i in all.into_iter().filter(|i| *i != l) {
        let e = &nodes[i].encoded[&group];
        assert!(e.counts().received >= 20, "node {i}: {:?}", e.counts());
        assert_eq!(e.kept(), Vec::<u64>::new(), "node {i}");
    }
    // The leader lets its encodings go once both followers hold them.
    let end = Instant::now() + Duration::from_secs(20);
    while !nodes[l].encoded[&group].kept().is_empty() {
        assert!(
            Instant::now() < end,
            "the leader still keeps {:?}",
            nodes[l].encoded[&group].kept()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for n in &nodes {
        n.groups.remove(group).unwrap().shutdown().await.unwrap();
    }
    // Every member's log holds the same records, and reads back whole.
    let logs: Vec<Vec<u8>> = (1..=3)
        .map(|id| log_bytes(&dir.path().join(format!("{id}/{group}"))))
        .collect();
    assert!(logs[0].len() > 21 * 50 * 16);
    assert!(
        logs.iter().all(|l| *l == logs[0]),
        "the members' logs differ"
    );
    for id in 1..=3 {
        let log: LogStore<QueueTypes> =
            LogStore::open(&dir.path().join(format!("{id}/{group}"))).unwrap();
        let mut log = log;
        let read = openraft::RaftLogReader::try_get_log_entries(&mut log, ..)
            .await
            .unwrap();
        assert_eq!(read.last().unwrap().log_id.index, last, "member {id}");
    }
}
