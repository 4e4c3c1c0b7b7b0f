//! The connection's channels as the management API lists them (`/api/channels`):
//! a read-only query answered from the channels' own state, nothing kept for it.

use super::connection::AmqpConnection;
use crate::server::connections::{ChannelInfo, ListChannels};
use actix::prelude::*;

impl Handler<ListChannels> for AmqpConnection {
    type Result = MessageResult<ListChannels>;

    fn handle(&mut self, _msg: ListChannels, _ctx: &mut Self::Context) -> Self::Result {
        let mut out: Vec<ChannelInfo> = self
            .channels
            .iter()
            .map(|(number, ch)| ChannelInfo {
                number: *number,
                owner: ch.core.owner(),
                consumers: ch.core.consumers().count() as u32,
                unacked: ch.core.unacked() as u64,
                prefetch: ch.core.prefetch(),
                confirm: ch.core.confirming(),
                unconfirmed: ch.core.unconfirmed() as u64,
                transactional: ch.core.transactional(),
            })
            .collect();
        out.sort_by_key(|c| c.number);
        MessageResult(out)
    }
}
