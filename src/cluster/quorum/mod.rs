//! Quorum queues in a cluster: each queue is its own Raft group whose state machine
//! is the queue ([`machine`]), run by openraft with its log on disk ([`group`]: the
//! type configuration and the state machine storage, tested as a real three-member
//! group in one process), its traffic multiplexed over the cluster port by group id
//! ([`wire`]), publishes batched into entries and forwarded to the leader
//! ([`publisher`]). What is left of the runtime (starting groups on declare, placement,
//! the broker's queue actor on top, consumers on the leader's node) is in
//! docs/CLUSTERING.md ("Quorum queues").

pub mod group;
pub mod machine;
pub mod publisher;
pub mod wire;
