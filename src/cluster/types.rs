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
/// and everything the state machine keeps beside them (its `Applied`): the queues'
/// homes, the quorum queues' groups and the transient definitions. (The membership
/// travels in openraft's snapshot meta.) A node that installs it reaches the state the
/// entries it stands for would have left: without the groups a quorum queue would
/// have no members there, without the transient definitions a publish would not
/// route as on the others.
///
/// Fields added later are `#[serde(default)]`: a snapshot encoded before them (the
/// fields in order, as MessagePack arrays) still decodes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DefinitionsSnapshot {
    /// Each virtual host's durable definitions.
    pub vhosts: BTreeMap<String, StoredVhost>,
    /// The users.
    pub users: Vec<StoredUser>,
    /// The queues' homes.
    pub homes: Homes,
    /// Each quorum queue's Raft group (its id, members and limits).
    #[serde(default)]
    pub groups: super::quorum::runtime::QueueGroups,
    /// The transient (non-durable) definitions, which the metadata store does not keep.
    #[serde(default)]
    pub transient: super::drift::Transient,
    /// The users the log deleted and has not put since: a node installing the
    /// snapshot deletes its own seeded user of such a name, as the entry would have.
    #[serde(default)]
    pub deleted_users: std::collections::BTreeSet<String>,
    /// The cluster's name, once given.
    #[serde(default)]
    pub cluster_name: Option<String>,
    /// Each virtual host's limits (`max-connections`, `max-queues`), where it has
    /// some: the metadata store keeps them apart from the vhosts' definitions.
    #[serde(default)]
    pub vhost_limits: BTreeMap<String, crate::definitions::VhostLimits>,
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
