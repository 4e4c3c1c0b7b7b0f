//! Consumers on any node: the frames of a *consume session*, the connection a node
//! that does not lead a quorum queue's group opens to the node that does, so that its
//! clients' consumers and gets are served there (as RabbitMQ serves a consumer on
//! any node from the queue's leader).
//!
//! A session is one connection on the cluster port, opened with `Rpc::ConsumeSession`
//! and answered once; the connection then
//! carries [`Up`] frames (follower to leader) and [`Down`] frames (leader to follower)
//! in both directions at once, with the cluster protocol's framing. One session per
//! queue and owner (a client's channel or connection) on the follower: on the leader
//! it is one owner, so settlements name its deliveries exactly as a local channel's
//! would, and its end (the follower's owner gone, the connection broken) gives back
//! what it held, redelivered marked.
//!
//! Flow control on every hop: a consumer's [`Up::Consume`] carries the credit the
//! follower's client can take (its transport window), [`Up::Credit`] adds to it as
//! the client writes deliveries out, and the leader pulls from its queue only while
//! credit is left; the leader's queue applies the consumer's prefetch as for a local
//! consumer. Nothing is buffered without a bound on either side.

use super::group::StoredMessage;
use super::wire::GroupId;
use crate::cluster::NodeId;
use crate::error::BrokerError;
use serde::{Deserialize, Serialize};

/// The consumer argument the leader's side of a session sets on the consumers it
/// makes: such a consumer is refused (never forwarded again) by a node that does not
/// lead the group, so a session never chains through a second node.
pub const FORWARDED_ARG: &str = "x-actormq-forwarded";

/// The value of [`FORWARDED_ARG`]: the follower's node and its id of the consumer
/// (`"node:id"`), or `true` when the follower did not say (0).
pub fn origin_arg(node: NodeId, local: u64) -> crate::message::FieldValue {
    match local {
        0 => crate::message::FieldValue::Bool(true),
        id => format!("{node}:{id}").into(),
    }
}

/// The follower's node and its id of a consumer a session made, from the value of
/// its [`FORWARDED_ARG`] (`None` when not said).
pub fn origin_of(value: &crate::message::FieldValue) -> Option<(NodeId, u64)> {
    let (node, id) = value.as_str()?.split_once(':')?;
    Some((node.parse().ok()?, id.parse().ok()?))
}

/// The consumer argument the leader's side of a session sets on a consumer whose
/// follower's client still holds deliveries of an earlier leader's session: how many
/// (an integer). The leader's queue counts them against the consumer's prefetch until
/// the follower says they were settled ([`Up::Released`]), so that after a leader
/// change the client never holds more than its prefetch.
pub const HELD_ARG: &str = "x-actormq-held";

/// The count of [`HELD_ARG`] in a consumer's `arguments` (0 when absent or not a
/// non-negative integer).
pub fn held_of(arguments: &crate::message::FieldTable) -> usize {
    match arguments.get(HELD_ARG) {
        Some(crate::message::FieldValue::Int(n)) => usize::try_from(*n).unwrap_or(0),
        _ => 0,
    }
}

/// How often a follower says it is there.
pub const ALIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// How long the leader keeps a session that says nothing (a frozen or cut-off
/// follower): what it holds is then given back, as RabbitMQ does for a consumer
/// whose node stops answering.
pub const SILENT_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Opens a session: the queue, by its group and name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Open {
    /// The queue's group (the leader checks that its member leads it).
    pub group: GroupId,
    /// The virtual host.
    pub vhost: String,
    /// The queue.
    pub queue: String,
    /// The node that opens it (logs).
    pub from: NodeId,
    /// A classic queue (no group): the node asked checks that it is the queue's home
    /// instead of its group's leader.
    #[serde(default)]
    pub classic: bool,
}

/// Why a session was not opened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Refused {
    /// The node asked does not lead the group: the leader it knows, if any.
    NotLeader(Option<NodeId>),
    /// Anything else (the queue is unknown there, for instance).
    Failed(BrokerError),
}

/// A consumer's options as the leader needs them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    /// The tag the follower gave it (unique within the session).
    pub tag: String,
    /// Unacked deliveries at most (0: unlimited).
    pub prefetch: u32,
    /// Deliveries count as acked when sent. A follower asks for its auto-ack
    /// consumers with acks, and acks each delivery once its client wrote it out
    /// (`session_follower`), so nothing in flight is lost.
    pub auto_ack: bool,
    /// Refuse other consumers while it is attached.
    pub exclusive: bool,
    /// The follower's own id of the consumer (its queue actor's): the leader registers
    /// the consumer it makes with it and the follower's node id, so that a member can
    /// tell which follower's consumer is the single active one (the management API on
    /// the follower). 0 from a follower that predates it: unknown.
    #[serde(default)]
    pub local: u64,
    /// The client's consumer arguments (`x-priority`, a stream's `x-stream-offset`,
    /// `x-stream-consumer-name`, `x-single-active-consumer`, ...), so that the leader's
    /// queue serves the consumer exactly as it serves a local one. The leader sets its
    /// own [`FORWARDED_ARG`] and [`HELD_ARG`] over whatever these say.
    #[serde(default)]
    pub arguments: crate::message::FieldTable,
}

/// How deliveries are settled (the broker's `Settlement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum How {
    /// Done with.
    Ack,
    /// Back to its place, marked redelivered.
    Requeue,
    /// Dropped (dead-lettered where configured).
    Discard,
    /// Never written to the follower's client (its consumer was cancelled, or its
    /// asker went, before it got there): back to its place as if not delivered, its
    /// delivery count as before (not a delivery attempt for `x-delivery-limit`).
    Unsent,
}

/// From the follower to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Up {
    /// Attaches a consumer; `credit` deliveries may be sent to it now.
    Consume {
        /// Its options.
        spec: Spec,
        /// Deliveries the follower can take now.
        credit: u32,
        /// Deliveries of an earlier session (an earlier leader's) that its client
        /// still holds: counted against its prefetch until [`Up::Released`].
        #[serde(default)]
        held: u32,
    },
    /// The client of consumer `tag` settled `n` of the deliveries it held from an
    /// earlier session (counted by [`Up::Consume`]'s `held`): they settle nothing at
    /// the leader (its takeover returned them) but free as many prefetch slots.
    Released {
        /// The consumer.
        tag: String,
        /// How many.
        n: u32,
    },
    /// More deliveries the consumer `tag` can take.
    Credit {
        /// The consumer.
        tag: String,
        /// How many more.
        amount: u32,
    },
    /// Detaches consumer `tag`; its unacked deliveries stay with the session.
    Cancel {
        /// The consumer.
        tag: String,
    },
    /// Settles deliveries of this session, by the leader's ids.
    Settle {
        /// The leader's delivery ids.
        ids: Vec<u64>,
        /// What becomes of them.
        how: How,
    },
    /// The owner's prefetch changed (`basic.qos` after the consume): every consumer
    /// of the session takes it.
    Prefetch {
        /// Unacked deliveries at most (0: unlimited).
        prefetch: u32,
    },
    /// The follower is there (sent every few seconds): a session silent for
    /// [`SILENT_LIMIT`] is closed by the leader, and what it held comes back.
    Alive,
    /// Pulls one message (`basic.get`), answered by [`Down::Got`] with `req`.
    Get {
        /// The request's number.
        req: u64,
        /// Count it acked at once (a follower asks with an ack, and acks an auto-ack
        /// get once its answer is handed over).
        auto_ack: bool,
    },
}

/// One delivery as the leader made it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireDelivery {
    /// The leader's id of the delivery (what settlements name).
    pub id: u64,
    /// Delivered before.
    pub redelivered: bool,
    /// Deliveries of the message so far, this one included.
    pub delivery_count: u32,
    /// The message (with its `x-delivery-count` header when redelivered).
    pub message: StoredMessage,
}

/// From the leader to the follower.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Down {
    /// The consume of `tag` is attached to the leader's queue: a stream consumer's
    /// start (`x-stream-offset = next`, ...) is fixed from now on. A classic stand-in
    /// answers its client's consume of a stream only then, as a local consume is
    /// answered once attached.
    Attached {
        /// The consumer.
        tag: String,
    },
    /// The consume of `tag` was refused (an exclusive consumer elsewhere, ...).
    Refused {
        /// The consumer.
        tag: String,
        /// Why.
        error: BrokerError,
    },
    /// Deliveries to consumer `tag`, in queue order.
    Deliver {
        /// The consumer.
        tag: String,
        /// The deliveries.
        deliveries: Vec<WireDelivery>,
    },
    /// The leader's queue cancelled consumer `tag` (it stopped leading, or the queue
    /// was deleted): the follower opens the session again wherever the group is led.
    Cancelled {
        /// The consumer.
        tag: String,
        /// Why.
        reason: String,
    },
    /// The answer to [`Up::Get`]: a delivery and the count left, none, or why not.
    Got {
        /// The request's number.
        req: u64,
        /// The answer (boxed: the other frames are small).
        result: Box<Result<Option<(WireDelivery, u64)>, BrokerError>>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::rpc::{read_frame, write_frame};

    #[tokio::test]
    async fn session_frames_round_trip_through_the_cluster_framing() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let message = StoredMessage::from(&crate::message::Message::new("x", "k", "body"));
        let down = Down::Deliver {
            tag: "c1".into(),
            deliveries: vec![WireDelivery {
                id: 7,
                redelivered: true,
                delivery_count: 2,
                message: message.clone(),
            }],
        };
        write_frame(&mut a, 3, &down).await.unwrap();
        let (id, got): (u64, Down) = read_frame(&mut b).await.unwrap().unwrap();
        assert_eq!(id, 3);
        match got {
            Down::Deliver { tag, deliveries } => {
                assert_eq!(tag, "c1");
                assert_eq!(deliveries.len(), 1);
                assert_eq!(deliveries[0].id, 7);
                assert!(deliveries[0].redelivered);
                assert_eq!(deliveries[0].delivery_count, 2);
                assert_eq!(deliveries[0].message, message);
            }
            other => panic!("{other:?}"),
        }
        let up = Up::Settle {
            ids: vec![1, 2],
            how: How::Requeue,
        };
        write_frame(&mut b, 4, &up).await.unwrap();
        let (_, got): (u64, Up) = read_frame(&mut a).await.unwrap().unwrap();
        assert!(matches!(got, Up::Settle { ids, how: How::Requeue } if ids == [1, 2]));
    }

    /// A consumer's arguments reach the leader as the client gave them, typed AMQP
    /// values included (an `x-stream-offset` timestamp), and the leader's `Attached`
    /// names the consumer.
    #[tokio::test]
    async fn a_consume_carries_the_client_s_arguments_and_is_answered_attached() {
        use crate::message::{FieldTable, FieldValue, TypedValue};
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let arguments: FieldTable = [
            ("x-priority".to_string(), FieldValue::Int(-4)),
            (
                "x-stream-offset".to_string(),
                FieldValue::Typed(TypedValue::Timestamp(1_700_000_000)),
            ),
            ("x-stream-consumer-name".to_string(), "app".into()),
        ]
        .into();
        let up = Up::Consume {
            spec: Spec {
                tag: "c1".into(),
                prefetch: 10,
                auto_ack: false,
                exclusive: false,
                local: 3,
                arguments: arguments.clone(),
            },
            credit: 100,
            held: 0,
        };
        write_frame(&mut a, 1, &up).await.unwrap();
        let (_, got): (u64, Up) = read_frame(&mut b).await.unwrap().unwrap();
        match got {
            Up::Consume { spec, .. } => assert_eq!(spec.arguments, arguments),
            other => panic!("{other:?}"),
        }
        write_frame(&mut b, 2, &Down::Attached { tag: "c1".into() })
            .await
            .unwrap();
        let (_, got): (u64, Down) = read_frame(&mut a).await.unwrap().unwrap();
        assert!(matches!(got, Down::Attached { tag } if tag == "c1"));
    }
}
