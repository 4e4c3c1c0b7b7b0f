//! The leader's commands as written into the group's log: each [`Cmd`] (with what
//! the queue actor keeps to act on its answer) as the machine's [`Command`].

use super::*;

impl Replica {
    /// The group's command a leader's command is written as.
    pub(super) fn command(&self, cmd: &Cmd) -> Command<StoredMessage> {
        let r = self;
        match cmd {
            Cmd::Consume {
                consumer,
                credit,
                origin,
                ..
            } => Command::Consume {
                consumer: r.key(*consumer),
                credit: *credit,
                origin: *origin,
            },
            Cmd::Cancel(consumer) => Command::Cancel {
                consumer: r.key(*consumer),
            },
            // After the leader's clock as it writes the entry: a head dead by then
            // is expired first, never handed out, and a message named that died
            // since it was picked is not delivered (the get picks again).
            Cmd::Get {
                consumer, picked, ..
            } => Command::Batch(vec![
                Command::Clock { now_ms: wall_ms() },
                Command::Deliver {
                    to: r.key(*consumer),
                    ids: vec![picked.0],
                },
            ]),
            Cmd::Settle { ids, how, .. } => Command::Settle {
                ids: ids.clone(),
                how: *how,
            },
            Cmd::GiveBack { ids, .. } => Command::Settle {
                ids: ids.clone(),
                how: How::Unsent,
            },
            Cmd::Return(None) => Command::Return {
                keep_node: None,
                consumer: None,
            },
            Cmd::Return(Some(key)) => Command::Return {
                keep_node: None,
                consumer: Some(*key),
            },
            Cmd::Purge(_) => Command::Purge,
            Cmd::Clock(now_ms) => Command::Clock { now_ms: *now_ms },
            Cmd::DeadSettled(ids) => Command::DeadSettled { ids: ids.clone() },
            Cmd::SetLimits { at, limits } => Command::SetLimits {
                at: *at,
                limits: limits.clone(),
            },
        }
    }
}
