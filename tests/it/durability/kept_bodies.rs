//! A message a queue keeps holds its own body, not the read buffer it arrived in.
//!
//! Publishes are read from the socket up to 256 KiB at a time, and a body used to stay
//! a slice of that buffer. A queue that kept one small message of every read, the rest
//! going elsewhere and freed, then held every whole buffer while queues and the memory
//! watermark counted 16 bytes each: the broker's memory grew without the watermark
//! seeing it. Against the real binary, whose memory is read from /proc.

use super::{runtime, within, BrokerProcess};
use actormq::client::{Client, ConnectOptions, QueueOptions};

/// Rounds of 15 unroutable 4 KiB publishes and one 16-byte publish to the kept queue:
/// 64 KiB a round, so about four rounds per socket read.
const ROUNDS: usize = 2_000;

/// The broker's resident memory in KiB, less what its allocator has given back to the
/// kernel lazily (`MADV_FREE`: still counted in `Rss` until the kernel reclaims it).
fn resident_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("smaps");
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| {
                v.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap()
            })
            .unwrap_or(0)
    };
    field("Rss:") - field("LazyFree:")
}

/// A client with publisher confirms, and the queue "kept" declared.
async fn client_with_kept_queue(addr: &str) -> Client {
    let c = within(
        "connect",
        Client::connect(ConnectOptions::new(addr).confirms(true)),
    )
    .await
    .unwrap();
    declare_kept(&c).await;
    c
}

/// Declares (again) the queue "kept": its answer carries the queue's message count.
async fn declare_kept(c: &Client) -> actormq::client::QueueInfo {
    c.declare_queue("kept", &QueueOptions::default())
        .await
        .unwrap()
}

#[test]
fn a_queue_keeping_one_small_message_per_read_does_not_hold_the_read_buffers() {
    let root = tempfile::tempdir().unwrap();
    let rt = runtime();
    let broker = BrokerProcess::start(root.path());
    let pid = broker.pid();
    rt.block_on(async {
        let c = client_with_kept_queue(&broker.addr).await;
        let before = resident_kib(pid);
        let filler = vec![b'f'; 4096];
        let mut last = None;
        for r in 0..ROUNDS {
            for _ in 0..15 {
                // Routed nowhere, and freed; confirmed in order before the last one.
                drop(c.publish("", "nowhere", &filler).await.unwrap());
            }
            let small = format!("kept-{r:010}");
            last = Some(c.publish("", "kept", small).await.unwrap());
        }
        within("the last confirm", last.unwrap()).await.unwrap();
        let q = declare_kept(&c).await;
        assert_eq!(q.messages, ROUNDS as u64);
        let grown_mib = resident_kib(pid).saturating_sub(before) / 1024;
        // The bodies kept are 32 KB; each one holding its read buffer (a quarter of
        // 256 KiB) would be about 125 MiB.
        assert!(
            grown_mib < 40,
            "the broker grew by {grown_mib} MiB keeping {ROUNDS} messages of 16 bytes"
        );
    });
}

/// Rounds of one large unroutable publish (it makes the read buffer grow past it) and
/// one publish of [`SHARED_BODY`] bytes to the kept queue.
const LARGE_ROUNDS: usize = 40;
/// A body just long enough to stay a slice of its read buffer (`SHARED_BODY_MIN`).
const SHARED_BODY: usize = 64 * 1024;
/// The large body: well past a read (256 KiB), within the 16 MiB frame.
const LARGE_BODY: usize = 6 * 1024 * 1024;

/// A read buffer grown for a large frame is not where the frames after it land: a
/// body kept as a slice holds at most a few reads' worth, not the large frame's
/// buffer (doubled while it was read), which a queue keeping one 64 KiB body of each
/// round would else hold whole after the large body was freed.
#[test]
fn a_body_read_after_a_large_frame_does_not_hold_the_large_frame_s_buffer() {
    let root = tempfile::tempdir().unwrap();
    let rt = runtime();
    let broker = BrokerProcess::start(root.path());
    let pid = broker.pid();
    rt.block_on(async {
        let c = client_with_kept_queue(&broker.addr).await;
        let before = resident_kib(pid);
        let large = vec![b'L'; LARGE_BODY];
        let shared = vec![b's'; SHARED_BODY];
        let mut last = None;
        for _ in 0..LARGE_ROUNDS {
            // Routed nowhere, and freed; confirmed in order before the last one.
            drop(c.publish("", "nowhere", &large).await.unwrap());
            last = Some(c.publish("", "kept", &shared).await.unwrap());
        }
        within("the last confirm", last.unwrap()).await.unwrap();
        let q = declare_kept(&c).await;
        assert_eq!(q.messages, LARGE_ROUNDS as u64);
        let grown_mib = resident_kib(pid).saturating_sub(before) / 1024;
        // The bodies kept are 2.5 MiB, each holding at most a few reads (256 KiB) of
        // buffer (20-40 MiB grown, with what the allocator keeps of the large bodies
        // freed). Holding the large frames' buffers (6 to 12 MiB each): 180-230 MiB.
        assert!(
            grown_mib < 80,
            "the broker grew by {grown_mib} MiB keeping {LARGE_ROUNDS} messages of 64 KiB"
        );
    });
}
