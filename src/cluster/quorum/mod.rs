//! Quorum queues in a cluster: each queue is its own Raft group whose state machine
//! is the queue ([`machine`]). This module holds the replicated, pure part; the group
//! runtime (openraft instances multiplexed over the cluster port, placement, publish
//! forwarding, consumers on the leader's node) is described in docs/CLUSTERING.md
//! ("Quorum queues") with what is built and what is left.

pub mod machine;
