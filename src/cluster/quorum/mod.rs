//! Quorum queues in a cluster: each queue is its own Raft group whose state machine
//! is the queue ([`machine`]), run by openraft with its log on disk ([`group`]: the
//! type configuration and the state machine storage, tested as a real three-member
//! group in one process). What is left of the runtime (groups multiplexed over the
//! cluster port, placement, publish forwarding, consumers on the leader's node) is in
//! docs/CLUSTERING.md ("Quorum queues").

pub mod group;
pub mod machine;
