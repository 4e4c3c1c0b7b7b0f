//! The leader cut off from the others by the network, not frozen: each node runs in its
//! own network namespace (`ip netns`, a veth pair into one bridge), and the leader's
//! link is set down while it keeps running. Needs root and `ip netns`; without them the
//! test says why on standard error and checks nothing (scripts/chaos.sh --netns runs
//! the same fault at length).
//!
//! The nodes' client listeners are on each namespace's own loopback (as every test's
//! are, on port 0), so the test talks to a node from a thread that entered its
//! namespace; the cluster ports are on the bridge, where `actormq cluster status`
//! reaches them from the test's own namespace.

use super::{has, wait_for, Node, SECRET};
use crate::mgmt::http::Http;
use crate::support::DEADLINE;
use serde_json::Value;
use std::future::Future;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Instant;
use tokio::task::block_in_place;

/// Runs `ip ARGS`: its error output when it fails.
pub(super) fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Three network namespaces joined by a bridge, removed when dropped. Names and subnet
/// come from the process id and a counter, so that two tests, or two test runs on one
/// machine, do not meet.
pub(super) struct Net {
    tag: u32,
    /// The nodes' addresses on the bridge, `10.78.<tag % 250>.<i>`.
    ips: Vec<String>,
}

impl Net {
    pub(super) fn namespace(&self, i: usize) -> String {
        format!("amqt{}n{i}", self.tag)
    }

    fn bridge(&self) -> String {
        format!("amqt{}b", self.tag)
    }

    /// The host side of node `i`'s link.
    pub(super) fn link(&self, i: usize) -> String {
        format!("amqt{}v{i}", self.tag)
    }

    /// Sets it up, or says why it cannot be.
    pub(super) fn setup() -> Result<Net, String> {
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".into());
        }
        // Tests of one run differ by a counter, since they share the process id.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = (std::process::id() % 10_000) * 8 + n % 8;
        let subnet = format!("10.78.{}", tag % 250);
        let net = Net {
            tag,
            ips: (1..=3).map(|i| format!("{subnet}.{i}")).collect(),
        };
        let bridge = net.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{subnet}.254/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 1..=3 {
            let (ns, link) = (net.namespace(i), net.link(i));
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &link, "master", &bridge, "up"])?;
            let inside = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &ns, "ip"];
                all.extend_from_slice(args);
                ip(&all)
            };
            inside(&[
                "addr",
                "add",
                &format!("{}/24", net.ips[i - 1]),
                "dev",
                "eth0",
            ])?;
            inside(&["link", "set", "eth0", "up"])?;
            inside(&["link", "set", "lo", "up"])?;
        }
        Ok(net)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // The host end of each link too: a deleted namespace's link can outlive it.
        for i in 1..=3 {
            let _ = ip(&["netns", "del", &self.namespace(i)]);
            let _ = ip(&["link", "del", &self.link(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

/// Runs the future `f` makes on a new thread inside namespace `ns`: a socket belongs to
/// the namespace of the thread that opened it.
pub(super) async fn in_ns<T, F, Fut>(ns: String, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let file = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("the namespace");
        // SAFETY: setns(2) on an open namespace file; it changes this thread only.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {ns}: {}", std::io::Error::last_os_error());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _ = tx.send(rt.block_on(f()));
    });
    rx.await.expect("the namespace's thread finished")
}

/// One node of the test: the node and its namespace.
pub(super) struct At<'a> {
    pub(super) node: &'a Node,
    pub(super) ns: String,
}

impl At<'_> {
    /// The HTTP status of `method path [body]` on this node, sent from its namespace.
    pub(super) async fn status(&self, method: &'static str, path: &str, body: Option<&str>) -> u16 {
        let api: Http = self.node.api();
        let (path, body) = (path.to_string(), body.map(str::to_string));
        in_ns(self.ns.clone(), move || async move {
            api.send(method, &path, &[], body.as_deref()).await.status
        })
        .await
    }

    /// The JSON body of `GET path` on this node, sent from its namespace.
    pub(super) async fn json(&self, path: &str) -> Value {
        let api: Http = self.node.api();
        let path = path.to_string();
        in_ns(self.ns.clone(), move || async move {
            api.get(&path).await.json()
        })
        .await
    }

    /// Its definitions, reduced to what must be equal on every node.
    async fn definitions(&self) -> Value {
        let api = self.node.api();
        let mut d = in_ns(self.ns.clone(), move || async move {
            api.get("/api/definitions").await.json()
        })
        .await;
        let users: Vec<Value> = d["users"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|u| u["name"].clone())
            .collect();
        serde_json::json!({
            "exchanges": d["exchanges"].take(),
            "queues": d["queues"].take(),
            "bindings": d["bindings"].take(),
            "users": users,
        })
    }

    /// The leader this node reports, and its own role.
    pub(super) fn view(&self) -> Option<(u64, String)> {
        let s = self.node.status()?;
        let me = s["nodes"]
            .as_array()?
            .iter()
            .find(|n| n[0]["id"] == self.node.id)?[0]
            .clone();
        Some((s["leader"].as_u64()?, me["role"].as_str()?.to_string()))
    }
}

/// Waits until every node's definitions are equal and `check` holds on them.
async fn converged(nodes: &[At<'_>], check: impl Fn(&Value) -> bool) -> Value {
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
            "definitions did not converge: {all:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The network, or `None` after saying on standard error why `test` checks nothing.
pub(super) fn net_or_skip(test: &str) -> Option<Net> {
    match block_in_place(Net::setup) {
        Ok(net) => Some(net),
        Err(why) => {
            // Past the test harness's capture: a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test} (needs root and `ip netns`): {why}"
            );
            None
        }
    }
}

/// Three nodes, each in its namespace, their cluster ports on the bridge. A change
/// that cannot commit fails after 3 s here, not the default 10.
pub(super) fn start_nodes(net: &Net, dir: &std::path::Path) -> Vec<Node> {
    let seeds: Vec<(u64, String)> = (1..=3)
        .map(|i| (i as u64, format!("{}:25672", net.ips[i - 1])))
        .collect();
    let extra = format!("secret = \"{SECRET}\"\ncommit_timeout_ms = 3000");
    seeds
        .iter()
        .map(|(id, addr)| {
            let ns = net.namespace(*id as usize);
            let root = dir.join(format!("n{id}"));
            Node::start_in(&ns, &root, *id, addr, &seeds, &extra)
        })
        .collect()
}

/// Each node with its namespace.
pub(super) fn placed<'a>(net: &Net, nodes: &'a [Node]) -> Vec<At<'a>> {
    nodes
        .iter()
        .map(|n| At {
            node: n,
            ns: net.namespace(n.id as usize),
        })
        .collect()
}

/// The definitions leader once every node agrees on one.
pub(super) fn agreed_leader(at: &[At]) -> u64 {
    wait_for("a leader every node agrees on", DEADLINE * 2, || {
        let views: Vec<_> = at.iter().map(At::view).collect::<Option<_>>()?;
        let (l, _) = views[0];
        views.iter().all(|(v, _)| *v == l).then_some(l)
    })
}

const DURABLE: Option<&str> = Some(r#"{"durable":true}"#);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_takes_no_change_and_rejoins_when_healed() {
    let Some(net) = net_or_skip("cluster::partition") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let nodes = block_in_place(|| start_nodes(&net, dir.path()));
    let at = placed(&net, &nodes);
    let old = block_in_place(|| agreed_leader(&at));
    let old_at = at.iter().find(|a| a.node.id == old).unwrap();
    let others: Vec<&At> = at.iter().filter(|a| a.node.id != old).collect();
    assert_eq!(
        old_at
            .status("PUT", "/api/queues/%2F/before", DURABLE)
            .await,
        201
    );
    converged(&at, |d| has(d, "queues", "before")).await;

    // Cut off: the leader keeps running, alone.
    ip(&["link", "set", &net.link(old as usize), "down"]).unwrap();
    let new = block_in_place(|| {
        wait_for("a new leader among the two", DEADLINE * 2, || {
            let (l, _) = others[0].view()?;
            (l != old).then_some(l)
        })
    });
    assert_eq!(
        others[1]
            .status("PUT", "/api/queues/%2F/during", DURABLE)
            .await,
        201
    );
    // The old leader can neither commit a change nor answer a read from what it has:
    // both fail after the commit timeout.
    let change = old_at.status("PUT", "/api/queues/%2F/lost", DURABLE).await;
    assert!(
        !(200..300).contains(&change),
        "a change on the cut-off leader was acknowledged: HTTP {change}"
    );
    let read = old_at
        .status("PUT", "/api/queues/%2F/before", DURABLE)
        .await;
    assert!(
        !(200..300).contains(&read),
        "a read on the cut-off leader was answered: HTTP {read}"
    );

    // Healed: it hears the new term, follows, and is sent what it missed; what it
    // could not commit is gone from its log.
    ip(&["link", "set", &net.link(old as usize), "up"]).unwrap();
    block_in_place(|| {
        wait_for("the old leader follows the new one", DEADLINE * 2, || {
            let (l, role) = old_at.view()?;
            (l == new && role == "follower").then_some(())
        })
    });
    converged(&at, |d| {
        has(d, "queues", "before") && has(d, "queues", "during") && !has(d, "queues", "lost")
    })
    .await;
    assert_eq!(
        old_at.status("PUT", "/api/queues/%2F/after", DURABLE).await,
        201
    );
    let last = converged(&at, |d| has(d, "queues", "after")).await;
    assert!(!has(&last, "queues", "lost"), "{last:#}");
    for n in &nodes {
        assert!(
            !n.logs().contains("panicked"),
            "node {}: {}",
            n.id,
            n.logs()
        );
    }
}
