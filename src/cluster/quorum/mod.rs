//! Quorum queues in a cluster: each queue is its own Raft group whose state machine
//! is the queue ([`machine`]), run by openraft with its log on disk ([`group`]: the
//! type configuration and the state machine storage, tested as a real three-member
//! group in one process), its traffic multiplexed over the cluster port by group id
//! ([`wire`]; an append's entries copied in already encoded, [`append_frame`]), publishes batched into entries and forwarded to the leader
//! ([`publisher`]), every write through a node's member made into shared commit rounds
//! ([`rounds`]), and each node's members started and stopped with the queue's
//! declare and delete, placed the same on every node ([`runtime`]), and moved off a
//! node removed from the cluster ([`regroup`]) or by hand ([`grow`]). The broker's
//! queue actor serves the queue on top (`src/broker/queue/actor/replica.rs`);
//! docs/CLUSTERING.md ("Quorum queues") has the design.

pub mod append_frame;
pub mod consume_wire;
pub mod group;
pub mod grow;
pub mod install_hold;
pub mod machine;
pub mod publisher;
pub mod regroup;
pub mod rounds;
pub mod runtime;
pub mod session_follower;
pub mod session_leader;
pub mod snapshot_wire;
pub mod wire;
