//! StreamState without actix: reading does not remove, credit bounds deliveries, acks
//! of named consumers advance their stored offset, retention moves consumers on.

use super::*;
use crate::message::{FieldValue, Message};

fn state(segment: u64, max_bytes: Option<u64>) -> StreamState<()> {
    StreamState::new(StreamInit {
        log: StreamLog::memory(segment),
        config: StreamConfig {
            max_bytes,
            max_age_ms: None,
            max_segment_bytes: segment,
        },
        partition: None,
    })
}

fn publish(s: &mut StreamState<()>, n: usize) {
    let ms = (0..n)
        .map(|i| Arc::new(Message::new("", "s", format!("m{i}"))))
        .collect();
    s.append(ms).wait().unwrap();
}

fn consumer(owner: u64, start: Option<StartAt>, name: Option<&str>) -> NewStreamConsumer<()> {
    NewStreamConsumer {
        tag: Arc::from(format!("c{owner}").as_str()),
        owner: OwnerId(owner),
        handle: (),
        prefetch: 3,
        window: 100,
        start,
        name: name.map(str::to_string),
    }
}

fn offsets(d: &[Delivery]) -> Vec<i64> {
    d.iter()
        .map(|d| match d.message.header("x-stream-offset") {
            Some(FieldValue::Int(o)) => *o,
            other => panic!("no offset header: {other:?}"),
        })
        .collect()
}

#[test]
fn every_consumer_reads_everything_within_its_prefetch() {
    let mut s = state(1 << 20, None);
    publish(&mut s, 5);
    s.add_consumer(consumer(1, Some(StartAt::First), None))
        .unwrap();
    s.add_consumer(consumer(2, Some(StartAt::Offset(3)), None))
        .unwrap();
    s.add_consumer(consumer(3, None, None)).unwrap();
    let out = s.dispatch(100);
    assert_eq!(out.len(), 2, "the `next` consumer has nothing yet");
    assert_eq!(offsets(&out[0].1), vec![0, 1, 2]);
    assert_eq!(offsets(&out[1].1), vec![3, 4]);
    // Prefetch 3 reached: nothing more until an ack.
    assert!(s.dispatch(100).iter().all(|(i, _)| *i != 0));
    let ids: Vec<u64> = out[0].1.iter().map(|d| d.id).collect();
    assert!(s.settle(OwnerId(1), &ids[..1], Settlement::Ack).is_empty());
    s.return_credit(1, 3);
    let more = s.dispatch(100);
    assert_eq!(offsets(&more[0].1), vec![3]);
    assert_eq!(s.log().len(), 5, "reading removed nothing");
    publish(&mut s, 1);
    let fresh = s.dispatch(100);
    assert!(fresh.iter().any(|(i, d)| *i == 2 && offsets(d) == vec![5]));
}

#[test]
fn a_named_consumer_resumes_after_its_highest_ack() {
    let mut s = state(1 << 20, None);
    publish(&mut s, 10);
    s.add_consumer(consumer(1, Some(StartAt::First), Some("app")))
        .unwrap();
    let out = s.dispatch(100);
    let ids: Vec<u64> = out[0].1.iter().map(|d| d.id).collect();
    s.settle(OwnerId(1), &ids[1..2], Settlement::Ack);
    s.settle(OwnerId(1), &ids[2..3], Settlement::Requeue);
    assert_eq!(s.stored_offset("app"), Some(2));
    s.release(OwnerId(1));
    let (_, start) = s.add_consumer(consumer(2, None, Some("app"))).unwrap();
    assert_eq!(start, 2);
    let (_, start) = s
        .add_consumer(consumer(3, Some(StartAt::First), Some("app")))
        .unwrap();
    assert_eq!(start, 0, "an explicit offset wins");
}

#[test]
fn retention_moves_a_consumer_behind_the_first_offset_on() {
    let mut s = state(64, Some(200));
    s.add_consumer(consumer(1, Some(StartAt::First), None))
        .unwrap();
    for _ in 0..20 {
        publish(&mut s, 1);
    }
    let first = s.log().first_offset();
    assert!(first > 0);
    let out = s.dispatch(100);
    assert_eq!(offsets(&out[0].1)[0], first as i64);
}
