//! The publish path of a connection, on its channel: the exchange looked up (and
//! cached) by the channel core, one `Publish` batch per exchange per read sent by it,
//! and its outcomes written as native frames: confirms over the acked prefix,
//! individual nacks, returns of unroutable mandatory messages.

use super::Connection;
use crate::broker::exchange::ExchangeHandle;
use crate::broker::messages::Routed;
use crate::channel::{lookup_exchange, Outbound, PublishOutcome};
use crate::error::{BrokerError, ErrorCode};
use crate::protocol::wire::*;
use actix::prelude::*;
use bytes::Bytes;
use std::borrow::Cow;

impl Connection {
    /// Looks exchange `name` up for the publish `frames[at]`, pausing this connection
    /// (frames keep their order), then goes on from that publish.
    pub(super) fn lookup_then_continue(
        &mut self,
        name: String,
        frames: Vec<Bytes>,
        at: usize,
        ctx: &mut Context<Self>,
    ) {
        let session = self.session.as_ref().expect("open");
        let lookup = lookup_exchange(&session.registry, &name, &session.vhost);
        // Bounded like a request: this publish holds the frames after it.
        let lookup = super::bounded::bounded("publish", self.request_timeout(), lookup);
        ctx.wait(
            actix::fut::wrap_future::<_, Self>(lookup).map(move |res, act, ctx| {
                match res {
                    Ok(x) => {
                        act.channel.cache_exchange(x);
                        act.on_frames(frames, at, ctx);
                    }
                    Err(e) => {
                        // Refuse this publish, go on with the next frames.
                        act.refuse_publish(&frames[at], &e, ctx);
                        act.on_frames(frames, at + 1, ctx);
                    }
                }
                act.channel.flush_settles();
                act.flush();
            }),
        );
    }

    /// Answers a publish that cannot be routed at all (unknown or internal exchange).
    pub(super) fn refuse_publish(&mut self, raw: &Bytes, e: &BrokerError, ctx: &mut Context<Self>) {
        let Ok(ClientFrame::Publish(p)) = decode_client(raw) else {
            return;
        };
        self.nack_publish(p.seq, e, ctx);
    }

    /// Nacks publish `seq` (an error without a request id when it asked for no confirm).
    fn nack_publish(&mut self, seq: u64, e: &BrokerError, ctx: &mut Context<Self>) {
        if seq == 0 {
            self.error(None, e);
            return;
        }
        if !self.channel.register_seq(seq) {
            self.fatal(
                ErrorCode::PreconditionFailed,
                format!("publish seq {seq} does not increase"),
                ctx,
            );
            return;
        }
        for o in self.channel.refuse(seq, e.clone()) {
            self.publish_outcome(&[], o);
        }
    }

    /// Answers a frame refused before it was decoded because it would take too much
    /// memory decoded (RESOURCE_ERROR): a publish is nacked and a request answered with
    /// the error, the connection staying open; anything else is fatal.
    pub(super) fn refuse_oversized(
        &mut self,
        raw: &Bytes,
        e: DecodeError,
        ctx: &mut Context<Self>,
    ) {
        tracing::warn!(peer = %self.peer, code = %e.code, message = %e.message, "frame refused");
        let err = BrokerError::new(e.code, e.message);
        if let Some(seq) = publish_seq(raw) {
            self.publisher = true;
            self.nack_publish(seq, &err, ctx);
        } else if let Some(id) = request_id(raw) {
            self.error(Some(id), &err);
        } else {
            self.fatal(
                err.code(),
                format!("cannot decode frame: {}", err.message()),
                ctx,
            );
        }
    }

    /// Sends one batch through the channel; the answer comes back to this actor.
    pub(super) fn send_batch(
        &mut self,
        batch: Option<(ExchangeHandle, Vec<Outbound>)>,
        ctx: &mut Context<Self>,
    ) {
        let Some((exchange, items)) = batch else {
            return;
        };
        if items.is_empty() {
            return;
        }
        self.stats.add_published(items.len() as u64);
        let gauge = self.shared.broker.memory();
        let answer = self
            .channel
            .send_batch(&exchange, &items, gauge, &self.flow);
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(answer).map(move |res, act, _ctx| {
                act.on_published(&items, res);
                act.flush();
            }),
        );
    }

    fn on_published(&mut self, items: &[Outbound], routed: Result<Vec<Routed>, BrokerError>) {
        for o in self.channel.on_published(items, routed) {
            self.publish_outcome(items, o);
        }
    }

    /// Writes what the client is told about its publishes.
    fn publish_outcome(&mut self, items: &[Outbound], o: PublishOutcome) {
        match o {
            PublishOutcome::Return { index } => {
                let o = &items[index];
                let m = &o.message;
                self.frame(&ServerFrame::Return {
                    seq: o.seq,
                    code: 312,
                    reason: "NO_ROUTE".into(),
                    exchange: Cow::Borrowed(&m.exchange),
                    routing_key: Cow::Borrowed(&m.routing_key),
                    properties: properties_or_none(&m.properties),
                    body: &m.body,
                });
            }
            PublishOutcome::Nack { seq, error } => self.frame(&ServerFrame::Nack {
                seq,
                code: error.code(),
                message: super::shown(error.message()),
            }),
            PublishOutcome::Error(e) => self.error(None, &e),
            PublishOutcome::Confirm { seq } => self.frame(&ServerFrame::Confirm {
                seq,
                multiple: true,
            }),
        }
    }
}
