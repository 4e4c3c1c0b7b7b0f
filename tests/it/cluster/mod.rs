//! Clusters (issue 17, first phase): `actormq serve` processes on loopback, each with
//! its own data directory, forming a cluster on openraft with replicated definitions.
//!
//! - [`replication`]: a change on a follower reaches every node; a publish to a queue
//!   whose messages live on another node is refused, naming it.
//! - [`failover`]: kill -9 the leader, a new one is elected and takes changes; the
//!   killed node restarts and catches up.
//! - [`membership`]: `actormq cluster add-node` / `remove-node` / `status`.
//! - [`security`]: the cluster secret's handshake and mutual TLS on the cluster port.
//! - [`drift`]: transient definitions over a restart, definitions from before joining.
//! - [`snapshots`]: snapshots of the definitions log: a node joining, restarted, or
//!   down while the others purged their logs.
//! - [`faults`]: SIGSTOP of the leader, a whole-cluster restart, a lost data directory.
//! - [`five`]: five nodes, two killed at once; quorum groups of 3 and 5 over them.
//! - [`partition`]: the leader cut off from the others (network namespaces, as root);
//!   [`partition_quorum`]: a quorum group's leader cut off.
//! - [`quorum`]: quorum queues replicated in their own Raft groups: kill -9 of a
//!   group's leader mid-stream, consumes refused off the leader, group lifecycle;
//!   [`quorum_freeze`]: SIGSTOP of a group's leader; [`quorum_restart`]: the whole
//!   cluster restarted, a member's data directory lost; [`regroup`]: a removed member
//!   replaced in its groups; [`quorum_failover`]: kill -9 of a group's leader with
//!   publishers on both other nodes; [`quorum_session`]: consume sessions' faults;
//!   [`quorum_dlx`]: dead-lettering, once, also after the group's leader is killed,
//!   and TTLs; [`quorum_sac`]: single active consumer; [`quorum_expires`]:
//!   `x-expires`, and gets past messages' TTLs; [`quorum_credit`]: a consumer's
//!   prefetch against what the group checks out to it; [`quorum_policy`]: policies
//!   in force at the declare, and set, changed or cleared after it;
//!   [`snapshot_install`]: no election while a member installs a snapshot;
//!   [`quorum_settle`]: settlements sharing commit rounds, settled once each across a
//!   kill of the group's leader; [`quorum_big`]: the largest message a cluster takes.
//! - [`vhost_limits`]: virtual host limits are the cluster's.
//! - [`alarms`]: one node's memory alarm blocks the publishers of the others.

mod alarms;
mod classic_forward;
mod classic_forward_args;
mod classic_listing;
mod drift;
mod failover;
mod faults;
mod five;
mod grow;
mod measure;
mod membership;
mod partition;
mod partition_quorum;
mod quorum;
mod quorum_big;
mod quorum_cancel;
mod quorum_credit;
mod quorum_dlx;
mod quorum_dlx_once;
mod quorum_expires;
mod quorum_failover;
mod quorum_forward;
mod quorum_forward_more;
mod quorum_freeze;
mod quorum_memory;
mod quorum_policy;
mod quorum_restart;
mod quorum_sac;
mod quorum_session;
mod quorum_settle;
mod regroup;
mod replication;
mod security;
mod snapshot_install;
mod snapshot_users;
mod snapshots;
mod version;
mod vhost_limits;

use crate::mgmt::http::Http;
use crate::support::DEADLINE;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_actormq");
/// The cluster secret the test nodes share.
pub const SECRET: &str = "the-test-cluster-secret-0123456789";

/// A loopback port free when asked, for a cluster address (the node binds it a moment
/// later, and seeds must name it before). Picked below the kernel's ephemeral range
/// (32768 and up by default), where the tests' other listeners (bound to port 0) never
/// land; distinct picks come from a counter mixed with the process id.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + ((std::process::id().wrapping_mul(7919) + n * 104_729) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// One node: `actormq serve` with `[cluster]`, killed (SIGKILL) when dropped.
pub struct Node {
    pub id: u64,
    /// Its cluster address.
    pub cluster: String,
    /// Its native protocol address.
    pub native: String,
    /// Its AMQP 0-9-1 address.
    pub amqp: String,
    /// Its management API.
    pub http: SocketAddr,
    root: PathBuf,
    seeds: Vec<(u64, String)>,
    /// More `[cluster]` keys (the secret by default), and more sections.
    cluster_extra: String,
    sections: String,
    /// The network namespace it runs in (`ip netns exec`), if any.
    netns: Option<String>,
    /// More environment variables for its next start ([`Node::set_env`]).
    env: Vec<(String, String)>,
    child: Option<Child>,
    _stdout: Option<BufReader<ChildStdout>>,
}

impl Node {
    /// Starts node `id` under `root` (its data directory `root/data`) with cluster
    /// address `cluster` and these seeds (none: it waits to be added).
    pub fn start(root: &Path, id: u64, cluster: &str, seeds: &[(u64, String)]) -> Node {
        Node::start_with(
            root,
            id,
            cluster,
            seeds,
            &format!("secret = \"{SECRET}\""),
            "",
        )
    }

    /// [`Node::start`] with `cluster_extra` as more `[cluster]` lines (which must set
    /// the secret) and `sections` after it (`[tls]`, ...).
    pub fn start_with(
        root: &Path,
        id: u64,
        cluster: &str,
        seeds: &[(u64, String)],
        cluster_extra: &str,
        sections: &str,
    ) -> Node {
        Node::spawned(root, id, cluster, seeds, cluster_extra, sections, None)
    }

    /// [`Node::start_with`] inside network namespace `netns` (root; `partition`):
    /// its listeners on the namespace's loopback, its cluster port on `cluster`.
    pub fn start_in(
        netns: &str,
        root: &Path,
        id: u64,
        cluster: &str,
        seeds: &[(u64, String)],
        cluster_extra: &str,
    ) -> Node {
        Node::spawned(root, id, cluster, seeds, cluster_extra, "", Some(netns))
    }

    fn spawned(
        root: &Path,
        id: u64,
        cluster: &str,
        seeds: &[(u64, String)],
        cluster_extra: &str,
        sections: &str,
        netns: Option<&str>,
    ) -> Node {
        let mut node = Node {
            id,
            cluster: cluster.to_string(),
            native: String::new(),
            amqp: String::new(),
            http: "0.0.0.0:0".parse().unwrap(),
            root: root.to_path_buf(),
            seeds: seeds.to_vec(),
            cluster_extra: cluster_extra.to_string(),
            sections: sections.to_string(),
            netns: netns.map(str::to_string),
            env: Vec::new(),
            child: None,
            _stdout: None,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        if let Err(log) = self.try_spawn() {
            panic!("node {} exited before listening; its log:\n{log}", self.id);
        }
    }

    /// Starts the process; its log if it exits before listening.
    fn try_spawn(&mut self) -> Result<(), String> {
        std::fs::create_dir_all(&self.root).unwrap();
        let seeds: Vec<String> = self
            .seeds
            .iter()
            .map(|(id, a)| format!("{{ id = {id}, address = \"{a}\" }}"))
            .collect();
        let config = self.root.join("actormq.toml");
        // Node 0: a single node, no [cluster] (for comparisons).
        let cluster = match self.id {
            0 => String::new(),
            id => format!(
                "[cluster]\nnode_id = {id}\nbind = \"{}\"\nseeds = [{}]\nelection_timeout_min_ms = 600\nelection_timeout_max_ms = 1200\nheartbeat_ms = 150\n{}\n",
                self.cluster,
                seeds.join(", "),
                self.cluster_extra
            ),
        };
        // `sections` opening with `[broker]` lines add them to the broker table.
        let (broker, sections) = match self.sections.strip_prefix("[broker]\n") {
            Some(rest) => match rest.find("\n[") {
                Some(at) => (&rest[..at], &rest[at + 1..]),
                None => (rest, ""),
            },
            None => ("", self.sections.as_str()),
        };
        std::fs::write(
            &config,
            format!("[broker]\nworkers = 1\n{broker}\n\n{cluster}\n{sections}"),
        )
        .unwrap();
        let n = std::fs::read_dir(&self.root)
            .map(|d| d.count())
            .unwrap_or(0);
        let log = self.root.join(format!("node-{n}.log"));
        // `ip netns exec` execs the binary: the child is the broker itself.
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, BIN]);
                c
            }
            None => Command::new(BIN),
        };
        let mut child = command
            .current_dir(&self.root)
            .args(["serve", "--config"])
            .arg(&config)
            .env("ACTORMQ__SERVER__BIND", "127.0.0.1:0")
            .env("ACTORMQ__AMQP__BIND", "127.0.0.1:0")
            .env("ACTORMQ__HTTP__BIND", "127.0.0.1:0")
            .env("ACTORMQ__STORAGE__DATA_DIR", self.root.join("data"))
            .env("RUST_LOG", "warn,actormq::cluster=info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the binary runs");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        loop {
            line.clear();
            if stdout.read_line(&mut line).expect("the node's output") == 0 {
                let _ = child.wait();
                return Err(std::fs::read_to_string(&log).unwrap_or_default());
            }
            let l = line.trim();
            if let Some(a) = l.strip_prefix("actormq AMQP listening on ") {
                self.amqp = a.to_string();
            }
            if let Some(a) = l.strip_prefix("actormq management API on http://") {
                self.http = a.trim_end_matches("/api/").parse().unwrap();
            }
            if let Some(a) = l.strip_prefix("actormq listening on ") {
                self.native = a.to_string();
                break;
            }
        }
        self.child = Some(child);
        self._stdout = Some(stdout);
        Ok(())
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill -9");
            c.wait().expect("reaped");
        }
    }

    /// Sets environment variable `key` for the node's next start ([`Node::restart`]).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Starts the node again on the same data directory and cluster address.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Starts the node again with `seeds`: its log if it refuses to start.
    pub fn try_restart_with(&mut self, seeds: &[(u64, String)]) -> Result<(), String> {
        self.kill9();
        self.seeds = seeds.to_vec();
        self.try_spawn()
    }

    /// Sends `sig` to the running process (SIGSTOP, SIGCONT, SIGTERM).
    pub fn signal(&self, sig: i32) {
        let c = self.child.as_ref().expect("running");
        // SAFETY: kill(2) with the pid of a child this test started and has not reaped.
        let r = unsafe { libc::kill(c.id() as i32, sig) };
        assert_eq!(r, 0, "kill({}, {sig})", c.id());
    }

    /// Stops the process gracefully (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: as in `signal`.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            c.wait().expect("reaped");
        }
    }

    /// Its data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// Its settings file (what `actormq cluster --config` reads).
    pub fn config(&self) -> PathBuf {
        self.root.join("actormq.toml")
    }

    /// What it logged (standard error) in all its runs.
    pub fn logs(&self) -> String {
        let mut runs: Vec<_> = std::fs::read_dir(&self.root)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        runs.retain(|p| p.extension().is_some_and(|x| x == "log"));
        runs.sort();
        runs.iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect()
    }

    /// The management API as `guest`.
    pub fn api(&self) -> Http {
        Http::at(self.http).user("guest", "guest")
    }

    /// `actormq cluster ARGS --node <this node>`: its standard output, or its error.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(BIN)
            .arg("cluster")
            .arg("--config")
            .arg(self.config())
            .args(args)
            .args(["--node", &self.cluster])
            .output()
            .expect("the binary runs");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The cluster status this node gives (`cluster status --json`), if it answers.
    pub fn status(&self) -> Option<Value> {
        self.cli(&["status", "--json"])
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
    }

    /// The definitions this node exports, reduced to what must be equal on every
    /// node: vhosts, exchanges, queues, bindings, policies, and users by name and tags
    /// (each node seeds its own `guest`, with its own salt).
    pub async fn definitions(&self) -> Value {
        let mut d = self.api().get("/api/definitions").await.json();
        let users: Vec<Value> = d["users"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|u| serde_json::json!({"name": u["name"], "tags": u["tags"]}))
            .collect();
        serde_json::json!({
            "vhosts": d["vhosts"].take(),
            "exchanges": d["exchanges"].take(),
            "queues": d["queues"].take(),
            "bindings": d["bindings"].take(),
            "policies": d["policies"].take(),
            "users": users,
        })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Three nodes on loopback, ids 1 to 3, each in its own directory under `root`.
pub fn three_nodes(root: &Path) -> Vec<Node> {
    cluster_of(root, 3)
}

/// Three nodes (as [`three_nodes`]) once their cluster has elected a leader.
pub fn three_led(root: &Path) -> Vec<Node> {
    let nodes = three_nodes(root);
    let all: Vec<&Node> = nodes.iter().collect();
    leader(&all);
    nodes
}

/// `count` nodes on loopback, ids 1 to `count`, each in its own directory under `root`.
pub fn cluster_of(root: &Path, count: u64) -> Vec<Node> {
    let seeds: Vec<(u64, String)> = (1..=count)
        .map(|id| (id, format!("127.0.0.1:{}", free_port())))
        .collect();
    // Started one after the other: each waits only for its own listening line, and the
    // cluster forms in the background once all three answer.
    seeds
        .iter()
        .map(|(id, addr)| Node::start(&root.join(format!("n{id}")), *id, addr, &seeds))
        .collect()
}

/// Polls `cond` (sync) until it gives a value or the deadline passes.
pub fn wait_for<T>(what: &str, deadline: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(Instant::now() < end, "not within {deadline:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `node`'s `/api/queues` view of `queue` (vhost `/`) until `ok` holds, and
/// returns it; fails with `what` and the last view after `DEADLINE`.
pub async fn queue_until(
    node: &Node,
    queue: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let end = Instant::now() + DEADLINE;
    loop {
        let q = node
            .api()
            .get(&format!("/api/queues/%2F/{queue}"))
            .await
            .json();
        if ok(&q) {
            return q;
        }
        assert!(Instant::now() < end, "node {}: {what}: {q}", node.id);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The leader's id once `node` knows one and every live member agrees on it.
pub fn leader(nodes: &[&Node]) -> u64 {
    wait_for("a leader every node agrees on", DEADLINE * 2, || {
        let ids: Vec<Option<u64>> = nodes
            .iter()
            .map(|n| n.status().and_then(|s| s["leader"].as_u64()))
            .collect();
        let first = ids[0]?;
        ids.iter().all(|i| *i == Some(first)).then_some(first)
    })
}

/// Waits until every node's definitions equal the first's and `check` holds on them.
pub async fn converged(nodes: &[&Node], check: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + DEADLINE * 2;
    loop {
        let mut all = Vec::new();
        for n in nodes {
            all.push(n.definitions().await);
        }
        if check(&all[0]) && all.iter().all(|d| *d == all[0]) {
            return all.swap_remove(0);
        }
        assert!(
            Instant::now() < end,
            "definitions did not converge: {}",
            serde_json::to_string_pretty(&all).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// True when the export lists an entity of `kind` (`queues`, `exchanges`, `users`)
/// named `name`.
pub fn has(defs: &Value, kind: &str, name: &str) -> bool {
    defs[kind]
        .as_array()
        .is_some_and(|a| a.iter().any(|e| e["name"] == name))
}

/// A node id from a member name as the management API gives it (`node{id}@{address}`).
pub fn member_id(name: &Value) -> Option<u64> {
    name.as_str()?
        .strip_prefix("node")?
        .split('@')
        .next()?
        .parse()
        .ok()
}

/// No node's log shows a panic.
pub fn assert_no_panic(nodes: &[Node]) {
    for n in nodes {
        let logs = n.logs();
        assert!(!logs.contains("panicked"), "node {}: {logs}", n.id);
    }
}
