use super::*;
use crate::storage::StoredQueue;

fn vhost_with(queue: &str) -> StoredVhost {
    StoredVhost {
        queues: vec![StoredQueue {
            name: queue.into(),
            durable: true,
            auto_delete: false,
            arguments: Default::default(),
        }],
        ..Default::default()
    }
}

#[test]
fn saves_only_what_changed_and_recovers_it() {
    let dir = tempfile::tempdir().unwrap();
    let gauge = Arc::new(MemoryGauge::new(0));
    let d = Durability::open(StorageOptions::in_dir(dir.path()), gauge.clone()).unwrap();
    assert!(d.save_vhost("/", StoredVhost::default()).is_none());
    d.save_vhost("/", vhost_with("q")).unwrap().wait().unwrap();
    assert!(d.save_vhost("/", vhost_with("q")).is_none());
    d.close();
    let d = Durability::open(StorageOptions::in_dir(dir.path()), gauge).unwrap();
    assert_eq!(d.stored_vhosts(), ["/"]);
    assert_eq!(d.take_vhost("/").unwrap(), vhost_with("q"));
    assert!(d.take_vhost("/").is_none());
}

#[test]
fn queues_the_metadata_does_not_list_are_dropped_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StorageOptions::in_dir(dir.path());
    let gauge = Arc::new(MemoryGauge::new(0));
    let d = Durability::open(opts.clone(), gauge.clone()).unwrap();
    d.save_vhost("/", vhost_with("kept"))
        .unwrap()
        .wait()
        .unwrap();
    let store = d.store().unwrap();
    let m = Arc::new(crate::message::Message::new("", "x", "body").persistent());
    for name in ["kept", "gone"] {
        store
            .append(
                vec![Record::Publish {
                    queue: QueueId::new("/", name),
                    id: 1,
                    message: m.clone(),
                }],
                true,
            )
            .wait()
            .unwrap();
    }
    drop(store);
    d.close();
    let d = Durability::open(opts.clone(), gauge.clone()).unwrap();
    assert_eq!(d.take_recovered("/", "kept").unwrap().messages.len(), 1);
    assert!(d.take_recovered("/", "gone").is_none());
    d.close();
    let d = Durability::open(opts, gauge).unwrap();
    assert!(d.take_recovered("/", "gone").is_none(), "deleted for good");
}

#[test]
fn a_disk_free_limit_above_the_free_space_raises_the_alarm_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = StorageOptions::in_dir(dir.path());
    opts.disk_free_limit = u64::MAX;
    let gauge = Arc::new(MemoryGauge::new(0));
    let d = Durability::open(opts, gauge.clone()).unwrap();
    assert!(gauge.is_blocked());
    assert!(
        gauge.blocked_reason().contains("storage.disk_free_limit"),
        "{}",
        gauge.blocked_reason()
    );
    d.close();
}

/// A store on a full disk: every append fails.
struct FullDisk;

impl MessageStore for FullDisk {
    fn append(&self, _batch: Vec<Record>, _sync: bool) -> Completion {
        Completion::ready(Err(StorageError::io(
            "writing",
            "/data/messages/00000000000000000001.seg",
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        )))
    }
    fn flush(&self) -> Completion {
        Completion::ready(Ok(()))
    }
    fn recover(&self) -> Result<crate::storage::Recovered, StorageError> {
        Ok(Default::default())
    }
    fn error(&self) -> Option<StorageError> {
        None
    }
    fn read(
        &self,
        _queue: &crate::storage::QueueId,
        _ids: Vec<u64>,
    ) -> Completion<crate::storage::Pages> {
        Completion::ready(Ok(Vec::new()))
    }
}

#[tokio::test]
async fn a_persistent_message_that_cannot_be_stored_is_refused_naming_the_queue() {
    use crate::{Broker, ErrorCode, FieldTable, Message, QueueOptions};
    let broker = Broker::builder()
        .workers(1)
        .test_store(Arc::new(FullDisk))
        .start()
        .unwrap();
    let s = broker.session();
    s.declare_queue("orders", &QueueOptions::durable())
        .await
        .unwrap();
    s.declare_queue("scratch", &QueueOptions::new())
        .await
        .unwrap();
    s.bind_queue("orders", "amq.fanout", "", FieldTable::new())
        .await
        .unwrap();
    s.bind_queue("scratch", "amq.fanout", "", FieldTable::new())
        .await
        .unwrap();
    let e = s
        .publish(Message::new("amq.fanout", "", "m").persistent())
        .await
        .unwrap()
        .await
        .expect_err("not stored, so not confirmed");
    assert_eq!(e.code(), ErrorCode::ResourceError);
    assert!(
        e.message().contains("'orders'") && e.message().contains("disk full"),
        "{e}"
    );
    // Transient messages never touch the store; a transient queue neither.
    let ok = s
        .publish(Message::new("amq.fanout", "", "t"))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ok.queues, 2);
    let ok = s
        .publish(Message::new("", "scratch", "p").persistent())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ok.queues, 1);
    broker.shutdown();
}

#[test]
fn a_locked_data_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let gauge = Arc::new(MemoryGauge::new(0));
    let _d = Durability::open(StorageOptions::in_dir(dir.path()), gauge.clone()).unwrap();
    let e = Durability::open(StorageOptions::in_dir(dir.path()), gauge)
        .err()
        .unwrap();
    assert_eq!(e.code(), ErrorCode::ResourceError);
    assert!(e.message().contains("storage.data_dir"), "{e}");
}
