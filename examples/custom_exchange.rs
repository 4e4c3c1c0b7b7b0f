//! A consistent-hash exchange type, registered with a broker embedded in this program.
//!
//! Like RabbitMQ's `rabbitmq_consistent_hash_exchange` plugin: the binding key of each
//! queue binding is a weight (a positive integer, as a string); the exchange keeps a
//! ring on which each binding owns `weight × POINTS_PER_WEIGHT` points; a message goes to
//! the owner of the first point at or after the hash of its routing key. So the share of
//! messages a queue receives is roughly proportional to its weight, a routing key always
//! goes to the same queue while the bindings stay the same, and adding or removing a
//! queue moves only the keys on the arcs it gains or loses.
//!
//! The hash is written here (FNV-1a with a 64-bit finaliser) so that the ring is the same
//! on every platform, build and run.
//!
//! The second way to extend the broker is a whole actor standing in as an exchange:
//! [`CountingExchange`] counts what is published to it and sends every message to
//! everything bound to it. It chooses destinations only; the delivery itself (bound
//! exchanges, queue refusals turned into nacks, the publisher's answer) is the broker's
//! [`Dispatch`] helper, the same the built-in exchanges use.
//!
//! ```text
//! cargo run --example custom_exchange
//! ```

use actix::{Actor, ActorContext, Context, Handler};
use actormq::broker::exchange::{
    Binding, Destination, DestinationId, Dispatch, ExchangeHandle, ExchangeSpec, ExchangeType,
};
use actormq::broker::messages::{AddBinding, Publish, RemoveBinding, StopExchange};
use actormq::{Broker, BrokerError, ExchangeOptions, FieldTable, Message, QueueOptions};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The type name the exchange is registered under (`x-` like every non-AMQP type).
pub const TYPE_NAME: &str = "x-consistent-hash";

/// Ring points per unit of weight: enough for shares to follow the weights closely.
pub const POINTS_PER_WEIGHT: u32 = 160;

/// The largest weight a binding may carry (bounds the ring's size).
pub const MAX_WEIGHT: u32 = 1000;

/// The weight of a binding: its key, a positive integer no larger than [`MAX_WEIGHT`].
pub fn parse_weight(binding_key: &str) -> Result<u32, String> {
    match binding_key.trim().parse::<u32>() {
        Ok(w) if (1..=MAX_WEIGHT).contains(&w) => Ok(w),
        _ => Err(format!(
            "the binding key of a {TYPE_NAME} exchange is a weight, an integer from 1 to \
             {MAX_WEIGHT}; got {binding_key:?}"
        )),
    }
}

/// FNV-1a (64-bit) of `bytes`, then the MurmurHash3 finaliser: FNV-1a alone leaves
/// keys that differ in their last byte (`order-1`, `order-2`) close together on the ring.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Routes each message to one bound destination, chosen by hashing its routing key onto
/// a ring of the bindings' points.
#[derive(Default)]
pub struct ConsistentHash {
    /// Every point of every binding, sorted by position: (position, destination).
    ring: Vec<(u64, DestinationId)>,
}

impl ConsistentHash {
    /// The positions of a binding's points. The binding key is part of what is hashed,
    /// so two bindings of one destination (weights "1" and "2") get distinct points.
    fn points(binding: &Binding) -> impl Iterator<Item = u64> + '_ {
        let weight = parse_weight(&binding.routing_key).unwrap_or(0);
        (0..weight * POINTS_PER_WEIGHT).map(move |i| {
            let label = format!("{}/{}/{i}", binding.destination, binding.routing_key);
            hash(label.as_bytes())
        })
    }

    /// The destination owning the first point at or after `position`, wrapping around.
    pub fn owner(&self, position: u64) -> Option<DestinationId> {
        let i = self.ring.partition_point(|(p, _)| *p < position);
        self.ring
            .get(i)
            .or_else(|| self.ring.first())
            .map(|(_, d)| *d)
    }
}

impl ExchangeType for ConsistentHash {
    /// Refuses a binding whose key is not a weight: a typo would otherwise bind nothing.
    fn validate_binding(&self, routing_key: &str, _arguments: &FieldTable) -> Result<(), String> {
        parse_weight(routing_key).map(|_| ())
    }

    fn bind(&mut self, binding: &Binding) {
        self.ring
            .extend(Self::points(binding).map(|p| (p, binding.destination)));
        self.ring.sort_unstable();
    }

    fn unbind(&mut self, binding: &Binding) {
        for p in Self::points(binding) {
            if let Ok(i) = self.ring.binary_search(&(p, binding.destination)) {
                self.ring.remove(i);
            }
        }
    }

    fn route(&self, message: &Message, _bindings: &[Binding], out: &mut Vec<DestinationId>) {
        out.extend(self.owner(hash(message.routing_key.as_bytes())));
    }
}

/// The type name [`CountingExchange`] is registered under.
pub const COUNTING_TYPE: &str = "x-counting";

/// An actor standing in as an exchange: it counts the messages published to it and sends
/// each to every destination bound to it, whatever its routing key.
pub struct CountingExchange {
    /// The exchange's name.
    name: String,
    /// Messages seen, shared with whoever wants to read the count.
    seen: Arc<AtomicU64>,
    /// Each bound destination, once, with its number of bindings.
    bound: Vec<(Destination, u32)>,
    /// The destinations of `bound`, as [`Dispatch::to`] takes them.
    targets: Vec<Destination>,
}

impl CountingExchange {
    /// Starts one for the exchange `spec` on `arbiter` (the broker's
    /// [`exchange_actor`](actormq::BrokerBuilder::exchange_actor) factory), counting
    /// into `seen`.
    pub fn start(
        spec: ExchangeSpec,
        arbiter: &actix::ArbiterHandle,
        seen: Arc<AtomicU64>,
    ) -> ExchangeHandle {
        let name = spec.name.clone();
        let addr = CountingExchange::start_in_arbiter(arbiter, move |_| CountingExchange {
            name,
            seen,
            bound: Vec::new(),
            targets: Vec::new(),
        });
        ExchangeHandle::from_actor(spec, addr)
    }
}

impl Actor for CountingExchange {
    type Context = Context<Self>;
}

impl Handler<Publish> for CountingExchange {
    type Result = ();

    fn handle(&mut self, msg: Publish, _ctx: &mut Self::Context) {
        self.seen
            .fetch_add(msg.messages.len() as u64, Ordering::SeqCst);
        let mut dispatch = Dispatch::new(&self.name, msg);
        for i in 0..dispatch.len() {
            dispatch.to(i, &self.targets);
        }
        // Sent now, in handle(), so that batches reach each queue in publish order.
        dispatch.send(None);
    }
}

impl Handler<AddBinding> for CountingExchange {
    type Result = Result<(), BrokerError>;

    fn handle(&mut self, msg: AddBinding, _ctx: &mut Self::Context) -> Self::Result {
        let target = msg.destination.target();
        match self.bound.iter_mut().find(|(d, _)| d.target() == target) {
            // Refresh the handle: a queue deleted and declared again has a new actor.
            Some((d, n)) => {
                *d = msg.destination;
                *n += 1;
            }
            None => self.bound.push((msg.destination, 1)),
        }
        self.targets = self.bound.iter().map(|(d, _)| d.clone()).collect();
        Ok(())
    }
}

impl Handler<RemoveBinding> for CountingExchange {
    type Result = bool;

    fn handle(&mut self, msg: RemoveBinding, _ctx: &mut Self::Context) -> bool {
        let Some(pos) = self
            .bound
            .iter()
            .position(|(d, _)| d.target() == msg.target)
        else {
            return false;
        };
        self.bound[pos].1 -= 1;
        if self.bound[pos].1 == 0 {
            self.bound.remove(pos);
        }
        self.targets = self.bound.iter().map(|(d, _)| d.clone()).collect();
        true
    }
}

impl Handler<StopExchange> for CountingExchange {
    type Result = ();

    fn handle(&mut self, _msg: StopExchange, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// The counting exchange at work: one exchange, two queues bound to it.
async fn counting_demo(seen: Arc<AtomicU64>) -> Result<(), BrokerError> {
    let broker = Broker::builder()
        .exchange_actor(COUNTING_TYPE, move |spec, arbiter| {
            Ok(CountingExchange::start(spec, arbiter, seen.clone()))
        })
        .start()?;
    let session = broker.session();
    session
        .declare_exchange("audit", COUNTING_TYPE, &ExchangeOptions::new())
        .await?;
    for queue in ["audit-a", "audit-b"] {
        session.declare_queue(queue, &QueueOptions::new()).await?;
        session
            .bind_queue(queue, "audit", "", FieldTable::new())
            .await?;
    }
    for i in 0..10 {
        let confirm = session
            .publish(Message::new(
                "audit",
                &format!("k{i}"),
                format!("event {i}"),
            ))
            .await?;
        confirm.await?;
    }
    for queue in ["audit-a", "audit-b"] {
        let held = session.queue_stats(queue).await?.ready;
        println!("  {queue}: {held} messages");
    }
    broker.shutdown();
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BrokerError> {
    const MESSAGES: usize = 10_000;
    let broker = Broker::builder()
        .exchange_type(TYPE_NAME, || Box::new(ConsistentHash::default()))
        .start()?;
    let session = broker.session();
    session
        .declare_exchange("orders", TYPE_NAME, &ExchangeOptions::new())
        .await?;
    let shards = [("shard-a", 1), ("shard-b", 2), ("shard-c", 1)];
    for (queue, weight) in shards {
        session.declare_queue(queue, &QueueOptions::new()).await?;
        session
            .bind_queue(queue, "orders", &weight.to_string(), FieldTable::new())
            .await?;
    }
    // A weight that is not an integer is refused at bind time.
    if let Err(e) = session
        .bind_queue("shard-a", "orders", "heavy", FieldTable::new())
        .await
    {
        println!("bind with key \"heavy\" refused: {e}");
    }

    let mut confirms = Vec::with_capacity(MESSAGES);
    for start in (0..MESSAGES).step_by(100) {
        let batch = (start..start + 100)
            .map(|i| Message::new("orders", &format!("order-{i}"), format!("order {i}")))
            .collect();
        confirms.extend(session.publish_batch(batch, false).await?);
    }
    for c in confirms {
        c.await?;
    }

    let total_weight: u32 = shards.iter().map(|(_, w)| w).sum();
    println!("{MESSAGES} messages with distinct routing keys:");
    for (queue, weight) in shards {
        let held = session.queue_stats(queue).await?.ready;
        let share = 100.0 * held as f64 / MESSAGES as f64;
        let expected = 100.0 * f64::from(weight) / f64::from(total_weight);
        println!(
            "  {queue}  weight {weight}  {held:>5} messages  {share:5.1}% (weight share {expected:.1}%)  {}",
            "#".repeat((share / 2.0).round() as usize)
        );
    }
    broker.shutdown();

    let seen = Arc::new(AtomicU64::new(0));
    println!("a {COUNTING_TYPE} exchange actor bound to two queues:");
    counting_demo(seen.clone()).await?;
    println!("  it saw {} messages", seen.load(Ordering::SeqCst));
    Ok(())
}
