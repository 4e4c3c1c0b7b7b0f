//! The publish path of a connection: exchange lookup (cached), one `Publish` batch per
//! exchange per read, the memory reservation and window accounting around it, and the
//! answers: confirms over the acked prefix, individual nacks, returns of unroutable
//! mandatory messages.

use super::{Connection, Outbound};
use crate::broker::exchange::ExchangeHandle;
use crate::broker::messages::*;
use crate::error::{BrokerError, ErrorCode};
use crate::protocol::wire::*;
use actix::prelude::*;
use bytes::Bytes;
use std::borrow::Cow;
use std::sync::atomic::Ordering;

impl Connection {
    pub(super) fn cached_exchange(&mut self, name: &str) -> Option<ExchangeHandle> {
        match self.exchanges.get(name) {
            Some(x) if x.is_alive() => Some(x.clone()),
            Some(_) => {
                self.exchanges.remove(name);
                None
            }
            None => None,
        }
    }

    pub(super) fn lookup_then_continue(
        &mut self,
        name: String,
        frames: Vec<Bytes>,
        at: usize,
        ctx: &mut Context<Self>,
    ) {
        let registry = self.session.as_ref().expect("open").registry.clone();
        let lookup = registry.send(LookupExchange { name: name.clone() });
        // Bounded like a request: this publish holds the frames after it.
        let lookup = super::bounded::bounded("publish", self.request_timeout(), async {
            lookup.await.map_err(BrokerError::from).and_then(|r| r)
        });
        ctx.wait(
            actix::fut::wrap_future::<_, Self>(lookup).map(move |res, act, ctx| {
                let res: Result<ExchangeHandle, BrokerError> = res.and_then(|x| {
                    if x.spec().internal {
                        Err(BrokerError::access_refused(format!(
                            "cannot publish to internal exchange '{}'",
                            crate::error::clip(&name)
                        )))
                    } else {
                        Ok(x)
                    }
                });
                match res {
                    Ok(x) => {
                        act.exchanges.insert(name, x);
                        act.on_frames(frames, at, ctx);
                    }
                    Err(e) => {
                        // Refuse this publish, go on with the next frames.
                        act.refuse_publish(&frames[at], &e, ctx);
                        act.on_frames(frames, at + 1, ctx);
                    }
                }
                act.flush_settles();
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
        if !self.confirms.register(seq) {
            self.fatal(
                ErrorCode::PreconditionFailed,
                format!("publish seq {seq} does not increase"),
                ctx,
            );
            return;
        }
        self.frame(&ServerFrame::Nack {
            seq,
            code: e.code(),
            message: super::shown(e.message()),
        });
        self.confirms.settle(seq, false);
        self.advance_confirms();
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

    pub(super) fn advance_confirms(&mut self) {
        if let Some(seq) = self.confirms.advance() {
            self.frame(&ServerFrame::Confirm {
                seq,
                multiple: true,
            });
        }
    }

    /// Sends one batch to its exchange; the answer comes back to this actor.
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
        // Acks and nacks read before these publishes take effect before them, as on an
        // AMQP channel: the queue must see a settlement in its inbox before it stores a
        // later publish, or a crash after that publish's confirm could bring back a
        // message whose ack the client rightly counts as done.
        self.flush_settles();
        self.stats.add_published(items.len() as u64);
        let gauge = self.shared.broker.memory().clone();
        let bytes: usize = items.iter().map(|o| o.message.accounted_size()).sum();
        // Reserve before sending: held + in flight stays under the watermark plus one
        // batch per publisher.
        gauge.add(bytes);
        self.flow.inflight.fetch_add(1, Ordering::AcqRel);
        let (tx, rx) = tokio::sync::oneshot::channel();
        // do_send: the publish window (Flow::inflight) bounds what is in flight, and a
        // reply channel guarantees the batch is handled even if this actor stops.
        exchange.publish_recipient().do_send(Publish {
            messages: items.iter().map(|o| o.message.clone()).collect(),
            hops: Vec::new(),
            reply: Some(tx),
            dead_letter: false,
            publisher: Some(self.owner),
        });
        let flow = self.flow.clone();
        let name = exchange.name().to_string();
        let vhost = self
            .session
            .as_ref()
            .map(|s| s.vhost.clone())
            .unwrap_or_default();
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(async move {
                let r = rx.await;
                gauge.sub(bytes);
                flow.batch_done();
                r
            })
            .map(move |res, act, _ctx| {
                let routed = match res {
                    Ok(Ok(r)) => Ok(r),
                    Ok(Err(e)) => Err(e),
                    Err(_) => {
                        act.exchanges.remove(&name);
                        Err(BrokerError::not_found("exchange", &name, &vhost))
                    }
                };
                act.on_published(items, routed);
                act.flush();
            }),
        );
    }

    pub(super) fn on_published(
        &mut self,
        items: Vec<Outbound>,
        routed: Result<Vec<Routed>, BrokerError>,
    ) {
        match routed {
            Ok(outcomes) => {
                for (o, r) in items.iter().zip(outcomes) {
                    if let Some(e) = r.refused {
                        // A queue refused it (x-overflow reject-publish) or the broker
                        // could not read it: a nack naming the queue and the reason.
                        // Without a confirm, a full queue drops it silently (as
                        // RabbitMQ does); an unreadable message is reported.
                        if o.seq != 0 {
                            self.frame(&ServerFrame::Nack {
                                seq: o.seq,
                                code: e.code(),
                                message: super::shown(e.message()),
                            });
                            self.confirms.settle(o.seq, false);
                        } else if e.code() != ErrorCode::ResourceError {
                            self.error(None, &e);
                        }
                        continue;
                    }
                    if r.queues == 0 && o.mandatory {
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
                    if o.seq != 0 {
                        self.confirms.settle(o.seq, true);
                    }
                }
            }
            Err(e) => {
                for o in &items {
                    if o.seq != 0 {
                        self.frame(&ServerFrame::Nack {
                            seq: o.seq,
                            code: e.code(),
                            message: super::shown(e.message()),
                        });
                        self.confirms.settle(o.seq, false);
                    } else {
                        self.error(None, &e);
                    }
                }
            }
        }
        self.advance_confirms();
    }
}
