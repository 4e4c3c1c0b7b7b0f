//! `[cluster]` in Settings.toml. Absent, the broker is a single node, as it always was:
//! no Raft on any path.
//!
//! ```toml
//! [cluster]
//! node_id = 1
//! bind = "127.0.0.1:25672"
//! seeds = [
//!   { id = 1, address = "127.0.0.1:25672" },
//!   { id = 2, address = "127.0.0.1:25673" },
//!   { id = 3, address = "127.0.0.1:25674" },
//! ]
//! ```

use serde::Deserialize;

/// One initial member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedNode {
    /// Its `node_id`.
    pub id: u64,
    /// Its cluster address (`host:port`).
    pub address: String,
}

/// `[cluster]`: this node and how it finds the others.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// This node's id: unique in the cluster, never reused for another node.
    pub node_id: u64,
    /// The address the cluster port listens on (node-to-node traffic and
    /// `actormq cluster`). The conventional port is 25672, as RabbitMQ's.
    #[serde(default = "default_bind")]
    pub bind: String,
    /// The address other nodes reach this one at; empty = `bind`.
    #[serde(default)]
    pub advertise: String,
    /// The initial members, this node included or not. The lowest id among them and
    /// this node forms the cluster once every seed answers (see docs/CLUSTERING.md);
    /// a node not among an existing cluster's members asks a seed to add it.
    #[serde(default)]
    pub seeds: Vec<SeedNode>,
    /// A follower that hears nothing from a leader for a random time between these
    /// two starts an election (milliseconds).
    #[serde(default = "default_election_min")]
    pub election_timeout_min_ms: u64,
    /// See `election_timeout_min_ms`.
    #[serde(default = "default_election_max")]
    pub election_timeout_max_ms: u64,
    /// How often the leader sends heartbeats (milliseconds).
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u64,
    /// How long a definitions change may wait to be committed and applied here
    /// before the client is told it failed (milliseconds).
    #[serde(default = "default_commit_timeout")]
    pub commit_timeout_ms: u64,
}

fn default_bind() -> String {
    "127.0.0.1:25672".into()
}
fn default_election_min() -> u64 {
    1000
}
fn default_election_max() -> u64 {
    2000
}
fn default_heartbeat() -> u64 {
    250
}
fn default_commit_timeout() -> u64 {
    10_000
}

impl ClusterSettings {
    /// The address other nodes reach this one at.
    pub fn advertised(&self) -> &str {
        if self.advertise.is_empty() {
            &self.bind
        } else {
            &self.advertise
        }
    }

    /// Checks what deserialization cannot: an error names the key.
    pub fn check(&self) -> Result<(), String> {
        if self.heartbeat_ms == 0 || self.election_timeout_min_ms <= self.heartbeat_ms {
            return Err(format!(
                "cluster.election_timeout_min_ms ({}) must be greater than cluster.heartbeat_ms ({}), which must not be 0",
                self.election_timeout_min_ms, self.heartbeat_ms
            ));
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return Err(format!(
                "cluster.election_timeout_max_ms ({}) must be greater than cluster.election_timeout_min_ms ({})",
                self.election_timeout_max_ms, self.election_timeout_min_ms
            ));
        }
        for s in &self.seeds {
            if s.id == self.node_id && s.address != self.advertised() {
                return Err(format!(
                    "cluster.seeds: node {} is this node, but its address '{}' is not cluster.bind or cluster.advertise ('{}')",
                    s.id,
                    s.address,
                    self.advertised()
                ));
            }
        }
        Ok(())
    }

    /// The initial members: the seeds and this node, by id.
    pub fn members(&self) -> std::collections::BTreeMap<u64, String> {
        let mut m: std::collections::BTreeMap<u64, String> = self
            .seeds
            .iter()
            .map(|s| (s.id, s.address.clone()))
            .collect();
        m.insert(self.node_id, self.advertised().to_string());
        m
    }
}
