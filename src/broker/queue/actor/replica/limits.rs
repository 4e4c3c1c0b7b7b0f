//! Limits a policy changed after the declare. The definitions log records them for the
//! group (`GroupInfo::changed_limits`, with the index of the policy change's entry);
//! the group's leader writes them into the group's own log (`Command::SetLimits`), so
//! every member switches at the same entry of the group. It does so whenever its
//! machine's limits are older than the record: when the policy change applies on its
//! node (the registry's `Reconfigure` asks for a look), and when it takes over (a
//! change applied while the group had no leader, or while the old leader was
//! writing it, is not lost). The queue actor then follows the limits its member
//! applied (`x-expires`). Looked at only when they may have changed, not at every
//! dispatch (the leader's dispatch runs for every applied entry).

use super::*;

impl QueueActor {
    /// The vhost's policies changed (the registry's `Reconfigure`): the group's
    /// limits may have too.
    pub(in crate::broker::queue::actor) fn replica_policies_changed(
        &mut self,
        ctx: &mut Context<Self>,
    ) {
        self.replica().limits_check = true;
        self.replica_dispatch(ctx);
    }

    /// When the limits may have changed (`Replica::limits_check`): on the serving
    /// leader, writes the recorded limits if the machine's are older, once per
    /// change (again after a failed write); on every node, follows the limits in
    /// force.
    pub(super) fn replica_sync_limits(&mut self, ctx: &mut Context<Self>) {
        if !std::mem::take(&mut self.replica().limits_check) {
            return;
        }
        let name = self.name.clone();
        let r = self.replica();
        if r.serving {
            let (at, limits) = r.group.recorded_limits();
            let behind = r.group.read(|q| q.limits_at() < at).unwrap_or(false);
            if behind && r.limits_written < at {
                tracing::info!(queue = %name, group = r.group.id(), at, ?limits, "quorum queue: writing the limits a policy change gave it");
                r.limits_written = at;
                r.cmds.push_back(Cmd::SetLimits { at, limits });
            }
        }
        r.limits = r.group.limits();
        let expires = r.limits.expires;
        self.replica_follow_expires(expires, ctx);
    }
}
