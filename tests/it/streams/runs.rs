//! Runs (`deliver_run`): a native consumer that asks for them gets a stream's
//! consecutive records in one frame as the stream stores them, and the client splits
//! them into ordinary deliveries. Several consumers replay the same stream through runs,
//! each seeing every record in order with its offset, within its prefetch; a consumer
//! that does not ask (an older client) gets a `deliver` frame per record alongside.

use super::*;
use actormq::protocol::frame::take_frame;
use actormq::protocol::wire::*;
use actormq::{FieldTable, FieldValue};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const N: usize = 300;

/// A consumer speaking the protocol by hand, to see which frames the broker sends.
struct RawConsumer {
    s: TcpStream,
    buf: BytesMut,
    /// Records received and not acked.
    outstanding: u32,
    prefetch: u32,
}

/// What one frame brought: (delivery tag, x-stream-offset) of each record, whether it
/// was a run, or the error the broker answered with.
struct Got {
    records: Vec<(u64, u64)>,
    run: bool,
    error: Option<(actormq::ErrorCode, String)>,
}

impl RawConsumer {
    async fn start(server: &TestServer, queue: &str, prefetch: u32, runs: bool) -> Self {
        let mut c = RawConsumer {
            s: TcpStream::connect(server.addr).await.unwrap(),
            buf: BytesMut::new(),
            outstanding: 0,
            prefetch,
        };
        c.send(&ClientFrame::Hello(Hello {
            version: 1,
            user: "guest".into(),
            password: "guest".into(),
            vhost: "/".into(),
            client: "runs-test".into(),
            heartbeat_secs: None,
            mechanism: None,
        }))
        .await;
        let mut args = FieldTable::new();
        args.insert("x-stream-offset".into(), "first".into());
        if runs {
            args.insert(RUNS_ARGUMENT.into(), FieldValue::Bool(true));
        }
        c.send(&ClientFrame::Request(Request {
            id: 1,
            op: Op::Consume {
                queue: queue.into(),
                consumer_tag: "raw".into(),
                prefetch,
                no_ack: false,
                exclusive: false,
                arguments: args,
            },
        }))
        .await;
        c
    }

    async fn send(&mut self, f: &ClientFrame<'_>) {
        let mut out = BytesMut::new();
        encode_client(f, &mut out).unwrap();
        self.s.write_all(&out).await.unwrap();
    }

    /// The next frame's body, read from the socket as needed.
    async fn frame(&mut self) -> bytes::Bytes {
        within("a frame", async {
            loop {
                if let Some(f) = take_frame(&mut self.buf, 64 << 20).unwrap() {
                    return f;
                }
                assert!(self.s.read_buf(&mut self.buf).await.unwrap() > 0, "closed");
            }
        })
        .await
    }

    /// The next frame carrying deliveries, checked against the prefetch.
    async fn next(&mut self) -> Got {
        loop {
            let frame = self.frame().await;
            let got = match decode_server(&frame).unwrap() {
                ServerFrame::Deliver(d) => {
                    let props = d.properties.unwrap().into_owned();
                    Got {
                        records: vec![(d.delivery_tag, offset_of(&props))],
                        run: false,
                        error: None,
                    }
                }
                ServerFrame::DeliverRun(r) => {
                    let mut records = Vec::new();
                    let mut tag = r.first_tag;
                    split_run(r.records, r.count, |rec| {
                        assert_eq!(offset_of(&rec.properties), rec.offset);
                        records.push((tag, rec.offset));
                        tag += 1;
                    })
                    .unwrap();
                    Got {
                        records,
                        run: true,
                        error: None,
                    }
                }
                ServerFrame::Error { code, message, .. } => Got {
                    records: Vec::new(),
                    run: false,
                    error: Some((code, message)),
                },
                ServerFrame::Welcome { .. } | ServerFrame::Reply { .. } => continue,
                other => panic!("unexpected {other:?}"),
            };
            assert!(got.error.is_none(), "{:?}", got.error);
            self.outstanding += got.records.len() as u32;
            assert!(
                self.outstanding <= self.prefetch,
                "{} unacked records, over the prefetch of {}",
                self.outstanding,
                self.prefetch
            );
            return got;
        }
    }

    /// The next frame, which must be an error: (code, message).
    async fn next_error(&mut self) -> (actormq::ErrorCode, String) {
        loop {
            let frame = self.frame().await;
            match decode_server(&frame).unwrap() {
                ServerFrame::Error { code, message, .. } => return (code, message),
                ServerFrame::Welcome { .. } | ServerFrame::Reply { .. } => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Acks everything up to `tag`.
    async fn ack_to(&mut self, tag: u64) {
        self.send(&ClientFrame::Ack {
            tag,
            multiple: true,
        })
        .await;
        self.outstanding = 0;
    }
}

fn offset_of(p: &actormq::Properties) -> u64 {
    p.headers
        .as_ref()
        .and_then(|h| h.get("x-stream-offset"))
        .and_then(FieldValue::as_int)
        .expect("x-stream-offset header") as u64
}

/// Reads all `N` records from `c`, acking whenever the prefetch is used up; answers the
/// offsets in order and the number of records that came in runs of more than one.
async fn replay(c: &mut RawConsumer) -> (Vec<u64>, usize, usize) {
    let (mut offsets, mut in_runs, mut frames) = (Vec::new(), 0, 0);
    let mut last_tag = 0;
    while offsets.len() < N {
        let got = c.next().await;
        frames += 1;
        for (tag, offset) in &got.records {
            assert_eq!(*tag, last_tag + 1, "delivery tags one after another");
            last_tag = *tag;
            offsets.push(*offset);
        }
        if got.run && got.records.len() > 1 {
            in_runs += got.records.len();
        }
        if c.outstanding == c.prefetch || offsets.len() == N {
            c.ack_to(last_tag).await;
        }
    }
    (offsets, in_runs, frames)
}

async fn stream_of_n(server: &TestServer, name: &str) -> Client {
    let c = connect(server).await;
    c.declare_queue(name, &stream()).await.unwrap();
    publish_n(&c, name, "m", N).await;
    c
}

#[tokio::test]
async fn three_consumers_replay_one_stream_through_runs_within_their_prefetch() {
    let server = TestServer::start();
    let _c = stream_of_n(&server, "s").await;
    // A prefetch smaller than the runs the records would make: runs are cut to it.
    let want: Vec<u64> = (0..N as u64).collect();
    let mut raws = Vec::new();
    for prefetch in [7, 50, 64] {
        raws.push(RawConsumer::start(&server, "s", prefetch, true).await);
    }
    for raw in &mut raws {
        let (offsets, in_runs, frames) = replay(raw).await;
        assert_eq!(offsets, want, "every record, in order");
        assert!(
            in_runs > N / 2 && frames < N / 2,
            "records came in runs: {in_runs} of {N} in runs of several, {frames} frames"
        );
    }
    // The client splits runs into the same deliveries (runs are on by default).
    let mut consumers = Vec::new();
    for _ in 0..3 {
        let c = connect(&server).await;
        consumers.push((c.consume("s", &from("first")).await.unwrap(), c));
    }
    for (consumer, _) in &mut consumers {
        let ds = take(consumer, N).await;
        let want: Vec<i64> = (0..N as i64).collect();
        assert_eq!(offsets(&ds), want);
        let want: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
        assert_eq!(bodies(&ds), want);
        assert!(ds.iter().all(|d| !d.redelivered && d.delivery_count == 1));
        assert!(ds
            .windows(2)
            .all(|w| w[1].delivery_tag == w[0].delivery_tag + 1));
    }
}

#[tokio::test]
async fn a_consumer_without_runs_reads_beside_one_with_runs() {
    let server = TestServer::start();
    let _c = stream_of_n(&server, "s").await;
    let mut old = RawConsumer::start(&server, "s", 20, false).await;
    let mut new = RawConsumer::start(&server, "s", 20, true).await;
    let want: Vec<u64> = (0..N as u64).collect();
    let (old_offsets, old_in_runs, old_frames) = replay(&mut old).await;
    let (new_offsets, new_in_runs, _) = replay(&mut new).await;
    assert_eq!(old_offsets, want);
    assert_eq!(new_offsets, want);
    assert_eq!(
        (old_in_runs, old_frames),
        (0, N),
        "a deliver frame per record for the consumer that did not ask for runs"
    );
    assert!(new_in_runs > N / 2, "{new_in_runs} of {N} records in runs");
    // The client's options say the same, through the client.
    let a = connect(&server).await;
    let b = connect(&server).await;
    let mut per_record = a.consume("s", &from("first").without_runs()).await.unwrap();
    let mut runs = b.consume("s", &from("first")).await.unwrap();
    let (x, y) = (take(&mut per_record, N).await, take(&mut runs, N).await);
    assert_eq!(offsets(&x), offsets(&y));
    assert_eq!(bodies(&x), bodies(&y));
}

/// Runs are tracked by the broker as ranges of delivery tags (and of the stream's
/// delivery ids): a consumer that settles parts of them, one tag at a time, must get
/// back exactly one record of credit per record. Prefetch 7 (runs of at most 7): every
/// other record is acked by its own tag, every sixth nacked (credit only, on a
/// stream), and the rest acked by one `multiple` naming the highest one outstanding once
/// the prefetch is used up. Credit returned short stalls the replay (no delivery
/// within the deadline), credit returned twice breaks the prefetch (`next` checks it),
/// and a range cut wrong makes a tag unknown (an error frame). A tag that is not
/// outstanding is PRECONDITION_FAILED, inside a settled run or past the last.
#[tokio::test]
async fn settling_parts_of_runs_gives_each_record_s_credit_back_once() {
    const RECORDS: u64 = 10_000;
    let server = TestServer::start();
    let c = connect(&server).await;
    c.declare_queue("s", &stream()).await.unwrap();
    publish_n(&c, "s", "m", RECORDS as usize).await;
    let mut raw = RawConsumer::start(&server, "s", 7, true).await;
    let (mut next, mut last_tag, mut runs) = (0, 0, 0);
    // Tags received and not settled yet.
    let mut outstanding: Vec<u64> = Vec::new();
    while next < RECORDS {
        let got = raw.next().await;
        runs += usize::from(got.run && got.records.len() > 1);
        for (tag, offset) in got.records {
            assert_eq!(
                (tag, offset),
                (last_tag + 1, next),
                "tags and offsets in order"
            );
            (last_tag, next) = (tag, next + 1);
            let settle = match tag % 6 {
                0 => ClientFrame::Nack {
                    tag,
                    multiple: false,
                    requeue: false,
                },
                2 | 4 => ClientFrame::Ack {
                    tag,
                    multiple: false,
                },
                _ => {
                    outstanding.push(tag);
                    continue;
                }
            };
            raw.send(&settle).await;
        }
        raw.outstanding = outstanding.len() as u32;
        if raw.outstanding == raw.prefetch || (next == RECORDS && !outstanding.is_empty()) {
            raw.ack_to(*outstanding.last().expect("outstanding")).await;
            outstanding.clear();
        }
    }
    assert!(runs > 100, "records came in runs: {runs} runs of several");
    // Settled long ago, inside a run; and never delivered.
    for (tag, multiple) in [
        (2, false),
        (3, true),
        (last_tag + 1, false),
        (last_tag + 5, true),
    ] {
        raw.send(&ClientFrame::Ack { tag, multiple }).await;
        let (code, message) = raw.next_error().await;
        assert_eq!(code, actormq::ErrorCode::PreconditionFailed, "{message}");
        assert_eq!(message, format!("unknown delivery tag {tag}"));
    }
}
