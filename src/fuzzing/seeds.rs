//! Writes the binary seeds of `fuzz/seeds/` with the broker's own encoders:
//! `cargo test --lib write_fuzz_seeds -- --ignored` (the text seeds are written by hand).

use crate::amqp::properties::table_in;
use crate::message::{FieldValue, Message};
use crate::storage::disk::{codec, frame};
use crate::storage::record::{QueueId, Record};
use amq_protocol::frame::WriteContext;
use amq_protocol::types::{AMQPValue, DecimalValue, FieldTable as AmqpTable};
use std::path::Path;
use std::sync::Arc;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    std::fs::create_dir_all(&dir).expect("seed directory");
    std::fs::write(dir.join(name), bytes).expect("seed written");
}

/// An AMQP table with a value of every type, one level nested.
fn amqp_table() -> AmqpTable {
    let mut inner = AmqpTable::default();
    inner.insert("v".into(), AMQPValue::Void);
    inner.insert("i".into(), AMQPValue::ShortInt(-7));
    let mut t = AmqpTable::default();
    let values = [
        AMQPValue::Boolean(true),
        AMQPValue::ShortShortInt(-1),
        AMQPValue::ShortShortUInt(200),
        AMQPValue::ShortInt(-300),
        AMQPValue::ShortUInt(60000),
        AMQPValue::LongInt(-70000),
        AMQPValue::LongUInt(4_000_000_000),
        AMQPValue::LongLongInt(-5),
        AMQPValue::Float(1.5),
        AMQPValue::Double(2.25),
        AMQPValue::DecimalValue(DecimalValue {
            scale: 2,
            value: 314,
        }),
        AMQPValue::LongString("text".into()),
        AMQPValue::LongString(vec![0xffu8, 0].into()),
        AMQPValue::Timestamp(1_700_000_000),
        AMQPValue::ByteArray(vec![1u8, 2].into()),
        AMQPValue::Void,
        AMQPValue::FieldArray(vec![AMQPValue::LongInt(1), AMQPValue::Void].into()),
        AMQPValue::FieldTable(inner),
    ];
    for (i, v) in values.into_iter().enumerate() {
        t.insert(format!("k{i}").as_str().into(), v);
    }
    t
}

fn records() -> Vec<Record> {
    let queue = QueueId::new("/", "jobs");
    let message = Message::new("x", "k", "body")
        .with_header("n", 5i64)
        .with_header("s", "v")
        .with_header("t", FieldValue::Table(table_in(&amqp_table())));
    vec![
        Record::Publish {
            queue: queue.clone(),
            id: 1,
            message: Arc::new(message.persistent()),
        },
        Record::Ack {
            queue: queue.clone(),
            ids: vec![1, 2],
        },
        Record::Delivered {
            queue: queue.clone(),
            up_to: 1,
        },
        Record::DeliveryCounts {
            queue: queue.clone(),
            counts: vec![(1, 2)],
        },
        Record::Purge {
            queue: queue.clone(),
            below: 3,
            except: vec![1],
        },
        Record::DeleteQueue { queue },
    ]
}

#[test]
#[ignore = "writes fuzz/seeds/: run by hand when an encoding changes"]
fn write_fuzz_seeds() {
    let table = amqp_table();
    let amqp =
        amq_protocol::types::generation::gen_field_table(&table)(WriteContext::from(Vec::new()))
            .expect("encodes")
            .into_inner()
            .0;
    write("field_table", "amqp-every-type", &amqp);
    let native = rmp_serde::to_vec(&table_in(&table)).expect("encodes");
    write("field_table", "native-every-type", &native);
    // The body of a segment: a mark, then every record, each in its frame.
    let mut log = Vec::new();
    frame::encode_with(&mut log, |b| {
        codec::encode_mark(b, &QueueId::new("/", "jobs"), 1, 0)
    })
    .expect("encodes");
    for (i, r) in records().iter().enumerate() {
        let mut payload = Vec::new();
        codec::encode_record(&mut payload, r).expect("encodes");
        write("disk_records", &format!("record-{i}"), &payload);
        frame::encode_with(&mut log, |b| codec::encode_record(b, r)).expect("encodes");
    }
    write("disk_records", "frames", &log);
    write("disk_recovery", "clean", &log);
    let mut torn = log.clone();
    torn.truncate(log.len() - 3);
    torn.extend_from_slice(&[0; 64]);
    write("disk_recovery", "torn-tail", &torn);
    let mut rot = log.clone();
    rot[40] ^= 0x20;
    write("disk_recovery", "bit-rot", &rot);
    let mut stream = Vec::new();
    for (i, r) in records().iter().take(1).enumerate() {
        let Record::Publish { message, .. } = r else {
            continue;
        };
        let mut one = Vec::new();
        crate::storage::stream::codec::encode(&mut one, 7 + i as u64, 1_700_000_000_000, message)
            .expect("encodes");
        write("stream_records", "frame", &one);
        write("stream_records", "payload", &one[frame::FRAME_HEADER..]);
        stream.extend_from_slice(&one);
    }
    let m = Message::new("", "", "");
    crate::storage::stream::codec::encode(&mut stream, 8, -1, &m).expect("encodes");
    write("stream_records", "frames", &stream);
    let index = crate::storage::stream::index_file::SealedIndex {
        first: 7,
        next: 9,
        bytes: stream.len() as u64,
        last_timestamp: -1,
        run_start: 8,
        entries: vec![(7, 1_700_000_000_000, 0)],
    };
    write("stream_records", "index", &index.encode());
    write("stream_records", "point", &index.encode_point());
}
