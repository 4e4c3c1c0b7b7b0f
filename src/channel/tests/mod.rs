//! The channel core's rules, each kept once: what the client is told about its
//! publishes (here, pure), and what reaches the queues: settlements before later
//! publishes, the release of exactly this channel's deliveries, deliveries of consumers
//! cancelled or still starting ([`queues`], against a broker).

mod queues;

use super::*;
use crate::broker::messages::Routed;
use crate::error::ErrorCode;
use crate::message::Message;
use std::sync::Arc;

fn item(seq: u64, mandatory: bool) -> Outbound {
    Outbound {
        seq,
        mandatory,
        message: Arc::new(Message::new("x", "k", "b")),
    }
}

fn full() -> BrokerError {
    BrokerError::new(ErrorCode::ResourceError, "full")
}

#[test]
fn outcomes_map_to_returns_nacks_and_one_confirm() {
    let mut ch = Channel::new(OwnerId(1));
    ch.select_confirms();
    let items: Vec<Outbound> = (0..3).map(|i| item(ch.next_seq(), i == 1)).collect();
    let out = ch.on_published(
        &items,
        Ok(vec![Routed::to(1), Routed::to(0), Routed::refused(full())]),
    );
    assert_eq!(
        out,
        vec![
            PublishOutcome::Return { index: 1 },
            PublishOutcome::Nack {
                seq: 3,
                error: full()
            },
            PublishOutcome::Confirm { seq: 2 },
        ]
    );
}

#[test]
fn without_confirms_a_full_queue_is_silent_and_sequence_is_zero() {
    let mut ch = Channel::new(OwnerId(1));
    let items = vec![item(ch.next_seq(), false)];
    assert_eq!(items[0].seq, 0);
    let out = ch.on_published(&items, Ok(vec![Routed::refused(full())]));
    assert!(out.is_empty());
    let unreadable = BrokerError::precondition("bad expiration");
    let out = ch.on_published(&items, Ok(vec![Routed::refused(unreadable.clone())]));
    assert_eq!(out, vec![PublishOutcome::Error(unreadable)]);
}

#[test]
fn a_failed_batch_nacks_each_confirmed_publish_and_reports_the_others() {
    let mut ch = Channel::new(OwnerId(1));
    assert!(ch.register_seq(5));
    let items = vec![item(5, false), item(0, true)];
    // Even a RESOURCE_ERROR is reported when the whole batch failed.
    let out = ch.on_published(&items, Err(full()));
    assert_eq!(
        out,
        vec![
            PublishOutcome::Nack {
                seq: 5,
                error: full()
            },
            PublishOutcome::Error(full()),
        ]
    );
}

#[test]
fn a_confirm_waits_for_every_earlier_publish() {
    let mut ch = Channel::new(OwnerId(1));
    ch.select_confirms();
    let first = vec![item(ch.next_seq(), false)];
    let second = vec![item(ch.next_seq(), false), item(ch.next_seq(), false)];
    // The later batch answers first: nothing is confirmed before seq 1 is.
    assert!(ch
        .on_published(&second, Ok(vec![Routed::to(1), Routed::to(1)]))
        .is_empty());
    assert_eq!(
        ch.on_published(&first, Ok(vec![Routed::to(1)])),
        vec![PublishOutcome::Confirm { seq: 3 }]
    );
}

#[test]
fn client_chosen_seqs_must_increase_and_a_refused_one_is_nacked_in_order() {
    let mut ch = Channel::new(OwnerId(1));
    assert!(ch.register_seq(1));
    assert!(!ch.register_seq(1), "not increasing");
    assert!(ch.register_seq(4));
    let denied = BrokerError::access_refused("internal");
    // 4 is refused before routing while 1 is in flight: its nack comes at once, the
    // confirm of 1 when 1 is answered.
    assert_eq!(
        ch.refuse(4, denied.clone()),
        vec![PublishOutcome::Nack {
            seq: 4,
            error: denied
        }]
    );
    assert_eq!(
        ch.on_published(&[item(1, false)], Ok(vec![Routed::to(1)])),
        vec![PublishOutcome::Confirm { seq: 1 }]
    );
    assert!(
        ch.refuse(0, full()).is_empty(),
        "nothing to nack without a seq"
    );
}

#[test]
fn fates_follow_the_items() {
    let items = vec![item(0, true), item(0, false), item(0, true)];
    let got: Vec<Fate> = fates(
        &items,
        Ok(vec![Routed::to(0), Routed::to(0), Routed::refused(full())]),
    )
    .collect();
    assert_eq!(
        got,
        vec![
            Fate::Taken {
                queues: 0,
                returned: true
            },
            Fate::Taken {
                queues: 0,
                returned: false
            },
            Fate::Refused(full()),
        ]
    );
    assert_eq!(
        fates(&items, Err(full())).count(),
        3,
        "a failed batch refuses every message"
    );
}

#[test]
fn settling_an_unknown_tag_is_precondition_failed() {
    let mut ch = Channel::new(OwnerId(1));
    let e = ch.settle(7, false, Settlement::Ack).unwrap_err();
    assert_eq!(e.code(), ErrorCode::PreconditionFailed);
}
