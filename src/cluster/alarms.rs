//! Cluster-wide resource alarms, as RabbitMQ's: when a node's memory or disk alarm is
//! raised, publishers are blocked on every node, since a publisher anywhere may route
//! to a queue there (a classic queue's home, a member of a quorum queue, which holds
//! every body).
//!
//! Each node tells every other member its own alarms ([`Rpc::Alarms`]) on the cluster
//! port, on a connection of its own per peer (never queued behind a forwarded write or
//! a status question): at once when they change, and every [`REFRESH`] otherwise. The
//! peer records them and answers with its own, so one exchange tells both sides. What a
//! node heard of the others goes to its gauge
//! ([`crate::broker::memory::MemoryGauge::set_remote_alarms`]), which blocks its
//! publishers while any is in alarm and names them in the `connection.blocked` reason.
//!
//! A peer that does not answer within [`ANSWER_TIMEOUT`] (down, cut off by a partition,
//! frozen, refused for speaking another protocol) is not in alarm: its alarms are
//! forgotten, as RabbitMQ clears the alarms of a node it sees go down. So in a
//! partition each side blocks its publishers only for the alarms of the nodes it can
//! reach, and a node in alarm on the other side no longer holds them back (its own
//! publishers stay blocked by its own alarm).
//!
//! Each report carries the sender's alarm generation (seeded from the clock, one more
//! at each change): a node's push and its answer to the other's push travel on two
//! connections, and the older of the two must not undo the newer. Generations are
//! compared only within one run of the sender: each report also carries its
//! incarnation, drawn at random when the node starts, and a report of another
//! incarnation is taken whatever its generation (a node restarted with its clock
//! stepped back, faster than its peers' next call, would else have its reports taken
//! for older than its previous run's until a call failed).

use super::network::Link;
use super::node::Core;
use super::rpc::{Reply, Rpc};
use super::types::NodeId;
use crate::broker::memory::{Alarms, RemoteAlarm};
use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often a node tells every other its alarms when they do not change: also how
/// soon a peer that went away (and with it its alarms) is noticed, at most this plus
/// [`ANSWER_TIMEOUT`].
pub const REFRESH: Duration = Duration::from_secs(1);
/// How long a peer may take to answer before it is taken as unreachable, and so as
/// not in alarm.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

/// One node's alarms, as it tells the others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The node.
    pub node: NodeId,
    /// Its run: random, drawn when it starts. Generations compare only within one.
    pub incarnation: u64,
    /// Its alarm generation: a report of a lower one than recorded, of the same
    /// incarnation, is older.
    pub generation: u64,
    /// Its memory alarm is raised.
    pub memory: bool,
    /// Its disk alarm is raised.
    pub disk: bool,
}

impl Report {
    fn alarms(self) -> Alarms {
        Alarms {
            memory: self.memory,
            disk: self.disk,
        }
    }
}

/// What a node knows of the cluster's alarms: its own generation, and what it heard.
pub struct ClusterAlarms {
    /// This run of the node (see [`Report::incarnation`]).
    incarnation: u64,
    /// This node's generation and the alarms it stands for.
    mine: Mutex<(u64, Alarms)>,
    /// The other nodes' last reports, by node.
    heard: Mutex<BTreeMap<NodeId, Report>>,
    /// Serialises handing `heard` to the gauge: two peers' tasks must not hand it an
    /// older copy last.
    applying: Mutex<()>,
}

impl Default for ClusterAlarms {
    fn default() -> Self {
        // From the clock: a node restarted quickly is not taken for its own past.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        ClusterAlarms {
            incarnation: rand_core::OsRng.next_u64(),
            mine: Mutex::new((seed, Alarms::default())),
            heard: Mutex::default(),
            applying: Mutex::default(),
        }
    }
}

impl ClusterAlarms {
    /// This node's report, for its alarms as `now` reads them. Read under the lock:
    /// two tasks reporting at once (a push and an answer) number what they read in the
    /// order they read it, so an "in alarm" read before a clearing cannot go out with a
    /// newer generation than the clearing and block the peers' publishers again.
    fn own(&self, node: NodeId, now: impl FnOnce() -> Alarms) -> Report {
        let mut mine = self.mine.lock().unwrap_or_else(|p| p.into_inner());
        let now = now();
        if mine.1 != now {
            *mine = (mine.0 + 1, now);
        }
        Report {
            node,
            incarnation: self.incarnation,
            generation: mine.0,
            memory: now.memory,
            disk: now.disk,
        }
    }

    /// Records `report` unless an equal or newer one of its node's same run is
    /// recorded (another run's is taken whatever its generation: the node restarted);
    /// true when it changed what is known. A late report of a run that ended, taken
    /// after the new run's, is replaced by the new run's next report, within a
    /// [`REFRESH`].
    fn record(&self, report: Report) -> bool {
        let mut heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        match heard.get(&report.node) {
            Some(known)
                if known.incarnation == report.incarnation
                    && known.generation >= report.generation =>
            {
                false
            }
            _ => {
                heard.insert(report.node, report);
                true
            }
        }
    }

    /// Forgets what node `id` said (it cannot be reached): true when it changed what
    /// is known.
    fn forget(&self, id: NodeId) -> bool {
        self.heard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
            .is_some()
    }

    /// Keeps only the nodes `keep` says are members.
    fn retain(&self, keep: impl Fn(NodeId) -> bool) -> bool {
        let mut heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        let before = heard.len();
        heard.retain(|id, _| keep(*id));
        heard.len() != before
    }

    /// The other nodes in alarm.
    fn in_alarm(&self) -> Vec<Report> {
        self.heard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|r| r.memory || r.disk)
            .copied()
            .collect()
    }
}

impl Core {
    /// This node's alarms, as it reports them.
    fn own_report(&self) -> Report {
        self.alarms
            .own(self.id, || self.broker().memory().local_alarms())
    }

    /// Hands what this node knows of the others' alarms to its gauge.
    fn apply_alarms(&self) {
        let _applying = self
            .alarms
            .applying
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let nodes = self
            .alarms
            .in_alarm()
            .into_iter()
            .map(|r| RemoteAlarm {
                id: r.node,
                name: self.node_api_name(r.node),
                alarms: r.alarms(),
            })
            .collect();
        self.broker().memory().set_remote_alarms(nodes);
    }

    /// Node `id` as `/api/nodes` names it.
    pub(super) fn node_api_name(&self, id: NodeId) -> String {
        format!("node{id}@{}", self.node_addr(id).unwrap_or_default())
    }

    /// Another node's report ([`Rpc::Alarms`]): recorded, answered with this node's.
    pub(super) fn alarms_heard(&self, report: Report) -> Report {
        // A member's only: one that left would stay recorded until the next refresh.
        let member = report.node != self.id && self.node_addr(report.node).is_some();
        if member && self.alarms.record(report) {
            self.apply_alarms();
        }
        self.own_report()
    }
}

/// Tells every other member this node's alarms and hears theirs, for as long as the
/// node runs: one task per peer, started and stopped as the membership changes.
pub(super) async fn gossip(core: Arc<Core>) {
    let mut peers: HashMap<NodeId, (String, tokio::task::JoinHandle<()>)> = HashMap::new();
    loop {
        let members: BTreeMap<NodeId, String> = {
            let m = core.raft().metrics().borrow().membership_config.clone();
            m.membership()
                .nodes()
                .filter(|(id, _)| **id != core.id)
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect()
        };
        peers.retain(|id, (addr, task)| {
            let keep = members.get(id) == Some(addr) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (id, addr) in &members {
            peers.entry(*id).or_insert_with(|| {
                let task = tokio::spawn(peer(core.clone(), *id, addr.clone()));
                (addr.clone(), task)
            });
        }
        if core.alarms.retain(|id| members.contains_key(&id)) {
            core.apply_alarms();
        }
        tokio::time::sleep(REFRESH).await;
    }
}

/// Tells peer `id` at `addr` this node's alarms at every change and every
/// [`REFRESH`], and records its answer (or forgets its alarms when it does not answer).
async fn peer(core: Arc<Core>, id: NodeId, addr: String) {
    let link = Link::new(&addr, core.transport.clone());
    let mut local = core.broker().memory().subscribe_local();
    loop {
        local.borrow_and_update();
        let mine = core.own_report();
        match link.call(&Rpc::Alarms(mine), ANSWER_TIMEOUT).await {
            Ok(Reply::Alarms(theirs)) if theirs.node == id => {
                core.alarms.record(theirs);
            }
            Ok(other) => {
                tracing::debug!(node = id, "cluster alarms: unexpected answer {other:?}");
                core.alarms.forget(id);
            }
            Err(e) => {
                tracing::debug!(node = id, error = %e, "cluster alarms: peer unreachable, taken as not in alarm");
                core.alarms.forget(id);
            }
        }
        // Every round, changed or not: cheap when nothing changed (the gauge compares).
        core.apply_alarms();
        tokio::select! {
            r = local.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(REFRESH) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(node: NodeId, generation: u64, memory: bool) -> Report {
        Report {
            node,
            incarnation: 1,
            generation,
            memory,
            disk: false,
        }
    }

    #[test]
    fn an_older_report_does_not_undo_a_newer_one() {
        let a = ClusterAlarms::default();
        assert!(a.record(report(2, 10, true)));
        assert!(a.record(report(2, 11, false)), "the clearing is newer");
        assert!(!a.record(report(2, 10, true)), "the late answer is older");
        assert!(a.in_alarm().is_empty());
        assert!(a.record(report(3, 5, true)));
        assert_eq!(a.in_alarm(), vec![report(3, 5, true)]);
        assert!(a.forget(3), "unreachable: not in alarm");
        assert!(a.in_alarm().is_empty());
        assert!(!a.forget(3));
    }

    #[test]
    fn a_lower_generation_is_taken_from_a_new_incarnation_only() {
        let a = ClusterAlarms::default();
        assert!(a.record(report(2, 1_000, true)));
        assert!(
            !a.record(report(2, 999, false)),
            "a lower generation of the same run is older"
        );
        assert_eq!(a.in_alarm(), vec![report(2, 1_000, true)]);
        // Restarted with its clock stepped back: a lower generation, another run.
        let restarted = Report {
            incarnation: 2,
            ..report(2, 10, false)
        };
        assert!(a.record(restarted), "a new run's report is taken");
        assert!(a.in_alarm().is_empty());
        assert!(
            !a.record(Report {
                incarnation: 2,
                ..report(2, 9, true)
            }),
            "and generations order that run's reports again"
        );
        assert!(a.in_alarm().is_empty());
    }

    #[test]
    fn each_run_of_a_node_reports_its_own_incarnation() {
        let (one, two) = (ClusterAlarms::default(), ClusterAlarms::default());
        let clear = Alarms::default;
        assert_eq!(one.own(1, clear).incarnation, one.own(1, clear).incarnation);
        assert_ne!(one.own(1, clear).incarnation, two.own(1, clear).incarnation);
    }

    #[test]
    fn a_node_s_generation_moves_only_when_its_alarms_change() {
        let a = ClusterAlarms::default();
        let clear = Alarms::default();
        let memory = Alarms {
            memory: true,
            disk: false,
        };
        let first = a.own(1, || clear);
        assert_eq!(a.own(1, || clear), first);
        let raised = a.own(1, || memory);
        assert_eq!(raised.generation, first.generation + 1);
        assert!(raised.memory && !raised.disk);
        assert_eq!(a.own(1, || memory).generation, raised.generation);
        assert_eq!(a.own(1, || clear).generation, raised.generation + 1);
    }

    #[test]
    fn nodes_that_left_the_membership_are_forgotten() {
        let a = ClusterAlarms::default();
        a.record(report(2, 1, true));
        a.record(report(3, 1, true));
        assert!(a.retain(|id| id == 2));
        assert_eq!(a.in_alarm(), vec![report(2, 1, true)]);
        assert!(!a.retain(|id| id == 2));
    }
}
