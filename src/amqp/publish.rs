//! Publishing on a channel: batching per exchange, the exchange lookup, the outcomes
//! (confirms, nacks, returns), and transactions (`tx.*`): publishes and settlements held
//! until `tx.commit`, which answers once every publish is in its queues.

use super::connection::AmqpConnection;
use super::dispatch::{Command, PublishCommand};
use super::errors::AmqpError;
use super::properties::properties_in;
use super::reply_to::{REPLY_TO, REPLY_TO_PREFIX};
use crate::broker::exchange::ExchangeHandle;
use crate::channel::{lookup_exchange, Outbound, PublishOutcome};
use crate::error::BrokerError;
use crate::message::{Message, Properties};
use actix::prelude::*;
use amq_protocol::protocol::basic::{self, AMQPProperties};
use amq_protocol::protocol::{tx, AMQPClass};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Most messages in one `Publish` batch.
const MAX_PUBLISH_BATCH: usize = 256;

impl AmqpConnection {
    /// Adds one publish to the channel's batch (looking its exchange up first if needed).
    pub(super) fn publish(&mut self, ch: u16, mut cmd: PublishCommand, ctx: &mut Context<Self>) {
        if !self.publisher {
            self.publisher = true;
            // Its first publish during an alarm: told now, as its reads stop now.
            self.notify_blocked();
        }
        if cmd.reply_to() == Some(REPLY_TO) {
            // A request expecting a direct reply: name this channel's reply consumer.
            let token = self.channels[&ch].reply_to.as_ref().map(|(t, _)| t.clone());
            let Some(token) = token else {
                let e = AmqpError::new(406, "fast reply consumer does not exist").on((60, 40));
                self.channel_error(ch, e, ctx);
                return;
            };
            let props = cmd.properties.take().map(|p| *p).unwrap_or_default();
            cmd.properties = Some(Box::new(props.with_reply_to(super::properties::short(
                &format!("{REPLY_TO_PREFIX}{token}"),
            ))));
        }
        if cmd.publish.exchange.as_str().is_empty()
            && cmd
                .publish
                .routing_key
                .as_str()
                .starts_with(REPLY_TO_PREFIX)
        {
            self.direct_reply(ch, cmd, ctx);
            return;
        }
        let same = self.channels[&ch].batch.as_ref().is_some_and(|(x, items)| {
            x.name() == cmd.publish.exchange.as_str() && items.len() < MAX_PUBLISH_BATCH
        });
        if !same {
            self.send_batch(ch, ctx);
            let name = cmd.publish.exchange.as_str().to_string();
            let st = self.channels.get_mut(&ch).expect("open");
            match st.core.cached_exchange(&name) {
                Some(x) => st.batch = Some((x, Vec::new())),
                None => {
                    // Permission first, as RabbitMQ: a refused publish to a missing
                    // exchange is ACCESS_REFUSED, not NOT_FOUND.
                    if let Err(e) = st.core.may_write_exchange(&name) {
                        self.channel_error(ch, AmqpError::from(e).on((60, 40)), ctx);
                        return;
                    }
                    // Look it up, then handle this publish again.
                    st.pending.push_front(Command::Publish(Box::new(cmd)));
                    self.backlog.fetch_add(1, Ordering::AcqRel);
                    self.lookup_exchange(ch, name, ctx);
                    return;
                }
            }
        }
        if let Err(e) = self.check_user_id(&cmd) {
            self.channel_error(ch, e, ctx);
            return;
        }
        let st = self.channels.get_mut(&ch).expect("open");
        let x = &st.batch.as_ref().expect("batch set above").0;
        if let Err(e) = st.core.may_publish(x, cmd.publish.routing_key.as_str()) {
            self.channel_error(ch, AmqpError::from(e).on((60, 40)), ctx);
            return;
        }
        let seq = st.core.next_seq();
        let (x, items) = st.batch.as_mut().expect("batch set above");
        items.push(outbound(x, seq, cmd));
    }

    /// A reply to a direct reply-to requester: straight to its connection.
    fn direct_reply(&mut self, ch: u16, cmd: PublishCommand, ctx: &mut Context<Self>) {
        if let Err(e) = self.check_user_id(&cmd) {
            self.channel_error(ch, e, ctx);
            return;
        }
        // Published to the default exchange: write on it, as any publish.
        let st = self.channels.get_mut(&ch).expect("open");
        if let Err(e) = st.core.may_write_exchange("") {
            self.channel_error(ch, AmqpError::from(e).on((60, 40)), ctx);
            return;
        }
        // What was batched before this publish goes first (confirm order).
        self.send_batch(ch, ctx);
        let token = cmd.publish.routing_key.as_str()[REPLY_TO_PREFIX.len()..].to_string();
        let mandatory = cmd.publish.mandatory;
        let st = self.channels.get_mut(&ch).expect("open");
        let seq = st.core.next_seq();
        let item = Outbound {
            seq,
            mandatory,
            message: Arc::new(Message {
                exchange: Arc::from(""),
                routing_key: cmd.publish.routing_key.as_str().to_string(),
                properties: shared_properties(&cmd.properties),
                body: cmd.body,
            }),
        };
        self.stats.add_published(1);
        let delivered = self
            .shared
            .direct_replies
            .send(&token, item.message.clone());
        let items = [item];
        if !delivered && mandatory {
            self.publish_outcome(ch, &items, PublishOutcome::Return { index: 0 });
        }
        let st = self.channels.get_mut(&ch).expect("open");
        for o in st.core.confirm_now(seq) {
            self.publish_outcome(ch, &items, o);
        }
    }

    /// RabbitMQ's rule: a `user_id` property must name the authenticated user.
    fn check_user_id(&self, cmd: &PublishCommand) -> Result<(), AmqpError> {
        match cmd.user_id() {
            Some(uid) if uid != self.user => Err(AmqpError::new(
                406,
                format!(
                    "user_id property set to '{uid}' but authenticated user was '{}'",
                    self.user
                ),
            )
            .on((60, 40))),
            _ => Ok(()),
        }
    }

    /// `tx.commit`: looks up the exchanges of the held publishes, sends them, answers
    /// commit-ok once every one is in its queues (with the transaction's settlements
    /// applied first).
    pub(super) fn commit(&mut self, ch: u16, ctx: &mut Context<Self>) {
        let Some(st) = self.channels.get_mut(&ch) else {
            return;
        };
        let held = std::mem::take(&mut st.tx_publishes);
        let mut names: Vec<String> = Vec::new();
        for c in &held {
            let n = c.publish.exchange.as_str();
            if st.core.cached_exchange(n).is_none() && !names.iter().any(|x| x == n) {
                names.push(n.to_string());
            }
        }
        let registry = self.session.as_ref().expect("open").registry.clone();
        let vhost = self.session.as_ref().expect("open").vhost.clone();
        let lookups = async move {
            let mut found = Vec::new();
            for name in names {
                found.push(lookup_exchange(&registry, &name, &vhost).await?);
            }
            Ok(found)
        };
        self.run(
            ch,
            (90, 20),
            lookups,
            move |act, ch, found, ctx| {
                act.commit_with(ch, held, found, ctx);
            },
            ctx,
        );
    }

    fn commit_with(
        &mut self,
        ch: u16,
        held: Vec<PublishCommand>,
        found: Vec<ExchangeHandle>,
        ctx: &mut Context<Self>,
    ) {
        for c in &held {
            if let Err(e) = self.check_user_id(c) {
                self.channel_error(ch, e, ctx);
                return;
            }
        }
        if !held.is_empty() && !self.publisher {
            self.publisher = true;
            self.notify_blocked();
        }
        let gauge = self.shared.broker.memory().clone();
        let flow = self.flow.clone();
        let stats = self.stats.clone();
        let Some(st) = self.channels.get_mut(&ch) else {
            return;
        };
        for x in found {
            st.core.cache_exchange(x);
        }
        // Permissions before anything of the transaction takes effect.
        for c in &held {
            let Some(x) = st.core.cached_exchange(c.publish.exchange.as_str()) else {
                continue; // NOT_FOUND below
            };
            if let Err(e) = st.core.may_publish(&x, c.publish.routing_key.as_str()) {
                self.channel_error(ch, AmqpError::from(e).on((60, 40)), ctx);
                return;
            }
        }
        // Settlements first, as everywhere: then the publishes.
        st.core.commit_settles();
        st.core.flush_settles();
        let mut batches: Vec<(ExchangeHandle, Vec<Outbound>)> = Vec::new();
        for c in held {
            let x = match st.core.cached_exchange(c.publish.exchange.as_str()) {
                Some(x) => x,
                None => {
                    let e = BrokerError::not_found(
                        "exchange",
                        c.publish.exchange.as_str(),
                        &self.session.as_ref().expect("open").vhost,
                    );
                    self.channel_error(ch, AmqpError::from(e).on((90, 20)), ctx);
                    return;
                }
            };
            match batches.last_mut() {
                Some((bx, items)) if bx.name() == x.name() && items.len() < MAX_PUBLISH_BATCH => {
                    items.push(outbound(&x, 0, c));
                }
                _ => {
                    let item = outbound(&x, 0, c);
                    batches.push((x, vec![item]));
                }
            }
        }
        let mut sent = Vec::new();
        for (x, items) in batches {
            stats.add_published(items.len() as u64);
            let fut = st.core.send_batch(&x, &items, &gauge, &flow);
            sent.push(async move { (items, fut.await) });
        }
        let all = async move { Ok(futures_util::future::join_all(sent).await) };
        self.run(
            ch,
            (90, 20),
            all,
            |act, ch, results, _| {
                for (items, res) in results {
                    let outcomes = match act.channels.get_mut(&ch) {
                        Some(st) => st.core.on_published(&items, res),
                        None => return,
                    };
                    for o in outcomes {
                        act.publish_outcome(ch, &items, o);
                    }
                }
                act.method(ch, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})));
            },
            ctx,
        );
    }

    fn lookup_exchange(&mut self, ch: u16, name: String, ctx: &mut Context<Self>) {
        let registry = self.session.as_ref().expect("open").registry.clone();
        let vhost = self.session.as_ref().expect("open").vhost.clone();
        let fut = lookup_exchange(&registry, &name, &vhost);
        self.run(
            ch,
            (60, 40),
            fut,
            |act, ch, x, _ctx| {
                if let Some(st) = act.channels.get_mut(&ch) {
                    st.core.cache_exchange(x);
                }
            },
            ctx,
        );
    }

    /// Sends channel `ch`'s batch; its outcomes come back as confirms, nacks, returns.
    pub(super) fn send_batch(&mut self, ch: u16, ctx: &mut Context<Self>) {
        let Some(st) = self.channels.get_mut(&ch) else {
            return;
        };
        let Some((x, items)) = st.batch.take() else {
            return;
        };
        if items.is_empty() {
            return;
        }
        self.stats.add_published(items.len() as u64);
        let gauge = self.shared.broker.memory().clone();
        let fut = st.core.send_batch(&x, &items, &gauge, &self.flow);
        let epoch = st.core.owner();
        st.publishes_in_flight += 1;
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(fut).map(move |res, act, ctx| {
                let Some(st) = act.channels.get_mut(&ch) else {
                    return;
                };
                if st.core.owner() != epoch || st.closing {
                    return;
                }
                st.publishes_in_flight -= 1;
                // The method waiting behind these publishes runs after their outcomes.
                let resume = st.publishes_in_flight == 0 && std::mem::take(&mut st.wait_publishes);
                let outcomes = st.core.on_published(&items, res);
                for o in outcomes {
                    act.publish_outcome(ch, &items, o);
                }
                if resume {
                    act.pump(ch, ctx);
                }
                act.flush();
            }),
        );
    }

    pub(super) fn publish_outcome(&mut self, ch: u16, items: &[Outbound], o: PublishOutcome) {
        match o {
            PublishOutcome::Return { index } => {
                let m = &items[index].message;
                self.method(
                    ch,
                    AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                        reply_code: 312,
                        reply_text: "NO_ROUTE".into(),
                        exchange: super::properties::short(&m.exchange),
                        routing_key: super::properties::short(&m.routing_key),
                    })),
                );
                let props = super::properties::properties_out(&m.properties);
                let fm = self.frame_max();
                self.enc.content(&mut self.out, ch, props, &m.body, fm);
            }
            PublishOutcome::Nack { seq, error } => {
                tracing::debug!(channel = ch, seq, %error, "publish nacked");
                self.method(
                    ch,
                    AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                        delivery_tag: seq,
                        multiple: false,
                        requeue: false,
                    })),
                );
            }
            PublishOutcome::Error(e) => {
                tracing::warn!(channel = ch, error = %e, "publish refused");
            }
            PublishOutcome::Confirm { seq } => self.method(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                    delivery_tag: seq,
                    multiple: true,
                })),
            ),
        }
    }
}

/// One publish as a batch item for exchange `x`.
fn outbound(x: &ExchangeHandle, seq: u64, c: PublishCommand) -> Outbound {
    Outbound {
        seq,
        mandatory: c.publish.mandatory,
        message: Arc::new(Message {
            exchange: x.name_arc().clone(),
            routing_key: String::from(c.publish.routing_key),
            properties: shared_properties(&c.properties),
            body: c.body,
        }),
    }
}

/// A publish's properties as actormq's, the one shared empty set when none is set.
fn shared_properties(p: &Option<Box<AMQPProperties>>) -> Arc<Properties> {
    match p {
        None => Properties::shared_empty(),
        Some(p) => Properties::shared(Some(properties_in(p))),
    }
}
