//! The cluster's Raft types: what one log entry carries ([`Request`]), what applying
//! it answers ([`Response`]), and the snapshot ([`DefinitionsSnapshot`]).

use super::op::Op;
use crate::error::BrokerError;
use crate::storage::{StoredUser, StoredVhost};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A node's id in the cluster (`cluster.node_id`).
pub type NodeId = u64;

/// One definitions change in the log: the change, and who proposed it (the node and
/// its request id), so that the proposing node answers its client with what applying
/// the entry answered there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The proposing node.
    pub origin: NodeId,
    /// The proposal's id on that node.
    pub id: u64,
    /// The change.
    pub op: Op,
}

/// What applying an entry answered on the node that applied it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The refusal, if the change did not apply.
    pub error: Option<BrokerError>,
}

/// Where each replicated queue's messages live: virtual host → queue → node.
pub type Homes = BTreeMap<String, BTreeMap<String, NodeId>>;

/// The state machine as a snapshot: the definitions (in the metadata store's forms)
/// and the queues' homes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DefinitionsSnapshot {
    /// Each virtual host's durable definitions.
    pub vhosts: BTreeMap<String, StoredVhost>,
    /// The users.
    pub users: Vec<StoredUser>,
    /// The queues' homes.
    pub homes: Homes,
}

openraft::declare_raft_types!(
    /// The cluster's Raft type configuration.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = DefinitionsSnapshot,
        AsyncRuntime = openraft::TokioRuntime,
);
