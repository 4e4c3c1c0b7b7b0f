//! The leader's own commands of a group, proposed to openraft in the order they are
//! written, each answered once committed, without waiting for one to commit before
//! proposing the next (so a queue actor can keep several entries in flight and still
//! have them in the log in its order).

use super::super::group::{GroupResponse, StoredMessage};
use super::super::machine::Command;
use super::super::wire::{GroupId, Groups, LEADER_WRITE_TIMEOUT};
use crate::error::{BrokerError, ErrorCode};
use std::sync::Arc;

/// A leader command on its way to the group's writer, and where its answer goes.
pub(super) type Written = (
    Command<StoredMessage>,
    tokio::sync::oneshot::Sender<Result<GroupResponse, BrokerError>>,
);

/// Proposes the leader's commands of `group` in the order they come, each answered
/// once committed and applied, without waiting for one to commit before proposing
/// the next.
pub(super) async fn propose_in_order(
    groups: Arc<Groups>,
    group: GroupId,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Written>,
) {
    use openraft::error::ClientWriteError;
    let not_leader = move || {
        BrokerError::new(
            ErrorCode::NotAllowed,
            format!("quorum queue group {group}: this node no longer leads it"),
        )
    };
    while let Some((command, answer)) = rx.recv().await {
        let Some(raft) = groups.get(group) else {
            let _ = answer.send(Err(not_leader()));
            continue;
        };
        let committed = match raft.client_write_ff(command).await {
            Ok(committed) => committed,
            Err(e) => {
                let _ = answer.send(Err(BrokerError::internal(format!(
                    "quorum queue group {group}: {e}"
                ))));
                continue;
            }
        };
        tokio::spawn(async move {
            // Bounded as any write on the leader (wire::LEADER_WRITE_TIMEOUT): a leader
            // cut off from its majority keeps leading and commits nothing.
            let Ok(committed) = tokio::time::timeout(LEADER_WRITE_TIMEOUT, committed).await else {
                let _ = answer.send(Err(BrokerError::internal(format!(
                    "quorum queue group {group}: not committed within {LEADER_WRITE_TIMEOUT:?}: this node leads but a majority of the group does not answer it"
                ))));
                return;
            };
            let result = match committed {
                Ok(Ok(r)) => Ok(r.data),
                Ok(Err(ClientWriteError::ForwardToLeader(_))) => Err(not_leader()),
                Ok(Err(e)) => Err(BrokerError::internal(format!(
                    "quorum queue group {group}: {e}"
                ))),
                Err(_) => Err(BrokerError::internal(format!(
                    "quorum queue group {group}: its member stopped before the commit"
                ))),
            };
            let _ = answer.send(result);
        });
    }
}
