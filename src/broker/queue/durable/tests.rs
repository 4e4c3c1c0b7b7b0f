use super::*;
use crate::broker::messages::{OwnerId, Settlement};
use crate::broker::queue::consumers::NewConsumer;
use crate::broker::queue_args::QueueConfig;
use crate::storage::MemoryStore;

const A: OwnerId = OwnerId(1);

struct Fixture {
    store: MemoryStore,
    d: Durable,
    s: QueueState<()>,
    q: QueueId,
}

fn setup() -> Fixture {
    setup_with_ram(0)
}

/// A fresh durable queue keeping `ram` ready messages in memory (0 = all).
fn setup_with_ram(ram: usize) -> Fixture {
    let store = MemoryStore::new();
    let q = QueueId::new("/", "q");
    let mut d = Durable::new(Arc::new(store.clone()), q.clone()).with_ram_messages(ram);
    let mut s = QueueState::new(QueueConfig::default());
    d.attach(&mut s, None, 0);
    Fixture { store, d, s, q }
}

/// m0, m1, m2 stored; m0 delivered by a get and held unacked.
fn three_stored_first_held() -> Fixture {
    let mut f = setup();
    for i in 0..3 {
        f.push(&format!("m{i}"), true);
    }
    let (got, _) = f.s.get(A, false, 0).unwrap();
    f.d.on_delivered(std::slice::from_ref(&got), false);
    f.d.commit(&mut f.s);
    f
}

fn msg(body: &str, persistent: bool) -> Arc<Message> {
    let m = Message::new("", "q", body.to_string());
    Arc::new(if persistent { m.persistent() } else { m })
}

fn consumer(s: &mut QueueState<()>, auto_ack: bool) {
    s.add_consumer(NewConsumer {
        tag: "c".into(),
        owner: A,
        handle: (),
        prefetch: 0,
        auto_ack,
        window: 1000,
        priority: 0,
    });
}

impl Fixture {
    fn push(&mut self, body: &str, persistent: bool) {
        let pushed = self.d.push(&mut self.s, 0, msg(body, persistent), 0);
        assert_eq!(pushed, Pushed::Ready);
    }

    /// What a restart would find: bodies and redelivered flags, in order.
    fn stored(&self) -> Vec<(String, bool)> {
        self.store
            .recover()
            .unwrap()
            .get(&self.q)
            .map(|r| {
                r.messages
                    .iter()
                    .map(|m| {
                        (
                            String::from_utf8(m.message.body.to_vec()).unwrap(),
                            m.redelivered,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn s(body: &str, redelivered: bool) -> (String, bool) {
    (body.to_string(), redelivered)
}

#[test]
fn a_long_queue_pages_bodies_out_and_back_in_keeping_order_and_acks() {
    let mut f = setup_with_ram(4);
    for i in 0..20 {
        // One transient message in the backlog: it keeps its body.
        f.push(&format!("m{i:02}"), i != 9);
    }
    f.d.commit(&mut f.s);
    let (persistent, transient) = (
        msg("m00", true).accounted_size(),
        msg("m09", false).accounted_size(),
    );
    assert!(persistent > transient, "properties count too");
    assert_eq!(f.s.ready_len(), 20);
    assert_eq!(f.s.backlog_len(), 16);
    assert_eq!(
        f.s.bytes(),
        4 * persistent + transient,
        "the head (4) and the transient m09"
    );
    consumer(&mut f.s, false);
    let mut got = Vec::new();
    for _ in 0..100 {
        let ds: Vec<Delivery> =
            f.s.dispatch(3, 0)
                .into_iter()
                .flat_map(|(_, d)| d)
                .collect();
        f.d.on_delivered(&ds, false);
        let ids: Vec<u64> = ds.iter().map(|d| d.id).collect();
        got.extend(
            ds.iter()
                .map(|d| String::from_utf8(d.message.body.to_vec()).unwrap()),
        );
        let _ = f.s.settle(A, &ids, Settlement::Ack, 0);
        if let Some(req) = f.s.refill(0) {
            let pages = f.d.read(&req).unwrap().wait().unwrap();
            f.d.paged_in(&mut f.s, req.epoch, pages);
            assert!(
                f.s.refill(0).is_none(),
                "one read at a time, and it came back"
            );
        }
        f.d.commit(&mut f.s);
        if f.s.ready_len() == 0 {
            break;
        }
    }
    let want: Vec<String> = (0..20).map(|i| format!("m{i:02}")).collect();
    assert_eq!(got, want, "every message once, in order");
    assert!(f.stored().is_empty(), "every ack reached the store");
    assert_eq!(f.s.bytes(), 0);
}

#[test]
fn only_persistent_messages_are_stored_and_the_answer_waits_for_them() {
    let mut f = setup();
    f.push("p1", true);
    f.push("t1", false);
    f.push("p2", true);
    f.d.commit(&mut f.s);
    let stored = f.d.take_stored().expect("persistent messages to wait for");
    let answer = futures_util::FutureExt::now_or_never(stored.settle(Enqueued::default()))
        .expect("the memory store completes at once");
    assert_eq!(answer, Enqueued::default());
    assert_eq!(f.stored(), [s("p1", false), s("p2", false)]);
    assert_eq!(f.s.ready_len(), 3);
    f.push("t2", false);
    f.d.commit(&mut f.s);
    assert!(
        f.d.take_stored().is_none(),
        "transient only: nothing to wait for"
    );
}

#[test]
fn acks_rejects_requeues_and_the_watermark_reach_the_store() {
    let mut f = setup();
    for i in 0..4 {
        f.push(&format!("m{i}"), true);
    }
    f.d.commit(&mut f.s);
    drop(f.d.take_stored());
    let mut out = Vec::new();
    for _ in 0..3 {
        let (d, _) = f.s.get(A, false, 0).unwrap();
        f.d.on_delivered(std::slice::from_ref(&d), false);
        out.push(d.id);
    }
    f.d.commit(&mut f.s);
    let unknown = f.s.settle(A, &[out[0]], Settlement::Ack, 0);
    assert!(unknown.is_empty());
    let _ = f.s.settle(A, &[out[1]], Settlement::Requeue, 0);
    let _ = f.s.settle(A, &[out[2]], Settlement::Discard, 0);
    f.d.commit(&mut f.s);
    // m0 acked, m2 rejected; m1 requeued: redelivered; m3 never delivered.
    assert_eq!(f.stored(), [s("m1", true), s("m3", false)]);
}

#[test]
fn auto_ack_deliveries_count_as_acked() {
    let mut f = setup();
    f.push("a", true);
    f.push("b", true);
    consumer(&mut f.s, true);
    let out = f.s.dispatch(1, 0);
    f.d.on_delivered(&out[0].1, true);
    f.d.commit(&mut f.s);
    assert_eq!(f.stored(), [s("b", false)]);
    let (got, _) = f.s.get(A, true, 0).unwrap();
    f.d.on_delivered(std::slice::from_ref(&got), true);
    f.d.commit(&mut f.s);
    assert!(f.stored().is_empty());
    assert_eq!(f.d.stored_len(), 0);
}

#[test]
fn a_purge_keeps_the_unacked_and_a_delete_drops_everything() {
    let mut f = three_stored_first_held();
    f.s.purge();
    f.d.on_purge(&mut f.s);
    assert_eq!(f.stored(), [s("m0", true)]);
    assert_eq!(f.d.stored_len(), 1);
    f.d.on_delete();
    assert!(!f.store.recover().unwrap().contains_key(&f.q));
    assert!(!f.d.is_on());
}

#[test]
fn attach_refills_in_order_and_ids_go_on_above_the_stored_ones() {
    let f = three_stored_first_held();
    let recovered = f.store.recover().unwrap().remove(&f.q);
    let mut s2: QueueState<()> = QueueState::new(QueueConfig::default());
    let mut d2 = Durable::new(Arc::new(f.store.clone()), f.q.clone());
    d2.attach(&mut s2, recovered, 0);
    assert_eq!(s2.ready_len(), 3);
    let (first, _) = s2.get(A, true, 0).unwrap();
    assert!(first.redelivered);
    assert_eq!(&first.message.body[..], b"m0");
    d2.on_delivered(std::slice::from_ref(&first), true);
    d2.push(&mut s2, 0, msg("m3", true), 0);
    d2.commit(&mut s2);
    assert_eq!(
        f.stored(),
        [s("m1", false), s("m2", false), s("m3", false)],
        "m0 acked; m3 after the others"
    );
}

#[test]
fn a_message_pushed_twice_is_stored_twice() {
    let mut f = setup();
    let m = msg("twice", true);
    f.d.push(&mut f.s, 0, m.clone(), 0);
    f.d.push(&mut f.s, 1, m, 0);
    f.d.commit(&mut f.s);
    assert_eq!(f.stored().len(), 2);
    let (got, _) = f.s.get(A, true, 0).unwrap();
    f.d.on_delivered(std::slice::from_ref(&got), true);
    f.d.commit(&mut f.s);
    assert_eq!(f.stored().len(), 1);
}

#[test]
fn a_transient_queue_never_stores() {
    let mut d = Durable::default();
    let mut s: QueueState<()> = QueueState::new(QueueConfig::default());
    d.attach(&mut s, None, 0);
    d.push(&mut s, 0, msg("p", true), 0);
    d.commit(&mut s);
    assert!(d.take_stored().is_none());
    d.on_delete();
    assert_eq!(s.ready_len(), 1);
}

#[test]
fn a_failed_store_refuses_the_stored_messages_naming_the_queue() {
    let q = QueueId::new("v", "orders");
    let stored = Stored {
        completions: vec![Completion::ready(Err(StorageError::Closed))],
        positions: vec![0, 2],
        queue: q.clone(),
    };
    let answer = Enqueued {
        refused: vec![1],
        reason: None,
    };
    let answer = futures_util::FutureExt::now_or_never(stored.settle(answer)).unwrap();
    assert_eq!(answer.refused, [0, 1, 2]);
    let e = answer.reason.unwrap();
    assert_eq!(e.code(), ErrorCode::InternalError);
    assert!(e.message().contains("'orders'"), "{e}");
    let full = StorageError::io(
        "writing",
        "/x",
        std::io::Error::from(std::io::ErrorKind::StorageFull),
    );
    assert_eq!(store_error(&q, &full).code(), ErrorCode::ResourceError);
}
