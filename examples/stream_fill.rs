//! Fills a stream's log on disk without the network, through the stream storage API
//! the broker's own appends use ([`StreamLog::append`]: the same encoding, segment
//! rolling, sparse index and group-commit writer with its fsyncs), to make the long
//! streams of issue 15's scale figures (100 M records of 16 B; 10 GB) in minutes where
//! publishing them over the network on this shared machine takes most of an hour.
//!
//! ```text
//! cargo run --release --example stream_fill -- [--crash] DIR RECORDS BODY_BYTES [EXCHANGE ROUTING_KEY]
//! ```
//!
//! `--crash` ends as a kill -9 after the last fsync would: without the recovery point
//! a clean close writes, so the active segment is covered only by its last periodic one
//! (every 64 MiB) and the next start scans what follows it.
//!
//! `DIR` is the stream's directory, `data_dir/streams/<vhost>/<name>/` (`/` as `%2F`):
//! declare the stream on a broker first (so its definition exists), stop the broker,
//! fill, start it again. Records are appended in chunks of 1,000 with up to 64 chunks
//! waiting for their fsync, each body stamped with its index in its first 8 bytes.
//! Prints the rate, the bytes of segments and the sparse index's entries.

use actormq::storage::stream::StreamLog;
use actormq::Message;
use bytes::Bytes;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Records per append (one chunk; the broker's appends are one per publish batch).
const CHUNK: u64 = 1000;
/// Chunks whose completion may be outstanding.
const OUTSTANDING: usize = 64;
/// The broker's default segment size (`x-stream-max-segment-size-bytes`).
const SEGMENT_BYTES: u64 = 500_000_000;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let crash = args.first().is_some_and(|a| a == "--crash");
    if crash {
        args.remove(0);
    }
    if args.len() < 3 {
        eprintln!("usage: stream_fill [--crash] DIR RECORDS BODY_BYTES [EXCHANGE ROUTING_KEY]");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&args[0]);
    let records: u64 = args[1].parse().expect("RECORDS: a number");
    let size: usize = args[2]
        .parse::<usize>()
        .expect("BODY_BYTES: a number")
        .max(8);
    let exchange = args.get(3).map_or("", String::as_str);
    let routing_key = args.get(4).map_or("", String::as_str);

    let mut log = StreamLog::open(&dir, SEGMENT_BYTES).expect("opening the stream log");
    let start_offset = log.next_offset();
    let start_bytes = log.bytes();
    let t0 = Instant::now();
    let mut body = vec![0u8; size];
    let mut waiting = VecDeque::new();
    let mut done = 0;
    let mut last_report = Instant::now();
    while done < records {
        let n = CHUNK.min(records - done);
        let chunk: Vec<Arc<Message>> = (done..done + n)
            .map(|i| {
                body[..8].copy_from_slice(&i.to_le_bytes());
                Arc::new(Message::new(
                    exchange,
                    routing_key,
                    Bytes::copy_from_slice(&body),
                ))
            })
            .collect();
        waiting.push_back(log.append(chunk));
        if waiting.len() > OUTSTANDING {
            waiting
                .pop_front()
                .expect("not empty")
                .wait()
                .expect("an append failed");
        }
        done += n;
        if last_report.elapsed().as_secs() >= 10 {
            last_report = Instant::now();
            eprintln!(
                "{done} records, {:.2} GB, {:.0} records/s",
                (log.bytes() - start_bytes) as f64 / 1e9,
                done as f64 / t0.elapsed().as_secs_f64()
            );
        }
    }
    for c in waiting {
        c.wait().expect("an append failed");
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "appended {records} records of {size} B (offsets {start_offset}..{}) in {secs:.1} s: \
         {:.0} records/s, {:.1} MB/s of frames; log {} records, {} bytes of segments, \
         {} sparse index entries",
        log.next_offset(),
        records as f64 / secs,
        ((log.bytes() - start_bytes) as f64 / 1e6) / secs,
        log.len(),
        log.bytes(),
        log.index_len()
    );
    if crash {
        log.close_without_point();
    } else {
        log.close();
    }
}
