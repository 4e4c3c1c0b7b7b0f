//! Quorum queues (`x-queue-type = "quorum"`) as RabbitMQ 3.x defines them, on every
//! broker, a single node included.
//!
//! A quorum queue runs in the classic queue actor with three differences, because its
//! promise is data safety rather than speed:
//! - it is always durable, never exclusive nor auto-delete ([`validate`], with
//!   RabbitMQ's wording), and refuses the arguments RabbitMQ's quorum queues refuse
//!   (`x-max-priority`, `x-queue-mode`, `x-overflow = reject-publish-dlx`) and
//!   actormq's own ones that have no meaning for it (`x-delivery-delay`,
//!   `x-dedup-window`);
//! - every message is stored, whatever its `delivery_mode` (the durable side keeps
//!   them all: [`crate::broker::queue::durable::Durable::keeping_all`]), so a confirm
//!   always means "on disk";
//! - a redelivery carries the `x-delivery-count` header (how many times the message
//!   was delivered before), which consumers use to spot poison messages before
//!   `x-delivery-limit` dead-letters (or drops) them ([`mark_redelivery`]).
//!
//! In a cluster a quorum queue is its own Raft group instead (the queue actor's
//! replicated side, `actor/replica.rs`, on [`crate::cluster::quorum`]): everything
//! above but the storage holds there too, and docs/CLUSTERING.md has the design.

use crate::broker::messages::Delivery;
use crate::broker::queue::QueueSpec;
use crate::error::BrokerError;
use crate::message::{FieldTable, FieldValue};
use std::sync::Arc;

/// The header a redelivered message of a quorum queue carries (RabbitMQ's name).
pub const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

/// Declare arguments a quorum queue refuses: RabbitMQ's list, then actormq's own
/// arguments that have no quorum meaning (a delay or a dedup window is not replicated
/// state, so a failover would silently lose it).
const REFUSED: &[&str] = &[
    "x-max-priority",
    "x-queue-mode",
    "x-delivery-delay",
    "x-dedup-window",
];

/// True when `args` declare a quorum queue.
pub fn is_quorum_args(args: &FieldTable) -> bool {
    args.get("x-queue-type").and_then(FieldValue::as_str) == Some("quorum")
}

/// True when `spec` declares a quorum queue.
pub fn is_quorum(spec: &QueueSpec) -> bool {
    is_quorum_args(&spec.arguments)
}

/// Checks a new quorum queue of `vhost`: its properties (durable, not exclusive, not
/// auto-delete) and arguments, with RabbitMQ's PRECONDITION_FAILED texts (e.g.
/// `invalid property 'non-durable' for queue 'q' in vhost '/'`).
pub fn validate(vhost: &str, spec: &QueueSpec) -> Result<(), BrokerError> {
    let resource = format!("queue '{}' in vhost '{vhost}'", spec.name);
    let property = |what: &str| {
        Err(BrokerError::precondition(format!(
            "invalid property '{what}' for {resource}"
        )))
    };
    if !spec.durable {
        return property("non-durable");
    }
    if spec.exclusive {
        return property("exclusive-owner");
    }
    if spec.auto_delete {
        return property("auto-delete");
    }
    if let Some(key) = REFUSED.iter().find(|k| spec.arguments.contains_key(**k)) {
        return Err(BrokerError::precondition(format!(
            "invalid arg '{key}' for {resource}"
        )));
    }
    if spec
        .arguments
        .get("x-overflow")
        .and_then(FieldValue::as_str)
        == Some("reject-publish-dlx")
    {
        return Err(BrokerError::precondition(format!(
            "invalid arg 'x-overflow' with value 'reject-publish-dlx' for {resource}"
        )));
    }
    Ok(())
}

/// True when `args` ask for at-least-once dead-lettering and get it: RabbitMQ's
/// condition, `x-dead-letter-strategy = at-least-once` with `x-overflow =
/// reject-publish` (a queue that dropped its head could not keep its dead).
pub fn at_least_once(args: &FieldTable) -> bool {
    let arg = |k: &str| args.get(k).and_then(FieldValue::as_str);
    arg("x-dead-letter-strategy") == Some("at-least-once")
        && arg("x-overflow") == Some("reject-publish")
}

/// What a new quorum queue's declare logs about its dead-lettering, when it is not
/// what the arguments seem to ask for: at-least-once without reject-publish falls back
/// to at-most-once (as in RabbitMQ), and so does a quorum queue on a single broker
/// (no `[cluster]`: the classic queue's dead-lettering). `clustered`: the queue is
/// replicated.
pub fn dead_letter_fallback(args: &FieldTable, clustered: bool) -> Option<&'static str> {
    let asked = args
        .get("x-dead-letter-strategy")
        .and_then(FieldValue::as_str)
        == Some("at-least-once");
    if !asked {
        None
    } else if !at_least_once(args) {
        Some("x-dead-letter-strategy 'at-least-once' needs x-overflow 'reject-publish': this queue dead-letters at most once")
    } else if !clustered {
        Some("x-dead-letter-strategy 'at-least-once' applies to quorum queues in a cluster: on a single broker this queue dead-letters at most once")
    } else {
        None
    }
}

/// The number of members a quorum queue asks for (`x-quorum-initial-group-size`, 3 by
/// default as in RabbitMQ), before it is capped by the cluster's size.
pub fn initial_group_size(args: &FieldTable) -> u64 {
    args.get("x-quorum-initial-group-size")
        .and_then(FieldValue::as_int)
        .and_then(|n| u64::try_from(n).ok())
        .filter(|n| *n > 0)
        .unwrap_or(3)
}

/// Adds `x-delivery-count` to a redelivery (a delivery that is not the message's
/// first): the count of earlier deliveries. The queue keeps its own copy unmarked, so
/// the header never piles up and a dead-lettered message leaves as it came.
pub fn mark_redelivery(d: &mut Delivery) {
    if d.delivery_count <= 1 {
        return;
    }
    let earlier = i64::from(d.delivery_count - 1);
    let marked = (*d.message)
        .clone()
        .with_header(DELIVERY_COUNT_HEADER, FieldValue::Int(earlier));
    d.message = Arc::new(marked);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::message::Message;

    fn quorum(name: &str) -> QueueSpec {
        let mut s = QueueSpec::new(name);
        s.durable = true;
        s.arguments.insert("x-queue-type".into(), "quorum".into());
        s
    }

    #[test]
    fn properties_are_refused_with_rabbitmq_wording() {
        validate("/", &quorum("q")).unwrap();
        type Tweak = fn(&mut QueueSpec);
        let cases: [(&str, Tweak); 3] = [
            ("non-durable", |s| s.durable = false),
            ("exclusive-owner", |s| s.exclusive = true),
            ("auto-delete", |s| s.auto_delete = true),
        ];
        for (what, tweak) in cases {
            let mut s = quorum("q");
            tweak(&mut s);
            let e = validate("v1", &s).unwrap_err();
            assert_eq!(e.code(), ErrorCode::PreconditionFailed);
            assert_eq!(
                e.message(),
                format!("invalid property '{what}' for queue 'q' in vhost 'v1'")
            );
        }
    }

    #[test]
    fn unsupported_arguments_are_refused() {
        for key in REFUSED {
            let mut s = quorum("q");
            s.arguments.insert((*key).into(), FieldValue::Int(5));
            let e = validate("/", &s).unwrap_err();
            assert_eq!(
                e.message(),
                format!("invalid arg '{key}' for queue 'q' in vhost '/'")
            );
        }
        let mut s = quorum("q");
        s.arguments
            .insert("x-overflow".into(), "reject-publish-dlx".into());
        let e = validate("/", &s).unwrap_err();
        assert!(
            e.message().contains("with value 'reject-publish-dlx'"),
            "{e}"
        );
        s.arguments
            .insert("x-overflow".into(), "reject-publish".into());
        s.arguments
            .insert("x-dead-letter-strategy".into(), "at-least-once".into());
        validate("/", &s).unwrap();
        assert!(at_least_once(&s.arguments));
        assert_eq!(dead_letter_fallback(&s.arguments, true), None);
        assert!(dead_letter_fallback(&s.arguments, false)
            .unwrap()
            .contains("single broker"));
        s.arguments.insert("x-overflow".into(), "drop-head".into());
        assert!(
            !at_least_once(&s.arguments),
            "without reject-publish: at most once"
        );
        assert!(dead_letter_fallback(&s.arguments, true)
            .unwrap()
            .contains("needs x-overflow 'reject-publish'"));
        s.arguments
            .insert("x-overflow".into(), "reject-publish".into());
        s.arguments
            .insert("x-dead-letter-strategy".into(), "at-most-once".into());
        validate("/", &s).unwrap();
        assert!(!at_least_once(&s.arguments));
        assert_eq!(dead_letter_fallback(&s.arguments, true), None);
        for (k, v) in [
            ("x-delivery-limit", FieldValue::Int(3)),
            ("x-message-ttl", FieldValue::Int(1000)),
            ("x-expires", FieldValue::Int(1000)),
            ("x-max-length", FieldValue::Int(10)),
            ("x-max-length-bytes", FieldValue::Int(1000)),
            ("x-dead-letter-exchange", "dlx".into()),
            ("x-single-active-consumer", true.into()),
            ("x-quorum-initial-group-size", FieldValue::Int(5)),
        ] {
            s.arguments.insert(k.into(), v);
        }
        validate("/", &s).unwrap();
        assert_eq!(initial_group_size(&s.arguments), 5);
        assert_eq!(initial_group_size(&FieldTable::new()), 3);
    }

    #[test]
    fn only_redeliveries_carry_the_delivery_count() {
        let m = Arc::new(Message::new("", "q", "b").with_header("h", "v"));
        let mut first = Delivery {
            id: 1,
            redelivered: false,
            delivery_count: 1,
            message: m.clone(),
            stored: None,
            run: None,
        };
        mark_redelivery(&mut first);
        assert!(
            Arc::ptr_eq(&first.message, &m),
            "a first delivery is untouched"
        );
        let mut third = Delivery {
            id: 2,
            redelivered: true,
            delivery_count: 3,
            message: m.clone(),
            stored: None,
            run: None,
        };
        mark_redelivery(&mut third);
        assert_eq!(
            third.message.header(DELIVERY_COUNT_HEADER),
            Some(&FieldValue::Int(2))
        );
        assert_eq!(third.message.header("h"), Some(&FieldValue::from("v")));
        assert_eq!(m.header(DELIVERY_COUNT_HEADER), None, "the queue's copy");
    }
}
