//! Direct reply-to (`amq.rabbitmq.reply-to`), as RabbitMQ serves it: an RPC client
//! consumes (no-ack) from the pseudo-queue `amq.rabbitmq.reply-to` and publishes its
//! requests with that name as `reply_to`; the broker rewrites it to
//! `amq.rabbitmq.reply-to.<token>`, and a reply published to the default exchange with
//! that routing key goes straight to the consumer, with no queue in between.
//!
//! The token names a connection's channel; the table of tokens is shared by the AMQP
//! connections of one front end.

use crate::message::Message;
use actix::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The pseudo-queue's name.
pub const REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// The prefix of a rewritten `reply_to` (and of a reply's routing key).
pub const REPLY_TO_PREFIX: &str = "amq.rabbitmq.reply-to.";

/// A reply for the consumer of a direct reply-to channel.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct DirectReply {
    /// The channel of the consumer.
    pub channel: u16,
    /// The token the reply was addressed to (the channel may have been reused since).
    pub token: String,
    /// The reply.
    pub message: Arc<Message>,
}

/// The live direct reply-to consumers: token → connection.
#[derive(Default)]
pub struct DirectReplies {
    by_token: Mutex<HashMap<String, (Recipient<DirectReply>, u16)>>,
}

impl DirectReplies {
    /// Registers the consumer of channel `channel` under `token`.
    pub fn add(&self, token: &str, to: Recipient<DirectReply>, channel: u16) {
        self.lock().insert(token.to_string(), (to, channel));
    }

    /// Forgets `token` (the channel closed or cancelled its consumer).
    pub fn remove(&self, token: &str) {
        self.lock().remove(token);
    }

    /// Sends `message` to the consumer of `token`; false when there is none.
    pub fn send(&self, token: &str, message: Arc<Message>) -> bool {
        let target = self.lock().get(token).cloned();
        match target {
            Some((to, channel)) => {
                // do_send: a reply answers one request the consumer made; the
                // requester's own request rate bounds them.
                to.do_send(DirectReply {
                    channel,
                    token: token.to_string(),
                    message,
                });
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Recipient<DirectReply>, u16)>> {
        // Only plain inserts and removes: never left inconsistent.
        self.by_token.lock().unwrap_or_else(|p| p.into_inner())
    }
}
