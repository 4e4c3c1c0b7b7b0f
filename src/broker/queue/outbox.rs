//! Dead letters on their way out of a queue: rewritten with their `x-death` header
//! ([`super::dead_letter`]) and republished to the queue's dead-letter exchange, in
//! batches, with a bounded number of batches in flight.
//!
//! The exchange is found in the virtual host's [`ExchangeDirectory`], synchronously, and
//! each batch is sent with `do_send` and a reply channel that the queue actor awaits off
//! its own handler (it never waits *in* a handler): the queue keeps serving while a
//! dead-letter queue downstream is slow, and since the queue never asks the registry
//! anything, no cycle of waits can form. Dead letters stay accounted to the queue
//! (memory gauge) until the exchange has answered for them. As in RabbitMQ,
//! dead-lettering is at most once: when the exchange does not exist, the messages are
//! dropped (and logged).
//!
//! A replicated quorum queue with at-least-once dead-lettering sends through
//! [`DeadLetterOutbox::publish_confirmed`] instead: the same rewrite and exchange,
//! one batch with its answer handed back, nothing dropped here (its caller keeps the
//! messages until the answer confirms them, and bounds what it has in flight).

use super::dead_letter::{dead_letter, Reason, Target};
use super::state::Dead;
use crate::broker::exchange::ExchangeHandle;
use crate::broker::messages::{Publish, Routed};
use crate::broker::registry::ExchangeDirectory;
use crate::error::BrokerError;
use crate::message::Message;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Messages per dead-letter batch.
const BATCH: usize = 256;

/// Dead-letter batches one queue may have in flight.
const WINDOW: usize = 8;

/// The answer to one dead-letter batch.
pub type Answer = oneshot::Receiver<Result<Vec<Routed>, BrokerError>>;

/// The dead letters of one queue not yet taken by the dead-letter exchange.
pub struct DeadLetterOutbox {
    /// The queue's name (written into `x-death`).
    queue: Arc<str>,
    /// Where dead letters go.
    target: Target,
    /// The virtual host's exchanges, to find the dead-letter exchange.
    directory: ExchangeDirectory,
    /// The dead-letter exchange as last looked up.
    exchange: Option<ExchangeHandle>,
    /// Rewritten dead letters waiting for room in the window.
    waiting: VecDeque<Arc<Message>>,
    /// Bytes of `waiting`.
    waiting_bytes: usize,
    /// Batches sent and not yet answered.
    inflight: usize,
    /// Bytes of those batches.
    inflight_bytes: usize,
    /// The missing exchange was logged; not again until it has been found.
    warned: bool,
}

impl DeadLetterOutbox {
    /// An empty outbox for `queue`, dead-lettering to `target`.
    pub fn new(queue: Arc<str>, target: Target, directory: ExchangeDirectory) -> Self {
        DeadLetterOutbox {
            queue,
            target,
            directory,
            exchange: None,
            waiting: VecDeque::new(),
            waiting_bytes: 0,
            inflight: 0,
            inflight_bytes: 0,
            warned: false,
        }
    }

    /// Dead-letters to `target` from now on (a policy changed the queue's dead-letter
    /// exchange); those already rewritten keep their `x-death`.
    pub fn retarget(&mut self, target: Target) {
        self.target = target;
        self.exchange = None;
        self.warned = false;
    }

    /// Bytes of dead letters held here (waiting or in flight).
    pub fn held_bytes(&self) -> usize {
        self.waiting_bytes + self.inflight_bytes
    }

    /// Rewrites `dead` as dead letters (at `now_secs`, Unix time) and queues them.
    pub fn add(&mut self, dead: Vec<Dead>, now_secs: i64) {
        for d in dead {
            let m = dead_letter(&d.message, &self.queue, d.reason, &self.target, now_secs);
            self.waiting_bytes += m.accounted_size();
            self.waiting.push_back(Arc::new(m));
        }
    }

    fn exchange(&mut self) -> Option<ExchangeHandle> {
        if let Some(x) = self.exchange.as_ref().filter(|x| x.is_alive()) {
            return Some(x.clone());
        }
        self.exchange = self.directory.get(&self.target.exchange);
        self.exchange.clone()
    }

    /// Sends batches while the window has room; answers each batch's reply with its
    /// bytes, to hand back to [`done`](Self::done) once it resolves.
    pub fn send(&mut self) -> Vec<(Answer, usize)> {
        let mut sent = Vec::new();
        while self.inflight < WINDOW && !self.waiting.is_empty() {
            let Some(x) = self.exchange() else {
                if !self.warned {
                    self.warned = true;
                    tracing::warn!(
                        queue = %self.queue,
                        exchange = %self.target.exchange,
                        dropped = self.waiting.len(),
                        "the dead-letter exchange does not exist: dead letters are dropped until it does"
                    );
                }
                self.waiting.clear();
                self.waiting_bytes = 0;
                break;
            };
            self.warned = false;
            let n = self.waiting.len().min(BATCH);
            let batch: Vec<Arc<Message>> = self.waiting.drain(..n).collect();
            let bytes: usize = batch.iter().map(|m| m.accounted_size()).sum();
            self.waiting_bytes -= bytes;
            self.inflight += 1;
            self.inflight_bytes += bytes;
            let (tx, rx) = oneshot::channel();
            // do_send: the window (WINDOW batches) bounds what is in flight.
            x.publish_recipient().do_send(Publish {
                messages: batch,
                hops: Vec::new(),
                reply: Some(tx),
                dead_letter: true,
                publisher: None,
            });
            sent.push((rx, bytes));
        }
        sent
    }

    /// At-least-once: rewrites `dead` (each message, why it died, when in Unix
    /// seconds) as dead letters and publishes them to the dead-letter exchange as one
    /// batch, answered once every queue they route to has them (a quorum queue: once
    /// committed). Outside this outbox's window and bytes: the caller holds the
    /// messages until confirmed and bounds what it has in flight. `None`: the exchange
    /// does not exist (nothing sent; the caller retries later).
    pub fn publish_confirmed(&mut self, dead: &[(Arc<Message>, Reason, i64)]) -> Option<Answer> {
        let x = self.exchange()?;
        let messages = dead
            .iter()
            .map(|(m, why, secs)| Arc::new(dead_letter(m, &self.queue, *why, &self.target, *secs)))
            .collect();
        let (tx, rx) = oneshot::channel();
        // do_send: the caller's bound on dead letters in flight is the backpressure.
        x.publish_recipient().do_send(Publish {
            messages,
            hops: Vec::new(),
            reply: Some(tx),
            dead_letter: true,
            publisher: None,
        });
        Some(rx)
    }

    /// A batch of `bytes` was answered.
    pub fn done(&mut self, bytes: usize) {
        self.inflight -= 1;
        self.inflight_bytes -= bytes;
    }
}
