//! The cluster port's listener: each connection's requests answered in order, by the
//! Raft instance (appends, votes, snapshots) or by the node (forwarded writes,
//! status, membership changes). A connection is handed to [`connection`] only once
//! the transport has taken it through TLS and the secret's proof.

use super::node::Core;
use super::rpc::{decode_frame, read_frame_body, write_frame, Reply, Rpc};
use super::transport::Conn;
use openraft::Snapshot;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Accepts connections until the runtime stops.
pub(super) async fn serve(listener: TcpListener, core: Arc<Core>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let core = core.clone();
                tokio::spawn(async move {
                    let Some(stream) = core.transport.accept(stream, peer).await else {
                        return;
                    };
                    if let Err(e) = connection(stream, core).await {
                        tracing::debug!(%peer, error = %e, "cluster connection closed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster port: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(mut stream: Conn, core: Arc<Core>) -> std::io::Result<()> {
    while let Some(body) = read_frame_body(&mut stream).await? {
        // Kept beside what it decodes to: a quorum queue's follower writes the entries
        // of an append to its log from these bytes.
        let body = bytes::Bytes::from(body);
        let (id, rpc) = decode_frame::<Rpc>(&body)?;
        if let Rpc::ConsumeSession(open) = rpc {
            // The connection is the session's from now on.
            let here = super::quorum::session_leader::Here {
                id: core.id,
                broker: core.broker(),
                groups: core.groups.clone(),
                classic_home: open.classic && core.is_home(&open.vhost, &open.queue),
            };
            return super::quorum::session_leader::serve(stream, id, open, here).await;
        }
        let reply = answer(&core, rpc, &body).await;
        write_frame(&mut stream, id, &reply).await?;
    }
    Ok(())
}

async fn answer(core: &Arc<Core>, rpc: Rpc, frame: &bytes::Bytes) -> Reply {
    let raft = core.raft();
    match rpc {
        Rpc::Append(r) => Reply::Append(raft.append_entries(r).await.map_err(|e| e.to_string())),
        Rpc::Vote(_) if core.catching_up.load(std::sync::atomic::Ordering::Acquire) => {
            Reply::Vote(Err(format!(
                "node {} lost its log and grants no vote until it has caught up",
                core.id
            )))
        }
        Rpc::Vote(r) => Reply::Vote(raft.vote(r).await.map_err(|e| e.to_string())),
        Rpc::Snapshot { vote, meta, data } => {
            let snapshot = Snapshot {
                meta,
                snapshot: Box::new(data),
            };
            Reply::Snapshot(
                raft.install_full_snapshot(vote, snapshot)
                    .await
                    .map_err(|e| e.to_string()),
            )
        }
        Rpc::Write(req) => Reply::Write(core.write_here(req).await),
        Rpc::Local => Reply::Local(core.local_view()),
        Rpc::Status => Reply::Status(core.status().await),
        Rpc::AddNode { id, addr } => Reply::Membership(core.add_node(id, addr).await),
        Rpc::RemoveNode { id } => Reply::Membership(core.remove_node(id).await),
        Rpc::ChangeGroups(c) => Reply::Groups(core.change_groups(c).await),
        Rpc::Group { group, rpc } => {
            Reply::Group(core.groups.answer_frame(group, rpc, Some(frame)).await)
        }
        Rpc::GroupWrite { group, command } => {
            Reply::GroupWrite(core.groups.write(group, command).await)
        }
        Rpc::ReadIndex => Reply::ReadIndex(core.read_index().await),
        Rpc::Alarms(report) => Reply::Alarms(core.alarms_heard(report)),
        Rpc::Forward(batch) => {
            let here = core.home_here(&batch.vhost, &batch.queue);
            Reply::Forward(super::forward::take(core.broker(), here, batch).await)
        }
        Rpc::DeclareCounts { vhost, queue, from } => {
            tracing::trace!(%vhost, %queue, from, "declare counts asked by a stand-in");
            let here = core.home_here(&vhost, &queue);
            let counts = super::forward::answer_counts(core.broker(), here, vhost, queue);
            Reply::DeclareCounts(counts.await)
        }
        Rpc::QueueStats { from, queues } => {
            tracing::trace!(
                from,
                queues = queues.len(),
                "queue counts asked for a listing"
            );
            Reply::QueueStats(core.answer_queue_stats(queues).await)
        }
        // Taken over by `connection` before it gets here.
        Rpc::ConsumeSession(_) => Reply::ConsumeSession(Err(
            super::quorum::consume_wire::Refused::Failed(crate::error::BrokerError::internal(
                "a consume session must open its own connection",
            )),
        )),
    }
}
