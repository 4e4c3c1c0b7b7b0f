//! What a follower session's consumers are served by: a quorum queue's group (its
//! leader, wherever it is now) or a classic queue's home node (fixed, as RabbitMQ's
//! classic queues). One session code for both: the home node serves a session
//! exactly as a group's leader does, as one owner of its queue actor.

use super::*;
use crate::cluster::transport::Transport;
use crate::cluster::Home;

/// The queue a session serves consumers of, as the session needs to reach it.
#[derive(Clone)]
pub enum Served {
    /// A quorum queue: served by its group's leader.
    Group(Arc<QueueGroup>),
    /// A classic queue of another node: served by its home.
    Home(Arc<Home>),
}

impl Served {
    /// The node that serves the queue now, if known.
    pub(super) fn leader(&self) -> Option<NodeId> {
        match self {
            Served::Group(g) => g.leader(),
            Served::Home(h) => Some(h.home_id()),
        }
    }

    /// The nodes that may serve it (asked in turn while none is known).
    pub(super) fn member_ids(&self) -> Vec<NodeId> {
        match self {
            Served::Group(g) => g.member_ids(),
            Served::Home(h) => vec![h.home_id()],
        }
    }

    /// This node's id.
    pub(super) fn node_id(&self) -> NodeId {
        match self {
            Served::Group(g) => g.node_id(),
            Served::Home(h) => h.node_id(),
        }
    }

    /// The cluster address of `node`, one that may serve the queue.
    pub(super) fn addr_of(&self, node: NodeId) -> Option<String> {
        match self {
            Served::Group(g) => g.addr_of(node),
            Served::Home(h) if node == h.home_id() => h.addr(),
            Served::Home(_) => None,
        }
    }

    pub(super) fn transport(&self) -> Arc<Transport> {
        match self {
            Served::Group(g) => g.transport(),
            Served::Home(h) => h.transport(),
        }
    }

    pub(super) fn runtime(&self) -> tokio::runtime::Handle {
        match self {
            Served::Group(g) => g.runtime(),
            Served::Home(h) => h.runtime().clone(),
        }
    }

    /// The group to name when opening a session (0 for a classic queue, which has
    /// none: the session's `Open` says `classic` instead).
    pub(super) fn group_id(&self) -> super::super::wire::GroupId {
        match self {
            Served::Group(g) => g.id(),
            Served::Home(_) => 0,
        }
    }

    /// A classic queue's home.
    pub(super) fn is_home(&self) -> bool {
        matches!(self, Served::Home(_))
    }

    /// What the queue is, for messages: "quorum queue 'q'" or "queue 'q'".
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Served::Group(_) => "quorum queue",
            Served::Home(_) => "queue",
        }
    }
}
