//! The cluster protocol version: one number for everything nodes exchange or
//! replicate, announced in every cluster port handshake (see `transport`). Nodes (and
//! the `actormq cluster` CLI) of different versions refuse each other with
//! [`Mismatch`] instead of failing later to decode a frame, an entry or a snapshot,
//! which showed as an obscure decode error deep in openraft.

use super::types::NodeId;

/// The version of the node-to-node protocol and of the replicated state this build
/// speaks.
///
/// **Bump it** in any change that a node of the previous build could not read or
/// would read differently: a new or changed [`Rpc`](super::rpc::Rpc) or reply, a new
/// field or variant in a definitions entry ([`Op`](super::Op)), in the definitions
/// snapshot, in a quorum queue's command, snapshot or limits, in a consume session's
/// frames, or a change to what applying any of them does. Adding a field with a serde
/// default still needs a bump: an older node refuses MessagePack arrays longer than
/// the struct it knows. Say in docs/CLUSTERING.md ("Upgrades") what changed.
///
/// Builds before the gate announced no version, and version 1's announcement was
/// covered by no MAC: either is shown as version 0 (an older handshake).
///
/// 2: the handshake's MACs cover the versions and ids; a quorum queue's declare
/// carries its limits (`Op::DeclareQueue`).
///
/// 3: a policy change carries the limits of the quorum queues it changes
/// (`Op::SetPolicy` / `Op::ClearPolicy`), the groups' records and snapshots hold them
/// (`GroupInfo::changed_limits`), a group's log has a new command
/// (`Command::SetLimits`, and the machine's `limits_at`); virtual host limits are
/// replicated (`Op::SetVhostLimits` proposed; the definitions snapshot carries them);
/// a consume session's consumer carries its arguments (`Spec::arguments`) and
/// the leader says when it is attached (`Down::Attached`); a stand-in asks its
/// queue's home for a declare's counts (`Rpc::DeclareCounts`);
/// nodes tell each other their resource alarms (`Rpc::Alarms`); a node's view
/// (`NodeView`, in `cluster status`) carries its alarms.
///
/// 4: a management listing asks queues' homes their counts (`Rpc::QueueStats`); an
/// alarm report carries its sender's incarnation (`alarms::Report::incarnation`).
///
/// 5: a consume session settles a delivery its follower never wrote to its client as
/// unsent (`consume_wire::How::Unsent`), not as a requeue; a quorum queue's publishes
/// are numbered by their writer (`Command::EnqueueFrom`), and its snapshot keeps the
/// writers (`QueueMachine::writers`), so an entry written again is enqueued once.
pub const CLUSTER_PROTOCOL: u32 = 5;

/// Who is at one end of a cluster connection: a node (by id) or the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    /// A node of the cluster.
    Node(NodeId),
    /// `actormq cluster ...`, which is no node.
    Cli,
}

impl Speaker {
    /// The id a speaker announces in the handshake (`u64::MAX` for the CLI).
    pub fn wire(self) -> u64 {
        match self {
            Speaker::Node(id) => id,
            Speaker::Cli => u64::MAX,
        }
    }

    /// The speaker a handshake announced.
    pub fn from_wire(id: u64) -> Speaker {
        if id == u64::MAX {
            Speaker::Cli
        } else {
            Speaker::Node(id)
        }
    }
}

/// A peer that speaks another cluster protocol: the connection is refused, and this
/// is the error both sides log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The peer (`None`: not known, a build before the gate).
    pub peer: Option<Speaker>,
    /// The peer's address (its cluster address, or the address it connected from).
    pub addr: String,
    /// The peer's version.
    pub theirs: u32,
    /// This side.
    pub me: Speaker,
    /// This side's version.
    pub ours: u32,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = |s: Speaker| match s {
            Speaker::Node(id) => format!("node {id}"),
            Speaker::Cli => "the actormq cluster CLI".to_string(),
        };
        let peer = match self.peer {
            Some(p) => format!("{} ({})", who(p), self.addr),
            None => format!("{} (an older actormq, of an older handshake)", self.addr),
        };
        let me = match self.me {
            Speaker::Node(id) => format!("this node (node {id})"),
            Speaker::Cli => "this CLI".to_string(),
        };
        let advice = if self.me == Speaker::Cli || self.peer == Some(Speaker::Cli) {
            "run the actormq binary of the nodes' version"
        } else {
            "stop every node and upgrade them all"
        };
        write!(
            f,
            "{peer} speaks cluster protocol {}, {me} {}: {advice}; see docs/CLUSTERING.md \"Upgrades\"",
            self.theirs, self.ours
        )
    }
}

impl std::error::Error for Mismatch {}

/// How often the same refusal is logged at ERROR: a peer of another version in the
/// membership is retried at heartbeat rate.
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// True when the refusal `key` (who refused whom, and why) is to be logged at ERROR
/// now: the first time, then at most once every [`REPORT_EVERY`] (the callers log
/// the others at DEBUG).
pub fn report(key: &str) -> bool {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;
    static LAST: OnceLock<Mutex<HashMap<String, Instant>>> = OnceLock::new();
    let mut last = LAST
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    // Bounded: forgets what it would log again anyway.
    if last.len() > 1024 {
        last.retain(|_, t| now.duration_since(*t) < REPORT_EVERY);
    }
    match last.get(key) {
        Some(t) if now.duration_since(*t) < REPORT_EVERY => false,
        _ => {
            last.insert(key.to_string(), now);
            true
        }
    }
}

impl Mismatch {
    /// The mismatch an I/O error carries, if it is one (a refused connection).
    pub fn of(e: &std::io::Error) -> Option<&Mismatch> {
        e.get_ref()?.downcast_ref::<Mismatch>()
    }

    /// As an I/O error (permission denied), for the transport's callers.
    pub fn into_io(self) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::PermissionDenied, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_names_both_versions_and_what_to_do() {
        let m = Mismatch {
            peer: Some(Speaker::Node(2)),
            addr: "127.0.0.1:25673".into(),
            theirs: 4,
            me: Speaker::Node(1),
            ours: 5,
        };
        assert_eq!(
            m.to_string(),
            "node 2 (127.0.0.1:25673) speaks cluster protocol 4, this node (node 1) 5: \
             stop every node and upgrade them all; see docs/CLUSTERING.md \"Upgrades\""
        );
        let e = m.clone().into_io();
        assert_eq!(Mismatch::of(&e), Some(&m));
        let cli = Mismatch {
            peer: Some(Speaker::Cli),
            ..m
        };
        assert!(cli.to_string().contains("the actormq cluster CLI"), "{cli}");
        assert!(
            cli.to_string().contains("binary of the nodes' version"),
            "{cli}"
        );
    }

    #[test]
    fn a_refusal_is_reported_once_then_not_again_within_the_interval() {
        let key = "test: node 9 refused";
        assert!(report(key));
        assert!(!report(key));
        assert!(report("test: another refusal"));
    }

    #[test]
    fn the_cli_is_announced_as_no_node() {
        assert_eq!(Speaker::from_wire(Speaker::Cli.wire()), Speaker::Cli);
        assert_eq!(Speaker::from_wire(7), Speaker::Node(7));
    }
}
