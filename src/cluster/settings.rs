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
//! secret = "a long random string, the same on every node"   # or ACTORMQ__CLUSTER__SECRET
//! tls = true                                                 # mutual TLS with [tls]
//! snapshot_entries = 10000       # a snapshot of the definitions every 10,000 entries
//! snapshot_keep_entries = 1000   # entries kept in the log behind it
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
    /// A candidate whose election failed tries again after a random time between these
    /// two (milliseconds). A follower that knows a leader first lets its lease run out
    /// (openraft's leader lease: `election_timeout_max_ms`), so it starts an election
    /// after `max` plus that random time without a heartbeat (seen on its next look,
    /// every 1.5 heartbeats): 1.0 to 1.2 s with the defaults (up to 1.4 s), which
    /// keep a leader's death under 2 s from the next confirm of a quorum queue
    /// (docs/CLUSTERING.md, "Where a failover's time goes").
    #[serde(default = "default_election_min")]
    pub election_timeout_min_ms: u64,
    /// See `election_timeout_min_ms`.
    #[serde(default = "default_election_max")]
    pub election_timeout_max_ms: u64,
    /// How often the leader sends heartbeats (milliseconds); also openraft's time to
    /// live for one append to a follower (appends are bounded to 1 MiB for that): an
    /// append not answered within it is sent again at once, not backed off from as
    /// from a dead peer (`network::failure`); and openraft looks at the election
    /// timeout every 1.5 heartbeats.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u64,
    /// How long a definitions change may wait to be committed and applied here
    /// before the client is told it failed (milliseconds).
    #[serde(default = "default_commit_timeout")]
    pub commit_timeout_ms: u64,
    /// A snapshot of the definitions is taken once this many entries were applied
    /// since the last one, and the log behind it is purged (keeping
    /// `snapshot_keep_entries`): without it the log, every declare and delete ever
    /// made, grows for as long as the cluster runs, and a node that joins is sent all
    /// of it. A node further behind than the log kept is sent the snapshot. 0 takes
    /// none (the log is kept whole).
    #[serde(default = "default_snapshot_entries")]
    pub snapshot_entries: u64,
    /// How many entries already in a snapshot stay in the log, so that a follower a
    /// little behind (restarting, briefly cut off) is sent entries rather than the
    /// whole snapshot.
    #[serde(default = "default_snapshot_keep")]
    pub snapshot_keep_entries: u64,
    /// The secret every node (and `actormq cluster`) proves it knows before the
    /// cluster port reads anything from it (an HMAC challenge-response; it is never
    /// sent). At least 16 bytes unless `bind` is a loopback address. Best set from the
    /// environment (`ACTORMQ__CLUSTER__SECRET`) rather than written in the file.
    #[serde(default)]
    pub secret: Secret,
    /// TLS on the cluster port, with the `[tls]` certificate and key, both ways: each
    /// node presents its certificate and verifies its peer's against `tls.ca_file`.
    #[serde(default)]
    pub tls: bool,
}

/// `cluster.secret`: kept out of `Debug` output (and so out of logs).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret (for tests and embedding).
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// Its bytes, to key the handshake's HMAC.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when not set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// The shortest secret accepted on a cluster port other nodes can reach.
pub const MIN_SECRET: usize = 16;

fn default_bind() -> String {
    "127.0.0.1:25672".into()
}
fn default_election_min() -> u64 {
    400
}
fn default_election_max() -> u64 {
    600
}
fn default_heartbeat() -> u64 {
    150
}
fn default_commit_timeout() -> u64 {
    10_000
}
fn default_snapshot_entries() -> u64 {
    10_000
}
fn default_snapshot_keep() -> u64 {
    1_000
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

    /// True when the cluster port is bound to a loopback address only (nothing off
    /// this machine can reach it).
    pub fn loopback_only(&self) -> bool {
        let host = self.bind.rsplit_once(':').map_or(&*self.bind, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// Checks what deserialization cannot: an error names the key.
    pub fn check(&self) -> Result<(), String> {
        if self.secret.len() < MIN_SECRET && !self.loopback_only() {
            return Err(format!(
                "cluster.secret is {} bytes; at least {MIN_SECRET} are needed when cluster.bind ('{}') is not a loopback address: set the same long random secret on every node (cluster.secret or ACTORMQ__CLUSTER__SECRET, e.g. from `openssl rand -hex 32`)",
                self.secret.len(),
                self.bind
            ));
        }
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
