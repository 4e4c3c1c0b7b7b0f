//! The broker's side of the cluster ([`ClusterHook`] on a node's [`Core`]): proposals
//! forwarded and answered once applied, the read barrier, quorum groups, queue homes and
//! the nodes' view for the management API.

use super::*;

impl Core {
    /// True when this node is the home of classic queue `queue` of `vhost` (it holds
    /// its messages): forwarded publishes are taken only there.
    pub(in crate::cluster) fn is_home(&self, vhost: &str, queue: &str) -> bool {
        let a = self.applied();
        let quorum = a.groups.get(vhost).is_some_and(|qs| qs.contains_key(queue));
        !quorum && a.homes.get(vhost).and_then(|qs| qs.get(queue)) == Some(&self.id)
    }

    /// Where classic queue `queue` of `vhost` lives, as the applied log says: `Some(true)`
    /// here, `Some(false)` on another node (or a quorum queue), `None` when the log
    /// here knows no such queue (deleted, or its declare not applied here yet).
    pub(in crate::cluster) fn home_here(&self, vhost: &str, queue: &str) -> Option<bool> {
        let a = self.applied();
        let quorum = a.groups.get(vhost).is_some_and(|qs| qs.contains_key(queue));
        let home = a.homes.get(vhost).and_then(|qs| qs.get(queue));
        match (quorum, home) {
            (true, _) => Some(false),
            (false, None) => None,
            (false, Some(h)) => Some(*h == self.id),
        }
    }
}

/// The broker's view of the cluster: proposals, homes, nodes.
pub struct Hook(pub(in crate::cluster) Arc<Core>);

impl ClusterHook for Hook {
    fn node_id(&self) -> u64 {
        self.0.id
    }

    fn propose(&self, op: Op) -> Proposal {
        let core = self.0.clone();
        let id = core.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        core.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let req = Request {
            origin: core.id,
            id,
            op,
        };
        let timeout = Duration::from_millis(core.settings.commit_timeout_ms);
        // On the cluster's runtime: its connections live there.
        let task = core.rt.clone().spawn(async move {
            if let Err(e) = core.write(req).await {
                core.forget(id);
                return Err(e);
            }
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(outcome)) => Ok(outcome),
                _ => {
                    core.forget(id);
                    Err(BrokerError::new(
                        ErrorCode::ResourceError,
                        format!("cluster: the change was committed but not applied on node {} within {timeout:?}", core.id),
                    ))
                }
            }
        });
        Box::pin(async move {
            task.await
                .map_err(|e| BrokerError::internal(format!("cluster: proposal task failed: {e}")))?
        })
    }

    fn barrier(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BrokerError>> + Send>> {
        let core = self.0.clone();
        // On the cluster's runtime: its connections live there.
        let task = core.rt.clone().spawn(async move { core.barrier().await });
        Box::pin(async move {
            task.await
                .map_err(|e| BrokerError::internal(format!("cluster: barrier task failed: {e}")))?
        })
    }

    fn quorum_group(
        &self,
        vhost: &str,
        queue: &str,
    ) -> Option<Arc<crate::cluster::quorum::runtime::QueueGroup>> {
        let info = self.0.applied().groups.get(vhost)?.get(queue)?.clone();
        // Its members change (`grow`, `shrink`, a regroup), and its limits (a policy
        // change): read them when used.
        // Weak: the queue actor holding this must not keep the node's core alive.
        let core = Arc::downgrade(&self.0);
        let (v, q, id) = (vhost.to_string(), queue.to_string(), info.id);
        let current = Arc::new(move || {
            let core = core.upgrade()?;
            let a = core.applied();
            let g = a.groups.get(&v)?.get(&q).filter(|g| g.id == id)?;
            Some(g.clone())
        });
        Some(Arc::new(
            crate::cluster::quorum::runtime::QueueGroup::new(info, self.0.quorum.clone())
                .following(current),
        ))
    }

    fn remote_home(&self, vhost: &str, queue: &str) -> Option<String> {
        // A quorum queue lives on its group's members, and is served on every node.
        if self
            .0
            .applied()
            .groups
            .get(vhost)
            .is_some_and(|qs| qs.contains_key(queue))
        {
            return None;
        }
        let home = *self.0.applied().homes.get(vhost)?.get(queue)?;
        if home == self.0.id {
            return None;
        }
        let addr = self
            .0
            .raft
            .get()
            .and_then(|_| self.0.node_addr(home))
            .unwrap_or_else(|| "unknown address".into());
        Some(format!("lives on node {home} ({addr})"))
    }

    fn classic_home(&self, vhost: &str, queue: &str) -> Option<Arc<crate::cluster::Home>> {
        let describe = self.remote_home(vhost, queue)?;
        let home = *self.0.applied().homes.get(vhost)?.get(queue)?;
        // Weak: the stand-in holding this must not keep the node's core alive. Read
        // when used: the home may be given a new address (it rejoins).
        let core = Arc::downgrade(&self.0);
        let addr = Arc::new(move || {
            let core = core.upgrade()?;
            core.raft.get()?;
            core.node_addr(home)
        });
        let target = crate::cluster::forward::Target {
            vhost: vhost.to_string(),
            queue: queue.to_string(),
            from: self.0.id,
            home,
            addr,
            transport: self.0.transport.clone(),
        };
        Some(Arc::new(crate::cluster::Home::start(
            &self.0.rt, describe, target,
        )))
    }

    fn home_stats(
        &self,
        queues: Vec<crate::cluster::QueueKey>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Vec<Option<crate::cluster::HomeStats>>> + Send>,
    > {
        let none = vec![None; queues.len()];
        if self.0.raft.get().is_none() {
            return Box::pin(async move { none });
        }
        // On the cluster's runtime: its connections live there.
        let task = self.0.rt.spawn(self.0.clone().home_stats(queues));
        Box::pin(async move { task.await.unwrap_or(none) })
    }

    fn nodes_json(&self) -> Vec<serde_json::Value> {
        let me = self.0.local_view();
        let mut members: BTreeMap<NodeId, (String, &str)> = BTreeMap::new();
        for (id, addr) in &me.voters {
            members.insert(*id, (addr.clone(), "voter"));
        }
        for (id, addr) in &me.learners {
            members.insert(*id, (addr.clone(), "learner"));
        }
        members
            .into_iter()
            .map(|(id, (addr, kind))| {
                serde_json::json!({
                    "name": format!("node{id}@{addr}"),
                    "id": id,
                    "cluster_address": addr,
                    "membership": kind,
                    "leader": me.leader == Some(id),
                    "this_node": id == me.id,
                })
            })
            .collect()
    }
}
