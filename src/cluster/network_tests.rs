//! What openraft is told when an append fails: a slow peer is a `Timeout` (retried at
//! once), a gone one `Unreachable` (backed off for 500 ms).
use super::*;
use crate::cluster::quorum::wire::GroupNetwork;
use openraft::raft::AppendEntriesRequest;
use openraft::CommittedLeaderId;

const SECRET: &str = "0123456789abcdef";

/// A peer that takes the connection (the secret's handshake included) and the
/// requests on it, and answers none: a follower in a long fsync.
async fn silent_peer() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let server = Transport::plain(SECRET);
        while let Ok((tcp, peer)) = listener.accept().await {
            if let Some(mut conn) = server.accept(tcp, peer).await {
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let _ = conn.read_to_end(&mut Vec::new()).await;
                });
            }
        }
    });
    addr
}

/// An address nothing listens on: a node killed.
async fn dead_peer() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
}

fn heartbeat<C: openraft::RaftTypeConfig<NodeId = NodeId>>() -> AppendEntriesRequest<C> {
    AppendEntriesRequest {
        vote: Vote::new_committed(3, 1),
        prev_log_id: Some(openraft::LogId::new(CommittedLeaderId::new(3, 1), 7)),
        leader_commit: None,
        entries: Vec::new(),
    }
}

fn option() -> RPCOption {
    RPCOption::new(Duration::from_millis(150))
}

fn is_timeout<E: std::error::Error>(e: &RPCError<NodeId, BasicNode, E>) -> bool {
    matches!(e, RPCError::Timeout(t) if t.id == 1 && t.target == 2 && t.action == RPCTypes::AppendEntries)
}

#[tokio::test]
async fn a_group_append_a_peer_takes_but_does_not_answer_is_a_timeout_not_unreachable() {
    let addr = silent_peer().await;
    let mut net = GroupNetwork {
        group: 20,
        transport: Arc::new(Transport::plain(SECRET)),
        encoded: None,
    };
    let mut peer = net.new_client(2, &BasicNode::new(&addr)).await;
    let e = peer
        .append_entries(heartbeat(), option())
        .await
        .expect_err("no answer");
    assert!(
        is_timeout(&e),
        "a slow follower must not be backed off: {e:?}"
    );
}

#[tokio::test]
async fn a_definitions_append_a_peer_takes_but_does_not_answer_is_a_timeout() {
    let addr = silent_peer().await;
    let mut net = Network(Arc::new(Transport::plain(SECRET)));
    let mut peer = net.new_client(2, &BasicNode::new(&addr)).await;
    let e = peer
        .append_entries(heartbeat(), option())
        .await
        .expect_err("no answer");
    assert!(
        is_timeout(&e),
        "a slow follower must not be backed off: {e:?}"
    );
}

#[tokio::test]
async fn an_append_to_a_dead_peer_is_unreachable() {
    let addr = dead_peer().await;
    let mut net = GroupNetwork {
        group: 20,
        transport: Arc::new(Transport::plain(SECRET)),
        encoded: None,
    };
    let mut peer = net.new_client(2, &BasicNode::new(&addr)).await;
    let e = peer
        .append_entries(heartbeat(), option())
        .await
        .expect_err("refused");
    assert!(matches!(e, RPCError::Unreachable(_)), "{e:?}");
    let mut net = Network(Arc::new(Transport::plain(SECRET)));
    let mut peer = net.new_client(2, &BasicNode::new(&addr)).await;
    let e = peer
        .append_entries(heartbeat(), option())
        .await
        .expect_err("refused");
    assert!(matches!(e, RPCError::Unreachable(_)), "{e:?}");
}
